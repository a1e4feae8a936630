//! How an account looks on the wire (docs/PROTOCOL.md "Trading"): orders and balances with every
//! amount a decimal string through the market's or the asset's step.

use super::ledger::{Balance, OrderRecord};
use crate::book::engine::Side;
use bourse_config::{Markets, Step};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Extra decimal places an average price carries beyond the tick.
const AVG_EXTRA_DIGITS: i8 = 8;

/// An order: the REST body, the WebSocket result and the `orders` event data.
pub fn order(markets: &Markets, o: &OrderRecord) -> Value {
    let Some(m) = markets.get(&o.symbol) else {
        return json!({"order_id": o.order_id.to_string(), "symbol": o.symbol});
    };
    let avg = if o.state.filled == 0 {
        "0".to_string()
    } else {
        // cost / filled ticks, exact to 8 more places, rounded down.
        let scale = 10u128.pow(AVG_EXTRA_DIGITS as u32);
        let scaled = o.state.cost * scale / u128::from(o.state.filled);
        match Step::from_exp(m.tick.exp() - AVG_EXTRA_DIGITS) {
            Some(step) => step.format_wide(scaled),
            None => m
                .tick
                .format_wide(o.state.cost / u128::from(o.state.filled)),
        }
    };
    json!({
        "order_id": o.order_id.to_string(),
        "client_order_id": o.client_order_id,
        "symbol": o.symbol,
        "side": match o.side { Side::Buy => "buy", Side::Sell => "sell" },
        "type": if o.price.is_some() { "limit" } else { "market" },
        "price": o.price.map(|p| m.tick.format(p)),
        "qty": m.lot.format(o.qty),
        "tif": o.tif.as_str(),
        "post_only": o.post_only,
        "status": o.state.status.as_str(),
        "filled_qty": m.lot.format(o.state.filled),
        "avg_price": avg,
        "created_at": o.created_at,
        "updated_at": o.updated_at,
    })
}

/// `GET /api/v1/account`: `{"balances":{"KRW":{"available","held"},..}}`.
pub fn balances(markets: &Markets, balances: &BTreeMap<String, Balance>) -> Value {
    let mut out = Map::new();
    for (asset, b) in balances {
        // Every balance's asset is traded somewhere (grants are validated against markets).
        let Some(step) = markets.asset(asset) else {
            continue;
        };
        out.insert(
            asset.clone(),
            json!({"available": step.format_wide(b.available), "held": step.format_wide(b.held)}),
        );
    }
    json!({ "balances": out })
}
