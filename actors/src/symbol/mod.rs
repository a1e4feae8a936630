//! The `symbol` entity (key: `KRW-BTC`): last trades, rolling 24h ticker, open candles of
//! every interval, the streams `ticker:S`, `trades:S`, `candles:S:I`, and the trigger index
//! of the price alerts on the symbol ([`alerts`]).
//!
//! Durable as ticks and closed candles. Ticks are submitted in order without waiting; a
//! closed candle is committed *before* its `closed:true` event goes out, so a client never
//! sees a close that a restart could take back. On activation the entity rebuilds its open
//! candles from the newest durable trade (its 1s bucket's ticks plus the stored finer
//! candles of each coarser bucket), closes what ended while it was down, and starts a new
//! stream epoch.

pub mod alerts;
pub mod candles;
pub mod ticker;
pub mod view;

use crate::alert::index::TriggerIndex;
use crate::alert::{Condition, NewAlert};
use crate::book::{BookEntity, BookMsg};
use crate::channel::Channel;
use crate::clock::now_ms;
use crate::feed::{FeedTrade, TradeInput};
use crate::trading::Refusal;
use bourse_cluster::{
    Entity, EntityContext, EntityError, Sharding, StreamGrant, StreamLog, StreamRequest,
};
use bourse_config::{Market, Markets, Venue};
use bourse_storage::{AlertRecord, Candle, Interval, Lease, MarketStore, StoreError, Tick, Write};
use candles::CandleSet;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use ticker::{Rolling24h, TickerStats};

/// The entity kind name.
pub const KIND: &str = "symbol";
/// Trades kept in memory for `GET /trades` (its maximum `limit`).
pub const RECENT_TRADES: usize = 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// What a symbol accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SymbolMsg {
    /// Trades from the simulated feed, in order.
    Trades(Vec<TradeInput>),
    /// Fills of the symbol's own book with their book trade ids, in order: those at or below
    /// the newest already stored are skipped, since a recovering book re-sends its recent
    /// fills (see [`Tick::book_trade`]).
    BookFills(Vec<(u64, TradeInput)>),
    /// Trades from an external feed (Kafka), in source order: those at or below the newest
    /// source sequence already stored are duplicates and skipped. Answered once the rest
    /// are durable, so the feed may then commit its position.
    Ingest(Vec<FeedTrade>),
    /// The current ticker.
    Ticker,
    /// The newest trades, newest first.
    RecentTrades { limit: usize },
    /// The open candle of an interval.
    OpenCandle(Interval),
    /// Stores a new price-alert rule on this symbol and arms it.
    CreateAlert(NewAlert),
    /// Arms a rule again from `armed_from` (its entity's answer to a firing).
    ArmAlert {
        alert_id: u64,
        condition: Condition,
        armed_from: i64,
    },
    /// Drops a deleted rule from the trigger index.
    DisarmAlert { alert_id: u64 },
}

/// What a symbol answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SymbolReply {
    Done,
    /// An [`SymbolMsg::Ingest`] batch is durable: how many trades it added and skipped.
    Ingested {
        applied: usize,
        duplicates: usize,
    },
    Ticker(TickerStats),
    Trades(Vec<Tick>),
    OpenCandle(Option<Candle>),
    AlertCreated(AlertRecord),
    Refused(Refusal),
}

/// What every symbol entity on a node shares.
pub struct SymbolDeps {
    pub store: Arc<dyn MarketStore>,
    pub markets: Markets,
    /// Events kept per channel for resume.
    pub replay_events: usize,
    /// The window `change_pct` alerts measure from (ms, whole minutes, at most a day).
    pub alert_window_ms: i64,
    /// Whether trades also go to the outbox for the Kafka event relay.
    pub events: bool,
}

/// An event of a trade batch, published once the batch's closed candles are durable.
enum Pending {
    Trade(String),
    Closed(Interval, Candle),
}

/// Which of a symbol's channels an event goes to.
#[derive(Clone, Copy)]
enum Chan {
    Ticker,
    Trades,
    Candles(Interval),
}

/// Channel names of one symbol, built once.
struct Names {
    ticker: String,
    trades: String,
    candles: Vec<String>,
}

/// The entity state.
pub struct Symbol {
    market: Market,
    deps: Arc<SymbolDeps>,
    sharding: Sharding,
    /// This activation's lease: every write carries it; storage refuses it once another
    /// activation took the symbol over.
    lease: Lease,
    names: Names,
    log: StreamLog,
    candles: CandleSet,
    window: Rolling24h,
    recent: VecDeque<Tick>,
    next_trade_id: u64,
    /// The sources' newest positions stored.
    position: Position,
    last: Option<(u64, i64)>,
    /// Armed price-alert rules on this symbol.
    triggers: TriggerIndex,
}

/// Each of `symbols`' last price in ticks, asked of the symbols side by side; a symbol that
/// does not answer is left out (a position in it is then valued at cost).
pub async fn last_prices<'a>(
    sharding: &Sharding,
    symbols: impl Iterator<Item = &'a String>,
) -> std::collections::BTreeMap<String, u64> {
    let asks = symbols.map(|symbol| async move {
        let answer = sharding.ask::<Symbol>(symbol, SymbolMsg::Ticker).await;
        (symbol.clone(), answer)
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|(symbol, answer)| match answer {
            Ok(SymbolReply::Ticker(t)) => Some((symbol, t.last)),
            _ => None,
        })
        .collect()
}

fn storage(e: StoreError) -> EntityError {
    EntityError::new(e.to_string())
}

impl Entity for Symbol {
    const KIND: &'static str = KIND;
    // Closes candles on time even when no trade comes.
    const TICK_EVERY: Option<Duration> = Some(Duration::from_millis(200));

    type Msg = SymbolMsg;
    type Reply = SymbolReply;
    type Deps = SymbolDeps;

    async fn activate(ctx: &EntityContext, deps: &Arc<SymbolDeps>) -> Result<Self, EntityError> {
        let market = deps
            .markets
            .get(&ctx.key)
            .cloned()
            .ok_or_else(|| EntityError::new(format!("unknown symbol '{}'", ctx.key)))?;
        let store = &deps.store;
        let symbol_name = market.symbol.clone();
        let symbol = symbol_name.as_str();
        let lease = crate::journal::take_over(store, KIND, symbol, &ctx.sharding).await?;
        let recent: VecDeque<Tick> = store
            .recent_ticks(symbol, RECENT_TRADES)
            .await
            .map_err(storage)?
            .into_iter()
            .rev()
            .collect();
        let last = recent.back().map(|t| (t.price, t.ts));
        let next_trade_id = recent.back().map_or(1, |t| t.trade_id + 1);
        let position = recent.back().map_or(Position::default(), |t| Position {
            feed_seq: t.feed_seq,
            book_trade: t.book_trade,
        });
        let mut candles = match last {
            Some((_, t_last)) => restore_candles(store.as_ref(), symbol, t_last).await?,
            None => CandleSet::new(),
        };
        let now = now_ms().max(last.map_or(0, |l| l.1));
        // Buckets that ended while the symbol was down close now.
        let closed = candles.advance(now);
        if !closed.is_empty() {
            lease
                .commit(Write::Candles {
                    symbol: symbol.to_string(),
                    candles: closed.clone(),
                })
                .await
                .map_err(storage)?;
        }
        let minute = Interval::M1.bucket(now);
        let window = Rolling24h::new(
            store
                .candles_between(symbol, Interval::M1, minute - DAY_MS + 60_000, minute)
                .await
                .map_err(storage)?,
        );
        let epoch = bourse_cluster::stream::new_epoch(now_ms());
        ctx.sharding.publisher_activated(KIND, symbol, &epoch);
        let names = Names {
            ticker: format!("ticker:{symbol}"),
            trades: format!("trades:{symbol}"),
            candles: Interval::ALL
                .iter()
                .map(|i| format!("candles:{symbol}:{}", i.as_str()))
                .collect(),
        };
        let mut entity = Symbol {
            log: StreamLog::new(epoch, deps.replay_events),
            market,
            deps: deps.clone(),
            sharding: ctx.sharding.clone(),
            lease,
            names,
            candles,
            window,
            recent,
            next_trade_id,
            position,
            last,
            triggers: alerts::load(store.as_ref(), symbol, now - alerts::REPLAY_MS).await?,
        };
        entity.replay_alerts(now - alerts::REPLAY_MS);
        for (interval, c) in closed {
            entity.publish_closed(interval, &c, now);
        }
        tracing::info!(
            symbol,
            epoch = entity.log.epoch(),
            next_trade_id,
            feed_seq = position.feed_seq,
            book_trade = position.book_trade,
            "symbol activated"
        );
        Ok(entity)
    }

    async fn handle(&mut self, msg: SymbolMsg, _ctx: &EntityContext) -> SymbolReply {
        match msg {
            SymbolMsg::Trades(trades) => {
                let at = self.position;
                self.on_trades(trades.into_iter().map(|t| (t, at))).await;
                SymbolReply::Done
            }
            // A mirror market's ticks are its feed's alone.
            SymbolMsg::BookFills(_) if self.market.venue == Venue::Mirror => SymbolReply::Done,
            SymbolMsg::BookFills(fills) => {
                let at = self.position;
                let fresh: Vec<(TradeInput, Position)> = fills
                    .into_iter()
                    .filter(|(id, _)| *id > at.book_trade)
                    .map(|(book_trade, t)| (t, Position { book_trade, ..at }))
                    .collect();
                self.on_trades(fresh.into_iter()).await;
                SymbolReply::Done
            }
            SymbolMsg::Ingest(trades) => self.ingest(trades).await,
            SymbolMsg::Ticker => SymbolReply::Ticker(self.ticker_stats()),
            SymbolMsg::RecentTrades { limit } => {
                SymbolReply::Trades(self.recent.iter().rev().take(limit).cloned().collect())
            }
            SymbolMsg::OpenCandle(interval) => {
                SymbolReply::OpenCandle(self.candles.open_candle(interval))
            }
            SymbolMsg::CreateAlert(new) => self.create_alert(new).await,
            SymbolMsg::ArmAlert {
                alert_id,
                condition,
                armed_from,
            } => {
                self.triggers.arm(alert_id, condition, armed_from, now_ms());
                SymbolReply::Done
            }
            SymbolMsg::DisarmAlert { alert_id } => {
                self.triggers.disarm(alert_id);
                SymbolReply::Done
            }
        }
    }

    async fn on_tick(&mut self, _ctx: &EntityContext) {
        let now = now_ms().max(self.last.map_or(0, |l| l.1));
        let closed = self.candles.advance(now);
        self.window.expire(now);
        if closed.is_empty() {
            return;
        }
        self.persist_closed(&closed).await;
        if self.lease.is_lost() {
            return;
        }
        for (interval, c) in closed {
            self.publish_closed(interval, &c, now);
        }
    }

    fn subscribe(
        &mut self,
        req: StreamRequest,
        _ctx: &EntityContext,
    ) -> Result<StreamGrant, String> {
        let channel = Channel::parse(&req.channel, &self.deps.markets)?;
        if channel.publisher() != (KIND, self.market.symbol.clone()) {
            return Err(format!(
                "channel '{}' is not published by {}",
                req.channel, self.market.symbol
            ));
        }
        let snapshot = match &channel {
            Channel::Ticker(_) => {
                Some(view::ticker(&self.market, &self.ticker_stats()).to_string())
            }
            Channel::Trades(_) | Channel::Book(_) | Channel::Private(..) | Channel::Chat(_) => None,
            Channel::Candles(_, interval) => self
                .candles
                .open_candle(*interval)
                .map(|c| view::candle(&self.market, &c, false).to_string()),
        };
        Ok(self
            .log
            .subscribe(&req, now_ms(), snapshot, channel.conflatable()))
    }

    fn unsubscribe(&mut self, channel: &str, node: &str) {
        self.log.unsubscribe(channel, node);
    }

    fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "epoch": self.log.epoch(),
            "lease": self.lease.fence().epoch,
            "last_price": self.last.map(|(p, _)| self.market.tick.format(p)),
            "last_trade_at": self.last.map(|(_, ts)| ts),
            "next_trade_id": self.next_trade_id,
            "alerts_armed": self.triggers.len(),
        })
    }

    fn fenced(&self) -> bool {
        self.lease.is_lost()
    }

    async fn passivate(&mut self, _ctx: &EntityContext) {
        self.lease.release().await;
    }
}

/// Rebuilds open candles as of the newest durable trade at `t_last`.
async fn restore_candles(
    store: &dyn MarketStore,
    symbol: &str,
    t_last: i64,
) -> Result<CandleSet, EntityError> {
    let s1: Vec<(u64, u64)> = store
        .ticks_since(symbol, Interval::S1.bucket(t_last))
        .await
        .map_err(storage)?
        .into_iter()
        .filter(|t| t.ts <= t_last)
        .map(|t| (t.price, t.qty))
        .collect();
    let mut finer: HashMap<Interval, Vec<Candle>> = HashMap::new();
    for level in &Interval::ALL[1..] {
        let Some(f) = level.finer() else { continue };
        let got = store
            .candles_between(symbol, f, level.bucket(t_last), f.bucket(t_last))
            .await
            .map_err(storage)?;
        finer.insert(*level, got);
    }
    Ok(CandleSet::restore(t_last, &s1, |level| {
        finer.remove(&level).unwrap_or_default()
    }))
}

/// The newest position of each trade source a symbol has applied, stored with every trade
/// (see [`Tick::feed_seq`] and [`Tick::book_trade`]).
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    feed_seq: u64,
    book_trade: u64,
}

impl Symbol {
    fn ticker_stats(&self) -> TickerStats {
        self.window.stats(
            self.candles.open_candle(Interval::M1),
            self.last,
            self.market.initial_price,
        )
    }

    /// Skips the feed trades this symbol already stored, applies the rest, and answers once
    /// they are durable (or that they are not: the feed then keeps its position and tries
    /// again, here or at the symbol's next activation).
    async fn ingest(&mut self, trades: Vec<FeedTrade>) -> SymbolReply {
        let total = trades.len();
        let at = self.position;
        let mut newest = at.feed_seq;
        let fresh: Vec<(TradeInput, Position)> = trades
            .into_iter()
            .filter(|t| {
                let is_new = t.seq > newest;
                newest = newest.max(t.seq);
                is_new
            })
            .map(|t| {
                let feed_seq = t.seq;
                (t.trade, Position { feed_seq, ..at })
            })
            .collect();
        let applied = fresh.len();
        if applied > 0 && !self.on_trades(fresh.into_iter()).await {
            return SymbolReply::Refused(Refusal::Unavailable(format!(
                "{}: trades not stored (this activation lost its lease or storage failed)",
                self.market.symbol
            )));
        }
        SymbolReply::Ingested {
            applied,
            duplicates: total - applied,
        }
    }

    /// Numbers, stores and then publishes a batch of trades, each with the sources' positions
    /// to record beside it. Returns whether the batch is durable.
    async fn on_trades(
        &mut self,
        trades: impl ExactSizeIterator<Item = (TradeInput, Position)>,
    ) -> bool {
        if trades.len() == 0 {
            return true;
        }
        // The symbol is the clock of its trades: time never runs backwards on a channel.
        let ts = now_ms().max(self.last.map_or(0, |l| l.1));
        let mut ticks = Vec::with_capacity(trades.len());
        let mut prices = Vec::with_capacity(trades.len());
        let mut closed_all = Vec::new();
        let mut trade_events = Vec::with_capacity(trades.len());
        let mut outbox = Vec::new();
        for (input, at) in trades {
            prices.push(input.price);
            let closed = self.candles.apply_trade(ts, input.price, input.qty);
            for (interval, c) in closed {
                closed_all.push((interval, c));
                // Close events go out in order with the trades that caused them.
                trade_events.push(Pending::Closed(interval, c));
            }
            let tick = Tick {
                symbol: self.market.symbol.clone(),
                trade_id: self.next_trade_id,
                ts,
                price: input.price,
                qty: input.qty,
                side: input.side,
                feed_seq: at.feed_seq,
                book_trade: at.book_trade,
            };
            self.position = at;
            self.next_trade_id += 1;
            self.last = Some((tick.price, ts));
            if self.recent.len() == RECENT_TRADES {
                self.recent.pop_front();
            }
            self.recent.push_back(tick.clone());
            let shown = view::trade(&self.market, &tick);
            trade_events.push(Pending::Trade(shown.to_string()));
            if self.deps.events {
                outbox.push(crate::events::trade(&self.market, &tick, shown));
            }
            ticks.push(tick);
        }
        // Durable before published: a trade the stream shows is one storage holds, and a
        // fenced (stale) activation publishes nothing.
        let ticks_ack = self.lease.commit(Write::Ticks(ticks).with_events(outbox));
        if !closed_all.is_empty() {
            self.persist_closed(&closed_all).await;
        }
        if let Err(e) = ticks_ack.await {
            self.on_write_error(e);
        }
        if self.lease.is_lost() {
            return false;
        }
        for event in trade_events {
            match event {
                Pending::Trade(data) => self.publish(Chan::Trades, ts, data, false),
                Pending::Closed(interval, c) => self.publish_closed(interval, &c, ts),
            }
        }
        // One update per interval per batch: the open candle after the whole batch.
        for (interval, open) in Interval::ALL.iter().zip(self.candles.open_candles()) {
            if let Some(c) = open {
                let data = view::candle(&self.market, &c, false).to_string();
                self.publish(Chan::Candles(*interval), ts, data, false);
            }
        }
        let ticker = view::ticker(&self.market, &self.ticker_stats()).to_string();
        self.publish(Chan::Ticker, ts, ticker, true);
        // Alerts see only durable trades, in order.
        self.fire_alerts(&prices, ts);
        if let Some(&price) = prices.last() {
            self.mark_book(price);
        }
        true
    }

    /// Tells a mirror market's book its feed's latest price, which fills users' orders.
    fn mark_book(&self, price: u64) {
        if self.market.venue != Venue::Mirror {
            return;
        }
        let symbol = &self.market.symbol;
        if let Err(e) = self
            .sharding
            .send::<BookEntity>(symbol, BookMsg::Mark(price))
        {
            tracing::debug!(%symbol, error = %e, "the feed's price did not reach the book");
        }
    }

    async fn persist_closed(&mut self, closed: &[(Interval, Candle)]) {
        let write = Write::Candles {
            symbol: self.market.symbol.clone(),
            candles: closed.to_vec(),
        };
        if let Err(e) = self.lease.commit(write).await {
            self.on_write_error(e);
        }
    }

    /// Logs a failed write, which has marked the lease lost: the symbol stops without
    /// publishing, and its next activation starts from the trades storage holds.
    fn on_write_error(&self, e: StoreError) {
        match e {
            StoreError::Fenced { .. } => {
                tracing::warn!(symbol = %self.market.symbol, error = %e, "fenced: another activation owns this symbol now");
            }
            e => {
                tracing::error!(symbol = %self.market.symbol, error = %e, "persisting market data failed")
            }
        }
    }

    fn publish_closed(&mut self, interval: Interval, c: &Candle, ts: i64) {
        if interval == Interval::M1 {
            self.window.push_closed_minute(*c, ts);
        }
        let data = view::candle(&self.market, c, true).to_string();
        self.publish(Chan::Candles(interval), ts, data, false);
    }

    fn publish(&mut self, chan: Chan, ts: i64, data: String, conflatable: bool) {
        // Borrowed from `names` beside `&mut log`: no name is cloned per event.
        let channel = match chan {
            Chan::Ticker => &self.names.ticker,
            Chan::Trades => &self.names.trades,
            Chan::Candles(i) => &self.names.candles[i.index()],
        };
        // One message per interested node, never one per client: each node's hub fans out.
        self.sharding.publish(
            &mut self.log,
            KIND,
            &self.market.symbol,
            channel,
            ts,
            data,
            conflatable,
        );
    }
}
