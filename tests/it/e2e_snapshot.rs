//! Initial snapshot, then streaming: rows that existed before sluice started
//! arrive, a crash in the middle of the copy is survived, and a table added to
//! the config later is copied while the others keep streaming.

use std::time::Duration;

use crate::support::e2e::*;
use crate::support::*;

const PG_SQL: &str = "SELECT id::text, v, trim_scale(amount)::text, md5(body) FROM items";

fn ch_sql(db: &str, table: &str) -> String {
    format!(
        "SELECT toString(id), v, toString(amount), lower(hex(MD5(body))) FROM `{db}`.`{table}` FINAL WHERE _is_deleted = 0"
    )
}

async fn fill(db: &TestDb, table: &str, rows: i32) {
    db.client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, v text, amount numeric(12,2), body text);
             INSERT INTO {table} SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'v' || g END, g * 0.25,
                    CASE WHEN g % 1000 = 0 THEN (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 300) x)
                         ELSE 'b' || g END
             FROM generate_series(1, {rows}) g;"
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_rows_then_changes_arrive() {
    let db = fresh_db("snap").await;
    fill(&db, "items", 30_000).await;
    let mut p = TestPipeline::new(&db.url, &["public.items"], "");
    let mut sluice = p.spawn(&[]);
    let rows = wait_equal(
        &p,
        &db.client,
        PG_SQL,
        &ch_sql(&p.ch_db, "items"),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(rows.len(), 30_000);
    // Changes after the snapshot stream in, including unchanged TOAST values
    // of snapshot rows.
    db.client
        .batch_execute(
            "UPDATE items SET v = 'changed' WHERE id % 1000 = 0;
             DELETE FROM items WHERE id % 3 = 0;
             INSERT INTO items VALUES (100001, 'new', 1.5, 'nb');",
        )
        .await
        .unwrap();
    wait_equal(
        &p,
        &db.client,
        PG_SQL,
        &ch_sql(&p.ch_db, "items"),
        Duration::from_secs(60),
    )
    .await;
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
    let log = p.last_log();
    assert!(log.contains("copy done"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_the_snapshot_is_survived() {
    let db = fresh_db("snap_crash").await;
    fill(&db, "items", 600_000).await;
    // One reader: the units (one INSERT each, visible only whole) are
    // written one after another.
    let mut p = TestPipeline::new(&db.url, &["public.items"], "[snapshot]\nparallelism = 1\n");
    let mut first = p.spawn(&[]);
    // Kill it as soon as the first unit is written, while the next is read.
    let started = std::time::Instant::now();
    while !p.log(1).contains("copy INSERT written") {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no unit was written\n{}",
            tail(&p.log(1), 30)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().unwrap();
    let _ = first.wait();
    let log = p.log(1);
    assert!(
        !log.contains("driver: copy done"),
        "killed before the copy finished\n{}",
        tail(&log, 30)
    );
    // Changes while sluice is down.
    db.client
        .batch_execute("UPDATE items SET v = 'while down' WHERE id <= 100; DELETE FROM items WHERE id > 599000;")
        .await
        .unwrap();
    let mut second = p.spawn(&[]);
    let rows = wait_equal(
        &p,
        &db.client,
        PG_SQL,
        &ch_sql(&p.ch_db, "items"),
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(rows.len(), 599_000);
    assert!(p.last_log().contains("copy done"));
    p.terminate_ok(&mut second, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_added_later_is_copied() {
    let db = fresh_db("snap_add").await;
    fill(&db, "items", 1_000).await;
    fill(&db, "later", 2_000).await;
    let mut p = TestPipeline::new(&db.url, &["public.items"], "");
    let mut run = p.spawn(&[]);
    wait_equal(
        &p,
        &db.client,
        PG_SQL,
        &ch_sql(&p.ch_db, "items"),
        Duration::from_secs(60),
    )
    .await;
    p.terminate_ok(&mut run, Duration::from_secs(30));

    let text = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(
        &p.config,
        text.replace(
            "tables = [\"public.items\"]",
            "tables = [\"public.items\", \"public.later\"]",
        ),
    )
    .unwrap();
    let mut again = p.spawn(&[]);
    let later_pg = PG_SQL.replace("FROM items", "FROM later");
    let rows = wait_equal(
        &p,
        &db.client,
        &later_pg,
        &ch_sql(&p.ch_db, "later"),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(rows.len(), 2_000);
    db.client
        .batch_execute(
            "UPDATE later SET v = 'x' WHERE id < 10; UPDATE items SET v = 'y' WHERE id < 10;",
        )
        .await
        .unwrap();
    wait_equal(
        &p,
        &db.client,
        &later_pg,
        &ch_sql(&p.ch_db, "later"),
        Duration::from_secs(60),
    )
    .await;
    wait_equal(
        &p,
        &db.client,
        PG_SQL,
        &ch_sql(&p.ch_db, "items"),
        Duration::from_secs(60),
    )
    .await;
    let log = p.last_log();
    assert!(
        log.contains("table=public.later") && log.contains("copy done"),
        "{log}"
    );
    p.terminate_ok(&mut again, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_without_binary_form_are_copied_as_text() {
    let db = fresh_db("snap_text").await;
    db.client
        .batch_execute(
            "CREATE TABLE shapes (id int PRIMARY KEY, r int4range, p point);
             INSERT INTO shapes SELECT g, int4range(g, g + 10), point(g, g * 2) FROM generate_series(1, 500) g;",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.shapes"], "");
    let mut run = p.spawn(&[]);
    let pg_sql = "SELECT id::text, r::text, p::text FROM shapes";
    let ch = format!(
        "SELECT toString(id), r, p FROM `{}`.shapes FINAL WHERE _is_deleted = 0",
        p.ch_db
    );
    wait_equal(&p, &db.client, pg_sql, &ch, Duration::from_secs(60)).await;
    db.client
        .batch_execute("UPDATE shapes SET r = '[7,8)' WHERE id < 5; INSERT INTO shapes VALUES (1000, 'empty', '(0,0)')")
        .await
        .unwrap();
    let rows = wait_equal(&p, &db.client, pg_sql, &ch, Duration::from_secs(60)).await;
    assert_eq!(rows.len(), 501);
    assert!(p.last_log().contains("replicating in text format"));
    p.terminate_ok(&mut run, Duration::from_secs(30));
}
