//! The supervision chain in a real node: an entity that keeps failing past its restart
//! intensity fails its region; the node supervisor restarts that region alone (one-for-one)
//! and the node keeps serving; a region that keeps failing past the node supervisor's
//! intensity stops the node with an error, for its process supervisor to restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Node;
use std::time::{Duration, Instant};

/// Two failures in a minute are tolerated, the third escalates (at every level).
const CONFIG: &str = "[feed]\nkind = \"none\"\n[supervision]\nmax_restarts = 2\nwithin_s = 60\n";

/// Kills `symbol/key` three times, each once it is running again: one more than its region
/// tolerates.
fn fail_three_times(node: &Node, key: &str) {
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // A read activates the symbol (the region restarts it on its own too).
            let _ = node.get(&format!("/api/v1/ticker/{key}"));
            let (s, v) = node.chaos_kill("symbol", key);
            if s == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kill {i} of {key}: {s} {v}\n{}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

fn serves(node: &Node, path: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if node.get(path).0 == 200 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn failures_escalate_from_entity_to_region_to_node() {
    let mut node = Node::start("supervision", CONFIG);
    let (_, token) = node.register("steady");
    assert_eq!(
        node.api("GET", "/api/v1/account", None, Some(&token)).0,
        200
    );

    // One entity past its intensity: its region fails and is restarted alone.
    fail_three_times(&node, "KRW-BTC");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !node.full_log().contains("child restarted") {
        assert!(
            Instant::now() < deadline,
            "region never restarted:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    node.assert_logged("exceeded its restart intensity; escalating");
    node.assert_logged("region.symbol");
    assert!(node.alive(), "one region failure does not stop the node");
    assert!(
        serves(&node, "/api/v1/ticker/KRW-BTC"),
        "the symbol region serves again"
    );
    // The other kinds never noticed: the account is the same one.
    let (s, acct) = node.api("GET", "/api/v1/account", None, Some(&token));
    assert_eq!(s, 200, "{acct}");
    assert_eq!(acct["balances"]["KRW"]["available"], "100000000");

    // Twice more: the node supervisor is past its own intensity and the node stops.
    fail_three_times(&node, "KRW-ETH");
    assert!(serves(&node, "/api/v1/ticker/KRW-ETH"));
    fail_three_times(&node, "KRW-XRP");
    let status = node
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the node kept running:\n{}", node.log()));
    assert!(!status.success(), "a fatal escalation exits non-zero");
    node.assert_logged("restart intensity exceeded; escalating");
    node.assert_logged("node child failed; shutting the node down");
}
