//! Per-key exponential backoff with jitter (reset on success) and a global token bucket, both
//! on `tokio::time` so tests run with the clock paused.

use std::{collections::HashMap, hash::Hash, time::Duration};

use rand::Rng;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct BackoffConfig {
    /// Delay after the first failure.
    pub base: Duration,
    /// The delay never grows beyond this.
    pub max: Duration,
    /// Each delay is multiplied by a random factor in `1 ± jitter` (`jitter` is taken
    /// within `0..=0.9`, so a delay is never zero).
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        // Sized for slow external systems (LXC, ACME): 0.5 s doubling to 5 min.
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl BackoffConfig {
    /// The delay after `failures` consecutive failures (1 = the first).
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        // Out of range, jitter would panic (NaN, a negative factor) or retry at once.
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 0.9)
        };
        let factor = if jitter > 0.0 {
            rng.random_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        // Saturates rather than panics when `max` means "no limit" (`Duration::MAX`).
        Duration::try_from_secs_f64(raw.as_secs_f64() * factor).unwrap_or(Duration::MAX)
    }
}

/// Consecutive failures per key.
#[derive(Debug)]
pub struct Backoff<K> {
    config: BackoffConfig,
    failures: HashMap<K, u32>,
}

impl<K: Hash + Eq + Clone> Backoff<K> {
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            failures: HashMap::new(),
        }
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn fail(&mut self, key: &K) -> Duration {
        let n = self.failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        self.config.delay(*n, &mut rand::rng())
    }

    pub fn reset(&mut self, key: &K) {
        self.failures.remove(key);
    }

    pub fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

/// A token bucket limiting how many reconciles start per second across all keys.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes a token; returns how long to wait first when none is left.
    /// A rate that is not a positive finite number means no limit.
    pub fn acquire(&mut self) -> Duration {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Duration::ZERO;
        }
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_second)
            .min(self.burst);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn grows_caps_and_stays_within_jitter() {
        let cfg = BackoffConfig {
            base: Duration::from_millis(500),
            max: Duration::from_secs(300),
            jitter: 0.2,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for failures in 1..40u32 {
            let nominal = Duration::from_millis(500)
                .saturating_mul(1 << (failures - 1).min(20))
                .min(cfg.max);
            for _ in 0..50 {
                let d = cfg.delay(failures, &mut rng);
                assert!(
                    d >= nominal.mul_f64(0.8) && d <= nominal.mul_f64(1.2),
                    "failure {failures}: {d:?} vs {nominal:?}"
                );
            }
        }
        let none = BackoffConfig { jitter: 0.0, ..cfg };
        assert_eq!(none.delay(1, &mut rng), Duration::from_millis(500));
        assert_eq!(none.delay(2, &mut rng), Duration::from_secs(1));
        assert_eq!(none.delay(30, &mut rng), Duration::from_secs(300));
    }

    #[test]
    fn resets_on_success() {
        let mut b = Backoff::new(BackoffConfig {
            jitter: 0.0,
            ..BackoffConfig::default()
        });
        assert_eq!(b.fail(&"k"), Duration::from_millis(500));
        assert_eq!(b.fail(&"k"), Duration::from_secs(1));
        assert_eq!(b.fail(&"other"), Duration::from_millis(500), "per key");
        b.reset(&"k");
        assert_eq!(b.failures(&"k"), 0);
        assert_eq!(b.fail(&"k"), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket() {
        let mut r = RateLimiter::new(10.0, 2);
        assert_eq!(r.acquire(), Duration::ZERO);
        assert_eq!(r.acquire(), Duration::ZERO);
        let wait = r.acquire();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(r.acquire(), Duration::ZERO, "refilled");
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut unlimited = RateLimiter::new(rate, 0);
            assert_eq!(
                unlimited.acquire(),
                Duration::ZERO,
                "rate {rate} means no limit"
            );
        }
    }
}
