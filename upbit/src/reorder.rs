//! Putting a live source's trades back in sequence. Upbit numbers each trade
//! (`sequential_id`) but does not promise to send them in that order, and re-sends the last
//! trade on every new subscription; a symbol stores only trades newer than the newest it
//! holds. So each trade waits `hold` for earlier ones, then leaves in sequence order; one
//! seen before is a duplicate, and one older than what already left is late and dropped.
//! Pure: time is passed in.

use bourse_actors::feed::FeedTrade;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Sequences remembered per symbol after they leave, to tell a re-sent trade (duplicate)
/// from a late one.
const REMEMBERED: usize = 4096;
/// Most trades one symbol holds back: past it, the oldest leave at once, so a flood cannot
/// fill memory while it waits.
const MAX_WAITING: usize = 10_000;

/// What became of an added trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Waiting for its turn.
    Held,
    /// Seen before (waiting or already left): dropped.
    Duplicate,
    /// Older than a trade that already left: dropped.
    Late,
}

#[derive(Debug, Default)]
struct Symbol {
    waiting: BTreeMap<u64, (Instant, FeedTrade)>,
    /// The newest sequence that left.
    left: u64,
    recent: VecDeque<u64>,
    recent_set: HashSet<u64>,
}

impl Symbol {
    fn remember(&mut self, seq: u64) {
        if self.recent_set.insert(seq) {
            self.recent.push_back(seq);
        }
        while self.recent.len() > REMEMBERED {
            if let Some(old) = self.recent.pop_front() {
                self.recent_set.remove(&old);
            }
        }
    }
}

/// Trades of every symbol, waiting for their turn.
#[derive(Debug)]
pub struct Reorder {
    hold: Duration,
    /// Few (the configured markets at most): found by a scan, no allocation per trade.
    symbols: Vec<(String, Symbol)>,
}

impl Reorder {
    /// Each trade waits `hold` after it arrives.
    pub fn new(hold: Duration) -> Reorder {
        Reorder {
            hold,
            symbols: Vec::new(),
        }
    }

    /// Takes `trade` of `symbol`, arrived at `now`.
    pub fn add(&mut self, symbol: &str, trade: FeedTrade, now: Instant) -> Added {
        let i = match self.symbols.iter().position(|(name, _)| name == symbol) {
            Some(i) => i,
            None => {
                self.symbols.push((symbol.to_string(), Symbol::default()));
                self.symbols.len() - 1
            }
        };
        let s = &mut self.symbols[i].1;
        if s.waiting.contains_key(&trade.seq) || s.recent_set.contains(&trade.seq) {
            return Added::Duplicate;
        }
        if trade.seq <= s.left {
            return Added::Late;
        }
        s.waiting.insert(trade.seq, (now, trade));
        Added::Held
    }

    /// The trades whose turn has come by `now`, per symbol in sequence order: every trade
    /// up to the newest sequence that has waited `hold` (and, past [`MAX_WAITING`] held
    /// trades, the oldest beyond it).
    pub fn due(&mut self, now: Instant) -> Vec<(String, Vec<FeedTrade>)> {
        let mut out = Vec::new();
        for (symbol, s) in &mut self.symbols {
            let waited = s
                .waiting
                .iter()
                .rev()
                .find(|(_, (at, _))| now.saturating_duration_since(*at) >= self.hold)
                .map(|(seq, _)| *seq);
            let over = s
                .waiting
                .len()
                .checked_sub(MAX_WAITING + 1)
                .and_then(|n| s.waiting.keys().nth(n).copied());
            let Some(upto) = waited.max(over) else {
                continue;
            };
            // Everything at or below `upto` (which may be u64::MAX: the source names it).
            let rest = match upto.checked_add(1) {
                Some(next) => s.waiting.split_off(&next),
                None => BTreeMap::new(),
            };
            let ready = std::mem::replace(&mut s.waiting, rest);
            let trades: Vec<FeedTrade> = ready.into_values().map(|(_, t)| t).collect();
            for t in &trades {
                s.remember(t.seq);
            }
            s.left = upto;
            out.push((symbol.clone(), trades));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// How many trades are waiting.
    pub fn waiting(&self) -> usize {
        self.symbols.iter().map(|(_, s)| s.waiting.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bourse_actors::feed::TradeInput;
    use bourse_storage::Side;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn trade(seq: u64) -> FeedTrade {
        FeedTrade {
            seq,
            trade: TradeInput {
                price: 100 + seq % 1000,
                qty: 1,
                side: Side::Buy,
            },
        }
    }

    fn seqs(out: &[(String, Vec<FeedTrade>)], symbol: &str) -> Vec<u64> {
        out.iter()
            .filter(|(s, _)| s == symbol)
            .flat_map(|(_, t)| t.iter().map(|t| t.seq))
            .collect()
    }

    #[test]
    fn out_of_order_within_the_hold_leaves_in_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut r = Reorder::new(Duration::from_millis(100));
        assert_eq!(r.add("A", trade(2), ms(0)), Added::Held);
        assert_eq!(r.add("A", trade(1), ms(50)), Added::Held);
        assert_eq!(r.add("A", trade(2), ms(60)), Added::Duplicate);
        assert!(r.due(ms(99)).is_empty(), "nothing has waited 100 ms");
        assert_eq!(seqs(&r.due(ms(100)), "A"), [1, 2], "2 takes 1 with it");
        assert_eq!(r.add("A", trade(1), ms(110)), Added::Duplicate, "re-sent");
        assert_eq!(r.add("A", trade(4), ms(120)), Added::Held);
        assert_eq!(seqs(&r.due(ms(220)), "A"), [4]);
        assert_eq!(r.add("A", trade(3), ms(230)), Added::Late, "4 already left");
        assert_eq!(r.add("B", trade(3), ms(230)), Added::Held, "per symbol");
        assert_eq!(r.waiting(), 1);
    }

    #[test]
    fn the_largest_sequence_leaves_like_any_other() {
        let t0 = Instant::now();
        let mut r = Reorder::new(Duration::ZERO);
        r.add("A", trade(u64::MAX - 1), t0);
        r.add("A", trade(u64::MAX), t0);
        assert_eq!(seqs(&r.due(t0), "A"), [u64::MAX - 1, u64::MAX]);
        assert_eq!(r.add("A", trade(7), t0), Added::Late);
        assert_eq!(r.waiting(), 0);
    }

    #[test]
    fn a_flood_waits_no_more_than_the_cap() {
        let t0 = Instant::now();
        let mut r = Reorder::new(Duration::from_secs(5));
        for seq in 1..=(MAX_WAITING as u64 + 500) {
            r.add("A", trade(seq), t0);
        }
        let left = seqs(&r.due(t0), "A");
        assert_eq!(
            left,
            (1..=500).collect::<Vec<u64>>(),
            "the oldest leave at once"
        );
        assert_eq!(r.waiting(), MAX_WAITING);
    }

    proptest! {
        /// Any arrival order: each sequence leaves at most once, in rising order per
        /// symbol, and every added trade left, was a duplicate, or was late.
        #[test]
        fn each_trade_leaves_once_and_in_order(
            arrivals in prop::collection::vec((0u64..40, 0u64..300, prop::bool::ANY), 1..200),
            hold in 0u64..150,
        ) {
            let t0 = Instant::now();
            let mut r = Reorder::new(Duration::from_millis(hold));
            let mut arrivals = arrivals;
            arrivals.sort_by_key(|a| a.1);
            let (mut left, mut held) = (HashMap::<&str, Vec<u64>>::new(), 0usize);
            for (seq, at, b) in &arrivals {
                let symbol = if *b { "A" } else { "B" };
                if r.add(symbol, trade(*seq), t0 + Duration::from_millis(*at)) == Added::Held {
                    held += 1;
                }
                for (s, trades) in r.due(t0 + Duration::from_millis(*at)) {
                    let name = if s == "A" { "A" } else { "B" };
                    left.entry(name).or_default().extend(trades.iter().map(|t| t.seq));
                }
            }
            for (s, trades) in r.due(t0 + Duration::from_secs(10)) {
                let name = if s == "A" { "A" } else { "B" };
                left.entry(name).or_default().extend(trades.iter().map(|t| t.seq));
            }
            let mut total = 0;
            for seqs in left.values() {
                prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
                total += seqs.len();
            }
            prop_assert_eq!(total, held, "every held trade left once");
            prop_assert_eq!(r.waiting(), 0);
        }

        /// Trades that arrive at most `hold` after their true time, in any order, all leave,
        /// in sequence: none is late.
        #[test]
        fn a_delay_within_the_hold_loses_nothing(
            delays in prop::collection::vec(0u64..100, 1..100),
        ) {
            let t0 = Instant::now();
            let mut r = Reorder::new(Duration::from_millis(100));
            // Trade i happens at 10 i ms and arrives `delays[i]` (< hold) later.
            let mut arrivals: Vec<(u64, u64)> = delays
                .iter()
                .enumerate()
                .map(|(i, d)| (i as u64 + 1, 10 * i as u64 + d))
                .collect();
            arrivals.sort_by_key(|a| a.1);
            let mut left = Vec::new();
            for (seq, at) in arrivals {
                let now = t0 + Duration::from_millis(at);
                prop_assert_eq!(r.add("A", trade(seq), now), Added::Held);
                left.extend(r.due(now).into_iter().flat_map(|(_, t)| t).map(|t| t.seq));
            }
            left.extend(
                r.due(t0 + Duration::from_secs(60))
                    .into_iter()
                    .flat_map(|(_, t)| t)
                    .map(|t| t.seq),
            );
            let want: Vec<u64> = (1..=delays.len() as u64).collect();
            prop_assert_eq!(left, want);
        }
    }
}
