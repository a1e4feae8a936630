//! Kafka metrics in the process's default Prometheus registry (the feed's own counters are
//! `bourse_actors::feed::metrics`).

use bourse_cluster::metrics::registered;
use prometheus::{Gauge, IntCounter, IntGaugeVec, Opts};
use std::sync::LazyLock;

/// Messages between this node's committed-or-consumed position and the partition's end,
/// per partition it consumes (librdkafka's statistics, every few seconds).
pub static CONSUMER_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "bourse_kafka_consumer_lag",
            "Messages not yet consumed, per topic partition this node is assigned",
        ),
        &["topic", "partition"],
    ))
});

/// Forces every metric into the registry, so `/metrics` lists them from the start.
pub fn init() {
    bourse_actors::feed::metrics::init();
    LazyLock::force(&CONSUMER_LAG);
}

/// Events the relay published from the outbox (acknowledged by the broker).
pub static RELAYED: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(IntCounter::new(
        "bourse_relay_events_total",
        "Events this node relayed from the outbox to the events topic (acknowledged by the broker)",
    ))
});

/// How old the oldest event not yet relayed is.
pub static RELAY_LAG: LazyLock<Gauge> = LazyLock::new(|| {
    registered(Gauge::new(
        "bourse_relay_lag_seconds",
        "Age of the oldest outbox event not yet relayed, seconds (0 when none; only on the node that relays)",
    ))
});

/// Forces the relay's metrics into the registry.
pub fn init_relay() {
    LazyLock::force(&RELAYED);
    LazyLock::force(&RELAY_LAG);
}
