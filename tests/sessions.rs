//! A user's session through the protocol: the user's connections on every node, as the
//! admin API shows them, stay correct when connections close, when a node dies and when the
//! session itself moves; and the private `orders` channel reaches every live connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, Cluster, WsClient};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const NO_FEED: &str = "[feed]\nkind = \"none\"\n";

/// Connections per node, as the session reports them (asked through `via`).
fn connections(cluster: &Cluster, via: usize, user: &str) -> BTreeMap<String, usize> {
    let (status, v) = cluster.nodes[via].api(
        "GET",
        &format!("/admin/entities/session/{user}"),
        None,
        Some(ADMIN_TOKEN),
    );
    if status != 200 {
        return BTreeMap::new();
    }
    let mut out = BTreeMap::new();
    for c in v["state"]["connections"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        *out.entry(c["node"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

fn wait_connections(cluster: &Cluster, via: usize, user: &str, want: &[(&str, usize)]) {
    let want: BTreeMap<String, usize> = want.iter().map(|(n, c)| (n.to_string(), *c)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = connections(cluster, via, user);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "connections {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn name(i: usize) -> String {
    format!("node{}", i + 1)
}

/// Places an order and waits until each client saw its `orders` event once.
async fn order_reaches(cluster: &Cluster, via: usize, token: &str, clients: &mut [&mut WsClient]) {
    let (status, order) = cluster.nodes[via].api(
        "POST",
        "/api/v1/orders",
        Some(&json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit",
            "price": "100000000", "qty": "0.001"})),
        Some(token),
    );
    assert_eq!(status, 201, "{order}");
    let id = order["order_id"].clone();
    for ws in clients.iter_mut() {
        ws.wait_event(Duration::from_secs(20), |e| {
            e.ch == "orders" && e.data["order_id"] == id
        })
        .await
        .unwrap_or_else(|| panic!("order {id} not seen: {:?}", ws.events));
        ws.pump(Duration::from_millis(300)).await;
        let seen = ws
            .events
            .iter()
            .filter(|e| e.ch == "orders" && e.data["order_id"] == id)
            .count();
        assert_eq!(seen, 1, "order {id} once per connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_connections_follow_closes_node_deaths_and_moves() {
    let mut cluster = Cluster::start("sessions", 3, NO_FEED);
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(20),
    );
    let (user, token) = cluster.nodes[0].register("roamer");
    let owner = cluster.owner(0, "session", &user);
    let (a, b) = ((owner + 1) % 3, (owner + 2) % 3);

    // Two connections on every node, each on `orders`.
    let mut clients: Vec<(usize, WsClient)> = Vec::new();
    for node in 0..3 {
        for _ in 0..2 {
            let mut ws =
                WsClient::connect(&format!("{}?token={token}", cluster.nodes[node].ws_url())).await;
            let r = ws
                .request("subscribe", json!({"channels": ["orders"]}))
                .await;
            assert_eq!(r["ok"], true, "{r}");
            clients.push((node, ws));
        }
    }
    wait_connections(
        &cluster,
        a,
        &user,
        &[("node1", 2), ("node2", 2), ("node3", 2)],
    );
    {
        let mut live: Vec<&mut WsClient> = clients.iter_mut().map(|(_, ws)| ws).collect();
        order_reaches(&cluster, a, &token, &mut live).await;
    }

    // A connection closes.
    let at = clients.iter().position(|(n, _)| *n == a).unwrap();
    let (_, closing) = clients.remove(at);
    closing.close().await;
    wait_connections(
        &cluster,
        a,
        &user,
        &[(&name(owner), 2), (&name(a), 1), (&name(b), 2)],
    );

    // A node that is not the session's dies: its connections go with it.
    cluster.nodes[b].kill9();
    clients.retain(|(n, _)| *n != b);
    wait_connections(&cluster, a, &user, &[(&name(owner), 2), (&name(a), 1)]);
    {
        let mut live: Vec<&mut WsClient> = clients.iter_mut().map(|(_, ws)| ws).collect();
        order_reaches(&cluster, owner, &token, &mut live).await;
    }

    // The dead node comes back (with no connections of the user).
    cluster.nodes[b].restart();
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(30),
    );

    // The session's own node dies: the session comes back on a survivor with its next
    // event (an inspection does not activate it). That first event reaches the surviving
    // connection through the new epoch's replay, and the session learns the connection.
    cluster.nodes[owner].kill9();
    clients.retain(|(n, _)| *n != owner);
    let (na, nb) = (name(a), name(b));
    cluster.wait_converged(&[a, b], &[&na, &nb], Duration::from_secs(30));
    let mut live: Vec<&mut WsClient> = clients.iter_mut().map(|(_, ws)| ws).collect();
    assert_eq!(live.len(), 1);
    order_reaches(&cluster, b, &token, &mut live).await;
    wait_connections(&cluster, a, &user, &[(&name(a), 1)]);
    order_reaches(&cluster, a, &token, &mut live).await;
}
