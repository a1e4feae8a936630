//! Open connections per client address counted across the cluster, in Redis, so
//! `gateway.max_connections_per_ip` holds for the whole cluster when `[redis] url` is set.
//!
//! Each address has a hash in Redis: one field per node incarnation (`node:start-time`),
//! holding that incarnation's open connections from the address. A connection is admitted
//! by one script that sums the fields of incarnations still alive and, under the limit,
//! counts itself; its close takes it back. Incarnations prove they are alive in one sorted
//! set (expiry on Redis's clock, renewed every few seconds), so a node killed with open
//! connections stops counting within [`LIFETIME`]: its fields are dropped by the next
//! admission from the same address.
//!
//! While Redis does not answer, admission counts on the node alone (the per-node check of
//! admission.rs still runs) and the node remembers that Redis may now be wrong. Once Redis
//! answers again, the node starts a new incarnation and writes its exact counts under it,
//! so counts lost or left behind during the outage disappear with the old one.

use crate::shared_limits::Redis;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long an incarnation counts without renewing its place in [`LIVE`].
pub const LIFETIME: Duration = Duration::from_secs(15);
/// How often a node renews it.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// An address's hash outlives its last admission by this long: a connection held longer
/// than a day, with no other from its address since, stops being counted.
const KEY_TTL: Duration = Duration::from_secs(86_400);
/// Counts written per round trip when a new incarnation writes them all.
const REPUBLISH_CHUNK: usize = 1_000;
/// The scope of this module's round trips in `bourse_redis_fallbacks_total`.
const SCOPE: &str = "connections_ip";

/// The sorted set of live incarnations, scored by expiry (ms, Redis's clock).
const LIVE: &str = "bourse:conns:live";

/// KEYS: the address's hash, [`LIVE`]. ARGV: this incarnation, the limit, the lifetime
/// (ms), the hash's ttl (ms). Answers 1 (counted) or 0 (the address is at its limit).
const CLAIM: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  local expiry = redis.call('ZSCORE', KEYS[2], fields[i])
  if expiry and tonumber(expiry) > now then
    total = total + tonumber(fields[i + 1])
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
if total >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// KEYS: the address's hash. ARGV: this incarnation. Never below zero.
const RELEASE: &str = r"
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
";

/// KEYS: [`LIVE`]. ARGV: this incarnation, the lifetime (ms). Renews it and forgets the
/// expired ones.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return 1
";

/// What Redis said about one more connection from an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Under the limit, and counted.
    Counted,
    /// The address is at its limit across the cluster.
    Full,
    /// Redis did not answer: the node decides alone.
    Unknown,
}

/// A node's share of the cluster-wide connection counts.
pub struct SharedConnections {
    redis: Redis,
    node: String,
    /// This incarnation's field name in every address's hash.
    incarnation: Mutex<Arc<str>>,
    /// Bumped with each new incarnation: a connection admitted under an older one was
    /// counted again by the new one's rewrite, so its close must take it back.
    generation: AtomicU64,
    /// Some claim or release may not have reached Redis: start a new incarnation.
    stale: AtomicBool,
    claim: redis::Script,
    release: redis::Script,
    renew: redis::Script,
}

impl std::fmt::Debug for SharedConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConnections")
            .field("incarnation", &self.incarnation())
            .field("stale", &self.stale.load(Ordering::Relaxed))
            .finish()
    }
}

fn address_key(ip: IpAddr) -> String {
    format!("bourse:conns:ip:{ip}")
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A field name no earlier start of `node` used.
fn new_incarnation(node: &str) -> Arc<str> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{node}:{nanos}").into()
}

impl SharedConnections {
    /// Counts for the node called `node` (its incarnations' names start with it).
    pub fn new(redis: Redis, node: &str) -> Arc<SharedConnections> {
        redis.track(SCOPE);
        Arc::new(SharedConnections {
            redis,
            node: node.to_string(),
            incarnation: Mutex::new(new_incarnation(node)),
            generation: AtomicU64::new(0),
            stale: AtomicBool::new(false),
            claim: redis::Script::new(CLAIM),
            release: redis::Script::new(RELEASE),
            renew: redis::Script::new(RENEW),
        })
    }

    fn incarnation(&self) -> Arc<str> {
        self.incarnation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current incarnation's number (see [`SharedConnections::release`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A round trip of this module through `Redis::call`; a failure leaves the counts
    /// stale, for the next renewal to rewrite.
    async fn call<T: redis::FromRedisValue>(
        &self,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        let outcome = self.redis.call(SCOPE, request).await;
        if outcome.is_err() {
            self.stale.store(true, Ordering::Release);
        }
        outcome
    }

    /// Counts one more connection from `ip` unless the cluster already holds `limit`.
    pub async fn claim(&self, ip: IpAddr, limit: usize) -> Claim {
        let mut conn = self.redis.connection();
        let mut invocation = self.claim.key(address_key(ip));
        invocation
            .key(LIVE)
            .arg(&*self.incarnation())
            .arg(limit)
            .arg(ms(LIFETIME))
            .arg(ms(KEY_TTL));
        match self.call(invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(1) => Claim::Counted,
            Ok(_) => Claim::Full,
            Err(_) => Claim::Unknown,
        }
    }

    /// Takes back one connection from `ip`, in the background (a closing connection
    /// waits for nobody).
    pub fn release(self: &Arc<Self>, ip: IpAddr) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.stale.store(true, Ordering::Release);
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            let mut conn = this.redis.connection();
            let mut invocation = this.release.key(address_key(ip));
            invocation.arg(&*this.incarnation());
            // A failure is counted, and leaves the counts for the next renewal to rewrite.
            let _ = this.call(invocation.invoke_async::<i64>(&mut conn)).await;
        });
    }

    async fn renew(&self, incarnation: &str) -> Result<(), String> {
        let mut conn = self.redis.connection();
        let mut invocation = self.renew.key(LIVE);
        invocation.arg(incarnation).arg(ms(LIFETIME));
        self.call(invocation.invoke_async::<i64>(&mut conn))
            .await
            .map(drop)
    }

    /// Starts a new incarnation holding `counts()`, this node's exact open connections
    /// per address, and retires the old one with whatever Redis believed of it.
    async fn rewrite(&self, counts: &impl Fn() -> Vec<(IpAddr, usize)>) -> Result<(), String> {
        let old = self.incarnation();
        let new = new_incarnation(&self.node);
        self.renew(&new).await?;
        *self.incarnation.lock().unwrap_or_else(|p| p.into_inner()) = new.clone();
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM").arg(LIVE).arg(&*old).ignore();
        let counts = counts();
        let chunks = counts.chunks(REPUBLISH_CHUNK);
        let mut conn = self.redis.connection();
        for chunk in chunks {
            for (ip, n) in chunk {
                let key = address_key(*ip);
                pipe.cmd("HSET").arg(&key).arg(&*new).arg(*n).ignore();
                pipe.cmd("PEXPIRE").arg(&key).arg(ms(KEY_TTL)).ignore();
            }
            self.call(pipe.query_async::<()>(&mut conn)).await?;
            pipe = redis::pipe();
        }
        if counts.is_empty() {
            self.call(pipe.query_async::<()>(&mut conn)).await?;
        }
        tracing::info!(
            incarnation = %new,
            addresses = counts.len(),
            "connections per address rewritten in redis after it missed some"
        );
        Ok(())
    }

    /// Keeps this node's incarnation alive until `stop`, rewriting its counts (from
    /// `counts`) whenever Redis may have missed some; then retires it, so its connections
    /// stop counting at once.
    pub async fn keep_alive(
        self: Arc<Self>,
        counts: impl Fn() -> Vec<(IpAddr, usize)>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            // A failed round trip marks the counts stale again (see `call`).
            let _ = if self.stale.swap(false, Ordering::AcqRel) {
                self.rewrite(&counts).await
            } else {
                self.renew(&self.incarnation()).await
            };
            tokio::select! {
                () = tokio::time::sleep(RENEW_EVERY) => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
        let mut conn = self.redis.connection();
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(LIVE).arg(&*self.incarnation());
        if let Err(e) = self.call(zrem.query_async::<()>(&mut conn)).await {
            tracing::debug!(error = %e, "could not retire this node's connection counts in redis");
        }
    }
}
