//! The region and its supervision with a test entity that can be told to fail: activation
//! on first message, restart with state rebuilt from "storage", messages buffered across a
//! restart, escalation past the restart intensity, idle passivation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bourse_cluster::guardian::spawn_guardian;
use bourse_cluster::{
    AskError, Entity, EntityContext, EntityError, RegionArgs, Sharding, spawn_region,
};
use bourse_supervision::RestartPolicy;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// "Storage" for the counter entity: its durable value, plus counts the test reads.
#[derive(Default)]
struct Deps {
    durable: Mutex<HashMap<String, u64>>,
    activations: AtomicU32,
    passivations: AtomicU32,
}

struct Counter {
    value: u64,
    deps: Arc<Deps>,
    key: String,
}

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    Add(u64),
    Get,
    Fail,
}

impl Entity for Counter {
    const KIND: &'static str = "counter";
    type Msg = Msg;
    type Reply = u64;
    type Deps = Deps;

    async fn activate(ctx: &EntityContext, deps: &Arc<Deps>) -> Result<Self, EntityError> {
        deps.activations.fetch_add(1, Ordering::SeqCst);
        let value = deps
            .durable
            .lock()
            .unwrap()
            .get(&ctx.key)
            .copied()
            .unwrap_or(0);
        Ok(Counter {
            value,
            deps: deps.clone(),
            key: ctx.key.clone(),
        })
    }

    async fn handle(&mut self, msg: Msg, _ctx: &EntityContext) -> u64 {
        match msg {
            Msg::Add(n) => {
                self.value += n;
                // Journal before acknowledging.
                self.deps
                    .durable
                    .lock()
                    .unwrap()
                    .insert(self.key.clone(), self.value);
            }
            Msg::Get => {}
            Msg::Fail => panic!("told to fail"),
        }
        self.value
    }

    async fn passivate(&mut self, _ctx: &EntityContext) {
        self.deps.passivations.fetch_add(1, Ordering::SeqCst);
    }
}

fn policy(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        within: Duration::from_secs(10),
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
    }
}

async fn setup(
    max_restarts: u32,
    passivate_after: Option<Duration>,
) -> (
    Sharding,
    Arc<Deps>,
    tokio::sync::watch::Receiver<Option<String>>,
) {
    let sharding = Sharding::new(
        "n1",
        16,
        Duration::from_secs(2),
        bourse_cluster::Hub::new("n1"),
    );
    sharding.set_ring_members(&["n1".to_string()]);
    let deps = Arc::new(Deps::default());
    let (guardian, fatal) = spawn_guardian().await.expect("guardian");
    spawn_region::<Counter>(
        RegionArgs {
            deps: deps.clone(),
            sharding: sharding.clone(),
            policy: policy(max_restarts),
            passivate_after,
        },
        guardian.get_cell(),
    )
    .await
    .expect("region");
    (sharding, deps, fatal)
}

/// ractor's name registry is process-global and every test registers the same names, so
/// the tests take turns through this lock.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn activates_on_first_message_and_restarts_with_durable_state() {
    let _serial = SERIAL.lock().await;
    let (sharding, deps, fatal) = setup(5, None).await;
    assert_eq!(
        deps.activations.load(Ordering::SeqCst),
        0,
        "nothing runs before a message"
    );
    assert_eq!(sharding.ask::<Counter>("a", Msg::Add(5)).await, Ok(5));
    assert_eq!(sharding.ask::<Counter>("a", Msg::Add(2)).await, Ok(7));
    assert_eq!(deps.activations.load(Ordering::SeqCst), 1);
    // The failing ask gets `unavailable` (its reply port died with the entity) ...
    assert!(matches!(
        sharding.ask::<Counter>("a", Msg::Fail).await,
        Err(AskError::Unavailable(_))
    ));
    // ... messages sent during the restart wait in the region and are delivered in order ...
    sharding.send::<Counter>("a", Msg::Add(1)).unwrap();
    sharding.send::<Counter>("a", Msg::Add(1)).unwrap();
    // ... and the restarted entity rebuilt its state from storage.
    assert_eq!(sharding.ask::<Counter>("a", Msg::Get).await, Ok(9));
    assert_eq!(deps.activations.load(Ordering::SeqCst), 2);
    // Other entities of the kind were never touched.
    assert_eq!(sharding.ask::<Counter>("b", Msg::Add(1)).await, Ok(1));
    let stats = sharding.region_stats().await;
    assert_eq!(stats[0].1.restarts, 1);
    assert_eq!(stats[0].1.active, 2);
    assert!(fatal.borrow().is_none());
    stop_all().await;
}

#[tokio::test]
async fn past_the_restart_intensity_the_failure_escalates_to_the_guardian() {
    let _serial = SERIAL.lock().await;
    let (sharding, _deps, mut fatal) = setup(2, None).await;
    for _ in 0..3 {
        let _ = sharding.ask::<Counter>("x", Msg::Fail).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reason = tokio::time::timeout(Duration::from_secs(5), fatal.wait_for(Option::is_some))
        .await
        .expect("escalated in time")
        .expect("guardian alive")
        .clone()
        .unwrap_or_default();
    assert!(
        reason.contains("counter/x failed more than 2 times"),
        "{reason}"
    );
    stop_all().await;
}

#[tokio::test]
async fn idle_entities_passivate_and_come_back_on_the_next_message() {
    let _serial = SERIAL.lock().await;
    let (sharding, deps, _fatal) = setup(5, Some(Duration::from_millis(200))).await;
    assert_eq!(sharding.ask::<Counter>("idle", Msg::Add(3)).await, Ok(3));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        deps.passivations.load(Ordering::SeqCst),
        1,
        "passivated after 200 ms idle"
    );
    assert_eq!(sharding.region_stats().await[0].1.active, 0);
    assert_eq!(
        sharding.ask::<Counter>("idle", Msg::Get).await,
        Ok(3),
        "back with its state"
    );
    assert_eq!(deps.activations.load(Ordering::SeqCst), 2);
    stop_all().await;
}

#[tokio::test]
async fn unknown_kinds_and_foreign_keys_fail_fast() {
    let _serial = SERIAL.lock().await;
    let (sharding, _deps, _fatal) = setup(5, None).await;
    assert!(matches!(
        sharding.kill("nope", "k").await,
        Err(AskError::UnknownKind(_))
    ));
    assert_eq!(sharding.kill("counter", "never-started").await, Ok(false));
    stop_all().await;
}

/// Stops the named actors so the next test can register the same names.
async fn stop_all() {
    for name in ["bourse.region.counter", "bourse.guardian"] {
        if let Some(cell) = ractor::registry::where_is(name) {
            cell.stop(None);
        }
    }
    for _ in 0..100 {
        if ractor::registry::where_is("bourse.guardian").is_none()
            && ractor::registry::where_is("bourse.region.counter").is_none()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
