//! Throttles that hold across the cluster: counted in Redis when `[redis] url` is set, in
//! this node's memory otherwise. While Redis does not answer within `redis.timeout_ms`, a
//! throttle counts in memory (a log line when that starts and when it ends, and
//! `bourse_redis_fallbacks_total`), so a Redis outage never fails a client request: each
//! node only counts on its own for a while.

use crate::limits::KeyedLimiter;
use bourse_cluster::metrics::registered;
use bourse_config::RedisSettings;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// Redis round trips of the throttles, successful or not.
static ROUND_TRIP: LazyLock<Histogram> = LazyLock::new(|| {
    registered(Histogram::with_opts(
        HistogramOpts::new(
            "bourse_redis_round_trip_seconds",
            "Redis round trips of the cluster-wide throttles, connection counts and ticker cache (failed ones included)",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]),
    ))
});

/// Checks a throttle decided in memory because Redis did not answer.
static FALLBACKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "bourse_redis_fallbacks_total",
            "Throttle checks counted in this node's memory because Redis did not answer, by throttle",
        ),
        &["scope"],
    ))
});

/// The generic cell rate algorithm, atomically in Redis on the server's clock (nodes'
/// clocks never meet): a key allows `ARGV[2]` requests at once and one more every `ARGV[1]`
/// microseconds. Answers 0 (allowed, counted) or the microseconds until the next one is.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local tolerance = interval * (burst - 1)
if tat - now > tolerance then
  return tat - now - tolerance
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return 0
";

/// A node's connection to Redis, shared by its throttles. It connects lazily and
/// reconnects by itself, so a node starts whether or not Redis answers yet.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    timeout: Duration,
    /// Whether the last round trip failed (to log an outage once, not per request).
    down: Arc<AtomicBool>,
    script: Arc<redis::Script>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("timeout", &self.timeout)
            .field("down", &self.down.load(Ordering::Relaxed))
            .finish()
    }
}

impl Redis {
    /// The connection `settings` names; `None` without a URL.
    pub fn open(settings: &RedisSettings) -> Result<Option<Redis>, String> {
        let Some(url) = &settings.url else {
            return Ok(None);
        };
        // The driver's message may quote the URL, password included: say only what is wrong.
        let client = redis::Client::open(url.as_str())
            .map_err(|e| format!("redis.url is not a usable Redis URL ({:?})", e.kind()))?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("redis: {:?}", e.kind()))?;
        Ok(Some(Redis {
            conn,
            timeout,
            down: Arc::default(),
            script: Arc::new(redis::Script::new(GCRA)),
        }))
    }

    /// One round trip for `scope`, bounded by the timeout and measured, that also keeps
    /// the outage state: an answer ends an outage (logged once), a failure is counted in
    /// `bourse_redis_fallbacks_total{scope}` and starts one (logged once).
    pub(crate) async fn call<T: redis::FromRedisValue>(
        &self,
        scope: &str,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        let outcome = self.round_trip(request).await;
        match &outcome {
            Ok(_) => self.answered(),
            Err(e) => self.failed(scope, e),
        }
        outcome
    }

    /// One round trip, bounded by the timeout and measured.
    async fn round_trip<T: redis::FromRedisValue>(
        &self,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, request).await;
        ROUND_TRIP.observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// Starts `scope`'s fallback series at zero, for dashboards and alerts.
    pub(crate) fn track(&self, scope: &str) {
        FALLBACKS.with_label_values(&[scope]);
    }

    /// A handle on the shared connection, for one request.
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// One GCRA step of throttle `scope` for `key`: 0 when allowed, else the wait in
    /// microseconds.
    async fn gcra(
        &self,
        scope: &str,
        key: &str,
        interval_us: u64,
        burst: u32,
    ) -> Result<u64, String> {
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(key);
        invocation.arg(interval_us).arg(burst);
        let wait: i64 = self
            .call(scope, invocation.invoke_async::<i64>(&mut conn))
            .await?;
        Ok(u64::try_from(wait).unwrap_or(0))
    }

    /// The string at `key`, if any (`scope` names the caller in metrics and logs).
    pub(crate) async fn get(&self, scope: &str, key: &str) -> Option<String> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.call(scope, cmd.query_async::<Option<String>>(&mut conn))
            .await
            .ok()
            .flatten()
    }

    /// Stores `value` at `key` for `ttl_ms`.
    pub(crate) async fn set_px(&self, scope: &str, key: &str, value: &str, ttl_ms: u64) {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(ttl_ms);
        // A write that failed is counted by `call`; the next read asks the symbol.
        let _ = self.call(scope, cmd.query_async::<()>(&mut conn)).await;
    }

    fn answered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "redis answers again: throttles and connections per address hold across the cluster, ticker reads are cached again"
            );
        }
    }

    fn failed(&self, scope: &str, error: &str) {
        FALLBACKS.with_label_values(&[scope]).inc();
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "redis does not answer: throttles and connections per address count on this node alone and ticker reads go to the symbols until it does");
        }
    }
}

/// `per_min` requests per key per minute, in bursts of up to `per_min`: in Redis (every
/// node that names the same server shares the count) or, without it, in memory.
#[derive(Debug)]
pub struct SharedLimiter {
    scope: &'static str,
    per_min: u32,
    local: KeyedLimiter<String>,
    redis: Option<Redis>,
}

impl SharedLimiter {
    /// A throttle named `scope` (its Redis keys and metric label); `max_keys` bounds the
    /// in-memory table.
    pub fn new(scope: &'static str, per_min: u32, max_keys: usize, redis: Option<Redis>) -> Self {
        if let Some(redis) = &redis {
            redis.track(scope);
        }
        SharedLimiter {
            scope,
            per_min: per_min.max(1),
            local: KeyedLimiter::per_minute(per_min, max_keys),
            redis,
        }
    }

    /// Takes one request for `key`; `Err(wait)` when the key is over its rate.
    pub async fn check(&self, key: &str) -> Result<(), Duration> {
        if let Some(redis) = &self.redis {
            let interval_us = 60_000_000 / u64::from(self.per_min);
            let redis_key = format!("bourse:limit:{}:{key}", self.scope);
            match redis
                .gcra(self.scope, &redis_key, interval_us, self.per_min)
                .await
            {
                Ok(0) => return Ok(()),
                Ok(wait_us) => return Err(Duration::from_micros(wait_us)),
                // Counted as a fallback; decided in memory below.
                Err(_) => {}
            }
        }
        self.local.check(&key.to_string(), Instant::now())
    }
}
