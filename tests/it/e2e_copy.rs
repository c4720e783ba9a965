//! Copies at full speed and on demand: a parallel snapshot in ranges under
//! writes and a kill -9 (resumes with the unfinished ranges only), a resync
//! while running (a failed table brought back, rows deleted meanwhile gone,
//! the other table streaming throughout), a resync requested while stopped,
//! the one-shot `sluice snapshot`, and a resync of a plain and a
//! partitioned table under writes and kill -9s, a part per copy unit,
//! and units copied again when their INSERTs break. The positions and
//! versions copies are at: `e2e_copy_position.rs`.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::e2e::*;
use crate::support::*;

const PARALLEL: &str = "\n[snapshot]\nparallelism = 4\n";

/// An order-sensitive digest of `id, v` over the whole table: equal digests
/// mean equal rows, without moving a million rows into the test.
async fn pg_digest(client: &tokio_postgres::Client, table: &str) -> String {
    // Keys of any type, ordered as PostgreSQL orders them (text keys compare
    // the same in both when they are plain ASCII, as in these tests).
    let row = client
        .query_one(
            &format!(
                "SELECT count(*)::text || ':' || coalesce(md5(string_agg(id::text || '=' || coalesce(v::text, 'N'), ',' ORDER BY id)), '')
                 FROM {table}"
            ),
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

fn ch_digest_sql(db: &str, table: &str) -> String {
    format!(
        "SELECT concat(toString(count()), ':', if(count() = 0, '', lower(hex(MD5(arrayStringConcat(groupArray(concat(toString(id), '=', ifNull(toString(v), 'N'))), ',')))))) \
         FROM (SELECT id, v FROM `{db}`.`{table}` FINAL WHERE _is_deleted = 0 ORDER BY id)"
    )
}

pub(crate) async fn wait_digest_equal(
    p: &TestPipeline,
    pg: &tokio_postgres::Client,
    table: &str,
    timeout: Duration,
) {
    let start = Instant::now();
    loop {
        let expected = pg_digest(pg, table).await;
        let actual = p
            .ch(&ch_digest_sql(&p.ch_db, table))
            .await
            .map(|s| s.trim().to_owned());
        if actual.as_deref() == Ok(expected.as_str()) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{table}: ClickHouse did not become equal to PostgreSQL within {timeout:?}: postgres {expected}, clickhouse {actual:?}\n{}",
            tail(&p.last_log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) fn sluice(args: &[&str], p: &TestPipeline) -> std::process::Output {
    Command::new(sluice_bin())
        .args(&args[..1])
        .arg("-c")
        .arg(&p.config)
        .args(&args[1..])
        .output()
        .unwrap()
}

/// `units=N to_read=K` of the log's "copy started" line for `table`.
fn copy_started(log: &str, table: &str) -> Option<(u64, u64)> {
    let line = log
        .lines()
        .rfind(|l| l.contains("copy started") && l.contains(&format!("table={table}")))?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
    };
    Some((field("units")?, field("to_read")?))
}

/// Updates, inserts and deletes on `table` until `stop`.
async fn write_load(url: String, table: &'static str, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let client = connect(&url).await;
    let mut next = 5_000_000;
    while !stop.load(Ordering::Relaxed) {
        next += 1;
        let n = next % 997;
        let sql = format!(
            "BEGIN; UPDATE {table} SET v = v + 1 WHERE id IN ({n} * 1000 + 1, {n} * 331 + 7);
             DELETE FROM {table} WHERE id = {n} * 977 + 3;
             INSERT INTO {table} VALUES ({next}, {n}); COMMIT;"
        );
        client.batch_execute(&sql).await.unwrap();
        done.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_snapshot_under_writes_and_a_kill_resumes_and_ends_equal() {
    let db = fresh_db("copy_big").await;
    db.client
        .batch_execute(
            "CREATE TABLE big (id bigint PRIMARY KEY, v int, pad text);
             INSERT INTO big SELECT g, g % 1000, repeat('x', 20) FROM generate_series(1, 1000000) g;
             ANALYZE big;",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.big"], PARALLEL);
    let stop = Arc::new(AtomicBool::new(false));
    let txns = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn(write_load(
        db.url.clone(),
        "big",
        stop.clone(),
        txns.clone(),
    ));
    let mut first = p.spawn(&[]);
    // Kill it once some ranges are recorded as done, before the copy ends.
    wait_for("a copied range", Duration::from_secs(300), || async {
        let out = sluice(&["status"], &p);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let done = text
            .lines()
            .find(|l| l.starts_with("table public.big: snapshotting ("))
            .and_then(|l| l.split('(').nth(1))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        done.filter(|&n| n >= 1)
    })
    .await;
    first.kill().unwrap();
    let _ = first.wait();
    let (units, to_read) = copy_started(&p.log(1), "public.big").expect("copy started line");
    assert_eq!(units, to_read, "the first run reads every range");
    assert!(units >= 4, "a 1M-row table is split into ranges ({units})");
    assert!(
        !p.log(1).contains("copy done"),
        "killed before the copy finished"
    );

    let mut second = p.spawn(&[]);
    wait_for("the copy to finish", Duration::from_secs(300), || async {
        p.last_log().contains("copy done").then_some(())
    })
    .await;
    let (units2, to_read2) = copy_started(&p.last_log(), "public.big").expect("copy started line");
    assert_eq!(units2, units, "the saved plan is reused");
    assert!(
        to_read2 < units2,
        "after the kill only the unfinished ranges are read ({to_read2} of {units2})"
    );
    // Writes went on throughout; stop them and compare.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(txns.load(Ordering::Relaxed) > 10, "the load ran");
    wait_digest_equal(&p, &db.client, "big", Duration::from_secs(180)).await;
    p.terminate_ok(&mut second, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_while_running_brings_back_a_failed_table_and_drops_deleted_rows() {
    let db = fresh_db("copy_resync").await;
    db.client
        .batch_execute(
            "CREATE TABLE keep (id bigint PRIMARY KEY, v int);
             CREATE TABLE redo (id bigint PRIMARY KEY, v int);
             INSERT INTO keep SELECT g, g FROM generate_series(1, 100) g;
             INSERT INTO redo SELECT g, g FROM generate_series(1, 200000) g;",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.keep", "public.redo"], PARALLEL);
    let mut run = p.spawn(&[]);
    wait_digest_equal(&p, &db.client, "redo", Duration::from_secs(120)).await;
    wait_digest_equal(&p, &db.client, "keep", Duration::from_secs(60)).await;

    // redo fails (an int column becomes boolean), then is changed back,
    // and rows are deleted, updated and added while it is stopped.
    db.client
        .batch_execute(
            "ALTER TABLE redo ALTER COLUMN v TYPE boolean USING v <> 0;
             INSERT INTO redo VALUES (300001, true);",
        )
        .await
        .unwrap();
    wait_for("redo to be stopped", Duration::from_secs(60), || async {
        p.last_log().contains("table stopped").then_some(())
    })
    .await;
    db.client
        .batch_execute(
            "ALTER TABLE redo ALTER COLUMN v TYPE int USING v::int;
             DELETE FROM redo WHERE id % 5 = 0;
             UPDATE redo SET v = -v WHERE id % 7 = 0;
             INSERT INTO redo SELECT g, g FROM generate_series(400001, 400500) g;",
        )
        .await
        .unwrap();
    let status = String::from_utf8_lossy(&sluice(&["status"], &p).stdout).into_owned();
    assert!(status.contains("table public.redo: failed"), "{status}");

    // keep receives a row every 50 ms throughout the resync; each row's lag
    // (insert to visible in ClickHouse) is measured.
    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<std::sync::Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let writer = {
        let (url, stop, written) = (db.url.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let c = connect(&url).await;
            let mut id = 1000u64;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                c.batch_execute(&format!("INSERT INTO keep VALUES ({id}, {id})"))
                    .await
                    .unwrap();
                written.lock().unwrap().push((id, Instant::now()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let lags: Arc<std::sync::Mutex<Vec<Duration>>> = Arc::default();
    let poller = {
        let (stop, written, lags) = (stop.clone(), written.clone(), lags.clone());
        let (url, sql) = (
            p.clickhouse_url.clone(),
            format!("SELECT toUInt64(max(id)) FROM `{}`.keep FINAL", p.ch_db),
        );
        tokio::spawn(async move {
            let client = clickhouse::Client::default()
                .with_url(&url)
                .with_compression(clickhouse::Compression::None);
            let mut seen = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(max) = client.query(&sql).fetch_one::<u64>().await {
                    let now = Instant::now();
                    for (id, at) in written.lock().unwrap().iter() {
                        if *id > seen && *id <= max {
                            lags.lock().unwrap().push(now - *at);
                        }
                    }
                    seen = seen.max(max);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = sluice(&["resync", "public.redo"], &p);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("copies it again now"));
    wait_for("the resync to finish", Duration::from_secs(120), || async {
        (p.last_log()
            .lines()
            .filter(|l| l.contains("copy done") && l.contains("table=public.redo"))
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    poller.await.unwrap();
    let lags = lags.lock().unwrap().clone();
    let max_lag = lags.iter().max().copied().unwrap_or_default();
    eprintln!(
        "keep during the resync: {} rows, max lag {max_lag:?}",
        lags.len()
    );
    assert!(
        lags.len() >= 20,
        "keep kept streaming: {} rows seen",
        lags.len()
    );
    // Bounded: the copy of redo does not stall keep (generous for a busy CI machine).
    assert!(
        max_lag < Duration::from_secs(30),
        "keep's lag grew to {max_lag:?}"
    );
    wait_digest_equal(&p, &db.client, "redo", Duration::from_secs(120)).await;
    wait_digest_equal(&p, &db.client, "keep", Duration::from_secs(60)).await;
    let log = p.last_log();
    assert!(
        log.contains("removed rows the copy did not find in the source"),
        "{}",
        tail(&log, 30)
    );
    let status = String::from_utf8_lossy(&sluice(&["status"], &p).stdout).into_owned();
    assert!(status.contains("table public.redo: streaming"), "{status}");
    p.terminate_ok(&mut run, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_requested_while_stopped_runs_at_the_next_start() {
    let db = fresh_db("copy_offline").await;
    db.client
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, v int);
             INSERT INTO t SELECT g, g FROM generate_series(1, 3000) g;",
        )
        .await
        .unwrap();
    // A truncate the sink ignores leaves stale rows in ClickHouse.
    let mut p = TestPipeline::new(&db.url, &["public.t"], "on_truncate = \"ignore\"");
    let mut run = p.spawn(&[]);
    wait_digest_equal(&p, &db.client, "t", Duration::from_secs(60)).await;
    db.client
        .batch_execute("TRUNCATE t; INSERT INTO t SELECT g, -g FROM generate_series(2001, 2500) g;")
        .await
        .unwrap();
    wait_for("the new rows", Duration::from_secs(60), || async {
        p.ch(&format!(
            "SELECT count() FROM `{}`.t FINAL WHERE v < 0",
            p.ch_db
        ))
        .await
        .ok()
        .filter(|c| c.trim() == "500")
    })
    .await;
    p.terminate_ok(&mut run, Duration::from_secs(30));
    let stale = p
        .ch(&format!(
            "SELECT count() FROM `{}`.t FINAL WHERE _is_deleted = 0",
            p.ch_db
        ))
        .await
        .unwrap();
    assert_eq!(
        stale.trim(),
        "3000",
        "stale rows are there before the resync"
    );

    let out = sluice(&["resync", "public.t"], &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("marked for resync"));
    let status = String::from_utf8_lossy(&sluice(&["status"], &p).stdout).into_owned();
    assert!(status.contains("table public.t: resyncing"), "{status}");
    // A table that is not configured is refused with exit code 2.
    let bad = sluice(&["resync", "public.nope"], &p);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not in source.postgres.tables"));

    let mut again = p.spawn(&[]);
    wait_digest_equal(&p, &db.client, "t", Duration::from_secs(60)).await;
    p.terminate_ok(&mut again, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_snapshot_copies_without_a_slot() {
    let db = fresh_db("copy_once").await;
    db.client
        .batch_execute(
            "CREATE TABLE a (id bigint PRIMARY KEY, v int);
             CREATE TABLE b (id bigint PRIMARY KEY, v int);
             INSERT INTO a SELECT g, g FROM generate_series(1, 50000) g;
             INSERT INTO b SELECT g, NULL FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    let p = TestPipeline::new(&db.url, &["public.a", "public.b"], PARALLEL);
    let out = sluice(&["snapshot"], &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_digest_equal(&p, &db.client, "a", Duration::from_secs(30)).await;
    wait_digest_equal(&p, &db.client, "b", Duration::from_secs(30)).await;
    let slots = db
        .client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&p.name],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(slots, 0, "no slot for a one-shot copy");
    // Only the named table when tables are given; rows gone from the source
    // go from the sink too.
    db.client
        .batch_execute("DELETE FROM a WHERE id > 40000; UPDATE b SET v = 1;")
        .await
        .unwrap();
    let out = sluice(&["snapshot", "public.a"], &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_digest_equal(&p, &db.client, "a", Duration::from_secs(30)).await;
    let b = p
        .ch(&format!(
            "SELECT count() FROM `{}`.b FINAL WHERE v IS NULL",
            p.ch_db
        ))
        .await
        .unwrap();
    assert_eq!(b.trim(), "10", "b was not copied again");
}

/// The ClickHouse sink writes each copy unit as one INSERT streaming all of
/// its batches, so ClickHouse forms a part per unit, not one per batch
/// (parts it must then merge): here 100 batches of 2000 rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_unit_is_one_insert_so_clickhouse_makes_a_part_per_unit_not_per_batch() {
    let db = fresh_db("copy_parts").await;
    db.client
        .batch_execute(
            "CREATE TABLE a (id bigint PRIMARY KEY, v int);
             INSERT INTO a SELECT g, g FROM generate_series(1, 200000) g;",
        )
        .await
        .unwrap();
    let p = TestPipeline::new(&db.url, &["public.a"], PARALLEL);
    let out = sluice(&["snapshot"], &p);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    wait_digest_equal(&p, &db.client, "a", Duration::from_secs(30)).await;
    let (units, _) = copy_started(&log, "public.a")
        .unwrap_or_else(|| panic!("no \"copy started\" line:\n{}", tail(&log, 20)));
    // Every part an INSERT creates takes the table's next block number;
    // merges keep their sources' range.
    let inserts: u64 = p
        .ch(&format!(
            "SELECT max(max_block_number) FROM system.parts WHERE database = '{}' AND table = 'a'",
            p.ch_db
        ))
        .await
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        (1..=units).contains(&inserts),
        "{inserts} parts were written for {units} copy units of 100 batches in all"
    );
}

/// ClickHouse goes away while copy units stream into it: the broken
/// INSERTs are not counted as done, each unit is copied again once
/// ClickHouse is back, and the table ends equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_inserts_break_copies_the_units_again() {
    let mut ch = OwnClickHouse::start();
    let db = fresh_db("copy_break").await;
    db.client
        .batch_execute(
            "CREATE TABLE big (id bigint PRIMARY KEY, v int);
             INSERT INTO big SELECT g, g % 1000 FROM generate_series(1, 1000000) g;",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::with_clickhouse(&db.url, &["public.big"], PARALLEL, &ch.url);
    let mut child = p.spawn(&[]);
    // The table exists once the first batch is on its way.
    let exists = format!("EXISTS TABLE `{}`.big", p.ch_db);
    wait_for(
        "the copy's first INSERT",
        Duration::from_secs(60),
        || async { (p.ch(&exists).await.ok()?.trim() == "1").then_some(()) },
    )
    .await;
    ch.stop();
    wait_for("a retried copy unit", Duration::from_secs(60), || async {
        p.last_log()
            .contains("writing a copy unit failed; retrying")
            .then_some(())
    })
    .await;
    ch.restart();
    wait_digest_equal(&p, &db.client, "big", Duration::from_secs(180)).await;
    p.terminate_ok(&mut child, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_key_ranges_copy_a_table_whose_blocks_are_uneven() {
    let db = fresh_db("copy_keys").await;
    // Most of the table is dead tuples: block ranges would be uneven.
    db.client
        .batch_execute(
            "CREATE TABLE k (id text PRIMARY KEY, v int) WITH (autovacuum_enabled = false);
             INSERT INTO k SELECT lpad(g::text, 8, '0'), g FROM generate_series(1, 400000) g;
             DELETE FROM k WHERE v % 4 <> 0;
             ANALYZE k;",
        )
        .await
        .unwrap();
    let p = TestPipeline::new(
        &db.url,
        &["public.k"],
        "\n[snapshot]\nparallelism = 2\nsplit = \"primary_key\"\n",
    );
    let out = Command::new(sluice_bin())
        .args(["snapshot", "-c"])
        .arg(&p.config)
        .env("RUST_LOG", "info,sluice=debug")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}", tail(&log, 30));
    let key_units = log
        .lines()
        .filter(|l| l.contains("reading") && l.contains("unit=key:"))
        .count();
    assert!(
        key_units >= 2,
        "copied in primary-key ranges: {}",
        tail(&log, 30)
    );
    wait_digest_equal(&p, &db.client, "k", Duration::from_secs(30)).await;
}

/// Runs whose log shows a copy of `table` started and not finished.
fn interrupted_copies(p: &TestPipeline, runs: std::ops::RangeInclusive<u32>, table: &str) -> usize {
    runs.filter(|&r| {
        let log = p.log(r);
        let mine = |what: &str| {
            log.lines()
                .any(|l| l.contains(what) && l.contains(&format!("table={table} ")))
        };
        mine("copy started") && !mine("copy done")
    })
    .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_of_a_plain_and_a_partitioned_table_survives_kills_under_writes() {
    let db = fresh_db("copy_resync_kill").await;
    db.client
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, v int);
             INSERT INTO t SELECT g, g FROM generate_series(1, 200000) g;
             CREATE TABLE pt (id bigint PRIMARY KEY, v int) PARTITION BY RANGE (id);
             CREATE TABLE pt_1 PARTITION OF pt FOR VALUES FROM (MINVALUE) TO (50001);
             CREATE TABLE pt_2 PARTITION OF pt FOR VALUES FROM (50001) TO (100001);
             CREATE TABLE pt_3 PARTITION OF pt FOR VALUES FROM (100001) TO (MAXVALUE);
             INSERT INTO pt SELECT g, g FROM generate_series(1, 150000) g;
             ANALYZE t; ANALYZE pt;",
        )
        .await
        .unwrap();
    // Truncates are ignored by the sink, so they leave stale rows that only
    // a resync removes.
    let mut p = TestPipeline::new(
        &db.url,
        &["public.t", "public.pt"],
        "on_truncate = \"ignore\"\n[snapshot]\nparallelism = 4\n",
    );
    let mut first = p.spawn(&[]);
    wait_digest_equal(&p, &db.client, "t", Duration::from_secs(300)).await;
    wait_digest_equal(&p, &db.client, "pt", Duration::from_secs(300)).await;
    p.terminate_ok(&mut first, Duration::from_secs(30));
    db.client
        .batch_execute(
            "TRUNCATE t; INSERT INTO t SELECT g, -g FROM generate_series(1, 150000) g;
             TRUNCATE pt; INSERT INTO pt SELECT g, -g FROM generate_series(40001, 160000) g;",
        )
        .await
        .unwrap();
    let out = sluice(&["resync", "public.t", "public.pt"], &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Writes on both throughout. First kill -9s that land in the copies
    // (each run soon after its copy starts, until a run finds nothing left
    // to copy), then kill -9s at random moments of the streaming after
    // them, some between a sink write and its checkpoint.
    let stop = Arc::new(AtomicBool::new(false));
    let txns = Arc::new(AtomicU64::new(0));
    let loads = ["t", "pt"].map(|table| {
        tokio::spawn(write_load(
            db.url.clone(),
            table,
            stop.clone(),
            txns.clone(),
        ))
    });
    let mut runs = 1;
    for _ in 0..4 {
        let mut child = p.spawn(&[]);
        runs += 1;
        let started = Instant::now();
        let copying = loop {
            let log = p.last_log();
            if log.contains("copy started") {
                break true;
            }
            // A copy may wait for the stream to move the position first
            // (its table's last copy was at this same position).
            let waits = log.contains("last copy wrote at this same position");
            if (log.contains("replication started") && !waits)
                || started.elapsed() > Duration::from_secs(60)
            {
                break false;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "sluice exited on its own\n{}",
                tail(&log, 40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if copying {
            let wait = rand::Rng::gen_range(&mut rand::thread_rng(), 0..300);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        child.kill().unwrap();
        let _ = child.wait();
        if !copying {
            break;
        }
    }
    let interrupted = interrupted_copies(&p, 2..=runs, "public.t")
        + interrupted_copies(&p, 2..=runs, "public.pt");
    eprintln!(
        "copies interrupted by a kill: {interrupted} (in {} runs)",
        runs - 1
    );
    assert!(interrupted >= 1, "no kill landed during a copy");
    p.kill_or_abort_repeatedly(5, 400..3000, 0.3).await;

    let mut last = p.spawn(&[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.await.unwrap();
    }
    assert!(txns.load(Ordering::Relaxed) > 10, "the load ran");
    wait_digest_equal(&p, &db.client, "t", Duration::from_secs(300)).await;
    wait_digest_equal(&p, &db.client, "pt", Duration::from_secs(300)).await;
    let status = String::from_utf8_lossy(&sluice(&["status"], &p).stdout).into_owned();
    for t in ["public.t", "public.pt"] {
        assert!(
            status.contains(&format!("table {t}: streaming")),
            "{status}"
        );
    }
    p.terminate_ok(&mut last, Duration::from_secs(30));
}
