//! Arrow micro-batch building: one builder per table, columns decoded
//! straight from wire bytes, metadata columns appended per row.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, ListBuilder, TimestampMicrosecondBuilder, UInt16Builder, UInt64Builder, UInt8Builder,
};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::change::{meta, meta_fields, TableBatch, TableShape, OP_DELETE};
use crate::source::postgres::types::{ArrowMapping, ColumnDecoder};

/// Initial capacity of a table's builders; they grow as needed.
const INITIAL_ROWS: usize = 1024;

/// Builds one table's RecordBatch row by row.
pub struct TableBuilder {
    shape: Arc<TableShape>,
    schema: SchemaRef,
    columns: Vec<ColumnDecoder>,
    op: UInt8Builder,
    lsn: UInt64Builder,
    version: UInt64Builder,
    deleted: UInt8Builder,
    commit_ts: TimestampMicrosecondBuilder,
    unchanged: ListBuilder<UInt16Builder>,
    rows: usize,
}

/// Metadata of one row.
#[derive(Debug, Clone, Copy)]
pub struct RowMeta {
    pub op: u8,
    pub lsn: u64,
    pub version: u64,
    /// Microseconds since the Unix epoch.
    pub commit_ts: i64,
}

impl TableBuilder {
    /// `mappings` is in column order, one per column of `shape`.
    pub fn new(shape: Arc<TableShape>, mappings: &[ArrowMapping]) -> Self {
        let mut fields: Vec<Field> = shape
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), true))
            .collect();
        fields.extend(meta_fields());
        let schema = Arc::new(Schema::new(fields));
        TableBuilder {
            shape,
            schema,
            columns: mappings
                .iter()
                .map(|m| ColumnDecoder::new(m, INITIAL_ROWS))
                .collect(),
            op: UInt8Builder::with_capacity(INITIAL_ROWS),
            lsn: UInt64Builder::with_capacity(INITIAL_ROWS),
            version: UInt64Builder::with_capacity(INITIAL_ROWS),
            deleted: UInt8Builder::with_capacity(INITIAL_ROWS),
            commit_ts: TimestampMicrosecondBuilder::with_capacity(INITIAL_ROWS)
                .with_timezone("UTC"),
            unchanged: ListBuilder::new(UInt16Builder::new()).with_field(Arc::new(
                Field::new_list_field(arrow::datatypes::DataType::UInt16, false),
            )),
            rows: 0,
        }
    }

    pub fn shape(&self) -> &Arc<TableShape> {
        &self.shape
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The decoder of column `i`; append exactly one value to every column,
    /// then call [`TableBuilder::finish_row`].
    #[inline]
    pub fn column(&mut self, i: usize) -> &mut ColumnDecoder {
        &mut self.columns[i]
    }

    pub fn column_count(&self) -> usize {
        self.columns.len()
    }

    /// All column decoders, for bulk appends (the snapshot's COPY parser);
    /// follow with [`TableBuilder::finish_rows`].
    pub fn columns_mut(&mut self) -> &mut [ColumnDecoder] {
        &mut self.columns
    }

    /// Completes `n` rows whose column values were appended in bulk.
    pub fn finish_rows(&mut self, n: usize, m: RowMeta) {
        for _ in 0..n {
            self.finish_row(m, &[]);
        }
    }

    /// Completes a row whose column values were appended.
    #[inline]
    pub fn finish_row(&mut self, m: RowMeta, unchanged: &[u16]) {
        self.op.append_value(m.op);
        self.lsn.append_value(m.lsn);
        self.version.append_value(m.version);
        self.deleted.append_value((m.op == OP_DELETE) as u8);
        self.commit_ts.append_value(m.commit_ts);
        if unchanged.is_empty() {
            self.unchanged.append_null();
        } else {
            self.unchanged.values().append_slice(unchanged);
            self.unchanged.append(true);
        }
        self.rows += 1;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate bytes held (for max_bytes).
    pub fn byte_size(&self) -> usize {
        self.columns
            .iter()
            .map(|c| c.byte_size_estimate())
            .sum::<usize>()
            + self.rows * 30
    }

    /// The rows so far as one batch; the builder is empty afterwards.
    pub fn finish(&mut self) -> Option<TableBatch> {
        if self.rows == 0 {
            return None;
        }
        let mut arrays: Vec<ArrayRef> = self.columns.iter_mut().map(|c| c.finish()).collect();
        arrays.push(Arc::new(self.op.finish()));
        arrays.push(Arc::new(self.lsn.finish()));
        arrays.push(Arc::new(self.version.finish()));
        arrays.push(Arc::new(self.deleted.finish()));
        arrays.push(Arc::new(self.commit_ts.finish()));
        arrays.push(Arc::new(self.unchanged.finish()));
        self.rows = 0;
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .expect("column builders are kept aligned with the schema");
        Some(TableBatch {
            shape: self.shape.clone(),
            batch,
        })
    }
}

/// Whether a source column name would collide with a metadata column.
pub fn is_reserved_column(name: &str) -> bool {
    meta::ALL.contains(&name)
}
