//! The table lifecycle end to end: a table the sink must stop (an
//! incompatible type change) stays stopped across a restart, `status` says
//! why, and the other table keeps replicating row for row.

use std::process::Command;
use std::time::Duration;

use crate::support::e2e::*;
use crate::support::*;

const GOOD_PG: &str = "SELECT id::text, v::text FROM good ORDER BY id";

fn good_ch(db: &str) -> String {
    format!(
        "SELECT toString(id), toString(v) FROM `{db}`.good FINAL WHERE _is_deleted = 0 ORDER BY id"
    )
}

/// The ids ClickHouse holds for table `bad` (every version, deleted or not).
async fn bad_ids(p: &TestPipeline) -> Vec<String> {
    let out = p
        .ch(&format!(
            "SELECT DISTINCT toString(id) FROM `{}`.bad ORDER BY id",
            p.ch_db
        ))
        .await
        .unwrap();
    tsv_lines(&out)
}

fn status(p: &TestPipeline) -> String {
    let out = Command::new(sluice_bin())
        .args(["status", "-c"])
        .arg(&p.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_table_stays_failed_across_restarts_and_the_others_go_on() {
    let db = fresh_db("e2e_fail").await;
    db.client
        .batch_execute(
            "CREATE TABLE good (id int PRIMARY KEY, v int);
             CREATE TABLE bad (id int PRIMARY KEY, v int);
             INSERT INTO good SELECT g, g FROM generate_series(1, 20) g;
             INSERT INTO bad SELECT g, g FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.good", "public.bad"], "");
    let mut sluice = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    db.client
        .batch_execute(
            "INSERT INTO bad SELECT g, g FROM generate_series(21, 30) g;
             INSERT INTO good SELECT g, g FROM generate_series(21, 30) g;",
        )
        .await
        .unwrap();
    wait_equal(
        &p,
        &db.client,
        GOOD_PG,
        &good_ch(&p.ch_db),
        Duration::from_secs(60),
    )
    .await;
    let before: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
    let mut sorted_before = before.clone();
    sorted_before.sort();
    wait_for("bad's 30 rows", Duration::from_secs(60), || async {
        let mut ids = bad_ids(&p).await;
        ids.sort();
        (ids == sorted_before).then_some(())
    })
    .await;

    // An int column becomes boolean: ClickHouse cannot convert its column,
    // so the sink stops the table.
    db.client
        .batch_execute(
            "ALTER TABLE bad ALTER COLUMN v TYPE boolean USING v <> 0;
             INSERT INTO bad VALUES (100, true);
             INSERT INTO good SELECT g, g FROM generate_series(31, 40) g;",
        )
        .await
        .unwrap();
    wait_equal(
        &p,
        &db.client,
        GOOD_PG,
        &good_ch(&p.ch_db),
        Duration::from_secs(60),
    )
    .await;
    wait_for(
        "the table to be stopped",
        Duration::from_secs(60),
        || async { p.last_log().contains("table stopped").then_some(()) },
    )
    .await;
    let running = status(&p);
    assert!(
        running.contains("table public.bad: failed since") && running.contains("changed type"),
        "status while running:\n{running}"
    );
    p.terminate_ok(&mut sluice, Duration::from_secs(30));

    // Restarted, with more changes to both tables.
    let stopped = status(&p);
    assert!(
        stopped.contains("table public.bad: failed since") && stopped.contains("changed type"),
        "status after stop:\n{stopped}"
    );
    assert!(
        stopped.contains("table public.good: streaming"),
        "{stopped}"
    );
    // The column is changed back, so the sink could write the table again:
    // it must not, or the changes skipped while it was stopped would be a
    // silent gap.
    db.client
        .batch_execute("ALTER TABLE bad ALTER COLUMN v TYPE int USING v::int")
        .await
        .unwrap();
    let mut again = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    db.client
        .batch_execute(
            "INSERT INTO bad SELECT g, g FROM generate_series(200, 210) g;
             UPDATE bad SET v = 0 WHERE id <= 5;
             DELETE FROM bad WHERE id BETWEEN 6 AND 10;
             INSERT INTO good SELECT g, g FROM generate_series(41, 60) g;
             DELETE FROM good WHERE id <= 3;",
        )
        .await
        .unwrap();
    let rows = wait_equal(
        &p,
        &db.client,
        GOOD_PG,
        &good_ch(&p.ch_db),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(rows.len(), 57);
    // Give a wrongly written change to bad time to show up, then check:
    // nothing after the failure reached it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ids = bad_ids(&p).await;
    ids.sort();
    assert_eq!(
        ids, sorted_before,
        "the failed table received rows after its failure"
    );
    let deleted = p
        .ch(&format!(
            "SELECT count() FROM `{}`.bad FINAL WHERE _is_deleted = 1",
            p.ch_db
        ))
        .await
        .unwrap();
    assert_eq!(
        deleted.trim(),
        "0",
        "no delete was written to the failed table"
    );
    let log = p.last_log();
    assert!(log.contains("table stays stopped"), "{}", tail(&log, 30));
    p.terminate_ok(&mut again, Duration::from_secs(30));
}
