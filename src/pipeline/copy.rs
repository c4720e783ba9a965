//! Copying tables' existing rows (initial snapshot), before streaming.
//!
//! Each table is split into units by the source; each finished unit is
//! recorded in the state, so a crash re-reads only the unfinished ones.
//! Snapshot rows carry the saved position as their version and are read
//! after it: a change streamed later has a higher version and wins, while a
//! change the copy already saw is replayed with the same outcome. So a unit
//! may be read again after a crash, and a table added later is copied while
//! its position stays where streaming resumes.

use std::time::Instant;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::retry::Backoff;
use super::{Pipeline, PipelineError, SNAPSHOT_BATCHES_AHEAD};
use crate::config::TableName;
use crate::core::{Classify, ErrorClass, SinkItem};
use crate::metrics as m;
use crate::sink::Sink;
use crate::source::{SnapshotUnit, Source, SourceError, UnitReader};
use crate::state::{Lifecycle, SnapshotProgress, StateStore};

/// How reading one unit ended.
enum UnitOutcome {
    Done {
        rows: u64,
    },
    /// Shutdown came first; the unit is read again on the next run.
    Interrupted,
    /// The table was stopped (by the sink or a table-scoped read error).
    TableStopped,
}

impl<S, K, St> Pipeline<S, K, St>
where
    S: Source,
    K: Sink,
    St: StateStore,
{
    /// Copies every configured table that still needs it, one after another.
    pub(super) async fn copy_pending_tables(&mut self) -> Result<(), PipelineError> {
        let pending: Vec<TableName> = self
            .opts
            .tables
            .iter()
            .filter(|t| self.state.lifecycle(t).needs_copy())
            .cloned()
            .collect();
        for table in pending {
            if self.shutdown.is_cancelled() {
                break;
            }
            let span = tracing::info_span!("snapshot", table = %table);
            self.copy_table(&table).instrument(span).await?;
        }
        Ok(())
    }

    async fn copy_table(&mut self, table: &TableName) -> Result<(), PipelineError> {
        let mut progress = match self.state.lifecycle(table) {
            Lifecycle::Snapshotting { progress } | Lifecycle::Resyncing { progress } => progress,
            _ => SnapshotProgress::default(),
        };
        let mut backoff = Backoff::default();
        let units = loop {
            match self.source.plan_snapshot(table).await {
                Ok(u) => break u,
                Err(e) => self.on_read_error(table, e, &mut backoff).await?,
            }
            if !self.state.writes(table) {
                return Ok(());
            }
        };
        let at = self
            .state
            .position
            .clone()
            .expect("the position is set at start");
        let todo: Vec<&SnapshotUnit> = units
            .iter()
            .filter(|u| !progress.units_done.contains(&u.id))
            .collect();
        tracing::info!(
            version = %at,
            units = units.len(),
            to_read = todo.len(),
            "snapshot started"
        );
        let started = Instant::now();
        let rows_before = progress.rows;
        for unit in todo {
            match self.copy_unit(unit, &at).await? {
                UnitOutcome::Done { rows } => {
                    progress.units_done.insert(unit.id.clone());
                    progress.rows += rows;
                    self.state.set_lifecycle(
                        table,
                        Lifecycle::Snapshotting {
                            progress: progress.clone(),
                        },
                    );
                    self.save()?;
                }
                UnitOutcome::Interrupted => {
                    tracing::info!("snapshot interrupted by shutdown; it resumes on the next run");
                    return Ok(());
                }
                UnitOutcome::TableStopped => {
                    self.save()?;
                    return Ok(());
                }
            }
        }
        self.state.set_lifecycle(table, Lifecycle::Streaming);
        self.save()?;
        let secs = started.elapsed().as_secs_f64();
        let rows = progress.rows - rows_before;
        tracing::info!(
            rows,
            seconds = format!("{secs:.1}"),
            rows_per_sec = format!("{:.0}", rows as f64 / secs.max(1e-9)),
            "snapshot done"
        );
        Ok(())
    }

    /// Reads one unit into the sink; a transient failure reads it again
    /// from its start (the sink absorbs the rows it already has).
    async fn copy_unit(
        &mut self,
        unit: &SnapshotUnit,
        at: &S::Position,
    ) -> Result<UnitOutcome, PipelineError> {
        let table = &unit.table;
        let mut backoff = Backoff::default();
        loop {
            let reader = match self.source.open_unit(unit, at).await {
                Ok(r) => r,
                Err(e) => {
                    self.on_read_error(table, e, &mut backoff).await?;
                    if !self.state.writes(table) {
                        return Ok(UnitOutcome::TableStopped);
                    }
                    continue;
                }
            };
            match self.pump_unit(reader).await? {
                Ok(outcome) => return Ok(outcome),
                Err(e) => {
                    self.on_read_error(table, e, &mut backoff).await?;
                    if !self.state.writes(table) {
                        return Ok(UnitOutcome::TableStopped);
                    }
                }
            }
        }
    }

    /// Inserts a unit's batches while its reader decodes the next ones
    /// (at most SNAPSHOT_BATCHES_AHEAD ahead). The outer error is the
    /// sink's or the state's; the inner one the reader's.
    async fn pump_unit(
        &mut self,
        mut reader: S::UnitReader,
    ) -> Result<Result<UnitOutcome, SourceError>, PipelineError> {
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
        while let Some(batch) = rx.recv().await {
            if self.shutdown.is_cancelled() {
                read.abort();
                return Ok(Ok(UnitOutcome::Interrupted));
            }
            let table = batch.shape.table.clone();
            let rows = batch.batch.num_rows();
            let mut items = vec![SinkItem::Rows(batch)];
            if self.apply(&mut items).await? && !self.state.writes(&table) {
                read.abort();
                return Ok(Ok(UnitOutcome::TableStopped));
            }
            metrics::counter!(m::ROWS_WRITTEN).increment(rows as u64);
        }
        match read.await {
            Ok(Ok(rows)) => Ok(Ok(UnitOutcome::Done { rows })),
            Ok(Err(e)) => Ok(Err(e)),
            Err(e) => Err(PipelineError::Internal(format!(
                "the snapshot reader failed: {e}"
            ))),
        }
    }

    /// A read error during the copy: transient ones are waited out (`Ok`:
    /// try again), a table-scoped one stops the table (`Ok`; the caller sees
    /// it stopped), others end the pipeline.
    async fn on_read_error(
        &mut self,
        table: &TableName,
        e: SourceError,
        backoff: &mut Backoff,
    ) -> Result<(), PipelineError> {
        match e.class() {
            ErrorClass::Table(t) => {
                self.fail_table(&t, e.to_string());
                if &t != table {
                    // Not this table's: nothing to retry here.
                    return Err(e.into());
                }
                Ok(())
            }
            _ => Ok(backoff
                .wait_or_fail(e, &self.shutdown, "reading the snapshot")
                .await?),
        }
    }
}
