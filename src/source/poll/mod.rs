//! Cursor-polled sources: tables read again and again by a column that
//! grows with every insert and update (`updated_at`, a sequence), for
//! upstreams without a replication slot (PostgreSQL without the replication
//! role, a read replica) and for ClickHouse tables.
//!
//! ```text
//!  watermark.rs (pure: safe upper bound, half-open intervals, lookback)
//!  postgres.rs: clock + running transactions -> snapshot -> COPY binary -> Arrow
//!  clickhouse.rs: settle delay -> SELECT ... FORMAT ArrowStream -> Arrow
//!                         └──> batch.rs (pure: metadata columns) ──> Flush<PollPosition>
//!  reconcile.rs: between polls, the sink's live keys (sink::KeyReader) vs
//!                the source's -> delete rows ──> Flush<PollPosition>
//! ```
//!
//! The position is one cursor per table: every row whose cursor is below
//! it is durable in the sink. It is ordered part by part. Each row's
//! `_version` is its cursor (or a configured version column), so the
//! re-reads of a replay or of the lookback window are harmless. The
//! no-missed-rows argument is in docs/polling.md.

pub mod batch;
pub mod clickhouse;
pub mod postgres;
pub mod reconcile;
pub mod watermark;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::poll::{PollConn, PollKind, PollSourceConfig, PollTable};
use crate::config::{BatchConfig, TableName};
use crate::core::health::Report;
use crate::core::position::SourceIdentity;
use crate::core::{Flush, SinkItem, TableBatch};
use crate::sink::KeyReader;
use crate::source::{
    ChangeStream, Copier, Prepared, SnapshotUnit, Source, SourceError, UnitReader,
};

/// Identity keys of a polled source's positions.
pub const IDENTITY_KIND: &str = "poll";
pub const IDENTITY_UPSTREAM: &str = "upstream";

/// One cursor per table (by its name): rows with a cursor below it are
/// durable in the sink. A table without one is read from the beginning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollPosition {
    pub cursors: BTreeMap<String, i64>,
}

impl PollPosition {
    pub fn get(&self, table: &str) -> Option<i64> {
        self.cursors.get(table).copied()
    }

    pub fn set(&mut self, table: &str, v: Option<i64>) {
        if let Some(v) = v {
            self.cursors.insert(table.to_string(), v);
        }
    }
}

/// Ordered part by part: greater when no cursor is behind and one is
/// ahead; a missing cursor is behind every value.
impl PartialOrd for PollPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let mut result = Ordering::Equal;
        for k in self.cursors.keys().chain(other.cursors.keys()) {
            let o = self.cursors.get(k).cmp(&other.cursors.get(k));
            match (result, o) {
                (_, Ordering::Equal) => {}
                (Ordering::Equal, o) => result = o,
                (r, o) if r != o => return None,
                _ => {}
            }
        }
        Some(result)
    }
}

impl fmt::Display for PollPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cursors.is_empty() {
            return f.write_str("(start)");
        }
        let parts: Vec<_> = self
            .cursors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Hands a poll's batches to the pipeline with the position each makes safe.
pub struct Emitter<'a> {
    out: &'a mpsc::Sender<Flush<PollPosition>>,
    shutdown: &'a CancellationToken,
}

impl Emitter<'_> {
    /// False when the pipeline is gone (stop polling).
    pub async fn send(&self, items: Vec<SinkItem>, position: &PollPosition) -> bool {
        let flush = Flush {
            items,
            position: Some(position.clone()),
            // Polling knows no commit times; lag in seconds is not kept.
            source_time: None,
        };
        self.out.send(flush).await.is_ok()
    }

    pub fn stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}

/// A polled source: PostgreSQL or ClickHouse tables.
pub struct PollSource {
    cfg: PollSourceConfig,
    batch: BatchConfig,
    /// The sink's live keys, for tables that reconcile hard deletes.
    keys: Option<Arc<dyn KeyReader>>,
}

/// Reconcile work between two poll rounds is bounded by the poll interval,
/// but never less than this (a 200 ms interval would make rounds crawl).
const MIN_RECONCILE_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

impl PollSource {
    pub fn new(cfg: PollSourceConfig, batch: BatchConfig) -> Self {
        PollSource {
            cfg,
            batch,
            keys: None,
        }
    }

    /// Lets tables with `reconcile_interval` read the sink's live keys.
    pub fn with_key_reader(mut self, keys: Arc<dyn KeyReader>) -> Self {
        self.keys = Some(keys);
        self
    }

    fn upstream(&self) -> String {
        match &self.cfg.conn {
            PollConn::Postgres(c) => format!("postgres {}:{}/{}", c.host, c.port, c.dbname),
            PollConn::ClickHouse { url, .. } => format!("clickhouse {url}"),
        }
    }

    fn configured(&self, tables: &[TableName]) -> Vec<PollTable> {
        self.cfg
            .tables
            .iter()
            .filter(|t| tables.contains(&t.table))
            .cloned()
            .collect()
    }
}

impl Source for PollSource {
    type Position = PollPosition;
    type Stream = PollStream;
    type Copier = PollCopier;

    async fn prepare(
        &mut self,
        saved: Option<(&PollPosition, &SourceIdentity)>,
    ) -> Result<Prepared<PollPosition>, SourceError> {
        let identity = SourceIdentity::from([
            ("source".to_string(), IDENTITY_KIND.to_string()),
            (IDENTITY_UPSTREAM.to_string(), self.upstream()),
        ]);
        let start = match saved {
            None => PollPosition::default(),
            Some((p, id)) if id.get("source").map(String::as_str) == Some(IDENTITY_KIND) => {
                if id.get(IDENTITY_UPSTREAM) != identity.get(IDENTITY_UPSTREAM) {
                    tracing::warn!(saved = ?id.get(IDENTITY_UPSTREAM), now = %self.upstream(), "the polled upstream's address changed; resuming from the saved cursors");
                }
                p.clone()
            }
            Some(_) => {
                return Err(SourceError::Mismatch(
                    "the checkpoint was written by another kind of source (not [source.poll]); use another pipeline.name or remove the checkpoint".into(),
                ))
            }
        };
        Ok(Prepared { identity, start })
    }

    async fn prepare_copy_only(&mut self) -> Result<Prepared<PollPosition>, SourceError> {
        Err(SourceError::Unsupported(
            "`sluice snapshot` is for [source.postgres]; `sluice run` with [source.poll] copies every table on its first poll".into(),
        ))
    }

    fn copier(&self) -> PollCopier {
        PollCopier
    }

    async fn start_stream(
        &mut self,
        from: &PollPosition,
        tables: &[TableName],
    ) -> Result<PollStream, SourceError> {
        let tables = self.configured(tables);
        let poller = match (&self.cfg.kind, &self.cfg.conn) {
            (PollKind::Postgres, PollConn::Postgres(conn)) => {
                Poller::Postgres(postgres::PgPoller::start(conn, &tables, self.batch).await?)
            }
            (
                PollKind::ClickHouse,
                PollConn::ClickHouse {
                    url,
                    user,
                    password,
                },
            ) => {
                let conn = clickhouse::ChConn {
                    url: url.clone(),
                    user: user.clone(),
                    password: password.clone(),
                };
                Poller::ClickHouse(
                    clickhouse::ChPoller::start(conn, &tables, self.batch, self.cfg.settle_delay)
                        .await?,
                )
            }
            _ => {
                return Err(SourceError::Unsupported(
                    "source.poll.kind does not match its url".into(),
                ))
            }
        };
        let configs: Vec<_> = tables.iter().map(|t| t.reconcile).collect();
        let reconciler =
            reconcile::Reconciler::new(self.keys.clone(), &configs, self.batch.max_rows)?;
        Ok(PollStream {
            poller,
            count: tables.len(),
            position: from.clone(),
            interval: self.cfg.interval,
            reconciler,
        })
    }

    async fn healthcheck(&self) -> Report {
        match &self.cfg.conn {
            PollConn::Postgres(conn) => postgres::healthcheck(conn, &self.cfg.tables).await,
            PollConn::ClickHouse {
                url,
                user,
                password,
            } => {
                let conn = clickhouse::ChConn {
                    url: url.clone(),
                    user: user.clone(),
                    password: password.clone(),
                };
                clickhouse::healthcheck(&conn, &self.cfg.tables, self.cfg.settle_delay).await
            }
        }
    }
}

pub enum Poller {
    Postgres(postgres::PgPoller),
    ClickHouse(clickhouse::ChPoller),
}

impl Poller {
    fn table(&self, i: usize) -> &TableName {
        match self {
            Poller::Postgres(p) => p.table(i),
            Poller::ClickHouse(p) => p.table(i),
        }
    }

    /// The key columns of table `i`, in the sink's key order.
    fn key_columns(&self, i: usize) -> Vec<String> {
        match self {
            Poller::Postgres(p) => p.key_columns(i),
            Poller::ClickHouse(p) => p.key_columns(i),
        }
    }

    /// Which of `keys` (text values in key order) still exist in table `i`.
    async fn present(
        &self,
        i: usize,
        keys: &[(Vec<String>, u64)],
    ) -> Result<Vec<bool>, SourceError> {
        match self {
            Poller::Postgres(p) => p.present(i, keys).await,
            Poller::ClickHouse(p) => p.present(i, keys).await,
        }
    }

    /// Delete rows for `keys` of table `i`.
    async fn delete_batch(
        &mut self,
        i: usize,
        keys: &[(Vec<String>, u64)],
    ) -> Result<TableBatch, SourceError> {
        match self {
            Poller::Postgres(p) => p.delete_batch(i, keys),
            Poller::ClickHouse(p) => p.delete_batch(i, keys).await,
        }
    }

    async fn poll(
        &mut self,
        i: usize,
        position: &mut PollPosition,
        emit: &Emitter<'_>,
    ) -> Result<bool, SourceError> {
        match self {
            Poller::Postgres(p) => p.poll(i, position, emit).await,
            Poller::ClickHouse(p) => p.poll(i, position, emit).await,
        }
    }
}

/// Polls every table in turn, then waits for the interval.
pub struct PollStream {
    poller: Poller,
    count: usize,
    position: PollPosition,
    interval: std::time::Duration,
    reconciler: Option<reconcile::Reconciler>,
}

impl ChangeStream for PollStream {
    type Position = PollPosition;

    async fn run(
        mut self,
        out: mpsc::Sender<Flush<PollPosition>>,
        mut acks: watch::Receiver<PollPosition>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        // Nothing upstream to confirm: the saved cursors are the whole state.
        // The acknowledgements only tell the reconcile when all emitted rows
        // are durable.
        let emit = Emitter {
            out: &out,
            shutdown: &shutdown,
        };
        loop {
            for i in 0..self.count {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                if !self.poller.poll(i, &mut self.position, &emit).await? {
                    return Ok(());
                }
            }
            if let Some(r) = &mut self.reconciler {
                let budget = self.interval.max(MIN_RECONCILE_BUDGET);
                if !r
                    .run(&mut self.poller, &self.position, &mut acks, &emit, budget)
                    .await?
                {
                    return Ok(());
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

/// Polled tables are copied by their first poll (every row below the
/// watermark), so there are no separate copy units.
#[derive(Clone)]
pub struct PollCopier;

/// Never constructed: [`PollCopier`] plans no units.
pub struct NoUnits;

impl UnitReader for NoUnits {
    async fn next_batch(&mut self) -> Result<Option<TableBatch>, SourceError> {
        Ok(None)
    }

    fn rows(&self) -> u64 {
        0
    }
}

impl Copier for PollCopier {
    type Position = PollPosition;
    type Reader = NoUnits;

    async fn plan(&self, table: &TableName) -> Result<Vec<SnapshotUnit>, SourceError> {
        Err(SourceError::TableData {
            table: table.clone(),
            message: "a polled table is not copied apart from its polls; to read every table again, stop sluice and remove the pipeline's checkpoint (re-read rows keep their versions)".into(),
        })
    }

    async fn open(&self, unit: &SnapshotUnit, _at: &PollPosition) -> Result<NoUnits, SourceError> {
        Err(SourceError::TableData {
            table: unit.table.clone(),
            message: "a polled table has no copy units".into(),
        })
    }

    fn version(&self, _at: &PollPosition) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(parts: &[(&str, i64)]) -> PollPosition {
        PollPosition {
            cursors: parts.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn ordered_part_by_part() {
        let a = pos(&[("a", 1), ("b", 5)]);
        assert_eq!(a.partial_cmp(&a), Some(Ordering::Equal));
        assert!(pos(&[("a", 2), ("b", 5)]) > a);
        assert!(pos(&[("a", 1), ("b", 4)]) < a);
        assert_eq!(pos(&[("a", 2), ("b", 4)]).partial_cmp(&a), None);
        // A new table's cursor moves the position forward.
        assert!(pos(&[("a", 1), ("b", 5), ("c", i64::MIN)]) > a);
        assert!(PollPosition::default() < a);
        assert_eq!(a.to_string(), "a=1 b=5");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<PollPosition>(&json).unwrap(), a);
    }
}
