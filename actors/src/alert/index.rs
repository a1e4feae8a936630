//! The symbol's trigger index: every armed rule on the symbol, sorted by threshold, so a
//! trade costs O(log n + k) for the k rules it fires instead of a scan of all n.
//!
//! `above` rules are sorted ascending and fire from the lowest up to the price; `below`
//! rules fire from the highest down; `change_pct` rules are sorted by their basis points
//! and compared with the change from the window's reference, rounded so that integer
//! comparison is exact ([`condition::change_floor`], [`condition::change_ceil`]). A rule that
//! fires leaves the index (its entity decides whether and when it comes back); a repeating
//! rule in its cooldown waits in a queue ordered by the time it re-arms.

use super::condition::{self, Condition};
use std::collections::{BTreeSet, HashMap};

/// The alert id.
pub type AlertId = u64;

/// Armed rules of one symbol.
#[derive(Debug, Default, Clone)]
pub struct TriggerIndex {
    above: BTreeSet<(u64, AlertId)>,
    below: BTreeSet<(u64, AlertId)>,
    rise: BTreeSet<(i64, AlertId)>,
    fall: BTreeSet<(i64, AlertId)>,
    /// Rules in cooldown: `(re-arm time, id)`.
    cooling: BTreeSet<(i64, AlertId)>,
    rules: HashMap<AlertId, (Condition, i64)>,
}

impl TriggerIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms rule `id` from time `armed_from` on (at once when that is not after `now`).
    /// Arming a rule the index holds replaces it.
    pub fn arm(&mut self, id: AlertId, condition: Condition, armed_from: i64, now: i64) {
        self.disarm(id);
        self.rules.insert(id, (condition, armed_from));
        if armed_from > now {
            self.cooling.insert((armed_from, id));
        } else {
            self.insert(id, condition);
        }
    }

    /// Removes rule `id`; false when the index did not hold it.
    pub fn disarm(&mut self, id: AlertId) -> bool {
        let Some((condition, armed_from)) = self.rules.remove(&id) else {
            return false;
        };
        self.cooling.remove(&(armed_from, id));
        self.remove(id, condition);
        true
    }

    /// Moves rules whose cooldown ended by `now` into the armed sets.
    pub fn rearm_due(&mut self, now: i64) {
        while let Some(&(at, id)) = self.cooling.first() {
            if at > now {
                break;
            }
            self.cooling.pop_first();
            if let Some(&(condition, _)) = self.rules.get(&id) {
                self.insert(id, condition);
            }
        }
    }

    /// The rules a trade at `price` fires (with the window's `reference`, 0 when unknown),
    /// removed from the index, in id order.
    pub fn fire(&mut self, price: u64, reference: u64, now: i64) -> Vec<(AlertId, Condition)> {
        self.rearm_due(now);
        let mut fired: Vec<AlertId> = Vec::new();
        while let Some(&(t, id)) = self.above.first() {
            if t > price {
                break;
            }
            self.above.pop_first();
            fired.push(id);
        }
        while let Some(&(t, id)) = self.below.last() {
            if t < price {
                break;
            }
            self.below.pop_last();
            fired.push(id);
        }
        if let Some(floor) = condition::change_floor(price, reference) {
            while let Some(&(bp, id)) = self.rise.first() {
                if bp > floor {
                    break;
                }
                self.rise.pop_first();
                fired.push(id);
            }
        }
        if let Some(ceil) = condition::change_ceil(price, reference) {
            while let Some(&(bp, id)) = self.fall.last() {
                if bp < ceil {
                    break;
                }
                self.fall.pop_last();
                fired.push(id);
            }
        }
        fired.sort_unstable();
        fired
            .into_iter()
            .filter_map(|id| self.rules.remove(&id).map(|(c, _)| (id, c)))
            .collect()
    }

    /// Rules held (armed or cooling).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule is held.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether rule `id` is held.
    pub fn contains(&self, id: AlertId) -> bool {
        self.rules.contains_key(&id)
    }

    fn insert(&mut self, id: AlertId, condition: Condition) {
        match condition {
            Condition::Above(t) => self.above.insert((t, id)),
            Condition::Below(t) => self.below.insert((t, id)),
            Condition::ChangePct(bp) if bp > 0 => self.rise.insert((bp, id)),
            Condition::ChangePct(bp) => self.fall.insert((bp, id)),
        };
    }

    fn remove(&mut self, id: AlertId, condition: Condition) {
        match condition {
            Condition::Above(t) => self.above.remove(&(t, id)),
            Condition::Below(t) => self.below.remove(&(t, id)),
            Condition::ChangePct(bp) if bp > 0 => self.rise.remove(&(bp, id)),
            Condition::ChangePct(bp) => self.fall.remove(&(bp, id)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The reference model: every rule checked on every trade.
    #[derive(Default)]
    struct BruteForce {
        rules: BTreeMap<AlertId, (Condition, i64)>,
    }

    impl BruteForce {
        fn fire(&mut self, price: u64, reference: u64, now: i64) -> Vec<(AlertId, Condition)> {
            let fired: Vec<(AlertId, Condition)> = self
                .rules
                .iter()
                .filter(|(_, (c, from))| *from <= now && c.holds(price, reference))
                .map(|(id, (c, _))| (*id, *c))
                .collect();
            for (id, _) in &fired {
                self.rules.remove(id);
            }
            fired
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Arm(AlertId, Condition, i64),
        Disarm(AlertId),
        Trade(u64, u64, i64),
    }

    fn condition() -> impl Strategy<Value = Condition> {
        prop_oneof![
            (90u64..110).prop_map(Condition::Above),
            (90u64..110).prop_map(Condition::Below),
            (1i64..1500).prop_map(Condition::ChangePct),
            (1i64..1500).prop_map(|bp| Condition::ChangePct(-bp)),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..60, condition(), 0i64..5).prop_map(|(id, c, d)| Op::Arm(id, c, d)),
            1 => (0u64..60).prop_map(Op::Disarm),
            4 => (85u64..115, prop_oneof![Just(0u64), 95u64..105], 0i64..2)
                .prop_map(|(p, r, dt)| Op::Trade(p, r, dt)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn fires_exactly_what_a_scan_of_every_rule_fires(ops in prop::collection::vec(op(), 1..300)) {
            let (mut index, mut model) = (TriggerIndex::new(), BruteForce::default());
            let mut now = 1_000;
            for op in ops {
                match op {
                    Op::Arm(id, c, delay) => {
                        index.arm(id, c, now + delay, now);
                        model.rules.insert(id, (c, now + delay));
                    }
                    Op::Disarm(id) => {
                        prop_assert_eq!(index.disarm(id), model.rules.remove(&id).is_some());
                    }
                    Op::Trade(price, reference, dt) => {
                        now += dt;
                        prop_assert_eq!(index.fire(price, reference, now), model.fire(price, reference, now));
                    }
                }
                prop_assert_eq!(index.len(), model.rules.len());
            }
        }
    }

    #[test]
    fn a_cooling_rule_waits_for_its_time() {
        let mut index = TriggerIndex::new();
        index.arm(1, Condition::Above(10), 2_000, 1_000);
        assert!(index.fire(50, 0, 1_999).is_empty());
        assert_eq!(index.fire(50, 0, 2_000), vec![(1, Condition::Above(10))]);
        assert!(index.is_empty(), "a fired rule leaves the index");
    }

    #[test]
    fn many_rules_far_from_the_price_cost_nothing_to_skip() {
        let mut index = TriggerIndex::new();
        for id in 0..10_000u64 {
            index.arm(id, Condition::Above(1_000_000 + id), 0, 0);
        }
        assert!(index.fire(999_999, 0, 1).is_empty());
        let fired = index.fire(1_000_004, 0, 1);
        assert_eq!(
            fired.iter().map(|f| f.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(index.len(), 9_995);
    }
}
