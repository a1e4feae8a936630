//! The runtime's Prometheus metrics (docs/DESIGN.md "Observability"), in the process's default
//! registry: `GET /metrics` gathers them with the storage and gateway ones. Counters are
//! bumped where things happen; gauges that describe a moment (mailboxes, members,
//! subscriptions) are set when scraped or when they change.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use std::sync::LazyLock;

/// Registers a metric just built from constant options in the default registry (once; a
/// second registration is ignored).
pub fn registered<C: Collector + Clone + 'static>(built: prometheus::Result<C>) -> C {
    match built {
        Ok(c) => {
            if let Err(e) = prometheus::register(Box::new(c.clone())) {
                tracing::debug!(error = %e, "metric registered twice");
            }
            c
        }
        // Only a malformed name, label or bucket list fails, and those are constants.
        Err(e) => unreachable!("malformed metric: {e}"),
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(IntCounterVec::new(Opts::new(name, help), labels))
}

/// A counter with one label whose series for `values` exist from the start, at zero, so
/// dashboards and alerts see them before the first event.
pub fn counter_from_zero(name: &str, help: &str, label: &str, values: &[&str]) -> IntCounterVec {
    let counter = counter_vec(name, help, &[label]);
    for v in values {
        counter.with_label_values(&[v]);
    }
    counter
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(IntGaugeVec::new(Opts::new(name, help), labels))
}

/// Buckets from 50 µs to 5 s, for in-process latencies that are usually sub-millisecond.
pub fn latency_buckets() -> Vec<f64> {
    vec![
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0,
    ]
}

/// 1 while this node stands down and owns nothing (see membership.rs `recompute`).
pub static STOOD_DOWN: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "bourse_cluster_stood_down",
        "1 while this node owns nothing: it hears less than a majority of the agreed membership, it stands aside (it lost a member that members it hears still hear), its store does not answer, or it has just woken from a pause",
    ))
});

/// Members that should stand aside as this node sees the cuts (see `quorum::left_out`):
/// non-zero means a link between two hosts is down while others hear both ends.
pub static LEFT_OUT: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "bourse_cluster_left_out",
        "Members that should stand aside, as this node sees it: each lost a member that others still hear",
    ))
});

/// Connections to the cluster port refused before they joined: `tls` (no certificate from
/// the cluster's CA, or no handshake in time) and `cookie` (a wrong cookie).
pub static PEERS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_from_zero(
        "bourse_cluster_peers_refused_total",
        "Connections to the cluster port refused before joining, by reason (tls, cookie)",
        "reason",
        &["tls", "cookie"],
    )
});

/// Cluster messages dropped undecoded: `version` (from a peer of another bourse build,
/// see wire.rs) and `codec` (malformed).
pub static MESSAGES_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_from_zero(
        "bourse_cluster_messages_refused_total",
        "Cluster messages dropped undecoded, by reason (version: a peer of another bourse build; codec: malformed)",
        "reason",
        &["version", "codec"],
    )
});

/// Messages delivered to entities, by kind.
pub static MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "bourse_entity_messages_total",
        "Messages delivered to entities on this node, by kind",
        &["kind"],
    )
});
/// Entity activations, by kind.
pub static ACTIVATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "bourse_entity_activations_total",
        "Entities activated (first message, restart or move), by kind",
        &["kind"],
    )
});
/// Clean stops: idle passivations and hand-offs.
pub static PASSIVATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "bourse_entity_passivations_total",
        "Entities stopped cleanly (idle, or handed off), by kind",
        &["kind"],
    )
});
/// Restarts after a failure.
pub static RESTARTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "bourse_entity_restarts_total",
        "Entities restarted by their region after a failure, by kind",
        &["kind"],
    )
});
/// Entities handed to another node because the ring moved them.
pub static HANDOFFS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "bourse_entity_handoffs_total",
        "Entities handed off because the ring moved them to another node, by kind",
        &["kind"],
    )
});
/// Ring rebuilds.
pub static REBALANCES: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(IntCounter::new(
        "bourse_rebalances_total",
        "Times this node installed a new ring (the set of up members changed)",
    ))
});
/// Members by status, as this node sees them.
pub static MEMBERS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "bourse_cluster_members",
        "Cluster members by status, as this node sees them (itself included)",
        &["status"],
    )
});
/// Active entities by kind (set when scraped).
pub static ACTIVE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "bourse_entities_active",
        "Entities running on this node, by kind",
        &["kind"],
    )
});
/// Messages waiting in entity mailboxes by kind (set when scraped).
pub static MAILBOX: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "bourse_entity_mailbox_depth",
        "Messages delivered to this node's entities and not yet handled, by kind",
        &["kind"],
    )
});
/// Local stream subscriptions (set when scraped).
pub static SUBSCRIPTIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "bourse_hub_subscriptions",
        "Connection subscriptions held by this node's hub, by publisher kind",
        &["kind"],
    )
});
/// How long the hub takes to hand one event to every local subscriber.
pub static FANOUT: LazyLock<Histogram> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "bourse_fanout_seconds",
        "Time for this node's hub to encode one stream event and queue it on every local subscriber",
    )
    .buckets(latency_buckets());
    registered(Histogram::with_opts(opts))
});
/// Round trips of cross-node calls.
pub static CALLS: LazyLock<HistogramVec> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "bourse_cluster_call_seconds",
        "Round trip of a call to another node's router (ask, subscribe, admin), by outcome",
    )
    .buckets(latency_buckets());
    registered(HistogramVec::new(opts, &["outcome"]))
});

/// The counters one region bumps, resolved once for its kind.
#[derive(Clone)]
pub struct RegionMetrics {
    pub messages: IntCounter,
    pub activations: IntCounter,
    pub passivations: IntCounter,
    pub restarts: IntCounter,
    pub handoffs: IntCounter,
}

impl RegionMetrics {
    /// The counters of `kind`.
    pub fn of(kind: &str) -> RegionMetrics {
        RegionMetrics {
            messages: MESSAGES.with_label_values(&[kind]),
            activations: ACTIVATIONS.with_label_values(&[kind]),
            passivations: PASSIVATIONS.with_label_values(&[kind]),
            restarts: RESTARTS.with_label_values(&[kind]),
            handoffs: HANDOFFS.with_label_values(&[kind]),
        }
    }
}
