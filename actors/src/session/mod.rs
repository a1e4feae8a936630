//! The `session` entity (key: the user id): where a user is connected, and the publisher of
//! the user's private channels, `orders`, `alerts` and `portfolio` (inside the cluster
//! `orders@<user>` and so on).
//!
//! Producers (the user's account, the user's alert rules) hand every private event to the
//! session through a [`Courier`] (asked until answered, so a dropped cluster link loses
//! none, and numbered, so a retry publishes none twice); the session numbers it on its channel and sends it once to each node where a
//! connection listens, and that node's hub gives it to each such connection. What must
//! survive the user being offline is in the inbox: producers store those entries
//! (`Write::Notify`) themselves, before the event exists anywhere else, so a session that
//! is down or moving loses no notification.
//!
//! Live connections are `(node, connection)` pairs. Gateways attach a connection when it
//! logs in and detach it when it closes. They stay correct when:
//! - a node dies: its pairs go when the ring drops the node (checked on the clock), and a
//!   delivery to it finds no subscribers;
//! - the session moves or restarts: its new epoch makes every hub ask its connections to
//!   re-subscribe, and a gateway re-attaches a connection with each re-subscription of
//!   `session@<user>`, the channel every logged-in connection holds for this purpose.

pub mod courier;

pub use courier::Courier;
use courier::Delivered;

use crate::clock::now_ms;
use bourse_cluster::{
    Entity, EntityContext, EntityError, Sharding, StreamGrant, StreamLog, StreamRequest,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// The entity kind name.
pub const KIND: &str = "session";
/// How often a session with a `portfolio` subscriber tells the account again (well within
/// the account's `WATCH_FOR`).
const WATCH_AGAIN: Duration = Duration::from_secs(20);

/// A user's private channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Private {
    /// `orders`: the user's order updates.
    Orders,
    /// `alerts`: the user's fired alerts.
    Alerts,
    /// `portfolio`: the user's portfolio, revalued as fills and prices move it.
    Portfolio,
    /// `session`: carries no events; holding it tells a gateway when to re-attach.
    Session,
}

impl Private {
    /// The ones a client subscribes to by name.
    pub const SUBSCRIBABLE: [Private; 3] = [Private::Orders, Private::Alerts, Private::Portfolio];

    /// The client-facing name.
    pub fn name(self) -> &'static str {
        match self {
            Private::Orders => "orders",
            Private::Alerts => "alerts",
            Private::Portfolio => "portfolio",
            Private::Session => "session",
        }
    }

    /// The channel inside the cluster: `orders@42`.
    pub fn channel(self, user: u64) -> String {
        format!("{}@{user}", self.name())
    }

    /// The private channel a cluster-internal name belongs to, with its user.
    pub fn parse(channel: &str) -> Option<(Private, u64)> {
        let (name, user) = channel.split_once('@')?;
        let private = Private::SUBSCRIBABLE
            .into_iter()
            .chain([Private::Session])
            .find(|p| p.name() == name)?;
        Some((private, user.parse().ok()?))
    }
}

/// What a session accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SessionMsg {
    /// A logged-in connection of the user is open on `node`.
    Attach { node: String, conn: u64 },
    /// It closed.
    Detach { node: String, conn: u64 },
    /// Events for the user's connections (pre-encoded `data`) from a producer's
    /// [`Courier`], numbered by it: those already published are dropped.
    Deliver {
        origin: String,
        parcels: Vec<courier::Parcel>,
    },
}

/// What a session answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SessionReply {
    Done,
}

/// What every session on a node shares.
pub struct SessionDeps {
    /// Events kept per channel for resume.
    pub replay_events: usize,
}

/// The entity state.
pub struct Session {
    user: u64,
    key: String,
    sharding: Sharding,
    log: StreamLog,
    connections: BTreeMap<String, BTreeSet<u64>>,
    delivered: Delivered,
    /// When the account was last told someone watches `portfolio`.
    watch_told: Option<std::time::Instant>,
}

impl Entity for Session {
    const KIND: &'static str = KIND;
    // Checks on the clock whether nodes holding connections are still members.
    const TICK_EVERY: Option<Duration> = Some(Duration::from_secs(2));

    type Msg = SessionMsg;
    type Reply = SessionReply;
    type Deps = SessionDeps;

    async fn activate(ctx: &EntityContext, deps: &Arc<SessionDeps>) -> Result<Self, EntityError> {
        let user: u64 = ctx
            .key
            .parse()
            .map_err(|_| EntityError::new(format!("session key '{}' is not a user id", ctx.key)))?;
        let epoch = bourse_cluster::stream::new_epoch(now_ms());
        ctx.sharding.publisher_activated(KIND, &ctx.key, &epoch);
        Ok(Session {
            user,
            key: ctx.key.clone(),
            sharding: ctx.sharding.clone(),
            log: StreamLog::new(epoch, deps.replay_events),
            connections: BTreeMap::new(),
            delivered: Delivered::default(),
            watch_told: None,
        })
    }

    async fn handle(&mut self, msg: SessionMsg, _ctx: &EntityContext) -> SessionReply {
        match msg {
            SessionMsg::Attach { node, conn } => {
                self.connections.entry(node).or_default().insert(conn);
                SessionReply::Done
            }
            SessionMsg::Detach { node, conn } => {
                if let Some(conns) = self.connections.get_mut(&node) {
                    conns.remove(&conn);
                    if conns.is_empty() {
                        self.connections.remove(&node);
                    }
                }
                SessionReply::Done
            }
            SessionMsg::Deliver { origin, parcels } => {
                for p in self.delivered.fresh(&origin, parcels) {
                    self.publish(p.channel, p.ts, p.data);
                }
                SessionReply::Done
            }
        }
    }

    async fn on_tick(&mut self, _ctx: &EntityContext) {
        let sharding = &self.sharding;
        self.connections
            .retain(|node, _| sharding.is_member(node) != Some(false));
        if self
            .log
            .has_subscribers(&Private::Portfolio.channel(self.user))
            && self.watch_told.is_none_or(|t| t.elapsed() >= WATCH_AGAIN)
        {
            self.tell_watched();
        }
    }

    fn subscribe(
        &mut self,
        req: StreamRequest,
        _ctx: &EntityContext,
    ) -> Result<StreamGrant, String> {
        match Private::parse(&req.channel) {
            Some((private, user)) if user == self.user => {
                if private == Private::Portfolio {
                    self.tell_watched();
                }
                Ok(self.log.subscribe(&req, now_ms(), None, false))
            }
            _ => Err(format!(
                "channel '{}' is not session {}'s",
                req.channel, self.key
            )),
        }
    }

    fn unsubscribe(&mut self, channel: &str, node: &str) {
        self.log.unsubscribe(channel, node);
    }

    fn summary(&self) -> serde_json::Value {
        let pairs: Vec<serde_json::Value> = self
            .pairs()
            .into_iter()
            .map(|(node, conn)| serde_json::json!({"node": node, "conn": conn}))
            .collect();
        serde_json::json!({"epoch": self.log.epoch(), "connections": pairs})
    }
}

impl Session {
    /// Tells the user's account that `portfolio` has a subscriber, so it keeps publishing.
    fn tell_watched(&mut self) {
        self.watch_told = Some(std::time::Instant::now());
        let key = self.user.to_string();
        if let Err(e) = self
            .sharding
            .send::<crate::account::Account>(&key, crate::account::AccountMsg::Watch)
        {
            tracing::debug!(session = %self.key, error = %e, "the account did not take a watch");
        }
    }

    fn pairs(&self) -> Vec<(String, u64)> {
        self.connections
            .iter()
            .flat_map(|(node, conns)| conns.iter().map(move |c| (node.clone(), *c)))
            .collect()
    }

    fn publish(&mut self, private: Private, ts: i64, data: String) {
        let channel = private.channel(self.user);
        // One message per node with a listening connection; its hub fans out.
        self.sharding
            .publish(&mut self.log, KIND, &self.key, &channel, ts, data, false);
    }
}
