//! Order books: the pure matching [`engine`], the deterministic [`state`] around it, and the
//! `book` entity (key: the symbol) that journals commands before acknowledging them.
//!
//! Every command that changes the book is appended to the book's journal under its lease
//! (epoch-fenced) and only then answered, published on `book:S`, reported to the owners'
//! accounts and handed to the symbol as ticks. The book does not wait for each write before
//! matching the next order: answers and effects go through an ordered *release* queue that
//! lets each one out only once its journal entry (and every earlier one) is durable, so
//! concurrent orders share commits (group commit) and nobody ever sees a change a crash
//! could take back. Queries and `book:S` subscriptions (their snapshot and replay) take the
//! same queue, so they never show undurable state either.
//! If a write fails, everything after it is refused and the book restarts from storage. A snapshot every
//! `trading.snapshot_every` entries bounds recovery: snapshot, then replay the rest. After a
//! recovery the book re-sends the state of every order the replayed entries touched, and its
//! recent fills (kept in its state and snapshots), since the reports and ticks of its last
//! moments may have died with it (accounts ignore states they already have; the symbol skips
//! fills it has stored, by book trade id).

pub mod engine;
pub mod state;
pub mod view;

use crate::account::{Account, AccountMsg};
use crate::clock::now_ms;
use crate::feed::TradeInput;
use crate::symbol::{Symbol, SymbolMsg, SymbolReply};
use crate::trading::{OrderState, Status, tick_side};
use bourse_cluster::hub::Delivery;
use bourse_cluster::{
    Entity, EntityContext, EntityError, Responder, Sharding, StreamEvent, StreamGrant, StreamLog,
    StreamRequest,
};
use bourse_config::{Market, Markets, Venue};
use bourse_storage::{Ack, Lease, MarketStore, Write};
use engine::{Kind, Order, Reject, Side};
use serde::{Deserialize, Serialize};
use state::{Answer, BookState, Command, Outcome, house_quotes, price_band};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// The entity kind name.
pub const KIND: &str = "book";
/// Levels per side in a `book:S` snapshot (docs/PROTOCOL.md).
pub const SNAPSHOT_LEVELS: usize = 50;
/// Deepest `GET /api/v1/book` answer.
pub const MAX_DEPTH: usize = 200;

/// What a book accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BookMsg {
    /// Match an order (idempotent by order id).
    Submit(Order),
    /// Cancel the owner's resting order.
    Cancel { order_id: u64, owner: u64 },
    /// Give up on an order whose submission was not confirmed (see [`Command::Void`]).
    Void(u64),
    /// The current states of these orders (reconciliation).
    Query(Vec<u64>),
    /// The top `depth` levels of each side and the `book:S` seq they are at.
    Depth(usize),
    /// Best prices and the last fill price (market-buy protection).
    Quote,
    /// A mirror market's feed price (from its symbol, after each batch of feed trades).
    Mark(u64),
    /// Nothing: it only keeps the book active where the ring puts it, so that its clock
    /// opens reserved orders and expires day orders in a market nobody asks about
    /// ([`keep_awake`]).
    Wake,
}

/// What a book answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BookReply {
    Order(OrderState),
    NotFound,
    States(Vec<OrderState>),
    Depth {
        seq: u64,
        bids: Vec<(u64, u64)>,
        asks: Vec<(u64, u64)>,
    },
    Quote {
        best_bid: Option<u64>,
        best_ask: Option<u64>,
        last: Option<u64>,
    },
    /// The command could not be made durable; nothing of it happened.
    Failed(String),
    /// Taken (a [`BookMsg::Mark`]).
    Done,
}

/// What every book on a node shares.
pub struct BookDeps {
    pub store: Arc<dyn MarketStore>,
    pub markets: Markets,
    pub replay_events: usize,
    pub snapshot_every: u64,
    /// Whether fills and order changes also go to the outbox for the Kafka event relay.
    pub events: bool,
    /// `trading.price_band_pct`: how far from the last trade a limit order may be priced.
    pub price_band_pct: u32,
    /// `trading.slippage_bps`: how far from a mirror market's feed price the house quotes.
    pub slippage_bps: u32,
    /// `trading.reserve_days` in ms: how long a reserved order waits for an open.
    pub reserve_ms: i64,
}

/// What becomes visible once a journal entry is durable.
#[derive(Default)]
struct Effects {
    /// `book:S` events with the nodes that want them.
    events: Vec<(StreamEvent, Vec<String>)>,
    /// Order states for their owners' accounts.
    reports: Vec<(u64, OrderState)>,
    /// Fills for the symbol's ticks, with their book trade ids.
    trades: Vec<(u64, TradeInput)>,
}

/// One entry of the release queue.
struct Release {
    /// The journal write to wait for (none for a query).
    ack: Option<Ack>,
    effects: Effects,
    answer: Option<Held>,
}

/// An answer held until what it shows is durable.
enum Held {
    Book(BookReply, Responder<BookReply>),
    /// A `book:S` subscription: its snapshot or replay shows the book as it is in memory.
    Grant(StreamGrant, Responder<Result<StreamGrant, String>>),
}

impl Held {
    fn send(self) {
        match self {
            Held::Book(reply, respond) => respond.send(reply),
            Held::Grant(grant, respond) => respond.send(Ok(grant)),
        }
    }

    /// Refuses it: the book could not make its state durable.
    fn fail(self, why: String) {
        match self {
            Held::Book(_, respond) => respond.send(BookReply::Failed(why)),
            Held::Grant(_, respond) => respond.send(Err(why)),
        }
    }
}

/// What the release task shares with the entity.
struct Shared {
    /// Lost once a journal write fails: memory is ahead of storage.
    lease: Lease,
    /// Nodes that no longer listen to `book:S` (learnt while delivering).
    gone: Mutex<Vec<String>>,
}

/// The entity state.
pub struct BookEntity {
    market: Market,
    deps: Arc<BookDeps>,
    sharding: Sharding,
    /// Set when memory changed but cannot be journaled: the shell stops the entity and the
    /// next message rebuilds it (as it does once the lease is lost).
    stop: bool,
    shared: Arc<Shared>,
    release: mpsc::UnboundedSender<Release>,
    state: BookState,
    /// The last journal position written.
    seq: u64,
    since_snapshot: u64,
    log: StreamLog,
    channel: String,
    /// A mirror market's latest feed price (memory only: the commands that use it carry it).
    mark: Option<u64>,
    /// When the longest-resting day order (resting since `.0`) expires (`.1`): computed
    /// once per oldest order, not per message.
    day_due: Option<(i64, i64)>,
}

impl Entity for BookEntity {
    const KIND: &'static str = KIND;
    // Resting orders must keep matching whether or not anyone asks: never idle-stopped.
    const PASSIVATE_WHEN_IDLE: bool = false;
    // The clock of market hours: reserved orders meet the book at the open, day orders
    // and stale reserved ones expire.
    const TICK_EVERY: Option<std::time::Duration> = Some(std::time::Duration::from_secs(1));

    type Msg = BookMsg;
    type Reply = BookReply;
    type Deps = BookDeps;

    async fn activate(ctx: &EntityContext, deps: &Arc<BookDeps>) -> Result<Self, EntityError> {
        let market = deps
            .markets
            .get(&ctx.key)
            .cloned()
            .ok_or_else(|| EntityError::new(format!("unknown symbol '{}'", ctx.key)))?;
        let r = crate::journal::recover::<state::Snapshot, Command>(
            &deps.store,
            KIND,
            &ctx.key,
            &ctx.sharding,
        )
        .await?;
        let mut state = r.snapshot.map_or_else(BookState::new, BookState::restore);
        let mut touched = BTreeSet::new();
        for (_, cmd) in &r.entries {
            let out = state.apply(cmd);
            touched.extend(out.updates.iter().map(|(_, s)| s.order_id));
        }
        let (lease, seq, replayed) = (r.lease, r.seq, r.entries.len());
        let epoch = bourse_cluster::stream::new_epoch(now_ms());
        ctx.sharding.publisher_activated(KIND, &ctx.key, &epoch);
        let shared = Arc::new(Shared {
            lease,
            gone: Mutex::new(Vec::new()),
        });
        let (release, queue) = mpsc::unbounded_channel();
        tokio::spawn(run_releases(
            queue,
            shared.clone(),
            ctx.sharding.clone(),
            ctx.key.clone(),
        ));
        let entity = BookEntity {
            shared,
            release,
            channel: format!("book:{}", ctx.key),
            log: StreamLog::new(epoch, deps.replay_events),
            market,
            deps: deps.clone(),
            sharding: ctx.sharding.clone(),
            stop: false,
            state,
            seq,
            since_snapshot: replayed as u64,
            mark: None,
            day_due: None,
        };
        // The last reports and fills before a crash may not have reached the accounts and
        // the symbol.
        for id in touched {
            if let Some(t) = entity.state.order(id) {
                report(&entity.sharding, t.owner, t.state);
            }
        }
        let fills: Vec<_> = entity.state.recent_fills().map(fill_trade).collect();
        if !fills.is_empty() && entity.market.venue == Venue::Exchange {
            send_fills(&entity.sharding, &ctx.key, fills);
        }
        if entity.market.venue == Venue::Mirror {
            // A book restarted on its own learns the price from its symbol now, not at the
            // feed's next trade (which a quiet market may not send for a long time).
            tokio::spawn(fetch_mark(ctx.sharding.clone(), ctx.key.clone()));
        }
        tracing::info!(
            symbol = %ctx.key,
            journal_seq = entity.seq,
            replayed,
            resting = entity.state.engine().len(),
            "book activated"
        );
        Ok(entity)
    }

    async fn handle(&mut self, msg: BookMsg, _ctx: &EntityContext) -> BookReply {
        if let BookMsg::Wake = msg {
            // Nothing to order behind the journal: no wait for the release queue.
            return BookReply::Done;
        }
        // Tells (a `Mark`) take the same path as asks; their answer is dropped.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.accept(
            msg,
            Responder::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await
            .unwrap_or_else(|_| BookReply::Failed("the book stopped".into()))
    }

    async fn handle_ask(
        &mut self,
        msg: BookMsg,
        _ctx: &EntityContext,
        respond: Responder<BookReply>,
    ) {
        self.accept(msg, respond);
    }

    fn subscribe(
        &mut self,
        req: StreamRequest,
        _ctx: &EntityContext,
    ) -> Result<StreamGrant, String> {
        if req.channel != self.channel {
            return Err(format!(
                "channel '{}' is not published by book {}",
                req.channel, self.market.symbol
            ));
        }
        let engine = self.state.engine();
        let snapshot = view::snapshot(
            &self.market,
            &engine.depth(Side::Buy, SNAPSHOT_LEVELS),
            &engine.depth(Side::Sell, SNAPSHOT_LEVELS),
        );
        Ok(self
            .log
            .subscribe(&req, now_ms(), Some(snapshot.to_string()), false))
    }

    /// The grant goes through the release queue: it shows the book as memory holds it, so
    /// it waits for every journal write before it, like a query.
    fn subscribe_then(
        &mut self,
        req: StreamRequest,
        ctx: &EntityContext,
        respond: Responder<Result<StreamGrant, String>>,
    ) {
        match self.subscribe(req, ctx) {
            Ok(grant) => self.release(Release {
                ack: None,
                effects: Effects::default(),
                answer: Some(Held::Grant(grant, respond)),
            }),
            Err(e) => respond.send(Err(e)),
        }
    }

    fn unsubscribe(&mut self, channel: &str, node: &str) {
        self.log.unsubscribe(channel, node);
    }

    async fn on_tick(&mut self, _ctx: &EntityContext) {
        if self.fenced() {
            return;
        }
        self.clock(now_ms());
    }

    fn summary(&self) -> serde_json::Value {
        let tick = &self.market.tick;
        let (bid, ask) = self.state.engine().best();
        serde_json::json!({
            "epoch": self.log.epoch(),
            "lease": self.shared.lease.fence().epoch,
            "journal_seq": self.seq,
            "resting_orders": self.state.engine().len(),
            "reserved_orders": self.state.reserved().len(),
            "best_bid": bid.map(|p| tick.format(p)),
            "best_ask": ask.map(|p| tick.format(p)),
            "last_price": self.state.last_price().map(|p| tick.format(p)),
        })
    }

    fn fenced(&self) -> bool {
        self.stop || self.shared.lease.is_lost()
    }

    async fn passivate(&mut self, _ctx: &EntityContext) {
        // Lost or stopped: memory may be ahead of storage, so no snapshot of it.
        if self.fenced() {
            return;
        }
        // A snapshot makes the next activation (on the new owner) quick.
        self.write_snapshot();
        self.shared.lease.release().await;
    }
}

impl BookEntity {
    /// Answers a message through the release queue, after every earlier journal write.
    fn accept(&mut self, msg: BookMsg, respond: Responder<BookReply>) {
        if self.fenced() {
            self.stop = true;
            respond.send(BookReply::Failed(format!(
                "book {} is restarting; retry",
                self.market.symbol
            )));
            return;
        }
        self.forget_gone_nodes();
        let ts = now_ms();
        // What is due goes first: no order meets the book ahead of the reserved ones at the
        // open, and none meets a day order past its close.
        self.clock(ts);
        let (ack, effects, reply) = match msg {
            BookMsg::Submit(order) => match self.outside_band(&order) {
                Some(rejected) => (None, Effects::default(), BookReply::Order(rejected)),
                // Outside its hours the market holds the order for its next open; so it does
                // while earlier reserved orders still wait (a mirror market before its
                // feed's first price), so that they meet the book first.
                None if !self.market.is_open(ts) || self.state.reserved().len() > 0 => {
                    self.command(Command::Reserve { order, ts })
                }
                None if self.market.venue == Venue::Mirror => {
                    return self.submit_mirrored(order, ts, respond);
                }
                None => self.command(Command::Submit { order, ts }),
            },
            BookMsg::Mark(_) if self.market.venue == Venue::Exchange => {
                (None, Effects::default(), BookReply::Done)
            }
            // A tell is answered before it gets here; an ask waits for the journal.
            BookMsg::Wake => (None, Effects::default(), BookReply::Done),
            BookMsg::Mark(price) => {
                // Journaled only when it crosses a resting order (else nothing changes).
                self.mark = Some(price);
                let (ack, effects, _) = self.command(Command::Mark { price, ts });
                (ack, effects, BookReply::Done)
            }
            BookMsg::Cancel { order_id, owner } => self.command(Command::Cancel {
                order_id,
                owner,
                ts,
            }),
            BookMsg::Void(order_id) => self.command(Command::Void { order_id, ts }),
            BookMsg::Query(ids) => (
                None,
                Effects::default(),
                BookReply::States(
                    ids.iter()
                        .filter_map(|id| self.state.order(*id).map(|t| t.state))
                        .collect(),
                ),
            ),
            BookMsg::Depth(depth) => {
                let depth = depth.min(MAX_DEPTH);
                let engine = self.state.engine();
                (
                    None,
                    Effects::default(),
                    BookReply::Depth {
                        seq: self.log.seq(&self.channel),
                        bids: engine.depth(Side::Buy, depth),
                        asks: engine.depth(Side::Sell, depth),
                    },
                )
            }
            BookMsg::Quote => {
                let (mut best_bid, mut best_ask) = self.state.engine().best();
                let mut last = self.state.last_price();
                if let Some(mark) = self.mark.filter(|_| self.market.venue == Venue::Mirror) {
                    // The house quotes behind the users.
                    let (bid, ask) = house_quotes(mark, self.deps.slippage_bps);
                    best_bid = best_bid.max(Some(bid));
                    best_ask = Some(best_ask.map_or(ask, |a| a.min(ask)));
                    last = Some(mark);
                }
                (
                    None,
                    Effects::default(),
                    BookReply::Quote {
                        best_bid,
                        best_ask,
                        last,
                    },
                )
            }
        };
        self.release(Release {
            ack,
            effects,
            answer: Some(Held::Book(reply, respond)),
        });
    }

    /// The rejection of a new limit order priced outside the band around the last trade
    /// (the start price before any). Not journaled: the band is configuration, and replay
    /// must not depend on it. A resubmitted order gets its first answer instead.
    fn outside_band(&self, order: &Order) -> Option<OrderState> {
        let Kind::Limit { price } = order.kind else {
            return None;
        };
        if self.state.order(order.id).is_some() {
            return None;
        }
        let reference = match self.market.venue {
            Venue::Mirror => self.mark.or(self.state.last_price()),
            Venue::Exchange => self.state.last_price(),
        }
        .unwrap_or(self.market.initial_price);
        let (low, high) = price_band(reference, self.deps.price_band_pct);
        if (low..=high).contains(&price) {
            return None;
        }
        let mut state = OrderState::new(order.id);
        state.status = Status::Rejected;
        state.reject = Some(Reject::OutsideBand);
        Some(state)
    }

    /// Matches an order of a mirror market against the users' orders and the house's quotes
    /// around the feed's price, then fills whatever that price now crosses. Before the
    /// feed's first price a market order is refused (nothing prices it) and a limit order
    /// meets the users' orders only.
    fn submit_mirrored(&mut self, order: Order, ts: i64, respond: Responder<BookReply>) {
        let Some(mark) = self.mark else {
            let (ack, effects, reply) = match order.kind {
                Kind::Market { .. } if self.state.order(order.id).is_none() => (
                    None,
                    Effects::default(),
                    BookReply::Failed(format!(
                        "{} has no price from its feed yet; retry",
                        self.market.symbol
                    )),
                ),
                _ => self.command(Command::Submit { order, ts }),
            };
            return self.release(Release {
                ack,
                effects,
                answer: Some(Held::Book(reply, respond)),
            });
        };
        let (bid, ask) = house_quotes(mark, self.deps.slippage_bps);
        let (ack, effects, reply) = self.command(Command::SubmitAt {
            order,
            ts,
            bid,
            ask,
        });
        self.release(Release {
            ack,
            effects,
            answer: Some(Held::Book(reply, respond)),
        });
        // A limit order between the feed's price and the house's quote rests, and the
        // price already crosses it: it fills at its own price now, not at the next trade.
        let (ack, effects, _) = self.command(Command::Mark { price: mark, ts });
        if ack.is_some() {
            self.release(Release {
                ack,
                effects,
                answer: None,
            });
        }
    }

    /// Moves orders on in time at `now`: expires what ran out, then, once the market is
    /// open, lets the reserved orders meet the book. Runs every second and before every
    /// message; cheap when nothing is due.
    fn clock(&mut self, now: i64) {
        let expired = self.due_to_expire(now);
        if !expired.is_empty() {
            tracing::info!(symbol = %self.market.symbol, orders = expired.len(), "orders expired (day orders after the close, reserved ones after trading.reserve_days)");
            self.run(Command::Expire {
                order_ids: expired,
                ts: now,
            });
        }
        if self.state.reserved().len() > 0 && self.market.is_open(now) {
            self.open(now);
        }
    }

    /// The market opened: the reserved orders meet the book, in the order they came. A
    /// mirror market waits for its feed's first price (the house quotes around it).
    fn open(&mut self, ts: i64) {
        let quotes = match (self.market.venue, self.mark) {
            (Venue::Exchange, _) => None,
            (Venue::Mirror, Some(mark)) => Some(house_quotes(mark, self.deps.slippage_bps)),
            (Venue::Mirror, None) => return,
        };
        tracing::info!(
            symbol = %self.market.symbol,
            orders = self.state.reserved().len(),
            "market open: reserved orders go to the book"
        );
        self.run(Command::Open { ts, quotes });
        if let Some(price) = self.mark.filter(|_| self.market.venue == Venue::Mirror) {
            // As after any mirror order: the price may already cross what now rests.
            self.run(Command::Mark { price, ts });
        }
    }

    /// The orders whose time ran out by `now`: reserved ones older than
    /// `trading.reserve_days`, and day orders rested before the close that came since.
    /// Called before every message: when the oldest of each is not due (the usual case),
    /// it looks at nothing else.
    fn due_to_expire(&mut self, now: i64) -> Vec<u64> {
        let reserve_ms = self.deps.reserve_ms;
        let ran_out = |at: i64| at.saturating_add(reserve_ms) <= now;
        let mut due = Vec::new();
        if self
            .state
            .reserved()
            .next()
            .is_some_and(|(at, _)| ran_out(*at))
        {
            due.extend(
                self.state
                    .reserved()
                    .filter(|(at, _)| ran_out(*at))
                    .map(|(_, o)| o.id),
            );
        }
        let Some(&(oldest, _)) = self.state.day_orders_by_time().next() else {
            return due;
        };
        let ends = match self.day_due {
            Some((since, ends)) if since == oldest => ends,
            _ => {
                let ends = self.day_ends(oldest);
                self.day_due = Some((oldest, ends));
                ends
            }
        };
        if ends <= now {
            // The close after a time never comes before the close after an earlier one:
            // the longest-resting day orders are due first, and the first one not due
            // ends the list.
            due.extend(
                self.state
                    .day_orders_by_time()
                    .take_while(|(since, _)| self.day_ends(*since) <= now)
                    .map(|(_, id)| *id),
            );
        }
        due
    }

    /// When a day order resting since `since` expires: the market's next close, or for a
    /// market that never closes, the end of that UTC day.
    fn day_ends(&self, since: i64) -> i64 {
        const DAY_MS: i64 = 86_400_000;
        self.market
            .hours
            .as_ref()
            .and_then(|(_, h)| h.next_close(since))
            .unwrap_or_else(|| {
                since
                    .div_euclid(DAY_MS)
                    .saturating_add(1)
                    .saturating_mul(DAY_MS)
            })
    }

    /// Applies a command of the book's own clock and releases its effects (nobody waits
    /// for an answer).
    fn run(&mut self, cmd: Command) {
        let (ack, effects, _) = self.command(cmd);
        if ack.is_some() {
            self.release(Release {
                ack,
                effects,
                answer: None,
            });
        }
    }

    /// Queues a release; a book whose release task is gone stops.
    fn release(&mut self, release: Release) {
        if let Err(mpsc::error::SendError(r)) = self.release.send(release) {
            self.stop = true;
            if let Some(answer) = r.answer {
                answer.fail("the book stopped".into());
            }
        }
    }

    /// Applies a command and submits its journal entry (not waiting); returns the write to
    /// wait for, the effects to release after it, and the answer.
    fn command(&mut self, cmd: Command) -> (Option<Ack>, Effects, BookReply) {
        let out = self.state.apply(&cmd);
        let reply = match out.answer {
            Answer::Order(s) => BookReply::Order(s),
            Answer::NotFound => BookReply::NotFound,
        };
        if !out.changed {
            return (None, Effects::default(), reply);
        }
        let entry = match bourse_storage::codec::encode(&cmd) {
            Ok(e) => e,
            Err(e) => {
                // Memory changed but cannot be journaled: stop and rebuild.
                self.stop = true;
                return (
                    None,
                    Effects::default(),
                    BookReply::Failed(format!("encoding a journal entry: {e}")),
                );
            }
        };
        self.seq += 1;
        let events = if self.deps.events {
            crate::events::book(&self.market, self.seq, cmd.ts(), &out)
        } else {
            Vec::new()
        };
        let write = Write::Journal {
            kind: KIND.into(),
            key: self.market.symbol.clone(),
            seq: self.seq,
            entry,
        };
        let ack = self.shared.lease.submit(write.with_events(events));
        let effects = self.effects(&cmd, &out);
        self.since_snapshot += 1;
        if self.since_snapshot >= self.deps.snapshot_every {
            self.write_snapshot();
        }
        (Some(ack), effects, reply)
    }

    /// What the command makes visible: the changed levels on `book:S` (numbered now, sent
    /// on release), the changed orders for their accounts (except the asker's own order: its
    /// answer carries it) and the fills for the symbol.
    fn effects(&mut self, cmd: &Command, out: &Outcome) -> Effects {
        let ts = cmd.ts();
        let asked = match cmd {
            Command::Submit { order, .. } | Command::SubmitAt { order, .. } => order.id,
            Command::Cancel { order_id, .. } | Command::Void { order_id, .. } => *order_id,
            Command::Reserve { order, .. } => order.id,
            Command::Mark { .. } | Command::Open { .. } | Command::Expire { .. } => 0,
        };
        let mut effects = Effects {
            reports: out
                .updates
                .iter()
                .filter(|(_, s)| s.order_id != asked)
                .copied()
                .collect(),
            ..Effects::default()
        };
        if !out.levels.is_empty() {
            let engine = self.state.engine();
            let levels: Vec<(Side, u64, u64)> = out
                .levels
                .iter()
                .map(|(side, p)| (*side, *p, engine.level_qty(*side, *p)))
                .collect();
            let data = view::delta(&self.market, &levels).to_string();
            effects
                .events
                .push(self.log.publish(&self.channel, ts, data, false));
        }
        // A mirror market's ticks are its feed's; its users' fills show on their orders.
        if self.market.venue == Venue::Exchange {
            effects.trades = out.fills.iter().map(fill_trade).collect();
        }
        effects
    }

    fn forget_gone_nodes(&mut self) {
        let gone: Vec<String> =
            std::mem::take(&mut *self.shared.gone.lock().unwrap_or_else(|p| p.into_inner()));
        for node in gone {
            self.log.unsubscribe(&self.channel, &node);
        }
    }

    fn write_snapshot(&mut self) {
        let bytes = match bourse_storage::codec::encode(&self.state.snapshot()) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(symbol = %self.market.symbol, error = %e, "encoding a book snapshot failed");
                return;
            }
        };
        // Not awaited: the writer applies it in order after the entries it covers.
        let _ = self.shared.lease.submit(Write::Snapshot {
            kind: KIND.into(),
            key: self.market.symbol.clone(),
            seq: self.seq,
            state: bytes,
        });
        self.since_snapshot = 0;
    }
}

/// How often [`keep_awake`] wakes the books a node owns.
pub const WAKE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps every book this node owns active until `stop`: a book activates when first asked,
/// and one that moved here (a node failed or left) would otherwise miss its market's open
/// and close until someone asked about it.
pub async fn keep_awake(
    sharding: Sharding,
    markets: Markets,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        for market in markets.iter() {
            if sharding.owns(KIND, &market.symbol)
                && let Err(e) = sharding.send::<BookEntity>(&market.symbol, BookMsg::Wake)
            {
                tracing::debug!(symbol = %market.symbol, error = %e, "could not wake a book");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(WAKE_EVERY) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// A fill as the symbol takes it: its book trade id and the trade.
fn fill_trade(f: &state::Fill) -> (u64, TradeInput) {
    (
        f.trade_id,
        TradeInput {
            price: f.price,
            qty: f.qty,
            side: tick_side(f.taker_side),
        },
    )
}

/// Tells a mirror book its symbol's last price (its start price before any trade).
async fn fetch_mark(sharding: Sharding, symbol: String) {
    match sharding.ask::<Symbol>(&symbol, SymbolMsg::Ticker).await {
        Ok(SymbolReply::Ticker(t)) => {
            if let Err(e) = sharding.send::<BookEntity>(&symbol, BookMsg::Mark(t.last)) {
                tracing::debug!(%symbol, error = %e, "the price did not reach the book");
            }
        }
        Ok(_) => {}
        // The symbol's activation, or the feed's next trade, tells the book instead.
        Err(e) => tracing::debug!(%symbol, error = %e, "the book could not ask its symbol's price"),
    }
}

/// Hands fills to the symbol; one lost here is re-sent by the book's next recovery.
fn send_fills(sharding: &Sharding, symbol: &str, fills: Vec<(u64, TradeInput)>) {
    if let Err(e) = sharding.send::<Symbol>(symbol, SymbolMsg::BookFills(fills)) {
        tracing::warn!(%symbol, error = %e, "book fills did not reach the symbol");
    }
}

fn report(sharding: &Sharding, owner: u64, state: OrderState) {
    if let Err(e) = sharding.send::<Account>(&owner.to_string(), AccountMsg::Update(state)) {
        // The account's reconciliation poll picks the state up later.
        tracing::debug!(owner, error = %e, "order report not delivered");
    }
}

/// Lets answers and effects out in order, each once its journal write is durable. After a
/// failed write nothing more is released: those changes never happened as far as anyone
/// can tell, and the entity rebuilds from storage.
async fn run_releases(
    mut queue: mpsc::UnboundedReceiver<Release>,
    shared: Arc<Shared>,
    sharding: Sharding,
    symbol: String,
) {
    let mut batch = Vec::new();
    while let Some(first) = queue.recv().await {
        // Everything already queued goes out together: one tick message to the symbol per
        // batch, however many fills it holds.
        batch.push(first);
        while batch.len() < 256 {
            match queue.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut trades = Vec::new();
        for r in batch.drain(..) {
            let durable = match r.ack {
                Some(ack) if !shared.lease.is_lost() => match ack.wait().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(%symbol, error = %e, "book journal write failed; the book restarts from storage");
                        shared.lease.lose();
                        false
                    }
                },
                _ => !shared.lease.is_lost(),
            };
            if !durable {
                if let Some(answer) = r.answer {
                    answer.fail(format!("book {symbol} could not journal; retry"));
                }
                continue;
            }
            for (event, nodes) in &r.effects.events {
                for node in nodes {
                    if sharding.deliver(KIND, &symbol, node, event) == Delivery::NoSubscribers {
                        shared
                            .gone
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(node.clone());
                    }
                }
            }
            for (owner, state) in r.effects.reports {
                report(&sharding, owner, state);
            }
            trades.extend(r.effects.trades);
            if let Some(answer) = r.answer {
                answer.send();
            }
        }
        if !trades.is_empty() {
            send_fills(&sharding, &symbol, trades);
        }
    }
}
