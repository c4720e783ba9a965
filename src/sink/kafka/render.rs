//! Column values as Debezium's PostgreSQL connector renders them with its
//! default settings, where its consumers rely on the form (the table in
//! `docs/kafka-sink.md`); everything else as [`crate::core::json::value`].
//!
//! | Arrow carrier | JSON | Debezium's name |
//! |---|---|---|
//! | Timestamp(us) without zone | integer, microseconds since the epoch | `io.debezium.time.MicroTimestamp` |
//! | Timestamp(us, UTC) | string, ISO 8601 with `Z` | `io.debezium.time.ZonedTimestamp` |
//! | Date32 | integer, days since the epoch | `io.debezium.time.Date` |
//! | Time64(us) | integer, microseconds since midnight | `io.debezium.time.MicroTime` |
//! | Interval | string, ISO 8601 duration | `interval.handling.mode=string` |
//! | Decimal | string, exact | `decimal.handling.mode=string` |
//! | List | JSON array of the elements rendered the same way | array |
//!
//! Infinite timestamps and dates keep PostgreSQL's `infinity` /
//! `-infinity` text (Debezium has no number for them either).

use arrow::array::{Array, ArrayRef, AsArray, ListArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Int16Type, Int32Type, Int64Type,
    IntervalMonthDayNanoType, IntervalUnit, Time64MicrosecondType, TimeUnit,
    TimestampMicrosecondType,
};
use serde_json::Value;

use crate::core::json;
use crate::core::text::{format_interval, format_timestamp_micros};

/// One value at `row`, appended to `out` as JSON.
pub fn write(out: &mut Vec<u8>, array: &ArrayRef, row: usize) {
    use std::io::Write;
    if array.is_null(row) {
        out.extend_from_slice(b"null");
        return;
    }
    // The common types are written directly (no JSON value in between):
    // this runs for every column of every event.
    match array.data_type() {
        DataType::Int16 => {
            let _ = write!(out, "{}", array.as_primitive::<Int16Type>().value(row));
        }
        DataType::Int32 => {
            let _ = write!(out, "{}", array.as_primitive::<Int32Type>().value(row));
        }
        DataType::Int64 => {
            let _ = write!(out, "{}", array.as_primitive::<Int64Type>().value(row));
        }
        DataType::Boolean => {
            let v = array.as_boolean().value(row);
            out.extend_from_slice(if v { b"true" } else { b"false" });
        }
        DataType::Utf8 => write_str(out, array.as_string::<i32>().value(row)),
        DataType::Decimal128(_, _) => {
            write_str(
                out,
                &array.as_primitive::<Decimal128Type>().value_as_string(row),
            );
        }
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            let v = array.as_primitive::<TimestampMicrosecondType>().value(row);
            if v == i64::MAX || v == i64::MIN {
                write_str(out, &format_timestamp_micros(v, false));
            } else {
                let _ = write!(out, "{v}");
            }
        }
        DataType::Date32 => {
            let d = array.as_primitive::<Date32Type>().value(row);
            match d {
                i32::MAX => write_str(out, "infinity"),
                i32::MIN => write_str(out, "-infinity"),
                d => {
                    let _ = write!(out, "{d}");
                }
            }
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            let v = array.as_primitive::<Time64MicrosecondType>().value(row);
            let _ = write!(out, "{v}");
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = array.as_primitive::<IntervalMonthDayNanoType>().value(row);
            write_str(out, &format_interval(v));
        }
        DataType::List(_) => {
            let list = array
                .as_any()
                .downcast_ref::<ListArray>()
                .expect("List is a ListArray");
            let items = list.value(row);
            out.push(b'[');
            for i in 0..items.len() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, &items, i);
            }
            out.push(b']');
        }
        _ => {
            let v = json::value(array, row);
            serde_json::to_writer(&mut *out, &v).expect("writing JSON to a Vec cannot fail");
        }
    }
}

/// One value at `row` as a JSON value (for keys compared in tests and tools).
pub fn value(array: &ArrayRef, row: usize) -> Value {
    let mut out = Vec::new();
    write(&mut out, array, row);
    serde_json::from_slice(&out).expect("rendered JSON parses")
}

pub fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing JSON to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        Date32Array, Int32Builder, IntervalMonthDayNanoArray, ListBuilder, Time64MicrosecondArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::IntervalMonthDayNano;
    use serde_json::json;

    use super::*;

    #[test]
    fn debezium_forms() {
        let ts: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![
            1_706_702_400_000_001,
            i64::MAX,
        ]));
        assert_eq!(value(&ts, 0), json!(1_706_702_400_000_001i64));
        assert_eq!(value(&ts, 1), json!("infinity"));
        let tz: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![1_706_702_400_000_001]).with_timezone("UTC"),
        );
        assert_eq!(value(&tz, 0), json!("2024-01-31T12:00:00.000001Z"));
        let d: ArrayRef = Arc::new(Date32Array::from(vec![Some(19753), None, Some(i32::MIN)]));
        assert_eq!(value(&d, 0), json!(19753));
        assert_eq!(value(&d, 1), Value::Null);
        assert_eq!(value(&d, 2), json!("-infinity"));
        let t: ArrayRef = Arc::new(Time64MicrosecondArray::from(vec![3_600_000_001]));
        assert_eq!(value(&t, 0), json!(3_600_000_001i64));
        let iv: ArrayRef = Arc::new(IntervalMonthDayNanoArray::from(vec![
            IntervalMonthDayNano {
                months: 1,
                days: 2,
                nanoseconds: 3_000_000_000,
            },
        ]));
        assert_eq!(value(&iv, 0), json!("P1M2DT3S"));
        let mut lb = ListBuilder::new(Int32Builder::new());
        lb.values().append_value(1);
        lb.values().append_null();
        lb.append(true);
        let l: ArrayRef = Arc::new(lb.finish());
        assert_eq!(value(&l, 0), json!([1, null]));
        // The direct paths agree with the generic rendering.
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(arrow::array::Int16Array::from(vec![-3])),
            Arc::new(arrow::array::Int32Array::from(vec![i32::MIN])),
            Arc::new(arrow::array::Int64Array::from(vec![i64::MAX])),
            Arc::new(arrow::array::BooleanArray::from(vec![true])),
            Arc::new(arrow::array::StringArray::from(vec!["a\"b\n\u{1}é"])),
            Arc::new(
                arrow::array::Decimal128Array::from(vec![-5])
                    .with_precision_and_scale(10, 4)
                    .unwrap(),
            ),
        ];
        for a in &arrays {
            assert_eq!(value(a, 0), json::value(a, 0), "{:?}", a.data_type());
        }
    }
}
