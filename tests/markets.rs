//! Markets as users find and follow them (docs/PROTOCOL.md "Market data", "Watchlist"):
//! symbol search, trading hours, and watchlists that are durable, shared by every node,
//! and refuse bad lists without changing the stored one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Cluster, Node, WsClient, raw_request};
use serde_json::{Value, json};
use std::time::Duration;

fn symbols_of(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|m| m["symbol"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn symbol_search_finds_by_symbol_base_or_quote() {
    let node = Node::start("search", "");
    let (status, all) = node.get("/api/v1/symbols");
    assert_eq!(status, 200, "{all}");
    assert_eq!(symbols_of(&all).len(), 8, "the demo's eight markets");
    let (status, btc) = node.get("/api/v1/symbols?q=btc");
    assert_eq!(status, 200, "{btc}");
    assert_eq!(symbols_of(&btc), ["KRW-BTC"]);
    assert_eq!(btc[0]["base"], "BTC");
    assert_eq!(
        btc[0]["tick_size"], "1000",
        "the same objects as the full list"
    );
    let (_, x) = node.get("/api/v1/symbols?q=x");
    assert_eq!(
        symbols_of(&x),
        ["KRW-XRP", "KRW-AVAX"],
        "a base prefix first, then anywhere"
    );
    let (_, krw) = node.get("/api/v1/symbols?q=%20krw%20");
    assert_eq!(
        symbols_of(&krw).len(),
        8,
        "an exact quote, any case, trimmed"
    );
    let (_, none) = node.get("/api/v1/symbols?q=nothing");
    assert_eq!(none, json!([]));
    let (status, e) = node.get(&format!("/api/v1/symbols?q={}", "X".repeat(33)));
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, e) = node.get("/api/v1/symbols?search=btc");
    assert_eq!(status, 400, "an unknown parameter is refused: {e}");
}

/// 2026-12-03T23:00:00Z: Friday 08:00 in Seoul, an hour before KRX-style hours open.
const FRI_0800_KST: i64 = 1_796_338_800_000;
const MIN: i64 = 60_000;

/// A config whose node clock reads `at` (ms since the epoch) now: KRW-BTC trades Monday to
/// Friday 09:00-15:30 in Seoul, KRW-ETH around the clock; reserved orders wait a day.
fn hours_config(at: i64) -> String {
    let symbol = |s: &str, hours: &str| {
        format!(
            "[[symbols]]\nsymbol = \"{s}\"\ntick_size = \"1000\"\nlot_size = \"0.0001\"\ninitial_price = \"100000000\"\n{hours}"
        )
    };
    let weekdays = ["mon", "tue", "wed", "thu", "fri"]
        .map(|d| format!("{d} = \"09:00-15:30\"\n"))
        .concat();
    format!(
        "[node]\nclock_offset_ms = {}\n[feed]\nkind = \"none\"\n[trading]\nreserve_days = 1\ngrants = {{ KRW = \"1000000000\" }}\n{}{}[hours.krx]\ntimezone = \"Asia/Seoul\"\n{weekdays}",
        at - common::now_ms(),
        symbol("KRW-BTC", "hours = \"krx\"\n"),
        symbol("KRW-ETH", ""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_outside_market_hours_are_reserved_opened_at_the_open_and_expire() {
    let mut node = Node::start("hours", &hours_config(FRI_0800_KST));
    let (status, all) = node.get("/api/v1/symbols");
    assert_eq!(status, 200, "{all}");
    let opens_at = FRI_0800_KST + 60 * MIN;
    assert_eq!(
        all[0]["session"],
        json!({"hours": "krx", "open": false, "next_open": opens_at, "next_close": null}),
        "{all}"
    );
    assert_eq!(
        all[1]["session"],
        json!({"hours": null, "open": true, "next_open": null, "next_close": null}),
        "{all}"
    );
    let (_, token) = node.register("hours_user");
    let mut ws = WsClient::connect(&format!("{}?token={token}", node.ws_url())).await;
    let r = ws
        .request("subscribe", json!({"channels": ["orders"]}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let place = |node: &Node, symbol: &str, price: &str, tif: &str| {
        let body = json!({"symbol": symbol, "side": "buy", "type": "limit", "price": price, "qty": "0.001", "tif": tif});
        let (status, o) = node.api("POST", "/api/v1/orders", Some(&body), Some(&token));
        assert_eq!(status, 201, "{o}");
        o
    };
    let held = |node: &Node| {
        let (_, account) = node.api("GET", "/api/v1/account", None, Some(&token));
        account["balances"]["KRW"]["held"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let status_of = |node: &Node, o: &Value| {
        let path = format!("/api/v1/orders/{}", o["order_id"].as_str().unwrap());
        let (code, v) = node.api("GET", &path, None, Some(&token));
        assert_eq!(code, 200, "{v}");
        v["status"].as_str().unwrap().to_string()
    };

    // Closed: KRW-BTC's orders are reserved, holding their funds, off the book.
    let gtc = place(&node, "KRW-BTC", "90000000", "gtc");
    let day = place(&node, "KRW-BTC", "91000000", "day");
    let dropped = place(&node, "KRW-BTC", "92000000", "gtc");
    for o in [&gtc, &day, &dropped] {
        assert_eq!(o["status"], "reserved", "{o}");
    }
    assert_eq!(day["tif"], "day");
    let event = ws
        .wait_event(Duration::from_secs(5), |e| {
            e.ch == "orders" && e.data["status"] == "reserved"
        })
        .await
        .expect("a reserved order on the orders channel");
    assert_eq!(event.data["order_id"], gtc["order_id"]);
    let path = format!("/api/v1/orders/{}", dropped["order_id"].as_str().unwrap());
    let (code, cancelled) = node.api("DELETE", &path, None, Some(&token));
    assert_eq!(
        (code, cancelled["status"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    // A book killed (a panic) comes back from its journal with its reserved orders.
    let (code, killed) = node.chaos_kill("book", "KRW-BTC");
    assert_eq!(code, 200, "{killed}");
    let book_state = |node: &Node| {
        let path = "/admin/entities/book/KRW-BTC";
        Some(node.api("GET", path, None, Some(common::ADMIN_TOKEN)).1)
    };
    common::eventually(
        20,
        "the killed book to come back with two reserved orders",
        || {
            node.get("/api/v1/book/KRW-BTC?depth=5");
            book_state(&node).filter(|v| v["active"] == true && v["state"]["reserved_orders"] == 2)
        },
    );
    assert_eq!(status_of(&node, &gtc), "reserved");
    // KRW-ETH trades around the clock: its day order rests at once, until 00:00 UTC.
    let eth_day = place(&node, "KRW-ETH", "90000000", "day");
    assert_eq!(eth_day["status"], "new", "{eth_day}");
    assert_eq!(held(&node), "271000", "90,000 + 91,000 + 90,000 KRW");
    let (_, book) = node.get("/api/v1/book/KRW-BTC?depth=5");
    assert_eq!(
        book["bids"],
        json!([]),
        "reserved orders are not on the book: {book}"
    );
    drop(ws);

    // SIGKILLed, the node comes back at 09:00:30 in Seoul (00:00:30 UTC): the book opens
    // its reserved orders by itself (nothing asks it: looking does not activate), and the
    // ETH day order expired with the UTC day.
    node.restart_with(&hours_config(opens_at + MIN / 2));
    common::eventually(20, "the KRW-BTC book to open its reserved orders", || {
        book_state(&node).filter(|v| {
            v["active"] == true
                && v["state"]["reserved_orders"] == 0
                && v["state"]["resting_orders"] == 2
        })
    });
    assert_eq!(status_of(&node, &gtc), "new");
    assert_eq!(status_of(&node, &day), "new");
    common::eventually(20, "the ETH day order to expire", || {
        (status_of(&node, &eth_day) == "expired").then_some(())
    });
    let (_, book) = node.get("/api/v1/book/KRW-BTC?depth=5");
    assert_eq!(
        book["bids"],
        json!([["91000000", "0.001"], ["90000000", "0.001"]]),
        "{book}"
    );
    assert_eq!(held(&node), "181000");

    // At 15:31 the close has passed: the day order expired, the gtc one still rests. A new
    // order is reserved again.
    let closed_at = FRI_0800_KST + (7 * 60 + 31) * MIN;
    node.restart_with(&hours_config(closed_at));
    common::eventually(20, "the day order to expire at the close", || {
        (status_of(&node, &day) == "expired").then_some(())
    });
    assert_eq!(status_of(&node, &gtc), "new");
    let late = place(&node, "KRW-BTC", "93000000", "gtc");
    assert_eq!(late["status"], "reserved", "{late}");
    assert_eq!(held(&node), "183000");

    // Saturday 16:00, a day and a half later with no open between: past
    // trading.reserve_days the reserved order expired and released its hold.
    node.restart_with(&hours_config(closed_at + (24 * 60 + 29) * MIN));
    common::eventually(20, "the reserved order to expire", || {
        (status_of(&node, &late) == "expired").then_some(())
    });
    assert_eq!(status_of(&node, &gtc), "new");
    assert_eq!(held(&node), "90000");
}

#[test]
fn watchlists_are_durable_shared_and_refuse_bad_lists() {
    let mut cluster = Cluster::start("watchlist", 2, "");
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (_, alice) = a.register("wl_alice");
    let (_, bob) = a.register("wl_bob");
    let get = |node: &Node, token: &str| {
        let (status, v) = node.api("GET", "/api/v1/watchlist", None, Some(token));
        assert_eq!(status, 200, "{v}");
        v
    };
    assert_eq!(get(a, &alice), json!({"symbols": []}), "none set yet");

    let list = json!({"symbols": ["KRW-SOL", "KRW-BTC", "KRW-ETH"]});
    let (status, put) = a.api("PUT", "/api/v1/watchlist", Some(&list), Some(&alice));
    assert_eq!((status, &put), (200, &list));
    assert_eq!(
        get(b, &alice),
        list,
        "the other node reads it, in the user's order"
    );
    assert_eq!(get(b, &bob), json!({"symbols": []}), "one user's list only");

    // Bad lists: the documented error, and the stored list untouched.
    let too_many: Vec<String> = (0..101).map(|_| "KRW-BTC".to_string()).collect();
    for (body, says) in [
        (
            json!({"symbols": ["KRW-NOPE"]}),
            "unknown symbol 'KRW-NOPE'",
        ),
        (
            json!({"symbols": ["krw-btc"]}),
            "malformed symbol 'krw-btc'",
        ),
        (
            json!({"symbols": ["KRW-BTC", "KRW-BTC"]}),
            "symbol 'KRW-BTC' is listed twice",
        ),
        (json!({"symbols": too_many}), "at most 100 symbols"),
        (json!({"symbols": "KRW-BTC"}), "field `symbols`"),
        (json!({"symbols": [], "extra": 1}), "unknown field `extra`"),
        (json!({}), "missing field `symbols`"),
        (json!(["KRW-BTC"]), "body must be a JSON object"),
    ] {
        let (status, e) = b.api("PUT", "/api/v1/watchlist", Some(&body), Some(&alice));
        assert_eq!(status, 400, "{body}: {e}");
        assert_eq!(e["error"]["code"], "bad_request");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, e) = a.api("PUT", "/api/v1/watchlist", Some(&list), None);
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, e) = a.api("GET", "/api/v1/watchlist", None, Some("not-a-token"));
    assert_eq!(status, 401, "{e}");
    let huge = format!(r#"{{"symbols":["{}"]}}"#, "A".repeat(17 * 1024));
    let auth = format!("authorization: Bearer {alice}\r\n");
    let (status, _, body) = raw_request(a.port, "PUT", "/api/v1/watchlist", &auth, &huge);
    assert_eq!(status, 413, "{body}");
    let (status, _, body) = raw_request(a.port, "POST", "/api/v1/watchlist", &auth, "{}");
    assert_eq!(status, 405, "{body}");
    assert_eq!(
        get(a, &alice),
        list,
        "no refused list changed the stored one"
    );

    // Durable: acknowledged on node 2, which is then SIGKILLed and restarted.
    let shorter = json!({"symbols": ["KRW-XRP"]});
    let (status, _) = b.api("PUT", "/api/v1/watchlist", Some(&shorter), Some(&alice));
    assert_eq!(status, 200);
    cluster.nodes[1].kill9();
    assert_eq!(
        get(&cluster.nodes[0], &alice),
        shorter,
        "read on the survivor"
    );
    cluster.nodes[1].restart();
    cluster.nodes[1].wait_ready();
    assert_eq!(
        get(&cluster.nodes[1], &alice),
        shorter,
        "read after the restart"
    );
    let (status, emptied) = cluster.nodes[1].api(
        "PUT",
        "/api/v1/watchlist",
        Some(&json!({"symbols": []})),
        Some(&alice),
    );
    assert_eq!((status, emptied), (200, json!({"symbols": []})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchlist_over_websocket_follows_the_rest_rules() {
    let node = Node::start("watchlist-ws", "[feed]\nkind = \"none\"\n");
    let (_, carol) = node.register("wl_carol");
    let mut ws = WsClient::connect(&node.ws_url()).await;
    let r = ws.request("watchlist.get", json!({})).await;
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    let r = ws.request("auth", json!({"token": carol})).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = ws.request("watchlist.get", json!({})).await;
    assert_eq!(r["result"], json!({"symbols": []}), "{r}");
    let r = ws
        .request("watchlist.set", json!({"symbols": ["KRW-ADA", "KRW-NOPE"]}))
        .await;
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let r = ws.request("watchlist.get", json!({"extra": 1})).await;
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let r = ws
        .request("watchlist.set", json!({"symbols": ["KRW-ADA", "KRW-LINK"]}))
        .await;
    assert_eq!(
        r["result"],
        json!({"symbols": ["KRW-ADA", "KRW-LINK"]}),
        "{r}"
    );
    let (status, rest) = node.api("GET", "/api/v1/watchlist", None, Some(&carol));
    assert_eq!(
        (status, rest),
        (200, json!({"symbols": ["KRW-ADA", "KRW-LINK"]}))
    );
    ws.close().await;
}
