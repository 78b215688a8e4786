//! The supervisor's input: `config.json`, written by the host for one package container.
//!
//! It is the package manifest's daemons and oneshots already resolved against the
//! images: every command is a full argv (the image's entrypoint and cmd applied), every
//! image id names a root filesystem directory the host mounted, every volume id a
//! directory. Types are our own rather than `sdk`'s so the static binary carries only
//! serde and no manifest validation or schema machinery.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The shortest crash restart delay accepted.
pub const MIN_RESTART_MS: u64 = 10;

/// Upper bound on `config.json`: a few hundred daemons fit in a small fraction of it.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Image id -> root filesystem directory (read-only).
    pub images: BTreeMap<String, PathBuf>,
    /// Volume id -> directory.
    #[serde(default)]
    pub volumes: BTreeMap<String, PathBuf>,
    /// Processes run to completion before what requires them.
    #[serde(default)]
    pub oneshots: BTreeMap<String, Process>,
    /// Long-running processes, restarted when they exit.
    #[serde(default)]
    pub daemons: BTreeMap<String, Process>,
    /// Per daemon: seconds between SIGTERM and SIGKILL when stopping.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_seconds: u32,
    #[serde(default)]
    pub restart: Restart,
    /// Where the status JSON is written (atomically).
    #[serde(default = "default_status_file")]
    pub status_file: PathBuf,
    /// What the daemons should be doing (`running` or `stopped`), written by the host and
    /// re-read on SIGUSR1; a missing or unreadable file means `running`.
    #[serde(default = "default_control_file")]
    pub control_file: PathBuf,
    /// Directory of the per-process logs `<id>.log` (and `<id>.log.1`).
    #[serde(default = "default_log_dir")]
    pub log_dir: PathBuf,
    /// A log file is rotated once it grows past this many bytes; one previous file is kept.
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
    /// The effects directory (socket, token, this binary) every process gets at
    /// `/run` of its image root (`exec_in::EFFECTS_TARGET`); none without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects_dir: Option<PathBuf>,
}

fn default_stop_timeout() -> u32 {
    30
}
pub const DEFAULT_STATUS_FILE: &str = "/run/start-container/status.json";
fn default_status_file() -> PathBuf {
    DEFAULT_STATUS_FILE.into()
}
/// Bound read-only from the host's container directory (a directory bind, so the host can
/// replace the file atomically).
pub const DEFAULT_CONTROL_FILE: &str = "/etc/start-container/control/run-state";
fn default_control_file() -> PathBuf {
    DEFAULT_CONTROL_FILE.into()
}
fn default_log_dir() -> PathBuf {
    "/var/log/start-container".into()
}
/// A log file is rotated past this size unless the config says otherwise.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 1 << 20;
fn default_log_max_bytes() -> u64 {
    DEFAULT_LOG_MAX_BYTES
}

/// Crash restart backoff: `initialMs`, doubled per consecutive crash up to `maxMs`; a
/// daemon that stayed up `resetAfterSeconds` starts over at `initialMs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Restart {
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
    #[serde(default = "default_reset_after")]
    pub reset_after_seconds: u64,
}

fn default_initial_ms() -> u64 {
    1000
}
fn default_max_ms() -> u64 {
    60_000
}
fn default_reset_after() -> u64 {
    60
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
            reset_after_seconds: default_reset_after(),
        }
    }
}

/// One oneshot or daemon.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Process {
    /// Image id (a key of `images`).
    pub image: String,
    /// Full argv, resolved from the manifest's `command` or the image's entrypoint + cmd.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Absolute working directory inside the image; `/` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `name`, `uid`, `uid:gid` or `name:gid`, resolved in the image's `/etc/passwd`;
    /// root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Oneshots (completed) and daemons (ready) that must come first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Readiness probe (daemons only); without one a daemon is ready once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Ready>,
}

/// A volume bind-mounted into the process's root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    /// Volume id (a key of `volumes`).
    pub volume: String,
    /// Absolute mount point inside the image (it must exist there).
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A readiness probe: exactly one of `http`, `tcp`, `exec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ready {
    /// `GET http://127.0.0.1:<port><path>` answering 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// A TCP connection to `127.0.0.1:<port>` accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// The argv, run in the daemon's image as its user, exiting 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
    #[serde(default = "default_period")]
    pub period_seconds: u32,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// Failures within this many seconds of a start leave the daemon `starting`.
    #[serde(default = "default_grace")]
    pub grace_seconds: u32,
}

fn default_period() -> u32 {
    10
}
fn default_timeout() -> u32 {
    5
}
fn default_grace() -> u32 {
    10
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    pub port: u16,
    #[serde(default = "default_http_path")]
    pub path: String,
}

fn default_http_path() -> String {
    "/".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpProbe {
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecProbe {
    pub command: Vec<String>,
}

/// The kind of a [`Ready`] probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe<'a> {
    Http(&'a HttpProbe),
    Tcp(&'a TcpProbe),
    Exec(&'a ExecProbe),
}

impl Ready {
    /// `None` when zero or several probe kinds are set.
    pub fn probe(&self) -> Option<Probe<'_>> {
        match (&self.http, &self.tcp, &self.exec) {
            (Some(h), None, None) => Some(Probe::Http(h)),
            (None, Some(t), None) => Some(Probe::Tcp(t)),
            (None, None, Some(e)) => Some(Probe::Exec(e)),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Read(#[source] fsio::FsioError),
    #[error("config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("config: {0}")]
    Invalid(String),
}

/// What cannot reach `execve` or an HTTP request line intact: NUL anywhere, `=` in an
/// environment name, whitespace or control characters in a probe path.
fn validate_strings(p: &Process) -> Result<(), String> {
    let probe_argv = p
        .ready
        .iter()
        .flat_map(|r| r.exec.iter())
        .flat_map(|e| &e.command);
    let strings = p.command.iter().chain(probe_argv).chain(p.env.values());
    if strings
        .chain(&p.workdir)
        .chain(&p.user)
        .any(|s| s.contains('\0'))
    {
        return Err("NUL in command, env, workdir or user".into());
    }
    if let Some(k) = p
        .env
        .keys()
        .find(|k| k.is_empty() || k.contains(['=', '\0']))
    {
        return Err(format!("invalid environment variable name {k:?}"));
    }
    if let Some(h) = p.ready.as_ref().and_then(|r| r.http.as_ref())
        && (!h.path.starts_with('/') || h.path.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(format!(
            "http probe path {:?} is not an absolute URL path",
            h.path
        ));
    }
    Ok(())
}

impl Config {
    /// Reads and validates `path`: a regular file (a FIFO is refused, never waited on) of
    /// at most [`MAX_CONFIG_BYTES`].
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = fsio::open_regular(path)
            .and_then(|f| f.read_limited(MAX_CONFIG_BYTES))
            .map_err(ConfigError::Read)?;
        let config: Config =
            serde_json::from_slice(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    pub fn process(&self, id: &str) -> Option<&Process> {
        self.oneshots.get(id).or_else(|| self.daemons.get(id))
    }

    /// Every reference resolves, ids are unique across oneshots and daemons, `requires`
    /// has no cycle, and each probe names exactly one kind.
    pub fn validate(&self) -> Result<(), String> {
        // Zero would restart a crashing daemon in a tight loop, forking as fast as it can.
        if self.restart.initial_ms < MIN_RESTART_MS {
            return Err(format!(
                "restart.initialMs must be at least {MIN_RESTART_MS}"
            ));
        }
        if self.restart.max_ms < self.restart.initial_ms {
            return Err("restart.maxMs must be at least restart.initialMs".into());
        }
        if let Some(id) = self
            .oneshots
            .keys()
            .find(|id| self.daemons.contains_key(*id))
        {
            return Err(format!("{id:?} is both a oneshot and a daemon"));
        }
        for (kind, id, p) in self.all() {
            self.validate_process(kind, id, p)?;
        }
        if self.start_order().is_none() {
            return Err("requires has a cycle".into());
        }
        Ok(())
    }

    fn all(&self) -> impl Iterator<Item = (&'static str, &String, &Process)> {
        let o = self.oneshots.iter().map(|(id, p)| ("oneshot", id, p));
        o.chain(self.daemons.iter().map(|(id, p)| ("daemon", id, p)))
    }

    fn validate_process(&self, kind: &str, id: &str, p: &Process) -> Result<(), String> {
        let what = format!("{kind} {id:?}");
        if !self.images.contains_key(&p.image) {
            return Err(format!("{what}: unknown image {:?}", p.image));
        }
        if p.command.is_empty() {
            return Err(format!("{what}: empty command"));
        }
        if let Some(w) = &p.workdir
            && !w.starts_with('/')
        {
            return Err(format!("{what}: workdir {w:?} is not absolute"));
        }
        for m in &p.mounts {
            if !self.volumes.contains_key(&m.volume) {
                return Err(format!("{what}: unknown volume {:?}", m.volume));
            }
            if !m.path.starts_with('/') || m.path.split('/').any(|c| c == "..") {
                return Err(format!("{what}: mount path {:?} is not absolute", m.path));
            }
        }
        validate_strings(p).map_err(|e| format!("{what}: {e}"))?;
        if let Some(r) = p.requires.iter().find(|r| self.process(r).is_none()) {
            return Err(format!("{what}: requires unknown {r:?}"));
        }
        match (&p.ready, kind) {
            (Some(_), "oneshot") => Err(format!("{what}: a oneshot has no readiness probe")),
            (Some(r), _) if r.probe().is_none() => Err(format!(
                "{what}: ready needs exactly one of http, tcp, exec"
            )),
            (Some(r), _) if r.period_seconds == 0 || r.timeout_seconds == 0 => Err(format!(
                "{what}: ready periodSeconds and timeoutSeconds must be at least 1"
            )),
            (Some(r), _) if r.exec.as_ref().is_some_and(|e| e.command.is_empty()) => {
                Err(format!("{what}: empty exec probe command"))
            }
            _ => Ok(()),
        }
    }

    /// All ids, each after everything it requires (ties broken by id); `None` on a cycle
    /// or an unknown id.
    pub fn start_order(&self) -> Option<Vec<&str>> {
        let mut all: Vec<&str> = self.all().map(|(_, id, _)| id.as_str()).collect();
        all.sort_unstable();
        let mut order: Vec<&str> = Vec::with_capacity(all.len());
        let mut placed = std::collections::BTreeSet::new();
        while order.len() < all.len() {
            let next = all.iter().copied().find(|id| {
                !placed.contains(id)
                    && self
                        .process(id)
                        .is_some_and(|p| p.requires.iter().all(|r| placed.contains(r.as_str())))
            })?;
            placed.insert(next);
            order.push(next);
        }
        Some(order)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn config(json: &str) -> Result<Config, String> {
        let c: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn the_documented_example_is_valid() {
        let c = config(include_str!("../config.example.json")).unwrap();
        assert_eq!(c.start_order().unwrap(), ["migrate", "web", "worker"]);
    }

    /// Runs `f` on a thread and fails if it does not return in time (instead of hanging).
    pub(crate) fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("blocked: did it wait on a FIFO?")
    }

    #[test]
    fn a_fifo_config_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.json");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = within_seconds(move || Config::load(&fifo).unwrap_err().to_string());
        assert!(e.contains("config.json") && e.contains("fifo"), "{e}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = config(r#"{"images":{},"daemon":{}}"#).unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn start_order_follows_requires_and_refuses_cycles() {
        let c = config(
            r#"{"images":{"main":"/r"},
                "oneshots":{"migrate":{"image":"main","command":["m"]}},
                "daemons":{"a":{"image":"main","command":["a"],"requires":["b","migrate"]},
                           "b":{"image":"main","command":["b"]}}}"#,
        )
        .unwrap();
        assert_eq!(c.start_order().unwrap(), ["b", "migrate", "a"]);
        let e = config(
            r#"{"images":{"main":"/r"},
                "daemons":{"a":{"image":"main","command":["a"],"requires":["b"]},
                           "b":{"image":"main","command":["b"],"requires":["a"]}}}"#,
        )
        .unwrap_err();
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn references_and_probes_are_checked() {
        for (json, want) in [
            (
                r#"{"images":{},"daemons":{"a":{"image":"x","command":["a"]}}}"#,
                "unknown image",
            ),
            (
                r#"{"images":{"i":"/r"},"daemons":{"a":{"image":"i","command":["a"],"requires":["z"]}}}"#,
                "requires unknown",
            ),
            (
                r#"{"images":{"i":"/r"},"daemons":{"a":{"image":"i","command":["a"],"ready":{}}}}"#,
                "exactly one",
            ),
            (
                r#"{"images":{"i":"/r"},"daemons":{"a":{"image":"i","command":["a"],"mounts":[{"volume":"v","path":"/d"}]}}}"#,
                "unknown volume",
            ),
            (
                r#"{"images":{"i":"/r"},"oneshots":{"a":{"image":"i","command":["a"],"ready":{"tcp":{"port":1}}}}}"#,
                "no readiness probe",
            ),
            (
                r#"{"images":{"i":"/r"},"daemons":{"a":{"image":"i","command":["a"],"ready":{"http":{"port":1,"path":"/ HTTP/1.1\r\nX: y"}}}}}"#,
                "http probe path",
            ),
            (
                r#"{"images":{"i":"/r"},"daemons":{"a":{"image":"i","command":["a"],"env":{"A=B":"c"}}}}"#,
                "environment variable name",
            ),
            (
                r#"{"images":{"i":"/r"},"daemons":{"a":{"image":"i","command":["a\u0000"]}}}"#,
                "NUL",
            ),
            (
                r#"{"images":{},"restart":{"initialMs":0}}"#,
                "restart.initialMs",
            ),
            (
                r#"{"images":{},"restart":{"initialMs":500,"maxMs":100}}"#,
                "restart.maxMs",
            ),
        ] {
            let e = config(json).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}
