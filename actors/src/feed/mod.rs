//! Market data feeds: where a symbol's trades come from. The built-in simulator runs on
//! every node but drives only the symbols this node owns on the ring, so a trade is never
//! produced twice: a `mirror` market gets its trades in small batches, an `exchange` market
//! its simulated participants ([`crate::participants`]). When the ring
//! gives this node a symbol, its walk continues from the symbol's last traded price.
//! External feeds (Kafka in the `bourse-kafka` crate, Upbit in `bourse-upbit`) parse their
//! messages with [`message`] and hand the symbol [`FeedTrade`]s, which carry a source
//! sequence, through [`deliver`]; they share [`metrics`], and a live source reports its
//! state in [`health`].

pub mod health;
mod log_every;
pub mod message;
pub mod metrics;
pub mod simulator;

pub use log_every::LogEvery;
pub use message::{FeedTrade, Rejected};
pub use simulator::{Simulator, TradeInput};

use crate::symbol::{Symbol, SymbolMsg, SymbolReply};
use bourse_cluster::Sharding;
use bourse_config::{FeedSettings, Market, Markets, ParticipantsSettings, Venue};
use std::time::Duration;
use tokio::sync::watch;

/// The longest wait between tries to hand a symbol its feed trades.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How often the simulator (and `bourse feed`) hands each symbol its due trades.
pub const BATCH_EVERY: Duration = Duration::from_millis(50);

/// Integer pacing: exactly `rate` trades per second per symbol over time, no drift; after a
/// stall it catches up by at most one second's worth.
#[derive(Debug)]
pub struct Pacer {
    rate: u64,
    started: tokio::time::Instant,
    emitted: u64,
}

impl Pacer {
    /// Pacing from now at `rate` per second.
    pub fn new(rate: u64) -> Pacer {
        Pacer {
            rate,
            started: tokio::time::Instant::now(),
            emitted: 0,
        }
    }

    /// How many are due since the last call.
    pub fn due(&mut self) -> u64 {
        let due = self.rate * self.started.elapsed().as_millis() as u64 / 1000;
        let n = due.saturating_sub(self.emitted).min(self.rate.max(1));
        self.emitted = self.emitted.max(due);
        n
    }
}

/// Runs the simulator until `shutdown` turns true. A `mirror` market gets the walk's trades
/// as its ticks; an `exchange` market gets simulated participants trading in its book
/// ([`crate::participants`]) while this node owns it. Each walk starts at the market's last
/// traded price (so a restart or a move continues the chart), else at the configured price.
pub async fn run_simulator(
    sharding: Sharding,
    markets: Markets,
    settings: FeedSettings,
    participants: ParticipantsSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sims: Vec<Driven> = markets
        .iter()
        .enumerate()
        .map(|(index, m)| Driven {
            market: m.clone(),
            index,
            sim: Simulator::new(settings.seed, m, m.initial_price),
            driving: false,
            participants: None,
        })
        .collect();
    let rate = u64::from(settings.trades_per_sec);
    let mut pacer = Pacer::new(rate);
    let mut ticker = tokio::time::interval(BATCH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tracing::info!(
        symbols = sims.len(),
        trades_per_sec = rate,
        "simulator running"
    );
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let n = pacer.due();
        let ring = sharding.ring();
        for d in sims.iter_mut() {
            let symbol = d.market.symbol.as_str();
            if ring.owner(crate::symbol::KIND, symbol) != Some(sharding.node()) {
                d.driving = false;
                continue;
            }
            let running = d.participants.as_ref().is_some_and(|h| !h.is_finished());
            let idle = match d.market.venue {
                Venue::Mirror => n == 0,
                Venue::Exchange => !participants.enabled,
            };
            if running || idle {
                continue;
            }
            if !d.driving || d.market.venue == Venue::Exchange {
                // Newly ours: activate the symbol here (from storage) and continue its chart.
                match sharding.ask::<Symbol>(symbol, SymbolMsg::Ticker).await {
                    Ok(SymbolReply::Ticker(t)) => d.sim.set_price(t.last),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(%symbol, error = %e, "symbol not ready on this node yet");
                        continue;
                    }
                }
                d.driving = true;
            }
            if d.market.venue == Venue::Exchange {
                d.participants = Some(tokio::spawn(crate::participants::drive(
                    sharding.clone(),
                    d.market.clone(),
                    d.index,
                    d.sim.price(),
                    settings.clone(),
                    participants.clone(),
                    shutdown.clone(),
                )));
                continue;
            }
            let batch: Vec<TradeInput> = (0..n).map(|_| d.sim.next_trade()).collect();
            if let Err(e) = sharding.send::<Symbol>(symbol, SymbolMsg::Trades(batch)) {
                tracing::debug!(%symbol, error = %e, "simulated trades dropped");
            }
        }
    }
}

/// One market as the simulator drives it.
struct Driven {
    market: Market,
    /// Its place in symbol order (which participant accounts trade it).
    index: usize,
    sim: Simulator,
    /// Whether this node drove it on the last round (else its walk restarts from the
    /// market's last trade).
    driving: bool,
    /// The participants' task of an exchange market, while it runs here.
    participants: Option<tokio::task::JoinHandle<()>>,
}

/// Hands every symbol of `batch` its trades, all symbols at once, each [`deliver`]ed until
/// stored; false when `shutdown` came first.
pub async fn deliver_all<S: AsRef<str>>(
    sharding: &Sharding,
    batch: impl IntoIterator<Item = (S, Vec<FeedTrade>)>,
    shutdown: &watch::Receiver<bool>,
) -> bool {
    let all = batch.into_iter().map(|(symbol, trades)| async move {
        deliver(sharding, symbol.as_ref(), trades, shutdown.clone()).await
    });
    futures_util::future::join_all(all)
        .await
        .into_iter()
        .all(|stored| stored)
}

/// Asks `symbol` to store `trades` until it answers that they are durable (counted in
/// [`metrics::TRADES`]); false when `shutdown` came first.
pub async fn deliver(
    sharding: &Sharding,
    symbol: &str,
    trades: Vec<FeedTrade>,
    mut shutdown: watch::Receiver<bool>,
) -> bool {
    let mut wait = Duration::from_millis(50);
    let mut tries = 0u32;
    loop {
        let why = match sharding
            .ask::<Symbol>(symbol, SymbolMsg::Ingest(trades.clone()))
            .await
        {
            Ok(SymbolReply::Ingested {
                applied,
                duplicates,
            }) => {
                metrics::TRADES
                    .with_label_values(&["applied"])
                    .inc_by(applied as u64);
                metrics::TRADES
                    .with_label_values(&["duplicate"])
                    .inc_by(duplicates as u64);
                return true;
            }
            Ok(SymbolReply::Refused(r)) => r.to_string(),
            Ok(_) => "unexpected reply".to_string(),
            Err(e) => e.to_string(),
        };
        tries += 1;
        if tries == 5 {
            tracing::warn!(%symbol, error = %why, "feed trades not stored yet; still trying");
        } else {
            tracing::debug!(%symbol, error = %why, "feed trades not stored; trying again");
        }
        if *shutdown.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return false,
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}
