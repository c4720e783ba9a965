//! Servers restarting under a running pipeline: PostgreSQL and ClickHouse
//! go down and come back mid-run; sluice reconnects by itself and the end
//! state is equal row for row.

use std::time::Duration;

use crate::support::e2e::*;
use crate::support::*;

const PG_SQL: &str = "SELECT id::text, v, md5(body) FROM t";

async fn write_batch(url: &str, from: i32, to: i32) {
    let client = connect(url).await;
    client
        .batch_execute(&format!(
            "INSERT INTO t SELECT g, 'v' || g, CASE WHEN g % 10 = 0 THEN
                (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 300) x) ELSE 'b' END
             FROM generate_series({from}, {to}) g;
             UPDATE t SET v = v || '+' WHERE id % 3 = 0 AND id BETWEEN {from} AND {to};
             DELETE FROM t WHERE id % 11 = 0 AND id BETWEEN {from} AND {to};"
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_clickhouse_restarts_are_survived() {
    let pg = OwnPostgres::start(&[]);
    let mut ch = OwnClickHouse::start();
    let admin = connect(&pg.url).await;
    admin
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text, body text)")
        .await
        .unwrap();
    let mut p = TestPipeline::with_clickhouse(&pg.url, &["public.t"], "", &ch.url);
    let mut sluice = p.spawn(&[]);
    crate::support::e2e::wait_for_slot(&admin, &p.name).await;
    write_batch(&pg.url, 1, 500).await;
    let ch_sql = format!(
        "SELECT toString(id), v, lower(hex(MD5(body))) FROM `{}`.t FINAL WHERE _is_deleted = 0",
        p.ch_db
    );
    wait_equal(&p, &admin, PG_SQL, &ch_sql, Duration::from_secs(60)).await;

    // PostgreSQL goes away for a few seconds.
    drop(admin);
    pg.restart_after(Duration::from_secs(3));
    write_batch(&pg.url, 501, 1000).await;
    let admin = connect(&pg.url).await;
    wait_equal(&p, &admin, PG_SQL, &ch_sql, Duration::from_secs(90)).await;

    // ClickHouse goes away while changes keep coming.
    ch.stop();
    write_batch(&pg.url, 1001, 1500).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ch.restart();
    write_batch(&pg.url, 1501, 2000).await;
    let rows = wait_equal(&p, &admin, PG_SQL, &ch_sql, Duration::from_secs(120)).await;
    assert!(rows.len() > 1700, "{} rows", rows.len());
    assert!(
        sluice.try_wait().unwrap().is_none(),
        "sluice kept running throughout"
    );
    let log = p.last_log();
    assert!(
        log.contains("reconnecting from the last saved position"),
        "PostgreSQL outage was retried:\n{}",
        tail(&log, 40)
    );
    assert!(
        log.contains("writing to the sink failed; retrying"),
        "ClickHouse outage was retried:\n{}",
        tail(&log, 40)
    );
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
}
