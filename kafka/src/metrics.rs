//! Feed and Kafka metrics in the process's default Prometheus registry.

use bourse_actors::feed::Rejected;
use bourse_cluster::metrics::registered;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use std::sync::LazyLock;

/// Feed trades by outcome: `applied` (stored by their symbol) or `duplicate` (already
/// stored: a re-delivery after a crash or a rebalance).
pub static TRADES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let v = registered(IntCounterVec::new(
        Opts::new(
            "bourse_feed_trades_total",
            "Trades consumed from the feed, by outcome (applied, duplicate)",
        ),
        &["outcome"],
    ));
    for outcome in ["applied", "duplicate"] {
        v.with_label_values(&[outcome]);
    }
    v
});

/// Skipped feed messages by reason.
pub static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let v = registered(IntCounterVec::new(
        Opts::new(
            "bourse_feed_rejected_total",
            "Feed messages skipped as malformed, by reason",
        ),
        &["reason"],
    ));
    for r in Rejected::ALL {
        v.with_label_values(&[r.as_str()]);
    }
    v
});

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
    LazyLock::force(&TRADES);
    LazyLock::force(&REJECTED);
    LazyLock::force(&CONSUMER_LAG);
}
