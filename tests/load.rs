//! `bourse load` against a real node, and the gateway's connection limits
//! (`gateway.max_connections`, `gateway.max_connections_per_ip`): a connection over a
//! limit is answered `503 unavailable` with `Retry-After` and closed, one that sends
//! nothing is closed too, and the places come back when connections close.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, Cluster, Node, metric};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `bourse load connections` with `args` against `node` (bounded) and returns its
/// JSON report.
fn load(node: &Node, args: &[&str]) -> Value {
    load_scenario(node, "connections", args)
}

/// Runs `bourse load <scenario>` with `args` against `node` (bounded) and returns its
/// JSON report.
fn load_scenario(node: &Node, scenario: &str, args: &[&str]) -> Value {
    let report = node.dir.join(format!("report-{}.json", fastrand::u32(..)));
    let url = format!("http://127.0.0.1:{}", node.port);
    let mut all = vec!["load", scenario, "--url", &url, "--report"];
    let report_arg = report.to_str().unwrap();
    all.push(report_arg);
    all.extend_from_slice(args);
    common::run_bourse(
        &all,
        &[("BOURSE_ADMIN_TOKEN", ADMIN_TOKEN)],
        &node.dir,
        Duration::from_secs(60),
    );
    serde_json::from_str(&std::fs::read_to_string(&report).expect("the report")).expect("JSON")
}

#[test]
fn load_connections_holds_websocket_and_sse_clients_and_reports_them() {
    let node = Node::start("load-smoke", "[feed]\ntrades_per_sec = 20\n");
    // Two URLs (the same gateway twice): clients are spread over them in turn.
    let url = format!("http://127.0.0.1:{}", node.port);
    let plots = node.dir.join("plots");
    // SSE clients connect at most 4 at a time: a client that kept its place after
    // connecting would stall the rest.
    for (transport, in_flight) in [("ws", "0"), ("sse", "4")] {
        let r = load(
            &node,
            &[
                "--plot",
                plots.join(transport).to_str().unwrap(),
                "--url",
                &url,
                "--clients",
                "60",
                "--rate",
                "0",
                "--hold",
                "2",
                "--transport",
                transport,
                "--in-flight",
                in_flight,
                "--channel",
                "trades:KRW-BTC",
            ],
        );
        assert_eq!(r["in_flight"], in_flight.parse::<u64>().unwrap(), "{r}");
        assert_eq!(r["connected"], 60, "{transport}: {r}");
        assert_eq!(r["failed"], serde_json::json!({}), "{transport}: {r}");
        assert_eq!(r["connect"]["count"], 60, "{transport}: {r}");
        assert_eq!(r["dropped"], 0, "{transport}: {r}");
        // 20 trades/s for 2 s on the channel, to each of 60 clients.
        assert!(
            r["events_received"].as_u64().unwrap() >= 60,
            "{transport}: {r}"
        );
        for name in [
            "connections-over-time.svg",
            "connect-latency-distribution.svg",
        ] {
            let svg = std::fs::read_to_string(plots.join(transport).join(name)).expect(name);
            assert!(svg.contains("<polyline"), "{name}: {svg}");
        }
        for n in r["nodes"].as_array().unwrap() {
            assert_eq!(n["connected"], 30, "{r}");
            assert!(n["bytes_per_connection"].is_number(), "{r}");
            assert!(n["gateway_connections"].as_f64().unwrap() >= 60.0, "{r}");
            assert!(n["rss_after_bytes"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
}

#[test]
fn load_fanout_times_every_delivered_event_and_draws_its_plots() {
    let node = Node::start("load-fanout", "[feed]\ntrades_per_sec = 50\n");
    let plots = node.dir.join("plots");
    let r = load_scenario(
        &node,
        "fanout",
        &[
            "--clients",
            "40",
            "--secs",
            "2",
            "--warmup",
            "1",
            "--baseline",
            "1",
            "--plot",
            plots.to_str().unwrap(),
        ],
    );
    assert_eq!(r["connected"], 40, "{r}");
    assert_eq!(r["dropped"], 0, "{r}");
    // 50 trades/s on the channel, to each of 40 clients, for 2 s.
    let delivered = r["delivered"].as_u64().unwrap();
    assert!(delivered >= 40, "{r}");
    assert_eq!(r["latency"]["count"], delivered, "every event timed: {r}");
    assert!(r["cpu"]["net_seconds"].as_f64().unwrap() >= 0.0, "{r}");
    assert!(r["cpu"]["seconds_per_million"].is_number(), "{r}");
    let seconds = r["seconds"].as_array().unwrap();
    assert_eq!(seconds.len(), 2, "{r}");
    let per_second: u64 = seconds
        .iter()
        .map(|s| s["delivered"].as_u64().unwrap())
        .sum();
    assert!(per_second <= delivered, "{r}");
    for name in [
        "fanout-latency-over-time.svg",
        "fanout-delivered-over-time.svg",
        "fanout-latency-distribution.svg",
    ] {
        let svg = std::fs::read_to_string(plots.join(name)).expect(name);
        assert!(
            svg.contains("<svg") && svg.contains("<polyline"),
            "{name}: {svg}"
        );
    }
}

#[test]
fn load_storm_clients_of_a_killed_node_reconnect_to_the_others_and_resume() {
    let cluster = Cluster::start("load-storm", 3, "[feed]\ntrades_per_sec = 20\n");
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(30),
    );
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("http://127.0.0.1:{}", n.port))
        .collect();
    let pid = cluster.nodes[2].pid().expect("node3 runs").to_string();
    let plots = cluster.nodes[0].dir.join("plots");
    let r = load_scenario(
        &cluster.nodes[0],
        "storm",
        &[
            "--url",
            &urls[1],
            "--url",
            &urls[2],
            "--clients",
            "60",
            "--secs",
            "15",
            "--kill-pid",
            &pid,
            "--kill-after",
            "2",
            "--backoff-cap-ms",
            "1000",
            "--plot",
            plots.to_str().unwrap(),
        ],
    );
    assert_eq!(r["connected"], 60, "{r}");
    assert_eq!(r["killed_pid"].as_u64(), pid.parse().ok(), "{r}");
    // Clients are spread over the three gateways in turn: node3 held 20 of them.
    let dropped = r["dropped"].as_u64().unwrap();
    assert!(dropped >= 20, "{r}");
    assert_eq!(r["resumed"], dropped, "every dropped client resumed: {r}");
    assert!(r["resumed_by_seconds"]["all"].is_number(), "{r}");
    assert_eq!(r["reconnect"]["count"], dropped, "{r}");
    assert!(
        r["untouched_latency_before"]["count"].as_u64().unwrap() > 0,
        "{r}"
    );
    assert!(
        r["untouched_latency_during"]["count"].as_u64().unwrap() > 0,
        "{r}"
    );
    let svg = std::fs::read_to_string(plots.join("storm-connected-over-time.svg")).unwrap();
    assert!(svg.contains("<polyline"), "{svg}");
}

#[test]
fn load_trading_places_orders_in_a_closed_and_an_open_loop() {
    let node = Node::start(
        "load-trading",
        "[feed]\nkind = \"none\"\n[gateway]\nrequests_per_sec = 100000\n",
    );
    for rate in ["0", "40"] {
        let r = load_scenario(
            &node,
            "trading",
            &[
                "--clients",
                "16",
                "--secs",
                "2",
                "--warmup",
                "1",
                "--rate",
                rate,
            ],
        );
        assert_eq!(r["clients"], 16, "{r}");
        let acked = r["acknowledged"].as_u64().unwrap();
        assert!(acked > 0, "rate {rate}: {r}");
        assert_eq!(r["latency"]["count"], acked, "{r}");
        // Not checked on a deployment others may trade on (here: the first run's users).
        assert_eq!(r["conserved"], Value::Null, "rate {rate}: {r}");
        assert_eq!(r["errors"], serde_json::json!({}), "rate {rate}: {r}");
        assert!(r["gateway_cpu_cores"][0].is_number(), "{r}");
        if rate != "0" {
            // An open loop offers about 40 orders/s for 2 s.
            assert!(acked <= 120, "rate {rate}: {r}");
        }
    }
    // A deployment's registration limit is named, not a mystery failure.
    let strict = Node::start_env(
        "load-trading-strict",
        "[feed]\nkind = \"none\"\n",
        vec![("BOURSE_AUTH__REGISTER_PER_IP_PER_MIN".into(), "3".into())],
        true,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_bourse"))
        .args([
            "load",
            "trading",
            "--url",
            &format!("http://127.0.0.1:{}", strict.port),
        ])
        .args(["--clients", "10", "--secs", "1", "--warmup", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.register_per_ip_per_min"), "{err}");
}

#[test]
fn load_chat_delivers_every_message_to_every_member() {
    let node = Node::start("load-chat", "[feed]\nkind = \"none\"\n");
    let r = load_scenario(
        &node,
        "chat",
        &[
            "--members",
            "30",
            "--rate",
            "8",
            "--secs",
            "2",
            "--warmup",
            "1",
            "--room",
            "KRW-ETH",
        ],
    );
    assert_eq!(r["members"], 30, "{r}");
    assert_eq!(r["room"], "KRW-ETH", "{r}");
    let delivered = r["delivered"].as_u64().unwrap();
    // About 8 messages/s for 2 s, each to 30 members.
    assert!(delivered >= 30, "{r}");
    assert_eq!(r["latency"]["count"], delivered, "{r}");
    assert_eq!(r["refused"], 0, "{r}");
}

/// A TCP connection from `from` to the node that performs a WebSocket handshake: the
/// socket, or the refusal's status line, headers and body.
async fn ws_from(from: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let req = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer, not a hang")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    if text.starts_with("HTTP/1.1 101") {
        return Ok(s);
    }
    // A refusal: read the rest until the server closes.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.map(|_| rest)
    })
    .await
    .expect("the refused connection is closed");
    Err(text + &String::from_utf8_lossy(&closed.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_refuse_with_503_and_give_places_back() {
    let node = Node::start(
        "load-limits",
        "[feed]\nkind = \"none\"\n[gateway]\nmax_connections = 150\nmax_connections_per_ip = 100\n",
    );
    let port = node.port;

    // One address: 100 connections, then 503 (the per-IP limit).
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(ws_from("127.0.0.1", port).await.expect("under the limits"));
    }
    let refused = ws_from("127.0.0.1", port)
        .await
        .expect_err("over the per-IP limit");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let lower = refused.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1"), "{refused}");
    assert!(lower.contains("connection: close"), "{refused}");
    assert!(refused.contains("\"code\":\"unavailable\""), "{refused}");
    assert!(refused.contains("per-ip limit"), "{refused}");

    // Other addresses still get in, up to the global limit.
    for _ in 0..50 {
        held.push(
            ws_from("127.0.0.2", port)
                .await
                .expect("under the global limit"),
        );
    }
    let refused = ws_from("127.0.0.3", port)
        .await
        .expect_err("over the global limit");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("global limit"), "{refused}");

    // A refused connection that sends nothing is closed, not left hanging.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("a silent refused connection is closed")
        .unwrap_or(0);
    let said = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(n == 0 || !said.starts_with("HTTP/1.1 101"), "{said}");

    // The open connections are still served: a WebSocket ping is answered.
    let mut ws = held.pop().unwrap();
    ws.write_all(&[0x89, 0x80, 1, 2, 3, 4]).await.unwrap(); // masked empty ping
    let mut pong = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), ws.read_exact(&mut pong))
        .await
        .expect("a pong")
        .unwrap();
    assert_eq!(pong, [0x8a, 0x00]);

    // Closing gives the places back; the counters say what happened.
    drop(ws);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, text) = node.get("/metrics");
        let text = text.as_str().unwrap_or_default().to_string();
        if status == 200
            && metric(&text, "bourse_gateway_tcp_connections").is_some_and(|n| n <= 2.0)
        {
            break text;
        }
        assert!(Instant::now() < deadline, "places not given back: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let refused = |limit| {
        metric(
            &text,
            &format!("bourse_gateway_connections_refused_total{{limit=\"{limit}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert!(refused("per_ip") >= 1.0, "{text}");
    assert!(refused("global") >= 2.0, "{text}");
    assert!(ws_from("127.0.0.1", port).await.is_ok());

    // The load tool reports refusals by kind (and, with its own address full, that it
    // could not read the node's figures).
    let r = load(&node, &["--clients", "120", "--rate", "0", "--hold", "1"]);
    assert_eq!(r["connected"], 100, "{r}");
    assert_eq!(r["failed"]["http_503"], 20, "{r}");
    assert!(
        r["nodes"][0]["error"].as_str().unwrap().contains("503"),
        "{r}"
    );
}
