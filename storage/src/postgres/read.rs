//! Reads, by domain, each on a pooled reader connection with a cached prepared statement.

use super::{PgStore, connection, pg};
use crate::records::{
    AlertFiring, AlertRecord, AlertStatus, Candle, ChatMessage, Interval, Notification,
    OutboxEvent, Side, Tick,
};
use crate::{
    AlertStore, ChatStore, JournalStore, MarketDataStore, OutboxStore, StoreError, UserRecord,
    UserStore,
};
use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

impl PgStore {
    /// Runs a prepared query on a reader connection.
    async fn rows(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.rows_on(&self.readers, context, sql, params).await
    }

    /// Runs a prepared query on a connection of `pool` (the readers', or the beat's own).
    pub(super) async fn rows_on(
        &self,
        pool: &Pool,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = connection(pool, &self.target).await?;
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(|e| pg(context, e))?;
        client
            .query(&stmt, params)
            .await
            .map_err(|e| pg(context, e))
    }
}

fn tick_row(symbol: &str, r: &Row) -> Tick {
    Tick {
        symbol: symbol.to_string(),
        trade_id: r.get::<_, i64>(0) as u64,
        ts: r.get(1),
        price: r.get::<_, i64>(2) as u64,
        qty: r.get::<_, i64>(3) as u64,
        side: if r.get::<_, i16>(4) == 0 {
            Side::Buy
        } else {
            Side::Sell
        },
        feed_seq: r.get::<_, i64>(5) as u64,
        book_trade: r.get::<_, i64>(6) as u64,
    }
}

fn candle_row(r: &Row) -> Candle {
    Candle {
        open_time: r.get(0),
        open: r.get::<_, i64>(1) as u64,
        high: r.get::<_, i64>(2) as u64,
        low: r.get::<_, i64>(3) as u64,
        close: r.get::<_, i64>(4) as u64,
        volume: r.get::<_, i64>(5) as u64,
    }
}

const ALERT_COLUMNS: &str = "alert_id, user_id, symbol, condition, value, repeat, cooldown_s,
     created_at, status, last_fired_at, fired_count";

fn alert_row(r: &Row) -> Result<AlertRecord, StoreError> {
    let status: String = r.get(8);
    Ok(AlertRecord {
        alert_id: r.get::<_, i64>(0) as u64,
        user_id: r.get::<_, i64>(1) as u64,
        symbol: r.get(2),
        condition: r.get(3),
        value: r.get(4),
        repeat: r.get(5),
        cooldown_s: u32::try_from(r.get::<_, i64>(6)).unwrap_or(u32::MAX),
        created_at: r.get(7),
        status: AlertStatus::parse(&status).ok_or_else(|| {
            StoreError::Backend(format!("unknown alert status '{status}' in alerts"))
        })?,
        last_fired_at: r.get(9),
        fired_count: r.get::<_, i64>(10) as u64,
    })
}

/// Row counts and ids come back as `i64`; a limit is a `usize`.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl OutboxStore for PgStore {
    async fn outbox(&self, n: usize) -> Result<Vec<(u64, OutboxEvent)>, StoreError> {
        let rows = self
            .rows(
                "reading the outbox",
                "SELECT pos, id, kind, key, ts, data FROM outbox ORDER BY pos LIMIT $1",
                &[&limit(n)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, i64>(0) as u64,
                    OutboxEvent {
                        id: r.get(1),
                        kind: r.get(2),
                        key: r.get(3),
                        ts: r.get(4),
                        data: r.get(5),
                    },
                )
            })
            .collect())
    }
}

#[async_trait]
impl MarketDataStore for PgStore {
    async fn recent_ticks(&self, symbol: &str, n: usize) -> Result<Vec<Tick>, StoreError> {
        let rows = self
            .rows(
                "reading recent ticks",
                "SELECT trade_id, ts, price, qty, side, feed_seq, book_trade FROM ticks
                 WHERE symbol = $1 ORDER BY trade_id DESC LIMIT $2",
                &[&symbol, &limit(n)],
            )
            .await?;
        Ok(rows.iter().map(|r| tick_row(symbol, r)).collect())
    }

    async fn ticks_since(&self, symbol: &str, from_ts: i64) -> Result<Vec<Tick>, StoreError> {
        let rows = self
            .rows(
                "reading ticks",
                "SELECT trade_id, ts, price, qty, side, feed_seq, book_trade FROM ticks
                 WHERE symbol = $1 AND ts >= $2 ORDER BY trade_id ASC",
                &[&symbol, &from_ts],
            )
            .await?;
        Ok(rows.iter().map(|r| tick_row(symbol, r)).collect())
    }

    async fn last_trade_id(&self, symbol: &str) -> Result<u64, StoreError> {
        let rows = self
            .rows(
                "reading the last trade id",
                "SELECT COALESCE(MAX(trade_id), 0) FROM ticks WHERE symbol = $1",
                &[&symbol],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    async fn candles(
        &self,
        symbol: &str,
        interval: Interval,
        end: Option<i64>,
        n: usize,
    ) -> Result<Vec<Candle>, StoreError> {
        let rows = self
            .rows(
                "reading candles",
                "SELECT open_time, open, high, low, close, volume FROM candles
                 WHERE symbol = $1 AND period = $2 AND open_time < $3
                 ORDER BY open_time DESC LIMIT $4",
                &[
                    &symbol,
                    &interval.as_str(),
                    &end.unwrap_or(i64::MAX),
                    &limit(n),
                ],
            )
            .await?;
        Ok(rows.iter().rev().map(candle_row).collect())
    }

    async fn candles_between(
        &self,
        symbol: &str,
        interval: Interval,
        from: i64,
        to: i64,
    ) -> Result<Vec<Candle>, StoreError> {
        let rows = self
            .rows(
                "reading candles",
                "SELECT open_time, open, high, low, close, volume FROM candles
                 WHERE symbol = $1 AND period = $2 AND open_time >= $3 AND open_time < $4
                 ORDER BY open_time ASC",
                &[&symbol, &interval.as_str(), &from, &to],
            )
            .await?;
        Ok(rows.iter().map(candle_row).collect())
    }
}

#[async_trait]
impl JournalStore for PgStore {
    async fn lease(&self, kind: &str, key: &str) -> Result<Option<(String, u64)>, StoreError> {
        let rows = self
            .rows(
                "reading a lease",
                "SELECT owner, epoch FROM leases WHERE kind = $1 AND key = $2",
                &[&kind, &key],
            )
            .await?;
        Ok(rows
            .first()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64)))
    }

    async fn snapshot(&self, kind: &str, key: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let rows = self
            .rows(
                "reading a snapshot",
                "SELECT seq, state FROM snapshots WHERE kind = $1 AND key = $2",
                &[&kind, &key],
            )
            .await?;
        Ok(rows
            .first()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1))))
    }

    async fn journal_after(
        &self,
        kind: &str,
        key: &str,
        after: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let rows = self
            .rows(
                "reading a journal",
                "SELECT seq, entry FROM journal WHERE kind = $1 AND key = $2 AND seq > $3
                 ORDER BY seq ASC",
                &[&kind, &key, &(after as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1)))
            .collect())
    }
}

#[async_trait]
impl ChatStore for PgStore {
    async fn chat_history(
        &self,
        room: &str,
        before: Option<u64>,
        n: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        // Ids fit in 63 bits: anything larger is "before every message", not a wrap.
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let rows = self
            .rows(
                "reading chat history",
                "SELECT message_id, user_id, username, text, ts FROM chat
                 WHERE room = $1 AND message_id < $2 ORDER BY message_id DESC LIMIT $3",
                &[&room, &before, &limit(n)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ChatMessage {
                room: room.to_string(),
                message_id: r.get::<_, i64>(0) as u64,
                user_id: r.get::<_, i64>(1) as u64,
                username: r.get(2),
                text: r.get(3),
                ts: r.get(4),
            })
            .collect())
    }
}

#[async_trait]
impl UserStore for PgStore {
    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let rows = self
            .rows(
                "reading a user",
                "SELECT user_id, username, password_hash, created_at FROM users
                 WHERE username = $1",
                &[&username],
            )
            .await?;
        Ok(rows.first().map(|r| UserRecord {
            user_id: r.get::<_, i64>(0) as u64,
            username: r.get(1),
            password_hash: r.get(2),
            created_at: r.get(3),
        }))
    }

    async fn watchlist(&self, user_id: u64) -> Result<Vec<String>, StoreError> {
        let rows = self
            .rows(
                "reading a watchlist",
                "SELECT symbols FROM watchlists WHERE user_id = $1",
                &[&(user_id as i64)],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)).unwrap_or_default())
    }

    async fn holdings(
        &self,
        user_id: u64,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = self
            .rows(
                "reading holdings",
                &crate::sql::holdings_read("$1", "$2", "$3"),
                &[&(user_id as i64), &from, &to],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn holdings_at(&self, ts: i64) -> Result<Vec<(u64, i64, String)>, StoreError> {
        let rows = self
            .rows(
                "reading everyone's holdings",
                &crate::sql::holdings_at("$1"),
                &[&ts],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2)))
            .collect())
    }
}

#[async_trait]
impl AlertStore for PgStore {
    async fn alert(&self, alert_id: u64) -> Result<Option<AlertRecord>, StoreError> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = $1");
        let rows = self
            .rows("reading an alert", &sql, &[&(alert_id as i64)])
            .await?;
        rows.first().map(alert_row).transpose()
    }

    async fn alerts_of(&self, user_id: u64) -> Result<Vec<AlertRecord>, StoreError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE user_id = $1 AND status != 'deleted' ORDER BY alert_id"
        );
        let rows = self
            .rows("reading a user's alerts", &sql, &[&(user_id as i64)])
            .await?;
        rows.iter().map(alert_row).collect()
    }

    async fn alert_count(&self, user_id: u64) -> Result<usize, StoreError> {
        let rows = self
            .rows(
                "counting a user's alerts",
                "SELECT count(*) FROM alerts WHERE user_id = $1 AND status != 'deleted'",
                &[&(user_id as i64)],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as usize))
    }

    async fn armed_alerts(&self, symbol: &str) -> Result<Vec<AlertRecord>, StoreError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE symbol = $1 AND status = 'armed' ORDER BY alert_id"
        );
        let rows = self.rows("reading armed alerts", &sql, &[&symbol]).await?;
        rows.iter().map(alert_row).collect()
    }

    async fn alert_history(&self, user_id: u64, n: usize) -> Result<Vec<AlertFiring>, StoreError> {
        let rows = self
            .rows(
                "reading alert history",
                "SELECT alert_id, n, user_id, symbol, condition, value, price, reference, ts
                 FROM alert_history WHERE user_id = $1
                 ORDER BY ts DESC, alert_id DESC, n DESC LIMIT $2",
                &[&(user_id as i64), &limit(n)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AlertFiring {
                alert_id: r.get::<_, i64>(0) as u64,
                n: r.get::<_, i64>(1) as u64,
                user_id: r.get::<_, i64>(2) as u64,
                symbol: r.get(3),
                condition: r.get(4),
                value: r.get(5),
                price: r.get::<_, i64>(6) as u64,
                reference: r.get::<_, i64>(7) as u64,
                ts: r.get(8),
            })
            .collect())
    }

    async fn notifications(
        &self,
        user_id: u64,
        since: i64,
        n: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        // A page never ends inside one millisecond: it takes every entry of its last `ts`,
        // so the next page, `since` that ts, misses nothing. Keys compare bytewise, as
        // SQLite's do, whatever the database's collation.
        let rows = self
            .rows(
                "reading notifications",
                "SELECT key, ts, kind, body FROM notifications
                 WHERE user_id = $1 AND ts > $2 AND ts <= (
                     SELECT max(ts) FROM (SELECT ts FROM notifications
                         WHERE user_id = $1 AND ts > $2 ORDER BY ts LIMIT $3) AS page)
                 ORDER BY ts, key COLLATE \"C\"",
                &[&(user_id as i64), &since, &limit(n)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Notification {
                user_id,
                key: r.get(0),
                ts: r.get(1),
                kind: r.get(2),
                body: r.get(3),
            })
            .collect())
    }
}
