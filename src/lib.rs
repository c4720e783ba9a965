//! sluice: streaming change-data-capture from PostgreSQL into ClickHouse and Kafka.

pub mod config;
pub mod lsn;
pub mod secret;
pub mod source;
