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
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio_postgres::{Client, CopyOutStream};

use super::assembler::{describe_table, ColumnSpec, TypeCache};
use super::catalog;
use super::copy_binary::CopyBinaryDecoder;
use super::error::SourceError;
use super::types::{ArrowMapping, DecoderKind, TypeOptions};
use crate::batch::{RowMeta, TableBuilder};
use crate::change::{TableBatch, TableShape, OP_READ};
use crate::config::{quote_ident, TableName};
use crate::lsn::Lsn;

/// A table's column names, shape and mappings, from the catalog.
pub async fn describe(
    client: &Client,
    table: &TableName,
    types: &mut TypeCache,
    options: &TypeOptions,
) -> Result<(Vec<String>, Arc<TableShape>, Vec<ArrowMapping>), SourceError> {
    let cols = catalog::table_columns(client, table).await?;
    if cols.is_empty() {
        return Err(SourceError::NotReady(format!(
            "table {table} does not exist"
        )));
    }
    let oids: Vec<u32> = cols.iter().map(|c| c.type_oid).collect();
    catalog::resolve_types(client, &oids, types).await?;
    let specs = cols.iter().map(|c| ColumnSpec {
        name: &c.name,
        type_oid: c.type_oid,
        typmod: c.typmod,
        not_null: c.not_null,
        is_key: c.is_key,
    });
    let (shape, mappings) = describe_table(table, specs, types, options, &mut HashSet::new())?;
    Ok((cols.into_iter().map(|c| c.name).collect(), shape, mappings))
}

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
        let (names, shape, mut mappings) = describe(client, table, types, options).await?;
        // Types without a binary form are copied as their text (the same
        // form the stream sends for them), so the Arrow column is the same.
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
