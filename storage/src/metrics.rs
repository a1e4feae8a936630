//! Storage metrics in the process's default Prometheus registry: how long a write batch
//! takes to commit and how many rows it carries (the writer's group commit at work), and
//! what inbox retention dropped, and whether the store answers at all.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge};
use std::sync::LazyLock;

/// `metric`, registered (a second registration of the same name is only logged).
fn registered<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    if let Err(e) = prometheus::register(Box::new(metric.clone())) {
        tracing::debug!(error = %e, "metric registered twice");
    }
    metric
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    match Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)) {
        Ok(h) => registered(h),
        // Only a malformed name or bucket list fails, and both are constants below.
        Err(e) => unreachable!("metric {name}: {e}"),
    }
}

/// 1 while the store answers this node's health reads, 0 while it does not.
pub static REACHABLE: LazyLock<IntGauge> = LazyLock::new(|| {
    match IntGauge::new(
        "bourse_storage_reachable",
        "1 while the store answers this node's health reads within the heartbeat timeout",
    ) {
        Ok(g) => registered(g),
        Err(e) => unreachable!("metric bourse_storage_reachable: {e}"),
    }
});

/// Commit time of one write batch.
pub static BATCH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "bourse_storage_batch_seconds",
        "Time to commit one storage write batch (one transaction)",
        vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5,
        ],
    )
});

/// Rows in one write batch.
pub static BATCH_ROWS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "bourse_storage_batch_rows",
        "Rows written by one storage batch",
        vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
    )
});

/// Inbox entries dropped by retention (retention.rs).
pub static INBOX_PRUNED: LazyLock<IntCounter> = LazyLock::new(|| {
    let name = "bourse_inbox_pruned_total";
    match IntCounter::new(
        name,
        "Inbox entries dropped by retention (alerts.inbox_keep_days, alerts.inbox_max_per_user)",
    ) {
        Ok(c) => registered(c),
        // Only a malformed name fails, and it is a constant.
        Err(e) => unreachable!("metric {name}: {e}"),
    }
});
