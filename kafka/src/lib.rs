//! Kafka for bourse (docs/OPERATIONS.md "Kafka"): the cluster consumes a trades topic,
//! its partitions placed on nodes by the ring, and routes each trade to its symbol entity,
//! committing a position only once the symbol has stored what precedes it ([`ingest`]); the
//! relay publishes every durable event from storage's outbox ([`relay`]); `bourse feed --to
//! kafka` publishes the built-in simulator into the trades topic ([`publish`]).
//!
//! librdkafka is built from the rdkafka crate's bundled source: it does the protocol and
//! batching; this crate does the placement, the routing and the commits.

pub mod ingest;
pub mod metrics;
pub mod publish;
pub mod relay;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::time::Duration;

/// How long one message may wait for the broker's acknowledgement.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings every client of the cluster shares: brokers and a client id that names the
/// node in the broker's logs.
fn client_config(brokers: &[String], client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers.join(","))
        .set("client.id", client_id)
        // librdkafka's own log lines go through its default logger at warning level.
        .set("log_level", "4");
    config
}

/// A producer that keeps each partition's messages in the order they were enqueued: a
/// retried batch never overtakes the one after it (a symbol's sequences, an entity's
/// events).
fn ordered_producer(brokers: &[String], client_id: &str) -> anyhow::Result<FutureProducer> {
    client_config(brokers, client_id)
        .set("linger.ms", "5")
        .set("max.in.flight.requests.per.connection", "1")
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        .create()
        .map_err(|e| anyhow::anyhow!("kafka producer: {e}"))
}

/// Enqueues one message, waiting while librdkafka's queue is full; the future resolves
/// with the broker's acknowledgement.
async fn enqueue(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, str, str>,
) -> Result<DeliveryFuture, KafkaError> {
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Creates `topic` when it does not exist (`partitions` partitions, one replica: a
/// production topic is better made by its operator).
async fn ensure_topic(
    brokers: &[String],
    topic: &str,
    partitions: i32,
    client_id: &str,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, client_id)
        .create()
        .map_err(|e| anyhow::anyhow!("creating the kafka admin client: {e}"))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|e| anyhow::anyhow!("creating topic {topic}: {e}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}
