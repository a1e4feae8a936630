//! The WebSocket handshake (RFC 6455 section 4.2), done here rather than by warp so the
//! socket's buffers are ours to size: warp opens every socket with tungstenite's defaults,
//! a 128 KiB read buffer allocated and zeroed up front, which made an idle connection cost
//! over 100 KiB. Here a socket reads through `READ_BUFFER` bytes (a larger frame still
//! arrives whole: the buffer grows for it) and coalesces its writes up to `WRITE_BUFFER`.

use crate::admission::Ticket;
use crate::auth::Auth;
use crate::error::{ApiError, reply};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::Reply;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response;

/// A server-side WebSocket over hyper's upgraded connection (the warp route).
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Bytes a socket reads at a time: client requests are small JSON objects.
const READ_BUFFER: usize = 2 * 1024;
/// Frames are written out once this many bytes are buffered, and at every flush; one flush
/// after a batch of queued events sends them in one write.
const WRITE_BUFFER: usize = 16 * 1024;

/// A request's pending upgrade, moved out of hyper's extensions where warp's filters can
/// reach it (they ask for `Clone` values).
#[derive(Clone)]
pub struct Pending(Arc<Mutex<Option<OnUpgrade>>>);

/// Moves `req`'s upgrade, if it has one, into a [`Pending`] extension.
pub fn take<B>(req: &mut warp::http::Request<B>) {
    if let Some(on) = req.extensions_mut().remove::<OnUpgrade>() {
        req.extensions_mut()
            .insert(Pending(Arc::new(Mutex::new(Some(on)))));
    }
}

/// The socket settings: frames and messages up to `max_frame` bytes.
fn config(max_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_frame_size(Some(max_frame))
        .max_message_size(Some(max_frame))
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The checks of an upgrade request both paths make (the warp route and direct.rs), in
/// the order they answer them: a bad `?token=` (401), then a malformed handshake (400).
/// The `Sec-WebSocket-Accept` value and the user the token logs in.
pub fn open(
    headers: &HeaderMap,
    token: Option<&String>,
    auth: &Auth,
) -> Result<(HeaderValue, Option<(u64, String)>), ApiError> {
    let user = token.map(|t| auth.identity(t)).transpose()?;
    Ok((accept_key(headers)?, user))
}

/// The answer to an upgrade on a connection that cannot switch protocols: hyper upgrades
/// HTTP/1.1 alone, and direct.rs does as hyper.
pub fn not_upgradable() -> ApiError {
    ApiError::bad_request("this connection cannot be upgraded (HTTP/1.1 only)")
}

/// The `Sec-WebSocket-Accept` value for a valid upgrade request, or why it is not one.
fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    let malformed = || {
        ApiError::bad_request(
            "a WebSocket upgrade needs Connection: Upgrade, Upgrade: websocket, \
             Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key",
        )
    };
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
        || headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(malformed());
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(malformed)?;
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|_| malformed())
}

/// The WebSocket on `io` after the `101` answer: `rest` is what the client sent after its
/// request head (frames it did not wait to send), read first.
pub async fn socket<S>(io: S, rest: Vec<u8>, max_frame: usize) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_partially_read(io, rest, Role::Server, Some(config(max_frame))).await
}

/// Answers an upgrade request that passed [`open`], with its accept value: `101 Switching
/// Protocols`, after which `serve` runs on the socket (holding the connection's admission
/// ticket), or the error response.
pub fn accept<F, Fut>(
    accept: HeaderValue,
    pending: Option<Pending>,
    ticket: Option<Arc<Ticket>>,
    max_frame: usize,
    serve: F,
) -> Response
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(on_upgrade) = pending.and_then(|p| p.0.lock().ok()?.take()) else {
        return reply(&not_upgradable()).into_response();
    };
    tokio::spawn(async move {
        let _ticket = ticket;
        match on_upgrade.await {
            Ok(upgraded) => {
                serve(socket(TokioIo::new(upgraded), Vec::new(), max_frame).await).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let mut resp = Response::new(Default::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_follows_rfc_6455_and_bad_handshakes_are_named() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        // The example of RFC 6455 section 1.3.
        assert_eq!(accept_key(&h).ok().unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(accept_key(&h).err().unwrap().code, "bad_request");
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.remove(header::UPGRADE);
        assert!(accept_key(&h).is_err());
    }
}
