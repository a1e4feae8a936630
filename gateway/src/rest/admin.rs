//! Admin endpoints (PROTOCOL.md "Admin"), behind the admin bearer token. This issue brings
//! the chaos kill that tests use to crash an entity; the inspection API follows with the
//! Operations issue.

use crate::error::ApiError;
use crate::limits::constant_time_eq;
use crate::state::GatewayState;
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
