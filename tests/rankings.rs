//! Trader rankings (docs/PROTOCOL.md "Rankings"): returns over the day, the week and all
//! time follow the trades and the prices, agree with each trader's portfolio, and are
//! rebuilt from storage after the rankings entity is killed and after a SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, limit, place_acked};
use serde_json::Value;

/// The grant's value, 430M KRW in units of 1e-8 (`common::units`): 100M KRW and one unit
/// of each of the eight markets' assets at their start prices (tests/portfolio.rs shows
/// the breakdown).
const GRANT: i128 = 430_000_000 * 100_000_000;

fn total_krw(node: &Node, token: &str) -> i128 {
    let (status, v) = node.api("GET", "/api/v1/portfolio", None, Some(token));
    assert_eq!(status, 200, "{v}");
    common::units(v["total"]["KRW"].as_str().unwrap())
}

/// The return the rankings should show for a portfolio total: millionths, rounded toward
/// zero, as a percentage with four places.
fn expected_pct(total: i128) -> String {
    let ppm = (total - GRANT) * 1_000_000 / GRANT;
    let sign = if ppm < 0 { "-" } else { "" };
    format!("{sign}{}.{:04}", ppm.abs() / 10_000, ppm.abs() % 10_000)
}

fn rankings(node: &Node, query: &str, token: Option<&str>) -> (u16, Value) {
    node.api("GET", &format!("/api/v1/rankings{query}"), None, token)
}

/// `(user_id, return_pct)` of the top traders over `period`.
fn top(node: &Node, period: &str) -> Vec<(u64, String)> {
    let (status, v) = rankings(node, &format!("?period={period}"), None);
    assert_eq!(status, 200, "{v}");
    v["traders"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            assert_eq!(t["rank"], i + 1, "{v}");
            (
                t["user_id"].as_str().unwrap().parse().unwrap(),
                t["return_pct"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn traders_are_ranked_by_return_and_the_ranks_are_rebuilt_after_kills() {
    let mut node = Node::start("rankings", "[feed]\nkind = \"none\"\n");
    let users: Vec<(u64, String)> = ["rk_alice", "rk_bob", "rk_carol"]
        .iter()
        .map(|name| {
            let (id, token) = node.register(name);
            (id.parse().unwrap(), token)
        })
        .collect();
    let [(alice, a), (bob, b), (carol, c)] = [0, 1, 2].map(|i| users[i].clone());
    // Each account opens with the grant: ranked, at 0%.
    for (_, token) in &users {
        assert_eq!(total_krw(&node, token), GRANT);
    }
    common::eventually(20, "three traders at 0%", || {
        let t = top(&node, "all");
        (t.len() == 3 && t.iter().all(|(_, r)| r == "0.0000")).then_some(())
    });

    // Bob sells alice 0.5 BTC at 150M; then carol sells bob 1 BTC at 100M (the last price).
    place_acked(&node, &b, limit("sell", "150000000", "0.5"), "rk-1");
    place_acked(&node, &a, limit("buy", "150000000", "0.5"), "rk-2");
    place_acked(&node, &c, limit("sell", "100000000", "1"), "rk-3");
    place_acked(&node, &b, limit("buy", "100000000", "1"), "rk-4");
    // alice 25M + 1.5 BTC, bob 75M + 1.5 BTC, carol 200M and no BTC; BTC at 100M.
    let want = |node: &Node| -> Vec<(u64, String)> {
        let mut w: Vec<(i128, u64)> = [(alice, &a), (bob, &b), (carol, &c)]
            .iter()
            .map(|(id, token)| (total_krw(node, token), *id))
            .collect();
        w.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        w.into_iter().map(|(t, id)| (id, expected_pct(t))).collect()
    };
    let expected = common::eventually(20, "the trades settled", || {
        let w = want(&node);
        (w.iter().map(|(id, _)| *id).collect::<Vec<_>>() == [bob, carol, alice]).then_some(w)
    });
    assert_eq!(
        expected.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>(),
        ["-3.4883", "-9.3023", "-15.1162"],
        "415M, 390M and 365M against the 430M grant"
    );
    for period in ["day", "week", "all"] {
        common::eventually(20, &format!("the {period} ranking"), || {
            (top(&node, period) == expected).then_some(())
        });
    }

    // The caller's own place, and a shorter list.
    let (status, v) = rankings(&node, "?period=week&limit=2", Some(&a));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["traders"].as_array().unwrap().len(), 2);
    assert_eq!(
        (v["ranked"].as_u64(), v["currency"].as_str()),
        (Some(3), Some("KRW"))
    );
    assert_eq!(v["you"]["rank"], 3, "{v}");
    assert_eq!(v["you"]["user_id"], alice.to_string());
    let (_, v) = rankings(&node, "", None);
    assert_eq!(
        (v["period"].as_str(), v["you"].is_null()),
        (Some("day"), true)
    );

    // Killed, the rankings rebuild from storage: the same ranks.
    let (status, v) = node.chaos_kill("rankings", "traders");
    assert_eq!(status, 200, "{v}");
    common::eventually(30, "the ranks after the entity's kill", || {
        (rankings(&node, "?period=all", None).0 == 200 && top(&node, "all") == expected)
            .then_some(())
    });
    node.kill9();
    node.restart();
    node.wait_ready();
    for period in ["day", "week", "all"] {
        common::eventually(30, &format!("the {period} ranking after a SIGKILL"), || {
            (rankings(&node, &format!("?period={period}"), None).0 == 200
                && top(&node, period) == expected)
                .then_some(())
        });
    }

    for (query, token, status, code) in [
        ("?period=month", None, 400, "bad_request"),
        ("?limit=0", None, 400, "bad_request"),
        ("?limit=1001", None, 400, "bad_request"),
        ("?limit=x", None, 400, "bad_request"),
        ("?sort=up", None, 400, "bad_request"),
        ("", Some("not-a-token"), 401, "unauthorized"),
    ] {
        let (got, e) = rankings(&node, query, token);
        assert_eq!(
            (got, e["error"]["code"].as_str()),
            (status, Some(code)),
            "{query}: {e}"
        );
    }
}
