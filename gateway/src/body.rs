//! Request bodies and op fields (docs/PROTOCOL.md "REST"): a body is one JSON object whose
//! fields are decoded by name, unknown ones refused. An error names the field and what was
//! wrong with it in the client's words (JSON types and accepted values), never a Rust type:
//! serde's messages say `expected struct PlaceBody with 8 elements`, and a JSON array must
//! not be taken as a positional body.

use crate::error::ApiError;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Decodes a REST body: a JSON object, then its fields.
pub fn json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    match value {
        Value::Object(fields) => decode(fields).map_err(ApiError::bad_request),
        _ => Err(ApiError::bad_request("body must be a JSON object")),
    }
}

/// Decodes an object's fields; the error is a message naming the field.
pub fn decode<T: DeserializeOwned>(fields: Map<String, Value>) -> Result<T, String> {
    serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
        let path = e.path().to_string();
        let message = plain(&e.inner().to_string());
        if path == "." {
            message
        } else {
            format!("field `{path}`: {message}")
        }
    })
}

/// serde's message with Rust type names replaced by what the client sent or should send.
fn plain(message: &str) -> String {
    const NAMED: [(&str, &str); 4] = [
        ("untagged enum ", "any accepted form"),
        ("tuple struct ", "an array"),
        ("struct ", "an object"),
        ("enum ", "one of the accepted values"),
    ];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    'scan: while !rest.is_empty() {
        for (prefix, words) in NAMED {
            if let Some(after) = rest.strip_prefix(prefix) {
                let name_len = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                if name_len > 0 && after.starts_with(|c: char| c.is_ascii_uppercase()) {
                    out.push_str(words);
                    rest = &after[name_len..];
                    // "with 8 elements" describes the Rust type, not the protocol.
                    if let Some(tail) = rest.strip_prefix(" with ")
                        && let Some(end) = tail.find(" element")
                    {
                        let tail = &tail[end + " element".len()..];
                        rest = tail.strip_prefix('s').unwrap_or(tail);
                    }
                    continue 'scan;
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct PlaceBody {
        symbol: String,
        qty: String,
        side: Side,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Side {
        Buy,
        Sell,
    }

    fn err(body: &str) -> String {
        json::<PlaceBody>(body.as_bytes()).unwrap_err().message
    }

    #[test]
    fn only_objects_are_bodies() {
        for body in [r#"["KRW-BTC","1","buy"]"#, "1", "null", r#""x""#] {
            assert_eq!(err(body), "body must be a JSON object", "{body}");
        }
        assert!(err("{").starts_with("invalid JSON"));
        assert!(json::<PlaceBody>(br#"{"symbol":"A-B","qty":"1","side":"buy"}"#).is_ok());
    }

    #[test]
    fn errors_name_fields_never_rust_types() {
        let cases = [
            (r#"{"symbol":1,"qty":"1","side":"buy"}"#, "field `symbol`"),
            (
                r#"{"symbol":"A-B","qty":"1","side":"up"}"#,
                "unknown variant",
            ),
            (r#"{"symbol":"A-B","qty":"1","side":7}"#, "field `side`"),
            (
                r#"{"symbol":"A-B","qty":"1","side":"buy","x":1}"#,
                "unknown field `x`",
            ),
            (r#"{"symbol":"A-B"}"#, "missing field"),
        ];
        for (body, needle) in cases {
            let m = err(body);
            assert!(m.contains(needle), "{body}: {m}");
            assert!(
                !m.contains("PlaceBody") && !m.contains("Side"),
                "{body}: {m}"
            );
        }
    }

    #[test]
    fn plain_replaces_type_names() {
        assert_eq!(
            plain("invalid length 5, expected struct PlaceBody with 8 elements"),
            "invalid length 5, expected an object"
        );
        assert_eq!(
            plain("data did not match any variant of untagged enum Since"),
            "data did not match any variant of any accepted form"
        );
        assert_eq!(
            plain("invalid type: integer `7`, expected enum Side"),
            "invalid type: integer `7`, expected one of the accepted values"
        );
        assert_eq!(plain("unknown field `x`"), "unknown field `x`");
        assert_eq!(plain("a struct of lowercase"), "a struct of lowercase");
    }
}
