//! Table shapes end to end (`sluice run`, PostgreSQL -> ClickHouse), each
//! compared row for row: keys from the catalog whatever the replica
//! identity.

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
