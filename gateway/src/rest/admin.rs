//! Admin endpoints (docs/PROTOCOL.md "Admin"), behind the admin bearer token. Every node answers
//! for the whole cluster: the entity list asks each member, an entity's detail comes from
//! its owner by the ring, and a chaos kill or a leave reaches whichever node it names.

use crate::error::ApiError;
use crate::state::GatewayState;
use bourse_cluster::membership::{ClusterView, MemberView, Status};
use bourse_cluster::{AskError, EntityInfo};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Most entities one `GET /admin/entities` page lists.
pub const MAX_ENTITIES_PAGE: usize = 1000;
/// Entities listed when `limit` is absent.
const DEFAULT_ENTITIES_PAGE: usize = 100;

/// Checks `Authorization: Bearer <admin token>` in constant time.
pub fn authorize(state: &GatewayState, header: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = state.admin_token.as_deref() else {
        return Err(ApiError::forbidden(
            "admin endpoints are disabled: no admin token configured",
        ));
    };
    let given = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::forbidden("a valid admin token is required"))
    }
}

fn unknown_kind(e: AskError) -> ApiError {
    match e {
        AskError::UnknownKind(k) => ApiError::not_found(format!("no entity kind '{k}'")),
        other => other.into(),
    }
}

/// `POST /admin/chaos/kill` body: one entity (`key`), or a share of a node's (`fraction`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillRequest {
    kind: String,
    key: Option<String>,
    /// 0 < fraction <= 1: each active entity of the kind dies with this probability.
    fraction: Option<f64>,
    /// Whose entities `fraction` kills (default: the node asked).
    node: Option<String>,
}

/// Panics the entity (or entities) inside the actor; the region restarts them.
pub async fn kill(state: Arc<GatewayState>, req: KillRequest) -> Result<Value, ApiError> {
    match (req.key, req.fraction) {
        (Some(key), None) => {
            if req.node.is_some() {
                return Err(ApiError::bad_request(
                    "'node' goes with 'fraction'; a key is killed wherever it runs",
                ));
            }
            let killed = state
                .sharding
                .kill(&req.kind, &key)
                .await
                .map_err(unknown_kind)?;
            if !killed {
                return Err(ApiError::not_found(format!(
                    "{}/{key} is not active",
                    req.kind
                )));
            }
            tracing::warn!(kind = %req.kind, %key, "chaos kill");
            Ok(json!({"killed": {"kind": req.kind, "key": key}}))
        }
        (None, Some(fraction)) => {
            if !(fraction > 0.0 && fraction <= 1.0) {
                return Err(ApiError::bad_request("'fraction' must be in (0, 1]"));
            }
            let node = target_node(&state, req.node.as_ref()).await?;
            let keys = state
                .sharding
                .kill_some_on(&node, &req.kind, fraction)
                .await
                .map_err(unknown_kind)?;
            tracing::warn!(kind = %req.kind, %node, killed = keys.len(), "chaos kill of a fraction");
            Ok(json!({"node": node, "kind": req.kind, "killed": keys}))
        }
        _ => Err(ApiError::bad_request(
            "give either 'key' (one entity) or 'fraction' (a share of a node's)",
        )),
    }
}

/// `GET /admin/connections?node=&limit=`: one node's client connections (the node asked,
/// by default): how many it has, and the first `limit` by id with their user, channels,
/// queued frames and age.
pub async fn connections(
    state: Arc<GatewayState>,
    q: HashMap<String, String>,
) -> Result<Value, ApiError> {
    let limit = page_limit(&q, &["node", "limit"])?;
    let node = target_node(&state, q.get("node")).await?;
    let (total, listed) = state.sharding.clients_on(&node, limit).await?;
    Ok(json!({"node": node, "total": total, "connections": listed}))
}

/// `node` if it names a live member, else the node asked.
async fn target_node(state: &GatewayState, node: Option<&String>) -> Result<String, ApiError> {
    Ok(match node {
        Some(node) => live_member(state, node).await?.node,
        None => state.sharding.node().to_string(),
    })
}

/// `POST /admin/chaos/kill-connection` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillConnectionRequest {
    /// The node holding the connection (default: the node asked).
    node: Option<String>,
    id: u64,
}

/// Panics one client connection as a bug would: it alone closes (a WebSocket with 1011),
/// and its subscriptions, session attachment and presence are released.
pub async fn kill_connection(
    state: Arc<GatewayState>,
    req: KillConnectionRequest,
) -> Result<Value, ApiError> {
    let node = target_node(&state, req.node.as_ref()).await?;
    if !state.sharding.kill_client_on(&node, req.id).await? {
        return Err(ApiError::not_found(format!(
            "node {node} has no connection {}",
            req.id
        )));
    }
    tracing::warn!(%node, id = req.id, "chaos kill of a client connection");
    Ok(json!({"killed": {"node": node, "id": req.id}}))
}

async fn view(state: &GatewayState) -> Result<ClusterView, ApiError> {
    state
        .cluster
        .view()
        .await
        .ok_or_else(|| ApiError::unavailable("membership is not answering; retry"))
}

async fn members(state: &GatewayState) -> Result<Vec<MemberView>, ApiError> {
    Ok(view(state).await?.members)
}

/// `node` if it is a member that is not down.
async fn live_member(state: &GatewayState, node: &str) -> Result<MemberView, ApiError> {
    members(state)
        .await?
        .into_iter()
        .find(|m| m.node == node && m.status != Status::Down)
        .ok_or_else(|| ApiError::not_found(format!("no live member '{node}'")))
}

/// `GET /admin/cluster`: members as this node sees them, and the ring's shares.
pub async fn cluster(state: Arc<GatewayState>) -> Result<Value, ApiError> {
    let view = view(&state).await?;
    let ring = state.sharding.ring();
    let owners: serde_json::Map<String, Value> = ring
        .shares()
        .into_iter()
        .map(|(node, share)| (node, json!((share * 10_000.0).round() / 10_000.0)))
        .collect();
    Ok(json!({
        "node": view.node,
        "members": view.members,
        "serving": view.serving,
        "agreed": view.agreed,
        "joint": view.joint,
        "left_out": view.left_out,
        "ring": {"vnodes_per_node": ring.vnodes(), "members": ring.members(), "owners": owners},
    }))
}

/// Refuses a listing query with a parameter not in `allowed`, and reads its page size:
/// `limit` in 1..=[`MAX_ENTITIES_PAGE`], by default [`DEFAULT_ENTITIES_PAGE`].
fn page_limit(q: &HashMap<String, String>, allowed: &[&str]) -> Result<usize, ApiError> {
    if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown parameter '{k}'")));
    }
    match q.get("limit") {
        None => Ok(DEFAULT_ENTITIES_PAGE),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_ENTITIES_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(format!("'limit' must be 1..={MAX_ENTITIES_PAGE}"))
            }),
    }
}

/// `GET /admin/entities?kind=&node=&limit=&after=`: entities over the whole cluster (each
/// live member asked), sorted by kind then key. A page holds at most `limit`; the next one
/// starts `after=<kind>/<key>` of the last entry.
pub async fn entities(
    state: Arc<GatewayState>,
    q: HashMap<String, String>,
) -> Result<Value, ApiError> {
    let limit = page_limit(&q, &["kind", "node", "limit", "after"])?;
    let kind = q.get("kind").map(String::as_str);
    if let Some(k) = kind
        && !state.sharding.has_kind(k)
    {
        return Err(ApiError::not_found(format!("no entity kind '{k}'")));
    }
    let after = match q.get("after") {
        None => None,
        Some(a) => Some(a.split_once('/').ok_or_else(|| {
            ApiError::bad_request("'after' is '<kind>/<key>' of the last entry seen")
        })?),
    };
    let nodes: Vec<String> = match q.get("node") {
        Some(node) => vec![live_member(&state, node).await?.node],
        None => members(&state)
            .await?
            .into_iter()
            .filter(|m| m.status != Status::Down)
            .map(|m| m.node)
            .collect(),
    };
    let asks = nodes
        .iter()
        .map(|node| state.sharding.entities_on(node, kind));
    let mut all: Vec<EntityInfo> = Vec::new();
    for (node, answer) in nodes.iter().zip(futures_util::future::join_all(asks).await) {
        all.extend(answer.map_err(|e| {
            ApiError::unavailable(format!(
                "node {node} did not list its entities ({e}); retry"
            ))
        })?);
    }
    all.retain(|e| after.is_none_or(|(k, key)| (e.kind.as_str(), e.key.as_str()) > (k, key)));
    all.sort_by(|a, b| (&a.kind, &a.key, &a.node).cmp(&(&b.kind, &b.key, &b.node)));
    all.truncate(limit);
    serde_json::to_value(all).map_err(|e| ApiError::internal(e.to_string()))
}

/// `POST /admin/cluster/leave` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaveRequest {
    node: String,
}

/// Tells a node to drain: it leaves the ring, hands its entities off, then its process
/// exits.
pub async fn leave(state: Arc<GatewayState>, req: LeaveRequest) -> Result<Value, ApiError> {
    let member = live_member(&state, &req.node).await?;
    state.sharding.leave(&member.node).await?;
    tracing::warn!(node = %member.node, "asked to leave the cluster");
    Ok(json!({"leaving": member.node}))
}

/// `POST /admin/cluster/down` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownRequest {
    node: String,
}

/// Declares a member this node no longer hears gone for good, on every member it reaches:
/// it stops counting towards a majority (see `bourse_cluster::membership::down`).
pub async fn down(state: Arc<GatewayState>, req: DownRequest) -> Result<Value, ApiError> {
    let view = view(&state).await?;
    if req.node == view.node {
        return Err(ApiError::bad_request(
            "a node cannot down itself: drain it with leave",
        ));
    }
    let member = view
        .members
        .iter()
        .find(|m| m.node == req.node)
        .ok_or_else(|| ApiError::not_found(format!("no member '{}'", req.node)))?;
    if member.status != Status::Down {
        return Err(ApiError::conflict(format!(
            "'{}' is heard ({}): only a member this node no longer hears can be downed; drain a live one with leave",
            req.node,
            member.status.as_str()
        )));
    }
    bourse_cluster::membership::down(&req.node);
    tracing::warn!(node = %req.node, "downed by an operator");
    Ok(json!({"down": req.node}))
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

/// `GET /admin/entities/{kind}/{key}`: the owner by this node's ring, and, when the
/// owner's region holds it, its counters and state summary.
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
    match state
        .sharding
        .inspect(kind, key)
        .await
        .map_err(unknown_kind)?
    {
        None => view["active"] = json!(false),
        Some((info, summary)) => {
            view["active"] = json!(info.active);
            view["node"] = json!(info.node);
            view["mailbox"] = json!(info.mailbox);
            view["restarts"] = json!(info.restarts);
            view["activated_at"] = json!(info.activated_at);
            view["messages"] = json!(info.messages);
            view["state"] = summary;
        }
    }
    Ok(view)
}
