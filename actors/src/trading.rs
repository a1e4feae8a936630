//! The order vocabulary shared by the `account` and `book` entities and the gateway: ids,
//! statuses, and the cumulative order state a book reports.
//!
//! A book reports an order's *state* (cumulative filled quantity and cost, status), never a
//! delta: applying the same state twice, or an older one after a newer one, changes nothing.
//! That makes settlement idempotent however often an update is re-sent (recovery re-pushes,
//! reconciliation polls) and whatever order updates arrive in.

use crate::book::engine::{Reject, Side};
use serde::{Deserialize, Serialize};

/// The user id inside an order id: the high 32 bits. An account numbers its own orders in
/// the low 32, so ids are unique across the cluster without coordination.
pub fn owner_of(order_id: u64) -> u64 {
    order_id >> 32
}

/// The id of a user's `n`th order.
pub fn order_id(user: u64, n: u32) -> u64 {
    (user << 32) | u64::from(n)
}

/// docs/PROTOCOL.md "Order status".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    New,
    PartiallyFilled,
    Filled,
    Cancelled,
    Rejected,
    Expired,
    /// Taken while its market was closed: funds held, waiting in its book for the open.
    /// (Last: stored states decode.)
    Reserved,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::PartiallyFilled => "partially_filled",
            Status::Filled => "filled",
            Status::Cancelled => "cancelled",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Reserved => "reserved",
        }
    }

    /// Whether the order can change no more.
    pub fn is_done(self) -> bool {
        !matches!(
            self,
            Status::New | Status::PartiallyFilled | Status::Reserved
        )
    }
}

/// An order's matching state as its book knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    pub order_id: u64,
    pub status: Status,
    /// Lots filled so far.
    pub filled: u64,
    /// Sum of `price × qty` (ticks × lots) over the fills.
    pub cost: u128,
    /// The book's id of the latest fill (0 before any).
    pub last_trade: u64,
    /// Why the book refused it, when `status` is `Rejected` by the book.
    pub reject: Option<Reject>,
}

impl OrderState {
    /// A fresh state for an order the book accepted.
    pub fn new(order_id: u64) -> OrderState {
        OrderState {
            order_id,
            status: Status::New,
            filled: 0,
            cost: 0,
            last_trade: 0,
            reject: None,
        }
    }

    /// Whether the book refused it for good because its account gave up on it (a void,
    /// not a rejection of the order's content): its `client_order_id` is free again.
    pub fn voided(&self) -> bool {
        self.status == Status::Rejected && self.reject.is_none()
    }

    /// Whether `self` is later than `other` (more filled, done where it was not, or
    /// activated where it was reserved).
    pub fn supersedes(&self, other: &OrderState) -> bool {
        self.filled > other.filled
            || (self.status.is_done() && !other.status.is_done())
            || (other.status == Status::Reserved && self.status != Status::Reserved)
    }
}

/// The order a client asks for, already checked against its market (units, not strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    pub symbol: String,
    pub side: Side,
    /// Limit price in ticks; `None` for a market order.
    pub price: Option<u64>,
    /// Lots.
    pub qty: u64,
    pub tif: crate::book::engine::TimeInForce,
    pub post_only: bool,
    pub client_order_id: Option<String>,
}

impl OrderRequest {
    /// Whether the order can rest on the book: a good-till-cancelled or day limit order. Market,
    /// IOC and FOK orders are done the moment the book has seen them.
    pub fn may_rest(&self) -> bool {
        self.price.is_some() && self.tif.rests()
    }
}

/// Why an entity refused a request, mapped one-to-one onto docs/PROTOCOL.md error codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InsufficientFunds(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// The longest `client_order_id` accepted.
pub const MAX_CLIENT_ORDER_ID: usize = 64;

/// Checks a `client_order_id`: 1..=64 printable ASCII characters.
pub fn check_client_order_id(id: &str) -> Result<(), Refusal> {
    if id.is_empty() || id.len() > MAX_CLIENT_ORDER_ID || !id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Refusal::BadRequest(format!(
            "client_order_id must be 1..={MAX_CLIENT_ORDER_ID} printable ASCII characters"
        )));
    }
    Ok(())
}

/// Converts the storage side (market data) from the engine side.
pub fn tick_side(side: Side) -> bourse_storage::Side {
    match side {
        Side::Buy => bourse_storage::Side::Buy,
        Side::Sell => bourse_storage::Side::Sell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_owner() {
        let id = order_id(42, 7);
        assert_eq!(owner_of(id), 42);
        assert_ne!(order_id(42, 8), id);
        assert_ne!(order_id(43, 7), id);
    }

    #[test]
    fn later_states_supersede_earlier_ones_only() {
        let a = OrderState::new(1);
        let b = OrderState {
            filled: 3,
            cost: 30,
            status: Status::PartiallyFilled,
            last_trade: 9,
            ..a
        };
        let c = OrderState {
            status: Status::Cancelled,
            ..b
        };
        assert!(b.supersedes(&a) && c.supersedes(&b) && c.supersedes(&a));
        assert!(!a.supersedes(&b) && !b.supersedes(&c) && !c.supersedes(&c));
        let reserved = OrderState {
            status: Status::Reserved,
            ..a
        };
        assert!(a.supersedes(&reserved) && b.supersedes(&reserved) && c.supersedes(&reserved));
        assert!(!reserved.supersedes(&a) && !reserved.supersedes(&reserved));
    }

    #[test]
    fn client_order_ids_are_checked() {
        assert!(check_client_order_id("abc-123_X").is_ok());
        for bad in ["", "has space", "tab\t", &"x".repeat(65), "é"] {
            assert!(check_client_order_id(bad).is_err(), "{bad:?}");
        }
    }
}
