//! The storage contract against every backend this machine can run, and crash safety with
//! a real SIGKILLed process: SQLite always; PostgreSQL when `BOURSE_TEST_POSTGRES_URL` names
//! a server (`scripts/test` starts one and sets it, with `BOURSE_REQUIRE_POSTGRES=1` so a
//! missing server fails rather than skips).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bourse_storage::contract::{self, ScratchDatabase};
use bourse_storage::{MarketStore, PgStore, ScyllaStore, SqliteStore};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bourse-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

async fn open_sqlite(path: &Path) -> Box<dyn MarketStore> {
    Box::new(SqliteStore::open(path, 1024).expect("open sqlite"))
}

async fn open_postgres(url: &str) -> Box<dyn MarketStore> {
    Box::new(
        PgStore::connect(url, 1024, 2)
            .await
            .expect("connect postgres"),
    )
}

fn nodes_of(list: &str) -> Vec<String> {
    list.split(',').map(str::to_string).collect()
}

/// A test keyspace: one copy of every row (a test cluster may be one node).
async fn open_scylla(nodes: &[String], keyspace: &str) -> Box<dyn MarketStore> {
    Box::new(
        ScyllaStore::connect(nodes, keyspace, 1, 1024)
            .await
            .expect("connect scylla"),
    )
}

/// The whole suite on ScyllaDB, where `BOURSE_SCYLLA_URI` names a cluster: the contract,
/// both two-store checks and the SIGKILL crash test, in a scratch keyspace dropped after.
/// (The failed-batch check needs a way to make the server refuse one write, which the
/// SQLite and PostgreSQL tests have and this one does not: it is not run here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_passes_the_contract() {
    let Some(nodes) = contract::scylla_server("scylla_passes_the_contract") else {
        return;
    };
    let keyspace = format!("bourse_contract_{}", std::process::id());
    bourse_storage::scylla::drop_keyspace(&nodes, &keyspace)
        .await
        .expect("drop old keyspace");
    contract::run_all(|| open_scylla(&nodes, &keyspace)).await;
    let a = open_scylla(&nodes, &keyspace).await;
    contract::inbox_retention(a.as_ref()).await;
    contract::holdings_retention(a.as_ref()).await;
    let b = open_scylla(&nodes, &keyspace).await;
    contract::two_stores_fence(a.as_ref(), b.as_ref()).await;
    contract::two_stores_race(a.as_ref(), b.as_ref()).await;
    drop((a, b));
    let acked = run_and_kill_child(&format!("scylla:{}/{keyspace}", nodes.join(",")));
    let store = open_scylla(&nodes, &keyspace).await;
    let stored = contract::check_after_crash(store.as_ref(), acked).await;
    println!(
        "scylla crash test: {} batches acked, {stored} stored",
        acked + 1
    );
    store.close().await.expect("close");
    bourse_storage::scylla::drop_keyspace(&nodes, &keyspace)
        .await
        .expect("drop keyspace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_contract() {
    let dir = temp_dir("contract");
    let path = dir.join("bourse.db");
    contract::run_all(|| open_sqlite(&path)).await;
    let a = open_sqlite(&path).await;
    contract::outbox_follows_its_writes(a.as_ref()).await;
    contract::inbox_retention(a.as_ref()).await;
    contract::holdings_retention(a.as_ref()).await;
    let b = open_sqlite(&path).await;
    contract::two_stores_fence(a.as_ref(), b.as_ref()).await;
    contract::two_stores_race(a.as_ref(), b.as_ref()).await;
    // Another connection to the file refuses entry 7 with a trigger.
    let side = rusqlite::Connection::open(&path).expect("side connection");
    contract::a_failed_batch_halts_its_lease(
        a.as_ref(),
        async {
            side.execute_batch(
                "CREATE TRIGGER halt_test BEFORE INSERT ON journal
                 WHEN NEW.key = 'C-HALT' AND NEW.seq = 7
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
            )
            .expect("trigger");
        },
        async {
            side.execute_batch("DROP TRIGGER halt_test")
                .expect("drop trigger");
        },
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_contract() {
    let Some(admin) = contract::postgres_server("postgres_passes_the_contract") else {
        return;
    };
    let db = ScratchDatabase::create(&admin, "contract").await;
    contract::run_all(|| open_postgres(&db.url)).await;
    let a = open_postgres(&db.url).await;
    contract::outbox_follows_its_writes(a.as_ref()).await;
    contract::inbox_retention(a.as_ref()).await;
    contract::holdings_retention(a.as_ref()).await;
    let b = open_postgres(&db.url).await;
    contract::two_stores_fence(a.as_ref(), b.as_ref()).await;
    contract::two_stores_race(a.as_ref(), b.as_ref()).await;
    // An admin connection refuses entry 7 with a check constraint.
    let (side, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("side connection");
    tokio::spawn(connection);
    contract::a_failed_batch_halts_its_lease(
        a.as_ref(),
        async {
            side.batch_execute(
                "ALTER TABLE journal ADD CONSTRAINT halt_test
                 CHECK (NOT (key = 'C-HALT' AND seq = 7)) NOT VALID",
            )
            .await
            .expect("constraint");
        },
        async {
            side.batch_execute("ALTER TABLE journal DROP CONSTRAINT halt_test")
                .await
                .expect("drop constraint");
        },
    )
    .await;
    // The admin connection holds the lease row of C-ASIDE, as another node's take-over
    // would.
    contract::a_lease_taken_now_waits_for_no_batch(
        a.as_ref(),
        async {
            side.batch_execute(
                "BEGIN; SELECT epoch FROM leases
                 WHERE kind = 'book' AND key = 'C-ASIDE' FOR UPDATE",
            )
            .await
            .expect("lock the lease row");
        },
        async {
            side.batch_execute("COMMIT").await.expect("release the row");
        },
    )
    .await;
    drop((a, b));
    // A second connect finds the schema current and migrates nothing.
    open_postgres(&db.url).await.close().await.expect("close");
}

const CHILD_ENV: &str = "BOURSE_CRASH_CHILD";

/// Child half of the crash tests: `sqlite:<path>` or `postgres:<url>` in the environment.
/// Runs only when a parent sets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_writer() {
    let Ok(target) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store: Box<dyn MarketStore> = match target.split_once(':') {
        Some(("sqlite", path)) => {
            Box::new(SqliteStore::open(Path::new(path), 100_000).expect("open"))
        }
        Some(("postgres", url)) => {
            Box::new(PgStore::connect(url, 100_000, 1).await.expect("connect"))
        }
        Some(("scylla", at)) => {
            let (nodes, keyspace) = at.rsplit_once('/').expect("scylla:<nodes>/<keyspace>");
            open_scylla(&nodes_of(nodes), keyspace).await
        }
        _ => panic!("bad {CHILD_ENV}: {target}"),
    };
    contract::crash_writer(store.as_ref()).await;
}

/// Starts the child writer on `target`, SIGKILLs it after 30 acknowledged batches, returns
/// the last batch it acknowledged. A watchdog thread kills it after 60 s whatever it does
/// (a child that hangs without printing would otherwise block the read forever).
fn run_and_kill_child(target: &str) -> u64 {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, target)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let child = Arc::new(Mutex::new(child));
    let (done, watch) = mpsc::channel::<()>();
    let watchdog = {
        let child = child.clone();
        std::thread::spawn(move || {
            let timed_out = matches!(
                watch.recv_timeout(Duration::from_secs(60)),
                Err(mpsc::RecvTimeoutError::Timeout)
            );
            if timed_out {
                let _ = child.lock().unwrap().kill();
            }
            timed_out
        })
    };
    let mut acked: Option<u64> = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("ACK ") {
            acked = n.trim().parse().ok();
            if acked >= Some(30) {
                break;
            }
        }
    }
    let _ = done.send(());
    let timed_out = watchdog.join().expect("watchdog");
    // SIGKILL while the writer is busy with the next batches.
    let mut child = child.lock().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !timed_out,
        "the child made no progress in 60 s (acked {acked:?})"
    );
    acked.expect("child acknowledged batches")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_mid_batch_loses_no_acknowledged_batch_and_shows_no_partial_one() {
    let dir = temp_dir("crash");
    let path = dir.join("bourse.db");
    let acked = run_and_kill_child(&format!("sqlite:{}", path.display()));
    let store = open_sqlite(&path).await;
    let stored = contract::check_after_crash(store.as_ref(), acked).await;
    println!(
        "sqlite crash test: {} batches acked, {stored} stored",
        acked + 1
    );
    store.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_batch_loses_no_acknowledged_batch_and_shows_no_partial_one() {
    let Some(admin) = contract::postgres_server("postgres_killed_mid_batch") else {
        return;
    };
    let db = ScratchDatabase::create(&admin, "crash").await;
    let acked = run_and_kill_child(&format!("postgres:{}", db.url));
    let store = open_postgres(&db.url).await;
    let stored = contract::check_after_crash(store.as_ref(), acked).await;
    println!(
        "postgres crash test: {} batches acked, {stored} stored",
        acked + 1
    );
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_is_a_clear_error_without_the_password() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let err = PgStore::connect("postgres://bourse:s3cret@127.0.0.1:1/market", 16, 1)
        .await
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1:1/market"),
        "names the target: {text}"
    );
    assert!(!text.contains("s3cret"), "never the password: {text}");
    let err = PgStore::connect("mysql://nope", 16, 1)
        .await
        .expect_err("not a postgres URL");
    assert!(err.to_string().contains("storage.url"), "{err}");
}

/// A node whose link to the server is cut in the middle of a batch leaves its transaction
/// open on the server, holding the lease rows the batch locked. A take-over on another node
/// must not wait on them for longer than its retries last: the server ends the silent
/// session (`idle_in_transaction_session_timeout` in the store's session options).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_over_is_not_held_up_by_a_writer_cut_off_mid_batch() {
    let Some(admin) = contract::postgres_server("postgres_cut_mid_batch") else {
        return;
    };
    let db = ScratchDatabase::create(&admin, "cut_mid_batch").await;
    let a = open_postgres(&db.url).await;
    a.acquire_lease("book", "C-GONE", "node-a")
        .await
        .expect("a takes the lease");
    // Node a's writer, as the server sees it once the link is cut after the batch locked
    // the lease row: the same session settings, a transaction open, nothing more coming.
    let mut config: tokio_postgres::Config = db.url.parse().expect("url");
    config.options(bourse_storage::postgres::SESSION_OPTIONS);
    let (mut side, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("side connection");
    tokio::spawn(connection);
    let tx = side.transaction().await.expect("begin");
    let locked = tx
        .query(
            "SELECT epoch FROM leases WHERE kind = 'book' AND key = 'C-GONE' FOR NO KEY UPDATE",
            &[],
        )
        .await
        .expect("lock the lease row");
    assert_eq!(locked.len(), 1);
    let b = open_postgres(&db.url).await;
    let started = std::time::Instant::now();
    let taken = b.acquire_lease("book", "C-GONE", "node-b").await;
    println!(
        "take-over after a writer cut mid-batch: {:?}",
        started.elapsed()
    );
    assert!(
        taken.is_ok(),
        "the take-over waited out the silent writer: {taken:?}"
    );
    let ended = tx.query("SELECT 1", &[]).await;
    assert!(ended.is_err(), "the server ended the silent transaction");
}

/// Closes every server connection to database `db` (what a server restart or a network cut
/// does to the store's pool).
async fn cut_connections(admin: &str, db: &str) -> u64 {
    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db],
        )
        .await
        .expect("terminate");
    rows.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reconnects_after_its_connections_are_cut() {
    use bourse_storage::records::{Side, Tick};
    use bourse_storage::{MarketDataStore, Write};
    let Some(admin) = contract::postgres_server("postgres_reconnects") else {
        return;
    };
    let db = ScratchDatabase::create(&admin, "reconnect").await;
    let store = PgStore::connect(&db.url, 1024, 2).await.expect("connect");
    let tick = |id: u64| Tick {
        symbol: "C-RECONNECT".into(),
        trade_id: id,
        ts: id as i64,
        price: 1,
        qty: 1,
        side: Side::Buy,
        feed_seq: 0,
        book_trade: 0,
    };
    store
        .submit(Write::Ticks(vec![tick(1)]))
        .wait()
        .await
        .expect("first write");
    assert_eq!(store.last_trade_id("C-RECONNECT").await.expect("read"), 1);
    let cut = cut_connections(&admin, &db.name).await;
    assert!(
        cut >= 2,
        "the writer's and a reader's connections were open: {cut}"
    );
    // The first write or read after the cut may fail (its connection died under it); the
    // store reconnects and the next ones succeed, without a restart.
    let mut wrote = false;
    for id in 2..=5 {
        if store
            .submit(Write::Ticks(vec![tick(id)]))
            .wait()
            .await
            .is_ok()
        {
            wrote = true;
            break;
        }
    }
    assert!(wrote, "a write succeeds again after the cut");
    let mut read = None;
    for _ in 0..3 {
        if let Ok(n) = store.last_trade_id("C-RECONNECT").await {
            read = Some(n);
            break;
        }
    }
    assert!(read.is_some_and(|n| n >= 2), "reads work again: {read:?}");
    store.close().await.expect("close");
}
