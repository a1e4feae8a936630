//! `bourse load chat`: one room with many members spread over the gateways. Members are
//! plain WebSocket subscribers of `chat:<room>` (reading is public); senders are fresh
//! users (`load_<run>_chat_<n>`) posting at a fixed total rate (open loop, at most 4
//! messages/s each, under the per-user limit), each message carrying its send time.
//! Reports messages delivered per second and the send-to-receive latency measured at the
//! members (µs clocks on the load host).

use super::{Common, Target, histogram, percentiles, progress};
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// `bourse load chat` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub params: ChatParams,
}

/// The chat workload, shared with `bourse bench chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatParams {
    /// Room members (WebSocket subscribers), spread over the gateways.
    #[arg(long, default_value_t = 5000)]
    pub members: usize,
    /// Messages per second posted to the room, in total.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// The room.
    #[arg(long, default_value = "KRW-BTC")]
    pub room: String,
    /// Seconds measured (after warm-up).
    #[arg(long, default_value_t = 15)]
    pub secs: u64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
}

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

/// Runs the scenario and prints its figures.
pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let targets = Target::parse_all(&args.common.urls)?;
    let report = drive(&targets, &args.params).await?;
    super::write_report(&args.common, &report)
}

/// Connects the members, posts at the rate and measures; prints the figures and returns
/// them as JSON.
pub async fn drive(targets: &[Target], args: &ChatParams) -> anyhow::Result<Value> {
    let n = targets.len();
    let room = args.room.as_str();
    let run = format!("{:06x}", fastrand::u32(..0x100_0000));
    let measuring = Arc::new(AtomicBool::new(false));
    // One latency list per member (µs), merged into one histogram at the end: a histogram
    // each would be about 170 KiB per member.
    let mut lists: Vec<Arc<std::sync::Mutex<Vec<u64>>>> = Vec::with_capacity(args.members);
    println!(
        "chat: connecting {} members to chat:{room} over {n} gateway(s)",
        args.members
    );
    let subscribe =
        json!({"id": 1, "op": "subscribe", "channels": [format!("chat:{room}")]}).to_string();
    let bar = progress(args.members as u64);
    for i in 0..args.members {
        let url = format!("ws://{}/ws", targets[i % n].addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("connecting member {i}"))?;
        ws.send(Message::text(subscribe.clone())).await?;
        bar.inc(1);
        let list: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
        lists.push(list.clone());
        let m = measuring.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(text) = msg else { continue };
                if !m.load(Ordering::Relaxed) || !text.contains("\"type\":\"message\"") {
                    continue;
                }
                let Some(t) = sent_at(&text) else { continue };
                let us = micros().saturating_sub(t).max(1);
                list.lock().unwrap_or_else(|p| p.into_inner()).push(us);
            }
        });
    }
    bar.finish_and_clear();
    // Senders: enough users that none passes the per-user limit (5/s).
    let senders = (args.rate as usize).div_ceil(4).max(1);
    let every = Duration::from_secs_f64(senders as f64 / f64::from(args.rate.max(1)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for s in 0..senders {
        let target = &targets[s % n];
        let token = super::trading::register(target, format!("load_{run}_chat_{s}")).await?;
        let url = format!("ws://{}/ws?token={token}", target.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        let (stop, room) = (stop.clone(), room.to_string());
        handles.push(tokio::spawn(async move {
            let mut refused = 0u64;
            let mut due = Instant::now() + every.mul_f64(s as f64 / senders as f64);
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until(due.into()).await;
                due += every;
                id += 1;
                let req = json!({"id": id, "op": "chat.send", "room": room, "text": format!("t={}", micros())});
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
    let mut all = histogram()?;
    for l in &lists {
        for us in l.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            all.record(*us).context("recording a latency")?;
        }
    }
    let total = all.len();
    let (latency_line, latency_json) = percentiles(&all);
    println!("measured {elapsed:.1} s:");
    println!(
        "  delivered      {:.0} msgs/s ({} deliveries; offered {} msgs/s x {} members = {:.0}/s)",
        total as f64 / elapsed,
        total,
        args.rate,
        args.members,
        f64::from(args.rate) * args.members as f64
    );
    println!("  send->receive  {latency_line}");
    println!("  sends refused  {refused}");
    Ok(json!({
        "scenario": "chat",
        "room": room,
        "members": args.members,
        "rate": args.rate,
        "measured_seconds": elapsed,
        "delivered": total,
        "delivered_per_second": total as f64 / elapsed,
        "latency": latency_json,
        "refused": refused,
    }))
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
