//! The commit protocol and the table lifecycle against a scripted source,
//! the memory sink and the memory store: no server needed. Copies (and
//! their positions and versions) are in `copies.rs`.

mod copies;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, UInt64Type};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::core::health::Report;
use crate::core::meta::{batch_schema, MetaBuilder, RowMeta, LSN, OP_INSERT, OP_READ};
use crate::core::position::SourceIdentity;
use crate::core::{ColumnInfo, Flush, LogicalType, TableBatch, TableShape};
use crate::sink::memory::{MemorySink, MemorySinkHandle};
use crate::sink::{Sink, SinkError};
use crate::source::{ChangeStream, Copier, Prepared, SnapshotUnit, SourceError, UnitReader};
use crate::state::memory::{MemoryStore, MemoryStoreHandle};
use crate::state::SnapshotProgress;

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, entry: String) {
    log.lock().unwrap().push(entry);
}

fn table(name: &str) -> TableName {
    TableName::new("public", name)
}

/// A batch of `ids` for `t`, every row at commit position `lsn`.
fn rows(t: &str, ids: &[i64], lsn: u64, op: u8) -> SinkItem {
    let shape = Arc::new(TableShape {
        table: table(t),
        before_images: false,
        columns: vec![ColumnInfo {
            name: "id".into(),
            source_type: "int8".into(),
            logical: LogicalType::Int(64),
            data_type: DataType::Int64,
            is_key: true,
            nullable: false,
            added_default: Default::default(),
        }],
    });
    let mut meta = MetaBuilder::with_capacity(ids.len());
    meta.append_n(
        ids.len(),
        RowMeta {
            op,
            lsn,
            version: lsn,
            commit_ts: 0,
        },
    );
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(ids.to_vec()))];
    arrays.extend(meta.finish());
    let batch = RecordBatch::try_new(batch_schema(&shape), arrays).unwrap();
    SinkItem::Rows(TableBatch { shape, batch })
}

fn flush(items: Vec<SinkItem>, position: u64) -> Flush<u64> {
    Flush {
        items,
        position: Some(position),
        source_time: None,
    }
}

/// The highest `_lsn` of the applied rows (what a flush carried).
fn max_lsn(items: &[SinkItem]) -> Option<u64> {
    items
        .iter()
        .filter_map(|i| match i {
            SinkItem::Rows(b) => b.batch.column_by_name(LSN).map(|c| {
                c.as_primitive::<UInt64Type>()
                    .values()
                    .iter()
                    .copied()
                    .max()
            }),
            SinkItem::Truncate(..) => None,
        })
        .flatten()
        .max()
}

/// A source that replays a script. Its position is a plain number.
struct ScriptedSource {
    /// Flushes the stream sends, in order (those at or before `from` are skipped).
    script: Vec<Flush<u64>>,
    /// Rows per snapshot unit, by unit id (every table has the same units).
    units: Vec<(String, Vec<i64>)>,
    /// A table whose rows make the stream fail as unreadable (once).
    unreadable: Option<TableName>,
    /// A unit whose reader yields only once the log holds an entry (a
    /// server that stalls): (unit id, entry).
    stalled_unit: Option<(String, String)>,
    /// Flushes the stream sends only once told to stop (its drain).
    drain: Vec<Flush<u64>>,
    log: Log,
}

impl ScriptedSource {
    fn new(script: Vec<Flush<u64>>, log: &Log) -> Self {
        ScriptedSource {
            script,
            units: Vec::new(),
            unreadable: None,
            stalled_unit: None,
            drain: Vec::new(),
            log: log.clone(),
        }
    }
}

struct ScriptedStream {
    flushes: Vec<Flush<u64>>,
    /// Set when the script reaches a table that cannot be read.
    fail_on: Option<TableName>,
    drain: Vec<Flush<u64>>,
    log: Log,
}

struct ScriptedUnit {
    batch: Option<TableBatch>,
    rows: u64,
    /// Yields only once the log holds this entry.
    until: Option<(String, Log)>,
}

/// The scripted source's copier: units per table as scripted.
#[derive(Clone)]
struct ScriptedCopier {
    units: Vec<(String, Vec<i64>)>,
    stalled_unit: Option<(String, String)>,
    log: Log,
}

impl Copier for ScriptedCopier {
    type Position = u64;
    type Reader = ScriptedUnit;

    async fn plan(&self, t: &TableName) -> Result<Vec<SnapshotUnit>, SourceError> {
        Ok(self
            .units
            .iter()
            .map(|(id, ids)| SnapshotUnit {
                table: t.clone(),
                id: id.clone(),
                estimated_rows: Some(ids.len() as u64),
            })
            .collect())
    }

    async fn open(&self, unit: &SnapshotUnit, at: &u64) -> Result<ScriptedUnit, SourceError> {
        push(
            &self.log,
            format!("open {} {} at {at}", unit.table.name, unit.id),
        );
        let ids = &self.units.iter().find(|(id, _)| *id == unit.id).unwrap().1;
        let SinkItem::Rows(batch) = rows(&unit.table.name, ids, *at, OP_READ) else {
            unreachable!()
        };
        Ok(ScriptedUnit {
            rows: ids.len() as u64,
            batch: Some(batch),
            until: self
                .stalled_unit
                .as_ref()
                .filter(|(id, _)| *id == unit.id)
                .map(|(_, entry)| (entry.clone(), self.log.clone())),
        })
    }

    fn version(&self, at: &u64) -> u64 {
        *at
    }
}

impl Source for ScriptedSource {
    type Position = u64;
    type Stream = ScriptedStream;
    type Copier = ScriptedCopier;

    async fn prepare(
        &mut self,
        saved: Option<(&u64, &SourceIdentity)>,
    ) -> Result<Prepared<u64>, SourceError> {
        Ok(Prepared {
            identity: [("source".to_string(), "script".to_string())].into(),
            start: saved.map(|(p, _)| *p).unwrap_or(0),
        })
    }

    async fn prepare_copy_only(&mut self) -> Result<Prepared<u64>, SourceError> {
        Ok(Prepared {
            identity: [("mode".to_string(), "snapshot".to_string())].into(),
            start: 7,
        })
    }

    fn copier(&self) -> ScriptedCopier {
        ScriptedCopier {
            units: self.units.clone(),
            stalled_unit: self.stalled_unit.clone(),
            log: self.log.clone(),
        }
    }

    async fn start_stream(
        &mut self,
        from: &u64,
        tables: &[TableName],
    ) -> Result<ScriptedStream, SourceError> {
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        push(
            &self.log,
            format!("stream from {from} tables {}", names.join(",")),
        );
        let mut flushes: Vec<Flush<u64>> = self
            .script
            .iter()
            .filter(|f| f.position.is_some_and(|p| p > *from))
            .cloned()
            .collect();
        for f in &mut flushes {
            f.retain_tables(|t| tables.contains(t));
        }
        let fail_on = self.unreadable.take().filter(|t| tables.contains(t));
        let mut drain = std::mem::take(&mut self.drain);
        for f in &mut drain {
            f.retain_tables(|t| tables.contains(t));
        }
        Ok(ScriptedStream {
            flushes,
            fail_on,
            drain,
            log: self.log.clone(),
        })
    }

    async fn healthcheck(&self) -> Report {
        Report::default()
    }
}

impl UnitReader for ScriptedUnit {
    async fn next_batch(&mut self) -> Result<Option<TableBatch>, SourceError> {
        if let Some((entry, log)) = &self.until {
            while !log.lock().unwrap().contains(entry) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(self.batch.take())
    }

    fn rows(&self) -> u64 {
        self.rows
    }
}

impl ChangeStream for ScriptedStream {
    type Position = u64;

    async fn run(
        self,
        out: mpsc::Sender<Flush<u64>>,
        mut acks: watch::Receiver<u64>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let log = self.log.clone();
        let mut sent = *acks.borrow();
        for f in self.flushes {
            if let Some(t) = &self.fail_on {
                if f.items
                    .iter()
                    .any(|i| matches!(i, SinkItem::Rows(b) if &b.shape.table == t))
                {
                    return Err(SourceError::TableData {
                        table: t.clone(),
                        message: "a value this column cannot hold".into(),
                    });
                }
            }
            sent = sent.max(f.position.unwrap_or(0));
            if out.send(f).await.is_err() {
                return Ok(());
            }
        }
        // Record every acknowledgement until shutdown, then drain.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if !self.drain.is_empty() {
                        // After the copy task has ended (it stops at once).
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    for f in self.drain {
                        if out.send(f).await.is_err() {
                            break;
                        }
                    }
                    // As a PostgreSQL session does: the last position sent
                    // must be acknowledged first, unless no one will.
                    while *acks.borrow_and_update() < sent {
                        if acks.changed().await.is_err() {
                            break;
                        }
                    }
                    return Ok(());
                }
                changed = acks.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let p = *acks.borrow_and_update();
                    push(&log, format!("ack {p}"));
                }
            }
        }
    }
}

struct Harness {
    log: Log,
    sink: MemorySinkHandle,
    store: MemoryStoreHandle,
}

fn options(tables: &[&str], initial_snapshot: bool) -> PipelineOptions {
    PipelineOptions {
        name: "test".into(),
        tables: tables.iter().map(|t| table(t)).collect(),
        initial_snapshot,
        status_file: None,
        crash_after_sink_write: None,
        copy_readers: 2,
        copy_only: false,
        progress: Arc::new(LogView),
        resync_on_position_lost: false,
        // Most tests follow each scripted flush; merging has its own.
        merge: MergeLimit { rows: 0, bytes: 0 },
    }
}

/// Runs the pipeline until the source saw the acknowledgement of
/// `until` (or the timeout), then shuts it down.
async fn run_until(
    source: ScriptedSource,
    sink: MemorySink,
    store: MemoryStore,
    opts: PipelineOptions,
    log: &Log,
    until: u64,
) -> Result<(), PipelineError> {
    let (_control, rx) = mpsc::channel(1);
    run_until_with(source, sink, store, opts, log, until, rx).await
}

async fn run_until_with(
    source: ScriptedSource,
    sink: MemorySink,
    store: MemoryStore,
    opts: PipelineOptions,
    log: &Log,
    until: u64,
    control: mpsc::Receiver<Control>,
) -> Result<(), PipelineError> {
    let ack = format!("ack {until}");
    run_watching(source, sink, store, opts, control, log, &[&ack])
        .await
        .0
}

/// Runs the pipeline until the log holds every entry of `until`, then
/// shuts it down; true when the entries came.
async fn run_until_logged(
    source: ScriptedSource,
    sink: MemorySink,
    store: MemoryStore,
    opts: PipelineOptions,
    control: mpsc::Receiver<Control>,
    log: &Log,
    until: &[&str],
) -> bool {
    let (r, seen) = run_watching(source, sink, store, opts, control, log, until).await;
    r.unwrap();
    seen
}

/// Runs the pipeline until the log holds every entry of `until` (20 s at
/// most), then shuts it down: its result, and whether the entries came.
async fn run_watching(
    source: ScriptedSource,
    sink: MemorySink,
    store: MemoryStore,
    opts: PipelineOptions,
    control: mpsc::Receiver<Control>,
    log: &Log,
    until: &[&str],
) -> (Result<(), PipelineError>, bool) {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let watch_log = log.clone();
    let want: Vec<String> = until.iter().map(|e| e.to_string()).collect();
    let watcher = tokio::spawn(async move {
        let mut seen = false;
        for _ in 0..2000 {
            let log = watch_log.lock().unwrap().clone();
            if want.iter().all(|w| log.contains(w)) {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        seen
    });
    let r = run_pipeline(source, sink, store, opts, control, shutdown).await;
    // The pipeline may end on its own (an error) before the watcher does.
    watcher.abort();
    let seen = watcher.await.unwrap_or(false);
    (r, seen)
}

fn harness(store: Option<&MemoryStoreHandle>) -> (Harness, MemorySink, MemoryStore) {
    let log: Log = Arc::default();
    let (sink, sink_handle) = MemorySink::new();
    let (store, store_handle) = match store {
        Some(h) => (MemoryStore::reopen(h), h.clone()),
        None => MemoryStore::new(),
    };
    let l = log.clone();
    sink_handle.on_apply(Box::new(move |items| {
        if let Some(p) = max_lsn(items) {
            push(&l, format!("apply {p}"));
        }
    }));
    let l = log.clone();
    store_handle.on_save(Box::new(move |v| {
        push(&l, format!("save {}", v["position"]));
    }));
    (
        Harness {
            log,
            sink: sink_handle,
            store: store_handle,
        },
        sink,
        store,
    )
}

fn position_of(log: &[String], entry: &str) -> usize {
    log.iter()
        .position(|e| e == entry)
        .unwrap_or_else(|| panic!("{entry:?} missing from {log:?}"))
}

#[tokio::test]
async fn sink_durable_then_state_saved_then_position_acknowledged() {
    let (h, sink, store) = harness(None);
    let script = vec![
        flush(vec![rows("a", &[1, 2], 10, OP_INSERT)], 10),
        flush(vec![rows("a", &[3], 20, OP_INSERT)], 20),
        flush(vec![rows("a", &[4, 5, 6], 30, OP_INSERT)], 30),
    ];
    let source = ScriptedSource::new(script, &h.log);
    run_until(source, sink, store, options(&["a"], false), &h.log, 30)
        .await
        .unwrap();
    let log = h.log.lock().unwrap().clone();
    for p in [10, 20, 30] {
        let apply = position_of(&log, &format!("apply {p}"));
        let save = position_of(&log, &format!("save {p}"));
        assert!(apply < save, "applied before saved, {p}: {log:?}");
        // Acknowledgements may coalesce (the source sees the latest), but
        // none comes before its save.
        if let Some(ack) = log.iter().position(|e| *e == format!("ack {p}")) {
            assert!(save < ack, "saved before acknowledged, {p}: {log:?}");
        }
    }
    assert!(log.contains(&"ack 30".to_string()), "{log:?}");
    assert_eq!(h.sink.rows_of(&table("a")), 6);
    let state: PipelineState<u64> = h.store.state().unwrap();
    assert_eq!(state.position, Some(30));
    assert_eq!(state.lifecycle(&table("a")), Lifecycle::Streaming);
}

#[tokio::test]
async fn flushes_queued_behind_a_busy_sink_are_applied_as_one() {
    let (h, sink, store) = harness(None);
    // The source queues the first two (the channel's capacity) before the
    // pipeline takes any: 2 rows are under the limit of 3, so the second
    // joins the first; 3 rows are not, so the third goes alone.
    let script = vec![
        flush(vec![rows("a", &[1, 2], 10, OP_INSERT)], 10),
        flush(vec![rows("a", &[3], 20, OP_INSERT)], 20),
        flush(vec![rows("a", &[4, 5, 6], 30, OP_INSERT)], 30),
    ];
    let source = ScriptedSource::new(script, &h.log);
    let mut opts = options(&["a"], false);
    opts.merge = MergeLimit {
        rows: 3,
        bytes: usize::MAX,
    };
    run_until(source, sink, store, opts, &h.log, 30)
        .await
        .unwrap();
    let log = h.log.lock().unwrap().clone();
    let applies: Vec<&String> = log.iter().filter(|e| e.starts_with("apply")).collect();
    assert_eq!(applies, vec!["apply 20", "apply 30"], "{log:?}");
    for p in [20, 30] {
        let save = position_of(&log, &format!("save {p}"));
        assert!(position_of(&log, &format!("apply {p}")) < save, "{log:?}");
        if let Some(ack) = log.iter().position(|e| *e == format!("ack {p}")) {
            assert!(save < ack, "{log:?}");
        }
    }
    assert!(!log.contains(&"save 10".to_string()), "{log:?}");
    // One batch per table per apply, rows in order.
    let batches: Vec<usize> = h
        .sink
        .applied()
        .iter()
        .filter(|i| matches!(i, SinkItem::Rows(_)))
        .map(SinkItem::rows)
        .collect();
    assert_eq!(batches, vec![3, 3]);
    assert_eq!(h.sink.rows_of(&table("a")), 6);
}

#[tokio::test]
async fn a_merge_stops_at_its_byte_limit() {
    let (h, sink, store) = harness(None);
    let first = rows("a", &[1, 2], 10, OP_INSERT);
    // The first flush alone fills the byte limit: the second, queued behind
    // it, is not joined to it although the rows would allow it.
    let limit = first.arrow_bytes();
    let script = vec![
        flush(vec![first], 10),
        flush(vec![rows("a", &[3], 20, OP_INSERT)], 20),
        flush(vec![rows("a", &[4, 5, 6], 30, OP_INSERT)], 30),
    ];
    let source = ScriptedSource::new(script, &h.log);
    let mut opts = options(&["a"], false);
    opts.merge = MergeLimit {
        rows: 1000,
        bytes: limit,
    };
    run_until(source, sink, store, opts, &h.log, 30)
        .await
        .unwrap();
    let log = h.log.lock().unwrap().clone();
    let applies: Vec<&String> = log.iter().filter(|e| e.starts_with("apply")).collect();
    assert_eq!(
        applies.first().map(|s| s.as_str()),
        Some("apply 10"),
        "{log:?}"
    );
    assert_eq!(h.sink.rows_of(&table("a")), 6);
}

#[test]
fn the_merge_limit_caps_max_bytes() {
    let limit = MergeLimit::new(100_000, 64 << 20);
    assert_eq!(limit.rows, 100_000);
    assert_eq!(limit.bytes, MERGE_MAX_BYTES);
    assert_eq!(MergeLimit::new(10, 1 << 20).bytes, 1 << 20);
}

#[tokio::test(start_paused = true)]
async fn transient_sink_failures_are_retried_without_losing_or_reordering() {
    let (h, sink, store) = harness(None);
    h.sink.fail_transiently(3);
    let script = vec![
        flush(vec![rows("a", &[1], 10, OP_INSERT)], 10),
        flush(vec![rows("a", &[2], 20, OP_INSERT)], 20),
    ];
    let source = ScriptedSource::new(script, &h.log);
    run_until(source, sink, store, options(&["a"], false), &h.log, 20)
        .await
        .unwrap();
    let log = h.log.lock().unwrap().clone();
    assert!(position_of(&log, "apply 10") < position_of(&log, "apply 20"));
    assert!(position_of(&log, "save 20") < position_of(&log, "ack 20"));
    assert_eq!(h.sink.rows_of(&table("a")), 2);
}

#[tokio::test]
async fn a_failed_table_is_not_written_after_a_restart() {
    // First run: the sink stops table b (as for an incompatible type change).
    let (h, sink, store) = harness(None);
    h.sink.fail_table(table("b"), "column \"v\" changed type");
    let script = vec![
        flush(
            vec![
                rows("a", &[1], 10, OP_INSERT),
                rows("b", &[1], 10, OP_INSERT),
            ],
            10,
        ),
        flush(
            vec![
                rows("a", &[2], 20, OP_INSERT),
                rows("b", &[2], 20, OP_INSERT),
            ],
            20,
        ),
    ];
    let source = ScriptedSource::new(script.clone(), &h.log);
    run_until(source, sink, store, options(&["a", "b"], false), &h.log, 20)
        .await
        .unwrap();
    assert_eq!(h.sink.rows_of(&table("b")), 0);
    let state: PipelineState<u64> = h.store.state().unwrap();
    match state.lifecycle(&table("b")) {
        Lifecycle::Failed { reason, since } => {
            assert!(reason.contains("changed type"), "{reason}");
            assert_eq!(since.as_deref(), Some("0"));
        }
        other => panic!("b should be failed, is {other:?}"),
    }

    // Restart with a fresh sink that would accept b: b stays stopped, a
    // goes on, and the stream is not even asked for b.
    let (h2, sink, store) = harness(Some(&h.store));
    let mut more = script;
    more.push(flush(
        vec![
            rows("a", &[3], 30, OP_INSERT),
            rows("b", &[3], 30, OP_INSERT),
        ],
        30,
    ));
    let source = ScriptedSource::new(more, &h2.log);
    run_until(
        source,
        sink,
        store,
        options(&["a", "b"], false),
        &h2.log,
        30,
    )
    .await
    .unwrap();
    assert_eq!(
        h2.sink.rows_of(&table("b")),
        0,
        "nothing written for the failed table"
    );
    assert_eq!(
        h2.sink.rows_of(&table("a")),
        1,
        "only the change after the saved position"
    );
    let log = h2.log.lock().unwrap().clone();
    assert!(
        log.contains(&"stream from 20 tables a".to_string()),
        "{log:?}"
    );
    let state: PipelineState<u64> = h2.store.state().unwrap();
    assert!(!state.writes(&table("b")));
    assert_eq!(state.position, Some(30));
}

#[tokio::test]
async fn an_unreadable_table_stops_only_that_table() {
    let (h, sink, store) = harness(None);
    let script = vec![
        flush(vec![rows("a", &[1], 10, OP_INSERT)], 10),
        flush(
            vec![
                rows("a", &[2], 20, OP_INSERT),
                rows("b", &[1], 20, OP_INSERT),
            ],
            20,
        ),
        flush(vec![rows("a", &[3], 30, OP_INSERT)], 30),
    ];
    let mut source = ScriptedSource::new(script, &h.log);
    source.unreadable = Some(table("b"));
    run_until(source, sink, store, options(&["a", "b"], false), &h.log, 30)
        .await
        .unwrap();
    let log = h.log.lock().unwrap().clone();
    // The second session resumes from the last saved position without b.
    assert!(
        log.contains(&"stream from 10 tables a".to_string()),
        "{log:?}"
    );
    assert_eq!(h.sink.rows_of(&table("a")), 3);
    assert_eq!(h.sink.rows_of(&table("b")), 0);
    let state: PipelineState<u64> = h.store.state().unwrap();
    assert!(matches!(
        state.lifecycle(&table("b")),
        Lifecycle::Failed { .. }
    ));
}

#[test]
fn saved_lifecycle_round_trips_as_json() {
    let mut s = PipelineState::<u64>::new(BTreeMap::new(), Some(1));
    s.set_lifecycle(
        &table("x"),
        Lifecycle::Failed {
            reason: "r".into(),
            since: Some("1".into()),
        },
    );
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["tables"]["public.x"]["state"], "failed");
    let back: PipelineState<u64> = serde_json::from_value(v).unwrap();
    assert_eq!(back, s);
}
