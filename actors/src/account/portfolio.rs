//! A user's portfolio as the wire shows it (docs/PROTOCOL.md "Portfolio"): each market's
//! position with its average cost, realised and unrealised profit at the last price, the
//! cash, and the total value per quote currency; and the history of that total, one point a
//! minute. Pure: what the ledger holds and the last prices go in, exact decimal strings come
//! out (never floats).

use super::ledger::Balance;
use super::position::Position;
use bourse_config::{Markets, Step};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// What a user holds, as the portfolio values it: cash (every asset that no market trades
/// as its base, available and held together) and each market's position. The account
/// stores one each time it changes (`Write::Holdings`), so the value history is these
/// points valued at each minute's prices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holdings {
    pub cash: BTreeMap<String, u128>,
    pub positions: BTreeMap<String, Position>,
}

impl Holdings {
    /// What the ledger's `balances` and `positions` hold; empty positions are left out.
    pub fn of(
        markets: &Markets,
        balances: &BTreeMap<String, Balance>,
        positions: &BTreeMap<String, Position>,
    ) -> Holdings {
        let cash = balances
            .iter()
            .filter(|(asset, _)| {
                !markets.iter().any(|m| m.base == **asset) && markets.asset(asset).is_some()
            })
            .map(|(asset, b)| (asset.clone(), b.available + b.held))
            .collect();
        let positions = positions
            .iter()
            .filter(|(symbol, p)| markets.get(symbol).is_some() && (p.qty != 0 || p.realised != 0))
            .map(|(symbol, p)| (symbol.clone(), *p))
            .collect();
        Holdings { cash, positions }
    }

    /// The value of a position at `last` (ticks), or at its cost when there is no price.
    fn position_value(markets: &Markets, symbol: &str, p: &Position, last: Option<u64>) -> u128 {
        match (markets.get(symbol), last) {
            (Some(m), Some(price)) => m.quote_amount((p.qty / m.base_per_lot) * u128::from(price)),
            _ => p.cost,
        }
    }

    /// Each position's market's quote currency and its value at `prices`.
    fn position_values<'a>(
        &'a self,
        markets: &'a Markets,
        prices: &'a BTreeMap<String, u64>,
    ) -> impl Iterator<Item = (&'a str, u128)> + 'a {
        self.positions.iter().filter_map(move |(symbol, p)| {
            let m = markets.get(symbol)?;
            let value = Holdings::position_value(markets, symbol, p, prices.get(symbol).copied());
            Some((m.quote.as_str(), value))
        })
    }

    /// The total value in `currency` alone at `prices` ([`Holdings::total`]'s entry for it,
    /// without building the others).
    pub fn total_in(
        &self,
        markets: &Markets,
        prices: &BTreeMap<String, u64>,
        currency: &str,
    ) -> u128 {
        let cash = self.cash.get(currency).copied().unwrap_or(0);
        self.position_values(markets, prices)
            .filter(|(quote, _)| *quote == currency)
            .fold(cash, |total, (_, value)| total + value)
    }

    /// The total value per quote currency at `prices` (each market's last price in ticks).
    pub fn total(
        &self,
        markets: &Markets,
        prices: &BTreeMap<String, u64>,
    ) -> BTreeMap<String, u128> {
        let mut total = self.cash.clone();
        for (quote, value) in self.position_values(markets, prices) {
            *total.entry(quote.to_string()).or_default() += value;
        }
        total
    }

    /// A stored holdings point (`Write::Holdings` data) of `user` at `ts`; one that does
    /// not decode is logged and left out.
    pub fn decode(user: u64, ts: i64, data: &str) -> Option<Holdings> {
        serde_json::from_str(data)
            .inspect_err(|e| {
                tracing::error!(user, ts, error = %e, "a stored holdings point does not decode; skipped");
            })
            .ok()
    }
}

/// Amounts per asset as decimal strings.
fn amounts(markets: &Markets, amounts: &BTreeMap<String, u128>) -> Map<String, Value> {
    amounts
        .iter()
        .filter_map(|(asset, v)| {
            Some((asset.clone(), json!(markets.asset(asset)?.format_wide(*v))))
        })
        .collect()
}

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
pub fn view(markets: &Markets, holdings: &Holdings, prices: &BTreeMap<String, u64>) -> Value {
    let mut shown = Vec::new();
    for (symbol, p) in &holdings.positions {
        let Some(m) = markets.get(symbol) else {
            continue;
        };
        let (Some(base), Some(quote)) = (markets.asset(&m.base), markets.asset(&m.quote)) else {
            continue;
        };
        let last = prices.get(symbol).copied();
        let value = Holdings::position_value(markets, symbol, p, last);
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
    json!({
        "positions": shown,
        "cash": amounts(markets, &holdings.cash),
        "total": amounts(markets, &holdings.total(markets, prices)),
    })
}

/// One minute in milliseconds: the history's step.
pub const MINUTE_MS: i64 = 60_000;

/// The value history from `from` to `to` (ms): at each minute boundary `t` in that range,
/// and at `to` itself, the holdings in force at `t` (the newest of `points` at or before it)
/// valued at each market's last price at `t`: the close of its newest minute candle that
/// ended by `t`, from `closes` (`(open_time, close)`, oldest first; closed candles only).
/// When `to` is now, `live` holds the markets' last prices, and its point is valued at
/// them, as the portfolio is. A market with no price is valued at cost. Times before the first point have no
/// value and are left out. `[{"ts":..,"total":{..}}, ...]`.
pub fn history(
    markets: &Markets,
    points: &[(i64, Holdings)],
    closes: &BTreeMap<String, Vec<(i64, u64)>>,
    (from, to): (i64, i64),
    live: Option<&BTreeMap<String, u64>>,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut point = 0usize;
    let mut cursor: BTreeMap<&str, usize> = BTreeMap::new();
    let mut prices: BTreeMap<String, u64> = BTreeMap::new();
    let mut t = from.div_euclid(MINUTE_MS) * MINUTE_MS;
    if t < from {
        t += MINUTE_MS;
    }
    let mut times = std::iter::from_fn(|| {
        let now = t;
        t = t.saturating_add(MINUTE_MS);
        (now <= to).then_some(now)
    })
    .collect::<Vec<_>>();
    if times.last() != Some(&to) {
        times.push(to);
    }
    for t in times {
        while point + 1 < points.len() && points[point + 1].0 <= t {
            point += 1;
        }
        for (symbol, series) in closes {
            let at = cursor.entry(symbol).or_default();
            while *at < series.len() && series[*at].0.saturating_add(MINUTE_MS) <= t {
                prices.insert(symbol.clone(), series[*at].1);
                *at += 1;
            }
        }
        if t == to
            && let Some(last) = live
        {
            prices.extend(last.iter().map(|(s, p)| (s.clone(), *p)));
        }
        if let Some((ts, holdings)) = points.get(point)
            && *ts <= t
        {
            out.push(json!({
                "ts": t,
                "total": amounts(markets, &holdings.total(markets, &prices)),
            }));
        }
    }
    out
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
        let holdings = Holdings::of(&m, &balances, &positions);
        assert_eq!(
            holdings.cash,
            BTreeMap::from([("KRW".to_string(), 6_000_000)])
        );
        let v = view(&m, &holdings, &prices);
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
        let v = view(&m, &holdings, &BTreeMap::new());
        assert_eq!(v["positions"][0]["unrealised_pnl"], "0");
        assert_eq!(v["positions"][0]["last"], Value::Null);
    }

    #[test]
    fn history_values_each_minute_at_that_minutes_holdings_and_prices() {
        let m = Settings::from_sources("", std::iter::empty()).unwrap().1;
        let btc = m.get("KRW-BTC").unwrap();
        let cash = |krw: u128| BTreeMap::from([("KRW".to_string(), krw)]);
        let mut p = Position::default();
        p.buy(2, btc.quote_amount(2 * 100_000));
        // Minute 10: cash only. 10:30: bought 2 lots. Minute 13: all sold back to cash.
        let points = vec![
            (
                10 * MINUTE_MS,
                Holdings {
                    cash: cash(1_000),
                    positions: BTreeMap::new(),
                },
            ),
            (
                10 * MINUTE_MS + 30_000,
                Holdings {
                    cash: cash(500),
                    positions: BTreeMap::from([("KRW-BTC".to_string(), p)]),
                },
            ),
            (
                13 * MINUTE_MS,
                Holdings {
                    cash: cash(2_000),
                    positions: BTreeMap::new(),
                },
            ),
        ];
        // Candles opened at minutes 9 and 11 (none in minute 10): closes 100,000 and 110,000.
        let closes = BTreeMap::from([(
            "KRW-BTC".to_string(),
            vec![(9 * MINUTE_MS, 100_000), (11 * MINUTE_MS, 110_000)],
        )]);
        let krw = |v: &Value| v["total"]["KRW"].as_str().unwrap().to_string();
        let end = 13 * MINUTE_MS + 5_000;
        let h = history(&m, &points, &closes, (9 * MINUTE_MS + 1, end), None);
        let ts: Vec<i64> = h.iter().map(|v| v["ts"].as_i64().unwrap()).collect();
        let mut want: Vec<i64> = [10, 11, 12, 13].map(|x| x * MINUTE_MS).to_vec();
        want.push(end);
        assert_eq!(ts, want, "each minute from the first point on, then `to`");
        let won = m.asset("KRW").unwrap();
        let at = |price: u128| won.format_wide(500 + btc.quote_amount(2 * price));
        assert_eq!(
            krw(&h[0]),
            won.format_wide(1_000),
            "minute 10: the first point, cash only"
        );
        assert_eq!(
            krw(&h[1]),
            at(100_000),
            "minute 11: the position at minute 9's close"
        );
        assert_eq!(krw(&h[2]), at(110_000), "minute 12: at minute 11's close");
        assert_eq!(krw(&h[3]), won.format_wide(2_000), "minute 13: sold");
        assert_eq!(krw(&h[4]), won.format_wide(2_000), "`to`: still sold");
        // Inside minute 11 the candle opened at 11 has not ended: a past time is valued at
        // minute 9's close, and now at the last prices given.
        let inside = (11 * MINUTE_MS + 1, 11 * MINUTE_MS + 2);
        let past = history(&m, &points, &closes, inside, None);
        assert_eq!(past.len(), 1);
        assert_eq!(krw(&past[0]), at(100_000));
        let last = BTreeMap::from([("KRW-BTC".to_string(), 120_000)]);
        let now = history(&m, &points, &closes, inside, Some(&last));
        assert_eq!(krw(&now[0]), at(120_000));
        assert!(history(&m, &points, &closes, (0, 9 * MINUTE_MS), None).is_empty());
    }
}
