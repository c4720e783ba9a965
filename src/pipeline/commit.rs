//! Streaming: one session of the source at a time; each flush applied,
//! then saved, then acknowledged, in that order. While a copy runs the saved
//! position is held where the copy's rows are consistent, and when it ends
//! the stream restarts from there so the copied tables get every change
//! after it (the others get a harmless replay).

use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Pipeline, PipelineError, CRASH_AFTER_SINK_WRITE_ENV, FLUSH_CHANNEL_CAPACITY};
use crate::config::TableName;
use crate::core::{Flush, SinkItem};
use crate::metrics as m;
use crate::sink::Sink;
use crate::source::{ChangeStream, Source, SourceError};
use crate::state::StateStore;

/// A running stream session.
pub(crate) struct StreamTask<P> {
    pub flushes: mpsc::Receiver<Flush<P>>,
    /// `None` once dropped at shutdown, so the session stops waiting for
    /// acknowledgements that will not come (a held position).
    pub acks: Option<watch::Sender<P>>,
    pub stop: CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<(), SourceError>>,
    /// The tables the session streams.
    pub tables: Vec<TableName>,
}

impl<S, K, St> Pipeline<S, K, St>
where
    S: Source,
    K: Sink + 'static,
    St: StateStore,
{
    /// Tables whose changes the stream writes: not stopped, not waiting for
    /// (or in) a copy.
    pub(super) fn streaming_tables(&self) -> Vec<TableName> {
        self.opts
            .tables
            .iter()
            .filter(|t| {
                let l = self.state.lifecycle(t);
                l.writes() && !l.needs_copy()
            })
            .cloned()
            .collect()
    }

    /// Starts a session from the saved position for `tables`.
    pub(super) async fn start_stream(
        &mut self,
        tables: Vec<TableName>,
    ) -> Result<StreamTask<S::Position>, SourceError> {
        let from = self
            .state
            .position
            .clone()
            .expect("the position is set at start");
        let stream = self.source.start_stream(&from, &tables).await?;
        let (tx, rx) = mpsc::channel(FLUSH_CHANNEL_CAPACITY);
        let (ack_tx, ack_rx) = watch::channel(from);
        let stop = self.shutdown.child_token();
        let handle = tokio::spawn(
            stream
                .run(tx, ack_rx, stop.clone())
                .instrument(tracing::Span::current()),
        );
        Ok(StreamTask {
            flushes: rx,
            acks: Some(ack_tx),
            stop,
            handle,
            tables,
        })
    }

    /// Applies one flush, saves what changed, and acknowledges the new
    /// position unless it is `held`.
    pub(super) async fn commit(
        &mut self,
        mut flush: Flush<S::Position>,
        acks: Option<&watch::Sender<S::Position>>,
        held: bool,
    ) -> Result<(), PipelineError> {
        let started = Instant::now();
        let state = &self.state;
        let skipped = flush.retain_tables(|t| {
            let l = state.lifecycle(t);
            l.writes() && !l.needs_copy()
        });
        if skipped > 0 {
            tracing::debug!(
                rows = skipped,
                "skipped rows of tables stopped or being copied"
            );
        }
        let writing = Instant::now();
        let mut changed = self.apply(&mut flush.items).await?;
        super::observe::flush_written(writing.elapsed(), flush.source_time);
        super::observe::applied(&flush.items);
        self.flushes += 1;
        if self.opts.crash_after_sink_write == Some(self.flushes) {
            tracing::error!(
                "{CRASH_AFTER_SINK_WRITE_ENV} reached: aborting before the state is saved"
            );
            std::process::abort();
        }
        changed |= self.remember_schemas(&flush.items);
        let advanced = !held
            && match (&flush.position, &self.state.position) {
                (Some(new), Some(cur)) => new > cur,
                (Some(_), None) => true,
                _ => false,
            };
        if advanced {
            self.state.position = flush.position.clone();
            changed = true;
        }
        if changed {
            self.save()?;
        }
        if advanced {
            let p = self.state.position.clone().expect("just set");
            tracing::debug!(position = %p, rows = flush.rows(), "state saved");
            if let Some(acks) = acks {
                let _ = acks.send(p);
            }
        } else if flush.rows() > 0 {
            tracing::debug!(
                rows = flush.rows(),
                held,
                "flush applied (position not advanced)"
            );
        }
        metrics::counter!(m::ROWS_WRITTEN).increment(flush.rows() as u64);
        metrics::counter!(m::FLUSHES).increment(1);
        metrics::histogram!(m::FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Records each table's latest schema in the state; true when one changed.
    fn remember_schemas(&mut self, items: &[SinkItem]) -> bool {
        let mut changed = false;
        for item in items {
            if let SinkItem::Rows(b) = item {
                if let Some(t) = self.state.tables.get_mut(&b.shape.table.to_string()) {
                    let columns = b.shape.describe_columns();
                    if t.columns != columns {
                        t.columns = columns;
                        changed = true;
                    }
                }
            }
        }
        changed
    }
}
