//! `GET /sse` and `GET /ws` served on the raw TCP connection, outside hyper and warp: a
//! stream can stay open for hours, and a hyper connection keeps an 8 KiB read buffer and an
//! 8 KiB header buffer for all of it (an SSE client cost about 28 KiB that way); and in a
//! connect storm hyper's dispatch with warp's route filters was about a third of the node's
//! CPU (docs/OPERATIONS.md).
//!
//! The accept loop peeks at a new connection's first bytes; when they are `GET /sse?`,
//! `GET /sse `, `GET /ws?` or `GET /ws ` (and no CORS policy is configured, which hyper's
//! path applies), the request comes here. Everything else — and a stream request on a
//! reused keep-alive connection — goes through hyper and the warp route, which answer the
//! same: the same head limits (414, 431), the same `sse::open` and WebSocket handshake
//! checks (an upgrade over HTTP/1.1 alone, as hyper) with their error bodies, the same
//! event text (warp's `Event`) and keep-alive comment, the same `?token=` login. An error
//! answer closes the connection (after reading what the client still sends for a moment,
//! so that the close is no reset); an SSE response has no length and the connection closes
//! when the stream ends.

use crate::admission::Ticket;
use crate::error::ApiError;
use crate::server::{
    CLIENT_ERRORS, MAX_HEADER_BYTES, MAX_HEADERS, MAX_URI_BYTES, WRITE_TIMEOUT, head_over_limits,
    headers_too_large,
};
use crate::state::GatewayState;
use crate::ws::upgrade;
use futures_util::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warp::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// Which stream a connection's first bytes ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum First {
    /// `GET /sse`: served by [`serve_sse`].
    Sse,
    /// `GET /ws`: served by [`serve_ws`].
    Ws,
    /// Anything else, or a request that arrived in pieces: hyper's to handle.
    Other,
}

/// What the connection's first bytes ask for; waits up to `timeout` for them. `None`:
/// nothing arrived in time.
pub async fn first_request(stream: &TcpStream, timeout: Duration) -> Option<First> {
    let mut first = [0u8; 9];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Err(_) => None,
        Ok(Ok(n)) => Some(match &first[..n] {
            b"GET /sse?" | b"GET /sse " => First::Sse,
            [b'G', b'E', b'T', b' ', b'/', b'w', b's', b'?' | b' ', ..] => First::Ws,
            _ => First::Other,
        }),
        Ok(Err(_)) => Some(First::Other),
    }
}

/// A complete error answer with `status`, after which the connection closes.
fn error_response(status: StatusCode, e: &ApiError) -> Vec<u8> {
    let body = serde_json::json!({"error": e.counted("http").body()}).to_string();
    let retry = e
        .retry_after
        .map(|s| format!("retry-after: {s}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// What a request head says, or the answer owed for one that breaks a limit.
struct Head {
    /// HTTP/1.1 (a WebSocket needs it), not 1.0.
    http11: bool,
    query: HashMap<String, String>,
    headers: HeaderMap,
    /// Bytes the client sent after the head (a WebSocket frame it did not wait to send).
    rest: Vec<u8>,
}

/// Reads and parses the request head. `Err(None)`: the client left or sent garbage (a
/// client fault, counted); `Err(Some(..))`: answer that.
async fn read_head(stream: &mut TcpStream) -> Result<Head, Option<(StatusCode, ApiError)>> {
    let limit = MAX_URI_BYTES + MAX_HEADER_BYTES + 1024;
    let mut raw = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| None)?;
        if n == 0 {
            CLIENT_ERRORS.with_label_values(&["incomplete"]).inc();
            return Err(None);
        }
        // Only the new bytes, and the three before them, can complete the blank line (its
        // line ends CRLF, or a bare LF as httparse and hyper accept).
        let from = raw.len().saturating_sub(3);
        raw.extend_from_slice(&chunk[..n]);
        let tail = &raw[from..];
        if tail.windows(4).any(|w| w == b"\r\n\r\n") || tail.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if raw.len() > limit {
            // Too long to read whole: 414 when the request line alone is over its limit.
            let line = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len());
            return Err(Some(
                head_over_limits(line, 0, 0).unwrap_or_else(headers_too_large),
            ));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(&raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::TooManyHeaders) => return Err(Some(headers_too_large())),
        Ok(httparse::Status::Partial) | Err(_) => {
            CLIENT_ERRORS.with_label_values(&["malformed"]).inc();
            return Err(None);
        }
    };
    let target = req.path.unwrap_or_default();
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|h| h.name.len() + h.value.len())
        .sum();
    if let Some(refusal) = head_over_limits(target.len(), req.headers.len(), header_bytes) {
        return Err(Some(refusal));
    }
    // As the warp route: a query that does not parse is no query, and a fragment is no
    // part of it.
    let query = target
        .split('#')
        .next()
        .and_then(|t| t.split_once('?'))
        .and_then(|(_, q)| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    // Names and values as hyper would take them; a field neither accepts is left out, as
    // no check here reads one.
    let headers = req
        .headers
        .iter()
        .filter_map(|h| {
            Some((
                HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                HeaderValue::from_bytes(h.value).ok()?,
            ))
        })
        .collect();
    Ok(Head {
        http11: req.version == Some(1),
        query,
        headers,
        rest: raw.split_off(head_len),
    })
}

/// Reads the request head within the header read timeout: the head, or `None` when the
/// connection is already answered (an error) or abandoned (counted).
async fn head_or_answer(stream: &mut TcpStream, state: &GatewayState) -> Option<Head> {
    let timeout = Duration::from_secs(state.settings.header_read_timeout_s);
    match tokio::time::timeout(timeout, read_head(stream)).await {
        Ok(Ok(head)) => Some(head),
        Ok(Err(Some((status, e)))) => {
            answer_and_close(stream, &error_response(status, &e)).await;
            None
        }
        Ok(Err(None)) => None,
        Err(_) => {
            CLIENT_ERRORS.with_label_values(&["header_timeout"]).inc();
            None
        }
    }
}

/// Serves one WebSocket: the handshake checks and `?token=` login of the warp route, the
/// `101` answer, then `ws::serve` on this very socket, with the admission ticket held as
/// long.
pub async fn serve_ws(mut stream: TcpStream, state: Arc<GatewayState>, ticket: Arc<Ticket>) {
    let _ticket = ticket;
    // Boxed: the request head and the answer are gone before the socket's long life starts.
    let Some((rest, user)) = Box::pin(handshake(&mut stream, &state)).await else {
        return;
    };
    let socket = upgrade::socket(stream, rest, state.settings.max_frame_bytes).await;
    crate::ws::serve(socket, state, user).await;
}

/// Reads the upgrade request and answers it: `101` with the bytes the client sent behind
/// its head and the user its `?token=` logs in, or the error answer (`None`).
async fn handshake(
    stream: &mut TcpStream,
    state: &GatewayState,
) -> Option<(Vec<u8>, Option<(u64, String)>)> {
    let head = head_or_answer(stream, state).await?;
    // In the warp route's order: its checks, then whether the connection can upgrade.
    let opened =
        upgrade::open(&head.headers, head.query.get("token"), &state.auth).and_then(|opened| {
            head.http11
                .then_some(opened)
                .ok_or_else(upgrade::not_upgradable)
        });
    let (accept, user) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            answer_and_close(stream, &error_response(e.status(), &e)).await;
            return None;
        }
    };
    let mut answer = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: ".to_vec();
    answer.extend_from_slice(accept.as_bytes());
    answer.extend_from_slice(b"\r\n\r\n");
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&answer)).await {
        Ok(Ok(())) => Some((head.rest, user)),
        _ => None,
    }
}

/// Serves one SSE request on `stream` until the stream ends, the client leaves or the node
/// stops; the admission ticket is held as long.
pub async fn serve_sse(mut stream: TcpStream, state: Arc<GatewayState>, ticket: Arc<Ticket>) {
    let _ticket = ticket;
    let Some(Head { query, headers, .. }) = head_or_answer(&mut stream, &state).await else {
        return;
    };
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Not kept for the stream's life.
    drop(headers);
    let events = match crate::sse::open(state.clone(), query, last_event_id).await {
        Ok(events) => events,
        Err(e) => return answer_and_close(&mut stream, &error_response(e.status(), &e)).await,
    };
    let keep_alive = Duration::from_secs(state.settings.sse_keepalive_s);
    let mut events = std::pin::pin!(events);
    let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n".to_vec();
    // Anything the client sends from here on is read and ignored; its end ends the stream.
    let mut ignored = [0u8; 64];
    // One timer for the stream's life, pushed back whenever something is written.
    let mut quiet = std::pin::pin!(tokio::time::sleep(keep_alive));
    loop {
        if !out.is_empty() {
            match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&out)).await {
                Ok(Ok(())) => {
                    out.clear();
                    quiet
                        .as_mut()
                        .reset(tokio::time::Instant::now() + keep_alive);
                }
                _ => return,
            }
            if out.capacity() > 16 * 1024 {
                out = Vec::new();
            }
        }
        tokio::select! {
            next = events.next() => match next {
                Some(Ok(event)) => {
                    out.extend_from_slice(event.to_string().as_bytes());
                    // Whatever else is ready goes in the same write.
                    while let Some(Some(Ok(event))) = events.next().now_or_never() {
                        out.extend_from_slice(event.to_string().as_bytes());
                        if out.len() > 16 * 1024 {
                            break;
                        }
                    }
                }
                Some(Err(never)) => match never {},
                None => return answer_and_close(&mut stream, b"").await,
            },
            read = stream.read(&mut ignored) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return;
                }
            }
            () = &mut quiet => {
                out.extend_from_slice(crate::sse::keep_alive_comment().as_bytes());
            }
        }
    }
}

/// Writes `bytes` (bounded in time) and closes the connection gently.
async fn answer_and_close(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes)).await;
    crate::server::close_gently(stream).await;
}
