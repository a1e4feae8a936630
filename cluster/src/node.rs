//! Starting a node's cluster services: the `ractor_cluster` node server (cookie
//! authentication, transitive connections: every node connects to every node), the
//! membership actor and the router under a rest-for-one supervisor (the router is given
//! membership's address when it starts, so a new membership needs a new router), and the
//! connections to the seed nodes (retried with backoff until they answer, and again
//! whenever this node finds itself alone).

use crate::membership::{
    ClusterView, MEMBERSHIP_NAME, MemberInfo, Membership, MembershipArgs, MembershipMsg,
    NodeEvents, Status, membership,
};
use crate::quorum::Quorum;
use crate::router::{Router, RouterState};
use crate::sharding::Sharding;
use bourse_config::{ClusterSettings, ConfigError};
use bourse_supervision::{ChildSpec, RestartPolicy, Strategy, Supervisor, SupervisorArgs};
use ractor::{Actor, ActorCell, ActorRef};
use ractor_cluster::{NodeServer, NodeServerMessage};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Handles to this node's cluster services.
#[derive(Clone)]
pub struct ClusterNode {
    up: Arc<AtomicBool>,
    server: Option<ActorRef<NodeServerMessage>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("clustered", &self.server.is_some())
            .finish()
    }
}

/// Why the cluster services could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("starting {what}: {why}")]
    Spawn { what: &'static str, why: String },
}

fn spawn_err(what: &'static str) -> impl Fn(ractor::SpawnErr) -> StartError {
    move |e| StartError::Spawn {
        what,
        why: e.to_string(),
    }
}

impl ClusterNode {
    /// This node's view of the cluster.
    pub async fn view(&self) -> Option<ClusterView> {
        match membership()?
            .call(MembershipMsg::View, Some(Duration::from_secs(2)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(v)) => Some(v),
            _ => None,
        }
    }

    /// Whether this node is `up` (joined, owning its share of the ring).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Announces `leaving`: peers take this node out of the ring, and so does it, which
    /// hands its entities off.
    pub fn leave(&self) {
        if let Some(m) = membership() {
            let _ = m.cast(MembershipMsg::SetStatus(Status::Leaving));
        }
    }
}

/// Starts membership and the router (under their own supervisor, restarting with
/// `policy`), and, when `settings.listen` is set, the node server and the seed
/// connections. `store_ok` says whether the store answers (the node stands down while not). The supervisor and the node server are linked to `supervisor`.
pub async fn start(
    settings: &ClusterSettings,
    node: &str,
    gateway: SocketAddr,
    sharding: Sharding,
    supervisor: ActorCell,
    policy: RestartPolicy,
    store_ok: Arc<AtomicBool>,
) -> Result<ClusterNode, StartError> {
    let listen: Option<SocketAddr> = match &settings.listen {
        Some(l) => Some(l.parse().map_err(|_| {
            ConfigError::new("cluster.listen", format!("'{l}' is not an ip:port address"))
        })?),
        None => None,
    };
    let heartbeat = Duration::from_millis(settings.heartbeat_ms);
    let clustered = listen.is_some();
    let me = MemberInfo {
        node: node.to_string(),
        addr: listen.map(|a| a.to_string()).unwrap_or_default(),
        gateway: gateway.to_string(),
        status: if clustered && !settings.seeds.is_empty() {
            Status::Joining
        } else {
            Status::Up
        },
        entities: 0,
        serving: true,
    };
    let up = Arc::new(AtomicBool::new(false));
    let membership_args = MembershipArgs {
        me,
        sharding: sharding.clone(),
        heartbeat,
        timeout: Duration::from_millis(settings.heartbeat_timeout_ms),
        quorum: Arc::new(Mutex::new(Quorum::new(Duration::from_millis(
            settings.stable_after_ms,
        )))),
        store_ok,
        // Long enough to meet the seeds and hear from their members before taking a
        // share of the ring: fewer moves while a node joins.
        join_grace: heartbeat * 4,
        up: up.clone(),
    };
    let membership_child = ChildSpec::new("membership", move |sup: ActorCell| {
        let args = membership_args.clone();
        async move {
            let (m, _) =
                Actor::spawn_linked(Some(MEMBERSHIP_NAME.into()), Membership, args, sup).await?;
            Ok(m.get_cell())
        }
    });
    let router_child = ChildSpec::new("router", move |sup: ActorCell| {
        let sharding = sharding.clone();
        async move {
            let membership = membership().ok_or_else(|| {
                ractor::SpawnErr::StartupFailed("membership is not running".into())
            })?;
            let (r, _) = Actor::spawn_linked(
                Some("bourse.router".into()),
                Router,
                RouterState {
                    sharding,
                    membership,
                },
                sup,
            )
            .await?;
            Ok(r.get_cell())
        }
    });
    Actor::spawn_linked(
        Some("bourse.cluster".into()),
        Supervisor,
        SupervisorArgs {
            strategy: Strategy::RestForOne,
            policy,
            children: vec![membership_child, router_child],
        },
        supervisor.clone(),
    )
    .await
    .map_err(spawn_err("the cluster services"))?;

    let server = match listen {
        None => None,
        Some(addr) => {
            // Fail with the key's name if the port is taken (the node server would only log).
            drop(std::net::TcpListener::bind(addr).map_err(|e| {
                ConfigError::new("cluster.listen", format!("cannot listen on {addr}: {e}"))
            })?);
            let server = NodeServer::new(
                addr.port(),
                settings.cookie.clone(),
                node.to_string(),
                addr.ip().to_string(),
                None,
                Some(ractor_cluster::node::NodeConnectionMode::Transitive),
            )
            .with_listen_addr(addr.ip());
            let (server, _) =
                Actor::spawn_linked(Some("bourse.node_server".into()), server, (), supervisor)
                    .await
                    .map_err(spawn_err("the cluster node server"))?;
            let _ = server.cast(NodeServerMessage::SubscribeToEvents {
                id: "bourse.membership".into(),
                subscription: Box::new(NodeEvents::default()),
            });
            tracing::info!(%addr, seeds = ?settings.seeds, "cluster listener up");
            tokio::spawn(keep_connected(server.clone(), settings.seeds.clone()));
            Some(server)
        }
    };
    Ok(ClusterNode { up, server })
}

/// Connects to every seed (retrying with backoff until it answers), then keeps watching:
/// a node with no sessions left dials its seeds again.
async fn keep_connected(server: ActorRef<NodeServerMessage>, seeds: Vec<String>) {
    if seeds.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        let sessions = match server
            .call(NodeServerMessage::GetSessions, Some(Duration::from_secs(2)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(s)) => s,
            Err(_) => return, // the node server stopped: the node is shutting down
            Ok(_) => Default::default(),
        };
        let connected: Vec<String> = sessions.values().map(|s| s.peer_addr.clone()).collect();
        let mut missing = false;
        for seed in &seeds {
            if connected.iter().any(|c| c == seed) {
                continue;
            }
            if !sessions.is_empty() && connected.len() >= seeds.len() {
                // Meshed through transitive connections already.
                continue;
            }
            missing = true;
            match ractor_cluster::client_connect(&server, seed.as_str()).await {
                Ok(()) => tracing::info!(%seed, "connected to seed"),
                Err(e) => tracing::debug!(%seed, error = ?e, "seed not reachable yet"),
            }
        }
        backoff = if missing {
            (backoff * 2).min(Duration::from_secs(5))
        } else {
            Duration::from_secs(2)
        };
        tokio::time::sleep(backoff).await;
    }
}
