//! The contract every [`MarketStore`] backend passes. A backend's test calls [`run_all`]
//! with a function that opens *the same* database each time it is called (so reopening is
//! tested); each check uses its own symbols, so the checks share one database. Beside it:
//! [`two_stores_fence`] and [`two_stores_race`] (two processes that both believe they own a
//! key, one after the other and at the same time) and the halves of
//! the crash test ([`crash_writer`], [`check_after_crash`]), which a backend's test runs
//! in a child process it SIGKILLs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test suite: failing loudly is its job

use crate::records::{Candle, Interval, OutboxEvent, Side, Tick};
use crate::{MarketStore, StoreError, Write};

/// The PostgreSQL server a test runs against (`BOURSE_TEST_POSTGRES_URL`), or `None`,
/// printed as `SKIPPED <test>`, when there is none; with `BOURSE_REQUIRE_POSTGRES` set
/// (`scripts/test` sets both) a missing server fails the test instead of skipping it.
pub fn postgres_server(test: &str) -> Option<String> {
    match std::env::var("BOURSE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("BOURSE_REQUIRE_POSTGRES").is_err(),
                "BOURSE_REQUIRE_POSTGRES is set but BOURSE_TEST_POSTGRES_URL is not"
            );
            println!("SKIPPED {test}: no PostgreSQL (set BOURSE_TEST_POSTGRES_URL)");
            None
        }
    }
}

/// The ScyllaDB nodes a test runs against (`BOURSE_SCYLLA_URI`: `host:port[,host:port…]`),
/// or `None`, printed as `SKIPPED <test>`, when none is configured. This machine cannot run
/// ScyllaDB, so `scripts/test` sets none: the ScyllaDB suite runs only where one is.
pub fn scylla_server(test: &str) -> Option<Vec<String>> {
    match std::env::var("BOURSE_SCYLLA_URI") {
        Ok(uri) if !uri.trim().is_empty() => Some(
            uri.split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
        ),
        _ => {
            println!("SKIPPED {test}: no ScyllaDB (set BOURSE_SCYLLA_URI=host:9042)");
            None
        }
    }
}

/// A PostgreSQL database made for one test and dropped when the guard goes, whether the
/// test passed or panicked (the server may be a developer's own).
pub struct ScratchDatabase {
    admin: String,
    /// The database's name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

impl ScratchDatabase {
    /// Creates `bourse_<test>_<pid>` (empty) on the server `admin` reaches.
    pub async fn create(admin: &str, test: &str) -> ScratchDatabase {
        let name = format!("bourse_{test}_{}", std::process::id());
        let url = crate::postgres::create_database(admin, &name)
            .await
            .expect("create scratch database");
        ScratchDatabase {
            admin: admin.into(),
            name,
            url,
        }
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside the test's runtime, which cannot block on a future of its
        // own: the drop gets a thread and a runtime of its own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rt.block_on(crate::postgres::drop_database(&admin, &name))
                        .map_err(|e| e.to_string())
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("dropping scratch database {}: {dropped:?}", self.name);
        }
    }
}

fn tick(symbol: &str, trade_id: u64, ts: i64) -> Tick {
    Tick {
        symbol: symbol.into(),
        trade_id,
        ts,
        price: 1000 + trade_id,
        qty: 1 + trade_id % 7,
        side: if trade_id.is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        },
        // Every other trade carries a feed sequence, so both shapes round-trip.
        feed_seq: if trade_id.is_multiple_of(3) {
            0
        } else {
            1_000_000_000_000 + trade_id
        },
        // And every other trade follows a book fill.
        book_trade: if trade_id.is_multiple_of(2) {
            0
        } else {
            2_000_000_000_000 + trade_id
        },
    }
}

/// The events of a relay: an outbox entry exists exactly when its write does, in order, and
/// stays until relayed. For the backends that have an outbox (not ScyllaDB).
pub async fn outbox_follows_its_writes(store: &dyn MarketStore) {
    let event = |i: u64| OutboxEvent {
        id: format!("trade:C-OUT:{i}"),
        kind: "trade".into(),
        key: "symbol/C-OUT".into(),
        ts: i as i64,
        data: format!("{{\"n\":{i}}}"),
    };
    let old = store
        .acquire_lease("symbol", "C-OUT", "n1")
        .await
        .expect("lease");
    let new = store
        .acquire_lease("symbol", "C-OUT", "n2")
        .await
        .expect("lease");
    // Refused with its write: no events.
    let stale = Write::Ticks(vec![tick("C-OUT", 1, 1)])
        .with_events(vec![event(1)])
        .fenced(&old);
    assert!(matches!(
        store.submit(stale).wait().await,
        Err(StoreError::Fenced { .. })
    ));
    for i in 2..=4 {
        store
            .submit(
                Write::Ticks(vec![tick("C-OUT", i, i as i64)])
                    .with_events(vec![event(i)])
                    .fenced(&new),
            )
            .wait()
            .await
            .expect("events with their write");
    }
    let pending = store.outbox(10).await.expect("outbox");
    let ids: Vec<&str> = pending.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids, ["trade:C-OUT:2", "trade:C-OUT:3", "trade:C-OUT:4"]);
    assert_eq!(pending[0].1, event(2));
    assert!(pending.windows(2).all(|w| w[0].0 < w[1].0), "by position");
    assert_eq!(store.outbox(2).await.expect("outbox").len(), 2, "limit");
    let relayed: Vec<u64> = pending[..2].iter().map(|(p, _)| *p).collect();
    store
        .submit(Write::Relayed { positions: relayed })
        .wait()
        .await
        .expect("relayed");
    let left = store.outbox(10).await.expect("outbox");
    assert_eq!(left, pending[2..].to_vec());
}

/// Journal entry `seq` of `kind/key`, its bytes derived from `seq`.
fn journal_entry(kind: &str, key: &str, seq: u64) -> Write {
    Write::Journal {
        kind: kind.into(),
        key: key.into(),
        seq,
        entry: vec![seq as u8; 3],
    }
}

fn candle(open_time: i64, close: u64) -> Candle {
    Candle {
        open_time,
        open: 10,
        high: close.max(20),
        low: 5,
        close,
        volume: 3,
    }
}

/// Runs every check; panics with the failing check's message.
pub async fn run_all<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Box<dyn MarketStore>>,
{
    let store = open().await;
    let store = store.as_ref();
    ticks_round_trip(store).await;
    replayed_ticks_are_ignored(store).await;
    candles_upsert_and_page(store).await;
    flush_is_a_barrier(store).await;
    leases_fence_older_epochs(store).await;
    leases_taken_now_share_the_epochs(store).await;
    journals_snapshot_and_fence(store).await;
    users_are_unique(store).await;
    watchlists_are_replaced_whole(store).await;
    holdings_read_from_their_baseline(store).await;
    chat_pages_newest_first(store).await;
    alerts_fire_once_per_firing(store).await;
    notifications_page_by_time(store).await;
    store.close().await.expect("close");
    closed_store_refuses_writes(store).await;
    reopened_store_keeps_everything(open().await.as_ref()).await;
}

async fn ticks_round_trip(store: &dyn MarketStore) {
    let ticks: Vec<Tick> = (1..=50)
        .map(|i| tick("C-TICKS", i, 1_000 + i as i64 * 10))
        .collect();
    store
        .submit(Write::Ticks(ticks[..25].to_vec()))
        .wait()
        .await
        .expect("first batch");
    store
        .submit(Write::Ticks(ticks[25..].to_vec()))
        .wait()
        .await
        .expect("second batch");
    let recent = store.recent_ticks("C-TICKS", 10).await.expect("recent");
    let expect: Vec<Tick> = ticks.iter().rev().take(10).cloned().collect();
    assert_eq!(recent, expect, "recent_ticks is the newest, newest first");
    let since = store
        .ticks_since("C-TICKS", 1_000 + 45 * 10)
        .await
        .expect("since");
    assert_eq!(
        since,
        ticks[44..].to_vec(),
        "ticks_since is inclusive, oldest first"
    );
    assert_eq!(store.last_trade_id("C-TICKS").await.expect("last id"), 50);
    assert_eq!(store.last_trade_id("C-NONE").await.expect("last id"), 0);
    assert!(
        store
            .recent_ticks("C-NONE", 10)
            .await
            .expect("empty")
            .is_empty()
    );
}

async fn replayed_ticks_are_ignored(store: &dyn MarketStore) {
    let first = tick("C-REPLAY", 1, 5);
    store
        .submit(Write::Ticks(vec![first.clone()]))
        .wait()
        .await
        .expect("write");
    let mut changed = first.clone();
    changed.price = 999_999;
    store
        .submit(Write::Ticks(vec![changed, tick("C-REPLAY", 2, 6)]))
        .wait()
        .await
        .expect("replay");
    let all = store.ticks_since("C-REPLAY", 0).await.expect("read");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], first, "a stored trade id is never overwritten");
}

async fn candles_upsert_and_page(store: &dyn MarketStore) {
    let candles: Vec<(Interval, Candle)> = (0..10)
        .map(|i| (Interval::M1, candle(i * 60_000, 100 + i as u64)))
        .collect();
    store
        .submit(Write::Candles {
            symbol: "C-CANDLE".into(),
            candles: candles.clone(),
        })
        .wait()
        .await
        .expect("candles");
    // A rebuilt candle replaces the stored one; other intervals stay apart.
    store
        .submit(Write::Candles {
            symbol: "C-CANDLE".into(),
            candles: vec![
                (Interval::M1, candle(9 * 60_000, 777)),
                (Interval::M5, candle(0, 55)),
            ],
        })
        .wait()
        .await
        .expect("upsert");
    let all = store
        .candles("C-CANDLE", Interval::M1, None, 1000)
        .await
        .expect("all");
    assert_eq!(all.len(), 10);
    assert_eq!(all[9].close, 777);
    assert!(
        all.windows(2).all(|w| w[0].open_time < w[1].open_time),
        "oldest first"
    );
    let page = store
        .candles("C-CANDLE", Interval::M1, Some(5 * 60_000), 3)
        .await
        .expect("page");
    assert_eq!(
        page.iter()
            .map(|c| c.open_time / 60_000)
            .collect::<Vec<_>>(),
        vec![2, 3, 4],
        "the newest `limit` before `end`, oldest first"
    );
    let between = store
        .candles_between("C-CANDLE", Interval::M1, 60_000, 3 * 60_000)
        .await
        .expect("between");
    assert_eq!(between.len(), 2);
    let m5 = store
        .candles("C-CANDLE", Interval::M5, None, 10)
        .await
        .expect("m5");
    assert_eq!(m5, vec![candle(0, 55)]);
}

async fn flush_is_a_barrier(store: &dyn MarketStore) {
    // Submitted without awaiting: the flush must still cover them.
    for i in 1..=200u64 {
        drop(store.submit(Write::Ticks(vec![tick("C-FLUSH", i, i as i64)])));
    }
    store.flush().await.expect("flush");
    assert_eq!(store.last_trade_id("C-FLUSH").await.expect("read"), 200);
}

async fn closed_store_refuses_writes(store: &dyn MarketStore) {
    let result = store
        .submit(Write::Ticks(vec![tick("C-CLOSED", 1, 1)]))
        .wait()
        .await;
    assert!(
        result.is_err(),
        "a write after close is refused, not lost silently"
    );
    let now = store
        .acquire_lease_now("bourse.node", "C-CLOSED", "r1")
        .await;
    assert!(
        matches!(now, Err(StoreError::Closed)),
        "a lease taken at once after close is refused: {now:?}"
    );
}

async fn reopened_store_keeps_everything(store: &dyn MarketStore) {
    assert_eq!(store.last_trade_id("C-TICKS").await.expect("reopen"), 50);
    assert_eq!(store.last_trade_id("C-FLUSH").await.expect("reopen"), 200);
    let m1 = store
        .candles("C-CANDLE", Interval::M1, None, 1000)
        .await
        .expect("reopen candles");
    assert_eq!(m1.len(), 10);
    assert_eq!(
        store
            .journal_after("book", "C-JOURNAL", 0)
            .await
            .expect("reopen journal")
            .len(),
        2,
        "journal entries after the snapshot survive a reopen"
    );
    assert!(
        store
            .user_by_name("c_alice")
            .await
            .expect("reopen user")
            .is_some()
    );
    assert_eq!(
        store.watchlist(9_001).await.expect("reopen watchlist"),
        ["C-W3", "C-W1"]
    );
    store.close().await.expect("close");
}

async fn journals_snapshot_and_fence(store: &dyn MarketStore) {
    let (kind, key) = ("book", "C-JOURNAL");
    assert_eq!(store.snapshot(kind, key).await.expect("read"), None);
    let fence = store.acquire_lease(kind, key, "n1").await.expect("lease");
    let entry = |seq: u64| journal_entry(kind, key, seq);
    for seq in 1..=5 {
        store
            .submit(entry(seq).fenced(&fence))
            .wait()
            .await
            .expect("journal write");
    }
    let dup = store.submit(entry(3).fenced(&fence)).wait().await;
    assert!(
        matches!(dup, Err(StoreError::Conflict(_))),
        "a journal position is written once: {dup:?}"
    );
    let all = store.journal_after(kind, key, 0).await.expect("read");
    assert_eq!(
        all.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(all[2].1, vec![3, 3, 3]);
    store
        .submit(
            Write::Snapshot {
                kind: kind.into(),
                key: key.into(),
                seq: 3,
                state: b"state@3".to_vec(),
            }
            .fenced(&fence),
        )
        .wait()
        .await
        .expect("snapshot");
    assert_eq!(
        store.snapshot(kind, key).await.expect("read"),
        Some((3, b"state@3".to_vec()))
    );
    let tail = store.journal_after(kind, key, 3).await.expect("read");
    assert_eq!(tail.iter().map(|e| e.0).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(
        store.journal_after(kind, key, 0).await.expect("read").len(),
        2,
        "the snapshot dropped the entries it covers"
    );
    // A newer activation fences the old one's journal writes.
    let newer = store.acquire_lease(kind, key, "n2").await.expect("lease");
    let stale = store.submit(entry(6).fenced(&fence)).wait().await;
    assert!(matches!(stale, Err(StoreError::Fenced { .. })), "{stale:?}");
    store
        .submit(entry(6).fenced(&newer))
        .wait()
        .await
        .expect("holder writes");
    // Keep two entries after the snapshot for the reopen check.
    store
        .submit(
            Write::Snapshot {
                kind: kind.into(),
                key: key.into(),
                seq: 4,
                state: b"state@4".to_vec(),
            }
            .fenced(&newer),
        )
        .wait()
        .await
        .expect("snapshot");
}

async fn chat_pages_newest_first(store: &dyn MarketStore) {
    let msg = |id: u64| crate::ChatMessage {
        room: "C-CHAT".into(),
        message_id: id,
        user_id: 1,
        username: "u".into(),
        text: format!("m{id}"),
        ts: id as i64,
    };
    for id in 1..=10 {
        store
            .submit(Write::Chat(msg(id)))
            .wait()
            .await
            .expect("chat write");
    }
    store
        .submit(Write::Chat(msg(3)))
        .wait()
        .await
        .expect("a replayed message is a no-op");
    let page = store.chat_history("C-CHAT", None, 4).await.expect("read");
    assert_eq!(
        page.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        vec![10, 9, 8, 7]
    );
    let next = store
        .chat_history("C-CHAT", Some(7), 4)
        .await
        .expect("read");
    assert_eq!(
        next.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        vec![6, 5, 4, 3]
    );
    assert_eq!(next[0], msg(6));
    // A `before` past every possible id is the newest page, not an empty one.
    let beyond = store
        .chat_history("C-CHAT", Some(u64::MAX), 4)
        .await
        .expect("read");
    assert_eq!(
        beyond.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        vec![10, 9, 8, 7]
    );
    assert!(
        store
            .chat_history("C-NONE", None, 4)
            .await
            .expect("read")
            .is_empty()
    );
}

async fn alerts_fire_once_per_firing(store: &dyn MarketStore) {
    let rule = |user_id: u64, symbol: &str, repeat: bool| crate::AlertRecord {
        alert_id: 0,
        user_id,
        symbol: symbol.into(),
        condition: "above".into(),
        value: 100,
        repeat,
        cooldown_s: 60,
        created_at: 5,
        status: crate::AlertStatus::Armed,
        last_fired_at: 0,
        fired_count: 0,
    };
    let once = store
        .submit(Write::CreateAlert(rule(7, "A-ALRT", false)))
        .value()
        .await
        .expect("create");
    let again = store
        .submit(Write::CreateAlert(rule(7, "A-ALRT", true)))
        .value()
        .await
        .expect("create");
    let other = store
        .submit(Write::CreateAlert(rule(8, "B-ALRT", false)))
        .value()
        .await
        .expect("create");
    assert!(once < again && again < other, "ids increase");
    let stored = store.alert(once).await.expect("read").expect("stored");
    assert_eq!(
        stored,
        crate::AlertRecord {
            alert_id: once,
            ..rule(7, "A-ALRT", false)
        }
    );
    let firing = |alert_id: u64, n: u64, ts: i64| crate::AlertFiring {
        alert_id,
        n,
        user_id: 7,
        symbol: "A-ALRT".into(),
        condition: "above".into(),
        value: 100,
        price: 101,
        reference: 0,
        ts,
    };
    for _ in 0..2 {
        store
            .submit(Write::AlertFired {
                firing: firing(once, 1, 10),
                one_shot: true,
            })
            .wait()
            .await
            .expect("fire");
    }
    for (n, ts) in [(1, 11), (2, 12)] {
        store
            .submit(Write::AlertFired {
                firing: firing(again, n, ts),
                one_shot: false,
            })
            .wait()
            .await
            .expect("fire");
    }
    let fired = store.alert(once).await.expect("read").expect("stored");
    assert_eq!(fired.status, crate::AlertStatus::Fired);
    assert_eq!((fired.fired_count, fired.last_fired_at), (1, 10));
    let repeating = store.alert(again).await.expect("read").expect("stored");
    assert_eq!(repeating.status, crate::AlertStatus::Armed);
    assert_eq!((repeating.fired_count, repeating.last_fired_at), (2, 12));
    let armed = store.armed_alerts("A-ALRT").await.expect("read");
    assert_eq!(
        armed.iter().map(|a| a.alert_id).collect::<Vec<_>>(),
        vec![again]
    );
    let history = store.alert_history(7, 10).await.expect("read");
    assert_eq!(
        history
            .iter()
            .map(|f| (f.alert_id, f.n))
            .collect::<Vec<_>>(),
        vec![(again, 2), (again, 1), (once, 1)],
        "each firing once, newest first"
    );
    store
        .submit(Write::DeleteAlert { alert_id: again })
        .wait()
        .await
        .expect("delete");
    assert!(store.armed_alerts("A-ALRT").await.expect("read").is_empty());
    assert_eq!(
        store
            .alerts_of(7)
            .await
            .expect("read")
            .iter()
            .map(|a| a.alert_id)
            .collect::<Vec<_>>(),
        vec![once],
        "a deleted rule is not listed"
    );
    assert_eq!(store.alerts_of(8).await.expect("read").len(), 1);
    assert_eq!(store.alert_count(7).await.expect("read"), 1);
    assert_eq!(store.alert_count(9).await.expect("read"), 0);
    assert!(store.alert(u64::MAX >> 2).await.expect("read").is_none());
}

async fn notifications_page_by_time(store: &dyn MarketStore) {
    let note = |key: &str, ts: i64| crate::Notification {
        user_id: 42,
        key: key.into(),
        ts,
        kind: "fill".into(),
        body: format!("{{\"k\":\"{key}\"}}"),
    };
    for (key, ts) in [("a", 10), ("b", 20), ("c", 20), ("d", 30), ("a", 99)] {
        store
            .submit(Write::Notify(note(key, ts)))
            .wait()
            .await
            .expect("notify");
    }
    let keys = |page: Vec<crate::Notification>| {
        page.into_iter().map(|n| (n.key, n.ts)).collect::<Vec<_>>()
    };
    assert_eq!(
        keys(store.notifications(42, 0, 100).await.expect("read")),
        vec![
            ("a".into(), 10),
            ("b".into(), 20),
            ("c".into(), 20),
            ("d".into(), 30)
        ],
        "a repeated key is stored once"
    );
    assert_eq!(
        keys(store.notifications(42, 10, 1).await.expect("read")),
        vec![("b".into(), 20), ("c".into(), 20)],
        "a page takes all of its last millisecond"
    );
    assert!(
        store
            .notifications(42, 30, 5)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(
        store
            .notifications(43, 0, 5)
            .await
            .expect("read")
            .is_empty()
    );
}

/// Inbox retention (`Write::PruneInbox`): entries older than the
/// cutoff go, then each user keeps only the newest; a second sweep finds nothing.
pub async fn inbox_retention(store: &dyn MarketStore) {
    let note = |user_id: u64, key: &str, ts: i64| crate::Notification {
        user_id,
        key: key.into(),
        ts,
        kind: "fill".into(),
        body: "{}".into(),
    };
    let entries = [
        (900, "k0", 1_000),
        (900, "k1", 1_001),
        (900, "k2", 1_002),
        (900, "k3", 1_003),
        (900, "k4", 1_004),
        (901, "j0", 1_000),
        (901, "j1", 5_000),
    ];
    for (user, key, ts) in entries {
        store
            .submit(Write::Notify(note(user, key, ts)))
            .wait()
            .await
            .expect("notify");
    }
    let prune = Write::PruneInbox {
        before: 1_001,
        keep_per_user: 3,
    };
    let dropped = store.submit(prune.clone()).value().await.expect("prune");
    assert!(dropped >= 3, "k0 and j0 by age, k1 over the cap: {dropped}");
    let keys = |page: Vec<crate::Notification>| page.into_iter().map(|n| n.key).collect::<Vec<_>>();
    assert_eq!(
        keys(store.notifications(900, 0, 100).await.expect("read")),
        ["k2", "k3", "k4"],
        "the newest three"
    );
    assert_eq!(
        keys(store.notifications(901, 0, 100).await.expect("read")),
        ["j1"],
        "the old one went, the new one stays"
    );
    assert_eq!(
        store.submit(prune).value().await.expect("prune again"),
        0,
        "a repeated sweep drops nothing"
    );
}

async fn users_are_unique(store: &dyn MarketStore) {
    let create = |name: &str| Write::CreateUser {
        username: name.into(),
        password_hash: format!("hash-of-{name}"),
        created_at: 7,
    };
    let a = store
        .submit(create("c_alice"))
        .value()
        .await
        .expect("alice");
    let b = store.submit(create("c_bob")).value().await.expect("bob");
    assert!(a > 0 && b > a, "ids are positive and increasing: {a} {b}");
    let again = store.submit(create("c_alice")).value().await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let got = store.user_by_name("c_alice").await.expect("read");
    assert_eq!(
        got,
        Some(crate::UserRecord {
            user_id: a,
            username: "c_alice".into(),
            password_hash: "hash-of-c_alice".into(),
            created_at: 7,
        })
    );
    assert_eq!(store.user_by_name("c_nobody").await.expect("read"), None);
}

async fn watchlists_are_replaced_whole(store: &dyn MarketStore) {
    let set = |user_id: u64, symbols: &[&str]| Write::Watchlist {
        user_id,
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
    };
    assert!(
        store.watchlist(9_001).await.expect("read").is_empty(),
        "a user who never wrote one has an empty watchlist"
    );
    store
        .submit(set(9_001, &["C-W2", "C-W1", "C-W3"]))
        .wait()
        .await
        .expect("first list");
    store
        .submit(set(9_002, &["C-W9"]))
        .wait()
        .await
        .expect("another user's list");
    assert_eq!(
        store.watchlist(9_001).await.expect("read"),
        ["C-W2", "C-W1", "C-W3"],
        "kept in the user's order"
    );
    store
        .submit(set(9_001, &["C-W3", "C-W1"]))
        .wait()
        .await
        .expect("shorter list");
    assert_eq!(
        store.watchlist(9_001).await.expect("read"),
        ["C-W3", "C-W1"],
        "a shorter list leaves nothing of the longer one behind"
    );
    store.submit(set(9_002, &[])).wait().await.expect("emptied");
    assert!(store.watchlist(9_002).await.expect("read").is_empty());
}

async fn holdings_read_from_their_baseline(store: &dyn MarketStore) {
    let point = |ts: i64, data: &str| Write::Holdings {
        user_id: 9_101,
        ts,
        data: data.into(),
    };
    assert!(
        store
            .holdings(9_101, 0, i64::MAX)
            .await
            .expect("read")
            .is_empty()
    );
    for (ts, data) in [(1_000, "a"), (2_000, "b"), (3_000, "c"), (2_000, "b2")] {
        store.submit(point(ts, data)).wait().await.expect("point");
    }
    store
        .submit(Write::Holdings {
            user_id: 9_102,
            ts: 2_500,
            data: "other".into(),
        })
        .wait()
        .await
        .expect("another user's point");
    let read = |from, to| store.holdings(9_101, from, to);
    assert_eq!(
        read(2_500, 10_000).await.expect("read"),
        [(2_000, "b2".to_string()), (3_000, "c".to_string())],
        "the point in force at `from` (replaced in place), then the later ones"
    );
    assert_eq!(
        read(2_000, 2_999).await.expect("read"),
        [(2_000, "b2".to_string())],
        "a point exactly at `from` is its own baseline; none after `to`"
    );
    assert_eq!(
        read(0, 1_500).await.expect("read"),
        [(1_000, "a".to_string())],
        "before the first point, the range starts with the first"
    );
    let mut at = store.holdings_at(2_600).await.expect("everyone's");
    at.retain(|(user, _, _)| [9_101, 9_102].contains(user));
    at.sort();
    assert_eq!(
        at,
        [
            (9_101, 2_000, "b2".to_string()),
            (9_102, 2_500, "other".to_string())
        ],
        "each user's point in force at the time"
    );
    let mut at = store.holdings_at(1_500).await.expect("everyone's");
    at.retain(|(user, _, _)| [9_101, 9_102].contains(user));
    assert_eq!(at, [(9_101, 1_000, "a".to_string())], "9102 had none yet");
}

/// Holdings retention (`Write::PruneHoldings`): points older than the
/// cutoff go except each user's newest of them; a second sweep finds nothing.
pub async fn holdings_retention(store: &dyn MarketStore) {
    for (user_id, ts) in [(9_201, 100), (9_201, 200), (9_201, 300), (9_202, 100)] {
        store
            .submit(Write::Holdings {
                user_id,
                ts,
                data: format!("{user_id}@{ts}"),
            })
            .wait()
            .await
            .expect("point");
    }
    let prune = Write::PruneHoldings { before: 250 };
    let dropped = store.submit(prune.clone()).value().await.expect("prune");
    assert_eq!(
        dropped, 1,
        "only 9201's point at 100 is superseded before 250"
    );
    assert_eq!(
        store.holdings(9_201, 250, 1_000).await.expect("read"),
        [(200, "9201@200".to_string()), (300, "9201@300".to_string())],
        "what the user held at the cutoff is still known"
    );
    assert_eq!(
        store.holdings(9_202, 250, 1_000).await.expect("read"),
        [(100, "9202@100".to_string())],
        "a user's only point stays however old"
    );
    assert_eq!(store.submit(prune).value().await.expect("again"), 0);
}

async fn leases_fence_older_epochs(store: &dyn MarketStore) {
    assert_eq!(store.lease("symbol", "C-LEASE").await.expect("read"), None);
    let first = store
        .acquire_lease("symbol", "C-LEASE", "n1")
        .await
        .expect("first lease");
    let second = store
        .acquire_lease("symbol", "C-LEASE", "n2")
        .await
        .expect("second lease");
    assert_eq!(
        second.epoch,
        first.epoch + 1,
        "each activation takes the next epoch"
    );
    assert_eq!(
        store.lease("symbol", "C-LEASE").await.expect("read"),
        Some(("n2".into(), second.epoch))
    );
    // The older holder is fenced; its write changes nothing. The current one writes.
    let stale = store
        .submit(Write::Ticks(vec![tick("C-LEASE", 1, 1)]).fenced(&first))
        .wait()
        .await;
    assert!(
        matches!(stale, Err(StoreError::Fenced { epoch, current, .. }) if epoch == first.epoch && current == second.epoch),
        "{stale:?}"
    );
    store
        .submit(Write::Ticks(vec![tick("C-LEASE", 2, 2)]).fenced(&second))
        .wait()
        .await
        .expect("current holder writes");
    let stored = store.ticks_since("C-LEASE", 0).await.expect("read");
    assert_eq!(
        stored.iter().map(|t| t.trade_id).collect::<Vec<_>>(),
        vec![2],
        "only the holder's write landed"
    );
    // A fenced write in a batch does not fail the others.
    let a = store.submit(Write::Ticks(vec![tick("C-LEASE", 3, 3)]).fenced(&first));
    let b = store.submit(Write::Ticks(vec![tick("C-LEASE", 4, 4)]));
    assert!(a.wait().await.is_err());
    b.wait()
        .await
        .expect("unfenced write in the same batch commits");
    // Release by a stale epoch is ignored; by the holder it clears the owner.
    store
        .submit(Write::ReleaseLease {
            kind: "symbol".into(),
            key: "C-LEASE".into(),
            epoch: first.epoch,
        })
        .wait()
        .await
        .expect("release");
    assert_eq!(
        store.lease("symbol", "C-LEASE").await.expect("read"),
        Some(("n2".into(), second.epoch))
    );
    store
        .submit(Write::ReleaseLease {
            kind: "symbol".into(),
            key: "C-LEASE".into(),
            epoch: second.epoch,
        })
        .wait()
        .await
        .expect("release");
    assert_eq!(
        store.lease("symbol", "C-LEASE").await.expect("read"),
        Some((String::new(), second.epoch))
    );
}

/// A lease taken at once, beside the queue, and one taken through it count one sequence of
/// epochs: each takes the next, and the lease names the newest owner.
async fn leases_taken_now_share_the_epochs(store: &dyn MarketStore) {
    let (kind, key) = ("bourse.node", "C-NOW");
    let first = store
        .acquire_lease_now(kind, key, "r1")
        .await
        .expect("first");
    assert_eq!(first, 1, "a new lease starts at epoch 1");
    assert_eq!(
        store.lease(kind, key).await.expect("read"),
        Some(("r1".into(), 1))
    );
    let second = store
        .acquire_lease_now(kind, key, "r2")
        .await
        .expect("second");
    let queued = store.acquire_lease(kind, key, "r3").await.expect("queued");
    let third = store
        .acquire_lease_now(kind, key, "r4")
        .await
        .expect("third");
    assert_eq!((second, queued.epoch, third), (2, 3, 4));
    assert_eq!(
        store.lease(kind, key).await.expect("read"),
        Some(("r4".into(), 4))
    );
}

/// While another connection holds the lease row a fenced batch must lock (`hold` takes
/// `book/C-ASIDE`'s row, `release` lets it go), the batch waits, and a lease taken at once
/// does not wait with it. For a backend that locks rows: PostgreSQL (SQLite locks the whole
/// file, so there a lease taken at once waits only for the lock, never for the queue).
pub async fn a_lease_taken_now_waits_for_no_batch(
    store: &dyn MarketStore,
    hold: impl std::future::Future<Output = ()>,
    release: impl std::future::Future<Output = ()>,
) {
    let fence = store
        .acquire_lease("book", "C-ASIDE", "node-a")
        .await
        .expect("lease");
    hold.await;
    let held = store.submit(Write::Ticks(vec![tick("C-ASIDE", 1, 1)]).fenced(&fence));
    // Less than PostgreSQL's lock_timeout in the store's sessions (5 s): a lease that
    // waited on the batch would still be waiting.
    let now = tokio::time::timeout(
        std::time::Duration::from_secs(4),
        store.acquire_lease_now("bourse.node", "C-ASIDE", "r1"),
    )
    .await
    .expect("a lease taken at once does not wait for the held batch")
    .expect("lease taken");
    assert_eq!(now, 1);
    assert!(
        store
            .ticks_since("C-ASIDE", 0)
            .await
            .expect("read")
            .is_empty(),
        "the batch was still held while the lease was taken"
    );
    release.await;
    held.wait()
        .await
        .expect("the held batch commits once the row is free");
}

/// Two stores on one database, as two node processes that both believe they own a key:
/// once the second takes the lease, the first one's writes under its older epoch never land.
pub async fn two_stores_fence(a: &dyn MarketStore, b: &dyn MarketStore) {
    let lease_a = a
        .acquire_lease("book", "C-SPLIT", "node-a")
        .await
        .expect("a");
    a.submit(Write::Ticks(vec![tick("C-SPLIT", 1, 1)]).fenced(&lease_a))
        .wait()
        .await
        .expect("a holds it");
    let lease_b = b
        .acquire_lease("book", "C-SPLIT", "node-b")
        .await
        .expect("b");
    assert!(lease_b.epoch > lease_a.epoch);
    let stale = a
        .submit(Write::Ticks(vec![tick("C-SPLIT", 2, 2)]).fenced(&lease_a))
        .wait()
        .await;
    assert!(matches!(stale, Err(StoreError::Fenced { .. })), "{stale:?}");
    b.submit(Write::Ticks(vec![tick("C-SPLIT", 3, 3)]).fenced(&lease_b))
        .wait()
        .await
        .expect("b holds it");
    let ids: Vec<u64> = a
        .ticks_since("C-SPLIT", 0)
        .await
        .expect("read")
        .iter()
        .map(|t| t.trade_id)
        .collect();
    assert_eq!(ids, vec![1, 3], "the fenced epoch's write never landed");
    two_stores_fence_every_table(a, b).await;
}

/// As [`two_stores_fence`], for every other fenced write: chat, candles, a new alert rule
/// (under the symbol's lease) and a rule's firing and deletion (under the rule's lease).
/// `a` writes each table before the take-over, so it holds their partitions; after it,
/// none of `a`'s writes lands anywhere.
async fn two_stores_fence_every_table(a: &dyn MarketStore, b: &dyn MarketStore) {
    let (kind, key) = ("symbol", "C-SPLIT2");
    let msg = |id: u64| crate::ChatMessage {
        room: key.into(),
        message_id: id,
        user_id: 1,
        username: "u".into(),
        text: format!("m{id}"),
        ts: id as i64,
    };
    let candles = |open_time: i64, close: u64| Write::Candles {
        symbol: key.into(),
        candles: vec![(Interval::M1, Candle::from_trade(open_time, close, 1))],
    };
    let rule = crate::AlertRecord {
        alert_id: 0,
        user_id: 77,
        symbol: key.into(),
        condition: "above".into(),
        value: 100,
        repeat: true,
        cooldown_s: 60,
        created_at: 5,
        status: crate::AlertStatus::Armed,
        last_fired_at: 0,
        fired_count: 0,
    };
    let firing = |alert_id: u64, n: u64| crate::AlertFiring {
        alert_id,
        n,
        user_id: 77,
        symbol: key.into(),
        condition: "above".into(),
        value: 100,
        price: 101,
        reference: 0,
        ts: 10 * n as i64,
    };
    let held = a.acquire_lease(kind, key, "node-a").await.expect("a");
    let write = |store: &'_ dyn MarketStore, w: Write, f: &crate::Fence| store.submit(w.fenced(f));
    write(a, Write::Chat(msg(1)), &held)
        .wait()
        .await
        .expect("chat");
    write(a, candles(0, 10), &held)
        .wait()
        .await
        .expect("candles");
    let alert_id = write(a, Write::CreateAlert(rule.clone()), &held)
        .value()
        .await
        .expect("alert");
    let rule_key = alert_id.to_string();
    let rule_held = a
        .acquire_lease("alert", &rule_key, "node-a")
        .await
        .expect("a");
    let fired = Write::AlertFired {
        firing: firing(alert_id, 1),
        one_shot: false,
    };
    write(a, fired, &rule_held).wait().await.expect("fired");

    let taken = b.acquire_lease(kind, key, "node-b").await.expect("b");
    let rule_taken = b
        .acquire_lease("alert", &rule_key, "node-b")
        .await
        .expect("b");
    let stale = [
        (Write::Chat(msg(2)), &held),
        (candles(0, 99), &held),
        (candles(60_000, 98), &held),
        (Write::CreateAlert(rule.clone()), &held),
        (
            Write::AlertFired {
                firing: firing(alert_id, 2),
                one_shot: false,
            },
            &rule_held,
        ),
        (Write::DeleteAlert { alert_id }, &rule_held),
    ];
    for (w, f) in stale {
        let what = format!("{w:?}");
        let refused = write(a, w, f).wait().await;
        assert!(
            matches!(refused, Err(StoreError::Fenced { .. })),
            "{what}: {refused:?}"
        );
    }

    let ids = |m: Vec<crate::ChatMessage>| m.iter().map(|m| m.message_id).collect::<Vec<_>>();
    assert_eq!(
        ids(b.chat_history(key, None, 10).await.expect("read")),
        vec![1]
    );
    assert_eq!(
        b.candles(key, Interval::M1, None, 10).await.expect("read"),
        vec![Candle::from_trade(0, 10, 1)],
        "a stale candle neither replaced one nor added one"
    );
    let listed = b.alerts_of(77).await.expect("read");
    assert_eq!(
        listed
            .iter()
            .map(|r| (r.alert_id, r.fired_count, r.status))
            .collect::<Vec<_>>(),
        vec![(alert_id, 1, crate::AlertStatus::Armed)],
        "no stale rule, firing or deletion landed"
    );
    assert_eq!(
        b.armed_alerts(key)
            .await
            .expect("read")
            .iter()
            .map(|r| r.alert_id)
            .collect::<Vec<_>>(),
        vec![alert_id]
    );
    assert_eq!(
        b.alert_history(77, 10)
            .await
            .expect("read")
            .iter()
            .map(|f| (f.alert_id, f.n))
            .collect::<Vec<_>>(),
        vec![(alert_id, 1)]
    );
    // The new holders write on.
    write(b, Write::Chat(msg(3)), &taken)
        .wait()
        .await
        .expect("chat");
    assert_eq!(
        ids(b.chat_history(key, None, 10).await.expect("read")),
        vec![3, 1]
    );
    let fired = Write::AlertFired {
        firing: firing(alert_id, 2),
        one_shot: false,
    };
    write(b, fired, &rule_taken).wait().await.expect("fired");
    let rule_now = b.alert(alert_id).await.expect("read").expect("stored");
    assert_eq!((rule_now.fired_count, rule_now.last_fired_at), (2, 20));
}

/// Two stores on one database at the same time: `a` appends journal entries under its lease
/// as fast as it can while `b` takes the entity over. What `a` got acknowledged is exactly
/// what storage holds (no refused write landed, no acknowledged one is missing), it is a
/// gap-free prefix, nothing of `a`'s was acknowledged after its first refusal, and `b`
/// continues the journal.
pub async fn two_stores_race(a: &dyn MarketStore, b: &dyn MarketStore) {
    use std::sync::atomic::{AtomicU64, Ordering};
    const WINDOW: u64 = 8;
    let (kind, key) = ("book", "C-RACE");
    let entry = |seq: u64| journal_entry(kind, key, seq);
    let lease_a = a.take_over(kind, key, "node-a").await.expect("a");
    let progress = AtomicU64::new(0);
    let writer = async {
        let mut acked = Vec::new();
        let mut refused = 0u64;
        let mut seq = 0;
        while refused < 3 * WINDOW && seq < 100_000 {
            // A window in flight at once, so the take-over can land mid-window.
            let acks: Vec<_> = (0..WINDOW)
                .map(|_| {
                    seq += 1;
                    (seq, a.submit(entry(seq).fenced(&lease_a)))
                })
                .collect();
            for (seq, ack) in acks {
                match ack.wait().await {
                    Ok(()) => {
                        assert_eq!(refused, 0, "entry {seq} acknowledged after a refusal");
                        acked.push(seq);
                        progress.store(seq, Ordering::Relaxed);
                    }
                    Err(StoreError::Fenced { .. }) => refused += 1,
                    Err(e) => panic!("entry {seq}: {e}"),
                }
            }
        }
        assert!(refused > 0, "a was never fenced");
        println!(
            "two_stores_race: {} entries acknowledged before the take-over, {refused} refused after",
            acked.len()
        );
        acked
    };
    let taker = async {
        while progress.load(Ordering::Relaxed) < 50 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        b.take_over(kind, key, "node-b").await.expect("b")
    };
    let (acked, lease_b) = tokio::join!(writer, taker);
    assert!(lease_b.epoch > lease_a.epoch);
    let stored: Vec<u64> = b
        .journal_after(kind, key, 0)
        .await
        .expect("read")
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(
        stored, acked,
        "stored entries are exactly the acknowledged ones"
    );
    assert_eq!(
        stored,
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "no gap"
    );
    let next = stored.len() as u64 + 1;
    b.submit(entry(next).fenced(&lease_b))
        .wait()
        .await
        .expect("b continues the journal");
}

/// A batch that fails (here: the backend refuses journal entry 7 of `C-HALT`, which
/// `break_entry_7` arranges and `mend` undoes) halts its lease: entry 8 never lands after
/// the missing 7, even once the backend would take it, until the entity is taken over; the
/// new activation finds a journal without a gap and continues it.
pub async fn a_failed_batch_halts_its_lease(
    store: &dyn MarketStore,
    break_entry_7: impl Future<Output = ()>,
    mend: impl Future<Output = ()>,
) {
    let (kind, key) = ("book", "C-HALT");
    let entry = |seq: u64| journal_entry(kind, key, seq);
    let first = store.take_over(kind, key, "node-a").await.expect("lease");
    for seq in 1..=6 {
        store
            .submit(entry(seq).fenced(&first))
            .wait()
            .await
            .expect("entries 1-6");
    }
    break_entry_7.await;
    let failed = store.submit(entry(7).fenced(&first)).wait().await;
    assert!(matches!(failed, Err(StoreError::Backend(_))), "{failed:?}");
    let after = store.submit(entry(8).fenced(&first)).wait().await;
    assert!(matches!(after, Err(StoreError::Halted { .. })), "{after:?}");
    mend.await;
    let still = store.submit(entry(7).fenced(&first)).wait().await;
    assert!(matches!(still, Err(StoreError::Halted { .. })), "{still:?}");
    let second = store
        .take_over(kind, key, "node-a")
        .await
        .expect("take over");
    let seqs: Vec<u64> = store
        .journal_after(kind, key, 0)
        .await
        .expect("read")
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=6).collect::<Vec<_>>(),
        "nothing after the failure"
    );
    store
        .submit(entry(7).fenced(&second))
        .wait()
        .await
        .expect("the new activation continues");
}

/// Ticks per batch of the crash test: big enough that a SIGKILL lands mid-batch.
pub const CRASH_BATCH: u64 = 500;

/// The child half of the crash test: writes batches of [`CRASH_BATCH`] ticks (batch `n`'s
/// ticks carry price `n`) as fast as the store takes them, each batch under a lease and
/// with one journal entry, and prints `ACK n` once batch `n` is acknowledged. Never returns;
/// the parent kills it.
pub async fn crash_writer(store: &dyn MarketStore) {
    let fence = store
        .take_over("book", "C-CRASH", "crasher")
        .await
        .expect("lease");
    for batch in 0u64.. {
        let ticks = (0..CRASH_BATCH)
            .map(|i| Tick {
                symbol: "C-CRASH".into(),
                trade_id: batch * CRASH_BATCH + i + 1,
                ts: batch as i64,
                price: batch,
                qty: 1,
                side: Side::Buy,
                feed_seq: 0,
                book_trade: 0,
            })
            .collect();
        let ticks = store.submit(Write::Ticks(ticks).fenced(&fence));
        let entry = store.submit(
            Write::Journal {
                kind: "book".into(),
                key: "C-CRASH".into(),
                seq: batch + 1,
                entry: batch.to_le_bytes().to_vec(),
            }
            .fenced(&fence),
        );
        ticks.wait().await.expect("ticks commit");
        entry.wait().await.expect("journal commit");
        println!("ACK {batch}");
    }
}

/// The parent half: after the child was killed having printed `ACK acked`, every
/// acknowledged batch is whole, no batch is partial, and the journal has no gap. Returns
/// how many batches are stored.
pub async fn check_after_crash(store: &dyn MarketStore, acked: u64) -> u64 {
    let ticks = store.ticks_since("C-CRASH", 0).await.expect("read");
    let mut per_batch = std::collections::BTreeMap::<u64, u64>::new();
    for t in &ticks {
        *per_batch.entry(t.price).or_default() += 1;
    }
    for b in 0..=acked {
        assert_eq!(
            per_batch.get(&b),
            Some(&CRASH_BATCH),
            "acknowledged batch {b} is complete"
        );
    }
    for (b, n) in &per_batch {
        assert_eq!(*n, CRASH_BATCH, "batch {b} is all or nothing");
    }
    let journal = store
        .journal_after("book", "C-CRASH", 0)
        .await
        .expect("journal");
    let seqs: Vec<u64> = journal.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "the journal is a prefix without gaps"
    );
    assert!(
        seqs.len() as u64 > acked,
        "every acknowledged journal entry is stored"
    );
    // The next activation fences the dead writer's lease and writes on.
    let fence = store
        .take_over("book", "C-CRASH", "survivor")
        .await
        .expect("take over");
    store
        .submit(
            Write::Journal {
                kind: "book".into(),
                key: "C-CRASH".into(),
                seq: seqs.len() as u64 + 1,
                entry: vec![0],
            }
            .fenced(&fence),
        )
        .wait()
        .await
        .expect("the survivor journals");
    per_batch.len() as u64
}
