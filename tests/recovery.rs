//! Crash recovery through a real node: SIGKILL and restart on the same data directory, and a
//! symbol entity killed by the chaos endpoint while clients are subscribed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, WsClient, assert_continuity};
use serde_json::{Value, json};
use std::time::Duration;

const FEED: &str = "[feed]\ntrades_per_sec = 40\n";

fn closed_candles(node: &Node, symbol: &str, interval: &str) -> Vec<Value> {
    let (status, body) = node.get(&format!(
        "/api/v1/candles/{symbol}?interval={interval}&limit=1000"
    ));
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .expect("array")
        .iter()
        .filter(|c| c["closed"] == true)
        .cloned()
        .collect()
}

fn last_trade_id(node: &Node, symbol: &str) -> u64 {
    let (status, body) = node.get(&format!("/api/v1/trades/{symbol}?limit=1"));
    assert_eq!(status, 200, "{body}");
    body[0]["trade_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a trade")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_keeps_every_closed_candle() {
    let mut node = Node::start("kill9", FEED);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before_1s = closed_candles(&node, "KRW-BTC", "1s");
    let before_ada = closed_candles(&node, "KRW-ADA", "1s");
    let last_id = last_trade_id(&node, "KRW-BTC");
    assert!(before_1s.len() >= 2, "{}", before_1s.len());
    node.kill9();
    node.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_1s = closed_candles(&node, "KRW-BTC", "1s");
    let after_ada = closed_candles(&node, "KRW-ADA", "1s");
    for c in &before_1s {
        assert!(after_1s.contains(c), "closed candle {c} survived the kill");
    }
    for c in &before_ada {
        assert!(after_ada.contains(c), "closed candle {c} survived the kill");
    }
    // Trade ids continue after the restart instead of starting over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(last_trade_id(&node, "KRW-BTC") > last_id);
    println!(
        "kept {} + {} closed 1s candles across kill -9",
        before_1s.len(),
        before_ada.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_symbol_restarts_with_its_candles_and_subscribers_see_a_new_epoch() {
    let node = Node::start("chaos-symbol", FEED);
    let mut ws = WsClient::connect(&node.ws_url()).await;
    let r = ws
        .request("subscribe", json!({"channels": ["trades:KRW-BTC", "candles:KRW-BTC:1s", "candles:KRW-BTC:1m", "ticker:KRW-BTC"]}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    ws.pump(Duration::from_secs(3)).await;
    let epoch_before = ws
        .events
        .last()
        .map(|e| e.epoch.clone())
        .expect("events before the kill");
    let closed_before = closed_candles(&node, "KRW-BTC", "1s");
    let (_, minute_before) = node.get("/api/v1/candles/KRW-BTC?interval=1m&limit=1");
    let (status, body) = node.chaos_kill("symbol", "KRW-BTC");
    assert_eq!(status, 200, "{body}");
    // The subscriber keeps receiving, in a new epoch, with no gap inside either epoch.
    let after = ws
        .wait_event(Duration::from_secs(10), |e| {
            e.ch == "trades:KRW-BTC" && e.epoch != epoch_before
        })
        .await
        .expect("trades continue in a new epoch");
    ws.pump(Duration::from_secs(2)).await;
    assert!(ws.closed.is_none(), "the client stays connected");
    let changes = assert_continuity(&ws.events);
    assert!(changes >= 1, "the restart was announced by an epoch change");
    assert_eq!(
        after.seq, 1,
        "the new epoch starts its trades at seq 1 (replayed from the start)"
    );
    // The restarted entity has the same closed candles, and its open minute kept the trades
    // it had (same open, at least the same volume) when still in the same minute.
    let closed_after = closed_candles(&node, "KRW-BTC", "1s");
    for c in &closed_before {
        assert!(closed_after.contains(c), "closed candle {c} kept");
    }
    let (_, minute_after) = node.get("/api/v1/candles/KRW-BTC?interval=1m&limit=1");
    if minute_before[0]["open_time"] == minute_after[0]["open_time"] {
        assert_eq!(minute_before[0]["open"], minute_after[0]["open"]);
        let vol = |v: &Value| v[0]["volume"].as_str().unwrap().parse::<f64>().unwrap();
        assert!(
            vol(&minute_after) >= vol(&minute_before),
            "{minute_before} -> {minute_after}"
        );
    }
    // Killing something that is not running is a clear not_found.
    let (status, body) = node.chaos_kill("symbol", "KRW-NOPE");
    assert_eq!(status, 404, "{body}");
    let (status, body) = node.chaos_kill("nonsense", "x");
    assert_eq!(status, 404, "{body}");
    // And the admin API refuses a wrong token.
    let (status, body) = node.post(
        "/admin/chaos/kill",
        &json!({"kind": "symbol", "key": "KRW-BTC"}),
        &[("authorization", "Bearer wrong")],
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    ws.close().await;
}
