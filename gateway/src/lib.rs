//! The gateway: warp serving WebSocket (`/ws`), SSE (`/sse`), REST (`/api/v1/...`), admin
//! (`/admin/...`) and health endpoints, per docs/PROTOCOL.md. Every route validates its input
//! and answers errors as `{"error":{"code","message"}}` (or an error response on `/ws`); no
//! input reaches an entity unchecked.

pub mod admission;
pub mod auth;
pub mod body;
pub mod direct;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod rest;
pub mod routes;
pub mod server;
pub mod shared_connections;
pub mod shared_limits;
pub mod sse;
pub mod state;
pub mod subscriptions;
pub mod ticker_cache;
pub mod web;
pub mod ws;

pub use state::GatewayState;

use error::{ApiError, reply};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// Largest body of the auth, order, alert and admin routes: their legal bodies are a few
/// hundred bytes, even with every character `\u`-escaped.
const SMALL_BODY_LIMIT: u64 = 8 * 1024;
/// Largest chat message body: 2,000 characters, each possibly escaped as a 12-byte
/// surrogate pair (`\ud83d\ude00`), and the JSON around them.
const CHAT_BODY_LIMIT: u64 = 32 * 1024;
/// Largest watchlist body: 100 of the longest symbols (25 characters), every character
/// `\u`-escaped, and the JSON around them.
const WATCHLIST_BODY_LIMIT: u64 = 16 * 1024;

/// A body of at most `limit` bytes.
fn limited_body(limit: u64) -> BoxedFilter<(bytes::Bytes,)> {
    warp::body::content_length_limit(limit)
        .and(warp::body::bytes())
        .boxed()
}

/// The client's IP address (for login throttling).
fn client_ip() -> BoxedFilter<(Option<std::net::IpAddr>,)> {
    warp::ext::optional::<server::ClientAddr>()
        .map(|a: Option<server::ClientAddr>| a.map(|a| a.0.ip()))
        .boxed()
}

fn respond(result: Result<Value, ApiError>) -> Response {
    respond_with(StatusCode::OK, result)
}

fn respond_with(status: StatusCode, result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(v) => warp::reply::with_status(warp::reply::json(&v), status).into_response(),
        Err(e) => reply(&e).into_response(),
    }
}

/// Runs an authenticated request: the bearer token first, then `run` with the user id.
async fn with_user<Fut>(
    s: Arc<GatewayState>,
    auth: Option<String>,
    run: impl FnOnce(Arc<GatewayState>, u64) -> Fut,
) -> Response
where
    Fut: std::future::Future<Output = Response>,
{
    match s.auth.user_of_header(auth.as_deref()) {
        Ok(user) => run(s, user).await,
        Err(e) => reply(&e).into_response(),
    }
}

/// The trading and auth routes (docs/PROTOCOL.md "Auth", "Trading", book snapshot).
fn trading_routes(st: BoxedFilter<(Arc<GatewayState>,)>) -> BoxedFilter<(Response,)> {
    let query = warp::query::<Query>()
        .or(warp::any().map(Query::new))
        .unify();
    let bearer = warp::header::optional::<String>("authorization");
    let small = limited_body(SMALL_BODY_LIMIT);
    let register = warp::path!("api" / "v1" / "auth" / "register")
        .and(warp::post())
        .and(st.clone())
        .and(client_ip())
        .and(small.clone())
        .then(|s: Arc<GatewayState>, ip, b: bytes::Bytes| async move {
            respond_with(
                StatusCode::CREATED,
                auth::register(&s.auth, &s.store, ip, &b).await,
            )
        });
    let login = warp::path!("api" / "v1" / "auth" / "login")
        .and(warp::post())
        .and(st.clone())
        .and(client_ip())
        .and(small.clone())
        .then(|s: Arc<GatewayState>, ip, b: bytes::Bytes| async move {
            respond(auth::login(&s.auth, &s.store, ip, &b).await)
        });
    let place = warp::path!("api" / "v1" / "orders")
        .and(warp::post())
        .and(st.clone())
        .and(bearer)
        .and(small)
        .then(|s: Arc<GatewayState>, a, b: bytes::Bytes| async move {
            with_user(s, a, |s, user| async move {
                let result = match body::json(&b) {
                    Ok(body) => rest::trading::place(&s, user, body).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok((true, order)) => respond_with(StatusCode::CREATED, Ok(order)),
                    Ok((false, order)) => respond(Ok(order)),
                    Err(e) => reply(&e).into_response(),
                }
            })
            .await
        });
    let list = warp::path!("api" / "v1" / "orders")
        .and(warp::get())
        .and(st.clone())
        .and(bearer)
        .and(query)
        .then(|s: Arc<GatewayState>, a, q: Query| async move {
            with_user(s, a, |s, user| async move {
                respond(rest::trading::list(&s, user, &q).await)
            })
            .await
        });
    let get = warp::path!("api" / "v1" / "orders" / String)
        .and(warp::get())
        .and(st.clone())
        .and(bearer)
        .then(|id: String, s: Arc<GatewayState>, a| async move {
            with_user(s, a, |s, user| async move {
                respond(rest::trading::get(&s, user, &id).await)
            })
            .await
        });
    let cancel = warp::path!("api" / "v1" / "orders" / String)
        .and(warp::delete())
        .and(st.clone())
        .and(bearer)
        .then(|id: String, s: Arc<GatewayState>, a| async move {
            with_user(s, a, |s, user| async move {
                respond(rest::trading::cancel(&s, user, &id).await)
            })
            .await
        });
    let account = warp::path!("api" / "v1" / "account")
        .and(warp::get())
        .and(st.clone())
        .and(bearer)
        .then(|s: Arc<GatewayState>, a| async move {
            with_user(s, a, |s, user| async move {
                respond(rest::trading::account(&s, user).await)
            })
            .await
        });
    let portfolio = warp::path!("api" / "v1" / "portfolio")
        .and(warp::get())
        .and(st.clone())
        .and(bearer)
        .then(|s: Arc<GatewayState>, a| async move {
            with_user(s, a, |s, user| async move {
                respond(rest::trading::portfolio(&s, user).await)
            })
            .await
        });
    let rankings = warp::path!("api" / "v1" / "rankings")
        .and(warp::get())
        .and(st.clone())
        .and(bearer)
        .and(warp::query::<HashMap<String, String>>())
        .then(|s: Arc<GatewayState>, a: Option<String>, q| async move {
            // Public; a token (checked when given) adds the caller's own place.
            let user = match a {
                Some(header) => match s.auth.user_of_header(Some(&header)) {
                    Ok(user) => Some(user),
                    Err(e) => return reply(&e).into_response(),
                },
                None => None,
            };
            respond(rest::rankings::rankings(&s, user, q).await)
        });
    let portfolio_history = warp::path!("api" / "v1" / "portfolio" / "history")
        .and(warp::get())
        .and(st.clone())
        .and(bearer)
        .and(warp::query::<HashMap<String, String>>())
        .then(|s: Arc<GatewayState>, a, q| async move {
            with_user(s, a, |s, user| async move {
                respond(rest::trading::portfolio_history(&s, user, q).await)
            })
            .await
        });
    let chat_history = warp::path!("api" / "v1" / "chat" / String / "messages")
        .and(warp::get())
        .and(st.clone())
        .and(query)
        .then(|room: String, s: Arc<GatewayState>, q: Query| async move {
            respond(rest::chat::history(&s, &room, &q).await)
        });
    let chat_post = warp::path!("api" / "v1" / "chat" / String / "messages")
        .and(warp::post())
        .and(st.clone())
        .and(bearer)
        .and(limited_body(CHAT_BODY_LIMIT))
        .then(
            |room: String, s: Arc<GatewayState>, a: Option<String>, b: bytes::Bytes| async move {
                let user = match s.auth.identity_of_header(a.as_deref()) {
                    Ok(u) => u,
                    Err(e) => return reply(&e).into_response(),
                };
                let result = match body::json(&b) {
                    Ok(body) => rest::chat::post(&s, user, &room, body).await,
                    Err(e) => Err(e),
                };
                respond_with(StatusCode::CREATED, result)
            },
        );
    let book = warp::path!("api" / "v1" / "book" / String)
        .and(warp::get())
        .and(st)
        .and(query)
        .then(|sym, s, q| async move { respond(rest::trading::book(s, sym, q).await) });
    register
        .or(login)
        .unify()
        .or(place)
        .unify()
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(cancel)
        .unify()
        .or(account)
        .unify()
        .or(portfolio)
        .unify()
        .or(portfolio_history)
        .unify()
        .or(rankings)
        .unify()
        .or(book)
        .unify()
        .or(chat_history)
        .unify()
        .or(chat_post)
        .unify()
        .boxed()
}

/// The alert and inbox routes (docs/PROTOCOL.md "Alerts"), all authenticated.
fn alert_routes(st: BoxedFilter<(Arc<GatewayState>,)>) -> BoxedFilter<(Response,)> {
    let query = warp::query::<Query>()
        .or(warp::any().map(Query::new))
        .unify();
    let bearer = warp::header::optional::<String>("authorization");
    let create = warp::path!("api" / "v1" / "alerts")
        .and(warp::post())
        .and(st.clone())
        .and(bearer)
        .and(limited_body(SMALL_BODY_LIMIT))
        .then(|s: Arc<GatewayState>, a, b: bytes::Bytes| async move {
            with_user(s, a, |s, user| async move {
                let result = match body::json(&b) {
                    Ok(body) => rest::alerts::create(&s, user, body).await,
                    Err(e) => Err(e),
                };
                respond_with(StatusCode::CREATED, result)
            })
            .await
        });
    let list = warp::path!("api" / "v1" / "alerts")
        .and(warp::get())
        .and(st.clone())
        .and(bearer)
        .then(|s: Arc<GatewayState>, a| async move {
            with_user(s, a, |s, user| async move {
                respond(rest::alerts::list(&s, user).await)
            })
            .await
        });
    let history = warp::path!("api" / "v1" / "alerts" / "history")
        .and(warp::get())
        .and(st.clone())
        .and(bearer)
        .and(query)
        .then(|s: Arc<GatewayState>, a, q: Query| async move {
            with_user(s, a, |s, user| async move {
                respond(rest::alerts::history(&s, user, &q).await)
            })
            .await
        });
    let delete = warp::path!("api" / "v1" / "alerts" / String)
        .and(warp::delete())
        .and(st.clone())
        .and(bearer)
        .then(|id: String, s: Arc<GatewayState>, a| async move {
            with_user(s, a, |s, user| async move {
                respond(rest::alerts::delete(&s, user, &id).await)
            })
            .await
        });
    let inbox = warp::path!("api" / "v1" / "notifications")
        .and(warp::get())
        .and(st)
        .and(bearer)
        .and(query)
        .then(|s: Arc<GatewayState>, a, q: Query| async move {
            with_user(s, a, |s, user| async move {
                respond(rest::alerts::notifications(&s, user, &q).await)
            })
            .await
        });
    create
        .or(list)
        .unify()
        .or(history)
        .unify()
        .or(delete)
        .unify()
        .or(inbox)
        .unify()
        .boxed()
}

/// A user's watchlist (docs/PROTOCOL.md "Watchlist"), authenticated.
fn watchlist_routes(st: BoxedFilter<(Arc<GatewayState>,)>) -> BoxedFilter<(Response,)> {
    let bearer = warp::header::optional::<String>("authorization");
    let watchlist = warp::path!("api" / "v1" / "watchlist")
        .and(warp::get())
        .and(st.clone())
        .and(bearer)
        .then(|s: Arc<GatewayState>, a| async move {
            with_user(s, a, |s, user| async move {
                respond(rest::watchlist::get(&s, user).await)
            })
            .await
        });
    let watchlist_put = warp::path!("api" / "v1" / "watchlist")
        .and(warp::put())
        .and(st)
        .and(bearer)
        .and(limited_body(WATCHLIST_BODY_LIMIT))
        .then(|s: Arc<GatewayState>, a, b: bytes::Bytes| async move {
            with_user(s, a, |s, user| async move {
                let result = match body::json(&b) {
                    Ok(body) => rest::watchlist::put(&s, user, body).await,
                    Err(e) => Err(e),
                };
                respond(result)
            })
            .await
        });
    watchlist.or(watchlist_put).unify().boxed()
}

type Query = HashMap<String, String>;

/// An admin POST: the token first, then a JSON body (unknown fields refused), then `run`,
/// answered with `status` when it succeeds.
async fn admin_post<T, Fut>(
    s: Arc<GatewayState>,
    auth: Option<String>,
    body: bytes::Bytes,
    status: StatusCode,
    run: impl FnOnce(Arc<GatewayState>, T) -> Fut,
) -> Response
where
    T: serde::de::DeserializeOwned,
    Fut: std::future::Future<Output = Result<Value, ApiError>>,
{
    if let Err(e) = rest::admin::authorize(&s, auth.as_deref()) {
        return reply(&e).into_response();
    }
    match body::json(&body) {
        Ok(req) => respond_with(status, run(s, req).await),
        Err(e) => reply(&e).into_response(),
    }
}

/// An admin GET: the token first, then `run`.
async fn admin_get<Fut>(
    s: Arc<GatewayState>,
    auth: Option<String>,
    run: impl FnOnce(Arc<GatewayState>) -> Fut,
) -> Response
where
    Fut: std::future::Future<Output = Result<Value, ApiError>>,
{
    match rest::admin::authorize(&s, auth.as_deref()) {
        Ok(()) => respond(run(s).await),
        Err(e) => reply(&e).into_response(),
    }
}

/// docs/PROTOCOL.md "Admin": everything behind the admin token.
fn admin_routes(st: BoxedFilter<(Arc<GatewayState>,)>) -> BoxedFilter<(Response,)> {
    let token = warp::header::optional::<String>("authorization");
    let body = limited_body(SMALL_BODY_LIMIT);
    let kill = warp::path!("admin" / "chaos" / "kill")
        .and(warp::post())
        .and(st.clone())
        .and(token)
        .and(body.clone())
        .then(|s, auth, body| admin_post(s, auth, body, StatusCode::OK, rest::admin::kill));
    let kill_connection = warp::path!("admin" / "chaos" / "kill-connection")
        .and(warp::post())
        .and(st.clone())
        .and(token)
        .and(body.clone())
        .then(|s, auth, body| {
            admin_post(s, auth, body, StatusCode::OK, rest::admin::kill_connection)
        });
    let connections = warp::path!("admin" / "connections")
        .and(warp::get())
        .and(st.clone())
        .and(token)
        .and(warp::query::<Query>())
        .then(|s, auth, q: Query| admin_get(s, auth, move |s| rest::admin::connections(s, q)));
    let leave = warp::path!("admin" / "cluster" / "leave")
        .and(warp::post())
        .and(st.clone())
        .and(token)
        .and(body.clone())
        .then(|s, auth, body| admin_post(s, auth, body, StatusCode::ACCEPTED, rest::admin::leave));
    let down = warp::path!("admin" / "cluster" / "down")
        .and(warp::post())
        .and(st.clone())
        .and(token)
        .and(body.clone())
        .then(|s, auth, body| admin_post(s, auth, body, StatusCode::OK, rest::admin::down));
    let cluster = warp::path!("admin" / "cluster")
        .and(warp::get())
        .and(st.clone())
        .and(token)
        .then(|s, auth| admin_get(s, auth, rest::admin::cluster));
    let entities = warp::path!("admin" / "entities")
        .and(warp::get())
        .and(st.clone())
        .and(token)
        .and(warp::query::<Query>())
        .then(|s, auth, q: Query| admin_get(s, auth, move |s| rest::admin::entities(s, q)));
    let entity = warp::path!("admin" / "entities" / String / String)
        .and(warp::get())
        .and(st.clone())
        .and(token)
        .then(|kind: String, key: String, s, auth| {
            admin_get(s, auth, move |s| async move {
                rest::admin::entity(&s, &kind, &key).await
            })
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(st.clone())
        .and(token)
        .then(|s: Arc<GatewayState>, auth: Option<String>| async move {
            if !s.metrics_public
                && let Err(e) = rest::admin::authorize(&s, auth.as_deref())
            {
                return reply(&e).into_response();
            }
            match metrics::render(&s).await {
                Ok(text) => warp::reply::with_header(
                    text,
                    "content-type",
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .into_response(),
                Err(e) => reply(&e).into_response(),
            }
        });
    let bench = warp::path!("admin" / "bench" / "routing")
        .and(warp::post())
        .and(st)
        .and(token)
        .and(body)
        .then(|s, auth, body| {
            admin_post(s, auth, body, StatusCode::OK, rest::admin::bench_routing)
        });
    kill.or(leave)
        .unify()
        .or(down)
        .unify()
        .or(kill_connection)
        .unify()
        .or(connections)
        .unify()
        .or(cluster)
        .unify()
        .or(entities)
        .unify()
        .or(entity)
        .unify()
        .or(bench)
        .unify()
        .or(metrics)
        .unify()
        .boxed()
}

fn routes(state: Arc<GatewayState>) -> BoxedFilter<(Response,)> {
    let document = Arc::new(openapi::served(&state.markets).map(|d| d.to_string()));
    let st = warp::any().map(move || state.clone()).boxed();
    let trading = trading_routes(st.clone());
    let alerts = alert_routes(st.clone());
    let watchlist = watchlist_routes(st.clone());
    let query = warp::query::<Query>()
        .or(warp::any().map(Query::new))
        .unify();

    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})).into_response());
    let readyz =
        warp::path!("readyz")
            .and(warp::get())
            .and(st.clone())
            .map(|s: Arc<GatewayState>| {
                if s.is_ready() {
                    let mut ready = json!({"status": "ready", "node": s.sharding.node()});
                    if let Some(feed) = &s.feed {
                        ready["feed"] = feed.view();
                    }
                    warp::reply::json(&ready).into_response()
                } else {
                    reply(&ApiError::unavailable("not ready").retry_after(1)).into_response()
                }
            });
    let openapi = warp::path!("api" / "v1" / "openapi.json")
        .and(warp::get())
        .map(move || match &*document {
            Ok(text) => warp::reply::with_header(text.clone(), "content-type", "application/json")
                .into_response(),
            Err(e) => reply(e).into_response(),
        });
    let symbols = warp::path!("api" / "v1" / "symbols")
        .and(warp::get())
        .and(st.clone())
        .and(query)
        .map(|s: Arc<GatewayState>, q: Query| respond(rest::market::symbols(&s, &q)));
    let ticker = warp::path!("api" / "v1" / "ticker" / String)
        .and(warp::get())
        .and(st.clone())
        .and(query)
        .then(|sym, s, q| async move { respond(rest::market::ticker(s, sym, q).await) });
    let trades = warp::path!("api" / "v1" / "trades" / String)
        .and(warp::get())
        .and(st.clone())
        .and(query)
        .then(|sym, s, q| async move { respond(rest::market::trades(s, sym, q).await) });
    let candles = warp::path!("api" / "v1" / "candles" / String)
        .and(warp::get())
        .and(st.clone())
        .and(query)
        .then(|sym, s, q| async move { respond(rest::market::candles(s, sym, q).await) });
    let websocket = warp::path!("ws")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<ws::upgrade::Pending>())
        .and(warp::ext::optional::<Arc<admission::Ticket>>())
        .and(st.clone())
        .and(query)
        .map(|headers, pending, ticket, s: Arc<GatewayState>, q: Query| {
            // `?token=` logs the connection in; a bad token is refused before the upgrade.
            let (accept, user) = match ws::upgrade::open(&headers, q.get("token"), &s.auth) {
                Ok(opened) => opened,
                Err(e) => return reply(&e).into_response(),
            };
            let max = s.settings.max_frame_bytes;
            ws::upgrade::accept(accept, pending, ticket, max, move |socket| {
                ws::serve(socket, s, user)
            })
        });
    let events = warp::path!("sse")
        .and(warp::get())
        .and(st.clone())
        .and(query)
        .and(warp::header::optional::<String>("last-event-id"))
        .then(|s: Arc<GatewayState>, q, last: Option<String>| async move {
            let keep_alive = sse::keep_alive(s.settings.sse_keepalive_s);
            match sse::open(s, q, last).await {
                Ok(stream) => warp::sse::reply(keep_alive.stream(stream)).into_response(),
                Err(e) => reply(&e).into_response(),
            }
        });
    let admin = admin_routes(st.clone());
    let page = warp::path::end().and(warp::get()).map(web::index);
    let ui = warp::path!("ui" / String)
        .and(warp::get())
        .map(|name: String| {
            web::asset(&name).unwrap_or_else(|| reply(&web::missing(&name)).into_response())
        });
    healthz
        .or(page)
        .unify()
        .or(ui)
        .unify()
        .or(readyz)
        .unify()
        .or(openapi)
        .unify()
        .or(trading)
        .unify()
        .or(alerts)
        .unify()
        .or(watchlist)
        .unify()
        .or(symbols)
        .unify()
        .or(ticker)
        .unify()
        .or(trades)
        .unify()
        .or(candles)
        .unify()
        .or(websocket)
        .unify()
        .or(events)
        .unify()
        .or(admin)
        .unify()
        .recover(rejection)
        .unify()
        .boxed()
}

/// What a request the routes turned down gets. The route table (routes.rs) has already
/// answered unknown paths and methods, so a rejection here is about the request's parts.
async fn rejection(r: Rejection) -> Result<Response, Infallible> {
    let e = if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::too_large("request body too large for this route")
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::bad_request("a request body needs a Content-Length header")
    } else if let Some(e) = r.find::<ApiError>() {
        e.clone()
    } else if let Some(e) = r.find::<warp::cors::CorsForbidden>() {
        ApiError::forbidden(e.to_string())
    } else {
        // A served path whose filter wanted something else of the request (a query that
        // does not parse, a WebSocket upgrade without its headers).
        ApiError::bad_request("malformed request for this route")
    };
    Ok(reply(&e).into_response())
}

/// The CORS policy of `gateway.cors_origins`, if any.
fn cors(origins: &[String]) -> Option<warp::cors::Builder> {
    if origins.is_empty() {
        return None;
    }
    let base = warp::cors()
        .allow_methods(["GET", "HEAD", "POST", "PUT", "DELETE"])
        .allow_headers(["authorization", "content-type", "last-event-id"])
        .expose_headers(["retry-after"])
        .max_age(600);
    Some(if origins.iter().any(|o| o == "*") {
        base.allow_any_origin()
    } else {
        base.allow_origins(origins.iter().map(String::as_str))
    })
}

/// Serves until the node's shutdown signal, then stops accepting and waits for open
/// connections, which close themselves (WebSocket with 1001).
pub async fn serve(state: Arc<GatewayState>, listener: tokio::net::TcpListener) {
    let mut shutdown = state.shutdown.clone();
    let clients = state.hub.clients().clone();
    let stop = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        // WebSocket and SSE connections learn through their outboxes, which wake them
        // anyway: a connection's loop waits on nothing else to hear of it.
        clients.close_all();
    };
    let timeout = std::time::Duration::from_secs(state.settings.header_read_timeout_s);
    let admission = admission::Admission::new(
        state.settings.max_connections,
        state.settings.max_connections_per_ip,
        state.shared_connections.clone(),
    );
    if let Some(shared) = &state.shared_connections {
        let counted = admission.clone();
        tokio::spawn(
            shared
                .clone()
                .keep_alive(move || counted.by_ip(), state.shutdown.clone()),
        );
    }
    let policy = cors(&state.settings.cors_origins);
    let cors_on = policy.is_some();
    // SSE and WebSocket outside hyper, unless a CORS policy must answer (hyper's path
    // applies it).
    let direct = (!cors_on).then(|| state.clone());
    let filter = match policy {
        Some(policy) => routes(state)
            .with(policy)
            .map(Reply::into_response)
            .recover(rejection)
            .unify()
            .boxed(),
        None => routes(state),
    };
    server::run(filter, listener, admission, direct, timeout, cors_on, stop).await;
}
