//! Users and their tokens (docs/PROTOCOL.md "Auth"): register and login over REST, argon2id
//! password hashes, HS256 tokens with an expiry signed by `auth.secret`.
//!
//! A token is checked at the gateway, before anything reaches an entity, and names the user
//! by id; every node with the same secret accepts it.
//!
//! A hostile client must not turn logins into memory or CPU exhaustion, nor guess
//! passwords quickly: hashing runs on the blocking pool, at most `auth.hash_workers` at once,
//! each in a memory buffer allocated once and reused (a burst queues, then answers `503`
//! with `Retry-After`, and costs no memory); attempts are throttled per username and per
//! client IP, registrations per IP (`429` with `Retry-After`). The throttles are per node, or
//! shared through Redis where `[redis] url` is set (`shared_limits.rs`).

use crate::error::ApiError;
use crate::shared_limits::{Redis, SharedLimiter};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use bourse_cluster::metrics::registered;
use bourse_config::AuthSettings;
use bourse_storage::{MarketStore, StoreError, Write};
use jsonwebtoken::{Algorithm as JwtAlgorithm, DecodingKey, EncodingKey, Header, Validation};
use prometheus::{IntCounterVec, Opts};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Login and registration attempts refused by a throttle, by scope.
pub static THROTTLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "bourse_auth_throttled_total",
            "Requests refused by a throttle: user and ip (logins), register (per ip), queue (hashing saturated), chat_user (chat messages over all rooms)",
        ),
        &["scope"],
    ))
});

/// Keys (usernames, addresses, users) one throttle remembers at most in memory.
pub const THROTTLE_KEYS: usize = 100_000;

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

/// Token issuing and checking, password hashing and login throttling, with the node's
/// settings.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_s: u64,
    hasher: Hasher,
    /// A hash to verify against when the user does not exist, so a login takes as long
    /// whether or not the username is registered.
    decoy: String,
    login_per_user: SharedLimiter,
    login_per_ip: SharedLimiter,
    register_per_ip: SharedLimiter,
}

/// Argon2 with bounded concurrency and reused memory.
struct Hasher {
    params: Params,
    slots: Arc<Semaphore>,
    /// One buffer per computation running or done: at most `slots` of them ever exist.
    buffers: Arc<Mutex<Vec<Vec<Block>>>>,
    queue: Duration,
}

impl Hasher {
    /// Runs `job` with a memory buffer on the blocking pool once a slot is free; a wait
    /// longer than the queue limit is `503 unavailable`.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut [Block]) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = tokio::time::timeout(self.queue, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                THROTTLED.with_label_values(&["queue"]).inc();
                ApiError::unavailable("too many logins at once; retry shortly").retry_after(1)
            })?
            .map_err(|e| internal("hashing slots closed", e))?;
        let buffers = self.buffers.clone();
        let blocks = self.params.block_count();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let taken = buffers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut buf = taken.unwrap_or_else(|| vec![Block::default(); blocks]);
            let out = job(&mut buf);
            buffers.lock().unwrap_or_else(|p| p.into_inner()).push(buf);
            out
        })
        .await
        .map_err(|e| internal("hashing task failed", e))
    }
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

/// An argon2id PHC string (`$argon2id$v=19$m=..,t=..,p=1$salt$hash`) of `password`,
/// computed in `memory`.
fn hash_with(params: &Params, password: &str, memory: &mut [Block]) -> Result<String, String> {
    // A salt must be unique, not secret: 16 bytes from a randomly seeded generator.
    let mut bytes = [0u8; 16];
    let mut rng = fastrand::Rng::new();
    bytes.iter_mut().for_each(|b| *b = rng.u8(..));
    let salt = SaltString::encode_b64(&bytes).map_err(|e| e.to_string())?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), &bytes, &mut out, memory)
        .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc`, computed in `memory` when its cost
/// fits (a hash stored under other settings gets memory of its own).
fn verify_with(phc: &str, password: &str, memory: &mut [Block]) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(hash.algorithm),
        Params::try_from(&hash),
        hash.salt,
        hash.hash,
    ) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let done = if memory.len() >= params.block_count() {
        argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory)
    } else {
        argon.hash_password_into(password.as_bytes(), salt, &mut out)
    };
    // `Output` compares in constant time.
    done.is_ok() && Output::new(&out).is_ok_and(|o| o == expected)
}

/// Storage trouble is the server's, and passing: `503` with a retry, as on every route.
fn storage(context: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "{context}");
    ApiError::unavailable("storage unavailable; retry shortly").retry_after(1)
}

/// `429 rate_limited` telling the client how long to wait.
/// A throttle's `rate_limited` answer, counted in `bourse_auth_throttled_total{scope}`.
pub(crate) fn throttled(scope: &str, what: &str, wait: Duration) -> ApiError {
    THROTTLED.with_label_values(&[scope]).inc();
    ApiError::rate_limited(format!("too many {what}; retry later"))
        .retry_after(wait.as_secs_f64().ceil() as u64)
}

impl Auth {
    /// Keys and hashing parameters from settings (already validated).
    pub fn new(settings: &AuthSettings, redis: Option<Redis>) -> Result<Auth, String> {
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
        let mut memory = vec![Block::default(); params.block_count()];
        let decoy = hash_with(&params, "decoy password for unknown users", &mut memory)?;
        let workers = match settings.hash_workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Ok(Auth {
            encoding: EncodingKey::from_secret(settings.secret.as_bytes()),
            decoding: DecodingKey::from_secret(settings.secret.as_bytes()),
            validation,
            ttl_s: settings.token_ttl_s,
            hasher: Hasher {
                params,
                slots: Arc::new(Semaphore::new(workers)),
                buffers: Arc::new(Mutex::new(vec![memory])),
                queue: Duration::from_millis(settings.hash_queue_ms),
            },
            decoy,
            login_per_user: SharedLimiter::new(
                "login_user",
                settings.login_per_user_per_min,
                THROTTLE_KEYS,
                redis.clone(),
            ),
            login_per_ip: SharedLimiter::new(
                "login_ip",
                settings.login_per_ip_per_min,
                THROTTLE_KEYS,
                redis.clone(),
            ),
            register_per_ip: SharedLimiter::new(
                "register_ip",
                settings.register_per_ip_per_min,
                THROTTLE_KEYS,
                redis,
            ),
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
        // The scheme is case-insensitive (RFC 9110 section 11.1).
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token,
            _ => {
                return Err(ApiError::unauthorized(
                    "Authorization must be 'Bearer <token>'",
                ));
            }
        };
        self.identity(token.trim())
    }

    /// The user of an `Authorization: Bearer <token>` header.
    pub fn user_of_header(&self, header: Option<&str>) -> Result<u64, ApiError> {
        self.identity_of_header(header).map(|(id, _)| id)
    }

    async fn hash(&self, password: String) -> Result<String, ApiError> {
        let params = self.hasher.params.clone();
        self.hasher
            .run(move |memory| hash_with(&params, &password, memory))
            .await?
            .map_err(|e| internal("hashing a password failed", e))
    }

    async fn check(&self, password: String, phc: String) -> Result<bool, ApiError> {
        self.hasher
            .run(move |memory| verify_with(&phc, &password, memory))
            .await
    }

    /// Refuses a login attempt over the per-IP or per-username rate (across the cluster
    /// where Redis is configured).
    async fn throttle_login(&self, ip: Option<IpAddr>, username: &str) -> Result<(), ApiError> {
        if let Some(ip) = ip {
            self.login_per_ip
                .check(&ip.to_string())
                .await
                .map_err(|w| throttled("ip", "login attempts from this address", w))?;
        }
        self.login_per_user
            .check(username)
            .await
            .map_err(|w| throttled("user", "login attempts for this user", w))
    }

    /// Refuses a registration over the per-IP rate (across the cluster where Redis is
    /// configured).
    async fn throttle_register(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        match ip {
            Some(ip) => self
                .register_per_ip
                .check(&ip.to_string())
                .await
                .map_err(|w| throttled("register", "registrations from this address", w)),
            None => Ok(()),
        }
    }
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
    ip: Option<IpAddr>,
    body: &[u8],
) -> Result<Value, ApiError> {
    auth.throttle_register(ip).await?;
    let c: Credentials = crate::body::json(body)?;
    check_username(&c.username)?;
    check_password(&c.password)?;
    if store
        .user_by_name(&c.username)
        .await
        .map_err(|e| storage("reading users failed", e))?
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
        Err(e) => return Err(storage("storing a user failed", e)),
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
    ip: Option<IpAddr>,
    body: &[u8],
) -> Result<Value, ApiError> {
    let c: Credentials = crate::body::json(body)?;
    auth.throttle_login(ip, &c.username).await?;
    let user = store
        .user_by_name(&c.username)
        .await
        .map_err(|e| storage("reading users failed", e))?;
    let (phc, found) = match &user {
        Some(u) => (u.password_hash.clone(), true),
        None => (auth.decoy.clone(), false),
    };
    let ok = auth.check(c.password, phc).await?;
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
            ..AuthSettings::default()
        }
    }

    #[test]
    fn tokens_round_trip_and_refuse_forgeries() {
        let a = Auth::new(&settings("a-secret-of-sixteen+", 60), None).unwrap();
        let b = Auth::new(&settings("another-secret-sixteen", 60), None).unwrap();
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
        let a = Auth::new(&settings("a-secret-of-sixteen+", 60), None).unwrap();
        let h = a.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        assert!(a.check("correct horse".into(), h.clone()).await.unwrap());
        assert!(!a.check("wrong horse".into(), h).await.unwrap());
        // A hash made by the argon2 crate's own hasher (as stored by earlier versions) and
        // one under a larger memory cost than the node's both verify.
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        for m in [64, 256] {
            let params = Params::new(m, 1, 1, None).unwrap();
            let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(b"correct horse", &salt)
                .unwrap()
                .to_string();
            assert!(
                a.check("correct horse".into(), theirs.clone())
                    .await
                    .unwrap()
            );
            assert!(!a.check("wrong horse".into(), theirs).await.unwrap());
        }
        assert!(
            !a.check("x".into(), "not a phc string".into())
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_burst_beyond_the_hashing_slots_waits_then_is_refused() {
        let a = Arc::new(
            Auth::new(
                &AuthSettings {
                    hash_workers: 1,
                    hash_queue_ms: 50,
                    argon2_memory_kib: 4096,
                    argon2_iterations: 8,
                    ..settings("a-secret-of-sixteen+", 60)
                },
                None,
            )
            .unwrap(),
        );
        let jobs: Vec<_> = (0..8)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move { a.hash("correct horse".into()).await })
            })
            .collect();
        let mut refused = 0;
        for j in jobs {
            if let Err(e) = j.await.unwrap() {
                assert_eq!((e.code, e.retry_after), ("unavailable", Some(1)));
                refused += 1;
            }
        }
        assert!(
            refused > 0,
            "one slot and a 50 ms queue cannot take 8 slow hashes"
        );
        assert!(
            a.hasher.buffers.lock().unwrap().len() <= 1,
            "one buffer per slot"
        );
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let a = Auth::new(&settings("a-secret-of-sixteen+", 60), None).unwrap();
        let t = a.issue(7, "bob").unwrap();
        for scheme in ["Bearer", "bearer", "BEARER"] {
            assert_eq!(a.user_of_header(Some(&format!("{scheme} {t}"))), Ok(7));
        }
        assert!(a.user_of_header(Some(&format!("Basic {t}"))).is_err());
    }

    #[tokio::test]
    async fn logins_are_throttled_per_user_and_per_ip() {
        let a = Auth::new(
            &AuthSettings {
                login_per_user_per_min: 3,
                login_per_ip_per_min: 5,
                ..settings("a-secret-of-sixteen+", 60)
            },
            None,
        )
        .unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(a.throttle_login(Some(ip), "alice").await.is_ok());
        }
        let e = a.throttle_login(Some(ip), "alice").await.unwrap_err();
        assert_eq!(e.code, "rate_limited");
        assert!(
            e.retry_after.is_some_and(|s| (1..=20).contains(&s)),
            "{e:?}"
        );
        // The fifth attempt from the address still passes for another user; the sixth not.
        assert!(a.throttle_login(Some(ip), "bob").await.is_ok());
        assert!(a.throttle_login(Some(ip), "carol").await.is_err());
        // Another address is not held back by this one.
        assert!(
            a.throttle_login(Some("192.0.2.2".parse().unwrap()), "dave")
                .await
                .is_ok()
        );
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
