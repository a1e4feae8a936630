//! `{"id","op":"subscribe","channels":[..],"since"?:{"<channel>":<position>}}`.
//!
//! All channel names are checked before any is subscribed, and a channel refused by its
//! publisher drops those the request granted before it: a refused request changes nothing.
//! The result is `{"subscribed":[..],"channels":{"<ch>":{"epoch","seq","resumed"}}}`; each
//! channel's snapshot or replay follows the response.

use super::Outcome;
use crate::error::ApiError;
use crate::subscriptions::parse_cursor;
use crate::ws::Connection;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The op's fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    channels: Vec<String>,
    #[serde(default)]
    since: Map<String, Value>,
}

/// Subscribes every channel, in order, or none.
pub async fn apply(conn: &mut Connection, req: Subscribe) -> Result<Outcome, ApiError> {
    if req.channels.is_empty() {
        return Err(ApiError::bad_request("subscribe: 'channels' is empty"));
    }
    let channels = conn.subs.parse_all(&req.channels)?;
    conn.subs.check_room(&channels)?;
    let mut since = Vec::with_capacity(channels.len());
    for (name, channel) in req.channels.iter().zip(&channels) {
        let cursor = match req
            .since
            .get(name)
            .or_else(|| req.since.get(&channel.name()))
        {
            Some(v) => parse_cursor(v)
                .map_err(|e| ApiError::bad_request(format!("since '{name}': {e}")))?,
            None => None,
        };
        since.push(cursor);
    }
    if let Some(stray) = req.since.keys().find(|k| !req.channels.contains(k)) {
        return Err(ApiError::bad_request(format!(
            "since names '{stray}', which is not in 'channels'"
        )));
    }
    let mut subscribed = Vec::new();
    let mut positions = Map::new();
    let mut frames = Vec::new();
    for granted in conn
        .subs
        .subscribe_all(channels.into_iter().zip(since).collect())
        .await?
    {
        positions.insert(granted.channel.clone(), granted.position);
        subscribed.push(Value::String(granted.channel));
        frames.extend(granted.frames);
    }
    Ok(Outcome {
        result: json!({"subscribed": subscribed, "channels": positions}),
        frames,
    })
}
