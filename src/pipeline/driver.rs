//! The pipeline's loop: one stream session and at most one copy at a time,
//! both running while the loop applies what they produce and saves the
//! state. The only place that decides what runs:
//!
//! - tables that need copying (pending, snapshotting, resyncing) are copied
//!   by a copy task, at the saved position, which stays held (not advanced,
//!   not acknowledged) until the copy is done;
//! - the other tables stream meanwhile; when a copy finishes, the session
//!   restarts from the held position with the copied tables in it, so they
//!   get every change after their copy's version;
//! - with a new slot every table is copied first at the slot's exported
//!   snapshot, and only then does streaming start.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::commit::StreamTask;
use super::copy::{self, CopyEvent, CopyTask, TableCopy};
use super::progress::{spawn_reporter, CopyProgress};
use super::retry::Backoff;
use super::{Control, Pipeline, PipelineError};
use crate::config::TableName;
use crate::core::{Classify, ErrorClass};
use crate::metrics as m;
use crate::sink::Sink;
use crate::source::{Copier, SnapshotUnit, Source, SourceError};
use crate::state::{Lifecycle, PlannedUnit, SnapshotProgress, StateStore};

/// A copy task with its progress view.
struct Copying {
    task: CopyTask,
    /// Tables were streaming when the copy started, so they keep streaming
    /// beside it; otherwise (every table being copied: the initial copy)
    /// nothing streams until it is done.
    streams_beside: bool,
    progress: Arc<CopyProgress>,
    reporter_stop: CancellationToken,
    reporter: tokio::task::JoinHandle<()>,
}

async fn next_event(copy: &mut Option<Copying>) -> Option<CopyEvent> {
    match copy {
        Some(c) => c.task.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_flush<P>(stream: &mut Option<StreamTask<P>>) -> Option<crate::core::Flush<P>> {
    match stream {
        Some(s) => s.flushes.recv().await,
        None => std::future::pending().await,
    }
}

/// Takes the flushes that queued up behind `flush` while the sink was busy
/// into it, while the rows stay within `limit`. The last one taken may pass
/// the limit by its own size: it was already made, and waiting would not
/// make it smaller.
fn merge_queued<P>(
    flush: &mut crate::core::Flush<P>,
    queue: &mut mpsc::Receiver<crate::core::Flush<P>>,
    limit: usize,
) {
    let mut merged = 0;
    while flush.rows() < limit {
        match queue.try_recv() {
            Ok(next) => {
                flush.absorb(next);
                merged += 1;
            }
            Err(_) => break,
        }
    }
    if merged > 0 {
        flush.coalesce_rows();
        metrics::counter!(m::FLUSHES_MERGED).increment(merged);
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl<S, K, St> Pipeline<S, K, St>
where
    S: Source,
    K: Sink + 'static,
    St: StateStore,
{
    pub(super) async fn drive(
        &mut self,
        mut control: mpsc::Receiver<Control>,
    ) -> Result<(), PipelineError> {
        let shutdown = self.shutdown.clone();
        let mut stream: Option<StreamTask<S::Position>> = None;
        let mut copy: Option<Copying> = None;
        // The session must end and restart from the held position.
        let mut replay = false;
        let mut backoff = Backoff::default();
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut stopping = false;
        let mut control_open = true;
        loop {
            if stopping {
                if stream.is_none() && copy.is_none() {
                    return Ok(());
                }
            } else if self.opts.copy_only {
                if copy.is_none() {
                    copy = self.start_copy()?;
                }
                if copy.is_none() {
                    return Ok(());
                }
            } else {
                if copy.is_none() {
                    copy = self.start_copy()?;
                }
                if stream.is_none() && retry_at.is_none() {
                    let tables = self.streaming_tables();
                    if copy.as_ref().is_none_or(|c| c.streams_beside) {
                        match self.start_stream(tables).await {
                            Ok(s) => {
                                crate::live::live().set_streaming(true);
                                stream = Some(s);
                            }
                            Err(e) => match e.class() {
                                ErrorClass::Table(t) => {
                                    self.fail_table(&t, e.to_string());
                                    self.save()?;
                                    continue;
                                }
                                ErrorClass::Transient => {
                                    let d = backoff.schedule(&e, "starting the stream");
                                    retry_at = Some(tokio::time::Instant::now() + d);
                                }
                                ErrorClass::Fatal
                                    if e.position_lost() && self.opts.resync_on_position_lost =>
                                {
                                    self.start_over(&mut copy, e).await?;
                                    continue;
                                }
                                ErrorClass::Fatal => return Err(e.into()),
                            },
                        }
                    }
                }
            }
            let held = copy.is_some() || replay;
            tokio::select! {
                _ = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    if let Some(s) = &mut stream {
                        s.stop.cancel();
                        if held {
                            // A held position is not acknowledged: the
                            // session need not wait for it.
                            s.acks = None;
                        }
                    }
                    if let Some(c) = &copy {
                        c.task.stop.cancel();
                    }
                }
                c = control.recv(), if control_open && !stopping => match c {
                    Some(Control::Resync(tables)) => self.request_resync(&tables)?,
                    None => control_open = false,
                },
                ev = next_event(&mut copy) => match ev {
                    Some(ev) => self.on_copy_event(ev, &mut copy).await?,
                    None => {
                        let done = copy.take().expect("a copy was running");
                        let copied = self.end_copy(done).await;
                        if copied && !stopping {
                            if let Some(s) = &stream {
                                // Restart from the held position with the
                                // copied tables.
                                replay = true;
                                s.stop.cancel();
                            }
                        }
                        if !self.state.tables.values().any(|t| t.lifecycle.needs_copy()) {
                            self.source.release_snapshot();
                        }
                    }
                },
                f = next_flush(&mut stream) => match f {
                    Some(mut flush) => {
                        if let Some(s) = &mut stream {
                            merge_queued(&mut flush, &mut s.flushes, self.opts.merge_rows);
                        }
                        let acks = stream.as_ref().and_then(|s| s.acks.as_ref());
                        self.commit(flush, acks, held).await?;
                        backoff.reset();
                    }
                    None => {
                        let task = stream.take().expect("a stream was running");
                        crate::live::live().set_streaming(false);
                        let result = task.handle.await.unwrap_or_else(|e| {
                            Err(SourceError::NotReady(format!("the source task failed: {e}")))
                        });
                        let was_replay = std::mem::take(&mut replay);
                        if let Err(e) = result {
                            match e.class() {
                                ErrorClass::Table(t) => {
                                    // Restart without it, from the saved position.
                                    self.fail_table(&t, e.to_string());
                                    self.save()?;
                                }
                                _ if stopping || (was_replay && shutdown.is_cancelled()) => {
                                    tracing::debug!(error = %e, "source ended during shutdown");
                                }
                                _ if e.position_lost() && self.opts.resync_on_position_lost => {
                                    self.start_over(&mut copy, e).await?;
                                }
                                ErrorClass::Transient => {
                                    metrics::counter!(m::SOURCE_RECONNECTS).increment(1);
                                    let d = backoff.schedule(&e, "replication (reconnecting from the last saved position)");
                                    retry_at = Some(tokio::time::Instant::now() + d);
                                }
                                _ => {
                                    if let Some(c) = &copy {
                                        c.task.stop.cancel();
                                    }
                                    return Err(e.into());
                                }
                            }
                        } else if was_replay {
                            tracing::info!(tables = %names(&task.tables), "restarting the stream from the copies' position, with the copied tables");
                        }
                    }
                },
                _ = sleep_until(retry_at) => retry_at = None,
            }
        }
    }

    /// Starts copying every table that needs it; `None` when none does.
    fn start_copy(&mut self) -> Result<Option<Copying>, PipelineError> {
        let mut todo = Vec::new();
        for t in &self.opts.tables {
            let lifecycle = self.state.lifecycle(t);
            if !lifecycle.writes() || !lifecycle.needs_copy() {
                continue;
            }
            let progress = match lifecycle {
                Lifecycle::Resyncing { progress } => {
                    self.sink.reset_table(t);
                    progress
                }
                Lifecycle::Snapshotting { progress } => progress,
                _ => {
                    self.state.set_lifecycle(
                        t,
                        Lifecycle::Snapshotting {
                            progress: SnapshotProgress::default(),
                        },
                    );
                    SnapshotProgress::default()
                }
            };
            let planned = (!progress.units.is_empty()).then(|| {
                progress
                    .units
                    .iter()
                    .map(|u| SnapshotUnit {
                        table: t.clone(),
                        id: u.id.clone(),
                        estimated_rows: u.estimated_rows,
                    })
                    .collect()
            });
            todo.push(TableCopy {
                table: t.clone(),
                planned,
                done: progress.units_done,
            });
        }
        if todo.is_empty() {
            return Ok(None);
        }
        let streams_beside = !self.streaming_tables().is_empty();
        let at = self
            .state
            .position
            .clone()
            .expect("the position is set at start");
        tracing::info!(tables = %names(&todo.iter().map(|t| t.table.clone()).collect::<Vec<_>>()), readers = self.opts.copy_readers, "copying tables");
        let writers = (0..self.opts.copy_readers.max(1))
            .map(|_| self.sink.fork())
            .collect();
        let progress = Arc::new(CopyProgress::default());
        let reporter_stop = CancellationToken::new();
        let reporter = spawn_reporter(
            progress.clone(),
            self.opts.progress.clone(),
            reporter_stop.clone(),
        );
        let task = copy::spawn(
            self.source.copier(),
            writers,
            todo,
            at,
            progress.clone(),
            &self.shutdown,
        );
        Ok(Some(Copying {
            task,
            streams_beside,
            progress,
            reporter_stop,
            reporter,
        }))
    }

    /// The copy task ended; true when it finished a table.
    async fn end_copy(&mut self, done: Copying) -> bool {
        let _ = done.task.handle.await;
        done.reporter_stop.cancel();
        let _ = done.reporter.await;
        let finished: Vec<_> = done
            .progress
            .snapshot()
            .into_iter()
            .filter(|p| p.finished)
            .collect();
        !finished.is_empty()
    }

    async fn on_copy_event(
        &mut self,
        ev: CopyEvent,
        copy: &mut Option<Copying>,
    ) -> Result<(), PipelineError> {
        match ev {
            CopyEvent::Planned { table, units } => {
                self.update_progress(&table, |p| {
                    p.units = units
                        .iter()
                        .map(|u| PlannedUnit {
                            id: u.id.clone(),
                            estimated_rows: u.estimated_rows,
                        })
                        .collect();
                });
                self.save()?;
            }
            CopyEvent::UnitDone { table, unit, rows } => {
                if !self.state.writes(&table) {
                    return Ok(());
                }
                let complete = self.update_progress(&table, |p| {
                    p.units_done.insert(unit.clone());
                    p.rows += rows;
                });
                if let Some(c) = copy.as_ref() {
                    c.progress.unit_done(&table);
                }
                if complete {
                    self.finish_table_copy(&table, copy).await?;
                }
                self.save()?;
            }
            CopyEvent::TableStopped { table, reason } => {
                self.fail_table(&table, reason);
                self.save()?;
            }
            CopyEvent::Failed(e) => {
                if let Some(c) = copy.as_ref() {
                    c.task.stop.cancel();
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Changes a table's copy progress; returns whether every unit is done.
    fn update_progress(
        &mut self,
        table: &TableName,
        f: impl FnOnce(&mut SnapshotProgress),
    ) -> bool {
        let mut lifecycle = self.state.lifecycle(table);
        let complete = match &mut lifecycle {
            Lifecycle::Snapshotting { progress } | Lifecycle::Resyncing { progress } => {
                f(progress);
                progress.complete()
            }
            _ => return false,
        };
        self.state.set_lifecycle(table, lifecycle);
        complete
    }

    /// Every unit of a table is durable: rows the copy did not find go, and
    /// the table streams (from the held position, once the copy ends).
    async fn finish_table_copy(
        &mut self,
        table: &TableName,
        copy: &Option<Copying>,
    ) -> Result<(), PipelineError> {
        let at = self.state.position.clone().expect("set at start");
        let version = self.source.copier().version(&at);
        let mut backoff = Backoff::default();
        while let Err(e) = self.sink.finish_copy(table, version).await {
            match e.class() {
                ErrorClass::Table(t) => {
                    self.fail_table(&t, e.to_string());
                    return Ok(());
                }
                _ => {
                    backoff
                        .wait_or_fail(e, &self.shutdown, "removing rows the copy did not find")
                        .await?
                }
            }
        }
        for (t, reason) in self.sink.take_failed() {
            self.fail_table(&t, reason);
        }
        if !self.state.writes(table) {
            return Ok(());
        }
        let rows = match self.state.lifecycle(table) {
            Lifecycle::Snapshotting { progress } | Lifecycle::Resyncing { progress } => {
                progress.rows
            }
            _ => 0,
        };
        self.state.set_lifecycle(table, Lifecycle::Streaming);
        if let Some(c) = copy {
            c.progress.finish(table);
            if let Some(p) = c
                .progress
                .snapshot()
                .into_iter()
                .find(|p| &p.table == table)
            {
                tracing::info!(
                    table = %table,
                    rows,
                    seconds = format!("{:.1}", p.elapsed.as_secs_f64()),
                    rows_per_sec = format!("{:.0}", p.rate()),
                    "copy done"
                );
            }
        }
        Ok(())
    }

    /// The source lost the saved position (an invalidated slot) and the
    /// config says to recover: any copy stops, the source starts over with
    /// a new position, and every table is copied again from there.
    async fn start_over(
        &mut self,
        copy: &mut Option<Copying>,
        lost: SourceError,
    ) -> Result<(), PipelineError> {
        tracing::error!(error = %lost, "the saved position is lost upstream: starting over with a new one and copying every table again (on_slot_lost = \"resync\")");
        if let Some(mut c) = copy.take() {
            c.task.stop.cancel();
            c.task.events.close();
            self.end_copy(c).await;
        }
        let mut backoff = Backoff::default();
        let prepared = loop {
            match self.source.recreate().await {
                Ok(p) => break p,
                Err(e) => {
                    backoff
                        .wait_or_fail(
                            e,
                            &self.shutdown,
                            "starting over after the position was lost",
                        )
                        .await?
                }
            }
        };
        self.state.identity = prepared.identity;
        self.state.position = Some(prepared.start);
        super::recopy_all(&mut self.state, &self.opts.tables);
        self.save()
    }

    /// Marks tables for a new copy; the running loop starts it.
    pub(super) fn request_resync(&mut self, tables: &[TableName]) -> Result<(), PipelineError> {
        for t in tables {
            if !self.opts.tables.contains(t) {
                tracing::warn!(table = %t, "resync requested for a table that is not configured; ignored");
                continue;
            }
            match self.state.lifecycle(t) {
                l if l.needs_copy() => {
                    tracing::info!(table = %t, "resync requested for a table already being copied");
                }
                _ => {
                    tracing::info!(table = %t, "resync: the table is copied again while the others keep streaming");
                    self.state.set_lifecycle(
                        t,
                        Lifecycle::Resyncing {
                            progress: SnapshotProgress::default(),
                        },
                    );
                }
            }
        }
        self.save()
    }
}

fn names(tables: &[TableName]) -> String {
    tables
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
