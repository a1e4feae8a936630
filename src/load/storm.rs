//! `bourse load storm`: a reconnect storm. WebSocket clients spread over the gateways
//! subscribe to one channel and keep their position (`epoch:seq`) from the events they
//! read. When a client's connection ends (a node killed, drained or restarted), it
//! reconnects as a well-behaved client does: to the next gateway in the list, after an
//! exponential backoff with full jitter (a random wait up to `min(cap, base * 2^attempt)`),
//! and resumes its stream with `since`.
//!
//! The tool can kill a local node itself (`--kill-pid`, SIGKILL after `--kill-after`);
//! against a remote deployment, kill or drain a node during the run. It reports how long
//! the dropped clients took to resume (from the kill, or the first drop: 50%, 99%, all),
//! each one's reconnect time and attempts, whether each resumed by replay (no gap) or
//! from a fresh snapshot (the publisher moved too, so its epoch changed), and the event
//! latency of the clients that were never dropped, before and during the storm.

use super::connections::{ClientSocket, event_ts, micros, now_ms, ws_open, ws_request};
use super::{Common, Target, histogram, percentiles, progress};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// `bourse load storm` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// WebSocket clients, spread over the gateways in turn.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// New connections per second while connecting them at first.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// The channel every client subscribes to and resumes.
    #[arg(long, default_value = "trades:KRW-BTC")]
    pub channel: String,
    /// Seconds the run lasts once the clients are connected.
    #[arg(long, default_value_t = 30)]
    pub secs: u64,
    /// A local node process to SIGKILL during the run (its clients' storm).
    #[arg(long)]
    pub kill_pid: Option<u32>,
    /// Seconds after the clients are connected when `--kill-pid` is killed.
    #[arg(long, default_value_t = 5)]
    pub kill_after: u64,
    /// The backoff's base, ms: a client's n-th retry waits a random time up to
    /// `min(cap, base * 2^n)`.
    #[arg(long, default_value_t = 100)]
    pub backoff_ms: u64,
    /// The backoff's cap, ms.
    #[arg(long, default_value_t = 5000)]
    pub backoff_cap_ms: u64,
    /// Seconds one attempt may take to connect and subscribe.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Also draw the connected clients over time as an SVG file in this directory.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

/// What the clients tell the run.
enum Note {
    /// First connection made and subscribed.
    Connected,
    /// First connection never made.
    Failed(String),
    /// A connection ended under a client.
    Dropped,
    /// A dropped client is subscribed again.
    Resumed {
        at: Instant,
        after_us: u64,
        attempts: u32,
        replayed: bool,
    },
}

/// Which latency window an untouched client's events fall in: before the storm (the kill,
/// or the first drop), or from its start to the end of the run.
const BEFORE: u8 = 1;
const DURING: u8 = 2;

struct Shared {
    addrs: Vec<String>,
    channel: String,
    timeout: Duration,
    backoff: Duration,
    cap: Duration,
    stop: watch::Receiver<bool>,
    notes: mpsc::UnboundedSender<Note>,
    /// 0 (not measuring), [`BEFORE`] or [`DURING`] the storm.
    phase: AtomicU8,
    before: Mutex<Histogram<u64>>,
    during: Mutex<Histogram<u64>>,
}

/// An event frame's position, read from its envelope without parsing the JSON
/// (`{"ch":..,"epoch":"..","seq":N,"ts":N,"data":..}`); `None` for a response.
fn position(text: &str) -> Option<(&str, u64)> {
    if !text.starts_with("{\"ch\":") {
        return None;
    }
    let at = text.find("\"epoch\":\"")? + 9;
    let epoch = &text[at..at + text[at..].find('"')?];
    let at = text.find("\"seq\":")? + 6;
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    Some((epoch, text[at..at + digits].parse().ok()?))
}

/// Connects to `addr` and subscribes, resuming from `pos`: the socket, and whether the
/// answer resumed by replay.
async fn attach(
    addr: &str,
    shared: &Shared,
    pos: &mut Option<(String, u64)>,
) -> Result<(ClientSocket, bool), String> {
    let mut ws = ws_open(addr).await?;
    let ch = &shared.channel;
    let mut request = json!({"id": 1, "op": "subscribe", "channels": [ch]});
    if let Some((epoch, seq)) = pos.as_ref() {
        request["since"] = json!({ ch.as_str(): format!("{epoch}:{seq}") });
    }
    let result = ws_request(&mut ws, &request).await?;
    let granted = &result["channels"][ch.as_str()];
    if let (Some(epoch), Some(seq)) = (granted["epoch"].as_str(), granted["seq"].as_u64())
        && granted["resumed"] != true
    {
        // A fresh start: live events continue from the answered position.
        *pos = Some((epoch.to_string(), seq));
    }
    Ok((ws, granted["resumed"] == true))
}

async fn client(idx: usize, shared: Arc<Shared>) {
    let n = shared.addrs.len();
    let mut target = idx % n;
    let mut pos: Option<(String, u64)> = None;
    let mut dropped: Option<Instant> = None;
    let mut touched = false;
    let mut attempts = 0u32;
    let mut stop = shared.stop.clone();
    loop {
        if dropped.is_some() {
            let ceiling = shared
                .backoff
                .saturating_mul(1 << attempts.min(16))
                .min(shared.cap);
            let wait = Duration::from_millis(fastrand::u64(0..=ceiling.as_millis() as u64));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
        let attempt = tokio::time::timeout(
            shared.timeout,
            attach(&shared.addrs[target], &shared, &mut pos),
        );
        let outcome = tokio::select! {
            r = attempt => r.unwrap_or_else(|_| Err("timeout".into())),
            _ = stop.changed() => return,
        };
        let (mut ws, replayed) = match outcome {
            Ok(done) => done,
            Err(kind) if dropped.is_none() => {
                let _ = shared.notes.send(Note::Failed(kind));
                return;
            }
            Err(_) => {
                attempts += 1;
                target = (target + 1) % n;
                continue;
            }
        };
        let note = match dropped.take() {
            Some(since) => Note::Resumed {
                at: Instant::now(),
                after_us: micros(since),
                attempts: attempts + 1,
                replayed,
            },
            None => Note::Connected,
        };
        let _ = shared.notes.send(note);
        attempts = 0;
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return;
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        match (position(&text), pos.as_mut()) {
                            // Within an epoch only the seq moves: no string per event.
                            (Some((epoch, seq)), Some((held, at))) if held == epoch => *at = seq,
                            (Some((epoch, seq)), _) => pos = Some((epoch.to_string(), seq)),
                            (None, _) => {}
                        }
                        let phase = shared.phase.load(Ordering::Relaxed);
                        if !touched && phase != 0 && let Some(ts) = event_ts(&text) {
                            let window = if phase == DURING { &shared.during } else { &shared.before };
                            let ms = (now_ms() - ts).max(0) as u64;
                            let mut h = window.lock().unwrap_or_else(|p| p.into_inner());
                            let _ = h.record((ms * 1000).max(1));
                        }
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                }
            }
        }
        // The connection ended: find another gateway, starting with the next one.
        touched = true;
        dropped = Some(Instant::now());
        target = (target + 1) % n;
        let _ = shared.notes.send(Note::Dropped);
    }
}

/// The time (s, from `start`) by which `share` of `total` had resumed, if they had.
fn resumed_by(times: &[f64], total: u64, share: f64) -> Option<f64> {
    let need = ((total as f64) * share).ceil() as usize;
    if need == 0 {
        return Some(0.0);
    }
    times.get(need - 1).copied()
}

/// Runs the scenario and prints its figures.
pub async fn run(args: StormArgs) -> anyhow::Result<()> {
    let targets = Target::parse_all(&args.common.urls)?;
    let clients = super::within_socket_budget(args.clients);
    println!(
        "storm: {clients} ws clients on {} over {} gateway(s), backoff {} ms to {} ms with full jitter",
        args.channel,
        targets.len(),
        args.backoff_ms,
        args.backoff_cap_ms
    );
    let (stop_tx, stop) = watch::channel(false);
    let (notes, mut inbox) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        addrs: targets.iter().map(|t| t.addr.clone()).collect(),
        channel: args.channel.clone(),
        timeout: Duration::from_secs(args.timeout.max(1)),
        backoff: Duration::from_millis(args.backoff_ms.max(1)),
        cap: Duration::from_millis(args.backoff_cap_ms.max(args.backoff_ms).max(1)),
        stop,
        notes,
        phase: AtomicU8::new(0),
        before: Mutex::new(histogram()?),
        during: Mutex::new(histogram()?),
    });
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    let bar = progress(clients as u64);
    let (mut connected, mut failed) = (0u64, 0u64);
    let mut failures: std::collections::BTreeMap<String, u64> = Default::default();
    for i in 0..clients {
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / f64::from(args.rate));
            tokio::time::sleep_until(due.into()).await;
        }
        tasks.push(tokio::spawn(client(i, shared.clone())));
    }
    while connected + failed < clients as u64 {
        match inbox.recv().await {
            Some(Note::Connected) => connected += 1,
            Some(Note::Failed(kind)) => {
                failed += 1;
                *failures.entry(kind).or_default() += 1;
            }
            Some(_) => {}
            None => break,
        }
        bar.set_position(connected + failed);
        bar.set_message(format!("connected {connected}  failed {failed}"));
    }
    bar.finish_and_clear();
    println!(
        "connected {connected} of {clients} in {:.1} s; failed {failed} {failures:?}",
        started.elapsed().as_secs_f64()
    );

    shared.phase.store(BEFORE, Ordering::Relaxed);
    let run_started = Instant::now();
    let run = Duration::from_secs(args.secs.max(1));
    let kill_at = args
        .kill_pid
        .map(|pid| (pid, run_started + Duration::from_secs(args.kill_after)));
    let mut killed = false;
    let mut storm: Option<Instant> = None;
    let (mut dropped, mut resumed, mut replayed) = (0u64, 0u64, 0u64);
    let mut resumed_at: Vec<f64> = Vec::new();
    let mut reconnect = histogram()?;
    let mut attempts = histogram()?;
    let mut over_time: Vec<(f64, f64)> = vec![(0.0, connected as f64)];
    let bar = progress(run.as_secs());
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while run_started.elapsed() < run {
        tick.tick().await;
        if let Some((pid, at)) = kill_at
            && !killed
            && Instant::now() >= at
        {
            killed = true;
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            println!("SIGKILL to pid {pid}: {status:?}");
            storm = Some(Instant::now());
            shared.phase.store(DURING, Ordering::Relaxed);
        }
        while let Ok(note) = inbox.try_recv() {
            match note {
                Note::Dropped => {
                    dropped += 1;
                    if storm.is_none() {
                        storm = Some(Instant::now());
                        shared.phase.store(DURING, Ordering::Relaxed);
                    }
                }
                Note::Resumed {
                    at,
                    after_us,
                    attempts: n,
                    replayed: r,
                } => {
                    resumed += 1;
                    replayed += u64::from(r);
                    let _ = reconnect.record(after_us);
                    let _ = attempts.record(u64::from(n));
                    if let Some(s) = storm {
                        resumed_at.push(at.saturating_duration_since(s).as_secs_f64());
                    }
                }
                Note::Connected | Note::Failed(_) => {}
            }
        }
        over_time.push((
            run_started.elapsed().as_secs_f64(),
            (connected + resumed - dropped) as f64,
        ));
        bar.set_position(run_started.elapsed().as_secs());
        bar.set_message(format!(
            "connected {}  dropped {dropped}  resumed {resumed}",
            connected + resumed - dropped
        ));
    }
    bar.finish_and_clear();
    shared.phase.store(0, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join_all(tasks),
    )
    .await;

    println!("ran {:.1} s after connecting:", run.as_secs_f64());
    resumed_at.sort_by(f64::total_cmp);
    let when = |share: f64| match resumed_by(&resumed_at, dropped, share) {
        Some(s) => format!("{s:.2} s"),
        None => "never".into(),
    };
    println!(
        "  dropped      {dropped} clients; resumed {resumed} ({replayed} by replay with no gap, {} from a fresh snapshot: the publisher's epoch changed)",
        resumed - replayed
    );
    println!(
        "  resumed by   50% {}  99% {}  all {} (after the {})",
        when(0.5),
        when(0.99),
        when(1.0),
        if killed { "kill" } else { "first drop" }
    );
    let (reconnect_line, reconnect_json) = percentiles(&reconnect);
    println!("  reconnect    {reconnect_line} (a client's drop to its resumed subscription)");
    let attempts_line = if attempts.is_empty() {
        "none".to_string()
    } else {
        format!(
            "p50 {}  p99 {}  max {}",
            attempts.value_at_quantile(0.5),
            attempts.value_at_quantile(0.99),
            attempts.max()
        )
    };
    println!("  attempts     {attempts_line}");
    let read = |m: &Mutex<Histogram<u64>>| m.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (before_line, before_json) = percentiles(&read(&shared.before));
    let (during_line, during_json) = percentiles(&read(&shared.during));
    println!("  untouched clients' event latency (event ts -> client, ms resolution):");
    println!("    before     {before_line}");
    let after = if killed { "after kill" } else { "after drop" };
    println!("    {after:<11}{during_line}");
    if let Some(dir) = &args.plot {
        let file = super::plot::file(dir, "storm-connected-over-time.svg")?;
        super::plot::lines(
            &file,
            "Connected clients",
            "seconds",
            "clients",
            &[super::plot::Series {
                name: "connected",
                points: over_time,
            }],
        )?;
        println!("plot written to {}", file.display());
    }
    let report = json!({
        "scenario": "storm",
        "channel": args.channel,
        "clients": clients,
        "connected": connected,
        "failed": failures,
        "killed_pid": args.kill_pid.filter(|_| killed),
        "dropped": dropped,
        "resumed": resumed,
        "replayed": replayed,
        "resumed_by_seconds": {
            "p50": resumed_by(&resumed_at, dropped, 0.5),
            "p99": resumed_by(&resumed_at, dropped, 0.99),
            "all": resumed_by(&resumed_at, dropped, 1.0),
        },
        "reconnect": reconnect_json,
        "attempts_max": attempts.max(),
        "untouched_latency_before": before_json,
        "untouched_latency_during": during_json,
    });
    super::write_report(&args.common, &report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_come_from_the_envelope_only() {
        let frame = r#"{"ch":"trades:KRW-BTC","epoch":"18f3a","seq":42,"ts":1,"data":{"seq":7}}"#;
        assert_eq!(position(frame), Some(("18f3a", 42)));
        assert_eq!(position(r#"{"id":1,"ok":true,"result":{"seq":3}}"#), None);
    }

    #[test]
    fn resumed_shares_read_the_sorted_times() {
        let times = [0.5, 1.0, 2.0, 4.0];
        assert_eq!(resumed_by(&times, 4, 0.5), Some(1.0));
        assert_eq!(resumed_by(&times, 4, 1.0), Some(4.0));
        // Five dropped, four back: not all resumed.
        assert_eq!(resumed_by(&times, 5, 1.0), None);
        assert_eq!(resumed_by(&times, 5, 0.8), Some(4.0));
        assert_eq!(resumed_by(&[], 0, 0.99), Some(0.0));
    }
}
