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
    DataType, Date32Type, Decimal128Type, Float64Type, Int16Type, Int32Type, Int64Type,
    IntervalMonthDayNanoType, IntervalUnit, Time64MicrosecondType, TimeUnit,
    TimestampMicrosecondType,
};
use serde_json::Value;

use crate::core::json;
use crate::core::text::{format_interval, format_timestamp_micros};

/// One value at `row`, appended to `out` as JSON.
pub fn write(out: &mut Vec<u8>, array: &ArrayRef, row: usize) {
    if array.is_null(row) {
        out.extend_from_slice(b"null");
        return;
    }
    // The common types are written directly (no JSON value, no `fmt`, no
    // allocation in between): this runs for every column of every event.
    match array.data_type() {
        DataType::Int16 => write_int(out, array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => write_int(out, array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => write_int(out, array.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => write_float(out, array.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => {
            let v = array.as_boolean().value(row);
            out.extend_from_slice(if v { b"true" } else { b"false" });
        }
        DataType::Utf8 => write_str(out, array.as_string::<i32>().value(row)),
        DataType::Decimal128(_, scale) if *scale > 0 => {
            write_decimal(
                out,
                array.as_primitive::<Decimal128Type>().value(row),
                *scale as usize,
            );
        }
        DataType::Decimal128(_, _) => {
            write_str(
                out,
                &array.as_primitive::<Decimal128Type>().value_as_string(row),
            );
        }
        DataType::FixedSizeBinary(16) => {
            write_uuid(out, array.as_fixed_size_binary().value(row));
        }
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            let v = array.as_primitive::<TimestampMicrosecondType>().value(row);
            if v == i64::MAX || v == i64::MIN {
                write_str(out, &format_timestamp_micros(v, false));
            } else {
                write_int(out, v);
            }
        }
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
            let v = array.as_primitive::<TimestampMicrosecondType>().value(row);
            if !write_timestamp_utc(out, v) {
                write_str(out, &format_timestamp_micros(v, true));
            }
        }
        DataType::Date32 => {
            let d = array.as_primitive::<Date32Type>().value(row);
            match d {
                i32::MAX => write_str(out, "infinity"),
                i32::MIN => write_str(out, "-infinity"),
                d => write_int(out, d),
            }
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            write_int(
                out,
                array.as_primitive::<Time64MicrosecondType>().value(row),
            );
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

/// An integer as JSON, without `core::fmt`.
pub fn write_int<I: itoa::Integer>(out: &mut Vec<u8>, v: I) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(v).as_bytes());
}

/// A float as [`json::value`] renders it: a JSON number, or the text of a
/// non-finite one (JSON has no NaN or infinity).
fn write_float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        serde_json::to_writer(&mut *out, &v).expect("writing JSON to a Vec cannot fail");
    } else {
        write_str(out, &v.to_string());
    }
}

/// A decimal of `scale` > 0 digits after the point, as Arrow's
/// `value_as_string` writes it (`-0.0500`), as a JSON string.
fn write_decimal(out: &mut Vec<u8>, v: i128, scale: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(v.unsigned_abs()).as_bytes();
    out.push(b'"');
    if v < 0 {
        out.push(b'-');
    }
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + scale - digits.len(), b'0');
        out.extend_from_slice(digits);
    }
    out.push(b'"');
}

/// A UUID in its text form, as a JSON string.
fn write_uuid(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'"');
    crate::core::text::push_uuid(out, b);
    out.push(b'"');
}

/// Microseconds since the epoch as `"2024-01-31T12:00:00.000001Z"` (what
/// [`format_timestamp_micros`] writes) for years 1 to 9999; false (nothing
/// written) otherwise.
fn write_timestamp_utc(out: &mut Vec<u8>, v: i64) -> bool {
    const DAY_US: i64 = 86_400_000_000;
    let (days, rem) = (v.div_euclid(DAY_US), v.rem_euclid(DAY_US));
    let (year, month, day) = civil_from_days(days);
    if !(1..=9999).contains(&year) {
        return false;
    }
    let (secs, micros) = (rem / 1_000_000, rem % 1_000_000);
    out.push(b'"');
    push_digits(out, year, 4);
    out.push(b'-');
    push_digits(out, month, 2);
    out.push(b'-');
    push_digits(out, day, 2);
    out.push(b'T');
    push_digits(out, secs / 3600, 2);
    out.push(b':');
    push_digits(out, secs / 60 % 60, 2);
    out.push(b':');
    push_digits(out, secs % 60, 2);
    out.push(b'.');
    push_digits(out, micros, 6);
    out.extend_from_slice(b"Z\"");
    true
}

/// `v` (0 <= v < 10^width) in exactly `width` decimal digits.
fn push_digits(out: &mut Vec<u8>, v: i64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    let mut v = v;
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// (year, month, day) of the proleptic Gregorian calendar for a count of
/// days since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One value at `row` as a JSON value (for keys compared in tests and tools).
pub fn value(array: &ArrayRef, row: usize) -> Value {
    let mut out = Vec::new();
    write(&mut out, array, row);
    serde_json::from_slice(&out).expect("rendered JSON parses")
}

/// A string as JSON; most text needs no escaping and is copied as it is.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("writing JSON to a Vec cannot fail");
    }
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

    /// Bytes written by the direct paths equal the generic rendering's
    /// (`json::value`, written by serde_json), over many values.
    #[test]
    fn direct_paths_write_what_the_generic_rendering_writes() {
        fn same(a: &ArrayRef) {
            for row in 0..a.len() {
                let mut direct = Vec::new();
                write(&mut direct, a, row);
                let generic = serde_json::to_vec(&json::value(a, row)).unwrap();
                assert_eq!(
                    String::from_utf8(direct).unwrap(),
                    String::from_utf8(generic).unwrap(),
                    "{:?} row {row}",
                    a.data_type()
                );
            }
        }
        // A small deterministic generator: the same values every run.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        const YEAR_US: i64 = 31_556_952_000_000;
        let mut ts: Vec<i64> = vec![
            0,
            -1,
            1,
            -62_135_596_800_000_000, // 0001-01-01
            -62_135_596_800_000_001, // year 0: the generic path
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            253_402_300_800_000_000, // year 10000: the generic path
            951_782_400_000_000,     // 2000-02-29
            i64::MAX,
            i64::MIN,
        ];
        ts.extend(
            (0..2000).map(|_| (next() % (20_000 * YEAR_US as u64)) as i64 - 10_000 * YEAR_US),
        );
        same(&(Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")) as ArrayRef));
        for scale in [1i8, 2, 4, 9, 18, 38] {
            let mut v: Vec<i128> = vec![0, 1, -1, 5, -5, 10, -10, i128::MAX / 7, -(i128::MAX / 7)];
            v.extend((0..300).map(|_| (next() as i128) * (next() as i128 % 1000) - (1 << 60)));
            let precision = 38;
            let a = arrow::array::Decimal128Array::from(v)
                .with_precision_and_scale(precision, scale)
                .unwrap();
            same(&(Arc::new(a) as ArrayRef));
        }
        let mut uuids = arrow::array::FixedSizeBinaryBuilder::new(16);
        for _ in 0..50 {
            let b: Vec<u8> = (0..16).map(|_| next() as u8).collect();
            uuids.append_value(&b).unwrap();
        }
        same(&(Arc::new(uuids.finish()) as ArrayRef));
        let floats = arrow::array::Float64Array::from(vec![
            0.0,
            -0.0,
            1.5,
            1.0 / 7.0,
            1e300,
            -2.5e-300,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ]);
        same(&(Arc::new(floats) as ArrayRef));
        let ints = arrow::array::Int64Array::from(vec![0, -1, i64::MIN, i64::MAX, 1234567]);
        same(&(Arc::new(ints) as ArrayRef));
        let texts = arrow::array::StringArray::from(vec![
            "",
            "plain",
            "quote \" here",
            "back\\slash",
            "ctl \u{1}\u{1f}\n\t",
            "é ünïcödé \u{7f} 日本",
        ]);
        same(&(Arc::new(texts) as ArrayRef));
    }
}
