//! Numbered live streams kept by publisher entities (docs/PROTOCOL.md "Stream events").
//!
//! A publisher (a symbol, later a book or a room) owns several channels. Every event it
//! publishes on a channel gets the next `seq` within the publisher's `epoch`, whether or not
//! anyone listens, so a client that resumes with `since` can tell a replay from a gap. The
//! epoch is minted at activation: a restarted entity starts a new epoch, which tells clients
//! that history was lost. The publisher keeps subscribers per *node*, not per client, and a
//! short replay buffer per channel.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// One event on one channel, as it travels from publisher to hubs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// `trades:KRW-BTC`.
    pub channel: String,
    /// The publisher activation that numbered it.
    pub epoch: String,
    /// Position on the channel within the epoch, from 1.
    pub seq: u64,
    /// Event time, ms since the Unix epoch.
    pub ts: i64,
    /// The event's `data` object, already JSON-encoded once by the publisher.
    pub data: String,
    /// Whether a newer event on the channel may replace this one in a slow client's queue.
    pub conflatable: bool,
}

/// Where a subscriber stands on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: String,
    pub seq: u64,
}

/// A node's request to receive a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRequest {
    pub channel: String,
    /// The node whose hub receives the events.
    pub node: String,
    /// Resume after this point if the publisher still holds the events.
    pub since: Option<Cursor>,
}

/// The publisher's answer: what to send first, and where live events continue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamGrant {
    pub channel: String,
    pub epoch: String,
    /// The last seq covered by `events` (or already seen); live events continue at `seq + 1`.
    pub seq: u64,
    /// Replayed events (on resume) or a snapshot event (ticker, open candle).
    pub events: Vec<StreamEvent>,
    /// True when `since` was honoured by a replay with no gap.
    pub resumed: bool,
}

#[derive(Debug, Default)]
struct ChannelState {
    seq: u64,
    replay: VecDeque<StreamEvent>,
    nodes: BTreeSet<String>,
}

/// All channels of one publisher activation.
#[derive(Debug)]
pub struct StreamLog {
    epoch: String,
    replay_cap: usize,
    channels: HashMap<String, ChannelState>,
}

/// A fresh epoch id: activation time plus randomness, so two activations never share one.
pub fn new_epoch(now_ms: i64) -> String {
    format!("{:x}{:04x}", now_ms, fastrand::u16(..))
}

impl StreamLog {
    /// An empty log for a new activation.
    pub fn new(epoch: String, replay_cap: usize) -> Self {
        StreamLog {
            epoch,
            replay_cap: replay_cap.max(1),
            channels: HashMap::new(),
        }
    }

    /// This activation's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Appends an event and returns it with the nodes that want it (empty when nobody
    /// listens; the event is still numbered and kept for replay).
    pub fn publish(
        &mut self,
        channel: &str,
        ts: i64,
        data: String,
        conflatable: bool,
    ) -> (StreamEvent, Vec<String>) {
        let state = match self.channels.get_mut(channel) {
            Some(s) => s,
            None => self.channels.entry(channel.to_string()).or_default(),
        };
        state.seq += 1;
        let event = StreamEvent {
            channel: channel.to_string(),
            epoch: self.epoch.clone(),
            seq: state.seq,
            ts,
            data,
            conflatable,
        };
        if state.replay.len() == self.replay_cap {
            state.replay.pop_front();
        }
        state.replay.push_back(event.clone());
        (event, state.nodes.iter().cloned().collect())
    }

    /// Registers `req.node` for the channel and answers with a replay (when `since` is in
    /// this epoch and still held) or with `snapshot` data (the current state, sent with the
    /// channel's current seq), else nothing.
    pub fn subscribe(
        &mut self,
        req: &StreamRequest,
        now_ms: i64,
        snapshot: Option<String>,
        conflatable: bool,
    ) -> StreamGrant {
        let epoch = self.epoch.clone();
        let state = self.channels.entry(req.channel.clone()).or_default();
        state.nodes.insert(req.node.clone());
        let mut grant = StreamGrant {
            channel: req.channel.clone(),
            epoch: epoch.clone(),
            seq: state.seq,
            events: Vec::new(),
            resumed: false,
        };
        if let Some(since) = &req.since {
            let oldest = state.replay.front().map_or(state.seq + 1, |e| e.seq);
            // An empty epoch means "the current one" (a bare seq from a client).
            let same_epoch = since.epoch == epoch || since.epoch.is_empty();
            if same_epoch && since.seq <= state.seq && since.seq + 1 >= oldest {
                grant.events = state
                    .replay
                    .iter()
                    .filter(|e| e.seq > since.seq)
                    .cloned()
                    .collect();
                grant.resumed = true;
                return grant;
            }
        }
        if let Some(data) = snapshot {
            grant.events.push(StreamEvent {
                channel: req.channel.clone(),
                epoch,
                seq: state.seq,
                ts: state.replay.back().map_or(now_ms, |e| e.ts),
                data,
                conflatable,
            });
        }
        grant
    }

    /// Stops sending the channel to `node`.
    pub fn unsubscribe(&mut self, channel: &str, node: &str) {
        if let Some(state) = self.channels.get_mut(channel) {
            state.nodes.remove(node);
        }
    }

    /// The channel's last seq in this epoch (0 before its first event).
    pub fn seq(&self, channel: &str) -> u64 {
        self.channels.get(channel).map_or(0, |s| s.seq)
    }

    /// Whether any node listens to the channel.
    pub fn has_subscribers(&self, channel: &str) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|s| !s.nodes.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(since: Option<(&str, u64)>) -> StreamRequest {
        StreamRequest {
            channel: "trades:X-Y".into(),
            node: "n1".into(),
            since: since.map(|(e, s)| Cursor {
                epoch: e.into(),
                seq: s,
            }),
        }
    }

    #[test]
    fn seq_advances_by_one_even_without_subscribers() {
        let mut log = StreamLog::new("e1".into(), 4);
        let (a, nodes) = log.publish("trades:X-Y", 1, "{}".into(), false);
        assert!(nodes.is_empty());
        let (b, _) = log.publish("trades:X-Y", 2, "{}".into(), false);
        assert_eq!((a.seq, b.seq), (1, 2));
        let grant = log.subscribe(&req(None), 3, None, false);
        assert_eq!((grant.seq, grant.events.len()), (2, 0));
        let (_, nodes) = log.publish("trades:X-Y", 4, "{}".into(), false);
        assert_eq!(nodes, vec!["n1".to_string()]);
    }

    #[test]
    fn resume_replays_or_falls_back_to_snapshot() {
        let mut log = StreamLog::new("e1".into(), 3);
        for ts in 1..=5 {
            log.publish("trades:X-Y", ts, format!("{{\"n\":{ts}}}"), false);
        }
        // Held: 3, 4, 5. Since 2 replays 3..=5 with no gap.
        let g = log.subscribe(&req(Some(("e1", 2))), 9, Some("snap".into()), false);
        assert!(g.resumed);
        assert_eq!(
            g.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        // Since 1 would need event 2, which is gone: snapshot instead.
        let g = log.subscribe(&req(Some(("e1", 1))), 9, Some("snap".into()), false);
        assert!(!g.resumed);
        assert_eq!(g.events.len(), 1);
        assert_eq!((g.events[0].seq, g.events[0].data.as_str()), (5, "snap"));
        // Another epoch: snapshot.
        let g = log.subscribe(&req(Some(("e0", 4))), 9, None, false);
        assert!(!g.resumed && g.events.is_empty() && g.seq == 5);
        // Up to date: nothing to replay, still resumed.
        let g = log.subscribe(&req(Some(("e1", 5))), 9, None, false);
        assert!(g.resumed && g.events.is_empty());
        // From the future: not honoured.
        let g = log.subscribe(&req(Some(("e1", 50))), 9, None, false);
        assert!(!g.resumed);
    }

    #[test]
    fn unsubscribe_stops_delivery() {
        let mut log = StreamLog::new("e1".into(), 3);
        log.subscribe(&req(None), 0, None, false);
        assert!(log.has_subscribers("trades:X-Y"));
        log.unsubscribe("trades:X-Y", "n1");
        assert!(!log.has_subscribers("trades:X-Y"));
        assert!(
            log.publish("trades:X-Y", 1, "{}".into(), false)
                .1
                .is_empty()
        );
    }
}
