//! Upbit's live trades as a market-data source (`feed.kind = "upbit"`, docs/OPERATIONS.md
//! "Upbit"). Each node follows the symbols it owns on the ring (of `upbit.codes`, or every
//! configured symbol): it subscribes with Upbit's WebSocket request
//! (`[{"ticket"},{"type":"trade","codes"},{"format":"DEFAULT"}]`), parses trade messages
//! with the feed's shared parser (`code`, `trade_price`, `trade_volume`, `ask_bid`,
//! `sequential_id`), puts them back in sequence ([`reorder`]) and hands them to their
//! symbols, which store each `sequential_id` once. When the ring moves a symbol, the node
//! subscribes again with its new codes.
//!
//! A dropped or refused connection is dialled again after a backoff with full jitter
//! (0.5 s doubling to 30 s); a connection silent for `upbit.stall_after_s` (no trade, no
//! answer to the pings sent every third of it) is marked stalled and dialled again. The
//! source's state is in `/readyz` (`feed`) and `/metrics` (`bourse_feed_*`).

pub mod reorder;

use bourse_actors::feed::health::{Health, State};
use bourse_actors::feed::metrics::{REJECTED, TRADES};
use bourse_actors::feed::{FeedTrade, LogEvery, Rejected, deliver_all, message};
use bourse_cluster::Sharding;
use bourse_config::{Markets, UpbitSettings};
use futures_util::{SinkExt, StreamExt};
use reorder::{Added, Reorder};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How often waiting trades whose turn came are handed on.
const RELEASE_EVERY: Duration = Duration::from_millis(50);
/// How often the node checks which symbols the ring gives it.
const RING_EVERY: Duration = Duration::from_millis(500);
/// The longest a dial (TCP, TLS, WebSocket handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a polite close may take before the connection is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The first wait before dialling again, doubled per failure up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// At most one log line per this long about the same connection failure.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// The largest message taken: an Upbit trade is about 400 bytes.
const MAX_MESSAGE: usize = 64 * 1024;
/// Batches of trades waiting for their symbols; a full queue holds the reading back.
const DELIVERY_QUEUE: usize = 256;

/// Upbit's subscription request for the trades of `codes`.
pub fn request(ticket: &str, codes: &[String]) -> String {
    json!([
        {"ticket": ticket},
        {"type": "trade", "codes": codes},
        {"format": "DEFAULT"},
    ])
    .to_string()
}

/// The symbols this node follows: those of `settings.codes` (every market when empty) that
/// the ring gives it, in symbol order.
fn owned(settings: &UpbitSettings, markets: &Markets, sharding: &Sharding) -> Vec<String> {
    let ring = sharding.ring();
    let mine = |s: &String| ring.owner(bourse_actors::symbol::KIND, s) == Some(sharding.node());
    let mut codes: Vec<String> = if settings.codes.is_empty() {
        markets.iter().map(|m| m.symbol.clone()).collect()
    } else {
        settings.codes.clone()
    };
    codes.retain(mine);
    codes.sort();
    codes.dedup();
    codes
}

/// How a connection ended.
enum Ended {
    Shutdown,
    /// The ring gave this node other symbols: subscribe again at once.
    RingMoved,
    Failed(String),
}

/// The source's state between connections.
struct Source {
    settings: UpbitSettings,
    sharding: Sharding,
    markets: Markets,
    health: Health,
    reorder: Reorder,
    deliveries: mpsc::Sender<Vec<(String, Vec<FeedTrade>)>>,
    failures: LogEvery,
    logged: HashSet<&'static str>,
    tickets: u64,
    /// Whether the current connection has sent anything (it was live).
    live: bool,
    /// Whether the current connection delivered a new trade (backoff starts over).
    traded: bool,
}

/// Follows Upbit until `shutdown` turns true.
pub async fn run(
    settings: UpbitSettings,
    sharding: Sharding,
    markets: Markets,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::channel(DELIVERY_QUEUE);
    let delivering = tokio::spawn(deliver_in_order(sharding.clone(), rx, shutdown.clone()));
    let hold = Duration::from_millis(settings.reorder_ms);
    let stall = Duration::from_secs(settings.stall_after_s);
    let mut source = Source {
        settings,
        sharding,
        markets,
        health,
        reorder: Reorder::new(hold),
        deliveries: tx,
        failures: LogEvery::new(LOG_EVERY),
        logged: HashSet::new(),
        tickets: 0,
        live: false,
        traded: false,
    };
    tracing::info!(url = %source.settings.url, "following upbit trades");
    let mut failures = 0u32;
    let mut down_since = Instant::now();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let codes = owned(&source.settings, &source.markets, &source.sharding);
        if codes.is_empty() {
            source.health.set(State::Idle, &codes);
            down_since = Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(RING_EVERY) => continue,
                _ = shutdown.changed() => break,
            }
        }
        source.live = false;
        source.traded = false;
        let ended = source.session(&codes, &mut shutdown).await;
        // Whatever waited leaves now: the source does not replay what a reconnect missed.
        if !source.flush(Instant::now() + hold).await {
            break;
        }
        let why = match ended {
            Ended::Shutdown => break,
            Ended::RingMoved => {
                tracing::info!("the ring moved upbit symbols; subscribing again");
                continue;
            }
            Ended::Failed(why) => why,
        };
        if source.traded {
            failures = 0;
        }
        if source.live {
            down_since = Instant::now();
        }
        source
            .failures
            .warn("upbit connection lost; dialling again", why);
        let state = if source.health.state() == State::Stalled || down_since.elapsed() >= stall {
            State::Stalled
        } else {
            State::Connecting
        };
        source.health.set(state, &codes);
        let ceiling = BACKOFF_FIRST
            .saturating_mul(1 << failures.min(16))
            .min(BACKOFF_MAX);
        failures += 1;
        let wait = ceiling.mul_f64(fastrand::f64());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => break,
        }
        source.health.redialled();
    }
    drop(source);
    let _ = delivering.await;
    tracing::info!("upbit feed stopped");
}

impl Source {
    /// One connection: dial, subscribe to `codes`, and read until it fails, the ring moves
    /// or the node stops.
    async fn session(&mut self, codes: &[String], shutdown: &mut watch::Receiver<bool>) -> Ended {
        if self.health.state() != State::Stalled {
            self.health.set(State::Connecting, codes);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let url = self.settings.url.clone();
        let dial = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        let mut ws = tokio::select! {
            dialled = tokio::time::timeout(CONNECT_TIMEOUT, dial) => match dialled {
                Ok(Ok((ws, _))) => ws,
                Ok(Err(e)) => return Ended::Failed(format!("dialling {url}: {e}")),
                Err(_) => return Ended::Failed(format!("dialling {url}: no answer in 10 s")),
            },
            _ = shutdown.changed() => return Ended::Shutdown,
        };
        self.tickets += 1;
        let ticket = format!("bourse-{}-{}", self.sharding.node(), self.tickets);
        if let Err(e) = ws.send(Message::text(request(&ticket, codes))).await {
            return Ended::Failed(format!("subscribing at {url}: {e}"));
        }
        tracing::info!(%url, ?codes, "subscribed to upbit trades");
        // Live once the source sends something: a server that takes the request and then
        // says nothing stays stalled (or connecting).
        let stall = Duration::from_secs(self.settings.stall_after_s);
        let mut heard_at = Instant::now();
        let mut ping = tokio::time::interval((stall / 3).max(Duration::from_millis(500)));
        ping.tick().await;
        let mut release = tokio::time::interval(RELEASE_EVERY);
        let mut ring = tokio::time::interval(RING_EVERY);
        ring.tick().await;
        loop {
            tokio::select! {
                frame = ws.next() => {
                    let frame = match frame {
                        Some(Ok(Message::Close(c))) => {
                            return Ended::Failed(format!("the source closed the connection: {c:?}"));
                        }
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) => return Ended::Failed(format!("reading from {url}: {e}")),
                        None => return Ended::Failed(format!("{url} ended the connection")),
                    };
                    let payload: &[u8] = match &frame {
                        Message::Text(t) => t.as_bytes(),
                        Message::Binary(b) => b,
                        _ => &[],
                    };
                    heard_at = Instant::now();
                    self.health.heard();
                    if !self.live {
                        self.live = true;
                        self.health.set(State::Live, codes);
                    }
                    if !payload.is_empty() {
                        self.take(payload, codes);
                    }
                }
                _ = ping.tick() => {
                    if heard_at.elapsed() >= stall {
                        self.health.set(State::Stalled, codes);
                        return Ended::Failed(format!(
                            "{url} silent for {} s (no message, no answer to pings)",
                            heard_at.elapsed().as_secs()
                        ));
                    }
                    // A peer that stopped reading must not hold the loop in a full socket.
                    match tokio::time::timeout(stall, ws.send(Message::Ping(Default::default()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Ended::Failed(format!("pinging {url}: {e}")),
                        Err(_) => return Ended::Failed(format!("{url} takes nothing we send")),
                    }
                }
                _ = release.tick() => {
                    let started = Instant::now();
                    if !self.flush(started).await {
                        return Ended::Shutdown;
                    }
                    // Time spent waiting for slow symbols is not the source's silence.
                    let waited = started.elapsed();
                    if waited >= RELEASE_EVERY {
                        heard_at = (heard_at + waited).min(Instant::now());
                    }
                }
                _ = ring.tick() => {
                    if owned(&self.settings, &self.markets, &self.sharding) != codes {
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                        return Ended::RingMoved;
                    }
                }
                _ = shutdown.changed() => {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                    return Ended::Shutdown;
                }
            }
        }
    }

    /// One message from the source: a trade waits for its turn; Upbit's status and error
    /// answers are logged; anything else is counted and skipped.
    fn take(&mut self, payload: &[u8], codes: &[String]) {
        let reason = match message::parse(payload, &self.markets) {
            // A configured symbol this node did not ask for is not its to store.
            Ok((market, _)) if !codes.contains(&market.symbol) => Rejected::UnknownSymbol,
            Ok((market, trade)) => {
                let symbol = market.symbol.clone();
                match self.reorder.add(&symbol, trade, Instant::now()) {
                    Added::Held => self.traded = true,
                    Added::Duplicate => TRADES.with_label_values(&["duplicate"]).inc(),
                    Added::Late => {
                        TRADES.with_label_values(&["late"]).inc();
                        self.once("late", || {
                            tracing::warn!(
                                %symbol,
                                seq = trade.seq,
                                "dropping an upbit trade older than one already stored (raise upbit.reorder_ms; logged once; counted in bourse_feed_trades_total{{outcome=\"late\"}})"
                            )
                        });
                    }
                }
                return;
            }
            Err(reason) => reason,
        };
        if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(payload) {
            if o.contains_key("status") {
                return;
            }
            if let Some(e) = o.get("error") {
                self.failures
                    .warn("upbit refused the request", e.to_string());
                return;
            }
        }
        REJECTED.with_label_values(&[reason.as_str()]).inc();
        self.once(reason.as_str(), || {
            tracing::warn!(
                reason = reason.as_str(),
                "skipping a bad upbit message (logged once per reason; counted in bourse_feed_rejected_total)"
            )
        });
    }

    fn once(&mut self, what: &'static str, log: impl FnOnce()) {
        if self.logged.insert(what) {
            log();
        }
    }

    /// Hands on the trades whose turn has come by `now`; false once deliveries stopped.
    async fn flush(&mut self, now: Instant) -> bool {
        let due = self.reorder.due(now);
        due.is_empty() || self.deliveries.send(due).await.is_ok()
    }
}

/// Delivers batches in order, the symbols of one batch at once, each until stored.
async fn deliver_in_order(
    sharding: Sharding,
    mut batches: mpsc::Receiver<Vec<(String, Vec<FeedTrade>)>>,
    shutdown: watch::Receiver<bool>,
) {
    while let Some(batch) = batches.recv().await {
        if !deliver_all(&sharding, batch, &shutdown).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_upbits_format() {
        let r: Value =
            serde_json::from_str(&request("t-1", &["KRW-BTC".into()])).unwrap_or_default();
        assert_eq!(
            r,
            json!([{"ticket": "t-1"}, {"type": "trade", "codes": ["KRW-BTC"]}, {"format": "DEFAULT"}])
        );
    }
}
