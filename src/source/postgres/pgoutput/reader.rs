//! A bounds-checked big-endian cursor over one message. Every read either
//! succeeds or returns a [`DecodeError`] naming the message and field; nothing
//! here can panic on any input.

use bytes::Bytes;

use super::DecodeError;

pub(super) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    /// Name of the message being decoded, for error reports.
    msg: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader positioned at `pos` (usually 1, just after the tag byte).
    #[inline]
    pub(super) fn new(buf: &'a Bytes, pos: usize, msg: &'static str) -> Self {
        Reader { buf, pos, msg }
    }

    /// The whole message being read.
    #[inline]
    pub(super) fn buf(&self) -> &'a Bytes {
        self.buf
    }

    #[inline]
    pub(super) fn message(&self) -> &'static str {
        self.msg
    }

    #[inline]
    pub(super) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    #[inline]
    fn truncated(&self, field: &'static str, needed: usize) -> DecodeError {
        DecodeError::Truncated {
            message: self.msg,
            field,
            offset: self.pos,
            needed,
            available: self.remaining(),
        }
    }

    #[inline]
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let end = self.pos.wrapping_add(N);
        match self.buf.get(self.pos..end) {
            Some(s) => {
                let mut out = [0u8; N];
                out.copy_from_slice(s);
                self.pos = end;
                Ok(out)
            }
            None => Err(self.truncated(field, N)),
        }
    }

    #[inline]
    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.truncated(field, 1)),
        }
    }

    #[inline]
    pub(super) fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        self.array(field).map(i16::from_be_bytes)
    }

    #[inline]
    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    #[inline]
    pub(super) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    #[inline]
    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_be_bytes)
    }

    #[inline]
    pub(super) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    /// A length-prefixed (Int32) byte run; returns its start offset and length.
    /// A negative length is an error.
    #[inline]
    pub(super) fn len_prefixed(
        &mut self,
        len_field: &'static str,
        field: &'static str,
    ) -> Result<(usize, usize), DecodeError> {
        let len = self.i32(len_field)?;
        if len < 0 {
            return Err(DecodeError::NegativeLength {
                message: self.msg,
                field: len_field,
                value: i64::from(len),
            });
        }
        let len = len as usize;
        if len > self.remaining() {
            return Err(self.truncated(field, len));
        }
        let start = self.pos;
        self.pos += len;
        Ok((start, len))
    }

    /// A zero-copy slice of the next `len` bytes.
    #[inline]
    pub(super) fn bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        if len > self.remaining() {
            return Err(self.truncated(field, len));
        }
        let out = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }

    /// Everything left, zero-copy.
    #[inline]
    pub(super) fn rest(&mut self) -> Bytes {
        let out = self.buf.slice(self.pos.min(self.buf.len())..);
        self.pos = self.buf.len();
        out
    }

    /// A NUL-terminated UTF-8 string, borrowed.
    pub(super) fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let buf: &'a [u8] = self.buf.as_ref();
        let rest = buf.get(self.pos..).unwrap_or_default();
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::UnterminatedString {
                message: self.msg,
                field,
                offset: self.pos,
            });
        };
        let s = std::str::from_utf8(&rest[..nul]).map_err(|_| DecodeError::InvalidUtf8 {
            message: self.msg,
            field,
        })?;
        self.pos += nul + 1;
        Ok(s)
    }

    /// A NUL-terminated UTF-8 string, owned.
    #[inline]
    pub(super) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        self.str(field).map(str::to_owned)
    }

    /// Fails if any byte is left over: every pgoutput message has a fixed
    /// layout, so leftovers mean the decoder and server disagree (for example
    /// on the protocol version or the streaming mode).
    #[inline]
    pub(super) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes {
                message: self.msg,
                count,
            }),
        }
    }
}
