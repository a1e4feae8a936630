//! This node's client connections (WebSocket and SSE), as the admin API lists them and a
//! chaos request kills them. A connection registers itself for its whole life and is
//! removed when its [`ClientEntry`] drops, however the connection ends.

use crate::hub::{ConnId, Outbox};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// What the registry holds of one connection.
struct Client {
    transport: &'static str,
    opened: Instant,
    user: Mutex<Option<String>>,
    /// Its outbound queue: its length is the listing's `queue`; a kill goes through it.
    outbox: Arc<Outbox>,
}

/// One connection as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientView {
    pub id: ConnId,
    /// `ws` or `sse`.
    pub transport: String,
    /// The logged-in username, if any.
    pub user: Option<String>,
    /// The channels it holds, in name order.
    pub channels: Vec<String>,
    /// Frames waiting in its outbound queue.
    pub queue: usize,
    /// Milliseconds since it opened.
    pub age_ms: u64,
}

/// The registry of a node's connections.
#[derive(Default)]
pub struct Clients {
    map: RwLock<Registry>,
}

/// The connections, and whether the node is stopping: both under one lock, so that a
/// connection registering while [`Clients::close_all`] runs is either closed by it or
/// finds the flag set.
#[derive(Default)]
struct Registry {
    open: BTreeMap<ConnId, Arc<Client>>,
    closing: bool,
}

/// A connection's place in the registry, released on drop.
pub struct ClientEntry {
    clients: Arc<Clients>,
    id: ConnId,
    client: Arc<Client>,
}

impl Clients {
    /// Registers connection `id` until the returned entry drops.
    pub fn register(
        self: &Arc<Self>,
        id: ConnId,
        transport: &'static str,
        outbox: Arc<Outbox>,
    ) -> ClientEntry {
        let client = Arc::new(Client {
            transport,
            opened: Instant::now(),
            user: Mutex::new(None),
            outbox,
        });
        let mut registry = self.write();
        if registry.closing {
            client.outbox.close();
        }
        registry.open.insert(id, client.clone());
        drop(registry);
        ClientEntry {
            clients: self.clone(),
            id,
            client,
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.read().open.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `limit` connections by id, with the channels `channels_of` gives each.
    pub fn list(
        &self,
        limit: usize,
        channels_of: impl Fn(&[ConnId]) -> BTreeMap<ConnId, Vec<String>>,
    ) -> Vec<ClientView> {
        let picked: Vec<(ConnId, Arc<Client>)> = self
            .read()
            .open
            .iter()
            .take(limit)
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        let ids: Vec<ConnId> = picked.iter().map(|(id, _)| *id).collect();
        let mut channels = channels_of(&ids);
        picked
            .into_iter()
            .map(|(id, c)| ClientView {
                id,
                transport: c.transport.to_string(),
                user: c.user.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                channels: channels.remove(&id).unwrap_or_default(),
                queue: c.outbox.len(),
                age_ms: c.opened.elapsed().as_millis() as u64,
            })
            .collect()
    }

    /// Asks connection `id` to die as a crashing one would; false when it is not open here.
    pub fn kill(&self, id: ConnId) -> bool {
        let registry = self.read();
        let Some(client) = registry.open.get(&id) else {
            return false;
        };
        client.outbox.kill();
        true
    }

    /// Tells every connection, and every one that registers from now on, that the node is
    /// stopping: each closes itself (WebSocket with 1001) when its outbox wakes it.
    pub fn close_all(&self) {
        let mut registry = self.write();
        registry.closing = true;
        for client in registry.open.values() {
            client.outbox.close();
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientEntry {
    /// Records the logged-in user's name.
    pub fn set_user(&self, username: &str) {
        *self.client.user.lock().unwrap_or_else(|p| p.into_inner()) = Some(username.to_string());
    }
}

impl Drop for ClientEntry {
    fn drop(&mut self) {
        self.clients.write().open.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_list_in_id_order_and_leave_when_dropped() {
        let clients = Arc::new(Clients::default());
        let outbox = Outbox::new(4);
        let a = clients.register(7, "ws", outbox.clone());
        let b = clients.register(3, "sse", Outbox::new(4));
        a.set_user("ana");
        let list = clients.list(10, |ids| {
            ids.iter()
                .map(|id| (*id, vec![format!("ch{id}")]))
                .collect()
        });
        let ids: Vec<_> = list.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![3, 7]);
        assert_eq!(list[1].user.as_deref(), Some("ana"));
        assert_eq!(list[1].channels, vec!["ch7".to_string()]);
        assert_eq!(
            (list[0].transport.as_str(), list[0].user.clone()),
            ("sse", None)
        );
        assert_eq!(clients.list(1, |_| BTreeMap::new()).len(), 1);
        drop(b);
        assert_eq!(clients.len(), 1);
        assert!(!clients.kill(3), "gone");
        // A kill asked before the connection looks still reaches it.
        assert!(clients.kill(7));
        let (mut frames, mut resyncs) = (Vec::new(), Vec::new());
        assert_eq!(
            outbox.drain_into(&mut frames, &mut resyncs),
            crate::hub::Drained::Killed,
            "killed"
        );
        drop(a);
        assert!(clients.is_empty());
    }

    #[test]
    fn a_stopping_node_closes_open_connections_and_those_registering_after() {
        let clients = Arc::new(Clients::default());
        let open = Outbox::new(4);
        let _a = clients.register(1, "ws", open.clone());
        assert!(!open.is_closing());
        clients.close_all();
        assert!(open.is_closing());
        let late = Outbox::new(4);
        let _b = clients.register(2, "sse", late.clone());
        assert!(
            late.is_closing(),
            "a connection registering after the signal closes too"
        );
    }
}
