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
            SinkItem::Truncate(tables, _) => lines.push(json!({
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
                // A delete of a keyed table without old rows (not REPLICA
                // IDENTITY FULL) carries its key only.
                let key_only_deletes = !tb.shape.before_images && !tb.shape.keyless();
                for row in 0..b.num_rows() {
                    let mut values = json::row_object(b, row);
                    // Values that were not sent are left out, never shown as null.
                    let key_only = key_only_deletes && op.value(row) == meta::OP_DELETE;
                    if key_only {
                        values.retain(|name, _| {
                            tb.shape.columns.iter().any(|c| c.is_key && c.name == *name)
                        });
                    }
                    if !unchanged.is_null(row) {
                        let idx = unchanged.value(row);
                        let idx = idx.as_primitive::<arrow::datatypes::UInt16Type>();
                        for &i in idx.values() {
                            values.remove(&tb.shape.columns[i as usize].name);
                        }
                    }
                    let mut obj = json!({
                        "table": tb.shape.table.to_string(),
                        "op": (op.value(row) as char).to_string(),
                        "lsn": Lsn(lsn.value(row)).to_string(),
                        "version": Lsn(version.value(row)).to_string(),
                        "commit_ts": json::value(&(std::sync::Arc::new(ts.clone()) as _), row),
                        "row": Value::Object(values),
                    });
                    if key_only {
                        obj["key_only"] = json!(true);
                    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int32Array, StringArray};
    use arrow::datatypes::DataType;
    use arrow::record_batch::RecordBatch;

    use super::*;
    use crate::config::TableName;
    use crate::core::meta::{batch_schema, MetaBuilder, RowMeta};
    use crate::core::{ColumnInfo, LogicalType, TableBatch, TableShape};

    #[test]
    fn values_not_sent_are_left_out() {
        let col = |name: &str, dt: DataType, key: bool| ColumnInfo {
            name: name.into(),
            source_type: "x".into(),
            logical: LogicalType::from_arrow(&dt),
            data_type: dt,
            is_key: key,
            nullable: !key,
            added_default: Default::default(),
        };
        let shape = Arc::new(TableShape {
            table: TableName::new("public", "t"),
            columns: vec![
                col("id", DataType::Int32, true),
                col("note", DataType::Utf8, false),
                col("body", DataType::Utf8, false),
            ],
            before_images: false,
        });
        let mut meta = MetaBuilder::with_capacity(3);
        let m = |op| RowMeta {
            op,
            lsn: 1,
            version: 1,
            commit_ts: 0,
        };
        meta.append(m(meta::OP_UPDATE), &[2]);
        meta.append(m(meta::OP_DELETE), &[]);
        meta.append(m(meta::OP_INSERT), &[]);
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("n"), None, None])),
            Arc::new(StringArray::from(vec![None, None, Some("b")])),
        ];
        arrays.extend(meta.finish());
        let batch = RecordBatch::try_new(batch_schema(&shape), arrays).unwrap();
        let flush = Flush::<u64> {
            items: vec![SinkItem::Rows(TableBatch { shape, batch })],
            position: None,
            source_time: None,
        };
        let lines = flush_lines(&flush);
        // The unchanged TOAST value is named, not shown as null.
        assert_eq!(lines[0]["row"], json!({"id": 1, "note": "n"}));
        assert_eq!(lines[0]["unchanged_toast"], json!(["body"]));
        // A delete under the default identity: its key only.
        assert_eq!(lines[1]["row"], json!({"id": 2}));
        assert_eq!(lines[1]["key_only"], json!(true));
        // A real NULL stays null.
        assert_eq!(lines[2]["row"], json!({"id": 3, "note": null, "body": "b"}));
        assert!(lines[2].get("key_only").is_none());
    }
}
