//! TupleData: the column values of one row, stored flat.
//!
//! A decoded tuple keeps the message's [`Bytes`] (one reference count bump per
//! tuple) plus one small fixed-size slot per column (kind, offset, length).
//! Decoding a row therefore costs a single `Vec` allocation, whatever its
//! number of columns; values are read back as borrowed slices
//! ([`TupleData::get`]) or as zero-copy [`Bytes`] ([`TupleData::bytes`]).

use std::fmt;

use bytes::Bytes;

use super::reader::Reader;
use super::DecodeError;

/// What a column of a tuple holds, without its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ValueKind {
    /// `'n'`: SQL NULL.
    Null,
    /// `'u'`: an unchanged TOASTed value whose bytes were not sent. Not NULL:
    /// the row still holds its previous value.
    UnchangedToast,
    /// `'t'`: the value in the type's text output format.
    Text,
    /// `'b'`: the value in the type's binary send format (`binary 'true'`).
    Binary,
}

/// One column value of a tuple, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TupleValue<'a> {
    /// `'n'`: SQL NULL.
    Null,
    /// `'u'`: unchanged TOASTed value, bytes not sent (distinct from NULL).
    UnchangedToast,
    /// `'t'`: text format bytes (server encoding, not NUL-terminated).
    Text(&'a [u8]),
    /// `'b'`: binary (send/recv) format bytes.
    Binary(&'a [u8]),
}

impl<'a> TupleValue<'a> {
    /// The value's kind.
    #[inline]
    pub fn kind(&self) -> ValueKind {
        match self {
            TupleValue::Null => ValueKind::Null,
            TupleValue::UnchangedToast => ValueKind::UnchangedToast,
            TupleValue::Text(_) => ValueKind::Text,
            TupleValue::Binary(_) => ValueKind::Binary,
        }
    }

    /// The value's bytes for `Text` and `Binary`, `None` otherwise.
    #[inline]
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            TupleValue::Text(b) | TupleValue::Binary(b) => Some(b),
            TupleValue::Null | TupleValue::UnchangedToast => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    kind: ValueKind,
    start: u32,
    len: u32,
}

/// The columns of one row (`TupleData` on the wire), in the relation's
/// column order. Cheap to clone (one reference count and one `Vec` copy).
#[derive(Clone, Default)]
pub struct TupleData {
    buf: Bytes,
    slots: Vec<Slot>,
}

impl TupleData {
    /// Number of columns sent (the relation's column count, dropped and
    /// generated columns excluded).
    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the tuple has no columns.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    #[inline]
    fn slice(&self, s: Slot) -> &[u8] {
        let start = s.start as usize;
        self.buf
            .get(start..start + s.len as usize)
            .unwrap_or_default()
    }

    #[inline]
    fn value(&self, s: Slot) -> TupleValue<'_> {
        match s.kind {
            ValueKind::Null => TupleValue::Null,
            ValueKind::UnchangedToast => TupleValue::UnchangedToast,
            ValueKind::Text => TupleValue::Text(self.slice(s)),
            ValueKind::Binary => TupleValue::Binary(self.slice(s)),
        }
    }

    /// Column `i`, borrowed; `None` past the end.
    #[inline]
    pub fn get(&self, i: usize) -> Option<TupleValue<'_>> {
        self.slots.get(i).map(|&s| self.value(s))
    }

    /// The kind of column `i`; `None` past the end.
    #[inline]
    pub fn kind(&self, i: usize) -> Option<ValueKind> {
        self.slots.get(i).map(|s| s.kind)
    }

    /// Column `i`'s bytes as a zero-copy [`Bytes`] (shares the message
    /// buffer); `None` for NULL, unchanged TOAST, or past the end.
    #[inline]
    pub fn bytes(&self, i: usize) -> Option<Bytes> {
        let s = *self.slots.get(i)?;
        match s.kind {
            ValueKind::Text | ValueKind::Binary => {
                let start = s.start as usize;
                Some(self.buf.slice(start..start + s.len as usize))
            }
            ValueKind::Null | ValueKind::UnchangedToast => None,
        }
    }

    /// True if any column is an unchanged TOAST value (`'u'`).
    #[inline]
    pub fn has_unchanged_toast(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.kind == ValueKind::UnchangedToast)
    }

    /// The columns in order.
    #[inline]
    pub fn iter(&self) -> impl ExactSizeIterator<Item = TupleValue<'_>> + '_ {
        self.slots.iter().map(move |&s| self.value(s))
    }

    /// Decodes `Int16 n` followed by `n` columns.
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<TupleData, DecodeError> {
        let n = r.i16("tuple column count")?;
        if n < 0 {
            return Err(DecodeError::NegativeLength {
                message: r.message(),
                field: "tuple column count",
                value: i64::from(n),
            });
        }
        let n = n as usize;
        // Every column takes at least one byte: never trust `n` further than
        // the bytes that are actually there.
        let mut slots = Vec::with_capacity(n.min(r.remaining()));
        for _ in 0..n {
            let kind = match r.u8("tuple column kind")? {
                b'n' => ValueKind::Null,
                b'u' => ValueKind::UnchangedToast,
                b't' => ValueKind::Text,
                b'b' => ValueKind::Binary,
                byte => {
                    return Err(DecodeError::BadTupleKind {
                        message: r.message(),
                        field: "tuple column kind",
                        byte,
                    })
                }
            };
            let (start, len) = match kind {
                ValueKind::Text | ValueKind::Binary => {
                    r.len_prefixed("tuple column length", "tuple column value")?
                }
                ValueKind::Null | ValueKind::UnchangedToast => (0, 0),
            };
            // The message length was checked to fit in u32 before decoding.
            slots.push(Slot {
                kind,
                start: start as u32,
                len: len as u32,
            });
        }
        Ok(TupleData {
            buf: r.buf().clone(),
            slots,
        })
    }
}

impl PartialEq for TupleData {
    /// Equal when the column values are equal (the surrounding message bytes
    /// do not matter).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for TupleData {}

impl fmt::Debug for TupleData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Hex<'a>(&'a [u8]);
        impl fmt::Debug for Hex<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                const MAX: usize = 64;
                for b in self.0.iter().take(MAX) {
                    write!(f, "{b:02x}")?;
                }
                if self.0.len() > MAX {
                    write!(f, "..({} bytes)", self.0.len())?;
                }
                Ok(())
            }
        }
        struct Col<'a>(TupleValue<'a>);
        impl fmt::Debug for Col<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    TupleValue::Null => f.write_str("Null"),
                    TupleValue::UnchangedToast => f.write_str("UnchangedToast"),
                    TupleValue::Text(b) => match std::str::from_utf8(b) {
                        Ok(s) if s.len() <= 64 => write!(f, "Text({s:?})"),
                        _ => write!(f, "Text({:?})", Hex(b)),
                    },
                    TupleValue::Binary(b) => write!(f, "Binary({:?})", Hex(b)),
                }
            }
        }
        f.debug_list().entries(self.iter().map(Col)).finish()
    }
}
