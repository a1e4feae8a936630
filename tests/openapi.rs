//! The OpenAPI document (`docs/openapi.yaml`, served as `GET /api/v1/openapi.json`) matches
//! what a node serves: every documented operation is routed, every other method on a
//! documented path is `405` naming exactly the documented ones, and real responses, good
//! and bad, validate against the schema the document gives for their status (JSON Schema
//! 2020-12, checked by the `jsonschema` crate).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, Node, header, raw_request};
use serde_json::{Value, json};
use std::time::Duration;

/// One request as a client sends it: (status, content type, body as JSON or a string).
fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let (status, headers, body) = raw_request(port, method, path, &auth, &body);
    let content_type = header(&headers, "content-type").unwrap_or("").to_string();
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, content_type, value)
}

/// The documented path a request's path is, by the gateway's own rule (the most literal
/// template that matches, as OpenAPI says).
fn template_of<'a>(doc: &'a Value, path: &str) -> &'a str {
    let paths = doc["paths"].as_object().expect("paths");
    bourse_gateway::routes::template_of(paths.keys().map(String::as_str), path)
        .unwrap_or_else(|| panic!("{path} matches no documented path"))
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => v,
    }
}

/// The documented response of `method path` for `status`.
fn documented<'a>(doc: &'a Value, method: &str, template: &str, status: u16) -> &'a Value {
    let op = &doc["paths"][template][method.to_lowercase()];
    assert!(op.is_object(), "{method} {template} is not documented");
    let responses = &op["responses"];
    let response = responses
        .get(status.to_string())
        .or_else(|| responses.get(format!("{}XX", status / 100)))
        .or_else(|| responses.get("default"))
        .unwrap_or_else(|| panic!("{method} {template}: status {status} is not documented"));
    resolve(doc, response)
}

/// Checks one real response to `method path` against the document.
fn check(doc: &Value, method: &str, path: &str, got: &(u16, String, Value)) {
    let template = template_of(doc, path);
    let (status, content_type, body) = got;
    let response = documented(doc, method, template, *status);
    let content = response["content"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {template} {status}: no content documented"));
    let media = content_type.split(';').next().unwrap_or("").trim();
    let Some(entry) = content.get(media) else {
        panic!("{method} {template} {status}: content type {content_type:?} not documented");
    };
    if media != "application/json" {
        return;
    }
    let mut schema = entry["schema"].clone();
    assert!(
        schema.is_object(),
        "{method} {template} {status}: no schema"
    );
    schema["components"] = doc["components"].clone();
    let validator = jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("{method} {template} {status}: bad schema: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {status}: the response breaks its schema: {errors:?}\n{body}"
    );
}

/// Sends each `(method, path, body)` with `token` and checks its answer.
fn check_samples(
    doc: &Value,
    port: u16,
    token: Option<&str>,
    samples: &[(&str, String, Option<Value>)],
) {
    for (method, path, body) in samples {
        let got = call(port, method, path, token, body.as_ref());
        check(doc, method, path, &got);
    }
}

const METHODS: [&str; 5] = ["GET", "POST", "DELETE", "PUT", "PATCH"];

/// A concrete path for a template.
fn concrete(template: &str) -> String {
    template
        .replace("{symbol}", "KRW-BTC")
        .replace("{room}", "KRW-BTC")
        .replace("{order_id}", "1")
        .replace("{alert_id}", "1")
        .replace("{kind}", "symbol")
        .replace("{key}", "KRW-BTC")
}

#[test]
fn the_document_matches_the_routes_and_the_responses() {
    let node = Node::start("openapi", "[feed]\ntrades_per_sec = 50\n");
    let port = node.port;
    let (status, _, doc) = call(port, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], json!("3.1.0"));

    // Every documented operation is routed; every other method is 405 naming them (a
    // concrete path is the template it matches most literally: `/api/v1/alerts/history`
    // is not `/api/v1/alerts/{alert_id}`).
    let paths = doc["paths"].as_object().unwrap();
    for (template, item) in paths {
        let path = concrete(template);
        let documented: Vec<&str> = METHODS
            .iter()
            .copied()
            .filter(|m| item.get(m.to_lowercase()).is_some())
            .collect();
        for method in METHODS {
            if template == "/sse" && method == "GET" {
                continue; // a stream that stays open; checked below with a bad channel
            }
            if template == "/admin/cluster/leave" && method == "POST" {
                continue; // would drain the node; checked below with a bad body
            }
            let (status, _, body) = call(port, method, &path, Some(ADMIN_TOKEN), Some(&json!({})));
            if documented.contains(&method) {
                assert_ne!(status, 405, "{method} {template}: {body}");
                assert!(
                    !(status == 404 && body["error"]["message"] == json!("no such route")),
                    "{method} {template} is documented but not routed"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {template} is served but not documented: {body}"
                );
            }
        }
    }

    // The check can fail: a wrong body, an undocumented status or content type is caught.
    let json_type = "application/json".to_string();
    for (template, got) in [
        (
            "/api/v1/symbols",
            (200, json_type.clone(), json!({"not": "a list"})),
        ),
        (
            "/api/v1/symbols",
            (200, json_type.clone(), json!([{"symbol": 5}])),
        ),
        (
            "/api/v1/ticker/{symbol}",
            (200, json_type.clone(), json!({"last": 1.5})),
        ),
        ("/api/v1/symbols", (418, json_type.clone(), json!([]))),
        ("/api/v1/symbols", (200, "text/html".to_string(), json!([]))),
    ] {
        let doc = &doc;
        let caught = std::panic::catch_unwind(|| check(doc, "GET", template, &got));
        assert!(caught.is_err(), "{template} {got:?} passed the check");
    }

    // Real responses, good and bad, against their documented schemas.
    let samples_public: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/healthz".into(), None),
        ("GET", "/readyz".into(), None),
        ("GET", "/api/v1/symbols".into(), None),
        ("GET", "/api/v1/symbols?q=btc".into(), None),
        ("GET", "/api/v1/symbols?query=btc".into(), None),
        ("GET", "/api/v1/watchlist".into(), None),
        ("GET", "/api/v1/rankings".into(), None),
        ("GET", "/api/v1/rankings?period=month".into(), None),
        ("GET", "/api/v1/ticker/KRW-BTC".into(), None),
        ("GET", "/api/v1/ticker/KRW-NOPE".into(), None),
        ("GET", "/api/v1/ticker/bad".into(), None),
        ("GET", "/api/v1/trades/KRW-BTC?limit=5".into(), None),
        ("GET", "/api/v1/trades/KRW-BTC?limit=0".into(), None),
        (
            "GET",
            "/api/v1/candles/KRW-BTC?interval=1s&limit=5".into(),
            None,
        ),
        ("GET", "/api/v1/candles/KRW-BTC?interval=7m".into(), None),
        ("GET", "/api/v1/book/KRW-BTC?depth=5".into(), None),
        ("GET", "/api/v1/chat/KRW-BTC/messages?limit=5".into(), None),
        ("GET", "/api/v1/chat/KRW-NOPE/messages".into(), None),
        ("GET", "/api/v1/account".into(), None),
        ("GET", "/api/v1/portfolio".into(), None),
        ("GET", "/api/v1/portfolio/history".into(), None),
        ("GET", "/ws".into(), None),
        ("GET", "/sse?channels=nonsense".into(), None),
        ("GET", "/admin/cluster".into(), None),
        (
            "POST",
            "/api/v1/auth/register".into(),
            Some(json!({"username": "ab", "password": "x"})),
        ),
        (
            "POST",
            "/api/v1/auth/register".into(),
            Some(json!({"username": "alice", "password": "correct horse"})),
        ),
        (
            "POST",
            "/api/v1/auth/register".into(),
            Some(json!({"username": "alice", "password": "correct horse"})),
        ),
        (
            "POST",
            "/api/v1/auth/login".into(),
            Some(json!({"username": "alice", "password": "correct horse"})),
        ),
        (
            "POST",
            "/api/v1/auth/login".into(),
            Some(json!({"username": "alice", "password": "wrong horse"})),
        ),
        ("POST", "/api/v1/auth/login".into(), Some(json!(["alice"]))),
    ];
    check_samples(&doc, port, None, &samples_public);
    let (_, token) = node.register("bob");
    let t = Some(token.as_str());
    // Trades on the tape first, so the ticker and candles are not empty.
    std::thread::sleep(Duration::from_millis(1500));
    let order = json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit", "price": "100000000", "qty": "0.001", "client_order_id": "c-1"});
    let (status, _, placed) = call(port, "POST", "/api/v1/orders", t, Some(&order));
    assert_eq!(status, 201, "{placed}");
    check(
        &doc,
        "POST",
        "/api/v1/orders",
        &(status, "application/json".into(), placed.clone()),
    );
    let order_id = placed["order_id"].as_str().unwrap().to_string();
    let (_, alert) = node.api(
        "POST",
        "/api/v1/alerts",
        Some(&json!({"symbol": "KRW-BTC", "condition": "above", "value": "900000000"})),
        t,
    );
    let alert_id = alert["alert_id"].as_str().unwrap().to_string();
    let samples_user: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", "/api/v1/orders".into(), Some(order.clone())),
        (
            "POST",
            "/api/v1/orders".into(),
            Some(
                json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit", "price": "100000001", "qty": "0.001"}),
            ),
        ),
        (
            "POST",
            "/api/v1/orders".into(),
            Some(
                json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit", "price": "100000000", "qty": "500"}),
            ),
        ),
        (
            "POST",
            "/api/v1/orders".into(),
            Some(json!({"symbol": "KRW-BTC", "side": "sell", "type": "market", "qty": "0.001"})),
        ),
        ("GET", "/api/v1/orders?status=open".into(), None),
        ("GET", "/api/v1/orders?status=done&limit=5".into(), None),
        ("GET", "/api/v1/orders?status=sideways".into(), None),
        ("GET", format!("/api/v1/orders/{order_id}"), None),
        ("GET", "/api/v1/orders/12345".into(), None),
        ("DELETE", format!("/api/v1/orders/{order_id}"), None),
        ("DELETE", format!("/api/v1/orders/{order_id}"), None),
        ("GET", "/api/v1/account".into(), None),
        ("GET", "/api/v1/portfolio".into(), None),
        ("GET", "/api/v1/portfolio/history".into(), None),
        ("GET", "/api/v1/portfolio/history?from=10&to=5".into(), None),
        ("GET", "/api/v1/rankings?period=all&limit=5".into(), None),
        ("GET", "/api/v1/book/KRW-BTC".into(), None),
        (
            "POST",
            "/api/v1/chat/KRW-BTC/messages".into(),
            Some(json!({"text": "hello"})),
        ),
        (
            "POST",
            "/api/v1/chat/KRW-BTC/messages".into(),
            Some(json!({"text": "   "})),
        ),
        ("GET", "/api/v1/chat/KRW-BTC/messages".into(), None),
        (
            "POST",
            "/api/v1/alerts".into(),
            Some(
                json!({"symbol": "KRW-BTC", "condition": "change_pct", "value": "-2.5", "repeat": true, "cooldown_s": 30}),
            ),
        ),
        (
            "POST",
            "/api/v1/alerts".into(),
            Some(json!({"symbol": "KRW-BTC", "condition": "sideways", "value": "1"})),
        ),
        ("GET", "/api/v1/alerts".into(), None),
        ("GET", "/api/v1/alerts/history?limit=5".into(), None),
        ("DELETE", format!("/api/v1/alerts/{alert_id}"), None),
        ("DELETE", format!("/api/v1/alerts/{alert_id}"), None),
        ("GET", "/api/v1/notifications?since=0".into(), None),
        (
            "PUT",
            "/api/v1/watchlist".into(),
            Some(json!({"symbols": ["KRW-ETH", "KRW-BTC"]})),
        ),
        (
            "PUT",
            "/api/v1/watchlist".into(),
            Some(json!({"symbols": ["KRW-NOPE"]})),
        ),
        ("GET", "/api/v1/watchlist".into(), None),
        ("GET", "/api/v1/ticker/KRW-BTC".into(), None),
        ("GET", "/api/v1/trades/KRW-BTC?limit=3".into(), None),
        (
            "GET",
            "/api/v1/candles/KRW-BTC?interval=1s&limit=3".into(),
            None,
        ),
    ];
    check_samples(&doc, port, t, &samples_user);
    let admin = Some(ADMIN_TOKEN);
    let samples_admin: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/admin/cluster".into(), None),
        ("GET", "/admin/entities?kind=symbol&limit=3".into(), None),
        ("GET", "/admin/entities?kind=nonsense".into(), None),
        ("GET", "/admin/entities/symbol/KRW-BTC".into(), None),
        ("GET", "/admin/entities/book/KRW-ETH".into(), None),
        ("GET", "/admin/entities/nonsense/x".into(), None),
        (
            "POST",
            "/admin/chaos/kill".into(),
            Some(json!({"kind": "symbol", "key": "KRW-XRP"})),
        ),
        (
            "POST",
            "/admin/chaos/kill".into(),
            Some(json!({"kind": "symbol", "fraction": 0.5})),
        ),
        (
            "POST",
            "/admin/chaos/kill".into(),
            Some(json!({"kind": "book", "key": "KRW-NOPE"})),
        ),
        (
            "POST",
            "/admin/chaos/kill".into(),
            Some(json!({"kind": "symbol"})),
        ),
        (
            "POST",
            "/admin/cluster/leave".into(),
            Some(json!({"node": "node9"})),
        ),
        ("POST", "/admin/cluster/leave".into(), Some(json!({}))),
        (
            "POST",
            "/admin/cluster/down".into(),
            Some(json!({"node": "node9"})),
        ),
        ("POST", "/admin/cluster/down".into(), Some(json!({}))),
        ("GET", "/admin/connections?limit=5".into(), None),
        ("GET", "/admin/connections?limit=0".into(), None),
        ("GET", "/admin/connections?node=node9".into(), None),
        (
            "POST",
            "/admin/chaos/kill-connection".into(),
            Some(json!({"id": 999_999})),
        ),
        (
            "POST",
            "/admin/chaos/kill-connection".into(),
            Some(json!({"id": "x"})),
        ),
        (
            "POST",
            "/admin/bench/routing".into(),
            Some(json!({"mode": "ask", "target": "local", "count": 10})),
        ),
        (
            "POST",
            "/admin/bench/routing".into(),
            Some(json!({"mode": "fly"})),
        ),
        ("GET", "/metrics".into(), None),
    ];
    check_samples(&doc, port, admin, &samples_admin);
    // Bodies over the route's limit, and a wrong token on an admin route.
    let big = json!({"symbol": "x".repeat(9000)});
    let got = call(port, "POST", "/api/v1/orders", t, Some(&big));
    assert_eq!(got.0, 413);
    check(&doc, "POST", "/api/v1/orders", &got);
    let got = call(
        port,
        "GET",
        "/admin/cluster",
        Some("wrong-token-0123456789"),
        None,
    );
    assert_eq!(got.0, 403);
    check(&doc, "GET", "/admin/cluster", &got);
}
