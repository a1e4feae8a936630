//! The encoding of stored payloads (journal entries and snapshots of books and accounts),
//! owned by storage and versioned, so the cross-node wire codec can change without making
//! a single stored journal unreadable.
//!
//! A payload is a tag byte `0xFF`, a version byte, then the value in that version's layout:
//!
//! | version | layout |
//! | --- | --- |
//! | 0 | (no tag) bincode 2, standard config, through serde: what bourse stored before payloads carried a version |
//! | 1 | bincode 2, standard config, through serde |
//!
//! Version 0 is told apart by its first byte: every stored type begins with a bincode
//! variable-length integer (an enum's variant, a collection's length), and no such integer
//! begins with `0xFF`. Decoding reads every version; encoding writes [`CURRENT`]. A newer
//! version than this build knows is an error that says so, never a misread.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first byte of a versioned payload.
pub const TAG: u8 = 0xFF;
/// The version [`encode`] writes.
pub const CURRENT: u8 = 1;

/// A payload that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("stored payload: {0}")]
pub struct CodecError(String);

/// The largest stored payload, encoded or decoded: a length in a payload that claims more
/// is an error before anything is allocated (without the limit, a damaged entry claiming a
/// 200 TB string aborted the process: found by fuzzing, fuzz/fuzz_targets/stored.rs).
pub const MAX_PAYLOAD: usize = 256 << 20;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_PAYLOAD>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_PAYLOAD>()
}

/// Encodes a value for storage in the current version.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![TAG, CURRENT];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError(e.to_string()))?;
    Ok(out)
}

/// Decodes a stored payload of any known version; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes {
        [TAG, 1, body @ ..] => bincode_v1(body),
        [TAG, version, ..] => Err(CodecError(format!(
            "version {version} is newer than this build reads (up to {CURRENT})"
        ))),
        [TAG] => Err(CodecError("a tag with no version".into())),
        legacy => bincode_v1(legacy),
    }
}

/// Versions 0 and 1 share this layout.
fn bincode_v1<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let (value, used) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| CodecError(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError(format!("{} trailing bytes", body.len() - used)));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Entry {
        Grant { assets: Vec<(String, u128)> },
        Apply { id: u64, ts: i64 },
    }

    #[test]
    fn writes_the_current_version_and_reads_it_back() {
        let e = Entry::Apply { id: 7, ts: -3 };
        let bytes = encode(&e).unwrap();
        assert_eq!(&bytes[..2], &[TAG, CURRENT]);
        assert_eq!(decode::<Entry>(&bytes).unwrap(), e);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<Entry>(&longer).is_err());
    }

    #[test]
    fn reads_untagged_payloads_of_version_0() {
        // Bytes as the previous format wrote them (bincode, no tag): variant 0, one asset.
        let v0 = [0, 1, 3, b'K', b'R', b'W', 100];
        assert_eq!(
            decode::<Entry>(&v0).unwrap(),
            Entry::Grant {
                assets: vec![("KRW".into(), 100)]
            }
        );
    }

    #[test]
    fn a_length_past_the_limit_is_an_error_not_an_allocation() {
        // Grant with one asset whose name claims 2^40 bytes.
        let mut bytes = vec![TAG, CURRENT, 0, 1, 253];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let err = decode::<Entry>(&bytes).unwrap_err().to_string();
        assert!(err.contains("imit"), "{err}");
    }

    #[test]
    fn refuses_what_it_cannot_know() {
        let newer = [TAG, CURRENT + 1, 0];
        let err = decode::<Entry>(&newer).unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
        assert!(decode::<Entry>(&[TAG]).is_err());
        assert!(decode::<Entry>(&[]).is_err());
    }

    #[test]
    fn no_untagged_payload_begins_with_the_tag() {
        // A bincode varint never starts with 0xFF (250 and below are one byte; 251..=254
        // announce wider integers), so version 0 and the tag cannot be confused.
        for n in [0u64, 250, 251, 65_535, 1 << 40, u64::MAX] {
            let bytes = bincode::serde::encode_to_vec(n, config()).unwrap();
            assert_ne!(bytes[0], TAG, "{n}");
        }
    }
}
