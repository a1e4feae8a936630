//! Price alerts and the inbox through the protocol only: 10,000 rules on one symbol fire
//! exactly where a brute-force check says; a one-shot rule fires once across kills of its
//! entity, its symbol and the symbol's node; a user on one node gets an alert fired on
//! another; an offline user finds alerts and fills in the inbox; bad input gets its code.
//!
//! The simulator is off (`feed.kind = "none"`): the only trades are the tests' own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bourse_actors::alert::Condition;
use common::{ADMIN_TOKEN, Cluster, Node, WsClient};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const NO_FEED: &str = "[feed]\nkind = \"none\"\n";
const SYMBOL: &str = "KRW-BTC";
/// KRW-BTC's tick (config default): prices on the wire are ticks × 1000.
const TICK: u64 = 1000;

fn price(ticks: u64) -> String {
    (ticks * TICK).to_string()
}

/// One trade at `ticks` between `seller` and `buyer`: a resting sell, then a buy that
/// takes it. Retries `unavailable` (an entity moving) with the same client order id.
fn trade(node: &Node, seller: &str, buyer: &str, ticks: u64, tag: &str) {
    for (token, side) in [(seller, "sell"), (buyer, "buy")] {
        let body = json!({"symbol": SYMBOL, "side": side, "type": "limit",
            "price": price(ticks), "qty": "0.001", "client_order_id": format!("{tag}-{side}")});
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, v) = node.api("POST", "/api/v1/orders", Some(&body), Some(token));
            match status {
                200 | 201 => {
                    if side == "buy" {
                        assert_eq!(v["status"], "filled", "{v}");
                    }
                    break;
                }
                503 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                _ => panic!("{side} at {ticks}: {status} {v}\n{}", node.log()),
            }
        }
    }
}

fn create(node: &Node, token: &str, body: &Value) -> (u16, Value) {
    node.api("POST", "/api/v1/alerts", Some(body), Some(token))
}

/// Every inbox entry of a user, paging with `since`.
fn inbox(node: &Node, token: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut since = 0;
    loop {
        let (status, page) = node.api(
            "GET",
            &format!("/api/v1/notifications?since={since}&limit=500"),
            None,
            Some(token),
        );
        assert_eq!(status, 200, "{page}");
        let page = page.as_array().unwrap().clone();
        let Some(last) = page.last() else {
            return out;
        };
        since = last["ts"].as_i64().unwrap();
        out.extend(page);
    }
}

/// Inbox alert entries: alert id → (n, fired price), asserting each `(id, n)` is there once.
fn inbox_alerts(node: &Node, token: &str) -> BTreeMap<u64, Vec<(u64, String)>> {
    let mut out: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
    for e in inbox(node, token).iter().filter(|e| e["kind"] == "alert") {
        let id: u64 = e["data"]["alert_id"].as_str().unwrap().parse().unwrap();
        let n = e["data"]["n"].as_u64().unwrap();
        let fired = e["data"]["fired_price"].as_str().unwrap().to_string();
        let firings = out.entry(id).or_default();
        assert!(
            !firings.iter().any(|(m, _)| *m == n),
            "firing {id}/{n} twice in the inbox"
        );
        firings.push((n, fired));
    }
    out
}

/// A seeded rule generator: thresholds around 140M KRW, a fifth of them `change_pct`.
fn rule(rng: &mut u64) -> (Condition, Value) {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let r = *rng;
    match r % 10 {
        0..=3 => {
            let t = 139_000 + (r >> 8) % 2_500;
            (
                Condition::Above(t),
                json!({"condition": "above", "value": price(t)}),
            )
        }
        4..=7 => {
            let t = 139_000 + (r >> 8) % 2_500;
            (
                Condition::Below(t),
                json!({"condition": "below", "value": price(t)}),
            )
        }
        _ => {
            let bp = 5 + ((r >> 8) % 96) as i64;
            let bp = if r & 0x10000 == 0 { bp } else { -bp };
            // Canonical, as the server shows decimals: no trailing zeros.
            let pct = format!(
                "{}{}.{:02}",
                if bp < 0 { "-" } else { "" },
                bp.abs() / 100,
                bp.abs() % 100
            )
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string();
            (
                Condition::ChangePct(bp),
                json!({"condition": "change_pct", "value": pct}),
            )
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rules_fire_exactly_where_a_scan_of_every_rule_says() {
    const USERS: usize = 4;
    const PER_USER: usize = 2_500;
    let extra = format!("{NO_FEED}[alerts]\nmax_per_user = {PER_USER}\n");
    let node = Node::start("alerts-10k", &extra);
    let users: Vec<(String, String)> = (0..USERS)
        .map(|i| node.register(&format!("watcher{i}")))
        .collect();
    let (_, seller) = node.register("seller");
    let (_, buyer) = node.register("buyer");

    // 10,000 rules, created by 8 clients at once (two per user).
    let created: Vec<(usize, u64, Condition)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..USERS * 2)
            .map(|t| {
                let (node, users) = (&node, &users);
                s.spawn(move || {
                    let user = t / 2;
                    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                    let mut made = Vec::new();
                    for _ in 0..PER_USER / 2 {
                        let (condition, mut body) = rule(&mut rng);
                        body["symbol"] = json!(SYMBOL);
                        let (status, v) = create(node, &users[user].1, &body);
                        assert_eq!(status, 201, "{body}: {v}");
                        assert_eq!(v["status"], "armed");
                        assert_eq!(v["value"], body["value"], "the value reads back as sent");
                        let id = v["alert_id"].as_str().unwrap().parse().unwrap();
                        made.push((user, id, condition));
                    }
                    made
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(created.len(), USERS * PER_USER);
    // The per-user limit holds.
    let (status, v) = create(
        &node,
        &users[0].1,
        &json!({"symbol": SYMBOL, "condition": "above", "value": "1000"}),
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );

    // A price path: the first trade is the change window's reference.
    let path = [140_000u64, 140_350, 139_720, 140_610, 139_400, 140_000];
    for (i, &p) in path.iter().enumerate() {
        trade(&node, &seller, &buyer, p, &format!("t{i}"));
    }

    // The brute force: a rule fires at the first trade that satisfies it.
    let reference = path[0];
    let expected: BTreeMap<u64, (usize, u64)> = created
        .iter()
        .filter_map(|&(user, id, c)| {
            path.iter()
                .find(|&&p| c.holds(p, reference))
                .map(|&p| (id, (user, p)))
        })
        .collect();
    assert!(
        expected.len() > 1_000 && expected.len() < 9_000,
        "the path crosses some rules, not all: {}",
        expected.len()
    );

    // Wait until every user's fired rules add up, then compare exactly.
    let deadline = Instant::now() + Duration::from_secs(120);
    let fired_of = |token: &str| -> BTreeMap<u64, u64> {
        let (status, rules) = node.api("GET", "/api/v1/alerts", None, Some(token));
        assert_eq!(status, 200, "{rules}");
        rules
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "fired")
            .map(|r| {
                (
                    r["alert_id"].as_str().unwrap().parse().unwrap(),
                    r["fired_count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let mut fired: BTreeMap<u64, u64> = BTreeMap::new();
    loop {
        fired.clear();
        for (_, token) in &users {
            fired.extend(fired_of(token));
        }
        if fired.len() >= expected.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fired_ids: BTreeSet<u64> = fired.keys().copied().collect();
    let expected_ids: BTreeSet<u64> = expected.keys().copied().collect();
    assert_eq!(
        fired_ids.difference(&expected_ids).count(),
        0,
        "fired but not crossed: {:?}",
        fired_ids
            .difference(&expected_ids)
            .take(10)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        expected_ids.difference(&fired_ids).count(),
        0,
        "crossed but not fired: {:?}",
        expected_ids
            .difference(&fired_ids)
            .take(10)
            .collect::<Vec<_>>()
    );
    assert!(fired.values().all(|&n| n == 1), "one-shot rules fire once");

    // Every firing is in its owner's inbox once, at the first price that satisfied it.
    let mut in_inbox = 0;
    for (user, (_, token)) in users.iter().enumerate() {
        for (id, firings) in inbox_alerts(&node, token) {
            let (owner, at) = expected[&id];
            assert_eq!(owner, user, "alert {id} in the wrong inbox");
            assert_eq!(firings, vec![(1, price(at))], "alert {id}");
            in_inbox += 1;
        }
    }
    assert_eq!(in_inbox, expected.len());
    // History agrees (newest first, one page).
    let (status, history) = node.api(
        "GET",
        "/api/v1/alerts/history?limit=200",
        None,
        Some(&users[0].1),
    );
    assert_eq!(status, 200, "{history}");
    let history = history.as_array().unwrap();
    assert!(!history.is_empty());
    for h in history {
        let id: u64 = h["alert_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(h["fired_price"], price(expected[&id].1), "{h}");
    }
    // The traders' inboxes hold their fills, one per trade each.
    for token in [&seller, &buyer] {
        let fills = inbox(&node, token)
            .into_iter()
            .filter(|e| e["kind"] == "fill")
            .count();
        assert_eq!(fills, path.len());
    }
}

/// Waits for `ws` to show an `alerts` event of `alert_id`.
async fn wait_alert(ws: &mut WsClient, alert_id: &str) -> Value {
    ws.wait_event(Duration::from_secs(30), |e| {
        e.ch == "alerts" && e.data["alert_id"] == alert_id
    })
    .await
    .unwrap_or_else(|| panic!("alert {alert_id} never arrived: {:?}", ws.events))
    .data
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_rule_fires_once_across_kills_and_reaches_other_nodes_and_the_offline() {
    let mut cluster = Cluster::start("alerts-cross", 3, NO_FEED);
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(20),
    );
    let symbol_node = cluster.owner(0, "symbol", SYMBOL);
    let ws_node = (symbol_node + 1) % 3;
    let trade_node = (symbol_node + 2) % 3;
    let (_, seller) = cluster.nodes[trade_node].register("seller");
    let (_, buyer) = cluster.nodes[trade_node].register("buyer");
    let (_, watcher) = cluster.nodes[ws_node].register("watcher");
    let (offline_id, offline) = cluster.nodes[ws_node].register("offline");

    // The watcher is connected to a node that does not own the symbol, on WebSocket and
    // SSE-free REST; rules are created over both.
    let mut ws = WsClient::connect(&format!(
        "{}?token={watcher}",
        cluster.nodes[ws_node].ws_url()
    ))
    .await;
    let r = ws
        .request("subscribe", json!({"channels": ["alerts"]}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = ws
        .request(
            "alert.create",
            json!({"symbol": SYMBOL, "condition": "above", "value": price(141_000)}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let first = r["result"]["alert_id"].as_str().unwrap().to_string();
    let (status, second) = create(
        &cluster.nodes[ws_node],
        &watcher,
        &json!({"symbol": SYMBOL, "condition": "above", "value": price(141_500)}),
    );
    assert_eq!(status, 201, "{second}");
    let second = second["alert_id"].as_str().unwrap().to_string();
    let r = ws.request("alert.list", json!({})).await;
    assert_eq!(r["result"].as_array().map(Vec::len), Some(2), "{r}");
    // The offline user's rule, then the offline user goes away (no connection at all).
    let (status, lonely) = create(
        &cluster.nodes[ws_node],
        &offline,
        &json!({"symbol": SYMBOL, "condition": "below", "value": price(139_000)}),
    );
    assert_eq!(status, 201, "{lonely}");
    let lonely = lonely["alert_id"].as_str().unwrap().to_string();
    // And an order of theirs that will fill while they are away.
    let (status, resting) = cluster.nodes[ws_node].api(
        "POST",
        "/api/v1/orders",
        Some(&json!({"symbol": SYMBOL, "side": "sell", "type": "limit",
            "price": price(142_000), "qty": "0.001"})),
        Some(&offline),
    );
    assert_eq!(status, 201, "{resting}");

    // 1. A trade at 141.0M fires the first rule, on another node; the watcher sees it.
    trade(&cluster.nodes[trade_node], &seller, &buyer, 141_000, "a");
    let event = wait_alert(&mut ws, &first).await;
    assert_eq!(
        (
            event["fired_price"].as_str(),
            event["price"].as_str(),
            event["n"].as_u64()
        ),
        (Some("141000000"), Some("141000000"), Some(1)),
        "{event}"
    );

    // 2. Its entity and the symbol are killed; the price stays above: nothing fires again.
    for (kind, key) in [("alert", first.as_str()), ("symbol", SYMBOL)] {
        let (status, v) = cluster.nodes[0].chaos_kill(kind, key);
        assert_eq!(status, 200, "kill {kind}/{key}: {v}");
    }
    trade(&cluster.nodes[trade_node], &seller, &buyer, 141_200, "b");

    // 3. The symbol's node is SIGKILLed and restarted; the symbol rebuilds its index from
    //    storage on a survivor, and the next rule fires there.
    cluster.nodes[symbol_node].kill9();
    let survivors = [
        format!("node{}", ws_node + 1),
        format!("node{}", trade_node + 1),
    ];
    cluster.wait_converged(
        &[ws_node, trade_node],
        &[survivors[0].as_str(), survivors[1].as_str()],
        Duration::from_secs(30),
    );
    trade(&cluster.nodes[trade_node], &seller, &buyer, 141_600, "c");
    wait_alert(&mut ws, &second).await;
    cluster.nodes[symbol_node].restart();
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(30),
    );
    // 4. A fall through the offline user's threshold (and through their resting sell first).
    trade(&cluster.nodes[trade_node], &seller, &buyer, 142_000, "d");
    trade(&cluster.nodes[trade_node], &seller, &buyer, 138_900, "e");

    // Exactly once each, in history and on the stream.
    let history = |token: &str| -> Vec<(String, u64)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, v) =
                cluster.nodes[ws_node].api("GET", "/api/v1/alerts/history", None, Some(token));
            assert_eq!(status, 200, "{v}");
            let got: Vec<(String, u64)> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h["alert_id"].as_str().unwrap().to_string(),
                        h["n"].as_u64().unwrap(),
                    )
                })
                .collect();
            if !got.is_empty() || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut got = history(&watcher);
    got.sort();
    let mut want = vec![(first.clone(), 1), (second.clone(), 1)];
    want.sort();
    assert_eq!(got, want, "each one-shot rule fired exactly once");
    ws.pump(Duration::from_millis(500)).await;
    for id in [&first, &second] {
        let seen = ws
            .events
            .iter()
            .filter(|e| e.ch == "alerts" && e.data["alert_id"] == id.as_str())
            .count();
        assert_eq!(seen, 1, "alert {id} on the stream once");
    }

    // The offline user logs in later, on any node, and finds the alert and the fill.
    let (status, login) = cluster.nodes[trade_node].post(
        "/api/v1/auth/login",
        &json!({"username": "offline", "password": "password123"}),
        &[],
    );
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["user_id"], offline_id);
    let token = login["token"].as_str().unwrap();
    let entries = inbox(&cluster.nodes[trade_node], token);
    let alerts: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "alert").collect();
    assert_eq!(alerts.len(), 1, "{entries:?}");
    assert_eq!(alerts[0]["data"]["alert_id"], lonely.as_str());
    assert_eq!(alerts[0]["data"]["fired_price"], "138900000");
    let fills: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "fill").collect();
    assert_eq!(fills.len(), 1, "{entries:?}");
    assert_eq!(fills[0]["data"]["order_id"], resting["order_id"]);
    assert_eq!(fills[0]["data"]["status"], "filled");
    // Nothing after the newest entry.
    let newest = entries.last().unwrap()["ts"].as_i64().unwrap();
    let (_, later) = cluster.nodes[0].api(
        "GET",
        &format!("/api/v1/notifications?since={newest}"),
        None,
        Some(token),
    );
    assert_eq!(later, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_alert_input_gets_its_error_code() {
    let node = Node::start("alerts-bad", NO_FEED);
    let (_, alice) = node.register("alice");
    let (_, mallory) = node.register("mallory");
    let good = json!({"symbol": SYMBOL, "condition": "above", "value": "150000000"});
    let (status, mine) = create(&node, &alice, &good);
    assert_eq!(status, 201, "{mine}");
    let id = mine["alert_id"].as_str().unwrap();
    assert_eq!(
        (mine["repeat"].as_bool(), mine["cooldown_s"].as_u64()),
        (Some(false), Some(60))
    );

    let with = |patch: Value| {
        let mut b = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (body, why) in [
        (with(json!({"symbol": "KRW-NOPE"})), "unknown symbol"),
        (with(json!({"symbol": "krw-btc"})), "malformed symbol"),
        (with(json!({"value": "-150000000"})), "negative threshold"),
        (with(json!({"value": "0"})), "zero threshold"),
        (with(json!({"value": "150000500"})), "off the tick"),
        (with(json!({"value": "lots"})), "not a number"),
        (
            with(json!({"value": 150000000})),
            "a number, not a decimal string",
        ),
        (with(json!({"condition": "sideways"})), "unknown condition"),
        (
            with(json!({"condition": "change_pct", "value": "0"})),
            "zero change",
        ),
        (
            with(json!({"condition": "change_pct", "value": "1.234"})),
            "too precise",
        ),
        (
            with(json!({"repeat": true, "cooldown_s": 0})),
            "no cooldown",
        ),
        (with(json!({"cooldown_s": 99_999_999})), "cooldown too long"),
        (with(json!({"extra": 1})), "unknown field"),
        (
            json!({"symbol": SYMBOL, "condition": "above"}),
            "missing value",
        ),
    ] {
        let (status, v) = create(&node, &alice, &body);
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{why}: {v}"
        );
    }
    // Another user's alert, a made-up one, a malformed id: not found.
    for (token, path) in [
        (&mallory, format!("/api/v1/alerts/{id}")),
        (&alice, "/api/v1/alerts/987654321".to_string()),
        (&alice, "/api/v1/alerts/x1".to_string()),
    ] {
        let (status, v) = node.api("DELETE", &path, None, Some(token));
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{path}: {v}"
        );
    }
    let (_, theirs) = node.api("GET", "/api/v1/alerts", None, Some(&mallory));
    assert_eq!(theirs, json!([]), "nobody sees another user's rules");
    // No token, and a bad query.
    assert_eq!(create(&node, "", &good).0, 401);
    assert_eq!(node.api("GET", "/api/v1/notifications", None, None).0, 401);
    let (status, v) = node.api(
        "GET",
        "/api/v1/notifications?since=yesterday",
        None,
        Some(&alice),
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, _) = node.api("GET", "/api/v1/alerts/history?limit=0", None, Some(&alice));
    assert_eq!(status, 400);
    // WebSocket: refused before auth, then the same rules, and the connection stays usable.
    let mut ws = WsClient::connect(&node.ws_url()).await;
    let r = ws.request("alert.list", json!({})).await;
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    let r = ws
        .request("subscribe", json!({"channels": ["alerts"]}))
        .await;
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    let r = ws.request("auth", json!({"token": alice})).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = ws
        .request("alert.create", with(json!({"value": "-1"})))
        .await;
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let r = ws.request("alert.delete", json!({"alert_id": id})).await;
    assert_eq!(r["result"]["status"], "deleted", "{r}");
    let r = ws.request("alert.delete", json!({"alert_id": id})).await;
    assert_eq!(r["error"]["code"], "not_found", "deleted twice: {r}");
    let r = ws.request("alert.list", json!({})).await;
    assert_eq!(r["result"], json!([]), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeating_rule_waits_out_its_cooldown_and_streams_over_sse() {
    let node = Node::start("alerts-repeat", NO_FEED);
    let (watcher_id, watcher) = node.register("watcher");
    let (_, seller) = node.register("seller");
    let (_, buyer) = node.register("buyer");
    let (status, rule) = create(
        &node,
        &watcher,
        &json!({"symbol": SYMBOL, "condition": "above", "value": price(141_000),
            "repeat": true, "cooldown_s": 1}),
    );
    assert_eq!(status, 201, "{rule}");
    let id = rule["alert_id"].as_str().unwrap().to_string();

    // A browser client on SSE, logged in by `?token=`; it is attached once the session
    // lists it.
    let (port, path) = (node.port, format!("/sse?channels=alerts&token={watcher}"));
    let sse =
        std::thread::spawn(move || common::read_sse(port, &path, None, Duration::from_secs(30), 2));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = node.api(
            "GET",
            &format!("/admin/entities/session/{watcher_id}"),
            None,
            Some(ADMIN_TOKEN),
        );
        if v["state"]["connections"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
        {
            break;
        }
        assert!(Instant::now() < deadline, "SSE never attached: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));

    let fired = |n: usize| -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, h) = node.api("GET", "/api/v1/alerts/history", None, Some(&watcher));
            let h = h.as_array().unwrap().clone();
            if h.len() >= n || Instant::now() > deadline {
                return h;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    trade(&node, &seller, &buyer, 141_000, "a");
    assert_eq!(fired(1).len(), 1);
    // Within the cooldown: the price still satisfies the rule, and nothing fires.
    trade(&node, &seller, &buyer, 141_100, "b");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fired(1).len(), 1, "no firing inside the cooldown");
    std::thread::sleep(Duration::from_millis(1_000));
    trade(&node, &seller, &buyer, 141_200, "c");
    let history = fired(2);
    let got: Vec<(u64, &str)> = history
        .iter()
        .map(|h| (h["n"].as_u64().unwrap(), h["fired_price"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![(2, "141200000"), (1, "141000000")],
        "newest first"
    );
    let (_, rules) = node.api("GET", "/api/v1/alerts", None, Some(&watcher));
    assert_eq!(
        (
            rules[0]["status"].as_str(),
            rules[0]["fired_count"].as_u64()
        ),
        (Some("armed"), Some(2)),
        "{rules}"
    );

    let (status, events) = sse.join().unwrap();
    assert_eq!(status, 200);
    let seen: Vec<(String, u64)> = events
        .iter()
        .map(|e| (e.event.clone(), e.data["data"]["n"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(
        seen,
        vec![("alerts".to_string(), 1), ("alerts".to_string(), 2)],
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e.data["data"]["alert_id"] == id.as_str())
    );

    // Deleted: it never fires again.
    let (status, gone) = node.api(
        "DELETE",
        &format!("/api/v1/alerts/{id}"),
        None,
        Some(&watcher),
    );
    assert_eq!(
        (status, gone["status"].as_str()),
        (200, Some("deleted")),
        "{gone}"
    );
    std::thread::sleep(Duration::from_millis(1_100));
    trade(&node, &seller, &buyer, 141_300, "d");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fired(2).len(), 2, "a deleted rule stays quiet");
}

#[test]
fn the_per_user_cap_holds_when_a_user_creates_rules_on_many_symbols_at_once() {
    let node = Node::start(
        "alerts-cap-race",
        &format!("{NO_FEED}[alerts]\nmax_per_user = 3\n"),
    );
    let (_, token) = node.register("eager");
    let symbols = [
        "KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE", "KRW-ADA",
    ];
    // Twelve creations at once, two per symbol: each symbol is its own entity, so only the
    // user's one account can keep count.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let (node, token) = (&node, &token);
                s.spawn(move || {
                    let body = json!({"symbol": symbols[i % symbols.len()], "condition": "change_pct", "value": "5"});
                    let (status, v) = create(node, token, &body);
                    assert!(status == 201 || status == 400, "{status} {v}");
                    if status == 400 {
                        assert!(v["error"]["message"].as_str().unwrap().contains("at most 3"), "{v}");
                    }
                    status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        3,
        "{statuses:?}"
    );
    let (status, rules) = node.api("GET", "/api/v1/alerts", None, Some(&token));
    assert_eq!(status, 200);
    assert_eq!(rules.as_array().map(Vec::len), Some(3), "{rules}");
}

#[test]
fn the_inbox_keeps_each_users_newest_entries_and_says_how_many_went() {
    let node = Node::start(
        "alerts-inbox-retention",
        &format!("{NO_FEED}[alerts]\ninbox_max_per_user = 3\ninbox_sweep_every_s = 1\n"),
    );
    let (_, seller) = node.register("seller");
    let (_, buyer) = node.register("buyer");
    for i in 0..6 {
        trade(&node, &seller, &buyer, 140_000 + i, &format!("r{i}"));
    }
    // The buyer's fills at the six prices, newest last; a sweep leaves the last three.
    let deadline = Instant::now() + Duration::from_secs(20);
    let kept = loop {
        let kept = inbox(&node, &buyer);
        if kept.len() <= 3 {
            break kept;
        }
        assert!(
            Instant::now() < deadline,
            "{} entries still: {kept:?}",
            kept.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let prices: Vec<&str> = kept
        .iter()
        .map(|e| e["data"]["price"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        prices,
        [price(140_003), price(140_004), price(140_005)],
        "{kept:?}"
    );
    let (_, text) = node.get("/metrics");
    let pruned = common::metric(
        text.as_str().unwrap_or_default(),
        "bourse_inbox_pruned_total",
    );
    assert!(
        pruned.is_some_and(|n| n >= 6.0),
        "both users lost three: {pruned:?}"
    );
}

#[test]
fn a_firing_lost_with_a_killed_node_fires_when_its_symbol_comes_back() {
    let mut node = Node::start("alerts-lost-firing", NO_FEED);
    let (_, watcher) = node.register("watcher");
    let (_, seller) = node.register("seller");
    let (_, buyer) = node.register("buyer");
    let rule = json!({"symbol": SYMBOL, "condition": "above", "value": price(140_500)});
    let (status, v) = create(&node, &watcher, &rule);
    assert_eq!(status, 201, "{v}");
    // Killed the moment the trade is on the symbol's tape: its firing may be anywhere
    // between the symbol and the inbox. (Killed before that, the fill is in the book's
    // journal but not on the tape, and nothing re-sends it yet.)
    trade(&node, &seller, &buyer, 140_600, "lost");
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.get(&format!("/api/v1/ticker/{SYMBOL}")).1["last"] != price(140_600) {
        assert!(
            Instant::now() < deadline,
            "the trade never reached the ticker"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    node.kill9();
    node.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Any read of the symbol activates it, and an activating symbol replays its trades.
        let (status, _) = node.get(&format!("/api/v1/ticker/{SYMBOL}"));
        assert_eq!(status, 200);
        let fired = inbox_alerts(&node, &watcher);
        if let Some((_, firings)) = fired.iter().next() {
            assert_eq!(firings, &[(1, price(140_600))], "fired once, at the trade");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the firing was lost:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
