//! A diagnostic entity for measuring the routing itself: `echo` entities count what they
//! receive and answer asks at once. Registered on every node so an admin can compare local
//! and cross-node `send`/`ask` (`POST /admin/bench/routing`, `bourse bench cluster`).

use crate::entity::{Entity, EntityContext, EntityError};
use crate::sharding::{AskError, Sharding};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The probe entity.
#[derive(Debug, Default)]
pub struct Echo {
    received: u64,
}

/// What an echo accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum EchoMsg {
    /// Counted; answered with the count.
    Ping(u64),
    /// Answered with the count, not counted.
    Count,
}

impl Entity for Echo {
    const KIND: &'static str = "echo";
    type Msg = EchoMsg;
    type Reply = u64;
    type Deps = ();

    async fn activate(_ctx: &EntityContext, _deps: &Arc<()>) -> Result<Self, EntityError> {
        Ok(Echo::default())
    }

    async fn handle(&mut self, msg: EchoMsg, _ctx: &EntityContext) -> u64 {
        if let EchoMsg::Ping(_) = msg {
            self.received += 1;
        }
        self.received
    }
}

/// Where the measured entities live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Local,
    Remote,
}

/// A measurement's result.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub messages: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// Round-trip percentiles of sequential asks, µs (asks only).
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
}

/// `count` keys of kind `echo` owned by this node (`Local`) or by another one (`Remote`).
fn keys(
    sharding: &Sharding,
    target: Target,
    count: usize,
    run: u64,
) -> Result<Vec<String>, String> {
    let ring = sharding.ring();
    let mut out = Vec::new();
    for i in 0..1_000_000u64 {
        let key = format!("bench-{run}-{i}");
        let local = ring.owner(Echo::KIND, &key) == Some(sharding.node());
        if local == (target == Target::Local) {
            out.push(key);
            if out.len() == count {
                return Ok(out);
            }
        }
    }
    Err(format!(
        "no {target:?} keys on the ring (is there another node?)"
    ))
}

/// Fire-and-forget throughput: `count` sends spread over 64 entities, timed until every
/// entity has counted its share.
pub async fn send_throughput(
    sharding: &Sharding,
    target: Target,
    count: u64,
) -> Result<Measured, String> {
    let keys = keys(sharding, target, 64, fastrand::u64(..))?;
    let started = Instant::now();
    for i in 0..count {
        let key = &keys[(i % keys.len() as u64) as usize];
        sharding
            .send::<Echo>(key, EchoMsg::Ping(i))
            .map_err(|e| e.to_string())?;
    }
    let deadline = started + Duration::from_secs(120);
    loop {
        let mut total = 0;
        for key in &keys {
            total += sharding
                .ask::<Echo>(key, EchoMsg::Count)
                .await
                .map_err(|e| e.to_string())?;
        }
        if total >= count {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {total} of {count} arrived in 120 s"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Measured {
        messages: count,
        seconds,
        per_second: count as f64 / seconds,
        p50_us: None,
        p99_us: None,
    })
}

/// Sequential ask round trips to one entity.
pub async fn ask_latency(
    sharding: &Sharding,
    target: Target,
    count: u64,
) -> Result<Measured, String> {
    let key = keys(sharding, target, 1, fastrand::u64(..))?.remove(0);
    // Activate it first: activation is not what is measured.
    sharding
        .ask::<Echo>(&key, EchoMsg::Count)
        .await
        .map_err(|e: AskError| e.to_string())?;
    let mut rtts = Vec::with_capacity(count as usize);
    let started = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        sharding
            .ask::<Echo>(&key, EchoMsg::Ping(i))
            .await
            .map_err(|e| e.to_string())?;
        rtts.push(t.elapsed().as_micros() as u64);
    }
    let seconds = started.elapsed().as_secs_f64();
    rtts.sort_unstable();
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1)))
            .copied()
    };
    Ok(Measured {
        messages: count,
        seconds,
        per_second: count as f64 / seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}
