//! Nodes on separate hosts that share nothing but the PostgreSQL store: three `bourse node`
//! processes in three network namespaces (veth pairs on one bridge, an address each), each
//! with its own data directory, all on `storage.backend = "postgres"`. Through the protocol
//! only: trading across nodes, chat history, alerts, and a SIGKILLed node's books and
//! accounts recovered on a survivor with every acknowledged order and money conserved.
//!
//! Needs root and `ip` for the namespaces; without them it runs the same test on loopback
//! addresses (127.0.0.11-13, separate data directories) and prints that it did, unless
//! `BOURSE_REQUIRE_NETNS` is set (`scripts/test` sets it where namespaces work). Needs a
//! PostgreSQL server (`BOURSE_TEST_POSTGRES_URL`, which `scripts/test` sets, reachable on
//! the bridge's address: `scripts/pg-server` listens there).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::net::Net;
use common::{Cluster, Node, eventually, limit, place_acked, totals};
use serde_json::{Value, json};
use std::time::Duration;

const NO_FEED: &str = "[feed]\nkind = \"none\"\n";
const NODES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_on_postgres_trade_chat_alert_and_survive_a_sigkill() {
    let Some(admin) = bourse_storage::contract::postgres_server("multihost") else {
        return;
    };
    let net = Net::create(NODES);
    // Dropped after the cluster (declared before it), passed or panicked.
    let db = bourse_storage::contract::ScratchDatabase::create(&admin, "multihost").await;
    // The nodes reach the server through the bridge, not this machine's loopback.
    let node_url = db.url.replace("127.0.0.1", &net.gateway);
    let env = vec![
        (
            "BOURSE_STORAGE__BACKEND".to_string(),
            "postgres".to_string(),
        ),
        ("BOURSE_STORAGE__URL".to_string(), node_url),
    ];
    let mut cluster = Cluster::start_on_hosts("multihost", net.hosts.clone(), NO_FEED, env);
    let names = ["node1", "node2", "node3"];
    cluster.wait_converged(&[0, 1, 2], &names, Duration::from_secs(30));
    for node in &cluster.nodes {
        assert!(
            !node.dir.join("data").join("bourse.db").exists(),
            "{} keeps no local store",
            node.url("")
        );
    }

    // Trading across hosts: alice on node1 sells, bob on node2 buys.
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (_, alice) = a.register("mh_alice");
    let (_, bob) = b.register("mh_bob");
    let granted = totals(c, &[&alice, &bob]);
    let (alice_granted, bob_granted) = (totals(c, &[&alice]), totals(c, &[&bob]));
    let sell = place_acked(a, &alice, limit("sell", "140000000", "0.3"), "sell-1");
    assert_eq!(sell["status"], "new", "resting: {sell}");
    let buy1 = place_acked(b, &bob, limit("buy", "140000000", "0.1"), "buy-1");
    assert_eq!(buy1["status"], "filled", "{buy1}");

    // An alert made on node3 fires on the next trade and lands in bob's history.
    let (status, rule) = c.api(
        "POST",
        "/api/v1/alerts",
        Some(&json!({"symbol": "KRW-BTC", "condition": "above", "value": "139000000"})),
        Some(&bob),
    );
    assert_eq!(status, 201, "{rule}");
    let buy2 = place_acked(b, &bob, limit("buy", "140000000", "0.1"), "buy-2");
    assert_eq!(buy2["status"], "filled", "{buy2}");
    let fired = eventually(20, "the alert fires", || {
        let (_, h) = a.api("GET", "/api/v1/alerts/history", None, Some(&bob));
        h.as_array().and_then(|h| {
            h.iter()
                .find(|f| f["alert_id"] == rule["alert_id"])
                .cloned()
        })
    });
    assert_eq!(fired["fired_price"], "140000000", "{fired}");

    // Chat on node3, history read on node1.
    let mut said = Vec::new();
    for i in 0..5 {
        let (status, m) = c.api(
            "POST",
            "/api/v1/chat/KRW-BTC/messages",
            Some(&json!({"text": format!("hello from host 3, #{i}")})),
            Some(&alice),
        );
        assert_eq!(status, 201, "{m}");
        said.push(m);
    }
    let history = |node: &Node| -> Vec<Value> {
        let (status, h) = node.get("/api/v1/chat/KRW-BTC/messages?limit=50");
        assert_eq!(status, 200, "{h}");
        let mut h = h.as_array().unwrap().clone();
        h.reverse();
        h
    };
    assert_eq!(history(a), said, "node1 reads what node3 stored");

    // SIGKILL the node that owns the book; the survivors recover it from PostgreSQL.
    let dead = cluster.owner(0, "book", "KRW-BTC");
    cluster.nodes[dead].kill9();
    let alive: Vec<usize> = (0..NODES).filter(|i| *i != dead).collect();
    let up: Vec<&str> = alive.iter().map(|i| names[*i]).collect();
    cluster.wait_converged(&alive, &up, Duration::from_secs(30));
    let via = &cluster.nodes[alive[0]];
    let buy3 = place_acked(via, &bob, limit("buy", "140000000", "0.1"), "buy-3");
    assert_eq!(
        buy3["status"], "filled",
        "the resting sell survived its node: {buy3}"
    );
    // Every acknowledged order is there, settled: alice's sell filled by all three buys.
    let settled = eventually(30, "alice's sell settles", || {
        let (_, o) = via.api(
            "GET",
            &format!("/api/v1/orders/{}", sell["order_id"].as_str().unwrap()),
            None,
            Some(&alice),
        );
        (o["filled_qty"] == "0.3").then_some(o)
    });
    assert_eq!(settled["status"], "filled", "{settled}");
    let (_, bobs) = via.api("GET", "/api/v1/orders?limit=100", None, Some(&bob));
    let mut ids: Vec<&str> = bobs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["order_id"].as_str())
        .collect();
    ids.sort_unstable();
    let mut acked: Vec<&str> = [&buy1, &buy2, &buy3]
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    acked.sort_unstable();
    assert_eq!(
        ids, acked,
        "bob's acknowledged orders, all of them, and no other"
    );
    // Money is conserved across the kill: 0.3 BTC moved for 42,000,000 KRW.
    let after = totals(via, &[&alice, &bob]);
    assert_eq!(after, granted, "available + held per asset is unchanged");
    let moved = |granted: &std::collections::BTreeMap<String, i128>, krw: i128, btc: i128| {
        let mut want = granted.clone();
        *want.entry("KRW".into()).or_insert(0) += krw * 100_000_000;
        *want.entry("BTC".into()).or_insert(0) += btc;
        want
    };
    assert_eq!(
        totals(via, &[&alice]),
        moved(&alice_granted, 42_000_000, -30_000_000),
        "alice sold 0.3 BTC for 42,000,000 KRW"
    );
    assert_eq!(
        totals(via, &[&bob]),
        moved(&bob_granted, -42_000_000, 30_000_000),
        "bob bought it"
    );
    assert_eq!(history(via), said, "chat history survives the node");

    drop(cluster);
    drop(db);
    drop(net);
}
