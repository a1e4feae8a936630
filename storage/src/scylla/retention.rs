//! Retention on ScyllaDB (`Write::PruneInbox`, `Write::PruneHoldings`): the same rules as
//! SQLite's and PostgreSQL's, applied one user's partition at a time.
//!
//! No statement deletes across partitions by age or rank, so a sweep lists the users
//! (`SELECT DISTINCT` of the partition key, paged) and reads each one's partition: a few
//! requests per user, and one per dropped entry whose key was claimed, once per
//! `alerts.inbox_sweep_every_s` (an hour by default). Fine for
//! the inboxes of a trading platform's users, not for a table of billions of partitions,
//! where TTLs would be the tool (and would change what the limits mean: an age at write
//! time, no count). The store runs a sweep beside its write queue, not in it
//! ([`super::ScyllaStore`]): it needs no place in the write order, and the writes behind it
//! must not wait for it, nor fail with it.

use super::{Cs, exec, rows};
use crate::StoreError;
use std::collections::HashMap;

/// The users with a partition in `table` (`SELECT DISTINCT` of its partition key, paged).
async fn users(cs: &Cs, table: &str) -> Result<Vec<i64>, StoreError> {
    let found: Vec<(i64,)> = rows(
        cs,
        format!("SELECT DISTINCT user_id FROM {table}"),
        (),
        &format!("listing the users of {table}"),
    )
    .await?;
    Ok(found.into_iter().map(|(user,)| user).collect())
}

/// Drops each user's inbox entries older than `before` and those past the user's newest
/// `keep` (newest by time, then key, as SQL's sweep ranks them). Only *shown* entries
/// count towards the cap: an entry is shown where its key was claimed at its time
/// (`alerts::notify`). An entry without that claim is the leftover of a replay or of a crash
/// between the two writes; it goes once it is older than `before` (a younger one may be
/// a notify whose claim is on its way). A dropped entry's claim goes first, then the
/// entry: a crash between the two leaves an entry no read shows, which goes once it is
/// older than `before`. The entries older than `before` go in one range delete (one
/// tombstone, not one per entry, at the end of the partition that reads start from).
/// Returns how many entries went, hidden leftovers included.
///
/// A claim can outlive its entry in one case: a notify replayed with a time already past
/// `before`, whose entry this sweep drops (by the range delete, even one written after the
/// partition was read, and then not counted) before its claim lands. Such a claim shows
/// nothing and is never dropped (a few bytes).
pub(super) async fn prune_inbox(cs: &Cs, before: i64, keep: u64) -> Result<u64, StoreError> {
    let mut dropped = 0u64;
    for user in users(cs, "notifications").await? {
        // Oldest first in the partition (ts, key ascending); ranked newest first below.
        let mut entries: Vec<(i64, String)> = rows(
            cs,
            "SELECT ts, key FROM notifications WHERE user_id = ?",
            (user,),
            "reading an inbox for retention",
        )
        .await?;
        entries.reverse();
        let claims: HashMap<String, i64> = rows::<(String, Option<i64>)>(
            cs,
            "SELECT key, ts FROM notification_keys WHERE user_id = ?",
            (user,),
            "reading inbox keys for retention",
        )
        .await?
        .into_iter()
        .filter_map(|(key, ts)| Some((key, ts?)))
        .collect();
        let mut shown = 0u64;
        let mut old = 0u64;
        for (ts, key) in entries {
            let claimed = claims.get(&key) == Some(&ts);
            shown += u64::from(claimed);
            if ts >= before && !(claimed && shown > keep) {
                continue;
            }
            if claimed {
                exec(
                    cs,
                    "DELETE FROM notification_keys WHERE user_id = ? AND key = ?",
                    (user, &key),
                    "dropping an inbox key",
                )
                .await?;
            }
            if ts < before {
                old += 1;
                continue;
            }
            exec(
                cs,
                "DELETE FROM notifications WHERE user_id = ? AND ts = ? AND key = ?",
                (user, ts, &key),
                "dropping an inbox entry",
            )
            .await?;
            dropped += 1;
        }
        if old > 0 {
            exec(
                cs,
                "DELETE FROM notifications WHERE user_id = ? AND ts < ?",
                (user, before),
                "dropping old inbox entries",
            )
            .await?;
            dropped += old;
        }
    }
    Ok(dropped)
}

/// Drops each user's holdings points older than `before` except the newest of them, which
/// is what the user held at `before` (the value history's base): one range delete per user
/// with more than one such point. Returns how many points went.
pub(super) async fn prune_holdings(cs: &Cs, before: i64) -> Result<u64, StoreError> {
    let mut dropped = 0u64;
    for user in users(cs, "holdings").await? {
        // Newest first (the table's clustering order): the first is the one in force.
        let old: Vec<(i64,)> = rows(
            cs,
            "SELECT ts FROM holdings WHERE user_id = ? AND ts <= ?",
            (user, before),
            "reading holdings for retention",
        )
        .await?;
        let Some(&(in_force,)) = old.first() else {
            continue;
        };
        if old.len() < 2 {
            continue;
        }
        exec(
            cs,
            "DELETE FROM holdings WHERE user_id = ? AND ts < ?",
            (user, in_force),
            "dropping holdings points",
        )
        .await?;
        dropped += old.len() as u64 - 1;
    }
    Ok(dropped)
}
