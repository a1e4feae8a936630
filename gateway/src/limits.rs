//! Request rate limiting: a token bucket refilled continuously, per connection
//! (docs/PROTOCOL.md "Limits") or per key (a username, a client IP) for login throttling.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bucket.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// Allows `per_sec` requests per second, with bursts up to `per_sec`.
    pub fn new(per_sec: u32, now: Instant) -> Self {
        let rate = f64::from(per_sec.max(1));
        Self::with_burst(rate, rate, now)
    }

    /// Allows `per_sec` requests per second on average, `burst` at once.
    pub fn with_burst(burst: f64, per_sec: f64, now: Instant) -> Self {
        RateLimiter {
            per_sec,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_sec).min(self.burst);
    }

    /// Takes one token at `now`; false when the client is over its rate.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available (zero when one is).
    pub fn wait(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.per_sec).max(0.0))
    }

    /// Whether the bucket is full at `now`: its key has been quiet long enough to forget.
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// One bucket per key (per username, per IP), bounded in memory: keys whose bucket has
/// refilled are forgotten when the map reaches `max_keys`, so a client cycling through
/// names or addresses cannot grow it without end.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    per_min: u32,
    max_keys: usize,
    buckets: Mutex<HashMap<K, RateLimiter>>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `per_min` requests per key per minute, in bursts of up to `per_min`.
    pub fn per_minute(per_min: u32, max_keys: usize) -> Self {
        KeyedLimiter {
            per_min: per_min.max(1),
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now`; `Err(wait)` when the key is over its rate.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            buckets.retain(|_, b| !b.is_full(now));
            if buckets.len() >= self.max_keys {
                // Every key is busy: start over rather than refuse every newcomer.
                tracing::warn!(keys = buckets.len(), "rate-limit table full; cleared");
                buckets.clear();
            }
        }
        let per_min = f64::from(self.per_min);
        let bucket = buckets
            .entry(key.clone())
            .or_insert_with(|| RateLimiter::with_burst(per_min, per_min / 60.0, now));
        if bucket.allow(now) {
            Ok(())
        } else {
            Err(bucket.wait())
        }
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_to_the_rate_then_refills() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(50, t0);
        let allowed = (0..200).filter(|_| l.allow(t0)).count();
        assert_eq!(allowed, 50);
        assert!(!l.allow(t0 + Duration::from_millis(10)));
        assert!(l.allow(t0 + Duration::from_millis(30)), "refills at 50/s");
        let mut l = RateLimiter::new(50, t0);
        for i in 0..500 {
            assert!(
                l.allow(t0 + Duration::from_millis(20 * i)),
                "a steady 50/s passes"
            );
        }
    }

    #[test]
    fn keyed_buckets_are_separate_and_say_how_long_to_wait() {
        let t0 = Instant::now();
        let l = KeyedLimiter::per_minute(10, 1000);
        for _ in 0..10 {
            assert!(l.check(&"alice", t0).is_ok());
        }
        let wait = l.check(&"alice", t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(5) && wait <= Duration::from_secs(6),
            "{wait:?}"
        );
        assert!(
            l.check(&"bob", t0).is_ok(),
            "another key has its own bucket"
        );
        assert!(l.check(&"alice", t0 + Duration::from_secs(6)).is_ok());
    }

    #[test]
    fn keyed_table_stays_bounded() {
        let t0 = Instant::now();
        let l = KeyedLimiter::per_minute(5, 100);
        for i in 0..10_000u32 {
            let _ = l.check(&i, t0 + Duration::from_secs(u64::from(i)));
            assert!(l.len() <= 100);
        }
        // Quiet keys were forgotten, busy ones kept their state.
        assert!(!l.is_empty());
    }
}
