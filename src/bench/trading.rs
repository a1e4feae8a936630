//! `bourse bench trading`: `bourse load trading` against a local cluster of node processes
//! it starts itself (feed off, cheap password hashing, high per-IP limits), so the
//! registration of many users is quick. Clients share the machine with the nodes.

use super::{BENCH_TOKEN, local_cluster};
use crate::load::Target;
use crate::load::trading::{TradingParams, drive};

/// End-to-end trading benchmark parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct TradingArgs {
    /// Node processes in the local cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    #[command(flatten)]
    pub params: TradingParams,
}

/// Runs the benchmark and prints its figures.
pub async fn trading(args: TradingArgs) -> anyhow::Result<()> {
    let n = args.nodes.max(1);
    let (_dir, procs, gateways) = local_cluster(n, "trading", &super::simulator_feed(None)).await?;
    println!("{n} nodes up (gateways {gateways:?})");
    let urls: Vec<String> = gateways
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let targets = Target::parse_all(&urls)?;
    drive(&targets, Some(BENCH_TOKEN), &args.params, true).await?;
    drop(procs);
    Ok(())
}
