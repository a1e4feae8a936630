//! A ranking of 1,000,000 traders: the cost of one trader's new score (what one fill's
//! update costs the board), of the top-100 read, and of one trader's own rank.
//! Run: `cargo bench -p bourse-actors --bench rankings`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure should stop it loudly

use bourse_actors::rankings::Board;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

const TRADERS: u64 = 1_000_000;

fn board() -> Board {
    let mut rng = fastrand::Rng::with_seed(3);
    // Returns in basis points, -100 % .. +300 %.
    Board::from_scores((0..TRADERS).map(|u| (u, rng.i64(-10_000..30_000))))
}

fn rankings(c: &mut Criterion) {
    let mut board = board();
    let mut rng = fastrand::Rng::with_seed(5);
    let mut group = c.benchmark_group("rankings_1m");
    group.bench_function("update_one_score", |b| {
        b.iter(|| board.set(rng.u64(0..TRADERS), black_box(rng.i64(-10_000..30_000))))
    });
    group.bench_function("top_100", |b| b.iter(|| black_box(board.top(100))));
    group.bench_function("own_rank", |b| {
        b.iter(|| black_box(board.standing(rng.u64(0..TRADERS))))
    });
    group.finish();
}

criterion_group!(benches, rankings);
criterion_main!(benches);
