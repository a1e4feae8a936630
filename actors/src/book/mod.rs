//! Order books: the pure matching [`engine`], the deterministic [`state`] around it, and the
//! `book` entity (key: the symbol) that journals commands before acknowledging them.
//!
//! Every command that changes the book is appended to the book's journal under its lease
//! (epoch-fenced) and only then answered, published on `book:S`, reported to the owners'
//! accounts and handed to the symbol as ticks. A snapshot every
//! `trading.snapshot_every` entries bounds recovery: snapshot, then replay the rest. After a
//! recovery the book re-sends the state of every order the replayed entries touched, since
//! the reports of its last moments may have died with it (accounts ignore states they
//! already have).

pub mod engine;
pub mod state;
pub mod view;

use crate::account::{Account, AccountMsg};
use crate::feed::TradeInput;
use crate::symbol::{Symbol, SymbolMsg, now_ms};
use crate::trading::{OrderState, tick_side};
use bourse_cluster::hub::Delivery;
use bourse_cluster::{
    Entity, EntityContext, EntityError, Sharding, StreamGrant, StreamLog, StreamRequest, wire,
};
use bourse_config::{Market, Markets};
use bourse_storage::{Fence, MarketStore, StoreError, Write};
use engine::{Order, Side};
use serde::{Deserialize, Serialize};
use state::{Answer, BookState, Command, Outcome};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The entity kind name.
pub const KIND: &str = "book";
/// Levels per side in a `book:S` snapshot (PROTOCOL.md).
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
}

/// What every book on a node shares.
pub struct BookDeps {
    pub store: Arc<dyn MarketStore>,
    pub markets: Markets,
    pub replay_events: usize,
    pub snapshot_every: u64,
}

/// The entity state.
pub struct BookEntity {
    market: Market,
    deps: Arc<BookDeps>,
    sharding: Sharding,
    fence: Fence,
    /// Fenced by a newer activation, or a journal write failed: memory may be ahead of
    /// storage, so the shell stops the entity and the next message rebuilds it.
    stop: bool,
    state: BookState,
    /// The last journal position written.
    seq: u64,
    since_snapshot: u64,
    log: StreamLog,
    channel: String,
}

fn storage(e: StoreError) -> EntityError {
    EntityError::new(e.to_string())
}

impl Entity for BookEntity {
    const KIND: &'static str = KIND;
    // Resting orders must keep matching whether or not anyone asks: never idle-stopped.
    const PASSIVATE_WHEN_IDLE: bool = false;

    type Msg = BookMsg;
    type Reply = BookReply;
    type Deps = BookDeps;

    async fn activate(ctx: &EntityContext, deps: &Arc<BookDeps>) -> Result<Self, EntityError> {
        let market = deps
            .markets
            .get(&ctx.key)
            .cloned()
            .ok_or_else(|| EntityError::new(format!("unknown symbol '{}'", ctx.key)))?;
        let store = &deps.store;
        store.flush().await.map_err(storage)?;
        let fence = store
            .acquire_lease(KIND, &ctx.key, ctx.sharding.node())
            .await
            .map_err(storage)?;
        let (mut seq, mut state) = match store.snapshot(KIND, &ctx.key).await.map_err(storage)? {
            Some((seq, bytes)) => {
                let snap = wire::decode(&bytes)
                    .map_err(|e| EntityError::new(format!("book {} snapshot: {e}", ctx.key)))?;
                (seq, BookState::restore(snap))
            }
            None => (0, BookState::new()),
        };
        let entries = store
            .journal_after(KIND, &ctx.key, seq)
            .await
            .map_err(storage)?;
        let mut touched = BTreeSet::new();
        for (at, bytes) in &entries {
            let cmd: Command = wire::decode(bytes)
                .map_err(|e| EntityError::new(format!("book {} entry {at}: {e}", ctx.key)))?;
            let out = state.apply(&cmd);
            touched.extend(out.updates.iter().map(|(_, s)| s.order_id));
            seq = *at;
        }
        let epoch = bourse_cluster::stream::new_epoch(now_ms());
        ctx.sharding.publisher_activated(KIND, &ctx.key, &epoch);
        let entity = BookEntity {
            channel: format!("book:{}", ctx.key),
            log: StreamLog::new(epoch, deps.replay_events),
            market,
            deps: deps.clone(),
            sharding: ctx.sharding.clone(),
            fence,
            stop: false,
            state,
            seq,
            since_snapshot: entries.len() as u64,
        };
        // The last reports before a crash may not have reached the accounts.
        for id in touched {
            if let Some(t) = entity.state.order(id) {
                entity.report(t.owner, t.state);
            }
        }
        tracing::info!(
            symbol = %ctx.key,
            journal_seq = entity.seq,
            replayed = entries.len(),
            resting = entity.state.engine().len(),
            "book activated"
        );
        Ok(entity)
    }

    async fn handle(&mut self, msg: BookMsg, _ctx: &EntityContext) -> BookReply {
        let ts = now_ms();
        match msg {
            BookMsg::Submit(order) => self.command(Command::Submit { order, ts }).await,
            BookMsg::Cancel { order_id, owner } => {
                self.command(Command::Cancel {
                    order_id,
                    owner,
                    ts,
                })
                .await
            }
            BookMsg::Void(order_id) => self.command(Command::Void { order_id, ts }).await,
            BookMsg::Query(ids) => BookReply::States(
                ids.iter()
                    .filter_map(|id| self.state.order(*id).map(|t| t.state))
                    .collect(),
            ),
            BookMsg::Depth(depth) => {
                let depth = depth.min(MAX_DEPTH);
                let engine = self.state.engine();
                BookReply::Depth {
                    seq: self.log.seq(&self.channel),
                    bids: engine.depth(Side::Buy, depth),
                    asks: engine.depth(Side::Sell, depth),
                }
            }
            BookMsg::Quote => {
                let (best_bid, best_ask) = self.state.engine().best();
                BookReply::Quote {
                    best_bid,
                    best_ask,
                    last: self.state.last_price(),
                }
            }
        }
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

    fn unsubscribe(&mut self, channel: &str, node: &str) {
        self.log.unsubscribe(channel, node);
    }

    fn fenced(&self) -> bool {
        self.stop
    }

    async fn passivate(&mut self, _ctx: &EntityContext) {
        if self.stop {
            return;
        }
        // A snapshot makes the next activation (on the new owner) quick.
        self.write_snapshot();
        let release = Write::ReleaseLease {
            kind: KIND.into(),
            key: self.market.symbol.clone(),
            epoch: self.fence.epoch,
        };
        if let Err(e) = self.deps.store.submit(release).wait().await {
            tracing::error!(symbol = %self.market.symbol, error = %e, "releasing the book lease failed");
        }
    }
}

impl BookEntity {
    /// Applies, journals, then makes the command's effects visible.
    async fn command(&mut self, cmd: Command) -> BookReply {
        if self.stop {
            return BookReply::Failed(format!("book {} is restarting", self.market.symbol));
        }
        let out = self.state.apply(&cmd);
        if out.changed {
            let entry = match wire::encode(&cmd) {
                Ok(e) => e,
                Err(e) => {
                    self.stop = true;
                    return BookReply::Failed(format!("encoding a journal entry: {e}"));
                }
            };
            let write = Write::Journal {
                kind: KIND.into(),
                key: self.market.symbol.clone(),
                seq: self.seq + 1,
                entry,
            }
            .fenced(&self.fence);
            if let Err(e) = self.deps.store.submit(write).wait().await {
                // Memory is ahead of storage now: stop, and let the next message rebuild.
                tracing::error!(symbol = %self.market.symbol, error = %e, "journal write failed; the book restarts from storage");
                self.stop = true;
                return BookReply::Failed(format!(
                    "book {} could not journal: {e}",
                    self.market.symbol
                ));
            }
            self.seq += 1;
            self.since_snapshot += 1;
            self.effects(&cmd, &out);
            if self.since_snapshot >= self.deps.snapshot_every {
                self.write_snapshot();
            }
        }
        match out.answer {
            Answer::Order(s) => BookReply::Order(s),
            Answer::NotFound => BookReply::NotFound,
        }
    }

    /// Publishes the changed levels, reports changed orders to their accounts (except the
    /// asker's own order: its answer carries it) and hands fills to the symbol.
    fn effects(&mut self, cmd: &Command, out: &Outcome) {
        let ts = match *cmd {
            Command::Submit { ts, .. } | Command::Cancel { ts, .. } | Command::Void { ts, .. } => {
                ts
            }
        };
        let asked = match *cmd {
            Command::Submit { order, .. } => order.id,
            Command::Cancel { order_id, .. } | Command::Void { order_id, .. } => order_id,
        };
        for (owner, s) in &out.updates {
            if s.order_id != asked {
                self.report(*owner, *s);
            }
        }
        if !out.levels.is_empty() {
            let engine = self.state.engine();
            let levels: Vec<(Side, u64, u64)> = out
                .levels
                .iter()
                .map(|(side, p)| (*side, *p, engine.level_qty(*side, *p)))
                .collect();
            let data = view::delta(&self.market, &levels).to_string();
            let (event, nodes) = self.log.publish(&self.channel, ts, data, false);
            for node in nodes {
                let d = self
                    .sharding
                    .deliver(KIND, &self.market.symbol, &node, &event);
                if d == Delivery::NoSubscribers {
                    self.log.unsubscribe(&self.channel, &node);
                }
            }
        }
        if !out.fills.is_empty() {
            let trades = out
                .fills
                .iter()
                .map(|f| TradeInput {
                    price: f.price,
                    qty: f.qty,
                    side: tick_side(f.taker_side),
                })
                .collect();
            if let Err(e) = self
                .sharding
                .send::<Symbol>(&self.market.symbol, SymbolMsg::Trades(trades))
            {
                tracing::warn!(symbol = %self.market.symbol, error = %e, "book fills did not reach the symbol");
            }
        }
    }

    fn report(&self, owner: u64, state: OrderState) {
        if let Err(e) = self
            .sharding
            .send::<Account>(&owner.to_string(), AccountMsg::Update(state))
        {
            // The account's reconciliation poll picks the state up later.
            tracing::debug!(owner, error = %e, "order report not delivered");
        }
    }

    fn write_snapshot(&mut self) {
        let bytes = match wire::encode(&self.state.snapshot()) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(symbol = %self.market.symbol, error = %e, "encoding a book snapshot failed");
                return;
            }
        };
        // Not awaited: the writer applies it in order after the entries it covers.
        let _ = self.deps.store.submit(
            Write::Snapshot {
                kind: KIND.into(),
                key: self.market.symbol.clone(),
                seq: self.seq,
                state: bytes,
            }
            .fenced(&self.fence),
        );
        self.since_snapshot = 0;
    }
}
