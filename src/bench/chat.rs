//! `bourse bench chat`: `bourse load chat` against a local cluster it starts itself (feed
//! off, cheap password hashing, high per-IP limits).

use super::local_cluster;
use crate::load::Target;
use crate::load::chat::{ChatParams, drive};

/// Chat fan-out benchmark parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// Node processes in the local cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    #[command(flatten)]
    pub params: ChatParams,
}

/// Runs the benchmark and prints its figures.
pub async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let n = args.nodes.max(1);
    let (_dir, procs, gateways) = local_cluster(n, "chat", &super::simulator_feed(None)).await?;
    println!("{n} nodes up (gateways {gateways:?})");
    let urls: Vec<String> = gateways
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    drive(&Target::parse_all(&urls)?, &args.params).await?;
    drop(procs);
    Ok(())
}
