//! Sources: where changes come from. Each implements [`Source`]; the
//! pipeline knows nothing else about them.
//!
//! A source has two ways of reading, sharing one position type:
//! - a **snapshot** of a table's existing rows, planned as independent units
//!   (each read by a [`UnitReader`]; a finished unit is recorded so a crash
//!   re-reads only unfinished ones);
//! - a **stream** of changes from a position on ([`ChangeStream`]), handed
//!   out as flushes that carry the position they make safe, while it takes
//!   back acknowledgements of what the sink made durable.
//!
//! PostgreSQL logical replication (`postgres/`) is the first source. A
//! cursor-polled table source fits the same shape with one cursor per table
//! as its position (a position type ordered per part), as does a Kafka
//! source with offsets per partition.

pub mod error;
pub mod poll;
pub mod postgres;

use std::future::Future;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::TableName;
use crate::core::health::Report;
use crate::core::position::{Position, SourceIdentity};
use crate::core::{Flush, TableBatch};

pub use error::SourceError;

/// What [`Source::prepare`] found: the upstream's identity and where to start.
#[derive(Debug, Clone)]
pub struct Prepared<P> {
    pub identity: SourceIdentity,
    /// The saved position when there was one, else the position from which
    /// a snapshot plus the stream miss nothing (PostgreSQL: the new slot's
    /// consistent point).
    pub start: P,
}

/// A piece of a table's snapshot that can be read (and retried) on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotUnit {
    pub table: TableName,
    /// Stable across restarts: finished units are recorded by this id.
    pub id: String,
    /// The source's estimate, for progress.
    pub estimated_rows: Option<u64>,
}

pub trait Source: Send + 'static {
    type Position: Position;
    type Stream: ChangeStream<Position = Self::Position>;
    type Copier: Copier<Position = Self::Position>;

    /// Checks a saved position against the upstream (the same server, the
    /// same slot, nothing skipped) and prepares what streaming needs
    /// (PostgreSQL: publication and slot). A position that cannot be resumed
    /// from is a fatal error that says what to do.
    fn prepare(
        &mut self,
        saved: Option<(&Self::Position, &SourceIdentity)>,
    ) -> impl Future<Output = Result<Prepared<Self::Position>, SourceError>> + Send;

    /// For a copy with no stream after it (`sluice snapshot`): where a copy
    /// made now is consistent, without preparing anything for streaming.
    fn prepare_copy_only(
        &mut self,
    ) -> impl Future<Output = Result<Prepared<Self::Position>, SourceError>> + Send;

    /// The saved position was lost upstream ([`SourceError::position_lost`]):
    /// start over with a new one (PostgreSQL: drop and recreate the slot,
    /// exporting its snapshot), from which every table is copied again.
    fn recreate(
        &mut self,
    ) -> impl Future<Output = Result<Prepared<Self::Position>, SourceError>> + Send {
        async {
            Err(SourceError::NotReady(
                "this source cannot start over after losing its position".into(),
            ))
        }
    }

    /// What copies tables' existing rows (snapshots, resyncs); usable from
    /// several tasks at once, while the stream runs.
    fn copier(&self) -> Self::Copier;

    /// The copies that needed what `prepare` set up for them (PostgreSQL: the
    /// new slot's exported snapshot) are done; release it.
    fn release_snapshot(&mut self) {}

    /// Writes something upstream so that a stream past everything so far
    /// reaches a new position soon, even when nothing else is written
    /// (PostgreSQL: a transaction that only commits). For a copy that waits
    /// for the saved position to move on.
    fn mark_position(&self) -> impl Future<Output = Result<(), SourceError>> + Send + 'static {
        async { Ok(()) }
    }

    /// Starts streaming the changes of `tables` after `from`.
    fn start_stream(
        &mut self,
        from: &Self::Position,
        tables: &[TableName],
    ) -> impl Future<Output = Result<Self::Stream, SourceError>> + Send;

    /// Checks reachability, settings and permissions without changing
    /// anything (`sluice check`).
    fn healthcheck(&self) -> impl Future<Output = Report> + Send;
}

/// Copies tables' existing rows, split into units that are read (and
/// retried, and recorded as done) on their own, several at a time.
pub trait Copier: Clone + Send + Sync + 'static {
    type Position: Position;
    type Reader: UnitReader;

    /// Splits one table into units. Their ids are saved and handed back to
    /// [`Copier::open`] after a restart, so they must describe the unit
    /// (not depend on the planning run).
    fn plan(
        &self,
        table: &TableName,
    ) -> impl Future<Output = Result<Vec<SnapshotUnit>, SourceError>> + Send;

    /// Starts reading one unit. Its rows carry [`Copier::version`]`(at)`:
    /// the stream position they are consistent with.
    fn open(
        &self,
        unit: &SnapshotUnit,
        at: &Self::Position,
    ) -> impl Future<Output = Result<Self::Reader, SourceError>> + Send;

    /// The `_version` of rows copied at `at`. Rows a finished copy did not
    /// write and that are older than this are gone from the source.
    fn version(&self, at: &Self::Position) -> u64;

    /// A version no row of this source's history can be above yet
    /// (PostgreSQL: the server's WAL position now); `None` when the source
    /// has no such bound. A destination row above it was written from
    /// elsewhere and would win over every row written now.
    fn version_bound(&self) -> impl Future<Output = Result<Option<u64>, SourceError>> + Send {
        async { Ok(None) }
    }
}

/// Reads one snapshot unit as batches.
pub trait UnitReader: Send + 'static {
    /// The next batch, or `None` when the unit is done.
    fn next_batch(
        &mut self,
    ) -> impl Future<Output = Result<Option<TableBatch>, SourceError>> + Send;

    /// Rows read so far.
    fn rows(&self) -> u64;
}

/// One streaming session.
pub trait ChangeStream: Send + 'static {
    type Position: Position;

    /// Streams until `shutdown` or an error. Flushes go to `out` (bounded:
    /// a slow sink slows reading); `acks` carries the positions the
    /// pipeline made durable (sink applied, state saved), which are the
    /// only ones the source may confirm upstream. On shutdown the buffered
    /// changes are flushed and the last acknowledgement is awaited briefly.
    fn run(
        self,
        out: mpsc::Sender<Flush<Self::Position>>,
        acks: watch::Receiver<Self::Position>,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
}
