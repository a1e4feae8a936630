//! Who may own entities when the cluster splits: keep-majority over the last agreed
//! membership, with a deterministic tie-break, so that of two sides cut apart at most one
//! serves (exactly one for two sides).
//!
//! A node judges the `up` members it hears (itself included) against the membership it last
//! agreed on. More than half of it heard: serve. Exactly half: serve only if the lowest-named
//! agreed member is heard (every node picks the same side without talking). Less: stand
//! down, owning nothing, until a majority is heard again. Members that left for sure (a
//! clean leave, an operator's `down`, or a process the shared store saw die) are forgotten
//! and no longer count. A member whose port refuses connections once its session closed is
//! most likely gone, but a rejecting firewall says the same: it is *lost* ([`Quorum::lose`]),
//! leaving the agreed membership at once while the one before stays joint. A member that just went silent still counts until the view has been
//! stable for `stable_after`, because peers cut off at the same moment are noticed a tick
//! or two apart and the agreed membership must not shrink between those ticks.
//!
//! A cut need not split the cluster into sides: two members may lose each other while a
//! third still hears both. Each of the two then hears a majority, and each would drop the
//! other and serve with a ring of its own. So every member also says whom it hears, and a
//! node finds the pairs of members that do not hear each other ([`cut_pairs`]). A member
//! still heard by a member this node hears is *kept*: it stays in the agreed membership
//! and the ring (without counting towards a majority) however long this node has not heard
//! it. Once a cut pair has held for `stable_after`, members are left out one at a time (the
//! one in the most cut pairs, the highest-named of a tie) until those left all hear each
//! other ([`left_out`]); a node that finds itself left out *stands aside* (owns nothing,
//! says it does not serve), and the others drop it from their rings on hearing that, not
//! on their own clocks, so it owns nothing before anyone takes its entities over.
//!
//! Members change their agreed membership (a node joins, one dropped is back, a silent one
//! is dropped) each at its own moment. A cut in between could let some count against the
//! new membership and the others against the old one: two members of three joined by a
//! fourth could hold an even split of the new set, with its lowest member, while the other
//! two hold a majority of the old three, and both sides would serve. So a node's agreed
//! membership is *joint* ([`Quorum::joint`]) with the one it changed from and with every
//! other one a member it hears reports (heartbeats carry the sender's agreed membership):
//! it serves only with a majority of each, until every other member of its own reports
//! exactly it. A node that just joined, or is back after the others dropped it, counts
//! against what they report the same way. Members that left for sure count in none of
//! them.
//!
//! Pure: no actors and no I/O; time comes in as an argument.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Whether a node may own entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    /// It hears less than a majority of the agreed membership.
    StandDown,
    /// It hears a majority, but it lost a member that members it hears still hear, and it
    /// is the one picked to stand aside (see [`left_out`]).
    StandAside,
}

/// Two members that do not hear each other, the lower-named first.
pub type Pair = (String, String);

/// The pairs of members that do not hear each other, from `views`: for each member whose
/// view is known, the `up` members it hears (itself included). A pair is cut when either
/// side's view is known and lacks the other; members known only from others' views count,
/// so a member a peer hears and this node does not is cut from this node.
///
/// Every node judges on each heartbeat it receives, so this walks sorted lists (each view
/// against every member named anywhere) instead of looking pairs up: quadratic in the
/// members with a small constant, not in pairs times lookups.
pub fn cut_pairs<K, V>(views: &BTreeMap<K, BTreeSet<V>>) -> BTreeSet<Pair>
where
    K: Borrow<str> + Ord,
    V: Borrow<str> + Ord,
{
    cuts_among(views, &named(views))
}

/// [`cut_pairs`] with `known`, every member `views` names ([`named`]), already listed.
fn cuts_among<K, V>(views: &BTreeMap<K, BTreeSet<V>>, known: &[&str]) -> BTreeSet<Pair>
where
    K: Borrow<str> + Ord,
    V: Borrow<str> + Ord,
{
    let mut cuts = BTreeSet::new();
    for (x, view) in views {
        let x: &str = x.borrow();
        let mut heard = view.iter().map(Borrow::<str>::borrow).peekable();
        for &y in known {
            while heard.next_if(|h| *h < y).is_some() {}
            if heard.next_if_eq(&y).is_some() || y == x {
                continue;
            }
            let (a, b) = if x < y { (x, y) } else { (y, x) };
            cuts.insert((a.to_string(), b.to_string()));
        }
    }
    cuts
}

/// Every member `views` names (whose view it is, or whom a view hears), in order: a sorted
/// union merged view by view.
fn named<K, V>(views: &BTreeMap<K, BTreeSet<V>>) -> Vec<&str>
where
    K: Borrow<str> + Ord,
    V: Borrow<str> + Ord,
{
    let mut known: Vec<&str> = views.keys().map(Borrow::<str>::borrow).collect();
    known.sort_unstable();
    for view in views.values() {
        known = union(&known, view.iter().map(Borrow::<str>::borrow));
    }
    known
}

/// The sorted union of sorted `a` and sorted `b`.
fn union<'a>(a: &[&'a str], b: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out = Vec::with_capacity(a.len());
    let mut a = a.iter().copied().peekable();
    let mut b = b.peekable();
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x == y => {
                b.next();
                a.next()
            }
            (Some(x), Some(y)) if x < y => a.next(),
            (Some(_), Some(_)) | (None, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => return out,
        };
        out.extend(next);
    }
}

/// The members to leave out so that the rest all hear each other: the member in the most
/// of `cuts` (the highest-named of a tie, so the lowest-named, which breaks even splits,
/// stays), then again over what remains, until no cut is left. Every node that knows the
/// same cuts leaves out the same members, without talking.
pub fn left_out(cuts: &BTreeSet<Pair>) -> BTreeSet<String> {
    let mut cuts: Vec<&Pair> = cuts.iter().collect();
    let mut out = BTreeSet::new();
    loop {
        let mut count: BTreeMap<&String, usize> = BTreeMap::new();
        for (a, b) in &cuts {
            *count.entry(a).or_default() += 1;
            *count.entry(b).or_default() += 1;
        }
        let Some(worst) = count
            .into_iter()
            .max_by(|x, y| x.1.cmp(&y.1).then(x.0.cmp(y.0)))
            .map(|(n, _)| n.clone())
        else {
            return out;
        };
        cuts.retain(|(a, b)| *a != worst && *b != worst);
        out.insert(worst);
    }
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
    /// The members to build the ring over: empty when standing down or aside; the heard
    /// and kept members plus the silent agreed ones while the view settles; the heard and
    /// kept members once it has.
    pub ring: Vec<String>,
    /// The members that should stand aside so that the rest all hear each other, as this
    /// node sees the cuts (see [`left_out`]).
    pub left_out: BTreeSet<String>,
}

/// One cut pair as a node has seen it: since when (its age), and since when it has been
/// absent from the node's judgements, if it is.
#[derive(Debug, Clone)]
struct Sighting {
    since: Instant,
    absent_since: Option<Instant>,
}

impl Sighting {
    fn new(now: Instant) -> Sighting {
        Sighting {
            since: now,
            absent_since: None,
        }
    }

    /// Records one judgement: seen again after an absence longer than `release`, the pair
    /// starts a new age.
    fn judge(&mut self, seen: bool, now: Instant, release: Duration) {
        match (seen, self.absent_since) {
            (true, Some(absent)) => {
                if now.saturating_duration_since(absent) > release {
                    self.since = now;
                }
                self.absent_since = None;
            }
            (false, None) => self.absent_since = Some(now),
            _ => {}
        }
    }

    /// Absent for longer than `release`: forgotten.
    fn released(&self, now: Instant, release: Duration) -> bool {
        self.absent_since
            .is_some_and(|absent| now.saturating_duration_since(absent) > release)
    }

    /// Seen for `stable_after`, and not absent for longer than the release time (the
    /// caller drops those first).
    fn held(&self, now: Instant, stable_after: Duration) -> bool {
        now.saturating_duration_since(self.since) >= stable_after
    }
}

/// A node's quorum bookkeeping.
#[derive(Debug, Clone)]
pub struct Quorum {
    stable_after: Duration,
    agreed: BTreeSet<String>,
    /// The silent agreed members no member heard still hears, and since when that set has
    /// held (`None`: to be judged anew).
    droppable: BTreeSet<String>,
    droppable_since: Option<Instant>,
    /// The cut pairs seen lately (see [`Sighting`]).
    cuts: BTreeMap<Pair, Sighting>,
    /// Members known gone for sure ([`Quorum::forget`]), and when: a peer slower to notice
    /// still says it hears one, and that is no cut. Kept until heard again or for
    /// `stable_after` (the slowest peer has timed it out by then, and a member back and
    /// heard by others, not by this node, is then a cut again).
    gone: BTreeMap<String, Instant>,
    /// Memberships that need a majority too (see the module's comment): the one the agreed
    /// membership grew from, and those members heard reported that differ from it. Cleared
    /// once every other member of the agreed membership reports exactly it.
    joint: Vec<BTreeSet<String>>,
    /// Members that left for sure ([`Quorum::forget`]), until heard again: a member that
    /// stood down while they left still reports them, and they no longer count in what it
    /// reports, unless it hears them (a refused port seen from this node alone proves
    /// nothing about a member others still hear).
    left: BTreeSet<String>,
}

impl Quorum {
    /// Nothing agreed yet; a view must hold `stable_after` before silent members are dropped.
    pub fn new(stable_after: Duration) -> Quorum {
        Quorum {
            stable_after,
            agreed: BTreeSet::new(),
            droppable: BTreeSet::new(),
            droppable_since: None,
            cuts: BTreeMap::new(),
            gone: BTreeMap::new(),
            joint: Vec::new(),
            left: BTreeSet::new(),
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

    /// The memberships that need a majority besides the agreed one (empty when every
    /// member agrees on it).
    pub fn joint(&self) -> &[BTreeSet<String>] {
        &self.joint
    }

    /// Keep-majority over the agreed membership and every joint one.
    fn decide(&self, heard: &BTreeSet<String>) -> Verdict {
        let verdict = decide(&self.agreed, heard);
        if verdict == Verdict::Serve
            && self
                .joint
                .iter()
                .all(|m| decide(m, heard) == Verdict::Serve)
        {
            Verdict::Serve
        } else {
            Verdict::StandDown
        }
    }

    /// Whether `heard` would serve were `also` counted again (members forgotten on the
    /// store's word that turned out to live, see [`crate::witness`]): a majority of every
    /// membership, and of the agreed one with them.
    pub fn serves_counting(&self, heard: &BTreeSet<String>, also: &BTreeSet<String>) -> bool {
        let with: BTreeSet<String> = self.agreed.union(also).cloned().collect();
        self.decide(heard) == Verdict::Serve && decide(&with, heard) == Verdict::Serve
    }

    /// Makes `membership` joint, unless it is empty or joint already.
    fn join(&mut self, membership: BTreeSet<String>) {
        if !membership.is_empty() && !self.joint.contains(&membership) {
            self.joint.push(membership);
        }
    }

    /// Makes each membership the members heard report (`adopted`) joint, unless it is the
    /// agreed one or joint already. A member may count against it: until it reports this
    /// node's, a majority of it is needed too.
    fn note_reports<K, V>(&mut self, adopted: &BTreeMap<K, BTreeSet<V>>)
    where
        K: Borrow<str> + Ord,
        V: Borrow<str> + Ord,
    {
        for theirs in adopted.values().filter(|theirs| !theirs.is_empty()) {
            let theirs = || theirs.iter().map(Borrow::<str>::borrow);
            let same = |m: &BTreeSet<String>| theirs().eq(m.iter().map(String::as_str));
            if !same(&self.agreed) && !self.joint.iter().any(same) {
                self.joint.push(theirs().map(str::to_string).collect());
            }
        }
    }

    /// Makes `staying` the agreed membership. Members it drops leave the joint memberships
    /// noted before (they were silent for the settling time); when it drops members, the
    /// membership it dropped them from becomes joint, and when it grows, the one it grew
    /// from. Every joint membership is let go once every other member of the agreed one
    /// reports exactly it.
    fn adopt<K, V>(
        &mut self,
        me: &str,
        staying: BTreeSet<String>,
        adopted: &BTreeMap<K, BTreeSet<V>>,
    ) where
        K: Borrow<str> + Ord,
        V: Borrow<str> + Ord,
    {
        for joint in &mut self.joint {
            joint.retain(|m| staying.contains(m) || !self.agreed.contains(m));
        }
        // Dropped: the others may not have dropped them yet, and count against the whole
        // membership. Grown: those that have not adopted the growth count against the rest.
        let dropped = self.agreed.iter().any(|m| !staying.contains(m));
        let grew = staying.iter().any(|m| !self.agreed.contains(m));
        // Built only on a change: this runs on every judgement while serving.
        if dropped {
            self.join(self.agreed.clone());
        }
        if grew {
            self.join(self.agreed.intersection(&staying).cloned().collect());
        }
        self.agreed = staying;
        let agreed = &self.agreed;
        self.joint.retain(|m| !m.is_empty() && m != agreed);
        if self.joint.is_empty() {
            return;
        }
        let all_agree = agreed.iter().filter(|m| *m != me).all(|m| {
            adopted.get(m.as_str()).is_some_and(|theirs| {
                theirs
                    .iter()
                    .map(Borrow::<str>::borrow)
                    .eq(agreed.iter().map(String::as_str))
            })
        });
        if all_agree {
            self.joint.clear();
        }
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

    /// `node`'s cluster port refused a connection: most likely its process is gone, but a
    /// firewall that rejects says the same of one that lives on. It leaves the agreed
    /// membership at once (its entities move now), and the membership it left stays joint
    /// until every other member reports the smaller one or [`Quorum::forget`] confirms it
    /// gone (the store's word, see [`crate::witness`]): a node cut off by such a firewall
    /// loses its peers one refusal at a time, and must not end up serving on the few left.
    pub fn lose(&mut self, node: &str, now: Instant) {
        if self.agreed.contains(node) {
            self.join(self.agreed.clone());
        }
        self.agreed.remove(node);
        // Not `left`: it may live, and a member that reports it still counts it.
        self.gone.insert(node.to_string(), now);
    }

    /// `node` left for sure (it announced leaving, an operator downed it, or the store says
    /// its process is gone): it no longer counts towards a majority, nor in any joint
    /// membership.
    pub fn forget(&mut self, node: &str, now: Instant) {
        self.agreed.remove(node);
        for joint in &mut self.joint {
            joint.remove(node);
        }
        self.left.insert(node.to_string());
        self.gone.insert(node.to_string(), now);
    }

    /// Judges what `me` hears against what the members it hears say they hear, at `now`:
    /// - `heard`: the `up` members heard long enough to count (a member back from `down`
    ///   counts after `stable_after`), `me` included when it is up;
    /// - `hearing`: those heard at all now, `me` included when it is up;
    /// - `reports`: for each member of `hearing` but `me`, the members it says it hears.
    ///
    /// Cut pairs (from `hearing` and `reports`) that have held for `stable_after` pick the
    /// members left out ([`left_out`]): a member noticed silent by one node a tick before
    /// another is no cut, nor is a link back within that time, nor a pair with a member
    /// known gone ([`Quorum::forget`], for `stable_after` after: a peer slower to notice
    /// still hears it). A pair
    /// absent from this node's judgements for less than a quarter of `stable_after` keeps
    /// its age, and a pair held is released only once it has been absent that long, so a
    /// member standing aside does not serve on a blip of its own view or on stale
    /// heartbeats read in a burst. If `me` is left out it stands aside (its
    /// agreed membership untouched, its view to settle again afterwards). Otherwise `heard`
    /// is judged as [`Quorum::judge`] does, keeping every member reachable at all (heard
    /// now, or heard by a member heard now).
    pub fn judge_views<K, V>(
        &mut self,
        me: &str,
        heard: &BTreeSet<String>,
        hearing: &BTreeSet<String>,
        reports: &BTreeMap<K, BTreeSet<V>>,
        adopted: &BTreeMap<K, BTreeSet<V>>,
        now: Instant,
    ) -> Judgement
    where
        K: Borrow<str> + Ord,
        V: Borrow<str> + Ord,
    {
        let stable_after = self.stable_after;
        self.gone.retain(|n, at| {
            !hearing.contains(n) && now.saturating_duration_since(*at) < stable_after
        });
        self.left.retain(|n| !hearing.contains(n));
        let gone = &self.gone;
        let mut views: BTreeMap<&str, BTreeSet<&str>> = reports
            .iter()
            .map(|(node, hears)| (Borrow::<str>::borrow(node), hears))
            .filter(|(node, _)| hearing.contains(*node) && *node != me)
            .map(|(node, hears)| {
                let hears = hears.iter().map(Borrow::<str>::borrow);
                (node, hears.filter(|n| !gone.contains_key(*n)).collect())
            })
            .collect();
        if hearing.contains(me) {
            views.insert(me, hearing.iter().map(String::as_str).collect());
        }
        // Every member reachable at all: heard now, or heard by a member heard now (this
        // node's own view adds only members it hears).
        let known = named(&views);
        let mut kept: BTreeSet<String> = hearing.clone();
        for &member in &known {
            if !kept.contains(member) {
                kept.insert(member.to_string());
            }
        }
        let seen = cuts_among(&views, &known);
        // A pair keeps its age through absences shorter than this, and a pair held stays
        // held until it has been absent this long: when a cut heals, the heartbeats queued
        // on the link arrive in a burst, in order, the older ones still saying the link is
        // down, and a member standing aside must not serve and stand aside again as they
        // are read (nor on a blip of its own view). Absence is what a judgement saw, not
        // the time between judgements, which follows the heartbeat.
        let release = stable_after / 4;
        self.cuts.retain(|pair, sighting| {
            sighting.judge(seen.contains(pair), now, release);
            !sighting.released(now, release)
        });
        for pair in &seen {
            self.cuts
                .entry(pair.clone())
                .or_insert_with(|| Sighting::new(now));
        }
        let held: BTreeSet<Pair> = self
            .cuts
            .iter()
            .filter(|(_, sighting)| sighting.held(now, stable_after))
            .map(|(pair, _)| pair.clone())
            .collect();
        let out = left_out(&held);
        if out.contains(me) {
            // Its view must settle again once it is back, before a silent member drops.
            self.droppable_since = None;
            return Judgement {
                verdict: Verdict::StandAside,
                ring: Vec::new(),
                left_out: out,
            };
        }
        // Filtered only when a report names a member gone for sure (a copy of every report
        // per judgement otherwise, for as long as the process remembers one that left).
        let left = &self.left;
        let names_left = adopted.values().any(|theirs| {
            theirs
                .iter()
                .any(|m| left.contains(Borrow::<str>::borrow(m)))
        });
        let mut judgement = if !names_left {
            self.judge_keeping(me, heard, &kept, adopted, now)
        } else {
            // What members report without those gone for sure that they do not hear.
            let adopted: BTreeMap<&str, BTreeSet<&str>> = adopted
                .iter()
                .map(|(node, theirs)| {
                    let node: &str = node.borrow();
                    let hears = reports.get(node);
                    let counted = theirs
                        .iter()
                        .map(Borrow::<str>::borrow)
                        .filter(|m| !left.contains(*m) || hears.is_some_and(|h| h.contains(*m)));
                    (node, counted.collect())
                })
                .collect();
            self.judge_keeping(me, heard, &kept, &adopted, now)
        };
        judgement.left_out = out;
        judgement
    }

    /// Judges `heard` (the `up` members heard now, this node included when it is up) at
    /// `now`, as [`Quorum::judge_keeping`] with nothing kept and no member's agreed
    /// membership known.
    pub fn judge(&mut self, heard: &BTreeSet<String>, now: Instant) -> Judgement {
        let adopted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        self.judge_keeping("", heard, &BTreeSet::new(), &adopted, now)
    }

    /// Judges `heard` at `now`. Serving with every agreed member heard or kept, or with the
    /// set of the others (silent, and heard by no member heard) unchanged for
    /// `stable_after`, makes the heard members, and the agreed members in `kept` (reachable,
    /// through another member if not directly), the agreed membership; kept members never
    /// count towards a majority. A member that stops being kept waits its `stable_after`
    /// like one that just went silent. `adopted` holds the agreed membership each member
    /// heard now last reported (see [`Quorum::joint`]).
    pub fn judge_keeping<K, V>(
        &mut self,
        me: &str,
        heard: &BTreeSet<String>,
        kept: &BTreeSet<String>,
        adopted: &BTreeMap<K, BTreeSet<V>>,
        now: Instant,
    ) -> Judgement
    where
        K: Borrow<str> + Ord,
        V: Borrow<str> + Ord,
    {
        let silent: BTreeSet<String> = self.agreed.difference(heard).cloned().collect();
        let droppable: BTreeSet<String> = silent.difference(kept).cloned().collect();
        if self.droppable_since.is_none() || self.droppable != droppable {
            self.droppable = droppable;
            self.droppable_since = Some(now);
        }
        let stable = self
            .droppable_since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.stable_after);
        self.note_reports(adopted);
        let verdict = self.decide(heard);
        if verdict == Verdict::StandDown {
            return Judgement {
                verdict,
                ring: Vec::new(),
                left_out: BTreeSet::new(),
            };
        }
        let staying: BTreeSet<String> = heard
            .iter()
            .chain(silent.intersection(kept))
            .cloned()
            .collect();
        if self.droppable.is_empty() || stable {
            self.adopt(me, staying.clone(), adopted);
            return Judgement {
                verdict,
                ring: staying.into_iter().collect(),
                left_out: BTreeSet::new(),
            };
        }
        let ring: BTreeSet<String> = heard.iter().cloned().chain(silent).collect();
        Judgement {
            verdict,
            ring: ring.into_iter().collect(),
            left_out: BTreeSet::new(),
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
        // Until b says it dropped c too, a, b and c stay joint: b might still count c, and
        // b and c would then be two of three.
        let before = q.clone();
        let j = q.judge(&set(&["a"]), t + Duration::from_secs(4));
        assert_eq!(j.verdict, Verdict::StandDown, "b may not have dropped c");
        // Once b says so, that goes, and when b goes silent too, a is the lower of two and
        // keeps serving alone.
        let mut q = before;
        let none = views(&[]);
        let ab = set(&["a", "b"]);
        let b_dropped_c = said(&[("b", &ab)]);
        q.judge_views(
            "a",
            &ab,
            &ab,
            &none,
            &b_dropped_c,
            t + Duration::from_millis(3_500),
        );
        assert!(q.joint().is_empty());
        let a = set(&["a"]);
        let j = q.judge_views("a", &a, &a, &none, &none, t + Duration::from_secs(4));
        assert_eq!(j.verdict, Verdict::Serve);
        let j = q.judge_views("a", &a, &a, &none, &none, t + Duration::from_secs(7));
        assert_eq!(j.ring, ["a"]);
    }

    #[test]
    fn members_that_left_for_sure_do_not_count_in_what_others_report() {
        // g stood down, cut off, while c, d, e and f left for good and the others dropped
        // g. Back, g still reports all seven; a and b, with g, are a majority of what is
        // left of that.
        let t = Instant::now();
        let seven = set(&["a", "b", "c", "d", "e", "f", "g"]);
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&set(&["a", "b", "c", "d", "e", "f"]), t);
        for gone in ["c", "d", "e", "f"] {
            q.forget(gone, t);
        }
        let none = views(&[]);
        let ab = set(&["a", "b"]);
        let b_agrees = said(&[("b", &ab)]);
        q.judge_views("a", &ab, &ab, &none, &b_agrees, t + Duration::from_secs(1));
        assert!(q.joint().is_empty());
        let abg = set(&["a", "b", "g"]);
        let g_back = said(&[("b", &ab), ("g", &seven)]);
        let hears = said(&[("b", &abg), ("g", &abg)]);
        let j = q.judge_views("a", &abg, &abg, &hears, &g_back, t + Duration::from_secs(2));
        assert_eq!(j.verdict, Verdict::Serve);
        assert_eq!(q.joint(), std::slice::from_ref(&ab));
        // A member this node found gone that another still hears still counts in that
        // one's membership: a's dial to c was refused, but b hears c.
        let abc = set(&["a", "b", "c"]);
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&abc, t);
        q.forget("c", t);
        let b_hears_c = said(&[("b", &abc)]);
        let j = q.judge_views(
            "a",
            &ab,
            &ab,
            &b_hears_c,
            &b_hears_c,
            t + Duration::from_secs(1),
        );
        assert_eq!(j.verdict, Verdict::Serve);
        assert_eq!(q.joint(), std::slice::from_ref(&abc));
        let a = set(&["a"]);
        let j = q.judge_views("a", &a, &a, &none, &none, t + Duration::from_millis(1_100));
        assert_eq!(j.verdict, Verdict::StandDown, "b and c may be two of three");
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
        q.forget("n1", t);
        let j = q.judge(&set(&["n2"]), t + Duration::from_millis(1));
        assert_eq!(j.verdict, Verdict::Serve);
        assert_eq!(j.ring, ["n2"]);
    }

    #[test]
    fn a_member_cut_off_by_refusals_one_at_a_time_does_not_serve_on_what_is_left() {
        // A rejecting firewall cuts n1 off: n2's port refuses it first, then n3's. n1 still
        // hears n3 when n2 refuses, so it serves and loses n2 at once; but when n3 refuses
        // too, the membership n2 left stays joint, and n1, with one of its three, stands
        // down (without the joint membership it would hold the even split of n1 and n3,
        // with its lowest member, while n2 and n3 serve on the other side).
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&set(&["n1", "n2", "n3"]), t);
        q.lose("n2", ms(1));
        let j = q.judge(&set(&["n1", "n3"]), ms(2));
        assert_eq!(j.verdict, Verdict::Serve);
        assert_eq!(
            j.ring,
            ["n1", "n3"],
            "a lost member leaves the ring at once"
        );
        assert_eq!(q.agreed(), &set(&["n1", "n3"]));
        q.lose("n3", ms(3));
        assert_eq!(q.judge(&set(&["n1"]), ms(4)).verdict, Verdict::StandDown);
        // Once the store says they are gone, it serves on what is left.
        q.forget("n2", ms(5000));
        q.forget("n3", ms(5000));
        assert_eq!(q.judge(&set(&["n1"]), ms(5001)).verdict, Verdict::Serve);
    }

    #[test]
    fn the_membership_a_lost_member_left_is_let_go_once_the_others_report_the_smaller_one() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let all = set(&["n1", "n2", "n3"]);
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&all, t);
        q.lose("n3", ms(1));
        let (heard, kept) = (set(&["n1", "n2"]), BTreeSet::new());
        let n2_has_not = said(&[("n2", &all)]);
        q.judge_keeping("n1", &heard, &kept, &n2_has_not, ms(2));
        assert_eq!(q.joint(), std::slice::from_ref(&all), "n2 still counts n3");
        let n2_lost_it_too = said(&[("n2", &heard)]);
        q.judge_keeping("n1", &heard, &kept, &n2_lost_it_too, ms(3));
        assert!(q.joint().is_empty(), "{:?}", q.joint());
    }

    #[test]
    fn a_member_forgotten_on_the_stores_word_that_lives_counts_again_only_where_it_matters() {
        let t = Instant::now();
        // The survivor of two served once the store said n1 was gone: n1 living after all
        // takes that back.
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&set(&["n1", "n2"]), t);
        q.forget("n1", t);
        q.judge(&set(&["n2"]), t);
        assert!(!q.serves_counting(&set(&["n2"]), &set(&["n1"])));
        // Two of three that forgot the third still hold a majority counting it.
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&set(&["n1", "n2", "n3"]), t);
        q.forget("n3", t);
        q.judge(&set(&["n1", "n2"]), t);
        assert!(q.serves_counting(&set(&["n1", "n2"]), &set(&["n3"])));
    }

    #[test]
    fn a_lost_member_counts_in_what_others_report_even_when_they_do_not_hear_it() {
        // Unlike a member gone for sure: a lost one may live behind a rejecting firewall,
        // and n3, which lost sight of n2 for a moment but still counts it, does not agree
        // with n1 on the smaller membership.
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let all = set(&["n1", "n2", "n3"]);
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&all, t);
        q.lose("n2", ms(1));
        let heard = set(&["n1", "n3"]);
        let hears = views(&[("n3", &["n1", "n3"])]);
        let adopted = said(&[("n3", &all)]);
        q.judge_views("n1", &heard, &heard, &hears, &adopted, ms(2));
        assert_eq!(q.joint(), std::slice::from_ref(&all));
    }

    /// Judges `me`'s view every 250 ms (as heartbeats and ticks would) from `from` to `to`
    /// after `t`; the last judgement.
    #[allow(clippy::too_many_arguments)]
    fn judge_until(
        q: &mut Quorum,
        me: &str,
        heard: &BTreeSet<String>,
        hearing: &BTreeSet<String>,
        reports: &BTreeMap<String, BTreeSet<String>>,
        t: Instant,
        from: Duration,
        to: Duration,
    ) -> Judgement {
        let step = Duration::from_millis(250);
        let mut at = from;
        loop {
            let j = q.judge_views(me, heard, hearing, reports, &BTreeMap::new(), t + at);
            if at >= to {
                return j;
            }
            at = (at + step).min(to);
        }
    }

    fn views(of: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        of.iter()
            .map(|(n, hears)| (n.to_string(), set(hears)))
            .collect()
    }

    /// What each member says of a set (whom it hears, or what it agreed on).
    fn said(of: &[(&str, &BTreeSet<String>)]) -> BTreeMap<String, BTreeSet<String>> {
        of.iter()
            .map(|(n, s)| (n.to_string(), (*s).clone()))
            .collect()
    }

    #[test]
    fn of_two_members_that_lose_each_other_the_higher_named_stands_aside() {
        let t = Instant::now();
        let all = set(&["a", "b", "c"]);
        // a and c no longer hear each other; b hears both.
        let hears = views(&[
            ("a", &["a", "b"]),
            ("b", &["a", "b", "c"]),
            ("c", &["b", "c"]),
        ]);
        let mut nodes: BTreeMap<&str, Quorum> = ["a", "b", "c"]
            .into_iter()
            .map(|n| (n, Quorum::new(Duration::from_secs(2))))
            .collect();
        for q in nodes.values_mut() {
            q.judge(&all, t);
        }
        let judge = |nodes: &mut BTreeMap<&str, Quorum>, me: &str, from: u64, to: u64| {
            judge_until(
                nodes.get_mut(me).unwrap(),
                me,
                &hears[me],
                &hears[me],
                &hears,
                t,
                Duration::from_secs(from),
                Duration::from_secs(to),
            )
        };
        // Just noticed: nobody moves anything yet.
        for me in ["a", "b", "c"] {
            let j = judge(&mut nodes, me, 1, 1);
            assert_eq!(j.verdict, Verdict::Serve, "{me}");
            assert_eq!(j.ring, ["a", "b", "c"], "{me}");
        }
        // Held for the settling time: c stands aside; a and b agree on it, and keep it in
        // their agreed membership and ring (membership drops it on its word that it does
        // not serve), a past the settling time of its own view too.
        let j = judge(&mut nodes, "c", 1, 3);
        assert_eq!(j.verdict, Verdict::StandAside);
        assert!(j.ring.is_empty());
        assert_eq!(nodes["c"].agreed(), &all, "standing aside shrinks nothing");
        for me in ["a", "b"] {
            for (from, to) in [(1, 3), (3, 4)] {
                let j = judge(&mut nodes, me, from, to);
                assert_eq!(j.verdict, Verdict::Serve, "{me}");
                assert_eq!(j.left_out, set(&["c"]), "{me}");
                assert_eq!(j.ring, ["a", "b", "c"], "{me} keeps c: b hears it");
                assert_eq!(nodes[me].agreed(), &all, "{me}");
            }
        }
        let healed = views(&[
            ("a", &["a", "b", "c"]),
            ("b", &["a", "b", "c"]),
            ("c", &["a", "b", "c"]),
        ]);
        // Healed: c serves again, with everyone, once the cut has been absent a quarter of
        // the settling time (stale heartbeats may still show it in between).
        for me in ["a", "b", "c"] {
            let q = nodes.get_mut(me).unwrap();
            let j = q.judge_views(
                me,
                &all,
                &all,
                &healed,
                &BTreeMap::new(),
                t + Duration::from_secs(5),
            );
            assert_eq!(j.left_out, set(&["c"]), "{me}: just healed");
            let j = q.judge_views(
                me,
                &all,
                &all,
                &healed,
                &BTreeMap::new(),
                t + Duration::from_millis(5_600),
            );
            assert_eq!(j.verdict, Verdict::Serve, "{me}");
            assert_eq!(j.ring, ["a", "b", "c"], "{me}");
            assert!(j.left_out.is_empty(), "{me}");
        }
    }

    #[test]
    fn a_member_reachable_only_through_others_is_kept_but_makes_no_majority() {
        let t = Instant::now();
        let all = set(&["a", "b", "c", "d", "e"]);
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&all, t);
        // a hears only b, which still hears c: two of five, whatever b relays.
        let ab = set(&["a", "b"]);
        let reports = views(&[("b", &["a", "b", "c"])]);
        for secs in [1, 3, 30] {
            let j = q.judge_views(
                "a",
                &ab,
                &ab,
                &reports,
                &BTreeMap::new(),
                t + Duration::from_secs(secs),
            );
            assert_eq!(j.verdict, Verdict::StandDown, "at {secs} s");
        }
        // Three of five heard, d kept through c: d stays agreed and in the ring; e, which
        // nobody hears, is dropped once the view settles.
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&all, t);
        let abc = set(&["a", "b", "c"]);
        let reports = views(&[("b", &["a", "b", "c"]), ("c", &["a", "b", "c", "d"])]);
        let j = q.judge_views(
            "a",
            &abc,
            &abc,
            &reports,
            &BTreeMap::new(),
            t + Duration::from_secs(1),
        );
        assert_eq!(j.ring, ["a", "b", "c", "d", "e"]);
        let j = q.judge_views(
            "a",
            &abc,
            &abc,
            &reports,
            &BTreeMap::new(),
            t + Duration::from_secs(4),
        );
        assert_eq!(j.verdict, Verdict::Serve);
        assert_eq!(j.ring, ["a", "b", "c", "d"]);
        assert_eq!(q.agreed(), &set(&["a", "b", "c", "d"]));
    }

    #[test]
    fn a_death_noticed_a_tick_apart_is_no_cut() {
        let t = Instant::now();
        let tick = Duration::from_millis(500);
        let mut q = Quorum::new(4 * tick);
        q.judge(&set(&["a", "b", "c"]), t);
        let bc = set(&["b", "c"]);
        // a died: c notices first, while b still says it hears a; b notices a tick later.
        let stale = views(&[("b", &["a", "b", "c"])]);
        let j = q.judge_views("c", &bc, &bc, &stale, &BTreeMap::new(), t + tick);
        assert_eq!(j.verdict, Verdict::Serve);
        let j = q.judge_views("c", &bc, &bc, &stale, &BTreeMap::new(), t + 2 * tick);
        assert!(j.left_out.is_empty());
        let fresh = views(&[("b", &["b", "c"])]);
        let j = q.judge_views("c", &bc, &bc, &fresh, &BTreeMap::new(), t + 3 * tick);
        assert_eq!(j.verdict, Verdict::Serve);
        // Dropped once nobody hears it, after the settling time from then.
        let j = q.judge_views("c", &bc, &bc, &fresh, &BTreeMap::new(), t + 6 * tick);
        assert_eq!(j.ring, ["a", "b", "c"]);
        let j = q.judge_views("c", &bc, &bc, &fresh, &BTreeMap::new(), t + 7 * tick);
        assert_eq!(j.ring, ["b", "c"]);
        assert!(j.left_out.is_empty());
    }

    #[test]
    fn a_member_known_gone_makes_no_cut_with_a_peer_slower_to_notice() {
        let t = Instant::now();
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&set(&["a", "b", "c"]), t);
        // a was killed: its port refused b's redial at once, while c only notices by the
        // heartbeat timeout, seconds later, and says it hears a until then.
        q.forget("a", t);
        let bc = set(&["b", "c"]);
        let slow = views(&[("c", &["a", "b", "c"])]);
        let j = judge_until(
            &mut q,
            "b",
            &bc,
            &bc,
            &slow,
            t,
            Duration::ZERO,
            Duration::from_millis(2_500),
        );
        assert_eq!(
            j.verdict,
            Verdict::Serve,
            "b, higher-named than a, does not stand aside"
        );
        assert!(j.left_out.is_empty());
        assert_eq!(j.ring, ["b", "c"]);
        // a came back, but b still cannot hear it while c does: a real cut, held once it has
        // shown for the settling time.
        let j = judge_until(
            &mut q,
            "b",
            &bc,
            &bc,
            &slow,
            t,
            Duration::from_millis(2_500),
            Duration::from_secs(5),
        );
        assert_eq!(
            j.verdict,
            Verdict::StandAside,
            "b, the higher-named end of the cut"
        );
    }

    #[test]
    fn a_member_no_longer_kept_waits_the_settling_time_before_it_drops() {
        let t = Instant::now();
        let s = |ms: u64| t + Duration::from_millis(ms);
        let all = set(&["a", "b", "c"]);
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&all, t);
        // a lost c long ago; b still hears it: kept.
        let ab = set(&["a", "b"]);
        let b_hears_c = views(&[("b", &["a", "b", "c"])]);
        judge_until(
            &mut q,
            "a",
            &ab,
            &ab,
            &b_hears_c,
            t,
            Duration::ZERO,
            Duration::from_secs(10),
        );
        assert_eq!(q.agreed(), &all);
        // b's link to c blips: c is no longer kept, but stays agreed until that has held.
        let b_lost_c = views(&[("b", &["a", "b"])]);
        let j = q.judge_views("a", &ab, &ab, &b_lost_c, &BTreeMap::new(), s(10_500));
        assert_eq!(j.ring, ["a", "b", "c"]);
        assert_eq!(q.agreed(), &all, "a blip of a relay drops nothing at once");
        let j = q.judge_views("a", &ab, &ab, &b_hears_c, &BTreeMap::new(), s(11_000));
        assert_eq!(j.ring, ["a", "b", "c"]);
        assert_eq!(q.agreed(), &all);
    }

    #[test]
    fn a_link_back_before_the_settling_time_is_no_cut_and_a_blip_keeps_a_member_aside() {
        let t = Instant::now();
        let s = |secs: f64| t + Duration::from_secs_f64(secs);
        let all = set(&["a", "b", "c"]);
        let bc = set(&["b", "c"]);
        let b_hears_all = views(&[("b", &["a", "b", "c"]), ("a", &["a", "b", "c"])]);
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&all, t);
        // c lost a for a moment: a is down for c, then heard again at once, though it
        // counts (heard) only after the settling time.
        q.judge_views("c", &bc, &bc, &b_hears_all, &BTreeMap::new(), s(0.0));
        let j = q.judge_views("c", &bc, &all, &b_hears_all, &BTreeMap::new(), s(0.5));
        assert_eq!(j.verdict, Verdict::Serve);
        let j = q.judge_views("c", &bc, &all, &b_hears_all, &BTreeMap::new(), s(2.5));
        assert_eq!(j.verdict, Verdict::Serve, "a link back is no cut");
        assert!(j.left_out.is_empty());
        // A lasting cut: c stands aside; a blip of its own view (it loses b for a moment,
        // so sees no cut at all) does not let it serve when the cut shows again.
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&all, t);
        let only_b = views(&[("b", &["a", "b", "c"])]);
        let secs = Duration::from_secs_f64;
        let j = judge_until(&mut q, "c", &bc, &bc, &only_b, t, secs(0.0), secs(2.0));
        assert_eq!(j.verdict, Verdict::StandAside);
        let c = set(&["c"]);
        q.judge_views("c", &c, &c, &views(&[]), &BTreeMap::new(), s(2.2));
        let j = q.judge_views("c", &bc, &bc, &only_b, &BTreeMap::new(), s(2.4));
        assert_eq!(j.verdict, Verdict::StandAside, "the cut keeps its age");
        // Healed, but a stale heartbeat read in the burst still shows the cut: c serves
        // only once the cut has not shown for a quarter of the settling time.
        let healed = views(&[("b", &["a", "b", "c"]), ("a", &["a", "b", "c"])]);
        let stale = views(&[("b", &["a", "b", "c"]), ("a", &["a", "b"])]);
        let j = q.judge_views("c", &bc, &all, &healed, &BTreeMap::new(), s(2.6));
        assert_eq!(j.verdict, Verdict::StandAside, "just healed");
        let j = q.judge_views("c", &bc, &all, &stale, &BTreeMap::new(), s(2.61));
        assert_eq!(j.verdict, Verdict::StandAside, "a stale heartbeat");
        let j = q.judge_views("c", &bc, &all, &healed, &BTreeMap::new(), s(2.62));
        assert_eq!(j.verdict, Verdict::StandAside);
        let j = q.judge_views("c", &bc, &all, &healed, &BTreeMap::new(), s(3.2));
        assert_eq!(j.verdict, Verdict::Serve, "the cut no longer shows");
        // An old sighting gives a new cut no age.
        let mut q = Quorum::new(Duration::from_secs(2));
        q.judge(&all, t);
        let j = judge_until(&mut q, "c", &bc, &bc, &only_b, t, secs(0.0), secs(2.0));
        assert_eq!(j.verdict, Verdict::StandAside);
        q.judge_views("c", &all, &all, &healed, &BTreeMap::new(), s(3.0));
        let j = q.judge_views("c", &bc, &bc, &only_b, &BTreeMap::new(), s(4.0));
        assert_eq!(
            j.verdict,
            Verdict::Serve,
            "a cut seen again after a while starts anew"
        );
    }

    #[test]
    fn a_membership_that_grew_needs_a_majority_of_the_one_before_until_all_adopted_it() {
        let t = Instant::now();
        let ms = |ms: u64| t + Duration::from_millis(ms);
        let (old, all) = (set(&["a", "b", "c"]), set(&["a", "b", "c", "d"]));
        let none = views(&[]);
        // a hears d join before b and c do (they still agree on a, b, c).
        let mut a = Quorum::new(Duration::from_secs(2));
        a.judge_views("a", &old, &old, &none, &none, ms(0));
        let before = said(&[("b", &old), ("c", &old), ("d", &all)]);
        let j = a.judge_views("a", &all, &all, &none, &before, ms(100));
        assert_eq!(j.verdict, Verdict::Serve);
        assert_eq!((a.agreed(), a.joint()), (&all, &[old.clone()][..]));
        // Cut a and d from b and c now: half of the new membership with its lowest member,
        // but a third of the old one, which b and c still count against (and serve by).
        let ad = set(&["a", "d"]);
        let j = a.judge_views("a", &ad, &ad, &none, &said(&[("d", &all)]), ms(200));
        assert_eq!(
            j.verdict,
            Verdict::StandDown,
            "joint: a needs two of a, b, c"
        );
        let mut b = Quorum::new(Duration::from_secs(2));
        b.judge_views("b", &old, &old, &none, &none, ms(0));
        let bc = set(&["b", "c"]);
        let j = b.judge_views("b", &bc, &bc, &none, &said(&[("c", &old)]), ms(200));
        assert_eq!(j.verdict, Verdict::Serve);
        // Healed, and every member says it adopted d: the old membership no longer counts.
        let adopted = said(&[("b", &all), ("c", &all), ("d", &all)]);
        a.judge_views("a", &all, &all, &none, &before, ms(300));
        assert_eq!(
            a.joint(),
            std::slice::from_ref(&old),
            "b and c have not said so yet"
        );
        a.judge_views("a", &all, &all, &none, &adopted, ms(400));
        assert!(a.joint().is_empty());
        let j = a.judge_views("a", &ad, &ad, &none, &said(&[("d", &all)]), ms(500));
        assert_eq!(
            j.verdict,
            Verdict::Serve,
            "an even split, with the lowest member"
        );
        // A member forgotten leaves the joint membership too.
        let mut a = Quorum::new(Duration::from_secs(2));
        a.judge_views("a", &old, &old, &none, &none, ms(0));
        a.judge_views("a", &all, &all, &none, &before, ms(100));
        a.forget("c", ms(150));
        assert_eq!(a.joint(), [set(&["a", "b"])]);
        // Members that agree on more than a does count against theirs too: a saw d join,
        // b and c saw d and e (whom a does not hear yet). Cut a and d from the rest.
        let mut a = Quorum::new(Duration::from_secs(2));
        a.judge_views("a", &old, &old, &none, &none, ms(0));
        let five = set(&["a", "b", "c", "d", "e"]);
        let more = said(&[("b", &five), ("c", &five), ("d", &all)]);
        a.judge_views("a", &all, &all, &none, &more, ms(100));
        a.judge_views("a", &all, &all, &none, &more, ms(200));
        assert_eq!(
            a.joint(),
            [five.clone(), old.clone()],
            "b's and c's, and where a grew from"
        );
        let j = a.judge_views("a", &ad, &ad, &none, &said(&[("d", &all)]), ms(300));
        assert_eq!(j.verdict, Verdict::StandDown);
    }

    #[test]
    fn a_member_back_after_the_others_dropped_it_counts_against_what_they_agree_on() {
        let t = Instant::now();
        let (abc, all) = (set(&["a", "b", "c"]), set(&["a", "b", "c", "d"]));
        let none = views(&[]);
        // d stood down while a, b and c dropped it; it still agrees on all four. It hears
        // them again (they have not taken it back yet), then loses b and c.
        let mut d = Quorum::new(Duration::from_secs(2));
        d.judge(&all, t);
        let reports = said(&[("a", &abc), ("b", &abc), ("c", &abc)]);
        let j = d.judge_views(
            "d",
            &all,
            &all,
            &none,
            &reports,
            t + Duration::from_millis(100),
        );
        assert_eq!(j.verdict, Verdict::Serve);
        let ad = set(&["a", "d"]);
        let only_a = said(&[("a", &abc)]);
        let j = d.judge_views(
            "d",
            &ad,
            &ad,
            &none,
            &only_a,
            t + Duration::from_millis(200),
        );
        assert_eq!(
            j.verdict,
            Verdict::StandDown,
            "one of a, b, c: not a majority of theirs"
        );
    }

    #[test]
    fn a_joining_member_counts_against_what_its_peers_agreed_on() {
        let t = Instant::now();
        let (old, all) = (set(&["a", "b", "c"]), set(&["a", "b", "c", "d"]));
        let none = views(&[]);
        // d agrees for the first time while only a has adopted it.
        let reports = said(&[("a", &all), ("b", &old), ("c", &old)]);
        let mut d = Quorum::new(Duration::from_secs(2));
        d.judge_views("d", &all, &all, &none, &reports, t);
        assert_eq!(d.agreed(), &all);
        assert_eq!(
            d.joint(),
            std::slice::from_ref(&old),
            "b's and c's (a's is d's own)"
        );
        let ad = set(&["a", "d"]);
        let j = d.judge_views("d", &ad, &ad, &none, &none, t + Duration::from_millis(100));
        assert_eq!(j.verdict, Verdict::StandDown);
        // A cold start (no member agreed on anything yet) has nothing to respect.
        let mut d = Quorum::new(Duration::from_secs(2));
        d.judge_views("d", &all, &all, &none, &none, t);
        assert!(d.joint().is_empty());
    }

    #[test]
    fn the_member_in_most_cuts_goes_first() {
        // d lost a, b and c; a and c lost each other too.
        let cuts: BTreeSet<Pair> = [("a", "d"), ("b", "d"), ("c", "d"), ("a", "c")]
            .into_iter()
            .map(|(x, y)| (x.to_string(), y.to_string()))
            .collect();
        assert_eq!(left_out(&cuts), set(&["c", "d"]));
        assert!(left_out(&BTreeSet::new()).is_empty());
    }

    /// What each of `names` hears, by `hears`.
    fn views_of(
        names: &[String],
        hears: &impl Fn(&String, &String) -> bool,
    ) -> BTreeMap<String, BTreeSet<String>> {
        names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    names.iter().filter(|m| hears(n, m)).cloned().collect(),
                )
            })
            .collect()
    }

    /// What `me` sees of `all`: the views of the members it hears, its own among them.
    fn seen_by(
        all: &BTreeMap<String, BTreeSet<String>>,
        me: &String,
    ) -> BTreeMap<String, BTreeSet<String>> {
        all.iter()
            .filter(|(n, _)| all[me].contains(*n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    /// A random cluster's links: which pairs of `names` hear each other.
    fn linked(names: &[String], cut: &[bool]) -> impl Fn(&String, &String) -> bool {
        let index: BTreeMap<String, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let cut = cut.to_vec();
        move |x, y| {
            let (i, j) = (index[x].min(index[y]), index[x].max(index[y]));
            i == j || !cut[i * 9 + j]
        }
    }

    fn members() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set("[a-f][0-9]", 1..9).prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        /// The merge walk finds exactly the pairs a lookup of every pair finds, with views
        /// that name members no view belongs to.
        #[test]
        fn cut_pairs_match_a_lookup_of_every_pair(
            views in proptest::collection::btree_map(
                "[a-f]",
                proptest::collection::btree_set("[a-h]", 0..8),
                0..6,
            ),
        ) {
            let known: BTreeSet<&String> = views.keys().chain(views.values().flatten()).collect();
            let lacks = |x: &String, y: &String| views.get(x).is_some_and(|v| !v.contains(y));
            let mut reference = BTreeSet::new();
            for a in &known {
                for b in known.iter().filter(|b| a < *b) {
                    if lacks(a, b) || lacks(b, a) {
                        reference.insert(((*a).clone(), (*b).clone()));
                    }
                }
            }
            prop_assert_eq!(cut_pairs(&views), reference);
        }

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

        /// Whatever links are cut, the members not left out all hear each other.
        #[test]
        fn those_not_left_out_hear_each_other(names in members(), cut in proptest::collection::vec(proptest::bool::weighted(0.2), 81)) {
            let hears = linked(&names, &cut);
            let all = views_of(&names, &hears);
            let out = left_out(&cut_pairs(&all));
            let kept: Vec<&String> = names.iter().filter(|n| !out.contains(*n)).collect();
            prop_assert!(!kept.is_empty());
            for x in &kept {
                for y in &kept {
                    prop_assert!(hears(x, y), "{} and {} are both kept", x, y);
                }
            }
        }

        /// Members that hear a majority and see the same cuts (from what they hear and what
        /// those they hear say) leave out the same members, and two members that both serve
        /// then hear each other.
        #[test]
        fn members_that_see_the_same_cuts_agree(names in members(), cut in proptest::collection::vec(proptest::bool::weighted(0.15), 81)) {
            let hears = linked(&names, &cut);
            let all = views_of(&names, &hears);
            let agreed: BTreeSet<String> = names.iter().cloned().collect();
            let quorate: Vec<&String> = names
                .iter()
                .filter(|me| decide(&agreed, &all[*me]) == Verdict::Serve)
                .collect();
            let seen = |me: &String| seen_by(&all, me);
            let cuts: BTreeSet<BTreeSet<Pair>> = quorate.iter().map(|me| cut_pairs(&seen(me))).collect();
            prop_assume!(cuts.len() <= 1);
            let t = Instant::now();
            let mut serving = Vec::new();
            for me in quorate {
                let mut q = Quorum::new(Duration::from_secs(2));
                q.judge(&agreed, t);
                let j = judge_until(&mut q, me, &all[me], &all[me], &seen(me), t, Duration::ZERO, Duration::from_secs(3));
                prop_assert_eq!(&j.left_out, &left_out(&cut_pairs(&seen(me))));
                if j.verdict == Verdict::Serve {
                    serving.push(me.clone());
                }
            }
            for x in &serving {
                for y in &serving {
                    prop_assert!(hears(x, y), "{} and {} both serve", x, y);
                }
            }
        }

        /// Members join a running cluster (up to two, each `joining` for two rounds before it
        /// turns up on hearing a member that serves), or one the others dropped while it
        /// stood down comes back; each link to a newcomer forms at its own round, and
        /// heartbeats (with the sender's agreed membership) arrive a round later. Then the
        /// cluster is cut in two. Until the sides have settled (3 s, past `stable_after`, when
        /// the serving side drops the other), at most one side has a member serving.
        #[test]
        fn members_joining_or_back_as_the_cluster_splits_leave_one_side_serving(
            names in members(),
            joiners in proptest::collection::btree_set("[a-g]j", 0..3),
            back in any::<bool>(),
            links_at in proptest::collection::vec(0u32..8, 121),
            cut_at in 0u32..12,
            side in proptest::collection::vec(any::<bool>(), 11),
        ) {
            // The highest-named: alone, it stands down, and the others drop it (with two
            // members, the lower one alone would serve and never be dropped).
            let returning = names.last().filter(|_| back && names.len() > 1).cloned();
            prop_assume!(returning.is_some() || !joiners.is_empty());
            let everyone: Vec<String> = names.iter().chain(&joiners).cloned().collect();
            let index = |n: &String| everyone.iter().position(|m| m == n).unwrap_or(0);
            let newcomer = |n: &String| joiners.contains(n) || returning.as_ref() == Some(n);
            let t = Instant::now();
            let round = |r: u32| t + Duration::from_millis(100 * u64::from(r));
            let old: BTreeSet<String> = names.iter().cloned().collect();
            let mut quorums: BTreeMap<String, Quorum> = BTreeMap::new();
            for n in &names {
                let mut q = Quorum::new(Duration::from_secs(2));
                // The others dropped the returning member; it still agrees on everyone.
                let agreed: BTreeSet<String> = old
                    .iter()
                    .filter(|m| returning.as_ref() != Some(*m) || returning.as_ref() == Some(n))
                    .cloned()
                    .collect();
                q.judge(&agreed, t);
                quorums.insert(n.clone(), q);
            }
            // What each member last said it agreed on; when each newcomer first heard anyone.
            let mut said: BTreeMap<String, BTreeSet<String>> =
                quorums.iter().map(|(n, q)| (n.clone(), q.agreed().clone())).collect();
            let mut contact: BTreeMap<String, u32> = BTreeMap::new();
            let mut served: BTreeSet<String> = names.iter().filter(|n| !newcomer(n)).cloned().collect();
            for r in 1..=cut_at + 30 {
                let cut = r > cut_at;
                let linked = |x: &String, y: &String| {
                    let (i, j) = (index(x).min(index(y)), index(x).max(index(y)));
                    let formed = !(newcomer(x) || newcomer(y)) || r >= links_at[i * 11 + j];
                    x == y || (formed && (!cut || side[index(x)] == side[index(y)]))
                };
                for j in &joiners {
                    if !contact.contains_key(j) && names.iter().any(|m| linked(j, m)) {
                        contact.insert(j.clone(), r);
                        quorums.insert(j.clone(), Quorum::new(Duration::from_secs(2)));
                    }
                }
                // Up: a member, a returning one, or a joiner two rounds after it first heard
                // anyone that now hears a member that served.
                let up = |n: &String| {
                    !joiners.contains(n)
                        || contact.get(n).is_some_and(|c| r >= c + 2)
                            && served.iter().any(|m| linked(n, m))
                };
                let ups: BTreeSet<String> = everyone.iter().filter(|n| quorums.contains_key(*n) && up(n)).cloned().collect();
                let mut now_said = said.clone();
                let mut serving = BTreeSet::new();
                for (me, q) in quorums.iter_mut() {
                    let hearing: BTreeSet<String> =
                        ups.iter().filter(|m| linked(me, m)).cloned().collect();
                    let adopted: BTreeMap<String, BTreeSet<String>> = said
                        .iter()
                        .filter(|(n, _)| *n != me && hearing.contains(*n))
                        .map(|(n, s)| (n.clone(), s.clone()))
                        .collect();
                    let none = views(&[]);
                    let j = q.judge_views(me, &hearing, &hearing, &none, &adopted, round(r));
                    now_said.insert(me.clone(), q.agreed().clone());
                    if j.verdict == Verdict::Serve && ups.contains(me) {
                        serving.insert(me.clone());
                    }
                }
                said = now_said;
                served = serving.clone();
                if cut {
                    let sides: BTreeSet<bool> = serving.iter().map(|n| side[index(n)]).collect();
                    prop_assert!(sides.len() <= 1, "round {}: both sides serve: {:?}", r, serving);
                }
            }
        }

        /// However links are cut, members that hear each other only through others never
        /// make two sides that both hear a majority: judged with what every member it hears
        /// relays, at most one group of members that all hear each other serves.
        #[test]
        fn relayed_members_never_make_two_majorities(names in members(), cut in proptest::collection::vec(proptest::bool::weighted(0.3), 81)) {
            let hears = linked(&names, &cut);
            let all = views_of(&names, &hears);
            let agreed: BTreeSet<String> = names.iter().cloned().collect();
            let t = Instant::now();
            let mut serving = Vec::new();
            for me in &names {
                let seen = seen_by(&all, me);
                let mut q = Quorum::new(Duration::from_secs(2));
                q.judge(&agreed, t);
                let j = judge_until(&mut q, me, &all[me], &all[me], &seen, t, Duration::ZERO, Duration::from_secs(7));
                if j.verdict == Verdict::Serve {
                    serving.push(me.clone());
                }
            }
            // Any two serving members hear a majority each; two majorities of one agreed
            // set overlap, so no two disjoint groups serve.
            for x in &serving {
                for y in &serving {
                    let common = all[x].intersection(&all[y]).count();
                    prop_assert!(common > 0 || x == y, "{} and {} serve with nothing in common", x, y);
                }
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
