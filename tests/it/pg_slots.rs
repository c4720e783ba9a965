//! Slot and publication management: clear errors for a slot in use, a
//! missing slot, a publication that lacks a configured table; `drop`.

use std::time::Duration;

use crate::support::source::*;
use crate::support::*;
use sluice::source::postgres::stream::{Session, SessionOptions};
use sluice::source::postgres::{catalog, SourceError};

fn opts(cfg: &sluice::config::PostgresSourceConfig) -> SessionOptions {
    SessionOptions {
        resume: None,
        tables: cfg.tables.clone(),
        ensure_slot: true,
        spill_dir: std::env::temp_dir().join(unique_name("spill")),
        confirm: false,
        startup: Vec::new(),
    }
}

async fn start_err(cfg: &sluice::config::PostgresSourceConfig) -> SourceError {
    match Session::start(cfg, small_batches(), opts(cfg)).await {
        Ok(_) => panic!("the session started"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_in_use_is_named_with_the_other_process() {
    let db = fresh_db("slots_busy").await;
    db.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let cfg = source_config(&db.url, &["public.t"]);
    let src = start_source(&cfg, small_batches(), false, Vec::new()).await;
    let e = start_err(&cfg).await;
    assert!(matches!(e, SourceError::SlotInUse { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&cfg.slot) && text.contains("in use by another process (pid "),
        "{text}"
    );
    src.stop.cancel();
    let _ = src.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_slot_and_incomplete_publication_are_explained() {
    let db = fresh_db("slots_missing").await;
    db.client
        .batch_execute("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);")
        .await
        .unwrap();
    let mut cfg = source_config(&db.url, &["public.a", "public.b"]);
    db.client
        .batch_execute(&format!(
            "CREATE PUBLICATION \"{}\" FOR TABLE a",
            cfg.publication
        ))
        .await
        .unwrap();
    cfg.create_publication = false;
    let e = start_err(&cfg).await;
    assert!(matches!(e, SourceError::Publication { .. }), "{e:?}");
    assert!(e.to_string().contains("does not include public.b"), "{e}");

    cfg.create_publication = true;
    cfg.create_slot = false;
    let e = start_err(&cfg).await;
    assert!(matches!(e, SourceError::SlotMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("create_slot = false"), "{e}");

    // With create_publication the missing table is added.
    cfg.create_slot = true;
    let src = start_source(&cfg, small_batches(), false, Vec::new()).await;
    let client = catalog::connect(&cfg.conn).await.unwrap();
    let publication = catalog::publication(&client, &cfg.publication)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(publication.tables.len(), 2);
    src.stop.cancel();
    let _ = src.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_removes_slot_publication_and_checkpoint() {
    let db = fresh_db("slots_drop").await;
    db.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let mut p = crate::support::e2e::TestPipeline::new(&db.url, &["public.t"], "");
    let mut run = p.spawn(&[]);
    crate::support::e2e::wait_for_slot(&db.client, &p.name).await;
    assert!(crate::support::e2e::terminate(&mut run, Duration::from_secs(30)).success());
    let out = std::process::Command::new(sluice_bin())
        .args(["drop", "-c"])
        .arg(&p.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("dropped replication slot \"{}\"", p.name)),
        "{text}"
    );
    assert!(
        text.contains(&format!("dropped publication \"{}\"", p.name)),
        "{text}"
    );
    assert!(text.contains("removed checkpoint database"), "{text}");
    let slots = db
        .client
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&p.name],
        )
        .await
        .unwrap();
    assert!(slots.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidated_slot_says_to_resync() {
    // A server that drops WAL a slot still needs after 1 MB.
    let pg = OwnPostgres::start(&["max_slot_wal_keep_size=1MB"]);
    let client = connect(&pg.url).await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, pad text)")
        .await
        .unwrap();
    let cfg = source_config(&pg.url, &["public.t"]);
    client
        .batch_execute(&format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
            cfg.slot
        ))
        .await
        .unwrap();
    let mut status = String::new();
    for round in 0..30 {
        client
            .batch_execute(&format!(
                "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series({0} * 20000 + 1, {0} * 20000 + 20000) g;
                 SELECT pg_switch_wal();
                 CHECKPOINT;",
                round
            ))
            .await
            .unwrap();
        status = client
            .query_one(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                &[&cfg.slot],
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
            .unwrap_or_default();
        if status == "lost" {
            break;
        }
    }
    assert_eq!(status, "lost", "the server did not invalidate the slot");
    let e = start_err(&cfg).await;
    assert!(matches!(e, SourceError::SlotInvalidated { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("invalidated") && text.contains("sluice drop"),
        "{text}"
    );
    assert!(!e.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_still_being_created_is_waited_for_not_adopted_at_zero() {
    // Another process is creating the slot (as a run killed in the middle
    // of creating it leaves it until the server notices): it has no
    // confirmed position yet. sluice must wait, not start from 0/0.
    let db = fresh_db("slot_creating").await;
    db.client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b');",
        )
        .await
        .unwrap();
    let mut p = crate::support::e2e::TestPipeline::new(&db.url, &["public.t"], "");
    // A transaction open in the database holds the creation back: a slot
    // is consistent only once every running transaction has ended.
    let open = connect(&db.url).await;
    open.batch_execute("BEGIN; INSERT INTO t VALUES (3, 'c')")
        .await
        .unwrap();
    let info = conn_info(&db.url);
    let mut creator = std::process::Command::new(servers().pg_bin.join("psql"))
        .arg(format!(
            "host={} port={} user={} dbname={} replication=database",
            info.host, info.port, info.user, info.dbname
        ))
        .args([
            "-X",
            "-c",
            &format!("CREATE_REPLICATION_SLOT \"{}\" LOGICAL pgoutput", p.name),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = &db.client;
    let slot = p.name.clone();
    wait_for(
        "the slot to exist, not yet consistent",
        Duration::from_secs(30),
        || {
            let slot = slot.clone();
            async move {
                client
                    .query_opt(
                        "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn IS NULL",
                        &[&slot],
                    )
                    .await
                    .ok()
                    .flatten()
                    .map(|_| ())
            }
        },
    )
    .await;
    let mut run = p.spawn(&[]);
    wait_for(
        "sluice to find the slot in use",
        Duration::from_secs(60),
        || async {
            p.last_log()
                .contains("is in use by another process")
                .then_some(())
        },
    )
    .await;
    // The creation completes once the transaction ends; then sluice takes
    // the slot from where it stands.
    open.batch_execute("COMMIT").await.unwrap();
    assert!(creator.wait().unwrap().success());
    let pg_sql = "SELECT id::text, v FROM t";
    let ch_sql = format!(
        "SELECT toString(id), v FROM `{}`.t FINAL WHERE _is_deleted = 0",
        p.ch_db
    );
    let rows =
        crate::support::e2e::wait_equal(&p, &db.client, pg_sql, &ch_sql, Duration::from_secs(120))
            .await;
    assert_eq!(rows.len(), 3);
    let log = p.last_log();
    assert!(!log.contains("position=0/0"), "{log}");
    p.terminate_ok(&mut run, Duration::from_secs(30));
}
