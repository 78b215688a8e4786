//! The supervision logic with a fake spawner and prober, on paused time: ordering,
//! blocking, backoff and stopping, asserted on the recorded sequence of events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use container_runtime::config::{Config, Process, Ready};
use container_runtime::status::{Desired, Exit, ProbeResult, Report, State, Status};
use container_runtime::supervisor::{Prober, Spawned, Spawner, Supervisor};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Runs until signalled.
    Run,
    /// Exits with this code after the delay.
    ExitAfter(Duration, i32),
    /// Only SIGKILL ends it.
    IgnoreTerm,
}

#[derive(Debug)]
struct Fake {
    start: Instant,
    behaviour: HashMap<String, Behaviour>,
    /// Per id: how long after its spawn its probe starts succeeding.
    ready_after: HashMap<String, Duration>,
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    next_pid: u32,
    procs: HashMap<u32, (String, Option<oneshot::Sender<Exit>>)>,
    spawned_at: HashMap<String, Instant>,
    events: Vec<(Duration, String)>,
}

impl Fake {
    fn new(behaviour: &[(&str, Behaviour)], ready_after: &[(&str, u64)]) -> Arc<Self> {
        Arc::new(Fake {
            start: Instant::now(),
            behaviour: behaviour.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ready_after: ready_after
                .iter()
                .map(|(k, ms)| (k.to_string(), Duration::from_millis(*ms)))
                .collect(),
            state: Mutex::default(),
        })
    }

    fn record(&self, state: &mut FakeState, event: String) {
        state.events.push((self.start.elapsed(), event));
    }

    fn events(&self) -> Vec<(Duration, String)> {
        self.state.lock().unwrap().events.clone()
    }

    fn names(&self) -> Vec<String> {
        self.events().into_iter().map(|(_, e)| e).collect()
    }
}

#[derive(Debug, Clone)]
struct Handle(Arc<Fake>);

impl Spawner for Handle {
    fn spawn(&self, id: &str, _: &Process) -> Result<Spawned, String> {
        let fake = &self.0;
        let mut state = fake.state.lock().unwrap();
        state.next_pid += 1;
        let pid = state.next_pid;
        fake.record(&mut state, format!("spawn {id}"));
        state.spawned_at.insert(id.to_owned(), Instant::now());
        let (tx, rx) = oneshot::channel();
        match fake.behaviour.get(id).copied().unwrap_or(Behaviour::Run) {
            Behaviour::ExitAfter(d, code) => {
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = tx.send(Exit::Code(code));
                });
                state.procs.insert(pid, (id.to_owned(), None));
            }
            _ => {
                state.procs.insert(pid, (id.to_owned(), Some(tx)));
            }
        }
        Ok(Spawned { pid, exited: rx })
    }

    fn signal(&self, pid: u32, kill: bool) {
        let fake = &self.0;
        let mut state = fake.state.lock().unwrap();
        let Some((id, tx)) = state.procs.get_mut(&pid) else {
            return;
        };
        let id = id.clone();
        let ignores = matches!(fake.behaviour.get(&id), Some(Behaviour::IgnoreTerm));
        let tx = if kill || !ignores { tx.take() } else { None };
        if let Some(tx) = tx {
            let _ = tx.send(Exit::Signal(if kill { 9 } else { 15 }));
            let what = if kill { "kill" } else { "term" };
            fake.record(&mut state, format!("{what} {id}"));
        }
    }
}

impl Prober for Handle {
    async fn probe(&self, id: &str, _: &Process, _: &Ready) -> ProbeResult {
        let state = self.0.state.lock().unwrap();
        let after = self.0.ready_after.get(id).copied().unwrap_or_default();
        let ok = state.spawned_at[id].elapsed() >= after;
        ProbeResult {
            ok,
            message: if ok { "ok" } else { "not yet" }.into(),
        }
    }
}

#[derive(Debug)]
struct Watch(watch::Sender<Status>);

impl Report for Watch {
    fn report(&self, status: &Status) {
        self.0.send_replace(status.clone());
    }
}

fn config(json: &str) -> Config {
    let c: Config = serde_json::from_str(json).unwrap();
    c.validate().unwrap();
    c
}

/// Starts the supervisor; returns the status watch, the shutdown trigger and the task.
fn start(
    config: Config,
    fake: &Arc<Fake>,
) -> (
    watch::Receiver<Status>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = watch::channel(Status::default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let sup = Supervisor::new(
        config,
        Handle(fake.clone()),
        Handle(fake.clone()),
        Watch(tx),
    );
    let task = tokio::spawn(sup.run(async move {
        let _ = stop_rx.await;
    }));
    (rx, stop_tx, task)
}

async fn until(rx: &mut watch::Receiver<Status>, what: &str, f: impl Fn(&Status) -> bool) {
    let waited = tokio::time::timeout(
        Duration::from_secs(600),
        rx.wait_for(|s| !s.processes.is_empty() && f(s)),
    )
    .await
    .map(|r| r.map(|_| ()));
    match waited {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("timed out waiting for {what}: {:#?}", rx.borrow()),
    }
}

fn state(s: &Status, id: &str) -> State {
    s.processes[id].state
}

#[tokio::test(start_paused = true)]
async fn daemons_start_in_requires_order_after_oneshots() {
    let fake = Fake::new(
        &[("migrate", Behaviour::ExitAfter(Duration::from_secs(1), 0))],
        &[("db", 3000)],
    );
    let probe = r#"{"tcp":{"port":1},"periodSeconds":1}"#;
    let (mut rx, stop, task) = start(
        config(&format!(
            r#"{{"images":{{"i":"/r"}},
            "oneshots":{{"migrate":{{"image":"i","command":["m"],"requires":["db"]}}}},
            "daemons":{{"db":{{"image":"i","command":["d"],"ready":{probe}}},
                       "web":{{"image":"i","command":["w"],"requires":["db","migrate"]}}}}}}"#
        )),
        &fake,
    );
    until(&mut rx, "web running", |s| s.processes["web"].ready).await;
    let events = fake.events();
    let names: Vec<&str> = events.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(names, ["spawn db", "spawn migrate", "spawn web"]);
    // migrate waited for db's probe (3 s), web for migrate's exit (1 s later).
    assert!(events[1].0 >= Duration::from_secs(3), "{events:?}");
    assert!(
        events[2].0 >= events[1].0 + Duration::from_secs(1),
        "{events:?}"
    );
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(
        &fake.names()[3..],
        ["term web", "term db"],
        "stopped in reverse order"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_oneshot_blocks_its_dependents_and_theirs() {
    let fake = Fake::new(
        &[("init", Behaviour::ExitAfter(Duration::from_millis(10), 3))],
        &[],
    );
    let (mut rx, stop, task) = start(
        config(
            r#"{"images":{"i":"/r"},
            "oneshots":{"init":{"image":"i","command":["i"]}},
            "daemons":{"a":{"image":"i","command":["a"],"requires":["init"]},
                       "b":{"image":"i","command":["b"],"requires":["a"]},
                       "free":{"image":"i","command":["f"]}}}"#,
        ),
        &fake,
    );
    until(&mut rx, "b blocked", |s| state(s, "b") == State::Blocked).await;
    let s = rx.borrow().clone();
    assert_eq!(state(&s, "init"), State::Failed);
    assert_eq!(s.processes["init"].last_exit, Some(Exit::Code(3)));
    assert_eq!(state(&s, "a"), State::Blocked);
    assert!(
        s.processes["a"].message.contains("\"init\" failed"),
        "{s:?}"
    );
    assert!(s.processes["free"].ready);
    let spawned: Vec<String> = fake.names();
    assert!(!spawned.iter().any(|e| e == "spawn a" || e == "spawn b"));
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn crashes_back_off_exponentially_capped_and_reset_after_a_long_run() {
    let fake = Fake::new(
        &[("crash", Behaviour::ExitAfter(Duration::from_millis(100), 1))],
        &[],
    );
    let (mut rx, stop, task) = start(
        config(
            r#"{"images":{"i":"/r"},
            "restart":{"initialMs":1000,"maxMs":4000,"resetAfterSeconds":60},
            "daemons":{"crash":{"image":"i","command":["c"]}}}"#,
        ),
        &fake,
    );
    until(&mut rx, "5 restarts", |s| {
        s.processes["crash"].restarts >= 5
    })
    .await;
    let starts: Vec<Duration> = fake.events().into_iter().map(|(t, _)| t).collect();
    let gaps: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(gaps[..4], [1100, 2100, 4100, 4100], "{gaps:?}");
    let s = rx.borrow().clone();
    assert_eq!(s.processes["crash"].last_exit, Some(Exit::Code(1)));
    stop.send(()).unwrap();
    task.await.unwrap();

    // One that ran past resetAfterSeconds is restarted after the initial delay again.
    let fake = Fake::new(
        &[("long", Behaviour::ExitAfter(Duration::from_secs(61), 1))],
        &[],
    );
    let (mut rx, stop, task) = start(
        config(
            r#"{"images":{"i":"/r"},
            "restart":{"initialMs":1000,"maxMs":4000,"resetAfterSeconds":60},
            "daemons":{"long":{"image":"i","command":["l"]}}}"#,
        ),
        &fake,
    );
    until(&mut rx, "3 restarts", |s| s.processes["long"].restarts >= 3).await;
    let starts: Vec<Duration> = fake.events().into_iter().map(|(t, _)| t).collect();
    let gaps: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(gaps[..2], [62_000, 62_000], "{gaps:?}");
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn stop_kills_what_ignores_sigterm_after_the_timeout() {
    let fake = Fake::new(&[("stubborn", Behaviour::IgnoreTerm)], &[]);
    let (mut rx, stop, task) = start(
        config(
            r#"{"images":{"i":"/r"},"stopTimeoutSeconds":7,
            "daemons":{"base":{"image":"i","command":["b"]},
                       "stubborn":{"image":"i","command":["s"],"requires":["base"]}}}"#,
        ),
        &fake,
    );
    until(&mut rx, "both running", |s| {
        s.processes.values().all(|p| p.ready)
    })
    .await;
    let asked = Instant::now();
    stop.send(()).unwrap();
    task.await.unwrap();
    let events = fake.events();
    let names: Vec<&str> = events.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(names[2..], ["kill stubborn", "term base"]);
    assert_eq!(asked.elapsed(), Duration::from_secs(7));
    let s = rx.borrow().clone();
    assert!(s.stopping);
    assert_eq!(state(&s, "stubborn"), State::Stopped);
    assert_eq!(s.processes["stubborn"].last_exit, Some(Exit::Signal(9)));
    assert_eq!(s.processes["base"].last_exit, Some(Exit::Signal(15)));
}

#[tokio::test(start_paused = true)]
async fn nothing_is_restarted_once_stopping_began() {
    let fake = Fake::new(
        &[
            ("early", Behaviour::ExitAfter(Duration::from_secs(3), 1)),
            ("stubborn", Behaviour::IgnoreTerm),
        ],
        &[],
    );
    let (mut rx, stop, task) = start(
        config(
            r#"{"images":{"i":"/r"},"stopTimeoutSeconds":10,
            "restart":{"initialMs":100,"maxMs":100},
            "daemons":{"early":{"image":"i","command":["e"]},
                       "stubborn":{"image":"i","command":["s"],"requires":["early"]}}}"#,
        ),
        &fake,
    );
    until(&mut rx, "both running", |s| {
        s.processes.values().all(|p| p.ready)
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap();
    // `early` crashed at 3 s while `stubborn` was being stopped (until 10 s).
    let spawns = fake.names().iter().filter(|e| *e == "spawn early").count();
    assert_eq!(spawns, 1, "{:?}", fake.events());
    assert_eq!(state(&rx.borrow(), "early"), State::Stopped);
}

#[derive(Debug, Clone, Default)]
struct Count(Arc<std::sync::atomic::AtomicUsize>);

impl Report for Count {
    fn report(&self, _: &Status) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The status file lives on the server's disk (often flash): a steady probe result must
/// not rewrite it every period.
#[tokio::test(start_paused = true)]
async fn unchanged_probe_results_are_not_reported_again() {
    let fake = Fake::new(&[], &[]);
    let count = Count::default();
    let sup = Supervisor::new(
        config(
            r#"{"images":{"i":"/r"},
            "daemons":{"d":{"image":"i","command":["d"],"ready":{"tcp":{"port":1},"periodSeconds":1}}}}"#,
        ),
        Handle(fake.clone()),
        Handle(fake.clone()),
        count.clone(),
    );
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(sup.run(async move {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let settled = count.0.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1000)).await;
    let later = count.0.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(later, settled, "1000 identical probes reported");
    stop_tx.send(()).unwrap();
    task.await.unwrap();
}

/// A daemon is probed at short, growing intervals until first ready, so what requires it
/// starts soon after (a fixed 500 ms interval started the dependent at 500 ms here).
#[tokio::test(start_paused = true)]
async fn dependents_start_soon_after_readiness() {
    let fake = Fake::new(&[], &[("db", 100)]);
    let (mut rx, stop, task) = start(
        config(
            r#"{"images":{"i":"/r"},
            "daemons":{"db":{"image":"i","command":["d"],"ready":{"tcp":{"port":1}}},
                       "app":{"image":"i","command":["a"],"requires":["db"]}}}"#,
        ),
        &fake,
    );
    until(&mut rx, "app running", |s| s.processes["app"].ready).await;
    let events = fake.events();
    assert_eq!(events[1].1, "spawn app");
    assert!(events[1].0 < Duration::from_millis(250), "{events:?}");
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Starts the supervisor following a desired run state; returns the status watch, the
/// desired state's sender, the shutdown trigger and the task.
fn start_following(
    config: Config,
    fake: &Arc<Fake>,
    desired: Desired,
) -> (
    watch::Receiver<Status>,
    watch::Sender<Desired>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = watch::channel(Status::default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (desired_tx, desired_rx) = watch::channel(desired);
    let sup = Supervisor::new(
        config,
        Handle(fake.clone()),
        Handle(fake.clone()),
        Watch(tx),
    );
    let task = tokio::spawn(sup.run_with(
        async move {
            let _ = stop_rx.await;
        },
        desired_rx,
    ));
    (rx, desired_tx, stop_tx, task)
}

/// The fake's processes that have not exited, by id.
fn live(fake: &Fake) -> Vec<String> {
    let state = fake.state.lock().unwrap();
    let mut ids: Vec<String> = state
        .procs
        .values()
        .filter(|(_, tx)| tx.as_ref().is_some_and(|tx| !tx.is_closed()))
        .map(|(id, _)| id.clone())
        .collect();
    ids.sort();
    ids
}

fn all_down(s: &Status) -> bool {
    s.processes.values().all(|p| p.pid.is_none())
}

const SETUP_AND_TWO_DAEMONS: &str = r#"{"images":{"i":"/r"},"stopTimeoutSeconds":5,
    "oneshots":{"setup":{"image":"i","command":["s"]}},
    "daemons":{"db":{"image":"i","command":["d"],"requires":["setup"],
                     "ready":{"tcp":{"port":1},"periodSeconds":1}},
               "web":{"image":"i","command":["w"],"requires":["db"]}}}"#;

#[tokio::test(start_paused = true)]
async fn daemons_stop_and_start_again_while_the_supervisor_stays() {
    let fake = Fake::new(
        &[("setup", Behaviour::ExitAfter(Duration::from_millis(100), 0))],
        &[("db", 1000)],
    );
    let (mut rx, desired, stop, task) =
        start_following(config(SETUP_AND_TWO_DAEMONS), &fake, Desired::Running);
    until(&mut rx, "web ready", |s| s.processes["web"].ready).await;
    assert_eq!(rx.borrow().desired, Desired::Running);

    desired.send_replace(Desired::Stopped);
    until(&mut rx, "everything down", |s| {
        s.desired == Desired::Stopped && all_down(s) && state(s, "db") == State::Stopped
    })
    .await;
    assert_eq!(&fake.names()[3..], ["term web", "term db"], "reverse order");
    assert!(!task.is_finished(), "the supervisor stays up");
    assert!(!rx.borrow().stopping);
    assert!(live(&fake).is_empty());

    desired.send_replace(Desired::Running);
    until(&mut rx, "web ready again", |s| {
        s.desired == Desired::Running && s.processes["web"].ready
    })
    .await;
    // The oneshot ran again before what requires it.
    assert_eq!(&fake.names()[5..], ["spawn setup", "spawn db", "spawn web"]);
    assert_eq!(live(&fake), ["db", "web"]);

    stop.send(()).unwrap();
    task.await.unwrap();
    assert!(rx.borrow().stopping);
    assert!(live(&fake).is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_last_desired_state_wins_over_flips_during_a_start_or_a_stop() {
    let fake = Fake::new(
        &[
            ("setup", Behaviour::ExitAfter(Duration::from_millis(100), 0)),
            ("web", Behaviour::IgnoreTerm),
        ],
        &[("db", 1000)],
    );
    let (mut rx, desired, stop, task) =
        start_following(config(SETUP_AND_TWO_DAEMONS), &fake, Desired::Running);
    // During the start: db spawned, not ready yet.
    until(&mut rx, "db starting", |s| {
        state(s, "db") == State::Starting
    })
    .await;
    desired.send_replace(Desired::Stopped);
    desired.send_replace(Desired::Running);
    until(&mut rx, "web ready", |s| s.processes["web"].ready).await;
    assert_eq!(live(&fake), ["db", "web"]);

    // During a stop (web ignores SIGTERM: 5 s until SIGKILL), and a hundred flips.
    desired.send_replace(Desired::Stopped);
    until(&mut rx, "web stopping", |s| {
        state(s, "web") == State::Stopping
    })
    .await;
    for i in 0..100 {
        let d = if i % 2 == 0 {
            Desired::Running
        } else {
            Desired::Stopped
        };
        desired.send_replace(d);
        tokio::task::yield_now().await;
    }
    // Last written: stopped.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let s = rx.borrow().clone();
    assert_eq!(s.desired, Desired::Stopped);
    assert!(all_down(&s), "{s:#?}");
    assert!(live(&fake).is_empty());

    for i in 0..101 {
        let d = if i % 2 == 0 {
            Desired::Running
        } else {
            Desired::Stopped
        };
        desired.send_replace(d);
        tokio::time::sleep(Duration::from_millis(i * 37 % 1500)).await;
    }
    until(&mut rx, "running again", |s| {
        s.desired == Desired::Running && s.processes["web"].ready
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(live(&fake), ["db", "web"], "exactly one of each");

    stop.send(()).unwrap();
    task.await.unwrap();
    assert!(live(&fake).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_crash_while_stopping_or_stopped_is_not_restarted() {
    let fake = Fake::new(
        &[("flaky", Behaviour::ExitAfter(Duration::from_secs(2), 1))],
        &[],
    );
    let (mut rx, desired, stop, task) = start_following(
        config(
            r#"{"images":{"i":"/r"},"restart":{"initialMs":1000,"maxMs":1000},
            "daemons":{"flaky":{"image":"i","command":["f"]}}}"#,
        ),
        &fake,
        Desired::Running,
    );
    until(&mut rx, "flaky backing off", |s| {
        state(s, "flaky") == State::Backoff
    })
    .await;
    desired.send_replace(Desired::Stopped);
    until(&mut rx, "flaky stopped", |s| {
        state(s, "flaky") == State::Stopped
    })
    .await;
    let spawns = fake.names().len();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(fake.names().len(), spawns, "{:?}", fake.events());

    // Started stopped: nothing runs until asked.
    stop.send(()).unwrap();
    task.await.unwrap();
    let fake = Fake::new(&[], &[]);
    let (mut rx, desired, stop, task) = start_following(
        config(r#"{"images":{"i":"/r"},"daemons":{"d":{"image":"i","command":["d"]}}}"#),
        &fake,
        Desired::Stopped,
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(fake.names().is_empty());
    assert_eq!(rx.borrow().desired, Desired::Stopped);
    desired.send_replace(Desired::Running);
    until(&mut rx, "d running", |s| s.processes["d"].ready).await;
    stop.send(()).unwrap();
    task.await.unwrap();
}
