//! Deadlines: saturating arithmetic on tokio instants and the jittered resync period.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub(super) fn jittered(d: Duration) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * rand::rng().random_range(0.9..=1.1))
        .unwrap_or(Duration::MAX)
}

/// `d` from now (see [`now_plus`]).
pub(super) fn deadline_in(d: Duration) -> Instant {
    now_plus(Instant::now(), d)
}

/// `at + d`, saturating at about 30 years (tokio's own "far future"): a config may say
/// "never" as `Duration::MAX`, and a panic here would drop the key or stop the controller.
pub(super) fn now_plus(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(86_400 * 365 * 30))
}
