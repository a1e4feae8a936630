//! What a sharded entity is: a keyed piece of state with a serde message type, activated on
//! its first message and rebuilt from storage after a restart or a move. Domain code
//! implements [`Entity`]; the region and actor shell around it are generic.

use crate::Sharding;
use crate::stream::{StreamGrant, StreamRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Why an entity could not be activated or answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EntityError(pub String);

impl EntityError {
    /// An error with context.
    pub fn new(msg: impl Into<String>) -> Self {
        EntityError(msg.into())
    }
}

/// What an entity sees of the runtime while it handles a message.
#[derive(Clone)]
pub struct EntityContext {
    /// The entity's key (`KRW-BTC`).
    pub key: String,
    /// Routing to other entities by kind and key; entities never hold each other's refs.
    pub sharding: Sharding,
}

/// Where an ask's reply goes; an entity may keep it and answer later (after a journal write
/// it did not wait for), while it goes on with its next message.
pub struct Responder<R>(Box<dyn FnOnce(R) + Send>);

impl<R> Responder<R> {
    /// A responder that hands the reply to `f`.
    pub fn new(f: impl FnOnce(R) + Send + 'static) -> Self {
        Responder(Box::new(f))
    }

    /// Sends the reply.
    pub fn send(self, reply: R) {
        (self.0)(reply)
    }
}

/// A keyed, supervised, durable actor kind (`symbol`, `book`, `account`, ...).
///
/// Messages and replies are serde types so that a region on another node can receive them;
/// nothing in them may be a handle to local memory.
pub trait Entity: Sized + Send + 'static {
    /// The kind name used in addresses, process groups and channels' routing.
    const KIND: &'static str;
    /// Whether the region may passivate it after `cluster.passivate_idle_s` without messages.
    const PASSIVATE_WHEN_IDLE: bool = true;
    /// How often [`Entity::on_tick`] runs (clocks such as candle closing).
    const TICK_EVERY: Option<Duration> = None;

    /// Messages it accepts.
    type Msg: Serialize + DeserializeOwned + Send + 'static;
    /// What it answers to an `ask`.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// Node-local dependencies shared by all entities of the kind (store, hub, markets).
    type Deps: Send + Sync + 'static;

    /// Builds the entity's state for `ctx.key`, from storage when it existed before.
    fn activate(
        ctx: &EntityContext,
        deps: &Arc<Self::Deps>,
    ) -> impl Future<Output = Result<Self, EntityError>> + Send;

    /// Handles one message; the reply is dropped for a `send`.
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &EntityContext,
    ) -> impl Future<Output = Self::Reply> + Send;

    /// Handles an ask. By default the reply is [`Entity::handle`]'s, sent at once; an entity
    /// that pipelines (answers once a write it did not wait for is durable) keeps
    /// `respond` and calls it later, in its own order.
    fn handle_ask(
        &mut self,
        msg: Self::Msg,
        ctx: &EntityContext,
        respond: Responder<Self::Reply>,
    ) -> impl Future<Output = ()> + Send {
        async move {
            let reply = self.handle(msg, ctx).await;
            respond.send(reply);
        }
    }

    /// Runs every [`Entity::TICK_EVERY`].
    fn on_tick(&mut self, _ctx: &EntityContext) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// A node asks for one of this entity's streams.
    fn subscribe(
        &mut self,
        req: StreamRequest,
        _ctx: &EntityContext,
    ) -> Result<StreamGrant, String> {
        Err(format!("{} has no stream '{}'", Self::KIND, req.channel))
    }

    /// Answers [`Entity::subscribe`] through `respond`: at once by default. An entity whose
    /// memory runs ahead of storage (one that answers after journal writes it did not wait
    /// for) answers once everything the grant shows is durable, as it does its other
    /// answers, so no subscriber sees a change a crash could take back.
    fn subscribe_then(
        &mut self,
        req: StreamRequest,
        ctx: &EntityContext,
        respond: Responder<Result<StreamGrant, String>>,
    ) {
        respond.send(self.subscribe(req, ctx));
    }

    /// Whether storage fenced this activation (another node took the entity over): the
    /// shell then stops it, so it never writes or publishes again.
    fn fenced(&self) -> bool {
        false
    }

    /// A few fields that say what the entity holds, for `GET /admin/entities/{kind}/{key}`
    /// (counts and positions, never secrets or whole collections).
    fn summary(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// `node` no longer listens to `channel`.
    fn unsubscribe(&mut self, _channel: &str, _node: &str) {}

    /// Runs before a clean stop (passivation, handoff): flush what must be durable.
    fn passivate(&mut self, _ctx: &EntityContext) -> impl Future<Output = ()> + Send {
        async {}
    }
}
