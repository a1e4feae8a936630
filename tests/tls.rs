//! Mutual TLS between nodes (`[cluster.tls]`), with certificates from
//! `scripts/cluster-certs` as docs/OPERATIONS.md shows: a TLS cluster forms (nodes seeded
//! with node1 only meet each other through the members' contact lists) and streams across
//! nodes; a node without TLS and a node whose certificate another CA signed are refused,
//! with the cookie right, and the log and `/metrics` say so. A missing certificate file
//! stops a node at start-up, naming the key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{COOKIE, Cluster, Host, Node, WsClient, certs, temp_dir, tls_env};
use serde_json::json;
use std::time::Duration;

const FEED: &str = "[feed]\ntrades_per_sec = 20\n";
const SYMBOLS: [&str; 8] = ["BTC", "ETH", "XRP", "SOL", "DOGE", "ADA", "AVAX", "LINK"];

/// A node outside the cluster that dials node1 with the right cookie.
fn outsider(cluster: &Cluster, name: &str, node: &str, tls: Vec<(String, String)>) -> Node {
    let mut env = vec![
        ("BOURSE_NODE__NAME".to_string(), node.to_string()),
        (
            "BOURSE_CLUSTER__LISTEN".into(),
            format!("127.0.0.1:{}", common::free_port()),
        ),
        (
            "BOURSE_CLUSTER__SEEDS".into(),
            format!("[\"{}\"]", cluster.cluster_addr(0)),
        ),
        ("BOURSE_CLUSTER__COOKIE".into(), COOKIE.into()),
    ];
    env.extend(tls);
    Node::start_on(Host::local(), name, FEED, env, false)
}

fn members(cluster: &Cluster, i: usize) -> Vec<String> {
    cluster.views(&[i])[0]["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["node"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn refused_tls(node: &Node) -> u64 {
    let (_, body) = node.get("/metrics");
    let text = body.as_str().map(String::from).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("bourse_cluster_peers_refused_total{reason=\"tls\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tls refusal counter in /metrics: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_forms_and_streams_and_refuses_plain_and_foreign_nodes() {
    let ours = temp_dir("tls-certs");
    certs(
        &ours,
        &["node1=127.0.0.1", "node2=127.0.0.1", "node3=127.0.0.1"],
    );
    let cluster = Cluster::start_tls("tls", 3, FEED, &ours);
    let took = cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(20),
    );
    println!("TLS cluster converged in {took:?}");

    // Every symbol streams on node3, including those node1 and node2 own.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let channels: Vec<String> = SYMBOLS.iter().map(|s| format!("trades:KRW-{s}")).collect();
    let mut ws = WsClient::connect(&cluster.nodes[2].ws_url()).await;
    let r = ws.request("subscribe", json!({"channels": channels})).await;
    assert_eq!(r["ok"], true, "{r}");
    ws.pump(Duration::from_secs(4)).await;
    for ch in &channels {
        let n = ws.events.iter().filter(|e| &e.ch == ch).count();
        assert!(n >= 10, "{ch}: {n} trades on node3");
    }
    common::assert_continuity(&ws.events);
    let owners: std::collections::BTreeSet<usize> = SYMBOLS
        .iter()
        .map(|s| cluster.owner(2, "symbol", &format!("KRW-{s}")))
        .collect();
    assert!(
        owners.len() > 1,
        "symbols live on several nodes: {owners:?}"
    );

    // The right cookie without a certificate: refused.
    let before = refused_tls(&cluster.nodes[0]);
    let mut plain = outsider(&cluster, "tls-plain", "node9", Vec::new());
    common::eventually(15, "node1 refuses the plain node", || {
        (refused_tls(&cluster.nodes[0]) > before).then_some(())
    });
    cluster.nodes[0].assert_logged("cluster peer refused: TLS handshake failed");

    // A certificate from another CA, trusting ours (so it is node1 that must say no):
    // refused too, and it learns nothing of the cluster.
    let foreign = temp_dir("tls-foreign");
    certs(&foreign, &["node8=127.0.0.1"]);
    let before = refused_tls(&cluster.nodes[0]);
    let mut env = tls_env(&foreign, "node8");
    env.retain(|(k, _)| !k.ends_with("__CA"));
    env.extend(
        tls_env(&ours, "node8")
            .into_iter()
            .filter(|(k, _)| k.ends_with("__CA")),
    );
    let mut intruder = outsider(&cluster, "tls-foreign", "node8", env);
    common::eventually(15, "node1 refuses the foreign certificate", || {
        (refused_tls(&cluster.nodes[0]) > before).then_some(())
    });
    let log = cluster.nodes[0].full_log();
    assert!(
        log.lines()
            .any(|l| l.contains("cluster peer refused") && l.contains("invalid peer certificate")),
        "node1 names the reason: {log}"
    );
    // Its own log says it cannot join.
    common::eventually(15, "the foreign node logs the failed handshake", || {
        intruder
            .full_log()
            .contains("the cluster peer refused this node")
            .then_some(())
    });

    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..3 {
        assert_eq!(
            members(&cluster, i),
            ["node1", "node2", "node3"],
            "node{} sees only the cluster",
            i + 1
        );
    }
    for (outside, name) in [(&mut plain, "node9"), (&mut intruder, "node8")] {
        assert!(outside.alive(), "{name} keeps running: {}", outside.log());
        let (status, _) = outside.get("/readyz");
        assert_eq!(status, 503, "{name} never joins");
    }
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(5),
    );
    let _ = std::fs::remove_dir_all(ours);
    let _ = std::fs::remove_dir_all(foreign);
}

#[test]
fn a_missing_certificate_stops_the_node_and_names_the_key() {
    let missing = temp_dir("tls-missing");
    let mut env = tls_env(&missing, "node1");
    env.push((
        "BOURSE_CLUSTER__LISTEN".into(),
        format!("127.0.0.1:{}", common::free_port()),
    ));
    let mut node = Node::start_on(Host::local(), "tls-missing-node", "", env, false);
    let status = node.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| !s.success()),
        "exits with an error: {}",
        node.log()
    );
    node.assert_logged("cluster.tls.cert");
    let _ = std::fs::remove_dir_all(missing);
}
