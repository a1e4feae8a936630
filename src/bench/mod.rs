//! `bourse bench`: whole-system benchmarks that start their own node processes (this
//! binary, `node`) on free loopback ports, in a scratch directory removed afterwards.
//! Clients and nodes share this machine, so the clients' CPU counts against the nodes':
//! the figures are a floor, not a ceiling. (`bourse load` measures running deployments.)

pub mod book;
pub mod chat;
pub mod kafka;
pub mod trading;

use crate::probe::{http_json, http_status};
use anyhow::{Context, bail};
use std::time::{Duration, Instant};

/// A benchmark's scratch directory (configs, data, node logs): removed at the end of the
/// run, kept when the run failed so the log its error names can be read.
pub(crate) struct BenchDir {
    pub(crate) path: std::path::PathBuf,
    keep: bool,
}

impl BenchDir {
    fn new(name: &str) -> anyhow::Result<BenchDir> {
        let path = std::env::temp_dir().join(format!("bourse-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(BenchDir { path, keep: false })
    }

    /// An error naming `log` in this directory, which is then kept.
    fn failed(&mut self, what: &str, log: &str) -> anyhow::Error {
        self.keep = true;
        anyhow::anyhow!("{what}; see {}", self.path.join(log).display())
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A node process of a benchmark, SIGKILLed when the handle drops.
pub(crate) struct NodeProcess {
    pub(crate) child: std::process::Child,
}

impl NodeProcess {
    /// Starts `bourse node --config config`, logging to `dir/<name>.log`.
    pub(crate) fn spawn(
        dir: &std::path::Path,
        name: &str,
        config: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["node", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(NodeProcess { child })
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Cluster routing benchmark parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Messages for the `send` throughput runs.
    #[arg(long, default_value_t = 200_000)]
    pub sends: u64,
    /// Sequential asks for the latency runs.
    #[arg(long, default_value_t = 5_000)]
    pub asks: u64,
}

/// `bourse bench cluster`: two node processes on loopback (feed off); node1 measures
/// `send` throughput and `ask` round trips to `echo` entities it owns and to ones node2
/// owns, through `POST /admin/bench/routing`.
pub async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let (_dir, nodes, gateways) = local_cluster(2, "cluster", &simulator_feed(None)).await?;
    let (g1, token) = (gateways[0], BENCH_TOKEN);
    println!("two nodes on loopback; node1 measures (debug builds measure the debug binary)");
    println!(
        "{:<8} {:<7} {:>10} {:>14} {:>10} {:>10}",
        "mode", "target", "messages", "msgs/s", "p50 µs", "p99 µs"
    );
    for (mode, count) in [("send", args.sends), ("ask", args.asks)] {
        for target in ["local", "remote"] {
            let body = serde_json::json!({"mode": mode, "target": target, "count": count});
            let (status, v) =
                http_json(g1, "POST", "/admin/bench/routing", Some(token), Some(&body))
                    .await
                    .context("calling node1")?;
            if status != 200 {
                bail!("{mode}/{target}: {status} {v}");
            }
            let us = |k: &str| v[k].as_u64().map_or("-".to_string(), |n| n.to_string());
            println!(
                "{:<8} {:<7} {:>10} {:>14.0} {:>10} {:>10}",
                mode,
                target,
                v["messages"],
                v["per_second"].as_f64().unwrap_or(0.0),
                us("p50_us"),
                us("p99_us")
            );
        }
    }
    drop(nodes);
    Ok(())
}

/// The admin token of the benchmarks' local clusters.
pub(crate) const BENCH_TOKEN: &str = "bench-admin-token-0123456789";

/// Starts `n` node processes on free loopback ports as one cluster (cheap password hashing,
/// throttles and the per-connection request rate out of the way, the simulator at
/// `feed_rate` trades/s per symbol or off) and waits until each sees all members up.
/// Returns the directory (removed at the end unless a start failed), the processes and
/// the gateway ports.
/// The `[storage]` section of a bench cluster: SQLite in the bench folder, or, when
/// `BOURSE_BENCH_POSTGRES_URL` names a PostgreSQL server, a database of its own there
/// (`bourse_bench_<name>`, replaced on every run and left for inspection afterwards).
async fn bench_storage(name: &str) -> anyhow::Result<String> {
    let Ok(admin) = std::env::var("BOURSE_BENCH_POSTGRES_URL") else {
        return Ok(String::new());
    };
    let db = format!("bourse_bench_{name}");
    let url = bourse_storage::postgres::create_database(&admin, &db)
        .await
        .with_context(|| format!("creating database {db} for the benchmark"))?;
    println!("storage: postgres database {db} (BOURSE_BENCH_POSTGRES_URL)");
    Ok(format!(
        "[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
    ))
}

/// The `[feed]` section of a benchmark node: the simulator at `rate` trades per second per
/// symbol, or no feed.
pub(crate) fn simulator_feed(rate: Option<u32>) -> String {
    match rate {
        Some(rate) => format!("[feed]\nkind = \"simulator\"\ntrades_per_sec = {rate}\n"),
        None => "[feed]\nkind = \"none\"\n".to_string(),
    }
}

/// Starts `n` nodes with `feed` (a `[feed]` section, and any other the feed needs) and
/// waits until every one is ready and sees all of them.
pub(crate) async fn local_cluster(
    n: usize,
    name: &str,
    feed: &str,
) -> anyhow::Result<(BenchDir, Vec<NodeProcess>, Vec<u16>)> {
    let mut dir = BenchDir::new(name)?;
    let free = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let gateways: Vec<u16> = (0..n).map(|_| free()).collect::<Result<_, _>>()?;
    let cluster: Vec<u16> = (0..n).map(|_| free()).collect::<Result<_, _>>()?;
    let storage = bench_storage(name).await?;
    let mut procs = Vec::new();
    for i in 0..n {
        let seeds: Vec<String> = cluster
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("\"127.0.0.1:{p}\""))
            .collect();
        let config = dir.path.join(format!("node{}.toml", i + 1));
        std::fs::write(
            &config,
            format!(
                "[node]\nname = \"node{}\"\ndata_dir = \"{}\"\n[gateway]\nlisten = \"127.0.0.1:{}\"\nrequests_per_sec = 10000\noutbound_queue = 65536\n\
                 [cluster]\nlisten = \"127.0.0.1:{}\"\nseeds = [{}]\ncookie = \"bench\"\n[admin]\ntoken = \"{BENCH_TOKEN}\"\n\
                 [auth]\nsecret = \"bench-auth-secret-0123456789\"\nargon2_memory_kib = 64\nargon2_iterations = 1\n\
                 login_per_user_per_min = 1000000\nlogin_per_ip_per_min = 1000000\nregister_per_ip_per_min = 1000000\n{feed}{storage}",
                i + 1,
                dir.path.join("data").display(),
                gateways[i],
                cluster[i],
                seeds.join(",")
            ),
        )?;
        procs.push(NodeProcess::spawn(
            &dir.path,
            &format!("node{}", i + 1),
            &config,
        )?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, port) in gateways.iter().enumerate() {
        while http_status(*port, "/readyz").await != Some(200) {
            let log = format!("node{}.log", i + 1);
            if let Ok(Some(status)) = procs[i].child.try_wait() {
                return Err(dir.failed(&format!("node{} exited ({status})", i + 1), &log));
            }
            if Instant::now() > deadline {
                return Err(dir.failed(&format!("node{} not ready in 30 s", i + 1), &log));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    loop {
        let mut all = true;
        for port in &gateways {
            let up = http_json(*port, "GET", "/admin/cluster", Some(BENCH_TOKEN), None)
                .await
                .map_or(0, |(_, v)| {
                    v["ring"]["members"].as_array().map_or(0, Vec::len)
                });
            all &= up == n;
        }
        if all {
            return Ok((dir, procs, gateways));
        }
        if Instant::now() > deadline {
            return Err(dir.failed("the nodes did not form a cluster in 30 s", "node1.log"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
