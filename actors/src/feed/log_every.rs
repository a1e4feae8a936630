//! Warnings about an outside system's failures, rate-limited by their text.

/// Texts remembered at most: an outside system choosing its error texts cannot grow the map.
const REMEMBERED: usize = 256;

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A warning logged at most once per `every` for the same text: a broker or exchange
/// outage says so without a line per retry.
#[derive(Debug)]
pub struct LogEvery {
    every: Duration,
    last: HashMap<String, Instant>,
}

impl LogEvery {
    /// Each text at most once per `every`.
    pub fn new(every: Duration) -> LogEvery {
        LogEvery {
            every,
            last: HashMap::new(),
        }
    }

    /// Logs `error` under `what`, unless the same text was logged within `every`.
    pub fn warn(&mut self, what: &str, error: String) {
        let due = self
            .last
            .get(&error)
            .is_none_or(|at| at.elapsed() >= self.every);
        if due {
            tracing::warn!(%error, "{what}");
            if self.last.len() >= REMEMBERED {
                let every = self.every;
                self.last.retain(|_, at| at.elapsed() < every);
                if self.last.len() >= REMEMBERED {
                    self.last.clear();
                }
            }
            self.last.insert(error, Instant::now());
        }
    }
}
