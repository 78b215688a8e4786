//! The control file: one word, `running` or `stopped`, written by the host and re-read by
//! the supervisor at start and on every SIGUSR1, so the daemons stop and start while the
//! container (and the supervisor) stay up.

use std::path::Path;

use crate::status::Desired;

/// Far more than either word; a larger file is not ours.
const MAX_CONTROL_BYTES: u64 = 64;

pub const RUNNING: &str = "running";
pub const STOPPED: &str = "stopped";

impl Desired {
    /// The file's content for this state.
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => RUNNING,
            Desired::Stopped => STOPPED,
        }
    }

    /// `running` or `stopped`, surrounding whitespace ignored.
    pub fn parse(text: &str) -> Option<Desired> {
        match text.trim() {
            RUNNING => Some(Desired::Running),
            STOPPED => Some(Desired::Stopped),
            _ => None,
        }
    }
}

/// Reads the control file (bounded, never following a link, a FIFO refused). Anything
/// but a readable `stopped` means running: a package whose host never wrote the file
/// runs, as it did before the file existed.
pub fn read_desired(path: &Path) -> Desired {
    let text = match fsio::open_regular(path).and_then(|f| f.read_limited(MAX_CONTROL_BYTES)) {
        Ok(text) => text,
        Err(e) => {
            tracing::info!(path = %path.display(), error = %e, "no usable control file: running");
            return Desired::Running;
        }
    };
    match std::str::from_utf8(&text).ok().and_then(Desired::parse) {
        Some(d) => d,
        None => {
            tracing::warn!(
                path = %path.display(),
                "control file holds neither `running` nor `stopped`: running"
            );
            Desired::Running
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_readable_stopped_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run-state");
        assert_eq!(read_desired(&path), Desired::Running);
        std::fs::write(&path, "stopped\n").unwrap();
        assert_eq!(read_desired(&path), Desired::Stopped);
        std::fs::write(&path, "running").unwrap();
        assert_eq!(read_desired(&path), Desired::Running);
        std::fs::write(&path, "paused").unwrap();
        assert_eq!(read_desired(&path), Desired::Running);
        std::fs::write(&path, "stopped".repeat(100)).unwrap();
        assert_eq!(read_desired(&path), Desired::Running);
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/null", &path).unwrap();
        assert_eq!(read_desired(&path), Desired::Running);
    }
}
