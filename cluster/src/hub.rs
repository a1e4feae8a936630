//! The per-node pub/sub hub: publishers send one event per interested node; the hub encodes
//! it to its wire frame once and hands every local subscriber the same shared frame.
//!
//! Each subscriber is an [`Outbox`]: a bounded queue that a connection's writer drains.
//! Conflatable events (tickers) replace an older pending event of the same channel; any other
//! event that finds the queue full marks the outbox overflowed, and its connection is closed
//! as a slow consumer rather than silently losing messages.

use crate::clients::{ClientView, Clients};
use crate::stream::StreamEvent;
use bytes::Bytes;
use futures_util::FutureExt;
use indexmap::IndexMap;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// A stream event encoded once for the wire, shared by every connection that gets it.
#[derive(Debug)]
pub struct Frame {
    pub channel: Arc<str>,
    pub epoch: Arc<str>,
    pub seq: u64,
    pub conflatable: bool,
    /// `{"ch":..,"epoch":..,"seq":..,"ts":..,"data":{..}}` (docs/PROTOCOL.md "Stream events"):
    /// the text an SSE event carries and a WebSocket reply's replay sends.
    pub json: Utf8Bytes,
    /// The same text as one whole WebSocket text frame, header first: a server's frames are
    /// not masked, so these bytes are what every subscriber's socket is written, as they
    /// are (`json` is a view into them).
    pub ws: Bytes,
}

/// The name clients know a channel by: a private channel `orders@<user>` is `orders`.
pub fn public_name(channel: &str) -> &str {
    channel
        .split_once('@')
        .map_or(channel, |(public, _)| public)
}

impl Frame {
    /// Encodes an event's envelope around its pre-encoded data.
    pub fn encode(event: &StreamEvent) -> Frame {
        let json = format!(
            "{{\"ch\":{},\"epoch\":{},\"seq\":{},\"ts\":{},\"data\":{}}}",
            json_string(public_name(&event.channel)),
            json_string(&event.epoch),
            event.seq,
            event.ts,
            event.data
        );
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        };
        // An unmasked header is at most 10 bytes (RFC 6455 section 5.2).
        let mut ws = Vec::with_capacity(json.len() + 10);
        // Writing to a Vec cannot fail.
        let _ = header.format(json.len() as u64, &mut ws);
        let at = ws.len();
        ws.extend_from_slice(json.as_bytes());
        let ws = Bytes::from(ws);
        Frame {
            channel: event.channel.as_str().into(),
            epoch: event.epoch.as_str().into(),
            seq: event.seq,
            conflatable: event.conflatable,
            // The tail of `ws` is `json`, which is a String: valid UTF-8.
            json: Utf8Bytes::try_from(ws.slice(at..)).unwrap_or_default(),
            ws,
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Whether epoch `a` was minted after epoch `b` (epochs start with the activation time in
/// hex, so longer-then-lexicographic order is time order).
pub fn epoch_newer(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

#[derive(Default)]
struct OutboxInner {
    queue: VecDeque<Arc<Frame>>,
    /// Latest pending frame of each conflatable channel.
    conflated: HashMap<Arc<str>, Arc<Frame>>,
    /// Channels whose publisher started a new epoch: the connection re-subscribes them.
    resyncs: Vec<Resync>,
    overflowed: bool,
    killed: bool,
    /// When a cancelled lingering wait would have ended: the next wait ends then too, so
    /// requests arriving faster than the linger cannot hold the events back for ever.
    linger_until: Option<tokio::time::Instant>,
}

/// What a drain found beside the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// The connection goes on.
    Open,
    /// A non-conflatable frame found the queue full: the consumer is too slow.
    Overflowed,
    /// A chaos request killed the connection: it dies as a crashing one would.
    Killed,
}

/// A channel's publisher came back with a new epoch: the connection must ask it for the
/// new epoch's stream (a replay from its start) before it accepts that epoch's frames.
/// With `epoch` empty: the link to the publisher's node was lost and re-made (events may
/// have been lost, and the publisher may have dropped this node): the connection asks for
/// a replay from its position, as it repairs a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    pub channel: String,
    pub epoch: String,
}

/// One connection's bounded outbound queue.
pub struct Outbox {
    inner: Mutex<OutboxInner>,
    notify: Notify,
    capacity: usize,
    /// The node is stopping: the connection closes (WebSocket with 1001). A flag beside the
    /// queue's lock, so that a connection checks it first on every wake for nothing.
    closing: AtomicBool,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// A lingering wait: dropped before its deadline, it leaves the deadline to the next wait.
struct Lingering<'a>(&'a Outbox, Option<tokio::time::Instant>);

impl Drop for Lingering<'_> {
    fn drop(&mut self) {
        if let Some(until) = self.1 {
            self.0.lock().linger_until = Some(until);
        }
    }
}

impl Outbox {
    /// An empty outbox holding at most `capacity` non-conflatable frames.
    pub fn new(capacity: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            inner: Mutex::new(OutboxInner::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            closing: AtomicBool::new(false),
        })
    }

    /// Queues a frame; returns false once the outbox has overflowed.
    pub fn push(&self, frame: Arc<Frame>) -> bool {
        let mut inner = self.lock();
        if inner.overflowed {
            return false;
        }
        if frame.conflatable {
            inner.conflated.insert(frame.channel.clone(), frame);
        } else if inner.queue.len() >= self.capacity {
            inner.overflowed = true;
        } else {
            inner.queue.push_back(frame);
        }
        drop(inner);
        self.notify.notify_one();
        true
    }

    /// Asks the connection to re-subscribe `channel` in `epoch`.
    pub fn push_resync(&self, resync: Resync) {
        let mut inner = self.lock();
        if !inner.resyncs.contains(&resync) {
            inner.resyncs.push(resync);
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// Asks the connection to die as a crashing one would (a chaos request): it learns on
    /// its next drain, woken like any push.
    pub fn kill(&self) {
        self.lock().killed = true;
        self.notify.notify_one();
    }

    /// Tells the connection the node is stopping; it learns when woken, like any push.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether the node is stopping and the connection should close.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Moves every pending frame into `out` (queue order, then conflated channels) and every
    /// pending resync into `resyncs`; says whether the connection goes on.
    pub fn drain_into(&self, out: &mut Vec<Arc<Frame>>, resyncs: &mut Vec<Resync>) -> Drained {
        let mut inner = self.lock();
        out.extend(inner.queue.drain(..));
        // Draining an empty map still sweeps its table: most outboxes hold no ticker.
        if !inner.conflated.is_empty() {
            out.extend(inner.conflated.drain().map(|(_, f)| f));
        }
        resyncs.append(&mut inner.resyncs);
        if inner.killed {
            Drained::Killed
        } else if inner.overflowed {
            Drained::Overflowed
        } else {
            Drained::Open
        }
    }

    /// Waits until something was pushed since the last drain, then `linger` longer, so
    /// that what is pushed meanwhile goes out in the same socket write: a connection trades
    /// up to `linger` of latency for fewer writes (zero writes at once). Cancel-safe: a
    /// wait dropped while it lingers leaves its deadline to the next one.
    pub async fn wait(&self, linger: Duration) {
        // Only a lingering wait can have left a deadline: a zero one takes no lock here.
        let saved = if linger.is_zero() {
            None
        } else {
            self.lock().linger_until.take()
        };
        let until = match saved {
            Some(until) => until,
            None => {
                self.notify.notified().await;
                if linger.is_zero() {
                    return;
                }
                tokio::time::Instant::now() + linger
            }
        };
        let mut pending = Lingering(self, Some(until));
        tokio::time::sleep_until(until).await;
        pending.1 = None;
        // What was pushed while lingering is drained next: its wake-up is spent here.
        let _ = self.notify.notified().now_or_never();
    }

    /// The state; a panic elsewhere while holding it leaves it usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Frames waiting now (for metrics and tests).
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.queue.len() + inner.conflated.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection's identity at the hub.
pub type ConnId = u64;

struct ChannelSubs {
    /// The publishing entity, `(kind, key)`.
    publisher: (String, String),
    /// By connection: a subscribe or unsubscribe costs the same with 10 subscribers or
    /// 100,000 (a connect storm onto one channel), and delivery walks a dense array.
    subscribers: IndexMap<ConnId, Arc<Outbox>>,
}

/// The node's hub.
pub struct Hub {
    node: String,
    channels: RwLock<HashMap<String, ChannelSubs>>,
    next_conn: AtomicU64,
    clients: Arc<Clients>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("node", &self.node).finish()
    }
}

/// Whether any local connection still wanted an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to this many connections.
    Delivered(usize),
    /// Nobody here listens any more: the publisher may drop this node from the channel.
    NoSubscribers,
}

impl Hub {
    /// The hub of `node`.
    pub fn new(node: &str) -> Arc<Hub> {
        Arc::new(Hub {
            node: node.to_string(),
            channels: RwLock::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            clients: Arc::new(Clients::default()),
        })
    }

    /// The node this hub serves.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// This node's client connections.
    pub fn clients(&self) -> &Arc<Clients> {
        &self.clients
    }

    /// Up to `limit` of this node's connections, each with the channels it holds here.
    pub fn list_clients(&self, limit: usize) -> Vec<ClientView> {
        self.clients.list(limit, |ids| {
            let wanted: std::collections::HashSet<ConnId> = ids.iter().copied().collect();
            let mut out: BTreeMap<ConnId, Vec<String>> = BTreeMap::new();
            let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
            for (name, subs) in channels.iter() {
                for conn in subs.subscribers.keys() {
                    if wanted.contains(conn) {
                        out.entry(*conn).or_default().push(name.clone());
                    }
                }
            }
            for names in out.values_mut() {
                names.sort();
            }
            out
        })
    }

    /// Adds a local subscriber of `channel`, published by `kind/key`. Register here *before*
    /// asking the publisher for the stream, so no event falls between grant and live.
    pub fn subscribe(
        &self,
        channel: &str,
        kind: &str,
        key: &str,
        conn: ConnId,
        outbox: Arc<Outbox>,
    ) {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        if let Some(subs) = channels.get_mut(channel) {
            subs.subscribers.entry(conn).or_insert(outbox);
            return;
        }
        channels.insert(
            channel.to_string(),
            ChannelSubs {
                publisher: (kind.to_string(), key.to_string()),
                subscribers: IndexMap::from([(conn, outbox)]),
            },
        );
    }

    /// Removes a local subscriber. The publisher learns lazily, on its next event here.
    pub fn unsubscribe(&self, channel: &str, conn: ConnId) {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        if let Some(subs) = channels.get_mut(channel) {
            subs.subscribers.swap_remove(&conn);
            if subs.subscribers.is_empty() {
                channels.remove(channel);
            }
        }
    }

    /// Encodes `event` once and queues it on every local subscriber.
    pub fn deliver(&self, event: &StreamEvent) -> Delivery {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        let Some(subs) = channels.get(&event.channel) else {
            return Delivery::NoSubscribers;
        };
        let timer = crate::metrics::FANOUT.start_timer();
        let frame = Arc::new(Frame::encode(event));
        for outbox in subs.subscribers.values() {
            outbox.push(frame.clone());
        }
        timer.observe_duration();
        Delivery::Delivered(subs.subscribers.len())
    }

    /// Local subscriptions (connection × channel) by the publisher's kind.
    pub fn subscriptions_by_kind(&self) -> HashMap<String, usize> {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        let mut out: HashMap<String, usize> = HashMap::new();
        for subs in channels.values() {
            *out.entry(subs.publisher.0.clone()).or_default() += subs.subscribers.len();
        }
        out
    }

    /// Asks every local subscriber of a channel whose publisher `relinked` names (kind,
    /// key) to repair from its position (see [`Resync`]).
    pub fn repair_where(&self, relinked: impl Fn(&str, &str) -> bool) {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        for (channel, subs) in channels.iter() {
            if !relinked(&subs.publisher.0, &subs.publisher.1) {
                continue;
            }
            for outbox in subs.subscribers.values() {
                outbox.push_resync(Resync {
                    channel: channel.clone(),
                    epoch: String::new(),
                });
            }
        }
    }

    /// A publisher came up with a new epoch (first activation, restart, move): its old
    /// subscriber list is gone. Every local connection on one of its channels is asked to
    /// re-subscribe; each does so itself, so its replay and its live frames stay in order.
    pub fn publisher_activated(&self, kind: &str, key: &str, epoch: &str) {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        for (channel, subs) in channels.iter() {
            if subs.publisher.0 != kind || subs.publisher.1 != key {
                continue;
            }
            for outbox in subs.subscribers.values() {
                outbox.push_resync(Resync {
                    channel: channel.clone(),
                    epoch: epoch.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(channel: &str, seq: u64, conflatable: bool) -> StreamEvent {
        StreamEvent {
            channel: channel.into(),
            epoch: "e1".into(),
            seq,
            ts: 5,
            data: "{\"x\":1}".into(),
            conflatable,
        }
    }

    #[test]
    fn frame_is_protocol_shaped_json() {
        let f = Frame::encode(&event("trades:A-B", 7, false));
        let v: serde_json::Value = serde_json::from_str(&f.json).unwrap();
        assert_eq!(v["ch"], "trades:A-B");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["data"]["x"], 1);
        let private = Frame::encode(&event("orders@42", 1, false));
        let v: serde_json::Value = serde_json::from_str(&private.json).unwrap();
        assert_eq!(
            v["ch"], "orders",
            "clients see a private channel's public name"
        );
        assert_eq!(&*private.channel, "orders@42");
    }

    /// The frame a socket is written is one unmasked WebSocket text frame around `json`, with
    /// each of the three length forms (7-bit, 16-bit, 64-bit; RFC 6455 section 5.2).
    #[test]
    fn ws_bytes_are_one_text_frame_around_the_json() {
        for len in [0, 80, 125, 126, 300, 65_535, 65_536, 70_000] {
            let mut e = event("trades:A-B", 1, false);
            e.data = format!("\"{}\"", "x".repeat(len));
            let f = Frame::encode(&e);
            let mut cursor = std::io::Cursor::new(&f.ws[..]);
            let (header, length) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(header.opcode, OpCode::Data(Data::Text), "len {len}");
            assert!(header.is_final && header.mask.is_none(), "len {len}");
            let at = cursor.position() as usize;
            assert_eq!(length as usize, f.ws.len() - at, "len {len}");
            assert_eq!(&f.ws[at..], f.json.as_bytes(), "len {len}");
        }
    }

    #[test]
    fn outbox_conflates_tickers_and_overflows_on_trades() {
        let out = Outbox::new(2);
        for seq in 1..=5 {
            assert!(out.push(Arc::new(Frame::encode(&event("ticker:A-B", seq, true)))));
        }
        assert_eq!(out.len(), 1, "tickers conflate to the newest");
        assert!(out.push(Arc::new(Frame::encode(&event("trades:A-B", 1, false)))));
        assert!(out.push(Arc::new(Frame::encode(&event("trades:A-B", 2, false)))));
        let mut got = Vec::new();
        assert_eq!(out.drain_into(&mut got, &mut Vec::new()), Drained::Open);
        assert_eq!(got.len(), 3);
        assert_eq!(got.last().map(|f| f.seq), Some(5));
        for seq in 3..=5 {
            out.push(Arc::new(Frame::encode(&event("trades:A-B", seq, false))));
        }
        let mut got = Vec::new();
        assert_eq!(
            out.drain_into(&mut got, &mut Vec::new()),
            Drained::Overflowed,
            "third trade overflowed a queue of two"
        );
        assert!(!out.push(Arc::new(Frame::encode(&event("trades:A-B", 6, false)))));
    }

    #[tokio::test]
    async fn a_lingering_wait_gathers_pushes_into_one_wake_and_survives_cancellation() {
        let out = Outbox::new(8);
        let linger = Duration::from_secs(1);
        let frame = |seq| Arc::new(Frame::encode(&event("trades:A-B", seq, false)));
        out.push(frame(1));
        let waiting = tokio::spawn({
            let out = out.clone();
            async move { out.wait(linger).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        out.push(frame(2));
        assert!(!waiting.is_finished(), "still lingering after 20 ms of 1 s");
        let woke = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert!(matches!(woke, Ok(Ok(()))), "done once the linger ran out");
        let mut got = Vec::new();
        out.drain_into(&mut got, &mut Vec::new());
        assert_eq!(
            got.len(),
            2,
            "the push made while lingering is in the same drain"
        );
        let spent = tokio::time::timeout(Duration::from_millis(100), out.wait(Duration::ZERO));
        assert!(
            spent.await.is_err(),
            "its wake-up was spent: nothing new, no wake"
        );

        // Waits cancelled while lingering (a request came) keep the first one's deadline:
        // requests faster than the linger cannot hold the frame back for ever.
        out.push(frame(3));
        let linger = Duration::from_millis(300);
        let mut cancelled = 0;
        while tokio::time::timeout(Duration::from_millis(50), out.wait(linger))
            .await
            .is_err()
        {
            cancelled += 1;
            assert!(
                cancelled < 40,
                "the deadline moved with every cancelled wait"
            );
        }
        assert!(cancelled >= 1);
        let mut got = Vec::new();
        out.drain_into(&mut got, &mut Vec::new());
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn hub_shares_one_frame_and_reports_no_subscribers() {
        let hub = Hub::new("n1");
        let (a, b) = (Outbox::new(8), Outbox::new(8));
        assert_eq!(
            hub.deliver(&event("trades:A-B", 1, false)),
            Delivery::NoSubscribers
        );
        hub.subscribe("trades:A-B", "symbol", "A-B", 1, a.clone());
        hub.subscribe("trades:A-B", "symbol", "A-B", 2, b.clone());
        assert_eq!(
            hub.deliver(&event("trades:A-B", 2, false)),
            Delivery::Delivered(2)
        );
        let (mut fa, mut fb) = (Vec::new(), Vec::new());
        a.drain_into(&mut fa, &mut Vec::new());
        b.drain_into(&mut fb, &mut Vec::new());
        assert!(
            Arc::ptr_eq(&fa[0], &fb[0]),
            "one encoding shared by both connections"
        );
        // Subscribing again changes nothing; leaving takes out that connection alone.
        hub.subscribe("trades:A-B", "symbol", "A-B", 1, a.clone());
        assert_eq!(
            hub.deliver(&event("trades:A-B", 3, false)),
            Delivery::Delivered(2)
        );
        assert_eq!((a.len(), b.len()), (1, 1));
        hub.unsubscribe("trades:A-B", 1);
        assert_eq!(
            hub.deliver(&event("trades:A-B", 4, false)),
            Delivery::Delivered(1)
        );
        assert_eq!((a.len(), b.len()), (1, 2));
        hub.unsubscribe("trades:A-B", 2);
        assert_eq!(
            hub.deliver(&event("trades:A-B", 5, false)),
            Delivery::NoSubscribers
        );
    }

    #[test]
    fn a_crowded_channel_takes_and_drops_subscribers_in_any_order() {
        let hub = Hub::new("n1");
        let outboxes: Vec<Arc<Outbox>> = (0..1000).map(|_| Outbox::new(4)).collect();
        for (conn, outbox) in outboxes.iter().enumerate() {
            hub.subscribe(
                "trades:A-B",
                "symbol",
                "A-B",
                conn as ConnId,
                outbox.clone(),
            );
        }
        // Every third leaves, from the middle out.
        for conn in (0..1000).filter(|c| c % 3 == 0).rev() {
            hub.unsubscribe("trades:A-B", conn as ConnId);
        }
        assert_eq!(
            hub.deliver(&event("trades:A-B", 1, false)),
            Delivery::Delivered(666)
        );
        for (conn, outbox) in outboxes.iter().enumerate() {
            let wanted = usize::from(conn % 3 != 0);
            assert_eq!(outbox.len(), wanted, "connection {conn}");
        }
        assert_eq!(hub.subscriptions_by_kind()["symbol"], 666);
    }

    #[test]
    fn a_new_epoch_asks_each_local_subscriber_to_resync_once() {
        let hub = Hub::new("n1");
        let (a, other) = (Outbox::new(8), Outbox::new(8));
        hub.subscribe("trades:A-B", "symbol", "A-B", 1, a.clone());
        hub.subscribe("ticker:A-B", "symbol", "A-B", 1, a.clone());
        hub.subscribe("trades:C-D", "symbol", "C-D", 2, other.clone());
        hub.publisher_activated("symbol", "A-B", "e2");
        hub.publisher_activated("symbol", "A-B", "e2");
        let (mut frames, mut resyncs) = (Vec::new(), Vec::new());
        a.drain_into(&mut frames, &mut resyncs);
        resyncs.sort_by(|x, y| x.channel.cmp(&y.channel));
        assert_eq!(
            resyncs,
            vec![
                Resync {
                    channel: "ticker:A-B".into(),
                    epoch: "e2".into()
                },
                Resync {
                    channel: "trades:A-B".into(),
                    epoch: "e2".into()
                },
            ]
        );
        let mut none = Vec::new();
        other.drain_into(&mut frames, &mut none);
        assert!(
            none.is_empty(),
            "other publishers' subscribers are left alone"
        );
    }

    #[test]
    fn epochs_order_by_time() {
        assert!(epoch_newer("19a0000000001", "1990000000001"));
        assert!(epoch_newer("1000000000000000", "fffffffffff0000"));
        assert!(!epoch_newer("a", "a"));
    }
}
