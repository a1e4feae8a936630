//! ScyllaDB: the scale-out store (the `scylla` driver, prepared statements through its
//! caching session, token-aware routing on bound partition keys, QUORUM reads and writes,
//! SERIAL for lightweight transactions).
//!
//! Writes go through the same ordered queue as the other backends ([`crate::queue`]); one
//! writer task applies each batch's writes in order. ScyllaDB has no transaction across
//! partitions, so a batch is not atomic as a whole: each write is (a tick or candle write
//! is one single-partition batch per partition). The first write that fails stops the
//! batch, which then fails as a whole: its leases halt (see [`crate::queue`]) and the rest
//! of it is never sent. How each table is fenced: see [`write`].
//!
//! This backend passes the contract suite only where a ScyllaDB server is configured
//! (`BOURSE_SCYLLA_URI`); the machines bourse is developed on cannot run one.

mod read;
mod schema;
mod write;

use crate::queue::{self, Batch, Halted, Op, Submitter, WriterStats};
use crate::{Ack, MarketStore, StoreError, Write};
use async_trait::async_trait;
use scylla::client::caching_session::CachingSession;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::unprepared::Statement;
use scylla::statement::{Consistency, SerialConsistency};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The driver's session with its prepared-statement cache.
pub(crate) type Cs = CachingSession;

/// How long connecting, and each request, may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Prepared statements kept.
const CACHE: usize = 256;

/// A store error from a driver error, with context.
pub(crate) fn cql(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{context}: {e}"))
}

/// Runs `statement` (prepared once, then from the cache) with `values`.
pub(crate) async fn exec(
    cs: &Cs,
    statement: impl Into<Statement>,
    values: impl SerializeRow,
    context: &str,
) -> Result<QueryResult, StoreError> {
    cs.execute_unpaged(statement, values)
        .await
        .map_err(|e| cql(context, e))
}

/// Runs a query and decodes its rows.
pub(crate) async fn rows<R>(
    cs: &Cs,
    statement: impl Into<Statement>,
    values: impl SerializeRow,
    context: &str,
) -> Result<Vec<R>, StoreError>
where
    R: for<'f> DeserializeRow<'f, 'f>,
{
    let result = exec(cs, statement, values, context).await?;
    let rows = result.into_rows_result().map_err(|e| cql(context, e))?;
    rows.rows::<R>()
        .map_err(|e| cql(context, e))?
        .collect::<Result<Vec<R>, _>>()
        .map_err(|e| cql(context, e))
}

/// A statement read at SERIAL consistency: it sees every lightweight transaction that
/// completed, and completes any one left half done.
pub(crate) fn serial(cql: &str) -> Statement {
    let mut s = Statement::new(cql);
    s.set_consistency(Consistency::Serial);
    s
}

/// The ScyllaDB-backed store.
pub struct ScyllaStore {
    /// `host:port,…/keyspace`.
    target: String,
    queue: Submitter,
    cs: Arc<Cs>,
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore")
            .field("target", &self.target)
            .finish()
    }
}

impl ScyllaStore {
    /// Connects to `nodes` (`host:port`), creating the keyspace (with `replication_factor`
    /// copies) and its tables when missing.
    pub async fn connect(
        nodes: &[String],
        keyspace: &str,
        replication_factor: u32,
        batch_max: usize,
    ) -> Result<ScyllaStore, StoreError> {
        if nodes.is_empty() {
            return Err(StoreError::Backend(
                "storage.nodes: name at least one ScyllaDB node (host:9042)".into(),
            ));
        }
        let target = format!("{}/{keyspace}", nodes.join(","));
        let profile = ExecutionProfile::builder()
            .consistency(Consistency::Quorum)
            .serial_consistency(Some(SerialConsistency::Serial))
            .request_timeout(Some(TIMEOUT))
            .build();
        let session = SessionBuilder::new()
            .known_nodes(nodes)
            .connection_timeout(TIMEOUT)
            .default_execution_profile_handle(profile.into_handle())
            .build()
            .await
            .map_err(|e| cql(&format!("connecting to scylla at {target}"), e))?;
        let cs = Arc::new(CachingSession::from(session, CACHE));
        schema::migrate(&cs, keyspace, replication_factor).await?;
        let (queue, rx, stats) = Submitter::new();
        tokio::spawn(writer_loop(cs.clone(), rx, batch_max.max(1), stats));
        Ok(ScyllaStore { target, queue, cs })
    }

    /// `host:port,…/keyspace` this store is connected to.
    pub fn target(&self) -> &str {
        &self.target
    }
}

/// Drops `keyspace` (a test's scratch keyspace) on the cluster `nodes` reach.
pub async fn drop_keyspace(nodes: &[String], keyspace: &str) -> Result<(), StoreError> {
    if !bourse_config::valid_keyspace(keyspace) {
        return Err(StoreError::Backend(format!("bad keyspace '{keyspace}'")));
    }
    let session = SessionBuilder::new()
        .known_nodes(nodes)
        .connection_timeout(TIMEOUT)
        .build()
        .await
        .map_err(|e| cql("connecting to drop a keyspace", e))?;
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await
        .map_err(|e| cql(&format!("dropping keyspace {keyspace}"), e))?;
    Ok(())
}

async fn writer_loop(
    cs: Arc<Cs>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    batch_max: usize,
    stats: Arc<Mutex<WriterStats>>,
) {
    let mut closing = None;
    let mut halted = Halted::default();
    let mut writer = write::Writer::default();
    while closing.is_none() {
        let Some(first) = rx.recv().await else {
            break;
        };
        let batch = Batch::gather(first, &mut rx, batch_max, &halted);
        let started = Instant::now();
        let outcomes = writer.commit(&cs, &batch.writes).await;
        closing = batch.settle(outcomes, started.elapsed(), &stats, &mut halted, "scylla");
    }
    queue::finish(&mut rx, closing);
}

#[async_trait]
impl MarketStore for ScyllaStore {
    fn submit(&self, write: Write) -> Ack {
        self.queue.submit(write)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.queue.flush().await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.queue.close().await
    }
}
