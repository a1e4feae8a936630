//! The PostgreSQL schema, created and migrated when a node connects. Migrations run in one
//! transaction under an advisory lock, so nodes starting together migrate once.

use super::{Client, pg};
use crate::StoreError;

/// Migrations, applied in order; `bourse_schema.version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite schema holds after its fifth migration, in PostgreSQL types:
    // u64 values are stored as BIGINT (they fit in 63 bits), ids come from sequences.
    "CREATE TABLE ticks (
        symbol   TEXT     NOT NULL,
        trade_id BIGINT   NOT NULL,
        ts       BIGINT   NOT NULL,
        price    BIGINT   NOT NULL,
        qty      BIGINT   NOT NULL,
        side     SMALLINT NOT NULL,
        PRIMARY KEY (symbol, trade_id)
    );
    CREATE INDEX ticks_by_time ON ticks (symbol, ts);
    CREATE TABLE candles (
        symbol    TEXT   NOT NULL,
        period    TEXT   NOT NULL,
        open_time BIGINT NOT NULL,
        open      BIGINT NOT NULL,
        high      BIGINT NOT NULL,
        low       BIGINT NOT NULL,
        close     BIGINT NOT NULL,
        volume    BIGINT NOT NULL,
        PRIMARY KEY (symbol, period, open_time)
    );
    CREATE TABLE leases (
        kind  TEXT   NOT NULL,
        key   TEXT   NOT NULL,
        owner TEXT   NOT NULL,
        epoch BIGINT NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE TABLE journal (
        kind  TEXT   NOT NULL,
        key   TEXT   NOT NULL,
        seq   BIGINT NOT NULL,
        entry BYTEA  NOT NULL,
        PRIMARY KEY (kind, key, seq)
    );
    CREATE TABLE snapshots (
        kind  TEXT   NOT NULL,
        key   TEXT   NOT NULL,
        seq   BIGINT NOT NULL,
        state BYTEA  NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE TABLE users (
        user_id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        username      TEXT   NOT NULL UNIQUE,
        password_hash TEXT   NOT NULL,
        created_at    BIGINT NOT NULL
    );
    CREATE TABLE chat (
        room       TEXT   NOT NULL,
        message_id BIGINT NOT NULL,
        user_id    BIGINT NOT NULL,
        username   TEXT   NOT NULL,
        text       TEXT   NOT NULL,
        ts         BIGINT NOT NULL,
        PRIMARY KEY (room, message_id)
    );
    CREATE TABLE alerts (
        alert_id      BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id       BIGINT  NOT NULL,
        symbol        TEXT    NOT NULL,
        condition     TEXT    NOT NULL,
        value         BIGINT  NOT NULL,
        repeat        BOOLEAN NOT NULL,
        cooldown_s    BIGINT  NOT NULL,
        created_at    BIGINT  NOT NULL,
        status        TEXT    NOT NULL,
        last_fired_at BIGINT  NOT NULL,
        fired_count   BIGINT  NOT NULL
    );
    CREATE INDEX alerts_by_user ON alerts (user_id, alert_id);
    CREATE INDEX alerts_by_symbol ON alerts (symbol, status);
    CREATE TABLE alert_history (
        alert_id  BIGINT NOT NULL,
        n         BIGINT NOT NULL,
        user_id   BIGINT NOT NULL,
        symbol    TEXT   NOT NULL,
        condition TEXT   NOT NULL,
        value     BIGINT NOT NULL,
        price     BIGINT NOT NULL,
        reference BIGINT NOT NULL,
        ts        BIGINT NOT NULL,
        PRIMARY KEY (alert_id, n)
    );
    CREATE INDEX alert_history_by_user ON alert_history (user_id, ts);
    CREATE TABLE notifications (
        user_id BIGINT NOT NULL,
        key     TEXT   NOT NULL,
        ts      BIGINT NOT NULL,
        kind    TEXT   NOT NULL,
        body    TEXT   NOT NULL,
        PRIMARY KEY (user_id, key)
    );",
    // 2: a feed's source sequence with every trade (deduplicates re-delivered trades).
    "ALTER TABLE ticks ADD COLUMN feed_seq BIGINT NOT NULL DEFAULT 0;",
    // 3: events for the Kafka relay, written with what they describe, removed once relayed.
    "CREATE TABLE outbox (
        pos     BIGSERIAL PRIMARY KEY,
        id      TEXT   NOT NULL,
        kind    TEXT   NOT NULL,
        key     TEXT   NOT NULL,
        ts      BIGINT NOT NULL,
        data    TEXT   NOT NULL
    );",
    // 4: the book fill each trade follows (deduplicates fills a recovering book re-sends).
    "ALTER TABLE ticks ADD COLUMN book_trade BIGINT NOT NULL DEFAULT 0;",
    // 5: users' watchlists, one row each, replaced whole (so never torn by two writers).
    "CREATE TABLE watchlists (
        user_id BIGINT PRIMARY KEY,
        symbols TEXT[] NOT NULL
    );",
    // 6: what each user held, from each point's time on (the portfolio's value history).
    "CREATE TABLE holdings (
        user_id BIGINT NOT NULL,
        ts      BIGINT NOT NULL,
        data    TEXT   NOT NULL,
        PRIMARY KEY (user_id, ts)
    );",
];

/// An arbitrary constant naming bourse's migration lock among the database's advisory locks.
const MIGRATION_LOCK: i64 = 0x626f_7572_7365;

/// Creates or migrates the schema; refuses a database migrated by a newer build.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| pg("starting migration", e))?;
    // Nodes starting together wait for one another's migration longer than a batch may
    // wait for a row lock.
    tx.batch_execute("SET LOCAL lock_timeout = '60s'; SET LOCAL statement_timeout = '120s'")
        .await
        .map_err(|e| pg("setting migration timeouts", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| pg("taking the migration lock", e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS bourse_schema (version BIGINT NOT NULL)")
        .await
        .map_err(|e| pg("creating bourse_schema", e))?;
    let version: i64 = tx
        .query_opt("SELECT version FROM bourse_schema", &[])
        .await
        .map_err(|e| pg("reading schema version", e))?
        .map_or(0, |r| r.get(0));
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is newer than this build ({known})"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| pg(&format!("migration {}", i + 1), e))?;
    }
    tx.execute("DELETE FROM bourse_schema", &[])
        .await
        .map_err(|e| pg("recording schema version", e))?;
    tx.execute("INSERT INTO bourse_schema (version) VALUES ($1)", &[&known])
        .await
        .map_err(|e| pg("recording schema version", e))?;
    tx.commit().await.map_err(|e| pg("committing migration", e))
}
