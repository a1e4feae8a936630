//! How a symbol's state looks on the wire (docs/PROTOCOL.md "Channels" and "Market data"): the
//! same functions build stream event data and REST bodies, so the two never disagree.
//! Integers in ticks and lots go out as decimal strings through the market's steps.

use super::ticker::TickerStats;
use bourse_config::Market;
use bourse_storage::{Candle, Tick};
use serde_json::{Value, json};

/// `ticker:S` event data and `GET /api/v1/ticker/{symbol}`.
pub fn ticker(market: &Market, s: &TickerStats) -> Value {
    let tick = market.tick;
    json!({
        "symbol": market.symbol,
        "last": tick.format(s.last),
        "open_24h": tick.format(s.open_24h),
        "high_24h": tick.format(s.high_24h),
        "low_24h": tick.format(s.low_24h),
        "volume_24h": market.lot.format(s.volume_24h),
        "change_24h": tick.format_signed(i128::from(s.last) - i128::from(s.open_24h)),
        "ts": s.last_ts,
    })
}

/// `trades:S` event data and one element of `GET /api/v1/trades/{symbol}`.
pub fn trade(market: &Market, t: &Tick) -> Value {
    json!({
        "trade_id": t.trade_id.to_string(),
        "price": market.tick.format(t.price),
        "qty": market.lot.format(t.qty),
        "side": t.side.as_str(),
        "ts": t.ts,
    })
}

/// `candles:S:I` event data and one element of `GET /api/v1/candles/{symbol}`.
pub fn candle(market: &Market, c: &Candle, closed: bool) -> Value {
    json!({
        "open_time": c.open_time,
        "open": market.tick.format(c.open),
        "high": market.tick.format(c.high),
        "low": market.tick.format(c.low),
        "close": market.tick.format(c.close),
        "volume": market.lot.format(c.volume),
        "closed": closed,
    })
}
