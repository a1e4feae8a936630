//! `{"id","op":"unsubscribe","channels":[..]}` → `{"unsubscribed":[..]}` (the channels that
//! were held; names not held are ignored, malformed names refused).

use super::Outcome;
use crate::error::ApiError;
use crate::ws::Connection;
use serde::Deserialize;
use serde_json::json;

/// The op's fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unsubscribe {
    channels: Vec<String>,
}

/// Drops the channels.
pub fn apply(conn: &mut Connection, req: Unsubscribe) -> Result<Outcome, ApiError> {
    let channels = conn.subs.parse_all(&req.channels)?;
    let dropped: Vec<String> = channels
        .iter()
        .filter(|c| conn.subs.unsubscribe(&c.name()))
        .map(|c| c.public_name())
        .collect();
    Ok(Outcome::result(json!({"unsubscribed": dropped})))
}
