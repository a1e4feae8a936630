//! Trade ingest: the cluster consumes the trades topic (keyed by symbol, so a symbol's
//! trades stay in order on one partition) and asks each trade's symbol entity, wherever the
//! ring placed it, to store them. A partition's position is committed, under
//! `kafka.group`, only after every trade before it is durable in its symbol.
//!
//! Which node reads which partition is decided by bourse's own ring (the key
//! `<topic>/<partition>` of kind [`PARTITION_KIND`]), not by Kafka's group rebalancing: the
//! membership that moves entities off a dead node moves its partitions too, and a broker's
//! group coordinator is not in the failover path (tansu's, used by the tests, answers a
//! rejoin after its group leader died with the dead leader and the old assignment).
//!
//! A node killed mid-batch therefore loses nothing: the ring hands its partitions to
//! another node, which reads again from the last commit. Nor does it duplicate: each trade
//! carries its source sequence and a symbol skips those at or below the newest it stored.

use crate::metrics::CONSUMER_LAG;
use bourse_actors::feed::metrics::REJECTED;
use bourse_actors::feed::{FeedTrade, LogEvery, Rejected, deliver_all, message};
use bourse_cluster::Sharding;
use bourse_config::{KafkaSettings, Markets};
use futures_util::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most messages handled (and committed) as one batch.
const BATCH_MAX: usize = 2000;
/// At most one log line per this long about the same consumer error.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);
/// How often a node checks which partitions the ring gives it.
const ASSIGN_EVERY: Duration = Duration::from_millis(500);
/// How often the topic's partition count is read again (a topic may grow, or appear).
const METADATA_EVERY: Duration = Duration::from_secs(10);
/// The ring kind that places the trades topic's partitions on nodes.
pub const PARTITION_KIND: &str = "kafka-partition";

/// Publishes librdkafka's per-partition consumer lag as `bourse_kafka_consumer_lag`.
struct LagContext;

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        // Partitions this node no longer consumes disappear from the gauge.
        CONSUMER_LAG.reset();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    CONSUMER_LAG
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for LagContext {}

/// A node's consumer of the trades topic, created but not yet reading.
pub struct Ingest {
    consumer: StreamConsumer<LagContext>,
    topic: String,
}

impl Ingest {
    /// A consumer committing under `kafka.group` as `node`. Fails only on settings
    /// librdkafka refuses; brokers are not contacted yet, and their outages are logged and
    /// waited out while running.
    pub fn new(kafka: &KafkaSettings, node: &str) -> anyhow::Result<Ingest> {
        crate::metrics::init();
        let consumer: StreamConsumer<LagContext> = crate::client_config(&kafka.brokers, node)
            .set("group.id", &kafka.group)
            // Positions are committed by hand, after the trades are durable.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A partition never committed is read from its beginning: nothing is skipped.
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "5000")
            .create_with_context(LagContext)
            .map_err(|e| anyhow::anyhow!("kafka consumer: {e}"))?;
        tracing::info!(
            topic = %kafka.trades_topic,
            group = %kafka.group,
            brokers = %kafka.brokers.join(","),
            "consuming trades from kafka"
        );
        Ok(Ingest {
            consumer,
            topic: kafka.trades_topic.clone(),
        })
    }

    /// Routes trades to their symbols until `shutdown` turns true, reading the partitions
    /// the ring gives this node (from their committed positions) as the ring changes.
    pub async fn run(
        self,
        sharding: Sharding,
        markets: Markets,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let consumer = &self.consumer;
        let mut logged = Logged::default();
        let mut partitions = Partitions::default();
        let mut assign = tokio::time::interval(ASSIGN_EVERY);
        let mut messages = consumer.stream().ready_chunks(BATCH_MAX);
        loop {
            let chunk = tokio::select! {
                chunk = messages.next() => match chunk {
                    Some(chunk) => chunk,
                    None => break,
                },
                _ = assign.tick() => {
                    partitions.follow_ring(consumer, &self.topic, &sharding, &mut logged);
                    continue;
                }
                _ = shutdown.changed() => break,
            };
            let mut batch = Batch::default();
            for m in chunk {
                match m {
                    Ok(m) => batch.add(&m, &markets, &mut logged),
                    Err(e) => logged.consumer_error(&e),
                }
            }
            if !batch.deliver(&sharding, &shutdown).await {
                break;
            }
            batch.commit(consumer, &self.topic);
        }
        tracing::info!(topic = %self.topic, "kafka ingest stopped");
    }
}

/// The topic's partitions and which of them this node reads.
#[derive(Default)]
struct Partitions {
    count: Option<i32>,
    counted_at: Option<Instant>,
    mine: Vec<i32>,
}

impl Partitions {
    /// Reads the partition count when due, then takes exactly the partitions the ring
    /// gives this node (each from its committed position) if that set changed.
    fn follow_ring(
        &mut self,
        consumer: &StreamConsumer<LagContext>,
        topic: &str,
        sharding: &Sharding,
        logged: &mut Logged,
    ) {
        if self
            .counted_at
            .is_none_or(|at| at.elapsed() >= METADATA_EVERY)
        {
            self.counted_at = Some(Instant::now());
            // A metadata request: quick, but blocking, so off the async workers' hot path.
            let found = tokio::task::block_in_place(|| {
                consumer.fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(2)))
            });
            match found {
                Ok(md) => {
                    let n = md
                        .topics()
                        .iter()
                        .find(|t| t.name() == topic && t.error().is_none())
                        .map(|t| t.partitions().len() as i32);
                    if n.is_none() {
                        logged.consumer_error_text(format!(
                            "topic {topic} does not exist (yet); waiting for it"
                        ));
                    }
                    self.count = n.filter(|n| *n > 0).or(self.count);
                }
                Err(e) => logged.consumer_error(&e),
            }
        }
        let Some(count) = self.count else { return };
        let ring = sharding.ring();
        let mine: Vec<i32> = (0..count)
            .filter(|p| {
                ring.owner(PARTITION_KIND, &format!("{topic}/{p}")) == Some(sharding.node())
            })
            .collect();
        if mine == self.mine {
            return;
        }
        let mut list = TopicPartitionList::new();
        for p in &mine {
            if let Err(e) = list.add_partition_offset(topic, *p, Offset::Stored) {
                tracing::warn!(topic, partition = p, error = %e, "cannot name a kafka partition");
                return;
            }
        }
        match consumer.assign(&list) {
            Ok(()) => {
                tracing::info!(topic, partitions = ?mine, "reading kafka partitions");
                self.mine = mine;
            }
            Err(e) => logged.consumer_error(&e),
        }
    }
}

/// One chunk of messages (all of the trades topic): the trades per symbol in arrival
/// order, and where each partition's position goes once they are stored.
#[derive(Default)]
struct Batch<'m> {
    trades: Vec<(&'m str, Vec<FeedTrade>)>,
    index: HashMap<&'m str, usize>,
    next_offsets: HashMap<i32, i64>,
}

impl<'m> Batch<'m> {
    fn add(&mut self, m: &BorrowedMessage<'_>, markets: &'m Markets, logged: &mut Logged) {
        let next = self.next_offsets.entry(m.partition()).or_insert(0);
        *next = (*next).max(m.offset() + 1);
        match message::parse(m.payload().unwrap_or_default(), markets) {
            Ok((market, trade)) => {
                let symbol = market.symbol.as_str();
                let i = *self.index.entry(symbol).or_insert_with(|| {
                    self.trades.push((symbol, Vec::new()));
                    self.trades.len() - 1
                });
                self.trades[i].1.push(trade);
            }
            Err(reason) => {
                REJECTED.with_label_values(&[reason.as_str()]).inc();
                logged.rejected(reason, m);
            }
        }
    }

    /// Hands every symbol its trades, all symbols at once, each retried until stored.
    /// False when the node began to stop first (nothing is committed then).
    async fn deliver(&mut self, sharding: &Sharding, shutdown: &watch::Receiver<bool>) -> bool {
        deliver_all(sharding, self.trades.drain(..), shutdown).await
    }

    fn commit(&self, consumer: &StreamConsumer<LagContext>, topic: &str) {
        if self.next_offsets.is_empty() {
            return;
        }
        let mut positions = TopicPartitionList::new();
        for (partition, offset) in &self.next_offsets {
            if let Err(e) =
                positions.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            {
                tracing::warn!(%topic, partition, error = %e, "cannot name a kafka position");
            }
        }
        // Asynchronous: a commit lost to a rebalance or a crash only means those trades are
        // read again, and their symbols skip them.
        if let Err(e) = consumer.commit(&positions, CommitMode::Async) {
            tracing::debug!(error = %e, "kafka commit not sent");
        }
    }
}

/// What was already logged: each kind of bad message once per process, each consumer
/// error at most once per [`ERROR_LOG_EVERY`].
struct Logged {
    rejected: HashSet<Rejected>,
    errors: LogEvery,
}

impl Default for Logged {
    fn default() -> Logged {
        Logged {
            rejected: HashSet::new(),
            errors: LogEvery::new(ERROR_LOG_EVERY),
        }
    }
}

impl Logged {
    fn rejected(&mut self, reason: Rejected, m: &BorrowedMessage<'_>) {
        if self.rejected.insert(reason) {
            tracing::warn!(
                reason = reason.as_str(),
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                "skipping a bad feed message (logged once per reason; counted in bourse_feed_rejected_total)"
            );
        }
    }

    fn consumer_error(&mut self, e: &KafkaError) {
        self.consumer_error_text(e.to_string());
    }

    fn consumer_error_text(&mut self, text: String) {
        self.errors.warn("kafka consumer", text);
    }
}
