//! Alert evaluation per trade: the symbol's trigger index with 1k, 10k and 100k rules, when
//! a trade crosses none of them and when it crosses 10 (which are then armed again, so every
//! iteration sees the same index). The cost should stay nearly flat in the number of rules.
//! Run: `cargo bench -p bourse-actors --bench alerts`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure should stop it loudly

use bourse_actors::alert::Condition;
use bourse_actors::alert::index::TriggerIndex;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

const PRICE: u64 = 100_000;
const REFERENCE: u64 = 100_000;

/// `n` rules away from the price (above, below and change rules in equal parts), plus ten
/// `above` rules at `PRICE + 50 .. PRICE + 60` that a trade at `PRICE + 60` crosses.
fn index(n: u64) -> (TriggerIndex, Vec<(u64, Condition)>) {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut index = TriggerIndex::new();
    for id in 0..n {
        let c = match id % 4 {
            0 => Condition::Above(PRICE + 1_000 + rng.u64(0..50_000)),
            1 => Condition::Below(PRICE - 1_000 - rng.u64(0..50_000)),
            2 => Condition::ChangePct(200 + rng.i64(0..5_000)),
            _ => Condition::ChangePct(-200 - rng.i64(0..5_000)),
        };
        index.arm(id, c, 0, 0);
    }
    let near: Vec<(u64, Condition)> = (0..10)
        .map(|i| (n + i, Condition::Above(PRICE + 50 + i)))
        .collect();
    for &(id, c) in &near {
        index.arm(id, c, 0, 0);
    }
    (index, near)
}

fn evaluate(c: &mut Criterion) {
    let mut group = c.benchmark_group("alert_eval_per_trade");
    for n in [1_000u64, 10_000, 100_000] {
        let (mut idx, _) = index(n);
        let mut flip = 0u64;
        group.bench_function(format!("{n}_rules_none_crossed"), |b| {
            b.iter(|| {
                flip ^= 1;
                black_box(idx.fire(PRICE + flip, REFERENCE, 1))
            })
        });
        let (mut idx, near) = index(n);
        group.bench_function(format!("{n}_rules_10_crossed_and_rearmed"), |b| {
            b.iter(|| {
                let fired = idx.fire(PRICE + 60, REFERENCE, 1);
                assert_eq!(fired.len(), near.len());
                for (id, c) in fired {
                    idx.arm(id, c, 0, 1);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
