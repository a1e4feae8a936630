//! A fill the book acknowledged reaches the symbol's tape even when the book's message to
//! the symbol was lost with a crash: the recovering book re-sends its recent fills (kept in
//! its snapshots too), and the symbol stores each once. Book and symbol run in this process
//! on SQLite; each "node" is a new sharding that takes the entities' leases over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bourse_actors::book::engine::{Kind, Order, Side, TimeInForce};
use bourse_actors::book::{BookDeps, BookEntity, BookMsg, BookReply};
use bourse_actors::symbol::{Symbol, SymbolDeps};
use bourse_actors::trading::order_id;
use bourse_cluster::{Hub, RegionArgs, Sharding, guardian, spawn_region};
use bourse_config::{Markets, Settings};
use bourse_storage::{MarketStore, SqliteStore};
use bourse_supervision::RestartPolicy;
use ractor::ActorCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SYMBOL: &str = "KRW-BTC";

fn policy() -> RestartPolicy {
    RestartPolicy {
        max_restarts: 3,
        within: Duration::from_secs(10),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
    }
}

/// A node named `name` running books and, when `symbols`, symbols, under `root`; with its
/// regions, to kill when the node "dies" (a process holds one region per kind).
async fn node(
    name: &str,
    root: &ActorCell,
    store: &Arc<dyn MarketStore>,
    markets: &Markets,
    symbols: bool,
) -> (Sharding, Vec<ActorCell>) {
    let sharding = Sharding::new(name, 16, Duration::from_secs(10), Hub::new(name));
    sharding.set_ring_members(&[name.to_string()]);
    let mut regions = Vec::new();
    let books = RegionArgs::<BookEntity> {
        deps: Arc::new(BookDeps {
            events: false,
            store: store.clone(),
            markets: markets.clone(),
            replay_events: 64,
            // A snapshot after every entry: the journal holds nothing to replay, so the
            // fills come from the snapshot alone.
            snapshot_every: 1,
            price_band_pct: 80,
            slippage_bps: 5,
            reserve_ms: 86_400_000,
        }),
        sharding: sharding.clone(),
        policy: policy(),
        passivate_after: None,
    };
    let books = spawn_region::<BookEntity>(books, root.clone())
        .await
        .unwrap();
    regions.push(books.get_cell());
    if symbols {
        let args = RegionArgs::<Symbol> {
            deps: Arc::new(SymbolDeps {
                store: store.clone(),
                markets: markets.clone(),
                replay_events: 64,
                alert_window_ms: 60_000,
                events: false,
            }),
            sharding: sharding.clone(),
            policy: policy(),
            passivate_after: None,
        };
        let symbols = spawn_region::<Symbol>(args, root.clone()).await.unwrap();
        regions.push(symbols.get_cell());
    }
    (sharding, regions)
}

/// Kills a node's regions and their entities, as a crash would.
async fn kill(regions: Vec<ActorCell>) {
    for region in regions {
        region
            .kill_and_wait(Some(Duration::from_secs(10)))
            .await
            .unwrap();
    }
}

/// Crosses one lot at `price`: a resting sell, then a buy that takes it.
async fn cross(sharding: &Sharding, n: u32, price: u64) {
    for (user, side) in [(1, Side::Sell), (2, Side::Buy)] {
        let order = Order {
            id: order_id(user, n),
            owner: user,
            side,
            kind: Kind::Limit { price },
            qty: 1,
            tif: TimeInForce::Gtc,
            post_only: false,
        };
        let reply = sharding
            .ask::<BookEntity>(SYMBOL, BookMsg::Submit(order))
            .await
            .expect("the book answers");
        assert!(matches!(reply, BookReply::Order(_)), "{reply:?}");
    }
}

/// The stored trades, oldest first, as (book trade id, price), once `until` holds.
async fn ticks_until(
    store: &Arc<dyn MarketStore>,
    until: impl Fn(&[(u64, u64)]) -> bool,
) -> Vec<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ticks: Vec<(u64, u64)> = store
            .recent_ticks(SYMBOL, 100)
            .await
            .unwrap()
            .into_iter()
            .rev()
            .map(|t| (t.book_trade, t.price))
            .collect();
        if until(&ticks) || Instant::now() > deadline {
            return ticks;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_lost_on_the_way_to_the_symbol_are_re_sent_by_the_recovering_book_once() {
    let dir = std::env::temp_dir().join(format!("bourse-book-fills-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (settings, markets) =
        Settings::from_sources("[feed]\nkind = \"none\"", std::iter::empty()).unwrap();
    let store: Arc<dyn MarketStore> =
        Arc::new(SqliteStore::open(&dir.join("bourse.db"), settings.storage.batch_max).unwrap());
    let price = markets.get(SYMBOL).unwrap().initial_price;
    let (root, _fatal) = guardian::spawn_guardian().await.unwrap();
    let root = root.get_cell();

    // Node a has no symbols: the book's fills go nowhere, as when its node dies between
    // acknowledging a fill and the symbol storing it.
    let (a, regions) = node("a", &root, &store, &markets, false).await;
    cross(&a, 1, price).await;
    cross(&a, 2, price + 1).await;
    assert!(
        store.recent_ticks(SYMBOL, 10).await.unwrap().is_empty(),
        "no trade reached the tape on node a"
    );
    kill(regions).await;

    // Node b takes the book over: it re-sends its recent fills, and the symbol stores them.
    let (b, regions) = node("b", &root, &store, &markets, true).await;
    b.ask::<BookEntity>(SYMBOL, BookMsg::Quote).await.unwrap();
    let ticks = ticks_until(&store, |t| t.len() >= 2).await;
    assert_eq!(
        ticks,
        vec![(1, price), (2, price + 1)],
        "both fills, in order"
    );
    kill(regions).await;

    // Node c takes both over: the book re-sends the same fills, the symbol skips them, and
    // the next fill follows them once.
    let (c, _regions) = node("c", &root, &store, &markets, true).await;
    cross(&c, 3, price + 2).await;
    let ticks = ticks_until(&store, |t| t.iter().any(|(id, _)| *id == 3)).await;
    assert_eq!(
        ticks,
        vec![(1, price), (2, price + 1), (3, price + 2)],
        "every fill once"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
