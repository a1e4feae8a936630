//! The engine against a naive reference model (a vector of resting orders, linear scans),
//! event for event, with the book's invariants checked after every step.

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct RefOrder {
    id: u64,
    owner: u64,
    side: Side,
    price: u64,
    remaining: u64,
}

/// Resting orders in arrival order; every decision by linear scan.
#[derive(Debug, Default)]
struct Reference {
    resting: Vec<RefOrder>,
}

fn crosses(side: Side, price: u64, limit: Option<u64>) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(l)) => price <= l,
        (Side::Sell, Some(l)) => price >= l,
    }
}

impl Reference {
    fn best_index(&self, taker: Side, limit: Option<u64>) -> Option<usize> {
        let maker = taker.opposite();
        let mut best: Option<usize> = None;
        for (i, r) in self.resting.iter().enumerate() {
            if r.side != maker || !crosses(taker, r.price, limit) {
                continue;
            }
            best = match best {
                None => Some(i),
                Some(b) => {
                    let bp = self.resting[b].price;
                    let better = match taker {
                        Side::Buy => r.price < bp,
                        Side::Sell => r.price > bp,
                    };
                    if better { Some(i) } else { Some(b) }
                }
            };
        }
        best
    }

    fn place(&mut self, o: Order) -> Vec<Event> {
        let limit = match o.kind {
            Kind::Limit { price } => Some(price),
            Kind::Market { protect } => protect,
        };
        let rej = |reason| vec![Event::Rejected { id: o.id, reason }];
        if o.qty == 0 {
            return rej(Reject::ZeroQty);
        }
        if self.resting.iter().any(|r| r.id == o.id) {
            return rej(Reject::DuplicateId);
        }
        if matches!(o.kind, Kind::Market { .. }) && o.post_only {
            return rej(Reject::Invalid);
        }
        if o.post_only && self.best_index(o.side, limit).is_some() {
            return rej(Reject::WouldTake);
        }
        if o.tif == TimeInForce::Fok {
            let available: u64 = self
                .resting
                .iter()
                .filter(|r| {
                    r.side == o.side.opposite()
                        && r.owner != o.owner
                        && crosses(o.side, r.price, limit)
                })
                .map(|r| r.remaining)
                .sum();
            if available < o.qty {
                return rej(Reject::CannotFill);
            }
        }
        let mut events = vec![Event::Accepted { id: o.id }];
        let mut remaining = o.qty;
        while remaining > 0 {
            let Some(i) = self.best_index(o.side, limit) else {
                break;
            };
            if self.resting[i].owner == o.owner {
                let r = self.resting.remove(i);
                events.push(Event::Cancelled {
                    id: r.id,
                    remaining: r.remaining,
                    reason: CancelReason::SelfTrade,
                });
                continue;
            }
            let qty = remaining.min(self.resting[i].remaining);
            remaining -= qty;
            let r = &mut self.resting[i];
            events.push(Event::Trade {
                taker: o.id,
                maker: r.id,
                price: r.price,
                qty,
                taker_side: o.side,
            });
            r.remaining -= qty;
            if r.remaining == 0 {
                self.resting.remove(i);
            }
        }
        if remaining > 0 {
            match (o.kind, o.tif) {
                (Kind::Limit { price }, TimeInForce::Gtc) => {
                    self.resting.push(RefOrder {
                        id: o.id,
                        owner: o.owner,
                        side: o.side,
                        price,
                        remaining,
                    });
                    events.push(Event::Rested {
                        id: o.id,
                        price,
                        remaining,
                    });
                }
                _ => events.push(Event::Expired {
                    id: o.id,
                    remaining,
                }),
            }
        }
        events
    }

    fn cancel(&mut self, id: u64) -> Vec<Event> {
        match self.resting.iter().position(|r| r.id == id) {
            Some(i) => {
                let r = self.resting.remove(i);
                vec![Event::Cancelled {
                    id,
                    remaining: r.remaining,
                    reason: CancelReason::Requested,
                }]
            }
            None => Vec::new(),
        }
    }

    fn depth(&self, side: Side) -> Vec<(u64, u64)> {
        let mut levels: BTreeMap<u64, u64> = BTreeMap::new();
        for r in self.resting.iter().filter(|r| r.side == side) {
            *levels.entry(r.price).or_default() += r.remaining;
        }
        match side {
            Side::Buy => levels.into_iter().rev().collect(),
            Side::Sell => levels.into_iter().collect(),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Place(Order),
    Cancel(u64),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    let tif = prop_oneof![6 => Just(TimeInForce::Gtc), 2 => Just(TimeInForce::Ioc), 2 => Just(TimeInForce::Fok)];
    let kind = prop_oneof![
        17 => (90u64..=110).prop_map(|price| Kind::Limit { price }),
        2 => Just(Kind::Market { protect: None }),
        1 => (90u64..=110).prop_map(|p| Kind::Market { protect: Some(p) }),
    ];
    let place = (
        1u64..=60,
        1u64..=4,
        side,
        kind,
        0u64..=20,
        tif,
        prop::bool::weighted(0.1),
    )
        .prop_map(|(id, owner, side, kind, qty, tif, post_only)| {
            Op::Place(Order {
                id,
                owner,
                side,
                kind,
                qty,
                tif,
                post_only,
            })
        });
    prop_oneof![4 => place, 1 => (1u64..=60).prop_map(Op::Cancel)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn engine_equals_the_reference_event_for_event(ops in prop::collection::vec(op_strategy(), 1..200)) {
        let mut book = Book::new();
        let mut reference = Reference::default();
        // Per order: what was asked, what filled, what left unfilled, to check conservation.
        let mut asked: HashMap<u64, u64> = HashMap::new();
        let mut filled: HashMap<u64, u64> = HashMap::new();
        let mut closed: HashMap<u64, u64> = HashMap::new();
        for (step, op) in ops.into_iter().enumerate() {
            if step % 7 == 6 {
                // A snapshot and restore mid-stream must continue exactly like the original.
                book = Book::restore(&book.resting_orders());
            }
            let mut got = Vec::new();
            let expect = match op {
                Op::Place(o) => {
                    book.place(o, &mut got);
                    reference.place(o)
                }
                Op::Cancel(id) => {
                    book.cancel(id, &mut got);
                    reference.cancel(id)
                }
            };
            prop_assert_eq!(&got, &expect, "after {:?}", op);
            if let Op::Place(o) = op
                && got.first() == Some(&Event::Accepted { id: o.id })
            {
                // Ids are reused in this stream once an order is done: start its ledger anew.
                asked.insert(o.id, o.qty);
                filled.insert(o.id, 0);
                closed.insert(o.id, 0);
            }
            for e in &got {
                match *e {
                    Event::Trade { taker, maker, qty, .. } => {
                        *filled.entry(taker).or_default() += qty;
                        *filled.entry(maker).or_default() += qty;
                    }
                    Event::Cancelled { id, remaining, .. } | Event::Expired { id, remaining } => {
                        *closed.entry(id).or_default() += remaining;
                    }
                    _ => {}
                }
            }
            // Never crossed at rest; depth equals the reference.
            if let (Some(bid), Some(ask)) = book.best() {
                prop_assert!(bid < ask, "crossed book {} >= {}", bid, ask);
            }
            prop_assert_eq!(book.depth(Side::Buy, 1000), reference.depth(Side::Buy));
            prop_assert_eq!(book.depth(Side::Sell, 1000), reference.depth(Side::Sell));
            // Conservation: asked = filled + resting + closed, and filled <= asked.
            for (id, qty) in &asked {
                let rest = book.resting(*id).map_or(0, |r| r.2);
                let f = filled[id];
                prop_assert!(f <= *qty, "order {} filled {} of {}", id, f, qty);
                prop_assert_eq!(f + rest + closed[id], *qty, "order {} does not add up", id);
            }
        }
    }
}

#[test]
fn self_trade_prevention_cancels_the_resting_order() {
    let mut book = Book::new();
    let mut out = Vec::new();
    let limit = |id, owner, side, price, qty| Order {
        id,
        owner,
        side,
        kind: Kind::Limit { price },
        qty,
        tif: TimeInForce::Gtc,
        post_only: false,
    };
    book.place(limit(1, 7, Side::Sell, 100, 5), &mut out);
    book.place(limit(2, 8, Side::Sell, 101, 5), &mut out);
    out.clear();
    book.place(limit(3, 7, Side::Buy, 101, 6), &mut out);
    assert_eq!(
        out,
        vec![
            Event::Accepted { id: 3 },
            Event::Cancelled {
                id: 1,
                remaining: 5,
                reason: CancelReason::SelfTrade
            },
            Event::Trade {
                taker: 3,
                maker: 2,
                price: 101,
                qty: 5,
                taker_side: Side::Buy
            },
            Event::Rested {
                id: 3,
                price: 101,
                remaining: 1
            },
        ]
    );
}
