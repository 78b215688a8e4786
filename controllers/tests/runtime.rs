//! The controller runtime's rules (listed in `src/runtime/mod.rs`), each proven with the
//! clock paused.
//!
//! Most tests are scenarios written as data and run by [`check`]: objects in, a script of
//! steps (write an object, let time pass, release a blocked reconcile, shut down), and the
//! reconcile calls that must come out with their times and outcomes. A recording fake
//! reconciler does what each key's script says and notes when each call started and ended
//! and how it ended. Tests wait on the recorder or on a store watch, never on a sleep; a
//! sleep is only ever the scripted "let this much time pass".

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use async_trait::async_trait;
use controllers::runtime::{
    BackoffConfig, Config, Context, Controller, FinalizerEvent, Metrics, ObjectKey, ReconcileError,
    ReconcileResult, Reconciler, Recorder, Requeue, Shutdown, finalizer, update_conditions,
    update_status,
};
use crds::{
    Condition, ConditionStatus, KindInfo, Object, Resource, Time,
    condition::{find_condition, set_condition},
    kind_by_name,
    kinds::{EventSpec, EventType as EventKind, PackageSpec},
};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use store::{
    Clock, Deleted, EventType, MemoryStore, ObjectList, Patch, Preconditions, Store, Subresource,
    WriteOptions,
    conformance::package,
    intercept::{Intercept, Intercepted},
};
use tokio::{
    sync::{Barrier, Notify, watch},
    task::JoinHandle,
    time::Instant,
};

const W: &WriteOptions = &WriteOptions { dry_run: false };
/// How long (virtual time) a test waits for something it expects before it fails.
const PATIENCE: Duration = Duration::from_secs(24 * 3600);
/// Timers have millisecond resolution.
const TOLERANCE: f64 = 0.005;
const HOUR: f64 = 3600.0;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn pkg() -> &'static KindInfo {
    kind_by_name("Package").expect("the Package kind")
}

/// Deterministic settings: no jitter, no resync, no rate limit to speak of.
fn config() -> Config {
    Config {
        concurrency: 4,
        backoff: BackoffConfig {
            base: secs(1.0),
            max: secs(8.0),
            jitter: 0.0,
        },
        conflict_delay: Duration::from_millis(50),
        rate_per_second: 1000.0,
        rate_burst: 1000,
        reconcile_timeout: secs(60.0),
        max_requeue: secs(HOUR),
        resync: None,
    }
}

// ---------------------------------------------------------------------------------------
// A store that can hold back a list, and counts status writes.

type TestStore = Intercepted<MemoryStore, Holds>;

#[derive(Debug)]
struct Holds {
    /// `list` of this kind waits until `open_list` (to prove the readiness gate).
    hold_list: Option<&'static str>,
    list_open: watch::Sender<bool>,
    status_writes: AtomicUsize,
}

fn test_store(hold_list: Option<&'static str>) -> Arc<TestStore> {
    let holds = Holds {
        hold_list,
        list_open: watch::channel(false).0,
        status_writes: AtomicUsize::new(0),
    };
    Arc::new(Intercepted::new(MemoryStore::default(), holds))
}

fn open_list(store: &TestStore) {
    store.hooks.list_open.send_replace(true);
}

fn status_writes(store: &TestStore) -> usize {
    store.hooks.status_writes.load(SeqCst)
}

#[async_trait]
impl Intercept for Holds {
    async fn list(&self, inner: &dyn Store, kind: &'static KindInfo) -> store::Result<ObjectList> {
        if self.hold_list == Some(kind.kind) {
            let mut open = self.list_open.subscribe();
            let _ = open.wait_for(|open| *open).await;
        }
        inner.list(kind).await
    }

    async fn update_status(
        &self,
        inner: &dyn Store,
        obj: Object,
        opts: &WriteOptions,
    ) -> store::Result<Object> {
        self.status_writes.fetch_add(1, SeqCst);
        inner.update_status(obj, opts).await
    }

    async fn patch(
        &self,
        inner: &dyn Store,
        kind: &'static KindInfo,
        name: &str,
        patch: Patch,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> store::Result<Object> {
        if sub == Subresource::Status {
            self.status_writes.fetch_add(1, SeqCst);
        }
        inner.patch(kind, name, patch, sub, opts).await
    }
}

// ---------------------------------------------------------------------------------------
// The recording fake reconciler.

/// What one reconcile of a key does. A key's script is played in order and its last act
/// repeats forever.
#[derive(Clone, Debug)]
enum Act {
    OnChange,
    After(Duration),
    Transient,
    Terminal(&'static str),
    Conflict,
    Panic,
    /// Never returns (until cancelled).
    Hang,
    /// Takes this many seconds, then does the rest.
    Sleep(f64, Box<Act>),
    /// Waits until the test releases the key, then does the rest.
    Block(Box<Act>),
    /// Runs the fake's body: a real reconciler using the runtime's helpers.
    Body,
}

fn sleep_then(s: f64, then: Act) -> Act {
    Act::Sleep(s, Box::new(then))
}

fn block_then(then: Act) -> Act {
    Act::Block(Box::new(then))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Running,
    Ok,
    /// The error's label (`transient`, `terminal`, `conflict`).
    Err(&'static str),
    Panicked,
    Cancelled,
}

#[derive(Clone, Debug)]
struct Call {
    key: String,
    start: f64,
    end: Option<f64>,
    outcome: Outcome,
}

#[derive(Debug, Default)]
struct Record {
    calls: Vec<Call>,
    scripts: HashMap<String, VecDeque<Act>>,
    running: HashMap<String, usize>,
    in_flight: usize,
    max_in_flight: usize,
    /// Calls that started while another call of the same key was running.
    overlaps: Vec<Call>,
}

impl Record {
    fn started(&self, key: &str) -> usize {
        self.calls.iter().filter(|c| c.key == key).count()
    }

    fn ended(&self) -> usize {
        self.calls.iter().filter(|c| c.end.is_some()).count()
    }
}

type Body = Arc<dyn Fn(Arc<Object>, Context) -> BoxFuture<'static, ReconcileResult> + Send + Sync>;

struct FakeInner {
    t0: Instant,
    record: Mutex<Record>,
    /// Bumped on every start and end, so tests can wait for the record to change.
    changed: watch::Sender<u64>,
    gates: Mutex<HashMap<String, Arc<Notify>>>,
    body: Option<Body>,
}

#[derive(Clone)]
struct Fake(Arc<FakeInner>);

impl Fake {
    fn new(body: Option<Body>) -> Self {
        Self(Arc::new(FakeInner {
            t0: Instant::now(),
            record: Mutex::new(Record::default()),
            changed: watch::channel(0).0,
            gates: Mutex::new(HashMap::new()),
            body,
        }))
    }

    fn script(&self, key: &str, acts: Vec<Act>) {
        self.record().scripts.insert(key.to_owned(), acts.into());
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        self.0.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> f64 {
        self.0.t0.elapsed().as_secs_f64()
    }

    fn calls(&self) -> Vec<Call> {
        self.record().calls.clone()
    }

    fn calls_of(&self, key: &str) -> Vec<Call> {
        self.record()
            .calls
            .iter()
            .filter(|c| c.key == key)
            .cloned()
            .collect()
    }

    fn gate(&self, key: &str) -> Arc<Notify> {
        self.0
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// Lets one blocked (or the next blocking) reconcile of `key` go on.
    fn release(&self, key: &str) {
        self.gate(key).notify_one();
    }

    fn begin(&self, key: &str) -> (Act, CallGuard) {
        let now = self.now();
        let mut r = self.record();
        let act = match r.scripts.get_mut(key) {
            Some(script) if script.len() > 1 => script.pop_front().unwrap_or(Act::OnChange),
            Some(script) => script.front().cloned().unwrap_or(Act::OnChange),
            None => Act::OnChange,
        };
        let call = Call {
            key: key.to_owned(),
            start: now,
            end: None,
            outcome: Outcome::Running,
        };
        let running = r.running.entry(key.to_owned()).or_default();
        *running += 1;
        if *running > 1 {
            r.overlaps.push(call.clone());
        }
        r.in_flight += 1;
        r.max_in_flight = r.max_in_flight.max(r.in_flight);
        r.calls.push(call);
        let index = r.calls.len() - 1;
        drop(r);
        self.0.changed.send_modify(|v| *v += 1);
        (
            act,
            CallGuard {
                fake: self.clone(),
                index,
                finished: false,
            },
        )
    }

    fn end(&self, index: usize, outcome: Outcome) {
        let now = self.now();
        let mut r = self.record();
        let call = &mut r.calls[index];
        call.end = Some(now);
        call.outcome = outcome;
        let key = call.key.clone();
        if let Some(n) = r.running.get_mut(&key) {
            *n -= 1;
        }
        r.in_flight -= 1;
        drop(r);
        self.0.changed.send_modify(|v| *v += 1);
    }

    /// Waits (at most [`PATIENCE`] of virtual time) until `done` holds for the record.
    async fn wait_until(&self, what: &str, done: impl Fn(&Record) -> bool) {
        let mut changed = self.0.changed.subscribe();
        let waited = tokio::time::timeout(PATIENCE, async {
            loop {
                let ok = done(&self.record());
                if ok {
                    return;
                }
                if changed.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "gave up waiting for {what}; calls: {:#?}",
            self.calls()
        );
    }

    async fn perform(
        &self,
        mut act: Act,
        key: &str,
        obj: Arc<Object>,
        ctx: &Context,
    ) -> ReconcileResult {
        loop {
            act = match act {
                Act::OnChange => return Ok(Requeue::OnChange),
                Act::After(d) => return Ok(Requeue::After(d)),
                Act::Transient => return Err(ReconcileError::Transient("scripted".into())),
                Act::Terminal(msg) => return Err(ReconcileError::Terminal(msg.into())),
                Act::Conflict => return Err(ReconcileError::Conflict),
                Act::Panic => panic!("scripted panic in {key}"),
                Act::Hang => return std::future::pending().await,
                Act::Sleep(s, then) => {
                    tokio::time::sleep(secs(s)).await;
                    *then
                }
                Act::Block(then) => {
                    self.gate(key).notified().await;
                    *then
                }
                Act::Body => {
                    let body = self.0.body.clone().expect("a fake with a body");
                    return body(obj, ctx.clone()).await;
                }
            };
        }
    }
}

/// Ends the record of a call however the call ends: returned, panicked or dropped.
struct CallGuard {
    fake: Fake,
    index: usize,
    finished: bool,
}

impl CallGuard {
    fn finish(&mut self, result: &ReconcileResult) {
        self.finished = true;
        let outcome = match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Err(e.label()),
        };
        self.fake.end(self.index, outcome);
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.finished {
            let outcome = if std::thread::panicking() {
                Outcome::Panicked
            } else {
                Outcome::Cancelled
            };
            self.fake.end(self.index, outcome);
        }
    }
}

#[async_trait]
impl Reconciler for Fake {
    async fn reconcile(&self, obj: Arc<Object>, ctx: &Context) -> ReconcileResult {
        let key = obj.metadata.name.clone();
        let (act, mut call) = self.begin(&key);
        let result = self.perform(act, &key, obj, ctx).await;
        call.finish(&result);
        result
    }
}

// ---------------------------------------------------------------------------------------
// A running controller and the scenario driver.

struct Harness {
    store: Arc<TestStore>,
    fake: Fake,
    metrics: Metrics,
    shutdown: Shutdown,
    triggers: futures::channel::mpsc::UnboundedSender<ObjectKey>,
    run: JoinHandle<()>,
    exited: bool,
    writes: u32,
}

impl Harness {
    async fn start(
        store: Arc<TestStore>,
        objects: &[&str],
        owns: &[&str],
        config: Config,
        fake: Fake,
    ) -> Self {
        for name in objects {
            store
                .create(package(name, "^1.0"), W)
                .await
                .expect("create a package");
        }
        Self::start_on(store, "test", owns, config, fake)
    }

    fn start_on(
        store: Arc<TestStore>,
        name: &'static str,
        owns: &[&str],
        config: Config,
        fake: Fake,
    ) -> Self {
        let (triggers, keys) = futures::channel::mpsc::unbounded();
        let metrics = Metrics::default();
        let shutdown = Shutdown::new();
        let mut controller = Controller::for_kind(name, pkg(), store.clone())
            .config(config)
            .trigger(keys)
            .metrics(metrics.clone());
        for kind in owns {
            controller = controller.owns(kind_by_name(kind).expect("a known kind"));
        }
        let run = tokio::spawn(Box::pin(controller.run(fake.clone(), shutdown.clone())));
        Self {
            store,
            fake,
            metrics,
            shutdown,
            triggers,
            run,
            exited: false,
            writes: 0,
        }
    }

    /// Changes the spec of `name` (a real change: its generation moves).
    async fn write(&mut self, name: &str) {
        self.writes += 1;
        let mut obj = self.store.get(pkg(), name).await.expect("get to write");
        obj.spec["source"]["version"] = serde_json::json!(format!("^1.{}", self.writes));
        obj.metadata.resource_version = None;
        self.store.update(obj, W).await.expect("write");
    }

    async fn exited(&mut self) {
        tokio::time::timeout(PATIENCE, &mut self.run)
            .await
            .expect("run returns")
            .expect("run does not panic");
        self.exited = true;
    }

    async fn stop(&mut self) {
        if !self.exited {
            self.shutdown.force();
            self.exited().await;
        }
    }

    async fn step(&mut self, i: usize, step: Step) {
        match step {
            Step::Write(k) => self.write(k).await,
            Step::WriteTimes(k, n) => {
                for _ in 0..n {
                    self.write(k).await;
                }
            }
            Step::Delete(k) => {
                self.store
                    .delete(pkg(), k, &Preconditions::default(), W)
                    .await
                    .expect("delete");
            }
            Step::Trigger(k) => self
                .triggers
                .unbounded_send(ObjectKey::new(pkg(), k))
                .expect("the controller takes triggers"),
            Step::Advance(s) => tokio::time::sleep(secs(s)).await,
            Step::Started(k, n) => {
                self.fake
                    .wait_until(&format!("{k} to start {n} calls"), |r| r.started(k) >= n)
                    .await;
            }
            Step::Release(k) => self.fake.release(k),
            Step::OpenList => open_list(&self.store),
            Step::Begin => self.shutdown.begin(),
            Step::ForceAfter(s) => self.shutdown.force_after(secs(s)),
            Step::Force => self.shutdown.force(),
            Step::Exited => self.exited().await,
            Step::StillRunning => assert!(!self.run.is_finished(), "step {i}: run returned"),
            Step::Now(t) => {
                let now = self.fake.now();
                assert!(
                    (now - t).abs() < TOLERANCE,
                    "step {i}: now is {now}, not {t}"
                );
            }
            Step::Condition(name, type_, want) => {
                let obj = self.store.get(pkg(), name).await.expect("get");
                let got = find_condition(&obj.conditions(), type_).map(|c| c.status);
                assert_eq!(got, want, "step {i}: {type_} of {name}: {:?}", obj.status);
            }
        }
    }
}

/// One step of a scenario.
#[derive(Clone, Debug)]
enum Step {
    /// Change the object's spec.
    Write(&'static str),
    WriteTimes(&'static str, usize),
    Delete(&'static str),
    /// Send the key through an external trigger stream.
    Trigger(&'static str),
    /// Let this many seconds pass.
    Advance(f64),
    /// Wait until the key has started this many calls.
    Started(&'static str, usize),
    /// Let a blocked reconcile of the key go on.
    Release(&'static str),
    /// Let the held-back `list` finish.
    OpenList,
    /// First shutdown signal: stop intake, drain.
    Begin,
    /// Force this many seconds after shutdown begins (the drain deadline).
    ForceAfter(f64),
    /// Second signal: cancel what still runs.
    Force,
    /// Wait until `run` has returned.
    Exited,
    /// `run` has not returned.
    StillRunning,
    /// The clock reads this (seconds since the start).
    Now(f64),
    /// The object's condition of this type has this status (`None`: absent).
    Condition(&'static str, &'static str, Option<ConditionStatus>),
}
use Step::*;

/// An expected reconcile call.
#[derive(Clone, Debug)]
struct Exp {
    key: &'static str,
    at: f64,
    outcome: Outcome,
    end: Option<f64>,
}

fn call(key: &'static str, at: f64) -> Exp {
    Exp {
        key,
        at,
        outcome: Outcome::Ok,
        end: None,
    }
}

impl Exp {
    fn failed(self, label: &'static str) -> Self {
        Self {
            outcome: Outcome::Err(label),
            ..self
        }
    }

    fn panicked(self) -> Self {
        Self {
            outcome: Outcome::Panicked,
            ..self
        }
    }

    fn cancelled(self) -> Self {
        Self {
            outcome: Outcome::Cancelled,
            ..self
        }
    }

    fn ends(self, at: f64) -> Self {
        Self {
            end: Some(at),
            ..self
        }
    }
}

struct Scenario {
    objects: &'static [&'static str],
    /// Kinds the controller owns (each is listed before the readiness gate opens).
    owns: &'static [&'static str],
    hold_list: Option<&'static str>,
    config: Config,
    scripts: Vec<(&'static str, Vec<Act>)>,
    steps: Vec<Step>,
    /// Every reconcile call, in order of start (same-instant calls in any order).
    expect: Vec<Exp>,
    max_in_flight: Option<usize>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            objects: &[],
            owns: &[],
            hold_list: None,
            config: config(),
            scripts: Vec::new(),
            steps: Vec::new(),
            expect: Vec::new(),
            max_in_flight: None,
        }
    }
}

struct Checked {
    fake: Fake,
    metrics: Metrics,
}

fn ms(s: f64) -> i64 {
    (s * 1000.0).round() as i64
}

/// Runs a scenario and checks the calls it made; every scenario also checks that no key
/// ever ran twice at once.
async fn check(s: Scenario) -> Checked {
    let fake = Fake::new(None);
    for (key, acts) in s.scripts {
        fake.script(key, acts);
    }
    let store = test_store(s.hold_list);
    let mut h = Harness::start(store, s.objects, s.owns, s.config, fake).await;
    for (i, step) in s.steps.into_iter().enumerate() {
        h.step(i, step).await;
    }
    h.stop().await;
    let mut calls = h.fake.calls();
    calls.sort_by(|a, b| (ms(a.start), &a.key).cmp(&(ms(b.start), &b.key)));
    let mut expect = s.expect;
    expect.sort_by(|a, b| (ms(a.at), a.key).cmp(&(ms(b.at), b.key)));
    let table = |calls: &[Call]| {
        calls
            .iter()
            .map(|c| {
                format!(
                    "  {:>8} @ {:>10.3} .. {:>10} {:?}",
                    c.key,
                    c.start,
                    c.end.map_or("-".into(), |e| format!("{e:.3}")),
                    c.outcome
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let matches = calls.len() == expect.len()
        && calls.iter().zip(&expect).all(|(c, e)| {
            c.key == e.key
                && (c.start - e.at).abs() < TOLERANCE
                && c.outcome == e.outcome
                && e.end
                    .is_none_or(|end| c.end.is_some_and(|got| (got - end).abs() < TOLERANCE))
        });
    assert!(
        matches,
        "calls differ from the expected ones\nexpected:\n{:#?}\ngot:\n{}",
        expect
            .iter()
            .map(|e| format!("{} @ {} {:?} end {:?}", e.key, e.at, e.outcome, e.end))
            .collect::<Vec<_>>(),
        table(&calls)
    );
    let r = h.fake.record();
    assert!(
        r.overlaps.is_empty(),
        "a key ran twice at once: {:#?}",
        r.overlaps
    );
    if let Some(n) = s.max_in_flight {
        assert_eq!(r.max_in_flight, n, "most reconciles running at once");
    }
    drop(r);
    Checked {
        fake: h.fake.clone(),
        metrics: h.metrics.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Queue rules: dedup, exclusivity, concurrency, requeue.

#[tokio::test(start_paused = true)]
async fn writes_to_a_queued_key_fold_into_one_run() {
    check(Scenario {
        objects: &["first", "second"],
        config: Config {
            concurrency: 1,
            ..config()
        },
        scripts: vec![("first", vec![block_then(Act::OnChange), Act::OnChange])],
        steps: vec![
            Started("first", 1),
            // "second" waits for the only worker while it is written 100 times.
            WriteTimes("second", 100),
            Advance(1.0),
            Release("first"),
            Advance(10.0),
        ],
        expect: vec![call("first", 0.0).ends(1.0), call("second", 1.0)],
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn writes_while_running_cause_exactly_one_more_run() {
    check(Scenario {
        objects: &["a"],
        scripts: vec![("a", vec![block_then(Act::OnChange), Act::OnChange])],
        steps: vec![
            Started("a", 1),
            Advance(0.5),
            WriteTimes("a", 100),
            Advance(0.5),
            Release("a"),
            Advance(10.0),
        ],
        expect: vec![call("a", 0.0).ends(1.0), call("a", 1.0)],
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn never_the_same_key_twice_at_once_with_four_workers() {
    // Three keys, each reconcile takes a second, and every key is written every 100 ms
    // for 5 s: each key runs back to back (0, 1, ... 5), never overlapping itself.
    let mut steps = Vec::new();
    for _ in 0..50 {
        steps.extend([Write("k0"), Write("k1"), Write("k2"), Advance(0.1)]);
    }
    steps.push(Advance(5.0));
    let mut expect = Vec::new();
    for t in 0..=5 {
        for k in ["k0", "k1", "k2"] {
            expect.push(call(k, f64::from(t)).ends(f64::from(t) + 1.0));
        }
    }
    check(Scenario {
        objects: &["k0", "k1", "k2"],
        config: Config {
            concurrency: 4,
            ..config()
        },
        scripts: ["k0", "k1", "k2"]
            .into_iter()
            .map(|k| (k, vec![sleep_then(1.0, Act::OnChange)]))
            .collect(),
        steps,
        expect,
        max_in_flight: Some(3),
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_holds_across_keys() {
    const KEYS: [&str; 8] = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"];
    let expect = KEYS
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let at = if i < 4 { 0.0 } else { 1.0 };
            call(k, at).ends(at + 1.0)
        })
        .collect();
    check(Scenario {
        objects: &KEYS,
        config: Config {
            concurrency: 4,
            ..config()
        },
        scripts: KEYS
            .iter()
            .map(|k| (*k, vec![sleep_then(1.0, Act::OnChange)]))
            .collect(),
        steps: vec![Advance(5.0)],
        expect,
        max_in_flight: Some(4),
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn zero_concurrency_in_a_config_still_runs() {
    check(Scenario {
        objects: &["a", "b"],
        config: Config {
            concurrency: 0,
            ..config()
        },
        steps: vec![Advance(1.0)],
        expect: vec![call("a", 0.0), call("b", 0.0)],
        max_in_flight: Some(1),
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn external_triggers_enqueue_and_missing_objects_are_not_reconciled() {
    check(Scenario {
        objects: &["a", "b"],
        steps: vec![
            Advance(1.0),
            Trigger("a"),
            Trigger("a"),
            // Not in the store: nothing to reconcile.
            Trigger("ghost"),
            Advance(1.0),
            // Deleted without finalizers: gone, so not reconciled either.
            Delete("b"),
            Advance(1.0),
        ],
        expect: vec![call("a", 0.0), call("b", 0.0), call("a", 1.0)],
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn requeue_after_is_a_deadline_not_a_promise() {
    check(Scenario {
        objects: &["a"],
        scripts: vec![("a", vec![Act::After(secs(HOUR))])],
        steps: vec![Advance(10.0), Write("a"), Advance(HOUR + 100.0)],
        expect: vec![call("a", 0.0), call("a", 10.0), call("a", 10.0 + HOUR)],
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn huge_requeues_are_clamped_not_a_panic() {
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    let mut expect = Vec::new();
    for t in 0..4 {
        expect.push(call("a", f64::from(t) * HOUR));
        expect.push(call("b", f64::from(t) * HOUR));
    }
    check(Scenario {
        objects: &["a", "b"],
        scripts: vec![
            ("a", vec![Act::After(century)]),
            ("b", vec![Act::After(Duration::MAX)]),
        ],
        steps: vec![Advance(3.0 * HOUR + 1.0)],
        expect,
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn unbounded_limits_in_a_config_do_not_panic() {
    // "No limit" written as Duration::MAX: nothing may overflow (a panic in the run loop
    // would stop the whole controller, one in a worker would silently drop the key).
    check(Scenario {
        objects: &["a", "b"],
        config: Config {
            max_requeue: Duration::MAX,
            resync: Some(Duration::MAX),
            backoff: BackoffConfig {
                base: secs(1.0),
                max: Duration::MAX,
                jitter: 0.0,
            },
            ..config()
        },
        scripts: vec![
            ("a", vec![Act::After(Duration::MAX)]),
            (
                "b",
                vec![
                    Act::Transient,
                    Act::Transient,
                    Act::Transient,
                    Act::OnChange,
                ],
            ),
        ],
        steps: vec![Advance(10.0), Write("a"), Advance(1.0)],
        expect: vec![
            call("a", 0.0),
            call("b", 0.0).failed("transient"),
            call("b", 1.0).failed("transient"),
            call("b", 3.0).failed("transient"),
            call("b", 7.0),
            call("a", 10.0),
        ],
        ..Scenario::default()
    })
    .await;
}

#[test]
fn odd_jitter_settings_do_not_panic_or_spin() {
    let mut rng = rand::rng();
    for jitter in [1.0, 1.5, -0.5, f64::NAN, f64::INFINITY] {
        let cfg = BackoffConfig {
            base: secs(1.0),
            max: secs(8.0),
            jitter,
        };
        for failures in [1, 2, 10, u32::MAX] {
            let d = cfg.delay(failures, &mut rng);
            assert!(
                d > Duration::ZERO && d <= secs(16.0),
                "jitter {jitter}, failures {failures}: {d:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Result contract: backoff, conflict, terminal.

#[tokio::test(start_paused = true)]
async fn backoff_grows_caps_and_resets_on_success() {
    use Act::{After, Transient as T};
    check(Scenario {
        objects: &["a"],
        scripts: vec![(
            "a",
            vec![T, T, T, T, T, T, After(secs(20.0)), T, Act::OnChange],
        )],
        steps: vec![Advance(100.0)],
        expect: vec![
            // 1 s doubling ...
            call("a", 0.0).failed("transient"),
            call("a", 1.0).failed("transient"),
            call("a", 3.0).failed("transient"),
            call("a", 7.0).failed("transient"),
            // ... capped at 8 s ...
            call("a", 15.0).failed("transient"),
            call("a", 23.0).failed("transient"),
            call("a", 31.0),
            // ... and back to 1 s after a success.
            call("a", 51.0).failed("transient"),
            call("a", 52.0),
        ],
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn conflicts_retry_quietly_without_growing_the_backoff() {
    use Act::{Conflict as C, Transient as T};
    let checked = check(Scenario {
        objects: &["a"],
        scripts: vec![("a", vec![C, C, C, T, C, T, Act::OnChange])],
        steps: vec![Advance(10.0)],
        expect: vec![
            call("a", 0.0).failed("conflict"),
            call("a", 0.05).failed("conflict"),
            call("a", 0.10).failed("conflict"),
            // The first real failure waits the base delay: the conflicts did not count.
            call("a", 0.15).failed("transient"),
            call("a", 1.15).failed("conflict"),
            // A conflict in between neither resets nor grows it: the second failure.
            call("a", 1.20).failed("transient"),
            call("a", 3.20),
        ],
        ..Scenario::default()
    })
    .await;
    assert_eq!(checked.fake.calls().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn terminal_errors_are_not_retried_and_show_as_stalled() {
    check(Scenario {
        objects: &["a", "b"],
        scripts: vec![
            ("a", vec![Act::Terminal("spec is unusable"), Act::OnChange]),
            (
                "b",
                vec![Act::Terminal("bad"), Act::Terminal("worse"), Act::OnChange],
            ),
        ],
        steps: vec![
            Condition("a", "Stalled", None),
            Advance(HOUR),
            // Not retried (its own Stalled write included), but visible.
            Condition("a", "Stalled", Some(ConditionStatus::True)),
            Condition("b", "Stalled", Some(ConditionStatus::True)),
            // A change runs it again; the success clears the condition.
            Write("a"),
            Write("b"),
            Advance(1.0),
            Condition("a", "Stalled", Some(ConditionStatus::False)),
            Condition("b", "Stalled", Some(ConditionStatus::True)),
            Write("b"),
            Advance(HOUR),
            Condition("b", "Stalled", Some(ConditionStatus::False)),
        ],
        expect: vec![
            call("a", 0.0).failed("terminal"),
            call("b", 0.0).failed("terminal"),
            call("a", HOUR),
            call("b", HOUR).failed("terminal"),
            call("b", HOUR + 1.0),
        ],
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn stalled_is_recorded_even_after_the_reconciler_wrote_status() {
    // The reconciler writes status (so the object it was given is stale) and then fails
    // terminally: `Stalled` must land on that attempt, not wait for a later one. The
    // reconciler's own write comes back as one more reconcile, which sees it.
    let fail = Arc::new(AtomicBool::new(true));
    let saw: Arc<Mutex<Vec<Option<ConditionStatus>>>> = Arc::default();
    let body: Body = {
        let (fail, saw) = (fail.clone(), saw.clone());
        Arc::new(move |obj: Arc<Object>, ctx: Context| {
            let (fail, saw) = (fail.load(SeqCst), saw.clone());
            async move {
                let stored = ctx.store.get(pkg(), obj.name()).await?;
                let stalled = find_condition(&stored.conditions(), "Stalled").map(|c| c.status);
                saw.lock().unwrap_or_else(|e| e.into_inner()).push(stalled);
                let res = Resource::<PackageSpec>::from_object(&obj)
                    .map_err(|e| ReconcileError::Terminal(e.to_string()))?;
                update_status(&*ctx.store, &res, |s| s.version = Some("1.0.0:0".into())).await?;
                if fail {
                    Err(ReconcileError::Terminal("cannot go on".into()))
                } else {
                    Ok(Requeue::OnChange)
                }
            }
            .boxed()
        })
    };
    let fake = Fake::new(Some(body));
    fake.script("p", vec![Act::Body]);
    let store = test_store(None);
    let mut h = Harness::start(store.clone(), &["p"], &[], config(), fake.clone()).await;
    fake.wait_until("two calls", |r| r.ended() >= 2).await;
    tokio::time::sleep(secs(HOUR)).await;
    let stalled = |o: &Object| find_condition(&o.conditions(), "Stalled").map(|c| c.status);
    let obj = store.get(pkg(), "p").await.expect("get");
    assert_eq!(
        stalled(&obj),
        Some(ConditionStatus::True),
        "{:?}",
        obj.status
    );
    fail.store(false, SeqCst);
    h.write("p").await;
    fake.wait_until("the third call", |r| r.ended() >= 3).await;
    tokio::time::sleep(secs(HOUR)).await;
    let obj = store.get(pkg(), "p").await.expect("get");
    assert_eq!(
        stalled(&obj),
        Some(ConditionStatus::False),
        "{:?}",
        obj.status
    );
    // The success also wrote status (observedGeneration moved): one more echo.
    let starts: Vec<i64> = fake.calls().iter().map(|c| ms(c.start)).collect();
    assert_eq!(starts, [0, 0, ms(HOUR), ms(HOUR)], "{:#?}", fake.calls());
    let saw = saw.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (t, f) = (Some(ConditionStatus::True), Some(ConditionStatus::False));
    assert_eq!(saw, [None, t, t, f], "what each call found in the store");
    h.stop().await;
}

/// Gives `name` a `Stalled=True` written by `by`, with `message`.
async fn seed_stalled(store: &TestStore, name: &str, by: &str, message: &str) {
    let mut obj = store.get(pkg(), name).await.expect("get to seed");
    obj.status = Some(serde_json::json!({"conditions": [{
        "type": "Stalled",
        "status": "True",
        "reason": "ReconcileFailed",
        "message": message,
        "reportingController": by,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }]}));
    store.update_status(obj, W).await.expect("seed Stalled");
}

#[tokio::test(start_paused = true)]
async fn stalled_belongs_to_the_controller_it_names_not_to_a_message_prefix() {
    // Which controller stalled is data on the condition. A message is for people: reworded,
    // it must not keep the stalled controller from clearing its own `Stalled`; starting
    // with another controller's name, it must not let that one clear it.
    let store = test_store(None);
    for name in ["mine", "theirs"] {
        store
            .create(package(name, "^1.0"), W)
            .await
            .expect("create");
    }
    seed_stalled(&store, "mine", "ctrl-a", "reworded by a person").await;
    seed_stalled(&store, "theirs", "ctrl-b", "ctrl-a: looks like ctrl-a's").await;
    let fake = Fake::new(None);
    let mut h = Harness::start_on(store.clone(), "ctrl-a", &[], config(), fake.clone());
    fake.wait_until("both reconciled", |r| r.ended() >= 2).await;
    tokio::time::sleep(secs(HOUR)).await;
    h.stop().await;
    for (name, want) in [
        ("mine", ConditionStatus::False),
        ("theirs", ConditionStatus::True),
    ] {
        let obj = store.get(pkg(), name).await.expect("get");
        let stalled = find_condition(&obj.conditions(), "Stalled").map(|c| c.status);
        assert_eq!(stalled, Some(want), "{name}: {:?}", obj.status);
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_stay_within_the_jitter_bounds() {
    // 1 s doubling to 8 s with ±20 %: every observed gap between attempts lies in
    // [0.8, 1.2] × nominal, the cap holds, success resets, and jitter is really applied.
    use Act::Transient as T;
    let keys: Vec<String> = (0..20).map(|i| format!("j{i}")).collect();
    let fake = Fake::new(None);
    for k in &keys {
        fake.script(
            k,
            vec![
                T,
                T,
                T,
                T,
                T,
                T,
                T,
                Act::After(secs(100.0)),
                T,
                T,
                Act::OnChange,
            ],
        );
    }
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let cfg = Config {
        backoff: BackoffConfig {
            base: secs(1.0),
            max: secs(8.0),
            jitter: 0.2,
        },
        concurrency: 20,
        ..config()
    };
    let mut h = Harness::start(test_store(None), &names, &[], cfg, fake.clone()).await;
    fake.wait_until("every key to finish its script", |r| r.ended() >= 20 * 11)
        .await;
    h.stop().await;
    let nominal = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 100.0, 1.0, 2.0];
    let mut off_nominal = 0;
    for k in &keys {
        let starts: Vec<f64> = fake.calls_of(k).iter().map(|c| c.start).collect();
        assert_eq!(starts.len(), 11, "{k}: {starts:?}");
        for (i, (pair, n)) in starts.windows(2).zip(nominal).enumerate() {
            let gap = pair[1] - pair[0];
            let (lo, hi) = if n == 100.0 {
                (n, n)
            } else {
                (n * 0.8, n * 1.2)
            };
            assert!(
                gap >= lo - TOLERANCE && gap <= hi + TOLERANCE,
                "{k}, gap {i}: {gap} not in [{lo}, {hi}]"
            );
            if (gap - n).abs() > 0.01 {
                off_nominal += 1;
            }
        }
    }
    assert!(off_nominal > 20, "jitter is applied: {off_nominal}");
}

// ---------------------------------------------------------------------------------------
// Resync and the readiness gate.

#[tokio::test(start_paused = true)]
async fn resync_runs_every_key_again_around_the_interval() {
    let fake = Fake::new(None);
    let cfg = Config {
        resync: Some(secs(60.0)),
        ..config()
    };
    let mut h = Harness::start(test_store(None), &["a", "b", "c"], &[], cfg, fake.clone()).await;
    tokio::time::sleep(secs(200.0)).await;
    h.stop().await;
    let first = fake.calls_of("a");
    // 0, then three resyncs 54..66 s apart (the fourth would be past 200 s).
    assert_eq!(first.len(), 4, "{first:#?}");
    for k in ["a", "b", "c"] {
        let starts: Vec<f64> = fake.calls_of(k).iter().map(|c| c.start).collect();
        assert_eq!(starts.len(), 4, "{k}: {starts:?}");
        assert!(starts[0].abs() < TOLERANCE, "{k} ran at the start");
        for (pair, same) in starts.windows(2).zip(first.windows(2)) {
            let gap = pair[1] - pair[0];
            assert!((54.0..=66.0).contains(&gap), "{k}: resync gap {gap}");
            assert!(
                (pair[1] - same[1].start).abs() < TOLERANCE,
                "every key in the same resync"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_runs_before_every_kind_is_listed() {
    // The primary kind lists at once, the owned kind is held back for 10 s.
    check(Scenario {
        objects: &["a", "b"],
        owns: &["Volume"],
        hold_list: Some("Volume"),
        steps: vec![Advance(10.0), Write("a"), OpenList, Advance(1.0)],
        expect: vec![call("a", 10.0), call("b", 10.0)],
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_before_the_caches_sync_returns() {
    check(Scenario {
        objects: &["a"],
        hold_list: Some("Package"),
        steps: vec![Advance(5.0), Begin, Exited, Now(5.0)],
        expect: vec![],
        ..Scenario::default()
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Containment: panics and timeouts.

#[tokio::test(start_paused = true)]
async fn a_panic_is_an_error_for_its_key_only() {
    let checked = check(Scenario {
        objects: &["boom", "ok"],
        scripts: vec![
            ("boom", vec![Act::Panic, Act::Panic, Act::OnChange]),
            ("ok", vec![Act::After(secs(1.0))]),
        ],
        steps: vec![Advance(4.5), Write("boom"), Advance(0.1)],
        expect: vec![
            call("boom", 0.0).panicked(),
            call("boom", 1.0).panicked(),
            call("boom", 3.0),
            call("boom", 4.5),
            call("ok", 0.0),
            call("ok", 1.0),
            call("ok", 2.0),
            call("ok", 3.0),
            call("ok", 4.0),
        ],
        ..Scenario::default()
    })
    .await;
    assert_eq!(checked.metrics.reconcile_count("test"), 9);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_cancels_the_reconcile_and_retries_it() {
    check(Scenario {
        objects: &["fast", "slow"],
        config: Config {
            reconcile_timeout: secs(5.0),
            ..config()
        },
        scripts: vec![
            ("slow", vec![Act::Hang, Act::OnChange]),
            ("fast", vec![sleep_then(2.0, Act::OnChange)]),
        ],
        steps: vec![Advance(10.0)],
        expect: vec![
            call("fast", 0.0).ends(2.0),
            call("slow", 0.0).cancelled().ends(5.0),
            call("slow", 6.0),
        ],
        ..Scenario::default()
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Shutdown.

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_drains_then_force_cancels() {
    check(Scenario {
        objects: &["a", "b", "c"],
        config: Config {
            concurrency: 2,
            ..config()
        },
        scripts: vec![
            ("a", vec![sleep_then(10.0, Act::After(secs(1.0)))]),
            ("b", vec![block_then(Act::OnChange)]),
        ],
        steps: vec![
            Started("b", 1),
            Advance(1.0),
            Begin,
            // Intake stops: a write starts nothing, and "c" (waiting for a worker) never
            // starts, even after "a" finished and freed one.
            Write("c"),
            Advance(30.0),
            StillRunning,
            Force,
            Exited,
            Now(31.0),
        ],
        expect: vec![
            call("a", 0.0).ends(10.0),
            call("b", 0.0).cancelled().ends(31.0),
        ],
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_drain_deadline_forces() {
    check(Scenario {
        objects: &["a", "b"],
        scripts: vec![
            ("a", vec![sleep_then(10.0, Act::OnChange)]),
            ("b", vec![Act::Hang]),
        ],
        steps: vec![Advance(1.0), ForceAfter(5.0), Begin, Exited, Now(6.0)],
        expect: vec![
            call("a", 0.0).cancelled().ends(6.0),
            call("b", 0.0).cancelled().ends(6.0),
        ],
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_returns_once_running_reconciles_finish() {
    check(Scenario {
        objects: &["a"],
        scripts: vec![("a", vec![sleep_then(3.0, Act::After(secs(1.0)))])],
        steps: vec![Advance(1.0), Begin, Exited, Now(3.0)],
        expect: vec![call("a", 0.0).ends(3.0)],
        ..Scenario::default()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn rate_limited_starts_stop_at_shutdown() {
    // One start per second: "a" at 0, "b" at 1, "c" at 2; shutdown at 1.5 leaves "c" out.
    check(Scenario {
        objects: &["a", "b", "c"],
        config: Config {
            rate_per_second: 1.0,
            rate_burst: 1,
            ..config()
        },
        steps: vec![Advance(1.5), Begin, Exited, Now(1.5)],
        expect: vec![call("a", 0.0), call("b", 1.0)],
        ..Scenario::default()
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Finalizers.

const PERSON: &str = "person.startos.dev/keep";

#[derive(Clone, Debug)]
struct Seen {
    event: FinalizerEvent,
    /// The finalizers in the store when the event ran.
    stored: Vec<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn seen(log: &Log) -> Vec<Seen> {
    log.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Makes the first add (and the first cleanup) of each racing controller wait until every
/// party holds the same, soon stale, copy of the object.
struct Race {
    adding: Arc<Barrier>,
    cleaning: Arc<Barrier>,
    waited_add: AtomicBool,
    waited_clean: AtomicBool,
}

impl Race {
    async fn line_up(&self, obj: &Object) {
        let (barrier, waited) = if obj.metadata.is_deleting() {
            (&self.cleaning, &self.waited_clean)
        } else {
            (&self.adding, &self.waited_add)
        };
        if !waited.swap(true, SeqCst) {
            barrier.wait().await;
        }
    }
}

/// A reconciler guarded by the finalizer `fin` that logs each event it is given.
fn finalizing(fin: &'static str, log: Log, race: Option<Arc<Race>>) -> Body {
    Arc::new(move |obj: Arc<Object>, ctx: Context| {
        let (log, race) = (log.clone(), race.clone());
        async move {
            if let Some(race) = race {
                race.line_up(&obj).await;
            }
            let store = ctx.store.clone();
            let name = obj.name().to_owned();
            finalizer(&*ctx.store, &obj, fin, move |event| async move {
                let stored = store.get(pkg(), &name).await?.metadata.finalizers;
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Seen { event, stored });
                Ok(Requeue::OnChange)
            })
            .await
        }
        .boxed()
    })
}

fn with_finalizers(name: &str, finalizers: &[&str]) -> Object {
    let mut obj = package(name, "^1.0");
    obj.metadata.finalizers = finalizers.iter().map(|f| (*f).to_owned()).collect();
    obj
}

/// Waits (on a store watch, at most [`PATIENCE`]) until the Package `name` satisfies `ok`
/// (`None`: it does not exist).
async fn wait_for_object(
    store: &dyn Store,
    name: &str,
    what: &str,
    ok: impl Fn(Option<&Object>) -> bool,
) {
    let list = store.list(pkg()).await.expect("list");
    let mut current = list.items.into_iter().find(|o| o.name() == name);
    if ok(current.as_ref()) {
        return;
    }
    let mut events = store
        .watch(Some(pkg()), Some(&list.resource_version))
        .await
        .expect("watch");
    let waited = tokio::time::timeout(PATIENCE, async {
        while let Some(ev) = events.next().await {
            let ev = ev.expect("watch event");
            if ev.object.name() != name {
                continue;
            }
            current = match ev.type_ {
                EventType::Bookmark => continue,
                EventType::Deleted => None,
                EventType::Added | EventType::Modified => Some((*ev.object).clone()),
            };
            if ok(current.as_ref()) {
                return;
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "gave up waiting for {what}");
}

#[tokio::test(start_paused = true)]
async fn finalizer_is_added_before_apply_and_only_ours_is_removed() {
    const OURS: &str = "test.startos.dev/cleanup";
    let log = Log::default();
    let fake = Fake::new(Some(finalizing(OURS, log.clone(), None)));
    fake.script("p", vec![Act::Body]);
    let store = test_store(None);
    store
        .create(with_finalizers("p", &[PERSON]), W)
        .await
        .expect("create");
    let mut h = Harness::start(store.clone(), &[], &[], config(), fake.clone()).await;
    fake.wait_until("a reconcile that applied", |r| r.ended() >= 2)
        .await;
    tokio::time::sleep(secs(1.0)).await;
    let applies = seen(&log);
    assert_eq!(fake.calls().len(), 2, "{:#?}", fake.calls());
    assert_eq!(
        applies.len(),
        1,
        "the first reconcile only added: {applies:?}"
    );
    assert_eq!(applies[0].event, FinalizerEvent::Apply);
    assert_eq!(applies[0].stored, vec![PERSON.to_owned(), OURS.to_owned()]);

    store
        .delete(pkg(), "p", &Preconditions::default(), W)
        .await
        .expect("delete");
    wait_for_object(&*store, "p", "our finalizer to go", |o| {
        o.is_some_and(|o| !o.metadata.finalizers.iter().any(|f| f == OURS))
    })
    .await;
    let obj = store.get(pkg(), "p").await.expect("still there");
    assert_eq!(obj.metadata.finalizers, vec![PERSON.to_owned()]);
    assert!(obj.metadata.is_deleting());
    let events: Vec<FinalizerEvent> = seen(&log).iter().map(|s| s.event).collect();
    assert_eq!(events, [FinalizerEvent::Apply, FinalizerEvent::Cleanup]);

    // The person removes theirs; the object goes, and nothing more is reconciled.
    let mut last = obj.clone();
    last.metadata.finalizers.clear();
    store
        .update(last, W)
        .await
        .expect("remove the last finalizer");
    tokio::time::sleep(secs(10.0)).await;
    assert!(store.get(pkg(), "p").await.unwrap_err().is_not_found());
    assert_eq!(seen(&log).len(), 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn cleanup_runs_even_when_apply_never_did() {
    // The object got our finalizer and was deleted while the controller was not running.
    const OURS: &str = "test.startos.dev/cleanup";
    let log = Log::default();
    let fake = Fake::new(Some(finalizing(OURS, log.clone(), None)));
    fake.script("p", vec![Act::Body]);
    let store = test_store(None);
    store
        .create(with_finalizers("p", &[OURS]), W)
        .await
        .expect("create");
    let deleted = store
        .delete(pkg(), "p", &Preconditions::default(), W)
        .await
        .expect("delete");
    assert!(matches!(deleted, Deleted::Pending(_)));
    let mut h = Harness::start(store.clone(), &[], &[], config(), fake.clone()).await;
    wait_for_object(&*store, "p", "the object to go", |o| o.is_none()).await;
    tokio::time::sleep(secs(10.0)).await;
    let events: Vec<FinalizerEvent> = seen(&log).iter().map(|s| s.event).collect();
    assert_eq!(events, [FinalizerEvent::Cleanup]);
    assert_eq!(fake.calls().len(), 1, "{:#?}", fake.calls());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn racing_writers_never_lose_a_finalizer() {
    // Two controllers with their own finalizers and a person removing theirs, all from the
    // same copy of the object: the first write wins, the others get a Conflict and retry
    // on a fresh copy. Then both controllers clean up at once, again from one copy.
    const A: &str = "a.startos.dev/cleanup";
    const B: &str = "b.startos.dev/cleanup";
    let store = test_store(None);
    let created = store
        .create(with_finalizers("p", &[PERSON]), W)
        .await
        .expect("create");
    let adding = Arc::new(Barrier::new(3));
    let cleaning = Arc::new(Barrier::new(2));
    let race = || {
        Arc::new(Race {
            adding: adding.clone(),
            cleaning: cleaning.clone(),
            waited_add: AtomicBool::new(false),
            waited_clean: AtomicBool::new(false),
        })
    };
    let (log_a, log_b) = (Log::default(), Log::default());
    let fake_a = Fake::new(Some(finalizing(A, log_a.clone(), Some(race()))));
    let fake_b = Fake::new(Some(finalizing(B, log_b.clone(), Some(race()))));
    fake_a.script("p", vec![Act::Body]);
    fake_b.script("p", vec![Act::Body]);
    let mut ha = Harness::start_on(store.clone(), "ctrl-a", &[], config(), fake_a.clone());
    let mut hb = Harness::start_on(store.clone(), "ctrl-b", &[], config(), fake_b.clone());
    let person = tokio::spawn({
        let (store, adding) = (store.clone(), adding.clone());
        let mut copy = created.clone();
        async move {
            adding.wait().await;
            let mut tries = 0;
            loop {
                tries += 1;
                copy.metadata.finalizers.retain(|f| f != PERSON);
                match store.update(copy.clone(), W).await {
                    Ok(_) => return tries,
                    Err(e) if e.is_conflict() => {
                        copy = store.get(pkg(), "p").await.expect("get");
                    }
                    Err(e) => panic!("the person's update failed: {e}"),
                }
            }
        }
    });
    let person_tries = tokio::time::timeout(PATIENCE, person)
        .await
        .expect("the person finishes")
        .expect("the person does not panic");
    let want: BTreeSet<&str> = [A, B].into();
    wait_for_object(
        &*store,
        "p",
        "both controllers' finalizers and not the person's",
        |o| {
            o.is_some_and(|o| {
                o.metadata
                    .finalizers
                    .iter()
                    .map(String::as_str)
                    .collect::<BTreeSet<_>>()
                    == want
            })
        },
    )
    .await;
    fake_a.wait_until("A applied", |r| r.ended() >= 2).await;
    fake_b.wait_until("B applied", |r| r.ended() >= 2).await;
    let conflicts = |f: &Fake| {
        f.calls()
            .iter()
            .filter(|c| c.outcome == Outcome::Err("conflict"))
            .count()
    };
    let losers = conflicts(&fake_a) + conflicts(&fake_b) + (person_tries - 1);
    assert!(
        losers >= 2,
        "three writers from one copy: two must lose once"
    );

    store
        .delete(pkg(), "p", &Preconditions::default(), W)
        .await
        .expect("delete");
    wait_for_object(&*store, "p", "the object to go", |o| o.is_none()).await;
    for log in [&log_a, &log_b] {
        let events: Vec<FinalizerEvent> = seen(log).iter().map(|s| s.event).collect();
        assert_eq!(events.first(), Some(&FinalizerEvent::Apply), "{events:?}");
        assert_eq!(events.last(), Some(&FinalizerEvent::Cleanup), "{events:?}");
    }
    assert!(
        conflicts(&fake_a) + conflicts(&fake_b) > losers - (person_tries - 1),
        "the cleanups raced too"
    );
    ha.stop().await;
    hb.stop().await;

    // Replay the object's whole history: no write ever dropped someone else's finalizer
    // or brought back the person's.
    let mut history = store
        .watch(Some(pkg()), created.metadata.resource_version.as_deref())
        .await
        .expect("replay");
    let mut prev: BTreeSet<String> = [PERSON.to_owned()].into();
    let mut steps = 0;
    loop {
        let ev = tokio::time::timeout(PATIENCE, history.next())
            .await
            .expect("history")
            .expect("not the end")
            .expect("an event");
        if ev.object.name() != "p" {
            continue;
        }
        if ev.type_ == EventType::Deleted {
            break;
        }
        let next: BTreeSet<String> = ev.object.metadata.finalizers.iter().cloned().collect();
        let removed: Vec<&String> = prev.difference(&next).collect();
        let added: Vec<&String> = next.difference(&prev).collect();
        let deleting = ev.object.metadata.is_deleting();
        assert!(removed.len() <= 1, "one write removed {removed:?}");
        if !deleting {
            assert!(
                removed.iter().all(|f| *f == PERSON),
                "a controller's finalizer went before deletion: {prev:?} -> {next:?}"
            );
        }
        assert!(
            !added.iter().any(|f| *f == PERSON),
            "the person's finalizer came back: {prev:?} -> {next:?}"
        );
        prev = next;
        steps += 1;
    }
    assert!(
        steps >= 4,
        "added A, added B, removed the person's, deleting, ..."
    );
}

// ---------------------------------------------------------------------------------------
// Status written only on change.

#[derive(Clone, Copy, Debug)]
enum Helper {
    /// `update_status` on a typed resource.
    Typed,
    /// `update_conditions` on the dynamic object.
    Conditions,
}

/// Reports `Ready` (from `ready`) every call, stamped with a different time every call
/// (1 s after the epoch per call) so a re-stamp would show.
fn reporting(helper: Helper, ready: Arc<AtomicBool>, calls: Arc<AtomicU32>) -> Body {
    Arc::new(move |obj: Arc<Object>, ctx: Context| {
        let n = calls.fetch_add(1, SeqCst) + 1;
        let cond = Condition::new(
            "Ready",
            ConditionStatus::from_bool(ready.load(SeqCst)),
            "Computed",
            "",
            stamp(n),
        );
        async move {
            match helper {
                Helper::Typed => {
                    let res = Resource::<PackageSpec>::from_object(&obj)
                        .map_err(|e| ReconcileError::Terminal(e.to_string()))?;
                    update_status(&*ctx.store, &res, |s| {
                        set_condition(&mut s.conditions, cond);
                    })
                    .await?;
                }
                Helper::Conditions => {
                    update_conditions(&*ctx.store, &obj, &[cond]).await?;
                }
            }
            Ok(Requeue::After(secs(1.0)))
        }
        .boxed()
    })
}

fn stamp(n: u32) -> Time {
    chrono::DateTime::from_timestamp(1_700_000_000 + i64::from(n), 0).expect("a time")
}

async fn status_only_on_change(helper: Helper) {
    let (ready, calls) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU32::new(0)));
    let fake = Fake::new(Some(reporting(helper, ready.clone(), calls.clone())));
    fake.script("p", vec![Act::Body]);
    let store = test_store(None);
    let mut h = Harness::start(store.clone(), &["p"], &[], config(), fake.clone()).await;
    fake.wait_until("six calls", |r| r.ended() >= 6).await;
    let ready_of = |o: &Object| find_condition(&o.conditions(), "Ready").cloned();
    assert_eq!(
        status_writes(&store),
        1,
        "{helper:?}: one write for one status"
    );
    let obj = store.get(pkg(), "p").await.expect("get");
    let cond = ready_of(&obj).expect("Ready");
    assert_eq!(cond.status, ConditionStatus::True);
    assert_eq!(
        cond.last_transition_time,
        stamp(1),
        "lastTransitionTime stays"
    );
    // The write comes back as a change and costs one more reconcile, which writes
    // nothing (so no storm); then one call a second.
    let starts: Vec<i64> = fake.calls().iter().map(|c| ms(c.start)).collect();
    assert_eq!(starts, [0, 0, 1000, 2000, 3000, 4000]);

    // A flip is one more write, and only then does the time move.
    ready.store(false, SeqCst);
    let flip = calls.load(SeqCst) + 1;
    fake.wait_until("three more calls", |r| r.ended() >= 9)
        .await;
    assert_eq!(status_writes(&store), 2, "{helper:?}");
    let cond = ready_of(&store.get(pkg(), "p").await.expect("get")).expect("Ready");
    assert_eq!(cond.status, ConditionStatus::False);
    assert_eq!(cond.last_transition_time, stamp(flip));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn typed_status_is_written_only_when_it_changes() {
    status_only_on_change(Helper::Typed).await;
}

#[tokio::test(start_paused = true)]
async fn conditions_are_written_only_when_they_change() {
    status_only_on_change(Helper::Conditions).await;
}

// ---------------------------------------------------------------------------------------
// Events and metrics.

#[tokio::test(start_paused = true)]
async fn identical_events_fold_into_one_series() {
    let store: Arc<dyn Store> = test_store(None);
    let p = store.create(package("p", "^1.0"), W).await.expect("create");
    let q = store.create(package("q", "^1.0"), W).await.expect("create");
    let recorder = Recorder::new(store.clone(), "test", Clock::system());
    for _ in 0..5 {
        recorder
            .publish(&p, EventKind::Warning, "PullFailed", "registry unreachable")
            .await
            .expect("publish");
    }
    recorder
        .publish(&p, EventKind::Warning, "PullFailed", "signature mismatch")
        .await
        .expect("publish");
    recorder
        .publish(&q, EventKind::Warning, "PullFailed", "registry unreachable")
        .await
        .expect("publish");
    let events = store
        .list(kind_by_name("Event").expect("the Event kind"))
        .await
        .expect("list events");
    let mut series: Vec<(String, String, u32)> = events
        .items
        .iter()
        .map(|o| {
            let ev = Resource::<EventSpec>::from_object(o).expect("an Event");
            (ev.spec.involved_object.name, ev.spec.message, ev.spec.count)
        })
        .collect();
    series.sort();
    assert_eq!(
        series,
        [
            ("p".into(), "registry unreachable".into(), 5),
            ("p".into(), "signature mismatch".into(), 1),
            ("q".into(), "registry unreachable".into(), 1),
        ]
    );
    let folded = events
        .items
        .iter()
        .find(|o| {
            o.metadata.name
                == controllers::runtime::series_name(
                    &p,
                    EventKind::Warning,
                    "PullFailed",
                    "registry unreachable",
                    "test",
                )
        })
        .expect("the series is named by its key");
    assert_eq!(
        folded.metadata.owner_references[0].uid,
        p.metadata.uid.clone().expect("uid"),
        "owned by the object, so it goes with it"
    );
}

/// Publishes an event and fails terminally, half a minute after it was called.
#[derive(Debug)]
struct StampsAndFails;

#[async_trait]
impl Reconciler for StampsAndFails {
    async fn reconcile(&self, obj: Arc<Object>, ctx: &Context) -> ReconcileResult {
        tokio::time::sleep(secs(30.0)).await;
        ctx.events
            .publish(&obj, EventKind::Warning, "Broken", "cannot go on")
            .await?;
        Err(ReconcileError::Terminal("cannot go on".into()))
    }
}

#[tokio::test(start_paused = true)]
async fn events_and_stalled_are_stamped_by_the_injected_clock() {
    use chrono::TimeZone;
    let start = chrono::Utc
        .with_ymd_and_hms(2001, 2, 3, 4, 5, 6)
        .single()
        .expect("a valid time");
    let store = test_store(None);
    store.create(package("p", "^1.0"), W).await.expect("create");
    let shutdown = Shutdown::new();
    let controller = Controller::for_kind("clocked", pkg(), store.clone())
        .config(config())
        .clock(Clock::following_tokio(start));
    let run = tokio::spawn(Box::pin(controller.run(StampsAndFails, shutdown.clone())));
    wait_for_object(&*store, "p", "Stalled=True", |o| {
        o.and_then(|o| find_condition(&o.conditions(), "Stalled").cloned())
            .is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    shutdown.force();
    run.await.expect("run does not panic");
    let at = start + chrono::TimeDelta::seconds(30);
    let obj = store.get(pkg(), "p").await.expect("get");
    let conditions = obj.conditions();
    let stalled = find_condition(&conditions, "Stalled").expect("Stalled");
    assert_eq!(stalled.last_transition_time, at, "Stalled");
    let events = store
        .list(kind_by_name("Event").expect("the Event kind"))
        .await
        .expect("list events");
    let [event] = events.items.as_slice() else {
        panic!("one event: {:#?}", events.items)
    };
    let event = Resource::<EventSpec>::from_object(event).expect("an Event");
    assert_eq!(
        (event.spec.first_timestamp, event.spec.last_timestamp),
        (at, at),
        "the event's times"
    );
}

/// The value of one sample in the text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(start_paused = true)]
async fn metrics_count_reconciles_by_result() {
    let checked = check(Scenario {
        objects: &["bad", "busy", "flaky", "later", "ok"],
        scripts: vec![
            ("bad", vec![Act::Terminal("no")]),
            ("busy", vec![Act::Conflict, Act::OnChange]),
            ("flaky", vec![Act::Transient, Act::OnChange]),
            ("later", vec![Act::After(secs(HOUR))]),
        ],
        steps: vec![Advance(10.0)],
        expect: vec![
            call("bad", 0.0).failed("terminal"),
            call("busy", 0.0).failed("conflict"),
            call("flaky", 0.0).failed("transient"),
            call("later", 0.0),
            call("ok", 0.0),
            call("busy", 0.05),
            call("flaky", 1.0),
        ],
        ..Scenario::default()
    })
    .await;
    let mut registry = prometheus_client::registry::Registry::default();
    checked.metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    for (result, n) in [
        ("success", 3.0),
        ("requeue_after", 1.0),
        ("transient", 1.0),
        ("terminal", 1.0),
        ("conflict", 1.0),
    ] {
        let series = format!("startos_reconcile_total{{controller=\"test\",result=\"{result}\"}}");
        assert_eq!(sample(&text, &series), Some(n), "{series} in\n{text}");
    }
    assert_eq!(checked.metrics.reconcile_count("test"), 7);
    assert_eq!(
        sample(&text, "startos_active_workers{controller=\"test\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "startos_reconcile_duration_seconds_count{controller=\"test\"}"
        ),
        Some(7.0),
        "{text}"
    );
}
