//! Durable state behind small traits, so the embedded default (SQLite) and the scale-out
//! backends pass one contract suite ([`contract`]).
//!
//! Writes are *submitted* synchronously (ordered, never lost once submitted unless the
//! process dies) and *acknowledged* asynchronously when their batch commits: a caller that
//! must not lose a write awaits its [`Ack`]; a caller that only needs order (ticks of a live
//! feed) drops it. [`MarketStore::flush`] is a barrier over everything submitted before it.

pub mod codec;
pub mod contract;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod postgres;
mod queue;
pub mod records;
pub mod retention;
pub mod scylla;
mod sql;
pub mod sqlite;

pub use records::{
    AlertFiring, AlertRecord, AlertStatus, Candle, ChatMessage, Interval, Notification,
    OutboxEvent, Side, Tick,
};

pub use lease::Lease;
pub use postgres::PgStore;
pub use queue::WriterStats;
pub use scylla::ScyllaStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use tokio::sync::oneshot;

/// Opens the store `settings` name: SQLite at `sqlite_path` (or `settings.path`), or a
/// connection to PostgreSQL or ScyllaDB. Also returns where it is, for messages (never a
/// password).
pub async fn open(
    settings: &bourse_config::StorageSettings,
    sqlite_path: &std::path::Path,
) -> Result<(std::sync::Arc<dyn MarketStore>, String), StoreError> {
    match settings.backend.as_str() {
        "postgres" => {
            let url = settings.url.as_deref().unwrap_or_default();
            let store = PgStore::connect(url, settings.batch_max, settings.readers).await?;
            let at = format!("postgres {}", store.target());
            Ok((std::sync::Arc::new(store), at))
        }
        "scylla" => {
            let store = ScyllaStore::connect(
                &settings.nodes,
                &settings.keyspace,
                settings.replication_factor,
                settings.batch_max,
            )
            .await?;
            let at = format!("scylla {}", store.target());
            Ok((std::sync::Arc::new(store), at))
        }
        "sqlite" => {
            let store = SqliteStore::open(sqlite_path, settings.batch_max)?;
            Ok((
                std::sync::Arc::new(store),
                format!("sqlite {}", sqlite_path.display()),
            ))
        }
        other => Err(StoreError::Backend(format!(
            "unknown storage backend '{other}'"
        ))),
    }
}

/// A storage failure, with context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend: {0}")]
    Backend(String),
    #[error("storage is closed")]
    Closed,
    /// The write's lease epoch is no longer the current one: another activation owns the
    /// entity now. The writer must stop (single activation).
    #[error("{kind}/{key}: epoch {epoch} is fenced (lease now at {current})")]
    Fenced {
        kind: String,
        key: String,
        epoch: u64,
        current: u64,
    },
    /// A unique key is taken (a username, a journal position).
    #[error("conflict: {0}")]
    Conflict(String),
    /// An earlier write under this epoch failed, so nothing after it may land (a journal
    /// with a hole in it could not be replayed). The activation must stop; the next
    /// take-over starts from what storage holds.
    #[error(
        "{kind}/{key}: an earlier write under epoch {epoch} failed; take the entity over again"
    )]
    Halted {
        kind: String,
        key: String,
        epoch: u64,
    },
}

/// A registered user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: u64,
    pub username: String,
    /// The argon2 PHC string.
    pub password_hash: String,
    pub created_at: i64,
}

/// Which lease a write belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub kind: String,
    pub key: String,
    pub epoch: u64,
}

/// One write submitted to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Trades; a `(symbol, trade_id)` already stored is left as it is (replays are no-ops).
    Ticks(Vec<Tick>),
    /// Closed (or rebuilt) candles; a bucket already stored is replaced.
    Candles {
        symbol: String,
        candles: Vec<(Interval, Candle)>,
    },
    /// Applies `write` only while `fence.epoch` is the lease's current epoch; otherwise the
    /// ack is [`StoreError::Fenced`] and nothing is written (other writes of the batch are).
    Fenced { fence: Fence, write: Box<Write> },
    /// Takes the lease of `kind/key` for `node` (compare-and-set in one transaction):
    /// its epoch goes up by one, fencing every earlier holder.
    AcquireLease {
        kind: String,
        key: String,
        node: String,
    },
    /// Clears the lease's owner if `epoch` still holds it.
    ReleaseLease {
        kind: String,
        key: String,
        epoch: u64,
    },
    /// Appends entry `seq` to the journal of `kind/key` (an entity's accepted commands).
    /// A position already written is a [`StoreError::Conflict`] and changes nothing.
    Journal {
        kind: String,
        key: String,
        seq: u64,
        entry: Vec<u8>,
    },
    /// Replaces the snapshot of `kind/key`, taken after journal entry `seq`, and drops the
    /// journal entries it covers.
    Snapshot {
        kind: String,
        key: String,
        seq: u64,
        state: Vec<u8>,
    },
    /// A chat message; a `(room, message_id)` already stored is left as it is.
    Chat(ChatMessage),
    /// Registers a user; the ack's value is the new user id. A taken username is a
    /// [`StoreError::Conflict`].
    CreateUser {
        username: String,
        password_hash: String,
        created_at: i64,
    },
    /// Stores a new alert rule, armed; the ack's value is its id (`alert_id` is ignored).
    CreateAlert(AlertRecord),
    /// Records firing `firing.n` of a rule: history, `last_fired_at`, `fired_count`, and for
    /// a one-shot rule the status `fired`. A firing already stored changes nothing.
    AlertFired { firing: AlertFiring, one_shot: bool },
    /// Marks a rule deleted.
    DeleteAlert { alert_id: u64 },
    /// Replaces a user's watchlist with `symbols`, in the user's order (last write wins).
    Watchlist { user_id: u64, symbols: Vec<String> },
    /// What a user holds from `ts` (ms) on (`data`, the account's own encoding); a point
    /// already stored at `(user_id, ts)` is replaced.
    Holdings { user_id: u64, ts: i64, data: String },
    /// Puts an entry in a user's inbox; a `(user_id, key)` already stored is left as it is.
    Notify(Notification),
    /// `write`, and, in the same transaction and only if it is applied, `events` into the
    /// outbox the Kafka relay drains (SQLite and PostgreSQL only).
    WithEvents {
        write: Box<Write>,
        events: Vec<OutboxEvent>,
    },
    /// Removes relayed events from the outbox, by position.
    Relayed { positions: Vec<u64> },
    /// Drops inbox entries older than `before` (ms) and, per user, all but the newest
    /// `keep_per_user`; the ack's value is how many went. An entry's key is forgotten with
    /// it, so retention must outlast any re-delivery of the event it records.
    PruneInbox { before: i64, keep_per_user: u64 },
    /// Drops holdings points older than `before` (ms) except each user's newest of them,
    /// which is still what the user held at `before`; the ack's value is how many went.
    PruneHoldings { before: i64 },
}

impl Fence {
    /// The refusal of a write under this fence once epoch `current` holds the lease.
    pub fn refusal(&self, current: Option<u64>) -> StoreError {
        StoreError::Fenced {
            kind: self.kind.clone(),
            key: self.key.clone(),
            epoch: self.epoch,
            current: current.unwrap_or(0),
        }
    }

    /// The write that gives this lease up (a no-op once a newer activation holds it).
    pub fn release(&self) -> Write {
        Write::ReleaseLease {
            kind: self.kind.clone(),
            key: self.key.clone(),
            epoch: self.epoch,
        }
    }
}

impl Write {
    /// This write with `events` for the outbox (itself when there are none).
    pub fn with_events(self, events: Vec<OutboxEvent>) -> Write {
        if events.is_empty() {
            return self;
        }
        Write::WithEvents {
            write: Box::new(self),
            events,
        }
    }

    /// The write inside its wrappers: the fences it must pass (outermost first), the
    /// events that go with it, and the write itself.
    pub(crate) fn layers(&self) -> (Vec<&Fence>, &[OutboxEvent], &Write) {
        let (mut fences, mut events, mut write) = (Vec::new(), &[][..], self);
        loop {
            match write {
                Write::Fenced {
                    fence,
                    write: inner,
                } => {
                    fences.push(fence);
                    write = inner;
                }
                Write::WithEvents {
                    write: inner,
                    events: e,
                } => {
                    events = e;
                    write = inner;
                }
                _ => return (fences, events, write),
            }
        }
    }

    /// This write, applied only under `fence`.
    pub fn fenced(self, fence: &Fence) -> Write {
        Write::Fenced {
            fence: fence.clone(),
            write: Box::new(self),
        }
    }
}

/// Resolves when a submitted write is durable. Its value is the lease epoch for
/// [`Write::AcquireLease`], the new id for the writes that create one, the entries dropped
/// for [`Write::PruneInbox`], 0 otherwise.
#[derive(Debug)]
pub struct Ack(oneshot::Receiver<Result<u64, StoreError>>);

impl Ack {
    /// A pair: the writer completes the sender, the caller awaits the ack.
    pub fn pair() -> (oneshot::Sender<Result<u64, StoreError>>, Ack) {
        let (tx, rx) = oneshot::channel();
        (tx, Ack(rx))
    }

    /// Waits until the write is committed.
    pub async fn wait(self) -> Result<(), StoreError> {
        self.value().await.map(|_| ())
    }

    /// Waits until the write is committed, with its value.
    pub async fn value(self) -> Result<u64, StoreError> {
        self.0.await.unwrap_or(Err(StoreError::Closed))
    }
}

/// Reads of market data: trades (ticks) and candles.
#[async_trait]
pub trait MarketDataStore: Send + Sync {
    /// The newest `limit` trades of `symbol`, newest first.
    async fn recent_ticks(&self, symbol: &str, limit: usize) -> Result<Vec<Tick>, StoreError>;

    /// Trades of `symbol` with `ts >= from_ts`, oldest first.
    async fn ticks_since(&self, symbol: &str, from_ts: i64) -> Result<Vec<Tick>, StoreError>;

    /// The highest stored trade id of `symbol` (0 when none).
    async fn last_trade_id(&self, symbol: &str) -> Result<u64, StoreError>;

    /// Up to `limit` stored candles with `open_time < end` (all when `end` is `None`), oldest
    /// first (the newest `limit` of them).
    async fn candles(
        &self,
        symbol: &str,
        interval: Interval,
        end: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Candle>, StoreError>;

    /// Stored candles with `from <= open_time < to`, oldest first.
    async fn candles_between(
        &self,
        symbol: &str,
        interval: Interval,
        from: i64,
        to: i64,
    ) -> Result<Vec<Candle>, StoreError>;
}

/// Reads of entity journals, snapshots and leases (the single-activation state).
#[async_trait]
pub trait JournalStore: Send + Sync {
    /// The lease of `kind/key`: `(owner, epoch)`, owner empty once released.
    async fn lease(&self, kind: &str, key: &str) -> Result<Option<(String, u64)>, StoreError>;

    /// The newest snapshot of `kind/key`: `(seq, state)`.
    async fn snapshot(&self, kind: &str, key: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Journal entries of `kind/key` with `seq > after`, in order.
    async fn journal_after(
        &self,
        kind: &str,
        key: &str,
        after: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
}

/// Reads of chat history.
#[async_trait]
pub trait ChatStore: Send + Sync {
    /// Up to `limit` messages of `room` with ids below `before` (all when `None`), newest
    /// first.
    async fn chat_history(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError>;
}

/// Reads of registered users and what they keep beside their accounts.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// The user registered as `username`.
    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;

    /// A user's watchlist, in the order it was written (empty when none was).
    async fn watchlist(&self, user_id: u64) -> Result<Vec<String>, StoreError>;

    /// A user's holdings points `(ts, data)` that say what the user held from `from` to
    /// `to` (ms): the newest at or before `from`, if any, then every one after it up to
    /// `to`, oldest first.
    async fn holdings(
        &self,
        user_id: u64,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String)>, StoreError>;

    /// Every user's holdings point in force at `ts` (the newest at or before it), as
    /// `(user_id, ts, data)`: what the rankings are rebuilt from.
    async fn holdings_at(&self, ts: i64) -> Result<Vec<(u64, i64, String)>, StoreError>;
}

/// Reads of alert rules, their firings and users' notification inboxes.
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// One alert rule, whatever its status.
    async fn alert(&self, alert_id: u64) -> Result<Option<AlertRecord>, StoreError>;

    /// A user's rules that are not deleted, oldest first.
    async fn alerts_of(&self, user_id: u64) -> Result<Vec<AlertRecord>, StoreError>;

    /// How many rules a user holds (not counting deleted ones).
    async fn alert_count(&self, user_id: u64) -> Result<usize, StoreError>;

    /// The armed rules on `symbol` (what its trigger index is rebuilt from).
    async fn armed_alerts(&self, symbol: &str) -> Result<Vec<AlertRecord>, StoreError>;

    /// A user's newest `limit` firings, newest first.
    async fn alert_history(
        &self,
        user_id: u64,
        limit: usize,
    ) -> Result<Vec<AlertFiring>, StoreError>;

    /// A user's inbox entries with `ts > since`, oldest first, at most `limit`.
    async fn notifications(
        &self,
        user_id: u64,
        since: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError>;
}

/// The outbox of events for the Kafka relay.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Up to `limit` events not yet relayed, by position (oldest first), with their
    /// positions.
    async fn outbox(&self, limit: usize) -> Result<Vec<(u64, OutboxEvent)>, StoreError>;
}

/// The durable store: every domain's reads, and one ordered queue of writes. Writes stay one
/// [`Write`] enum on one queue because their order crosses domains (an entity's journal
/// entry, its chat message and its lease release apply in the order they were submitted);
/// a backend applies each domain's writes in its own module.
#[async_trait]
pub trait MarketStore:
    MarketDataStore + JournalStore + ChatStore + UserStore + AlertStore + OutboxStore + 'static
{
    /// Submits a write; it is applied in submission order.
    fn submit(&self, write: Write) -> Ack;

    /// Resolves once everything submitted before the call is durable.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Takes the lease of `kind/key` for `node`; returns the new epoch.
    async fn acquire_lease(&self, kind: &str, key: &str, node: &str) -> Result<Fence, StoreError> {
        let epoch = self
            .submit(Write::AcquireLease {
                kind: kind.into(),
                key: key.into(),
                node: node.into(),
            })
            .value()
            .await?;
        Ok(Fence {
            kind: kind.into(),
            key: key.into(),
            epoch,
        })
    }

    /// Takes the lease of `kind/key` for `owner` at once, beside the ordered queue; returns
    /// the new epoch. It waits on nothing this process submitted, so it suits only a lease
    /// no write is fenced by: a node's beat (the cluster's witness) takes its own lease this
    /// way every heartbeat, and a queue held up behind a slow batch, or behind another
    /// node's row locks during a take-over, must not read as the node's death.
    async fn acquire_lease_now(
        &self,
        kind: &str,
        key: &str,
        owner: &str,
    ) -> Result<u64, StoreError>;

    /// Takes an entity over for `node`: everything this process submitted before is durable
    /// first (so a restart here reads its own writes), then the lease, which fences every
    /// earlier activation, here or on another node.
    async fn take_over(&self, kind: &str, key: &str, node: &str) -> Result<Fence, StoreError> {
        self.flush().await?;
        self.acquire_lease(kind, key, node).await
    }

    /// Commits what is pending and stops accepting writes.
    async fn close(&self) -> Result<(), StoreError>;
}
