//! Initial snapshot: each table read with `COPY (SELECT ...) TO STDOUT
//! (FORMAT binary)` and decoded straight into Arrow batches (op 'r').
//!
//! Snapshot rows carry the stream position the pipeline resumes from as
//! their version, and are read after it: a change streamed later has a
//! higher version and wins, while a change the COPY already saw is replayed
//! with the same outcome. So a snapshot may be repeated after a crash, and a
//! table added later is copied while streaming goes on.

use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio_postgres::{Client, CopyOutStream};

use super::builder::TableBuilder;
use super::copy_binary::CopyBinaryDecoder;
use super::lsn::Lsn;
use super::setup::{describe, TableDescription};
use super::types::TypeCache;
use super::types::{DecoderKind, TypeOptions};
use crate::config::{quote_ident, TableName};
use crate::core::meta::{RowMeta, OP_READ};
use crate::core::TableBatch;
use crate::source::{SourceError, UnitReader};

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
        let TableDescription {
            names,
            shape,
            mut mappings,
        } = describe(client, table, types, options).await?;
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
                        .map_err(|e| SourceError::TableData {
                            table: self.table.clone(),
                            message: format!("snapshot: {e}"),
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

impl UnitReader for SnapshotReader {
    async fn next_batch(&mut self) -> Result<Option<TableBatch>, SourceError> {
        SnapshotReader::next_batch(self).await
    }

    fn rows(&self) -> u64 {
        SnapshotReader::rows(self)
    }
}
