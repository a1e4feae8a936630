//! `bourse bench trading`: a local cluster of node processes (feed off), many users each on
//! its own WebSocket, spread over the nodes and the symbols, placing orders in a closed loop
//! (the next once the last is acknowledged). Prints acknowledged orders/s, place-to-ack
//! latency, the error codes seen, and then checks conservation: per asset, available + held
//! over all users equals the users' grants. Clients share the machine with the nodes.

use super::{local_cluster, node_cpu_ticks};
use crate::probe::http_json;
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// End-to-end trading benchmark parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct TradingArgs {
    /// Node processes in the local cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// WebSocket clients (one user each).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Seconds measured (after warm-up).
    #[arg(long, default_value_t = 20)]
    pub secs: u64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Total orders/s offered, spread evenly over the clients (open loop; latency counts
    /// from each order's scheduled time). 0: closed loop, each client as fast as it can.
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

/// Runs the benchmark and prints its figures.
pub async fn trading(args: TradingArgs) -> anyhow::Result<()> {
    let n = args.nodes.max(1);
    let (_dir, procs, gateways) = local_cluster(n, "trading", &super::simulator_feed(None)).await?;
    let (_, symbols) = http_json(gateways[0], "GET", "/api/v1/symbols", None, None)
        .await
        .context("listing symbols")?;
    let symbols: Vec<String> = symbols
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["symbol"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if symbols.is_empty() {
        bail!("no symbols");
    }
    println!(
        "{n} nodes up (gateways {gateways:?}); registering {} users",
        args.clients
    );
    let mut tokens = Vec::with_capacity(args.clients);
    for chunk in (0..args.clients).collect::<Vec<_>>().chunks(50) {
        let regs = chunk.iter().map(|i| {
            let port = gateways[i % n];
            async move {
                let body = json!({"username": format!("bench_{i}"), "password": "bench-password"});
                http_json(port, "POST", "/api/v1/auth/register", None, Some(&body)).await
            }
        });
        for r in futures_util::future::join_all(regs).await {
            match r {
                Some((201, v)) => tokens.push(v["token"].as_str().unwrap_or_default().to_string()),
                other => bail!("register failed: {other:?}"),
            }
        }
    }
    // A reference price per symbol: the last traded (or configured) price from the ticker.
    let mut prices = Vec::new();
    for s in &symbols {
        let (_, t) = http_json(
            gateways[0],
            "GET",
            &format!("/api/v1/ticker/{s}"),
            None,
            None,
        )
        .await
        .context("ticker")?;
        prices.push(t["last"].as_str().unwrap_or("0").to_string());
    }
    let (_, sym_meta) = http_json(gateways[0], "GET", "/api/v1/symbols", None, None)
        .await
        .context("symbols")?;
    let lots: Vec<String> = sym_meta
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["lot_size"].as_str().unwrap_or("1").to_string())
                .collect()
        })
        .unwrap_or_default();

    println!("connecting {} clients", args.clients);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(args.clients);
    for (i, token) in tokens.iter().enumerate() {
        let url = format!("ws://127.0.0.1:{}/ws?token={token}", gateways[i % n]);
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("connecting client {i}"))?;
        let s = i % symbols.len();
        let (symbol, price, lot) = (symbols[s].clone(), prices[s].clone(), lots[s].clone());
        // Half the users of a symbol buy and half sell, all at the reference price, so
        // orders keep matching and books stay shallow.
        let side = if (i / symbols.len()).is_multiple_of(2) {
            "buy"
        } else {
            "sell"
        };
        let (measuring, stop) = (measuring.clone(), stop.clone());
        let every = (args.rate > 0)
            .then(|| Duration::from_secs_f64(args.clients as f64 / f64::from(args.rate)));
        handles.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut id = 0u64;
            // Spread the clients' first orders over one interval.
            let mut due =
                Instant::now() + every.map_or(Duration::ZERO, |e| e.mul_f64(fastrand::f64()));
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let req = json!({"id": id, "op": "order.place", "symbol": symbol, "side": side,
                    "type": "limit", "price": price, "qty": lot})
                .to_string();
                let sent = match every {
                    Some(e) => {
                        tokio::time::sleep_until(due.into()).await;
                        let at = due;
                        due += e;
                        at
                    }
                    None => Instant::now(),
                };
                if ws.send(Message::text(req)).await.is_err() {
                    break;
                }
                let answer = loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                            if v.get("id").is_some() {
                                break Some(v);
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break None,
                    }
                };
                let Some(v) = answer else { break };
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                if v["ok"] == true {
                    tally
                        .latencies_us
                        .push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                } else {
                    let code = v["error"]["code"].as_str().unwrap_or("?").to_string();
                    *tally.errors.entry(code).or_default() += 1;
                }
            }
            tally
        }));
    }
    println!("all clients trading; warming up {} s", args.warmup);
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let cpu_before: Vec<Option<u64>> = procs.iter().map(|p| node_cpu_ticks(p.child.id())).collect();
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after: Vec<Option<u64>> = procs.iter().map(|p| node_cpu_ticks(p.child.id())).collect();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for h in handles {
        let t = h.await?;
        all.extend(t.latencies_us);
        for (k, v) in t.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    all.sort_unstable();
    let pct = |p: f64| -> String {
        if all.is_empty() {
            return "n/a".into();
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        format!("{:.2} ms", f64::from(all[i]) / 1000.0)
    };
    println!("measured {elapsed:.1} s:");
    println!(
        "  acknowledged   {:.0} orders/s ({} orders, {} clients on {n} nodes, {} symbols)",
        all.len() as f64 / elapsed,
        all.len(),
        args.clients,
        symbols.len()
    );
    println!(
        "  place->ack     p50 {}  p99 {}  p99.9 {}  max {}",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    println!("  errors         {errors:?}");
    let cpu: Vec<String> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => format!("{:.0}%", (b - a) as f64 / 100.0 / elapsed * 100.0),
            _ => "n/a".into(),
        })
        .collect();
    println!("  node CPU       {cpu:?} of one core each");

    // Conservation: every user's balances summed, against the grants.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut sums: BTreeMap<String, i128> = BTreeMap::new();
    let mut grant: BTreeMap<String, i128> = BTreeMap::new();
    for (i, token) in tokens.iter().enumerate() {
        let (status, v) = http_json(gateways[i % n], "GET", "/api/v1/account", Some(token), None)
            .await
            .context("reading an account")?;
        if status != 200 {
            bail!("GET /account: {status} {v}");
        }
        for (asset, b) in v["balances"].as_object().into_iter().flatten() {
            let total = decimal_units(b["available"].as_str().unwrap_or("0"))
                + decimal_units(b["held"].as_str().unwrap_or("0"));
            *sums.entry(asset.clone()).or_default() += total;
            if i == 0 {
                grant.insert(asset.clone(), 0);
            }
        }
    }
    // Every user started with the same grant: read it from a fresh account.
    let body = json!({"username": "bench_witness", "password": "bench-password"});
    if let Some((201, v)) = http_json(
        gateways[0],
        "POST",
        "/api/v1/auth/register",
        None,
        Some(&body),
    )
    .await
    {
        let t = v["token"].as_str().unwrap_or_default().to_string();
        if let Some((200, a)) =
            http_json(gateways[0], "GET", "/api/v1/account", Some(&t), None).await
        {
            for (asset, b) in a["balances"].as_object().into_iter().flatten() {
                grant.insert(
                    asset.clone(),
                    decimal_units(b["available"].as_str().unwrap_or("0")) * tokens.len() as i128,
                );
            }
        }
    }
    let conserved = sums == grant;
    println!(
        "  conservation   {} (per asset, available + held over {} users {} the grants)",
        if conserved { "holds" } else { "VIOLATED" },
        tokens.len(),
        if conserved { "equals" } else { "differs from" }
    );
    if !conserved {
        println!("    sums   {sums:?}\n    grants {grant:?}");
    }
    drop(procs);
    Ok(())
}

/// A decimal string in units of 10^-12 (exact for every configured step), for summing.
fn decimal_units(s: &str) -> i128 {
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    let f = format!("{f:0<12}");
    format!("{i}{}", &f[..12]).parse().unwrap_or(0)
}
