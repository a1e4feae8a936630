//! Users and their tokens (PROTOCOL.md "Auth"): register and login over REST, argon2id
//! password hashes, HS256 tokens with an expiry signed by `auth.secret`.
//!
//! A token is checked at the gateway, before anything reaches an entity, and names the user
//! by id; every node with the same secret accepts it. Hashing runs on the blocking pool so a
//! burst of logins never stalls connection tasks.

use crate::error::ApiError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use bourse_config::AuthSettings;
use bourse_storage::{MarketStore, StoreError, Write};
use jsonwebtoken::{Algorithm as JwtAlgorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

/// What a token says.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id.
    sub: String,
    /// The username, for logs and clients.
    name: String,
    iat: u64,
    exp: u64,
}

/// A register or login body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    username: String,
    password: String,
}

/// Token issuing and checking, and password hashing, with the node's settings.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_s: u64,
    params: Params,
    /// A hash to verify against when the user does not exist, so a login takes as long
    /// whether or not the username is registered.
    decoy: String,
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn internal(context: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "{context}");
    ApiError::internal("internal error")
}

fn hash_with(params: &Params, password: &str) -> Result<String, String> {
    // A salt must be unique, not secret: 16 bytes from a randomly seeded generator.
    let mut bytes = [0u8; 16];
    let mut rng = fastrand::Rng::new();
    bytes.iter_mut().for_each(|b| *b = rng.u8(..));
    let salt = SaltString::encode_b64(&bytes).map_err(|e| e.to_string())?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

impl Auth {
    /// Keys and hashing parameters from settings (already validated).
    pub fn new(settings: &AuthSettings) -> Result<Auth, String> {
        let params = Params::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            1,
            None,
        )
        .map_err(|e| format!("auth.argon2_*: {e}"))?;
        let mut validation = Validation::new(JwtAlgorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let decoy = hash_with(&params, "decoy password for unknown users")?;
        Ok(Auth {
            encoding: EncodingKey::from_secret(settings.secret.as_bytes()),
            decoding: DecodingKey::from_secret(settings.secret.as_bytes()),
            validation,
            ttl_s: settings.token_ttl_s,
            params,
            decoy,
        })
    }

    /// A token for `user_id`.
    pub fn issue(&self, user_id: u64, username: &str) -> Result<String, ApiError> {
        let now = now_s();
        let claims = Claims {
            sub: user_id.to_string(),
            name: username.to_string(),
            iat: now,
            exp: now + self.ttl_s,
        };
        jsonwebtoken::encode(&Header::new(JwtAlgorithm::HS256), &claims, &self.encoding)
            .map_err(|e| internal("signing a token failed", e))
    }

    /// The user id a token names; `unauthorized` if it is malformed, forged or expired.
    pub fn verify(&self, token: &str) -> Result<u64, ApiError> {
        self.identity(token).map(|(id, _)| id)
    }

    /// The user id and username a token names.
    pub fn identity(&self, token: &str) -> Result<(u64, String), ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                let why = match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired",
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => "token signature invalid",
                    _ => "token invalid",
                };
                ApiError::unauthorized(why)
            })?;
        let id = data
            .claims
            .sub
            .parse()
            .map_err(|_| ApiError::unauthorized("token invalid"))?;
        Ok((id, data.claims.name))
    }

    /// The user of an `Authorization: Bearer <token>` header, with the username.
    pub fn identity_of_header(&self, header: Option<&str>) -> Result<(u64, String), ApiError> {
        let header = header.ok_or_else(|| {
            ApiError::unauthorized("missing 'Authorization: Bearer <token>' header")
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))?;
        self.identity(token.trim())
    }

    /// The user of an `Authorization: Bearer <token>` header.
    pub fn user_of_header(&self, header: Option<&str>) -> Result<u64, ApiError> {
        self.identity_of_header(header).map(|(id, _)| id)
    }

    async fn hash(&self, password: String) -> Result<String, ApiError> {
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_with(&params, &password))
            .await
            .map_err(|e| internal("hashing task failed", e))?
            .map_err(|e| internal("hashing a password failed", e))
    }

    async fn check(&self, password: String, phc: String) -> bool {
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc).is_ok_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false)
    }
}

fn parse(body: &[u8]) -> Result<Credentials, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn check_username(u: &str) -> Result<(), ApiError> {
    let ok = (3..=32).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "username must be 3..32 characters of a-z, 0-9 and _",
        ))
    }
}

fn check_password(p: &str) -> Result<(), ApiError> {
    if (8..=128).contains(&p.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::bad_request("password must be 8..128 characters"))
    }
}

/// `POST /api/v1/auth/register` → `201 {"user_id","token"}`; `409 conflict` if taken.
pub async fn register(
    auth: &Arc<Auth>,
    store: &Arc<dyn MarketStore>,
    body: &[u8],
) -> Result<Value, ApiError> {
    let c = parse(body)?;
    check_username(&c.username)?;
    check_password(&c.password)?;
    if store
        .user_by_name(&c.username)
        .await
        .map_err(|e| internal("reading users failed", e))?
        .is_some()
    {
        return Err(ApiError::conflict(format!(
            "username '{}' is taken",
            c.username
        )));
    }
    let password_hash = auth.hash(c.password).await?;
    let created = store
        .submit(Write::CreateUser {
            username: c.username.clone(),
            password_hash,
            created_at: (now_s() * 1000) as i64,
        })
        .value()
        .await;
    let user_id = match created {
        Ok(id) => id,
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(format!(
                "username '{}' is taken",
                c.username
            )));
        }
        Err(e) => return Err(internal("storing a user failed", e)),
    };
    tracing::info!(user_id, username = %c.username, "user registered");
    let token = auth.issue(user_id, &c.username)?;
    Ok(json!({"user_id": user_id.to_string(), "token": token}))
}

/// `POST /api/v1/auth/login` → `200 {"user_id","token"}`; `401` for a wrong username or
/// password (the same answer for both).
pub async fn login(
    auth: &Arc<Auth>,
    store: &Arc<dyn MarketStore>,
    body: &[u8],
) -> Result<Value, ApiError> {
    let c = parse(body)?;
    let user = store
        .user_by_name(&c.username)
        .await
        .map_err(|e| internal("reading users failed", e))?;
    let (phc, found) = match &user {
        Some(u) => (u.password_hash.clone(), true),
        None => (auth.decoy.clone(), false),
    };
    let ok = auth.check(c.password, phc).await;
    match user {
        Some(u) if ok && found => {
            let token = auth.issue(u.user_id, &u.username)?;
            Ok(json!({"user_id": u.user_id.to_string(), "token": token}))
        }
        _ => Err(ApiError::unauthorized("wrong username or password")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(secret: &str, ttl: u64) -> AuthSettings {
        AuthSettings {
            secret: secret.into(),
            token_ttl_s: ttl,
            argon2_memory_kib: 64,
            argon2_iterations: 1,
        }
    }

    #[test]
    fn tokens_round_trip_and_refuse_forgeries() {
        let a = Auth::new(&settings("a-secret-of-sixteen+", 60)).unwrap();
        let b = Auth::new(&settings("another-secret-sixteen", 60)).unwrap();
        let t = a.issue(42, "alice").unwrap();
        assert_eq!(a.verify(&t), Ok(42));
        assert_eq!(a.user_of_header(Some(&format!("Bearer {t}"))), Ok(42));
        for bad in [
            b.verify(&t),
            a.verify("nope"),
            a.user_of_header(Some(&t)),
            a.user_of_header(None),
        ] {
            assert_eq!(bad.unwrap_err().code, "unauthorized");
        }
        // An expired token (signed with the right key) is refused.
        let claims = Claims {
            sub: "42".into(),
            name: "alice".into(),
            iat: 1,
            exp: now_s() - 5,
        };
        let old =
            jsonwebtoken::encode(&Header::new(JwtAlgorithm::HS256), &claims, &a.encoding).unwrap();
        let err = a.verify(&old).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            ("unauthorized", "token expired")
        );
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let a = Auth::new(&settings("a-secret-of-sixteen+", 60)).unwrap();
        let h = a.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(a.check("correct horse".into(), h.clone()).await);
        assert!(!a.check("wrong horse".into(), h).await);
    }

    #[test]
    fn credentials_are_checked() {
        assert!(check_username("bob_1").is_ok());
        for bad in ["ab", "Bob", "bo b", &"x".repeat(33), "bob!"] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
        assert!(check_password("12345678").is_ok());
        assert!(check_password("1234567").is_err());
        assert!(check_password(&"x".repeat(129)).is_err());
    }
}
