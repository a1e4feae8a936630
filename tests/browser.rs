//! The browser UI in a real browser (docs/PROTOCOL.md is all it speaks): `tests/browser/ui.mjs`
//! drives Debian's chromium with playwright-core against a node running the simulator. It
//! checks that the markets list updates live, that a market's chart ends on the candle REST
//! serves and its trades fill the tape, the interval switcher and keyboard use; that two
//! users, each in their own page, register, trade with each other and both see the fill
//! (history, notice), the book and their balances change, and a refusal in the server's
//! words; that a chat message reaches the other user as text, markup included; that an
//! alert fires, pops up and lands in the inbox beside the fill; the portfolio, the
//! rankings, search and the watchlist; that the cluster view kills an entity and its
//! stream goes on in a new epoch; that a closed market's order shows as reserved; that after
//! the node is SIGKILLed and restarted the page reconnects, its streams go on and it trades
//! again; every page on a 390-pixel phone screen; the page built without npm's chart; and
//! that no page logs an error.
//!
//!
//! `tests/browser/client.mjs` runs the UI's client, `web/bourse.js`, in Node.js against two
//! nodes: it fails over to the second gateway when the first is SIGKILLed and resumes its
//! streams. `tests/browser/bourse.test.mjs` unit-tests its stream bookkeeping (gaps,
//! repeats, epochs, resume, ping timeout, backoff) against a scripted socket.
//!
//! `scripts/test` installs chromium and runs `npm ci` in `tests/browser`; without them (or
//! without Node.js) these tests print SKIPPED, unless `BOURSE_REQUIRE_BROWSER` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Cluster, Node};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_ui_shows_live_markets_and_two_users_trade_in_chromium() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("BOURSE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = Path::new(&chromium).exists() && dir.join("node_modules/playwright-core").exists();
    if !ready {
        assert!(
            std::env::var_os("BOURSE_REQUIRE_BROWSER").is_none(),
            "BOURSE_REQUIRE_BROWSER is set but {chromium} or tests/browser/node_modules is missing"
        );
        println!(
            "SKIPPED the_ui_shows_live_markets_and_two_users_trade_in_chromium: no chromium or playwright-core; scripts/test installs them"
        );
        return;
    }
    // KRW-ETH follows the simulator's walk (a mirror market); KRW-BTC trades only what its
    // users trade (no simulated participants), so the two browser users meet each other.
    let config = r#"
[feed]
trades_per_sec = 10
[participants]
enabled = false
[trading]
grants = { KRW = "100000000", BTC = "1", ETH = "10" }
[[symbols]]
symbol = "KRW-BTC"
tick_size = "1000"
lot_size = "0.0001"
initial_price = "100000000"
venue = "exchange"
[[symbols]]
symbol = "KRW-ETH"
tick_size = "1000"
lot_size = "0.001"
initial_price = "5000000"
venue = "mirror"
[hours.closed]
timezone = "UTC"
[[symbols]]
symbol = "KRW-XRP"
tick_size = "1"
lot_size = "1"
initial_price = "1000"
venue = "exchange"
hours = "closed"
"#;
    let mut node = Node::start("browser", config);
    // ui.mjs creates this file to have the node SIGKILLed and started again; its removal
    // says the node is back.
    let restart = node.dir.join("restart-requested");
    let mut ui = Command::new("node");
    ui.arg(dir.join("ui.mjs"))
        .arg(node.url(""))
        .env("BOURSE_CHROMIUM", &chromium)
        .env("BOURSE_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .env("BOURSE_RESTART_FILE", &restart);
    let (status, text) = run_bounded(ui, &node.dir.join("ui.out"), 300, || {
        if restart.exists() {
            node.restart();
            node.wait_ready();
            std::fs::remove_file(&restart).expect("remove the restart request");
        }
    });
    assert!(
        status.success(),
        "browser test failed:\n{text}\nnode log:\n{}",
        node.log()
    );
}

#[test]
fn bourse_js_fails_over_to_another_gateway_and_resumes_its_streams() {
    if !node_js("bourse_js_fails_over_to_another_gateway_and_resumes_its_streams") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let mut cluster = Cluster::start("bourse-js", 2, "[feed]\ntrades_per_sec = 20\n");
    cluster.wait_converged(&[0, 1], &["node1", "node2"], Duration::from_secs(20));
    // One symbol the first node owns and one the second owns (the ring is a function of
    // the node names, so these are the same on every run).
    let on = |i: usize| {
        ["BTC", "ETH", "XRP", "SOL", "DOGE", "ADA", "AVAX", "LINK"]
            .iter()
            .map(|s| format!("KRW-{s}"))
            .find(|s| cluster.owner(0, "symbol", s) == i)
            .unwrap_or_else(|| panic!("node{} owns no symbol", i + 1))
    };
    let (on_a, on_b) = (on(0), on(1));
    let pid = cluster.nodes[0].pid().expect("node1 runs");
    let mut client = Command::new("node");
    client
        .arg("--experimental-websocket")
        .arg(dir.join("client.mjs"))
        .arg(cluster.nodes[0].ws_url())
        .arg(cluster.nodes[1].ws_url())
        .arg(pid.to_string())
        .arg(format!("trades:{on_a}"))
        .arg(format!("trades:{on_b}"));
    let out = cluster.data.join("client.out");
    let (status, text) = run_bounded(client, &out, 120, || {});
    assert!(
        status.success(),
        "client test failed:\n{text}\nnode2 log:\n{}",
        cluster.nodes[1].log()
    );
    assert!(!cluster.nodes[0].alive(), "the client killed node1");
}

#[test]
fn bourse_js_unit_tests_pass_in_node() {
    if !node_js("bourse_js_unit_tests_pass_in_node") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let mut tests = Command::new("node");
    tests
        .arg("--test")
        .arg("--test-reporter=tap")
        .arg(dir.join("bourse.test.mjs"));
    let out = common::temp_dir("bourse-js-unit").join("out");
    let (status, text) = run_bounded(tests, &out, 60, || {});
    assert!(status.success(), "bourse.js unit tests failed:\n{text}");
    assert!(
        text.contains("# fail 0") && !text.contains("# pass 0"),
        "{text}"
    );
}

/// Whether a Node.js with a WebSocket (20.10 and later, with `--experimental-websocket`) is
/// installed; without one the test prints SKIPPED, or fails where `BOURSE_REQUIRE_BROWSER`
/// says it must run.
fn node_js(test: &str) -> bool {
    let probe = Command::new("node")
        .args([
            "--experimental-websocket",
            "-e",
            "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
        ])
        .output();
    if probe.is_ok_and(|out| out.status.success()) {
        return true;
    }
    assert!(
        std::env::var_os("BOURSE_REQUIRE_BROWSER").is_none(),
        "BOURSE_REQUIRE_BROWSER is set but Node.js (20.10 or later) is missing"
    );
    println!("SKIPPED {test}: no Node.js 20.10 or later");
    false
}

/// Runs `cmd` with its output in the file `out`, calling `each` every 200 ms while it runs;
/// kills it after `secs`. Its exit status and output (printed too).
fn run_bounded(
    mut cmd: Command,
    out: &Path,
    secs: u64,
    mut each: impl FnMut(),
) -> (std::process::ExitStatus, String) {
    let file = std::fs::File::create(out).expect("create the output file");
    let err = file.try_clone().expect("clone the output file");
    let mut child = cmd
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("start node (Node.js)");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node (Node.js)") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(out).unwrap_or_default();
            panic!("{cmd:?} did not finish in {secs} s:\n{text}");
        }
        // A failure in `each` must not leave Node.js (and its browser) running.
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut each)) {
            let _ = child.kill();
            let _ = child.wait();
            std::panic::resume_unwind(panic);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(out).unwrap_or_default();
    println!("{text}");
    (status, text)
}
