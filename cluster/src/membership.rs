//! Cluster membership: who is in the cluster, in which status, and the hash ring over the
//! `up` members.
//!
//! Each node's membership actor announces its own [`MemberInfo`] to every peer's router
//! every `heartbeat_ms`. A peer is `down` when its node session closes and its port refuses
//! the redial (a killed process; a reset session is just redialled) or when it has been silent for `heartbeat_timeout_ms` (a hung process that keeps its TCP
//! connection); a heartbeat brings it back. A node starts `joining` and turns `up` after a
//! grace period in which it meets its seeds; `leaving` is announced by a node that drains.
//! Every node derives the ring from the same rule over the same list, so all agree on
//! owners once their lists agree. A change is logged once, with the new ring summary.
//!
//! The ring is what [`Quorum`] allows: a node that hears less than a majority of the last
//! agreed membership (half, without its lowest-named member) stands down with an empty
//! ring, owning nothing and not ready, until it hears a majority again. A peer that
//! announced `leaving` has exited: it is forgotten at once. One whose session closed and
//! whose port refuses connections has most likely exited: it leaves the ring at once, and
//! it is forgotten once its beat in the shared store stops ([`crate::witness`]).
//! Silence is not proof of death (a cut network looks the same), so a silent peer counts
//! until the view has settled.

use crate::contacts::{Contact, Contacts};
use crate::quorum::{Quorum, Verdict};
use crate::router::cast_to_peers;
use crate::sharding::Sharding;
use crate::wire;
use crate::witness::{Beat, Beats, SharedStore, Sign};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::{NodeEventSubscription, node::NodeServerSessionInformation};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lists of members by member, borrowed from the peer table: whom each member heard says
/// it hears, or what it agreed on.
type Lists<'a> = BTreeMap<&'a str, BTreeSet<&'a str>>;

/// A member's lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Joining,
    Up,
    Leaving,
    Down,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Joining => "joining",
            Status::Up => "up",
            Status::Leaving => "leaving",
            Status::Down => "down",
        }
    }
}

/// What a node announces about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub node: String,
    /// Cluster listener address.
    pub addr: String,
    /// Client gateway address.
    pub gateway: String,
    pub status: Status,
    /// Active entities on the node.
    pub entities: u64,
    /// Whether the node owns entities: `false` while it stands down (cut off from the
    /// majority, or its store unreachable). Peers leave it out of the ring but still count
    /// it towards a majority: it is reachable.
    pub serving: bool,
    /// The `up` members this node hears (itself included when it is up), sorted: peers
    /// compare it with what they hear to find members that lost each other while others
    /// hear both, and keep in their rings a member they lost that it still hears
    /// (docs/DESIGN.md "Partitions").
    pub hears: Vec<Heard>,
    /// The membership this node last agreed on, sorted: a member whose agreed membership
    /// grew counts against the one before too until every member says it adopted the
    /// growth (docs/DESIGN.md "Partitions", the join race).
    pub agreed: Vec<String>,
    /// Which run of the sender's process sent it (random per start): with `seq`, tells a
    /// stale heartbeat from a fresh one, and a member restarted from one that lives on.
    pub incarnation: u64,
    /// Counts the heartbeats of one incarnation (across restarts of the membership actor).
    /// A heartbeat not newer than the last one taken from the same incarnation is
    /// dropped: after a cut heals, a session made again
    /// can carry fresh heartbeats while the old one still delivers those queued during the
    /// cut, and a stale one read last would flip what the sender is known to hear and serve.
    pub seq: u64,
}

/// A member another member hears, and whether that member last said it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heard {
    pub node: String,
    /// Whether it last said it serves, to the sender. A node drops a member from its ring
    /// as soon as the member or any member heard now that hears it says it does not serve,
    /// so a member that stands aside leaves every ring at about the same moment, whether
    /// its peers hear it directly or only through others.
    pub serving: bool,
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    pub node: String,
    pub addr: String,
    pub gateway: String,
    pub status: Status,
    pub entities: u64,
    pub serving: bool,
    /// The `up` members it said it hears, in its last heartbeat.
    pub hears: Vec<String>,
    /// Milliseconds since its last heartbeat (0 for this node).
    pub last_heartbeat_ms: u64,
}

/// This node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterView {
    pub node: String,
    pub members: Vec<MemberView>,
    /// Whether this node may own entities: `false` while it stands down, cut off from a
    /// majority of `agreed` or from its store.
    pub serving: bool,
    /// The membership this node last agreed on, which a majority is counted against.
    pub agreed: Vec<String>,
    /// The memberships that need a majority besides `agreed`: the one it grew from and
    /// those members report that differ from it, until every member reports `agreed`.
    pub joint: Vec<Vec<String>>,
    /// The members that should stand aside, as this node sees the cuts: each lost a member
    /// that others still hear (this node among them, when it stands aside).
    pub left_out: Vec<String>,
}

/// Messages to the membership actor.
pub enum MembershipMsg {
    Tick,
    Heartbeat(MemberInfo),
    /// A node's last session closed: redial it to tell an exit from a network fault.
    SessionClosed(String),
    /// A session to a node authenticated.
    SessionOpened(String),
    /// A node's cluster port refused a connection: its process is most likely gone, now,
    /// not after the timeout (see [`crate::witness`] for why only most likely).
    PortClosed(String),
    /// A read of `node`'s beat in the shared store, sent and answered when said.
    Beat {
        node: String,
        beat: Result<Option<Beat>, String>,
        sent: Instant,
        answered: Instant,
    },
    /// Where the members a peer hears listen.
    Contacts(Vec<Contact>),
    /// An operator declared this node gone for good (see [`down`]).
    Down(String),
    /// This node's own status changes (`leaving` on drain).
    SetStatus(Status),
    View(RpcReplyPort<ClusterView>),
}

impl ractor::Message for MembershipMsg {}

/// How long the beat of a member forgotten on the store's word is still read, in case it
/// grows again (see [`crate::witness`]).
const BURIED_WATCH: Duration = Duration::from_secs(60);

/// How many heartbeat timeouts a node holds on a refused member at most (see `recompute`).
const HOLD_TIMEOUTS: u32 = 4;

/// The membership actor's registered name: the node server's events and the admin API
/// find the current one by it (it is restarted under the cluster supervisor).
pub const MEMBERSHIP_NAME: &str = "bourse.membership";

/// This node's membership actor, if it runs.
pub fn membership() -> Option<ActorRef<MembershipMsg>> {
    ractor::registry::where_is(MEMBERSHIP_NAME).map(ActorRef::from)
}

/// Declares `node` gone for good, on this node and on every member it reaches: it is
/// `down` and no longer counts towards a majority, so survivors that are a minority of the
/// last agreed membership (two of three nodes lost for good, say) serve again. For a node
/// known dead only: downing a live node on the far side of a cut lets both sides serve. If
/// it talks again it rejoins as a healed member would.
pub fn down(node: &str) {
    if let Some(m) = membership() {
        let _ = m.cast(MembershipMsg::Down(node.to_string()));
    }
    cast_to_peers(&wire::msg::Cast::Down(node.to_string()));
}

/// Settings of the membership actor.
#[derive(Clone)]
pub struct MembershipArgs {
    pub me: MemberInfo,
    pub sharding: Sharding,
    pub heartbeat: Duration,
    pub timeout: Duration,
    /// How long a new node stays `joining` before it takes a share of the ring.
    pub join_grace: Duration,
    /// Mirrors whether this node is `up` and serving, for readiness checks.
    pub up: Arc<AtomicBool>,
    /// Kept outside the actor so a restarted membership actor keeps the agreed membership
    /// (a fresh one would serve on whatever it hears).
    pub quorum: Arc<Mutex<Quorum>>,
    /// Whether the store answers, and what it witnesses of the members.
    pub store: SharedStore,
    /// The last heartbeat's `seq`, kept outside the actor: a restarted membership actor
    /// goes on counting, so its peers do not drop its heartbeats as stale.
    pub seq: Arc<AtomicU64>,
    /// Where every node heard of listens, for the dialer.
    pub contacts: Contacts,
}

struct Peer {
    info: MemberInfo,
    last_seen: Instant,
    /// Since when it has been heard without a break. A member back from `down` rejoins the
    /// ring only once this is `stable_after` old: after a partition heals, the heartbeats
    /// queued on its connection arrive in a burst, and the stale ones among them must not
    /// flip the ring back and forth. (A member still agreed on, heard again by a node that
    /// serves, counts at once: `Quorum::counts_at_once`.)
    heard_since: Instant,
}

/// The actor's state.
pub struct MembershipState {
    args: MembershipArgs,
    started: Instant,
    last_tick: Instant,
    peers: BTreeMap<String, Peer>,
    /// The members of the installed ring (`None` before the first install).
    ring_members: Option<Vec<String>>,
    /// The last verdict, so a change is logged once.
    verdict: Verdict,
    /// Whether "no member heard yet" was logged.
    waiting_logged: bool,
    /// When this node last woke from a pause (see [`MembershipState::tick`]).
    woke: Option<Instant>,
    /// Peers whose session closed while they were up, until one is made again.
    relinking: BTreeSet<String>,
    /// The members the last judgement left out (see [`crate::quorum::left_out`]).
    left_out: BTreeSet<String>,
    /// Members whose port refused this node, with their beats in the store, until heard
    /// again (see [`crate::witness`]).
    watched: BTreeMap<String, Watched>,
    /// Beat reads in flight.
    reading: BTreeSet<String>,
    /// Whether this node holds (see [`MembershipState::recompute`]).
    holding: bool,
}

/// A member whose port refused this node.
struct Watched {
    /// The run that refused (its incarnation), if known: a beat from another run says it
    /// is gone.
    run: Option<u64>,
    /// When it refused: reads sent before are of an earlier watch.
    since: Instant,
    beats: Beats,
    /// Dropped at once, this node serving without it ([`Quorum::lose`]): its beat only
    /// says when the membership it left stops being joint.
    lost: bool,
    /// When it was forgotten on the store's word that its beat stopped (it was counted
    /// until then).
    buried: Option<Instant>,
    /// Its beat grew since it refused this node: it lives.
    beats_on: bool,
    /// Buried, and its beat grew again: it lived after all, and counts again where that
    /// would make this node stand down (see `recompute`).
    revived: bool,
}

impl Watched {
    /// Run `run` (when known) refused this node just now.
    fn new(run: Option<u64>) -> Watched {
        Watched {
            run,
            since: Instant::now(),
            beats: Beats::default(),
            lost: false,
            buried: None,
            beats_on: false,
            revived: false,
        }
    }
}

/// The membership actor.
#[derive(Debug, Default)]
pub struct Membership;

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MembershipArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(args.heartbeat, || MembershipMsg::Tick);
        let mut args = args;
        args.me.seq = args.seq.load(Ordering::Relaxed);
        let mut state = MembershipState {
            started: Instant::now(),
            last_tick: Instant::now(),
            peers: BTreeMap::new(),
            ring_members: None,
            verdict: Verdict::Serve,
            waiting_logged: false,
            woke: None,
            relinking: BTreeSet::new(),
            left_out: BTreeSet::new(),
            watched: BTreeMap::new(),
            reading: BTreeSet::new(),
            holding: false,
            args,
        };
        state.recompute();
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MembershipMsg::Tick => {
                state.tick().await;
                state.witness(&myself);
            }
            MembershipMsg::Heartbeat(info) => {
                if info.node == state.args.me.node {
                    tracing::error!(node = %info.node, addr = %info.addr, "another node uses this node's name");
                    return Ok(());
                }
                if let Some(p) = state.peers.get(&info.node)
                    && p.info.incarnation == info.incarnation
                    && p.info.seq >= info.seq
                {
                    tracing::debug!(node = %info.node, seq = info.seq, "a stale heartbeat; dropped");
                    return Ok(());
                }
                state.args.contacts.learn(&info.node, &info.addr);
                // A member whose port refused this node, heard from a new run: the run
                // that refused is gone for sure (a survivor of two counting it would
                // otherwise stand down as it comes back, and it would stay `joining`,
                // hearing no member that serves).
                let restarted = state
                    .watched
                    .get(&info.node)
                    .and_then(|w| w.run)
                    .is_some_and(|run| run != info.incarnation);
                if restarted {
                    state.forget(
                        &info.node,
                        "a new run of it is heard: the one that refused connections is gone",
                    );
                }
                // Heard: what the store says of it no longer matters.
                state.watched.remove(&info.node);
                let before = state.peers.get(&info.node).map(|p| p.info.status);
                // Back from `down`: named here, as `info` moves into the peer table.
                let back = (before == Some(Status::Down) && info.status != Status::Down)
                    .then(|| info.node.clone());
                if before != Some(info.status) {
                    tracing::info!(node = %info.node, status = info.status.as_str(), "member status");
                }
                if info.status == Status::Leaving {
                    state.quorum().forget(&info.node, Instant::now());
                }
                let now = Instant::now();
                let heard_since = match state.peers.get(&info.node) {
                    Some(p) if p.info.status != Status::Down => p.heard_since,
                    Some(_) => now,
                    // First contact: nothing to settle.
                    None => now.checked_sub(state.stable_after()).unwrap_or(now),
                };
                state.peers.insert(
                    info.node.clone(),
                    Peer {
                        info,
                        last_seen: now,
                        heard_since,
                    },
                );
                state.recompute();
                if let Some(node) = back {
                    // Back from `down`: its publishers may have dropped this node (a
                    // session lost meanwhile was made again while it was down, which
                    // repairs nothing), and when it rejoins without a ring move
                    // (`Quorum::counts_at_once`) no new epoch would repair them either.
                    tracing::info!(%node, "member heard again; repairing the streams it publishes");
                    state.args.sharding.relinked(&node);
                }
            }
            MembershipMsg::SessionClosed(node) => match state.peers.get(&node) {
                // It said it would go: this is its exit.
                Some(p) if p.info.status == Status::Leaving => state.forget(&node, "left"),
                // A killed process's host closes its sessions, but so can the network (a
                // reset, a middlebox): the dialer redials at once, and only a port that
                // refuses the connection marks the peer down (`PortClosed`). Otherwise
                // its heartbeats judge it, as for silence.
                Some(p) if p.info.status != Status::Down => {
                    tracing::warn!(%node, "member session closed; redialing it");
                    state.args.contacts.wake();
                    state.relinking.insert(node);
                }
                _ => {}
            },
            MembershipMsg::SessionOpened(node) => {
                // Back without having been down: what crossed the lost session is gone,
                // and its publishers dropped this node. (A member back from down is
                // repaired when it is heard again.)
                if state.relinking.remove(&node)
                    && state
                        .peers
                        .get(&node)
                        .is_some_and(|p| p.info.status != Status::Down)
                {
                    tracing::info!(%node, "member session made again; repairing the streams it publishes");
                    state.args.sharding.relinked(&node);
                }
            }
            // Its port refuses connections: its process is most likely gone (a cut network
            // drops or times out the dial instead; a rejecting firewall refuses it too).
            MembershipMsg::PortClosed(node) => state.refused(&node),
            MembershipMsg::Beat {
                node,
                beat,
                sent,
                answered,
            } => state.witnessed(node, beat, sent, answered),
            MembershipMsg::Down(node) if node == state.args.me.node => {
                tracing::warn!("an operator downed this node; ignored: a node cannot down itself");
            }
            // Already `down` (silent) or not, it stops counting.
            MembershipMsg::Down(node) => state.forget(&node, "downed by an operator"),
            MembershipMsg::Contacts(contacts) => {
                for c in contacts.iter().filter(|c| c.node != state.args.me.node) {
                    state.args.contacts.learn(&c.node, &c.addr);
                }
            }
            MembershipMsg::SetStatus(status) => {
                state.args.me.status = status;
                if status == Status::Leaving {
                    let me = state.args.me.node.clone();
                    state.quorum().forget(&me, Instant::now());
                }
                state.recompute();
                state.announce();
            }
            MembershipMsg::View(reply) => {
                let _ = reply.send(state.view());
            }
        }
        Ok(())
    }
}

impl MembershipState {
    fn quorum(&self) -> std::sync::MutexGuard<'_, Quorum> {
        self.args.quorum.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `node` `down` and stops counting it towards a majority, for `why`. What the
    /// store said of it no longer matters.
    fn forget(&mut self, node: &str, why: &str) {
        tracing::warn!(%node, why, "member gone; marking it down");
        self.watched.remove(node);
        if let Some(peer) = self.peers.get_mut(node) {
            peer.info.status = Status::Down;
        }
        self.quorum().forget(node, Instant::now());
        self.recompute();
    }

    fn stable_after(&self) -> Duration {
        self.quorum().stable_after()
    }

    /// `node`'s port refused this node: it is `down` at once. If this node serves without
    /// it, it leaves the agreed membership at once too ([`Quorum::lose`]: the one before
    /// stays joint); if this node would stand down without it, it counts until the store
    /// says it is gone. Either way its beat is read from now on (see [`crate::witness`]).
    fn refused(&mut self, node: &str) {
        // Agreed on but not in the peer table: this actor was restarted since. It is
        // watched, or nothing would ever forget it.
        let unknown_agreed =
            !self.watched.contains_key(node) && self.quorum().agreed().contains(node);
        let run = match self.peers.get_mut(node) {
            Some(peer) if peer.info.status != Status::Down => {
                peer.info.status = Status::Down;
                Some(peer.info.incarnation)
            }
            Some(_) => return,
            None if unknown_agreed => None,
            None => return,
        };
        // Watched before the judgement, which may hold on it.
        self.watched.insert(node.to_string(), Watched::new(run));
        self.recompute();
        if self.verdict == Verdict::Serve {
            tracing::warn!(%node, "member's cluster port refuses connections; marking it down and dropping it");
            self.quorum().lose(node, Instant::now());
            if let Some(watched) = self.watched.get_mut(node) {
                watched.lost = true;
            }
            self.recompute();
        } else {
            tracing::warn!(
                %node,
                "member's cluster port refuses connections; marking it down: this node would stand down without it, so it counts until its beat in the store stops"
            );
        }
    }

    /// Reads the beats of the members watched, one read of each in flight at a time. A
    /// member forgotten on the store's word is read on for [`BURIED_WATCH`]: a beat that
    /// lives again says it lived, behind a cut (see `witnessed`).
    fn witness(&mut self, myself: &ActorRef<MembershipMsg>) {
        self.watched
            .retain(|_, w| w.revived || w.buried.is_none_or(|at| at.elapsed() < BURIED_WATCH));
        let timeout = self.args.timeout;
        for node in self.watched.keys() {
            if !self.reading.insert(node.clone()) {
                continue;
            }
            let (witness, node, myself) = (
                self.args.store.witness.clone(),
                node.clone(),
                myself.clone(),
            );
            tokio::spawn(async move {
                let sent = Instant::now();
                let beat = match tokio::time::timeout(timeout, witness.last_beat(&node)).await {
                    Ok(beat) => beat,
                    Err(_) => Err("timed out".to_string()),
                };
                let answered = Instant::now();
                let _ = myself.cast(MembershipMsg::Beat {
                    node,
                    beat,
                    sent,
                    answered,
                });
            });
        }
    }

    /// A read of `node`'s beat came back. A beat from another run than the one that
    /// refused says that one is gone: it is forgotten. A beat that stood still gets it
    /// forgotten too, unless another member this node does not hear is known to live (a
    /// cut, then, and a stalled beat behind it proves less than it seems). One forgotten
    /// that way whose beat lives again is *revived*: this node stands down if it would
    /// not serve counting it (see `recompute`), until it hears it or its beat stops again.
    fn witnessed(
        &mut self,
        node: String,
        beat: Result<Option<Beat>, String>,
        sent: Instant,
        answered: Instant,
    ) {
        self.reading.remove(&node);
        let beat = match beat {
            Ok(beat) => beat,
            Err(e) => {
                tracing::debug!(%node, error = %e, "reading a member's beat failed");
                return;
            }
        };
        // A beat standing still this long is the store's word of a death.
        let dead_after = self.args.timeout;
        // Only members that count in this node's judgement: one lost whose membership the
        // others have all let go says nothing of this node's side.
        let live_elsewhere = {
            let quorum = self.quorum();
            let counted = |n: &str| {
                quorum.agreed().contains(n) || quorum.joint().iter().any(|j| j.contains(n))
            };
            // (A revived member was forgotten: it is in none of them, and counts.)
            self.watched.iter().any(|(n, w)| {
                *n != node && (w.revived || (w.buried.is_none() && w.beats_on && counted(n)))
            })
        };
        let Some(watched) = self.watched.get_mut(&node) else {
            return;
        };
        if sent < watched.since {
            return;
        }
        if let (Some(run), Some(beat)) = (watched.run, beat)
            && beat.run != run
        {
            if watched.buried.is_none() {
                self.forget(
                    &node,
                    "a new run of it beats in the store: the one that refused connections is gone",
                );
            } else if self.watched.remove(&node).is_some_and(|w| w.revived) {
                // Buried already; the new run is no sign of the old one.
                self.recompute();
            }
            return;
        }
        let sign = watched
            .beats
            .read(beat.map(|b| b.epoch), sent, answered, dead_after);
        match (watched.buried.is_some(), sign) {
            (false, Sign::Still) if live_elsewhere => {
                tracing::debug!(%node, "its beat stood still, but a member behind the same cut lives: not forgotten");
            }
            (false, Sign::Still) => {
                let Some(mut watched) = self.watched.remove(&node) else {
                    return;
                };
                self.forget(
                    &node,
                    "its cluster port refused connections and its beat in the store stopped",
                );
                watched.buried = Some(Instant::now());
                self.watched.insert(node, watched);
            }
            (false, Sign::Beating) if !watched.beats_on => {
                watched.beats_on = true;
                tracing::warn!(
                    %node,
                    "a member whose port refused this node beats in the store: a cut refuses the connections"
                );
                self.recompute();
            }
            (true, Sign::Beating) if !watched.revived => {
                watched.revived = true;
                tracing::error!(
                    %node,
                    "a member forgotten as gone beats in the store again: it lives behind a cut"
                );
                self.recompute();
            }
            (true, Sign::Still) if watched.revived => {
                watched.revived = false;
                tracing::warn!(%node, "the member's beat in the store stopped again");
                self.recompute();
            }
            _ => {}
        }
    }

    async fn tick(&mut self) {
        let timeout = self.args.timeout;
        // A tick that comes far too late means this node was frozen (SIGSTOP, a long
        // stall): its peers' silence is its own, so they are judged from the next tick on,
        // once their queued heartbeats have been read. Its peers have likely declared it
        // down and taken its entities over meanwhile, so it owns nothing until its view of
        // the cluster has settled (see `recompute`). Judged first, before anything this
        // tick awaits (the regions' stats wait behind the backlog the pause left), and
        // applied at once.
        let frozen = self.last_tick.elapsed();
        if frozen > timeout {
            tracing::warn!(
                paused_ms = frozen.as_millis() as u64,
                settle_ms = self.stable_after().as_millis() as u64,
                "this node was paused: it owns nothing until its view of the cluster settles"
            );
            self.woke = Some(Instant::now());
            for peer in self.peers.values_mut() {
                peer.last_seen = Instant::now();
            }
            self.recompute();
        }
        if self.args.me.status == Status::Joining
            && self.started.elapsed() >= self.args.join_grace
            && self.may_turn_up()
        {
            self.args.me.status = Status::Up;
            tracing::info!(node = %self.args.me.node, "this node is up");
        }
        let me = &mut self.args.me;
        me.entities = self
            .args
            .sharding
            .region_stats()
            .await
            .iter()
            .map(|(_, s)| s.active as u64)
            .sum();
        // From here: a slow answer above is this node's load, not a pause.
        self.last_tick = Instant::now();
        for (node, peer) in self.peers.iter_mut() {
            if peer.info.status != Status::Down && peer.last_seen.elapsed() > timeout {
                tracing::warn!(%node, silent_ms = peer.last_seen.elapsed().as_millis() as u64, "member missed its heartbeats; marking it down");
                peer.info.status = Status::Down;
            }
        }
        self.recompute();
        self.announce();
    }

    /// Whether a joining node may turn `up`: when it hears a serving `up` member (a cluster
    /// to join), or, when it hears no `up` member at all, if it is the lowest-named of the
    /// joining nodes it hears (a cold start; the others follow it). A node that hears no one
    /// stays `joining`, and so does one that hears only members standing down: restarted on
    /// the far side of a partition, it must not form a cluster of its own (it has no agreed
    /// membership yet to judge a majority by).
    fn may_turn_up(&mut self) -> bool {
        let up: Vec<&Peer> = self
            .peers
            .values()
            .filter(|p| p.info.status == Status::Up)
            .collect();
        if up.iter().any(|p| p.info.serving) {
            return true;
        }
        if !up.is_empty() {
            if !self.waiting_logged {
                self.waiting_logged = true;
                tracing::warn!(
                    "every member heard stands down: this node stays joining until it hears one that serves"
                );
            }
            return false;
        }
        let me = &self.args.me.node;
        let mut heard_any = false;
        let lowest = self
            .peers
            .values()
            .filter(|p| p.info.status == Status::Joining)
            .all(|p| {
                heard_any = true;
                me < &p.info.node
            });
        if !heard_any && !self.waiting_logged {
            self.waiting_logged = true;
            tracing::warn!("no member heard yet: this node stays joining until it hears one");
        }
        heard_any && lowest
    }

    /// Sends this node's info (which says where it listens), and where the other members
    /// it hears listen, to every peer router.
    fn announce(&mut self) {
        self.args.me.seq = self.args.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let me = &self.args.me;
        let contacts = self
            .peers
            .values()
            .filter(|p| p.info.status != Status::Down && !p.info.addr.is_empty())
            .map(|p| Contact {
                node: p.info.node.clone(),
                addr: p.info.addr.clone(),
            })
            .collect();
        let cast = wire::msg::Cast::Batch(vec![
            wire::msg::Cast::Heartbeat(me.clone()),
            wire::msg::Cast::Contacts(contacts),
        ]);
        cast_to_peers(&cast);
    }

    /// Recomputes the ring members; on a change, installs the new ring and logs it once.
    /// When what this node announces (whom it hears, whether it serves) changes, it
    /// announces it at once: its peers drop a member standing aside on its word or on the
    /// word of the members that hear it, and the sooner they all hear it the closer their
    /// rings change together.
    fn recompute(&mut self) {
        for status in [Status::Joining, Status::Up, Status::Leaving, Status::Down] {
            let n = self
                .peers
                .values()
                .filter(|p| p.info.status == status)
                .count()
                + usize::from(self.args.me.status == status);
            crate::metrics::MEMBERS
                .with_label_values(&[status.as_str()])
                .set(n as i64);
        }
        let announced = (self.args.me.serving, self.args.me.hears.clone());
        let stable_after = self.stable_after();
        let serving_before = self.args.me.serving;
        let me_up = self.args.me.status == Status::Up;
        let me = self.args.me.node.clone();
        // Who counts (heard long enough), and who is heard at all now.
        let mut heard: BTreeSet<String> = {
            let quorum = self.quorum();
            self.peers
                .values()
                .filter(|p| {
                    p.info.status == Status::Up
                        && (p.heard_since.elapsed() >= stable_after
                            || quorum.counts_at_once(&p.info.node, serving_before))
                })
                .map(|p| p.info.node.clone())
                .collect()
        };
        let mut hearing: BTreeSet<String> = self
            .peers
            .values()
            .filter(|p| p.info.status == Status::Up)
            .map(|p| p.info.node.clone())
            .collect();
        if me_up {
            heard.insert(me.clone());
            hearing.insert(me.clone());
        }
        // What the members heard now say they hear, and what they last agreed on.
        let (reports, adopted): (Lists, Lists) = self
            .peers
            .values()
            .filter(|p| hearing.contains(&p.info.node))
            .map(|p| {
                let node = p.info.node.as_str();
                let hears = p.info.hears.iter().map(|h| h.node.as_str()).collect();
                let agreed = p.info.agreed.iter().map(String::as_str).collect();
                ((node, hears), (node, agreed))
            })
            .unzip();
        let judgement =
            self.quorum()
                .judge_views(&me, &heard, &hearing, &reports, &adopted, Instant::now());
        // A member that refused this node a moment ago has most likely died, but may sit
        // behind a rejecting firewall. Until the store says which, a node that served, and
        // would serve if those members were gone, holds: it keeps its ring and what it
        // owns, and takes nothing new (a survivor of two does not stop its own entities for
        // the lowest-named member's death). Once one of them beats, it stands down.
        // (Not for ever: reads that keep failing, the store otherwise answering, must not
        // hold a ring with a dead member's share in it.)
        // (Listed only when it may hold: this runs on every heartbeat received.)
        let may_hold = judgement.verdict == Verdict::StandDown && serving_before;
        let hold_limit = self.args.timeout * HOLD_TIMEOUTS;
        let unproven: Vec<&String> = self
            .watched
            .iter()
            .filter(|(_, w)| {
                may_hold && w.buried.is_none() && !w.beats_on && w.since.elapsed() < hold_limit
            })
            .map(|(node, _)| node)
            .collect();
        let holding = may_hold && !unproven.is_empty() && self.ring_members.is_some() && {
            let now = Instant::now();
            let mut without = self.quorum().clone();
            for node in &unproven {
                without.forget(node, now);
            }
            let verdict = without.judge_views(&me, &heard, &hearing, &reports, &adopted, now);
            verdict.verdict == Verdict::Serve
        };
        if holding != self.holding {
            self.holding = holding;
            if holding {
                tracing::warn!(
                    refused = ?unproven,
                    "members refused this node and it would stand down without them: it holds its ring and takes nothing new until the store says whether they are gone"
                );
            } else if judgement.verdict == Verdict::StandDown && self.verdict == Verdict::StandDown
            {
                tracing::error!(
                    heard = ?heard,
                    "a member that refused this node lives: this node stands down and owns nothing until it hears a majority again"
                );
            }
        }
        let agreed = {
            let quorum = self.quorum();
            // Cloned only when it changed: this runs on every heartbeat received.
            (!quorum.agreed().iter().eq(&self.args.me.agreed))
                .then(|| quorum.agreed().iter().cloned().collect())
        };
        let agreed_changed = agreed.is_some();
        if let Some(agreed) = agreed {
            self.args.me.agreed = agreed;
        }
        let store_ok = self.args.store.ok.load(Ordering::Relaxed);
        if judgement.verdict != self.verdict {
            let (agreed, joint) = {
                let quorum = self.quorum();
                (quorum.agreed().clone(), quorum.joint().to_vec())
            };
            let left_out = &judgement.left_out;
            match (self.verdict, judgement.verdict) {
                // Said when the hold ends.
                (_, Verdict::StandDown) if holding => {}
                (_, Verdict::StandDown) => tracing::error!(
                    heard = ?heard, agreed = ?agreed, joint = ?joint,
                    "cut off from the majority of the cluster: this node stands down and owns nothing until it hears a majority again"
                ),
                (_, Verdict::StandAside) => tracing::error!(
                    hearing = ?hearing, ?left_out,
                    "this node does not hear members that members it hears do hear: it stands aside and owns nothing, so that the members left all hear each other, until the cut heals"
                ),
                (Verdict::StandAside, Verdict::Serve) => tracing::warn!(
                    hearing = ?hearing,
                    "this node hears every member the others hear again: it serves"
                ),
                (_, Verdict::Serve) => {
                    tracing::warn!(heard = ?heard, "a majority of the cluster is heard again: this node serves")
                }
            }
            self.verdict = judgement.verdict;
        }
        if judgement.left_out != self.left_out {
            let left_out = &judgement.left_out;
            if left_out.is_empty() {
                tracing::info!("every member hears every other again");
            } else {
                tracing::warn!(
                    ?left_out,
                    "members that do not hear each other: those picked stand aside"
                );
            }
            self.left_out = judgement.left_out.clone();
            crate::metrics::LEFT_OUT.set(self.left_out.len() as i64);
        }
        // Just woken from a pause: its entities may run elsewhere already, and what it knows
        // of its peers is as old as the pause.
        let settling = self.woke.is_some_and(|woke| woke.elapsed() < stable_after);
        // A member forgotten on the store's word that lives after all counts again here.
        let revived: BTreeSet<String> = self
            .watched
            .iter()
            .filter(|(_, w)| w.revived)
            .map(|(node, _)| node.clone())
            .collect();
        let revived = !revived.is_empty() && !self.quorum().serves_counting(&heard, &revived);
        let quorate = (judgement.verdict == Verdict::Serve || holding) && !settling && !revived;
        let serving = quorate && store_ok;
        if self.args.me.serving != serving {
            self.args.me.serving = serving;
            if !store_ok {
                tracing::error!(
                    "the store is unreachable: this node stands down and routes to the others"
                );
            } else if serving {
                tracing::warn!("this node serves again");
            }
        }
        self.args.me.hears = hearing
            .iter()
            .map(|node| Heard {
                node: node.clone(),
                serving: if *node == me {
                    serving
                } else {
                    self.peers.get(node).is_some_and(|p| p.info.serving)
                },
            })
            .collect();
        crate::metrics::STOOD_DOWN.set(i64::from(!serving));
        self.args.sharding.set_cut_off(!quorate);
        self.args.up.store(me_up && serving, Ordering::Relaxed);
        // Members that stand down own nothing: the ring is built over the others. A member
        // counts as serving unless it said it does not (while heard, or when no member heard
        // hears it: a silent member's last word is as old as its silence) or a member heard
        // now that hears it says so: after a cut heals, heartbeats queued on its link arrive
        // in a burst, the stale ones saying it serves, while those who heard it all along
        // know better.
        // What the members heard now relay of each member: whether all of them say it
        // serves (one pass over their lists, not one per ring member).
        let mut relayed: HashMap<&str, bool> = HashMap::new();
        for p in self.peers.values() {
            if !hearing.contains(&p.info.node) {
                continue;
            }
            for h in p.info.hears.iter().filter(|h| h.node != p.info.node) {
                *relayed.entry(h.node.as_str()).or_insert(true) &= h.serving;
            }
        }
        let mut up = match (settling, holding) {
            (true, _) => Vec::new(),
            (false, true) => self.ring_members.clone().unwrap_or_default(),
            (false, false) => judgement.ring,
        };
        up.retain(|n| {
            if *n == me {
                return serving;
            }
            let relays = relayed.get(n.as_str()).copied();
            // What a member no longer heard said last is as old as the silence: those who
            // still hear it know better.
            let says = (hearing.contains(n) || relays.is_none())
                && self.peers.get(n).is_some_and(|p| !p.info.serving);
            !says && relays.unwrap_or(true)
        });
        if agreed_changed
            || (self.args.me.serving, &self.args.me.hears) != (announced.0, &announced.1)
        {
            self.announce();
        }
        if self.ring_members.as_ref() == Some(&up) {
            return;
        }
        self.ring_members = Some(up.clone());
        crate::metrics::REBALANCES.inc();
        let ring = self.args.sharding.set_ring_members(&up);
        let shares: Vec<String> = ring
            .shares()
            .iter()
            .map(|(n, s)| format!("{n}={:.1}%", s * 100.0))
            .collect();
        tracing::info!(members = ?up, ring = %shares.join(" "), "membership changed; ring rebuilt");
    }

    fn view(&self) -> ClusterView {
        let me = &self.args.me;
        let mut members = vec![MemberView {
            node: me.node.clone(),
            addr: me.addr.clone(),
            gateway: me.gateway.clone(),
            status: me.status,
            entities: me.entities,
            serving: me.serving,
            hears: me.hears.iter().map(|h| h.node.clone()).collect(),
            last_heartbeat_ms: 0,
        }];
        members.extend(self.peers.values().map(|p| MemberView {
            node: p.info.node.clone(),
            addr: p.info.addr.clone(),
            gateway: p.info.gateway.clone(),
            status: p.info.status,
            entities: p.info.entities,
            serving: p.info.serving,
            hears: p.info.hears.iter().map(|h| h.node.clone()).collect(),
            last_heartbeat_ms: p.last_seen.elapsed().as_millis() as u64,
        }));
        members.sort_by(|a, b| a.node.cmp(&b.node));
        // One lock: a guard taken in the literal would live to its end.
        let (agreed, joint) = {
            let quorum = self.quorum();
            let joint = quorum.joint().iter().map(|m| m.iter().cloned().collect());
            (quorum.agreed().iter().cloned().collect(), joint.collect())
        };
        ClusterView {
            node: me.node.clone(),
            members,
            serving: me.serving,
            agreed,
            joint,
            left_out: self.left_out.iter().cloned().collect(),
        }
    }
}

/// Turns node-session events into membership messages, and says plainly when a peer is
/// refused (a session that closes before it authenticated: a wrong cookie).
#[derive(Default)]
pub struct NodeEvents {
    /// Authenticated sessions, with the peer node each one is to. Two nodes that dial each
    /// other at once (a restart) can hold two sessions for a moment: the peer is gone only
    /// when its last one closes.
    authenticated: Mutex<HashMap<ractor::ActorId, Option<String>>>,
}

/// The node a session is with (`name@host` on the wire), once it authenticated.
pub(crate) fn peer_node(ses: &NodeServerSessionInformation) -> Option<String> {
    let name = ses.peer_name.as_ref()?.name.clone();
    Some(name.split('@').next().unwrap_or(&name).to_string())
}

impl NodeEventSubscription for NodeEvents {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        tracing::debug!(peer = %ses.peer_addr, "cluster session opened");
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        self.authenticated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ses.actor.get_id(), peer_node(&ses));
        tracing::info!(peer = %ses.peer_addr, node = ?peer_node(&ses), "cluster peer authenticated");
        if let (Some(node), Some(m)) = (peer_node(&ses), membership()) {
            let _ = m.cast(MembershipMsg::SessionOpened(node));
        }
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let mut sessions = self.authenticated.lock().unwrap_or_else(|p| p.into_inner());
        let Some(peer) = sessions.remove(&ses.actor.get_id()) else {
            drop(sessions);
            // A misconfigured peer is redialled every second or so: said once a minute.
            let say = |why: &str| {
                ses.peer_addr
                    .parse::<std::net::SocketAddr>()
                    .map_or(true, |a| {
                        crate::said::first_this_minute(format!("{why} {}", a.ip()))
                    })
            };
            if ses.is_server {
                crate::metrics::PEERS_REFUSED
                    .with_label_values(&["cookie"])
                    .inc();
                if say("cookie") {
                    tracing::warn!(peer = %ses.peer_addr, "cluster peer refused: authentication failed (wrong cookie?); said once a minute per address, counted in bourse_cluster_peers_refused_total");
                }
            } else if say("refused us") {
                // Closed by the peer before authenticating (a duplicate session closes
                // after it authenticated, so is not this).
                tracing::warn!(peer = %ses.peer_addr, "the cluster peer refused this node: a wrong cookie, or (with TLS) a certificate it does not accept; said once a minute per address");
            }
            return;
        };
        let Some(node) = peer.or_else(|| peer_node(&ses)) else {
            return;
        };
        if sessions
            .values()
            .any(|p| p.as_deref() == Some(node.as_str()))
        {
            tracing::info!(%node, "a duplicate session to the peer closed; another one stays");
            return;
        }
        drop(sessions);
        if let Some(m) = membership() {
            let _ = m.cast(MembershipMsg::SessionClosed(node));
        }
    }
}
