//! Topics: created through the admin API the first time a table is written
//! (partitions, replication factor, `cleanup.policy` from the config; an
//! existing topic is used as it is), and their partition counts (a truncate
//! event goes to every partition).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use super::METADATA_TIMEOUT;
use crate::config::KafkaSinkConfig;
use crate::sink::SinkError;

/// How long the brokers may take to create a topic.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// The topics this process made sure of, with their partition counts
/// (shared by forks).
#[derive(Clone)]
pub struct Topics {
    admin: Arc<AdminClient<DefaultClientContext>>,
    known: Arc<Mutex<HashMap<String, i32>>>,
    /// One creation at a time: parallel writers (forks) meeting a new topic
    /// create it once.
    creating: Arc<tokio::sync::Mutex<()>>,
    partitions: i32,
    replication_factor: i32,
    cleanup_policy: String,
}

impl Topics {
    pub fn new(cfg: &KafkaSinkConfig) -> Result<Self, SinkError> {
        let admin = super::client_config(cfg)
            .create()
            .map_err(|e| SinkError::Kafka(format!("invalid client settings: {e}")))?;
        Ok(Topics {
            admin: Arc::new(admin),
            known: Arc::new(Mutex::new(HashMap::new())),
            creating: Arc::new(tokio::sync::Mutex::new(())),
            partitions: cfg.partitions,
            replication_factor: cfg.replication_factor,
            cleanup_policy: cfg.cleanup_policy.clone(),
        })
    }

    /// Creates `topic` unless it exists; returns its partition count.
    pub async fn ensure<C: ProducerContext>(
        &self,
        producer: &ThreadedProducer<C>,
        topic: &str,
    ) -> Result<i32, SinkError> {
        if let Some(n) = self.known.lock().expect("topic cache").get(topic) {
            return Ok(*n);
        }
        let _creating = self.creating.lock().await;
        if let Some(n) = self.known.lock().expect("topic cache").get(topic) {
            return Ok(*n);
        }
        let new = NewTopic::new(
            topic,
            self.partitions,
            TopicReplication::Fixed(self.replication_factor),
        )
        .set("cleanup.policy", &self.cleanup_policy);
        let opts = AdminOptions::new().operation_timeout(Some(CREATE_TIMEOUT));
        let results = self
            .admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| delivery_error(topic, "creating the topic", e))?;
        for r in results {
            match r {
                Ok(_) => tracing::info!(
                    topic,
                    partitions = self.partitions,
                    replication_factor = self.replication_factor,
                    cleanup_policy = %self.cleanup_policy,
                    "created Kafka topic"
                ),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(SinkError::KafkaDelivery {
                        topic: topic.to_owned(),
                        code: Some(code),
                        message: format!("creating the topic: {code}"),
                    })
                }
            }
        }
        let n = partition_count(producer, topic).await?;
        self.known
            .lock()
            .expect("topic cache")
            .insert(topic.to_owned(), n);
        Ok(n)
    }
}

/// The topic's partition count from the brokers' metadata (waits for the
/// topic to show up after its creation).
async fn partition_count<C: ProducerContext>(
    producer: &ThreadedProducer<C>,
    topic: &str,
) -> Result<i32, SinkError> {
    let producer = producer.clone();
    let name = topic.to_owned();
    let start = std::time::Instant::now();
    loop {
        let p = producer.clone();
        let t = name.clone();
        let md = tokio::task::spawn_blocking(move || {
            p.client()
                .fetch_metadata(Some(&t), METADATA_TIMEOUT)
                .map(|md| {
                    md.topics()
                        .iter()
                        .find(|mt| mt.name() == t && mt.error().is_none())
                        .map(|mt| mt.partitions().len() as i32)
                })
        })
        .await
        .map_err(|e| SinkError::Kafka(e.to_string()))?
        .map_err(|e| delivery_error(&name, "reading its metadata", e))?;
        match md {
            Some(n) if n > 0 => return Ok(n),
            _ if start.elapsed() > CREATE_TIMEOUT => {
                return Err(SinkError::KafkaDelivery {
                    topic: name,
                    code: None,
                    message: format!(
                        "the brokers do not list the topic {}s after it was created",
                        CREATE_TIMEOUT.as_secs()
                    ),
                })
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A client-side failure about `topic` while `doing` something.
pub fn delivery_error(topic: &str, doing: &str, e: KafkaError) -> SinkError {
    SinkError::KafkaDelivery {
        topic: topic.to_owned(),
        code: e.rdkafka_error_code(),
        message: format!("{doing}: {e}"),
    }
}
