//! Broker outage: the pipeline's own broker is frozen (SIGSTOP) for 30 s
//! while changes keep coming, then resumed. sluice waits, says in its log
//! what it waits for, and afterwards the topics hold every change once and
//! in order (a consumer sees no replayed or out-of-order event) and rebuild
//! tables equal to PostgreSQL. And with a short `message.timeout.ms`, the
//! deliveries that time out during a freeze fail their flush, which is
//! applied again (by a new producer if the brokers then refuse the old one's
//! id) until the tables rebuild equal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::e2e_kafka::{checks, wait_kafka_equal, SCHEMA, TABLES};
use crate::support::e2e::*;
use crate::support::kafka::ChangeLog;
use crate::support::*;

const OUTAGE: Duration = Duration::from_secs(30);

async fn load(url: String, stop: Arc<AtomicBool>, txns: Arc<AtomicU64>) {
    let client = connect(&url).await;
    let mut id = 0;
    while !stop.load(Ordering::Relaxed) {
        id += 1;
        let sql = format!(
            "BEGIN; INSERT INTO orders VALUES ({id}, 'c', {id}, 'small');
             INSERT INTO lines SELECT {id}, g, g FROM generate_series(1, 3) g;
             UPDATE orders SET amount = amount + 1 WHERE id = {id} / 2;
             UPDATE lines SET qty = qty + 1 WHERE order_id = {id} / 3;
             DELETE FROM lines WHERE order_id = {id} / 4 AND line_no = 1;
             INSERT INTO audit VALUES ({id}, {id}, 'x');
             UPDATE audit SET n = n + 1 WHERE id = {id} / 2; COMMIT;"
        );
        client.batch_execute(&sql).await.unwrap();
        txns.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_broker_loses_and_reorders_nothing() {
    let kafka = OwnKafka::start();
    let db = fresh_db("kafka_outage").await;
    db.client.batch_execute(SCHEMA).await.unwrap();
    let mut p = TestPipeline::with_kafka_brokers(&db.url, &TABLES, "", &kafka.brokers);
    let mut run = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;

    let stop = Arc::new(AtomicBool::new(false));
    let txns = Arc::new(AtomicU64::new(0));
    let loader = tokio::spawn(load(db.url.clone(), stop.clone(), txns.clone()));
    // The topics exist once the first changes went out.
    let topics: Vec<String> = TABLES.iter().map(|t| p.topic(t)).collect();
    let mut log = ChangeLog::open(&kafka.brokers, &topics);
    log.poll_for(Duration::from_secs(2));

    kafka.pause();
    let before = txns.load(Ordering::Relaxed);
    tokio::time::sleep(OUTAGE).await;
    let during = txns.load(Ordering::Relaxed) - before;
    assert!(
        run.try_wait().unwrap().is_none(),
        "sluice stopped during the outage:\n{}",
        tail(&p.last_log(), 30)
    );
    kafka.resume();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();

    wait_kafka_equal(
        &p,
        &mut log,
        &db.client,
        &checks(),
        Duration::from_secs(120),
    )
    .await;
    let c = log.counts.clone();
    println!("kafka outage: {during} transactions during the {OUTAGE:?} outage; {c:?}");
    assert!(during > 100, "the load ran during the outage");
    assert_eq!(c.replays, 0, "an event came again or out of order: {c:?}");
    assert_eq!(c.tombstones, c.ops.get("d").copied().unwrap_or(0), "{c:?}");
    let text = p.last_log();
    assert!(
        text.contains("waiting for the Kafka brokers to acknowledge"),
        "the log does not say what sluice waits for:\n{}",
        tail(&text, 30)
    );
    p.terminate_ok(&mut run, Duration::from_secs(30));
}

/// Deliveries that fail (here: they time out while the broker is frozen,
/// `message.timeout.ms` 2 s) fail the flush, which is applied again once the
/// broker answers: nothing is lost, the log names the failed delivery, and
/// a consumer that skips replays (at-least-once) rebuilds equal tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_fail_the_flush_which_is_applied_again() {
    let kafka = OwnKafka::start();
    let db = fresh_db("kafka_timeout").await;
    db.client.batch_execute(SCHEMA).await.unwrap();
    let mut p = TestPipeline::with_kafka_brokers(
        &db.url,
        &TABLES,
        "[sink.kafka.properties]\n\"message.timeout.ms\" = \"2000\"",
        &kafka.brokers,
    );
    let mut run = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;

    let stop = Arc::new(AtomicBool::new(false));
    let txns = Arc::new(AtomicU64::new(0));
    let loader = tokio::spawn(load(db.url.clone(), stop.clone(), txns.clone()));
    let topics: Vec<String> = TABLES.iter().map(|t| p.topic(t)).collect();
    let mut log = ChangeLog::open(&kafka.brokers, &topics);
    log.poll_for(Duration::from_secs(2));

    kafka.pause();
    tokio::time::sleep(Duration::from_secs(8)).await;
    kafka.resume();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();
    assert!(
        run.try_wait().unwrap().is_none(),
        "sluice stopped:\n{}",
        tail(&p.last_log(), 30)
    );

    wait_kafka_equal(
        &p,
        &mut log,
        &db.client,
        &checks(),
        Duration::from_secs(120),
    )
    .await;
    let text = p.last_log();
    assert!(
        text.contains("delivery failed") && text.contains("Message timed out"),
        "the log does not name the failed delivery:\n{}",
        tail(&text, 30)
    );
    println!("kafka delivery timeouts: {:?}", log.counts);
    p.terminate_ok(&mut run, Duration::from_secs(30));
}
