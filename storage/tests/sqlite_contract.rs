//! The storage contract on SQLite, and crash safety with a real killed process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bourse_storage::records::{Side, Tick};
use bourse_storage::{MarketStore, SqliteStore, Write};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bourse-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_contract() {
    let dir = temp_dir("contract");
    let path = dir.join("bourse.db");
    bourse_storage::contract::run_all(|| SqliteStore::open(&path, 1024).expect("open")).await;
    let _ = std::fs::remove_dir_all(&dir);
}

const BATCH: u64 = 500;
const CHILD_ENV: &str = "BOURSE_CRASH_CHILD_DB";

/// Child half of the crash test: writes batches of `BATCH` ticks as fast as it can and
/// prints `ACK n` after batch n commits. Runs only when the parent sets the env var.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = SqliteStore::open(std::path::Path::new(&path), 100_000).expect("open");
    for batch in 0.. {
        let ticks = (0..BATCH)
            .map(|i| Tick {
                symbol: "CRASH-TEST".into(),
                trade_id: batch * BATCH + i + 1,
                ts: batch as i64,
                price: batch,
                qty: 1,
                side: Side::Buy,
            })
            .collect();
        store
            .submit(Write::Ticks(ticks))
            .wait()
            .await
            .expect("commit");
        println!("ACK {batch}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_batch_loses_no_acknowledged_batch_and_shows_no_partial_one() {
    let dir = temp_dir("crash");
    let path = dir.join("bourse.db");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acked: Option<u64> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(Ok(line)) = lines.next() {
        if let Some(n) = line.strip_prefix("ACK ") {
            acked = n.trim().parse().ok();
            if acked >= Some(30) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "child made no progress");
    }
    // SIGKILL while the writer is busy with the next batches.
    child.kill().expect("kill");
    let _ = child.wait();
    let acked = acked.expect("child acknowledged batches");

    let store = SqliteStore::open(&path, 1024).expect("reopen after crash");
    let ticks = store.ticks_since("CRASH-TEST", 0).await.expect("read");
    let mut per_batch = std::collections::BTreeMap::<u64, u64>::new();
    for t in &ticks {
        *per_batch.entry(t.price).or_default() += 1;
    }
    for b in 0..=acked {
        assert_eq!(
            per_batch.get(&b),
            Some(&BATCH),
            "acknowledged batch {b} is complete"
        );
    }
    for (b, n) in &per_batch {
        assert_eq!(*n, BATCH, "batch {b} is all or nothing");
    }
    println!(
        "crash test: {} batches acked, {} batches on disk",
        acked + 1,
        per_batch.len()
    );
    store.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_file_never_both_write_a_leased_key() {
    let dir = temp_dir("split");
    let path = dir.join("bourse.db");
    // Two stores on one file: two node processes that both believe they own a key.
    let a = SqliteStore::open(&path, 1024).expect("open a");
    let b = SqliteStore::open(&path, 1024).expect("open b");
    let lease_a = a
        .acquire_lease("book", "KRW-BTC", "node-a")
        .await
        .expect("a");
    let tick = |id: u64| Tick {
        symbol: "SPLIT".into(),
        trade_id: id,
        ts: id as i64,
        price: id,
        qty: 1,
        side: Side::Buy,
    };
    a.submit(Write::Ticks(vec![tick(1)]).fenced(&lease_a))
        .wait()
        .await
        .expect("a holds it");
    let lease_b = b
        .acquire_lease("book", "KRW-BTC", "node-b")
        .await
        .expect("b");
    assert!(lease_b.epoch > lease_a.epoch);
    let stale = a
        .submit(Write::Ticks(vec![tick(2)]).fenced(&lease_a))
        .wait()
        .await;
    assert!(
        matches!(stale, Err(bourse_storage::StoreError::Fenced { .. })),
        "{stale:?}"
    );
    b.submit(Write::Ticks(vec![tick(3)]).fenced(&lease_b))
        .wait()
        .await
        .expect("b holds it");
    let ids: Vec<u64> = a
        .ticks_since("SPLIT", 0)
        .await
        .unwrap()
        .iter()
        .map(|t| t.trade_id)
        .collect();
    assert_eq!(ids, vec![1, 3], "the fenced epoch's write never landed");
    a.close().await.unwrap();
    b.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
