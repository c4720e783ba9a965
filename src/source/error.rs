//! The source layer's one error type, classified in one place ([`Classify`]).

use std::fmt;

use crate::config::TableName;
use crate::core::{Classify, ErrorClass};

/// An ErrorResponse from the server, with the fields users need to act on it.
#[derive(Debug, Clone, Default)]
pub struct PgServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for PgServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(d) = &self.detail {
            write!(f, "; detail: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; hint: {h}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("cannot connect to PostgreSQL at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection to PostgreSQL lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("PostgreSQL authentication failed for user \"{user}\": {message}")]
    AuthFailed { user: String, message: String },
    #[error("PostgreSQL asks for an authentication method sluice does not support: {0}")]
    AuthUnsupported(String),
    #[error("PostgreSQL error: {0}")]
    Server(PgServerError),
    #[error("PostgreSQL query failed: {}", describe_query_error(.0))]
    Query(#[from] tokio_postgres::Error),
    /// A catalog query, with what sluice was doing.
    #[error("PostgreSQL query failed while {doing}: {}", describe_query_error(.source))]
    Catalog {
        doing: String,
        source: tokio_postgres::Error,
    },
    #[error("unexpected PostgreSQL protocol message: {0}")]
    Protocol(String),
    #[error("cannot decode replication data: {0}")]
    Decode(String),
    #[error("replication slot \"{slot}\" is in use by another process (pid {pid}); stop the other consumer or use another slot")]
    SlotInUse { slot: String, pid: String },
    #[error("replication slot \"{slot}\" was invalidated ({reason}): PostgreSQL removed WAL it still needed. Drop it with `sluice drop` and resync the tables")]
    SlotInvalidated { slot: String, reason: String },
    #[error("replication slot \"{slot}\" does not exist and source.postgres.create_slot = false; create it or set create_slot = true")]
    SlotMissing { slot: String },
    #[error("publication \"{publication}\" {problem}")]
    Publication {
        publication: String,
        problem: String,
    },
    #[error("{0}")]
    NotReady(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// One table's data cannot be read; the other tables can.
    #[error("table {table}: {message}")]
    TableData { table: TableName, message: String },
    /// The saved position does not belong to this upstream, or changes after
    /// it are gone: resuming would skip data.
    #[error("{0}")]
    Mismatch(String),
    /// A ClickHouse table read by a polled source.
    #[error("ClickHouse source: {message}")]
    ClickHouse { message: String, retryable: bool },
    /// What this source kind cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// Reading a sink's live keys for a reconcile of hard deletes.
    #[error("reconcile: reading the sink's live keys: {message}")]
    SinkKeys { message: String, retryable: bool },
}

/// tokio-postgres prints a server error as just "db error": spell out the
/// server's message, SQLSTATE, detail and hint.
fn describe_query_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(d) = db.detail() {
                s.push_str(&format!("; detail: {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// SQLSTATE classes worth retrying: connection exceptions, operator
/// intervention (shutdown, crash recovery), insufficient resources.
const RETRYABLE_SQLSTATE_PREFIXES: &[&str] = &["08", "57P", "53", "40001", "40P01", "55006"];

impl Classify for SourceError {
    fn class(&self) -> ErrorClass {
        match self {
            SourceError::TableData { table, .. } => ErrorClass::Table(table.clone()),
            e if e.is_retryable() => ErrorClass::Transient,
            _ => ErrorClass::Fatal,
        }
    }
}

impl SourceError {
    /// The upstream no longer holds the changes after the saved position
    /// (PostgreSQL: the slot was invalidated). Recoverable only by starting
    /// over: a new position and a copy of every table.
    pub fn position_lost(&self) -> bool {
        matches!(self, SourceError::SlotInvalidated { .. })
    }

    /// A failed catalog query, saying what sluice was doing.
    pub fn catalog(doing: impl Into<String>, source: tokio_postgres::Error) -> Self {
        SourceError::Catalog {
            doing: doing.into(),
            source,
        }
    }

    /// Whether waiting and reconnecting may help; otherwise a user must act.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Connect { .. } | SourceError::Io(_) => true,
            SourceError::Server(e) => RETRYABLE_SQLSTATE_PREFIXES
                .iter()
                .any(|p| e.code.starts_with(p)),
            SourceError::Query(e) | SourceError::Catalog { source: e, .. } => match e.code() {
                Some(code) => RETRYABLE_SQLSTATE_PREFIXES
                    .iter()
                    .any(|p| code.code().starts_with(p)),
                // No SQLSTATE: the connection itself failed.
                None => e.is_closed() || std::error::Error::source(e).is_some(),
            },
            SourceError::SlotInUse { .. } => true,
            SourceError::ClickHouse { retryable, .. } | SourceError::SinkKeys { retryable, .. } => {
                *retryable
            }
            _ => false,
        }
    }

    pub fn server_code(&self) -> Option<&str> {
        match self {
            SourceError::Server(e) => Some(&e.code),
            SourceError::Query(e) | SourceError::Catalog { source: e, .. } => {
                e.code().map(|c| c.code())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> SourceError {
        SourceError::Server(PgServerError {
            code: code.into(),
            ..Default::default()
        })
    }

    #[test]
    fn classification() {
        assert!(server("57P01").is_retryable()); // admin_shutdown
        assert!(server("08006").is_retryable());
        assert!(!server("28P01").is_retryable()); // invalid_password
        assert!(!server("42704").is_retryable()); // undefined_object
        assert!(SourceError::Io(std::io::Error::other("reset")).is_retryable());
        assert!(!SourceError::AuthFailed {
            user: "u".into(),
            message: "m".into()
        }
        .is_retryable());
    }
}
