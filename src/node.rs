//! Wiring one node: storage, the supervision root, regions, hub, gateway, feed; then wait
//! for Ctrl-C/SIGTERM or an admin `leave` (or a fatal escalation) and stop in order: hand
//! entities off, stop accepting, close clients with 1001, stop the feed, flush storage.

use anyhow::Context;
use bourse_actors::account::{Account, AccountDeps};
use bourse_actors::alert::{Alert, AlertDeps};
use bourse_actors::book::{BookDeps, BookEntity};
use bourse_actors::rankings::{Rankings, RankingsDeps};
use bourse_actors::room::{Room, RoomDeps};
use bourse_actors::session::{Session, SessionDeps};
use bourse_actors::symbol::{Symbol, SymbolDeps};
use bourse_cluster::witness::Beat;
use bourse_cluster::{Hub, RegionArgs, Sharding, guardian, region_child};
use bourse_config::{ConfigError, LogSettings, Markets, Settings};
use bourse_gateway::GatewayState;
use bourse_gateway::auth::Auth;
use bourse_supervision::{RestartPolicy, Strategy, Supervisor, SupervisorArgs};
use ractor::Actor;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// Events a session keeps per private channel (`orders`, `alerts`) for resume.
const SESSION_REPLAY_EVENTS: usize = 64;

/// The lease kind of the nodes' beats in the store.
const BEAT_KIND: &str = "bourse.node";

/// The store as the membership's witness: a node beats by taking a lease of its own again
/// (its epoch grows, its owner names the run), at once, beside its write queue (a beat held
/// up behind its entities' writes would read as a death), and a member's last beat is that
/// lease.
struct StoreWitness(Arc<dyn bourse_storage::MarketStore>);

#[async_trait::async_trait]
impl bourse_cluster::witness::Witness for StoreWitness {
    async fn beat(&self, me: &str, run: u64) -> Result<(), String> {
        // The run rides in the lease's owner, as hex.
        self.0
            .acquire_lease_now(BEAT_KIND, me, &format!("{run:016x}"))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn last_beat(&self, node: &str) -> Result<Option<Beat>, String> {
        let lease = self.0.lease(BEAT_KIND, node).await;
        Ok(lease
            .map_err(|e| e.to_string())?
            .map(|(owner, epoch)| Beat {
                // An owner no run wrote (never, short of another build) reads as run 0.
                run: u64::from_str_radix(&owner, 16).unwrap_or(0),
                epoch,
            }))
    }
}

/// How the node ended.
pub enum Exit {
    /// Asked to stop, and stopped cleanly.
    Clean,
    /// A child escalated past its restart intensity.
    Fatal(String),
}

/// Text or JSON logs, filtered by `RUST_LOG` or the configured level.
pub fn init_tracing(log: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Binds the gateway with the configured backlog, so a connect storm waits in the kernel's
/// queue instead of having its SYNs dropped (and retried a second later).
fn bind(listen: &str, backlog: u32) -> Result<tokio::net::TcpListener, ConfigError> {
    let fail = |e: std::io::Error| {
        let reason = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("{listen} is in use")
        } else {
            format!("cannot listen on {listen}: {e}")
        };
        ConfigError::new("gateway.listen", reason)
    };
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|_| ConfigError::new("gateway.listen", format!("'{listen}' is not ip:port")))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(addr).map_err(fail)?;
    socket.listen(backlog).map_err(fail)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs a node until it is told to stop.
pub async fn run(settings: Settings, markets: Markets, demo: bool) -> anyhow::Result<Exit> {
    if settings.node.clock_offset_ms != 0 {
        bourse_actors::clock::set_offset_ms(settings.node.clock_offset_ms);
        tracing::warn!(
            offset_ms = settings.node.clock_offset_ms,
            "node.clock_offset_ms is set: this node's clock is shifted (for tests only)"
        );
    }
    let listener = bind(&settings.gateway.listen, settings.gateway.listen_backlog)?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let (store, db) = bourse_storage::open(&settings.storage, &settings.sqlite_path())
        .await
        .with_context(|| format!("opening {} storage", settings.storage.backend))?;
    let node = settings.node.name.clone();
    let hub = Hub::new(&node);
    let sharding = Sharding::new(
        &node,
        settings.cluster.vnodes,
        Duration::from_millis(settings.cluster.ask_timeout_ms),
        hub.clone(),
    );
    let (root, mut fatal) = guardian::spawn_guardian()
        .await
        .context("starting the node guardian")?;
    let sup = &settings.supervision;
    let policy = RestartPolicy {
        max_restarts: sup.max_restarts,
        within: Duration::from_secs(sup.within_s),
        backoff_min: Duration::from_millis(sup.backoff_min_ms),
        backoff_max: Duration::from_millis(sup.backoff_max_ms),
    };
    let passivate_after = match settings.cluster.passivate_idle_s {
        0 => None,
        s => Some(Duration::from_secs(s)),
    };
    // The node supervisor: one region per kind, one-for-one (kinds are independent). A
    // region that fails restarts with its entities passivated; past the restart intensity
    // the supervisor fails and the guardian stops the node.
    // With the relay on, entities write their events to the outbox with their changes.
    let events = settings.kafka.relay_events;
    // What a new account is granted: the accounts grant it, the rankings measure from it.
    let grants = settings.trading.grant_units(&markets)?;
    let regions = vec![
        region_child::<Symbol>(RegionArgs {
            deps: Arc::new(SymbolDeps {
                store: store.clone(),
                markets: markets.clone(),
                replay_events: settings.streams.replay_events,
                alert_window_ms: settings.alerts.change_window_s as i64 * 1000,
                events,
            }),
            sharding: sharding.clone(),
            policy,
            passivate_after,
        }),
        region_child::<BookEntity>(RegionArgs {
            deps: Arc::new(BookDeps {
                store: store.clone(),
                markets: markets.clone(),
                replay_events: settings.streams.replay_events,
                snapshot_every: settings.trading.snapshot_every,
                events,
                price_band_pct: settings.trading.price_band_pct,
                slippage_bps: settings.trading.slippage_bps,
                reserve_ms: i64::from(settings.trading.reserve_days) * 86_400_000,
            }),
            sharding: sharding.clone(),
            policy,
            passivate_after,
        }),
        region_child::<Account>(RegionArgs {
            deps: Arc::new(AccountDeps {
                store: store.clone(),
                markets: markets.clone(),
                grants: grants.clone(),
                market_protect_pct: settings.trading.market_protect_pct,
                price_band_pct: settings.trading.price_band_pct,
                max_open_orders: settings.trading.max_open_orders,
                snapshot_every: settings.trading.snapshot_every,
            }),
            sharding: sharding.clone(),
            policy,
            passivate_after,
        }),
        region_child::<Room>(RegionArgs {
            deps: Arc::new(RoomDeps {
                store: store.clone(),
                markets: markets.clone(),
                replay_events: settings.streams.replay_events,
                messages_per_sec: settings.chat.messages_per_sec,
                events,
            }),
            sharding: sharding.clone(),
            policy,
            passivate_after,
        }),
        region_child::<Session>(RegionArgs {
            deps: Arc::new(SessionDeps {
                // Two private streams per active session: a short replay keeps thousands
                // of users cheap (a client that falls further behind re-reads the REST
                // lists or the inbox).
                replay_events: settings.streams.replay_events.min(SESSION_REPLAY_EVENTS),
            }),
            sharding: sharding.clone(),
            policy,
            passivate_after,
        }),
        region_child::<Alert>(RegionArgs {
            deps: Arc::new(AlertDeps {
                store: store.clone(),
                markets: markets.clone(),
                events,
            }),
            sharding: sharding.clone(),
            policy,
            passivate_after,
        }),
        region_child::<Rankings>(RegionArgs {
            deps: Arc::new(RankingsDeps {
                store: store.clone(),
                grant: bourse_actors::account::granted(&markets, &grants),
                markets: markets.clone(),
            }),
            sharding: sharding.clone(),
            policy,
            passivate_after,
        }),
        region_child::<bourse_cluster::probe::Echo>(RegionArgs {
            deps: Arc::new(()),
            sharding: sharding.clone(),
            policy,
            passivate_after,
        }),
    ];
    Actor::spawn_linked(
        Some("bourse.regions".into()),
        Supervisor,
        SupervisorArgs {
            strategy: Strategy::OneForOne,
            policy,
            children: regions,
        },
        root.get_cell(),
    )
    .await
    .context("starting the regions")?;

    let store_ok = bourse_storage::health::watch(
        &store,
        Duration::from_millis(settings.cluster.heartbeat_ms),
        Duration::from_millis(settings.cluster.heartbeat_timeout_ms),
    );
    let shared_store = bourse_cluster::witness::SharedStore {
        ok: store_ok,
        witness: Arc::new(StoreWitness(store.clone())),
    };
    let cluster = bourse_cluster::node::start(
        &settings.cluster,
        &node,
        addr,
        sharding.clone(),
        root.get_cell(),
        policy,
        shared_store,
    )
    .await
    .context("starting cluster services")?;

    let redis = bourse_gateway::shared_limits::Redis::open(&settings.redis)
        .map_err(|e| anyhow::anyhow!(e))?;
    if redis.is_some() {
        tracing::info!("throttles and connections per address count in redis, across the cluster");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let feed_health =
        (settings.feed.kind == "upbit").then(|| bourse_actors::feed::health::Health::new("upbit"));
    let state = Arc::new(GatewayState {
        sharding: sharding.clone(),
        hub,
        cluster: cluster.clone(),
        store: store.clone(),
        markets: markets.clone(),
        settings: settings.gateway.clone(),
        max_alerts_per_user: settings.alerts.max_per_user,
        auth: Arc::new(Auth::new(&settings.auth, redis.clone()).map_err(|e| anyhow::anyhow!(e))?),
        chat_per_user: bourse_gateway::shared_limits::SharedLimiter::new(
            "chat_user",
            settings.chat.messages_per_user_per_min,
            bourse_gateway::auth::THROTTLE_KEYS,
            redis.clone(),
        ),
        shared_connections: redis
            .clone()
            .map(|r| bourse_gateway::shared_connections::SharedConnections::new(r, &node)),
        ticker_cache: bourse_gateway::ticker_cache::TickerCache::new(
            redis.clone(),
            settings.redis.ticker_cache_ms,
        ),
        admin_token: settings.admin.token.clone(),
        metrics_public: settings
            .admin
            .metrics_public
            .unwrap_or_else(|| addr.ip().is_loopback()),
        feed: feed_health.clone(),
        ready: Default::default(),
        shutdown: stop_rx.clone(),
    });
    let gateway = tokio::spawn(bourse_gateway::serve(state.clone(), listener));
    let feed = match settings.feed.kind.as_str() {
        "simulator" => Some(tokio::spawn(bourse_actors::feed::run_simulator(
            sharding.clone(),
            markets.clone(),
            settings.feed.clone(),
            settings.participants.clone(),
            stop_rx.clone(),
        ))),
        "upbit" => feed_health.clone().map(|health| {
            tokio::spawn(bourse_upbit::run(
                settings.upbit.clone(),
                sharding.clone(),
                markets.clone(),
                health,
                stop_rx.clone(),
            ))
        }),
        "kafka" => {
            let ingest = bourse_kafka::ingest::Ingest::new(&settings.kafka, &node)?;
            Some(tokio::spawn(ingest.run(
                sharding.clone(),
                markets.clone(),
                stop_rx.clone(),
            )))
        }
        _ => None,
    };
    let relay = if settings.kafka.relay_events {
        let relay = bourse_kafka::relay::Relay::new(&settings.kafka, &node)?;
        Some(tokio::spawn(relay.run(
            store.clone(),
            sharding.clone(),
            stop_rx.clone(),
        )))
    } else {
        None
    };
    let retention = bourse_storage::retention::InboxRetention {
        keep: Duration::from_secs(u64::from(settings.alerts.inbox_keep_days) * 86_400),
        max_per_user: settings.alerts.inbox_max_per_user as u64,
        every: Duration::from_secs(settings.alerts.inbox_sweep_every_s),
    };
    tokio::spawn(bourse_storage::retention::run(
        store.clone(),
        retention,
        stop_rx.clone(),
    ));
    tokio::spawn(become_ready(state.clone(), markets.clone()));
    tokio::spawn(bourse_actors::book::keep_awake(
        sharding.clone(),
        markets.clone(),
        stop_rx.clone(),
    ));
    tracing::info!(%node, %addr, storage = %db, "node started");
    print_urls(&node, addr, demo, &settings);

    let exit = tokio::select! {
        _ = stop_signal() => Exit::Clean,
        _ = sharding.leave_requested() => {
            tracing::warn!("asked to leave the cluster (admin API); draining");
            Exit::Clean
        }
        reason = fatal.wait_for(Option::is_some) => match reason {
            Ok(r) => Exit::Fatal(r.clone().unwrap_or_default()),
            Err(_) => Exit::Fatal("the node guardian stopped".into()),
        },
    };
    tracing::info!("stopping: handing entities off, closing clients, flushing storage");
    if matches!(exit, Exit::Clean) {
        hand_off(
            &cluster,
            &sharding,
            Duration::from_millis(settings.cluster.heartbeat_ms),
        )
        .await;
    }
    let _ = stop_tx.send(true);
    if let Some(feed) = feed {
        let _ = feed.await;
    }
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    if tokio::time::timeout(Duration::from_secs(10), gateway)
        .await
        .is_err()
    {
        tracing::warn!("gateway did not finish closing connections within 10 s");
    }
    root.stop(Some("node stopping".into()));
    store.flush().await.context("flushing storage")?;
    store.close().await.context("closing storage")?;
    tracing::info!("stopped");
    Ok(exit)
}

/// Turns `/readyz` on once the node serves its always-on entities: the cluster is up and
/// every symbol the ring gives this node is active (recovered from storage) and answers.
async fn become_ready(state: Arc<GatewayState>, markets: Markets) {
    let mut shutdown = state.shutdown.clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if state.cluster.is_up() && symbols_answer(&state.sharding, &markets).await {
            state.ready.store(true, Ordering::Relaxed);
            tracing::info!("node serving (ready)");
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Whether every symbol this node owns answers a ticker query (activating it if needed).
async fn symbols_answer(sharding: &Sharding, markets: &Markets) -> bool {
    for market in markets.iter() {
        if sharding.owns(bourse_actors::symbol::KIND, &market.symbol)
            && sharding
                .ask::<Symbol>(&market.symbol, bourse_actors::symbol::SymbolMsg::Ticker)
                .await
                .is_err()
        {
            return false;
        }
    }
    true
}

/// Leaves the ring and waits (bounded) until every local entity has been passivated, so
/// their new owners start from flushed state.
async fn hand_off(
    cluster: &bourse_cluster::node::ClusterNode,
    sharding: &Sharding,
    heartbeat: Duration,
) {
    cluster.leave();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // At least one heartbeat, so peers hear `leaving` before this node goes quiet.
        tokio::time::sleep(heartbeat).await;
        let remaining: usize = sharding
            .region_stats()
            .await
            .iter()
            .map(|(_, s)| s.active + s.waiting)
            .sum();
        if remaining == 0 {
            tracing::info!("all entities handed off");
            return;
        }
        if tokio::time::Instant::now() > deadline {
            tracing::warn!(remaining, "hand-off incomplete after 10 s; stopping anyway");
            return;
        }
    }
}

fn print_urls(node: &str, addr: std::net::SocketAddr, demo: bool, settings: &Settings) {
    let http = format!("http://{addr}");
    let ws = format!("ws://{addr}");
    let title = if demo { "bourse demo" } else { "bourse node" };
    println!(
        "{title} '{node}' is up; data in {}",
        settings.node.data_dir.display()
    );
    println!("  browser UI {http}/");
    println!("  REST       {http}/api/v1/symbols");
    println!("  ticker     {http}/api/v1/ticker/KRW-BTC");
    println!("  candles    {http}/api/v1/candles/KRW-BTC?interval=1m");
    println!("  book       {http}/api/v1/book/KRW-BTC");
    println!("  trade      POST {http}/api/v1/auth/register, then POST {http}/api/v1/orders");
    println!("  WebSocket  {ws}/ws");
    println!("  SSE        {http}/sse?channels=ticker:KRW-BTC,trades:KRW-BTC");
    println!("  health     {http}/healthz  {http}/readyz");
    if demo && let Some(token) = &settings.admin.token {
        println!("admin token: {token}");
    }
    println!("Stop with Ctrl-C.");
}
