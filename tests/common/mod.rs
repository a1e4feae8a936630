//! The shared test client for whole-system tests: starts real `bourse` processes on free
//! loopback ports and talks to them only through docs/PROTOCOL.md (REST, WebSocket, SSE).
//! Every node is SIGKILLed and its data directory removed when the handle drops.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub mod net;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const AUTH_SECRET: &str = "test-auth-secret-0123456789";

/// A free loopback port for a node to listen on, never handed out twice in this process.
///
/// It is picked below the kernel's ephemeral range (Linux: 32768 and up), so no outgoing
/// connection of a running node or client can take it between this check and the node's
/// own bind; a port the OS hands out for `:0` could be.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(fastrand_u32()) ^ u64::from(std::process::id()) << 20;
    for _ in 0..10_000 {
        // splitmix64 over a counter: spread out, different in every test process.
        let mut z = seed.wrapping_add(
            NEXT.fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let port = 20_000 + ((z ^ (z >> 31)) % 12_000) as u16;
        let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
        if taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bourse-it-{name}-{}-{}",
        std::process::id(),
        fastrand_u32()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn fastrand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    t ^ std::process::id().rotate_left(7)
}

/// Where a node runs: an address of this machine, or one inside a network namespace (a
/// separate host as far as the node can tell).
#[derive(Debug, Clone)]
pub struct Host {
    pub addr: String,
    pub netns: Option<String>,
}

impl Host {
    /// This machine's loopback.
    pub fn local() -> Host {
        Host {
            addr: "127.0.0.1".into(),
            netns: None,
        }
    }
}

/// One `bourse node` process.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
    wait_ready: bool,
    pub host: Host,
}

impl Node {
    /// Starts a node with `extra` TOML appended to a test config, and waits until ready.
    pub fn start(name: &str, extra: &str) -> Node {
        Node::start_env(name, extra, Vec::new(), true)
    }

    /// Starts a node with extra `BOURSE_*` variables (they win over the defaults here);
    /// `wait_ready` false returns as soon as the process runs.
    pub fn start_env(
        name: &str,
        extra: &str,
        env: Vec<(String, String)>,
        wait_ready: bool,
    ) -> Node {
        Node::start_on(Host::local(), name, extra, env, wait_ready)
    }

    /// As [`Node::start_env`], on `host`.
    pub fn start_on(
        host: Host,
        name: &str,
        extra: &str,
        env: Vec<(String, String)>,
        wait_ready: bool,
    ) -> Node {
        let dir = temp_dir(name);
        let port = free_port();
        let config = dir.join("node.toml");
        // Identity, address and admin token come from the environment (exercising the
        // BOURSE_* overrides); the file holds the test's own settings.
        std::fs::write(&config, extra).expect("write config");
        let mut node = Node {
            child: None,
            port,
            dir,
            config,
            env,
            wait_ready,
            host,
        };
        // A port free when picked can be bound by another process before the node binds
        // it (rarely: seen once in CI); a first start then tries another one.
        for _ in 0..3 {
            node.spawn_once();
            if !node.wait_ready {
                return node;
            }
            match node.ready_or_exit() {
                Ok(()) => return node,
                Err(log) if log.contains("gateway.listen") && log.contains("is in use") => {
                    node.port = free_port();
                }
                Err(log) => panic!("bourse exited early: {log}"),
            }
        }
        panic!("no free gateway port in three tries: {}", node.log());
    }

    fn spawn(&mut self) {
        self.spawn_once();
        if self.wait_ready {
            self.wait_ready();
        }
    }

    fn spawn_once(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .expect("log file");
        let mut command = match &self.host.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_bourse")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_bourse")),
        };
        let child = command
            .args(["node", "--config"])
            .arg(&self.config)
            .env("BOURSE_NODE__NAME", "node1")
            .env("BOURSE_NODE__DATA_DIR", self.dir.join("data"))
            .env(
                "BOURSE_GATEWAY__LISTEN",
                format!("{}:{}", self.host.addr, self.port),
            )
            .env("BOURSE_ADMIN__TOKEN", ADMIN_TOKEN)
            .env("BOURSE_AUTH__SECRET", AUTH_SECRET)
            // Cheap password hashing keeps tests that register many users quick.
            .env("BOURSE_AUTH__ARGON2_MEMORY_KIB", "64")
            .env("BOURSE_AUTH__ARGON2_ITERATIONS", "1")
            // Tests register and log in many users from one address; the throttles have a
            // test of their own (tests/hostile.rs).
            .env("BOURSE_AUTH__LOGIN_PER_USER_PER_MIN", "100000")
            .env("BOURSE_AUTH__LOGIN_PER_IP_PER_MIN", "100000")
            .env("BOURSE_AUTH__REGISTER_PER_IP_PER_MIN", "100000")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start bourse");
        self.child = Some(child);
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self) {
        if let Err(log) = self.ready_or_exit() {
            panic!("bourse exited early: {log}");
        }
    }

    /// Waits until `/readyz` answers 200; the exit status and log if the process ended
    /// first.
    fn ready_or_exit(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = self.try_get("/readyz") {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("{status}: {}", self.log()));
            }
            assert!(
                Instant::now() < deadline,
                "node not ready in 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node's log so far (for failure messages).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same data directory and port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGKILLs the node and starts it again with `extra` as its config file.
    pub fn restart_with(&mut self, extra: &str) {
        self.kill9();
        std::fs::write(&self.config, extra).expect("write config");
        self.spawn();
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        self.wait_exit(Duration::from_secs(20))
    }

    /// Waits (bounded) for the process to exit by itself; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`) to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(child) = self.child.as_ref() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    /// The whole log (for checks on what it says).
    pub fn full_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// Fails the test, showing the log's tail, unless the node has logged `text`.
    #[track_caller]
    pub fn assert_logged(&self, text: &str) {
        assert!(self.full_log().contains(text), "{}", self.log());
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host.addr, self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}:{}/ws", self.host.addr, self.port)
    }

    fn try_get(&self, path: &str) -> Result<(u16, Value), String> {
        http(&self.url(path), "GET", None, &[])
    }

    /// GET → (status, JSON body).
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POST JSON with optional headers → (status, JSON body).
    pub fn post(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
        http(&self.url(path), "POST", Some(body), headers)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Any method with an optional JSON body and bearer token → (status, JSON body).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        http(&self.url(path), method, body, &headers)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Registers `username` (password `password123`) → (user id, token).
    pub fn register(&self, username: &str) -> (String, String) {
        let (status, v) = self.post(
            "/api/v1/auth/register",
            &json!({"username": username, "password": "password123"}),
            &[],
        );
        assert_eq!(status, 201, "register {username}: {v}");
        (
            v["user_id"].as_str().expect("user_id").to_string(),
            v["token"].as_str().expect("token").to_string(),
        )
    }

    /// Kills an entity through the admin API.
    pub fn chaos_kill(&self, kind: &str, key: &str) -> (u16, Value) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        self.post(
            "/admin/chaos/kill",
            &json!({"kind": kind, "key": key}),
            &[("authorization", &auth)],
        )
    }
}

/// `KEEP_TEST_DIRS=1` keeps test directories (logs, data) for a post-mortem.
fn keep() -> bool {
    std::env::var_os("KEEP_TEST_DIRS").is_some()
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if keep() {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A KRW-BTC limit order body.
pub fn limit(side: &str, price: &str, qty: &str) -> Value {
    json!({"symbol": "KRW-BTC", "side": side, "type": "limit", "price": price, "qty": qty})
}

/// Places an order, retrying `unavailable` (an entity moving or restarting) with the same
/// `client_order_id`, so it is acknowledged exactly once.
pub fn place_acked(node: &Node, token: &str, mut body: Value, client_id: &str) -> Value {
    body["client_order_id"] = json!(client_id);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = node.api("POST", "/api/v1/orders", Some(&body), Some(token));
        match status {
            200 | 201 => {
                assert_ne!(v["status"], "rejected", "an acknowledged order stands: {v}");
                return v;
            }
            503 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            _ => panic!("place {body}: {status} {v}\n{}", node.log()),
        }
    }
}

pub fn http(
    url: &str,
    method: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Result<(u16, Value), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let result = match (method, body) {
        (m @ ("POST" | "PUT"), Some(b)) => {
            let req = if m == "PUT" {
                agent.put(url)
            } else {
                agent.post(url)
            };
            let mut req = req.header("content-type", "application/json");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send(b.to_string().as_bytes())
        }
        ("DELETE", _) => {
            let mut req = agent.delete(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
        _ => {
            let mut req = agent.get(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
    };
    let mut resp = result.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

/// One raw HTTP/1.1 exchange, for what `http` cannot send (any method, header or byte):
/// (status, headers with lower-case names, body).
pub fn raw_http(port: u16, request: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// `raw_http` of one `method path` request with extra `headers` (each ending in `\r\n`)
/// and a body; the connection closes after it.
pub fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    raw_http(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{headers}content-length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// A header of a `raw_http` answer.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A stream event as received.
#[derive(Debug, Clone)]
pub struct Event {
    pub ch: String,
    pub epoch: String,
    pub seq: u64,
    pub ts: i64,
    pub data: Value,
}

impl Event {
    pub fn from_json(v: &Value) -> Option<Event> {
        Some(Event {
            ch: v.get("ch")?.as_str()?.to_string(),
            epoch: v.get("epoch")?.as_str()?.to_string(),
            seq: v.get("seq")?.as_u64()?,
            ts: v.get("ts")?.as_i64()?,
            data: v.get("data")?.clone(),
        })
    }
}

/// How a WebSocket ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    Code(u16, String),
    NoFrame,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client: requests by id, events collected in arrival order.
pub struct WsClient {
    socket: Socket,
    next_id: u64,
    pub events: Vec<Event>,
    pub responses: HashMap<String, Value>,
    pub closed: Option<Closed>,
}

impl WsClient {
    pub async fn connect(url: &str) -> WsClient {
        let (socket, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .expect("connect in time")
        .expect("websocket connect");
        WsClient {
            socket,
            next_id: 1,
            events: Vec::new(),
            responses: HashMap::new(),
            closed: None,
        }
    }

    /// Sends raw text.
    pub async fn send_raw(&mut self, text: String) {
        self.socket.send(Message::text(text)).await.expect("send");
    }

    /// Sends raw text that the server may refuse mid-write (an oversize frame): the server
    /// closes as soon as it reads the frame's length, so the write can fail with a broken
    /// pipe. Returns whether the whole frame was written.
    pub async fn try_send_raw(&mut self, text: String) -> bool {
        self.socket.send(Message::text(text)).await.is_ok()
    }

    /// Sends `{"id", "op", ...fields}` and waits for its response.
    pub async fn request(&mut self, op: &str, fields: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = fields;
        msg["id"] = json!(id);
        msg["op"] = json!(op);
        self.send_raw(msg.to_string()).await;
        self.wait_response(&id.to_string(), Duration::from_secs(10))
            .await
    }

    /// Waits for the response with `id` (as a string key).
    pub async fn wait_response(&mut self, id: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.responses.remove(id) {
                return r;
            }
            assert!(
                self.closed.is_none(),
                "closed before response {id}: {:?}",
                self.closed
            );
            assert!(self.read_one(deadline).await, "no response to {id}");
        }
    }

    /// Reads frames for `dur`, sorting them into responses and events.
    pub async fn pump(&mut self, dur: Duration) {
        let deadline = tokio::time::Instant::now() + dur;
        while self.read_one(deadline).await {}
    }

    /// Reads one frame into responses or events; false once `deadline` passes or the
    /// socket closed. Callers waiting for something check after each frame, so a wait ends
    /// as soon as what it waits for arrives.
    async fn read_one(&mut self, deadline: tokio::time::Instant) -> bool {
        if self.closed.is_some() {
            return false;
        }
        let Ok(msg) = tokio::time::timeout_at(deadline, self.socket.next()).await else {
            return false;
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("server sends JSON");
                if let Some(id) = v.get("id") {
                    let key = match id {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    self.responses.insert(key, v);
                } else if let Some(e) = Event::from_json(&v) {
                    self.events.push(e);
                } else {
                    panic!("unexpected frame {v}");
                }
            }
            Some(Ok(Message::Close(frame))) => {
                self.closed = Some(match frame {
                    Some(f) => Closed::Code(u16::from(f.code), f.reason.to_string()),
                    None => Closed::NoFrame,
                });
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => self.closed = Some(Closed::NoFrame),
        }
        true
    }

    /// Reads events until `done` holds of what was read, for at most `timeout`; whether
    /// it held.
    pub async fn pump_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&WsClient) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            if !self.read_one(deadline).await {
                return done(self);
            }
        }
        true
    }

    /// Waits until an event matches or time runs out.
    pub async fn wait_event(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = 0;
        loop {
            if let Some(e) = self.events[seen..].iter().find(|e| pred(e)) {
                return Some(e.clone());
            }
            seen = self.events.len();
            if !self.read_one(deadline).await {
                return None;
            }
        }
    }

    pub fn close_code(&self) -> Option<u16> {
        match &self.closed {
            Some(Closed::Code(c, _)) => Some(*c),
            _ => None,
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .socket
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}

/// A WebSocket to `node` whose receive window is 4 KiB: the server's writes back up after a
/// few kilobytes the client does not read.
pub async fn ws_small_window(
    node: &Node,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = format!("127.0.0.1:{}", node.port).parse().unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(node.ws_url(), stream)
        .await
        .unwrap();
    ws
}

/// Checks every channel's events: within an epoch `seq` rises by exactly 1 (on `ticker:`
/// channels, which a slow client gets conflated, it only rises); an epoch change is allowed
/// (history lost, announced). Returns the number of epoch changes.
pub fn assert_continuity(events: &[Event]) -> usize {
    let mut last: HashMap<&str, (&str, u64)> = HashMap::new();
    let mut epoch_changes = 0;
    for e in events {
        if let Some((epoch, seq)) = last.get(e.ch.as_str()) {
            if *epoch == e.epoch && e.ch.starts_with("ticker:") {
                assert!(
                    e.seq > *seq,
                    "{} went back in epoch {}: {} after {}",
                    e.ch,
                    e.epoch,
                    e.seq,
                    seq
                );
            } else if *epoch == e.epoch {
                assert_eq!(
                    e.seq,
                    seq + 1,
                    "gap on {} in epoch {}: {} after {}",
                    e.ch,
                    e.epoch,
                    e.seq,
                    seq
                );
            } else {
                epoch_changes += 1;
            }
        }
        last.insert(&e.ch, (&e.epoch, e.seq));
    }
    epoch_changes
}

/// A parsed SSE event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: Value,
}

/// Reads SSE events from a raw HTTP connection for up to `dur` (or `max` events).
pub fn read_sse(
    port: u16,
    path_and_query: &str,
    last_event_id: Option<&str>,
    dur: Duration,
    max: usize,
) -> (u16, Vec<SseEvent>) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut req = format!(
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
    );
    if let Some(id) = last_event_id {
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("write");
    let mut reader = BufReader::new(stream);
    let deadline = Instant::now() + dur;
    let mut status = 0u16;
    let mut in_body = false;
    let mut events = Vec::new();
    let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
    let mut line = String::new();
    while Instant::now() < deadline && events.len() < max {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(_) => break,
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if status == 0 {
            status = l
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if status != 200 {
                let mut rest = String::new();
                let _ = reader.read_to_string(&mut rest);
                return (status, Vec::new());
            }
            continue;
        }
        if !in_body {
            if l.is_empty() {
                in_body = true;
            }
            continue;
        }
        if let Some(v) = l.strip_prefix("id:") {
            id = v.trim().to_string();
        } else if let Some(v) = l.strip_prefix("event:") {
            event = v.trim().to_string();
        } else if let Some(v) = l.strip_prefix("data:") {
            data.push_str(v.trim_start());
        } else if l.is_empty() && !data.is_empty() {
            events.push(SseEvent {
                id: std::mem::take(&mut id),
                event: std::mem::take(&mut event),
                data: serde_json::from_str(&std::mem::take(&mut data)).expect("SSE data is JSON"),
            });
        }
    }
    (status, events)
}

/// The `[cluster.tls]` variables of node `name`, with certificates `scripts/cluster-certs`
/// wrote into `certs`.
pub fn tls_env(certs: &Path, name: &str) -> Vec<(String, String)> {
    let file = |f: String| certs.join(f).display().to_string();
    vec![
        (
            "BOURSE_CLUSTER__TLS__CERT".into(),
            file(format!("{name}.pem")),
        ),
        (
            "BOURSE_CLUSTER__TLS__KEY".into(),
            file(format!("{name}.key")),
        ),
        ("BOURSE_CLUSTER__TLS__CA".into(), file("ca.pem".into())),
    ]
}

/// A cluster of `bourse node` processes: on this machine sharing one data directory (one
/// SQLite file), or on separate hosts each with its own (sharing only a networked store).
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub data: PathBuf,
    cluster_ports: Vec<u16>,
    extra: String,
    /// Where node `i` runs; empty for the local, shared-directory cluster.
    hosts: Vec<Host>,
    /// Variables every node gets (the store's settings, say).
    env: Vec<(String, String)>,
    /// Whether the nodes share `data` (one SQLite store) rather than each its own.
    shared_data: bool,
    /// With `[cluster.tls]`: the folder `scripts/cluster-certs` filled (`ca.pem`,
    /// `nodeN.pem`, `nodeN.key`); every node is then seeded with node1 only (node1 with
    /// node2), so the others meet through the members' contact lists.
    tls: Option<PathBuf>,
}

pub const COOKIE: &str = "test-cluster-cookie";

impl Cluster {
    fn host(&self, i: usize) -> Host {
        self.hosts.get(i).cloned().unwrap_or_else(Host::local)
    }

    /// Node `i`'s cluster address.
    pub fn cluster_addr(&self, i: usize) -> String {
        format!("{}:{}", self.host(i).addr, self.cluster_ports[i])
    }

    fn member_env(&self, i: usize, cookie: &str) -> Vec<(String, String)> {
        let seeds: Vec<String> = (0..self.cluster_ports.len())
            .filter(|&j| j != i)
            .filter(|&j| self.tls.is_none() || j == usize::from(i == 0))
            .map(|j| format!("\"{}\"", self.cluster_addr(j)))
            .collect();
        let mut env = vec![
            ("BOURSE_NODE__NAME".into(), format!("node{}", i + 1)),
            (
                "BOURSE_CLUSTER__LISTEN".into(),
                format!("{}:{}", self.host(i).addr, self.cluster_ports[i]),
            ),
            (
                "BOURSE_CLUSTER__SEEDS".into(),
                format!("[{}]", seeds.join(",")),
            ),
            ("BOURSE_CLUSTER__COOKIE".into(), cookie.into()),
        ];
        if self.shared_data {
            env.push((
                "BOURSE_NODE__DATA_DIR".into(),
                self.data.display().to_string(),
            ));
        }
        if let Some(certs) = &self.tls {
            env.extend(tls_env(certs, &format!("node{}", i + 1)));
        }
        env.extend(self.env.iter().cloned());
        env
    }

    /// Starts `n` nodes with mutual TLS between them, certificates from `certs` (see
    /// [`Cluster::tls`]), and waits until every one is up.
    pub fn start_tls(name: &str, n: usize, extra: &str, certs: &Path) -> Cluster {
        Cluster::start_with(name, n, extra, Vec::new(), Vec::new(), true, Some(certs))
    }

    /// Starts `n` nodes, each seeded with all the others, and waits until every one is up.
    pub fn start(name: &str, n: usize, extra: &str) -> Cluster {
        Cluster::start_with(name, n, extra, Vec::new(), Vec::new(), true, None)
    }

    /// Starts one node per host in `hosts`, all on one shared data directory (SQLite, as
    /// [`Cluster::start`]): separate network hosts, one store on this machine's disk.
    pub fn start_sharing_on_hosts(name: &str, hosts: Vec<Host>, extra: &str) -> Cluster {
        let n = hosts.len();
        Cluster::start_with(name, n, extra, hosts, Vec::new(), true, None)
    }

    /// Starts one node per host in `hosts`, each with a data directory of its own and
    /// `env` (which names the store they share), and waits until every one is up.
    pub fn start_on_hosts(
        name: &str,
        hosts: Vec<Host>,
        extra: &str,
        env: Vec<(String, String)>,
    ) -> Cluster {
        let n = hosts.len();
        Cluster::start_with(name, n, extra, hosts, env, false, None)
    }

    fn start_with(
        name: &str,
        n: usize,
        extra: &str,
        hosts: Vec<Host>,
        env: Vec<(String, String)>,
        shared_data: bool,
        tls: Option<&Path>,
    ) -> Cluster {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            data: temp_dir(&format!("{name}-data")),
            cluster_ports: (0..n).map(|_| free_port()).collect(),
            extra: extra.to_string(),
            hosts,
            env,
            shared_data,
            tls: tls.map(Path::to_path_buf),
        };
        for i in 0..n {
            let env = cluster.member_env(i, COOKIE);
            cluster.nodes.push(Node::start_on(
                cluster.host(i),
                &format!("{name}-n{}", i + 1),
                extra,
                env,
                false,
            ));
        }
        for node in &mut cluster.nodes {
            node.wait_ready();
        }
        cluster
    }

    /// Starts one more node seeded with the existing ones (`cookie` may be wrong on purpose).
    pub fn add_node(&mut self, name: &str, cookie: &str, wait_ready: bool) -> usize {
        self.cluster_ports.push(free_port());
        let i = self.cluster_ports.len() - 1;
        let env = self.member_env(i, cookie);
        let node = Node::start_on(self.host(i), name, &self.extra.clone(), env, wait_ready);
        self.nodes.push(node);
        i
    }

    /// Every node's `/admin/cluster`.
    pub fn views(&self, alive: &[usize]) -> Vec<Value> {
        alive
            .iter()
            .map(|&i| {
                let auth = format!("Bearer {ADMIN_TOKEN}");
                let (status, v) = http(
                    &self.nodes[i].url("/admin/cluster"),
                    "GET",
                    None,
                    &[("authorization", &auth)],
                )
                .unwrap_or((0, Value::Null));
                assert!(status == 200 || status == 0, "{v}");
                v
            })
            .collect()
    }

    /// The index in `nodes` of the node that owns `kind/key`, by the ring of `nodes[via]`
    /// (asked through the admin API).
    pub fn owner(&self, via: usize, kind: &str, key: &str) -> usize {
        let (_, v) = self.nodes[via].api(
            "GET",
            &format!("/admin/entities/{kind}/{key}"),
            None,
            Some(ADMIN_TOKEN),
        );
        let owner = v["owner"].as_str().unwrap_or_else(|| panic!("{v}"));
        owner
            .trim_start_matches("node")
            .parse::<usize>()
            .unwrap_or_else(|_| panic!("owner '{owner}' is not nodeN"))
            - 1
    }

    /// Waits until the nodes in `alive` all report exactly `expect_up` as their up members
    /// and the same ring. Returns how long it took.
    pub fn wait_converged(
        &self,
        alive: &[usize],
        expect_up: &[&str],
        timeout: Duration,
    ) -> Duration {
        let started = Instant::now();
        let mut expect: Vec<String> = expect_up.iter().map(|s| s.to_string()).collect();
        expect.sort();
        loop {
            let views = self.views(alive);
            let ok = views.iter().all(|v| {
                let mut up: Vec<String> = v["members"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter(|m| m["status"] == "up")
                            .filter_map(|m| m["node"].as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                up.sort();
                let ring: Vec<String> = v["ring"]["members"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|n| n.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                up == expect && ring == expect
            });
            if ok {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "not converged on {expect:?}: {views:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill9();
        }
        if !keep() {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}

/// The value of one sample in a Prometheus text exposition, by its exact name and labels
/// (`bourse_entity_restarts_total{kind="book"}`); `None` when absent.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Runs the `bourse` binary with `args` and `env` in `dir`, bounded by `timeout` (killed
/// past it); panics unless it exits 0 and returns its stdout. Output is read while it runs,
/// so a chatty command cannot stall on a full pipe.
pub fn run_bourse(
    args: &[&str],
    env: &[(&str, &str)],
    dir: &std::path::Path,
    timeout: Duration,
) -> String {
    let child = Command::new(env!("CARGO_BIN_EXE_bourse"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bourse");
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("bourse's output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("bourse {args:?} did not finish in {timeout:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "bourse {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    println!("$ bourse {}\n{stdout}", args.join(" "));
    stdout
}

/// Units of a decimal string at 8 places (balances here have at most 8).
pub fn units(s: &str) -> i128 {
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    assert!(f.len() <= 8, "{s}");
    format!("{i}{f:0<8}").parse().unwrap()
}

/// Per asset, available + held over `tokens`' accounts, in units of 1e-8.
pub fn totals(node: &Node, tokens: &[&str]) -> std::collections::BTreeMap<String, i128> {
    let mut out = std::collections::BTreeMap::new();
    for t in tokens {
        let (status, v) = node.api("GET", "/api/v1/account", None, Some(t));
        assert_eq!(status, 200, "{v}");
        for (asset, b) in v["balances"].as_object().unwrap() {
            *out.entry(asset.clone()).or_insert(0) +=
                units(b["available"].as_str().unwrap()) + units(b["held"].as_str().unwrap());
        }
    }
    out
}

/// Polls `f` until it returns `Some`, for at most `secs`.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `scripts/cluster-certs dir specs...`.
pub fn certs(dir: &Path, specs: &[&str]) {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/cluster-certs"
    ))
    .arg(dir)
    .args(specs)
    .output()
    .expect("run scripts/cluster-certs");
    assert!(
        out.status.success(),
        "scripts/cluster-certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Milliseconds since the Unix epoch, as the nodes count time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
