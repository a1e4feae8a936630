//! `GET /metrics`: the process's Prometheus registry in the text format. The runtime's
//! counters and histograms (cluster, storage) are bumped where things happen; the gauges of
//! a moment (active entities, mailboxes, subscriptions) are read from the regions and the
//! hub at scrape time.

use crate::error::ApiError;
use crate::state::GatewayState;
use bourse_cluster::metrics::{ACTIVE, MAILBOX, SUBSCRIPTIONS, registered};
use prometheus::{Encoder, IntGauge, TextEncoder};
use std::sync::LazyLock;

/// Open client connections (WebSocket and SSE).
pub static CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "bourse_gateway_connections",
        "Open WebSocket and SSE connections on this node",
    ))
});

/// The exposition text.
pub async fn render(state: &GatewayState) -> Result<String, ApiError> {
    for (kind, stats) in state.sharding.region_stats().await {
        ACTIVE
            .with_label_values(&[kind.as_str()])
            .set(stats.active as i64);
        MAILBOX
            .with_label_values(&[kind.as_str()])
            .set(stats.mailbox as i64);
    }
    SUBSCRIPTIONS.reset();
    for (kind, n) in state.hub.subscriptions_by_kind() {
        SUBSCRIPTIONS
            .with_label_values(&[kind.as_str()])
            .set(n as i64);
    }
    LazyLock::force(&CONNECTIONS);
    LazyLock::force(&bourse_cluster::metrics::FANOUT);
    LazyLock::force(&bourse_storage::metrics::BATCH_SECONDS);
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&prometheus::gather(), &mut out)
        .map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))?;
    String::from_utf8(out).map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))
}
