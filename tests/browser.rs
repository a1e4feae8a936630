//! The browser UI in a real browser (docs/PROTOCOL.md is all it speaks): `tests/browser/ui.mjs`
//! drives Debian's chromium with playwright-core against a node running the simulator. It
//! checks that the markets list updates live, that a market's chart ends on the candle REST
//! serves and its trades fill the tape, the interval switcher and keyboard use; that two
//! users, each in their own page, register, trade with each other and both see the fill
//! (history, notice), the book and their balances change, and a refusal in the server's
//! words; that a chat message reaches the other user as text, markup included; that an
//! alert fires, pops up and lands in the inbox beside the fill; the portfolio, the
//! rankings, search and the watchlist; that the cluster view kills an entity and its
//! stream goes on in a new epoch; a 390-pixel phone screen; and that no page logs an error.
//!
//! `scripts/test` installs chromium and runs `npm ci` in `tests/browser`; without them this
//! test prints SKIPPED, unless `BOURSE_REQUIRE_BROWSER` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Node;
use std::path::Path;
use std::process::Command;
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
"#;
    let node = Node::start("browser", config);
    let mut child = Command::new("node")
        .arg(dir.join("ui.mjs"))
        .arg(node.url(""))
        .env("BOURSE_CHROMIUM", &chromium)
        .env("BOURSE_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start node (Node.js)");
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the browser test") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the browser test did not finish in 240 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = child.wait_with_output().expect("browser test output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        status.success(),
        "browser test failed:\n{text}\nnode log:\n{}",
        node.log()
    );
}
