//! The controller builder and its run loop.
//!
//! ```text
//! reflectors (primary, owned, watched kinds) ─┐
//! triggers (file watches, netlink, ...) ──────┼─> keys ─> Queue ─> workers ─> Reconciler
//! resync timer ───────────────────────────────┘             ^            │
//!                                      requeue / backoff ───┴────────────┘
//! ```

use std::{
    collections::HashMap,
    fmt,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use crds::{
    Condition, ConditionStatus, KindInfo, Object,
    condition::{reasons, types},
};
use futures::{FutureExt, Stream, StreamExt, stream::BoxStream};
use rand::Rng;
use store::{Clock, Store};
use tokio::{
    sync::{Notify, Semaphore, mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    ObjectKey, ReconcileError, ReconcileResult, Requeue,
    backoff::{Backoff, BackoffConfig, RateLimiter},
    events::Recorder,
    metrics::Metrics,
    queue::Queue,
    reflector::{self, Cache, Change},
    shutdown::Shutdown,
    status::update_conditions,
};

/// Reconciles one object toward its spec. Called with the object as cached (never for an
/// object that is gone: not-found is success). Must be idempotent and safe to cancel at
/// any `.await`.
#[async_trait]
pub trait Reconciler: Send + Sync + 'static {
    async fn reconcile(&self, obj: Arc<Object>, ctx: &Context) -> ReconcileResult;
}

/// What a reconcile may use besides the object.
#[derive(Clone, Debug)]
pub struct Context {
    pub store: Arc<dyn Store>,
    /// Local copies of the primary, owned and watched kinds.
    pub cache: Cache,
    pub events: Recorder,
    pub controller: &'static str,
    /// The time for anything the reconcile writes (the store's clock).
    pub clock: Clock,
}

/// Maps a change of a watched object to the keys to reconcile.
pub type Mapper = Arc<dyn Fn(&Object) -> Vec<ObjectKey> + Send + Sync>;

#[derive(Clone, Debug)]
pub struct Config {
    /// Reconciles running at once (never two of the same key); 0 is taken as 1.
    pub concurrency: usize,
    pub backoff: BackoffConfig,
    /// Quiet retry delay after a conflict.
    pub conflict_delay: Duration,
    /// Global limit on reconcile starts.
    pub rate_per_second: f64,
    pub rate_burst: u32,
    /// A reconcile running longer is cancelled and counts as a transient error.
    pub reconcile_timeout: Duration,
    /// Requeue delays are clamped to this.
    pub max_requeue: Duration,
    /// Every key is reconciled again this often (jittered by 10 %); `None` for never.
    pub resync: Option<Duration>,
}

impl Config {
    /// For controllers whose reconciles only read and write the store (no LXC, no network):
    /// a high start rate instead of the default meant for slow external systems, and an
    /// hourly resync as the safety net (every change already triggers a reconcile).
    pub fn store_only() -> Self {
        Self {
            rate_per_second: 1000.0,
            rate_burst: 2000,
            resync: Some(Duration::from_secs(3600)),
            ..Self::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            concurrency: 2,
            backoff: BackoffConfig::default(),
            conflict_delay: Duration::from_millis(50),
            rate_per_second: 50.0,
            rate_burst: 500,
            reconcile_timeout: Duration::from_secs(300),
            max_requeue: Duration::from_secs(7 * 24 * 3600),
            resync: Some(Duration::from_secs(600)),
        }
    }
}

pub struct Controller {
    name: &'static str,
    /// The primary kinds: keys of these are reconciled.
    kinds: Vec<&'static KindInfo>,
    store: Arc<dyn Store>,
    owns: Vec<&'static KindInfo>,
    watches: Vec<(&'static KindInfo, Mapper)>,
    triggers: Vec<BoxStream<'static, ObjectKey>>,
    config: Config,
    metrics: Option<Metrics>,
    clock: Clock,
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("name", &self.name)
            .field(
                "kinds",
                &self.kinds.iter().map(|k| k.kind).collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller named `name` (used in logs, metrics, events and conditions) for `kind`.
    pub fn for_kind(name: &'static str, kind: &'static KindInfo, store: Arc<dyn Store>) -> Self {
        Self::for_kinds(name, &[kind], store)
    }

    /// One controller for several primary kinds (every kind, for `gc` and `validity`): keys
    /// carry their kind, so one queue, one cache, one set of workers and one metrics series
    /// serve them all. `owns` then maps a child to its controlling owner of any of these
    /// kinds, and the resync covers all of them.
    pub fn for_kinds(
        name: &'static str,
        kinds: &[&'static KindInfo],
        store: Arc<dyn Store>,
    ) -> Self {
        Self {
            name,
            kinds: kinds.to_vec(),
            store,
            owns: Vec::new(),
            watches: Vec::new(),
            triggers: Vec::new(),
            config: Config::default(),
            metrics: None,
            clock: Clock::system(),
        }
    }

    /// A change to an object of `child` enqueues its controlling owner of our kind.
    pub fn owns(mut self, child: &'static KindInfo) -> Self {
        self.owns.push(child);
        self
    }

    /// A change to an object of `kind` enqueues the keys `mapper` returns.
    pub fn watches(
        mut self,
        kind: &'static KindInfo,
        mapper: impl Fn(&Object) -> Vec<ObjectKey> + Send + Sync + 'static,
    ) -> Self {
        self.watches.push((kind, Arc::new(mapper)));
        self
    }

    /// Keys from outside the store (file watches, netlink, LXC events).
    pub fn trigger(mut self, keys: impl Stream<Item = ObjectKey> + Send + 'static) -> Self {
        self.triggers.push(keys.boxed());
        self
    }

    pub fn resync(mut self, every: Option<Duration>) -> Self {
        self.config.resync = every;
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n.max(1);
        self
    }

    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The clock for timestamps this controller writes (conditions, events); give it the
    /// store's, so every timestamp in an object comes from one source.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Runs until `shutdown` says stop: intake stops, running reconciles may finish until
    /// the drain deadline, then the rest are cancelled.
    pub async fn run(self, reconciler: impl Reconciler, shutdown: Shutdown) {
        let Self {
            name,
            kinds: primary,
            store,
            owns,
            watches,
            triggers,
            config,
            metrics,
            clock,
        } = self;
        let metrics = metrics.unwrap_or_default();
        let cache = Cache::default();
        let stop_reflectors = CancellationToken::new();
        let (change_tx, mut changes) = mpsc::unbounded_channel::<Change>();
        let mut ready = Vec::new();
        let mut kinds: Vec<&'static KindInfo> = primary.clone();
        kinds.extend(owns.iter().copied());
        kinds.extend(watches.iter().map(|(k, _)| *k));
        kinds.dedup_by_key(|k| k.kind);
        let mut seen = std::collections::HashSet::new();
        for k in kinds.into_iter().filter(|k| seen.insert(k.kind)) {
            let (ready_tx, ready_rx) = watch::channel(false);
            ready.push(ready_rx);
            tokio::spawn(reflector::run(
                store.clone(),
                k,
                cache.clone(),
                change_tx.clone(),
                ready_tx,
                stop_reflectors.clone(),
            ));
        }
        drop(change_tx);
        let mut triggers = futures::stream::select_all(triggers);
        let ctx = Context {
            store: store.clone(),
            cache: cache.clone(),
            events: Recorder::new(store.clone(), name, clock.clone()),
            controller: name,
            clock,
        };
        let state = Arc::new(Shared {
            name,
            queue: Mutex::new(Queue::default()),
            reasons: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            backoff: Mutex::new(Backoff::new(config.backoff.clone())),
            config: config.clone(),
            metrics,
            reconciler: Arc::new(reconciler),
            ctx,
        });
        let workers = Arc::new(Semaphore::new(
            config.concurrency.clamp(1, Semaphore::MAX_PERMITS),
        ));
        let mut limiter = RateLimiter::new(config.rate_per_second, config.rate_burst);
        let mut tasks = tokio::task::JoinSet::new();

        // Readiness gate: nothing runs before every kind has been listed once, so a
        // reconciler never sees (and "cleans up" after) a partial world.
        for r in &mut ready {
            tokio::select! {
                () = shutdown.graceful() => { stop_reflectors.cancel(); return; }
                _ = r.wait_for(|ok| *ok) => {}
            }
        }
        tracing::info!(
            controller = name,
            kinds = ?primary.iter().map(|k| k.kind).collect::<Vec<_>>(),
            "caches synced; starting workers"
        );
        let mut resync_at = config.resync.map(|d| deadline_in(jittered(d)));
        loop {
            // Start everything that is due, as far as workers and the rate limit allow.
            loop {
                let now = Instant::now();
                let Ok(permit) = workers.clone().try_acquire_owned() else {
                    break;
                };
                let Some(key) = state.lock_queue().pop_ready(now) else {
                    break;
                };
                // Made outside the task so that a task aborted before its first poll still
                // marks the key done.
                let guard = Running {
                    state: state.clone(),
                    key,
                };
                let wait = limiter.acquire();
                if !wait.is_zero() {
                    // Shutdown may begin during the wait: then this key must not start
                    // (guard and permit drop with the loop).
                    tokio::select! {
                        biased;
                        () = shutdown.graceful() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                tasks.spawn(async move {
                    let _permit = permit;
                    guard.state.run_one(&guard.key).await;
                    drop(guard);
                });
            }
            state.update_gauges();
            // With every worker busy a due key cannot start, and its deadline (already past)
            // would wake this loop at once, forever: a busy loop that also keeps a paused
            // test clock from advancing. A finishing worker wakes the loop instead.
            let deadline = if workers.available_permits() > 0 {
                state.lock_queue().next_deadline()
            } else {
                None
            };
            tokio::select! {
                biased;
                () = shutdown.graceful() => break,
                // Everything already waiting is taken before anything starts, so a burst of
                // events for one key costs one run rather than a run and a re-run.
                // Bounded, so a flood cannot starve the workers.
                Some(change) = changes.recv() => {
                    let waiting = std::iter::from_fn(|| changes.try_recv().ok()).take(DRAIN);
                    for change in std::iter::once(change).chain(waiting) {
                        for (key, reason) in keys_for(&change, name, &primary, &owns, &watches) {
                            state.schedule(key, Instant::now(), reason);
                        }
                    }
                }
                Some(key) = triggers.next() => {
                    let waiting =
                        std::iter::from_fn(|| triggers.next().now_or_never().flatten()).take(DRAIN);
                    for key in std::iter::once(key).chain(waiting) {
                        state.schedule(key, Instant::now(), Reason::Trigger);
                    }
                }
                () = state.wake.notified() => {}
                Some(_) = tasks.join_next() => {}
                () = sleep_until_opt(deadline) => {}
                () = sleep_until_opt(resync_at) => {
                    for &kind in &primary {
                        for obj in cache.list(kind) {
                            state.schedule(ObjectKey::new(kind, obj.metadata.name.clone()), Instant::now(), Reason::Resync);
                        }
                    }
                    resync_at = config.resync.map(|d| deadline_in(jittered(d)));
                }
            }
        }
        // Stop intake, then drain.
        state.lock_queue().close();
        stop_reflectors.cancel();
        tracing::info!(
            controller = name,
            running = tasks.len(),
            "shutting down; draining running reconciles"
        );
        let drained = tokio::select! {
            () = async { while tasks.join_next().await.is_some() {} } => true,
            () = shutdown.forced() => false,
        };
        if !drained {
            tracing::warn!(
                controller = name,
                left = tasks.len(),
                "drain deadline passed; cancelling running reconciles"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        state.update_gauges();
    }
}

/// Most events taken in one go before the loop starts work again.
const DRAIN: usize = 1024;

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn jittered(d: Duration) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * rand::rng().random_range(0.9..=1.1))
        .unwrap_or(Duration::MAX)
}

/// `d` from now (see [`now_plus`]).
fn deadline_in(d: Duration) -> Instant {
    now_plus(Instant::now(), d)
}

/// `at + d`, saturating at about 30 years (tokio's own "far future"): a config may say
/// "never" as `Duration::MAX`, and a panic here would drop the key or stop the controller.
fn now_plus(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(86_400 * 365 * 30))
}

/// The keys a change enqueues.
fn keys_for(
    change: &Change,
    controller: &str,
    primary: &[&'static KindInfo],
    owns: &[&'static KindInfo],
    watches: &[(&'static KindInfo, Mapper)],
) -> Vec<(ObjectKey, Reason)> {
    let mut keys = Vec::new();
    let objects = || change.old.iter().chain(change.new.iter());
    if primary.iter().any(|k| k.kind == change.kind.kind) {
        // A write that changed nothing but the resourceVersion is not a change, and neither
        // is this controller's own `Stalled` bookkeeping: reacting to it would retry a
        // Terminal error once (and re-run every success that cleared it).
        let noop = matches!((&change.old, &change.new),
            (Some(a), Some(b)) if same_but_own_stalled(a, b, controller));
        if !noop && let Some(o) = change.new.as_ref().or(change.old.as_ref()) {
            keys.push((
                ObjectKey::new(change.kind, o.metadata.name.clone()),
                Reason::ObjectChanged,
            ));
        }
    }
    if owns.iter().any(|k| k.kind == change.kind.kind) {
        for o in objects() {
            if let Some(owner) = o.metadata.controller_owner()
                && let Some(&kind) = primary.iter().find(|k| k.kind == owner.kind)
            {
                keys.push((
                    ObjectKey::new(kind, owner.name.clone()),
                    Reason::RelatedChanged(change.kind.kind),
                ));
            }
        }
    }
    for (k, mapper) in watches {
        if k.kind == change.kind.kind {
            for o in objects() {
                keys.extend(
                    mapper(o)
                        .into_iter()
                        .map(|key| (key, Reason::RelatedChanged(k.kind))),
                );
            }
        }
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys.dedup_by(|a, b| a.0 == b.0);
    keys
}

/// Whether `a` and `b` differ in nothing but the resourceVersion and a `Stalled` condition
/// that `controller` set (or cleared from its own).
fn same_but_own_stalled(a: &Object, b: &Object, controller: &str) -> bool {
    let mut meta = a.metadata.clone();
    meta.resource_version
        .clone_from(&b.metadata.resource_version);
    if meta != b.metadata || a.spec != b.spec || a.kind != b.kind || a.api_version != b.api_version
    {
        return false;
    }
    if a.status == b.status {
        return true;
    }
    if !stalled_by(a, controller) && !stalled_by(b, controller) {
        return false;
    }
    let without_stalled = |o: &Object| {
        let mut o = o.clone();
        let mut conditions = o.conditions();
        crds::condition::remove_condition(&mut conditions, types::STALLED);
        o.set_conditions(&conditions);
        o.status
    };
    without_stalled(a) == without_stalled(b)
}

/// Why a key was scheduled.
#[derive(Clone, Copy, Debug)]
enum Reason {
    ObjectChanged,
    /// An owned or watched object of this kind changed.
    RelatedChanged(&'static str),
    Trigger,
    Resync,
    RequeueAfter,
    Retry,
    Conflict,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ObjectChanged => f.write_str("object changed"),
            Self::RelatedChanged(kind) => write!(f, "related {kind} changed"),
            Self::Trigger => f.write_str("external trigger"),
            Self::Resync => f.write_str("periodic resync"),
            Self::RequeueAfter => f.write_str("requeue after"),
            Self::Retry => f.write_str("retry after error"),
            Self::Conflict => f.write_str("retry after conflict"),
        }
    }
}

struct Shared<R> {
    name: &'static str,
    queue: Mutex<Queue<ObjectKey>>,
    /// Why each pending key was scheduled, for its reconcile span (the reconciler itself
    /// never sees it: reconciliation is level-triggered).
    reasons: Mutex<HashMap<ObjectKey, Reason>>,
    wake: Notify,
    backoff: Mutex<Backoff<ObjectKey>>,
    config: Config,
    metrics: Metrics,
    reconciler: Arc<R>,
    ctx: Context,
}

/// Marks a key done when dropped, whatever happened to the run (panic, cancel, abort): the
/// "done" that cannot be forgotten.
struct Running<R> {
    state: Arc<Shared<R>>,
    key: ObjectKey,
}

impl<R> Drop for Running<R> {
    fn drop(&mut self) {
        self.state
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .done(&self.key);
        self.state.wake.notify_one();
    }
}

impl<R: Reconciler> Shared<R> {
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue<ObjectKey>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Schedules `key`; when this decides its deadline, `reason` is what its reconcile span
    /// will say it ran for.
    fn schedule(&self, key: ObjectKey, at: Instant, reason: Reason) {
        let mut queue = self.lock_queue();
        if queue.schedule(key.clone(), at) {
            self.reasons
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, reason);
            drop(queue);
            self.wake.notify_one();
        }
    }

    fn update_gauges(&self) {
        let q = self.lock_queue();
        self.metrics.set_queue(self.name, q.depth(), q.running());
    }

    async fn run_one(&self, key: &ObjectKey) {
        let reason = self
            .reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        let Some(obj) = self.ctx.cache.get(key.kind_info(), &key.name) else {
            // Gone: nothing to reconcile (cleanup belongs in finalizers).
            self.backoff
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reset(key);
            return;
        };
        let span = tracing::info_span!(
            "reconcile",
            controller = self.name,
            object = %key,
            reason = %reason.map_or_else(|| "unknown".to_owned(), |r| r.to_string()),
            generation = obj.metadata.generation,
        );
        let start = Instant::now();
        let reconciler = self.reconciler.clone();
        let ctx = self.ctx.clone();
        let run = {
            let obj = obj.clone();
            async move {
                AssertUnwindSafe(reconciler.reconcile(obj, &ctx))
                    .catch_unwind()
                    .await
            }
        };
        let result =
            match tokio::time::timeout(self.config.reconcile_timeout, run.instrument(span.clone()))
                .await
            {
                Ok(Ok(result)) => result,
                Ok(Err(panic)) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(ReconcileError::Transient(format!(
                        "reconcile panicked: {msg}"
                    )))
                }
                Err(_) => Err(ReconcileError::Transient(format!(
                    "reconcile timed out after {:?}",
                    self.config.reconcile_timeout
                ))),
            };
        self.metrics.observe(self.name, &result, start.elapsed());
        let _enter = span.enter();
        let now = Instant::now();
        match result {
            Ok(requeue) => {
                self.backoff
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .reset(key);
                // The cache may hold a `Stalled=True` newer than the snapshot.
                let cached = self.ctx.cache.get(key.kind_info(), &key.name);
                if stalled_by(&obj, self.name) || cached.is_some_and(|c| stalled_by(&c, self.name))
                {
                    drop(_enter);
                    self.set_stalled(&obj, None).instrument(span.clone()).await;
                }
                match requeue {
                    Requeue::After(d) => self.schedule(
                        key.clone(),
                        now_plus(now, d.min(self.config.max_requeue)),
                        Reason::RequeueAfter,
                    ),
                    Requeue::OnChange => {}
                }
            }
            Err(ReconcileError::Conflict) => {
                tracing::debug!("conflict; retrying");
                self.schedule(
                    key.clone(),
                    now_plus(now, self.config.conflict_delay),
                    Reason::Conflict,
                );
            }
            Err(ReconcileError::Transient(msg)) => {
                let delay = self
                    .backoff
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .fail(key);
                tracing::error!(error = %msg, retry_in = ?delay, "reconcile failed");
                self.schedule(key.clone(), now_plus(now, delay), Reason::Retry);
            }
            Err(ReconcileError::Terminal(msg)) => {
                tracing::error!(error = %msg, "reconcile failed; not retrying until the object changes");
                drop(_enter);
                self.set_stalled(&obj, Some(&msg))
                    .instrument(span.clone())
                    .await;
            }
        }
    }

    /// Shows a terminal error as `Stalled=True` (cleared again on the next success). Written
    /// on a fresh read: the object the reconcile started from is often stale by now
    /// (reconcilers write status too) and would only get a Conflict. The edit touches one
    /// condition, so retrying it on a conflict cannot undo anyone's change.
    async fn set_stalled(&self, seen: &Object, error: Option<&str>) {
        let cond = match error {
            Some(msg) => Condition::new(
                types::STALLED,
                ConditionStatus::True,
                reasons::RECONCILE_FAILED,
                format!("{}: {msg}", self.name),
                self.ctx.clock.now(),
            ),
            None => Condition::new(
                types::STALLED,
                ConditionStatus::False,
                reasons::RECONCILED,
                "",
                self.ctx.clock.now(),
            ),
        }
        .with_generation(seen.metadata.generation)
        .reported_by(self.name);
        let store = &*self.ctx.store;
        let kind = ObjectKey::of(seen).map(|k| k.kind_info());
        let Some(kind) = kind else { return };
        for _ in 0..3 {
            let current = match store.get(kind, seen.name()).await {
                Ok(current) => current,
                Err(e) => {
                    tracing::debug!(error = %e, "could not read the object to record Stalled");
                    return;
                }
            };
            // Re-created meanwhile (not the object that failed), or no longer ours to clear.
            if current.metadata.uid != seen.metadata.uid
                || (error.is_none() && !stalled_by(&current, self.name))
            {
                return;
            }
            match update_conditions(store, &current, std::slice::from_ref(&cond)).await {
                Err(e) if e.is_conflict() => {}
                Err(e) => {
                    tracing::debug!(error = %e, "could not record the Stalled condition");
                    return;
                }
                Ok(_) => return,
            }
        }
        tracing::debug!("the object kept changing; Stalled not recorded");
    }
}

/// Whether `obj` shows `Stalled=True` set by `controller` (its `reportingController`; the
/// message is for people and says nothing binding). Another controller's success must not
/// clear it: with several controllers on one object, that clear is a change that re-runs
/// the stalled controller, which stalls again, and so on (a storm between controllers).
fn stalled_by(obj: &Object, controller: &str) -> bool {
    crds::condition::find_condition(&obj.conditions(), types::STALLED).is_some_and(|c| {
        c.status == ConditionStatus::True && c.reporting_controller.as_deref() == Some(controller)
    })
}
