//! `bourse bench kafka`: Kafka ingest throughput. Starts a local cluster whose feed is a
//! fresh topic on the given broker, waits until its nodes read their partitions, then
//! publishes `--trades` trades per symbol as fast as the producer goes and measures until
//! the symbols have stored them all (the nodes' `bourse_feed_trades_total`).

use super::{BENCH_TOKEN, local_cluster};
use crate::probe::http_text;
use bourse_config::Settings;
use bourse_kafka::publish::{Format, Publish};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Kafka ingest benchmark parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// A broker, `host:port` (tansu or Kafka).
    #[arg(long)]
    pub brokers: String,
    /// Node processes in the local cluster.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Trades per symbol (8 symbols).
    #[arg(long, default_value_t = 5000)]
    pub trades: u64,
    /// Partitions of the benchmark's topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
}

/// The sum over nodes of `bourse_feed_trades_total{outcome}`.
async fn counted(gateways: &[u16], outcome: &str) -> u64 {
    let sample = format!("bourse_feed_trades_total{{outcome=\"{outcome}\"}} ");
    let mut total = 0;
    for port in gateways {
        if let Some((200, text)) = http_text(*port, "GET", "/metrics", Some(BENCH_TOKEN), "").await
        {
            total += text
                .lines()
                .find_map(|l| l.strip_prefix(&sample))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
        }
    }
    total
}

/// Runs the benchmark and prints its figures.
pub async fn kafka(args: KafkaArgs) -> anyhow::Result<()> {
    let (_, markets) =
        Settings::from_sources("", std::iter::empty()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let run = format!("{}-{}", std::process::id(), fastrand::u32(..));
    let topic = format!("bourse.bench.{run}");
    let publish = Publish {
        brokers: vec![args.brokers.clone()],
        topic: topic.clone(),
        partitions: args.partitions.max(1),
        rate: 100_000,
        count: Some(0),
        format: Format::Bourse,
        seed: 42,
    };
    let (_stop, never) = watch::channel(false);
    // The topic first, so the nodes find it at start.
    bourse_kafka::publish::publish(&markets, &publish, never.clone()).await?;
    let feed = format!(
        "[feed]\nkind = \"kafka\"\n[kafka]\nbrokers = [\"{}\"]\ntrades_topic = \"{topic}\"\ngroup = \"bourse-bench-{run}\"\n",
        args.brokers
    );
    let n = args.nodes.max(1);
    let (_dir, _procs, gateways) = local_cluster(n, "kafka", &feed).await?;
    // Each node takes its partitions within a second of the ring settling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = args.trades * markets.len() as u64;
    println!(
        "publishing {total} trades ({} symbols × {}) to {topic} ({} partitions), {n} node(s) ingesting",
        markets.len(),
        args.trades,
        publish.partitions
    );
    let started = Instant::now();
    let producing = Publish {
        count: Some(args.trades),
        ..publish
    };
    let acked = bourse_kafka::publish::publish(&markets, &producing, never).await?;
    let published = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut applied = counted(&gateways, "applied").await;
    while applied < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        applied = counted(&gateways, "applied").await;
    }
    let ingested = started.elapsed();
    let duplicates = counted(&gateways, "duplicate").await;
    println!(
        "published {acked} in {:.2} s ({:.0} trades/s from one producer)",
        published.as_secs_f64(),
        acked as f64 / published.as_secs_f64()
    );
    println!(
        "stored {applied} of {total} in {:.2} s: {:.0} trades/s into symbols ({duplicates} duplicates skipped)",
        ingested.as_secs_f64(),
        applied as f64 / ingested.as_secs_f64()
    );
    anyhow::ensure!(applied == total, "not every trade was stored in 300 s");
    Ok(())
}
