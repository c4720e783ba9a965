//! The sink itself: table state, DDL on first sight and on schema change,
//! TOAST filling, inserts, truncates.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{UInt64Type, UInt8Type};
use bytes::Bytes;
use clickhouse::insert_formatted::InsertFormatted;
use clickhouse::Client;

use super::ddl::{self, ExistingColumn, TableKind};
use super::encode::encode;
use super::stream::StreamedInsert;
use super::toast::{self, quote_ch_string};
use super::types::{plan_column, ColumnPlan, ServerCaps, DATE32_EXTENDED, DT64_EXTENDED};
use super::{client, map_error, quote_ch_ident, SinkError};
use crate::config::{ClickHouseSinkConfig, NoKeyMode, TableName, TruncateMode};
use crate::core::health::Report;
use crate::core::{meta, SinkItem, TableBatch, TableShape};
use crate::sink::Sink;

/// Keys per TOAST lookup query.
const LOOKUP_CHUNK: usize = 1000;
/// Rows per Arrow IPC message of an INSERT's body: the body is sent as it
/// is written, so at most about this many rows of it exist at once.
const INSERT_SLICE_ROWS: usize = 16_384;
/// A copy INSERT's rows are gathered into parts of up to this many bytes
/// (or `min_insert_block_size_rows`, a million by default), which is also
/// about what the server holds per running copy INSERT; its own default is
/// 256 MiB, four times this for each of the parallel copy readers.
const COPY_PART_BYTES: u64 = 64 << 20;

/// Writes flushes into ClickHouse. See `docs/clickhouse-sink.md`.
pub struct ClickHouseSink {
    cfg: ClickHouseSinkConfig,
    client: Client,
    caps: ServerCaps,
    tables: HashMap<TableName, TableState>,
    /// Tables stopped by a change the sink cannot follow; their later rows
    /// are skipped.
    failed: BTreeMap<TableName, String>,
    /// Newly failed, not yet reported through `take_failed`.
    newly_failed: Vec<(TableName, String)>,
}

struct TableState {
    shape: Arc<TableShape>,
    /// `` `db`.`table` ``.
    target: String,
    kind: TableKind,
    plans: Vec<ColumnPlan>,
    insert_sql: String,
}

impl ClickHouseSink {
    /// A sink for the configured server; no I/O until [`Sink::open`]. Fails
    /// only when the TLS settings cannot be loaded.
    pub fn new(cfg: &ClickHouseSinkConfig) -> Result<Self, SinkError> {
        Ok(ClickHouseSink {
            cfg: cfg.clone(),
            client: client(cfg)?,
            caps: ServerCaps::classic(),
            tables: HashMap::new(),
            failed: BTreeMap::new(),
            newly_failed: Vec::new(),
        })
    }

    /// Connects, learns what the server supports, creates the database if
    /// missing (the same as [`Sink::open`], for callers that hold a config).
    pub async fn connect(cfg: &ClickHouseSinkConfig) -> Result<Self, SinkError> {
        let mut sink = ClickHouseSink::new(cfg)?;
        sink.open().await?;
        Ok(sink)
    }

    /// What the server turned out to support.
    pub fn caps(&self) -> &ServerCaps {
        &self.caps
    }

    /// Every table stopped so far, with the reason.
    pub fn failed_tables(&self) -> &BTreeMap<TableName, String> {
        &self.failed
    }

    /// Applies the items; returns once ClickHouse acknowledged every insert
    /// (each is synchronous: no async insert, `wait_end_of_query=1`).
    /// Different tables are written concurrently, each table's batches in
    /// order; a truncate is a barrier (everything before it is written
    /// first).
    async fn apply_items(&mut self, items: &[SinkItem]) -> Result<(), SinkError> {
        let mut rest = items;
        while !rest.is_empty() {
            let rows = rest
                .iter()
                .position(|i| matches!(i, SinkItem::Truncate(..)))
                .unwrap_or(rest.len());
            let (segment, after) = rest.split_at(rows);
            self.apply_segment(segment).await?;
            if let Some((SinkItem::Truncate(tables, _), tail)) = after.split_first() {
                for t in tables {
                    self.truncate(t).await?;
                }
                rest = tail;
            } else {
                rest = after;
            }
        }
        Ok(())
    }

    /// Row batches of several tables: one writer per table, concurrently.
    async fn apply_segment(&mut self, items: &[SinkItem]) -> Result<(), SinkError> {
        let mut groups: Vec<(TableName, Vec<&TableBatch>)> = Vec::new();
        for item in items {
            if let SinkItem::Rows(tb) = item {
                match groups.iter_mut().find(|(t, _)| *t == tb.shape.table) {
                    Some((_, batches)) => batches.push(tb),
                    None => groups.push((tb.shape.table.clone(), vec![tb])),
                }
            }
        }
        if groups.len() <= 1 {
            for tb in groups.into_iter().flat_map(|(_, b)| b) {
                self.apply_rows(tb).await?;
            }
            return Ok(());
        }
        // Each writer takes its table's state along and gives it back.
        let mut writers: Vec<(ClickHouseSink, Vec<&TableBatch>)> = groups
            .into_iter()
            .map(|(t, batches)| {
                let mut w = self.writer();
                if let Some(state) = self.tables.remove(&t) {
                    w.tables.insert(t.clone(), state);
                }
                if let Some(reason) = self.failed.get(&t) {
                    w.failed.insert(t, reason.clone());
                }
                (w, batches)
            })
            .collect();
        let results =
            futures_util::future::join_all(writers.iter_mut().map(|(w, batches)| async move {
                for tb in batches.iter() {
                    w.apply_rows(tb).await?;
                }
                Ok::<_, SinkError>(())
            }))
            .await;
        for (w, _) in writers {
            self.tables.extend(w.tables);
            for (t, reason) in w.newly_failed {
                self.failed.insert(t.clone(), reason.clone());
                self.newly_failed.push((t, reason));
            }
        }
        results.into_iter().collect()
    }

    /// A writer sharing this sink's connections and what it learnt.
    fn writer(&self) -> ClickHouseSink {
        ClickHouseSink {
            cfg: self.cfg.clone(),
            client: self.client.clone(),
            caps: self.caps,
            tables: HashMap::new(),
            failed: BTreeMap::new(),
            newly_failed: Vec::new(),
        }
    }

    fn target(&self, t: &TableName) -> String {
        format!(
            "{}.{}",
            quote_ch_ident(&self.cfg.database),
            quote_ch_ident(&self.cfg.target_table(t))
        )
    }

    fn fail(&mut self, t: &TableName, reason: String) {
        tracing::error!(table = %t, reason = %reason, "ClickHouse sink stops replicating this table");
        self.tables.remove(t);
        self.failed.insert(t.clone(), reason.clone());
        self.newly_failed.push((t.clone(), reason));
    }

    async fn exec(&self, sql: &str) -> Result<(), SinkError> {
        let mut q = self.client.query_raw(sql);
        if self.caps.time64_setting {
            q = q.with_setting("enable_time_time64_type", "1");
        }
        q.execute().await.map_err(|e| map_error(&self.cfg, e))
    }

    async fn fetch(&self, sql: &str, format: &str) -> Result<Bytes, SinkError> {
        self.client
            .query_raw(sql)
            .with_setting("output_format_arrow_string_as_string", "1")
            .with_setting("output_format_arrow_low_cardinality_as_dictionary", "0")
            .with_setting("output_format_arrow_compression_method", "none")
            .fetch_bytes(format)
            .map_err(|e| map_error(&self.cfg, e))?
            .collect()
            .await
            .map_err(|e| map_error(&self.cfg, e))
    }

    async fn truncate(&mut self, t: &TableName) -> Result<(), SinkError> {
        if self.failed.contains_key(t) {
            return Ok(());
        }
        match self.cfg.on_truncate {
            TruncateMode::Truncate => {
                let target = self.target(t);
                tracing::info!(table = %t, "TRUNCATE TABLE {target}");
                self.exec(&format!("TRUNCATE TABLE IF EXISTS {target}"))
                    .await
            }
            TruncateMode::Ignore => {
                tracing::info!(table = %t, "TRUNCATE ignored (on_truncate = \"ignore\")");
                Ok(())
            }
        }
    }

    async fn apply_rows(&mut self, tb: &TableBatch) -> Result<(), SinkError> {
        let Some((batch, sql)) = self.prepare(tb).await? else {
            return Ok(());
        };
        // The body goes out slice by slice (one Arrow stream, one INSERT,
        // one part): a whole batch's IPC copy beside the batch itself set
        // the process's peak memory.
        let ins = self.start_insert(sql.clone());
        let mut ins = StreamedInsert::start(ins, &tb.shape.table, sql, &batch)?;
        let rows = batch.num_rows();
        for offset in (0..rows).step_by(INSERT_SLICE_ROWS) {
            let len = INSERT_SLICE_ROWS.min(rows - offset);
            ins.write(&batch.slice(offset, len), &self.cfg).await?;
        }
        ins.end(&self.cfg).await?;
        tracing::debug!(table = %tb.shape.table, rows, "inserted");
        Ok(())
    }

    /// A synchronous INSERT: acknowledged only once its rows are written.
    fn start_insert(&self, sql: String) -> InsertFormatted {
        self.client
            .insert_formatted_with(sql)
            .with_setting("input_format_null_as_default", "1")
            .with_setting("async_insert", "0")
            .with_setting("wait_end_of_query", "1")
    }

    /// The batch as ClickHouse takes it (columns converted, unchanged TOAST
    /// cells filled) and the INSERT for it; `None` when there is nothing to
    /// write (no rows, or the table failed, now or before).
    async fn prepare(
        &mut self,
        tb: &TableBatch,
    ) -> Result<Option<(RecordBatch, String)>, SinkError> {
        let table = &tb.shape.table;
        if self.failed.contains_key(table) {
            tracing::debug!(table = %table, rows = tb.batch.num_rows(), "skipping rows of a failed table");
            return Ok(None);
        }
        if !self.ensure_table(&tb.shape).await? || tb.batch.num_rows() == 0 {
            return Ok(None);
        }
        let Some(state) = self.tables.get(table) else {
            return Ok(None);
        };
        let extra: &[&str] = match state.kind {
            TableKind::Keyed => &[],
            TableKind::AppendOnly => &[meta::OP],
            TableKind::Multiset => &[meta::OP, meta::SEQ],
        };
        let enc =
            encode(&tb.batch, &state.plans, &self.caps, extra).map_err(|e| SinkError::Table {
                table: table.clone(),
                message: format!("encoding the batch: {e}"),
            })?;
        if enc.clamped.dates + enc.clamped.timestamps > 0 {
            tracing::warn!(
                table = %table,
                dates = enc.clamped.dates,
                timestamps = enc.clamped.timestamps,
                "values outside ClickHouse's range (or ±infinity) clamped to its ends"
            );
        }
        let batch = match toast::unchanged(&tb.batch) {
            None => enc.batch,
            Some(u) => match self
                .fill_toast(state, &tb.batch, &enc.batch, &enc.origin, &u)
                .await?
            {
                Ok(b) => b,
                Err(reason) => {
                    let t = table.clone();
                    self.fail(&t, reason);
                    return Ok(None);
                }
            },
        };
        Ok(Some((batch, state.insert_sql.clone())))
    }

    /// One copy unit as one INSERT whose body is a single Arrow stream,
    /// sent batch by batch as they arrive (at most one batch is buffered
    /// on the way): ClickHouse squashes the batches into parts of up to
    /// `min_insert_block_size_rows` rows, where an INSERT per batch makes
    /// a part per batch for the merges to combine. A batch that cannot
    /// join the stream (another table or encoded schema: not within one
    /// table's copy today) ends the INSERT and starts another.
    async fn copy_stream(
        &mut self,
        batches: &mut tokio::sync::mpsc::Receiver<TableBatch>,
    ) -> Result<u64, SinkError> {
        let mut open: Option<StreamedInsert> = None;
        let mut rows = 0u64;
        while let Some(tb) = batches.recv().await {
            let Some((batch, sql)) = self.prepare(&tb).await? else {
                continue;
            };
            if let Some(done) = open.take_if(|o| !o.takes(&sql, &batch)) {
                done.end(&self.cfg).await?;
            }
            let ins = match &mut open {
                Some(o) => o,
                None => {
                    // A copy unit holds each key once, so ReplacingMergeTree's
                    // collapse of duplicate keys on insert has nothing to do
                    // and only costs: half of ClickHouse's CPU per copied row.
                    let ins = self
                        .start_insert(sql.clone())
                        .with_setting("min_insert_block_size_bytes", COPY_PART_BYTES.to_string())
                        .with_setting("optimize_on_insert", "0");
                    open.insert(StreamedInsert::start(ins, &tb.shape.table, sql, &batch)?)
                }
            };
            ins.write(&batch, &self.cfg).await?;
            rows += batch.num_rows() as u64;
        }
        if let Some(o) = open {
            o.end(&self.cfg).await?;
        }
        Ok(rows)
    }

    /// Makes sure the ClickHouse table fits `shape`. False when the table failed.
    async fn ensure_table(&mut self, shape: &Arc<TableShape>) -> Result<bool, SinkError> {
        let table = &shape.table;
        if let Some(s) = self.tables.get(table) {
            if Arc::ptr_eq(&s.shape, shape) || *s.shape == **shape {
                return Ok(true);
            }
        }
        let target = self.target(table);
        let kind = if shape.key_columns().next().is_some() {
            TableKind::Keyed
        } else {
            match self.cfg.tables_without_key {
                NoKeyMode::Multiset => TableKind::Multiset,
                NoKeyMode::AppendOnly => TableKind::AppendOnly,
            }
        };
        let plans: Vec<ColumnPlan> = shape
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| plan_column(i, c, self.cfg.json_type, &self.caps))
            .collect();
        if let Some(n) = ddl::name_clash(&plans, kind) {
            let t = table.clone();
            self.fail(
                &t,
                format!("the ClickHouse column name \"{n}\" would be used twice (a source column clashes with a column the sink adds); rename the source column"),
            );
            return Ok(false);
        }
        let existing = self.existing_columns(table).await?;
        if existing.is_empty() {
            match kind {
                TableKind::Keyed => {}
                TableKind::Multiset => tracing::warn!(
                    table = %table,
                    "table has no key columns: tables_without_key = \"multiset\": every change is a row (delete = sign -1); query the view {}_live for the live rows",
                    self.cfg.target_table(table)
                ),
                TableKind::AppendOnly => tracing::warn!(
                    table = %table,
                    "table has no key columns: tables_without_key = \"append_only\": MergeTree, every change appended with its _op"
                ),
            }
            let sql = ddl::create_table_sql(&target, &plans, kind);
            tracing::info!(table = %table, "creating ClickHouse table {target}");
            self.exec(&sql).await?;
        } else {
            match ddl::reconcile_sql(&target, &existing, &plans, kind, self.cfg.on_drop_column) {
                Ok(alters) => {
                    for a in alters {
                        tracing::info!(table = %table, "{a}");
                        self.exec(&a).await?;
                    }
                }
                Err(reason) => {
                    let t = table.clone();
                    self.fail(&t, reason);
                    return Ok(false);
                }
            }
        }
        if kind == TableKind::Multiset {
            // Created or replaced after every shape change: it lists the columns.
            let view = format!(
                "{}.{}",
                quote_ch_ident(&self.cfg.database),
                quote_ch_ident(&ddl::live_view_name(&self.cfg.target_table(table)))
            );
            self.exec(&ddl::live_view_sql(&view, &target, &plans))
                .await?;
        }
        let cols: Vec<String> = ddl::wanted_columns(&plans, kind)
            .iter()
            .map(|(n, _)| quote_ch_ident(n))
            .collect();
        let insert_sql = format!(
            "INSERT INTO {target} ({}) FORMAT ArrowStream",
            cols.join(", ")
        );
        self.tables.insert(
            table.clone(),
            TableState {
                shape: shape.clone(),
                target,
                kind,
                plans,
                insert_sql,
            },
        );
        Ok(true)
    }

    async fn existing_columns(&self, t: &TableName) -> Result<Vec<ExistingColumn>, SinkError> {
        let sql = format!(
            "SELECT name, type, is_in_sorting_key FROM system.columns WHERE database = {} AND table = {} ORDER BY position",
            quote_ch_string(&self.cfg.database),
            quote_ch_string(&self.cfg.target_table(t))
        );
        let body = self.fetch(&sql, "JSONEachRow").await?;
        let mut out = Vec::new();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value =
                serde_json::from_slice(line).map_err(|e| SinkError::ClickHouse {
                    code: None,
                    message: format!("reading system.columns: {e}"),
                })?;
            out.push(ExistingColumn {
                name: v["name"].as_str().unwrap_or_default().to_string(),
                ty: v["type"].as_str().unwrap_or_default().to_string(),
                in_sorting_key: v["is_in_sorting_key"].as_u64().unwrap_or(0) == 1,
            });
        }
        Ok(out)
    }

    /// Fills unchanged TOAST cells; `Err(reason)` when a value cannot be found.
    async fn fill_toast(
        &self,
        state: &TableState,
        src: &RecordBatch,
        enc: &RecordBatch,
        origin: &[Option<usize>],
        u: &toast::Unchanged,
    ) -> Result<Result<RecordBatch, String>, SinkError> {
        let table = &state.shape.table;
        let arrow_err = |e: arrow::error::ArrowError| SinkError::Table {
            table: table.clone(),
            message: format!("filling unchanged TOAST values: {e}"),
        };
        let schema = enc.schema();
        let key_cols: Vec<usize> = match state.kind {
            TableKind::Keyed => state
                .plans
                .iter()
                .filter(|p| p.is_key)
                .filter_map(|p| schema.index_of(&p.name).ok())
                .collect(),
            // Without a key, every source column identifies the row.
            _ => (0..origin.len()).filter(|&j| origin[j].is_some()).collect(),
        };
        let deleted: Vec<bool> = {
            let d = src
                .column_by_name(meta::IS_DELETED)
                .ok_or_else(|| {
                    arrow_err(arrow::error::ArrowError::SchemaError(
                        "the batch lacks _is_deleted".into(),
                    ))
                })?
                .as_primitive::<UInt8Type>();
            (0..d.len()).map(|i| d.value(i) == 1).collect()
        };
        let versions: Vec<u64> = {
            let v = src
                .column_by_name(meta::VERSION)
                .ok_or_else(|| {
                    arrow_err(arrow::error::ArrowError::SchemaError(
                        "the batch lacks _version".into(),
                    ))
                })?
                .as_primitive::<UInt64Type>();
            v.values().to_vec()
        };
        let plan = toast::plan_in_batch(enc, origin, &key_cols, &deleted, &versions, u)
            .map_err(arrow_err)?;
        let mut fetched = None;
        let mut want: Vec<usize> = Vec::new();
        if !plan.pending.is_empty() || !plan.chained.is_empty() {
            let cols: HashSet<usize> = plan
                .pending
                .iter()
                .chain(plan.chained.iter())
                .map(|(_, c)| *c)
                .collect();
            want = (0..origin.len())
                .filter(|&j| origin[j].is_some_and(|c| cols.contains(&c)))
                .collect();
            let mut seen = HashSet::new();
            let rows: Vec<usize> = plan
                .pending
                .iter()
                .flat_map(|(r, _)| [plan.lookup_row[*r], *r])
                .chain(plan.chained.iter().map(|(r, _)| *r))
                .filter(|&r| seen.insert(plan.keys.row(r).as_ref().to_vec()))
                .collect();
            let exprs: HashMap<usize, String> = want
                .iter()
                .chain(key_cols.iter())
                .map(|&j| {
                    (
                        j,
                        select_expr(
                            schema.field(j).name(),
                            &ch_type(state, schema.field(j).name()),
                        ),
                    )
                })
                .collect();
            let mut parts = Vec::new();
            for chunk in rows.chunks(LOOKUP_CHUNK) {
                let sql = toast::lookup_sql(&state.target, enc, &key_cols, &want, &exprs, chunk)
                    .map_err(arrow_err)?;
                tracing::debug!(%sql, "unchanged TOAST lookup");
                let bytes = self.fetch(&sql, "ArrowStream").await?;
                if let Some(b) = toast::decode_ipc(&bytes).map_err(arrow_err)? {
                    parts.push(b);
                }
            }
            if let Some(first) = parts.first() {
                fetched = Some(
                    arrow::compute::concat_batches(&first.schema(), &parts).map_err(arrow_err)?,
                );
            }
        }
        match toast::finish(
            enc,
            origin,
            &key_cols,
            &want,
            &versions,
            plan,
            fetched.as_ref(),
        )
        .map_err(arrow_err)?
        {
            Ok(b) => Ok(Ok(b)),
            Err(m) => {
                let col = &state.shape.columns[m.column].name;
                Ok(Err(format!(
                    "an update left column \"{col}\" unchanged (TOAST, not sent by PostgreSQL), \
                     and ClickHouse has no earlier row of that key (batch row {}) to take the value from; \
                     writing it would lose the value: resync the table",
                    m.row
                )))
            }
        }
    }
}

impl Sink for ClickHouseSink {
    async fn open(&mut self) -> Result<(), SinkError> {
        let cfg = &self.cfg;
        self.caps = probe(cfg, &self.client).await?;
        tracing::info!(
            time64 = self.caps.time64,
            date32_min = self.caps.date32_min,
            date32_max = self.caps.date32_max,
            "ClickHouse sink connected"
        );
        self.client
            .query_raw(&format!(
                "CREATE DATABASE IF NOT EXISTS {}",
                quote_ch_ident(&cfg.database)
            ))
            .execute()
            .await
            .map_err(|e| map_error(cfg, e))
    }

    async fn apply(&mut self, items: &[SinkItem]) -> Result<(), SinkError> {
        self.apply_items(items).await
    }

    const STREAMS_COPIES: bool = true;

    async fn apply_copy(
        &mut self,
        batches: &mut tokio::sync::mpsc::Receiver<TableBatch>,
    ) -> Result<u64, SinkError> {
        self.copy_stream(batches).await
    }

    fn take_failed(&mut self) -> Vec<(TableName, String)> {
        std::mem::take(&mut self.newly_failed)
    }

    async fn finish_copy(&mut self, table: &TableName, version: u64) -> Result<(), SinkError> {
        if self.failed.contains_key(table) {
            return Ok(());
        }
        let target = self.target(table);
        let existing = self.existing_columns(table).await?;
        // A multiset is only ever copied exactly (never over older rows).
        if existing.is_empty() || existing.iter().any(|c| c.name == meta::SEQ) {
            return Ok(());
        }
        let engine = self
            .fetch(
                &format!(
                    "SELECT engine FROM system.tables WHERE database = {} AND name = {}",
                    quote_ch_string(&self.cfg.database),
                    quote_ch_string(&self.cfg.target_table(table))
                ),
                "TabSeparated",
            )
            .await?;
        if !String::from_utf8_lossy(&engine).starts_with("ReplacingMergeTree") {
            tracing::warn!(table = %table, "the ClickHouse table is not a ReplacingMergeTree (append_only): rows deleted in the source before this copy are not removed from it");
            return Ok(());
        }
        // No row below the copy's version (a first copy into a new table):
        // nothing can be stale, and this read of one column spares the
        // FINAL read of the whole table below.
        let older = self
            .fetch(
                &format!(
                    "SELECT count() FROM {target} WHERE {} < {version}",
                    quote_ch_ident(meta::VERSION)
                ),
                "TabSeparated",
            )
            .await?;
        if String::from_utf8_lossy(&older).trim() == "0" {
            return Ok(());
        }
        let stale = format!(
            "FROM (SELECT * FROM {target} FINAL WHERE {v} < {version} AND {d} = 0)",
            v = quote_ch_ident(meta::VERSION),
            d = quote_ch_ident(meta::IS_DELETED),
        );
        let count = self
            .fetch(&format!("SELECT count() {stale}"), "TabSeparated")
            .await?;
        let count: u64 = String::from_utf8_lossy(&count).trim().parse().unwrap_or(0);
        if count == 0 {
            return Ok(());
        }
        // Each stale row is written again as deleted, at the copy's version:
        // it loses to any later change of its key. (The filter sits in a
        // subquery: ClickHouse would apply the REPLACE aliases to a WHERE
        // beside them.)
        let mut replace = vec![
            format!("toUInt64({version}) AS {}", quote_ch_ident(meta::VERSION)),
            format!("toUInt8(1) AS {}", quote_ch_ident(meta::IS_DELETED)),
        ];
        if existing.iter().any(|c| c.name == ddl::SYNCED_AT) {
            replace.push(format!("now64(6) AS {}", quote_ch_ident(ddl::SYNCED_AT)));
        }
        let sql = format!(
            "INSERT INTO {target} SELECT * REPLACE ({}) {stale}",
            replace.join(", ")
        );
        self.exec(&sql).await?;
        tracing::info!(table = %table, rows = count, "removed rows the copy did not find in the source (deleted while the table was stopped or stale)");
        Ok(())
    }

    fn reset_table(&mut self, table: &TableName) {
        self.failed.remove(table);
        self.tables.remove(table);
    }

    async fn max_version(&self, table: &TableName) -> Result<Option<u64>, SinkError> {
        let existing = self.existing_columns(table).await?;
        if !existing.iter().any(|c| c.name == meta::VERSION) {
            return Ok(None);
        }
        let body = self
            .fetch(
                &format!(
                    "SELECT max({}), count() FROM {}",
                    quote_ch_ident(meta::VERSION),
                    self.target(table)
                ),
                "TabSeparated",
            )
            .await?;
        let text = String::from_utf8_lossy(&body);
        let mut cols = text.trim().split('\t');
        let max = cols.next().and_then(|v| v.parse::<u64>().ok());
        let rows = cols.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(max.filter(|_| rows > 0))
    }

    fn fork(&self) -> Self {
        ClickHouseSink {
            cfg: self.cfg.clone(),
            client: self.client.clone(),
            caps: self.caps,
            tables: HashMap::new(),
            failed: BTreeMap::new(),
            newly_failed: Vec::new(),
        }
    }

    async fn healthcheck(&self) -> Report {
        super::health::healthcheck(&self.cfg).await
    }
}

fn ch_type(state: &TableState, name: &str) -> String {
    for p in &state.plans {
        if p.name == name {
            return p.ch_type.clone();
        }
        if p.null_flag.as_deref() == Some(name) {
            return "UInt8".into();
        }
    }
    String::new()
}

/// How a column is read back so that its Arrow type is the one we send.
fn select_expr(name: &str, ch_type: &str) -> String {
    let c = quote_ch_ident(name);
    if ch_type.contains("UUID") {
        if ch_type.starts_with("Array") {
            format!("arrayMap(x -> toString(x), {c})")
        } else {
            format!("toString({c})")
        }
    } else if ch_type.contains("JSON") {
        let t = if ch_type.starts_with("Nullable") {
            "Nullable(String)"
        } else {
            "String"
        };
        format!("CAST({c}, '{t}')")
    } else {
        c
    }
}

async fn probe(cfg: &ClickHouseSinkConfig, client: &Client) -> Result<ServerCaps, SinkError> {
    let sql = "SELECT \
        (SELECT count() FROM system.data_type_families WHERE name = 'Time64'), \
        (SELECT count() FROM system.settings WHERE name = 'enable_time_time64_type'), \
        toInt32(toDate32('9999-12-31')), toInt32(toDate32('0001-01-01')), \
        toUnixTimestamp64Micro(toDateTime64('9999-12-31 23:59:59.999999', 6, 'UTC')), \
        toUnixTimestamp64Micro(toDateTime64('0001-01-01 00:00:00', 6, 'UTC'))";
    let body = client
        .query_raw(sql)
        .fetch_bytes("TabSeparated")
        .map_err(|e| map_error(cfg, e))?
        .collect()
        .await
        .map_err(|e| map_error(cfg, e))?;
    let text = String::from_utf8_lossy(&body);
    let f: Vec<i64> = text
        .trim()
        .split('\t')
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let mut caps = ServerCaps::classic();
    if f.len() == 6 {
        caps.time64 = f[0] > 0;
        caps.time64_setting = f[1] > 0;
        if (f[3] as i32, f[2] as i32) == DATE32_EXTENDED {
            (caps.date32_min, caps.date32_max) = DATE32_EXTENDED;
        }
        if (f[5], f[4]) == DT64_EXTENDED {
            (caps.dt64_min, caps.dt64_max) = DT64_EXTENDED;
        }
    }
    Ok(caps)
}
