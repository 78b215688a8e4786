//! The product's [`Spawner`] and [`Prober`]: processes are `start-container exec-in`
//! children in their own process group, reaped by the [`Reaper`], their output pumped
//! into [`LogFile`]s.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use rustix::process::{Pid, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::config::{Config, HttpProbe, Probe, Process, Ready};
use crate::exec_in::{Bind, exec_in_args, exec_in_env};
use crate::logs::{LogFile, pump};
use crate::reaper::Reaper;
use crate::status::ProbeResult;
use crate::supervisor::{Prober, Spawned, Spawner};

/// Enough for any HTTP status line.
const MAX_STATUS_LINE: usize = 1024;

/// Builds the `exec-in` commands; shared by the spawner and the exec probe.
#[derive(Debug)]
struct Launcher {
    self_exe: PathBuf,
    config: Arc<Config>,
    reaper: Arc<Reaper>,
}

impl Launcher {
    fn command(&self, process: &Process, argv: &[String]) -> Result<Command, String> {
        let root = &self.config.images[&process.image];
        let binds: Vec<Bind> = process
            .mounts
            .iter()
            .map(|m| Bind {
                source: self.config.volumes[&m.volume].clone(),
                target: m.path.clone(),
                read_only: m.read_only,
            })
            .collect();
        let args = exec_in_args(
            root,
            &binds,
            self.config.effects_dir.as_deref(),
            process.user.as_deref(),
            process.workdir.as_deref(),
            argv,
        )
        .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.self_exe);
        cmd.args(args).env_clear().envs(exec_in_env(&process.env));
        // Its own group: stopping signals the process and everything it started.
        cmd.stdin(Stdio::null()).process_group(0);
        Ok(cmd)
    }
}

#[derive(Debug)]
pub struct RealSpawner {
    launcher: Arc<Launcher>,
    logs: Mutex<HashMap<String, Arc<LogFile>>>,
}

/// Both real implementations, sharing the reaper and the config.
pub fn real(
    self_exe: PathBuf,
    config: Arc<Config>,
    reaper: Arc<Reaper>,
) -> (RealSpawner, RealProber) {
    let launcher = Arc::new(Launcher {
        self_exe,
        config,
        reaper,
    });
    (
        RealSpawner {
            launcher: launcher.clone(),
            logs: Mutex::default(),
        },
        RealProber { launcher },
    )
}

impl RealSpawner {
    fn log(&self, id: &str) -> Arc<LogFile> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let config = &self.launcher.config;
        logs.entry(id.to_owned())
            .or_insert_with(|| LogFile::new(&config.log_dir, id, config.log_max_bytes))
            .clone()
    }
}

impl Spawner for RealSpawner {
    fn spawn(&self, id: &str, process: &Process) -> Result<Spawned, String> {
        let mut cmd = self.launcher.command(process, &process.command)?;
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let (mut child, exited) = self
            .launcher
            .reaper
            .spawn(&mut cmd)
            .map_err(|e| format!("cannot spawn {:?}: {e}", process.command[0]))?;
        let log = self.log(id);
        let out = child.stdout.take().map(OwnedFd::from);
        let err = child.stderr.take().map(OwnedFd::from);
        for (fd, stream) in [(out, "out"), (err, "err")] {
            match fd.map(pipe::Receiver::from_owned_fd) {
                Some(Ok(rx)) => {
                    tokio::spawn(pump(rx, log.clone(), stream));
                }
                Some(Err(e)) => tracing::warn!(id, error = %e, "cannot read output"),
                None => {}
            }
        }
        Ok(Spawned {
            pid: child.id(),
            exited,
        })
    }

    fn signal(&self, pid: u32, kill: bool) {
        signal_group(pid, if kill { Signal::KILL } else { Signal::TERM });
    }
}

fn signal_group(pid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    // ESRCH: the whole group is gone already, which is what we wanted.
    let _ = rustix::process::kill_process_group(pid, signal);
}

#[derive(Debug)]
pub struct RealProber {
    launcher: Arc<Launcher>,
}

impl Prober for RealProber {
    async fn probe(&self, _id: &str, process: &Process, ready: &Ready) -> ProbeResult {
        let result = match ready.probe() {
            Some(Probe::Http(h)) => http(h).await,
            Some(Probe::Tcp(t)) => tokio::net::TcpStream::connect(loopback(t.port))
                .await
                .map(|_| format!("port {} open", t.port))
                .map_err(|e| format!("tcp 127.0.0.1:{}: {e}", t.port)),
            Some(Probe::Exec(e)) => self.exec(process, &e.command).await,
            None => Err("no probe".into()),
        };
        match result {
            Ok(message) => ProbeResult { ok: true, message },
            Err(message) => ProbeResult { ok: false, message },
        }
    }
}

impl RealProber {
    async fn exec(&self, process: &Process, argv: &[String]) -> Result<String, String> {
        let mut cmd = self.launcher.command(process, argv)?;
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let (child, exited) = self
            .launcher
            .reaper
            .spawn(&mut cmd)
            .map_err(|e| format!("cannot spawn {:?}: {e}", argv[0]))?;
        // The supervisor drops this future on timeout: the probe must not outlive it.
        let guard = KillOnDrop(child.id());
        let exit = exited.await.map_err(|_| "probe process lost".to_owned())?;
        std::mem::forget(guard);
        if exit.success() {
            Ok(format!("{:?} exited 0", argv[0]))
        } else {
            Err(format!("{:?}: {exit}", argv[0]))
        }
    }
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        signal_group(self.0, Signal::KILL);
    }
}

async fn http(probe: &HttpProbe) -> Result<String, String> {
    let url = format!("http://127.0.0.1:{}{}", probe.port, probe.path);
    let err = |e: std::io::Error| format!("GET {url}: {e}");
    let mut stream = tokio::net::TcpStream::connect(loopback(probe.port))
        .await
        .map_err(err)?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nUser-Agent: start-container\r\nConnection: close\r\n\r\n",
        probe.path, probe.port
    );
    stream.write_all(request.as_bytes()).await.map_err(err)?;
    let mut head = Vec::with_capacity(128);
    while !head.contains(&b'\n') && head.len() < MAX_STATUS_LINE {
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.map_err(err)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let code = line
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {url}: not an HTTP response"))?;
    if (200..400).contains(&code) {
        Ok(format!("GET {url}: {code}"))
    } else {
        Err(format!("GET {url}: {code}"))
    }
}

/// An address, never a name: no resolver in the static binary's path.
fn loopback(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves one connection with `response`, returns the probe's result.
    async fn probe_against(response: &'static [u8]) -> Result<String, String> {
        let listener = TcpListener::bind(loopback(0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /health HTTP/1.0\r\n"));
            s.write_all(response).await.unwrap();
        });
        let path = "/health".into();
        let result = http(&HttpProbe { port, path }).await;
        server.await.unwrap();
        result
    }

    #[tokio::test]
    async fn http_probe_accepts_2xx_and_3xx_only() {
        assert!(
            probe_against(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .is_ok()
        );
        assert!(probe_against(b"HTTP/1.0 302 Found\r\n\r\n").await.is_ok());
        let e = probe_against(b"HTTP/1.1 503 Busy\r\n\r\n")
            .await
            .unwrap_err();
        assert!(e.ends_with("/health: 503"), "{e}");
        let e = probe_against(b"SSH-2.0-OpenSSH\r\n").await.unwrap_err();
        assert!(e.ends_with("not an HTTP response"), "{e}");
        // A peer that never ends its line: bounded read, then refused.
        let e = probe_against(&[b'x'; 4096]).await.unwrap_err();
        assert!(e.ends_with("not an HTTP response"), "{e}");
    }
}
