//! Whether this node reaches its store, watched in the background. A node that cannot must
//! not own entities: every activation and write would fail while the ring keeps sending
//! their requests here, and the nodes that can reach the store could not take them over.

use crate::MarketStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Reads one lease row every `every`; two reads in a row that fail or take longer than
/// `timeout` mark the store unreachable (one slow read under load is not an outage), the
/// next one that succeeds reachable again. Logged once per change and exported as
/// `bourse_storage_reachable`. The task ends with the store.
pub fn watch(store: &Arc<dyn MarketStore>, every: Duration, timeout: Duration) -> Arc<AtomicBool> {
    let reachable = Arc::new(AtomicBool::new(true));
    crate::metrics::REACHABLE.set(1);
    let store = Arc::downgrade(store);
    let flag = reachable.clone();
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            tokio::time::sleep(every).await;
            let Some(store) = store.upgrade() else { return };
            let probe = tokio::time::timeout(timeout, store.lease("bourse.health", "probe")).await;
            drop(store);
            failures = if matches!(probe, Ok(Ok(_))) {
                0
            } else {
                failures + 1
            };
            let ok = failures < 2;
            if flag.swap(ok, Ordering::Relaxed) != ok {
                crate::metrics::REACHABLE.set(i64::from(ok));
                match probe {
                    Ok(Ok(_)) => tracing::warn!("the store answers again"),
                    Ok(Err(e)) => tracing::error!(error = %e, "the store is unreachable"),
                    Err(_) => tracing::error!(
                        timeout_ms = timeout.as_millis() as u64,
                        "the store is unreachable: a read timed out"
                    ),
                }
            }
        }
    });
    reachable
}
