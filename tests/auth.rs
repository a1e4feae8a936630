//! Auth through the protocol (docs/PROTOCOL.md "Auth"): register and login, and every way a token
//! is refused — wrong password, unknown user, forged, signed with another secret, expired —
//! on REST, WebSocket and SSE, on any node of a cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Cluster, Node, WsClient};
use serde_json::json;
use std::time::Duration;

const NO_FEED: &str = "[feed]\nkind = \"none\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_and_every_refused_token() {
    let node = Node::start("auth", NO_FEED);
    let (id, token) = node.register("dora");
    // Login gives a token for the same user.
    let (status, v) = node.post(
        "/api/v1/auth/login",
        &json!({"username": "dora", "password": "password123"}),
        &[],
    );
    assert_eq!(
        (status, v["user_id"].as_str()),
        (200, Some(id.as_str())),
        "{v}"
    );
    // Taken names, bad names and passwords, unknown fields.
    for (body, status, code) in [
        (
            json!({"username": "dora", "password": "password123"}),
            409,
            "conflict",
        ),
        (
            json!({"username": "Dora!", "password": "password123"}),
            400,
            "bad_request",
        ),
        (
            json!({"username": "ab", "password": "password123"}),
            400,
            "bad_request",
        ),
        (
            json!({"username": "erin", "password": "short"}),
            400,
            "bad_request",
        ),
        (
            json!({"username": "erin", "password": "password123", "admin": true}),
            400,
            "bad_request",
        ),
    ] {
        let (s, v) = node.post("/api/v1/auth/register", &body, &[]);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {v}"
        );
    }
    // Wrong password and unknown user: the same 401.
    for body in [
        json!({"username": "dora", "password": "password124"}),
        json!({"username": "nobody", "password": "password123"}),
    ] {
        let (s, v) = node.post("/api/v1/auth/login", &body, &[]);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{v}"
        );
        assert_eq!(v["error"]["message"], "wrong username or password");
    }
    // A token signed with another secret (a node configured differently) is refused here.
    let other = Node::start_env(
        "auth-other",
        NO_FEED,
        vec![(
            "BOURSE_AUTH__SECRET".into(),
            "a-different-secret-0123456789".into(),
        )],
        true,
    );
    let (_, foreign) = other.register("dora");
    // A token that expired: a node whose tokens live one second.
    let short = Node::start_env(
        "auth-short",
        NO_FEED,
        vec![("BOURSE_AUTH__TOKEN_TTL_S".into(), "1".into())],
        true,
    );
    let (_, expiring) = short.register("fred");
    assert_eq!(
        short.api("GET", "/api/v1/account", None, Some(&expiring)).0,
        200
    );
    std::thread::sleep(Duration::from_millis(2100));
    for (who, t) in [
        ("foreign", foreign.as_str()),
        ("garbage", "abc.def.ghi"),
        ("expired", expiring.as_str()),
    ] {
        let (s, v) = node.api("GET", "/api/v1/account", None, Some(t));
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{who}: {v}"
        );
        let (s, _) = node.api("POST", "/api/v1/orders", Some(&json!({})), Some(t));
        assert_eq!(
            s, 401,
            "{who}: orders need a valid token before anything else"
        );
        // WebSocket: refused at the upgrade, and by op auth on an open connection.
        let url = format!("{}?token={t}", node.ws_url());
        assert!(
            tokio_tungstenite::connect_async(url.as_str())
                .await
                .is_err(),
            "{who}"
        );
        let mut ws = WsClient::connect(&node.ws_url()).await;
        let r = ws.request("auth", json!({"token": t})).await;
        assert_eq!(r["error"]["code"], "unauthorized", "{who}: {r}");
        let r = ws.request("ping", json!({})).await;
        assert_eq!(r["ok"], true, "the connection stays usable");
        let (s, _) = common::read_sse(
            node.port,
            &format!("/sse?channels=orders&token={t}"),
            None,
            Duration::from_millis(300),
            1,
        );
        assert_eq!(s, 401, "{who} on SSE");
    }
    // The expiry is checked against the clock, not just the signature: a fresh login works.
    let (s, v) = short.post(
        "/api/v1/auth/login",
        &json!({"username": "fred", "password": "password123"}),
        &[],
    );
    assert_eq!(s, 200, "{v}");
    // And the good token works on WebSocket.
    let mut ws = WsClient::connect(&format!("{}?token={token}", node.ws_url())).await;
    let r = ws.request("order.list", json!({})).await;
    assert_eq!(r["ok"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_on_every_node_of_a_cluster() {
    let cluster = Cluster::start("auth-cluster", 3, NO_FEED);
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(20),
    );
    let (_, token) = cluster.nodes[0].register("gina");
    for node in &cluster.nodes {
        let (s, v) = node.api("GET", "/api/v1/account", None, Some(&token));
        assert_eq!(s, 200, "{v}");
    }
    // The username is taken cluster-wide (one users table).
    let (s, v) = cluster.nodes[2].post(
        "/api/v1/auth/register",
        &json!({"username": "gina", "password": "password123"}),
        &[],
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
}
