//! Every trader's return over the day, the week and all time, kept current as holdings and
//! prices change, in one [`Board`] per period. Pure: holdings, prices and period starts go
//! in; ranks come out.
//!
//! A trader's value is the portfolio's total in the ranking currency (the quote of the
//! first market): cash plus each position at its market's last price (at cost without
//! one). The return over a period is `(value − base) / base` in millionths, where the base
//! is the value at the period's start (the holdings then, at the prices then), or, for a
//! trader who had none yet, and for all time, the value of the demo grant.

use super::board::{Board, Standing};
use crate::account::portfolio::Holdings;
use bourse_config::Markets;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The periods traders are ranked over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Period {
    /// Since 00:00 UTC today.
    Day,
    /// Since Monday 00:00 UTC.
    Week,
    /// Since the grant.
    All,
}

impl Period {
    pub const ALL: [Period; 3] = [Period::Day, Period::Week, Period::All];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::All => "all",
        }
    }

    /// The period a wire name means.
    pub fn parse(name: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|p| p.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// When the period containing `now` (ms) began; `None` for all time.
    pub fn start(self, now: i64) -> Option<i64> {
        let day = now.div_euclid(DAY_MS);
        match self {
            Period::Day => Some(day * DAY_MS),
            // 1970-01-01 was a Thursday: Monday is three days later in each week.
            Period::Week => Some((day - (day + 3).rem_euclid(7)) * DAY_MS),
            Period::All => None,
        }
    }
}

/// A return in millionths: `(value − base) × 10⁶ / base`, clamped to `i64`.
pub fn return_ppm(value: u128, base: u128) -> i64 {
    if base == 0 {
        return 0;
    }
    let diff = value as i128 - base as i128;
    let ppm = diff.saturating_mul(1_000_000) / base as i128;
    ppm.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

struct Trader {
    holdings: Holdings,
    /// The value at the start of the day and of the week.
    base: [u128; 2],
}

/// The rankings of every trader.
pub struct Table {
    markets: Markets,
    currency: String,
    /// The grant's value: every trader's all-time base.
    grant: u128,
    traders: HashMap<u64, Trader>,
    /// Who holds a position in each market.
    holders: HashMap<String, BTreeSet<u64>>,
    prices: BTreeMap<String, u64>,
    /// The day's and the week's start the bases belong to.
    starts: [i64; 2],
    boards: [Board; 3],
}

impl Table {
    /// An empty table at `now`, valuing in `currency`; `grant` is what a new trader holds.
    pub fn new(markets: Markets, currency: String, grant: &Holdings, now: i64) -> Table {
        let grant = grant.total_in(&markets, &BTreeMap::new(), &currency);
        Table {
            markets,
            currency,
            grant,
            traders: HashMap::new(),
            holders: HashMap::new(),
            prices: BTreeMap::new(),
            starts: [Period::Day, Period::Week].map(|p| p.start(now).unwrap_or(0)),
            boards: [Board::new(), Board::new(), Board::new()],
        }
    }

    /// The ranking currency.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// How many traders are ranked.
    pub fn len(&self) -> usize {
        self.traders.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.traders.is_empty()
    }

    /// `holdings` valued at `prices`, in the ranking currency.
    fn value_at(&self, holdings: &Holdings, prices: &BTreeMap<String, u64>) -> u128 {
        holdings.total_in(&self.markets, prices, &self.currency)
    }

    /// A trader's three returns at the current prices.
    fn scores(&self, t: &Trader) -> [i64; 3] {
        let value = self.value_at(&t.holdings, &self.prices);
        [
            return_ppm(value, t.base[0]),
            return_ppm(value, t.base[1]),
            return_ppm(value, self.grant),
        ]
    }

    /// Puts `user`'s three returns on the boards.
    fn rescore(&mut self, user: u64) {
        let Some(t) = self.traders.get(&user) else {
            return;
        };
        let scores = self.scores(t);
        for (board, score) in self.boards.iter_mut().zip(scores) {
            board.set(user, score);
        }
    }

    /// Every trader rescored, the boards built again in one sort each: cheaper than moving
    /// most traders one at a time (after [`Table::load`] and [`Table::set_base`]).
    pub fn rescore_all(&mut self) {
        let scores: Vec<(u64, [i64; 3])> = self
            .traders
            .iter()
            .map(|(user, t)| (*user, self.scores(t)))
            .collect();
        for (i, board) in self.boards.iter_mut().enumerate() {
            *board = Board::from_scores(scores.iter().map(|(user, s)| (*user, s[i])));
        }
    }

    /// `user` now holds `holdings` (a fill changed them, or the user appeared). A new
    /// trader's day and week start from the grant.
    pub fn set_holdings(&mut self, user: u64, holdings: Holdings) {
        self.load(user, holdings);
        self.rescore(user);
    }

    /// [`Table::set_holdings`] without ranking the trader again: for loading many, then
    /// [`Table::rescore_all`] once.
    pub fn load(&mut self, user: u64, holdings: Holdings) {
        let base = match self.traders.remove(&user) {
            Some(old) => {
                for symbol in old.holdings.positions.keys() {
                    if let Some(users) = self.holders.get_mut(symbol) {
                        users.remove(&user);
                    }
                }
                old.base
            }
            None => [self.grant; 2],
        };
        for (symbol, p) in &holdings.positions {
            if p.qty > 0 {
                self.holders.entry(symbol.clone()).or_default().insert(user);
            }
        }
        self.traders.insert(user, Trader { holdings, base });
    }

    /// New last prices; every holder of a market whose price moved is rescored.
    pub fn set_prices(&mut self, prices: BTreeMap<String, u64>) {
        let mut changed = Vec::new();
        for (symbol, price) in prices {
            if self.prices.get(&symbol) != Some(&price) {
                self.prices.insert(symbol.clone(), price);
                changed.push(symbol);
            }
        }
        // Past an eighth of the traders (and a few), one sort beats that many moves: the
        // count stops as soon as it gets there.
        let limit = (self.traders.len() / 8).max(64);
        let mut moved = BTreeSet::new();
        for symbol in &changed {
            for user in self.holders.get(symbol).into_iter().flatten() {
                moved.insert(*user);
                if moved.len() > limit {
                    self.rescore_all();
                    return;
                }
            }
        }
        for user in moved {
            self.rescore(user);
        }
    }

    /// At `now`: when a day or a week began since the bases were taken, every trader's base
    /// for it becomes the value now (the holdings and prices at the turn), so every return
    /// over it starts again from zero. Returns whether anything rolled. The boards change at
    /// the next [`Table::rescore_all`] (after the bases storage gives, if any).
    pub fn roll(&mut self, now: i64) -> bool {
        let starts = [Period::Day, Period::Week].map(|p| p.start(now).unwrap_or(0));
        let rolled: Vec<usize> = (0..2).filter(|i| starts[*i] > self.starts[*i]).collect();
        if rolled.is_empty() {
            return false;
        }
        self.starts = starts;
        let values: Vec<(u64, u128)> = self
            .traders
            .iter()
            .map(|(user, t)| (*user, self.value_at(&t.holdings, &self.prices)))
            .collect();
        for (user, value) in values {
            if let Some(t) = self.traders.get_mut(&user) {
                for i in &rolled {
                    t.base[*i] = value;
                }
            }
        }
        true
    }

    /// Sets `user`'s base for `period` (day or week) to `holdings` valued at `prices`: what
    /// the user held when the period began, at the prices then. The boards change at the
    /// next [`Table::rescore_all`].
    pub fn set_base(
        &mut self,
        user: u64,
        period: Period,
        holdings: &Holdings,
        prices: &BTreeMap<String, u64>,
    ) {
        if period == Period::All {
            return;
        }
        let value = self.value_at(holdings, prices);
        if let Some(t) = self.traders.get_mut(&user) {
            t.base[period.index()] = value;
        }
    }

    /// The best `n` over `period`.
    pub fn top(&self, period: Period, n: usize) -> Vec<Standing> {
        self.boards[period.index()].top(n)
    }

    /// `user`'s place over `period`.
    pub fn standing(&self, period: Period, user: u64) -> Option<Standing> {
        self.boards[period.index()].standing(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::position::Position;
    use bourse_config::Settings;
    use proptest::prelude::*;

    fn markets() -> Markets {
        Settings::from_sources("", std::iter::empty()).unwrap().1
    }

    fn holding(markets: &Markets, krw: u128, btc_lots: u128, price: u64) -> Holdings {
        let m = markets.get("KRW-BTC").unwrap();
        let mut p = Position::default();
        p.buy(
            btc_lots * m.base_per_lot,
            m.quote_amount(btc_lots * u128::from(price)),
        );
        Holdings {
            cash: BTreeMap::from([("KRW".to_string(), krw)]),
            positions: BTreeMap::from([("KRW-BTC".to_string(), p)]),
        }
    }

    #[test]
    fn periods_start_at_utc_midnight_and_on_mondays() {
        // 2026-12-06 05:00 UTC is a Sunday; that week began Monday 2026-11-30.
        let now = 1_796_533_200_000;
        assert_eq!(Period::Day.start(now), Some(1_796_515_200_000));
        assert_eq!(
            Period::Week.start(now),
            Some(1_796_515_200_000 - 6 * DAY_MS)
        );
        assert_eq!(
            Period::Week.start(0),
            Some(-3 * DAY_MS),
            "1970-01-01 was a Thursday"
        );
        assert_eq!(Period::parse("week"), Some(Period::Week));
        assert_eq!(Period::parse("month"), None);
    }

    #[test]
    fn returns_follow_holdings_prices_and_the_turn_of_the_day() {
        let m = markets();
        let grant = holding(&m, 1_000_000, 0, 0);
        let mut t = Table::new(m.clone(), "KRW".into(), &grant, 10 * DAY_MS + 5);
        // A spent half the grant on bitcoin at 10,000; B kept cash.
        t.set_holdings(1, holding(&m, 500_000, 5, 10_000));
        t.set_holdings(2, holding(&m, 1_000_000, 0, 0));
        t.set_prices(BTreeMap::from([("KRW-BTC".to_string(), 10_000)]));
        let bought = m.get("KRW-BTC").unwrap().quote_amount(5 * 10_000);
        assert_eq!(bought, 500_000, "the test's numbers are what it says");
        assert_eq!(t.standing(Period::All, 1).map(|s| s.score), Some(0));
        // Bitcoin doubles: A is up 50% over every period, B flat.
        t.set_prices(BTreeMap::from([("KRW-BTC".to_string(), 20_000)]));
        for p in Period::ALL {
            assert_eq!(
                t.top(p, 2)
                    .iter()
                    .map(|s| (s.user, s.score))
                    .collect::<Vec<_>>(),
                [(1, 500_000), (2, 0)]
            );
        }
        // The next day: the day's returns start again; the week's and all time's go on.
        assert!(t.roll(11 * DAY_MS));
        t.rescore_all();
        assert_eq!(t.standing(Period::Day, 1).map(|s| s.score), Some(0));
        assert_eq!(t.standing(Period::All, 1).map(|s| s.score), Some(500_000));
        assert!(!t.roll(11 * DAY_MS + 1), "once a day");
        // A base given for the day (holdings then at prices then) replaces it.
        t.set_base(
            1,
            Period::Day,
            &holding(&m, 500_000, 5, 10_000),
            &BTreeMap::from([("KRW-BTC".to_string(), 10_000)]),
        );
        t.rescore_all();
        assert_eq!(t.standing(Period::Day, 1).map(|s| s.score), Some(500_000));
        // Selling moves A off the bitcoin holders: a price move no longer changes A.
        t.set_holdings(1, holding(&m, 1_500_000, 0, 0));
        t.set_prices(BTreeMap::from([("KRW-BTC".to_string(), 5_000)]));
        assert_eq!(t.standing(Period::All, 1).map(|s| s.score), Some(500_000));
        assert_eq!(t.len(), 2);
    }

    proptest! {
        /// After any updates, each board's order is the returns recomputed from scratch.
        #[test]
        fn boards_match_a_recomputation(
            ops in prop::collection::vec((0u64..6, 0u128..2_000_000, 0u128..20, 1u64..500), 1..60)
        ) {
            let m = markets();
            let grant = holding(&m, 1_000_000, 0, 0);
            let mut t = Table::new(m.clone(), "KRW".into(), &grant, 0);
            let mut model: BTreeMap<u64, Holdings> = BTreeMap::new();
            let mut price = None;
            for (i, (user, krw, lots, p)) in ops.into_iter().enumerate() {
                if i % 3 == 2 {
                    t.set_prices(BTreeMap::from([("KRW-BTC".to_string(), p)]));
                    price = Some(p);
                } else {
                    let h = holding(&m, krw, lots, p);
                    t.set_holdings(user, h.clone());
                    model.insert(user, h);
                }
            }
            let prices: BTreeMap<String, u64> = price.map(|p| ("KRW-BTC".to_string(), p)).into_iter().collect();
            let grant_value = grant.total(&m, &BTreeMap::new())["KRW"];
            let mut want: Vec<(i64, u64)> = model
                .iter()
                .map(|(u, h)| (return_ppm(h.total(&m, &prices)["KRW"], grant_value), *u))
                .collect();
            want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            for period in Period::ALL {
                let got: Vec<(i64, u64)> = t.top(period, 100).iter().map(|s| (s.score, s.user)).collect();
                prop_assert_eq!(&got, &want);
            }
            // The boards built again in one sort (what a price move of most traders does)
            // say the same.
            t.rescore_all();
            for period in Period::ALL {
                let got: Vec<(i64, u64)> = t.top(period, 100).iter().map(|s| (s.score, s.user)).collect();
                prop_assert_eq!(&got, &want);
            }
        }
    }
}
