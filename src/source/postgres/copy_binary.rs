//! Pure parser for PostgreSQL's binary COPY format (`COPY ... TO STDOUT
//! (FORMAT binary)`): the snapshot's hot path.
//!
//! Bytes in, Arrow out. Feed the stream in chunks of any size with
//! [`CopyBinaryDecoder::feed`]; each complete tuple's fields go straight into
//! one [`ColumnDecoder`] per column (`append_binary`, no per-row structs).
//! Whole tuples are decoded from the caller's chunk without copying; only a
//! tuple that straddles two chunks is assembled in a small internal buffer.
//! A tuple is decoded only once all its bytes are there, so the columns
//! always hold the same number of values.
//!
//! Format (PostgreSQL docs, "COPY", "Binary Format"): an 11-byte signature
//! `PGCOPY\n\xff\r\n\0`, an i32 flags field (bit 16: OIDs included; bits
//! 17-31 critical, must be zero), an i32 header-extension length and that
//! many bytes; then tuples, each an i16 field count followed per field by an
//! i32 length (-1 = NULL) and the value in the type's binary send format;
//! then the trailer, an i16 of -1. All integers are big-endian.

use super::types::{ColumnDecoder, TypeError};

/// The fixed 11-byte signature that opens a binary COPY stream.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Signature + flags + extension length.
const HEADER_FIXED: usize = 11 + 4 + 4;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CopyBinaryError {
    #[error("not a binary COPY stream: bad signature")]
    BadSignature,
    #[error(
        "binary COPY header flags {0:#010x} are not supported (OIDs or unknown critical flags)"
    )]
    UnsupportedFlags(u32),
    #[error("binary COPY header extension length {0} is negative")]
    BadHeaderExtension(i32),
    #[error("binary COPY row {row}: {got} fields, expected {expected}")]
    FieldCount { row: u64, expected: usize, got: i16 },
    #[error("binary COPY row {row}, column {column}: invalid field length {len}")]
    BadFieldLength { row: u64, column: usize, len: i32 },
    /// A value that its column's decoder rejected. A NULL stands in its
    /// place and the rest of the row was decoded, so the columns stay aligned.
    #[error("binary COPY row {row}, column {column}: {source}")]
    Value {
        row: u64,
        column: usize,
        source: TypeError,
    },
    #[error("binary COPY: {0} bytes after the trailer")]
    TrailingData(usize),
    #[error("binary COPY stream ended early ({0})")]
    Truncated(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the fixed part of the header.
    Header,
    /// Skipping this many header-extension bytes.
    Extension(usize),
    Tuples,
    Done,
}

/// How much of a tuple a buffer holds.
enum Scan {
    /// A whole tuple of this many bytes (or the 2-byte trailer).
    Complete(usize),
    /// At least this many bytes are needed to know more.
    NeedAtLeast(usize),
}

/// Incremental binary COPY parser for a fixed number of columns.
#[derive(Debug)]
pub struct CopyBinaryDecoder {
    columns: usize,
    state: State,
    /// Bytes of an incomplete header or tuple carried over between chunks.
    pending: Vec<u8>,
    rows: u64,
}

impl CopyBinaryDecoder {
    /// A parser for a stream whose tuples have `columns` fields.
    pub fn new(columns: usize) -> Self {
        CopyBinaryDecoder {
            columns,
            state: State::Header,
            pending: Vec::new(),
            rows: 0,
        }
    }

    /// Rows decoded so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// True once the trailer has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds the next chunk; complete tuples are appended to `out` (one
    /// decoder per column, in column order). Returns the number of rows
    /// appended by this call. On a [`CopyBinaryError::Value`] error the
    /// offending row was appended (with a NULL in place of the bad value);
    /// the caller decides whether to go on. Any other error is fatal for
    /// the stream.
    pub fn feed(
        &mut self,
        mut chunk: &[u8],
        out: &mut [ColumnDecoder],
    ) -> Result<usize, CopyBinaryError> {
        assert_eq!(out.len(), self.columns, "one ColumnDecoder per COPY column");
        let before = self.rows;
        // Header (fixed part, then the extension), buffered until complete.
        while !chunk.is_empty() {
            match self.state {
                State::Header => {
                    let take = (HEADER_FIXED - self.pending.len()).min(chunk.len());
                    self.pending.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if self.pending.len() == HEADER_FIXED {
                        let ext = parse_header(&self.pending)?;
                        self.pending.clear();
                        self.state = State::Extension(ext);
                    }
                }
                State::Extension(n) => {
                    let skip = n.min(chunk.len());
                    chunk = &chunk[skip..];
                    self.state = if n == skip {
                        State::Tuples
                    } else {
                        State::Extension(n - skip)
                    };
                }
                State::Tuples | State::Done => break,
            }
        }
        if self.state == State::Extension(0) {
            self.state = State::Tuples;
        }
        let mut first_err = None;
        // A tuple left over from the previous chunk: complete it from this one.
        while !self.pending.is_empty() && self.state == State::Tuples {
            match scan(&self.pending, self.columns, self.rows)? {
                Scan::Complete(len) => {
                    debug_assert_eq!(len, self.pending.len());
                    let pending = std::mem::take(&mut self.pending);
                    let r = self.decode_one(&pending, out);
                    self.pending = pending;
                    self.pending.clear();
                    keep_first(&mut first_err, r);
                }
                Scan::NeedAtLeast(n) => {
                    if chunk.is_empty() {
                        return finish_feed(first_err, self.rows - before);
                    }
                    let take = (n - self.pending.len()).min(chunk.len());
                    self.pending.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                }
            }
        }
        // Whole tuples straight from the chunk.
        while !chunk.is_empty() {
            if self.state == State::Done {
                return Err(CopyBinaryError::TrailingData(chunk.len()));
            }
            match scan(chunk, self.columns, self.rows)? {
                Scan::Complete(len) => {
                    let r = self.decode_one(&chunk[..len], out);
                    keep_first(&mut first_err, r);
                    chunk = &chunk[len..];
                }
                Scan::NeedAtLeast(_) => {
                    self.pending.extend_from_slice(chunk);
                    break;
                }
            }
        }
        finish_feed(first_err, self.rows - before)
    }

    /// Call at the end of the stream: an error unless the trailer was read.
    pub fn finish(&self) -> Result<u64, CopyBinaryError> {
        match self.state {
            State::Done => Ok(self.rows),
            State::Header | State::Extension(_) => Err(CopyBinaryError::Truncated("in the header")),
            State::Tuples => Err(CopyBinaryError::Truncated(if self.pending.is_empty() {
                "no trailer"
            } else {
                "inside a tuple"
            })),
        }
    }

    /// Decodes one complete tuple (as found by [`scan`]) or the trailer.
    fn decode_one(&mut self, buf: &[u8], out: &mut [ColumnDecoder]) -> Result<(), CopyBinaryError> {
        if buf.len() == 2 {
            // The trailer (scan only returns 2 for it when columns > 0).
            if i16::from_be_bytes([buf[0], buf[1]]) == -1 {
                self.state = State::Done;
                return Ok(());
            }
        }
        let mut pos = 2;
        let mut first_err = None;
        for (column, dec) in out.iter_mut().enumerate() {
            let len = i32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap());
            pos += 4;
            let r = if len < 0 {
                dec.append_binary(None)
            } else {
                let v = &buf[pos..pos + len as usize];
                pos += len as usize;
                dec.append_binary(Some(v))
            };
            if let Err(source) = r {
                if first_err.is_none() {
                    first_err = Some(CopyBinaryError::Value {
                        row: self.rows,
                        column,
                        source,
                    });
                }
            }
        }
        self.rows += 1;
        first_err.map_or(Ok(()), Err)
    }
}

fn keep_first(slot: &mut Option<CopyBinaryError>, r: Result<(), CopyBinaryError>) {
    if let Err(e) = r {
        slot.get_or_insert(e);
    }
}

fn finish_feed(err: Option<CopyBinaryError>, rows: u64) -> Result<usize, CopyBinaryError> {
    match err {
        Some(e) => Err(e),
        None => Ok(rows as usize),
    }
}

/// Checks the fixed header; returns the extension length.
fn parse_header(h: &[u8]) -> Result<usize, CopyBinaryError> {
    if &h[..11] != SIGNATURE {
        return Err(CopyBinaryError::BadSignature);
    }
    let flags = u32::from_be_bytes(h[11..15].try_into().unwrap());
    // Bit 16 = OIDs (gone since PG 12); bits 17-31 critical, unknown.
    if flags & 0xffff_0000 != 0 {
        return Err(CopyBinaryError::UnsupportedFlags(flags));
    }
    let ext = i32::from_be_bytes(h[15..19].try_into().unwrap());
    usize::try_from(ext).map_err(|_| CopyBinaryError::BadHeaderExtension(ext))
}

/// Finds the extent of the tuple (or trailer) at the start of `buf`,
/// validating the field count and lengths without decoding values.
fn scan(buf: &[u8], columns: usize, row: u64) -> Result<Scan, CopyBinaryError> {
    if buf.len() < 2 {
        return Ok(Scan::NeedAtLeast(2));
    }
    let count = i16::from_be_bytes([buf[0], buf[1]]);
    if count == -1 {
        return Ok(Scan::Complete(2));
    }
    if count < 0 || count as usize != columns {
        return Err(CopyBinaryError::FieldCount {
            row,
            expected: columns,
            got: count,
        });
    }
    let mut pos = 2usize;
    for column in 0..columns {
        if buf.len() < pos + 4 {
            return Ok(Scan::NeedAtLeast(pos + 4));
        }
        let len = i32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap());
        pos += 4;
        if len < -1 {
            return Err(CopyBinaryError::BadFieldLength { row, column, len });
        }
        if len > 0 {
            pos += len as usize;
        }
    }
    if buf.len() < pos {
        return Ok(Scan::NeedAtLeast(pos));
    }
    Ok(Scan::Complete(pos))
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        Array, AsArray, BooleanArray, Decimal128Array, FixedSizeBinaryArray, Float64Array,
        Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };

    use super::*;
    use crate::source::postgres::types::{arrow_type, oid, PgType, TypeOptions};

    /// Captured from PostgreSQL 15.18 with
    /// `\copy (SELECT * FROM (VALUES
    ///   (1::int8, 42::int4, 1.5::float8, 12345.6789::numeric(18,4), 'héllo'::text,
    ///    '2024-01-31 12:00:00.000001+00'::timestamptz,
    ///    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, '{"a": 1}'::jsonb, true),
    ///   (2, NULL, -0.25, -0.0001, '', NULL, NULL, NULL, false),
    ///   (3, -7, 'NaN', 0, NULL, 'infinity', '00000000-0000-0000-0000-000000000001', '[]', NULL)
    ///  ) v(id, i, f, n, t, ts, u, j, b)) to stdout with (format binary)`.
    const CAPTURED: &str = "5047434f50590aff0d0a0000000000000000000009000000080000000000000001000000040000002a000000083ff80000000000000000000e0003000100000004000109291a850000000668c3a96c6c6f000000080002b33b6312300100000010a0eebc999c0b4ef8bb6d6bb9bd380a1100000009017b2261223a20317d00000001010009000000080000000000000002ffffffff00000008bfd00000000000000000000a0001ffff40000004000100000000ffffffffffffffffffffffff0000000100000900000008000000000000000300000004fffffff9000000087ff8000000000000000000080000000000000000ffffffff000000087fffffffffffffff000000100000000000000000000000000000000100000003015b5dffffffffffff";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decoders() -> Vec<ColumnDecoder> {
        let mut numeric = PgType::base(oid::NUMERIC, "numeric");
        numeric.typmod = ((18 << 16) | 4) + 4;
        let types = [
            PgType::base(oid::INT8, "int8"),
            PgType::base(oid::INT4, "int4"),
            PgType::base(oid::FLOAT8, "float8"),
            numeric,
            PgType::base(oid::TEXT, "text"),
            PgType::base(oid::TIMESTAMPTZ, "timestamptz"),
            PgType::base(oid::UUID, "uuid"),
            PgType::base(oid::JSONB, "jsonb"),
            PgType::base(oid::BOOL, "bool"),
        ];
        types
            .iter()
            .map(|t| ColumnDecoder::new(&arrow_type(t, &TypeOptions::default()).unwrap(), 4))
            .collect()
    }

    fn check_values(cols: &mut [ColumnDecoder]) {
        let arrays: Vec<_> = cols.iter_mut().map(|c| c.finish()).collect();
        for a in &arrays {
            assert_eq!(a.len(), 3);
        }
        let id = arrays[0].as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(id.values().to_vec(), vec![1, 2, 3]);
        let i = arrays[1].as_any().downcast_ref::<Int32Array>().unwrap();
        assert_eq!((i.value(0), i.is_null(1), i.value(2)), (42, true, -7));
        let f = arrays[2].as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!((f.value(0), f.value(1)), (1.5, -0.25));
        assert!(f.value(2).is_nan());
        let n = arrays[3]
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert_eq!(
            (n.value(0), n.value(1), n.value(2)),
            (123_456_789, -1, 0),
            "numeric(18,4) in units of 0.0001"
        );
        let t = arrays[4].as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((t.value(0), t.value(1), t.is_null(2)), ("héllo", "", true));
        let ts = arrays[5]
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(ts.value(0), 1_706_702_400_000_001);
        assert!(ts.is_null(1));
        assert_eq!(ts.value(2), i64::MAX, "infinity sentinel");
        let u = arrays[6]
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .unwrap();
        assert_eq!(
            crate::source::postgres::types::format_uuid(u.value(0).try_into().unwrap()),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        );
        assert!(u.is_null(1));
        assert_eq!(u.value(2)[15], 1);
        let j = arrays[7].as_string::<i32>();
        assert_eq!(
            (j.value(0), j.is_null(1), j.value(2)),
            ("{\"a\": 1}", true, "[]")
        );
        let b = arrays[8].as_any().downcast_ref::<BooleanArray>().unwrap();
        assert_eq!((b.value(0), b.value(1), b.is_null(2)), (true, false, true));
    }

    #[test]
    fn captured_stream_in_one_chunk() {
        let bytes = unhex(CAPTURED);
        let mut cols = decoders();
        let mut d = CopyBinaryDecoder::new(9);
        assert_eq!(d.feed(&bytes, &mut cols).unwrap(), 3);
        assert!(d.is_done());
        assert_eq!(d.finish().unwrap(), 3);
        check_values(&mut cols);
    }

    #[test]
    fn captured_stream_in_every_chunking() {
        let bytes = unhex(CAPTURED);
        for size in 1..=bytes.len() {
            let mut cols = decoders();
            let mut d = CopyBinaryDecoder::new(9);
            let mut rows = 0;
            for chunk in bytes.chunks(size) {
                rows += d.feed(chunk, &mut cols).unwrap();
                // Columns never diverge, whatever the chunk boundaries.
                let lens: Vec<_> = cols.iter().map(|c| c.len()).collect();
                assert!(lens.iter().all(|&l| l == rows), "size {size}: {lens:?}");
            }
            assert_eq!(d.finish().unwrap(), 3, "chunk size {size}");
            check_values(&mut cols);
        }
    }

    #[test]
    fn empty_chunks_and_split_boundaries() {
        let bytes = unhex(CAPTURED);
        let mut cols = decoders();
        let mut d = CopyBinaryDecoder::new(9);
        d.feed(&[], &mut cols).unwrap();
        let (a, rest) = bytes.split_at(19);
        let (b, c) = rest.split_at(60);
        assert_eq!(d.feed(a, &mut cols).unwrap(), 0);
        d.feed(&[], &mut cols).unwrap();
        d.feed(b, &mut cols).unwrap();
        d.feed(c, &mut cols).unwrap();
        assert_eq!(d.finish().unwrap(), 3);
        check_values(&mut cols);
    }

    #[test]
    fn header_extension_is_skipped() {
        let mut s = SIGNATURE.to_vec();
        s.extend_from_slice(&0u32.to_be_bytes());
        s.extend_from_slice(&3i32.to_be_bytes());
        s.extend_from_slice(b"xyz");
        s.extend_from_slice(&1i16.to_be_bytes());
        s.extend_from_slice(&4i32.to_be_bytes());
        s.extend_from_slice(&7i32.to_be_bytes());
        s.extend_from_slice(&(-1i16).to_be_bytes());
        for size in 1..=s.len() {
            let mut cols = vec![ColumnDecoder::new(
                &arrow_type(&PgType::base(oid::INT4, "int4"), &TypeOptions::default()).unwrap(),
                1,
            )];
            let mut d = CopyBinaryDecoder::new(1);
            for c in s.chunks(size) {
                d.feed(c, &mut cols).unwrap();
            }
            assert_eq!(d.finish().unwrap(), 1);
            let a = cols[0].finish();
            assert_eq!(a.as_any().downcast_ref::<Int32Array>().unwrap().value(0), 7);
        }
    }

    #[test]
    fn errors() {
        let bytes = unhex(CAPTURED);
        let one = decoders;
        // Bad signature.
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(
            CopyBinaryDecoder::new(9).feed(&bad, &mut one()),
            Err(CopyBinaryError::BadSignature)
        );
        // OIDs flag.
        let mut oids = bytes.clone();
        oids[12] = 1;
        assert!(matches!(
            CopyBinaryDecoder::new(9).feed(&oids, &mut one()),
            Err(CopyBinaryError::UnsupportedFlags(0x0001_0000))
        ));
        // Wrong field count: parse the 9-column stream as 8... (via patched count).
        let mut count = bytes.clone();
        count[20] = 8;
        assert!(matches!(
            CopyBinaryDecoder::new(9).feed(&count, &mut one()),
            Err(CopyBinaryError::FieldCount { row: 0, got: 8, .. })
        ));
        // Truncated.
        let mut d = CopyBinaryDecoder::new(9);
        d.feed(&bytes[..bytes.len() - 2], &mut one()).unwrap();
        assert_eq!(d.finish(), Err(CopyBinaryError::Truncated("no trailer")));
        let mut d = CopyBinaryDecoder::new(9);
        d.feed(&bytes[..40], &mut one()).unwrap();
        assert_eq!(
            d.finish(),
            Err(CopyBinaryError::Truncated("inside a tuple"))
        );
        let mut d = CopyBinaryDecoder::new(9);
        d.feed(&bytes[..5], &mut one()).unwrap();
        assert_eq!(d.finish(), Err(CopyBinaryError::Truncated("in the header")));
        // Data after the trailer.
        let mut more = bytes.clone();
        more.push(0);
        assert_eq!(
            CopyBinaryDecoder::new(9).feed(&more, &mut one()),
            Err(CopyBinaryError::TrailingData(1))
        );
        // Negative length other than -1.
        let mut s = SIGNATURE.to_vec();
        s.extend_from_slice(&[0; 8]);
        s.extend_from_slice(&1i16.to_be_bytes());
        s.extend_from_slice(&(-2i32).to_be_bytes());
        let mut cols = vec![ColumnDecoder::new(
            &arrow_type(&PgType::base(oid::INT4, "int4"), &TypeOptions::default()).unwrap(),
            1,
        )];
        assert!(matches!(
            CopyBinaryDecoder::new(1).feed(&s, &mut cols),
            Err(CopyBinaryError::BadFieldLength { len: -2, .. })
        ));
    }

    #[test]
    fn bad_value_keeps_columns_aligned() {
        // Row 0: int4 field with 3 bytes (invalid), then a valid int4.
        let mut s = SIGNATURE.to_vec();
        s.extend_from_slice(&[0; 8]);
        s.extend_from_slice(&2i16.to_be_bytes());
        s.extend_from_slice(&3i32.to_be_bytes());
        s.extend_from_slice(&[1, 2, 3]);
        s.extend_from_slice(&4i32.to_be_bytes());
        s.extend_from_slice(&9i32.to_be_bytes());
        s.extend_from_slice(&(-1i16).to_be_bytes());
        let m = arrow_type(&PgType::base(oid::INT4, "int4"), &TypeOptions::default()).unwrap();
        let mut cols = vec![ColumnDecoder::new(&m, 1), ColumnDecoder::new(&m, 1)];
        let mut d = CopyBinaryDecoder::new(2);
        let err = d.feed(&s, &mut cols).unwrap_err();
        assert!(
            matches!(
                err,
                CopyBinaryError::Value {
                    row: 0,
                    column: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(d.finish().unwrap(), 1);
        let a = cols[0].finish();
        let b = cols[1].finish();
        assert!(a.is_null(0));
        assert_eq!(b.as_any().downcast_ref::<Int32Array>().unwrap().value(0), 9);
    }
}
