//! Chat rooms through the protocol: users on three nodes in one room see every message once
//! and in the same order, presence joins and leaves, history survives a SIGKILL of the
//! room's node, and bad input gets its error code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Cluster, Node, WsClient};
use serde_json::{Value, json};
use std::time::Duration;

const NO_FEED: &str = "[feed]\nkind = \"none\"\n";
const ROOM: &str = "KRW-BTC";

fn messages(ws: &WsClient) -> Vec<Value> {
    ws.events
        .iter()
        .filter(|e| e.ch == "chat:KRW-BTC" && e.data["type"] == "message")
        .map(|e| e.data.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_across_three_nodes_orders_persists_and_shows_presence() {
    let mut cluster = Cluster::start("chat-cross", 3, NO_FEED);
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(20),
    );
    let names = ["ann", "ben", "cat"];
    let mut tokens = Vec::new();
    let mut clients = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (_, token) = cluster.nodes[i].register(name);
        let mut ws =
            WsClient::connect(&format!("{}?token={token}", cluster.nodes[i].ws_url())).await;
        let r = ws
            .request("subscribe", json!({"channels": [format!("chat:{ROOM}")]}))
            .await;
        assert_eq!(r["ok"], true, "{r}");
        tokens.push(token);
        clients.push(ws);
    }
    // Ann, first in, sees Ben and Cat join.
    for who in ["ben", "cat"] {
        clients[0]
            .wait_event(Duration::from_secs(10), |e| {
                e.data["presence"] == "join" && e.data["user"] == who
            })
            .await
            .unwrap_or_else(|| panic!("ann sees {who} join"));
    }
    // A newcomer's first event says who is here already (on another node, too).
    let mut late = WsClient::connect(&cluster.nodes[2].ws_url()).await;
    let r = late
        .request("subscribe", json!({"channels": [format!("chat:{ROOM}")]}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let here = late
        .wait_event(Duration::from_secs(10), |e| e.data["presence"] == "here")
        .await
        .expect("the room's presence snapshot");
    assert_eq!(
        here.data["users"],
        json!(["ann", "ben", "cat"]),
        "{:?}",
        here.data
    );
    assert_eq!(
        here.seq,
        r["result"]["channels"][format!("chat:{ROOM}")]["seq"]
            .as_u64()
            .unwrap()
    );
    drop(late);
    // Fifteen messages, interleaved across nodes, over WebSocket and REST.
    let mut acked = Vec::new();
    for round in 0..5 {
        for i in 0..3 {
            let text = format!("{} says {round}", names[i]);
            if (round + i) % 2 == 0 {
                let r = clients[i]
                    .request("chat.send", json!({"room": ROOM, "text": text}))
                    .await;
                assert_eq!(r["ok"], true, "{r}");
                acked.push(r["result"].clone());
            } else {
                let (s, v) = cluster.nodes[i].api(
                    "POST",
                    &format!("/api/v1/chat/{ROOM}/messages"),
                    Some(&json!({"text": format!("  {text}  ")})),
                    Some(&tokens[i]),
                );
                assert_eq!(s, 201, "{v}");
                assert_eq!(v["text"], text, "trimmed");
                acked.push(v);
            }
        }
        // Within the rate limit (5 messages per second per user).
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ids: Vec<u64> = acked
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids rise with time: {ids:?}"
    );
    for ws in &mut clients {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while messages(ws).len() < 15 && std::time::Instant::now() < deadline {
            ws.pump(Duration::from_millis(200)).await;
        }
        let got: Vec<Value> = messages(ws);
        assert_eq!(got.len(), 15, "every message once");
        let got_ids: Vec<&str> = got
            .iter()
            .map(|m| m["message_id"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = acked
            .iter()
            .map(|m| m["message_id"].as_str().unwrap())
            .collect();
        assert_eq!(got_ids, want, "the same order on every node");
        common::assert_continuity(
            &ws.events
                .iter()
                .filter(|e| e.ch.starts_with("chat:"))
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    // Cat leaves; Ann sees it.
    let r = clients[2]
        .request("unsubscribe", json!({"channels": [format!("chat:{ROOM}")]}))
        .await;
    assert_eq!(r["result"]["unsubscribed"], json!([format!("chat:{ROOM}")]));
    clients[0]
        .wait_event(Duration::from_secs(10), |e| {
            e.data["presence"] == "leave" && e.data["user"] == "cat"
        })
        .await
        .expect("ann sees cat leave");

    // SIGKILL the room's node: history on a survivor holds every acknowledged message.
    let dead = cluster.owner(0, "room", ROOM);
    cluster.nodes[dead].kill9();
    let alive: Vec<usize> = (0..3).filter(|i| *i != dead).collect();
    let up: Vec<String> = alive.iter().map(|i| format!("node{}", i + 1)).collect();
    let up: Vec<&str> = up.iter().map(String::as_str).collect();
    cluster.wait_converged(&alive, &up, Duration::from_secs(20));
    let survivor = &cluster.nodes[alive[0]];
    let (s, history) = survivor.get(&format!("/api/v1/chat/{ROOM}/messages?limit=200"));
    assert_eq!(s, 200);
    let mut stored: Vec<Value> = history.as_array().unwrap().clone();
    stored.reverse();
    assert_eq!(
        stored, acked,
        "history, oldest first, is exactly what was acknowledged"
    );
    // Paging newest first with `before`.
    let (_, page) = survivor.get(&format!(
        "/api/v1/chat/{ROOM}/messages?limit=4&before={}",
        ids[10]
    ));
    let page_ids: Vec<u64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(page_ids, vec![ids[9], ids[8], ids[7], ids[6]]);
    // The room works on its new node, and ids keep rising.
    let (s, v) = survivor.api(
        "POST",
        &format!("/api/v1/chat/{ROOM}/messages"),
        Some(&json!({"text": "still here"})),
        Some(&tokens[alive[0]]),
    );
    assert_eq!(s, 201, "{v}");
    assert!(v["message_id"].as_str().unwrap().parse::<u64>().unwrap() > ids[14]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chat_input_gets_its_error_code() {
    let node = Node::start("chat-bad", NO_FEED);
    let (_, token) = node.register("dan");
    let path = format!("/api/v1/chat/{ROOM}/messages");
    for (body, code) in [
        (json!({"text": ""}), "bad_request"),
        (json!({"text": "   \n "}), "bad_request"),
        (json!({"text": "x".repeat(2001)}), "bad_request"),
        (json!({"text": "bell\u{7}"}), "bad_request"),
        (json!({"text": "hi", "extra": 1}), "bad_request"),
        (json!({"txt": "hi"}), "bad_request"),
    ] {
        let (s, v) = node.api("POST", &path, Some(&body), Some(&token));
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {v}"
        );
    }
    let (s, v) = node.api("POST", &path, Some(&json!({"text": "hi"})), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (s, v) = node.api(
        "POST",
        "/api/v1/chat/KRW-NOPE/messages",
        Some(&json!({"text": "hi"})),
        Some(&token),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (s, _) = node.get("/api/v1/chat/lobby/messages");
    assert_eq!(s, 404);
    let (s, v) = node.get(&format!("{path}?before=abc"));
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("bad_request")));
    let (s, _) = node.get(&format!("{path}?limit=201"));
    assert_eq!(s, 400);
    // WebSocket: not logged in, unknown room, bad text; the connection stays usable.
    let mut ws = WsClient::connect(&node.ws_url()).await;
    let r = ws
        .request("chat.send", json!({"room": ROOM, "text": "hi"}))
        .await;
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    let r = ws.request("auth", json!({"token": token})).await;
    assert_eq!(r["ok"], true);
    let r = ws
        .request("chat.send", json!({"room": "NOPE-X", "text": "hi"}))
        .await;
    assert_eq!(r["error"]["code"], "not_found", "{r}");
    let r = ws
        .request("chat.send", json!({"room": ROOM, "text": "\u{0}"}))
        .await;
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let r = ws
        .request("subscribe", json!({"channels": ["chat:lobby"]}))
        .await;
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    // The per-user rate limit: 5 messages a second (eight sent at once, answers awaited after).
    for i in 0..8 {
        let frame = json!({"id": format!("burst{i}"), "op": "chat.send", "room": ROOM, "text": format!("burst {i}")});
        ws.send_raw(frame.to_string()).await;
    }
    let mut limited = 0;
    for i in 0..8 {
        let r = ws
            .wait_response(&format!("burst{i}"), Duration::from_secs(10))
            .await;
        if r["error"]["code"] == "rate_limited" {
            limited += 1;
        } else {
            assert_eq!(r["ok"], true, "{r}");
        }
    }
    assert!(
        limited >= 3,
        "at most 5 of 8 pass in a second: {limited} limited"
    );
    let r = ws
        .request("chat.history", json!({"room": ROOM, "limit": 3}))
        .await;
    assert_eq!(r["result"].as_array().map(Vec::len), Some(3), "{r}");
    assert_eq!(node.get("/readyz").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_node_dies_leaves_the_room() {
    let mut cluster = Cluster::start("chat-node-death", 3, NO_FEED);
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(20),
    );
    let owner = cluster.owner(0, "room", ROOM);
    let (doomed, watcher) = ((owner + 1) % 3, (owner + 2) % 3);
    let mut clients = Vec::new();
    for (node, name) in [(watcher, "wendy"), (doomed, "dora")] {
        let (_, token) = cluster.nodes[node].register(name);
        let mut ws =
            WsClient::connect(&format!("{}?token={token}", cluster.nodes[node].ws_url())).await;
        let r = ws
            .request("subscribe", json!({"channels": [format!("chat:{ROOM}")]}))
            .await;
        assert_eq!(r["ok"], true, "{r}");
        clients.push(ws);
    }
    clients[0]
        .wait_event(Duration::from_secs(10), |e| {
            e.data["presence"] == "join" && e.data["user"] == "dora"
        })
        .await
        .expect("wendy sees dora join");
    // Dora's node dies without a word to the room: the room drops her when the ring does.
    cluster.nodes[doomed].kill9();
    clients[0]
        .wait_event(Duration::from_secs(20), |e| {
            e.data["presence"] == "leave" && e.data["user"] == "dora"
        })
        .await
        .expect("wendy sees dora leave");
    assert!(
        !clients[0]
            .events
            .iter()
            .any(|e| e.data["presence"] == "leave" && e.data["user"] == "wendy"),
        "the living stay"
    );
}
