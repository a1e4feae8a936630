//! A connection's subscriptions, shared by WebSocket and SSE: registering with the hub,
//! asking the publisher for a grant (snapshot or replay), and filtering live frames so that
//! each channel's events reach the client once, in order, with `seq` +1 per event within an
//! epoch (docs/PROTOCOL.md "Stream events").

use crate::error::ApiError;
use crate::state::GatewayState;
use bourse_actors::channel::{Channel, ChannelError};
use bourse_actors::room::{Room, RoomMsg};
use bourse_actors::session::{KIND as SESSION_KIND, Private, Session, SessionMsg};
use bourse_cluster::hub::{ConnId, epoch_newer};
use bourse_cluster::{Cursor, Frame, Outbox, Resync, StreamRequest};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

struct Position {
    channel: Channel,
    epoch: String,
    seq: u64,
}

/// The channels of one connection.
pub struct Subscriptions {
    state: Arc<GatewayState>,
    conn: ConnId,
    outbox: Arc<Outbox>,
    positions: HashMap<String, Position>,
    /// The logged-in user (id, username), for private channels and chat presence.
    user: Option<(u64, String)>,
}

/// What to do with a live frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Next in order: send it.
    Send,
    /// Already covered, unsubscribed, or another epoch: skip it.
    Drop,
    /// Events before it were lost: repair, then send.
    Gap,
}

/// The outcome of subscribing one channel.
pub struct Granted {
    /// The channel's name as the client knows it.
    pub channel: String,
    /// What the client gets first (snapshot or replay), already encoded.
    pub frames: Vec<Arc<Frame>>,
    /// `{"epoch","seq","resumed"}` for the response.
    pub position: Value,
    /// Whether the requested `since` was honoured by a replay with no gap.
    pub resumed: bool,
}

impl Subscriptions {
    /// No channels yet; live frames land in `outbox`.
    pub fn new(state: Arc<GatewayState>, outbox: Arc<Outbox>) -> Self {
        let conn = state.hub.next_conn_id();
        crate::metrics::CONNECTIONS.inc();
        Subscriptions {
            state,
            conn,
            outbox,
            positions: HashMap::new(),
            user: None,
        }
    }

    /// The logged-in user id, if any.
    pub fn user(&self) -> Option<u64> {
        self.user.as_ref().map(|(id, _)| *id)
    }

    /// The logged-in user's name, if any.
    pub fn username(&self) -> Option<&str> {
        self.user.as_ref().map(|(_, name)| name.as_str())
    }

    /// Logs the connection in (its private channels become available) and attaches it to
    /// the user's session. Logging in again as the same user changes nothing.
    pub fn set_user(&mut self, user: u64, username: String) {
        if self.user().is_some() {
            return;
        }
        self.user = Some((user, username));
        let channel = Private::Session.channel(user);
        let hub = &self.state.hub;
        // Held for the connection's life: a new session epoch re-attaches it (below).
        hub.subscribe(
            &channel,
            SESSION_KIND,
            &user.to_string(),
            self.conn,
            self.outbox.clone(),
        );
        self.attach(true);
    }

    /// Tells the user's session that this connection is open (or closed).
    fn attach(&self, open: bool) {
        let Some(user) = self.user() else { return };
        let (node, conn) = (self.state.hub.node().to_string(), self.conn);
        let msg = if open {
            SessionMsg::Attach { node, conn }
        } else {
            SessionMsg::Detach { node, conn }
        };
        if let Err(e) = self.state.sharding.send::<Session>(&user.to_string(), msg) {
            tracing::debug!(user, error = %e, "session attach/detach not delivered");
        }
    }

    /// Tells a room that this connection's user joined or left it.
    fn presence(&self, channel: &Channel, join: bool) {
        let (Channel::Chat(room), Some(username)) = (channel, self.username()) else {
            return;
        };
        let (username, node) = (username.to_string(), self.state.hub.node().to_string());
        let msg = if join {
            RoomMsg::Join { username, node }
        } else {
            RoomMsg::Leave { username, node }
        };
        if let Err(e) = self.state.sharding.send::<Room>(room, msg) {
            tracing::debug!(%room, error = %e, "presence not delivered");
        }
    }

    /// How many channels are held.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Validates channel names without subscribing; the error names the first bad one.
    pub fn parse_all(&self, names: &[String]) -> Result<Vec<Channel>, ApiError> {
        names.iter().map(|n| self.parse(n)).collect()
    }

    /// Parses one client channel name for this connection.
    pub fn parse(&self, name: &str) -> Result<Channel, ApiError> {
        Channel::parse_for(name, &self.state.markets, self.user()).map_err(|e| match e {
            ChannelError::Invalid(m) => ApiError::bad_request(m),
            ChannelError::NeedsAuth(m) => ApiError::unauthorized(m),
        })
    }

    /// Checks the channel-count limit for adding `channels`.
    pub fn check_room(&self, channels: &[Channel]) -> Result<(), ApiError> {
        let new = channels
            .iter()
            .filter(|c| !self.positions.contains_key(&c.name()))
            .count();
        let max = self.state.settings.max_channels;
        if self.positions.len() + new > max {
            return Err(ApiError::bad_request(format!(
                "too many channels: at most {max} per connection"
            )));
        }
        Ok(())
    }

    /// Subscribes (or re-subscribes) one channel. Registers with the hub first, so no live
    /// event can fall between the grant and the first live frame.
    pub async fn subscribe(
        &mut self,
        channel: &Channel,
        since: Option<Cursor>,
    ) -> Result<Granted, ApiError> {
        let name = channel.name();
        let (kind, key) = channel.publisher();
        let key = key.as_str();
        let hub = &self.state.hub;
        let was_subscribed = self.positions.contains_key(&name);
        hub.subscribe(&name, kind, key, self.conn, self.outbox.clone());
        let req = StreamRequest {
            channel: name.clone(),
            node: hub.node().to_string(),
            since,
        };
        let grant = match self.state.sharding.subscribe(kind, key, req).await {
            Ok(g) => g,
            Err(e) => {
                if !was_subscribed {
                    hub.unsubscribe(&name, self.conn);
                }
                return Err(e.into());
            }
        };
        let position = json!({"epoch": grant.epoch, "seq": grant.seq, "resumed": grant.resumed});
        if !was_subscribed {
            self.presence(channel, true);
        }
        self.positions.insert(
            name,
            Position {
                channel: channel.clone(),
                epoch: grant.epoch.clone(),
                seq: grant.seq,
            },
        );
        Ok(Granted {
            channel: channel.public_name(),
            frames: grant
                .events
                .iter()
                .map(|e| Arc::new(Frame::encode(e)))
                .collect(),
            position,
            resumed: grant.resumed,
        })
    }

    /// Drops a channel; false when it was not held.
    pub fn unsubscribe(&mut self, name: &str) -> bool {
        if let Some(pos) = self.positions.remove(name) {
            self.state.hub.unsubscribe(name, self.conn);
            self.presence(&pos.channel, false);
            true
        } else {
            false
        }
    }

    /// Whether a live frame goes to the client: a channel still held, in the epoch the
    /// client was granted, past the grant's position. Frames of another epoch wait for
    /// the resync that grants it (its replay covers them, in order). A frame that skips
    /// ahead on a non-conflatable channel means one was lost on the way (a cluster link
    /// can drop messages while sessions reconnect): it is a [`Verdict::Gap`] to repair.
    pub fn accept(&mut self, frame: &Frame) -> Verdict {
        let Some(pos) = self.positions.get_mut(&*frame.channel) else {
            return Verdict::Drop;
        };
        if *frame.epoch != *pos.epoch || frame.seq <= pos.seq {
            return Verdict::Drop;
        }
        if frame.seq > pos.seq + 1 && !frame.conflatable {
            return Verdict::Gap;
        }
        pos.seq = frame.seq;
        Verdict::Send
    }

    /// Repairs a gap on `channel`: asks the publisher to replay from the client's position.
    /// Returns the replayed frames (the grant moves the position past them).
    pub async fn repair(&mut self, channel: &str) -> Result<Vec<Arc<Frame>>, ApiError> {
        let Some(pos) = self.positions.get(channel) else {
            return Ok(Vec::new());
        };
        let since = Cursor {
            epoch: pos.epoch.clone(),
            seq: pos.seq,
        };
        tracing::info!(%channel, after = since.seq, "repairing a stream gap from the publisher's replay");
        let granted = self.resubscribe(channel, since).await?;
        if !granted.resumed {
            tracing::warn!(%channel, "lost events are no longer held by the publisher; the client sees a gap");
        }
        Ok(granted.frames)
    }

    /// Re-subscribes a held channel from `since`.
    async fn resubscribe(&mut self, channel: &str, since: Cursor) -> Result<Granted, ApiError> {
        let Some(parsed) = self.positions.get(channel).map(|p| p.channel.clone()) else {
            return Err(ApiError::bad_request(format!(
                "channel '{channel}' is not held"
            )));
        };
        self.subscribe(&parsed, Some(since)).await
    }

    /// Filters live frames into what the client gets, in order, repairing gaps with the
    /// publisher's replay as they appear.
    pub async fn pass(&mut self, frames: impl IntoIterator<Item = Arc<Frame>>) -> Vec<Arc<Frame>> {
        let mut out = Vec::new();
        for f in frames {
            match self.accept(&f) {
                Verdict::Send => out.push(f),
                Verdict::Drop => {}
                Verdict::Gap => match self.repair(&f.channel).await {
                    // The replay ends at the grant's position, at or past this frame.
                    Ok(replayed) => {
                        out.extend(replayed);
                        if self.accept(&f) == Verdict::Send {
                            out.push(f);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(channel = %f.channel, error = %e.message, "gap repair failed")
                    }
                },
            }
        }
        out
    }

    /// Handles a publisher's new epoch: re-subscribes the channel from the epoch's start, and
    /// returns the replay to send (nothing when the client already has that epoch).
    pub async fn resync(&mut self, resync: &Resync) -> Result<Vec<Arc<Frame>>, ApiError> {
        let Some(pos) = self.positions.get(&resync.channel) else {
            return Ok(Vec::new());
        };
        if pos.epoch == resync.epoch || !epoch_newer(&resync.epoch, &pos.epoch) {
            return Ok(Vec::new());
        }
        let since = Cursor {
            epoch: resync.epoch.clone(),
            seq: 0,
        };
        let frames = self.resubscribe(&resync.channel, since).await?.frames;
        // A room in a new epoch restarted without its member list: join it again.
        if let Some(pos) = self.positions.get(&resync.channel) {
            self.presence(&pos.channel, true);
        }
        Ok(frames)
    }

    /// What the client gets next from the outbox, in order: each new epoch's replay first,
    /// then the live frames through the filter. `None` once the outbox has overflowed (a
    /// consumer too slow for non-conflatable events).
    pub async fn next_frames(&mut self) -> Option<Vec<Arc<Frame>>> {
        let (mut live, mut resyncs) = (Vec::new(), Vec::new());
        if self.outbox.drain_into(&mut live, &mut resyncs) {
            return None;
        }
        let mut out = Vec::new();
        for r in resyncs {
            if Private::parse(&r.channel).is_some_and(|(p, _)| p == Private::Session) {
                // The session restarted or moved: it learns this connection again.
                self.attach(true);
                continue;
            }
            match self.resync(&r).await {
                Ok(frames) => out.extend(frames),
                Err(e) => tracing::warn!(channel = %r.channel, error = %e.message, "resync failed"),
            }
        }
        out.extend(self.pass(live).await);
        Some(out)
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        crate::metrics::CONNECTIONS.dec();
        for (name, pos) in &self.positions {
            self.state.hub.unsubscribe(name, self.conn);
            self.presence(&pos.channel, false);
        }
        if let Some(user) = self.user() {
            self.state
                .hub
                .unsubscribe(&Private::Session.channel(user), self.conn);
            self.attach(false);
        }
    }
}

/// Parses a resume point: `"epoch:seq"`, `{"epoch","seq"}`, or a bare seq (taken to be in
/// the publisher's current epoch, as docs/PROTOCOL.md allows; prefer a form with the epoch).
pub fn parse_cursor(v: &Value) -> Result<Option<Cursor>, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(|seq| {
                Some(Cursor {
                    epoch: String::new(),
                    seq,
                })
            })
            .ok_or_else(|| format!("'{n}' is not a sequence number")),
        Value::String(s) => parse_event_id(s)
            .map(Some)
            .ok_or_else(|| format!("'{s}' is not an 'epoch:seq' position")),
        Value::Object(o) => match (
            o.get("epoch").and_then(Value::as_str),
            o.get("seq").and_then(Value::as_u64),
        ) {
            (Some(epoch), Some(seq)) if o.len() == 2 => Ok(Some(Cursor {
                epoch: epoch.into(),
                seq,
            })),
            _ => Err("a position is {\"epoch\",\"seq\"}".into()),
        },
        _ => Err("a position is a seq, \"epoch:seq\" or {\"epoch\",\"seq\"}".into()),
    }
}

/// Parses an SSE event id `epoch:seq`.
pub fn parse_event_id(s: &str) -> Option<Cursor> {
    let (epoch, seq) = s.split_once(':')?;
    if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(Cursor {
        epoch: epoch.to_string(),
        seq: seq.parse().ok()?,
    })
}
