//! Hostile identifiers end to end: schema, table and column names with
//! quotes, backticks, dots, spaces, a newline, unicode, reserved words and an
//! attempted injection replicate exactly (snapshot and stream), and nothing
//! they spell is executed by PostgreSQL or ClickHouse.

use std::time::Duration;

use crate::support::e2e::*;
use crate::support::*;
use sluice::config::quote_ident;
use sluice::sink::clickhouse::quote_ch_ident;

/// (PostgreSQL schema, table) pairs; every column list below goes in each.
const TABLES: &[(&str, &str)] = &[
    ("we\"ird.sch ema", "select"),
    ("public", "tab`le; DROP TABLE victim; --"),
    ("public", "x'); DROP TABLE victim; --"),
    ("ünï cödé", "line\nbreak"),
];

/// Columns after the key `id`.
const COLUMNS: &[&str] = &[
    "from",
    "a`b",
    "c\"d",
    "e.f",
    "g h",
    "new\nline",
    "Ünïcödé ✓",
    "MixedCase",
    "x'); DROP TABLE victim; --",
];

/// The ClickHouse table sluice writes a source table to (its default naming).
fn target(schema: &str, table: &str) -> String {
    if schema == "public" {
        table.to_owned()
    } else {
        format!("{schema}_{table}")
    }
}

fn pg_select(schema: &str, table: &str) -> String {
    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("coalesce({}, '<null>')", quote_ident(c)))
        .collect();
    format!(
        "SELECT id::text, {} FROM {}.{} ORDER BY id",
        cols.join(", "),
        quote_ident(schema),
        quote_ident(table)
    )
}

fn ch_select(db: &str, schema: &str, table: &str) -> String {
    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("ifNull({}, '<null>')", quote_ch_ident(c)))
        .collect();
    format!(
        "SELECT toString(id), {} FROM {}.{} FINAL WHERE _is_deleted = 0 ORDER BY id",
        cols.join(", "),
        quote_ch_ident(db),
        quote_ch_ident(&target(schema, table))
    )
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02X}")).collect()
}

fn unhex(text: &str) -> String {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

fn config_name(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_identifiers_replicate_exactly_and_inject_nothing() {
    let db = fresh_db("e2e_ident").await;
    db.client
        .batch_execute("CREATE TABLE victim (id int PRIMARY KEY)")
        .await
        .unwrap();
    let column_defs: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("{} text", quote_ident(c)))
        .collect();
    for (schema, table) in TABLES {
        let q = format!("{}.{}", quote_ident(schema), quote_ident(table));
        db.client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE {q} (id int PRIMARY KEY, {cols});
                 INSERT INTO {q} SELECT g, {vals} FROM generate_series(1, 50) g;",
                s = quote_ident(schema),
                cols = column_defs.join(", "),
                vals = COLUMNS
                    .iter()
                    .enumerate()
                    .map(|(i, _)| format!(
                        "CASE WHEN g % 5 = {} THEN NULL ELSE 'v{i}`\"' || g END",
                        i % 5
                    ))
                    .collect::<Vec<_>>()
                    .join(", "),
            ))
            .await
            .unwrap_or_else(|e| panic!("create {q}: {e}"));
    }
    let names: Vec<String> = TABLES.iter().map(|(s, t)| config_name(s, t)).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut p = TestPipeline::new(&db.url, &refs, "");
    let mut run = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    for (schema, table) in TABLES {
        let q = format!("{}.{}", quote_ident(schema), quote_ident(table));
        db.client
            .batch_execute(&format!(
                "INSERT INTO {q} (id, {c0}, {c5}) SELECT g, 'streamed ' || g, 'two words' FROM generate_series(51, 80) g;
                 UPDATE {q} SET {c2} = 'upd`ated\"' WHERE id % 3 = 0;
                 DELETE FROM {q} WHERE id % 10 = 0;",
                c0 = quote_ident(COLUMNS[0]),
                c2 = quote_ident(COLUMNS[2]),
                c5 = quote_ident(COLUMNS[5]),
            ))
            .await
            .unwrap();
    }
    for (schema, table) in TABLES {
        wait_equal(
            &p,
            &db.client,
            &pg_select(schema, table),
            &ch_select(&p.ch_db, schema, table),
            Duration::from_secs(90),
        )
        .await;
        // The column names themselves, in order (hex: no escaping to undo).
        let ch_cols = p
            .ch(&format!(
                "SELECT hex(name) FROM system.columns WHERE database = unhex('{}') AND table = unhex('{}') AND name NOT LIKE '\\_%' ORDER BY position",
                hex(&p.ch_db),
                hex(&target(schema, table)),
            ))
            .await
            .unwrap();
        let ch_cols: Vec<String> = ch_cols.lines().map(unhex).collect();
        let mut expected = vec!["id".to_string()];
        expected.extend(COLUMNS.iter().map(|c| c.to_string()));
        assert_eq!(ch_cols, expected, "columns of {schema}.{table}");
    }
    terminate(&mut run, Duration::from_secs(30));

    // Nothing was injected: the victim tables still exist on both sides.
    let victim = db
        .client
        .query_one("SELECT count(*) FROM victim", &[])
        .await
        .expect("the PostgreSQL victim table is gone");
    assert_eq!(victim.get::<_, i64>(0), 0);
    let tables = p
        .ch(&format!(
            "SELECT count() FROM system.tables WHERE database = '{}'",
            p.ch_db
        ))
        .await
        .unwrap();
    assert_eq!(tables.trim(), TABLES.len().to_string(), "ClickHouse tables");
}
