//! Reading one snapshot unit: `COPY (SELECT ... [WHERE ctid range]) TO
//! STDOUT (FORMAT binary)` decoded straight into Arrow batches (op 'r').
//! Planning the units and handing out connections is `copier.rs`'s job.

use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio_postgres::{Client, CopyOutStream};

use super::builder::TableBuilder;
use super::copy_binary::CopyBinaryDecoder;
use super::lsn::Lsn;
use super::setup::{describe, TableDescription};
use super::types::TypeCache;
use super::types::{ArrowMapping, DecoderKind, TypeOptions};
use crate::config::{quote_ident, quote_literal, TableName, TablePublish};
use crate::core::meta::{RowMeta, OP_READ};
use crate::core::TableBatch;
use crate::source::{SourceError, UnitReader};

/// A block range of a table: `ctid >= (start,0) AND ctid < (end,0)`
/// (`end` None: to the end of the table, rows added since planning included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtidRange {
    pub start: u64,
    pub end: Option<u64>,
}

/// A range of a single-column primary key, bounds as the key's text form
/// (`None`: open on that side).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRange {
    pub column: String,
    /// `format_type` of the column, to cast the bounds.
    pub sql_type: String,
    pub low: Option<String>,
    pub high: Option<String>,
}

/// The rows of one snapshot unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowRange {
    Blocks(CtidRange),
    Key(KeyRange),
    /// One leaf partition of a partitioned table, as PostgreSQL prints its
    /// name (`regclass`: quoted, schema-qualified where needed); read
    /// directly, so each partition is a unit of its own.
    Partition(String),
}

impl RowRange {
    /// The relation the unit reads: the partition, or the table itself.
    fn relation(&self, table: &TableName) -> String {
        match self {
            RowRange::Partition(p) => format!("ONLY {p}"),
            _ => table.quoted(),
        }
    }

    fn predicate(&self) -> String {
        match self {
            RowRange::Partition(_) => "true".into(),
            RowRange::Blocks(r) => {
                let mut p = format!("ctid >= '({},0)'::tid", r.start);
                if let Some(end) = r.end {
                    p.push_str(&format!(" AND ctid < '({end},0)'::tid"));
                }
                p
            }
            RowRange::Key(k) => {
                let col = quote_ident(&k.column);
                let mut parts = Vec::new();
                if let Some(low) = &k.low {
                    parts.push(format!("{col} >= {}::{}", quote_literal(low), k.sql_type));
                }
                if let Some(high) = &k.high {
                    parts.push(format!("{col} < {}::{}", quote_literal(high), k.sql_type));
                }
                if parts.is_empty() {
                    "true".into()
                } else {
                    parts.join(" AND ")
                }
            }
        }
    }
}

/// The SELECT list that COPY (FORMAT binary) reads a table's columns with.
/// Types without a binary form are copied as their text (the same form the
/// stream sends for them), so the Arrow column is the same; their mappings
/// are switched to the text decoder.
pub fn select_list(names: &[String], mappings: &mut [ArrowMapping]) -> Vec<String> {
    let mut select = Vec::with_capacity(names.len());
    for (name, m) in names.iter().zip(mappings.iter_mut()) {
        let col = quote_ident(name);
        if !m.needs_text_format {
            select.push(col);
            continue;
        }
        m.needs_text_format = false;
        match &mut m.decoder {
            DecoderKind::Array(el) => {
                el.decoder = DecoderKind::Text;
                el.needs_text_format = false;
                select.push(format!("{col}::text[]"));
            }
            other => {
                *other = DecoderKind::Text;
                select.push(format!("{col}::text"));
            }
        }
    }
    select
}

/// How large a batch of snapshot rows may grow.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_rows: usize,
    pub max_bytes: usize,
}

/// Streams one unit's rows as batches within [`BatchLimits`].
pub struct SnapshotReader {
    table: TableName,
    stream: Pin<Box<CopyOutStream>>,
    decoder: CopyBinaryDecoder,
    builder: TableBuilder,
    meta: RowMeta,
    limits: BatchLimits,
    done: bool,
    /// Runs once the COPY ended cleanly (the copier returns the connection
    /// to its pool).
    on_clean_end: Option<Box<dyn FnOnce() + Send>>,
}

impl SnapshotReader {
    /// Looks the table up, then starts the COPY of `range` (all of it when
    /// `None`). Rows carry `version`: the stream position they are
    /// consistent with.
    pub async fn start(
        client: &Client,
        table: &TableName,
        range: Option<RowRange>,
        publish: Option<&TablePublish>,
        options: &TypeOptions,
        version: Lsn,
        limits: BatchLimits,
    ) -> Result<SnapshotReader, SourceError> {
        let TableDescription {
            names,
            shape,
            mut mappings,
        } = describe(
            client,
            table,
            &mut TypeCache::new(),
            options,
            publish.and_then(|p| p.columns.as_deref()),
        )
        .await?;
        let select = select_list(&names, &mut mappings);
        // The publication's row filter, so the copy holds the rows the
        // stream is about.
        let mut conds: Vec<String> = Vec::new();
        if let Some(w) = publish.and_then(|p| p.row_filter.as_deref()) {
            conds.push(format!("({w})"));
        }
        let relation = range
            .as_ref()
            .map_or_else(|| table.quoted(), |r| r.relation(table));
        if let Some(r) = range {
            conds.push(r.predicate());
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let sql = format!(
            "COPY (SELECT {} FROM {relation}{filter}) TO STDOUT (FORMAT binary)",
            select.join(", "),
        );
        let stream = client.copy_out(&sql).await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let builder = TableBuilder::new(shape, &mappings);
        Ok(SnapshotReader {
            table: table.clone(),
            stream: Box::pin(stream),
            decoder: CopyBinaryDecoder::new(names.len()),
            builder,
            meta: RowMeta {
                op: OP_READ,
                lsn: version.0,
                version: version.0,
                commit_ts: now,
            },
            limits: BatchLimits {
                max_rows: limits.max_rows.max(1),
                max_bytes: limits.max_bytes.max(1),
            },
            done: false,
            on_clean_end: None,
        })
    }

    /// Rows of a table without a key are numbered (`_seq`) from `base`.
    pub fn with_seq_base(mut self, base: u64) -> Self {
        self.builder.set_next_seq(base);
        self
    }

    /// `f` runs when the COPY ends cleanly (e.g. the connection goes back
    /// to its pool); a failed or abandoned copy drops it instead.
    pub fn with_on_clean_end(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.on_clean_end = Some(Box::new(f));
        self
    }

    /// The next batch, or `None` when the table is done.
    pub async fn next_batch(&mut self) -> Result<Option<TableBatch>, SourceError> {
        while !self.done {
            match self.stream.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    let n = self
                        .decoder
                        .feed(&chunk, self.builder.columns_mut())
                        .map_err(|e| SourceError::TableData {
                            table: self.table.clone(),
                            message: format!("snapshot: {e}"),
                        })?;
                    self.builder.finish_rows(n, self.meta);
                    if self.builder.rows() >= self.limits.max_rows
                        || self.builder.byte_size() >= self.limits.max_bytes
                    {
                        return Ok(self.builder.finish());
                    }
                }
                None => {
                    self.done = true;
                    if let Some(f) = self.on_clean_end.take() {
                        f();
                    }
                    self.decoder.finish().map_err(|e| {
                        SourceError::Decode(format!("snapshot of {}: {e}", self.table))
                    })?;
                }
            }
        }
        Ok(self.builder.finish())
    }

    pub fn rows(&self) -> u64 {
        self.decoder.rows()
    }

    /// The table has no key (a multiset).
    pub fn keyless(&self) -> bool {
        self.builder.shape().keyless()
    }
}

impl UnitReader for SnapshotReader {
    async fn next_batch(&mut self) -> Result<Option<TableBatch>, SourceError> {
        SnapshotReader::next_batch(self).await
    }

    fn rows(&self) -> u64 {
        SnapshotReader::rows(self)
    }
}
