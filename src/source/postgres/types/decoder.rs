//! [`ColumnDecoder`]: PostgreSQL binary / text values -> one Arrow builder.

use std::sync::Arc;

use arrow::array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder,
    FixedSizeBinaryBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, IntervalMonthDayNanoBuilder, NullBufferBuilder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder, UInt32Builder,
};
use arrow::array::{ArrayBuilder, ArrayRef, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{i256, DataType, FieldRef, IntervalMonthDayNano};

use super::numeric::{self, DecInt, FitError, Special, TextNumeric};
use super::{array, net, show_value, temporal, text};
use super::{ArrowMapping, DecoderKind, NumericMode, TypeError};

/// Values that were replaced by NULL (numeric NaN/±Infinity under
/// [`NumericMode::NullWithWarning`]) since the last [`ColumnDecoder::take_warnings`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeWarnings {
    pub count: u64,
    /// The first such event, for logging.
    pub first: Option<String>,
}

impl DecodeWarnings {
    fn add(&mut self, msg: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(msg());
        }
    }
    fn merge(&mut self, other: DecodeWarnings) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// The string-valued kinds: how binary bytes become the text stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrKind {
    Text,
    Jsonb,
    Char,
    NumericText,
    TimeTz,
    Inet,
    MacAddr,
    MacAddr8,
    PgLsn,
    TextOnly,
}

enum Inner {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U32(UInt32Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Dec128 {
        b: Decimal128Builder,
        precision: u8,
        scale: i8,
        special: NumericMode,
    },
    Dec256 {
        b: Decimal256Builder,
        precision: u8,
        scale: i8,
        special: NumericMode,
    },
    Money {
        b: Decimal128Builder,
        scale: i8,
    },
    Str {
        b: StringBuilder,
        kind: StrKind,
    },
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp {
        b: TimestampMicrosecondBuilder,
        tz: bool,
    },
    Interval(IntervalMonthDayNanoBuilder),
    Uuid(FixedSizeBinaryBuilder),
    List(Box<ListState>),
}

struct ListState {
    child: ColumnDecoder,
    field: FieldRef,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
    /// De-escaped element text (text format).
    buf: Vec<u8>,
}

/// Decodes one column's values (binary or text format) into an Arrow builder.
///
/// On `Err` a NULL has been appended in place of the value (the column stays aligned
/// with the other columns of the row).
pub struct ColumnDecoder {
    pg_type: Arc<str>,
    data_type: DataType,
    inner: Inner,
    /// Reused formatting buffer (no per-value allocation).
    scratch: String,
    scratch_bytes: Vec<u8>,
    warnings: DecodeWarnings,
}

impl std::fmt::Debug for ColumnDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnDecoder")
            .field("pg_type", &self.pg_type)
            .field("data_type", &self.data_type)
            .field("len", &self.len())
            .finish()
    }
}

type Res<T> = Result<T, &'static str>;

impl ColumnDecoder {
    pub fn new(mapping: &ArrowMapping, capacity: usize) -> Self {
        let str_b = |kind| Inner::Str {
            b: StringBuilder::with_capacity(capacity, capacity * 16),
            kind,
        };
        let inner = match &mapping.decoder {
            DecoderKind::Bool => Inner::Bool(BooleanBuilder::with_capacity(capacity)),
            DecoderKind::Int16 => Inner::I16(Int16Builder::with_capacity(capacity)),
            DecoderKind::Int32 => Inner::I32(Int32Builder::with_capacity(capacity)),
            DecoderKind::Int64 => Inner::I64(Int64Builder::with_capacity(capacity)),
            DecoderKind::Oid => Inner::U32(UInt32Builder::with_capacity(capacity)),
            DecoderKind::Float32 => Inner::F32(Float32Builder::with_capacity(capacity)),
            DecoderKind::Float64 => Inner::F64(Float64Builder::with_capacity(capacity)),
            &DecoderKind::Decimal {
                precision,
                scale,
                special,
            } => {
                if precision <= 38 {
                    let b = Decimal128Builder::with_capacity(capacity)
                        .with_data_type(DataType::Decimal128(precision, scale));
                    Inner::Dec128 {
                        b,
                        precision,
                        scale,
                        special,
                    }
                } else {
                    let b = Decimal256Builder::with_capacity(capacity)
                        .with_data_type(DataType::Decimal256(precision, scale));
                    Inner::Dec256 {
                        b,
                        precision,
                        scale,
                        special,
                    }
                }
            }
            &DecoderKind::Money { scale } => Inner::Money {
                b: Decimal128Builder::with_capacity(capacity)
                    .with_data_type(DataType::Decimal128(19, scale)),
                scale,
            },
            DecoderKind::NumericText => str_b(StrKind::NumericText),
            DecoderKind::Text => str_b(StrKind::Text),
            DecoderKind::Jsonb => str_b(StrKind::Jsonb),
            DecoderKind::Char => str_b(StrKind::Char),
            DecoderKind::TimeTz => str_b(StrKind::TimeTz),
            DecoderKind::Inet => str_b(StrKind::Inet),
            DecoderKind::MacAddr => str_b(StrKind::MacAddr),
            DecoderKind::MacAddr8 => str_b(StrKind::MacAddr8),
            DecoderKind::PgLsn => str_b(StrKind::PgLsn),
            DecoderKind::TextOnly => str_b(StrKind::TextOnly),
            DecoderKind::Bytea => {
                Inner::Binary(BinaryBuilder::with_capacity(capacity, capacity * 32))
            }
            DecoderKind::Date => Inner::Date(Date32Builder::with_capacity(capacity)),
            DecoderKind::Time => Inner::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            DecoderKind::Timestamp => Inner::Timestamp {
                b: TimestampMicrosecondBuilder::with_capacity(capacity),
                tz: false,
            },
            DecoderKind::TimestampTz => Inner::Timestamp {
                b: TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
                tz: true,
            },
            DecoderKind::Interval => {
                Inner::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity))
            }
            DecoderKind::Uuid => Inner::Uuid(FixedSizeBinaryBuilder::with_capacity(capacity, 16)),
            DecoderKind::Array(el) => {
                let field = match &mapping.data_type {
                    DataType::List(f) => f.clone(),
                    other => unreachable!("array mapping with data type {other}"),
                };
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                Inner::List(Box::new(ListState {
                    child: ColumnDecoder::new(el, capacity * 4),
                    field,
                    offsets,
                    nulls: NullBufferBuilder::new(capacity),
                    buf: Vec::new(),
                }))
            }
        };
        ColumnDecoder {
            pg_type: mapping.pg_type.as_str().into(),
            data_type: mapping.data_type.clone(),
            inner,
            scratch: String::new(),
            scratch_bytes: Vec::new(),
            warnings: DecodeWarnings::default(),
        }
    }

    /// The Arrow type of the arrays this decoder produces.
    pub fn data_type(&self) -> &DataType {
        &self.data_type
    }

    /// Appends a value in PostgreSQL binary format (`None` = NULL).
    pub fn append_binary(&mut self, v: Option<&[u8]>) -> Result<(), TypeError> {
        let Some(v) = v else {
            self.append_null();
            return Ok(());
        };
        let r = self.binary(v);
        // Scalar paths append nothing on error; list paths always close their row.
        if r.is_err() && !matches!(self.inner, Inner::List(_)) {
            self.append_null();
        }
        r
    }

    /// Appends a value in PostgreSQL text output format (`None` = NULL).
    pub fn append_text(&mut self, v: Option<&[u8]>) -> Result<(), TypeError> {
        let Some(v) = v else {
            self.append_null();
            return Ok(());
        };
        let r = self.text(v);
        // Scalar paths append nothing on error; list paths always close their row.
        if r.is_err() && !matches!(self.inner, Inner::List(_)) {
            self.append_null();
        }
        r
    }

    pub fn append_null(&mut self) {
        match &mut self.inner {
            Inner::Bool(b) => b.append_null(),
            Inner::I16(b) => b.append_null(),
            Inner::I32(b) => b.append_null(),
            Inner::I64(b) => b.append_null(),
            Inner::U32(b) => b.append_null(),
            Inner::F32(b) => b.append_null(),
            Inner::F64(b) => b.append_null(),
            Inner::Dec128 { b, .. } | Inner::Money { b, .. } => b.append_null(),
            Inner::Dec256 { b, .. } => b.append_null(),
            Inner::Str { b, .. } => b.append_null(),
            Inner::Binary(b) => b.append_null(),
            Inner::Date(b) => b.append_null(),
            Inner::Time(b) => b.append_null(),
            Inner::Timestamp { b, .. } => b.append_null(),
            Inner::Interval(b) => b.append_null(),
            Inner::Uuid(b) => b.append_null(),
            Inner::List(l) => {
                l.offsets.push(*l.offsets.last().unwrap());
                l.nulls.append_null();
            }
        }
    }

    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Bool(b) => b.len(),
            Inner::I16(b) => b.len(),
            Inner::I32(b) => b.len(),
            Inner::I64(b) => b.len(),
            Inner::U32(b) => b.len(),
            Inner::F32(b) => b.len(),
            Inner::F64(b) => b.len(),
            Inner::Dec128 { b, .. } | Inner::Money { b, .. } => b.len(),
            Inner::Dec256 { b, .. } => b.len(),
            Inner::Str { b, .. } => b.len(),
            Inner::Binary(b) => b.len(),
            Inner::Date(b) => b.len(),
            Inner::Time(b) => b.len(),
            Inner::Timestamp { b, .. } => b.len(),
            Inner::Interval(b) => b.len(),
            Inner::Uuid(b) => b.len(),
            Inner::List(l) => l.offsets.len() - 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Builds the array of everything appended so far and resets the decoder.
    pub fn finish(&mut self) -> ArrayRef {
        match &mut self.inner {
            Inner::Bool(b) => Arc::new(b.finish()),
            Inner::I16(b) => Arc::new(b.finish()),
            Inner::I32(b) => Arc::new(b.finish()),
            Inner::I64(b) => Arc::new(b.finish()),
            Inner::U32(b) => Arc::new(b.finish()),
            Inner::F32(b) => Arc::new(b.finish()),
            Inner::F64(b) => Arc::new(b.finish()),
            Inner::Dec128 { b, .. } | Inner::Money { b, .. } => Arc::new(b.finish()),
            Inner::Dec256 { b, .. } => Arc::new(b.finish()),
            Inner::Str { b, .. } => Arc::new(b.finish()),
            Inner::Binary(b) => Arc::new(b.finish()),
            Inner::Date(b) => Arc::new(b.finish()),
            Inner::Time(b) => Arc::new(b.finish()),
            Inner::Timestamp { b, .. } => Arc::new(b.finish()),
            Inner::Interval(b) => Arc::new(b.finish()),
            Inner::Uuid(b) => Arc::new(b.finish()),
            Inner::List(l) => {
                let values = l.child.finish();
                let offsets = std::mem::replace(&mut l.offsets, vec![0]);
                let nulls = l.nulls.finish();
                Arc::new(ListArray::new(
                    l.field.clone(),
                    OffsetBuffer::new(offsets.into()),
                    values,
                    nulls,
                ))
            }
        }
    }

    /// Approximate bytes held by the builder (values, offsets, validity).
    pub fn byte_size_estimate(&self) -> usize {
        let n = self.len();
        let validity = n.div_ceil(8);
        validity
            + match &self.inner {
                Inner::Bool(_) => n.div_ceil(8),
                Inner::I16(_) => 2 * n,
                Inner::I32(_) | Inner::U32(_) | Inner::F32(_) | Inner::Date(_) => 4 * n,
                Inner::I64(_) | Inner::F64(_) | Inner::Time(_) | Inner::Timestamp { .. } => 8 * n,
                Inner::Dec128 { .. }
                | Inner::Money { .. }
                | Inner::Interval(_)
                | Inner::Uuid(_) => 16 * n,
                Inner::Dec256 { .. } => 32 * n,
                Inner::Str { b, .. } => b.values_slice().len() + 4 * n,
                Inner::Binary(b) => b.values_slice().len() + 4 * n,
                Inner::List(l) => l.child.byte_size_estimate() + 4 * n,
            }
    }

    /// Returns and resets the warnings counted so far (including list elements').
    pub fn take_warnings(&mut self) -> DecodeWarnings {
        let mut w = std::mem::take(&mut self.warnings);
        if let Inner::List(l) = &mut self.inner {
            w.merge(l.child.take_warnings());
        }
        w
    }

    fn invalid(&self, v: &[u8], binary: bool, reason: &str) -> TypeError {
        TypeError::InvalidValue {
            pg_type: self.pg_type.to_string(),
            value: show_value(v, binary),
            reason: reason.to_owned(),
        }
    }

    fn binary(&mut self, v: &[u8]) -> Result<(), TypeError> {
        let r: Res<()> = match &mut self.inner {
            Inner::Bool(b) => match v {
                [x] => {
                    b.append_value(*x != 0);
                    Ok(())
                }
                _ => Err("bool must be 1 byte"),
            },
            Inner::I16(b) => be(v).map(|x| b.append_value(i16::from_be_bytes(x))),
            Inner::I32(b) => be(v).map(|x| b.append_value(i32::from_be_bytes(x))),
            Inner::I64(b) => be(v).map(|x| b.append_value(i64::from_be_bytes(x))),
            Inner::U32(b) => be(v).map(|x| b.append_value(u32::from_be_bytes(x))),
            Inner::F32(b) => be(v).map(|x| b.append_value(f32::from_be_bytes(x))),
            Inner::F64(b) => be(v).map(|x| b.append_value(f64::from_be_bytes(x))),
            Inner::Money { b, .. } => {
                be(v).map(|x| b.append_value(i128::from(i64::from_be_bytes(x))))
            }
            Inner::Dec128 { .. } | Inner::Dec256 { .. } => return self.decimal_binary(v),
            Inner::Str { b, kind } => {
                let s = &mut self.scratch;
                s.clear();
                let r = match kind {
                    StrKind::Text => text::utf8(v).map(|t| b.append_value(t)),
                    StrKind::Jsonb => match v {
                        [1, rest @ ..] => text::utf8(rest).map(|t| b.append_value(t)),
                        _ => Err("unknown jsonb binary version"),
                    },
                    StrKind::Char => match v {
                        [] | [0] => {
                            b.append_value("");
                            Ok(())
                        }
                        [c] if c.is_ascii() => {
                            s.push(*c as char);
                            b.append_value(&*s);
                            Ok(())
                        }
                        [c] => {
                            // "char" prints a high-bit byte as a backslash octal escape.
                            use std::fmt::Write;
                            let _ = write!(s, "\\{c:03o}");
                            b.append_value(&*s);
                            Ok(())
                        }
                        _ => Err("\"char\" must be 1 byte"),
                    },
                    StrKind::NumericText => match numeric::parse_binary(v) {
                        Err(e) => Err(e),
                        Ok(Err(sp)) => {
                            b.append_value(sp.as_str());
                            Ok(())
                        }
                        Ok(Ok(n)) => {
                            numeric::write_text(&n, s);
                            b.append_value(&*s);
                            Ok(())
                        }
                    },
                    StrKind::TimeTz => {
                        temporal::timetz_binary_to_text(v, s).map(|()| b.append_value(&*s))
                    }
                    StrKind::Inet => net::inet_to_text(v, s).map(|()| b.append_value(&*s)),
                    StrKind::MacAddr => net::mac_to_text(v, 6, s).map(|()| b.append_value(&*s)),
                    StrKind::MacAddr8 => net::mac_to_text(v, 8, s).map(|()| b.append_value(&*s)),
                    StrKind::PgLsn => net::lsn_to_text(v, s).map(|()| b.append_value(&*s)),
                    StrKind::TextOnly => {
                        return Err(TypeError::BinaryUnsupported {
                            pg_type: self.pg_type.to_string(),
                        })
                    }
                };
                r
            }
            Inner::Binary(b) => {
                b.append_value(v);
                Ok(())
            }
            Inner::Date(b) => temporal::date_from_binary(v).map(|d| b.append_value(d)),
            Inner::Time(b) => temporal::time_from_binary(v).map(|t| b.append_value(t)),
            Inner::Timestamp { b, .. } => {
                temporal::timestamp_from_binary(v).map(|t| b.append_value(t))
            }
            Inner::Interval(b) => temporal::interval_from_binary(v)
                .map(|(m, d, n)| b.append_value(IntervalMonthDayNano::new(m, d, n))),
            Inner::Uuid(b) => match v.len() {
                16 => {
                    b.append_value(v).expect("16 bytes");
                    Ok(())
                }
                _ => Err("uuid must be 16 bytes"),
            },
            Inner::List(l) => {
                let l = &mut **l;
                let child = &mut l.child;
                let r = array::parse_array(
                    v,
                    |e| child.append_binary(e),
                    |msg| TypeError::InvalidValue {
                        pg_type: self.pg_type.to_string(),
                        value: show_value(v, true),
                        reason: msg.to_owned(),
                    },
                );
                return end_list(l, r);
            }
        };
        r.map_err(|e| self.invalid(v, true, e))
    }

    fn text(&mut self, v: &[u8]) -> Result<(), TypeError> {
        let r: Res<()> = match &mut self.inner {
            Inner::Bool(b) => text::parse_bool(v).map(|x| b.append_value(x)),
            Inner::I16(b) => text::parse_num(v).map(|x| b.append_value(x)),
            Inner::I32(b) => text::parse_num(v).map(|x| b.append_value(x)),
            Inner::I64(b) => text::parse_num(v).map(|x| b.append_value(x)),
            Inner::U32(b) => text::parse_num(v).map(|x| b.append_value(x)),
            Inner::F32(b) => text::parse_num(v).map(|x| b.append_value(x)),
            Inner::F64(b) => text::parse_num(v).map(|x| b.append_value(x)),
            Inner::Money { b, scale } => {
                text::money_from_text(v, *scale).map(|x| b.append_value(i128::from(x)))
            }
            Inner::Dec128 { .. } | Inner::Dec256 { .. } => return self.decimal_text(v),
            Inner::Str { b, kind } => match kind {
                StrKind::NumericText => match numeric::parse_text(v) {
                    Ok(_) => text::utf8(v).map(|t| b.append_value(t)),
                    Err(e) => Err(e),
                },
                _ => text::utf8(v).map(|t| b.append_value(t)),
            },
            Inner::Binary(b) => {
                let r = text::bytea_from_text(v, &mut self.scratch_bytes);
                r.map(|()| b.append_value(&self.scratch_bytes))
            }
            Inner::Date(b) => temporal::date_from_text(v).map(|d| b.append_value(d)),
            Inner::Time(b) => temporal::time_from_text(v).map(|t| b.append_value(t)),
            Inner::Timestamp { b, tz } => {
                temporal::timestamp_from_text(v, *tz).map(|t| b.append_value(t))
            }
            Inner::Interval(b) => temporal::interval_from_text(v)
                .map(|(m, d, n)| b.append_value(IntervalMonthDayNano::new(m, d, n))),
            Inner::Uuid(b) => net::uuid_from_text(v).map(|u| b.append_value(u).expect("16 bytes")),
            Inner::List(l) => {
                let l = &mut **l;
                let child = &mut l.child;
                let r = text::parse_array(
                    v,
                    &mut l.buf,
                    |e| child.append_text(e),
                    |msg| TypeError::InvalidValue {
                        pg_type: self.pg_type.to_string(),
                        value: show_value(v, false),
                        reason: msg.to_owned(),
                    },
                );
                return end_list(l, r);
            }
        };
        r.map_err(|e| self.invalid(v, false, e))
    }

    fn decimal_binary(&mut self, v: &[u8]) -> Result<(), TypeError> {
        let n = match numeric::parse_binary(v) {
            Err(e) => return Err(self.invalid(v, true, e)),
            Ok(Err(sp)) => return self.decimal_special(sp),
            Ok(Ok(n)) => n,
        };
        let r = match &mut self.inner {
            Inner::Dec128 {
                b,
                precision,
                scale,
                ..
            } => numeric::binary_to_decimal::<i128>(&n, *precision, *scale)
                .map(|x| b.append_value(x)),
            Inner::Dec256 {
                b,
                precision,
                scale,
                ..
            } => numeric::binary_to_decimal::<i256>(&n, *precision, *scale)
                .map(|x| b.append_value(x)),
            _ => unreachable!(),
        };
        r.map_err(|e| {
            self.scratch.clear();
            numeric::write_text(&n, &mut self.scratch);
            let shown = show_value(self.scratch.as_bytes(), false);
            self.out_of_range(shown, e)
        })
    }

    fn decimal_text(&mut self, v: &[u8]) -> Result<(), TypeError> {
        let (negative, int, frac) = match numeric::parse_text(v) {
            Err(e) => return Err(self.invalid(v, false, e)),
            Ok(TextNumeric::Special(sp)) => return self.decimal_special(sp),
            Ok(TextNumeric::Finite {
                negative,
                int,
                frac,
            }) => (negative, int, frac),
        };
        let r =
            match &mut self.inner {
                Inner::Dec128 {
                    b,
                    precision,
                    scale,
                    ..
                } => dec_text::<i128>(negative, int, frac, *precision, *scale)
                    .map(|x| b.append_value(x)),
                Inner::Dec256 {
                    b,
                    precision,
                    scale,
                    ..
                } => dec_text::<i256>(negative, int, frac, *precision, *scale)
                    .map(|x| b.append_value(x)),
                _ => unreachable!(),
            };
        r.map_err(|e| self.out_of_range(show_value(v, false), e))
    }

    fn out_of_range(&self, value: String, e: FitError) -> TypeError {
        TypeError::OutOfRange {
            pg_type: self.pg_type.to_string(),
            value,
            arrow: self.data_type.to_string(),
            reason: e.reason().to_owned(),
        }
    }

    fn decimal_special(&mut self, sp: Special) -> Result<(), TypeError> {
        let mode = match &self.inner {
            Inner::Dec128 { special, .. } | Inner::Dec256 { special, .. } => *special,
            _ => unreachable!(),
        };
        match mode {
            NumericMode::Error => Err(TypeError::NumericSpecial {
                pg_type: self.pg_type.to_string(),
                value: sp.as_str().to_owned(),
                arrow: self.data_type.to_string(),
            }),
            NumericMode::NullWithWarning => {
                self.append_null();
                let (t, a) = (&self.pg_type, &self.data_type);
                self.warnings
                    .add(|| format!("{t} value {} stored as NULL in {a}", sp.as_str()));
                Ok(())
            }
        }
    }
}

fn dec_text<T: DecInt>(neg: bool, int: &[u8], frac: &[u8], p: u8, s: i8) -> Result<T, FitError> {
    numeric::text_to_decimal::<T>(neg, int, frac, p, s)
}

/// Closes one list row after its elements were appended: valid on success; on error
/// the row becomes NULL (its offsets still cover any elements appended before the
/// failure, which Arrow permits under a null slot).
fn end_list(l: &mut ListState, r: Result<(), TypeError>) -> Result<(), TypeError> {
    let end = i32::try_from(l.child.len()).unwrap_or(i32::MAX);
    l.offsets.push(end);
    match r {
        Ok(()) => {
            l.nulls.append_non_null();
            Ok(())
        }
        Err(e) => {
            l.nulls.append_null();
            Err(e)
        }
    }
}

#[inline]
fn be<const N: usize>(v: &[u8]) -> Res<[u8; N]> {
    v.try_into()
        .map_err(|_| "wrong length for this binary type")
}
