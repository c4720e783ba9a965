//! Kafka (rdkafka, bundled librdkafka): the client settings, the health
//! check, the sink (`sink`), topic creation (`topics`), the Debezium-style
//! envelope (`envelope`, values by `render`), and which broker errors are
//! worth retrying (`is_retryable`). See `docs/kafka-sink.md`.

pub mod envelope;
pub mod render;
mod sink;
mod topics;

pub use sink::KafkaSink;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::SinkError;
use crate::config::KafkaSinkConfig;
use crate::core::health::Report;

pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// librdkafka settings for the configured cluster (no producer specifics).
pub fn client_config(cfg: &KafkaSinkConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    if let Some(p) = &cfg.security_protocol {
        c.set("security.protocol", p);
    }
    if let Some(m) = &cfg.sasl_mechanism {
        c.set("sasl.mechanism", m);
    }
    if let Some(u) = &cfg.sasl_username {
        c.set("sasl.username", u);
    }
    if let Some(p) = &cfg.sasl_password {
        c.set("sasl.password", p.expose());
    }
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// Fetches cluster metadata; returns the broker count.
pub async fn broker_count(cfg: &KafkaSinkConfig) -> Result<usize, SinkError> {
    let conf = client_config(cfg);
    let brokers = cfg.brokers.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = conf
            .create()
            .map_err(|e| SinkError::Kafka(format!("invalid client settings: {e}")))?;
        let md = consumer
            .fetch_metadata(None, METADATA_TIMEOUT)
            .map_err(|e| SinkError::KafkaUnreachable {
                brokers: brokers.clone(),
                message: e.to_string(),
            })?;
        Ok(md.brokers().len())
    })
    .await
    .map_err(|e| SinkError::Kafka(e.to_string()))?
}

/// `sluice check` for Kafka: the brokers answer a metadata request.
pub async fn healthcheck(cfg: &KafkaSinkConfig) -> Report {
    let mut report = Report::default();
    match broker_count(cfg).await {
        Ok(n) => report.ok(
            "kafka",
            format!(
                "brokers {} reachable ({n} broker(s) in the cluster)",
                cfg.brokers
            ),
        ),
        Err(e) => report.fail("kafka", e.to_string()),
    }
    report
}

/// Whether a failed produce (or admin) request may succeed when tried again
/// (broker restarts, leader changes, network trouble, timeouts), as opposed
/// to one that needs the operator (permissions, a message larger than the
/// broker accepts, a setting the broker rejects). The one place where
/// Kafka's error codes are classified; [`SinkError`]'s `Classify` uses it.
pub fn is_retryable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    !matches!(
        code,
        C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::MessageBatchTooLarge
            | C::InvalidMessage
            | C::BadMessage
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::Authentication
            | C::SaslAuthenticationFailed
            | C::UnsupportedSASLMechanism
            | C::IllegalSASLState
            | C::SSL
            | C::InvalidTopic
            | C::InvalidRequiredAcks
            | C::InvalidConfig
            | C::InvalidPartitions
            | C::InvalidReplicationFactor
            | C::PolicyViolation
            | C::UnsupportedVersion
            | C::UnsupportedForMessageFormat
            | C::UnsupportedFeature
            | C::InvalidArgument
            | C::SecurityDisabled
            | C::InvalidRecord
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Classify, ErrorClass};

    fn class(code: Option<RDKafkaErrorCode>) -> ErrorClass {
        SinkError::KafkaDelivery {
            topic: "t".into(),
            code,
            message: String::new(),
        }
        .class()
    }

    #[test]
    fn broker_trouble_is_retried_and_operator_errors_stop() {
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::QueueFull,
        ] {
            assert_eq!(class(Some(code)), ErrorClass::Transient, "{code:?}");
        }
        assert_eq!(class(None), ErrorClass::Transient);
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::ClusterAuthorizationFailed,
            RDKafkaErrorCode::SaslAuthenticationFailed,
            RDKafkaErrorCode::InvalidReplicationFactor,
        ] {
            assert_eq!(class(Some(code)), ErrorClass::Fatal, "{code:?}");
        }
    }
}
