//! Running the real binary: `startd` on a temporary data directory and `start-cli` against it.
//! Readiness is a line on the daemon's stdout, never a fixed sleep.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Output, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_startbox");
/// Generous: a debug build on a loaded two-core machine.
pub const STARTUP: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Daemon {
    pub child: Child,
    pub data_dir: PathBuf,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Printed on the first start only.
    pub password: Option<String>,
    pub log: PathBuf,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
}

/// Starts `startd` without waiting for it.
pub fn spawn_startd(data_dir: &Path, log: &Path, extra: &[&str]) -> Child {
    spawn_startd_under(&[], data_dir, log, extra)
}

/// Starts `startd` under `wrapper` (a command that runs the rest of its arguments, such as
/// `prlimit --nofile=256:256 --`), without waiting for it.
pub fn spawn_startd_under(wrapper: &[&str], data_dir: &Path, log: &Path, extra: &[&str]) -> Child {
    let log_file = std::fs::File::create(log).expect("create log file");
    let (program, args) = match wrapper.split_first() {
        Some((p, rest)) => (*p, [rest, &[BIN]].concat()),
        None => (BIN, Vec::new()),
    };
    Command::new(program)
        .args(args)
        .args(["startd", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--shutdown-timeout", "5s"])
        // Containers off unless a test asks for them: parallel daemons must not race on the
        // host's bridge and id ranges.
        .args(if extra.contains(&"--containers") {
            &[][..]
        } else {
            &["--containers", "off"][..]
        })
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn startd")
}

impl Daemon {
    /// Starts `startd` on `data_dir` (loopback, free port) and waits for `startd: ready`.
    /// Its log goes to `log`.
    pub async fn start(data_dir: &Path, log: &Path) -> Daemon {
        Self::start_under(&[], data_dir, log, &[]).await
    }

    /// [`Daemon::start`] under `wrapper` (see [`spawn_startd_under`]) with `extra` arguments.
    pub async fn start_under(
        wrapper: &[&str],
        data_dir: &Path,
        log: &Path,
        extra: &[&str],
    ) -> Daemon {
        let mut child = spawn_startd_under(wrapper, data_dir, log, extra);
        let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
        let mut password = None;
        let mut addr = None;
        let ready = tokio::time::timeout(STARTUP, async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(rest) = line.strip_prefix("startd: generated admin password: ") {
                    password = rest.split_whitespace().next().map(str::to_owned);
                } else if let Some(rest) = line.strip_prefix("startd: listening on http://") {
                    addr = rest.split_whitespace().next().map(str::to_owned);
                } else if line == "startd: ready" {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            let _ = child.start_kill();
            panic!(
                "startd did not become ready ({ready:?}); log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        Daemon {
            child,
            data_dir: data_dir.to_owned(),
            addr: addr.expect("listening line"),
            password,
            log: log.to_owned(),
            stdout: Some(lines),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.data_dir.join("run").join("startd.sock")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// The daemon's remaining stdout lines (after `ready`).
    pub async fn next_stdout_line(&mut self) -> Option<String> {
        self.stdout.as_mut()?.next_line().await.ok().flatten()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub async fn terminate(mut self, within: Duration) -> ExitStatus {
        signal(self.pid(), "TERM");
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!(
                "startd did not exit within {within:?} after SIGTERM; log:\n{}",
                self.log_text()
            ),
        }
    }

    /// SIGKILL, and reap.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill startd");
    }
}

pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// Runs `startbox cli --data-dir DIR ARGS...`.
pub async fn cli(data_dir: &Path, args: &[&str]) -> Output {
    cli_with(|c| c.arg("--data-dir").arg(data_dir), args).await
}

/// Runs `startbox cli ARGS...` after `setup` adds options or environment.
pub async fn cli_with(setup: impl FnOnce(&mut Command) -> &mut Command, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("cli")
        .env_remove("STARTOS_TOKEN")
        .env_remove("STARTOS_PASSWORD")
        .env_remove("STARTOS_SOCKET")
        .stdin(Stdio::null());
    setup(&mut cmd);
    cmd.args(args);
    tokio::time::timeout(STARTUP, cmd.output())
        .await
        .expect("start-cli hung")
        .expect("run start-cli")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "start-cli failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples")
}
