//! Reconcile for hard deletes (docs/polling.md, "Reconcile for hard
//! deletes"): between two polls, once every row emitted so far is durable,
//! the sink's live keys are read a chunk at a time, the source is asked
//! which of them still exist, and the missing ones become delete rows that
//! go through the normal flush/commit path. The position never changes: a
//! crash restarts the round, which only repeats deletes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{new_null_array, Array, ArrayRef, FixedSizeBinaryArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use tokio::sync::watch;

use super::{Emitter, PollPosition, Poller};
use crate::config::poll::Reconcile;
use crate::config::{quote_ident, TableName};
use crate::core::meta::{batch_schema, MetaBuilder, RowMeta, OP_DELETE};
use crate::core::{Classify, ColumnInfo, ErrorClass, SinkItem, TableBatch, TableShape};
use crate::metrics as m;
use crate::sink::KeyReader;
use crate::source::SourceError;

/// The version of a delete row: one above the key's latest version in the
/// sink, so it wins there by version alone (not by insertion order), and
/// the sink's own live-key query sees the key as deleted afterwards.
pub fn delete_version(latest: u64) -> u64 {
    latest.saturating_add(1)
}

/// What `sluice check` says about a table's hard deletes.
pub fn hard_delete_note(r: Option<Reconcile>) -> String {
    match r {
        None => "hard deletes are invisible to polling (use a soft-delete column and `deleted`, or set reconcile_interval)".into(),
        Some(r) => format!(
            "hard deletes are found by a reconcile every {:?} ({} keys per chunk)",
            r.interval, r.chunk
        ),
    }
}

/// How a key column's text (as the sink returns it) is cast in the
/// source's SQL; the key types whose text form is exact both ways.
pub fn pg_key_cast(c: &ColumnInfo) -> Result<&'static str, String> {
    match (&c.data_type, c.source_type.as_str()) {
        (DataType::Int16, _) => Ok("int2"),
        (DataType::Int32, _) => Ok("int4"),
        (DataType::Int64, _) => Ok("int8"),
        (DataType::Utf8, "text" | "varchar") => Ok("text"),
        (DataType::FixedSizeBinary(16), "uuid") => Ok("uuid"),
        _ => Err(format!(
            "reconcile_interval: key column \"{}\" is {}; reconcile supports keys of smallint, integer, bigint, text, varchar and uuid columns (remove reconcile_interval, or key the table by such columns)",
            c.name, c.source_type
        )),
    }
}

/// The source query of one chunk: which of the given keys (one text array
/// per key column, `$1`...) still exist, as their 1-based positions. An
/// equality lookup, not a range scan: the sink's key order (bytes) need
/// not agree with the source's (collations).
pub fn pg_exists_sql(table: &TableName, key: &[String], casts: &[&str]) -> String {
    let n = key.len();
    let params: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
    let names: Vec<String> = (1..=n).map(|i| format!("k{i}")).collect();
    let cond: Vec<String> = key
        .iter()
        .zip(casts)
        .enumerate()
        .map(|(i, (k, cast))| format!("t.{} = k.k{}::{cast}", quote_ident(k), i + 1))
        .collect();
    format!(
        "SELECT k.i::int8 FROM unnest({}) WITH ORDINALITY AS k({}, i) \
         WHERE EXISTS (SELECT 1 FROM {} t WHERE {})",
        params.join(", "),
        names.join(", "),
        table.quoted(),
        cond.join(" AND ")
    )
}

/// Whether a polled ClickHouse key column can be reconciled: types whose
/// text form (`toString`) is the same in the source and in the sink, so
/// that the keys found in the source are matched by their text.
pub fn ch_key_supported(name: &str, ch_type: &str) -> Result<(), String> {
    const TYPES: [&str; 10] = [
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "UInt8",
        "UInt16",
        "UInt32",
        "UInt64",
        "String",
        "LowCardinality(String)",
    ];
    if TYPES.contains(&ch_type) {
        Ok(())
    } else {
        Err(format!(
            "reconcile_interval: key column \"{name}\" is {ch_type}; reconcile supports keys of (U)Int8..64 and String columns (remove reconcile_interval, or key the table by such columns)"
        ))
    }
}

/// The ClickHouse source query of one chunk: which of the given keys
/// still exist, as their text. `columns` are quoted identifiers, `types`
/// their ClickHouse types; `quote` makes a string literal. The keys go in
/// as one array of strings per column (parsed much faster than a list of
/// `CAST` calls), cast to the columns' types in an `IN` subquery.
pub fn ch_exists_sql(
    table: &str,
    columns: &[String],
    types: &[String],
    keys: &[(Vec<String>, u64)],
    quote: impl Fn(&str) -> String,
) -> String {
    let arrays: Vec<String> = (0..columns.len())
        .map(|c| {
            let values: Vec<String> = keys.iter().map(|(k, _)| quote(&k[c])).collect();
            format!("[{}]", values.join(", "))
        })
        .collect();
    let casts: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("CAST(t.{}, {})", i + 1, quote(t)))
        .collect();
    let text: Vec<String> = columns.iter().map(|c| format!("toString({c})")).collect();
    format!(
        "SELECT DISTINCT {} FROM {table} WHERE ({}) IN (SELECT {} FROM (SELECT arrayJoin(arrayZip({})) AS t))",
        text.join(", "),
        columns.join(", "),
        casts.join(", "),
        arrays.join(", ")
    )
}

/// Delete rows for `keys` (text values in key order, with the sink's
/// latest version): the key columns set, the others NULL (the sink fills
/// defaults), `_op` `d`, `_is_deleted` 1.
pub fn delete_batch(
    shape: &Arc<TableShape>,
    keys: &[(Vec<String>, u64)],
    now: i64,
) -> Result<TableBatch, String> {
    let n = keys.len();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(shape.columns.len());
    let mut k = 0;
    for c in &shape.columns {
        if !c.is_key {
            arrays.push(new_null_array(&c.data_type, n));
            continue;
        }
        let text = keys.iter().map(|(v, _)| v[k].as_str());
        let bad = |v: &str| {
            format!(
                "key column \"{}\": the sink's value `{v}` is not a {}",
                c.name, c.source_type
            )
        };
        let a: ArrayRef = match &c.data_type {
            DataType::Utf8 => Arc::new(StringArray::from_iter_values(text)),
            DataType::FixedSizeBinary(16) => {
                let bytes = text
                    .map(|v| {
                        crate::source::postgres::types::net::uuid_from_text(v.as_bytes())
                            .map_err(|_| bad(v))
                    })
                    .collect::<Result<Vec<[u8; 16]>, _>>()?;
                Arc::new(
                    FixedSizeBinaryArray::try_from_iter(bytes.into_iter())
                        .map_err(|e| e.to_string())?,
                )
            }
            t if t.is_integer() => {
                let strings = StringArray::from_iter_values(text);
                // A value that does not parse becomes NULL: reported below.
                let a = cast(&strings, t).map_err(|e| e.to_string())?;
                if let Some(row) = (0..n).find(|r| a.is_null(*r)) {
                    return Err(bad(strings.value(row)));
                }
                a
            }
            other => {
                return Err(format!(
                    "key column \"{}\": {other} keys are not reconciled",
                    c.name
                ))
            }
        };
        arrays.push(a);
        k += 1;
    }
    let mut meta = MetaBuilder::with_capacity(n);
    for (_, v) in keys {
        let v = delete_version(*v);
        meta.append(
            RowMeta {
                op: OP_DELETE,
                lsn: v,
                version: v,
                commit_ts: now,
            },
            &[],
        );
    }
    arrays.extend(meta.finish());
    let batch = RecordBatch::try_new(batch_schema(shape), arrays).map_err(|e| e.to_string())?;
    Ok(TableBatch {
        shape: shape.clone(),
        batch,
    })
}

/// A round in progress over one table's keys.
#[derive(Debug)]
struct Round {
    /// The last key compared (the next chunk starts after it).
    after: Option<Vec<String>>,
    started: Instant,
    checked: u64,
    deleted: u64,
}

#[derive(Debug)]
struct TableState {
    cfg: Reconcile,
    due: Instant,
    round: Option<Round>,
}

/// Runs the reconcile rounds of a polled source's tables.
pub struct Reconciler {
    keys: Arc<dyn KeyReader>,
    /// By the poller's table index; `None`: reconcile off for that table.
    tables: Vec<Option<TableState>>,
    max_rows: usize,
    /// The table served first next time: turns rotate, so that a long
    /// round of one table does not starve the others of the budget.
    first: usize,
}

impl Reconciler {
    /// `None` when no table reconciles.
    pub fn new(
        keys: Option<Arc<dyn KeyReader>>,
        configs: &[Option<Reconcile>],
        max_rows: usize,
    ) -> Result<Option<Reconciler>, SourceError> {
        if configs.iter().all(Option::is_none) {
            return Ok(None);
        }
        let Some(keys) = keys else {
            return Err(SourceError::Unsupported(
                "reconcile_interval needs a sink that can list live keys ([sink.clickhouse])"
                    .into(),
            ));
        };
        let now = Instant::now();
        let tables = configs
            .iter()
            .map(|c| {
                c.map(|cfg| TableState {
                    cfg,
                    due: now + cfg.interval,
                    round: None,
                })
            })
            .collect();
        Ok(Some(Reconciler {
            keys,
            tables,
            max_rows: max_rows.max(1),
            first: 0,
        }))
    }

    fn any_due(&self, now: Instant) -> bool {
        self.tables
            .iter()
            .flatten()
            .any(|t| t.round.is_some() || t.due <= now)
    }

    /// Works on due rounds for up to `budget`, then returns (polling goes
    /// on; an unfinished round continues next time). False when the
    /// pipeline is gone or stopping.
    pub async fn run(
        &mut self,
        poller: &mut Poller,
        position: &PollPosition,
        acks: &mut watch::Receiver<PollPosition>,
        emit: &Emitter<'_>,
        budget: Duration,
    ) -> Result<bool, SourceError> {
        let started = Instant::now();
        if !self.any_due(started) {
            return Ok(true);
        }
        // Every row emitted so far must be durable before the sink's keys
        // are read: its versions are then the ones a delete must beat.
        if !wait_acked(acks, position, emit).await {
            return Ok(false);
        }
        let n = self.tables.len();
        let first = self.first;
        self.first = (first + 1) % n;
        for i in (first..n).chain(0..first) {
            let Some(t) = &mut self.tables[i] else {
                continue;
            };
            if t.round.is_none() {
                if t.due > Instant::now() {
                    continue;
                }
                t.round = Some(Round {
                    after: None,
                    started: Instant::now(),
                    checked: 0,
                    deleted: 0,
                });
            }
            let table = poller.table(i).clone();
            let key = poller.key_columns(i);
            while started.elapsed() < budget {
                if emit.stopping() {
                    return Ok(false);
                }
                let round = t.round.as_mut().expect("started above");
                let chunk = self
                    .keys
                    .live_keys(&table, &key, round.after.as_deref(), t.cfg.chunk)
                    .await
                    .map_err(|e| match e.class() {
                        // The sink cannot list this table's keys: stop the
                        // table, not the pipeline.
                        ErrorClass::Table(_) => SourceError::TableData {
                            table: table.clone(),
                            message: format!("reconcile: {e}"),
                        },
                        class => SourceError::SinkKeys {
                            message: format!("table {table}: {e}"),
                            retryable: class == ErrorClass::Transient,
                        },
                    })?;
                let present = poller.present(i, &chunk.live).await?;
                let gone: Vec<(Vec<String>, u64)> = chunk
                    .live
                    .iter()
                    .zip(&present)
                    .filter(|(_, p)| !**p)
                    .map(|(k, _)| k.clone())
                    .collect();
                for part in gone.chunks(self.max_rows) {
                    let batch = poller.delete_batch(i, part).await?;
                    if !emit.send(vec![SinkItem::Rows(batch)], position).await {
                        return Ok(false);
                    }
                }
                round.checked += chunk.live.len() as u64;
                round.deleted += gone.len() as u64;
                metrics::counter!(m::RECONCILE_KEYS, "table" => table.to_string())
                    .increment(chunk.live.len() as u64);
                metrics::counter!(m::RECONCILE_DELETES, "table" => table.to_string())
                    .increment(gone.len() as u64);
                round.after = chunk.upper;
                if round.after.is_none() {
                    let seconds = round.started.elapsed().as_secs_f64();
                    tracing::info!(
                        table = %table,
                        keys_checked = round.checked,
                        deletes = round.deleted,
                        seconds,
                        "reconcile round done: keys alive in the sink compared with the source; keys gone from the source deleted"
                    );
                    metrics::counter!(m::RECONCILE_ROUNDS, "table" => table.to_string())
                        .increment(1);
                    metrics::gauge!(m::RECONCILE_ROUND_SECONDS, "table" => table.to_string())
                        .set(seconds);
                    t.round = None;
                    t.due = Instant::now() + t.cfg.interval;
                    break;
                }
            }
        }
        Ok(true)
    }
}

/// Waits until the pipeline acknowledged `position` (everything emitted is
/// durable). False when the pipeline stopped waiting or is stopping.
async fn wait_acked(
    acks: &mut watch::Receiver<PollPosition>,
    position: &PollPosition,
    emit: &Emitter<'_>,
) -> bool {
    loop {
        if acks.borrow_and_update().ge(position) {
            return true;
        }
        tokio::select! {
            _ = emit.shutdown.cancelled() => return false,
            r = acks.changed() => if r.is_err() { return false },
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{UInt64Type, UInt8Type};

    use super::*;
    use crate::core::meta::{IS_DELETED, VERSION};
    use crate::core::LogicalType;

    fn col(name: &str, t: DataType, source: &str, key: bool) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            source_type: source.into(),
            logical: LogicalType::from_arrow(&t),
            data_type: t,
            is_key: key,
            nullable: !key,
            added_default: Default::default(),
        }
    }

    #[test]
    fn key_casts() {
        assert_eq!(
            pg_key_cast(&col("a", DataType::Int64, "int8", true)),
            Ok("int8")
        );
        assert_eq!(
            pg_key_cast(&col("a", DataType::Int32, "int4", true)),
            Ok("int4")
        );
        assert_eq!(
            pg_key_cast(&col("a", DataType::Utf8, "varchar", true)),
            Ok("text")
        );
        assert_eq!(
            pg_key_cast(&col("a", DataType::FixedSizeBinary(16), "uuid", true)),
            Ok("uuid")
        );
        let e = pg_key_cast(&col("price", DataType::Utf8, "numeric", true)).unwrap_err();
        assert!(
            e.contains("\"price\" is numeric") && e.contains("reconcile_interval"),
            "{e}"
        );
        assert!(pg_key_cast(&col("b", DataType::Utf8, "bpchar", true)).is_err());
    }

    #[test]
    fn exists_query_is_quoted_and_matches_by_equality() {
        let t = TableName::new("my schema", "Orders");
        let sql = pg_exists_sql(&t, &["re\"gion".into(), "id".into()], &["text", "int8"]);
        assert_eq!(
            sql,
            "SELECT k.i::int8 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(k1, k2, i) \
             WHERE EXISTS (SELECT 1 FROM \"my schema\".\"Orders\" t WHERE t.\"re\"\"gion\" = k.k1::text AND t.\"id\" = k.k2::int8)"
        );
    }

    #[test]
    fn clickhouse_exists_query_and_key_types() {
        let q = |v: &str| format!("'{}'", v.replace('\'', "\\'"));
        let keys = vec![
            (vec!["a'b".to_string(), "1".to_string()], 5),
            (vec!["c".to_string(), "2".to_string()], 6),
        ];
        let cols = vec!["`re`".to_string(), "`n`".to_string()];
        let types = vec!["String".to_string(), "UInt32".to_string()];
        assert_eq!(
            ch_exists_sql("`d`.`t`", &cols, &types, &keys, q),
            "SELECT DISTINCT toString(`re`), toString(`n`) FROM `d`.`t` WHERE (`re`, `n`) IN \
             (SELECT CAST(t.1, 'String'), CAST(t.2, 'UInt32') FROM \
             (SELECT arrayJoin(arrayZip(['a\\'b', 'c'], ['1', '2'])) AS t))"
        );
        let one = ch_exists_sql(
            "`d`.`t`",
            &cols[1..],
            &types[1..],
            &[(vec!["7".into()], 1)],
            q,
        );
        assert!(
            one.ends_with("WHERE (`n`) IN (SELECT CAST(t.1, 'UInt32') FROM (SELECT arrayJoin(arrayZip(['7'])) AS t))"),
            "{one}"
        );
        assert!(ch_key_supported("a", "UInt64").is_ok());
        assert!(ch_key_supported("a", "LowCardinality(String)").is_ok());
        let e = ch_key_supported("at", "DateTime64(6, 'UTC')").unwrap_err();
        assert!(e.contains("\"at\" is DateTime64"), "{e}");
    }

    #[test]
    fn deletes_carry_the_key_and_beat_the_sink_version() {
        let shape = Arc::new(TableShape {
            table: TableName::new("s", "t"),
            columns: vec![
                col("region", DataType::Utf8, "text", true),
                col("v", DataType::Int32, "int4", false),
                col("id", DataType::Int64, "int8", true),
                col("u", DataType::FixedSizeBinary(16), "uuid", false),
            ],
            before_images: false,
        });
        let keys = vec![
            (vec!["eu".to_string(), "7".to_string()], 10),
            (vec!["us".to_string(), "-1".to_string()], u64::MAX),
        ];
        let b = delete_batch(&shape, &keys, 5).unwrap().batch;
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(0).as_string::<i32>().value(1), "us");
        assert_eq!(
            b.column(2)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            7
        );
        assert_eq!(b.column(1).null_count(), 2);
        let v = b
            .column_by_name(VERSION)
            .unwrap()
            .as_primitive::<UInt64Type>();
        assert_eq!(v.values().to_vec(), vec![11, u64::MAX]);
        let d = b
            .column_by_name(IS_DELETED)
            .unwrap()
            .as_primitive::<UInt8Type>();
        assert_eq!(d.values().to_vec(), vec![1, 1]);
        let bad = vec![(vec!["eu".to_string(), "x".to_string()], 1)];
        let e = delete_batch(&shape, &bad, 5).unwrap_err();
        assert!(e.contains("\"id\"") && e.contains("`x`"), "{e}");
    }
}
