//! Candle roll-up, the pure core of the `symbol` entity: 1s candles from trades, and every
//! coarser interval rolled up from the finer one it is built on (1s → 1m → 3m/5m,
//! 5m → 15m → 30m → 1h → 4h → 1d → 1w).
//!
//! Each coarser level keeps `acc`, the fold of its finer level's *closed* candles in its
//! current bucket; its open candle is `acc` merged with the finer level's open candle. A
//! bucket closes when time (a trade, or the clock) passes its end: the finest level closes
//! first and folds into its parents, which may close in turn. No actors, no I/O.

use bourse_storage::{Candle, Interval};

const LEVELS: usize = Interval::ALL.len();

/// The open candles of every interval of one symbol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CandleSet {
    /// The open 1s candle.
    s1: Option<Candle>,
    /// Per level (index 0 unused): fold of the closed finer candles in the current bucket.
    acc: [Option<Candle>; LEVELS],
}

fn fold(into: &mut Option<Candle>, bucket: i64, c: &Candle) {
    match into {
        Some(acc) => acc.merge(c),
        None => {
            *into = Some(Candle {
                open_time: bucket,
                ..*c
            })
        }
    }
}

impl CandleSet {
    /// No candles yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the state as of the trade at `t_last` (the newest durable trade): `s1_ticks`
    /// are `(price, qty)` of the trades in `t_last`'s 1s bucket, oldest first, and
    /// `closed_finer(level)` gives the stored candles of the level's finer interval in
    /// `[bucket(level, t_last), bucket(finer, t_last))`, oldest first.
    pub fn restore(
        t_last: i64,
        s1_ticks: &[(u64, u64)],
        mut closed_finer: impl FnMut(Interval) -> Vec<Candle>,
    ) -> CandleSet {
        let mut set = CandleSet::new();
        let s1_bucket = Interval::S1.bucket(t_last);
        for &(price, qty) in s1_ticks {
            fold(
                &mut set.s1,
                s1_bucket,
                &Candle::from_trade(s1_bucket, price, qty),
            );
        }
        for level in &Interval::ALL[1..] {
            let bucket = level.bucket(t_last);
            for c in closed_finer(*level) {
                fold(&mut set.acc[level.index()], bucket, &c);
            }
        }
        set
    }

    /// Closes every bucket that ended at or before `now`; returns the closed candles, finest
    /// first, each once.
    pub fn advance(&mut self, now: i64) -> Vec<(Interval, Candle)> {
        let mut closed = Vec::new();
        if let Some(c) = self.s1
            && c.open_time != Interval::S1.bucket(now)
        {
            self.s1 = None;
            closed.push((Interval::S1, c));
            self.fold_into_parents(Interval::S1, &c);
        }
        for level in &Interval::ALL[1..] {
            let i = level.index();
            if let Some(c) = self.acc[i]
                && c.open_time != level.bucket(now)
            {
                self.acc[i] = None;
                closed.push((*level, c));
                self.fold_into_parents(*level, &c);
            }
        }
        closed
    }

    fn fold_into_parents(&mut self, child: Interval, c: &Candle) {
        for parent in &Interval::ALL[child.index() + 1..] {
            if parent.finer() == Some(child) {
                fold(&mut self.acc[parent.index()], parent.bucket(c.open_time), c);
            }
        }
    }

    /// Applies one trade at `ts` (non-decreasing across calls); returns what closed first.
    pub fn apply_trade(&mut self, ts: i64, price: u64, qty: u64) -> Vec<(Interval, Candle)> {
        let closed = self.advance(ts);
        let bucket = Interval::S1.bucket(ts);
        fold(
            &mut self.s1,
            bucket,
            &Candle::from_trade(bucket, price, qty),
        );
        closed
    }

    /// The open candle of every level (finest first), `None` where the bucket has no trade.
    pub fn open_candles(&self) -> [Option<Candle>; LEVELS] {
        let mut views = [None; LEVELS];
        views[0] = self.s1;
        for level in &Interval::ALL[1..] {
            let i = level.index();
            let child = level.finer().and_then(|f| views[f.index()]);
            views[i] = match (self.acc[i], child) {
                (Some(mut a), Some(c)) => {
                    a.merge(&c);
                    Some(a)
                }
                (Some(a), None) => Some(a),
                (None, Some(c)) => Some(Candle {
                    open_time: level.bucket(c.open_time),
                    ..c
                }),
                (None, None) => None,
            };
        }
        views
    }

    /// The open candle of one interval.
    pub fn open_candle(&self, interval: Interval) -> Option<Candle> {
        self.open_candles()[interval.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The reference: group raw trades by bucket, straight from the definition.
    fn brute_force(trades: &[(i64, u64, u64)], interval: Interval) -> Vec<Candle> {
        let mut buckets: BTreeMap<i64, Candle> = BTreeMap::new();
        for &(ts, price, qty) in trades {
            let b = interval.bucket(ts);
            buckets
                .entry(b)
                .and_modify(|c| {
                    c.high = c.high.max(price);
                    c.low = c.low.min(price);
                    c.close = price;
                    c.volume += qty;
                })
                .or_insert(Candle::from_trade(b, price, qty));
        }
        buckets.into_values().collect()
    }

    /// Random trades with gaps from milliseconds to weeks, so every interval's boundaries
    /// are crossed, and clock calls in between.
    fn trades_strategy() -> impl Strategy<Value = Vec<(i64, u64, u64, bool)>> {
        let gap = prop_oneof![
            4 => 0i64..400,
            3 => 0i64..5_000,
            2 => 0i64..400_000,
            1 => 0i64..30_000_000,
            1 => 0i64..900_000_000,
        ];
        prop::collection::vec((gap, 1u64..10_000, 1u64..500, any::<bool>()), 1..300)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn every_interval_equals_brute_force(steps in trades_strategy(), start in 1_600_000_000_000i64..1_800_000_000_000) {
            let mut set = CandleSet::new();
            let mut closed: Vec<(Interval, Candle)> = Vec::new();
            let mut trades = Vec::new();
            let mut ts = start;
            for (gap, price, qty, clock_first) in steps {
                ts += gap;
                if clock_first {
                    // The clock may run at any time up to the next trade.
                    closed.extend(set.advance(ts));
                }
                closed.extend(set.apply_trade(ts, price, qty));
                trades.push((ts, price, qty));
            }
            for interval in Interval::ALL {
                let expect = brute_force(&trades, interval);
                let mut got: Vec<Candle> = closed.iter().filter(|(i, _)| *i == interval).map(|(_, c)| *c).collect();
                got.extend(set.open_candle(interval));
                prop_assert_eq!(&got, &expect, "interval {:?}", interval);
            }
        }

        #[test]
        fn restore_continues_exactly(steps in trades_strategy(), cut in 0usize..300, start in 1_600_000_000_000i64..1_800_000_000_000) {
            // Run to a cut point, "crash", rebuild from what storage would hold (closed
            // candles and ticks), carry on: the result equals an uninterrupted run.
            let mut reference = CandleSet::new();
            let mut crashed = CandleSet::new();
            let mut stored: Vec<(Interval, Candle)> = Vec::new();
            let mut ticks: Vec<(i64, u64, u64)> = Vec::new();
            let mut ts = start;
            let cut = cut.min(steps.len().saturating_sub(1));
            for (n, (gap, price, qty, _)) in steps.iter().enumerate() {
                ts += gap;
                reference.apply_trade(ts, *price, *qty);
                if n <= cut {
                    stored.extend(crashed.apply_trade(ts, *price, *qty));
                    ticks.push((ts, *price, *qty));
                    if n == cut {
                        let t_last = ts;
                        let s1: Vec<(u64, u64)> = ticks.iter().filter(|t| Interval::S1.bucket(t.0) == Interval::S1.bucket(t_last)).map(|t| (t.1, t.2)).collect();
                        crashed = CandleSet::restore(t_last, &s1, |level| {
                            let finer = level.finer().unwrap_or(Interval::S1);
                            let (from, to) = (level.bucket(t_last), finer.bucket(t_last));
                            stored.iter().filter(|(i, c)| *i == finer && c.open_time >= from && c.open_time < to).map(|(_, c)| *c).collect()
                        });
                    }
                } else {
                    crashed.apply_trade(ts, *price, *qty);
                }
            }
            prop_assert_eq!(crashed.open_candles(), reference.open_candles());
        }
    }

    #[test]
    fn clock_closes_without_trades() {
        let mut set = CandleSet::new();
        set.apply_trade(1_000, 5, 1);
        assert!(set.advance(1_999).is_empty());
        let closed = set.advance(2_000);
        assert_eq!(
            closed,
            vec![(Interval::S1, Candle::from_trade(1_000, 5, 1))]
        );
        assert_eq!(set.open_candle(Interval::S1), None);
        assert_eq!(set.open_candle(Interval::M1).map(|c| c.volume), Some(1));
        assert!(set.advance(2_500).is_empty(), "a bucket closes once");
    }
}
