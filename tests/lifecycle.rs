//! Node lifecycle through the real binary: graceful stop, slow consumers, config errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, WsClient, free_port, temp_dir};
use futures_util::SinkExt;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_flushes_and_exits_0() {
    let mut node = Node::start("sigterm", "[feed]\ntrades_per_sec = 40\n");
    let mut ws = WsClient::connect(&node.ws_url()).await;
    ws.request("subscribe", json!({"channels": ["trades:KRW-BTC"]}))
        .await;
    ws.pump(Duration::from_secs(2)).await;
    let (_, before) = node.get("/api/v1/candles/KRW-BTC?interval=1s&limit=1000");
    let closed_before: Vec<_> = before
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["closed"] == true)
        .cloned()
        .collect();
    let status = tokio::task::block_in_place(|| node.terminate()).expect("exits within 20 s");
    assert!(status.success(), "exit status {status}: {}", node.log());
    ws.pump(Duration::from_secs(2)).await;
    assert_eq!(ws.close_code(), Some(1001), "{:?}", ws.closed);
    // What was closed before the stop is there after a restart.
    node.restart();
    let (_, after) = node.get("/api/v1/candles/KRW-BTC?interval=1s&limit=1000");
    for c in &closed_before {
        assert!(
            after.as_array().unwrap().contains(c),
            "{c} kept across a graceful stop"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_for_trades_is_closed_with_slow_consumer() {
    // Mirror markets: the simulator's 2,000 trades a second go straight to the ticks.
    let node = Node::start(
        "slow",
        "[feed]\ntrades_per_sec = 2000\n[trading]\nvenue = \"mirror\"\n[gateway]\noutbound_queue = 16\n",
    );
    let mut ws = WsClient::connect(&node.ws_url()).await;
    let symbols = ["BTC", "ETH", "XRP", "SOL", "DOGE", "ADA", "AVAX", "LINK"];
    let channels: Vec<String> = symbols.iter().map(|s| format!("trades:KRW-{s}")).collect();
    let r = ws.request("subscribe", json!({"channels": channels})).await;
    assert_eq!(r["ok"], true, "{r}");
    // Read nothing while the socket buffers fill, then read until the server closes.
    tokio::time::sleep(Duration::from_secs(8)).await;
    ws.pump(Duration::from_secs(60)).await;
    assert_eq!(
        ws.closed,
        Some(common::Closed::Code(1008, "slow_consumer".into())),
        "events read: {}",
        ws.events.len()
    );
    // Everything delivered before the close was in order.
    assert_eq!(common::assert_continuity(&ws.events), 0);
    // A fresh client is fine.
    let mut fresh = WsClient::connect(&node.ws_url()).await;
    assert_eq!(fresh.request("ping", json!({})).await["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_is_dropped() {
    let node = Node::start("deaf", "[feed]\nkind = \"none\"\n");
    let open = |node: &Node| {
        let (_, text) = node.get("/metrics");
        common::metric(
            text.as_str().unwrap_or_default(),
            "bourse_gateway_connections",
        )
    };
    // A small receive window: the server's answers back up after a few kilobytes.
    let mut ws = common::ws_small_window(&node).await;
    // Requests (a kilobyte each, every one answered: ok, refused or rate-limited) until the
    // server, stuck writing answers nobody reads, stops taking them.
    let pad = "x".repeat(1000);
    let request = tokio_tungstenite::tungstenite::Message::text(
        json!({"id": 1, "op": "ping", "pad": pad}).to_string(),
    );
    let mut sent = 0;
    while sent < 200_000 {
        match tokio::time::timeout(Duration::from_secs(5), ws.send(request.clone())).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(e)) => panic!("the server closed after {sent} requests: {e}"),
            Err(_) => break,
        }
    }
    assert!(
        sent < 200_000,
        "the server read {sent} requests whose answers nobody read"
    );
    assert_eq!(open(&node), Some(1.0));
    // The server gives up on a client that accepts nothing for its write timeout (10 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while open(&node) != Some(0.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "a client that reads nothing is still connected after 40 s: {}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    node.assert_logged("client accepted nothing");
    // The node serves others.
    let mut fresh = WsClient::connect(&node.ws_url()).await;
    assert_eq!(fresh.request("ping", json!({})).await["ok"], true);
}

fn bourse(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bourse"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run bourse");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_errors_name_the_key_and_the_reason() {
    let dir = temp_dir("config");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[gateway]\nlisten = \"127.0.0.1:1\"\nbogus = 3\n").unwrap();
    let (code, _, err) = bourse(&["node", "--config", file.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("gateway.bogus") && err.contains("unknown field"),
        "{err}"
    );

    std::fs::write(
        &file,
        "[[symbols]]\nsymbol = \"KRW-BTC\"\ntick_size = \"50\"\nlot_size = \"0.001\"\ninitial_price = \"1000\"\n",
    )
    .unwrap();
    let (code, _, err) = bourse(&["node", "--config", file.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("symbols[0].tick_size") && err.contains("power of ten"),
        "{err}"
    );

    // A port in use is a config error on gateway.listen.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    std::fs::write(
        &file,
        format!(
            "[node]\ndata_dir = \"{}\"\n[gateway]\nlisten = \"{addr}\"\n[auth]\nsecret = \"a-real-secret-0123456789\"\n",
            dir.join("d").display()
        ),
    )
    .unwrap();
    let (code, _, err) = bourse(&["node", "--config", file.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("gateway.listen") && err.contains("in use"),
        "{err}"
    );

    // A node refuses the example token secret (only `demo` may run without one).
    std::fs::write(&file, "[feed]\nkind = \"none\"\n").unwrap();
    let (code, _, err) = bourse(&["node", "--config", file.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("auth.secret"), "{err}");

    // Environment overrides are validated the same way.
    let (code, _, err) = bourse(&["config"], &[("BOURSE_FEED__KIND", "kafka")]);
    assert_ne!(code, 0);
    assert!(err.contains("feed.kind"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_prints_the_effective_configuration() {
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let (code, out, err) = bourse(&["config"], &[("BOURSE_GATEWAY__LISTEN", &listen)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("listen = \"{listen}\"")), "{out}");
    assert!(
        out.contains("[[symbols]]") && out.contains("KRW-BTC"),
        "{out}"
    );
    let (code, out, _) = bourse(&["--help"], &[]);
    assert_eq!(code, 0);
    for word in ["node", "demo", "config"] {
        assert!(out.contains(word), "{out}");
    }
}
