//! Starting a node's cluster services: the `ractor_cluster` node server (cookie
//! authentication; with `[cluster.tls]`, mutual TLS first, see [`crate::tls`]), the
//! membership actor and the router under a rest-for-one supervisor (the router is given
//! membership's address when it starts, so a new membership needs a new router), and the
//! connections: every node connects to every node it hears of, its seeds first, retried
//! with backoff until they answer.

use crate::contacts::Contacts;
use crate::membership::{
    ClusterView, MEMBERSHIP_NAME, MemberInfo, Membership, MembershipArgs, MembershipMsg,
    NodeEvents, Status, membership, peer_node,
};
use crate::quorum::Quorum;
use crate::router::{Router, RouterState};
use crate::sharding::Sharding;
use crate::tls::Tls;
use crate::witness::SharedStore;
use bourse_config::{ClusterSettings, ConfigError};
use bourse_supervision::{ChildSpec, RestartPolicy, Strategy, Supervisor, SupervisorArgs};
use ractor::{Actor, ActorCell, ActorRef};
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};
use std::collections::{BTreeSet, HashMap};
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
/// connections. `store` says whether the store answers (the node stands down while not) and what it
/// witnesses of the members. The supervisor and the node server are linked to `supervisor`.
pub async fn start(
    settings: &ClusterSettings,
    node: &str,
    gateway: SocketAddr,
    sharding: Sharding,
    supervisor: ActorCell,
    policy: RestartPolicy,
    store: SharedStore,
) -> Result<ClusterNode, StartError> {
    let listen: Option<SocketAddr> = match &settings.listen {
        Some(l) => Some(l.parse().map_err(|_| {
            ConfigError::new("cluster.listen", format!("'{l}' is not an ip:port address"))
        })?),
        None => None,
    };
    let tls = match &settings.tls {
        Some(files) if listen.is_some() => Some(Tls::load(files)?),
        _ => None,
    };
    let contacts = Contacts::default();
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
        hears: Vec::new(),
        agreed: Vec::new(),
        incarnation: fastrand::u64(..),
        seq: 0,
    };
    let up = Arc::new(AtomicBool::new(false));
    if clustered {
        crate::witness::beat_on(
            store.witness.clone(),
            me.node.clone(),
            me.incarnation,
            heartbeat,
        );
    }
    let membership_args = MembershipArgs {
        me,
        sharding: sharding.clone(),
        heartbeat,
        timeout: Duration::from_millis(settings.heartbeat_timeout_ms),
        quorum: Arc::new(Mutex::new(Quorum::new(Duration::from_millis(
            settings.stable_after_ms,
        )))),
        store,
        seq: Arc::default(),
        // Long enough to meet the seeds and hear from their members before taking a
        // share of the ring: fewer moves while a node joins.
        join_grace: heartbeat * 4,
        up: up.clone(),
        contacts: contacts.clone(),
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
            let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                ConfigError::new("cluster.listen", format!("cannot listen on {addr}: {e}"))
            })?;
            // Without TLS the node server listens itself (and this was only a check).
            let listener = tls.as_ref().map(|_| listener);
            // Peers are dialed by `keep_connected`, not by the node server's transitive mode,
            // which dials without TLS.
            let mode = Some(ractor_cluster::node::NodeConnectionMode::Isolated);
            let server = match &tls {
                None => NodeServer::new(
                    addr.port(),
                    settings.cookie.clone(),
                    node.to_string(),
                    addr.ip().to_string(),
                    None,
                    mode,
                )
                .with_listen_addr(addr.ip()),
                // The cluster port is `tls::serve`'s; the node server's own listener is
                // moved to a free loopback port, and it too demands a certificate.
                Some(tls) => NodeServer::new(
                    0,
                    settings.cookie.clone(),
                    node.to_string(),
                    addr.ip().to_string(),
                    Some(IncomingEncryptionMode::Tls(tls.acceptor())),
                    mode,
                )
                .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into()),
            };
            let (server, _) =
                Actor::spawn_linked(Some("bourse.node_server".into()), server, (), supervisor)
                    .await
                    .map_err(spawn_err("the cluster node server"))?;
            let _ = server.cast(NodeServerMessage::SubscribeToEvents {
                id: "bourse.membership".into(),
                subscription: Box::new(NodeEvents::default()),
            });
            if let (Some(tls), Some(listener)) = (&tls, listener) {
                let listener = listener
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(listener))
                    .map_err(|e| {
                        ConfigError::new("cluster.listen", format!("cannot listen on {addr}: {e}"))
                    })?;
                tokio::spawn(crate::tls::serve(listener, server.clone(), tls.clone()));
            }
            tracing::info!(%addr, seeds = ?settings.seeds, tls = tls.is_some(), "cluster listener up");
            tokio::spawn(keep_connected(
                server.clone(),
                Dialing {
                    me: node.to_string(),
                    my_addr: addr.to_string(),
                    seeds: settings.seeds.clone(),
                    contacts,
                    tls,
                },
            ));
            Some(server)
        }
    };
    Ok(ClusterNode { up, server })
}

/// What [`keep_connected`] dials, and how.
struct Dialing {
    me: String,
    my_addr: String,
    seeds: Vec<String>,
    contacts: Contacts,
    tls: Option<Tls>,
}

/// The longest wait between rounds of dials while a peer does not answer. Short, because
/// the redial is how a healed cut or a restarted node is found (at 5 s, convergence after a
/// rejecting firewall was lifted took about 7 s), and cheap: a refused dial costs a SYN and
/// its reset.
const MAX_REDIAL: Duration = Duration::from_secs(1);

/// Keeps a session to every node this one knows of: its seeds until it has met them, and
/// every member it hears of (see [`Contacts`]). Runs a round at once when a new node is
/// learned, every 2 s when all are connected, and with backoff (200 ms doubling to
/// [`MAX_REDIAL`]) between rounds while some do not answer. Dials run side by side, each
/// bounded; a round ends with its slowest dial, so a blackholed peer (its dial given up
/// after 5 s) stretches the rounds, and the redial of the others, to about 6 s.
async fn keep_connected(server: ActorRef<NodeServerMessage>, dialing: Dialing) {
    let mut backoff = Duration::from_millis(200);
    let mut failing: HashMap<String, String> = HashMap::new();
    loop {
        let sessions = match server
            .call(NodeServerMessage::GetSessions, Some(Duration::from_secs(2)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(s)) => s,
            Err(_) => return, // the node server stopped: the node is shutting down
            Ok(_) => Default::default(),
        };
        let peers: BTreeSet<String> = sessions.values().filter_map(peer_node).collect();
        let dialed: BTreeSet<&str> = sessions.values().map(|s| s.peer_addr.as_str()).collect();
        let known = dialing.contacts.current();
        // (node, if known; address)
        let mut targets: Vec<(Option<String>, String)> = known
            .iter()
            .filter(|c| {
                c.node != dialing.me
                    && !peers.contains(&c.node)
                    && !dialed.contains(c.addr.as_str())
            })
            .map(|c| (Some(c.node.clone()), c.addr.clone()))
            .collect();
        // A peer met but not yet heard may be a seed under another name: wait for its
        // heartbeat (and address) before dialing seeds again, or the second session is
        // refused as a duplicate.
        let unplaced = peers.iter().any(|p| !known.iter().any(|c| c.node == *p));
        for seed in &dialing.seeds {
            // A seed met under its node name is dialed as that node, if at all.
            let met =
                unplaced || known.iter().any(|c| c.addr == *seed) || dialed.contains(seed.as_str());
            if !met && *seed != dialing.my_addr && !targets.iter().any(|(_, a)| a == seed) {
                targets.push((None, seed.clone()));
            }
        }
        let mut dials = tokio::task::JoinSet::new();
        for (node, addr) in targets.iter().cloned() {
            let (server, tls) = (server.clone(), dialing.tls.clone());
            dials.spawn(async move {
                let result = crate::tls::dial(&server, &addr, tls.as_ref()).await;
                (node, addr, result)
            });
        }
        while let Some(Ok((node, addr, result))) = dials.join_next().await {
            let e = match result {
                Ok(()) => {
                    failing.remove(&addr);
                    // A session the peer then refuses (a wrong cookie) is dialled again
                    // every second: said once a minute.
                    if crate::said::first_this_minute(format!("connected {addr}")) {
                        tracing::info!(%addr, "connected to cluster peer");
                    } else {
                        tracing::debug!(%addr, "connected to cluster peer again");
                    }
                    continue;
                }
                Err(e) => e,
            };
            if let (true, Some(node), Some(m)) = (e.refused, node, membership()) {
                let _ = m.cast(MembershipMsg::PortClosed(node));
            }
            // Said once per address and reason (a wrong certificate says it here).
            if failing.get(&addr) != Some(&e.message) {
                tracing::warn!(%addr, error = %e, "cannot reach cluster peer; retrying");
                failing.insert(addr, e.message);
            } else {
                tracing::debug!(%addr, error = %e, "cluster peer not reachable yet");
            }
        }
        let wait = if targets.is_empty() {
            backoff = Duration::from_millis(200);
            Duration::from_secs(2)
        } else {
            let wait = backoff;
            backoff = (backoff * 2).min(MAX_REDIAL);
            wait
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = dialing.contacts.news() => {
                backoff = Duration::from_millis(200);
                // Let the new peer's session authenticate before counting it missing.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
