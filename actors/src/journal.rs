//! Taking over a journaled entity (a book, an account): lease first, then its newest
//! snapshot and the journal entries after it, decoded. The caller folds the entries into
//! its state in order, exactly as it applied them the first time.

use bourse_cluster::{EntityError, wire};
use bourse_storage::{Fence, MarketStore, StoreError};
use serde::de::DeserializeOwned;

/// What an activation starts from.
pub struct Recovered<S, E> {
    /// The new lease: every write of this activation carries it.
    pub fence: Fence,
    /// The newest snapshot, if any.
    pub snapshot: Option<S>,
    /// Entries after the snapshot, with their positions, in order.
    pub entries: Vec<(u64, E)>,
    /// The last position covered (the snapshot's or the last entry's).
    pub seq: u64,
}

fn storage(e: StoreError) -> EntityError {
    EntityError::new(e.to_string())
}

/// Takes `kind/key` over for `node` (see [`MarketStore::take_over`]) and reads its snapshot
/// and journal.
pub async fn recover<S: DeserializeOwned, E: DeserializeOwned>(
    store: &dyn MarketStore,
    kind: &str,
    key: &str,
    node: &str,
) -> Result<Recovered<S, E>, EntityError> {
    let fence = store.take_over(kind, key, node).await.map_err(storage)?;
    let (mut seq, snapshot) = match store.snapshot(kind, key).await.map_err(storage)? {
        Some((seq, bytes)) => (
            seq,
            Some(
                wire::decode(&bytes)
                    .map_err(|e| EntityError::new(format!("{kind} {key} snapshot: {e}")))?,
            ),
        ),
        None => (0, None),
    };
    let raw = store.journal_after(kind, key, seq).await.map_err(storage)?;
    let mut entries = Vec::with_capacity(raw.len());
    for (at, bytes) in raw {
        let entry = wire::decode(&bytes)
            .map_err(|e| EntityError::new(format!("{kind} {key} entry {at}: {e}")))?;
        entries.push((at, entry));
        seq = at;
    }
    Ok(Recovered {
        fence,
        snapshot,
        entries,
        seq,
    })
}
