//! Outbound batching per destination node. Casts to a node are queued; a flusher sends
//! everything queued as one cluster message, so while one send is on the wire the next ones
//! coalesce (as Proto.Actor and Akka Artery do) instead of paying one frame each. A call to
//! the node first flushes the queue under the same lock, so a `send` followed by an `ask`
//! from this node to one entity arrives in that order.

use crate::router::{RouterMsg, node_group};
use crate::wire::{self, msg};
use ractor::ActorRef;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Most casts in one batch (bounds the frame: the default inbound limit is 16 MiB).
const MAX_BATCH: usize = 4096;

/// The queue towards one node.
pub struct Link {
    node: String,
    queue: Mutex<Vec<msg::Cast>>,
    notify: Notify,
    /// Whether the node's router was there at the last flush (checked once per batch, not
    /// per message: the lookup allocates).
    reachable: AtomicBool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("node", &self.node).finish()
    }
}

/// The router of `node`, if its session is up.
pub fn router_of(node: &str) -> Option<ActorRef<RouterMsg>> {
    ractor::pg::get_members(&node_group(node))
        .into_iter()
        .next()
        .map(ActorRef::<RouterMsg>::from)
}

impl Link {
    /// A link to `node` with its flusher task.
    pub fn open(node: &str) -> Arc<Link> {
        let link = Arc::new(Link {
            node: node.to_string(),
            queue: Mutex::new(Vec::new()),
            notify: Notify::new(),
            reachable: AtomicBool::new(true),
        });
        let flusher = link.clone();
        tokio::spawn(async move {
            loop {
                flusher.notify.notified().await;
                // The only owner left is this task: the link was dropped.
                if Arc::strong_count(&flusher) == 1 {
                    return;
                }
                flusher.flush();
            }
        });
        link
    }

    /// Queues a cast; false when the node has no router to send to.
    pub fn push(&self, cast: msg::Cast) -> bool {
        if router_of(&self.node).is_none() {
            return false;
        }
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cast);
        self.notify.notify_one();
        true
    }

    /// Sends everything queued, then runs `then` (a call) while still holding the order.
    pub fn flush_then<T>(&self, then: impl FnOnce(&ActorRef<RouterMsg>) -> T) -> Option<T> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let router = router_of(&self.node);
        self.reachable.store(router.is_some(), Ordering::Relaxed);
        let router = router?;
        Self::send_all(&router, &mut queue);
        Some(then(&router))
    }

    /// Sends everything queued.
    pub fn flush(&self) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.is_empty() {
            return;
        }
        let router = router_of(&self.node);
        self.reachable.store(router.is_some(), Ordering::Relaxed);
        match router {
            Some(router) => Self::send_all(&router, &mut queue),
            None => {
                if !queue.is_empty() {
                    tracing::debug!(node = %self.node, dropped = queue.len(), "peer gone; dropping queued casts");
                    queue.clear();
                }
            }
        }
    }

    fn send_all(router: &ActorRef<RouterMsg>, queue: &mut Vec<msg::Cast>) {
        while !queue.is_empty() {
            let n = queue.len().min(MAX_BATCH);
            let cast = if n == 1 {
                queue.remove(0)
            } else {
                msg::Cast::Batch(queue.drain(..n).collect())
            };
            match wire::encode(&cast) {
                Ok(bytes) => {
                    let _ = router.cast(RouterMsg::Cast(bytes));
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a cluster batch"),
            }
        }
    }
}
