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

use common::{Cluster, Host, Node, limit, place_acked};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

const NO_FEED: &str = "[feed]\nkind = \"none\"\n";
const NODES: usize = 3;

/// The test's network: a bridge in this namespace and one namespace per node, removed
/// again on drop (deleting a namespace deletes its end of the veth, and so the pair).
struct Net {
    tag: String,
    /// The bridge's address: where the nodes reach this machine (and its PostgreSQL).
    gateway: String,
    hosts: Vec<Host>,
    namespaces: bool,
    /// Namespaces asked for (teardown removes every one, made or half made).
    count: usize,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Namespaces when this process may make them, loopback addresses otherwise.
    fn create(n: usize) -> Net {
        let pid = std::process::id();
        let subnet = format!("10.199.{}", 20 + pid % 200);
        let mut net = Net {
            tag: format!("bo{pid}"),
            gateway: format!("{subnet}.1"),
            hosts: Vec::new(),
            namespaces: true,
            count: n,
        };
        match net.build(n, &subnet) {
            Ok(()) => {
                println!(
                    "multihost: {n} network namespaces on bridge {}br ({subnet}.0/24)",
                    net.tag
                );
            }
            Err(e) => {
                net.teardown();
                assert!(
                    std::env::var("BOURSE_REQUIRE_NETNS").is_err(),
                    "BOURSE_REQUIRE_NETNS is set but the namespaces could not be made: {e}"
                );
                println!(
                    "multihost: FALLBACK to loopback addresses, separate data directories (no namespaces: {e})"
                );
                net.namespaces = false;
                net.gateway = "127.0.0.1".into();
                net.hosts = (1..=n)
                    .map(|i| Host {
                        addr: format!("127.0.0.{}", 10 + i),
                        netns: None,
                    })
                    .collect();
            }
        }
        net
    }

    fn build(&mut self, n: usize, subnet: &str) -> Result<(), String> {
        let bridge = format!("{}br", self.tag);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.gateway),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 1..=n {
            let ns = format!("{}n{i}", self.tag);
            let (outside, inside) = (format!("{}h{i}", self.tag), format!("{}g{i}", self.tag));
            let addr = format!("{subnet}.{}", 10 + i);
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["link", "set", &outside, "master", &bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inside,
            ])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            self.hosts.push(Host {
                addr,
                netns: Some(ns),
            });
        }
        Ok(())
    }

    fn teardown(&self) {
        for i in 1..=self.count {
            let _ = ip(&["netns", "delete", &format!("{}n{i}", self.tag)]);
            let _ = ip(&["link", "delete", &format!("{}h{i}", self.tag)]);
        }
        let _ = ip(&["link", "delete", &format!("{}br", self.tag)]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if self.namespaces {
            self.teardown();
        }
    }
}

/// Units of a decimal string at 8 places (balances here have at most 8).
fn units(s: &str) -> i128 {
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    format!("{i}{f:0<8}").parse().unwrap()
}

/// Per asset, available + held over `tokens`' accounts, in units of 1e-8.
fn totals(node: &Node, tokens: &[&str]) -> std::collections::BTreeMap<String, i128> {
    let mut out = std::collections::BTreeMap::new();
    for t in tokens {
        let (status, v) = node.api("GET", "/api/v1/account", None, Some(t));
        assert_eq!(status, 200, "{v}");
        for (asset, b) in v["balances"].as_object().unwrap() {
            *out.entry(asset.clone()).or_insert(0) +=
                units(b["available"].as_str().unwrap()) + units(b["held"].as_str().unwrap());
        }
    }
    out
}

/// Polls `f` until it returns `Some`, for at most `secs`.
fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

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
