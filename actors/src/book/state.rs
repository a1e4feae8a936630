//! A book's whole deterministic state: the matching engine plus what it must remember about
//! orders (their cumulative state for the accounts, recent finished ones for idempotency)
//! and its fill counter. Pure: no actors, no I/O, time comes in with each command.
//!
//! The `book` entity journals each [`Command`] that changed the state and replays them on
//! recovery; because [`BookState::apply`] depends only on the state and the command, replay
//! rebuilds exactly the state that acknowledged orders saw.

use super::engine::{Book, CancelReason, Event, Kind, Order, Reject, Resting, Side, TimeInForce};
use crate::trading::{OrderState, Status, owner_of};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Finished orders are remembered at least this long (ms of command time), so a late
/// resubmission or a reconciliation poll still finds them...
pub const DONE_KEPT_MS: i64 = 5 * 60 * 1000;
/// ...but no more of them than this.
pub const DONE_KEPT_MAX: usize = 20_000;
/// Fills a book remembers (and snapshots), newest last: after a crash it re-sends them, since
/// the symbol may not have stored the last ones before the crash (it skips those it has).
/// Far more than can be in flight between a fill's acknowledgement and its tick's write.
pub const RECENT_FILLS: usize = 1024;

/// A journaled request to the book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Match an order, then rest what is left if it may.
    Submit { order: Order, ts: i64 },
    /// The owner cancels a resting or reserved order.
    Cancel { order_id: u64, owner: u64, ts: i64 },
    /// The owner's account gave up on an order it could not confirm: refuse it for good if it
    /// has not arrived (a tombstone), or report its state if it has.
    Void { order_id: u64, ts: i64 },
    /// A mirror market's feed price reached `price`: every resting order it crosses (bids at
    /// or above, asks at or below) fills whole against the house at its own limit price, in
    /// price-time priority.
    Mark { price: u64, ts: i64 },
    /// Match an order in a mirror market, where the house quotes `bid` and `ask` (the feed's
    /// price less and plus the slippage) in unlimited size behind the users' orders at the
    /// same prices; what the house does not take rests (or expires) as in [`Command::Submit`].
    SubmitAt {
        order: Order,
        ts: i64,
        bid: u64,
        ask: u64,
    },
    /// Take an order while the market is closed: its state is `reserved` and it waits,
    /// unmatched and off the book, for [`Command::Open`].
    Reserve { order: Order, ts: i64 },
    /// The market opened: the reserved orders meet the book in the order they came, each
    /// as [`Command::Submit`] would (as [`Command::SubmitAt`] with the house's `quotes`, a
    /// bid and an ask, in a mirror market).
    Open { ts: i64, quotes: Option<(u64, u64)> },
    /// These orders' time ran out (reserved too long, or day orders at the close): each
    /// still open one ends `expired`, off the book.
    Expire { order_ids: Vec<u64>, ts: i64 },
}

/// The house: the counterparty of a mirror market, the outside market whose price the
/// feed reports. Its orders live only within one command and are never reported.
pub const HOUSE: u64 = u32::MAX as u64;
/// Quantity behind each house order: more than any user can take.
const HOUSE_QTY: u64 = u64::MAX / 4;

impl Command {
    /// When the book received it.
    pub fn ts(&self) -> i64 {
        match *self {
            Command::Submit { ts, .. }
            | Command::Cancel { ts, .. }
            | Command::Void { ts, .. }
            | Command::Mark { ts, .. }
            | Command::SubmitAt { ts, .. }
            | Command::Reserve { ts, .. }
            | Command::Open { ts, .. }
            | Command::Expire { ts, .. } => ts,
        }
    }
}

/// What a book remembers of one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    pub owner: u64,
    pub side: Side,
    pub qty: u64,
    /// Where it rests (its limit price), once it rests.
    pub price: Option<u64>,
    pub state: OrderState,
}

/// One fill of the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    pub trade_id: u64,
    pub price: u64,
    pub qty: u64,
    pub taker_side: Side,
}

/// The answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The order's state after the command.
    Order(OrderState),
    /// No such order of that owner.
    NotFound,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the state changed: only then is the command journaled.
    pub changed: bool,
    pub answer: Answer,
    /// Every order the command changed, with its owner and new state, in first-touch order.
    pub updates: Vec<(u64, OrderState)>,
    pub fills: Vec<Fill>,
    /// Price levels whose resting quantity changed.
    pub levels: Vec<(Side, u64)>,
}

impl Outcome {
    fn unchanged(answer: Answer) -> Outcome {
        Outcome {
            changed: false,
            answer,
            updates: Vec::new(),
            fills: Vec::new(),
            levels: Vec::new(),
        }
    }
}

/// Everything a snapshot keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    resting: Vec<Resting>,
    orders: Vec<(u64, Tracked)>,
    done: Vec<(i64, u64)>,
    next_trade: u64,
    last_price: Option<u64>,
    recent_fills: Vec<Fill>,
    reserved: Vec<(i64, Order)>,
    day: Vec<(u64, i64)>,
}

/// A snapshot as stored before markets had hours (no reserved or day orders).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct SnapshotBeforeHours {
    resting: Vec<Resting>,
    orders: Vec<(u64, Tracked)>,
    done: Vec<(i64, u64)>,
    next_trade: u64,
    last_price: Option<u64>,
    recent_fills: Vec<Fill>,
}

/// A snapshot as stored before it kept the recent fills.
#[derive(Deserialize)]
struct SnapshotBeforeFills {
    resting: Vec<Resting>,
    orders: Vec<(u64, Tracked)>,
    done: Vec<(i64, u64)>,
    next_trade: u64,
    last_price: Option<u64>,
}

impl crate::journal::StoredSnapshot for Snapshot {
    /// Snapshots stored before markets had hours restore with no reserved or day orders,
    /// and those stored before the recent fills were kept with none: each old layout is the
    /// next one without its last fields, so it never decodes as a newer one.
    fn decode(bytes: &[u8]) -> Result<Snapshot, bourse_storage::codec::CodecError> {
        use bourse_storage::codec::decode;
        decode::<Snapshot>(bytes).or_else(|e| {
            let old: SnapshotBeforeHours = match decode(bytes) {
                Ok(old) => old,
                Err(_) => {
                    let older: SnapshotBeforeFills = decode(bytes).map_err(|_| e)?;
                    SnapshotBeforeHours {
                        resting: older.resting,
                        orders: older.orders,
                        done: older.done,
                        next_trade: older.next_trade,
                        last_price: older.last_price,
                        recent_fills: Vec::new(),
                    }
                }
            };
            Ok(Snapshot {
                resting: old.resting,
                orders: old.orders,
                done: old.done,
                next_trade: old.next_trade,
                last_price: old.last_price,
                recent_fills: old.recent_fills,
                reserved: Vec::new(),
                day: Vec::new(),
            })
        })
    }
}

/// One book's state.
#[derive(Debug, Clone)]
pub struct BookState {
    engine: Book,
    orders: HashMap<u64, Tracked>,
    /// Finished orders, oldest first, with the time they finished.
    done: VecDeque<(i64, u64)>,
    next_trade: u64,
    last_price: Option<u64>,
    recent_fills: VecDeque<Fill>,
    /// Orders taken while the market was closed, in the order they came, with that time.
    reserved: Vec<(i64, Order)>,
    /// Day orders on the book, with when they started resting: the entity expires each at
    /// the close after that.
    day: BTreeMap<u64, i64>,
    /// The same, by time: the oldest first.
    day_by_time: BTreeSet<(i64, u64)>,
    scratch: Vec<Event>,
}

impl Default for BookState {
    fn default() -> Self {
        BookState {
            engine: Book::new(),
            orders: HashMap::new(),
            done: VecDeque::new(),
            next_trade: 1,
            last_price: None,
            recent_fills: VecDeque::new(),
            reserved: Vec::new(),
            day: BTreeMap::new(),
            day_by_time: BTreeSet::new(),
            scratch: Vec::new(),
        }
    }
}

impl BookState {
    /// An empty book.
    pub fn new() -> BookState {
        BookState::default()
    }

    /// The matching engine (depth, best prices).
    pub fn engine(&self) -> &Book {
        &self.engine
    }

    /// The last fill price.
    pub fn last_price(&self) -> Option<u64> {
        self.last_price
    }

    /// The newest fills, up to [`RECENT_FILLS`], oldest first.
    pub fn recent_fills(&self) -> impl ExactSizeIterator<Item = &Fill> {
        self.recent_fills.iter()
    }

    /// What the book knows of an order.
    pub fn order(&self, order_id: u64) -> Option<&Tracked> {
        self.orders.get(&order_id)
    }

    /// The reserved orders, in the order they came, with when they came.
    pub fn reserved(&self) -> impl ExactSizeIterator<Item = &(i64, Order)> {
        self.reserved.iter()
    }

    /// The day orders on the book, by id, with when they started resting.
    pub fn day_orders(&self) -> impl Iterator<Item = (&u64, &i64)> {
        self.day.iter()
    }

    /// The day orders on the book as `(since, id)`, the longest resting first.
    pub fn day_orders_by_time(&self) -> impl Iterator<Item = &(i64, u64)> {
        self.day_by_time.iter()
    }

    /// Every order the book tracks, open or recently finished.
    pub fn orders(&self) -> impl Iterator<Item = (&u64, &Tracked)> {
        self.orders.iter()
    }

    /// Applies one command.
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        let outcome = match *cmd {
            Command::Submit { order, ts } => self.submit(order, ts),
            Command::Cancel {
                order_id,
                owner,
                ts,
            } => self.cancel(order_id, owner, ts),
            Command::Void { order_id, ts } => self.void(order_id, ts),
            Command::Mark { price, ts } => self.mark(price, ts),
            Command::SubmitAt {
                order,
                ts,
                bid,
                ask,
            } => self.submit_at(order, ts, bid, ask),
            Command::Reserve { order, ts } => self.reserve(order, ts),
            Command::Open { ts, quotes } => self.open(ts, quotes),
            Command::Expire { ref order_ids, ts } => self.expire(order_ids, ts),
        };
        if outcome.changed {
            self.evict(cmd.ts());
        }
        outcome
    }

    /// Whether a feed price of `price` would fill any resting order.
    pub fn crossed_by(&self, price: u64) -> bool {
        let (bid, ask) = self.engine.best();
        bid.is_some_and(|b| b >= price) || ask.is_some_and(|a| a <= price)
    }

    fn mark(&mut self, price: u64, ts: i64) -> Outcome {
        if !self.crossed_by(price) {
            return Outcome::unchanged(Answer::NotFound);
        }
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        // One house order takes each side at the feed's price: it trades at the resting
        // orders' own prices, best first, and expires with the rest.
        for (n, side) in [(1, Side::Sell), (2, Side::Buy)] {
            self.engine
                .place(house(n, side, price, TimeInForce::Ioc), &mut events);
        }
        let outcome = self.absorb(&events, ts);
        self.scratch = events;
        outcome
    }

    fn submit_at(&mut self, order: Order, ts: i64, bid: u64, ask: u64) -> Outcome {
        if let Some(t) = self.orders.get(&order.id) {
            return Outcome::unchanged(Answer::Order(t.state));
        }
        self.track(order);
        self.place_new(order, ts, Some((bid, ask)))
    }

    /// Matches a newly tracked order (with the house's `quotes` in a mirror market) and
    /// answers its state.
    fn place_new(&mut self, order: Order, ts: i64, quotes: Option<(u64, u64)>) -> Outcome {
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        self.place(order, quotes, &mut events);
        let mut outcome = self.absorb(&events, ts);
        self.scratch = events;
        self.note_day(&order, ts);
        if let Some(t) = self.orders.get(&order.id) {
            outcome.answer = Answer::Order(t.state);
        }
        outcome
    }

    /// Puts a tracked order to the engine. In a mirror market the house's quotes (a bid
    /// and an ask) join the book behind the users' orders at their prices (post only: they
    /// never take), the order matches, and the quotes leave again.
    fn place(&mut self, order: Order, quotes: Option<(u64, u64)>, events: &mut Vec<Event>) {
        let quotes = quotes.map(|(bid, ask)| {
            [
                house(3, Side::Sell, ask, TimeInForce::Gtc),
                house(4, Side::Buy, bid, TimeInForce::Gtc),
            ]
        });
        for q in quotes.iter().flatten() {
            self.engine.place(*q, events);
        }
        self.engine.place(order, events);
        for q in quotes.iter().flatten() {
            self.engine.cancel(q.id, events);
        }
    }

    /// Remembers a day order that now rests, for its expiry at the close.
    fn note_day(&mut self, order: &Order, ts: i64) {
        if order.tif == TimeInForce::Day
            && self
                .orders
                .get(&order.id)
                .is_some_and(|t| !t.state.status.is_done())
        {
            self.day.insert(order.id, ts);
            self.day_by_time.insert((ts, order.id));
        }
    }

    fn reserve(&mut self, order: Order, ts: i64) -> Outcome {
        if let Some(t) = self.orders.get(&order.id) {
            return Outcome::unchanged(Answer::Order(t.state));
        }
        self.track(order);
        let state = OrderState {
            status: Status::Reserved,
            ..OrderState::new(order.id)
        };
        if let Some(t) = self.orders.get_mut(&order.id) {
            t.state = state;
        }
        self.reserved.push((ts, order));
        Outcome {
            changed: true,
            answer: Answer::Order(state),
            updates: vec![(order.owner, state)],
            fills: Vec::new(),
            levels: Vec::new(),
        }
    }

    fn open(&mut self, ts: i64, quotes: Option<(u64, u64)>) -> Outcome {
        if self.reserved.is_empty() {
            return Outcome::unchanged(Answer::NotFound);
        }
        let reserved = std::mem::take(&mut self.reserved);
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        for (_, order) in &reserved {
            if let Some(t) = self.orders.get_mut(&order.id) {
                t.state.status = Status::New;
            }
            self.place(*order, quotes, &mut events);
        }
        let outcome = self.absorb(&events, ts);
        self.scratch = events;
        for (_, order) in &reserved {
            self.note_day(order, ts);
        }
        outcome
    }

    fn expire(&mut self, order_ids: &[u64], ts: i64) -> Outcome {
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        for &id in order_ids {
            if self
                .orders
                .get(&id)
                .is_some_and(|t| !t.state.status.is_done())
            {
                self.take_off(id, CancelReason::Expired, &mut events);
            }
        }
        if events.is_empty() {
            self.scratch = events;
            return Outcome::unchanged(Answer::NotFound);
        }
        let outcome = self.absorb(&events, ts);
        self.scratch = events;
        outcome
    }

    /// Starts tracking a new order.
    fn track(&mut self, order: Order) {
        self.orders.insert(
            order.id,
            Tracked {
                owner: order.owner,
                side: order.side,
                qty: order.qty,
                price: None,
                state: OrderState::new(order.id),
            },
        );
    }

    fn submit(&mut self, order: Order, ts: i64) -> Outcome {
        if let Some(t) = self.orders.get(&order.id) {
            // A resubmission (or a voided id): the first answer stands.
            return Outcome::unchanged(Answer::Order(t.state));
        }
        self.track(order);
        self.place_new(order, ts, None)
    }

    fn cancel(&mut self, order_id: u64, owner: u64, ts: i64) -> Outcome {
        let Some(t) = self.orders.get(&order_id).filter(|t| t.owner == owner) else {
            return Outcome::unchanged(Answer::NotFound);
        };
        if t.state.status.is_done() {
            return Outcome::unchanged(Answer::Order(t.state));
        }
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        self.take_off(order_id, CancelReason::Requested, &mut events);
        let mut outcome = self.absorb(&events, ts);
        self.scratch = events;
        if let Some(t) = self.orders.get(&order_id) {
            outcome.answer = Answer::Order(t.state);
        }
        outcome
    }

    /// Takes an open order off the book, or out of the queue for the open when it is
    /// reserved, for `reason` (the events `absorb` turns into its end).
    fn take_off(&mut self, id: u64, reason: CancelReason, events: &mut Vec<Event>) {
        match self.orders.get(&id) {
            Some(t) if t.state.status == Status::Reserved => {
                let remaining = t.qty;
                self.reserved.retain(|(_, o)| o.id != id);
                events.push(Event::Cancelled {
                    id,
                    remaining,
                    reason,
                });
            }
            _ => {
                self.engine.remove(id, reason, events);
            }
        }
    }

    fn void(&mut self, order_id: u64, ts: i64) -> Outcome {
        if let Some(t) = self.orders.get(&order_id) {
            return Outcome::unchanged(Answer::Order(t.state));
        }
        let state = OrderState {
            status: Status::Rejected,
            ..OrderState::new(order_id)
        };
        self.orders.insert(
            order_id,
            Tracked {
                owner: owner_of(order_id),
                side: Side::Buy,
                qty: 0,
                price: None,
                state,
            },
        );
        self.done.push_back((ts, order_id));
        Outcome {
            changed: true,
            answer: Answer::Order(state),
            updates: vec![(owner_of(order_id), state)],
            fills: Vec::new(),
            levels: Vec::new(),
        }
    }

    /// Folds engine events into the tracked orders.
    fn absorb(&mut self, events: &[Event], ts: i64) -> Outcome {
        let mut touched: Vec<u64> = Vec::new();
        let mut fills = Vec::new();
        let mut levels = Vec::new();
        let touch = |id: u64, touched: &mut Vec<u64>| {
            if !touched.contains(&id) {
                touched.push(id);
            }
        };
        for e in events {
            match *e {
                Event::Accepted { id } => touch(id, &mut touched),
                Event::Trade {
                    taker,
                    maker,
                    price,
                    qty,
                    taker_side,
                } => {
                    let trade_id = self.next_trade;
                    self.next_trade += 1;
                    self.last_price = Some(price);
                    fills.push(Fill {
                        trade_id,
                        price,
                        qty,
                        taker_side,
                    });
                    levels.push((taker_side.opposite(), price));
                    for id in [taker, maker] {
                        if let Some(t) = self.orders.get_mut(&id) {
                            t.state.filled += qty;
                            t.state.cost += u128::from(price) * u128::from(qty);
                            t.state.last_trade = trade_id;
                            t.state.status = if t.state.filled >= t.qty {
                                Status::Filled
                            } else {
                                Status::PartiallyFilled
                            };
                        }
                        touch(id, &mut touched);
                    }
                }
                Event::Rested { id, price, .. } => {
                    if let Some(t) = self.orders.get_mut(&id) {
                        t.price = Some(price);
                        levels.push((t.side, price));
                    }
                    touch(id, &mut touched);
                }
                Event::Cancelled { id, reason, .. } => {
                    if let Some(t) = self.orders.get_mut(&id) {
                        t.state.status = if reason == CancelReason::Expired {
                            Status::Expired
                        } else {
                            Status::Cancelled
                        };
                        if let Some(p) = t.price {
                            levels.push((t.side, p));
                        }
                    }
                    touch(id, &mut touched);
                }
                Event::Expired { id, .. } => {
                    if let Some(t) = self.orders.get_mut(&id) {
                        t.state.status = Status::Expired;
                    }
                    touch(id, &mut touched);
                }
                Event::Rejected { id, reason } => {
                    if let Some(t) = self.orders.get_mut(&id) {
                        // A fill-or-kill that cannot fill expires (nothing happened to it);
                        // anything else the book refused is rejected.
                        t.state.status = if reason == Reject::CannotFill {
                            Status::Expired
                        } else {
                            Status::Rejected
                        };
                        t.state.reject = Some(reason);
                    }
                    touch(id, &mut touched);
                }
            }
        }
        for fill in &fills {
            if self.recent_fills.len() == RECENT_FILLS {
                self.recent_fills.pop_front();
            }
            self.recent_fills.push_back(*fill);
        }
        levels.sort_unstable_by_key(|(s, p)| (*s == Side::Sell, *p));
        levels.dedup();
        let mut updates = Vec::with_capacity(touched.len());
        for id in touched {
            if let Some(t) = self.orders.get(&id) {
                if t.state.status.is_done() {
                    self.done.push_back((ts, id));
                    if let Some(since) = self.day.remove(&id) {
                        self.day_by_time.remove(&(since, id));
                    }
                }
                updates.push((t.owner, t.state));
            }
        }
        Outcome {
            changed: true,
            answer: Answer::NotFound,
            updates,
            fills,
            levels,
        }
    }

    /// Forgets finished orders past both retention bounds' reach.
    fn evict(&mut self, now: i64) {
        while let Some(&(at, id)) = self.done.front() {
            if at >= now - DONE_KEPT_MS && self.done.len() <= DONE_KEPT_MAX {
                break;
            }
            self.done.pop_front();
            if self
                .orders
                .get(&id)
                .is_some_and(|t| t.state.status.is_done())
            {
                self.orders.remove(&id);
            }
        }
    }

    /// The state to persist.
    pub fn snapshot(&self) -> Snapshot {
        let mut orders: Vec<(u64, Tracked)> =
            self.orders.iter().map(|(k, v)| (*k, v.clone())).collect();
        orders.sort_unstable_by_key(|(k, _)| *k);
        Snapshot {
            resting: self.engine.resting_orders(),
            orders,
            done: self.done.iter().copied().collect(),
            next_trade: self.next_trade,
            last_price: self.last_price,
            recent_fills: self.recent_fills.iter().copied().collect(),
            reserved: self.reserved.clone(),
            day: self.day.iter().map(|(id, ts)| (*id, *ts)).collect(),
        }
    }

    /// Rebuilds the state a snapshot was taken of.
    pub fn restore(s: Snapshot) -> BookState {
        BookState {
            engine: Book::restore(&s.resting),
            orders: s.orders.into_iter().collect(),
            done: s.done.into_iter().collect(),
            next_trade: s.next_trade,
            last_price: s.last_price,
            recent_fills: s.recent_fills.into_iter().collect(),
            reserved: s.reserved,
            day_by_time: s.day.iter().map(|(id, since)| (*since, *id)).collect(),
            day: s.day.into_iter().collect(),
            scratch: Vec::new(),
        }
    }
}

/// The house's `n`th order of a command.
fn house(n: u32, side: Side, price: u64, tif: TimeInForce) -> Order {
    Order {
        id: crate::trading::order_id(HOUSE, n),
        owner: HOUSE,
        side,
        kind: Kind::Limit { price },
        qty: HOUSE_QTY,
        tif,
        // A quote never takes; a marking order only takes.
        post_only: tif == TimeInForce::Gtc,
    }
}

/// The house's quotes around a mirror market's feed price `mark`: `slippage_bps` basis
/// points below and above, rounded away from it to whole ticks (the bid at least one tick).
pub fn house_quotes(mark: u64, slippage_bps: u32) -> (u64, u64) {
    let off = (u128::from(mark) * u128::from(slippage_bps)).div_ceil(10_000);
    let off = u64::try_from(off).unwrap_or(u64::MAX);
    (mark.saturating_sub(off).max(1), mark.saturating_add(off))
}

/// The prices a limit order may have, both included: `pct` percent either side of
/// `reference` (at least one tick).
pub fn price_band(reference: u64, pct: u32) -> (u64, u64) {
    let reference = u128::from(reference.max(1));
    let pct = u128::from(pct);
    let low = (reference * 100u128.saturating_sub(pct))
        .div_ceil(100)
        .max(1);
    let high = reference * (100 + pct) / 100;
    let fit = |p: u128| u64::try_from(p).unwrap_or(u64::MAX);
    (fit(low), fit(high))
}

/// The protective price of a market buy: the best ask (else the last price, else
/// `fallback`) plus `pct` percent, rounded up to a whole tick.
pub fn market_buy_protect(
    best_ask: Option<u64>,
    last: Option<u64>,
    fallback: u64,
    pct: u32,
) -> u64 {
    let reference = u128::from(best_ask.or(last).unwrap_or(fallback).max(1));
    let p = (reference * (100 + u128::from(pct))).div_ceil(100);
    u64::try_from(p).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
