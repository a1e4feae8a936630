//! `bourse bench book`: the `book` entity in this process, journal on (SQLite in a temp
//! directory), driven by concurrent tasks that each `ask` one order at a time, like an
//! account does: orders/s and ask latency. The workload is the engine benchmark's mix: 60%
//! limit orders near the top, 25% cancels of a resting order, 10% marketable limits, 5%
//! market orders, from 100 owners (their accounts get the fill reports, as in a node).

use anyhow::Context;
use bourse_actors::account::{Account, AccountDeps};
use bourse_actors::book::engine::{Kind, Order, Side, TimeInForce};
use bourse_actors::book::{BookDeps, BookEntity, BookMsg, BookReply};
use bourse_actors::session::{Session, SessionDeps};
use bourse_actors::symbol::{Symbol, SymbolDeps};
use bourse_actors::trading::order_id;
use bourse_cluster::{Hub, RegionArgs, Sharding, guardian, spawn_region};
use bourse_config::Settings;
use bourse_storage::{MarketStore, SqliteStore};
use bourse_supervision::RestartPolicy;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Entity benchmark parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct BookArgs {
    /// Concurrent askers (each waits for its answer before the next order).
    #[arg(long, default_value_t = 64)]
    pub tasks: usize,
    /// Orders per asker.
    #[arg(long, default_value_t = 2000)]
    pub orders: usize,
    /// Journal entries between snapshots.
    #[arg(long, default_value_t = 1000)]
    pub snapshot_every: u64,
}

/// Runs the benchmark and prints its figures.
pub async fn book(args: BookArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("bourse-bench-book-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (settings, markets) =
        Settings::from_sources("[feed]\nkind = \"none\"", std::iter::empty())?;
    let store: Arc<dyn MarketStore> = Arc::new(
        SqliteStore::open(&dir.join("bourse.db"), settings.storage.batch_max)
            .context("opening storage")?,
    );
    let hub = Hub::new("bench");
    let sharding = Sharding::new("bench", 128, Duration::from_secs(10), hub);
    sharding.set_ring_members(&["bench".to_string()]);
    let (root, _fatal) = guardian::spawn_guardian().await?;
    let policy = RestartPolicy {
        max_restarts: 10,
        within: Duration::from_secs(10),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_secs(1),
    };
    fn region<E: bourse_cluster::Entity>(
        deps: E::Deps,
        sharding: &Sharding,
        policy: RestartPolicy,
    ) -> RegionArgs<E> {
        RegionArgs {
            deps: Arc::new(deps),
            sharding: sharding.clone(),
            policy,
            passivate_after: None,
        }
    }
    let book_deps = BookDeps {
        events: false,
        store: store.clone(),
        markets: markets.clone(),
        replay_events: 1024,
        snapshot_every: args.snapshot_every,
        price_band_pct: 80,
        slippage_bps: 5,
        reserve_ms: 86_400_000,
    };
    spawn_region::<BookEntity>(region(book_deps, &sharding, policy), root.get_cell()).await?;
    let symbol_deps = SymbolDeps {
        events: false,
        store: store.clone(),
        markets: markets.clone(),
        replay_events: 1024,
        alert_window_ms: 86_400_000,
    };
    spawn_region::<Symbol>(region(symbol_deps, &sharding, policy), root.get_cell()).await?;
    let account_deps = AccountDeps {
        store: store.clone(),
        markets: markets.clone(),
        grants: settings.trading.grant_units(&markets)?,
        market_protect_pct: 10,
        price_band_pct: 80,
        max_open_orders: 1000,
        snapshot_every: 1000,
    };
    spawn_region::<Account>(region(account_deps, &sharding, policy), root.get_cell()).await?;
    let session_deps = SessionDeps { replay_events: 64 };
    spawn_region::<Session>(region(session_deps, &sharding, policy), root.get_cell()).await?;
    let symbol = "KRW-BTC";
    // Warm the book up (activation, lease).
    sharding
        .ask::<BookEntity>(symbol, BookMsg::Quote)
        .await
        .context("activating the book")?;
    println!(
        "book {symbol} in-process, journal on: {} askers x {} orders",
        args.tasks, args.orders
    );
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..args.tasks {
        let sharding = sharding.clone();
        let n = args.orders;
        handles.push(tokio::spawn(async move {
            let mut rng = fastrand_seeded(t as u64 + 1);
            let mut latencies = Vec::with_capacity(n);
            let mut resting: Vec<u64> = Vec::new();
            let mut failed = 0u64;
            for i in 0..n {
                let owner = 1 + (rng() % 100);
                let id = order_id(owner, (t * n + i) as u32 + 1);
                let side = if rng().is_multiple_of(2) {
                    Side::Buy
                } else {
                    Side::Sell
                };
                let roll = rng() % 100;
                let mid = 140_000u64;
                let msg = if roll < 25 && !resting.is_empty() {
                    let victim = resting.swap_remove((rng() as usize) % resting.len());
                    BookMsg::Cancel {
                        order_id: victim,
                        owner: bourse_actors::trading::owner_of(victim),
                    }
                } else {
                    let (kind, tif) = if roll < 30 {
                        (Kind::Market { protect: None }, TimeInForce::Ioc)
                    } else if roll < 40 {
                        let p = match side {
                            Side::Buy => mid + 2,
                            Side::Sell => mid - 2,
                        };
                        (Kind::Limit { price: p }, TimeInForce::Gtc)
                    } else {
                        let off = 1 + rng() % 750;
                        let p = match side {
                            Side::Buy => mid - off,
                            Side::Sell => mid + off,
                        };
                        (Kind::Limit { price: p }, TimeInForce::Gtc)
                    };
                    if matches!(kind, Kind::Limit { .. }) {
                        resting.push(id);
                    }
                    BookMsg::Submit(Order {
                        id,
                        owner,
                        side,
                        kind,
                        qty: 1 + rng() % 10,
                        tif,
                        post_only: false,
                    })
                };
                let sent = Instant::now();
                match sharding.ask::<BookEntity>(symbol, msg).await {
                    Ok(BookReply::Failed(_)) | Err(_) => failed += 1,
                    Ok(_) => latencies.push(sent.elapsed().as_micros() as u32),
                }
            }
            (latencies, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for h in handles {
        let (l, f) = h.await?;
        all.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> String {
        if all.is_empty() {
            return "n/a".into();
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        format!("{:.0} µs", all[i])
    };
    println!(
        "  {:.0} orders/s ({} answered, {failed} failed, {elapsed:.1} s)",
        all.len() as f64 / elapsed,
        all.len()
    );
    println!(
        "  ask latency    p50 {}  p99 {}  p99.9 {}  max {}",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    if let Some(s) = store_stats(&dir) {
        println!("  {s}");
    }
    store.close().await.ok();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn store_stats(dir: &std::path::Path) -> Option<String> {
    let size = std::fs::metadata(dir.join("bourse.db")).ok()?.len();
    Some(format!("database {} KiB", size / 1024))
}

/// A small xorshift generator: the workload must not depend on the clock.
fn fastrand_seeded(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}
