//! Rolling 24-hour ticker statistics, the other pure core of the `symbol` entity.
//!
//! The window is the last 1440 one-minute buckets (the current one included), built from
//! closed 1m candles plus the open one: a tick costs O(1); a minute boundary re-folds the
//! closed minutes once. Minute granularity is what exchanges publish for "24h" figures.

use bourse_storage::{Candle, Interval};
use std::collections::VecDeque;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The numbers a ticker shows (prices in ticks, volume in lots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TickerStats {
    pub last: u64,
    pub open_24h: u64,
    pub high_24h: u64,
    pub low_24h: u64,
    pub volume_24h: u64,
    /// When the last trade happened (0: never).
    pub last_ts: i64,
}

/// The rolling window.
#[derive(Debug, Clone, Default)]
pub struct Rolling24h {
    closed: VecDeque<Candle>,
    /// Fold of `closed`, kept so a tick costs O(1).
    closed_fold: Option<Candle>,
}

impl Rolling24h {
    /// A window over stored closed 1m candles (oldest first).
    pub fn new(closed_minutes: impl IntoIterator<Item = Candle>) -> Self {
        let mut w = Rolling24h {
            closed: closed_minutes.into_iter().collect(),
            closed_fold: None,
        };
        w.refold();
        w
    }

    /// Adds a closed minute and drops minutes that left the window at `now`.
    pub fn push_closed_minute(&mut self, c: Candle, now: i64) {
        self.closed.push_back(c);
        self.expire(now);
        self.refold();
    }

    /// Drops closed minutes older than the window at `now`.
    pub fn expire(&mut self, now: i64) {
        let start = Interval::M1.bucket(now) - DAY_MS + 60_000;
        let before = self.closed.len();
        while self.closed.front().is_some_and(|c| c.open_time < start) {
            self.closed.pop_front();
        }
        if before != self.closed.len() {
            self.refold();
        }
    }

    /// Once a minute at most: O(1440).
    fn refold(&mut self) {
        let mut it = self.closed.iter();
        self.closed_fold = it.next().copied().map(|mut f| {
            for c in it {
                f.merge(c);
            }
            f
        });
    }

    /// The price a change since `start` is measured from: the open of the oldest minute
    /// that began at or after `start`, or of the open minute when none closed since.
    pub fn open_since(&self, start: i64, open_minute: Option<Candle>) -> Option<u64> {
        let i = self.closed.partition_point(|c| c.open_time < start);
        self.closed
            .get(i)
            .map(|c| c.open)
            .or(open_minute.map(|c| c.open))
    }

    /// The stats given the open minute and the last trade (`last` falls back to `fallback`
    /// when the symbol never traded).
    pub fn stats(
        &self,
        open_minute: Option<Candle>,
        last: Option<(u64, i64)>,
        fallback: u64,
    ) -> TickerStats {
        let window = match (self.closed_fold, open_minute) {
            (Some(mut f), Some(m)) => {
                f.merge(&m);
                Some(f)
            }
            (f, m) => f.or(m),
        };
        let (last_price, last_ts) = last.unwrap_or((fallback, 0));
        match window {
            Some(w) => TickerStats {
                last: last_price,
                open_24h: w.open,
                high_24h: w.high,
                low_24h: w.low,
                volume_24h: w.volume,
                last_ts,
            },
            None => TickerStats {
                last: last_price,
                open_24h: last_price,
                high_24h: last_price,
                low_24h: last_price,
                volume_24h: 0,
                last_ts,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(n: i64, open: u64, close: u64, vol: u64) -> Candle {
        Candle {
            open_time: n * 60_000,
            open,
            high: open.max(close),
            low: open.min(close),
            close,
            volume: vol,
        }
    }

    #[test]
    fn window_covers_the_last_1440_minutes() {
        let mut w = Rolling24h::new([]);
        for n in 0..2000 {
            w.push_closed_minute(
                minute(n, 100 + n as u64, 101 + n as u64, 1),
                (n + 1) * 60_000,
            );
        }
        let now = 2000 * 60_000;
        let open = minute(2000, 5000, 5001, 2);
        let s = w.stats(Some(open), Some((5001, now)), 0);
        // Closed minutes 561..=1999 (1439 of them) plus the open one.
        assert_eq!(s.open_24h, 100 + 561);
        assert_eq!(s.volume_24h, 1439 + 2);
        assert_eq!(s.high_24h, 5001);
        assert_eq!(s.low_24h, 100 + 561);
        assert_eq!(s.last, 5001);
    }

    #[test]
    fn change_reference_is_the_open_of_the_windows_first_minute() {
        let w = Rolling24h::new((0..10).map(|n| minute(n, 100 + n as u64, 0, 1)));
        let open = minute(10, 900, 901, 1);
        assert_eq!(w.open_since(3 * 60_000, Some(open)), Some(103));
        assert_eq!(w.open_since(10 * 60_000, Some(open)), Some(900));
        assert_eq!(w.open_since(10 * 60_000, None), None);
    }

    #[test]
    fn no_trades_shows_the_fallback_price() {
        let s = Rolling24h::new([]).stats(None, None, 777);
        assert_eq!(
            (s.last, s.open_24h, s.volume_24h, s.last_ts),
            (777, 777, 0, 0)
        );
    }
}
