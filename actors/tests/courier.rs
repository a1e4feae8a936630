//! A producer's private events reach the user's session even when the session cannot be
//! reached for a while (as across a dropped cluster link), in order and once each: the
//! courier asks until the session answers. The session region runs in this process and
//! appears only after the events were sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bourse_actors::session::{Courier, Private, Session, SessionDeps};
use bourse_cluster::{
    Cursor, Hub, RegionArgs, Sharding, StreamGrant, StreamRequest, guardian, spawn_region,
};
use bourse_supervision::RestartPolicy;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USER: u64 = 7;

async fn orders(sharding: &Sharding, since: Option<Cursor>) -> Option<StreamGrant> {
    let req = StreamRequest {
        channel: Private::Orders.channel(USER),
        node: "a".into(),
        since,
    };
    sharding
        .subscribe("session", &USER.to_string(), req)
        .await
        .ok()
}

/// The session's `orders` grant once it covers `seq` events.
async fn grant_covering(sharding: &Sharding, seq: u64) -> StreamGrant {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(g) = orders(sharding, None).await
            && (g.seq >= seq || Instant::now() > deadline)
        {
            return g;
        }
        assert!(Instant::now() < deadline, "the session never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event the session published on `orders` in `epoch`, in order.
async fn published(sharding: &Sharding, epoch: &str) -> Vec<String> {
    let since = Cursor {
        epoch: epoch.to_string(),
        seq: 0,
    };
    let g = orders(sharding, Some(since)).await.expect("a replay");
    assert!(g.resumed, "the session still holds every event");
    g.events.into_iter().map(|e| e.data).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_events_sent_while_the_session_is_unreachable_arrive_in_order_once() {
    let sharding = Sharding::new("a", 16, Duration::from_secs(10), Hub::new("a"));
    sharding.set_ring_members(&["a".to_string()]);
    let (root, _fatal) = guardian::spawn_guardian().await.unwrap();

    // No session region yet: every ask fails, as across a dropped link.
    let mut courier = Courier::new(&sharding, "account/7", USER);
    courier.send(Private::Orders, 1, "\"u1\"".into());
    courier.send(Private::Orders, 2, "\"u2\"".into());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let args = RegionArgs::<Session> {
        deps: Arc::new(SessionDeps { replay_events: 64 }),
        sharding: sharding.clone(),
        policy: RestartPolicy {
            max_restarts: 3,
            within: Duration::from_secs(10),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
        },
        passivate_after: None,
    };
    spawn_region::<Session>(args, root.get_cell())
        .await
        .unwrap();

    let g = grant_covering(&sharding, 2).await;
    assert_eq!(g.seq, 2, "both events, published once");
    assert_eq!(
        published(&sharding, &g.epoch).await,
        vec!["\"u1\"", "\"u2\""]
    );

    // The next one follows them, once.
    courier.send(Private::Orders, 3, "\"u3\"".into());
    let g = grant_covering(&sharding, 3).await;
    assert_eq!(g.seq, 3);
    assert_eq!(
        published(&sharding, &g.epoch).await,
        vec!["\"u1\"", "\"u2\"", "\"u3\""]
    );
}
