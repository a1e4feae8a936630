//! Carries one producer's private events (an account's order updates, an alert rule's
//! firings) to the user's session, in order, each at least once.
//!
//! A tell across a cluster link vanishes when the link drops, and the session, which numbers
//! the user's `orders` and `alerts` streams, would never know: the stream would skip an
//! update with no gap to show for it. A courier asks instead, in batches, and asks again
//! (with backoff) until the session answers; every parcel carries the courier's origin (one
//! per producer activation) and number, so the session publishes nothing twice when an
//! answer, not the request, was lost ([`Delivered`]). A producer that stops leaves its
//! courier to finish what it queued.

use super::{Private, Session, SessionMsg};
use bourse_cluster::Sharding;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Parcels sent in one ask at most.
const BATCH: usize = 256;
/// Parcels queued at most: past this the oldest are dropped with a warning (the inbox keeps
/// fills and firings in any case).
const MAX_QUEUED: usize = 10_000;
/// How long a batch is retried before it is given up with a warning.
const GIVE_UP: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Origins a session remembers the last delivered number of; the least recently seen goes
/// first.
const ORIGINS_KEPT: usize = 256;

/// One private event with its number from its courier.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Parcel {
    pub n: u64,
    pub channel: Private,
    pub ts: i64,
    pub data: String,
}

/// A producer's courier to one user's session.
pub struct Courier {
    user: String,
    origin: String,
    next: u64,
    sharding: Sharding,
    /// The delivery task's queue, started with the first parcel.
    queue: Option<mpsc::UnboundedSender<Parcel>>,
}

impl Courier {
    /// A courier for `producer` (its kind and key) to `user`'s session.
    pub fn new(sharding: &Sharding, producer: &str, user: u64) -> Courier {
        Courier {
            user: user.to_string(),
            origin: format!("{producer}/{:016x}", fastrand::u64(..)),
            next: 1,
            sharding: sharding.clone(),
            queue: None,
        }
    }

    /// Queues an event for the user's `channel`.
    pub fn send(&mut self, channel: Private, ts: i64, data: String) {
        let parcel = Parcel {
            n: self.next,
            channel,
            ts,
            data,
        };
        self.next += 1;
        let queue = self.queue.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(deliver(
                self.sharding.clone(),
                self.user.clone(),
                self.origin.clone(),
                rx,
            ));
            tx
        });
        if queue.send(parcel).is_err() {
            tracing::warn!(origin = %self.origin, "private event dropped: its courier stopped");
        }
    }
}

/// Delivers parcels in order until the producer is gone and the queue is empty.
async fn deliver(
    sharding: Sharding,
    user: String,
    origin: String,
    mut rx: mpsc::UnboundedReceiver<Parcel>,
) {
    let mut queue: VecDeque<Parcel> = VecDeque::new();
    let mut open = true;
    loop {
        if queue.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(p) => queue.push_back(p),
                None => return,
            }
        }
        while open {
            match rx.try_recv() {
                Ok(p) => queue.push_back(p),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        if queue.len() > MAX_QUEUED {
            let dropped = queue.len() - MAX_QUEUED;
            queue.drain(..dropped);
            tracing::warn!(%origin, dropped, "private events dropped: the session is unreachable and the courier's queue is full");
        }
        // Out of the queue either way: delivered, or given up.
        let parcels: Vec<Parcel> = queue.drain(..queue.len().min(BATCH)).collect();
        let count = parcels.len();
        let msg = SessionMsg::Deliver {
            origin: origin.clone(),
            parcels,
        };
        if !send_until_answered(&sharding, &user, &origin, msg).await {
            tracing::warn!(%origin, count, "private events given up: the session did not answer for {GIVE_UP:?}");
        }
    }
}

/// Asks until the session answers; false once [`GIVE_UP`] has passed.
async fn send_until_answered(
    sharding: &Sharding,
    user: &str,
    origin: &str,
    msg: SessionMsg,
) -> bool {
    let started = Instant::now();
    let mut backoff = BACKOFF_MIN;
    loop {
        match sharding.ask::<Session>(user, msg.clone()).await {
            Ok(_) => return true,
            Err(e) => {
                tracing::debug!(%origin, error = %e, "private events not delivered yet; retrying");
            }
        }
        if started.elapsed() >= GIVE_UP {
            return false;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// What a session has published from each origin: the last parcel number, to drop repeats.
#[derive(Debug, Default)]
pub struct Delivered {
    last: HashMap<String, (u64, u64)>,
    clock: u64,
}

impl Delivered {
    /// The parcels of `origin` not published yet, in order; records them as published.
    pub fn fresh(&mut self, origin: &str, parcels: Vec<Parcel>) -> Vec<Parcel> {
        self.clock += 1;
        let clock = self.clock;
        let last = self.last.get(origin).map_or(0, |(n, _)| *n);
        let fresh: Vec<Parcel> = parcels.into_iter().filter(|p| p.n > last).collect();
        let newest = fresh.last().map_or(last, |p| p.n);
        match self.last.get_mut(origin) {
            Some(seen) => *seen = (newest, clock),
            None => {
                self.last.insert(origin.to_string(), (newest, clock));
            }
        }
        if self.last.len() > ORIGINS_KEPT
            && let Some(oldest) = self
                .last
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(o, _)| o.clone())
        {
            self.last.remove(&oldest);
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parcels(ns: std::ops::RangeInclusive<u64>) -> Vec<Parcel> {
        ns.map(|n| Parcel {
            n,
            channel: Private::Orders,
            ts: 0,
            data: n.to_string(),
        })
        .collect()
    }

    fn numbers(p: &[Parcel]) -> Vec<u64> {
        p.iter().map(|p| p.n).collect()
    }

    #[test]
    fn a_repeated_batch_publishes_only_what_is_new() {
        let mut d = Delivered::default();
        assert_eq!(numbers(&d.fresh("a", parcels(1..=3))), vec![1, 2, 3]);
        // The answer was lost: the courier sends 1..=3 again with 4 and 5.
        assert_eq!(numbers(&d.fresh("a", parcels(1..=5))), vec![4, 5]);
        assert_eq!(numbers(&d.fresh("a", parcels(4..=5))), Vec::<u64>::new());
        // Another origin counts on its own.
        assert_eq!(numbers(&d.fresh("b", parcels(1..=2))), vec![1, 2]);
    }

    #[test]
    fn origins_are_bounded_and_the_least_recently_seen_goes() {
        let mut d = Delivered::default();
        d.fresh("keep", parcels(1..=1));
        for i in 0..ORIGINS_KEPT {
            d.fresh(&format!("o{i}"), parcels(1..=1));
            // "keep" stays recent.
            d.fresh("keep", parcels(1..=1));
        }
        assert!(d.last.len() <= ORIGINS_KEPT);
        assert!(d.last.contains_key("keep"));
        assert!(!d.last.contains_key("o0"), "the least recently seen went");
    }
}
