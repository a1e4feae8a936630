//! Rankings of traders (seed 003 recomputes its rankings over 20 M rows in a 91-minute
//! batch; bourse keeps them current). [`board`] is the pure core: one period's ranking,
//! updated one trader at a time in microseconds, read as a top list or one trader's rank.
//! What feeds it (returns from fills and prices per period) is not built yet.

pub mod board;

pub use board::{Board, Standing};
