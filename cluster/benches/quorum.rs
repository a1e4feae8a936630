//! One judgement of the cluster's views (`Quorum::judge_views`), which a node makes on every
//! heartbeat it receives and every tick: with n members each node judges about 2n times a
//! second (at `heartbeat_ms = 500`), and finding the cut pairs is quadratic in n. Measured
//! at 3, 10, 30 and 100 members, every one hearing every other (the steady state), and with
//! one link cut (two members lose each other; the others hear both). Every member reports
//! that it agrees on all of them (the steady state: no membership is joint).
//! Run: `cargo bench -p bourse-cluster --bench quorum`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure should stop it loudly

use bourse_cluster::quorum::Quorum;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The names of `n` members.
fn members(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("node{i:03}")).collect()
}

/// What `me` (the first member) hears and what each member it hears reports, when every
/// link is up but, with `cut`, the one between the last two members.
fn views(names: &[String], cut: bool) -> (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>) {
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let (a, b) = (&names[names.len() - 2], &names[names.len() - 1]);
    let reports = names[1..]
        .iter()
        .map(|name| {
            let mut hears = all.clone();
            if cut && name == a {
                hears.remove(b);
            } else if cut && name == b {
                hears.remove(a);
            }
            (name.clone(), hears)
        })
        .collect();
    (all, reports)
}

fn judge(c: &mut Criterion) {
    let mut group = c.benchmark_group("quorum_judge_views");
    for n in [3usize, 10, 30, 100] {
        for cut in [false, true] {
            let names = members(n);
            let (heard, reports) = views(&names, cut);
            let adopted: BTreeMap<String, BTreeSet<String>> = names[1..]
                .iter()
                .map(|name| (name.clone(), heard.clone()))
                .collect();
            let start = Instant::now();
            let mut quorum = Quorum::new(Duration::from_secs(2));
            // Agree on everyone first, as a running cluster has.
            quorum.judge_views(&names[0], &heard, &heard, &reports, &adopted, start);
            let label = if cut { "one_link_cut" } else { "all_linked" };
            let mut now = start;
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.iter(|| {
                    now += Duration::from_millis(1);
                    black_box(
                        quorum.judge_views(&names[0], &heard, &heard, &reports, &adopted, now),
                    )
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, judge);
criterion_main!(benches);
