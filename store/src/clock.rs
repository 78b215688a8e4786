//! The one clock behind every timestamp the system writes (`creationTimestamp`,
//! `deletionTimestamp`, condition transitions, event times, table ages).
//!
//! Injected rather than read from the system at each use, so that tests run on tokio's
//! paused time see timestamps that move with it (a condition's `lastTransitionTime`, an
//! event's `lastTimestamp`) and can assert them exactly.

use std::{fmt, sync::Arc};

use crds::Time;

/// Hands out the current time at whole seconds, the precision every timestamp is written
/// with (Kubernetes' `metav1.Time`).
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Time + Send + Sync>);

impl Clock {
    /// The system's wall clock: what the product runs on.
    pub fn system() -> Self {
        Self::from_fn(chrono::Utc::now)
    }

    /// A clock that reads `start` when created and then moves with `tokio::time`: frozen
    /// under a paused runtime until time is advanced (by `tokio::time::advance` or by
    /// auto-advance while everything sleeps). Must be created inside a tokio runtime.
    pub fn following_tokio(start: Time) -> Self {
        let origin = tokio::time::Instant::now();
        Self::from_fn(move || {
            let elapsed =
                chrono::TimeDelta::from_std(origin.elapsed()).unwrap_or(chrono::TimeDelta::MAX);
            start
                .checked_add_signed(elapsed)
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
        })
    }

    /// A clock that always reads `at`.
    pub fn fixed(at: Time) -> Self {
        Self::from_fn(move || at)
    }

    /// Any source of time (truncated to whole seconds on read).
    pub fn from_fn(now: impl Fn() -> Time + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    pub fn now(&self) -> Time {
        crds::meta::whole_seconds((self.0)())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Clock").field(&self.now()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn following_tokio_moves_with_paused_time_in_whole_seconds() {
        let start = chrono::Utc.timestamp_opt(1_000, 0).unwrap();
        let clock = Clock::following_tokio(start);
        assert_eq!(clock.now(), start);
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now(), chrono::Utc.timestamp_opt(1_001, 0).unwrap());
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        assert_eq!(clock.now(), chrono::Utc.timestamp_opt(4_601, 0).unwrap());
    }

    #[test]
    fn system_time_is_truncated_to_whole_seconds() {
        let now = Clock::system().now();
        assert_eq!(now, crds::meta::whole_seconds(now));
    }
}
