//! The write queue every backend shares: writes are submitted in order without waiting,
//! a single writer takes whatever has queued up as one batch (group commit), commits it and
//! answers each write with its own outcome. Backends differ only in how a batch commits.

use crate::{Ack, StoreError, Write};
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

    /// Batch statistics so far.
    pub(crate) fn stats(&self) -> WriterStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
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
    pub(crate) fn gather(
        first: Op,
        rx: &mut mpsc::UnboundedReceiver<Op>,
        batch_max: usize,
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
                Op::Write(w, reply) => {
                    batch.rows += rows(&w);
                    batch.writes.push((w, reply));
                }
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
    /// batch) and the barriers with the batch's result; records metrics. Returns the close
    /// request that ended the batch, if any.
    pub(crate) fn settle(
        self,
        outcomes: Result<Vec<Result<u64, StoreError>>, StoreError>,
        elapsed: Duration,
        stats: &Mutex<WriterStats>,
        backend: &str,
    ) -> Option<Reply> {
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
            Err(e) => {
                tracing::error!(error = %e, writes = self.writes.len(), backend, "storage batch failed");
                Err(e.clone())
            }
        };
        match outcomes {
            Ok(each) => {
                for ((_, reply), outcome) in self.writes.into_iter().zip(each) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                for (_, reply) in self.writes {
                    let _ = reply.send(Err(e.clone()));
                }
            }
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
        Write::AcquireLease { .. }
        | Write::ReleaseLease { .. }
        | Write::Journal { .. }
        | Write::Snapshot { .. }
        | Write::Chat(_)
        | Write::CreateUser { .. }
        | Write::CreateAlert(_)
        | Write::AlertFired { .. }
        | Write::DeleteAlert { .. }
        | Write::Notify(_) => 1,
    }
}
