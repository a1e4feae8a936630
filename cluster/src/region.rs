//! The region: one actor per entity kind per node that owns that node's entities of the
//! kind. Every message for an entity passes through its region, which activates the entity on
//! first message (as its supervised child), buffers messages while it restarts or
//! passivates, restarts it after a backoff when it fails, and escalates (fails itself) when
//! an entity keeps failing past the restart intensity.

use crate::Sharding;
use crate::entity::{Entity, EntityContext, Responder};
use crate::metrics::RegionMetrics;
use crate::stream::{StreamGrant, StreamRequest};
use bourse_supervision::{ChildSpec, Decision, RestartPolicy, RestartTracker};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Messages an entity actor receives (node-local; cross-node delivery wraps the `Msg` in a
/// bincode envelope and ends up here).
pub enum Envelope<E: Entity> {
    /// Fire and forget.
    Tell(E::Msg),
    /// Request/reply.
    Ask(E::Msg, RpcReplyPort<E::Reply>),
    /// A node subscribes to one of the entity's streams.
    Subscribe(StreamRequest, RpcReplyPort<Result<StreamGrant, String>>),
    /// A node no longer listens to a stream.
    Unsubscribe { channel: String, node: String },
    /// The entity's clock.
    Tick,
    /// Chaos: fail inside the entity, as a bug would, so supervision sees a failure.
    Kill,
    /// The admin API asks what the entity holds: its counters and a state summary.
    Inspect(EntityInfo, RpcReplyPort<(EntityInfo, serde_json::Value)>),
}

// Node-local messages: they hold reply ports and typed payloads. Cross-node traffic goes
// through the router's serialized envelope instead.
impl<E: Entity> ractor::Message for Envelope<E> {}
impl<E: Entity> ractor::Message for RegionMsg<E> {}

/// Messages the region accepts.
pub enum RegionMsg<E: Entity> {
    /// Route to the entity `key`, activating it if needed.
    Deliver { key: String, envelope: Envelope<E> },
    /// Kill `key` if it is active; replies whether it was.
    Kill {
        key: String,
        reply: RpcReplyPort<bool>,
    },
    /// Chaos: kill about `fraction` of the active entities (each one with that
    /// probability); replies with the keys killed.
    KillSome {
        fraction: f64,
        reply: RpcReplyPort<Vec<String>>,
    },
    /// Every entity this region holds (active, restarting or stopping).
    List(RpcReplyPort<Vec<EntityInfo>>),
    /// One entity's counters and, when it runs, its state summary; `None` when this region
    /// does not hold it.
    Inspect {
        key: String,
        reply: RpcReplyPort<Option<(EntityInfo, serde_json::Value)>>,
    },
    /// Restart `key` after its backoff.
    Restart(String),
    /// Passivate idle entities.
    IdleCheck,
    /// The ring changed: hand off entities this node no longer owns.
    Rebalance,
    /// Report what runs here.
    Stats(RpcReplyPort<RegionStats>),
}

/// What a region reports about itself.
#[derive(Debug, Clone, Default)]
pub struct RegionStats {
    /// Entities with a running actor.
    pub active: usize,
    /// Entities waiting for a restart or finishing a passivation.
    pub waiting: usize,
    /// Restarts since the region started. (Activations, passivations and hand-offs are
    /// counted in [`crate::metrics`].)
    pub restarts: u64,
    /// Messages delivered to active entities and not yet handled, plus buffered ones.
    pub mailbox: u64,
}

/// One entity as the admin API shows it (docs/PROTOCOL.md "Admin").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityInfo {
    pub kind: String,
    pub key: String,
    pub node: String,
    /// Running now (false: waiting for a restart, or stopping).
    pub active: bool,
    /// Messages delivered to it and not yet handled (buffered ones included).
    pub mailbox: u64,
    /// Restarts after failures since this node's region started.
    pub restarts: u64,
    /// When the running activation started (ms since the epoch).
    pub activated_at: Option<i64>,
    /// Messages the running activation has handled.
    pub messages: u64,
}

/// Counters shared by a region and the entity actor it activated: the region counts what it
/// hands over, the actor what it handled; the difference is the mailbox.
#[derive(Debug)]
pub struct Counters {
    activated_at: i64,
    sent: AtomicU64,
    handled: AtomicU64,
}

impl Counters {
    fn new() -> Arc<Counters> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        Arc::new(Counters {
            activated_at: now,
            sent: AtomicU64::new(0),
            handled: AtomicU64::new(0),
        })
    }

    fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Handed over and not yet handled.
    fn mailbox(&self) -> u64 {
        let handled = self.handled.load(Ordering::Relaxed);
        self.sent.load(Ordering::Relaxed).saturating_sub(handled)
    }

    fn fill(&self, info: &mut EntityInfo) {
        info.activated_at = Some(self.activated_at);
        info.messages = self.handled.load(Ordering::Relaxed);
        info.mailbox = self.mailbox();
    }
}

/// Most messages buffered for one entity while it restarts; beyond this, asks fail fast.
const MAX_BUFFERED: usize = 10_000;

enum Slot<E: Entity> {
    Active {
        actor: ActorRef<Envelope<E>>,
        last_message: Instant,
        counters: Arc<Counters>,
    },
    /// Restarting after a failure, or stopping for passivation; messages wait here.
    Waiting { buffer: Vec<Envelope<E>> },
}

impl<E: Entity> Slot<E> {
    /// Chaos: a running entity is told to panic; whether it was running.
    fn kill(&self) -> bool {
        match self {
            Slot::Active {
                actor, counters, ..
            } => {
                counters.sent();
                actor.send_message(Envelope::Kill).is_ok()
            }
            Slot::Waiting { .. } => false,
        }
    }
}

/// Region construction arguments.
pub struct RegionArgs<E: Entity> {
    pub deps: Arc<E::Deps>,
    pub sharding: Sharding,
    pub policy: RestartPolicy,
    /// Passivate entities idle this long (`None`: never).
    pub passivate_after: Option<Duration>,
}

impl<E: Entity> Clone for RegionArgs<E> {
    fn clone(&self) -> Self {
        RegionArgs {
            deps: self.deps.clone(),
            sharding: self.sharding.clone(),
            policy: self.policy,
            passivate_after: self.passivate_after,
        }
    }
}

/// The region actor for kind `E`.
pub struct Region<E: Entity>(PhantomData<fn() -> E>);

impl<E: Entity> Default for Region<E> {
    fn default() -> Self {
        Region(PhantomData)
    }
}

/// The region's state: its entities and their failure histories.
pub struct RegionState<E: Entity> {
    args: RegionArgs<E>,
    slots: HashMap<String, Slot<E>>,
    keys: HashMap<ActorId, String>,
    trackers: HashMap<String, RestartTracker>,
    /// Restarts per key since the region started (the admin view's `restarts`).
    restarts: HashMap<String, u64>,
    metrics: RegionMetrics,
}

impl<E: Entity> Actor for Region<E> {
    type Msg = RegionMsg<E>;
    type State = RegionState<E>;
    type Arguments = RegionArgs<E>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RegionArgs<E>,
    ) -> Result<Self::State, ActorProcessingErr> {
        if let Some(idle) = args.passivate_after {
            let every = (idle / 4).max(Duration::from_millis(100));
            myself.send_interval(every, || RegionMsg::IdleCheck);
        }
        Ok(RegionState {
            args,
            slots: HashMap::new(),
            keys: HashMap::new(),
            trackers: HashMap::new(),
            restarts: HashMap::new(),
            metrics: RegionMetrics::of(E::KIND),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegionMsg::Deliver { key, envelope } => state.deliver(&myself, key, envelope).await,
            RegionMsg::Kill { key, reply } => {
                let killed = state.slots.get(&key).is_some_and(Slot::kill);
                let _ = reply.send(killed);
            }
            RegionMsg::KillSome { fraction, reply } => {
                let mut killed = Vec::new();
                for (key, slot) in &state.slots {
                    if matches!(slot, Slot::Active { .. })
                        && fastrand::f64() < fraction
                        && slot.kill()
                    {
                        killed.push(key.clone());
                    }
                }
                let _ = reply.send(killed);
            }
            RegionMsg::List(reply) => {
                let _ = reply.send(state.slots.keys().map(|k| state.info(k)).collect());
            }
            RegionMsg::Inspect { key, reply } => state.inspect(key, reply),
            RegionMsg::Restart(key) => {
                if let Some(Slot::Waiting { buffer }) = state.slots.remove(&key) {
                    if state.owns(&key) {
                        state.activate(&myself, key, buffer).await;
                    } else {
                        for env in buffer {
                            state.forward(&key, env);
                        }
                    }
                }
            }
            RegionMsg::IdleCheck => state.passivate_idle(),
            RegionMsg::Rebalance => state.hand_off_unowned(),
            RegionMsg::Stats(reply) => {
                let mut stats = RegionStats {
                    restarts: state.restarts.values().sum(),
                    ..RegionStats::default()
                };
                for slot in state.slots.values() {
                    match slot {
                        Slot::Active { counters, .. } => {
                            stats.active += 1;
                            stats.mailbox += counters.mailbox();
                        }
                        Slot::Waiting { buffer } => {
                            stats.waiting += 1;
                            stats.mailbox += buffer.len() as u64;
                        }
                    }
                }
                let _ = reply.send(stats);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(key) = state.keys.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let buffer = state.take_buffer(&key);
                let tracker = state
                    .trackers
                    .entry(key.clone())
                    .or_insert_with(|| RestartTracker::new(state.args.policy));
                match tracker.on_failure(Instant::now()) {
                    Decision::Restart { after } => {
                        tracing::warn!(kind = E::KIND, %key, error = %err, delay_ms = after.as_millis() as u64, "entity failed; restarting");
                        state.metrics.restarts.inc();
                        *state.restarts.entry(key.clone()).or_default() += 1;
                        state.slots.insert(key.clone(), Slot::Waiting { buffer });
                        myself.send_after(after, move || RegionMsg::Restart(key));
                    }
                    Decision::Escalate => {
                        tracing::error!(kind = E::KIND, %key, error = %err, "entity exceeded its restart intensity; escalating");
                        return Err(format!(
                            "{}/{key} failed more than {} times in {:?}: {err}",
                            E::KIND,
                            state.args.policy.max_restarts,
                            state.args.policy.within
                        )
                        .into());
                    }
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                let Some(key) = state.keys.remove(&cell.get_id()) else {
                    return Ok(());
                };
                // A passivated entity that got messages meanwhile comes straight back, here
                // or (after a hand-off) on its new owner.
                let buffer = state.take_buffer(&key);
                state.metrics.passivations.inc();
                if buffer.is_empty() {
                } else if state.owns(&key) {
                    state.activate(&myself, key, buffer).await;
                } else {
                    for env in buffer {
                        state.forward(&key, env);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl<E: Entity> RegionState<E> {
    fn owns(&self, key: &str) -> bool {
        self.args.sharding.owns(E::KIND, key)
    }

    /// Sends a message for a key this node no longer owns on to its owner.
    fn forward(&self, key: &str, env: Envelope<E>) {
        let sharding = self.args.sharding.clone();
        let key = key.to_string();
        match env {
            Envelope::Tell(m) => {
                if let Err(e) = sharding.send::<E>(&key, m) {
                    tracing::debug!(kind = E::KIND, %key, error = %e, "forward failed");
                }
            }
            Envelope::Ask(m, reply) => {
                tokio::spawn(async move {
                    // On failure the dropped port tells the asker `unavailable`.
                    if let Ok(r) = sharding.ask::<E>(&key, m).await {
                        let _ = reply.send(r);
                    }
                });
            }
            Envelope::Subscribe(req, reply) => {
                tokio::spawn(async move {
                    let r = sharding.subscribe(E::KIND, &key, req).await;
                    let _ = reply.send(r.map_err(|e| e.to_string()));
                });
            }
            Envelope::Unsubscribe { channel, node } => {
                sharding.unsubscribe(E::KIND, &key, &channel, &node)
            }
            Envelope::Tick | Envelope::Kill | Envelope::Inspect(..) => {}
        }
    }

    /// The admin view of `key` from what the region knows.
    fn info(&self, key: &str) -> EntityInfo {
        let mut info = EntityInfo {
            kind: E::KIND.to_string(),
            key: key.to_string(),
            node: self.args.sharding.node().to_string(),
            active: false,
            mailbox: 0,
            restarts: self.restarts.get(key).copied().unwrap_or(0),
            activated_at: None,
            messages: 0,
        };
        match self.slots.get(key) {
            Some(Slot::Active { counters, .. }) => {
                info.active = true;
                counters.fill(&mut info);
            }
            Some(Slot::Waiting { buffer }) => info.mailbox = buffer.len() as u64,
            None => {}
        }
        info
    }

    /// Answers an inspection: a running entity adds its state summary, from its own task,
    /// after the messages queued before this one.
    fn inspect(&self, key: String, reply: RpcReplyPort<Option<(EntityInfo, serde_json::Value)>>) {
        let info = self.info(&key);
        match self.slots.get(&key) {
            None => {
                let _ = reply.send(None);
            }
            Some(Slot::Waiting { .. }) => {
                let _ = reply.send(Some((info, serde_json::Value::Null)));
            }
            Some(Slot::Active { actor, .. }) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                if actor
                    .send_message(Envelope::Inspect(info.clone(), RpcReplyPort::from(tx)))
                    .is_err()
                {
                    let _ = reply.send(Some((info, serde_json::Value::Null)));
                    return;
                }
                tokio::spawn(async move {
                    // An entity that dies first drops the port: answer with the counters.
                    let answer = rx.await.unwrap_or((info, serde_json::Value::Null));
                    let _ = reply.send(Some(answer));
                });
            }
        }
    }

    async fn deliver(&mut self, myself: &ActorRef<RegionMsg<E>>, key: String, env: Envelope<E>) {
        self.metrics.messages.inc();
        if !self.slots.contains_key(&key) && !self.owns(&key) {
            // In flight while the ring changed: never activate what another node owns.
            self.forward(&key, env);
            return;
        }
        match self.slots.get_mut(&key) {
            Some(Slot::Active {
                actor,
                last_message,
                counters,
            }) => {
                *last_message = Instant::now();
                counters.sent();
                if let Err(ractor::MessagingErr::SendErr(env)) = actor.send_message(env) {
                    // The actor just died; its supervision event follows and restarts it.
                    self.slots.insert(key, Slot::Waiting { buffer: vec![env] });
                }
            }
            Some(Slot::Waiting { buffer }) => {
                if buffer.len() < MAX_BUFFERED {
                    buffer.push(env);
                }
            }
            None => self.activate(myself, key, vec![env]).await,
        }
    }

    fn take_buffer(&mut self, key: &str) -> Vec<Envelope<E>> {
        match self.slots.remove(key) {
            Some(Slot::Waiting { buffer }) => buffer,
            _ => Vec::new(),
        }
    }

    async fn activate(
        &mut self,
        myself: &ActorRef<RegionMsg<E>>,
        key: String,
        buffer: Vec<Envelope<E>>,
    ) {
        let ctx = EntityContext {
            key: key.clone(),
            sharding: self.args.sharding.clone(),
        };
        let counters = Counters::new();
        let spawned = Actor::spawn_linked(
            None,
            EntityActor::<E>::default(),
            (ctx, self.args.deps.clone(), counters.clone()),
            myself.get_cell(),
        )
        .await;
        match spawned {
            Ok((actor, _)) => {
                self.metrics.activations.inc();
                self.keys.insert(actor.get_id(), key.clone());
                for env in buffer {
                    counters.sent();
                    let _ = actor.send_message(env);
                }
                self.slots.insert(
                    key,
                    Slot::Active {
                        actor,
                        last_message: Instant::now(),
                        counters,
                    },
                );
            }
            Err(e) => {
                // Dropping the buffer drops its reply ports: the askers see `unavailable`.
                tracing::error!(kind = E::KIND, %key, error = %e, "could not spawn entity");
            }
        }
    }

    /// Passivates (flush, stop) every active entity the ring moved to another node; what
    /// arrives for them meanwhile is forwarded once they have stopped.
    fn hand_off_unowned(&mut self) {
        let moved: Vec<String> = self
            .slots
            .iter()
            .filter(|(k, s)| matches!(s, Slot::Active { .. }) && !self.owns(k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in moved {
            if let Some(Slot::Active { actor, .. }) = self.slots.remove(&key) {
                tracing::info!(kind = E::KIND, %key, "handing off entity moved by the ring");
                self.metrics.handoffs.inc();
                let _ = actor.drain();
                self.slots.insert(key, Slot::Waiting { buffer: Vec::new() });
            }
        }
    }

    fn passivate_idle(&mut self) {
        let Some(idle) = self.args.passivate_after else {
            return;
        };
        if !E::PASSIVATE_WHEN_IDLE {
            return;
        }
        let now = Instant::now();
        let idle_keys: Vec<String> = self
            .slots
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Active { last_message, .. } if now - *last_message >= idle => Some(k.clone()),
                _ => None,
            })
            .collect();
        for key in idle_keys {
            if let Some(Slot::Active { actor, .. }) = self.slots.remove(&key) {
                tracing::debug!(kind = E::KIND, %key, "passivating idle entity");
                // Drain: what is already in its mailbox is handled, then it stops cleanly.
                let _ = actor.drain();
                self.slots.insert(key, Slot::Waiting { buffer: Vec::new() });
            }
        }
    }
}

/// The actor shell around one entity.
pub struct EntityActor<E: Entity>(PhantomData<fn() -> E>);

impl<E: Entity> Default for EntityActor<E> {
    fn default() -> Self {
        EntityActor(PhantomData)
    }
}

/// The shell's state: the entity once activated.
pub struct EntityState<E: Entity> {
    ctx: EntityContext,
    deps: Arc<E::Deps>,
    counters: Arc<Counters>,
    entity: Option<E>,
}

impl<E: Entity> Actor for EntityActor<E> {
    type Msg = Envelope<E>;
    type State = EntityState<E>;
    type Arguments = (EntityContext, Arc<E::Deps>, Arc<Counters>);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (ctx, deps, counters): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Cheap: the region waits for this. Loading state happens in post_start, on the
        // entity's own task, while messages queue in its mailbox.
        Ok(EntityState {
            ctx,
            deps,
            counters,
            entity: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let entity = E::activate(&state.ctx, &state.deps)
            .await
            .map_err(|e| format!("activating {}/{}: {e}", E::KIND, state.ctx.key))?;
        state.entity = Some(entity);
        if let Some(every) = E::TICK_EVERY {
            myself.send_interval(every, || Envelope::Tick);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(entity) = state.entity.as_mut() else {
            return Err(format!("{}/{} used before activation", E::KIND, state.ctx.key).into());
        };
        // Ticks come from the actor's own clock and inspections are the observer, not
        // traffic: neither passes through the region's count.
        if !matches!(msg, Envelope::Tick | Envelope::Inspect(..)) {
            state.counters.handled.fetch_add(1, Ordering::Relaxed);
        }
        match msg {
            Envelope::Tell(m) => {
                entity.handle(m, &state.ctx).await;
            }
            Envelope::Ask(m, reply) => {
                let respond = Responder::new(move |r| {
                    let _ = reply.send(r);
                });
                entity.handle_ask(m, &state.ctx, respond).await;
            }
            Envelope::Subscribe(req, reply) => {
                // A fenced activation's streams are over: its state may already be behind
                // the new one's, so the subscriber asks again (and reaches the new one).
                let respond = Responder::new(move |grant| {
                    let _ = reply.send(grant);
                });
                if entity.fenced() {
                    respond.send(Err(format!("{}/{} moved; retry", E::KIND, state.ctx.key)));
                } else {
                    entity.subscribe_then(req, &state.ctx, respond);
                }
            }
            Envelope::Unsubscribe { channel, node } => entity.unsubscribe(&channel, &node),
            Envelope::Tick => entity.on_tick(&state.ctx).await,
            Envelope::Inspect(mut info, reply) => {
                state.counters.fill(&mut info);
                let _ = reply.send((info, entity.summary()));
            }
            Envelope::Kill => {
                // A real unwind, as a bug's panic would raise: ractor catches it and the
                // region sees `ActorFailed`, exactly the path a crashing entity takes. It
                // skips the panic hook: a chaos run killing hundreds of entities should not
                // print (and, in a debug build, symbolize for a third of a second) a
                // backtrace each, while requests queue behind the dying entity.
                std::panic::resume_unwind(Box::new(format!(
                    "{}/{} killed by chaos request",
                    E::KIND,
                    state.ctx.key
                )));
            }
        }
        if entity.fenced() {
            tracing::warn!(kind = E::KIND, key = %state.ctx.key, "fenced by a newer activation elsewhere; stopping");
            myself.stop(Some("fenced".into()));
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(entity) = state.entity.as_mut() {
            entity.passivate(&state.ctx).await;
        }
        Ok(())
    }
}

/// The region for `E` as a supervised child: each (re)start spawns a fresh region and
/// registers it with the sharding, so routing reaches the new one.
pub fn region_child<E: Entity>(args: RegionArgs<E>) -> ChildSpec {
    ChildSpec::new(format!("region.{}", E::KIND), move |sup| {
        let args = args.clone();
        async move { Ok(spawn_region(args, sup).await?.get_cell()) }
    })
}

/// Spawns the region for `E` under `supervisor` and registers it with `sharding`.
pub async fn spawn_region<E: Entity>(
    args: RegionArgs<E>,
    supervisor: ActorCell,
) -> Result<ActorRef<RegionMsg<E>>, ractor::SpawnErr> {
    let sharding = args.sharding.clone();
    let (region, _) = Actor::spawn_linked(
        Some(format!("bourse.region.{}", E::KIND)),
        Region::<E>::default(),
        args,
        supervisor,
    )
    .await?;
    sharding.register::<E>(region.clone());
    Ok(region)
}
