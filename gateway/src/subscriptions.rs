//! A connection's subscriptions, shared by WebSocket and SSE: registering with the hub,
//! asking the publisher for a grant (snapshot or replay), and filtering live frames so that
//! each channel's events reach the client once, in order, with `seq` +1 per event within an
//! epoch (docs/PROTOCOL.md "Stream events").

use crate::error::ApiError;
use crate::state::GatewayState;
use bourse_actors::channel::{Channel, ChannelError};
use bourse_actors::room::{Room, RoomMsg};
use bourse_actors::session::{KIND as SESSION_KIND, Private, Session, SessionMsg};
use bourse_cluster::clients::ClientEntry;
use bourse_cluster::hub::{ConnId, Drained, epoch_newer};
use bourse_cluster::{Cursor, Frame, Outbox, Resync, StreamEvent, StreamGrant, StreamRequest};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone)]
struct Position {
    channel: Channel,
    epoch: String,
    seq: u64,
    /// The epoch a resync is being retried for, and how many tries it has had.
    retrying: (String, u32),
}

/// How long a connection first waits before asking a publisher's new epoch again; the
/// wait doubles per try up to [`RESYNC_RETRY_MAX`].
const RESYNC_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// The longest wait between two tries.
const RESYNC_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Tries per channel and epoch: about 80 s in all, longer than a woken node settles, a
/// hand-off waits for its old holder, or a short network cut lasts.
const RESYNC_TRIES: u32 = 20;

impl Position {
    /// Moves to what a re-subscription from `asked` granted, never backwards, and returns
    /// the granted events the client lacks: all of a newer epoch's, those past the position
    /// when it asked in its own epoch (a repair). `None` when nothing moves: an answer from
    /// an older epoch, or from the held one to a request for a newer one. That is a stale
    /// route to the activation being replaced, which may still publish (a chat room's
    /// presence needs no write, so it is never fenced): its live frames keep coming in
    /// order, and jumping to its current seq would skip them.
    fn advance<'a>(
        &mut self,
        asked: &Cursor,
        grant: &'a StreamGrant,
    ) -> Option<Vec<&'a StreamEvent>> {
        if epoch_newer(&grant.epoch, &self.epoch) {
            self.epoch = grant.epoch.clone();
            self.seq = grant.seq;
            return Some(grant.events.iter().collect());
        }
        if grant.epoch != self.epoch || asked.epoch != self.epoch {
            return None;
        }
        let after = self.seq;
        self.seq = self.seq.max(grant.seq);
        Some(grant.events.iter().filter(|e| e.seq > after).collect())
    }

    /// Whether a live frame goes to the client (see [`Subscriptions::accept`]).
    fn accept(&mut self, frame: &Frame) -> Verdict {
        if *frame.epoch != *self.epoch {
            return if epoch_newer(&frame.epoch, &self.epoch) {
                Verdict::Moved
            } else {
                Verdict::Drop
            };
        }
        if frame.seq <= self.seq {
            return Verdict::Drop;
        }
        if frame.seq > self.seq + 1 && !frame.conflatable {
            return Verdict::Gap;
        }
        self.seq = frame.seq;
        Verdict::Send
    }
}

/// The channels of one connection.
pub struct Subscriptions {
    state: Arc<GatewayState>,
    conn: ConnId,
    /// The connection's place in the node's registry (admin list, chaos kill).
    entry: ClientEntry,
    outbox: Arc<Outbox>,
    positions: HashMap<String, Position>,
    /// Room for one drain of the outbox (frames, resyncs), kept between wakes.
    drained: (Vec<Arc<Frame>>, Vec<Resync>),
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
    /// From a newer epoch than the client holds, whose resync has not (yet) granted it:
    /// re-subscribe in that epoch, then send.
    Moved,
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

impl Granted {
    fn new<'a>(
        channel: &Channel,
        grant: &StreamGrant,
        events: impl Iterator<Item = &'a StreamEvent>,
    ) -> Self {
        Granted {
            channel: channel.public_name(),
            frames: events.map(|e| Arc::new(Frame::encode(e))).collect(),
            position: json!({"epoch": grant.epoch, "seq": grant.seq, "resumed": grant.resumed}),
            resumed: grant.resumed,
        }
    }
}

impl Subscriptions {
    /// No channels yet; live frames land in `outbox`. Registers the connection (`ws` or
    /// `sse`) with the node for its life.
    pub fn new(state: Arc<GatewayState>, outbox: Arc<Outbox>, transport: &'static str) -> Self {
        let conn = state.hub.next_conn_id();
        let entry = state
            .hub
            .clients()
            .register(conn, transport, outbox.clone());
        Subscriptions {
            state,
            conn,
            entry,
            outbox,
            positions: HashMap::new(),
            drained: Default::default(),
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
        self.entry.set_user(&username);
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
            .map(Channel::name)
            .filter(|n| !self.positions.contains_key(n))
            .collect::<std::collections::HashSet<_>>()
            .len();
        let max = self.state.settings.max_channels;
        if self.positions.len() + new > max {
            return Err(ApiError::bad_request(format!(
                "too many channels: at most {max} per connection"
            )));
        }
        Ok(())
    }

    /// Subscribes (or re-subscribes, at the client's request) one channel. Registers with
    /// the hub first, so no live event can fall between the grant and the first live frame.
    /// The grant sets the channel's position: a client asking again asks for that replay.
    /// Returns whether the user should join the channel's room (a chat channel not held
    /// before, or granted by a newer activation of its room, which starts with no members).
    async fn subscribe(
        &mut self,
        channel: &Channel,
        since: Option<Cursor>,
    ) -> Result<(Granted, bool), ApiError> {
        let grant = self.request(channel, since).await?;
        let position = Position {
            channel: channel.clone(),
            epoch: grant.epoch.clone(),
            seq: grant.seq,
            retrying: Default::default(),
        };
        let join = match self.positions.insert(channel.name(), position) {
            Some(held) => epoch_newer(&grant.epoch, &held.epoch),
            None => true,
        };
        Ok((Granted::new(channel, &grant, grant.events.iter()), join))
    }

    /// Subscribes every channel of one request, in order, or none of them: when one is
    /// refused, the channels this request added are dropped again and those it asked again
    /// go back to the positions they held, so a client told of the error holds what it held
    /// before and gets no live events of a channel whose snapshot or replay it never saw.
    /// Live frames sent meanwhile wait in the outbox and are filtered against the restored
    /// positions (a gap is repaired, a new epoch resynced). Chat presence is joined only
    /// once all are granted, so a refused request shows no one coming and going. A channel
    /// named twice is subscribed once.
    pub async fn subscribe_all(
        &mut self,
        wanted: Vec<(Channel, Option<Cursor>)>,
    ) -> Result<Vec<Granted>, ApiError> {
        let mut before: Vec<(String, Option<Position>)> = Vec::with_capacity(wanted.len());
        let mut granted = Vec::with_capacity(wanted.len());
        let mut joins = Vec::new();
        for (channel, since) in wanted {
            let name = channel.name();
            if before.iter().any(|(n, _)| *n == name) {
                continue;
            }
            before.push((name.clone(), self.positions.get(&name).cloned()));
            match self.subscribe(&channel, since).await {
                Ok((g, join)) => {
                    granted.push(g);
                    if join {
                        joins.push(channel);
                    }
                }
                Err(mut e) => {
                    // The refused channel among them: registered with the hub, never held.
                    for (name, held) in before {
                        match held {
                            Some(pos) => {
                                self.positions.insert(name, pos);
                            }
                            None => {
                                self.forget(&name);
                            }
                        }
                    }
                    e.message = format!("channel '{}': {}", channel.public_name(), e.message);
                    return Err(e);
                }
            }
        }
        for channel in &joins {
            self.presence(channel, true);
        }
        Ok(granted)
    }

    /// Asks the channel's publisher for a grant, registered with the hub first (a refused
    /// subscribe unregisters it again: [`Subscriptions::subscribe_all`]).
    async fn request(
        &self,
        channel: &Channel,
        since: Option<Cursor>,
    ) -> Result<StreamGrant, ApiError> {
        let name = channel.name();
        let (kind, key) = channel.publisher();
        let hub = &self.state.hub;
        hub.subscribe(&name, kind, &key, self.conn, self.outbox.clone());
        let req = StreamRequest {
            channel: name,
            node: hub.node().to_string(),
            since,
        };
        self.state
            .sharding
            .subscribe(kind, &key, req)
            .await
            .map_err(ApiError::from)
    }

    /// Drops a channel; false when it was not held.
    pub fn unsubscribe(&mut self, name: &str) -> bool {
        let Some(pos) = self.forget(name) else {
            return false;
        };
        self.presence(&pos.channel, false);
        true
    }

    /// Drops a channel's position and its registration with the hub (either may be
    /// missing), without telling its room.
    fn forget(&mut self, name: &str) -> Option<Position> {
        self.state.hub.unsubscribe(name, self.conn);
        self.positions.remove(name)
    }

    /// Whether a live frame goes to the client: a channel still held, in the epoch the
    /// client was granted, past the grant's position. Frames of another epoch wait for
    /// the resync that grants it (its replay covers them, in order); a newer epoch's frame
    /// seen while the client still holds an older one is [`Verdict::Moved`], so a resync
    /// that reached the publisher's previous activation is tried again. A frame that skips
    /// ahead on a non-conflatable channel means one was lost on the way (a cluster link
    /// can drop messages while sessions reconnect): it is a [`Verdict::Gap`] to repair.
    pub fn accept(&mut self, frame: &Frame) -> Verdict {
        self.positions
            .get_mut(&*frame.channel)
            .map_or(Verdict::Drop, |pos| pos.accept(frame))
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
        let Some(granted) = self.resubscribe(channel, since).await? else {
            return Ok(Vec::new());
        };
        if !granted.resumed {
            tracing::warn!(%channel, "lost events are no longer held by the publisher; the client sees a gap");
        }
        Ok(granted.frames)
    }

    /// Re-subscribes a held channel from `since` on the connection's own behalf (a gap, a
    /// new epoch). The grant never takes the client backwards: while two activations of a
    /// publisher overlap (one fenced or draining, one new), a request routed by a stale
    /// ring reaches the old one, whose answer is its own epoch's current state. Such an
    /// answer moves nothing and is `None` (see [`Position::advance`]); one in the same
    /// epoch only sends what lies past the client's position.
    async fn resubscribe(
        &mut self,
        channel: &str,
        since: Cursor,
    ) -> Result<Option<Granted>, ApiError> {
        let Some(parsed) = self.positions.get(channel).map(|p| p.channel.clone()) else {
            return Err(ApiError::bad_request(format!(
                "channel '{channel}' is not held"
            )));
        };
        let grant = self.request(&parsed, Some(since.clone())).await?;
        let Some(pos) = self.positions.get_mut(channel) else {
            return Err(ApiError::bad_request(format!(
                "channel '{channel}' is not held"
            )));
        };
        let Some(lacking) = pos.advance(&since, &grant) else {
            tracing::info!(%channel, epoch = %grant.epoch, held = %pos.epoch, asked = %since.epoch, "a publisher answered from an older activation; ignored");
            return Ok(None);
        };
        Ok(Some(Granted::new(&parsed, &grant, lacking.into_iter())))
    }

    /// Filters live frames into what the client gets, in order, repairing gaps with the
    /// publisher's replay as they appear. Each channel is repaired at most once per batch.
    pub async fn pass(
        &mut self,
        frames: impl IntoIterator<Item = Arc<Frame>>,
        out: &mut Vec<Arc<Frame>>,
    ) {
        let mut repaired: Vec<Arc<str>> = Vec::new();
        for f in frames {
            let verdict = self.accept(&f);
            if verdict == Verdict::Send {
                out.push(f);
                continue;
            }
            if verdict == Verdict::Drop || repaired.contains(&f.channel) {
                continue;
            }
            repaired.push(f.channel.clone());
            let replay = match verdict {
                Verdict::Gap => self.repair(&f.channel).await,
                _ => {
                    let moved = Resync {
                        channel: f.channel.to_string(),
                        epoch: f.epoch.to_string(),
                    };
                    Ok(self.resync(&moved).await)
                }
            };
            match replay {
                // The replay ends at the grant's position, at or past this frame.
                Ok(replayed) => {
                    out.extend(replayed);
                    if self.accept(&f) == Verdict::Send {
                        out.push(f);
                    }
                }
                Err(e) => {
                    tracing::warn!(channel = %f.channel, error = %e.message, "stream repair failed")
                }
            }
        }
    }

    /// Handles a publisher's new epoch: re-subscribes the channel from the epoch's start, and
    /// returns the replay to send (nothing when the client already has that epoch). With no
    /// epoch (a re-made link), repairs from the position. What gets no answer is asked again
    /// later ([`Subscriptions::resync_later`]).
    pub async fn resync(&mut self, resync: &Resync) -> Vec<Arc<Frame>> {
        let Some(pos) = self.positions.get(&resync.channel) else {
            return Vec::new();
        };
        let replay = if resync.epoch.is_empty() {
            self.repair(&resync.channel).await.map(Some)
        } else if pos.epoch == resync.epoch || !epoch_newer(&resync.epoch, &pos.epoch) {
            return Vec::new();
        } else {
            let since = Cursor {
                epoch: resync.epoch.clone(),
                seq: 0,
            };
            let granted = self.resubscribe(&resync.channel, since).await;
            if let (Ok(Some(_)), Some(pos)) = (&granted, self.positions.get(&resync.channel)) {
                // A room in a new epoch restarted without its member list: join it again.
                self.presence(&pos.channel, true);
            }
            granted.map(|g| g.map(|g| g.frames))
        };
        match replay {
            Ok(Some(frames)) => frames,
            // The new activation did not answer (yet): the old one did, or none could (a
            // node settling after a pause owns nothing, a re-made link not yet in use). Ask
            // again shortly, or this node stays subscribed to an activation going away.
            Ok(None) => {
                self.resync_later(resync);
                Vec::new()
            }
            Err(e) => {
                tracing::debug!(channel = %resync.channel, error = %e.message, "resync failed; asking again");
                self.resync_later(resync);
                Vec::new()
            }
        }
    }

    /// Queues `resync` again after [`RESYNC_RETRY`] (doubling per try), at most
    /// [`RESYNC_TRIES`] times per channel and epoch.
    fn resync_later(&mut self, resync: &Resync) {
        let Some(pos) = self.positions.get_mut(&resync.channel) else {
            return;
        };
        if pos.retrying.0 != resync.epoch {
            pos.retrying = (resync.epoch.clone(), 0);
        }
        pos.retrying.1 += 1;
        if pos.retrying.1 > RESYNC_TRIES {
            tracing::warn!(channel = %resync.channel, epoch = %resync.epoch, tries = RESYNC_TRIES, "the publisher's new epoch never answered; the channel waits for its next frame");
            return;
        }
        let wait = RESYNC_RETRY
            .saturating_mul(1 << pos.retrying.1.saturating_sub(1).min(8))
            .min(RESYNC_RETRY_MAX);
        let (outbox, resync) = (self.outbox.clone(), resync.clone());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            outbox.push_resync(resync);
        });
    }

    /// Appends what the client gets next from the outbox to `out`, in order: each new
    /// epoch's replay first, then the live frames through the filter. False once the outbox
    /// has overflowed (a consumer too slow for non-conflatable events). A connection killed
    /// by a chaos request panics here, as a crashing one would; its owner contains the panic.
    /// The drain goes through vectors the connection keeps, as `out` is: a wake allocates
    /// nothing once they have grown to the usual batch.
    pub async fn next_frames(&mut self, out: &mut Vec<Arc<Frame>>) -> bool {
        let (mut live, mut resyncs) = std::mem::take(&mut self.drained);
        match self.outbox.drain_into(&mut live, &mut resyncs) {
            Drained::Open => {}
            Drained::Overflowed => return false,
            // A real unwind without the panic hook: a chaos run prints no backtraces.
            Drained::Killed => std::panic::resume_unwind(Box::new(
                "connection killed by chaos request".to_string(),
            )),
        }
        for r in resyncs.drain(..) {
            if Private::parse(&r.channel).is_some_and(|(p, _)| p == Private::Session) {
                // The session restarted or moved: it learns this connection again.
                self.attach(true);
                continue;
            }
            out.extend(self.resync(&r).await);
        }
        self.pass(live.drain(..), out).await;
        recycle(&mut live);
        recycle(&mut resyncs);
        self.drained = (live, resyncs);
        true
    }
}

/// Empties a vector kept from one wake to the next; one grown by a burst (a long replay)
/// is let go, so that an idle connection holds no more than a usual batch's room.
pub fn recycle<T>(v: &mut Vec<T>) {
    const KEPT: usize = 64;
    v.clear();
    if v.capacity() > KEPT {
        *v = Vec::new();
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const CH: &str = "book:KRW-BTC";

    fn event(epoch: &str, seq: u64) -> StreamEvent {
        StreamEvent {
            channel: CH.into(),
            epoch: epoch.into(),
            seq,
            ts: 0,
            data: "{}".into(),
            conflatable: false,
        }
    }

    fn grant(epoch: &str, seq: u64, events: &[u64]) -> StreamGrant {
        StreamGrant {
            channel: CH.into(),
            epoch: epoch.into(),
            seq,
            events: events.iter().map(|s| event(epoch, *s)).collect(),
            resumed: false,
        }
    }

    fn at(epoch: &str, seq: u64) -> Position {
        Position {
            channel: Channel::Book("KRW-BTC".into()),
            epoch: epoch.into(),
            seq,
            retrying: Default::default(),
        }
    }

    fn seqs(events: Vec<&StreamEvent>) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    fn asked(epoch: &str, seq: u64) -> Cursor {
        Cursor {
            epoch: epoch.into(),
            seq,
        }
    }

    #[test]
    fn a_resync_answered_by_the_old_activation_moves_nothing() {
        // The soak's case: the client holds e1:373; the resync for e2 reached e1, which
        // answered with its own snapshot at 373.
        let mut pos = at("e1", 373);
        assert!(
            pos.advance(&asked("e2", 0), &grant("e1", 373, &[373]))
                .is_none()
        );
        assert_eq!((pos.epoch.as_str(), pos.seq), ("e1", 373));
        // e2's live frames then ask for the resync again instead of being dropped for good.
        let frame = Frame::encode(&event("e2", 1));
        assert_eq!(pos.accept(&frame), Verdict::Moved);
        // When e2 answers, its whole replay goes out and its frames follow.
        let g = grant("e2", 2, &[1, 2]);
        let replay = pos.advance(&asked("e2", 0), &g);
        assert_eq!(replay.map(seqs), Some(vec![1, 2]));
        assert_eq!(pos.accept(&frame), Verdict::Drop);
        assert_eq!(pos.accept(&Frame::encode(&event("e2", 3))), Verdict::Send);
    }

    #[test]
    fn a_stale_activation_still_publishing_is_followed_not_skipped() {
        // A chat room's old activation (a node woken from a pause) kept publishing
        // presence in e1 after the client held e1:8 and asked for e2: it answered at e1:16
        // with no events. Moving to 16 dropped the queued live frames 9..16 and the client
        // saw 17 after 8.
        let mut pos = at("e1", 8);
        assert!(
            pos.advance(&asked("e2", 0), &grant("e1", 16, &[]))
                .is_none()
        );
        assert_eq!(pos.seq, 8);
        for seq in 9..=17 {
            assert_eq!(
                pos.accept(&Frame::encode(&event("e1", seq))),
                Verdict::Send,
                "e1:{seq}"
            );
        }
        // A repair asks in the held epoch: an unresumed answer there does move (the
        // events are gone; the gateway logs it).
        let mut pos = at("e1", 8);
        let g = grant("e1", 16, &[]);
        let repaired = pos.advance(&asked("e1", 8), &g);
        assert_eq!(repaired.map(seqs), Some(vec![]));
        assert_eq!(pos.seq, 16);
    }

    #[test]
    fn a_grant_never_takes_the_position_backwards() {
        let mut pos = at("e2", 10);
        assert!(
            pos.advance(&asked("e2", 10), &grant("e1", 50, &[50]))
                .is_none()
        );
        assert_eq!((pos.epoch.as_str(), pos.seq), ("e2", 10));
        // Same epoch: only what lies past the position.
        let g = grant("e2", 12, &[9, 10, 11, 12]);
        let ahead = pos.advance(&asked("e2", 10), &g);
        assert_eq!(ahead.map(seqs), Some(vec![11, 12]));
        assert_eq!(pos.seq, 12);
        let g = grant("e2", 12, &[12]);
        let again = pos.advance(&asked("e2", 12), &g);
        assert_eq!(again.map(seqs), Some(vec![]));
        assert_eq!(pos.seq, 12);
        // Epochs compare by length, then text: "e10" is newer than "e2".
        let g = grant("e10", 1, &[1]);
        let newer = pos.advance(&asked("e10", 0), &g);
        assert_eq!(newer.map(seqs), Some(vec![1]));
        assert_eq!((pos.epoch.as_str(), pos.seq), ("e10", 1));
    }

    #[test]
    fn live_frames_go_out_once_in_order() {
        let mut pos = at("e2", 5);
        let f = |epoch, seq| Frame::encode(&event(epoch, seq));
        assert_eq!(pos.accept(&f("e2", 5)), Verdict::Drop);
        assert_eq!(pos.accept(&f("e2", 6)), Verdict::Send);
        assert_eq!(pos.accept(&f("e2", 8)), Verdict::Gap);
        assert_eq!(pos.accept(&f("e1", 9)), Verdict::Drop);
        assert_eq!(pos.accept(&f("e3", 1)), Verdict::Moved);
        assert_eq!(pos.seq, 6);
    }
}
