//! The validated market table: each symbol with its price and quantity steps.

use crate::hours::Hours;
use crate::{ConfigError, Step, SymbolSettings};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One market, ready for use: every string in its settings already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Market {
    /// `KRW-BTC`.
    pub symbol: String,
    /// The traded asset (`BTC`).
    pub base: String,
    /// The pricing currency (`KRW`).
    pub quote: String,
    /// Price step.
    pub tick: Step,
    /// Quantity step.
    pub lot: Step,
    /// Simulator start price, in ticks.
    pub initial_price: u64,
    /// Largest quantity of one order, in lots.
    pub max_qty: u64,
    /// One lot in units of the base asset's balance step.
    pub base_per_lot: u128,
    /// One tick × one lot in units of the quote asset's balance step.
    pub quote_per_tick_lot: u128,
    /// Where the market's price comes from.
    pub venue: Venue,
    /// When it trades (`symbols[i].hours`, by name); `None`: always.
    pub hours: Option<(String, Arc<Hours>)>,
}

/// Where a market's price comes from (docs/DESIGN.md "Venues").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Venue {
    /// The book makes the price: every tick is a fill of the book. Under the simulator,
    /// simulated participants (a market maker and takers) trade in it.
    Exchange,
    /// The price comes from a feed (the simulator's walk, Kafka or Upbit).
    Mirror,
}

impl Venue {
    /// The config and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Venue::Exchange => "exchange",
            Venue::Mirror => "mirror",
        }
    }

    /// Parses a config name.
    pub fn parse(s: &str) -> Option<Venue> {
        match s {
            "exchange" => Some(Venue::Exchange),
            "mirror" => Some(Venue::Mirror),
            _ => None,
        }
    }
}

impl Market {
    /// Whether the market trades at `ts_ms` (always, without hours).
    pub fn is_open(&self, ts_ms: i64) -> bool {
        self.hours.as_ref().is_none_or(|(_, h)| h.is_open(ts_ms))
    }

    /// `qty` lots as an amount of the base asset (balance units).
    pub fn base_amount(&self, qty: u64) -> u128 {
        u128::from(qty) * self.base_per_lot
    }

    /// `price × qty` as an amount of the quote asset (balance units); `cost` is a sum of
    /// `price_ticks × qty_lots`.
    pub fn quote_amount(&self, cost: u128) -> u128 {
        cost * self.quote_per_tick_lot
    }

    /// How many lots (at least one) buy `notional` whole units of the quote currency at
    /// `price` ticks, rounded down: the simulator's trade sizes and the market maker's
    /// levels are notionals, so they suit any price.
    pub fn lots_for(&self, notional: u64, price: u64) -> u64 {
        // One tick × one lot is 10^(tick_exp + lot_exp) quote units.
        let e = i32::from(self.tick.exp()) + i32::from(self.lot.exp());
        let pow = |e: u32| 10u128.saturating_pow(e);
        let (up, down) = if e <= 0 {
            (pow(e.unsigned_abs()), 1)
        } else {
            (1, pow(e as u32))
        };
        let lots =
            u128::from(notional).saturating_mul(up) / u128::from(price).saturating_mul(down).max(1);
        u64::try_from(lots).unwrap_or(u64::MAX).max(1)
    }
}

/// Default most lots per order when a market sets no `max_qty`.
pub const DEFAULT_MAX_LOTS: u64 = 1_000_000_000;

/// All markets by symbol; cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct Markets {
    by_symbol: Arc<BTreeMap<String, Market>>,
    /// Each asset's balance step: the finest amount any market can move of it.
    assets: Arc<BTreeMap<String, Step>>,
}

/// Whether `s` has the docs/PROTOCOL.md symbol shape `[A-Z0-9]{1,12}-[A-Z0-9]{1,12}`.
pub fn is_symbol_shape(s: &str) -> bool {
    let part = |p: &str| {
        (1..=12).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    matches!(s.split_once('-'), Some((q, b)) if part(q) && part(b))
}

impl Markets {
    /// Validates symbol settings into markets.
    /// `default_venue` is for markets that name none.
    pub fn from_settings(
        symbols: &[SymbolSettings],
        default_venue: Venue,
        hours: &BTreeMap<String, Arc<Hours>>,
    ) -> Result<Markets, ConfigError> {
        let mut by_symbol = BTreeMap::new();
        if symbols.is_empty() {
            return Err(ConfigError::new("symbols", "at least one symbol is needed"));
        }
        for (i, s) in symbols.iter().enumerate() {
            let key = |field: &str| format!("symbols[{i}].{field}");
            if !is_symbol_shape(&s.symbol) {
                return Err(ConfigError::new(
                    key("symbol"),
                    format!("'{}' is not QUOTE-BASE in [A-Z0-9]{{1,12}}", s.symbol),
                ));
            }
            let (quote, base) = s.symbol.split_once('-').unwrap_or_default();
            let step = |field: &str, v: &str| {
                Step::parse(v).ok_or_else(|| {
                    ConfigError::new(key(field), format!("'{v}' is not a power of ten"))
                })
            };
            let tick = step("tick_size", &s.tick_size)?;
            let lot = step("lot_size", &s.lot_size)?;
            let initial_price = tick
                .to_units(&s.initial_price)
                .map_err(|e| ConfigError::new(key("initial_price"), e.to_string()))?;
            if initial_price == 0 {
                return Err(ConfigError::new(key("initial_price"), "must be above 0"));
            }
            let max_qty = match &s.max_qty {
                Some(v) => lot
                    .to_units(v)
                    .map_err(|e| ConfigError::new(key("max_qty"), e.to_string()))?,
                None => DEFAULT_MAX_LOTS,
            };
            if max_qty == 0 {
                return Err(ConfigError::new(key("max_qty"), "must be above 0"));
            }
            let venue = match &s.venue {
                Some(v) => Venue::parse(v).ok_or_else(|| {
                    ConfigError::new(
                        key("venue"),
                        format!("unknown venue '{v}' (expected: exchange, mirror)"),
                    )
                })?,
                None => default_venue,
            };
            let hours = match &s.hours {
                Some(name) => {
                    let h = hours.get(name).ok_or_else(|| {
                        ConfigError::new(
                            key("hours"),
                            format!("no [hours.{name}] table is configured"),
                        )
                    })?;
                    Some((name.clone(), h.clone()))
                }
                None => None,
            };
            let market = Market {
                symbol: s.symbol.clone(),
                base: base.to_string(),
                quote: quote.to_string(),
                tick,
                lot,
                initial_price,
                max_qty,
                base_per_lot: 1,
                quote_per_tick_lot: 1,
                venue,
                hours,
            };
            if by_symbol.insert(s.symbol.clone(), market).is_some() {
                return Err(ConfigError::new(
                    key("symbol"),
                    format!("'{}' is listed twice", s.symbol),
                ));
            }
        }
        // An asset's balance step is the finest step it moves by anywhere: a lot where it is
        // the base, a tick × lot where it is the quote.
        let mut assets: BTreeMap<String, Step> = BTreeMap::new();
        let mut finest = |asset: &str, step: Step| {
            let e = assets.entry(asset.to_string()).or_insert(step);
            if step.exp() < e.exp() {
                *e = step;
            }
        };
        for m in by_symbol.values() {
            finest(&m.base, m.lot);
            let quote_step = Step::from_exp(m.tick.exp() + m.lot.exp()).ok_or_else(|| {
                ConfigError::new(
                    format!("symbols.{}", m.symbol),
                    "tick_size × lot_size is out of range",
                )
            })?;
            finest(&m.quote, quote_step);
        }
        for m in by_symbol.values_mut() {
            let (Some(base), Some(quote)) = (assets.get(&m.base), assets.get(&m.quote)) else {
                continue;
            };
            m.base_per_lot = 10u128.pow((m.lot.exp() - base.exp()) as u32);
            m.quote_per_tick_lot = 10u128.pow((m.tick.exp() + m.lot.exp() - quote.exp()) as u32);
        }
        Ok(Markets {
            by_symbol: Arc::new(by_symbol),
            assets: Arc::new(assets),
        })
    }

    /// The balance step of `asset`, if any market trades it.
    pub fn asset(&self, asset: &str) -> Option<Step> {
        self.assets.get(asset).copied()
    }

    /// Every traded asset with its balance step, by name.
    pub fn assets(&self) -> impl Iterator<Item = (&str, Step)> {
        self.assets.iter().map(|(a, s)| (a.as_str(), *s))
    }

    /// The market for `symbol`, if configured.
    pub fn get(&self, symbol: &str) -> Option<&Market> {
        self.by_symbol.get(symbol)
    }

    /// Markets in symbol order.
    pub fn iter(&self) -> impl Iterator<Item = &Market> {
        self.by_symbol.values()
    }

    /// How many markets there are.
    pub fn len(&self) -> usize {
        self.by_symbol.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_symbol.is_empty()
    }

    /// The markets whose symbol, base or quote contains `q` (any case), best match first:
    /// an exact symbol, then an exact base (`btc` finds `KRW-BTC` before `BTC-ETH`), then
    /// an exact quote, then the same three as prefixes, then anywhere; ties in symbol order.
    /// An empty `q` matches every market.
    pub fn search(&self, q: &str) -> Vec<&Market> {
        let q = q.trim().to_ascii_uppercase();
        let rank = |m: &Market| -> Option<usize> {
            let fields = [&m.symbol, &m.base, &m.quote];
            let kinds: [&dyn Fn(&str) -> bool; 3] =
                [&|f| f == q, &|f| f.starts_with(q.as_str()), &|f| {
                    f.contains(q.as_str())
                }];
            kinds.iter().enumerate().find_map(|(k, hit)| {
                let field = fields.iter().position(|f| hit(f))?;
                Some(k * fields.len() + field)
            })
        };
        let mut found: Vec<(usize, &Market)> =
            self.iter().filter_map(|m| Some((rank(m)?, m))).collect();
        // Stable: markets come in symbol order, so equal ranks stay in it.
        found.sort_by_key(|(r, _)| *r);
        found.into_iter().map(|(_, m)| m).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{Markets, is_symbol_shape};
    use crate::SymbolSettings;

    fn markets(symbols: &[&str]) -> Markets {
        let settings: Vec<SymbolSettings> = symbols
            .iter()
            .map(|s| SymbolSettings {
                symbol: s.to_string(),
                tick_size: "1".into(),
                lot_size: "0.001".into(),
                initial_price: "100".into(),
                max_qty: None,
                venue: None,
                hours: None,
            })
            .collect();
        Markets::from_settings(&settings, super::Venue::Mirror, &Default::default())
            .expect("markets")
    }

    fn found(m: &Markets, q: &str) -> Vec<String> {
        m.search(q).iter().map(|m| m.symbol.clone()).collect()
    }

    #[test]
    fn search_ranks_exact_then_prefix_then_anywhere() {
        let m = markets(&[
            "BTC-ETH",
            "KRW-BTC",
            "KRW-BTT",
            "KRW-ETH",
            "USDT-BTC",
            "USDT-WBTC",
        ]);
        assert_eq!(
            found(&m, "btc"),
            ["KRW-BTC", "USDT-BTC", "BTC-ETH", "USDT-WBTC"],
            "exact base, then exact quote, then anywhere"
        );
        assert_eq!(
            found(&m, " krw-eth "),
            ["KRW-ETH"],
            "an exact symbol, trimmed"
        );
        assert_eq!(
            found(&m, "BT"),
            ["BTC-ETH", "KRW-BTC", "KRW-BTT", "USDT-BTC", "USDT-WBTC"]
        );
        assert_eq!(found(&m, "").len(), 6, "an empty query lists every market");
        assert!(found(&m, "DOGE").is_empty());
    }

    #[test]
    fn search_finds_exactly_the_markets_that_contain_the_query() {
        let symbols = [
            "BTC-ETH", "KRW-BTC", "KRW-ETH", "KRW-XRP", "USDT-BTC", "USDT-XRP",
        ];
        let m = markets(&symbols);
        for q in ["B", "T", "X", "RP", "-", "KRW-", "T-B", "ETH", "Z", "SDT"] {
            let mut got = found(&m, q);
            got.sort();
            let want: Vec<String> = symbols
                .iter()
                .filter(|s| {
                    let (quote, base) = s.split_once('-').unwrap_or_default();
                    [**s, base, quote].iter().any(|f| f.contains(q))
                })
                .map(|s| s.to_string())
                .collect();
            assert_eq!(got, want, "query {q}");
        }
    }

    #[test]
    fn symbol_shape() {
        for ok in ["KRW-BTC", "USDT-1INCH", "A-B", "ABCDEFGHIJKL-ABCDEFGHIJKL"] {
            assert!(is_symbol_shape(ok), "{ok}");
        }
        for bad in [
            "krw-btc",
            "KRWBTC",
            "-BTC",
            "KRW-",
            "KRW-BTC-X",
            "ABCDEFGHIJKLM-B",
            "K W-B",
        ] {
            assert!(!is_symbol_shape(bad), "{bad}");
        }
    }
}
