//! The cost of one throttle check (a login's first step): in this node's memory, and in
//! Redis when `BOURSE_BENCH_REDIS_URL` names a server (one GCRA script per check, the
//! round trip included). p50/p99 of one awaited check at a time, over many keys.
//!
//! Run: `BOURSE_BENCH_REDIS_URL=redis://127.0.0.1:6379/0 cargo bench -p bourse-gateway
//! --bench throttle` (`BOURSE_BENCH_SMALL=1` for a quick pass). `cargo test --all-targets`
//! runs it once, small, in memory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure should stop it loudly

use bourse_config::RedisSettings;
use bourse_gateway::shared_limits::{Redis, SharedLimiter};
use std::time::Instant;

fn quantile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn run(name: &str, limiter: &SharedLimiter, checks: u64) {
    let mut took = Vec::with_capacity(checks as usize);
    let mut refused = 0u64;
    for i in 0..checks {
        // 500 keys (addresses), each well under its budget.
        let key = format!("192.0.2.{}:{}", i % 250, i % 4);
        let started = Instant::now();
        if limiter.check(&key).await.is_err() {
            refused += 1;
        }
        took.push(started.elapsed().as_nanos() as u64);
    }
    took.sort_unstable();
    println!(
        "{name:<8} {:>10.1} {:>10.1} {:>10.1}   ({checks} checks, {refused} refused)",
        quantile(&took, 0.5) as f64 / 1000.0,
        quantile(&took, 0.99) as f64 / 1000.0,
        quantile(&took, 0.999) as f64 / 1000.0,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    let benching = std::env::args().any(|a| a == "--bench");
    let small = !benching || std::env::var("BOURSE_BENCH_SMALL").is_ok();
    let checks = if small { 2_000 } else { 100_000 };
    let redis_url = std::env::var("BOURSE_BENCH_REDIS_URL").ok();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        println!(
            "{:<8} {:>10} {:>10} {:>10}",
            "throttle", "p50 µs", "p99 µs", "p99.9 µs"
        );
        // A budget no key reaches: every check is counted and allowed.
        let per_min = 1_000_000;
        let memory = SharedLimiter::new("bench", per_min, 100_000, None);
        run("memory", &memory, checks).await;
        match redis_url {
            Some(url) => {
                let redis = Redis::open(&RedisSettings {
                    url: Some(url),
                    timeout_ms: 1_000,
                    ..RedisSettings::default()
                })
                .expect("redis url")
                .expect("redis configured");
                let shared = SharedLimiter::new("bench", per_min, 100_000, Some(redis));
                run("redis", &shared, checks).await;
            }
            None => println!("redis    not run (set BOURSE_BENCH_REDIS_URL)"),
        }
    });
}
