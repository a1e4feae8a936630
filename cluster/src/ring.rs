//! The consistent hash ring: which member owns `kind/key`.
//!
//! Pure and deterministic: every node that holds the same member list computes the same
//! owner for every key, because the hash is a fixed function (xxh3-64, seed 0, over the
//! bytes) rather than Rust's per-process randomized `DefaultHasher`. Each member is placed at
//! `vnodes` points (`hash("{member}#{i}")`); a key belongs to the first point clockwise from
//! its hash. Adding or removing one of N members moves about 1/N of the keys, and only keys
//! to or from that member.

use xxhash_rust::xxh3::xxh3_64;

/// A snapshot of the ring for one member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashRing {
    members: Vec<String>,
    /// Sorted `(point, member index)`.
    points: Vec<(u64, u32)>,
    vnodes: u32,
}

/// The stable hash of an entity address.
pub fn key_hash(kind: &str, key: &str) -> u64 {
    let mut buf = Vec::with_capacity(kind.len() + key.len() + 1);
    buf.extend_from_slice(kind.as_bytes());
    buf.push(b'/');
    buf.extend_from_slice(key.as_bytes());
    xxh3_64(&buf)
}

impl HashRing {
    /// Builds the ring over `members` (order and duplicates do not matter).
    pub fn new<S: AsRef<str>>(members: &[S], vnodes: u32) -> HashRing {
        let mut names: Vec<String> = members.iter().map(|m| m.as_ref().to_string()).collect();
        names.sort();
        names.dedup();
        let mut points = Vec::with_capacity(names.len() * vnodes as usize);
        for (i, name) in names.iter().enumerate() {
            for v in 0..vnodes {
                points.push((xxh3_64(format!("{name}#{v}").as_bytes()), i as u32));
            }
        }
        // Ties (astronomically rare) break by member name order, so still deterministic.
        points.sort_unstable();
        HashRing {
            members: names,
            points,
            vnodes,
        }
    }

    /// The member that owns `kind/key`, or `None` on an empty ring.
    pub fn owner(&self, kind: &str, key: &str) -> Option<&str> {
        self.owner_of_hash(key_hash(kind, key))
    }

    /// The member owning a precomputed hash.
    pub fn owner_of_hash(&self, h: u64) -> Option<&str> {
        if self.points.is_empty() {
            return None;
        }
        let idx = self.points.partition_point(|&(p, _)| p < h);
        let (_, member) = self.points[if idx == self.points.len() { 0 } else { idx }];
        Some(&self.members[member as usize])
    }

    /// Members in name order.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Virtual nodes per member.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// Each member's share of the hash space (sums to 1 on a non-empty ring); what the
    /// admin API reports as the ring's balance.
    pub fn shares(&self) -> Vec<(String, f64)> {
        let mut arcs = vec![0u128; self.members.len()];
        let n = self.points.len();
        for i in 0..n {
            let (p, m) = self.points[i];
            let prev = if i == 0 {
                self.points[n - 1].0
            } else {
                self.points[i - 1].0
            };
            // The arc (prev, p] belongs to the member at p; the first arc wraps around.
            let len = p.wrapping_sub(prev) as u128;
            arcs[m as usize] += if n == 1 { 1u128 << 64 } else { len };
        }
        let total = (1u128 << 64) as f64;
        self.members
            .iter()
            .cloned()
            .zip(arcs.into_iter().map(|a| a as f64 / total))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node{i}")).collect()
    }

    fn keys(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("KEY-{i}")).collect()
    }

    #[test]
    fn empty_ring_has_no_owner() {
        assert_eq!(
            HashRing::new::<String>(&[], 128).owner("symbol", "KRW-BTC"),
            None
        );
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // Pinned: a change here silently reshuffles every cluster's placement.
        assert_eq!(key_hash("symbol", "KRW-BTC"), xxh3_64(b"symbol/KRW-BTC"));
        let ring = HashRing::new(&names(3), 128);
        assert_eq!(
            ring.owner("symbol", "KRW-BTC"),
            ring.clone().owner("symbol", "KRW-BTC")
        );
    }

    #[test]
    fn shares_sum_to_one() {
        for n in 1..6 {
            let total: f64 = HashRing::new(&names(n), 128)
                .shares()
                .iter()
                .map(|s| s.1)
                .sum();
            assert!((total - 1.0).abs() < 1e-9, "{n}: {total}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Every node computes the same owner whatever order it learned the members in.
        #[test]
        fn same_owner_on_every_node(n in 1usize..10, seed in any::<u64>(), key in "[A-Z]{1,8}-[A-Z]{1,8}") {
            let members = names(n);
            let mut shuffled = members.clone();
            fastrand::Rng::with_seed(seed).shuffle(&mut shuffled);
            let a = HashRing::new(&members, 128);
            let b = HashRing::new(&shuffled, 128);
            prop_assert_eq!(a.owner("symbol", &key), b.owner("symbol", &key));
        }

        /// With 3..10 members at 128 vnodes each member's share of keys is within ±15% of fair.
        #[test]
        fn shares_are_balanced(n in 3usize..=10) {
            let ring = HashRing::new(&names(n), 128);
            let keys = keys(100_000);
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for k in &keys {
                *counts.entry(ring.owner("book", k).unwrap_or_default()).or_default() += 1;
            }
            let fair = keys.len() as f64 / n as f64;
            for m in ring.members() {
                let c = counts.get(m.as_str()).copied().unwrap_or(0) as f64;
                prop_assert!((c - fair).abs() <= 0.15 * fair, "{} has {} keys, fair {}", m, c, fair);
            }
        }

        /// Adding a member moves keys only to it, about 1/N of them; removing moves only its own.
        #[test]
        fn join_and_leave_move_only_their_keys(n in 3usize..10) {
            let before = HashRing::new(&names(n), 128);
            let after = HashRing::new(&names(n + 1), 128);
            let newcomer = format!("node{}", n + 1);
            let keys = keys(20_000);
            let mut moved = 0usize;
            for k in &keys {
                let (a, b) = (before.owner("room", k), after.owner("room", k));
                if a != b {
                    prop_assert_eq!(b, Some(newcomer.as_str()), "key {} moved between old members", k);
                    moved += 1;
                }
            }
            let expected = keys.len() as f64 / (n + 1) as f64;
            prop_assert!((moved as f64 - expected).abs() <= 0.25 * expected, "moved {} expected ~{}", moved, expected);
            // Leaving is the same change read backwards: only the leaver's keys move.
            for k in &keys {
                let (a, b) = (after.owner("room", k), before.owner("room", k));
                if a != b {
                    prop_assert_eq!(a, Some(newcomer.as_str()));
                }
            }
        }
    }
}
