//! What the workers share, and one reconcile of one key: run it (panics and timeouts
//! contained to the key), then turn its result into the key's next deadline.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, MutexGuard},
};

use crds::Object;
use futures::FutureExt;
use tokio::{sync::Notify, time::Instant};
use tracing::{Instrument, Span};

use super::{
    ObjectKey, ReconcileError, ReconcileResult, Requeue,
    backoff::Backoff,
    controller::{Config, Context, Reconciler},
    deadline::now_plus,
    metrics::Metrics,
    queue::Queue,
    stalled::stalled_by,
    triggers::Reason,
};

/// The state every worker and the run loop share.
pub(super) struct Shared<R> {
    pub(super) name: &'static str,
    pub(super) queue: Mutex<Queue<ObjectKey>>,
    /// Why each pending key was scheduled, for its reconcile span (the reconciler itself
    /// never sees it: reconciliation is level-triggered).
    pub(super) reasons: Mutex<HashMap<ObjectKey, Reason>>,
    pub(super) wake: Notify,
    pub(super) backoff: Mutex<Backoff<ObjectKey>>,
    pub(super) config: Config,
    pub(super) metrics: Metrics,
    pub(super) reconciler: Arc<R>,
    pub(super) ctx: Context,
}

/// Marks a key done when dropped, whatever happened to the run (panic, cancel, abort): the
/// "done" that cannot be forgotten.
pub(super) struct Running<R> {
    pub(super) state: Arc<Shared<R>>,
    pub(super) key: ObjectKey,
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

impl<R> Shared<R> {
    pub(super) fn lock_queue(&self) -> MutexGuard<'_, Queue<ObjectKey>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_backoff(&self) -> MutexGuard<'_, Backoff<ObjectKey>> {
        self.backoff.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Schedules `key`; when this decides its deadline, `reason` is what its reconcile span
    /// will say it ran for.
    pub(super) fn schedule(&self, key: ObjectKey, at: Instant, reason: Reason) {
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

    pub(super) fn update_gauges(&self) {
        let q = self.lock_queue();
        self.metrics.set_queue(self.name, q.depth(), q.running());
    }
}

impl<R: Reconciler> Shared<R> {
    pub(super) async fn run_one(&self, key: &ObjectKey) {
        let reason = self
            .reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        let Some(obj) = self.ctx.cache.get(key.kind_info(), &key.name) else {
            // Gone: nothing to reconcile (cleanup belongs in finalizers).
            self.lock_backoff().reset(key);
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
        let result = self.invoke(obj.clone(), &span).await;
        self.metrics.observe(self.name, &result, start.elapsed());
        self.settle(key, &obj, result).instrument(span).await;
    }

    /// Runs the reconciler on `obj`; a panic or a timeout is a transient error.
    async fn invoke(&self, obj: Arc<Object>, span: &Span) -> ReconcileResult {
        let reconciler = self.reconciler.clone();
        let ctx = self.ctx.clone();
        let run = async move {
            AssertUnwindSafe(reconciler.reconcile(obj, &ctx))
                .catch_unwind()
                .await
        };
        let timeout = self.config.reconcile_timeout;
        match tokio::time::timeout(timeout, run.instrument(span.clone())).await {
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
                "reconcile timed out after {timeout:?}"
            ))),
        }
    }

    /// What follows a reconcile of `key` (started from `obj`) that ended with `result`.
    async fn settle(&self, key: &ObjectKey, obj: &Object, result: ReconcileResult) {
        let now = Instant::now();
        match result {
            Ok(requeue) => {
                self.lock_backoff().reset(key);
                // The cache may hold a `Stalled=True` newer than the snapshot.
                let cached = self.ctx.cache.get(key.kind_info(), &key.name);
                if stalled_by(obj, self.name) || cached.is_some_and(|c| stalled_by(&c, self.name)) {
                    self.set_stalled(obj, None).await;
                }
                if let Requeue::After(d) = requeue {
                    let at = now_plus(now, d.min(self.config.max_requeue));
                    self.schedule(key.clone(), at, Reason::RequeueAfter);
                }
            }
            Err(ReconcileError::Conflict) => {
                tracing::debug!("conflict; retrying");
                let at = now_plus(now, self.config.conflict_delay);
                self.schedule(key.clone(), at, Reason::Conflict);
            }
            Err(ReconcileError::Transient(msg)) => {
                let delay = self.lock_backoff().fail(key);
                tracing::error!(error = %msg, retry_in = ?delay, "reconcile failed");
                self.schedule(key.clone(), now_plus(now, delay), Reason::Retry);
            }
            Err(ReconcileError::Terminal(msg)) => {
                tracing::error!(error = %msg, "reconcile failed; not retrying until the object changes");
                self.set_stalled(obj, Some(&msg)).await;
            }
        }
    }
}
