//! One process's log as it is now (`<id>.log.1`, then `<id>.log`, each up to its size when
//! opened, from where the tail begins), several processes merged by time, and following a
//! process's `<id>.log` once it is read (appends, truncation, rotation).

use std::{collections::VecDeque, ffi::OsStr, io, os::unix::fs::MetadataExt};

use api_server::logs::LogLine;
use fsio::{Dir, FsioError, OpenFile};

use super::cursor::{Cursor, tail_start};

/// A process's current log file.
pub fn current_name(process: &str) -> String {
    format!("{process}.log")
}

fn previous_name(process: &str) -> String {
    format!("{process}.log.1")
}

/// The process id of a directory entry, if it is a current log (`<id>.log`).
pub fn process_of(name: &OsStr) -> Option<String> {
    let name = name.to_str()?;
    let id = name.strip_suffix(".log")?;
    (!id.is_empty()).then(|| id.to_owned())
}

/// A line as the supervisor writes it: `<RFC 3339 time> <out|err> <text>`.
pub fn parse(process: &str, raw: &[u8]) -> LogLine {
    let text = String::from_utf8_lossy(raw);
    let (time, rest) = match text.split_once(' ') {
        Some((t, rest)) if chrono::DateTime::parse_from_rfc3339(t).is_ok() => (t, rest),
        _ => ("", &*text),
    };
    let rest = ["out ", "err "]
        .iter()
        .find_map(|s| rest.strip_prefix(s))
        .unwrap_or(rest);
    LogLine {
        process: process.to_owned(),
        time: time.to_owned(),
        text: rest.to_owned(),
    }
}

fn open_optional(dir: &Dir, name: &str) -> Result<Option<OpenFile>, FsioError> {
    match dir.open_file(name) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn io_error(op: &'static str, path: std::path::PathBuf) -> impl FnOnce(io::Error) -> FsioError {
    move |source| FsioError::Io { op, path, source }
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

struct Segment {
    cursor: Cursor,
    end: u64,
    /// `<id>.log` (rather than `<id>.log.1`): a follower takes it over once read.
    current: bool,
}

/// One process's lines up to now, then its follower.
pub struct ProcessLog {
    pub process: String,
    segments: VecDeque<Segment>,
    pending: VecDeque<Vec<u8>>,
    /// The lines the tail holds (those [`ProcessLog::next`] gives, but for an unterminated
    /// last line while following).
    pub lines: usize,
    follow: bool,
    current_id: Option<(u64, u64)>,
    handoff: Option<Cursor>,
}

impl ProcessLog {
    /// Opens `<id>.log` (and `<id>.log.1` when the tail reaches into it).
    pub fn open(
        dir: &Dir,
        process: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<Self, FsioError> {
        let mut segments = VecDeque::new();
        let mut lines = 0usize;
        // Lines still wanted from older files; `None`: all of them.
        let mut rest = tail;
        let mut current_id = None;
        let tail_of = |file: &std::fs::File, end, n, name: String| {
            tail_start(file, end, n).map_err(io_error("read", dir.join(name)))
        };
        if let Some(f) = open_optional(dir, &current_name(process))? {
            let end = f.metadata().len();
            current_id = Some(identity(f.metadata()));
            let file = f.into_file();
            let mut start = 0;
            if let Some(n) = rest {
                let t = tail_of(&file, end, n, current_name(process))?;
                lines += t.lines;
                start = t.start;
                rest = Some(if t.start == 0 { n - t.lines } else { 0 });
            }
            segments.push_back(Segment {
                cursor: Cursor::new(file, start),
                end,
                current: true,
            });
        }
        let previous = if rest == Some(0) {
            None
        } else {
            open_optional(dir, &previous_name(process))?
        };
        if let Some(f) = previous {
            let end = f.metadata().len();
            let file = f.into_file();
            let mut start = 0;
            if let Some(n) = rest {
                let t = tail_of(&file, end, n, previous_name(process))?;
                lines += t.lines;
                start = t.start;
            }
            segments.push_front(Segment {
                cursor: Cursor::new(file, start),
                end,
                current: false,
            });
        }
        Ok(Self {
            process: process.to_owned(),
            segments,
            pending: VecDeque::new(),
            lines,
            follow,
            current_id,
            handoff: None,
        })
    }

    /// The next line, or `None` when the log as it was at opening is read.
    pub fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Ok(Some(line));
            }
            let Some(seg) = self.segments.front_mut() else {
                return Ok(None);
            };
            let mut out = Vec::new();
            let more = seg.cursor.read(seg.end, 64, 256 * 1024, &mut out)?;
            self.pending.extend(out);
            if more || !self.pending.is_empty() {
                continue;
            }
            let mut seg = self.segments.pop_front().expect("front above");
            if seg.current && self.follow {
                // The follower goes on from here, half line included.
                self.handoff = Some(seg.cursor);
                return Ok(None);
            }
            self.pending.extend(seg.cursor.finish());
        }
    }

    /// What follows this process once its lines up to now are read.
    pub fn into_follower(self) -> Follower {
        Follower {
            process: self.process,
            id: self.current_id.filter(|_| self.handoff.is_some()),
            cursor: self.handoff,
        }
    }
}

/// Appends to a process's `<id>.log` after its lines up to now were read. A file shorter
/// than the position was truncated: read again from its start. A `<id>.log` that is another
/// file was rotated: the rest of the old one is read, then the new one from its start.
pub struct Follower {
    pub process: String,
    id: Option<(u64, u64)>,
    cursor: Option<Cursor>,
}

impl Follower {
    /// A process whose log appeared while following: read from its start.
    pub fn new(process: &str) -> Self {
        Self {
            process: process.to_owned(),
            id: None,
            cursor: None,
        }
    }

    /// New complete lines into `out`, up to `max` lines or about `max_bytes`. Returns
    /// whether it stopped for that bound.
    pub fn poll(
        &mut self,
        dir: &Dir,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<LogLine>,
    ) -> Result<bool, FsioError> {
        let name = current_name(&self.process);
        let path = || dir.join(&name);
        loop {
            if let Some(c) = &mut self.cursor {
                let len = c.file().metadata().map_err(io_error("stat", path()))?.len();
                if len < c.pos() {
                    tracing::debug!(process = %self.process, path = %path().display(), "log truncated; reading it from its start");
                    c.restart();
                }
                let mut raw = Vec::new();
                let more = c
                    .read(u64::MAX, max.saturating_sub(out.len()), max_bytes, &mut raw)
                    .map_err(io_error("read", path()))?;
                out.extend(raw.iter().map(|l| parse(&self.process, l)));
                if more {
                    return Ok(true);
                }
            }
            let Some(f) = open_optional(dir, &name)? else {
                // Between the rename of a rotation and the new file: the watch wakes us.
                return Ok(false);
            };
            let id = identity(f.metadata());
            if self.id == Some(id) {
                return Ok(false);
            }
            if let Some(mut old) = self.cursor.take() {
                out.extend(old.finish().map(|l| parse(&self.process, &l)));
            }
            self.id = Some(id);
            self.cursor = Some(Cursor::new(f.into_file(), 0));
        }
    }
}
