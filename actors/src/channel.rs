//! Channel names (docs/PROTOCOL.md "Channels"): parsing a client's channel into the entity that
//! publishes it. The gateway validates with this before anything reaches an entity.
//!
//! A private channel (`orders`, `alerts`, `portfolio`) is one per user: inside the cluster it
//! is named `orders@<user>` so hubs and publishers keep users apart; clients only ever see
//! `orders`.

use crate::session::Private;
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
    /// `book:S`
    Book(String),
    /// `orders`, `alerts` or `portfolio` of one user (auth).
    Private(Private, u64),
    /// `chat:R`
    Chat(String),
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// Malformed or unknown: `bad_request`.
    Invalid(String),
    /// A private channel without a logged-in user: `unauthorized`.
    NeedsAuth(String),
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelError::Invalid(m) | ChannelError::NeedsAuth(m) => f.write_str(m),
        }
    }
}

impl Channel {
    /// Parses a client's channel name for a connection logged in as `user` (if any).
    pub fn parse_for(
        name: &str,
        markets: &Markets,
        user: Option<u64>,
    ) -> Result<Channel, ChannelError> {
        if let Some(private) = Private::SUBSCRIBABLE.into_iter().find(|p| p.name() == name) {
            return user
                .map(|user| Channel::Private(private, user))
                .ok_or_else(|| {
                    ChannelError::NeedsAuth(format!("channel '{name}' needs a logged-in user"))
                });
        }
        if let Some(room) = name.strip_prefix("chat:") {
            if !crate::room::exists(markets, room) {
                return Err(ChannelError::Invalid(format!(
                    "unknown room '{room}' in channel '{name}'"
                )));
            }
            return Ok(Channel::Chat(room.to_string()));
        }
        if let Some(symbol) = name.strip_prefix("book:") {
            if !is_symbol_shape(symbol) {
                return Err(ChannelError::Invalid(format!(
                    "malformed symbol '{symbol}' in channel '{name}'"
                )));
            }
            if markets.get(symbol).is_none() {
                return Err(ChannelError::Invalid(format!(
                    "unknown symbol '{symbol}' in channel '{name}'"
                )));
            }
            return Ok(Channel::Book(symbol.to_string()));
        }
        Channel::parse(name, markets).map_err(ChannelError::Invalid)
    }

    /// Parses and checks a market-data channel name (`ticker`, `trades`, `candles`) against
    /// the configured markets; the error is the client-facing message.
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
    pub fn publisher(&self) -> (&'static str, String) {
        match self {
            Channel::Ticker(s) | Channel::Trades(s) | Channel::Candles(s, _) => {
                (crate::symbol::KIND, s.clone())
            }
            Channel::Book(s) => (crate::book::KIND, s.clone()),
            Channel::Private(_, user) => (crate::session::KIND, user.to_string()),
            Channel::Chat(room) => (crate::room::KIND, room.clone()),
        }
    }

    /// The canonical name inside the cluster (hub and publisher).
    pub fn name(&self) -> String {
        match self {
            Channel::Ticker(s) => format!("ticker:{s}"),
            Channel::Trades(s) => format!("trades:{s}"),
            Channel::Candles(s, i) => format!("candles:{s}:{}", i.as_str()),
            Channel::Book(s) => format!("book:{s}"),
            Channel::Private(private, user) => private.channel(*user),
            Channel::Chat(room) => format!("chat:{room}"),
        }
    }

    /// The name clients use.
    pub fn public_name(&self) -> String {
        match self {
            Channel::Private(private, _) => private.name().into(),
            other => other.name(),
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
        assert_eq!(
            Channel::parse_for("book:KRW-BTC", &m, None),
            Ok(Channel::Book("KRW-BTC".into()))
        );
        assert!(matches!(
            Channel::parse_for("orders", &m, None),
            Err(ChannelError::NeedsAuth(_))
        ));
        let orders = Channel::parse_for("orders", &m, Some(7)).unwrap();
        assert_eq!(
            (orders.name().as_str(), orders.public_name().as_str()),
            ("orders@7", "orders")
        );
        let alerts = Channel::parse_for("alerts", &m, Some(7)).unwrap();
        assert_eq!(
            (alerts.name().as_str(), alerts.public_name().as_str()),
            ("alerts@7", "alerts")
        );
        assert_eq!(alerts.publisher(), ("session", "7".to_string()));
        assert!(matches!(
            Channel::parse_for("alerts", &m, None),
            Err(ChannelError::NeedsAuth(_))
        ));
        let portfolio = Channel::parse_for("portfolio", &m, Some(7)).unwrap();
        assert_eq!(portfolio.name(), "portfolio@7");
        assert!(matches!(
            Channel::parse_for("portfolio", &m, None),
            Err(ChannelError::NeedsAuth(_))
        ));
        for bad in [
            "book:KRW-NOPE",
            "book:",
            "book:krw-btc",
            "orders@7",
            "orders:1",
            "alerts@7",
            "portfolio@7",
            "session",
        ] {
            assert!(
                matches!(
                    Channel::parse_for(bad, &m, Some(7)),
                    Err(ChannelError::Invalid(_))
                ),
                "{bad}"
            );
        }
    }
}
