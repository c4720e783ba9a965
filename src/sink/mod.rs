//! Sinks: where changes land (ClickHouse, Kafka).

pub mod clickhouse;
pub mod envelope;
pub mod kafka;

/// The sink layer's one error type, classified in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    #[error("cannot reach ClickHouse at {url}: {message}")]
    ClickHouseUnreachable { url: String, message: String },
    #[error("ClickHouse rejected the credentials of user \"{user}\": {message}")]
    ClickHouseAuth { user: String, message: String },
    #[error("ClickHouse error: {0}")]
    ClickHouse(String),
    #[error("Kafka: {0}")]
    Kafka(String),
    #[error("cannot reach the Kafka brokers {brokers}: {message}")]
    KafkaUnreachable { brokers: String, message: String },
}

impl SinkError {
    /// Whether waiting and retrying may help; otherwise a user must act.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::ClickHouseUnreachable { .. } | SinkError::KafkaUnreachable { .. } => true,
            SinkError::ClickHouseAuth { .. } => false,
            SinkError::ClickHouse(m) => clickhouse::is_retryable_message(m),
            SinkError::Kafka(_) => false,
        }
    }
}
