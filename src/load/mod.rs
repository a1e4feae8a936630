//! `bourse load`: the load tool operators run against any deployment, given one or more
//! gateway URLs. Each scenario drives clients through the public protocol only, shows a
//! live progress line, keeps latencies in HDR histograms, reads each gateway's `/metrics`
//! (memory, CPU, connections) before and after, and can write its figures as JSON.
//!
//! One process holds at most its file-descriptor limit of sockets: the tool raises its soft
//! limit to the hard one and says when that caps a run (run several processes beyond it).

pub mod chat;
pub mod connections;
pub mod fanout;
pub mod plot;
pub mod storm;
pub mod trading;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::path::PathBuf;

/// The scenarios.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Scenario {
    /// Clients that connect (at a ramp rate, or all at once: a connect storm), subscribe
    /// to one channel and stay: connect latency, refusals, memory per connection per node.
    Connections(connections::ConnectionsArgs),
    /// WebSocket subscribers on one channel while it flows: delivered messages per
    /// second, event latency, and the gateways' CPU per delivered message.
    Fanout(fanout::FanoutArgs),
    /// A reconnect storm: clients that lose their gateway (a node killed or drained)
    /// reconnect to the others with backoff and full jitter and resume with `since`.
    Storm(storm::StormArgs),
    /// Users placing orders over WebSocket (closed loop, or open loop at a rate):
    /// acknowledged orders/s, place-to-ack latency, errors, and a conservation check.
    Trading(trading::TradingArgs),
    /// One chat room: members subscribed over the gateways, senders posting at a rate:
    /// delivered messages/s and send-to-receive latency.
    Chat(chat::ChatArgs),
}

/// Runs a scenario.
pub async fn run(scenario: Scenario) -> anyhow::Result<()> {
    match scenario {
        Scenario::Connections(args) => connections::run(args).await,
        Scenario::Fanout(args) => fanout::run(args).await,
        Scenario::Storm(args) => storm::run(args).await,
        Scenario::Trading(args) => trading::run(args).await,
        Scenario::Chat(args) => chat::run(args).await,
    }
}

/// What every scenario takes: where the gateways are and where the report goes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// A gateway's base URL (`http://host:port`); repeat it for several, and clients are
    /// spread over them in turn.
    #[arg(long = "url", default_value = "http://127.0.0.1:8080")]
    pub urls: Vec<String>,
    /// The admin token, for gateways whose `/metrics` is not public.
    #[arg(long, env = "BOURSE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Also write the run's figures as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// One gateway under load.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// `host:port`.
    pub addr: String,
}

impl Target {
    /// The targets of `urls`: `http://host:port` each (TLS is not served yet).
    pub fn parse_all(urls: &[String]) -> anyhow::Result<Vec<Target>> {
        urls.iter()
            .map(|url| {
                let Some(rest) = url.strip_prefix("http://") else {
                    bail!("--url {url}: only http://host:port URLs are supported");
                };
                let addr = rest.trim_end_matches('/');
                if addr.is_empty() || addr.contains('/') || !addr.contains(':') {
                    bail!("--url {url}: expected http://host:port");
                }
                Ok(Target {
                    url: url.clone(),
                    addr: addr.to_string(),
                })
            })
            .collect()
    }
}

/// A gateway process's figures from its `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeFigures {
    pub rss_bytes: f64,
    pub cpu_seconds: f64,
    pub connections: f64,
}

/// The value of an unlabelled sample `name` in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads a gateway's process figures, or says why it cannot.
pub async fn scrape(target: &Target, token: Option<&str>) -> anyhow::Result<NodeFigures> {
    let (status, text) = crate::probe::http_text_to(&target.addr, "GET", "/metrics", token, "")
        .await
        .with_context(|| format!("{}: /metrics did not answer", target.url))?;
    if status != 200 {
        bail!(
            "{}: /metrics answered {status} (pass --admin-token when it is not public)",
            target.url
        );
    }
    let get = |name| {
        sample(&text, name).with_context(|| format!("{}: /metrics has no {name}", target.url))
    };
    Ok(NodeFigures {
        rss_bytes: get("process_resident_memory_bytes")?,
        cpu_seconds: get("process_cpu_seconds_total")?,
        connections: get("bourse_gateway_connections")?,
    })
}

/// `wanted` clients, or as many as this process's sockets allow, saying so.
pub fn within_socket_budget(wanted: usize) -> usize {
    let budget = socket_budget();
    if wanted as u64 <= budget {
        return wanted;
    }
    println!(
        "the file-descriptor limit caps this process at {budget} sockets: running {budget} of {wanted} clients (run several load processes for more)"
    );
    budget as usize
}

/// Raises the open-file limit to the hard limit; the client sockets this process can hold.
fn socket_budget() -> u64 {
    /// Descriptors kept for everything but client sockets.
    const SPARE: u64 = 64;
    let soft = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024);
    soft.saturating_sub(SPARE)
}

/// A latency histogram in microseconds, 1 µs to 10 minutes at 3 significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("building a histogram")
}

/// `µs` as a short human figure.
pub fn human_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else if us >= 1000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// p50/p99/p99.9/max of a histogram, as a line and as JSON (µs).
pub fn percentiles(h: &Histogram<u64>) -> (String, Value) {
    if h.is_empty() {
        return ("no samples".into(), Value::Null);
    }
    let q = |p: f64| h.value_at_quantile(p);
    let line = format!(
        "p50 {}  p99 {}  p99.9 {}  max {}",
        human_us(q(0.5)),
        human_us(q(0.99)),
        human_us(q(0.999)),
        human_us(h.max())
    );
    let json = json!({
        "count": h.len(), "p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999), "max_us": h.max(),
    });
    (line, json)
}

/// Writes the report where `--report` says, if it says.
pub fn write_report(common: &Common, report: &Value) -> anyhow::Result<()> {
    if let Some(path) = &common.report {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the report to {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

/// The live progress line: a bar over `len` with a message, drawn on a terminal only.
pub fn progress(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_samples_parse() {
        let t = Target::parse_all(&["http://10.0.0.5:8080/".into()]).unwrap();
        assert_eq!(t[0].addr, "10.0.0.5:8080");
        assert!(Target::parse_all(&["https://x:1".into()]).is_err());
        assert!(Target::parse_all(&["http://x".into()]).is_err());
        let text = "# HELP x\nprocess_resident_memory_bytes 1.5e7\nbourse_gateway_connections{a=\"b\"} 3\nbourse_gateway_connections 7\n";
        assert_eq!(sample(text, "process_resident_memory_bytes"), Some(1.5e7));
        assert_eq!(sample(text, "bourse_gateway_connections"), Some(7.0));
        assert_eq!(sample(text, "process_cpu_seconds_total"), None);
    }
}
