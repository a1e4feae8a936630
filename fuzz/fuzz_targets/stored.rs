//! Stored payloads as a damaged or foreign disk may hold them: book and account journal
//! entries and snapshots. Decoding answers an error or a value, never a panic; a decoded
//! book snapshot restores, and a decoded journal entry applies to an empty book or ledger.

#![no_main]

use bourse_actors::account::ledger::{Entry, Ledger};
use bourse_actors::book::state::{BookState, Command, Snapshot};
use bourse_actors::journal::StoredSnapshot;
use bourse_storage::codec;
use libfuzzer_sys::fuzz_target;
use markets::MARKETS;

mod markets;

fuzz_target!(|data: &[u8]| {
    if let Ok(cmd) = codec::decode::<Command>(data) {
        BookState::new().apply(&cmd);
    }
    if let Ok(snapshot) = Snapshot::decode(data) {
        let _ = BookState::restore(snapshot);
    }
    if let Ok(entry) = codec::decode::<Entry>(data) {
        let _ = Ledger::default().apply(&entry, &MARKETS);
    }
    let _ = <Ledger as StoredSnapshot>::decode(data);
});
