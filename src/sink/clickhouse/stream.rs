//! A copy unit's INSERT: one Arrow IPC stream sent batch by batch as the
//! body of one `INSERT ... FORMAT ArrowStream` (see `copy_stream` in
//! `sink.rs` and docs/clickhouse-sink.md).

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;
use clickhouse::insert_formatted::InsertFormatted;

use super::{map_error, SinkError};
use crate::config::{ClickHouseSinkConfig, TableName};

pub(super) fn ipc_error(table: &TableName, e: arrow::error::ArrowError) -> SinkError {
    SinkError::Table {
        table: table.clone(),
        message: format!("Arrow IPC: {e}"),
    }
}

/// An INSERT in progress whose body is one Arrow IPC stream.
pub(super) struct StreamedInsert {
    ins: InsertFormatted,
    writer: StreamWriter<Vec<u8>>,
    table: TableName,
    sql: String,
    schema: SchemaRef,
}

impl StreamedInsert {
    pub(super) fn start(
        ins: InsertFormatted,
        table: &TableName,
        sql: String,
        first: &RecordBatch,
    ) -> Result<Self, SinkError> {
        let schema = first.schema();
        Ok(StreamedInsert {
            ins,
            writer: StreamWriter::try_new(Vec::new(), &schema).map_err(|e| ipc_error(table, e))?,
            table: table.clone(),
            sql,
            schema,
        })
    }

    /// Whether `batch` (to go into `sql`) can join this INSERT's stream.
    pub(super) fn takes(&self, sql: &str, batch: &RecordBatch) -> bool {
        self.sql == sql && *self.schema == *batch.schema()
    }

    pub(super) async fn write(
        &mut self,
        batch: &RecordBatch,
        cfg: &ClickHouseSinkConfig,
    ) -> Result<(), SinkError> {
        let table = &self.table;
        self.writer.write(batch).map_err(|e| ipc_error(table, e))?;
        self.send(cfg).await
    }

    /// Hands what the writer produced to the request body.
    async fn send(&mut self, cfg: &ClickHouseSinkConfig) -> Result<(), SinkError> {
        let bytes = std::mem::take(self.writer.get_mut());
        if bytes.is_empty() {
            return Ok(());
        }
        self.ins
            .send(Bytes::from(bytes))
            .await
            .map_err(|e| map_error(cfg, e))
    }

    /// Ends the stream and the INSERT; returns once ClickHouse has written
    /// every row of it.
    pub(super) async fn end(mut self, cfg: &ClickHouseSinkConfig) -> Result<(), SinkError> {
        let table = &self.table;
        self.writer.finish().map_err(|e| ipc_error(table, e))?;
        self.send(cfg).await?;
        self.ins.end().await.map_err(|e| map_error(cfg, e))?;
        tracing::debug!(table = %self.table, "copy INSERT written");
        Ok(())
    }
}
