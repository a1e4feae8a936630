//! Bad input never crashes a node: each gets the docs/PROTOCOL.md error (or a close for an
//! oversize frame), the connection stays usable, and other clients are unaffected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, WsClient};
use serde_json::{Value, json};
use std::time::Duration;

fn error_code(v: &Value) -> Option<&str> {
    v["error"]["code"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_bad_input_gets_errors_and_the_node_stays_up() {
    let mut node = Node::start(
        "ws-bad",
        "[feed]\ntrades_per_sec = 20\n[gateway]\nmax_channels = 12\n",
    );
    // A bystander subscribed throughout.
    let mut bystander = WsClient::connect(&node.ws_url()).await;
    bystander
        .request("subscribe", json!({"channels": ["trades:KRW-BTC"]}))
        .await;

    let mut ws = WsClient::connect(&node.ws_url()).await;
    // Invalid JSON and a missing id: answered with id null.
    ws.send_raw("{not json".into()).await;
    let r = ws.wait_response("null", Duration::from_secs(5)).await;
    assert_eq!(
        (r["ok"].as_bool(), error_code(&r)),
        (Some(false), Some("bad_request")),
        "{r}"
    );
    ws.send_raw(json!({"op": "ping"}).to_string()).await;
    let r = ws.wait_response("null", Duration::from_secs(5)).await;
    assert_eq!(error_code(&r), Some("bad_request"));
    assert!(
        r["error"]["message"].as_str().unwrap().contains("id"),
        "{r}"
    );
    // An id of the wrong type, a non-object, a binary frame.
    ws.send_raw(json!({"id": [1], "op": "ping"}).to_string())
        .await;
    assert_eq!(
        error_code(&ws.wait_response("null", Duration::from_secs(5)).await),
        Some("bad_request")
    );
    ws.send_raw("[1,2,3]".into()).await;
    assert_eq!(
        error_code(&ws.wait_response("null", Duration::from_secs(5)).await),
        Some("bad_request")
    );
    // Unknown op, unknown fields, unknown and malformed channels, empty channel list.
    for (op, fields, needle) in [
        ("fly", json!({}), "unknown op"),
        ("ping", json!({"extra": 1}), "unknown field"),
        (
            "subscribe",
            json!({"channels": ["tikcer:KRW-BTC"]}),
            "unknown channel",
        ),
        (
            "subscribe",
            json!({"channels": ["ticker:krw-btc"]}),
            "malformed symbol",
        ),
        (
            "subscribe",
            json!({"channels": ["ticker:KRW-NOPE"]}),
            "unknown symbol",
        ),
        (
            "subscribe",
            json!({"channels": ["candles:KRW-BTC:2m"]}),
            "unknown interval",
        ),
        ("subscribe", json!({"channels": []}), "empty"),
        (
            "subscribe",
            json!({"channels": "ticker:KRW-BTC"}),
            "subscribe",
        ),
        (
            "subscribe",
            json!({"channels": ["ticker:KRW-BTC"], "since": {"ticker:KRW-BTC": "x"}}),
            "since",
        ),
        ("order.place", json!({}), "missing field `symbol`"),
        ("alert.create", json!({}), "missing field `symbol`"),
    ] {
        let r = ws.request(op, fields.clone()).await;
        assert_eq!(error_code(&r), Some("bad_request"), "{op} {fields}: {r}");
        let msg = r["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{op} {fields}: '{msg}' mentions '{needle}'"
        );
    }
    // A bad channel in a list subscribes nothing.
    let r = ws
        .request("subscribe", json!({"channels": ["ticker:KRW-BTC", "nope"]}))
        .await;
    assert_eq!(error_code(&r), Some("bad_request"));
    let r = ws
        .request("unsubscribe", json!({"channels": ["ticker:KRW-BTC"]}))
        .await;
    assert_eq!(r["result"]["unsubscribed"], json!([]), "{r}");
    // The channel limit from config (12 here): 10 + 2 fit, a 13th does not.
    let candles: Vec<String> = ["1s", "1m", "3m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"]
        .iter()
        .map(|i| format!("candles:KRW-ETH:{i}"))
        .collect();
    assert_eq!(
        ws.request("subscribe", json!({"channels": candles})).await["ok"],
        true
    );
    let r = ws
        .request(
            "subscribe",
            json!({"channels": ["ticker:KRW-ETH", "trades:KRW-ETH", "ticker:KRW-XRP"]}),
        )
        .await;
    assert_eq!(error_code(&r), Some("bad_request"), "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 12"),
        "{r}"
    );
    let r = ws
        .request(
            "subscribe",
            json!({"channels": ["ticker:KRW-ETH", "trades:KRW-ETH"]}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    // Re-subscribing a held channel does not count twice.
    assert_eq!(
        ws.request("subscribe", json!({"channels": ["ticker:KRW-ETH"]}))
            .await["ok"],
        true
    );
    let r = ws
        .request("unsubscribe", json!({"channels": candles}))
        .await;
    assert_eq!(
        r["result"]["unsubscribed"].as_array().map(Vec::len),
        Some(10)
    );
    // The connection is still usable.
    let r = ws.request("ping", json!({})).await;
    assert!(r["result"]["pong"].is_i64(), "{r}");

    // 200 requests in one second: one response each; past 50/s they are rate_limited.
    let mut flood = WsClient::connect(&node.ws_url()).await;
    for i in 0..200 {
        flood
            .send_raw(json!({"id": 1000 + i, "op": "ping"}).to_string())
            .await;
    }
    let (mut ok, mut limited) = (0, 0);
    for i in 0..200 {
        let r = flood
            .wait_response(&(1000 + i).to_string(), Duration::from_secs(10))
            .await;
        match (r["ok"].as_bool(), error_code(&r)) {
            (Some(true), _) => ok += 1,
            (Some(false), Some("rate_limited")) => limited += 1,
            other => panic!("unexpected {other:?}: {r}"),
        }
    }
    println!("flood: {ok} ok, {limited} rate_limited");
    // 50 pass at once (the burst); a slow sender earns a few more as the bucket refills.
    assert_eq!(ok + limited, 200);
    assert!(ok >= 50 && limited >= 50, "{ok} ok, {limited} limited");
    // A second answer to one of the last requests would come after the last.
    flood.pump(Duration::from_millis(300)).await;
    assert!(
        flood.responses.is_empty(),
        "exactly one response per request"
    );

    // A 1 MiB frame closes that connection (1009); nothing else is affected.
    let mut big = WsClient::connect(&node.ws_url()).await;
    let written = big
        .try_send_raw(format!(
            "{{\"id\":1,\"op\":\"ping\",\"pad\":\"{}\"}}",
            "x".repeat(1 << 20)
        ))
        .await;
    big.pump(Duration::from_secs(5)).await;
    assert!(big.closed.is_some(), "oversize frame closes the connection");
    // The server reads (and drops) the rest of the frame behind its Close, so the write
    // completes and the Close (1009) arrives, not a reset.
    assert!(
        written,
        "the oversize frame's write was cut off: {:?}",
        big.closed
    );
    assert_eq!(big.close_code(), Some(1009), "{:?}", big.closed);
    assert!(
        big.responses.is_empty(),
        "an oversize frame is never answered"
    );

    assert!(node.alive(), "node still up: {}", node.log());
    let r = ws.request("ping", json!({})).await;
    assert_eq!(r["ok"], true);
    let before = bystander.events.len();
    bystander.pump(Duration::from_secs(1)).await;
    assert!(
        bystander.events.len() > before,
        "the bystander still streams"
    );
    assert!(bystander.closed.is_none());
    assert_eq!(common::assert_continuity(&bystander.events), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_bad_input_gets_documented_errors() {
    let node = Node::start("rest-bad", "[feed]\ntrades_per_sec = 20\n");
    // The error answers this test saw, by code: each is counted in /metrics.
    let mut answered: std::collections::BTreeMap<&str, f64> = Default::default();
    for (path, status, code) in [
        ("/api/v1/ticker/KRW-NOPE", 404, "not_found"),
        ("/api/v1/ticker/krw-btc", 400, "bad_request"),
        ("/api/v1/ticker/KRW-BTC?x=1", 400, "bad_request"),
        ("/api/v1/trades/KRW-BTC?limit=0", 400, "bad_request"),
        ("/api/v1/trades/KRW-BTC?limit=1001", 400, "bad_request"),
        ("/api/v1/trades/KRW-BTC?limit=abc", 400, "bad_request"),
        ("/api/v1/candles/KRW-BTC?interval=2m", 400, "bad_request"),
        ("/api/v1/candles/KRW-BTC?end=yesterday", 400, "bad_request"),
        ("/api/v1/candles/KRW-BTC?limit=5000", 400, "bad_request"),
        ("/api/v1/nothing", 404, "not_found"),
        ("/admin/cluster", 403, "forbidden"),
        ("/admin/nothing", 404, "not_found"),
    ] {
        let (s, body) = node.get(path);
        assert_eq!(
            (s, error_code(&body)),
            (status, Some(code)),
            "{path}: {body}"
        );
        *answered.entry(code).or_default() += 1.0;
    }
    let (s, body) = node.post(
        "/admin/chaos/kill",
        &json!({"kind": "symbol", "key": "KRW-BTC"}),
        &[],
    );
    assert_eq!((s, error_code(&body)), (403, Some("forbidden")), "{body}");
    *answered.entry("forbidden").or_default() += 1.0;
    let auth = format!("Bearer {}", common::ADMIN_TOKEN);
    let (s, body) = node.post(
        "/admin/chaos/kill",
        &json!({"kind": "symbol"}),
        &[("authorization", &auth)],
    );
    assert_eq!((s, error_code(&body)), (400, Some("bad_request")), "{body}");
    *answered.entry("bad_request").or_default() += 1.0;
    // The routing diagnostic validates its input; a standalone node has no remote keys.
    for (req, status, code) in [
        (
            json!({"mode": "send", "target": "local", "count": 0}),
            400,
            "bad_request",
        ),
        (
            json!({"mode": "fly", "target": "local", "count": 10}),
            400,
            "bad_request",
        ),
        (
            json!({"mode": "send", "target": "local", "count": 10, "x": 1}),
            400,
            "bad_request",
        ),
        (
            json!({"mode": "ask", "target": "remote", "count": 10}),
            503,
            "unavailable",
        ),
    ] {
        let (s, body) = node.post("/admin/bench/routing", &req, &[("authorization", &auth)]);
        assert_eq!(
            (s, error_code(&body)),
            (status, Some(code)),
            "{req}: {body}"
        );
        *answered.entry(code).or_default() += 1.0;
    }
    let (s, body) = node.post(
        "/admin/bench/routing",
        &json!({"mode": "send", "target": "local", "count": 1000}),
        &[("authorization", &auth)],
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["messages"], 1000);
    assert!(body["per_second"].as_f64().unwrap() > 0.0);
    // Good requests still work.
    let (s, body) = node.get("/api/v1/symbols");
    assert_eq!(s, 200);
    assert_eq!(body.as_array().map(Vec::len), Some(8));
    let (s, body) = node.get("/api/v1/trades/KRW-BTC?limit=5");
    assert_eq!(s, 200);
    assert!(body.as_array().is_some_and(|a| a.len() <= 5));
    let (s, _) = node.get("/healthz");
    assert_eq!(s, 200);
    let (_, text) = node.get("/metrics");
    let text = text.as_str().unwrap_or_default();
    for (code, n) in answered {
        let sample = format!("bourse_gateway_errors_total{{code=\"{code}\",transport=\"http\"}}");
        let counted = common::metric(text, &sample).unwrap_or(0.0);
        // Readiness polls before the test may have added `unavailable` answers.
        assert!(counted >= n, "{sample}: {counted}, the test saw {n}");
        if code != "unavailable" {
            assert_eq!(counted, n, "{sample}");
        }
    }
}
