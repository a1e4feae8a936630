//! Taking an entity over: the lease, for every kind; for a journaled one (a book, an
//! account) then its newest snapshot and the journal entries after it, decoded. The caller
//! folds the entries into its state in order, exactly as it applied them the first time.

use bourse_cluster::EntityError;
use bourse_cluster::sharding::Sharding;
use bourse_storage::{Lease, MarketStore, StoreError, codec};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// What an activation starts from.
pub struct Recovered<S, E> {
    /// The new lease: every write of this activation goes through it.
    pub lease: Lease,
    /// The newest snapshot, if any.
    pub snapshot: Option<S>,
    /// Entries after the snapshot, with their positions, in order.
    pub entries: Vec<(u64, E)>,
    /// The last position covered (the snapshot's or the last entry's).
    pub seq: u64,
}

/// A snapshot as stored, decoded from every layout this build still reads.
pub trait StoredSnapshot: Sized {
    fn decode(bytes: &[u8]) -> Result<Self, codec::CodecError>;
}

fn storage(e: StoreError) -> EntityError {
    EntityError::new(e.to_string())
}

/// Takes `kind/key` over for this node, letting a live holder hand it off first (see
/// [`Lease::take_over`]): what every entity kind activates with.
pub async fn take_over(
    store: &Arc<dyn MarketStore>,
    kind: &str,
    key: &str,
    sharding: &Sharding,
) -> Result<Lease, EntityError> {
    Lease::take_over(store.clone(), kind, key, sharding.node(), |holder| {
        sharding.is_member(holder) == Some(true)
    })
    .await
    .map_err(storage)
}

/// Takes `kind/key` over (see [`take_over`]) and reads its snapshot and journal.
pub async fn recover<S: StoredSnapshot, E: DeserializeOwned>(
    store: &Arc<dyn MarketStore>,
    kind: &str,
    key: &str,
    sharding: &Sharding,
) -> Result<Recovered<S, E>, EntityError> {
    let lease = take_over(store, kind, key, sharding).await?;
    let (mut seq, snapshot) = match store.snapshot(kind, key).await.map_err(storage)? {
        Some((seq, bytes)) => (
            seq,
            Some(
                S::decode(&bytes)
                    .map_err(|e| EntityError::new(format!("{kind} {key} snapshot: {e}")))?,
            ),
        ),
        None => (0, None),
    };
    let raw = store.journal_after(kind, key, seq).await.map_err(storage)?;
    let mut entries = Vec::with_capacity(raw.len());
    for (at, bytes) in raw {
        if at != seq + 1 {
            return Err(EntityError::new(format!(
                "{kind} {key} journal: entry {at} follows {seq}; entries in between are missing"
            )));
        }
        let entry = codec::decode(&bytes)
            .map_err(|e| EntityError::new(format!("{kind} {key} entry {at}: {e}")))?;
        entries.push((at, entry));
        seq = at;
    }
    Ok(Recovered {
        lease,
        snapshot,
        entries,
        seq,
    })
}

#[cfg(test)]
mod tests {
    use crate::account::ledger::Entry;
    use crate::book::state::Command;
    use bourse_storage::{MarketStore, SqliteStore, Write, codec};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_journal_with_a_gap_is_refused_not_replayed() {
        let dir = std::env::temp_dir().join(format!("bourse-gap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store: Arc<dyn MarketStore> =
            Arc::new(SqliteStore::open(&dir.join("bourse.db"), 64).unwrap());
        for seq in [1, 2, 4] {
            let entry = codec::encode(&Entry::Grant { assets: vec![] }).unwrap();
            store
                .submit(Write::Journal {
                    kind: "account".into(),
                    key: "7".into(),
                    seq,
                    entry,
                })
                .wait()
                .await
                .unwrap();
        }
        let sharding = bourse_cluster::Sharding::new(
            "n1",
            16,
            std::time::Duration::from_secs(1),
            bourse_cluster::hub::Hub::new("n1"),
        );
        let err = match super::recover::<crate::account::ledger::Ledger, Entry>(
            &store, "account", "7", &sharding,
        )
        .await
        {
            Ok(_) => panic!("a journal missing entry 3 was replayed"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("entry 4 follows 2"), "{err}");
        store.close().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A book's cancel and an account's grant as the previous format stored them (bincode
    /// through serde, no version tag), byte for byte.
    const CANCEL_V0: [u8; 12] = [1, 42, 7, 253, 0, 80, 226, 83, 68, 3, 0, 0];
    const GRANT_V0: [u8; 24] = [
        0, 2, 3, 66, 84, 67, 252, 0, 225, 245, 5, 3, 75, 82, 87, 253, 0, 64, 122, 16, 243, 90, 0, 0,
    ];

    #[test]
    fn journals_written_by_the_previous_format_still_decode() {
        match codec::decode::<Command>(&CANCEL_V0) {
            Ok(Command::Cancel {
                order_id: 42,
                owner: 7,
                ts: 1_796_000_000_000,
            }) => {}
            other => panic!("{other:?}"),
        }
        match codec::decode::<Entry>(&GRANT_V0) {
            Ok(Entry::Grant { assets }) => assert_eq!(
                assets,
                vec![
                    ("BTC".to_string(), 100_000_000),
                    ("KRW".to_string(), 100_000_000_000_000)
                ]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_current_format_is_tagged_and_round_trips() {
        let cmd = Command::Cancel {
            order_id: 42,
            owner: 7,
            ts: 1_796_000_000_000,
        };
        let bytes = codec::encode(&cmd).unwrap();
        assert_eq!(&bytes[..2], &[codec::TAG, codec::CURRENT]);
        // Today's version 1 body is the version 0 layout behind the tag.
        assert_eq!(&bytes[2..], &CANCEL_V0);
        assert!(matches!(
            codec::decode::<Command>(&bytes),
            Ok(Command::Cancel { order_id: 42, .. })
        ));
    }
}
