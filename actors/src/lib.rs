//! The domain entities of bourse and their pure cores. Each entity kind has its own module
//! with its actor-facing `Entity` impl beside the logic it delegates to.
//!
//! - [`symbol`]: ticker, trades and candles of one market (cores: `candles`, `ticker`).
//! - [`book`]: order books (core: the matching `engine`).
//! - [`feed`]: market data sources (the seeded simulator).
//! - [`channel`]: parsing client channel names into publishers.

pub mod book;
pub mod channel;
pub mod feed;
pub mod symbol;
