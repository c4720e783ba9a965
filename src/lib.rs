//! sluice: streaming change-data-capture from PostgreSQL into ClickHouse and Kafka.

pub mod admin;
pub mod batch;
pub mod change;
pub mod check;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod json_rows;
pub mod lsn;
pub mod metrics;
pub mod pipeline;
pub mod secret;
pub mod sink;
pub mod source;
pub mod tail;
