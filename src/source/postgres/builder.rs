//! One table's Arrow micro-batch, built row by row: column values decoded
//! straight from wire bytes into Arrow builders, metadata columns beside.

use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{ArrayRef, StructArray, UInt64Builder};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::types::{ArrowMapping, ColumnDecoder};
use crate::core::meta::{batch_schema, column_fields, MetaBuilder, RowMeta};
use crate::core::{TableBatch, TableShape};

/// Initial capacity of a table's builders; they grow as needed.
const INITIAL_ROWS: usize = 1024;

/// Builds one table's RecordBatch row by row.
pub struct TableBuilder {
    shape: Arc<TableShape>,
    schema: SchemaRef,
    columns: Vec<ColumnDecoder>,
    meta: MetaBuilder,
    /// The `_before` column, for shapes with before images.
    before: Option<BeforeBuilder>,
    /// The `_seq` column, for shapes without a key; `next_seq` is the next
    /// row's value.
    seq: Option<UInt64Builder>,
    next_seq: u64,
}

/// The old rows of updates: one decoder per column, and which rows have one.
struct BeforeBuilder {
    columns: Vec<ColumnDecoder>,
    present: NullBufferBuilder,
}

impl TableBuilder {
    /// `mappings` is in column order, one per column of `shape`.
    pub fn new(shape: Arc<TableShape>, mappings: &[ArrowMapping]) -> Self {
        let decoders = || {
            mappings
                .iter()
                .map(|m| ColumnDecoder::new(m, INITIAL_ROWS))
                .collect()
        };
        TableBuilder {
            schema: batch_schema(&shape),
            before: shape.before_images.then(|| BeforeBuilder {
                columns: decoders(),
                present: NullBufferBuilder::new(INITIAL_ROWS),
            }),
            seq: shape
                .keyless()
                .then(|| UInt64Builder::with_capacity(INITIAL_ROWS)),
            next_seq: 0,
            shape,
            columns: decoders(),
            meta: MetaBuilder::with_capacity(INITIAL_ROWS),
        }
    }

    /// The `_seq` of the next row (rows after it count up from there).
    pub fn set_next_seq(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    fn append_seq(&mut self, n: usize) {
        if let Some(b) = &mut self.seq {
            for i in 0..n as u64 {
                b.append_value(self.next_seq.wrapping_add(i));
            }
        }
        self.next_seq = self.next_seq.wrapping_add(n as u64);
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

    /// Completes `n` rows whose column values were appended in bulk (no
    /// old rows).
    pub fn finish_rows(&mut self, n: usize, m: RowMeta) {
        self.meta.append_n(n, m);
        self.append_seq(n);
        if let Some(b) = &mut self.before {
            for _ in 0..n {
                for c in &mut b.columns {
                    c.append_null();
                }
            }
            b.present.append_n_nulls(n);
        }
    }

    /// Completes a row whose column values were appended; `unchanged` lists
    /// the columns whose value was not sent (unchanged TOAST). A shape with
    /// before images then needs [`TableBuilder::before_column`] values and
    /// [`TableBuilder::finish_before`], or [`TableBuilder::no_before`].
    #[inline]
    pub fn finish_row(&mut self, m: RowMeta, unchanged: &[u16]) {
        self.meta.append(m, unchanged);
        self.append_seq(1);
    }

    /// Whether rows take an old row (`_before`).
    pub fn has_before(&self) -> bool {
        self.before.is_some()
    }

    /// The decoder of column `i` of the old row.
    pub fn before_column(&mut self, i: usize) -> Option<&mut ColumnDecoder> {
        self.before.as_mut().map(|b| &mut b.columns[i])
    }

    /// The old row's values were appended to every `before_column`.
    pub fn finish_before(&mut self) {
        if let Some(b) = &mut self.before {
            b.present.append_non_null();
        }
    }

    /// This row has no old row.
    pub fn no_before(&mut self) {
        if let Some(b) = &mut self.before {
            for c in &mut b.columns {
                c.append_null();
            }
            b.present.append_null();
        }
    }

    pub fn rows(&self) -> usize {
        self.meta.rows()
    }

    /// Approximate bytes held (for max_bytes).
    pub fn byte_size(&self) -> usize {
        self.columns
            .iter()
            .map(|c| c.byte_size_estimate())
            .sum::<usize>()
            + self.rows() * 30
    }

    /// The rows so far as one batch; the builder is empty afterwards.
    pub fn finish(&mut self) -> Option<TableBatch> {
        if self.rows() == 0 {
            return None;
        }
        let mut arrays: Vec<ArrayRef> = self.columns.iter_mut().map(|c| c.finish()).collect();
        arrays.extend(self.meta.finish());
        if let Some(b) = &mut self.before {
            let children: Vec<ArrayRef> = b.columns.iter_mut().map(|c| c.finish()).collect();
            let before = StructArray::try_new(
                column_fields(&self.shape).into(),
                children,
                b.present.finish(),
            )
            .expect("old-row builders are kept aligned with the shape");
            arrays.push(Arc::new(before));
        }
        if let Some(b) = &mut self.seq {
            arrays.push(Arc::new(b.finish()));
        }
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .expect("column builders are kept aligned with the schema");
        Some(TableBatch {
            shape: self.shape.clone(),
            batch,
        })
    }
}
