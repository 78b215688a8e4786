//! What the supervisor reports: one entry per oneshot and daemon, handed to a [`Report`]
//! on every change. The status file is today's [`Report`]; the effects socket to `startd`
//! will be another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    /// Waiting for what it requires.
    Waiting,
    /// Never started: something it requires failed.
    Blocked,
    /// Running, not (yet) ready.
    Starting,
    /// Running and ready (or running without a probe).
    Running,
    /// Exited; restarting after a delay.
    Backoff,
    Stopping,
    Stopped,
    /// A oneshot that exited 0.
    Completed,
    /// A oneshot that did not exit 0, or a process that could not be spawned.
    Failed,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub ok: bool,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStatus {
    pub kind: Kind,
    pub state: State,
    /// Ready (daemons) or completed (oneshots): what dependents wait for.
    pub ready: bool,
    pub pid: Option<u32>,
    pub restarts: u64,
    pub last_exit: Option<Exit>,
    pub last_probe: Option<ProbeResult>,
    /// Why it is in this state, for people.
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    Oneshot,
    Daemon,
}

/// What the host wants the daemons to do (the control file, see [`crate::control`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Desired {
    #[default]
    Running,
    Stopped,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Set once SIGTERM (or the halt signal) arrived.
    pub stopping: bool,
    /// The run state the supervisor last read from its control file and is converging to:
    /// how the host knows its request was seen.
    #[serde(default)]
    pub desired: Desired,
    pub processes: BTreeMap<String, ProcessStatus>,
}

/// Called by the supervisor after every change, with the whole status, in order (under
/// the supervisor's status lock: keep it quick, never block on the network).
pub trait Report: Send + Sync + 'static {
    fn report(&self, status: &Status);
}

/// Writes the status as JSON to a file, atomically and durably (temporary file, fsync,
/// rename), so a reader never sees half a document.
#[derive(Debug)]
pub struct StatusFile {
    path: PathBuf,
}

impl StatusFile {
    pub fn new(path: PathBuf) -> Self {
        StatusFile { path }
    }

    fn write(&self, status: &Status) -> Result<(), String> {
        let mut json = serde_json::to_vec_pretty(status).map_err(|e| e.to_string())?;
        json.push(b'\n');
        fsio::write_atomic(&self.path, &json, 0o644).map_err(|e| e.to_string())
    }
}

impl Report for StatusFile {
    fn report(&self, status: &Status) {
        if let Err(e) = self.write(status) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write status file");
        }
    }
}

/// Far more than the status of any package's processes.
const MAX_STATUS_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
#[error("cannot read status file {path}: {message}")]
pub struct ReadStatusError {
    pub path: PathBuf,
    pub message: String,
}

/// Reads a status file written by [`StatusFile`] (bounded; a FIFO is refused).
pub fn read_status(path: &Path) -> Result<Status, ReadStatusError> {
    let err = |message: String| ReadStatusError {
        path: path.to_owned(),
        message,
    };
    let text = fsio::open_regular(path)
        .and_then(|f| f.read_limited(MAX_STATUS_BYTES))
        .map_err(|e| err(e.to_string()))?;
    serde_json::from_slice(&text).map_err(|e| err(e.to_string()))
}
