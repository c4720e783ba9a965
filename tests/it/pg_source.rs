//! The PostgreSQL source against a real server: every mapped type decoded
//! into Arrow equals what SELECT returns; unchanged TOAST; streamed
//! transactions with aborts and rolled-back savepoints.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::source::*;
use crate::support::*;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, IntervalMonthDayNanoType, Time64MicrosecondType, TimestampMicrosecondType,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// How a column's expected value is projected in SQL and its Arrow value rendered.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `c::text` equals the Arrow value's display (or Utf8 content).
    Text,
    /// Compared as f64, bit for bit (NaN equal to NaN, -0 distinct from 0).
    Float,
    Bytea,
    /// Days since 1970 (infinity as the i32 sentinels).
    Date,
    /// Microseconds since midnight.
    Time,
    /// Microseconds since 1970 UTC (infinity as the i64 sentinels).
    Timestamp,
    /// "months days micros".
    Interval,
    Uuid,
    /// money as its numeric amount.
    Money,
    /// The type's output function (`format('%s', c)`): bpchar keeps its
    /// padding and inet its bare host form, as PostgreSQL prints them.
    Output,
}

const COLUMNS: &[(&str, &str, Kind)] = &[
    ("c_bool", "bool", Kind::Text),
    ("c_int2", "int2", Kind::Text),
    ("c_int4", "int4", Kind::Text),
    ("c_int8", "int8", Kind::Text),
    ("c_float4", "float4", Kind::Float),
    ("c_float8", "float8", Kind::Float),
    ("c_num", "numeric(12,3)", Kind::Text),
    ("c_num_wide", "numeric(60,20)", Kind::Text),
    ("c_num_free", "numeric", Kind::Text),
    ("c_text", "text", Kind::Text),
    ("c_varchar", "varchar(20)", Kind::Text),
    ("c_bpchar", "char(5)", Kind::Output),
    ("c_bytea", "bytea", Kind::Bytea),
    ("c_date", "date", Kind::Date),
    ("c_time", "time", Kind::Time),
    ("c_timetz", "timetz", Kind::Text),
    ("c_ts", "timestamp", Kind::Timestamp),
    ("c_tstz", "timestamptz", Kind::Timestamp),
    ("c_interval", "interval", Kind::Interval),
    ("c_uuid", "uuid", Kind::Uuid),
    ("c_json", "json", Kind::Text),
    ("c_jsonb", "jsonb", Kind::Text),
    ("c_inet", "inet", Kind::Output),
    ("c_cidr", "cidr", Kind::Text),
    ("c_macaddr", "macaddr", Kind::Text),
    ("c_money", "money", Kind::Money),
    ("c_oid", "oid", Kind::Text),
    ("c_mood", "mood", Kind::Text),
    ("c_posint", "posint", Kind::Text),
    ("c_int4_arr", "int4[]", Kind::Text),
    ("c_text_arr", "text[]", Kind::Text),
    ("c_num_arr", "numeric(8,2)[]", Kind::Text),
    ("c_tstz_arr", "timestamptz[]", Kind::Timestamp),
    ("c_date_arr", "date[]", Kind::Date),
];

/// The SQL that computes the expected rendering of scalar expression `e`.
fn scalar_projection(e: &str, kind: Kind) -> String {
    match kind {
        Kind::Text | Kind::Float | Kind::Bytea | Kind::Uuid => format!("({e})::text"),
        Kind::Money => format!("(({e})::numeric)::text"),
        Kind::Output => format!("CASE WHEN ({e}) IS NULL THEN NULL ELSE format('%s', {e}) END"),
        Kind::Date => format!(
            "CASE WHEN ({e}) IS NULL THEN NULL WHEN isfinite({e}) THEN (({e}) - date '1970-01-01')::text \
             WHEN ({e}) > date '2000-01-01' THEN '2147483647' ELSE '-2147483648' END"
        ),
        Kind::Time => format!("(extract(epoch from {e}) * 1000000)::int8::text"),
        Kind::Timestamp => format!(
            "CASE WHEN ({e}) IS NULL THEN NULL WHEN isfinite({e}) THEN (extract(epoch from {e}) * 1000000)::int8::text \
             WHEN ({e}) > '2000-01-01' THEN '9223372036854775807' ELSE '-9223372036854775808' END"
        ),
        Kind::Interval => format!(
            "(extract(year from {e}) * 12 + extract(month from {e}))::int8::text || ' ' || \
             extract(day from {e})::int8::text || ' ' || \
             ((extract(hour from {e}) * 3600 + extract(minute from {e}) * 60 + extract(second from {e})) * 1000000)::int8::text"
        ),
    }
}

fn projection(col: &str, ty: &str, kind: Kind) -> String {
    if ty.ends_with("[]") {
        let elem = scalar_projection("e", kind);
        format!(
            "CASE WHEN {col} IS NULL THEN NULL ELSE \
             (SELECT coalesce(string_agg(coalesce({elem}, 'NULL'), ',' ORDER BY o), '') \
              FROM unnest({col}) WITH ORDINALITY AS u(e, o)) END"
        )
    } else {
        scalar_projection(col, kind)
    }
}

/// Renders one Arrow value the way `scalar_projection` renders the PG value.
fn render(a: &ArrayRef, i: usize) -> Option<String> {
    if a.is_null(i) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(i).to_owned(),
        DataType::Binary => {
            let b = a.as_binary::<i32>().value(i);
            let mut s = String::from("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
        DataType::FixedSizeBinary(16) => {
            let b: &[u8; 16] = a.as_fixed_size_binary().value(i).try_into().unwrap();
            sluice::source::postgres::types::format_uuid(b)
        }
        DataType::Date32 => a.as_primitive::<Date32Type>().value(i).to_string(),
        DataType::Time64(_) => a
            .as_primitive::<Time64MicrosecondType>()
            .value(i)
            .to_string(),
        DataType::Timestamp(_, _) => a
            .as_primitive::<TimestampMicrosecondType>()
            .value(i)
            .to_string(),
        DataType::Interval(_) => {
            let v = a.as_primitive::<IntervalMonthDayNanoType>().value(i);
            format!("{} {} {}", v.months, v.days, v.nanoseconds / 1000)
        }
        DataType::List(_) => {
            let items = a.as_list::<i32>().value(i);
            (0..items.len())
                .map(|j| render(&items, j).unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join(",")
        }
        _ => ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default())
            .unwrap()
            .value(i)
            .to_string(),
    })
}

fn parse_float(s: &str) -> f64 {
    match s {
        "Infinity" | "inf" => f64::INFINITY,
        "-Infinity" | "-inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        s => s.parse().unwrap_or_else(|_| panic!("not a float: {s}")),
    }
}

fn same(kind: Kind, expected: &Option<String>, actual: &Option<String>) -> bool {
    match (kind, expected, actual) {
        (Kind::Float, Some(e), Some(a)) => {
            let (e, a) = (parse_float(e), parse_float(a));
            (e.is_nan() && a.is_nan()) || e.to_bits() == a.to_bits()
        }
        _ => expected == actual,
    }
}

const SETUP: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
";

/// Row values, as SQL literals in COLUMNS order.
fn rows() -> Vec<(i32, Vec<&'static str>)> {
    vec![
        (
            1,
            vec![
                "true",
                "12",
                "123456",
                "1234567890123",
                "1.5",
                "2.718281828459045",
                "1234.5",
                "12345678901234567890.12345678901234567890",
                "3.14159",
                "'hello'",
                "'world'",
                "'ab'",
                "'\\x0102ff'",
                "'2024-01-31'",
                "'12:34:56.789'",
                "'12:34:56+02'",
                "'2024-01-31 12:34:56.123456'",
                "'2024-01-31 12:34:56.123456+00'",
                "'1 year 2 mons 3 days 04:05:06.789'",
                "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
                "'{\"a\": [1, 2]}'",
                "'{\"b\": {\"c\": null}}'",
                "'192.168.0.1'",
                "'10.0.0.0/8'",
                "'08:00:2b:01:02:03'",
                "'12.34'",
                "42",
                "'ok'",
                "7",
                "'{1,2,3}'",
                "'{a,b}'",
                "'{1.5,2.25}'",
                "'{\"2024-01-01 00:00:00+00\"}'",
                "'{2024-02-29}'",
            ],
        ),
        (2, vec!["NULL"; 34]),
        (
            3,
            vec![
                "false",
                "-32768",
                "-2147483648",
                "-9223372036854775808",
                "'-Infinity'",
                "'-Infinity'",
                "-999999999.999",
                "-9999999999999999999999999999999999999999.99999999999999999999",
                "'-0'",
                "''",
                "''",
                "''",
                "'\\x'",
                "'1900-01-01'",
                "'00:00:00'",
                "'00:00:00+14'",
                "'1900-01-01 00:00:00'",
                "'1969-12-31 23:59:59.999999+00'",
                "'-1 year -2 mons -3 days -04:05:06.789'",
                "'00000000-0000-0000-0000-000000000000'",
                "'[]'",
                "'{}'",
                "'0.0.0.0'",
                "'0.0.0.0/0'",
                "'00:00:00:00:00:00'",
                "'-92233720368547758.08'",
                "0",
                "'sad'",
                "1",
                "'{}'",
                "'{}'",
                "'{}'",
                "'{}'",
                "'{}'",
            ],
        ),
        (
            4,
            vec![
                "true",
                "32767",
                "2147483647",
                "9223372036854775807",
                "'Infinity'",
                "'NaN'",
                "999999999.999",
                "9999999999999999999999999999999999999999.99999999999999999999",
                "(repeat('9', 1000))::numeric",
                "'日本語 ✓ émoji 🎉'",
                "'ünïcödé'",
                "'ab   '",
                "decode(repeat('ab', 524288), 'hex')",
                "'infinity'",
                "'24:00:00'",
                "'23:59:59.999999-12'",
                "'infinity'",
                "'2100-06-01 12:00:00+00'",
                "'1000 years 11 mons 30 days 23:59:59.999999'",
                "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
                "'\"ünï\"'",
                "'{\"deep\": {\"x\": [1, \"two\", 3.5e10]}}'",
                "'2001:db8::1'",
                "'2001:db8::/32'",
                "'ff:ff:ff:ff:ff:ff'",
                "'92233720368547758.07'",
                "4294967295",
                "'happy'",
                "2147483647",
                "'{1,NULL,3}'",
                "'{a,NULL,\"b c\"}'",
                "'{1.50,NULL}'",
                "'{\"2024-01-01 00:00:00+00\",NULL,infinity}'",
                "'{-infinity,1960-06-15}'",
            ],
        ),
        (
            5,
            vec![
                "NULL",
                "0",
                "0",
                "0",
                "'-0'",
                "'-0'",
                "0",
                "0.00000000000000000001",
                "'NaN'",
                "repeat('x', 1048576)",
                "NULL",
                "NULL",
                "NULL",
                "'-infinity'",
                "NULL",
                "NULL",
                "'-infinity'",
                "'-infinity'",
                "'0'",
                "NULL",
                "NULL",
                "NULL",
                "'::ffff:1.2.3.4'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "'{NULL}'",
                "'{\"\"}'",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        (
            6,
            vec![
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "'Infinity'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "'0001-01-01'",
                "NULL",
                "NULL",
                "'0001-01-01 00:00:00'",
                "'1850-03-01 10:00:00+00'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
    ]
}

async fn expected(db: &TestDb) -> HashMap<i32, Vec<Option<String>>> {
    let projections: Vec<String> = COLUMNS
        .iter()
        .map(|(c, t, k)| projection(c, t, *k))
        .collect();
    let sql = format!(
        "SELECT id, {} FROM alltypes ORDER BY id",
        projections.join(", ")
    );
    let rows = db.client.query(&sql, &[]).await.unwrap();
    rows.iter()
        .map(|r| {
            let id: i32 = r.get(0);
            (
                id,
                (1..=COLUMNS.len())
                    .map(|i| r.get::<_, Option<String>>(i))
                    .collect(),
            )
        })
        .collect()
}

fn check_row(row: &Row, expected: &[Option<String>], mismatches: &mut Vec<String>) {
    for (i, (col, ty, kind)) in COLUMNS.iter().enumerate() {
        let actual = render(&row.column(col), row.index);
        if !same(*kind, &expected[i], &actual) {
            let short = |v: &Option<String>| {
                v.as_ref().map(|s| {
                    if s.len() > 80 {
                        format!("{}... ({} bytes)", &s[..80], s.len())
                    } else {
                        s.clone()
                    }
                })
            };
            mismatches.push(format!(
                "op {} {col} ({ty}): expected {:?}, decoded {:?}",
                row.op,
                short(&expected[i]),
                short(&actual)
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_decodes_to_what_select_returns_binary() {
    every_type_decodes_to_what_select_returns(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_decodes_to_what_select_returns_text() {
    every_type_decodes_to_what_select_returns(false).await;
}

async fn every_type_decodes_to_what_select_returns(binary: bool) {
    let db = fresh_db("src_types").await;
    let cols: Vec<String> = COLUMNS.iter().map(|(c, t, _)| format!("{c} {t}")).collect();
    db.client.batch_execute(SETUP).await.unwrap();
    db.client
        .batch_execute(&format!(
            "CREATE TABLE alltypes (id int PRIMARY KEY, {})",
            cols.join(", ")
        ))
        .await
        .unwrap();
    let mut cfg = source_config(&db.url, &["public.alltypes"]);
    cfg.binary = binary;
    let mut src = start_source(&cfg, small_batches(), false, Vec::new()).await;

    let names: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
    for (id, values) in rows() {
        assert_eq!(values.len(), COLUMNS.len(), "row {id}");
        db.client
            .batch_execute(&format!(
                "INSERT INTO alltypes (id, {}) VALUES ({id}, {})",
                names.join(", "),
                values.join(", ")
            ))
            .await
            .unwrap_or_else(|e| panic!("insert row {id}: {e}"));
    }
    let after_insert = expected(&db).await;
    db.client
        .batch_execute(
            "UPDATE alltypes SET c_text = 'changed', c_int4 = c_int4 + 1, c_tstz = '1970-01-01 00:00:00+00',
                                 c_int4_arr = '{9}', c_num_free = '-0.000' WHERE id = 1",
        )
        .await
        .unwrap();
    let after_update = expected(&db).await;
    db.client
        .batch_execute("DELETE FROM alltypes WHERE id = 3")
        .await
        .unwrap();

    let n = rows().len() + 2;
    let decoded = collect_rows(&mut src, n, Duration::from_secs(120), false).await;
    src.stop.cancel();
    let _ = src.task.await;

    let mut mismatches = Vec::new();
    let mut seen = HashMap::new();
    for row in &decoded {
        assert_eq!(row.table, "public.alltypes");
        let id = row
            .column("id")
            .as_primitive::<arrow::datatypes::Int32Type>()
            .value(row.index);
        *seen.entry((id, row.op)).or_insert(0) += 1;
        match row.op {
            'c' => check_row(row, &after_insert[&id], &mut mismatches),
            'u' => check_row(row, &after_update[&id], &mut mismatches),
            'd' => assert_eq!(id, 3),
            other => panic!("unexpected op {other}"),
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert_eq!(seen.len(), n, "one change each: {seen:?}");
    assert_eq!(seen.get(&(1, 'u')), Some(&1));
    assert_eq!(seen.get(&(3, 'd')), Some(&1));
    // Versions are WAL positions: increasing in the order changes were made.
    let versions: Vec<u64> = decoded.iter().map(|r| r.version).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
}

/// Random hex: does not compress, so 100 kB is stored out of line (TOASTed).
const RANDOM_100K: &str =
    "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 3200))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_is_marked_not_null() {
    let db = fresh_db("src_toast").await;
    db.client
        .batch_execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
        .await
        .unwrap();
    let cfg = source_config(&db.url, &["public.docs"]);
    let mut src = start_source(&cfg, small_batches(), false, Vec::new()).await;
    db.client
        .batch_execute(&format!("INSERT INTO docs VALUES (1, 't1', {RANDOM_100K})"))
        .await
        .unwrap();
    db.client
        .batch_execute("UPDATE docs SET title = 't2' WHERE id = 1")
        .await
        .unwrap();
    let rows = collect_rows(&mut src, 2, Duration::from_secs(60), false).await;
    src.stop.cancel();
    let _ = src.task.await;
    let insert = &rows[0];
    assert_eq!(insert.op, 'c');
    let body = insert.column("body");
    assert_eq!(body.as_string::<i32>().value(insert.index).len(), 102_400);
    let update = &rows[1];
    assert_eq!(update.op, 'u');
    assert_eq!(
        update.unchanged,
        vec!["body".to_string()],
        "body is marked unchanged"
    );
    assert!(
        update.column("body").is_null(update.index),
        "no value was sent for it"
    );
    assert_eq!(
        update
            .column("title")
            .as_string::<i32>()
            .value(update.index),
        "t2"
    );
    assert!(insert.unchanged.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_full_updates_carry_the_old_row() {
    let db = fresh_db("src_before").await;
    db.client
        .batch_execute(
            "CREATE TABLE acct (id int PRIMARY KEY, owner text, balance int, note text);
             ALTER TABLE acct REPLICA IDENTITY FULL;
             CREATE TABLE plain (id int PRIMARY KEY, v int);",
        )
        .await
        .unwrap();
    let cfg = source_config(&db.url, &["public.acct", "public.plain"]);
    let mut src = start_source(&cfg, small_batches(), false, Vec::new()).await;
    db.client
        .batch_execute(&format!(
            "INSERT INTO acct VALUES (1, 'ann', 10, {RANDOM_100K});
             UPDATE acct SET balance = 20, owner = NULL WHERE id = 1;
             DELETE FROM acct WHERE id = 1;
             INSERT INTO plain VALUES (1, 1);
             UPDATE plain SET v = 2;"
        ))
        .await
        .unwrap();
    let rows = collect_rows(&mut src, 5, Duration::from_secs(60), false).await;
    src.stop.cancel();
    let _ = src.task.await;
    let before = |r: &Row| {
        r.batch
            .batch
            .column_by_name("_before")
            .map(|c| c.as_struct().clone())
    };
    let acct: Vec<&Row> = rows.iter().filter(|r| r.table == "public.acct").collect();
    let by_op = |op: char| *acct.iter().rfind(|r| r.op == op).unwrap();
    let (ins, upd, del) = (by_op('c'), by_op('u'), by_op('d'));
    assert!(
        before(ins).unwrap().is_null(ins.index),
        "an insert has no old row"
    );
    assert!(
        before(del).unwrap().is_null(del.index),
        "a delete's old row is the row itself"
    );
    let b = before(upd).unwrap();
    assert!(
        b.is_valid(upd.index),
        "an update under FULL carries its old row"
    );
    let old_balance = b
        .column_by_name("balance")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int32Type>();
    assert_eq!(old_balance.value(upd.index), 10);
    let old_owner = b.column_by_name("owner").unwrap();
    assert_eq!(old_owner.as_string::<i32>().value(upd.index), "ann");
    // The old row has the unchanged TOAST value too (FULL logs it whole).
    let old_note = b.column_by_name("note").unwrap();
    assert_eq!(old_note.as_string::<i32>().value(upd.index).len(), 102_400);
    assert!(
        upd.column("owner").is_null(upd.index),
        "the new row's NULL stays NULL"
    );
    // A table under the default identity has no _before column at all.
    let plain = rows.iter().find(|r| r.table == "public.plain").unwrap();
    assert!(before(plain).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_transactions_commit_abort_and_roll_back_savepoints() {
    let db = fresh_db("src_stream").await;
    db.client
        .batch_execute("CREATE TABLE ev (id int PRIMARY KEY, pad text)")
        .await
        .unwrap();
    let cfg = source_config(&db.url, &["public.ev"]);
    // A tiny decoding budget makes the server stream these transactions.
    let startup = vec![(
        "options".to_string(),
        "-c logical_decoding_work_mem=64kB".to_string(),
    )];
    let mut src = start_source(&cfg, small_batches(), false, startup).await;
    let pad = "repeat('p', 200)";
    // Aborted as a whole.
    db.client
        .batch_execute(&format!(
            "BEGIN; INSERT INTO ev SELECT g, {pad} FROM generate_series(1, 3000) g; ROLLBACK;"
        ))
        .await
        .unwrap();
    // Committed, with a rolled-back savepoint in the middle.
    db.client
        .batch_execute(&format!(
            "BEGIN;
             INSERT INTO ev SELECT g, {pad} FROM generate_series(10001, 12000) g;
             SAVEPOINT s1;
             INSERT INTO ev SELECT g, {pad} FROM generate_series(20001, 22000) g;
             ROLLBACK TO SAVEPOINT s1;
             INSERT INTO ev SELECT g, {pad} FROM generate_series(30001, 31000) g;
             COMMIT;"
        ))
        .await
        .unwrap();
    // A marker so we know everything before it was seen.
    db.client
        .batch_execute("INSERT INTO ev VALUES (99999, 'end')")
        .await
        .unwrap();
    let rows = collect_rows(&mut src, 3001, Duration::from_secs(120), false).await;
    src.stop.cancel();
    let _ = src.task.await;
    let ids: Vec<i32> = rows
        .iter()
        .map(|r| {
            r.column("id")
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(r.index)
        })
        .collect();
    let expected: Vec<i32> = (10001..=12000)
        .chain(30001..=31000)
        .chain([99999])
        .collect();
    assert_eq!(ids.len(), expected.len());
    assert_eq!(
        ids, expected,
        "aborted transaction and rolled-back savepoint leave no trace"
    );
    // All rows of the streamed transaction carry its commit LSN.
    let lsns: std::collections::HashSet<u64> = rows[..3000].iter().map(|r| r.lsn).collect();
    assert_eq!(lsns.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_without_a_binary_decoder_arrive_as_text() {
    let db = fresh_db("src_textonly").await;
    db.client
        .batch_execute(
            "CREATE TABLE shapes (id int PRIMARY KEY, r int4range, p point, rs int4range[], n int)",
        )
        .await
        .unwrap();
    // binary = true in the config: sluice notices the range and point
    // columns and streams this publication in text format instead.
    let cfg = source_config(&db.url, &["public.shapes"]);
    assert!(cfg.binary);
    let mut src = start_source(&cfg, small_batches(), false, Vec::new()).await;
    db.client
        .batch_execute(
            "INSERT INTO shapes VALUES (1, '[1,5)', '(1.5,2)', '{\"[1,2)\",empty}', 7), (2, NULL, NULL, NULL, NULL)",
        )
        .await
        .unwrap();
    let rows = collect_rows(&mut src, 2, Duration::from_secs(60), false).await;
    src.stop.cancel();
    let _ = src.task.await;
    let expected = crate::support::e2e::pg_tsv(
        &db.client,
        "SELECT r::text, p::text, rs::text, n::text FROM shapes ORDER BY id",
    )
    .await;
    for (row, want) in rows.iter().zip(expected) {
        let got: Vec<String> = ["r", "p", "rs", "n"]
            .iter()
            .map(|c| {
                let a = row.column(c);
                if a.is_null(row.index) {
                    "\\N".to_string()
                } else if let DataType::List(_) = a.data_type() {
                    // text[] elements: compare as PostgreSQL's array text.
                    let items = a.as_list::<i32>().value(row.index);
                    let s = items.as_string::<i32>();
                    let parts: Vec<String> = (0..s.len())
                        .map(|i| format!("\"{}\"", s.value(i)))
                        .collect();
                    format!("{{{}}}", parts.join(","))
                } else {
                    render(&a, row.index).unwrap()
                }
            })
            .collect();
        let want: Vec<String> = want.split('\t').map(|v| v.to_string()).collect();
        assert_eq!(got[0], want[0], "int4range as text");
        assert_eq!(got[1], want[1], "point as text");
        assert_eq!(got[3], want[3], "int");
        if want[2] != "\\N" {
            assert_eq!(got[2], "{\"[1,2)\",\"empty\"}", "range[] elements as text");
        }
    }
}
