//! A WebSocket text frame, as a client sends it: the request envelope, then the op's fields
//! decoded as the op would, then an order body checked against the markets as
//! `order.place` does and an alert's condition as `alert.create` does. Errors are answers,
//! never panics.

#![no_main]

use bourse_actors::alert::parse_condition;
use bourse_gateway::rest::trading::order_request;
use bourse_gateway::ws::{ops::Op, parse_request};
use libfuzzer_sys::fuzz_target;
use markets::MARKETS;

mod markets;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(req) = parse_request(text) else {
        return;
    };
    match Op::decode(&req.op, req.body) {
        Ok(Op::Place(body)) => {
            let _ = order_request(&MARKETS, body);
        }
        Ok(Op::AlertCreate(body)) => {
            if let Some(market) = MARKETS.get(&body.symbol) {
                let _ = parse_condition(market, &body.condition, &body.value);
            }
        }
        _ => {}
    }
});
