//! Network partitions between hosts (docs/DESIGN.md "Partitions"): nodes in network
//! namespaces sharing one PostgreSQL store, links between them cut with blackhole routes
//! while clients trade and stream on every side, through the protocol only.
//!
//! - One node of three cut off for 20 s: it stands down (`serving: false`, `/readyz` 503,
//!   orders `unavailable`); the two others take its entities over once and serve every
//!   order; each stream changes epoch at most once per move of its entity; every
//!   acknowledged order is stored, money is conserved, and the healed cluster converges.
//! - A link between two nodes down past the heartbeat timeout, back before the settling
//!   time (its sessions kept, or reset): no ring changes, no stream changes epoch, every
//!   stream published across it goes on.
//! - Two nodes losing each other while a third hears both: the higher-named stands aside,
//!   the other two serve one ring, and only its entities move.
//! - Four nodes split 2 + 2: exactly one side (the one with `node1`) serves.
//! - One node of three cut off by a rejecting firewall, which refuses every connection as
//!   if the processes were gone: it stands down, and the others serve.
//! - Such a firewall on one link only: the higher-named end stands aside, as with a silent
//!   link, and the other two serve one ring.
//! - A node cut off from the store alone stands down and routes its clients to the others,
//!   who take its entities; it serves again when the store is back.
//!
//! Needs root, `ip`, `nft` and a PostgreSQL server (`BOURSE_TEST_POSTGRES_URL`); without them it
//! prints SKIPPED, unless `BOURSE_REQUIRE_NETNS` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::net::Net;
use common::{ADMIN_TOKEN, Cluster, Node, WsClient, eventually, now_ms, totals};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The traded markets are exchanges made by the tests' traders alone (no simulated
/// participants), so their money is conserved among themselves; the others follow the
/// simulator's walk.
const FEED: &str = "[feed]\ntrades_per_sec = 5\n[participants]\nenabled = false\n[trading]\nvenue = \"mirror\"\n\
[[symbols]]\nsymbol = \"KRW-BTC\"\ntick_size = \"1000\"\nlot_size = \"0.0001\"\ninitial_price = \"140000000\"\nvenue = \"exchange\"\n\
[[symbols]]\nsymbol = \"KRW-ETH\"\ntick_size = \"1000\"\nlot_size = \"0.0001\"\ninitial_price = \"5000000\"\nvenue = \"exchange\"\n\
[[symbols]]\nsymbol = \"KRW-XRP\"\ntick_size = \"1\"\nlot_size = \"0.01\"\ninitial_price = \"3000\"\n\
[[symbols]]\nsymbol = \"KRW-SOL\"\ntick_size = \"100\"\nlot_size = \"0.001\"\ninitial_price = \"250000\"\n\
[[symbols]]\nsymbol = \"KRW-DOGE\"\ntick_size = \"0.1\"\nlot_size = \"1\"\ninitial_price = \"300\"\n\
[[symbols]]\nsymbol = \"KRW-ADA\"\ntick_size = \"1\"\nlot_size = \"0.1\"\ninitial_price = \"1000\"\n\
[[symbols]]\nsymbol = \"KRW-AVAX\"\ntick_size = \"10\"\nlot_size = \"0.01\"\ninitial_price = \"40000\"\n\
[[symbols]]\nsymbol = \"KRW-LINK\"\ntick_size = \"10\"\nlot_size = \"0.01\"\ninitial_price = \"25000\"\n";
const SYMBOLS: [&str; 8] = [
    "KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE", "KRW-ADA", "KRW-AVAX", "KRW-LINK",
];
/// What the traders trade: symbol, price, quantity (one fill a pair).
const ORDERS: [(&str, &str, &str); 2] = [
    ("KRW-BTC", "140000000", "0.001"),
    ("KRW-ETH", "5000000", "0.01"),
];
const CUT: Duration = Duration::from_secs(20);

/// One cluster at a time: two at once on two cores would starve their heartbeats.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The namespaces, the store and the cluster on them, or `None` (SKIPPED) without them.
async fn cluster_on_netns(
    name: &str,
    n: usize,
    settings: &[(&str, &str)],
) -> Option<(Net, bourse_storage::contract::ScratchDatabase, Cluster)> {
    let admin = bourse_storage::contract::postgres_server(name)?;
    let net = Net::create(n);
    if !net.namespaces {
        println!("SKIPPED {name}: cutting links needs network namespaces");
        return None;
    }
    let db = bourse_storage::contract::ScratchDatabase::create(&admin, name).await;
    let mut env = vec![
        ("BOURSE_STORAGE__BACKEND".to_string(), "postgres".into()),
        (
            "BOURSE_STORAGE__URL".to_string(),
            db.url.replace("127.0.0.1", &net.store_addr),
        ),
    ];
    env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let cluster = Cluster::start_on_hosts(name, net.hosts.clone(), FEED, env);
    let names: Vec<String> = (1..=n).map(|i| format!("node{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let all: Vec<usize> = (0..n).collect();
    cluster.wait_converged(&all, &names, Duration::from_secs(60));
    Some((net, db, cluster))
}

fn view(node: &Node) -> Value {
    node.api("GET", "/admin/cluster", None, Some(ADMIN_TOKEN)).1
}

/// `node`'s entry among an `/admin/cluster` view's members.
fn member<'a>(v: &'a Value, node: &str) -> Option<&'a Value> {
    v["members"].as_array()?.iter().find(|m| m["node"] == node)
}

/// Asserts for `dur` that no ring flips while a cut lasts: each of `serving` serves over
/// `members`, each of `aside` serves nothing.
fn assert_holds(dur: Duration, serving: &[&Node], members: &[&str], aside: &[&Node]) {
    let held = Instant::now();
    while held.elapsed() < dur {
        for n in serving {
            let v = view(n);
            assert!(v["serving"] == true && ring(&v) == members, "{v}");
        }
        for n in aside {
            let v = view(n);
            assert!(
                v["serving"] == false && ring(&v).is_empty(),
                "serves behind the cut: {v}"
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A small buy any trader can afford.
fn small_buy() -> Value {
    json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit", "price": "140000000", "qty": "0.001"})
}

fn ring(v: &Value) -> Vec<String> {
    v["ring"]["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls until `f` holds, for at most `secs`; returns how long it took.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    eventually(secs, what, || f().then_some(()));
    started.elapsed()
}

/// One order as its client saw it: when it was first sent, whether that first attempt was
/// acknowledged, and the acknowledgement (retried with the same `client_order_id` on
/// `503` until one came).
struct Placed {
    sent: Instant,
    first_ok: bool,
    ack: Value,
}

fn place(node: &Node, token: &str, body: &Value) -> Placed {
    let sent = Instant::now();
    let mut first_ok = true;
    loop {
        let (status, v) = node.api("POST", "/api/v1/orders", Some(body), Some(token));
        match status {
            200 | 201 => {
                assert_ne!(v["status"], "rejected", "{v}");
                return Placed {
                    sent,
                    first_ok,
                    ack: v,
                };
            }
            503 => {
                assert_eq!(v["error"]["code"], "unavailable", "{v}");
                first_ok = false;
                assert!(
                    sent.elapsed() < Duration::from_secs(90),
                    "never acknowledged: {body}\n{}",
                    node.log()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            _ => panic!("place {body}: {status} {v}"),
        }
    }
}

/// Pairs of crossing orders through the two (trader, node) pairs, which swap sides every
/// round (so neither runs out of money), until `stop`; every one acknowledged.
fn trade(
    tag: &str,
    first: (&Node, &str),
    second: (&Node, &str),
    stop: &AtomicBool,
) -> Vec<(String, Placed)> {
    let mut placed = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let ((sell_via, seller), (buy_via, buyer)) = if i % 4 == 0 {
            (first, second)
        } else {
            (second, first)
        };
        for (symbol, price, qty) in ORDERS {
            i += 1;
            let order = |side: &str| {
                json!({"symbol": symbol, "side": side, "type": "limit", "price": price,
                       "qty": qty, "client_order_id": format!("{tag}-{side}-{i}")})
            };
            placed.push((seller.to_string(), place(sell_via, seller, &order("sell"))));
            placed.push((buyer.to_string(), place(buy_via, buyer, &order("buy"))));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    placed
}

/// Sets its flag when dropped: a test failing inside a thread scope still stops the traders
/// it started (the scope waits for them), so it ends instead of trading for ever.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A WebSocket client on `node` subscribed to every symbol's trades and the traded books,
/// pumped on its own task until `stop`.
async fn watch(node: &Node, stop: std::sync::Arc<AtomicBool>) -> tokio::task::JoinHandle<WsClient> {
    let mut ws = WsClient::connect(&node.ws_url()).await;
    let mut channels: Vec<String> = SYMBOLS.iter().map(|s| format!("trades:{s}")).collect();
    channels.extend(ORDERS.iter().map(|(s, _, _)| format!("book:{s}")));
    let r = ws.request("subscribe", json!({"channels": channels})).await;
    assert!(r.get("error").is_none(), "{r}");
    tokio::spawn(async move {
        // A closed socket pumps without waiting: stop then, or a failing test would spin
        // here instead of ending.
        while !stop.load(Ordering::Relaxed) && ws.closed.is_none() {
            ws.pump(Duration::from_millis(200)).await;
        }
        ws
    })
}

/// Epoch changes per channel (and no gap inside an epoch).
fn epoch_changes(ws: &WsClient) -> BTreeMap<String, usize> {
    let mut by_channel: HashMap<&str, Vec<common::Event>> = HashMap::new();
    for e in &ws.events {
        by_channel.entry(&e.ch).or_default().push(e.clone());
    }
    by_channel
        .into_iter()
        .map(|(ch, events)| (ch.to_string(), common::assert_continuity(&events)))
        .collect()
}

/// The node owning each watched stream's entity.
fn owners(cluster: &Cluster) -> BTreeMap<String, usize> {
    let symbols = SYMBOLS
        .iter()
        .map(|s| (format!("trades:{s}"), cluster.owner(0, "symbol", s)));
    let books = ORDERS
        .iter()
        .map(|(s, _, _)| (format!("book:{s}"), cluster.owner(0, "book", s)));
    symbols.chain(books).collect()
}

/// What every whole-system partition test checks at the end, through the protocol:
/// streams without a gap inside an epoch and at most `moves(channel)` epoch changes each,
/// every trade a client saw stored as seen, every acknowledged order stored once and no
/// other, and money conserved.
fn assert_consistent(
    a: &Node,
    clients: &[WsClient],
    placed: &[&Vec<(String, Placed)>],
    tokens: &[&str],
    granted: &BTreeMap<String, i128>,
    moves: impl Fn(&str) -> usize,
    cut_ms: i64,
) {
    // Streams: no gap inside an epoch; at most one epoch change per move of the entity.
    for ws in clients {
        for (ch, changes) in epoch_changes(ws) {
            let moves = moves(&ch);
            let epochs: Vec<(String, u64, i64)> = ws.events.iter().filter(|e| e.ch == ch).fold(
                Vec::new(),
                |mut out: Vec<(String, u64, i64)>, e| {
                    if out.last().is_none_or(|l| l.0 != e.epoch) {
                        out.push((e.epoch.clone(), e.seq, e.ts - cut_ms));
                    }
                    out
                },
            );
            assert!(
                changes <= moves,
                "{ch}: {changes} epoch changes for {moves} moves of its entity; \
                 (epoch, first seq, ms after the cut): {epochs:?}"
            );
        }
        assert!(
            ws.events.len() > 100,
            "the stream carried events: {}",
            ws.events.len()
        );
    }
    // Every trade a client saw is stored as seen.
    for ws in clients {
        for s in ["KRW-BTC", "KRW-ETH"] {
            let (_, stored) = a.get(&format!("/api/v1/trades/{s}?limit=1000"));
            let stored: HashMap<String, Value> = stored
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t["trade_id"].to_string(), t.clone()))
                .collect();
            for e in ws.events.iter().filter(|e| e.ch == format!("trades:{s}")) {
                let id = e.data["trade_id"].to_string();
                let Some(t) = stored.get(&id) else {
                    // Older than the newest 1000: not checked.
                    continue;
                };
                for field in ["price", "qty", "side"] {
                    assert_eq!(
                        t[field], e.data[field],
                        "{s} trade {id}: stored {t}, seen {}",
                        e.data
                    );
                }
            }
        }
    }
    // Every acknowledged order is stored, once, and no other.
    for &token in tokens {
        let acked: BTreeSet<String> = placed
            .iter()
            .flat_map(|p| p.iter())
            .filter(|(t, _)| t == token)
            .map(|(_, p)| p.ack["order_id"].as_str().unwrap().to_string())
            .collect();
        let (_, stored) = a.api("GET", "/api/v1/orders?limit=1000", None, Some(token));
        let stored: BTreeSet<String> = stored
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["order_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(stored, acked, "stored orders are the acknowledged ones");
    }
    // Money is conserved.
    let after_totals = totals(a, tokens);
    assert_eq!(
        &after_totals, granted,
        "available + held per asset is unchanged"
    );
}

/// Every node of `cluster` still runs: a partition must kill none.
fn assert_all_alive(cluster: &mut Cluster) {
    for n in &mut cluster.nodes {
        assert!(n.alive(), "a node died:\n{}", n.log());
    }
}

/// The members an `/admin/cluster` view says should stand aside.
fn left_out(v: &Value) -> Vec<String> {
    v["left_out"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_stands_down_and_the_majority_serves_everything() {
    let _serial = SERIAL.lock().await;
    let Some((net, db, mut cluster)) = cluster_on_netns("partition3", 3, &[]).await else {
        return;
    };
    let names = ["node1", "node2", "node3"];
    // Who owns what before: the cut node's entities move twice (away and back), the
    // others' never.
    let owner_before = owners(&cluster);

    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (_, m_sell) = a.register("p3_major_seller");
    let (_, m_buy) = b.register("p3_major_buyer");
    let (_, c_sell) = c.register("p3_minor_seller");
    let (_, c_buy) = c.register("p3_minor_buyer");
    let tokens = [
        m_sell.as_str(),
        m_buy.as_str(),
        c_sell.as_str(),
        c_buy.as_str(),
    ];
    let granted = totals(a, &tokens);

    let stop_watch = std::sync::Arc::new(AtomicBool::new(false));
    let watchers = [
        watch(a, stop_watch.clone()).await,
        watch(b, stop_watch.clone()).await,
    ];
    let stop_trading = AtomicBool::new(false);
    let (majority, minority, cut_at, cut_ms, detected, healed_in) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop_trading);
        let majority = s.spawn(|| trade("maj", (a, &m_sell), (b, &m_buy), &stop_trading));
        let minority = s.spawn(|| trade("min", (c, &c_sell), (c, &c_buy), &stop_trading));
        std::thread::sleep(Duration::from_secs(3));

        net.cut(2, 0);
        net.cut(2, 1);
        let cut_at = Instant::now();
        let cut_ms = now_ms();
        // The majority drops node3 from its ring (after the timeout and the settling
        // time); node3 stands down.
        let dropped = wait_for(30, "node1 and node2 drop node3", || {
            [a, b].iter().all(|n| ring(&view(n)) == ["node1", "node2"])
        });
        let detected = Instant::now();
        let stood_down = wait_for(30, "node3 stands down", || view(c)["serving"] == false);
        println!(
            "partition: majority ring without node3 {dropped:?}, node3 stood down {stood_down:?} after the cut"
        );
        let v = view(c);
        assert!(
            ring(&v).is_empty(),
            "a node that stands down owns nothing: {v}"
        );
        assert_eq!(c.get("/readyz").0, 503, "node3 is not ready while cut off");
        let (status, refused) = c.api(
            "POST",
            "/api/v1/orders",
            Some(&json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit",
                         "price": "140000000", "qty": "0.001"})),
            Some(&c_buy),
        );
        assert_eq!(status, 503, "{refused}");
        assert_eq!(refused["error"]["code"], "unavailable", "{refused}");
        assert_eq!(view(a)["serving"], true);
        assert_eq!(a.get("/readyz").0, 200);

        std::thread::sleep(CUT.saturating_sub(cut_at.elapsed()));
        net.heal(2, 0);
        net.heal(2, 1);
        let healed_in = cluster.wait_converged(&[0, 1, 2], &names, Duration::from_secs(60));
        assert!(
            cluster
                .views(&[0, 1, 2])
                .iter()
                .all(|v| v["serving"] == true)
        );
        println!(
            "partition: healed cluster converged {healed_in:?} after the links came back ({} ms after the cut)",
            now_ms() - cut_ms
        );
        // Trading goes on on both sides for a while after the heal.
        std::thread::sleep(Duration::from_secs(4));
        stop_trading.store(true, Ordering::Relaxed);
        (
            majority.join().unwrap(),
            minority.join().unwrap(),
            cut_at,
            cut_ms,
            detected,
            healed_in,
        )
    });
    stop_watch.store(true, Ordering::Relaxed);
    let mut clients = Vec::new();
    for w in watchers {
        clients.push(w.await.unwrap());
    }

    // After detection every order on the majority was acknowledged at its first attempt.
    let after: Vec<&Placed> = majority
        .iter()
        .map(|(_, p)| p)
        .filter(|p| p.sent >= detected)
        .collect();
    let refused: Vec<&Value> = after
        .iter()
        .filter(|p| !p.first_ok)
        .map(|p| &p.ack)
        .collect();
    assert!(
        after.len() > 20,
        "the majority traded during the cut: {}",
        after.len()
    );
    assert!(
        refused.is_empty(),
        "majority orders refused after detection: {refused:?}"
    );
    let during = |p: &Placed| p.sent >= cut_at && p.sent < cut_at + CUT;
    let minority_first_ok = minority
        .iter()
        .filter(|(_, p)| during(p) && p.first_ok)
        .count();
    println!(
        "partition: majority {} orders ({} sent after detection, all acknowledged at once); \
         minority {} orders, {} acknowledged at the first attempt while cut off",
        majority.len(),
        after.len(),
        minority.len(),
        minority_first_ok
    );

    assert_consistent(
        a,
        &clients,
        &[&majority, &minority],
        &tokens,
        &granted,
        |ch| if owner_before[ch] == 2 { 2 } else { 0 },
        cut_ms,
    );
    println!(
        "partition: converged {healed_in:?} after healing; {} + {} stream events; money conserved",
        clients[0].events.len(),
        clients[1].events.len()
    );
    assert_all_alive(&mut cluster);
    drop(cluster);
    drop(db);
    drop(net);
}

/// Two nodes of three lose each other (the node1-node3 link cut) while node2 still hears
/// both: node3, the higher-named, stands aside; node1 and node2 serve one ring without it
/// and every order after that is acknowledged at once; nothing flips while the link stays
/// cut; the healed cluster converges with node3 serving again, and only node3's entities
/// moved (away and back, once each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_nodes_that_lose_each_other_one_stands_aside_and_the_rest_serve_one_ring() {
    let _serial = SERIAL.lock().await;
    let Some((net, db, mut cluster)) = cluster_on_netns("partition_link", 3, &[]).await else {
        return;
    };
    let names = ["node1", "node2", "node3"];
    let owner_before = owners(&cluster);
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (_, seller) = a.register("pl_seller");
    let (_, buyer) = b.register("pl_buyer");
    let tokens = [seller.as_str(), buyer.as_str()];
    let granted = totals(a, &tokens);
    let stop_watch = std::sync::Arc::new(AtomicBool::new(false));
    let watchers = [
        watch(a, stop_watch.clone()).await,
        watch(b, stop_watch.clone()).await,
    ];
    let stop_trading = AtomicBool::new(false);
    let (placed, cut_ms, detected) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop_trading);
        let trading = s.spawn(|| trade("pl", (a, &seller), (b, &buyer), &stop_trading));
        std::thread::sleep(Duration::from_secs(3));

        // node1 and node3 lose each other; node2 still hears both.
        net.cut(0, 2);
        let cut_ms = now_ms();
        let took = wait_for(
            30,
            "node3 stands aside and the others serve without it",
            || {
                let v3 = view(c);
                v3["serving"] == false
                    && left_out(&v3) == ["node3"]
                    && [a, b].iter().all(|n| {
                        let v = view(n);
                        ring(&v) == ["node1", "node2"]
                            && v["serving"] == true
                            && left_out(&v) == ["node3"]
                    })
            },
        );
        let detected = Instant::now();
        println!("link cut: node3 aside, node1 and node2 on one ring {took:?} after the cut");
        c.assert_logged("does not hear members that members it hears do hear");
        assert_eq!(left_out(&view(c)), ["node3"]);
        assert_eq!(c.get("/readyz").0, 503, "node3 is not ready while aside");
        let v = view(b);
        assert_eq!(left_out(&v), ["node3"], "{v}");
        let m3 = member(&v, "node3").unwrap();
        assert_eq!(
            (&m3["status"], &m3["serving"]),
            (&json!("up"), &json!(false)),
            "node2 still hears node3, which stands aside: {v}"
        );
        let (_, metrics) = b.api("GET", "/metrics", None, Some(ADMIN_TOKEN));
        let metrics = metrics.as_str().unwrap_or_default().to_string();
        assert_eq!(
            common::metric(&metrics, "bourse_cluster_left_out"),
            Some(1.0),
            "{metrics}"
        );
        // It holds: no ring flips back and forth while the link stays cut.
        assert_holds(Duration::from_secs(6), &[a, b], &["node1", "node2"], &[c]);

        net.heal(0, 2);
        let healed_in = cluster.wait_converged(&[0, 1, 2], &names, Duration::from_secs(60));
        println!("link cut: converged {healed_in:?} after the link came back");
        wait_for(10, "every node serves and leaves no one out", || {
            cluster
                .views(&[0, 1, 2])
                .iter()
                .all(|v| v["serving"] == true && left_out(v).is_empty())
        });
        std::thread::sleep(Duration::from_secs(3));
        stop_trading.store(true, Ordering::Relaxed);
        (trading.join().unwrap(), cut_ms, detected)
    });
    stop_watch.store(true, Ordering::Relaxed);
    let mut clients = Vec::new();
    for w in watchers {
        clients.push(w.await.unwrap());
    }
    let refused: Vec<&Value> = placed
        .iter()
        .map(|(_, p)| p)
        .filter(|p| p.sent >= detected && !p.first_ok)
        .map(|p| &p.ack)
        .collect();
    assert!(
        refused.is_empty(),
        "orders refused once node3 stood aside: {refused:?}"
    );
    // node3's entities move away and back; the others' never.
    assert_consistent(
        a,
        &clients,
        &[&placed],
        &tokens,
        &granted,
        |ch| if owner_before[ch] == 2 { 2 } else { 0 },
        cut_ms,
    );
    println!(
        "link cut: {} orders; {} + {} stream events; money conserved",
        placed.len(),
        clients[0].events.len(),
        clients[1].events.len()
    );
    assert_all_alive(&mut cluster);
    drop(cluster);
    drop(db);
    drop(net);
}

/// A link down longer than the heartbeat timeout but back before the settling time ends
/// (between two of three nodes; the third hears both): the two mark each other `down` and
/// hear each other again, and nothing else happens: every ring keeps all three, no stream
/// changes epoch. (Before, each dropped the other once the blip's view settled and took it
/// back once it had settled again, so their entities moved twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_blip_shorter_than_the_settling_time_moves_nothing() {
    link_blip("partition_blip", false).await;
}

/// The same blip, with the sessions between the two reset while they are `down` to each
/// other (a middlebox dropping the flow): they are made again after the heal, and the
/// streams published across them repair without a ring move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_blip_that_resets_its_sessions_moves_nothing_and_streams_go_on() {
    link_blip("partition_blip_reset", true).await;
}

async fn link_blip(name: &str, reset: bool) {
    let _serial = SERIAL.lock().await;
    // A settling time well past TCP's retransmission and the dialer's retry after the heal
    // (a few seconds), so the link is back before it runs out.
    let settings = [("BOURSE_CLUSTER__STABLE_AFTER_MS", "8000")];
    let Some((net, db, mut cluster)) = cluster_on_netns(name, 3, &settings).await else {
        return;
    };
    let names = ["node1", "node2", "node3"];
    // The blipped link joins the node publishing KRW-XRP (j) and another (i); the third
    // (k) hears both. Watched on i and k: the streams j publishes (of the markets the
    // simulator trades: the others trade only when a test trades).
    let j = cluster.owner(0, "symbol", "KRW-XRP");
    let i = if j == 0 { 1 } else { 0 };
    let k = 3 - i - j;
    let across: Vec<String> = SYMBOLS
        .iter()
        .filter(|s| ORDERS.iter().all(|(traded, _, _)| traded != *s))
        .filter(|s| cluster.owner(0, "symbol", s) == j)
        .map(|s| format!("trades:{s}"))
        .collect();
    let nodes = &cluster.nodes;
    let stop_watch = std::sync::Arc::new(AtomicBool::new(false));
    let watchers = [
        watch(&nodes[i], stop_watch.clone()).await,
        watch(&nodes[k], stop_watch.clone()).await,
    ];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (saw_down, rings, healed_ms) = tokio::task::block_in_place(|| {
        net.cut(i, j);
        let cut_at = Instant::now();
        let (mut saw_down, mut rings) = ([false, false], BTreeSet::new());
        // Past the heartbeat timeout (2 s, checked every 500 ms), short of the settling time.
        let heal_at = Duration::from_millis(2_800);
        let mut healed_ms = None;
        while cut_at.elapsed() < Duration::from_secs(16) {
            if healed_ms.is_none() && cut_at.elapsed() >= heal_at {
                if reset {
                    net.reset(i, j);
                }
                net.heal(i, j);
                healed_ms = Some(now_ms());
            }
            for (seen, (n, other)) in [(i, j), (j, i)].into_iter().enumerate() {
                let v = view(&nodes[n]);
                saw_down[seen] |= member(&v, names[other]).is_some_and(|m| m["status"] == "down");
                rings.insert(ring(&v));
                assert_eq!(v["serving"], true, "{v}");
            }
            rings.insert(ring(&view(&nodes[k])));
            std::thread::sleep(Duration::from_millis(100));
        }
        (saw_down, rings, healed_ms.unwrap())
    });
    assert_eq!(
        saw_down,
        [true, true],
        "{} and {} each marked the other down during the blip (else it tested nothing)",
        names[i],
        names[j]
    );
    assert_eq!(
        rings,
        BTreeSet::from([names.map(String::from).to_vec()]),
        "every ring kept all three throughout"
    );
    stop_watch.store(true, Ordering::Relaxed);
    for (w, watcher) in watchers.into_iter().zip([i, k]) {
        let ws = w.await.unwrap();
        for (ch, changes) in epoch_changes(&ws) {
            assert_eq!(changes, 0, "{ch} changed epoch during a blip");
        }
        // Every stream j publishes went on after the heal, on both watchers.
        for ch in &across {
            let last = ws.events.iter().filter(|e| &e.ch == ch).map(|e| e.ts).max();
            assert!(
                last.is_some_and(|ts| ts > healed_ms + 5_000),
                "{ch} (published on {}) on {}: last event at {last:?}, healed at {healed_ms}",
                names[j],
                names[watcher]
            );
        }
    }
    cluster.wait_converged(&[0, 1, 2], &names, Duration::from_secs(30));
    assert_all_alive(&mut cluster);
    drop(cluster);
    drop(db);
    drop(net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_even_split_leaves_exactly_one_side_serving() {
    let _serial = SERIAL.lock().await;
    let Some((net, db, cluster)) = cluster_on_netns("partition22", 4, &[]).await else {
        return;
    };
    let names = ["node1", "node2", "node3", "node4"];
    let (_, token) = cluster.nodes[0].register("p22_trader");
    for (i, j) in [(0, 2), (0, 3), (1, 2), (1, 3)] {
        net.cut(i, j);
    }
    let cut_at = Instant::now();
    wait_for(30, "node3 and node4 stand down", || {
        [2, 3]
            .iter()
            .all(|&i| view(&cluster.nodes[i])["serving"] == false)
    });
    wait_for(30, "node1 and node2 serve over the two of them", || {
        [0, 1]
            .iter()
            .all(|&i| ring(&view(&cluster.nodes[i])) == ["node1", "node2"])
    });
    println!(
        "split 2+2: one side serving alone {:?} after the cut",
        cut_at.elapsed()
    );
    // It stays that way: one side serves, the other refuses.
    std::thread::sleep(Duration::from_secs(5));
    for (i, name) in names.iter().enumerate() {
        let v = view(&cluster.nodes[i]);
        assert_eq!(v["serving"], i < 2, "{name}: {v}");
    }
    let order = json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit",
                       "price": "140000000", "qty": "0.001"});
    for (i, name) in names.iter().enumerate() {
        let (status, v) =
            cluster.nodes[i].api("POST", "/api/v1/orders", Some(&order), Some(&token));
        if i < 2 {
            assert!(matches!(status, 200 | 201), "{name}: {status} {v}");
        } else {
            assert_eq!(
                (status, &v["error"]["code"]),
                (503, &json!("unavailable")),
                "{name}: {v}"
            );
        }
    }
    // A node restarted on the side that stands down hears only node3, which stands down:
    // with no agreed membership of its own to judge by, it stays joining and serves nothing.
    let mut cluster = cluster;
    cluster.nodes[3].restart();
    std::thread::sleep(Duration::from_secs(6));
    let v = view(&cluster.nodes[3]);
    let status = member(&v, "node4").map(|m| &m["status"]);
    assert_eq!(status, Some(&json!("joining")), "restarted node4: {v}");
    let (status, v) = cluster.nodes[3].api("POST", "/api/v1/orders", Some(&order), Some(&token));
    assert_eq!(status, 503, "restarted node4: {v}");
    cluster.nodes[3].assert_logged("every member heard stands down");
    for (i, j) in [(0, 2), (0, 3), (1, 2), (1, 3)] {
        net.heal(i, j);
    }
    let healed_in = cluster.wait_converged(&[0, 1, 2, 3], &names, Duration::from_secs(60));
    println!("split 2+2: converged {healed_in:?} after healing");
    let (_, orders) = cluster.nodes[3].api("GET", "/api/v1/orders", None, Some(&token));
    assert_eq!(orders.as_array().map(Vec::len), Some(2), "{orders}");
    drop(cluster);
    drop(db);
    drop(net);
}

/// A rejecting firewall (TCP resets) cuts node1 off: each side sees the other's port
/// refuse connections, as if its process were gone, but the store still sees every node
/// beat. node1, the lowest-named, loses its peers one refusal at a time and must not serve
/// on what is left; node2 and node3 serve everything, and the healed cluster converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_by_a_rejecting_firewall_stands_down() {
    let _serial = SERIAL.lock().await;
    let Some((net, db, cluster)) = cluster_on_netns("partition_reject", 3, &[]).await else {
        return;
    };
    let names = ["node1", "node2", "node3"];
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (_, token) = b.register("pr_trader");
    net.reject(0, 1);
    net.reject(0, 2);
    let cut_at = Instant::now();
    wait_for(30, "node1 stands down", || view(a)["serving"] == false);
    wait_for(30, "node2 and node3 serve over the two of them", || {
        cluster
            .views(&[1, 2])
            .iter()
            .all(|v| v["serving"] == true && ring(v) == ["node2", "node3"])
    });
    println!(
        "reject: node1 stood down and the others serve {:?} after the cut",
        cut_at.elapsed()
    );
    // Past the time the store's beats take to call a member gone, and more: node1's
    // peers beat on, so it never serves, nor do the others take it back.
    assert_holds(Duration::from_secs(10), &[b, c], &["node2", "node3"], &[a]);
    a.assert_logged("this node would stand down without it");
    let order = small_buy();
    let (status, v) = a.api("POST", "/api/v1/orders", Some(&order), Some(&token));
    assert_eq!(
        (status, &v["error"]["code"]),
        (503, &json!("unavailable")),
        "{v}"
    );
    let (status, v) = b.api("POST", "/api/v1/orders", Some(&order), Some(&token));
    assert!(matches!(status, 200 | 201), "{status} {v}");
    net.unreject(0, 1);
    net.unreject(0, 2);
    let healed_in = cluster.wait_converged(&[0, 1, 2], &names, Duration::from_secs(60));
    println!("reject: converged {healed_in:?} after healing");
    drop(cluster);
    drop(db);
    drop(net);
}

/// A rejecting firewall on one link only (node1 and node3 refuse each other; node2 hears
/// both): each of the two sees the other's port refuse, as if its process were gone, yet
/// the store says it beats and node2 still hears it. The cut pair is seen as with a silent
/// link: node3 stands aside, node1 and node2 serve one ring, and it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_firewall_on_one_link_makes_one_end_stand_aside() {
    let _serial = SERIAL.lock().await;
    let Some((net, db, cluster)) = cluster_on_netns("partition_reject_link", 3, &[]).await else {
        return;
    };
    let names = ["node1", "node2", "node3"];
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (_, token) = b.register("prl_trader");
    net.reject(0, 2);
    let took = wait_for(
        30,
        "node3 stands aside and the others serve without it",
        || {
            let v3 = view(c);
            v3["serving"] == false
                && [a, b].iter().all(|n| {
                    let v = view(n);
                    ring(&v) == ["node1", "node2"] && v["serving"] == true
                })
        },
    );
    println!("one-link reject: node3 aside, node1 and node2 on one ring {took:?} after the cut");
    // It holds: no ring flips while the firewall stays.
    assert_holds(Duration::from_secs(6), &[a, b], &["node1", "node2"], &[c]);
    for n in [a, b] {
        let (status, v) = n.api("POST", "/api/v1/orders", Some(&small_buy()), Some(&token));
        assert!(matches!(status, 200 | 201), "{status} {v}");
    }
    net.unreject(0, 2);
    let healed_in = cluster.wait_converged(&[0, 1, 2], &names, Duration::from_secs(60));
    println!("one-link reject: converged {healed_in:?} after healing");
    drop(cluster);
    drop(db);
    drop(net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_its_store_stands_down_and_routes_to_the_others() {
    let _serial = SERIAL.lock().await;
    let Some((net, db, cluster)) = cluster_on_netns("partition_store", 3, &[]).await else {
        return;
    };
    let names = ["node1", "node2", "node3"];
    let c = &cluster.nodes[2];
    let (_, token) = c.register("ps_trader");
    // A book node3 owns, so its orders must move.
    let symbol = SYMBOLS
        .into_iter()
        .find(|s| cluster.owner(0, "book", s) == 2)
        .expect("node3 owns some book");
    let order = |i: usize| {
        json!({"symbol": symbol, "side": "buy", "type": "limit", "price": "1000",
               "qty": "1", "client_order_id": format!("ps-{i}")})
    };
    let before = place(c, &token, &order(0));
    assert!(before.first_ok, "{}", before.ack);

    net.cut_store(2);
    let cut_at = Instant::now();
    wait_for(30, "node3 stands down", || view(c)["serving"] == false);
    wait_for(30, "every ring leaves node3 out", || {
        cluster
            .views(&[0, 1, 2])
            .iter()
            .all(|v| ring(v) == ["node1", "node2"])
    });
    println!(
        "store cut: node3 out of every ring {:?} after losing its store",
        cut_at.elapsed()
    );
    assert_eq!(
        c.get("/readyz").0,
        503,
        "node3 is not ready without its store"
    );
    let v = view(&cluster.nodes[0]);
    let member3 = member(&v, "node3").unwrap();
    assert_eq!(
        (&member3["status"], &member3["serving"]),
        (&json!("up"), &json!(false)),
        "{v}"
    );
    // Its clients are served through the others: the book moved to a node with the store.
    for i in 1..=3 {
        let placed = place(c, &token, &order(i));
        assert!(placed.first_ok, "{}", placed.ack);
    }
    assert_ne!(cluster.owner(0, "book", symbol), 2);

    net.heal_store(2);
    let healed_in = cluster.wait_converged(&[0, 1, 2], &names, Duration::from_secs(60));
    println!("store cut: converged {healed_in:?} after the store came back");
    assert_eq!(cluster.owner(0, "book", symbol), 2, "the book went back");
    let after = place(c, &token, &order(4));
    assert!(after.first_ok, "{}", after.ack);
    let (_, open) = cluster.nodes[0].api(
        "GET",
        &format!("/api/v1/orders?symbol={symbol}&status=open"),
        None,
        Some(&token),
    );
    assert_eq!(
        open.as_array().map(Vec::len),
        Some(5),
        "every acknowledged order rests: {open}"
    );
    drop(cluster);
    drop(db);
    drop(net);
}
