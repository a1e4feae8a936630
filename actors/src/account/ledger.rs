//! An account's balances and orders, the pure core of the `account` entity: holds on order
//! entry, settlement from the book's cumulative order states, release when an order ends.
//! No actors, no I/O; the entity journals each [`Entry`] and replays them on recovery.
//!
//! Money never appears or vanishes here: a hold moves an amount from `available` to `held`;
//! settling a fill takes from the hold (or pays out to `available`) exactly what the trade
//! moves between the two accounts; a finished order releases what is left of its hold.

use super::position::Position;
use crate::book::engine::{Side, TimeInForce};
use crate::trading::OrderState;
use bourse_config::{Market, Markets};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Finished orders an account keeps for `GET /orders` and `client_order_id` replays.
pub const DONE_KEPT: usize = 1000;

/// One asset's balance, in the asset's balance units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub available: u128,
    pub held: u128,
}

/// An order as its owner's account keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub order_id: u64,
    pub client_order_id: Option<String>,
    pub symbol: String,
    pub side: Side,
    /// Limit price in ticks; `None` for market orders.
    pub price: Option<u64>,
    /// A market buy's protective price in ticks (its hold is `protect × qty`).
    pub protect: Option<u64>,
    pub qty: u64,
    pub tif: TimeInForce,
    pub post_only: bool,
    /// What the book last reported.
    pub state: OrderState,
    /// What is still held for it, in the held asset's units.
    pub hold_left: u128,
    /// Held, but the book has not confirmed it yet (the saga's open step).
    pub pending: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl OrderRecord {
    /// Whether it still holds funds and may fill.
    pub fn is_open(&self) -> bool {
        !self.state.status.is_done()
    }
}

/// A journaled change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// The demo balances of a new account.
    Grant { assets: Vec<(String, u128)> },
    /// A new order and its hold (`order.hold_left`).
    Hold { order: OrderRecord },
    /// The book's state of an order.
    Apply { state: OrderState, ts: i64 },
}

/// Why an entry could not apply (a bug or corrupt input, never a client's mistake).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("unknown market '{0}'")]
    UnknownMarket(String),
    #[error("order {0} is unknown")]
    UnknownOrder(u64),
    #[error("{asset}: {what} would go below zero")]
    Negative { asset: String, what: &'static str },
}

/// The whole state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    balances: BTreeMap<String, Balance>,
    orders: BTreeMap<u64, OrderRecord>,
    by_client_id: HashMap<String, u64>,
    done: VecDeque<u64>,
    next_order: u32,
    granted: bool,
    /// Orders not yet done (kept, not counted, on every place).
    open: usize,
    /// Profit and loss by average cost, per market (its base held against its quote).
    positions: BTreeMap<String, Position>,
}

/// A ledger as stored before it kept positions: it restores with none.
#[derive(Deserialize)]
struct LedgerBeforePositions {
    balances: BTreeMap<String, Balance>,
    orders: BTreeMap<u64, OrderRecord>,
    by_client_id: HashMap<String, u64>,
    done: VecDeque<u64>,
    next_order: u32,
    granted: bool,
    open: usize,
}

impl Ledger {
    /// Decodes a stored ledger. One stored before positions were kept (the old layout is
    /// the new one without its last field, so it never decodes as the new) restores with
    /// none: its positions start from its next trade.
    pub fn decode(bytes: &[u8]) -> Result<Ledger, bourse_storage::codec::CodecError> {
        use bourse_storage::codec::decode;
        decode::<Ledger>(bytes).or_else(|e| {
            let old: LedgerBeforePositions = decode(bytes).map_err(|_| e)?;
            Ok(Ledger {
                balances: old.balances,
                orders: old.orders,
                by_client_id: old.by_client_id,
                done: old.done,
                next_order: old.next_order,
                granted: old.granted,
                open: old.open,
                positions: BTreeMap::new(),
            })
        })
    }
}

/// What an order holds: `(asset, amount)`.
pub fn hold_for(market: &Market, side: Side, hold_price: Option<u64>, qty: u64) -> (String, u128) {
    match side {
        Side::Sell => (market.base.clone(), market.base_amount(qty)),
        Side::Buy => (
            market.quote.clone(),
            market.quote_amount(u128::from(hold_price.unwrap_or(0)) * u128::from(qty)),
        ),
    }
}

fn take(b: &mut u128, amount: u128, asset: &str, what: &'static str) -> Result<(), LedgerError> {
    *b = b.checked_sub(amount).ok_or_else(|| LedgerError::Negative {
        asset: asset.to_string(),
        what,
    })?;
    Ok(())
}

impl Ledger {
    /// Whether the demo grant was applied.
    pub fn granted(&self) -> bool {
        self.granted
    }

    /// The number the next order takes.
    pub fn next_order_number(&self) -> u32 {
        self.next_order + 1
    }

    /// Balances by asset.
    pub fn balances(&self) -> &BTreeMap<String, Balance> {
        &self.balances
    }

    /// One asset's balance.
    pub fn balance(&self, asset: &str) -> Balance {
        self.balances.get(asset).copied().unwrap_or_default()
    }

    /// An order by id.
    pub fn order(&self, order_id: u64) -> Option<&OrderRecord> {
        self.orders.get(&order_id)
    }

    /// The order placed with `client_order_id`.
    pub fn by_client_id(&self, client_order_id: &str) -> Option<&OrderRecord> {
        self.by_client_id
            .get(client_order_id)
            .and_then(|id| self.orders.get(id))
    }

    /// Orders, oldest first.
    pub fn orders(&self) -> impl DoubleEndedIterator<Item = &OrderRecord> {
        self.orders.values()
    }

    /// How many orders are open.
    pub fn open_orders(&self) -> usize {
        self.open
    }

    /// Positions by market symbol.
    pub fn positions(&self) -> &BTreeMap<String, Position> {
        &self.positions
    }

    /// Applies one entry; returns the order it changed, if any.
    pub fn apply(&mut self, entry: &Entry, markets: &Markets) -> Result<Option<u64>, LedgerError> {
        match entry {
            Entry::Grant { assets } => {
                for (asset, amount) in assets {
                    self.balances.entry(asset.clone()).or_default().available += amount;
                    // A granted asset is held in the first market that trades it, bought
                    // at that market's start price.
                    if let Some(m) = markets.iter().find(|m| m.base == *asset) {
                        let lots = amount / m.base_per_lot;
                        let cost = m.quote_amount(lots * u128::from(m.initial_price));
                        self.positions
                            .entry(m.symbol.clone())
                            .or_default()
                            .buy(*amount, cost);
                    }
                }
                self.granted = true;
                Ok(None)
            }
            Entry::Hold { order } => {
                let market = market(markets, &order.symbol)?;
                let (asset, amount) =
                    hold_for(market, order.side, order.price.or(order.protect), order.qty);
                let b = self.balances.entry(asset.clone()).or_default();
                take(&mut b.available, amount, &asset, "available")?;
                b.held += amount;
                let mut order = order.clone();
                order.hold_left = amount;
                if let Some(c) = &order.client_order_id {
                    self.by_client_id.insert(c.clone(), order.order_id);
                }
                self.next_order = self.next_order.max((order.order_id & 0xffff_ffff) as u32);
                let id = order.order_id;
                self.orders.insert(id, order);
                self.open += 1;
                Ok(Some(id))
            }
            Entry::Apply { state, ts } => self.settle(state, *ts, markets),
        }
    }

    fn settle(
        &mut self,
        state: &OrderState,
        ts: i64,
        markets: &Markets,
    ) -> Result<Option<u64>, LedgerError> {
        let Some(order) = self.orders.get_mut(&state.order_id) else {
            // Forgotten long ago (finished and evicted): nothing is held for it any more.
            return Ok(None);
        };
        if !state.supersedes(&order.state) {
            if order.pending {
                // The book confirmed the order, as new or as reserved for its market's open
                // (nothing filled): the saga step is done.
                order.pending = false;
                order.state = *state;
                order.updated_at = ts;
                return Ok(Some(order.order_id));
            }
            return Ok(None);
        }
        let market = market(markets, &order.symbol)?;
        let dq = state.filled.saturating_sub(order.state.filled);
        let dc = state.cost.saturating_sub(order.state.cost);
        let (base, quote) = (market.base.clone(), market.quote.clone());
        match order.side {
            Side::Buy => {
                let hold_price = order.price.or(order.protect).unwrap_or(0);
                let release = market.quote_amount(u128::from(hold_price) * u128::from(dq));
                let paid = market.quote_amount(dc);
                take(&mut order.hold_left, release, &quote, "order hold")?;
                let q = self.balances.entry(quote.clone()).or_default();
                take(&mut q.held, release, &quote, "held")?;
                let refund = release.checked_sub(paid).ok_or(LedgerError::Negative {
                    asset: quote.clone(),
                    what: "price improvement",
                })?;
                q.available += refund;
                self.balances.entry(base).or_default().available += market.base_amount(dq);
                self.positions
                    .entry(market.symbol.clone())
                    .or_default()
                    .buy(market.base_amount(dq), paid);
            }
            Side::Sell => {
                let release = market.base_amount(dq);
                take(&mut order.hold_left, release, &base, "order hold")?;
                let b = self.balances.entry(base.clone()).or_default();
                take(&mut b.held, release, &base, "held")?;
                self.balances.entry(quote).or_default().available += market.quote_amount(dc);
                self.positions
                    .entry(market.symbol.clone())
                    .or_default()
                    .sell_up_to(release, market.quote_amount(dc));
            }
        }
        order.state = *state;
        order.pending = false;
        order.updated_at = ts;
        if state.status.is_done() {
            let asset = match order.side {
                Side::Buy => market.quote.clone(),
                Side::Sell => market.base.clone(),
            };
            let left = std::mem::take(&mut order.hold_left);
            let b = self.balances.entry(asset.clone()).or_default();
            take(&mut b.held, left, &asset, "held")?;
            b.available += left;
            let id = order.order_id;
            self.open = self.open.saturating_sub(1);
            // Voided (the book never took it; the client was told `unavailable`): its
            // client_order_id is free again, so a retry places the order anew.
            if state.voided()
                && let Some(c) = &order.client_order_id
                && self.by_client_id.get(c) == Some(&id)
            {
                self.by_client_id.remove(c);
            }
            self.done.push_back(id);
            self.forget_old();
            return Ok(Some(id));
        }
        Ok(Some(order.order_id))
    }

    fn forget_old(&mut self) {
        while self.done.len() > DONE_KEPT {
            let Some(id) = self.done.pop_front() else {
                break;
            };
            if let Some(o) = self.orders.remove(&id)
                && let Some(c) = o.client_order_id
            {
                self.by_client_id.remove(&c);
            }
        }
    }

    /// Per asset, available + held: what conservation checks sum over accounts.
    pub fn totals(&self) -> BTreeMap<String, u128> {
        self.balances
            .iter()
            .map(|(a, b)| (a.clone(), b.available + b.held))
            .collect()
    }

    /// Whether `held` per asset equals what the open orders still hold.
    pub fn holds_add_up(&self, markets: &Markets) -> bool {
        let mut expect: BTreeMap<String, u128> = BTreeMap::new();
        for o in self.orders.values() {
            let Some(m) = markets.get(&o.symbol) else {
                return false;
            };
            let asset = match o.side {
                Side::Buy => &m.quote,
                Side::Sell => &m.base,
            };
            *expect.entry(asset.clone()).or_default() += o.hold_left;
        }
        self.balances
            .iter()
            .all(|(a, b)| expect.get(a).copied().unwrap_or(0) == b.held)
    }
}

fn market<'a>(markets: &'a Markets, symbol: &str) -> Result<&'a Market, LedgerError> {
    markets
        .get(symbol)
        .ok_or_else(|| LedgerError::UnknownMarket(symbol.to_string()))
}

#[cfg(test)]
mod tests;
