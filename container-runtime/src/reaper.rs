//! PID 1 duty: reap every child, ours and orphans reparented to us.
//!
//! One loop calls `waitpid(-1, WNOHANG)` on each SIGCHLD and hands the exit of a process
//! we spawned to whoever waits for it. Children are spawned while holding the same lock,
//! so a child that exits at once is registered before the loop can reap it. Nothing else
//! may wait for children (hence no `tokio::process`, whose own reaping would race).

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::process::{WaitOptions, WaitStatus};
use tokio::sync::oneshot;

use crate::status::Exit;

#[derive(Debug, Default)]
pub struct Reaper {
    waiters: Mutex<HashMap<i32, oneshot::Sender<Exit>>>,
    orphans: AtomicU64,
}

impl Reaper {
    /// Makes this process the reaper of its descendants even when it is not PID 1 (tests
    /// on the host), so orphans come to us rather than to the host's init.
    pub fn become_subreaper() {
        if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
            tracing::warn!(error = %e, "cannot become child subreaper");
        }
    }

    /// Spawns `cmd` and returns its exit as a future value.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(Child, oneshot::Receiver<Exit>)> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Orphans reaped so far (processes we did not spawn).
    pub fn orphans_reaped(&self) -> u64 {
        self.orphans.load(Ordering::Relaxed)
    }

    /// Runs forever. The SIGCHLD handler is installed before the first sweep, so no exit
    /// between the two is missed.
    pub async fn run(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigchld = signal(SignalKind::child())?;
        loop {
            self.sweep();
            sigchld.recv().await;
        }
    }

    fn sweep(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
            let exit = to_exit(status);
            match waiters.remove(&pid.as_raw_nonzero().get()) {
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => {
                    self.orphans.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(pid = pid.as_raw_nonzero().get(), %exit, "reaped orphan");
                }
            }
        }
    }
}

fn to_exit(status: WaitStatus) -> Exit {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        (None, None) => Exit::Code(-1),
    }
}
