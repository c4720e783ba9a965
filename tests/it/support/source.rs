//! Running the PostgreSQL source in-process and collecting what it emits.

use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{UInt16Type, UInt64Type, UInt8Type};
use sluice::config::{BatchConfig, PostgresSourceConfig, TableName, UnconstrainedNumeric};
use sluice::core::{meta, Flush, SinkItem, TableBatch};
use sluice::source::postgres::lsn::Lsn;
use sluice::source::postgres::stream::{Session, SessionOptions};
use sluice::source::postgres::SourceError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{conn_info, unique_name};

pub fn source_config(url: &str, tables: &[&str]) -> PostgresSourceConfig {
    let name = unique_name("src");
    PostgresSourceConfig {
        conn: conn_info(url),
        slot: name.clone(),
        publication: name,
        tables: tables
            .iter()
            .map(|t| TableName::parse(t).unwrap())
            .collect(),
        create_publication: true,
        create_slot: true,
        initial_snapshot: false,
        binary: true,
        status_interval: Duration::from_secs(1),
        unconstrained_numeric: UnconstrainedNumeric::Text,
        heartbeat_interval: None,
        max_retained_wal: None,
        on_slot_lost: sluice::config::OnSlotLost::Stop,
        publish: Default::default(),
    }
}

pub fn small_batches() -> BatchConfig {
    BatchConfig {
        max_rows: 10_000,
        max_bytes: 16 << 20,
        max_delay: Duration::from_millis(100),
    }
}

/// A running source session and the ends of its channels.
pub struct RunningSource {
    pub flushes: mpsc::Receiver<Flush<Lsn>>,
    pub acks: watch::Sender<Lsn>,
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<(), SourceError>>,
}

pub async fn start_source(
    cfg: &PostgresSourceConfig,
    batch: BatchConfig,
    confirm: bool,
    startup: Vec<(String, String)>,
) -> RunningSource {
    let opts = SessionOptions {
        resume: None,
        tables: cfg.tables.clone(),
        ensure_slot: true,
        spill_dir: std::env::temp_dir().join(unique_name("spill")),
        confirm,
        startup,
    };
    let session = Session::start(cfg, batch, opts)
        .await
        .unwrap_or_else(|e| panic!("cannot start replication from the test PostgreSQL: {e}"));
    let (tx, rx) = mpsc::channel(2);
    let (ack_tx, ack_rx) = watch::channel(Lsn::ZERO);
    let stop = CancellationToken::new();
    let task = tokio::spawn(session.run(tx, ack_rx, stop.clone()));
    RunningSource {
        flushes: rx,
        acks: ack_tx,
        stop,
        task,
    }
}

/// One decoded change, flattened from the batches for easy assertions.
#[derive(Debug, Clone)]
pub struct Row {
    pub table: String,
    pub op: char,
    pub version: u64,
    pub lsn: u64,
    pub batch: TableBatch,
    pub index: usize,
    pub unchanged: Vec<String>,
}

impl Row {
    pub fn column(&self, name: &str) -> arrow::array::ArrayRef {
        self.batch
            .batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .clone()
    }
}

pub fn rows_of(flush: &Flush<Lsn>) -> Vec<Row> {
    let mut out = Vec::new();
    for item in &flush.items {
        let SinkItem::Rows(tb) = item else { continue };
        let b = &tb.batch;
        let op = b
            .column_by_name(meta::OP)
            .unwrap()
            .as_primitive::<UInt8Type>()
            .clone();
        let version = b
            .column_by_name(meta::VERSION)
            .unwrap()
            .as_primitive::<UInt64Type>()
            .clone();
        let lsn = b
            .column_by_name(meta::LSN)
            .unwrap()
            .as_primitive::<UInt64Type>()
            .clone();
        let unchanged = b
            .column_by_name(meta::UNCHANGED)
            .unwrap()
            .as_list::<i32>()
            .clone();
        for i in 0..b.num_rows() {
            let names = if unchanged.is_null(i) {
                Vec::new()
            } else {
                let v = unchanged.value(i);
                v.as_primitive::<UInt16Type>()
                    .values()
                    .iter()
                    .map(|&c| tb.shape.columns[c as usize].name.clone())
                    .collect()
            };
            out.push(Row {
                table: tb.shape.table.to_string(),
                op: op.value(i) as char,
                version: version.value(i),
                lsn: lsn.value(i),
                batch: tb.clone(),
                index: i,
                unchanged: names,
            });
        }
    }
    out
}

/// Receives flushes until `n` rows arrived (acknowledging each checkpoint
/// when `ack`), or panics after `timeout`.
pub async fn collect_rows(
    src: &mut RunningSource,
    n: usize,
    timeout: Duration,
    ack: bool,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while rows.len() < n {
        let flush = tokio::time::timeout_at(deadline, src.flushes.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out: {} of {n} rows arrived", rows.len()))
            .expect("source ended");
        rows.extend(rows_of(&flush));
        if ack {
            if let Some(c) = flush.position {
                let _ = src.acks.send(c);
            }
        }
    }
    rows
}
