//! The event relay: every durable event (trades, fills, order changes, fired alerts, chat
//! messages) reaches `kafka.events_topic` at least once. Entities write each event to
//! storage's outbox in the same transaction as the change it describes; the relay reads the
//! outbox in order, publishes, and removes what the broker acknowledged. A crash between
//! the two publishes those events again: every event carries a stable `id` for consumers
//! to deduplicate by (docs/OPERATIONS.md "Event log").
//!
//! One node relays at a time: the ring owner of the key `relay/<topic>` of kind
//! [`RELAY_KIND`], so the relay fails over with the node's entities. During a move two nodes
//! may relay the same events for a moment; that too is only a repeat.

use crate::metrics::{RELAY_LAG, RELAYED};
use bourse_cluster::Sharding;
use bourse_config::KafkaSettings;
use bourse_storage::{MarketStore, OutboxEvent, Write};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The ring kind that picks the relaying node.
pub const RELAY_KIND: &str = "kafka-relay";
/// Most events read and published as one batch.
const BATCH: usize = 1000;
/// How often an idle relay looks at the outbox again.
const IDLE: Duration = Duration::from_millis(100);
/// Partitions of the events topic when the relay creates it.
const PARTITIONS: i32 = 6;

/// A node's relay, connected lazily.
pub struct Relay {
    producer: FutureProducer,
    kafka: KafkaSettings,
}

/// One event as its Kafka message: `{"id","kind","key","ts","data"}`.
pub fn envelope(e: &OutboxEvent) -> String {
    let text = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        r#"{{"id":{},"kind":{},"key":{},"ts":{},"data":{}}}"#,
        text(&e.id),
        text(&e.kind),
        text(&e.key),
        e.ts,
        e.data
    )
}

impl Relay {
    /// A producer for `kafka.events_topic`. Fails only on settings librdkafka refuses.
    pub fn new(kafka: &KafkaSettings, node: &str) -> anyhow::Result<Relay> {
        crate::metrics::init_relay();
        // In enqueue order per partition: an entity's events stay in order.
        let producer = crate::ordered_producer(&kafka.brokers, node)?;
        Ok(Relay {
            producer,
            kafka: kafka.clone(),
        })
    }

    /// Relays while this node owns the relay on the ring, until `shutdown`.
    pub async fn run(
        self,
        store: Arc<dyn MarketStore>,
        sharding: Sharding,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let topic = self.kafka.events_topic.clone();
        let key = format!("relay/{topic}");
        let mut topic_ready = false;
        let mut errors = bourse_actors::feed::LogEvery::new(Duration::from_secs(30));
        let mut was_relaying = false;
        loop {
            let relaying = sharding.ring().owner(RELAY_KIND, &key) == Some(sharding.node());
            if relaying != was_relaying {
                tracing::info!(topic = %topic, relaying, "event relay");
                was_relaying = relaying;
                if !relaying {
                    RELAY_LAG.set(0.0);
                }
            }
            let full = if relaying {
                if !topic_ready {
                    topic_ready = crate::ensure_topic(
                        &self.kafka.brokers,
                        &topic,
                        PARTITIONS,
                        sharding.node(),
                    )
                    .await
                    .map_err(|e| errors.warn("event relay: will try again", e.to_string()))
                    .is_ok();
                }
                match self.relay_once(store.as_ref(), &topic).await {
                    Ok(n) => n == BATCH,
                    Err(e) => {
                        errors.warn("event relay: will try again", e);
                        false
                    }
                }
            } else {
                false
            };
            if full {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(IDLE) => {}
                _ = shutdown.changed() => break,
            }
        }
        tracing::info!(topic = %topic, "event relay stopped");
    }

    /// Publishes the oldest outbox events and removes those acknowledged; how many.
    async fn relay_once(&self, store: &dyn MarketStore, topic: &str) -> Result<usize, String> {
        let pending = store
            .outbox(BATCH)
            .await
            .map_err(|e| format!("reading the outbox: {e}"))?;
        let Some((_, oldest)) = pending.first() else {
            RELAY_LAG.set(0.0);
            return Ok(0);
        };
        RELAY_LAG.set((bourse_actors::clock::now_ms() - oldest.ts).max(0) as f64 / 1000.0);
        let bodies: Vec<String> = pending.iter().map(|(_, e)| envelope(e)).collect();
        let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(pending.len());
        for ((_, e), body) in pending.iter().zip(&bodies) {
            let record = FutureRecord::to(topic)
                .key(e.key.as_str())
                .payload(body.as_str());
            let delivery = crate::enqueue(&self.producer, record)
                .await
                .map_err(|e| format!("publishing to {topic}: {e}"))?;
            deliveries.push(delivery);
        }
        // Only a prefix that the broker acknowledged in full is removed: a later event
        // never leaves the outbox before an earlier one.
        let mut acked = 0;
        let mut failure = None;
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) if failure.is_none() => acked += 1,
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    failure.get_or_insert_with(|| format!("publishing to {topic}: {e}"));
                }
                Err(_) => {
                    failure.get_or_insert_with(|| "the producer went away".to_string());
                }
            }
        }
        if acked > 0 {
            let positions = pending[..acked].iter().map(|(p, _)| *p).collect();
            store
                .submit(Write::Relayed { positions })
                .wait()
                .await
                .map_err(|e| format!("removing relayed events from the outbox: {e}"))?;
            RELAYED.inc_by(acked as u64);
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(acked),
        }
    }
}
