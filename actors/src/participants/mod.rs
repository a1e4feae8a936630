//! The simulated participants of an `exchange` market (docs/DESIGN.md "Venues"): a market
//! maker quoting both sides around a moving fair price ([`quotes`]) and takers crossing its
//! quotes, so the book makes the price and is never empty. They trade through the same
//! order path as users, from their own accounts (two per market, [`maker`] and [`taker`]),
//! so money is conserved with them included.
//!
//! The node that owns a market on the ring drives its participants; the fair price is the
//! simulator's walk, continued from the market's last trade when the market moves here.
//! Nothing of the driver's state needs to survive it: the maker's resting orders are read
//! back from its account before every requote.

pub mod quotes;

use crate::account::{Account, AccountMsg, AccountReply};
use crate::book::engine::{Side, TimeInForce};
use crate::feed::{LogEvery, Pacer, Simulator};
use crate::trading::OrderRequest;
use bourse_cluster::Sharding;
use bourse_config::{FeedSettings, Market, ParticipantsSettings};
use quotes::{Level, Resting};
use std::time::Duration;
use tokio::sync::watch;

/// The first participant user id. Registered users are numbered from 1 by storage and
/// never come near it; an order id keeps its owner in 32 bits, so participants sit at the
/// top of that range, two per market.
pub const FIRST_USER: u64 = 0xFFFF_0000;

/// How many times a new user's grant a participant's account starts with: enough stock
/// and cash that the maker never runs out of either side.
pub const GRANT_FACTOR: u128 = 10_000;

/// Taker orders one market sends per batch at most, however far behind it is.
const MAX_TAKERS_PER_BATCH: u64 = 50;

/// The market maker's user id for the market at `index` in symbol order.
pub fn maker(index: usize) -> u64 {
    FIRST_USER + 2 * index as u64
}

/// The taker's user id for the market at `index` in symbol order.
pub fn taker(index: usize) -> u64 {
    maker(index) + 1
}

/// Whether `user` is a simulated participant: its account starts with
/// [`GRANT_FACTOR`] grants and sends no notifications.
pub fn is_participant(user: u64) -> bool {
    (FIRST_USER..=u64::from(u32::MAX)).contains(&user)
}

/// Drives one market's participants while this node owns its symbol; returns when it no
/// longer does or on shutdown (the simulator's loop starts it again when it is ours).
pub async fn drive(
    sharding: Sharding,
    market: Market,
    index: usize,
    start_price: u64,
    feed: FeedSettings,
    settings: ParticipantsSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sim = Simulator::new(feed.seed, &market, start_price);
    let mut pacer = Pacer::new(u64::from(feed.trades_per_sec));
    let mut ticker = tokio::time::interval(crate::feed::BATCH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let refresh = Duration::from_millis(settings.refresh_ms);
    let mut next_quote = tokio::time::Instant::now();
    let mut warn = LogEvery::new(Duration::from_secs(30));
    let (maker, taker) = (maker(index).to_string(), taker(index).to_string());
    tracing::info!(symbol = %market.symbol, %maker, %taker, "participants trading");
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if sharding.ring().owner(crate::symbol::KIND, &market.symbol) != Some(sharding.node()) {
            tracing::info!(symbol = %market.symbol, "participants stop: the market moved");
            return;
        }
        // Outside the market's hours the participants rest too (their orders would wait,
        // reserved, for the open); the walk's trades they skip are not made up later.
        if !market.is_open(crate::clock::now_ms()) {
            pacer.due();
            continue;
        }
        if tokio::time::Instant::now() >= next_quote {
            next_quote = tokio::time::Instant::now() + refresh;
            // The taker's account is asked too, whether or not it has anything to do: both
            // stay active (and settled from the books) wherever the ring moves them, so an
            // operator can always inspect them.
            if let Err(e) = ask(&sharding, &taker, AccountMsg::Balances).await {
                warn.warn("the taker's account did not answer", e);
            }
            let want = quotes::ladder(&market, sim.price(), &settings);
            if let Err(e) = requote(&sharding, &market, &maker, &want).await {
                warn.warn("the market maker could not requote", e);
            }
        }
        for _ in 0..pacer.due().min(MAX_TAKERS_PER_BATCH) {
            let t = sim.next_trade();
            let side = match t.side {
                bourse_storage::Side::Buy => Side::Buy,
                bourse_storage::Side::Sell => Side::Sell,
            };
            let order = OrderRequest {
                symbol: market.symbol.clone(),
                side,
                price: None,
                qty: t.qty.min(market.max_qty),
                tif: TimeInForce::Ioc,
                post_only: false,
                client_order_id: None,
            };
            if let Err(e) = ask(&sharding, &taker, AccountMsg::Place(order)).await {
                warn.warn("a taker order failed", e);
            }
        }
    }
}

/// Reads the maker's resting orders and moves them to `want`.
async fn requote(
    sharding: &Sharding,
    market: &Market,
    maker: &str,
    want: &[Level],
) -> Result<(), String> {
    let listed = ask(
        sharding,
        maker,
        AccountMsg::List {
            symbol: Some(market.symbol.clone()),
            open: Some(true),
        },
    )
    .await?;
    let AccountReply::Orders(orders) = listed else {
        return Err("the maker's account answered a listing with something else".into());
    };
    let resting: Vec<Resting> = orders
        .iter()
        .filter_map(|o| {
            Some(Resting {
                order_id: o.order_id,
                side: o.side,
                price: o.price?,
                left: o.qty.saturating_sub(o.state.filled),
            })
        })
        .collect();
    let plan = quotes::plan(&resting, want);
    for id in plan.cancel {
        // An order filled meanwhile cannot be cancelled: that is fine.
        let _ = ask(sharding, maker, AccountMsg::Cancel(id)).await;
    }
    for level in plan.place {
        let order = OrderRequest {
            symbol: market.symbol.clone(),
            side: level.side,
            price: Some(level.price),
            qty: level.qty,
            tif: TimeInForce::Gtc,
            post_only: false,
            client_order_id: None,
        };
        ask(sharding, maker, AccountMsg::Place(order)).await?;
    }
    Ok(())
}

/// Asks a participant's account; a refusal is an error with its words.
async fn ask(sharding: &Sharding, user: &str, msg: AccountMsg) -> Result<AccountReply, String> {
    match sharding.ask::<Account>(user, msg).await {
        Ok(AccountReply::Error(r)) => Err(r.to_string()),
        Ok(reply) => Ok(reply),
        Err(e) => Err(e.to_string()),
    }
}
