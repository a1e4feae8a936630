//! `GET /ws`: one connection task per client (its actor: it owns the client's state and
//! handles its requests and stream frames in order).
//!
//! The loop serves, by priority: node shutdown (close 1001; it arrives through the outbox
//! and is checked first on every wake), client frames (requests, one response each,
//! rate-limited), outbound stream frames from the outbox (an overflow closes with 1008
//! `slow_consumer`; a chaos kill arrives there too, as a panic), and the ping timer (a
//! client silent for `idle_timeout_s` is closed). Oversize frames are refused by the
//! WebSocket layer and close with 1009, text that is not UTF-8 with 1007, other protocol
//! violations with 1002; a client's Close frame is answered with one (RFC 6455 section
//! 5.5.1). A client whose socket takes no step of a write (an answer, stream frames, a
//! ping) for `WRITE_TIMEOUT` is dropped: one that sends requests and never reads their
//! answers cannot hold its task for ever. A panic in the loop closes this connection alone
//! with 1011 and is counted in `bourse_gateway_connection_panics_total`.

pub mod ops;
pub mod upgrade;

use crate::error::ApiError;
use crate::limits::RateLimiter;
use crate::server::WRITE_TIMEOUT;
use crate::state::GatewayState;
use crate::subscriptions::{Subscriptions, recycle};
use bourse_cluster::{Frame, Outbox};
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Close codes (RFC 6455).
const GOING_AWAY: u16 = 1001;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const POLICY: u16 = 1008;
const TOO_BIG: u16 = 1009;
const NORMAL: u16 = 1000;
const INTERNAL_ERROR: u16 = 1011;

/// How a read failure closes the connection: the close code and reason owed to the
/// client, or `None` when the transport is gone and nothing can be sent.
fn close_for(e: &WsError) -> Option<(u16, &'static str)> {
    match e {
        WsError::Capacity(_) => Some((TOO_BIG, "frame too large")),
        WsError::Utf8(_) => Some((INVALID_DATA, "text frame is not valid UTF-8")),
        WsError::Protocol(_) => Some((PROTOCOL_ERROR, "protocol error")),
        _ => None,
    }
}

/// One client's connection state.
pub struct Connection {
    pub subs: Subscriptions,
    limiter: RateLimiter,
    pub state: Arc<GatewayState>,
}

impl Connection {
    /// The logged-in user, or `unauthorized`.
    pub fn user(&self) -> Result<u64, ApiError> {
        self.subs.user().ok_or_else(|| {
            ApiError::unauthorized("log in first: op 'auth' with a token, or ?token= on /ws")
        })
    }
}

/// A parsed request envelope.
pub struct Request {
    /// The client's id, echoed in the response.
    pub id: Value,
    pub op: String,
    /// Every other field: the op's.
    pub body: Map<String, Value>,
}

/// Parses a text frame into its envelope; an error carries the id to answer with (null
/// when none could be read).
pub fn parse_request(text: &str) -> Result<Request, (Value, ApiError)> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            Value::Null,
            ApiError::bad_request(format!("invalid JSON: {e}")),
        )
    })?;
    let Value::Object(mut body) = value else {
        return Err((
            Value::Null,
            ApiError::bad_request("a request is a JSON object"),
        ));
    };
    let id = match body.remove("id") {
        Some(id @ (Value::Number(_) | Value::String(_))) => id,
        Some(_) => {
            return Err((
                Value::Null,
                ApiError::bad_request("'id' must be a number or a string"),
            ));
        }
        None => return Err((Value::Null, ApiError::bad_request("missing 'id'"))),
    };
    let op = match body.remove("op") {
        Some(Value::String(op)) => op,
        _ => return Err((id, ApiError::bad_request("missing 'op'"))),
    };
    Ok(Request { id, op, body })
}

fn response(id: &Value, result: Result<Value, ApiError>) -> String {
    match result {
        Ok(r) => json!({"id": id, "ok": true, "result": r}),
        Err(e) => json!({"id": id, "ok": false, "error": e.counted("ws").body()}),
    }
    .to_string()
}

/// What woke a connection's loop.
enum Woke {
    Incoming(Option<Result<Message, WsError>>),
    Outbox,
    Ping,
}

/// Serves one WebSocket until it closes: over hyper's upgraded connection (the warp
/// route) or the raw TCP stream (direct.rs).
pub async fn serve<S>(
    mut ws: WebSocketStream<S>,
    state: Arc<GatewayState>,
    user: Option<(u64, String)>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let settings = state.settings.clone();
    let outbox = Outbox::new(settings.outbound_queue);
    let mut conn = Connection {
        subs: Subscriptions::new(state.clone(), outbox.clone(), "ws"),
        limiter: RateLimiter::new(settings.requests_per_sec, Instant::now()),
        state: state.clone(),
    };
    if let Some((id, name)) = user {
        conn.subs.set_user(id, name);
    }
    let idle = Duration::from_secs(settings.idle_timeout_s);
    let write_delay = Duration::from_millis(settings.write_delay_ms);
    let mut ping = tokio::time::interval(Duration::from_secs(settings.ping_interval_s));
    ping.tick().await;
    let mut last_heard = Instant::now();
    // Stream frames drained from the outbox, kept from one wake to the next.
    let mut frames = Vec::new();
    let read = ReadSide::new();
    // One loop owns the socket: it waits for whichever comes first (the read is
    // cancel-safe: a frame half read stays in the WebSocket layer), then writes.
    let run = async {
        loop {
            // A stopping node says so through the outbox, which wakes the loop.
            if outbox.is_closing() {
                break Some((GOING_AWAY, "server shutting down"));
            }
            let woke = tokio::select! {
                biased;
                incoming = std::future::poll_fn(|cx| read.poll(&mut ws, cx)) => Woke::Incoming(incoming),
                _ = outbox.wait(write_delay) => Woke::Outbox,
                _ = ping.tick() => Woke::Ping,
            };
            match woke {
                Woke::Incoming(incoming) => {
                    let msg = match incoming {
                        None => break None,
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "websocket read failed");
                            break close_for(&e);
                        }
                    };
                    last_heard = Instant::now();
                    if msg.is_close() {
                        // The WebSocket layer queued the answering Close frame; send it.
                        let _ = tokio::time::timeout(WRITE_TIMEOUT, SinkExt::close(&mut ws)).await;
                        break None;
                    }
                    let reply = match &msg {
                        // Boxed: an idle connection does not carry a request's state in its task.
                        Message::Text(text) => Some(Box::pin(handle_text(&mut conn, text)).await),
                        Message::Binary(_) => Some((
                            response(
                                &Value::Null,
                                Err(ApiError::bad_request(
                                    "binary frames are not supported; send JSON text",
                                )),
                            ),
                            Vec::new(),
                        )),
                        _ => None, // ping/pong: answered by the WebSocket layer
                    };
                    if let Some((text, frames)) = reply {
                        let reply = std::iter::once(Message::text(text))
                            .chain(frames.iter().map(|f| Message::Text(f.json.clone())));
                        if !write(&mut ws, reply).await {
                            break None;
                        }
                    }
                }
                Woke::Outbox => {
                    if !conn.subs.next_frames(&mut frames).await {
                        break Some((POLICY, "slow_consumer"));
                    }
                    if !write_frames(&mut ws, &frames).await {
                        break None;
                    }
                    recycle(&mut frames);
                }
                Woke::Ping => {
                    if last_heard.elapsed() > idle {
                        break Some((NORMAL, "idle timeout"));
                    }
                    if !write(&mut ws, std::iter::once(Message::Ping(Default::default()))).await {
                        break None;
                    }
                }
            }
        }
    };
    // A panic (a bug, or a chaos kill) closes this connection alone, with 1011; its
    // subscriptions, session attachment and presence are released as `conn` drops.
    let close = match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(close) => close,
        Err(panic) => {
            crate::metrics::connection_panicked("ws", &*panic);
            Some((INTERNAL_ERROR, "internal error"))
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        // Sending the Close flushes it.
        let bye = ws.send(Message::Close(Some(frame)));
        let _ = tokio::time::timeout(WRITE_TIMEOUT, bye).await;
        // The client's answering Close, or the rest of a frame it was sending, is read
        // and dropped: a close with unread bytes would be a reset.
        crate::server::close_gently(ws.get_mut()).await;
    }
}

/// The socket's read side, polled only when it may have something: most wakes of a
/// subscriber on a busy channel are for stream frames alone, and a poll of the WebSocket
/// layer's read costs as much as a tenth of such a wake (its waker registrations and the
/// socket's readiness lock). The WebSocket layer is polled with a waker of its own, which
/// notes that it fired and wakes the task: until it fires, the read side has nothing new.
struct ReadSide {
    flag: Arc<ReadWake>,
    waker: Waker,
}

struct ReadWake {
    /// Set by the read waker, and after a read that gave something (more may be
    /// buffered); cleared by the poll that follows.
    woken: AtomicBool,
    /// The connection task's waker, which the read waker wakes.
    task: AtomicWaker,
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl ReadSide {
    fn new() -> Self {
        let flag = Arc::new(ReadWake {
            // Nothing was polled yet.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        ReadSide { flag, waker }
    }

    /// The next client message, as `ws.next()` gives it, or pending without asking the
    /// WebSocket layer when its read waker has not fired since it last answered pending.
    fn poll<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, WsError>>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::Acquire) {
            return Poll::Pending;
        }
        let polled = ws.poll_next_unpin(&mut Context::from_waker(&self.waker));
        if polled.is_ready() {
            self.flag.woken.store(true, Ordering::Release);
        }
        polled
    }
}

/// Writes `messages` in one flush; false when the connection is gone or a step of the
/// write (a message, or the flush) took more than [`WRITE_TIMEOUT`]: a client reading
/// slowly but steadily keeps up, one that accepts nothing is dropped.
async fn write<S>(ws: &mut WebSocketStream<S>, messages: impl Iterator<Item = Message>) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for m in messages {
        if in_time(ws.feed(m)).await.is_none() {
            return false;
        }
    }
    in_time(ws.flush()).await.is_some()
}

/// Stream frames are written past the WebSocket layer: each is already a whole frame
/// ([`Frame::ws`], the same bytes for every subscriber), so a batch goes to the socket as
/// it is, in one `writev` of up to this many frames, with no copy into the layer's buffer.
const FRAMES_PER_WRITE: usize = 64;

/// Writes stream frames straight to the socket; false as [`write`]. The WebSocket layer
/// is flushed first: it may hold part of a frame of its own (a pong it queued on reading a
/// ping, which the socket took only in part), and a stream frame written past it then
/// would land inside that one.
async fn write_frames<S>(ws: &mut WebSocketStream<S>, frames: &[Arc<Frame>]) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if in_time(ws.flush()).await.is_none() {
        return false;
    }
    let io = ws.get_mut();
    for batch in frames.chunks(FRAMES_PER_WRITE) {
        let mut slices = [IoSlice::new(&[]); FRAMES_PER_WRITE];
        for (slice, f) in slices.iter_mut().zip(batch) {
            *slice = IoSlice::new(&f.ws);
        }
        let mut pending = &mut slices[..batch.len()];
        while !pending.is_empty() {
            match in_time(io.write_vectored(pending)).await {
                Some(n) if n > 0 => IoSlice::advance_slices(&mut pending, n),
                _ => return false,
            }
        }
    }
    in_time(io.flush()).await.is_some()
}

/// What one write step gave if it succeeded within [`WRITE_TIMEOUT`]. A step the socket
/// takes at once (the usual case) arms no timer.
async fn in_time<T, E>(step: impl Future<Output = Result<T, E>>) -> Option<T> {
    let mut step = std::pin::pin!(step);
    let done = match step.as_mut().now_or_never() {
        Some(done) => done,
        None => match tokio::time::timeout(WRITE_TIMEOUT, step).await {
            Ok(done) => done,
            Err(_) => {
                tracing::info!("client accepted nothing for {WRITE_TIMEOUT:?}; dropping it");
                return None;
            }
        },
    };
    done.ok()
}

async fn handle_text(conn: &mut Connection, text: &str) -> (String, Vec<Arc<Frame>>) {
    // Every text frame counts against the rate, malformed ones too.
    let allowed = conn.limiter.allow(Instant::now());
    let req = match parse_request(text) {
        Ok(r) => r,
        Err((id, e)) => return (response(&id, Err(e)), Vec::new()),
    };
    if !allowed {
        let e = ApiError::rate_limited("over the request rate for this connection; slow down");
        return (response(&req.id, Err(e)), Vec::new());
    }
    let applied = match ops::Op::decode(&req.op, req.body) {
        Ok(op) => ops::apply(conn, op).await,
        Err(e) => Err(e),
    };
    match applied {
        Ok(outcome) => (response(&req.id, Ok(outcome.result)), outcome.frames),
        Err(e) => (response(&req.id, Err(e)), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bourse_cluster::StreamEvent;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A pong the WebSocket layer could write only in part (the socket full) is finished
    /// before stream frames go out past the layer: the client reads the pong, then every
    /// frame, whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_frames_wait_for_a_pong_the_socket_took_in_part() {
        // A pipe of 64 bytes: a pong with the largest payload (127 bytes) fits only in part.
        let (server_io, client_io) = tokio::io::duplex(64);
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let payload = vec![7u8; 125];
        // The ping does not fit the pipe whole either: it is read as it is written. Reading
        // it queues the pong; the next read (the connection's loop polls its read side
        // again after a message) writes the pong as far as the pipe takes.
        let (sent, ping) = tokio::join!(
            client.send(Message::Ping(payload.clone().into())),
            server.next()
        );
        sent.unwrap();
        assert!(matches!(ping, Some(Ok(Message::Ping(_)))), "{ping:?}");
        assert!(
            server.next().now_or_never().is_none(),
            "nothing more to read"
        );
        let frames: Vec<Arc<Frame>> = (1..=3)
            .map(|seq| {
                Arc::new(Frame::encode(&StreamEvent {
                    channel: "trades:KRW-BTC".into(),
                    epoch: "e1".into(),
                    seq,
                    ts: 1,
                    data: format!("{{\"n\":{seq}}}"),
                    conflatable: false,
                }))
            })
            .collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 4 {
                match client.next().await {
                    Some(Ok(m)) => got.push(m),
                    other => panic!("the stream broke after {got:?}: {other:?}"),
                }
            }
            got
        });
        assert!(write_frames(&mut server, &frames).await);
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got[0], Message::Pong(payload.into()));
        for (m, f) in got[1..].iter().zip(&frames) {
            assert_eq!(m, &Message::Text(f.json.clone()));
        }
    }
}
