//! Sinks: where changes land. Each implements [`Sink`]; the pipeline knows
//! nothing else about them.
//!
//! - `clickhouse/`: upserts into `ReplacingMergeTree` tables over HTTP.
//! - `kafka/`: one topic per table, Debezium-style change events.
//! - `memory`: keeps what it was given, for pipeline tests.

pub mod clickhouse;
pub mod kafka;
pub mod memory;

use std::future::Future;

use crate::config::TableName;
use crate::core::health::Report;
use crate::core::{Classify, ErrorClass, SinkItem, TableBatch};

/// A destination for micro-batches.
///
/// # Durability contract
///
/// [`Sink::apply`] returns `Ok` only once every item it was given is
/// durable in the destination: a crash of sluice (or of the machine) right
/// after `Ok` must not lose any of those rows. The pipeline relies on this to
/// save the source position and then confirm it upstream; a sink that
/// acknowledges early turns a crash into silent data loss.
///
/// Items are applied in order. The same items may be applied again after a
/// crash or a retry (at-least-once); a sink must make that replay harmless
/// (ClickHouse: `ReplacingMergeTree` versions; Kafka: consumers skip by
/// position).
pub trait Sink: Send {
    /// Connects and prepares the destination (e.g. creates the database).
    /// Called before the first `apply`; retried while it fails transiently.
    fn open(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Applies `items` in order; returns once they are durable (see above).
    /// A table the sink cannot follow (an incompatible schema change, a value
    /// it cannot fill) is not an error of the call: the sink stops writing
    /// that table, goes on with the others, and reports it through
    /// [`Sink::take_failed`].
    fn apply(&mut self, items: &[SinkItem]) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Tables the sink stopped since the last call, with the reason.
    fn take_failed(&mut self) -> Vec<(TableName, String)>;

    /// Whether copies go through [`Sink::apply_copy`], one write per copy
    /// unit, instead of one [`Sink::apply`] per batch (each retried alone).
    const STREAMS_COPIES: bool = false;

    /// Writes the rows of one copy unit -- batches of one table, in order,
    /// as the reader decodes them -- and returns, once all of them are
    /// durable, how many rows it wrote. A destination that gains from
    /// fewer, larger writes takes them as one (ClickHouse: one INSERT per
    /// unit, so it forms parts of up to a million rows instead of one part
    /// per batch, and merges far less). On an error nothing of the unit
    /// counts as written: the caller copies the whole unit again (a replay
    /// is harmless, see above). A table the sink stops is reported through
    /// [`Sink::take_failed`]; its remaining batches are skipped.
    fn apply_copy(
        &mut self,
        batches: &mut tokio::sync::mpsc::Receiver<TableBatch>,
    ) -> impl Future<Output = Result<u64, SinkError>> + Send {
        async move {
            let mut rows = 0;
            while let Some(b) = batches.recv().await {
                rows += b.batch.num_rows() as u64;
                self.apply(&[SinkItem::Rows(b)]).await?;
            }
            Ok(rows)
        }
    }

    /// The table is about to be copied again (a resync): forget what stopped
    /// it. Its rows stay: the copy overwrites them and [`Sink::finish_copy`]
    /// removes the stale ones. (A destination that cannot take the new rows,
    /// such as a ClickHouse table whose key changed, stops the table again
    /// with a reason that says what to do.)
    fn reset_table(&mut self, table: &TableName);

    /// A copy of a table finished: every row of `table` it did not write
    /// whose `_version` is below `version` no longer exists in the source
    /// (it was deleted while the table was stopped or stale): remove it.
    /// Returns once durable. Rows at or above `version` stay.
    fn finish_copy(
        &mut self,
        table: &TableName,
        version: u64,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The highest `_version` the destination holds for `table` (`None`
    /// when it holds none, or keeps no versions it can be asked about).
    fn max_version(
        &self,
        _table: &TableName,
    ) -> impl Future<Output = Result<Option<u64>, SinkError>> + Send {
        async { Ok(None) }
    }

    /// Another writer to the same (opened) destination, for writing in
    /// parallel with this one (copy readers). Shares what the sink has
    /// learnt about the server; starts with no stopped tables (the pipeline
    /// gives it only tables it writes).
    fn fork(&self) -> Self
    where
        Self: Sized;

    /// Checks reachability, credentials and permissions without changing
    /// anything (`sluice check`).
    fn healthcheck(&self) -> impl Future<Output = Report> + Send;
}

/// One chunk of a table's live keys in a sink, in the sink's key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChunk {
    /// Each live key (its columns' values as text, in key order) with the
    /// largest `_version` the sink holds for it.
    pub live: Vec<(Vec<String>, u64)>,
    /// The last key this chunk covers (the next chunk starts after it);
    /// `None` when it reached the end of the table.
    pub upper: Option<Vec<String>>,
}

/// A sink that can list the keys it holds alive (for the reconcile of
/// polled tables, docs/polling.md). Only the ClickHouse sink can; a Kafka
/// topic cannot be asked which keys are alive.
pub trait KeyReader: Send + Sync {
    /// Up to about `limit` live keys of `table` after `after` (from the
    /// first when `None`), ordered by the `key` columns.
    fn live_keys<'a>(
        &'a self,
        table: &'a TableName,
        key: &'a [String],
        after: Option<&'a [String]>,
        limit: usize,
    ) -> futures_util::future::BoxFuture<'a, Result<KeyChunk, SinkError>>;
}

/// The sink layer's one error type, classified in one place ([`Classify`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    #[error("cannot reach ClickHouse at {url}: {message}")]
    ClickHouseUnreachable { url: String, message: String },
    #[error("TLS to ClickHouse: {message} (check the https:// URL's host name and sink.clickhouse.ssl_root_cert)")]
    ClickHouseTls { message: String },
    #[error("ClickHouse rejected the credentials of user \"{user}\": {message}")]
    ClickHouseAuth { user: String, message: String },
    #[error("ClickHouse error: {message}")]
    ClickHouse {
        /// The `Code: N` of the server's exception, when it gave one.
        code: Option<u32>,
        message: String,
    },
    /// One table's data cannot be written; the others can.
    #[error("table {table}: {message}")]
    Table { table: TableName, message: String },
    #[error("Kafka: {0}")]
    Kafka(String),
    #[error("cannot reach the Kafka brokers {brokers}: {message}")]
    KafkaUnreachable { brokers: String, message: String },
    #[error("the Kafka brokers {brokers} rejected the login: {message} (check sink.kafka.sasl_mechanism, sasl_username and sasl_password or sasl_password_file)")]
    KafkaAuth { brokers: String, message: String },
    #[error("TLS to the Kafka brokers {brokers}: {message} (check sink.kafka.security_protocol and the CA in sink.kafka.properties ssl.ca.location)")]
    KafkaTls { brokers: String, message: String },
    /// A message (or topic creation) the brokers did not acknowledge.
    #[error("Kafka topic {topic}: {message}")]
    KafkaDelivery {
        topic: String,
        /// librdkafka's code, when the failure had one.
        code: Option<rdkafka::types::RDKafkaErrorCode>,
        message: String,
    },
    /// A failure injected or reported by a test sink.
    #[error("{message}")]
    Other { message: String, transient: bool },
}

impl Classify for SinkError {
    fn class(&self) -> ErrorClass {
        match self {
            SinkError::ClickHouseUnreachable { .. } | SinkError::KafkaUnreachable { .. } => {
                ErrorClass::Transient
            }
            SinkError::ClickHouse { code, .. } => {
                if code.is_some_and(clickhouse::is_retryable_code) {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Fatal
                }
            }
            SinkError::KafkaDelivery { code, .. } => {
                if code.is_none_or(kafka::is_retryable) {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Fatal
                }
            }
            SinkError::Table { table, .. } => ErrorClass::Table(table.clone()),
            SinkError::Other {
                transient: true, ..
            } => ErrorClass::Transient,
            SinkError::ClickHouseAuth { .. }
            | SinkError::ClickHouseTls { .. }
            | SinkError::Kafka(_)
            | SinkError::KafkaAuth { .. }
            | SinkError::KafkaTls { .. }
            | SinkError::Other { .. } => ErrorClass::Fatal,
        }
    }
}
