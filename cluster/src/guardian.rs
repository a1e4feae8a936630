//! The node guardian: the root of a node's supervision tree. Its children are the node
//! supervisor (the regions, one-for-one), the cluster supervisor (membership and router,
//! rest-for-one) and the cluster node server. A child that fails here has already exhausted
//! its own restart intensity (or, for the node server, cannot be restarted in place): this
//! node can no longer vouch for its state, so the guardian reports it and the node shuts
//! down with an error, for the operator's process supervisor to restart from storage (let
//! it crash).

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;

/// The guardian actor.
#[derive(Debug, Default)]
pub struct Guardian;

/// Messages to the guardian (none yet besides supervision events).
#[derive(Debug)]
pub enum GuardianMsg {}

impl ractor::Message for GuardianMsg {}

impl Actor for Guardian {
    type Msg = GuardianMsg;
    type State = watch::Sender<Option<String>>;
    type Arguments = watch::Sender<Option<String>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        fatal: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(fatal)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        fatal: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let name = cell.get_name().unwrap_or_else(|| cell.get_id().to_string());
                tracing::error!(child = %name, error = %err, "node child failed; shutting the node down");
                let _ = fatal.send(Some(format!("{name} failed: {err}")));
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                tracing::debug!(child = ?cell.get_name(), ?reason, "node child stopped");
            }
            _ => {}
        }
        Ok(())
    }
}

/// Spawns the guardian; the receiver turns `Some(reason)` when the node must stop.
pub async fn spawn_guardian()
-> Result<(ActorRef<GuardianMsg>, watch::Receiver<Option<String>>), ractor::SpawnErr> {
    let (tx, rx) = watch::channel(None);
    let (actor, _) = Actor::spawn(Some("bourse.guardian".to_string()), Guardian, tx).await?;
    Ok((actor, rx))
}
