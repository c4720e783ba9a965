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

    /// Memory held by the item's Arrow buffers.
    pub fn arrow_bytes(&self) -> usize {
        match self {
            SinkItem::Rows(b) => b.batch.get_array_memory_size(),
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

    /// Memory held by the flush's Arrow buffers.
    pub fn arrow_bytes(&self) -> usize {
        self.items.iter().map(SinkItem::arrow_bytes).sum()
    }

    /// Drops the items of tables `keep` rejects; see [`retain_tables`].
    pub fn retain_tables(&mut self, keep: impl Fn(&TableName) -> bool) -> usize {
        retain_tables(&mut self.items, keep)
    }

    /// Appends the flush that came after this one: its items follow ours,
    /// and its position and time (the later ones, when set) replace ours.
    pub fn absorb(&mut self, later: Flush<P>) {
        self.items.extend(later.items);
        if later.position.is_some() {
            self.position = later.position;
        }
        if later.source_time.is_some() {
            self.source_time = later.source_time;
        }
    }

    /// Joins each table's row batches into as few as possible; see
    /// [`coalesce_rows`].
    pub fn coalesce_rows(&mut self) {
        self.items = coalesce_rows(std::mem::take(&mut self.items));
    }
}

/// Joins each table's row batches of one shape into one batch, as long as
/// no truncate of that table comes between them, so that a sink writes each
/// table once per flush however many source flushes were merged into it.
/// The order of a table's rows, and of its rows and its truncates, is kept;
/// different tables' items may move relative to each other (sinks keep
/// tables apart).
pub fn coalesce_rows(items: Vec<SinkItem>) -> Vec<SinkItem> {
    enum Slot {
        Rows(Arc<TableShape>, Vec<RecordBatch>),
        Truncate(Vec<TableName>, TruncateMeta),
    }
    let mut slots: Vec<Slot> = Vec::with_capacity(items.len());
    // Per table, the slot its next batch may join.
    let mut open: std::collections::HashMap<TableName, usize> = std::collections::HashMap::new();
    for item in items {
        match item {
            SinkItem::Rows(tb) => {
                let joined = open
                    .get(&tb.shape.table)
                    .is_some_and(|&i| match &mut slots[i] {
                        Slot::Rows(shape, batches)
                            if (Arc::ptr_eq(shape, &tb.shape) || **shape == *tb.shape)
                                && batches[0].schema() == tb.batch.schema() =>
                        {
                            batches.push(tb.batch.clone());
                            true
                        }
                        _ => false,
                    });
                if !joined {
                    open.insert(tb.shape.table.clone(), slots.len());
                    slots.push(Slot::Rows(tb.shape, vec![tb.batch]));
                }
            }
            SinkItem::Truncate(tables, meta) => {
                for t in &tables {
                    open.remove(t);
                }
                slots.push(Slot::Truncate(tables, meta));
            }
        }
    }
    let mut out = Vec::with_capacity(slots.len());
    for slot in slots {
        match slot {
            Slot::Truncate(tables, meta) => out.push(SinkItem::Truncate(tables, meta)),
            Slot::Rows(shape, mut batches) if batches.len() == 1 => {
                out.push(SinkItem::Rows(TableBatch {
                    shape,
                    batch: batches.pop().expect("one batch"),
                }))
            }
            Slot::Rows(shape, batches) => {
                match arrow::compute::concat_batches(&batches[0].schema(), &batches) {
                    Ok(batch) => out.push(SinkItem::Rows(TableBatch { shape, batch })),
                    // Equal schemas always concatenate; should one not,
                    // the batches go as they came.
                    Err(_) => out.extend(batches.into_iter().map(|batch| {
                        SinkItem::Rows(TableBatch {
                            shape: shape.clone(),
                            batch,
                        })
                    })),
                }
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Int64Array};
    use arrow::datatypes::{Field, Int64Type, Schema};

    fn shape(name: &str) -> Arc<TableShape> {
        Arc::new(TableShape {
            table: TableName::new("public", name),
            columns: vec![ColumnInfo {
                name: "id".into(),
                source_type: "bigint".into(),
                logical: LogicalType::Int(64),
                data_type: DataType::Int64,
                is_key: true,
                nullable: false,
                added_default: AddedDefault::Null,
            }],
            before_images: false,
        })
    }

    fn rows(shape: &Arc<TableShape>, ids: &[i64]) -> SinkItem {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids.to_vec()))]).unwrap();
        SinkItem::Rows(TableBatch {
            shape: shape.clone(),
            batch,
        })
    }

    fn truncate(shape: &Arc<TableShape>) -> SinkItem {
        SinkItem::Truncate(vec![shape.table.clone()], TruncateMeta::default())
    }

    /// Each item as (table, ids) or ("truncate", []).
    fn describe(items: &[SinkItem]) -> Vec<(String, Vec<i64>)> {
        items
            .iter()
            .map(|i| match i {
                SinkItem::Rows(tb) => (
                    tb.shape.table.name.clone(),
                    tb.batch
                        .column(0)
                        .as_primitive::<Int64Type>()
                        .values()
                        .to_vec(),
                ),
                SinkItem::Truncate(ts, _) => (format!("truncate {}", ts[0].name), vec![]),
            })
            .collect()
    }

    #[test]
    fn merged_flushes_write_each_table_once_in_order() {
        let (a, b) = (shape("a"), shape("b"));
        let mut first = Flush {
            items: vec![rows(&a, &[1, 2]), rows(&b, &[10])],
            position: Some(5u64),
            source_time: Some(100),
        };
        let second = Flush {
            items: vec![rows(&a, &[3]), rows(&b, &[11, 12])],
            position: Some(9u64),
            source_time: Some(200),
        };
        first.absorb(second);
        first.absorb(Flush {
            items: vec![rows(&a, &[4])],
            position: None,
            source_time: None,
        });
        first.coalesce_rows();
        assert_eq!(first.position, Some(9));
        assert_eq!(first.source_time, Some(200));
        assert_eq!(
            describe(&first.items),
            vec![
                ("a".to_string(), vec![1, 2, 3, 4]),
                ("b".to_string(), vec![10, 11, 12])
            ]
        );
        assert_eq!(first.rows(), 7);
    }

    #[test]
    fn a_truncate_keeps_its_tables_rows_on_either_side() {
        let (a, b) = (shape("a"), shape("b"));
        let items = vec![
            rows(&a, &[1]),
            rows(&b, &[10]),
            truncate(&a),
            rows(&a, &[2]),
            rows(&b, &[11]),
            rows(&a, &[3]),
        ];
        assert_eq!(
            describe(&coalesce_rows(items)),
            vec![
                ("a".to_string(), vec![1]),
                ("b".to_string(), vec![10, 11]),
                ("truncate a".to_string(), vec![]),
                ("a".to_string(), vec![2, 3]),
            ]
        );
    }

    #[test]
    fn batches_of_different_shapes_stay_apart() {
        let a = shape("a");
        let mut wider = (*a).clone();
        wider.columns.push(ColumnInfo {
            name: "v".into(),
            ..a.columns[0].clone()
        });
        let wider = Arc::new(wider);
        let items = vec![rows(&a, &[1]), rows(&wider, &[2]), rows(&wider, &[3])];
        let out = coalesce_rows(items);
        assert_eq!(
            describe(&out),
            vec![("a".to_string(), vec![1]), ("a".to_string(), vec![2, 3])]
        );
        let SinkItem::Rows(tb) = &out[1] else {
            panic!("rows")
        };
        assert!(Arc::ptr_eq(&tb.shape, &wider));
        assert_eq!(tb.batch.column(0).len(), 2);
    }
}
