//! ScyllaDB: the scale-out store (the `scylla` driver, prepared statements through its
//! caching session, token-aware routing on bound partition keys, QUORUM reads and writes,
//! SERIAL for lightweight transactions).
//!
//! Writes go through the same ordered queue as the other backends ([`crate::queue`]); one
//! writer task applies each batch's writes in order. ScyllaDB has no transaction across
//! partitions, so a batch is not atomic as a whole: each write is (a tick or candle write
//! is one single-partition batch per partition). The first write that fails stops the
//! batch: the writes before it keep their outcomes, it and every later write of the batch
//! are answered with its error, their leases halt (see [`crate::queue`]), and the rest is
//! never sent. How each table is fenced: see [`write`] and [`fence`].
//!
//! This backend passes the contract suite only where a ScyllaDB server is configured
//! (`BOURSE_SCYLLA_URI`); the machines bourse is developed on cannot run one.

mod alerts;
mod fence;
mod read;
mod retention;
mod schema;
mod write;

use crate::queue::{self, Batch, Halted, Op, Submitter, WriterStats};
use crate::{Ack, MarketStore, StoreError, Write};
use async_trait::async_trait;
use futures_util::TryStreamExt;
use scylla::client::caching_session::CachingSession;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::unprepared::Statement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};
use std::collections::HashMap;
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

/// Runs a query and decodes its rows, page by page (a large partition is never asked for
/// in one response; a SERIAL read, always small, in one request).
pub(crate) async fn rows<R>(
    cs: &Cs,
    statement: impl Into<Statement>,
    values: impl SerializeRow,
    context: &str,
) -> Result<Vec<R>, StoreError>
where
    R: for<'f, 'm> DeserializeRow<'f, 'm> + Send + 'static,
{
    let statement: Statement = statement.into();
    if statement.get_consistency() == Some(Consistency::Serial) {
        // SERIAL reads here are of one row or a few: one request, unpaged.
        let result = exec(cs, statement, values, context).await?;
        let result = result.into_rows_result().map_err(|e| cql(context, e))?;
        return result
            .rows::<R>()
            .map_err(|e| cql(context, e))?
            .collect::<Result<Vec<R>, _>>()
            .map_err(|e| cql(context, e));
    }
    let pager = cs
        .execute_iter(statement, values)
        .await
        .map_err(|e| cql(context, e))?;
    pager
        .rows_stream::<R>()
        .map_err(|e| cql(context, e))?
        .try_collect()
        .await
        .map_err(|e| cql(context, e))
}

/// Whether a failed request may still have been applied (so a lightweight transaction's
/// outcome must be read back): a timeout, a lost connection, a server failure mid-write,
/// `Unavailable` (a Paxos round can report it after a proposal was accepted), an answer
/// that could not be read. Anything else (a syntax error, an invalid request, an overloaded
/// or bootstrapping node, no connection) was refused before it ran.
pub(crate) fn outcome_unknown(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::RequestTimeout(_) => true,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::CqlResultParseError(_)
            | RequestAttemptError::CqlErrorParseError(_)
            | RequestAttemptError::BodyExtensionsParseError(_)
            | RequestAttemptError::UnexpectedResponse(_) => true,
            RequestAttemptError::DbError(db, _) => matches!(
                db,
                DbError::WriteTimeout { .. }
                    | DbError::ReadTimeout { .. }
                    | DbError::Unavailable { .. }
                    | DbError::WriteFailure { .. }
                    | DbError::ServerError
            ),
            _ => false,
        },
        _ => false,
    }
}

/// Whether a lightweight transaction applied, and the current values of the columns it
/// compared (when it did not).
pub(crate) struct Cas {
    pub(crate) applied: bool,
    current: HashMap<String, Option<CqlValue>>,
}

impl Cas {
    /// An unconditional write that went through.
    pub(crate) fn applied() -> Cas {
        Cas {
            applied: true,
            current: HashMap::new(),
        }
    }

    /// Reads `[applied]` and the compared columns from an LWT's (or conditional batch's)
    /// answer.
    pub(crate) fn from_result(result: QueryResult, context: &str) -> Result<Cas, StoreError> {
        let result = result.into_rows_result().map_err(|e| cql(context, e))?;
        let names: Vec<String> = result
            .column_specs()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let row: Option<Row> = result.maybe_first_row().map_err(|e| cql(context, e))?;
        let Some(row) = row else {
            return Err(StoreError::Backend(format!(
                "{context}: no [applied] column"
            )));
        };
        let mut current = HashMap::new();
        let mut applied = false;
        for (name, value) in names.into_iter().zip(row.columns) {
            if name == "[applied]" {
                applied = matches!(value, Some(CqlValue::Boolean(true)));
            } else {
                current.insert(name, value);
            }
        }
        Ok(Cas { applied, current })
    }

    /// A compared `bigint` column's current value.
    pub(crate) fn bigint(&self, column: &str) -> Option<u64> {
        match self.current.get(column) {
            Some(Some(CqlValue::BigInt(v))) => Some(*v as u64),
            _ => None,
        }
    }
}

/// Runs a lightweight transaction; `None` when its outcome is unknown (to read back).
pub(crate) async fn cas(
    cs: &Cs,
    statement: &str,
    values: impl SerializeRow,
    context: &str,
) -> Result<Option<Cas>, StoreError> {
    match cs.execute_unpaged(statement, values).await {
        Ok(result) => Cas::from_result(result, context).map(Some),
        Err(e) if outcome_unknown(&e) => {
            tracing::warn!(error = %e, context, "lightweight transaction outcome unknown; reading back");
            Ok(None)
        }
        Err(e) => Err(cql(context, e)),
    }
}

/// The error of a write whose outcome not even a read back could tell.
pub(crate) fn unknown(context: &str) -> StoreError {
    StoreError::Backend(format!(
        "{context}: outcome unknown (the read back could not tell)"
    ))
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
    /// Where retention sweeps run, beside the write queue (see [`retention`]).
    runtime: tokio::runtime::Handle,
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
        Ok(ScyllaStore {
            target,
            queue,
            cs,
            runtime: tokio::runtime::Handle::current(),
        })
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
        // A sweep reads every user's partition: it runs on its own, so the writes queued
        // behind it neither wait for it nor fail with it.
        let sweep = match write {
            Write::PruneInbox {
                before,
                keep_per_user,
            } => Some((Some(keep_per_user), before)),
            Write::PruneHoldings { before } => Some((None, before)),
            _ => None,
        };
        let Some((keep, before)) = sweep else {
            return self.queue.submit(write);
        };
        let (reply, ack) = Ack::pair();
        if self.queue.is_closed() {
            let _ = reply.send(Err(StoreError::Closed));
            return ack;
        }
        let cs = self.cs.clone();
        self.runtime.spawn(async move {
            let swept = match keep {
                Some(keep) => retention::prune_inbox(&cs, before, keep).await,
                None => retention::prune_holdings(&cs, before).await,
            };
            let _ = reply.send(swept);
        });
        ack
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.queue.flush().await
    }

    /// The same lightweight transaction a queued take-over runs, on the shared session.
    async fn acquire_lease_now(
        &self,
        kind: &str,
        key: &str,
        owner: &str,
    ) -> Result<u64, StoreError> {
        self.queue.ensure_open()?;
        write::acquire(&self.cs, kind, key, owner).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.queue.close().await
    }
}
