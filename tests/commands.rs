//! Every `bourse` command the README and docs/OPERATIONS.md show runs as written: each
//! `bench` subcommand with tiny parameters prints its figures, `config` prints a config
//! that `node --config` accepts. (`ctl` has its test in tests/admin.rs, `demo --nodes` in
//! tests/demo.rs; the criterion benches run once each under `cargo test --all-targets`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

/// Runs `bourse args...` to completion (bounded) and returns its stdout; fails the test
/// with stderr when it exits non-zero.
fn bourse(args: &[&str], timeout: Duration) -> String {
    bourse_env(args, &[], timeout)
}

/// As [`bourse`], with extra environment variables.
fn bourse_env(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> String {
    let dir = common::temp_dir("commands");
    let out = common::run_bourse(args, env, &dir, timeout);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn assert_has(out: &str, needles: &[&str]) {
    for n in needles {
        assert!(out.contains(n), "no {n:?} in:\n{out}");
    }
}

#[test]
fn bench_cluster_prints_its_figures() {
    let out = bourse(
        &["bench", "cluster", "--sends", "2000", "--asks", "200"],
        Duration::from_secs(90),
    );
    assert_has(&out, &["send", "ask", "local", "remote", "p99"]);
}

#[test]
fn bench_book_prints_its_figures() {
    let out = bourse(
        &["bench", "book", "--tasks", "4", "--orders", "50"],
        Duration::from_secs(90),
    );
    assert!(out.lines().count() >= 2, "{out}");
    assert!(out.chars().any(|c| c.is_ascii_digit()), "{out}");
}

#[test]
fn bench_trading_prints_its_figures() {
    let out = bourse(
        &[
            "bench",
            "trading",
            "--nodes",
            "2",
            "--clients",
            "20",
            "--secs",
            "2",
            "--warmup",
            "1",
        ],
        Duration::from_secs(120),
    );
    assert_has(&out, &["orders", "p99", "conservation   holds"]);
}

/// OPERATIONS "Benchmarks": `BOURSE_BENCH_POSTGRES_URL=… bench trading` runs the cluster on
/// PostgreSQL (a scratch database there).
#[test]
fn bench_trading_runs_on_postgres() {
    let Some(url) = bourse_storage::contract::postgres_server("bench_trading_runs_on_postgres")
    else {
        return;
    };
    let out = bourse_env(
        &[
            "bench",
            "trading",
            "--nodes",
            "2",
            "--clients",
            "20",
            "--secs",
            "2",
            "--warmup",
            "1",
        ],
        &[("BOURSE_BENCH_POSTGRES_URL", &url)],
        Duration::from_secs(120),
    );
    assert_has(
        &out,
        &["storage: postgres database bourse_bench_trading", "p99"],
    );
}

#[test]
fn bench_chat_prints_its_figures() {
    let out = bourse(
        &[
            "bench",
            "chat",
            "--nodes",
            "2",
            "--members",
            "50",
            "--rate",
            "10",
            "--secs",
            "2",
            "--warmup",
            "1",
        ],
        Duration::from_secs(120),
    );
    assert_has(&out, &["p99"]);
}

#[test]
fn config_prints_defaults_that_a_node_accepts() {
    let out = bourse(&["config"], Duration::from_secs(30));
    assert_has(
        &out,
        &[
            "[gateway]",
            "header_read_timeout_s",
            "[auth]",
            "hash_workers",
        ],
    );
    // The printed defaults parse back as a node config (the example secret is refused by
    // `bourse node` on purpose, so check the parse through `config --config`).
    let dir = common::temp_dir("config-roundtrip");
    let file = dir.join("node.toml");
    std::fs::write(&file, &out).unwrap();
    let again = bourse(
        &["config", "--config", file.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(again, out, "config round-trips");
    let _ = std::fs::remove_dir_all(&dir);
}
