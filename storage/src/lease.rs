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
    pub async fn take_over(
        store: Arc<dyn MarketStore>,
        kind: &str,
        key: &str,
        node: &str,
    ) -> Result<Lease, StoreError> {
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
