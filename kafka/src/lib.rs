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

use rdkafka::ClientConfig;

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
