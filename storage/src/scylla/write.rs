//! Applying writes to ScyllaDB, in order, each with its own outcome; the first write that
//! fails stops the batch.
//!
//! **Fencing.** Journals, snapshots and leases share one partition per entity
//! (`entities`, the lease and snapshot in static columns), so each of their writes is a
//! lightweight transaction conditional on the lease epoch (`IF epoch = ?`): a write from an
//! older epoch never lands there, and a take-over (`IF epoch = <read>`) is a
//! compare-and-set. The other tables (ticks, candles, chat, alerts, inboxes) cannot sit in
//! the lease's partition. A fenced write to them is sent only after the lease is read at
//! SERIAL consistency in the same batch and found at the write's epoch (a stale activation
//! that learns of a take-over writes nothing more), and it carries a write timestamp
//! ordered by epoch first (the protocol's client-side timestamp, not a `USING TIMESTAMP`
//! clause, which ScyllaDB refuses that far in the future), so wherever an older and a newer epoch write
//! the same row, the newer one wins whatever order they arrive in. What that leaves open: a
//! write whose SERIAL check completed *before* a take-over committed may still reach its
//! replicas after it, at a row the new epoch never writes. Only a write already in flight
//! at the take-over can do that.
//!
//! An LWT whose outcome the driver could not learn (a timeout, a lost connection) is read
//! back at SERIAL, never assumed; if the read back cannot tell, the write (and its batch)
//! fails with its outcome unknown, which halts its lease.

use super::{Cs, cql, exec, rows, serial};
use crate::queue::Reply;
use crate::records::{Interval, Side};
use crate::{AlertStatus, Fence, StoreError, Write};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::unprepared::Statement;
use scylla::value::{CqlValue, Row};
use std::collections::{HashMap, HashSet};

/// Rows in one single-partition batch at most.
const BATCH_ROWS: usize = 1000;
/// Index rows remembered as written (the set is cleared when it grows past this).
const KNOWN_MAX: usize = 100_000;
/// Write timestamps of fenced writes start above any wall-clock microsecond timestamp.
const FENCED_BASE: i64 = 1 << 52;
/// Fenced writes one activation can order (past it they share the last timestamp).
const PER_EPOCH: u64 = (1 << 30) - 1;
/// Attempts at a lease compare-and-set that another take-over beat.
const CAS_ATTEMPTS: usize = 20;

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

/// A new id without a central counter: milliseconds since 2025 and 10 random bits (below
/// 2^53, so JavaScript clients read it exactly), above `last` (ids of one writer rise);
/// uniqueness across writers is then claimed by LWT.
fn new_id(last: &mut i64) -> i64 {
    const EPOCH_2025_MS: i64 = 1_735_689_600_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let ms = now.saturating_sub(EPOCH_2025_MS).max(1);
    let id = ((ms << 10) | fastrand::i64(0..1024)).max(*last + 1);
    *last = id;
    id
}

/// Whether an LWT applied, and the current values of the columns it compared.
struct Cas {
    applied: bool,
    current: HashMap<String, Option<CqlValue>>,
}

impl Cas {
    fn bigint(&self, column: &str) -> Option<u64> {
        match self.current.get(column) {
            Some(Some(CqlValue::BigInt(v))) => Some(*v as u64),
            _ => None,
        }
    }
}

/// Runs a lightweight transaction; `None` when its outcome is unknown (to read back).
async fn cas(
    cs: &Cs,
    statement: &str,
    values: impl scylla::serialize::row::SerializeRow,
    context: &str,
) -> Result<Option<Cas>, StoreError> {
    let result = match cs.execute_unpaged(statement, values).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, context, "lightweight transaction outcome unknown; reading back");
            return Ok(None);
        }
    };
    let result = result.into_rows_result().map_err(|e| cql(context, e))?;
    let names: Vec<String> = result
        .column_specs()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let row: Option<Row> = result.maybe_first_row().map_err(|e| cql(context, e))?;
    let Some(row) = row else {
        return Err(StoreError::Backend(format!(
            "{context}: no [applied] column"
        )));
    };
    let mut current = HashMap::new();
    let mut applied = false;
    for (name, value) in names.into_iter().zip(row.columns) {
        if name == "[applied]" {
            applied = matches!(value, Some(CqlValue::Boolean(true)));
        } else {
            current.insert(name, value);
        }
    }
    Ok(Some(Cas { applied, current }))
}

fn unknown(context: &str) -> StoreError {
    StoreError::Backend(format!(
        "{context}: outcome unknown (the read back could not tell)"
    ))
}

/// The writer's memory across batches.
#[derive(Default)]
pub(super) struct Writer {
    /// Fenced writes so far per lease, for their timestamps: `(kind, key)` → (epoch, count).
    counts: HashMap<(String, String), (u64, u64)>,
    /// Index rows (`tick_days`, `candle_buckets`, `chat_buckets`) known to be written.
    known: HashSet<(&'static str, String, i64)>,
    /// The last id this writer made.
    last_id: i64,
}

/// The lease epochs read in this batch (at SERIAL), by `(kind, key)`.
type Epochs = HashMap<(String, String), Option<u64>>;

impl Writer {
    /// Applies `batch` in order. Each write gets its own outcome; the first one that
    /// fails (not a refusal: an error) fails the batch and nothing after it is sent.
    pub(super) async fn commit(
        &mut self,
        cs: &Cs,
        batch: &[(Write, Reply)],
    ) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
        let mut epochs = Epochs::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for (write, _) in batch {
            outcomes.push(self.apply(cs, write, &mut epochs).await?);
        }
        Ok(outcomes)
    }

    async fn lease_epoch(
        cs: &Cs,
        epochs: &mut Epochs,
        kind: &str,
        key: &str,
    ) -> Result<Option<u64>, StoreError> {
        let k = (kind.to_string(), key.to_string());
        if let Some(e) = epochs.get(&k) {
            return Ok(*e);
        }
        let found: Vec<(Option<i64>,)> = rows(
            cs,
            serial("SELECT epoch FROM entities WHERE kind = ? AND key = ? LIMIT 1"),
            (kind, key),
            "reading a lease",
        )
        .await?;
        let epoch = found.first().and_then(|r| r.0).map(|e| e as u64);
        epochs.insert(k, epoch);
        Ok(epoch)
    }

    /// The write timestamp of the next fenced write under `fence`.
    fn timestamp(&mut self, fence: &Fence) -> i64 {
        let slot = self
            .counts
            .entry((fence.kind.clone(), fence.key.clone()))
            .or_insert((fence.epoch, 0));
        if slot.0 != fence.epoch {
            *slot = (fence.epoch, 0);
        }
        slot.1 = (slot.1 + 1).min(PER_EPOCH);
        FENCED_BASE
            .saturating_add((fence.epoch as i64).saturating_mul(1 << 30))
            .saturating_add(slot.1 as i64)
    }

    async fn apply(
        &mut self,
        cs: &Cs,
        write: &Write,
        epochs: &mut Epochs,
    ) -> Result<Result<u64, StoreError>, StoreError> {
        // Peel the fences: the entity's own one goes into its LWT; any other is checked.
        let mut inner = write;
        let mut fences = Vec::new();
        while let Write::Fenced { fence, write } = inner {
            fences.push(fence);
            inner = write;
        }
        let own = |kind: &str, key: &str| -> Option<u64> {
            fences
                .iter()
                .find(|f| f.kind == kind && f.key == key)
                .map(|f| f.epoch)
        };
        let conditioned = match inner {
            Write::Journal { kind, key, .. } | Write::Snapshot { kind, key, .. } => {
                own(kind, key).map(|_| (kind.as_str(), key.as_str()))
            }
            _ => None,
        };
        for fence in &fences {
            if conditioned == Some((fence.kind.as_str(), fence.key.as_str())) {
                continue;
            }
            let current = Self::lease_epoch(cs, epochs, &fence.kind, &fence.key).await?;
            if current != Some(fence.epoch) {
                return Ok(Err(StoreError::Fenced {
                    kind: fence.kind.clone(),
                    key: fence.key.clone(),
                    epoch: fence.epoch,
                    current: current.unwrap_or(0),
                }));
            }
        }
        let timestamp = fences.first().map(|f| self.timestamp(f));
        match inner {
            Write::Fenced { .. } => Ok(Err(StoreError::Backend("unwrapped fence".into()))),
            Write::Ticks(ticks) => self.ticks(cs, ticks, timestamp).await.map(Ok),
            Write::Candles { symbol, candles } => {
                self.candles(cs, symbol, candles, timestamp).await.map(Ok)
            }
            Write::AcquireLease { kind, key, node } => {
                let epoch = acquire(cs, kind, key, node).await?;
                epochs.insert((kind.clone(), key.clone()), Some(epoch));
                Ok(Ok(epoch))
            }
            Write::ReleaseLease { kind, key, epoch } => {
                self.counts.remove(&(kind.clone(), key.clone()));
                release(cs, kind, key, *epoch).await.map(Ok)
            }
            Write::Journal {
                kind,
                key,
                seq,
                entry,
            } => journal(cs, kind, key, *seq, entry, own(kind, key)).await,
            Write::Snapshot {
                kind,
                key,
                seq,
                state,
            } => snapshot(cs, kind, key, *seq, state, own(kind, key)).await,
            Write::Chat(m) => {
                let bucket = chat_bucket(m.message_id);
                let mut s = Statement::new(
                    "INSERT INTO chat (room, bucket, message_id, user_id, username, text, ts)
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                );
                s.set_timestamp(timestamp);
                self.index(
                    cs,
                    "chat_buckets",
                    "INSERT INTO chat_buckets (room, bucket) VALUES (?, ?)",
                    &m.room,
                    bucket,
                )
                .await?;
                exec(
                    cs,
                    s,
                    (
                        &m.room,
                        bucket,
                        m.message_id as i64,
                        m.user_id as i64,
                        &m.username,
                        &m.text,
                        m.ts,
                    ),
                    "writing a chat message",
                )
                .await?;
                Ok(Ok(0))
            }
            Write::CreateUser {
                username,
                password_hash,
                created_at,
            } => create_user(cs, username, password_hash, *created_at, &mut self.last_id).await,
            Write::CreateAlert(a) => {
                let id = create_alert(cs, a, &mut self.last_id).await?;
                for (cql_text, part) in [
                    (
                        "INSERT INTO alerts_by_user (user_id, alert_id) VALUES (?, ?)",
                        None,
                    ),
                    (
                        "INSERT INTO alerts_armed (symbol, alert_id) VALUES (?, ?)",
                        Some(&a.symbol),
                    ),
                ] {
                    let mut s = Statement::new(cql_text);
                    s.set_timestamp(timestamp);
                    match part {
                        None => exec(cs, s, (a.user_id as i64, id), "indexing an alert").await?,
                        Some(symbol) => exec(cs, s, (symbol, id), "indexing an alert").await?,
                    };
                }
                Ok(Ok(id as u64))
            }
            Write::AlertFired {
                firing: f,
                one_shot,
            } => {
                let claimed = cas(
                    cs,
                    "INSERT INTO alert_firings (alert_id, n) VALUES (?, ?) IF NOT EXISTS",
                    (f.alert_id as i64, f.n as i64),
                    "recording an alert firing",
                )
                .await?;
                let added = match claimed {
                    Some(c) => c.applied,
                    // Read back: the firing is there either way; whether this attempt
                    // added it cannot be told, so the rest is written (idempotent).
                    None => {
                        let found: Vec<(i64,)> = rows(
                            cs,
                            serial("SELECT n FROM alert_firings WHERE alert_id = ? AND n = ?"),
                            (f.alert_id as i64, f.n as i64),
                            "reading an alert firing back",
                        )
                        .await?;
                        if found.is_empty() {
                            return Err(unknown("recording an alert firing"));
                        }
                        true
                    }
                };
                if added {
                    self.fired(cs, f, *one_shot, timestamp).await?;
                }
                Ok(Ok(0))
            }
            Write::DeleteAlert { alert_id } => {
                let found: Vec<(Option<String>,)> = rows(
                    cs,
                    "SELECT symbol FROM alerts WHERE alert_id = ?",
                    (*alert_id as i64,),
                    "reading an alert",
                )
                .await?;
                let mut s =
                    Statement::new("UPDATE alerts SET status = 'deleted' WHERE alert_id = ?");
                s.set_timestamp(timestamp);
                exec(cs, s, (*alert_id as i64,), "deleting an alert").await?;
                if let Some((Some(symbol),)) = found.first() {
                    let mut s = Statement::new(
                        "DELETE FROM alerts_armed WHERE symbol = ? AND alert_id = ?",
                    );
                    s.set_timestamp(timestamp);
                    exec(cs, s, (symbol, *alert_id as i64), "unindexing an alert").await?;
                }
                Ok(Ok(0))
            }
            Write::Notify(n) => {
                // The key is claimed once per user: a replayed entry is not added twice.
                let claimed = cas(
                    cs,
                    "INSERT INTO notification_keys (user_id, key) VALUES (?, ?) IF NOT EXISTS",
                    (n.user_id as i64, &n.key),
                    "claiming an inbox key",
                )
                .await?;
                let add = match claimed {
                    Some(c) => c.applied,
                    None => true, // the entry's row is idempotent: write it again
                };
                if add {
                    let mut s = Statement::new(
                        "INSERT INTO notifications (user_id, ts, key, kind, body)
                         VALUES (?, ?, ?, ?, ?)",
                    );
                    s.set_timestamp(timestamp);
                    exec(
                        cs,
                        s,
                        (n.user_id as i64, n.ts, &n.key, &n.kind, &n.body),
                        "writing an inbox entry",
                    )
                    .await?;
                }
                Ok(Ok(0))
            }
        }
    }

    /// Records that partition `part` of an index table exists (once per process).
    async fn index(
        &mut self,
        cs: &Cs,
        table: &'static str,
        insert: &str,
        key: &str,
        part: i64,
    ) -> Result<(), StoreError> {
        self.index_with(cs, table, insert, key, (key, part), part)
            .await
    }

    /// As [`Writer::index`], for an index whose partition key is more than one column:
    /// `label` names the partition in memory, `values` bind the insert.
    async fn index_with(
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

    async fn ticks(
        &mut self,
        cs: &Cs,
        ticks: &[crate::Tick],
        timestamp: Option<i64>,
    ) -> Result<u64, StoreError> {
        // One single-partition batch per (symbol, day): each is applied whole or not at all.
        let mut parts: Vec<((&str, i64), Vec<&crate::Tick>)> = Vec::new();
        for t in ticks {
            let part = (t.symbol.as_str(), day(t.ts));
            match parts.iter_mut().find(|(p, _)| *p == part) {
                Some((_, v)) => v.push(t),
                None => parts.push((part, vec![t])),
            }
        }
        for ((symbol, day), part) in parts {
            // The index first: a crash after it leaves an empty partition listed, never a
            // partition no read can find.
            self.index(
                cs,
                "tick_days",
                "INSERT INTO tick_days (symbol, day) VALUES (?, ?)",
                symbol,
                day,
            )
            .await?;
            // A trade id already stored is left as it is (a replay is a no-op).
            let (lo, hi) = part.iter().fold((i64::MAX, i64::MIN), |(lo, hi), t| {
                (lo.min(t.trade_id as i64), hi.max(t.trade_id as i64))
            });
            let stored: Vec<(i64,)> = rows(
                cs,
                "SELECT trade_id FROM ticks WHERE symbol = ? AND day = ?
                 AND trade_id >= ? AND trade_id <= ?",
                (symbol, day, lo, hi),
                "reading stored trade ids",
            )
            .await?;
            let stored: HashSet<i64> = stored.into_iter().map(|r| r.0).collect();
            let fresh: Vec<&crate::Tick> = part
                .into_iter()
                .filter(|t| !stored.contains(&(t.trade_id as i64)))
                .collect();
            for chunk in fresh.chunks(BATCH_ROWS) {
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut values = Vec::with_capacity(chunk.len());
                for t in chunk {
                    batch.append_statement(
                        "INSERT INTO ticks (symbol, day, trade_id, ts, price, qty, side)
                         VALUES (?, ?, ?, ?, ?, ?, ?)",
                    );
                    values.push((
                        symbol,
                        day,
                        t.trade_id as i64,
                        t.ts,
                        t.price as i64,
                        t.qty as i64,
                        side_code(t.side),
                    ));
                }
                batch.set_timestamp(timestamp);
                cs.batch(&batch, values)
                    .await
                    .map_err(|e| cql("writing ticks", e))?;
            }
        }
        Ok(0)
    }

    async fn candles(
        &mut self,
        cs: &Cs,
        symbol: &str,
        candles: &[(Interval, crate::Candle)],
        timestamp: Option<i64>,
    ) -> Result<u64, StoreError> {
        // In order: a later candle of the same bucket replaces an earlier one, so a batch
        // holds each row once (the last one), and later statements of a batch would tie.
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
            // The index first (see `ticks`).
            let label = format!("{symbol}\u{0}{}", interval.as_str());
            self.index_with(
                cs,
                "candle_buckets",
                "INSERT INTO candle_buckets (symbol, period, bucket) VALUES (?, ?, ?)",
                &label,
                (symbol, interval.as_str(), bucket),
                bucket,
            )
            .await?;
            for chunk in part.chunks(BATCH_ROWS) {
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut values = Vec::with_capacity(chunk.len());
                for c in chunk {
                    batch.append_statement(
                        "INSERT INTO candles (symbol, period, bucket, open_time, open, high, low,
                         close, volume) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    );
                    values.push((
                        symbol,
                        interval.as_str(),
                        bucket,
                        c.open_time,
                        c.open as i64,
                        c.high as i64,
                        c.low as i64,
                        c.close as i64,
                        c.volume as i64,
                    ));
                }
                batch.set_timestamp(timestamp);
                cs.batch(&batch, values)
                    .await
                    .map_err(|e| cql("writing candles", e))?;
            }
        }
        Ok(0)
    }

    /// The rest of a firing once its `(alert_id, n)` is claimed: the user's history row and
    /// the rule's counters (a one-shot armed rule becomes fired and leaves the armed index).
    async fn fired(
        &mut self,
        cs: &Cs,
        f: &crate::AlertFiring,
        one_shot: bool,
        timestamp: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut s = Statement::new(
            "INSERT INTO alert_history (user_id, ts, alert_id, n, symbol, condition, value,
             price, reference) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        s.set_timestamp(timestamp);
        exec(
            cs,
            s,
            (
                f.user_id as i64,
                f.ts,
                f.alert_id as i64,
                f.n as i64,
                &f.symbol,
                &f.condition,
                f.value,
                f.price as i64,
                f.reference as i64,
            ),
            "writing alert history",
        )
        .await?;
        let found: Vec<(Option<String>,)> = rows(
            cs,
            "SELECT status FROM alerts WHERE alert_id = ?",
            (f.alert_id as i64,),
            "reading an alert",
        )
        .await?;
        let armed = matches!(found.first(), Some((Some(s),)) if s == AlertStatus::Armed.as_str());
        let status_to = if one_shot && armed {
            AlertStatus::Fired.as_str()
        } else {
            found
                .first()
                .and_then(|r| r.0.as_deref())
                .unwrap_or(AlertStatus::Armed.as_str())
        }
        .to_string();
        let mut s = Statement::new(
            "UPDATE alerts SET last_fired_at = ?, fired_count = ?, status = ? WHERE alert_id = ?",
        );
        s.set_timestamp(timestamp);
        exec(
            cs,
            s,
            (f.ts, f.n as i64, &status_to, f.alert_id as i64),
            "updating an alert",
        )
        .await?;
        if one_shot && armed {
            let mut s =
                Statement::new("DELETE FROM alerts_armed WHERE symbol = ? AND alert_id = ?");
            s.set_timestamp(timestamp);
            exec(cs, s, (&f.symbol, f.alert_id as i64), "unindexing an alert").await?;
        }
        Ok(())
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
/// take-over got there first.
async fn acquire(cs: &Cs, kind: &str, key: &str, node: &str) -> Result<u64, StoreError> {
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
        match outcome {
            Some(c) if c.applied => return Ok(next),
            Some(_) => continue,
            None => {
                let (owner, now) = read_lease(cs, kind, key).await?;
                if now == Some(next) && owner == node {
                    return Ok(next);
                }
            }
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

fn fenced(kind: &str, key: &str, epoch: u64, current: Option<u64>) -> StoreError {
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
                Ok(Err(fenced(kind, key, e, c.bigint("epoch"))))
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
                        Ok(Err(fenced(kind, key, e, now.map(|n| n as u64))))
                    }
                    _ => taken(),
                },
                _ => match epoch {
                    Some(e) => {
                        let (_, now) = read_lease(cs, kind, key).await?;
                        if now != Some(e) {
                            Ok(Err(fenced(kind, key, e, now)))
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
                Some(c) => return Ok(Err(fenced(kind, key, e, c.bigint("epoch")))),
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
                                Ok(Err(fenced(kind, key, e, Some(n as u64))))
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

/// Inserts a new rule under a fresh id (claimed by the insert itself).
async fn create_alert(
    cs: &Cs,
    a: &crate::AlertRecord,
    last_id: &mut i64,
) -> Result<i64, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let id = new_id(last_id);
        let outcome = cas(
            cs,
            "INSERT INTO alerts (alert_id, user_id, symbol, condition, value, repeat,
             cooldown_s, created_at, status, last_fired_at, fired_count)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'armed', 0, 0) IF NOT EXISTS",
            (
                id,
                a.user_id as i64,
                &a.symbol,
                &a.condition,
                a.value,
                a.repeat,
                a.cooldown_s as i32,
                a.created_at,
            ),
            "creating an alert",
        )
        .await?;
        match outcome {
            Some(c) if c.applied => return Ok(id),
            Some(_) => continue,
            None => {
                let found: Vec<(Option<i64>, Option<String>, Option<i64>)> = rows(
                    cs,
                    serial("SELECT user_id, symbol, created_at FROM alerts WHERE alert_id = ?"),
                    (id,),
                    "reading an alert back",
                )
                .await?;
                match found.first() {
                    Some((Some(u), Some(s), Some(t)))
                        if *u == a.user_id as i64 && *s == a.symbol && *t == a.created_at =>
                    {
                        return Ok(id);
                    }
                    Some(_) => continue,
                    None => return Err(unknown("creating an alert")),
                }
            }
        }
    }
    Err(StoreError::Backend(format!(
        "creating an alert: no free id in {CAS_ATTEMPTS} tries"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(epoch: u64) -> Fence {
        Fence {
            kind: "symbol".into(),
            key: "KRW-BTC".into(),
            epoch,
        }
    }

    #[test]
    fn a_newer_epoch_always_writes_later() {
        let mut w = Writer::default();
        let old: Vec<i64> = (0..1000).map(|_| w.timestamp(&fence(7))).collect();
        assert!(
            old.windows(2).all(|p| p[0] < p[1]),
            "in order within an epoch"
        );
        let newer = w.timestamp(&fence(8));
        assert!(old.iter().all(|t| *t < newer));
        // A straggler of the old epoch, however late it is stamped, stays below.
        assert!(w.timestamp(&fence(7)) < newer);
        // Fenced writes beat unfenced ones (stamped with wall-clock microseconds).
        let now_us = 1_800_000_000_000_000i64;
        assert!(now_us < FENCED_BASE);
    }

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
