//! The chaos soak (issue "Operations"): a 3-node cluster with 200 WebSocket clients trading,
//! chatting and subscribed, while every second about 10 % of the `book`, `account`,
//! `symbol` and `room` entities on every node are killed through the admin API, and once
//! during the run a whole node is SIGKILLed and restarted. At the end, through the protocol
//! only:
//! - every acknowledged order exists, and its filled quantity is exactly what its fills in
//!   the owner's inbox say; buys and sells filled the same quantity per symbol;
//! - per asset, available + held over every account equals the grants, the simulated
//!   participants' accounts included (they trade throughout; at the end each node is
//!   SIGKILLed once more and restarted with their takers idle, so the books go quiet);
//! - every acknowledged chat message is in its room's history;
//! - every connection's streams rose by exactly one per event within an epoch.
//!
//! The nodes run in network namespaces where this process may make them (root), and then,
//! three quarters in, a node is cut off from the others by blackhole routes for 6 s: it
//! stands down, the two others serve, it rejoins when the links heal. With `SOAK_HANG=1`, a
//! quarter of the way in, a node is also hung (SIGSTOP) until the others have taken its
//! entities over, then continued: it notices its pause and owns nothing until its view
//! settles. Opt-in because it still fails now and then (a gap inside an epoch on a `chat:`
//! channel, seen in 1 of 3 CI runs). Both print how long the others took to see the node
//! `down` and to take its entities over.
//!
//! `SOAK_SECS` (default 20) sets the length; `SOAK_CLIENTS` (default 200) the clients.
//! A longer run kills a node once a minute, a different one each time. `SOAK_CALM=1` runs
//! the same load with no fault at all and checks that no node ever saw another `down`
//! (`bourse_cluster_members{status="down"}` scraped every second on every node).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::net::Net;
use common::{ADMIN_TOKEN, Cluster, Event, assert_continuity, http, metric, units};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Exchange markets with the simulated participants trading in them (a maker and a taker
/// per market, users 0xFFFF0000..0xFFFF0010), beside and against the clients.
const CONFIG: &str = "[feed]\ntrades_per_sec = 5\n[trading]\nsnapshot_every = 50\n";
/// The participants' accounts, and how many grants each starts with.
const PARTICIPANTS: std::ops::Range<u64> = 0xFFFF_0000..0xFFFF_0010;
const PARTICIPANT_GRANTS: i128 = 10_000;
/// Traded symbols (each also a chat room): (symbol, mid price, tick, lot decimals).
const SYMBOLS: [(&str, u64, u64, usize); 4] = [
    ("KRW-BTC", 140_000_000, 1000, 4),
    ("KRW-ETH", 5_000_000, 1000, 4),
    ("KRW-XRP", 3000, 1, 2),
    ("KRW-SOL", 250_000, 100, 3),
];
/// The default grants per user, in units of 10^-8.
const GRANTS: [(&str, i128); 9] = [
    ("KRW", 100_000_000 * SCALE),
    ("BTC", SCALE),
    ("ETH", 10 * SCALE),
    ("XRP", 10_000 * SCALE),
    ("SOL", 100 * SCALE),
    ("DOGE", 100_000 * SCALE),
    ("ADA", 10_000 * SCALE),
    ("AVAX", 500 * SCALE),
    ("LINK", 1000 * SCALE),
];
const SCALE: i128 = 100_000_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the clients saw acknowledged, and what they saw on their streams.
#[derive(Default)]
struct Ledger {
    /// order id → (user index, symbol, side).
    orders: HashMap<String, (usize, String, String)>,
    /// (room, message id).
    messages: Vec<(String, String)>,
    /// One entry per connection: its events in arrival order.
    streams: Vec<Vec<Event>>,
    refused: BTreeMap<String, u64>,
    timeouts: u64,
    reconnects: u64,
}

struct Shared {
    /// Every node's gateway, `ip:port`.
    addrs: Vec<String>,
    stop: AtomicBool,
    ledger: Mutex<Ledger>,
    ops: AtomicU64,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(shared: &Shared, home: usize, token: &str) -> Option<Socket> {
    for attempt in 0..30 {
        if shared.stop.load(Ordering::Relaxed) {
            return None;
        }
        let addr = &shared.addrs[(home + attempt) % shared.addrs.len()];
        let url = format!("ws://{addr}/ws?token={token}");
        if let Ok(Ok((ws, _))) = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_tungstenite::connect_async(url),
        )
        .await
        {
            return Some(ws);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// One client: connects (to its home node, or the next one when that is down), subscribes,
/// and sends one operation at a time at about one per second until told to stop.
async fn client(shared: Arc<Shared>, idx: usize, token: String) {
    let (symbol, mid, tick, lot) = SYMBOLS[idx % SYMBOLS.len()];
    let mut rng = fastrand::Rng::with_seed(idx as u64 * 7919 + 1);
    let mut next_id = 0u64;
    let mut open: Vec<String> = Vec::new();
    let mut first = true;
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(mut ws) = connect(&shared, idx, &token).await else {
            break;
        };
        if !first {
            shared.ledger.lock().unwrap().reconnects += 1;
        }
        first = false;
        let mut events: Vec<Event> = Vec::new();
        next_id += 1;
        let sub = json!({"id": next_id, "op": "subscribe", "channels":
            ["orders", format!("trades:{symbol}"), format!("book:{symbol}"), format!("chat:{symbol}")]});
        if ws.send(Message::text(sub.to_string())).await.is_err() {
            continue;
        }
        // (id, op, what it was, sent at)
        let mut pending: Option<(u64, &str, Value, Instant)> = None;
        let mut next_op = tokio::time::Instant::now() + Duration::from_millis(rng.u64(200..1200));
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some((_, _, _, at)) = &pending
                && at.elapsed() > Duration::from_secs(10)
            {
                shared.ledger.lock().unwrap().timeouts += 1;
                pending = None;
            }
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = tokio::time::sleep_until(next_op) => {
                    next_op += Duration::from_millis(rng.u64(700..1300));
                    if pending.is_some() {
                        continue;
                    }
                    next_id += 1;
                    let roll = rng.u32(0..100);
                    let (op, body) = if roll < 12 && !open.is_empty() {
                        let id = open.swap_remove(rng.usize(0..open.len()));
                        ("order.cancel", json!({"order_id": id}))
                    } else if roll < 25 {
                        ("chat.send", json!({"room": symbol, "text": format!("c{idx} #{next_id}")}))
                    } else {
                        let side = if rng.bool() { "buy" } else { "sell" };
                        let price = mid - 10 * tick + rng.u64(0..=20) * tick;
                        let qty = format!("0.{:0lot$}", rng.u64(1..=20));
                        ("order.place", json!({"symbol": symbol, "side": side, "type": "limit",
                            "price": price.to_string(), "qty": qty,
                            "client_order_id": format!("s{idx}-{next_id}")}))
                    };
                    let mut msg = body.clone();
                    msg["id"] = json!(next_id);
                    msg["op"] = json!(op);
                    if ws.send(Message::text(msg.to_string())).await.is_err() {
                        break;
                    }
                    shared.ops.fetch_add(1, Ordering::Relaxed);
                    pending = Some((next_id, op, body, Instant::now()));
                    continue;
                }
            };
            let text = match frame {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if let Some(e) = Event::from_json(&v) {
                events.push(e);
                continue;
            }
            let Some(id) = v["id"].as_u64() else { continue };
            let Some((pid, op, body, _)) = &pending else {
                continue;
            };
            if id != *pid {
                continue;
            }
            let mut ledger = shared.ledger.lock().unwrap();
            if v["ok"] == true {
                match *op {
                    "order.place" => {
                        let oid = v["result"]["order_id"].as_str().unwrap().to_string();
                        ledger.orders.insert(
                            oid.clone(),
                            (
                                idx,
                                symbol.to_string(),
                                body["side"].as_str().unwrap().to_string(),
                            ),
                        );
                        if v["result"]["status"] == "open"
                            || v["result"]["status"] == "partially_filled"
                        {
                            open.push(oid);
                        }
                    }
                    "chat.send" => {
                        let mid = v["result"]["message_id"].as_str().unwrap().to_string();
                        ledger.messages.push((symbol.to_string(), mid));
                    }
                    _ => {}
                }
            } else {
                let code = v["error"]["code"].as_str().unwrap_or("?").to_string();
                *ledger.refused.entry(format!("{op} {code}")).or_default() += 1;
            }
            pending = None;
        }
        shared.ledger.lock().unwrap().streams.push(events);
        let _ = ws.close(None).await;
    }
}

fn admin_post(addr: &str, path: &str, body: Value) -> Option<Value> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    match http(
        &format!("http://{addr}{path}"),
        "POST",
        Some(&body),
        &[("authorization", &auth)],
    ) {
        Ok((200, v)) => Some(v),
        _ => None,
    }
}

/// `addr`'s `/metrics` (with the admin token: off loopback it is not public).
fn metrics(addr: &str) -> Option<String> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    match http(
        &format!("http://{addr}/metrics"),
        "GET",
        None,
        &[("authorization", &auth)],
    ) {
        Ok((200, v)) => v.as_str().map(String::from),
        _ => None,
    }
}

/// One sample of `addr`'s `/metrics`.
fn scrape(addr: &str, sample: &str) -> Option<f64> {
    metric(&metrics(addr)?, sample)
}

fn scrape_restarts(addr: &str) -> Option<f64> {
    let text = metrics(addr)?;
    let text = text.as_str();
    Some(
        ["book", "account", "symbol", "room", "session", "alert"]
            .iter()
            .filter_map(|k| {
                metric(
                    text,
                    &format!("bourse_entity_restarts_total{{kind=\"{k}\"}}"),
                )
            })
            .sum(),
    )
}

/// Places a far-from-market order through `addr` until one is acknowledged; how long it
/// took. Measures when trading on `symbol` works again after a node died.
fn probe_order(addr: &str, token: &str, symbol: &str, mid: u64, lot: usize) -> Duration {
    let started = Instant::now();
    let auth = format!("Bearer {token}");
    let mut n = 0;
    loop {
        n += 1;
        let body = json!({"symbol": symbol, "side": "buy", "type": "limit",
            "price": (mid / 2).to_string(), "qty": format!("0.{:0lot$}", 1),
            "client_order_id": format!("probe-{}-{n}", started.elapsed().as_nanos())});
        let answer = http(
            &format!("http://{addr}/api/v1/orders"),
            "POST",
            Some(&body),
            &[("authorization", &auth)],
        );
        match answer {
            Ok((201, _)) => return started.elapsed(),
            Ok((503, _)) | Err(_) => {}
            Ok((s, v)) => panic!("probe order on {symbol}: {s} {v}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{symbol} never recovered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get(addr: &str, path: &str, token: &str) -> Value {
    let auth = format!("Bearer {token}");
    for _ in 0..100 {
        if let Ok((200, v)) = http(
            &format!("http://{addr}{path}"),
            "GET",
            None,
            &[("authorization", &auth)],
        ) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET {path} never answered 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_heals_under_kills_and_loses_nothing_acknowledged() {
    let secs = env_or("SOAK_SECS", 20);
    let calm = std::env::var_os("SOAK_CALM").is_some();
    let hang_too = !calm && std::env::var_os("SOAK_HANG").is_some();
    let cut_too = !calm;
    let clients = env_or("SOAK_CLIENTS", 200) as usize;
    let net = Net::create(3);
    let mut cluster = Cluster::start_sharing_on_hosts("soak", net.hosts.clone(), CONFIG);
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(30),
    );
    let addrs: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("{}:{}", n.host.addr, n.port))
        .collect();

    // Users, registered in parallel over the three gateways; a probe user per symbol.
    let tokens: Vec<String> = {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let addrs = addrs.clone();
                std::thread::spawn(move || {
                    (0..clients + SYMBOLS.len())
                        .filter(|i| i % 8 == t)
                        .map(|i| {
                            let (s, v) = http(
                                &format!("http://{}/api/v1/auth/register", addrs[i % 3]),
                                "POST",
                                Some(&json!({"username": format!("soak{i}"), "password": "password123"})),
                                &[],
                            )
                            .unwrap();
                            assert_eq!(s, 201, "{v}");
                            (i, v["token"].as_str().unwrap().to_string())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(usize, String)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        all.into_iter().map(|(_, t)| t).collect()
    };
    let probes: Vec<String> = tokens[clients..].to_vec();

    let shared = Arc::new(Shared {
        addrs: addrs.clone(),
        stop: AtomicBool::new(false),
        ledger: Mutex::new(Ledger::default()),
        ops: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(client(shared.clone(), i, tokens[i].clone())))
        .collect();

    // The chaos, on its own thread: kill rounds every second; node kills on schedule.
    let chaos = {
        let shared = shared.clone();
        let addrs = addrs.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let node_kills: Vec<Duration> = (0..if calm { 0 } else { (secs / 60).max(1) })
                .map(|k| Duration::from_secs(secs * (2 * k + 1) / (2 * (secs / 60).max(1))))
                .collect();
            let mut killed: BTreeMap<&str, usize> = BTreeMap::new();
            let mut rounds = 0;
            // Restarts per node over its incarnations: (finished incarnations, current).
            let mut restarts = [(0.0, 0.0); 3];
            let mut recover = Vec::new();
            let mut rejoin = Vec::new();
            let mut next_kill = 0;
            let (mut hang, mut cut) = (None, None);
            let mut downs_seen = 0.0f64;
            let cut_due = cut_too && net.namespaces;
            // The run lasts `secs`, and past them until the network cut has been made.
            while started.elapsed() < Duration::from_secs(secs) || (cut_due && cut.is_none()) {
                let round = Instant::now();
                rounds += 1;
                for (i, addr) in addrs.iter().enumerate() {
                    if calm {
                        let down = scrape(addr, "bourse_cluster_members{status=\"down\"}");
                        downs_seen = downs_seen.max(down.unwrap_or(0.0));
                        continue;
                    }
                    for kind in ["book", "account", "symbol", "room"] {
                        if let Some(v) = admin_post(
                            addr,
                            "/admin/chaos/kill",
                            json!({"kind": kind, "fraction": 0.1}),
                        ) {
                            *killed.entry(kind).or_default() +=
                                v["killed"].as_array().map_or(0, Vec::len);
                        }
                    }
                    if let Some(r) = scrape_restarts(addr) {
                        restarts[i].1 = r;
                    }
                }
                if next_kill < node_kills.len() && started.elapsed() >= node_kills[next_kill] {
                    next_kill += 1;
                    // First the node that owns the BTC book dies; a longer run's later
                    // kills go round the other nodes (the ring gives the book back to the
                    // same node once it rejoins).
                    let victim =
                        (cluster.owner(0, "book", "KRW-BTC") + next_kill - 1) % addrs.len();
                    let survivor = (victim + 1) % 3;
                    cluster.nodes[victim].kill9();
                    let died = Instant::now();
                    restarts[victim] = (restarts[victim].0 + restarts[victim].1, 0.0);
                    let mut worst = Duration::ZERO;
                    for (k, (symbol, mid, _, lot)) in SYMBOLS.iter().enumerate() {
                        probe_order(&addrs[survivor], &probes[k], symbol, *mid, *lot);
                        worst = worst.max(died.elapsed());
                    }
                    recover.push(worst);
                    cluster.nodes[victim].restart();
                    let back = Instant::now();
                    cluster.nodes[victim].wait_ready();
                    cluster.wait_converged(
                        &[0, 1, 2],
                        &["node1", "node2", "node3"],
                        Duration::from_secs(60),
                    );
                    rejoin.push(back.elapsed());
                }
                if hang_too && hang.is_none() && started.elapsed() >= Duration::from_secs(secs / 4)
                {
                    hang = Some(isolate(&cluster, &addrs, 1, "hang", |node, on| {
                        cluster.nodes[node].signal(if on { "STOP" } else { "CONT" })
                    }));
                }
                if cut_due
                    && cut.is_none()
                    && started.elapsed() >= Duration::from_secs(secs * 3 / 4)
                {
                    cut = Some(isolate(&cluster, &addrs, 2, "network cut", |node, on| {
                        for other in (0..3).filter(|o| *o != node) {
                            if on {
                                net.cut(node, other);
                            } else {
                                net.heal(node, other);
                            }
                        }
                        if on {
                            std::thread::sleep(Duration::from_secs(6));
                        }
                    }));
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(round.elapsed()));
            }
            shared.stop.store(true, Ordering::Relaxed);
            for (i, addr) in addrs.iter().enumerate() {
                if let Some(r) = scrape_restarts(addr) {
                    restarts[i].1 = r;
                }
            }
            let restarts: f64 = restarts.iter().map(|(a, b)| a + b).sum();
            if cut_too && !net.namespaces {
                println!("soak: no network namespaces here, so no network cut");
            }
            let isolated = [hang, cut];
            (
                cluster, net, killed, rounds, restarts, recover, rejoin, isolated, downs_seen,
            )
        })
    };
    let (mut cluster, net, killed, rounds, restarts, recover, rejoin, isolated, downs_seen) =
        tokio::task::spawn_blocking(move || chaos.join().unwrap())
            .await
            .unwrap();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("a client did not stop")
            .unwrap();
    }
    let ledger = std::mem::take(&mut *shared.ledger.lock().unwrap());
    let ops = shared.ops.load(Ordering::Relaxed);

    // Streams: within an epoch, every connection saw every event once, in order.
    let mut epoch_changes = 0;
    let mut events = 0;
    for s in &ledger.streams {
        events += s.len();
        epoch_changes += assert_continuity(s);
    }

    // The participants' takers stop: each node is SIGKILLed and comes back with none.
    let quiet = Instant::now();
    for i in 0..3 {
        let config = cluster.nodes[i].dir.join("node.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace("trades_per_sec = 5", "trades_per_sec = 0"),
        )
        .unwrap();
        cluster.nodes[i].restart();
        cluster.nodes[i].wait_ready();
        cluster.wait_converged(
            &[0, 1, 2],
            &["node1", "node2", "node3"],
            Duration::from_secs(60),
        );
    }
    println!(
        "soak: takers stopped (each node restarted) in {:?}",
        quiet.elapsed()
    );

    // Money: per asset, available + held over every account, the participants' included,
    // equals the grants, once in-flight settlements have landed.
    let users = clients + SYMBOLS.len();
    let grants = users as i128 + PARTICIPANT_GRANTS * PARTICIPANTS.count() as i128;
    let settle_started = Instant::now();
    let mut unread = Vec::new();
    let totals = loop {
        let mut totals: BTreeMap<String, i128> = BTreeMap::new();
        let mut add = |balances: &Value| {
            for (asset, b) in balances.as_object().unwrap() {
                *totals.entry(asset.clone()).or_default() +=
                    units(b["available"].as_str().unwrap()) + units(b["held"].as_str().unwrap());
            }
        };
        for (i, token) in tokens.iter().enumerate() {
            add(&get(&addrs[i % 3], "/api/v1/account", token)["balances"]);
        }
        unread.clear();
        for user in PARTICIPANTS {
            let view = get(
                &addrs[0],
                &format!("/admin/entities/account/{user}"),
                ADMIN_TOKEN,
            );
            match view["state"].get("balances") {
                Some(b) => add(b),
                None => unread.push(view),
            }
        }
        let ok = GRANTS
            .iter()
            .all(|(a, g)| totals.get(*a).copied() == Some(g * grants));
        if ok || settle_started.elapsed() > Duration::from_secs(60) {
            break totals;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // Orders: every acknowledged one exists with exactly the fills its owner's inbox shows.
    // (The clients' buys and sells need not match: the participants trade with them.)
    let mut fills = 0usize;
    for (i, token) in tokens.iter().enumerate().take(clients) {
        let addr = &addrs[i % 3];
        let list = get(addr, "/api/v1/orders?limit=1000", token);
        let list: HashMap<String, Value> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (o["order_id"].as_str().unwrap().to_string(), o.clone()))
            .collect();
        // The inbox: the highest filled quantity each order reached.
        let mut inbox: HashMap<String, i128> = HashMap::new();
        let mut keys = HashSet::new();
        let mut since = 0i64;
        loop {
            let page = get(
                addr,
                &format!("/api/v1/notifications?since={since}&limit=500"),
                token,
            );
            let page = page.as_array().unwrap().clone();
            for n in &page {
                if n["kind"] == "fill" {
                    assert!(
                        keys.insert(n["key"].as_str().unwrap().to_string()),
                        "inbox entry twice: {n}"
                    );
                    fills += 1;
                    let id = n["data"]["order_id"].as_str().unwrap().to_string();
                    let f = units(n["data"]["filled_qty"].as_str().unwrap());
                    let e = inbox.entry(id).or_default();
                    *e = (*e).max(f);
                }
            }
            match page.last() {
                Some(last) if page.len() == 500 => since = last["ts"].as_i64().unwrap(),
                _ => break,
            }
        }
        for (id, (owner, symbol, side)) in ledger.orders.iter().filter(|(_, o)| o.0 == i) {
            let o = list
                .get(id)
                .unwrap_or_else(|| panic!("acknowledged order {id} of user {owner} is gone"));
            assert_eq!(o["symbol"].as_str(), Some(symbol.as_str()));
            assert_eq!(o["side"].as_str(), Some(side.as_str()));
            let filled = units(o["filled_qty"].as_str().unwrap());
            assert_eq!(
                filled,
                inbox.get(id).copied().unwrap_or(0),
                "order {id}: filled {} but its fills say otherwise: {o}",
                o["filled_qty"]
            );
            assert!(filled <= units(o["qty"].as_str().unwrap()), "{o}");
        }
    }
    // Checked after the orders, which tell a fill missing on one side from a wrong amount.
    let off: BTreeMap<&str, i128> = GRANTS
        .iter()
        .map(|(a, g)| (*a, totals.get(*a).copied().unwrap_or(0) - g * grants))
        .filter(|(_, d)| *d != 0)
        .collect();
    assert!(
        off.is_empty(),
        "available + held over {users} accounts and the participants' differs from the grants by {off:?} (units of 1e-8); participants not active: {unread:?}"
    );

    // Chat: every acknowledged message is in its room's history.
    for (room, ..) in SYMBOLS {
        let want: HashSet<&str> = ledger
            .messages
            .iter()
            .filter(|(r, _)| r == room)
            .map(|(_, m)| m.as_str())
            .collect();
        let mut have: HashSet<String> = HashSet::new();
        let mut before: Option<String> = None;
        loop {
            let path = match &before {
                None => format!("/api/v1/chat/{room}/messages?limit=200"),
                Some(b) => format!("/api/v1/chat/{room}/messages?limit=200&before={b}"),
            };
            let page = get(&addrs[0], &path, &tokens[0]);
            let page = page.as_array().unwrap().clone();
            for m in &page {
                have.insert(m["message_id"].as_str().unwrap().to_string());
            }
            match page.last() {
                Some(last) if page.len() == 200 => {
                    before = Some(last["message_id"].as_str().unwrap().to_string())
                }
                _ => break,
            }
        }
        let missing: Vec<&&str> = want.iter().filter(|m| !have.contains(**m)).collect();
        assert!(
            missing.is_empty(),
            "{room}: acknowledged messages missing from history: {missing:?}"
        );
    }

    let kills: usize = killed.values().sum();
    let mut recover_ms: Vec<u128> = recover.iter().map(Duration::as_millis).collect();
    recover_ms.sort();
    println!(
        "soak: {secs} s, {clients} clients, {ops} operations sent, {} orders and {} chat \
         messages acknowledged, {fills} fills, {} refusals {:?}, {} timeouts, {} reconnects; \
         {rounds} kill rounds, {kills} entities killed {killed:?}, {} node kill(s); restarts \
         counted by /metrics: {restarts}; trading back after a node kill: {recover_ms:?} ms \
         (p50 {} ms, max {} ms), node rejoined in {:?}; {} connections, {events} stream \
         events, {epoch_changes} epoch changes; money settled {:?} after the run",
        ledger.orders.len(),
        ledger.messages.len(),
        ledger.refused.values().sum::<u64>(),
        ledger.refused,
        ledger.timeouts,
        ledger.reconnects,
        recover.len(),
        recover_ms.get(recover_ms.len() / 2).copied().unwrap_or(0),
        recover_ms.last().copied().unwrap_or(0),
        rejoin,
        ledger.streams.len(),
        settle_started.elapsed(),
    );
    assert!(!ledger.orders.is_empty(), "no order was acknowledged");
    if calm {
        println!("soak: calm run, members seen down by any node at any scrape: {downs_seen}");
        assert_eq!(
            downs_seen, 0.0,
            "a node saw a member down with no fault injected"
        );
        assert_eq!(epoch_changes, 0, "an entity moved with no fault injected");
        drop(cluster);
        drop(net);
        return;
    }
    assert!(kills > 0, "the chaos killed nothing");
    // Each kill is a panic its region restarts; a kill sent just before a scrape (or before
    // its node died) may not be counted yet.
    assert!(
        restarts >= kills as f64 * 0.8,
        "restarts counted by /metrics {restarts}, kills {kills}"
    );
    if cut_too && net.namespaces {
        assert!(isolated[1].is_some(), "the network cut ran");
    }
    drop(cluster);
    drop(net);
}

/// Isolates node `victim` (`isolation(victim, true)`: SIGSTOP, a network cut) from the
/// others and measures, on a survivor's `/admin/cluster`, how long until it is `down` and
/// until the ring leaves it out; then ends it (`isolation(victim, false)`) and waits for
/// the whole cluster to converge again. Returns `what` and the three durations.
fn isolate(
    cluster: &Cluster,
    addrs: &[String],
    victim: usize,
    what: &'static str,
    isolation: impl Fn(usize, bool) + Sync,
) -> (&'static str, [Duration; 3]) {
    let watcher = &addrs[(victim + 1) % 3];
    let name = format!("node{}", victim + 1);
    let view = || get(watcher, "/admin/cluster", ADMIN_TOKEN);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    std::thread::scope(|s| {
        // The isolation may block (a cut held for a while): watch meanwhile.
        let held = s.spawn(|| isolation(victim, true));
        let mut down = None;
        let moved = loop {
            let v = view();
            let status = v["members"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["node"] == name.as_str()))
                .map(|m| m["status"].clone());
            if down.is_none() && status == Some(json!("down")) {
                down = Some(started.elapsed());
            }
            let in_ring = v["ring"]["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|n| n == name.as_str()));
            if down.is_some() && !in_ring {
                break started.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {name} never left the ring: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        held.join().unwrap();
        isolation(victim, false);
        let ended = Instant::now();
        cluster.wait_converged(
            &[0, 1, 2],
            &["node1", "node2", "node3"],
            Duration::from_secs(60),
        );
        let times = [down.unwrap_or(moved), moved, ended.elapsed()];
        println!(
            "soak: {what} of {name}: down on the others after {:?}, its entities taken over \
             after {:?}, cluster whole again {:?} after it ended",
            times[0], times[1], times[2]
        );
        (what, times)
    })
}
