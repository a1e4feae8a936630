//! Client-facing errors (docs/PROTOCOL.md "REST" error codes): one code, one HTTP status, a
//! message safe to show (never a stack trace or an internal path).

use bourse_actors::trading::Refusal;
use bourse_cluster::AskError;
use bourse_cluster::metrics::registered;
use prometheus::{IntCounterVec, Opts};
use serde_json::{Value, json};
use std::sync::LazyLock;
use warp::http::StatusCode;

/// Every code a client can be answered, with its HTTP status (docs/PROTOCOL.md).
pub const CODES: [(&str, StatusCode); 11] = [
    ("bad_request", StatusCode::BAD_REQUEST),
    ("unauthorized", StatusCode::UNAUTHORIZED),
    ("forbidden", StatusCode::FORBIDDEN),
    ("not_found", StatusCode::NOT_FOUND),
    ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED),
    ("conflict", StatusCode::CONFLICT),
    ("too_large", StatusCode::PAYLOAD_TOO_LARGE),
    ("rate_limited", StatusCode::TOO_MANY_REQUESTS),
    ("insufficient_funds", StatusCode::UNPROCESSABLE_ENTITY),
    ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
    ("internal", StatusCode::INTERNAL_SERVER_ERROR),
];

/// Error answers sent, by code and transport: every refusal a client gets is counted here,
/// whatever turned it away (a limit, a throttle, a bad body, a moving entity).
pub static ANSWERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = registered(IntCounterVec::new(
        Opts::new(
            "bourse_gateway_errors_total",
            "Error answers sent to clients, by code and transport (http: REST and SSE, ws: WebSocket responses)",
        ),
        &["code", "transport"],
    ));
    for (code, _) in CODES {
        for transport in ["http", "ws"] {
            c.with_label_values(&[code, transport]);
        }
    }
    c
});

/// An error as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
    /// Seconds a client should wait before retrying (`Retry-After` on REST).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// The same error, telling the client to retry after `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }
    /// 400: the request is malformed or names something invalid.
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new("bad_request", m)
    }
    /// 401: no valid user token.
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new("unauthorized", m)
    }
    /// 409: taken already (a username), or a state that does not allow the request.
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new("conflict", m)
    }
    /// 422: not enough available balance for the order's hold.
    pub fn insufficient_funds(m: impl Into<String>) -> Self {
        Self::new("insufficient_funds", m)
    }
    /// 403: not allowed (admin token missing or wrong).
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new("forbidden", m)
    }
    /// 404: no such resource.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new("not_found", m)
    }
    /// 405: the path exists, the method does not (the reply names the allowed ones).
    pub fn method_not_allowed(m: impl Into<String>) -> Self {
        Self::new("method_not_allowed", m)
    }
    /// 413: a body or frame over the limit.
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new("too_large", m)
    }
    /// 429: over the request rate.
    pub fn rate_limited(m: impl Into<String>) -> Self {
        Self::new("rate_limited", m)
    }
    /// 503: the entity is moving or restarting; retry.
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new("unavailable", m)
    }
    /// 500: a bug; the details are in the server log, not here.
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new("internal", m)
    }
    /// 500: an entity answered `asked` with a reply that request never gets (a bug on this
    /// node): logged with what it said; the client learns only that it failed.
    pub fn wrong_reply(asked: &str, reply: &dyn std::fmt::Debug) -> Self {
        tracing::error!(asked, ?reply, "an entity answered with the wrong reply");
        Self::internal("internal error")
    }

    /// The HTTP status of the code.
    pub fn status(&self) -> StatusCode {
        CODES
            .iter()
            .find(|(code, _)| *code == self.code)
            .map_or(StatusCode::INTERNAL_SERVER_ERROR, |(_, status)| *status)
    }

    /// `{"code","message"}`.
    pub fn body(&self) -> Value {
        json!({"code": self.code, "message": self.message})
    }

    /// Counts this error as answered over `transport` (`http` or `ws`).
    pub fn counted(&self, transport: &str) -> &Self {
        ANSWERED.with_label_values(&[self.code, transport]).inc();
        self
    }
}

impl From<AskError> for ApiError {
    fn from(e: AskError) -> Self {
        match e {
            AskError::Unavailable(_) | AskError::Timeout(_) => ApiError::unavailable(e.to_string()),
            AskError::Refused(m) => ApiError::bad_request(m),
            AskError::UnknownKind(_) => {
                tracing::error!(error = %e, "routing to an unregistered kind");
                ApiError::internal("internal error")
            }
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(e: Refusal) -> Self {
        match e {
            Refusal::BadRequest(m) => ApiError::bad_request(m),
            Refusal::RateLimited(m) => ApiError::rate_limited(m),
            Refusal::NotFound(m) => ApiError::not_found(m),
            Refusal::Conflict(m) => ApiError::conflict(m),
            Refusal::InsufficientFunds(m) => ApiError::insufficient_funds(m),
            Refusal::Unavailable(m) => ApiError::unavailable(m),
            Refusal::Internal(m) => {
                tracing::error!(error = %m, "trading request failed inside");
                ApiError::internal("internal error")
            }
        }
    }
}

impl warp::reject::Reject for ApiError {}

/// A REST error reply: `{"error":{"code","message"}}` with the code's status, and
/// `Retry-After` when the error carries one.
pub fn reply(e: &ApiError) -> warp::reply::Response {
    use warp::Reply;
    let mut resp = warp::reply::with_status(
        warp::reply::json(&json!({"error": e.counted("http").body()})),
        e.status(),
    )
    .into_response();
    if let Some(secs) = e.retry_after {
        resp.headers_mut()
            .insert(warp::http::header::RETRY_AFTER, secs.into());
    }
    resp
}
