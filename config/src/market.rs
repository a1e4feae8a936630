//! The validated market table: each symbol with its price and quantity steps.

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
}

/// All markets by symbol; cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct Markets {
    by_symbol: Arc<BTreeMap<String, Market>>,
}

/// Whether `s` has the PROTOCOL.md symbol shape `[A-Z0-9]{1,12}-[A-Z0-9]{1,12}`.
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
    pub fn from_settings(symbols: &[SymbolSettings]) -> Result<Markets, ConfigError> {
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
            let market = Market {
                symbol: s.symbol.clone(),
                base: base.to_string(),
                quote: quote.to_string(),
                tick,
                lot,
                initial_price,
            };
            if by_symbol.insert(s.symbol.clone(), market).is_some() {
                return Err(ConfigError::new(
                    key("symbol"),
                    format!("'{}' is listed twice", s.symbol),
                ));
            }
        }
        Ok(Markets {
            by_symbol: Arc::new(by_symbol),
        })
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
}

#[cfg(test)]
mod tests {
    use super::is_symbol_shape;

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
