//! The pipeline: source -> micro-batches -> sink -> checkpoint -> confirm.
//!
//! Commit protocol for every flush: the sink applies it and ClickHouse
//! acknowledges (durable) -> the checkpoint is written and flushed -> the
//! new position is handed to the source, which confirms it to PostgreSQL.
//! A crash anywhere replays from the last checkpoint; upserts absorb the
//! repeats.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::change::Flush;
use crate::checkpoint::{
    write_sidecar, Checkpoint, CheckpointError, CheckpointStore, SledStore, TableState,
};
use crate::config::{Config, SinkConfig, SourceConfig};
use crate::lsn::Lsn;
use crate::metrics as m;
use crate::sink::clickhouse::ClickHouseSink;
use crate::sink::SinkError;
use crate::source::postgres::catalog;
use crate::source::postgres::replication::ReplicationConnection;
use crate::source::postgres::stream::{Session, SessionOptions};
use crate::source::postgres::SourceError;

/// Flushes in flight between source and sink: enough to overlap decoding
/// with inserting, small enough to bound memory.
pub const FLUSH_CHANNEL_CAPACITY: usize = 2;
/// Snapshot batches decoded ahead of the one being inserted.
pub const SNAPSHOT_BATCHES_AHEAD: usize = 2;
pub const RETRY_INITIAL: Duration = Duration::from_millis(500);
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Env hook for crash tests: abort the process right after the sink wrote
/// the N-th flush and before its checkpoint is saved.
pub const CRASH_AFTER_SINK_WRITE_ENV: &str = "SLUICE_CRASH_AFTER_SINK_WRITE";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Mismatch(String),
    #[error("{0}")]
    Unsupported(String),
}

impl PipelineError {
    pub fn is_retryable(&self) -> bool {
        match self {
            PipelineError::Source(e) => e.is_retryable(),
            PipelineError::Sink(e) => e.is_retryable(),
            _ => false,
        }
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Runs the pipeline until `shutdown` is cancelled or a fatal error.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), PipelineError> {
    let span = tracing::info_span!("pipeline", name = %config.pipeline.name);
    run_inner(config, shutdown).instrument(span).await
}

async fn run_inner(config: Config, shutdown: CancellationToken) -> Result<(), PipelineError> {
    let SourceConfig::Postgres(pg) = &config.source;
    let SinkConfig::ClickHouse(ch_cfg) = &config.sink else {
        return Err(PipelineError::Unsupported(
            "`sluice run` supports the ClickHouse sink in this version; the Kafka sink is not implemented yet".into(),
        ));
    };
    let mut store = SledStore::open(&config.pipeline.checkpoint_path())?;
    let checkpoint = store.load()?;
    let system_id = with_retry(&shutdown, "connecting to PostgreSQL", || async {
        let mut repl = ReplicationConnection::connect(&pg.conn, &[]).await?;
        let id = repl.identify_system().await?;
        repl.wire.close().await;
        Ok::<_, PipelineError>(id.system_id)
    })
    .await?;
    let resume = verify_checkpoint(pg, checkpoint.as_ref(), &system_id).await?;
    let mut cp = checkpoint.unwrap_or(Checkpoint {
        lsn: resume.unwrap_or(Lsn::ZERO),
        system_id: system_id.clone(),
        slot: pg.slot.clone(),
        saved_at: now_micros(),
        tables: Default::default(),
    });
    tracing::info!(resume = ?resume.map(|l| l.to_string()), "checkpoint loaded");

    let mut sink = with_retry(&shutdown, "connecting to ClickHouse", || async {
        ClickHouseSink::connect(ch_cfg)
            .await
            .map_err(PipelineError::from)
    })
    .await?;

    if pg.initial_snapshot {
        snapshot_tables(&config, pg, &mut cp, &mut store, &mut sink, &shutdown).await?;
    }

    let (ack_tx, _) = watch::channel(cp.lsn);
    let crash_after: Option<u64> = std::env::var(CRASH_AFTER_SINK_WRITE_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let mut flushes = 0u64;
    let mut delay = RETRY_INITIAL;

    // Each round is one replication session; a retryable failure starts a
    // new one from the last durable checkpoint.
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let opts = SessionOptions {
            resume: Some(cp.lsn).filter(|l| *l > Lsn::ZERO),
            spill_dir: config.pipeline.checkpoint_path().with_extension("spill"),
            confirm: true,
            startup: Vec::new(),
        };
        let session = match Session::start(pg, config.batch, opts).await {
            Ok(s) => s,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot start replication; retrying");
                sleep_or_cancel(&shutdown, delay).await;
                delay = (delay * 2).min(RETRY_MAX);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let (tx, mut rx) = mpsc::channel::<Flush>(FLUSH_CHANNEL_CAPACITY);
        let session_stop = shutdown.child_token();
        let source = tokio::spawn(
            session
                .run(tx, ack_tx.subscribe(), session_stop.clone())
                .instrument(tracing::Span::current()),
        );

        // The sink loop runs here: apply, checkpoint, acknowledge.
        let mut sink_error: Option<PipelineError> = None;
        while let Some(flush) = rx.recv().await {
            let started = std::time::Instant::now();
            if let Err(e) = apply_with_retry(&mut sink, &flush, &shutdown).await {
                sink_error = Some(e);
                session_stop.cancel();
                break;
            }
            flushes += 1;
            if crash_after == Some(flushes) {
                tracing::error!(
                    "{CRASH_AFTER_SINK_WRITE_ENV} reached: aborting before the checkpoint"
                );
                std::process::abort();
            }
            remember_schemas(&mut cp, &flush);
            for (table, reason) in sink.failed_tables() {
                let state = cp
                    .tables
                    .entry(table.to_string())
                    .or_insert_with(streaming_state);
                state.status = "failed".into();
                state.reason = Some(reason.clone());
            }
            if let Some(lsn) = flush.checkpoint.filter(|l| *l > cp.lsn) {
                cp.lsn = lsn;
                cp.saved_at = now_micros();
                tokio::task::block_in_place(|| store.save(&cp))?;
                write_sidecar(&config.pipeline.checkpoint_path(), &cp);
                metrics::gauge!(m::CHECKPOINT_LSN).set(lsn.0 as f64);
                let _ = ack_tx.send(lsn);
                tracing::debug!(lsn = %lsn, rows = flush.rows(), "checkpoint saved");
            } else if flush.rows() > 0 {
                tracing::debug!(rows = flush.rows(), "flush applied (no commit completed)");
            }
            metrics::counter!(m::ROWS_WRITTEN).increment(flush.rows() as u64);
            metrics::counter!(m::FLUSHES).increment(1);
            metrics::histogram!(m::FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
            delay = RETRY_INITIAL;
        }
        drop(rx);
        let source_result = source
            .await
            .unwrap_or_else(|e| Err(SourceError::NotReady(format!("source task panicked: {e}"))));
        if let Some(e) = sink_error {
            return Err(e);
        }
        match source_result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && !shutdown.is_cancelled() => {
                tracing::warn!(error = %e, retry_in = ?delay, "replication interrupted; reconnecting from the checkpoint");
                metrics::counter!(m::SOURCE_RECONNECTS).increment(1);
                sleep_or_cancel(&shutdown, delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn streaming_state() -> TableState {
    TableState {
        status: "streaming".into(),
        reason: None,
        columns: Vec::new(),
        snapshot_done: false,
    }
}

/// Copies every configured table whose snapshot is not done yet, before
/// streaming starts. Creates the publication and slot first (so no change
/// made during the copy is missed) and, for a new slot, checkpoints its
/// consistent point: the position streaming resumes from, and the version
/// snapshot rows carry.
async fn snapshot_tables(
    config: &Config,
    pg: &crate::config::PostgresSourceConfig,
    cp: &mut Checkpoint,
    store: &mut SledStore,
    sink: &mut ClickHouseSink,
    shutdown: &CancellationToken,
) -> Result<(), PipelineError> {
    let pending: Vec<_> = pg
        .tables
        .iter()
        .filter(|t| {
            !cp.tables
                .get(&t.to_string())
                .is_some_and(|s| s.snapshot_done)
        })
        .cloned()
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let client = catalog::connect(&pg.conn).await?;
    let mut repl = ReplicationConnection::connect(&pg.conn, &[]).await?;
    let created = crate::source::postgres::stream::prepare(
        pg,
        &client,
        &mut repl,
        crate::source::postgres::replication::SlotSnapshot::NoExport,
    )
    .await?;
    repl.wire.close().await;
    if cp.lsn == Lsn::ZERO {
        cp.lsn = match created {
            Some(slot) => slot.consistent_point,
            None => catalog::slot(&client, &pg.slot)
                .await?
                .and_then(|s| s.confirmed_flush_lsn)
                .unwrap_or(Lsn::ZERO),
        };
        cp.saved_at = now_micros();
        tokio::task::block_in_place(|| store.save(cp))?;
    }
    let version = cp.lsn;
    let options = crate::source::postgres::stream::type_options(pg);
    let mut types = Default::default();
    for table in pending {
        let span = tracing::info_span!("snapshot", table = %table);
        async {
            tracing::info!(version = %version, "snapshot started");
            let started = std::time::Instant::now();
            let mut reader = crate::source::postgres::snapshot::SnapshotReader::start(
                &client,
                &table,
                &mut types,
                &options,
                version,
                config.batch.max_rows,
            )
            .await?;
            // Reading and decoding overlap with inserting: the reader runs
            // ahead by at most SNAPSHOT_BATCHES_AHEAD batches.
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
                if shutdown.is_cancelled() {
                    tracing::info!("snapshot interrupted by shutdown; it restarts on the next run");
                    read.abort();
                    return Ok(());
                }
                let flush = Flush {
                    items: vec![crate::change::SinkItem::Rows(batch)],
                    checkpoint: None,
                };
                apply_with_retry(sink, &flush, shutdown).await?;
                metrics::counter!(m::ROWS_WRITTEN).increment(flush.rows() as u64);
            }
            let rows = read
                .await
                .map_err(|e| SourceError::NotReady(format!("snapshot reader failed: {e}")))??;
            let state = cp
                .tables
                .entry(table.to_string())
                .or_insert_with(streaming_state);
            state.snapshot_done = true;
            cp.saved_at = now_micros();
            tokio::task::block_in_place(|| store.save(cp))?;
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                rows,
                seconds = format!("{secs:.1}"),
                rows_per_sec = format!("{:.0}", rows as f64 / secs.max(1e-9)),
                "snapshot done"
            );
            Ok::<_, PipelineError>(())
        }
        .instrument(span)
        .await?;
        if shutdown.is_cancelled() {
            break;
        }
    }
    Ok(())
}

/// Records each table's latest schema in the checkpoint (saved with it).
fn remember_schemas(cp: &mut Checkpoint, flush: &Flush) {
    for item in &flush.items {
        if let crate::change::SinkItem::Rows(b) = item {
            let columns: Vec<String> = b
                .shape
                .columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.pg_type))
                .collect();
            let state = cp
                .tables
                .entry(b.shape.table.to_string())
                .or_insert_with(streaming_state);
            if state.columns != columns {
                state.columns = columns;
            }
        }
    }
}

/// Checks the checkpoint against the slot; returns where to resume.
async fn verify_checkpoint(
    pg: &crate::config::PostgresSourceConfig,
    cp: Option<&Checkpoint>,
    system_id: &str,
) -> Result<Option<Lsn>, PipelineError> {
    let client = catalog::connect(&pg.conn).await?;
    let slot = catalog::slot(&client, &pg.slot).await?;
    let Some(cp) = cp else {
        return Ok(None);
    };
    if cp.system_id != system_id {
        return Err(PipelineError::Mismatch(format!(
            "the checkpoint belongs to another PostgreSQL cluster (system id {} there, {system_id} here): point the config at the right server, or start afresh with `sluice drop`",
            cp.system_id
        )));
    }
    if cp.slot != pg.slot {
        return Err(PipelineError::Mismatch(format!(
            "the checkpoint belongs to slot \"{}\" but the config names slot \"{}\": restore the slot name or start afresh with `sluice drop`",
            cp.slot, pg.slot
        )));
    }
    match slot {
        None => Err(PipelineError::Mismatch(format!(
            "replication slot \"{}\" no longer exists, but the checkpoint is at {}: it was dropped behind sluice's back and changes after {} may be lost. Resync: `sluice drop -c FILE` then `sluice run -c FILE` (with fresh target tables)",
            pg.slot, cp.lsn, cp.lsn
        ))),
        Some(s) => match s.confirmed_flush_lsn {
            Some(f) if f > cp.lsn => Err(PipelineError::Mismatch(format!(
                "replication slot \"{}\" is confirmed up to {f}, beyond the checkpoint at {}: the slot was recreated or consumed by someone else, so changes in between were never written. Resync: `sluice drop -c FILE` then `sluice run -c FILE` (with fresh target tables)",
                pg.slot, cp.lsn
            ))),
            _ => Ok(Some(cp.lsn)),
        },
    }
}

async fn apply_with_retry(
    sink: &mut ClickHouseSink,
    flush: &Flush,
    shutdown: &CancellationToken,
) -> Result<(), PipelineError> {
    let mut delay = RETRY_INITIAL;
    loop {
        match sink.apply(flush).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && !shutdown.is_cancelled() => {
                tracing::warn!(error = %e, retry_in = ?delay, "sink write failed; retrying");
                metrics::counter!(m::SINK_RETRIES).increment(1);
                sleep_or_cancel(shutdown, delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn with_retry<T, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    mut f: F,
) -> Result<T, PipelineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PipelineError>>,
{
    let mut delay = RETRY_INITIAL;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && !shutdown.is_cancelled() => {
                tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
                sleep_or_cancel(shutdown, delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

async fn sleep_or_cancel(shutdown: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
