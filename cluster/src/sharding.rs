//! `send` and `ask` by `(kind, key)`: the one way anything in bourse reaches an entity.
//!
//! The owner is computed on the hash ring over the `up` members. A local owner means the
//! local region; a remote one means the owner's router, with the message bincode-encoded in
//! one envelope. A node that receives a message for a key it does not own (members still
//! converging) forwards it to the owner it computes, at most [`MAX_HOPS`] times; an `ask`
//! that cannot be delivered in time fails with `unavailable` — it never hangs.

use crate::clients::ClientView;
use crate::entity::Entity;
use crate::hub::{Delivery, Hub};
use crate::link::{Link, router_of};
use crate::region::{EntityInfo, Envelope, RegionMsg, RegionStats};
use crate::ring::HashRing;
use crate::router::RouterMsg;
use crate::stream::{StreamEvent, StreamGrant, StreamLog, StreamRequest};
use crate::wire::{self, msg};
use ractor::{ActorRef, RpcReplyPort};
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// How many times a message may be forwarded between nodes that disagree on its owner.
pub const MAX_HOPS: u8 = 3;

/// Why a message could not reach its entity or get an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// No region for the kind.
    #[error("no region for kind '{0}'")]
    UnknownKind(String),
    /// The owner is not reachable now (moving, restarting, its node down); retry.
    #[error("{0} is unavailable; retry")]
    Unavailable(String),
    /// No reply within the ask timeout.
    #[error("{0} did not answer in time")]
    Timeout(String),
    /// The entity answered with a refusal.
    #[error("{0}")]
    Refused(String),
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An entity's counters and its state summary (`null` while it is not running).
pub type Inspected = (EntityInfo, serde_json::Value);

/// Kind-erased operations on a local region, for callers that know only a kind name (the
/// router, the hub, the admin API).
trait ErasedRegion: Send + Sync {
    fn tell_bytes(&self, key: String, payload: &[u8]) -> Result<(), String>;
    fn ask_bytes(
        &self,
        key: String,
        payload: &[u8],
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, AskError>>;
    fn subscribe(
        &self,
        key: String,
        req: StreamRequest,
        reply: RpcReplyPort<Result<StreamGrant, String>>,
    ) -> bool;
    fn unsubscribe(&self, key: String, channel: String, node: String);
    fn kill(&self, key: String, reply: RpcReplyPort<bool>) -> bool;
    fn kill_some(&self, fraction: f64, reply: RpcReplyPort<Vec<String>>) -> bool;
    fn list(&self, reply: RpcReplyPort<Vec<EntityInfo>>) -> bool;
    fn inspect(&self, key: String, reply: RpcReplyPort<Option<Inspected>>) -> bool;
    fn stats(&self, reply: RpcReplyPort<RegionStats>) -> bool;
    fn rebalance(&self);
    fn as_any(&self) -> &dyn Any;
}

struct RegionHandle<E: Entity>(ActorRef<RegionMsg<E>>);

impl<E: Entity> RegionHandle<E> {
    fn deliver(&self, key: String, envelope: Envelope<E>) -> bool {
        self.0
            .send_message(RegionMsg::Deliver { key, envelope })
            .is_ok()
    }
}

impl<E: Entity> ErasedRegion for RegionHandle<E> {
    fn tell_bytes(&self, key: String, payload: &[u8]) -> Result<(), String> {
        let msg: E::Msg = wire::decode(payload).map_err(|e| e.to_string())?;
        self.deliver(key, Envelope::Tell(msg));
        Ok(())
    }
    fn ask_bytes(
        &self,
        key: String,
        payload: &[u8],
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, AskError>> {
        let what = format!("{}/{key}", E::KIND);
        let decoded: Result<E::Msg, _> = wire::decode(payload);
        let (tx, rx) = oneshot::channel();
        let sent = match decoded {
            Ok(m) => Ok(self.deliver(key, Envelope::Ask(m, RpcReplyPort::from(tx)))),
            Err(e) => Err(e.to_string()),
        };
        Box::pin(async move {
            match sent {
                Err(e) => {
                    return Err(AskError::Refused(format!(
                        "undecodable message for {what}: {e}"
                    )));
                }
                Ok(false) => return Err(AskError::Unavailable(what)),
                Ok(true) => {}
            }
            let reply = await_reply(rx, timeout, &what).await?;
            wire::encode(&reply).map_err(|e| AskError::Refused(e.to_string()))
        })
    }
    fn subscribe(
        &self,
        key: String,
        req: StreamRequest,
        reply: RpcReplyPort<Result<StreamGrant, String>>,
    ) -> bool {
        self.deliver(key, Envelope::Subscribe(req, reply))
    }
    fn unsubscribe(&self, key: String, channel: String, node: String) {
        self.deliver(key, Envelope::Unsubscribe { channel, node });
    }
    fn kill(&self, key: String, reply: RpcReplyPort<bool>) -> bool {
        self.0.send_message(RegionMsg::Kill { key, reply }).is_ok()
    }
    fn kill_some(&self, fraction: f64, reply: RpcReplyPort<Vec<String>>) -> bool {
        self.0
            .send_message(RegionMsg::KillSome { fraction, reply })
            .is_ok()
    }
    fn list(&self, reply: RpcReplyPort<Vec<EntityInfo>>) -> bool {
        self.0.send_message(RegionMsg::List(reply)).is_ok()
    }
    fn inspect(&self, key: String, reply: RpcReplyPort<Option<Inspected>>) -> bool {
        self.0
            .send_message(RegionMsg::Inspect { key, reply })
            .is_ok()
    }
    fn stats(&self, reply: RpcReplyPort<RegionStats>) -> bool {
        self.0.send_message(RegionMsg::Stats(reply)).is_ok()
    }
    fn rebalance(&self) {
        let _ = self.0.send_message(RegionMsg::Rebalance);
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

async fn await_reply<T>(
    rx: oneshot::Receiver<T>,
    timeout: Duration,
    what: &str,
) -> Result<T, AskError> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(reply)) => Ok(reply),
        // The reply port was dropped: the entity failed while handling, or its activation
        // failed. Retrying reaches the restarted entity.
        Ok(Err(_)) => Err(AskError::Unavailable(what.to_string())),
        Err(_) => Err(AskError::Timeout(what.to_string())),
    }
}

/// Where a key's owner is.
enum Route {
    Local(Arc<dyn ErasedRegion>),
    Remote(Arc<Link>),
}

struct Inner {
    node: String,
    vnodes: u32,
    ring: RwLock<HashRing>,
    regions: RwLock<HashMap<&'static str, Arc<dyn ErasedRegion>>>,
    ask_timeout: Duration,
    hub: Arc<Hub>,
    links: RwLock<HashMap<String, Arc<Link>>>,
    /// Set by `POST /admin/cluster/leave` for this node (from any node); the process
    /// waits on it beside its stop signals.
    leave: tokio::sync::Notify,
    /// Set while membership has this node stand down (cut off from the majority), so a
    /// refused request says why.
    cut_off: std::sync::atomic::AtomicBool,
}

/// The routing handle; cheap to clone, shared by the gateway, the feeds and every entity.
#[derive(Clone)]
pub struct Sharding {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sharding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharding")
            .field("node", &self.inner.node)
            .finish()
    }
}

impl Sharding {
    /// Routing for `node`. The ring is empty (nothing is owned, nothing activates) until
    /// membership installs one: a joining node must not act as the owner of every key.
    pub fn new(node: &str, vnodes: u32, ask_timeout: Duration, hub: Arc<Hub>) -> Sharding {
        Sharding {
            inner: Arc::new(Inner {
                node: node.to_string(),
                vnodes,
                ring: RwLock::new(HashRing::new::<&str>(&[], vnodes)),
                regions: RwLock::new(HashMap::new()),
                ask_timeout,
                hub,
                links: RwLock::new(HashMap::new()),
                leave: tokio::sync::Notify::new(),
                cut_off: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// This node's hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// The current ring.
    pub fn ring(&self) -> HashRing {
        self.inner
            .ring
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Whether `node` is a member of the current ring; `None` before a ring with members is
    /// installed (no view yet, which is not a dead cluster). Reads the ring in place, so an
    /// entity's clock may ask it cheaply.
    pub fn is_member(&self, node: &str) -> Option<bool> {
        let ring = self.inner.ring.read().unwrap_or_else(|p| p.into_inner());
        let members = ring.members();
        (!members.is_empty()).then(|| members.iter().any(|m| m == node))
    }

    /// A session to `node` was lost and made again: local subscribers of the publishers it
    /// owns repair their streams, which also registers this node with them again (a
    /// publisher drops a node it could not reach).
    pub fn relinked(&self, node: &str) {
        let ring = self.ring();
        self.inner
            .hub
            .repair_where(|kind, key| ring.owner(kind, key) == Some(node));
    }

    /// Whether this node owns `kind/key` on the current ring.
    pub fn owns(&self, kind: &str, key: &str) -> bool {
        let ring = self.inner.ring.read().unwrap_or_else(|p| p.into_inner());
        ring.owner(kind, key) == Some(self.inner.node.as_str())
    }

    /// Installs the ring over `members` and tells every local region to hand off what it no
    /// longer owns. Returns the new ring.
    pub fn set_ring_members(&self, members: &[String]) -> HashRing {
        let ring = HashRing::new(members, self.inner.vnodes);
        *self.inner.ring.write().unwrap_or_else(|p| p.into_inner()) = ring.clone();
        for region in self.regions() {
            region.rebalance();
        }
        ring
    }

    /// Marks this node as cut off from the cluster's majority (membership installs an empty
    /// ring beside it) or back.
    pub fn set_cut_off(&self, cut: bool) {
        self.inner
            .cut_off
            .store(cut, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes `region` the local region for `E`.
    pub(crate) fn register<E: Entity>(&self, region: ActorRef<RegionMsg<E>>) {
        let mut regions = self
            .inner
            .regions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        regions.insert(E::KIND, Arc::new(RegionHandle::<E>(region)));
    }

    /// Whether a region of `kind` is registered on this node.
    pub fn has_kind(&self, kind: &str) -> bool {
        let regions = self.inner.regions.read().unwrap_or_else(|p| p.into_inner());
        regions.contains_key(kind)
    }

    fn regions(&self) -> Vec<Arc<dyn ErasedRegion>> {
        let regions = self.inner.regions.read().unwrap_or_else(|p| p.into_inner());
        regions.values().cloned().collect()
    }

    fn local_region(&self, kind: &str) -> Result<Arc<dyn ErasedRegion>, AskError> {
        let regions = self.inner.regions.read().unwrap_or_else(|p| p.into_inner());
        regions
            .get(kind)
            .cloned()
            .ok_or_else(|| AskError::UnknownKind(kind.to_string()))
    }

    /// The outbound link to `node` (created on first use), if the node is reachable.
    fn link(&self, node: &str) -> Option<Arc<Link>> {
        if let Some(link) = self
            .inner
            .links
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
        {
            return Some(link.clone());
        }
        router_of(node)?;
        let mut links = self.inner.links.write().unwrap_or_else(|p| p.into_inner());
        Some(
            links
                .entry(node.to_string())
                .or_insert_with(|| Link::open(node))
                .clone(),
        )
    }

    fn route(&self, kind: &str, key: &str) -> Result<Route, AskError> {
        // Decided under the ring's read lock so the owner stays borrowed: no allocation per
        // message. `link` takes only the links lock, never the ring's.
        let ring = self.inner.ring.read().unwrap_or_else(|p| p.into_inner());
        match ring.owner(kind, key) {
            None if self
                .inner
                .cut_off
                .load(std::sync::atomic::Ordering::Relaxed) =>
            {
                Err(AskError::Unavailable(format!(
                    "{kind}/{key} (this node stands down: cut off from the cluster's majority, or standing aside)"
                )))
            }
            None => Err(AskError::Unavailable(format!(
                "{kind}/{key} (no member is up)"
            ))),
            Some(owner) if owner == self.inner.node => Ok(Route::Local(self.local_region(kind)?)),
            Some(owner) => self.link(owner).map(Route::Remote).ok_or_else(|| {
                AskError::Unavailable(format!("{kind}/{key} (owner {owner} unreachable)"))
            }),
        }
    }

    fn typed<E: Entity>(
        region: &Arc<dyn ErasedRegion>,
    ) -> Result<ActorRef<RegionMsg<E>>, AskError> {
        region
            .as_any()
            .downcast_ref::<RegionHandle<E>>()
            .map(|h| h.0.clone())
            .ok_or_else(|| AskError::UnknownKind(E::KIND.to_string()))
    }

    fn cast(link: &Link, cast: msg::Cast) -> Result<(), AskError> {
        if link.push(cast) {
            Ok(())
        } else {
            Err(AskError::Unavailable("peer router".into()))
        }
    }

    async fn call(
        &self,
        link: &Link,
        call: &msg::Call,
        what: &str,
    ) -> Result<msg::Reply, AskError> {
        let bytes = wire::encode(call).map_err(|e| AskError::Refused(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        // Queued casts to the node go first: a send then an ask arrive in that order.
        let sent = link
            .flush_then(|router| {
                router
                    .cast(RouterMsg::Call(bytes, RpcReplyPort::from(tx)))
                    .is_ok()
            })
            .unwrap_or(false);
        if !sent {
            return Err(AskError::Unavailable(what.to_string()));
        }
        let timer = std::time::Instant::now();
        let answer = await_reply(rx, self.inner.ask_timeout, what).await;
        crate::metrics::CALLS
            .with_label_values(&[if answer.is_ok() { "ok" } else { "failed" }])
            .observe(timer.elapsed().as_secs_f64());
        wire::decode(&answer?).map_err(|e| AskError::Refused(e.to_string()))
    }

    fn reply_error(reply: msg::Reply, what: &str) -> AskError {
        match reply {
            msg::Reply::Failed {
                retry: true,
                message,
            } => AskError::Unavailable(message),
            msg::Reply::Failed {
                retry: false,
                message,
            } => AskError::Refused(message),
            _ => AskError::Refused(format!("unexpected reply from {what}")),
        }
    }

    /// Fire-and-forget to `E/key`.
    pub fn send<E: Entity>(&self, key: &str, msg: E::Msg) -> Result<(), AskError> {
        match self.route(E::KIND, key)? {
            Route::Local(region) => Self::typed::<E>(&region)?
                .send_message(RegionMsg::Deliver {
                    key: key.to_string(),
                    envelope: Envelope::Tell(msg),
                })
                .map_err(|_| AskError::Unavailable(format!("{}/{key}", E::KIND))),
            Route::Remote(link) => {
                let payload = wire::encode(&msg).map_err(|e| AskError::Refused(e.to_string()))?;
                Self::cast(
                    &link,
                    msg::Cast::Tell {
                        kind: E::KIND.into(),
                        key: key.into(),
                        payload,
                        hops: 0,
                    },
                )
            }
        }
    }

    /// Request/reply to `E/key`, failing after the ask timeout.
    pub async fn ask<E: Entity>(&self, key: &str, msg: E::Msg) -> Result<E::Reply, AskError> {
        let what = format!("{}/{key}", E::KIND);
        match self.route(E::KIND, key)? {
            Route::Local(region) => {
                let (tx, rx) = oneshot::channel();
                Self::typed::<E>(&region)?
                    .send_message(RegionMsg::Deliver {
                        key: key.to_string(),
                        envelope: Envelope::Ask(msg, RpcReplyPort::from(tx)),
                    })
                    .map_err(|_| AskError::Unavailable(what.clone()))?;
                await_reply(rx, self.inner.ask_timeout, &what).await
            }
            Route::Remote(link) => {
                let payload = wire::encode(&msg).map_err(|e| AskError::Refused(e.to_string()))?;
                let call = msg::Call::Ask {
                    kind: E::KIND.into(),
                    key: key.into(),
                    payload,
                    hops: 0,
                };
                match self.call(&link, &call, &what).await? {
                    msg::Reply::Payload(bytes) => {
                        wire::decode(&bytes).map_err(|e| AskError::Refused(e.to_string()))
                    }
                    other => Err(Self::reply_error(other, &what)),
                }
            }
        }
    }

    /// Asks `kind/key` for a stream on behalf of this node.
    pub async fn subscribe(
        &self,
        kind: &str,
        key: &str,
        req: StreamRequest,
    ) -> Result<StreamGrant, AskError> {
        self.subscribe_hops(kind, key, req, 0).await
    }

    async fn subscribe_hops(
        &self,
        kind: &str,
        key: &str,
        req: StreamRequest,
        hops: u8,
    ) -> Result<StreamGrant, AskError> {
        let what = format!("{kind}/{key}");
        match self.route(kind, key)? {
            Route::Local(region) => {
                let (tx, rx) = oneshot::channel();
                if !region.subscribe(key.to_string(), req, RpcReplyPort::from(tx)) {
                    return Err(AskError::Unavailable(what));
                }
                await_reply(rx, self.inner.ask_timeout, &what)
                    .await?
                    .map_err(AskError::Refused)
            }
            Route::Remote(_) if hops >= MAX_HOPS => Err(AskError::Unavailable(what)),
            Route::Remote(link) => {
                let call = msg::Call::Subscribe {
                    kind: kind.into(),
                    key: key.into(),
                    req,
                    hops: hops + 1,
                };
                match self.call(&link, &call, &what).await? {
                    msg::Reply::Granted(grant) => Ok(grant),
                    other => Err(Self::reply_error(other, &what)),
                }
            }
        }
    }

    /// Tells `kind/key` that `node` no longer listens to `channel`.
    pub fn unsubscribe(&self, kind: &str, key: &str, channel: &str, node: &str) {
        match self.route(kind, key) {
            Ok(Route::Local(region)) => region.unsubscribe(key.into(), channel.into(), node.into()),
            Ok(Route::Remote(link)) => {
                let _ = Self::cast(
                    &link,
                    msg::Cast::Unsubscribe {
                        kind: kind.into(),
                        key: key.into(),
                        channel: channel.into(),
                        node: node.into(),
                    },
                );
            }
            Err(_) => {}
        }
    }

    /// Hands a publisher's event to `node`'s hub: directly here, through its router there.
    /// `NoSubscribers` tells the publisher to drop the node (also when the node is gone).
    pub fn deliver(&self, kind: &str, key: &str, node: &str, event: &StreamEvent) -> Delivery {
        if node == self.inner.node {
            return self.inner.hub.deliver(event);
        }
        let Some(link) = self.link(node) else {
            return Delivery::NoSubscribers;
        };
        let cast = msg::Cast::Publish {
            kind: kind.into(),
            key: key.into(),
            event: event.clone(),
        };
        match Self::cast(&link, cast) {
            Ok(()) => Delivery::Delivered(0),
            Err(_) => Delivery::NoSubscribers,
        }
    }

    /// Numbers an event on `channel` of a publisher's `log` and hands it once to each node
    /// that listens (its hub fans out to the connections); nodes with no subscribers left,
    /// or gone, are dropped from the channel.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &self,
        log: &mut StreamLog,
        kind: &str,
        key: &str,
        channel: &str,
        ts: i64,
        data: String,
        conflatable: bool,
    ) {
        let (event, nodes) = log.publish(channel, ts, data, conflatable);
        for node in nodes {
            if self.deliver(kind, key, &node, &event) == Delivery::NoSubscribers {
                log.unsubscribe(channel, &node);
            }
        }
    }

    /// A publisher started `epoch`: every node's hub asks its local subscribers to
    /// re-subscribe.
    pub fn publisher_activated(&self, kind: &str, key: &str, epoch: &str) {
        self.inner.hub.publisher_activated(kind, key, epoch);
        let cast = msg::Cast::PublisherActivated {
            kind: kind.into(),
            key: key.into(),
            epoch: epoch.into(),
        };
        crate::router::cast_to_peers(&cast);
    }

    /// Kills `kind/key` wherever it runs; `Ok(false)` when it was not running.
    pub async fn kill(&self, kind: &str, key: &str) -> Result<bool, AskError> {
        let what = format!("{kind}/{key}");
        match self.route(kind, key)? {
            Route::Local(region) => {
                self.ask_local(&region, &what, |r, tx| r.kill(key.to_string(), tx))
                    .await
            }
            Route::Remote(link) => {
                let call = msg::Call::Kill {
                    kind: kind.into(),
                    key: key.into(),
                };
                match self.call(&link, &call, &what).await? {
                    msg::Reply::Killed(k) => Ok(k),
                    other => Err(Self::reply_error(other, &what)),
                }
            }
        }
    }

    /// The link to `node`, or `None` when `node` is this node.
    fn node_link(&self, node: &str) -> Result<Option<Arc<Link>>, AskError> {
        if node == self.inner.node {
            return Ok(None);
        }
        self.link(node)
            .map(Some)
            .ok_or_else(|| AskError::Unavailable(format!("node {node} (unreachable)")))
    }

    /// Hands `region` a request with a reply port and waits (bounded) for its answer.
    async fn ask_local<T>(
        &self,
        region: &Arc<dyn ErasedRegion>,
        what: &str,
        send: impl FnOnce(&dyn ErasedRegion, RpcReplyPort<T>) -> bool,
    ) -> Result<T, AskError> {
        let (tx, rx) = oneshot::channel();
        if !send(region.as_ref(), RpcReplyPort::from(tx)) {
            return Err(AskError::Unavailable(what.to_string()));
        }
        await_reply(rx, self.inner.ask_timeout, what).await
    }

    /// Asks this node's region of `kind` (see [`Sharding::ask_local`]).
    async fn ask_region<T>(
        &self,
        kind: &str,
        send: impl FnOnce(&dyn ErasedRegion, RpcReplyPort<T>) -> bool,
    ) -> Result<T, AskError> {
        let region = self.local_region(kind)?;
        self.ask_local(&region, &format!("the {kind} region"), send)
            .await
    }

    /// The entities `node` holds, of `kind` or of every kind.
    pub async fn entities_on(
        &self,
        node: &str,
        kind: Option<&str>,
    ) -> Result<Vec<EntityInfo>, AskError> {
        if let Some(link) = self.node_link(node)? {
            let call = msg::Call::Entities {
                kind: kind.map(str::to_string),
            };
            return match self.call(&link, &call, &format!("node {node}")).await? {
                msg::Reply::Entities(list) => Ok(list),
                other => Err(Self::reply_error(other, node)),
            };
        }
        let kinds: Vec<&str> = match kind {
            Some(k) => vec![k],
            None => {
                let regions = self.inner.regions.read().unwrap_or_else(|p| p.into_inner());
                regions.keys().copied().collect()
            }
        };
        let mut all = Vec::new();
        for kind in kinds {
            all.extend(self.ask_region(kind, |r, tx| r.list(tx)).await?);
        }
        Ok(all)
    }

    /// Chaos: kills about `fraction` of `node`'s active entities of `kind`; the keys killed.
    pub async fn kill_some_on(
        &self,
        node: &str,
        kind: &str,
        fraction: f64,
    ) -> Result<Vec<String>, AskError> {
        if let Some(link) = self.node_link(node)? {
            let call = msg::Call::KillSome {
                kind: kind.to_string(),
                fraction,
            };
            return match self.call(&link, &call, &format!("node {node}")).await? {
                msg::Reply::KilledSome(keys) => Ok(keys),
                other => Err(Self::reply_error(other, node)),
            };
        }
        self.ask_region(kind, |r, tx| r.kill_some(fraction, tx))
            .await
    }

    /// `kind/key` as its owner's region sees it; `None` when it is not activated there.
    pub async fn inspect(&self, kind: &str, key: &str) -> Result<Option<Inspected>, AskError> {
        let what = format!("{kind}/{key}");
        match self.route(kind, key)? {
            Route::Local(region) => {
                self.ask_local(&region, &what, |r, tx| r.inspect(key.to_string(), tx))
                    .await
            }
            Route::Remote(link) => {
                let call = msg::Call::Inspect {
                    kind: kind.into(),
                    key: key.into(),
                };
                match self.call(&link, &call, &what).await? {
                    msg::Reply::Inspected(None) => Ok(None),
                    msg::Reply::Inspected(Some((info, summary))) => {
                        let summary = serde_json::from_str(&summary)
                            .map_err(|e| AskError::Refused(format!("{what} summary: {e}")))?;
                        Ok(Some((info, summary)))
                    }
                    other => Err(Self::reply_error(other, &what)),
                }
            }
        }
    }

    /// Asks `node` to drain (hand its entities off) and stop.
    pub async fn leave(&self, node: &str) -> Result<(), AskError> {
        match self.node_link(node)? {
            None => {
                self.inner.leave.notify_one();
                Ok(())
            }
            Some(link) => match self
                .call(&link, &msg::Call::Leave, &format!("node {node}"))
                .await?
            {
                msg::Reply::Leaving => Ok(()),
                other => Err(Self::reply_error(other, node)),
            },
        }
    }

    /// Resolves once this node was asked to leave the cluster.
    pub async fn leave_requested(&self) {
        self.inner.leave.notified().await
    }

    /// A `send` that arrived from another node: deliver here or forward (bounded).
    pub(crate) fn tell_bytes(&self, kind: &str, key: &str, payload: Vec<u8>, hops: u8) {
        match self.route(kind, key) {
            Ok(Route::Local(region)) => {
                if let Err(e) = region.tell_bytes(key.to_string(), &payload) {
                    tracing::warn!(%kind, %key, error = %e, "dropping an undecodable message");
                }
            }
            Ok(Route::Remote(link)) if hops < MAX_HOPS => {
                let cast = msg::Cast::Tell {
                    kind: kind.into(),
                    key: key.into(),
                    payload,
                    hops: hops + 1,
                };
                let _ = Self::cast(&link, cast);
            }
            Ok(Route::Remote(_)) => {
                tracing::warn!(%kind, %key, "dropping a message forwarded {MAX_HOPS} times")
            }
            Err(e) => {
                tracing::debug!(%kind, %key, error = %e, "dropping a message with no reachable owner")
            }
        }
    }

    /// Serves a call from another node.
    pub(crate) async fn serve_call(&self, call: msg::Call) -> msg::Reply {
        let failed = |e: AskError| msg::Reply::Failed {
            retry: matches!(e, AskError::Unavailable(_) | AskError::Timeout(_)),
            message: e.to_string(),
        };
        match call {
            msg::Call::Ask {
                kind,
                key,
                payload,
                hops,
            } => match self.route(&kind, &key) {
                Ok(Route::Local(region)) => match region
                    .ask_bytes(key, &payload, self.inner.ask_timeout)
                    .await
                {
                    Ok(bytes) => msg::Reply::Payload(bytes),
                    Err(e) => failed(e),
                },
                Ok(Route::Remote(link)) if hops < MAX_HOPS => {
                    let what = format!("{kind}/{key}");
                    let forward = msg::Call::Ask {
                        kind,
                        key,
                        payload,
                        hops: hops + 1,
                    };
                    self.call(&link, &forward, &what)
                        .await
                        .unwrap_or_else(failed)
                }
                Ok(Route::Remote(_)) => failed(AskError::Unavailable(format!(
                    "{kind}/{key} (forwarded {MAX_HOPS} times)"
                ))),
                Err(e) => failed(e),
            },
            msg::Call::Subscribe {
                kind,
                key,
                req,
                hops,
            } => match self.subscribe_hops(&kind, &key, req, hops).await {
                Ok(grant) => msg::Reply::Granted(grant),
                Err(e) => failed(e),
            },
            msg::Call::Kill { kind, key } => match self.kill(&kind, &key).await {
                Ok(k) => msg::Reply::Killed(k),
                Err(e) => failed(e),
            },
            msg::Call::KillSome { kind, fraction } => {
                match self.kill_some_on(&self.inner.node, &kind, fraction).await {
                    Ok(keys) => msg::Reply::KilledSome(keys),
                    Err(e) => failed(e),
                }
            }
            msg::Call::Entities { kind } => {
                match self.entities_on(&self.inner.node, kind.as_deref()).await {
                    Ok(list) => msg::Reply::Entities(list),
                    Err(e) => failed(e),
                }
            }
            msg::Call::Inspect { kind, key } => match self.inspect(&kind, &key).await {
                Ok(found) => {
                    msg::Reply::Inspected(found.map(|(info, summary)| (info, summary.to_string())))
                }
                Err(e) => failed(e),
            },
            msg::Call::Leave => {
                self.inner.leave.notify_one();
                msg::Reply::Leaving
            }
            msg::Call::Clients { limit } => {
                let hub = &self.inner.hub;
                msg::Reply::Clients {
                    total: hub.clients().len(),
                    listed: hub.list_clients(limit),
                }
            }
            msg::Call::KillClient { id } => {
                msg::Reply::KilledClient(self.inner.hub.clients().kill(id))
            }
        }
    }

    /// `node`'s client connections: how many, and the first `limit` by id.
    pub async fn clients_on(
        &self,
        node: &str,
        limit: usize,
    ) -> Result<(usize, Vec<ClientView>), AskError> {
        let Some(link) = self.node_link(node)? else {
            let hub = &self.inner.hub;
            return Ok((hub.clients().len(), hub.list_clients(limit)));
        };
        match self
            .call(
                &link,
                &msg::Call::Clients { limit },
                &format!("node {node}"),
            )
            .await?
        {
            msg::Reply::Clients { total, listed } => Ok((total, listed)),
            other => Err(Self::reply_error(other, node)),
        }
    }

    /// Chaos: client connection `id` of `node` dies as a crashing one would; false when
    /// that node has no such connection.
    pub async fn kill_client_on(&self, node: &str, id: u64) -> Result<bool, AskError> {
        let Some(link) = self.node_link(node)? else {
            return Ok(self.inner.hub.clients().kill(id));
        };
        match self
            .call(
                &link,
                &msg::Call::KillClient { id },
                &format!("node {node}"),
            )
            .await?
        {
            msg::Reply::KilledClient(killed) => Ok(killed),
            other => Err(Self::reply_error(other, node)),
        }
    }

    /// Statistics of every local region, by kind.
    pub async fn region_stats(&self) -> Vec<(String, RegionStats)> {
        let regions: Vec<(&'static str, Arc<dyn ErasedRegion>)> = {
            let map = self.inner.regions.read().unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(k, r)| (*k, r.clone())).collect()
        };
        let mut out = Vec::new();
        for (kind, region) in regions {
            if let Ok(stats) = self.ask_local(&region, kind, |r, tx| r.stats(tx)).await {
                out.push((kind.to_string(), stats));
            }
        }
        out
    }
}
