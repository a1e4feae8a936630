//! Connection admission: the gateway's global and per-IP limits on open TCP connections
//! (`gateway.max_connections`, `gateway.max_connections_per_ip`).
//!
//! Every accepted connection takes a ticket before hyper reads a byte from it; the ticket
//! travels with the connection (into a WebSocket's task after the upgrade) and gives its
//! place back when the last holder drops it. A connection over a limit is answered `503`
//! and closed (server.rs).
//!
//! With Redis, the per-IP limit holds across the cluster: after the node's own check, the
//! connection's task claims its place in Redis (shared_connections.rs) before reading a
//! request. While Redis does not answer, the node's own count decides.

use crate::shared_connections::{Claim, SharedConnections};
use bourse_cluster::metrics::registered;
use prometheus::{IntCounterVec, IntGauge, Opts};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// Open TCP connections, every kind (HTTP keep-alive, WebSocket, SSE).
pub static OPEN: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "bourse_gateway_tcp_connections",
        "Open TCP connections on this gateway (HTTP, WebSocket and SSE)",
    ))
});

/// Connections refused by a limit, by which.
pub static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "bourse_gateway_connections_refused_total",
            "Connections answered 503 and closed because a connection limit was reached: global, per_ip",
        ),
        &["limit"],
    ))
});

/// Which limit turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `gateway.max_connections`.
    Global,
    /// `gateway.max_connections_per_ip` (on this node, or across the cluster with Redis).
    PerIp,
}

impl Refused {
    /// The metric label and the words of the 503 answer.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Global => "global",
            Refused::PerIp => "per_ip",
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// The limits and the connections they count.
pub struct Admission {
    max: usize,
    per_ip: usize,
    counts: Mutex<Counts>,
    /// Woken when the last open connection closes.
    idle: tokio::sync::Notify,
    /// The cluster-wide count per address, with Redis.
    shared: Option<Arc<SharedConnections>>,
}

/// One admitted connection's place; dropping the last clone gives it back.
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    /// Counted in Redis by this connection's claim.
    claimed: AtomicBool,
    /// The Redis incarnation current at admission (see `SharedConnections::generation`).
    generation: u64,
}

impl Admission {
    /// Limits of `max` connections in all and `per_ip` from one address, the latter across
    /// the cluster when `shared` counts in Redis.
    pub fn new(
        max: usize,
        per_ip: usize,
        shared: Option<Arc<SharedConnections>>,
    ) -> Arc<Admission> {
        LazyLock::force(&OPEN);
        for limit in [Refused::Global, Refused::PerIp] {
            REFUSED.with_label_values(&[limit.label()]);
        }
        Arc::new(Admission {
            max,
            per_ip,
            counts: Mutex::new(Counts::default()),
            idle: tokio::sync::Notify::new(),
            shared,
        })
    }

    /// A place for a connection from `ip` on this node, or the limit it would break.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Arc<Ticket>, Refused> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let refused = if counts.total >= self.max {
            Some(Refused::Global)
        } else if counts.by_ip.get(&ip).copied().unwrap_or(0) >= self.per_ip {
            Some(Refused::PerIp)
        } else {
            None
        };
        if let Some(limit) = refused {
            REFUSED.with_label_values(&[limit.label()]).inc();
            return Err(limit);
        }
        counts.total += 1;
        *counts.by_ip.entry(ip).or_default() += 1;
        OPEN.set(counts.total as i64);
        Ok(Arc::new(Ticket {
            admission: self.clone(),
            ip,
            claimed: AtomicBool::new(false),
            generation: self.shared.as_ref().map_or(0, |s| s.generation()),
        }))
    }

    /// The cluster-wide per-IP check of an admitted connection (nothing to do without
    /// Redis; admitted when Redis does not answer).
    pub async fn claim(&self, ticket: &Ticket) -> Result<(), Refused> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        match shared.claim(ticket.ip, self.per_ip).await {
            Claim::Counted => {
                ticket.claimed.store(true, Ordering::Release);
                Ok(())
            }
            Claim::Unknown => Ok(()),
            Claim::Full => {
                REFUSED.with_label_values(&[Refused::PerIp.label()]).inc();
                Err(Refused::PerIp)
            }
        }
    }

    /// Open connections per address on this node: what Redis should count for it.
    pub fn by_ip(&self) -> Vec<(IpAddr, usize)> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.by_ip.iter().map(|(ip, n)| (*ip, *n)).collect()
    }

    /// Connections now open.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Resolves once no connection is open: a stopping node waits here for its WebSocket
    /// and SSE connections, which outlive hyper's, to send their goodbyes.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.idle.notified();
            if self.open() == 0 {
                return;
            }
            closed.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.by_ip.remove(&self.ip);
            }
        }
        OPEN.set(counts.total as i64);
        if counts.total == 0 {
            self.admission.idle.notify_waiters();
        }
        drop(counts);
        if let Some(shared) = &self.admission.shared {
            // Counted by its claim, or by the rewrite of a later incarnation.
            if self.claimed.load(Ordering::Acquire) || shared.generation() != self.generation {
                shared.release(self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_open_connections_and_give_places_back() {
        let a = Admission::new(3, 2, None);
        let x: IpAddr = [10, 0, 0, 1].into();
        let y: IpAddr = [10, 0, 0, 2].into();
        let t1 = a.admit(x).ok().unwrap();
        let _t2 = a.admit(x).ok().unwrap();
        assert_eq!(a.admit(x).err(), Some(Refused::PerIp));
        let _t3 = a.admit(y).ok().unwrap();
        assert_eq!(a.admit(y).err(), Some(Refused::Global));
        assert_eq!(a.open(), 3);
        // A ticket shared by the connection and its upgraded socket counts once.
        let shared = t1.clone();
        drop(t1);
        assert_eq!(a.open(), 3);
        drop(shared);
        assert_eq!(a.open(), 2);
        assert!(a.admit(x).is_ok());
    }
}
