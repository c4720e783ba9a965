//! PostgreSQL source: logical replication, pgoutput decoding, type mapping.

pub mod error;
pub mod wire;

pub use error::{PgServerError, SourceError};
pub mod catalog;
pub mod replication;
