//! Single activation under a split brain, through real processes: two standalone nodes on
//! one data directory both believe they own every symbol. Leases fence the older
//! activation, so the two never both write: what storage holds is consistent, as a third
//! node reading it back through REST shows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, temp_dir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

fn decimal_units(s: &str, step_places: u32) -> u128 {
    // Exact decimal -> integer units with `step_places` fractional digits.
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut frac = frac.to_string();
    while (frac.len() as u32) < step_places {
        frac.push('0');
    }
    format!("{int}{frac}").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_both_own_a_symbol_never_both_write() {
    let data = temp_dir("split-data");
    let env = |name: &str| {
        vec![
            ("BOURSE_NODE__NAME".to_string(), name.to_string()),
            (
                "BOURSE_NODE__DATA_DIR".to_string(),
                data.display().to_string(),
            ),
        ]
    };
    // Mirror markets: the walk's trades go straight to the ticks this test fences, at the
    // full rate (the participants' orders would make fewer ticks through fenced books).
    let feed = "[feed]\ntrades_per_sec = 30\n[trading]\nvenue = \"mirror\"\n";
    let a = Node::start_env("split-a", feed, env("a"), true);
    let b = Node::start_env("split-b", feed, env("b"), true);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let fenced = a.full_log().matches("fenced").count() + b.full_log().matches("fenced").count();
    println!("split brain for 6 s: {fenced} fencing log lines");
    assert!(
        fenced > 0,
        "the second activation fenced the first:\n{}\n{}",
        a.log(),
        b.log()
    );
    drop(a);
    drop(b);

    // A third node, feed off, reads back what storage holds.
    let reader = Node::start_env(
        "split-reader",
        "[feed]\nkind = \"none\"\n",
        env("reader"),
        true,
    );
    let (_, trades) = reader.get("/api/v1/trades/KRW-BTC?limit=1000");
    let (_, candles) = reader.get("/api/v1/candles/KRW-BTC?interval=1s&limit=1000");
    let trades = trades.as_array().unwrap();
    assert!(trades.len() > 100, "{}", trades.len());
    // Trade ids are unique and contiguous: one writer per id range.
    let mut ids: Vec<u64> = trades
        .iter()
        .map(|t| t["trade_id"].as_str().unwrap().parse().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), trades.len());
    assert_eq!(
        ids[ids.len() - 1] - ids[0] + 1,
        ids.len() as u64,
        "no hole in the stored trade ids"
    );
    // Every closed second well inside the window equals the roll-up of the stored trades.
    let mut by_second: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
    for t in trades.iter().rev() {
        by_second
            .entry(t["ts"].as_i64().unwrap() / 1000 * 1000)
            .or_default()
            .push(t);
    }
    let first = *by_second.keys().next().unwrap();
    let last = *by_second.keys().last().unwrap();
    let mut checked = 0;
    for c in candles
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["closed"] == true)
    {
        let t0 = c["open_time"].as_i64().unwrap();
        if t0 <= first || t0 >= last {
            continue;
        }
        let ticks = by_second
            .get(&t0)
            .unwrap_or_else(|| panic!("candle {c} has no stored trades"));
        let prices: Vec<u128> = ticks
            .iter()
            .map(|t| decimal_units(t["price"].as_str().unwrap(), 0))
            .collect();
        let volume: u128 = ticks
            .iter()
            .map(|t| decimal_units(t["qty"].as_str().unwrap(), 4))
            .sum();
        assert_eq!(
            decimal_units(c["open"].as_str().unwrap(), 0),
            prices[0],
            "{c}"
        );
        assert_eq!(
            decimal_units(c["close"].as_str().unwrap(), 0),
            *prices.last().unwrap(),
            "{c}"
        );
        assert_eq!(
            decimal_units(c["high"].as_str().unwrap(), 0),
            *prices.iter().max().unwrap(),
            "{c}"
        );
        assert_eq!(
            decimal_units(c["low"].as_str().unwrap(), 0),
            *prices.iter().min().unwrap(),
            "{c}"
        );
        assert_eq!(
            decimal_units(c["volume"].as_str().unwrap(), 4),
            volume,
            "{c}"
        );
        checked += 1;
    }
    println!("{checked} stored 1s candles equal the roll-up of the stored trades");
    assert!(checked >= 3, "{checked}");
    drop(reader);
    let _ = std::fs::remove_dir_all(&data);
}
