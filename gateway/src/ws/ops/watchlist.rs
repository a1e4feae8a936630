//! `watchlist.get {}` and `watchlist.set {symbols}` (logged in). The REST bodies and rules.

use super::Outcome;
use crate::error::ApiError;
use crate::rest::watchlist::{self, PutBody};
use crate::ws::Connection;
use serde::Deserialize;

/// `watchlist.get` takes no fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Get {}

/// The user's watchlist.
pub async fn get(conn: &mut Connection, _req: Get) -> Result<Outcome, ApiError> {
    let user = conn.user()?;
    Ok(Outcome::result(watchlist::get(&conn.state, user).await?))
}

/// Replaces the user's watchlist.
pub async fn set(conn: &mut Connection, req: PutBody) -> Result<Outcome, ApiError> {
    let user = conn.user()?;
    Ok(Outcome::result(
        watchlist::put(&conn.state, user, req).await?,
    ))
}
