//! A ranking of 1,000,000 traders: the cost of one trader's new score on one board, of the
//! top-100 read, and of one trader's own rank; then the whole table (three boards, every
//! trader's holdings): one fill's update (a trader's new holdings, rescored on all three),
//! and a price move of a market every trader holds (each rescored).
//! Run: `cargo bench -p bourse-actors --bench rankings`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure should stop it loudly

use bourse_actors::account::portfolio::Holdings;
use bourse_actors::account::position::Position;
use bourse_actors::rankings::{Board, Period, Table};
use bourse_config::{Markets, Settings};
use criterion::{Criterion, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

/// 1,000,000 when benchmarking; 10,000 when `cargo test --all-targets` runs each bench once
/// as a test (criterion passes `--bench` only to a real run).
fn traders() -> u64 {
    if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    }
}

fn board() -> Board {
    let mut rng = fastrand::Rng::with_seed(3);
    // Returns in basis points, -100 % .. +300 %.
    Board::from_scores((0..traders()).map(|u| (u, rng.i64(-10_000..30_000))))
}

fn rankings(c: &mut Criterion) {
    let traders = traders();
    let mut board = board();
    let mut rng = fastrand::Rng::with_seed(5);
    let mut group = c.benchmark_group("rankings_1m");
    group.bench_function("update_one_score", |b| {
        b.iter(|| board.set(rng.u64(0..traders), black_box(rng.i64(-10_000..30_000))))
    });
    group.bench_function("top_100", |b| b.iter(|| black_box(board.top(100))));
    group.bench_function("own_rank", |b| {
        b.iter(|| black_box(board.standing(rng.u64(0..traders))))
    });
    group.finish();
}

/// Cash and some bitcoin bought at 140,000,000.
fn holdings(markets: &Markets, krw: u128, lots: u128) -> Holdings {
    let m = markets.get("KRW-BTC").unwrap();
    let mut p = Position::default();
    p.buy(lots * m.base_per_lot, m.quote_amount(lots * 140_000_000));
    Holdings {
        cash: BTreeMap::from([("KRW".to_string(), krw)]),
        positions: BTreeMap::from([("KRW-BTC".to_string(), p)]),
    }
}

fn table(c: &mut Criterion) {
    let markets = Settings::from_sources("", std::iter::empty()).unwrap().1;
    let grant = holdings(&markets, 10_000_000_000, 10_000);
    let mut table = Table::new(markets.clone(), "KRW".into(), &grant, 0);
    let mut rng = fastrand::Rng::with_seed(7);
    let traders = traders();
    for user in 0..traders {
        let h = holdings(&markets, rng.u128(0..20_000_000_000), rng.u128(0..20_000));
        table.set_holdings(user, h);
    }
    let price = |p: u64| BTreeMap::from([("KRW-BTC".to_string(), p)]);
    let mut group = c.benchmark_group("rankings_table_1m");
    group.bench_function("fill_update", |b| {
        b.iter(|| {
            let h = holdings(&markets, rng.u128(0..20_000_000_000), rng.u128(0..20_000));
            table.set_holdings(rng.u64(0..traders), black_box(h))
        })
    });
    group.bench_function("top_100", |b| {
        b.iter(|| black_box(table.top(Period::Day, 100)))
    });
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("price_move_all_holders", |b| {
        b.iter(|| table.set_prices(price(rng.u64(100_000_000..200_000_000))))
    });
    group.finish();
}

criterion_group!(benches, rankings, table);
criterion_main!(benches);
