//! `send` and `ask` by `(kind, key)`: the one way anything in bourse reaches an entity.
//!
//! The owner is computed on the hash ring over the `up` members; a local owner means the
//! local region, a remote one the owner's region (cross-node delivery arrives with the
//! Cluster issue; until then a key owned elsewhere answers `unavailable`, never hangs).

use crate::entity::Entity;
use crate::region::{Envelope, RegionMsg, RegionStats};
use crate::ring::HashRing;
use crate::stream::{StreamGrant, StreamRequest};
use ractor::{ActorRef, RpcReplyPort};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// Why a message could not reach its entity or get an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// No region for the kind on this node.
    #[error("no region for kind '{0}'")]
    UnknownKind(String),
    /// The owner is not reachable now (moving, restarting, another node); retry.
    #[error("{0} is unavailable; retry")]
    Unavailable(String),
    /// No reply within the ask timeout.
    #[error("{0} did not answer in time")]
    Timeout(String),
    /// The entity answered with a refusal.
    #[error("{0}")]
    Refused(String),
}

/// Kind-erased operations on a region, for callers that know only a kind name (the hub
/// re-subscribing streams, the admin API).
trait ErasedRegion: Send + Sync {
    fn subscribe(
        &self,
        key: String,
        req: StreamRequest,
        reply: RpcReplyPort<Result<StreamGrant, String>>,
    ) -> bool;
    fn kill(&self, key: String, reply: RpcReplyPort<bool>) -> bool;
    fn stats(&self, reply: RpcReplyPort<RegionStats>) -> bool;
    fn as_any(&self) -> &dyn Any;
}

struct RegionHandle<E: Entity>(ActorRef<RegionMsg<E>>);

impl<E: Entity> ErasedRegion for RegionHandle<E> {
    fn subscribe(
        &self,
        key: String,
        req: StreamRequest,
        reply: RpcReplyPort<Result<StreamGrant, String>>,
    ) -> bool {
        let envelope = Envelope::Subscribe(req, reply);
        self.0
            .send_message(RegionMsg::Deliver { key, envelope })
            .is_ok()
    }
    fn kill(&self, key: String, reply: RpcReplyPort<bool>) -> bool {
        self.0.send_message(RegionMsg::Kill { key, reply }).is_ok()
    }
    fn stats(&self, reply: RpcReplyPort<RegionStats>) -> bool {
        self.0.send_message(RegionMsg::Stats(reply)).is_ok()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct Inner {
    node: String,
    ring: RwLock<HashRing>,
    regions: RwLock<HashMap<&'static str, Arc<dyn ErasedRegion>>>,
    ask_timeout: Duration,
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
    /// Routing for `node`, with a ring of just this node until membership says otherwise.
    pub fn new(node: &str, vnodes: u32, ask_timeout: Duration) -> Sharding {
        Sharding {
            inner: Arc::new(Inner {
                node: node.to_string(),
                ring: RwLock::new(HashRing::new(&[node], vnodes)),
                regions: RwLock::new(HashMap::new()),
                ask_timeout,
            }),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The current ring.
    pub fn ring(&self) -> HashRing {
        self.inner
            .ring
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
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

    fn region(&self, kind: &str, key: &str) -> Result<Arc<dyn ErasedRegion>, AskError> {
        let owner_is_local = {
            let ring = self.inner.ring.read().unwrap_or_else(|p| p.into_inner());
            ring.owner(kind, key) == Some(self.inner.node.as_str())
        };
        if !owner_is_local {
            return Err(AskError::Unavailable(format!("{kind}/{key}")));
        }
        let regions = self.inner.regions.read().unwrap_or_else(|p| p.into_inner());
        regions
            .get(kind)
            .cloned()
            .ok_or_else(|| AskError::UnknownKind(kind.to_string()))
    }

    fn typed<E: Entity>(&self, key: &str) -> Result<ActorRef<RegionMsg<E>>, AskError> {
        let region = self.region(E::KIND, key)?;
        region
            .as_any()
            .downcast_ref::<RegionHandle<E>>()
            .map(|h| h.0.clone())
            .ok_or_else(|| AskError::UnknownKind(E::KIND.to_string()))
    }

    /// Fire-and-forget to `E/key`.
    pub fn send<E: Entity>(&self, key: &str, msg: E::Msg) -> Result<(), AskError> {
        let region = self.typed::<E>(key)?;
        region
            .send_message(RegionMsg::Deliver {
                key: key.to_string(),
                envelope: Envelope::Tell(msg),
            })
            .map_err(|_| AskError::Unavailable(format!("{}/{key}", E::KIND)))
    }

    /// Request/reply to `E/key`, failing after the ask timeout.
    pub async fn ask<E: Entity>(&self, key: &str, msg: E::Msg) -> Result<E::Reply, AskError> {
        let region = self.typed::<E>(key)?;
        let (tx, rx) = oneshot::channel();
        region
            .send_message(RegionMsg::Deliver {
                key: key.to_string(),
                envelope: Envelope::Ask(msg, RpcReplyPort::from(tx)),
            })
            .map_err(|_| AskError::Unavailable(format!("{}/{key}", E::KIND)))?;
        self.await_reply(rx, E::KIND, key).await
    }

    /// Asks `kind/key` for a stream on behalf of this node.
    pub async fn subscribe(
        &self,
        kind: &str,
        key: &str,
        req: StreamRequest,
    ) -> Result<StreamGrant, AskError> {
        let region = self.region(kind, key)?;
        let (tx, rx) = oneshot::channel();
        if !region.subscribe(key.to_string(), req, RpcReplyPort::from(tx)) {
            return Err(AskError::Unavailable(format!("{kind}/{key}")));
        }
        self.await_reply(rx, kind, key)
            .await?
            .map_err(AskError::Refused)
    }

    /// Kills `kind/key` if it is active here; `Ok(false)` when it was not running.
    pub async fn kill(&self, kind: &str, key: &str) -> Result<bool, AskError> {
        let region = self.region(kind, key)?;
        let (tx, rx) = oneshot::channel();
        if !region.kill(key.to_string(), RpcReplyPort::from(tx)) {
            return Err(AskError::Unavailable(format!("{kind}/{key}")));
        }
        self.await_reply(rx, kind, key).await
    }

    /// Statistics of every local region, by kind.
    pub async fn region_stats(&self) -> Vec<(String, RegionStats)> {
        let regions: Vec<(&'static str, Arc<dyn ErasedRegion>)> = {
            let map = self.inner.regions.read().unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(k, r)| (*k, r.clone())).collect()
        };
        let mut out = Vec::new();
        for (kind, region) in regions {
            let (tx, rx) = oneshot::channel();
            if region.stats(RpcReplyPort::from(tx))
                && let Ok(Ok(stats)) = tokio::time::timeout(self.inner.ask_timeout, rx).await
            {
                out.push((kind.to_string(), stats));
            }
        }
        out
    }

    async fn await_reply<T>(
        &self,
        rx: oneshot::Receiver<T>,
        kind: &str,
        key: &str,
    ) -> Result<T, AskError> {
        match tokio::time::timeout(self.inner.ask_timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            // The reply port was dropped: the entity failed while handling, or its
            // activation failed. Retrying reaches the restarted entity.
            Ok(Err(_)) => Err(AskError::Unavailable(format!("{kind}/{key}"))),
            Err(_) => Err(AskError::Timeout(format!("{kind}/{key}"))),
        }
    }
}
