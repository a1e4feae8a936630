//! What a price-alert rule watches, as a pure function of the trade price and the window's
//! reference price. [`Condition::holds`] is the definition; the symbol's
//! [`TriggerIndex`](super::index::TriggerIndex) must fire exactly the rules it says hold.

use serde::{Deserialize, Serialize};

/// Hundredths of a percent in one percent (`change_pct` is kept in basis points).
pub const BP_PER_PCT: i64 = 100;
const BP_PER_UNIT: i128 = 10_000;

/// A rule's condition, in internal units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Condition {
    /// The price is at or above this many ticks.
    Above(u64),
    /// The price is at or below this many ticks.
    Below(u64),
    /// The change from the window's reference price is at least this many basis points
    /// (a rise, when positive) or at most (a fall, when negative); never zero.
    ChangePct(i64),
}

impl Condition {
    /// The wire and stored name.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Above(_) => "above",
            Condition::Below(_) => "below",
            Condition::ChangePct(_) => "change_pct",
        }
    }

    /// The threshold as stored.
    pub fn stored_value(self) -> i64 {
        match self {
            Condition::Above(t) | Condition::Below(t) => t as i64,
            Condition::ChangePct(bp) => bp,
        }
    }

    /// Rebuilds a stored condition; `None` for a name or value this version does not know.
    pub fn from_stored(name: &str, value: i64) -> Option<Condition> {
        match name {
            "above" if value > 0 => Some(Condition::Above(value as u64)),
            "below" if value > 0 => Some(Condition::Below(value as u64)),
            "change_pct" if value != 0 => Some(Condition::ChangePct(value)),
            _ => None,
        }
    }

    /// Whether a trade at `price` satisfies the rule, `reference` being the price at the
    /// start of the change window (0: unknown, so no change rule holds).
    pub fn holds(self, price: u64, reference: u64) -> bool {
        match self {
            Condition::Above(t) => price >= t,
            Condition::Below(t) => price <= t,
            Condition::ChangePct(_) if reference == 0 => false,
            Condition::ChangePct(bp) => {
                let change = (price as i128 - reference as i128) * BP_PER_UNIT;
                let bound = bp as i128 * reference as i128;
                if bp > 0 {
                    change >= bound
                } else {
                    change <= bound
                }
            }
        }
    }
}

/// The change from `reference` to `price` in basis points, rounded down (`None` without a
/// reference): a rise rule of `bp` holds exactly when `bp <= change_floor`.
pub fn change_floor(price: u64, reference: u64) -> Option<i64> {
    change(price, reference).map(|(n, d)| clamp(n.div_euclid(d)))
}

/// The same, rounded up: a fall rule of `bp` holds exactly when `bp >= change_ceil`.
pub fn change_ceil(price: u64, reference: u64) -> Option<i64> {
    change(price, reference).map(|(n, d)| clamp(-(-n).div_euclid(d)))
}

fn change(price: u64, reference: u64) -> Option<(i128, i128)> {
    (reference > 0).then(|| {
        (
            (price as i128 - reference as i128) * BP_PER_UNIT,
            reference as i128,
        )
    })
}

fn clamp(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn levels_include_the_threshold() {
        assert!(Condition::Above(100).holds(100, 0));
        assert!(!Condition::Above(100).holds(99, 0));
        assert!(Condition::Below(100).holds(100, 0));
        assert!(!Condition::Below(100).holds(101, 0));
    }

    #[test]
    fn change_is_exact_in_basis_points() {
        // +5.00% from 2000 is 2100.
        assert!(Condition::ChangePct(500).holds(2100, 2000));
        assert!(!Condition::ChangePct(500).holds(2099, 2000));
        // -2.50% from 2000 is 1950.
        assert!(Condition::ChangePct(-250).holds(1950, 2000));
        assert!(!Condition::ChangePct(-250).holds(1951, 2000));
        assert!(!Condition::ChangePct(1).holds(u64::MAX, 0), "no reference");
    }

    #[test]
    fn stored_form_round_trips_and_refuses_nonsense() {
        for c in [
            Condition::Above(7),
            Condition::Below(9),
            Condition::ChangePct(-3),
        ] {
            assert_eq!(Condition::from_stored(c.name(), c.stored_value()), Some(c));
        }
        assert_eq!(Condition::from_stored("above", 0), None);
        assert_eq!(Condition::from_stored("change_pct", 0), None);
        assert_eq!(Condition::from_stored("sideways", 5), None);
    }

    proptest! {
        #[test]
        fn rounded_change_agrees_with_holds(
            price in 1u64..1_000_000_000,
            reference in 1u64..1_000_000_000,
            bp in 1i64..100_000,
        ) {
            let floor = change_floor(price, reference).unwrap_or(i64::MIN);
            let ceil = change_ceil(price, reference).unwrap_or(i64::MAX);
            prop_assert_eq!(Condition::ChangePct(bp).holds(price, reference), bp <= floor);
            prop_assert_eq!(Condition::ChangePct(-bp).holds(price, reference), -bp >= ceil);
        }
    }
}
