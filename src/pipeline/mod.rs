//! The pipeline: any [`Source`] into any [`Sink`], its progress in any
//! [`StateStore`]. It knows no concrete source, sink or store.
//!
//! ```text
//!            snapshot units (copy.rs)          stream (commit.rs)
//!  Source ──────────────┐            ┌──────── ChangeStream ◄── acks (watch)
//!                       v            v              │                ^
//!                 TableBatch    Flush<P> (bounded channel)           │
//!                       │            │                               │
//!                       └──> Sink::apply ──> StateStore::save ──> ack P
//!                             (durable)      (flushed, + lifecycle)
//! ```
//!
//! Invariants:
//! - **Commit order.** For every flush: the sink applies it and returns
//!   only once durable -> the state (position, table lifecycles) is saved
//!   and flushed -> only then is the position acknowledged to the source,
//!   which may confirm it upstream. A crash anywhere replays from the last
//!   saved position; sinks absorb the replay.
//! - **Table lifecycle.** Each table is pending -> snapshotting -> streaming,
//!   or failed with a reason. A failed table is never written again (its
//!   items are dropped before the sink, also after a restart) until a
//!   resync; the other tables go on.
//! - **Errors.** Every error is classified once ([`crate::core::ErrorClass`]):
//!   transient ones are retried with backoff ([`retry`]), table-scoped ones
//!   stop that table, fatal ones stop the pipeline with their message.

mod commit;
mod copy;
mod driver;
mod error;
mod observe;
pub mod progress;
pub mod retry;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::TableName;
use crate::core::change::retain_tables;
use crate::core::{Classify, ErrorClass, SinkItem};
use crate::metrics as m;
use crate::sink::{Sink, SinkError};
use crate::source::Source;
use crate::state::{now_micros, sidecar, Lifecycle, PipelineState, StateStore};

pub use error::PipelineError;
pub use progress::{LogView, ProgressView, TableProgress};
pub use retry::{retry, Backoff};

/// Flushes in flight between source and sink: enough to overlap decoding
/// with inserting, small enough to bound memory.
pub const FLUSH_CHANNEL_CAPACITY: usize = 2;
/// Snapshot batches decoded ahead of the one being inserted.
pub const SNAPSHOT_BATCHES_AHEAD: usize = 2;
/// Env hook for crash tests: abort the process right after the sink wrote
/// the N-th flush and before its state is saved.
pub const CRASH_AFTER_SINK_WRITE_ENV: &str = "SLUICE_CRASH_AFTER_SINK_WRITE";

/// Requests to a running pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Control {
    /// Copy these tables again (their rows deleted in the source meanwhile
    /// disappear), then stream them; the other tables keep streaming.
    Resync(Vec<TableName>),
}

/// What the pipeline needs besides its three components.
#[derive(Clone)]
pub struct PipelineOptions {
    /// For logs.
    pub name: String,
    /// The configured tables, in order.
    pub tables: Vec<TableName>,
    /// Copy each table's existing rows before streaming its changes.
    pub initial_snapshot: bool,
    /// Where a copy of the state goes after each save (for `sluice status`
    /// while `run` holds the store).
    pub status_file: Option<PathBuf>,
    /// Abort after this many flushes were applied, before saving (crash tests).
    pub crash_after_sink_write: Option<u64>,
    /// Units a copy reads at once, each with its own sink writer.
    pub copy_readers: usize,
    /// Copy the tables and stop, without a stream (`sluice snapshot`).
    pub copy_only: bool,
    /// Shows copy progress.
    pub progress: Arc<dyn ProgressView>,
    /// When the source loses the saved position (an invalidated slot):
    /// start over and copy every table again, instead of stopping.
    pub resync_on_position_lost: bool,
    /// Flushes that queued up while the sink was busy are applied as one
    /// while they stay within this: fewer, larger writes, and no flush
    /// waits behind a queue of small ones.
    pub merge: MergeLimit,
}

/// How large a merge of queued flushes may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeLimit {
    /// The batch's `max_rows`.
    pub rows: usize,
    /// Arrow bytes: the batch's `max_bytes`, at most [`MERGE_MAX_BYTES`].
    pub bytes: usize,
}

/// A merged flush is joined into one batch per table, so it is briefly held
/// twice, beside the flushes still queued. Past a few MiB a larger insert
/// saves ClickHouse little, while the peak memory of a backlog drain would
/// depend on how far the sink happened to fall behind.
pub const MERGE_MAX_BYTES: usize = 8 << 20;

impl MergeLimit {
    pub fn new(max_rows: usize, max_bytes: u64) -> Self {
        MergeLimit {
            rows: max_rows,
            bytes: usize::try_from(max_bytes)
                .unwrap_or(usize::MAX)
                .min(MERGE_MAX_BYTES),
        }
    }
}

impl std::fmt::Debug for PipelineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineOptions")
            .field("name", &self.name)
            .field("tables", &self.tables)
            .field("initial_snapshot", &self.initial_snapshot)
            .field("copy_readers", &self.copy_readers)
            .finish_non_exhaustive()
    }
}

/// Runs the pipeline until `shutdown` is cancelled or a fatal error.
/// `control` carries requests while it runs (resyncs).
pub async fn run_pipeline<S, K, St>(
    source: S,
    sink: K,
    store: St,
    opts: PipelineOptions,
    control: mpsc::Receiver<Control>,
    shutdown: CancellationToken,
) -> Result<(), PipelineError>
where
    S: Source,
    K: Sink + 'static,
    St: StateStore,
{
    let span = tracing::info_span!("pipeline", name = %opts.name);
    async move {
        let Some(mut p) = Pipeline::start(source, sink, store, opts, shutdown).await? else {
            return Ok(());
        };
        p.drive(control).await
    }
    .instrument(span)
    .await
}

pub(crate) struct Pipeline<S: Source, K, St> {
    source: S,
    sink: K,
    store: St,
    opts: PipelineOptions,
    state: PipelineState<S::Position>,
    shutdown: CancellationToken,
    /// Flushes applied in this process (for the crash failpoint).
    flushes: u64,
}

impl<S, K, St> Pipeline<S, K, St>
where
    S: Source,
    K: Sink + 'static,
    St: StateStore,
{
    /// Loads the state, prepares the source from it, settles every table's
    /// lifecycle and opens the sink. `None` when shutdown came first.
    async fn start(
        mut source: S,
        sink: K,
        store: St,
        opts: PipelineOptions,
        shutdown: CancellationToken,
    ) -> Result<Option<Self>, PipelineError> {
        let saved: Option<PipelineState<S::Position>> = store.load()?;
        let resume = saved
            .as_ref()
            .and_then(|s| s.position.as_ref().map(|p| (p, &s.identity)));
        let mut backoff = Backoff::default();
        let mut recovering = false;
        let prepared = loop {
            let attempt = if recovering {
                source.recreate().await
            } else if opts.copy_only {
                match resume {
                    // A resumed copy keeps its version.
                    Some((p, identity)) => Ok(crate::source::Prepared {
                        identity: identity.clone(),
                        start: p.clone(),
                    }),
                    None => source.prepare_copy_only().await,
                }
            } else {
                source.prepare(resume).await
            };
            match attempt {
                Ok(p) => break p,
                Err(e)
                    if !recovering
                        && e.position_lost()
                        && opts.resync_on_position_lost
                        && !opts.copy_only =>
                {
                    // From now on only starting over helps (the old slot
                    // may already be gone).
                    recovering = true;
                    tracing::error!(error = %e, "the saved position is lost upstream: starting over with a new one and copying every table again (on_slot_lost = \"resync\")");
                }
                Err(e) => {
                    let what = if recovering {
                        "starting over after the position was lost"
                    } else {
                        "preparing the source"
                    };
                    backoff.wait_or_fail(e, &shutdown, what).await?
                }
            }
        };
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        let mut state =
            saved.unwrap_or_else(|| PipelineState::new(prepared.identity.clone(), None));
        state.identity = prepared.identity;
        state.position = Some(prepared.start);
        for t in &opts.tables {
            if state.table(t).is_none() {
                let l = if opts.initial_snapshot {
                    Lifecycle::Pending
                } else {
                    Lifecycle::Streaming
                };
                state.set_lifecycle(t, l);
            }
            if let Some(Lifecycle::Failed { reason, .. }) = state.table(t).map(|s| &s.lifecycle) {
                tracing::warn!(table = %t, reason = %reason, "table stays stopped (failed earlier): resync it to replicate it again");
            }
        }
        if recovering {
            recopy_all(&mut state, &opts.tables);
        }
        tracing::info!(position = %state.position.as_ref().expect("set above"), "state loaded");
        let mut p = Pipeline {
            source,
            sink,
            store,
            opts,
            state,
            shutdown,
            flushes: 0,
        };
        // The start position is durable before anything is copied: a new
        // slot's consistent point is where the copy's rows are consistent.
        p.save()?;
        let mut backoff = Backoff::default();
        while let Err(e) = p.sink.open().await {
            backoff
                .wait_or_fail(e, &p.shutdown, "connecting to the sink")
                .await?;
        }
        Ok(Some(p))
    }

    /// Saves the state durably (and the status copy).
    fn save(&mut self) -> Result<(), PipelineError> {
        self.state.saved_at = now_micros();
        let (store, state) = (&mut self.store, &self.state);
        blocking(|| store.save(state))?;
        if let Some(path) = &self.opts.status_file {
            sidecar::write(path, &self.state);
        }
        observe::table_states(&self.state, &self.opts.tables);
        Ok(())
    }

    /// Stops a table: nothing more is written for it until a resync.
    fn fail_table(&mut self, table: &TableName, reason: String) {
        let since = self.state.position.as_ref().map(|p| p.to_string());
        tracing::error!(table = %table, reason = %reason, "table stopped: nothing more is written for it until it is resynced; the other tables go on");
        metrics::counter!(m::TABLE_FAILURES).increment(1);
        metrics::counter!(m::ERRORS, "class" => "table").increment(1);
        self.state
            .set_lifecycle(table, Lifecycle::Failed { reason, since });
    }

    /// Applies items durably (see [`apply_durably`]); stops the tables the
    /// sink could not write. Returns whether any table was stopped.
    async fn apply(&mut self, items: &mut Vec<SinkItem>) -> Result<bool, PipelineError> {
        let stopped = apply_durably(&mut self.sink, items, &self.shutdown).await?;
        let any = !stopped.is_empty();
        for (t, reason) in stopped {
            self.fail_table(&t, reason);
        }
        Ok(any)
    }
}

/// After the position was lost: every table is copied again from the new
/// one (rows deleted meanwhile disappear, as in a resync).
fn recopy_all<P: crate::core::Position>(state: &mut PipelineState<P>, tables: &[TableName]) {
    for t in tables {
        state.set_lifecycle(
            t,
            Lifecycle::Resyncing {
                progress: crate::state::SnapshotProgress::default(),
            },
        );
    }
    metrics::counter!(m::SLOT_RECOVERIES).increment(1);
    tracing::warn!(
        tables = tables.len(),
        "recovered from a lost position: every table is copied again"
    );
}

/// Applies items so that they are durable: transient sink errors are
/// retried with backoff (until `shutdown`); a table the sink cannot write
/// is dropped from the items and the rest applied again (a replay, which
/// sinks absorb). Returns the tables the sink stopped, with the reason.
pub(crate) async fn apply_durably<K: Sink>(
    sink: &mut K,
    items: &mut Vec<SinkItem>,
    shutdown: &CancellationToken,
) -> Result<Vec<(TableName, String)>, SinkError> {
    let mut backoff = Backoff::default();
    let mut stopped = Vec::new();
    loop {
        let result = sink.apply(items).await;
        crate::live::live().set_sink_failing(result.as_ref().is_err_and(|e| e.is_transient()));
        match result {
            Ok(()) => break,
            Err(e) => match e.class() {
                ErrorClass::Table(t) => {
                    retain_tables(items, |x| x != &t);
                    stopped.push((t, e.to_string()));
                }
                _ => {
                    backoff
                        .wait_or_fail(e, shutdown, "writing to the sink")
                        .await?
                }
            },
        }
    }
    stopped.extend(sink.take_failed());
    Ok(stopped)
}

/// Runs blocking I/O (a state save) without stalling the runtime's other
/// tasks where the runtime allows it.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
