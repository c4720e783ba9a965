//! What the pipeline tells metrics and `/readyz`: rows and batches the
//! sink made durable, how long it took, how far the source's changes are
//! applied, and every table's state. Kept here so the loop stays readable.

use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{TimestampMicrosecondType, UInt8Type};

use crate::config::TableName;
use crate::core::meta::{COMMIT_TS, OP, OP_DELETE, OP_INSERT, OP_READ, OP_UPDATE};
use crate::core::SinkItem;
use crate::live::live;
use crate::metrics as m;
use crate::state::PipelineState;

/// Rows by table and operation, batches and their sizes.
pub(crate) fn applied(items: &[SinkItem]) {
    for item in items {
        let SinkItem::Rows(b) = item else { continue };
        let rows = b.batch.num_rows();
        if rows == 0 {
            continue;
        }
        let table = b.shape.table.to_string();
        metrics::counter!(m::BATCHES, "table" => table.clone()).increment(1);
        metrics::histogram!(m::BATCH_ROWS, "table" => table.clone()).record(rows as f64);
        let mut counts = [0u64; 4];
        match b.batch.column_by_name(OP) {
            Some(col) => {
                let ops = col.as_primitive::<UInt8Type>();
                for i in 0..ops.len() {
                    let slot = match ops.value(i) {
                        OP_INSERT => 0,
                        OP_UPDATE => 1,
                        OP_DELETE => 2,
                        OP_READ => 3,
                        _ => continue,
                    };
                    counts[slot] += 1;
                }
            }
            None => counts[0] = rows as u64,
        }
        // Copied rows carry the copy's time, not a commit's.
        let streamed = counts[3] < rows as u64;
        if let Some(ts) = b
            .batch
            .column_by_name(COMMIT_TS)
            .filter(|_| streamed)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .and_then(|c| c.iter().flatten().max())
        {
            metrics::gauge!(m::TABLE_LAST_COMMIT_TIME, "table" => table.clone())
                .set(ts as f64 / 1e6);
        }
        for (op, n) in ["insert", "update", "delete", "read"].iter().zip(counts) {
            if n > 0 {
                metrics::counter!(m::ROWS_APPLIED, "table" => table.clone(), "op" => *op)
                    .increment(n);
            }
        }
    }
}

/// A copy unit of `table` made durable as one write: its batches' rows.
pub(crate) fn copied(table: &TableName, batches: &[u64]) {
    let table = table.to_string();
    let mut rows = 0;
    for &n in batches.iter().filter(|&&n| n > 0) {
        metrics::counter!(m::BATCHES, "table" => table.clone()).increment(1);
        metrics::histogram!(m::BATCH_ROWS, "table" => table.clone()).record(n as f64);
        rows += n;
    }
    if rows > 0 {
        metrics::counter!(m::ROWS_APPLIED, "table" => table, "op" => "read").increment(rows);
    }
}

/// One flush made durable by the sink in `took`; its source time (when
/// set) is how far the source's changes are applied.
pub(crate) fn flush_written(took: Duration, source_time: Option<i64>) {
    metrics::histogram!(m::SINK_WRITE_SECONDS).record(took.as_secs_f64());
    if let Some(t) = source_time {
        live().applied_up_to(t);
    }
}

/// One series per table and state, 1 for the current state.
pub(crate) fn table_states<P: crate::core::Position>(
    state: &PipelineState<P>,
    tables: &[TableName],
) {
    for t in tables {
        let current = state.lifecycle(t).name();
        let table = t.to_string();
        for s in m::TABLE_STATES {
            let v = if s == current { 1.0 } else { 0.0 };
            metrics::gauge!(m::TABLE_STATE, "table" => table.clone(), "state" => s).set(v);
        }
    }
    metrics::gauge!(m::LAST_CHECKPOINT_TIME).set(crate::live::now_micros() as f64 / 1e6);
}
