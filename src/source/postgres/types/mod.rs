//! PostgreSQL type -> Apache Arrow mapping, and value decoders.
//!
//! Values arrive as raw bytes in PostgreSQL's BINARY wire format (pgoutput with
//! `binary 'true'`, `COPY ... (FORMAT binary)` field bytes) or in its TEXT output
//! format (pgoutput without `binary`, types without binary I/O). [`ColumnDecoder`]
//! decodes either straight into an Arrow builder, with no per-row structs.
//!
//! # Mapping (every column and every list element is nullable)
//!
//! | PostgreSQL                         | Arrow                                  | notes |
//! |------------------------------------|----------------------------------------|-------|
//! | `bool`                             | `Boolean`                              | |
//! | `int2` / `int4` / `int8`           | `Int16` / `Int32` / `Int64`            | |
//! | `oid`                              | `UInt32`                               | |
//! | `float4` / `float8`                | `Float32` / `Float64`                  | NaN, ±Infinity, -0.0 kept |
//! | `numeric(p,s)`, p <= 38            | `Decimal128(p,s)`                      | see *numeric* below |
//! | `numeric(p,s)`, 38 < p <= 76       | `Decimal256(p,s)`                      | |
//! | `numeric(p,s)`, p > 76, `numeric`  | per [`UnconstrainedNumeric`]           | default `Utf8` (exact text) |
//! | `money`                            | `Decimal128(19, money_scale)`          | raw i64 minor units |
//! | `text` `varchar` `bpchar` `name` `citext` `unknown` `xml` `json` `"char"` | `Utf8` | bpchar keeps its padding |
//! | `jsonb`                            | `Utf8`                                 | binary version byte stripped |
//! | `bytea`                            | `Binary`                               | |
//! | `date`                             | `Date32`                               | ±infinity -> `i32::MAX` / `i32::MIN` |
//! | `time`                             | `Time64(Microsecond)`                  | `24:00:00` = 86 400 000 000 |
//! | `timetz`                           | `Utf8`                                 | PG text form `HH:MM:SS[.ffffff]+HH[:MM[:SS]]` |
//! | `timestamp`                        | `Timestamp(Microsecond, None)`         | ±infinity -> `i64::MAX` / `i64::MIN` |
//! | `timestamptz`                      | `Timestamp(Microsecond, "UTC")`        | ±infinity -> `i64::MAX` / `i64::MIN` |
//! | `interval`                         | `Interval(MonthDayNano)`               | (months, days, micros * 1000) |
//! | `uuid`                             | `FixedSizeBinary(16)`                  | [`format_uuid`] gives the text form |
//! | `inet` / `cidr`                    | `Utf8`                                 | PG text form (`10.0.0.1`, `10.0.0.0/8`, `::ffff:1.2.3.4`) |
//! | `macaddr` / `macaddr8`             | `Utf8`                                 | `08:00:2b:01:02:03` |
//! | `pg_lsn`                           | `Utf8`                                 | `16/B374D848` |
//! | enum                               | `Utf8`                                 | the label |
//! | domain                             | its base type's mapping                | recursively, with the domain's typmod |
//! | array of T                         | `List(T')` (field "item", nullable)    | see *arrays* below |
//! | anything else                      | `Utf8` (text form)                     | `needs_text_format`, `warning` set |
//!
//! # Documented choices
//!
//! * **Infinity sentinels.** `date` ±infinity become `Date32` `i32::MAX` / `i32::MIN`;
//!   `timestamp[tz]` ±infinity become `i64::MAX` / `i64::MIN` microseconds. No finite
//!   PostgreSQL value maps onto these (PG's finite ranges are far inside them).
//! * **Arrays.** PostgreSQL does not declare array dimensions. A one-dimensional array
//!   becomes one list; an empty array (`{}`, ndim 0) an empty list, distinct from NULL.
//!   A multi-dimensional value is **refused** (a value error, which stops the
//!   table with the reason): one list cannot hold its shape, and flattening
//!   (`{{1,2},{3,4}}` -> `[1,2,3,4]`) would change the value. Lower bounds
//!   are not kept. (Columns *declared* multi-dimensional never get here:
//!   `setup::describe_table` maps them to their exact text.)
//! * **money** is the raw i64 amount in minor units (the binary form, independent of
//!   `lc_monetary`) as `Decimal128(19, s)`, `s` = [`TypeOptions::money_scale`] (default 2,
//!   right for most locales). 19 digits, so every i64 fits. Text-format money is parsed
//!   locale-tolerantly (currency symbols and group separators dropped).
//! * **timetz** has no Arrow type: it is `Utf8` in PostgreSQL's own text form.
//! * **numeric.** Declared `numeric(p,s)` with `p <= 76` is a decimal of that precision and
//!   scale (negative scale `numeric(p,-k)` -> `Decimal(p+k, 0)`; scale > precision ->
//!   `Decimal(s, s)`). Values are never rounded: a value that does not fit is an error
//!   naming it. NaN / ±Infinity cannot be decimals: per [`NumericMode`] they are an error
//!   (default) or NULL counted in [`ColumnDecoder::take_warnings`]. Decimal `-0` is `0`.
//!   Unconstrained numeric (and `p > 76`) follows [`UnconstrainedNumeric`]: `Text`
//!   (default) holds PostgreSQL's exact text output (`-0`, `0.00`, `NaN`, `Infinity`,
//!   any number of digits), `Decimal { precision, scale }` is a decimal with the same
//!   no-rounding rule.
//! * **Errors.** When `append_*` returns `Err`, a NULL has been appended in that value's
//!   place so the column stays aligned with the others; the caller decides whether the
//!   error is fatal. Error messages carry at most 64 bytes of the value.
//! * **Text format** expects `DateStyle = ISO` and `IntervalStyle = postgres` (or
//!   `postgres_verbose`), the server defaults; `bytea_output` hex or escape.

mod array;
mod decoder;
pub(crate) mod net;
mod numeric;
mod temporal;
mod text;

#[cfg(test)]
mod tests;

use std::fmt;

use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};

pub use decoder::{ColumnDecoder, DecodeWarnings};
pub use net::format_uuid;

/// Built-in type OIDs this module maps (from PostgreSQL's `pg_type.dat`).
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const MACADDR8: u32 = 774;
    pub const MONEY: u32 = 790;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const PG_LSN: u32 = 3220;
    pub const JSONB: u32 = 3802;

    pub const BOOL_ARRAY: u32 = 1000;
    pub const BYTEA_ARRAY: u32 = 1001;
    pub const INT2_ARRAY: u32 = 1005;
    pub const INT4_ARRAY: u32 = 1007;
    pub const TEXT_ARRAY: u32 = 1009;
    pub const VARCHAR_ARRAY: u32 = 1015;
    pub const INT8_ARRAY: u32 = 1016;
    pub const FLOAT4_ARRAY: u32 = 1021;
    pub const FLOAT8_ARRAY: u32 = 1022;
    pub const TIMESTAMP_ARRAY: u32 = 1115;
    pub const DATE_ARRAY: u32 = 1182;
    pub const TIMESTAMPTZ_ARRAY: u32 = 1185;
    pub const NUMERIC_ARRAY: u32 = 1231;
    pub const UUID_ARRAY: u32 = 2951;
    pub const JSONB_ARRAY: u32 = 3807;
}

/// Resolved column types by OID, filled from the catalog.
pub type TypeCache = std::collections::HashMap<u32, PgType>;

/// A PostgreSQL type as resolved from the catalog (`pg_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgType {
    pub oid: u32,
    pub name: String,
    /// The column's `atttypmod` (or a domain's `typtypmod`); -1 when none.
    pub typmod: i32,
    pub kind: PgTypeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTypeKind {
    /// Built-in or extension base type; mapped by OID (extension types by name).
    Base,
    /// `typtype = 'e'`: replicated as its label.
    Enum,
    /// `typtype = 'd'`: mapped as its base type (which carries the domain's typmod).
    Domain { base: Box<PgType> },
    /// `typcategory = 'A'`: the element carries the column's typmod.
    Array { element: Box<PgType> },
    /// Composite, range, multirange, unknown: replicated as text.
    Other,
}

impl PgType {
    /// A base type with no typmod.
    pub fn base(oid: u32, name: &str) -> Self {
        PgType {
            oid,
            name: name.to_owned(),
            typmod: -1,
            kind: PgTypeKind::Base,
        }
    }
}

/// How NaN / ±Infinity numeric values are handled in a decimal column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NumericMode {
    /// The value is an error ([`TypeError::NumericSpecial`]).
    #[default]
    Error,
    /// The value becomes NULL and is counted in [`ColumnDecoder::take_warnings`].
    NullWithWarning,
}

/// Arrow type for numeric without declared precision (or precision above 76).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnconstrainedNumeric {
    /// `Utf8` holding PostgreSQL's exact text output.
    #[default]
    Text,
    /// A decimal (`Decimal128` if `precision <= 38`, else `Decimal256`); values that do
    /// not fit are errors, never rounded.
    Decimal { precision: u8, scale: i8 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeOptions {
    pub unconstrained_numeric: UnconstrainedNumeric,
    pub numeric_special: NumericMode,
    /// Fraction digits of `money` (the server's `lc_monetary`); default 2.
    pub money_scale: i8,
}

impl Default for TypeOptions {
    fn default() -> Self {
        TypeOptions {
            unconstrained_numeric: UnconstrainedNumeric::Text,
            numeric_special: NumericMode::Error,
            money_scale: 2,
        }
    }
}

/// How a column's values are decoded; chosen by [`arrow_type`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecoderKind {
    Bool,
    Int16,
    Int32,
    Int64,
    Oid,
    Float32,
    Float64,
    /// numeric -> Decimal128 (precision <= 38) or Decimal256.
    Decimal {
        precision: u8,
        scale: i8,
        special: NumericMode,
    },
    /// numeric -> Utf8, PostgreSQL's exact text form.
    NumericText,
    Money {
        scale: i8,
    },
    /// Text-like: binary form is the UTF-8 text itself.
    Text,
    Jsonb,
    Char,
    Bytea,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    Inet,
    MacAddr,
    MacAddr8,
    PgLsn,
    /// No binary decoder: the text form is kept as Utf8.
    TextOnly,
    /// One list per array value; multi-dimensional arrays are refused.
    Array(Box<ArrowMapping>),
}

/// The Arrow side of a PostgreSQL column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrowMapping {
    pub data_type: DataType,
    pub decoder: DecoderKind,
    /// The type (or an array element) has no binary decoder here: replicate this
    /// table in text format.
    pub needs_text_format: bool,
    /// Set when the type has no faithful mapping (replicated as text), for the caller
    /// to log as "column x of type T is replicated as text".
    pub warning: Option<String>,
    /// The PostgreSQL type name, for error messages.
    pub pg_type: String,
}

/// Errors from mapping types and decoding values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypeError {
    /// A value that is not a valid encoding of its type.
    #[error("invalid {pg_type} value {value}: {reason}")]
    InvalidValue {
        pg_type: String,
        value: String,
        reason: String,
    },
    /// A valid value that the Arrow column cannot hold (never rounded).
    #[error("{pg_type} value {value} does not fit {arrow}: {reason}")]
    OutOfRange {
        pg_type: String,
        value: String,
        arrow: String,
        reason: String,
    },
    /// numeric NaN / Infinity / -Infinity in a decimal column under [`NumericMode::Error`].
    #[error("{pg_type} value {value} cannot be stored in {arrow}")]
    NumericSpecial {
        pg_type: String,
        value: String,
        arrow: String,
    },
    /// Binary value for a type that can only be decoded from text.
    #[error("type {pg_type} has no binary decoder; replicate it in text format")]
    BinaryUnsupported { pg_type: String },
    /// A mapping that cannot be built (bad option, bad typmod).
    #[error("cannot map type {pg_type}: {reason}")]
    Unsupported { pg_type: String, reason: String },
}

/// At most this many bytes of a value appear in an error message.
const MAX_SHOWN: usize = 64;

/// Shows a value for an error: text (lossy UTF-8) when printable, else hex; truncated.
pub(crate) fn show_value(v: &[u8], binary: bool) -> String {
    use std::fmt::Write;
    if !binary {
        if let Ok(s) = std::str::from_utf8(v) {
            if s.len() <= MAX_SHOWN {
                return format!("{s:?}");
            }
            let mut end = MAX_SHOWN;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            return format!("{:?}... ({} bytes)", &s[..end], v.len());
        }
    }
    let n = v.len().min(MAX_SHOWN / 2);
    let mut out = String::with_capacity(2 * n + 24);
    out.push_str("0x");
    for b in &v[..n] {
        let _ = write!(out, "{b:02x}");
    }
    if v.len() > n {
        let _ = write!(out, "... ({} bytes)", v.len());
    }
    out
}

/// Maps a PostgreSQL type to its Arrow type and decoder.
pub fn arrow_type(t: &PgType, opts: &TypeOptions) -> Result<ArrowMapping, TypeError> {
    let map = |data_type: DataType, decoder: DecoderKind| {
        Ok(ArrowMapping {
            data_type,
            decoder,
            needs_text_format: false,
            warning: None,
            pg_type: t.name.clone(),
        })
    };
    match &t.kind {
        PgTypeKind::Enum => map(DataType::Utf8, DecoderKind::Text),
        PgTypeKind::Domain { base } => {
            let mut m = arrow_type(base, opts)?;
            m.pg_type = format!("{} ({})", t.name, m.pg_type);
            Ok(m)
        }
        PgTypeKind::Array { element } => {
            let el = arrow_type(element, opts)?;
            let field = Field::new_list_field(el.data_type.clone(), true);
            Ok(ArrowMapping {
                data_type: DataType::List(field.into()),
                needs_text_format: el.needs_text_format,
                warning: el.warning.clone(),
                pg_type: t.name.clone(),
                decoder: DecoderKind::Array(Box::new(el)),
            })
        }
        PgTypeKind::Other => Ok(text_fallback(t)),
        PgTypeKind::Base => match t.oid {
            oid::BOOL => map(DataType::Boolean, DecoderKind::Bool),
            oid::INT2 => map(DataType::Int16, DecoderKind::Int16),
            oid::INT4 => map(DataType::Int32, DecoderKind::Int32),
            oid::INT8 => map(DataType::Int64, DecoderKind::Int64),
            oid::OID => map(DataType::UInt32, DecoderKind::Oid),
            oid::FLOAT4 => map(DataType::Float32, DecoderKind::Float32),
            oid::FLOAT8 => map(DataType::Float64, DecoderKind::Float64),
            oid::NUMERIC => numeric_mapping(t, opts),
            oid::MONEY => {
                let scale = opts.money_scale;
                if !(0..=19).contains(&scale) {
                    return Err(TypeError::Unsupported {
                        pg_type: t.name.clone(),
                        reason: format!("money_scale {scale} is outside 0..=19"),
                    });
                }
                map(
                    DataType::Decimal128(19, scale),
                    DecoderKind::Money { scale },
                )
            }
            oid::TEXT
            | oid::VARCHAR
            | oid::BPCHAR
            | oid::NAME
            | oid::UNKNOWN
            | oid::JSON
            | oid::XML => map(DataType::Utf8, DecoderKind::Text),
            oid::CHAR => map(DataType::Utf8, DecoderKind::Char),
            oid::JSONB => map(DataType::Utf8, DecoderKind::Jsonb),
            oid::BYTEA => map(DataType::Binary, DecoderKind::Bytea),
            oid::DATE => map(DataType::Date32, DecoderKind::Date),
            oid::TIME => map(DataType::Time64(TimeUnit::Microsecond), DecoderKind::Time),
            oid::TIMETZ => map(DataType::Utf8, DecoderKind::TimeTz),
            oid::TIMESTAMP => map(
                DataType::Timestamp(TimeUnit::Microsecond, None),
                DecoderKind::Timestamp,
            ),
            oid::TIMESTAMPTZ => map(
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                DecoderKind::TimestampTz,
            ),
            oid::INTERVAL => map(
                DataType::Interval(IntervalUnit::MonthDayNano),
                DecoderKind::Interval,
            ),
            oid::UUID => map(DataType::FixedSizeBinary(16), DecoderKind::Uuid),
            oid::INET | oid::CIDR => map(DataType::Utf8, DecoderKind::Inet),
            oid::MACADDR => map(DataType::Utf8, DecoderKind::MacAddr),
            oid::MACADDR8 => map(DataType::Utf8, DecoderKind::MacAddr8),
            oid::PG_LSN => map(DataType::Utf8, DecoderKind::PgLsn),
            // Extension types have no fixed OID; citext's binary form is its text.
            _ if t.name == "citext" => map(DataType::Utf8, DecoderKind::Text),
            _ => Ok(text_fallback(t)),
        },
    }
}

fn text_fallback(t: &PgType) -> ArrowMapping {
    ArrowMapping {
        data_type: DataType::Utf8,
        decoder: DecoderKind::TextOnly,
        needs_text_format: true,
        warning: Some(format!(
            "type {} (oid {}) has no Arrow mapping; it is replicated as its text form",
            t.name, t.oid
        )),
        pg_type: t.name.clone(),
    }
}

/// Arrow's decimal limit.
const MAX_DECIMAL_PRECISION: i32 = 76;

fn numeric_mapping(t: &PgType, opts: &TypeOptions) -> Result<ArrowMapping, TypeError> {
    let special = opts.numeric_special;
    let decimal = |precision: u8, scale: i8| {
        let data_type = if precision <= 38 {
            DataType::Decimal128(precision, scale)
        } else {
            DataType::Decimal256(precision, scale)
        };
        ArrowMapping {
            data_type,
            decoder: DecoderKind::Decimal {
                precision,
                scale,
                special,
            },
            needs_text_format: false,
            warning: None,
            pg_type: t.name.clone(),
        }
    };
    if t.typmod >= 4 {
        let m = t.typmod - 4;
        let p = (m >> 16) & 0xffff;
        // 11-bit signed scale (PG 15 allows -1000..=1000).
        let s = ((m & 0x7ff) ^ 1024) - 1024;
        let (p, s) = if s < 0 {
            (p - s, 0)
        } else if s > p {
            (s, s)
        } else {
            (p, s)
        };
        if (1..=MAX_DECIMAL_PRECISION).contains(&p) {
            return Ok(decimal(p as u8, s as i8));
        }
    }
    match opts.unconstrained_numeric {
        UnconstrainedNumeric::Text => Ok(ArrowMapping {
            data_type: DataType::Utf8,
            decoder: DecoderKind::NumericText,
            needs_text_format: false,
            warning: None,
            pg_type: t.name.clone(),
        }),
        UnconstrainedNumeric::Decimal { precision, scale } => {
            if precision == 0
                || i32::from(precision) > MAX_DECIMAL_PRECISION
                || i32::from(scale) > i32::from(precision)
            {
                return Err(TypeError::Unsupported {
                    pg_type: t.name.clone(),
                    reason: format!(
                        "unconstrained_numeric Decimal({precision},{scale}) needs \
                         1 <= precision <= 76 and scale <= precision"
                    ),
                });
            }
            Ok(decimal(precision, scale))
        }
    }
}

impl fmt::Display for PgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (oid {})", self.name, self.oid)
    }
}
