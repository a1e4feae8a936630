//! How a book looks on the wire (docs/PROTOCOL.md `book:S` and `GET /api/v1/book`): levels as
//! `[price, qty]` decimal strings, best first.

use super::engine::Side;
use bourse_config::Market;
use serde_json::{Value, json};

fn levels(market: &Market, levels: &[(u64, u64)]) -> Vec<Value> {
    levels
        .iter()
        .map(|(p, q)| json!([market.tick.format(*p), market.lot.format(*q)]))
        .collect()
}

/// The first `book:S` event: the top levels of each side.
pub fn snapshot(market: &Market, bids: &[(u64, u64)], asks: &[(u64, u64)]) -> Value {
    json!({"type": "snapshot", "bids": levels(market, bids), "asks": levels(market, asks)})
}

/// A `book:S` delta: each changed level with its new absolute quantity (`"0"` deletes it).
pub fn delta(market: &Market, changed: &[(Side, u64, u64)]) -> Value {
    let side = |s: Side| -> Vec<Value> {
        changed
            .iter()
            .filter(|(side, _, _)| *side == s)
            .map(|(_, p, q)| json!([market.tick.format(*p), market.lot.format(*q)]))
            .collect()
    };
    json!({"type": "delta", "bids": side(Side::Buy), "asks": side(Side::Sell)})
}

/// `GET /api/v1/book/{symbol}`.
pub fn depth(market: &Market, seq: u64, bids: &[(u64, u64)], asks: &[(u64, u64)]) -> Value {
    json!({
        "symbol": market.symbol,
        "seq": seq,
        "bids": levels(market, bids),
        "asks": levels(market, asks),
    })
}
