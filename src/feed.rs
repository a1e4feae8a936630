//! `bourse feed --to kafka`: publishes the built-in simulator's trades into the trades
//! topic, so a cluster with `feed.kind = "kafka"` has a market to ingest without an
//! exchange (docs/OPERATIONS.md "Kafka").

use bourse_config::Settings;
use bourse_kafka::publish::{Format, Publish};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use tokio::sync::watch;

/// Where `bourse feed` publishes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Sink {
    Kafka,
}

/// The message format of `bourse feed`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// `{"symbol","price","qty","side","seq"}`.
    Bourse,
    /// Upbit's trade JSON.
    Upbit,
}

#[derive(Debug, Clone, Args)]
pub struct FeedArgs {
    /// Where to publish.
    #[arg(long, value_enum)]
    to: Sink,
    /// A node configuration to take markets, brokers, topic and rate from; without it,
    /// the defaults plus environment.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Brokers, `host:port[,host:port...]` (default: `kafka.brokers`).
    #[arg(long, value_delimiter = ',')]
    brokers: Vec<String>,
    /// The topic (default: `kafka.trades_topic`).
    #[arg(long)]
    topic: Option<String>,
    /// Partitions of the topic when this command creates it.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Trades per second per symbol (default: `feed.trades_per_sec`).
    #[arg(long)]
    rate: Option<u32>,
    /// Stop after this many trades per symbol (default: run until Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
    #[arg(long, value_enum, default_value = "bourse")]
    format: FormatArg,
}

/// Publishes until Ctrl-C or `--count`, then prints what was acknowledged.
pub async fn run(args: FeedArgs) -> anyhow::Result<()> {
    let Sink::Kafka = args.to;
    let (settings, markets) =
        Settings::load(args.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let brokers = if args.brokers.is_empty() {
        settings.kafka.brokers.clone()
    } else {
        args.brokers.clone()
    };
    anyhow::ensure!(
        !brokers.is_empty(),
        "no brokers: pass --brokers host:port or set kafka.brokers"
    );
    let topic = args.topic.unwrap_or(settings.kafka.trades_topic);
    anyhow::ensure!(
        bourse_config::valid_kafka_name(&topic),
        "--topic: 1 to 249 of A-Z a-z 0-9 . _ -"
    );
    anyhow::ensure!(args.partitions >= 1, "--partitions: at least 1");
    let rate = args.rate.unwrap_or(settings.feed.trades_per_sec);
    anyhow::ensure!(
        (1..=100_000).contains(&rate),
        "--rate: 1 to 100000 trades per second per symbol"
    );
    let publish = Publish {
        brokers,
        topic,
        partitions: args.partitions,
        rate,
        count: args.count,
        format: match args.format {
            FormatArg::Bourse => Format::Bourse,
            FormatArg::Upbit => Format::Upbit,
        },
        seed: settings.feed.seed,
    };
    eprintln!(
        "publishing {} symbols at {rate} trades/s each to {} on {}",
        markets.len(),
        publish.topic,
        publish.brokers.join(",")
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::node::stop_signal().await;
        let _ = stop_tx.send(true);
    });
    let acked = bourse_kafka::publish::publish(&markets, &publish, stop_rx).await?;
    println!("published {acked} trades to {}", publish.topic);
    Ok(())
}
