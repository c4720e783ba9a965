//! The metadata columns every micro-batch carries after the table's own
//! columns, and the builder that appends them row by row. Sources build the
//! table's columns their own way (decoders straight into Arrow builders, or
//! arrays read as they are) and this builder next to them.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, ListBuilder, TimestampMicrosecondBuilder, UInt16Builder, UInt64Builder, UInt8Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::change::TableShape;

/// UInt8: one of the `OP_*` codes.
pub const OP: &str = "_op";
/// UInt64: commit position of the transaction (PostgreSQL: commit LSN).
pub const LSN: &str = "_lsn";
/// UInt64: ordering version. For PostgreSQL the WAL position of the change
/// itself: for one row (one key) WAL order is commit order, because a second
/// writer waits for the first one's row lock; snapshot rows carry the
/// snapshot's consistent point.
pub const VERSION: &str = "_version";
/// UInt8: 1 for a delete.
pub const IS_DELETED: &str = "_is_deleted";
/// Timestamp(us, UTC): commit time.
pub const COMMIT_TS: &str = "_commit_ts";
/// List<UInt16>: indexes of columns whose value was not sent because it is
/// an unchanged TOASTed value (the column itself holds NULL there).
pub const UNCHANGED: &str = "_unchanged_cols";

/// Struct of the table's columns, only in batches of tables whose shape has
/// `before_images`: the whole old row of an update (REPLICA IDENTITY FULL),
/// NULL for other rows (a delete's old row is the row itself).
pub const BEFORE: &str = "_before";

/// UInt64, only in batches of tables without a key (last column): with
/// `_lsn`, a unique and replay-stable id of the row, so a multiset keeps
/// duplicate rows apart. Stream rows: the ordinal of the table's change in its
/// transaction (an update of such a table is a delete of the old row and
/// an insert, two ordinals). Copied rows: [`SEQ_COPY`] | a hash of the copy
/// unit << 32 | the row's ordinal in the unit.
pub const SEQ: &str = "_seq";
/// Set in the `_seq` of copied rows (never reached by a transaction's ordinal).
pub const SEQ_COPY: u64 = 1 << 63;

/// The metadata columns every batch has, in order.
pub const ALL: [&str; 6] = [OP, LSN, VERSION, IS_DELETED, COMMIT_TS, UNCHANGED];

pub const OP_INSERT: u8 = b'c';
pub const OP_UPDATE: u8 = b'u';
pub const OP_DELETE: u8 = b'd';
/// A row read by a snapshot.
pub const OP_READ: u8 = b'r';

/// Whether a source column name would collide with a metadata column (such
/// a column is rejected, never silently shadowed).
pub fn is_reserved_column(name: &str) -> bool {
    ALL.contains(&name) || name == BEFORE || name == SEQ
}

/// The Arrow fields of the metadata columns, appended after the table's columns.
pub fn meta_fields() -> Vec<Field> {
    vec![
        Field::new(OP, DataType::UInt8, false),
        Field::new(LSN, DataType::UInt64, false),
        Field::new(VERSION, DataType::UInt64, false),
        Field::new(IS_DELETED, DataType::UInt8, false),
        Field::new(
            COMMIT_TS,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            UNCHANGED,
            DataType::List(Arc::new(Field::new_list_field(DataType::UInt16, false))),
            true,
        ),
    ]
}

/// The schema of a table's batches: its columns (all nullable in Arrow;
/// NOT NULL is the shape's business), then the metadata columns, then
/// `_before` when the shape has before images, then `_seq` when it has no
/// key.
pub fn batch_schema(shape: &TableShape) -> SchemaRef {
    let columns = column_fields(shape);
    let mut fields = columns.clone();
    fields.extend(meta_fields());
    if shape.before_images {
        fields.push(Field::new(BEFORE, DataType::Struct(columns.into()), true));
    }
    if shape.keyless() {
        fields.push(Field::new(SEQ, DataType::UInt64, false));
    }
    Arc::new(Schema::new(fields))
}

/// The Arrow fields of the table's own columns.
pub fn column_fields(shape: &TableShape) -> Vec<Field> {
    shape
        .columns
        .iter()
        .map(|c| Field::new(&c.name, c.data_type.clone(), true))
        .collect()
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

/// Appends the metadata columns, one row at a time.
pub struct MetaBuilder {
    op: UInt8Builder,
    lsn: UInt64Builder,
    version: UInt64Builder,
    deleted: UInt8Builder,
    commit_ts: TimestampMicrosecondBuilder,
    unchanged: ListBuilder<UInt16Builder>,
    rows: usize,
}

impl MetaBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        MetaBuilder {
            op: UInt8Builder::with_capacity(rows),
            lsn: UInt64Builder::with_capacity(rows),
            version: UInt64Builder::with_capacity(rows),
            deleted: UInt8Builder::with_capacity(rows),
            commit_ts: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            unchanged: ListBuilder::new(UInt16Builder::new())
                .with_field(Arc::new(Field::new_list_field(DataType::UInt16, false))),
            rows: 0,
        }
    }

    /// One row; `unchanged` lists the columns whose value was not sent.
    #[inline]
    pub fn append(&mut self, m: RowMeta, unchanged: &[u16]) {
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

    /// `n` rows with the same metadata and every value sent (snapshots, polls).
    pub fn append_n(&mut self, n: usize, m: RowMeta) {
        self.op.append_value_n(m.op, n);
        self.lsn.append_value_n(m.lsn, n);
        self.version.append_value_n(m.version, n);
        self.deleted.append_value_n((m.op == OP_DELETE) as u8, n);
        for _ in 0..n {
            self.commit_ts.append_value(m.commit_ts);
        }
        self.unchanged.append_nulls(n);
        self.rows += n;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The metadata arrays in [`ALL`] order; the builder is empty afterwards.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.rows = 0;
        vec![
            Arc::new(self.op.finish()),
            Arc::new(self.lsn.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.deleted.finish()),
            Arc::new(self.commit_ts.finish()),
            Arc::new(self.unchanged.finish()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::UInt8Type;

    use super::*;

    #[test]
    fn appends_rows_and_runs() {
        let mut b = MetaBuilder::with_capacity(4);
        let m = RowMeta {
            op: OP_DELETE,
            lsn: 7,
            version: 9,
            commit_ts: 1,
        };
        b.append(m, &[2]);
        b.append_n(2, RowMeta { op: OP_READ, ..m });
        assert_eq!(b.rows(), 3);
        let arrays = b.finish();
        assert_eq!(arrays.len(), ALL.len());
        let deleted = arrays[3].as_primitive::<UInt8Type>();
        assert_eq!(deleted.values().to_vec(), vec![1, 0, 0]);
        assert!(!arrays[5].is_null(0) && arrays[5].is_null(1));
        assert_eq!(b.rows(), 0);
    }
}
