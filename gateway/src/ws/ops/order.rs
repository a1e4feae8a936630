//! `order.place`, `order.cancel`, `order.list`: the REST trading bodies over WebSocket
//! (docs/PROTOCOL.md), for a logged-in connection. The result is the order (or the list); a
//! repeated `client_order_id` answers the original order with `"created": false`.

use super::Outcome;
use crate::error::ApiError;
use crate::rest::trading::{self, PlaceBody};
use crate::ws::Connection;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// `order.cancel` fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    order_id: String,
}

/// `order.list` fields (the REST query parameters).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    #[serde(default)]
    symbol: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// Places an order.
pub async fn place(conn: &mut Connection, body: PlaceBody) -> Result<Outcome, ApiError> {
    let user = conn.user()?;
    let (created, mut order) = trading::place(&conn.state, user, body).await?;
    if let Value::Object(o) = &mut order {
        o.insert("created".into(), Value::Bool(created));
    }
    Ok(Outcome::result(order))
}

/// Cancels an order.
pub async fn cancel(conn: &mut Connection, req: Cancel) -> Result<Outcome, ApiError> {
    let user = conn.user()?;
    Ok(Outcome::result(
        trading::cancel(&conn.state, user, &req.order_id).await?,
    ))
}

/// Lists the user's orders.
pub async fn list(conn: &mut Connection, req: List) -> Result<Outcome, ApiError> {
    let user = conn.user()?;
    let mut q = HashMap::new();
    if let Some(s) = req.symbol {
        q.insert("symbol".to_string(), s);
    }
    if let Some(s) = req.status {
        q.insert("status".to_string(), s);
    }
    if let Some(l) = req.limit {
        q.insert("limit".to_string(), l.to_string());
    }
    Ok(Outcome::result(trading::list(&conn.state, user, &q).await?))
}
