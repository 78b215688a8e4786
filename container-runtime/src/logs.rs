//! Per-process logs: every line of stdout and stderr, timestamped, in `<id>.log`; once
//! that passes the size bound it becomes `<id>.log.1` (replacing the older one), so a
//! process never holds more than about twice the bound on disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// Longer lines are split: one chatty process cannot grow our memory.
pub const MAX_LINE_BYTES: u64 = 16 * 1024;

#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    max_bytes: u64,
    inner: Mutex<Option<(File, u64)>>,
    /// Lines lost to write errors; the error is logged when the count leaves zero, not per
    /// line, so a full disk does not flood the console.
    dropped: AtomicU64,
}

impl LogFile {
    pub fn new(dir: &Path, id: &str, max_bytes: u64) -> Arc<Self> {
        Arc::new(LogFile {
            path: dir.join(format!("{id}.log")),
            max_bytes,
            inner: Mutex::new(None),
            dropped: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line. Failures (disk full) drop the line and are logged, never fatal:
    /// the process keeps running and its output keeps being drained.
    pub fn line(&self, stream: &str, text: &[u8]) {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let mut record = Vec::with_capacity(text.len() + 40);
        let _ = write!(record, "{now} {stream} ");
        record.extend_from_slice(text.strip_suffix(b"\n").unwrap_or(text));
        record.push(b'\n');
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match self.append(&mut inner, &record) {
            Ok(()) => {
                let lost = self.dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    tracing::warn!(path = %self.path.display(), lost, "log writable again");
                }
            }
            Err(e) => {
                *inner = None;
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot write log; dropping lines");
                }
            }
        }
    }

    /// Lines dropped since the last successful write.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn append(&self, inner: &mut Option<(File, u64)>, record: &[u8]) -> std::io::Result<()> {
        if inner
            .as_ref()
            .is_some_and(|(_, len)| *len >= self.max_bytes)
        {
            *inner = None;
            std::fs::rename(&self.path, self.path.with_extension("log.1"))?;
        }
        if inner.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let len = file.metadata()?.len();
            *inner = Some((file, len));
            if len >= self.max_bytes {
                return self.append(inner, record);
            }
        }
        let (file, len) = inner.as_mut().expect("opened above");
        file.write_all(record)?;
        *len += record.len() as u64;
        Ok(())
    }
}

/// Copies `reader` into `log` line by line until end of file.
pub async fn pump(reader: impl AsyncRead + Unpin, log: Arc<LogFile>, stream: &'static str) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) => return,
            Ok(_) => log.line(stream, &line),
            Err(e) => {
                tracing::warn!(path = %log.path().display(), error = %e, "cannot read output");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_one_previous_file_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::new(dir.path(), "d", 1000);
        for i in 0..10_000 {
            log.line("out", format!("line {i}\n").as_bytes());
        }
        let cur = std::fs::read_to_string(dir.path().join("d.log")).unwrap();
        let prev = std::fs::read_to_string(dir.path().join("d.log.1")).unwrap();
        assert!(
            cur.len() < 1100 && prev.len() < 1100,
            "{} {}",
            cur.len(),
            prev.len()
        );
        assert!(cur.ends_with(" out line 9999\n"), "{cur}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_full_disk_drops_lines_without_failing() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join("d.log")).unwrap();
        let log = LogFile::new(dir.path(), "d", 1 << 20);
        for i in 0..10_000 {
            log.line("out", format!("line {i}\n").as_bytes());
        }
        assert_eq!(log.dropped(), 10_000);
    }

    #[tokio::test]
    async fn long_lines_are_split() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::new(dir.path(), "d", 1 << 20);
        let input = vec![b'x'; 40_000];
        pump(&input[..], log.clone(), "err").await;
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.lines()
                .all(|l| l.len() <= MAX_LINE_BYTES as usize + 40)
        );
    }
}
