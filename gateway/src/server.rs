//! The HTTP server under the routes: our own accept loop over hyper, so the limits a hostile
//! client probes are ours to set and answer in the protocol's words.
//!
//! - The request head must arrive within `gateway.header_read_timeout_s` of the connection
//!   opening or of the previous response (slow-header clients and idle keep-alive
//!   connections are closed alike).
//! - Before any handler: a URI over 8 KiB is `414`, more than 100 headers or 16 KiB of them
//!   `431`, an unknown path `404`, a wrong method `405` with `Allow` (routes.rs), all with
//!   the JSON error body; `HEAD` is answered as `GET` without the body.
//! - A connection over `gateway.max_connections` or `gateway.max_connections_per_ip`
//!   (admission.rs) is answered `503 unavailable` with `Retry-After` and closed; past
//!   `REFUSING` such answers in flight, further ones are closed without an answer.
//! - A connection that fails on the client's side (aborted mid-request, header timeout,
//!   garbage) is a client fault: logged at DEBUG and counted in
//!   `bourse_gateway_client_errors_total{kind}`, never an ERROR line a client can flood.

use crate::admission::{Admission, Refused};
use crate::direct::First;
use crate::error::{ApiError, reply};
use crate::routes::{self, Lookup};
use crate::state::GatewayState;
use bourse_cluster::metrics::registered;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::{IntCounterVec, Opts};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tower_service::Service;
use warp::Reply;
use warp::http::{HeaderValue, Method, Request, StatusCode, header};
use warp::reply::Response;

/// A WebSocket or SSE client whose socket accepts nothing for this long is dropped: a
/// consumer that never reads must not pin its connection forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection the server closes is still read, so that its close is no reset.
const LINGER: Duration = Duration::from_secs(1);

/// Closes a connection the server ends (after its last answer or Close frame): sends FIN,
/// then reads and drops what the client still sends for up to [`LINGER`]. A socket closed
/// with unread bytes is reset, and a reset can destroy the last answer before the client
/// reads it (RFC 9112 section 9.6; RFC 6455 section 7.1.1 has the server close the TCP
/// connection after the closing handshake).
pub async fn close_gently<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Longest request target (path and query), bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most request headers.
pub const MAX_HEADERS: usize = 100;
/// Largest total size of the request headers (names and values), bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refusals (503 answers to connections over a limit) in flight at once; past it a
/// refused connection is closed unanswered, so a flood costs no more than this.
const REFUSING: usize = 1024;

/// How long a refused connection has to send its request head before it is closed.
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The client's address, put into every request for the handlers (login throttling).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Connections that ended with a client-side fault, by kind.
pub static CLIENT_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "bourse_gateway_client_errors_total",
            "HTTP connections ended by a client fault: header_timeout, incomplete, malformed, too_large, io",
        ),
        &["kind"],
    ))
});

/// What a failed connection says about its client.
fn client_fault(e: &(dyn std::error::Error + 'static)) -> &'static str {
    match e.downcast_ref::<hyper::Error>() {
        Some(h) if h.is_timeout() => "header_timeout",
        Some(h) if h.is_incomplete_message() => "incomplete",
        Some(h) if h.is_parse_too_large() => "too_large",
        Some(h) if h.is_parse() => "malformed",
        _ => "io",
    }
}

fn error_response(status: StatusCode, e: ApiError) -> Response {
    let mut resp = reply(&e).into_response();
    *resp.status_mut() = status;
    resp
}

/// The answer owed to a request head over the limits (414 for the target, 431 for the
/// headers), for hyper's path here and the direct stream path (direct.rs) alike.
pub fn head_over_limits(
    target_bytes: usize,
    headers: usize,
    header_bytes: usize,
) -> Option<(StatusCode, ApiError)> {
    if target_bytes > MAX_URI_BYTES {
        return Some((
            StatusCode::URI_TOO_LONG,
            ApiError::too_large(format!("request target over {MAX_URI_BYTES} bytes")),
        ));
    }
    if headers > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Some(headers_too_large());
    }
    None
}

/// The answer to a header section over [`MAX_HEADERS`] fields or [`MAX_HEADER_BYTES`]:
/// `431`, for a parser that stops before it can count them all too.
pub fn headers_too_large() -> (StatusCode, ApiError) {
    (
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ApiError::too_large(format!(
            "request headers over {MAX_HEADERS} fields or {MAX_HEADER_BYTES} bytes"
        )),
    )
}

/// The checks every request passes before the routes see it (see the module doc): the
/// answer to a request that fails one.
fn refusal(req: &Request<Incoming>, cors: bool) -> Option<Response> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if let Some((status, e)) = head_over_limits(target, req.headers().len(), header_bytes) {
        return Some(error_response(status, e));
    }
    match routes::lookup(req.method(), req.uri().path()) {
        Lookup::Found => None,
        Lookup::Missing => Some(reply(&ApiError::not_found("no such route")).into_response()),
        // A CORS preflight goes to the CORS filter.
        Lookup::WrongMethod(_) if cors && req.method() == Method::OPTIONS => None,
        Lookup::WrongMethod(allowed) => {
            let allow = allowed.join(", ");
            let mut resp = reply(&ApiError::method_not_allowed(format!(
                "{} is not served here; allowed: {allow}",
                req.method()
            )))
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            Some(resp)
        }
    }
}

/// The answer to every request on a connection over a limit.
fn over_limit(limit: Refused) -> Response {
    let e = ApiError::unavailable(format!(
        "too many connections ({} limit); retry later",
        limit.label().replace('_', "-")
    ))
    .retry_after(1);
    let mut resp = reply(&e).into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Answers connections over a limit: `503` and close, at most `REFUSING` at a time (more
/// are closed unanswered), each given `REFUSAL_READ_TIMEOUT` to send its request.
struct Refuser {
    builder: auto::Builder<TokioExecutor>,
    in_flight: AtomicUsize,
}

impl Refuser {
    fn new() -> Refuser {
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(REFUSAL_READ_TIMEOUT)
            .keep_alive(false);
        Refuser {
            builder,
            in_flight: AtomicUsize::new(0),
        }
    }

    fn refuse(self: &Arc<Self>, stream: tokio::net::TcpStream, limit: Refused) {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= REFUSING {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let conn = self
            .builder
            .serve_connection(
                TokioIo::new(stream),
                hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<Response, Infallible>(over_limit(limit))
                }),
            )
            .into_owned();
        let this = self.clone();
        tokio::spawn(async move {
            let _ = conn.await;
            this.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Serves `filter` on `listener` until `stop` resolves, then stops accepting and waits for
/// open connections to finish (WebSockets close themselves on the same signal). With
/// `direct`, a connection that opens with `GET /sse` or `GET /ws` is served by direct.rs.
pub async fn run<F>(
    filter: F,
    listener: tokio::net::TcpListener,
    admission: Arc<Admission>,
    direct: Option<Arc<GatewayState>>,
    header_read_timeout: Duration,
    cors: bool,
    stop: impl std::future::Future<Output = ()>,
) where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    let service = warp::service(filter);
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        // hyper's own limits sit above ours, so ours answer with the JSON body.
        .max_headers(MAX_HEADERS * 2);
    let refuser = Arc::new(Refuser::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, typically: wait for some to close.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let ticket = match admission.admit(addr.ip()) {
            Ok(ticket) => ticket,
            Err(limit) => {
                refuser.refuse(stream, limit);
                continue;
            }
        };
        let service = service.clone();
        let (builder, watcher, direct) = (builder.clone(), graceful.watcher(), direct.clone());
        let (admission, refuser) = (admission.clone(), refuser.clone());
        tokio::spawn(async move {
            // The cluster-wide count, where Redis keeps one. Boxed: the connection's task
            // keeps no room for a Redis round trip while it serves.
            if let Err(limit) = Box::pin(admission.claim(&ticket)).await {
                return refuser.refuse(stream, limit);
            }
            if let Some(state) = direct {
                let mut stopping = state.shutdown.clone();
                let first = tokio::select! {
                    first = crate::direct::first_request(&stream, header_read_timeout) => first,
                    // A stopping node waits for no request that has not started.
                    _ = stopping.wait_for(|stop| *stop) => return,
                };
                // Each way of serving boxed, so that the task holding a connection for
                // hours is sized for the way it took, not the largest.
                match first {
                    Some(First::Sse) => {
                        return Box::pin(crate::direct::serve_sse(stream, state, ticket)).await;
                    }
                    Some(First::Ws) => {
                        return Box::pin(crate::direct::serve_ws(stream, state, ticket)).await;
                    }
                    Some(First::Other) => {}
                    None => {
                        CLIENT_ERRORS.with_label_values(&["header_timeout"]).inc();
                        return;
                    }
                }
            }
            let guarded = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let mut service = service.clone();
                let ticket = ticket.clone();
                async move {
                    if let Some(resp) = refusal(&req, cors) {
                        return Ok::<Response, Infallible>(resp);
                    }
                    if req.method() == Method::HEAD {
                        // hyper knows the request was HEAD and sends no body.
                        *req.method_mut() = Method::GET;
                    }
                    if req.uri().path() == "/ws" {
                        crate::ws::upgrade::take(&mut req);
                    }
                    req.extensions_mut().insert(ClientAddr(addr));
                    req.extensions_mut().insert(ticket);
                    // Boxed, so the connection keeps no room for the routes' largest future
                    // while it streams a response or waits for its next request.
                    Box::pin(service.call(req)).await
                }
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), guarded)
                .into_owned();
            if let Err(e) = Box::pin(watcher.watch(conn)).await {
                let kind = client_fault(&*e);
                CLIENT_ERRORS.with_label_values(&[kind]).inc();
                tracing::debug!(error = %e, %addr, kind, "connection ended by a client fault");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    // WebSocket and SSE connections outlive hyper's; each closes itself on the same signal
    // (WebSocket with 1001), bounded by its write timeout.
    admission.all_closed().await;
}
