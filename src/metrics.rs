//! Prometheus metrics: every metric name lives here, with its help text.
//! Every series carries the label `pipeline` (the pipeline's name); the
//! table in [`ALL`] is what docs/operating.md documents.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const ROWS_WRITTEN: &str = "sluice_rows_written_total";
pub const FLUSHES: &str = "sluice_flushes_total";
pub const SINK_RETRIES: &str = "sluice_sink_retries_total";
/// Micro-batches the source handed over, labelled `reason` (caught_up,
/// max_rows, max_bytes, max_delay, sink_idle, sink_busy, idle, shutdown).
pub const SOURCE_FLUSHES: &str = "sluice_source_flushes_total";
/// Retried attempts of any kind, labelled `what`.
pub const RETRIES: &str = "sluice_retries_total";
/// Rows copied by snapshots and resyncs, labelled `table`.
pub const SNAPSHOT_ROWS: &str = "sluice_snapshot_rows_total";
/// The source's estimate of a table's rows when its copy started, labelled `table`.
pub const SNAPSHOT_ROWS_ESTIMATED: &str = "sluice_snapshot_rows_estimated";
/// Tables stopped (failed) by this process.
pub const TABLE_FAILURES: &str = "sluice_table_failures_total";
/// Source flushes that queued while the sink was busy and were applied
/// together with the one before them.
pub const FLUSHES_MERGED: &str = "sluice_flushes_merged_total";
pub const SOURCE_RECONNECTS: &str = "sluice_source_reconnects_total";
pub const FLUSH_SECONDS: &str = "sluice_flush_seconds";
/// Kafka messages sent and not yet acknowledged while a flush waits for them.
pub const KAFKA_PENDING_DELIVERIES: &str = "sluice_kafka_pending_deliveries";
/// Rows the sink made durable, labelled `table` and `op` (insert, update,
/// delete, read: copied).
pub const ROWS_APPLIED: &str = "sluice_rows_applied_total";
/// Micro-batches written, labelled `table`.
pub const BATCHES: &str = "sluice_batches_total";
/// Rows per micro-batch (histogram), labelled `table`.
pub const BATCH_ROWS: &str = "sluice_batch_rows";
/// Seconds for the sink to make one flush durable (histogram).
pub const SINK_WRITE_SECONDS: &str = "sluice_sink_write_seconds";
/// Commit time (Unix seconds) of the last change the sink made durable.
pub const LAST_COMMIT_TIME: &str = "sluice_last_applied_commit_timestamp_seconds";
/// Per table, the commit time (Unix seconds) of its last streamed change
/// the sink made durable, labelled `table`.
pub const TABLE_LAST_COMMIT_TIME: &str = "sluice_table_last_applied_commit_timestamp_seconds";
/// When the checkpoint was last saved (Unix seconds).
pub const LAST_CHECKPOINT_TIME: &str = "sluice_last_checkpoint_timestamp_seconds";
/// Server WAL end minus the slot's confirmed position.
pub const LAG_BYTES: &str = "sluice_replication_lag_bytes";
/// Now minus the commit time of the last applied change.
pub const LAG_SECONDS: &str = "sluice_replication_lag_seconds";
/// WAL the slot keeps on the server (server WAL end minus restart_lsn).
pub const SLOT_RETAINED_WAL: &str = "sluice_slot_retained_wal_bytes";
/// The configured `max_retained_wal` (absent when not set).
pub const SLOT_RETAINED_WAL_LIMIT: &str = "sluice_slot_retained_wal_limit_bytes";
/// PostgreSQL's `safe_wal_size`: WAL that may still be written before the
/// slot is in danger of being invalidated (absent when unlimited).
pub const SLOT_SAFE_WAL_SIZE: &str = "sluice_slot_safe_wal_size_bytes";
/// 1 for the slot's current `wal_status`, 0 for the others; labelled `status`.
pub const SLOT_WAL_STATUS: &str = "sluice_slot_wal_status";
/// WAL warnings logged, labelled `reason` (retained, unreserved, lost).
pub const WAL_WARNINGS: &str = "sluice_wal_warnings_total";
/// Lost slots recovered (recreated, every table copied again).
pub const SLOT_RECOVERIES: &str = "sluice_slot_recoveries_total";
/// 1 for a table's current lifecycle state, 0 for the others; labelled
/// `table` and `state`.
pub const TABLE_STATE: &str = "sluice_table_state";
/// Errors by `class` (transient, table, fatal).
pub const ERRORS: &str = "sluice_errors_total";
/// Bytes of streamed transactions spilled to disk.
pub const SPILL_BYTES: &str = "sluice_spill_bytes";
/// Resident memory of the process.
pub const PROCESS_RSS: &str = "sluice_process_resident_memory_bytes";
/// Heartbeat messages emitted.
pub const HEARTBEATS: &str = "sluice_heartbeats_total";
/// Reconcile (polled tables): keys alive in the sink compared with the
/// source, labelled `table`.
pub const RECONCILE_KEYS: &str = "sluice_reconcile_keys_checked_total";
/// Reconcile: delete rows written for keys gone from the source, labelled `table`.
pub const RECONCILE_DELETES: &str = "sluice_reconcile_deletes_total";
/// Reconcile rounds completed, labelled `table`.
pub const RECONCILE_ROUNDS: &str = "sluice_reconcile_rounds_total";
/// Seconds the last completed reconcile round of a table took, labelled `table`.
pub const RECONCILE_ROUND_SECONDS: &str = "sluice_reconcile_round_seconds";
/// 1 while `/readyz` answers ready.
pub const READY: &str = "sluice_ready";

/// The lifecycle states [`TABLE_STATE`] has a series for.
pub const TABLE_STATES: [&str; 5] = [
    "pending",
    "snapshotting",
    "streaming",
    "failed",
    "resyncing",
];
/// The `wal_status` values [`SLOT_WAL_STATUS`] has a series for.
pub const WAL_STATUSES: [&str; 4] = ["reserved", "extended", "unreserved", "lost"];

/// Every metric: name, kind, labels (besides `pipeline`), help.
pub const ALL: &[(&str, &str, &str, &str)] = &[
    (ROWS_APPLIED, "counter", "table, op", "Rows the sink made durable, by operation (insert, update, delete, read = copied)"),
    (BATCHES, "counter", "table", "Micro-batches written to the sink"),
    (BATCH_ROWS, "histogram", "table", "Rows per micro-batch"),
    (SINK_WRITE_SECONDS, "histogram", "", "Seconds for the sink to make one flush durable"),
    (FLUSH_SECONDS, "histogram", "", "Seconds to apply one flush to the sink and checkpoint it"),
    (LAST_COMMIT_TIME, "gauge", "", "Commit time (Unix seconds) of the last change the sink made durable"),
    (TABLE_LAST_COMMIT_TIME, "gauge", "table", "Commit time (Unix seconds) of the table's last streamed change the sink made durable"),
    (LAST_CHECKPOINT_TIME, "gauge", "", "When the checkpoint was last saved (Unix seconds)"),
    (LAG_BYTES, "gauge", "", "Server WAL end minus the slot's confirmed position"),
    (LAG_SECONDS, "gauge", "", "Now minus the commit time of the last applied change (kept exact while idle by the heartbeat)"),
    (SLOT_RETAINED_WAL, "gauge", "", "WAL the slot keeps on the server (WAL end minus restart_lsn)"),
    (SLOT_RETAINED_WAL_LIMIT, "gauge", "", "The configured source.postgres.max_retained_wal"),
    (SLOT_SAFE_WAL_SIZE, "gauge", "", "PostgreSQL's safe_wal_size for the slot (absent when unlimited)"),
    (SLOT_WAL_STATUS, "gauge", "status", "1 for the slot's current wal_status (reserved, extended, unreserved, lost)"),
    (WAL_WARNINGS, "counter", "reason", "WAL warnings logged (retained, unreserved, lost)"),
    (SLOT_RECOVERIES, "counter", "", "Lost slots recovered by recreating the slot and copying every table again"),
    (TABLE_STATE, "gauge", "table, state", "1 for the table's current lifecycle state (pending, snapshotting, streaming, failed, resyncing)"),
    (SNAPSHOT_ROWS, "counter", "table", "Rows copied by snapshots and resyncs"),
    (SNAPSHOT_ROWS_ESTIMATED, "gauge", "table", "The source's estimate of a table's rows when its copy started"),
    (ERRORS, "counter", "class", "Errors by class (transient: retried; table: the table stopped; fatal: the pipeline stopped)"),
    (RETRIES, "counter", "what", "Attempts retried after a transient error, by what was tried"),
    (TABLE_FAILURES, "counter", "", "Tables stopped because they cannot be replicated"),
    (SOURCE_RECONNECTS, "counter", "", "Replication sessions restarted after a transient error"),
    (SOURCE_FLUSHES, "counter", "reason", "Micro-batches the source handed over, by why they left"),
    (FLUSHES_MERGED, "counter", "", "Source micro-batches that queued while the sink was busy and were written together with the one before them"),
    (ROWS_WRITTEN, "counter", "", "Rows written to the sink (stream and copies)"),
    (FLUSHES, "counter", "", "Micro-batch flushes applied to the sink"),
    (SPILL_BYTES, "gauge", "", "Bytes of streamed transactions spilled to disk"),
    (PROCESS_RSS, "gauge", "", "Resident memory of the process"),
    (HEARTBEATS, "counter", "", "Heartbeat messages emitted"),
    (READY, "gauge", "", "1 while /readyz answers ready"),
    (KAFKA_PENDING_DELIVERIES, "gauge", "", "Kafka messages a flush still waits to have acknowledged"),
    (RECONCILE_KEYS, "counter", "table", "Keys alive in the sink that a reconcile compared with the polled source"),
    (RECONCILE_DELETES, "counter", "table", "Delete rows a reconcile handed to the sink for keys gone from the polled source"),
    (RECONCILE_ROUNDS, "counter", "table", "Reconcile rounds completed over a polled table's keys"),
    (RECONCILE_ROUND_SECONDS, "gauge", "table", "Seconds the last completed reconcile round of a polled table took"),
];

/// Histogram buckets (seconds) for sink write and flush times.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Histogram buckets for rows per batch.
const ROWS_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0];

/// Installs the process-wide recorder; every series gets `pipeline`.
/// The caller serves [`PrometheusHandle::render`] (see `app::http`).
pub fn install(pipeline: &str) -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .add_global_label("pipeline", pipeline)
        .set_buckets_for_metric(Matcher::Full(SINK_WRITE_SECONDS.into()), SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(FLUSH_SECONDS.into()), SECONDS_BUCKETS)
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_ROWS.into()), ROWS_BUCKETS))
        .map_err(|e| format!("metrics: {e}"))?
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))?;
    for (name, kind, _, help) in ALL {
        match *kind {
            "counter" => metrics::describe_counter!(*name, *help),
            "gauge" => metrics::describe_gauge!(*name, *help),
            _ => metrics::describe_histogram!(*name, *help),
        }
    }
    // Counters appear at 0 from the start, so alerts and dashboards that
    // name them find them before the first event.
    for name in [
        SLOT_RECOVERIES,
        TABLE_FAILURES,
        SOURCE_RECONNECTS,
        HEARTBEATS,
        FLUSHES,
        ROWS_WRITTEN,
    ] {
        metrics::counter!(name).increment(0);
    }
    for class in ["transient", "table", "fatal"] {
        metrics::counter!(ERRORS, "class" => class).increment(0);
    }
    for reason in ["retained", "unreserved", "lost"] {
        metrics::counter!(WAL_WARNINGS, "reason" => reason).increment(0);
    }
    Ok(handle)
}
