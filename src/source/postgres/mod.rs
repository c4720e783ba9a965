//! PostgreSQL source: logical replication, pgoutput decoding, type mapping.
pub mod types;
