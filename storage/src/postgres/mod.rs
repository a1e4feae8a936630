//! PostgreSQL: the store for nodes on separate hosts, which share nothing but it.
//!
//! Writes go through the same ordered queue as SQLite's ([`crate::queue`]): one writer task
//! per process commits whatever has queued up in one transaction, so ingest costs one
//! round trip per statement and one commit per batch, not per row. Leases are
//! compare-and-set on the `leases` row inside the batch's transaction; a fenced write first
//! share-locks its lease row, so a newer activation's take-over waits for the batch and can
//! never interleave with it (see [`write`]). Reads run on a small pool of their own
//! connections, and a lease taken at once (a node's beat) on one connection of its own.
//! Deadlocks between nodes' batches (PostgreSQL aborts one) are retried; a lost
//! connection fails its batch and the next batch reconnects.

mod read;
mod schema;
mod write;

use crate::queue::{self, Batch, Halted, Op, Reply, Submitter, WriterStats};
use crate::{Ack, MarketStore, StoreError, Write};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_postgres::NoTls;

type Client = deadpool_postgres::Object;

/// How long connecting, or waiting for a pooled connection, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at a batch that PostgreSQL aborted as a deadlock or serialization failure.
const RETRIES: usize = 5;
/// How long one batch may take end to end; past it the outcome is unknown, the connection
/// is dropped and the batch fails (its leases halt, see [`crate::queue`]).
const BATCH_DEADLINE: Duration = Duration::from_secs(30);
/// Session settings of every connection the store opens: no statement, lock wait or open
/// transaction may hang a connection (a lock wait that times out is retried like a
/// deadlock). A batch never idles inside its transaction, so the server ends one that has
/// for 5 s: a node whose link to the server was cut mid-batch holds lease row locks until
/// then, and a take-over elsewhere waits for them (at the 60 s this was before, longer than
/// the take-over's retries last: it failed after 25 s).
pub const SESSION_OPTIONS: &str = "-c statement_timeout=20s -c lock_timeout=5s \
                                   -c idle_in_transaction_session_timeout=5s";
/// A peer that stops answering is noticed by TCP within about this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(20);

/// A store error from a PostgreSQL error, with the server's message and SQLSTATE when there
/// is one (tokio-postgres's own text for those is only "db error").
fn pg(context: &str, e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Backend(format!(
            "{context}: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        )),
        None => StoreError::Backend(format!("{context}: {e}")),
    }
}

/// The PostgreSQL-backed store.
pub struct PgStore {
    /// `host:port/db`, never the password.
    target: String,
    queue: Submitter,
    readers: Pool,
    /// One connection of its own for [`MarketStore::acquire_lease_now`] (a node's beat):
    /// reads queued up in the readers' pool must not hold a beat up.
    leaser: Pool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish()
    }
}

/// `host:port/db` of a connection config, for messages (no user, no password).
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, port)| match h {
            tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
            tokio_postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
        })
        .collect();
    format!(
        "{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("(default)")
    )
}

fn pool(config: &tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| StoreError::Backend(format!("building the connection pool: {e}")))
}

/// A pooled connection, or an error naming where it was to come from.
async fn connection(pool: &Pool, target: &str) -> Result<Client, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Backend(format!("connecting to postgres at {target}: {e}")))
}

impl PgStore {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/db`), creating or
    /// migrating the schema, with `readers` connections for reads beside the writer's.
    pub async fn connect(
        url: &str,
        batch_max: usize,
        readers: usize,
    ) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("storage.url is not a postgres URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("bourse");
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(5)
            .tcp_user_timeout(TCP_TIMEOUT);
        let options = match config.get_options() {
            Some(own) => format!("{SESSION_OPTIONS} {own}"),
            None => SESSION_OPTIONS.to_string(),
        };
        config.options(options);
        let target = describe(&config);
        let writer = pool(&config, 1)?;
        schema::migrate(&mut connection(&writer, &target).await?).await?;
        let (queue, rx, stats) = Submitter::new();
        tokio::spawn(writer_loop(
            writer,
            target.clone(),
            rx,
            batch_max.max(1),
            stats,
        ));
        Ok(PgStore {
            readers: pool(&config, readers)?,
            leaser: pool(&config, 1)?,
            target,
            queue,
        })
    }

    /// `host:port/db` this store is connected to.
    pub fn target(&self) -> &str {
        &self.target
    }
}

async fn writer_loop(
    pool: Pool,
    target: String,
    mut rx: mpsc::UnboundedReceiver<Op>,
    batch_max: usize,
    stats: Arc<Mutex<WriterStats>>,
) {
    let mut closing = None;
    let mut halted = Halted::default();
    while closing.is_none() {
        let Some(first) = rx.recv().await else {
            break;
        };
        let batch = Batch::gather(first, &mut rx, batch_max, &halted);
        let started = Instant::now();
        let outcomes = commit(&pool, &target, &batch.writes).await;
        closing = batch.settle(outcomes, started.elapsed(), &stats, &mut halted, "postgres");
    }
    queue::finish(&mut rx, closing);
}

/// Commits a batch in one transaction, retrying it when PostgreSQL aborted it to break a
/// deadlock or a serialization conflict (then nothing of it was written). Returns each
/// write's own outcome, or the error that failed the whole batch.
async fn commit(
    pool: &Pool,
    target: &str,
    batch: &[(Write, Reply)],
) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut client = connection(pool, target).await?;
        let attempt_result =
            match tokio::time::timeout(BATCH_DEADLINE, write::commit(&mut client, batch)).await {
                Ok(result) => result,
                Err(_) => {
                    // Mid-transaction: never hand this connection to the next batch.
                    drop(deadpool_postgres::Object::take(client));
                    return Err(StoreError::Backend(format!(
                        "committing batch at {target}: no answer within {}s; outcome unknown",
                        BATCH_DEADLINE.as_secs()
                    )));
                }
            };
        match attempt_result {
            Ok(outcomes) => return Ok(outcomes),
            Err(e) if attempt < RETRIES && retryable(&e) => {
                tracing::debug!(error = %e, attempt, "postgres batch aborted; retrying");
                tokio::time::sleep(Duration::from_millis(fastrand::u64(
                    1..=10 * attempt as u64,
                )))
                .await;
            }
            Err(e) => return Err(pg("committing batch", e)),
        }
    }
}

/// Whether PostgreSQL rolled the transaction back to resolve a conflict between
/// transactions, so running it again is safe.
fn retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::LOCK_NOT_AVAILABLE
    })
}

#[async_trait]
impl MarketStore for PgStore {
    fn submit(&self, write: Write) -> Ack {
        self.queue.submit(write)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.queue.flush().await
    }

    /// One statement on a connection of its own, in a transaction of its own: it locks only
    /// its own row, never waits for this process's batch nor for its reads.
    async fn acquire_lease_now(
        &self,
        kind: &str,
        key: &str,
        owner: &str,
    ) -> Result<u64, StoreError> {
        self.queue.ensure_open()?;
        let context = format!("taking the lease {kind}/{key}");
        let rows = self
            .rows_on(
                &self.leaser,
                &context,
                "INSERT INTO leases (kind, key, owner, epoch) VALUES ($1, $2, $3, 1)
                 ON CONFLICT (kind, key) DO UPDATE SET owner = $3, epoch = leases.epoch + 1
                 RETURNING epoch",
                &[&kind, &key, &owner],
            )
            .await?;
        match rows.first() {
            Some(row) => Ok(row.get::<_, i64>(0) as u64),
            None => Err(StoreError::Backend(format!("{context}: no epoch returned"))),
        }
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.queue.close().await
    }
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> Result<String, StoreError> {
    let scheme_end = url
        .find("://")
        .ok_or_else(|| StoreError::Backend("expected a postgres://… URL".into()))?
        + 3;
    let (head, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let authority_end = head[scheme_end..]
        .find('/')
        .map_or(head.len(), |i| scheme_end + i);
    Ok(format!("{}/{db}{query}", &head[..authority_end]))
}

/// Creates the empty database `name` on the server `admin_url` reaches (a scratch database
/// for a test or a benchmark) and returns its URL.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(StoreError::Backend(format!(
            "database name '{name}': only a-z, 0-9 and _"
        )));
    }
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls)
        .await
        .map_err(|e| pg("connecting to create a database", e))?;
    tokio::spawn(connection);
    // One statement per call: a multi-statement string runs as one transaction block, and
    // neither statement may run inside one.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| pg(&format!("creating database {name}"), e))?;
    }
    with_database(admin_url, name)
}

/// Drops the database `name` (closing its connections) on the server `admin_url` reaches.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls)
        .await
        .map_err(|e| pg("connecting to drop a database", e))?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .map_err(|e| pg(&format!("dropping database {name}"), e))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced_in_urls() {
        let cases = [
            ("postgres://u@h:5/postgres", "postgres://u@h:5/x"),
            (
                "postgres://u:p@h/db?sslmode=disable",
                "postgres://u:p@h/x?sslmode=disable",
            ),
            ("postgresql://h:5", "postgresql://h:5/x"),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "x").ok().as_deref(), Some(want), "{url}");
        }
        assert!(with_database("host=h dbname=d", "x").is_err());
    }
}
