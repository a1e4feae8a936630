//! Redis as a real, optional part of a node (docs/OPERATIONS.md "Redis"): two nodes that
//! name the same Redis share their login throttle; when Redis dies, both go on answering,
//! each counting on its own, and say so in the log and `/metrics`.
//!
//! The test starts its own `redis-server` (Debian's, which `scripts/test` installs) so it
//! can kill it; without the binary it prints SKIPPED, unless `BOURSE_REQUIRE_REDIS` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, free_port, metric, temp_dir};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of this test's own, killed (SIGKILL) when dropped.
struct RedisServer {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl RedisServer {
    /// Starts one on a free loopback port, without persistence; `None` (and a SKIPPED
    /// line) where no `redis-server` is installed and none is required.
    fn start(test: &str) -> Option<RedisServer> {
        let port = free_port();
        let dir = temp_dir("redis");
        let child = match RedisServer::spawn(port, &dir) {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var_os("BOURSE_REQUIRE_REDIS").is_none(),
                    "BOURSE_REQUIRE_REDIS is set but redis-server does not start: {e}"
                );
                println!("SKIPPED {test}: no redis-server ({e}); scripts/test installs it");
                return None;
            }
        };
        let server = RedisServer { child, port, dir };
        server.wait_pong();
        Some(server)
    }

    fn spawn(port: u16, dir: &std::path::Path) -> std::io::Result<Child> {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }

    fn wait_pong(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pings() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A fresh, empty server on the same port, after [`RedisServer::kill`].
    fn restart(&mut self) {
        self.child = RedisServer::spawn(self.port, &self.dir).expect("restart redis-server");
        self.wait_pong();
    }

    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok()
            && s.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn login(node: &Node, username: &str) -> (u16, serde_json::Value) {
    node.post(
        "/api/v1/auth/login",
        &json!({"username": username, "password": "not-the-password"}),
        &[],
    )
}

#[test]
fn login_throttles_hold_across_nodes_through_redis_and_outlive_it() {
    let Some(mut redis) = RedisServer::start("login_throttles_hold_across_nodes") else {
        return;
    };
    let env = |url: &str| {
        vec![
            ("BOURSE_REDIS__URL".to_string(), url.to_string()),
            // A loaded CI machine must not turn a slow answer into a fallback.
            ("BOURSE_REDIS__TIMEOUT_MS".to_string(), "5000".to_string()),
            (
                "BOURSE_AUTH__LOGIN_PER_IP_PER_MIN".to_string(),
                "4".to_string(),
            ),
        ]
    };
    let fallbacks = |node: &Node, scope: &str| {
        let (s, text) = node.get("/metrics");
        assert_eq!(s, 200);
        metric(
            text.as_str().unwrap_or_default(),
            &format!("bourse_redis_fallbacks_total{{scope=\"{scope}\"}}"),
        )
    };
    let a = Node::start_env("redis-a", "", env(&redis.url()), true);
    let b = Node::start_env("redis-b", "", env(&redis.url()), true);

    // Four attempts from this address on node a use up the address's minute...
    for i in 0..4 {
        let (s, v) = login(&a, &format!("user{i}"));
        assert_eq!(s, 401, "attempt {i} on a: {v}");
    }
    // ... on every node that shares the Redis: node b refuses the fifth.
    let (s, v) = login(&b, "user4");
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{v}"
    );

    assert_eq!(
        fallbacks(&a, "login_ip"),
        Some(0.0),
        "Redis decided every check"
    );
    assert_eq!(
        fallbacks(&b, "login_ip"),
        Some(0.0),
        "Redis decided every check"
    );

    // Redis dies: both nodes still answer every login, each counting in its own memory
    // (b has counted nothing itself yet, so it lets four through again).
    redis.kill();
    for i in 0..4 {
        let (s, v) = login(&b, &format!("late{i}"));
        assert_eq!(s, 401, "attempt {i} on b without redis: {v}");
    }
    let (s, v) = login(&b, "late4");
    assert_eq!(s, 429, "b's own throttle holds: {v}");
    let (s, v) = login(&a, "late5");
    assert_eq!(s, 401, "a answers without redis: {v}");

    let counted = fallbacks(&b, "login_ip");
    assert!(counted.is_some_and(|n| n >= 5.0), "{counted:?}");
    assert!(
        b.log().contains("redis does not answer"),
        "the outage is logged:\n{}",
        b.log()
    );
}

#[test]
fn a_node_starts_and_answers_while_its_redis_is_down() {
    // A port nothing listens on: the node starts (it connects lazily) and throttles alone.
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let node = Node::start_env(
        "redis-down",
        "",
        vec![
            ("BOURSE_REDIS__URL".into(), url),
            ("BOURSE_AUTH__REGISTER_PER_IP_PER_MIN".into(), "2".into()),
        ],
        true,
    );
    for i in 0..2 {
        let (s, v) = node.post(
            "/api/v1/auth/register",
            &json!({"username": format!("down{i}"), "password": "password123"}),
            &[],
        );
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = node.post(
        "/api/v1/auth/register",
        &json!({"username": "down2", "password": "password123"}),
        &[],
    );
    assert_eq!(s, 429, "the in-memory throttle holds: {v}");
    let (_, text) = node.get("/metrics");
    let counted = metric(
        text.as_str().unwrap_or_default(),
        "bourse_redis_fallbacks_total{scope=\"register_ip\"}",
    );
    assert_eq!(counted, Some(3.0), "each check fell back");
}

/// `GET` of `key` over RESP: the bulk string, if any.
fn redis_get(port: u16, key: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes())
        .ok()?;
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).ok()?;
    let reply = String::from_utf8_lossy(&buf[..n]).to_string();
    let (head, body) = reply.split_once("\r\n")?;
    (head != "$-1").then(|| body.trim_end().to_string())
}

#[test]
fn ticker_reads_are_shared_through_redis_and_outlive_it() {
    let Some(mut redis) = RedisServer::start("ticker_reads_are_shared_through_redis") else {
        return;
    };
    let env = vec![
        ("BOURSE_REDIS__URL".to_string(), redis.url()),
        ("BOURSE_REDIS__TIMEOUT_MS".to_string(), "5000".to_string()),
        // Long enough that the simulator's trades would change any uncached answer.
        (
            "BOURSE_REDIS__TICKER_CACHE_MS".to_string(),
            "60000".to_string(),
        ),
    ];
    let a = Node::start_env("ticker-a", "", env.clone(), true);
    let (s, first) = a.get("/api/v1/ticker/KRW-BTC");
    assert_eq!(s, 200, "{first}");
    let cached: serde_json::Value =
        serde_json::from_str(&redis_get(redis.port, "bourse:ticker:KRW-BTC").expect("cached"))
            .unwrap();
    assert_eq!(cached, first, "Redis holds the answer");
    std::thread::sleep(Duration::from_millis(1500));
    let (_, again) = a.get("/api/v1/ticker/KRW-BTC");
    assert_eq!(again, first, "served from Redis while trades go on");
    let (_, text) = a.get("/metrics");
    let text = text.as_str().unwrap_or_default().to_string();
    assert_eq!(
        metric(&text, "bourse_ticker_cache_total{outcome=\"hit\"}"),
        Some(1.0),
        "{text}"
    );

    // Without Redis, reads go to the symbol again: answered, and fresh.
    redis.kill();
    let (s, live) = a.get("/api/v1/ticker/KRW-BTC");
    assert_eq!(s, 200, "{live}");
    std::thread::sleep(Duration::from_millis(1500));
    let (_, later) = a.get("/api/v1/ticker/KRW-BTC");
    assert_ne!(later, first, "not the cached answer any more");
    let (_, text) = a.get("/metrics");
    let fell_back = metric(
        text.as_str().unwrap_or_default(),
        "bourse_redis_fallbacks_total{scope=\"ticker_cache\"}",
    );
    assert!(fell_back.is_some_and(|n| n >= 2.0), "{fell_back:?}");
}

/// A connection that asked `GET /healthz` and, when admitted, stays open (keep-alive):
/// the status and the socket.
fn connect(node: &Node) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut byte).is_ok() {
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, s)
}

/// Connects to `node` until admitted (a closed connection's place comes back in the
/// background): the socket, held open.
fn admitted(node: &Node, why: &str) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, s) = connect(node);
        if status == 200 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "never admitted: {why}\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `node`'s log says its counts were rewritten `times` times in all.
fn rewritten(node: &Node, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while node
        .log()
        .matches("connections per address rewritten")
        .count()
        < times
    {
        assert!(Instant::now() < deadline, "no rewrite:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn connections_per_address_hold_across_nodes_through_redis_heal_after_it_and_forget_a_dead_node() {
    let Some(mut redis) = RedisServer::start("connections_per_address_hold_across_nodes") else {
        return;
    };
    let env = vec![
        ("BOURSE_REDIS__URL".to_string(), redis.url()),
        ("BOURSE_REDIS__TIMEOUT_MS".to_string(), "5000".to_string()),
        (
            "BOURSE_GATEWAY__MAX_CONNECTIONS_PER_IP".to_string(),
            "3".to_string(),
        ),
        // The held connections are idle keep-alive ones, which a node closes after this
        // long: they must outlive the test (the default 10 s did not, on a slow run).
        (
            "BOURSE_GATEWAY__HEADER_READ_TIMEOUT_S".to_string(),
            "300".to_string(),
        ),
    ];
    let mut a = Node::start_env("conns-a", "", env.clone(), true);
    let b = Node::start_env("conns-b", "", env, true);

    // Two from this address on a and one on b: the address's three, on either node.
    let mut on_a = vec![admitted(&a, "first on a"), admitted(&a, "second on a")];
    let mut on_b = vec![admitted(&b, "first on b")];
    let (status, _) = connect(&b);
    assert_eq!(status, 503, "b holds one, but the cluster holds three");
    on_a.pop();
    on_b.push(admitted(&b, "a gave one back"));
    on_b.pop();
    // A metrics read is a connection too: retried while a closed one's place comes back.
    let read = |node: &Node, name: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (s, text) = node.get("/metrics");
            if s == 200 {
                return metric(text.as_str().unwrap_or_default(), name);
            }
            assert!(Instant::now() < deadline, "/metrics: {s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let refused = |node: &Node| {
        read(
            node,
            "bourse_gateway_connections_refused_total{limit=\"per_ip\"}",
        )
    };
    let fallbacks = |node: &Node| {
        read(
            node,
            "bourse_redis_fallbacks_total{scope=\"connections_ip\"}",
        )
    };
    assert!(refused(&b).is_some_and(|n| n >= 1.0));
    assert_eq!(fallbacks(&b), Some(0.0), "Redis decided every admission");

    // Redis dies: each node admits on its own count (b: one held, so two more).
    redis.kill();
    on_b.push(admitted(&b, "b without redis"));
    on_b.push(admitted(&b, "b without redis, again"));
    let (status, _) = connect(&b);
    assert_eq!(status, 503, "b's own count still holds");
    let late = admitted(&a, "a without redis");
    drop(late);
    on_b.pop();
    assert!(fallbacks(&b).is_some_and(|n| n >= 2.0));

    // A new, empty Redis: each node writes its counts again (a: one, b: two), so the
    // address is at its limit everywhere until b lets one go.
    redis.restart();
    rewritten(&a, 1);
    rewritten(&b, 1);
    let (status, _) = connect(&a);
    assert_eq!(status, 503, "b's rewritten two count on a:\n{}", b.log());
    on_b.truncate(1);
    on_a.push(admitted(&a, "b gave one back"));

    // a dies holding two: its incarnation stops counting once it has not renewed itself.
    let (status, _) = connect(&b);
    assert_eq!(status, 503, "a holds two and b one");
    a.kill9();
    drop(on_a);
    on_b.push(admitted(&b, "a's places expire with it"));
}

#[test]
fn chat_messages_per_user_hold_across_rooms_and_nodes_through_redis() {
    let Some(redis) = RedisServer::start("chat_messages_per_user_hold_across_rooms") else {
        return;
    };
    let env = vec![
        ("BOURSE_REDIS__URL".to_string(), redis.url()),
        ("BOURSE_REDIS__TIMEOUT_MS".to_string(), "5000".to_string()),
        (
            "BOURSE_CHAT__MESSAGES_PER_USER_PER_MIN".to_string(),
            "3".to_string(),
        ),
    ];
    let a = Node::start_env("chat-user-a", "", env.clone(), true);
    let b = Node::start_env("chat-user-b", "", env, true);
    // Both nodes sign with the test secret, so a's token is good on b.
    let (_, token) = a.register("chatty");
    let auth = format!("Bearer {token}");
    let post = |node: &Node, room: &str, text: &str| {
        node.post(
            &format!("/api/v1/chat/{room}/messages"),
            &json!({ "text": text }),
            &[("authorization", auth.as_str())],
        )
    };
    for (node, room) in [(&a, "KRW-BTC"), (&a, "KRW-ETH"), (&b, "KRW-XRP")] {
        let (s, v) = post(node, room, "hello");
        assert_eq!(s, 201, "{room}: {v}");
    }
    // Well under each room's own limit, but the user's fourth message anywhere.
    let (s, v) = post(&b, "KRW-SOL", "one too many");
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("chat messages")
    );
}
