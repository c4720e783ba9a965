//! Prometheus metrics: every metric name lives here.

use std::net::SocketAddr;

pub const ROWS_WRITTEN: &str = "sluice_rows_written_total";
pub const FLUSHES: &str = "sluice_flushes_total";
pub const CHECKPOINT_LSN: &str = "sluice_checkpoint_lsn";
pub const SINK_RETRIES: &str = "sluice_sink_retries_total";
pub const SOURCE_RECONNECTS: &str = "sluice_source_reconnects_total";
pub const FLUSH_SECONDS: &str = "sluice_flush_seconds";

/// Serves `/metrics` on `addr`.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("metrics.listen {addr}: {e}"))?;
    metrics::describe_counter!(ROWS_WRITTEN, "Rows written to the sink");
    metrics::describe_counter!(FLUSHES, "Micro-batch flushes applied to the sink");
    metrics::describe_gauge!(CHECKPOINT_LSN, "Last durable checkpoint LSN");
    metrics::describe_counter!(SINK_RETRIES, "Sink writes retried after a transient error");
    metrics::describe_counter!(
        SOURCE_RECONNECTS,
        "Replication sessions restarted after a transient error"
    );
    metrics::describe_histogram!(
        FLUSH_SECONDS,
        "Seconds to apply one flush to the sink and checkpoint it"
    );
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    Ok(())
}
