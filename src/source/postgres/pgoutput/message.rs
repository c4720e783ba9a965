//! The decoded message types.

use bytes::Bytes;

use super::{DecodeError, TupleData};

#[cfg(doc)]
use super::{TupleValue, PG_EPOCH_UNIX_MICROS};

/// A Relation's REPLICA IDENTITY setting (`pg_class.relreplident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `'d'`: the primary key (if any).
    Default,
    /// `'n'`: nothing.
    Nothing,
    /// `'f'`: all columns.
    Full,
    /// `'i'`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    pub(super) fn from_byte(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            b'd' => ReplicaIdentity::Default,
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            byte => return Err(DecodeError::BadReplicaIdentity { byte }),
        })
    }
}

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Column flags; bit 0 (`1`) marks a column that is part of the key
    /// (the replica identity; every column under REPLICA IDENTITY FULL).
    pub flags: u8,
    /// Column name, unquoted (may hold spaces, dots, upper case).
    pub name: String,
    /// Type OID (`pg_type.oid`).
    pub type_oid: u32,
    /// Type modifier (`atttypmod`), -1 if none.
    pub type_modifier: i32,
}

impl RelationColumn {
    /// True if the column is part of the replica identity key.
    #[inline]
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// The body of a Relation message: a table's schema as of this point in the
/// stream. Sent before the first change of a table in a session (and again
/// after its schema changed, and per streamed transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationBody {
    /// Inside a streamed block: xid of the (sub)transaction it belongs to.
    pub xid: Option<u32>,
    /// Relation OID: the id the change messages refer to.
    pub rel_id: u32,
    /// Schema name, unquoted; empty for `pg_catalog`.
    pub namespace: String,
    /// Table name, unquoted.
    pub name: String,
    /// Replica identity setting.
    pub replica_identity: ReplicaIdentity,
    /// Columns in the order tuples carry them.
    pub columns: Vec<RelationColumn>,
}

/// The old row image of an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `'K'`: only the replica identity key columns are meaningful; the other
    /// columns are sent as NULL.
    Key(TupleData),
    /// `'O'`: the whole old row (REPLICA IDENTITY FULL).
    Full(TupleData),
}

impl OldTuple {
    /// The tuple, whichever kind.
    #[inline]
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }

    /// True for a key-only old tuple (`'K'`).
    #[inline]
    pub fn is_key(&self) -> bool {
        matches!(self, OldTuple::Key(_))
    }
}

/// Truncate option bit: CASCADE.
pub const TRUNCATE_CASCADE: u8 = 1;
/// Truncate option bit: RESTART IDENTITY.
pub const TRUNCATE_RESTART_IDENTITY: u8 = 2;

/// One decoded pgoutput message. LSNs are raw `u64` WAL positions;
/// timestamps are microseconds since 2000-01-01 00:00:00 UTC (add
/// [`PG_EPOCH_UNIX_MICROS`] for Unix time). `xid: Option<u32>` fields are
/// `Some` exactly inside a streamed block (protocol >= 2); that xid is the one
/// of the *subtransaction* that made the change when there is one (not the
/// Stream Start xid): keep it, a Stream Abort with that `subxid` discards
/// exactly those changes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PgOutputMessage {
    /// `'B'`: start of a (non-streamed) transaction.
    Begin {
        /// LSN of the transaction's commit record (equals Commit's `commit_lsn`).
        final_lsn: u64,
        /// Commit timestamp.
        commit_ts: i64,
        /// Transaction id.
        xid: u32,
    },
    /// `'C'`: end of a transaction.
    Commit {
        /// Flags, currently unused (0).
        flags: u8,
        /// LSN of the commit record.
        commit_lsn: u64,
        /// End LSN of the commit record: the position to confirm once durable.
        end_lsn: u64,
        /// Commit timestamp.
        commit_ts: i64,
    },
    /// `'O'`: the transaction came from another node (replication origin).
    Origin {
        /// LSN of the commit on the origin server.
        origin_lsn: u64,
        /// Origin name.
        name: String,
    },
    /// `'R'`: a table's schema.
    Relation(RelationBody),
    /// `'Y'`: a non-builtin type used by a column.
    Type {
        /// Inside a streamed block: xid of the (sub)transaction that made it.
        xid: Option<u32>,
        /// Type OID.
        type_oid: u32,
        /// Schema of the type; empty for `pg_catalog`.
        namespace: String,
        /// Type name.
        name: String,
    },
    /// `'I'`: a row was inserted.
    Insert {
        /// Inside a streamed block: xid of the (sub)transaction that made it.
        xid: Option<u32>,
        /// Relation OID.
        rel_id: u32,
        /// The new row.
        new: TupleData,
    },
    /// `'U'`: a row was updated.
    Update {
        /// Inside a streamed block: xid of the (sub)transaction that made it.
        xid: Option<u32>,
        /// Relation OID.
        rel_id: u32,
        /// Old key (`'K'`, when the key changed) or old row (`'O'`, REPLICA
        /// IDENTITY FULL); `None` when the key did not change.
        old: Option<OldTuple>,
        /// The new row; unchanged TOASTed columns are
        /// [`TupleValue::UnchangedToast`].
        new: TupleData,
    },
    /// `'D'`: a row was deleted.
    Delete {
        /// Inside a streamed block: xid of the (sub)transaction that made it.
        xid: Option<u32>,
        /// Relation OID.
        rel_id: u32,
        /// The deleted row's key (`'K'`) or whole row (`'O'`).
        old: OldTuple,
    },
    /// `'T'`: tables were truncated.
    Truncate {
        /// Inside a streamed block: xid of the (sub)transaction that made it.
        xid: Option<u32>,
        /// Option bits: [`TRUNCATE_CASCADE`], [`TRUNCATE_RESTART_IDENTITY`].
        options: u8,
        /// Relation OIDs (those published; CASCADE-d ones included).
        rel_ids: Vec<u32>,
    },
    /// `'M'`: a `pg_logical_emit_message` (requires `messages 'true'`).
    Message {
        /// Inside a streamed block: xid of the (sub)transaction that made it.
        xid: Option<u32>,
        /// Whether the message is part of its transaction (flag bit 1);
        /// non-transactional ones arrive outside Begin/Commit.
        transactional: bool,
        /// LSN of the message.
        lsn: u64,
        /// The prefix given by the emitter.
        prefix: String,
        /// The content, zero-copy.
        content: Bytes,
    },
    /// `'S'`: a block of a streamed in-progress transaction starts.
    StreamStart {
        /// Top-level transaction id.
        xid: u32,
        /// True for the transaction's first block.
        first_segment: bool,
    },
    /// `'E'`: the current streamed block ends.
    StreamStop,
    /// `'c'`: a streamed transaction committed.
    StreamCommit {
        /// Transaction id.
        xid: u32,
        /// Flags, currently unused (0).
        flags: u8,
        /// LSN of the commit record.
        commit_lsn: u64,
        /// End LSN of the commit record.
        end_lsn: u64,
        /// Commit timestamp.
        commit_ts: i64,
    },
    /// `'A'`: a streamed transaction (`subxid == xid`) or one of its
    /// subtransactions (rolled-back savepoint) aborted: drop its changes.
    StreamAbort {
        /// Top-level transaction id.
        xid: u32,
        /// Aborted (sub)transaction id.
        subxid: u32,
        /// Abort LSN (protocol 4 with `streaming 'parallel'` only).
        abort_lsn: Option<u64>,
        /// Abort timestamp (protocol 4 with `streaming 'parallel'` only).
        abort_ts: Option<i64>,
    },
    /// `'b'`: start of a prepared transaction (protocol 3, `two_phase`).
    BeginPrepare {
        /// LSN of the PREPARE record.
        prepare_lsn: u64,
        /// End LSN of the prepared transaction.
        end_lsn: u64,
        /// Prepare timestamp.
        prepare_ts: i64,
        /// Transaction id.
        xid: u32,
        /// Global transaction id given to PREPARE TRANSACTION.
        gid: String,
    },
    /// `'P'`: the transaction opened by Begin Prepare was prepared.
    Prepare {
        /// Flags, currently unused (0).
        flags: u8,
        /// LSN of the PREPARE record.
        prepare_lsn: u64,
        /// End LSN of the prepared transaction.
        end_lsn: u64,
        /// Prepare timestamp.
        prepare_ts: i64,
        /// Transaction id.
        xid: u32,
        /// Global transaction id.
        gid: String,
    },
    /// `'K'`: COMMIT PREPARED.
    CommitPrepared {
        /// Flags, currently unused (0).
        flags: u8,
        /// LSN of the COMMIT PREPARED record.
        commit_lsn: u64,
        /// End LSN of the COMMIT PREPARED record.
        end_lsn: u64,
        /// Commit timestamp.
        commit_ts: i64,
        /// Transaction id.
        xid: u32,
        /// Global transaction id.
        gid: String,
    },
    /// `'r'`: ROLLBACK PREPARED.
    RollbackPrepared {
        /// Flags, currently unused (0).
        flags: u8,
        /// End LSN of the prepared transaction.
        prepare_end_lsn: u64,
        /// End LSN of the ROLLBACK PREPARED record.
        rollback_end_lsn: u64,
        /// Prepare timestamp.
        prepare_ts: i64,
        /// Rollback timestamp.
        rollback_ts: i64,
        /// Transaction id.
        xid: u32,
        /// Global transaction id.
        gid: String,
    },
    /// `'p'`: a streamed transaction was prepared.
    StreamPrepare {
        /// Flags, currently unused (0).
        flags: u8,
        /// LSN of the PREPARE record.
        prepare_lsn: u64,
        /// End LSN of the prepared transaction.
        end_lsn: u64,
        /// Prepare timestamp.
        prepare_ts: i64,
        /// Transaction id.
        xid: u32,
        /// Global transaction id.
        gid: String,
    },
}

impl PgOutputMessage {
    /// The message type's name, as used in errors.
    pub fn name(&self) -> &'static str {
        match self {
            PgOutputMessage::Begin { .. } => "Begin",
            PgOutputMessage::Commit { .. } => "Commit",
            PgOutputMessage::Origin { .. } => "Origin",
            PgOutputMessage::Relation(_) => "Relation",
            PgOutputMessage::Type { .. } => "Type",
            PgOutputMessage::Insert { .. } => "Insert",
            PgOutputMessage::Update { .. } => "Update",
            PgOutputMessage::Delete { .. } => "Delete",
            PgOutputMessage::Truncate { .. } => "Truncate",
            PgOutputMessage::Message { .. } => "Message",
            PgOutputMessage::StreamStart { .. } => "Stream Start",
            PgOutputMessage::StreamStop => "Stream Stop",
            PgOutputMessage::StreamCommit { .. } => "Stream Commit",
            PgOutputMessage::StreamAbort { .. } => "Stream Abort",
            PgOutputMessage::BeginPrepare { .. } => "Begin Prepare",
            PgOutputMessage::Prepare { .. } => "Prepare",
            PgOutputMessage::CommitPrepared { .. } => "Commit Prepared",
            PgOutputMessage::RollbackPrepared { .. } => "Rollback Prepared",
            PgOutputMessage::StreamPrepare { .. } => "Stream Prepare",
        }
    }
}

impl PgOutputMessage {
    /// For Truncate: whether CASCADE was given. `false` for other messages.
    pub fn truncate_cascade(&self) -> bool {
        matches!(self, PgOutputMessage::Truncate { options, .. } if options & TRUNCATE_CASCADE != 0)
    }

    /// For Truncate: whether RESTART IDENTITY was given. `false` otherwise.
    pub fn truncate_restart_identity(&self) -> bool {
        matches!(self, PgOutputMessage::Truncate { options, .. }
            if options & TRUNCATE_RESTART_IDENTITY != 0)
    }
}
