//! Pipeline configuration: TOML file -> raw serde structs -> `validate()` ->
//! [`Config`]. Parsing is strict (`deny_unknown_fields`); validation is pure
//! (environment lookups are injected) and names the key of every problem.

mod checker;
pub mod poll;
mod validate;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;
pub use validate::validate;
pub use values::{quote_ident, quote_literal, ByteSize, ConfigDuration, TableName};

pub const DEFAULT_CHECKPOINT_DIR: &str = "checkpoints";
pub const DEFAULT_MAX_ROWS: usize = 100_000;
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(1);
/// Well under PostgreSQL's default wal_sender_timeout (60 s).
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long PostgreSQL may stay silent when an answer is due (mid-message,
/// or after sluice asked for a keepalive) before the connection is dropped
/// and made again.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
pub const MIN_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// A logical message this often keeps lag in seconds exact and the slot
/// moving while the tables are idle ("0s" turns it off).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// `/readyz` answers unready when the last applied commit is older than this.
pub const DEFAULT_READY_MAX_LAG: Duration = Duration::from_secs(300);
pub const DEFAULT_CLICKHOUSE_USER: &str = "default";
pub const DEFAULT_CLICKHOUSE_DATABASE: &str = "default";
pub const DEFAULT_KAFKA_TOPIC_PREFIX: &str = "sluice";
/// librdkafka `compression.type` unless configured.
pub const DEFAULT_KAFKA_COMPRESSION: &str = "zstd";
/// Partitions of a topic sluice creates.
pub const DEFAULT_KAFKA_PARTITIONS: i32 = 1;
/// Replication factor of a topic sluice creates.
pub const DEFAULT_KAFKA_REPLICATION_FACTOR: i32 = 1;
/// `cleanup.policy` of a topic sluice creates (`compact` keeps the latest
/// event per key; tombstones then remove deleted keys).
pub const DEFAULT_KAFKA_CLEANUP_POLICY: &str = "delete";
/// Debezium's default `unavailable.value.placeholder`: what an unchanged
/// TOASTed value is sent as when the old value is not known.
pub const DEFAULT_KAFKA_UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";
/// librdkafka settings sluice's delivery guarantee depends on: not
/// overridable through `properties`.
pub const KAFKA_FIXED_PROPERTIES: [&str; 4] = [
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "partitioner",
];
/// Copy readers at most by default (fewer on machines with fewer cores).
pub const DEFAULT_SNAPSHOT_PARALLELISM: usize = 4;
pub const MAX_SNAPSHOT_PARALLELISM: usize = 64;

/// Everything that can go wrong reading a config file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    /// One line per problem, each `key: what is wrong`.
    #[error("config is not valid:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// The file as written, before defaults and validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub pipeline: Option<RawPipeline>,
    pub source: Option<RawSource>,
    pub batch: Option<RawBatch>,
    pub snapshot: Option<RawSnapshot>,
    pub sink: Option<RawSink>,
    pub metrics: Option<RawMetrics>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub name: Option<String>,
    pub checkpoint_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub postgres: Option<RawPostgresSource>,
    /// A cursor-polled source (`[source.poll]`).
    pub poll: Option<poll::RawPollSource>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgresSource {
    pub url: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub slot: Option<String>,
    pub publication: Option<String>,
    pub tables: Option<Vec<String>>,
    pub create_publication: Option<bool>,
    pub create_slot: Option<bool>,
    /// Copy each table's existing rows before streaming (default true).
    pub initial_snapshot: Option<bool>,
    pub binary: Option<bool>,
    pub status_interval: Option<ConfigDuration>,
    pub connect_timeout: Option<ConfigDuration>,
    pub read_timeout: Option<ConfigDuration>,
    /// PEM file of the CA that signed the server's certificate (TLS).
    pub ssl_root_cert: Option<String>,
    /// "text" (default) or "decimal(P,S)".
    pub unconstrained_numeric: Option<String>,
    /// Emit a heartbeat message this often ("0s": never).
    pub heartbeat_interval: Option<ConfigDuration>,
    /// Warn (log and metric) when the slot retains more WAL than this.
    pub max_retained_wal: Option<ByteSize>,
    /// "stop" (default) or "resync": what to do when the slot was invalidated.
    pub on_slot_lost: Option<String>,
    /// Per configured table ("schema.table"): what of it is published.
    pub publish: Option<BTreeMap<String, RawTablePublish>>,
}

/// `[source.postgres.publish."schema.table"]`: a column list and a row
/// filter, put into the publication (PostgreSQL 15+).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTablePublish {
    pub columns: Option<Vec<String>>,
    #[serde(rename = "where")]
    pub row_filter: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    pub max_rows: Option<i64>,
    pub max_bytes: Option<ByteSize>,
    pub max_delay: Option<ConfigDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnapshot {
    /// Table ranges read (and written) at once.
    pub parallelism: Option<i64>,
    /// "ctid" (default) or "primary_key".
    pub split: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    pub clickhouse: Option<RawClickHouseSink>,
    pub kafka: Option<RawKafkaSink>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClickHouseSink {
    pub url: Option<String>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    /// PEM file of an extra CA to trust for `https://` URLs.
    pub ssl_root_cert: Option<String>,
    /// "schema.table" -> target table name in the sink database.
    pub table_names: Option<BTreeMap<String, String>>,
    /// "truncate" (default) or "ignore".
    pub on_truncate: Option<String>,
    /// "keep" (default) or "drop".
    pub on_drop_column: Option<String>,
    /// "String" (default) or "JSON".
    pub json_type: Option<String>,
    /// Tables without a key: "multiset" (default) or "append_only".
    pub tables_without_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafkaSink {
    pub brokers: Option<String>,
    pub topic_prefix: Option<String>,
    pub security_protocol: Option<String>,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
    pub sasl_password_file: Option<String>,
    /// Extra librdkafka properties, passed through as written.
    pub properties: Option<BTreeMap<String, String>>,
    /// "zstd" (default), "lz4", "snappy", "gzip" or "none".
    pub compression: Option<String>,
    /// "schema.table" -> topic, instead of `<topic_prefix>.<schema>.<table>`.
    pub topics: Option<BTreeMap<String, String>>,
    /// Of topics sluice creates.
    pub partitions: Option<i64>,
    pub replication_factor: Option<i64>,
    /// "delete" (default), "compact" or "compact,delete".
    pub cleanup_policy: Option<String>,
    /// A tombstone (key, null value) after each delete; default true.
    pub tombstones: Option<bool>,
    /// What an unchanged TOASTed value is sent as (tables without REPLICA
    /// IDENTITY FULL).
    pub unavailable_value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<String>,
    /// `/readyz` is unready when lag in seconds exceeds this.
    pub ready_max_lag: Option<ConfigDuration>,
}

/// A validated pipeline configuration with defaults filled in.
#[derive(Debug, Clone)]
pub struct Config {
    pub pipeline: PipelineConfig,
    pub source: SourceConfig,
    pub batch: BatchConfig,
    pub snapshot: SnapshotConfig,
    pub sink: SinkConfig,
    pub metrics: MetricsConfig,
}

/// How tables are copied (initial snapshot, resync, `sluice snapshot`).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotConfig {
    /// Ranges read and written at once, over as many connections.
    pub parallelism: usize,
    pub split: SplitMode,
}

/// How a table is cut into ranges for a parallel copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitMode {
    /// Block (ctid) ranges: no index needed, even by size on disk.
    Ctid,
    /// Ranges of a single-column primary key, placed on a sample: even by
    /// rows where block ranges are not (e.g. many dead tuples). Tables
    /// without such a key use block ranges.
    PrimaryKey,
}

impl SnapshotConfig {
    /// min(DEFAULT_SNAPSHOT_PARALLELISM, cores).
    pub fn default_parallelism() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(DEFAULT_SNAPSHOT_PARALLELISM)
    }
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub name: String,
    pub checkpoint_dir: PathBuf,
}

impl PipelineConfig {
    /// `<checkpoint_dir>/<name>`: this pipeline's checkpoint database.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.checkpoint_dir.join(&self.name)
    }
}

#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SourceConfig {
    Postgres(PostgresSourceConfig),
    Poll(poll::PollSourceConfig),
}

impl SourceConfig {
    /// The configured tables, in order.
    pub fn tables(&self) -> Vec<TableName> {
        match self {
            SourceConfig::Postgres(pg) => pg.tables.clone(),
            SourceConfig::Poll(p) => p.tables.iter().map(|t| t.table.clone()).collect(),
        }
    }

    /// The logical-replication settings; `None` for a polled source.
    pub fn postgres(&self) -> Option<&PostgresSourceConfig> {
        match self {
            SourceConfig::Postgres(pg) => Some(pg),
            SourceConfig::Poll(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
}

/// Where and how to connect to PostgreSQL. `Display` never shows the password.
#[derive(Debug, Clone)]
pub struct PgConnInfo {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: String,
    pub ssl_mode: SslMode,
    pub application_name: String,
    pub connect_timeout: Duration,
    /// See [`DEFAULT_READ_TIMEOUT`].
    pub read_timeout: Duration,
    /// Extra trusted CA certificates (PEM) for TLS.
    pub ssl_root_cert: Option<PathBuf>,
}

impl std::fmt::Display for PgConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }
}

impl PgConnInfo {
    /// A tokio-postgres config for ordinary (non-replication) connections.
    pub fn tokio_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout)
            // tokio-postgres frames catalog queries and COPY itself, so
            // read_timeout cannot bound them; TCP can, for a peer that is
            // gone: probes start after half of read_timeout and three
            // unanswered ones end the connection (within read_timeout), and
            // data left unacknowledged that long does too.
            .keepalives(true)
            .keepalives_idle(self.read_timeout / 2)
            .keepalives_interval((self.read_timeout / 8).max(Duration::from_secs(1)))
            .keepalives_retries(3)
            .tcp_user_timeout(self.read_timeout)
            .ssl_mode(match self.ssl_mode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                SslMode::Require => tokio_postgres::config::SslMode::Require,
            });
        if let Some(pw) = &self.password {
            c.password(pw.expose());
        }
        c
    }
}

/// How numeric columns without a declared precision are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnconstrainedNumeric {
    /// The exact decimal text (default: never rounds).
    Text,
    /// A fixed decimal; values that do not fit are an error, never rounded.
    Decimal { precision: u8, scale: i8 },
}

#[derive(Debug, Clone)]
pub struct PostgresSourceConfig {
    pub conn: PgConnInfo,
    pub slot: String,
    pub publication: String,
    pub tables: Vec<TableName>,
    pub create_publication: bool,
    pub create_slot: bool,
    pub initial_snapshot: bool,
    pub binary: bool,
    pub status_interval: Duration,
    pub unconstrained_numeric: UnconstrainedNumeric,
    /// `None`: no heartbeat.
    pub heartbeat_interval: Option<Duration>,
    /// Retained WAL (bytes) above which a warning is logged and counted.
    pub max_retained_wal: Option<u64>,
    pub on_slot_lost: OnSlotLost,
    /// Column lists and row filters of the tables that have one.
    pub publish: BTreeMap<TableName, TablePublish>,
}

/// What of a table is published: only these columns (in table order in the
/// stream), only rows matching the filter (an SQL expression).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablePublish {
    pub columns: Option<Vec<String>>,
    pub row_filter: Option<String>,
}

/// What `run` does when the slot was invalidated (its WAL removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSlotLost {
    /// Stop with an error that says how to recover.
    Stop,
    /// Recreate the slot and copy every table again.
    Resync,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    pub max_rows: usize,
    pub max_bytes: u64,
    pub max_delay: Duration,
}

#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SinkConfig {
    ClickHouse(ClickHouseSinkConfig),
    Kafka(KafkaSinkConfig),
}

#[derive(Debug, Clone)]
pub struct ClickHouseSinkConfig {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: Secret,
    /// Extra trusted CA certificates (PEM) for `https://` URLs.
    pub ssl_root_cert: Option<PathBuf>,
    /// Target table names that differ from the default
    /// (`public.t` -> `t`, `s.t` -> `s_t`).
    pub table_names: BTreeMap<TableName, String>,
    pub on_truncate: TruncateMode,
    pub on_drop_column: DropColumnMode,
    pub json_type: JsonType,
    pub tables_without_key: NoKeyMode,
}

impl ClickHouseSinkConfig {
    /// The ClickHouse table a source table lands in.
    pub fn target_table(&self, t: &TableName) -> String {
        if let Some(n) = self.table_names.get(t) {
            return n.clone();
        }
        if t.schema == "public" {
            t.name.clone()
        } else {
            format!("{}_{}", t.schema, t.name)
        }
    }
}

/// What a TRUNCATE in PostgreSQL does to the ClickHouse table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncateMode {
    Truncate,
    /// Logged and otherwise ignored: the ClickHouse table keeps its rows.
    Ignore,
}

/// What a dropped PostgreSQL column does to the ClickHouse table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropColumnMode {
    /// The column stays; new rows get its default.
    Keep,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    String,
    Json,
}

/// How tables without a key (no primary key, no replica identity index)
/// are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoKeyMode {
    /// An exact multiset: every change a row (+1 insert, -1 delete), keyed
    /// by its position so replays are absorbed, and a view of the live rows.
    Multiset,
    /// Plain MergeTree: every change is appended as a row.
    AppendOnly,
}

#[derive(Debug, Clone)]
pub struct KafkaSinkConfig {
    pub brokers: String,
    pub topic_prefix: String,
    pub security_protocol: Option<String>,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    pub properties: BTreeMap<String, String>,
    pub compression: String,
    /// Topic names that differ from the default.
    pub topics: BTreeMap<TableName, String>,
    pub partitions: i32,
    pub replication_factor: i32,
    pub cleanup_policy: String,
    pub tombstones: bool,
    pub unavailable_value: String,
}

impl KafkaSinkConfig {
    /// The topic a source table's events go to.
    pub fn topic(&self, t: &TableName) -> String {
        match self.topics.get(t) {
            Some(n) => n.clone(),
            None => format!("{}.{}.{}", self.topic_prefix, t.schema, t.name),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub listen: Option<std::net::SocketAddr>,
    pub ready_max_lag: Duration,
}

/// Parses TOML text into the raw structs (syntax, types, unknown keys).
pub fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Reads, parses and validates a config file against the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let raw = parse(&text, path)?;
    let env = |k: &str| std::env::var(k).ok();
    let read_file = |p: &str| std::fs::read_to_string(p).map_err(|e| e.to_string());
    validate(&raw, &env, &read_file)
}

#[cfg(test)]
mod tests;
