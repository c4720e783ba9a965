//! The position and version a copy writes at, end to end: a resync at the
//! very position of the table's first copy (stale rows must still go), a
//! transaction open across a resync's position (its change must not lose
//! to the copy's row), and a destination holding versions from another
//! server (the table stops rather than lose every change to them).

use std::time::Duration;

use crate::e2e_copy::{sluice, wait_digest_equal};
use crate::support::e2e::*;
use crate::support::*;

/// The value of `key=` on the first log line containing `what`.
fn logged_value(log: &str, what: &str, key: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(what))?;
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    Some(line[at..].split_whitespace().next()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_at_the_position_of_the_first_copy_still_removes_stale_rows() {
    // A server of its own and no heartbeat, so that (usually) nothing moves
    // the position between the first copy and the resync: the resync's
    // copy must then wait for a later position, or the rows the first copy
    // wrote at that same version could not be told stale.
    let pg = OwnPostgres::start(&[]);
    let client = connect(&pg.url).await;
    client
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, v int);
             INSERT INTO t SELECT g, g FROM generate_series(1, 2000) g;",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&pg.url, &["public.t"], "on_truncate = \"ignore\"");
    p.edit_config(
        "status_interval = \"1s\"\n",
        "status_interval = \"1s\"\nheartbeat_interval = \"0s\"\n",
    );
    let mut first = p.spawn(&[]);
    wait_digest_equal(&p, &client, "t", Duration::from_secs(120)).await;
    p.terminate_ok(&mut first, Duration::from_secs(30));
    let log = p.log(1);
    let same_position = logged_value(&log, "created replication slot", "consistent_point")
        == logged_value(&log, "source stopped", "confirmed");

    // A truncate (ignored by the sink) leaves stale rows only a resync
    // removes.
    client
        .batch_execute("TRUNCATE t; INSERT INTO t SELECT g, -g FROM generate_series(1, 1500) g;")
        .await
        .unwrap();
    let out = sluice(&["resync", "public.t"], &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut second = p.spawn(&[]);
    wait_digest_equal(&p, &client, "t", Duration::from_secs(120)).await;
    client
        .batch_execute("UPDATE t SET v = 0 WHERE id <= 10; DELETE FROM t WHERE id > 1490;")
        .await
        .unwrap();
    wait_digest_equal(&p, &client, "t", Duration::from_secs(120)).await;
    let log = p.last_log();
    if same_position {
        assert!(
            log.contains("the table's last copy wrote at this same position"),
            "{}",
            tail(&log, 40)
        );
    }
    eprintln!("the first run stopped at its copy's position: {same_position}");
    p.terminate_ok(&mut second, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_open_across_a_resyncs_position_is_in_the_copy() {
    let db = fresh_db("copy_open_txn").await;
    db.client
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, v int);
             INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g;",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.t"], "");
    let mut run = p.spawn(&[]);
    wait_digest_equal(&p, &db.client, "t", Duration::from_secs(120)).await;

    // A transaction changes a row and stays open while the saved position
    // moves past its change. Streamed after its commit, the change carries
    // its own (older) WAL position as version: a copy at the newer position
    // that read before the commit would win over it for good.
    let open = connect(&db.url).await;
    open.batch_execute("BEGIN; UPDATE t SET v = -1 WHERE id = 1")
        .await
        .unwrap();
    let change: String = open
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let slot = p.name.clone();
    let client = &db.client;
    wait_for(
        "the saved position to pass the open transaction's change",
        Duration::from_secs(60),
        || {
            let (slot, change) = (slot.clone(), change.clone());
            async move {
                client
                    .query_one(
                        "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
                        &[&slot, &change],
                    )
                    .await
                    .ok()
                    .and_then(|r| r.get::<_, Option<bool>>(0))
                    .filter(|&passed| passed)
            }
        },
    )
    .await;
    let out = sluice(&["resync", "public.t"], &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the resync's copy to start",
        Duration::from_secs(60),
        || async { (p.last_log().matches("copy started").count() >= 2).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = p.last_log();
    assert_eq!(
        log.matches("driver: copy done").count(),
        1,
        "the copy waits for the open transaction\n{}",
        tail(&log, 30)
    );
    open.batch_execute("COMMIT").await.unwrap();
    wait_digest_equal(&p, &db.client, "t", Duration::from_secs(120)).await;
    db.client
        .batch_execute("UPDATE t SET v = 0 WHERE id <= 10")
        .await
        .unwrap();
    wait_digest_equal(&p, &db.client, "t", Duration::from_secs(120)).await;
    p.terminate_ok(&mut run, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_holding_rows_from_another_server_stops_the_table() {
    // The pipeline is dropped and pointed at another server (a new one, or
    // this one restored from a backup) whose WAL positions are far lower
    // than the versions in ClickHouse: the old rows would win over every
    // row copied and streamed from it, so the table stops with the reason.
    let db = fresh_db("copy_foreign").await;
    let create = "CREATE TABLE t (id bigint PRIMARY KEY, v int);
                  INSERT INTO t SELECT g, g FROM generate_series(1, 500) g;";
    db.client.batch_execute(create).await.unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.t"], "");
    let mut first = p.spawn(&[]);
    wait_digest_equal(&p, &db.client, "t", Duration::from_secs(120)).await;
    p.terminate_ok(&mut first, Duration::from_secs(30));
    let out = sluice(&["drop"], &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let other = OwnPostgres::start(&[]);
    let client = connect(&other.url).await;
    client.batch_execute(create).await.unwrap();
    client
        .batch_execute("UPDATE t SET v = -v WHERE id <= 100")
        .await
        .unwrap();
    p.edit_config(&db.url, &other.url);
    let mut second = p.spawn(&[]);
    wait_for("the table to stop", Duration::from_secs(60), || async {
        p.last_log().contains("table stopped").then_some(())
    })
    .await;
    let status = String::from_utf8_lossy(&sluice(&["status"], &p).stdout).into_owned();
    assert!(
        status.contains("table public.t: failed")
            && status.contains("above any version this source can have written yet"),
        "{status}"
    );
    // Nothing was copied over the old rows.
    let negative = p
        .ch(&format!(
            "SELECT count() FROM `{}`.t FINAL WHERE v < 0",
            p.ch_db
        ))
        .await
        .unwrap();
    assert_eq!(negative.trim(), "0");
    p.terminate_ok(&mut second, Duration::from_secs(30));
}
