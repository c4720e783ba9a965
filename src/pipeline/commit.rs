//! Streaming: one session of the source at a time, its flushes applied,
//! saved and acknowledged in that order. A transient failure starts a new
//! session from the last saved position; a table-scoped one stops that
//! table and starts a new session without it.

use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::retry::Backoff;
use super::{Pipeline, PipelineError, CRASH_AFTER_SINK_WRITE_ENV, FLUSH_CHANNEL_CAPACITY};
use crate::core::Classify;
use crate::core::{ErrorClass, Flush, SinkItem};
use crate::metrics as m;
use crate::sink::Sink;
use crate::source::{ChangeStream, Source, SourceError};
use crate::state::StateStore;

impl<S, K, St> Pipeline<S, K, St>
where
    S: Source,
    K: Sink,
    St: StateStore,
{
    /// Streams until shutdown or a fatal error.
    pub(super) async fn stream(&mut self) -> Result<(), PipelineError> {
        let mut backoff = Backoff::default();
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let from = self
                .state
                .position
                .clone()
                .expect("the position is set at start");
            let tables = self.writing_tables();
            if tables.is_empty() {
                tracing::warn!("every configured table is stopped (failed): streaming only keeps the source position moving; resync the tables");
            }
            let stream = match self.source.start_stream(&from, &tables).await {
                Ok(s) => s,
                Err(e) => {
                    backoff
                        .wait_or_fail(e, &self.shutdown, "starting the stream")
                        .await?;
                    continue;
                }
            };
            let (tx, rx) = mpsc::channel(FLUSH_CHANNEL_CAPACITY);
            let (ack_tx, ack_rx) = watch::channel(from);
            let stop = self.shutdown.child_token();
            let task = tokio::spawn(
                stream
                    .run(tx, ack_rx, stop.clone())
                    .instrument(tracing::Span::current()),
            );
            let committed = self.commit_flushes(rx, &ack_tx, &mut backoff).await;
            if committed.is_err() {
                stop.cancel();
            }
            let streamed = task.await.unwrap_or_else(|e| {
                Err(SourceError::NotReady(format!(
                    "the source task failed: {e}"
                )))
            });
            committed?;
            match streamed {
                Ok(()) => return Ok(()),
                Err(e) => match e.class() {
                    ErrorClass::Table(t) => {
                        // Restart without it, from the last saved position.
                        self.fail_table(&t, e.to_string());
                        self.save()?;
                    }
                    ErrorClass::Transient if !self.shutdown.is_cancelled() => {
                        metrics::counter!(m::SOURCE_RECONNECTS).increment(1);
                        backoff
                            .wait_or_fail(
                                e,
                                &self.shutdown,
                                "replication (reconnecting from the last saved position)",
                            )
                            .await?;
                    }
                    _ if self.shutdown.is_cancelled() => {
                        tracing::debug!(error = %e, "source ended during shutdown");
                        return Ok(());
                    }
                    _ => return Err(e.into()),
                },
            }
        }
    }

    /// The commit loop of one session: apply -> save -> acknowledge, for
    /// every flush until the source closes its channel.
    async fn commit_flushes(
        &mut self,
        mut rx: mpsc::Receiver<Flush<S::Position>>,
        acks: &watch::Sender<S::Position>,
        backoff: &mut Backoff,
    ) -> Result<(), PipelineError> {
        let crash_after = self.opts.crash_after_sink_write;
        while let Some(mut flush) = rx.recv().await {
            let started = Instant::now();
            let state = &self.state;
            let skipped = flush.retain_tables(|t| state.writes(t));
            if skipped > 0 {
                tracing::debug!(rows = skipped, "skipped rows of stopped tables");
            }
            let mut changed = self.apply(&mut flush.items).await?;
            self.flushes += 1;
            if crash_after == Some(self.flushes) {
                tracing::error!(
                    "{CRASH_AFTER_SINK_WRITE_ENV} reached: aborting before the state is saved"
                );
                std::process::abort();
            }
            self.remember_schemas(&flush.items);
            let advanced = match (&flush.position, &self.state.position) {
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
                let _ = acks.send(p);
            } else if flush.rows() > 0 {
                tracing::debug!(
                    rows = flush.rows(),
                    "flush applied (no transaction completed)"
                );
            }
            metrics::counter!(m::ROWS_WRITTEN).increment(flush.rows() as u64);
            metrics::counter!(m::FLUSHES).increment(1);
            metrics::histogram!(m::FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
            backoff.reset();
        }
        Ok(())
    }

    /// Records each table's latest schema in the state (saved with it).
    fn remember_schemas(&mut self, items: &[SinkItem]) {
        for item in items {
            if let SinkItem::Rows(b) = item {
                if let Some(t) = self.state.tables.get_mut(&b.shape.table.to_string()) {
                    let columns = b.shape.describe_columns();
                    if t.columns != columns {
                        t.columns = columns;
                    }
                }
            }
        }
    }
}
