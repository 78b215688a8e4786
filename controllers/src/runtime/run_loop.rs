//! The run loop of a controller: reflectors fill the cache and report changes, a readiness
//! gate holds the workers back until every kind has been listed once, then due keys start
//! as far as workers and the rate limit allow, until shutdown stops intake and drains.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use crds::KindInfo;
use futures::{FutureExt, StreamExt, stream::SelectAll};
use store::Store;
use tokio::{
    sync::{Notify, Semaphore, mpsc, watch},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    ObjectKey,
    backoff::{Backoff, RateLimiter},
    controller::{Context, Controller, Mapper, Reconciler},
    deadline::{deadline_in, jittered, sleep_until_opt},
    events::Recorder,
    queue::Queue,
    reflector::{self, Cache, Change},
    shutdown::Shutdown,
    triggers::{Reason, keys_for},
    worker::{Running, Shared},
};

/// Most events taken in one go before the loop starts work again.
const DRAIN: usize = 1024;

pub(super) async fn run<R: Reconciler>(controller: Controller, reconciler: R, shutdown: Shutdown) {
    let Controller {
        name,
        kinds: primary,
        store,
        owns,
        watches,
        triggers,
        config,
        metrics,
        clock,
    } = controller;
    let cache = Cache::default();
    let stop_reflectors = CancellationToken::new();
    let mut kinds: Vec<&'static KindInfo> = primary.clone();
    kinds.extend(owns.iter().copied());
    kinds.extend(watches.iter().map(|(k, _)| *k));
    // A kind both reconciled and watched (Packages depending on Packages) is reflected once.
    kinds.sort_by_key(|k| k.kind);
    kinds.dedup_by_key(|k| k.kind);
    let (changes, mut ready) = start_reflectors(&store, kinds, &cache, &stop_reflectors);
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
    // Readiness gate: nothing runs before every kind has been listed once, so a reconciler
    // never sees (and "cleans up" after) a partial world.
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
    let mut intake = Intake {
        workers: Arc::new(Semaphore::new(
            config.concurrency.clamp(1, Semaphore::MAX_PERMITS),
        )),
        limiter: RateLimiter::new(config.rate_per_second, config.rate_burst),
        tasks: JoinSet::new(),
        resync: config.resync,
        resync_at: config.resync.map(|d| deadline_in(jittered(d))),
        state: state.clone(),
        primary,
        owns,
        watches,
        cache,
        changes,
        triggers: futures::stream::select_all(triggers),
    };
    intake.run(&shutdown).await;
    // Stop intake, then drain.
    state.lock_queue().close();
    stop_reflectors.cancel();
    drain(&mut intake.tasks, &shutdown, name).await;
    state.update_gauges();
}

/// One reflector per distinct kind; their changes, and a readiness flag per kind.
fn start_reflectors(
    store: &Arc<dyn Store>,
    kinds: Vec<&'static KindInfo>,
    cache: &Cache,
    stop: &CancellationToken,
) -> (mpsc::UnboundedReceiver<Change>, Vec<watch::Receiver<bool>>) {
    let (change_tx, changes) = mpsc::unbounded_channel::<Change>();
    let mut ready = Vec::new();
    let mut seen = HashSet::new();
    for k in kinds.into_iter().filter(|k| seen.insert(k.kind)) {
        let (ready_tx, ready_rx) = watch::channel(false);
        ready.push(ready_rx);
        tokio::spawn(reflector::run(
            store.clone(),
            k,
            cache.clone(),
            change_tx.clone(),
            ready_tx,
            stop.clone(),
        ));
    }
    (changes, ready)
}

/// Lets running reconciles finish until the drain deadline, then cancels the rest.
async fn drain(tasks: &mut JoinSet<()>, shutdown: &Shutdown, name: &'static str) {
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
}

/// Everything that puts keys into the queue and takes them out to the workers.
struct Intake<R> {
    state: Arc<Shared<R>>,
    workers: Arc<Semaphore>,
    limiter: RateLimiter,
    tasks: JoinSet<()>,
    resync: Option<Duration>,
    resync_at: Option<Instant>,
    primary: Vec<&'static KindInfo>,
    owns: Vec<&'static KindInfo>,
    watches: Vec<(&'static KindInfo, Mapper)>,
    cache: Cache,
    changes: mpsc::UnboundedReceiver<Change>,
    triggers: SelectAll<futures::stream::BoxStream<'static, ObjectKey>>,
}

impl<R: Reconciler> Intake<R> {
    /// Until shutdown begins.
    async fn run(&mut self, shutdown: &Shutdown) {
        loop {
            self.start_due(shutdown).await;
            self.state.update_gauges();
            if !self.next(shutdown).await {
                return;
            }
        }
    }

    /// Starts everything that is due, as far as workers and the rate limit allow.
    async fn start_due(&mut self, shutdown: &Shutdown) {
        loop {
            let now = Instant::now();
            let Ok(permit) = self.workers.clone().try_acquire_owned() else {
                return;
            };
            let Some(key) = self.state.lock_queue().pop_ready(now) else {
                return;
            };
            // Made outside the task so that a task aborted before its first poll still
            // marks the key done.
            let guard = Running {
                state: self.state.clone(),
                key,
            };
            let wait = self.limiter.acquire();
            if !wait.is_zero() {
                // Shutdown may begin during the wait: then this key must not start (guard
                // and permit drop here).
                tokio::select! {
                    biased;
                    () = shutdown.graceful() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            self.tasks.spawn(async move {
                let _permit = permit;
                guard.state.run_one(&guard.key).await;
                drop(guard);
            });
        }
    }

    /// Waits for the next thing to do and schedules what it brings; false once shutdown
    /// begins.
    async fn next(&mut self, shutdown: &Shutdown) -> bool {
        // With every worker busy a due key cannot start, and its deadline (already past)
        // would wake this loop at once, forever: a busy loop that also keeps a paused test
        // clock from advancing. A finishing worker wakes the loop instead.
        let deadline = if self.workers.available_permits() > 0 {
            self.state.lock_queue().next_deadline()
        } else {
            None
        };
        tokio::select! {
            biased;
            () = shutdown.graceful() => return false,
            Some(change) = self.changes.recv() => self.take_changes(change),
            Some(key) = self.triggers.next() => self.take_triggers(key),
            () = self.state.wake.notified() => {}
            Some(_) = self.tasks.join_next() => {}
            () = sleep_until_opt(deadline) => {}
            () = sleep_until_opt(self.resync_at) => self.resync(),
        }
        true
    }

    /// Schedules `first` and everything already waiting behind it before anything starts,
    /// so a burst of events for one key costs one run rather than a run and a re-run.
    /// Bounded, so a flood cannot starve the workers.
    fn take_changes(&mut self, first: Change) {
        let waiting = std::iter::from_fn(|| self.changes.try_recv().ok()).take(DRAIN);
        let changes: Vec<Change> = std::iter::once(first).chain(waiting).collect();
        for change in changes {
            let keys = keys_for(
                &change,
                self.state.name,
                &self.primary,
                &self.owns,
                &self.watches,
            );
            for (key, reason) in keys {
                self.state.schedule(key, Instant::now(), reason);
            }
        }
    }

    /// As [`Self::take_changes`], for keys from external triggers.
    fn take_triggers(&mut self, first: ObjectKey) {
        let waiting =
            std::iter::from_fn(|| self.triggers.next().now_or_never().flatten()).take(DRAIN);
        let keys: Vec<ObjectKey> = std::iter::once(first).chain(waiting).collect();
        for key in keys {
            self.state.schedule(key, Instant::now(), Reason::Trigger);
        }
    }

    fn resync(&mut self) {
        for &kind in &self.primary {
            for obj in self.cache.list(kind) {
                let key = ObjectKey::new(kind, obj.metadata.name.clone());
                self.state.schedule(key, Instant::now(), Reason::Resync);
            }
        }
        self.resync_at = self.resync.map(|d| deadline_in(jittered(d)));
    }
}
