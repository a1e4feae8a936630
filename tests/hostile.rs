//! A hostile client cannot exhaust or confuse a node: login floods stay within bounded
//! memory and get `503`/`429` with `Retry-After`, bodies over a route's limit are `413`,
//! slow and idle HTTP connections are closed, WebSocket closes follow RFC 6455, errors
//! never name Rust types, client faults are not ERROR lines, and the HTTP edges (HEAD,
//! 405, 414, 431, CORS) answer in the protocol's words.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, Node, WsClient, header, metric, raw_http, raw_request};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

fn code(v: &str) -> String {
    serde_json::from_str::<Value>(v).unwrap_or(Value::Null)["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_login_flood_takes_bounded_memory_and_gets_503_or_429() {
    // Real argon2 costs (19 MiB a hash), two hashing slots, a short queue, and the
    // per-address throttle out of the way so the flood reaches the hashing.
    let node = Node::start_env(
        "login-flood",
        "[feed]\nkind = \"none\"\n",
        vec![
            ("BOURSE_AUTH__ARGON2_MEMORY_KIB".into(), "19456".into()),
            ("BOURSE_AUTH__ARGON2_ITERATIONS".into(), "2".into()),
            ("BOURSE_AUTH__HASH_WORKERS".into(), "2".into()),
            ("BOURSE_AUTH__HASH_QUEUE_MS".into(), "300".into()),
        ],
        true,
    );
    node.register("victim");
    let pid = node.pid().unwrap();
    let before = rss_kib(pid);
    let port = node.port;
    let started = Instant::now();
    let workers: Vec<_> = (0..50)
        .map(|i| {
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while started.elapsed() < Duration::from_secs(6) {
                    let body =
                        json!({"username": format!("nobody{i}"), "password": "wrong password"})
                            .to_string();
                    let (status, headers, _) =
                        raw_request(port, "POST", "/api/v1/auth/login", "", &body);
                    if status == 503 || status == 429 {
                        assert!(
                            header(&headers, "retry-after").is_some(),
                            "{status} without Retry-After"
                        );
                    }
                    seen.push(status);
                }
                seen
            })
        })
        .collect();
    let statuses: Vec<u16> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    // Let the last queued hashes finish.
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(pid);
    let count = |s: u16| statuses.iter().filter(|&&x| x == s).count();
    println!(
        "login flood: {} requests: {} x 401, {} x 503, {} x 429; RSS {} MiB -> {} MiB",
        statuses.len(),
        count(401),
        count(503),
        count(429),
        before / 1024,
        after / 1024
    );
    assert!(
        statuses.iter().all(|s| [401, 429, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(count(401) > 0, "some logins were answered");
    assert!(count(503) > 0, "two slots cannot take fifty logins at once");
    // Two 19 MiB buffers at most, plus allocator slack: never a buffer per request.
    assert!(
        after < before + 120 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // The node still serves, and the real user still logs in.
    let (status, v) = node.post(
        "/api/v1/auth/login",
        &json!({"username": "victim", "password": "password123"}),
        &[],
    );
    assert_eq!(status, 200, "{v}");
    let metrics = node.get("/metrics").1;
    let text = metrics.as_str().unwrap_or_default();
    assert!(
        metric(text, "bourse_auth_throttled_total{scope=\"queue\"}").unwrap_or(0.0) >= 1.0,
        "queue refusals are counted"
    );
}

#[test]
fn logins_and_registrations_are_throttled_with_retry_after() {
    let node = Node::start_env(
        "throttle",
        "[feed]\nkind = \"none\"\n",
        vec![
            ("BOURSE_AUTH__LOGIN_PER_USER_PER_MIN".into(), "10".into()),
            ("BOURSE_AUTH__LOGIN_PER_IP_PER_MIN".into(), "30".into()),
            ("BOURSE_AUTH__REGISTER_PER_IP_PER_MIN".into(), "3".into()),
        ],
        true,
    );
    for i in 0..3 {
        node.register(&format!("user{i}"));
    }
    let (status, v) = node.post(
        "/api/v1/auth/register",
        &json!({"username": "user9", "password": "password123"}),
        &[],
    );
    assert_eq!(
        (status, code(&v.to_string()).as_str()),
        (429, "rate_limited"),
        "{v}"
    );

    // Brute force on one user: ten tries, then 429 with Retry-After, even with the right
    // password.
    let body = |p: &str| json!({"username": "user0", "password": p}).to_string();
    let login = |p: &str| raw_request(node.port, "POST", "/api/v1/auth/login", "", &body(p));
    for _ in 0..10 {
        assert_eq!(login("wrong password").0, 401);
    }
    let (status, headers, body) = login("password123");
    assert_eq!(
        (status, code(&body).as_str()),
        (429, "rate_limited"),
        "{body}"
    );
    let retry: u64 = header(&headers, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another user from the same address is not locked out by it...
    assert_eq!(login_as(&node, "user1", "password123"), 200);
    // ...until the address itself is over its rate.
    let mut statuses = Vec::new();
    for i in 0..30 {
        statuses.push(login_as(&node, &format!("ghost{i}"), "password123"));
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

fn login_as(node: &Node, user: &str, password: &str) -> u16 {
    node.post(
        "/api/v1/auth/login",
        &json!({"username": user, "password": password}),
        &[],
    )
    .0
}

#[test]
fn bodies_errors_and_http_edges() {
    let node = Node::start_env(
        "edges",
        "[feed]\nkind = \"none\"\n[trading]\nmax_open_orders = 2\n",
        Vec::new(),
        true,
    );
    // Ready means the always-on entities serve: every symbol is listed at once.
    let (status, list) = node.api(
        "GET",
        "/admin/entities?kind=symbol",
        None,
        Some(ADMIN_TOKEN),
    );
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().map(Vec::len), Some(8), "{list}");

    let (_, token) = node.register("mallory");
    let bearer = format!("Authorization: bearer {token}\r\n");
    let post = |path: &str, body: &str| raw_request(node.port, "POST", path, &bearer, body);

    // Arrays are not positional bodies, and errors name fields, never Rust types.
    let (status, _, body) = post(
        "/api/v1/orders",
        r#"["KRW-BTC","buy","limit","1000","0.0001"]"#,
    );
    assert_eq!((status, code(&body).as_str()), (400, "bad_request"));
    assert!(body.contains("JSON object"), "{body}");
    let (status, _, body) = post("/api/v1/orders", "[]");
    assert_eq!(status, 400);
    assert!(
        !body.contains("struct") && !body.contains("PlaceBody"),
        "{body}"
    );
    let (status, _, body) = post("/api/v1/orders", r#"{"symbol":"KRW-BTC","side":5}"#);
    assert_eq!(status, 400);
    assert!(body.contains("field `side`"), "{body}");

    // One body limit per route: an order over 8 KiB is 413, a legal chat message that a
    // JSON encoder escaped to 24 KB is accepted.
    let big = json!({"symbol": "x".repeat(9000)}).to_string();
    let (status, _, body) = post("/api/v1/orders", &big);
    assert_eq!((status, code(&body).as_str()), (413, "too_large"), "{body}");
    let escaped: String = "\\ud83d\\ude00".repeat(2000);
    let chat = format!(r#"{{"text":"{escaped}"}}"#);
    assert!(chat.len() > 24_000);
    let (status, _, body) = post("/api/v1/chat/KRW-BTC/messages", &chat);
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = post("/api/v1/chat/KRW-BTC/messages", &"x".repeat(40_000));
    assert_eq!((status, code(&body).as_str()), (413, "too_large"));
    let (status, _, _) = post("/api/v1/alerts", &big);
    assert_eq!(status, 413);

    // A fall of 100 % or more can never fire; a sign belongs to its number.
    for value in ["-100", "-101", "- 5"] {
        let rule = json!({"symbol": "KRW-BTC", "condition": "change_pct", "value": value});
        let (status, _, body) = post("/api/v1/alerts", &rule.to_string());
        assert_eq!(status, 400, "{value}: {body}");
    }

    // The open-order cap holds resting orders only: a market order still goes through.
    for price in ["100000000", "100001000"] {
        let order = json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit", "price": price, "qty": "0.001"});
        let (status, _, body) = post("/api/v1/orders", &order.to_string());
        assert_eq!(status, 201, "{body}");
    }
    let third = json!({"symbol": "KRW-BTC", "side": "buy", "type": "limit", "price": "100002000", "qty": "0.001"});
    let (status, _, body) = post("/api/v1/orders", &third.to_string());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("open orders"), "{body}");
    let market = json!({"symbol": "KRW-BTC", "side": "sell", "type": "market", "qty": "0.001"});
    let (status, _, body) = post("/api/v1/orders", &market.to_string());
    assert_eq!(status, 201, "a market order never rests: {body}");

    // HEAD works where GET does, with no body; a wrong method is 405 with Allow.
    let (status, headers, body) = raw_http(
        node.port,
        "HEAD /api/v1/symbols HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(header(&headers, "content-length").is_some_and(|l| l != "0"));
    let (status, headers, body) = raw_http(
        node.port,
        "PUT /api/v1/orders HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    );
    assert_eq!((status, code(&body).as_str()), (405, "method_not_allowed"));
    assert_eq!(header(&headers, "allow"), Some("POST, GET, HEAD"));
    let (status, _, body) = raw_request(node.port, "GET", "/api/v2/nothing", "", "");
    assert_eq!((status, code(&body).as_str()), (404, "not_found"));

    // 414 and 431 carry the JSON error.
    heads_over_the_limits_are_refused(node.port, "/api/v1/symbols", "?");

    // No CORS policy by default: no CORS headers.
    let (_, headers, _) = raw_request(
        node.port,
        "GET",
        "/api/v1/symbols",
        "origin: https://evil.example\r\n",
        "",
    );
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
}

#[test]
fn cors_from_config_answers_preflight() {
    let node = Node::start_env(
        "cors",
        "[feed]\nkind = \"none\"\n[gateway]\ncors_origins = [\"https://app.example\"]\n",
        Vec::new(),
        true,
    );
    let (status, headers, _) = raw_http(
        node.port,
        "OPTIONS /api/v1/orders HTTP/1.1\r\nhost: x\r\nconnection: close\r\norigin: https://app.example\r\naccess-control-request-method: POST\r\naccess-control-request-headers: authorization, content-type\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(header(&headers, "access-control-allow-methods").is_some_and(|m| m.contains("POST")));
    // A browser replacing a watchlist asks for PUT.
    let (status, headers, _) = raw_http(
        node.port,
        "OPTIONS /api/v1/watchlist HTTP/1.1\r\nhost: x\r\nconnection: close\r\norigin: https://app.example\r\naccess-control-request-method: PUT\r\naccess-control-request-headers: authorization, content-type\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(header(&headers, "access-control-allow-methods").is_some_and(|m| m.contains("PUT")));
    let (status, headers, _) = raw_request(
        node.port,
        "GET",
        "/api/v1/symbols",
        "origin: https://app.example\r\n",
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example")
    );
    let (status, _, body) = raw_http(
        node.port,
        "OPTIONS /api/v1/orders HTTP/1.1\r\nhost: x\r\nconnection: close\r\norigin: https://evil.example\r\naccess-control-request-method: POST\r\n\r\n",
    );
    assert_eq!((status, code(&body).as_str()), (403, "forbidden"), "{body}");
}

#[test]
fn slow_and_idle_http_connections_are_closed_and_client_faults_are_not_errors() {
    let node = Node::start_env(
        "slow",
        "[feed]\nkind = \"none\"\n[gateway]\nheader_read_timeout_s = 2\n",
        Vec::new(),
        true,
    );
    // A slow-header client: one byte a second never completes its head.
    let mut slow = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut closed_after = None;
    for byte in b"GET /healthz HTTP/1.1\r\nhost: slowly-typed-header\r\n"
        .iter()
        .cycle()
    {
        if slow.write_all(&[*byte]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(0) = slow.read(&mut buf) {
            closed_after = Some(started.elapsed());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "slow client still open"
        );
        std::thread::sleep(Duration::from_millis(800));
    }
    println!("slow-header client closed after {closed_after:?}");
    assert!(closed_after.is_some());

    // An idle keep-alive connection is closed too.
    let mut idle = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = idle.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "idle connection kept open"
    );
    println!(
        "idle keep-alive connection closed after {:?}",
        started.elapsed()
    );

    // Aborted requests, mid-head and mid-body: not logged as errors; those cut inside the
    // head are counted.
    for i in 0..40 {
        let mut s = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
        let partial: &[u8] = if i % 2 == 0 {
            b"POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-le"
        } else {
            b"POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"user"
        };
        s.write_all(partial).unwrap();
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (status, text) = node.get("/metrics");
    assert_eq!(status, 200);
    let text = text.as_str().unwrap_or_default().to_string();
    let faults: f64 = ["incomplete", "io", "header_timeout"]
        .iter()
        .filter_map(|k| {
            metric(
                &text,
                &format!("bourse_gateway_client_errors_total{{kind=\"{k}\"}}"),
            )
        })
        .sum();
    assert!(faults >= 20.0, "client faults counted: {faults}\n{text}");
    let log = node.full_log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "client faults logged as errors: {errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_closes_follow_rfc_6455() {
    let node = Node::start("ws-close", "[feed]\nkind = \"none\"\n");

    // A client's Close is answered with a Close.
    let mut ws = WsClient::connect(&node.ws_url()).await;
    assert_eq!(ws.request("ping", json!({})).await["ok"], json!(true));
    let (mut socket, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    socket.send(Message::Close(None)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("the server answers the Close in time");
    assert!(
        matches!(answer, Some(Ok(Message::Close(_))) | None),
        "{answer:?}"
    );
    // tungstenite reports the handshake as done only when the peer's Close arrived.
    assert!(
        matches!(answer, Some(Ok(Message::Close(_)))),
        "no Close frame came back: {answer:?}"
    );

    // Text that is not UTF-8: 1007.
    let (mut socket, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    let frame = Frame::message(vec![0xff, 0xfe, 0x41], OpCode::Data(Data::Text), true);
    socket.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_code(&mut socket).await, Some(1007));

    // A protocol violation (a reserved bit set): 1002.
    let (mut socket, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    let header = FrameHeader {
        rsv1: true,
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    let frame = Frame::from_payload(header, b"{}".to_vec().into());
    socket.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_code(&mut socket).await, Some(1002));

    // The first client is unaffected.
    assert_eq!(ws.request("ping", json!({})).await["ok"], json!(true));
}

/// Stream frames are written past the WebSocket layer (each encoded once, whole, for every
/// subscriber), beside the pongs that layer writes itself. A client with a small receive
/// window reads a busy channel more slowly than it flows, so the server's socket stays all
/// but full, and pings with the largest payloads meanwhile; then it reads at full speed:
/// every pong comes back, in order, and every event whole and in sequence. (That a pong the
/// socket took in part is finished before any frame is checked deterministically in
/// gateway/src/ws/mod.rs: this run did not split one on the build without that step.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_while_the_socket_is_full_get_every_pong_and_every_event_whole() {
    let node = Node::start(
        "pongs",
        "[feed]\ntrades_per_sec = 2000\n[trading]\nvenue = \"mirror\"\n[gateway]\noutbound_queue = 100000\n",
    );
    let mut ws = common::ws_small_window(&node).await;
    let subscribe = json!({"id": 1, "op": "subscribe", "channels": ["trades:KRW-BTC"]});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    let mut got = Received::default();
    got.read(&mut ws, Duration::from_secs(1), Duration::ZERO)
        .await;
    const PINGS: usize = 200;
    // A control frame carries at most 125 bytes.
    let payload = |i: usize| format!("{i:03}").repeat(41).into_bytes();
    for i in 0..PINGS {
        ws.send(Message::Ping(payload(i).into())).await.unwrap();
        // About 500 messages a second, a quarter of what flows.
        got.read(&mut ws, Duration::from_millis(15), Duration::from_millis(2))
            .await;
    }
    got.read(&mut ws, Duration::from_secs(8), Duration::ZERO)
        .await;
    let expected: Vec<Vec<u8>> = (0..PINGS).map(payload).collect();
    assert_eq!(got.pongs, expected, "every ping answered once, in order");
    let mut events = Vec::new();
    for t in &got.texts {
        let v: Value = serde_json::from_str(t).unwrap_or_else(|e| panic!("{e}: {t}"));
        if v.get("id").is_none() {
            events
                .push(common::Event::from_json(&v).unwrap_or_else(|| panic!("not an event: {t}")));
        }
    }
    assert!(events.len() > 1000, "only {} events came", events.len());
    assert_eq!(common::assert_continuity(&events), 0);
}

/// What a WebSocket client read: texts and pong payloads, in order.
#[derive(Default)]
struct Received {
    texts: Vec<String>,
    pongs: Vec<Vec<u8>>,
}

impl Received {
    /// Reads `ws` for `secs`, pausing `pause` after each message; any failure of the
    /// stream panics.
    async fn read(
        &mut self,
        ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
        secs: Duration,
        pause: Duration,
    ) {
        let until = tokio::time::Instant::now() + secs;
        // The deadline is checked first: a timeout takes a message that is ready after it.
        while tokio::time::Instant::now() < until {
            let Ok(next) = tokio::time::timeout_at(until, ws.next()).await else {
                break;
            };
            match next {
                Some(Ok(Message::Text(t))) => self.texts.push(t.to_string()),
                Some(Ok(Message::Pong(p))) => self.pongs.push(p.to_vec()),
                Some(Ok(_)) => {}
                other => panic!("the stream broke: {other:?}"),
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }
}

async fn close_code(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
    None
}

/// Reads from `s` (whose read timeout is short) until `done` holds of what came, the peer
/// closes, or 10 s pass: what came, as text.
fn read_until(s: &mut TcpStream, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    while Instant::now() < deadline && !done(&String::from_utf8_lossy(&got)) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
    String::from_utf8_lossy(&got).to_string()
}

/// A request target over 8 KiB is 414, a header section over 16 KiB or over 100 headers
/// is 431, each with the JSON error. `path` is a good request; `join` adds a query to it.
fn heads_over_the_limits_are_refused(port: u16, path: &str, join: &str) {
    // Over the limit, and over what a server reads of a head before it gives up on one.
    for len in [9000, 30_000] {
        let long = format!("{path}{join}a={}", "a".repeat(len));
        let (status, _, body) = raw_request(port, "GET", &long, "", "");
        assert_eq!(
            (status, code(&body).as_str()),
            (414, "too_large"),
            "{len}: {body}"
        );
    }
    let big = format!("x-big: {}\r\n", "a".repeat(17_000));
    let (status, _, body) = raw_request(port, "GET", path, &big, "");
    assert_eq!((status, code(&body).as_str()), (431, "too_large"), "{body}");
    let many: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (status, _, body) = raw_request(port, "GET", path, &many, "");
    assert_eq!((status, code(&body).as_str()), (431, "too_large"), "{body}");
}

/// `GET /ws` opening a connection is served outside hyper and warp (gateway/src/direct.rs);
/// on a reused keep-alive connection it goes through them. Both answer alike: the same
/// limits, refusals and error bodies, RFC 6455's accept key, and a frame the client sent
/// right behind its request head is read and answered.
#[test]
fn websocket_gets_the_same_answers_on_a_fresh_and_on_a_reused_connection() {
    let node = Node::start("hostile-ws", "");
    heads_over_the_limits_are_refused(node.port, "/ws?a=b", "&");
    let (_, token) = node.register("fragment");
    let upgrade = "connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n\
                   sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    // `{"id":1,"op":"ping"}` in one masked text frame (mask key 0: the payload as is).
    let ping = br#"{"id":1,"op":"ping"}"#;
    let mut frame = vec![0x81, 0x80 | ping.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(ping);
    // One request (behind a `GET /healthz` on the same connection when `reused`), and
    // what came back: the head, and the body or the frames' bytes as text.
    let request_head = |version: &str, target: &str, headers: &str| {
        format!("GET {target} {version}\r\nHost: x\r\n{headers}\r\n")
    };
    let exchange = |reused: bool, head: String, behind: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if reused {
            write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let answer = read_until(&mut s, |t| t.trim_end().ends_with('}'));
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        let mut request = head.into_bytes();
        request.extend_from_slice(behind);
        s.write_all(&request).unwrap();
        let text = read_until(&mut s, |t| {
            t.contains("\"pong\"") || (t.contains("{\"error\"") && t.trim_end().ends_with('}'))
        });
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (head.to_ascii_lowercase(), rest.to_string())
    };
    for (path, reused) in [("direct", false), ("hyper", true)] {
        // The direct path closes after an error; hyper keeps the connection for the next
        // request: which of the two answered.
        let closes = |head: &str| head.contains("connection: close");
        let (head, body) = exchange(reused, request_head("HTTP/1.1", "/ws", ""), b"");
        assert!(head.starts_with("http/1.1 400"), "{path}: {head}");
        assert_eq!(code(&body), "bad_request", "{path}: {body}");
        assert_eq!(closes(&head), !reused, "{path}: {head}");
        let (head, body) = exchange(
            reused,
            request_head("HTTP/1.1", "/ws?token=bad", upgrade),
            b"",
        );
        assert!(head.starts_with("http/1.1 401"), "{path}: {head}");
        assert_eq!(code(&body), "unauthorized", "{path}: {body}");
        assert_eq!(closes(&head), !reused, "{path}: {head}");
        // HTTP/1.0 cannot upgrade.
        let (head, body) = exchange(reused, request_head("HTTP/1.0", "/ws", upgrade), b"");
        assert!(head.contains(" 400 "), "{path}: {head}");
        assert_eq!(code(&body), "bad_request", "{path}: {body}");
        let (head, frames) = exchange(reused, request_head("HTTP/1.1", "/ws", upgrade), &frame);
        assert!(head.starts_with("http/1.1 101"), "{path}: {head}");
        // The example of RFC 6455 section 1.3.
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{path}: {head}"
        );
        assert!(
            frames.contains(r#""id":1"#) && frames.contains(r#""pong""#),
            "{path}: the frame sent behind the head was not answered: {frames:?}"
        );
        // Lines ending in a bare LF (RFC 9112 section 2.2 lets a server take them).
        let bare = request_head("HTTP/1.1", "/ws", upgrade).replace("\r\n", "\n");
        let (head_lf, frames) = exchange(reused, bare, &frame);
        assert!(head_lf.starts_with("http/1.1 101"), "{path}: {head_lf}");
        assert!(frames.contains(r#""pong""#), "{path}: {frames:?}");
        // A fragment is no part of the query: the token before it logs in.
        let target = format!("/ws?token={token}#frag");
        let (head_frag, frames) =
            exchange(reused, request_head("HTTP/1.1", &target, upgrade), &frame);
        assert!(head_frag.starts_with("http/1.1 101"), "{path}: {head_frag}");
        assert!(frames.contains(r#""pong""#), "{path}: {frames:?}");
    }
}

/// `GET /sse` opening a connection is served outside hyper (gateway/src/direct.rs); on a
/// reused keep-alive connection it goes through hyper. Both answer alike: the same limits
/// and error bodies, the same event text, and a silent client is closed.
#[test]
fn sse_gets_the_same_answers_on_a_fresh_and_on_a_reused_connection() {
    let node = Node::start("hostile-sse", "[feed]\ntrades_per_sec = 20\n");
    heads_over_the_limits_are_refused(node.port, "/sse?channels=trades:KRW-BTC", "&");
    let (status, headers, body) = raw_request(node.port, "GET", "/sse?channels=nope:X", "", "");
    assert_eq!(
        (status, code(&body).as_str()),
        (400, "bad_request"),
        "{body}"
    );
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let (status, _, body) = raw_request(node.port, "GET", "/sse?token=bad&channels=orders", "", "");
    assert_eq!(
        (status, code(&body).as_str()),
        (401, "unauthorized"),
        "{body}"
    );

    // The stream's text, fresh and after a keep-alive request on the same connection.
    let read_events = |first: Option<&str>| -> (String, String) {
        let mut s = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Some(path) = first {
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let answer = read_until(&mut s, |t| t.trim_end().ends_with('}'));
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        write!(
            s,
            "GET /sse?channels=trades:KRW-BTC HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && text.matches("\ndata:").count() < 3 {
            if let Ok(n) = s.read(&mut buf) {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_ascii_lowercase(), body.to_string())
    };
    for (path, first) in [("direct", None), ("hyper", Some("/healthz"))] {
        let (head, body) = read_events(first);
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert!(
            head.contains("content-type: text/event-stream"),
            "{path}: {head}"
        );
        assert!(head.contains("cache-control: no-cache"), "{path}: {head}");
        // id:<epoch>:<seq>, event:trades, data:<the WebSocket event JSON>
        let event = body
            .split("\n\n")
            .find(|e| e.contains("data:"))
            .unwrap_or_else(|| panic!("{path}: no event in {body}"));
        let fields: Vec<&str> = event.trim_matches(['\r', '\n']).lines().collect();
        assert!(
            fields.iter().any(|l| l.starts_with("event:trades")),
            "{path}: {event}"
        );
        assert!(
            fields.iter().any(|l| l.starts_with("id:")),
            "{path}: {event}"
        );
        let data = fields.iter().find_map(|l| l.strip_prefix("data:")).unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["ch"], "trades:KRW-BTC", "{path}: {event}");
    }
}
