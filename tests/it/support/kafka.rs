//! Kafka side of the end-to-end tests: a consumer that reads every
//! partition of the pipeline's topics from the beginning, checks that each
//! message is the documented envelope, and rebuilds each table by key the
//! way docs/kafka-sink.md tells consumers to:
//! - an event whose `source.lsn` is not above the last one applied for its
//!   key is a replay: skipped;
//! - a truncate (`op: "t"`) whose `source.lsn` is not above the highest one
//!   applied in its partition is a replay: skipped; otherwise it empties the
//!   partition's keys;
//! - a value equal to the unavailable-value placeholder keeps the old value;
//! - a tombstone follows its delete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;

pub const PLACEHOLDER: &str = "__debezium_unavailable_value";

/// A table rebuilt from its topic.
#[derive(Default, Debug)]
pub struct Rebuilt {
    /// Key (JSON text) -> (partition, the row).
    pub rows: BTreeMap<String, (i32, serde_json::Map<String, Value>)>,
}

/// What was read, beyond the rebuilt rows.
#[derive(Default, Debug, Clone)]
pub struct Counts {
    pub messages: u64,
    /// Events by op letter.
    pub ops: BTreeMap<String, u64>,
    pub tombstones: u64,
    /// Events skipped as replays (at or below their key's last `lsn`).
    pub replays: u64,
    /// Update events whose `before` was an object.
    pub updates_with_before: u64,
    /// Values sent as the placeholder.
    pub placeholders: u64,
}

pub struct ChangeLog {
    consumer: BaseConsumer,
    brokers: String,
    topics: Vec<String>,
    /// Extra client settings (TLS) the consumer was opened with.
    settings: Vec<(String, String)>,
    pub tables: HashMap<String, Rebuilt>,
    pub counts: Counts,
    /// (topic, key) -> last applied lsn.
    last: HashMap<(String, String), u64>,
    /// (topic, partition) -> highest applied lsn.
    high: HashMap<(String, i32), u64>,
    /// (topic, key) whose last message was an applied delete.
    deleted: HashSet<(String, String)>,
    /// The last row removed by a delete, with its topic and lsn: a key move
    /// (delete of the old key, new key at the same lsn) takes unchanged
    /// values from it.
    moved_from: Option<(String, u64, serde_json::Map<String, Value>)>,
}

impl ChangeLog {
    /// Waits until every topic exists, then reads all their partitions from
    /// the beginning.
    pub fn open(brokers: &str, topics: &[String]) -> ChangeLog {
        Self::open_with(brokers, topics, &[])
    }

    /// Like [`ChangeLog::open`], with extra librdkafka settings.
    pub fn open_with(brokers: &str, topics: &[String], settings: &[(String, String)]) -> ChangeLog {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("group.id", super::unique_name("kc"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        for (k, v) in settings {
            config.set(k, v);
        }
        let consumer: BaseConsumer = config.create().expect("test consumer");
        let mut tpl = TopicPartitionList::new();
        let start = Instant::now();
        for topic in topics {
            let n = loop {
                let md = consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("test Kafka broker at {brokers}: {e}"));
                let n = md
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map(|t| t.partitions().len())
                    .unwrap_or(0);
                if n > 0 {
                    break n;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "topic {topic} was not created"
                );
                std::thread::sleep(Duration::from_millis(300));
            };
            for p in 0..n as i32 {
                tpl.add_partition_offset(topic, p, Offset::Beginning)
                    .unwrap();
            }
        }
        consumer.assign(&tpl).expect("assign partitions");
        ChangeLog {
            consumer,
            brokers: brokers.to_owned(),
            topics: topics.to_vec(),
            settings: settings.to_vec(),
            tables: HashMap::new(),
            counts: Counts::default(),
            last: HashMap::new(),
            high: HashMap::new(),
            deleted: HashSet::new(),
            moved_from: None,
        }
    }

    /// Starts over: a new consumer reads every topic again from the
    /// beginning into an empty state. (librdkafka 2.12's consumer now and then
    /// stops fetching from the test broker, tansu, partway through a topic
    /// that holds every message -- checked by reading it with another
    /// client -- so a reader that makes no progress is replaced.)
    pub fn reopen(&mut self) {
        *self = ChangeLog::open_with(
            &self.brokers.clone(),
            &self.topics.clone(),
            &self.settings.clone(),
        );
    }

    /// Reads what arrives within `d`.
    pub fn poll_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let topic = m.topic().to_owned();
                    let key = m.key().map(|k| String::from_utf8(k.to_vec()).unwrap());
                    let value = m.payload().map(|v| v.to_vec());
                    self.apply(&topic, m.partition(), key, value);
                }
                Some(Err(e)) => panic!("consuming: {e}"),
                None => {}
            }
        }
    }

    fn apply(&mut self, topic: &str, partition: i32, key: Option<String>, value: Option<Vec<u8>>) {
        self.counts.messages += 1;
        let Some(value) = value else {
            let key = key.expect("a tombstone has a key");
            let k = (topic.to_owned(), key);
            self.counts.tombstones += 1;
            // A tombstone only repeats its delete (a replayed one must not
            // delete a later version).
            if self.deleted.contains(&k) {
                if let Some(t) = self.tables.get_mut(topic) {
                    t.rows.remove(&k.1);
                }
            }
            return;
        };
        let v: Value = serde_json::from_slice(&value).unwrap_or_else(|e| {
            panic!(
                "{topic}: value is not JSON ({e}): {}",
                String::from_utf8_lossy(&value)
            )
        });
        let op = check_envelope(topic, key.as_deref(), &v);
        *self.counts.ops.entry(op.clone()).or_default() += 1;
        let lsn = v["source"]["lsn"].as_u64().unwrap();
        let high = self.high.entry((topic.to_owned(), partition)).or_default();
        let table = self.tables.entry(topic.to_owned()).or_default();
        if op == "t" {
            if lsn <= *high {
                self.counts.replays += 1;
                return;
            }
            *high = lsn;
            table.rows.retain(|_, (p, _)| *p != partition);
            return;
        }
        let key = key.unwrap();
        let k = (topic.to_owned(), key.clone());
        if self.last.get(&k).is_some_and(|l| lsn <= *l) {
            self.counts.replays += 1;
            self.deleted.remove(&k);
            return;
        }
        self.last.insert(k.clone(), lsn);
        *high = (*high).max(lsn);
        if op == "u" && v["before"].is_object() {
            self.counts.updates_with_before += 1;
        }
        if op == "d" {
            if let Some((_, row)) = table.rows.remove(&key) {
                self.moved_from = Some((topic.to_owned(), lsn, row));
            }
            self.deleted.insert(k);
            return;
        }
        self.deleted.remove(&k);
        let mut after = v["after"].as_object().unwrap().clone();
        let old = table.rows.get(&key).map(|(_, r)| r.clone()).or_else(|| {
            self.moved_from
                .as_ref()
                .filter(|(t, l, _)| t == topic && *l == lsn)
                .map(|(_, _, r)| r.clone())
        });
        for (name, val) in after.iter_mut() {
            if val.as_str() == Some(PLACEHOLDER) {
                self.counts.placeholders += 1;
                *val = old
                    .as_ref()
                    .and_then(|o| o.get(name).cloned())
                    .unwrap_or_else(|| {
                        panic!("{topic} key {key}: placeholder for {name} with no earlier value")
                    });
            }
        }
        table.rows.insert(key, (partition, after));
    }

    /// The rebuilt rows of `topic` as sorted TSV lines of `columns`
    /// (NULL as \N, numbers and strings as their text).
    pub fn tsv(&self, topic: &str, columns: &[&str]) -> Vec<String> {
        let mut lines: Vec<String> = self
            .tables
            .get(topic)
            .map(|t| {
                t.rows
                    .values()
                    .map(|(_, r)| {
                        columns
                            .iter()
                            .map(|c| match &r[*c] {
                                Value::Null => "\\N".to_owned(),
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join("\t")
                    })
                    .collect()
            })
            .unwrap_or_default();
        lines.sort();
        lines
    }
}

/// Checks that `v` is the documented envelope; returns its op.
fn check_envelope(topic: &str, key: Option<&str>, v: &Value) -> String {
    let ctx = || format!("{topic}: {v}");
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {}", ctx()));
    let names: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["after", "before", "op", "source", "ts_ms"],
        "{}",
        ctx()
    );
    assert!(v["ts_ms"].is_i64(), "{}", ctx());
    let s = &v["source"];
    for (field, ok) in [
        ("version", s["version"].is_string()),
        ("connector", s["connector"] == "sluice"),
        ("name", s["name"].is_string()),
        ("ts_ms", s["ts_ms"].is_i64()),
        (
            "snapshot",
            s["snapshot"] == "true" || s["snapshot"] == "false",
        ),
        ("db", s["db"].is_string()),
        ("schema", s["schema"].is_string()),
        ("table", s["table"].is_string()),
        ("txId", s.get("txId").is_some()),
        ("lsn", s["lsn"].is_u64()),
        ("commit_lsn", s["commit_lsn"].is_u64()),
    ] {
        assert!(ok, "source.{field} malformed: {}", ctx());
    }
    let op = v["op"]
        .as_str()
        .unwrap_or_else(|| panic!("no op: {}", ctx()))
        .to_owned();
    match op.as_str() {
        "c" | "r" | "u" => {
            assert!(v["after"].is_object(), "{}", ctx());
            assert!(v["before"].is_null() || op == "u", "{}", ctx());
            assert_eq!(s["snapshot"] == "true", op == "r", "{}", ctx());
        }
        "d" => assert!(v["after"].is_null() && v["before"].is_object(), "{}", ctx()),
        "t" => assert!(
            v["after"].is_null() && v["before"].is_null() && key.is_none(),
            "{}",
            ctx()
        ),
        other => panic!("unknown op {other}: {}", ctx()),
    }
    if op != "t" {
        let k: Value = serde_json::from_str(key.unwrap_or_else(|| panic!("no key: {}", ctx())))
            .unwrap_or_else(|e| panic!("key is not JSON ({e}): {}", ctx()));
        assert!(k.is_object(), "{}", ctx());
    }
    op
}
