//! The market maker's pure core: the ladder of quotes it wants around a fair price, and the
//! cancels and placements that turn what rests on the book into that ladder. No actors,
//! no I/O: the participants task feeds it the maker's open orders and carries out the plan.

use crate::book::engine::Side;
use bourse_config::{Market, ParticipantsSettings};

/// One price level the maker wants to quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub side: Side,
    /// In ticks.
    pub price: u64,
    /// In lots.
    pub qty: u64,
}

/// One of the maker's orders resting on the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resting {
    pub order_id: u64,
    pub side: Side,
    pub price: u64,
    /// Lots not yet filled.
    pub left: u64,
}

/// What to do to the book: cancel first (so a moved quote never meets the maker's own
/// stale one), then place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub cancel: Vec<u64>,
    pub place: Vec<Level>,
}

/// `bps` basis points of `price`, at least one tick.
fn bps_of(price: u64, bps: u32) -> u64 {
    (u128::from(price) * u128::from(bps) / 10_000).max(1) as u64
}

/// The levels to quote around `fair` (ticks): `depth` bids below and `depth` asks above,
/// the best of each `spread_bps / 2` away from `fair`, the rest `step_bps` apart, each
/// worth `level_notional` of the quote currency (within the market's order size limit).
/// Bids that would fall to zero are left out.
pub fn ladder(market: &Market, fair: u64, s: &ParticipantsSettings) -> Vec<Level> {
    let fair = fair.max(1);
    let half = (bps_of(fair, s.spread_bps) / 2).max(1);
    let step = bps_of(fair, s.step_bps);
    let level = |side, price| Level {
        side,
        price,
        qty: market.lots_for(s.level_notional, price).min(market.max_qty),
    };
    let mut levels = Vec::with_capacity(2 * s.depth as usize);
    for i in 0..u64::from(s.depth) {
        let away = half.saturating_add(step.saturating_mul(i));
        if let Some(bid) = fair.checked_sub(away).filter(|p| *p > 0) {
            levels.push(level(Side::Buy, bid));
        }
        levels.push(level(Side::Sell, fair.saturating_add(away)));
    }
    levels
}

/// Turns `resting` into `want`: an order already at a wanted level is kept while at least
/// half its size is left; every other order is cancelled, and the levels no kept order
/// holds are placed.
pub fn plan(resting: &[Resting], want: &[Level]) -> Plan {
    let mut held = vec![false; want.len()];
    let mut plan = Plan::default();
    for r in resting {
        let keep = want.iter().enumerate().position(|(i, l)| {
            !held[i] && l.side == r.side && l.price == r.price && r.left.saturating_mul(2) >= l.qty
        });
        match keep {
            Some(i) => held[i] = true,
            None => plan.cancel.push(r.order_id),
        }
    }
    plan.place = want
        .iter()
        .zip(&held)
        .filter(|(_, held)| !**held)
        .map(|(l, _)| *l)
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use bourse_config::Settings;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn market(symbol: &str) -> Market {
        let (_, markets) = Settings::from_sources("", std::iter::empty()).unwrap();
        markets.get(symbol).unwrap().clone()
    }

    #[test]
    fn the_ladder_straddles_the_fair_price() {
        let btc = market("KRW-BTC");
        let s = ParticipantsSettings::default();
        // 140,000,000 KRW in 1,000 KRW ticks.
        let fair = 140_000;
        let levels = ladder(&btc, fair, &s);
        assert_eq!(levels.len(), 2 * s.depth as usize);
        let bids: Vec<u64> = levels
            .iter()
            .filter(|l| l.side == Side::Buy)
            .map(|l| l.price)
            .collect();
        let asks: Vec<u64> = levels
            .iter()
            .filter(|l| l.side == Side::Sell)
            .map(|l| l.price)
            .collect();
        // 10 bps spread: 140 ticks wide; levels 5 bps (70 ticks) apart.
        assert_eq!(bids[0], fair - 70);
        assert_eq!(asks[0], fair + 70);
        assert_eq!(bids[1], fair - 140);
        assert!(bids.windows(2).all(|w| w[0] > w[1]));
        assert!(asks.windows(2).all(|w| w[0] < w[1]));
        // 2,000,000 KRW at 139,930,000 KRW: 0.0142 BTC, 142 lots of 0.0001.
        assert_eq!(levels[0].qty, 142);
    }

    #[test]
    fn a_tiny_price_keeps_positive_bids_only() {
        let doge = market("KRW-DOGE");
        let s = ParticipantsSettings::default();
        let levels = ladder(&doge, 3, &s);
        assert!(levels.iter().all(|l| l.price > 0));
        assert!(levels.iter().filter(|l| l.side == Side::Buy).count() < s.depth as usize);
        assert_eq!(
            levels.iter().filter(|l| l.side == Side::Sell).count(),
            s.depth as usize
        );
    }

    #[test]
    fn a_plan_keeps_what_still_fits() {
        let want = [
            Level {
                side: Side::Buy,
                price: 99,
                qty: 10,
            },
            Level {
                side: Side::Sell,
                price: 101,
                qty: 10,
            },
        ];
        let resting = [
            // Right level, enough left: kept.
            Resting {
                order_id: 1,
                side: Side::Buy,
                price: 99,
                left: 5,
            },
            // Right level, mostly taken: replaced.
            Resting {
                order_id: 2,
                side: Side::Sell,
                price: 101,
                left: 4,
            },
            // Stale level: cancelled.
            Resting {
                order_id: 3,
                side: Side::Sell,
                price: 105,
                left: 10,
            },
        ];
        let p = plan(&resting, &want);
        assert_eq!(p.cancel, vec![2, 3]);
        assert_eq!(p.place, vec![want[1]]);
    }

    fn side() -> impl Strategy<Value = Side> {
        prop_oneof![Just(Side::Buy), Just(Side::Sell)]
    }

    proptest! {
        /// After the plan, exactly the wanted levels rest, each once, and every resting
        /// order is either kept or cancelled.
        #[test]
        fn a_plan_reaches_the_ladder(
            fair in 1u64..1_000_000,
            spread_bps in 1u32..200,
            step_bps in 1u32..200,
            depth in 1u32..8,
            resting in proptest::collection::vec((side(), 0u64..40, 1u64..400), 0..20),
        ) {
            let m = market("KRW-XRP");
            let s = ParticipantsSettings { spread_bps, step_bps, depth, ..ParticipantsSettings::default() };
            let want = ladder(&m, fair, &s);
            // Each side's prices are distinct and the sides never cross.
            let bids: BTreeSet<u64> = want.iter().filter(|l| l.side == Side::Buy).map(|l| l.price).collect();
            let asks: BTreeSet<u64> = want.iter().filter(|l| l.side == Side::Sell).map(|l| l.price).collect();
            prop_assert_eq!(bids.len() + asks.len(), want.len());
            if let (Some(b), Some(a)) = (bids.last(), asks.first()) {
                prop_assert!(b < a);
            }
            // Some resting orders sit on wanted levels, the rest anywhere.
            let resting: Vec<Resting> = resting
                .iter()
                .enumerate()
                .map(|(i, (side, at, left))| {
                    let price = want
                        .get(*at as usize)
                        .filter(|l| l.side == *side)
                        .map_or(fair + at, |l| l.price);
                    Resting { order_id: i as u64, side: *side, price, left: *left }
                })
                .collect();
            let p = plan(&resting, &want);
            let cancelled: BTreeSet<u64> = p.cancel.iter().copied().collect();
            prop_assert_eq!(cancelled.len(), p.cancel.len());
            let mut after: Vec<(bool, u64)> = resting
                .iter()
                .filter(|r| !cancelled.contains(&r.order_id))
                .map(|r| (r.side == Side::Buy, r.price))
                .chain(p.place.iter().map(|l| (l.side == Side::Buy, l.price)))
                .collect();
            after.sort_unstable();
            let mut wanted: Vec<(bool, u64)> = want.iter().map(|l| (l.side == Side::Buy, l.price)).collect();
            wanted.sort_unstable();
            prop_assert_eq!(after, wanted);
            // What is kept has at least half its level left.
            for r in resting.iter().filter(|r| !cancelled.contains(&r.order_id)) {
                let l = want.iter().find(|l| l.side == r.side && l.price == r.price);
                prop_assert!(l.is_some_and(|l| r.left * 2 >= l.qty));
            }
        }
    }
}
