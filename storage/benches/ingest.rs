//! SQLite tick ingest through the batching writer: ticks per second from submit to commit.
//! Run: `cargo bench -p bourse-storage --bench ingest`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure should stop it loudly

use bourse_storage::{MarketStore, Side, SqliteStore, Tick, Write};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TICKS: u64 = 100_000;
/// Ticks per submitted write: a symbol entity submits one write per trade batch.
const PER_WRITE: u64 = 50;

fn ingest(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("bourse-bench-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = SqliteStore::open(&dir.join("bench.db"), 4096).expect("open");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut next_id = 0u64;
    let mut group = c.benchmark_group("sqlite_ingest");
    group.throughput(Throughput::Elements(TICKS));
    group.sample_size(10);
    group.bench_function(format!("ticks_in_writes_of_{PER_WRITE}"), |b| {
        b.iter(|| {
            for _ in 0..TICKS / PER_WRITE {
                let ticks = (0..PER_WRITE)
                    .map(|_| {
                        next_id += 1;
                        Tick {
                            symbol: format!("KRW-B{}", next_id % 8),
                            trade_id: next_id,
                            ts: next_id as i64,
                            price: 140_000 + next_id % 100,
                            qty: 1 + next_id % 7,
                            side: Side::Buy,
                            feed_seq: 0,
                            book_trade: 0,
                        }
                    })
                    .collect();
                drop(store.submit(Write::Ticks(ticks)));
            }
            runtime.block_on(store.flush()).expect("flush");
        })
    });
    group.finish();
    let stats = store.writer_stats();
    println!(
        "writer: {} batches, {} rows, mean commit {} µs, {:.0} rows/batch",
        stats.batches,
        stats.rows,
        stats.commit_micros_total / stats.batches.max(1),
        stats.rows as f64 / stats.batches.max(1) as f64
    );
    let _ = runtime.block_on(store.close());
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, ingest);
criterion_main!(benches);
