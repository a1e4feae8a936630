//! Market data over REST (docs/PROTOCOL.md "Market data"): symbols, ticker, trades, candles.

use crate::error::ApiError;
use crate::state::GatewayState;
use bourse_actors::symbol::{Symbol, SymbolMsg, SymbolReply, view};
use bourse_config::{Market, is_symbol_shape};
use bourse_storage::Interval;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Parses `?k=v` against the allowed keys; unknown keys are refused.
pub fn query(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(format!(
            "unknown query parameter '{k}' (allowed: {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

pub fn number<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    key: &str,
) -> Result<Option<T>, ApiError> {
    q.get(key)
        .map(|v| {
            v.parse().map_err(|_| {
                ApiError::bad_request(format!("'{key}' must be an integer, got '{v}'"))
            })
        })
        .transpose()
}

pub fn limit(q: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, ApiError> {
    let l = number::<usize>(q, "limit")?.unwrap_or(default);
    if l == 0 || l > max {
        return Err(ApiError::bad_request(format!("'limit' must be 1..={max}")));
    }
    Ok(l)
}

/// The market for a path symbol: `bad_request` if malformed, `not_found` if not listed.
pub fn market<'a>(state: &'a GatewayState, symbol: &str) -> Result<&'a Market, ApiError> {
    if !is_symbol_shape(symbol) {
        return Err(ApiError::bad_request(format!(
            "malformed symbol '{symbol}'"
        )));
    }
    state
        .markets
        .get(symbol)
        .ok_or_else(|| ApiError::not_found(format!("unknown symbol '{symbol}'")))
}

/// Longest `q` of a symbol search: longer than any symbol.
pub const MAX_SEARCH: usize = 32;

/// `GET /api/v1/symbols?q=`: every market, or those whose symbol, base or quote contains
/// `q`, best match first (`Markets::search`).
pub fn symbols(state: &GatewayState, q: &HashMap<String, String>) -> Result<Value, ApiError> {
    query(q, &["q"])?;
    let wanted = q.get("q").map(String::as_str).unwrap_or_default();
    if wanted.chars().count() > MAX_SEARCH {
        return Err(ApiError::bad_request(format!(
            "'q' must be at most {MAX_SEARCH} characters"
        )));
    }
    let now = bourse_actors::clock::now_ms();
    Ok(Value::Array(
        state
            .markets
            .search(wanted)
            .into_iter()
            .map(|m| {
                json!({"symbol": m.symbol, "base": m.base, "quote": m.quote,
                       "tick_size": m.tick.to_string(), "lot_size": m.lot.to_string(),
                       "venue": m.venue.as_str(), "session": session(m, now)})
            })
            .collect(),
    ))
}

/// A market's trading session at `now`: `{"hours","open","next_open","next_close"}`, all
/// null but `open: true` for a market that always trades.
fn session(m: &Market, now: i64) -> Value {
    match &m.hours {
        None => json!({"hours": null, "open": true, "next_open": null, "next_close": null}),
        Some((name, h)) => {
            let open = h.is_open(now);
            json!({
                "hours": name,
                "open": open,
                "next_open": if open { None } else { h.next_open(now) },
                "next_close": if open { h.next_close(now) } else { None },
            })
        }
    }
}

/// `GET /api/v1/ticker/{symbol}`
pub async fn ticker(
    state: Arc<GatewayState>,
    symbol: String,
    q: HashMap<String, String>,
) -> Result<Value, ApiError> {
    query(&q, &[])?;
    let m = market(&state, &symbol)?;
    if let Some(cached) = state.ticker_cache.get(&symbol).await {
        return Ok(cached);
    }
    match state
        .sharding
        .ask::<Symbol>(&symbol, SymbolMsg::Ticker)
        .await?
    {
        SymbolReply::Ticker(t) => {
            let ticker = view::ticker(m, &t);
            state.ticker_cache.put(&symbol, &ticker).await;
            Ok(ticker)
        }
        other => Err(ApiError::wrong_reply("symbol", &other)),
    }
}

/// `GET /api/v1/trades/{symbol}?limit=100` (newest first, ≤ 1000).
pub async fn trades(
    state: Arc<GatewayState>,
    symbol: String,
    q: HashMap<String, String>,
) -> Result<Value, ApiError> {
    query(&q, &["limit"])?;
    let m = market(&state, &symbol)?;
    let limit = limit(&q, 100, bourse_actors::symbol::RECENT_TRADES)?;
    match state
        .sharding
        .ask::<Symbol>(&symbol, SymbolMsg::RecentTrades { limit })
        .await?
    {
        SymbolReply::Trades(t) => Ok(Value::Array(t.iter().map(|t| view::trade(m, t)).collect())),
        other => Err(ApiError::wrong_reply("symbol", &other)),
    }
}

/// `GET /api/v1/candles/{symbol}?interval=1m&limit=200&end=<ts>` (oldest first, ≤ 1000;
/// the open candle is included when `end` is absent). `end` is exclusive: candles that
/// open before it.
pub async fn candles(
    state: Arc<GatewayState>,
    symbol: String,
    q: HashMap<String, String>,
) -> Result<Value, ApiError> {
    query(&q, &["interval", "limit", "end"])?;
    let m = market(&state, &symbol)?;
    let interval = match q.get("interval") {
        None => Interval::M1,
        Some(i) => Interval::parse(i).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown interval '{i}' (1s 1m 3m 5m 15m 30m 1h 4h 1d 1w)"
            ))
        })?,
    };
    let limit = limit(&q, 200, 1000)?;
    let end = number::<i64>(&q, "end")?;
    let mut out: Vec<Value> = Vec::new();
    let open = if end.is_none() {
        match state
            .sharding
            .ask::<Symbol>(&symbol, SymbolMsg::OpenCandle(interval))
            .await?
        {
            SymbolReply::OpenCandle(c) => c,
            other => return Err(ApiError::wrong_reply("symbol", &other)),
        }
    } else {
        None
    };
    let closed = state
        .store
        .candles(&symbol, interval, end, limit)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "reading candles");
            ApiError::unavailable("candle storage is unavailable; retry")
        })?;
    let last_closed = closed.last().map(|c| c.open_time);
    out.extend(closed.iter().map(|c| view::candle(m, c, true)));
    if let Some(c) = open.filter(|c| last_closed.is_none_or(|t| c.open_time > t)) {
        out.push(view::candle(m, &c, false));
    }
    let excess = out.len().saturating_sub(limit);
    out.drain(..excess);
    Ok(Value::Array(out))
}
