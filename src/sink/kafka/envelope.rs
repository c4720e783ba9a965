//! A Debezium-compatible JSON envelope for one row of a [`TableBatch`] (and
//! for a truncate), and the row's message key. Pure: no I/O, the processing
//! time is passed in. The full description is `docs/kafka-sink.md`.
//!
//! Value:
//! ```json
//! {"before": null | {..}, "after": {..} | null,
//!  "source": {"version", "connector": "sluice", "name", "ts_ms", "snapshot",
//!             "db", "schema", "table", "txId", "lsn", "commit_lsn"},
//!  "op": "c" | "u" | "d" | "r" | "t", "ts_ms": <processing time>}
//! ```
//! - `op` `c`/`r` (insert / snapshot read): `before` null, `after` the row.
//! - `u`: `after` the new row; `before` the whole old row under REPLICA
//!   IDENTITY FULL (the `_before` column), else null.
//! - `d`: `before` the old row as PostgreSQL sent it (the key columns, and
//!   every column under REPLICA IDENTITY FULL; others null), `after` null.
//! - `t`: `before` and `after` null; no key.
//! - Unchanged TOASTed columns (the `_unchanged_cols` list) carry the
//!   configured placeholder (Debezium's `__debezium_unavailable_value` by
//!   default) instead of NULL.
//! - `source.lsn` is the change's own WAL position (`_version`, the ordering
//!   version; for snapshot rows the snapshot's consistent point),
//!   `source.commit_lsn` the commit LSN of its transaction (`_lsn`),
//!   `source.ts_ms` the commit time, `source.txId` null (batches do not carry
//!   xids). Values are rendered by [`super::render`].
//!
//! The key is a JSON object of the key columns (`{"id": 1}`), or `None` for a
//! table without a key. Tombstones (key, null value) after deletes are the
//! Kafka sink's business, not this module's.

use arrow::array::{Array, ArrayRef, AsArray, ListArray, RecordBatch, StructArray};
use arrow::datatypes::{TimestampMicrosecondType, UInt16Type, UInt64Type, UInt8Type};
use serde_json::Value;

use super::render::{self, write_int, write_str};
use crate::config::TableName;
use crate::core::meta::{self, OP_DELETE, OP_INSERT, OP_READ, OP_UPDATE};
use crate::core::{TableBatch, TruncateMeta};

/// Debezium's default `unavailable.value.placeholder`.
pub const UNAVAILABLE_VALUE: &str = crate::config::DEFAULT_KAFKA_UNAVAILABLE_VALUE;

/// The connector name in `source.connector`.
pub const CONNECTOR: &str = "sluice";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("batch of {table} lacks metadata column {column}")]
    MissingMeta { table: String, column: &'static str },
    #[error("batch of {table}: metadata column {column} has an unexpected type")]
    BadMeta { table: String, column: &'static str },
    #[error("batch of {table}: unknown op code {op:#04x} in row {row}")]
    BadOp { table: String, row: usize, op: u8 },
}

/// Names the source in `source.db` / `source.name`, and how values the
/// source did not send are written.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// The PostgreSQL database.
    pub db: String,
    /// The logical server name (Debezium's `topic.prefix`).
    pub name: String,
    /// Sent for an unchanged TOASTed value whose old value is unknown.
    pub unavailable_value: String,
}

/// Encodes the rows of one batch. Built once per batch (resolves columns),
/// then used per row.
pub struct EnvelopeEncoder<'a> {
    batch: &'a RecordBatch,
    info: &'a SourceInfo,
    schema_name: &'a str,
    table_name: &'a str,
    /// (index in the batch, name) of the table's own columns.
    columns: Vec<(usize, &'a str)>,
    /// Positions in `columns` of the key columns.
    key: Vec<usize>,
    op: &'a arrow::array::PrimitiveArray<UInt8Type>,
    lsn: &'a arrow::array::PrimitiveArray<UInt64Type>,
    version: &'a arrow::array::PrimitiveArray<UInt64Type>,
    commit_ts: &'a arrow::array::PrimitiveArray<TimestampMicrosecondType>,
    unchanged: Option<&'a ListArray>,
    /// Old rows of updates (REPLICA IDENTITY FULL), fields in `columns` order.
    before: Option<&'a StructArray>,
}

impl<'a> EnvelopeEncoder<'a> {
    pub fn new(tb: &'a TableBatch, info: &'a SourceInfo) -> Result<Self, EnvelopeError> {
        let batch = &tb.batch;
        let table = tb.shape.table.to_string();
        let find = |column: &'static str| {
            batch
                .schema_ref()
                .index_of(column)
                .map(|i| batch.column(i))
                .map_err(|_| EnvelopeError::MissingMeta {
                    table: table.clone(),
                    column,
                })
        };
        let bad = |column: &'static str| EnvelopeError::BadMeta {
            table: table.clone(),
            column,
        };
        let op = find(meta::OP)?
            .as_primitive_opt::<UInt8Type>()
            .ok_or_else(|| bad(meta::OP))?;
        let lsn = find(meta::LSN)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| bad(meta::LSN))?;
        let version = find(meta::VERSION)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| bad(meta::VERSION))?;
        let commit_ts = find(meta::COMMIT_TS)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| bad(meta::COMMIT_TS))?;
        let unchanged = match batch.schema_ref().index_of(meta::UNCHANGED) {
            Ok(i) => Some(
                batch
                    .column(i)
                    .as_list_opt::<i32>()
                    .ok_or_else(|| bad(meta::UNCHANGED))?,
            ),
            Err(_) => None,
        };
        let columns: Vec<(usize, &str)> = batch
            .schema_ref()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !meta::is_reserved_column(f.name()))
            .map(|(i, f)| (i, f.name().as_str()))
            .collect();
        let before = match batch.schema_ref().index_of(meta::BEFORE) {
            Ok(i) => {
                let s = batch
                    .column(i)
                    .as_struct_opt()
                    .ok_or_else(|| bad(meta::BEFORE))?;
                if s.num_columns() != columns.len() {
                    return Err(bad(meta::BEFORE));
                }
                Some(s)
            }
            Err(_) => None,
        };
        let key = columns
            .iter()
            .enumerate()
            .filter(|(_, (_, name))| tb.shape.key_columns().any(|c| c.name == *name))
            .map(|(k, _)| k)
            .collect();
        Ok(EnvelopeEncoder {
            batch,
            info,
            schema_name: &tb.shape.table.schema,
            table_name: &tb.shape.table.name,
            columns,
            key,
            op,
            lsn,
            version,
            commit_ts,
            unchanged,
            before,
        })
    }

    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The op letter of `row`.
    pub fn op(&self, row: usize) -> Result<&'static str, EnvelopeError> {
        Ok(match self.op.value(row) {
            OP_INSERT => "c",
            OP_UPDATE => "u",
            OP_DELETE => "d",
            OP_READ => "r",
            op => {
                return Err(EnvelopeError::BadOp {
                    table: format!("{}.{}", self.schema_name, self.table_name),
                    row,
                    op,
                })
            }
        })
    }

    /// The envelope of `row` as a JSON value; `now_ms` is the processing
    /// time (top-level `ts_ms`).
    pub fn value(&self, row: usize, now_ms: i64) -> Result<Value, EnvelopeError> {
        let mut out = Vec::new();
        self.write_value(row, now_ms, &mut out)?;
        Ok(serde_json::from_slice(&out).expect("the envelope is valid JSON"))
    }

    /// The message key of `row`: an object of the key columns, or `None`
    /// when the table has no key.
    pub fn key(&self, row: usize) -> Option<Value> {
        let mut out = Vec::new();
        self.write_key(row, &mut out)
            .then(|| serde_json::from_slice(&out).expect("the key is valid JSON"))
    }

    /// Serializes the envelope of `row` into `out` (appended), fields in
    /// Debezium's order and columns in table order.
    pub fn write_value(
        &self,
        row: usize,
        now_ms: i64,
        out: &mut Vec<u8>,
    ) -> Result<(), EnvelopeError> {
        let op = self.op(row)?;
        if op == "d" {
            out.extend_from_slice(b"{\"before\":");
            self.write_row(row, out);
            out.extend_from_slice(b",\"after\":null");
        } else {
            out.extend_from_slice(b"{\"before\":");
            match self.before.filter(|b| !b.is_null(row)) {
                Some(b) => self.write_before(b, row, out),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"after\":");
            self.write_row(row, out);
        }
        let source = SourceFields {
            info: self.info,
            schema: self.schema_name,
            table: self.table_name,
            commit_ts_micros: self.commit_ts.value(row),
            snapshot: op == "r",
            version: self.version.value(row),
            lsn: self.lsn.value(row),
        };
        source.write(out);
        out.extend_from_slice(b",\"op\":\"");
        out.extend_from_slice(op.as_bytes());
        out.extend_from_slice(b"\",\"ts_ms\":");
        write_int(out, now_ms);
        out.push(b'}');
        Ok(())
    }

    /// The row's columns as a JSON object in table order.
    fn write_row(&self, row: usize, out: &mut Vec<u8>) {
        let unchanged = self
            .unchanged
            .filter(|l| !l.is_null(row))
            .map(|l| l.value(row));
        let unchanged = unchanged
            .as_ref()
            .and_then(|a| a.as_primitive_opt::<UInt16Type>());
        out.push(b'{');
        for (k, (i, name)) in self.columns.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            write_str(out, name);
            out.push(b':');
            if unchanged.is_some_and(|u| u.values().contains(&(k as u16))) {
                write_str(out, &self.info.unavailable_value);
            } else {
                render::write(out, self.batch.column(*i), row);
            }
        }
        out.push(b'}');
    }

    /// The old row of an update (REPLICA IDENTITY FULL) as a JSON object.
    fn write_before(&self, before: &StructArray, row: usize, out: &mut Vec<u8>) {
        out.push(b'{');
        for (k, (_, name)) in self.columns.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            write_str(out, name);
            out.push(b':');
            let column: &ArrayRef = before.column(k);
            render::write(out, column, row);
        }
        out.push(b'}');
    }

    /// Serializes the key of `row` into `out` (appended), columns in table
    /// order; false when the table has no key.
    pub fn write_key(&self, row: usize, out: &mut Vec<u8>) -> bool {
        if self.key.is_empty() {
            return false;
        }
        out.push(b'{');
        for (n, &k) in self.key.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let (i, name) = self.columns[k];
            write_str(out, name);
            out.push(b':');
            render::write(out, self.batch.column(i), row);
        }
        out.push(b'}');
        true
    }
}

/// The `source` block.
struct SourceFields<'a> {
    info: &'a SourceInfo,
    schema: &'a str,
    table: &'a str,
    commit_ts_micros: i64,
    snapshot: bool,
    version: u64,
    lsn: u64,
}

impl SourceFields<'_> {
    /// `,"source":{..}` appended to `out`.
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"source\":{\"version\":\"");
        out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
        out.extend_from_slice(b"\",\"connector\":\"");
        out.extend_from_slice(CONNECTOR.as_bytes());
        out.extend_from_slice(b"\",\"name\":");
        write_str(out, &self.info.name);
        out.extend_from_slice(b",\"ts_ms\":");
        write_int(out, self.commit_ts_micros.div_euclid(1000));
        out.extend_from_slice(if self.snapshot {
            b",\"snapshot\":\"true\",\"db\":"
        } else {
            b",\"snapshot\":\"false\",\"db\":"
        });
        write_str(out, &self.info.db);
        out.extend_from_slice(b",\"schema\":");
        write_str(out, self.schema);
        out.extend_from_slice(b",\"table\":");
        write_str(out, self.table);
        out.extend_from_slice(b",\"txId\":null,\"lsn\":");
        write_int(out, self.version);
        out.extend_from_slice(b",\"commit_lsn\":");
        write_int(out, self.lsn);
        out.push(b'}');
    }
}

/// The envelope of a truncate of `table` (`op` "t"), appended to `out`.
pub fn write_truncate(
    info: &SourceInfo,
    table: &TableName,
    at: &TruncateMeta,
    now_ms: i64,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"{\"before\":null,\"after\":null");
    SourceFields {
        info,
        schema: &table.schema,
        table: &table.name,
        commit_ts_micros: at.commit_ts,
        snapshot: false,
        version: at.version,
        lsn: at.lsn,
    }
    .write(out);
    out.extend_from_slice(b",\"op\":\"t\",\"ts_ms\":");
    write_int(out, now_ms);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Decimal128Array, Int64Array, ListBuilder, StringArray, TimestampMicrosecondArray,
        UInt16Builder, UInt64Array, UInt8Array,
    };
    use arrow::datatypes::{DataType, Field, Schema};
    use serde_json::json;

    use super::*;
    use crate::config::TableName;
    use crate::core::meta::meta_fields;
    use crate::core::{ColumnInfo, LogicalType, TableShape};

    fn col(name: &str, pg: &str, dt: DataType, key: bool) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            source_type: pg.into(),
            logical: LogicalType::from_arrow(&dt),
            data_type: dt,
            is_key: key,
            nullable: !key,
            added_default: Default::default(),
        }
    }

    fn batch(with_key: bool) -> TableBatch {
        let shape = Arc::new(TableShape {
            table: TableName::new("public", "orders"),
            before_images: false,
            columns: vec![
                col("id", "int8", DataType::Int64, with_key),
                col("note", "text", DataType::Utf8, false),
                col("amount", "numeric", DataType::Decimal128(18, 4), false),
            ],
        });
        let mut fields: Vec<Field> = shape
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), true))
            .collect();
        fields.extend(meta_fields());
        let mut unchanged = ListBuilder::new(UInt16Builder::new())
            .with_field(Arc::new(Field::new_list_field(DataType::UInt16, false)));
        unchanged.append_null();
        unchanged.values().append_value(1);
        unchanged.append(true);
        unchanged.append_null();
        unchanged.append_null();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 1, 1, 2])),
            Arc::new(StringArray::from(vec![Some("a\"b"), None, None, Some("x")])),
            Arc::new(
                Decimal128Array::from(vec![Some(123_456_789), Some(5), None, Some(0)])
                    .with_precision_and_scale(18, 4)
                    .unwrap(),
            ),
            Arc::new(UInt8Array::from(vec![b'c', b'u', b'd', b'r'])),
            Arc::new(UInt64Array::from(vec![0x100, 0x200, 0x300, 0x50])),
            Arc::new(UInt64Array::from(vec![0xF0, 0x1F0, 0x2F0, 0x50])),
            Arc::new(UInt8Array::from(vec![0, 0, 1, 0])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    1_706_702_400_000_001,
                    1_706_702_400_123_999,
                    1_706_702_401_000_000,
                    0,
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(unchanged.finish()),
        ];
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        TableBatch { shape, batch }
    }

    fn info() -> SourceInfo {
        SourceInfo {
            db: "shop".into(),
            name: "shop_to_kafka".into(),
            unavailable_value: UNAVAILABLE_VALUE.into(),
        }
    }

    #[test]
    fn insert_update_delete_read() {
        let tb = batch(true);
        let info = info();
        let enc = EnvelopeEncoder::new(&tb, &info).unwrap();
        assert_eq!(enc.num_rows(), 4);
        let v = enc.value(0, 1_706_702_500_000).unwrap();
        assert_eq!(
            v,
            json!({
                "before": null,
                "after": {"id": 1, "note": "a\"b", "amount": "12345.6789"},
                "source": {
                    "version": env!("CARGO_PKG_VERSION"),
                    "connector": "sluice",
                    "name": "shop_to_kafka",
                    "ts_ms": 1_706_702_400_000i64,
                    "snapshot": "false",
                    "db": "shop",
                    "schema": "public",
                    "table": "orders",
                    "txId": null,
                    "lsn": 0xF0,
                    "commit_lsn": 0x100
                },
                "op": "c",
                "ts_ms": 1_706_702_500_000i64
            })
        );
        // Update with an unchanged TOASTed column.
        let v = enc.value(1, 0).unwrap();
        assert_eq!(v["op"], "u");
        assert_eq!(v["before"], Value::Null);
        assert_eq!(
            v["after"],
            json!({"id": 1, "note": UNAVAILABLE_VALUE, "amount": "0.0005"})
        );
        assert_eq!(v["source"]["ts_ms"], 1_706_702_400_123i64);
        // Delete: the old row in before.
        let v = enc.value(2, 0).unwrap();
        assert_eq!(v["op"], "d");
        assert_eq!(v["after"], Value::Null);
        assert_eq!(v["before"], json!({"id": 1, "note": null, "amount": null}));
        // Snapshot read.
        let v = enc.value(3, 0).unwrap();
        assert_eq!(v["op"], "r");
        assert_eq!(v["source"]["snapshot"], "true");
        assert_eq!(v["after"]["amount"], "0.0000");
    }

    #[test]
    fn key_and_bytes() {
        let tb = batch(true);
        let info = info();
        let enc = EnvelopeEncoder::new(&tb, &info).unwrap();
        assert_eq!(enc.key(2), Some(json!({"id": 1})));
        let mut k = Vec::new();
        assert!(enc.write_key(3, &mut k));
        assert_eq!(k, br#"{"id":2}"#);
        let mut out = Vec::new();
        enc.write_value(0, 7, &mut out).unwrap();
        // Field order as Debezium writes it.
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with(r#"{"before":null,"after":{"id":1,"#), "{s}");
        assert!(s.ends_with(r#""op":"c","ts_ms":7}"#), "{s}");
    }

    #[test]
    fn truncate_event() {
        let mut out = Vec::new();
        let at = TruncateMeta {
            lsn: 0x500,
            version: 0x4F0,
            commit_ts: 1_706_702_400_000_001,
        };
        write_truncate(
            &info(),
            &TableName::new("public", "orders"),
            &at,
            9,
            &mut out,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["op"], "t");
        assert_eq!(v["before"], Value::Null);
        assert_eq!(v["after"], Value::Null);
        assert_eq!(v["source"]["lsn"], 0x4F0);
        assert_eq!(v["source"]["commit_lsn"], 0x500);
        assert_eq!(v["source"]["table"], "orders");
        assert_eq!(v["source"]["ts_ms"], 1_706_702_400_000i64);
        assert_eq!(v["ts_ms"], 9);
    }

    #[test]
    fn update_carries_the_old_row_under_full() {
        let shape = Arc::new(TableShape {
            table: TableName::new("public", "full_t"),
            before_images: true,
            columns: vec![
                col("id", "int8", DataType::Int64, true),
                col("note", "text", DataType::Utf8, true),
            ],
        });
        let schema = meta::batch_schema(&shape);
        let fields = meta::column_fields(&shape);
        let before = arrow::array::StructArray::new(
            fields.into(),
            vec![
                Arc::new(Int64Array::from(vec![0, 1])) as ArrayRef,
                Arc::new(StringArray::from(vec![None, Some("old")])),
            ],
            Some(vec![false, true].into()),
        );
        let mut m = meta::MetaBuilder::with_capacity(2);
        let rm = meta::RowMeta {
            op: OP_INSERT,
            lsn: 10,
            version: 5,
            commit_ts: 0,
        };
        m.append(rm, &[]);
        m.append(
            meta::RowMeta {
                op: OP_UPDATE,
                version: 6,
                ..rm
            },
            &[],
        );
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 1])),
            Arc::new(StringArray::from(vec![Some("old"), Some("new")])),
        ];
        columns.extend(m.finish());
        columns.push(Arc::new(before));
        let tb = TableBatch {
            shape,
            batch: RecordBatch::try_new(schema, columns).unwrap(),
        };
        let info = info();
        let enc = EnvelopeEncoder::new(&tb, &info).unwrap();
        let v = enc.value(0, 0).unwrap();
        assert_eq!(v["before"], Value::Null);
        let v = enc.value(1, 0).unwrap();
        assert_eq!(v["before"], json!({"id": 1, "note": "old"}));
        assert_eq!(v["after"], json!({"id": 1, "note": "new"}));
        assert_eq!(v["source"]["lsn"], 6);
    }

    #[test]
    fn keyless_table_has_no_key() {
        let tb = batch(false);
        let info = info();
        let enc = EnvelopeEncoder::new(&tb, &info).unwrap();
        assert_eq!(enc.key(0), None);
        let mut k = Vec::new();
        assert!(!enc.write_key(0, &mut k));
        assert!(k.is_empty());
    }

    #[test]
    fn missing_meta_and_bad_op() {
        let tb = batch(true);
        let info = info();
        let keep: Vec<usize> = (0..tb.batch.num_columns()).filter(|&i| i != 4).collect();
        let stripped = TableBatch {
            shape: tb.shape.clone(),
            batch: tb.batch.project(&keep).unwrap(),
        };
        assert!(matches!(
            EnvelopeEncoder::new(&stripped, &info),
            Err(EnvelopeError::MissingMeta { column: "_lsn", .. })
        ));
        let mut cols: Vec<ArrayRef> = tb.batch.columns().to_vec();
        cols[3] = Arc::new(UInt8Array::from(vec![b'x', b'c', b'c', b'c']));
        let bad = TableBatch {
            shape: tb.shape.clone(),
            batch: RecordBatch::try_new(tb.batch.schema(), cols).unwrap(),
        };
        let enc = EnvelopeEncoder::new(&bad, &info).unwrap();
        assert!(matches!(
            enc.value(0, 0),
            Err(EnvelopeError::BadOp { op: b'x', .. })
        ));
    }
}
