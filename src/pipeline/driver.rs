//! The pipeline's loop: one stream session and at most one copy at a time,
//! both running while the loop applies what they produce and saves the
//! state. The only place that decides what runs:
//!
//! - tables that need copying (pending, snapshotting, resyncing) are copied
//!   by a copy task, at the saved position, which stays held (not advanced,
//!   not acknowledged) until the copy is done; a table's new copy waits for
//!   a position other than its last copy's (see `copy_waits`);
//! - the other tables stream meanwhile; when a copy finishes, the session
//!   restarts from the held position with the copied tables in it, so they
//!   get every change after their copy's version;
//! - with a new slot every table is copied first at the slot's exported
//!   snapshot, and only then does streaming start.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::commit::StreamTask;
use super::copy::{self, CopyEvent, CopyTask, TableCopy};
use super::progress::{spawn_reporter, CopyProgress};
use super::retry::Backoff;
use super::{Control, MergeLimit, Pipeline, PipelineError};
use crate::config::TableName;
use crate::core::{Classify, ErrorClass};
use crate::metrics as m;
use crate::sink::Sink;
use crate::source::{Copier, SnapshotUnit, Source, SourceError};
use crate::state::{Lifecycle, PlannedUnit, SnapshotProgress, StateStore, TableState};

/// How often a copy that waits for the position to move on writes a mark
/// upstream to move it.
const MARK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

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
/// into it, while its rows and Arrow bytes stay within `limit`. The last one
/// taken may pass the limit by its own size: it was already made, and
/// waiting would not make it smaller.
fn merge_queued<P>(
    flush: &mut crate::core::Flush<P>,
    queue: &mut mpsc::Receiver<crate::core::Flush<P>>,
    limit: MergeLimit,
) {
    let mut merged = 0;
    while flush.rows() < limit.rows && flush.arrow_bytes() < limit.bytes {
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
        // Tables whose copy waits for the position to move on; when a mark
        // was last written upstream to move it.
        let mut waiting: Vec<TableName> = Vec::new();
        let mut marked: Option<tokio::time::Instant> = None;
        loop {
            if stopping {
                if stream.is_none() && copy.is_none() {
                    return Ok(());
                }
            } else if self.opts.copy_only {
                if copy.is_none() {
                    copy = self.start_copy(&mut waiting)?;
                }
                if copy.is_none() {
                    return Ok(());
                }
            } else {
                if copy.is_none() {
                    copy = self.start_copy(&mut waiting)?;
                    if waiting.is_empty() {
                        marked = None;
                    } else if marked.is_none_or(|t| t.elapsed() >= MARK_INTERVAL) {
                        marked = Some(tokio::time::Instant::now());
                        tracing::info!(tables = %names(&waiting), "the table's last copy wrote at this same position: its new copy waits until the stream moves the position on (so rows that copy wrote and the source no longer has can be found and removed)");
                        self.mark_position();
                    }
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
            let held = copy.is_some() || replay || self.copy_started();
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
                            if let Some(s) = &mut stream {
                                // Restart from the held position with the
                                // copied tables. What the session sent while
                                // held is never acknowledged: it must not
                                // wait for that before it ends.
                                replay = true;
                                s.stop.cancel();
                                s.acks = None;
                            }
                        }
                        // Only the first copy reads at the new slot's
                        // snapshot: a later one (a table stopped meanwhile,
                        // then resynced) reads live rows, as a copy resumed
                        // after a restart does.
                        self.source.release_snapshot();
                    }
                },
                f = next_flush(&mut stream) => match f {
                    Some(mut flush) => {
                        if let Some(s) = &mut stream {
                            merge_queued(&mut flush, &mut s.flushes, self.opts.merge);
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

    /// Starts copying every table that needs it and may be copied at the
    /// saved position; `None` when none does. `waiting` gets the tables that
    /// must wait for the position to move on (see [`Self::copy_waits`]).
    fn start_copy(
        &mut self,
        waiting: &mut Vec<TableName>,
    ) -> Result<Option<Copying>, PipelineError> {
        waiting.clear();
        let needs_copy = |t: &TableName| {
            self.state
                .table(t)
                .is_none_or(|s| s.lifecycle.writes() && s.lifecycle.needs_copy())
        };
        if !self.opts.tables.iter().any(needs_copy) {
            return Ok(None);
        }
        let at = self
            .state
            .position
            .clone()
            .expect("the position is set at start");
        let version = self.source.copier().version(&at);
        let mut todo = Vec::new();
        let mut changed = false;
        for t in self.opts.tables.clone() {
            let lifecycle = self.state.lifecycle(&t);
            if !lifecycle.writes() || !lifecycle.needs_copy() {
                continue;
            }
            let (resync, mut progress) = match lifecycle {
                Lifecycle::Resyncing { progress } => (true, progress),
                Lifecycle::Snapshotting { progress } => (false, progress),
                _ => (false, SnapshotProgress::default()),
            };
            let wrap = |progress| {
                if resync {
                    Lifecycle::Resyncing { progress }
                } else {
                    Lifecycle::Snapshotting { progress }
                }
            };
            let begun = progress.version.is_some() || !progress.units_done.is_empty();
            if begun && progress.version != Some(version) {
                // Its done units' rows are at another version (or at an
                // unknown one: saved before copies recorded theirs, when a
                // shutdown could still move the position past it); a
                // finish at this version would count them stale.
                tracing::warn!(table = %t, was = ?progress.version, now = version, "the table's unfinished copy was at another position: copying it again from its start");
                progress = SnapshotProgress::default();
                self.state.set_lifecycle(&t, wrap(progress.clone()));
                changed = true;
            }
            if progress.version.is_none() {
                if self.copy_waits(&t, version) {
                    waiting.push(t);
                    continue;
                }
                progress.version = Some(version);
                let entry = self
                    .state
                    .tables
                    .entry(t.to_string())
                    .or_insert_with(|| TableState::new(Lifecycle::Pending));
                entry.copied_at = Some(version);
                changed = true;
            }
            if resync {
                self.sink.reset_table(&t);
            }
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
                done: progress.units_done.clone(),
            });
            self.state.set_lifecycle(&t, wrap(progress));
        }
        if changed {
            // The versions are durable before any row is written at them.
            self.save()?;
        }
        if todo.is_empty() {
            return Ok(None);
        }
        let streams_beside = !self.streaming_tables().is_empty();
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

    /// Writes a mark upstream so the stream's position moves on soon, in
    /// a task of its own (best effort: without it the copy waits for the
    /// next write there).
    fn mark_position(&self) {
        let mark = self.source.mark_position();
        tokio::spawn(
            async move {
                match tokio::time::timeout(MARK_INTERVAL, mark).await {
                    Ok(Ok(())) => tracing::debug!("wrote a position mark upstream"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not write a position mark upstream: a copy waiting for the position to move on waits for the next write there"),
                    Err(_) => tracing::warn!("writing a position mark upstream timed out: a copy waiting for the position to move on waits for the next write there"),
                }
            }
            .instrument(tracing::Span::current()),
        );
    }

    /// Whether a new copy of `t` must wait for the saved position to move
    /// on before it writes at `version`.
    ///
    /// A resumed copy keeps its version: the position is held from its
    /// start to its end (see [`Self::copy_started`]). A new copy writes at
    /// the saved position's version, which must differ from the version of
    /// the table's last copy: the stale rows `finish_copy` removes are those
    /// below the new version that the copy did not write, so rows an earlier
    /// copy wrote at the same version would stay although the source no
    /// longer has them. That happens when nothing moved the position since
    /// the earlier copy (no change streamed, no idle advance). A last copy
    /// *above* it means a server whose positions went back (restored from a
    /// backup): waiting would not help, and rows from that history are
    /// caught before the copy (`copy.rs`, `foreign_rows`).
    fn copy_waits(&self, t: &TableName, version: u64) -> bool {
        let copied_at = self.state.table(t).and_then(|s| s.copied_at);
        // A one-shot copy cannot move its position (nothing streams); a
        // version of 0 is a source whose copies carry no position.
        let waits = !self.opts.copy_only && version > 0 && copied_at == Some(version);
        if waits {
            tracing::debug!(table = %t, version, "copy waits for a later position");
        }
        waits
    }

    /// Whether a table's copy has begun writing and is not finished: the
    /// saved position then stays where its rows are consistent, even
    /// between copy tasks (a shutdown ends the task, and the stream's last
    /// flushes must not move the position past the copy's version).
    pub(super) fn copy_started(&self) -> bool {
        self.opts.tables.iter().any(|t| {
            self.state.table(t).is_some_and(|s| match &s.lifecycle {
                Lifecycle::Snapshotting { progress } | Lifecycle::Resyncing { progress } => {
                    progress.version.is_some() || !progress.units_done.is_empty()
                }
                _ => false,
            })
        })
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
        let recorded = match self.state.lifecycle(table) {
            Lifecycle::Snapshotting { progress } | Lifecycle::Resyncing { progress } => {
                progress.version
            }
            _ => None,
        };
        let version = recorded.unwrap_or_else(|| self.source.copier().version(&at));
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
