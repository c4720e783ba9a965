//! PostgreSQL -> ClickHouse end to end with `sluice run`: a mixed workload
//! ends with ClickHouse equal to PostgreSQL row for row; schema changes are
//! followed; a slot recreated behind sluice's back is an explicit error.

use std::time::Duration;

use crate::support::e2e::*;
use crate::support::*;

const SCHEMA: &str = r#"
CREATE TABLE orders (id int PRIMARY KEY, customer int, note text, amount numeric(12,2),
                     qty int8, at timestamptz, body text);
CREATE TABLE customers (id int PRIMARY KEY, name text, tier text);
CREATE SCHEMA "Sales Ops";
CREATE TABLE "Sales Ops"."Line.Items" (order_id int, line int, sku text, PRIMARY KEY (order_id, line));
"#;

pub const ORDERS_PG: &str =
    "SELECT id::text, customer::text, note, trim_scale(amount)::text, qty::text,
    to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), md5(body) FROM orders ORDER BY id";

pub fn orders_ch(db: &str) -> String {
    format!(
        "SELECT toString(id), toString(customer), note, toString(amount), toString(qty),
                formatDateTime(at, '%Y-%m-%d %H:%i:%S.%f', 'UTC'), lower(hex(MD5(body)))
         FROM `{db}`.orders FINAL WHERE _is_deleted = 0 ORDER BY id"
    )
}

/// Random hex: incompressible, so it is stored out of line (TOASTed).
const BIG: &str = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_ends_equal_row_for_row() {
    let db = fresh_db("e2e_mix").await;
    db.client.batch_execute(SCHEMA).await.unwrap();
    let mut p = TestPipeline::new(
        &db.url,
        &[
            "public.orders",
            "public.customers",
            "\"Sales Ops\".\"Line.Items\"",
        ],
        "",
    );
    let mut sluice = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;

    let steps = [
        // Inserts in several transactions, some with TOASTed bodies.
        format!("INSERT INTO orders SELECT g, g % 17, 'note ' || g, g * 1.25, g * 1000, '2024-01-01'::timestamptz + g * interval '1 minute', CASE WHEN g % 10 = 0 THEN {BIG} ELSE 'small ' || g END FROM generate_series(1, 300) g"),
        "INSERT INTO orders SELECT g, NULL, NULL, NULL, NULL, NULL, NULL FROM generate_series(301, 320) g".into(),
        "INSERT INTO customers SELECT g, 'c' || g, 'gold' FROM generate_series(1, 100) g".into(),
        "INSERT INTO \"Sales Ops\".\"Line.Items\" SELECT o, l, 'sku-' || o || '-' || l FROM generate_series(1, 20) o, generate_series(1, 3) l".into(),
        // Updates that leave the TOASTed body unchanged.
        "UPDATE orders SET note = 'toast kept ' || id, qty = qty + 1 WHERE id % 10 = 0".into(),
        "UPDATE orders SET amount = amount * 2, at = at + interval '1 day' WHERE id % 3 = 0".into(),
        // Primary key changes.
        "UPDATE orders SET id = id + 100000 WHERE id % 25 = 0".into(),
        "UPDATE \"Sales Ops\".\"Line.Items\" SET line = line + 10 WHERE order_id = 5".into(),
        // Two rows swapping keys inside one transaction.
        "BEGIN; UPDATE orders SET id = -1 WHERE id = 1; UPDATE orders SET id = 1 WHERE id = 2; UPDATE orders SET id = 2 WHERE id = -1; COMMIT;".into(),
        // Deletes, including rows with composite keys.
        "DELETE FROM orders WHERE id % 7 = 0".into(),
        "DELETE FROM \"Sales Ops\".\"Line.Items\" WHERE line = 2".into(),
        "DELETE FROM customers WHERE id > 90".into(),
        // Insert and delete of one key within one transaction, and re-insert.
        "BEGIN; INSERT INTO orders VALUES (5000, 1, 'ghost', 1, 1, now(), 'x'); DELETE FROM orders WHERE id = 5000; INSERT INTO orders VALUES (5001, 1, 'kept', 2, 2, '2030-05-05 05:05:05.555555+00', 'y'); COMMIT;".into(),
        // Truncate, then new rows.
        "TRUNCATE customers".into(),
        "INSERT INTO customers SELECT g, 'new ' || g, NULL FROM generate_series(1, 20) g".into(),
        "UPDATE customers SET tier = 'silver' WHERE id <= 5".into(),
    ];
    for sql in &steps {
        db.client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    let orders = wait_equal(
        &p,
        &db.client,
        ORDERS_PG,
        &orders_ch(&p.ch_db),
        Duration::from_secs(90),
    )
    .await;
    assert!(orders.len() > 250, "{} orders", orders.len());
    let customers = wait_equal(
        &p,
        &db.client,
        "SELECT id::text, name, tier FROM customers ORDER BY id",
        &format!("SELECT toString(id), name, tier FROM `{}`.customers FINAL WHERE _is_deleted = 0 ORDER BY id", p.ch_db),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(customers.len(), 20, "truncate removed the old customers");
    let items = wait_equal(
        &p,
        &db.client,
        "SELECT order_id::text, line::text, sku FROM \"Sales Ops\".\"Line.Items\" ORDER BY 1, 2",
        &format!(
            "SELECT toString(order_id), toString(line), sku FROM `{}`.`Sales Ops_Line.Items` FINAL WHERE _is_deleted = 0 ORDER BY order_id, line",
            p.ch_db
        ),
        Duration::from_secs(60),
    )
    .await;
    // 20 orders x 3 lines, less line 2 of each, except order 5 whose lines moved to 11-13.
    assert_eq!(items.len(), 41);

    let status = terminate(&mut sluice, Duration::from_secs(30));
    assert!(
        status.success(),
        "graceful stop: {status}\n{}",
        p.last_log()
    );
    let log = p.last_log();
    assert!(log.contains("source stopped"), "{log}");
    // After a graceful stop the slot is confirmed up to the checkpoint.
    let out = std::process::Command::new(sluice_bin())
        .args(["status", "-c"])
        .arg(&p.config)
        .output()
        .unwrap();
    let status_text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{status_text}");
    let cp = status_text
        .lines()
        .find_map(|l| l.strip_prefix("checkpoint: "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_string();
    assert!(
        status_text.contains(&format!("confirmed_flush_lsn {cp}")),
        "{status_text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_drop_column_during_streaming_are_reflected() {
    let db = fresh_db("e2e_schema").await;
    db.client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text, legacy text)")
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.items"], "");
    let mut sluice = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    db.client
        .batch_execute("INSERT INTO items SELECT g, 'n' || g, 'old' FROM generate_series(1, 50) g")
        .await
        .unwrap();
    // The column must have reached ClickHouse before it is dropped (the
    // copy beside the stream may otherwise describe the table afterwards).
    let legacy = format!(
        "SELECT count() FROM `{}`.items FINAL WHERE legacy = 'old'",
        p.ch_db
    );
    wait_for(
        "the first rows in ClickHouse",
        Duration::from_secs(60),
        || async { (p.ch(&legacy).await.ok()?.trim() == "50").then_some(()) },
    )
    .await;
    db.client
        .batch_execute(
            "ALTER TABLE items ADD COLUMN price numeric(10,2);
             ALTER TABLE items DROP COLUMN legacy;",
        )
        .await
        .unwrap();
    db.client
        .batch_execute(
            "INSERT INTO items SELECT g, 'n' || g, g * 0.5 FROM generate_series(51, 80) g;
             UPDATE items SET price = 9.99 WHERE id <= 10;",
        )
        .await
        .unwrap();
    let rows = wait_equal(
        &p,
        &db.client,
        "SELECT id::text, name, trim_scale(price)::text FROM items ORDER BY id",
        &format!("SELECT toString(id), name, toString(price) FROM `{}`.items FINAL WHERE _is_deleted = 0 ORDER BY id", p.ch_db),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(rows.len(), 80);
    let columns = p
        .ch(&format!(
            "SELECT name FROM system.columns WHERE database = '{}' AND table = 'items' ORDER BY position",
            p.ch_db
        ))
        .await
        .unwrap();
    assert!(columns.contains("price"), "ADD COLUMN reflected: {columns}");
    // Default on_drop_column = keep: the column stays, later rows get its default.
    assert!(columns.contains("legacy"), "dropped column kept: {columns}");
    terminate(&mut sluice, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_recreated_behind_our_back_is_an_explicit_error() {
    let db = fresh_db("e2e_slot").await;
    db.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.t"], "");
    let mut sluice = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    db.client
        .batch_execute("INSERT INTO t SELECT generate_series(1, 10)")
        .await
        .unwrap();
    wait_equal(
        &p,
        &db.client,
        "SELECT id::text FROM t ORDER BY id",
        &format!(
            "SELECT toString(id) FROM `{}`.t FINAL WHERE _is_deleted = 0 ORDER BY id",
            p.ch_db
        ),
        Duration::from_secs(60),
    )
    .await;
    p.terminate_ok(&mut sluice, Duration::from_secs(30));

    // Someone drops and recreates the slot; changes made in between would be lost.
    db.client
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{}')", p.name))
        .await
        .unwrap();
    db.client
        .batch_execute("INSERT INTO t VALUES (11)")
        .await
        .unwrap();
    db.client
        .batch_execute(&format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
            p.name
        ))
        .await
        .unwrap();
    let mut again = p.spawn(&[]);
    let status = wait_for("sluice to refuse", Duration::from_secs(60), || {
        let s = again.try_wait().unwrap();
        async move { s }
    })
    .await;
    let log = p.last_log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("beyond the checkpoint"), "{log}");
    assert!(log.contains("sluice drop"), "says how to resync: {log}");

    // And a slot that is simply gone.
    db.client
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{}')", p.name))
        .await
        .unwrap();
    let mut third = p.spawn(&[]);
    let status = wait_for("sluice to refuse", Duration::from_secs(60), || {
        let s = third.try_wait().unwrap();
        async move { s }
    })
    .await;
    let log = p.last_log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("no longer exists"), "{log}");
}
