//! The browser UI in a real browser (docs/PROTOCOL.md is all it speaks): `tests/browser/ui.mjs`
//! drives Debian's chromium with playwright-core against a node running the simulator. It
//! checks that the markets list updates live, that a market's chart ends on the candle REST
//! serves, that its book and trades fill, the interval switcher, keyboard use, a 390-pixel
//! phone screen, and that no page logs an error.
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
fn the_ui_shows_live_markets_charts_books_and_trades_in_chromium() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("BOURSE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = Path::new(&chromium).exists() && dir.join("node_modules/playwright-core").exists();
    if !ready {
        assert!(
            std::env::var_os("BOURSE_REQUIRE_BROWSER").is_none(),
            "BOURSE_REQUIRE_BROWSER is set but {chromium} or tests/browser/node_modules is missing"
        );
        println!(
            "SKIPPED the_ui_shows_live_markets_charts_books_and_trades_in_chromium: no chromium or playwright-core; scripts/test installs them"
        );
        return;
    }
    // The simulator's eight markets, trading about ten times a second between them.
    let node = Node::start("browser", "[feed]\ntrades_per_sec = 10\n");
    let mut child = Command::new("node")
        .arg(dir.join("ui.mjs"))
        .arg(node.url(""))
        .env("BOURSE_CHROMIUM", &chromium)
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
