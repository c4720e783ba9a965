//! Initial snapshot: each table read with `COPY (SELECT ...) TO STDOUT
//! (FORMAT binary)` and decoded straight into Arrow batches (op 'r').
//!
//! Snapshot rows carry the stream position the pipeline resumes from as
//! their version, and are read after it: a change streamed later has a
//! higher version and wins, while a change the COPY already saw is replayed
//! with the same outcome. So a snapshot may be repeated after a crash, and a
//! table added later is copied while streaming goes on.

use std::collections::HashSet;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio_postgres::{Client, CopyOutStream};

use super::assembler::{describe_table, ColumnSpec, TypeCache};
use super::catalog;
use super::copy_binary::CopyBinaryDecoder;
use super::error::SourceError;
use super::types::TypeOptions;
use crate::batch::{RowMeta, TableBuilder};
use crate::change::{TableBatch, OP_READ};
use crate::config::{quote_ident, TableName};
use crate::lsn::Lsn;

/// Streams one table's rows as batches of at most `max_rows`.
pub struct SnapshotReader {
    table: TableName,
    stream: Pin<Box<CopyOutStream>>,
    decoder: CopyBinaryDecoder,
    builder: TableBuilder,
    meta: RowMeta,
    max_rows: usize,
    done: bool,
}

impl SnapshotReader {
    /// Looks the table up, then starts its COPY. `version` is the stream
    /// position the pipeline resumes from.
    pub async fn start(
        client: &Client,
        table: &TableName,
        types: &mut TypeCache,
        options: &TypeOptions,
        version: Lsn,
        max_rows: usize,
    ) -> Result<SnapshotReader, SourceError> {
        let rows = client
            .query(
                "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attnotnull,
                        CASE c.relreplident
                          WHEN 'f' THEN true
                          WHEN 'n' THEN false
                          WHEN 'i' THEN a.attnum = ANY(coalesce((SELECT i.indkey::int2[] FROM pg_index i
                                          WHERE i.indrelid = c.oid AND i.indisreplident LIMIT 1), '{}'))
                          ELSE a.attnum = ANY(coalesce((SELECT i.indkey::int2[] FROM pg_index i
                                          WHERE i.indrelid = c.oid AND i.indisprimary LIMIT 1), '{}'))
                        END
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0
                   AND NOT a.attisdropped AND a.attgenerated = ''
                 ORDER BY a.attnum",
                &[&table.schema, &table.name],
            )
            .await?;
        if rows.is_empty() {
            return Err(SourceError::NotReady(format!(
                "table {table} does not exist"
            )));
        }
        let oids: Vec<u32> = rows.iter().map(|r| r.get(1)).collect();
        catalog::resolve_types(client, &oids, types).await?;
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let specs = rows.iter().zip(&names).map(|(r, name)| ColumnSpec {
            name,
            type_oid: r.get(1),
            typmod: r.get(2),
            not_null: r.get(3),
            is_key: r.get(4),
        });
        let (shape, mappings) = describe_table(table, specs, types, options, &mut HashSet::new())?;
        if let Some(m) = mappings.iter().find(|m| m.needs_text_format) {
            return Err(SourceError::NotReady(format!(
                "table {table}: type {} has no binary form, so it cannot be copied (set source.postgres.initial_snapshot = false and load the table yourself)",
                m.pg_type
            )));
        }
        let select: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
        let sql = format!(
            "COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)",
            select.join(", "),
            table.quoted()
        );
        let stream = client.copy_out(&sql).await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        Ok(SnapshotReader {
            table: table.clone(),
            stream: Box::pin(stream),
            decoder: CopyBinaryDecoder::new(names.len()),
            builder: TableBuilder::new(shape, &mappings),
            meta: RowMeta {
                op: OP_READ,
                lsn: version.0,
                version: version.0,
                commit_ts: now,
            },
            max_rows: max_rows.max(1),
            done: false,
        })
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
                        .map_err(|e| {
                            SourceError::Decode(format!("snapshot of {}: {e}", self.table))
                        })?;
                    self.builder.finish_rows(n, self.meta);
                    if self.builder.rows() >= self.max_rows {
                        return Ok(self.builder.finish());
                    }
                }
                None => {
                    self.done = true;
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
}
