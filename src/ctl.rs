//! `bourse ctl`: the admin API (docs/PROTOCOL.md "Admin") as readable tables, for operators who
//! would rather not write curl lines. Any node answers for the whole cluster, so one
//! `--url` is enough.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// Where and as whom to call the admin API.
#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// Any node's gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "BOURSE_URL")]
    url: String,
    /// The admin token; without it, `BOURSE_ADMIN_TOKEN`, then `<data-dir>/admin-token`
    /// (what `bourse demo` keeps).
    #[arg(long, env = "BOURSE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where `bourse demo` keeps its admin token.
    #[arg(long, default_value = "./bourse-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum CtlCommand {
    /// Members, their status and their share of the ring.
    Cluster,
    /// Entities over the whole cluster, sorted by kind and key.
    Entities {
        /// Only this kind (`book`, `account`, `symbol`, `room`, `session`, `alert`).
        #[arg(long)]
        kind: Option<String>,
        /// Only this node's.
        #[arg(long)]
        node: Option<String>,
        /// At most this many rows (pages of up to 1000 are fetched as needed).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One entity: its owner, counters and state summary.
    Entity { kind: String, key: String },
    /// Chaos: panic an entity (its region restarts it), or a share of a node's.
    Kill {
        kind: String,
        /// The entity's key; leave out with `--fraction`.
        key: Option<String>,
        /// Kill each active entity of the kind with this probability (0 < f <= 1).
        #[arg(long, conflicts_with = "key")]
        fraction: Option<f64>,
        /// The node whose entities `--fraction` kills (default: the one asked).
        #[arg(long, requires = "fraction")]
        node: Option<String>,
    },
    /// Drain a node: it hands its entities off, then exits.
    Leave { node: String },
    /// Declare a node that is no longer heard gone for good: it stops counting towards a
    /// majority (for a node known dead; see docs/OPERATIONS.md "A cluster").
    Down { node: String },
    /// One node's client connections (WebSocket and SSE), by id.
    Connections {
        /// Whose connections (default: the node asked).
        #[arg(long)]
        node: Option<String>,
        /// At most this many rows (1..1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Chaos: panic one client connection (a WebSocket closes with 1011).
    KillConnection {
        id: u64,
        /// The node holding it (default: the node asked).
        #[arg(long)]
        node: Option<String>,
    },
}

struct Client {
    agent: ureq::Agent,
    url: String,
    token: String,
}

impl Client {
    fn new(args: &CtlArgs) -> anyhow::Result<Client> {
        let token = match &args.token {
            Some(t) => t.clone(),
            None => {
                let file = args.data_dir.join("admin-token");
                std::fs::read_to_string(&file)
                    .map(|t| t.trim().to_string())
                    .with_context(|| {
                        format!(
                            "no admin token: pass --token, set BOURSE_ADMIN_TOKEN, or run \
                             where {} exists",
                            file.display()
                        )
                    })?
            }
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ok(Client {
            agent,
            url: args.url.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// `GET path?query` (ureq encodes the query).
    fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.url);
        let response = self
            .agent
            .get(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .query_pairs(query.iter().copied())
            .call();
        Self::answer(response, &format!("GET {url}"))
    }

    /// `POST path` with a JSON body.
    fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.url);
        let response = self
            .agent
            .post(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes());
        Self::answer(response, &format!("POST {url}"))
    }

    /// The JSON answer; a non-2xx one becomes an error with the server's code and message.
    fn answer(
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        what: &str,
    ) -> anyhow::Result<Value> {
        let mut response = response.with_context(|| what.to_string())?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer to {what}"))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !(200..300).contains(&status) {
            let code = value["error"]["code"].as_str().unwrap_or("error");
            let message = value["error"]["message"].as_str().unwrap_or("");
            bail!("{status} {code}: {message}");
        }
        Ok(value)
    }
}

/// Left-aligned columns, two spaces apart, under a header.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// A JSON value as a table cell (strings without quotes, null as `-`).
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs one `ctl` command; what it prints goes to stdout.
pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    let client = Client::new(&args)?;
    match args.command {
        CtlCommand::Cluster => {
            let v = client.get("/admin/cluster", &[])?;
            let owners = &v["ring"]["owners"];
            let rows: Vec<Vec<String>> = v["members"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|m| {
                    let node = cell(&m["node"]);
                    let share = owners[&node]
                        .as_f64()
                        .map_or("-".into(), |s| format!("{:.1}%", s * 100.0));
                    vec![
                        node,
                        cell(&m["status"]),
                        cell(&m["gateway"]),
                        cell(&m["addr"]),
                        cell(&m["entities"]),
                        share,
                        format!("{} ms", cell(&m["last_heartbeat_ms"])),
                    ]
                })
                .collect();
            println!(
                "asked {}; ring of {}",
                cell(&v["node"]),
                v["ring"]["members"]
            );
            let left_out = v["left_out"].as_array().map_or(0, Vec::len);
            if left_out > 0 {
                println!(
                    "standing aside (they lost a member that others still hear): {}",
                    v["left_out"]
                );
            }
            if v["serving"] == json!(false) {
                println!(
                    "{} stands down (cut off from the majority of {}, standing aside, or without its store) and owns nothing",
                    cell(&v["node"]),
                    v["agreed"]
                );
            }
            println!(
                "{}",
                table(
                    &[
                        "NODE", "STATUS", "GATEWAY", "CLUSTER", "ENTITIES", "RING", "HEARD"
                    ],
                    &rows
                )
            );
        }
        CtlCommand::Entities { kind, node, limit } => {
            let mut rows = Vec::new();
            let mut after: Option<String> = None;
            while rows.len() < limit {
                let page_limit = (limit - rows.len()).min(1000).to_string();
                let mut query = vec![("limit", page_limit.as_str())];
                for (k, v) in [("kind", &kind), ("node", &node), ("after", &after)] {
                    if let Some(v) = v {
                        query.push((k, v.as_str()));
                    }
                }
                let page = client.get("/admin/entities", &query)?;
                let page = page.as_array().cloned().unwrap_or_default();
                let Some(last) = page.last() else { break };
                after = Some(format!("{}/{}", cell(&last["kind"]), cell(&last["key"])));
                for e in &page {
                    rows.push(vec![
                        cell(&e["kind"]),
                        cell(&e["key"]),
                        cell(&e["node"]),
                        if e["active"] == true { "yes" } else { "no" }.into(),
                        cell(&e["mailbox"]),
                        cell(&e["messages"]),
                        cell(&e["restarts"]),
                        age(&e["activated_at"]),
                    ]);
                }
            }
            println!(
                "{}",
                table(
                    &[
                        "KIND", "KEY", "NODE", "ACTIVE", "MAILBOX", "MESSAGES", "RESTARTS",
                        "UP FOR"
                    ],
                    &rows
                )
            );
            println!("{} entities", rows.len());
        }
        CtlCommand::Entity { kind, key } => {
            let v = client.get(
                &format!("/admin/entities/{}/{}", encode(&kind), encode(&key)),
                &[],
            )?;
            let mut rows = Vec::new();
            for field in [
                "kind",
                "key",
                "owner",
                "active",
                "node",
                "mailbox",
                "messages",
                "restarts",
                "activated_at",
            ] {
                if !v[field].is_null() {
                    rows.push(vec![field.to_string(), cell(&v[field])]);
                }
            }
            if let Some(state) = v["state"].as_object() {
                for (k, val) in state {
                    rows.push(vec![format!("state.{k}"), cell(val)]);
                }
            }
            println!("{}", table(&["FIELD", "VALUE"], &rows));
        }
        CtlCommand::Kill {
            kind,
            key,
            fraction,
            node,
        } => {
            let body = match (key, fraction) {
                (Some(key), None) => json!({"kind": kind, "key": key}),
                (None, Some(f)) => json!({"kind": kind, "fraction": f, "node": node}),
                _ => bail!("give a key, or --fraction"),
            };
            let body = strip_nulls(body);
            let v = client.post("/admin/chaos/kill", body)?;
            match v["killed"].as_array() {
                Some(keys) if keys.is_empty() => {
                    println!("killed no {kind} entity on {}", cell(&v["node"]))
                }
                Some(keys) => println!(
                    "killed {} {kind} entities on {}: {}",
                    keys.len(),
                    cell(&v["node"]),
                    keys.iter().map(cell).collect::<Vec<_>>().join(" ")
                ),
                None => println!(
                    "killed {}/{}",
                    cell(&v["killed"]["kind"]),
                    cell(&v["killed"]["key"])
                ),
            }
        }
        CtlCommand::Connections { node, limit } => {
            let limit = limit.to_string();
            let mut query = vec![("limit", limit.as_str())];
            if let Some(node) = &node {
                query.push(("node", node.as_str()));
            }
            let v = client.get("/admin/connections", &query)?;
            let rows: Vec<Vec<String>> = v["connections"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|c| {
                    let channels = c["channels"]
                        .as_array()
                        .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(","))
                        .unwrap_or_default();
                    let secs = c["age_ms"].as_u64().unwrap_or(0) / 1000;
                    vec![
                        cell(&c["id"]),
                        cell(&c["transport"]),
                        cell(&c["user"]),
                        cell(&c["queue"]),
                        format!("{secs}s"),
                        channels,
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &["ID", "TRANSPORT", "USER", "QUEUE", "AGE", "CHANNELS"],
                    &rows
                )
            );
            println!(
                "{} of {} connections on {}",
                rows.len(),
                cell(&v["total"]),
                cell(&v["node"])
            );
        }
        CtlCommand::KillConnection { id, node } => {
            let body = strip_nulls(json!({"id": id, "node": node}));
            let v = client.post("/admin/chaos/kill-connection", body)?;
            println!(
                "killed connection {} on {}",
                cell(&v["killed"]["id"]),
                cell(&v["killed"]["node"])
            );
        }
        CtlCommand::Down { node } => {
            let v = client.post("/admin/cluster/down", json!({"node": node}))?;
            println!(
                "{} is down: it no longer counts towards a majority",
                cell(&v["down"])
            );
        }
        CtlCommand::Leave { node } => {
            let v = client.post("/admin/cluster/leave", json!({"node": node}))?;
            println!(
                "{} is leaving: it hands its entities off, then exits",
                cell(&v["leaving"])
            );
        }
    }
    Ok(())
}

/// How long ago a millisecond timestamp was, as `2h03m`, `4m10s` or `12s`.
fn age(ts: &Value) -> String {
    let Some(ts) = ts.as_i64() else {
        return "-".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let s = ((now - ts) / 1000).max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn strip_nulls(mut v: Value) -> Value {
    if let Some(map) = v.as_object_mut() {
        map.retain(|_, x| !x.is_null());
    }
    v
}

/// What a path segment keeps as is: RFC 3986's unreserved characters, which every bourse
/// key is made of (the gateway matches segments without decoding them).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one path segment.
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_cells_read_plainly() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["x".into(), "1".into()],
                vec!["wide".into(), "2".into()],
            ],
        );
        assert_eq!(t, "A     LONGER\nx     1\nwide  2");
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("s")), "s");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(encode("symbol/KRW-BTC"), "symbol%2FKRW-BTC");
        assert_eq!(age(&json!(null)), "-");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert_eq!(age(&json!(now - 4_000)), "4s");
        assert_eq!(age(&json!(now - 250_000)), "4m10s");
        assert_eq!(age(&json!(now - 7_380_000)), "2h03m");
    }
}
