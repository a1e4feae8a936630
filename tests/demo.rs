//! `bourse demo --nodes 3` survives its nodes: a node process SIGKILLed is reported,
//! started again after a short backoff and back `up` within 10 s, while a client on another
//! node streams every symbol with no gap (epoch changes only); SIGTERM stops them all.
//!
//! The demo listens on its documented fixed ports (gateways 8080-8082, cluster 7101-7103),
//! so this is the one test that uses them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{WsClient, assert_continuity, http, temp_dir};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SYMBOLS: [&str; 8] = [
    "KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE", "KRW-ADA", "KRW-AVAX", "KRW-LINK",
];

/// The demo process: killed (with its nodes) if the test fails midway.
struct Demo(std::process::Child, std::path::PathBuf);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// The next stdout line that contains `needle`, within `timeout`.
fn line_with(lines: &mpsc::Receiver<String>, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line with {needle:?} from the demo in {timeout:?}"),
        }
    }
}

fn member_status(token: &str, node: &str) -> Option<String> {
    let auth = format!("Bearer {token}");
    let (status, v) = http(
        "http://127.0.0.1:8080/admin/cluster",
        "GET",
        None,
        &[("authorization", &auth)],
    )
    .ok()?;
    if status != 200 {
        return None;
    }
    v["members"].as_array()?.iter().find_map(|m| {
        (m["node"] == json!(node)).then(|| m["status"].as_str().unwrap_or("").to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_restarts_a_killed_node_while_clients_stream() {
    for port in [8080, 8081, 8082, 7101, 7102, 7103] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "the demo's port {port} is taken on this machine"
        );
    }
    let dir = temp_dir("demo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bourse"))
        .args(["demo", "--nodes", "3"])
        .current_dir(&dir)
        .env("BOURSE_AUTH__ARGON2_MEMORY_KIB", "64")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let stdout = child.stdout.take().unwrap();
    let demo = Demo(child, dir.clone());
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let node3 = line_with(&lines, "  node3  ", Duration::from_secs(90));
    let pid: u32 = node3
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {node3:?}"));
    let token_line = line_with(&lines, "admin token: ", Duration::from_secs(10));
    let token = token_line
        .trim_start_matches("admin token: ")
        .trim()
        .to_string();

    // A client on node1 streams every symbol's trades.
    let mut ws = WsClient::connect("ws://127.0.0.1:8080/ws").await;
    let channels: Vec<String> = SYMBOLS.iter().map(|s| format!("trades:{s}")).collect();
    let r = ws.request("subscribe", json!({"channels": channels})).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    ws.pump(Duration::from_secs(2)).await;

    let killed = Instant::now();
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    line_with(&lines, "node3 exited", Duration::from_secs(10));
    line_with(&lines, "node3 restarted", Duration::from_secs(10));
    let mut back_up = None;
    while killed.elapsed() < Duration::from_secs(10) {
        ws.pump(Duration::from_millis(200)).await;
        if member_status(&token, "node3").as_deref() == Some("up") {
            back_up = Some(killed.elapsed());
            break;
        }
    }
    println!("node3 back up {back_up:?} after its SIGKILL");
    assert!(back_up.is_some(), "node3 not back up within 10 s");

    // The stream goes on for every symbol, with epoch changes at most, never a gap.
    let mark = ws.events.len();
    ws.pump(Duration::from_secs(3)).await;
    assert!(ws.closed.is_none(), "the client on node1 stayed connected");
    let epochs = assert_continuity(&ws.events);
    for ch in &channels {
        assert!(
            ws.events[mark..].iter().any(|e| &e.ch == ch),
            "{ch} streams after the restart"
        );
    }
    println!(
        "{} events, {epochs} epoch changes across the kill",
        ws.events.len()
    );
    let (status, v): (u16, Value) = http("http://127.0.0.1:8082/readyz", "GET", None, &[]).unwrap();
    assert_eq!(status, 200, "the restarted node serves: {v}");

    // SIGTERM stops them all.
    let mut demo = demo;
    let _ = Command::new("kill")
        .args(["-TERM", &demo.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Ok(Some(status)) = demo.0.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{exit}");
    for port in [8080, 8081, 8082] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "a node still holds {port}"
        );
    }
}
