//! Chat over REST (docs/PROTOCOL.md "Chat"): history (public) and posting (auth). WebSocket
//! `chat.send` and `chat.history` use these same functions.

use super::market::{limit, query};
use crate::error::ApiError;
use crate::state::GatewayState;
use bourse_actors::room::{self, MAX_PAGE, Room, RoomMsg, RoomReply};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// A post body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostBody {
    pub text: String,
}

fn known(state: &GatewayState, room: &str) -> Result<(), ApiError> {
    if room::exists(&state.markets, room) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("unknown room '{room}'")))
    }
}

/// `GET /api/v1/chat/{room}/messages?before=<message_id>&limit=50` (newest first, ≤ 200).
pub async fn history(
    state: &GatewayState,
    room: &str,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    query(q, &["before", "limit"])?;
    known(state, room)?;
    let before = q
        .get("before")
        .map(|b| {
            b.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("malformed message id '{b}'")))
        })
        .transpose()?;
    let limit = limit(q, 50, MAX_PAGE)?;
    let page = state
        .store
        .chat_history(room, before, limit)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "reading chat history");
            ApiError::unavailable("chat storage is unavailable; retry")
        })?;
    Ok(Value::Array(page.iter().map(room::view).collect()))
}

/// `POST /api/v1/chat/{room}/messages {"text"}` → the stored message.
pub async fn post(
    state: &GatewayState,
    user: (u64, String),
    room: &str,
    body: PostBody,
) -> Result<Value, ApiError> {
    known(state, room)?;
    let text = room::text::clean(&body.text).map_err(ApiError::bad_request)?;
    // The room counts a user's messages in it; this counts them over every room.
    state
        .chat_per_user
        .check(&user.0.to_string())
        .await
        .map_err(|w| crate::auth::throttled("chat_user", "chat messages from this user", w))?;
    let msg = RoomMsg::Send {
        user_id: user.0,
        username: user.1,
        text,
    };
    match state.sharding.ask::<Room>(room, msg).await? {
        RoomReply::Sent(m) => Ok(room::view(&m)),
        RoomReply::Error(e) => Err(e.into()),
        other => Err(ApiError::wrong_reply("room: post", &other)),
    }
}
