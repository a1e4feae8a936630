//! One activation's hold on an entity, in one place for every entity kind: take the lease
//! over, write under its fence, notice when it is lost, give it up.
//!
//! An activation that sees its lease lost must stop: another activation owns the entity
//! now, or a write's outcome is unknown and memory may be ahead of storage. The entity's
//! `fenced()` answers [`Lease::is_lost`], so the runtime stops it and the next activation
//! rebuilds from storage.

use crate::{Ack, Fence, MarketStore, StoreError, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a new owner waits for a live holder to release an entity before fencing it.
pub const HANDOFF_PATIENCE: Duration = Duration::from_secs(2);

/// How soon a waiting new owner first reads the lease again; it waits twice as long each
/// time after, up to [`HANDOFF_POLL_MAX`], so a rebalance of thousands of entities does not
/// poll the store 40 times a second for each.
const HANDOFF_POLL: Duration = Duration::from_millis(25);
/// The longest wait between two reads of a held lease.
const HANDOFF_POLL_MAX: Duration = Duration::from_millis(250);

/// The lease an activation holds on `kind/key`. Clones share one "lost" flag, so a task
/// that awaits the activation's acks can mark it lost for the activation.
#[derive(Clone)]
pub struct Lease {
    store: Arc<dyn MarketStore>,
    fence: Fence,
    lost: Arc<AtomicBool>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("fence", &self.fence)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl Lease {
    /// Takes `kind/key` over for `node` (see [`MarketStore::take_over`]): every earlier
    /// activation, here or elsewhere, is fenced from now on.
    ///
    /// A holder that `live` says is a serving member of this node's ring is handing the
    /// entity off as its own ring catches up (nodes hear a membership change up to a
    /// heartbeat apart): it gets up to [`HANDOFF_PATIENCE`] to release the lease before it
    /// is fenced, so the entity moves once instead of bouncing between the two. A holder
    /// that is gone, cut off or standing down is fenced at once.
    pub async fn take_over(
        store: Arc<dyn MarketStore>,
        kind: &str,
        key: &str,
        node: &str,
        live: impl Fn(&str) -> bool + Send,
    ) -> Result<Lease, StoreError> {
        let deadline = tokio::time::Instant::now() + HANDOFF_PATIENCE;
        let mut poll = HANDOFF_POLL;
        while tokio::time::Instant::now() < deadline {
            match store.lease(kind, key).await? {
                Some((holder, _)) if !holder.is_empty() && holder != node && live(&holder) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    tokio::time::sleep(poll.min(left)).await;
                    poll = (poll * 2).min(HANDOFF_POLL_MAX);
                }
                _ => break,
            }
        }
        let fence = store.take_over(kind, key, node).await?;
        Ok(Lease {
            store,
            fence,
            lost: Arc::default(),
        })
    }

    /// Which lease this is (its epoch is what admin views show).
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Submits `write` under the fence without waiting (order is kept; whoever needs the
    /// write durable awaits the ack and calls [`Lease::lose`] on failure).
    pub fn submit(&self, write: Write) -> Ack {
        self.store.submit(write.fenced(&self.fence))
    }

    /// Submits `write` under the fence now and returns its outcome to await. Any failure
    /// marks the lease lost: the write was fenced, or its outcome is unknown, and the store
    /// takes no later write of this lease after a failed batch ([`StoreError::Halted`]), so
    /// only a new activation, rebuilt from storage, can go on.
    pub fn commit(
        &self,
        write: Write,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        let ack = self.submit(write);
        let lost = self.lost.clone();
        async move {
            let result = ack.value().await;
            if result.is_err() {
                lost.store(true, Ordering::Relaxed);
            }
            result
        }
    }

    /// Marks the lease lost: the activation must stop writing and be rebuilt.
    pub fn lose(&self) {
        self.lost.store(true, Ordering::Relaxed);
    }

    /// Whether a newer activation fenced this one, or a write's outcome is unknown.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Gives the lease up (a no-op once a newer activation holds it), so the next owner
    /// need not wait for anything. A failure is logged: the next take-over fences anyway.
    pub async fn release(&self) {
        if let Err(e) = self.store.submit(self.fence.release()).wait().await {
            tracing::error!(
                kind = %self.fence.kind,
                key = %self.fence.key,
                error = %e,
                "releasing the lease failed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;

    fn store(name: &str) -> (Arc<dyn MarketStore>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "bourse-lease-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("bourse.db"), 64).unwrap();
        (Arc::new(store), dir)
    }

    #[tokio::test]
    async fn a_live_holder_that_hands_off_is_waited_for_and_one_that_does_not_is_fenced() {
        let (store, dir) = store("handoff");
        let held = Lease::take_over(store.clone(), "symbol", "KRW-BTC", "a", |_| true)
            .await
            .unwrap();
        // `a` is live and releases a little later: `b` waits, then takes the lease over.
        let releasing = {
            let store = store.clone();
            let fence = held.fence().clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                store.submit(fence.release()).wait().await
            })
        };
        let moved = Lease::take_over(store.clone(), "symbol", "KRW-BTC", "b", |n| n == "a")
            .await
            .unwrap();
        releasing.await.unwrap().unwrap();
        assert!(moved.fence().epoch > held.fence().epoch);
        assert_eq!(
            store.lease("symbol", "KRW-BTC").await.unwrap(),
            Some(("b".to_string(), moved.fence().epoch))
        );
        // `b` is live but never lets go: `c` fences it once its patience runs out.
        let fenced = Lease::take_over(store.clone(), "symbol", "KRW-BTC", "c", |n| n == "b")
            .await
            .unwrap();
        assert!(fenced.fence().epoch > moved.fence().epoch);
        assert_eq!(
            store
                .lease("symbol", "KRW-BTC")
                .await
                .unwrap()
                .map(|(n, _)| n),
            Some("c".to_string())
        );
        drop((held, moved, fenced, store));
        let _ = std::fs::remove_dir_all(dir);
    }
}
