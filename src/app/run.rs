//! `sluice run` and `sluice snapshot`: the config's source, sink and state
//! store, wired into the generic pipeline.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{monitor, progress, requests};
use crate::config::{Config, SinkConfig, SourceConfig, TableName};
use crate::pipeline::{run_pipeline, PipelineError, PipelineOptions, CRASH_AFTER_SINK_WRITE_ENV};
use crate::sink::clickhouse::ClickHouseSink;
use crate::sink::kafka::KafkaSink;
use crate::source::poll::PollSource;
use crate::source::postgres::PgSource;
use crate::source::Source;
use crate::state::{sidecar, SledStore};

/// How long `run` waits for the state database while another process
/// (a `sluice status`) has it open.
const STATE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the configured pipeline until `shutdown` is cancelled or a fatal error.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), PipelineError> {
    let state_path = config.pipeline.checkpoint_path();
    let opts = options(&config, config.source.tables(), false);
    let (tx, rx) = mpsc::channel(16);
    let watcher = tokio::spawn(requests::watch(state_path.clone(), tx));
    let store = SledStore::open_waiting(&state_path, STATE_LOCK_WAIT).await?;
    let monitor_stop = shutdown.child_token();
    // The slot and WAL monitor (a polled source has no slot), the sink
    // probe and the process gauges.
    let monitor = tokio::spawn(monitor::run(
        config.source.postgres().cloned(),
        // The probe only feeds /readyz.
        config.metrics.listen.map(|_| sink_probe(&config.sink)),
        state_path.with_extension("spill"),
        monitor_stop.clone(),
    ));
    let result = run_with(&config, store, opts, rx, shutdown).await;
    monitor_stop.cancel();
    let _ = monitor.await;
    watcher.abort();
    if let Err(e) = &result {
        crate::live::live().set_fatal(e.to_string());
        metrics::counter!(crate::metrics::ERRORS, "class" => "fatal").increment(1);
    }
    result
}

/// For the monitor and `/readyz`: does the sink answer?
fn sink_probe(sink: &SinkConfig) -> monitor::SinkProbe {
    match sink {
        SinkConfig::ClickHouse(ch) => {
            let ch = ch.clone();
            Box::new(move || {
                let ch = ch.clone();
                Box::pin(async move { crate::sink::clickhouse::healthcheck(&ch).await.all_ok() })
            })
        }
        SinkConfig::Kafka(k) => {
            let k = k.clone();
            Box::new(move || {
                let k = k.clone();
                Box::pin(async move { crate::sink::kafka::healthcheck(&k).await.all_ok() })
            })
        }
    }
}

/// `sluice snapshot`: copies `tables` (all configured ones when empty) into
/// the sink once, with no slot and no stream. Resumable: a copy interrupted
/// goes on where it stopped when run again; a finished one starts afresh.
pub async fn snapshot(
    config: Config,
    tables: Vec<TableName>,
    shutdown: CancellationToken,
) -> Result<(), PipelineError> {
    let Some(pg) = config.source.postgres() else {
        return Err(PipelineError::Unsupported(
            "`sluice snapshot` is for [source.postgres]; `sluice run` with [source.poll] copies every table on its first poll".into(),
        ));
    };
    let tables = if tables.is_empty() {
        pg.tables.clone()
    } else {
        tables
    };
    let path = snapshot_state_path(&config);
    let mut opts = options(&config, tables, true);
    opts.status_file = Some(sidecar::path(&path));
    let (_tx, rx) = mpsc::channel(1);
    let store = SledStore::open_waiting(&path, STATE_LOCK_WAIT).await?;
    run_with(&config, store, opts, rx, shutdown.clone()).await?;
    if !shutdown.is_cancelled() {
        // Done: the next `sluice snapshot` copies afresh.
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_file(sidecar::path(&path));
    }
    Ok(())
}

/// Where `sluice snapshot` keeps its progress (apart from `run`'s state).
pub fn snapshot_state_path(config: &Config) -> std::path::PathBuf {
    config.pipeline.checkpoint_path().with_extension("snapshot")
}

fn options(config: &Config, tables: Vec<TableName>, copy_only: bool) -> PipelineOptions {
    PipelineOptions {
        name: config.pipeline.name.clone(),
        tables,
        // A polled table's first poll is its copy.
        initial_snapshot: config
            .source
            .postgres()
            .is_some_and(|pg| pg.initial_snapshot)
            || copy_only,
        status_file: Some(sidecar::path(&config.pipeline.checkpoint_path())),
        crash_after_sink_write: std::env::var(CRASH_AFTER_SINK_WRITE_ENV)
            .ok()
            .and_then(|v| v.parse().ok()),
        copy_readers: config.snapshot.parallelism,
        copy_only,
        progress: progress::view(),
        resync_on_position_lost: config
            .source
            .postgres()
            .is_some_and(|pg| pg.on_slot_lost == crate::config::OnSlotLost::Resync),
        merge: crate::pipeline::MergeLimit::new(config.batch.max_rows, config.batch.max_bytes),
    }
}

async fn run_with(
    config: &Config,
    store: SledStore,
    opts: PipelineOptions,
    control: mpsc::Receiver<crate::pipeline::Control>,
    shutdown: CancellationToken,
) -> Result<(), PipelineError> {
    match &config.source {
        SourceConfig::Postgres(pg) => {
            let source = PgSource::new(
                pg.clone(),
                config.batch,
                config.pipeline.checkpoint_path().with_extension("spill"),
            )
            .with_copy(config.snapshot.parallelism, config.snapshot.split);
            with_sink(config, source, store, opts, control, shutdown).await
        }
        SourceConfig::Poll(p) => {
            let mut source = PollSource::new(p.clone(), config.batch);
            if let SinkConfig::ClickHouse(ch) = &config.sink {
                // Tables with reconcile_interval compare the sink's live keys.
                let keys = crate::sink::clickhouse::ClickHouseKeys::new(ch)?;
                source = source.with_key_reader(std::sync::Arc::new(keys));
            }
            with_sink(config, source, store, opts, control, shutdown).await
        }
    }
}

/// The database name events carry (`source.db` of the Kafka envelope).
pub fn source_database(config: &Config) -> String {
    match &config.source {
        SourceConfig::Postgres(pg) => pg.conn.dbname.clone(),
        SourceConfig::Poll(p) => match &p.conn {
            crate::config::poll::PollConn::Postgres(conn) => conn.dbname.clone(),
            // Each polled ClickHouse table names its own database.
            crate::config::poll::PollConn::ClickHouse { .. } => "clickhouse".into(),
        },
    }
}

async fn with_sink<S: Source>(
    config: &Config,
    source: S,
    store: SledStore,
    opts: PipelineOptions,
    control: mpsc::Receiver<crate::pipeline::Control>,
    shutdown: CancellationToken,
) -> Result<(), PipelineError> {
    match &config.sink {
        SinkConfig::ClickHouse(ch) => {
            let sink = ClickHouseSink::new(ch)?;
            run_pipeline(source, sink, store, opts, control, shutdown).await
        }
        SinkConfig::Kafka(k) => {
            let sink = KafkaSink::new(k, &source_database(config));
            run_pipeline(source, sink, store, opts, control, shutdown).await
        }
    }
}
