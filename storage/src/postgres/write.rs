//! Applying a batch of writes inside one PostgreSQL transaction, each write with its own
//! outcome. Expected refusals (a journal position or username already taken, a fenced
//! epoch) never raise an SQL error, which would abort the whole transaction: they are
//! `ON CONFLICT DO NOTHING` or a lease check, answered per write.
//!
//! Fencing: a batch first locks the lease row of every entity it writes under, takes over
//! or releases, in one statement, in key order (`FOR NO KEY UPDATE`). A take-over on
//! another node waits until the batch has committed, and once it has committed no write
//! under the older epoch can land. Taking every lock up front in one order, and never
//! upgrading a lock later in the transaction, keeps two nodes' batches from deadlocking on
//! leases. The row lock holds each epoch still for the rest of the transaction, except for
//! this batch's own take-overs, which update the epochs read.

use super::Client;
use crate::queue::Reply;
use crate::records::{Interval, Side};
use crate::{StoreError, Write};
use std::collections::HashMap;
use tokio_postgres::Error;

/// Lease epochs read (and locked) in this batch, by `(kind, key)` borrowed from the batch's
/// own writes: no allocation per fenced write. `None`: no lease row yet.
type Epochs<'a> = HashMap<(&'a str, &'a str), Option<u64>>;

/// Runs `batch` in one transaction and commits it.
pub(super) async fn commit(
    client: &mut Client,
    batch: &[(Write, Reply)],
) -> Result<Vec<Result<u64, StoreError>>, Error> {
    let tx = client.transaction().await?;
    let mut epochs = lock_leases(&tx, batch).await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (write, _) in batch {
        outcomes.push(apply(&tx, write, &mut epochs).await?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Locks the lease row of every entity `batch` touches, in key order, and returns their
/// epochs.
async fn lock_leases<'a>(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &'a [(Write, Reply)],
) -> Result<Epochs<'a>, Error> {
    let mut epochs = Epochs::new();
    for (write, _) in batch {
        let (fences, _, inner) = write.layers();
        for fence in fences {
            epochs.insert((&fence.kind, &fence.key), None);
        }
        if let Write::AcquireLease { kind, key, .. } | Write::ReleaseLease { kind, key, .. } = inner
        {
            epochs.insert((kind, key), None);
        }
    }
    if epochs.is_empty() {
        return Ok(epochs);
    }
    let pairs: Vec<(&'a str, &'a str)> = epochs.keys().copied().collect();
    let (kinds, keys): (Vec<&str>, Vec<&str>) = pairs.iter().copied().unzip();
    let stmt = tx
        .prepare_cached(
            "SELECT t.i, l.epoch FROM leases l
             JOIN UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS t(kind, key, i)
               ON l.kind = t.kind AND l.key = t.key
             ORDER BY l.kind COLLATE \"C\", l.key COLLATE \"C\"
             FOR NO KEY UPDATE OF l",
        )
        .await?;
    for row in tx.query(&stmt, &[&kinds, &keys]).await? {
        let i = row.get::<_, i64>(0) as usize;
        if let Some(pair) = i.checked_sub(1).and_then(|i| pairs.get(i)) {
            epochs.insert(*pair, Some(row.get::<_, i64>(1) as u64));
        }
    }
    Ok(epochs)
}

fn side_code(side: Side) -> i16 {
    match side {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

/// Applies one write. The outer error aborts the batch (a database failure); the inner
/// one is this write's own outcome.
async fn apply<'a>(
    tx: &deadpool_postgres::Transaction<'_>,
    write: &'a Write,
    epochs: &mut Epochs<'a>,
) -> Result<Result<u64, StoreError>, Error> {
    let (fences, events, write) = write.layers();
    for fence in fences {
        let current = epochs
            .get(&(fence.kind.as_str(), fence.key.as_str()))
            .copied()
            .flatten();
        if current != Some(fence.epoch) {
            return Ok(Err(fence.refusal(current)));
        }
    }
    let applied = apply_one(tx, write, epochs).await?;
    if applied.is_ok() && !events.is_empty() {
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
        let ts: Vec<i64> = events.iter().map(|e| e.ts).collect();
        let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO outbox (id, kind, key, ts, data)
                 SELECT id, kind, key, ts, data FROM UNNEST($1::text[], $2::text[], $3::text[],
                     $4::int8[], $5::text[]) WITH ORDINALITY AS e(id, kind, key, ts, data, n)
                 ORDER BY n",
            )
            .await?;
        tx.execute(&stmt, &[&ids, &kinds, &keys, &ts, &data])
            .await?;
    }
    Ok(applied)
}

/// Applies one write with its fences and events already taken off.
async fn apply_one<'a>(
    tx: &deadpool_postgres::Transaction<'_>,
    write: &'a Write,
    epochs: &mut Epochs<'a>,
) -> Result<Result<u64, StoreError>, Error> {
    match write {
        // `apply` unwrapped every fence and event list.
        Write::Fenced { .. } | Write::WithEvents { .. } => {
            Ok(Err(StoreError::Backend("unwrapped fence".into())))
        }
        Write::Ticks(ticks) => {
            if ticks.is_empty() {
                return Ok(Ok(0));
            }
            let symbols: Vec<&str> = ticks.iter().map(|t| t.symbol.as_str()).collect();
            let ids: Vec<i64> = ticks.iter().map(|t| t.trade_id as i64).collect();
            let ts: Vec<i64> = ticks.iter().map(|t| t.ts).collect();
            let prices: Vec<i64> = ticks.iter().map(|t| t.price as i64).collect();
            let qtys: Vec<i64> = ticks.iter().map(|t| t.qty as i64).collect();
            let sides: Vec<i16> = ticks.iter().map(|t| side_code(t.side)).collect();
            let seqs: Vec<i64> = ticks.iter().map(|t| t.feed_seq as i64).collect();
            let fills: Vec<i64> = ticks.iter().map(|t| t.book_trade as i64).collect();
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO ticks (symbol, trade_id, ts, price, qty, side, feed_seq, book_trade)
                     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[],
                                          $5::int8[], $6::int2[], $7::int8[], $8::int8[])
                     ON CONFLICT DO NOTHING",
                )
                .await?;
            tx.execute(
                &stmt,
                &[&symbols, &ids, &ts, &prices, &qtys, &sides, &seqs, &fills],
            )
            .await?;
            Ok(Ok(0))
        }
        Write::Candles { symbol, candles } => {
            // One statement may not update a row twice: the last candle of a bucket wins,
            // as it would row by row.
            let mut last: HashMap<(Interval, i64), usize> = HashMap::new();
            for (i, (interval, c)) in candles.iter().enumerate() {
                last.insert((*interval, c.open_time), i);
            }
            let mut keep: Vec<usize> = last.into_values().collect();
            keep.sort_unstable();
            if keep.is_empty() {
                return Ok(Ok(0));
            }
            let pick = |f: &dyn Fn(&crate::Candle) -> i64| -> Vec<i64> {
                keep.iter().map(|&i| f(&candles[i].1)).collect()
            };
            let periods: Vec<&str> = keep.iter().map(|&i| candles[i].0.as_str()).collect();
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO candles (symbol, period, open_time, open, high, low, close, volume)
                     SELECT $1, * FROM UNNEST($2::text[], $3::int8[], $4::int8[], $5::int8[],
                                              $6::int8[], $7::int8[], $8::int8[])
                     ON CONFLICT (symbol, period, open_time) DO UPDATE SET
                        open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
                        close = EXCLUDED.close, volume = EXCLUDED.volume",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    symbol,
                    &periods,
                    &pick(&|c| c.open_time),
                    &pick(&|c| c.open as i64),
                    &pick(&|c| c.high as i64),
                    &pick(&|c| c.low as i64),
                    &pick(&|c| c.close as i64),
                    &pick(&|c| c.volume as i64),
                ],
            )
            .await?;
            Ok(Ok(0))
        }
        Write::AcquireLease { kind, key, node } => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO leases (kind, key, owner, epoch) VALUES ($1, $2, $3, 1)
                     ON CONFLICT (kind, key)
                     DO UPDATE SET owner = EXCLUDED.owner, epoch = leases.epoch + 1
                     RETURNING epoch",
                )
                .await?;
            let epoch = tx
                .query_one(&stmt, &[kind, key, node])
                .await?
                .get::<_, i64>(0) as u64;
            epochs.insert((kind.as_str(), key.as_str()), Some(epoch));
            Ok(Ok(epoch))
        }
        Write::ReleaseLease { kind, key, epoch } => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE leases SET owner = '' WHERE kind = $1 AND key = $2 AND epoch = $3",
                )
                .await?;
            tx.execute(&stmt, &[kind, key, &(*epoch as i64)]).await?;
            Ok(Ok(0))
        }
        Write::Journal {
            kind,
            key,
            seq,
            entry,
        } => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO journal (kind, key, seq, entry) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                )
                .await?;
            let added = tx
                .execute(&stmt, &[kind, key, &(*seq as i64), entry])
                .await?;
            if added == 0 {
                return Ok(Err(StoreError::Conflict(format!(
                    "{kind}/{key}: journal entry {seq} already exists"
                ))));
            }
            Ok(Ok(0))
        }
        Write::Snapshot {
            kind,
            key,
            seq,
            state,
        } => {
            let upsert = tx
                .prepare_cached(
                    "INSERT INTO snapshots (kind, key, seq, state) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (kind, key) DO UPDATE SET seq = EXCLUDED.seq, state = EXCLUDED.state",
                )
                .await?;
            tx.execute(&upsert, &[kind, key, &(*seq as i64), state])
                .await?;
            let covered = tx
                .prepare_cached("DELETE FROM journal WHERE kind = $1 AND key = $2 AND seq <= $3")
                .await?;
            tx.execute(&covered, &[kind, key, &(*seq as i64)]).await?;
            Ok(Ok(0))
        }
        Write::Chat(m) => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO chat (room, message_id, user_id, username, text, ts)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &m.room,
                    &(m.message_id as i64),
                    &(m.user_id as i64),
                    &m.username,
                    &m.text,
                    &m.ts,
                ],
            )
            .await?;
            Ok(Ok(0))
        }
        Write::CreateUser {
            username,
            password_hash,
            created_at,
        } => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO users (username, password_hash, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (username) DO NOTHING RETURNING user_id",
                )
                .await?;
            match tx
                .query_opt(&stmt, &[username, password_hash, created_at])
                .await?
            {
                Some(row) => Ok(Ok(row.get::<_, i64>(0) as u64)),
                None => Ok(Err(StoreError::Conflict(format!(
                    "username '{username}' is taken"
                )))),
            }
        }
        Write::CreateAlert(a) => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO alerts (user_id, symbol, condition, value, repeat, cooldown_s,
                     created_at, status, last_fired_at, fired_count)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'armed', 0, 0) RETURNING alert_id",
                )
                .await?;
            let row = tx
                .query_one(
                    &stmt,
                    &[
                        &(a.user_id as i64),
                        &a.symbol,
                        &a.condition,
                        &a.value,
                        &a.repeat,
                        &i64::from(a.cooldown_s),
                        &a.created_at,
                    ],
                )
                .await?;
            Ok(Ok(row.get::<_, i64>(0) as u64))
        }
        Write::AlertFired {
            firing: f,
            one_shot,
        } => {
            let history = tx
                .prepare_cached(
                    "INSERT INTO alert_history
                     (alert_id, n, user_id, symbol, condition, value, price, reference, ts)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                )
                .await?;
            let added = tx
                .execute(
                    &history,
                    &[
                        &(f.alert_id as i64),
                        &(f.n as i64),
                        &(f.user_id as i64),
                        &f.symbol,
                        &f.condition,
                        &f.value,
                        &(f.price as i64),
                        &(f.reference as i64),
                        &f.ts,
                    ],
                )
                .await?;
            if added == 1 {
                let rule = tx
                    .prepare_cached(
                        "UPDATE alerts SET last_fired_at = $2, fired_count = $3,
                         status = CASE WHEN $4 AND status = 'armed' THEN 'fired' ELSE status END
                         WHERE alert_id = $1",
                    )
                    .await?;
                tx.execute(
                    &rule,
                    &[&(f.alert_id as i64), &f.ts, &(f.n as i64), one_shot],
                )
                .await?;
            }
            Ok(Ok(0))
        }
        Write::DeleteAlert { alert_id } => {
            let stmt = tx
                .prepare_cached("UPDATE alerts SET status = 'deleted' WHERE alert_id = $1")
                .await?;
            tx.execute(&stmt, &[&(*alert_id as i64)]).await?;
            Ok(Ok(0))
        }
        Write::Watchlist { user_id, symbols } => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO watchlists (user_id, symbols) VALUES ($1, $2)
                     ON CONFLICT (user_id) DO UPDATE SET symbols = EXCLUDED.symbols",
                )
                .await?;
            tx.execute(&stmt, &[&(*user_id as i64), symbols]).await?;
            Ok(Ok(0))
        }
        Write::Holdings { user_id, ts, data } => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO holdings (user_id, ts, data) VALUES ($1, $2, $3)
                     ON CONFLICT (user_id, ts) DO UPDATE SET data = EXCLUDED.data",
                )
                .await?;
            tx.execute(&stmt, &[&(*user_id as i64), ts, data]).await?;
            Ok(Ok(0))
        }
        Write::Notify(n) => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO notifications (user_id, key, ts, kind, body)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .await?;
            tx.execute(
                &stmt,
                &[&(n.user_id as i64), &n.key, &n.ts, &n.kind, &n.body],
            )
            .await?;
            Ok(Ok(0))
        }
        Write::Relayed { positions } => {
            let positions: Vec<i64> = positions.iter().map(|p| *p as i64).collect();
            let stmt = tx
                .prepare_cached("DELETE FROM outbox WHERE pos = ANY($1)")
                .await?;
            tx.execute(&stmt, &[&positions]).await?;
            Ok(Ok(0))
        }
        Write::PruneInbox {
            before,
            keep_per_user,
        } => {
            let stmt = tx
                .prepare_cached("DELETE FROM notifications WHERE ts < $1")
                .await?;
            let old = tx.execute(&stmt, &[before]).await?;
            let stmt = tx
                .prepare_cached(&crate::retention::over_cap_delete("$1"))
                .await?;
            let keep = i64::try_from(*keep_per_user).unwrap_or(i64::MAX);
            let over = tx.execute(&stmt, &[&keep]).await?;
            Ok(Ok(old + over))
        }
        Write::PruneHoldings { before } => {
            let stmt = tx
                .prepare_cached(&crate::retention::holdings_prune("$1"))
                .await?;
            Ok(Ok(tx.execute(&stmt, &[before]).await?))
        }
    }
}
