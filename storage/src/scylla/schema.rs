//! The ScyllaDB keyspace and tables, created at connect when missing. Every partition is
//! bounded: ticks by symbol and day, candles by a span of 10,000 candles, chat by 4,096 message ids,
//! journals by their snapshots; the small `*_days` / `*_buckets` tables list which
//! partitions exist, newest first, so reads walk back through them without scanning.

use super::{Cs, cql};
use crate::StoreError;

/// The schema version this build writes (4: `ticks.book_trade`). Earlier versions were never
/// run against a server and are not migrated: a keyspace recorded at another version is
/// refused.
const VERSION: i64 = 4;

/// Tables, in the keyspace the session uses. A `fence` column holds the newest lease epoch
/// that claimed its partition (see `fence.rs`); where the table has clustering rows it is
/// static, so one conditional batch covers the partition's rows and its fence.
const TABLES: &[&str] = &[
    // Trade ids rise with time within a symbol, so a day's rows in trade id order are in
    // time order too; one row per trade id, so a replay finds it and leaves it.
    "CREATE TABLE IF NOT EXISTS ticks (
        symbol text, day bigint, trade_id bigint, ts bigint,
        price bigint, qty bigint, side tinyint, feed_seq bigint, book_trade bigint,
        fence bigint STATIC,
        PRIMARY KEY ((symbol, day), trade_id))",
    "CREATE TABLE IF NOT EXISTS tick_days (
        symbol text, day bigint, PRIMARY KEY ((symbol), day))
        WITH CLUSTERING ORDER BY (day DESC)",
    "CREATE TABLE IF NOT EXISTS candles (
        symbol text, period text, bucket bigint, open_time bigint,
        open bigint, high bigint, low bigint, close bigint, volume bigint, fence bigint STATIC,
        PRIMARY KEY ((symbol, period, bucket), open_time))",
    "CREATE TABLE IF NOT EXISTS candle_buckets (
        symbol text, period text, bucket bigint, PRIMARY KEY ((symbol, period), bucket))
        WITH CLUSTERING ORDER BY (bucket DESC)",
    // One partition per entity: the lease, the partitions it registered and the snapshot
    // are static columns beside the journal rows, so every journal, snapshot and lease
    // write is one lightweight transaction on one partition, conditional on the epoch.
    "CREATE TABLE IF NOT EXISTS entities (
        kind text, key text, seq bigint, entry blob,
        owner text STATIC, epoch bigint STATIC, parts set<text> STATIC,
        snap_seq bigint STATIC, snap blob STATIC,
        PRIMARY KEY ((kind, key), seq))",
    "CREATE TABLE IF NOT EXISTS chat (
        room text, bucket bigint, message_id bigint,
        user_id bigint, username text, text text, ts bigint, fence bigint STATIC,
        PRIMARY KEY ((room, bucket), message_id))
        WITH CLUSTERING ORDER BY (message_id DESC)",
    "CREATE TABLE IF NOT EXISTS chat_buckets (
        room text, bucket bigint, PRIMARY KEY ((room), bucket))
        WITH CLUSTERING ORDER BY (bucket DESC)",
    "CREATE TABLE IF NOT EXISTS users (
        username text PRIMARY KEY, user_id bigint, password_hash text, created_at bigint)",
    "CREATE TABLE IF NOT EXISTS user_ids (user_id bigint PRIMARY KEY)",
    // A rule is the static part of its partition; each firing is a row of it, so a firing,
    // the rule's counters and its fence change in one conditional batch.
    "CREATE TABLE IF NOT EXISTS alerts (
        alert_id bigint, n bigint, ts bigint, price bigint, reference bigint,
        user_id bigint STATIC, symbol text STATIC, condition text STATIC, value bigint STATIC,
        repeat boolean STATIC, cooldown_s int STATIC, created_at bigint STATIC,
        status text STATIC, last_fired_at bigint STATIC, fired_count bigint STATIC,
        fence bigint STATIC,
        PRIMARY KEY ((alert_id), n))",
    "CREATE TABLE IF NOT EXISTS alerts_by_user (
        user_id bigint, alert_id bigint, PRIMARY KEY ((user_id), alert_id))",
    // Which rules a symbol arms; a rule's status (in `alerts`) has the last word.
    "CREATE TABLE IF NOT EXISTS alerts_armed (
        symbol text, alert_id bigint, fence bigint STATIC, PRIMARY KEY ((symbol), alert_id))",
    // A user's firings, newest first: written before the firing itself, and read only where
    // the rule's partition holds that firing at that time (a refused or replayed firing's
    // row is never shown).
    "CREATE TABLE IF NOT EXISTS alert_history (
        user_id bigint, ts bigint, alert_id bigint, n bigint, symbol text, condition text,
        value bigint, price bigint, reference bigint,
        PRIMARY KEY ((user_id), ts, alert_id, n))
        WITH CLUSTERING ORDER BY (ts DESC, alert_id DESC, n DESC)",
    // An inbox key, claimed once, with the time of the entry that claimed it; an entry is
    // written before its claim and read only where its key was claimed at its time.
    "CREATE TABLE IF NOT EXISTS notification_keys (
        user_id bigint, key text, ts bigint, PRIMARY KEY ((user_id), key))",
    "CREATE TABLE IF NOT EXISTS notifications (
        user_id bigint, ts bigint, key text, kind text, body text,
        PRIMARY KEY ((user_id), ts, key))",
    // A user's watchlist, replaced whole. A table added without a new version: creating
    // it when missing is all a keyspace of this version needs.
    "CREATE TABLE IF NOT EXISTS watchlists (user_id bigint PRIMARY KEY, symbols list<text>)",
    // What a user held from each point's time on, newest first (added the same way).
    "CREATE TABLE IF NOT EXISTS holdings (
        user_id bigint, ts bigint, data text, PRIMARY KEY ((user_id), ts))
        WITH CLUSTERING ORDER BY (ts DESC)",
    "CREATE TABLE IF NOT EXISTS bourse_schema (id int PRIMARY KEY, version bigint)",
];

/// Creates the keyspace (`replication_factor` copies of every row) and the tables when
/// missing, and refuses a keyspace written by a newer build.
pub(super) async fn migrate(
    cs: &Cs,
    keyspace: &str,
    replication_factor: u32,
) -> Result<(), StoreError> {
    if !bourse_config::valid_keyspace(keyspace) {
        return Err(StoreError::Backend(format!(
            "storage.keyspace '{keyspace}': a-z, 0-9 and _, starting with a letter"
        )));
    }
    // Lightweight transactions (every lease, journal and username write) need a keyspace
    // without tablets on ScyllaDB versions that have them; servers that know no such option
    // are asked without it (and the LWT below checks that they take LWTs).
    let replication = format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'NetworkTopologyStrategy', 'replication_factor': {replication_factor}}}"
    );
    let without_tablets = format!("{replication} AND tablets = {{'enabled': false}}");
    if let Err(e) = cs.get_session().query_unpaged(without_tablets, ()).await {
        let text = e.to_string();
        if !text.to_ascii_lowercase().contains("tablets") {
            return Err(cql("creating the keyspace", text));
        }
        cs.get_session()
            .query_unpaged(replication, ())
            .await
            .map_err(|e| cql("creating the keyspace", e))?;
    }
    cs.get_session()
        .use_keyspace(keyspace, false)
        .await
        .map_err(|e| cql("using the keyspace", e))?;
    for table in TABLES {
        cs.get_session()
            .query_unpaged(*table, ())
            .await
            .map_err(|e| cql("creating a table", e))?;
    }
    cs.get_session()
        .await_schema_agreement()
        .await
        .map_err(|e| cql("waiting for schema agreement", e))?;
    // The version is recorded by a lightweight transaction, so a keyspace where those do
    // not work (one with tablets, on ScyllaDB versions without LWT support for them, even if
    // the server ignored the option above) is refused here, at start, with the server's
    // words, rather than at the first lease.
    let recorded = super::cas(
        cs,
        "INSERT INTO bourse_schema (id, version) VALUES (0, ?) IF NOT EXISTS",
        (VERSION,),
        "recording the schema version",
    )
    .await
    .map_err(|e| {
        StoreError::Backend(format!(
            "keyspace {keyspace} must take lightweight transactions (on ScyllaDB: created \
             with tablets = {{'enabled': false}}): {e}"
        ))
    })?
    .ok_or_else(|| super::unknown("recording the schema version"))?;
    let found = if recorded.applied {
        VERSION
    } else {
        recorded.bigint("version").map_or(0, |v| v as i64)
    };
    match found {
        v if v > VERSION => Err(StoreError::Backend(format!(
            "keyspace {keyspace} has schema version {v}, newer than this build ({VERSION})"
        ))),
        v if v < VERSION => Err(StoreError::Backend(format!(
            "keyspace {keyspace} has schema version {v}, which this build does not migrate \
             (it never held data outside tests): drop the keyspace and start again"
        ))),
        _ => Ok(()),
    }
}
