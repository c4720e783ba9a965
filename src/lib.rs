//! sluice: streaming change-data-capture from PostgreSQL into ClickHouse and Kafka.

pub mod source;
