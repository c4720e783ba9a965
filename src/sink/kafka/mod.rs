//! Kafka (rdkafka, bundled librdkafka): the client settings, the health
//! check, and the Debezium-style envelope (`envelope`).

pub mod envelope;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

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
