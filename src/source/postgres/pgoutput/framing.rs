//! The streaming replication sub-protocol carried in CopyData messages
//! (the layer that wraps pgoutput): XLogData (`'w'`) and Primary keepalive
//! (`'k'`) from the server, Standby status update (`'r'`) from the client.

use bytes::{BufMut, Bytes, BytesMut};

use super::reader::Reader;
use super::DecodeError;

/// Microseconds from the Unix epoch to the PostgreSQL epoch (2000-01-01 UTC).
/// `unix_micros = pg_micros + PG_EPOCH_UNIX_MICROS`.
pub const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A server-to-client message of the replication CopyBoth stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// `'w'`: WAL data; for logical replication, one pgoutput message.
    XLogData {
        /// WAL position the data starts at (0 for some pgoutput messages).
        wal_start: u64,
        /// The server's current end of WAL.
        wal_end: u64,
        /// Server clock at send time, microseconds since 2000-01-01.
        server_clock: i64,
        /// The payload (zero-copy slice of the frame).
        data: Bytes,
    },
    /// `'k'`: keepalive.
    PrimaryKeepalive {
        /// The server's current end of WAL.
        wal_end: u64,
        /// Server clock at send time, microseconds since 2000-01-01.
        server_clock: i64,
        /// The server asks for a status update right away (to avoid a
        /// timeout disconnect).
        reply_requested: bool,
    },
}

/// Parses the payload of one CopyData (`'d'`) message received on a
/// replication connection.
pub fn parse_copy_data(b: Bytes) -> Result<ReplicationMessage, DecodeError> {
    let Some(&tag) = b.first() else {
        return Err(DecodeError::Empty {
            context: "replication CopyData",
        });
    };
    match tag {
        b'w' => {
            let mut r = Reader::new(&b, 1, "XLogData");
            let wal_start = r.u64("WAL start")?;
            let wal_end = r.u64("WAL end")?;
            let server_clock = r.i64("server clock")?;
            let data = r.rest();
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                server_clock,
                data,
            })
        }
        b'k' => {
            let mut r = Reader::new(&b, 1, "Primary keepalive");
            let out = ReplicationMessage::PrimaryKeepalive {
                wal_end: r.u64("WAL end")?,
                server_clock: r.i64("server clock")?,
                reply_requested: r.u8("reply flag")? != 0,
            };
            r.finish()?;
            Ok(out)
        }
        tag => Err(DecodeError::UnknownCopyDataTag { tag }),
    }
}

/// Length of a Standby status update payload.
pub const STANDBY_STATUS_LEN: usize = 34;

/// Builds the payload of a Standby status update (`'r'`), to be sent inside
/// a CopyData message. `write`/`flush`/`apply` are WAL positions, sent as
/// given (no `+1`); `client_clock` is microseconds since 2000-01-01; `reply`
/// asks the server to answer with a keepalive at once.
pub fn encode_standby_status(
    write: u64,
    flush: u64,
    apply: u64,
    client_clock: i64,
    reply: bool,
) -> Bytes {
    let mut b = BytesMut::with_capacity(STANDBY_STATUS_LEN);
    b.put_u8(b'r');
    b.put_u64(write);
    b.put_u64(flush);
    b.put_u64(apply);
    b.put_i64(client_clock);
    b.put_u8(u8::from(reply));
    b.freeze()
}
