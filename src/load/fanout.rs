//! `bourse load fanout`: WebSocket subscribers on one channel, measured while the channel
//! flows. Reports the messages delivered per second, each event's latency from its `ts` to
//! the client (ms resolution), and the gateways' CPU per delivered message, net of what
//! they spent before the clients came (the simulator, the cluster's own work).
//!
//! The channel's rate is the deployment's: the simulator's `feed.trades_per_sec` sets a
//! `trades:` channel's. The clients run on the same machine as a local node, so their CPU
//! competes with the node's: the figures are a floor.

use super::connections::{Crowd, CrowdSpec, Transport};
use super::{Common, Target, human_us, percentiles, progress, scrape};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `bourse load fanout` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// WebSocket subscribers.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// New connections per second while connecting them.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// The channel every client subscribes to.
    #[arg(long, default_value = "trades:KRW-BTC")]
    pub channel: String,
    /// Seconds measured.
    #[arg(long, default_value_t = 20)]
    pub secs: u64,
    /// Seconds between the last client subscribing and the measurement.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Seconds of the gateways' CPU measured before any client connects, subtracted as
    /// their idle load (0 to subtract nothing).
    #[arg(long, default_value_t = 5)]
    pub baseline: u64,
    /// Seconds one client may take to connect and subscribe.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Also draw latency over time and the latency distribution, as SVG files in this
    /// directory.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

/// The gateways' CPU seconds in all, or why it cannot be read.
async fn cpu_seconds(targets: &[Target], token: Option<&str>) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for t in targets {
        total += scrape(t, token).await?.cpu_seconds;
    }
    Ok(total)
}

/// One second of the measurement.
#[derive(Debug, Clone, Copy)]
pub struct Second {
    pub at: f64,
    pub delivered: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// Runs the scenario and prints its figures.
pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let targets = Target::parse_all(&args.common.urls)?;
    let token = args.common.admin_token.as_deref();
    let idle_rate = if args.baseline > 0 {
        println!(
            "measuring the gateways' idle CPU for {} s before any client connects",
            args.baseline
        );
        let before = cpu_seconds(&targets, token).await;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.baseline)).await;
        match (before, cpu_seconds(&targets, token).await) {
            (Ok(a), Ok(b)) => Some((b - a) / started.elapsed().as_secs_f64()),
            (Err(e), _) | (_, Err(e)) => {
                println!("  no CPU figures: {e:#}");
                None
            }
        }
    } else {
        Some(0.0)
    };
    let spec = CrowdSpec {
        clients: args.clients,
        rate: args.rate,
        in_flight: 0,
        transport: Transport::Ws,
        channel: args.channel.clone(),
        timeout: args.timeout,
    };
    let mut crowd = Crowd::connect(&spec, &targets).await?;
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;

    let cpu_before = cpu_seconds(&targets, token).await;
    crowd.interval();
    crowd.measure(true);
    let started = Instant::now();
    let window = Duration::from_secs(args.secs.max(1));
    let bar = progress(window.as_secs());
    let mut seconds = Vec::new();
    let mut tick = tokio::time::interval_at(
        (started + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    while started.elapsed() < window {
        tick.tick().await;
        let h = crowd.interval();
        let second = Second {
            at: started.elapsed().as_secs_f64(),
            delivered: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        };
        seconds.push(second);
        crowd.note_drops();
        bar.set_position(started.elapsed().as_secs());
        bar.set_message(format!(
            "{} msgs/s  p99 {}  dropped {}",
            second.delivered,
            human_us(second.p99_us),
            crowd.dropped
        ));
    }
    crowd.measure(false);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds(&targets, token).await;
    bar.finish_and_clear();
    let latency = crowd.measured().await;
    let delivered = latency.len();
    let connected = crowd.connected();

    let per_sec = delivered as f64 / elapsed;
    println!("measured {elapsed:.1} s:");
    println!("  delivered    {per_sec:.0} msgs/s ({delivered} messages to {connected} clients)");
    let per_client = per_sec / connected.max(1) as f64;
    println!("  per client   {per_client:.1} msgs/s");
    let (latency_line, latency_json) = percentiles(&latency);
    println!("  latency      {latency_line} (event ts -> client, ms resolution)");
    let cpu = match (cpu_before, cpu_after, idle_rate) {
        (Ok(a), Ok(b), Some(idle)) => {
            let gross = b - a;
            let net = (gross - idle * elapsed).max(0.0);
            let per_million = if delivered > 0 {
                net / delivered as f64 * 1e6
            } else {
                0.0
            };
            println!(
                "  gateway CPU  {:.0}% of a core ({:.0}% idle before the clients): {per_million:.2} CPU s per million delivered ({:.2} µs each)",
                gross / elapsed * 100.0,
                idle * 100.0,
                per_million
            );
            json!({"gross_seconds": gross, "idle_per_second": idle, "net_seconds": net, "seconds_per_million": per_million})
        }
        (Err(e), _, _) | (_, Err(e), _) => {
            println!("  no CPU figures: {e:#}");
            json!({"error": format!("{e:#}")})
        }
        _ => Value::Null,
    };
    if let Some(dir) = &args.plot {
        super::plot::fanout(dir, &seconds, &latency)?;
    }
    let mut report = crowd.report.clone();
    let (_, dropped) = crowd.leave().await;
    if dropped > 0 {
        println!("  {dropped} connections dropped by the server");
    }
    report["scenario"] = json!("fanout");
    report["measured_seconds"] = json!(elapsed);
    report["delivered"] = json!(delivered);
    report["delivered_per_second"] = json!(per_sec);
    report["latency"] = latency_json;
    report["cpu"] = cpu;
    report["dropped"] = json!(dropped);
    report["seconds"] = seconds
        .iter()
        .map(|s| json!({"at": s.at, "delivered": s.delivered, "p50_us": s.p50_us, "p99_us": s.p99_us, "max_us": s.max_us}))
        .collect();
    super::write_report(&args.common, &report)
}
