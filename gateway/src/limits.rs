//! Per-connection request rate limiting: a token bucket holding one second's worth of
//! requests, refilled continuously (PROTOCOL.md "Limits").

use std::time::Instant;

/// The bucket.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// Allows `per_sec` requests per second, with bursts up to `per_sec`.
    pub fn new(per_sec: u32, now: Instant) -> Self {
        RateLimiter {
            per_sec: f64::from(per_sec.max(1)),
            tokens: f64::from(per_sec.max(1)),
            last: now,
        }
    }

    /// Takes one token at `now`; false when the client is over its rate.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_sec).min(self.per_sec);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
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
}
