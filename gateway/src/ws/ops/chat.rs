//! `chat.send {room, text}` (logged in) → the stored message; `chat.history {room,
//! before?, limit?}` → a page, newest first. The REST bodies and rules.

use super::Outcome;
use crate::error::ApiError;
use crate::rest::chat::{self, PostBody};
use crate::ws::Connection;
use serde::Deserialize;
use std::collections::HashMap;

/// `chat.send` fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Send {
    room: String,
    text: String,
}

/// `chat.history` fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    room: String,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// Posts a message.
pub async fn send(conn: &mut Connection, req: Send) -> Result<Outcome, ApiError> {
    let user = conn.user()?;
    let name = conn.subs.username().unwrap_or_default().to_string();
    let result = chat::post(
        &conn.state,
        (user, name),
        &req.room,
        PostBody { text: req.text },
    )
    .await?;
    Ok(Outcome::result(result))
}

/// Reads a history page.
pub async fn history(conn: &mut Connection, req: History) -> Result<Outcome, ApiError> {
    let mut q = HashMap::new();
    if let Some(b) = req.before {
        q.insert("before".to_string(), b);
    }
    if let Some(l) = req.limit {
        q.insert("limit".to_string(), l.to_string());
    }
    Ok(Outcome::result(
        chat::history(&conn.state, &req.room, &q).await?,
    ))
}
