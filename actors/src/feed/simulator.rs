//! The built-in market simulator: a seeded random walk per symbol with realistic trade
//! sizes. Deterministic: the same seed, market and start price give the same trades.
//! Integer arithmetic only — prices in ticks, sizes in lots, notionals in quote units.

use bourse_config::Market;
use bourse_storage::Side;
use serde::{Deserialize, Serialize};

/// One simulated trade, before the symbol entity numbers and timestamps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeInput {
    /// In ticks.
    pub price: u64,
    /// In lots.
    pub qty: u64,
    /// Taker side.
    pub side: Side,
}

/// The generator for one market.
#[derive(Debug, Clone)]
pub struct Simulator {
    rng: fastrand::Rng,
    price: u64,
    market: Market,
    floor: u64,
}

impl Simulator {
    /// A simulator for `market` starting at `start_price` ticks.
    pub fn new(seed: u64, market: &Market, start_price: u64) -> Simulator {
        // Mix the symbol into the seed so markets differ but stay reproducible.
        let symbol_hash = market
            .symbol
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        Simulator {
            rng: fastrand::Rng::with_seed(seed ^ symbol_hash),
            price: start_price.max(1),
            market: market.clone(),
            // The walk never goes below 1/20 of where it started.
            floor: (start_price / 20).max(1),
        }
    }

    /// The current price, in ticks.
    pub fn price(&self) -> u64 {
        self.price
    }

    /// Continues the walk from `price` (the symbol's last trade, when this node takes the
    /// symbol over from another).
    pub fn set_price(&mut self, price: u64) {
        self.price = price.max(1);
    }

    /// The next trade.
    pub fn next_trade(&mut self) -> TradeInput {
        let side = if self.rng.bool() {
            Side::Buy
        } else {
            Side::Sell
        };
        // Move: mostly 0-3 basis points, now and then up to 30, leaning with the taker.
        let bps = if self.rng.u8(..100) < 3 {
            self.rng.u64(0..=30)
        } else {
            self.rng.u64(0..=3)
        };
        let mut delta = self.price.saturating_mul(bps) / 10_000;
        if delta == 0 && self.rng.u8(..100) < 30 {
            delta = 1;
        }
        let up = match side {
            Side::Buy => self.rng.u8(..100) < 55,
            Side::Sell => self.rng.u8(..100) < 45,
        };
        self.price = if up {
            self.price.saturating_add(delta)
        } else {
            self.price.saturating_sub(delta).max(self.floor)
        };
        // Size: a notional of 5,000 quote units doubled 0-10 times (heavy tail), ±50%.
        let doublings = self.rng.u32(0..=10).min(self.rng.u32(0..=10));
        let notional = 5_000u64 * (1 << doublings) * self.rng.u64(500..=1500) / 1000;
        TradeInput {
            price: self.price,
            qty: self.market.lots_for(notional, self.price),
            side,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bourse_config::Settings;

    fn btc() -> Market {
        let (_, markets) = Settings::from_sources("", std::iter::empty()).unwrap();
        markets.get("KRW-BTC").unwrap().clone()
    }

    #[test]
    fn same_seed_same_trades() {
        let m = btc();
        let mut a = Simulator::new(7, &m, m.initial_price);
        let mut b = Simulator::new(7, &m, m.initial_price);
        let mut c = Simulator::new(8, &m, m.initial_price);
        let ta: Vec<_> = (0..1000).map(|_| a.next_trade()).collect();
        let tb: Vec<_> = (0..1000).map(|_| b.next_trade()).collect();
        let tc: Vec<_> = (0..1000).map(|_| c.next_trade()).collect();
        assert_eq!(ta, tb);
        assert_ne!(ta, tc);
    }

    #[test]
    fn sizes_and_prices_are_realistic() {
        let m = btc();
        let mut sim = Simulator::new(1, &m, m.initial_price);
        let trades: Vec<_> = (0..20_000).map(|_| sim.next_trade()).collect();
        for t in &trades {
            assert!(t.qty >= 1);
            // Notional in KRW = price_ticks * 1000 * qty_lots / 10_000.
            let krw = t.price as u128 * 1000 * t.qty as u128 / 10_000;
            assert!(krw < 20_000_000, "notional {krw} KRW");
        }
        let (lo, hi) = trades.iter().fold((u64::MAX, 0), |(lo, hi), t| {
            (lo.min(t.price), hi.max(t.price))
        });
        // 20k trades (~17 minutes at 20/s) stay within ±30% of the start.
        assert!(
            lo > m.initial_price * 7 / 10 && hi < m.initial_price * 13 / 10,
            "{lo}..{hi}"
        );
        assert!(
            trades.iter().any(|t| t.side == Side::Buy)
                && trades.iter().any(|t| t.side == Side::Sell)
        );
    }
}
