//! The book state against itself: replaying the journaled commands, or restoring a snapshot
//! and replaying the rest, rebuilds exactly the same state and answers.

use super::*;
use crate::book::engine::{Kind, TimeInForce};
use crate::journal::StoredSnapshot;
use crate::trading::order_id;
use proptest::prelude::*;

fn order(user: u64, n: u32, side: Side, kind: Kind, qty: u64, tif: TimeInForce) -> Order {
    Order {
        id: order_id(user, n),
        owner: user,
        side,
        kind,
        qty,
        tif,
        post_only: false,
    }
}

fn limit(user: u64, n: u32, side: Side, price: u64, qty: u64) -> Command {
    Command::Submit {
        order: order(user, n, side, Kind::Limit { price }, qty, TimeInForce::Gtc),
        ts: i64::from(n),
    }
}

#[test]
fn the_price_band_holds_both_ends_and_at_least_one_tick() {
    assert_eq!(price_band(1000, 80), (200, 1800));
    assert_eq!(price_band(1000, 1), (990, 1010));
    // Rounded inward: a price the band names is never more than pct away.
    assert_eq!(price_band(999, 10), (900, 1098));
    // A band of 100% or more keeps every price down to one tick.
    assert_eq!(price_band(1000, 100), (1, 2000));
    assert_eq!(price_band(1000, 10_000), (1, 101_000));
    assert_eq!(price_band(0, 50), (1, 1));
    assert_eq!(price_band(u64::MAX, 10_000).1, u64::MAX);
}

proptest! {
    #[test]
    fn every_price_in_the_band_is_within_pct_of_the_reference(
        reference in 1u64..=1_000_000_000_000,
        pct in 1u32..=10_000,
    ) {
        let (low, high) = price_band(reference, pct);
        let (r, p) = (u128::from(reference), u128::from(pct));
        prop_assert!(low >= 1 && low <= reference && reference <= high);
        // |price - reference| * 100 <= reference * pct at both ends...
        prop_assert!((r - u128::from(low)) * 100 <= r * p || low == 1);
        prop_assert!((u128::from(high) - r) * 100 <= r * p);
        // ...and one tick further out is not.
        prop_assert!((u128::from(high) + 1 - r) * 100 > r * p);
        if low > 1 {
            prop_assert!((r - u128::from(low) + 1) * 100 > r * p);
        }
    }
}

#[test]
fn the_newest_fills_are_kept_through_a_snapshot() {
    let mut b = BookState::new();
    let n = RECENT_FILLS as u32 + 10;
    for i in 1..=n {
        b.apply(&limit(1, i, Side::Sell, 100, 1));
        b.apply(&limit(2, i, Side::Buy, 100, 1));
    }
    let ids: Vec<u64> = b.recent_fills().map(|f| f.trade_id).collect();
    let want: Vec<u64> = (11..=u64::from(n)).collect();
    assert_eq!(ids, want, "the newest RECENT_FILLS fills, oldest first");
    let bytes = bourse_storage::codec::encode(&b.snapshot()).unwrap();
    let restored = BookState::restore(Snapshot::decode(&bytes).unwrap());
    assert_eq!(restored.recent_fills().len(), RECENT_FILLS);
    assert_eq!(restored.snapshot(), b.snapshot());
}

#[test]
fn a_snapshot_stored_before_fills_were_kept_restores_with_none() {
    /// The layout snapshots had then.
    #[derive(Serialize)]
    struct Old {
        resting: Vec<Resting>,
        orders: Vec<(u64, Tracked)>,
        done: Vec<(i64, u64)>,
        next_trade: u64,
        last_price: Option<u64>,
    }
    let mut b = BookState::new();
    b.apply(&limit(1, 1, Side::Sell, 100, 5));
    b.apply(&limit(2, 1, Side::Buy, 100, 2));
    let s = b.snapshot();
    let old = Old {
        resting: s.resting.clone(),
        orders: s.orders.clone(),
        done: s.done.clone(),
        next_trade: s.next_trade,
        last_price: s.last_price,
    };
    let bytes = bourse_storage::codec::encode(&old).unwrap();
    let restored = BookState::restore(Snapshot::decode(&bytes).unwrap());
    assert_eq!(restored.recent_fills().len(), 0);
    assert_eq!(restored.engine().level_qty(Side::Sell, 100), 3);
    assert_eq!(restored.last_price(), Some(100));
    assert_eq!(restored.order(order_id(2, 1)), b.order(order_id(2, 1)));
    // And a new layout is never mistaken for the old.
    assert!(
        bourse_storage::codec::decode::<SnapshotBeforeFills>(
            &bourse_storage::codec::encode(&s).unwrap()
        )
        .is_err()
    );
}

#[test]
fn a_snapshot_stored_before_markets_had_hours_restores_with_no_reserved_orders() {
    let mut b = BookState::new();
    b.apply(&limit(1, 1, Side::Sell, 100, 5));
    b.apply(&limit(2, 1, Side::Buy, 100, 2));
    let s = b.snapshot();
    let old = SnapshotBeforeHours {
        resting: s.resting.clone(),
        orders: s.orders.clone(),
        done: s.done.clone(),
        next_trade: s.next_trade,
        last_price: s.last_price,
        recent_fills: s.recent_fills.clone(),
    };
    let bytes = bourse_storage::codec::encode(&old).unwrap();
    let restored = BookState::restore(Snapshot::decode(&bytes).unwrap());
    assert_eq!(restored.snapshot(), s, "nothing reserved, no day orders");
    assert!(
        bourse_storage::codec::decode::<SnapshotBeforeHours>(
            &bourse_storage::codec::encode(&s).unwrap()
        )
        .is_err(),
        "the new layout is never mistaken for the old"
    );
}

fn reserve(user: u64, n: u32, side: Side, price: u64, qty: u64, tif: TimeInForce) -> Command {
    Command::Reserve {
        order: order(user, n, side, Kind::Limit { price }, qty, tif),
        ts: i64::from(n),
    }
}

fn status(b: &BookState, user: u64, n: u32) -> Option<Status> {
    b.order(order_id(user, n)).map(|t| t.state.status)
}

#[test]
fn reserved_orders_wait_off_the_book_and_meet_it_in_the_order_they_came() {
    let mut b = BookState::new();
    let out = b.apply(&reserve(1, 1, Side::Sell, 100, 1, TimeInForce::Gtc));
    let reserved = OrderState {
        status: Status::Reserved,
        ..OrderState::new(order_id(1, 1))
    };
    assert_eq!(out.answer, Answer::Order(reserved));
    assert_eq!(out.updates, vec![(1, reserved)]);
    assert!(out.levels.is_empty(), "nothing on the book");
    b.apply(&reserve(2, 2, Side::Buy, 101, 2, TimeInForce::Gtc));
    b.apply(&reserve(3, 3, Side::Sell, 100, 1, TimeInForce::Gtc));
    // A resubmission (the account retrying) answers the first state.
    let again = b.apply(&reserve(1, 1, Side::Sell, 100, 1, TimeInForce::Gtc));
    assert!(!again.changed && again.answer == Answer::Order(reserved));
    assert_eq!((b.engine().len(), b.reserved().len()), (0, 3));

    let out = b.apply(&Command::Open {
        ts: 10,
        quotes: None,
    });
    assert!(out.changed && b.reserved().len() == 0);
    // 1's ask rests first, 2's bid takes it at 100 and rests its second lot at 101,
    // which 3's ask takes.
    let fills: Vec<(u64, u64)> = out.fills.iter().map(|f| (f.price, f.qty)).collect();
    assert_eq!(fills, vec![(100, 1), (101, 1)]);
    for (user, n) in [(1, 1), (2, 2), (3, 3)] {
        assert_eq!(status(&b, user, n), Some(Status::Filled), "{user}");
    }
    let reported: Vec<u64> = out.updates.iter().map(|(owner, _)| *owner).collect();
    assert_eq!(
        reported,
        vec![1, 2, 3],
        "every owner hears, in the order they came"
    );
    assert!(
        !b.apply(&Command::Open {
            ts: 11,
            quotes: None
        })
        .changed,
        "nothing left to open"
    );
}

#[test]
fn a_reserved_order_can_be_cancelled_or_expire_and_then_never_meets_the_book() {
    let mut b = BookState::new();
    b.apply(&reserve(1, 1, Side::Buy, 100, 1, TimeInForce::Gtc));
    b.apply(&reserve(1, 2, Side::Buy, 100, 1, TimeInForce::Day));
    b.apply(&reserve(1, 3, Side::Buy, 99, 1, TimeInForce::Gtc));
    let out = b.apply(&Command::Cancel {
        order_id: order_id(1, 1),
        owner: 1,
        ts: 5,
    });
    assert!(matches!(out.answer, Answer::Order(s) if s.status == Status::Cancelled));
    let out = b.apply(&Command::Expire {
        order_ids: vec![order_id(1, 2), order_id(1, 1), order_id(9, 9)],
        ts: 6,
    });
    assert_eq!(
        out.updates
            .iter()
            .map(|(_, s)| (s.order_id, s.status))
            .collect::<Vec<_>>(),
        vec![(order_id(1, 2), Status::Expired)],
        "only the open one expires; done and unknown ids change nothing"
    );
    assert!(
        !b.apply(&Command::Expire {
            order_ids: vec![order_id(1, 2)],
            ts: 7
        })
        .changed
    );
    b.apply(&Command::Open {
        ts: 10,
        quotes: None,
    });
    assert_eq!(
        b.engine().depth(Side::Buy, 5),
        vec![(99, 1)],
        "only the third rests"
    );
    assert_eq!(status(&b, 1, 3), Some(Status::New));
}

#[test]
fn day_orders_are_listed_while_they_rest_and_expire_off_the_book() {
    let mut b = BookState::new();
    let day = |n: u32, side: Side, price: u64, qty: u64| Command::Submit {
        order: order(1, n, side, Kind::Limit { price }, qty, TimeInForce::Day),
        ts: i64::from(n) * 10,
    };
    b.apply(&day(1, Side::Buy, 100, 2));
    b.apply(&day(2, Side::Buy, 99, 1));
    b.apply(&limit(2, 3, Side::Buy, 98, 1));
    let listed: Vec<(u64, i64)> = b.day_orders().map(|(id, ts)| (*id, *ts)).collect();
    assert_eq!(
        listed,
        vec![(order_id(1, 1), 10), (order_id(1, 2), 20)],
        "the gtc is not"
    );
    // Filled whole, a day order leaves the list.
    b.apply(&limit(3, 4, Side::Sell, 99, 3));
    assert_eq!(status(&b, 1, 1), Some(Status::Filled));
    assert_eq!(status(&b, 1, 2), Some(Status::Filled));
    assert_eq!(b.day_orders().count(), 0);
    b.apply(&day(5, Side::Buy, 97, 4));
    let out = b.apply(&Command::Expire {
        order_ids: vec![order_id(1, 5)],
        ts: 100,
    });
    assert_eq!(
        out.levels,
        vec![(Side::Buy, 97)],
        "its level changes on book:S"
    );
    assert_eq!(status(&b, 1, 5), Some(Status::Expired));
    assert_eq!(b.engine().depth(Side::Buy, 5), vec![(98, 1)]);
    assert_eq!(b.day_orders().count(), 0);
    // A day order reserved while the market was closed is listed once it rests.
    b.apply(&reserve(1, 6, Side::Sell, 120, 1, TimeInForce::Day));
    assert_eq!(b.day_orders().count(), 0);
    b.apply(&Command::Open {
        ts: 200,
        quotes: None,
    });
    let listed: Vec<(u64, i64)> = b.day_orders().map(|(id, ts)| (*id, *ts)).collect();
    assert_eq!(listed, vec![(order_id(1, 6), 200)]);
}

#[test]
fn fills_update_both_orders_cumulatively() {
    let mut b = BookState::new();
    b.apply(&limit(1, 1, Side::Sell, 100, 5));
    let out = b.apply(&limit(2, 1, Side::Buy, 101, 3));
    assert!(out.changed);
    let Answer::Order(taker) = out.answer else {
        panic!("{out:?}")
    };
    assert_eq!(taker.status, Status::Filled);
    assert_eq!((taker.filled, taker.cost, taker.last_trade), (3, 300, 1));
    let maker = b.order(order_id(1, 1)).unwrap().state;
    assert_eq!(maker.status, Status::PartiallyFilled);
    assert_eq!((maker.filled, maker.cost), (3, 300));
    assert_eq!(out.fills.len(), 1);
    assert_eq!(out.levels, vec![(Side::Sell, 100)]);
    assert_eq!(out.updates.len(), 2);
    assert_eq!(b.engine().level_qty(Side::Sell, 100), 2);
}

#[test]
fn resubmission_and_foreign_cancel_change_nothing() {
    let mut b = BookState::new();
    let cmd = limit(1, 1, Side::Sell, 100, 5);
    assert!(b.apply(&cmd).changed);
    let again = b.apply(&cmd);
    assert!(!again.changed, "the same order id is matched once");
    let cancel = Command::Cancel {
        order_id: order_id(1, 1),
        owner: 2,
        ts: 3,
    };
    assert_eq!(b.apply(&cancel).answer, Answer::NotFound);
    assert_eq!(b.engine().len(), 1);
}

#[test]
fn a_void_before_the_order_refuses_it_and_after_reports_it() {
    let mut b = BookState::new();
    let void = Command::Void {
        order_id: order_id(3, 1),
        ts: 1,
    };
    let out = b.apply(&void);
    assert!(out.changed);
    let late = b.apply(&limit(3, 1, Side::Buy, 100, 1));
    assert!(!late.changed, "a voided order never reaches the engine");
    assert!(matches!(late.answer, Answer::Order(s) if s.status == Status::Rejected));
    assert!(b.engine().is_empty());
    b.apply(&limit(3, 2, Side::Buy, 100, 1));
    let out = b.apply(&Command::Void {
        order_id: order_id(3, 2),
        ts: 2,
    });
    assert!(!out.changed);
    assert!(matches!(out.answer, Answer::Order(s) if s.status == Status::New));
}

#[test]
fn fok_that_cannot_fill_expires_and_post_only_cross_is_rejected() {
    let mut b = BookState::new();
    b.apply(&limit(1, 1, Side::Sell, 100, 2));
    let fok = Command::Submit {
        order: order(
            2,
            1,
            Side::Buy,
            Kind::Limit { price: 100 },
            5,
            TimeInForce::Fok,
        ),
        ts: 2,
    };
    let out = b.apply(&fok);
    assert!(matches!(out.answer, Answer::Order(s) if s.status == Status::Expired && s.filled == 0));
    let mut po = order(
        2,
        2,
        Side::Buy,
        Kind::Limit { price: 100 },
        1,
        TimeInForce::Gtc,
    );
    po.post_only = true;
    let out = b.apply(&Command::Submit { order: po, ts: 3 });
    assert!(
        matches!(out.answer, Answer::Order(s) if s.status == Status::Rejected && s.reject == Some(Reject::WouldTake))
    );
}

#[test]
fn finished_orders_are_forgotten_after_the_retention_time() {
    let mut b = BookState::new();
    b.apply(&limit(1, 1, Side::Sell, 100, 1));
    b.apply(&limit(2, 1, Side::Buy, 100, 1));
    assert!(b.order(order_id(1, 1)).is_some());
    let later = Command::Submit {
        order: order(
            3,
            1,
            Side::Buy,
            Kind::Limit { price: 1 },
            1,
            TimeInForce::Gtc,
        ),
        ts: DONE_KEPT_MS + 10,
    };
    b.apply(&later);
    assert!(b.order(order_id(1, 1)).is_none());
    assert!(b.order(order_id(3, 1)).is_some(), "open orders are kept");
}

#[test]
fn market_buy_protection_rounds_up() {
    assert_eq!(market_buy_protect(Some(100), Some(1), 5, 10), 110);
    assert_eq!(market_buy_protect(Some(101), None, 5, 10), 112);
    assert_eq!(market_buy_protect(None, Some(50), 5, 10), 55);
    assert_eq!(market_buy_protect(None, None, 7, 100), 14);
}

fn command_strategy() -> impl Strategy<Value = Command> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    let tif = prop_oneof![
        6 => Just(TimeInForce::Gtc),
        1 => Just(TimeInForce::Ioc),
        1 => Just(TimeInForce::Fok),
        2 => Just(TimeInForce::Day)
    ];
    let submit = (
        1u64..=4,
        1u32..=40,
        side,
        95u64..=105,
        1u64..=10,
        tif,
        any::<bool>(),
        0u8..10,
    )
        .prop_map(|(user, n, side, price, qty, tif, post_only, k)| {
            let kind = if k == 0 {
                Kind::Market { protect: None }
            } else {
                Kind::Limit { price }
            };
            Command::Submit {
                order: Order {
                    id: order_id(user, n),
                    owner: user,
                    side,
                    kind,
                    qty,
                    tif,
                    post_only: post_only && k != 0 && k < 3,
                },
                ts: 0,
            }
        });
    let cancel = (1u64..=4, 1u64..=4, 1u32..=40).prop_map(|(owner, user, n)| Command::Cancel {
        order_id: order_id(user, n),
        owner,
        ts: 0,
    });
    let void = (1u64..=4, 1u32..=40).prop_map(|(user, n)| Command::Void {
        order_id: order_id(user, n),
        ts: 0,
    });
    let mark = (90u64..=110).prop_map(|price| Command::Mark { price, ts: 0 });
    let submit_at = (submit.clone(), 90u64..=110, 1u64..=3).prop_map(|(c, mark, off)| match c {
        Command::Submit { order, ts } => Command::SubmitAt {
            order,
            ts,
            bid: mark - off,
            ask: mark + off,
        },
        other => other,
    });
    let reserve = submit.clone().prop_map(|c| match c {
        Command::Submit { order, ts } => Command::Reserve { order, ts },
        other => other,
    });
    let open = prop_oneof![
        Just(None),
        (90u64..=100, 1u64..=3).prop_map(|(mark, off)| Some((mark - off, mark + off)))
    ]
    .prop_map(|quotes| Command::Open { ts: 0, quotes });
    let expire =
        prop::collection::vec((1u64..=4, 1u32..=40), 1..4).prop_map(|ids| Command::Expire {
            order_ids: ids.into_iter().map(|(u, n)| order_id(u, n)).collect(),
            ts: 0,
        });
    prop_oneof![
        6 => submit,
        2 => cancel,
        1 => void,
        2 => mark,
        3 => submit_at,
        2 => reserve,
        1 => open,
        1 => expire
    ]
}

fn with_ts(cmd: &Command, ts: i64) -> Command {
    let mut c = cmd.clone();
    match &mut c {
        Command::Submit { ts: t, .. }
        | Command::Cancel { ts: t, .. }
        | Command::Void { ts: t, .. }
        | Command::Mark { ts: t, .. }
        | Command::SubmitAt { ts: t, .. }
        | Command::Reserve { ts: t, .. }
        | Command::Open { ts: t, .. }
        | Command::Expire { ts: t, .. } => *t = ts,
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn journal_replay_and_snapshot_restore_rebuild_the_same_book(
        cmds in prop::collection::vec(command_strategy(), 1..150),
        cut in 0usize..150,
    ) {
        let cmds: Vec<Command> = cmds
            .iter()
            .enumerate()
            .map(|(i, c)| with_ts(c, i as i64 * 1000))
            .collect();
        let mut live = BookState::new();
        let mut journal = Vec::new();
        let mut answers = Vec::new();
        let mut snap = None;
        for (i, c) in cmds.iter().enumerate() {
            let out = live.apply(c);
            answers.push(out.answer);
            if out.changed {
                journal.push(c.clone());
            }
            if i == cut.min(cmds.len() - 1) {
                snap = Some((journal.len(), live.snapshot()));
            }
            // Per order: never more filled than ordered.
            for (_, t) in live.orders() {
                prop_assert!(t.qty == 0 || t.state.filled <= t.qty);
            }
            if let (Some(bid), Some(ask)) = live.engine().best() {
                prop_assert!(bid < ask);
            }
            // A reserved order is off the book, and every day order listed rests.
            for (_, o) in live.reserved() {
                prop_assert_eq!(live.order(o.id).map(|t| t.state.status), Some(Status::Reserved));
            }
            for (id, _) in live.day_orders() {
                let t = live.order(*id);
                prop_assert!(t.is_some_and(|t| !t.state.status.is_done() && t.price.is_some()));
            }
            let by_time: Vec<(u64, i64)> = live.day_orders_by_time().map(|(t, id)| (*id, *t)).collect();
            let mut by_id: Vec<(u64, i64)> = live.day_orders().map(|(id, t)| (*id, *t)).collect();
            by_id.sort_by_key(|(id, t)| (*t, *id));
            prop_assert_eq!(by_time, by_id);
        }
        // Replay of the journal alone.
        let mut replayed = BookState::new();
        for c in &journal {
            prop_assert!(replayed.apply(c).changed, "a journaled command changes the state on replay");
        }
        prop_assert_eq!(replayed.snapshot(), live.snapshot());
        // Snapshot plus the journal's tail, through bincode like the store keeps it.
        let (at, s) = snap.unwrap();
        let bytes = bourse_storage::codec::encode(&s).unwrap();
        let mut restored = BookState::restore(Snapshot::decode(&bytes).unwrap());
        for c in &journal[at..] {
            restored.apply(c);
        }
        prop_assert_eq!(restored.snapshot(), live.snapshot());
    }
}

/// The mirror-fill rule as plainly as it can be said: resting user orders with their
/// arrival number; an incoming order takes the users' orders and the house's quote best
/// price first, users before the house at one price, earlier users first; a feed price
/// fills every resting order it crosses, whole, at its own price.
#[derive(Default)]
struct MirrorModel {
    resting: Vec<(u64, Side, u64, u64, usize)>,
    arrivals: usize,
}

impl MirrorModel {
    /// The fills `(price, qty, taker side)` of an order, and rests the rest when it may.
    fn submit(&mut self, o: &Order, bid: u64, ask: u64) -> Vec<(u64, u64, Side)> {
        let limit = match o.kind {
            Kind::Limit { price } => Some(price),
            Kind::Market { protect } => protect,
        };
        let crosses = |p: u64| match o.side {
            Side::Buy => limit.is_none_or(|l| p <= l),
            Side::Sell => limit.is_none_or(|l| p >= l),
        };
        let house = match o.side {
            Side::Buy => ask,
            Side::Sell => bid,
        };
        // Candidates: (price key for best-first, time, index or house).
        let mut queue: Vec<(u64, usize, Option<usize>)> = self
            .resting
            .iter()
            .enumerate()
            .filter(|(_, r)| r.1 != o.side && crosses(r.2))
            .map(|(i, r)| (r.2, r.4, Some(i)))
            .collect();
        if crosses(house) {
            queue.push((house, usize::MAX, None));
        }
        queue.sort_by_key(|(p, t, _)| match o.side {
            Side::Buy => (*p, *t),
            Side::Sell => (u64::MAX - *p, *t),
        });
        let mut left = o.qty;
        let mut fills = Vec::new();
        for (price, _, at) in queue {
            if left == 0 {
                break;
            }
            let qty = match at {
                Some(i) => left.min(self.resting[i].3),
                None => left,
            };
            if let Some(i) = at {
                self.resting[i].3 -= qty;
            }
            left -= qty;
            fills.push((price, qty, o.side));
        }
        self.resting.retain(|r| r.3 > 0);
        if left > 0
            && o.tif == TimeInForce::Gtc
            && let Some(price) = limit
        {
            self.arrivals += 1;
            self.resting
                .push((o.id, o.side, price, left, self.arrivals));
        }
        fills
    }

    /// The fills a feed price makes, bids best first then asks best first.
    fn mark(&mut self, price: u64) -> Vec<(u64, u64, Side)> {
        let mut hit: Vec<(u64, Side, u64, u64, usize)> = self
            .resting
            .iter()
            .filter(|r| match r.1 {
                Side::Buy => r.2 >= price,
                Side::Sell => r.2 <= price,
            })
            .copied()
            .collect();
        hit.sort_by_key(|r| match r.1 {
            Side::Buy => (0, u64::MAX - r.2, r.4),
            Side::Sell => (1, r.2, r.4),
        });
        self.resting.retain(|r| !hit.iter().any(|h| h.0 == r.0));
        hit.iter().map(|r| (r.2, r.3, r.1.opposite())).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The book's mirror fills are the model's: same prices, sizes and order, same
    /// resting orders after each step; users keep price-time priority among themselves.
    #[test]
    fn mirror_fills_follow_the_feed_price_with_price_time_priority(
        steps in prop::collection::vec(
            (any::<bool>(), any::<bool>(), 95u64..=105, 1u64..=10, 0u8..6, 95u64..=105, 1u64..=2),
            1..80,
        ),
    ) {
        let mut book = BookState::new();
        let mut model = MirrorModel::default();
        for (i, (is_mark, buy, price, qty, k, mark, off)) in steps.into_iter().enumerate() {
            let ts = i as i64;
            let (got, want) = if is_mark {
                (book.apply(&Command::Mark { price: mark, ts }), model.mark(mark))
            } else {
                // Each order its own user: no self-trade prevention in play.
                let user = 10 + i as u64;
                let side = if buy { Side::Buy } else { Side::Sell };
                let (kind, tif) = match k {
                    0 => (Kind::Market { protect: None }, TimeInForce::Ioc),
                    1 => (Kind::Limit { price }, TimeInForce::Ioc),
                    _ => (Kind::Limit { price }, TimeInForce::Gtc),
                };
                let o = order(user, 1, side, kind, qty, tif);
                // The feed's price is where the model's book leaves it uncrossed.
                let (bid, ask) = (mark - off, mark + off);
                model.mark(mark);
                book.apply(&Command::Mark { price: mark, ts });
                (book.apply(&Command::SubmitAt { order: o, ts, bid, ask }), model.submit(&o, bid, ask))
            };
            let fills: Vec<(u64, u64, Side)> = got.fills.iter().map(|f| (f.price, f.qty, f.taker_side)).collect();
            prop_assert_eq!(fills, want);
            let mut resting: Vec<(u64, Side, u64, u64)> = book
                .engine()
                .resting_orders()
                .iter()
                .map(|r| (r.id, r.side, r.price, r.remaining))
                .collect();
            resting.sort_unstable_by_key(|r| r.0);
            let mut modelled: Vec<(u64, Side, u64, u64)> = model.resting.iter().map(|r| (r.0, r.1, r.2, r.3)).collect();
            modelled.sort_unstable_by_key(|r| r.0);
            prop_assert_eq!(resting, modelled);
            // The house never stays on the book and is never reported.
            prop_assert!(got.updates.iter().all(|(owner, _)| *owner != HOUSE));
        }
    }
}

#[test]
fn a_mirror_market_order_fills_at_the_price_plus_slippage_and_limits_wait_for_the_price() {
    let mut b = BookState::new();
    let (bid, ask) = house_quotes(1000, 50);
    assert_eq!((bid, ask), (995, 1005));
    let buy = order(
        1,
        1,
        Side::Buy,
        Kind::Market { protect: None },
        7,
        TimeInForce::Ioc,
    );
    let out = b.apply(&Command::SubmitAt {
        order: buy,
        ts: 1,
        bid,
        ask,
    });
    assert_eq!(
        out.answer,
        Answer::Order(OrderState {
            status: Status::Filled,
            filled: 7,
            cost: 7 * 1005,
            last_trade: 1,
            ..OrderState::new(buy.id)
        })
    );
    // A limit sell above the price rests and shows on the book; the house's quotes do not.
    let sell = order(
        2,
        1,
        Side::Sell,
        Kind::Limit { price: 1010 },
        3,
        TimeInForce::Gtc,
    );
    b.apply(&Command::SubmitAt {
        order: sell,
        ts: 2,
        bid,
        ask,
    });
    assert_eq!(b.engine().depth(Side::Sell, 10), vec![(1010, 3)]);
    assert!(b.engine().depth(Side::Buy, 10).is_empty());
    // A price below it changes nothing and is not journaled; one at it fills it whole.
    assert!(!b.apply(&Command::Mark { price: 1009, ts: 3 }).changed);
    let out = b.apply(&Command::Mark { price: 1010, ts: 4 });
    assert_eq!(
        out.updates,
        vec![(
            2,
            OrderState {
                status: Status::Filled,
                filled: 3,
                cost: 3 * 1010,
                last_trade: 2,
                ..OrderState::new(sell.id)
            }
        )]
    );
    assert!(b.engine().is_empty());
    // The smallest slippage is a tick each way.
    assert_eq!(house_quotes(3, 1), (2, 4));
    assert_eq!(house_quotes(1, 1000), (1, 2));
}
