//! Profit and loss of one holding, by average cost: the arithmetic a portfolio keeps per
//! market (the ledger keeps one per market it trades). Pure and exact: amounts are integers in the
//! assets' balance units, never floats.
//!
//! A buy adds its quantity and what it cost. A sell takes out the same share of the cost as
//! of the quantity (rounded down to a unit, all of it when the holding is emptied) and
//! realises what it brought in above that. Whatever the rounding, realised plus unrealised
//! profit is exactly everything received plus what is held now, minus everything paid.

use serde::{Deserialize, Serialize};

/// One asset held against one quote currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Held, in the asset's units.
    pub qty: u128,
    /// What the held quantity cost, in the quote's units.
    pub cost: u128,
    /// Profit realised by sells so far, in the quote's units (negative: a loss).
    pub realised: i128,
}

/// A sell of more than is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot sell {asked}: {held} held")]
pub struct Oversold {
    pub asked: u128,
    pub held: u128,
}

impl Position {
    /// Bought `qty` for `paid`.
    pub fn buy(&mut self, qty: u128, paid: u128) {
        self.qty += qty;
        self.cost += paid;
    }

    /// Sold `qty` for `got`; returns the profit it realised.
    pub fn sell(&mut self, qty: u128, got: u128) -> Result<i128, Oversold> {
        if qty > self.qty {
            return Err(Oversold {
                asked: qty,
                held: self.qty,
            });
        }
        let removed = if qty == self.qty {
            self.cost
        } else {
            // cost × qty / held, rounded down; cost × qty fits: both are balances.
            self.cost * qty / self.qty
        };
        self.qty -= qty;
        self.cost -= removed;
        let profit = got as i128 - removed as i128;
        self.realised += profit;
        Ok(profit)
    }

    /// Sold `qty` for `got`, of which only what is held counts: an asset bought in another
    /// market (or held before positions were kept) has no cost here, so the rest of the
    /// sale realises nothing in this position.
    pub fn sell_up_to(&mut self, qty: u128, got: u128) {
        let counted = qty.min(self.qty);
        if counted == 0 {
            return;
        }
        // got × counted / qty ≤ got; both are balances, so the product fits.
        let _ = self.sell(counted, got * counted / qty);
    }

    /// The profit not yet realised when what is held is worth `value`.
    pub fn unrealised(&self, value: u128) -> i128 {
        value as i128 - self.cost as i128
    }

    /// The average cost of one unit, as the fraction `cost / qty`; `None` when nothing is
    /// held.
    pub fn average_cost(&self) -> Option<(u128, u128)> {
        (self.qty > 0).then_some((self.cost, self.qty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_round_trip_realises_exactly_its_profit() {
        let mut p = Position::default();
        p.buy(3, 300);
        p.buy(1, 140);
        assert_eq!(p.average_cost(), Some((440, 4)), "110 a unit");
        assert_eq!(p.sell(1, 150), Ok(40));
        assert_eq!(p.unrealised(3 * 120), 360 - 330);
        assert_eq!(
            p.sell(3, 270),
            Ok(-60),
            "the last sell takes the whole cost"
        );
        assert_eq!((p.qty, p.cost, p.realised), (0, 0, -20));
        assert_eq!(p.average_cost(), None);
        assert_eq!(p.sell(1, 1), Err(Oversold { asked: 1, held: 0 }));
    }

    #[test]
    fn rounding_stays_inside_the_position() {
        let mut p = Position::default();
        p.buy(3, 100);
        // A third of 100 is 33.3…: 33 leaves, 67 stays with the two held.
        assert_eq!(p.sell(1, 40), Ok(7));
        assert_eq!(p.cost, 67);
    }

    /// The model: sums of what was bought, paid, sold and received.
    #[derive(Default)]
    struct Model {
        qty: u128,
        paid: u128,
        got: u128,
    }

    proptest! {
        /// Any sequence of buys and sells, checked against the sums alone: the quantity
        /// held is theirs; a sell keeps the average cost (the cost left is the exact share
        /// rounded up to a unit); realised plus unrealised profit is exactly what came in
        /// plus what is held, minus what was paid; and whenever nothing is held, realised is
        /// exactly received minus paid, whatever the rounding on the way.
        #[test]
        fn agrees_with_the_sums(
            trades in prop::collection::vec((prop::bool::ANY, 1u128..1_000, 1u128..1_000_000), 1..300),
            price in 1u128..10_000,
        ) {
            let mut p = Position::default();
            let mut m = Model::default();
            for (buy, qty, amount) in trades {
                let before = p;
                if buy {
                    p.buy(qty, amount);
                    m.qty += qty;
                    m.paid += amount;
                    prop_assert_eq!(p.cost, before.cost + amount);
                } else if qty <= m.qty {
                    let profit = p.sell(qty, amount).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    m.qty -= qty;
                    m.got += amount;
                    prop_assert_eq!(p.realised, before.realised + profit);
                    // cost_after = ceil(cost_before × (held - qty) / held)
                    let (held, exact) = (before.qty, before.cost * (before.qty - qty));
                    prop_assert!(p.cost * held >= exact && p.cost * held < exact + held,
                        "cost {} after selling {} of {} costing {}", p.cost, qty, held, before.cost);
                } else {
                    prop_assert!(p.sell(qty, amount).is_err());
                    prop_assert_eq!(p, before, "a refused sell changes nothing");
                    continue;
                }
                prop_assert_eq!(p.qty, m.qty);
                let value = p.qty * price;
                prop_assert_eq!(
                    p.realised + p.unrealised(value),
                    m.got as i128 + value as i128 - m.paid as i128
                );
                if m.qty == 0 {
                    prop_assert_eq!(p.cost, 0);
                    prop_assert_eq!(p.realised, m.got as i128 - m.paid as i128);
                }
            }
        }
    }
}
