//! The units handed from source to sink: one table's micro-batch (its
//! columns, then the metadata columns of [`super::meta`]), truncates, and
//! the flush that groups them with the position they make safe.

use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use super::logical::LogicalType;
use crate::config::TableName;

/// A column of a replicated table as sinks need to know it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnInfo {
    pub name: String,
    /// The source's own type name (`jsonb`, `numeric(10,2)`, ...): for
    /// messages and the schema record, never for decisions.
    pub source_type: String,
    /// What the values mean; sinks decide their column types from this.
    pub logical: LogicalType,
    /// The Arrow type the values are carried in.
    pub data_type: DataType,
    /// Part of the key that identifies a row.
    pub is_key: bool,
    /// False for NOT NULL columns.
    pub nullable: bool,
    /// What rows written before the column existed hold in it.
    pub added_default: AddedDefault,
}

/// What the rows that existed before a column was added hold in it
/// (PostgreSQL: `ADD COLUMN ... DEFAULT`), which no row change ever sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AddedDefault {
    /// NULL (or the source does not say: a copy writes every row).
    #[default]
    Null,
    /// One constant, in the source's text form.
    Constant(String),
    /// A value of its own per row (a volatile default rewrote the table).
    PerRow,
}

/// A table's shape: its columns in source order and which form the key.
#[derive(Debug, Clone, PartialEq)]
pub struct TableShape {
    pub table: TableName,
    pub columns: Vec<ColumnInfo>,
    /// Batches carry the whole old row of updates in the `_before` column
    /// (PostgreSQL: REPLICA IDENTITY FULL).
    pub before_images: bool,
}

impl TableShape {
    pub fn key_columns(&self) -> impl Iterator<Item = &ColumnInfo> {
        self.columns.iter().filter(|c| c.is_key)
    }

    /// No column identifies a row: the table is a multiset, and its batches
    /// carry `_seq` (see [`super::meta::SEQ`]).
    pub fn keyless(&self) -> bool {
        !self.columns.iter().any(|c| c.is_key)
    }

    /// `name type` per column, as the state store records a schema.
    pub fn describe_columns(&self) -> Vec<String> {
        self.columns
            .iter()
            .map(|c| format!("{} {}", c.name, c.source_type))
            .collect()
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
    Truncate(Vec<TableName>, TruncateMeta),
}

/// Where a truncate happened, in the terms of the rows' metadata columns
/// (`_lsn`, `_version`, `_commit_ts`): sinks that send it on (Kafka) let
/// consumers recognise a replayed one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TruncateMeta {
    /// Commit position of the transaction.
    pub lsn: u64,
    /// The truncate's own position (ordered with the rows' `_version`).
    pub version: u64,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_ts: i64,
}

impl SinkItem {
    pub fn rows(&self) -> usize {
        match self {
            SinkItem::Rows(b) => b.batch.num_rows(),
            SinkItem::Truncate(..) => 0,
        }
    }
}

/// A unit of work for the sink: apply `items` in order and make them
/// durable; then `position` (when set) is where a restart resumes. Every
/// source transaction that ends at or before `position` is wholly contained
/// in this or earlier flushes.
#[derive(Debug, Clone)]
pub struct Flush<P> {
    pub items: Vec<SinkItem>,
    pub position: Option<P>,
    /// When set, the source's changes up to this moment (Unix microseconds,
    /// the source's clock) are in this or earlier flushes: the commit time
    /// of the last whole transaction, or a caught-up source's clock. For
    /// lag in seconds.
    pub source_time: Option<i64>,
}

impl<P> Default for Flush<P> {
    fn default() -> Self {
        Flush {
            items: Vec::new(),
            position: None,
            source_time: None,
        }
    }
}

impl<P> Flush<P> {
    pub fn rows(&self) -> usize {
        self.items.iter().map(SinkItem::rows).sum()
    }

    /// Drops the items of tables `keep` rejects; see [`retain_tables`].
    pub fn retain_tables(&mut self, keep: impl Fn(&TableName) -> bool) -> usize {
        retain_tables(&mut self.items, keep)
    }
}

/// Drops the items (or the parts of truncates) of tables `keep` rejects.
/// Returns how many rows were dropped.
pub fn retain_tables(items: &mut Vec<SinkItem>, keep: impl Fn(&TableName) -> bool) -> usize {
    let mut dropped = 0;
    items.retain_mut(|item| match item {
        SinkItem::Rows(b) => {
            let k = keep(&b.shape.table);
            if !k {
                dropped += b.batch.num_rows();
            }
            k
        }
        SinkItem::Truncate(ts, _) => {
            ts.retain(|t| keep(t));
            !ts.is_empty()
        }
    });
    dropped
}
