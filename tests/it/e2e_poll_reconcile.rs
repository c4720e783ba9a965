//! Reconcile for hard deletes: polled PostgreSQL tables (one keyed by a
//! bigint, one by a composite text + integer key) into ClickHouse with
//! `reconcile_interval = "1s"` and small chunks, under an insert / update /
//! hard-delete / re-insert load with SIGKILLs; at the end ClickHouse's live
//! rows equal PostgreSQL's row for row, and a key deleted then inserted
//! again is alive.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::e2e::*;
use crate::support::*;
use rand::Rng;

const KILLS: usize = 5;
/// Composite keys with a space, upper case and a non-ASCII letter: their
/// order differs between byte order and collations.
const REGIONS: [&str; 5] = ["eu", "US", "a b", "Ümlaut", "zz-top"];

const ITEMS_PG: &str = "SELECT id::text, v::text, note, \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM items";
const PAIRS_PG: &str = "SELECT region, n::text, v::text, \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM pairs";

fn items_ch(db: &str) -> String {
    format!("SELECT toString(id), toString(v), note, toString(updated_at) FROM `{db}`.items FINAL WHERE _is_deleted = 0")
}

fn pairs_ch(db: &str) -> String {
    format!("SELECT region, toString(n), toString(v), toString(updated_at) FROM `{db}`.pairs FINAL WHERE _is_deleted = 0")
}

const SCHEMA: &str = "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text,
         updated_at timestamptz NOT NULL DEFAULT now());
     CREATE INDEX ON items (updated_at);
     CREATE TABLE pairs (region text, n int, v int NOT NULL DEFAULT 0,
         updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (region, n));
     CREATE INDEX ON pairs (updated_at);
     INSERT INTO items (id, v, note) SELECT g, g, 'start' FROM generate_series(1, 400) g;
     INSERT INTO pairs (region, n) SELECT r, g FROM unnest(ARRAY['eu', 'US', 'a b', 'Ümlaut', 'zz-top']) r, generate_series(1, 40) g;";

fn source(url: &str) -> String {
    format!(
        r#"[source.poll]
kind = "postgres"
url = "{url}"
interval = "200ms"

[[source.poll.tables]]
table = "public.items"
cursor = "updated_at"
reconcile_interval = "1s"
reconcile_chunk = 7

[[source.poll.tables]]
table = "public.pairs"
cursor = "updated_at"
reconcile_interval = "1s"
reconcile_chunk = 5
"#
    )
}

/// Inserts, updates, hard deletes of single rows and key ranges, and
/// re-inserts of deleted keys, until `stop`.
async fn load(url: String, stop: Arc<AtomicBool>, ops: Arc<AtomicU64>) {
    let client = connect(&url).await;
    let mut next = 1000;
    while !stop.load(Ordering::Relaxed) {
        let (kind, a, b, c, r, x) = {
            let mut g = rand::thread_rng();
            (
                g.gen_range(0..9),
                g.gen_range(1..next),
                g.gen_range(1..next),
                g.gen_range(1..next),
                REGIONS[g.gen_range(0..REGIONS.len())],
                g.gen_range(1..60),
            )
        };
        let sql = match kind {
            0 => {
                next += 20;
                format!("INSERT INTO items (id, v, note) SELECT {next} + g, g, 'new' FROM generate_series(1, 15) g")
            }
            1 | 2 => format!(
                "UPDATE items SET v = v + 1, note = 'u', updated_at = now() WHERE id IN ({a}, {b}, {c})"
            ),
            3 => format!("DELETE FROM items WHERE id = {a}"),
            4 => format!("DELETE FROM items WHERE id BETWEEN {a} AND {a} + 12"),
            5 => format!(
                "INSERT INTO items (id, v, note) VALUES ({a}, -1, 'again'), ({b}, -1, 'again') \
                 ON CONFLICT (id) DO UPDATE SET v = items.v + 1, updated_at = now()"
            ),
            6 => format!("DELETE FROM pairs WHERE region = '{r}' AND n BETWEEN {x} AND {x} + 6"),
            7 => format!("DELETE FROM pairs WHERE region = '{r}' AND n = {x}"),
            _ => format!(
                "INSERT INTO pairs (region, n) SELECT '{r}', g FROM generate_series({x}, {x} + 8) g \
                 ON CONFLICT (region, n) DO UPDATE SET v = pairs.v + 1, updated_at = now()"
            ),
        };
        if let Err(e) = client.batch_execute(&sql).await {
            eprintln!("load: {e}");
        }
        ops.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ch_count(p: &TestPipeline, sql: &str) -> u64 {
    p.ch(sql)
        .await
        .map(|t| t.trim().parse().unwrap_or(0))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_deletes_keys_gone_from_the_source_across_kills() {
    let db = fresh_db("pollrecon").await;
    db.client.batch_execute(SCHEMA).await.unwrap();
    let mut p = TestPipeline::with_source(|_| source(&db.url), "", &servers().clickhouse_url);

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let loader = tokio::spawn(load(db.url.clone(), stop.clone(), ops.clone()));
    p.kill_repeatedly(KILLS, 1500..3500).await;
    let mut last = p.spawn(&[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();

    // The first and the last key, and a whole region of the composite key.
    db.client
        .batch_execute(
            "DELETE FROM items WHERE id = (SELECT min(id) FROM items);
             DELETE FROM items WHERE id = (SELECT max(id) FROM items);
             DELETE FROM pairs WHERE region = 'US';",
        )
        .await
        .unwrap();
    // A key deleted, seen deleted in ClickHouse, then inserted again.
    let again: i64 = db
        .client
        .query_one("SELECT id FROM items ORDER BY id OFFSET 10 LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    db.client
        .batch_execute(&format!("DELETE FROM items WHERE id = {again}"))
        .await
        .unwrap();
    let alive = format!(
        "SELECT count() FROM `{}`.items FINAL WHERE id = {again} AND _is_deleted = 0",
        p.ch_db
    );
    let start = Instant::now();
    while ch_count(&p, &alive).await != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the reconcile did not delete id {again}:\n{}",
            tail(&p.last_log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.client
        .batch_execute(&format!(
            "INSERT INTO items (id, v, note) VALUES ({again}, 4242, 'back')"
        ))
        .await
        .unwrap();

    let items = wait_equal(
        &p,
        &db.client,
        ITEMS_PG,
        &items_ch(&p.ch_db),
        Duration::from_secs(120),
    )
    .await;
    let pairs = wait_equal(
        &p,
        &db.client,
        PAIRS_PG,
        &pairs_ch(&p.ch_db),
        Duration::from_secs(120),
    )
    .await;
    assert!(
        items
            .iter()
            .any(|l| l.starts_with(&format!("{again}\t4242\tback\t"))),
        "the re-inserted key {again} is alive"
    );
    assert!(!pairs.iter().any(|l| l.starts_with("US\t")));
    // No soft deletes here: every deleted row in ClickHouse is a reconcile's.
    let deletes = |t: &str| {
        format!(
            "SELECT count() FROM `{}`.{t} WHERE _is_deleted = 1",
            p.ch_db
        )
    };
    let (item_deletes, pair_deletes) = (
        ch_count(&p, &deletes("items")).await,
        ch_count(&p, &deletes("pairs")).await,
    );
    assert!(
        item_deletes > 0 && pair_deletes >= 40,
        "{item_deletes} {pair_deletes}"
    );
    p.terminate_ok(&mut last, Duration::from_secs(30));
    let rounds: usize = (1..=KILLS as u32 + 1)
        .map(|r| p.log(r).matches("reconcile round done").count())
        .sum();
    assert!(rounds >= 2, "only {rounds} reconcile rounds were logged");
    println!(
        "reconcile test: {KILLS} kills, {} load operations, {rounds} rounds; equal: {} items, {} pairs; delete rows in ClickHouse: {item_deletes} items, {pair_deletes} pairs",
        ops.load(Ordering::Relaxed),
        items.len(),
        pairs.len()
    );

    // `check` says the table's hard deletes are reconciled.
    let out = std::process::Command::new(sluice_bin())
        .args(["check", "-c"])
        .arg(&p.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("hard deletes are found by a reconcile every 1s (7 keys per chunk)"),
        "{text}"
    );
}

/// Polled ClickHouse tables (a `UInt64` key and a composite
/// `(LowCardinality(String), UInt32)` key) into another ClickHouse
/// database with reconcile, under inserts, updates, lightweight `DELETE`s
/// and re-inserts with SIGKILLs: equal at the end, a re-inserted key alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_source_reconcile_deletes_keys_gone_across_kills() {
    let src = unique_name("reconsrc");
    ch_exec(&format!("CREATE DATABASE `{src}`")).await;
    let _source_db = crate::e2e_poll::DropDatabase(src.clone());
    ch_exec(&format!(
        "CREATE TABLE `{src}`.events (id UInt64, v Int32, note String,
             updated_at DateTime64(6, 'UTC')) ENGINE = ReplacingMergeTree(updated_at) ORDER BY id"
    ))
    .await;
    ch_exec(&format!(
        "CREATE TABLE `{src}`.pairs (region LowCardinality(String), n UInt32, v Int32,
             updated_at DateTime64(6, 'UTC')) ENGINE = ReplacingMergeTree(updated_at) ORDER BY (region, n)"
    ))
    .await;
    ch_exec(&format!(
        "INSERT INTO `{src}`.events SELECT number, toInt32(number), 'start', now64(6) FROM numbers(1, 300)"
    ))
    .await;
    ch_exec(&format!(
        "INSERT INTO `{src}`.pairs SELECT r, toUInt32(n), 0, now64(6) \
         FROM (SELECT arrayJoin(['eu', 'US', 'a b', 'Ümlaut', 'zz-top']) AS r) AS rs \
         CROSS JOIN (SELECT number + 1 AS n FROM numbers(30)) AS ns"
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
reconcile_interval = "1s"
reconcile_chunk = 7

[[source.poll.tables]]
table = "{src}.pairs"
cursor = "updated_at"
reconcile_interval = "1s"
reconcile_chunk = 5
"#
    );
    let mut p = TestPipeline::with_source(|_| source.clone(), "", &ch_url);

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let loader = {
        let (src, stop, ops) = (src.clone(), stop.clone(), ops.clone());
        tokio::spawn(async move {
            let mut next = 1000u64;
            while !stop.load(Ordering::Relaxed) {
                let (kind, a, r, x) = {
                    let mut g = rand::thread_rng();
                    (
                        g.gen_range(0..8),
                        g.gen_range(1..next),
                        REGIONS[g.gen_range(0..REGIONS.len())],
                        g.gen_range(1..40u32),
                    )
                };
                let sql = match kind {
                    0 => {
                        next += 20;
                        format!("INSERT INTO `{src}`.events SELECT {next} + number, 1, 'new', now64(6) FROM numbers(15)")
                    }
                    1 => format!(
                        "INSERT INTO `{src}`.events SELECT id, v + 1, 'upd', now64(6) FROM `{src}`.events FINAL WHERE id IN ({a}, {a} + 1)"
                    ),
                    2 => format!("DELETE FROM `{src}`.events WHERE id = {a}"),
                    3 => format!("DELETE FROM `{src}`.events WHERE id BETWEEN {a} AND {a} + 12"),
                    4 => format!(
                        "INSERT INTO `{src}`.events VALUES ({a}, -1, 'again', now64(6))"
                    ),
                    5 => format!(
                        "DELETE FROM `{src}`.pairs WHERE region = '{r}' AND n BETWEEN {x} AND {x} + 6"
                    ),
                    _ => format!(
                        "INSERT INTO `{src}`.pairs SELECT '{r}', toUInt32({x} + number), toInt32(number), now64(6) FROM numbers(8)"
                    ),
                };
                ch_exec(&sql).await;
                ops.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    p.kill_repeatedly(4, 1500..3500).await;
    let mut last = p.spawn(&[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();

    ch_exec(&format!("DELETE FROM `{src}`.pairs WHERE region = 'US'")).await;
    let again: u64 = ch_query(&format!(
        "SELECT id FROM `{src}`.events FINAL ORDER BY id LIMIT 1 OFFSET 10"
    ))
    .await
    .trim()
    .parse()
    .unwrap();
    ch_exec(&format!("DELETE FROM `{src}`.events WHERE id = {again}")).await;
    let db = p.ch_db.clone();
    let alive = format!(
        "SELECT count() FROM `{db}`.`{src}_events` FINAL WHERE id = {again} AND _is_deleted = 0"
    );
    let start = Instant::now();
    while ch_count(&p, &alive).await != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the reconcile did not delete id {again}:\n{}",
            tail(&p.last_log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ch_exec(&format!(
        "INSERT INTO `{src}`.events VALUES ({again}, 4242, 'back', now64(6))"
    ))
    .await;

    let checks = [
        (
            format!("SELECT toString(id), toString(v), note, toString(updated_at) FROM `{src}`.events FINAL"),
            format!("SELECT toString(id), toString(v), note, toString(updated_at) FROM `{db}`.`{src}_events` FINAL WHERE _is_deleted = 0"),
        ),
        (
            format!("SELECT region, toString(n), toString(v), toString(updated_at) FROM `{src}`.pairs FINAL"),
            format!("SELECT region, toString(n), toString(v), toString(updated_at) FROM `{db}`.`{src}_pairs` FINAL WHERE _is_deleted = 0"),
        ),
    ];
    let mut equal = Vec::new();
    for (source_sql, target_sql) in &checks {
        equal.push(crate::e2e_poll::wait_ch_sorted_equal(&p, source_sql, target_sql).await);
    }
    assert!(
        equal[0]
            .iter()
            .any(|l| l.starts_with(&format!("{again}\t4242\tback\t"))),
        "the re-inserted key {again} is alive"
    );
    assert!(!equal[1].iter().any(|l| l.starts_with("US\t")));
    let deletes = ch_count(
        &p,
        &format!("SELECT count() FROM `{db}`.`{src}_events` WHERE _is_deleted = 1"),
    )
    .await;
    assert!(deletes > 0, "no delete rows written");
    p.terminate_ok(&mut last, Duration::from_secs(30));

    // A restart with nothing new to poll: the delete rows take their shape
    // from an empty read of the source.
    let gone: u64 = ch_query(&format!(
        "SELECT id FROM `{src}`.events FINAL ORDER BY id DESC LIMIT 1"
    ))
    .await
    .trim()
    .parse()
    .unwrap();
    ch_exec(&format!("DELETE FROM `{src}`.events WHERE id = {gone}")).await;
    let mut last = p.spawn(&[]);
    let alive = alive.replace(&format!("id = {again}"), &format!("id = {gone}"));
    let start = Instant::now();
    while ch_count(&p, &alive).await != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the reconcile did not delete id {gone} after a restart:\n{}",
            tail(&p.last_log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    p.terminate_ok(&mut last, Duration::from_secs(30));
    println!(
        "clickhouse reconcile test: 4 kills, {} load operations; equal: {} events, {} pairs; {deletes} event delete rows",
        ops.load(Ordering::Relaxed),
        equal[0].len(),
        equal[1].len()
    );
}

/// A key type the reconcile cannot match exactly is refused by `check`,
/// naming the column; the same table without reconcile passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_reconcile_on_unsupported_key_types() {
    let db = fresh_db("reconcheck").await;
    db.client
        .batch_execute(
            "CREATE TABLE prices (code numeric PRIMARY KEY, v int,
                 updated_at timestamptz NOT NULL DEFAULT now());
             CREATE INDEX ON prices (updated_at);",
        )
        .await
        .unwrap();
    let source = |reconcile: &str| {
        format!(
            "[source.poll]\nkind = \"postgres\"\nurl = \"{}\"\n\n[[source.poll.tables]]\n\
             table = \"public.prices\"\ncursor = \"updated_at\"\n{reconcile}",
            db.url
        )
    };
    let check = |p: &TestPipeline| {
        let out = std::process::Command::new(sluice_bin())
            .args(["check", "-c"])
            .arg(&p.config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let with = TestPipeline::with_source(
        |_| source("reconcile_interval = \"1m\"\n"),
        "",
        &servers().clickhouse_url,
    );
    let (ok, text) = check(&with);
    assert!(!ok, "{text}");
    assert!(
        text.contains("reconcile_interval: key column \"code\" is numeric"),
        "{text}"
    );
    let without = TestPipeline::with_source(|_| source(""), "", &servers().clickhouse_url);
    let (ok, text) = check(&without);
    assert!(ok, "{text}");
    assert!(text.contains("hard deletes are invisible"), "{text}");
}

/// The sink's live keys, chunk by chunk, on a real ClickHouse table with
/// several versions per key, deletes and a delete undone by a later
/// version: every live key once, in key order (bytes for text), with its
/// latest version; chunks bounded; a missing table has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_live_keys_come_in_bounded_chunks_in_key_order() {
    use sluice::config::{
        ClickHouseSinkConfig, DropColumnMode, JsonType, NoKeyMode, TableName, TruncateMode,
    };
    use sluice::sink::KeyReader;

    let db = unique_name("reconkeys");
    ch_exec(&format!("CREATE DATABASE `{db}`")).await;
    let _drop = crate::e2e_poll::DropDatabase(db.clone());
    ch_exec(&format!(
        "CREATE TABLE `{db}`.t (region String, n Int32, v Int32, _version UInt64, _is_deleted UInt8) \
         ENGINE = ReplacingMergeTree(_version, _is_deleted) ORDER BY (region, n)"
    ))
    .await;
    // Versions 1 and 2 of every key; `eu` keys with n % 3 = 0 deleted at
    // version 3; (eu, 3) inserted again at version 4.
    for (version, filter, deleted) in [(1, "1", 0), (2, "1", 0), (3, "r = 'eu' AND n % 3 = 0", 1)] {
        ch_exec(&format!(
            "INSERT INTO `{db}`.t SELECT r, toInt32(n), 0, {version}, {deleted} FROM \
             (SELECT arrayJoin(['eu', 'US', 'a b']) AS r) AS rs \
             CROSS JOIN (SELECT toInt32(number + 1) AS n FROM numbers(10)) AS ns WHERE {filter}"
        ))
        .await;
    }
    ch_exec(&format!("INSERT INTO `{db}`.t VALUES ('eu', 3, 0, 4, 0)")).await;
    let mut expected: Vec<(String, i32, u64)> = Vec::new();
    for r in ["eu", "US", "a b"] {
        for n in 1..=10 {
            match (r, n % 3, n) {
                ("eu", _, 3) => expected.push((r.into(), n, 4)),
                ("eu", 0, _) => {}
                _ => expected.push((r.into(), n, 2)),
            }
        }
    }
    expected.sort();

    let cfg = ClickHouseSinkConfig {
        url: servers().clickhouse_url.clone(),
        database: db.clone(),
        user: "default".into(),
        password: Default::default(),
        ssl_root_cert: None,
        table_names: Default::default(),
        on_truncate: TruncateMode::Truncate,
        on_drop_column: DropColumnMode::Keep,
        json_type: JsonType::String,
        tables_without_key: NoKeyMode::Multiset,
    };
    let reader = sluice::sink::clickhouse::ClickHouseKeys::new(&cfg).unwrap();
    let table = TableName::new("public", "t");
    let key = vec!["region".to_string(), "n".to_string()];
    let mut after: Option<Vec<String>> = None;
    let mut got = Vec::new();
    let mut chunks = 0;
    loop {
        let chunk = reader
            .live_keys(&table, &key, after.as_deref(), 7)
            .await
            .unwrap();
        chunks += 1;
        assert!(chunk.live.len() <= 7, "{chunk:?}");
        for (k, v) in chunk.live {
            got.push((k[0].clone(), k[1].parse::<i32>().unwrap(), v));
        }
        match chunk.upper {
            Some(u) => after = Some(u),
            None => break,
        }
        assert!(chunks < 100, "the chunks do not end");
    }
    assert_eq!(got, expected, "live keys in key order, each once");
    // 63 rows of 7 per chunk: at least 9 chunks.
    assert!(chunks >= 9, "{chunks} chunks");
    let none = reader
        .live_keys(&TableName::new("public", "missing"), &key, None, 7)
        .await
        .unwrap();
    assert_eq!(none, sluice::sink::KeyChunk::default());
}
