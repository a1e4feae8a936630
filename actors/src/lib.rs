//! The domain entities of bourse and their pure cores. Each entity kind has its own module
//! with its actor-facing `Entity` impl beside the logic it delegates to.
//!
//! - [`symbol`]: ticker, trades and candles of one market (cores: `candles`, `ticker`).
//! - [`book`]: order books (cores: the matching `engine`, the journaled `state`).
//! - [`account`]: balances and orders of one user, and the order saga (core: `ledger`).
//! - [`room`]: chat rooms; [`session`]: a user's connections and private channels.
//! - [`alert`]: price-alert rules (cores: `condition`, the symbol's trigger `index`).
//! - [`trading`]: the order vocabulary the two share with the gateway.
//! - [`feed`]: market data sources (the seeded simulator).
//! - [`participants`]: the market maker and takers of `exchange` markets (core: `quotes`).
//! - [`rankings`]: traders ranked by score (core: the `board`).
//! - [`channel`]: parsing client channel names into publishers.
//! - [`clock`]: the wall clock entities read (a test may shift it).

pub mod account;
pub mod alert;
pub mod book;
pub mod channel;
pub mod clock;
pub mod events;
pub mod feed;
pub mod journal;
pub mod participants;
pub mod rankings;
pub mod room;
pub mod session;
pub mod symbol;
pub mod trading;
