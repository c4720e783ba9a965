//! Crash safety into Kafka: while a load runs, sluice is killed with SIGKILL
//! at random moments, and (every other time) aborted by the failpoint
//! between the brokers' acknowledgement and the checkpoint; then a consumer
//! that skips events whose `source.lsn` it has already seen for their key
//! (and truncates it has already seen) rebuilds tables equal to PostgreSQL.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::e2e_kafka::{checks, wait_kafka_equal, BIG, SCHEMA, TABLES};
use crate::support::e2e::*;
use crate::support::kafka::ChangeLog;
use crate::support::*;

const KILLS: usize = 12;

/// Random transactions on the three tables until `stop`.
async fn load(url: String, stop: Arc<AtomicBool>, txns: Arc<AtomicU64>) {
    let client = connect(&url).await;
    let mut next = 1000;
    while !stop.load(Ordering::Relaxed) {
        next += 1;
        let (a, kind, n) = {
            let mut r = rand::thread_rng();
            (r.gen_range(1..100), r.gen_range(0..60), r.gen_range(1..20))
        };
        let sql = match kind {
            0..=14 => format!(
                "BEGIN; INSERT INTO orders VALUES ({next}, 'c', {n}, CASE WHEN {n} % 4 = 0 THEN {BIG} ELSE 'small' END);
                 INSERT INTO lines SELECT {next}, g, g FROM generate_series(1, {n}) g; COMMIT;"
            ),
            15..=24 => format!("UPDATE orders SET amount = amount + 1 WHERE id IN (SELECT id FROM orders ORDER BY random() LIMIT {n})"),
            25..=29 => format!("UPDATE orders SET id = id + 100000 WHERE id = (SELECT min(id) FROM orders WHERE id > {a} * 10 AND id < 100000)"),
            30..=34 => format!("DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY random() LIMIT {n})"),
            35..=39 => format!("UPDATE lines SET qty = qty + 1 WHERE order_id = (SELECT max(order_id) FROM lines WHERE order_id < {next} - {a})"),
            40..=42 => format!("UPDATE lines SET line_no = line_no + 1000 WHERE order_id = (SELECT min(order_id) FROM lines WHERE order_id > {next} - {a}) AND line_no < 1000"),
            43..=45 => "DELETE FROM lines WHERE order_id = (SELECT min(order_id) FROM lines)".into(),
            46..=50 => format!("INSERT INTO audit VALUES ({next}, {n}, {BIG})"),
            51..=55 => "UPDATE audit SET n = n + 1 WHERE id IN (SELECT id FROM audit ORDER BY random() LIMIT 3)".into(),
            56..=58 => "DELETE FROM audit WHERE id = (SELECT min(id) FROM audit)".into(),
            _ => "BEGIN; INSERT INTO lines VALUES (1, 1, 1); TRUNCATE lines; INSERT INTO lines VALUES (2, 1, 1); COMMIT;".into(),
        };
        if let Err(e) = client.batch_execute(&sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            eprintln!("load: {e}");
        }
        txns.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_consumers_rebuild_equal_tables() {
    let db = fresh_db("kafka_crash").await;
    db.client.batch_execute(SCHEMA).await.unwrap();
    let mut p = TestPipeline::with_kafka(&db.url, &TABLES, "");
    let mut first = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;

    let stop = Arc::new(AtomicBool::new(false));
    let txns = Arc::new(AtomicU64::new(0));
    let loader = tokio::spawn(load(db.url.clone(), stop.clone(), txns.clone()));

    tokio::time::sleep(Duration::from_millis(800)).await;
    let _ = first.kill();
    let _ = first.wait();
    let mut kills = 1;
    let mut failpoint_aborts = 0;
    while kills < KILLS {
        let use_failpoint = kills % 2 == 1;
        let (wait_ms, nth) = {
            let mut r = rand::thread_rng();
            (r.gen_range(200..2500), r.gen_range(1..4).to_string())
        };
        let env: Vec<(&str, &str)> = if use_failpoint {
            vec![("SLUICE_CRASH_AFTER_SINK_WRITE", nth.as_str())]
        } else {
            Vec::new()
        };
        let mut child = p.spawn(&env);
        if use_failpoint {
            // Under load the N-th flush comes soon: wait for the abort.
            let start = std::time::Instant::now();
            while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
        match child.try_wait().unwrap() {
            Some(status) if use_failpoint && !status.success() => failpoint_aborts += 1,
            Some(status) => panic!(
                "sluice exited on its own: {status}\n{}",
                tail(&p.last_log(), 40)
            ),
            None => child.kill().unwrap(),
        }
        let _ = child.wait();
        kills += 1;
    }
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();

    let mut last = p.spawn(&[]);
    let topics: Vec<String> = TABLES.iter().map(|t| p.topic(t)).collect();
    let mut log = ChangeLog::open(&servers().kafka_brokers, &topics);
    wait_kafka_equal(
        &p,
        &mut log,
        &db.client,
        &checks(),
        Duration::from_secs(180),
    )
    .await;
    let c = log.counts.clone();
    println!(
        "kafka crash test: {kills} kills ({failpoint_aborts} by the failpoint between delivery and checkpoint), {} load transactions; {c:?}",
        txns.load(Ordering::Relaxed)
    );
    assert!(kills >= 10);
    assert!(
        failpoint_aborts >= KILLS / 2 - 1,
        "{failpoint_aborts} failpoint aborts"
    );
    // The failpoint re-sends what was delivered but not checkpointed.
    assert!(c.replays > 0, "{c:?}");
    assert!(c.ops.get("c").copied().unwrap_or(0) > 100, "{c:?}");
    p.terminate_ok(&mut last, Duration::from_secs(30));
}
