//! Where prices come from (docs/DESIGN.md "Venues"). In an `exchange` market the book makes
//! the price: the simulator's participants quote and take in it from their own accounts,
//! every tick is a fill of the book, and money is conserved with them included, across a
//! SIGKILL of the node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, Node, WsClient, eventually, units};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// The participants' accounts: a maker and a taker for each of the eight default markets.
const PARTICIPANTS: std::ops::Range<u64> = 0xFFFF_0000..0xFFFF_0010;
/// How many grants a participant starts with.
const GRANT_FACTOR: i128 = 10_000;

/// Levels on each side of `symbol`'s book.
fn depth(node: &Node, symbol: &str) -> (Vec<Value>, Vec<Value>) {
    let (status, book) = node.get(&format!("/api/v1/book/{symbol}?depth=20"));
    assert_eq!(status, 200, "{book}");
    let side = |s: &str| book[s].as_array().cloned().unwrap_or_default();
    (side("bids"), side("asks"))
}

/// A participant's balances through the admin API, once its account is active.
fn participant_balances(node: &Node, user: u64) -> Option<Value> {
    let (status, v) = node.api(
        "GET",
        &format!("/admin/entities/account/{user}"),
        None,
        Some(ADMIN_TOKEN),
    );
    assert_eq!(status, 200, "{v}");
    v["state"].get("balances").cloned()
}

/// Adds `balances` (`{"KRW":{"available","held"}}`) into `sums`, `times` over.
fn add(sums: &mut BTreeMap<String, i128>, balances: &Value, times: i128) {
    for (asset, b) in balances.as_object().unwrap() {
        *sums.entry(asset.clone()).or_default() +=
            times * (units(b["available"].as_str().unwrap()) + units(b["held"].as_str().unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_books_are_quoted_every_tick_is_a_fill_and_money_is_conserved() {
    let mut node = Node::start("venue-exchange", "[feed]\ntrades_per_sec = 20\n");
    let (_, symbols) = node.get("/api/v1/symbols");
    let venues: Vec<&Value> = symbols
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["venue"])
        .collect();
    assert!(
        venues.len() == 8 && venues.iter().all(|v| *v == "exchange"),
        "{symbols}"
    );
    // The market maker quotes five levels a side around the fair price.
    let (bids, asks) = eventually(20, "a quoted KRW-BTC book", || {
        let (bids, asks) = depth(&node, "KRW-BTC");
        (bids.len() >= 5 && asks.len() >= 5).then_some((bids, asks))
    });
    let price = |l: &Value| units(l[0].as_str().unwrap());
    assert!(price(&bids[0]) < price(&asks[0]), "{bids:?} {asks:?}");
    for s in ["KRW-ETH", "KRW-DOGE", "KRW-LINK"] {
        eventually(20, "every market quoted", || {
            let (b, a) = depth(&node, s);
            (!b.is_empty() && !a.is_empty()).then_some(())
        });
    }

    // The takers trade at the feed's rate; a user's market buy takes the maker's ask, and
    // its fill is a tick like theirs.
    let (_, token) = node.register("venue_alice");
    let mut ws = WsClient::connect(&node.ws_url()).await;
    let r = ws
        .request("subscribe", json!({"channels": ["trades:KRW-BTC"]}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let (status, order) = node.api(
        "POST",
        "/api/v1/orders",
        Some(&json!({"symbol": "KRW-BTC", "side": "buy", "type": "market", "qty": "0.0001"})),
        Some(&token),
    );
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "filled", "{order}");
    let paid = order["avg_price"].as_str().unwrap().to_string();
    ws.pump(Duration::from_secs(3)).await;
    let ticks: Vec<&Value> = ws
        .events
        .iter()
        .filter(|e| e.ch == "trades:KRW-BTC")
        .map(|e| &e.data)
        .collect();
    assert!(ticks.len() >= 30, "{} ticks in 3 s at 20/s", ticks.len());
    assert!(
        ticks
            .iter()
            .any(|t| units(t["price"].as_str().unwrap()) == units(&paid)
                && t["qty"] == "0.0001"
                && t["side"] == "buy"),
        "the user's fill at {paid} is not among the ticks"
    );
    // A resting user order joins the maker's levels.
    let (status, resting) = node.api(
        "POST",
        "/api/v1/orders",
        Some(&json!({"symbol": "KRW-BTC", "side": "sell", "type": "limit", "price": "200000000", "qty": "0.0002"})),
        Some(&token),
    );
    assert_eq!(status, 201, "{resting}");
    let (_, asks) = depth(&node, "KRW-BTC");
    assert!(
        asks.iter().any(|l| l[0] == "200000000" && l[1] == "0.0002"),
        "{asks:?}"
    );

    // SIGKILL mid-trading; back up with the takers idle, every account settles from the
    // books, and money is conserved with the participants included.
    node.kill9();
    std::fs::write(node.dir.join("node.toml"), "[feed]\ntrades_per_sec = 0\n").unwrap();
    node.restart();
    node.wait_ready();
    let (_, witness) = node.register("venue_witness");
    let (_, granted) = node.api("GET", "/api/v1/account", None, Some(&witness));
    let mut want = BTreeMap::new();
    add(
        &mut want,
        &granted["balances"],
        1 + GRANT_FACTOR * PARTICIPANTS.count() as i128,
    );
    let mut last = BTreeMap::new();
    let conserved = eventually(40, "money conserved with the participants", || {
        let mut sums = BTreeMap::new();
        let (_, mine) = node.api("GET", "/api/v1/account", None, Some(&token));
        add(&mut sums, &mine["balances"], 1);
        for user in PARTICIPANTS {
            add(&mut sums, &participant_balances(&node, user)?, 1);
        }
        last = sums.clone();
        (sums == want).then_some(sums)
    });
    assert_eq!(conserved, want, "last seen {last:?}");
    // With no taker left, the ticker's last price is the book's: every tick was a fill.
    let last_of_book = eventually(20, "the book's last trade on the ticker", || {
        let (_, book) = node.api(
            "GET",
            "/admin/entities/book/KRW-BTC",
            None,
            Some(ADMIN_TOKEN),
        );
        let (_, ticker) = node.get("/api/v1/ticker/KRW-BTC");
        let from_book = book["state"]["last_price"].as_str()?.to_string();
        (ticker["last"] == from_book.as_str()).then_some(from_book)
    });
    assert!(units(&last_of_book) > 0);
    let (bids, asks) = eventually(20, "the maker quotes again", || {
        let (b, a) = depth(&node, "KRW-BTC");
        (b.len() >= 5 && a.len() >= 5).then_some((b, a))
    });
    assert!(price(&bids[0]) < price(&asks[0]));
}

/// Places a limit or market order for alice; the order as answered.
fn place(node: &Node, token: &str, side: &str, price: Option<i128>, qty: &str) -> Value {
    let mut body = json!({"symbol": "KRW-BTC", "side": side, "qty": qty});
    match price {
        // Prices here are KRW in 1e-8 units; the tick is 1000 KRW.
        Some(p) => {
            body["type"] = json!("limit");
            body["price"] = json!((p / 100_000_000 / 1000 * 1000).to_string());
        }
        None => body["type"] = json!("market"),
    }
    let (status, order) = node.api("POST", "/api/v1/orders", Some(&body), Some(token));
    assert_eq!(status, 201, "{body}: {order}");
    order
}

/// The newest feed price of KRW-BTC, in 1e-8 KRW.
fn last(node: &Node) -> i128 {
    let (_, t) = node.get("/api/v1/ticker/KRW-BTC");
    units(t["last"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_orders_fill_at_the_feed_price_and_rest_until_it_crosses_them() {
    let mut node = Node::start(
        "venue-mirror",
        "[feed]\ntrades_per_sec = 20\n[trading]\nvenue = \"mirror\"\nslippage_bps = 10\n",
    );
    let (_, symbols) = node.get("/api/v1/symbols");
    assert_eq!(symbols[0]["venue"], "mirror", "{symbols}");
    // The feed makes the price; the book holds users' orders only, so far none.
    eventually(20, "feed ticks", || {
        let (_, t) = node.get("/api/v1/trades/KRW-BTC?limit=5");
        (t.as_array().map(Vec::len) == Some(5)).then_some(())
    });
    let (bids, asks) = depth(&node, "KRW-BTC");
    assert!(bids.is_empty() && asks.is_empty(), "{bids:?} {asks:?}");
    let (_, token) = node.register("mirror_alice");

    // A market buy fills whole at the feed's price plus 10 bps.
    let before = last(&node);
    let bought = place(&node, &token, "buy", None, "0.001");
    assert_eq!(bought["status"], "filled", "{bought}");
    let paid = units(bought["avg_price"].as_str().unwrap());
    let after = last(&node);
    let (lo, hi) = (before.min(after), before.max(after));
    // The book takes the price after the ticker shows it: allow the walk a few bps.
    assert!(
        paid >= lo + lo / 1000 - lo / 300 && paid <= hi + hi / 1000 + hi / 300,
        "paid {paid} for a price in {lo}..={hi}"
    );

    // A buy 5 bps above the price, below the house's ask, rests and the price already crosses it:
    // it fills at once, at its own price.
    let p = last(&node);
    let inside = place(&node, &token, "buy", Some(p + p / 2000), "0.001");
    let inside_id = inside["order_id"].as_str().unwrap().to_string();
    let inside = eventually(10, "the inside buy filled", || {
        let (_, o) = node.api(
            "GET",
            &format!("/api/v1/orders/{inside_id}"),
            None,
            Some(&token),
        );
        (o["status"] == "filled").then_some(o)
    });
    assert_eq!(inside["avg_price"], inside["price"], "{inside}");

    // Orders 2 bps either side of the price rest on the book until the walk crosses one of
    // them; it fills whole at its own price. One far away stays.
    let p = last(&node);
    let far = place(&node, &token, "sell", Some(p + p / 20), "0.002");
    let near = [
        place(&node, &token, "buy", Some(p - p / 5000), "0.001"),
        place(&node, &token, "sell", Some(p + p / 5000), "0.001"),
    ];
    let (_, asks) = depth(&node, "KRW-BTC");
    assert!(asks.iter().any(|l| l[0] == far["price"]), "{asks:?}");
    let crossed = eventually(60, "the walk crosses a resting order", || {
        near.iter().find_map(|o| {
            let id = o["order_id"].as_str().unwrap();
            let (_, o) = node.api("GET", &format!("/api/v1/orders/{id}"), None, Some(&token));
            (o["status"] == "filled").then_some(o)
        })
    });
    assert_eq!(crossed["avg_price"], crossed["price"], "{crossed}");
    // The user's fills are not ticks: the chart is the feed's.
    let (_, ticks) = node.get("/api/v1/trades/KRW-BTC?limit=1000");
    assert!(
        ticks
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["price"] != crossed["price"] || t["qty"] != "0.001"),
        "a user's fill appeared among the feed's ticks"
    );

    // SIGKILL: the far order still rests, and the balances are the fills' sums.
    node.kill9();
    node.restart();
    node.wait_ready();
    let far_id = far["order_id"].as_str().unwrap();
    let (_, far_now) = node.api(
        "GET",
        &format!("/api/v1/orders/{far_id}"),
        None,
        Some(&token),
    );
    assert_eq!(far_now["status"], "new", "{far_now}");
    let (_, asks) = depth(&node, "KRW-BTC");
    assert!(asks.iter().any(|l| l[0] == far["price"]), "{asks:?}");
    let (_, orders) = node.api("GET", "/api/v1/orders", None, Some(&token));
    let (mut krw, mut btc) = (100_000_000 * 100_000_000i128, 100_000_000i128);
    for o in orders.as_array().unwrap() {
        let filled = units(o["filled_qty"].as_str().unwrap());
        let cost = filled * units(o["avg_price"].as_str().unwrap()) / 100_000_000;
        let sign = if o["side"] == "buy" { 1 } else { -1 };
        btc += sign * filled;
        krw -= sign * cost;
    }
    let (_, account) = node.api("GET", "/api/v1/account", None, Some(&token));
    let total = |a: &str| {
        let b = &account["balances"][a];
        units(b["available"].as_str().unwrap()) + units(b["held"].as_str().unwrap())
    };
    assert_eq!(
        (total("KRW"), total("BTC")),
        (krw, btc),
        "{account} {orders}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_mirror_market_prices_orders_at_its_last_price_even_after_its_book_restarts() {
    // The feed sends nothing: the last price is the start price, 140,000,000.
    let node = Node::start(
        "venue-quiet",
        "[feed]\ntrades_per_sec = 0\n[trading]\nvenue = \"mirror\"\nslippage_bps = 10\n",
    );
    let (_, token) = node.register("quiet_alice");
    let buy = json!({"symbol": "KRW-BTC", "side": "buy", "type": "market", "qty": "0.001"});
    // The book asks its symbol for the price when it starts: the buy fills at the start
    // price plus 10 bps (140 ticks of 1,000).
    let first = common::place_acked(&node, &token, buy.clone(), "quiet-1");
    assert_eq!(
        (first["status"].as_str(), first["avg_price"].as_str()),
        (Some("filled"), Some("140140000")),
        "{first}"
    );
    // A chaos-killed book comes back knowing the price without a feed trade.
    let (status, body) = node.chaos_kill("book", "KRW-BTC");
    assert_eq!(status, 200, "{body}");
    let second = common::place_acked(&node, &token, buy, "quiet-2");
    assert_eq!(
        (second["status"].as_str(), second["avg_price"].as_str()),
        (Some("filled"), Some("140140000")),
        "{second}"
    );
}
