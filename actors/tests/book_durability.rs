//! The book answers a `book:S` subscription only once everything its snapshot shows is
//! durable, as it does its other answers: a subscriber never sees an order that a crash
//! could take back. The book runs in this process on SQLite while another connection holds
//! the file's write lock, so its journal write waits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bourse_actors::book::engine::{Kind, Order, Side, TimeInForce};
use bourse_actors::book::{BookDeps, BookEntity, BookMsg, BookReply};
use bourse_actors::trading::order_id;
use bourse_cluster::{Hub, RegionArgs, Sharding, StreamRequest, guardian, spawn_region};
use bourse_config::Settings;
use bourse_storage::{MarketStore, SqliteStore};
use bourse_supervision::RestartPolicy;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_book_subscription_waits_until_its_snapshot_is_durable() {
    let dir = std::env::temp_dir().join(format!("bourse-book-durability-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bourse.db");
    let (settings, markets) =
        Settings::from_sources("[feed]\nkind = \"none\"", std::iter::empty()).unwrap();
    let store: Arc<dyn MarketStore> =
        Arc::new(SqliteStore::open(&path, settings.storage.batch_max).unwrap());
    let sharding = Sharding::new("t", 16, Duration::from_secs(10), Hub::new("t"));
    sharding.set_ring_members(&["t".to_string()]);
    let (root, _fatal) = guardian::spawn_guardian().await.unwrap();
    let args = RegionArgs::<BookEntity> {
        deps: Arc::new(BookDeps {
            events: false,
            store,
            markets,
            replay_events: 64,
            snapshot_every: 1000,
            price_band_pct: 80,
            slippage_bps: 5,
            reserve_ms: 86_400_000,
        }),
        sharding: sharding.clone(),
        policy: RestartPolicy {
            max_restarts: 3,
            within: Duration::from_secs(10),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
        },
        passivate_after: None,
    };
    spawn_region::<BookEntity>(args, root.get_cell())
        .await
        .unwrap();
    let symbol = "KRW-BTC";
    sharding
        .ask::<BookEntity>(symbol, BookMsg::Quote)
        .await
        .expect("the book activates");

    // Another writer holds the write lock: the book's next journal write waits for it.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let order = Order {
        id: order_id(1, 1),
        owner: 1,
        side: Side::Buy,
        kind: Kind::Limit { price: 100_000 },
        qty: 1,
        tif: TimeInForce::Gtc,
        post_only: false,
    };
    let placing = {
        let sharding = sharding.clone();
        tokio::spawn(async move {
            sharding
                .ask::<BookEntity>(symbol, BookMsg::Submit(order))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let req = StreamRequest {
        channel: format!("book:{symbol}"),
        node: "t".into(),
        since: None,
    };
    let subscribing = {
        let (sharding, req) = (sharding.clone(), req.clone());
        tokio::spawn(async move { sharding.subscribe("book", symbol, req).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !placing.is_finished() && !subscribing.is_finished(),
        "neither the order nor a snapshot showing it is answered before the write is durable"
    );

    blocker.execute_batch("COMMIT").unwrap();
    let placed = tokio::time::timeout(Duration::from_secs(15), placing)
        .await
        .expect("the order is answered once durable")
        .unwrap()
        .expect("the order's answer");
    assert!(!matches!(placed, BookReply::Failed(_)), "{placed:?}");
    let grant = tokio::time::timeout(Duration::from_secs(15), subscribing)
        .await
        .expect("the grant comes once its snapshot is durable")
        .unwrap()
        .expect("a grant");
    let snapshot: serde_json::Value = serde_json::from_str(&grant.events[0].data).unwrap();
    assert_eq!(snapshot["bids"].as_array().unwrap().len(), 1, "{snapshot}");
    let _ = std::fs::remove_dir_all(&dir);
}
