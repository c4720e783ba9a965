//! Polling ClickHouse tables: `SELECT ... WHERE cursor >= from AND cursor <
//! to ORDER BY cursor FORMAT ArrowStream` over the HTTP interface, decoded
//! as it arrives (Arrow end to end, no row conversion). The upper bound is
//! a settle delay behind the server's clock (timestamp cursors) or behind
//! the largest value seen (integer cursors): ClickHouse has no transactions
//! to wait for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, UInt8Type};
use arrow::ipc::reader::StreamDecoder;
use arrow::record_batch::RecordBatch;
use clickhouse::{Client, Compression};

use super::batch::{assemble, Layout};
use super::reconcile::{ch_exists_sql, ch_key_supported, delete_batch, hard_delete_note};
use super::watermark::{after_batch, next_interval, settle_timestamp, CursorKind, SettleWatermark};
use super::{now_micros, Emitter, PollPosition};
use crate::config::poll::PollTable;
use crate::config::{BatchConfig, TableName};
use crate::core::health::Report;
use crate::core::meta::is_reserved_column;
use crate::core::{ColumnInfo, LogicalType, SinkItem, TableShape};
use crate::secret::{redact, Secret};
use crate::source::SourceError;

/// ClickHouse error codes that clear up on their own (timeouts, too many
/// queries, memory, network).
const RETRYABLE_CODES: &[u32] = &[159, 164, 202, 203, 209, 210, 241, 242, 319, 425, 999];
/// Codes that concern one table: unknown table, column or identifier, type mismatch.
const TABLE_CODES: &[u32] = &[16, 47, 53, 60, 81, 386];
/// The name the soft-delete flag is read under.
const DELETED_ALIAS: &str = "__sluice_deleted";

/// Quotes a ClickHouse identifier with backticks.
fn ident(s: &str) -> String {
    format!("`{}`", s.replace('\\', "\\\\").replace('`', "\\`"))
}

fn quoted(t: &TableName) -> String {
    format!("{}.{}", ident(&t.schema), ident(&t.name))
}

/// Where a polled ClickHouse server is.
#[derive(Clone)]
pub struct ChConn {
    pub url: String,
    pub user: String,
    pub password: Secret,
}

impl ChConn {
    fn client(&self) -> Client {
        Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(self.password.expose())
            .with_compression(Compression::None)
            // Text as Utf8, not Binary, so it lands in String columns as text.
            .with_setting("output_format_arrow_string_as_string", "1")
            // The arrow build here reads uncompressed IPC only.
            .with_setting("output_format_arrow_compression_method", "none")
    }

    fn error(&self, table: Option<&TableName>, e: clickhouse::error::Error) -> SourceError {
        let message = redact(&e.to_string(), &self.password);
        let network = matches!(
            e,
            clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
        );
        let code = code_of(&message);
        match (table, code) {
            (Some(t), Some(c)) if TABLE_CODES.contains(&c) => SourceError::TableData {
                table: t.clone(),
                message,
            },
            _ => SourceError::ClickHouse {
                message: format!("{} ({message})", self.url),
                retryable: network || code.is_some_and(|c| RETRYABLE_CODES.contains(&c)),
            },
        }
    }

    /// A query's TabSeparated rows, split into fields.
    async fn rows(
        &self,
        sql: &str,
        table: Option<&TableName>,
    ) -> Result<Vec<Vec<String>>, SourceError> {
        let bytes = self
            .client()
            .query(sql)
            .fetch_bytes("TabSeparated")
            .map_err(|e| self.error(table, e))?
            .collect()
            .await
            .map_err(|e| self.error(table, e))?;
        Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect())
    }
}

/// The `Code: N` of a ClickHouse exception message.
fn code_of(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// One column as `system.columns` describes it.
#[derive(Debug, Clone)]
struct ChColumn {
    name: String,
    ch_type: String,
    in_primary_key: bool,
}

impl ChColumn {
    fn is_datetime(&self) -> bool {
        let t = self
            .ch_type
            .strip_prefix("Nullable(")
            .unwrap_or(&self.ch_type);
        t.starts_with("DateTime")
    }

    /// How the column is read: timestamps as DateTime64(6, 'UTC') (the
    /// sink's timestamp type), the rest as they are.
    fn select(&self) -> String {
        let q = ident(&self.name);
        if self.is_datetime() {
            format!("toDateTime64({q}, 6, 'UTC') AS {q}")
        } else {
            q
        }
    }
}

struct ChTable {
    cfg: PollTable,
    columns: Vec<ChColumn>,
    select: String,
    key: Vec<String>,
    kind: CursorKind,
    cursor: usize,
    version: Option<usize>,
    settle: SettleWatermark,
    /// The shape batches carry, once known (from a poll or, for a
    /// reconcile's delete rows, an empty read).
    shape: Option<Arc<TableShape>>,
}

pub struct ChPoller {
    conn: ChConn,
    tables: Vec<ChTable>,
    batch: BatchConfig,
    settle: Duration,
}

fn table_error(t: &TableName, message: impl Into<String>) -> SourceError {
    SourceError::TableData {
        table: t.clone(),
        message: message.into(),
    }
}

async fn describe(
    conn: &ChConn,
    cfg: &PollTable,
    settle: Duration,
) -> Result<ChTable, SourceError> {
    let t = &cfg.table;
    let rows = conn
        .rows(
            &format!(
                "SELECT name, type, is_in_primary_key FROM system.columns WHERE database = '{}' AND table = '{}' ORDER BY position",
                escape(&t.schema),
                escape(&t.name)
            ),
            Some(t),
        )
        .await?;
    if rows.is_empty() {
        return Err(table_error(t, "does not exist in ClickHouse"));
    }
    let columns: Vec<ChColumn> = rows
        .into_iter()
        .filter(|r| r.len() == 3)
        .map(|r| ChColumn {
            name: r[0].clone(),
            ch_type: r[1].clone(),
            in_primary_key: r[2] == "1",
        })
        .collect();
    if let Some(c) = columns.iter().find(|c| is_reserved_column(&c.name)) {
        return Err(table_error(
            t,
            format!(
                "column \"{}\" collides with a sluice metadata column",
                c.name
            ),
        ));
    }
    let find = |name: &str, what: &str| {
        columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| table_error(t, format!("{what} column \"{name}\" does not exist")))
    };
    let key: Vec<String> = if cfg.key.is_empty() {
        columns
            .iter()
            .filter(|c| c.in_primary_key)
            .map(|c| c.name.clone())
            .collect()
    } else {
        for k in &cfg.key {
            find(k, "key")?;
        }
        cfg.key.clone()
    };
    if key.is_empty() {
        return Err(table_error(
            t,
            "has no primary key: set key = [\"col\", ...] in its [[source.poll.tables]] section",
        ));
    }
    let cursor = find(&cfg.cursor, "cursor")?;
    let kind = cursor_kind(&columns[cursor].ch_type).ok_or_else(|| {
        table_error(
            t,
            format!(
                "cursor column \"{}\" is {}: a cursor must be a DateTime/DateTime64 or an integer",
                cfg.cursor, columns[cursor].ch_type
            ),
        )
    })?;
    let version = match &cfg.version {
        Some(v) => {
            let i = find(v, "version")?;
            if cursor_kind(&columns[i].ch_type).is_none() {
                return Err(table_error(
                    t,
                    format!("version column \"{v}\" must be a timestamp or an integer"),
                ));
            }
            Some(i)
        }
        None => None,
    };
    if cfg.reconcile.is_some() {
        for k in &key {
            let c = &columns[find(k, "key")?];
            ch_key_supported(&c.name, &c.ch_type).map_err(|e| table_error(t, e))?;
        }
    }
    let mut select: Vec<String> = columns.iter().map(ChColumn::select).collect();
    if let Some(d) = &cfg.deleted {
        select.push(format!(
            "{} AS {}",
            deleted_sql(d, &columns),
            ident(DELETED_ALIAS)
        ));
    }
    Ok(ChTable {
        cfg: cfg.clone(),
        select: select.join(", "),
        columns,
        key,
        kind,
        cursor,
        version,
        settle: SettleWatermark::new(settle),
        shape: None,
    })
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

fn cursor_kind(ch_type: &str) -> Option<CursorKind> {
    let t = ch_type.strip_prefix("Nullable(").unwrap_or(ch_type);
    if t.starts_with("DateTime") {
        Some(CursorKind::Micros)
    } else if [
        "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
    ]
    .iter()
    .any(|i| t.trim_end_matches(')') == *i)
    {
        Some(CursorKind::Int)
    } else {
        None
    }
}

/// The soft-delete flag as a UInt8 expression: a flag column set, a
/// nullable column (`deleted_at`) not NULL, or a boolean expression.
fn deleted_sql(expr: &str, columns: &[ChColumn]) -> String {
    match columns.iter().find(|c| c.name == expr) {
        Some(c)
            if c.ch_type.starts_with("Nullable(")
                && !c.ch_type.contains("Bool")
                && !c.ch_type.contains("UInt8") =>
        {
            format!("toUInt8(isNotNull({}))", ident(expr))
        }
        Some(_) => format!("toUInt8(ifNull({}, 0) != 0)", ident(expr)),
        None => format!("toUInt8(ifNull(({expr}), 0) != 0)"),
    }
}

fn literal(v: i64, kind: CursorKind) -> String {
    match kind {
        CursorKind::Micros => format!("fromUnixTimestamp64Micro(toInt64({v}), 'UTC')"),
        CursorKind::Int => format!("toInt64({v})"),
    }
}

impl ChPoller {
    pub async fn start(
        conn: ChConn,
        tables: &[PollTable],
        batch: BatchConfig,
        settle: Duration,
    ) -> Result<ChPoller, SourceError> {
        conn.rows("SELECT 1", None).await?;
        let mut out = Vec::new();
        for t in tables {
            out.push(describe(&conn, t, settle).await?);
        }
        Ok(ChPoller {
            conn,
            tables: out,
            batch,
            settle,
        })
    }

    pub fn table(&self, i: usize) -> &TableName {
        &self.tables[i].cfg.table
    }

    pub fn key_columns(&self, i: usize) -> Vec<String> {
        self.tables[i].key.clone()
    }

    /// Which of `keys` (text values in key order) table `i` still has: one
    /// `IN` lookup on the key, matched by the keys' text.
    pub async fn present(
        &self,
        i: usize,
        keys: &[(Vec<String>, u64)],
    ) -> Result<Vec<bool>, SourceError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let t = &self.tables[i];
        let name = &t.cfg.table;
        let mut columns = Vec::new();
        let mut types = Vec::new();
        for k in &t.key {
            let c =
                t.columns.iter().find(|c| &c.name == k).ok_or_else(|| {
                    table_error(name, format!("key column \"{k}\" does not exist"))
                })?;
            columns.push(ident(k));
            types.push(c.ch_type.clone());
        }
        let sql = ch_exists_sql(&quoted(name), &columns, &types, keys, |v| {
            format!("'{}'", escape(v))
        });
        let bytes = self
            .conn
            .client()
            // The key list is in the query text; the default limit (256 KiB)
            // is too small for a large chunk.
            .with_setting("max_query_size", (sql.len() + 4096).to_string())
            .query(&sql)
            .fetch_bytes("JSONCompactEachRow")
            .map_err(|e| self.conn.error(Some(name), e))?
            .collect()
            .await
            .map_err(|e| self.conn.error(Some(name), e))?;
        let mut found = std::collections::HashSet::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let row: Vec<String> = serde_json::from_slice(line)
                .map_err(|e| table_error(name, format!("reconcile lookup: {e}")))?;
            found.insert(row);
        }
        Ok(keys.iter().map(|(k, _)| found.contains(k)).collect())
    }

    /// Delete rows for `keys` of table `i`, in the shape its polls emit
    /// (read from an empty result when no poll of this process had rows).
    pub async fn delete_batch(
        &mut self,
        i: usize,
        keys: &[(Vec<String>, u64)],
    ) -> Result<crate::core::TableBatch, SourceError> {
        let name = self.tables[i].cfg.table.clone();
        let shape = match self.tables[i].shape.clone() {
            Some(s) => s,
            None => {
                let t = &self.tables[i];
                let sql = format!("SELECT {} FROM {} LIMIT 0", t.select, quoted(&name));
                let bytes = self
                    .conn
                    .client()
                    .query(&sql)
                    .fetch_bytes("ArrowStream")
                    .map_err(|e| self.conn.error(Some(&name), e))?
                    .collect()
                    .await
                    .map_err(|e| self.conn.error(Some(&name), e))?;
                let mut decoder = StreamDecoder::new();
                let mut buf = Buffer::from(bytes.to_vec());
                while decoder
                    .decode(&mut buf)
                    .map_err(|e| table_error(&name, format!("ArrowStream: {e}")))?
                    .is_some()
                {}
                let schema = decoder
                    .schema()
                    .ok_or_else(|| table_error(&name, "ArrowStream without a schema"))?;
                let s = self.shape(i, schema)?;
                self.tables[i].shape = Some(s.clone());
                s
            }
        };
        delete_batch(&shape, keys, now_micros()).map_err(|e| table_error(&name, e))
    }

    /// The safe upper bound of table `i` now.
    async fn watermark(&mut self, i: usize) -> Result<Option<i64>, SourceError> {
        let t = &mut self.tables[i];
        let name = t.cfg.table.clone();
        Ok(match t.kind {
            CursorKind::Micros => {
                let rows = self
                    .conn
                    .rows("SELECT toUnixTimestamp64Micro(now64(6))", None)
                    .await?;
                let now = first_i64(&rows).ok_or_else(|| SourceError::ClickHouse {
                    message: "the server clock could not be read".into(),
                    retryable: true,
                })?;
                Some(settle_timestamp(now, self.settle))
            }
            CursorKind::Int => {
                let c = ident(&t.cfg.cursor);
                let rows = self
                    .conn
                    .rows(
                        &format!("SELECT toInt64(max({c})), count() FROM {}", quoted(&name)),
                        Some(&name),
                    )
                    .await?;
                let empty = rows.first().and_then(|r| r.get(1)).is_none_or(|n| n == "0");
                let max = if empty { None } else { first_i64(&rows) };
                t.settle.observe(max, Instant::now())
            }
        })
    }

    pub async fn poll(
        &mut self,
        i: usize,
        position: &mut PollPosition,
        emit: &Emitter<'_>,
    ) -> Result<bool, SourceError> {
        let safe = self.watermark(i).await?;
        let t = &self.tables[i];
        let name = t.cfg.table.clone();
        let key = name.to_string();
        let from = position.get(&key);
        let Some((lo, hi)) = next_interval(from, t.cfg.lookback, t.kind, safe)
            .map_err(|e| table_error(&name, format!("source.poll lookback: {e}")))?
        else {
            return Ok(true);
        };
        let cursor = ident(&t.cfg.cursor);
        let mut filter = format!("{cursor} < {}", literal(hi, t.kind));
        if let Some(lo) = lo {
            filter = format!("{cursor} >= {} AND {filter}", literal(lo, t.kind));
        }
        let sql = format!(
            "SELECT {} FROM {} WHERE {filter} ORDER BY {cursor}",
            t.select,
            quoted(&name)
        );
        let mut bytes = self
            .conn
            .client()
            .with_setting(
                "max_block_size",
                self.batch.max_rows.clamp(1, 65_536).to_string(),
            )
            .with_setting(
                "preferred_block_size_bytes",
                self.batch.max_bytes.to_string(),
            )
            .query(&sql)
            .fetch_bytes("ArrowStream")
            .map_err(|e| self.conn.error(Some(&name), e))?;
        let mut decoder = StreamDecoder::new();
        let mut shape: Option<Arc<TableShape>> = None;
        while let Some(chunk) = bytes
            .next()
            .await
            .map_err(|e| self.conn.error(Some(&name), e))?
        {
            let mut buf = Buffer::from(chunk.to_vec());
            while !buf.is_empty() {
                let Some(batch) = decoder
                    .decode(&mut buf)
                    .map_err(|e| table_error(&name, format!("ArrowStream: {e}")))?
                else {
                    // The chunk is used up (or the stream ended).
                    break;
                };
                let shape = match &shape {
                    Some(s) => s.clone(),
                    None => shape.insert(self.shape(i, batch.schema())?).clone(),
                };
                let (item, last) = self.finish(i, &shape, batch)?;
                position.set(&key, after_batch(position.get(&key), last));
                if !emit.send(vec![SinkItem::Rows(item)], position).await {
                    return Ok(false);
                }
                if emit.stopping() {
                    return Ok(false);
                }
            }
        }
        decoder
            .finish()
            .map_err(|e| table_error(&name, format!("ArrowStream ended early: {e}")))?;
        if let Some(s) = shape {
            self.tables[i].shape = Some(s);
        }
        position.set(&key, Some(hi));
        Ok(emit.send(Vec::new(), position).await)
    }

    /// The table's shape from the stream's schema (the soft-delete flag left out).
    fn shape(&self, i: usize, schema: SchemaRef) -> Result<Arc<TableShape>, SourceError> {
        let t = &self.tables[i];
        let columns = t
            .columns
            .iter()
            .zip(schema.fields().iter())
            .map(|(c, f)| {
                let dt = normalized_type(f.data_type());
                ColumnInfo {
                    name: c.name.clone(),
                    source_type: c.ch_type.clone(),
                    logical: LogicalType::from_arrow(&dt),
                    data_type: dt,
                    is_key: t.key.contains(&c.name),
                    nullable: f.is_nullable(),
                    added_default: Default::default(),
                }
            })
            .collect();
        Ok(Arc::new(TableShape {
            table: t.cfg.table.clone(),
            columns,
            before_images: false,
        }))
    }

    fn finish(
        &self,
        i: usize,
        shape: &Arc<TableShape>,
        batch: RecordBatch,
    ) -> Result<(crate::core::TableBatch, Option<i64>), SourceError> {
        let t = &self.tables[i];
        let n = t.columns.len();
        let err = |e: String| table_error(&t.cfg.table, e);
        let mut columns = Vec::with_capacity(n);
        for (c, info) in batch.columns()[..n].iter().zip(&shape.columns) {
            columns.push(normalize(c, &info.data_type).map_err(err)?);
        }
        let deleted = (batch.num_columns() > n).then(|| flags(batch.column(n)));
        assemble(
            shape,
            columns,
            Layout {
                cursor: t.cursor,
                kind: t.kind,
                version: t.version,
            },
            deleted.as_ref(),
            now_micros(),
        )
        .map_err(err)
    }
}

/// Timestamps in microseconds (what the sinks take); the rest as is.
fn normalized_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        other => other.clone(),
    }
}

fn normalize(a: &ArrayRef, to: &DataType) -> Result<ArrayRef, String> {
    if a.data_type() == to {
        return Ok(a.clone());
    }
    arrow::compute::cast(a, to).map_err(|e| e.to_string())
}

/// A UInt8 (or Bool) soft-delete column as flags.
fn flags(a: &ArrayRef) -> BooleanArray {
    match a.data_type() {
        DataType::Boolean => a.as_boolean().clone(),
        DataType::UInt8 => a
            .as_primitive::<UInt8Type>()
            .iter()
            .map(|v| v.map(|v| v != 0))
            .collect(),
        _ => BooleanArray::from(vec![false; a.len()]),
    }
}

fn first_i64(rows: &[Vec<String>]) -> Option<i64> {
    rows.first()?.first()?.parse().ok()
}

/// `sluice check` for a polled ClickHouse source.
pub async fn healthcheck(conn: &ChConn, tables: &[PollTable], settle: Duration) -> Report {
    let mut r = Report::default();
    let subject = format!("source {}", conn.url);
    match conn.rows("SELECT version()", None).await {
        Ok(v) => r.ok(
            &subject,
            format!(
                "ClickHouse {} reachable; settle delay {settle:?}",
                v.first()
                    .and_then(|r| r.first())
                    .map(String::as_str)
                    .unwrap_or("?")
            ),
        ),
        Err(e) => {
            r.fail(&subject, e.to_string());
            return r;
        }
    }
    for t in tables {
        let subject = format!("table {}", t.table);
        match describe(conn, t, settle).await {
            Ok(d) => {
                r.ok(
                    &subject,
                    format!(
                        "{} columns, key ({}), cursor \"{}\" {}; {}",
                        d.columns.len(),
                        d.key.join(", "),
                        d.cfg.cursor,
                        d.columns[d.cursor].ch_type,
                        hard_delete_note(t.reconcile)
                    ),
                );
                // The sorting key's first column serves range reads.
                let sorted = d
                    .columns
                    .iter()
                    .find(|c| c.in_primary_key)
                    .is_some_and(|c| c.name == t.cursor);
                if !sorted {
                    r.ok(&subject, format!("warning: the primary key does not start with cursor \"{}\": every poll reads the whole table (add a minmax skip index on it)", t.cursor));
                }
            }
            Err(e) => r.fail(&subject, e.to_string()),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_literals() {
        assert_eq!(cursor_kind("DateTime64(3)"), Some(CursorKind::Micros));
        assert_eq!(
            cursor_kind("Nullable(DateTime('UTC'))"),
            Some(CursorKind::Micros)
        );
        assert_eq!(cursor_kind("UInt64"), Some(CursorKind::Int));
        assert_eq!(cursor_kind("String"), None);
        assert_eq!(cursor_kind("Int128"), None);
        assert_eq!(literal(-1, CursorKind::Int), "toInt64(-1)");
        assert_eq!(code_of("Code: 60. DB::Exception"), Some(60));
        let c = |name: &str, t: &str| ChColumn {
            name: name.into(),
            ch_type: t.into(),
            in_primary_key: false,
        };
        assert_eq!(
            c("t", "DateTime").select(),
            "toDateTime64(`t`, 6, 'UTC') AS `t`"
        );
        assert_eq!(c("x", "String").select(), "`x`");
        let cols = [c("gone", "UInt8"), c("deleted_at", "Nullable(DateTime)")];
        assert_eq!(
            deleted_sql("gone", &cols),
            "toUInt8(ifNull(`gone`, 0) != 0)"
        );
        assert_eq!(
            deleted_sql("deleted_at", &cols),
            "toUInt8(isNotNull(`deleted_at`))"
        );
        assert_eq!(
            deleted_sql("v > 3", &cols),
            "toUInt8(ifNull((v > 3), 0) != 0)"
        );
    }
}
