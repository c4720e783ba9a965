//! ClickHouse sink against a real ClickHouse HTTP endpoint (in development the
//! chDB front `scripts/chdb_http.py`). The server comes from the shared test
//! support (`SLUICE_TEST_CLICKHOUSE_URL` or scripts/services.sh); when it
//! cannot be reached these tests fail, naming it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Decimal256Array,
    FixedSizeBinaryArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    IntervalMonthDayNanoArray, ListArray, ListBuilder, StringArray, Time64MicrosecondArray,
    TimestampMicrosecondArray, UInt16Builder, UInt32Array, UInt64Array, UInt8Array,
};
use arrow::datatypes::{
    i256, DataType, Field, Int32Type, IntervalMonthDayNano, IntervalUnit, Schema, TimeUnit,
};
use arrow::record_batch::RecordBatch;
use serde_json::{json, Value};
use sluice::config::{
    ClickHouseSinkConfig, DropColumnMode, JsonType, NoKeyMode, TableName, TruncateMode,
};
use sluice::core::meta::meta_fields;
use sluice::core::{Classify, ColumnInfo, LogicalType, SinkItem, TableBatch, TableShape};
use sluice::secret::Secret;
use sluice::sink::clickhouse::{quote_ch_ident, ClickHouseSink};
use sluice::sink::Sink;

fn url() -> String {
    crate::support::servers().clickhouse_url.clone()
}

async fn config() -> ClickHouseSinkConfig {
    let url = url();
    let db = format!("sluice_test_{:016x}", rand::random::<u64>());
    let cfg = ClickHouseSinkConfig {
        url: url.clone(),
        database: db,
        user: "default".into(),
        password: Secret::new(""),
        ssl_root_cert: None,
        table_names: BTreeMap::new(),
        on_truncate: TruncateMode::Truncate,
        on_drop_column: DropColumnMode::Keep,
        json_type: JsonType::String,
        tables_without_key: NoKeyMode::Multiset,
    };
    if let Err(e) = sluice::sink::clickhouse::server_version(&cfg).await {
        panic!("the test ClickHouse server at {url} is not reachable: {e}");
    }
    cfg
}

/// Rows of `SELECT ... FORMAT JSONEachRow`.
async fn rows(cfg: &ClickHouseSinkConfig, sql: &str) -> Vec<Value> {
    let body = sluice::sink::clickhouse::client(cfg)
        .unwrap()
        .query_raw(sql)
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .with_setting("output_format_json_quote_decimals", "0")
        .with_setting("output_format_json_quote_denormals", "1")
        .fetch_bytes("JSONEachRow")
        .unwrap()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// Live rows of a table (FINAL, deletes hidden), metadata columns left out.
async fn live(cfg: &ClickHouseSinkConfig, table: &str, order: &str) -> Vec<Value> {
    rows(
        cfg,
        &format!(
            "SELECT * EXCEPT (_synced_at, _version, _lsn, _is_deleted) FROM {}.{} FINAL WHERE _is_deleted = 0 ORDER BY {order}",
            quote_ch_ident(&cfg.database),
            quote_ch_ident(table)
        ),
    )
    .await
}

async fn column_types(cfg: &ClickHouseSinkConfig, table: &str) -> Vec<(String, String)> {
    rows(
        cfg,
        &format!(
            "SELECT name, type FROM system.columns WHERE database = '{}' AND table = '{}' ORDER BY position",
            cfg.database,
            table.replace('\\', "\\\\").replace('\'', "\\'")
        ),
    )
    .await
    .into_iter()
    .map(|v| {
        (
            v["name"].as_str().unwrap().to_string(),
            v["type"].as_str().unwrap().to_string(),
        )
    })
    .collect()
}

async fn drop_db(cfg: &ClickHouseSinkConfig) {
    sluice::sink::clickhouse::client(cfg)
        .unwrap()
        .query_raw(&format!(
            "DROP DATABASE IF EXISTS {}",
            quote_ch_ident(&cfg.database)
        ))
        .execute()
        .await
        .unwrap();
}

/// A column as the PostgreSQL source describes it (JSON types by name).
fn col(name: &str, pg_type: &str, dt: DataType, is_key: bool, nullable: bool) -> ColumnInfo {
    let logical = match pg_type {
        "json" | "jsonb" => LogicalType::Json,
        _ => LogicalType::from_arrow(&dt),
    };
    ColumnInfo {
        name: name.into(),
        source_type: pg_type.into(),
        logical,
        data_type: dt,
        is_key,
        nullable,
        added_default: Default::default(),
    }
}

fn shape(schema: &str, name: &str, columns: Vec<ColumnInfo>) -> Arc<TableShape> {
    Arc::new(TableShape {
        table: TableName::new(schema, name),
        columns,
        before_images: false,
    })
}

/// One change's metadata: op, version, unchanged column indexes.
struct M(u8, u64, Option<Vec<u16>>);

fn ins(v: u64) -> M {
    M(b'c', v, None)
}
fn upd(v: u64) -> M {
    M(b'u', v, None)
}
fn del(v: u64) -> M {
    M(b'd', v, None)
}

fn batch(shape: &Arc<TableShape>, columns: Vec<ArrayRef>, meta: &[M]) -> SinkItem {
    let mut fields: Vec<Field> = shape
        .columns
        .iter()
        .map(|c| Field::new(&c.name, c.data_type.clone(), true))
        .collect();
    fields.extend(meta_fields());
    if shape.keyless() {
        fields.push(Field::new(sluice::core::meta::SEQ, DataType::UInt64, false));
    }
    let mut unchanged = ListBuilder::new(UInt16Builder::new())
        .with_field(Arc::new(Field::new_list_field(DataType::UInt16, false)));
    for m in meta {
        match &m.2 {
            Some(ix) => {
                for i in ix {
                    unchanged.values().append_value(*i);
                }
                unchanged.append(true);
            }
            None => unchanged.append(false),
        }
    }
    let mut cols = columns;
    cols.push(Arc::new(UInt8Array::from_iter_values(
        meta.iter().map(|m| m.0),
    )));
    cols.push(Arc::new(UInt64Array::from_iter_values(
        meta.iter().map(|m| m.1 >> 8),
    )));
    cols.push(Arc::new(UInt64Array::from_iter_values(
        meta.iter().map(|m| m.1),
    )));
    cols.push(Arc::new(UInt8Array::from_iter_values(
        meta.iter().map(|m| (m.0 == b'd') as u8),
    )));
    cols.push(Arc::new(
        TimestampMicrosecondArray::from_iter_values(meta.iter().map(|_| 1_700_000_000_000_000))
            .with_timezone("UTC"),
    ));
    cols.push(Arc::new(unchanged.finish()));
    if shape.keyless() {
        // Tests give every change its own version: a fine `_seq` too.
        cols.push(Arc::new(UInt64Array::from_iter_values(
            meta.iter().map(|m| m.1),
        )));
    }
    SinkItem::Rows(TableBatch {
        shape: shape.clone(),
        batch: RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap(),
    })
}

/// The items of one flush, in order.
fn flush(items: Vec<SinkItem>) -> Vec<SinkItem> {
    items
}

fn ints(v: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}
fn texts(v: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

fn kv_shape(schema: &str, name: &str) -> Arc<TableShape> {
    shape(
        schema,
        name,
        vec![
            col("id", "int8", DataType::Int64, true, false),
            col("v", "text", DataType::Utf8, false, true),
        ],
    )
}

#[tokio::test]
async fn every_type_round_trips() {
    let cfg = config().await;
    let mut sink = ClickHouseSink::connect(&cfg).await.unwrap();
    let list = |dt: DataType| DataType::List(Arc::new(Field::new("item", dt, true)));
    let mut enum_col = col("mood", "mood", DataType::Utf8, false, true);
    enum_col.logical = LogicalType::Enum;
    let s = shape(
        "public",
        "types",
        vec![
            col("id", "int4", DataType::Int32, true, false),
            col("i2", "int2", DataType::Int16, false, true),
            col("i8", "int8", DataType::Int64, false, false),
            col("o", "oid", DataType::UInt32, false, true),
            col("f4", "float4", DataType::Float32, false, true),
            col("f8", "float8", DataType::Float64, false, true),
            col("d", "numeric", DataType::Decimal128(10, 2), false, true),
            col("d256", "numeric", DataType::Decimal256(50, 5), false, true),
            col("n", "numeric", DataType::Utf8, false, true),
            col("b", "bool", DataType::Boolean, false, true),
            col("t", "text", DataType::Utf8, false, true),
            col("j", "jsonb", DataType::Utf8, false, true),
            enum_col,
            col("by", "bytea", DataType::Binary, false, true),
            col("u", "uuid", DataType::FixedSizeBinary(16), false, true),
            col("dt", "date", DataType::Date32, false, true),
            col(
                "tm",
                "time",
                DataType::Time64(TimeUnit::Microsecond),
                false,
                true,
            ),
            col(
                "ts",
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
                true,
            ),
            col(
                "tz",
                "timestamptz",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
                true,
            ),
            col(
                "iv",
                "interval",
                DataType::Interval(IntervalUnit::MonthDayNano),
                false,
                true,
            ),
            col("ai", "_int4", list(DataType::Int32), false, true),
            col("at", "_text", list(DataType::Utf8), false, false),
            col(
                "au",
                "_uuid",
                list(DataType::FixedSizeBinary(16)),
                false,
                true,
            ),
        ],
    );
    let uuid: [u8; 16] = [
        0x12, 0x34, 0x56, 0x78, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56,
        0x78,
    ];
    let ai = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1), None, Some(3)]),
        Some(vec![]),
        None,
    ]);
    let mut at = ListBuilder::new(arrow::array::StringBuilder::new());
    at.values().append_value("a'b");
    at.values().append_null();
    at.append(true);
    at.append(true);
    at.append(true);
    let mut au = ListBuilder::new(arrow::array::FixedSizeBinaryBuilder::new(16));
    au.values().append_value(uuid).unwrap();
    au.append(true);
    au.append(false);
    au.append(true);
    let iv = |months, days, micros: i64| IntervalMonthDayNano {
        months,
        days,
        nanoseconds: micros * 1000,
    };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![1, 2, 3])),
        Arc::new(Int16Array::from(vec![Some(i16::MIN), Some(i16::MAX), None])),
        ints(&[i64::MIN, i64::MAX, 0]),
        Arc::new(UInt32Array::from(vec![Some(u32::MAX), Some(0), None])),
        Arc::new(Float32Array::from(vec![
            Some(1.5),
            Some(f32::INFINITY),
            None,
        ])),
        Arc::new(Float64Array::from(vec![
            Some(-0.25),
            Some(f64::NEG_INFINITY),
            None,
        ])),
        Arc::new(
            Decimal128Array::from(vec![Some(1_234_567_899), Some(-1), None])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
        Arc::new(
            Decimal256Array::from(vec![
                Some(
                    i256::from_string("1234567890123456789012345678901234567890123456789").unwrap(),
                ),
                Some(i256::from_i128(-5)),
                None,
            ])
            .with_precision_and_scale(50, 5)
            .unwrap(),
        ),
        texts(&[
            Some("123456789012345678901234567890.123456789012345678901"),
            Some("NaN"),
            None,
        ]),
        Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
        texts(&[Some("héllo\t\"x\"\n'"), Some(""), None]),
        texts(&[Some(r#"{"a": [1, 2]}"#), Some("1"), None]),
        texts(&[Some("happy"), Some("sad"), None]),
        Arc::new(BinaryArray::from(vec![
            Some(&[0u8, 255, 10][..]),
            Some(&[][..]),
            None,
        ])),
        Arc::new(
            FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                vec![Some(uuid), None, Some([0u8; 16])].into_iter(),
                16,
            )
            .unwrap(),
        ),
        Arc::new(Date32Array::from(vec![
            Some(-1),
            Some(i32::MAX),
            Some(i32::MIN),
        ])),
        Arc::new(Time64MicrosecondArray::from(vec![
            Some(0),
            Some(86_400_000_000),
            Some(45_296_789_012),
        ])),
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(-1),
            Some(i64::MAX),
            Some(i64::MIN),
        ])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![
                Some(1_700_000_000_123_456),
                Some(i64::MAX),
                Some(-62_135_596_800_000_001 - 86_400_000_000 * 366),
            ])
            .with_timezone("UTC"),
        ),
        Arc::new(IntervalMonthDayNanoArray::from(vec![
            Some(iv(14, 3, 3_723_500_000)),
            Some(iv(0, 0, 0)),
            None,
        ])),
        Arc::new(ai),
        Arc::new(at.finish()),
        Arc::new(au.finish()),
    ];
    sink.apply(&flush(vec![batch(&s, cols, &[ins(10), ins(11), ins(12)])]))
        .await
        .unwrap();
    assert!(
        sink.failed_tables().is_empty(),
        "{:?}",
        sink.failed_tables()
    );

    let time = if sink.caps().time64 {
        "Nullable(Time64(6))"
    } else {
        "Nullable(Int64)"
    };
    let types = column_types(&cfg, "types").await;
    let expect = [
        ("id", "Int32"),
        ("i2", "Nullable(Int16)"),
        ("i8", "Int64"),
        ("o", "Nullable(UInt32)"),
        ("f4", "Nullable(Float32)"),
        ("f8", "Nullable(Float64)"),
        ("d", "Nullable(Decimal(10, 2))"),
        ("d256", "Nullable(Decimal(50, 5))"),
        ("n", "Nullable(String)"),
        ("b", "Nullable(Bool)"),
        ("t", "Nullable(String)"),
        ("j", "Nullable(String)"),
        ("mood", "LowCardinality(Nullable(String))"),
        ("by", "Nullable(String)"),
        ("u", "Nullable(UUID)"),
        ("dt", "Nullable(Date32)"),
        ("tm", time),
        ("ts", "Nullable(DateTime64(6, 'UTC'))"),
        ("tz", "Nullable(DateTime64(6, 'UTC'))"),
        ("iv", "Nullable(String)"),
        ("ai", "Array(Nullable(Int32))"),
        ("ai_is_null", "UInt8"),
        ("at", "Array(Nullable(String))"),
        ("au", "Array(Nullable(UUID))"),
        ("au_is_null", "UInt8"),
        ("_version", "UInt64"),
        ("_is_deleted", "UInt8"),
        ("_lsn", "UInt64"),
        ("_synced_at", "DateTime64(6, 'UTC')"),
    ];
    let expect: Vec<(String, String)> = expect
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(types, expect);

    let got = rows(
        &cfg,
        &format!(
            "SELECT * EXCEPT (_synced_at, _lsn, tm, by), hex(by) AS by_hex, toString(tm) AS tm_s \
             FROM {}.types FINAL WHERE _is_deleted = 0 ORDER BY id",
            quote_ch_ident(&cfg.database)
        ),
    )
    .await;
    let (tm0, tm1, tm2) = if sink.caps().time64 {
        (
            json!("00:00:00.000000"),
            json!("24:00:00.000000"),
            json!("12:34:56.789012"),
        )
    } else {
        (json!("0"), json!("86400000000"), json!("45296789012"))
    };
    let (dmax, dmin, tsmax, tsmin) = if sink.caps().date32_max > 200_000 {
        (
            "9999-12-31",
            "0001-01-01",
            "9999-12-31 23:59:59.999999",
            "0001-01-01 00:00:00.000000",
        )
    } else {
        (
            "2299-12-31",
            "1900-01-01",
            "2299-12-31 23:59:59.999999",
            "1900-01-01 00:00:00.000000",
        )
    };
    let expected = vec![
        json!({"id":1,"i2":-32768,"i8":i64::MIN,"o":4294967295u32,"f4":1.5,"f8":-0.25,
            "d":12345678.99,"d256":"x","n":"123456789012345678901234567890.123456789012345678901",
            "b":true,"t":"héllo\t\"x\"\n'","j":"{\"a\": [1, 2]}","mood":"happy",
            "u":"12345678-1234-5678-9abc-def012345678","dt":"1969-12-31",
            "ts":"1969-12-31 23:59:59.999999","tz":"2023-11-14 22:13:20.123456",
            "iv":"P1Y2M3DT1H2M3.5S","ai":[1,null,3],"ai_is_null":0,"at":["a'b",null],
            "au":["12345678-1234-5678-9abc-def012345678"],"au_is_null":0,
            "_version":10,"_is_deleted":0,"by_hex":"00FF0A","tm_s":tm0}),
        json!({"id":2,"i2":32767,"i8":i64::MAX,"o":0,"f4":"inf","f8":"-inf",
            "d":-0.01,"d256":"x","n":"NaN","b":false,"t":"","j":"1","mood":"sad",
            "u":null,"dt":dmax,"ts":tsmax,"tz":tsmax,"iv":"PT0S",
            "ai":[],"ai_is_null":0,"at":[],"au":[],"au_is_null":1,
            "_version":11,"_is_deleted":0,"by_hex":"","tm_s":tm1}),
        json!({"id":3,"i2":null,"i8":0,"o":null,"f4":null,"f8":null,"d":null,"d256":null,
            "n":null,"b":null,"t":null,"j":null,"mood":null,
            "u":"00000000-0000-0000-0000-000000000000","dt":dmin,"ts":tsmin,"tz":tsmin,
            "iv":null,"ai":[],"ai_is_null":1,"at":[],"au":[],"au_is_null":0,
            "_version":12,"_is_deleted":0,"by_hex":null,"tm_s":tm2}),
    ];
    for (g, e) in got.iter().zip(&expected) {
        for (k, ev) in e.as_object().unwrap() {
            if k == "d256" {
                continue;
            }
            assert_eq!(&g[k], ev, "row {} column {k}: {g}", e["id"]);
        }
    }
    assert_eq!(got.len(), 3);
    // Decimal(50, 5) exactly, as text.
    let d = rows(
        &cfg,
        &format!(
            "SELECT toString(d256) AS s FROM {}.types FINAL ORDER BY id",
            quote_ch_ident(&cfg.database)
        ),
    )
    .await;
    assert_eq!(
        d[0]["s"],
        "12345678901234567890123456789012345678901234.56789"
    );
    assert_eq!(d[1]["s"], "-0.00005");
    drop_db(&cfg).await;
}

#[tokio::test]
async fn upserts_deletes_and_replays() {
    let cfg = config().await;
    let mut sink = ClickHouseSink::connect(&cfg).await.unwrap();
    let s = kv_shape("public", "kv");
    let f1 = flush(vec![batch(
        &s,
        vec![ints(&[1, 2, 3]), texts(&[Some("a"), Some("b"), Some("c")])],
        &[ins(1), ins(2), ins(3)],
    )]);
    let f2 = flush(vec![batch(
        &s,
        vec![ints(&[1, 2, 1]), texts(&[Some("a2"), None, Some("a3")])],
        &[upd(10), del(11), upd(12)],
    )]);
    sink.apply(&f1).await.unwrap();
    sink.apply(&f2).await.unwrap();
    let want = vec![json!({"id":1,"v":"a3"}), json!({"id":3,"v":"c"})];
    assert_eq!(live(&cfg, "kv", "id").await, want);
    // Re-delivering both flushes (a restart before the checkpoint) changes nothing.
    let mut again = ClickHouseSink::connect(&cfg).await.unwrap();
    again.apply(&f1).await.unwrap();
    again.apply(&f2).await.unwrap();
    assert_eq!(live(&cfg, "kv", "id").await, want);
    // A primary key change arrives as delete(old) + insert(new).
    again
        .apply(&flush(vec![batch(
            &s,
            vec![ints(&[3, 30]), texts(&[None, Some("c")])],
            &[del(20), ins(21)],
        )]))
        .await
        .unwrap();
    assert_eq!(
        live(&cfg, "kv", "id").await,
        vec![json!({"id":1,"v":"a3"}), json!({"id":30,"v":"c"})]
    );
    drop_db(&cfg).await;
}

#[tokio::test]
async fn unchanged_toast_is_filled() {
    let cfg = config().await;
    let mut sink = ClickHouseSink::connect(&cfg).await.unwrap();
    let s = shape(
        "public",
        "docs",
        vec![
            col("id", "int8", DataType::Int64, true, false),
            col("title", "text", DataType::Utf8, false, true),
            col("body", "text", DataType::Utf8, false, false),
            col(
                "tags",
                "_text",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
                true,
            ),
        ],
    );
    let tags = |v: Vec<Option<Vec<Option<&str>>>>| -> ArrayRef {
        let mut b = ListBuilder::new(arrow::array::StringBuilder::new());
        for r in v {
            match r {
                Some(items) => {
                    for i in items {
                        b.values().append_option(i);
                    }
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        Arc::new(b.finish())
    };
    let big = "x".repeat(5000);
    sink.apply(&flush(vec![batch(
        &s,
        vec![
            ints(&[1, 2]),
            texts(&[Some("t1"), Some("t2")]),
            texts(&[Some(&big), Some("body2")]),
            tags(vec![Some(vec![Some("a"), None]), None]),
        ],
        &[ins(1), ins(2)],
    )]))
    .await
    .unwrap();
    // Key 1: body and tags unchanged -> from ClickHouse; then again in the
    // same batch -> from the earlier row. Key 3: inserted, then updated with
    // body unchanged in the same batch. Key 2: tags (NULL) unchanged.
    sink.apply(&flush(vec![batch(
        &s,
        vec![
            ints(&[1, 3, 1, 3, 2]),
            texts(&[
                Some("t1b"),
                Some("t3"),
                Some("t1c"),
                Some("t3b"),
                Some("t2b"),
            ]),
            texts(&[None, Some("body3"), None, None, Some("body2b")]),
            tags(vec![None, Some(vec![]), None, None, None]),
        ],
        &[
            M(b'u', 10, Some(vec![2, 3])),
            ins(11),
            M(b'u', 12, Some(vec![2, 3])),
            M(b'u', 13, Some(vec![2, 3])),
            M(b'u', 14, Some(vec![3])),
        ],
    )]))
    .await
    .unwrap();
    assert!(
        sink.failed_tables().is_empty(),
        "{:?}",
        sink.failed_tables()
    );
    let got = live(&cfg, "docs", "id").await;
    assert_eq!(
        got,
        vec![
            json!({"id":1,"title":"t1c","body":big,"tags":["a",null],"tags_is_null":0}),
            json!({"id":2,"title":"t2b","body":"body2b","tags":[],"tags_is_null":1}),
            json!({"id":3,"title":"t3b","body":"body3","tags":[],"tags_is_null":0}),
        ]
    );
    // Every version of key 1 carries the value, not only the last.
    let all = rows(
        &cfg,
        &format!(
            "SELECT length(body) AS n FROM {}.docs WHERE id = 1 ORDER BY _version",
            quote_ch_ident(&cfg.database)
        ),
    )
    .await;
    assert!(all.iter().all(|r| r["n"] == 5000), "{all:?}");
    // A key ClickHouse never saw: the value cannot be recovered; the table stops.
    sink.apply(&flush(vec![batch(
        &s,
        vec![
            ints(&[9]),
            texts(&[Some("t9")]),
            texts(&[None]),
            tags(vec![None]),
        ],
        &[M(b'u', 20, Some(vec![2]))],
    )]))
    .await
    .unwrap();
    let reason = &sink.failed_tables()[&TableName::new("public", "docs")];
    assert!(reason.contains("\"body\""), "{reason}");
    drop_db(&cfg).await;
}

#[tokio::test]
async fn truncate_modes() {
    let mut cfg = config().await;
    let mut sink = ClickHouseSink::connect(&cfg).await.unwrap();
    let s = kv_shape("public", "tr");
    let t = TableName::new("public", "tr");
    sink.apply(&flush(vec![
        batch(&s, vec![ints(&[1]), texts(&[Some("a")])], &[ins(1)]),
        SinkItem::Truncate(vec![t.clone()], Default::default()),
        batch(&s, vec![ints(&[2]), texts(&[Some("b")])], &[ins(2)]),
    ]))
    .await
    .unwrap();
    assert_eq!(live(&cfg, "tr", "id").await, vec![json!({"id":2,"v":"b"})]);
    cfg.on_truncate = TruncateMode::Ignore;
    let mut sink = ClickHouseSink::connect(&cfg).await.unwrap();
    sink.apply(&flush(vec![SinkItem::Truncate(
        vec![t.clone()],
        Default::default(),
    )]))
    .await
    .unwrap();
    assert_eq!(live(&cfg, "tr", "id").await, vec![json!({"id":2,"v":"b"})]);
    drop_db(&cfg).await;
}

#[tokio::test]
async fn columns_added_dropped_and_changed() {
    let mut cfg = config().await;
    let mut sink = ClickHouseSink::connect(&cfg).await.unwrap();
    let s1 = shape(
        "public",
        "evo",
        vec![
            col("id", "int8", DataType::Int64, true, false),
            col("a", "text", DataType::Utf8, false, true),
            col("n", "int4", DataType::Int32, false, true),
        ],
    );
    let other = kv_shape("public", "other");
    sink.apply(&flush(vec![batch(
        &s1,
        vec![
            ints(&[1]),
            texts(&[Some("a1")]),
            Arc::new(Int32Array::from(vec![5])),
        ],
        &[ins(1)],
    )]))
    .await
    .unwrap();
    // ADD COLUMN b, DROP COLUMN a (kept: on_drop_column = keep), int4 -> int8 widening.
    let s2 = shape(
        "public",
        "evo",
        vec![
            col("id", "int8", DataType::Int64, true, false),
            col("n", "int8", DataType::Int64, false, true),
            col(
                "b",
                "_int4",
                DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
                false,
                true,
            ),
        ],
    );
    let b = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(7)])]);
    sink.apply(&flush(vec![batch(
        &s2,
        vec![ints(&[2]), ints(&[1 << 40]), Arc::new(b)],
        &[ins(2)],
    )]))
    .await
    .unwrap();
    assert_eq!(
        live(&cfg, "evo", "id").await,
        vec![
            json!({"id":1,"a":"a1","n":5,"b":[],"b_is_null":0}),
            json!({"id":2,"a":null,"n":1i64 << 40,"b":[7],"b_is_null":0}),
        ]
    );
    // on_drop_column = drop: `a` goes, metadata columns stay.
    cfg.on_drop_column = DropColumnMode::Drop;
    let mut sink = ClickHouseSink::connect(&cfg).await.unwrap();
    let b = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![None::<Vec<Option<i32>>>]);
    sink.apply(&flush(vec![batch(
        &s2,
        vec![ints(&[3]), ints(&[3]), Arc::new(b)],
        &[ins(3)],
    )]))
    .await
    .unwrap();
    let names: Vec<String> = column_types(&cfg, "evo")
        .await
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(
        names,
        [
            "id",
            "n",
            "_version",
            "_is_deleted",
            "_lsn",
            "_synced_at",
            "b",
            "b_is_null"
        ]
    );
    // int8 -> text widens (MODIFY to String); a String column then takes
    // ints as text; an array becoming a scalar cannot be followed: that table
    // stops, the others go on.
    let list_b = || {
        col(
            "b",
            "_int4",
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
            false,
            true,
        )
    };
    let s3 = shape(
        "public",
        "evo",
        vec![
            col("id", "int8", DataType::Int64, true, false),
            col("n", "text", DataType::Utf8, false, true),
            list_b(),
        ],
    );
    let s4 = shape(
        "public",
        "evo",
        vec![
            col("id", "int8", DataType::Int64, true, false),
            col("n", "int8", DataType::Int64, false, true),
            list_b(),
        ],
    );
    let s5 = shape(
        "public",
        "evo",
        vec![
            col("id", "int8", DataType::Int64, true, false),
            col("n", "int8", DataType::Int64, false, true),
            col("b", "int4", DataType::Int32, false, true),
        ],
    );
    let nb = || -> ArrayRef {
        Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            None::<Vec<Option<i32>>>,
        ]))
    };
    sink.apply(&flush(vec![
        batch(&s3, vec![ints(&[4]), texts(&[Some("x")]), nb()], &[ins(4)]),
        batch(&s4, vec![ints(&[5]), ints(&[6]), nb()], &[ins(5)]),
        batch(
            &s5,
            vec![ints(&[6]), ints(&[7]), Arc::new(Int32Array::from(vec![1]))],
            &[ins(6)],
        ),
        batch(&s4, vec![ints(&[7]), ints(&[8]), nb()], &[ins(7)]),
        batch(
            &other,
            vec![ints(&[1]), texts(&[Some("still here")])],
            &[ins(8)],
        ),
    ]))
    .await
    .unwrap();
    let failed = sink.failed_tables();
    let reason = &failed[&TableName::new("public", "evo")];
    assert!(reason.contains("column \"b\" changed type"), "{reason}");
    assert_eq!(
        live(&cfg, "other", "id").await,
        vec![json!({"id":1,"v":"still here"})]
    );
    let evo = live(&cfg, "evo", "id").await;
    let n: Vec<&Value> = evo.iter().map(|r| &r["n"]).collect();
    assert_eq!(
        n,
        [
            &json!("5"),
            &json!("1099511627776"),
            &json!("3"),
            &json!("x"),
            &json!("6")
        ]
    );
    drop_db(&cfg).await;
}

#[tokio::test]
async fn odd_identifiers_in_a_non_public_schema() {
    let cfg = config().await;
    let mut sink = ClickHouseSink::connect(&cfg).await.unwrap();
    let s = shape(
        "My Schema",
        "Odd.Table \"x\"",
        vec![
            col("Key Col", "int8", DataType::Int64, true, false),
            col("a.b", "text", DataType::Utf8, true, false),
            col("it's `q`", "text", DataType::Utf8, false, true),
        ],
    );
    sink.apply(&flush(vec![batch(
        &s,
        vec![
            ints(&[1, 1]),
            texts(&[Some("k"), Some("k")]),
            texts(&[Some("v1"), None]),
        ],
        &[ins(1), M(b'u', 2, Some(vec![2]))],
    )]))
    .await
    .unwrap();
    assert!(
        sink.failed_tables().is_empty(),
        "{:?}",
        sink.failed_tables()
    );
    let table = cfg.target_table(&s.table);
    assert_eq!(table, "My Schema_Odd.Table \"x\"");
    assert_eq!(
        live(&cfg, &table, "`Key Col`").await,
        vec![json!({"Key Col":1,"a.b":"k","it's `q`":"v1"})]
    );
    // A second sink sees the existing table and reconciles without changes.
    let mut again = ClickHouseSink::connect(&cfg).await.unwrap();
    again
        .apply(&flush(vec![batch(
            &s,
            vec![ints(&[1]), texts(&[Some("k")]), texts(&[None])],
            &[M(b'u', 3, Some(vec![2]))],
        )]))
        .await
        .unwrap();
    assert!(
        again.failed_tables().is_empty(),
        "{:?}",
        again.failed_tables()
    );
    assert_eq!(
        live(&cfg, &table, "`Key Col`").await,
        vec![json!({"Key Col":1,"a.b":"k","it's `q`":"v1"})]
    );
    drop_db(&cfg).await;
}

#[tokio::test]
async fn tables_without_key() {
    let mut cfg = config().await;
    let s = shape(
        "public",
        "nokey",
        vec![
            col("a", "int4", DataType::Int32, false, true),
            col("b", "text", DataType::Utf8, false, true),
        ],
    );
    let f = |a: Vec<Option<i32>>, b: &[Option<&str>], m: &[M]| {
        flush(vec![batch(
            &s,
            vec![Arc::new(Int32Array::from(a)), texts(b)],
            m,
        )])
    };
    let inserts = f(
        vec![Some(1), Some(1), None],
        &[Some("x"), Some("x"), Some("y")],
        &[ins(1), ins(2), ins(3)],
    );
    let delete = f(vec![None], &[Some("y")], &[del(4)]);
    // multiset: duplicates stay, NULL stays NULL, a delete removes one copy,
    // a replayed flush changes nothing.
    let mut sink = ClickHouseSink::connect(&cfg).await.unwrap();
    sink.apply(&inserts).await.unwrap();
    sink.apply(&delete).await.unwrap();
    let one_x = f(vec![Some(1)], &[Some("x")], &[del(5)]);
    sink.apply(&one_x).await.unwrap();
    sink.apply(&inserts).await.unwrap();
    let view = |cfg: &ClickHouseSinkConfig| {
        format!(
            "SELECT * FROM {}.nokey_live ORDER BY a, b",
            quote_ch_ident(&cfg.database)
        )
    };
    assert_eq!(rows(&cfg, &view(&cfg)).await, vec![json!({"a":1,"b":"x"})]);
    let more = f(
        vec![None, None, Some(1)],
        &[None, None, Some("x")],
        &[ins(6), ins(7), ins(8)],
    );
    sink.apply(&more).await.unwrap();
    sink.apply(&more).await.unwrap();
    assert_eq!(
        rows(&cfg, &view(&cfg)).await,
        vec![
            json!({"a":1,"b":"x"}),
            json!({"a":1,"b":"x"}),
            json!({"a":null,"b":null}),
            json!({"a":null,"b":null}),
        ]
    );
    // append_only: every change is a row, with its _op.
    cfg.tables_without_key = NoKeyMode::AppendOnly;
    cfg.table_names
        .insert(TableName::new("public", "nokey"), "nokey_log".into());
    let mut sink = ClickHouseSink::connect(&cfg).await.unwrap();
    sink.apply(&inserts).await.unwrap();
    sink.apply(&delete).await.unwrap();
    let got = rows(
        &cfg,
        &format!(
            "SELECT a, b, _op, _is_deleted FROM {}.nokey_log ORDER BY _version",
            quote_ch_ident(&cfg.database)
        ),
    )
    .await;
    assert_eq!(
        got,
        vec![
            json!({"a":1,"b":"x","_op":"c","_is_deleted":0}),
            json!({"a":1,"b":"x","_op":"c","_is_deleted":0}),
            json!({"a":null,"b":"y","_op":"c","_is_deleted":0}),
            json!({"a":null,"b":"y","_op":"d","_is_deleted":1}),
        ]
    );
    drop_db(&cfg).await;
}

#[tokio::test]
async fn jsonb_as_json_type() {
    let mut cfg = config().await;
    cfg.json_type = JsonType::Json;
    let mut sink = ClickHouseSink::connect(&cfg).await.unwrap();
    let s = shape(
        "public",
        "js",
        vec![
            col("id", "int8", DataType::Int64, true, false),
            col("doc", "jsonb", DataType::Utf8, false, false),
            col("opt", "json", DataType::Utf8, false, true),
        ],
    );
    sink.apply(&flush(vec![batch(
        &s,
        vec![
            ints(&[1, 2, 2]),
            texts(&[Some(r#"{"a":{"b":1}}"#), Some(r#"{"c":"d"}"#), None]),
            texts(&[None, Some(r#"{"x":[1,2]}"#), None]),
        ],
        &[ins(1), ins(2), del(3)],
    )]))
    .await
    .unwrap();
    let types = column_types(&cfg, "js").await;
    assert_eq!(types[1].1, "JSON");
    assert_eq!(types[2].1, "Nullable(JSON)");
    let got = live(&cfg, "js", "id").await;
    assert_eq!(got, vec![json!({"id":1,"doc":{"a":{"b":1}},"opt":null})]);
    drop_db(&cfg).await;
}

#[tokio::test]
async fn rejected_insert_is_a_fatal_error() {
    let mut cfg = config().await;
    cfg.json_type = JsonType::Json;
    let mut sink = ClickHouseSink::connect(&cfg).await.unwrap();
    let s = shape(
        "public",
        "bad",
        vec![
            col("id", "int8", DataType::Int64, true, false),
            col("doc", "jsonb", DataType::Utf8, false, false),
        ],
    );
    // ClickHouse's JSON type stores objects only.
    let err = sink
        .apply(&flush(vec![batch(
            &s,
            vec![ints(&[1]), texts(&[Some("[1, 2]")])],
            &[ins(1)],
        )]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("Code: "), "{err}");
    drop_db(&cfg).await;
}
