//! `bourse bench kafka`: Kafka ingest and event-relay throughput. Starts a local cluster
//! whose feed is a fresh topic on the given broker and whose relay publishes to another,
//! waits until its nodes read their partitions, then publishes `--trades` trades per symbol
//! as fast as the producer goes, and measures until the symbols have stored them all (the
//! nodes' `bourse_feed_trades_total`) and until the relay has published each one's trade
//! event (`bourse_relay_events_total`), sampling the relay's lag meanwhile.

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

/// The sum over nodes of the metric sample `sample` (name and labels).
async fn summed(gateways: &[u16], sample: &str) -> f64 {
    let prefix = format!("{sample} ");
    let mut total = 0.0;
    for port in gateways {
        if let Some((200, text)) = http_text(*port, "GET", "/metrics", Some(BENCH_TOKEN), "").await
        {
            total += text
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    total
}

async fn counted(gateways: &[u16], outcome: &str) -> u64 {
    summed(
        gateways,
        &format!("bourse_feed_trades_total{{outcome=\"{outcome}\"}}"),
    )
    .await as u64
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
        "[feed]\nkind = \"kafka\"\n[kafka]\nbrokers = [\"{}\"]\ntrades_topic = \"{topic}\"\ngroup = \"bourse-bench-{run}\"\n\
         relay_events = true\nevents_topic = \"bourse.bench-events.{run}\"\n",
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
    let mut relayed = 0;
    let mut ingested = None;
    let mut max_lag = 0.0f64;
    while (applied < total || relayed < total) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        applied = counted(&gateways, "applied").await;
        relayed = summed(&gateways, "bourse_relay_events_total").await as u64;
        max_lag = max_lag.max(summed(&gateways, "bourse_relay_lag_seconds").await);
        if applied >= total && ingested.is_none() {
            ingested = Some(started.elapsed());
        }
    }
    let ingested = ingested.unwrap_or_else(|| started.elapsed());
    let relayed_in = started.elapsed();
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
    println!(
        "relayed {relayed} trade events in {:.2} s: {:.0} events/s; relay lag at most {:.2} s (sampled every 50 ms)",
        relayed_in.as_secs_f64(),
        relayed as f64 / relayed_in.as_secs_f64(),
        max_lag
    );
    anyhow::ensure!(applied == total, "not every trade was stored in 300 s");
    anyhow::ensure!(
        relayed >= total,
        "not every trade event was relayed in 300 s"
    );
    Ok(())
}
