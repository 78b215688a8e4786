//! The result contract of a reconcile, as types: an invalid combination (an error *and* a
//! requeue time, the classic controller-runtime misunderstanding) cannot be written.

use std::time::Duration;

use store::StoreError;

/// What to do after a successful reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Run again after this long (a deadline, not a promise: any change runs it sooner).
    /// Clamped to the runtime's maximum.
    After(Duration),
    /// Run again when something changes (or at the next periodic resync).
    OnChange,
}

/// Why a reconcile failed, which decides what the runtime does next.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Retried with per-key exponential backoff.
    #[error("{0}")]
    Transient(String),
    /// Not retried with backoff: runs again only when the object changes or at the periodic
    /// resync (when the outside world may have changed). Shown as `Stalled=True`.
    #[error("{0}")]
    Terminal(String),
    /// The object changed under us: re-read and retry soon, without an error log.
    #[error("conflict: the object was modified")]
    Conflict,
}

impl From<StoreError> for ReconcileError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => Self::Conflict,
            StoreError::Invalid { .. } | StoreError::BadRequest(_) | StoreError::Unsupported(_) => {
                Self::Terminal(e.to_string())
            }
            other => Self::Transient(other.to_string()),
        }
    }
}

impl ReconcileError {
    /// A label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Transient(_) => "transient",
            Self::Terminal(_) => "terminal",
            Self::Conflict => "conflict",
        }
    }
}

pub type ReconcileResult = Result<Requeue, ReconcileError>;
