//! `GET /sse` served on the raw TCP connection, outside hyper: a stream can stay open for
//! hours, and a hyper connection keeps an 8 KiB read buffer and an 8 KiB header buffer for
//! all of it (an SSE client cost about 28 KiB that way, against about 7 for a WebSocket).
//!
//! The accept loop peeks at a new connection's first bytes; when they are `GET /sse?` or
//! `GET /sse ` (and no CORS policy is configured, which hyper's path applies), the request
//! comes here. Everything else — and an SSE request on a reused keep-alive connection —
//! goes through hyper and the warp route, which answer the same: the same head limits
//! (414, 431), the same `sse::open` and its error bodies, the same event text (warp's
//! `Event`), the same keep-alive comment. The response has no length and the connection
//! closes when the stream ends.

use crate::admission::Ticket;
use crate::error::ApiError;
use crate::server::{
    CLIENT_ERRORS, MAX_HEADER_BYTES, MAX_HEADERS, MAX_URI_BYTES, WRITE_TIMEOUT, head_over_limits,
    headers_too_large,
};
use crate::state::GatewayState;
use futures_util::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warp::http::StatusCode;

/// Whether the connection's first bytes are an SSE request this module serves; waits up to
/// `timeout` for them. `None`: nothing arrived in time. A client that left, or sent its
/// first bytes in pieces, is hyper's to handle.
pub async fn is_sse(stream: &TcpStream, timeout: Duration) -> Option<bool> {
    let mut first = [0u8; 9];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Err(_) => None,
        Ok(Ok(n)) => Some(n == first.len() && (&first == b"GET /sse?" || &first == b"GET /sse ")),
        Ok(Err(_)) => Some(false),
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
    query: HashMap<String, String>,
    last_event_id: Option<String>,
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
        raw.extend_from_slice(&chunk[..n]);
        if raw.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if raw.len() > limit {
            return Err(Some(headers_too_large()));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(Some(headers_too_large())),
        Ok(httparse::Status::Partial) | Err(_) => {
            CLIENT_ERRORS.with_label_values(&["malformed"]).inc();
            return Err(None);
        }
    }
    let target = req.path.unwrap_or_default();
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|h| h.name.len() + h.value.len())
        .sum();
    if let Some(refusal) = head_over_limits(target.len(), req.headers.len(), header_bytes) {
        return Err(Some(refusal));
    }
    // As the warp route: a query that does not parse is no query.
    let query = target
        .split_once('?')
        .and_then(|(_, q)| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let last_event_id = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("last-event-id"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::to_string);
    Ok(Head {
        query,
        last_event_id,
    })
}

/// Serves one SSE request on `stream` until the stream ends, the client leaves or the node
/// stops; the admission ticket is held as long.
pub async fn serve(mut stream: TcpStream, state: Arc<GatewayState>, ticket: Arc<Ticket>) {
    let _ticket = ticket;
    let timeout = Duration::from_secs(state.settings.header_read_timeout_s);
    let head = match tokio::time::timeout(timeout, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(Some((status, e)))) => {
            return answer_and_close(stream, &error_response(status, &e)).await;
        }
        Ok(Err(None)) => return,
        Err(_) => {
            CLIENT_ERRORS.with_label_values(&["header_timeout"]).inc();
            return;
        }
    };
    let events = match crate::sse::open(state.clone(), head.query, head.last_event_id).await {
        Ok(events) => events,
        Err(e) => return answer_and_close(stream, &error_response(e.status(), &e)).await,
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
                None => return answer_and_close(stream, b"").await,
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

/// Writes `bytes` (bounded in time) and closes the connection.
async fn answer_and_close(mut stream: TcpStream, bytes: &[u8]) {
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(bytes).await?;
        stream.shutdown().await
    })
    .await;
}
