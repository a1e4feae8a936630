//! Markets as users find and follow them (docs/PROTOCOL.md "Market data", "Watchlist"):
//! symbol search, trading hours, and watchlists that are durable, shared by every node,
//! and refuse bad lists without changing the stored one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Cluster, Node, WsClient, raw_request};
use serde_json::{Value, json};

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

#[test]
fn a_market_outside_its_hours_shows_closed_and_takes_no_orders() {
    // KRW-BTC's hours name no day, so it never trades; KRW-ETH trades every day all day.
    let symbol = |s: &str, hours: &str| {
        format!(
            "[[symbols]]\nsymbol = \"{s}\"\ntick_size = \"1000\"\nlot_size = \"0.0001\"\ninitial_price = \"100000000\"\nhours = \"{hours}\"\n"
        )
    };
    let every_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .map(|d| format!("{d} = \"00:00-24:00\"\n"))
        .concat();
    let config = format!(
        "[feed]\nkind = \"none\"\n[trading]\ngrants = {{ KRW = \"1000000000\" }}\n{}{}[hours.never]\ntimezone = \"Asia/Seoul\"\n[hours.always]\ntimezone = \"UTC\"\n{every_day}",
        symbol("KRW-BTC", "never"),
        symbol("KRW-ETH", "always"),
    );
    let node = Node::start("hours", &config);
    let (status, all) = node.get("/api/v1/symbols");
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        all[0]["session"],
        json!({"hours": "never", "open": false, "next_open": null, "next_close": null}),
        "{all}"
    );
    assert_eq!(
        all[1]["session"],
        json!({"hours": "always", "open": true, "next_open": null, "next_close": null}),
        "{all}"
    );
    let (_, token) = node.register("hours_user");
    let order = |s: &str| json!({"symbol": s, "side": "buy", "type": "limit", "price": "90000000", "qty": "0.001"});
    let (status, e) = node.api(
        "POST",
        "/api/v1/orders",
        Some(&order("KRW-BTC")),
        Some(&token),
    );
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{e}"
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("closed"),
        "{e}"
    );
    let (status, o) = node.api(
        "POST",
        "/api/v1/orders",
        Some(&order("KRW-ETH")),
        Some(&token),
    );
    assert_eq!((status, o["status"].as_str()), (201, Some("new")), "{o}");
    // The refused order held nothing: only the ETH order's 90,000 KRW is held.
    let (_, account) = node.api("GET", "/api/v1/account", None, Some(&token));
    assert_eq!(account["balances"]["KRW"]["held"], "90000", "{account}");
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
