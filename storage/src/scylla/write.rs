//! Applying writes to ScyllaDB, in order, each with its own outcome. There is no
//! transaction across partitions: the first write that fails stops the batch, the writes
//! before it keep their outcomes (they landed), and the rest is never sent.
//!
//! **Fencing.** Journals, snapshots and leases share one partition per entity
//! (`entities`, the lease and snapshot in static columns), so each of their writes is a
//! lightweight transaction conditional on the lease epoch (`IF epoch = ?`), and a take-over
//! (`IF epoch = <read>`) is a compare-and-set. Ticks, candles, chat, the armed-alert index
//! and alert rules sit in partitions of their own, each with a `fence` column that a lease
//! claims and a take-over raises; a fenced write to one is a conditional batch on that
//! partition (`fence.rs`). A write from an older epoch never lands in either.
//!
//! An LWT whose outcome the driver could not learn (a timeout, a lost connection) is read
//! back at SERIAL, never assumed; if the read back cannot tell, the write (and its batch)
//! fails with its outcome unknown, which halts its lease.

use super::fence::{self, CAS_ATTEMPTS, Claim, Part, Statement, big};
use super::{Cas, Cs, cas, exec, rows, serial, unknown};
use crate::queue::{Failed, Outcomes, Reply};
use crate::records::{Interval, Side};
use crate::{Fence, StoreError, Write};
use scylla::value::CqlValue;
use std::collections::{HashMap, HashSet};

/// Rows in one single-partition batch at most.
const BATCH_ROWS: usize = 1000;
/// Index rows or claimed partitions remembered (a set is cleared when it grows past this).
const KNOWN_MAX: usize = 100_000;

/// Chat messages per chat partition.
pub(super) const CHAT_BUCKET: u64 = 4096;
/// Candles per candle partition.
pub(super) const CANDLE_BUCKET: i64 = 10_000;
const DAY_MS: i64 = 86_400_000;

/// The day partition of a tick at `ts`.
pub(super) fn day(ts: i64) -> i64 {
    ts.div_euclid(DAY_MS)
}

/// The partition of a candle opening at `open_time`.
pub(super) fn candle_bucket(interval: Interval, open_time: i64) -> i64 {
    open_time.div_euclid(interval.millis() * CANDLE_BUCKET)
}

/// The partition of chat message `id`.
pub(super) fn chat_bucket(id: u64) -> i64 {
    (id / CHAT_BUCKET) as i64
}

fn side_code(side: Side) -> i8 {
    match side {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

fn text(s: &str) -> CqlValue {
    CqlValue::Text(s.to_string())
}

/// A new id without a central counter: milliseconds since 2025 and 10 random bits (below
/// 2^53, so JavaScript clients read it exactly), above `last` (ids of one writer rise);
/// uniqueness across writers is then claimed by LWT.
pub(super) fn new_id(last: &mut i64) -> i64 {
    const EPOCH_2025_MS: i64 = 1_735_689_600_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let ms = now.saturating_sub(EPOCH_2025_MS).max(1);
    let id = ((ms << 10) | fastrand::i64(0..1024)).max(*last + 1);
    *last = id;
    id
}

/// A write's answer: its own outcome (a refusal such as [`StoreError::Fenced`] inside), or
/// the error that fails the batch from this write on.
pub(super) type Answer = Result<Result<u64, StoreError>, StoreError>;

/// The refusal of a fenced write this backend cannot fence exactly (nothing in bourse
/// submits one): it is never applied unfenced.
fn unfenceable(what: &str) -> StoreError {
    StoreError::Backend(format!(
        "the scylla store cannot fence {what} under another entity's lease"
    ))
}

/// The writer's memory across batches.
#[derive(Default)]
pub(super) struct Writer {
    /// Partitions claimed per lease epoch, `(kind, key, epoch, part)`: a fenced write to
    /// one needs no claim first.
    claimed: HashSet<(String, String, u64, Part)>,
    /// Index rows (`tick_days`, `candle_buckets`, `chat_buckets`) known to be written.
    known: HashSet<(&'static str, String, i64)>,
    /// The last id this writer made.
    pub(super) last_id: i64,
}

impl Writer {
    /// Applies `batch` in order. Each write gets its own outcome; the first one that
    /// fails (not a refusal: an error) fails the batch from there, and nothing after it is
    /// sent.
    pub(super) async fn commit(&mut self, cs: &Cs, batch: &[(Write, Reply)]) -> Outcomes {
        let mut done = Vec::with_capacity(batch.len());
        for (write, _) in batch {
            match self.apply(cs, write).await {
                Ok(outcome) => done.push(outcome),
                Err(error) => return Err(Failed { done, error }),
            }
        }
        Ok(done)
    }

    async fn apply(&mut self, cs: &Cs, write: &Write) -> Answer {
        let (fence, inner) = match write {
            Write::Fenced { fence, write } => (Some(fence), write.as_ref()),
            other => (None, other),
        };
        // The lease of the entity itself (journals, snapshots), if this write is fenced by it.
        let own = |kind: &str, key: &str| -> Result<Option<u64>, StoreError> {
            match fence {
                None => Ok(None),
                Some(f) if f.kind == kind && f.key == key => Ok(Some(f.epoch)),
                Some(_) => Err(unfenceable("a journal or snapshot")),
            }
        };
        match inner {
            Write::Fenced { .. } => Ok(Err(unfenceable("a write fenced twice"))),
            Write::Ticks(ticks) => self.ticks(cs, fence, ticks).await,
            Write::Candles { symbol, candles } => self.candles(cs, fence, symbol, candles).await,
            Write::AcquireLease { kind, key, node } => {
                if fence.is_some() {
                    return Ok(Err(unfenceable("a take-over")));
                }
                let epoch = acquire(cs, kind, key, node).await?;
                self.claimed
                    .retain(|(k, key_, e, _)| !(k == kind && key_ == key && *e < epoch));
                Ok(Ok(epoch))
            }
            Write::ReleaseLease { kind, key, epoch } => {
                if fence.is_some() {
                    return Ok(Err(unfenceable("a release")));
                }
                self.claimed
                    .retain(|(k, key_, e, _)| !(k == kind && key_ == key && e <= epoch));
                release(cs, kind, key, *epoch).await.map(Ok)
            }
            Write::Journal {
                kind,
                key,
                seq,
                entry,
            } => match own(kind, key) {
                Ok(epoch) => journal(cs, kind, key, *seq, entry, epoch).await,
                Err(refusal) => Ok(Err(refusal)),
            },
            Write::Snapshot {
                kind,
                key,
                seq,
                state,
            } => match own(kind, key) {
                Ok(epoch) => snapshot(cs, kind, key, *seq, state, epoch).await,
                Err(refusal) => Ok(Err(refusal)),
            },
            Write::Chat(m) => self.chat(cs, fence, m).await,
            Write::CreateUser {
                username,
                password_hash,
                created_at,
            } => match fence {
                Some(_) => Ok(Err(unfenceable("a registration"))),
                None => {
                    create_user(cs, username, password_hash, *created_at, &mut self.last_id).await
                }
            },
            Write::CreateAlert(a) => super::alerts::create(self, cs, fence, a).await,
            Write::AlertFired { firing, one_shot } => {
                super::alerts::fired(self, cs, fence, firing, *one_shot).await
            }
            Write::DeleteAlert { alert_id } => {
                super::alerts::delete(self, cs, fence, *alert_id).await
            }
            Write::Watchlist { user_id, symbols } => match fence {
                Some(_) => Ok(Err(unfenceable("a watchlist"))),
                None => {
                    // One row: a list replaced whole by one write, so a reader sees the
                    // old list or the new one.
                    exec(
                        cs,
                        "INSERT INTO watchlists (user_id, symbols) VALUES (?, ?)",
                        (*user_id as i64, symbols),
                        "writing a watchlist",
                    )
                    .await?;
                    Ok(Ok(0))
                }
            },
            Write::Holdings { user_id, ts, data } => match fence {
                Some(_) => Ok(Err(unfenceable("a holdings point"))),
                None => {
                    exec(
                        cs,
                        "INSERT INTO holdings (user_id, ts, data) VALUES (?, ?, ?)",
                        (*user_id as i64, *ts, data),
                        "writing a holdings point",
                    )
                    .await?;
                    Ok(Ok(0))
                }
            },
            Write::Notify(n) => match fence {
                Some(_) => Ok(Err(unfenceable("an inbox entry"))),
                None => super::alerts::notify(cs, n).await,
            },
            // Configuration refuses the relay on ScyllaDB (kafka.relay_events); a write
            // that still carries events fails rather than drops them.
            Write::WithEvents { .. } | Write::Relayed { .. } => Ok(Err(StoreError::Backend(
                "the Kafka event outbox is built for SQLite and PostgreSQL, not ScyllaDB".into(),
            ))),
            // ScyllaStore::submit runs sweeps beside the queue; one wrapped in a fence gets
            // here, and its failure is its own, never the batch's.
            Write::PruneInbox {
                before,
                keep_per_user,
            } => Ok(super::retention::prune_inbox(cs, *before, *keep_per_user).await),
            Write::PruneHoldings { before } => {
                Ok(super::retention::prune_holdings(cs, *before).await)
            }
        }
    }

    /// The epoch a write to `part` is conditioned on (`None` unfenced), claiming the part
    /// for `fence` first; the refusal inside when a newer epoch holds it or the partition
    /// does not exist.
    pub(super) async fn hold(
        &mut self,
        cs: &Cs,
        fence: Option<&Fence>,
        part: &Part,
    ) -> Result<Result<Option<u64>, StoreError>, StoreError> {
        let Some(f) = fence else {
            return Ok(Ok(None));
        };
        let claim = (f.kind.clone(), f.key.clone(), f.epoch, part.clone());
        if self.claimed.contains(&claim) {
            return Ok(Ok(Some(f.epoch)));
        }
        if let Some(current) = fence::register(cs, f, part).await? {
            return Ok(Err(f.refusal(Some(current))));
        }
        match fence::raise(cs, part, f.epoch).await? {
            Claim::Held => {
                if self.claimed.len() >= KNOWN_MAX {
                    self.claimed.clear();
                }
                self.claimed.insert(claim);
                Ok(Ok(Some(f.epoch)))
            }
            Claim::Newer(current) => Ok(Err(f.refusal(Some(current)))),
            Claim::Missing => Ok(Err(StoreError::Conflict(format!(
                "{} does not exist",
                part.encode()
            )))),
        }
    }

    /// For a write that turned out to change nothing (a replay): refuses it as a write
    /// would be refused, if `fence` no longer holds `part`, so a stale activation learns it
    /// was fenced even when it only repeats itself.
    pub(super) async fn confirm(
        &mut self,
        cs: &Cs,
        fence: Option<&Fence>,
        part: &Part,
    ) -> Result<Result<(), StoreError>, StoreError> {
        let Some(f) = fence else {
            return Ok(Ok(()));
        };
        if let Err(refusal) = self.hold(cs, Some(f), part).await? {
            return Ok(Err(refusal));
        }
        let (current, _) = fence::read_fence(cs, part).await?;
        if current == Some(f.epoch) {
            Ok(Ok(()))
        } else {
            self.forget(f, part);
            Ok(Err(f.refusal(current)))
        }
    }

    /// The refusal for a fenced conditional write on `part` that was not applied because
    /// a newer epoch holds the part now (its claim is forgotten); `None` when the fence
    /// still holds (another condition failed) or the write was not fenced.
    pub(super) fn moved(
        &mut self,
        fence: Option<&Fence>,
        part: &Part,
        c: &Cas,
    ) -> Option<StoreError> {
        let f = fence?;
        let current = c.bigint("fence");
        if current == Some(f.epoch) {
            return None;
        }
        self.forget(f, part);
        Some(f.refusal(current))
    }

    /// Forgets a claim that a conditional write found lost.
    fn forget(&mut self, fence: &Fence, part: &Part) {
        self.claimed.remove(&(
            fence.kind.clone(),
            fence.key.clone(),
            fence.epoch,
            part.clone(),
        ));
    }

    /// Writes `statements` (idempotent, all in `part`) as one batch, conditional on
    /// `fence` holding the part when fenced. An unknown outcome is sent again (it is
    /// idempotent); one that then finds the fence moved cannot tell whether the first try
    /// landed, so it fails with its outcome unknown.
    pub(super) async fn part_write(
        &mut self,
        cs: &Cs,
        fence: Option<&Fence>,
        part: &Part,
        statements: Vec<Statement>,
    ) -> Result<Result<(), StoreError>, StoreError> {
        let epoch = match self.hold(cs, fence, part).await? {
            Ok(epoch) => epoch,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let mut tried_unknown = false;
        for _ in 0..3 {
            match fence::part_batch(cs, part, epoch, statements.clone(), &[], &[]).await? {
                Some(c) if c.applied => return Ok(Ok(())),
                Some(c) => {
                    // Only a fenced batch is conditional, and its only condition is the fence.
                    let refusal = self.moved(fence, part, &c).unwrap_or_else(|| {
                        StoreError::Backend(format!("a batch on {} was not applied", part.encode()))
                    });
                    if tried_unknown {
                        return Err(unknown(&format!("writing {}", part.encode())));
                    }
                    return Ok(Err(refusal));
                }
                None => tried_unknown = true,
            }
        }
        Err(unknown(&format!("writing {}", part.encode())))
    }

    /// Records that partition `part` of an index table exists (once per process). Index
    /// rows are written before their data and unfenced: an extra one lists a partition
    /// with nothing a read wants, never hides one.
    async fn index(
        &mut self,
        cs: &Cs,
        table: &'static str,
        insert: &str,
        label: &str,
        values: impl scylla::serialize::row::SerializeRow,
        part: i64,
    ) -> Result<(), StoreError> {
        let entry = (table, label.to_string(), part);
        if self.known.contains(&entry) {
            return Ok(());
        }
        exec(cs, insert, values, "writing a partition index").await?;
        if self.known.len() >= KNOWN_MAX {
            self.known.clear();
        }
        self.known.insert(entry);
        Ok(())
    }

    async fn ticks(&mut self, cs: &Cs, fence: Option<&Fence>, ticks: &[crate::Tick]) -> Answer {
        // One conditional batch per (symbol, day) and chunk: each lands whole or not at
        // all (a write across a day boundary is two, and may be refused after the first).
        let mut parts: Vec<((&str, i64), Vec<&crate::Tick>)> = Vec::new();
        for t in ticks {
            let part = (t.symbol.as_str(), day(t.ts));
            match parts.iter_mut().find(|(p, _)| *p == part) {
                Some((_, v)) => v.push(t),
                None => parts.push((part, vec![t])),
            }
        }
        for ((symbol, day), part) in parts {
            self.index(
                cs,
                "tick_days",
                "INSERT INTO tick_days (symbol, day) VALUES (?, ?)",
                symbol,
                (symbol, day),
                day,
            )
            .await?;
            // A trade id already stored is left as it is (a replay is a no-op).
            let (lo, hi) = part.iter().fold((i64::MAX, i64::MIN), |(lo, hi), t| {
                (lo.min(t.trade_id as i64), hi.max(t.trade_id as i64))
            });
            let stored: Vec<(Option<i64>,)> = rows(
                cs,
                "SELECT trade_id FROM ticks WHERE symbol = ? AND day = ?
                 AND trade_id >= ? AND trade_id <= ?",
                (symbol, day, lo, hi),
                "reading stored trade ids",
            )
            .await?;
            let stored: HashSet<i64> = stored.into_iter().filter_map(|r| r.0).collect();
            let fresh: Vec<&crate::Tick> = part
                .into_iter()
                .filter(|t| !stored.contains(&(t.trade_id as i64)))
                .collect();
            let target = Part::Ticks {
                symbol: symbol.to_string(),
                day,
            };
            if fresh.is_empty()
                && let Err(refusal) = self.confirm(cs, fence, &target).await?
            {
                return Ok(Err(refusal));
            }
            for chunk in fresh.chunks(BATCH_ROWS) {
                let statements = chunk
                    .iter()
                    .map(|t| {
                        (
                            "INSERT INTO ticks (symbol, day, trade_id, ts, price, qty, side, feed_seq,
                                                book_trade)
                             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                                .to_string(),
                            vec![
                                text(symbol),
                                big(day),
                                big(t.trade_id as i64),
                                big(t.ts),
                                big(t.price as i64),
                                big(t.qty as i64),
                                CqlValue::TinyInt(side_code(t.side)),
                                big(t.feed_seq as i64),
                                big(t.book_trade as i64),
                            ],
                        )
                    })
                    .collect();
                if let Err(refusal) = self.part_write(cs, fence, &target, statements).await? {
                    return Ok(Err(refusal));
                }
            }
        }
        Ok(Ok(0))
    }

    async fn candles(
        &mut self,
        cs: &Cs,
        fence: Option<&Fence>,
        symbol: &str,
        candles: &[(Interval, crate::Candle)],
    ) -> Answer {
        // In order: a later candle of the same bucket replaces an earlier one, so a batch
        // holds each row once (the last one).
        let mut last: HashMap<(Interval, i64), usize> = HashMap::new();
        for (i, (interval, c)) in candles.iter().enumerate() {
            last.insert((*interval, c.open_time), i);
        }
        let mut keep: Vec<usize> = last.into_values().collect();
        keep.sort_unstable();
        let mut parts: Vec<((Interval, i64), Vec<&crate::Candle>)> = Vec::new();
        for i in keep {
            let (interval, c) = &candles[i];
            let part = (*interval, candle_bucket(*interval, c.open_time));
            match parts.iter_mut().find(|(p, _)| *p == part) {
                Some((_, v)) => v.push(c),
                None => parts.push((part, vec![c])),
            }
        }
        for ((interval, bucket), part) in parts {
            let label = format!("{symbol}\u{0}{}", interval.as_str());
            self.index(
                cs,
                "candle_buckets",
                "INSERT INTO candle_buckets (symbol, period, bucket) VALUES (?, ?, ?)",
                &label,
                (symbol, interval.as_str(), bucket),
                bucket,
            )
            .await?;
            let target = Part::Candles {
                symbol: symbol.to_string(),
                period: interval.as_str().to_string(),
                bucket,
            };
            for chunk in part.chunks(BATCH_ROWS) {
                let statements = chunk
                    .iter()
                    .map(|c| {
                        (
                            "INSERT INTO candles (symbol, period, bucket, open_time, open, high,
                             low, close, volume) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                                .to_string(),
                            vec![
                                text(symbol),
                                text(interval.as_str()),
                                big(bucket),
                                big(c.open_time),
                                big(c.open as i64),
                                big(c.high as i64),
                                big(c.low as i64),
                                big(c.close as i64),
                                big(c.volume as i64),
                            ],
                        )
                    })
                    .collect();
                if let Err(refusal) = self.part_write(cs, fence, &target, statements).await? {
                    return Ok(Err(refusal));
                }
            }
        }
        Ok(Ok(0))
    }

    async fn chat(&mut self, cs: &Cs, fence: Option<&Fence>, m: &crate::ChatMessage) -> Answer {
        let bucket = chat_bucket(m.message_id);
        self.index(
            cs,
            "chat_buckets",
            "INSERT INTO chat_buckets (room, bucket) VALUES (?, ?)",
            &m.room,
            (&m.room, bucket),
            bucket,
        )
        .await?;
        // A message id already stored is left as it is (a replay is a no-op).
        let stored: Vec<(Option<i64>,)> = rows(
            cs,
            "SELECT message_id FROM chat WHERE room = ? AND bucket = ? AND message_id = ?",
            (&m.room, bucket, m.message_id as i64),
            "reading a stored chat message",
        )
        .await?;
        let target = Part::Chat {
            room: m.room.clone(),
            bucket,
        };
        if stored.iter().any(|r| r.0.is_some()) {
            return Ok(self.confirm(cs, fence, &target).await?.map(|()| 0));
        }
        let statement = (
            "INSERT INTO chat (room, bucket, message_id, user_id, username, text, ts)
             VALUES (?, ?, ?, ?, ?, ?, ?)"
                .to_string(),
            vec![
                text(&m.room),
                big(bucket),
                big(m.message_id as i64),
                big(m.user_id as i64),
                text(&m.username),
                text(&m.text),
                big(m.ts),
            ],
        );
        Ok(self
            .part_write(cs, fence, &target, vec![statement])
            .await?
            .map(|()| 0))
    }
}

/// Reads a lease back at SERIAL: `(owner, epoch)`.
async fn read_lease(cs: &Cs, kind: &str, key: &str) -> Result<(String, Option<u64>), StoreError> {
    let found: Vec<(Option<String>, Option<i64>)> = rows(
        cs,
        serial("SELECT owner, epoch FROM entities WHERE kind = ? AND key = ? LIMIT 1"),
        (kind, key),
        "reading a lease",
    )
    .await?;
    Ok(found
        .into_iter()
        .next()
        .map(|(o, e)| (o.unwrap_or_default(), e.map(|e| e as u64)))
        .unwrap_or_default())
}

/// Takes the lease: read the epoch, then compare-and-set it one higher, again if another
/// take-over got there first; then fences the partitions older epochs registered.
pub(super) async fn acquire(cs: &Cs, kind: &str, key: &str, node: &str) -> Result<u64, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let (_, epoch) = read_lease(cs, kind, key).await?;
        let next = epoch.unwrap_or(0) + 1;
        let outcome = match epoch {
            None => {
                // An UPDATE, not an INSERT … IF NOT EXISTS: the partition may exist
                // already without a lease (journal rows or a snapshot written unfenced).
                cas(
                    cs,
                    "UPDATE entities SET owner = ?, epoch = 1 WHERE kind = ? AND key = ?
                     IF epoch = null",
                    (node, kind, key),
                    "taking a lease",
                )
                .await?
            }
            Some(e) => {
                cas(
                    cs,
                    "UPDATE entities SET owner = ?, epoch = ? WHERE kind = ? AND key = ?
                     IF epoch = ?",
                    (node, next as i64, kind, key, e as i64),
                    "taking a lease",
                )
                .await?
            }
        };
        let taken = match outcome {
            Some(c) => c.applied,
            None => {
                let (owner, now) = read_lease(cs, kind, key).await?;
                now == Some(next) && owner == node
            }
        };
        if taken {
            // Before the take-over is answered, no partition the older epochs registered
            // takes their writes any more.
            fence::fence_registered(cs, kind, key, next).await?;
            return Ok(next);
        }
    }
    Err(StoreError::Backend(format!(
        "{kind}/{key}: taking the lease lost {CAS_ATTEMPTS} races in a row"
    )))
}

async fn release(cs: &Cs, kind: &str, key: &str, epoch: u64) -> Result<u64, StoreError> {
    // Not applied: a newer activation holds it, nothing to release. Unknown: the next
    // take-over fences anyway.
    cas(
        cs,
        "UPDATE entities SET owner = '' WHERE kind = ? AND key = ? IF epoch = ?",
        (kind, key, epoch as i64),
        "releasing a lease",
    )
    .await?;
    Ok(0)
}

fn fenced_at(kind: &str, key: &str, epoch: u64, current: Option<u64>) -> StoreError {
    StoreError::Fenced {
        kind: kind.into(),
        key: key.into(),
        epoch,
        current: current.unwrap_or(0),
    }
}

async fn journal(
    cs: &Cs,
    kind: &str,
    key: &str,
    seq: u64,
    entry: &[u8],
    epoch: Option<u64>,
) -> Result<Result<u64, StoreError>, StoreError> {
    let taken = || {
        Ok(Err(StoreError::Conflict(format!(
            "{kind}/{key}: journal entry {seq} already exists"
        ))))
    };
    let outcome =
        match epoch {
            Some(e) => {
                cas(
                    cs,
                    "UPDATE entities SET entry = ? WHERE kind = ? AND key = ? AND seq = ?
                 IF epoch = ? AND entry = null",
                    (entry, kind, key, seq as i64, e as i64),
                    "appending to a journal",
                )
                .await?
            }
            None => cas(
                cs,
                "INSERT INTO entities (kind, key, seq, entry) VALUES (?, ?, ?, ?) IF NOT EXISTS",
                (kind, key, seq as i64, entry),
                "appending to a journal",
            )
            .await?,
        };
    match outcome {
        Some(c) if c.applied => Ok(Ok(0)),
        Some(c) => match epoch {
            Some(e) if c.bigint("epoch") != Some(e) => {
                Ok(Err(fenced_at(kind, key, e, c.bigint("epoch"))))
            }
            _ => taken(),
        },
        None => {
            let found: Vec<(Option<i64>, Option<Vec<u8>>)> = rows(
                cs,
                serial("SELECT epoch, entry FROM entities WHERE kind = ? AND key = ? AND seq = ?"),
                (kind, key, seq as i64),
                "reading a journal entry back",
            )
            .await?;
            match found.first() {
                Some((_, Some(stored))) if stored.as_slice() == entry => Ok(Ok(0)),
                // As on PostgreSQL, the fence is judged before the position.
                Some((now, Some(_))) => match epoch {
                    Some(e) if now.map(|n| n as u64) != Some(e) => {
                        Ok(Err(fenced_at(kind, key, e, now.map(|n| n as u64))))
                    }
                    _ => taken(),
                },
                _ => match epoch {
                    Some(e) => {
                        let (_, now) = read_lease(cs, kind, key).await?;
                        if now != Some(e) {
                            Ok(Err(fenced_at(kind, key, e, now)))
                        } else {
                            Err(unknown("appending to a journal"))
                        }
                    }
                    None => Err(unknown("appending to a journal")),
                },
            }
        }
    }
}

async fn snapshot(
    cs: &Cs,
    kind: &str,
    key: &str,
    seq: u64,
    state: &[u8],
    epoch: Option<u64>,
) -> Result<Result<u64, StoreError>, StoreError> {
    match epoch {
        Some(e) => {
            let outcome = cas(
                cs,
                "UPDATE entities SET snap_seq = ?, snap = ? WHERE kind = ? AND key = ?
                 IF epoch = ?",
                (seq as i64, state, kind, key, e as i64),
                "writing a snapshot",
            )
            .await?;
            match outcome {
                Some(c) if c.applied => {}
                Some(c) => return Ok(Err(fenced_at(kind, key, e, c.bigint("epoch")))),
                None => {
                    let found: Vec<(Option<i64>, Option<i64>)> = rows(
                        cs,
                        serial(
                            "SELECT epoch, snap_seq FROM entities WHERE kind = ? AND key = ? LIMIT 1",
                        ),
                        (kind, key),
                        "reading a snapshot back",
                    )
                    .await?;
                    let (now, stored) = found.first().copied().unwrap_or_default();
                    if stored != Some(seq as i64) {
                        return match now {
                            Some(n) if n as u64 != e => {
                                Ok(Err(fenced_at(kind, key, e, Some(n as u64))))
                            }
                            _ => Err(unknown("writing a snapshot")),
                        };
                    }
                }
            }
        }
        None => {
            exec(
                cs,
                "UPDATE entities SET snap_seq = ?, snap = ? WHERE kind = ? AND key = ?",
                (seq as i64, state, kind, key),
                "writing a snapshot",
            )
            .await?;
        }
    }
    // The entries the snapshot covers; reads skip them anyway (they read after it).
    exec(
        cs,
        "DELETE FROM entities WHERE kind = ? AND key = ? AND seq <= ?",
        (kind, key, seq as i64),
        "dropping covered journal entries",
    )
    .await?;
    Ok(Ok(0))
}

async fn create_user(
    cs: &Cs,
    username: &str,
    password_hash: &str,
    created_at: i64,
    last_id: &mut i64,
) -> Result<Result<u64, StoreError>, StoreError> {
    let id = claim(
        cs,
        "INSERT INTO user_ids (user_id) VALUES (?) IF NOT EXISTS",
        "claiming a user id",
        last_id,
    )
    .await?;
    let outcome = cas(
        cs,
        "INSERT INTO users (username, user_id, password_hash, created_at) VALUES (?, ?, ?, ?)
         IF NOT EXISTS",
        (username, id, password_hash, created_at),
        "registering a user",
    )
    .await?;
    let taken = || {
        Ok(Err(StoreError::Conflict(format!(
            "username '{username}' is taken"
        ))))
    };
    match outcome {
        Some(c) if c.applied => Ok(Ok(id as u64)),
        Some(_) => taken(),
        None => {
            let found: Vec<(Option<i64>,)> = rows(
                cs,
                serial("SELECT user_id FROM users WHERE username = ?"),
                (username,),
                "reading a user back",
            )
            .await?;
            match found.first() {
                Some((Some(stored),)) if *stored == id => Ok(Ok(id as u64)),
                Some(_) => taken(),
                None => Err(unknown("registering a user")),
            }
        }
    }
}

/// A fresh id claimed by `insert` (`… VALUES (?) IF NOT EXISTS`), another on a collision.
async fn claim(cs: &Cs, insert: &str, context: &str, last_id: &mut i64) -> Result<i64, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let id = new_id(last_id);
        match cas(cs, insert, (id,), context).await? {
            Some(c) if c.applied => return Ok(id),
            // Taken, or unknown: a claim that may have landed is simply not used.
            _ => continue,
        }
    }
    Err(StoreError::Backend(format!(
        "{context}: no free id in {CAS_ATTEMPTS} tries"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_bounded() {
        assert_eq!(day(0), 0);
        assert_eq!(day(DAY_MS - 1), 0);
        assert_eq!(day(DAY_MS), 1);
        assert_eq!(day(-1), -1);
        assert_eq!(chat_bucket(CHAT_BUCKET - 1), 0);
        assert_eq!(chat_bucket(CHAT_BUCKET), 1);
        let m1 = Interval::M1.millis();
        assert_eq!(candle_bucket(Interval::M1, m1 * (CANDLE_BUCKET - 1)), 0);
        assert_eq!(candle_bucket(Interval::M1, m1 * CANDLE_BUCKET), 1);
    }

    #[test]
    fn new_ids_fit_javascript_numbers() {
        let mut last = 0;
        for _ in 0..1000 {
            let before = last;
            let id = new_id(&mut last);
            assert!(id > 0 && id < (1 << 53), "{id}");
            assert!(id > before, "ids of one writer rise");
        }
    }
}
