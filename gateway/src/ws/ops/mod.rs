//! WebSocket ops (docs/PROTOCOL.md "WebSocket"), one module each: parse the op's fields (unknown
//! fields refused), apply it to the connection, encode the result.

pub mod alert;
pub mod auth;
pub mod chat;
pub mod order;
pub mod ping;
pub mod subscribe;
pub mod unsubscribe;

use super::Connection;
use crate::error::ApiError;
use bourse_cluster::Frame;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::sync::Arc;

/// What an op produced: the response's `result`, then frames to send after the response.
pub struct Outcome {
    pub result: Value,
    pub frames: Vec<Arc<Frame>>,
}

/// Decodes an op's fields (everything but `id` and `op`).
pub fn fields<T: DeserializeOwned>(op: &str, body: Map<String, Value>) -> Result<T, ApiError> {
    crate::body::decode(body).map_err(|e| ApiError::bad_request(format!("{op}: {e}")))
}

/// Runs one op.
pub async fn apply(
    conn: &mut Connection,
    op: &str,
    body: Map<String, Value>,
) -> Result<Outcome, ApiError> {
    match op {
        "subscribe" => subscribe::apply(conn, fields(op, body)?).await,
        "unsubscribe" => unsubscribe::apply(conn, fields(op, body)?),
        "ping" => ping::apply(fields(op, body)?),
        "auth" => auth::apply(conn, fields(op, body)?),
        "order.place" => order::place(conn, fields(op, body)?).await,
        "order.cancel" => order::cancel(conn, fields(op, body)?).await,
        "order.list" => order::list(conn, fields(op, body)?).await,
        "chat.send" => chat::send(conn, fields(op, body)?).await,
        "chat.history" => chat::history(conn, fields(op, body)?).await,
        "alert.create" => alert::create(conn, fields(op, body)?).await,
        "alert.delete" => alert::delete(conn, fields(op, body)?).await,
        "alert.list" => alert::list(conn, fields(op, body)?).await,
        other => Err(ApiError::bad_request(format!("unknown op '{other}'"))),
    }
}
