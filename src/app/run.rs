//! `sluice run`: the config's source, sink and state store, wired into the
//! generic pipeline.

use tokio_util::sync::CancellationToken;

use crate::config::{Config, SinkConfig, SourceConfig};
use crate::pipeline::{run_pipeline, PipelineError, PipelineOptions, CRASH_AFTER_SINK_WRITE_ENV};
use crate::sink::clickhouse::ClickHouseSink;
use crate::source::postgres::PgSource;
use crate::state::{sidecar, SledStore};

/// Runs the configured pipeline until `shutdown` is cancelled or a fatal error.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), PipelineError> {
    let SourceConfig::Postgres(pg) = &config.source;
    let state_path = config.pipeline.checkpoint_path();
    let opts = PipelineOptions {
        name: config.pipeline.name.clone(),
        tables: pg.tables.clone(),
        initial_snapshot: pg.initial_snapshot,
        status_file: Some(sidecar::path(&state_path)),
        crash_after_sink_write: std::env::var(CRASH_AFTER_SINK_WRITE_ENV)
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    let source = PgSource::new(pg.clone(), config.batch, state_path.with_extension("spill"));
    let store = SledStore::open(&state_path)?;
    match &config.sink {
        SinkConfig::ClickHouse(ch) => {
            run_pipeline(source, ClickHouseSink::new(ch), store, opts, shutdown).await
        }
        SinkConfig::Kafka(_) => Err(PipelineError::Unsupported(
            "`sluice run` supports the ClickHouse sink in this version; the Kafka sink is not implemented yet".into(),
        )),
    }
}
