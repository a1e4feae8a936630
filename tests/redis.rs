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
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.pings() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
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
