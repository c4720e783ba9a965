//! Arrow rows as JSON values (for `tail` and the Kafka envelope).

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float32Array,
    Float64Array, Int16Array, Int32Array, Int64Array, ListArray, UInt16Array, UInt32Array,
    UInt64Array, UInt8Array,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Number, Value};

use super::meta;
use super::text::{format_timestamp_micros, format_uuid};

/// One column's value at `row` as JSON. Integers and finite floats are
/// numbers; decimals stay exact strings; bytes are hex strings prefixed `\x`
/// (as PostgreSQL prints bytea); UUIDs are their canonical text.
pub fn value(array: &ArrayRef, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Boolean => Value::Bool(
            array
                .as_any()
                .downcast_ref::<BooleanArray>()
                .unwrap()
                .value(row),
        ),
        DataType::Int16 => Value::from(
            array
                .as_any()
                .downcast_ref::<Int16Array>()
                .unwrap()
                .value(row),
        ),
        DataType::Int32 => Value::from(
            array
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap()
                .value(row),
        ),
        DataType::Int64 => Value::from(
            array
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(row),
        ),
        DataType::UInt8 => Value::from(
            array
                .as_any()
                .downcast_ref::<UInt8Array>()
                .unwrap()
                .value(row),
        ),
        DataType::UInt16 => Value::from(
            array
                .as_any()
                .downcast_ref::<UInt16Array>()
                .unwrap()
                .value(row),
        ),
        DataType::UInt32 => Value::from(
            array
                .as_any()
                .downcast_ref::<UInt32Array>()
                .unwrap()
                .value(row),
        ),
        DataType::UInt64 => Value::from(
            array
                .as_any()
                .downcast_ref::<UInt64Array>()
                .unwrap()
                .value(row),
        ),
        DataType::Float32 => float(
            array
                .as_any()
                .downcast_ref::<Float32Array>()
                .unwrap()
                .value(row) as f64,
        ),
        DataType::Float64 => float(
            array
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .value(row),
        ),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_owned()),
        DataType::Binary => Value::String(hex(array
            .as_any()
            .downcast_ref::<BinaryArray>()
            .unwrap()
            .value(row))),
        DataType::FixedSizeBinary(16) => {
            let b = array
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .unwrap()
                .value(row);
            match <&[u8; 16]>::try_from(b) {
                Ok(u) => Value::String(format_uuid(u)),
                Err(_) => Value::String(hex(b)),
            }
        }
        DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, tz) => {
            let v = array
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(row);
            Value::String(format_timestamp_micros(v, tz.is_some()))
        }
        DataType::Date32 => {
            let d = array
                .as_primitive::<arrow::datatypes::Date32Type>()
                .value(row);
            Value::String(match d {
                i32::MAX => "infinity".into(),
                i32::MIN => "-infinity".into(),
                d => arrow::temporal_conversions::date32_to_datetime(d)
                    .map(|t| t.format("%Y-%m-%d").to_string())
                    .unwrap_or_else(|| d.to_string()),
            })
        }
        DataType::List(_) => {
            let list = array.as_any().downcast_ref::<ListArray>().unwrap();
            let items = list.value(row);
            Value::Array((0..items.len()).map(|i| value(&items, i)).collect())
        }
        _ => {
            let opts = FormatOptions::default();
            match ArrayFormatter::try_new(array.as_ref(), &opts) {
                Ok(f) => Value::String(f.value(row).to_string()),
                Err(_) => Value::Null,
            }
        }
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(f.to_string()))
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("\\x");
    for byte in b {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// The table's own columns of one row as a JSON object (metadata columns left out).
pub fn row_object(batch: &RecordBatch, row: usize) -> Map<String, Value> {
    let schema = batch.schema();
    let mut obj = Map::new();
    for (i, field) in schema.fields().iter().enumerate() {
        if meta::is_reserved_column(field.name()) {
            continue;
        }
        obj.insert(field.name().clone(), value(batch.column(i), row));
    }
    obj
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int32Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn row_to_json() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
            Field::new(meta::LSN, DataType::Int32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("a\"b"), Some("é")])),
                Arc::new(Float64Array::from(vec![f64::NAN, 1.5])),
                Arc::new(Int32Array::from(vec![7, 8])),
            ],
        )
        .unwrap();
        let r0 = Value::Object(row_object(&batch, 0));
        assert_eq!(r0, serde_json::json!({"id": 1, "name": "a\"b", "x": "NaN"}));
        let r1 = Value::Object(row_object(&batch, 1));
        assert_eq!(r1, serde_json::json!({"id": null, "name": "é", "x": 1.5}));
    }
}
