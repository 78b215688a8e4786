//! The controller builder: what a controller reconciles, what else it watches, and how.
//! The loop that runs it is in `run_loop`, one reconcile in `worker`.
//!
//! ```text
//! reflectors (primary, owned, watched kinds) ─┐
//! triggers (file watches, netlink, ...) ──────┼─> keys ─> Queue ─> workers ─> Reconciler
//! resync timer ───────────────────────────────┘             ^            │
//!                                      requeue / backoff ───┴────────────┘
//! ```

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use crds::{KindInfo, Object};
use futures::{Stream, StreamExt, stream::BoxStream};
use store::{Clock, Store};

use super::{
    ObjectKey, ReconcileResult, backoff::BackoffConfig, events::Recorder, metrics::Metrics,
    reflector::Cache, run_loop, shutdown::Shutdown,
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
    pub(super) name: &'static str,
    /// The primary kinds: keys of these are reconciled.
    pub(super) kinds: Vec<&'static KindInfo>,
    pub(super) store: Arc<dyn Store>,
    pub(super) owns: Vec<&'static KindInfo>,
    pub(super) watches: Vec<(&'static KindInfo, Mapper)>,
    pub(super) triggers: Vec<BoxStream<'static, ObjectKey>>,
    pub(super) config: Config,
    pub(super) metrics: Metrics,
    pub(super) clock: Clock,
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
            metrics: Metrics::default(),
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
        self.metrics = metrics;
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
        run_loop::run(self, reconciler, shutdown).await;
    }
}
