//! The matching engine, the pure core of the `book` entity: price-time priority over integer
//! prices (ticks) and quantities (lots). No actors, no I/O, no floats.
//!
//! - Orders: `limit` (rests unless IOC/FOK) and `market` (never rests; an optional protective
//!   limit bounds how far it walks); time in force `gtc`, `ioc` (remainder expires), `fok`
//!   (fills entirely at once or not at all); `post_only` (rejected if it would take).
//! - Self-trade prevention: an incoming order never trades with a resting order of the same
//!   owner; that resting order is cancelled (`cancel resting`, the common exchange default:
//!   the newer intent wins and the book never shows a self-cross).
//! - Speed: resting orders live in one slab (a `Vec` with a free list) as doubly linked lists
//!   per price level; an id index makes cancel O(1) apart from removing an emptied level
//!   (O(log levels)). Placing allocates only when the slab or the index grows.

use std::collections::{BTreeMap, HashMap};

/// Which side of the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// The other side.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// How long an order may rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TimeInForce {
    /// Good till cancelled: rests until filled or cancelled.
    Gtc,
    /// Immediate or cancel: what does not fill at once expires.
    Ioc,
    /// Fill or kill: fills whole at once or not at all.
    Fok,
    /// Rests like `Gtc` until its market's close (the UTC day's end for a market trading
    /// around the clock); the book entity expires it then. (Last: stored orders decode.)
    Day,
}

impl TimeInForce {
    /// Every one, in wire-name order of docs/PROTOCOL.md.
    pub const ALL: [TimeInForce; 4] = [
        TimeInForce::Gtc,
        TimeInForce::Ioc,
        TimeInForce::Fok,
        TimeInForce::Day,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeInForce::Gtc => "gtc",
            TimeInForce::Ioc => "ioc",
            TimeInForce::Fok => "fok",
            TimeInForce::Day => "day",
        }
    }

    /// The one with wire name `name`.
    pub fn parse(name: &str) -> Option<TimeInForce> {
        TimeInForce::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether what does not fill at once rests on the book.
    pub fn rests(self) -> bool {
        matches!(self, TimeInForce::Gtc | TimeInForce::Day)
    }
}

/// What kind of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// At `price` or better.
    Limit { price: u64 },
    /// At any price, or no worse than `protect` when given.
    Market { protect: Option<u64> },
}

/// An order as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Order {
    pub id: u64,
    pub owner: u64,
    pub side: Side,
    pub kind: Kind,
    pub qty: u64,
    pub tif: TimeInForce,
    pub post_only: bool,
}

/// Why an order was refused outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reject {
    /// Zero quantity.
    ZeroQty,
    /// An id already resting.
    DuplicateId,
    /// Post-only that would take liquidity.
    WouldTake,
    /// Fill-or-kill that cannot fill entirely now.
    CannotFill,
    /// A post-only market order (it could only take).
    Invalid,
    /// A limit price outside the book's price band (`trading.price_band_pct`). Decided by
    /// the book entity before the engine sees the order, so never journaled.
    OutsideBand,
}

/// Why a resting order left the book without filling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CancelReason {
    /// Its owner asked.
    Requested,
    /// Self-trade prevention: the same owner's incoming order would have traded with it.
    SelfTrade,
    /// Its time in force ran out (a day order at the close): it ends `expired`.
    Expired,
}

/// What the engine reports, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// The order passed the checks (it may still trade, rest, or expire).
    Accepted { id: u64 },
    /// A match: `qty` at the maker's `price`.
    Trade {
        taker: u64,
        maker: u64,
        price: u64,
        qty: u64,
        taker_side: Side,
    },
    /// The rest of the order now rests on the book.
    Rested { id: u64, price: u64, remaining: u64 },
    /// A resting order left the book unfilled for `remaining`.
    Cancelled {
        id: u64,
        remaining: u64,
        reason: CancelReason,
    },
    /// The unfilled remainder of a market/IOC order (not resting).
    Expired { id: u64, remaining: u64 },
    /// Refused; nothing happened.
    Rejected { id: u64, reason: Reject },
}

/// A resting order as a snapshot keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resting {
    pub id: u64,
    pub owner: u64,
    pub side: Side,
    pub price: u64,
    pub remaining: u64,
}

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Node {
    id: u64,
    owner: u64,
    remaining: u64,
    price: u64,
    side: Side,
    prev: u32,
    next: u32,
}

#[derive(Debug, Clone, Copy)]
struct Level {
    head: u32,
    tail: u32,
    qty: u64,
}

/// One book.
#[derive(Debug, Default, Clone)]
pub struct Book {
    slab: Vec<Node>,
    free: Vec<u32>,
    index: HashMap<u64, u32>,
    bids: BTreeMap<u64, Level>,
    asks: BTreeMap<u64, Level>,
}

impl Book {
    /// An empty book.
    pub fn new() -> Book {
        Book::default()
    }

    /// Best bid and ask prices.
    pub fn best(&self) -> (Option<u64>, Option<u64>) {
        (
            self.bids.keys().next_back().copied(),
            self.asks.keys().next().copied(),
        )
    }

    /// Resting orders.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing rests.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The top `depth` levels of a side as `(price, qty)`, best first.
    pub fn depth(&self, side: Side, depth: usize) -> Vec<(u64, u64)> {
        match side {
            Side::Buy => self
                .bids
                .iter()
                .rev()
                .take(depth)
                .map(|(p, l)| (*p, l.qty))
                .collect(),
            Side::Sell => self
                .asks
                .iter()
                .take(depth)
                .map(|(p, l)| (*p, l.qty))
                .collect(),
        }
    }

    /// The quantity resting at `price` on `side` (0 when no level).
    pub fn level_qty(&self, side: Side, price: u64) -> u64 {
        let levels = match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        };
        levels.get(&price).map_or(0, |l| l.qty)
    }

    /// Every resting order in time priority within each level (bids, then asks): with
    /// [`Book::restore`], a snapshot that rebuilds the exact same book.
    pub fn resting_orders(&self) -> Vec<Resting> {
        let mut out = Vec::with_capacity(self.index.len());
        for levels in [&self.bids, &self.asks] {
            for level in levels.values() {
                let mut slot = level.head;
                while slot != NONE {
                    let n = &self.slab[slot as usize];
                    out.push(Resting {
                        id: n.id,
                        owner: n.owner,
                        side: n.side,
                        price: n.price,
                        remaining: n.remaining,
                    });
                    slot = n.next;
                }
            }
        }
        out
    }

    /// Rebuilds a book from [`Book::resting_orders`].
    pub fn restore(resting: &[Resting]) -> Book {
        let mut book = Book::new();
        for r in resting {
            book.push_back(r.id, r.owner, r.side, r.price, r.remaining);
        }
        book
    }

    /// A resting order's `(side, price, remaining)`.
    pub fn resting(&self, id: u64) -> Option<(Side, u64, u64)> {
        let n = &self.slab[*self.index.get(&id)? as usize];
        Some((n.side, n.price, n.remaining))
    }

    fn levels(&mut self, side: Side) -> &mut BTreeMap<u64, Level> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// The best opposite price an incoming `side` order could take, if within `limit`.
    fn best_against(&self, side: Side, limit: Option<u64>) -> Option<u64> {
        match side {
            Side::Buy => self
                .asks
                .keys()
                .next()
                .copied()
                .filter(|p| limit.is_none_or(|l| *p <= l)),
            Side::Sell => self
                .bids
                .keys()
                .next_back()
                .copied()
                .filter(|p| limit.is_none_or(|l| *p >= l)),
        }
    }

    fn push_back(&mut self, id: u64, owner: u64, side: Side, price: u64, qty: u64) {
        let node = Node {
            id,
            owner,
            remaining: qty,
            price,
            side,
            prev: NONE,
            next: NONE,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = node;
                s
            }
            None => {
                self.slab.push(node);
                (self.slab.len() - 1) as u32
            }
        };
        self.index.insert(id, slot);
        let level = self.levels(side).entry(price).or_insert(Level {
            head: NONE,
            tail: NONE,
            qty: 0,
        });
        let tail = level.tail;
        level.qty += qty;
        level.tail = slot;
        if tail == NONE {
            level.head = slot;
        }
        if tail != NONE {
            self.slab[tail as usize].next = slot;
            self.slab[slot as usize].prev = tail;
        }
    }

    /// Unlinks a resting order; returns its remaining quantity.
    fn unlink(&mut self, slot: u32) -> u64 {
        let (side, price, prev, next, remaining, id) = {
            let n = &self.slab[slot as usize];
            (n.side, n.price, n.prev, n.next, n.remaining, n.id)
        };
        if prev != NONE {
            self.slab[prev as usize].next = next;
        }
        if next != NONE {
            self.slab[next as usize].prev = prev;
        }
        let levels = self.levels(side);
        let mut emptied = false;
        if let Some(level) = levels.get_mut(&price) {
            if level.head == slot {
                level.head = next;
            }
            if level.tail == slot {
                level.tail = prev;
            }
            level.qty -= remaining;
            emptied = level.head == NONE;
        }
        if emptied {
            levels.remove(&price);
        }
        self.index.remove(&id);
        self.free.push(slot);
        remaining
    }

    /// Cancels a resting order.
    pub fn cancel(&mut self, id: u64, out: &mut Vec<Event>) -> bool {
        self.remove(id, CancelReason::Requested, out)
    }

    /// Takes a resting order off the book for `reason`; false if it does not rest here.
    pub fn remove(&mut self, id: u64, reason: CancelReason, out: &mut Vec<Event>) -> bool {
        match self.index.get(&id).copied() {
            Some(slot) => {
                let remaining = self.unlink(slot);
                out.push(Event::Cancelled {
                    id,
                    remaining,
                    reason,
                });
                true
            }
            None => false,
        }
    }

    /// Quantity an order of `owner` on `side` could take now within `limit`, up to `want`
    /// (other owners' orders only: self-trade prevention would cancel the owner's own).
    fn fillable(&self, owner: u64, side: Side, limit: Option<u64>, want: u64) -> u64 {
        let mut got = 0u64;
        let levels: Box<dyn Iterator<Item = (&u64, &Level)>> = match side {
            Side::Buy => Box::new(self.asks.iter()),
            Side::Sell => Box::new(self.bids.iter().rev()),
        };
        for (price, level) in levels {
            let within = match (side, limit) {
                (_, None) => true,
                (Side::Buy, Some(l)) => *price <= l,
                (Side::Sell, Some(l)) => *price >= l,
            };
            if !within {
                break;
            }
            let mut slot = level.head;
            while slot != NONE {
                let n = &self.slab[slot as usize];
                if n.owner != owner {
                    got += n.remaining;
                    if got >= want {
                        return want;
                    }
                }
                slot = n.next;
            }
        }
        got
    }

    /// Places an order; appends what happened to `out`.
    pub fn place(&mut self, o: Order, out: &mut Vec<Event>) {
        let limit = match o.kind {
            Kind::Limit { price } => Some(price),
            Kind::Market { protect } => protect,
        };
        let reject = |reason| Event::Rejected { id: o.id, reason };
        if o.qty == 0 {
            return out.push(reject(Reject::ZeroQty));
        }
        if self.index.contains_key(&o.id) {
            return out.push(reject(Reject::DuplicateId));
        }
        if matches!(o.kind, Kind::Market { .. }) && o.post_only {
            return out.push(reject(Reject::Invalid));
        }
        if o.post_only && self.best_against(o.side, limit).is_some() {
            return out.push(reject(Reject::WouldTake));
        }
        if o.tif == TimeInForce::Fok && self.fillable(o.owner, o.side, limit, o.qty) < o.qty {
            return out.push(reject(Reject::CannotFill));
        }
        out.push(Event::Accepted { id: o.id });
        let mut remaining = o.qty;
        while remaining > 0 {
            let Some(price) = self.best_against(o.side, limit) else {
                break;
            };
            let maker_side = o.side.opposite();
            let mut slot = self.levels(maker_side).get(&price).map_or(NONE, |l| l.head);
            while slot != NONE && remaining > 0 {
                let (maker, owner, resting, next) = {
                    let n = &self.slab[slot as usize];
                    (n.id, n.owner, n.remaining, n.next)
                };
                if owner == o.owner {
                    let left = self.unlink(slot);
                    out.push(Event::Cancelled {
                        id: maker,
                        remaining: left,
                        reason: CancelReason::SelfTrade,
                    });
                } else {
                    let qty = remaining.min(resting);
                    remaining -= qty;
                    out.push(Event::Trade {
                        taker: o.id,
                        maker,
                        price,
                        qty,
                        taker_side: o.side,
                    });
                    if qty == resting {
                        self.unlink(slot);
                    } else {
                        self.slab[slot as usize].remaining -= qty;
                        if let Some(level) = self.levels(maker_side).get_mut(&price) {
                            level.qty -= qty;
                        }
                    }
                }
                slot = next;
            }
        }
        if remaining == 0 {
            return;
        }
        match (o.kind, o.tif) {
            (Kind::Limit { price }, tif) if tif.rests() => {
                self.push_back(o.id, o.owner, o.side, price, remaining);
                out.push(Event::Rested {
                    id: o.id,
                    price,
                    remaining,
                });
            }
            _ => out.push(Event::Expired {
                id: o.id,
                remaining,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
