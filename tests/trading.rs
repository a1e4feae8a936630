//! Trading through the protocol only: register, place, match, cancel, the `orders` and
//! `book:S` channels, every bad order's error code, `client_order_id` idempotency under
//! concurrency, recovery of books and accounts after an entity kill and a node SIGKILL, and
//! users on different nodes trading with each other.
//!
//! The simulator is off (`feed.kind = "none"`), so the only trades are the tests' own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bourse_actors::book::engine::{Kind, Order, Side, TimeInForce};
use bourse_actors::book::state::{BookState, Command};
use bourse_actors::trading::Status;
use bourse_config::{Market, Settings};
use common::{Cluster, Node, WsClient, limit, place_acked};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const NO_FEED: &str = "[feed]\nkind = \"none\"\n";

fn btc() -> Market {
    let (_, m) = Settings::from_sources("", std::iter::empty()).unwrap();
    m.get("KRW-BTC").unwrap().clone()
}

/// Per asset, available + held, summed over `tokens`' accounts.
fn totals(node: &Node, tokens: &[&str]) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for t in tokens {
        let (status, v) = node.api("GET", "/api/v1/account", None, Some(t));
        assert_eq!(status, 200, "{v}");
        for (asset, b) in v["balances"].as_object().unwrap() {
            let e = out
                .entry(asset.clone())
                .or_insert((String::new(), String::new()));
            e.0 = add_decimal(&e.0, b["available"].as_str().unwrap());
            e.1 = add_decimal(&e.1, b["held"].as_str().unwrap());
        }
    }
    out
}

/// Exact decimal addition on strings (no floats), for balances.
fn add_decimal(a: &str, b: &str) -> String {
    let scale = |s: &str| s.split_once('.').map_or(0, |(_, f)| f.len());
    let places = scale(a).max(scale(b)).max(1);
    let units = |s: &str| -> i128 {
        if s.is_empty() {
            return 0;
        }
        let (i, f) = s.split_once('.').unwrap_or((s, ""));
        let f = format!("{f:0<places$}");
        format!("{i}{f}").parse().unwrap()
    };
    let sum = units(a) + units(b);
    let s = format!("{:0>width$}", sum, width = places + 1);
    let (i, f) = s.split_at(s.len() - places);
    let f = f.trim_end_matches('0');
    if f.is_empty() {
        i.to_string()
    } else {
        format!("{i}.{f}")
    }
}

fn available_plus_held(t: &BTreeMap<String, (String, String)>, asset: &str) -> String {
    let (a, h) = &t[asset];
    add_decimal(a, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_match_settle_stream_and_conserve_money() {
    let node = Node::start("trade-basic", NO_FEED);
    let (alice_id, alice) = node.register("alice");
    let (_bob_id, bob) = node.register("bob");
    assert_ne!(alice_id, "");

    // Market data stays public; trading needs a token.
    let (status, v) = node.api("GET", "/api/v1/account", None, None);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = node.api("GET", "/api/v1/account", None, Some("not-a-token"));
    assert_eq!(status, 401);

    let mut a_ws = WsClient::connect(&format!("{}?token={alice}", node.ws_url())).await;
    let r = a_ws
        .request(
            "subscribe",
            json!({"channels": ["orders", "book:KRW-BTC", "trades:KRW-BTC"]}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        r["result"]["subscribed"],
        json!(["orders", "book:KRW-BTC", "trades:KRW-BTC"])
    );
    let snap = a_ws
        .wait_event(Duration::from_secs(5), |e| e.ch == "book:KRW-BTC")
        .await
        .expect("book snapshot");
    assert_eq!(snap.data["type"], "snapshot");
    // Bob logs in over the socket with op auth instead.
    let mut b_ws = WsClient::connect(&node.ws_url()).await;
    let r = b_ws
        .request("subscribe", json!({"channels": ["orders"]}))
        .await;
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    let r = b_ws.request("order.list", json!({})).await;
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    let r = b_ws.request("auth", json!({"token": "forged"})).await;
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    let r = b_ws.request("auth", json!({"token": bob})).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = b_ws
        .request("subscribe", json!({"channels": ["orders"]}))
        .await;
    assert_eq!(r["ok"], true, "{r}");

    // Alice rests a sell over REST; Bob crosses it over WebSocket.
    let (status, sell) = node.api(
        "POST",
        "/api/v1/orders",
        Some(&limit("sell", "140000000", "0.5")),
        Some(&alice),
    );
    assert_eq!(status, 201, "{sell}");
    assert_eq!(sell["status"], "new");
    let r = b_ws
        .request(
            "order.place",
            json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit", "price": "141000000", "qty": "0.2", "client_order_id": "b-1"}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let buy = &r["result"];
    assert_eq!(
        (buy["status"].as_str(), buy["filled_qty"].as_str()),
        (Some("filled"), Some("0.2"))
    );
    assert_eq!(buy["avg_price"], "140000000", "fills at the maker's price");

    // Both users see their fills on `orders`; Alice sees the trade and the book delta.
    let fill = a_ws
        .wait_event(Duration::from_secs(5), |e| {
            e.ch == "orders" && e.data["status"] == "partially_filled"
        })
        .await
        .expect("alice's fill on orders");
    assert_eq!(fill.data["order_id"], sell["order_id"]);
    assert_eq!(fill.data["filled_qty"], "0.2");
    b_ws.wait_event(Duration::from_secs(5), |e| {
        e.ch == "orders" && e.data["status"] == "filled"
    })
    .await
    .expect("bob's fill on orders");
    let trade = a_ws
        .wait_event(Duration::from_secs(5), |e| e.ch == "trades:KRW-BTC")
        .await
        .expect("the trade on trades:S");
    assert_eq!(
        (
            trade.data["price"].as_str(),
            trade.data["qty"].as_str(),
            trade.data["side"].as_str()
        ),
        (Some("140000000"), Some("0.2"), Some("buy"))
    );
    let delta = a_ws
        .wait_event(Duration::from_secs(5), |e| {
            e.ch == "book:KRW-BTC" && e.data["asks"] == json!([["140000000", "0.3"]])
        })
        .await
        .expect("book delta with the level's new quantity");
    let (_, book) = node.get("/api/v1/book/KRW-BTC?depth=5");
    assert_eq!(book["asks"], json!([["140000000", "0.3"]]));
    assert_eq!(
        book["seq"].as_u64(),
        Some(delta.seq),
        "REST seq matches book:S"
    );

    // Balances: Alice sold 0.2 BTC for 28,000,000 KRW and holds 0.3 BTC for the rest.
    let (_, acct) = node.api("GET", "/api/v1/account", None, Some(&alice));
    assert_eq!(
        acct["balances"]["BTC"],
        json!({"available": "0.5", "held": "0.3"})
    );
    assert_eq!(
        acct["balances"]["KRW"],
        json!({"available": "128000000", "held": "0"})
    );

    // Cancel: someone else's order is not_found; the owner's comes back cancelled, hold freed.
    let sell_id = sell["order_id"].as_str().unwrap();
    let (status, v) = node.api(
        "DELETE",
        &format!("/api/v1/orders/{sell_id}"),
        None,
        Some(&bob),
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (status, v) = node.api(
        "DELETE",
        &format!("/api/v1/orders/{sell_id}"),
        None,
        Some(&alice),
    );
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("cancelled")),
        "{v}"
    );
    let (status, v) = node.api(
        "DELETE",
        &format!("/api/v1/orders/{sell_id}"),
        None,
        Some(&alice),
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    let (_, acct) = node.api("GET", "/api/v1/account", None, Some(&alice));
    assert_eq!(
        acct["balances"]["BTC"],
        json!({"available": "0.8", "held": "0"})
    );
    let (status, v) = node.api(
        "GET",
        &format!("/api/v1/orders/{sell_id}"),
        None,
        Some(&alice),
    );
    assert_eq!((status, v["status"].as_str()), (200, Some("cancelled")));
    let (_, open) = node.api("GET", "/api/v1/orders?status=open", None, Some(&alice));
    assert_eq!(open, json!([]));
    let (_, done) = node.api(
        "GET",
        "/api/v1/orders?status=done&symbol=KRW-BTC",
        None,
        Some(&alice),
    );
    assert_eq!(done.as_array().map(Vec::len), Some(1));

    // Market orders, IOC, FOK and post-only.
    node.api(
        "POST",
        "/api/v1/orders",
        Some(&limit("sell", "150000000", "0.1")),
        Some(&alice),
    );
    let (status, m) = node.api(
        "POST",
        "/api/v1/orders",
        Some(&json!({"symbol": "KRW-BTC", "side": "buy", "type": "market", "qty": "0.3"})),
        Some(&bob),
    );
    assert_eq!(status, 201, "{m}");
    assert_eq!(
        (m["status"].as_str(), m["filled_qty"].as_str()),
        (Some("expired"), Some("0.1")),
        "a market order takes what there is and its rest expires"
    );
    let mut fok = limit("buy", "150000000", "0.2");
    fok["tif"] = json!("fok");
    node.api(
        "POST",
        "/api/v1/orders",
        Some(&limit("sell", "150000000", "0.1")),
        Some(&alice),
    );
    let (_, f) = node.api("POST", "/api/v1/orders", Some(&fok), Some(&bob));
    assert_eq!(
        (f["status"].as_str(), f["filled_qty"].as_str()),
        (Some("expired"), Some("0"))
    );
    let mut po = limit("buy", "150000000", "0.1");
    po["post_only"] = json!(true);
    let (status, v) = node.api("POST", "/api/v1/orders", Some(&po), Some(&bob));
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "post-only that would cross: {v}"
    );

    // Every bad order gets its code and changes nothing.
    let before = totals(&node, &[&alice, &bob]);
    for (body, status, code) in [
        (
            json!({"symbol": "KRW-NOPE", "side": "buy", "type": "limit", "price": "1000", "qty": "1"}),
            400,
            "bad_request",
        ),
        (limit("buy", "140000500", "0.1"), 400, "bad_request"),
        (limit("buy", "140000000", "0.00001"), 400, "bad_request"),
        (limit("buy", "140000000", "0"), 400, "bad_request"),
        (limit("buy", "140000000", "-1"), 400, "bad_request"),
        (limit("buy", "140000000", "1000000"), 400, "bad_request"),
        (
            json!({"symbol": "KRW-BTC", "side": "buy", "type": "market", "price": "1000", "qty": "1"}),
            400,
            "bad_request",
        ),
        (
            json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit", "price": "1000", "qty": "1", "extra": 1}),
            400,
            "bad_request",
        ),
        (limit("buy", "140000000", "100"), 422, "insufficient_funds"),
        (limit("sell", "140000000", "50"), 422, "insufficient_funds"),
    ] {
        let (s, v) = node.api("POST", "/api/v1/orders", Some(&body), Some(&bob));
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body} → {v}"
        );
    }
    let r = b_ws
        .request(
            "order.place",
            json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit", "price": "1", "qty": "1"}),
        )
        .await;
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let r = b_ws
        .request("order.cancel", json!({"order_id": sell_id}))
        .await;
    assert_eq!(r["error"]["code"], "not_found", "{r}");
    assert_eq!(
        totals(&node, &[&alice, &bob]),
        before,
        "bad orders moved no money"
    );

    // SSE carries `orders` too, for a browser client with ?token=.
    let (status, _) = common::read_sse(
        node.port,
        "/sse?channels=orders",
        None,
        Duration::from_millis(300),
        1,
    );
    assert_eq!(status, 401, "orders needs a token on SSE too");
    let port = node.port;
    let path = format!("/sse?channels=orders&token={alice}");
    let reader =
        std::thread::spawn(move || common::read_sse(port, &path, None, Duration::from_secs(5), 1));
    std::thread::sleep(Duration::from_millis(700));
    let (_, placed) = node.api(
        "POST",
        "/api/v1/orders",
        Some(&limit("sell", "160000000", "0.01")),
        Some(&alice),
    );
    let (status, events) = reader.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        events.first().map(|e| e.event.as_str()),
        Some("orders"),
        "{events:?}"
    );
    assert_eq!(events[0].data["data"]["order_id"], placed["order_id"]);

    // Conservation: two users' grants, nothing more or less.
    let t = totals(&node, &[&alice, &bob]);
    assert_eq!(available_plus_held(&t, "KRW"), "200000000");
    assert_eq!(available_plus_held(&t, "BTC"), "2");
    // The node stayed healthy throughout.
    assert_eq!(node.get("/readyz").0, 200);
}

#[test]
fn a_limit_order_outside_the_price_band_is_refused_and_the_band_follows_the_last_trade() {
    let node = Node::start(
        "trade-band",
        &format!("{NO_FEED}[trading]\nprice_band_pct = 10\n"),
    );
    let m = btc();
    assert_eq!(
        m.tick.format(m.initial_price),
        "140000000",
        "the test's prices assume KRW-BTC starts at 140,000,000"
    );
    let (_, alice) = node.register("alice");
    let (_, bob) = node.register("bob");
    let before = totals(&node, &[&alice, &bob]);
    let refused = |body: Value, token: &str| {
        let (s, v) = node.api("POST", "/api/v1/orders", Some(&body), Some(token));
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{body}: {v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("more than 10% away"),
            "{v}"
        );
    };
    // 7,000 times the market, a buy its owner can pay for; half the market, a sell.
    refused(limit("buy", "980000000000", "0.0001"), &alice);
    refused(limit("sell", "70000000", "0.001"), &bob);
    // 15% up is outside the band around the start price...
    refused(limit("buy", "161000000", "0.001"), &alice);
    assert_eq!(
        totals(&node, &[&alice, &bob]),
        before,
        "refusals hold nothing"
    );
    let (_, orders) = node.api("GET", "/api/v1/orders", None, Some(&alice));
    // Kept in the history as rejected, as a post-only cross is.
    let statuses: Vec<&str> = orders
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["rejected", "rejected"], "{orders}");

    // ...until a trade at 9% up moves the band with it.
    place_acked(&node, &alice, limit("buy", "152600000", "0.001"), "a-1");
    place_acked(&node, &bob, limit("sell", "152600000", "0.001"), "b-1");
    place_acked(&node, &alice, limit("buy", "161000000", "0.001"), "a-2");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, ticker) = node.get("/api/v1/ticker/KRW-BTC");
        if ticker["last"] == "152600000" {
            assert_eq!(
                ticker["high_24h"], "152600000",
                "no refused price reached the ticker: {ticker}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{ticker}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_client_order_id_creates_one_order_even_concurrently() {
    let node = Node::start("trade-idem", NO_FEED);
    let (_, token) = node.register("carol");
    let body = json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit", "price": "100000000",
                      "qty": "0.01", "client_order_id": "same-1"});
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| node.api("POST", "/api/v1/orders", Some(&body), Some(&token))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let repeated = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, repeated), (1, 7), "{results:?}");
    let ids: std::collections::BTreeSet<&str> = results
        .iter()
        .map(|(_, v)| v["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every answer is the same order");
    // Also over WebSocket, concurrently with REST.
    let mut ws = WsClient::connect(&format!("{}?token={token}", node.ws_url())).await;
    let r = ws.request("order.place", body.clone()).await;
    assert_eq!(r["result"]["created"], false, "{r}");
    assert_eq!(r["result"]["order_id"].as_str(), ids.first().copied());
    let (_, orders) = node.api("GET", "/api/v1/orders", None, Some(&token));
    assert_eq!(orders.as_array().map(Vec::len), Some(1), "{orders}");
    let (_, acct) = node.api("GET", "/api/v1/account", None, Some(&token));
    assert_eq!(
        acct["balances"]["KRW"]["held"], "1000000",
        "one hold, not eight"
    );
}

/// What the test asked for, in acknowledgement order, to replay against.
struct Script {
    market: Market,
    book: BookState,
    /// Each acknowledged order: (order id, owner index, side, price ticks, qty lots).
    orders: Vec<(u64, usize, Side, u64, u64)>,
}

impl Script {
    fn placed(
        &mut self,
        ack: &Value,
        owner: usize,
        side: Side,
        price: u64,
        qty: u64,
        user_id: u64,
    ) {
        let id: u64 = ack["order_id"].as_str().unwrap().parse().unwrap();
        self.orders.push((id, owner, side, price, qty));
        self.book.apply(&Command::Submit {
            order: Order {
                id,
                owner: user_id,
                side,
                kind: Kind::Limit { price },
                qty,
                tif: TimeInForce::Gtc,
                post_only: false,
            },
            ts: 0,
        });
    }

    fn cancelled(&mut self, id: u64, user_id: u64) {
        self.book.apply(&Command::Cancel {
            order_id: id,
            owner: user_id,
            ts: 0,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn books_and_accounts_recover_every_acknowledged_order_after_kills() {
    let mut node = Node::start(
        "trade-recover",
        &format!("{NO_FEED}[trading]\nsnapshot_every = 7\n"),
    );
    let users: Vec<(u64, String)> = (0..3)
        .map(|i| {
            let (id, token) = node.register(&format!("trader{i}"));
            (id.parse().unwrap(), token)
        })
        .collect();
    let mut script = Script {
        market: btc(),
        book: BookState::new(),
        orders: Vec::new(),
    };
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut n = 0;
    let mut round = |node: &Node, script: &mut Script, count: usize| {
        for _ in 0..count {
            n += 1;
            let who = (next() % 3) as usize;
            if next() % 6 == 0 {
                // Cancel one of this user's open orders, if any.
                let open: Vec<u64> = script
                    .orders
                    .iter()
                    .filter(|o| o.1 == who)
                    .filter(|o| {
                        script
                            .book
                            .order(o.0)
                            .is_some_and(|t| !t.state.status.is_done())
                    })
                    .map(|o| o.0)
                    .collect();
                if let Some(id) = open.first() {
                    let (s, v) = node.api(
                        "DELETE",
                        &format!("/api/v1/orders/{id}"),
                        None,
                        Some(&users[who].1),
                    );
                    if s != 200 {
                        let (_, got) = node.api(
                            "GET",
                            &format!("/api/v1/orders/{id}"),
                            None,
                            Some(&users[who].1),
                        );
                        panic!(
                            "cancel {id} (op {n}): {s} {v}\nsystem: {got}\nreplay: {:?}\n{}",
                            script.book.order(*id),
                            node.log()
                        );
                    }
                    script.cancelled(*id, users[who].0);
                    continue;
                }
            }
            let side = if next() % 2 == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            let price = 139_990 + next() % 20; // ticks of 1000 KRW around 140M
            let qty = 1 + next() % 50; // lots of 0.0001 BTC
            let body = limit(
                if side == Side::Buy { "buy" } else { "sell" },
                &script.market.tick.format(price),
                &script.market.lot.format(qty),
            );
            let ack = place_acked(node, &users[who].1, body, &format!("r{n}"));
            script.placed(&ack, who, side, price, qty, users[who].0);
        }
    };
    round(&node, &mut script, 40);
    // Kill the book entity mid-stream (a panic inside it), then keep trading.
    let (status, v) = node.chaos_kill("book", "KRW-BTC");
    assert_eq!(status, 200, "{v}");
    round(&node, &mut script, 40);
    // Kill an account too.
    let (status, v) = node.chaos_kill("account", &users[1].0.to_string());
    assert_eq!(status, 200, "{v}");
    round(&node, &mut script, 20);
    // SIGKILL the node and start it again on the same data.
    node.kill9();
    node.restart();
    round(&node, &mut script, 40);

    // The book equals the replay of the acknowledged orders.
    let (_, book) = node.get("/api/v1/book/KRW-BTC?depth=200");
    let m = &script.market;
    let fmt = |levels: Vec<(u64, u64)>| -> Value {
        Value::Array(
            levels
                .iter()
                .map(|(p, q)| json!([m.tick.format(*p), m.lot.format(*q)]))
                .collect(),
        )
    };
    assert_eq!(
        book["bids"],
        fmt(script.book.engine().depth(Side::Buy, 200)),
        "bids"
    );
    assert_eq!(
        book["asks"],
        fmt(script.book.engine().depth(Side::Sell, 200)),
        "asks"
    );
    // Every order's status and fill, and no fill applied twice (filled ≤ qty, equal to replay).
    for (id, who, _, _, qty) in &script.orders {
        let expect = script.book.order(*id).expect("replayed order").state;
        let (s, got) = node.api(
            "GET",
            &format!("/api/v1/orders/{id}"),
            None,
            Some(&users[*who].1),
        );
        assert_eq!(s, 200, "{got}");
        assert_eq!(
            got["status"].as_str(),
            Some(status_name(expect.status)),
            "order {id}"
        );
        assert_eq!(
            got["filled_qty"].as_str(),
            Some(m.lot.format(expect.filled).as_str()),
            "order {id}"
        );
        assert!(expect.filled <= *qty);
    }
    // Every balance equals the replay: grants, minus what filled orders paid or delivered,
    // with open orders' remainders held.
    for (i, (_, token)) in users.iter().enumerate() {
        let (mut krw_avail, mut krw_held) = (100_000_000i128 * 100, 0i128); // KRW in 0.01 units
        let (mut btc_avail, mut btc_held) = (10_000i128, 0i128); // BTC in 0.0001 units
        for (id, who, side, price, qty) in &script.orders {
            if *who != i {
                continue;
            }
            let st = script.book.order(*id).unwrap().state;
            let cost = m.quote_amount(st.cost) as i128;
            let open_rest = if st.status.is_done() {
                0
            } else {
                (qty - st.filled) as i128
            };
            match side {
                Side::Buy => {
                    let hold = m.quote_amount(u128::from(*price)) as i128 * open_rest;
                    krw_avail -= cost + hold;
                    krw_held += hold;
                    btc_avail += st.filled as i128;
                }
                Side::Sell => {
                    btc_avail -= st.filled as i128 + open_rest;
                    btc_held += open_rest;
                    krw_avail += cost;
                }
            }
        }
        let krw = bourse_config::Step::from_exp(-2).unwrap();
        let (_, acct) = node.api("GET", "/api/v1/account", None, Some(token));
        assert_eq!(
            acct["balances"]["KRW"],
            json!({"available": krw.format_wide(krw_avail as u128), "held": krw.format_wide(krw_held as u128)}),
            "user {i} KRW"
        );
        assert_eq!(
            acct["balances"]["BTC"],
            json!({"available": m.lot.format(btc_avail as u64), "held": m.lot.format(btc_held as u64)}),
            "user {i} BTC"
        );
    }
    let tokens: Vec<&str> = users.iter().map(|(_, t)| t.as_str()).collect();
    let t = totals(&node, &tokens);
    assert_eq!(available_plus_held(&t, "KRW"), "300000000");
    assert_eq!(available_plus_held(&t, "BTC"), "3");
    println!(
        "recovery: {} acknowledged orders, book of {} resting orders",
        script.orders.len(),
        script.book.engine().len()
    );
}

fn status_name(s: Status) -> &'static str {
    s.as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_different_nodes_trade_and_survive_the_book_node_dying() {
    let mut cluster = Cluster::start("trade-cross", 3, NO_FEED);
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(20),
    );
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (_, alice) = a.register("xalice");
    let (_, bob) = b.register("xbob");
    // Tokens work on every node.
    assert_eq!(
        cluster.nodes[2]
            .api("GET", "/api/v1/account", None, Some(&alice))
            .0,
        200
    );

    let mut a_ws = WsClient::connect(&format!("{}?token={alice}", a.ws_url())).await;
    let mut b_ws = WsClient::connect(&format!("{}?token={bob}", b.ws_url())).await;
    for ws in [&mut a_ws, &mut b_ws] {
        let r = ws
            .request(
                "subscribe",
                json!({"channels": ["orders", "trades:KRW-BTC"]}),
            )
            .await;
        assert_eq!(r["ok"], true, "{r}");
    }
    let (s, sell) = a.api(
        "POST",
        "/api/v1/orders",
        Some(&limit("sell", "140000000", "0.3")),
        Some(&alice),
    );
    assert_eq!(s, 201, "{sell}");
    let r = b_ws
        .request("order.place", json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit", "price": "140000000", "qty": "0.1"}))
        .await;
    assert_eq!(r["result"]["status"], "filled", "{r}");
    for (who, ws) in [("alice", &mut a_ws), ("bob", &mut b_ws)] {
        ws.wait_event(Duration::from_secs(10), |e| {
            e.ch == "orders" && e.data["filled_qty"] == "0.1"
        })
        .await
        .unwrap_or_else(|| panic!("{who} sees the fill on orders"));
        ws.wait_event(Duration::from_secs(10), |e| {
            e.ch == "trades:KRW-BTC" && e.data["qty"] == "0.1"
        })
        .await
        .unwrap_or_else(|| panic!("{who} sees the trade on trades:S"));
    }

    // SIGKILL the node that owns the book, then keep trading from the survivors.
    let dead = cluster.owner(0, "book", "KRW-BTC");
    cluster.nodes[dead].kill9();
    let alive: Vec<usize> = (0..3).filter(|i| *i != dead).collect();
    let names: Vec<String> = alive.iter().map(|i| format!("node{}", i + 1)).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    cluster.wait_converged(&alive, &names, Duration::from_secs(20));
    let via = &cluster.nodes[alive[0]];
    let ack = place_acked(via, &bob, limit("buy", "140000000", "0.1"), "after-kill");
    assert_eq!(
        ack["status"], "filled",
        "the resting sell survived its node: {ack}"
    );
    let t = totals(via, &[&alice, &bob]);
    // Settlement of the maker may arrive a moment later; conservation holds regardless.
    assert_eq!(available_plus_held(&t, "KRW"), "200000000");
    assert_eq!(available_plus_held(&t, "BTC"), "2");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, o) = via.api(
            "GET",
            &format!("/api/v1/orders/{}", sell["order_id"].as_str().unwrap()),
            None,
            Some(&alice),
        );
        if o["filled_qty"] == "0.2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice's order never settled: {o}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_book_gives_unavailable_and_the_hold_comes_back() {
    let extra = format!("{NO_FEED}[cluster]\nask_timeout_ms = 1000\n");
    let cluster = Cluster::start("trade-unreach", 3, &extra);
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(20),
    );
    let book_node = cluster.owner(0, "book", "KRW-BTC");
    let via = (book_node + 1) % 3;
    // A user whose account lives on a node that stays up.
    let (user, token) = (0..20)
        .map(|i| cluster.nodes[via].register(&format!("unreach{i}")))
        .find(|(id, _)| cluster.owner(0, "account", id) != book_node)
        .expect("some account away from the book's node");
    let node = &cluster.nodes[via];
    assert_eq!(
        node.api("GET", "/api/v1/account", None, Some(&token)).0,
        200
    );

    // A symbol whose publisher stays up, and a WebSocket that asks for its ticker and the
    // book's together once the book's node hangs.
    let live = ["KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE", "KRW-ADA"]
        .into_iter()
        .find(|s| cluster.owner(0, "symbol", s) != book_node)
        .expect("some symbol away from the book's node");
    let ticker = format!("ticker:{live}");
    let mut ws = WsClient::connect(&format!("{}?token={token}", node.ws_url())).await;
    // Its publisher is running before the cut (the request below must not be the first
    // to start it).
    let warm = ws.request("subscribe", json!({"channels": [ticker]})).await;
    assert_eq!(warm["ok"], true, "{warm}");
    let cold = ws
        .request("unsubscribe", json!({"channels": [ticker]}))
        .await;
    assert_eq!(cold["result"]["unsubscribed"], json!([ticker]), "{cold}");
    ws.pump(Duration::from_millis(200)).await;
    ws.events.clear();

    // The book's node hangs (SIGSTOP: its TCP sessions stay open, it answers nothing).
    cluster.nodes[book_node].signal("STOP");
    let both = json!({"id": "both", "op": "subscribe", "channels": [ticker, "book:KRW-BTC"]});
    ws.send_raw(both.to_string()).await;
    let (status, v) = node.api(
        "POST",
        "/api/v1/orders",
        Some(&limit("buy", "100000000", "0.01")),
        Some(&token),
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{v}"
    );
    // The subscribe is refused whole: the ticker granted before the book is dropped again
    // (before, the connection kept it and got its live events with no snapshot).
    let refused = ws.wait_response("both", Duration::from_secs(10)).await;
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("channel 'book:KRW-BTC'"), "{refused}");
    let node_name = format!("node{}", via + 1);
    let (_, listed) = node.api(
        "GET",
        &format!("/admin/connections?node={node_name}"),
        None,
        Some(common::ADMIN_TOKEN),
    );
    // This test's WebSocket is the node's only client connection.
    let held: Vec<&Value> = listed["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .flat_map(|c| c["channels"].as_array().into_iter().flatten())
        .collect();
    assert!(
        !held
            .iter()
            .any(|c| **c == json!(ticker) || *c == "book:KRW-BTC"),
        "a refused subscribe left channels held: {listed}"
    );
    // Live ticker events after the refusal would come behind its answer.
    ws.pump(Duration::from_millis(300)).await;
    assert!(
        ws.events.is_empty(),
        "events of a refused subscribe: {:?}",
        ws.events
    );
    // The connection stays usable: the ticker alone is granted, its snapshot first.
    let alone = ws.request("subscribe", json!({"channels": [ticker]})).await;
    assert_eq!(alone["result"]["subscribed"], json!([ticker]), "{alone}");
    ws.wait_event(Duration::from_secs(5), |e| e.ch == ticker)
        .await
        .expect("the ticker's snapshot");

    // The hold comes back once the book, failed over to a survivor, confirms the order never
    // stands. (The hung node stays stopped: woken now, it could still take the order it
    // holds, which is the other legitimate outcome of a timeout.)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, acct) = node.api("GET", "/api/v1/account", None, Some(&token));
        let (_, done) = node.api("GET", "/api/v1/orders?status=done", None, Some(&token));
        if acct["balances"]["KRW"] == json!({"available": "100000000", "held": "0"})
            && done[0]["status"] == "rejected"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "user {user}: hold never released: {acct} {done}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.nodes[book_node].signal("CONT");
    // And the book works again: the same order now goes through.
    let ack = place_acked(
        node,
        &token,
        limit("buy", "100000000", "0.01"),
        "after-unreachable",
    );
    assert_eq!(ack["status"], "new", "{ack}");
}
