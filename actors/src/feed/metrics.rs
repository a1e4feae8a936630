//! Metrics every external feed shares (Kafka ingest, Upbit), in the process's default
//! Prometheus registry.

use super::Rejected;
use bourse_cluster::metrics::{counter_from_zero, registered};
use prometheus::{Gauge, IntCounter, IntGauge};
use std::sync::LazyLock;

/// Feed trades by outcome: `applied` (stored by their symbol), `duplicate` (already stored
/// or already handed on: a re-delivery), or `late` (arrived after a newer trade of its
/// symbol was handed on, so it was dropped: the tape stays in source order).
pub static TRADES: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    counter_from_zero(
        "bourse_feed_trades_total",
        "Trades taken from the feed, by outcome (applied, duplicate, late)",
        "outcome",
        &["applied", "duplicate", "late"],
    )
});

/// Skipped feed messages by reason.
pub static REJECTED: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    counter_from_zero(
        "bourse_feed_rejected_total",
        "Feed messages skipped as malformed, by reason",
        "reason",
        &Rejected::ALL.map(Rejected::as_str),
    )
});

/// 1 while this node's live source is connected and subscribed.
pub static CONNECTED: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "bourse_feed_connected",
        "1 while this node's live feed source is connected and subscribed (0 when it follows no symbol)",
    ))
});

/// 1 while this node's live source is stalled.
pub static STALLED: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "bourse_feed_stalled",
        "1 while this node's live feed source is stalled: silent, or not connected, for longer than its stall limit",
    ))
});

/// Connections the live source opened after its first.
pub static RECONNECTS: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(IntCounter::new(
        "bourse_feed_reconnects_total",
        "Times this node's live feed source dialled again after a failure, a close or a stall",
    ))
});

/// Seconds since the live source's last message.
pub static SILENCE: LazyLock<Gauge> = LazyLock::new(|| {
    registered(Gauge::new(
        "bourse_feed_silence_seconds",
        "Seconds since this node's live feed source last sent anything (0 when it follows no symbol)",
    ))
});

/// Forces the feed's trade and rejection counters into the registry.
pub fn init() {
    LazyLock::force(&TRADES);
    LazyLock::force(&REJECTED);
}

/// Forces the live source's gauges into the registry too.
pub fn init_live() {
    init();
    LazyLock::force(&CONNECTED);
    LazyLock::force(&STALLED);
    LazyLock::force(&RECONNECTS);
    LazyLock::force(&SILENCE);
}
