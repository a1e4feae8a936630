//! Where each known node's cluster port is: what the dialer (node.rs) connects to.
//!
//! Every node connects to every node, and dials them itself (rather than letting
//! `ractor_cluster` dial the peers of its peers, which it does without TLS). It learns
//! addresses from heartbeats and from the contact lists members announce with them
//! (`wire::msg::Cast::Contacts`): a node that joins through one seed hears of the others
//! within a heartbeat. An address nobody has mentioned for [`FORGET_AFTER`] is dropped, so
//! a node removed for good is not dialed forever.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long an address is kept without a mention.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// A node's name and cluster address, as members announce them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub node: String,
    pub addr: String,
}

/// The shared address book; cloning shares it.
#[derive(Clone, Default)]
pub struct Contacts {
    known: Arc<Mutex<BTreeMap<String, (String, Instant)>>>,
    news: Arc<Notify>,
}

impl std::fmt::Debug for Contacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contacts")
            .field("known", &self.current().len())
            .finish()
    }
}

impl Contacts {
    /// Records that `node` listens at `addr`; wakes the dialer when it is news.
    pub fn learn(&self, node: &str, addr: &str) {
        if node.is_empty() || addr.is_empty() {
            return;
        }
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let news = known.get(node).is_none_or(|(a, _)| a != addr);
        known.insert(node.to_string(), (addr.to_string(), Instant::now()));
        drop(known);
        if news {
            self.news.notify_one();
        }
    }

    /// Every address mentioned within [`FORGET_AFTER`]; older ones are dropped.
    pub fn current(&self) -> Vec<Contact> {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|_, (_, seen)| seen.elapsed() < FORGET_AFTER);
        known
            .iter()
            .map(|(node, (addr, _))| Contact {
                node: node.clone(),
                addr: addr.clone(),
            })
            .collect()
    }

    /// Has the dialer run a round now (a session closed: is its peer's port still open?).
    pub fn wake(&self) {
        self.news.notify_one();
    }

    /// Waits until a new node or a moved one is learned, or [`Contacts::wake`].
    pub async fn news(&self) {
        self.news.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn news_is_a_new_node_or_a_moved_one() {
        let c = Contacts::default();
        c.learn("node2", "10.0.0.2:7000");
        tokio::time::timeout(Duration::from_secs(1), c.news())
            .await
            .expect("a new node is news");
        c.learn("node2", "10.0.0.2:7000");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), c.news())
                .await
                .is_err(),
            "hearing of it again is not"
        );
        c.learn("node2", "10.0.0.9:7000");
        c.learn("", "10.0.0.3:7000");
        assert_eq!(
            c.current(),
            vec![Contact {
                node: "node2".into(),
                addr: "10.0.0.9:7000".into()
            }]
        );
    }
}
