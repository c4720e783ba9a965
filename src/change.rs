//! The change model shared by sources and sinks: what a micro-batch carries
//! besides the table's own columns, and the units handed from source to sink.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::config::TableName;
use crate::lsn::Lsn;

/// Metadata column names. A source column with one of these names is
/// rejected (see `batch::TableSchema::new`) rather than silently shadowed.
pub mod meta {
    /// UInt8: one of the `OP_*` codes.
    pub const OP: &str = "_op";
    /// UInt64: commit LSN of the transaction.
    pub const LSN: &str = "_lsn";
    /// UInt64: ordering version. The WAL position of the change itself: for
    /// one row (one key) WAL order is commit order, because a second writer
    /// waits for the first one's row lock; snapshot rows carry the snapshot's
    /// consistent point.
    pub const VERSION: &str = "_version";
    /// UInt8: 1 for a delete.
    pub const IS_DELETED: &str = "_is_deleted";
    /// Timestamp(us, UTC): commit time.
    pub const COMMIT_TS: &str = "_commit_ts";
    /// List<UInt16>: indexes of columns whose value was not sent because it
    /// is an unchanged TOASTed value (the column itself holds NULL there).
    pub const UNCHANGED: &str = "_unchanged_cols";

    pub const ALL: [&str; 6] = [OP, LSN, VERSION, IS_DELETED, COMMIT_TS, UNCHANGED];
}

pub const OP_INSERT: u8 = b'c';
pub const OP_UPDATE: u8 = b'u';
pub const OP_DELETE: u8 = b'd';
/// A row read by a snapshot.
pub const OP_READ: u8 = b'r';

/// The Arrow fields of the metadata columns, appended after the table's columns.
pub fn meta_fields() -> Vec<Field> {
    vec![
        Field::new(meta::OP, DataType::UInt8, false),
        Field::new(meta::LSN, DataType::UInt64, false),
        Field::new(meta::VERSION, DataType::UInt64, false),
        Field::new(meta::IS_DELETED, DataType::UInt8, false),
        Field::new(
            meta::COMMIT_TS,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            meta::UNCHANGED,
            DataType::List(Arc::new(Field::new_list_field(DataType::UInt16, false))),
            true,
        ),
    ]
}

/// A column of a replicated table as the sink needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnInfo {
    pub name: String,
    /// The PostgreSQL type name (for DDL decisions and messages).
    pub pg_type: String,
    pub data_type: DataType,
    /// Part of the replica identity (the primary key, or every column
    /// under REPLICA IDENTITY FULL).
    pub is_key: bool,
    /// False for NOT NULL columns.
    pub nullable: bool,
    /// An enum type (or array/domain of one).
    pub is_enum: bool,
}

/// A table's shape: its columns in source order and which form the key.
#[derive(Debug, Clone, PartialEq)]
pub struct TableShape {
    pub table: TableName,
    pub columns: Vec<ColumnInfo>,
}

impl TableShape {
    pub fn key_columns(&self) -> impl Iterator<Item = &ColumnInfo> {
        self.columns.iter().filter(|c| c.is_key)
    }
}

/// One micro-batch of one table: its columns then the metadata columns.
#[derive(Debug, Clone)]
pub struct TableBatch {
    pub shape: Arc<TableShape>,
    pub batch: RecordBatch,
}

/// What a sink applies, in order.
#[derive(Debug, Clone)]
pub enum SinkItem {
    Rows(TableBatch),
    /// TRUNCATE of these tables: rows before it are gone, rows after it stay.
    Truncate(Vec<TableName>),
}

/// A unit of work for the sink: apply `items` in order, make them durable,
/// then record `checkpoint` (when set) as the position from which a restart
/// resumes. Every transaction that ends at or before `checkpoint` is wholly
/// contained in this or earlier flushes.
#[derive(Debug, Clone, Default)]
pub struct Flush {
    pub items: Vec<SinkItem>,
    pub checkpoint: Option<Lsn>,
}

impl Flush {
    pub fn rows(&self) -> usize {
        self.items
            .iter()
            .map(|i| match i {
                SinkItem::Rows(b) => b.batch.num_rows(),
                SinkItem::Truncate(_) => 0,
            })
            .sum()
    }
}
