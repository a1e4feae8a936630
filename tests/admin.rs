//! The admin API through the protocol (docs/PROTOCOL.md "Admin"): refusals without the token,
//! the cluster-wide entity list and paging, an entity's counters and state from any node,
//! chaos kills of one entity and of a share of a node's, and a node asked to leave.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, Cluster, Node, WsClient, metric};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NO_FEED: &str = "[feed]\nkind = \"none\"\n";

fn code(v: &Value) -> Option<&str> {
    v["error"]["code"].as_str()
}

fn admin(node: &Node, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    node.api(method, path, body.as_ref(), Some(ADMIN_TOKEN))
}

/// GET, retrying `503 unavailable` (an entity restarting) for a bounded time.
fn get_retry(node: &Node, path: &str) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, v) = node.get(path);
        if s != 503 || Instant::now() > deadline {
            return (s, v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every `(kind, key, node)` the cluster lists, read page by page through `via`.
fn all_entities(node: &Node, kind: &str, page: usize) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/admin/entities?kind={kind}&limit={page}");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let (s, v) = admin(node, "GET", &path, None);
        assert_eq!(s, 200, "{path}: {v}");
        let items = v.as_array().unwrap().clone();
        assert!(items.len() <= page);
        let Some(last) = items.last() else {
            return out;
        };
        after = Some(format!(
            "{}/{}",
            last["kind"].as_str().unwrap(),
            last["key"].as_str().unwrap()
        ));
        out.extend(items);
    }
}

#[test]
fn admin_endpoints_refuse_without_the_token_and_validate_their_input() {
    let node = Node::start(
        "admin-refuse",
        &format!("{NO_FEED}[admin]\nmetrics_public = false\n"),
    );
    // Metrics made private on a loopback gateway need the token too.
    let (s, v) = node.get("/metrics");
    assert_eq!((s, code(&v)), (403, Some("forbidden")), "{v}");
    let (s, v) = admin(&node, "GET", "/metrics", None);
    assert_eq!(s, 200);
    assert!(
        common::metric(v.as_str().unwrap(), "bourse_cluster_members{status=\"up\"}") == Some(1.0),
        "{v}"
    );
    let gets = [
        "/admin/cluster",
        "/admin/entities",
        "/admin/entities?kind=symbol",
        "/admin/entities/symbol/KRW-BTC",
    ];
    let posts = [
        (
            "/admin/chaos/kill",
            json!({"kind": "symbol", "key": "KRW-BTC"}),
        ),
        (
            "/admin/chaos/kill",
            json!({"kind": "symbol", "fraction": 1.0}),
        ),
        ("/admin/cluster/leave", json!({"node": "node1"})),
    ];
    for token in [
        None,
        Some("wrong"),
        Some(""),
        Some("test-admin-token-012345678"),
    ] {
        for path in gets {
            let (s, v) = node.api("GET", path, None, token);
            assert_eq!(
                (s, code(&v)),
                (403, Some("forbidden")),
                "{path} {token:?}: {v}"
            );
        }
        for (path, body) in &posts {
            let (s, v) = node.api("POST", path, Some(body), token);
            assert_eq!(
                (s, code(&v)),
                (403, Some("forbidden")),
                "{path} {token:?}: {v}"
            );
        }
    }
    // A wrong scheme is a missing token.
    let (s, v) = node.post(
        "/admin/cluster",
        &json!({}),
        &[("authorization", &format!("Basic {ADMIN_TOKEN}"))],
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "POST on a GET route: {v}"
    );
    let (s, v) = node.get("/admin/cluster");
    assert_eq!((s, code(&v)), (403, Some("forbidden")));

    // The node is still up: nothing above stopped it.
    assert!(node.get("/healthz").0 == 200);

    for (body, status, want) in [
        // Killing what is not running, or a kind that does not exist: not_found.
        (
            json!({"kind": "symbol", "key": "KRW-NOPE"}),
            404,
            "not_found",
        ),
        (json!({"kind": "nonsense", "key": "x"}), 404, "not_found"),
        (
            json!({"kind": "nonsense", "fraction": 0.5}),
            404,
            "not_found",
        ),
        (
            json!({"kind": "symbol", "fraction": 0.5, "node": "node9"}),
            404,
            "not_found",
        ),
        (json!({"kind": "symbol"}), 400, "bad_request"),
        (
            json!({"kind": "symbol", "key": "KRW-BTC", "fraction": 0.5}),
            400,
            "bad_request",
        ),
        (json!({"kind": "symbol", "fraction": 0}), 400, "bad_request"),
        (
            json!({"kind": "symbol", "fraction": 1.5}),
            400,
            "bad_request",
        ),
        (
            json!({"kind": "symbol", "fraction": -1}),
            400,
            "bad_request",
        ),
        (
            json!({"kind": "symbol", "fraction": "half"}),
            400,
            "bad_request",
        ),
        (
            json!({"kind": "symbol", "key": "KRW-BTC", "node": "node1"}),
            400,
            "bad_request",
        ),
        (
            json!({"kind": "symbol", "key": "KRW-BTC", "extra": 1}),
            400,
            "bad_request",
        ),
    ] {
        let (s, v) = admin(&node, "POST", "/admin/chaos/kill", Some(body.clone()));
        assert_eq!((s, code(&v)), (status, Some(want)), "{body}: {v}");
    }
    for (path, status, want) in [
        ("/admin/entities?kind=nonsense", 404, "not_found"),
        ("/admin/entities?node=node9", 404, "not_found"),
        ("/admin/entities?limit=0", 400, "bad_request"),
        ("/admin/entities?limit=1001", 400, "bad_request"),
        ("/admin/entities?limit=x", 400, "bad_request"),
        ("/admin/entities?after=nokey", 400, "bad_request"),
        ("/admin/entities?colour=red", 400, "bad_request"),
        ("/admin/entities/nonsense/x", 404, "not_found"),
    ] {
        let (s, v) = admin(&node, "GET", path, None);
        assert_eq!((s, code(&v)), (status, Some(want)), "{path}: {v}");
    }
    for (body, status, want) in [
        (json!({"node": "node9"}), 404, "not_found"),
        (json!({}), 400, "bad_request"),
        (json!({"node": "node1", "now": true}), 400, "bad_request"),
    ] {
        let (s, v) = admin(&node, "POST", "/admin/cluster/leave", Some(body.clone()));
        assert_eq!((s, code(&v)), (status, Some(want)), "{body}: {v}");
    }
    // An entity nobody activated is shown where it would live, not running (symbols and
    // books are always on; an account starts with its user's first request).
    let (s, v) = admin(&node, "GET", "/admin/entities/account/424242", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["owner"], "node1");
    assert_eq!(v["active"], false);
}

#[test]
fn every_node_lists_inspects_kills_and_drains_for_the_whole_cluster() {
    let mut cluster = Cluster::start("admin-cluster", 3, NO_FEED);
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(30),
    );
    // Activate every symbol: a ticker read reaches each one's entity.
    let (_, symbols) = cluster.nodes[0].get("/api/v1/symbols");
    let symbols: Vec<String> = symbols
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["symbol"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(symbols.len(), 8);
    for s in &symbols {
        let (status, v) = cluster.nodes[0].get(&format!("/api/v1/ticker/{s}"));
        assert!(status == 200 || status == 404, "{s}: {v}");
    }

    // Each node lists all eight, each on its owner by the ring, whichever node is asked;
    // pages of 3 add up to the single page.
    let whole = all_entities(&cluster.nodes[1], "symbol", 1000);
    let keys: BTreeSet<&str> = whole.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        symbols.iter().map(String::as_str).collect(),
        "{whole:#?}"
    );
    for e in &whole {
        let key = e["key"].as_str().unwrap();
        let owner = cluster.owner(2, "symbol", key);
        assert_eq!(e["node"], format!("node{}", owner + 1), "{e}");
        assert_eq!(e["active"], true);
        assert_eq!(e["restarts"], 0);
        assert!(e["messages"].as_u64().unwrap() >= 1, "{e}");
        assert!(
            e["activated_at"].as_i64().unwrap() > 1_600_000_000_000,
            "{e}"
        );
        assert!(e["mailbox"].is_u64());
    }
    for via in [0, 2] {
        assert_eq!(all_entities(&cluster.nodes[via], "symbol", 3), whole);
    }
    let nodes_holding: BTreeSet<&str> = whole.iter().map(|e| e["node"].as_str().unwrap()).collect();
    assert!(
        nodes_holding.len() >= 2,
        "eight symbols on one node: {whole:#?}"
    );
    // The node filter.
    let on2 = admin(
        &cluster.nodes[0],
        "GET",
        "/admin/entities?kind=symbol&node=node2",
        None,
    )
    .1;
    let want2: Vec<&Value> = whole.iter().filter(|e| e["node"] == "node2").collect();
    assert_eq!(on2.as_array().unwrap().iter().collect::<Vec<_>>(), want2);

    // One entity's detail from a node that does not own it.
    let owner = cluster.owner(0, "symbol", "KRW-BTC");
    let via = (owner + 1) % 3;
    let (s, v) = admin(
        &cluster.nodes[via],
        "GET",
        "/admin/entities/symbol/KRW-BTC",
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["owner"], format!("node{}", owner + 1));
    assert_eq!(v["node"], v["owner"]);
    assert_eq!(v["active"], true);
    assert_eq!(v["restarts"], 0);
    assert!(v["state"]["epoch"].is_string(), "{v}");
    assert!(v["state"]["lease"].as_u64().unwrap() >= 1, "{v}");
    let first_epoch = v["state"]["epoch"].clone();

    // Killed through another node: the panic restarts it, and the detail counts it.
    let (s, k) = admin(
        &cluster.nodes[via],
        "POST",
        "/admin/chaos/kill",
        Some(json!({"kind": "symbol", "key": "KRW-BTC"})),
    );
    assert_eq!(s, 200, "{k}");
    assert_eq!(
        get_retry(&cluster.nodes[0], "/api/v1/ticker/KRW-BTC").0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = admin(
            &cluster.nodes[via],
            "GET",
            "/admin/entities/symbol/KRW-BTC",
            None,
        );
        if v["restarts"] == 1 && v["active"] == true && v["state"]["epoch"].is_string() {
            assert_ne!(
                v["state"]["epoch"], first_epoch,
                "a restart starts a new epoch"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no restart shown: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A fraction of 1 kills every symbol a node holds, and nothing elsewhere.
    let target = whole[0]["node"].as_str().unwrap().to_string();
    let (s, k) = admin(
        &cluster.nodes[0],
        "POST",
        "/admin/chaos/kill",
        Some(json!({"kind": "symbol", "fraction": 1.0, "node": target})),
    );
    assert_eq!(s, 200, "{k}");
    assert_eq!(k["node"], target.as_str());
    let killed: BTreeSet<&str> = k["killed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let held: BTreeSet<&str> = whole
        .iter()
        .filter(|e| e["node"] == target.as_str())
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(killed, held);
    for s in &symbols {
        assert_eq!(
            get_retry(&cluster.nodes[1], &format!("/api/v1/ticker/{s}")).0 / 100,
            2,
            "{s} serves"
        );
    }
    let after = all_entities(&cluster.nodes[2], "symbol", 1000);
    for e in &after {
        let k = e["key"].as_str().unwrap();
        let was = whole.iter().find(|w| w["key"] == k).unwrap();
        let expect = was["restarts"].as_u64().unwrap()
            + u64::from(killed.contains(k))
            + u64::from(k == "KRW-BTC");
        assert_eq!(e["restarts"].as_u64().unwrap(), expect, "{e}");
    }

    // Each node's /metrics (open on loopback) counts what happened on it: the restarts of
    // the symbols it holds, the members, its traffic and its storage batches.
    let mut restarts = 0.0;
    for (i, node) in cluster.nodes.iter().enumerate() {
        let (s, text) = node.get("/metrics");
        assert_eq!(s, 200, "{text}");
        let text = text.as_str().unwrap();
        restarts += metric(text, "bourse_entity_restarts_total{kind=\"symbol\"}").unwrap_or(0.0);
        assert_eq!(
            metric(text, "bourse_cluster_members{status=\"up\"}"),
            Some(3.0),
            "node{}",
            i + 1
        );
        assert!(metric(text, "bourse_rebalances_total").unwrap() >= 1.0);
        assert!(
            metric(text, "bourse_storage_batch_seconds_count").is_some(),
            "{text}"
        );
        assert!(
            metric(text, "bourse_fanout_seconds_count").is_some(),
            "{text}"
        );
        assert!(
            metric(text, "bourse_gateway_connections").is_some(),
            "{text}"
        );
        let holds = whole
            .iter()
            .filter(|e| e["node"] == format!("node{}", i + 1))
            .count();
        assert_eq!(
            metric(text, "bourse_entities_active{kind=\"symbol\"}"),
            Some(holds as f64),
            "node{}: {text}",
            i + 1
        );
        if holds > 0 {
            assert!(
                metric(text, "bourse_entity_messages_total{kind=\"symbol\"}").unwrap()
                    >= holds as f64
            );
            assert!(metric(text, "bourse_entity_mailbox_depth{kind=\"symbol\"}").is_some());
        }
    }
    assert_eq!(restarts as usize, killed.len() + 1, "restarts in /metrics");

    // A node asked to leave (through another node) drains and exits cleanly; the others
    // take its share and keep serving.
    let (s, v) = admin(
        &cluster.nodes[0],
        "POST",
        "/admin/cluster/leave",
        Some(json!({"node": "node3"})),
    );
    assert_eq!((s, &v), (202, &json!({"leaving": "node3"})));
    let status = cluster.nodes[2]
        .wait_exit(Duration::from_secs(30))
        .expect("node3 exits after draining");
    assert!(
        status.success(),
        "node3 exit: {status:?}\n{}",
        cluster.nodes[2].log()
    );
    cluster.nodes[2].assert_logged("all entities handed off");
    cluster.wait_converged(&[0, 1], &["node1", "node2"], Duration::from_secs(30));
    for s in &symbols {
        let (status, v) = get_retry(&cluster.nodes[1], &format!("/api/v1/ticker/{s}"));
        assert_eq!(status / 100, 2, "{s} after the leave: {v}");
    }
    let left = all_entities(&cluster.nodes[0], "symbol", 1000);
    assert!(left.iter().all(|e| e["node"] != "node3"), "{left:#?}");
    assert_eq!(left.len(), 8);
}

/// Runs `bourse ctl --url <node> --token <token> args...` → (success, stdout, stderr).
fn ctl(node: &Node, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bourse"))
        .args(["ctl", "--url", &node.url(""), "--token", token])
        .args(args)
        .env_remove("BOURSE_ADMIN_TOKEN")
        .output()
        .expect("run bourse ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ctl_prints_the_admin_api_as_tables_and_says_why_it_failed() {
    let mut node = Node::start("admin-ctl", "[feed]\ntrades_per_sec = 20\n");
    assert_eq!(node.get("/api/v1/ticker/KRW-BTC").0 / 100, 2);

    let (ok, out, err) = ctl(&node, ADMIN_TOKEN, &["cluster"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].starts_with("NODE") && lines[1].contains("STATUS"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("node1") && lines[2].contains("up") && lines[2].contains("100.0%"),
        "{out}"
    );

    let (ok, out, err) = ctl(
        &node,
        ADMIN_TOKEN,
        &["entities", "--kind", "symbol", "--limit", "3"],
    );
    assert!(ok, "{err}");
    let rows: Vec<&str> = out
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("symbol"))
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows.iter()
            .all(|r| r.contains("node1") && r.contains("yes")),
        "{out}"
    );
    assert!(out.ends_with("3 entities\n"), "{out}");
    // Pages beyond the first are fetched: the full list has all eight.
    let (ok, out, _) = ctl(
        &node,
        ADMIN_TOKEN,
        &["entities", "--kind", "symbol", "--limit", "1000"],
    );
    assert!(ok && out.ends_with("8 entities\n"), "{out}");

    let (ok, out, err) = ctl(&node, ADMIN_TOKEN, &["kill", "symbol", "KRW-BTC"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "killed symbol/KRW-BTC");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, out, _) = ctl(&node, ADMIN_TOKEN, &["entity", "symbol", "KRW-BTC"]);
        // The restart is counted when the entity fails; its state shows once the backoff
        // has passed and it is active again.
        if ok
            && out
                .lines()
                .any(|l| l.starts_with("restarts") && l.ends_with(" 1"))
            && out
                .lines()
                .any(|l| l.starts_with("active") && l.ends_with(" true"))
        {
            assert!(out.lines().any(|l| l.starts_with("state.epoch")), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out, err) = ctl(&node, ADMIN_TOKEN, &["kill", "symbol", "--fraction", "1"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("killed ") && out.contains(" symbol entities on node1: "),
        "{out}"
    );

    // Failures exit non-zero with the server's code.
    let (ok, _, err) = ctl(&node, ADMIN_TOKEN, &["kill", "symbol", "KRW-NOPE"]);
    assert!(!ok);
    assert!(err.contains("404 not_found"), "{err}");
    let (ok, _, err) = ctl(&node, "wrong-token-0123456789", &["cluster"]);
    assert!(!ok);
    assert!(err.contains("403 forbidden"), "{err}");
    let (ok, _, err) = ctl(&node, ADMIN_TOKEN, &["leave", "node7"]);
    assert!(!ok && err.contains("404 not_found"), "{err}");

    // And the node leaves when told.
    let (ok, out, err) = ctl(&node, ADMIN_TOKEN, &["leave", "node1"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("node1 is leaving"), "{out}");
    let status = node
        .wait_exit(Duration::from_secs(30))
        .expect("node1 exits");
    assert!(status.success(), "{status:?}");
}

/// The connections `via` lists for `node`.
fn connections(via: &Node, node: &str) -> Value {
    let (s, v) = admin(via, "GET", &format!("/admin/connections?node={node}"), None);
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_listed_and_a_killed_one_closes_alone_with_1011() {
    let cluster = Cluster::start("admin-conns", 2, "[feed]\ntrades_per_sec = 20\n");
    cluster.wait_converged(&[0, 1], &["node1", "node2"], Duration::from_secs(30));
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (user_id, token) = b.register("victim");
    let channels = json!({"channels": ["trades:KRW-BTC", "chat:KRW-BTC"]});
    let mut bystander = WsClient::connect(&b.ws_url()).await;
    assert_eq!(
        bystander.request("subscribe", channels.clone()).await["ok"],
        true
    );
    let mut victim = WsClient::connect(&format!("{}?token={token}", b.ws_url())).await;
    assert_eq!(victim.request("subscribe", channels).await["ok"], true);
    bystander
        .wait_event(Duration::from_secs(10), |e| {
            e.data["presence"] == "join" && e.data["user"] == "victim"
        })
        .await
        .expect("the victim joined the room");

    // node1 lists node2's connections, through the cluster.
    let listed = connections(a, "node2");
    assert_eq!(listed["node"], "node2");
    assert!(listed["total"].as_u64().unwrap() >= 2, "{listed}");
    let all = listed["connections"].as_array().unwrap();
    let mine = all
        .iter()
        .find(|c| c["user"] == "victim")
        .unwrap_or_else(|| panic!("the victim is listed: {listed}"));
    assert_eq!(mine["transport"], "ws");
    // Internal names: the session's private channel ties the connection to its user.
    let session = format!("session@{user_id}");
    assert_eq!(
        mine["channels"],
        json!(["chat:KRW-BTC", session, "trades:KRW-BTC"])
    );
    assert!(mine["queue"].is_u64() && mine["age_ms"].is_u64(), "{mine}");
    let id = mine["id"].as_u64().unwrap();

    let (s, v) = admin(
        a,
        "POST",
        "/admin/chaos/kill-connection",
        Some(json!({"node": "node2", "id": id})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["killed"], json!({"node": "node2", "id": id}));
    victim.pump(Duration::from_secs(10)).await;
    assert_eq!(victim.close_code(), Some(1011), "{:?}", victim.closed);

    // Its presence was released, the bystander never noticed, and the node counted it.
    bystander
        .wait_event(Duration::from_secs(10), |e| {
            e.data["presence"] == "leave" && e.data["user"] == "victim"
        })
        .await
        .expect("the killed connection left the room");
    let last = bystander.events.iter().map(|e| e.seq).max().unwrap_or(0);
    bystander
        .wait_event(Duration::from_secs(10), |e| {
            e.ch == "trades:KRW-BTC" && e.seq > last
        })
        .await
        .expect("the bystander still gets trades");
    assert!(bystander.closed.is_none());
    let after = connections(b, "node2");
    assert!(
        after["connections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != id),
        "{after}"
    );
    let (_, text) = b.get("/metrics");
    assert_eq!(
        metric(
            text.as_str().unwrap(),
            "bourse_gateway_connection_panics_total{transport=\"ws\"}"
        ),
        Some(1.0)
    );

    // An SSE stream killed ends; the others carry on.
    let port = b.port;
    let mut sse = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    sse.write_all(b"GET /sse?channels=trades:KRW-BTC HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = sse.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let listed = connections(b, "node2");
    let stream = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["transport"] == "sse")
        .unwrap_or_else(|| panic!("the SSE stream is listed: {listed}"))["id"]
        .as_u64()
        .unwrap();
    // bourse ctl shows the same list and kills through the same call.
    let (ok, out, err) = ctl(b, ADMIN_TOKEN, &["connections", "--node", "node2"]);
    assert!(ok, "{err}");
    assert!(out.contains("ID") && out.contains("TRANSPORT"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{stream} ")) && l.contains("sse")),
        "{out}"
    );
    assert!(out.contains("connections on node2"), "{out}");
    let (ok, out, err) = ctl(b, ADMIN_TOKEN, &["kill-connection", &stream.to_string()]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("killed connection {stream} on node2"));
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match sse.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the killed SSE stream ended");
    assert!(bystander.closed.is_none());

    // Bad requests.
    let (s, v) = admin(
        b,
        "POST",
        "/admin/chaos/kill-connection",
        Some(json!({"id": id})),
    );
    assert_eq!((s, code(&v)), (404, Some("not_found")), "killed twice: {v}");
    let (s, v) = admin(
        b,
        "POST",
        "/admin/chaos/kill-connection",
        Some(json!({"id": 1, "extra": true})),
    );
    assert_eq!((s, code(&v)), (400, Some("bad_request")), "{v}");
    let (s, v) = admin(
        b,
        "POST",
        "/admin/chaos/kill-connection",
        Some(json!({"node": "node9", "id": 1})),
    );
    assert_eq!((s, code(&v)), (404, Some("not_found")), "{v}");
    for path in [
        "/admin/connections?limit=0",
        "/admin/connections?limit=x",
        "/admin/connections?who=1",
    ] {
        let (s, v) = admin(b, "GET", path, None);
        assert_eq!((s, code(&v)), (400, Some("bad_request")), "{path}: {v}");
    }
    let (s, v) = admin(b, "GET", "/admin/connections?node=node9", None);
    assert_eq!((s, code(&v)), (404, Some("not_found")), "{v}");
    let (s, _) = b.api("GET", "/admin/connections", None, None);
    assert_eq!(s, 403);
    let (s, v) = admin(b, "GET", "/admin/connections?limit=1", None);
    assert_eq!(s, 200);
    assert_eq!(v["connections"].as_array().unwrap().len(), 1, "{v}");
    bystander.close().await;
}

#[test]
fn ctl_down_lets_the_last_node_of_three_serve_again() {
    // No feed: the three share one SQLite file, and a node stopped inside a write
    // transaction holds the file's write lock for good, so node1 could write no lease (seen
    // once, with trades flowing); with no feed a node writes little but its leases.
    let cluster = Cluster::start("admin-down", 3, "[feed]\nkind = \"none\"\n");
    cluster.wait_converged(
        &[0, 1, 2],
        &["node1", "node2", "node3"],
        Duration::from_secs(20),
    );
    let node1 = &cluster.nodes[0];
    // A heard member, the node itself and a stranger are refused, and say why.
    let (ok, _, err) = ctl(node1, ADMIN_TOKEN, &["down", "node2"]);
    assert!(!ok && err.contains("409") && err.contains("heard"), "{err}");
    let (ok, _, err) = ctl(node1, ADMIN_TOKEN, &["down", "node1"]);
    assert!(!ok && err.contains("400"), "{err}");
    let (ok, _, err) = ctl(node1, ADMIN_TOKEN, &["down", "node9"]);
    assert!(!ok && err.contains("404"), "{err}");

    // Two of three hosts stop for good: node1 is a minority and stands down.
    cluster.nodes[1].signal("STOP");
    cluster.nodes[2].signal("STOP");
    common::eventually(20, "node1 stands down", || {
        (node1.get("/readyz").0 == 503).then_some(())
    });
    let (status, _) = node1.get("/api/v1/ticker/KRW-BTC");
    assert_eq!(status, 503, "standing down, it serves nothing");
    for gone in ["node2", "node3"] {
        let (ok, out, err) = ctl(node1, ADMIN_TOKEN, &["down", gone]);
        assert!(ok, "{out}{err}");
        assert!(out.contains(&format!("{gone} is down")), "{out}");
    }
    common::eventually(20, "node1 serves again", || {
        (node1.get("/readyz").0 == 200).then_some(())
    });
    common::eventually(20, "node1 owns every symbol", || {
        let (status, v) = node1.get("/api/v1/ticker/KRW-BTC");
        (status == 200).then_some(v)
    });
    let view = &cluster.views(&[0])[0];
    assert_eq!(view["agreed"], json!(["node1"]), "{view}");
    assert_eq!(view["ring"]["members"], json!(["node1"]), "{view}");
    node1.assert_logged("downed by an operator");
}
