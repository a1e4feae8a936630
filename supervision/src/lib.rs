//! Supervision: how bourse restarts what fails.
//!
//! - [`policy`]: restart intensity (at most N failures in T, then escalate) and exponential
//!   backoff with jitter; pure and clock-injected.
//! - [`supervisor`]: a supervisor actor over a fixed list of children, with the three
//!   classic strategies ([`Strategy::OneForOne`], [`Strategy::OneForAll`],
//!   [`Strategy::RestForOne`]) applying a [`RestartPolicy`].
//!
//! Who uses which (docs/DESIGN.md "Supervision"):
//! - **Entity regions** restart their entities **one-for-one** (each entity is rebuilt from
//!   storage alone; one book's crash must not touch another's). Entities come and go by
//!   key, so the region keeps its own dynamic children and applies the same
//!   [`RestartTracker`]; an entity past its intensity fails the region.
//! - **The node supervisor** holds the regions, **one-for-one**: a region that failed
//!   restarts with its entities passivated, the other kinds keep running. Past its
//!   intensity it escalates to the guardian, which stops the node (let it crash: the
//!   process supervisor restarts it from storage).
//! - **The cluster services** (membership, then the router that feeds it heartbeats and
//!   holds its address) are **rest-for-one**: a failed membership restarts the router
//!   after it; a failed router restarts alone.
//! - **One-for-all** is for children that share state none of them can rebuild alone. No
//!   bourse group is like that today (entities rebuild from storage, services from their
//!   peers), so no shipped supervisor uses it; it is here, and tested, for the one that
//!   will.

pub mod policy;
pub mod supervisor;

pub use policy::{Decision, RestartPolicy, RestartTracker};
pub use supervisor::{ChildSpec, Strategy, Supervisor, SupervisorArgs, SupervisorMsg};
