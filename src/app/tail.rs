//! `sluice tail`: decoded changes as JSON lines on stdout, nothing confirmed.

use std::io::Write;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{TimestampMicrosecondType, UInt64Type, UInt8Type};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{BatchConfig, Config};
use crate::core::json;
use crate::core::{meta, Flush, SinkItem};
use crate::source::postgres::lsn::Lsn;
use crate::source::postgres::{PgSource, SourceError};

/// How quickly tail shows a change.
const TAIL_MAX_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// The JSON lines of one flush.
pub fn flush_lines<P>(flush: &Flush<P>) -> Vec<Value> {
    let mut lines = Vec::new();
    for item in &flush.items {
        match item {
            SinkItem::Truncate(tables) => lines.push(json!({
                "op": "truncate",
                "tables": tables.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            })),
            SinkItem::Rows(tb) => {
                let b = &tb.batch;
                let col = |name: &str| b.column_by_name(name).expect("metadata column");
                let op = col(meta::OP).as_primitive::<UInt8Type>().clone();
                let lsn = col(meta::LSN).as_primitive::<UInt64Type>().clone();
                let version = col(meta::VERSION).as_primitive::<UInt64Type>().clone();
                let ts = col(meta::COMMIT_TS)
                    .as_primitive::<TimestampMicrosecondType>()
                    .clone();
                let unchanged = col(meta::UNCHANGED).as_list::<i32>().clone();
                // The old rows as a batch of their own (rows without one are
                // skipped below, so the struct's nulls need not carry over).
                let before = b.column_by_name(meta::BEFORE).and_then(|c| {
                    let (fields, columns, _) = c.as_struct().clone().into_parts();
                    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
                    arrow::record_batch::RecordBatch::try_new(schema, columns).ok()
                });
                for row in 0..b.num_rows() {
                    let mut obj = json!({
                        "table": tb.shape.table.to_string(),
                        "op": (op.value(row) as char).to_string(),
                        "lsn": Lsn(lsn.value(row)).to_string(),
                        "version": Lsn(version.value(row)).to_string(),
                        "commit_ts": json::value(&(std::sync::Arc::new(ts.clone()) as _), row),
                        "row": Value::Object(json::row_object(b, row)),
                    });
                    if let Some(old) = before.as_ref().filter(|_| {
                        b.column_by_name(meta::BEFORE)
                            .is_some_and(|c| c.is_valid(row))
                    }) {
                        obj["before"] = Value::Object(json::row_object(old, row));
                    }
                    if !unchanged.is_null(row) {
                        let idx = unchanged.value(row);
                        let idx = idx.as_primitive::<arrow::datatypes::UInt16Type>();
                        let names: Vec<&str> = idx
                            .values()
                            .iter()
                            .map(|&i| tb.shape.columns[i as usize].name.as_str())
                            .collect();
                        obj["unchanged_toast"] = json!(names);
                    }
                    lines.push(obj);
                }
            }
        }
    }
    lines
}

pub async fn run(
    config: &Config,
    from: Option<Lsn>,
    limit: Option<u64>,
) -> Result<(), SourceError> {
    let Some(pg) = config.source.postgres() else {
        return Err(SourceError::Unsupported(
            "tail reads a replication slot: it needs [source.postgres]".into(),
        ));
    };
    let batch = BatchConfig {
        max_delay: TAIL_MAX_DELAY,
        ..config.batch
    };
    let spill_dir = std::env::temp_dir().join(format!("sluice-tail-{}", std::process::id()));
    let session = PgSource::new(pg.clone(), batch, spill_dir)
        .tail_session(from)
        .await?;
    let (tx, mut rx) = mpsc::channel::<Flush<Lsn>>(4);
    // Nothing is ever acknowledged: tail confirms nothing.
    let (_ack_tx, ack_rx) = watch::channel(from.unwrap_or(Lsn::ZERO));
    let shutdown = CancellationToken::new();
    let source = tokio::spawn(session.run(tx, ack_rx, shutdown.clone()));
    let ctrl_c = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        ctrl_c.cancel();
    });
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    'outer: while let Some(flush) = rx.recv().await {
        let mut lock = stdout.lock();
        for line in flush_lines(&flush) {
            if writeln!(lock, "{line}").is_err() {
                break 'outer;
            }
            printed += 1;
            if limit.is_some_and(|l| printed >= l) {
                break 'outer;
            }
        }
        let _ = lock.flush();
    }
    shutdown.cancel();
    drop(rx);
    match source.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if limit.is_some_and(|l| printed >= l) => {
            tracing::debug!(error = %e, "source ended after limit");
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(e) => Err(SourceError::NotReady(format!("source task failed: {e}"))),
    }
}
