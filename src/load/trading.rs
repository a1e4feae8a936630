//! `bourse load trading`: users each on its own WebSocket, spread over the gateways and the
//! symbols, placing limit orders at each symbol's last price (half buy, half sell, so
//! orders keep matching and books stay shallow): in a closed loop (the next order once the
//! last is answered) or an open loop at a total rate (latency counted from each order's
//! scheduled time, so a slow server cannot hide its queueing). Reports acknowledged
//! orders per second, place-to-ack latency, the error codes seen and the gateways' CPU.
//! `bourse bench trading`, whose fresh cluster has no other traders, then checks
//! conservation: per asset, available + held over the run's users equals their grants. On
//! a shared deployment the run's users also trade with others (earlier runs' resting orders,
//! say), so there the check would be wrong and is not made.
//!
//! Each run registers fresh users (`load_<run>_<n>`): a deployment's per-IP registration
//! limit (`auth.register_per_ip_per_min`, 20) must allow that many from the load host.

use super::{Common, Target, histogram, percentiles, progress, scrape};
use crate::probe::http_json_to;
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// `bourse load trading` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct TradingArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub params: TradingParams,
}

/// The trading workload, shared with `bourse bench trading`.
#[derive(Debug, Clone, clap::Args)]
pub struct TradingParams {
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

const PASSWORD: &str = "load-password";

#[derive(Default)]
struct Tally {
    /// Place-to-ack, µs (a histogram per client would be about 170 KiB each).
    latencies: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

/// Runs the scenario and prints its figures.
pub async fn run(args: TradingArgs) -> anyhow::Result<()> {
    let targets = Target::parse_all(&args.common.urls)?;
    let report = drive(
        &targets,
        args.common.admin_token.as_deref(),
        &args.params,
        false,
    )
    .await?;
    super::write_report(&args.common, &report)
}

/// A symbol's trading terms: name, reference price, lot.
struct Market {
    symbol: String,
    price: String,
    lot: String,
}

async fn markets(target: &Target) -> anyhow::Result<Vec<Market>> {
    let (_, symbols) = http_json_to(&target.addr, "GET", "/api/v1/symbols", None, None)
        .await
        .with_context(|| format!("{}: listing symbols", target.url))?;
    let mut out = Vec::new();
    for s in symbols.as_array().map(Vec::as_slice).unwrap_or_default() {
        let Some(symbol) = s["symbol"].as_str() else {
            continue;
        };
        let (_, t) = http_json_to(
            &target.addr,
            "GET",
            &format!("/api/v1/ticker/{symbol}"),
            None,
            None,
        )
        .await
        .with_context(|| format!("{}: the {symbol} ticker", target.url))?;
        out.push(Market {
            symbol: symbol.to_string(),
            price: t["last"].as_str().unwrap_or("0").to_string(),
            lot: s["lot_size"].as_str().unwrap_or("1").to_string(),
        });
    }
    if out.is_empty() {
        bail!("{}: no symbols", target.url);
    }
    Ok(out)
}

/// Registers `name`: its token.
pub(super) async fn register(target: &Target, name: String) -> anyhow::Result<String> {
    let body = json!({"username": name, "password": PASSWORD});
    match http_json_to(
        &target.addr,
        "POST",
        "/api/v1/auth/register",
        None,
        Some(&body),
    )
    .await
    {
        Some((201, v)) => Ok(v["token"].as_str().unwrap_or_default().to_string()),
        Some((429, _)) => bail!(
            "{}: registering {name} was refused as rate_limited: the deployment's per-IP registration limit (auth.register_per_ip_per_min) is below this run's users",
            target.url
        ),
        other => bail!("{}: registering {name} failed: {other:?}", target.url),
    }
}

/// Registers the users, trades and measures; checks conservation when `alone` (no other
/// user trades on these gateways). Prints the figures and returns them as JSON.
pub async fn drive(
    targets: &[Target],
    token: Option<&str>,
    p: &TradingParams,
    alone: bool,
) -> anyhow::Result<Value> {
    let n = targets.len();
    let markets = Arc::new(markets(&targets[0]).await?);
    let run = format!("{:06x}", fastrand::u32(..0x100_0000));
    println!(
        "trading: registering {} users (load_{run}_N) over {n} gateway(s)",
        p.clients
    );
    let mut tokens = Vec::with_capacity(p.clients);
    let bar = progress(p.clients as u64);
    for chunk in (0..p.clients).collect::<Vec<_>>().chunks(50) {
        let regs = chunk
            .iter()
            .map(|i| register(&targets[i % n], format!("load_{run}_{i}")));
        for token in futures_util::future::join_all(regs).await {
            tokens.push(token?);
        }
        bar.set_position(tokens.len() as u64);
    }
    bar.finish_and_clear();

    println!("connecting {} clients", p.clients);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let every = (p.rate > 0).then(|| Duration::from_secs_f64(p.clients as f64 / f64::from(p.rate)));
    let mut handles = Vec::with_capacity(p.clients);
    for (i, token) in tokens.iter().enumerate() {
        let url = format!("ws://{}/ws?token={token}", targets[i % n].addr);
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("connecting client {i}"))?;
        let (markets, measuring, stop) = (markets.clone(), measuring.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            let m = &markets[i % markets.len()];
            let side = if (i / markets.len()).is_multiple_of(2) {
                "buy"
            } else {
                "sell"
            };
            trade(ws, m, side, every, &measuring, &stop).await
        }));
    }
    println!("all clients trading; warming up {} s", p.warmup);
    tokio::time::sleep(Duration::from_secs(p.warmup)).await;
    let cpu = |figures: Vec<anyhow::Result<super::NodeFigures>>| -> Vec<Option<f64>> {
        figures
            .into_iter()
            .map(|f| f.ok().map(|f| f.cpu_seconds))
            .collect()
    };
    let mut before = Vec::new();
    for t in targets {
        before.push(scrape(t, token).await);
    }
    let cpu_before = cpu(before);
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(p.secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut after = Vec::new();
    for t in targets {
        after.push(scrape(t, token).await);
    }
    let cpu_after = cpu(after);
    stop.store(true, Ordering::Relaxed);
    let mut latency = histogram()?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for h in handles {
        let t = h.await.context("a trading client failed")?;
        for us in t.latencies {
            latency.record(us).context("recording a latency")?;
        }
        for (k, v) in t.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let acked = latency.len();
    println!("measured {elapsed:.1} s:");
    println!(
        "  acknowledged   {:.0} orders/s ({acked} orders, {} clients on {n} gateway(s), {} symbols)",
        acked as f64 / elapsed,
        p.clients,
        markets.len()
    );
    let (latency_line, latency_json) = percentiles(&latency);
    println!("  place->ack     {latency_line}");
    println!("  errors         {errors:?}");
    let cpu: Vec<Value> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => json!((b - a) / elapsed),
            _ => Value::Null,
        })
        .collect();
    let shown: Vec<String> = cpu
        .iter()
        .map(|c| {
            c.as_f64()
                .map_or("n/a".into(), |c| format!("{:.0}%", c * 100.0))
        })
        .collect();
    println!("  gateway CPU    {shown:?} of a core each (n/a: /metrics not readable)");

    let conserved = if alone {
        Some(conservation(targets, &tokens, &run).await?)
    } else {
        println!("  conservation   not checked: other users may trade on these gateways");
        None
    };
    Ok(json!({
        "scenario": "trading",
        "clients": p.clients,
        "rate": p.rate,
        "measured_seconds": elapsed,
        "acknowledged": acked,
        "acknowledged_per_second": acked as f64 / elapsed,
        "latency": latency_json,
        "errors": errors,
        "gateway_cpu_cores": cpu,
        "conserved": conserved,
    }))
}

/// Per asset, available + held over the users against their grants (read from a fresh
/// account, which holds exactly one grant); prints the verdict.
async fn conservation(targets: &[Target], tokens: &[String], run: &str) -> anyhow::Result<bool> {
    let n = targets.len();
    // Let the last fills settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut sums: BTreeMap<String, i128> = BTreeMap::new();
    for (i, token) in tokens.iter().enumerate() {
        let t = &targets[i % n];
        let (status, v) = http_json_to(&t.addr, "GET", "/api/v1/account", Some(token), None)
            .await
            .with_context(|| format!("{}: reading an account", t.url))?;
        if status != 200 {
            bail!("{}: GET /api/v1/account: {status} {v}", t.url);
        }
        add_balances(&mut sums, &v, 1);
    }
    let witness = register(&targets[0], format!("load_{run}_witness")).await?;
    let (_, granted) = http_json_to(
        &targets[0].addr,
        "GET",
        "/api/v1/account",
        Some(&witness),
        None,
    )
    .await
    .context("reading the witness account")?;
    let mut grants = BTreeMap::new();
    add_balances(&mut grants, &granted, tokens.len() as i128);
    let conserved = sums == grants;
    println!(
        "  conservation   {} (per asset, available + held over {} users {} the grants)",
        if conserved { "holds" } else { "VIOLATED" },
        tokens.len(),
        if conserved { "equals" } else { "differs from" }
    );
    if !conserved {
        println!("    sums   {sums:?}\n    grants {grants:?}");
    }
    Ok(conserved)
}

/// One client's loop: place, wait for the answer, count it while measuring.
async fn trade(
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    m: &Market,
    side: &str,
    every: Option<Duration>,
    measuring: &AtomicBool,
    stop: &AtomicBool,
) -> Tally {
    let mut tally = Tally::default();
    let mut id = 0u64;
    // Spread the clients' first orders over one interval.
    let mut due = Instant::now() + every.map_or(Duration::ZERO, |e| e.mul_f64(fastrand::f64()));
    while !stop.load(Ordering::Relaxed) {
        id += 1;
        let req = json!({"id": id, "op": "order.place", "symbol": m.symbol, "side": side,
            "type": "limit", "price": m.price, "qty": m.lot})
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
            *tally.errors.entry("disconnected".into()).or_default() += 1;
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
        let Some(v) = answer else {
            *tally.errors.entry("disconnected".into()).or_default() += 1;
            break;
        };
        if measuring.load(Ordering::Relaxed) {
            if v["ok"] == true {
                tally
                    .latencies
                    .push(sent.elapsed().as_micros().max(1) as u64);
            } else {
                let code = v["error"]["code"].as_str().unwrap_or("?").to_string();
                *tally.errors.entry(code).or_default() += 1;
            }
        }
        if v["error"]["code"] == "rate_limited" && every.is_none() {
            // Over the connection's request rate (in the warm-up too): a closed loop backs
            // off as a client would.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tally
}

/// Adds `times` × each asset's available + held in an account to `sums`.
fn add_balances(sums: &mut BTreeMap<String, i128>, account: &Value, times: i128) {
    for (asset, b) in account["balances"].as_object().into_iter().flatten() {
        let total = decimal_units(b["available"].as_str().unwrap_or("0"))
            + decimal_units(b["held"].as_str().unwrap_or("0"));
        *sums.entry(asset.clone()).or_default() += total * times;
    }
}

/// A decimal string in units of 10^-12 (exact for every configured step), for summing.
fn decimal_units(s: &str) -> i128 {
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    let f = format!("{f:0<12}");
    format!("{i}{}", &f[..12]).parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_sum_exactly() {
        assert_eq!(decimal_units("1.5"), 1_500_000_000_000);
        assert_eq!(decimal_units("0.000000000001"), 1);
        let mut sums = BTreeMap::new();
        let account = json!({"balances": {"KRW": {"available": "10.5", "held": "0.5"}}});
        add_balances(&mut sums, &account, 3);
        assert_eq!(sums["KRW"], 33_000_000_000_000);
    }
}
