//! Admin endpoints (PROTOCOL.md "Admin"), behind the admin bearer token: the cluster view
//! and the chaos kill (which reaches the entity on whichever node owns it). The entity
//! inspection API follows with the Operations issue.

use crate::error::ApiError;
use crate::limits::constant_time_eq;
use crate::state::GatewayState;
use bourse_actors::session::{self, Session, SessionMsg, SessionReply};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Checks `Authorization: Bearer <admin token>`.
pub fn authorize(state: &GatewayState, header: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = state.admin_token.as_deref() else {
        return Err(ApiError::forbidden(
            "admin endpoints are disabled: no admin token configured",
        ));
    };
    let given = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::forbidden("a valid admin token is required"))
    }
}

/// `POST /admin/chaos/kill` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillRequest {
    kind: String,
    key: String,
}

/// Panics the entity inside its actor; its region restarts it.
pub async fn kill(state: Arc<GatewayState>, req: KillRequest) -> Result<Value, ApiError> {
    let killed = state
        .sharding
        .kill(&req.kind, &req.key)
        .await
        .map_err(|e| match e {
            bourse_cluster::AskError::UnknownKind(k) => {
                ApiError::not_found(format!("unknown kind '{k}'"))
            }
            other => other.into(),
        })?;
    if !killed {
        return Err(ApiError::not_found(format!(
            "{}/{} is not active",
            req.kind, req.key
        )));
    }
    tracing::warn!(kind = %req.kind, key = %req.key, "chaos kill");
    Ok(json!({"killed": {"kind": req.kind, "key": req.key}}))
}

/// `GET /admin/cluster`: members as this node sees them, and the ring's shares.
pub async fn cluster(state: Arc<GatewayState>) -> Result<Value, ApiError> {
    let view = state
        .cluster
        .view()
        .await
        .ok_or_else(|| ApiError::unavailable("membership is not answering; retry"))?;
    let ring = state.sharding.ring();
    let owners: serde_json::Map<String, Value> = ring
        .shares()
        .into_iter()
        .map(|(node, share)| (node, json!((share * 10_000.0).round() / 10_000.0)))
        .collect();
    Ok(json!({
        "node": view.node,
        "members": view.members,
        "ring": {"vnodes_per_node": ring.vnodes(), "members": ring.members(), "owners": owners},
    }))
}

/// `POST /admin/bench/routing` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingBench {
    /// `send` (throughput) or `ask` (sequential round trips).
    mode: String,
    /// `local` or `remote` entities.
    target: bourse_cluster::probe::Target,
    /// Messages; at most 10,000,000.
    count: u64,
}

/// A routing measurement run inside this node (a diagnostic for operators).
pub async fn bench_routing(state: Arc<GatewayState>, req: RoutingBench) -> Result<Value, ApiError> {
    use bourse_cluster::probe;
    if req.count == 0 || req.count > 10_000_000 {
        return Err(ApiError::bad_request("'count' must be 1..=10000000"));
    }
    let measured = match req.mode.as_str() {
        "send" => probe::send_throughput(&state.sharding, req.target, req.count).await,
        "ask" => probe::ask_latency(&state.sharding, req.target, req.count).await,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown mode '{other}' (send, ask)"
            )));
        }
    }
    .map_err(ApiError::unavailable)?;
    serde_json::to_value(measured).map_err(|e| ApiError::internal(e.to_string()))
}

/// `GET /admin/entities/{kind}/{key}`: where an entity lives by this node's ring, and for a
/// session, where its user is connected.
pub async fn entity(state: &GatewayState, kind: &str, key: &str) -> Result<Value, ApiError> {
    if !state.sharding.has_kind(kind) {
        return Err(ApiError::not_found(format!("no entity kind '{kind}'")));
    }
    let owner = state
        .sharding
        .ring()
        .owner(kind, key)
        .map(str::to_string)
        .ok_or_else(|| ApiError::unavailable("no cluster members yet; retry"))?;
    let mut view =
        json!({"kind": kind, "key": key, "owner": owner, "asked": state.sharding.node()});
    if kind == session::KIND {
        if key.parse::<u64>().is_err() {
            return Err(ApiError::not_found(format!("no session '{key}'")));
        }
        match state
            .sharding
            .ask::<Session>(key, SessionMsg::Connections)
            .await?
        {
            SessionReply::Connections(pairs) => {
                let pairs: Vec<Value> = pairs
                    .into_iter()
                    .map(|(node, conn)| json!({"node": node, "conn": conn}))
                    .collect();
                view["state"] = json!({ "connections": pairs });
            }
            SessionReply::Done => {}
        }
    }
    Ok(view)
}
