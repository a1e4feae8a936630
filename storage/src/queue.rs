//! The write queue every backend shares: writes are submitted in order without waiting,
//! a single writer takes whatever has queued up as one batch (group commit), commits it and
//! answers each write with its own outcome. Backends differ only in how a batch commits.
//!
//! A batch that fails halts every lease it wrote under (from the write that failed on, where
//! a backend applies a batch write by write): later writes under those epochs are refused
//! ([`StoreError::Halted`]) until the entity is taken over again, so a journal never gets
//! entry n+1 without entry n, whatever its activation does with the error.

use crate::{Ack, StoreError, Write};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where a write's outcome goes.
pub(crate) type Reply = oneshot::Sender<Result<u64, StoreError>>;

/// What the writer is asked to do, in submission order.
pub(crate) enum Op {
    Write(Write, Reply),
    /// A barrier: answered once everything submitted before it is committed.
    Flush(Reply),
    /// Commit what is queued before it, refuse what comes after.
    Close(Reply),
}

impl Op {
    fn reply(self) -> Reply {
        match self {
            Op::Write(_, r) | Op::Flush(r) | Op::Close(r) => r,
        }
    }
}

/// Each write's outcome, or the batch's failure.
pub(crate) type Outcomes = Result<Vec<Result<u64, StoreError>>, Failed>;

/// A batch that stopped at a failure: the outcomes of the writes that were applied before
/// it (none where the backend rolls the batch back), and the error that answers the write
/// that failed and every write after it.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) done: Vec<Result<u64, StoreError>>,
    pub(crate) error: StoreError,
}

impl From<StoreError> for Failed {
    /// A batch rolled back as a whole.
    fn from(error: StoreError) -> Failed {
        Failed {
            done: Vec::new(),
            error,
        }
    }
}

/// Timing of the writer's batches, for benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    pub batches: u64,
    pub rows: u64,
    pub commit_micros_total: u64,
}

/// The submitting side: cheap to call from any thread, refuses once closed.
pub(crate) struct Submitter {
    ops: Mutex<Option<mpsc::UnboundedSender<Op>>>,
    stats: Arc<Mutex<WriterStats>>,
}

impl Submitter {
    /// A submitter and the queue its writer drains.
    pub(crate) fn new() -> (
        Submitter,
        mpsc::UnboundedReceiver<Op>,
        Arc<Mutex<WriterStats>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let submitter = Submitter {
            ops: Mutex::new(Some(tx)),
            stats: stats.clone(),
        };
        (submitter, rx, stats)
    }

    fn send(&self, op: Op) {
        let guard = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let result = match guard.as_ref() {
            Some(tx) => tx.send(op).map_err(|e| e.0),
            None => Err(op),
        };
        if let Err(op) = result {
            let _ = op.reply().send(Err(StoreError::Closed));
        }
    }

    /// Queues a write.
    pub(crate) fn submit(&self, write: Write) -> Ack {
        let (tx, ack) = Ack::pair();
        self.send(Op::Write(write, tx));
        ack
    }

    /// Waits until everything queued before the call is committed.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let (tx, ack) = Ack::pair();
        self.send(Op::Flush(tx));
        ack.wait().await
    }

    /// Commits what is queued and stops accepting writes.
    pub(crate) async fn close(&self) -> Result<(), StoreError> {
        let (tx, ack) = Ack::pair();
        self.send(Op::Close(tx));
        let result = ack.wait().await;
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).take();
        result
    }

    /// Whether the queue stopped accepting writes ([`Submitter::close`], or a writer gone):
    /// work a backend does beside the queue is refused then too.
    pub(crate) fn is_closed(&self) -> bool {
        self.ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(|tx| tx.is_closed())
    }

    /// `Err(Closed)` once the queue stopped accepting writes: what a backend does beside the
    /// queue is refused then too.
    pub(crate) fn ensure_open(&self) -> Result<(), StoreError> {
        if self.is_closed() {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    /// Batch statistics so far.
    pub(crate) fn stats(&self) -> WriterStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Leases whose writes failed in this process, by `(kind, key)`, with the newest halted
/// epoch. An entry goes away when the entity is taken over again here.
#[derive(Default)]
pub(crate) struct Halted(HashMap<(String, String), u64>);

impl Halted {
    /// The refusal for `write` if its lease is halted.
    fn refusal(&self, write: &Write) -> Option<StoreError> {
        let Write::Fenced { fence, .. } = write else {
            return None;
        };
        if self.0.is_empty() {
            return None;
        }
        let halted = self.0.get(&(fence.kind.clone(), fence.key.clone()))?;
        (fence.epoch <= *halted).then(|| StoreError::Halted {
            kind: fence.kind.clone(),
            key: fence.key.clone(),
            epoch: fence.epoch,
        })
    }

    /// Learns from a settled batch: a failed one halts every lease that the failed write
    /// or any write after it was under; a committed take-over clears its entity.
    fn learn(&mut self, writes: &[(Write, Reply)], outcomes: &Outcomes) {
        match outcomes {
            Err(failed) => {
                self.cleared(&writes[..failed.done.len().min(writes.len())], &failed.done);
                for (write, _) in writes.iter().skip(failed.done.len()) {
                    if let Write::Fenced { fence, .. } = write {
                        let epoch = self
                            .0
                            .entry((fence.kind.clone(), fence.key.clone()))
                            .or_default();
                        *epoch = (*epoch).max(fence.epoch);
                    }
                }
            }
            Ok(each) => self.cleared(writes, each),
        }
    }

    /// Forgets the halts of entities whose take-over committed.
    fn cleared(&mut self, writes: &[(Write, Reply)], outcomes: &[Result<u64, StoreError>]) {
        if self.0.is_empty() {
            return;
        }
        for ((write, _), outcome) in writes.iter().zip(outcomes) {
            if let (Write::AcquireLease { kind, key, .. }, Ok(_)) = (write, outcome) {
                self.0.remove(&(kind.clone(), key.clone()));
            }
        }
    }
}

/// One batch: the writes to commit together, and the barriers they satisfy.
pub(crate) struct Batch {
    pub(crate) writes: Vec<(Write, Reply)>,
    barriers: Vec<Reply>,
    rows: usize,
    /// Set when a close ends this batch: the writer stops after it.
    pub(crate) closing: Option<Reply>,
}

impl Batch {
    /// `first` and whatever is already queued behind it, up to `batch_max` rows or a close.
    /// A write under a halted lease is refused here and never reaches the backend.
    pub(crate) fn gather(
        first: Op,
        rx: &mut mpsc::UnboundedReceiver<Op>,
        batch_max: usize,
        halted: &Halted,
    ) -> Batch {
        let mut batch = Batch {
            writes: Vec::new(),
            barriers: Vec::new(),
            rows: 0,
            closing: None,
        };
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Write(w, reply) => match halted.refusal(&w) {
                    Some(refusal) => {
                        let _ = reply.send(Err(refusal));
                    }
                    None => {
                        batch.rows += rows(&w);
                        batch.writes.push((w, reply));
                    }
                },
                Op::Flush(reply) => batch.barriers.push(reply),
                Op::Close(reply) => {
                    batch.closing = Some(reply);
                    break;
                }
            }
            if batch.rows >= batch_max {
                break;
            }
            next = rx.try_recv().ok();
        }
        batch
    }

    /// Answers every write with its outcome (or all of them with the error that aborted the
    /// batch) and the barriers with the batch's result; records metrics and what `halted`
    /// must learn. Returns the close request that ended the batch, if any.
    pub(crate) fn settle(
        self,
        outcomes: Result<Vec<Result<u64, StoreError>>, impl Into<Failed>>,
        elapsed: Duration,
        stats: &Mutex<WriterStats>,
        halted: &mut Halted,
        backend: &str,
    ) -> Option<Reply> {
        let outcomes: Outcomes = outcomes.map_err(Into::into);
        halted.learn(&self.writes, &outcomes);
        crate::metrics::BATCH_SECONDS.observe(elapsed.as_secs_f64());
        crate::metrics::BATCH_ROWS.observe(self.rows as f64);
        {
            let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
            s.batches += 1;
            s.rows += self.rows as u64;
            s.commit_micros_total += elapsed.as_micros() as u64;
        }
        let batch_result = match &outcomes {
            Ok(_) => Ok(0),
            Err(f) => {
                tracing::error!(error = %f.error, writes = self.writes.len(), applied = f.done.len(), backend, "storage batch failed");
                Err(f.error.clone())
            }
        };
        let (each, rest) = match outcomes {
            Ok(each) => (each, None),
            Err(f) => (f.done, Some(f.error)),
        };
        let mut each = each.into_iter();
        for (_, reply) in self.writes {
            let outcome = match (each.next(), &rest) {
                (Some(outcome), _) => outcome,
                (None, Some(e)) => Err(e.clone()),
                (None, None) => Err(StoreError::Backend("no outcome for a write".into())),
            };
            let _ = reply.send(outcome);
        }
        for reply in self.barriers {
            let _ = reply.send(batch_result.clone());
        }
        self.closing
    }
}

/// After a close: refuses anything still queued (never silently dropped) and answers the
/// close.
pub(crate) fn finish(rx: &mut mpsc::UnboundedReceiver<Op>, closing: Option<Reply>) {
    rx.close();
    while let Ok(op) = rx.try_recv() {
        let _ = op.reply().send(Err(StoreError::Closed));
    }
    if let Some(reply) = closing {
        let _ = reply.send(Ok(0));
    }
}

/// Rows a write adds (what `batch_max` counts).
pub(crate) fn rows(write: &Write) -> usize {
    match write {
        Write::Ticks(t) => t.len(),
        Write::Candles { candles, .. } => candles.len(),
        Write::Fenced { write, .. } => rows(write),
        Write::WithEvents { write, events } => rows(write) + events.len(),
        Write::Relayed { positions } => positions.len(),
        Write::AcquireLease { .. }
        | Write::ReleaseLease { .. }
        | Write::Journal { .. }
        | Write::Snapshot { .. }
        | Write::Chat(_)
        | Write::CreateUser { .. }
        | Write::CreateAlert(_)
        | Write::AlertFired { .. }
        | Write::DeleteAlert { .. }
        | Write::Watchlist { .. }
        | Write::Holdings { .. }
        | Write::Notify(_)
        | Write::PruneInbox { .. }
        | Write::PruneHoldings { .. } => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fence;

    fn journal(epoch: u64, seq: u64) -> Write {
        let fence = Fence {
            kind: "book".into(),
            key: "KRW-BTC".into(),
            epoch,
        };
        Write::Journal {
            kind: "book".into(),
            key: "KRW-BTC".into(),
            seq,
            entry: vec![1],
        }
        .fenced(&fence)
    }

    /// Gathers `writes` as one batch, settles it with `outcome`, and returns what each
    /// write was answered (writes refused at gathering are answered at once).
    fn run(
        halted: &mut Halted,
        writes: Vec<Write>,
        outcome: impl FnOnce(usize) -> Outcomes,
    ) -> Vec<Result<u64, StoreError>> {
        let (submitter, mut rx, stats) = Submitter::new();
        let acks: Vec<Ack> = writes.into_iter().map(|w| submitter.submit(w)).collect();
        let first = rx.try_recv().ok();
        if let Some(first) = first {
            let batch = Batch::gather(first, &mut rx, 1000, halted);
            let outcomes = outcome(batch.writes.len());
            batch.settle(outcomes, Duration::ZERO, &stats, halted, "test");
        }
        acks.into_iter()
            .map(|mut a| a.0.try_recv().unwrap_or(Err(StoreError::Closed)))
            .collect()
    }

    #[test]
    fn a_failed_batch_halts_its_leases_until_a_take_over() {
        let mut halted = Halted::default();
        let failed = run(&mut halted, vec![journal(3, 5)], |_| {
            Err(StoreError::Backend("disk full".into()).into())
        });
        assert!(
            matches!(failed[0], Err(StoreError::Backend(_))),
            "{failed:?}"
        );

        // Entry 6 under the same epoch must not land after entry 5 failed.
        let after = run(&mut halted, vec![journal(3, 6)], |n| Ok(vec![Ok(0); n]));
        assert!(
            matches!(&after[0], Err(StoreError::Halted { epoch: 3, .. })),
            "{after:?}"
        );

        // A take-over clears it; the new epoch writes again.
        let take_over = Write::AcquireLease {
            kind: "book".into(),
            key: "KRW-BTC".into(),
            node: "n1".into(),
        };
        let next = run(&mut halted, vec![take_over, journal(4, 5)], |n| {
            Ok(vec![Ok(4); n])
        });
        assert!(next.iter().all(|r| r.is_ok()), "{next:?}");
        assert!(halted.0.is_empty());
    }

    #[test]
    fn a_newer_epoch_is_not_halted_by_an_older_failure() {
        let mut halted = Halted::default();
        run(&mut halted, vec![journal(3, 5)], |_| {
            Err(StoreError::Backend("connection reset".into()).into())
        });
        let newer = run(&mut halted, vec![journal(4, 5)], |n| Ok(vec![Ok(0); n]));
        assert!(newer[0].is_ok(), "{newer:?}");
        // A per-write refusal (fenced, conflict) is not a failed batch: nothing is halted.
        let mut fresh = Halted::default();
        run(&mut fresh, vec![journal(3, 5)], |_| {
            Ok(vec![Err(StoreError::Conflict("journal position 5".into()))])
        });
        assert!(fresh.0.is_empty());
    }

    #[test]
    fn a_batch_applied_in_part_answers_what_landed() {
        let mut halted = Halted::default();
        let other = |epoch: u64, seq: u64| {
            let fence = Fence {
                kind: "account".into(),
                key: "7".into(),
                epoch,
            };
            Write::Journal {
                kind: "account".into(),
                key: "7".into(),
                seq,
                entry: vec![2],
            }
            .fenced(&fence)
        };
        let user = Write::CreateUser {
            username: "ann".into(),
            password_hash: "h".into(),
            created_at: 1,
        };
        // The user and the account's entry landed; the book's entry failed, the rest was
        // never sent.
        let answers = run(
            &mut halted,
            vec![user, other(2, 1), journal(3, 5), other(2, 2)],
            |_| {
                Err(Failed {
                    done: vec![Ok(41), Ok(0)],
                    error: StoreError::Backend("timed out".into()),
                })
            },
        );
        assert!(matches!(answers[0], Ok(41)), "{answers:?}");
        assert!(answers[1].is_ok(), "{answers:?}");
        assert!(answers[2].is_err() && answers[3].is_err(), "{answers:?}");
        // Both leases written from the failure on halt: the book's and the account's.
        let after = run(&mut halted, vec![journal(3, 6), other(2, 3)], |n| {
            Ok(vec![Ok(0); n])
        });
        assert!(
            after
                .iter()
                .all(|a| matches!(a, Err(StoreError::Halted { .. }))),
            "{after:?}"
        );
    }

    #[test]
    fn leases_written_only_before_a_failure_do_not_halt() {
        let mut halted = Halted::default();
        let other = Write::Journal {
            kind: "account".into(),
            key: "7".into(),
            seq: 1,
            entry: vec![2],
        }
        .fenced(&Fence {
            kind: "account".into(),
            key: "7".into(),
            epoch: 2,
        });
        run(&mut halted, vec![other, journal(3, 5)], |_| {
            Err(Failed {
                done: vec![Ok(0)],
                error: StoreError::Backend("timed out".into()),
            })
        });
        // The account's entry landed before the book's failed: only the book halts.
        assert_eq!(
            halted.0.keys().cloned().collect::<Vec<_>>(),
            vec![("book".to_string(), "KRW-BTC".to_string())]
        );
    }
}
