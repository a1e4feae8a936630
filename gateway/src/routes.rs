//! The route table: every HTTP method and path the gateway serves, in one list.
//!
//! The server checks each request against it before any handler runs: an unknown path is
//! `404 not_found`, a known path with another method `405 method_not_allowed` with `Allow`,
//! and `HEAD` is served wherever `GET` is. The OpenAPI document (`docs/openapi.yaml`) lists
//! the same routes, and a test holds the two together.

use warp::http::Method;

/// `(method, path)`; a `{name}` segment matches any one non-empty segment.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/ui/{file}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/ws"),
    ("GET", "/sse"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/symbols"),
    ("GET", "/api/v1/ticker/{symbol}"),
    ("GET", "/api/v1/trades/{symbol}"),
    ("GET", "/api/v1/candles/{symbol}"),
    ("GET", "/api/v1/book/{symbol}"),
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("GET", "/api/v1/account"),
    ("GET", "/api/v1/portfolio"),
    ("GET", "/api/v1/portfolio/history"),
    ("GET", "/api/v1/rankings"),
    ("POST", "/api/v1/orders"),
    ("GET", "/api/v1/orders"),
    ("GET", "/api/v1/orders/{order_id}"),
    ("DELETE", "/api/v1/orders/{order_id}"),
    ("GET", "/api/v1/chat/{room}/messages"),
    ("POST", "/api/v1/chat/{room}/messages"),
    ("POST", "/api/v1/alerts"),
    ("GET", "/api/v1/alerts"),
    ("GET", "/api/v1/alerts/history"),
    ("DELETE", "/api/v1/alerts/{alert_id}"),
    ("GET", "/api/v1/notifications"),
    ("GET", "/api/v1/watchlist"),
    ("PUT", "/api/v1/watchlist"),
    ("GET", "/admin/cluster"),
    ("POST", "/admin/cluster/leave"),
    ("POST", "/admin/cluster/down"),
    ("GET", "/admin/entities"),
    ("GET", "/admin/entities/{kind}/{key}"),
    ("POST", "/admin/chaos/kill"),
    ("GET", "/admin/connections"),
    ("POST", "/admin/chaos/kill-connection"),
    ("POST", "/admin/bench/routing"),
];

/// What the table says of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Served: hand it to the handlers.
    Found,
    /// The path exists with these methods only (for `Allow`).
    WrongMethod(Vec<&'static str>),
    /// No such path.
    Missing,
}

fn matches(template: &str, path: &str) -> bool {
    let mut want = template.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// Literal segments of a template: where several match a path, the most literal one
/// names it (`/api/v1/alerts/history` is not the alert `history`), as in OpenAPI.
fn literals(template: &str) -> usize {
    template.split('/').filter(|s| !s.starts_with('{')).count()
}

/// The template among `templates` that names `path` (its query ignored): the most literal
/// of those that match.
pub fn template_of<'a>(
    templates: impl IntoIterator<Item = &'a str>,
    path: &str,
) -> Option<&'a str> {
    let path = path.split('?').next().unwrap_or(path);
    templates
        .into_iter()
        .filter(|t| matches(t, path))
        .max_by_key(|t| literals(t))
}

/// Looks a request up; `HEAD` counts as `GET`.
pub fn lookup(method: &Method, path: &str) -> Lookup {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let Some(template) = template_of(ROUTES.iter().map(|(_, t)| *t), path) else {
        return Lookup::Missing;
    };
    let mut allowed = Vec::new();
    for (m, t) in ROUTES {
        if *t != template {
            continue;
        }
        if *m == method {
            return Lookup::Found;
        }
        allowed.push(*m);
        if *m == "GET" {
            allowed.push("HEAD");
        }
    }
    Lookup::WrongMethod(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_methods_and_templates() {
        assert_eq!(lookup(&Method::GET, "/api/v1/symbols"), Lookup::Found);
        assert_eq!(lookup(&Method::HEAD, "/api/v1/symbols"), Lookup::Found);
        assert_eq!(
            lookup(&Method::GET, "/api/v1/ticker/KRW-BTC"),
            Lookup::Found
        );
        assert_eq!(lookup(&Method::GET, "/api/v1/ticker/"), Lookup::Missing);
        assert_eq!(lookup(&Method::GET, "/api/v1/ticker/a/b"), Lookup::Missing);
        assert_eq!(lookup(&Method::GET, "/nope"), Lookup::Missing);
        assert_eq!(
            lookup(&Method::PUT, "/api/v1/orders"),
            Lookup::WrongMethod(vec!["POST", "GET", "HEAD"])
        );
        assert_eq!(
            lookup(&Method::POST, "/api/v1/orders/42"),
            Lookup::WrongMethod(vec!["GET", "HEAD", "DELETE"])
        );
        // A literal segment is not taken for a template one of another route.
        assert_eq!(
            lookup(&Method::GET, "/api/v1/alerts/history"),
            Lookup::Found
        );
        assert_eq!(
            lookup(&Method::GET, "/api/v1/alerts/42"),
            Lookup::WrongMethod(vec!["DELETE"])
        );
    }
}
