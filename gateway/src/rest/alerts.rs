//! Price alerts and the notification inbox over REST (docs/PROTOCOL.md "Alerts"); the WebSocket
//! `alert.*` ops use these same functions.
//!
//! Rules are created by their symbol (which arms them) and deleted by their own entity;
//! lists, history and the inbox are read from storage, where every change is durable
//! before it is acknowledged.

use super::market::{limit, number, query};
use crate::error::ApiError;
use crate::state::GatewayState;
use bourse_actors::account::{Account, AccountMsg, AccountReply};
use bourse_actors::alert::{self, Alert, AlertMsg, AlertReply, MAX_COOLDOWN_S, NewAlert};
use bourse_config::is_symbol_shape;
use bourse_storage::{AlertStatus, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The cooldown of a repeating rule when the body names none.
pub const DEFAULT_COOLDOWN_S: u32 = 60;
/// Most firings one history page returns.
pub const MAX_HISTORY_PAGE: usize = 200;
/// Most inbox entries one page returns.
pub const MAX_INBOX_PAGE: usize = 500;

/// `POST /api/v1/alerts` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub symbol: String,
    pub condition: String,
    pub value: String,
    #[serde(default)]
    pub repeat: bool,
    #[serde(default)]
    pub cooldown_s: Option<u32>,
}

fn storage(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "reading alerts or notifications");
    ApiError::unavailable("alert storage is unavailable; retry")
}

/// Checks a new rule; the error is the client's `bad_request` message.
pub fn new_alert(state: &GatewayState, user: u64, b: &CreateBody) -> Result<NewAlert, ApiError> {
    if !is_symbol_shape(&b.symbol) {
        return Err(ApiError::bad_request(format!(
            "malformed symbol '{}'",
            b.symbol
        )));
    }
    let market = state
        .markets
        .get(&b.symbol)
        .ok_or_else(|| ApiError::bad_request(format!("unknown symbol '{}'", b.symbol)))?;
    let condition =
        alert::parse_condition(market, &b.condition, &b.value).map_err(ApiError::bad_request)?;
    let cooldown_s = b.cooldown_s.unwrap_or(DEFAULT_COOLDOWN_S);
    if !(1..=MAX_COOLDOWN_S).contains(&cooldown_s) {
        return Err(ApiError::bad_request(format!(
            "cooldown_s must be 1..={MAX_COOLDOWN_S}"
        )));
    }
    Ok(NewAlert {
        user_id: user,
        condition,
        repeat: b.repeat,
        cooldown_s,
    })
}

/// `POST /api/v1/alerts` → `201` the rule, armed.
pub async fn create(state: &GatewayState, user: u64, body: CreateBody) -> Result<Value, ApiError> {
    let new = new_alert(state, user, &body)?;
    let msg = AccountMsg::CreateAlert {
        symbol: body.symbol,
        alert: new,
        max: state.max_alerts_per_user,
    };
    match state
        .sharding
        .ask::<Account>(&user.to_string(), msg)
        .await?
    {
        AccountReply::AlertCreated(r) => Ok(alert::view(&state.markets, &r)),
        AccountReply::Error(e) => Err(e.into()),
        other => Err(ApiError::wrong_reply("account: create an alert", &other)),
    }
}

/// `GET /api/v1/alerts` → the user's rules that are not deleted, oldest first.
pub async fn list(state: &GatewayState, user: u64) -> Result<Value, ApiError> {
    let rules = state.store.alerts_of(user).await.map_err(storage)?;
    Ok(Value::Array(
        rules
            .iter()
            .map(|r| alert::view(&state.markets, r))
            .collect(),
    ))
}

/// `DELETE /api/v1/alerts/{alert_id}` → the rule, `deleted`. Someone else's rule, or one
/// already deleted, is `not_found`.
pub async fn delete(state: &GatewayState, user: u64, raw: &str) -> Result<Value, ApiError> {
    let not_found = || ApiError::not_found(format!("no alert '{raw}'"));
    let id: u64 = raw.parse().map_err(|_| not_found())?;
    // Checked against storage first, so a stranger's or made-up id never starts an entity.
    match state.store.alert(id).await.map_err(storage)? {
        Some(r) if r.user_id == user && r.status != AlertStatus::Deleted => {}
        _ => return Err(not_found()),
    }
    match state
        .sharding
        .ask::<Alert>(&id.to_string(), AlertMsg::Delete { user_id: user })
        .await?
    {
        AlertReply::Rule(r) => Ok(alert::view(&state.markets, &r)),
        AlertReply::Error(e) => Err(e.into()),
        other @ AlertReply::Rearm(_) => Err(ApiError::wrong_reply("alert: delete", &other)),
    }
}

/// `GET /api/v1/alerts/history?limit=50` → the user's firings, newest first.
pub async fn history(
    state: &GatewayState,
    user: u64,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    query(q, &["limit"])?;
    let limit = limit(q, 50, MAX_HISTORY_PAGE)?;
    let firings = state
        .store
        .alert_history(user, limit)
        .await
        .map_err(storage)?;
    Ok(Value::Array(
        firings
            .iter()
            .map(|f| alert::firing_view(&state.markets, f))
            .collect(),
    ))
}

/// `GET /api/v1/notifications?since=<ts>&limit=100` → inbox entries after `since`, oldest
/// first: `{"key","kind","ts","data"}`. A page never ends inside a millisecond, so the
/// next page asks `since` the last entry's `ts`.
pub async fn notifications(
    state: &GatewayState,
    user: u64,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    query(q, &["since", "limit"])?;
    let since = number::<i64>(q, "since")?.unwrap_or(0);
    let limit = limit(q, 100, MAX_INBOX_PAGE)?;
    let entries = state
        .store
        .notifications(user, since, limit)
        .await
        .map_err(storage)?;
    Ok(Value::Array(
        entries
            .into_iter()
            .map(|n| {
                let data = serde_json::from_str::<Value>(&n.body).unwrap_or(Value::Null);
                json!({"key": n.key, "kind": n.kind, "ts": n.ts, "data": data})
            })
            .collect(),
    ))
}
