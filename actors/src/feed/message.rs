//! Trade messages from an external feed (a Kafka topic): Upbit's trade JSON and bourse's
//! own, parsed into integer prices and sizes of a configured market, or refused with a
//! reason the feed counts. Pure: no I/O, so every bad shape is a unit test.
//!
//! Numbers are read from the message's text, never through a float: Upbit sends
//! `"trade_price": 95000000.0`, which is exactly 95,000,000 here.

use super::TradeInput;
use bourse_config::{DecimalError, Market, Markets, Step};
use bourse_storage::Side;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One feed trade for a symbol, with its source sequence (Upbit's `sequential_id`, or
/// `seq`): sequences rise per symbol, which is how a re-delivered trade is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedTrade {
    pub seq: u64,
    pub trade: TradeInput,
}

/// Why a message was skipped; `as_str` is the `reason` label of
/// `bourse_feed_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejected {
    /// Not a JSON object.
    NotJson,
    /// A field missing or of the wrong type (neither format).
    BadShape,
    /// A symbol this cluster does not list.
    UnknownSymbol,
    /// A negative price or size.
    Negative,
    /// A price off the market's tick size.
    OffTick,
    /// A size off the market's lot size.
    OffLot,
    /// A price or size that is not a plain decimal (an exponent, say).
    BadNumber,
    /// A zero or too large price, size or sequence.
    OutOfRange,
}

impl Rejected {
    /// Every reason, for metrics that start at zero.
    pub const ALL: [Rejected; 8] = [
        Rejected::NotJson,
        Rejected::BadShape,
        Rejected::UnknownSymbol,
        Rejected::Negative,
        Rejected::OffTick,
        Rejected::OffLot,
        Rejected::BadNumber,
        Rejected::OutOfRange,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::NotJson => "not_json",
            Rejected::BadShape => "bad_shape",
            Rejected::UnknownSymbol => "unknown_symbol",
            Rejected::Negative => "negative",
            Rejected::OffTick => "off_tick",
            Rejected::OffLot => "off_lot",
            Rejected::BadNumber => "bad_number",
            Rejected::OutOfRange => "out_of_range",
        }
    }
}

/// Both formats' fields; which are present says which format it is.
#[derive(Deserialize)]
struct Fields<'a> {
    // Upbit.
    #[serde(borrow)]
    code: Option<&'a RawValue>,
    #[serde(borrow)]
    trade_price: Option<&'a RawValue>,
    #[serde(borrow)]
    trade_volume: Option<&'a RawValue>,
    #[serde(borrow)]
    ask_bid: Option<&'a RawValue>,
    #[serde(borrow)]
    sequential_id: Option<&'a RawValue>,
    // bourse.
    #[serde(borrow)]
    symbol: Option<&'a RawValue>,
    #[serde(borrow)]
    price: Option<&'a RawValue>,
    #[serde(borrow)]
    qty: Option<&'a RawValue>,
    #[serde(borrow)]
    side: Option<&'a RawValue>,
    #[serde(borrow)]
    seq: Option<&'a RawValue>,
}

/// Parses one message into its market and trade.
///
/// Upbit: `{"code":"KRW-BTC","trade_price":95000000.0,"trade_volume":0.0001,
/// "ask_bid":"BID","sequential_id":1700000000000000, ...}` (`ASK`: the taker sold).
/// bourse: `{"symbol":"KRW-BTC","price":"95000000","qty":"0.0001","side":"buy","seq":1}`.
/// Other fields (Upbit's `trade_timestamp`, say) are ignored: the symbol stamps each trade
/// with its own clock, so its channels' time never runs backwards.
pub fn parse<'m>(
    payload: &[u8],
    markets: &'m Markets,
) -> Result<(&'m Market, FeedTrade), Rejected> {
    let f: Fields<'_> = serde_json::from_slice(payload).map_err(|e| {
        if e.is_data() {
            Rejected::BadShape
        } else {
            Rejected::NotJson
        }
    })?;
    let (symbol, price, qty, side, seq, upbit) = match (f.code, f.symbol) {
        (Some(code), None) => (
            code,
            f.trade_price,
            f.trade_volume,
            f.ask_bid,
            f.sequential_id,
            true,
        ),
        (None, Some(symbol)) => (symbol, f.price, f.qty, f.side, f.seq, false),
        _ => return Err(Rejected::BadShape),
    };
    // Borrowed from the message unless it has escapes.
    let symbol: std::borrow::Cow<'_, str> = match serde_json::from_str::<&str>(symbol.get()) {
        Ok(s) => s.into(),
        Err(_) => serde_json::from_str::<String>(symbol.get())
            .map_err(|_| Rejected::BadShape)?
            .into(),
    };
    let market = markets.get(&symbol).ok_or(Rejected::UnknownSymbol)?;
    let side = match (
        serde_json::from_str::<&str>(side.ok_or(Rejected::BadShape)?.get()),
        upbit,
    ) {
        (Ok("BID"), true) | (Ok("buy"), false) => Side::Buy,
        (Ok("ASK"), true) | (Ok("sell"), false) => Side::Sell,
        _ => return Err(Rejected::BadShape),
    };
    let seq: u64 = serde_json::from_str(seq.ok_or(Rejected::BadShape)?.get())
        .map_err(|_| Rejected::OutOfRange)?;
    // Storage keeps a symbol's newest sequence as a signed 64-bit integer.
    if seq == 0 || seq > i64::MAX as u64 {
        return Err(Rejected::OutOfRange);
    }
    let price = units(price, market.tick, Rejected::OffTick)?;
    let qty = units(qty, market.lot, Rejected::OffLot)?;
    if price == 0 || qty == 0 || qty > market.max_qty {
        return Err(Rejected::OutOfRange);
    }
    Ok((
        market,
        FeedTrade {
            seq,
            trade: TradeInput { price, qty, side },
        },
    ))
}

/// A decimal, given as a JSON number or a string, in steps of `step`.
fn units(raw: Option<&RawValue>, step: Step, off_step: Rejected) -> Result<u64, Rejected> {
    let text = raw.ok_or(Rejected::BadShape)?.get();
    let owned;
    let text = if text.starts_with('"') {
        owned = serde_json::from_str::<String>(text).map_err(|_| Rejected::BadShape)?;
        owned.as_str()
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        text
    } else {
        return Err(Rejected::BadShape);
    };
    step.to_units(text).map_err(|e| match e {
        DecimalError::Syntax(_) => Rejected::BadNumber,
        DecimalError::OffStep { .. } => off_step,
        DecimalError::Range(_) => Rejected::OutOfRange,
        DecimalError::Negative(_) => Rejected::Negative,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bourse_config::Settings;

    fn markets() -> Markets {
        // The default markets: KRW-BTC has tick 1000 and lot 0.0001.
        Settings::default().validate().unwrap()
    }

    fn ok(msg: &str) -> (String, FeedTrade) {
        let markets = markets();
        let (m, t) = parse(msg.as_bytes(), &markets).unwrap();
        (m.symbol.clone(), t)
    }

    fn refused(msg: &str) -> Rejected {
        parse(msg.as_bytes(), &markets()).unwrap_err()
    }

    #[test]
    fn upbit_trades_parse_without_floats() {
        let (symbol, t) = ok(
            r#"{"type":"trade","code":"KRW-BTC","trade_price":95000000.0,
            "trade_volume":0.0123,"ask_bid":"ASK","sequential_id":17000000000000001,
            "trade_timestamp":1700000000000,"stream_type":"REALTIME"}"#,
        );
        assert_eq!(symbol, "KRW-BTC");
        assert_eq!(t.seq, 17_000_000_000_000_001);
        assert_eq!(t.trade.price, 95_000);
        assert_eq!(t.trade.qty, 123);
        assert_eq!(t.trade.side, Side::Sell);
        let (_, t) = ok(
            r#"{"code":"KRW-BTC","trade_price":"1000","trade_volume":"1","ask_bid":"BID","sequential_id":2}"#,
        );
        assert_eq!(
            (t.trade.price, t.trade.qty, t.trade.side),
            (1, 10_000, Side::Buy)
        );
    }

    #[test]
    fn bourse_trades_parse() {
        let (symbol, t) =
            ok(r#"{"symbol":"KRW-BTC","price":"140001000","qty":"0.5","side":"buy","seq":7}"#);
        assert_eq!(symbol, "KRW-BTC");
        assert_eq!(t.seq, 7);
        assert_eq!(
            t.trade,
            TradeInput {
                price: 140_001,
                qty: 5_000,
                side: Side::Buy
            }
        );
    }

    #[test]
    fn bad_messages_are_refused_by_kind() {
        let cases = [
            ("not json", Rejected::NotJson),
            ("", Rejected::NotJson),
            ("[1,2]", Rejected::BadShape),
            ("{}", Rejected::BadShape),
            (
                r#"{"symbol":"KRW-BTC","code":"KRW-BTC"}"#,
                Rejected::BadShape,
            ),
            (
                r#"{"symbol":"KRW-BTC","price":"1000","qty":"1","side":"buy"}"#,
                Rejected::BadShape,
            ),
            (
                r#"{"symbol":"KRW-BTC","price":"1000","qty":"1","side":"BID","seq":1}"#,
                Rejected::BadShape,
            ),
            (
                r#"{"symbol":7,"price":"1000","qty":"1","side":"buy","seq":1}"#,
                Rejected::BadShape,
            ),
            (
                r#"{"symbol":"KRW-NOPE","price":"1000","qty":"1","side":"buy","seq":1}"#,
                Rejected::UnknownSymbol,
            ),
            (
                r#"{"code":"KRW-BTC","trade_price":-1000,"trade_volume":1,"ask_bid":"BID","sequential_id":1}"#,
                Rejected::Negative,
            ),
            (
                r#"{"code":"KRW-BTC","trade_price":1500,"trade_volume":1,"ask_bid":"BID","sequential_id":1}"#,
                Rejected::OffTick,
            ),
            (
                r#"{"code":"KRW-BTC","trade_price":1000,"trade_volume":0.00001,"ask_bid":"BID","sequential_id":1}"#,
                Rejected::OffLot,
            ),
            (
                r#"{"code":"KRW-BTC","trade_price":1e6,"trade_volume":1,"ask_bid":"BID","sequential_id":1}"#,
                Rejected::BadNumber,
            ),
            (
                r#"{"code":"KRW-BTC","trade_price":0,"trade_volume":1,"ask_bid":"BID","sequential_id":1}"#,
                Rejected::OutOfRange,
            ),
            (
                r#"{"code":"KRW-BTC","trade_price":1000,"trade_volume":1,"ask_bid":"BID","sequential_id":0}"#,
                Rejected::OutOfRange,
            ),
            (
                r#"{"code":"KRW-BTC","trade_price":1000,"trade_volume":1,"ask_bid":"BID","sequential_id":-3}"#,
                Rejected::OutOfRange,
            ),
            (
                r#"{"code":"KRW-BTC","trade_price":1000,"trade_volume":1,"ask_bid":"BID","sequential_id":9223372036854775808}"#,
                Rejected::OutOfRange,
            ),
            (
                r#"{"code":"KRW-BTC","trade_price":true,"trade_volume":1,"ask_bid":"BID","sequential_id":1}"#,
                Rejected::BadShape,
            ),
            (
                r#"{"code":"KRW-BTC","trade_price":99999999999999999999000,"trade_volume":1,"ask_bid":"BID","sequential_id":1}"#,
                Rejected::OutOfRange,
            ),
        ];
        for (msg, want) in cases {
            assert_eq!(refused(msg), want, "{msg}");
        }
    }

    #[test]
    fn every_reason_has_its_own_label() {
        let labels: std::collections::HashSet<_> =
            Rejected::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Rejected::ALL.len());
    }
}
