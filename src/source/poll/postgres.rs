//! Polling PostgreSQL tables: per poll, the safe upper bound is taken
//! before a REPEATABLE READ snapshot, then `COPY (SELECT ... WHERE cursor >=
//! from AND cursor < to ORDER BY cursor) TO STDOUT (FORMAT binary)` is
//! decoded straight into Arrow by the snapshot's decoders.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::DataType;
use futures_util::StreamExt;
use tokio_postgres::Client;

use super::batch::{assemble, Layout};
use super::reconcile::{delete_batch, hard_delete_note, pg_exists_sql, pg_key_cast};
use super::watermark::{
    after_batch, next_interval, timestamp_watermark, CursorKind, Running, SequenceWatermark,
};
use super::{now_micros, Emitter, PollPosition};
use crate::config::poll::PollTable;
use crate::config::{quote_ident, BatchConfig, PgConnInfo, TableName};
use crate::core::health::Report;
use crate::core::{ColumnInfo, LogicalType, SinkItem, TableShape};
use crate::source::postgres::builder::TableBuilder;
use crate::source::postgres::catalog;
use crate::source::postgres::copy_binary::CopyBinaryDecoder;
use crate::source::postgres::setup::describe;
use crate::source::postgres::snapshot::select_list;
use crate::source::postgres::types::{
    arrow_type, oid, ArrowMapping, PgType, TypeCache, TypeOptions,
};
use crate::source::SourceError;

/// The watermark reads other sessions' `xact_start`, which PostgreSQL only
/// shows to superusers and members of this role.
const STATS_ROLE: &str = "pg_read_all_stats";

/// Transactions that may still write rows: every session in a transaction
/// except this one and autovacuum (which never writes user rows).
const RUNNING_SQL: &str = "SELECT pid, (extract(epoch FROM xact_start) * 1000000)::int8 \
     FROM pg_stat_activity WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() \
     AND backend_type NOT IN ('autovacuum worker', 'autovacuum launcher')";
const CLOCK_SQL: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8";

/// One table as it is polled.
struct PgTable {
    cfg: PollTable,
    /// The table's columns, as batches carry them.
    shape: Arc<TableShape>,
    /// The columns read: the table's, then the soft-delete flag if any.
    read_shape: Arc<TableShape>,
    mappings: Vec<ArrowMapping>,
    select: String,
    layout: Layout,
    cursor_type: DataType,
    sequence: SequenceWatermark,
    /// With `reconcile_interval`: the key columns (key order) and the
    /// source query telling which of a chunk's keys exist.
    reconcile: Option<(Vec<String>, String)>,
}

pub struct PgPoller {
    client: Client,
    tables: Vec<PgTable>,
    batch: BatchConfig,
}

fn table_error(table: &TableName, message: impl Into<String>) -> SourceError {
    SourceError::TableData {
        table: table.clone(),
        message: message.into(),
    }
}

async fn connect(conn: &PgConnInfo) -> Result<Client, SourceError> {
    let client = catalog::connect(conn).await?;
    // Timestamps without a time zone are compared with the server clock in UTC.
    client.batch_execute("SET TimeZone = 'UTC'").await?;
    Ok(client)
}

/// Whether this role sees other sessions' transaction start times.
async fn sees_all_activity(client: &Client) -> Result<bool, SourceError> {
    let row = client
        .query_one(
            "SELECT rolsuper OR pg_has_role(current_user, $1, 'MEMBER') FROM pg_roles WHERE rolname = current_user",
            &[&STATS_ROLE],
        )
        .await?;
    Ok(row.get(0))
}

fn stats_role_missing(user: &str) -> String {
    format!(
        "user \"{user}\" cannot see other sessions' transactions, which the safe watermark needs: GRANT {STATS_ROLE} TO \"{user}\""
    )
}

impl PgPoller {
    /// Connects and describes every table; a table that cannot be polled
    /// is a table error (it stops, the others go on).
    pub async fn start(
        conn: &PgConnInfo,
        tables: &[PollTable],
        batch: BatchConfig,
    ) -> Result<PgPoller, SourceError> {
        let client = connect(conn).await?;
        if !sees_all_activity(&client).await? {
            return Err(SourceError::NotReady(stats_role_missing(&conn.user)));
        }
        let mut types = TypeCache::new();
        let mut out = Vec::new();
        for t in tables {
            out.push(describe_table(&client, &mut types, t).await?);
        }
        Ok(PgPoller {
            client,
            tables: out,
            batch,
        })
    }

    pub fn table(&self, i: usize) -> &TableName {
        &self.tables[i].cfg.table
    }

    pub fn key_columns(&self, i: usize) -> Vec<String> {
        self.tables[i]
            .shape
            .key_columns()
            .map(|c| c.name.clone())
            .collect()
    }

    /// Which of `keys` (text values in key order) table `i` still has: one
    /// equality lookup per key on the key's index, in one statement.
    pub async fn present(
        &self,
        i: usize,
        keys: &[(Vec<String>, u64)],
    ) -> Result<Vec<bool>, SourceError> {
        let t = &self.tables[i];
        let Some((columns, sql)) = &t.reconcile else {
            return Err(table_error(&t.cfg.table, "reconcile is not configured"));
        };
        let mut found = vec![false; keys.len()];
        if keys.is_empty() {
            return Ok(found);
        }
        let arrays: Vec<Vec<&str>> = (0..columns.len())
            .map(|c| keys.iter().map(|(k, _)| k[c].as_str()).collect())
            .collect();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = arrays
            .iter()
            .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        for row in self.client.query(sql.as_str(), &params).await? {
            let pos: i64 = row.get(0);
            if let Some(f) = usize::try_from(pos - 1).ok().and_then(|p| found.get_mut(p)) {
                *f = true;
            }
        }
        Ok(found)
    }

    /// Delete rows for `keys` of table `i` (see [`super::reconcile::delete_batch`]).
    pub fn delete_batch(
        &self,
        i: usize,
        keys: &[(Vec<String>, u64)],
    ) -> Result<crate::core::TableBatch, SourceError> {
        let t = &self.tables[i];
        delete_batch(&t.shape, keys, now_micros()).map_err(|e| table_error(&t.cfg.table, e))
    }

    /// Polls table `i` once: reads what the watermark allows and emits it
    /// in bounded batches, then the new position.
    pub async fn poll(
        &mut self,
        i: usize,
        position: &mut PollPosition,
        emit: &Emitter<'_>,
    ) -> Result<bool, SourceError> {
        let t = &mut self.tables[i];
        let name = t.cfg.table.clone();
        let key = name.to_string();
        // Before the snapshot: the clock, then who is still running.
        let clock: i64 = self.client.query_one(CLOCK_SQL, &[]).await?.get(0);
        let before = running(&self.client).await?;
        let safe = match t.layout.kind {
            CursorKind::Micros => Some(timestamp_watermark(clock, &before)),
            CursorKind::Int => t.sequence.settle(&before),
        };
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let cursor = quote_ident(&t.cfg.cursor);
        if t.layout.kind == CursorKind::Int {
            // The first statement takes the snapshot; who runs after it.
            let max: Option<i64> = self
                .client
                .query_one(
                    &format!("SELECT max({cursor})::int8 FROM {}", name.quoted()),
                    &[],
                )
                .await?
                .get(0);
            let after = running(&self.client).await?;
            t.sequence.observe(max, after);
        }
        let from = position.get(&key);
        let interval = next_interval(from, t.cfg.lookback, t.layout.kind, safe)
            .map_err(|e| table_error(&name, format!("source.poll lookback: {e}")))?;
        let Some((lo, hi)) = interval else {
            self.client.batch_execute("COMMIT").await?;
            return Ok(true);
        };
        let mut filter = format!("{cursor} < {}", literal(hi, &t.cursor_type));
        if let Some(lo) = lo {
            filter = format!("{cursor} >= {} AND {filter}", literal(lo, &t.cursor_type));
        }
        let sql = format!(
            "COPY (SELECT {} FROM {} WHERE {filter} ORDER BY {cursor}) TO STDOUT (FORMAT binary)",
            t.select,
            name.quoted()
        );
        let stream = self.client.copy_out(&sql).await?;
        let mut stream = std::pin::pin!(stream);
        let mut decoder = CopyBinaryDecoder::new(t.read_shape.columns.len());
        let mut builder = TableBuilder::new(t.read_shape.clone(), &t.mappings);
        let dummy = crate::core::meta::RowMeta {
            op: crate::core::meta::OP_READ,
            lsn: 0,
            version: 0,
            commit_ts: 0,
        };
        let max_bytes = self.batch.max_bytes as usize;
        loop {
            let chunk = stream.next().await;
            let end = chunk.is_none();
            if let Some(chunk) = chunk {
                let n = decoder
                    .feed(&chunk?, builder.columns_mut())
                    .map_err(|e| table_error(&name, format!("poll: {e}")))?;
                builder.finish_rows(n, dummy);
            }
            if end || builder.rows() >= self.batch.max_rows || builder.byte_size() >= max_bytes {
                if let Some(raw) = builder.finish() {
                    let (item, last) = finish(t, raw.batch)?;
                    let p = after_batch(position.get(&key), last);
                    position.set(&key, p);
                    if !emit.send(vec![SinkItem::Rows(item)], position).await {
                        return Ok(false);
                    }
                }
            }
            if end {
                break;
            }
            if emit.stopping() {
                // Rows emitted so far are covered by their positions.
                let _ = self.client.batch_execute("ROLLBACK").await;
                return Ok(false);
            }
        }
        decoder
            .finish()
            .map_err(|e| table_error(&name, format!("poll: {e}")))?;
        self.client.batch_execute("COMMIT").await?;
        position.set(&key, Some(hi));
        Ok(emit.send(Vec::new(), position).await)
    }
}

/// Splits the read columns into the table's and the soft-delete flag, and
/// adds the metadata columns.
fn finish(
    t: &PgTable,
    raw: arrow::record_batch::RecordBatch,
) -> Result<(crate::core::TableBatch, Option<i64>), SourceError> {
    let n = t.shape.columns.len();
    let columns = raw.columns()[..n].to_vec();
    let deleted = (t.read_shape.columns.len() > n).then(|| raw.column(n).clone());
    let deleted = deleted.as_ref().map(|d| d.as_boolean());
    assemble(&t.shape, columns, t.layout, deleted, now_micros())
        .map_err(|e| table_error(&t.cfg.table, e))
}

async fn running(client: &Client) -> Result<Vec<Running>, SourceError> {
    Ok(client
        .query(RUNNING_SQL, &[])
        .await?
        .iter()
        .map(|r| Running {
            pid: r.get(0),
            started: r.get(1),
        })
        .collect())
}

/// A cursor bound as SQL (COPY takes no parameters).
fn literal(v: i64, t: &DataType) -> String {
    match t {
        DataType::Timestamp(_, Some(_)) => {
            format!(
                "(TIMESTAMPTZ '1970-01-01 00:00:00+00' + ({v})::float8 * INTERVAL '1 microsecond')"
            )
        }
        DataType::Timestamp(_, None) => {
            format!("(TIMESTAMP '1970-01-01 00:00:00' + ({v})::float8 * INTERVAL '1 microsecond')")
        }
        _ => v.to_string(),
    }
}

/// The shape, key, cursor and soft-delete flag of one configured table.
async fn describe_table(
    client: &Client,
    types: &mut TypeCache,
    cfg: &PollTable,
) -> Result<PgTable, SourceError> {
    let name = &cfg.table;
    let options = TypeOptions::default();
    let mut d = describe(client, name, types, &options, None)
        .await
        .map_err(|e| table_error(name, e.to_string()))?;
    let mut shape = (*d.shape).clone();
    shape.before_images = false;
    if !cfg.key.is_empty() {
        for k in &cfg.key {
            if !d.names.contains(k) {
                return Err(table_error(
                    name,
                    format!("key column \"{k}\" (source.poll.tables key) does not exist"),
                ));
            }
        }
        for c in &mut shape.columns {
            c.is_key = cfg.key.contains(&c.name);
        }
    } else if !shape.columns.iter().any(|c| c.is_key) {
        return Err(table_error(
            name,
            "has no primary key: set key = [\"col\", ...] in its [[source.poll.tables]] section",
        ));
    }
    let find = |col: &str, what: &str| {
        shape
            .columns
            .iter()
            .position(|c| c.name == col)
            .ok_or_else(|| table_error(name, format!("{what} column \"{col}\" does not exist")))
    };
    let cursor = find(&cfg.cursor, "cursor")?;
    let cursor_type = shape.columns[cursor].data_type.clone();
    let kind = CursorKind::of(&cursor_type).ok_or_else(|| {
        table_error(
            name,
            format!(
                "cursor column \"{}\" is {}: a cursor must be a timestamp or an integer",
                cfg.cursor, shape.columns[cursor].source_type
            ),
        )
    })?;
    let version = match &cfg.version {
        Some(v) => {
            let i = find(v, "version")?;
            if CursorKind::of(&shape.columns[i].data_type).is_none() {
                return Err(table_error(
                    name,
                    format!("version column \"{v}\" must be a timestamp or an integer"),
                ));
            }
            Some(i)
        }
        None => None,
    };
    let mut select = select_list(&d.names, &mut d.mappings);
    let mut read_shape = shape.clone();
    let mut mappings = d.mappings;
    if let Some(expr) = &cfg.deleted {
        select.push(deleted_sql(expr, &shape));
        let bool_type = PgType::base(oid::BOOL, "bool");
        let m = arrow_type(&bool_type, &options)
            .map_err(|e| SourceError::Protocol(format!("boolean mapping: {e}")))?;
        read_shape.columns.push(ColumnInfo {
            name: "deleted".into(),
            source_type: "bool".into(),
            logical: LogicalType::from_arrow(&DataType::Boolean),
            data_type: DataType::Boolean,
            is_key: false,
            nullable: true,
            added_default: Default::default(),
        });
        mappings.push(m);
    }
    let reconcile = match cfg.reconcile {
        None => None,
        Some(_) => {
            let keys: Vec<&ColumnInfo> = shape.key_columns().collect();
            let casts = keys
                .iter()
                .map(|c| pg_key_cast(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| table_error(name, e))?;
            let columns: Vec<String> = keys.iter().map(|c| c.name.clone()).collect();
            let sql = pg_exists_sql(name, &columns, &casts);
            Some((columns, sql))
        }
    };
    Ok(PgTable {
        cfg: cfg.clone(),
        reconcile,
        shape: Arc::new(shape),
        read_shape: Arc::new(read_shape),
        mappings,
        select: select.join(", "),
        layout: Layout {
            cursor,
            kind,
            version,
        },
        cursor_type,
        sequence: SequenceWatermark::default(),
    })
}

/// `deleted` as a boolean SQL expression: a boolean column as it is (NULL
/// is not deleted), another column deleted when set (`deleted_at`), else a
/// boolean expression as written.
fn deleted_sql(expr: &str, shape: &TableShape) -> String {
    match shape.columns.iter().find(|c| c.name == expr) {
        Some(c) if c.data_type == DataType::Boolean => {
            format!("coalesce({}, false)", quote_ident(expr))
        }
        Some(_) => format!("({} IS NOT NULL)", quote_ident(expr)),
        None => format!("coalesce(({expr})::boolean, false)"),
    }
}

/// `sluice check` for a polled PostgreSQL source.
pub async fn healthcheck(conn: &PgConnInfo, tables: &[PollTable]) -> Report {
    let mut r = Report::default();
    let subject = format!("source {conn}");
    let client = match connect(conn).await {
        Ok(c) => c,
        Err(e) => {
            r.fail(&subject, e.to_string());
            return r;
        }
    };
    r.ok(&subject, "reachable");
    match sees_all_activity(&client).await {
        Ok(true) => r.ok(&subject, format!("sees other sessions' transactions (superuser or {STATS_ROLE}): the watermark is safe")),
        Ok(false) => r.fail(&subject, stats_role_missing(&conn.user)),
        Err(e) => r.fail(&subject, e.to_string()),
    }
    let mut types = TypeCache::new();
    for t in tables {
        let subject = format!("table {}", t.table);
        match describe_table(&client, &mut types, t).await {
            Err(e) => {
                r.fail(&subject, e.to_string());
                continue;
            }
            Ok(d) => {
                let keys: Vec<_> = d.shape.key_columns().map(|c| c.name.clone()).collect();
                let c = &d.shape.columns[d.layout.cursor];
                r.ok(
                    &subject,
                    format!(
                        "{} columns, key ({}), cursor \"{}\" {}; {}",
                        d.shape.columns.len(),
                        keys.join(", "),
                        c.name,
                        c.source_type,
                        hard_delete_note(t.reconcile)
                    ),
                );
                if c.nullable {
                    r.ok(&subject, format!("warning: cursor \"{}\" is nullable: rows with a NULL cursor are never read; make it NOT NULL", c.name));
                }
            }
        }
        match client
            .query_one(
                "SELECT has_table_privilege(to_regclass($1), 'SELECT')",
                &[&t.table.quoted()],
            )
            .await
        {
            Ok(row) if row.get::<_, Option<bool>>(0) != Some(false) => {}
            Ok(_) => r.fail(
                &subject,
                format!(
                    "user \"{}\" may not SELECT from it: GRANT SELECT ON {} TO \"{}\"",
                    conn.user,
                    t.table.quoted(),
                    conn.user
                ),
            ),
            Err(e) => r.fail(&subject, e.to_string()),
        }
        match cursor_indexed(&client, &t.table, &t.cursor).await {
            Ok(true) => r.ok(&subject, format!("an index leads with \"{}\"", t.cursor)),
            Ok(false) => r.ok(
                &subject,
                format!(
                    "warning: no index leads with cursor \"{}\": every poll scans the whole table; CREATE INDEX ON {} ({})",
                    t.cursor,
                    t.table.quoted(),
                    quote_ident(&t.cursor)
                ),
            ),
            Err(e) => r.fail(&subject, e.to_string()),
        }
    }
    r
}

/// Whether some index's first column is the cursor (serves range reads).
async fn cursor_indexed(client: &Client, t: &TableName, cursor: &str) -> Result<bool, SourceError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
               ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = to_regclass($1) AND a.attname = $2)",
            &[&t.quoted(), &cursor],
        )
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::TimeUnit;

    #[test]
    fn literals() {
        assert_eq!(literal(-3, &DataType::Int64), "-3");
        let tz = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert!(literal(5, &tz).starts_with("(TIMESTAMPTZ '1970-01-01 00:00:00+00' + (5)"));
        let naive = DataType::Timestamp(TimeUnit::Microsecond, None);
        assert!(literal(5, &naive).starts_with("(TIMESTAMP '1970-01-01 00:00:00' + (5)"));
    }
}
