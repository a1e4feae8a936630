//! Who may own entities when the cluster splits: keep-majority over the last agreed
//! membership, with a deterministic tie-break, so that of two sides cut apart at most one
//! serves (exactly one for two sides).
//!
//! A node judges the `up` members it hears (itself included) against the membership it last
//! agreed on. More than half of it heard: serve. Exactly half: serve only if the lowest-named
//! agreed member is heard (every node picks the same side without talking). Less: stand
//! down, owning nothing, until a majority is heard again. Members that left for sure (a
//! clean leave, or a process whose port refuses connections once its session closed) are forgotten at once and
//! no longer count; a member that just went silent still counts until the view has been
//! stable for `stable_after`, because peers cut off at the same moment are noticed a tick
//! or two apart and the agreed membership must not shrink between those ticks.
//!
//! Pure: no actors and no I/O; time comes in as an argument.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Whether a node may own entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    StandDown,
}

/// Keep-majority: `heard` against `agreed` (members of `heard` outside `agreed` do not
/// count). Nothing agreed yet means nothing to lose: serve.
pub fn decide(agreed: &BTreeSet<String>, heard: &BTreeSet<String>) -> Verdict {
    let Some(lowest) = agreed.first() else {
        return Verdict::Serve;
    };
    let present = agreed.intersection(heard).count();
    let serve = match (2 * present).cmp(&agreed.len()) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => heard.contains(lowest),
        std::cmp::Ordering::Less => false,
    };
    if serve {
        Verdict::Serve
    } else {
        Verdict::StandDown
    }
}

/// One judgement: what this node should install as its ring, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// The members to build the ring over: empty when standing down; the heard members plus
    /// the silent agreed ones while the view settles; the heard members once it has.
    pub ring: Vec<String>,
}

/// A node's quorum bookkeeping.
#[derive(Debug, Clone)]
pub struct Quorum {
    stable_after: Duration,
    agreed: BTreeSet<String>,
    heard: BTreeSet<String>,
    heard_since: Option<Instant>,
}

impl Quorum {
    /// Nothing agreed yet; a view must hold `stable_after` before silent members are dropped.
    pub fn new(stable_after: Duration) -> Quorum {
        Quorum {
            stable_after,
            agreed: BTreeSet::new(),
            heard: BTreeSet::new(),
            heard_since: None,
        }
    }

    /// How long a view must hold before silent members are dropped.
    pub fn stable_after(&self) -> Duration {
        self.stable_after
    }

    /// The membership last agreed on.
    pub fn agreed(&self) -> &BTreeSet<String> {
        &self.agreed
    }

    /// Whether `node`, heard again after going silent, counts as heard before it has been
    /// heard for `stable_after` (a member rejoining after a partition must hold that long
    /// first, so stale heartbeats arriving in a burst cannot flip the ring). It counts at
    /// once when it never left the agreed membership and this node serves: a blip longer
    /// than the heartbeat timeout but shorter than the settling time then leaves the ring
    /// as it was, instead of dropping the member when the blip's view settles and taking it
    /// back a moment later (its entities moving twice). A node standing down, or one that
    /// has dropped the member, waits for it to settle.
    pub fn counts_at_once(&self, node: &str, serving: bool) -> bool {
        serving && self.agreed.contains(node)
    }

    /// `node` left for sure (it announced leaving, or its process is gone): it no longer
    /// counts towards a majority.
    pub fn forget(&mut self, node: &str) {
        self.agreed.remove(node);
    }

    /// Judges `heard` (the `up` members heard now, this node included when it is up) at
    /// `now`. Serving with every agreed member heard, or with a view stable for
    /// `stable_after`, makes the heard members the agreed membership.
    pub fn judge(&mut self, heard: &BTreeSet<String>, now: Instant) -> Judgement {
        if self.heard_since.is_none() || &self.heard != heard {
            self.heard = heard.clone();
            self.heard_since = Some(now);
        }
        let stable = self
            .heard_since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.stable_after);
        let verdict = decide(&self.agreed, heard);
        if verdict == Verdict::StandDown {
            return Judgement {
                verdict,
                ring: Vec::new(),
            };
        }
        let silent: Vec<String> = self.agreed.difference(heard).cloned().collect();
        if silent.is_empty() || stable {
            self.agreed = heard.clone();
            return Judgement {
                verdict,
                ring: heard.iter().cloned().collect(),
            };
        }
        let ring: BTreeSet<String> = heard.iter().cloned().chain(silent).collect();
        Judgement {
            verdict,
            ring: ring.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn majority_serves_minority_stands_down() {
        let all = set(&["a", "b", "c"]);
        assert_eq!(decide(&all, &set(&["a", "b"])), Verdict::Serve);
        assert_eq!(decide(&all, &set(&["c"])), Verdict::StandDown);
        assert_eq!(decide(&all, &all), Verdict::Serve);
        assert_eq!(decide(&BTreeSet::new(), &set(&["c"])), Verdict::Serve);
    }

    #[test]
    fn an_even_split_keeps_the_side_with_the_lowest_member() {
        let all = set(&["a", "b", "c", "d"]);
        assert_eq!(decide(&all, &set(&["a", "d"])), Verdict::Serve);
        assert_eq!(decide(&all, &set(&["b", "c"])), Verdict::StandDown);
        let two = set(&["n1", "n2"]);
        assert_eq!(decide(&two, &set(&["n1"])), Verdict::Serve);
        assert_eq!(decide(&two, &set(&["n2"])), Verdict::StandDown);
    }

    #[test]
    fn members_outside_the_agreed_set_do_not_make_a_majority() {
        let agreed = set(&["a", "b", "c"]);
        assert_eq!(
            decide(&agreed, &set(&["c", "x", "y", "z"])),
            Verdict::StandDown
        );
    }

    #[test]
    fn a_cut_noticed_a_tick_apart_does_not_shrink_the_agreed_set_in_between() {
        let t = Instant::now();
        let tick = Duration::from_millis(500);
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&set(&["a", "b", "c"]), t);
        // c, cut off from a and b, notices a first, then b a tick later.
        let j = q.judge(&set(&["b", "c"]), t + tick);
        assert_eq!(j.verdict, Verdict::Serve);
        assert_eq!(
            j.ring,
            ["a", "b", "c"],
            "a stays in the ring until the view settles"
        );
        let j = q.judge(&set(&["c"]), t + 2 * tick);
        assert_eq!(j.verdict, Verdict::StandDown);
        assert!(j.ring.is_empty());
        // Long after, still down: the agreed set never shrank to c's side.
        let j = q.judge(&set(&["c"]), t + 60 * tick);
        assert_eq!(j.verdict, Verdict::StandDown);
        assert_eq!(q.agreed(), &set(&["a", "b", "c"]));
        // The partition heals: c serves again, with everyone.
        let j = q.judge(&set(&["a", "b", "c"]), t + 61 * tick);
        assert_eq!(j.verdict, Verdict::Serve);
        assert_eq!(j.ring, ["a", "b", "c"]);
    }

    #[test]
    fn the_majority_drops_a_silent_member_once_the_view_settles() {
        let t = Instant::now();
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&set(&["a", "b", "c"]), t);
        let j = q.judge(&set(&["a", "b"]), t + Duration::from_secs(1));
        assert_eq!(j.ring, ["a", "b", "c"]);
        let j = q.judge(&set(&["a", "b"]), t + Duration::from_secs(3));
        assert_eq!(j.ring, ["a", "b"]);
        assert_eq!(q.agreed(), &set(&["a", "b"]));
        // Then b goes silent too: a is the lower of two, so it keeps serving alone.
        let j = q.judge(&set(&["a"]), t + Duration::from_secs(4));
        assert_eq!(j.verdict, Verdict::Serve);
        let j = q.judge(&set(&["a"]), t + Duration::from_secs(7));
        assert_eq!(j.ring, ["a"]);
    }

    #[test]
    fn a_member_back_within_the_settling_time_never_leaves_the_ring() {
        let t = Instant::now();
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&set(&["a", "b", "c"]), t);
        // a stops hearing c for longer than the heartbeat timeout, less than the settling
        // time; c is back (not settled yet) at 1.5 s.
        q.judge(&set(&["a", "b"]), t + Duration::from_millis(500));
        assert!(q.counts_at_once("c", true));
        for ms in [1_500, 2_600, 5_000] {
            let j = q.judge(&set(&["a", "b", "c"]), t + Duration::from_millis(ms));
            assert_eq!(j.ring, ["a", "b", "c"], "at {ms} ms");
        }
        assert_eq!(q.agreed(), &set(&["a", "b", "c"]));
        // A node standing down, and one that dropped the member, wait for it to settle.
        assert!(!q.counts_at_once("c", false));
        q.judge(&set(&["a", "b"]), t + Duration::from_secs(6));
        q.judge(&set(&["a", "b"]), t + Duration::from_secs(9));
        assert_eq!(q.agreed(), &set(&["a", "b"]));
        assert!(!q.counts_at_once("c", true));
    }

    #[test]
    fn a_forgotten_member_leaves_the_ring_at_once() {
        let t = Instant::now();
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&set(&["n1", "n2"]), t);
        q.forget("n1");
        let j = q.judge(&set(&["n2"]), t + Duration::from_millis(1));
        assert_eq!(j.verdict, Verdict::Serve);
        assert_eq!(j.ring, ["n2"]);
    }

    fn members() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set("[a-f][0-9]", 1..9).prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        /// However the agreed members are cut into sides, at most one side serves; with two
        /// sides, exactly one does.
        #[test]
        fn at_most_one_side_serves(names in members(), cuts in proptest::collection::vec(0usize..4, 9)) {
            let agreed: BTreeSet<String> = names.iter().cloned().collect();
            let mut sides = vec![BTreeSet::new(); 4];
            for (i, name) in names.iter().enumerate() {
                sides[cuts[i]].insert(name.clone());
            }
            let sides: Vec<_> = sides.into_iter().filter(|s| !s.is_empty()).collect();
            let serving = sides.iter().filter(|s| decide(&agreed, s) == Verdict::Serve).count();
            prop_assert!(serving <= 1);
            if sides.len() <= 2 {
                prop_assert_eq!(serving, 1);
            }
        }

        /// Every side of a cut judged tick by tick, each member noticing the others in any
        /// order within the settling time: still at most one side ever serves.
        #[test]
        fn staggered_detection_keeps_one_side(names in members(), cut in proptest::collection::vec(any::<bool>(), 9), order in proptest::collection::vec(0u32..4, 9)) {
            let t = Instant::now();
            let tick = Duration::from_millis(500);
            let all: BTreeSet<String> = names.iter().cloned().collect();
            let side = |n: &String| cut[names.iter().position(|m| m == n).unwrap_or(0)];
            let mut serving_sides = BTreeSet::new();
            for me in &names {
                let mut q = Quorum::new(4 * tick);
                q.judge(&all, t);
                for k in 1..=4u32 {
                    // At tick k, `me` has noticed the other side's members whose turn came.
                    let heard: BTreeSet<String> = names
                        .iter()
                        .filter(|n| side(n) == side(me) || order[names.iter().position(|m| m == *n).unwrap_or(0)] >= k)
                        .cloned()
                        .collect();
                    q.judge(&heard, t + k * tick);
                }
                // Long after: the final verdict.
                let mine: BTreeSet<String> = names.iter().filter(|n| side(n) == side(me)).cloned().collect();
                let end = q.judge(&mine, t + 100 * tick).verdict;
                prop_assert_eq!(end, q.judge(&mine, t + 200 * tick).verdict);
                if end == Verdict::Serve {
                    serving_sides.insert(side(me));
                }
            }
            prop_assert!(serving_sides.len() <= 1, "both sides serve");
        }
    }
}
