//! Store latencies and ingest on every backend this machine can reach, side by side:
//! tick ingest (rows/s through the batching writer), journal append and lease acquire
//! (p50/p99 of one awaited write at a time). SQLite always; PostgreSQL too when
//! `BOURSE_BENCH_POSTGRES_URL` names a server (a database `bourse_bench_store` is made
//! there, replaced on every run).
//!
//! Run: `cargo bench -p bourse-storage --bench store` (`BOURSE_BENCH_SMALL=1` for a quick
//! pass with few iterations). `cargo test --all-targets` runs it once, small, on SQLite and
//! on `BOURSE_TEST_POSTGRES_URL` when set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure should stop it loudly

use bourse_storage::{MarketStore, PgStore, Side, SqliteStore, Tick, Write};
use std::time::Instant;

struct Sizes {
    ticks: u64,
    appends: u64,
    leases: u64,
}

/// Ticks per submitted write: a symbol entity submits one write per trade batch.
const PER_WRITE: u64 = 50;

fn quantile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn run(name: &str, store: &dyn MarketStore, sizes: &Sizes) {
    // Ingest: everything submitted without waiting, then one flush.
    let started = Instant::now();
    let mut id = 0u64;
    for _ in 0..sizes.ticks / PER_WRITE {
        let ticks = (0..PER_WRITE)
            .map(|_| {
                id += 1;
                Tick {
                    symbol: format!("KRW-B{}", id % 8),
                    trade_id: id,
                    ts: id as i64,
                    price: 140_000 + id % 100,
                    qty: 1 + id % 7,
                    side: Side::Buy,
                    feed_seq: 0,
                    book_trade: 0,
                }
            })
            .collect();
        drop(store.submit(Write::Ticks(ticks)));
    }
    store.flush().await.expect("flush");
    let rows_per_s = id as f64 / started.elapsed().as_secs_f64();

    // Journal append: one fenced entry at a time, each awaited (an account's hot path).
    let fence = store
        .take_over("account", "bench", "bench-node")
        .await
        .expect("lease");
    let mut appends = Vec::with_capacity(sizes.appends as usize);
    for seq in 1..=sizes.appends {
        let t = Instant::now();
        store
            .submit(
                Write::Journal {
                    kind: "account".into(),
                    key: "bench".into(),
                    seq,
                    entry: vec![7; 64],
                }
                .fenced(&fence),
            )
            .wait()
            .await
            .expect("append");
        appends.push(t.elapsed().as_micros() as u64);
    }
    appends.sort_unstable();

    // Lease acquire: a take-over of a fresh key at a time (activations after a failover).
    let mut leases = Vec::with_capacity(sizes.leases as usize);
    for i in 0..sizes.leases {
        let t = Instant::now();
        store
            .acquire_lease("book", &format!("bench-{i}"), "bench-node")
            .await
            .expect("acquire");
        leases.push(t.elapsed().as_micros() as u64);
    }
    leases.sort_unstable();
    println!(
        "{name:<9} {rows_per_s:>12.0} {:>9} {:>9} {:>9} {:>9}",
        quantile(&appends, 0.5),
        quantile(&appends, 0.99),
        quantile(&leases, 0.5),
        quantile(&leases, 0.99)
    );
    store.close().await.expect("close");
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this once without it,
    // small, and then also on the tests' PostgreSQL server.
    let benching = std::env::args().any(|a| a == "--bench");
    let small = !benching || std::env::var("BOURSE_BENCH_SMALL").is_ok();
    let postgres = std::env::var("BOURSE_BENCH_POSTGRES_URL")
        .or_else(|e| match benching {
            true => Err(e),
            false => std::env::var("BOURSE_TEST_POSTGRES_URL"),
        })
        .ok();
    let sizes = if small {
        Sizes {
            ticks: 2_000,
            appends: 50,
            leases: 50,
        }
    } else {
        Sizes {
            ticks: 200_000,
            appends: 2_000,
            leases: 1_000,
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        println!(
            "{} ticks in writes of {PER_WRITE}; {} journal appends; {} lease acquires",
            sizes.ticks, sizes.appends, sizes.leases
        );
        println!(
            "{:<9} {:>12} {:>9} {:>9} {:>9} {:>9}",
            "backend", "ticks rows/s", "jrnl p50", "jrnl p99", "lease p50", "lease p99"
        );
        let dir = std::env::temp_dir().join(format!("bourse-bench-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sqlite = SqliteStore::open(&dir.join("bench.db"), 4096).expect("open sqlite");
        run("sqlite", &sqlite, &sizes).await;
        let _ = std::fs::remove_dir_all(&dir);
        match postgres {
            Some(admin) => {
                let url = bourse_storage::postgres::create_database(&admin, "bourse_bench_store")
                    .await
                    .expect("bench database");
                let pg = PgStore::connect(&url, 4096, 2).await.expect("connect");
                run("postgres", &pg, &sizes).await;
            }
            None => println!("postgres  not run (set BOURSE_BENCH_POSTGRES_URL)"),
        }
        println!("latencies in µs, one awaited write at a time");
    });
}
