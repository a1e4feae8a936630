//! `bourse demo --nodes N`: a local cluster of N node processes (children of this one) on
//! loopback, sharing ./bourse-data. Gateways on 8080, 8081, ...; cluster ports 7101, 7102,
//! ...; each node's log in ./bourse-data/nodeN.log. Ctrl-C or SIGTERM stops them all, each
//! handing its entities off as it leaves.

use crate::probe::http_status;
use anyhow::{Context, bail};
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

struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        // Ask every node to leave (SIGTERM), then wait; kill what hangs.
        for (_, child) in &self.0 {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for (name, child) in &mut self.0 {
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    println!("{name} stopped ({status})");
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    println!("{name} killed after 20 s");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Runs the local cluster until Ctrl-C/SIGTERM or a node exits.
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
        let log = std::fs::File::create(data.join(format!("{name}.log")))?;
        let child = Command::new(&exe)
            .args(["node", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        children.0.push((name, child));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..nodes {
        let port = FIRST_GATEWAY_PORT + i as u16;
        while http_status(port, "/readyz").await != Some(200) {
            if let Some((name, child)) = children.0.get_mut(i)
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("{name} exited ({status}); see {DATA_DIR}/{name}.log");
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
    for i in 0..nodes {
        let port = FIRST_GATEWAY_PORT + i as u16;
        println!(
            "  node{}  http://127.0.0.1:{port}  ws://127.0.0.1:{port}/ws  (log {DATA_DIR}/node{}.log)",
            i + 1,
            i + 1
        );
    }
    println!(
        "  cluster    curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{FIRST_GATEWAY_PORT}/admin/cluster"
    );
    println!("admin token: {token}");
    println!("Stop with Ctrl-C (every node hands its entities off and exits).");
    loop {
        tokio::select! {
            _ = crate::node::stop_signal() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for (name, child) in children.0.iter_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        eprintln!("{name} exited ({status}); stopping the others");
                        return Ok(());
                    }
                }
            }
        }
    }
    println!("stopping {nodes} nodes ...");
    Ok(())
}
