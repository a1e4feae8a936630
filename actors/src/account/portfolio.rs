//! A user's portfolio as the wire shows it (docs/PROTOCOL.md "Portfolio"): each market's
//! position with its average cost, realised and unrealised profit at the last price, the
//! cash, and the total value per quote currency. Pure: the ledger's balances and positions
//! and the last prices go in, exact decimal strings come out (never floats).

use super::ledger::Balance;
use super::position::Position;
use bourse_config::{Markets, Step};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Decimal places of an average cost.
const AVG_DIGITS: i8 = 8;

/// `cost` quote units over `qty` base units, in the quote currency per whole base unit, to
/// [`AVG_DIGITS`] places, rounded down.
fn average(cost: u128, qty: u128, quote: Step, base: Step) -> Option<String> {
    // One quote unit per base unit is 10^(quote_exp - base_exp) of the currency per whole.
    let e = i32::from(quote.exp()) - i32::from(base.exp()) + i32::from(AVG_DIGITS);
    let scaled = if e >= 0 {
        cost.checked_mul(10u128.checked_pow(e as u32)?)? / qty
    } else {
        cost / qty.checked_mul(10u128.checked_pow(e.unsigned_abs())?)?
    };
    Some(Step::from_exp(-AVG_DIGITS)?.format_wide(scaled))
}

/// A signed amount through `step`.
fn signed(step: Step, v: i128) -> String {
    let abs = step.format_wide(v.unsigned_abs());
    if v < 0 { format!("-{abs}") } else { abs }
}

/// The portfolio: `{"positions":[...],"cash":{"KRW":...},"total":{"KRW":...}}`. `prices`
/// holds each market's last price in ticks; a position whose market has none is valued at
/// its cost.
pub fn view(
    markets: &Markets,
    balances: &BTreeMap<String, Balance>,
    positions: &BTreeMap<String, Position>,
    prices: &BTreeMap<String, u64>,
) -> Value {
    let mut total: BTreeMap<String, u128> = BTreeMap::new();
    let mut cash = Map::new();
    // Cash: what the user holds of every asset that no market trades as its base.
    for (asset, b) in balances {
        if markets.iter().any(|m| m.base == *asset) {
            continue;
        }
        let Some(step) = markets.asset(asset) else {
            continue;
        };
        let held = b.available + b.held;
        *total.entry(asset.clone()).or_default() += held;
        cash.insert(asset.clone(), json!(step.format_wide(held)));
    }
    let mut shown = Vec::new();
    for (symbol, p) in positions {
        let Some(m) = markets.get(symbol) else {
            continue;
        };
        let (Some(base), Some(quote)) = (markets.asset(&m.base), markets.asset(&m.quote)) else {
            continue;
        };
        if p.qty == 0 && p.realised == 0 {
            continue;
        }
        let last = prices.get(symbol).copied();
        let value = match last {
            Some(price) => m.quote_amount((p.qty / m.base_per_lot) * u128::from(price)),
            None => p.cost,
        };
        *total.entry(m.quote.clone()).or_default() += value;
        let avg = p
            .average_cost()
            .and_then(|(cost, qty)| average(cost, qty, quote, base));
        shown.push(json!({
            "symbol": symbol,
            "asset": m.base,
            "qty": base.format_wide(p.qty),
            "avg_cost": avg.unwrap_or_else(|| "0".into()),
            "cost": quote.format_wide(p.cost),
            "last": last.map(|price| m.tick.format(price)),
            "value": quote.format_wide(value),
            "unrealised_pnl": signed(quote, p.unrealised(value)),
            "realised_pnl": signed(quote, p.realised),
        }));
    }
    let total: Map<String, Value> = total
        .into_iter()
        .filter_map(|(asset, v)| {
            let step = markets.asset(&asset)?;
            Some((asset, json!(step.format_wide(v))))
        })
        .collect();
    json!({"positions": shown, "cash": cash, "total": total})
}

#[cfg(test)]
mod tests {
    use super::*;
    use bourse_config::Settings;

    #[test]
    fn positions_are_valued_at_the_last_price_exactly() {
        let m = Settings::from_sources("", std::iter::empty()).unwrap().1;
        let btc = m.get("KRW-BTC").unwrap();
        let mut balances = BTreeMap::new();
        balances.insert(
            "KRW".to_string(),
            Balance {
                available: 5_000_000,
                held: 1_000_000,
            },
        );
        balances.insert(
            "BTC".to_string(),
            Balance {
                available: 3,
                held: 0,
            },
        );
        // 3 lots (0.0003 BTC) bought for 100,000 ticks each: 30,000,000 KRW units
        // (300,000 KRW); 1,000 KRW of profit realised before.
        let mut p = Position::default();
        p.buy(3, btc.quote_amount(3 * 100_000));
        p.realised = 100_000;
        let positions = BTreeMap::from([("KRW-BTC".to_string(), p)]);
        // Last at 90,000 ticks (90,000,000 KRW).
        let prices = BTreeMap::from([("KRW-BTC".to_string(), 90_000)]);
        let v = view(&m, &balances, &positions, &prices);
        assert_eq!(
            v["positions"][0],
            json!({
                "symbol": "KRW-BTC", "asset": "BTC", "qty": "0.0003",
                "avg_cost": "100000000", "cost": "30000", "last": "90000000",
                "value": "27000", "unrealised_pnl": "-3000", "realised_pnl": "1000"
            })
        );
        assert_eq!(v["cash"], json!({"KRW": "60000"}));
        assert_eq!(v["total"], json!({"KRW": "87000"}));
        // No price yet: valued at cost.
        let v = view(&m, &balances, &positions, &BTreeMap::new());
        assert_eq!(v["positions"][0]["unrealised_pnl"], "0");
        assert_eq!(v["positions"][0]["last"], Value::Null);
    }
}
