//! Cursor-polled PostgreSQL tables into Kafka: the load, late commits and
//! soft deletes of `e2e_poll`, SIGKILLs at random moments; then a consumer
//! following docs/kafka-sink.md (skip an event whose `source.lsn`, here the
//! cursor, is not above the last applied for its key) rebuilds tables equal
//! to PostgreSQL row for row, soft-deleted rows removed by their `d` events.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::e2e_kafka::wait_kafka_equal;
use crate::e2e_poll::{late_commits, load, poll_source, SCHEMA};
use crate::support::e2e::*;
use crate::support::kafka::ChangeLog;
use crate::support::*;

const KILLS: usize = 6;

const ITEMS_PG: &str = "SELECT id::text, v::text, note, \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM items WHERE NOT deleted";
const COUNTERS_PG: &str = "SELECT id::text, v::text, seq::text FROM counters";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_tables_into_kafka_survive_kills() {
    let db = fresh_db("pollkafka").await;
    db.client.batch_execute(SCHEMA).await.unwrap();
    let brokers = servers().kafka_brokers.clone();
    let mut p = TestPipeline::with_parts(&|_| poll_source(&db.url), &|name| {
        format!("[sink.kafka]\nbrokers = \"{brokers}\"\ntopic_prefix = \"{name}\"\n")
    });

    let stop = Arc::new(AtomicBool::new(false));
    let txns = Arc::new(AtomicU64::new(0));
    let late = Arc::new(AtomicU64::new(0));
    let loader = tokio::spawn(load(db.url.clone(), stop.clone(), txns.clone()));
    let slow = tokio::spawn(late_commits(db.url.clone(), stop.clone(), late.clone()));

    let mut kills = 0;
    while kills < KILLS {
        let wait_ms = rand::thread_rng().gen_range(500..2500);
        let mut child = p.spawn(&[]);
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "sluice exited on its own: {status}\n{}",
                tail(&p.last_log(), 40)
            );
        }
        child.kill().unwrap();
        let _ = child.wait();
        kills += 1;
    }
    let mut last = p.spawn(&[]);
    // Polling goes on under the load for a while after the last kill.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();
    slow.await.unwrap();

    let checks: [(&str, &str, &[&str]); 2] = [
        ("public.items", ITEMS_PG, &["id", "v", "note", "updated_at"]),
        ("public.counters", COUNTERS_PG, &["id", "v", "seq"]),
    ];
    let topics: Vec<String> = checks.iter().map(|(t, _, _)| p.topic(t)).collect();
    let mut log = ChangeLog::open(&servers().kafka_brokers, &topics);
    wait_kafka_equal(&p, &mut log, &db.client, &checks, Duration::from_secs(180)).await;

    let c = log.counts.clone();
    let items = log.tsv(&p.topic("public.items"), &["note"]);
    let late_rows = items.iter().filter(|n| n.starts_with("late")).count();
    let deleted: i64 = db
        .client
        .query_one("SELECT count(*) FROM items WHERE deleted", &[])
        .await
        .unwrap()
        .get(0);
    println!(
        "poll->kafka test: {kills} kills, {} load transactions, {} late commits; equal: {} items ({late_rows} late, {deleted} soft-deleted); {c:?}",
        txns.load(Ordering::Relaxed),
        late.load(Ordering::Relaxed),
        items.len(),
    );
    assert!(kills >= 4);
    assert!(late.load(Ordering::Relaxed) >= 3, "too few late commits");
    assert!(late_rows >= 3, "late commits are in Kafka");
    assert!(deleted > 0, "the load soft-deleted rows");
    // Polled rows are reads of the row's state: "r", soft deletes "d" with
    // their tombstones; polling cannot tell an insert from an update.
    assert!(c.ops.get("r").copied().unwrap_or(0) > 1000, "{c:?}");
    assert!(c.ops.get("d").copied().unwrap_or(0) > 0, "{c:?}");
    assert!(c.tombstones > 0, "{c:?}");
    for op in ["c", "u", "t"] {
        assert!(!c.ops.contains_key(op), "{c:?}");
    }
    assert!(terminate(&mut last, Duration::from_secs(30)).success());
}
