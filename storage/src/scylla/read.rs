//! Reads, by domain, at QUORUM, page by page. A read over several partitions walks the
//! partition index (`tick_days`, `candle_buckets`, `chat_buckets`, newest first) and stops
//! once it has enough rows.
//!
//! A partition whose `fence` (a static column) is set but that has no rows answers a query
//! with one row of nulls on ScyllaDB (even with a clustering restriction, and whatever
//! columns are selected): every row type read from such a table takes its columns as
//! options and drops those rows.

use super::write::{candle_bucket, chat_bucket, day};
use super::{ScyllaStore, rows};
use crate::records::{
    AlertFiring, AlertRecord, AlertStatus, Candle, ChatMessage, Interval, Notification, Side, Tick,
};
use crate::{
    AlertStore, ChatStore, JournalStore, MarketDataStore, StoreError, UserRecord, UserStore,
};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};

/// A CQL `LIMIT` (an `int`).
fn limit(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

type TickRow = (
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i8>,
    Option<i64>,
    Option<i64>,
);

/// The tick a row holds (`None` for a partition's static-only row).
fn tick(
    symbol: &str,
    (ts, trade_id, price, qty, side, feed_seq, book_trade): TickRow,
) -> Option<Tick> {
    Some(Tick {
        symbol: symbol.to_string(),
        trade_id: trade_id? as u64,
        ts: ts?,
        price: price? as u64,
        qty: qty? as u64,
        side: if side? == 0 { Side::Buy } else { Side::Sell },
        feed_seq: feed_seq.unwrap_or(0) as u64,
        book_trade: book_trade.unwrap_or(0) as u64,
    })
}

type CandleRow = (
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// The candle a row holds (`None` for a partition's static-only row).
fn candle((open_time, open, high, low, close, volume): CandleRow) -> Option<Candle> {
    Some(Candle {
        open_time: open_time?,
        open: open? as u64,
        high: high? as u64,
        low: low? as u64,
        close: close? as u64,
        volume: volume? as u64,
    })
}

type AlertRow = (
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<bool>,
    Option<i32>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

const ALERT_COLUMNS: &str = "alert_id, user_id, symbol, condition, value, repeat, cooldown_s,
     created_at, status, last_fired_at, fired_count";

/// The rule a row holds (`None` where no rule was created: no `user_id`).
fn alert(r: AlertRow) -> Result<Option<AlertRecord>, StoreError> {
    let (Some(alert_id), Some(user_id)) = (r.0, r.1) else {
        return Ok(None);
    };
    let status = r.8.unwrap_or_default();
    Ok(Some(AlertRecord {
        alert_id: alert_id as u64,
        user_id: user_id as u64,
        symbol: r.2.unwrap_or_default(),
        condition: r.3.unwrap_or_default(),
        value: r.4.unwrap_or_default(),
        repeat: r.5.unwrap_or_default(),
        cooldown_s: r.6.map_or(0, |c| u32::try_from(c).unwrap_or(0)),
        created_at: r.7.unwrap_or_default(),
        status: AlertStatus::parse(&status).ok_or_else(|| {
            StoreError::Backend(format!("unknown alert status '{status}' in alerts"))
        })?,
        last_fired_at: r.9.unwrap_or_default(),
        fired_count: r.10.unwrap_or_default() as u64,
    }))
}

impl ScyllaStore {
    /// The partition numbers an index query returns (newest first: the index tables'
    /// clustering order).
    async fn partitions(
        &self,
        table_query: &str,
        values: impl scylla::serialize::row::SerializeRow,
        context: &str,
    ) -> Result<Vec<i64>, StoreError> {
        // Option: `alerts_armed` has a static `fence`, and ScyllaDB answers a partition
        // holding only that with one row of nulls.
        let found: Vec<(Option<i64>,)> = rows(&self.cs, table_query, values, context).await?;
        Ok(found.into_iter().filter_map(|r| r.0).collect())
    }

    async fn tick_days(&self, symbol: &str) -> Result<Vec<i64>, StoreError> {
        self.partitions(
            "SELECT day FROM tick_days WHERE symbol = ?",
            (symbol,),
            "reading tick days",
        )
        .await
    }

    /// Which of the firings `(alert_id, n)` their rules' partitions hold, with their times.
    async fn firings_stored(
        &self,
        firings: Vec<(i64, i64)>,
    ) -> Result<HashSet<(i64, i64, i64)>, StoreError> {
        let mut by_rule: HashMap<i64, Vec<i64>> = HashMap::new();
        for (alert_id, n) in firings {
            by_rule.entry(alert_id).or_default().push(n);
        }
        let mut stored = HashSet::new();
        for (alert_id, ns) in by_rule {
            for chunk in ns.chunks(100) {
                let found: Vec<(Option<i64>, Option<i64>)> = rows(
                    &self.cs,
                    "SELECT n, ts FROM alerts WHERE alert_id = ? AND n IN ?",
                    (alert_id, chunk.to_vec()),
                    "reading alert firings",
                )
                .await?;
                stored.extend(
                    found
                        .into_iter()
                        .filter_map(|(n, ts)| Some((alert_id, n?, ts?))),
                );
            }
        }
        Ok(stored)
    }

    /// The claimed inbox keys among `keys`, with the time of the entry that claimed each.
    async fn inbox_claims(
        &self,
        user_id: u64,
        mut keys: Vec<String>,
    ) -> Result<HashMap<String, i64>, StoreError> {
        keys.sort_unstable();
        keys.dedup();
        let mut claimed = HashMap::new();
        for chunk in keys.chunks(100) {
            let found: Vec<(String, Option<i64>)> = rows(
                &self.cs,
                "SELECT key, ts FROM notification_keys WHERE user_id = ? AND key IN ?",
                (user_id as i64, chunk.to_vec()),
                "reading inbox keys",
            )
            .await?;
            claimed.extend(found.into_iter().filter_map(|(k, ts)| Some((k, ts?))));
        }
        Ok(claimed)
    }

    /// The rules `ids` names, in id order.
    async fn alerts_by_id(&self, mut ids: Vec<i64>) -> Result<Vec<AlertRecord>, StoreError> {
        ids.sort_unstable();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(100) {
            let found: Vec<AlertRow> = rows(
                &self.cs,
                format!("SELECT DISTINCT {ALERT_COLUMNS} FROM alerts WHERE alert_id IN ?"),
                (chunk.to_vec(),),
                "reading alerts",
            )
            .await?;
            for r in found {
                out.extend(alert(r)?);
            }
        }
        out.sort_by_key(|a| a.alert_id);
        Ok(out)
    }
}

#[async_trait]
impl crate::OutboxStore for ScyllaStore {
    async fn outbox(&self, _limit: usize) -> Result<Vec<(u64, crate::OutboxEvent)>, StoreError> {
        Err(StoreError::Backend(
            "the Kafka event outbox is built for SQLite and PostgreSQL, not ScyllaDB".into(),
        ))
    }
}

#[async_trait]
impl MarketDataStore for ScyllaStore {
    async fn recent_ticks(&self, symbol: &str, n: usize) -> Result<Vec<Tick>, StoreError> {
        let mut out = Vec::new();
        if n == 0 {
            return Ok(out);
        }
        for d in self.tick_days(symbol).await? {
            if out.len() >= n {
                break;
            }
            let found: Vec<TickRow> = rows(
                &self.cs,
                "SELECT ts, trade_id, price, qty, side, feed_seq, book_trade FROM ticks WHERE symbol = ? AND day = ?
                 ORDER BY trade_id DESC LIMIT ?",
                (symbol, d, limit(n - out.len())),
                "reading recent ticks",
            )
            .await?;
            out.extend(found.into_iter().filter_map(|r| tick(symbol, r)));
        }
        Ok(out)
    }

    async fn ticks_since(&self, symbol: &str, from_ts: i64) -> Result<Vec<Tick>, StoreError> {
        let mut days: Vec<i64> = self
            .tick_days(symbol)
            .await?
            .into_iter()
            .filter(|d| *d >= day(from_ts))
            .collect();
        days.reverse();
        let mut out = Vec::new();
        for d in days {
            let found: Vec<TickRow> = rows(
                &self.cs,
                "SELECT ts, trade_id, price, qty, side, feed_seq, book_trade FROM ticks WHERE symbol = ? AND day = ?",
                (symbol, d),
                "reading ticks",
            )
            .await?;
            // `ts` is not a key column: the first day is cut here.
            out.extend(
                found
                    .into_iter()
                    .filter_map(|r| tick(symbol, r))
                    .filter(|t| t.ts >= from_ts),
            );
        }
        out.sort_by_key(|t| t.trade_id);
        Ok(out)
    }

    async fn last_trade_id(&self, symbol: &str) -> Result<u64, StoreError> {
        Ok(self
            .recent_ticks(symbol, 1)
            .await?
            .first()
            .map_or(0, |t| t.trade_id))
    }

    async fn candles(
        &self,
        symbol: &str,
        interval: Interval,
        end: Option<i64>,
        n: usize,
    ) -> Result<Vec<Candle>, StoreError> {
        let end = end.unwrap_or(i64::MAX);
        let newest = candle_bucket(interval, end.saturating_sub(1));
        let buckets = self
            .partitions(
                "SELECT bucket FROM candle_buckets WHERE symbol = ? AND period = ? AND bucket <= ?",
                (symbol, interval.as_str(), newest),
                "reading candle buckets",
            )
            .await?;
        let mut out = Vec::new();
        for b in buckets {
            if out.len() >= n {
                break;
            }
            let found: Vec<CandleRow> = rows(
                &self.cs,
                "SELECT open_time, open, high, low, close, volume FROM candles
                 WHERE symbol = ? AND period = ? AND bucket = ? AND open_time < ?
                 ORDER BY open_time DESC LIMIT ?",
                (symbol, interval.as_str(), b, end, limit(n - out.len())),
                "reading candles",
            )
            .await?;
            out.extend(found.into_iter().filter_map(candle));
        }
        out.reverse();
        Ok(out)
    }

    async fn candles_between(
        &self,
        symbol: &str,
        interval: Interval,
        from: i64,
        to: i64,
    ) -> Result<Vec<Candle>, StoreError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let mut buckets = self
            .partitions(
                "SELECT bucket FROM candle_buckets WHERE symbol = ? AND period = ?
                 AND bucket >= ? AND bucket <= ?",
                (
                    symbol,
                    interval.as_str(),
                    candle_bucket(interval, from),
                    candle_bucket(interval, to - 1),
                ),
                "reading candle buckets",
            )
            .await?;
        buckets.reverse();
        let mut out = Vec::new();
        for b in buckets {
            let found: Vec<CandleRow> = rows(
                &self.cs,
                "SELECT open_time, open, high, low, close, volume FROM candles
                 WHERE symbol = ? AND period = ? AND bucket = ? AND open_time >= ? AND open_time < ?",
                (symbol, interval.as_str(), b, from, to),
                "reading candles",
            )
            .await?;
            out.extend(found.into_iter().filter_map(candle));
        }
        Ok(out)
    }
}

#[async_trait]
impl JournalStore for ScyllaStore {
    async fn lease(&self, kind: &str, key: &str) -> Result<Option<(String, u64)>, StoreError> {
        let found: Vec<(Option<String>, Option<i64>)> = rows(
            &self.cs,
            "SELECT owner, epoch FROM entities WHERE kind = ? AND key = ? LIMIT 1",
            (kind, key),
            "reading a lease",
        )
        .await?;
        Ok(found
            .into_iter()
            .next()
            .and_then(|(owner, epoch)| epoch.map(|e| (owner.unwrap_or_default(), e as u64))))
    }

    async fn snapshot(&self, kind: &str, key: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let found: Vec<(Option<i64>, Option<Vec<u8>>)> = rows(
            &self.cs,
            "SELECT snap_seq, snap FROM entities WHERE kind = ? AND key = ? LIMIT 1",
            (kind, key),
            "reading a snapshot",
        )
        .await?;
        Ok(found
            .into_iter()
            .next()
            .and_then(|(seq, state)| match (seq, state) {
                (Some(seq), Some(state)) => Some((seq as u64, state)),
                _ => None,
            }))
    }

    async fn journal_after(
        &self,
        kind: &str,
        key: &str,
        after: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        // Entries a snapshot covers are deleted by a plain range delete, whose timestamp may
        // lose to an entry's LWT timestamp on a skewed clock: they are skipped here, so a
        // read never depends on that delete (as on the other backends, they are gone).
        let found: Vec<(Option<i64>, Option<Vec<u8>>, Option<i64>)> = rows(
            &self.cs,
            "SELECT seq, entry, snap_seq FROM entities WHERE kind = ? AND key = ? AND seq > ?",
            (kind, key, after as i64),
            "reading a journal",
        )
        .await?;
        Ok(found
            .into_iter()
            .filter_map(|(seq, entry, snap)| {
                let seq = seq?;
                (seq > snap.unwrap_or(0)).then_some((seq as u64, entry?))
            })
            .collect())
    }
}

#[async_trait]
impl ChatStore for ScyllaStore {
    async fn chat_history(
        &self,
        room: &str,
        before: Option<u64>,
        n: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        // Ids fit in 63 bits: anything larger is "before every message".
        let before = before.map_or(i64::MAX as u64, |b| b.min(i64::MAX as u64));
        if before == 0 {
            return Ok(Vec::new());
        }
        let buckets = self
            .partitions(
                "SELECT bucket FROM chat_buckets WHERE room = ? AND bucket <= ?",
                (room, chat_bucket(before - 1)),
                "reading chat buckets",
            )
            .await?;
        let mut out = Vec::new();
        for b in buckets {
            if out.len() >= n {
                break;
            }
            type Row = (
                Option<i64>,
                Option<i64>,
                Option<String>,
                Option<String>,
                Option<i64>,
            );
            let found: Vec<Row> = rows(
                &self.cs,
                "SELECT message_id, user_id, username, text, ts FROM chat
                 WHERE room = ? AND bucket = ? AND message_id < ? LIMIT ?",
                (room, b, before as i64, limit(n - out.len())),
                "reading chat history",
            )
            .await?;
            out.extend(
                found
                    .into_iter()
                    .filter_map(|(id, user_id, username, text, ts)| {
                        Some(ChatMessage {
                            room: room.to_string(),
                            message_id: id? as u64,
                            user_id: user_id? as u64,
                            username: username?,
                            text: text?,
                            ts: ts?,
                        })
                    }),
            );
        }
        Ok(out)
    }
}

#[async_trait]
impl UserStore for ScyllaStore {
    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let found: Vec<(String, i64, String, i64)> = rows(
            &self.cs,
            "SELECT username, user_id, password_hash, created_at FROM users WHERE username = ?",
            (username,),
            "reading a user",
        )
        .await?;
        Ok(found
            .into_iter()
            .next()
            .map(
                |(username, user_id, password_hash, created_at)| UserRecord {
                    user_id: user_id as u64,
                    username,
                    password_hash,
                    created_at,
                },
            ))
    }

    async fn watchlist(&self, user_id: u64) -> Result<Vec<String>, StoreError> {
        let found: Vec<(Option<Vec<String>>,)> = rows(
            &self.cs,
            "SELECT symbols FROM watchlists WHERE user_id = ?",
            (user_id as i64,),
            "reading a watchlist",
        )
        .await?;
        Ok(found
            .into_iter()
            .next()
            .and_then(|r| r.0)
            .unwrap_or_default())
    }

    async fn holdings(
        &self,
        user_id: u64,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let user = user_id as i64;
        // Newest first within the partition: the first at or before `from`, then the rest.
        let mut points: Vec<(i64, String)> = rows(
            &self.cs,
            "SELECT ts, data FROM holdings WHERE user_id = ? AND ts > ? AND ts <= ?",
            (user, from, to),
            "reading holdings",
        )
        .await?;
        let before: Vec<(i64, String)> = rows(
            &self.cs,
            "SELECT ts, data FROM holdings WHERE user_id = ? AND ts <= ? LIMIT 1",
            (user, from.min(to)),
            "reading holdings",
        )
        .await?;
        points.extend(before);
        points.reverse();
        Ok(points)
    }

    async fn holdings_at(&self, ts: i64) -> Result<Vec<(u64, i64, String)>, StoreError> {
        // A scan of every partition, newest first in each: the first row at or before `ts`.
        let found: Vec<(i64, i64, String)> = rows(
            &self.cs,
            "SELECT user_id, ts, data FROM holdings WHERE ts <= ? PER PARTITION LIMIT 1 ALLOW FILTERING",
            (ts,),
            "reading everyone's holdings",
        )
        .await?;
        Ok(found
            .into_iter()
            .map(|(user, ts, data)| (user as u64, ts, data))
            .collect())
    }
}

#[async_trait]
impl AlertStore for ScyllaStore {
    async fn alert(&self, alert_id: u64) -> Result<Option<AlertRecord>, StoreError> {
        Ok(self
            .alerts_by_id(vec![alert_id as i64])
            .await?
            .into_iter()
            .next())
    }

    async fn alerts_of(&self, user_id: u64) -> Result<Vec<AlertRecord>, StoreError> {
        let ids = self
            .partitions(
                "SELECT alert_id FROM alerts_by_user WHERE user_id = ?",
                (user_id as i64,),
                "reading a user's alerts",
            )
            .await?;
        Ok(self
            .alerts_by_id(ids)
            .await?
            .into_iter()
            .filter(|a| a.status != AlertStatus::Deleted)
            .collect())
    }

    async fn alert_count(&self, user_id: u64) -> Result<usize, StoreError> {
        Ok(self.alerts_of(user_id).await?.len())
    }

    async fn armed_alerts(&self, symbol: &str) -> Result<Vec<AlertRecord>, StoreError> {
        let ids = self
            .partitions(
                "SELECT alert_id FROM alerts_armed WHERE symbol = ?",
                (symbol,),
                "reading armed alerts",
            )
            .await?;
        Ok(self
            .alerts_by_id(ids)
            .await?
            .into_iter()
            .filter(|a| a.status == AlertStatus::Armed)
            .collect())
    }

    async fn alert_history(&self, user_id: u64, n: usize) -> Result<Vec<AlertFiring>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        // History rows are written before their firing: read a little more than asked and
        // keep the rows whose firing is stored; read more only if that was not enough.
        let mut want = n.saturating_add(16);
        loop {
            type Row = (i64, i64, i64, String, String, i64, i64, i64, i64);
            let found: Vec<Row> = rows(
                &self.cs,
                "SELECT alert_id, n, user_id, symbol, condition, value, price, reference, ts
                 FROM alert_history WHERE user_id = ? LIMIT ?",
                (user_id as i64, limit(want)),
                "reading alert history",
            )
            .await?;
            let stored = self
                .firings_stored(found.iter().map(|r| (r.0, r.1)).collect())
                .await?;
            let exhausted = found.len() < want;
            let mut out: Vec<AlertFiring> = found
                .into_iter()
                .filter(|r| stored.contains(&(r.0, r.1, r.8)))
                .map(|r| AlertFiring {
                    alert_id: r.0 as u64,
                    n: r.1 as u64,
                    user_id: r.2 as u64,
                    symbol: r.3,
                    condition: r.4,
                    value: r.5,
                    price: r.6 as u64,
                    reference: r.7 as u64,
                    ts: r.8,
                })
                .collect();
            if out.len() >= n || exhausted {
                out.truncate(n);
                return Ok(out);
            }
            want = want.saturating_mul(2);
        }
    }

    async fn notifications(
        &self,
        user_id: u64,
        since: i64,
        n: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        // A page never ends inside one millisecond: it takes every entry of its last `ts`,
        // so the next page, `since` that ts, misses nothing. Entries are written before
        // their key is claimed: one is shown only where its key was claimed at its time,
        // and pages go on until `n` are shown or none are left.
        let mut out = Vec::new();
        let mut cursor = since;
        loop {
            let page: Vec<(i64,)> = rows(
                &self.cs,
                "SELECT ts FROM notifications WHERE user_id = ? AND ts > ? LIMIT ?",
                (user_id as i64, cursor, limit(n)),
                "reading notifications",
            )
            .await?;
            let Some(last) = page.iter().map(|r| r.0).max() else {
                return Ok(out);
            };
            let found: Vec<(i64, String, String, String)> = rows(
                &self.cs,
                "SELECT ts, key, kind, body FROM notifications
                 WHERE user_id = ? AND ts > ? AND ts <= ?",
                (user_id as i64, cursor, last),
                "reading notifications",
            )
            .await?;
            let claimed = self
                .inbox_claims(user_id, found.iter().map(|r| r.1.clone()).collect())
                .await?;
            out.extend(
                found
                    .into_iter()
                    .filter(|(ts, key, _, _)| claimed.get(key) == Some(ts))
                    .map(|(ts, key, kind, body)| Notification {
                        user_id,
                        key,
                        ts,
                        kind,
                        body,
                    }),
            );
            if out.len() >= n || page.len() < n {
                return Ok(out);
            }
            cursor = last;
        }
    }
}
