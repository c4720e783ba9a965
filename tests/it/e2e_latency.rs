//! Adaptive micro-batches: a change leaves as soon as the stream has caught
//! up (not when `max_delay` expires), while a steady load still fills
//! batches to `max_rows`.

use std::time::{Duration, Instant};

use sluice::source::postgres::stream::SINK_BUSY_MAX_BYTES;

use crate::support::e2e::*;
use crate::support::*;

/// The debug "flush" lines of the log: (reason, rows).
fn flushes(log: &str) -> Vec<(String, usize)> {
    log.lines()
        .filter(|l| l.contains(" flush ") || l.ends_with(" flush"))
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{k}=")))
                    .map(str::to_owned)
            };
            Some((field("reason")?, field("rows")?.parse().ok()?))
        })
        .collect()
}

/// Waits until ClickHouse's `t` equals PostgreSQL's, row for row.
async fn wait_t_equal(p: &TestPipeline, db: &TestDb, within: Duration) {
    wait_equal(
        p,
        &db.client,
        "SELECT id::text, v FROM t",
        &format!(
            "SELECT toString(id), v FROM `{}`.t FINAL WHERE _is_deleted = 0",
            p.ch_db
        ),
        within,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_after_idleness_leaves_at_once_and_a_load_fills_batches() {
    let db = fresh_db("lat").await;
    db.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.t"], "");
    // A long max_delay: a timer-driven flush would take 30 s.
    p.edit_config("max_delay = \"200ms\"", "max_delay = \"30s\"");
    p.edit_config("max_rows = 2000", "max_rows = 1000");
    let mut run = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    // Idle for 10 s, then one commit.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let committed = Instant::now();
    db.client
        .batch_execute("INSERT INTO t VALUES (1, 'one')")
        .await
        .unwrap();
    wait_for("the row", Duration::from_secs(25), || async {
        p.ch(&format!("SELECT count() FROM `{}`.t", p.ch_db))
            .await
            .ok()
            .filter(|c| c.trim() == "1")
    })
    .await;
    let visible = committed.elapsed();
    eprintln!("one commit after 10 s idle: visible after {visible:?} (max_delay 30 s)");
    assert!(
        visible < Duration::from_secs(25),
        "visible after {visible:?}: it waited for the timer"
    );
    let first = flushes(&p.last_log());
    assert!(
        first.iter().any(|(r, n)| r == "caught_up" && *n == 1),
        "the row left because the stream caught up: {first:?}"
    );
    assert!(!first.iter().any(|(r, _)| r == "max_delay"), "{first:?}");

    // A steady load: one big transaction streams in batches of max_rows.
    db.client
        .batch_execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(2, 20001) g")
        .await
        .unwrap();
    wait_t_equal(&p, &db, Duration::from_secs(60)).await;
    let all = flushes(&p.last_log());
    let full = all
        .iter()
        .filter(|(r, n)| r == "max_rows" && *n == 1000)
        .count();
    assert!(full >= 10, "batches filled to max_rows under load: {all:?}");
    p.terminate_ok(&mut run, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sink_pauses_the_reading_at_a_bounded_batch() {
    let db = fresh_db("busy").await;
    db.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.t"], "");
    // Neither max_rows, max_bytes nor max_delay may end a batch first.
    p.edit_config("max_delay = \"200ms\"", "max_delay = \"60s\"");
    p.edit_config("max_rows = 2000", "max_rows = 10000000");
    p.edit_config("max_bytes = \"8MiB\"", "max_bytes = \"1GiB\"");
    let mut run = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    db.client
        .batch_execute("INSERT INTO t VALUES (0, 'first')")
        .await
        .unwrap();
    wait_for("the first row", Duration::from_secs(30), || async {
        p.ch(&format!("SELECT count() FROM `{}`.t", p.ch_db))
            .await
            .ok()
            .filter(|c| c.trim() == "1")
    })
    .await;
    // The test bed's ClickHouse runs one query at a time: a slow one keeps
    // the sink busy while about 26 MB of small transactions arrive.
    let busy = tokio::spawn(ch_query(
        "SELECT sleepEachRow(0.5) FROM numbers(20) SETTINGS max_block_size = 1",
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One round trip, 48 transactions: all of it arrives while the engine
    // is held, even on a slow machine.
    let burst: String = (0..48)
        .map(|k| {
            format!(
                "BEGIN; INSERT INTO t SELECT g, repeat('x', 100) || g \
                 FROM generate_series({} + 1, {} + 5000) g; COMMIT;",
                k * 5000,
                k * 5000
            )
        })
        .collect();
    db.client.batch_execute(&burst).await.unwrap();
    busy.await.expect("the slow query ran");
    wait_t_equal(&p, &db, Duration::from_secs(120)).await;
    let all = flushes(&p.last_log());
    let paused: Vec<usize> = all
        .iter()
        .filter(|(r, _)| r == "sink_busy")
        .map(|(_, n)| *n)
        .collect();
    eprintln!("flushes while the sink was busy: {paused:?}");
    assert!(
        !paused.is_empty(),
        "no batch stopped for the busy sink: {all:?}"
    );
    // The bound's bytes of ~120-byte rows, plus the transaction that
    // passed it.
    let bound = SINK_BUSY_MAX_BYTES as usize / 100 + 5000;
    assert!(
        all.iter().all(|(_, n)| *n <= bound),
        "a batch grew past the busy-sink bound of {bound} rows: {all:?}"
    );
    p.terminate_ok(&mut run, Duration::from_secs(30));
}
