//! WebSocket ops (docs/PROTOCOL.md "WebSocket"), one module each: parse the op's fields (unknown
//! fields refused), apply it to the connection, encode the result.

pub mod alert;
pub mod auth;
pub mod chat;
pub mod order;
pub mod ping;
pub mod subscribe;
pub mod unsubscribe;
pub mod watchlist;

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

impl Outcome {
    /// A result with no frames after it.
    pub fn result(result: Value) -> Outcome {
        Outcome {
            result,
            frames: Vec::new(),
        }
    }
}

/// Decodes an op's fields (everything but `id` and `op`).
pub fn fields<T: DeserializeOwned>(op: &str, body: Map<String, Value>) -> Result<T, ApiError> {
    crate::body::decode(body).map_err(|e| ApiError::bad_request(format!("{op}: {e}")))
}

/// A request's op with its fields decoded, before anything is done with it: everything a
/// client can send is refused here or accepted as one of these.
#[derive(Debug)]
pub enum Op {
    Subscribe(subscribe::Subscribe),
    Unsubscribe(unsubscribe::Unsubscribe),
    Ping(ping::Ping),
    Auth(auth::Auth),
    Place(crate::rest::trading::PlaceBody),
    Cancel(order::Cancel),
    ListOrders(order::List),
    ChatSend(chat::Send),
    ChatHistory(chat::History),
    AlertCreate(crate::rest::alerts::CreateBody),
    AlertDelete(alert::Delete),
    AlertList(alert::List),
    WatchlistGet(watchlist::Get),
    WatchlistSet(crate::rest::watchlist::PutBody),
}

impl Op {
    /// The op named `op` with `body` as its fields (unknown ops and fields refused).
    pub fn decode(op: &str, body: Map<String, Value>) -> Result<Op, ApiError> {
        Ok(match op {
            "subscribe" => Op::Subscribe(fields(op, body)?),
            "unsubscribe" => Op::Unsubscribe(fields(op, body)?),
            "ping" => Op::Ping(fields(op, body)?),
            "auth" => Op::Auth(fields(op, body)?),
            "order.place" => Op::Place(fields(op, body)?),
            "order.cancel" => Op::Cancel(fields(op, body)?),
            "order.list" => Op::ListOrders(fields(op, body)?),
            "chat.send" => Op::ChatSend(fields(op, body)?),
            "chat.history" => Op::ChatHistory(fields(op, body)?),
            "alert.create" => Op::AlertCreate(fields(op, body)?),
            "alert.delete" => Op::AlertDelete(fields(op, body)?),
            "alert.list" => Op::AlertList(fields(op, body)?),
            "watchlist.get" => Op::WatchlistGet(fields(op, body)?),
            "watchlist.set" => Op::WatchlistSet(fields(op, body)?),
            other => return Err(ApiError::bad_request(format!("unknown op '{other}'"))),
        })
    }
}

/// Runs one op.
pub async fn apply(conn: &mut Connection, op: Op) -> Result<Outcome, ApiError> {
    match op {
        Op::Subscribe(req) => subscribe::apply(conn, req).await,
        Op::Unsubscribe(req) => unsubscribe::apply(conn, req),
        Op::Ping(req) => ping::apply(req),
        Op::Auth(req) => auth::apply(conn, req),
        Op::Place(req) => order::place(conn, req).await,
        Op::Cancel(req) => order::cancel(conn, req).await,
        Op::ListOrders(req) => order::list(conn, req).await,
        Op::ChatSend(req) => chat::send(conn, req).await,
        Op::ChatHistory(req) => chat::history(conn, req).await,
        Op::AlertCreate(req) => alert::create(conn, req).await,
        Op::AlertDelete(req) => alert::delete(conn, req).await,
        Op::AlertList(req) => alert::list(conn, req).await,
        Op::WatchlistGet(req) => watchlist::get(conn, req).await,
        Op::WatchlistSet(req) => watchlist::set(conn, req).await,
    }
}
