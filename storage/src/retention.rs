//! Retention: each node, every `alerts.inbox_sweep_every_s`, drops inbox entries older
//! than `alerts.inbox_keep_days` and all but each user's newest `alerts.inbox_max_per_user`
//! (`Write::PruneInbox`), and holdings points a week old that a newer one supersedes
//! (`Write::PruneHoldings`: the portfolio's value history is kept a week). Every node sweeps
//! the store it names; a sweep repeated by another node finds nothing left to drop.

use crate::metrics::INBOX_PRUNED;
use crate::{MarketStore, Write};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `DELETE` of `Write::PruneInbox`'s second step, for SQLite and PostgreSQL alike:
/// every entry past its user's newest `param` (each backend names its own placeholder).
pub(crate) fn over_cap_delete(param: &str) -> String {
    format!(
        "DELETE FROM notifications WHERE (user_id, key) IN (
           SELECT user_id, key FROM (
             SELECT user_id, key, ROW_NUMBER() OVER (
               PARTITION BY user_id ORDER BY ts DESC, key DESC) AS newest
             FROM notifications) ranked
           WHERE newest > {param})"
    )
}

/// `Write::PruneHoldings` for SQLite and PostgreSQL: every point older than the cutoff
/// (`param`) that a newer point at or before the cutoff supersedes.
pub(crate) fn holdings_prune(param: &str) -> String {
    format!(
        "DELETE FROM holdings WHERE ts < {param} AND EXISTS (
           SELECT 1 FROM holdings newer WHERE newer.user_id = holdings.user_id
             AND newer.ts > holdings.ts AND newer.ts <= {param})"
    )
}

/// How long the portfolio's value history is kept.
pub const HOLDINGS_KEEP: Duration = Duration::from_secs(7 * 86_400);

/// How long entries are kept and how many per user.
#[derive(Debug, Clone, Copy)]
pub struct InboxRetention {
    pub keep: Duration,
    pub max_per_user: u64,
    pub every: Duration,
}

fn cutoff(now_ms: i64, keep: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
}

/// Sweeps `store` on `retention`'s period until `stop` turns true.
pub async fn run(
    store: Arc<dyn MarketStore>,
    retention: InboxRetention,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    LazyLock::force(&INBOX_PRUNED);
    loop {
        tokio::select! {
            () = tokio::time::sleep(retention.every) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let write = Write::PruneInbox {
            before: cutoff(now_ms, retention.keep),
            keep_per_user: retention.max_per_user,
        };
        match store.submit(write).value().await {
            Ok(dropped) => {
                INBOX_PRUNED.inc_by(dropped);
                if dropped > 0 {
                    tracing::info!(dropped, "inbox entries past retention dropped");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "inbox retention sweep failed; next one in a period")
            }
        }
        let write = Write::PruneHoldings {
            before: cutoff(now_ms, HOLDINGS_KEEP),
        };
        if let Err(e) = store.submit(write).value().await {
            tracing::warn!(error = %e, "holdings retention sweep failed; next one in a period");
        }
    }
}
