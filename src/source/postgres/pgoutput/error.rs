//! The decoder's error type.

/// Errors from decoding pgoutput messages and replication CopyData frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message was empty (no tag byte).
    #[error("empty {context} message")]
    Empty {
        /// What was expected ("pgoutput", "replication CopyData").
        context: &'static str,
    },
    /// The message ended inside a field.
    #[error(
        "truncated {message} message: {field} needs {needed} byte(s) at offset {offset}, \
         {available} available"
    )]
    Truncated {
        /// Message type being decoded.
        message: &'static str,
        /// Field that did not fit.
        field: &'static str,
        /// Offset of the field in the message.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the message.
        available: usize,
    },
    /// A string field had no NUL terminator before the end of the message.
    #[error(
        "truncated {message} message: string {field} at offset {offset} has no terminating NUL"
    )]
    UnterminatedString {
        /// Message type being decoded.
        message: &'static str,
        /// Field being read.
        field: &'static str,
        /// Offset of the string in the message.
        offset: usize,
    },
    /// The first byte is not a known pgoutput message type.
    #[error("unknown pgoutput message tag 0x{tag:02x} ({})", printable(*tag))]
    UnknownTag {
        /// The tag byte.
        tag: u8,
    },
    /// The first byte of a replication CopyData payload is not 'w' or 'k'.
    #[error("unknown replication CopyData tag 0x{tag:02x} ({})", printable(*tag))]
    UnknownCopyDataTag {
        /// The tag byte.
        tag: u8,
    },
    /// A tuple marker or a column kind byte is not one of the allowed ones
    /// (`'N'`/`'K'`/`'O'` for tuple markers, `'n'`/`'u'`/`'t'`/`'b'` for columns).
    #[error("bad tuple kind 0x{byte:02x} ({}) for {field} in {message} message", printable(*byte))]
    BadTupleKind {
        /// Message type being decoded.
        message: &'static str,
        /// Field being read.
        field: &'static str,
        /// The offending byte.
        byte: u8,
    },
    /// A Relation message's replica identity byte is not d, n, f or i.
    #[error("unknown replica identity 0x{byte:02x} ({}) in Relation message", printable(*byte))]
    BadReplicaIdentity {
        /// The offending byte.
        byte: u8,
    },
    /// A name (string field) is not valid UTF-8.
    #[error("invalid UTF-8 in {field} of {message} message")]
    InvalidUtf8 {
        /// Message type being decoded.
        message: &'static str,
        /// Field being read.
        field: &'static str,
    },
    /// A count or length field is negative.
    #[error("negative {field} ({value}) in {message} message")]
    NegativeLength {
        /// Message type being decoded.
        message: &'static str,
        /// Field being read.
        field: &'static str,
        /// The value read.
        value: i64,
    },
    /// Bytes were left after the last field: the decoder's protocol version
    /// or streaming mode does not match what the server sends.
    #[error("{count} unexpected trailing byte(s) after {message} message")]
    TrailingBytes {
        /// Message type decoded.
        message: &'static str,
        /// Bytes left over.
        count: usize,
    },
    /// The message is valid on its own but not here (protocol version, or
    /// streamed-block state).
    #[error("unexpected {message} message: {reason}")]
    UnexpectedMessage {
        /// Message type decoded.
        message: &'static str,
        /// Why it is not allowed here.
        reason: &'static str,
    },
    /// The message is larger than 4 GiB (pgoutput messages are at most 1 GiB).
    #[error("pgoutput message of {len} bytes is too large")]
    TooLarge {
        /// The message length.
        len: usize,
    },
}

fn printable(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        "not printable".to_owned()
    }
}
