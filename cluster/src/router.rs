//! The router: this node's one cross-node endpoint. Every node's router joins the process
//! group `bourse.routers` (for heartbeats and broadcasts) and its own group
//! `bourse.router.<node>` (for addressed traffic). Its messages are opaque bincode payloads
//! ([`crate::wire::msg`]), so the cluster protocol is one small enum; calls are served on
//! their own task so a slow entity never blocks the router.

use crate::membership::MembershipMsg;
use crate::sharding::Sharding;
use crate::wire::{self, msg};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use std::sync::atomic::{AtomicU64, Ordering};

/// The group of every node's router.
pub const ROUTERS_GROUP: &str = "bourse.routers";

/// Sends `cast` to every other node's router (membership announcements, a publisher's
/// new epoch, an operator's `down`): encoded once, fire and forget.
pub fn cast_to_peers(cast: &msg::Cast) {
    let bytes = match crate::wire::encode(cast) {
        Ok(b) => b,
        Err(e) => return tracing::error!(error = %e, "cannot encode a cluster broadcast"),
    };
    for cell in ractor::pg::get_members(&ROUTERS_GROUP.to_string()) {
        if !cell.get_id().is_local() {
            let _ = ActorRef::<RouterMsg>::from(cell).cast(RouterMsg::Cast(bytes.clone()));
        }
    }
}

/// The group holding just `node`'s router.
pub fn node_group(node: &str) -> String {
    format!("bourse.router.{node}")
}

/// The router's wire messages.
#[derive(RactorClusterMessage)]
pub enum RouterMsg {
    /// An encoded [`msg::Cast`].
    Cast(Vec<u8>),
    /// An encoded [`msg::Call`], answered with an encoded [`msg::Reply`].
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// The router actor.
#[derive(Debug, Default)]
pub struct Router;

/// What the router hands traffic to.
pub struct RouterState {
    pub sharding: Sharding,
    pub membership: ActorRef<MembershipMsg>,
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterState;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: RouterState,
    ) -> Result<Self::State, ActorProcessingErr> {
        let cell = myself.get_cell();
        ractor::pg::join(ROUTERS_GROUP.to_string(), vec![cell.clone()]);
        ractor::pg::join(node_group(state.sharding.node()), vec![cell]);
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RouterMsg::Cast(bytes) => match wire::decode::<msg::Cast>(&bytes) {
                Ok(cast) => on_cast(state, cast),
                Err(e) => refused(&e),
            },
            RouterMsg::Call(bytes, reply) => {
                let sharding = state.sharding.clone();
                tokio::spawn(async move {
                    let answer = match wire::decode::<msg::Call>(&bytes) {
                        Ok(call) => sharding.serve_call(call).await,
                        Err(e) => {
                            refused(&e);
                            msg::Reply::Failed {
                                retry: false,
                                message: e.to_string(),
                            }
                        }
                    };
                    match wire::encode(&answer) {
                        Ok(bytes) => {
                            let _ = reply.send(bytes);
                        }
                        Err(e) => tracing::error!(error = %e, "cannot encode a cluster reply"),
                    }
                });
            }
        }
        Ok(())
    }
}

/// Counts a message dropped undecoded, and logs the 1st, 2nd, 4th, 8th... of each reason:
/// a peer of another build sends several a second, and one line says what is wrong.
fn refused(e: &wire::WireError) {
    static SEEN: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    let (reason, i) = match e {
        wire::WireError::Version(_) | wire::WireError::Unversioned => ("version", 0),
        wire::WireError::Codec(_) => ("codec", 1),
    };
    crate::metrics::MESSAGES_REFUSED
        .with_label_values(&[reason])
        .inc();
    let seen = SEEN[i].fetch_add(1, Ordering::Relaxed) + 1;
    if seen.is_power_of_two() {
        tracing::warn!(error = %e, seen, "dropping an undecodable cluster message");
    }
}

fn on_cast(state: &RouterState, cast: msg::Cast) {
    let sharding = &state.sharding;
    match cast {
        msg::Cast::Tell {
            kind,
            key,
            payload,
            hops,
        } => sharding.tell_bytes(&kind, &key, payload, hops),
        msg::Cast::Publish { kind, key, event } => {
            if sharding.hub().deliver(&event) == crate::Delivery::NoSubscribers {
                sharding.unsubscribe(&kind, &key, &event.channel, sharding.node());
            }
        }
        msg::Cast::PublisherActivated { kind, key, epoch } => {
            sharding.hub().publisher_activated(&kind, &key, &epoch);
        }
        msg::Cast::Unsubscribe {
            kind,
            key,
            channel,
            node,
        } => sharding.unsubscribe(&kind, &key, &channel, &node),
        msg::Cast::Heartbeat(info) => {
            let _ = state.membership.cast(MembershipMsg::Heartbeat(info));
        }
        msg::Cast::Down(node) => {
            let _ = state.membership.cast(MembershipMsg::Down(node));
        }
        msg::Cast::Contacts(contacts) => {
            let _ = state.membership.cast(MembershipMsg::Contacts(contacts));
        }
        msg::Cast::Batch(casts) => {
            for cast in casts {
                on_cast(state, cast);
            }
        }
    }
}
