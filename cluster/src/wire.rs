//! The cross-node codec, kept behind one small module so it can move (to postcard, say)
//! without touching callers. bincode 2 with its serde adapter, standard config.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A message that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("wire codec: {0}")]
pub struct WireError(String);

/// Encodes a message for another node.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| WireError(e.to_string()))
}

/// Decodes a message from another node; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| WireError(e.to_string()))?;
    if used != bytes.len() {
        return Err(WireError(format!("{} trailing bytes", bytes.len() - used)));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Cursor, StreamRequest};

    #[test]
    fn round_trips_and_rejects_garbage() {
        let req = StreamRequest {
            channel: "trades:KRW-BTC".into(),
            node: "node1".into(),
            since: Some(Cursor {
                epoch: "e".into(),
                seq: 9,
            }),
        };
        let bytes = encode(&req).unwrap();
        assert_eq!(decode::<StreamRequest>(&bytes).unwrap(), req);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<StreamRequest>(&longer).is_err());
        assert!(decode::<StreamRequest>(&[0xff, 0xff]).is_err());
    }
}
