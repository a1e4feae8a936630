//! The ledger alone, and the whole saga's money logic as a pure simulation: accounts hold,
//! a book matches, updates reach the accounts late, twice, out of order or only through a
//! reconciliation poll, and per asset the sum over accounts never changes.

use super::*;
use crate::book::engine::{Kind, Order};
use crate::book::state::{Answer, BookState, Command};
use crate::trading::{Status, order_id};
use bourse_config::Settings;
use proptest::prelude::*;

fn markets() -> Markets {
    Settings::from_sources("", std::iter::empty()).unwrap().1
}

fn granted(markets: &Markets) -> Ledger {
    let mut l = Ledger::default();
    l.apply(
        &Entry::Grant {
            assets: vec![("KRW".into(), 1_000_000), ("BTC".into(), 1_000)],
        },
        markets,
    )
    .unwrap();
    l
}

fn record(user: u64, n: u32, side: Side, price: u64, qty: u64) -> OrderRecord {
    OrderRecord {
        order_id: order_id(user, n),
        client_order_id: Some(format!("c{n}")),
        symbol: "KRW-BTC".into(),
        side,
        price: Some(price),
        protect: None,
        qty,
        tif: TimeInForce::Gtc,
        post_only: false,
        state: OrderState::new(order_id(user, n)),
        hold_left: 0,
        pending: true,
        created_at: 0,
        updated_at: 0,
    }
}

#[test]
fn a_reserved_order_keeps_its_hold_until_the_open_or_its_expiry() {
    let m = markets();
    let mut l = granted(&m);
    for n in [1, 2] {
        l.apply(
            &Entry::Hold {
                order: record(1, n, Side::Buy, 100, 5),
            },
            &m,
        )
        .unwrap();
    }
    let reserved = |n: u32| OrderState {
        status: Status::Reserved,
        ..OrderState::new(order_id(1, n))
    };
    // The book's answer confirms the order as reserved: no longer pending, still held.
    for n in [1, 2] {
        let changed = l
            .apply(
                &Entry::Apply {
                    state: reserved(n),
                    ts: 1,
                },
                &m,
            )
            .unwrap();
        assert_eq!(changed, Some(order_id(1, n)));
        let o = l.order(order_id(1, n)).unwrap();
        assert!(!o.pending && o.is_open() && o.state.status == Status::Reserved);
    }
    assert_eq!(
        l.balance("KRW"),
        Balance {
            available: 990_000,
            held: 10_000
        }
    );
    // At the open the first becomes new; a late copy of the reserved state changes nothing.
    let new = OrderState::new(order_id(1, 1));
    assert!(
        l.apply(&Entry::Apply { state: new, ts: 2 }, &m)
            .unwrap()
            .is_some()
    );
    assert_eq!(l.order(order_id(1, 1)).unwrap().state.status, Status::New);
    assert!(
        l.apply(
            &Entry::Apply {
                state: reserved(1),
                ts: 3
            },
            &m
        )
        .unwrap()
        .is_none()
    );
    assert_eq!(l.order(order_id(1, 1)).unwrap().state.status, Status::New);
    // The second expires before any open: its whole hold comes back.
    let expired = OrderState {
        status: Status::Expired,
        ..reserved(2)
    };
    l.apply(
        &Entry::Apply {
            state: expired,
            ts: 4,
        },
        &m,
    )
    .unwrap();
    assert_eq!(
        l.balance("KRW"),
        Balance {
            available: 995_000,
            held: 5_000
        }
    );
    assert!(l.holds_add_up(&m));
    assert_eq!(l.open_orders(), 1);
}

#[test]
fn a_buy_holds_quote_and_settles_with_price_improvement() {
    let m = markets();
    let mut l = granted(&m);
    // KRW-BTC: 1 tick × 1 lot = 10 KRW units; price 100 ticks × 5 lots = 5,000 units.
    l.apply(
        &Entry::Hold {
            order: record(1, 1, Side::Buy, 100, 5),
        },
        &m,
    )
    .unwrap();
    assert_eq!(
        l.balance("KRW"),
        Balance {
            available: 995_000,
            held: 5_000
        }
    );
    let id = order_id(1, 1);
    let fill = OrderState {
        status: Status::PartiallyFilled,
        filled: 2,
        cost: 2 * 90,
        last_trade: 1,
        ..OrderState::new(id)
    };
    l.apply(&Entry::Apply { state: fill, ts: 1 }, &m).unwrap();
    // Released 2 lots at 100 (2,000), paid 1,800, got 2 BTC lots.
    assert_eq!(
        l.balance("KRW"),
        Balance {
            available: 995_200,
            held: 3_000
        }
    );
    assert_eq!(l.balance("BTC").available, 1_002);
    // The same state again changes nothing.
    assert_eq!(
        l.apply(&Entry::Apply { state: fill, ts: 2 }, &m).unwrap(),
        None
    );
    let cancelled = OrderState {
        status: Status::Cancelled,
        ..fill
    };
    l.apply(
        &Entry::Apply {
            state: cancelled,
            ts: 3,
        },
        &m,
    )
    .unwrap();
    assert_eq!(
        l.balance("KRW"),
        Balance {
            available: 998_200,
            held: 0
        }
    );
    assert!(l.holds_add_up(&m));
}

#[test]
fn positions_keep_the_average_cost_from_the_grant_on() {
    let m = markets();
    let btc = m.get("KRW-BTC").unwrap();
    let mut l = granted(&m);
    // 1,000 BTC units (lots) granted at the start price.
    let start = btc.quote_amount(1000 * u128::from(btc.initial_price));
    assert_eq!(
        l.positions()
            .get("KRW-BTC")
            .map(|p| (p.qty, p.cost, p.realised)),
        Some((1000, start, 0))
    );
    // Buy 2 lots at 90 ticks, then sell 502 lots at 200 ticks.
    l.apply(
        &Entry::Hold {
            order: record(1, 1, Side::Buy, 100, 2),
        },
        &m,
    )
    .unwrap();
    let bought = OrderState {
        status: Status::Filled,
        filled: 2,
        cost: 180,
        last_trade: 1,
        ..OrderState::new(order_id(1, 1))
    };
    l.apply(
        &Entry::Apply {
            state: bought,
            ts: 1,
        },
        &m,
    )
    .unwrap();
    let p = l.positions()["KRW-BTC"];
    assert_eq!((p.qty, p.cost), (1002, start + btc.quote_amount(180)));
    l.apply(
        &Entry::Hold {
            order: record(1, 2, Side::Sell, 200, 501),
        },
        &m,
    )
    .unwrap();
    let sold = OrderState {
        status: Status::Filled,
        filled: 501,
        cost: 501 * 200,
        last_trade: 2,
        ..OrderState::new(order_id(1, 2))
    };
    l.apply(&Entry::Apply { state: sold, ts: 2 }, &m).unwrap();
    let p = l.positions()["KRW-BTC"];
    let removed = (start + btc.quote_amount(180)) / 2;
    assert_eq!(p.qty, 501);
    assert_eq!(
        p.realised,
        btc.quote_amount(501 * 200) as i128 - removed as i128
    );
    // Snapshots keep positions; one stored before them restores with none.
    let bytes = bourse_storage::codec::encode(&l).unwrap();
    assert_eq!(Ledger::decode(&bytes).unwrap(), l);
    #[derive(Serialize)]
    struct Old<'a> {
        balances: &'a BTreeMap<String, Balance>,
        orders: &'a BTreeMap<u64, OrderRecord>,
        by_client_id: &'a HashMap<String, u64>,
        done: &'a VecDeque<u64>,
        next_order: u32,
        granted: bool,
        open: usize,
    }
    let old = bourse_storage::codec::encode(&Old {
        balances: &l.balances,
        orders: &l.orders,
        by_client_id: &l.by_client_id,
        done: &l.done,
        next_order: l.next_order,
        granted: l.granted,
        open: l.open,
    })
    .unwrap();
    let restored = Ledger::decode(&old).unwrap();
    assert!(restored.positions().is_empty());
    assert_eq!(restored.balances(), l.balances());
}

#[test]
fn a_voided_order_frees_its_client_order_id_and_its_hold() {
    let m = markets();
    let mut l = granted(&m);
    l.apply(
        &Entry::Hold {
            order: record(1, 1, Side::Buy, 100, 5),
        },
        &m,
    )
    .unwrap();
    assert!(l.by_client_id("c1").is_some());
    let voided = OrderState {
        status: Status::Rejected,
        ..OrderState::new(order_id(1, 1))
    };
    l.apply(
        &Entry::Apply {
            state: voided,
            ts: 1,
        },
        &m,
    )
    .unwrap();
    assert!(
        l.by_client_id("c1").is_none(),
        "a retry may use the id again"
    );
    assert_eq!(
        l.balance("KRW"),
        Balance {
            available: 1_000_000,
            held: 0
        }
    );
    // A book rejection (post-only) keeps it: the client saw that order.
    l.apply(
        &Entry::Hold {
            order: record(1, 2, Side::Buy, 100, 5),
        },
        &m,
    )
    .unwrap();
    let rejected = OrderState {
        status: Status::Rejected,
        reject: Some(crate::book::engine::Reject::WouldTake),
        ..OrderState::new(order_id(1, 2))
    };
    l.apply(
        &Entry::Apply {
            state: rejected,
            ts: 2,
        },
        &m,
    )
    .unwrap();
    assert!(l.by_client_id("c2").is_some());
}

#[test]
fn a_reserve_beyond_the_balance_is_refused() {
    let m = markets();
    let mut l = granted(&m);
    let err = l
        .apply(
            &Entry::Hold {
                order: record(1, 1, Side::Sell, 100, 1_001),
            },
            &m,
        )
        .unwrap_err();
    assert!(matches!(err, LedgerError::Negative { .. }), "{err}");
    assert_eq!(
        l.balance("BTC"),
        Balance {
            available: 1_000,
            held: 0
        }
    );
}

/// What happens to one update on its way from the book to an account.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    Now,
    Twice,
    Late,
    Lost,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    prop_oneof![5 => Just(Delivery::Now), 1 => Just(Delivery::Twice), 2 => Just(Delivery::Late), 1 => Just(Delivery::Lost)]
}

#[derive(Debug, Clone)]
enum Step {
    Place {
        user: u64,
        side: Side,
        price: u64,
        qty: u64,
        market: bool,
    },
    Cancel {
        user: u64,
        pick: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    prop_oneof![
        4 => (0u64..3, side, 95u64..=105, 1u64..=40, 0u8..6).prop_map(|(user, side, price, qty, k)| Step::Place {
            user, side, price, qty, market: k == 0
        }),
        1 => (0u64..3, any::<usize>()).prop_map(|(user, pick)| Step::Cancel { user, pick }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn the_saga_conserves_every_asset_whatever_happens_to_updates(
        steps in prop::collection::vec((step(), delivery()), 1..120)
    ) {
        let m = markets();
        let mk = m.get("KRW-BTC").unwrap().clone();
        let mut ledgers: Vec<Ledger> = (0..3).map(|_| granted(&m)).collect();
        let mut book = BookState::new();
        let grants: BTreeMap<String, u128> = {
            let mut t = BTreeMap::new();
            for l in &ledgers {
                for (a, v) in l.totals() {
                    *t.entry(a).or_default() += v;
                }
            }
            t
        };
        let mut late: Vec<(usize, OrderState)> = Vec::new();
        for (i, (step, how)) in steps.into_iter().enumerate() {
            let ts = i as i64;
            let cmd = match step {
                Step::Place { user, side, price, qty, market } => {
                    let l = &mut ledgers[user as usize];
                    let n = l.next_order_number();
                    let id = order_id(user + 1, n);
                    let protect = (market && side == Side::Buy).then(|| {
                        crate::book::state::market_buy_protect(
                            book.engine().best().1, book.last_price(), 100, 10)
                    });
                    let mut rec = record(user + 1, n, side, price, qty);
                    rec.order_id = id;
                    rec.state = OrderState::new(id);
                    rec.price = (!market).then_some(price);
                    rec.protect = protect;
                    let (asset, need) = hold_for(&mk, side, rec.price.or(protect), qty);
                    if l.balance(&asset).available < need {
                        continue; // insufficient_funds: nothing happens
                    }
                    l.apply(&Entry::Hold { order: rec }, &m).unwrap();
                    let kind = if market { Kind::Market { protect } } else { Kind::Limit { price } };
                    Command::Submit {
                        order: Order { id, owner: user + 1, side, kind, qty, tif: TimeInForce::Gtc, post_only: false },
                        ts,
                    }
                }
                Step::Cancel { user, pick } => {
                    let open: Vec<u64> = ledgers[user as usize].orders().filter(|o| o.is_open()).map(|o| o.order_id).collect();
                    if open.is_empty() {
                        continue;
                    }
                    Command::Cancel { order_id: open[pick % open.len()], owner: user + 1, ts }
                }
            };
            let out = book.apply(&cmd);
            // The asker gets its answer directly.
            if let Answer::Order(s) = out.answer {
                let owner = (crate::trading::owner_of(s.order_id) - 1) as usize;
                ledgers[owner].apply(&Entry::Apply { state: s, ts }, &m).unwrap();
            }
            for (owner, s) in out.updates {
                let who = (owner - 1) as usize;
                match how {
                    Delivery::Now => { ledgers[who].apply(&Entry::Apply { state: s, ts }, &m).unwrap(); }
                    Delivery::Twice => {
                        ledgers[who].apply(&Entry::Apply { state: s, ts }, &m).unwrap();
                        ledgers[who].apply(&Entry::Apply { state: s, ts }, &m).unwrap();
                    }
                    Delivery::Late => late.push((who, s)),
                    Delivery::Lost => {}
                }
            }
            // Late updates arrive in reverse order: older states must not undo newer ones.
            if i % 5 == 4 {
                for (who, s) in late.drain(..).rev() {
                    ledgers[who].apply(&Entry::Apply { state: s, ts }, &m).unwrap();
                }
            }
            for l in &ledgers {
                prop_assert!(l.holds_add_up(&m));
                prop_assert_eq!(l.open_orders(), l.orders().filter(|o| o.is_open()).count());
            }
        }
        // Reconciliation: every account asks the book for its open orders.
        for l in ledgers.iter_mut() {
            let open: Vec<u64> = l.orders().filter(|o| o.is_open()).map(|o| o.order_id).collect();
            for id in open {
                if let Some(t) = book.order(id) {
                    l.apply(&Entry::Apply { state: t.state, ts: 1_000_000 }, &m).unwrap();
                }
            }
        }
        let mut totals: BTreeMap<String, u128> = BTreeMap::new();
        for l in &ledgers {
            prop_assert!(l.holds_add_up(&m));
            for (a, v) in l.totals() {
                *totals.entry(a).or_default() += v;
            }
        }
        prop_assert_eq!(totals, grants, "no money created or destroyed");
        // Each account's position in every market holds exactly its base balance (one
        // market per base here, every account granted).
        for l in &ledgers {
            for (symbol, p) in l.positions() {
                let base = &m.get(symbol).unwrap().base;
                prop_assert_eq!(Some(p.qty), l.totals().get(base).copied(), "{}", symbol);
            }
        }
        // Every account agrees with the book about every order it still tracks.
        for l in &ledgers {
            for o in l.orders() {
                if let Some(t) = book.order(o.order_id) {
                    prop_assert_eq!(o.state, t.state);
                }
            }
        }
    }
}
