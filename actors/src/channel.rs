//! Channel names (PROTOCOL.md "Channels"): parsing a client's channel into the entity that
//! publishes it. The gateway validates with this before anything reaches an entity.

use bourse_config::{Markets, is_symbol_shape};
use bourse_storage::Interval;

/// A market-data channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// `ticker:S`
    Ticker(String),
    /// `trades:S`
    Trades(String),
    /// `candles:S:I`
    Candles(String, Interval),
}

impl Channel {
    /// Parses and checks a channel name against the configured markets; the error is the
    /// client-facing message.
    pub fn parse(name: &str, markets: &Markets) -> Result<Channel, String> {
        let mut parts = name.split(':');
        let kind = parts.next().unwrap_or_default();
        let symbol = parts.next();
        let interval = parts.next();
        if parts.next().is_some() {
            return Err(format!("unknown channel '{name}'"));
        }
        let symbol = match (kind, symbol) {
            ("ticker" | "trades" | "candles", Some(s)) => s,
            _ => return Err(format!("unknown channel '{name}'")),
        };
        if !is_symbol_shape(symbol) {
            return Err(format!("malformed symbol '{symbol}' in channel '{name}'"));
        }
        if markets.get(symbol).is_none() {
            return Err(format!("unknown symbol '{symbol}' in channel '{name}'"));
        }
        let symbol = symbol.to_string();
        match (kind, interval) {
            ("ticker", None) => Ok(Channel::Ticker(symbol)),
            ("trades", None) => Ok(Channel::Trades(symbol)),
            ("candles", Some(i)) => Interval::parse(i)
                .map(|i| Channel::Candles(symbol, i))
                .ok_or_else(|| format!("unknown interval '{i}' in channel '{name}'")),
            ("candles", None) => Err(format!("channel '{name}' needs an interval")),
            _ => Err(format!("unknown channel '{name}'")),
        }
    }

    /// The publishing entity, `(kind, key)`.
    pub fn publisher(&self) -> (&'static str, &str) {
        match self {
            Channel::Ticker(s) | Channel::Trades(s) | Channel::Candles(s, _) => {
                (crate::symbol::KIND, s)
            }
        }
    }

    /// The canonical name.
    pub fn name(&self) -> String {
        match self {
            Channel::Ticker(s) => format!("ticker:{s}"),
            Channel::Trades(s) => format!("trades:{s}"),
            Channel::Candles(s, i) => format!("candles:{s}:{}", i.as_str()),
        }
    }

    /// Whether a newer event replaces an older one in a slow client's queue.
    pub fn conflatable(&self) -> bool {
        matches!(self, Channel::Ticker(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bourse_config::Settings;

    #[test]
    fn parses_and_refuses() {
        let (_, m) = Settings::from_sources("", std::iter::empty()).unwrap();
        assert_eq!(
            Channel::parse("ticker:KRW-BTC", &m),
            Ok(Channel::Ticker("KRW-BTC".into()))
        );
        assert_eq!(
            Channel::parse("candles:KRW-ETH:15m", &m),
            Ok(Channel::Candles("KRW-ETH".into(), Interval::M15))
        );
        for bad in [
            "tikcer:KRW-BTC",
            "ticker",
            "ticker:krw-btc",
            "ticker:KRW-NOPE",
            "candles:KRW-BTC",
            "candles:KRW-BTC:2m",
            "trades:KRW-BTC:1m",
            "",
        ] {
            assert!(Channel::parse(bad, &m).is_err(), "{bad}");
        }
        let c = Channel::parse("candles:KRW-BTC:1s", &m).unwrap();
        assert_eq!(c.name(), "candles:KRW-BTC:1s");
    }
}
