//! Cursor-polled PostgreSQL tables into ClickHouse: inserts, updates and
//! soft deletes under load, transactions that set their cursor with `now()`
//! (or draw a sequence value) and commit several poll intervals later, and
//! SIGKILLs at random moments; at the end ClickHouse equals PostgreSQL row
//! for row.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::e2e::*;
use crate::support::*;
use rand::Rng;

const KILLS: usize = 10;

const ITEMS_PG: &str = "SELECT id::text, v::text, note, \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM items WHERE NOT deleted";
const COUNTERS_PG: &str = "SELECT id::text, v::text, seq::text FROM counters";

fn items_ch(db: &str) -> String {
    format!("SELECT toString(id), toString(v), note, toString(updated_at) FROM `{db}`.items FINAL WHERE _is_deleted = 0")
}

fn counters_ch(db: &str) -> String {
    format!("SELECT toString(id), toString(v), toString(seq) FROM `{db}`.counters FINAL WHERE _is_deleted = 0")
}

pub fn poll_source(url: &str) -> String {
    format!(
        r#"[source.poll]
kind = "postgres"
url = "{url}"
interval = "200ms"

[[source.poll.tables]]
table = "public.items"
cursor = "updated_at"
deleted = "deleted"

[[source.poll.tables]]
table = "public.counters"
cursor = "seq"
"#
    )
}

/// Two polled tables: a timestamp cursor with soft deletes, a sequence cursor.
pub const SCHEMA: &str = "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text,
         deleted boolean NOT NULL DEFAULT false,
         updated_at timestamptz NOT NULL DEFAULT now());
     CREATE INDEX ON items (updated_at);
     CREATE SEQUENCE counter_seq;
     CREATE TABLE counters (id bigint PRIMARY KEY, v int NOT NULL, seq bigint NOT NULL);
     CREATE INDEX ON counters (seq);
     INSERT INTO items (id, v, note) SELECT g, g, 'start' FROM generate_series(1, 600) g;
     INSERT INTO counters SELECT g, g, nextval('counter_seq') FROM generate_series(1, 800) g;";

/// Random short transactions until `stop`.
pub async fn load(url: String, stop: Arc<AtomicBool>, txns: Arc<AtomicU64>) {
    let client = connect(&url).await;
    let mut next = 100_000;
    while !stop.load(Ordering::Relaxed) {
        let (a, b, kind, n) = {
            let mut r = rand::thread_rng();
            (
                r.gen_range(1..600),
                r.gen_range(1..600),
                r.gen_range(0..8),
                r.gen_range(1..30),
            )
        };
        next += 100;
        let sql = match kind {
            0 | 1 => format!(
                "INSERT INTO items (id, v, note) SELECT {next} + g, g, 'new' FROM generate_series(1, {n}) g"
            ),
            2 | 3 => format!(
                "UPDATE items SET v = v + 1, note = 'u{n}', updated_at = now() WHERE id IN ({a}, {b}, {next} - 95)"
            ),
            4 => format!(
                "UPDATE items SET deleted = NOT deleted, updated_at = now() WHERE id = {a}"
            ),
            5 => format!(
                "INSERT INTO counters (id, v, seq) SELECT {next} + g, g, nextval('counter_seq') FROM generate_series(1, {n}) g"
            ),
            _ => format!(
                "UPDATE counters SET v = v + 1, seq = nextval('counter_seq') WHERE id IN ({a}, {b})"
            ),
        };
        if let Err(e) = client.batch_execute(&sql).await {
            eprintln!("load: {e}");
        }
        txns.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Transactions that take their cursor value early and commit late: an
/// update with `now()` and a sequence value held past many poll intervals.
pub async fn late_commits(url: String, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let client = connect(&url).await;
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let id = 700 + i;
        client
            .batch_execute(&format!(
                "BEGIN;
                 UPDATE items SET v = v + 1000, note = 'late', updated_at = now() WHERE id = {i};
                 INSERT INTO items (id, v, note) VALUES (900000 + {i}, {i}, 'late insert');
                 INSERT INTO counters (id, v, seq) VALUES (900000 + {i}, {i}, nextval('counter_seq'));
                 UPDATE counters SET v = v + 1000, seq = nextval('counter_seq') WHERE id = {id};"
            ))
            .await
            .unwrap();
        // Several poll intervals (200 ms) pass while it is open.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        client.batch_execute("COMMIT").await.unwrap();
        done.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_tables_survive_kills_and_late_commits() {
    let db = fresh_db("poll").await;
    db.client.batch_execute(SCHEMA).await.unwrap();
    let mut p = TestPipeline::with_source(|_| poll_source(&db.url), "", &servers().clickhouse_url);

    let stop = Arc::new(AtomicBool::new(false));
    let txns = Arc::new(AtomicU64::new(0));
    let late = Arc::new(AtomicU64::new(0));
    let loader = tokio::spawn(load(db.url.clone(), stop.clone(), txns.clone()));
    let slow = tokio::spawn(late_commits(db.url.clone(), stop.clone(), late.clone()));

    let kills = KILLS;
    p.kill_repeatedly(kills, 300..2000).await;
    let mut last = p.spawn(&[]);
    // Polling goes on under the load for a while after the last kill.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();
    slow.await.unwrap();

    let items = wait_equal(
        &p,
        &db.client,
        ITEMS_PG,
        &items_ch(&p.ch_db),
        Duration::from_secs(120),
    )
    .await;
    let counters = wait_equal(
        &p,
        &db.client,
        COUNTERS_PG,
        &counters_ch(&p.ch_db),
        Duration::from_secs(120),
    )
    .await;
    let late_rows = items.iter().filter(|l| l.contains("\tlate")).count();
    let deleted: i64 = db
        .client
        .query_one("SELECT count(*) FROM items WHERE deleted", &[])
        .await
        .unwrap()
        .get(0);
    println!(
        "poll test: {kills} kills, {} load transactions, {} late commits; equal: {} items ({late_rows} late, {deleted} soft-deleted), {} counters",
        txns.load(Ordering::Relaxed),
        late.load(Ordering::Relaxed),
        items.len(),
        counters.len()
    );
    assert!(kills >= 8);
    assert!(late.load(Ordering::Relaxed) >= 3, "too few late commits");
    assert!(late_rows >= 3, "late commits are in ClickHouse");
    assert!(deleted > 0, "the load soft-deleted rows");
    p.terminate_ok(&mut last, Duration::from_secs(30));
    // `status` shows each table's lifecycle and saved cursor.
    let out = std::process::Command::new(sluice_bin())
        .args(["status", "-c"])
        .arg(&p.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for t in ["public.items", "public.counters"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("table {t}: streaming, cursor "))
                    && !l.contains("none yet")),
            "{text}"
        );
    }
}

/// `sluice check` on a polled source: columns, cursor type, and the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_cursor_index_and_bad_columns() {
    let db = fresh_db("pollcheck").await;
    db.client
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, v int, deleted boolean NOT NULL DEFAULT false,
                 updated_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE counters (id bigint PRIMARY KEY, v int, seq bigint NOT NULL, note text);",
        )
        .await
        .unwrap();
    let p = TestPipeline::with_source(|_| poll_source(&db.url), "", &servers().clickhouse_url);
    let run = |p: &TestPipeline| {
        let out = std::process::Command::new(sluice_bin())
            .args(["check", "-c"])
            .arg(&p.config)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = run(&p);
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: no index leads with cursor \"updated_at\""),
        "{text}"
    );
    assert!(text.contains("hard deletes are invisible"), "{text}");
    db.client
        .batch_execute("CREATE INDEX ON items (updated_at); ALTER TABLE counters DROP COLUMN seq")
        .await
        .unwrap();
    let (ok, text) = run(&p);
    assert!(!ok, "{text}");
    assert!(
        text.contains("an index leads with \"updated_at\""),
        "{text}"
    );
    assert!(
        text.contains("cursor column \"seq\" does not exist"),
        "{text}"
    );

    // A role without SELECT and without pg_read_all_stats: both named.
    let user = unique_name("pollro");
    let admin = connect(&servers().pg_url).await;
    admin
        .batch_execute(&format!("CREATE ROLE {user} LOGIN"))
        .await
        .unwrap();
    let url = url_with(&servers().pg_url, &db.name, Some((&user, None)));
    let p = TestPipeline::with_source(|_| poll_source(&url), "", &servers().clickhouse_url);
    let (ok, text) = run(&p);
    let _ = admin.batch_execute(&format!("DROP ROLE {user}")).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("GRANT pg_read_all_stats TO \"{user}\"")),
        "{text}"
    );
    assert!(text.contains("may not SELECT from it"), "{text}");
}

/// Rows of a ClickHouse query as sorted TSV lines.
async fn ch_sorted(sql: &str) -> Vec<String> {
    let mut lines = tsv_lines(&ch_query(sql).await);
    lines.sort();
    lines
}

/// Waits (120 s at most) until `target_sql` on the pipeline's ClickHouse
/// gives the rows `source_sql` gives on the test server, in any order;
/// returns them sorted.
pub async fn wait_ch_sorted_equal(
    p: &TestPipeline,
    source_sql: &str,
    target_sql: &str,
) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let expected = ch_sorted(source_sql).await;
        let actual = p.ch(target_sql).await.map(|t| {
            let mut l = tsv_lines(&t);
            l.sort();
            l
        });
        match actual {
            Ok(a) if a == expected => return a,
            other => {
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "not equal after 120 s: source {} rows, target {:?} rows\n{}",
                    expected.len(),
                    other.map(|a| a.len()),
                    tail(&p.last_log(), 30)
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Drops a ClickHouse database when the test ends, also when it fails.
pub struct DropDatabase(pub String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS `{}`", self.0);
        // Its own runtime: drop may run inside the test's (panicking) one.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(ch_exec(&sql))
        })
        .join();
    }
}

/// A ClickHouse table polled into another ClickHouse database: a
/// timestamp-cursor table with updates and soft deletes and an append-only
/// integer-cursor table (with a lookback window), inserts during polling,
/// SIGKILLs; equal at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_tables_polled_into_clickhouse_survive_kills() {
    let src = unique_name("pollsrc");
    ch_exec(&format!("CREATE DATABASE `{src}`")).await;
    let _source_db = DropDatabase(src.clone());
    ch_exec(&format!(
        "CREATE TABLE `{src}`.events (id UInt64, v Int32, note String, deleted UInt8,
             updated_at DateTime64(6, 'UTC')) ENGINE = ReplacingMergeTree(updated_at) ORDER BY id"
    ))
    .await;
    ch_exec(&format!(
        "CREATE TABLE `{src}`.log (seq UInt64, v Int32, at DateTime) ENGINE = MergeTree ORDER BY seq"
    ))
    .await;
    ch_exec(&format!(
        "INSERT INTO `{src}`.events SELECT number, toInt32(number), 'start', 0, now64(6) FROM numbers(1, 500)"
    ))
    .await;
    ch_exec(&format!(
        "INSERT INTO `{src}`.log SELECT number, toInt32(number), now() FROM numbers(1, 300)"
    ))
    .await;
    let ch_url = servers().clickhouse_url.clone();
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

[[source.poll.tables]]
table = "{src}.log"
cursor = "seq"
# Re-read on every poll: harmless, the versions are the same.
lookback = 50
"#
    );
    let mut p = TestPipeline::with_source(|_| source.clone(), "", &ch_url);

    let stop = Arc::new(AtomicBool::new(false));
    let inserts = Arc::new(AtomicU64::new(0));
    let loader = {
        let (src, stop, inserts) = (src.clone(), stop.clone(), inserts.clone());
        tokio::spawn(async move {
            let mut seq = 1000u64;
            while !stop.load(Ordering::Relaxed) {
                let (a, kind, n) = {
                    let mut r = rand::thread_rng();
                    (
                        r.gen_range(1..700u64),
                        r.gen_range(0..4),
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
                    2 => format!(
                        "INSERT INTO `{src}`.events SELECT id, v, 'del', 1 - deleted, now64(6) FROM `{src}`.events FINAL WHERE id = {a}"
                    ),
                    _ => {
                        seq += n;
                        format!(
                            "INSERT INTO `{src}`.log SELECT {seq} - number, toInt32(number), now() FROM numbers({n})"
                        )
                    }
                };
                ch_exec(&sql).await;
                inserts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let kills = 8;
    p.kill_repeatedly(kills, 400..2000).await;
    let mut last = p.spawn(&[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();

    let db = &p.ch_db;
    let checks = [
        (
            format!("SELECT id, v, note, toString(updated_at) FROM `{src}`.events FINAL WHERE deleted = 0"),
            format!("SELECT id, v, note, toString(updated_at) FROM `{db}`.`{src}_events` FINAL WHERE _is_deleted = 0"),
        ),
        (
            format!("SELECT seq, v, toUnixTimestamp(at) FROM `{src}`.log"),
            format!("SELECT seq, v, toUnixTimestamp(at) FROM `{db}`.`{src}_log` FINAL"),
        ),
    ];
    for (source_sql, target_sql) in &checks {
        let rows = wait_ch_sorted_equal(&p, source_sql, target_sql).await;
        println!("clickhouse poll: {} rows equal ({target_sql})", rows.len());
    }
    println!(
        "clickhouse poll test: {kills} kills, {} source inserts",
        inserts.load(Ordering::Relaxed)
    );
    p.terminate_ok(&mut last, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_source_gets_the_sink_probe_and_process_gauges_too() {
    let mut ch = OwnClickHouse::start();
    let db = fresh_db("e2e_ready_poll").await;
    db.client.batch_execute(SCHEMA).await.unwrap();
    let port = free_port();
    let mut p = TestPipeline::with_source(
        |_| poll_source(&db.url),
        &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\nready_max_lag = \"30s\"\n"),
        &ch.url,
    );
    let mut sluice = p.spawn(&[]);
    crate::e2e_ops::wait_ready(port, true, Duration::from_secs(90)).await;
    let m = crate::e2e_ops::scrape(port).await;
    assert!(
        crate::e2e_ops::value(&m, "sluice_process_resident_memory_bytes", &[]).unwrap_or(0.0) > 0.0,
        "{m}"
    );

    ch.stop();
    // The probe's own finding (writes failing may be said first).
    wait_for(
        "/readyz to say the sink does not answer",
        Duration::from_secs(30),
        || async {
            crate::e2e_ops::get(port, "/readyz")
                .await
                .filter(|(code, why)| *code == 503 && why.contains("the sink does not answer"))
        },
    )
    .await;
    ch.restart();
    crate::e2e_ops::wait_ready(port, true, Duration::from_secs(120)).await;
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
}
