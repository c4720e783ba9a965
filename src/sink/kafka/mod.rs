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

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use super::SinkError;
use crate::config::KafkaSinkConfig;
use crate::core::health::Report;
use crate::secret::Secret;

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

/// How long one metadata request of [`broker_count`] may take before the
/// probe looks at what librdkafka reported meanwhile.
const PROBE_STEP: Duration = Duration::from_secs(1);

/// How long the probe serves librdkafka's events after each request.
const PROBE_EVENTS: Duration = Duration::from_millis(100);

/// Keeps the first error that asking again cannot fix (the brokers rejected
/// the credentials, the TLS handshake failed): librdkafka reports those
/// through the error callback, while the metadata request itself only times
/// out.
#[derive(Default)]
struct ProbeContext {
    fatal: std::sync::Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl ClientContext for ProbeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        match code {
            Some(
                c @ (RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::SSL),
            ) => {
                let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
                fatal.get_or_insert((c, reason.to_owned()));
            }
            _ => tracing::debug!(%error, reason, "Kafka client"),
        }
    }
}

impl ProducerContext for ProbeContext {
    type DeliveryOpaque = ();
    // The probe sends nothing.
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// The error for a rejected login or a failed TLS handshake; never shows
/// the password, even if the broker's message were to repeat it.
fn probe_error(cfg: &KafkaSinkConfig, code: RDKafkaErrorCode, message: &str) -> SinkError {
    let mut message = message.to_owned();
    if let Some(p) = cfg.sasl_password.as_ref().map(Secret::expose) {
        if !p.is_empty() {
            message = message.replace(p, "***");
        }
    }
    let brokers = cfg.brokers.clone();
    if code == RDKafkaErrorCode::SSL {
        SinkError::KafkaTls { brokers, message }
    } else {
        SinkError::KafkaAuth { brokers, message }
    }
}

/// Fetches cluster metadata; returns the broker count. A rejected login or
/// a failed TLS handshake is a fatal error at once (not a timeout that
/// would be retried as an unreachable broker).
pub async fn broker_count(cfg: &KafkaSinkConfig) -> Result<usize, SinkError> {
    let conf = client_config(cfg);
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || {
        let producer: BaseProducer<ProbeContext> = conf
            .create_with_context(ProbeContext::default())
            .map_err(|e| SinkError::Kafka(format!("invalid client settings: {e}")))?;
        let start = std::time::Instant::now();
        loop {
            let result = producer.client().fetch_metadata(None, PROBE_STEP);
            // Serves the error callback (every event queued meanwhile:
            // a zero timeout would serve only one).
            producer.poll(PROBE_EVENTS);
            let fatal = producer
                .context()
                .fatal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            match (result, fatal) {
                (_, Some((code, message))) => return Err(probe_error(&cfg, code, &message)),
                (Ok(md), None) => return Ok(md.brokers().len()),
                (Err(e), None) if start.elapsed() >= METADATA_TIMEOUT => {
                    return Err(SinkError::KafkaUnreachable {
                        brokers: cfg.brokers.clone(),
                        message: e.to_string(),
                    })
                }
                (Err(_), None) => {}
            }
        }
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
    fn a_rejected_login_or_tls_handshake_is_fatal_and_hides_the_password() {
        use crate::config::{
            DEFAULT_KAFKA_CLEANUP_POLICY, DEFAULT_KAFKA_COMPRESSION,
            DEFAULT_KAFKA_UNAVAILABLE_VALUE,
        };
        let cfg = KafkaSinkConfig {
            brokers: "b:9092".into(),
            topic_prefix: "p".into(),
            security_protocol: Some("SASL_SSL".into()),
            sasl_mechanism: Some("SCRAM-SHA-256".into()),
            sasl_username: Some("u".into()),
            sasl_password: Some(Secret::new("hunter2")),
            properties: Default::default(),
            compression: DEFAULT_KAFKA_COMPRESSION.into(),
            topics: Default::default(),
            partitions: 1,
            replication_factor: 1,
            cleanup_policy: DEFAULT_KAFKA_CLEANUP_POLICY.into(),
            tombstones: true,
            unavailable_value: DEFAULT_KAFKA_UNAVAILABLE_VALUE.into(),
        };
        let auth = probe_error(
            &cfg,
            RDKafkaErrorCode::Authentication,
            "SASL authentication error: bad password hunter2",
        );
        assert_eq!(auth.class(), ErrorClass::Fatal);
        let text = auth.to_string();
        assert!(
            text.starts_with("the Kafka brokers b:9092 rejected the login"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        let tls = probe_error(&cfg, RDKafkaErrorCode::SSL, "certificate verify failed");
        assert_eq!(tls.class(), ErrorClass::Fatal);
        assert!(tls.to_string().contains("ssl.ca.location"), "{tls}");
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
