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

/// How often a waiting new owner reads the lease again.
const HANDOFF_POLL: Duration = Duration::from_millis(25);

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
        while tokio::time::Instant::now() < deadline {
            match store.lease(kind, key).await? {
                Some((holder, _)) if !holder.is_empty() && holder != node && live(&holder) => {
                    tokio::time::sleep(HANDOFF_POLL).await;
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
