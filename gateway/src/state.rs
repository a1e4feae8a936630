//! What every gateway handler shares.

use bourse_cluster::node::ClusterNode;
use bourse_cluster::{Hub, Sharding};
use bourse_config::{GatewaySettings, Markets};
use bourse_storage::MarketStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

/// The gateway's view of the node.
pub struct GatewayState {
    pub sharding: Sharding,
    pub hub: Arc<Hub>,
    /// Membership, for the admin API.
    pub cluster: ClusterNode,
    pub store: Arc<dyn MarketStore>,
    pub markets: Markets,
    pub settings: GatewaySettings,
    /// Price-alert rules one user may hold.
    pub max_alerts_per_user: usize,
    /// Tokens and password hashing.
    pub auth: Arc<crate::auth::Auth>,
    /// Chat messages one user may post per minute over all rooms (`chat.messages_per_user_per_min`).
    pub chat_per_user: crate::shared_limits::SharedLimiter,
    /// Connections per address counted across the cluster, with Redis.
    pub shared_connections: Option<Arc<crate::shared_connections::SharedConnections>>,
    /// REST ticker answers shared through Redis.
    pub ticker_cache: crate::ticker_cache::TickerCache,
    /// The admin bearer token; `None` disables the admin endpoints.
    pub admin_token: Option<String>,
    /// `/metrics` without the admin token.
    pub metrics_public: bool,
    /// The live feed source's state (Upbit), shown in `/readyz`.
    pub feed: Option<bourse_actors::feed::health::Health>,
    /// Turns true once the node serves (regions up, feed running).
    pub ready: AtomicBool,
    /// Turns true when the node is stopping: connections close with 1001.
    pub shutdown: watch::Receiver<bool>,
}

impl GatewayState {
    /// Whether `/readyz` says yes.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.cluster.is_up() && !*self.shutdown.borrow()
    }
}
