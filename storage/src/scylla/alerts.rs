//! Alert rules, their firings and users' inboxes on ScyllaDB.
//!
//! A rule is the static part of its own partition and each firing a row of it, so a firing,
//! the rule's counters and the rule's fence change in one conditional batch: a firing is
//! recorded once, whole, and never from an older epoch. What lives in other partitions is
//! either an index that the rule's status overrules (`alerts_armed`, `alerts_by_user`) or
//! written *before* the change it records and shown only where that change is stored
//! (`alert_history` against the rule's firing rows, `notifications` against the claimed
//! inbox key and its time). A crash between two steps leaves, at worst, an extra index row
//! or an entry no read shows; a replay then completes what is missing.

use super::fence::{self, CAS_ATTEMPTS, Cond, Part, Set, big};
use super::write::{Answer, Writer, new_id};
use super::{Cs, cas, exec, rows, serial, unknown};
use crate::{AlertStatus, Fence, StoreError};
use scylla::value::CqlValue;

/// A rule's state as its partition holds it, read at SERIAL.
struct Rule {
    symbol: String,
    status: String,
    fired_count: Option<i64>,
}

async fn read_rule(cs: &Cs, alert_id: i64) -> Result<Option<Rule>, StoreError> {
    type Row = (Option<i64>, Option<String>, Option<String>, Option<i64>);
    let found: Vec<Row> = rows(
        cs,
        serial(
            "SELECT user_id, symbol, status, fired_count FROM alerts WHERE alert_id = ? LIMIT 1",
        ),
        (alert_id,),
        "reading an alert rule",
    )
    .await?;
    Ok(found
        .into_iter()
        .next()
        .and_then(|(user, symbol, status, fired_count)| {
            user.map(|_| Rule {
                symbol: symbol.unwrap_or_default(),
                status: status.unwrap_or_default(),
                fired_count,
            })
        }))
}

/// Stores a new rule, armed on its symbol under `fence` (the symbol's lease). The armed
/// index row is the commit point: a rule refused there is in no index, so no read finds
/// it. The user's index comes last; a crash before it leaves a rule that is armed but not
/// listed until its first firing lists it.
pub(super) async fn create(
    w: &mut Writer,
    cs: &Cs,
    fence: Option<&Fence>,
    a: &crate::AlertRecord,
) -> Answer {
    let id = insert_rule(cs, a, &mut w.last_id).await?;
    let armed = Part::Armed {
        symbol: a.symbol.clone(),
    };
    let insert = (
        "INSERT INTO alerts_armed (symbol, alert_id) VALUES (?, ?)".to_string(),
        vec![CqlValue::Text(a.symbol.clone()), big(id)],
    );
    if let Err(refusal) = w.part_write(cs, fence, &armed, vec![insert]).await? {
        return Ok(Err(refusal));
    }
    exec(
        cs,
        "INSERT INTO alerts_by_user (user_id, alert_id) VALUES (?, ?)",
        (a.user_id as i64, id),
        "indexing an alert",
    )
    .await?;
    Ok(Ok(id as u64))
}

/// Records firing `f.n` once: the user's history row first, then the firing row with the
/// rule's counters in one conditional batch on the rule's partition (under `fence`, the
/// rule's lease), then what follows from it (a fired one-shot rule leaves the armed index;
/// the user's index lists the rule). A firing already stored changes nothing but repeats
/// what follows, so a replay completes a firing a crash cut short.
pub(super) async fn fired(
    w: &mut Writer,
    cs: &Cs,
    fence: Option<&Fence>,
    f: &crate::AlertFiring,
    one_shot: bool,
) -> Answer {
    let alert_id = f.alert_id as i64;
    exec(
        cs,
        "INSERT INTO alert_history (user_id, ts, alert_id, n, symbol, condition, value,
         price, reference) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            f.user_id as i64,
            f.ts,
            alert_id,
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
    let part = Part::Alert { alert_id };
    for _ in 0..CAS_ATTEMPTS {
        let Some(rule) = read_rule(cs, alert_id).await? else {
            // No such rule: nothing to record (the history row is never shown).
            return Ok(Ok(0));
        };
        let stored: Vec<(Option<i64>,)> = rows(
            cs,
            serial("SELECT ts FROM alerts WHERE alert_id = ? AND n = ?"),
            (alert_id, f.n as i64),
            "reading an alert firing",
        )
        .await?;
        if stored.iter().any(|r| r.0.is_some()) {
            if let Err(refusal) = w.confirm(cs, fence, &part).await? {
                return Ok(Err(refusal));
            }
            return follow(cs, f, one_shot, &rule.symbol).await;
        }
        // Claimed once per activation; later rounds find the claim remembered.
        let epoch = match w.hold(cs, fence, &part).await? {
            Ok(e) => e,
            Err(StoreError::Conflict(_)) => return Ok(Ok(0)),
            Err(refusal) => return Ok(Err(refusal)),
        };
        let status = if one_shot && rule.status == AlertStatus::Armed.as_str() {
            AlertStatus::Fired.as_str().to_string()
        } else {
            rule.status.clone()
        };
        let row = (
            "INSERT INTO alerts (alert_id, n, ts, price, reference) VALUES (?, ?, ?, ?, ?)"
                .to_string(),
            vec![
                big(alert_id),
                big(f.n as i64),
                big(f.ts),
                big(f.price as i64),
                big(f.reference as i64),
            ],
        );
        let sets: [Set; 3] = [
            ("fired_count", big(f.n as i64)),
            ("last_fired_at", big(f.ts)),
            ("status", CqlValue::Text(status)),
        ];
        let conds: [Cond; 1] = [("fired_count", rule.fired_count.map(big))];
        match fence::part_batch(cs, &part, epoch, vec![row], &sets, &conds).await? {
            Some(c) if c.applied => return follow(cs, f, one_shot, &rule.symbol).await,
            Some(c) => {
                if let Some(refusal) = w.moved(fence, &part, &c) {
                    return Ok(Err(refusal));
                }
                // Another firing moved the counters first: read again.
            }
            // Unknown: the next read tells whether it landed.
            None => {}
        }
    }
    Err(StoreError::Backend(format!(
        "recording firing {} of alert {alert_id}: lost {CAS_ATTEMPTS} races in a row",
        f.n
    )))
}

/// What follows a stored firing (idempotent, so a replay repeats it): a one-shot rule
/// leaves its symbol's armed index, and the user's index lists the rule.
async fn follow(cs: &Cs, f: &crate::AlertFiring, one_shot: bool, symbol: &str) -> Answer {
    if one_shot {
        exec(
            cs,
            "DELETE FROM alerts_armed WHERE symbol = ? AND alert_id = ?",
            (symbol, f.alert_id as i64),
            "unindexing an alert",
        )
        .await?;
    }
    exec(
        cs,
        "INSERT INTO alerts_by_user (user_id, alert_id) VALUES (?, ?)",
        (f.user_id as i64, f.alert_id as i64),
        "indexing an alert",
    )
    .await?;
    Ok(Ok(0))
}

/// Marks a rule deleted (under `fence`, the rule's lease), then takes it out of its
/// symbol's armed index. A rule that does not exist is left so: no row is made for it.
pub(super) async fn delete(
    w: &mut Writer,
    cs: &Cs,
    fence: Option<&Fence>,
    alert_id: u64,
) -> Answer {
    let alert_id = alert_id as i64;
    let part = Part::Alert { alert_id };
    for _ in 0..CAS_ATTEMPTS {
        let Some(rule) = read_rule(cs, alert_id).await? else {
            return Ok(Ok(0));
        };
        if rule.status == AlertStatus::Deleted.as_str() {
            if let Err(refusal) = w.confirm(cs, fence, &part).await? {
                return Ok(Err(refusal));
            }
            exec(
                cs,
                "DELETE FROM alerts_armed WHERE symbol = ? AND alert_id = ?",
                (&rule.symbol, alert_id),
                "unindexing an alert",
            )
            .await?;
            return Ok(Ok(0));
        }
        // Claimed once per activation; later rounds find the claim remembered.
        let epoch = match w.hold(cs, fence, &part).await? {
            Ok(e) => e,
            Err(StoreError::Conflict(_)) => return Ok(Ok(0)),
            Err(refusal) => return Ok(Err(refusal)),
        };
        let sets: [Set; 1] = [(
            "status",
            CqlValue::Text(AlertStatus::Deleted.as_str().into()),
        )];
        let conds: [Cond; 1] = [("status", Some(CqlValue::Text(rule.status.clone())))];
        match fence::part_batch(cs, &part, epoch, Vec::new(), &sets, &conds).await? {
            Some(c) if !c.applied => {
                if let Some(refusal) = w.moved(fence, &part, &c) {
                    return Ok(Err(refusal));
                }
            }
            // Applied, or unknown: the next read finds it deleted (and unindexes it), or
            // tries again.
            _ => {}
        }
    }
    Err(StoreError::Backend(format!(
        "deleting alert {alert_id}: lost {CAS_ATTEMPTS} races in a row"
    )))
}

/// Puts an entry in a user's inbox: the entry first, then its key's claim with the entry's
/// time. An entry is shown only where its key was claimed at its time, so a replay (same
/// key, maybe another time) adds nothing visible, and a crash between the two leaves no
/// shown half.
pub(super) async fn notify(cs: &Cs, n: &crate::Notification) -> Answer {
    exec(
        cs,
        "INSERT INTO notifications (user_id, ts, key, kind, body) VALUES (?, ?, ?, ?, ?)",
        (n.user_id as i64, n.ts, &n.key, &n.kind, &n.body),
        "writing an inbox entry",
    )
    .await?;
    let claimed = cas(
        cs,
        "INSERT INTO notification_keys (user_id, key, ts) VALUES (?, ?, ?) IF NOT EXISTS",
        (n.user_id as i64, &n.key, n.ts),
        "claiming an inbox key",
    )
    .await?;
    if claimed.is_none() {
        let found: Vec<(Option<i64>,)> = rows(
            cs,
            serial("SELECT ts FROM notification_keys WHERE user_id = ? AND key = ?"),
            (n.user_id as i64, &n.key),
            "reading an inbox key back",
        )
        .await?;
        if !found.iter().any(|r| r.0.is_some()) {
            return Err(unknown("claiming an inbox key"));
        }
    }
    Ok(Ok(0))
}

/// Inserts a new rule (the static part of its partition) under a fresh id, claimed by the
/// insert itself.
async fn insert_rule(
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
