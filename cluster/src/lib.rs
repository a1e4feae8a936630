//! The sharding runtime, generic over entities: it knows nothing about markets.
//!
//! - [`ring`]: which node owns `kind/key` (consistent hashing, pure).
//! - [`entity`]: the [`Entity`] trait domain code implements.
//! - [`region`]: one actor per kind per node; activation, supervision, passivation.
//! - [`sharding`]: `send`/`ask` by `(kind, key)` from anywhere.
//! - [`stream`] and [`hub`]: numbered live streams and the per-node fan-out.
//! - [`guardian`]: the root of the node's supervision tree.
//! - [`membership`], [`router`], [`node`]: the cluster: members and the ring, the one
//!   cross-node endpoint, and starting them; [`contacts`] and [`tls`]: where peers listen
//!   and how they are dialed and authenticated.
//! - [`wire`]: the cross-node codec.
//! - [`metrics`]: the runtime's Prometheus metrics.
//! - [`witness`]: what the shared store says of members this node cannot hear.
//! - [`probe`]: a diagnostic entity for measuring routing.

pub mod clients;
pub mod contacts;
pub mod entity;
pub mod guardian;
pub mod hub;
pub mod link;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod probe;
pub mod quorum;
pub mod region;
pub mod ring;
pub mod router;
mod said;
pub mod sharding;
pub mod stream;
pub mod tls;
pub mod wire;
pub mod witness;

pub use entity::{Entity, EntityContext, EntityError, Responder};
pub use hub::{Delivery, Frame, Hub, Outbox, Resync};
pub use region::{EntityInfo, RegionArgs, RegionStats, region_child, spawn_region};
pub use ring::HashRing;
pub use sharding::{AskError, Inspected, Sharding};
pub use stream::{Cursor, StreamEvent, StreamGrant, StreamLog, StreamRequest};
