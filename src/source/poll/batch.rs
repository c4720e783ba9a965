//! Pure: a polled table's column arrays -> a batch with the metadata
//! columns. Every row is the row's current state (op `r`, or `d` when the
//! soft-delete flag is set); `_version` and `_lsn` are the cursor (or the
//! configured version column), mapped order-preservingly to `u64`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::datatypes::{
    DataType, Int16Type, Int32Type, Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow::record_batch::RecordBatch;

use super::watermark::{version_of, CursorKind};
use crate::core::meta::{batch_schema, MetaBuilder, RowMeta, OP_DELETE, OP_READ};
use crate::core::{TableBatch, TableShape};

/// Where the cursor and the version are among a table's columns.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub cursor: usize,
    pub kind: CursorKind,
    /// The version column when it is not the cursor.
    pub version: Option<usize>,
}

/// Value `row` of an integer or timestamp column as `i64` (timestamps in
/// microseconds, rounded down); `None` for NULL or another type.
pub fn value_at(a: &dyn Array, row: usize) -> Option<i64> {
    if a.is_null(row) {
        return None;
    }
    let ts = |v: i64, unit: &TimeUnit| {
        let (mul, div) = CursorKind::micros_per(unit);
        v.saturating_mul(mul).div_euclid(div)
    };
    Some(match a.data_type() {
        DataType::Int8 => a.as_primitive::<Int8Type>().value(row) as i64,
        DataType::Int16 => a.as_primitive::<Int16Type>().value(row) as i64,
        DataType::Int32 => a.as_primitive::<Int32Type>().value(row) as i64,
        DataType::Int64 => a.as_primitive::<Int64Type>().value(row),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(row) as i64,
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(row) as i64,
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(row) as i64,
        DataType::UInt64 => i64::try_from(a.as_primitive::<UInt64Type>().value(row)).ok()?,
        DataType::Timestamp(u @ TimeUnit::Second, _) => {
            ts(a.as_primitive::<TimestampSecondType>().value(row), u)
        }
        DataType::Timestamp(u @ TimeUnit::Millisecond, _) => {
            ts(a.as_primitive::<TimestampMillisecondType>().value(row), u)
        }
        DataType::Timestamp(u @ TimeUnit::Microsecond, _) => {
            ts(a.as_primitive::<TimestampMicrosecondType>().value(row), u)
        }
        DataType::Timestamp(u @ TimeUnit::Nanosecond, _) => {
            ts(a.as_primitive::<TimestampNanosecondType>().value(row), u)
        }
        _ => return None,
    })
}

/// Builds the batch of `columns` (the table's columns in `shape` order) and
/// returns it with the last row's cursor. `deleted`: the soft-delete flag
/// per row (NULL is not deleted). `now`: commit time for integer cursors.
pub fn assemble(
    shape: &Arc<TableShape>,
    columns: Vec<ArrayRef>,
    layout: Layout,
    deleted: Option<&BooleanArray>,
    now: i64,
) -> Result<(TableBatch, Option<i64>), String> {
    let rows = columns.first().map_or(0, |c| c.len());
    let cursor = &columns[layout.cursor];
    let version = layout.version.map(|i| &columns[i]).unwrap_or(cursor);
    let mut meta = MetaBuilder::with_capacity(rows);
    for row in 0..rows {
        let c = value_at(cursor.as_ref(), row);
        let v = value_at(version.as_ref(), row).ok_or_else(|| {
            let name = &shape.columns[layout.version.unwrap_or(layout.cursor)].name;
            format!(
                "column \"{name}\" is NULL (or out of range) in a row; its version cannot be told"
            )
        })?;
        let gone = deleted.is_some_and(|d| d.is_valid(row) && d.value(row));
        let commit_ts = match (layout.kind, c) {
            (CursorKind::Micros, Some(c)) => c,
            _ => now,
        };
        meta.append(
            RowMeta {
                op: if gone { OP_DELETE } else { OP_READ },
                lsn: version_of(v),
                version: version_of(v),
                commit_ts,
            },
            &[],
        );
    }
    let last = rows
        .checked_sub(1)
        .and_then(|r| value_at(cursor.as_ref(), r));
    let mut arrays = columns;
    arrays.extend(meta.finish());
    let batch = RecordBatch::try_new(batch_schema(shape), arrays).map_err(|e| e.to_string())?;
    Ok((
        TableBatch {
            shape: shape.clone(),
            batch,
        },
        last,
    ))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::UInt8Type;

    use super::*;
    use crate::config::TableName;
    use crate::core::meta::{IS_DELETED, VERSION};
    use crate::core::{ColumnInfo, LogicalType};

    fn shape() -> Arc<TableShape> {
        let col = |name: &str, t: DataType, key: bool| ColumnInfo {
            name: name.into(),
            source_type: "x".into(),
            logical: LogicalType::from_arrow(&t),
            data_type: t,
            is_key: key,
            nullable: !key,
            added_default: Default::default(),
        };
        Arc::new(TableShape {
            table: TableName::new("s", "t"),
            columns: vec![
                col("id", DataType::Int64, true),
                col("name", DataType::Utf8, false),
                col(
                    "updated_at",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
            ],
            before_images: false,
        })
    }

    #[test]
    fn versions_are_cursors_and_deletes_are_flagged() {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec!["a", "b", "c"])),
            Arc::new(TimestampMicrosecondArray::from(vec![-5, 10, 10]).with_timezone("UTC")),
        ];
        let deleted = BooleanArray::from(vec![Some(false), None, Some(true)]);
        let layout = Layout {
            cursor: 2,
            kind: CursorKind::Micros,
            version: None,
        };
        let (b, last) = assemble(&shape(), cols, layout, Some(&deleted), 99).unwrap();
        assert_eq!(last, Some(10));
        let v = b
            .batch
            .column_by_name(VERSION)
            .unwrap()
            .as_primitive::<UInt64Type>();
        assert_eq!(
            v.values().to_vec(),
            vec![version_of(-5), version_of(10), version_of(10)]
        );
        assert!(v.value(0) < v.value(1));
        let d = b
            .batch
            .column_by_name(IS_DELETED)
            .unwrap()
            .as_primitive::<UInt8Type>();
        assert_eq!(d.values().to_vec(), vec![0, 0, 1]);
    }

    #[test]
    fn a_null_version_is_an_error() {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(StringArray::from(vec!["a"])),
            Arc::new(TimestampMicrosecondArray::from(vec![None::<i64>]).with_timezone("UTC")),
        ];
        let layout = Layout {
            cursor: 2,
            kind: CursorKind::Micros,
            version: None,
        };
        let e = assemble(&shape(), cols, layout, None, 0).unwrap_err();
        assert!(e.contains("updated_at"), "{e}");
    }

    #[test]
    fn timestamps_in_other_units_become_micros() {
        let a = arrow::array::TimestampNanosecondArray::from(vec![1_999, -1]);
        assert_eq!(value_at(&a, 0), Some(1));
        assert_eq!(value_at(&a, 1), Some(-1), "rounded down, never up");
        let a = arrow::array::TimestampSecondArray::from(vec![2]);
        assert_eq!(value_at(&a, 0), Some(2_000_000));
        let a = arrow::array::UInt64Array::from(vec![u64::MAX]);
        assert_eq!(value_at(&a, 0), None);
    }
}
