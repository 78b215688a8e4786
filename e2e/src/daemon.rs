//! Starting and stopping the real `startd`, and reading its footprint from `/proc`.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use api_client::{Endpoint, HttpStore};
use store::Store;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::UnixStream,
    process::{Child, Command},
    time::{Instant, timeout},
};

/// How long `startd` may take to print `startd: ready` and accept on its socket.
const STARTUP: Duration = Duration::from_secs(60);
/// How long `startd` may take to exit after SIGTERM.
const SHUTDOWN: Duration = Duration::from_secs(30);

/// A running `startd` on a data directory of its own.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    pub pid: u32,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The generated admin password (printed on the first start only).
    pub password: Option<String>,
    pub socket: PathBuf,
    /// From spawning the process to the first successful request on the Unix socket.
    pub startup: Duration,
}

impl Daemon {
    /// Spawns `startbox startd --data-dir DATA --listen 127.0.0.1:0 --containers off` (the
    /// store and the API only), reads the password and address from its stdout, and waits
    /// until its Unix socket accepts connections and answers a request. Logs go to `log`.
    pub async fn start(bin: &Path, data_dir: &Path, log: &Path) -> Result<Self> {
        Self::start_with(bin, data_dir, log, &["--containers", "off"]).await
    }

    /// [`Daemon::start`] with these `startd` options instead of `--containers off`.
    pub async fn start_with(
        bin: &Path,
        data_dir: &Path,
        log: &Path,
        extra: &[&str],
    ) -> Result<Self> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(["startd", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let pid = child.id().context("startd exited at once")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let mut lines = BufReader::new(stdout).lines();

        let mut password = None;
        let mut addr = None;
        let announced = timeout(STARTUP, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("startd: generated admin password: ") {
                    password = rest.split_whitespace().next().map(str::to_owned);
                } else if let Some(rest) = line.strip_prefix("startd: listening on http://") {
                    addr = rest.split_whitespace().next().map(str::to_owned);
                } else if line == "startd: ready" {
                    return Ok(true);
                }
            }
            Ok::<_, std::io::Error>(false)
        })
        .await;
        match announced {
            Ok(Ok(true)) => {}
            other => {
                let _ = child.start_kill();
                bail!(
                    "startd did not announce readiness ({other:?}); its log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        // Nothing more is expected on stdout; keep the pipe drained anyway.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let socket = data_dir.join("run").join("startd.sock");
        wait_for_socket(&mut child, &socket, started + STARTUP).await?;
        // The socket is trusted (root only, no password): one request proves the API answers.
        let trusted = HttpStore::connect(Endpoint::Unix(socket.clone()), None)?;
        let kind = crds::kind_by_name("Package").context("the Package kind")?;
        trusted
            .list(kind)
            .await
            .context("listing packages over the Unix socket")?;
        Ok(Self {
            child,
            pid,
            addr: addr.context("startd printed no listening address")?,
            password,
            socket,
            startup: started.elapsed(),
        })
    }

    /// SIGKILL, and waits for the process to be gone: a crash, for the tests that check
    /// what a restart finds.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await.context("killing startd")?;
        Ok(())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after [`SHUTDOWN`]).
    pub async fn stop(mut self) -> Result<(ExitStatus, Duration)> {
        let asked = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .context("running kill")?;
        if !sent.success() {
            bail!("kill -TERM {} failed: {sent}", self.pid);
        }
        match timeout(SHUTDOWN, self.child.wait()).await {
            Ok(status) => Ok((status?, asked.elapsed())),
            Err(_) => {
                self.child.kill().await?;
                bail!("startd did not exit within {SHUTDOWN:?} of SIGTERM; killed it");
            }
        }
    }
}

/// A `Daemon` dropped without `stop` or `kill` (a test that failed) is killed, and waited
/// for here, so its data directory's lock is free for `startd teardown` right after.
impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.start_kill().is_ok()
            && let Some(pid) = i32::try_from(self.pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
        }
    }
}

/// Retries connecting to the socket (short, growing pauses) until it accepts, the daemon
/// exits, or `deadline` passes.
async fn wait_for_socket(child: &mut Child, socket: &Path, deadline: Instant) -> Result<()> {
    let mut pause = Duration::from_millis(1);
    loop {
        match UnixStream::connect(socket).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                if let Some(status) = child.try_wait()? {
                    bail!("startd exited ({status}) before its socket accepted connections");
                }
                if Instant::now() >= deadline {
                    bail!("{} does not accept connections: {e}", socket.display());
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Memory and thread figures from `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
}

pub fn mem(pid: u32) -> Result<Mem> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mut m = Mem::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let number = || {
            value
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        match key {
            "VmRSS" => m.rss_kib = number(),
            "VmHWM" => m.hwm_kib = number(),
            "Threads" => m.threads = number(),
            _ => {}
        }
    }
    Ok(m)
}

/// utime + stime of the whole process, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces; the fields after it start at its ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("stat field {i}"))
    };
    Ok(field(14)? + field(15)?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when that cannot be run).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(100)
}

/// CPU seconds the process used between two `cpu_ticks` readings.
pub fn cpu_seconds(ticks: u64, hz: u64) -> f64 {
    ticks as f64 / hz as f64
}

/// Open file descriptors of the process (sockets included).
pub fn open_fds(pid: u32) -> Result<usize> {
    let path = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&path)
        .with_context(|| format!("reading {path}"))?
        .count())
}

/// Files, their apparent bytes, and the bytes allocated to them and the directories under
/// `dir` (as `du`).
#[derive(Clone, Copy, Debug, Default)]
pub struct DirSize {
    pub files: u64,
    pub bytes: u64,
    pub disk_bytes: u64,
}

pub fn dir_size(dir: &Path) -> Result<DirSize> {
    let mut total = DirSize::default();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            total.disk_bytes += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total.files += 1;
                total.bytes += meta.len();
            }
        }
    }
    Ok(total)
}
