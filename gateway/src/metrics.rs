//! `GET /metrics`: the process's Prometheus registry in the text format. The runtime's
//! counters and histograms (cluster, storage) are bumped where things happen; the gauges of
//! a moment (active entities, mailboxes, subscriptions) are read from the regions and the
//! hub at scrape time.

use crate::error::ApiError;
use crate::state::GatewayState;
use bourse_cluster::metrics::{ACTIVE, MAILBOX, SUBSCRIPTIONS, registered};
use prometheus::{Counter, Encoder, IntCounterVec, IntGauge, Opts, TextEncoder};
use std::sync::LazyLock;

/// Open client connections (WebSocket and SSE), read from the hub's registry at scrape time.
static CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "bourse_gateway_connections",
        "Open WebSocket and SSE connections on this node",
    ))
});

/// Connections that panicked (or were killed by a chaos request, which panics them), by
/// transport: each was closed alone (WebSocket with 1011) and its state released.
pub static CONNECTION_PANICS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = registered(IntCounterVec::new(
        Opts::new(
            "bourse_gateway_connection_panics_total",
            "Client connections that panicked and were closed alone, by transport",
        ),
        &["transport"],
    ));
    for transport in ["ws", "sse"] {
        c.with_label_values(&[transport]);
    }
    c
});

/// Counts a connection's panic and logs what it said.
pub fn connection_panicked(transport: &str, panic: &(dyn std::any::Any + Send)) {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    tracing::error!(
        transport,
        panic = what,
        "a client connection panicked; closed it alone"
    );
    CONNECTION_PANICS.with_label_values(&[transport]).inc();
}

/// The process's resident memory, from `/proc/self/status` at scrape time: what `bourse
/// load` reads to give memory per connection.
static RSS: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "process_resident_memory_bytes",
        "Resident memory size of this node's process in bytes",
    ))
});

/// The process's CPU time (user + system) at the kernel's 10 ms resolution, from
/// `/proc/self/stat` at scrape time (the `prometheus` crate's own collector rounds it to
/// whole seconds, too coarse for CPU per delivered message).
static CPU: LazyLock<Counter> = LazyLock::new(|| {
    registered(Counter::new(
        "process_cpu_seconds_total",
        "User and system CPU time spent by this node's process in seconds",
    ))
});

/// Reads the process's RSS and CPU time into their metrics (Linux; elsewhere they stay 0).
/// One scrape at a time, so two cannot both add the same CPU time.
fn sample_process() {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok());
        if let Some(kib) = kib {
            RSS.set(kib * 1024);
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name's closing parenthesis; utime and stime are the
        // 12th and 13th of them, in USER_HZ (100 per second on Linux).
        let ticks = stat.rfind(')').and_then(|at| {
            let mut fields = stat[at + 1..].split_whitespace().skip(11);
            let user: u64 = fields.next()?.parse().ok()?;
            let system: u64 = fields.next()?.parse().ok()?;
            Some(user + system)
        });
        if let Some(ticks) = ticks {
            let secs = ticks as f64 / 100.0;
            let grown = secs - CPU.get();
            if grown > 0.0 {
                CPU.inc_by(grown);
            }
        }
    }
}

/// The exposition text.
pub async fn render(state: &GatewayState) -> Result<String, ApiError> {
    if let Some(feed) = &state.feed {
        feed.refresh_silence();
    }
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
    CONNECTIONS.set(state.hub.clients().len() as i64);
    LazyLock::force(&CONNECTION_PANICS);
    sample_process();
    LazyLock::force(&bourse_cluster::metrics::FANOUT);
    LazyLock::force(&bourse_cluster::metrics::PEERS_REFUSED);
    LazyLock::force(&bourse_cluster::metrics::MESSAGES_REFUSED);
    LazyLock::force(&bourse_storage::metrics::BATCH_SECONDS);
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&prometheus::gather(), &mut out)
        .map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))?;
    String::from_utf8(out).map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))
}
