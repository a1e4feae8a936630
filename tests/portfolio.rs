//! The portfolio (docs/PROTOCOL.md "Trading"): positions by average cost from the grant on,
//! profit and loss at the last price, exact, and the same after a SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, place_acked};
use serde_json::{Value, json};

fn portfolio(node: &Node, token: &str) -> Value {
    let (status, v) = node.api("GET", "/api/v1/portfolio", None, Some(token));
    assert_eq!(status, 200, "{v}");
    v
}

fn btc(p: &Value) -> Value {
    p["positions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["symbol"] == "KRW-BTC")
        .cloned()
        .unwrap_or_else(|| panic!("no KRW-BTC position: {p}"))
}

#[test]
fn positions_keep_their_average_cost_and_profit_through_trades_and_a_sigkill() {
    let mut node = Node::start("portfolio", "[feed]\nkind = \"none\"\n");
    let (_, alice) = node.register("pf_alice");
    let (_, bob) = node.register("pf_bob");
    // The grant, bought at each market's start price: nothing gained or lost yet.
    let start = portfolio(&node, &alice);
    assert_eq!(
        btc(&start),
        json!({"symbol": "KRW-BTC", "asset": "BTC", "qty": "1", "avg_cost": "140000000",
               "cost": "140000000", "last": "140000000", "value": "140000000",
               "unrealised_pnl": "0", "realised_pnl": "0"})
    );
    assert_eq!(start["positions"].as_array().unwrap().len(), 8);
    assert_eq!(start["cash"], json!({"KRW": "100000000"}));
    // 100M cash + BTC 140M + ETH 50M + XRP 30M + SOL 25M + DOGE 30M + ADA 10M + AVAX 20M
    // + LINK 25M.
    assert_eq!(start["total"], json!({"KRW": "430000000"}));

    // Bob sells alice half a bitcoin at 150,000,000.
    let order = |side: &str| json!({"symbol": "KRW-BTC", "side": side, "type": "limit", "price": "150000000", "qty": "0.5"});
    place_acked(&node, &bob, order("sell"), "pf-sell");
    let bought = place_acked(&node, &alice, order("buy"), "pf-buy");
    assert_eq!(bought["status"], "filled", "{bought}");
    let want_alice = json!({"symbol": "KRW-BTC", "asset": "BTC", "qty": "1.5",
        "avg_cost": "143333333.33333333", "cost": "215000000", "last": "150000000",
        "value": "225000000", "unrealised_pnl": "10000000", "realised_pnl": "0"});
    let want_bob = json!({"symbol": "KRW-BTC", "asset": "BTC", "qty": "0.5",
        "avg_cost": "140000000", "cost": "70000000", "last": "150000000",
        "value": "75000000", "unrealised_pnl": "5000000", "realised_pnl": "5000000"});
    common::eventually(10, "bob's sale settled", || {
        (btc(&portfolio(&node, &bob)) == want_bob).then_some(())
    });
    assert_eq!(btc(&portfolio(&node, &alice)), want_alice);
    assert_eq!(portfolio(&node, &alice)["cash"], json!({"KRW": "25000000"}));

    // The same after a SIGKILL: positions come back from the journal with the balances.
    node.kill9();
    node.restart();
    node.wait_ready();
    assert_eq!(btc(&portfolio(&node, &alice)), want_alice);
    assert_eq!(btc(&portfolio(&node, &bob)), want_bob);

    let (status, e) = node.api("GET", "/api/v1/portfolio", None, None);
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
}
