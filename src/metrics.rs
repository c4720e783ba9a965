//! Prometheus metrics: every metric name lives here.

use std::net::SocketAddr;

pub const ROWS_WRITTEN: &str = "sluice_rows_written_total";
pub const FLUSHES: &str = "sluice_flushes_total";
pub const SINK_RETRIES: &str = "sluice_sink_retries_total";
/// Micro-batches the source handed over, labelled `reason` (caught_up,
/// max_rows, max_bytes, max_delay, idle, shutdown).
pub const SOURCE_FLUSHES: &str = "sluice_source_flushes_total";
/// Retried attempts of any kind, labelled `what`.
pub const RETRIES: &str = "sluice_retries_total";
/// Rows copied by snapshots and resyncs, labelled `table`.
pub const SNAPSHOT_ROWS: &str = "sluice_snapshot_rows_total";
/// The source's estimate of a table's rows when its copy started, labelled `table`.
pub const SNAPSHOT_ROWS_ESTIMATED: &str = "sluice_snapshot_rows_estimated";
/// Tables stopped (failed) by this process.
pub const TABLE_FAILURES: &str = "sluice_table_failures_total";
pub const SOURCE_RECONNECTS: &str = "sluice_source_reconnects_total";
pub const FLUSH_SECONDS: &str = "sluice_flush_seconds";
/// Kafka messages sent and not yet acknowledged while a flush waits for them.
pub const KAFKA_PENDING_DELIVERIES: &str = "sluice_kafka_pending_deliveries";

/// Serves `/metrics` on `addr`.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("metrics.listen {addr}: {e}"))?;
    metrics::describe_counter!(ROWS_WRITTEN, "Rows written to the sink");
    metrics::describe_counter!(FLUSHES, "Micro-batch flushes applied to the sink");
    metrics::describe_counter!(
        RETRIES,
        "Attempts retried after a transient error, by what was tried"
    );
    metrics::describe_counter!(
        TABLE_FAILURES,
        "Tables stopped because they cannot be replicated"
    );
    metrics::describe_counter!(SINK_RETRIES, "Sink writes retried after a transient error");
    metrics::describe_counter!(
        SOURCE_RECONNECTS,
        "Replication sessions restarted after a transient error"
    );
    metrics::describe_histogram!(
        FLUSH_SECONDS,
        "Seconds to apply one flush to the sink and checkpoint it"
    );
    metrics::describe_gauge!(
        KAFKA_PENDING_DELIVERIES,
        "Kafka messages a flush still waits to have acknowledged"
    );
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    Ok(())
}
