//! The portfolio (docs/PROTOCOL.md "Trading"): positions by average cost from the grant on,
//! profit and loss at the last price, exact, live on the `portfolio` channel, with a value
//! history, and the same after a SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, WsClient, now_ms, place_acked};
use serde_json::{Value, json};
use std::time::Duration;

/// The history's points, checked to be in time order, and the total of the last.
fn history(node: &Node, token: &str, query: &str) -> (Vec<Value>, Value) {
    let (status, v) = node.api(
        "GET",
        &format!("/api/v1/portfolio/history{query}"),
        None,
        Some(token),
    );
    assert_eq!(status, 200, "{v}");
    let points = v["points"].as_array().unwrap().clone();
    let ts: Vec<i64> = points.iter().map(|p| p["ts"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "in time order: {ts:?}");
    let last = points
        .last()
        .map(|p| p["total"].clone())
        .unwrap_or(Value::Null);
    (points, last)
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_keep_their_average_cost_and_profit_through_trades_and_a_sigkill() {
    let mut node = Node::start("portfolio", "[feed]\nkind = \"none\"\n");
    let (_, alice) = node.register("pf_alice");
    let (_, bob) = node.register("pf_bob");
    let mut live = WsClient::connect(&format!("{}?token={alice}", node.ws_url())).await;
    let r = live
        .request("subscribe", json!({"channels": ["portfolio"]}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
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
    let granted = live
        .wait_event(Duration::from_secs(10), |e| e.ch == "portfolio")
        .await
        .expect("the portfolio published once the account holds its grant");
    assert_eq!(
        granted.data, start,
        "the channel shows what the REST view does"
    );
    let (points, total) = history(&node, &alice, "");
    assert_eq!(total, json!({"KRW": "430000000"}), "{points:?}");
    let before_trade = now_ms();

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
    // 25M cash + 225M BTC + the other seven at cost (no trades there): 440M.
    let traded = live
        .wait_event(Duration::from_secs(10), |e| {
            e.ch == "portfolio" && e.data["total"]["KRW"] == "440000000"
        })
        .await
        .expect("the fill revalued the portfolio live");
    assert_eq!(btc(&traded.data), want_alice);
    common::eventually(10, "the history's last point after the trade", || {
        (history(&node, &alice, "").1 == json!({"KRW": "440000000"})).then_some(())
    });

    // The same after a SIGKILL: positions come back from the journal with the balances.
    node.kill9();
    node.restart();
    node.wait_ready();
    assert_eq!(btc(&portfolio(&node, &alice)), want_alice);
    assert_eq!(btc(&portfolio(&node, &bob)), want_bob);
    // The history is stored: before the trade it was the grant, after it the trade.
    let (_, then) = history(&node, &alice, &format!("?to={before_trade}"));
    assert_eq!(then, json!({"KRW": "430000000"}));
    assert_eq!(history(&node, &alice, "").1, json!({"KRW": "440000000"}));
    let (points, _) = history(&node, &alice, &format!("?from={}", now_ms() + 60_000));
    assert!(
        points.is_empty(),
        "nothing is known of the future: {points:?}"
    );

    for bad in [
        "?from=10&to=5",
        "?from=-1",
        "?from=0&to=700000000",
        "?from=x",
        "?since=1",
    ] {
        let (status, e) = node.api(
            "GET",
            &format!("/api/v1/portfolio/history{bad}"),
            None,
            Some(&alice),
        );
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {e}"
        );
    }

    for path in ["/api/v1/portfolio", "/api/v1/portfolio/history"] {
        let (status, e) = node.api("GET", path, None, None);
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
    }
}
