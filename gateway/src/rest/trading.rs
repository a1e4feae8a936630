//! Trading over REST (docs/PROTOCOL.md "Trading") and the order book snapshot. The WebSocket
//! order ops use the same parsing and the same account requests, so both transports accept
//! and refuse exactly the same orders.
//!
//! An order is checked here against its market before it reaches an account: symbol known,
//! side and type spelled right, price on the tick and above zero (limit only), quantity on
//! the lot, above zero and at most the market's `max_qty`, `post_only` only on limit orders.

use super::market::{limit, market, number, query};
use crate::error::ApiError;
use crate::state::GatewayState;
use bourse_actors::account::{Account, AccountMsg, AccountReply, portfolio, view};
use bourse_actors::book::engine::{Side, TimeInForce};
use bourse_actors::book::{BookEntity, BookMsg, BookReply, MAX_DEPTH};
use bourse_actors::trading::{OrderRequest, check_client_order_id, owner_of};
use bourse_config::{DecimalError, Markets, is_symbol_shape};
use bourse_storage::Interval;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// An order as a client sends it (`POST /api/v1/orders`, WebSocket `order.place`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceBody {
    symbol: String,
    side: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    price: Option<String>,
    qty: String,
    #[serde(default)]
    tif: Option<String>,
    #[serde(default)]
    post_only: Option<bool>,
    #[serde(default)]
    client_order_id: Option<String>,
}

fn decimal(field: &str, e: DecimalError) -> ApiError {
    ApiError::bad_request(match e {
        DecimalError::OffStep { value, step } => {
            format!("{field} '{value}' is not a multiple of the {field} step {step}")
        }
        DecimalError::Negative(v) => format!("{field} '{v}' must not be negative"),
        other => format!("{field}: {other}"),
    })
}

/// Checks an order against its market and converts it to units.
pub fn order_request(markets: &Markets, b: PlaceBody) -> Result<OrderRequest, ApiError> {
    if !is_symbol_shape(&b.symbol) {
        return Err(ApiError::bad_request(format!(
            "malformed symbol '{}'",
            b.symbol
        )));
    }
    let m = markets
        .get(&b.symbol)
        .ok_or_else(|| ApiError::bad_request(format!("unknown symbol '{}'", b.symbol)))?;
    let side = match b.side.as_str() {
        "buy" => Side::Buy,
        "sell" => Side::Sell,
        other => {
            return Err(ApiError::bad_request(format!(
                "side must be 'buy' or 'sell', got '{other}'"
            )));
        }
    };
    let price = match (b.kind.as_str(), &b.price) {
        ("limit", Some(p)) => {
            let units = m.tick.to_units(p).map_err(|e| decimal("price", e))?;
            if units == 0 {
                return Err(ApiError::bad_request("price must be above zero"));
            }
            Some(units)
        }
        ("limit", None) => return Err(ApiError::bad_request("a limit order needs a price")),
        ("market", Some(_)) => {
            return Err(ApiError::bad_request("a market order takes no price"));
        }
        ("market", None) => None,
        (other, _) => {
            return Err(ApiError::bad_request(format!(
                "type must be 'limit' or 'market', got '{other}'"
            )));
        }
    };
    let qty = m.lot.to_units(&b.qty).map_err(|e| decimal("qty", e))?;
    if qty == 0 {
        return Err(ApiError::bad_request("qty must be above zero"));
    }
    if qty > m.max_qty {
        return Err(ApiError::bad_request(format!(
            "qty {} is over the maximum {} for {}",
            b.qty,
            m.lot.format(m.max_qty),
            m.symbol
        )));
    }
    let tif = match b.tif.as_deref() {
        None => TimeInForce::Gtc,
        Some(name) => TimeInForce::parse(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "tif must be 'gtc', 'ioc', 'fok' or 'day', got '{name}'"
            ))
        })?,
    };
    let post_only = b.post_only.unwrap_or(false);
    if post_only && price.is_none() {
        return Err(ApiError::bad_request("post_only needs a limit order"));
    }
    if post_only && !tif.rests() {
        return Err(ApiError::bad_request(
            "post_only orders rest: tif 'gtc' or 'day'",
        ));
    }
    if let Some(c) = &b.client_order_id {
        check_client_order_id(c)?;
    }
    Ok(OrderRequest {
        symbol: b.symbol,
        side,
        price,
        qty,
        tif,
        post_only,
        client_order_id: b.client_order_id,
    })
}

/// An order id from a path or a body: not a number is `bad_request`; someone else's order
/// is `not_found`, exactly like one that does not exist.
pub fn order_id_of(user: u64, raw: &str) -> Result<u64, ApiError> {
    let id: u64 = raw
        .parse()
        .map_err(|_| ApiError::bad_request(format!("malformed order id '{raw}'")))?;
    if owner_of(id) != user {
        return Err(ApiError::not_found(format!("no order {raw}")));
    }
    Ok(id)
}

async fn ask(state: &GatewayState, user: u64, msg: AccountMsg) -> Result<AccountReply, ApiError> {
    match state
        .sharding
        .ask::<Account>(&user.to_string(), msg)
        .await?
    {
        AccountReply::Error(e) => Err(e.into()),
        other => Ok(other),
    }
}

/// Places an order; `(created, order)`: false when a `client_order_id` matched.
pub async fn place(
    state: &GatewayState,
    user: u64,
    body: PlaceBody,
) -> Result<(bool, Value), ApiError> {
    let req = order_request(&state.markets, body)?;
    match ask(state, user, AccountMsg::Place(req)).await? {
        AccountReply::Placed { order, created } => {
            Ok((created, view::order(&state.markets, &order)))
        }
        other => Err(ApiError::wrong_reply("account: place", &other)),
    }
}

/// Cancels an order; answers it with status `cancelled`.
pub async fn cancel(state: &GatewayState, user: u64, raw_id: &str) -> Result<Value, ApiError> {
    let id = order_id_of(user, raw_id)?;
    match ask(state, user, AccountMsg::Cancel(id)).await? {
        AccountReply::Order(o) => Ok(view::order(&state.markets, &o)),
        other => Err(ApiError::wrong_reply("account: cancel", &other)),
    }
}

/// `GET /api/v1/orders/{order_id}`.
pub async fn get(state: &GatewayState, user: u64, raw_id: &str) -> Result<Value, ApiError> {
    let id = order_id_of(user, raw_id)?;
    match ask(state, user, AccountMsg::Get(id)).await? {
        AccountReply::Order(o) => Ok(view::order(&state.markets, &o)),
        other => Err(ApiError::wrong_reply("account: get", &other)),
    }
}

/// `GET /api/v1/orders?symbol=&status=open|done&limit=` (newest first).
pub async fn list(
    state: &GatewayState,
    user: u64,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    query(q, &["symbol", "status", "limit"])?;
    let symbol = q.get("symbol").cloned();
    if let Some(s) = &symbol {
        market(state, s)?;
    }
    let open = match q.get("status").map(String::as_str) {
        None => None,
        Some("open") => Some(true),
        Some("done") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "status must be 'open' or 'done', got '{other}'"
            )));
        }
    };
    let limit = limit(q, 100, 1000)?;
    match ask(state, user, AccountMsg::List { symbol, open }).await? {
        AccountReply::Orders(orders) => Ok(Value::Array(
            orders
                .iter()
                .take(limit)
                .map(|o| view::order(&state.markets, o))
                .collect(),
        )),
        other => Err(ApiError::wrong_reply("account: list", &other)),
    }
}

/// `GET /api/v1/account`.
pub async fn account(state: &GatewayState, user: u64) -> Result<Value, ApiError> {
    match ask(state, user, AccountMsg::Balances).await? {
        AccountReply::Balances(b) => Ok(view::balances(&state.markets, &b)),
        other => Err(ApiError::wrong_reply("account: account", &other)),
    }
}

/// `GET /api/v1/portfolio`: the account's positions valued at each market's last price.
pub async fn portfolio(state: &GatewayState, user: u64) -> Result<Value, ApiError> {
    let holdings = match ask(state, user, AccountMsg::Portfolio).await? {
        AccountReply::Portfolio(holdings) => holdings,
        other => return Err(ApiError::wrong_reply("account: portfolio", &other)),
    };
    let prices =
        bourse_actors::symbol::last_prices(&state.sharding, holdings.positions.keys()).await;
    Ok(portfolio::view(&state.markets, &holdings, &prices))
}

/// The longest range one history request covers: the week the history is kept.
const HISTORY_MAX_MS: i64 = 7 * 86_400_000;

fn history_storage(e: bourse_storage::StoreError) -> ApiError {
    tracing::error!(error = %e, "reading the portfolio's history");
    ApiError::unavailable("portfolio history storage is unavailable; retry")
}

/// `GET /api/v1/portfolio/history?from=&to=` (ms; the last 24 hours by default, a week at
/// most, `to` no later than now): the portfolio's total value at each minute and at `to`,
/// from what the user held then (the account's holdings points) and each market's last
/// closed minute candle (at now: its last price).
pub async fn portfolio_history(
    state: &GatewayState,
    user: u64,
    q: HashMap<String, String>,
) -> Result<Value, ApiError> {
    query(&q, &["from", "to"])?;
    // Nothing is known of the future: `to` stops at now.
    let now = bourse_actors::clock::now_ms();
    let asked_to = number::<i64>(&q, "to")?;
    let to = asked_to.map_or(now, |to| to.min(now));
    let from = number::<i64>(&q, "from")?.unwrap_or(to.saturating_sub(86_400_000).max(0));
    if from < 0 || asked_to.is_some_and(|asked| asked < from) {
        return Err(ApiError::bad_request(
            "'from' and 'to' must be times in ms with 0 <= from <= to",
        ));
    }
    if from > to {
        return Ok(serde_json::json!({ "from": from, "to": to, "points": [] }));
    }
    if to - from > HISTORY_MAX_MS {
        return Err(ApiError::bad_request(
            "'from'..'to' spans at most 7 days (604800000 ms): the history is kept a week",
        ));
    }
    let stored = state
        .store
        .holdings(user, from, to)
        .await
        .map_err(history_storage)?;
    let points: Vec<(i64, portfolio::Holdings)> = stored
        .into_iter()
        .filter_map(|(ts, data)| Some((ts, portfolio::Holdings::decode(user, ts, &data)?)))
        .collect();
    let symbols: BTreeSet<&String> = points
        .iter()
        .flat_map(|(_, h)| h.positions.keys())
        .collect();
    let mut closes = BTreeMap::new();
    for symbol in symbols {
        // The newest candle before `from` prices the first minutes; then every one in range.
        let mut series: Vec<(i64, u64)> = state
            .store
            .candles(symbol, Interval::M1, Some(from), 1)
            .await
            .map_err(history_storage)?
            .iter()
            .map(|c| (c.open_time, c.close))
            .collect();
        let in_range = state
            .store
            .candles_between(symbol, Interval::M1, from, to)
            .await
            .map_err(history_storage)?;
        series.extend(in_range.iter().map(|c| (c.open_time, c.close)));
        closes.insert(symbol.clone(), series);
    }
    // The point at now is valued at the last prices, as the portfolio is.
    let live = match asked_to.is_none_or(|asked| asked >= now) {
        true => Some(bourse_actors::symbol::last_prices(&state.sharding, closes.keys()).await),
        false => None,
    };
    let history = portfolio::history(&state.markets, &points, &closes, (from, to), live.as_ref());
    Ok(serde_json::json!({ "from": from, "to": to, "points": history }))
}

/// `GET /api/v1/book/{symbol}?depth=20` → `{"symbol","seq","bids","asks"}`.
pub async fn book(
    state: Arc<GatewayState>,
    symbol: String,
    q: HashMap<String, String>,
) -> Result<Value, ApiError> {
    query(&q, &["depth"])?;
    let m = market(&state, &symbol)?;
    let depth = number::<usize>(&q, "depth")?.unwrap_or(20);
    if depth == 0 || depth > MAX_DEPTH {
        return Err(ApiError::bad_request(format!(
            "'depth' must be 1..={MAX_DEPTH}"
        )));
    }
    match state
        .sharding
        .ask::<BookEntity>(&symbol, BookMsg::Depth(depth))
        .await?
    {
        BookReply::Depth { seq, bids, asks } => {
            Ok(bourse_actors::book::view::depth(m, seq, &bids, &asks))
        }
        other => Err(ApiError::wrong_reply("book: depth", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bourse_config::Settings;

    fn body(json: &str) -> PlaceBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn good_orders_convert_to_units() {
        let (_, m) = Settings::from_sources("", std::iter::empty()).unwrap();
        let r = order_request(
            &m,
            body(r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","price":"50123000","qty":"0.015","client_order_id":"a1"}"#),
        )
        .unwrap();
        assert_eq!(
            (r.price, r.qty, r.tif),
            (Some(50123), 150, TimeInForce::Gtc)
        );
        let r = order_request(
            &m,
            body(r#"{"symbol":"KRW-BTC","side":"sell","type":"market","qty":"1","tif":"ioc"}"#),
        )
        .unwrap();
        assert_eq!((r.price, r.qty, r.side), (None, 10_000, Side::Sell));
        let r = order_request(
            &m,
            body(r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","price":"1000","qty":"1","tif":"day","post_only":true}"#),
        )
        .unwrap();
        assert_eq!((r.tif, r.post_only), (TimeInForce::Day, true));
    }

    #[test]
    fn every_bad_order_is_a_bad_request() {
        let (_, m) = Settings::from_sources("", std::iter::empty()).unwrap();
        for (json, says) in [
            (
                r#"{"symbol":"KRW-NOPE","side":"buy","type":"limit","price":"1000","qty":"1"}"#,
                "unknown symbol",
            ),
            (
                r#"{"symbol":"krw-btc","side":"buy","type":"limit","price":"1000","qty":"1"}"#,
                "malformed",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","price":"1500","qty":"1"}"#,
                "not a multiple",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","price":"1000","qty":"0.00001"}"#,
                "not a multiple",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","price":"1000","qty":"0"}"#,
                "above zero",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","price":"1000","qty":"-1"}"#,
                "negative",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","price":"0","qty":"1"}"#,
                "above zero",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","price":"1000","qty":"999999999"}"#,
                "maximum",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"market","price":"1000","qty":"1"}"#,
                "no price",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","qty":"1"}"#,
                "needs a price",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"hold","type":"limit","price":"1000","qty":"1"}"#,
                "side",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"stop","price":"1000","qty":"1"}"#,
                "type",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","price":"1000","qty":"1","tif":"week"}"#,
                "tif",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"market","qty":"1","post_only":true}"#,
                "post_only",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","price":"1000","qty":"1","tif":"ioc","post_only":true}"#,
                "post_only",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","price":"1000","qty":"1","client_order_id":""}"#,
                "client_order_id",
            ),
            (
                r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","price":"abc","qty":"1"}"#,
                "price",
            ),
        ] {
            let e = order_request(&m, body(json)).unwrap_err();
            assert_eq!(e.code, "bad_request", "{json}");
            assert!(e.message.contains(says), "{json}: {}", e.message);
        }
        assert!(
            serde_json::from_str::<PlaceBody>(
                r#"{"symbol":"KRW-BTC","side":"buy","type":"limit","qty":"1","bogus":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn foreign_order_ids_are_not_found() {
        let id = bourse_actors::trading::order_id(5, 1);
        assert_eq!(order_id_of(5, &id.to_string()), Ok(id));
        assert_eq!(
            order_id_of(6, &id.to_string()).unwrap_err().code,
            "not_found"
        );
        assert_eq!(order_id_of(5, "x1").unwrap_err().code, "bad_request");
    }
}
