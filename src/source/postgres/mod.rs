//! PostgreSQL source: logical replication, pgoutput decoding, type mapping.

pub mod assembler;
pub mod catalog;
pub mod copy_binary;
pub mod error;
pub mod pgoutput;
pub mod replication;
pub mod snapshot;
pub mod spill;
pub mod stream;
pub mod tls;
pub mod types;
pub mod wire;

pub use error::{PgServerError, SourceError};
