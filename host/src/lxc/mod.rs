//! LXC containers through the `lxc-*` command line tools.
//!
//! The tools rather than liblxc: they keep liblxc's forking out of our multi-threaded
//! daemon, report failures as text, and their command socket survives a daemon restart.
//! Every container lives under our own LXC path (`-P`) and carries our name prefix, so
//! nothing here can see or touch other containers on the machine.

mod cgroups;
mod cli;
mod config;
mod fake;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use crate::cmd::CommandError;

pub use cli::LxcCli;
pub use config::{CgroupLayout, ConfigError, render_config, validate_name};
pub use fake::{FakeLxc, LxcCall, LxcOp};

/// Everything a container is created from. The root filesystem directory is the caller's:
/// it is prepared (mounted) before `create` and never removed by `destroy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub rootfs: PathBuf,
    /// The container's first process, as an argument vector (no shell).
    pub init: Vec<String>,
    pub idmap: Option<IdMap>,
    pub network: Option<NetworkSpec>,
    pub limits: Limits,
    pub mounts: Vec<BindMount>,
    pub security: Security,
}

/// Container ids 0..count map to host ids host_base..host_base+count (uids and gids alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub host_base: u32,
    pub count: u32,
}

/// One veth on a bridge with a static address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub bridge: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// CPU time per period, in millionths of one CPU (1_500_000 = one and a half CPUs).
    pub cpu_micros: Option<u64>,
    pub pids: Option<u64>,
}

/// A host directory or file bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    /// Path inside the container, absolute.
    pub target: PathBuf,
    pub read_only: bool,
}

/// Confinement beyond the user namespace. `None` leaves LXC's defaults; on a host without
/// AppArmor LXC ignores the profile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    pub apparmor_profile: Option<String>,
    pub seccomp_profile: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Stopped,
    Starting,
    Running,
    Stopping,
    Aborting,
    Freezing,
    Frozen,
    Thawed,
}

impl State {
    fn parse(text: &str) -> Option<Self> {
        Some(match text.trim() {
            "STOPPED" => Self::Stopped,
            "STARTING" => Self::Starting,
            "RUNNING" => Self::Running,
            "STOPPING" => Self::Stopping,
            "ABORTING" => Self::Aborting,
            "FREEZING" => Self::Freezing,
            "FROZEN" => Self::Frozen,
            "THAWED" => Self::Thawed,
            _ => return None,
        })
    }
}

/// A signal for [`Lxc::signal`].
pub use rustix::process::Signal;

/// A running container's init pid (in the host's pid namespace) and addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Info {
    pub state: Option<State>,
    pub pid: Option<u32>,
    pub ips: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Ask init to halt, and kill it if it has not stopped after the timeout.
    Graceful(Duration),
    Kill,
}

/// A one-off command to run inside a running container.
///
/// The environment goes on `lxc-attach`'s command line (`--set-var K=V`), where every
/// local user can read it in `/proc`: it is for settings, never secrets. Secrets go on
/// `stdin`, which only the command reads.
#[derive(Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// The command's whole environment (the container's own is cleared). Names are
    /// `[A-Za-z_][A-Za-z0-9_]*`; values hold no NUL.
    pub env: BTreeMap<String, String>,
    /// Written to the command's stdin, which is then closed (empty: nothing is written).
    pub stdin: Vec<u8>,
    /// The command is killed after this long.
    pub timeout: Duration,
}

impl ExecRequest {
    /// `argv` with no environment, no input and `timeout`.
    pub fn new(argv: Vec<String>, timeout: Duration) -> Self {
        Self {
            argv,
            env: BTreeMap::new(),
            stdin: Vec::new(),
            timeout,
        }
    }

    /// Why the request cannot be run as given, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        let Some(first) = self.argv.first() else {
            return Err("empty argv".into());
        };
        if first.is_empty() {
            return Err("empty program name".into());
        }
        if let Some(arg) = self.argv.iter().find(|a| a.contains('\0')) {
            return Err(format!("argument {:?} contains NUL", cut(arg)));
        }
        for (name, value) in &self.env {
            let mut chars = name.chars();
            let good_start = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !good_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "environment name {:?} is not [A-Za-z_][A-Za-z0-9_]*",
                    cut(name)
                ));
            }
            if value.contains('\0') {
                return Err(format!("environment variable {name} contains NUL"));
            }
        }
        Ok(())
    }
}

/// The first characters of `text`, for an error message.
fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Debug never shows the input: it may hold a password.
impl std::fmt::Debug for ExecRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecRequest")
            .field("argv", &self.argv)
            .field("env", &self.env)
            .field("stdin_bytes", &self.stdin.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What a one-off command inside a container left.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Whether stdout was longer than the bound and cut.
    pub stdout_truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LxcError {
    #[error("container {container}: {source}")]
    Command {
        container: String,
        #[source]
        source: CommandError,
    },
    /// `lxc-start` failed; LXC's own log usually says why where its stderr does not.
    #[error("container {container}: {source}; lxc log errors: {log}")]
    Start {
        container: String,
        #[source]
        source: CommandError,
        log: String,
    },
    #[error("container {container}: {source}")]
    Config {
        container: String,
        #[source]
        source: ConfigError,
    },
    #[error("container {container}: {action} {path}: {source}")]
    Io {
        container: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {container}: writing {path}: {source}")]
    Write {
        container: String,
        path: PathBuf,
        #[source]
        source: fsio::FsioError,
    },
    #[error("container {container}: refusing to run `{program}`: {reason}")]
    BadExec {
        container: String,
        program: String,
        reason: String,
    },
    #[error("container {container} is not running: no init to signal")]
    NotRunning { container: String },
    #[error("container {container}: sending {signal} to its init (pid {pid}): {source}")]
    Signal {
        container: String,
        signal: String,
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("container {container} does not exist under {lxcpath}")]
    NotFound { container: String, lxcpath: PathBuf },
    #[error("container {container} already exists under {lxcpath}")]
    Exists { container: String, lxcpath: PathBuf },
    #[error("container {container}: unexpected output of `{command}`: {output}")]
    Parse {
        container: String,
        command: String,
        output: String,
    },
}

/// The container operations a controller needs. Names carry the implementation's prefix.
#[async_trait]
pub trait Lxc: Send + Sync + std::fmt::Debug {
    /// Writes the container's configuration. Fails if the container exists.
    async fn create(&self, spec: &ContainerSpec) -> Result<(), LxcError>;
    /// Starts the container and waits until it runs; starting a running container is no
    /// error.
    async fn start(&self, name: &str) -> Result<(), LxcError>;
    /// Stops the container; stopping a stopped container is no error.
    async fn stop(&self, name: &str, mode: StopMode) -> Result<(), LxcError>;
    /// Kills the container if it runs and removes its configuration (never its rootfs).
    /// Destroying a container that does not exist is no error.
    async fn destroy(&self, name: &str) -> Result<(), LxcError>;
    /// `None` when the container does not exist.
    async fn state(&self, name: &str) -> Result<Option<State>, LxcError>;
    /// The containers under our path and prefix, sorted.
    async fn list(&self) -> Result<Vec<String>, LxcError>;
    async fn info(&self, name: &str) -> Result<Info, LxcError>;
    /// Sends `signal` to the running container's init (a request to it, such as "read
    /// your control file again", never a way to stop it: that is [`Lxc::stop`]).
    async fn signal(&self, name: &str, signal: rustix::process::Signal) -> Result<(), LxcError>;
    /// Runs `request.argv` inside the running container with only `request.env` as its
    /// environment and `request.stdin` as its input, and returns its exit code and
    /// (bounded) output; a non-zero exit is not an error, the timeout is.
    async fn exec(&self, name: &str, request: &ExecRequest) -> Result<ExecOutput, LxcError>;
}
