//! `bourse bench chat`: one room with many members spread over a local cluster. Members
//! are plain WebSocket subscribers of `chat:KRW-BTC` (reading is public); senders are
//! logged-in users posting at a fixed total rate (open loop, within the per-user limit),
//! each message carrying its send time. Prints messages delivered per second and the
//! send-to-receive latency measured at the members.

use super::local_cluster;
use crate::probe::http_json;
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Chat fan-out benchmark parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// Node processes in the local cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Room members (WebSocket subscribers), spread over the nodes.
    #[arg(long, default_value_t = 5000)]
    pub members: usize,
    /// Messages per second posted to the room, in total.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// Seconds measured (after warm-up).
    #[arg(long, default_value_t = 15)]
    pub secs: u64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
}

const ROOM: &str = "KRW-BTC";

fn micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The send time a message carries (`"text":"t=<µs>"`), found without parsing the JSON.
fn sent_at(frame: &str) -> Option<u64> {
    let at = frame.find("t=")? + 2;
    frame[at..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .try_fold(0u64, |n, b| {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })
}

/// Runs the benchmark and prints its figures.
pub async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let n = args.nodes.max(1);
    let (_dir, procs, gateways) = local_cluster(n, "chat", &super::simulator_feed(None)).await?;
    let measuring = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    // One latency list per member, collected at the end.
    let mut lists: Vec<Arc<std::sync::Mutex<Vec<u32>>>> = Vec::with_capacity(args.members);
    println!(
        "{n} nodes up; connecting {} members to chat:{ROOM}",
        args.members
    );
    let subscribe =
        json!({"id": 1, "op": "subscribe", "channels": [format!("chat:{ROOM}")]}).to_string();
    for i in 0..args.members {
        let url = format!("ws://127.0.0.1:{}/ws", gateways[i % n]);
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("connecting member {i}"))?;
        ws.send(Message::text(subscribe.clone())).await?;
        let list: Arc<std::sync::Mutex<Vec<u32>>> = Arc::default();
        lists.push(list.clone());
        let (m, r) = (measuring.clone(), received.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(text) = msg else { continue };
                if !m.load(Ordering::Relaxed) || !text.contains("\"type\":\"message\"") {
                    continue;
                }
                let Some(t) = sent_at(&text) else { continue };
                let us = micros().saturating_sub(t).min(u64::from(u32::MAX)) as u32;
                list.lock().unwrap_or_else(|p| p.into_inner()).push(us);
                r.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // Senders: enough users that none passes the per-user limit (5/s).
    let senders = (args.rate as usize).div_ceil(4).max(1);
    let every = Duration::from_secs_f64(senders as f64 / f64::from(args.rate.max(1)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for s in 0..senders {
        let port = gateways[s % n];
        let body = json!({"username": format!("chat_sender_{s}"), "password": "bench-password"});
        let token = match http_json(port, "POST", "/api/v1/auth/register", None, Some(&body)).await
        {
            Some((201, v)) => v["token"].as_str().unwrap_or_default().to_string(),
            other => bail!("register failed: {other:?}"),
        };
        let url = format!("ws://127.0.0.1:{port}/ws?token={token}");
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let mut refused = 0u64;
            let mut due = Instant::now() + every.mul_f64(s as f64 / senders as f64);
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until(due.into()).await;
                due += every;
                id += 1;
                let req = json!({"id": id, "op": "chat.send", "room": ROOM, "text": format!("t={}", micros())});
                if ws.send(Message::text(req.to_string())).await.is_err() {
                    break;
                }
                // Answers come back between events; count refusals, ignore the rest.
                while let Ok(Some(Ok(Message::Text(t)))) =
                    tokio::time::timeout(Duration::from_millis(1), ws.next()).await
                {
                    if t.contains("\"ok\":false") {
                        refused += 1;
                    }
                }
            }
            refused
        }));
    }
    println!(
        "{senders} senders posting {} msgs/s in total; warming up {} s",
        args.rate, args.warmup
    );
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut refused = 0;
    for h in handles {
        refused += h.await.unwrap_or(0);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = received.load(Ordering::Relaxed);
    let mut all: Vec<u32> = Vec::new();
    for l in &lists {
        all.append(&mut l.lock().unwrap_or_else(|p| p.into_inner()));
    }
    all.sort_unstable();
    let pct = |p: f64| -> String {
        if all.is_empty() {
            return "n/a".into();
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        format!("{:.1} ms", f64::from(all[i]) / 1000.0)
    };
    println!("measured {elapsed:.1} s:");
    println!(
        "  delivered      {:.0} msgs/s ({} deliveries; offered {} msgs/s x {} members = {:.0}/s)",
        total as f64 / elapsed,
        total,
        args.rate,
        args.members,
        f64::from(args.rate) * args.members as f64
    );
    println!(
        "  send->receive  p50 {}  p99 {}  p99.9 {}  max {}",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    println!("  sends refused  {refused}");
    drop(procs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sent_at;

    #[test]
    fn finds_the_send_time() {
        assert_eq!(sent_at(r#"{"data":{"text":"t=1234","ts":5}}"#), Some(1234));
        assert_eq!(sent_at(r#"{"data":{"text":"hello"}}"#), None);
    }
}
