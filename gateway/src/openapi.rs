//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of every REST and admin route.
//! Its source is `docs/openapi.yaml`, compiled into the binary and parsed once, so what a
//! node serves is exactly the document in the repository it was built from.

use crate::error::ApiError;
use serde_json::Value;
use std::sync::LazyLock;

/// The document as written.
pub const SOURCE: &str = include_str!("../../docs/openapi.yaml");

static DOCUMENT: LazyLock<Result<Value, ApiError>> = LazyLock::new(|| {
    serde_norway::from_str(SOURCE).map_err(|e| {
        tracing::error!(error = %e, "docs/openapi.yaml does not parse");
        ApiError::internal("the OpenAPI document is unavailable")
    })
});

/// The document as JSON.
pub fn document() -> Result<&'static Value, &'static ApiError> {
    DOCUMENT.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::ROUTES;

    /// The route table and the document list the same operations.
    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = document().expect("docs/openapi.yaml parses");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in ["get", "post", "delete", "put", "patch"] {
                if item.get(method).is_some() {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut served: Vec<_> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }
}
