//! Chat rooms: the `room` entity (key: the room; every symbol has one, named like it) and
//! what a message may say ([`text`]).
//!
//! A message is stored before it is fanned out on `chat:R`, so history after any crash holds
//! every message anyone saw or was acknowledged. The room runs once in the cluster (a lease,
//! fenced writes), which makes its message ids simple: time-ordered, increasing within the
//! room, and unique across the cluster (`ms << 22 | room index << 12 | sequence`). Presence:
//! the gateway reports each logged-in subscriber's join and leave; the room keeps the member
//! list and announces a user's first join and last leave.

pub mod text;

use crate::clock::now_ms;
use crate::trading::Refusal;
use bourse_cluster::{
    Entity, EntityContext, EntityError, Sharding, StreamGrant, StreamLog, StreamRequest,
};
use bourse_config::Markets;
use bourse_storage::{ChatMessage, Lease, MarketStore, StoreError, Write};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The entity kind name.
pub const KIND: &str = "room";
/// Most messages one history page returns.
pub const MAX_PAGE: usize = 200;

/// What a room accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RoomMsg {
    /// Post a message (the text is checked again here).
    Send {
        user_id: u64,
        username: String,
        text: String,
    },
    /// A logged-in connection on `node` subscribed to the room.
    Join { username: String, node: String },
    /// It left (unsubscribed or disconnected).
    Leave { username: String, node: String },
    /// Who is here.
    Members,
}

/// What a room answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RoomReply {
    Sent(ChatMessage),
    Members(Vec<String>),
    Done,
    Error(Refusal),
}

/// What every room on a node shares.
pub struct RoomDeps {
    pub store: Arc<dyn MarketStore>,
    pub markets: Markets,
    pub replay_events: usize,
    /// Messages per second one user may post in a room.
    pub messages_per_sec: u32,
    /// Whether messages also go to the outbox for the Kafka event relay.
    pub events: bool,
}

/// The entity state.
pub struct Room {
    key: String,
    /// The room's place among the configured rooms (bits of its message ids).
    index: u64,
    deps: Arc<RoomDeps>,
    sharding: Sharding,
    lease: Lease,
    log: StreamLog,
    channel: String,
    last_id: u64,
    /// Connections per member, per node (a dead node's go when the ring drops it).
    members: BTreeMap<String, BTreeMap<String, u32>>,
    /// Per user: (start of the current one-second window, messages in it).
    rates: HashMap<u64, (i64, u32)>,
}

/// A message as `chat:R` data, the REST body and the WebSocket result.
pub fn view(m: &ChatMessage) -> Value {
    json!({"type": "message", "message_id": m.message_id.to_string(), "room": m.room,
           "user": m.username, "text": m.text, "ts": m.ts})
}

fn storage(e: StoreError) -> EntityError {
    EntityError::new(e.to_string())
}

/// Whether `room` is a room of this configuration (a configured symbol).
pub fn exists(markets: &Markets, room: &str) -> bool {
    markets.get(room).is_some()
}

impl Entity for Room {
    const KIND: &'static str = KIND;
    // Checks on the clock whether members' nodes are still in the cluster.
    const TICK_EVERY: Option<std::time::Duration> = Some(std::time::Duration::from_secs(2));

    type Msg = RoomMsg;
    type Reply = RoomReply;
    type Deps = RoomDeps;

    async fn activate(ctx: &EntityContext, deps: &Arc<RoomDeps>) -> Result<Self, EntityError> {
        let index = deps
            .markets
            .iter()
            .position(|m| m.symbol == ctx.key)
            .ok_or_else(|| EntityError::new(format!("unknown room '{}'", ctx.key)))?
            as u64;
        let store = &deps.store;
        let lease = crate::journal::take_over(store, KIND, &ctx.key, &ctx.sharding).await?;
        let last_id = store
            .chat_history(&ctx.key, None, 1)
            .await
            .map_err(storage)?
            .first()
            .map_or(0, |m| m.message_id);
        let epoch = bourse_cluster::stream::new_epoch(now_ms());
        ctx.sharding.publisher_activated(KIND, &ctx.key, &epoch);
        Ok(Room {
            key: ctx.key.clone(),
            index: index % 1024,
            deps: deps.clone(),
            sharding: ctx.sharding.clone(),
            lease,
            log: StreamLog::new(epoch, deps.replay_events),
            channel: format!("chat:{}", ctx.key),
            last_id,
            members: BTreeMap::new(),
            rates: HashMap::new(),
        })
    }

    async fn handle(&mut self, msg: RoomMsg, _ctx: &EntityContext) -> RoomReply {
        match msg {
            RoomMsg::Send {
                user_id,
                username,
                text,
            } => self.send(user_id, username, &text).await,
            RoomMsg::Join { username, node } => {
                let nodes = self.members.entry(username.clone()).or_default();
                let first = nodes.is_empty();
                *nodes.entry(node).or_default() += 1;
                if first {
                    self.publish(json!({"type": "presence", "presence": "join", "user": username}));
                }
                RoomReply::Done
            }
            RoomMsg::Leave { username, node } => {
                if let Some(nodes) = self.members.get_mut(&username) {
                    if let Some(n) = nodes.get_mut(&node) {
                        *n -= 1;
                        if *n == 0 {
                            nodes.remove(&node);
                        }
                    }
                    if nodes.is_empty() {
                        self.members.remove(&username);
                        self.publish_leave(username);
                    }
                }
                RoomReply::Done
            }
            RoomMsg::Members => RoomReply::Members(self.members.keys().cloned().collect()),
        }
    }

    async fn on_tick(&mut self, _ctx: &EntityContext) {
        // Members whose connections were all on nodes that left the ring have left.
        let sharding = &self.sharding;
        let mut gone = Vec::new();
        for (user, nodes) in self.members.iter_mut() {
            nodes.retain(|node, _| sharding.is_member(node) != Some(false));
            if nodes.is_empty() {
                gone.push(user.clone());
            }
        }
        for user in gone {
            self.members.remove(&user);
            self.publish_leave(user);
        }
    }

    fn subscribe(
        &mut self,
        req: StreamRequest,
        _ctx: &EntityContext,
    ) -> Result<StreamGrant, String> {
        if req.channel != self.channel {
            return Err(format!(
                "channel '{}' is not room {}'s",
                req.channel, self.key
            ));
        }
        // Who is here now, so a new subscriber's presence list starts whole; the join and
        // leave events that follow keep it so.
        let here = json!({"type": "presence", "presence": "here", "users": self.members.keys().collect::<Vec<_>>()});
        Ok(self
            .log
            .subscribe(&req, now_ms(), Some(here.to_string()), false))
    }

    fn unsubscribe(&mut self, channel: &str, node: &str) {
        self.log.unsubscribe(channel, node);
    }

    fn summary(&self) -> Value {
        json!({
            "epoch": self.log.epoch(),
            "lease": self.lease.fence().epoch,
            "last_message_id": self.last_id,
            "members": self.members.len(),
        })
    }

    fn fenced(&self) -> bool {
        self.lease.is_lost()
    }

    async fn passivate(&mut self, _ctx: &EntityContext) {
        self.lease.release().await;
    }
}

impl Room {
    async fn send(&mut self, user_id: u64, username: String, text: &str) -> RoomReply {
        let text = match text::clean(text) {
            Ok(t) => t,
            Err(e) => return RoomReply::Error(Refusal::BadRequest(e)),
        };
        let now = now_ms();
        let limit = self.deps.messages_per_sec;
        let (start, count) = self.rates.entry(user_id).or_insert((now, 0));
        if now - *start >= 1000 {
            *start = now;
            *count = 0;
        }
        if *count >= limit {
            return RoomReply::Error(Refusal::RateLimited(format!(
                "at most {limit} messages per second in a room"
            )));
        }
        *count += 1;
        if self.rates.len() > 10_000 {
            self.rates.retain(|_, (s, _)| now - *s < 1000);
        }
        let base = ((now.max(0) as u64) << 22) | (self.index << 12);
        let message_id = base.max(self.last_id + 1);
        let message = ChatMessage {
            room: self.key.clone(),
            message_id,
            user_id,
            username,
            text,
            ts: now,
        };
        // Stored before anyone sees it.
        let events = if self.deps.events {
            vec![crate::events::chat(&message)]
        } else {
            Vec::new()
        };
        let write = Write::Chat(message.clone()).with_events(events);
        if let Err(e) = self.lease.commit(write).await {
            tracing::error!(room = %self.key, error = %e, "storing a chat message failed");
            return RoomReply::Error(Refusal::Unavailable(format!(
                "room {} could not store the message; retry",
                self.key
            )));
        }
        self.last_id = message_id;
        self.publish(view(&message));
        RoomReply::Sent(message)
    }

    fn publish_leave(&mut self, username: String) {
        self.publish(json!({"type": "presence", "presence": "leave", "user": username}));
    }

    fn publish(&mut self, data: Value) {
        self.sharding.publish(
            &mut self.log,
            KIND,
            &self.key,
            &self.channel,
            now_ms(),
            data.to_string(),
            false,
        );
    }
}
