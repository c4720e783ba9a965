//! Cursor-polled PostgreSQL tables into Kafka: the load, late commits and
//! soft deletes of `e2e_poll`, SIGKILLs at random moments; then a consumer
//! following docs/kafka-sink.md (skip an event whose `source.lsn`, here the
//! cursor, is not above the last applied for its key) rebuilds tables equal
//! to PostgreSQL row for row, soft-deleted rows removed by their `d` events.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::e2e_kafka::wait_kafka_equal;
use crate::e2e_poll::{late_commits, load, poll_source, DropDatabase, SCHEMA};
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
    // The sequence table re-reads the last 50 values on every poll: those
    // events repeat their `source.lsn`, and the consumer must skip them.
    let source =
        poll_source(&db.url).replace("cursor = \"seq\"\n", "cursor = \"seq\"\nlookback = 50\n");
    assert!(source.contains("lookback = 50"));
    let mut p = TestPipeline::with_parts(&|_| source.clone(), &|name| {
        format!("[sink.kafka]\nbrokers = \"{brokers}\"\ntopic_prefix = \"{name}\"\n")
    });

    let stop = Arc::new(AtomicBool::new(false));
    let txns = Arc::new(AtomicU64::new(0));
    let late = Arc::new(AtomicU64::new(0));
    let loader = tokio::spawn(load(db.url.clone(), stop.clone(), txns.clone()));
    let slow = tokio::spawn(late_commits(db.url.clone(), stop.clone(), late.clone()));

    let kills = KILLS;
    p.kill_repeatedly(kills, 500..2500).await;
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
    assert!(
        c.replays > 0,
        "the lookback re-reads are skipped as replays: {c:?}"
    );
    for op in ["c", "u", "t"] {
        assert!(!c.ops.contains_key(op), "{c:?}");
    }
    p.terminate_ok(&mut last, Duration::from_secs(30));
}

/// Kills a `sluice` process the test started if the test fails first.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `configs/poll_pg_to_kafka.toml` as shipped: `check` passes, and `run`
/// delivers inserts, a cursor-bumping update and a soft delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_poll_to_kafka_config_runs_against_the_test_broker() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;

    let db = fresh_db("pollkafka_cfg").await;
    db.client
        .batch_execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2),
                 deleted_at timestamptz, updated_at timestamptz NOT NULL DEFAULT now());
             CREATE INDEX ON orders (updated_at);
             CREATE SEQUENCE customers_seq;
             CREATE TABLE customers (id int PRIMARY KEY, name text,
                 seq bigint NOT NULL DEFAULT nextval('customers_seq'));
             CREATE INDEX ON customers (seq);
             INSERT INTO customers (id, name) SELECT g, 'c' || g FROM generate_series(1, 20) g;
             INSERT INTO orders (id, amount) SELECT g, g * 2.5 FROM generate_series(1, 50) g;",
        )
        .await
        .unwrap();
    let brokers = servers().kafka_brokers.clone();
    let topics = ["shop_polled.public.orders", "shop_polled.public.customers"].map(String::from);
    // Topics of an earlier run of this test would replay its events.
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;

    let dir = std::env::temp_dir().join(unique_name("pollkafka_cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = repo_root().join("configs/poll_pg_to_kafka.toml");
    let sluice = |cmd: &str| {
        let mut c = std::process::Command::new(sluice_bin());
        c.args([cmd, "-c"])
            .arg(&config)
            .current_dir(&dir)
            .env("SHOP_PG_URL", &db.url)
            .env("KAFKA_BROKERS", &brokers)
            .env("RUST_LOG", "info");
        c
    };
    let check = sluice("check").output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{text}");
    assert!(text.contains("hard deletes are invisible"), "{text}");

    let log_path = dir.join("run.log");
    let mut run = Running(
        sluice("run")
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut log = ChangeLog::open(&brokers, &topics);
    db.client
        .batch_execute(
            "INSERT INTO orders (id, amount) SELECT g, g FROM generate_series(51, 60) g;
             UPDATE orders SET amount = 0, updated_at = now() WHERE id <= 5;
             UPDATE orders SET deleted_at = now(), updated_at = now() WHERE id > 55;
             UPDATE customers SET name = 'renamed', seq = nextval('customers_seq') WHERE id <= 5;",
        )
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        log.poll_for(Duration::from_millis(500));
        let mut orders = pg_tsv(
            &db.client,
            "SELECT id::text, amount::text FROM orders WHERE deleted_at IS NULL",
        )
        .await;
        orders.sort();
        let mut customers = pg_tsv(&db.client, "SELECT id::text, name FROM customers").await;
        customers.sort();
        if log.tsv(&topics[0], &["id", "amount"]) == orders
            && log.tsv(&topics[1], &["id", "name"]) == customers
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the shipped config's pipeline did not deliver; log:\n{}",
            tail(&std::fs::read_to_string(&log_path).unwrap_or_default(), 30)
        );
    }
    assert_eq!(
        log.counts.ops.get("d").copied(),
        Some(5),
        "{:?}",
        log.counts
    );
    assert!(terminate(&mut run.0, Duration::from_secs(30)).success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A ClickHouse table polled into Kafka: inserts, updates (new versions of
/// a key) and soft deletes during polling, SIGKILLs; the consumer's rebuilt
/// table equals the source's live rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_table_polled_into_kafka_survives_kills() {
    let src = unique_name("pollksrc");
    ch_exec(&format!("CREATE DATABASE `{src}`")).await;
    let _source_db = DropDatabase(src.clone());
    ch_exec(&format!(
        "CREATE TABLE `{src}`.events (id UInt64, v Int32, note String, deleted UInt8,
             updated_at DateTime64(6, 'UTC')) ENGINE = ReplacingMergeTree(updated_at) ORDER BY id"
    ))
    .await;
    ch_exec(&format!(
        "INSERT INTO `{src}`.events SELECT number, toInt32(number), 'start', 0, now64(6) FROM numbers(1, 500)"
    ))
    .await;
    let ch_url = servers().clickhouse_url.clone();
    let brokers = servers().kafka_brokers.clone();
    let source = format!(
        r#"[source.poll]
kind = "clickhouse"
url = "{ch_url}"
interval = "200ms"
settle_delay = "1s"

[[source.poll.tables]]
table = "{src}.events"
cursor = "updated_at"
deleted = "deleted"
"#
    );
    let mut p = TestPipeline::with_parts(&|_| source.clone(), &|name| {
        format!("[sink.kafka]\nbrokers = \"{brokers}\"\ntopic_prefix = \"{name}\"\n")
    });

    let stop = Arc::new(AtomicBool::new(false));
    let inserts = Arc::new(AtomicU64::new(0));
    let loader = {
        let (src, stop, inserts) = (src.clone(), stop.clone(), inserts.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (a, kind, n) = {
                    let mut r = rand::thread_rng();
                    (
                        r.gen_range(1..700u64),
                        r.gen_range(0..3),
                        r.gen_range(1..20u64),
                    )
                };
                let sql = match kind {
                    0 => format!(
                        "INSERT INTO `{src}`.events SELECT {a} * 1000 + number, 1, 'new', 0, now64(6) FROM numbers({n})"
                    ),
                    1 => format!(
                        "INSERT INTO `{src}`.events SELECT id, v + 1, 'upd', deleted, now64(6) FROM `{src}`.events FINAL WHERE id IN ({a}, {a} + 1)"
                    ),
                    _ => format!(
                        "INSERT INTO `{src}`.events SELECT id, v, 'del', 1 - deleted, now64(6) FROM `{src}`.events FINAL WHERE id = {a}"
                    ),
                };
                ch_exec(&sql).await;
                inserts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let kills = 4;
    p.kill_repeatedly(kills, 500..2000).await;
    let mut last = p.spawn(&[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();

    let topic = p.topic(&format!("{src}.events"));
    let mut log = ChangeLog::open(&servers().kafka_brokers, std::slice::from_ref(&topic));
    let source_sql = format!("SELECT id, v, note FROM `{src}`.events FINAL WHERE deleted = 0");
    let start = Instant::now();
    loop {
        log.poll_for(Duration::from_millis(500));
        let mut expected = tsv_lines(&ch_query(&source_sql).await);
        expected.sort();
        let actual = log.tsv(&topic, &["id", "v", "note"]);
        if actual == expected {
            println!(
                "clickhouse->kafka poll: {kills} kills, {} source inserts, {} rows equal; {:?}",
                inserts.load(Ordering::Relaxed),
                actual.len(),
                log.counts
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "not equal after 120 s: source {} rows, rebuilt {}\n{}",
            expected.len(),
            actual.len(),
            tail(&p.last_log(), 30)
        );
    }
    assert!(
        log.counts.ops.get("d").copied().unwrap_or(0) > 0,
        "{:?}",
        log.counts
    );
    p.terminate_ok(&mut last, Duration::from_secs(30));
}
