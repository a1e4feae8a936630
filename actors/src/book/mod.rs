//! Order books. This step brings the pure matching engine; the `book` entity around it
//! (journal, snapshots, `book:S` stream) follows.

pub mod engine;
