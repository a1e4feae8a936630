//! Exact fencing for the tables that cannot sit in an entity's own partition (ticks,
//! candles, chat, the armed-alert index, alert rules).
//!
//! Every such partition carries a `fence` column (static where the table has clustering
//! rows): the newest lease epoch that has claimed it. A fenced write to it is one
//! conditional batch, `… IF fence = <epoch>`, so it lands only while its epoch holds the
//! partition. What makes that exact is the take-over:
//!
//! 1. Before an activation first writes a partition it *registers* it in its lease's own
//!    partition (`entities.parts`, a set, added by an LWT `IF epoch = <its epoch>`), then
//!    *claims* it (raises its `fence` to the epoch by compare-and-set).
//! 2. A take-over bumps the lease epoch (LWT), then raises the fence of every registered
//!    partition to the new epoch before it returns, and drops them from the set.
//!
//! A stale activation can no longer register a partition once the epoch moved (its LWT on
//! the lease partition fails), and every partition it did register is raised before the new
//! activation writes anything, so its conditional writes fail from then on. Each step is a
//! lightweight transaction, linearizable per partition, so a write of the old epoch either
//! completed before the take-over finished raising its partition or never lands. A
//! take-over that fails part way leaves the set as it was: the next one raises them.
//!
//! A fence is a bare epoch, so each such partition must be written under one lease only
//! (ticks, candles and the armed index under their symbol's, chat under its room's, a rule
//! under its own): two leases' epochs in one fence would not be comparable.

use super::{Cas, Cs, cas, cql, outcome_unknown, rows, serial, unknown};
use crate::{Fence, StoreError};
use futures_util::future::join_all;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;
use std::collections::HashMap;

/// Attempts at a compare-and-set that another writer beat.
pub(super) const CAS_ATTEMPTS: usize = 20;
/// Partitions a take-over raises at once.
const RAISE_AT_ONCE: usize = 16;

/// A partition outside an entity's own that a lease writes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Part {
    /// A day of a symbol's ticks.
    Ticks { symbol: String, day: i64 },
    /// A bucket of a symbol's candles of one period.
    Candles {
        symbol: String,
        period: String,
        bucket: i64,
    },
    /// A bucket of a room's chat.
    Chat { room: String, bucket: i64 },
    /// A symbol's index of armed alert rules (written under the symbol's lease).
    Armed { symbol: String },
    /// One alert rule and its firings (written under the rule's lease).
    Alert { alert_id: i64 },
}

impl Part {
    /// How the lease's `parts` set names it: fixed fields first, the free text last.
    pub(super) fn encode(&self) -> String {
        match self {
            Part::Ticks { symbol, day } => format!("ticks/{day}/{symbol}"),
            Part::Candles {
                symbol,
                period,
                bucket,
            } => format!("candles/{period}/{bucket}/{symbol}"),
            Part::Chat { room, bucket } => format!("chat/{bucket}/{room}"),
            Part::Armed { symbol } => format!("armed/{symbol}"),
            Part::Alert { alert_id } => format!("alert/{alert_id}"),
        }
    }

    /// The part `encode` named, if it names one.
    pub(super) fn decode(s: &str) -> Option<Part> {
        let (tag, rest) = s.split_once('/')?;
        let text = |t: &str| (!t.is_empty()).then(|| t.to_string());
        match tag {
            "ticks" => {
                let (day, symbol) = rest.split_once('/')?;
                Some(Part::Ticks {
                    symbol: text(symbol)?,
                    day: day.parse().ok()?,
                })
            }
            "candles" => {
                let mut it = rest.splitn(3, '/');
                let period = text(it.next()?)?;
                let bucket = it.next()?.parse().ok()?;
                Some(Part::Candles {
                    symbol: text(it.next()?)?,
                    period,
                    bucket,
                })
            }
            "chat" => {
                let (bucket, room) = rest.split_once('/')?;
                Some(Part::Chat {
                    room: text(room)?,
                    bucket: bucket.parse().ok()?,
                })
            }
            "armed" => Some(Part::Armed {
                symbol: text(rest)?,
            }),
            "alert" => Some(Part::Alert {
                alert_id: rest.parse().ok()?,
            }),
            _ => None,
        }
    }

    fn table(&self) -> &'static str {
        match self {
            Part::Ticks { .. } => "ticks",
            Part::Candles { .. } => "candles",
            Part::Chat { .. } => "chat",
            Part::Armed { .. } => "alerts_armed",
            Part::Alert { .. } => "alerts",
        }
    }

    /// The `WHERE` clause naming the partition.
    fn key_clause(&self) -> &'static str {
        match self {
            Part::Ticks { .. } => "symbol = ? AND day = ?",
            Part::Candles { .. } => "symbol = ? AND period = ? AND bucket = ?",
            Part::Chat { .. } => "room = ? AND bucket = ?",
            Part::Armed { .. } => "symbol = ?",
            Part::Alert { .. } => "alert_id = ?",
        }
    }

    /// The values `key_clause` binds.
    pub(super) fn key(&self) -> Vec<CqlValue> {
        match self {
            Part::Ticks { symbol, day } => vec![CqlValue::Text(symbol.clone()), big(*day)],
            Part::Candles {
                symbol,
                period,
                bucket,
            } => vec![
                CqlValue::Text(symbol.clone()),
                CqlValue::Text(period.clone()),
                big(*bucket),
            ],
            Part::Chat { room, bucket } => vec![CqlValue::Text(room.clone()), big(*bucket)],
            Part::Armed { symbol } => vec![CqlValue::Text(symbol.clone())],
            Part::Alert { alert_id } => vec![big(*alert_id)],
        }
    }

    /// A column set once the partition really exists. A claim never creates a partition
    /// that must be created otherwise: an alert rule exists only once it was created.
    fn guard(&self) -> Option<&'static str> {
        match self {
            Part::Alert { .. } => Some("user_id"),
            _ => None,
        }
    }

    /// `UPDATE <table> SET fence = ?<sets> WHERE <key> IF fence = ?<conds>`: the
    /// statement that conditions a batch on this partition.
    fn guarded(&self, fence: Option<u64>, sets: &[Set], conds: &[Cond]) -> Option<Statement> {
        let mut set_sql: Vec<String> = Vec::new();
        let mut if_sql: Vec<String> = Vec::new();
        let mut values = Vec::new();
        if let Some(e) = fence {
            set_sql.push("fence = ?".into());
            values.push(big(e as i64));
        }
        for (column, value) in sets {
            set_sql.push(format!("{column} = ?"));
            values.push(value.clone());
        }
        values.extend(self.key());
        if let Some(e) = fence {
            if_sql.push("fence = ?".into());
            values.push(big(e as i64));
        }
        for (column, value) in conds {
            match value {
                Some(v) => {
                    if_sql.push(format!("{column} = ?"));
                    values.push(v.clone());
                }
                None => if_sql.push(format!("{column} = null")),
            }
        }
        if set_sql.is_empty() {
            return None;
        }
        let mut cql = format!(
            "UPDATE {} SET {} WHERE {}",
            self.table(),
            set_sql.join(", "),
            self.key_clause()
        );
        if !if_sql.is_empty() {
            cql.push_str(" IF ");
            cql.push_str(&if_sql.join(" AND "));
        }
        Some((cql, values))
    }
}

/// A CQL `bigint`.
pub(super) fn big(v: i64) -> CqlValue {
    CqlValue::BigInt(v)
}

/// A statement and its values.
pub(super) type Statement = (String, Vec<CqlValue>);
/// A column to set in a batch's guard statement.
pub(super) type Set = (&'static str, CqlValue);
/// A condition of a batch's guard statement: the column equals the value (`None`: null).
pub(super) type Cond = (&'static str, Option<CqlValue>);

/// Where a partition's fence stands for one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// The epoch holds it.
    Held,
    /// A newer epoch holds it.
    Newer(u64),
    /// The partition does not exist (see [`Part::guard`]).
    Missing,
}

/// The partition's fence, read at SERIAL (which also completes a half-done LWT on it), and
/// whether the partition exists.
pub(super) async fn read_fence(cs: &Cs, part: &Part) -> Result<(Option<u64>, bool), StoreError> {
    let context = "reading a partition's fence";
    let (table, clause) = (part.table(), part.key_clause());
    match part.guard() {
        None => {
            let found: Vec<(Option<i64>,)> = rows(
                cs,
                serial(&format!("SELECT fence FROM {table} WHERE {clause} LIMIT 1")),
                part.key(),
                context,
            )
            .await?;
            Ok((found.first().and_then(|r| r.0).map(|f| f as u64), true))
        }
        Some(guard) => {
            let found: Vec<(Option<i64>, Option<i64>)> = rows(
                cs,
                serial(&format!(
                    "SELECT fence, {guard} FROM {table} WHERE {clause} LIMIT 1"
                )),
                part.key(),
                context,
            )
            .await?;
            let row = found.first().copied().unwrap_or_default();
            Ok((row.0.map(|f| f as u64), row.1.is_some()))
        }
    }
}

/// Raises the partition's fence to `epoch` unless it is there already or a newer epoch
/// holds it.
pub(super) async fn raise(cs: &Cs, part: &Part, epoch: u64) -> Result<Claim, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let (current, exists) = read_fence(cs, part).await?;
        if !exists {
            return Ok(Claim::Missing);
        }
        match current {
            Some(f) if f == epoch => return Ok(Claim::Held),
            Some(f) if f > epoch => return Ok(Claim::Newer(f)),
            _ => {}
        }
        let Some((cql_text, values)) = part.guarded(
            None,
            &[("fence", big(epoch as i64))],
            &[("fence", current.map(|f| big(f as i64)))],
        ) else {
            return Err(StoreError::Backend("raising a fence: no statement".into()));
        };
        // Applied, beaten, or unknown: the next read tells.
        if let Some(c) = cas(cs, &cql_text, values, "raising a partition's fence").await?
            && c.applied
        {
            return Ok(Claim::Held);
        }
    }
    Err(StoreError::Backend(format!(
        "raising the fence of {}: lost {CAS_ATTEMPTS} races in a row",
        part.encode()
    )))
}

/// Adds `part` to the lease's set of partitions it writes; `Some(current)` when the lease
/// is no longer at `fence.epoch`.
pub(super) async fn register(
    cs: &Cs,
    fence: &Fence,
    part: &Part,
) -> Result<Option<u64>, StoreError> {
    let name = part.encode();
    let outcome = cas(
        cs,
        "UPDATE entities SET parts = parts + ? WHERE kind = ? AND key = ? IF epoch = ?",
        (
            vec![name.clone()],
            &fence.kind,
            &fence.key,
            fence.epoch as i64,
        ),
        "registering a partition with a lease",
    )
    .await?;
    match outcome {
        Some(c) if c.applied => Ok(None),
        Some(c) => Ok(Some(c.bigint("epoch").unwrap_or(0))),
        None => {
            let (epoch, parts) = lease_parts(cs, &fence.kind, &fence.key).await?;
            if epoch != Some(fence.epoch) {
                Ok(Some(epoch.unwrap_or(0)))
            } else if parts.contains(&name) {
                Ok(None)
            } else {
                Err(unknown("registering a partition with a lease"))
            }
        }
    }
}

/// The lease's epoch and its registered partitions, read at SERIAL.
async fn lease_parts(
    cs: &Cs,
    kind: &str,
    key: &str,
) -> Result<(Option<u64>, Vec<String>), StoreError> {
    let found: Vec<(Option<i64>, Option<Vec<String>>)> = rows(
        cs,
        serial("SELECT epoch, parts FROM entities WHERE kind = ? AND key = ? LIMIT 1"),
        (kind, key),
        "reading a lease's partitions",
    )
    .await?;
    let (epoch, parts) = found.into_iter().next().unwrap_or_default();
    Ok((epoch.map(|e| e as u64), parts.unwrap_or_default()))
}

/// After a take-over to `epoch`: raises every partition the lease registered to it (so no
/// older epoch writes there any more), then drops them from the set. Runs before the
/// take-over is answered.
pub(super) async fn fence_registered(
    cs: &Cs,
    kind: &str,
    key: &str,
    epoch: u64,
) -> Result<(), StoreError> {
    // Even if a newer take-over moved the epoch past this one meanwhile: raising never
    // lowers a fence, and this take-over must not be answered before the older epochs'
    // partitions are closed to them.
    let (_, parts) = lease_parts(cs, kind, key).await?;
    if parts.is_empty() {
        return Ok(());
    }
    for chunk in parts.chunks(RAISE_AT_ONCE) {
        let raising: Vec<_> = chunk
            .iter()
            .map(|name| raise_named(cs, kind, key, name, epoch))
            .collect();
        for raised in join_all(raising).await {
            raised?;
        }
    }
    // Not applied: a newer take-over holds the lease and raises them itself.
    cas(
        cs,
        "UPDATE entities SET parts = parts - ? WHERE kind = ? AND key = ? IF epoch = ?",
        (parts, kind, key, epoch as i64),
        "dropping fenced partitions from a lease",
    )
    .await?;
    Ok(())
}

/// Raises the partition `name` (as the lease's set holds it) to `epoch`.
async fn raise_named(
    cs: &Cs,
    kind: &str,
    key: &str,
    name: &str,
    epoch: u64,
) -> Result<(), StoreError> {
    match Part::decode(name) {
        Some(part) => raise(cs, &part, epoch).await.map(|_| ()),
        None => {
            tracing::warn!(kind, key, part = %name, "dropping an unreadable partition name");
            Ok(())
        }
    }
}

/// Runs `rows` (plain statements on `part`) and the guard statement (`sets` and `conds`,
/// and `fence = <epoch>` when fenced) as one conditional batch on that one partition:
/// all of it lands, or none. `None` when the outcome is unknown. Without a guard the batch
/// is unconditional (and answers "applied").
pub(super) async fn part_batch(
    cs: &Cs,
    part: &Part,
    fence: Option<u64>,
    statements: Vec<Statement>,
    sets: &[Set],
    conds: &[Cond],
) -> Result<Option<Cas>, StoreError> {
    let guard = part.guarded(fence, sets, conds);
    let conditional = guard.as_ref().is_some_and(|g| g.0.contains(" IF "));
    let mut batch = Batch::new(if conditional {
        BatchType::Logged
    } else {
        BatchType::Unlogged
    });
    // The guard first: a conditional batch answers one row per statement, and the guard's
    // row holds the compared columns on every server version.
    let mut values = Vec::with_capacity(statements.len() + 1);
    let mut prepared: HashMap<String, PreparedStatement> = HashMap::new();
    for (text, v) in guard.into_iter().chain(statements) {
        // Each distinct text prepared once (the driver would prepare every statement of an
        // unprepared batch, a thousand times for a thousand rows of one text).
        let statement = match prepared.get(&text) {
            Some(p) => p.clone(),
            None => {
                let p = cs
                    .add_prepared_statement(&scylla::statement::unprepared::Statement::new(
                        text.as_str(),
                    ))
                    .await
                    .map_err(|e| cql(&format!("preparing a write to {}", part.encode()), e))?;
                prepared.insert(text, p.clone());
                p
            }
        };
        batch.append_statement(statement);
        values.push(v);
    }
    if values.is_empty() {
        return Ok(Some(Cas::applied()));
    }
    let result = match cs.batch(&batch, values).await {
        Ok(r) => r,
        Err(e) if outcome_unknown(&e) => {
            tracing::warn!(error = %e, part = %part.encode(), "batch outcome unknown");
            return Ok(None);
        }
        Err(e) => return Err(cql(&format!("writing {}", part.encode()), e)),
    };
    if !conditional {
        return Ok(Some(Cas::applied()));
    }
    Cas::from_result(result, "a conditional batch").map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_round_trip() {
        let parts = [
            Part::Ticks {
                symbol: "KRW-BTC".into(),
                day: 20_426,
            },
            Part::Ticks {
                symbol: "A/B".into(),
                day: -1,
            },
            Part::Candles {
                symbol: "KRW-ETH".into(),
                period: "1m".into(),
                bucket: 3,
            },
            Part::Chat {
                room: "lobby/x".into(),
                bucket: 7,
            },
            Part::Armed {
                symbol: "KRW-BTC".into(),
            },
            Part::Alert { alert_id: 1 << 40 },
        ];
        for p in parts {
            assert_eq!(Part::decode(&p.encode()), Some(p.clone()), "{}", p.encode());
        }
        for bad in [
            "",
            "ticks",
            "ticks/x/S",
            "ticks/1/",
            "alert/",
            "nope/1",
            "candles/1m/2",
        ] {
            assert_eq!(Part::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn guard_statements_condition_on_the_fence() {
        let part = Part::Ticks {
            symbol: "S".into(),
            day: 2,
        };
        let (cql, values) = part.guarded(Some(5), &[], &[]).expect("a statement");
        assert_eq!(
            cql,
            "UPDATE ticks SET fence = ? WHERE symbol = ? AND day = ? IF fence = ?"
        );
        assert_eq!(
            values,
            vec![big(5), CqlValue::Text("S".into()), big(2), big(5)]
        );
        // Unfenced and nothing to set: no guard, a plain batch.
        assert!(part.guarded(None, &[], &[]).is_none());
        let alert = Part::Alert { alert_id: 9 };
        let (cql, values) = alert
            .guarded(
                None,
                &[("fired_count", big(2))],
                &[("fired_count", Some(big(1))), ("status", None)],
            )
            .expect("a statement");
        assert_eq!(
            cql,
            "UPDATE alerts SET fired_count = ? WHERE alert_id = ? IF fired_count = ? AND status = null"
        );
        assert_eq!(values, vec![big(2), big(9), big(1)]);
    }
}
