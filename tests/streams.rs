//! Live streams through a real node: WebSocket and SSE, seq continuity, REST agreement.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, WsClient, assert_continuity, read_sse};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const FAST_FEED: &str = "[feed]\ntrades_per_sec = 50\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_trades_and_1s_candles_have_no_gaps_and_match_rest() {
    let node = Node::start("ws-streams", FAST_FEED);
    let mut ws = WsClient::connect(&node.ws_url()).await;
    let r = ws
        .request(
            "subscribe",
            json!({"channels": ["trades:KRW-BTC", "candles:KRW-BTC:1s"]}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        r["result"]["subscribed"],
        json!(["trades:KRW-BTC", "candles:KRW-BTC:1s"])
    );
    assert!(
        r["result"]["channels"]["trades:KRW-BTC"]["epoch"].is_string(),
        "{r}"
    );
    ws.pump(Duration::from_secs(10)).await;
    assert!(ws.closed.is_none(), "{:?}", ws.closed);
    let trades: Vec<_> = ws
        .events
        .iter()
        .filter(|e| e.ch == "trades:KRW-BTC")
        .cloned()
        .collect();
    let candles: Vec<_> = ws
        .events
        .iter()
        .filter(|e| e.ch == "candles:KRW-BTC:1s")
        .cloned()
        .collect();
    println!(
        "10 s: {} trades, {} candle events",
        trades.len(),
        candles.len()
    );
    assert!(
        trades.len() >= 300,
        "about 50 trades/s for 10 s, got {}",
        trades.len()
    );
    assert_eq!(assert_continuity(&ws.events), 0, "one epoch, no gaps");
    // Trade ids rise by one as well, and every trade is well formed.
    for w in trades.windows(2) {
        let (a, b) = (&w[0].data["trade_id"], &w[1].data["trade_id"]);
        let (a, b): (u64, u64) = (
            a.as_str().unwrap().parse().unwrap(),
            b.as_str().unwrap().parse().unwrap(),
        );
        assert_eq!(b, a + 1);
    }
    for t in &trades {
        for k in ["price", "qty"] {
            assert!(
                t.data[k].as_str().is_some_and(|s| s.parse::<f64>().is_ok()),
                "{k} is a decimal string: {}",
                t.data
            );
        }
        assert!(matches!(t.data["side"].as_str(), Some("buy" | "sell")));
    }
    // Every 1s candle the stream closed is what REST serves for that second.
    let closed: Vec<_> = candles
        .iter()
        .filter(|e| e.data["closed"] == true)
        .collect();
    assert!(
        closed.len() >= 5,
        "about one close per second, got {}",
        closed.len()
    );
    let (status, rest) = node.get("/api/v1/candles/KRW-BTC?interval=1s&limit=1000");
    assert_eq!(status, 200, "{rest}");
    let by_time: HashMap<i64, &serde_json::Value> = rest
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["open_time"].as_i64().unwrap(), c))
        .collect();
    for e in closed {
        let t = e.data["open_time"].as_i64().unwrap();
        assert_eq!(
            by_time.get(&t).copied(),
            Some(&e.data),
            "REST candle at {t} equals the stream's"
        );
    }
    ws.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_minute_on_the_stream_equals_rest() {
    let node = Node::start("ws-minute", FAST_FEED);
    let mut ws = WsClient::connect(&node.ws_url()).await;
    let r = ws
        .request(
            "subscribe",
            json!({"channels": ["candles:KRW-ETH:1m", "ticker:KRW-ETH"]}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    // The first event of each channel is its snapshot (open candle, current ticker).
    let first = ws
        .wait_event(Duration::from_secs(5), |e| e.ch == "ticker:KRW-ETH")
        .await
        .expect("ticker snapshot");
    for k in [
        "last",
        "open_24h",
        "high_24h",
        "low_24h",
        "volume_24h",
        "change_24h",
    ] {
        assert!(first.data[k].is_string(), "{k}: {}", first.data);
    }
    let closed = ws
        .wait_event(Duration::from_secs(75), |e| {
            e.ch == "candles:KRW-ETH:1m" && e.data["closed"] == true
        })
        .await
        .expect("a minute closes within 75 s");
    let open_time = closed.data["open_time"].as_i64().unwrap();
    let (status, rest) = node.get(&format!(
        "/api/v1/candles/KRW-ETH?interval=1m&end={}&limit=1",
        open_time + 1
    ));
    assert_eq!(status, 200);
    assert_eq!(rest.as_array().map(Vec::len), Some(1), "{rest}");
    assert_eq!(
        rest[0], closed.data,
        "REST's closed minute equals the stream's"
    );
    let candles: Vec<_> = ws
        .events
        .iter()
        .filter(|e| e.ch.starts_with("candles"))
        .cloned()
        .collect();
    assert_eq!(assert_continuity(&candles), 0);
    ws.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_the_same_channels_and_resumes_with_last_event_id() {
    let node = Node::start("sse", FAST_FEED);
    let port = node.port;
    let (status, events) = tokio::task::spawn_blocking(move || {
        read_sse(
            port,
            "/sse?channels=trades:KRW-XRP,ticker:KRW-XRP,candles:KRW-XRP:1s",
            None,
            Duration::from_secs(3),
            100_000,
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    let mut per_channel: HashMap<String, Vec<common::Event>> = HashMap::new();
    for e in &events {
        let ev = common::Event::from_json(&e.data).expect("SSE data is the stream event");
        assert_eq!(e.event, ev.ch);
        assert_eq!(e.id, format!("{}:{}", ev.epoch, ev.seq));
        per_channel.entry(ev.ch.clone()).or_default().push(ev);
    }
    for ch in ["trades:KRW-XRP", "ticker:KRW-XRP", "candles:KRW-XRP:1s"] {
        let evs = per_channel
            .get(ch)
            .unwrap_or_else(|| panic!("no {ch} events"));
        if ch != "ticker:KRW-XRP" {
            assert_eq!(assert_continuity(evs), 0, "{ch}");
        }
    }
    // Resume one channel from an id a little in the past: the replay continues exactly.
    let trades = &per_channel["trades:KRW-XRP"];
    assert!(trades.len() > 20, "{}", trades.len());
    let from = &trades[trades.len() - 10];
    let id = format!("{}:{}", from.epoch, from.seq);
    let (status, resumed) = tokio::task::spawn_blocking(move || {
        read_sse(
            port,
            "/sse?channels=trades:KRW-XRP",
            Some(&id),
            Duration::from_secs(2),
            30,
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    let resumed: Vec<_> = resumed
        .iter()
        .filter_map(|e| common::Event::from_json(&e.data))
        .collect();
    assert!(resumed.len() >= 10, "{}", resumed.len());
    assert_eq!(
        resumed[0].seq,
        from.seq + 1,
        "resume starts right after Last-Event-ID"
    );
    assert_eq!(resumed[0].data, trades[trades.len() - 9].data);
    assert_eq!(assert_continuity(&resumed), 0);
    // Bad requests are refused with the documented error.
    let (status, _) = tokio::task::spawn_blocking(move || {
        read_sse(
            port,
            "/sse?channels=nope:X",
            None,
            Duration::from_secs(2),
            1,
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 400);
    let (status, _) = tokio::task::spawn_blocking(move || {
        read_sse(port, "/sse", None, Duration::from_secs(2), 1)
    })
    .await
    .unwrap();
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_since_replays_from_the_entity() {
    let node = Node::start("ws-since", FAST_FEED);
    let mut a = WsClient::connect(&node.ws_url()).await;
    a.request("subscribe", json!({"channels": ["trades:KRW-SOL"]}))
        .await;
    a.pump(Duration::from_secs(2)).await;
    let seen = a.events.clone();
    assert!(seen.len() > 20);
    let cut = &seen[seen.len() - 15];
    let mut b = WsClient::connect(&node.ws_url()).await;
    // Named twice, the channel is subscribed (and replayed) once.
    let r = b
        .request("subscribe", json!({"channels": ["trades:KRW-SOL", "trades:KRW-SOL"], "since": {"trades:KRW-SOL": format!("{}:{}", cut.epoch, cut.seq)}}))
        .await;
    assert_eq!(
        r["result"]["channels"]["trades:KRW-SOL"]["resumed"], true,
        "{r}"
    );
    assert_eq!(r["result"]["subscribed"], json!(["trades:KRW-SOL"]), "{r}");
    b.pump(Duration::from_millis(500)).await;
    assert_eq!(b.events[0].seq, cut.seq + 1);
    assert_eq!(b.events[0].data, seen[seen.len() - 14].data);
    assert_eq!(assert_continuity(&b.events), 0);
    // A position from an unknown epoch cannot be honoured: resumed is false.
    let r = b
        .request(
            "subscribe",
            json!({"channels": ["trades:KRW-SOL"], "since": {"trades:KRW-SOL": "abc:5"}}),
        )
        .await;
    assert_eq!(
        r["result"]["channels"]["trades:KRW-SOL"]["resumed"], false,
        "{r}"
    );
}

/// With `gateway.write_delay_ms` a connection gathers what comes within the delay into one
/// write: every event still arrives, in order, with no gap, on WebSocket and SSE alike, and
/// requests are answered between the batches without holding the events back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_delay_batches_events_and_loses_none() {
    let node = Node::start(
        "write-delay",
        "[feed]\ntrades_per_sec = 50\n[gateway]\nwrite_delay_ms = 1000\n",
    );
    let port = node.port;
    let sse = tokio::task::spawn_blocking(move || {
        read_sse(
            port,
            "/sse?channels=trades:KRW-ETH",
            None,
            Duration::from_secs(4),
            100_000,
        )
    });
    let mut ws = WsClient::connect(&node.ws_url()).await;
    let r = ws
        .request("subscribe", json!({"channels": ["trades:KRW-ETH"]}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    ws.pump(Duration::from_secs(1)).await;
    // Requests far faster than the delay (one each 150 ms or so): each answered, and the
    // events still flow (a request does not restart the delay).
    let before = ws.events.len();
    for _ in 0..20 {
        ws.pump(Duration::from_millis(150)).await;
        let r = ws.request("ping", json!({})).await;
        assert_eq!(r["ok"], true, "answered while events are held back: {r}");
    }
    let during = ws.events.len() - before;
    assert!(
        during >= 40,
        "events kept coming during the requests: {during}"
    );
    ws.pump(Duration::from_secs(1)).await;
    assert!(ws.closed.is_none(), "{:?}", ws.closed);
    let trades: Vec<_> = ws
        .events
        .iter()
        .filter(|e| e.ch == "trades:KRW-ETH")
        .cloned()
        .collect();
    assert!(
        trades.len() >= 80,
        "about 50 trades/s for 4 s: {}",
        trades.len()
    );
    assert_eq!(assert_continuity(&trades), 0, "one epoch, no gaps");

    let (status, events) = sse.await.unwrap();
    assert_eq!(status, 200);
    let events: Vec<common::Event> = events
        .iter()
        .map(|e| common::Event::from_json(&e.data).expect("SSE data is the stream event"))
        .collect();
    assert!(events.len() >= 80, "{}", events.len());
    assert_eq!(assert_continuity(&events), 0, "SSE: one epoch, no gaps");
}
