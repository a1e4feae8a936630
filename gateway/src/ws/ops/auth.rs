//! `{"id","op":"auth","token"}` → `{"user_id"}`: logs the connection in, for orders and the
//! `orders` channel. A bad token is `unauthorized` and changes nothing; a connection stays
//! one user's (logging in as another is refused: reconnect instead).

use super::Outcome;
use crate::error::ApiError;
use crate::ws::Connection;
use serde::Deserialize;
use serde_json::json;

/// The op's fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    token: String,
}

/// Checks the token and remembers the user.
pub fn apply(conn: &mut Connection, req: Auth) -> Result<Outcome, ApiError> {
    let (user, username) = conn.state.auth.identity(&req.token)?;
    match conn.subs.user() {
        Some(current) if current != user => {
            return Err(ApiError::bad_request(
                "this connection is logged in as another user; open a new one",
            ));
        }
        _ => conn.subs.set_user(user, username),
    }
    Ok(Outcome::result(json!({"user_id": user.to_string()})))
}
