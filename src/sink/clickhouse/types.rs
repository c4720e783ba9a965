//! Source column (logical type + Arrow type) -> ClickHouse column type, and
//! which ClickHouse types an existing column may change into.
//!
//! The mapping table lives in `docs/clickhouse-sink.md`; the type strings are
//! written exactly as ClickHouse prints them in `system.columns`, so an
//! existing table is compared by string equality first.

use arrow::datatypes::{DataType, IntervalUnit, TimeUnit};

use crate::config::JsonType;
use crate::core::{AddedDefault, ColumnInfo};

/// Engine capabilities and bounds learned at connect time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerCaps {
    /// `Time64(6)` exists (ClickHouse 25.6+); otherwise `time` is Int64 micros.
    pub time64: bool,
    /// DDL with Time64 needs `enable_time_time64_type = 1` (the setting exists).
    pub time64_setting: bool,
    /// Inclusive range of `Date32`, in days since 1970-01-01.
    pub date32_min: i32,
    pub date32_max: i32,
    /// Inclusive range of `DateTime64(6)`, in microseconds since the epoch.
    pub dt64_min: i64,
    pub dt64_max: i64,
}

/// 1900-01-01 and 2299-12-31: the range every ClickHouse from 21.9 to 25.x stores.
pub const DATE32_CLASSIC: (i32, i32) = (-25_567, 120_529);
/// 1900-01-01 00:00:00 and 2299-12-31 23:59:59.999999 UTC.
pub const DT64_CLASSIC: (i64, i64) = (-2_208_988_800_000_000, 10_413_791_999_999_999);
/// 0001-01-01 and 9999-12-31: the extended range of newer servers.
pub const DATE32_EXTENDED: (i32, i32) = (-719_162, 2_932_896);
/// 0001-01-01 00:00:00 and 9999-12-31 23:59:59.999999 UTC.
pub const DT64_EXTENDED: (i64, i64) = (-62_135_596_800_000_000, 253_402_300_799_999_999);

impl ServerCaps {
    /// What every supported (23.x+) server can do.
    pub fn classic() -> Self {
        ServerCaps {
            time64: false,
            time64_setting: false,
            date32_min: DATE32_CLASSIC.0,
            date32_max: DATE32_CLASSIC.1,
            dt64_min: DT64_CLASSIC.0,
            dt64_max: DT64_CLASSIC.1,
        }
    }
}

/// How one source column's values are turned into what ClickHouse accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enc {
    /// Sent as is.
    Pass,
    /// Date32 clamped to the server's range (±infinity to its ends).
    Date32,
    /// Timestamp(us) clamped to the server's DateTime64 range.
    Timestamp,
    /// FixedSizeBinary(16) -> canonical UUID text (every server parses it).
    Uuid,
    /// Interval(MonthDayNano) -> ISO 8601 text.
    Interval,
    /// Time64(us) -> Int64 microseconds (server without Time64).
    TimeAsInt64,
    /// NULL -> `{}` (a non-Nullable JSON column cannot take NULL).
    JsonNotNull,
    /// UInt8 op code -> one-letter String (append-only `_op`).
    OpCode,
    /// Any other type: its Arrow text form, into a String column.
    Text,
    List(Box<Enc>),
}

/// One source column as ClickHouse stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPlan {
    /// Index of the column in the source batch.
    pub source_index: usize,
    pub name: String,
    pub ch_type: String,
    pub enc: Enc,
    /// A nullable array's companion `UInt8` column (`<name>_is_null`): 1 where
    /// the array is NULL, since ClickHouse has no `Nullable(Array)`.
    pub null_flag: Option<String>,
    pub is_key: bool,
    /// When the column is added to an existing table: the `DEFAULT` that
    /// gives older rows the source's value for them (`None`: NULL), or why
    /// the table cannot follow.
    pub on_add: Result<Option<String>, String>,
}

/// Suffix of the companion column that keeps NULL arrays distinct from empty ones.
pub const NULL_FLAG_SUFFIX: &str = "_is_null";

/// Maps one source column.
pub fn plan_column(
    index: usize,
    col: &ColumnInfo,
    json: JsonType,
    caps: &ServerCaps,
) -> ColumnPlan {
    let nullable = col.nullable && !col.is_key;
    let (ch_type, enc, null_flag) = match &col.data_type {
        DataType::List(f) | DataType::LargeList(f) => {
            let (inner, enc) = scalar(f.data_type(), col, JsonType::String, caps);
            let inner = if col.logical.is_enum() {
                "LowCardinality(Nullable(String))".to_string()
            } else {
                nullable_of(&inner)
            };
            let flag = nullable.then(|| format!("{}{NULL_FLAG_SUFFIX}", col.name));
            (format!("Array({inner})"), Enc::List(Box::new(enc)), flag)
        }
        dt => {
            let (base, mut enc) = scalar(dt, col, json, caps);
            let ty = if col.logical.is_enum() {
                if nullable {
                    "LowCardinality(Nullable(String))".to_string()
                } else {
                    "LowCardinality(String)".to_string()
                }
            } else if nullable {
                nullable_of(&base)
            } else {
                if base == "JSON" {
                    enc = Enc::JsonNotNull;
                }
                base
            };
            (ty, enc, None)
        }
    };
    ColumnPlan {
        source_index: index,
        name: col.name.clone(),
        on_add: on_add(col, &ch_type),
        ch_type,
        enc,
        null_flag,
        is_key: col.is_key,
    }
}

/// The ClickHouse `DEFAULT` for a column added to a table with rows (see
/// [`ColumnPlan::on_add`]).
fn on_add(col: &ColumnInfo, ch_type: &str) -> Result<Option<String>, String> {
    let text = match &col.added_default {
        AddedDefault::Null => return Ok(None),
        AddedDefault::PerRow => {
            return Err(format!(
                "column \"{}\" was added with a default computed per row (or had a default set after it was added), which sends no row changes: the rows written before it would lack their values; resync the table",
                col.name
            ))
        }
        AddedDefault::Constant(t) => t,
    };
    let literal = super::toast::quote_ch_string(text);
    let numeric = |t: &str| {
        !t.is_empty()
            && (t.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
                || matches!(t, "NaN" | "Infinity" | "-Infinity"))
    };
    let expr = match &col.data_type {
        DataType::Boolean => match text.as_str() {
            "t" | "true" => Some("true".to_string()),
            "f" | "false" => Some("false".to_string()),
            _ => None,
        },
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..)
            if numeric(text) =>
        {
            Some(format!("CAST({literal}, '{ch_type}')"))
        }
        DataType::Utf8 | DataType::LargeUtf8 if !ch_type.contains("JSON") => Some(literal),
        DataType::Date32 => Some(format!("CAST({literal}, '{ch_type}')")),
        DataType::Timestamp(..) => Some(format!("parseDateTime64BestEffort({literal}, 6, 'UTC')")),
        _ => None,
    };
    expr.map(Some).ok_or_else(|| {
        format!(
            "column \"{}\" was added with DEFAULT {text}, which the rows written before it hold, and sluice cannot give a {ch_type} column that default: resync the table",
            col.name
        )
    })
}

fn nullable_of(base: &str) -> String {
    format!("Nullable({base})")
}

/// The ClickHouse base type (without Nullable) and the encoding of one value.
fn scalar(dt: &DataType, col: &ColumnInfo, json: JsonType, caps: &ServerCaps) -> (String, Enc) {
    let pass = |t: &str| (t.to_string(), Enc::Pass);
    match dt {
        DataType::Boolean => pass("Bool"),
        DataType::Int8 => pass("Int8"),
        DataType::Int16 => pass("Int16"),
        DataType::Int32 => pass("Int32"),
        DataType::Int64 => pass("Int64"),
        DataType::UInt8 => pass("UInt8"),
        DataType::UInt16 => pass("UInt16"),
        DataType::UInt32 => pass("UInt32"),
        DataType::UInt64 => pass("UInt64"),
        DataType::Float32 => pass("Float32"),
        DataType::Float64 => pass("Float64"),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            (format!("Decimal({p}, {})", (*s).max(0)), Enc::Pass)
        }
        DataType::Utf8 | DataType::LargeUtf8 => {
            if col.logical.is_json() && json == JsonType::Json {
                pass("JSON")
            } else {
                pass("String")
            }
        }
        DataType::Binary | DataType::LargeBinary => pass("String"),
        DataType::FixedSizeBinary(16) => ("UUID".to_string(), Enc::Uuid),
        DataType::Date32 => ("Date32".to_string(), Enc::Date32),
        DataType::Time64(TimeUnit::Microsecond) => {
            if caps.time64 {
                pass("Time64(6)")
            } else {
                ("Int64".to_string(), Enc::TimeAsInt64)
            }
        }
        // Both timestamp kinds are UTC in ClickHouse: a `timestamp` (no zone)
        // then reads back as the same wall-clock text whatever the server's
        // time zone is.
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            ("DateTime64(6, 'UTC')".to_string(), Enc::Timestamp)
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => ("String".to_string(), Enc::Interval),
        _ => ("String".to_string(), Enc::Text),
    }
}

/// The parts of a ClickHouse type string that matter for compatibility.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed<'a> {
    nullable: bool,
    base: &'a str,
}

fn strip<'a>(t: &'a str, wrapper: &str) -> Option<&'a str> {
    t.strip_prefix(wrapper)?
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn parse(t: &str) -> Parsed<'_> {
    let t = t.trim();
    let t = strip(t, "LowCardinality").unwrap_or(t);
    match strip(t, "Nullable") {
        Some(b) => Parsed {
            nullable: true,
            base: b,
        },
        None => Parsed {
            nullable: false,
            base: t,
        },
    }
}

fn decimal(t: &str) -> Option<(u32, u32)> {
    let inner = strip(t, "Decimal")?;
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// Whether a value of base type `from` always fits base type `to`.
fn base_widens(from: &str, to: &str) -> bool {
    if from == to {
        return true;
    }
    const INTS: [&str; 4] = ["Int8", "Int16", "Int32", "Int64"];
    let rank = |t: &str| INTS.iter().position(|i| *i == t);
    if let (Some(a), Some(b)) = (rank(from), rank(to)) {
        return a <= b;
    }
    if from == "Float32" && to == "Float64" {
        return true;
    }
    if let (Some((p1, s1)), Some((p2, s2))) = (decimal(from), decimal(to)) {
        return s2 >= s1 && p2 - s2 >= p1 - s1;
    }
    if let (Some(a), Some(b)) = (strip(from, "Array"), strip(to, "Array")) {
        return widens(a, b);
    }
    // Any scalar has a text form (varchar -> text, int -> text, enum -> text).
    to == "String" && !from.starts_with("Array") && from != "JSON"
}

/// Whether every value of type `from` can be stored in a column of type `to`.
pub fn widens(from: &str, to: &str) -> bool {
    let (f, t) = (parse(from), parse(to));
    (!f.nullable || t.nullable) && base_widens(f.base, t.base)
}

/// What to do with an existing column of type `existing` that the source now
/// describes as `wanted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconcile {
    /// The column takes the new values as it is.
    Keep,
    /// `MODIFY COLUMN` to this type (a widening).
    Modify(String),
    /// Cannot follow: the reason.
    Incompatible(String),
}

pub fn reconcile(existing: &str, wanted: &str) -> Reconcile {
    if existing == wanted || widens(wanted, existing) {
        return Reconcile::Keep;
    }
    if widens(existing, wanted) {
        return Reconcile::Modify(wanted.to_string());
    }
    // Became NOT NULL while the base widened: keep the column nullable.
    let (e, w) = (parse(existing), parse(wanted));
    if e.nullable && !w.nullable && base_widens(e.base, w.base) {
        return Reconcile::Modify(nullable_of(w.base));
    }
    Reconcile::Incompatible(format!(
        "the ClickHouse column is {existing}, the source column now needs {wanted}, \
         and ClickHouse cannot convert every value of the one into the other"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_rules() {
        assert_eq!(
            reconcile("Int32", "Int64"),
            Reconcile::Modify("Int64".into())
        );
        assert_eq!(reconcile("Int64", "Int32"), Reconcile::Keep);
        assert_eq!(
            reconcile("Nullable(Int32)", "Int64"),
            Reconcile::Modify("Nullable(Int64)".into())
        );
        assert_eq!(
            reconcile("Int32", "Nullable(Int32)"),
            Reconcile::Modify("Nullable(Int32)".into())
        );
        assert_eq!(reconcile("Nullable(String)", "String"), Reconcile::Keep);
        assert_eq!(
            reconcile("Decimal(10, 2)", "Decimal(12, 3)"),
            Reconcile::Modify("Decimal(12, 3)".into())
        );
        assert!(matches!(
            reconcile("Decimal(10, 2)", "Decimal(10, 3)"),
            Reconcile::Incompatible(_)
        ));
        // A String column takes any scalar as text.
        assert_eq!(reconcile("String", "Int64"), Reconcile::Keep);
        assert!(matches!(
            reconcile("Int64", "Bool"),
            Reconcile::Incompatible(_)
        ));
        assert!(matches!(
            reconcile("Date32", "Int32"),
            Reconcile::Incompatible(_)
        ));
        assert_eq!(
            reconcile("Int32", "String"),
            Reconcile::Modify("String".into())
        );
        assert_eq!(
            reconcile("LowCardinality(Nullable(String))", "Nullable(String)"),
            Reconcile::Keep
        );
        assert_eq!(
            reconcile("Array(Nullable(Int32))", "Array(Nullable(Int64))"),
            Reconcile::Modify("Array(Nullable(Int64))".into())
        );
        assert!(matches!(
            reconcile("Array(Nullable(Int32))", "Int32"),
            Reconcile::Incompatible(_)
        ));
    }

    #[test]
    fn defaults_of_added_columns() {
        let col = |dt: DataType, d: AddedDefault| ColumnInfo {
            name: "c".into(),
            source_type: "x".into(),
            logical: crate::core::LogicalType::from_arrow(&dt),
            data_type: dt,
            is_key: false,
            nullable: true,
            added_default: d,
        };
        let plan =
            |dt, d| plan_column(0, &col(dt, d), JsonType::String, &ServerCaps::classic()).on_add;
        let k = |s: &str| AddedDefault::Constant(s.into());
        assert_eq!(plan(DataType::Int32, AddedDefault::Null), Ok(None));
        assert_eq!(
            plan(DataType::Int32, k("42")),
            Ok(Some("CAST('42', 'Nullable(Int32)')".into()))
        );
        assert_eq!(plan(DataType::Utf8, k("it's")), Ok(Some("'it\\'s'".into())));
        assert_eq!(plan(DataType::Boolean, k("t")), Ok(Some("true".into())));
        assert!(plan(DataType::Int32, k("1); DROP TABLE x")).is_err());
        assert!(plan(DataType::Int32, AddedDefault::PerRow)
            .unwrap_err()
            .contains("resync"));
        let list = DataType::new_list(DataType::Int32, true);
        assert!(plan(list, k("{1,2}")).unwrap_err().contains("cannot give"));
    }
}
