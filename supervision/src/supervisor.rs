//! A supervisor actor over a fixed, ordered list of children.
//!
//! Each child is started (linked to the supervisor) by its [`ChildSpec`]'s start function,
//! in list order. When a child *fails* (a panic or an error in a handler), the supervisor
//! records the failure in its [`RestartTracker`] (one per supervisor, as in OTP: the
//! intensity counts failures of all its children) and either
//! - restarts, after the tracker's backoff, the children its [`Strategy`] names — the
//!   siblings it restarts are stopped first (and waited for), then all are started again
//!   in list order; or
//! - escalates: stops every child and fails itself, so its own parent decides.
//!
//! A child that *stops* normally is not restarted (OTP's `transient`): stopping is how a
//! node shuts down.

use crate::policy::{Decision, RestartPolicy, RestartTracker};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which children restart when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the failed child: siblings are independent.
    OneForOne,
    /// Every child: they share state none of them can rebuild alone.
    OneForAll,
    /// The failed child and every child started after it: later children depend on
    /// earlier ones (they were given their address, or their state, when they started).
    RestForOne,
}

impl Strategy {
    /// The indices to restart when child `failed` of `len` fails.
    pub fn affected(self, failed: usize, len: usize) -> std::ops::Range<usize> {
        match self {
            Strategy::OneForOne => failed..failed + 1,
            Strategy::OneForAll => 0..len,
            Strategy::RestForOne => failed..len,
        }
    }
}

type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// How to start (and restart) one child, linked to the given supervisor cell.
#[derive(Clone)]
pub struct ChildSpec {
    /// For logs and [`SupervisorMsg::Children`].
    pub name: String,
    start: Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .finish()
    }
}

impl ChildSpec {
    /// A child started by `start(supervisor)`, which must link what it spawns to
    /// `supervisor` (`Actor::spawn_linked`).
    pub fn new<F, Fut>(name: impl Into<String>, start: F) -> ChildSpec
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        ChildSpec {
            name: name.into(),
            start: Arc::new(move |sup| Box::pin(start(sup))),
        }
    }
}

/// What a supervisor is given.
#[derive(Debug)]
pub struct SupervisorArgs {
    pub strategy: Strategy,
    pub policy: RestartPolicy,
    /// Started in this order; restarts keep it.
    pub children: Vec<ChildSpec>,
}

/// Messages to a supervisor.
pub enum SupervisorMsg {
    /// Start the stopped children among these indices (after a backoff).
    Restart(Vec<usize>),
    /// Each child's name and current actor, if running.
    Children(RpcReplyPort<Vec<(String, Option<ActorId>)>>),
    /// Restarts so far.
    Restarts(RpcReplyPort<u64>),
}

impl ractor::Message for SupervisorMsg {}

/// The supervisor actor.
#[derive(Debug, Default)]
pub struct Supervisor;

/// The supervisor's state.
pub struct SupervisorState {
    strategy: Strategy,
    children: Vec<(ChildSpec, Option<ActorCell>)>,
    tracker: RestartTracker,
    /// Children this supervisor stopped itself: their exit is not a failure.
    stopping: HashSet<ActorId>,
    restarts: u64,
}

/// How long to wait for a sibling to stop before restarting it anyway.
const STOP_WAIT: Duration = Duration::from_secs(10);

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::with_capacity(args.children.len());
        for spec in args.children {
            let cell = (spec.start)(myself.get_cell())
                .await
                .map_err(|e| format!("starting {}: {e}", spec.name))?;
            children.push((spec, Some(cell)));
        }
        Ok(SupervisorState {
            strategy: args.strategy,
            tracker: RestartTracker::new(args.policy),
            children,
            stopping: HashSet::new(),
            restarts: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(indices) => {
                for i in indices {
                    let Some((spec, slot)) = state.children.get_mut(i) else {
                        continue;
                    };
                    if slot.is_some() {
                        continue;
                    }
                    match (spec.start)(myself.get_cell()).await {
                        Ok(cell) => {
                            tracing::info!(child = %spec.name, "child restarted");
                            *slot = Some(cell);
                        }
                        Err(e) => {
                            // A child that cannot start counts as failing again.
                            let name = spec.name.clone();
                            tracing::warn!(child = %name, error = %e, "child failed to restart");
                            state
                                .on_failure(&myself, i, &format!("restarting: {e}"))
                                .await?;
                        }
                    }
                }
            }
            SupervisorMsg::Children(reply) => {
                let _ = reply.send(
                    state
                        .children
                        .iter()
                        .map(|(spec, cell)| (spec.name.clone(), cell.as_ref().map(|c| c.get_id())))
                        .collect(),
                );
            }
            SupervisorMsg::Restarts(reply) => {
                let _ = reply.send(state.restarts);
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
                if state.stopping.remove(&cell.get_id()) {
                    return Ok(());
                }
                if let Some(i) = state.index_of(&cell) {
                    state.on_failure(&myself, i, &err.to_string()).await?;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if state.stopping.remove(&cell.get_id()) {
                    return Ok(());
                }
                if let Some(i) = state.index_of(&cell) {
                    tracing::info!(child = %state.children[i].0.name, ?reason, "child stopped");
                    state.children[i].1 = None;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl SupervisorState {
    fn index_of(&self, cell: &ActorCell) -> Option<usize> {
        self.children
            .iter()
            .position(|(_, c)| c.as_ref().is_some_and(|c| c.get_id() == cell.get_id()))
    }

    /// Stops child `i` (and its own children) and waits, bounded, until it is gone.
    async fn stop_child(&mut self, i: usize, reason: &str) {
        if let Some(cell) = self.children[i].1.take() {
            self.stopping.insert(cell.get_id());
            if let Err(e) = cell
                .stop_and_wait(Some(reason.to_string()), Some(STOP_WAIT))
                .await
            {
                tracing::warn!(child = %self.children[i].0.name, error = %e, "child did not stop in time");
            }
        }
    }

    async fn on_failure(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        failed: usize,
        err: &str,
    ) -> Result<(), ActorProcessingErr> {
        let name = self.children[failed].0.name.clone();
        // The failed child is gone; what it had linked to itself goes with it.
        if let Some(cell) = self.children[failed].1.take() {
            cell.stop_children(Some(format!("{name} failed")));
        }
        match self.tracker.on_failure(Instant::now()) {
            Decision::Restart { after } => {
                let affected = self.strategy.affected(failed, self.children.len());
                tracing::warn!(child = %name, error = %err, strategy = ?self.strategy, delay_ms = after.as_millis() as u64, restarting = affected.len(), "child failed; restarting");
                for i in affected.clone() {
                    self.stop_child(i, &format!("restarting with {name}")).await;
                }
                self.restarts += 1;
                myself.send_after(after, move || SupervisorMsg::Restart(affected.collect()));
                Ok(())
            }
            Decision::Escalate => {
                tracing::error!(child = %name, error = %err, "restart intensity exceeded; escalating");
                for i in (0..self.children.len()).rev() {
                    self.stop_child(i, "supervisor escalating").await;
                }
                let policy = self.tracker.policy();
                Err(format!(
                    "{name} failed more than {} times in {:?}: {err}",
                    policy.max_restarts, policy.within
                )
                .into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    /// Starts per child name.
    type Starts = Arc<Mutex<HashMap<String, u32>>>;

    /// A child that fails when told to.
    struct Worker;

    enum WorkerMsg {
        Fail,
    }
    impl ractor::Message for WorkerMsg {}

    impl Actor for Worker {
        type Msg = WorkerMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            _: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(
            &self,
            _myself: ActorRef<Self::Msg>,
            msg: WorkerMsg,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                WorkerMsg::Fail => Err("failing on command".into()),
            }
        }
    }

    fn spec(name: &str, starts: &Starts) -> ChildSpec {
        let starts = starts.clone();
        let name = name.to_string();
        ChildSpec::new(name.clone(), move |sup: ActorCell| {
            let starts = starts.clone();
            let name = name.clone();
            async move {
                *starts.lock().unwrap().entry(name).or_default() += 1;
                let (actor, _) = Actor::spawn_linked(None, Worker, (), sup).await?;
                Ok(actor.get_cell())
            }
        })
    }

    fn policy(max_restarts: u32, backoff_ms: u64) -> RestartPolicy {
        RestartPolicy {
            max_restarts,
            within: Duration::from_secs(60),
            backoff_min: Duration::from_millis(backoff_ms),
            backoff_max: Duration::from_millis(backoff_ms),
        }
    }

    /// A parent that reports its supervised children's failures: where escalations land.
    struct Parent;

    impl Actor for Parent {
        type Msg = ();
        type State = mpsc::UnboundedSender<String>;
        type Arguments = mpsc::UnboundedSender<String>;

        async fn pre_start(
            &self,
            _myself: ActorRef<()>,
            tx: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(tx)
        }

        async fn handle_supervisor_evt(
            &self,
            _myself: ActorRef<()>,
            event: SupervisionEvent,
            tx: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let SupervisionEvent::ActorFailed(_, err) = event {
                let _ = tx.send(err.to_string());
            }
            Ok(())
        }
    }

    struct Fixture {
        parent: ActorRef<()>,
        sup: ActorRef<SupervisorMsg>,
        starts: Starts,
        escalations: mpsc::UnboundedReceiver<String>,
    }

    async fn start(strategy: Strategy, policy: RestartPolicy) -> Fixture {
        let starts: Starts = Arc::default();
        let (tx, escalations) = mpsc::unbounded_channel();
        let (parent, _) = Actor::spawn(None, Parent, tx).await.unwrap();
        let (sup, _) = Actor::spawn_linked(
            None,
            Supervisor,
            SupervisorArgs {
                strategy,
                policy,
                children: ["a", "b", "c"].iter().map(|n| spec(n, &starts)).collect(),
            },
            parent.get_cell(),
        )
        .await
        .unwrap();
        Fixture {
            parent,
            sup,
            starts,
            escalations,
        }
    }

    impl Fixture {
        async fn children(&self) -> Vec<Option<ActorId>> {
            let list = ractor::call!(self.sup, SupervisorMsg::Children).unwrap();
            list.into_iter().map(|(_, id)| id).collect()
        }

        async fn fail(&self, i: usize) {
            let id = self.children().await[i].expect("child running");
            let cell = ractor::ActorRef::<WorkerMsg>::from(
                self.sup
                    .get_children()
                    .into_iter()
                    .find(|c| c.get_id() == id)
                    .expect("child cell"),
            );
            cell.send_message(WorkerMsg::Fail).unwrap();
        }

        fn starts(&self) -> Vec<u32> {
            let s = self.starts.lock().unwrap();
            ["a", "b", "c"]
                .iter()
                .map(|n| s.get(*n).copied().unwrap_or(0))
                .collect()
        }

        /// Waits until every child runs again and the starts are `want`.
        async fn settle(&self, want: [u32; 3]) {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if self.starts() == want && self.children().await.iter().all(Option::is_some) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "starts {:?}, want {want:?}",
                    self.starts()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        fn stop(self) {
            self.parent.stop(None);
            self.sup.stop(None);
        }
    }

    #[tokio::test]
    async fn one_for_one_restarts_only_the_failed_child() {
        let f = start(Strategy::OneForOne, policy(5, 10)).await;
        f.settle([1, 1, 1]).await;
        let before = f.children().await;
        f.fail(1).await;
        f.settle([1, 2, 1]).await;
        let after = f.children().await;
        assert_eq!(after[0], before[0]);
        assert_ne!(after[1], before[1]);
        assert_eq!(after[2], before[2]);
        assert_eq!(ractor::call!(f.sup, SupervisorMsg::Restarts).unwrap(), 1);
        f.stop();
    }

    #[tokio::test]
    async fn one_for_all_restarts_every_child() {
        let f = start(Strategy::OneForAll, policy(5, 10)).await;
        f.settle([1, 1, 1]).await;
        let before = f.children().await;
        f.fail(1).await;
        f.settle([2, 2, 2]).await;
        let after = f.children().await;
        assert!(
            before.iter().zip(&after).all(|(b, a)| b != a),
            "{before:?} {after:?}"
        );
        f.stop();
    }

    #[tokio::test]
    async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
        let f = start(Strategy::RestForOne, policy(5, 10)).await;
        f.settle([1, 1, 1]).await;
        let before = f.children().await;
        f.fail(1).await;
        f.settle([1, 2, 2]).await;
        let after = f.children().await;
        assert_eq!(after[0], before[0]);
        assert_ne!(after[1], before[1]);
        assert_ne!(after[2], before[2]);
        // The first child failing takes all three with it.
        f.fail(0).await;
        f.settle([2, 3, 3]).await;
        f.stop();
    }

    #[tokio::test]
    async fn past_its_intensity_the_supervisor_escalates_to_its_parent() {
        let mut f = start(Strategy::OneForOne, policy(2, 10)).await;
        f.settle([1, 1, 1]).await;
        f.fail(2).await;
        f.settle([1, 1, 2]).await;
        f.fail(0).await;
        f.settle([2, 1, 2]).await;
        assert!(
            f.escalations.try_recv().is_err(),
            "two failures are within the limit"
        );
        // The third failure in the window is one too many: the parent hears of it.
        f.fail(1).await;
        let err = tokio::time::timeout(Duration::from_secs(5), f.escalations.recv())
            .await
            .expect("escalated in time")
            .expect("an escalation");
        assert!(err.contains("b failed more than 2 times"), "{err}");
        assert_eq!(
            f.starts(),
            vec![2, 1, 2],
            "nothing restarted after escalating"
        );
        // Its children were stopped with it.
        assert!(f.sup.get_children().is_empty());
        f.parent.stop(None);
    }

    #[tokio::test]
    async fn a_restart_waits_out_the_backoff() {
        let f = start(Strategy::OneForOne, policy(5, 2000)).await;
        f.settle([1, 1, 1]).await;
        f.fail(0).await;
        // Backoff with jitter lies in [1 s, 2 s]: not restarted 50 ms later...
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(f.children().await[0], None);
        assert_eq!(f.starts(), vec![1, 1, 1]);
        // ...and restarted within it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while f.starts() != vec![2, 1, 1] {
            assert!(Instant::now() < deadline, "never restarted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        f.stop();
    }

    #[test]
    fn strategies_name_who_restarts() {
        assert_eq!(Strategy::OneForOne.affected(1, 4), 1..2);
        assert_eq!(Strategy::OneForAll.affected(1, 4), 0..4);
        assert_eq!(Strategy::RestForOne.affected(1, 4), 1..4);
        assert_eq!(Strategy::RestForOne.affected(3, 4), 3..4);
    }
}
