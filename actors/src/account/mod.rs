//! Accounts: the pure [`ledger`] (with a [`position`] per market: profit and loss by
//! average cost, shown by [`portfolio`]) and the `account` entity (key: the user id), which is
//! also the coordinator of the order saga (docs/DESIGN.md "Entities"):
//!
//! 1. `Place`: a repeated `client_order_id` answers the original order. Otherwise the hold is
//!    checked (`insufficient_funds`), the order and its hold are journaled (*pending*), and
//!    the book is asked to match it (or, while its market is closed, to keep it *reserved*
//!    for the open: [`crate::book`]).
//! 2. The book journals the match before it answers; the account applies the answer (fills,
//!    release) and journals that before the client hears back.
//! 3. The counterparties' accounts get the book's reports; settlement is idempotent because
//!    a report is the order's cumulative state (see [`crate::trading`]).
//! 4. If the book cannot be reached, the account *voids* the order at the book: the book
//!    either reports the order (it did arrive) or records that it never will accept it, and
//!    only then is the hold released, and the order's `client_order_id` is free again (the
//!    client was told `unavailable`: a retry places it anew). A void that cannot be
//!    delivered either leaves the order
//!    pending and the client gets `unavailable`; the account's clock retries the void until
//!    the book answers, so the hold is released as soon as that is certain.
//! 5. Reports lost on the way (a node died) are recovered by reconciliation: on activation
//!    and every [`RECONCILE_EVERY`], the account asks the books for its open orders' states.
//!
//! Every change to the ledger is journaled (epoch-fenced under the account's lease). A hold
//! (`Hold`) is durable before the book hears of the order, so no crash can leave a
//! matched order without its hold. Applying the book's report (`Apply`) is journaled without
//! waiting: the book's own journal already holds that state durably, and an account that
//! lost the entry gets it back by reconciliation; the writer commits in submission order,
//! so the next awaited hold also covers every report before it. Each order change goes to
//! the user's `session`, which publishes it on `orders`; each fill is also put in the
//! user's inbox.

pub mod ledger;
pub mod portfolio;
pub mod position;
pub mod view;

use crate::alert::NewAlert;
use crate::book::engine::{Kind, Order, Reject, Side};
use crate::book::state::market_buy_protect;
use crate::book::{BookEntity, BookMsg, BookReply};
use crate::clock::now_ms;
use crate::participants;
use crate::rankings::{self, Rankings, RankingsMsg};
use crate::session::{Courier, Private};
use crate::symbol::{Symbol, SymbolMsg, SymbolReply, last_prices};
use crate::trading::{OrderRequest, OrderState, Refusal, Status, order_id, owner_of};
use bourse_cluster::{Entity, EntityContext, EntityError, Sharding};
use bourse_config::Markets;
use bourse_storage::{AlertRecord, Lease, MarketStore, Notification, Write};
use ledger::{Balance, Entry, Ledger, OrderRecord, hold_for};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The entity kind name.
pub const KIND: &str = "account";
/// How often an account asks the books for the state of its open orders.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(10);
/// An order held but not yet confirmed by its book (the saga's open step) for this long is
/// voided by the clock.
pub const PENDING_GRACE_MS: i64 = 2_000;
/// How often an account that holds positions revalues them at the markets' last prices,
/// publishing its `portfolio` when the value moved, while someone watches it.
pub const REVALUE_EVERY: Duration = Duration::from_secs(5);
/// How long one [`AccountMsg::Watch`] keeps the `portfolio` published: the user's session
/// repeats it well within this while a connection subscribes.
pub const WATCH_FOR: Duration = Duration::from_secs(60);

/// What an account accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AccountMsg {
    Place(OrderRequest),
    Cancel(u64),
    Get(u64),
    /// Orders, newest first, optionally of one symbol and open (`Some(true)`) or done.
    List {
        symbol: Option<String>,
        open: Option<bool>,
    },
    Balances,
    /// What the user holds, for the portfolio.
    Portfolio,
    /// A book's report of one of this account's orders.
    Update(OrderState),
    /// A connection subscribes to the user's `portfolio`: publish it for [`WATCH_FOR`]
    /// (told by the user's session; nobody watching, nothing is valued or sent).
    Watch,
    /// A new price alert on `symbol`, made through the user's one account so that the
    /// user's creations queue behind each other and the cap of `max` rules holds.
    CreateAlert {
        symbol: String,
        alert: NewAlert,
        max: usize,
    },
}

/// What an account answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AccountReply {
    /// `created` is false when a `client_order_id` matched an earlier order.
    Placed {
        order: OrderRecord,
        created: bool,
    },
    Order(OrderRecord),
    Orders(Vec<OrderRecord>),
    Balances(BTreeMap<String, Balance>),
    Portfolio(portfolio::Holdings),
    /// The stored rule, armed.
    AlertCreated(AlertRecord),
    Done,
    Error(Refusal),
}

/// What every account on a node shares.
pub struct AccountDeps {
    pub store: Arc<dyn MarketStore>,
    pub markets: Markets,
    /// Demo balances of a new account, in balance units.
    pub grants: Vec<(String, u128)>,
    pub market_protect_pct: u32,
    /// `trading.price_band_pct`, for the words of a rejection (the book decides).
    pub price_band_pct: u32,
    pub max_open_orders: usize,
    pub snapshot_every: u64,
}

/// The entity state.
pub struct Account {
    user: u64,
    key: String,
    deps: Arc<AccountDeps>,
    sharding: Sharding,
    /// Lost when fenced or when a journal write (awaited or not) failed.
    lease: Lease,
    /// Set when memory changed but cannot be journaled: stop and rebuild from storage.
    stop: bool,
    ledger: Ledger,
    seq: u64,
    since_snapshot: u64,
    last_reconcile: Option<Instant>,
    /// Carries order updates to the user's session (`orders`, `portfolio`).
    courier: Courier,
    /// The holdings last stored (`Write::Holdings`); `None` until compared with storage.
    holdings: Option<portfolio::Holdings>,
    /// When `portfolio` was last valued; `None`: value it at the next tick (the holdings
    /// changed, or a new watcher came).
    last_valued: Option<Instant>,
    /// Until when a subscriber is known to watch `portfolio`.
    watched_until: Option<Instant>,
    /// The time of the last stored holdings point: a new one is never stored before it,
    /// whatever this node's clock says.
    holdings_ts: i64,
    /// The `portfolio` event last published.
    published: Option<serde_json::Value>,
}

/// A ledger's stored layouts, the one before positions included.
impl crate::journal::StoredSnapshot for Ledger {
    fn decode(bytes: &[u8]) -> Result<Ledger, bourse_storage::codec::CodecError> {
        Ledger::decode(bytes)
    }
}

impl Entity for Account {
    const KIND: &'static str = KIND;
    const TICK_EVERY: Option<Duration> = Some(Duration::from_secs(1));

    type Msg = AccountMsg;
    type Reply = AccountReply;
    type Deps = AccountDeps;

    async fn activate(ctx: &EntityContext, deps: &Arc<AccountDeps>) -> Result<Self, EntityError> {
        let user: u64 = ctx
            .key
            .parse()
            .map_err(|_| EntityError::new(format!("account key '{}' is not a user id", ctx.key)))?;
        let r =
            crate::journal::recover::<Ledger, Entry>(&deps.store, KIND, &ctx.key, &ctx.sharding)
                .await?;
        let mut ledger = r.snapshot.unwrap_or_default();
        for (at, entry) in &r.entries {
            ledger
                .apply(entry, &deps.markets)
                .map_err(|e| EntityError::new(format!("account {} entry {at}: {e}", ctx.key)))?;
        }
        let (lease, seq, replayed) = (r.lease, r.seq, r.entries.len());
        let mut account = Account {
            user,
            key: ctx.key.clone(),
            deps: deps.clone(),
            sharding: ctx.sharding.clone(),
            courier: Courier::new(&ctx.sharding, &format!("{KIND}/{}", ctx.key), user),
            lease,
            stop: false,
            ledger,
            seq,
            since_snapshot: replayed as u64,
            last_reconcile: None,
            holdings: None,
            last_valued: None,
            watched_until: None,
            holdings_ts: i64::MIN,
            published: None,
        };
        if !account.ledger.granted() {
            let factor = if participants::is_participant(user) {
                participants::GRANT_FACTOR
            } else {
                1
            };
            let grant = Entry::Grant {
                assets: deps
                    .grants
                    .iter()
                    .map(|(asset, amount)| (asset.clone(), amount.saturating_mul(factor)))
                    .collect(),
            };
            account.record(&grant).await.map_err(|e| {
                EntityError::new(format!("granting demo balances to {}: {e}", ctx.key))
            })?;
        }
        account.store_holdings_if_new().await;
        Ok(account)
    }

    async fn handle(&mut self, msg: AccountMsg, _ctx: &EntityContext) -> AccountReply {
        if self.fenced() {
            self.stop = true;
            return AccountReply::Error(Refusal::Unavailable(format!(
                "account {} is restarting; retry",
                self.key
            )));
        }
        // Reports lost while this account was down (a crash loses unsaved ones and those in
        // its mailbox) are fetched before it answers anything.
        if self.last_reconcile.is_none() && !matches!(msg, AccountMsg::Update(_)) {
            self.reconcile().await;
        }
        match msg {
            AccountMsg::Place(req) => self.place(req).await,
            AccountMsg::Cancel(id) => self.cancel(id).await,
            AccountMsg::Get(id) => match self.ledger.order(id) {
                Some(o) => AccountReply::Order(o.clone()),
                None => AccountReply::Error(not_found(id)),
            },
            AccountMsg::List { symbol, open } => AccountReply::Orders(
                self.ledger
                    .orders()
                    .rev()
                    .filter(|o| symbol.as_ref().is_none_or(|s| *s == o.symbol))
                    .filter(|o| open.is_none_or(|want| o.is_open() == want))
                    .cloned()
                    .collect(),
            ),
            AccountMsg::Balances => AccountReply::Balances(self.ledger.balances().clone()),
            AccountMsg::Portfolio => AccountReply::Portfolio(self.current_holdings()),
            AccountMsg::CreateAlert { symbol, alert, max } => {
                self.create_alert(symbol, alert, max).await
            }
            AccountMsg::Update(state) => {
                if owner_of(state.order_id) == self.user {
                    self.absorb(state).await;
                }
                AccountReply::Done
            }
            AccountMsg::Watch => {
                if !self.watched() {
                    // A new watcher: the current portfolio goes out at the next tick.
                    self.published = None;
                    self.last_valued = None;
                }
                self.watched_until = Some(Instant::now() + WATCH_FOR);
                AccountReply::Done
            }
        }
    }

    async fn on_tick(&mut self, _ctx: &EntityContext) {
        if self.fenced() {
            return;
        }
        let now = now_ms();
        let stale: Vec<(u64, String)> = self
            .ledger
            .orders()
            .filter(|o| o.pending && o.created_at < now - PENDING_GRACE_MS)
            .map(|o| (o.order_id, o.symbol.clone()))
            .collect();
        for (id, symbol) in stale {
            if let Ok(BookReply::Order(s)) = self
                .sharding
                .ask::<BookEntity>(&symbol, BookMsg::Void(id))
                .await
            {
                self.absorb(s).await;
            }
        }
        self.revalue_portfolio().await;
        if self
            .last_reconcile
            .is_some_and(|t| t.elapsed() < RECONCILE_EVERY)
        {
            return;
        }
        self.reconcile().await;
    }

    fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "lease": self.lease.fence().epoch,
            "journal_seq": self.seq,
            "orders": self.ledger.orders().count(),
            "open_orders": self.ledger.open_orders(),
            "balances": view::balances(&self.deps.markets, self.ledger.balances())["balances"].clone(),
        })
    }

    fn fenced(&self) -> bool {
        self.stop || self.lease.is_lost()
    }

    async fn passivate(&mut self, _ctx: &EntityContext) {
        // Lost or stopped: memory may be ahead of storage, so no snapshot of it.
        if self.fenced() {
            return;
        }
        self.write_snapshot();
        self.lease.release().await;
    }
}

/// What a new account holds once granted `grants` (balance units per asset): the rankings'
/// all-time base.
pub fn granted(markets: &Markets, grants: &[(String, u128)]) -> portfolio::Holdings {
    let mut ledger = Ledger::default();
    let grant = Entry::Grant {
        assets: grants.to_vec(),
    };
    if let Err(e) = ledger.apply(&grant, markets) {
        tracing::error!(error = %e, "the demo grant does not apply to an empty ledger");
    }
    portfolio::Holdings::of(markets, ledger.balances(), ledger.positions())
}

fn not_found(id: u64) -> Refusal {
    Refusal::NotFound(format!("no order {id}"))
}

impl Account {
    /// Asks the books for the states of this account's open orders and applies them.
    async fn reconcile(&mut self) {
        self.last_reconcile = Some(Instant::now());
        let mut by_symbol: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for o in self.ledger.orders().filter(|o| o.is_open() && !o.pending) {
            by_symbol
                .entry(o.symbol.clone())
                .or_default()
                .push(o.order_id);
        }
        for (symbol, ids) in by_symbol {
            match self
                .sharding
                .ask::<BookEntity>(&symbol, BookMsg::Query(ids))
                .await
            {
                Ok(BookReply::States(states)) => {
                    for s in states {
                        self.absorb(s).await;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // Retried by the clock in about a second, without holding up requests.
                    tracing::debug!(account = %self.key, %symbol, error = %e, "reconciliation deferred");
                    self.last_reconcile = Instant::now()
                        .checked_sub(RECONCILE_EVERY.saturating_sub(Duration::from_secs(1)));
                }
            }
        }
    }

    async fn place(&mut self, req: OrderRequest) -> AccountReply {
        if let Some(c) = &req.client_order_id
            && let Some(o) = self.ledger.by_client_id(c)
        {
            let (id, symbol, pending) = (o.order_id, o.symbol.clone(), o.pending);
            if pending {
                // The first attempt's outcome is unknown: settle it now: the order stands
                // (the retry gets its state) or never will (the retry places it anew).
                if let Ok(BookReply::Order(s)) = self
                    .sharding
                    .ask::<BookEntity>(&symbol, BookMsg::Void(id))
                    .await
                {
                    self.absorb(s).await;
                }
            }
            match self.ledger.order(id) {
                // Voided just now: it never reached the book, and its client_order_id is
                // free again; this request places the order anew (docs/PROTOCOL.md).
                Some(o) if o.state.voided() => {}
                Some(o) => {
                    return AccountReply::Placed {
                        order: o.clone(),
                        created: false,
                    };
                }
                None => return AccountReply::Error(not_found(id)),
            }
        }
        let Some(market) = self.deps.markets.get(&req.symbol).cloned() else {
            return AccountReply::Error(Refusal::BadRequest(format!(
                "unknown symbol '{}'",
                req.symbol
            )));
        };
        // Only an order that can rest is refused by the cap, and any order while its market
        // is closed: it waits, reserved, for the open.
        let waits = !market.is_open(now_ms());
        if (req.may_rest() || waits) && self.ledger.open_orders() >= self.deps.max_open_orders {
            return AccountReply::Error(Refusal::BadRequest(format!(
                "at most {} open orders per account",
                self.deps.max_open_orders
            )));
        }
        // A market buy holds qty × a protective price and never pays more than it.
        let protect = match (req.price, req.side) {
            (None, Side::Buy) => {
                match self
                    .sharding
                    .ask::<BookEntity>(&req.symbol, BookMsg::Quote)
                    .await
                {
                    Ok(BookReply::Quote { best_ask, last, .. }) => Some(market_buy_protect(
                        best_ask,
                        last,
                        market.initial_price,
                        self.deps.market_protect_pct,
                    )),
                    Ok(_) => None,
                    Err(e) => return AccountReply::Error(Refusal::Unavailable(e.to_string())),
                }
            }
            _ => None,
        };
        let (asset, need) = hold_for(&market, req.side, req.price.or(protect), req.qty);
        let have = self.ledger.balance(&asset).available;
        if have < need {
            let step = self.deps.markets.asset(&asset);
            let fmt = |v: u128| step.map_or(v.to_string(), |s| s.format_wide(v));
            return AccountReply::Error(Refusal::InsufficientFunds(format!(
                "needs {} {asset} available, has {}",
                fmt(need),
                fmt(have)
            )));
        }
        let id = order_id(self.user, self.ledger.next_order_number());
        let now = now_ms();
        let record = OrderRecord {
            order_id: id,
            client_order_id: req.client_order_id.clone(),
            symbol: req.symbol.clone(),
            side: req.side,
            price: req.price,
            protect,
            qty: req.qty,
            tif: req.tif,
            post_only: req.post_only,
            state: OrderState::new(id),
            hold_left: 0,
            pending: true,
            created_at: now,
            updated_at: now,
        };
        if let Err(e) = self.record(&Entry::Hold { order: record }).await {
            return AccountReply::Error(e);
        }
        let order = Order {
            id,
            owner: self.user,
            side: req.side,
            kind: match req.price {
                Some(price) => Kind::Limit { price },
                None => Kind::Market { protect },
            },
            qty: req.qty,
            tif: req.tif,
            post_only: req.post_only,
        };
        let answer = self
            .sharding
            .ask::<BookEntity>(&req.symbol, BookMsg::Submit(order))
            .await;
        let state = match answer {
            Ok(BookReply::Order(s)) => s,
            other => {
                let why = match other {
                    Ok(BookReply::Failed(m)) => m,
                    Err(e) => e.to_string(),
                    Ok(_) => "unexpected answer from the book".into(),
                };
                tracing::warn!(account = %self.key, order = id, %why, "book did not confirm an order; voiding it");
                match self
                    .sharding
                    .ask::<BookEntity>(&req.symbol, BookMsg::Void(id))
                    .await
                {
                    Ok(BookReply::Order(s)) => s,
                    _ => {
                        return AccountReply::Error(Refusal::Unavailable(format!(
                            "book {} did not confirm the order ({why}); if it still arrives it stands, else its hold is released: retry with the same client_order_id to learn which",
                            req.symbol
                        )));
                    }
                }
            }
        };
        self.absorb(state).await;
        let Some(order) = self.ledger.order(id).cloned() else {
            return AccountReply::Error(Refusal::Internal("order vanished".into()));
        };
        if order.state.status == Status::Rejected {
            return AccountReply::Error(match order.state.reject {
                Some(Reject::WouldTake) => {
                    Refusal::BadRequest("post_only order would take liquidity; rejected".into())
                }
                Some(Reject::OutsideBand) => Refusal::BadRequest(format!(
                    "limit price is more than {}% away from the book's last trade (its start price before any); rejected",
                    self.deps.price_band_pct
                )),
                Some(r) => Refusal::BadRequest(format!("order rejected by the book: {r:?}")),
                None => Refusal::Unavailable(format!(
                    "book {} was unavailable; the order was not placed and its hold is released",
                    req.symbol
                )),
            });
        }
        AccountReply::Placed {
            order,
            created: true,
        }
    }

    /// Counts the user's rules and, under `max`, has `symbol` store the new one. Nothing
    /// else creates rules, and this account handles one message at a time, so two
    /// concurrent creations cannot both pass the count.
    async fn create_alert(&self, symbol: String, alert: NewAlert, max: usize) -> AccountReply {
        match self.deps.store.alert_count(self.user).await {
            Ok(held) if held >= max => {
                return AccountReply::Error(Refusal::BadRequest(format!(
                    "at most {max} alerts per user; delete some first"
                )));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(account = %self.key, error = %e, "counting alerts");
                return AccountReply::Error(Refusal::Unavailable(
                    "alert storage is unavailable; retry".into(),
                ));
            }
        }
        match self
            .sharding
            .ask::<Symbol>(&symbol, SymbolMsg::CreateAlert(alert))
            .await
        {
            Ok(SymbolReply::AlertCreated(r)) => AccountReply::AlertCreated(r),
            Ok(SymbolReply::Refused(e)) => AccountReply::Error(e),
            Ok(other) => {
                tracing::error!(
                    ?other,
                    "symbol answered an alert creation with the wrong reply"
                );
                AccountReply::Error(Refusal::Internal("internal error".into()))
            }
            Err(e) => AccountReply::Error(Refusal::Unavailable(e.to_string())),
        }
    }

    async fn cancel(&mut self, id: u64) -> AccountReply {
        let Some(order) = self.ledger.order(id).cloned() else {
            return AccountReply::Error(not_found(id));
        };
        if !order.is_open() {
            return AccountReply::Error(Refusal::Conflict(format!(
                "order {id} is already {}",
                order.state.status.as_str()
            )));
        }
        let msg = if order.pending {
            BookMsg::Void(id)
        } else {
            BookMsg::Cancel {
                order_id: id,
                owner: self.user,
            }
        };
        match self.sharding.ask::<BookEntity>(&order.symbol, msg).await {
            Ok(BookReply::Order(s)) => self.absorb(s).await,
            Ok(BookReply::NotFound) => return AccountReply::Error(not_found(id)),
            Ok(BookReply::Failed(m)) => return AccountReply::Error(Refusal::Unavailable(m)),
            Ok(_) => {}
            Err(e) => return AccountReply::Error(Refusal::Unavailable(e.to_string())),
        }
        match self.ledger.order(id) {
            Some(o) if o.state.status.is_done() => AccountReply::Order(o.clone()),
            Some(o) => AccountReply::Error(Refusal::Conflict(format!(
                "order {id} could not be cancelled (status {})",
                o.state.status.as_str()
            ))),
            None => AccountReply::Error(not_found(id)),
        }
    }

    /// Applies a book's state of an order (if it is news), journals it, publishes it.
    async fn absorb(&mut self, state: OrderState) {
        let entry = Entry::Apply {
            state,
            ts: now_ms(),
        };
        if let Err(e) = self.record_with(&entry, false).await {
            tracing::error!(account = %self.key, error = %e, "could not record an order update");
        }
    }

    /// Applies an entry to the ledger, journals it (durably), and publishes the order it
    /// changed. An entry that changes nothing is not journaled.
    async fn record(&mut self, entry: &Entry) -> Result<(), Refusal> {
        self.record_with(entry, true).await
    }

    /// [`Account::record`], waiting for the write only when `wait`.
    async fn record_with(&mut self, entry: &Entry, wait: bool) -> Result<(), Refusal> {
        let filled_before = match entry {
            Entry::Apply { state, .. } => self.ledger.order(state.order_id).map(|o| o.state.filled),
            _ => None,
        };
        let changed = match self.ledger.apply(entry, &self.deps.markets) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(account = %self.key, error = %e, "ledger refused an entry");
                return Err(Refusal::Internal(
                    "the account could not apply a change".into(),
                ));
            }
        };
        if changed.is_none() && !matches!(entry, Entry::Grant { .. }) {
            return Ok(());
        }
        let bytes = bourse_storage::codec::encode(entry).map_err(|e| {
            self.stop = true;
            Refusal::Internal(format!("encoding a journal entry: {e}"))
        })?;
        // Whether the entry filled (more of) an order.
        let filled = changed
            .and_then(|id| self.ledger.order(id))
            .filter(|o| o.state.filled > filled_before.unwrap_or(0));
        if let Some(o) = filled {
            // Into the inbox before the entry that records it: the writer commits in order,
            // so a durable fill always has its notification, and a fill re-applied after a
            // crash finds its notification already there (the key is the fill's position).
            self.notify_fill(o);
        }
        // Only a fill or the grant moves what the user holds (a hold moves nothing between
        // available and held in total): its point of the value history goes likewise before
        // the entry, so a durable entry always has it.
        if filled.is_some() || matches!(entry, Entry::Grant { .. }) {
            self.store_holdings(now_ms());
        }
        let write = Write::Journal {
            kind: KIND.into(),
            key: self.key.clone(),
            seq: self.seq + 1,
            entry: bytes,
        };
        let ack = self.lease.submit(write);
        if wait {
            if let Err(e) = ack.wait().await {
                tracing::error!(account = %self.key, error = %e, "account journal write failed; restarting from storage");
                self.lease.lose();
                return Err(Refusal::Unavailable(format!(
                    "account {} could not be saved; retry",
                    self.key
                )));
            }
        } else {
            let (lease, key) = (self.lease.clone(), self.key.clone());
            tokio::spawn(async move {
                if let Err(e) = ack.wait().await {
                    tracing::error!(account = %key, error = %e, "account journal write failed; restarting from storage");
                    lease.lose();
                }
            });
        }
        self.seq += 1;
        self.since_snapshot += 1;
        if let Some(id) = changed {
            self.publish(id);
        }
        if self.since_snapshot >= self.deps.snapshot_every {
            self.write_snapshot();
        }
        Ok(())
    }

    fn publish(&mut self, order_id: u64) {
        let Some(o) = self.ledger.order(order_id) else {
            return;
        };
        // A simulated participant has no session: nobody would read it.
        if o.pending || participants::is_participant(self.user) {
            return;
        }
        let data = view::order(&self.deps.markets, o).to_string();
        // The user's session numbers it on `orders` and delivers it to every connection.
        self.courier.send(Private::Orders, now_ms(), data);
    }

    /// Stores the fill that brought order `o` to its filled quantity in the user's inbox.
    fn notify_fill(&self, o: &OrderRecord) {
        if participants::is_participant(self.user) {
            return;
        }
        let ts = now_ms();
        let body = view::order(&self.deps.markets, o).to_string();
        let _ = self.deps.store.submit(Write::Notify(Notification {
            user_id: self.user,
            key: format!("fill:{}:{}", o.order_id, o.state.filled),
            ts,
            kind: "fill".into(),
            body,
        }));
    }

    fn current_holdings(&self) -> portfolio::Holdings {
        portfolio::Holdings::of(
            &self.deps.markets,
            self.ledger.balances(),
            self.ledger.positions(),
        )
    }

    /// Stores the holdings as a point of the value history at `ts` when they differ from
    /// the last stored (a simulated participant keeps none).
    fn store_holdings(&mut self, ts: i64) {
        if participants::is_participant(self.user) {
            return;
        }
        let now = self.current_holdings();
        if self.holdings.as_ref() == Some(&now) {
            return;
        }
        let data = match serde_json::to_string(&now) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(account = %self.key, error = %e, "encoding holdings failed");
                return;
            }
        };
        let ts = ts.max(self.holdings_ts.saturating_add(1));
        let _ = self.deps.store.submit(Write::Holdings {
            user_id: self.user,
            ts,
            data,
        });
        self.holdings_ts = ts;
        // The rankings learn it at once; one lost on the way is read back from storage
        // when they next rebuild.
        let told = RankingsMsg::Holdings {
            user: self.user,
            holdings: now.clone(),
        };
        if let Err(e) = self.sharding.send::<Rankings>(rankings::KEY, told) {
            tracing::debug!(account = %self.key, error = %e, "the rankings did not take a holdings change");
        }
        self.holdings = Some(now);
        self.last_valued = None;
    }

    /// On activation: the newest stored point is compared with what the ledger holds, so
    /// a point lost to a crash (it follows the journal's order, so only with its entry) is
    /// written again, and an unchanged account writes nothing.
    async fn store_holdings_if_new(&mut self) {
        if participants::is_participant(self.user) || self.holdings.is_some() {
            return;
        }
        let now = now_ms();
        // Up to the end of time: a point a node with a clock ahead wrote counts too.
        match self.deps.store.holdings(self.user, now, i64::MAX).await {
            Ok(points) => {
                if let Some((ts, data)) = points.last() {
                    self.holdings_ts = *ts;
                    self.holdings = serde_json::from_str(data).ok();
                }
                self.store_holdings(now);
            }
            Err(e) => {
                tracing::warn!(account = %self.key, error = %e, "reading the last holdings failed; writing them again");
                self.store_holdings(now);
            }
        }
    }

    fn watched(&self) -> bool {
        self.watched_until.is_some_and(|t| Instant::now() < t)
    }

    /// While watched: publishes `portfolio` when the holdings changed, and every
    /// [`REVALUE_EVERY`] while positions are held, if the value at the markets' last
    /// prices moved.
    async fn revalue_portfolio(&mut self) {
        if !self.watched() {
            return;
        }
        let Some(holdings) = &self.holdings else {
            return;
        };
        let due = match self.last_valued {
            None => true,
            Some(t) => !holdings.positions.is_empty() && t.elapsed() >= REVALUE_EVERY,
        };
        if !due {
            return;
        }
        let holdings = holdings.clone();
        let prices = last_prices(&self.sharding, holdings.positions.keys()).await;
        self.last_valued = Some(Instant::now());
        let view = portfolio::view(&self.deps.markets, &holdings, &prices);
        if self.published.as_ref() == Some(&view) {
            return;
        }
        self.courier
            .send(Private::Portfolio, now_ms(), view.to_string());
        self.published = Some(view);
    }

    fn write_snapshot(&mut self) {
        let bytes = match bourse_storage::codec::encode(&self.ledger) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(account = %self.key, error = %e, "encoding an account snapshot failed");
                return;
            }
        };
        let _ = self.lease.submit(Write::Snapshot {
            kind: KIND.into(),
            key: self.key.clone(),
            seq: self.seq,
            state: bytes,
        });
        self.since_snapshot = 0;
    }
}
