//! The browser UI (`web/`): its files are compiled into the binary, so every node serves the
//! same page at `/` and its modules under `/ui/`, with no file system access at run time.
//! The chart library comes from npm through the build script (`gateway/build.rs`).

use warp::http::{HeaderValue, header};
use warp::reply::Response;

/// `(name under /ui/, content type, bytes)`.
const FILES: &[(&str, &str, &[u8])] = &[
    ("app.js", JS, include_bytes!("../../web/app.js")),
    ("bourse.js", JS, include_bytes!("../../web/bourse.js")),
    ("decimal.js", JS, include_bytes!("../../web/decimal.js")),
    ("trading.js", JS, include_bytes!("../../web/trading.js")),
    ("chat.js", JS, include_bytes!("../../web/chat.js")),
    ("alerts.js", JS, include_bytes!("../../web/alerts.js")),
    ("portfolio.js", JS, include_bytes!("../../web/portfolio.js")),
    ("cluster.js", JS, include_bytes!("../../web/cluster.js")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
    (
        "chart.mjs",
        JS,
        include_bytes!(concat!(env!("OUT_DIR"), "/chart.mjs")),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &[u8] = include_bytes!("../../web/index.html");

/// The page may load only its own scripts, and talk only to its own origin. Inline styles
/// are allowed: the chart library sets some (scripts stay strictly the page's own).
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn file(body: &'static [u8], content_type: &'static str) -> Response {
    let mut r = Response::new(body.into());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Files change only with the binary: a browser checks again each time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /`: the page.
pub fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

/// `GET /ui/{name}`: one of the page's files; `None` if there is no such file.
pub fn asset(name: &str) -> Option<Response> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, content_type, body)| file(body, content_type))
}

/// The answer for a name that is not one of the files.
pub fn missing(name: &str) -> crate::error::ApiError {
    crate::error::ApiError::not_found(format!("no UI file '{name}'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::StatusCode;

    #[test]
    fn every_file_is_served_with_its_type_and_the_policy() {
        for (name, content_type, _) in FILES {
            let r = asset(name).expect(name);
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::CONTENT_TYPE], *content_type);
            assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        }
        assert!(asset("../Cargo.toml").is_none() && asset("").is_none());
        assert_eq!(
            index().headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }
}
