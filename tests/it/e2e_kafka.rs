//! PostgreSQL -> Kafka end to end: a snapshot, then inserts, updates
//! (TOAST-unchanged ones, key changes), deletes and a truncate on three
//! tables (one with a composite key, one under REPLICA IDENTITY FULL); a
//! consumer rebuilds every table from its topic and it equals PostgreSQL
//! row for row; every message is the documented envelope.

use std::time::{Duration, Instant};

use crate::support::e2e::*;
use crate::support::kafka::ChangeLog;
use crate::support::*;

pub const ORDERS_PG: &str = "SELECT id::text, customer, amount::text, md5(note) FROM orders";
pub const LINES_PG: &str = "SELECT order_id::text, line_no::text, qty::text FROM lines";
pub const AUDIT_PG: &str = "SELECT id::text, n::text, md5(payload) FROM audit";

/// A text that PostgreSQL stores out of line (TOAST): random hex does not compress.
pub const BIG: &str =
    "(SELECT string_agg(md5(random()::text || x), '') FROM generate_series(1, 200) x)";

/// A test consumer that reads nothing new for this long (while the tables
/// differ) is replaced by a fresh one (see `ChangeLog::reopen`).
const STALLED_READER: Duration = Duration::from_secs(8);

/// Polls the topics until the rebuilt tables equal PostgreSQL (compared
/// through `md5` for the big texts, so the consumer hashes them too).
pub async fn wait_kafka_equal(
    p: &TestPipeline,
    log: &mut ChangeLog,
    pg: &tokio_postgres::Client,
    checks: &[(&str, &str, &[&str])],
    timeout: Duration,
) {
    let start = Instant::now();
    let mut progress = (log.counts.messages, Instant::now());
    loop {
        log.poll_for(Duration::from_millis(500));
        if log.counts.messages != progress.0 {
            progress = (log.counts.messages, Instant::now());
        } else if progress.1.elapsed() > STALLED_READER {
            eprintln!("the test consumer made no progress for {STALLED_READER:?}: reading the topics again");
            log.reopen();
            progress = (0, Instant::now());
            continue;
        }
        let mut diff = None;
        for (table, sql, columns) in checks {
            let mut expected = pg_tsv(pg, sql).await;
            expected.sort();
            let actual = hashed_tsv(log, &p.topic(table), columns);
            if expected != actual {
                diff = Some((table, expected, actual));
                break;
            }
        }
        let Some((table, expected, actual)) = diff else {
            return;
        };
        if start.elapsed() > timeout {
            let first: Vec<String> = expected
                .iter()
                .zip(actual.iter().chain(std::iter::repeat(&String::new())))
                .filter(|(e, a)| e != a)
                .take(5)
                .map(|(e, a)| format!("  postgres: {e}\n  kafka:    {a}"))
                .collect();
            panic!(
                "{table}: the topic did not catch up in {timeout:?}: {} rows in PostgreSQL, {} rebuilt; first differences:\n{}\nlast sluice log:\n{}",
                expected.len(),
                actual.len(),
                first.join("\n"),
                tail(&p.last_log(), 30)
            );
        }
    }
}

/// The rebuilt rows as TSV, columns named `md5(x)` hashed like PostgreSQL's md5.
pub fn hashed_tsv(log: &ChangeLog, topic: &str, columns: &[&str]) -> Vec<String> {
    let plain: Vec<&str> = columns
        .iter()
        .map(|c| c.trim_start_matches("md5(").trim_end_matches(')'))
        .collect();
    let mut lines: Vec<String> = log
        .tsv(topic, &plain)
        .into_iter()
        .map(|line| {
            line.split('\t')
                .zip(columns)
                .map(|(v, c)| {
                    if c.starts_with("md5(") && v != "\\N" {
                        md5_hex(v)
                    } else {
                        v.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect();
    lines.sort();
    lines
}

fn md5_hex(s: &str) -> String {
    let out = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .expect("md5sum");
    String::from_utf8_lossy(&out.stdout)[..32].to_owned()
}

pub const SCHEMA: &str =
    "CREATE TABLE orders (id int PRIMARY KEY, customer text, amount numeric(10,2), note text);
     CREATE TABLE lines (order_id int, line_no int, qty int, PRIMARY KEY (order_id, line_no));
     CREATE TABLE audit (id int PRIMARY KEY, n int, payload text);
     ALTER TABLE audit REPLICA IDENTITY FULL;";

pub const TABLES: [&str; 3] = ["public.orders", "public.lines", "public.audit"];

pub fn checks() -> [(&'static str, &'static str, &'static [&'static str]); 3] {
    [
        (
            "public.orders",
            ORDERS_PG,
            &["id", "customer", "amount", "md5(note)"],
        ),
        ("public.lines", LINES_PG, &["order_id", "line_no", "qty"]),
        ("public.audit", AUDIT_PG, &["id", "n", "md5(payload)"]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_rebuild_equal_tables_from_debezium_events() {
    let db = fresh_db("kafka_e2e").await;
    db.client.batch_execute(SCHEMA).await.unwrap();
    // Rows before the start: the snapshot sends them as op "r".
    db.client
        .batch_execute(&format!(
            "INSERT INTO orders SELECT g, 'c' || g, g * 1.5, CASE WHEN g % 3 = 0 THEN {BIG} ELSE 'small' END FROM generate_series(1, 30) g;
             INSERT INTO lines SELECT g / 5, g % 5, g FROM generate_series(1, 40) g;
             INSERT INTO audit SELECT g, g, {BIG} FROM generate_series(1, 10) g;"
        ))
        .await
        .unwrap();
    let mut p = TestPipeline::with_kafka(&db.url, &TABLES, "");
    let mut run = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    let topics: Vec<String> = TABLES.iter().map(|t| p.topic(t)).collect();
    let mut log = ChangeLog::open(&servers().kafka_brokers, &topics);

    db.client
        .batch_execute(&format!(
            "INSERT INTO orders SELECT g, 'n' || g, g, {BIG} FROM generate_series(31, 40) g;
             -- TOAST left unchanged (no FULL): the placeholder, the consumer keeps the value.
             UPDATE orders SET amount = amount + 1 WHERE id IN (3, 6, 9, 33);
             -- A key change: delete + tombstone of the old key, then the new one.
             UPDATE orders SET id = id + 1000 WHERE id IN (6, 7);
             DELETE FROM orders WHERE id IN (1, 2);
             UPDATE lines SET qty = qty * 10 WHERE order_id = 1;
             UPDATE lines SET line_no = line_no + 100 WHERE order_id = 2;
             DELETE FROM lines WHERE order_id = 3;
             -- FULL: the old row in before; the unchanged TOAST value comes from it.
             UPDATE audit SET n = n + 100 WHERE id <= 5;
             UPDATE audit SET payload = {BIG} WHERE id = 6;
             DELETE FROM audit WHERE id = 7;"
        ))
        .await
        .unwrap();
    wait_kafka_equal(&p, &mut log, &db.client, &checks(), Duration::from_secs(90)).await;

    db.client
        .batch_execute(
            "BEGIN; INSERT INTO lines VALUES (50, 1, 1); TRUNCATE lines; INSERT INTO lines VALUES (60, 1, 6), (60, 2, 7); COMMIT;
             UPDATE lines SET qty = 8 WHERE order_id = 60 AND line_no = 2;
             DELETE FROM orders WHERE id = 1006;",
        )
        .await
        .unwrap();
    wait_kafka_equal(&p, &mut log, &db.client, &checks(), Duration::from_secs(90)).await;
    // Nothing more is on its way: a last read finds nothing new to change.
    log.poll_for(Duration::from_secs(2));
    wait_kafka_equal(&p, &mut log, &db.client, &checks(), Duration::from_secs(5)).await;

    let c = log.counts.clone();
    println!("kafka e2e: {c:?}");
    let op = |o: &str| c.ops.get(o).copied().unwrap_or(0);
    assert_eq!(op("r"), 30 + 40 + 10, "snapshot reads");
    assert!(op("c") >= 13 && op("u") > 0 && op("d") > 0, "{c:?}");
    assert_eq!(op("t"), 1, "one truncate event (one partition)");
    // Every delete is followed by its tombstone; a run without a crash has no replays.
    assert_eq!(c.tombstones, op("d"), "{c:?}");
    assert_eq!(c.replays, 0, "{c:?}");
    assert!(
        c.placeholders >= 3,
        "TOAST-unchanged values sent as the placeholder: {c:?}"
    );
    assert!(
        c.updates_with_before >= 5,
        "FULL updates carry before: {c:?}"
    );
    p.terminate_ok(&mut run, Duration::from_secs(30));
}

/// Kills a `sluice` process the test started if the test fails first.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_config_runs_against_the_test_broker() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;

    let db = fresh_db("kafka_cfg").await;
    db.client
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text);
             CREATE TABLE orders (id bigint PRIMARY KEY, customer int, amount numeric(12,2));
             INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    let brokers = servers().kafka_brokers.clone();
    let topics = ["shop.public.orders", "shop.public.customers"].map(String::from);
    // Topics of an earlier run of this test would replay its events.
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;

    let dir = std::env::temp_dir().join(unique_name("kafka_cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = repo_root().join("configs/pg_to_kafka.toml");
    let log_path = dir.join("run.log");
    let mut run = Running(
        std::process::Command::new(sluice_bin())
            .args(["run", "-c"])
            .arg(&config)
            .current_dir(&dir)
            .env("SHOP_PG_URL", &db.url)
            .env("KAFKA_BROKERS", &brokers)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_slot(&db.client, "sluice_shop_kafka").await;
    db.client
        .batch_execute(
            "INSERT INTO orders SELECT g, g % 20 + 1, g * 2.5 FROM generate_series(1, 50) g;
             UPDATE customers SET name = 'renamed' WHERE id <= 5;
             DELETE FROM orders WHERE id > 45;",
        )
        .await
        .unwrap();
    let mut log = ChangeLog::open(&brokers, &topics);
    let start = Instant::now();
    loop {
        log.poll_for(Duration::from_millis(500));
        let mut orders = pg_tsv(
            &db.client,
            "SELECT id::text, customer::text, amount::text FROM orders",
        )
        .await;
        orders.sort();
        let mut customers = pg_tsv(&db.client, "SELECT id::text, name FROM customers").await;
        customers.sort();
        if log.tsv(&topics[0], &["id", "customer", "amount"]) == orders
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
    assert!(terminate(&mut run.0, Duration::from_secs(30)).success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_snapshot_sends_read_events_from_parallel_writers() {
    let db = fresh_db("kafka_snap").await;
    db.client
        .batch_execute(&format!(
            "{SCHEMA}
             INSERT INTO orders SELECT g, 'c' || g, g, 'n' FROM generate_series(1, 20000) g;
             INSERT INTO lines SELECT g / 10, g % 10, g FROM generate_series(1, 3000) g;
             INSERT INTO audit SELECT g, g, 'p' FROM generate_series(1, 5) g;"
        ))
        .await
        .unwrap();
    // Parallel readers, each with its own (forked) sink writer.
    let p = TestPipeline::with_kafka(&db.url, &TABLES, "");
    p.edit_config("[batch]", "[snapshot]\nparallelism = 4\n\n[batch]");
    let out = std::process::Command::new(sluice_bin())
        .args(["snapshot", "-c"])
        .arg(&p.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let topics: Vec<String> = TABLES.iter().map(|t| p.topic(t)).collect();
    let mut log = ChangeLog::open(&servers().kafka_brokers, &topics);
    // Every row was acknowledged before `sluice snapshot` exited.
    wait_kafka_equal(
        &p,
        &mut log,
        &db.client,
        &checks(),
        Duration::from_secs(120),
    )
    .await;
    let c = log.counts.clone();
    assert_eq!(c.ops.get("r").copied(), Some(20000 + 3000 + 5), "{c:?}");
    assert_eq!(c.ops.len(), 1, "only snapshot reads: {c:?}");
    assert_eq!(c.replays, 0, "{c:?}");
}
