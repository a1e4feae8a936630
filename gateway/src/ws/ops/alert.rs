//! `alert.create {symbol, condition, value, repeat?, cooldown_s?}`, `alert.delete
//! {alert_id}`, `alert.list {}` (logged in). The REST bodies and rules.

use super::Outcome;
use crate::error::ApiError;
use crate::rest::alerts::{self, CreateBody};
use crate::ws::Connection;
use serde::Deserialize;

/// `alert.delete` fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delete {
    alert_id: String,
}

/// `alert.list` takes no fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {}

/// Creates a rule.
pub async fn create(conn: &mut Connection, req: CreateBody) -> Result<Outcome, ApiError> {
    let user = conn.user()?;
    Ok(Outcome::result(
        alerts::create(&conn.state, user, req).await?,
    ))
}

/// Deletes one of the user's rules.
pub async fn delete(conn: &mut Connection, req: Delete) -> Result<Outcome, ApiError> {
    let user = conn.user()?;
    Ok(Outcome::result(
        alerts::delete(&conn.state, user, &req.alert_id).await?,
    ))
}

/// Lists the user's rules.
pub async fn list(conn: &mut Connection, _req: List) -> Result<Outcome, ApiError> {
    let user = conn.user()?;
    Ok(Outcome::result(alerts::list(&conn.state, user).await?))
}
