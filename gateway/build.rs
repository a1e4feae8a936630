//! Puts the browser UI's chart library into the binary. `web/package.json` pins TradingView's
//! Lightweight Charts (npm, Apache-2.0); when `web/node_modules` lacks it, this runs `npm ci`
//! there once. Without npm (or the registry) the build still succeeds: the UI then serves a
//! stand-in module, and the page says how to get the chart.

use std::path::{Path, PathBuf};
use std::process::Command;

const CHART: &str =
    "node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.mjs";

/// What the UI imports instead of the chart when it could not be installed.
const STAND_IN: &str = "chart-missing.mjs";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let web = manifest.join("../web");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("chart.mjs");
    println!(
        "cargo:rerun-if-changed={}",
        web.join("package-lock.json").display()
    );
    println!("cargo:rerun-if-changed={}", web.join(CHART).display());
    println!("cargo:rerun-if-changed={}", web.join(STAND_IN).display());
    let chart = web.join(CHART);
    if !chart.exists() {
        install(&web);
    }
    let written = match std::fs::read(&chart) {
        Ok(bytes) => std::fs::write(&out, bytes),
        Err(_) => {
            println!(
                "cargo:warning=the browser UI is built without its chart: npm ci in web/ did not install lightweight-charts"
            );
            std::fs::copy(web.join(STAND_IN), &out).map(|_| ())
        }
    };
    if let Err(e) = written {
        panic!("writing {}: {e}", out.display());
    }
}

/// `npm ci` in `web/`, quietly; a failure leaves the stand-in.
fn install(web: &Path) {
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(web)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => println!("cargo:warning=npm ci in web/ failed ({s})"),
        Err(e) => println!("cargo:warning=npm not found ({e}): the UI's chart is left out"),
    }
}
