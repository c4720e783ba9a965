//! The test bed itself: each of the three real servers is reachable and does
//! what the rest of the suite relies on.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use arrow::array::{Int64Array, StringArray, UInt64Array, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

#[tokio::test]
async fn postgres_logical_slot_yields_a_change() {
    let db = fresh_db("tb_pg").await;
    let slot = unique_name("tb_slot");
    // Separate statements: a multi-statement string is one transaction, and
    // a slot cannot be created in a transaction that wrote.
    for sql in [
        "CREATE TABLE t (id int PRIMARY KEY, v text)".to_string(),
        "CREATE PUBLICATION p FOR TABLE t".to_string(),
        format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
        "INSERT INTO t VALUES (1, 'hello')".to_string(),
    ] {
        db.client.batch_execute(&sql).await.unwrap();
    }
    let rows = db
        .client
        .query(
            &format!(
                "SELECT data FROM pg_logical_slot_get_binary_changes('{slot}', NULL, NULL,
                   'proto_version', '1', 'publication_names', 'p')"
            ),
            &[],
        )
        .await
        .unwrap();
    let messages: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
    // Begin, Relation, Insert, Commit.
    let tags: Vec<char> = messages.iter().map(|m| m[0] as char).collect();
    assert_eq!(tags, vec!['B', 'R', 'I', 'C'], "{tags:?}");
    let insert = &messages[2];
    assert!(
        insert.windows(5).any(|w| w == b"hello"),
        "the inserted value is in the Insert message"
    );
    db.client
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{slot}')"))
        .await
        .unwrap();
}

#[tokio::test]
async fn clickhouse_replacing_merge_tree_takes_arrow_stream() {
    let db = unique_name("tb_ch");
    ch_exec(&format!("CREATE DATABASE {db}")).await;
    ch_exec(&format!(
        "CREATE TABLE {db}.t (id Int64, v String, _version UInt64, _is_deleted UInt8)
         ENGINE = ReplacingMergeTree(_version, _is_deleted) ORDER BY id"
    ))
    .await;
    let schema = Arc::new(Schema::new(vec![
        // Deliberately not in table order: ArrowStream matches by name.
        Field::new("v", DataType::Utf8, false),
        Field::new("id", DataType::Int64, false),
        Field::new("_version", DataType::UInt64, false),
        Field::new("_is_deleted", DataType::UInt8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["a1", "b1", "a2", "c1"])),
            Arc::new(Int64Array::from(vec![1, 2, 1, 3])),
            Arc::new(UInt64Array::from(vec![10, 11, 12, 13])),
            Arc::new(UInt8Array::from(vec![0, 0, 0, 1])),
        ],
    )
    .unwrap();
    let mut buf = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    let client = clickhouse::Client::default()
        .with_url(&servers().clickhouse_url)
        .with_compression(clickhouse::Compression::None);
    let mut insert = client.insert_formatted_with(format!("INSERT INTO {db}.t FORMAT ArrowStream"));
    insert.send(bytes::Bytes::from(buf)).await.unwrap();
    insert.end().await.unwrap();
    let out = ch_query(&format!(
        "SELECT id, v FROM {db}.t FINAL WHERE _is_deleted = 0 ORDER BY id"
    ))
    .await;
    // id 1 replaced by its higher version, id 3 deleted.
    assert_eq!(out, "1\ta2\n2\tb1\n");
    ch_exec(&format!("DROP DATABASE {db}")).await;
}

#[tokio::test]
async fn kafka_broker_round_trips_a_keyed_message() {
    let brokers = &servers().kafka_brokers;
    let topic = unique_name("tb_topic");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&topic).key("k1").payload("v1"),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("test Kafka broker at {brokers}: {e}"));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("tb_group"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no message consumed from {topic}"
        );
        if let Some(msg) = consumer.poll(Duration::from_millis(500)) {
            let msg = msg.unwrap();
            assert_eq!(msg.key(), Some(&b"k1"[..]));
            assert_eq!(msg.payload(), Some(&b"v1"[..]));
            break;
        }
    }
}
