//! Typed settings for a bourse node: a TOML file, then `BOURSE_*` environment overrides,
//! then defaults, validated once at start-up so a bad value fails loudly with the key that
//! holds it rather than deep inside a running node.
//!
//! Environment overrides name a key path with `__` between sections (a `BOURSE_` name
//! without `__` is not an override: `bourse ctl` reads `BOURSE_ADMIN_TOKEN` and `BOURSE_URL`):
//! `BOURSE_GATEWAY__LISTEN=127.0.0.1:9000`, `BOURSE_FEED__TRADES_PER_SEC=100`. The value is
//! read as a TOML value when it parses as one (numbers, booleans, arrays), else as a string.

pub mod decimal;
pub mod hours;
mod market;

pub use decimal::{DecimalError, Step};
pub use market::{Market, Markets, Venue, is_symbol_shape};

use hours::{Hours, HoursSettings};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A configuration problem, named by the key that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {reason}")]
pub struct ConfigError {
    /// Dotted key path (`gateway.listen`, `symbols[2].tick_size`).
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Everything a node reads at start-up. Every section has defaults, so an empty file (or
/// none, for `bourse demo`) is a working single-node configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub node: NodeSettings,
    pub gateway: GatewaySettings,
    pub cluster: ClusterSettings,
    pub supervision: SupervisionSettings,
    pub storage: StorageSettings,
    pub streams: StreamSettings,
    pub feed: FeedSettings,
    pub log: LogSettings,
    pub admin: AdminSettings,
    pub auth: AuthSettings,
    pub trading: TradingSettings,
    pub participants: ParticipantsSettings,
    pub chat: ChatSettings,
    pub alerts: AlertSettings,
    pub redis: RedisSettings,
    pub kafka: KafkaSettings,
    pub upbit: UpbitSettings,
    /// Named trading hours (`[hours.krx]`) that markets refer to; none: every market
    /// trades around the clock.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hours: BTreeMap<String, HoursSettings>,
    pub symbols: Vec<SymbolSettings>,
}

/// Redis, optional: with a URL, the login and registration throttles hold across every node
/// that names the same server; without one (or while it is unreachable) each node throttles
/// on its own (docs/OPERATIONS.md "Redis").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]` (no TLS yet); none: in memory.
    pub url: Option<String>,
    /// How long one Redis round trip may take before the node decides on its own, ms.
    pub timeout_ms: u64,
    /// How long a REST ticker answer is shared through Redis, ms (0: not cached).
    pub ticker_cache_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: None,
            timeout_ms: 250,
            ticker_cache_ms: 1000,
        }
    }
}

/// Kafka, optional (docs/OPERATIONS.md "Kafka"): with `feed.kind = "kafka"` the cluster
/// consumes its trades from `trades_topic`, its nodes sharing the partitions by the ring.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Vec<String>,
    /// Trades to ingest, keyed by symbol.
    pub trades_topic: String,
    /// Where every durable event is relayed (with `relay_events`).
    pub events_topic: String,
    /// Relays every durable event (trades, fills, order changes, fired alerts, chat
    /// messages) to `events_topic` through an outbox in storage (SQLite or PostgreSQL).
    pub relay_events: bool,
    /// The consumer group whose committed positions record how far the cluster has
    /// ingested `trades_topic`.
    pub group: String,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: Vec::new(),
            trades_topic: "bourse.trades".into(),
            events_topic: "bourse.events".into(),
            relay_events: false,
            group: "bourse-ingest".into(),
        }
    }
}

/// Upbit's live trades, with `feed.kind = "upbit"` (docs/OPERATIONS.md "Upbit"): each node
/// subscribes to the codes of the symbols it owns on the ring.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpbitSettings {
    /// Upbit's WebSocket endpoint (`wss://`), or a server that speaks its format.
    pub url: String,
    /// The symbols to follow, each a configured symbol named as Upbit names its market
    /// (`KRW-BTC`); empty: every configured symbol.
    pub codes: Vec<String>,
    /// How long a trade waits for earlier ones that arrive out of order, ms.
    pub reorder_ms: u64,
    /// Silence (no message, no answer to a ping) after which the source counts as stalled
    /// and is dialled again, s.
    pub stall_after_s: u64,
}

impl Default for UpbitSettings {
    fn default() -> Self {
        UpbitSettings {
            url: "wss://api.upbit.com/websocket/v1".into(),
            codes: Vec::new(),
            reorder_ms: 250,
            stall_after_s: 30,
        }
    }
}

/// Whether `name` is a legal Kafka topic or group name: 1..=249 of `[A-Za-z0-9._-]`.
pub fn valid_kafka_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Chat rooms (docs/PROTOCOL.md "Chat").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChatSettings {
    /// Messages one user may post per second (per room), then `rate_limited`.
    pub messages_per_sec: u32,
    /// Messages one user may post per minute over all rooms, then `rate_limited`: counted
    /// in Redis (across the cluster) where `[redis] url` is set, per node otherwise.
    pub messages_per_user_per_min: u32,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            messages_per_sec: 5,
            messages_per_user_per_min: 120,
        }
    }
}

/// Price alerts (docs/PROTOCOL.md "Alerts").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// The window a `change_pct` rule measures from, in seconds: whole minutes, at most a
    /// day (the default, like `change_24h` of the ticker).
    pub change_window_s: u64,
    /// Rules one user may hold (not counting deleted ones).
    pub max_per_user: usize,
    /// Inbox entries (fired alerts, fills) older than this many days are dropped.
    pub inbox_keep_days: u32,
    /// A user's inbox keeps at most this many entries, the newest.
    pub inbox_max_per_user: usize,
    /// How often each node applies the two inbox limits above, in seconds.
    pub inbox_sweep_every_s: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            change_window_s: 86_400,
            max_per_user: 1_000,
            inbox_keep_days: 30,
            inbox_max_per_user: 1_000,
            inbox_sweep_every_s: 3_600,
        }
    }
}

/// The longest `gateway.write_delay_ms`: a stream held longer would look stalled to a
/// trading client.
pub const MAX_WRITE_DELAY_MS: u64 = 1_000;

/// The secret shipped in examples; a real deployment must set its own.
pub const EXAMPLE_AUTH_SECRET: &str = "bourse-example-secret-change-me";

/// User login and tokens (docs/PROTOCOL.md "Auth").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HS256 key that signs session tokens; every node of a cluster needs the same one.
    pub secret: String,
    /// How long a token stays valid, seconds.
    pub token_ttl_s: u64,
    /// Argon2id memory cost per password hash, KiB (OWASP minimum: 19456).
    pub argon2_memory_kib: u32,
    /// Argon2id passes per password hash.
    pub argon2_iterations: u32,
    /// Password hashes computed at once (each holds `argon2_memory_kib`); 0 = one per CPU
    /// core. Bounds the memory a burst of logins can take.
    pub hash_workers: usize,
    /// How long a login or registration waits for a hashing slot before `503 unavailable`,
    /// ms.
    pub hash_queue_ms: u64,
    /// Login attempts per username per minute (a burst of as many), then `429`.
    pub login_per_user_per_min: u32,
    /// Login attempts per client IP per minute, then `429`.
    pub login_per_ip_per_min: u32,
    /// Registrations per client IP per minute, then `429`.
    pub register_per_ip_per_min: u32,
}

/// Mock trading: demo balances, order limits, journaling.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TradingSettings {
    /// What every new account starts with, per asset, as decimal strings.
    pub grants: BTreeMap<String, String>,
    /// A market buy holds, and never pays more than, the best ask plus this percentage.
    pub market_protect_pct: u32,
    /// A limit order priced more than this percentage away from the book's last trade
    /// (before any, the start price) is rejected: one user cannot print a trade at a
    /// thousand times the market and move the ticker there.
    pub price_band_pct: u32,
    /// Open orders one account may have.
    pub max_open_orders: usize,
    /// Journal entries between snapshots of a book or an account.
    pub snapshot_every: u64,
    /// How far from a mirror market's feed price a market order fills, in basis points
    /// (at least one tick): a buy at the price plus this, a sell at the price less it.
    pub slippage_bps: u32,
    /// Days a reserved order (placed while its market was closed) waits for an open before
    /// it expires, counted from when it was placed. 3 carries an order placed after a
    /// Friday close into Monday's session.
    pub reserve_days: u32,
    /// The venue of every market that names none (`exchange` or `mirror`); unset:
    /// `exchange` under the simulator or no feed, `mirror` under Kafka or Upbit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue: Option<String>,
}

/// The simulated participants of `exchange` markets under the simulator (docs/DESIGN.md
/// "Venues"): a market maker quoting both sides around a moving fair price, and takers
/// crossing it at `feed.trades_per_sec`, each from its own account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ParticipantsSettings {
    /// Off: exchange markets are made by their users alone (as seed 003's own coin is),
    /// while the simulator still drives the mirror markets.
    pub enabled: bool,
    /// From the best bid to the best ask, in basis points of the fair price.
    pub spread_bps: u32,
    /// Price levels quoted on each side.
    pub depth: u32,
    /// Between neighbouring levels of one side, in basis points of the fair price.
    pub step_bps: u32,
    /// Each level's size, in whole units of the market's quote currency.
    pub level_notional: u64,
    /// How often the market maker moves its quotes to the fair price and refills them, ms.
    pub refresh_ms: u64,
}

impl Default for ParticipantsSettings {
    fn default() -> Self {
        ParticipantsSettings {
            enabled: true,
            spread_bps: 10,
            depth: 5,
            step_bps: 5,
            level_notional: 2_000_000,
            refresh_ms: 1000,
        }
    }
}

/// Admin API access.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Bearer token for `/admin/...`; unset disables the admin endpoints.
    pub token: Option<String>,
    /// Whether `/metrics` answers without the admin token. Unset: yes when the gateway
    /// listens on a loopback address only, no otherwise.
    pub metrics_public: Option<bool>,
}

/// Identity and data location of this node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    /// Unique node name in the cluster; also the hash-ring identity.
    pub name: String,
    /// Where the embedded store and node-local files live.
    pub data_dir: PathBuf,
    /// For tests only: shifts this node's clock (market hours, orders, candles, expiry) by
    /// this many milliseconds, so a test can start a node at a market's open or close.
    pub clock_offset_ms: i64,
}

/// Client-facing server limits (docs/PROTOCOL.md "Limits").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// `host:port` the WebSocket/SSE/REST server binds.
    pub listen: String,
    /// Largest accepted WebSocket frame/message, bytes.
    pub max_frame_bytes: usize,
    /// Requests per second per connection before `rate_limited`.
    pub requests_per_sec: u32,
    /// Channels one connection may hold.
    pub max_channels: usize,
    /// Outbound events queued per connection before a slow consumer is closed.
    pub outbound_queue: usize,
    /// Once an event is queued for a connection, wait this many milliseconds for more
    /// before writing, so they share one socket write: less CPU per delivered event for up
    /// to this much more latency. 0 (the default) writes at once.
    pub write_delay_ms: u64,
    /// Server ping interval, seconds.
    pub ping_interval_s: u64,
    /// A connection silent this long is closed, seconds.
    pub idle_timeout_s: u64,
    /// SSE comment keep-alive interval, seconds.
    pub sse_keepalive_s: u64,
    /// An HTTP request head must arrive within this many seconds of the connection opening
    /// or of the previous response, else the connection is closed: it bounds slow-header
    /// clients and idle keep-alive connections alike.
    pub header_read_timeout_s: u64,
    /// Origins browsers may call this gateway from (CORS), e.g. `https://app.example`;
    /// `["*"]` allows any; empty (the default) sends no CORS headers.
    pub cors_origins: Vec<String>,
    /// Open TCP connections (HTTP, WebSocket, SSE) this gateway holds; one more is answered
    /// `503 unavailable` and closed, so a flood cannot take the node's memory or descriptors.
    pub max_connections: usize,
    /// Open connections one client IP address may hold; one more is answered `503`.
    pub max_connections_per_ip: usize,
    /// The listen socket's backlog: connections the kernel holds for `accept` during a
    /// connect storm (capped by the kernel's `net.core.somaxconn`).
    pub listen_backlog: u32,
}

/// Sharding runtime and cluster membership.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// `ip:port` of this node's cluster listener; unset runs a standalone node.
    pub listen: Option<String>,
    /// Shared secret every node of one cluster presents; a node with another is refused.
    pub cookie: String,
    /// Cluster addresses (`ip:port`) of nodes to join through.
    pub seeds: Vec<String>,
    /// How often a node announces itself to its peers, ms.
    pub heartbeat_ms: u64,
    /// A peer silent this long is `down`, ms.
    pub heartbeat_timeout_ms: u64,
    /// How long the set of silent members must hold before the side that keeps serving
    /// drops them from its agreed membership and their entities move, ms. Peers cut off
    /// together are noticed up to a tick or two apart: shorter than that risks both sides
    /// of a split serving for a moment, so it is at least `heartbeat_timeout_ms`.
    pub stable_after_ms: u64,
    /// Virtual nodes per member on the hash ring.
    pub vnodes: u32,
    /// An entity with no message for this long is passivated (seconds; 0 = never).
    pub passivate_idle_s: u64,
    /// How long an `ask` waits for its reply before failing `unavailable`, ms.
    pub ask_timeout_ms: u64,
    /// Mutual TLS between nodes; unset, the cluster port speaks plain TCP (the cookie
    /// still authenticates, but anyone on the path can read and forge the traffic).
    pub tls: Option<ClusterTls>,
}

/// Certificates for the cluster port: every node presents `cert` (signed by `ca`) and
/// accepts only peers whose certificate `ca` signed, so the cookie alone no longer lets a
/// node in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    /// PEM certificate chain of this node; it must name the host of `cluster.listen` (an IP
    /// or DNS subject alternative name), which is how its peers dial and verify it.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM certificate(s) of the authority that signs every node of the cluster.
    pub ca: PathBuf,
}

/// Restart policy for supervised entities.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionSettings {
    /// Restarts allowed within `within_s` before the failure escalates.
    pub max_restarts: u32,
    /// The restart-intensity window, seconds.
    pub within_s: u64,
    /// First restart delay, ms; doubles per consecutive failure.
    pub backoff_min_ms: u64,
    /// Cap on the restart delay, ms.
    pub backoff_max_ms: u64,
}

/// Which durable store and how it batches.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// `sqlite` (embedded default, one host), `postgres` (nodes on separate hosts) or
    /// `scylla` (the scale-out store).
    pub backend: String,
    /// SQLite file; defaults to `<data_dir>/bourse.db`.
    pub path: Option<PathBuf>,
    /// PostgreSQL: `postgres://user[:password]@host[:port]/db`.
    pub url: Option<String>,
    /// PostgreSQL: connections kept for reads, beside the writer's one.
    pub readers: usize,
    /// ScyllaDB: contact points, `host:port`.
    pub nodes: Vec<String>,
    /// ScyllaDB: the keyspace (created when missing).
    pub keyspace: String,
    /// ScyllaDB: copies of every row when the keyspace is created (QUORUM of them answer
    /// each read and write).
    pub replication_factor: u32,
    /// Most writes committed in one transaction.
    pub batch_max: usize,
}

/// Live stream bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Events a publisher keeps per channel for `since` / `Last-Event-ID` resume.
    pub replay_events: usize,
}

/// Market data source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FeedSettings {
    /// `simulator`, `kafka` (trades from `kafka.trades_topic`), `upbit` (Upbit's live
    /// trades, `[upbit]`) or `none`.
    pub kind: String,
    /// Seed of the simulator; the same seed gives the same trade sequence.
    pub seed: u64,
    /// Simulated trades per second per symbol.
    pub trades_per_sec: u32,
}

/// Logging output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter (`info`, `bourse=debug,warp=info`); `RUST_LOG` wins when set.
    pub level: String,
}

/// One tradable market.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SymbolSettings {
    /// `QUOTE-BASE`, e.g. `KRW-BTC`.
    pub symbol: String,
    /// Price step, a power of ten as a decimal string.
    pub tick_size: String,
    /// Quantity step, a power of ten as a decimal string.
    pub lot_size: String,
    /// Where the simulator starts this market's price.
    pub initial_price: String,
    /// Largest quantity of one order (a decimal string on the lot); a billion lots if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_qty: Option<String>,
    /// `exchange` (the book makes the price) or `mirror` (a feed does); unset: `exchange`
    /// under the simulator or no feed, `mirror` under Kafka or Upbit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue: Option<String>,
    /// The name of an `[hours.NAME]` table: when the market trades; unset: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            secret: EXAMPLE_AUTH_SECRET.into(),
            token_ttl_s: 24 * 60 * 60,
            argon2_memory_kib: 19456,
            argon2_iterations: 2,
            hash_workers: 0,
            hash_queue_ms: 2000,
            login_per_user_per_min: 10,
            login_per_ip_per_min: 60,
            register_per_ip_per_min: 20,
        }
    }
}

impl Default for TradingSettings {
    fn default() -> Self {
        let grants = [
            ("KRW", "100000000"),
            ("BTC", "1"),
            ("ETH", "10"),
            ("XRP", "10000"),
            ("SOL", "100"),
            ("DOGE", "100000"),
            ("ADA", "10000"),
            ("AVAX", "500"),
            ("LINK", "1000"),
        ]
        .into_iter()
        .map(|(a, v)| (a.to_string(), v.to_string()))
        .collect();
        TradingSettings {
            grants,
            market_protect_pct: 10,
            price_band_pct: 80,
            max_open_orders: 1000,
            snapshot_every: 10_000,
            slippage_bps: 5,
            reserve_days: 3,
            venue: None,
        }
    }
}

impl TradingSettings {
    /// The demo grants in balance units of each asset; an asset no market trades, or an
    /// amount off the asset's step, is an error naming the key.
    pub fn grant_units(&self, markets: &Markets) -> Result<Vec<(String, u128)>, ConfigError> {
        self.grants
            .iter()
            .map(|(asset, amount)| {
                let key = format!("trading.grants.{asset}");
                let step = markets
                    .asset(asset)
                    .ok_or_else(|| ConfigError::new(&key, "no configured market trades it"))?;
                let units = step
                    .to_units(amount)
                    .map_err(|e| ConfigError::new(&key, e.to_string()))?;
                Ok((asset.clone(), u128::from(units)))
            })
            .collect()
    }
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            name: "node1".into(),
            data_dir: PathBuf::from("./bourse-data"),
            clock_offset_ms: 0,
        }
    }
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            listen: "127.0.0.1:8080".into(),
            max_frame_bytes: 256 * 1024,
            requests_per_sec: 50,
            max_channels: 200,
            outbound_queue: 4096,
            write_delay_ms: 0,
            ping_interval_s: 20,
            idle_timeout_s: 60,
            sse_keepalive_s: 15,
            header_read_timeout_s: 10,
            cors_origins: Vec::new(),
            max_connections: 100_000,
            max_connections_per_ip: 10_000,
            listen_backlog: 4096,
        }
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            listen: None,
            cookie: "bourse-example-cookie".into(),
            seeds: Vec::new(),
            heartbeat_ms: 500,
            heartbeat_timeout_ms: 2000,
            stable_after_ms: 2000,
            vnodes: 128,
            passivate_idle_s: 300,
            ask_timeout_ms: 5000,
            tls: None,
        }
    }
}

impl Default for SupervisionSettings {
    fn default() -> Self {
        SupervisionSettings {
            max_restarts: 10,
            within_s: 10,
            backoff_min_ms: 10,
            backoff_max_ms: 5000,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            backend: "sqlite".into(),
            path: None,
            url: None,
            readers: 4,
            nodes: Vec::new(),
            keyspace: "bourse".into(),
            replication_factor: 3,
            batch_max: 4096,
        }
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replay_events: 1024,
        }
    }
}

impl Default for FeedSettings {
    fn default() -> Self {
        FeedSettings {
            kind: "simulator".into(),
            seed: 42,
            trades_per_sec: 20,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node: NodeSettings::default(),
            gateway: GatewaySettings::default(),
            cluster: ClusterSettings::default(),
            supervision: SupervisionSettings::default(),
            storage: StorageSettings::default(),
            streams: StreamSettings::default(),
            feed: FeedSettings::default(),
            log: LogSettings::default(),
            admin: AdminSettings::default(),
            auth: AuthSettings::default(),
            trading: TradingSettings::default(),
            participants: ParticipantsSettings::default(),
            chat: ChatSettings::default(),
            alerts: AlertSettings::default(),
            redis: RedisSettings::default(),
            kafka: KafkaSettings::default(),
            upbit: UpbitSettings::default(),
            hours: BTreeMap::new(),
            symbols: default_symbols(),
        }
    }
}

/// The eight simulated KRW markets of `bourse demo`, with Upbit-like prices.
fn default_symbols() -> Vec<SymbolSettings> {
    [
        ("KRW-BTC", "1000", "0.0001", "140000000"),
        ("KRW-ETH", "1000", "0.0001", "5000000"),
        ("KRW-XRP", "1", "0.01", "3000"),
        ("KRW-SOL", "100", "0.001", "250000"),
        ("KRW-DOGE", "0.1", "1", "300"),
        ("KRW-ADA", "1", "0.1", "1000"),
        ("KRW-AVAX", "10", "0.01", "40000"),
        ("KRW-LINK", "10", "0.01", "25000"),
    ]
    .into_iter()
    .map(|(symbol, tick, lot, price)| SymbolSettings {
        symbol: symbol.into(),
        tick_size: tick.into(),
        lot_size: lot.into(),
        initial_price: price.into(),
        max_qty: None,
        venue: None,
        hours: None,
    })
    .collect()
}

impl Settings {
    /// Loads settings from an optional TOML file plus the process environment, and validates
    /// them.
    pub fn load(file: Option<&Path>) -> Result<(Settings, Markets), ConfigError> {
        let text = match file {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("<file>", format!("cannot read {}: {e}", path.display()))
            })?,
            None => String::new(),
        };
        Self::from_sources(&text, std::env::vars())
    }

    /// Builds settings from TOML text and `(name, value)` environment pairs; the testable core
    /// of [`Settings::load`].
    pub fn from_sources(
        toml_text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Settings, Markets), ConfigError> {
        let mut table: toml::Table = toml::from_str(toml_text)
            .map_err(|e| ConfigError::new("<file>", e.to_string().trim_end().to_string()))?;
        for (name, raw) in env {
            // Only `BOURSE_<SECTION>__<KEY>` names a config key: `BOURSE_ADMIN_TOKEN` and
            // `BOURSE_URL` are `bourse ctl`'s, and must not stop a node started beside it.
            let Some(path) = name.strip_prefix("BOURSE_").filter(|p| p.contains("__")) else {
                continue;
            };
            apply_override(&mut table, path, &raw)?;
        }
        let settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." {
                    "<root>".to_string()
                } else {
                    key
                };
                ConfigError::new(key, e.inner().to_string())
            })?;
        let markets = settings.validate()?;
        Ok((settings, markets))
    }

    /// Checks every value that types alone cannot, and derives the market table.
    pub fn validate(&self) -> Result<Markets, ConfigError> {
        if self.node.name.is_empty()
            || !self
                .node
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::new(
                "node.name",
                "must be non-empty letters, digits, '-' or '_'",
            ));
        }
        if self.gateway.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::new(
                "gateway.listen",
                format!("'{}' is not an ip:port address", self.gateway.listen),
            ));
        }
        positive(
            "gateway.max_frame_bytes",
            self.gateway.max_frame_bytes as u64,
        )?;
        positive(
            "gateway.requests_per_sec",
            u64::from(self.gateway.requests_per_sec),
        )?;
        positive("gateway.max_channels", self.gateway.max_channels as u64)?;
        positive("gateway.outbound_queue", self.gateway.outbound_queue as u64)?;
        if self.gateway.write_delay_ms > MAX_WRITE_DELAY_MS {
            return Err(ConfigError::new(
                "gateway.write_delay_ms",
                format!(
                    "must be at most {MAX_WRITE_DELAY_MS} (a stream held longer looks stalled)"
                ),
            ));
        }
        positive("gateway.ping_interval_s", self.gateway.ping_interval_s)?;
        positive("gateway.sse_keepalive_s", self.gateway.sse_keepalive_s)?;
        positive(
            "gateway.max_connections",
            self.gateway.max_connections as u64,
        )?;
        positive(
            "gateway.max_connections_per_ip",
            self.gateway.max_connections_per_ip as u64,
        )?;
        positive(
            "gateway.listen_backlog",
            u64::from(self.gateway.listen_backlog),
        )?;
        positive(
            "gateway.header_read_timeout_s",
            self.gateway.header_read_timeout_s,
        )?;
        for (i, origin) in self.gateway.cors_origins.iter().enumerate() {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/')
                    && !origin.contains(char::is_whitespace));
            if !ok {
                return Err(ConfigError::new(
                    format!("gateway.cors_origins[{i}]"),
                    format!("'{origin}' is not '*' or an origin like https://app.example"),
                ));
            }
        }
        if self.gateway.idle_timeout_s <= self.gateway.ping_interval_s {
            return Err(ConfigError::new(
                "gateway.idle_timeout_s",
                "must be longer than gateway.ping_interval_s",
            ));
        }
        positive("cluster.vnodes", u64::from(self.cluster.vnodes))?;
        if let Some(listen) = &self.cluster.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::new(
                "cluster.listen",
                format!("'{listen}' is not an ip:port address"),
            ));
        }
        for (i, seed) in self.cluster.seeds.iter().enumerate() {
            if seed.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::new(
                    format!("cluster.seeds[{i}]"),
                    format!("'{seed}' is not an ip:port address"),
                ));
            }
        }
        if self.cluster.cookie.is_empty() {
            return Err(ConfigError::new("cluster.cookie", "must not be empty"));
        }
        positive("cluster.heartbeat_ms", self.cluster.heartbeat_ms)?;
        if self.cluster.heartbeat_timeout_ms <= self.cluster.heartbeat_ms {
            return Err(ConfigError::new(
                "cluster.heartbeat_timeout_ms",
                "must be longer than cluster.heartbeat_ms",
            ));
        }
        // Peers cut off together fall silent at once but are noticed up to a heartbeat or
        // two apart; a shorter wait lets a minority drop them one by one and call itself
        // a majority of what is left.
        if self.cluster.stable_after_ms < self.cluster.heartbeat_timeout_ms {
            return Err(ConfigError::new(
                "cluster.stable_after_ms",
                "must be at least cluster.heartbeat_timeout_ms",
            ));
        }
        positive("cluster.ask_timeout_ms", self.cluster.ask_timeout_ms)?;
        if let Some(tls) = &self.cluster.tls {
            if self.cluster.listen.is_none() {
                return Err(ConfigError::new(
                    "cluster.tls",
                    "needs cluster.listen: a standalone node has no cluster port to protect",
                ));
            }
            for (key, path) in [("cert", &tls.cert), ("key", &tls.key), ("ca", &tls.ca)] {
                if path.as_os_str().is_empty() {
                    return Err(ConfigError::new(
                        format!("cluster.tls.{key}"),
                        "must name a PEM file",
                    ));
                }
            }
        }
        positive("supervision.within_s", self.supervision.within_s)?;
        positive(
            "supervision.backoff_min_ms",
            self.supervision.backoff_min_ms,
        )?;
        if self.supervision.backoff_max_ms < self.supervision.backoff_min_ms {
            return Err(ConfigError::new(
                "supervision.backoff_max_ms",
                "must be at least supervision.backoff_min_ms",
            ));
        }
        match self.storage.backend.as_str() {
            "sqlite" => {}
            "postgres" => {
                let url = self.storage.url.as_deref().unwrap_or_default();
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(ConfigError::new(
                        "storage.url",
                        "the postgres backend needs url = \"postgres://user@host:port/db\"",
                    ));
                }
                positive("storage.readers", self.storage.readers as u64)?;
            }
            "scylla" => {
                if self.storage.nodes.is_empty() {
                    return Err(ConfigError::new(
                        "storage.nodes",
                        "the scylla backend needs nodes = [\"host:9042\", ...]",
                    ));
                }
                if let Some(bad) = self.storage.nodes.iter().find(|n| !n.contains(':')) {
                    return Err(ConfigError::new(
                        "storage.nodes",
                        format!("'{bad}' is not host:port"),
                    ));
                }
                if !valid_keyspace(&self.storage.keyspace) {
                    return Err(ConfigError::new(
                        "storage.keyspace",
                        "a-z, 0-9 and _, starting with a letter, at most 48",
                    ));
                }
                positive(
                    "storage.replication_factor",
                    u64::from(self.storage.replication_factor),
                )?;
            }
            other => {
                return Err(ConfigError::new(
                    "storage.backend",
                    format!("unknown backend '{other}' (expected: sqlite, postgres, scylla)"),
                ));
            }
        }
        positive("storage.batch_max", self.storage.batch_max as u64)?;
        if let Some(url) = &self.redis.url
            && !url.starts_with("redis://")
        {
            return Err(ConfigError::new(
                "redis.url",
                "expected redis://host:port[/db] (TLS to Redis is not built yet)",
            ));
        }
        positive("redis.timeout_ms", self.redis.timeout_ms)?;
        positive("streams.replay_events", self.streams.replay_events as u64)?;
        if !matches!(
            self.feed.kind.as_str(),
            "simulator" | "kafka" | "upbit" | "none"
        ) {
            return Err(ConfigError::new(
                "feed.kind",
                format!(
                    "unknown feed '{}' (expected: simulator, kafka, upbit, none)",
                    self.feed.kind
                ),
            ));
        }
        if !(self.upbit.url.starts_with("wss://") || self.upbit.url.starts_with("ws://")) {
            return Err(ConfigError::new(
                "upbit.url",
                format!("'{}' is not a ws:// or wss:// URL", self.upbit.url),
            ));
        }
        if self.upbit.reorder_ms > 10_000 {
            return Err(ConfigError::new("upbit.reorder_ms", "at most 10000"));
        }
        if !(1..=3600).contains(&self.upbit.stall_after_s) {
            return Err(ConfigError::new("upbit.stall_after_s", "1..=3600"));
        }
        if self.kafka.relay_events && self.storage.backend == "scylla" {
            return Err(ConfigError::new(
                "kafka.relay_events",
                "the event relay's outbox is built for SQLite and PostgreSQL, not ScyllaDB",
            ));
        }
        if (self.feed.kind == "kafka" || self.kafka.relay_events) && self.kafka.brokers.is_empty() {
            return Err(ConfigError::new(
                "kafka.brokers",
                "feed.kind = \"kafka\" and kafka.relay_events need at least one broker (\"host:port\")",
            ));
        }
        for b in &self.kafka.brokers {
            let port_ok = b
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok || b.contains(',') {
                return Err(ConfigError::new(
                    "kafka.brokers",
                    format!("'{b}' is not host:port"),
                ));
            }
        }
        for (key, name) in [
            ("kafka.trades_topic", &self.kafka.trades_topic),
            ("kafka.events_topic", &self.kafka.events_topic),
            ("kafka.group", &self.kafka.group),
        ] {
            if !valid_kafka_name(name) {
                return Err(ConfigError::new(key, "1 to 249 of A-Z a-z 0-9 . _ -"));
            }
        }
        if self.feed.trades_per_sec > 100_000 {
            return Err(ConfigError::new("feed.trades_per_sec", "at most 100000"));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::new(
                "log.format",
                format!(
                    "unknown format '{}' (expected: text, json)",
                    self.log.format
                ),
            ));
        }
        if let Some(token) = &self.admin.token
            && token.len() < 16
        {
            return Err(ConfigError::new(
                "admin.token",
                "must be at least 16 characters",
            ));
        }
        if self.auth.secret.len() < 16 {
            return Err(ConfigError::new(
                "auth.secret",
                "must be at least 16 characters",
            ));
        }
        positive("auth.token_ttl_s", self.auth.token_ttl_s)?;
        if self.auth.argon2_memory_kib < 8 {
            return Err(ConfigError::new("auth.argon2_memory_kib", "at least 8"));
        }
        positive(
            "auth.argon2_iterations",
            u64::from(self.auth.argon2_iterations),
        )?;
        positive("auth.hash_queue_ms", self.auth.hash_queue_ms)?;
        for (key, per_min) in [
            (
                "auth.login_per_user_per_min",
                self.auth.login_per_user_per_min,
            ),
            ("auth.login_per_ip_per_min", self.auth.login_per_ip_per_min),
            (
                "auth.register_per_ip_per_min",
                self.auth.register_per_ip_per_min,
            ),
        ] {
            positive(key, u64::from(per_min))?;
            // The throttles space requests by 60,000,000 / per_min microseconds.
            if per_min > 60_000_000 {
                return Err(ConfigError::new(key, "at most 60000000"));
            }
        }
        if self.trading.market_protect_pct == 0 || self.trading.market_protect_pct > 100 {
            return Err(ConfigError::new(
                "trading.market_protect_pct",
                "must be 1..=100",
            ));
        }
        if !(1..=10_000).contains(&self.trading.price_band_pct) {
            return Err(ConfigError::new(
                "trading.price_band_pct",
                "must be 1..=10000",
            ));
        }
        positive(
            "trading.max_open_orders",
            self.trading.max_open_orders as u64,
        )?;
        positive("trading.snapshot_every", self.trading.snapshot_every)?;
        if !(1..=1000).contains(&self.trading.slippage_bps) {
            return Err(ConfigError::new("trading.slippage_bps", "must be 1..=1000"));
        }
        if self.node.clock_offset_ms.unsigned_abs() > 10 * 366 * 86_400_000 {
            return Err(ConfigError::new(
                "node.clock_offset_ms",
                "must be within ten years either way (it is for tests)",
            ));
        }
        if !(1..=30).contains(&self.trading.reserve_days) {
            return Err(ConfigError::new("trading.reserve_days", "must be 1..=30"));
        }
        positive(
            "chat.messages_per_sec",
            u64::from(self.chat.messages_per_sec),
        )?;
        positive(
            "chat.messages_per_user_per_min",
            u64::from(self.chat.messages_per_user_per_min),
        )?;
        let window = self.alerts.change_window_s;
        if window == 0 || window > 86_400 || !window.is_multiple_of(60) {
            return Err(ConfigError::new(
                "alerts.change_window_s",
                "must be whole minutes, 60..=86400",
            ));
        }
        positive("alerts.max_per_user", self.alerts.max_per_user as u64)?;
        positive(
            "alerts.inbox_keep_days",
            u64::from(self.alerts.inbox_keep_days),
        )?;
        positive(
            "alerts.inbox_max_per_user",
            self.alerts.inbox_max_per_user as u64,
        )?;
        positive(
            "alerts.inbox_sweep_every_s",
            self.alerts.inbox_sweep_every_s,
        )?;
        let p = &self.participants;
        if !(1..=1000).contains(&p.spread_bps) {
            return Err(ConfigError::new(
                "participants.spread_bps",
                "must be 1..=1000",
            ));
        }
        if !(1..=50).contains(&p.depth) {
            return Err(ConfigError::new("participants.depth", "must be 1..=50"));
        }
        if !(1..=1000).contains(&p.step_bps) {
            return Err(ConfigError::new(
                "participants.step_bps",
                "must be 1..=1000",
            ));
        }
        positive("participants.level_notional", p.level_notional)?;
        if !(100..=60_000).contains(&p.refresh_ms) {
            return Err(ConfigError::new(
                "participants.refresh_ms",
                "must be 100..=60000",
            ));
        }
        let external = matches!(self.feed.kind.as_str(), "kafka" | "upbit");
        let default_venue = match self.trading.venue.as_deref() {
            Some(v) => Venue::parse(v).ok_or_else(|| {
                ConfigError::new(
                    "trading.venue",
                    format!("unknown venue '{v}' (expected: exchange, mirror)"),
                )
            })?,
            None if external => Venue::Mirror,
            None => Venue::Exchange,
        };
        let mut hours = BTreeMap::new();
        for (name, h) in &self.hours {
            hours.insert(
                name.clone(),
                Arc::new(Hours::from_settings(&format!("hours.{name}"), h)?),
            );
        }
        let markets = Markets::from_settings(&self.symbols, default_venue, &hours)?;
        if external && let Some(m) = markets.iter().find(|m| m.venue == Venue::Exchange) {
            let key = match self.symbols.iter().position(|s| s.symbol == m.symbol) {
                Some(i) if self.symbols[i].venue.is_some() => format!("symbols[{i}].venue"),
                _ => "trading.venue".to_string(),
            };
            return Err(ConfigError::new(
                key,
                format!(
                    "feed.kind = \"{}\" sets every market's price: exchange markets need the simulator or no feed",
                    self.feed.kind
                ),
            ));
        }
        self.trading.grant_units(&markets)?;
        if let Some(code) = self.upbit.codes.iter().find(|c| markets.get(c).is_none()) {
            return Err(ConfigError::new(
                "upbit.codes",
                format!("'{code}' is not a configured symbol"),
            ));
        }
        Ok(markets)
    }

    /// The SQLite file this node uses.
    pub fn sqlite_path(&self) -> PathBuf {
        self.storage
            .path
            .clone()
            .unwrap_or_else(|| self.node.data_dir.join("bourse.db"))
    }
}

/// Whether `name` can be a ScyllaDB keyspace as bourse writes it (an unquoted CQL
/// identifier in lower case).
pub fn valid_keyspace(name: &str) -> bool {
    name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::new(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// Sets `SECTION__KEY` (lower-cased) in the table to the parsed value.
fn apply_override(table: &mut toml::Table, path: &str, raw: &str) -> Result<(), ConfigError> {
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    let env_name = format!("BOURSE_{path}");
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::new(env_name, "empty key segment"));
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, sections) = parts
        .split_last()
        .ok_or_else(|| ConfigError::new(&env_name, "empty"))?;
    let mut cursor = table;
    for section in sections {
        let entry = cursor
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::new(
                    env_name,
                    format!("`{section}` is not a section"),
                ));
            }
        };
    }
    cursor.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<(Settings, Markets), ConfigError> {
        Settings::from_sources(
            toml,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn empty_config_is_a_working_demo() {
        let (s, markets) = load("", &[]).unwrap();
        assert_eq!(s.gateway.listen, "127.0.0.1:8080");
        assert_eq!(markets.len(), 8);
        assert!(markets.get("KRW-BTC").is_some());
    }

    #[test]
    fn env_overrides_file() {
        let (s, _) = load(
            "[gateway]\nlisten = \"127.0.0.1:1\"\n[feed]\ntrades_per_sec = 5",
            &[
                ("BOURSE_GATEWAY__LISTEN", "127.0.0.1:9000"),
                ("BOURSE_FEED__TRADES_PER_SEC", "7"),
                ("UNRELATED", "x"),
                ("BOURSE_ADMIN_TOKEN", "ctl-reads-this"),
                ("BOURSE_URL", "http://127.0.0.1:8080"),
            ],
        )
        .unwrap();
        assert_eq!(s.gateway.listen, "127.0.0.1:9000");
        assert_eq!(s.feed.trades_per_sec, 7);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load("[gateway]\nlisten = \"127.0.0.1:1\"\nbogus = 1", &[]).unwrap_err();
        assert_eq!(err.key, "gateway.bogus");
        assert!(err.reason.contains("unknown field"), "{err}");
        let err = load("", &[("BOURSE_GATEWAY__NOPE", "1")]).unwrap_err();
        assert!(err.reason.contains("nope"), "{err}");
    }

    #[test]
    fn postgres_storage_takes_its_url_from_the_environment() {
        let s = load(
            "",
            &[
                ("BOURSE_STORAGE__BACKEND", "postgres"),
                ("BOURSE_STORAGE__URL", "postgres://bourse@db:5432/bourse"),
            ],
        )
        .unwrap()
        .0;
        assert_eq!(s.storage.backend, "postgres");
        assert_eq!(
            s.storage.url.as_deref(),
            Some("postgres://bourse@db:5432/bourse")
        );
    }

    #[test]
    fn scylla_storage_names_nodes_and_keyspace() {
        let s = load(
            "[storage]\nbackend = \"scylla\"\nkeyspace = \"market\"\n",
            &[("BOURSE_STORAGE__NODES", r#"["db1:9042", "db2:9042"]"#)],
        )
        .unwrap()
        .0;
        assert_eq!(s.storage.nodes, vec!["db1:9042", "db2:9042"]);
        assert_eq!(s.storage.keyspace, "market");
        assert_eq!(s.storage.replication_factor, 3);
        for (toml, key) in [
            (
                "[storage]\nbackend = \"scylla\"\nnodes = [\"db1\"]\n",
                "storage.nodes",
            ),
            (
                "[storage]\nbackend = \"scylla\"\nnodes = [\"db1:9042\"]\nkeyspace = \"Bad-Name\"\n",
                "storage.keyspace",
            ),
            (
                "[storage]\nbackend = \"scylla\"\nnodes = [\"db1:9042\"]\nreplication_factor = 0\n",
                "storage.replication_factor",
            ),
        ] {
            let err = load(toml, &[]).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }

    #[test]
    fn wrong_type_is_named() {
        let err = load("[gateway]\nmax_channels = \"many\"", &[]).unwrap_err();
        assert_eq!(err.key, "gateway.max_channels");
    }

    #[test]
    fn tick_size_must_be_power_of_ten() {
        let toml = r#"[[symbols]]
symbol = "KRW-BTC"
tick_size = "50"
lot_size = "0.001"
initial_price = "1000"
"#;
        let err = load(toml, &[]).unwrap_err();
        assert_eq!(err.key, "symbols[0].tick_size");
        assert!(err.reason.contains("power of ten"), "{err}");
    }

    #[test]
    fn venues_default_by_feed_and_can_be_named() {
        use crate::Venue;
        let venues = |m: &Markets| m.iter().map(|m| m.venue).collect::<Vec<_>>();
        let (_, m) = load("", &[]).unwrap();
        assert!(venues(&m).iter().all(|v| *v == Venue::Exchange));
        let (_, m) = load("[trading]\nvenue = \"mirror\"", &[]).unwrap();
        assert!(venues(&m).iter().all(|v| *v == Venue::Mirror));
        let upbit = "[feed]\nkind = \"upbit\"\n";
        let (_, m) = load(upbit, &[]).unwrap();
        assert!(venues(&m).iter().all(|v| *v == Venue::Mirror));
        let one = "[[symbols]]\nsymbol = \"KRW-BTC\"\ntick_size = \"1000\"\nlot_size = \"0.0001\"\ninitial_price = \"1000\"\nvenue = \"exchange\"\n[[symbols]]\nsymbol = \"KRW-ETH\"\ntick_size = \"1000\"\nlot_size = \"0.0001\"\ninitial_price = \"1000\"\n[trading]\nvenue = \"mirror\"\ngrants = {}\n";
        let (_, m) = load(one, &[]).unwrap();
        assert_eq!(venues(&m), [Venue::Exchange, Venue::Mirror]);
        // An external feed prices every market: an exchange market under it is refused.
        let err = load(&format!("{upbit}{one}"), &[]).unwrap_err();
        assert_eq!(err.key, "symbols[0].venue");
        let err = load(upbit, &[("BOURSE_TRADING__VENUE", "exchange")]).unwrap_err();
        assert_eq!(err.key, "trading.venue");
        let bad = one.replace("venue = \"exchange\"", "venue = \"casino\"");
        assert_eq!(load(&bad, &[]).unwrap_err().key, "symbols[0].venue");
    }

    #[test]
    fn markets_name_their_hours() {
        let two = "[[symbols]]\nsymbol = \"KRW-BTC\"\ntick_size = \"1000\"\nlot_size = \"0.0001\"\ninitial_price = \"1000\"\nhours = \"krx\"\n[[symbols]]\nsymbol = \"KRW-ETH\"\ntick_size = \"1000\"\nlot_size = \"0.0001\"\ninitial_price = \"1000\"\n[trading]\ngrants = {}\n";
        let krx = "[hours.krx]\ntimezone = \"Asia/Seoul\"\nmon = \"09:00-15:30\"\n";
        let (_, m) = load(&format!("{two}{krx}"), &[]).unwrap();
        let btc = m.get("KRW-BTC").unwrap();
        assert_eq!(btc.hours.as_ref().map(|(n, _)| n.as_str()), Some("krx"));
        // Monday 2026-12-07 01:00 UTC is 10:00 in Seoul; 07:00 UTC is 16:00.
        assert!(btc.is_open(1_796_605_200_000));
        assert!(!btc.is_open(1_796_626_800_000));
        assert!(
            m.get("KRW-ETH").unwrap().is_open(1_796_626_800_000),
            "no hours: always"
        );
        let err = load(two, &[]).unwrap_err();
        assert_eq!(err.key, "symbols[0].hours");
        let bad = krx.replace("Asia/Seoul", "Mars/Olympus");
        assert_eq!(
            load(&format!("{two}{bad}"), &[]).unwrap_err().key,
            "hours.krx.timezone"
        );
        let bad = krx.replace("09:00-15:30", "15:30-09:00");
        assert_eq!(
            load(&format!("{two}{bad}"), &[]).unwrap_err().key,
            "hours.krx.mon"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for (env, key) in [
            (("BOURSE_GATEWAY__LISTEN", "nowhere"), "gateway.listen"),
            (("BOURSE_FEED__KIND", "kafka"), "kafka.brokers"),
            (("BOURSE_FEED__KIND", "exchange"), "feed.kind"),
            (("BOURSE_TRADING__VENUE", "casino"), "trading.venue"),
            (
                ("BOURSE_TRADING__SLIPPAGE_BPS", "0"),
                "trading.slippage_bps",
            ),
            (
                ("BOURSE_TRADING__RESERVE_DAYS", "0"),
                "trading.reserve_days",
            ),
            (("BOURSE_PARTICIPANTS__DEPTH", "0"), "participants.depth"),
            (
                ("BOURSE_PARTICIPANTS__SPREAD_BPS", "0"),
                "participants.spread_bps",
            ),
            (
                ("BOURSE_PARTICIPANTS__REFRESH_MS", "10"),
                "participants.refresh_ms",
            ),
            (("BOURSE_UPBIT__URL", "https://api.upbit.com"), "upbit.url"),
            (("BOURSE_UPBIT__CODES", "[\"KRW-NOPE\"]"), "upbit.codes"),
            (("BOURSE_UPBIT__STALL_AFTER_S", "0"), "upbit.stall_after_s"),
            (("BOURSE_UPBIT__REORDER_MS", "60000"), "upbit.reorder_ms"),
            (("BOURSE_KAFKA__TRADES_TOPIC", "a b"), "kafka.trades_topic"),
            (("BOURSE_KAFKA__GROUP", ""), "kafka.group"),
            (("BOURSE_KAFKA__RELAY_EVENTS", "true"), "kafka.brokers"),
            (
                ("BOURSE_GATEWAY__MAX_CHANNELS", "0"),
                "gateway.max_channels",
            ),
            (
                ("BOURSE_GATEWAY__WRITE_DELAY_MS", "1001"),
                "gateway.write_delay_ms",
            ),
            (("BOURSE_NODE__NAME", "a b"), "node.name"),
            (("BOURSE_STORAGE__BACKEND", "mongo"), "storage.backend"),
            (("BOURSE_STORAGE__BACKEND", "postgres"), "storage.url"),
            (("BOURSE_STORAGE__BACKEND", "scylla"), "storage.nodes"),
            (("BOURSE_REDIS__URL", "localhost:6379"), "redis.url"),
            (("BOURSE_REDIS__TIMEOUT_MS", "0"), "redis.timeout_ms"),
            (
                ("BOURSE_CLUSTER__HEARTBEAT_TIMEOUT_MS", "500"),
                "cluster.heartbeat_timeout_ms",
            ),
            (
                ("BOURSE_CLUSTER__STABLE_AFTER_MS", "1999"),
                "cluster.stable_after_ms",
            ),
            (
                ("BOURSE_AUTH__LOGIN_PER_IP_PER_MIN", "60000001"),
                "auth.login_per_ip_per_min",
            ),
        ] {
            let err = load("", &[env]).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }

    #[test]
    fn cluster_tls_needs_a_cluster_port_and_every_file() {
        let tls = "[cluster.tls]\ncert = \"n.pem\"\nkey = \"n.key\"\nca = \"ca.pem\"\n";
        let err = load(tls, &[]).unwrap_err();
        assert_eq!(err.key, "cluster.tls", "{err}");
        let listen = [("BOURSE_CLUSTER__LISTEN", "127.0.0.1:7000")];
        let (s, _) = load(tls, &listen).unwrap();
        assert_eq!(s.cluster.tls.map(|t| t.ca), Some(PathBuf::from("ca.pem")));
        let err = load(&tls.replace("\"n.key\"", "\"\""), &listen).unwrap_err();
        assert_eq!(err.key, "cluster.tls.key", "{err}");
        assert!(load(&tls.replace("ca = ", "cafile = "), &listen).is_err());
    }

    #[test]
    fn assets_get_the_finest_step_and_grants_convert() {
        let (s, m) = load("", &[]).unwrap();
        // KRW is quoted with tick × lot down to 1 × 0.01 (XRP): 0.01 KRW.
        assert_eq!(m.asset("KRW").map(|s| s.exp()), Some(-2));
        let btc = m.get("KRW-BTC").unwrap();
        // 1 tick (1000 KRW) × 1 lot (0.0001 BTC) = 0.1 KRW = 10 units of 0.01.
        assert_eq!(btc.quote_amount(1), 10);
        assert_eq!(btc.base_amount(3), 3);
        let grants = s.trading.grant_units(&m).unwrap();
        assert!(grants.contains(&("KRW".into(), 10_000_000_000)));
        assert!(grants.contains(&("BTC".into(), 10_000)));
        let err = load("[trading.grants]\nZZZ = \"1\"", &[]).unwrap_err();
        assert_eq!(err.key, "trading.grants.ZZZ");
        let err = load("[trading.grants]\nBTC = \"0.00001\"", &[]).unwrap_err();
        assert_eq!(err.key, "trading.grants.BTC");
        let err = load("", &[("BOURSE_AUTH__SECRET", "short")]).unwrap_err();
        assert_eq!(err.key, "auth.secret");
    }

    #[test]
    fn effective_config_round_trips_through_toml() {
        let (s, _) = load("", &[]).unwrap();
        let text = toml::to_string(&s).unwrap();
        let (again, _) = load(&text, &[]).unwrap();
        assert_eq!(s, again);
    }
}
