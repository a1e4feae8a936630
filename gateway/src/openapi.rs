//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of every REST and admin route.
//! Its source is `docs/openapi.yaml`, compiled into the binary and parsed once, so what a
//! node serves is the document in the repository it was built from, with one addition: the
//! symbol schema lists the node's configured markets, so a generated client (or a fuzzer)
//! knows which symbols exist.

use crate::error::ApiError;
use bourse_config::Markets;
use serde_json::{Value, json};
use std::sync::LazyLock;

/// The document as written.
pub const SOURCE: &str = include_str!("../../docs/openapi.yaml");

static DOCUMENT: LazyLock<Result<Value, ApiError>> = LazyLock::new(|| {
    serde_norway::from_str(SOURCE).map_err(|e| {
        tracing::error!(error = %e, "docs/openapi.yaml does not parse");
        ApiError::internal("the OpenAPI document is unavailable")
    })
});

/// The document as written, as JSON.
pub fn document() -> Result<&'static Value, &'static ApiError> {
    DOCUMENT.as_ref()
}

/// The document a node serves: `SymbolName` enumerates `markets`.
pub fn served(markets: &Markets) -> Result<Value, ApiError> {
    let mut doc = document().map_err(Clone::clone)?.clone();
    let symbols: Vec<&str> = markets.iter().map(|m| m.symbol.as_str()).collect();
    match doc.pointer_mut("/components/schemas/SymbolName") {
        Some(Value::Object(schema)) => {
            schema.insert("enum".into(), json!(symbols));
            Ok(doc)
        }
        _ => {
            tracing::error!("docs/openapi.yaml has no components.schemas.SymbolName");
            Err(ApiError::internal("the OpenAPI document is unavailable"))
        }
    }
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

    #[test]
    fn the_served_document_names_the_markets() {
        let markets = bourse_config::Settings::default().validate().unwrap();
        let doc = served(&markets).unwrap();
        let symbols = &doc["components"]["schemas"]["SymbolName"]["enum"];
        assert_eq!(symbols.as_array().map(Vec::len), Some(markets.len()));
        assert!(symbols.as_array().unwrap().contains(&json!("KRW-BTC")));
    }
}
