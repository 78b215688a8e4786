//! The gc and validity controllers on real stores: data-driven scenarios (objects in →
//! conditions or deletions out), restart cases on the file store, and the storm detector.
//!
//! Nothing here sleeps to wait for a condition: "quiet" means no store event and no new
//! reconcile for a whole window, measured with a timeout on the store's watch stream (paused
//! time on the memory store, where the clock jumps as soon as everything idles; real time on
//! the file store, whose writes run on blocking threads).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use controllers::{
    gc::{self, Gc},
    runtime::{Cache, Context, Metrics, Reconciler, Recorder, Shutdown},
    validity::{self, Validity},
};
use crds::{
    API_VERSION, Condition, ConditionStatus, KindClass, KindInfo, Object, ObjectMeta,
    OwnerReference, condition::find_condition, kind_by_name,
};
use futures::StreamExt;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use store::{
    Clock, EngineConfig, EventType, FileStore, MemoryStore, Patch, Preconditions, Store,
    StoreError, Subresource, WriteOptions,
};
use tokio::{task::JoinHandle, time::Instant};

// === objects ===

fn kind(name: &str) -> &'static KindInfo {
    kind_by_name(name).unwrap_or_else(|| panic!("unknown kind {name}"))
}

fn object(kind: &str, name: &str, spec: Value) -> Object {
    Object {
        api_version: API_VERSION.into(),
        kind: kind.into(),
        metadata: ObjectMeta::named(name),
        spec,
        status: None,
    }
}

fn spec_of(kind: &str, name: &str) -> Value {
    match kind {
        "Package" => json!({"source": {"registry": "default", "version": "^1.0"}, "running": true}),
        "Container" => {
            json!({"package": name, "rootHash": format!("sha256:{}", "0".repeat(64)), "running": true})
        }
        "Volume" => json!({"package": name, "volumeId": "main"}),
        "Registry" => json!({"directory": "/srv/registry"}),
        // Only summarized, never stored: the shape does not matter.
        "Gateway" => json!({}),
        "Secret" => json!({"data": {"password": "hunter2"}}),
        "Event" => json!({
            "involvedObject": {"kind": "Package", "name": name},
            "type": "Normal", "reason": "Tested", "message": "m", "reportingController": "test",
            "count": 1, "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        }),
        other => panic!("no test spec for {other}"),
    }
}

fn owner_ref(kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: API_VERSION.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: false,
        block_owner_deletion: false,
    }
}

fn w() -> WriteOptions {
    WriteOptions::default()
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').expect("Kind/name")
}

/// Every object in the store, as `Kind/name`.
async fn keys(store: &dyn Store) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for k in crds::kinds() {
        for o in store.list(k).await?.items {
            out.insert(o.key());
        }
    }
    Ok(out)
}

fn summary(c: &Condition) -> String {
    format!("{}={:?}/{}", c.type_, c.status, c.reason)
}

fn conditions(obj: &Object) -> Vec<String> {
    obj.conditions().iter().map(summary).collect()
}

/// A condition written by "another controller" (as the package controller will).
async fn set_cond(
    store: &dyn Store,
    name: &str,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    generation: Option<i64>,
) -> Result<()> {
    set_conds(store, name, &[(type_, status, reason)], generation).await
}

/// Several conditions in one status write, so they are one change.
async fn set_conds(
    store: &dyn Store,
    name: &str,
    set: &[(&str, ConditionStatus, &str)],
    generation: Option<i64>,
) -> Result<()> {
    let mut obj = store.get(kind("Package"), name).await?;
    let mut conds = obj.conditions();
    for (type_, status, reason) in set {
        crds::set_condition(
            &mut conds,
            Condition::new(
                type_,
                *status,
                reason,
                format!("{reason} message"),
                chrono::Utc::now(),
            )
            .with_generation(generation),
        );
    }
    obj.set_conditions(&conds);
    store.update_status(obj, &w()).await?;
    Ok(())
}

/// What the package controller reports for a package that works.
const WORKING: &[(&str, ConditionStatus, &str)] = &[
    ("Installed", ConditionStatus::True, "Installed"),
    ("Running", ConditionStatus::True, "Running"),
    ("Healthy", ConditionStatus::True, "Healthy"),
];

// === running controllers and waiting for quiet ===

struct Running {
    shutdown: Shutdown,
    metrics: Metrics,
    registry: Registry,
    tasks: Vec<JoinHandle<()>>,
}

fn start(store: Arc<dyn Store>) -> Running {
    let shutdown = Shutdown::new();
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let tasks = vec![
        tokio::spawn(
            gc::controller(store.clone())
                .metrics(metrics.clone())
                .run(Gc, shutdown.clone()),
        ),
        tokio::spawn(
            validity::controller(store)
                .metrics(metrics.clone())
                .run(Validity, shutdown.clone()),
        ),
    ];
    Running {
        shutdown,
        metrics,
        registry,
        tasks,
    }
}

impl Running {
    fn reconciles(&self) -> u64 {
        self.metrics.reconcile_count(gc::NAME) + self.metrics.reconcile_count(validity::NAME)
    }

    /// Whether no key waits and no reconcile runs, as the exported gauges say.
    fn idle(&self) -> bool {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            return false;
        }
        text.lines()
            .filter(|l| {
                l.starts_with("startos_queue_depth{") || l.starts_with("startos_active_workers{")
            })
            .all(|l| l.ends_with(" 0"))
    }

    /// The reconcile count, and whether the controllers are idle.
    fn probe(&self) -> (u64, bool) {
        (self.reconciles(), self.idle())
    }

    /// Waits for quiet (see [`settle`]).
    async fn settle(&self, store: &dyn Store, window: Duration) -> Result<Settled> {
        settle(store, || self.probe(), window, Duration::from_secs(120)).await
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.begin();
        self.shutdown.force_after(Duration::from_secs(5));
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .context("a controller did not stop")??;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Settled {
    added: u64,
    modified: u64,
    deleted: u64,
}

impl Settled {
    fn count(&mut self, type_: EventType) {
        match type_ {
            EventType::Added => self.added += 1,
            EventType::Modified => self.modified += 1,
            EventType::Deleted => self.deleted += 1,
            EventType::Bookmark => {}
        }
    }

    fn changes(&self) -> u64 {
        self.added + self.modified + self.deleted
    }
}

/// The current revision as a resourceVersion to watch from.
async fn now_rv(store: &dyn Store) -> Result<String> {
    Ok(store.list(kind("Server")).await?.resource_version)
}

/// Waits until a whole `window` passes with no store event and no new reconcile, ending
/// with no key queued and no reconcile running (`probe` gives the reconcile count and
/// that); counts the events seen until then. Fails after `limit`.
async fn settle(
    store: &dyn Store,
    probe: impl Fn() -> (u64, bool),
    window: Duration,
    limit: Duration,
) -> Result<Settled> {
    let mut events = store.watch(None, Some(&now_rv(store).await?)).await?;
    let deadline = Instant::now() + limit;
    let mut seen = Settled::default();
    loop {
        let (before, _) = probe();
        match tokio::time::timeout(window, events.next()).await {
            Ok(Some(ev)) => seen.count(ev?.type_),
            Ok(None) => bail!("the watch ended"),
            Err(_) if probe() == (before, true) => return Ok(seen),
            Err(_) => {}
        }
        ensure!(
            Instant::now() < deadline,
            "still not quiet after {limit:?} ({seen:?})"
        );
    }
}

// === validity: the summary, data-driven ===

/// One object in, the conditions validity wants out (`Type=Status/Reason`, and a piece of
/// each message).
struct SummaryCase {
    name: &'static str,
    kind: &'static str,
    generation: i64,
    deleting: bool,
    finalizers: &'static [&'static str],
    /// Conditions already there: (type, status, reason, message, observedGeneration).
    existing: &'static [(
        &'static str,
        ConditionStatus,
        &'static str,
        &'static str,
        i64,
    )],
    want: &'static [(&'static str, &'static str)],
}

use ConditionStatus::{False, True, Unknown};

const SUMMARY_CASES: &[SummaryCase] = &[
    SummaryCase {
        name: "a fresh package is valid and up to date but not ready: nothing runs yet",
        kind: "Package",
        generation: 1,
        deleting: false,
        finalizers: &[],
        existing: &[],
        want: &[
            ("Valid=True/Valid", ""),
            ("Reconciling=False/UpToDate", ""),
            (
                "Ready=Unknown/NotReconciled",
                "waiting for the package controller to report Installed, Running, Healthy",
            ),
        ],
    },
    SummaryCase {
        name: "a package installed but not yet reported running waits for the rest",
        kind: "Package",
        generation: 2,
        deleting: false,
        finalizers: &[],
        existing: &[("Installed", True, "Installed", "", 2)],
        want: &[(
            "Ready=Unknown/NotReconciled",
            "waiting for the package controller to report Running, Healthy",
        )],
    },
    SummaryCase {
        name: "a package whose controller reports it works is ready",
        kind: "Package",
        generation: 2,
        deleting: false,
        finalizers: &[],
        existing: &[
            ("Installed", True, "Installed", "", 2),
            ("Running", True, "Running", "", 2),
            ("Healthy", True, "Healthy", "", 2),
        ],
        want: &[(
            "Ready=True/Ready",
            "Installed, Running, Healthy True, and no condition reports a failure",
        )],
    },
    SummaryCase {
        name: "a kind no controller acts on is never ready",
        kind: "Gateway",
        generation: 1,
        deleting: false,
        finalizers: &[],
        existing: &[],
        want: &[
            ("Valid=True/Valid", ""),
            (
                "Ready=Unknown/NotReconciled",
                "no controller acts on Gateway objects yet",
            ),
        ],
    },
    SummaryCase {
        name: "a fresh registry waits for its scan",
        kind: "Registry",
        generation: 1,
        deleting: false,
        finalizers: &[],
        existing: &[],
        want: &[(
            "Ready=Unknown/NotReconciled",
            "waiting for the registry controller to report Scanned",
        )],
    },
    SummaryCase {
        name: "a scanned registry is ready",
        kind: "Registry",
        generation: 1,
        deleting: false,
        finalizers: &[],
        existing: &[("Scanned", True, "Scanned", "3 packages", 1)],
        want: &[("Ready=True/Ready", "Scanned True")],
    },
    SummaryCase {
        name: "a registry whose directory is missing is not ready, and says why",
        kind: "Registry",
        generation: 1,
        deleting: false,
        finalizers: &[],
        existing: &[(
            "Scanned",
            False,
            "DirectoryMissing",
            "/srv/r does not exist",
            1,
        )],
        want: &[(
            "Ready=False/NotReady",
            "Scanned is False (DirectoryMissing): /srv/r does not exist",
        )],
    },
    SummaryCase {
        name: "a condition from an older generation means reconciling",
        kind: "Package",
        generation: 3,
        deleting: false,
        finalizers: &[],
        existing: &[
            ("Installed", True, "Installed", "", 2),
            ("Running", True, "Running", "", 3),
        ],
        want: &[
            ("Valid=True/Valid", ""),
            (
                "Reconciling=True/Progressing",
                "generation 3 not yet observed by: Installed",
            ),
            ("Ready=False/Progressing", "Installed"),
        ],
    },
    SummaryCase {
        name: "deleting waits on the finalizers, named",
        kind: "Package",
        generation: 2,
        deleting: true,
        finalizers: &["startos.dev/uninstall", "startos.dev/backup"],
        existing: &[],
        want: &[
            (
                "Reconciling=True/Deleting",
                "waiting on finalizers: startos.dev/uninstall, startos.dev/backup",
            ),
            ("Ready=False/Deleting", "startos.dev/uninstall"),
        ],
    },
    SummaryCase {
        name: "a broken file keeps the store's Valid=False and is not ready",
        kind: "Package",
        generation: 1,
        deleting: false,
        finalizers: &[],
        existing: &[(
            "Valid",
            False,
            "InvalidFile",
            "desired/packages/p.yaml: line 1 column 7: bad",
            1,
        )],
        want: &[
            ("Reconciling=False/UpToDate", ""),
            ("Ready=False/Invalid", "desired/packages/p.yaml: line 1"),
        ],
    },
    SummaryCase {
        name: "stalled is not ready",
        kind: "Package",
        generation: 1,
        deleting: false,
        finalizers: &[],
        existing: &[(
            "Stalled",
            True,
            "ReconcileFailed",
            "package: no such registry",
            1,
        )],
        want: &[("Ready=False/Stalled", "no such registry")],
    },
    SummaryCase {
        name: "a failing condition is not ready, and says why",
        kind: "Package",
        generation: 1,
        deleting: false,
        finalizers: &[],
        existing: &[
            ("Installed", False, "FetchFailed", "registry unreachable", 1),
            ("Healthy", Unknown, "Starting", "", 1),
        ],
        want: &[(
            "Ready=False/NotReady",
            "Installed is False (FetchFailed): registry unreachable; Healthy is Unknown (Starting)",
        )],
    },
    SummaryCase {
        name: "negative polarity False is fine; an old Stalled is not progress",
        kind: "Package",
        generation: 4,
        deleting: false,
        finalizers: &[],
        existing: &[
            ("Stalled", False, "Reconciled", "", 1),
            ("TasksPending", False, "NoTasks", "", 4),
            ("Installed", True, "Installed", "", 4),
            ("Running", True, "Running", "", 4),
            ("Healthy", True, "Healthy", "", 4),
        ],
        want: &[("Reconciling=False/UpToDate", ""), ("Ready=True/Ready", "")],
    },
    SummaryCase {
        name: "a secret only gets Valid",
        kind: "Secret",
        generation: 1,
        deleting: false,
        finalizers: &[],
        existing: &[],
        want: &[("Valid=True/Valid", "")],
    },
    SummaryCase {
        name: "a derived object only gets Valid",
        kind: "Container",
        generation: 5,
        deleting: true,
        finalizers: &["startos.dev/stop"],
        existing: &[("Running", False, "Stopped", "", 1)],
        want: &[("Valid=True/Valid", "")],
    },
];

#[test]
fn validity_summaries() {
    let now = chrono::Utc::now();
    for case in SUMMARY_CASES {
        let mut obj = object(case.kind, "p", spec_of(case.kind, "p"));
        obj.metadata.generation = Some(case.generation);
        obj.metadata.finalizers = case.finalizers.iter().map(|f| (*f).to_owned()).collect();
        if case.deleting {
            obj.metadata.deletion_timestamp = Some(now);
        }
        let existing: Vec<Condition> = case
            .existing
            .iter()
            .map(|(t, s, r, m, g)| Condition::new(t, *s, r, *m, now).with_generation(Some(*g)))
            .collect();
        obj.set_conditions(&existing);
        let got = validity::summarize(&obj, kind(case.kind), now);
        let got_summary: Vec<String> = got.iter().map(summary).collect();
        for (want, message) in case.want {
            let c = got
                .iter()
                .find(|c| summary(c) == *want)
                .unwrap_or_else(|| panic!("{}: want {want}, got {got_summary:?}", case.name));
            assert!(
                c.message.contains(message),
                "{}: {want} message {:?} lacks {message:?}",
                case.name,
                c.message
            );
            assert_eq!(
                c.observed_generation,
                Some(case.generation),
                "{}: {want}",
                case.name
            );
        }
        if kind(case.kind).class != KindClass::User {
            assert_eq!(got.len(), 1, "{}: {got_summary:?}", case.name);
        }
        // A kept Valid=False is not rewritten.
        if case
            .existing
            .iter()
            .any(|(t, s, ..)| *t == "Valid" && *s == False)
        {
            assert!(
                got.iter().all(|c| c.type_ != "Valid"),
                "{}: {got_summary:?}",
                case.name
            );
        }
    }
}

/// The readiness each kind declares is consistent: what Ready requires is among what the
/// controller owns, only user kinds name a controller, and the names are the running
/// controllers' own (a typo would leave a kind forever not ready).
#[test]
fn readiness_declarations_are_consistent() {
    for k in crds::kinds() {
        let r = &k.readiness;
        for t in r.requires {
            assert!(
                r.owns.contains(t),
                "{}: requires {t} it does not own",
                k.kind
            );
        }
        if k.class != KindClass::User {
            assert!(r.controller.is_none(), "{}: not a user kind", k.kind);
        }
        if r.controller.is_none() {
            assert!(r.owns.is_empty() && r.requires.is_empty(), "{}", k.kind);
        }
    }
    assert_eq!(
        kind("Registry").readiness.controller,
        Some(controllers::registry::NAME)
    );
    assert_eq!(kind("Package").readiness.controller, Some("package"));
}

// === validity: one write per change, then nothing ===

fn context(store: Arc<dyn Store>) -> Context {
    Context {
        store: store.clone(),
        cache: Cache::default(),
        events: Recorder::new(store, validity::NAME, Clock::system()),
        controller: validity::NAME,
        clock: Clock::system(),
    }
}

/// Reconciles `key` by hand; returns whether the store's revision moved (a write).
async fn reconcile_once(store: &Arc<dyn Store>, key: &str) -> Result<bool> {
    let (k, name) = split(key);
    let before = now_rv(&**store).await?;
    let obj = store.get(kind(k), name).await?;
    Validity
        .reconcile(Arc::new(obj), &context(store.clone()))
        .await
        .map_err(|e| anyhow::anyhow!("reconcile {key}: {e}"))?;
    Ok(now_rv(&**store).await? != before)
}

#[tokio::test]
async fn validity_stamps_conditions_with_the_context_clock() -> Result<()> {
    use chrono::TimeZone;
    let at = chrono::Utc
        .with_ymd_and_hms(2001, 2, 3, 4, 5, 6)
        .single()
        .ok_or_else(|| anyhow::anyhow!("not a time"))?;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let obj = store
        .create(object("Package", "p", spec_of("Package", "p")), &w())
        .await?;
    let ctx = Context {
        clock: Clock::fixed(at),
        ..context(store.clone())
    };
    Validity
        .reconcile(Arc::new(obj), &ctx)
        .await
        .map_err(|e| anyhow::anyhow!("reconcile: {e}"))?;
    let conditions = store.get(kind("Package"), "p").await?.conditions();
    assert!(!conditions.is_empty());
    for c in conditions {
        assert_eq!(c.last_transition_time, at, "{}", c.type_);
    }
    Ok(())
}

#[tokio::test]
async fn validity_second_reconcile_writes_nothing() -> Result<()> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    for key in [
        "Package/p",
        "Secret/s",
        "Container/c",
        "Volume/v",
        "Event/e",
    ] {
        let (k, name) = split(key);
        store
            .create(object(k, name, spec_of(k, name)), &w())
            .await?;
        assert!(
            reconcile_once(&store, key).await?,
            "{key}: first visit writes"
        );
        assert!(
            !reconcile_once(&store, key).await?,
            "{key}: the reconcile after our own write must write nothing"
        );
        let obj = store.get(kind(k), name).await?;
        assert_eq!(
            obj.status
                .as_ref()
                .and_then(|s| s.get("observedGeneration")),
            Some(&json!(1)),
            "{key}"
        );
        let valid = find_condition(&obj.conditions(), "Valid").cloned();
        assert!(
            valid.is_some_and(|c| c.status == True && c.reason == "Valid"),
            "{key}: {:?}",
            conditions(&obj)
        );
    }
    // A spec change: one write (observedGeneration and the conditions), then nothing.
    store
        .patch(
            kind("Package"),
            "p",
            Patch::Merge(json!({"spec": {"running": false}})),
            Subresource::Main,
            &w(),
        )
        .await?;
    assert!(reconcile_once(&store, "Package/p").await?);
    assert!(!reconcile_once(&store, "Package/p").await?);
    let p = store.get(kind("Package"), "p").await?;
    assert_eq!(p.status.as_ref().unwrap()["observedGeneration"], json!(2));
    assert!(
        p.conditions()
            .iter()
            .all(|c| c.observed_generation == Some(2)),
        "{:?}",
        p.conditions()
    );
    // The secret's values never reach its status.
    let s = store.get(kind("Secret"), "s").await?;
    assert!(!serde_json::to_string(&s.status)?.contains("hunter2"));
    Ok(())
}

// === validity: following other controllers, running ===

#[tokio::test(start_paused = true)]
async fn validity_follows_other_controllers() -> Result<()> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let running = start(store.clone());
    let window = Duration::from_secs(5);
    let pkg = kind("Package");

    /// After each external change: the Package's conditions must include `want`, and
    /// validity may have written at most once and reconciled at most twice per controller.
    async fn step(
        store: &Arc<dyn Store>,
        running: &Running,
        what: &str,
        want: &[&str],
    ) -> Result<Object> {
        let before = running.metrics.reconcile_count(validity::NAME);
        let settled = running.settle(&**store, Duration::from_secs(5)).await?;
        let reconciles = running.metrics.reconcile_count(validity::NAME) - before;
        let obj = store.get(kind("Package"), "p").await?;
        let got = conditions(&obj);
        for w in want {
            ensure!(got.iter().any(|g| g == w), "{what}: want {w}, got {got:?}");
        }
        ensure!(
            settled.modified <= 1,
            "{what}: validity wrote {} times for one change",
            settled.modified
        );
        ensure!(
            reconciles <= 2,
            "{what}: {reconciles} reconciles for one change"
        );
        Ok(obj)
    }

    store
        .create(object("Package", "p", spec_of("Package", "p")), &w())
        .await?;
    let obj = step(
        &store,
        &running,
        "created",
        &[
            "Valid=True/Valid",
            "Reconciling=False/UpToDate",
            "Ready=Unknown/NotReconciled",
        ],
    )
    .await?;
    assert_eq!(obj.status.unwrap()["observedGeneration"], json!(1));

    set_cond(&*store, "p", "Installed", False, "Fetching", Some(1)).await?;
    step(
        &store,
        &running,
        "installing",
        &["Installed=False/Fetching", "Ready=False/NotReady"],
    )
    .await?;
    set_cond(&*store, "p", "Installed", True, "Installed", Some(1)).await?;
    step(
        &store,
        &running,
        "installed, not yet running",
        &["Ready=Unknown/NotReconciled"],
    )
    .await?;
    set_conds(&*store, "p", WORKING, Some(1)).await?;
    step(
        &store,
        &running,
        "running and healthy",
        &["Ready=True/Ready"],
    )
    .await?;

    store
        .patch(
            pkg,
            "p",
            Patch::Merge(json!({"spec": {"running": false}})),
            Subresource::Main,
            &w(),
        )
        .await?;
    let obj = step(
        &store,
        &running,
        "spec changed",
        &["Reconciling=True/Progressing", "Ready=False/Progressing"],
    )
    .await?;
    assert_eq!(obj.status.unwrap()["observedGeneration"], json!(2));
    set_conds(&*store, "p", WORKING, Some(2)).await?;
    step(
        &store,
        &running,
        "caught up",
        &["Reconciling=False/UpToDate", "Ready=True/Ready"],
    )
    .await?;

    set_cond(&*store, "p", "Stalled", True, "ReconcileFailed", Some(2)).await?;
    step(&store, &running, "stalled", &["Ready=False/Stalled"]).await?;
    set_cond(&*store, "p", "Stalled", False, "Reconciled", Some(2)).await?;
    step(&store, &running, "unstalled", &["Ready=True/Ready"]).await?;

    // The store's Valid=False for a broken file is kept; its fix makes it ready again.
    set_cond(&*store, "p", "Valid", False, "InvalidFile", Some(2)).await?;
    step(
        &store,
        &running,
        "broken file",
        &["Valid=False/InvalidFile", "Ready=False/Invalid"],
    )
    .await?;
    set_cond(&*store, "p", "Valid", True, "Valid", Some(2)).await?;
    step(&store, &running, "fixed file", &["Ready=True/Ready"]).await?;

    // Deletion waits on a finalizer and says so.
    store
        .patch(
            pkg,
            "p",
            Patch::Merge(json!({"metadata": {"finalizers": ["startos.dev/uninstall"]}})),
            Subresource::Main,
            &w(),
        )
        .await?;
    running.settle(&*store, window).await?;
    store
        .delete(pkg, "p", &Preconditions::default(), &w())
        .await?;
    let obj = step(
        &store,
        &running,
        "deleting",
        &["Reconciling=True/Deleting", "Ready=False/Deleting"],
    )
    .await?;
    let reconciling = find_condition(&obj.conditions(), "Reconciling").cloned();
    assert!(
        reconciling.is_some_and(|c| c.message.contains("startos.dev/uninstall")),
        "{:?}",
        obj.conditions()
    );
    store
        .patch(
            pkg,
            "p",
            Patch::Merge(json!({"metadata": {"finalizers": []}})),
            Subresource::Main,
            &w(),
        )
        .await?;
    running.settle(&*store, window).await?;
    assert!(store.get(pkg, "p").await.unwrap_err().is_not_found());
    running.stop().await
}

// === gc, data-driven ===

/// How a test object names an owner.
#[derive(Clone, Copy, Debug)]
enum Ref {
    /// The object `Kind/name` made earlier in the case, with its real uid.
    Live(&'static str),
    /// `Kind/name` with a uid that never existed (the owner went while nothing watched).
    Dead(&'static str),
    /// The name of an existing object but an older uid: a re-created owner.
    OldUid(&'static str),
    /// The real uid of `Kind/name`, under another kind: the uid is what counts.
    WrongKind(&'static str),
}

struct GcCase {
    name: &'static str,
    /// Created in order: `Kind/name`, its owners, and whether it carries a finalizer.
    objects: &'static [(&'static str, &'static [Ref], bool)],
    /// What is left once gc is done; `(deleting)` marks an object waiting on finalizers.
    remaining: &'static [&'static str],
}

const GC_CASES: &[GcCase] = &[
    GcCase {
        name: "no owners: never collected",
        objects: &[("Container/c", &[], false)],
        remaining: &["Container/c"],
    },
    GcCase {
        name: "a live owner keeps its dependent",
        objects: &[
            ("Package/p", &[], false),
            ("Container/c", &[Ref::Live("Package/p")], false),
        ],
        remaining: &["Package/p", "Container/c"],
    },
    GcCase {
        name: "an owner that is gone: the dependent goes",
        objects: &[
            ("Package/p", &[], false),
            ("Container/c", &[Ref::Dead("Package/gone")], false),
        ],
        remaining: &["Package/p"],
    },
    GcCase {
        name: "one live owner of two is enough",
        objects: &[
            ("Package/p", &[], false),
            (
                "Volume/v",
                &[Ref::Dead("Package/gone"), Ref::Live("Package/p")],
                false,
            ),
        ],
        remaining: &["Package/p", "Volume/v"],
    },
    GcCase {
        name: "a re-created owner with the same name does not adopt",
        objects: &[
            ("Package/p", &[], false),
            ("Container/c", &[Ref::OldUid("Package/p")], false),
        ],
        remaining: &["Package/p"],
    },
    GcCase {
        name: "owners match by uid, not by kind and name",
        objects: &[
            ("Package/p", &[], false),
            ("Container/c", &[Ref::WrongKind("Package/p")], false),
        ],
        remaining: &["Package/p", "Container/c"],
    },
    GcCase {
        name: "a chain goes together (gc deletes the top, the store cascades)",
        objects: &[
            ("Volume/v", &[Ref::Dead("Package/gone")], false),
            ("Container/c", &[Ref::Live("Volume/v")], false),
            ("Event/e", &[Ref::Live("Container/c")], false),
        ],
        remaining: &[],
    },
    GcCase {
        name: "the dependent's finalizers are honoured",
        objects: &[("Container/c", &[Ref::Dead("Package/gone")], true)],
        remaining: &["Container/c (deleting)"],
    },
];

/// Creates the case's objects in `store`; returns nothing but fails clearly.
async fn create_case(store: &dyn Store, case: &GcCase) -> Result<()> {
    for (key, refs, finalizer) in case.objects {
        let (k, name) = split(key);
        let mut obj = object(k, name, spec_of(k, name));
        for r in *refs {
            let (target, mut kind_name, uid) = match *r {
                Ref::Live(t) | Ref::WrongKind(t) => {
                    let (tk, tn) = split(t);
                    let live = store.get(kind(tk), tn).await?;
                    (t, tk, live.metadata.uid.unwrap_or_default())
                }
                Ref::Dead(t) | Ref::OldUid(t) => (t, split(t).0, "0000-never-existed".into()),
            };
            if matches!(r, Ref::WrongKind(_)) {
                kind_name = "Volume";
            }
            obj.metadata
                .owner_references
                .push(owner_ref(kind_name, split(target).1, &uid));
        }
        if *finalizer {
            obj.metadata.finalizers = vec!["startos.dev/test".into()];
        }
        store
            .create(obj, &w())
            .await
            .with_context(|| format!("{}: creating {key}", case.name))?;
    }
    Ok(())
}

async fn remaining(store: &dyn Store) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for key in keys(store).await? {
        let (k, name) = split(&key);
        let obj = store.get(kind(k), name).await?;
        out.insert(if obj.metadata.is_deleting() {
            format!("{key} (deleting)")
        } else {
            key
        });
    }
    Ok(out)
}

/// The objects exist before gc starts, as after a restart: its first pass cleans up.
#[tokio::test(start_paused = true)]
async fn gc_scenarios_at_start() -> Result<()> {
    for case in GC_CASES {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        create_case(&*store, case).await?;
        let running = start(store.clone());
        running.settle(&*store, Duration::from_secs(5)).await?;
        let want: BTreeSet<String> = case.remaining.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(remaining(&*store).await?, want, "{}", case.name);
        running.stop().await?;
    }
    Ok(())
}

/// The same cases with gc already running: each dependent is judged when it appears.
#[tokio::test(start_paused = true)]
async fn gc_scenarios_while_running() -> Result<()> {
    for case in GC_CASES {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let running = start(store.clone());
        running.settle(&*store, Duration::from_secs(5)).await?;
        create_case(&*store, case).await?;
        running.settle(&*store, Duration::from_secs(5)).await?;
        let want: BTreeSet<String> = case.remaining.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(remaining(&*store).await?, want, "{}", case.name);
        running.stop().await?;
    }
    Ok(())
}

/// A stale cache never makes gc delete a dependent whose owner exists: the store is asked.
#[tokio::test]
async fn gc_confirms_with_the_store_before_deleting() -> Result<()> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let owner = store
        .create(object("Package", "p", spec_of("Package", "p")), &w())
        .await?;
    let mut dep = object("Container", "c", spec_of("Container", "c"));
    dep.metadata.owner_references = vec![owner_ref(
        "Package",
        "p",
        owner.metadata.uid.as_deref().unwrap(),
    )];
    let dep = store.create(dep, &w()).await?;
    // An empty cache: as if the owner's reflector lagged behind the dependent's.
    let ctx = Context {
        store: store.clone(),
        cache: Cache::default(),
        events: Recorder::new(store.clone(), gc::NAME, Clock::system()),
        controller: gc::NAME,
        clock: Clock::system(),
    };
    Gc.reconcile(Arc::new(dep.clone()), &ctx)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.get(kind("Container"), "c").await?;
    // A dependent created for an owner that is gone (the store cascaded the first one).
    store
        .delete(kind("Package"), "p", &Preconditions::default(), &w())
        .await?;
    assert!(
        store
            .get(kind("Container"), "c")
            .await
            .unwrap_err()
            .is_not_found(),
        "the store cascades by itself"
    );
    let dep = store.create(dep_without_rv(dep), &w()).await?;
    Gc.reconcile(Arc::new(dep), &ctx)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(
        store
            .get(kind("Container"), "c")
            .await
            .unwrap_err()
            .is_not_found()
    );
    Ok(())
}

fn dep_without_rv(mut obj: Object) -> Object {
    obj.metadata.resource_version = None;
    obj.status = None;
    obj
}

// === restart on the file store ===

fn file_config() -> EngineConfig {
    EngineConfig::default()
}

/// Status records whose object is gone: a user object whose desired/ file was removed
/// while startd was down is deleted by the store's first scan (with its dependents), and a
/// derived object whose owner vanished entirely (file and record) is deleted by gc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_status_record_is_deleted_at_start() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    {
        let store = FileStore::open(root, file_config()).await?;
        for name in ["p", "q", "keep"] {
            store
                .create(object("Package", name, spec_of("Package", name)), &w())
                .await?;
        }
        for (k, name, owner) in [
            ("Container", "c", "p"),
            ("Volume", "v", "q"),
            ("Container", "kc", "keep"),
        ] {
            let uid = store
                .get(kind("Package"), owner)
                .await?
                .metadata
                .uid
                .unwrap();
            let mut obj = object(k, name, spec_of(k, name));
            obj.metadata.owner_references = vec![owner_ref("Package", owner, &uid)];
            store.create(obj, &w()).await?;
        }
    }
    // While startd is down: p's file is removed (its record stays); q vanishes entirely.
    for path in [
        "desired/packages/p.yaml",
        "desired/packages/q.yaml",
        "status/packages/q.json",
    ] {
        std::fs::remove_file(root.join(path)).with_context(|| path.to_owned())?;
    }
    assert!(root.join("status/packages/p.json").is_file());
    assert!(root.join("status/volumes/v.json").is_file());

    let store = Arc::new(FileStore::open(root, file_config()).await?);
    let dyn_store: Arc<dyn Store> = store.clone();
    let running = start(dyn_store.clone());
    running
        .settle(&*dyn_store, Duration::from_millis(1500))
        .await?;
    assert_eq!(
        keys(&*dyn_store).await?,
        ["Container/kc", "Package/keep"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>()
    );
    for gone in [
        "status/packages/p.json",
        "status/containers/c.json",
        "status/volumes/v.json",
    ] {
        assert!(!root.join(gone).exists(), "{gone} must be deleted");
    }
    let keep = dyn_store.get(kind("Package"), "keep").await?;
    assert!(
        conditions(&keep).contains(&"Ready=Unknown/NotReconciled".to_owned()),
        "{:?}",
        conditions(&keep)
    );
    running.stop().await
}

/// A status write on a Secret (validity gives every secret `Valid`) must keep its values on
/// disk: the record under secrets/ is the only copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validity_on_a_secret_keeps_its_values_on_disk() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    {
        let store: Arc<dyn Store> = Arc::new(FileStore::open(tmp.path(), file_config()).await?);
        store
            .create(object("Secret", "s", spec_of("Secret", "s")), &w())
            .await?;
        assert!(reconcile_once(&store, "Secret/s").await?);
        assert_eq!(store.reveal_secret("s").await?.data["password"], "hunter2");
    }
    let store = FileStore::open(tmp.path(), file_config()).await?;
    let s = store.get(kind("Secret"), "s").await?;
    assert!(conditions(&s).contains(&"Valid=True/Valid".to_owned()));
    assert_eq!(
        store.reveal_secret("s").await?.data["password"],
        "hunter2",
        "the value survives a status write and a restart"
    );
    let on_disk = std::fs::read_to_string(tmp.path().join("secrets/s.json"))?;
    assert!(on_disk.contains("hunter2"), "{on_disk}");
    Ok(())
}

// === the storm detector ===

const STORM_OBJECTS: usize = 1000;

/// 1,000 Packages applied through the file store while gc and validity run: every object
/// ends up with Valid and Ready (Unknown: no package controller runs here), validity writes each status exactly once, reconciles per
/// change stay at most 2 on average, and once the system is quiet nothing reconciles again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_detector_1000_packages() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let store = Arc::new(FileStore::open(tmp.path(), file_config()).await?);
    let dyn_store: Arc<dyn Store> = store.clone();
    let running = start(dyn_store.clone());
    running
        .settle(&*dyn_store, Duration::from_millis(500))
        .await?;
    let base_reconciles = (
        running.metrics.reconcile_count(validity::NAME),
        running.metrics.reconcile_count(gc::NAME),
    );

    // Count every change from here on, concurrently with the applies.
    let mut events = dyn_store
        .watch(None, Some(&now_rv(&*dyn_store).await?))
        .await?;
    let started = Instant::now();
    let applier = {
        let store = dyn_store.clone();
        tokio::spawn(async move {
            for i in 0..STORM_OBJECTS {
                let name = format!("pkg-{i:04}");
                let obj = object("Package", &name, spec_of("Package", &name));
                store
                    .patch(
                        kind("Package"),
                        &name,
                        Patch::Apply(Box::new(obj)),
                        Subresource::Main,
                        &WriteOptions::default(),
                    )
                    .await?;
            }
            Ok::<_, StoreError>(())
        })
    };
    let reconciles = || running.reconciles();
    let window = Duration::from_secs(2);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = Settled::default();
    let mut applied = false;
    let mut applier = Some(applier);
    loop {
        let (before, _) = running.probe();
        match tokio::time::timeout(window, events.next()).await {
            Ok(Some(ev)) => seen.count(ev?.type_),
            Ok(None) => bail!("the watch ended"),
            Err(_) if applied && running.probe() == (before, true) => break,
            Err(_) => {}
        }
        // A storm shows as more status writes than objects: fail at once, not at the limit.
        ensure!(
            seen.modified <= STORM_OBJECTS as u64,
            "reconcile storm: {} status writes for {STORM_OBJECTS} objects ({seen:?})",
            seen.modified
        );
        if !applied && applier.as_ref().is_some_and(JoinHandle::is_finished) {
            applier.take().unwrap().await??;
            applied = true;
        }
        ensure!(Instant::now() < deadline, "not quiet after 300s: {seen:?}");
    }
    let took = started.elapsed();
    let validity_reconciles = running.metrics.reconcile_count(validity::NAME) - base_reconciles.0;
    let gc_reconciles = running.metrics.reconcile_count(gc::NAME) - base_reconciles.1;
    let changes = seen.changes();
    eprintln!(
        "storm: {STORM_OBJECTS} packages, {changes} changes ({seen:?}), validity {validity_reconciles} reconciles, gc {gc_reconciles}, quiet after {took:?}"
    );

    // Every object shows Valid and Ready.
    let items = dyn_store.list(kind("Package")).await?.items;
    assert_eq!(items.len(), STORM_OBJECTS);
    for obj in &items {
        let got = conditions(obj);
        assert!(
            got.contains(&"Valid=True/Valid".to_owned())
                && got.contains(&"Ready=Unknown/NotReconciled".to_owned()),
            "{}: {got:?}",
            obj.key()
        );
    }
    // One status write per object: validity never rewrites what did not change.
    assert_eq!(seen.added, STORM_OBJECTS as u64, "{seen:?}");
    assert_eq!(
        seen.modified, STORM_OBJECTS as u64,
        "validity must write each status exactly once: {seen:?}"
    );
    // At most 2 reconciles per change, on average, for each controller.
    for (name, n) in [("validity", validity_reconciles), ("gc", gc_reconciles)] {
        assert!(
            n <= 2 * changes,
            "{name}: {n} reconciles for {changes} changes"
        );
        assert!(n >= STORM_OBJECTS as u64, "{name}: only {n} reconciles");
    }

    // Quiet means quiet: over a further window no event and no reconcile.
    assert!(running.idle(), "nothing queued or running once quiet");
    let before = reconciles();
    match tokio::time::timeout(Duration::from_secs(3), events.next()).await {
        Err(_) => {}
        Ok(Some(Ok(ev))) if ev.type_ == EventType::Bookmark => {}
        Ok(other) => bail!(
            "a change after the system went quiet: {:?}",
            other.map(|r| r.map(|e| e.object.key()))
        ),
    }
    assert_eq!(
        reconciles(),
        before,
        "reconciles after the system went quiet"
    );
    running.stop().await
}
