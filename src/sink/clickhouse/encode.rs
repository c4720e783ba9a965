//! Re-shapes a source micro-batch into the Arrow batch ClickHouse's ArrowStream
//! input takes as is (`stream.rs` writes it as an Arrow IPC stream).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, FixedSizeBinaryArray, Int64Array, ListArray,
    StringArray, TimestampMicrosecondArray, UInt8Array,
};
use arrow::datatypes::{
    DataType, Date32Type, Field, IntervalMonthDayNanoType, Schema, Time64MicrosecondType,
    TimestampMicrosecondType, UInt8Type,
};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::types::{ColumnPlan, Enc, ServerCaps};
use crate::core::meta;
use crate::core::text::{format_interval, format_uuid};

/// Values moved to the edge of the server's range (counted for a warning).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Clamped {
    pub dates: usize,
    pub timestamps: usize,
}

/// The ClickHouse-shaped batch and a map from its columns back to the source.
pub struct Encoded {
    pub batch: RecordBatch,
    /// For each column of `batch`: the source column index it comes from
    /// (`None` for metadata columns).
    pub origin: Vec<Option<usize>>,
    pub clamped: Clamped,
}

/// Builds the batch to insert: every planned column (plus NULL flags), then
/// `_version`, `_is_deleted`, `_lsn`, then the `extra` metadata columns
/// (`_op`, `_seq`).
pub fn encode(
    src: &RecordBatch,
    plans: &[ColumnPlan],
    caps: &ServerCaps,
    extra: &[&str],
) -> Result<Encoded, ArrowError> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut origin = Vec::new();
    let mut clamped = Clamped::default();
    for p in plans {
        let a = src.column(p.source_index);
        let out = encode_array(a, &p.enc, caps, &mut clamped)?;
        fields.push(Field::new(&p.name, out.data_type().clone(), true));
        columns.push(out);
        origin.push(Some(p.source_index));
        if let Some(flag) = &p.null_flag {
            let nulls: UInt8Array = (0..a.len()).map(|i| Some(a.is_null(i) as u8)).collect();
            fields.push(Field::new(flag, DataType::UInt8, false));
            columns.push(Arc::new(nulls));
            origin.push(Some(p.source_index));
        }
    }
    let mut metas = vec![meta::VERSION, meta::IS_DELETED, meta::LSN];
    metas.extend_from_slice(extra);
    for m in metas {
        let a = src
            .column_by_name(m)
            .ok_or_else(|| ArrowError::SchemaError(format!("batch lacks the {m} column")))?;
        let a = if m == meta::OP {
            encode_array(a, &Enc::OpCode, caps, &mut clamped)?
        } else {
            a.clone()
        };
        fields.push(Field::new(m, a.data_type().clone(), false));
        columns.push(a);
        origin.push(None);
    }
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(src.num_rows())),
    )?;
    Ok(Encoded {
        batch,
        origin,
        clamped,
    })
}

fn encode_array(
    a: &ArrayRef,
    enc: &Enc,
    caps: &ServerCaps,
    clamped: &mut Clamped,
) -> Result<ArrayRef, ArrowError> {
    Ok(match enc {
        Enc::Pass => a.clone(),
        Enc::Date32 => {
            let d = a.as_primitive::<Date32Type>();
            let out: Date32Array = d
                .iter()
                .map(|v| {
                    v.map(|v| {
                        let c = v.clamp(caps.date32_min, caps.date32_max);
                        clamped.dates += (c != v) as usize;
                        c
                    })
                })
                .collect();
            Arc::new(out)
        }
        Enc::Timestamp => {
            let t = a.as_primitive::<TimestampMicrosecondType>();
            let out: TimestampMicrosecondArray = t
                .iter()
                .map(|v| {
                    v.map(|v| {
                        let c = v.clamp(caps.dt64_min, caps.dt64_max);
                        clamped.timestamps += (c != v) as usize;
                        c
                    })
                })
                .collect();
            Arc::new(out.with_timezone("UTC"))
        }
        Enc::Uuid => {
            let u = a
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .ok_or_else(|| ArrowError::CastError("uuid is not FixedSizeBinary".into()))?;
            let out: StringArray = (0..u.len())
                .map(|i| u.is_valid(i).then(|| format_uuid(u.value(i))))
                .collect();
            Arc::new(out)
        }
        Enc::Interval => {
            let iv = a.as_primitive::<IntervalMonthDayNanoType>();
            let out: StringArray = iv.iter().map(|v| v.map(format_interval)).collect();
            Arc::new(out)
        }
        Enc::TimeAsInt64 => {
            let t = a.as_primitive::<Time64MicrosecondType>();
            let out: Int64Array = t.iter().collect();
            Arc::new(out)
        }
        Enc::JsonNotNull => {
            let s = a.as_string::<i32>();
            let out: StringArray = s.iter().map(|v| Some(v.unwrap_or("{}"))).collect();
            Arc::new(out)
        }
        Enc::OpCode => {
            let o = a.as_primitive::<UInt8Type>();
            let out: StringArray = o
                .iter()
                .map(|v| v.map(|c| (c as char).to_string()))
                .collect();
            Arc::new(out)
        }
        Enc::Text => arrow::compute::cast(a, &DataType::Utf8)?,
        Enc::List(inner) => {
            if **inner == Enc::Pass {
                return Ok(a.clone());
            }
            let l = a
                .as_any()
                .downcast_ref::<ListArray>()
                .ok_or_else(|| ArrowError::CastError("array is not a List".into()))?;
            let values = encode_array(l.values(), inner, caps, clamped)?;
            let field = Arc::new(Field::new("item", values.data_type().clone(), true));
            Arc::new(ListArray::try_new(
                field,
                l.offsets().clone(),
                values,
                l.nulls().cloned(),
            )?)
        }
    })
}
