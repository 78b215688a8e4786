//! The controller runtime. Rules (and where they come from) are in
//! `../shared/reference/controllers-and-style.md` section A; in short: level-triggered
//! reconcile of keys, at most one pending entry per key, never one key twice at once,
//! per-key backoff reset on success, clamped requeues, periodic resync, a readiness gate,
//! finalizers before side effects, status written only on change, panics and timeouts
//! contained to their key, and a draining shutdown.

mod backoff;
mod controller;
mod events;
mod finalizer;
mod key;
mod metrics;
mod queue;
mod reconcile;
mod reflector;
mod shutdown;
mod status;

pub use backoff::{Backoff, BackoffConfig, RateLimiter};
pub use controller::{Config, Context, Controller, Mapper, Reconciler};
pub use events::{Recorder, series_name};
pub use finalizer::{FinalizerEvent, finalizer};
pub use key::ObjectKey;
pub use metrics::Metrics;
pub use queue::Queue;
pub use reconcile::{ReconcileError, ReconcileResult, Requeue};
pub use reflector::{Cache, Change};
pub use shutdown::Shutdown;
pub use status::{update_conditions, update_status};
