//! Kafka for bourse (docs/OPERATIONS.md "Kafka"): the cluster consumes a trades topic as
//! one consumer group and routes each trade to its symbol entity, committing a position
//! only once the symbol has stored what precedes it ([`ingest`]); `bourse feed --to kafka`
//! publishes the built-in simulator into that topic ([`publish`]).
//!
//! librdkafka is built from the rdkafka crate's bundled source: it does the protocol,
//! group membership and batching; this crate does the routing and the commits.

pub mod ingest;
pub mod metrics;
pub mod publish;
pub mod relay;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use std::time::Duration;

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
