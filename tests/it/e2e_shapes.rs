//! Table shapes end to end (`sluice run`, PostgreSQL -> ClickHouse), each
//! compared row for row: keys from the catalog whatever the replica
//! identity; a table without a key as an exact multiset under kills.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::e2e::*;
use crate::support::*;

/// The columns ClickHouse sorts a table by, and the types of all columns.
async fn ch_layout(p: &TestPipeline, table: &str) -> (Vec<String>, Vec<String>) {
    let out = p
        .ch(&format!(
            "SELECT name, type, is_in_sorting_key FROM system.columns
             WHERE database = '{}' AND table = '{table}' ORDER BY position",
            p.ch_db
        ))
        .await
        .unwrap();
    let mut key = Vec::new();
    let mut types = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f[2] == "1" {
            key.push(f[0].to_owned());
        }
        types.push(format!("{} {}", f[0], f[1]));
    }
    (key, types)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_from_the_catalog_whatever_the_replica_identity() {
    let db = fresh_db("e2e_keys").await;
    db.client
        .batch_execute(
            "CREATE TABLE full_pk (id int PRIMARY KEY, note text, n int);
             ALTER TABLE full_pk REPLICA IDENTITY FULL;
             CREATE TABLE by_index (a int NOT NULL, b text NOT NULL, note text, id int PRIMARY KEY);
             CREATE UNIQUE INDEX by_index_ab ON by_index (a, b);
             ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_ab;
             INSERT INTO full_pk SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || g END, g FROM generate_series(1, 50) g;
             INSERT INTO by_index SELECT g % 5, 'b' || g, NULL, g FROM generate_series(1, 50) g;",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.full_pk", "public.by_index"], "");
    let mut sluice = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    for sql in [
        "INSERT INTO full_pk VALUES (51, NULL, NULL), (52, 'x', 52)",
        "UPDATE full_pk SET note = NULL WHERE id % 5 = 0",
        "UPDATE full_pk SET note = 'set ' || id WHERE id % 3 = 0",
        "UPDATE full_pk SET id = id + 1000 WHERE id % 7 = 0",
        "DELETE FROM full_pk WHERE id % 11 = 0",
        "INSERT INTO by_index VALUES (9, 'new', 'n', 100)",
        "UPDATE by_index SET note = 'u' || id WHERE id % 4 = 0",
        "UPDATE by_index SET b = b || '-moved' WHERE id % 6 = 0",
        "UPDATE by_index SET id = id + 1000 WHERE id % 9 = 0",
        "DELETE FROM by_index WHERE id % 8 = 0",
    ] {
        db.client.batch_execute(sql).await.unwrap();
    }
    let full = wait_equal(
        &p,
        &db.client,
        "SELECT id::text, note, n::text FROM full_pk",
        &format!(
            "SELECT toString(id), note, toString(n) FROM `{}`.full_pk FINAL WHERE _is_deleted = 0",
            p.ch_db
        ),
        Duration::from_secs(60),
    )
    .await;
    assert!(
        full.len() > 40 && full.iter().any(|r| r.contains("\\N")),
        "{full:?}"
    );
    wait_equal(
        &p,
        &db.client,
        "SELECT a::text, b, note, id::text FROM by_index",
        &format!(
            "SELECT toString(a), b, note, toString(id) FROM `{}`.by_index FINAL WHERE _is_deleted = 0",
            p.ch_db
        ),
        Duration::from_secs(60),
    )
    .await;
    // The key is the primary key under FULL, the identity index's columns
    // under USING INDEX; the other columns stay Nullable.
    let (key, types) = ch_layout(&p, "full_pk").await;
    assert_eq!(key, vec!["id"], "{types:?}");
    assert!(
        types.contains(&"note Nullable(String)".to_string()),
        "{types:?}"
    );
    let (key, types) = ch_layout(&p, "by_index").await;
    assert_eq!(key, vec!["a", "b"], "{types:?}");
    assert!(
        types.contains(&"note Nullable(String)".to_string()),
        "{types:?}"
    );
    let status = terminate(&mut sluice, Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", p.last_log());
}

const LOG_PG: &str = "SELECT kind, n::text, note, at::text FROM log";

fn log_ch(db: &str) -> String {
    format!("SELECT kind, toString(n), note, toString(at) FROM `{db}`.log_live")
}

/// Random changes to the key-less `log` until `stop`: duplicate inserts
/// (some by COPY, whose rows share one WAL record), deleting and updating
/// one copy of a duplicate, every 300th transaction a truncate. Returns the
/// number of truncates.
async fn multiset_load(url: String, stop: Arc<AtomicBool>, txns: Arc<AtomicU64>) -> u64 {
    use futures_util::SinkExt;
    use rand::Rng;
    let client = connect(&url).await;
    let mut truncates = 0;
    while !stop.load(Ordering::Relaxed) {
        if txns.load(Ordering::Relaxed) % 300 == 150 {
            client
                .batch_execute("BEGIN; TRUNCATE log; INSERT INTO log VALUES ('after', NULL, NULL, NULL), ('after', NULL, NULL, NULL); COMMIT;")
                .await
                .unwrap();
            truncates += 1;
            txns.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let (a, n, kind) = {
            let mut r = rand::thread_rng();
            (r.gen_range(0..6), r.gen_range(1..5), r.gen_range(0..40))
        };
        let sql = match kind {
            0..=9 => format!(
                "INSERT INTO log SELECT 'k{a}', {a}, CASE WHEN g % 2 = 0 THEN NULL ELSE 'x' END, NULL FROM generate_series(1, {n}) g"
            ),
            10..=14 => {
                let copy = async {
                    let sink = client.copy_in("COPY log FROM STDIN").await?;
                    futures_util::pin_mut!(sink);
                    let rows = format!("k{a}\t{a}\t\\N\t7\nk{a}\t{a}\t\\N\t7\n\\N\t\\N\t\\N\t\\N\n");
                    sink.send(bytes::Bytes::from(rows)).await?;
                    sink.finish().await.map(|_| ())
                };
                if let Err(e) = copy.await {
                    eprintln!("load: copy: {e}");
                }
                txns.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            15..=22 => format!(
                "DELETE FROM log WHERE ctid = (SELECT ctid FROM log WHERE kind = 'k{a}' LIMIT 1)"
            ),
            23..=30 => format!(
                "UPDATE log SET note = 'upd', at = coalesce(at, 0) + 1 WHERE ctid = (SELECT ctid FROM log WHERE n = {a} LIMIT 1)"
            ),
            31..=36 => format!(
                "BEGIN; INSERT INTO log VALUES ('k{a}', {a}, NULL, NULL), ('k{a}', {a}, NULL, NULL);
                 DELETE FROM log WHERE ctid = (SELECT ctid FROM log WHERE kind = 'k{a}' AND note IS NULL LIMIT 1); COMMIT;"
            ),
            _ => "UPDATE log SET n = NULL WHERE ctid = (SELECT ctid FROM log WHERE n IS NOT NULL LIMIT 1)".into(),
        };
        if let Err(e) = client.batch_execute(&sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            eprintln!("load: {e}");
        }
        txns.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    truncates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_table_is_an_exact_multiset_under_kills() {
    let db = fresh_db("e2e_multiset").await;
    db.client
        .batch_execute(
            "CREATE TABLE log (kind text, n int, note text, at int);
             ALTER TABLE log REPLICA IDENTITY FULL;
             INSERT INTO log SELECT 'k' || (g % 4), g % 4, CASE WHEN g % 3 = 0 THEN NULL ELSE 'x' END, NULL
             FROM generate_series(1, 40) g;
             INSERT INTO log VALUES (NULL, NULL, NULL, NULL), (NULL, NULL, NULL, NULL);",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.log"], "");
    let mut first = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    // The initial copy (at the new slot's snapshot) first.
    let initial = wait_equal(
        &p,
        &db.client,
        LOG_PG,
        &log_ch(&p.ch_db),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(initial.len(), 42);

    let stop = Arc::new(AtomicBool::new(false));
    let txns = Arc::new(AtomicU64::new(0));
    let loader = tokio::spawn(multiset_load(db.url.clone(), stop.clone(), txns.clone()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let _ = first.kill();
    let _ = first.wait();
    let kills = MULTISET_KILLS;
    p.kill_or_abort_repeatedly(kills - 1, 300..2000, 0.3).await;
    stop.store(true, Ordering::Relaxed);
    let truncates = loader.await.unwrap();
    assert!(truncates > 0);
    let mut last = p.spawn(&[]);
    let rows = wait_equal(
        &p,
        &db.client,
        LOG_PG,
        &log_ch(&p.ch_db),
        Duration::from_secs(120),
    )
    .await;
    let distinct: std::collections::BTreeSet<&String> = rows.iter().collect();
    println!(
        "multiset: {kills} kills, {} load transactions ({truncates} truncates), {} rows ({} distinct)",
        txns.load(Ordering::Relaxed),
        rows.len(),
        distinct.len()
    );
    assert!(distinct.len() < rows.len(), "duplicates are kept");
    assert!(rows.iter().any(|r| r.contains("\\N")), "NULLs are kept");
    p.terminate_ok(&mut last, Duration::from_secs(30));
}

const MULTISET_KILLS: usize = 10;

fn sluice_cmd(args: &[&str], p: &TestPipeline) -> std::process::Output {
    std::process::Command::new(sluice_bin())
        .args(&args[..1])
        .arg("-c")
        .arg(&p.config)
        .args(&args[1..])
        .output()
        .unwrap()
}

const MEASURES_PG: &str = "SELECT id::text, part::text, v FROM measures";

fn measures_ch(db: &str) -> String {
    format!(
        "SELECT toString(id), toString(part), v FROM `{db}`.measures FINAL WHERE _is_deleted = 0"
    )
}

/// Waits for the table to be stopped with a reason that names `word`, then
/// resyncs it and waits until ClickHouse equals PostgreSQL again.
async fn stopped_then_resynced(p: &TestPipeline, db: &TestDb, word: &str) {
    let status = wait_for(
        "measures to be stopped",
        Duration::from_secs(60),
        || async {
            let out = sluice_cmd(&["status"], p);
            let s = String::from_utf8_lossy(&out.stdout).into_owned();
            s.contains("table public.measures: failed").then_some(s)
        },
    )
    .await;
    assert!(
        status.contains(word) && status.contains("sluice resync"),
        "{status}"
    );
    let out = sluice_cmd(&["resync", "public.measures"], p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_equal(
        p,
        &db.client,
        MEASURES_PG,
        &measures_ch(&p.ch_db),
        Duration::from_secs(90),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_table_arrives_whole_and_attach_detach_stop_it() {
    let db = fresh_db("e2e_parts").await;
    db.client
        .batch_execute(
            "CREATE TABLE measures (id int, part int, v text, PRIMARY KEY (id, part)) PARTITION BY RANGE (part);
             CREATE TABLE measures_a PARTITION OF measures FOR VALUES FROM (0) TO (10);
             CREATE TABLE measures_b PARTITION OF measures FOR VALUES FROM (10) TO (20);
             CREATE TABLE measures_c PARTITION OF measures FOR VALUES FROM (20) TO (30);
             INSERT INTO measures SELECT g, g % 30, 'v' || g FROM generate_series(1, 300) g;",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.measures"], "");
    let mut sluice = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    // Streamed rows in several partitions, updates within one and across.
    db.client
        .batch_execute(
            "INSERT INTO measures SELECT g, g % 30, 's' || g FROM generate_series(301, 400) g;
             UPDATE measures SET v = 'same part' WHERE id % 7 = 0;
             UPDATE measures SET part = (part + 10) % 30 WHERE id % 11 = 0;
             DELETE FROM measures WHERE id % 13 = 0;",
        )
        .await
        .unwrap();
    let rows = wait_equal(
        &p,
        &db.client,
        MEASURES_PG,
        &measures_ch(&p.ch_db),
        Duration::from_secs(60),
    )
    .await;
    assert!(rows.len() > 350, "{}", rows.len());
    // The parent has no storage: each partition was a unit of its own.
    let log = p.last_log();
    let started = log
        .lines()
        .find(|l| l.contains("copy started") && l.contains("table=public.measures"))
        .unwrap_or_else(|| panic!("{}", tail(&log, 30)));
    assert!(started.contains("units=3"), "{started}");
    let pubviaroot = db
        .client
        .query_one(
            "SELECT pubviaroot FROM pg_publication WHERE pubname = $1",
            &[&p.name],
        )
        .await
        .unwrap()
        .get::<_, bool>(0);
    assert!(pubviaroot);

    // A partition attached with rows: no row changes are sent for them.
    db.client
        .batch_execute(
            "CREATE TABLE measures_d (id int NOT NULL, part int NOT NULL, v text);
             INSERT INTO measures_d SELECT g, 30 + g % 10, 'attached' FROM generate_series(1000, 1049) g;
             ALTER TABLE measures ATTACH PARTITION measures_d FOR VALUES FROM (30) TO (40);",
        )
        .await
        .unwrap();
    stopped_then_resynced(&p, &db, "attached: [measures_d]").await;
    // Streaming again, into the attached partition too.
    db.client
        .batch_execute("INSERT INTO measures VALUES (2000, 35, 'new in d'), (2001, 5, 'new in a')")
        .await
        .unwrap();
    wait_equal(
        &p,
        &db.client,
        MEASURES_PG,
        &measures_ch(&p.ch_db),
        Duration::from_secs(60),
    )
    .await;

    // A partition detached while streaming: its rows leave the table.
    db.client
        .batch_execute("ALTER TABLE measures DETACH PARTITION measures_b")
        .await
        .unwrap();
    stopped_then_resynced(&p, &db, "detached: [measures_b]").await;
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_flags_a_publication_without_partition_root() {
    let db = fresh_db("chk_parts").await;
    let p = TestPipeline::new(&db.url, &["public.measures"], "");
    db.client
        .batch_execute(&format!(
            "CREATE TABLE measures (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
             CREATE TABLE measures_a PARTITION OF measures FOR VALUES FROM (0) TO (10);
             CREATE PUBLICATION \"{}\" FOR TABLE measures;",
            p.name
        ))
        .await
        .unwrap();
    p.edit_config(
        "status_interval = \"1s\"",
        "status_interval = \"1s\"\ncreate_publication = false",
    );
    let out = sluice_cmd(&["check"], &p);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "does not set publish_via_partition_root, but public.measures is partitioned"
        ) && text.contains("SET (publish_via_partition_root = true)"),
        "{text}"
    );
    // The partitioned table itself counts as a member (not its partitions).
    assert!(text.contains("covers the tables"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_column_defaults_reach_older_rows() {
    let db = fresh_db("e2e_defaults").await;
    db.client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, v text);
             CREATE TABLE volatile (id int PRIMARY KEY, v text);
             INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 50) g;
             INSERT INTO volatile SELECT g, 'v' || g FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.items", "public.volatile"], "");
    let mut sluice = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    // (A quote is compared as Q: TSV escapes it on one side only.)
    let items_pg = "SELECT id::text, v, c::text, replace(s, chr(39), 'Q'), trim_scale(n)::text, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), b::text FROM items";
    let items_ch = format!(
        "SELECT toString(id), v, toString(c), replaceAll(s, char(39), 'Q'), toString(n), formatDateTime(ts, '%Y-%m-%d %H:%i:%S', 'UTC'), if(b, 'true', 'false') FROM `{}`.items FINAL WHERE _is_deleted = 0",
        p.ch_db
    );
    wait_equal(
        &p,
        &db.client,
        "SELECT id::text, v FROM items",
        &format!(
            "SELECT toString(id), v FROM `{}`.items FINAL WHERE _is_deleted = 0",
            p.ch_db
        ),
        Duration::from_secs(60),
    )
    .await;
    db.client
        .batch_execute(
            "ALTER TABLE items ADD COLUMN c int DEFAULT 42;
             ALTER TABLE items ADD COLUMN s text NOT NULL DEFAULT 'it''s';
             ALTER TABLE items ADD COLUMN n numeric(10,2) DEFAULT 1.5;
             ALTER TABLE items ADD COLUMN ts timestamptz DEFAULT '2024-05-05 10:00:00+00';
             ALTER TABLE items ADD COLUMN b bool NOT NULL DEFAULT true;
             INSERT INTO items VALUES (100, 'new', 7, 'x', 2.25, '2030-01-01 00:00:00+00', false);
             UPDATE items SET v = 'changed' WHERE id = 3;",
        )
        .await
        .unwrap();
    let rows = wait_equal(&p, &db.client, items_pg, &items_ch, Duration::from_secs(60)).await;
    assert!(
        rows.iter()
            .any(|r| r == "7\tv7\t42\titQs\t1.5\t2024-05-05 10:00:00\ttrue"),
        "{rows:?}"
    );
    // A volatile default rewrites the table and sends no row changes.
    db.client
        .batch_execute(
            "ALTER TABLE volatile ADD COLUMN r float8 DEFAULT random();
             INSERT INTO volatile VALUES (100, 'new', 0.5);",
        )
        .await
        .unwrap();
    let status = wait_for(
        "volatile to be stopped",
        Duration::from_secs(60),
        || async {
            let out = sluice_cmd(&["status"], &p);
            let s = String::from_utf8_lossy(&out.stdout).into_owned();
            s.contains("table public.volatile: failed").then_some(s)
        },
    )
    .await;
    assert!(
        status.contains("column \"r\" was added with a default computed per row")
            && status.contains("resync"),
        "{status}"
    );
    let out = sluice_cmd(&["resync", "public.volatile"], &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_equal(
        &p,
        &db.client,
        "SELECT id::text, v, r::text FROM volatile",
        &format!(
            "SELECT toString(id), v, toString(r) FROM `{}`.volatile FINAL WHERE _is_deleted = 0",
            p.ch_db
        ),
        Duration::from_secs(60),
    )
    .await;
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_columns_left_out_and_multidimensional_arrays_refused() {
    let db = fresh_db("e2e_gen").await;
    db.client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, qty int, price int,
                                  total int GENERATED ALWAYS AS (qty * price) STORED, tags int[]);
             CREATE TABLE grids (id int PRIMARY KEY, cells int[]);
             INSERT INTO orders (id, qty, price, tags) SELECT g, g, 10, ARRAY[g, NULL] FROM generate_series(1, 20) g;
             INSERT INTO grids VALUES (1, '{1,2}');",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.orders", "public.grids"], "");
    let mut sluice = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    db.client
        .batch_execute(
            "INSERT INTO orders (id, qty, price, tags) VALUES (100, 3, 7, '{}'), (101, 1, 1, NULL);
             UPDATE orders SET qty = qty + 1 WHERE id % 3 = 0;",
        )
        .await
        .unwrap();
    wait_equal(
        &p,
        &db.client,
        "SELECT id::text, qty::text, price::text, coalesce(array_to_string(tags, ',', 'N'), 'null') FROM orders",
        &format!(
            "SELECT toString(id), toString(qty), toString(price), if(tags_is_null = 1, 'null', arrayStringConcat(arrayMap(x -> ifNull(toString(x), 'N'), tags), ',')) FROM `{}`.orders FINAL WHERE _is_deleted = 0",
            p.ch_db
        ),
        Duration::from_secs(60),
    )
    .await;
    // The generated column is in neither the copy nor the stream.
    let (_, types) = ch_layout(&p, "orders").await;
    assert!(!types.iter().any(|t| t.starts_with("total ")), "{types:?}");
    let log = p.last_log();
    assert!(
        log.contains("generated column left out") && log.contains("column=total"),
        "{}",
        tail(&log, 20)
    );
    // A two-dimensional array stops its table, never flattened.
    db.client
        .batch_execute("INSERT INTO grids VALUES (2, '{{1,2},{3,4}}')")
        .await
        .unwrap();
    let status = wait_for("grids to be stopped", Duration::from_secs(60), || async {
        let out = sluice_cmd(&["status"], &p);
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.contains("table public.grids: failed").then_some(s)
    })
    .await;
    assert!(status.contains("multi-dimensional array"), "{status}");
    let flat = p
        .ch(&format!(
            "SELECT count() FROM `{}`.grids WHERE length(cells) = 4",
            p.ch_db
        ))
        .await
        .unwrap();
    assert_eq!(flat.trim(), "0");
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
    // A restart finds the publication as it wants it (PostgreSQL lists the
    // generated column among the published ones, but never sends it).
    let mut again = p.spawn(&[]);
    db.client
        .batch_execute("INSERT INTO orders (id, qty, price) VALUES (200, 2, 2)")
        .await
        .unwrap();
    wait_equal(
        &p,
        &db.client,
        "SELECT id::text, qty::text FROM orders",
        &format!(
            "SELECT toString(id), toString(qty) FROM `{}`.orders FINAL WHERE _is_deleted = 0",
            p.ch_db
        ),
        Duration::from_secs(60),
    )
    .await;
    p.terminate_ok(&mut again, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_multidimensional_arrays_arrive_as_their_exact_text() {
    let db = fresh_db("e2e_ndim").await;
    db.client
        .batch_execute(
            "CREATE TABLE matrix (id int PRIMARY KEY, m int[][], words text[][], flat int[]);
             INSERT INTO matrix VALUES
               (1, '{{1,2},{3,4}}', '{{\"a b\",NULL},{\"c,d\",e}}', '{1,2}'),
               (2, '{}', NULL, NULL),
               (3, '{5,6}', '{{x}}', '{}');",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.matrix"], "");
    let mut sluice = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    db.client
        .batch_execute(
            "INSERT INTO matrix VALUES (4, '{{{1},{2}},{{3},{4}}}', '{{\"x y\"}}', '{7}');
             UPDATE matrix SET m = '{{9,8},{7,6}}' WHERE id = 1;",
        )
        .await
        .unwrap();
    wait_equal(
        &p,
        &db.client,
        "SELECT id::text, coalesce(m::text, 'null'), coalesce(words::text, 'null'), coalesce(array_to_string(flat, ','), 'null') FROM matrix",
        &format!(
            "SELECT toString(id), ifNull(m, 'null'), ifNull(words, 'null'), if(flat_is_null = 1, 'null', arrayStringConcat(arrayMap(x -> toString(x), flat), ',')) FROM `{}`.matrix FINAL WHERE _is_deleted = 0",
            p.ch_db
        ),
        Duration::from_secs(60),
    )
    .await;
    // Declared multi-dimensional: text; declared one-dimensional: a list.
    let (_, types) = ch_layout(&p, "matrix").await;
    assert!(types.iter().any(|t| t == "m Nullable(String)"), "{types:?}");
    assert!(
        types.iter().any(|t| t.starts_with("flat Array(")),
        "{types:?}"
    );
    let log = p.last_log();
    assert!(
        log.contains("multi-dimensional int4 array"),
        "{}",
        tail(&log, 20)
    );
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_with_another_column_list_is_an_error() {
    let db = fresh_db("e2e_pub_cols").await;
    let mut p = TestPipeline::new(&db.url, &["public.t"], "");
    db.client
        .batch_execute(&format!(
            "CREATE TABLE t (id int PRIMARY KEY, a text, b text);
             CREATE PUBLICATION \"{}\" FOR TABLE t (id, a);",
            p.name
        ))
        .await
        .unwrap();
    let mut sluice = p.spawn(&[]);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = sluice.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "sluice kept running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    let log = p.last_log();
    assert!(
        log.contains("publishes public.t with other columns or another row filter")
            && log.contains("sluice resync"),
        "{}",
        tail(&log, 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_list_and_row_filter_shape_copy_and_stream() {
    let db = fresh_db("e2e_filter").await;
    db.client
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, v text, secret text);
             INSERT INTO accounts SELECT g, 'v' || g, 'hidden' FROM generate_series(1, 30) g;
             INSERT INTO accounts SELECT g, 'out' || g, 'hidden' FROM generate_series(1001, 1010) g;",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.accounts"], "");
    p.edit_config(
        "status_interval = \"1s\"",
        "status_interval = \"1s\"\n\n[source.postgres.publish.\"public.accounts\"]\ncolumns = [\"id\", \"v\"]\nwhere = \"id < 1000\"",
    );
    let mut sluice = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    db.client
        .batch_execute(
            "INSERT INTO accounts VALUES (31, 'new', 'x'), (2000, 'new out', 'x');
             UPDATE accounts SET v = 'changed' WHERE id % 4 = 0;
             UPDATE accounts SET id = id + 3000 WHERE id IN (5, 6);   -- leave the filter
             UPDATE accounts SET id = id - 900 WHERE id IN (1001, 1002); -- enter it
             DELETE FROM accounts WHERE id IN (7, 1003);",
        )
        .await
        .unwrap();
    let rows = wait_equal(
        &p,
        &db.client,
        "SELECT id::text, v FROM accounts WHERE id < 1000",
        &format!(
            "SELECT toString(id), v FROM `{}`.accounts FINAL WHERE _is_deleted = 0",
            p.ch_db
        ),
        Duration::from_secs(60),
    )
    .await;
    assert!(rows.contains(&"101\tout1001".to_string()), "{rows:?}");
    assert!(!rows.iter().any(|r| r.starts_with("5\t")), "{rows:?}");
    let (_, types) = ch_layout(&p, "accounts").await;
    assert!(!types.iter().any(|t| t.starts_with("secret ")), "{types:?}");
    let def = db
        .client
        .query_one(
            "SELECT attnames::text, rowfilter FROM pg_publication_tables WHERE pubname = $1",
            &[&p.name],
        )
        .await
        .unwrap();
    assert_eq!(def.get::<_, String>(0), "{id,v}");
    assert!(def.get::<_, String>(1).contains("1000"));
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_table_copied_later_is_stopped_not_counted_twice() {
    let db = fresh_db("e2e_keyless_resync").await;
    db.client
        .batch_execute(
            "CREATE TABLE log (kind text, n int);
             ALTER TABLE log REPLICA IDENTITY FULL;
             INSERT INTO log VALUES ('a', 1), ('a', 1), (NULL, NULL);",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.log"], "");
    let mut sluice = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    let live = |p: &TestPipeline| format!("SELECT kind, toString(n) FROM `{}`.log_live", p.ch_db);
    wait_equal(
        &p,
        &db.client,
        "SELECT kind, n::text FROM log",
        &live(&p),
        Duration::from_secs(60),
    )
    .await;
    // A copy now would read later than the stream's position.
    let out = sluice_cmd(&["resync", "public.log"], &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = wait_for("log to be stopped", Duration::from_secs(60), || async {
        let out = sluice_cmd(&["status"], &p);
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.contains("table public.log: failed").then_some(s)
    })
    .await;
    assert!(
        status.contains("exact multiset") && status.contains("new replication slot's snapshot"),
        "{status}"
    );
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_snapshot_copies_a_keyless_table_as_one_multiset() {
    let db = fresh_db("e2e_keyless_once").await;
    db.client
        .batch_execute(
            "CREATE TABLE log (kind text, n int, pad text);
             INSERT INTO log SELECT CASE WHEN g % 7 = 0 THEN NULL ELSE 'k' || (g % 5) END, g % 3, repeat('x', 200)
             FROM generate_series(1, 20000) g;",
        )
        .await
        .unwrap();
    let p = TestPipeline::new(&db.url, &["public.log"], "");
    p.edit_config("[batch]", "[snapshot]\nparallelism = 4\n\n[batch]");
    let out = sluice_cmd(&["snapshot"], &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = wait_equal(
        &p,
        &db.client,
        "SELECT kind, n::text, md5(pad) FROM log",
        &format!(
            "SELECT kind, toString(n), lower(hex(MD5(pad))) FROM `{}`.log_live",
            p.ch_db
        ),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(rows.len(), 20000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_sets_partition_root_on_an_existing_publication() {
    let db = fresh_db("e2e_parts_pub").await;
    let mut p = TestPipeline::new(&db.url, &["public.measures"], "");
    db.client
        .batch_execute(&format!(
            "CREATE TABLE measures (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
             CREATE TABLE measures_a PARTITION OF measures FOR VALUES FROM (0) TO (10);
             CREATE TABLE measures_b PARTITION OF measures FOR VALUES FROM (10) TO (20);
             INSERT INTO measures SELECT g, 'v' || g FROM generate_series(0, 9) g;
             CREATE PUBLICATION \"{}\" FOR TABLE measures;",
            p.name
        ))
        .await
        .unwrap();
    let mut sluice = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    db.client
        .batch_execute(
            "UPDATE measures SET id = id + 10 WHERE id < 3; INSERT INTO measures VALUES (15, 'new')",
        )
        .await
        .unwrap();
    wait_equal(
        &p,
        &db.client,
        "SELECT id::text, v FROM measures",
        &format!(
            "SELECT toString(id), v FROM `{}`.measures FINAL WHERE _is_deleted = 0",
            p.ch_db
        ),
        Duration::from_secs(60),
    )
    .await;
    let via_root: bool = db
        .client
        .query_one(
            "SELECT pubviaroot FROM pg_publication WHERE pubname = $1",
            &[&p.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(via_root, "{}", tail(&p.last_log(), 20));
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
}
