//! The controller runtime, in the manner of Kubernetes' controller-runtime: level-triggered
//! reconcile of keys (a reconciler looks at the object as it is now, never at the event
//! that woke it, so missed or merged events cannot leave it wrong), at most one pending
//! entry per key (a burst of events costs one run), never one key twice at once (two runs
//! would race on the same status), per-key backoff reset on success, clamped requeues (a
//! bad delay cannot park a key forever), a periodic resync (the safety net for anything
//! missed), a readiness gate (no reconcile sees a half-listed world and "cleans up" what it
//! has not seen yet), finalizers before side effects (nothing is created that a deletion
//! could leak), status written only on change (a write is an event: writing every pass is
//! a reconcile storm), panics and timeouts contained to their key, and a draining shutdown.

mod backoff;
mod controller;
mod deadline;
mod events;
mod finalizer;
mod key;
mod metrics;
mod queue;
mod reconcile;
mod reflector;
mod run_loop;
mod shutdown;
mod stalled;
mod status;
mod triggers;
mod worker;

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
