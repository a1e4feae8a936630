//! `bourse demo --nodes N`: a local cluster of N node processes (children of this one) on
//! loopback, sharing ./bourse-data. Gateways on 8080, 8081, ...; cluster ports 7101, 7102,
//! ...; each node's log in ./bourse-data/nodeN.log. A node process that dies is started
//! again after a growing backoff (the survivors serve its entities meanwhile); Ctrl-C or
//! SIGTERM stops them all, each handing its entities off as it leaves.

use crate::probe::http_status;
use anyhow::{Context, bail};
use bourse_supervision::{Decision, RestartPolicy, RestartTracker};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DATA_DIR: &str = "./bourse-data";
const FIRST_GATEWAY_PORT: u16 = 8080;
const FIRST_CLUSTER_PORT: u16 = 7101;

/// The admin token of a data directory: from config when set, else one generated at
/// random on first use and kept in `<data_dir>/admin-token`.
pub fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    kept_secret(data_dir, "admin-token")
}

/// The demo's token-signing secret: random per data directory and kept there, so tokens
/// survive a restart and no two demo directories share one.
pub fn auth_secret(data_dir: &Path) -> anyhow::Result<String> {
    kept_secret(data_dir, "auth-secret")
}

/// A random 32-hex-digit secret kept in `data_dir/name`.
fn kept_secret(data_dir: &Path, name: &str) -> anyhow::Result<String> {
    let file = data_dir.join(name);
    if let Ok(secret) = std::fs::read_to_string(&file) {
        let secret = secret.trim().to_string();
        if secret.len() >= 16 {
            return Ok(secret);
        }
    }
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .with_context(|| format!("reading /dev/urandom for {name}"))?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(data_dir)?;
    std::fs::write(&file, &secret).with_context(|| format!("writing {}", file.display()))?;
    Ok(secret)
}

/// One node process of the demo cluster, and how to start it again.
struct DemoNode {
    name: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Failures of this node: a node that keeps dying waits longer each time.
    failures: RestartTracker,
    /// When a dead node is due to start again.
    restart_at: Option<Instant>,
}

impl DemoNode {
    /// Starts the process; its log is appended to, so a crash's log survives the restart.
    fn spawn(&mut self, exe: &Path) -> anyhow::Result<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(exe)
            .args(["node", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        let pid = child.id();
        self.child = Some(child);
        Ok(pid)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
}

/// Restarting a dead demo node: after 0.5-1 s, doubling per failure within a minute up to
/// 15-30 s; the demo never gives up on a node (Ctrl-C stops it).
fn node_restart_policy() -> RestartPolicy {
    RestartPolicy {
        max_restarts: u32::MAX,
        within: Duration::from_secs(60),
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(30),
    }
}

struct Children(Vec<DemoNode>);

impl Drop for Children {
    fn drop(&mut self) {
        // Ask every node to leave (SIGTERM), then wait; kill what hangs.
        for node in &self.0 {
            if let Some(child) = &node.child {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &mut self.0 {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    println!("{} stopped ({status})", node.name);
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    println!("{} killed after 20 s", node.name);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Runs the local cluster until Ctrl-C/SIGTERM. A node process that dies is reported and
/// started again after a backoff; it rejoins and takes its share of the entities back.
pub async fn run_cluster(nodes: usize) -> anyhow::Result<()> {
    if !(1..=9).contains(&nodes) {
        bail!("--nodes takes 1 to 9");
    }
    let data = PathBuf::from(DATA_DIR);
    std::fs::create_dir_all(&data).with_context(|| format!("creating {DATA_DIR}"))?;
    let token = admin_token(&data)?;
    let secret = auth_secret(&data)?;
    let exe = std::env::current_exe().context("locating the bourse binary")?;
    let mut children = Children(Vec::new());
    for i in 0..nodes {
        let name = format!("node{}", i + 1);
        let seeds: Vec<String> = (0..nodes)
            .filter(|j| *j != i)
            .map(|j| format!("\"127.0.0.1:{}\"", FIRST_CLUSTER_PORT + j as u16))
            .collect();
        let config = data.join(format!("demo-{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[node]\nname = \"{name}\"\ndata_dir = \"{DATA_DIR}\"\n[gateway]\nlisten = \"127.0.0.1:{}\"\n[cluster]\nlisten = \"127.0.0.1:{}\"\nseeds = [{}]\ncookie = \"bourse-demo-{}\"\n[admin]\ntoken = \"{token}\"\n[auth]\nsecret = \"{secret}\"\n",
                FIRST_GATEWAY_PORT + i as u16,
                FIRST_CLUSTER_PORT + i as u16,
                seeds.join(", "),
                &token[..8],
            ),
        )?;
        let log = data.join(format!("{name}.log"));
        // A fresh demo run starts each log anew; restarts within the run append.
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut node = DemoNode {
            name,
            config,
            log,
            child: None,
            failures: RestartTracker::new(node_restart_policy()),
            restart_at: None,
        };
        node.spawn(&exe)?;
        children.0.push(node);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..nodes {
        let port = FIRST_GATEWAY_PORT + i as u16;
        while http_status(port, "/readyz").await != Some(200) {
            if let Some(node) = children.0.get_mut(i)
                && let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "{} exited ({status}); see {DATA_DIR}/{}.log",
                    node.name,
                    node.name
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "node{} not ready in 60 s; see {DATA_DIR}/node{}.log",
                    i + 1,
                    i + 1
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("bourse demo: a {nodes}-node cluster is up; data in {DATA_DIR}");
    for (i, node) in children.0.iter().enumerate() {
        let port = FIRST_GATEWAY_PORT + i as u16;
        println!(
            "  {}  http://127.0.0.1:{port}  ws://127.0.0.1:{port}/ws  (pid {}, log {DATA_DIR}/{}.log)",
            node.name,
            node.pid(),
            node.name
        );
    }
    println!(
        "  cluster    curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{FIRST_GATEWAY_PORT}/admin/cluster"
    );
    println!("admin token: {token}");
    println!("Stop with Ctrl-C (every node hands its entities off and exits).");
    // One listener for the whole run: one made anew each turn would miss a signal that
    // arrives between two turns (CI saw a SIGTERM go unanswered that way).
    let mut stop = std::pin::pin!(crate::node::stop_signal());
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let now = Instant::now();
                for node in children.0.iter_mut() {
                    watch(node, &exe, now);
                }
            }
        }
    }
    println!("stopping {nodes} nodes ...");
    Ok(())
}

/// Notices a node that died and starts it again when its backoff is over.
fn watch(node: &mut DemoNode, exe: &Path, now: Instant) {
    if let Some(child) = node.child.as_mut()
        && let Ok(Some(status)) = child.try_wait()
    {
        node.child = None;
        let after = match node.failures.on_failure(now) {
            Decision::Restart { after } => after,
            Decision::Escalate => node_restart_policy().backoff_max,
        };
        println!(
            "{} exited ({status}); the others take over its entities; restarting it in {:.1} s (log {DATA_DIR}/{}.log)",
            node.name,
            after.as_secs_f64(),
            node.name
        );
        node.restart_at = Some(now + after);
    }
    if node.restart_at.is_some_and(|at| now >= at) {
        node.restart_at = None;
        match node.spawn(exe) {
            Ok(pid) => println!("{} restarted (pid {pid})", node.name),
            Err(e) => {
                eprintln!("{}: {e:#}; trying again", node.name);
                node.restart_at = Some(now + node_restart_policy().backoff_max);
            }
        }
    }
}
