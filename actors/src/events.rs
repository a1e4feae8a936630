//! What each entity writes to the outbox for the Kafka event relay (docs/OPERATIONS.md
//! "Event log"), beside the write it describes: the event exists exactly when that write
//! does. Each id is stable (derived from what storage holds), so a consumer deduplicates a
//! relay's repeats by id. The data is the entity's public view where it has one.

use crate::book::state::{Fill, Outcome};
use crate::trading::OrderState;
use bourse_config::Market;
use bourse_storage::{AlertFiring, ChatMessage, OutboxEvent, Tick};
use serde_json::{Value, json};

fn event(id: String, kind: &str, key: String, ts: i64, data: String) -> OutboxEvent {
    OutboxEvent {
        id,
        kind: kind.into(),
        key,
        ts,
        data,
    }
}

/// A symbol's trade (`trade:S:<trade_id>`): `shown`, its `trades:S` event, and `symbol`.
pub fn trade(market: &Market, t: &Tick, mut shown: Value) -> OutboxEvent {
    shown["symbol"] = json!(market.symbol);
    event(
        format!("trade:{}:{}", market.symbol, t.trade_id),
        "trade",
        format!("symbol/{}", market.symbol),
        t.ts,
        shown.to_string(),
    )
}

/// A book command's fills (`fill:S:<book trade id>`) and the orders it changed
/// (`order:<order_id>:<journal seq>`), in that order.
pub fn book(market: &Market, seq: u64, ts: i64, out: &Outcome) -> Vec<OutboxEvent> {
    let key = format!("book/{}", market.symbol);
    let fills = out.fills.iter().map(|f: &Fill| {
        event(
            format!("fill:{}:{}", market.symbol, f.trade_id),
            "fill",
            key.clone(),
            ts,
            json!({
                "symbol": market.symbol,
                "trade_id": f.trade_id.to_string(),
                "price": market.tick.format(f.price),
                "qty": market.lot.format(f.qty),
                "taker_side": crate::trading::tick_side(f.taker_side).as_str(),
            })
            .to_string(),
        )
    });
    let orders = out.updates.iter().map(|(owner, s): &(u64, OrderState)| {
        event(
            format!("order:{}:{seq}", s.order_id),
            "order",
            key.clone(),
            ts,
            json!({
                "symbol": market.symbol,
                "order_id": s.order_id.to_string(),
                "user_id": owner.to_string(),
                "status": s.status.as_str(),
                "filled": market.lot.format(s.filled),
                "last_trade_id": s.last_trade.to_string(),
            })
            .to_string(),
        )
    });
    fills.chain(orders).collect()
}

/// A chat message (`chat:<room>:<message_id>`), as the room's channel shows it.
pub fn chat(m: &ChatMessage) -> OutboxEvent {
    event(
        format!("chat:{}:{}", m.room, m.message_id),
        "chat",
        format!("room/{}", m.room),
        m.ts,
        crate::room::view(m).to_string(),
    )
}

/// A fired alert (`alert:<alert_id>:<n>`): `shown`, its owner's `alerts` channel event.
pub fn alert(shown: String, f: &AlertFiring) -> OutboxEvent {
    event(
        format!("alert:{}:{}", f.alert_id, f.n),
        "alert",
        format!("alert/{}", f.alert_id),
        f.ts,
        shown,
    )
}
