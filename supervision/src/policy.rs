//! Restart policy: whether a supervisor restarts a failed child, and when.
//!
//! A child that fails is restarted after an exponential backoff with jitter (so a herd of
//! entities that crashed together does not restart in lock-step against the same store);
//! more than `max_restarts` failures inside the `within` window means restarting is not
//! helping, and the failure escalates to the supervisor's own parent (restart intensity, as
//! in Erlang/OTP and Akka). The decision logic is pure and clock-injected so it is unit-tested
//! without actors.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restart limits and backoff shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Failures tolerated inside `within` before escalating.
    pub max_restarts: u32,
    /// The restart-intensity window.
    pub within: Duration,
    /// Delay before the first restart.
    pub backoff_min: Duration,
    /// Longest delay between restarts.
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 10,
            within: Duration::from_secs(10),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// What a supervisor should do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart the child after this delay.
    Restart { after: Duration },
    /// Give up on this child: too many failures in the window; report to the parent.
    Escalate,
}

/// The failure history of one child under a [`RestartPolicy`].
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    failures: VecDeque<Instant>,
    rng: fastrand::Rng,
}

impl RestartTracker {
    /// A tracker with no failures yet.
    pub fn new(policy: RestartPolicy) -> Self {
        RestartTracker {
            policy,
            failures: VecDeque::new(),
            rng: fastrand::Rng::new(),
        }
    }

    /// A tracker whose jitter is reproducible (tests).
    pub fn with_seed(policy: RestartPolicy, seed: u64) -> Self {
        RestartTracker {
            rng: fastrand::Rng::with_seed(seed),
            ..Self::new(policy)
        }
    }

    /// Records a failure at `now` and decides what to do.
    pub fn on_failure(&mut self, now: Instant) -> Decision {
        while let Some(&first) = self.failures.front() {
            if now.duration_since(first) > self.policy.within {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        self.failures.push_back(now);
        let recent = self.failures.len() as u32;
        if recent > self.policy.max_restarts {
            return Decision::Escalate;
        }
        Decision::Restart {
            after: self.backoff(recent),
        }
    }

    /// The limits it applies.
    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// Failures currently inside the window (including the latest).
    pub fn recent_failures(&self) -> usize {
        self.failures.len()
    }

    /// `min * 2^(n-1)`, capped at `max`, then "equal jitter": half fixed, half random, so the
    /// delay stays within [d/2, d].
    fn backoff(&mut self, consecutive: u32) -> Duration {
        let base = self.policy.backoff_min.as_millis() as u64;
        let cap = self.policy.backoff_max.as_millis() as u64;
        let shift = consecutive.saturating_sub(1).min(32);
        let full = base.saturating_mul(1u64 << shift).min(cap).max(1);
        let half = full / 2;
        Duration::from_millis(half + self.rng.u64(0..=full - half))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            within: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
        }
    }

    #[test]
    fn restarts_until_intensity_then_escalates() {
        let mut t = RestartTracker::with_seed(policy(), 1);
        let now = Instant::now();
        for i in 0..3 {
            assert!(
                matches!(
                    t.on_failure(now + Duration::from_secs(i)),
                    Decision::Restart { .. }
                ),
                "failure {i}"
            );
        }
        assert_eq!(
            t.on_failure(now + Duration::from_secs(3)),
            Decision::Escalate
        );
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut t = RestartTracker::with_seed(policy(), 2);
        let now = Instant::now();
        for i in 0..3 {
            t.on_failure(now + Duration::from_secs(i));
        }
        // 20 s later the three old failures no longer count.
        let later = now + Duration::from_secs(22);
        assert!(matches!(t.on_failure(later), Decision::Restart { .. }));
        assert_eq!(t.recent_failures(), 1);
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_cap() {
        let mut t = RestartTracker::with_seed(
            RestartPolicy {
                max_restarts: 100,
                ..policy()
            },
            3,
        );
        let now = Instant::now();
        let mut delays = Vec::new();
        for i in 0..8 {
            match t.on_failure(now + Duration::from_millis(i)) {
                Decision::Restart { after } => delays.push(after.as_millis() as u64),
                Decision::Escalate => panic!("escalated early"),
            }
        }
        // Each delay lies in [d/2, d] for d = min(100 * 2^(n-1), 1000).
        for (n, &d) in delays.iter().enumerate() {
            let full = (100u64 << n).min(1000);
            assert!(
                (full / 2..=full).contains(&d),
                "delay {n} = {d}, full {full}"
            );
        }
        assert!(delays[7] >= 500, "capped delays stay near the cap");
    }
}
