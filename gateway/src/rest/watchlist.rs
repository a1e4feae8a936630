//! A user's watchlist over REST (docs/PROTOCOL.md "Watchlist"): the symbols a user follows,
//! in the user's order, kept in storage and replaced whole by each `PUT`.

use crate::error::ApiError;
use crate::state::GatewayState;
use bourse_config::is_symbol_shape;
use bourse_storage::{StoreError, Write};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Most symbols one watchlist holds.
pub const MAX_WATCHLIST: usize = 100;

/// `PUT /api/v1/watchlist` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    pub symbols: Vec<String>,
}

fn storage(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "reading or writing a watchlist");
    ApiError::unavailable("watchlist storage is unavailable; retry")
}

fn view(symbols: &[String]) -> Value {
    json!({ "symbols": symbols })
}

/// Checks a new list: every symbol listed, none twice, at most [`MAX_WATCHLIST`].
fn checked(state: &GatewayState, body: PutBody) -> Result<Vec<String>, ApiError> {
    if body.symbols.len() > MAX_WATCHLIST {
        return Err(ApiError::bad_request(format!(
            "a watchlist holds at most {MAX_WATCHLIST} symbols, got {}",
            body.symbols.len()
        )));
    }
    let mut seen = HashSet::new();
    for symbol in &body.symbols {
        if !is_symbol_shape(symbol) {
            return Err(ApiError::bad_request(format!(
                "malformed symbol '{symbol}'"
            )));
        }
        if state.markets.get(symbol).is_none() {
            return Err(ApiError::bad_request(format!("unknown symbol '{symbol}'")));
        }
        if !seen.insert(symbol.as_str()) {
            return Err(ApiError::bad_request(format!(
                "symbol '{symbol}' is listed twice"
            )));
        }
    }
    Ok(body.symbols)
}

/// `GET /api/v1/watchlist` → `{"symbols":[...]}`, without symbols no longer listed.
pub async fn get(state: &GatewayState, user: u64) -> Result<Value, ApiError> {
    let mut symbols = state.store.watchlist(user).await.map_err(storage)?;
    symbols.retain(|s| state.markets.get(s).is_some());
    Ok(view(&symbols))
}

/// `PUT /api/v1/watchlist` → the list as stored, once it is durable.
pub async fn put(state: &GatewayState, user: u64, body: PutBody) -> Result<Value, ApiError> {
    let symbols = checked(state, body)?;
    state
        .store
        .submit(Write::Watchlist {
            user_id: user,
            symbols: symbols.clone(),
        })
        .wait()
        .await
        .map_err(storage)?;
    Ok(view(&symbols))
}
