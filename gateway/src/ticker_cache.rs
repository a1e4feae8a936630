//! A cluster-wide cache of `GET /api/v1/ticker/{symbol}` answers in Redis: a node that
//! serves a ticker read asks the symbol entity (perhaps on another node) at most once per
//! `redis.ticker_cache_ms` per symbol across the whole cluster, and answers the other reads
//! from Redis. Without Redis, or while it does not answer, every read asks the entity, as
//! before. The live `ticker:S` channel is never cached.

use crate::shared_limits::Redis;
use bourse_cluster::metrics::counter_from_zero;
use prometheus::IntCounterVec;
use serde_json::Value;
use std::sync::LazyLock;

/// Ticker reads by where they were answered from.
static READS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_from_zero(
        "bourse_ticker_cache_total",
        "REST ticker reads answered from the Redis cache (hit) or by the symbol (miss)",
        "outcome",
        &["hit", "miss"],
    )
});

/// The metric label and log scope of the cache's Redis round trips.
const SCOPE: &str = "ticker_cache";

/// The cache; a no-op without Redis or with a zero lifetime.
#[derive(Debug, Clone)]
pub struct TickerCache {
    redis: Option<Redis>,
    ttl_ms: u64,
}

impl TickerCache {
    /// Caches for `ttl_ms` in `redis` (0 or no Redis: never).
    pub fn new(redis: Option<Redis>, ttl_ms: u64) -> TickerCache {
        let redis = redis.filter(|_| ttl_ms > 0);
        if let Some(redis) = &redis {
            LazyLock::force(&READS);
            redis.track(SCOPE);
        }
        TickerCache { redis, ttl_ms }
    }

    fn key(symbol: &str) -> String {
        format!("bourse:ticker:{symbol}")
    }

    /// The cached ticker of `symbol`, if Redis holds a fresh one.
    pub async fn get(&self, symbol: &str) -> Option<Value> {
        let redis = self.redis.as_ref()?;
        let cached = redis
            .get(SCOPE, &Self::key(symbol))
            .await
            .and_then(|text| serde_json::from_str(&text).ok());
        READS
            .with_label_values(&[if cached.is_some() { "hit" } else { "miss" }])
            .inc();
        cached
    }

    /// Caches `ticker` for `symbol`.
    pub async fn put(&self, symbol: &str, ticker: &Value) {
        if let Some(redis) = &self.redis {
            redis
                .set_px(SCOPE, &Self::key(symbol), &ticker.to_string(), self.ttl_ms)
                .await;
        }
    }
}
