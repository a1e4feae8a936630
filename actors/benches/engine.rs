//! Matching engine alone, one core: a mixed workload (60% limit orders near the top, 25%
//! cancels, 10% marketable limits, 5% market orders) on a book kept near 1,000 resting
//! orders over ~750 price levels. Criterion gives ops/s; a timed pass prints per-op latency
//! percentiles. Run: `cargo bench -p bourse-actors --bench engine`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure should stop it loudly

use bourse_actors::book::engine::{Book, Event, Kind, Order, Side, TimeInForce};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Instant;

const MID: u64 = 100_000;
const OPS: usize = 100_000;

enum Op {
    Place(Order),
    Cancel(u64),
}

/// A deterministic op stream; tracks which ids rest so cancels hit live orders.
fn workload(seed: u64) -> (Book, Vec<Op>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut book = Book::new();
    let mut out = Vec::new();
    let mut next_id = 1u64;
    let mut live: Vec<u64> = Vec::new();
    let limit = |id, side, price, qty| Order {
        id,
        owner: id % 97,
        side,
        kind: Kind::Limit { price },
        qty,
        tif: TimeInForce::Gtc,
        post_only: false,
    };
    let passive = |rng: &mut fastrand::Rng, id| {
        let side = if rng.bool() { Side::Buy } else { Side::Sell };
        let offset = 1 + rng.u64(0..375);
        let price = if side == Side::Buy {
            MID - offset
        } else {
            MID + offset
        };
        limit(id, side, price, 1 + rng.u64(0..50))
    };
    // Pre-fill to ~1,000 resting orders.
    while book.len() < 1000 {
        book.place(passive(&mut rng, next_id), &mut out);
        live.push(next_id);
        next_id += 1;
    }
    // Generate against a scratch copy so cancels hit live orders and the book stays near
    // 1,000 resting orders (a place becomes a cancel while more than 1,050 rest).
    let mut scratch = book.clone();
    let mut ops = Vec::with_capacity(OPS);
    let mut mix = [0usize; 4];
    for _ in 0..OPS {
        let mut roll = rng.u8(0..100);
        if roll < 60 && scratch.len() > 1050 {
            roll = 60;
        }
        let id = next_id;
        next_id += 1;
        live.retain(|id| scratch.resting(*id).is_some());
        let op = if roll < 60 || live.is_empty() {
            mix[0] += 1;
            live.push(id);
            Op::Place(passive(&mut rng, id))
        } else if roll < 85 {
            mix[1] += 1;
            let i = rng.usize(0..live.len());
            Op::Cancel(live.swap_remove(i))
        } else if roll < 95 {
            mix[2] += 1;
            let side = if rng.bool() { Side::Buy } else { Side::Sell };
            let price = if side == Side::Buy {
                MID + 400
            } else {
                MID - 400
            };
            Op::Place(Order {
                tif: TimeInForce::Ioc,
                ..limit(id, side, price, 1 + rng.u64(0..30))
            })
        } else {
            mix[3] += 1;
            let side = if rng.bool() { Side::Buy } else { Side::Sell };
            Op::Place(Order {
                id,
                owner: id % 97,
                side,
                kind: Kind::Market { protect: None },
                qty: 1 + rng.u64(0..30),
                tif: TimeInForce::Ioc,
                post_only: false,
            })
        };
        match &op {
            Op::Place(o) => scratch.place(*o, &mut out),
            Op::Cancel(id) => {
                scratch.cancel(*id, &mut out);
            }
        }
        out.clear();
        ops.push(op);
    }
    println!(
        "workload: {} ops = {:.0}% place, {:.0}% cancel, {:.0}% marketable, {:.0}% market",
        OPS,
        mix[0] as f64 * 100.0 / OPS as f64,
        mix[1] as f64 * 100.0 / OPS as f64,
        mix[2] as f64 * 100.0 / OPS as f64,
        mix[3] as f64 * 100.0 / OPS as f64
    );
    (book, ops)
}

fn run(book: &mut Book, ops: &[Op], out: &mut Vec<Event>) {
    for op in ops {
        out.clear();
        match op {
            Op::Place(o) => book.place(*o, out),
            Op::Cancel(id) => {
                book.cancel(*id, out);
            }
        }
        black_box(&out);
    }
}

fn mixed(c: &mut Criterion) {
    let (book, ops) = workload(42);
    // Per-op latency, measured once on a fresh copy.
    let mut timed = book.clone();
    let mut out = Vec::with_capacity(64);
    let mut ns: Vec<u64> = Vec::with_capacity(ops.len());
    for op in &ops {
        out.clear();
        let t = Instant::now();
        match op {
            Op::Place(o) => timed.place(*o, &mut out),
            Op::Cancel(id) => {
                timed.cancel(*id, &mut out);
            }
        }
        ns.push(t.elapsed().as_nanos() as u64);
    }
    ns.sort_unstable();
    let pct = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)];
    println!(
        "engine mixed latency over {} ops: p50 {} ns, p99 {} ns, p99.99 {} ns; {} resting, levels {}+{}",
        ns.len(),
        pct(0.5),
        pct(0.99),
        pct(0.9999),
        timed.len(),
        timed.depth(Side::Buy, 10_000).len(),
        timed.depth(Side::Sell, 10_000).len()
    );
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(ops.len() as u64));
    group.bench_function("mixed_60_place_25_cancel_10_marketable_5_market", |b| {
        b.iter_batched(
            || book.clone(),
            |mut book| run(&mut book, &ops, &mut out),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, mixed);
criterion_main!(benches);
