//! Source-neutral column types: what a value means, independent of which
//! source produced it. Sinks decide their DDL from this (plus the Arrow type
//! for the physical encoding); the source's own type name travels beside it
//! for messages only.

use arrow::datatypes::{DataType, IntervalUnit, TimeUnit};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogicalType {
    Boolean,
    /// Signed integer of this many bits.
    Int(u8),
    /// Unsigned integer of this many bits.
    UInt(u8),
    /// Floating point of this many bits.
    Float(u8),
    /// Exact decimal.
    Decimal {
        precision: u8,
        scale: i8,
    },
    Text,
    /// JSON document, carried as its text.
    Json,
    /// One label of a fixed set, carried as text.
    Enum,
    Bytes,
    Uuid,
    Date,
    /// Time of day, microseconds.
    Time,
    /// Microseconds; `utc` for an instant, false for a wall-clock time.
    Timestamp {
        utc: bool,
    },
    Interval,
    Array(Box<LogicalType>),
    /// A type with no native mapping, carried as the source's text form.
    Other,
}

impl LogicalType {
    /// The plain meaning of an Arrow type (no JSON/enum knowledge).
    pub fn from_arrow(dt: &DataType) -> LogicalType {
        match dt {
            DataType::Boolean => LogicalType::Boolean,
            DataType::Int8 => LogicalType::Int(8),
            DataType::Int16 => LogicalType::Int(16),
            DataType::Int32 => LogicalType::Int(32),
            DataType::Int64 => LogicalType::Int(64),
            DataType::UInt8 => LogicalType::UInt(8),
            DataType::UInt16 => LogicalType::UInt(16),
            DataType::UInt32 => LogicalType::UInt(32),
            DataType::UInt64 => LogicalType::UInt(64),
            DataType::Float32 => LogicalType::Float(32),
            DataType::Float64 => LogicalType::Float(64),
            DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => LogicalType::Decimal {
                precision: *p,
                scale: *s,
            },
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => LogicalType::Text,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => LogicalType::Bytes,
            DataType::FixedSizeBinary(16) => LogicalType::Uuid,
            DataType::Date32 => LogicalType::Date,
            DataType::Time64(TimeUnit::Microsecond) => LogicalType::Time,
            DataType::Timestamp(_, tz) => LogicalType::Timestamp { utc: tz.is_some() },
            DataType::Interval(IntervalUnit::MonthDayNano) => LogicalType::Interval,
            DataType::List(f) | DataType::LargeList(f) => {
                LogicalType::Array(Box::new(LogicalType::from_arrow(f.data_type())))
            }
            _ => LogicalType::Other,
        }
    }

    /// The element type of an array (recursively), else the type itself.
    pub fn scalar(&self) -> &LogicalType {
        match self {
            LogicalType::Array(e) => e.scalar(),
            t => t,
        }
    }

    pub fn is_json(&self) -> bool {
        *self.scalar() == LogicalType::Json
    }

    pub fn is_enum(&self) -> bool {
        *self.scalar() == LogicalType::Enum
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::Field;

    use super::*;

    #[test]
    fn arrays_look_through_to_their_elements() {
        let dt = DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true)));
        let t = LogicalType::from_arrow(&dt);
        assert_eq!(t, LogicalType::Array(Box::new(LogicalType::Int(32))));
        assert_eq!(t.scalar(), &LogicalType::Int(32));
        assert!(LogicalType::Array(Box::new(LogicalType::Json)).is_json());
        assert!(!LogicalType::Text.is_enum());
    }
}
