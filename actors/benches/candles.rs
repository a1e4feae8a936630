//! Candle roll-up throughput: ticks per second through all 10 intervals (the pure core,
//! one core). Run: `cargo bench -p bourse-actors --bench candles`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure should stop it loudly

use bourse_actors::symbol::candles::CandleSet;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const TICKS: u64 = 100_000;

fn ticks(spacing_ms: i64) -> Vec<(i64, u64, u64)> {
    let mut rng = fastrand::Rng::with_seed(7);
    let start = 1_795_000_000_000i64;
    (0..TICKS)
        .map(|i| {
            (
                start + i as i64 * spacing_ms,
                100_000 + rng.u64(0..500),
                1 + rng.u64(0..100),
            )
        })
        .collect()
}

fn roll_up(c: &mut Criterion) {
    let mut group = c.benchmark_group("candle_rollup");
    group.throughput(Throughput::Elements(TICKS));
    // 1 ms apart: a 1s candle closes every 1,000 ticks; 50 ms apart (20 trades/s): every 20.
    for spacing in [1i64, 50] {
        let input = ticks(spacing);
        group.bench_function(format!("all_intervals_{spacing}ms_apart"), |b| {
            b.iter_batched(
                CandleSet::new,
                |mut set| {
                    let mut closed = 0usize;
                    for &(ts, price, qty) in &input {
                        closed += set.apply_trade(ts, price, qty).len();
                    }
                    black_box((closed, set.open_candles()))
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, roll_up);
criterion_main!(benches);
