//! The Kafka sink: every row of a flush becomes one event on its table's
//! topic (a delete also a tombstone), every truncate one `op: "t"` event per
//! partition; `apply` returns once the brokers acknowledged every message
//! (`acks=all`, idempotent producer: per partition in order, no duplicates
//! from the producer's own retries).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Notify;

use super::envelope::{write_truncate, EnvelopeEncoder, SourceInfo};
use super::topics::{delivery_error, Topics};
use crate::config::{KafkaSinkConfig, TableName};
use crate::core::health::Report;
use crate::core::meta::OP_DELETE;
use crate::core::{SinkItem, TableBatch, TruncateMeta};
use crate::metrics as m;
use crate::sink::{Sink, SinkError};

/// librdkafka settings sluice picks unless `properties` sets them: batches
/// large enough for a whole flush, and a linger chosen by measurement (the
/// 1M-change drain: 5 ms made many small compressed batches and was the
/// slowest; 20-100 ms alike; docs/kafka-sink.md, "Producer settings").
pub const PRODUCER_DEFAULTS: [(&str, &str); 4] = [
    ("linger.ms", "50"),
    ("batch.size", "1000000"),
    ("batch.num.messages", "10000"),
    // Room for a whole flush (rows plus tombstones) before `QueueFull`.
    ("queue.buffering.max.messages", "500000"),
];

/// How often a wait for delivery reports is logged.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(5);

/// How long a send waits before trying again when librdkafka's queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);

/// The producer: librdkafka's handle plus a thread that serves its delivery
/// reports, each counted into the [`Flight`] of the `apply` that sent the
/// message (one counter per flush instead of one future per message).
pub type KafkaProducer = ThreadedProducer<DeliveryContext>;

/// Routes each delivery report to its message's [`Flight`].
pub struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<Flight>;

    fn delivery(&self, result: &DeliveryResult<'_>, flight: Arc<Flight>) {
        flight.report(result);
    }
}

/// The messages of one `apply` that the brokers have not acknowledged yet,
/// and the first failure among them.
#[derive(Default)]
pub struct Flight {
    pending: AtomicUsize,
    failure: Mutex<Option<SinkError>>,
    /// Woken when the last report arrives, and on a failure.
    done: Notify,
}

impl Flight {
    fn report(&self, result: &DeliveryResult<'_>) {
        let failed = match result {
            Ok(_) => false,
            Err((e, m)) => {
                let mut first = self.failure.lock().unwrap_or_else(|p| p.into_inner());
                first
                    .get_or_insert_with(|| delivery_error(m.topic(), "delivery failed", e.clone()));
                true
            }
        };
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 || failed {
            self.done.notify_waiters();
        }
    }

    fn failure(&self) -> Option<SinkError> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Writes flushes to Kafka. See `docs/kafka-sink.md`.
pub struct KafkaSink {
    cfg: KafkaSinkConfig,
    info: Arc<SourceInfo>,
    /// Made by `open`; made again after a fatal producer error.
    producer: Option<KafkaProducer>,
    topics: Option<Topics>,
    failed: BTreeMap<TableName, String>,
    newly_failed: Vec<(TableName, String)>,
}

impl KafkaSink {
    /// A sink for the configured cluster; `db` names the source database in
    /// `source.db`. No I/O until [`Sink::open`].
    pub fn new(cfg: &KafkaSinkConfig, db: &str) -> Self {
        KafkaSink {
            cfg: cfg.clone(),
            info: Arc::new(SourceInfo {
                db: db.to_owned(),
                name: cfg.topic_prefix.clone(),
                unavailable_value: cfg.unavailable_value.clone(),
            }),
            producer: None,
            topics: None,
            failed: BTreeMap::new(),
            newly_failed: Vec::new(),
        }
    }

    /// The producer's librdkafka settings: the client's, sluice's defaults
    /// unless overridden, then the settings the delivery guarantee needs.
    pub fn producer_config(cfg: &KafkaSinkConfig) -> ClientConfig {
        let mut c = super::client_config(cfg);
        for (k, v) in PRODUCER_DEFAULTS {
            if !cfg.properties.contains_key(k) {
                c.set(k, v);
            }
        }
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", &cfg.compression)
            // Java's partitioner: a key lands where Kafka Connect puts it.
            .set("partitioner", "murmur2_random");
        c
    }

    fn producer(&mut self) -> Result<KafkaProducer, SinkError> {
        if let Some(p) = &self.producer {
            match p.client().fatal_error() {
                None => return Ok(p.clone()),
                Some((code, reason)) => {
                    // An idempotent producer that hit a fatal error is
                    // unusable; a new one continues (at-least-once: the
                    // pipeline applies the flush again).
                    tracing::warn!(%code, %reason, "the Kafka producer hit a fatal error; making a new one");
                }
            }
        }
        let p: KafkaProducer = Self::producer_config(&self.cfg)
            .create_with_context(DeliveryContext)
            .map_err(|e| SinkError::Kafka(format!("invalid producer settings: {e}")))?;
        self.producer = Some(p.clone());
        Ok(p)
    }

    fn fail(&mut self, t: &TableName, reason: String) {
        tracing::error!(table = %t, reason = %reason, "Kafka sink stops replicating this table");
        self.failed.insert(t.clone(), reason.clone());
        self.newly_failed.push((t.clone(), reason));
    }

    async fn apply_items(&mut self, items: &[SinkItem]) -> Result<(), SinkError> {
        let producer = self.producer()?;
        let topics = match &self.topics {
            Some(t) => t.clone(),
            None => {
                let t = Topics::new(&self.cfg)?;
                self.topics = Some(t.clone());
                t
            }
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let flight = Arc::new(Flight::default());
        for item in items {
            match item {
                SinkItem::Rows(tb) => {
                    if self.failed.contains_key(&tb.shape.table) {
                        continue;
                    }
                    let topic: Arc<str> = self.cfg.topic(&tb.shape.table).into();
                    topics.ensure(&producer, &topic).await?;
                    self.send_rows(&producer, tb, &topic, now_ms, &flight)
                        .await?;
                }
                SinkItem::Truncate(tables, at) => {
                    for t in tables {
                        if self.failed.contains_key(t) {
                            continue;
                        }
                        let topic: Arc<str> = self.cfg.topic(t).into();
                        let partitions = topics.ensure(&producer, &topic).await?;
                        self.send_truncate(&producer, t, at, &topic, partitions, now_ms, &flight)
                            .await?;
                    }
                }
            }
        }
        wait_all(&self.cfg.brokers, &flight).await
    }

    async fn send_rows(
        &mut self,
        producer: &KafkaProducer,
        tb: &TableBatch,
        topic: &Arc<str>,
        now_ms: i64,
        flight: &Arc<Flight>,
    ) -> Result<(), SinkError> {
        let enc = match EnvelopeEncoder::new(tb, &self.info) {
            Ok(e) => e,
            Err(e) => {
                self.fail(&tb.shape.table, e.to_string());
                return Ok(());
            }
        };
        let ops = tb
            .batch
            .column_by_name(crate::core::meta::OP)
            .and_then(|c| {
                arrow::array::AsArray::as_primitive_opt::<arrow::datatypes::UInt8Type>(c).cloned()
            });
        let mut key = Vec::with_capacity(64);
        let mut value = Vec::with_capacity(512);
        for row in 0..enc.num_rows() {
            key.clear();
            value.clear();
            let keyed = enc.write_key(row, &mut key);
            if let Err(e) = enc.write_value(row, now_ms, &mut value) {
                self.fail(&tb.shape.table, e.to_string());
                return Ok(());
            }
            let k = keyed.then_some(key.as_slice());
            send(producer, topic, k, Some(&value), None, flight).await?;
            let deleted = ops.as_ref().is_some_and(|o| o.value(row) == OP_DELETE);
            if deleted && keyed && self.cfg.tombstones {
                send(producer, topic, k, None, None, flight).await?;
            }
        }
        metrics::counter!(m::ROWS_WRITTEN).increment(enc.num_rows() as u64);
        Ok(())
    }

    /// One `op: "t"` event (no key) in every partition, so a consumer of
    /// each partition sees it in order with that partition's keys.
    #[allow(clippy::too_many_arguments)]
    async fn send_truncate(
        &self,
        producer: &KafkaProducer,
        table: &TableName,
        at: &TruncateMeta,
        topic: &Arc<str>,
        partitions: i32,
        now_ms: i64,
        flight: &Arc<Flight>,
    ) -> Result<(), SinkError> {
        let mut value = Vec::with_capacity(512);
        write_truncate(&self.info, table, at, now_ms, &mut value);
        for p in 0..partitions {
            send(producer, topic, None, Some(&value), Some(p), flight).await?;
        }
        Ok(())
    }
}

/// Hands one message to librdkafka (which copies it); when its queue is
/// full, waits for deliveries to make room. A failure already reported for
/// this flush stops the sending.
async fn send(
    producer: &KafkaProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    partition: Option<i32>,
    flight: &Arc<Flight>,
) -> Result<(), SinkError> {
    loop {
        let mut record: BaseRecord<'_, [u8], [u8], Arc<Flight>> =
            BaseRecord::with_opaque_to(topic, flight.clone());
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        // Counted before the send: the report may come before `send` returns.
        flight.pending.fetch_add(1, Ordering::AcqRel);
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, _)) => {
                flight.pending.fetch_sub(1, Ordering::AcqRel);
                if let Some(failure) = flight.failure() {
                    return Err(failure);
                }
                match e {
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                        tokio::time::sleep(QUEUE_FULL_WAIT).await;
                    }
                    e => return Err(delivery_error(topic, "sending", e)),
                }
            }
        }
    }
}

/// Whether a failed delivery means the brokers no longer accept this
/// producer's id or sequence (its idempotence state is lost).
fn producer_state_lost(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::UnknownProducerId
            | RDKafkaErrorCode::InvalidProducerIdMapping
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
    )
}

/// Waits until every message of the flush is acknowledged; a failed
/// delivery is the result (the pipeline applies the whole flush again).
/// Says what it waits for while the brokers do not answer.
async fn wait_all(brokers: &str, flight: &Flight) -> Result<(), SinkError> {
    let start = Instant::now();
    let mut next_log = WAIT_LOG_EVERY;
    let gauge = metrics::gauge!(m::KAFKA_PENDING_DELIVERIES);
    // One timer for the whole wait (not one per message).
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.reset();
    loop {
        // Registered before the check, so a wake-up in between is not lost.
        let done = flight.done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        // Count first: a failure is recorded before its report is counted,
        // so once the count is zero every failure is visible.
        let pending = flight.pending.load(Ordering::Acquire);
        if let Some(failure) = flight.failure() {
            gauge.set(0.0);
            return Err(failure);
        }
        if pending == 0 {
            gauge.set(0.0);
            return Ok(());
        }
        tokio::select! {
            biased;
            _ = &mut done => {}
            _ = tick.tick() => {
                gauge.set(pending as f64);
                if start.elapsed() >= next_log {
                    next_log += WAIT_LOG_EVERY;
                    tracing::warn!(
                        brokers,
                        pending,
                        waited_s = start.elapsed().as_secs(),
                        "waiting for the Kafka brokers to acknowledge {pending} message(s); the checkpoint waits until they do (librdkafka retries until message.timeout.ms)"
                    );
                }
            }
        }
    }
}

impl Sink for KafkaSink {
    async fn open(&mut self) -> Result<(), SinkError> {
        let _producer = self.producer()?;
        if self.topics.is_none() {
            self.topics = Some(Topics::new(&self.cfg)?);
        }
        let n = super::broker_count(&self.cfg).await?;
        tracing::info!(brokers = %self.cfg.brokers, count = n, "Kafka sink connected");
        Ok(())
    }

    async fn apply(&mut self, items: &[SinkItem]) -> Result<(), SinkError> {
        let result = self.apply_items(items).await;
        if let Err(SinkError::KafkaDelivery {
            code: Some(code), ..
        }) = &result
        {
            if producer_state_lost(*code) {
                // Seen after deliveries timed out: the brokers refuse every
                // later message of this producer id, and librdkafka does not
                // count it as fatal. A new producer (new id) sends the flush
                // again (at-least-once).
                tracing::warn!(%code, "the brokers refuse the Kafka producer's id; making a new producer");
                self.producer = None;
            }
        }
        result
    }

    fn take_failed(&mut self) -> Vec<(TableName, String)> {
        std::mem::take(&mut self.newly_failed)
    }

    /// Nothing to forget but the stop: a resync sends every row again as a
    /// snapshot read (`op: "r"`).
    fn reset_table(&mut self, table: &TableName) {
        self.failed.remove(table);
    }

    /// Kafka keeps every event: there are no stale rows to remove. A key
    /// deleted while the table was stopped gets no event (the source no
    /// longer has it); consumers that need that compare with the copy.
    async fn finish_copy(&mut self, _table: &TableName, _version: u64) -> Result<(), SinkError> {
        Ok(())
    }

    /// Shares the producer (librdkafka's handle is thread-safe and keeps
    /// per-partition order across callers) and the topic cache.
    fn fork(&self) -> Self {
        KafkaSink {
            cfg: self.cfg.clone(),
            info: self.info.clone(),
            producer: self.producer.clone(),
            topics: self.topics.clone(),
            failed: BTreeMap::new(),
            newly_failed: Vec::new(),
        }
    }

    async fn healthcheck(&self) -> Report {
        super::healthcheck(&self.cfg).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        DEFAULT_KAFKA_CLEANUP_POLICY, DEFAULT_KAFKA_COMPRESSION, DEFAULT_KAFKA_UNAVAILABLE_VALUE,
    };

    #[test]
    fn producer_settings_keep_the_guarantees() {
        let mut properties = BTreeMap::new();
        properties.insert("linger.ms".to_string(), "20".to_string());
        properties.insert("client.id".to_string(), "mine".to_string());
        let cfg = KafkaSinkConfig {
            brokers: "b:9092".into(),
            topic_prefix: "p".into(),
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            properties,
            compression: DEFAULT_KAFKA_COMPRESSION.into(),
            topics: BTreeMap::new(),
            partitions: 3,
            replication_factor: 1,
            cleanup_policy: DEFAULT_KAFKA_CLEANUP_POLICY.into(),
            tombstones: true,
            unavailable_value: DEFAULT_KAFKA_UNAVAILABLE_VALUE.into(),
        };
        let c = KafkaSink::producer_config(&cfg);
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("partitioner"), Some("murmur2_random"));
        assert_eq!(c.get("compression.type"), Some("zstd"));
        // A configured property wins over sluice's default; others pass through.
        assert_eq!(c.get("linger.ms"), Some("20"));
        assert_eq!(c.get("client.id"), Some("mine"));
        assert_eq!(c.get("batch.num.messages"), Some("10000"));
        assert_eq!(c.get("bootstrap.servers"), Some("b:9092"));
    }
}
