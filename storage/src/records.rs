//! Durable record types. Prices and quantities are integer counts of the market's tick and
//! lot (see `bourse_config::Step`); a record never holds a float.

use serde::{Deserialize, Serialize};

/// The taker's side of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// One trade of a symbol, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    pub symbol: String,
    /// Per-symbol sequence, from 1; unique with the symbol.
    pub trade_id: u64,
    /// Trade time, ms since the Unix epoch.
    pub ts: i64,
    /// In ticks.
    pub price: u64,
    /// In lots.
    pub qty: u64,
    /// Taker side.
    pub side: Side,
    /// The newest source sequence (a Kafka feed's `sequential_id` or `seq`) the symbol had
    /// applied when it stored this trade, 0 when none: stored with every trade, so after a
    /// crash the symbol knows which re-delivered trades it already holds.
    pub feed_seq: u64,
    /// The newest fill of the symbol's own book (its book trade id) the symbol had applied
    /// when it stored this trade, 0 when none: after a crash of either, the book re-sends
    /// its recent fills and the symbol skips those it already holds.
    pub book_trade: u64,
}

/// OHLCV over one interval bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candle {
    /// Bucket start, ms since the Unix epoch (UTC-aligned).
    pub open_time: i64,
    pub open: u64,
    pub high: u64,
    pub low: u64,
    pub close: u64,
    /// Sum of quantities, in lots.
    pub volume: u64,
}

impl Candle {
    /// A candle of one trade.
    pub fn from_trade(open_time: i64, price: u64, qty: u64) -> Candle {
        Candle {
            open_time,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: qty,
        }
    }

    /// Folds a later candle (or trade) of the same bucket into this one.
    pub fn merge(&mut self, later: &Candle) {
        self.high = self.high.max(later.high);
        self.low = self.low.min(later.low);
        self.close = later.close;
        self.volume = self.volume.saturating_add(later.volume);
    }
}

/// Candle intervals (docs/PROTOCOL.md "Channels").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Interval {
    S1,
    M1,
    M3,
    M5,
    M15,
    M30,
    H1,
    H4,
    D1,
    W1,
}

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// 1970-01-01 was a Thursday; weeks start on Monday 00:00 UTC, 4 days later.
const WEEK_OFFSET: i64 = 4 * DAY;

impl Interval {
    /// Finest first.
    pub const ALL: [Interval; 10] = [
        Interval::S1,
        Interval::M1,
        Interval::M3,
        Interval::M5,
        Interval::M15,
        Interval::M30,
        Interval::H1,
        Interval::H4,
        Interval::D1,
        Interval::W1,
    ];

    /// The wire name (`1s`, `1m`, ... `1w`).
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::S1 => "1s",
            Interval::M1 => "1m",
            Interval::M3 => "3m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::M30 => "30m",
            Interval::H1 => "1h",
            Interval::H4 => "4h",
            Interval::D1 => "1d",
            Interval::W1 => "1w",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Interval> {
        Interval::ALL.into_iter().find(|i| i.as_str() == s)
    }

    /// Bucket length, ms.
    pub fn millis(self) -> i64 {
        match self {
            Interval::S1 => SEC,
            Interval::M1 => MIN,
            Interval::M3 => 3 * MIN,
            Interval::M5 => 5 * MIN,
            Interval::M15 => 15 * MIN,
            Interval::M30 => 30 * MIN,
            Interval::H1 => HOUR,
            Interval::H4 => 4 * HOUR,
            Interval::D1 => DAY,
            Interval::W1 => 7 * DAY,
        }
    }

    /// The start of the bucket holding `ts` (UTC; weeks start on Monday).
    pub fn bucket(self, ts: i64) -> i64 {
        let offset = if self == Interval::W1 { WEEK_OFFSET } else { 0 };
        (ts - offset).div_euclid(self.millis()) * self.millis() + offset
    }

    /// The finer interval this one is rolled up from (`None` for 1s). Every bucket of the
    /// parent lies wholly inside one bucket of this interval.
    pub fn finer(self) -> Option<Interval> {
        match self {
            Interval::S1 => None,
            Interval::M1 => Some(Interval::S1),
            Interval::M3 | Interval::M5 => Some(Interval::M1),
            Interval::M15 => Some(Interval::M5),
            Interval::M30 => Some(Interval::M15),
            Interval::H1 => Some(Interval::M30),
            Interval::H4 => Some(Interval::H1),
            Interval::D1 => Some(Interval::H4),
            Interval::W1 => Some(Interval::D1),
        }
    }

    /// Index in [`Interval::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_utc_aligned() {
        // 2024-01-03 (a Wednesday) 10:17:42.500 UTC.
        let ts = 1_704_277_062_500;
        assert_eq!(Interval::S1.bucket(ts), 1_704_277_062_000);
        assert_eq!(Interval::M1.bucket(ts), 1_704_277_020_000);
        assert_eq!(Interval::H4.bucket(ts), 1_704_276_000_000 - 2 * HOUR);
        assert_eq!(Interval::D1.bucket(ts), 1_704_240_000_000);
        // The week starts Monday 2024-01-01 00:00 UTC.
        assert_eq!(Interval::W1.bucket(ts), 1_704_067_200_000);
    }

    #[test]
    fn finer_buckets_nest_in_coarser() {
        for i in Interval::ALL {
            if let Some(f) = i.finer() {
                assert_eq!(i.millis() % f.millis(), 0, "{i:?}");
                for ts in [0, 1_704_277_062_500, 1_704_067_200_000 - 1] {
                    assert_eq!(i.bucket(f.bucket(ts)), i.bucket(ts), "{i:?} {ts}");
                }
            }
            assert_eq!(Interval::parse(i.as_str()), Some(i));
        }
    }
}

/// An event for the Kafka relay, stored in the outbox in the same transaction as the write
/// it describes (docs/OPERATIONS.md "Event log"): it exists exactly when that write does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Stable and unique per event (`trade:KRW-BTC:17`), so consumers can deduplicate.
    pub id: String,
    /// `trade`, `order`, `fill`, `alert` or `chat`.
    pub kind: String,
    /// The entity it belongs to (`symbol/KRW-BTC`): the Kafka message key.
    pub key: String,
    /// When it happened, ms since the Unix epoch.
    pub ts: i64,
    /// The event's own fields, a JSON object.
    pub data: String,
}

/// A chat message as stored (one room's history, ids increasing with time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub room: String,
    pub message_id: u64,
    pub user_id: u64,
    pub username: String,
    pub text: String,
    pub ts: i64,
}

/// Where a price-alert rule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Waiting for its condition (a repeating rule stays armed between firings).
    Armed,
    /// A one-shot rule that fired: it never fires again.
    Fired,
    /// Deleted by its owner.
    Deleted,
}

impl AlertStatus {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Armed => "armed",
            AlertStatus::Fired => "fired",
            AlertStatus::Deleted => "deleted",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<AlertStatus> {
        match s {
            "armed" => Some(AlertStatus::Armed),
            "fired" => Some(AlertStatus::Fired),
            "deleted" => Some(AlertStatus::Deleted),
            _ => None,
        }
    }
}

/// A price-alert rule as stored. The condition is kept by name with its threshold in
/// internal units (ticks for `above`/`below`, hundredths of a percent for `change_pct`), so
/// storage needs no domain types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub alert_id: u64,
    pub user_id: u64,
    pub symbol: String,
    pub condition: String,
    pub value: i64,
    pub repeat: bool,
    pub cooldown_s: u32,
    pub created_at: i64,
    pub status: AlertStatus,
    /// When it last fired (0: never).
    pub last_fired_at: i64,
    /// How many times it fired; firing `n` is stored once, whoever repeats it.
    pub fired_count: u64,
}

/// One firing of a rule, as kept in alert history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertFiring {
    pub alert_id: u64,
    /// The rule's `n`th firing, from 1.
    pub n: u64,
    pub user_id: u64,
    pub symbol: String,
    pub condition: String,
    pub value: i64,
    /// The trade price that fired it (ticks).
    pub price: u64,
    /// The change window's start price it was measured from (`change_pct`; else 0).
    pub reference: u64,
    pub ts: i64,
}

/// An entry of a user's notification inbox (a fired alert, a fill). `key` names the event
/// (`alert:7:1`, `fill:42:3`), so a producer that repeats itself after a crash stores it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub user_id: u64,
    pub key: String,
    pub ts: i64,
    /// `alert` or `fill`.
    pub kind: String,
    /// The event's JSON, as the live channel shows it.
    pub body: String,
}
