//! Lines out of a log file that a container's root writes, hence hostile: positional reads
//! of bounded blocks, lines cut at [`MAX_LINE_BYTES`] with a marker, so neither a huge file
//! nor a line without end grows our memory. The tail is found by reading backwards from the
//! end in blocks, never by reading the file from its start.

use std::{fs::File, io, os::unix::fs::FileExt};

/// Longer lines are cut (the supervisor splits at 16 KiB of output, plus its prefix).
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// What a cut line ends with, before the count of bytes left out.
pub const CUT_MARKER: &str = " [line cut: ";
const BLOCK: usize = 64 * 1024;

/// A reading position in one open file, with the line being assembled.
#[derive(Debug)]
pub struct Cursor {
    file: File,
    pos: u64,
    partial: Vec<u8>,
    /// Bytes of the current line left out beyond [`MAX_LINE_BYTES`].
    dropped: u64,
}

impl Cursor {
    pub fn new(file: File, pos: u64) -> Self {
        Self {
            file,
            pos,
            partial: Vec::new(),
            dropped: 0,
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Back to the start of the file (it was truncated under us); a half line is dropped.
    pub fn restart(&mut self) {
        self.pos = 0;
        self.partial.clear();
        self.dropped = 0;
    }

    /// Appends to `out` the complete lines between the position and `end` (or the end of
    /// the file, if sooner), without their newline, until `out` holds `max` lines or
    /// `max_bytes`. Returns whether it stopped for that bound (more may be there).
    pub fn read(
        &mut self,
        end: u64,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<Vec<u8>>,
    ) -> io::Result<bool> {
        let mut buf = vec![0u8; BLOCK];
        let mut bytes = 0usize;
        while self.pos < end {
            if out.len() >= max || bytes >= max_bytes {
                return Ok(true);
            }
            let want = usize::try_from((end - self.pos).min(BLOCK as u64)).unwrap_or(BLOCK);
            let n = self.file.read_at(&mut buf[..want], self.pos)?;
            if n == 0 {
                break;
            }
            let mut used = 0;
            while used < n && out.len() < max && bytes < max_bytes {
                match buf[used..n].iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        self.push(&buf[used..used + i]);
                        let line = self.take_line();
                        bytes += line.len();
                        out.push(line);
                        used += i + 1;
                    }
                    None => {
                        self.push(&buf[used..n]);
                        used = n;
                    }
                }
            }
            self.pos += used as u64;
        }
        Ok(false)
    }

    /// The unterminated rest as a last line, when the read does not go on.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.partial.is_empty() || self.dropped > 0).then(|| self.take_line())
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.partial.len());
        let keep = bytes.len().min(room);
        self.partial.extend_from_slice(&bytes[..keep]);
        self.dropped += (bytes.len() - keep) as u64;
    }

    fn take_line(&mut self) -> Vec<u8> {
        let mut line = std::mem::take(&mut self.partial);
        if self.dropped > 0 {
            line.extend_from_slice(format!("{CUT_MARKER}{} bytes]", self.dropped).as_bytes());
            self.dropped = 0;
        }
        line
    }
}

/// Where the last `want` lines of `file[..end]` start, and how many lines that is (fewer
/// when the file has fewer, then `start` is 0). At most about `want` times the line bound is
/// read: a file of one endless line gives its last bytes as a line, not a full scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    pub start: u64,
    pub lines: usize,
}

pub fn tail_start(file: &File, end: u64, want: usize) -> io::Result<Tail> {
    if want == 0 || end == 0 {
        return Ok(Tail {
            start: end,
            lines: 0,
        });
    }
    let mut last = [0u8; 1];
    let n = file.read_at(&mut last, end - 1)?;
    // A newline at the very end closes the last line; it does not start another.
    let scan_end = if n == 1 && last[0] == b'\n' {
        end - 1
    } else {
        end
    };
    let budget = (want as u64).saturating_mul(2 * MAX_LINE_BYTES as u64 + 1);
    let limit = scan_end.saturating_sub(budget);
    let mut buf = vec![0u8; BLOCK];
    let mut pos = scan_end;
    let mut found = 0usize;
    while pos > limit {
        let from = pos.saturating_sub(BLOCK as u64).max(limit);
        let len = usize::try_from(pos - from).unwrap_or(BLOCK);
        let got = read_exact_at(file, &mut buf[..len], from)?;
        if got < len {
            // Truncated under us: what remains is all there is.
            return Ok(Tail { start: 0, lines: 0 });
        }
        for i in (0..len).rev() {
            if buf[i] == b'\n' {
                found += 1;
                if found == want {
                    return Ok(Tail {
                        start: from + i as u64 + 1,
                        lines: want,
                    });
                }
            }
        }
        pos = from;
    }
    Ok(Tail {
        start: limit,
        lines: found + 1,
    })
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let file = File::open(f.path()).unwrap();
        (f, file)
    }

    fn all_lines(file: File, start: u64, end: u64) -> Vec<String> {
        let mut c = Cursor::new(file, start);
        let mut out = Vec::new();
        while c.read(end, 2, usize::MAX, &mut out).unwrap() {}
        out.extend(c.finish());
        out.into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn the_tail_is_the_last_lines_with_or_without_a_final_newline() {
        for text in ["a\nb\nc\nd\n", "a\nb\nc\nd"] {
            let (_t, f) = file_with(text.as_bytes());
            let end = text.len() as u64;
            let tail = tail_start(&f, end, 2).unwrap();
            assert_eq!(tail.lines, 2);
            assert_eq!(
                all_lines(f.try_clone().unwrap(), tail.start, end),
                ["c", "d"]
            );
            let tail = tail_start(&f, end, 10).unwrap();
            assert_eq!(tail, Tail { start: 0, lines: 4 });
            assert_eq!(tail_start(&f, end, 0).unwrap().lines, 0);
        }
    }

    #[test]
    fn long_lines_are_cut_with_a_marker() {
        let mut text = vec![b'x'; 100_000];
        text.extend_from_slice(b"\nshort\n");
        let (_t, f) = file_with(&text);
        let lines = all_lines(f, 0, text.len() as u64);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(&"x".repeat(MAX_LINE_BYTES)));
        assert!(
            lines[0].ends_with(&format!("{CUT_MARKER}{} bytes]", 100_000 - MAX_LINE_BYTES)),
            "{}",
            &lines[0][MAX_LINE_BYTES..]
        );
        assert_eq!(lines[1], "short");
    }
}
