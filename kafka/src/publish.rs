//! `bourse feed --to kafka`: the built-in simulator as a producer, so the Kafka path can
//! be shown and measured without an exchange. Each trade is one message keyed by its
//! symbol, in bourse's format or Upbit's; its sequence is the larger of the previous one
//! plus one and the time in microseconds, so a restarted publisher's trades still rise.

use bourse_actors::feed::{BATCH_EVERY, Pacer, Simulator, TradeInput};
use bourse_config::{Market, Markets};
use bourse_storage::Side;
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// The message format `bourse feed` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"symbol","price","qty","side","seq"}`, decimals as strings.
    Bourse,
    /// Upbit's trade message (`code`, `trade_price`, `trade_volume`, `ask_bid`,
    /// `sequential_id`, `trade_timestamp`), decimals as JSON numbers.
    Upbit,
}

/// What to publish and where.
#[derive(Debug, Clone)]
pub struct Publish {
    pub brokers: Vec<String>,
    pub topic: String,
    /// Partitions of the topic when it has to be created.
    pub partitions: i32,
    /// Trades per second per symbol.
    pub rate: u32,
    /// Stop after this many trades per symbol; none: until `shutdown`.
    pub count: Option<u64>,
    pub format: Format,
    pub seed: u64,
}

/// Creates the topic when it does not exist (`partitions` partitions, one replica: a
/// production topic is better made by its operator), then publishes until `count` trades
/// per symbol are acknowledged or `shutdown`. Returns the trades acknowledged.
pub async fn publish(
    markets: &Markets,
    p: &Publish,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<u64> {
    crate::ensure_topic(&p.brokers, &p.topic, p.partitions, "bourse-feed").await?;
    // In enqueue order per partition: a symbol's sequences reach the topic rising.
    let producer = crate::ordered_producer(&p.brokers, "bourse-feed")?;
    // Each symbol's walk and its last sequence.
    let mut sims: Vec<(&Market, Simulator, u64)> = markets
        .iter()
        .map(|m| (m, Simulator::new(p.seed, m, m.initial_price), 0))
        .collect();
    let mut pacer = Pacer::new(u64::from(p.rate.max(1)));
    // Trades per symbol so far (every symbol gets as many).
    let mut produced = 0u64;
    let mut acked = 0u64;
    let mut ticker = tokio::time::interval(BATCH_EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => break,
        }
        let mut n = pacer.due();
        if let Some(count) = p.count {
            n = n.min(count.saturating_sub(produced));
        }
        produced += n;
        let mut bodies = Vec::new();
        for (market, sim, seq) in sims.iter_mut() {
            for _ in 0..n {
                *seq = (*seq + 1).max(now_micros());
                let body = message(market, &sim.next_trade(), *seq, p.format);
                bodies.push((market.symbol.as_str(), body));
            }
        }
        let mut pending = Vec::with_capacity(bodies.len());
        for (symbol, body) in &bodies {
            let record = FutureRecord::to(&p.topic)
                .key(*symbol)
                .payload(body.as_str());
            let delivery = crate::enqueue(&producer, record)
                .await
                .map_err(|e| anyhow::anyhow!("publishing to {}: {e}", p.topic))?;
            pending.push(delivery);
        }
        acked += settle(pending, &p.topic).await?;
        if p.count.is_some_and(|c| produced >= c) {
            break;
        }
    }
    Ok(acked)
}

/// Waits for every pending acknowledgement; returns how many arrived.
async fn settle(pending: Vec<DeliveryFuture>, topic: &str) -> anyhow::Result<u64> {
    let mut acked = 0;
    for delivery in pending {
        match delivery.await {
            Ok(Ok(_)) => acked += 1,
            Ok(Err((e, _))) => anyhow::bail!("publishing to {topic}: {e}"),
            Err(_) => anyhow::bail!("publishing to {topic}: the producer went away"),
        }
    }
    Ok(acked)
}

/// One trade as a message of `format`.
pub fn message(market: &Market, t: &TradeInput, seq: u64, format: Format) -> String {
    let symbol = &market.symbol;
    let price = market.tick.format(t.price);
    let qty = market.lot.format(t.qty);
    match format {
        Format::Bourse => {
            let side = t.side.as_str();
            format!(
                r#"{{"symbol":"{symbol}","price":"{price}","qty":"{qty}","side":"{side}","seq":{seq}}}"#
            )
        }
        Format::Upbit => {
            let ask_bid = if t.side == Side::Buy { "BID" } else { "ASK" };
            let ms = seq / 1000;
            format!(
                r#"{{"type":"trade","code":"{symbol}","trade_price":{price},"trade_volume":{qty},"ask_bid":"{ask_bid}","sequential_id":{seq},"trade_timestamp":{ms},"stream_type":"REALTIME"}}"#
            )
        }
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bourse_actors::feed::message::parse;
    use bourse_config::Settings;

    /// What the publisher writes, in either format, is what ingest reads back.
    #[test]
    fn both_formats_round_trip_through_the_parser() {
        let markets = Settings::default().validate().unwrap();
        for m in markets.iter() {
            let mut sim = Simulator::new(3, m, m.initial_price);
            for i in 1..200u64 {
                let t = sim.next_trade();
                for format in [Format::Bourse, Format::Upbit] {
                    let body = message(m, &t, 1_700_000_000_000_000 + i, format);
                    let (market, got) = parse(body.as_bytes(), &markets).unwrap();
                    assert_eq!(market.symbol, m.symbol);
                    assert_eq!(got.seq, 1_700_000_000_000_000 + i);
                    assert_eq!(got.trade, t, "{body}");
                }
            }
        }
    }
}
