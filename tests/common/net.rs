//! A network of separate hosts on this machine for whole-system tests: a bridge in this
//! namespace and one network namespace per node (a veth pair each), with links between
//! hosts that can be cut and healed. Falls back to loopback addresses where namespaces
//! cannot be made (not root), unless `BOURSE_REQUIRE_NETNS` is set.

use super::Host;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The test's network: a bridge in this namespace and one namespace per node, removed
/// again on drop (deleting a namespace deletes its end of the veth, and so the pair).
pub struct Net {
    pub tag: String,
    /// The bridge's address: where the nodes reach this machine (and its PostgreSQL).
    pub gateway: String,
    /// A second address of the bridge, for the store alone: cutting a host off from it
    /// leaves its clients (which come from `gateway`) connected.
    pub store_addr: String,
    pub hosts: Vec<Host>,
    pub namespaces: bool,
    /// Namespaces asked for (teardown removes every one, made or half made).
    count: usize,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `nft args` in namespace `ns`, with `stdin` as its input.
fn nft(ns: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    use std::io::Write;
    let what = format!("nft {} in {ns}", args.join(" "));
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input
            .write_all(text.as_bytes())
            .map_err(|e| format!("{what}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Namespaces when this process may make them, loopback addresses otherwise.
    pub fn create(n: usize) -> Net {
        // Several networks of one test process must not share names or a subnet (all
        // inside 10.199.0.0/16, which scripts/pg-server admits).
        static MADE: AtomicU32 = AtomicU32::new(0);
        let k = MADE.fetch_add(1, Ordering::Relaxed) % 4;
        let pid = std::process::id();
        let subnet = format!("10.199.{}", 20 + (pid % 50) * 4 + k);
        let mut net = Net {
            tag: format!("bo{pid}x{k}"),
            gateway: format!("{subnet}.1"),
            store_addr: format!("{subnet}.2"),
            hosts: Vec::new(),
            namespaces: true,
            count: n,
        };
        match net.build(n, &subnet) {
            Ok(()) => {
                println!(
                    "net: {n} network namespaces on bridge {}br ({subnet}.0/24)",
                    net.tag
                );
            }
            Err(e) => {
                net.teardown();
                assert!(
                    std::env::var("BOURSE_REQUIRE_NETNS").is_err(),
                    "BOURSE_REQUIRE_NETNS is set but the namespaces could not be made: {e}"
                );
                println!(
                    "net: FALLBACK to loopback addresses, separate data directories (no namespaces: {e})"
                );
                net.namespaces = false;
                net.gateway = "127.0.0.1".into();
                net.store_addr = "127.0.0.1".into();
                net.hosts = (1..=n)
                    .map(|i| Host {
                        addr: format!("127.0.0.{}", 10 + i),
                        netns: None,
                    })
                    .collect();
            }
        }
        net
    }

    fn build(&mut self, n: usize, subnet: &str) -> Result<(), String> {
        let bridge = format!("{}br", self.tag);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.gateway),
            "dev",
            &bridge,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.store_addr),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 1..=n {
            let ns = format!("{}n{i}", self.tag);
            let (outside, inside) = (format!("{}h{i}", self.tag), format!("{}g{i}", self.tag));
            let addr = format!("{subnet}.{}", 10 + i);
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["link", "set", &outside, "master", &bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inside,
            ])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            self.hosts.push(Host {
                addr,
                netns: Some(ns),
            });
        }
        Ok(())
    }

    fn teardown(&self) {
        for i in 1..=self.count {
            let _ = ip(&["netns", "delete", &format!("{}n{i}", self.tag)]);
            let _ = ip(&["link", "delete", &format!("{}h{i}", self.tag)]);
        }
        let _ = ip(&["link", "delete", &format!("{}br", self.tag)]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if self.namespaces {
            self.teardown();
        }
    }
}

impl Net {
    /// Cuts the link between hosts `a` and `b` both ways (a blackhole route to the other
    /// in each namespace): their packets vanish, their TCP connections stay open and go
    /// silent, as on a real partition. Both keep reaching the bridge (clients, the store).
    pub fn cut(&self, a: usize, b: usize) {
        self.route("add", a, b);
        self.route("add", b, a);
    }

    /// Heals what [`Net::cut`] cut.
    pub fn heal(&self, a: usize, b: usize) {
        self.route("del", a, b);
        self.route("del", b, a);
    }

    /// Destroys the TCP sockets between hosts `a` and `b` on both ends (`ss -K`), as a
    /// middlebox reset would: each end sees its sessions to the other close.
    pub fn reset(&self, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let dst = &self.hosts[to].addr;
            let ss = [
                "netns",
                "exec",
                self.netns(from),
                "ss",
                "-K",
                "-t",
                "dst",
                dst,
            ];
            if let Err(e) = ip(&ss) {
                panic!("{e}");
            }
        }
    }

    /// Cuts the link between hosts `a` and `b` both ways with a rejecting firewall (nft,
    /// `reject with tcp reset` on each one's output to the other): their sessions are
    /// reset and every redial is refused, so each sees the other's port refuse
    /// connections, as if its process were gone. Panics without `nft`.
    pub fn reject(&self, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let (ns, table) = (self.netns(from), format!("reject{to}"));
            let rule = format!(
                "table inet {table} {{\n chain out {{\n  type filter hook output priority 0;\n  ip daddr {} meta l4proto tcp reject with tcp reset\n }}\n}}\n",
                self.hosts[to].addr
            );
            if let Err(e) = nft(ns, &["-f", "-"], Some(&rule)) {
                panic!("{e}");
            }
        }
    }

    /// Heals what [`Net::reject`] cut.
    pub fn unreject(&self, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let table = format!("reject{to}");
            if let Err(e) = nft(self.netns(from), &["delete", "table", "inet", &table], None) {
                panic!("{e}");
            }
        }
    }

    /// Cuts host `i` off from the store's address (and only that).
    pub fn cut_store(&self, i: usize) {
        self.blackhole("add", i, &self.store_addr);
    }

    /// Heals what [`Net::cut_store`] cut.
    pub fn heal_store(&self, i: usize) {
        self.blackhole("del", i, &self.store_addr);
    }

    fn route(&self, op: &str, from: usize, to: usize) {
        self.blackhole(op, from, &self.hosts[to].addr);
    }

    /// Host `i`'s namespace (links are cut and reset inside it).
    fn netns(&self, i: usize) -> &str {
        self.hosts[i]
            .netns
            .as_deref()
            .expect("cutting links needs namespaces")
    }

    fn blackhole(&self, op: &str, from: usize, addr: &str) {
        let target = format!("{addr}/32");
        if let Err(e) = ip(&["-n", self.netns(from), "route", op, "blackhole", &target]) {
            panic!("{e}");
        }
    }
}
