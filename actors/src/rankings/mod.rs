//! Rankings of traders (seed 003 recomputes its rankings over 20 M rows in a 91-minute
//! batch; bourse keeps them current). [`board`] is one period's ranking, updated one
//! trader at a time in microseconds, read as a top list or one trader's rank; [`table`]
//! keeps every trader's returns over the day, the week and all time on three boards as
//! holdings and prices change. Both are pure.
//!
//! The `rankings` entity (one, key [`KEY`], placed by the ring like any other) holds the
//! table. Accounts tell it each change of a user's holdings (the same ones they store); it
//! asks every symbol's price every [`REPRICE_EVERY`]. It keeps nothing of its own: when it
//! starts (after a kill or a move) it rebuilds the table from storage: every user's
//! holdings now and at the day's and the week's start (`UserStore::holdings_at`), valued at
//! each market's closed minute candle then; at the turn of a day it takes the bases again
//! the same way.

pub mod board;
pub mod table;

pub use board::{Board, Standing};
pub use table::{Period, Table};

use crate::account::portfolio::Holdings;
use crate::clock::now_ms;
use crate::symbol::last_prices;
use bourse_cluster::{Entity, EntityContext, EntityError, Sharding};
use bourse_config::Markets;
use bourse_storage::{Interval, MarketStore, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The entity kind name.
pub const KIND: &str = "rankings";
/// The one entity's key.
pub const KEY: &str = "traders";
/// How often the rankings take the markets' last prices.
pub const REPRICE_EVERY: Duration = Duration::from_secs(5);

/// What the rankings accept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RankingsMsg {
    /// `user` now holds `holdings` (told by the user's account after storing them).
    Holdings { user: u64, holdings: Holdings },
    /// The best `limit` over `period`, and `user`'s own place.
    Top {
        period: Period,
        limit: usize,
        user: Option<u64>,
    },
}

/// What the rankings answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RankingsReply {
    Top {
        traders: Vec<Standing>,
        you: Option<Standing>,
        /// How many traders are ranked.
        ranked: usize,
        currency: String,
    },
    Done,
}

/// What the rankings entity needs from its node.
pub struct RankingsDeps {
    pub store: Arc<dyn MarketStore>,
    pub markets: Markets,
    /// What a new account holds: every trader's all-time base.
    pub grant: Holdings,
}

/// The entity state.
pub struct Rankings {
    deps: Arc<RankingsDeps>,
    sharding: Sharding,
    table: Table,
}

impl Entity for Rankings {
    const KIND: &'static str = KIND;
    // The table is rebuilt from storage on start: keep it while the node owns it.
    const PASSIVATE_WHEN_IDLE: bool = false;
    const TICK_EVERY: Option<Duration> = Some(REPRICE_EVERY);

    type Msg = RankingsMsg;
    type Reply = RankingsReply;
    type Deps = RankingsDeps;

    async fn activate(ctx: &EntityContext, deps: &Arc<RankingsDeps>) -> Result<Self, EntityError> {
        let now = now_ms();
        let table = rebuild(deps, &ctx.sharding, now)
            .await
            .map_err(|e| EntityError::new(format!("rebuilding the rankings: {e}")))?;
        Ok(Rankings {
            deps: deps.clone(),
            sharding: ctx.sharding.clone(),
            table,
        })
    }

    async fn handle(&mut self, msg: RankingsMsg, _ctx: &EntityContext) -> RankingsReply {
        match msg {
            RankingsMsg::Holdings { user, holdings } => {
                self.table.set_holdings(user, holdings);
                RankingsReply::Done
            }
            RankingsMsg::Top {
                period,
                limit,
                user,
            } => RankingsReply::Top {
                traders: self.table.top(period, limit),
                you: user.and_then(|u| self.table.standing(period, u)),
                ranked: self.table.len(),
                currency: self.table.currency().to_string(),
            },
        }
    }

    async fn on_tick(&mut self, _ctx: &EntityContext) {
        let now = now_ms();
        if self.table.roll(now) {
            // A new day (and maybe week): every base becomes the value now, then what
            // storage says each user held at the start, at the prices then. The holdings
            // stay the table's: one told but not yet stored is not lost.
            if let Err(e) = set_bases(&self.deps, &mut self.table, now).await {
                tracing::warn!(error = %e, "reading the day's bases failed; the returns start from the values at the turn");
            }
            self.table.rescore_all();
        }
        let symbols = self.deps.markets.iter().map(|m| &m.symbol);
        self.table
            .set_prices(last_prices(&self.sharding, symbols).await);
    }

    fn summary(&self) -> serde_json::Value {
        serde_json::json!({ "ranked": self.table.len(), "currency": self.table.currency() })
    }
}

/// The stored holdings points of `(user, ts, data)` rows, decoded.
fn decoded(rows: Vec<(u64, i64, String)>) -> impl Iterator<Item = (u64, Holdings)> {
    rows.into_iter()
        .filter_map(|(user, ts, data)| Some((user, Holdings::decode(user, ts, &data)?)))
}

/// The table from storage at `now`: every user's holdings now, their day's and week's
/// bases from the holdings and the closed minute candles at each start, and the markets'
/// last prices.
async fn rebuild(deps: &RankingsDeps, sharding: &Sharding, now: i64) -> Result<Table, StoreError> {
    let currency = deps
        .markets
        .iter()
        .next()
        .map(|m| m.quote.clone())
        .unwrap_or_default();
    let mut table = Table::new(deps.markets.clone(), currency, &deps.grant, now);
    // Prices first, into the empty table: nobody is scored until the one sort below.
    let symbols = deps.markets.iter().map(|m| &m.symbol);
    table.set_prices(last_prices(sharding, symbols).await);
    for (user, h) in decoded(deps.store.holdings_at(now).await?) {
        table.load(user, h);
    }
    set_bases(deps, &mut table, now).await?;
    table.rescore_all();
    Ok(table)
}

/// Each trader's day and week bases at `now`: what storage says the trader held when each
/// began, valued at each market's last closed minute candle then.
async fn set_bases(deps: &RankingsDeps, table: &mut Table, now: i64) -> Result<(), StoreError> {
    for period in [Period::Day, Period::Week] {
        let Some(start) = period.start(now) else {
            continue;
        };
        let mut prices = BTreeMap::new();
        for m in deps.markets.iter() {
            let last = deps
                .store
                .candles(&m.symbol, Interval::M1, Some(start), 1)
                .await?;
            if let Some(c) = last.last() {
                prices.insert(m.symbol.clone(), c.close);
            }
        }
        for (user, h) in decoded(deps.store.holdings_at(start).await?) {
            table.set_base(user, period, &h, &prices);
        }
    }
    Ok(())
}
