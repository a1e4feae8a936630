//! `{"id","op":"ping"}` → `{"pong": <server time ms>}`: a liveness and clock check.

use super::Outcome;
use crate::error::ApiError;
use serde::Deserialize;
use serde_json::json;

/// No fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ping {}

/// Answers with the server's time.
pub fn apply(_: Ping) -> Result<Outcome, ApiError> {
    Ok(Outcome::result(
        json!({"pong": bourse_actors::clock::now_ms()}),
    ))
}
