//! The supervision logic, free of I/O: processes are started through a [`Spawner`], probed
//! through a [`Prober`] and every change goes to a [`Report`], so tests drive it with fakes
//! and paused time.
//!
//! Each oneshot and daemon is one task: wait until everything it requires is ready
//! (a failed oneshot blocks its dependents), then run it; daemons are restarted with
//! exponential backoff. Stopping goes through the ids in reverse start order, one at a
//! time: SIGTERM, the stop timeout, SIGKILL. The daemons are stopped and started again
//! as the desired run state says ([`Supervisor::run_with`]) without the supervisor
//! exiting; a shutdown stops them and returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::config::{Config, Process, Ready};
use crate::status::{Desired, Exit, Kind, ProbeResult, ProcessStatus, Report, State, Status};

/// A started process.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    /// Resolves once the process has exited (and was reaped).
    pub exited: oneshot::Receiver<Exit>,
}

pub trait Spawner: Send + Sync + 'static {
    /// Starts `process` (named `id`); the error is a message for the status.
    fn spawn(&self, id: &str, process: &Process) -> Result<Spawned, String>;
    /// Sends SIGTERM (or SIGKILL when `kill`) to the process and everything it started.
    fn signal(&self, pid: u32, kill: bool);
}

pub trait Prober: Send + Sync + 'static {
    /// One probe; the supervisor bounds it by the probe's timeout.
    fn probe(
        &self,
        id: &str,
        process: &Process,
        ready: &Ready,
    ) -> impl Future<Output = ProbeResult> + Send;
}

/// While a daemon has not been ready yet, it is probed at growing intervals from the
/// first to the second (or `periodSeconds` if shorter), so that what requires it starts
/// promptly; afterwards every `periodSeconds`.
const STARTING_PROBE_INTERVALS: (Duration, Duration) =
    (Duration::from_millis(25), Duration::from_millis(500));
/// After SIGKILL a process can only linger in uninterruptible sleep; we stop waiting.
const KILL_WAIT: Duration = Duration::from_secs(5);

struct Shared<R> {
    status: Mutex<Status>,
    changed: watch::Sender<u64>,
    report: R,
}

impl<R: Report> Shared<R> {
    fn update(&self, id: &str, f: impl FnOnce(&mut ProcessStatus)) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = status.processes.get_mut(id) else {
            return;
        };
        let before = p.clone();
        f(p);
        // A steady probe result every period is no news; the report may be a disk write.
        if *p == before {
            return;
        }
        self.report.report(&status);
        drop(status);
        self.changed.send_modify(|n| *n += 1);
    }

    fn get(&self, id: &str) -> Option<ProcessStatus> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.processes.get(id).cloned()
    }
}

pub struct Supervisor<S, P, R> {
    config: Arc<Config>,
    spawner: Arc<S>,
    prober: Arc<P>,
    shared: Arc<Shared<R>>,
}

impl<S, P, R> std::fmt::Debug for Supervisor<S, P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").finish_non_exhaustive()
    }
}

impl<S, P, R> Clone for Supervisor<S, P, R> {
    fn clone(&self) -> Self {
        Supervisor {
            config: self.config.clone(),
            spawner: self.spawner.clone(),
            prober: self.prober.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: Spawner, P: Prober, R: Report> Supervisor<S, P, R> {
    /// `config` must have passed [`Config::validate`].
    pub fn new(config: Config, spawner: S, prober: P, report: R) -> Self {
        let mut status = Status::default();
        for (kind, map) in [
            (Kind::Oneshot, &config.oneshots),
            (Kind::Daemon, &config.daemons),
        ] {
            for id in map.keys() {
                status.processes.insert(id.clone(), initial(kind));
            }
        }
        Supervisor {
            config: Arc::new(config),
            spawner: Arc::new(spawner),
            prober: Arc::new(prober),
            shared: Arc::new(Shared {
                status: Mutex::new(status),
                changed: watch::channel(0).0,
                report,
            }),
        }
    }

    pub fn status(&self) -> Status {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs everything until `shutdown` resolves, then stops everything and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (_keep, desired) = watch::channel(Desired::Running);
        self.run_with(shutdown, desired).await;
    }

    /// Like [`Supervisor::run`], with the daemons started and stopped as `desired` says,
    /// level-triggered: whatever it held last is what they end up doing. A stop walks the
    /// start order backwards as a shutdown does; a start begins a new generation of every
    /// oneshot and daemon, oneshots included: they are setup steps, idempotent by
    /// contract, and what depends on them waits for them again. A new generation starts
    /// only once every process of the previous one has exited, so a daemon never runs
    /// twice.
    pub async fn run_with(
        self,
        shutdown: impl Future<Output = ()>,
        mut desired: watch::Receiver<Desired>,
    ) {
        let order: Vec<String> = match self.config.start_order() {
            Some(o) => o.into_iter().map(str::to_owned).collect(),
            None => return,
        };
        let mut shutdown = std::pin::pin!(shutdown);
        let mut generation: Option<Generation> = None;
        let mut first = true;
        loop {
            // A shutdown that arrived during a stop wins over a start asked for meanwhile.
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = std::future::ready(()) => {}
            }
            let want = *desired.borrow_and_update();
            self.set_desired(want, first);
            first = false;
            match (want, generation.take()) {
                (Desired::Running, None) => generation = Some(self.start_all(&order)),
                (Desired::Stopped, Some(g)) => {
                    tracing::info!("stopping the daemons: the control file says stopped");
                    self.stop_all(g).await;
                    continue;
                }
                (_, g) => generation = g,
            }
            tokio::select! {
                () = &mut shutdown => break,
                changed = desired.changed() => {
                    if changed.is_err() {
                        // Nobody can change the desired state any more.
                        shutdown.as_mut().await;
                        break;
                    }
                }
            }
        }
        tracing::info!("shutting down");
        {
            let mut status = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
            status.stopping = true;
            self.shared.report.report(&status);
        }
        if let Some(g) = generation {
            self.stop_all(g).await;
        }
    }

    fn set_desired(&self, want: Desired, always: bool) {
        let mut status = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.desired != want || always {
            status.desired = want;
            self.shared.report.report(&status);
        }
    }

    /// Spawns one task per id, every process back to waiting first (what a previous
    /// generation left, ready flags included, must not let a dependent start early).
    fn start_all(&self, order: &[String]) -> Generation {
        tracing::info!("starting the oneshots and daemons");
        {
            let mut status = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
            for p in status.processes.values_mut() {
                let (restarts, last_exit) = (p.restarts, p.last_exit);
                *p = initial(p.kind);
                p.restarts = restarts;
                p.last_exit = last_exit;
            }
            self.shared.report.report(&status);
        }
        self.shared.changed.send_modify(|n| *n += 1);
        let halting = Arc::new(AtomicBool::new(false));
        let units = order
            .iter()
            .map(|id| {
                let (stop_tx, stop_rx) = watch::channel(false);
                let task = tokio::spawn(self.clone().unit(id.clone(), stop_rx, halting.clone()));
                (id.clone(), stop_tx, task)
            })
            .collect();
        Generation { halting, units }
    }

    /// Stops a generation in reverse start order; returns once every task ended.
    async fn stop_all(&self, g: Generation) {
        g.halting.store(true, Ordering::SeqCst);
        for (id, stop, task) in g.units.into_iter().rev() {
            let _ = stop.send(true);
            if let Err(e) = task.await {
                tracing::error!(id, error = %e, "supervision task failed");
            }
        }
    }

    async fn unit(self, id: String, mut stop: watch::Receiver<bool>, halting: Arc<AtomicBool>) {
        let Some(process) = self.config.process(&id).cloned() else {
            return;
        };
        let blocked = tokio::select! {
            b = self.wait_requires(&process) => b,
            () = stopped(&mut stop) => {
                self.shared.update(&id, |s| set(s, State::Stopped, "stopped before it started"));
                return;
            }
        };
        if let Some(message) = blocked {
            tracing::warn!(id, message, "blocked");
            self.shared
                .update(&id, |s| set(s, State::Blocked, &message));
            return;
        }
        if self.config.daemons.contains_key(&id) {
            self.daemon(&id, &process, stop, &halting).await;
        } else {
            self.oneshot(&id, &process, stop).await;
        }
    }

    /// `Some(message)` when something required can no longer become ready.
    async fn wait_requires(&self, process: &Process) -> Option<String> {
        let mut changed = self.shared.changed.subscribe();
        loop {
            let mut all_ready = true;
            for r in &process.requires {
                let s = self.shared.get(r)?;
                if matches!(s.state, State::Failed | State::Blocked) && !s.ready {
                    return Some(format!("{r:?} failed: {}", s.message));
                }
                all_ready &= s.ready;
            }
            if all_ready {
                return None;
            }
            changed.changed().await.ok()?;
        }
    }

    async fn oneshot(&self, id: &str, process: &Process, mut stop: watch::Receiver<bool>) {
        match self.run_once(id, process, &mut stop, Instant::now()).await {
            Ok(Outcome::Exited(exit)) if exit.success() => {
                tracing::info!(id, "oneshot completed");
                self.shared.update(id, |s| {
                    exited(s, exit, State::Completed, "completed");
                    s.ready = true;
                });
            }
            Ok(Outcome::Exited(exit)) => {
                tracing::warn!(id, %exit, "oneshot failed");
                self.shared
                    .update(id, |s| exited(s, exit, State::Failed, &format!("{exit}")));
            }
            Ok(Outcome::Stopped(exit)) => {
                self.shared
                    .update(id, |s| exited(s, exit, State::Stopped, "stopped"));
            }
            Err(message) => self.shared.update(id, |s| set(s, State::Failed, &message)),
        }
    }

    async fn daemon(
        &self,
        id: &str,
        process: &Process,
        mut stop: watch::Receiver<bool>,
        halting: &AtomicBool,
    ) {
        let restart = &self.config.restart;
        let initial = Duration::from_millis(restart.initial_ms);
        let mut delay = initial;
        loop {
            let started = Instant::now();
            let message = match self.run_once(id, process, &mut stop, started).await {
                Ok(Outcome::Stopped(exit)) => {
                    self.shared
                        .update(id, |s| exited(s, exit, State::Stopped, "stopped"));
                    return;
                }
                // Stopping: what exits now stays down rather than coming back while
                // the others are being stopped.
                Ok(Outcome::Exited(exit)) if halting.load(Ordering::SeqCst) => {
                    let message = format!("exited while stopping: {exit}");
                    self.shared
                        .update(id, |s| exited(s, exit, State::Stopped, &message));
                    return;
                }
                Ok(Outcome::Exited(exit)) => {
                    self.shared.update(id, |s| {
                        s.restarts += 1;
                        s.last_exit = Some(exit);
                    });
                    exit.to_string()
                }
                Err(message) => message,
            };
            if started.elapsed() >= Duration::from_secs(restart.reset_after_seconds) {
                delay = initial;
            }
            tracing::warn!(
                id,
                message,
                delay_ms = delay.as_millis() as u64,
                "restarting"
            );
            self.shared.update(id, |s| {
                set(
                    s,
                    State::Backoff,
                    &format!("{message}; restarting in {delay:?}"),
                );
                s.pid = None;
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped(&mut stop) => {
                    self.shared.update(id, |s| set(s, State::Stopped, "stopped"));
                    return;
                }
            }
            if halting.load(Ordering::SeqCst) {
                self.shared
                    .update(id, |s| set(s, State::Stopped, "not restarted: stopping"));
                return;
            }
            delay = (delay * 2).min(Duration::from_millis(restart.max_ms));
        }
    }

    /// Starts `process` and waits for it to exit or for `stop`.
    async fn run_once(
        &self,
        id: &str,
        process: &Process,
        stop: &mut watch::Receiver<bool>,
        started: Instant,
    ) -> Result<Outcome, String> {
        let Spawned { pid, mut exited } = self.spawner.spawn(id, process)?;
        tracing::info!(id, pid, "started");
        self.shared.update(id, |s| {
            set(s, State::Starting, "started");
            s.pid = Some(pid);
        });
        let is_daemon = self.config.daemons.contains_key(id);
        let exit = tokio::select! {
            exit = &mut exited => exit.unwrap_or(Exit::Code(-1)),
            () = self.probe_loop(id, process, started), if is_daemon => unreachable!("probing never ends"),
            () = stopped(stop) => return Ok(Outcome::Stopped(self.stop(id, pid, exited).await)),
        };
        // What the process left behind in its group dies with it, so a restart never
        // runs next to a stale copy.
        self.spawner.signal(pid, true);
        tracing::info!(id, pid, %exit, "exited");
        Ok(Outcome::Exited(exit))
    }

    async fn stop(&self, id: &str, pid: u32, mut exited: oneshot::Receiver<Exit>) -> Exit {
        let timeout = Duration::from_secs(self.config.stop_timeout_seconds.into());
        tracing::info!(id, pid, "stopping");
        self.shared
            .update(id, |s| set(s, State::Stopping, "sent SIGTERM"));
        self.spawner.signal(pid, false);
        if let Ok(exit) = tokio::time::timeout(timeout, &mut exited).await {
            self.spawner.signal(pid, true);
            return exit.unwrap_or(Exit::Code(-1));
        }
        tracing::warn!(id, pid, "did not stop within the timeout; sending SIGKILL");
        self.shared.update(id, |s| {
            s.message = format!("no exit {timeout:?} after SIGTERM; sent SIGKILL")
        });
        self.spawner.signal(pid, true);
        match tokio::time::timeout(KILL_WAIT, exited).await {
            Ok(exit) => exit.unwrap_or(Exit::Code(-1)),
            Err(_) => Exit::Signal(9),
        }
    }

    /// Never returns: probes `process` until dropped.
    async fn probe_loop(&self, id: &str, process: &Process, started: Instant) {
        let Some(ready) = &process.ready else {
            self.shared.update(id, |s| {
                set(s, State::Running, "running");
                s.ready = true;
            });
            return std::future::pending().await;
        };
        let period = Duration::from_secs(ready.period_seconds.into());
        let grace = Duration::from_secs(ready.grace_seconds.into());
        let timeout = Duration::from_secs(ready.timeout_seconds.into());
        let mut was_ready = false;
        let mut starting_wait = STARTING_PROBE_INTERVALS.0;
        loop {
            let result = tokio::time::timeout(timeout, self.prober.probe(id, process, ready))
                .await
                .unwrap_or_else(|_| ProbeResult {
                    ok: false,
                    message: format!("probe timed out after {timeout:?}"),
                });
            was_ready |= result.ok;
            let in_grace = started.elapsed() < grace;
            self.shared.update(id, |s| probed(s, result, in_grace));
            let wait = if was_ready {
                period
            } else {
                let wait = period.min(starting_wait);
                starting_wait = (starting_wait * 2).min(STARTING_PROBE_INTERVALS.1);
                wait
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// One start of every oneshot and daemon, until it is stopped.
struct Generation {
    /// Set when the stop begins: a daemon that exits from then on is not restarted.
    halting: Arc<AtomicBool>,
    units: Vec<(String, watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

enum Outcome {
    Exited(Exit),
    Stopped(Exit),
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn initial(kind: Kind) -> ProcessStatus {
    ProcessStatus {
        kind,
        state: State::Waiting,
        ready: false,
        pid: None,
        restarts: 0,
        last_exit: None,
        last_probe: None,
        message: "waiting for what it requires".into(),
    }
}

fn set(s: &mut ProcessStatus, state: State, message: &str) {
    s.state = state;
    s.message = message.to_owned();
    if !matches!(state, State::Running | State::Completed) {
        s.ready = false;
    }
}

fn exited(s: &mut ProcessStatus, exit: Exit, state: State, message: &str) {
    set(s, state, message);
    s.last_exit = Some(exit);
    s.pid = None;
}

fn probed(s: &mut ProcessStatus, result: ProbeResult, in_grace: bool) {
    if result.ok {
        set(s, State::Running, "ready");
        s.ready = true;
    } else if in_grace {
        set(s, State::Starting, &format!("starting: {}", result.message));
    } else {
        set(s, State::Running, &format!("not ready: {}", result.message));
    }
    s.last_probe = Some(result);
}
