//! The cross-node codec, kept behind one small module so it can move (to postcard, say)
//! without touching callers. bincode 2 with its serde adapter, standard config, and a limit:
//! a length that claims more than [`MAX_MESSAGE`] bytes is an error before anything is
//! allocated (without it, a frame claiming a string of 200 TB aborted the process).
//!
//! Every message starts with [`TAG`] and this build's [`VERSION`], so nodes of builds whose
//! messages differ refuse each other's messages with an error that says so (and therefore
//! never see each other as members) instead of misreading them.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest message, encoded or decoded (a stream grant's replay is far below it).
pub const MAX_MESSAGE: usize = 64 << 20;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_MESSAGE>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE>()
}

/// The first byte of every message. No message of a build before wire versions starts with
/// it: those are bare bincode, whose first value is a variable-length integer, and such an
/// integer never begins with `0xFF`.
const TAG: u8 = 0xFF;

/// The layout of the messages this build speaks, the byte after [`TAG`]. Raise it whenever
/// a message crossing nodes changes its layout: a cluster then runs one version at a time
/// (docs/OPERATIONS.md "A cluster", on upgrades).
pub const VERSION: u8 = 3;

/// A message that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// From a peer of another build: nothing of it was read.
    #[error(
        "wire codec: a peer speaks cluster wire version {0}, this node version {VERSION}: run one bourse version across the cluster"
    )]
    Version(u8),
    /// From a peer older than wire versions.
    #[error(
        "wire codec: a message without a wire version (a peer older than this node's wire version {VERSION}): run one bourse version across the cluster"
    )]
    Unversioned,
    #[error("wire codec: {0}")]
    Codec(String),
}

/// Encodes a message for another node.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![TAG, VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| WireError::Codec(e.to_string()))?;
    Ok(out)
}

/// Decodes a message from another node; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let body = match bytes {
        [TAG, VERSION, body @ ..] => body,
        [TAG, other, ..] => return Err(WireError::Version(*other)),
        _ => return Err(WireError::Unversioned),
    };
    let (value, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| WireError::Codec(e.to_string()))?;
    if used != body.len() {
        return Err(WireError::Codec(format!(
            "{} trailing bytes",
            body.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Cursor, StreamRequest};

    #[test]
    fn a_length_past_the_limit_is_an_error_not_an_allocation() {
        // A request whose channel name claims 2^40 bytes.
        let mut bytes = vec![TAG, VERSION, 253];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let err = decode::<StreamRequest>(&bytes).unwrap_err().to_string();
        assert!(err.contains("imit"), "{err}");
    }

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
        assert!(decode::<StreamRequest>(&[]).is_err());
        assert!(matches!(
            decode::<StreamRequest>(&[TAG, VERSION, 0xff]),
            Err(WireError::Codec(_))
        ));
    }

    #[test]
    fn a_message_of_another_version_or_none_is_refused_saying_so() {
        let req = StreamRequest {
            channel: "trades:KRW-BTC".into(),
            node: "node1".into(),
            since: None,
        };
        let mut newer = encode(&req).unwrap();
        newer[1] = VERSION + 1;
        let err = decode::<StreamRequest>(&newer).unwrap_err();
        assert!(matches!(err, WireError::Version(v) if v == VERSION + 1));
        assert!(err.to_string().contains("run one bourse version"), "{err}");
        // What a build before wire versions sent: bare bincode.
        let bare = bincode::serde::encode_to_vec(&req, config()).unwrap();
        assert!(matches!(
            decode::<StreamRequest>(&bare).unwrap_err(),
            WireError::Unversioned
        ));
    }
}

/// Messages that cross nodes, inside the router's opaque byte payloads. Kept small: entity
/// envelopes, stream events, membership heartbeats.
pub mod msg {
    use crate::clients::ClientView;
    use crate::contacts::Contact;
    use crate::membership::MemberInfo;
    use crate::region::EntityInfo;
    use crate::stream::{StreamEvent, StreamGrant, StreamRequest};
    use serde::{Deserialize, Serialize};

    /// Fire-and-forget traffic.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Cast {
        /// `send` to an entity; `hops` bounds forwarding during ring transitions.
        Tell {
            kind: String,
            key: String,
            payload: Vec<u8>,
            hops: u8,
        },
        /// A stream event for this node's hub, from publisher `kind/key`.
        Publish {
            kind: String,
            key: String,
            event: StreamEvent,
        },
        /// A publisher started a new epoch: local subscribers re-subscribe.
        PublisherActivated {
            kind: String,
            key: String,
            epoch: String,
        },
        /// Nobody on `node` listens to `channel` any more.
        Unsubscribe {
            kind: String,
            key: String,
            channel: String,
            node: String,
        },
        /// A member's periodic announcement.
        Heartbeat(MemberInfo),
        /// Several casts to one node, in order (outbound batching).
        Batch(Vec<Cast>),
        /// Where the members the sender hears listen (itself included), sent with its
        /// heartbeat: every node dials every node it hears of.
        Contacts(Vec<Contact>),
        /// An operator declared this node gone for good (see `membership::down`).
        Down(String),
    }

    /// Request/reply traffic.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Call {
        Ask {
            kind: String,
            key: String,
            payload: Vec<u8>,
            hops: u8,
        },
        Subscribe {
            kind: String,
            key: String,
            req: StreamRequest,
            hops: u8,
        },
        Kill {
            kind: String,
            key: String,
        },
        /// Chaos: kill about `fraction` of the receiving node's active `kind` entities.
        KillSome {
            kind: String,
            fraction: f64,
        },
        /// The receiving node's entities (of `kind`, or all).
        Entities {
            kind: Option<String>,
        },
        /// One entity's counters and state summary, from its owner.
        Inspect {
            kind: String,
            key: String,
        },
        /// The receiving node drains and stops.
        Leave,
        /// The receiving node's first `limit` client connections, and how many it has.
        Clients {
            limit: usize,
        },
        /// Chaos: the receiving node's client connection `id` dies as a crashing one would.
        KillClient {
            id: u64,
        },
    }

    /// Answers to [`Call`]s.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Reply {
        /// An entity's encoded reply.
        Payload(Vec<u8>),
        Granted(StreamGrant),
        Killed(bool),
        KilledSome(Vec<String>),
        Entities(Vec<EntityInfo>),
        /// The counters and the summary as JSON text (bincode cannot carry a JSON value).
        Inspected(Option<(EntityInfo, String)>),
        Leaving,
        Clients {
            total: usize,
            listed: Vec<ClientView>,
        },
        KilledClient(bool),
        /// The call could not be served: `(unavailable, message)`; unavailable is retryable.
        Failed {
            retry: bool,
            message: String,
        },
    }
}
