//! REST handlers, one module per area.

pub mod admin;
pub mod alerts;
pub mod chat;
pub mod market;
pub mod rankings;
pub mod trading;
pub mod watchlist;
