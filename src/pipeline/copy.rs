//! The copy engine: reads tables' existing rows (initial snapshot, tables
//! added later, resyncs) unit by unit, several units at once, each reader
//! with its own sink writer. It runs as a task beside the stream and reports
//! to the pipeline's loop, which owns the state: a unit is recorded done only
//! after its rows are durable in the sink.
//!
//! Why a copy may be read at any moment after its version, in any order,
//! and again after a crash: every copied row carries the version of the
//! position the copy is consistent with; the stream replays every change
//! after that position afterwards, with higher versions. See
//! `source/postgres/copier.rs` for the ranges and docs/architecture.md.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::progress::CopyProgress;
use super::retry::Backoff;
use super::{apply_durably, PipelineError, SNAPSHOT_BATCHES_AHEAD};
use crate::config::TableName;
use crate::core::{Classify, ErrorClass, SinkItem};
use crate::metrics as m;
use crate::sink::{Sink, SinkError};
use crate::source::{Copier, SnapshotUnit, SourceError, UnitReader};

/// One table to copy: its plan when one was saved, and the units done.
#[derive(Debug, Clone)]
pub(crate) struct TableCopy {
    pub table: TableName,
    pub planned: Option<Vec<SnapshotUnit>>,
    pub done: BTreeSet<String>,
}

/// What the copy task tells the pipeline's loop.
#[derive(Debug)]
pub(crate) enum CopyEvent {
    /// A table was planned (save the plan: a restart reads the same units).
    Planned {
        table: TableName,
        units: Vec<SnapshotUnit>,
    },
    /// A unit's rows are durable in the sink.
    UnitDone {
        table: TableName,
        unit: String,
        rows: u64,
    },
    /// The table cannot be copied (read or written); the others go on.
    TableStopped { table: TableName, reason: String },
    /// A fatal error: the pipeline stops.
    Failed(PipelineError),
}

/// A running copy.
pub(crate) struct CopyTask {
    pub events: mpsc::Receiver<CopyEvent>,
    pub stop: CancellationToken,
    pub handle: tokio::task::JoinHandle<()>,
}

/// Work shared by the readers.
struct Shared<C: Copier> {
    copier: C,
    at: C::Position,
    queue: Mutex<VecDeque<SnapshotUnit>>,
    stopped: Mutex<HashSet<TableName>>,
    events: mpsc::Sender<CopyEvent>,
    progress: Arc<CopyProgress>,
    stop: CancellationToken,
}

/// Starts copying `tables` at `at`, with one reader per sink writer.
pub(crate) fn spawn<C, K>(
    copier: C,
    writers: Vec<K>,
    tables: Vec<TableCopy>,
    at: C::Position,
    progress: Arc<CopyProgress>,
    parent: &CancellationToken,
) -> CopyTask
where
    C: Copier,
    K: Sink + 'static,
{
    // Room for every unit's event: readers never wait on the loop.
    let (tx, rx) = mpsc::channel(1024);
    let stop = parent.child_token();
    let shared = Arc::new(Shared {
        copier,
        at,
        queue: Mutex::new(VecDeque::new()),
        stopped: Mutex::new(HashSet::new()),
        events: tx,
        progress,
        stop: stop.clone(),
    });
    let handle = tokio::spawn(run(shared, writers, tables).instrument(tracing::Span::current()));
    CopyTask {
        events: rx,
        stop,
        handle,
    }
}

/// What a failed read of a copy is called in retry logs and metrics.
const READING: &str = "reading the copy";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn run<C: Copier, K: Sink + 'static>(
    shared: Arc<Shared<C>>,
    mut writers: Vec<K>,
    tables: Vec<TableCopy>,
) {
    for t in tables {
        let units = match t.planned {
            Some(u) => u,
            None => match plan(&shared, &mut writers[0], &t.table).await {
                Some(u) => u,
                None => continue,
            },
        };
        let todo: Vec<SnapshotUnit> = units
            .iter()
            .filter(|u| !t.done.contains(&u.id))
            .cloned()
            .collect();
        tracing::info!(
            table = %t.table,
            version = %shared.at,
            units = units.len(),
            to_read = todo.len(),
            "copy started"
        );
        shared.progress.start(&t.table, &units, &t.done);
        lock(&shared.queue).extend(todo);
    }
    let readers: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(i, sink)| {
            let shared = shared.clone();
            let span = tracing::info_span!("reader", n = i);
            tokio::spawn(read_units(shared, sink).instrument(span))
        })
        .collect();
    for r in readers {
        if let Err(e) = r.await {
            let _ = shared
                .events
                .send(CopyEvent::Failed(PipelineError::Internal(format!(
                    "a copy reader failed: {e}"
                ))))
                .await;
        }
    }
}

/// Plans a table (retrying transient errors); `None` when it was stopped
/// or the copy is ending.
async fn plan<C: Copier, K: Sink>(
    shared: &Shared<C>,
    sink: &mut K,
    table: &TableName,
) -> Option<Vec<SnapshotUnit>> {
    let mut backoff = Backoff::default();
    loop {
        match foreign_rows(shared, sink, table).await {
            Ok(None) => {}
            Ok(Some(reason)) => {
                stop_table(shared, table, reason).await;
                return None;
            }
            Err(e) => {
                if !on_copy_error(shared, table, e, &mut backoff, READING).await {
                    return None;
                }
                continue;
            }
        }
        match shared.copier.plan(table).await {
            Ok(units) => {
                let _ = shared
                    .events
                    .send(CopyEvent::Planned {
                        table: table.clone(),
                        units: units.clone(),
                    })
                    .await;
                return Some(units);
            }
            Err(e) => {
                if !on_copy_error(shared, table, e, &mut backoff, READING).await {
                    return None;
                }
            }
        }
    }
}

/// Why a table must not be copied into its destination, if it must not:
/// the destination holds rows above every version the source can have
/// written yet, so they came from elsewhere (another server, or this one
/// restored from a backup, whose positions start lower) and would win over
/// every row copied and streamed now, silently.
async fn foreign_rows<C: Copier, K: Sink>(
    shared: &Shared<C>,
    sink: &mut K,
    table: &TableName,
) -> Result<Option<String>, PipelineError> {
    let Some(max) = sink.max_version(table).await? else {
        return Ok(None);
    };
    let Some(bound) = shared.copier.version_bound().await? else {
        return Ok(None);
    };
    Ok((max > bound).then(|| {
        format!(
            "the destination table already holds rows with _version up to {max}, above any version this source can have written yet ({bound}): they were written from another server (or from this one before it was restored from a backup) and would win over every row copied and streamed now. Drop the destination table (or point the sink at a new database), then resync the table"
        )
    }))
}

/// A read error, or a streamed unit's transient write error (`what` says
/// which): waits out a transient one (true: try again); stops the table for
/// a table-scoped one, reports a fatal one (false).
async fn on_copy_error<C, E>(
    shared: &Shared<C>,
    table: &TableName,
    e: E,
    backoff: &mut Backoff,
    what: &str,
) -> bool
where
    C: Copier,
    E: Classify + std::fmt::Display + Into<PipelineError>,
{
    match e.class() {
        ErrorClass::Table(t) => {
            stop_table(shared, &t, e.to_string()).await;
            false
        }
        _ => match backoff.wait_or_fail(e, &shared.stop, what).await {
            Ok(()) => !is_stopped(shared, table),
            Err(e) => {
                fail(shared, e.into()).await;
                false
            }
        },
    }
}

/// A fatal error: the pipeline is told (once) and every reader stops.
async fn fail<C: Copier>(shared: &Shared<C>, e: PipelineError) {
    if !shared.stop.is_cancelled() {
        let _ = shared.events.send(CopyEvent::Failed(e)).await;
        shared.stop.cancel();
    }
}

async fn stop_table<C: Copier>(shared: &Shared<C>, table: &TableName, reason: String) {
    if lock(&shared.stopped).insert(table.clone()) {
        let _ = shared
            .events
            .send(CopyEvent::TableStopped {
                table: table.clone(),
                reason,
            })
            .await;
    }
}

fn is_stopped<C: Copier>(shared: &Shared<C>, table: &TableName) -> bool {
    lock(&shared.stopped).contains(table)
}

/// One reader: takes units off the queue until it is empty.
async fn read_units<C: Copier, K: Sink>(shared: Arc<Shared<C>>, mut sink: K) {
    loop {
        if shared.stop.is_cancelled() {
            return;
        }
        let Some(unit) = lock(&shared.queue).pop_front() else {
            return;
        };
        if is_stopped(&shared, &unit.table) {
            continue;
        }
        let mut backoff = Backoff::default();
        loop {
            match copy_unit(&shared, &mut sink, &unit).await {
                Ok(Some(rows)) => {
                    let _ = shared
                        .events
                        .send(CopyEvent::UnitDone {
                            table: unit.table.clone(),
                            unit: unit.id.clone(),
                            rows,
                        })
                        .await;
                    break;
                }
                // Stopped, or the copy is ending: the unit is read next time.
                Ok(None) => break,
                Err(Failure::Read(e)) => {
                    if !on_copy_error(&shared, &unit.table, e, &mut backoff, READING).await {
                        break;
                    }
                }
                Err(Failure::WriteAgain(e)) => {
                    let what = "writing a copy unit";
                    if !on_copy_error(&shared, &unit.table, e, &mut backoff, what).await {
                        break;
                    }
                }
                Err(Failure::Write(e)) => {
                    fail(&shared, e).await;
                    return;
                }
            }
        }
    }
}

enum Failure {
    Read(SourceError),
    /// A streamed unit's write failed transiently: copy the unit again.
    WriteAgain(SinkError),
    Write(PipelineError),
}

/// Reads one unit into the sink, the reader decoding ahead of the inserts
/// (at most SNAPSHOT_BATCHES_AHEAD batches). `Ok(None)` when the table was
/// stopped or the copy is ending.
async fn copy_unit<C: Copier, K: Sink>(
    shared: &Shared<C>,
    sink: &mut K,
    unit: &SnapshotUnit,
) -> Result<Option<u64>, Failure> {
    // Opening may wait (for the server, or for its open transactions).
    let mut reader = tokio::select! {
        r = shared.copier.open(unit, &shared.at) => r.map_err(Failure::Read)?,
        _ = shared.stop.cancelled() => return Ok(None),
    };
    if K::STREAMS_COPIES {
        return stream_unit(shared, sink, unit, reader).await;
    }
    let (tx, mut rx) = mpsc::channel(SNAPSHOT_BATCHES_AHEAD);
    let read = tokio::spawn(
        async move {
            while let Some(batch) = reader.next_batch().await? {
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
            Ok::<_, SourceError>(reader.rows())
        }
        .instrument(tracing::Span::current()),
    );
    loop {
        // A reader waiting on a slow server must not hold up a shutdown.
        let batch = tokio::select! {
            b = rx.recv() => b,
            _ = shared.stop.cancelled() => None,
        };
        let Some(batch) = batch else {
            break;
        };
        if shared.stop.is_cancelled() || is_stopped(shared, &unit.table) {
            read.abort();
            return Ok(None);
        }
        let rows = batch.batch.num_rows() as u64;
        let mut items = vec![SinkItem::Rows(batch)];
        let stopped = apply_durably(sink, &mut items, &shared.stop)
            .await
            .map_err(|e| Failure::Write(e.into()))?;
        for (t, reason) in stopped {
            stop_table(shared, &t, reason).await;
        }
        if is_stopped(shared, &unit.table) {
            read.abort();
            return Ok(None);
        }
        shared.progress.add_rows(&unit.table, rows);
        super::observe::applied(&items);
        metrics::counter!(m::ROWS_WRITTEN).increment(rows);
    }
    if shared.stop.is_cancelled() {
        read.abort();
        return Ok(None);
    }
    reader_result(read.await)
}

/// What a unit's reader task ended with; `Ok(None)` when it was aborted.
fn reader_result<T>(
    r: Result<Result<T, SourceError>, tokio::task::JoinError>,
) -> Result<Option<T>, Failure> {
    match r {
        Ok(Ok(v)) => Ok(Some(v)),
        Ok(Err(e)) => Err(Failure::Read(e)),
        Err(e) if e.is_cancelled() => Ok(None),
        Err(e) => Err(Failure::Write(PipelineError::Internal(format!(
            "a copy reader failed: {e}"
        )))),
    }
}

/// [`copy_unit`] for a sink that takes a unit as one write: the reader
/// hands batches straight to it (at most SNAPSHOT_BATCHES_AHEAD waiting);
/// the unit is done when the sink says all of it is durable.
async fn stream_unit<C: Copier, K: Sink>(
    shared: &Shared<C>,
    sink: &mut K,
    unit: &SnapshotUnit,
    mut reader: C::Reader,
) -> Result<Option<u64>, Failure> {
    let (tx, mut rx) = mpsc::channel(SNAPSHOT_BATCHES_AHEAD);
    let progress = shared.progress.clone();
    let table = unit.table.clone();
    let read = tokio::spawn(
        async move {
            let mut batches = Vec::new();
            while let Some(batch) = reader.next_batch().await? {
                // Rows read: what the progress bar shows; rows written
                // are counted once the unit is durable.
                let rows = batch.batch.num_rows() as u64;
                progress.add_rows(&table, rows);
                batches.push(rows);
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
            Ok::<_, SourceError>((reader.rows(), batches))
        }
        .instrument(tracing::Span::current()),
    );
    let written = tokio::select! {
        r = sink.apply_copy(&mut rx) => r,
        _ = shared.stop.cancelled() => {
            read.abort();
            return Ok(None);
        }
    };
    crate::live::live().set_sink_failing(written.as_ref().is_err_and(|e| e.is_transient()));
    let written = match written {
        Ok(rows) => rows,
        Err(e) => {
            read.abort();
            return match e.class() {
                ErrorClass::Table(t) => {
                    stop_table(shared, &t, e.to_string()).await;
                    Ok(None)
                }
                ErrorClass::Transient => Err(Failure::WriteAgain(e)),
                _ => Err(Failure::Write(e.into())),
            };
        }
    };
    for (t, reason) in sink.take_failed() {
        stop_table(shared, &t, reason).await;
    }
    if is_stopped(shared, &unit.table) {
        read.abort();
        return Ok(None);
    }
    let Some((rows, batches)) = reader_result(read.await)? else {
        return Ok(None);
    };
    super::observe::copied(&unit.table, &batches);
    metrics::counter!(m::ROWS_WRITTEN).increment(written);
    Ok(Some(rows))
}
