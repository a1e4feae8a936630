//! The embedded default store: SQLite in WAL mode.
//!
//! One dedicated writer thread per process owns the queue's write connection and commits
//! everything submitted since its last commit in one transaction (up to `batch_max` rows), so
//! ingest costs one fsync-free WAL append per batch rather than per row. Readers use a small
//! pool of their own connections and run beside the writer (WAL lets them); a lease taken at
//! once (a node's beat) has a write connection of its own, and waits only for SQLite's write
//! lock. Several node processes may share one file: a short-step busy handler makes their
//! writers take turns.

use crate::queue::{self, Batch, Halted, Op, Reply, Submitter, WriterStats};
use crate::records::{
    AlertFiring, AlertRecord, AlertStatus, Candle, ChatMessage, Interval, Notification,
    OutboxEvent, Side, Tick,
};
use crate::{
    Ack, AlertStore, ChatStore, JournalStore, MarketDataStore, MarketStore, OutboxStore,
    StoreError, UserRecord, UserStore, Write,
};
use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: market data.
    "CREATE TABLE ticks (
        symbol   TEXT    NOT NULL,
        trade_id INTEGER NOT NULL,
        ts       INTEGER NOT NULL,
        price    INTEGER NOT NULL,
        qty      INTEGER NOT NULL,
        side     INTEGER NOT NULL,
        PRIMARY KEY (symbol, trade_id)
    ) WITHOUT ROWID;
    CREATE INDEX ticks_by_time ON ticks (symbol, ts);
    CREATE TABLE candles (
        symbol    TEXT    NOT NULL,
        interval  TEXT    NOT NULL,
        open_time INTEGER NOT NULL,
        open      INTEGER NOT NULL,
        high      INTEGER NOT NULL,
        low       INTEGER NOT NULL,
        close     INTEGER NOT NULL,
        volume    INTEGER NOT NULL,
        PRIMARY KEY (symbol, interval, open_time)
    ) WITHOUT ROWID;",
    // 2: single-activation leases.
    "CREATE TABLE leases (
        kind  TEXT    NOT NULL,
        key   TEXT    NOT NULL,
        owner TEXT    NOT NULL,
        epoch INTEGER NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID;",
    // 3: entity journals and snapshots (books, accounts), users.
    "CREATE TABLE journal (
        kind  TEXT    NOT NULL,
        key   TEXT    NOT NULL,
        seq   INTEGER NOT NULL,
        entry BLOB    NOT NULL,
        PRIMARY KEY (kind, key, seq)
    ) WITHOUT ROWID;
    CREATE TABLE snapshots (
        kind  TEXT    NOT NULL,
        key   TEXT    NOT NULL,
        seq   INTEGER NOT NULL,
        state BLOB    NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID;
    CREATE TABLE users (
        user_id       INTEGER PRIMARY KEY AUTOINCREMENT,
        username      TEXT    NOT NULL UNIQUE,
        password_hash TEXT    NOT NULL,
        created_at    INTEGER NOT NULL
    );",
    // 4: chat history.
    "CREATE TABLE chat (
        room       TEXT    NOT NULL,
        message_id INTEGER NOT NULL,
        user_id    INTEGER NOT NULL,
        username   TEXT    NOT NULL,
        text       TEXT    NOT NULL,
        ts         INTEGER NOT NULL,
        PRIMARY KEY (room, message_id)
    ) WITHOUT ROWID;",
    // 5: price alerts, their firings, and users' notification inboxes.
    "CREATE TABLE alerts (
        alert_id      INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id       INTEGER NOT NULL,
        symbol        TEXT    NOT NULL,
        condition     TEXT    NOT NULL,
        value         INTEGER NOT NULL,
        repeat        INTEGER NOT NULL,
        cooldown_s    INTEGER NOT NULL,
        created_at    INTEGER NOT NULL,
        status        TEXT    NOT NULL,
        last_fired_at INTEGER NOT NULL,
        fired_count   INTEGER NOT NULL
    );
    CREATE INDEX alerts_by_user ON alerts (user_id, alert_id);
    CREATE INDEX alerts_by_symbol ON alerts (symbol, status);
    CREATE TABLE alert_history (
        alert_id  INTEGER NOT NULL,
        n         INTEGER NOT NULL,
        user_id   INTEGER NOT NULL,
        symbol    TEXT    NOT NULL,
        condition TEXT    NOT NULL,
        value     INTEGER NOT NULL,
        price     INTEGER NOT NULL,
        reference INTEGER NOT NULL,
        ts        INTEGER NOT NULL,
        PRIMARY KEY (alert_id, n)
    ) WITHOUT ROWID;
    CREATE INDEX alert_history_by_user ON alert_history (user_id, ts);
    -- No index on time: an insert per fill touches one B-tree, and a user's inbox is read
    -- by scanning that user's entries.
    CREATE TABLE notifications (
        user_id INTEGER NOT NULL,
        key     TEXT    NOT NULL,
        ts      INTEGER NOT NULL,
        kind    TEXT    NOT NULL,
        body    TEXT    NOT NULL,
        PRIMARY KEY (user_id, key)
    ) WITHOUT ROWID;",
    // 2: a feed's source sequence with every trade (deduplicates re-delivered trades).
    "ALTER TABLE ticks ADD COLUMN feed_seq INTEGER NOT NULL DEFAULT 0;",
    // 3: events for the Kafka relay, written with what they describe, removed once relayed.
    "CREATE TABLE outbox (
        pos     INTEGER PRIMARY KEY AUTOINCREMENT,
        id      TEXT    NOT NULL,
        kind    TEXT    NOT NULL,
        key     TEXT    NOT NULL,
        ts      INTEGER NOT NULL,
        data    TEXT    NOT NULL
    );",
    // 4: the book fill each trade follows (deduplicates fills a recovering book re-sends).
    "ALTER TABLE ticks ADD COLUMN book_trade INTEGER NOT NULL DEFAULT 0;",
    // 5: users' watchlists, one row per symbol in the user's order.
    "CREATE TABLE watchlists (
        user_id INTEGER NOT NULL,
        pos     INTEGER NOT NULL,
        symbol  TEXT    NOT NULL,
        PRIMARY KEY (user_id, pos)
    ) WITHOUT ROWID;",
    // 6: what each user held, from each point's time on (the portfolio's value history).
    "CREATE TABLE holdings (
        user_id INTEGER NOT NULL,
        ts      INTEGER NOT NULL,
        data    TEXT    NOT NULL,
        PRIMARY KEY (user_id, ts)
    ) WITHOUT ROWID;",
];

/// Readers kept open for concurrent reads.
const READERS: usize = 4;
/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite-backed store.
pub struct SqliteStore {
    path: PathBuf,
    queue: Submitter,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// A write connection of its own for [`MarketStore::acquire_lease_now`], opened on first
    /// use (a store whose node never beats never opens it).
    leaser: Arc<Mutex<Option<Connection>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn backend(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{context}: {e}"))
}

fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let mut conn = Connection::open_with_flags(path, flags)
        .map_err(|e| backend(&format!("opening {}", path.display()), e))?;
    conn.busy_handler(Some(busy_wait))
        .map_err(|e| backend("setting the busy handler", e))?;
    Ok(conn)
}

/// Waits for another process's write lock in short steps (SQLite's own busy handler sleeps
/// 1 ms, then 2, 5, 10... which adds milliseconds to every commit when several node
/// processes share one file), giving up after about [`BUSY_TIMEOUT`].
fn busy_wait(attempt: i32) -> bool {
    const FAST: i32 = 200;
    const FAST_STEP: Duration = Duration::from_micros(50);
    const SLOW_STEP: Duration = Duration::from_micros(500);
    let waited = FAST_STEP * attempt.min(FAST) as u32 + SLOW_STEP * (attempt - FAST).max(0) as u32;
    if waited >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(if attempt < FAST { FAST_STEP } else { SLOW_STEP });
    true
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) the database at `path`.
    pub fn open(path: &Path, batch_max: usize) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| backend(&format!("creating {}", dir.display()), e))?;
        }
        let mut writer = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        // Switching to WAL takes an exclusive lock and does not wait on busy_timeout: when
        // several node processes open one new file together, retry until it is set.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match writer.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;") {
                Ok(()) => break,
                Err(e)
                    if std::time::Instant::now() < deadline && e.to_string().contains("locked") =>
                {
                    std::thread::sleep(Duration::from_millis(20 + retry_spread()));
                }
                Err(e) => return Err(backend("configuring WAL", e)),
            }
        }
        migrate(&mut writer)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_connection(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?);
        }
        let (queue, rx, stats) = Submitter::new();
        let batch_max = batch_max.max(1);
        std::thread::Builder::new()
            .name("bourse-sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx, batch_max, stats))
            .map_err(|e| backend("starting the writer thread", e))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            queue,
            readers: Arc::new(Mutex::new(readers)),
            leaser: Arc::default(),
        })
    }

    /// Batch statistics so far.
    pub fn writer_stats(&self) -> WriterStats {
        self.queue.stats()
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?,
            };
            let result = f(&conn).map_err(|e| backend("reading", e));
            let mut pool = readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < READERS {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| backend("reader task", e))?
    }
}

/// A per-process offset of up to 16 ms, so processes retrying together spread out.
fn retry_spread() -> u64 {
    u64::from(std::process::id() % 17)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // IMMEDIATE: two processes opening one new file must not both run the migrations.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| backend("starting migration", e))?;
    let version: usize = tx
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(|e| backend("reading schema version", e))? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is newer than this build ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)
            .map_err(|e| backend(&format!("migration {}", i + 1), e))?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)
        .map_err(|e| backend("recording schema version", e))?;
    tx.commit().map_err(|e| backend("committing migration", e))
}

fn side_code(side: Side) -> i64 {
    match side {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

/// Applies one write inside the batch transaction. The outer error aborts the batch (a
/// database failure); the inner one is this write's own outcome (fenced).
fn apply(
    tx: &rusqlite::Transaction<'_>,
    write: &Write,
) -> rusqlite::Result<Result<u64, StoreError>> {
    match write {
        Write::Ticks(ticks) => {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO ticks
                   (symbol, trade_id, ts, price, qty, side, feed_seq, book_trade)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for t in ticks {
                stmt.execute(params![
                    t.symbol,
                    t.trade_id as i64,
                    t.ts,
                    t.price as i64,
                    t.qty as i64,
                    side_code(t.side),
                    t.feed_seq as i64,
                    t.book_trade as i64
                ])?;
            }
            Ok(Ok(0))
        }
        Write::Candles { symbol, candles } => {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO candles
                 (symbol, interval, open_time, open, high, low, close, volume)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for (interval, c) in candles {
                stmt.execute(params![
                    symbol,
                    interval.as_str(),
                    c.open_time,
                    c.open as i64,
                    c.high as i64,
                    c.low as i64,
                    c.close as i64,
                    c.volume as i64
                ])?;
            }
            Ok(Ok(0))
        }
        Write::Fenced { fence, write } => {
            let current = lease_epoch(tx, &fence.kind, &fence.key)?;
            if current != Some(fence.epoch) {
                return Ok(Err(fence.refusal(current)));
            }
            apply(tx, write)
        }
        Write::AcquireLease { kind, key, node } => Ok(Ok(take_lease(tx, kind, key, node)?)),
        Write::ReleaseLease { kind, key, epoch } => {
            tx.prepare_cached(
                "UPDATE leases SET owner = '' WHERE kind = ?1 AND key = ?2 AND epoch = ?3",
            )?
            .execute(params![kind, key, *epoch as i64])?;
            Ok(Ok(0))
        }
        Write::Journal {
            kind,
            key,
            seq,
            entry,
        } => {
            let added = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO journal (kind, key, seq, entry) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![kind, key, *seq as i64, entry])?;
            if added == 0 {
                return Ok(Err(StoreError::Conflict(format!(
                    "{kind}/{key}: journal entry {seq} already exists"
                ))));
            }
            Ok(Ok(0))
        }
        Write::Snapshot {
            kind,
            key,
            seq,
            state,
        } => {
            tx.prepare_cached(
                "INSERT INTO snapshots (kind, key, seq, state) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, key) DO UPDATE SET seq = ?3, state = ?4",
            )?
            .execute(params![kind, key, *seq as i64, state])?;
            tx.prepare_cached("DELETE FROM journal WHERE kind = ?1 AND key = ?2 AND seq <= ?3")?
                .execute(params![kind, key, *seq as i64])?;
            Ok(Ok(0))
        }
        Write::Chat(m) => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO chat (room, message_id, user_id, username, text, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                m.room,
                m.message_id as i64,
                m.user_id as i64,
                m.username,
                m.text,
                m.ts
            ])?;
            Ok(Ok(0))
        }
        Write::CreateUser {
            username,
            password_hash,
            created_at,
        } => {
            let added = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO users (username, password_hash, created_at)
                     VALUES (?1, ?2, ?3)",
                )?
                .execute(params![username, password_hash, created_at])?;
            if added == 0 {
                return Ok(Err(StoreError::Conflict(format!(
                    "username '{username}' is taken"
                ))));
            }
            Ok(Ok(tx.last_insert_rowid() as u64))
        }
        Write::CreateAlert(a) => {
            tx.prepare_cached(
                "INSERT INTO alerts (user_id, symbol, condition, value, repeat, cooldown_s,
                 created_at, status, last_fired_at, fired_count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'armed', 0, 0)",
            )?
            .execute(params![
                a.user_id as i64,
                a.symbol,
                a.condition,
                a.value,
                a.repeat,
                a.cooldown_s,
                a.created_at
            ])?;
            Ok(Ok(tx.last_insert_rowid() as u64))
        }
        Write::AlertFired {
            firing: f,
            one_shot,
        } => {
            let added = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO alert_history
                     (alert_id, n, user_id, symbol, condition, value, price, reference, ts)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    f.alert_id as i64,
                    f.n as i64,
                    f.user_id as i64,
                    f.symbol,
                    f.condition,
                    f.value,
                    f.price as i64,
                    f.reference as i64,
                    f.ts
                ])?;
            if added == 1 {
                tx.prepare_cached(
                    "UPDATE alerts SET last_fired_at = ?2, fired_count = ?3,
                     status = CASE WHEN ?4 AND status = 'armed' THEN 'fired' ELSE status END
                     WHERE alert_id = ?1",
                )?
                .execute(params![
                    f.alert_id as i64,
                    f.ts,
                    f.n as i64,
                    one_shot
                ])?;
            }
            Ok(Ok(0))
        }
        Write::DeleteAlert { alert_id } => {
            tx.prepare_cached("UPDATE alerts SET status = 'deleted' WHERE alert_id = ?1")?
                .execute(params![*alert_id as i64])?;
            Ok(Ok(0))
        }
        Write::Watchlist { user_id, symbols } => {
            tx.prepare_cached("DELETE FROM watchlists WHERE user_id = ?1")?
                .execute(params![*user_id as i64])?;
            let mut stmt = tx.prepare_cached(
                "INSERT INTO watchlists (user_id, pos, symbol) VALUES (?1, ?2, ?3)",
            )?;
            for (pos, symbol) in symbols.iter().enumerate() {
                stmt.execute(params![*user_id as i64, pos as i64, symbol])?;
            }
            Ok(Ok(0))
        }
        Write::Holdings { user_id, ts, data } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO holdings (user_id, ts, data) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![*user_id as i64, *ts, data])?;
            Ok(Ok(0))
        }
        Write::Notify(n) => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO notifications (user_id, key, ts, kind, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![n.user_id as i64, n.key, n.ts, n.kind, n.body])?;
            Ok(Ok(0))
        }
        Write::WithEvents { write, events } => {
            let applied = apply(tx, write)?;
            if applied.is_ok() {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO outbox (id, kind, key, ts, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for e in events {
                    stmt.execute(params![e.id, e.kind, e.key, e.ts, e.data])?;
                }
            }
            Ok(applied)
        }
        Write::Relayed { positions } => {
            let mut stmt = tx.prepare_cached("DELETE FROM outbox WHERE pos = ?1")?;
            for p in positions {
                stmt.execute(params![*p as i64])?;
            }
            Ok(Ok(0))
        }
        Write::PruneInbox {
            before,
            keep_per_user,
        } => {
            let old = tx
                .prepare_cached("DELETE FROM notifications WHERE ts < ?1")?
                .execute(params![*before])?;
            let over = tx
                .prepare_cached(&crate::retention::over_cap_delete("?1"))?
                .execute(params![i64::try_from(*keep_per_user).unwrap_or(i64::MAX)])?;
            Ok(Ok((old + over) as u64))
        }
        Write::PruneHoldings { before } => {
            let gone = tx
                .prepare_cached(&crate::retention::holdings_prune("?1"))?
                .execute(params![*before])?;
            Ok(Ok(gone as u64))
        }
    }
}

const ALERT_COLUMNS: &str = "alert_id, user_id, symbol, condition, value, repeat, cooldown_s,
     created_at, status, last_fired_at, fired_count";

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRecord> {
    let status: String = r.get(8)?;
    Ok(AlertRecord {
        alert_id: r.get::<_, i64>(0)? as u64,
        user_id: r.get::<_, i64>(1)? as u64,
        symbol: r.get(2)?,
        condition: r.get(3)?,
        value: r.get(4)?,
        repeat: r.get(5)?,
        cooldown_s: r.get(6)?,
        created_at: r.get(7)?,
        status: AlertStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                8,
                rusqlite::types::Type::Text,
                format!("unknown alert status '{status}'").into(),
            )
        })?,
        last_fired_at: r.get(9)?,
        fired_count: r.get::<_, i64>(10)? as u64,
    })
}

/// Takes the lease of `kind/key` for `owner` (the queue's take-over and a lease taken at
/// once alike): its epoch one higher, 1 for a new one; returns the new epoch.
fn take_lease(c: &Connection, kind: &str, key: &str, owner: &str) -> rusqlite::Result<u64> {
    c.prepare_cached(
        "INSERT INTO leases (kind, key, owner, epoch) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (kind, key) DO UPDATE SET owner = ?3, epoch = epoch + 1
         RETURNING epoch",
    )?
    .query_row(params![kind, key, owner], |r| r.get::<_, i64>(0))
    .map(|epoch| epoch as u64)
}

fn lease_epoch(
    tx: &rusqlite::Transaction<'_>,
    kind: &str,
    key: &str,
) -> rusqlite::Result<Option<u64>> {
    use rusqlite::OptionalExtension;
    tx.prepare_cached("SELECT epoch FROM leases WHERE kind = ?1 AND key = ?2")?
        .query_row(params![kind, key], |r| r.get::<_, i64>(0))
        .optional()
        .map(|e| e.map(|e| e as u64))
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Op>,
    batch_max: usize,
    stats: Arc<Mutex<WriterStats>>,
) {
    let mut closing = None;
    let mut halted = Halted::default();
    while closing.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let batch = Batch::gather(first, &mut rx, batch_max, &halted);
        let started = Instant::now();
        let outcomes = commit(&mut conn, &batch.writes);
        closing = batch.settle(outcomes, started.elapsed(), &stats, &mut halted, "sqlite");
    }
    queue::finish(&mut rx, closing);
}

/// Commits a batch in one IMMEDIATE transaction (the cross-process write lock, so lease
/// compare-and-set is atomic between node processes). Returns each write's own outcome, or
/// the error that aborted the whole batch.
fn commit(
    conn: &mut Connection,
    batch: &[(Write, Reply)],
) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| backend("starting batch", e))?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (w, _) in batch {
        outcomes.push(apply(&tx, w).map_err(|e| backend("writing batch", e))?);
    }
    tx.commit().map_err(|e| backend("committing batch", e))?;
    Ok(outcomes)
}

fn tick_row(symbol: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<Tick> {
    Ok(Tick {
        symbol: symbol.to_string(),
        trade_id: r.get::<_, i64>(0)? as u64,
        ts: r.get(1)?,
        price: r.get::<_, i64>(2)? as u64,
        qty: r.get::<_, i64>(3)? as u64,
        side: if r.get::<_, i64>(4)? == 0 {
            Side::Buy
        } else {
            Side::Sell
        },
        feed_seq: r.get::<_, i64>(5)? as u64,
        book_trade: r.get::<_, i64>(6)? as u64,
    })
}

fn candle_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Candle> {
    Ok(Candle {
        open_time: r.get(0)?,
        open: r.get::<_, i64>(1)? as u64,
        high: r.get::<_, i64>(2)? as u64,
        low: r.get::<_, i64>(3)? as u64,
        close: r.get::<_, i64>(4)? as u64,
        volume: r.get::<_, i64>(5)? as u64,
    })
}

#[async_trait]
impl MarketStore for SqliteStore {
    fn submit(&self, write: Write) -> Ack {
        self.queue.submit(write)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.queue.flush().await
    }

    async fn acquire_lease_now(
        &self,
        kind: &str,
        key: &str,
        owner: &str,
    ) -> Result<u64, StoreError> {
        self.queue.ensure_open()?;
        let (kind, key, owner) = (kind.to_string(), key.to_string(), owner.to_string());
        let (slot, path) = (self.leaser.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            let conn = match slot.as_mut() {
                Some(conn) => conn,
                None => {
                    let conn = open_connection(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
                    // As the writer's: a lease taken at once need not survive a power cut.
                    conn.execute_batch("PRAGMA synchronous = NORMAL;")
                        .map_err(|e| backend("configuring the lease connection", e))?;
                    slot.insert(conn)
                }
            };
            take_lease(conn, &kind, &key, &owner)
                .map_err(|e| backend(&format!("taking the lease {kind}/{key}"), e))
        })
        .await
        .map_err(|e| backend("lease task", e))?
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.queue.close().await
    }
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn outbox(&self, limit: usize) -> Result<Vec<(u64, OutboxEvent)>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT pos, id, kind, key, ts, data FROM outbox ORDER BY pos LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    OutboxEvent {
                        id: r.get(1)?,
                        kind: r.get(2)?,
                        key: r.get(3)?,
                        ts: r.get(4)?,
                        data: r.get(5)?,
                    },
                ))
            })?;
            rows.collect()
        })
        .await
    }
}

#[async_trait]
impl MarketDataStore for SqliteStore {
    async fn recent_ticks(&self, symbol: &str, limit: usize) -> Result<Vec<Tick>, StoreError> {
        let symbol = symbol.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT trade_id, ts, price, qty, side, feed_seq, book_trade FROM ticks
                 WHERE symbol = ?1 ORDER BY trade_id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![symbol, limit as i64], |r| tick_row(&symbol, r))?;
            rows.collect()
        })
        .await
    }

    async fn ticks_since(&self, symbol: &str, from_ts: i64) -> Result<Vec<Tick>, StoreError> {
        let symbol = symbol.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT trade_id, ts, price, qty, side, feed_seq, book_trade FROM ticks
                 WHERE symbol = ?1 AND ts >= ?2 ORDER BY trade_id ASC",
            )?;
            let rows = stmt.query_map(params![symbol, from_ts], |r| tick_row(&symbol, r))?;
            rows.collect()
        })
        .await
    }

    async fn last_trade_id(&self, symbol: &str) -> Result<u64, StoreError> {
        let symbol = symbol.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT COALESCE(MAX(trade_id), 0) FROM ticks WHERE symbol = ?1",
                params![symbol],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v as u64)
        })
        .await
    }

    async fn candles(
        &self,
        symbol: &str,
        interval: Interval,
        end: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Candle>, StoreError> {
        let symbol = symbol.to_string();
        let end = end.unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT open_time, open, high, low, close, volume FROM candles
                 WHERE symbol = ?1 AND interval = ?2 AND open_time < ?3
                 ORDER BY open_time DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![symbol, interval.as_str(), end, limit as i64],
                candle_row,
            )?;
            let mut out: Vec<Candle> = rows.collect::<rusqlite::Result<_>>()?;
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn candles_between(
        &self,
        symbol: &str,
        interval: Interval,
        from: i64,
        to: i64,
    ) -> Result<Vec<Candle>, StoreError> {
        let symbol = symbol.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT open_time, open, high, low, close, volume FROM candles
                 WHERE symbol = ?1 AND interval = ?2 AND open_time >= ?3 AND open_time < ?4
                 ORDER BY open_time ASC",
            )?;
            let rows = stmt.query_map(params![symbol, interval.as_str(), from, to], candle_row)?;
            rows.collect()
        })
        .await
    }
}

#[async_trait]
impl JournalStore for SqliteStore {
    async fn lease(&self, kind: &str, key: &str) -> Result<Option<(String, u64)>, StoreError> {
        let (kind, key) = (kind.to_string(), key.to_string());
        self.read(move |c| {
            use rusqlite::OptionalExtension;
            c.query_row(
                "SELECT owner, epoch FROM leases WHERE kind = ?1 AND key = ?2",
                params![kind, key],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .optional()
        })
        .await
    }

    async fn snapshot(&self, kind: &str, key: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let (kind, key) = (kind.to_string(), key.to_string());
        self.read(move |c| {
            use rusqlite::OptionalExtension;
            c.prepare_cached("SELECT seq, state FROM snapshots WHERE kind = ?1 AND key = ?2")?
                .query_row(params![kind, key], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
                })
                .optional()
        })
        .await
    }

    async fn journal_after(
        &self,
        kind: &str,
        key: &str,
        after: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let (kind, key) = (kind.to_string(), key.to_string());
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, entry FROM journal WHERE kind = ?1 AND key = ?2 AND seq > ?3
                 ORDER BY seq ASC",
            )?;
            let rows = stmt.query_map(params![kind, key, after as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
            })?;
            rows.collect()
        })
        .await
    }
}

#[async_trait]
impl ChatStore for SqliteStore {
    async fn chat_history(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let room = room.to_string();
        // Ids fit in 63 bits: anything larger is "before every message", not a wrap.
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT message_id, user_id, username, text, ts FROM chat
                 WHERE room = ?1 AND message_id < ?2 ORDER BY message_id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![room, before, limit as i64], |r| {
                Ok(ChatMessage {
                    room: room.clone(),
                    message_id: r.get::<_, i64>(0)? as u64,
                    user_id: r.get::<_, i64>(1)? as u64,
                    username: r.get(2)?,
                    text: r.get(3)?,
                    ts: r.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let username = username.to_string();
        self.read(move |c| {
            use rusqlite::OptionalExtension;
            c.prepare_cached(
                "SELECT user_id, username, password_hash, created_at FROM users
                 WHERE username = ?1",
            )?
            .query_row(params![username], |r| {
                Ok(UserRecord {
                    user_id: r.get::<_, i64>(0)? as u64,
                    username: r.get(1)?,
                    password_hash: r.get(2)?,
                    created_at: r.get(3)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn watchlist(&self, user_id: u64) -> Result<Vec<String>, StoreError> {
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT symbol FROM watchlists WHERE user_id = ?1 ORDER BY pos")?;
            let rows = stmt.query_map(params![user_id as i64], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn holdings(
        &self,
        user_id: u64,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&crate::sql::holdings_read("?1", "?2", "?3"))?;
            let rows = stmt.query_map(params![user_id as i64, from, to], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect()
        })
        .await
    }

    async fn holdings_at(&self, ts: i64) -> Result<Vec<(u64, i64, String)>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&crate::sql::holdings_at("?1"))?;
            let rows = stmt.query_map(params![ts], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
            })?;
            rows.collect()
        })
        .await
    }
}

#[async_trait]
impl AlertStore for SqliteStore {
    async fn alert(&self, alert_id: u64) -> Result<Option<AlertRecord>, StoreError> {
        self.read(move |c| {
            use rusqlite::OptionalExtension;
            c.prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = ?1"
            ))?
            .query_row(params![alert_id as i64], alert_row)
            .optional()
        })
        .await
    }

    async fn alerts_of(&self, user_id: u64) -> Result<Vec<AlertRecord>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts
                 WHERE user_id = ?1 AND status != 'deleted' ORDER BY alert_id"
            ))?;
            let rows = stmt.query_map(params![user_id as i64], alert_row)?;
            rows.collect()
        })
        .await
    }

    async fn alert_count(&self, user_id: u64) -> Result<usize, StoreError> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT count(*) FROM alerts WHERE user_id = ?1 AND status != 'deleted'",
            )?
            .query_row(params![user_id as i64], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
        })
        .await
    }

    async fn armed_alerts(&self, symbol: &str) -> Result<Vec<AlertRecord>, StoreError> {
        let symbol = symbol.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts
                 WHERE symbol = ?1 AND status = 'armed' ORDER BY alert_id"
            ))?;
            let rows = stmt.query_map(params![symbol], alert_row)?;
            rows.collect()
        })
        .await
    }

    async fn alert_history(
        &self,
        user_id: u64,
        limit: usize,
    ) -> Result<Vec<AlertFiring>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT alert_id, n, user_id, symbol, condition, value, price, reference, ts
                 FROM alert_history WHERE user_id = ?1
                 ORDER BY ts DESC, alert_id DESC, n DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![user_id as i64, limit as i64], |r| {
                Ok(AlertFiring {
                    alert_id: r.get::<_, i64>(0)? as u64,
                    n: r.get::<_, i64>(1)? as u64,
                    user_id: r.get::<_, i64>(2)? as u64,
                    symbol: r.get(3)?,
                    condition: r.get(4)?,
                    value: r.get(5)?,
                    price: r.get::<_, i64>(6)? as u64,
                    reference: r.get::<_, i64>(7)? as u64,
                    ts: r.get(8)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn notifications(
        &self,
        user_id: u64,
        since: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        self.read(move |c| {
            // A page never ends inside one millisecond: it takes every entry of its last
            // `ts`, so the next page, `since` that ts, misses nothing.
            let mut stmt = c.prepare_cached(
                "SELECT key, ts, kind, body FROM notifications
                 WHERE user_id = ?1 AND ts > ?2 AND ts <= (
                     SELECT max(ts) FROM (SELECT ts FROM notifications
                         WHERE user_id = ?1 AND ts > ?2 ORDER BY ts LIMIT ?3))
                 ORDER BY ts, key",
            )?;
            let rows = stmt.query_map(params![user_id as i64, since, limit as i64], |r| {
                Ok(Notification {
                    user_id,
                    key: r.get(0)?,
                    ts: r.get(1)?,
                    kind: r.get(2)?,
                    body: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}
