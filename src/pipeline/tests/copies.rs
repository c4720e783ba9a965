//! Copies against the scripted source: resumed units, resyncs beside the
//! stream, one-shot copies, units written as one, and the positions and
//! versions a copy may be at.

use super::*;

/// A state at 5 where an earlier run planned table a as u1, u2 and finished
/// u1, at `version`.
fn a_half_copied(version: Option<u64>) -> MemoryStoreHandle {
    let (mut store_seed, seed_handle) = MemoryStore::new();
    let mut seed = PipelineState::<u64>::new(
        [("source".to_string(), "script".to_string())].into(),
        Some(5),
    );
    let planned = |id: &str| crate::state::PlannedUnit {
        id: id.into(),
        estimated_rows: None,
    };
    seed.set_lifecycle(
        &table("a"),
        Lifecycle::Snapshotting {
            progress: SnapshotProgress {
                units: vec![planned("u1"), planned("u2")],
                units_done: ["u1".to_string()].into(),
                rows: 2,
                version,
            },
        },
    );
    store_seed.save(&seed).unwrap();
    seed_handle
}

#[tokio::test]
async fn a_copy_saved_without_its_version_is_copied_again_whole() {
    // Saved before copies recorded their version, when a shutdown could
    // still move the position past it: u1's rows may be at another version.
    let seed = a_half_copied(None);
    let (h, sink, store) = harness(Some(&seed));
    let mut source = ScriptedSource::new(Vec::new(), &h.log);
    source.units = vec![("u1".into(), vec![1, 2]), ("u2".into(), vec![3, 4, 5])];
    let done = run_until_logged(
        source,
        sink,
        store,
        options(&["a"], true),
        mpsc::channel(1).1,
        &h.log,
        &["stream from 5 tables a"],
    )
    .await;
    let log = h.log.lock().unwrap().clone();
    assert!(done, "{log:?}");
    assert!(log.contains(&"open a u1 at 5".to_string()), "{log:?}");
    assert!(log.contains(&"open a u2 at 5".to_string()), "{log:?}");
    assert_eq!(h.sink.finished_copies(), vec![(table("a"), 5)]);
}

#[tokio::test]
async fn the_snapshot_resumes_with_the_unfinished_units_only() {
    // A crashed earlier run planned table a as u1, u2 and finished u1.
    let seed_handle = a_half_copied(Some(5));
    let (h, sink, store) = harness(Some(&seed_handle));
    let mut source = ScriptedSource::new(
        vec![flush(vec![rows("a", &[9], 10, OP_INSERT)], 10)],
        &h.log,
    );
    source.units = vec![("u1".into(), vec![1, 2]), ("u2".into(), vec![3, 4, 5])];
    run_until(source, sink, store, options(&["a", "b"], true), &h.log, 10)
        .await
        .unwrap();
    let log = h.log.lock().unwrap().clone();
    assert!(
        !log.contains(&"open a u1 at 5".to_string()),
        "u1 was done: {log:?}"
    );
    assert!(log.contains(&"open a u2 at 5".to_string()), "{log:?}");
    assert!(
        log.contains(&"open b u1 at 5".to_string()) && log.contains(&"open b u2 at 5".to_string())
    );
    // Every table needed copying: nothing streamed until the copies were
    // done, then the stream starts where the copies' rows are consistent.
    let stream = position_of(&log, "stream from 5 tables a,b");
    for unit in ["open a u2 at 5", "open b u1 at 5", "open b u2 at 5"] {
        assert!(position_of(&log, unit) < stream, "{log:?}");
    }
    assert_eq!(h.sink.rows_of(&table("a")), 3 + 1, "{log:?}");
    assert_eq!(h.sink.rows_of(&table("b")), 5);
    let mut finished = h.sink.finished_copies();
    finished.sort();
    assert_eq!(finished, vec![(table("a"), 5), (table("b"), 5)]);
    let state: PipelineState<u64> = h.store.state().unwrap();
    assert_eq!(state.lifecycle(&table("a")), Lifecycle::Streaming);
    assert_eq!(state.lifecycle(&table("b")), Lifecycle::Streaming);
}

#[tokio::test]
async fn a_resync_copies_while_the_others_stream_then_replays_from_the_held_position() {
    let (h, sink, store) = harness(None);
    // a and b stream; then b is resynced while changes keep coming.
    let script: Vec<Flush<u64>> = (1..=6u64)
        .map(|i| {
            let id = [i as i64];
            flush(
                vec![
                    rows("a", &id, i * 10, OP_INSERT),
                    rows("b", &id, i * 10, OP_INSERT),
                ],
                i * 10,
            )
        })
        .collect();
    let mut source = ScriptedSource::new(script, &h.log);
    source.units = vec![("u1".into(), vec![100, 101])];
    let (control, rx) = mpsc::channel(4);
    let log = h.log.clone();
    let requester = tokio::spawn(async move {
        // Once the first session acknowledged 60, ask for the resync.
        for _ in 0..500 {
            if log.lock().unwrap().contains(&"ack 60".to_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        control
            .send(Control::Resync(vec![table("b")]))
            .await
            .unwrap();
        control
    });
    // Until the replay session started, with b in it.
    let replayed = run_until_logged(
        source,
        sink,
        store,
        options(&["a", "b"], false),
        rx,
        &h.log,
        &["stream from 60 tables a,b"],
    )
    .await;
    assert!(replayed, "{:?}", h.log.lock().unwrap());
    let _ = requester.await;
    let log = h.log.lock().unwrap().clone();
    // The copy of b is read at the saved position, then rows b never got
    // from the copy are removed, then the stream restarts from the same
    // position with b in it.
    let open = position_of(&log, "open b u1 at 60");
    let replay = position_of(&log, "stream from 60 tables a,b");
    assert!(open < replay, "{log:?}");
    assert_eq!(h.sink.finished_copies(), vec![(table("b"), 60)]);
    let state: PipelineState<u64> = h.store.state().unwrap();
    assert_eq!(state.lifecycle(&table("b")), Lifecycle::Streaming);
    assert_eq!(state.position, Some(60));
    // b got its 6 streamed rows, then the 2 copied, and nothing was lost.
    assert_eq!(h.sink.rows_of(&table("b")), 6 + 2);
}

#[tokio::test]
async fn copy_only_copies_and_stops_without_a_stream() {
    let (h, sink, store) = harness(None);
    let mut source = ScriptedSource::new(Vec::new(), &h.log);
    source.units = vec![("u1".into(), vec![1, 2, 3])];
    let mut opts = options(&["a"], true);
    opts.copy_only = true;
    let (_control, rx) = mpsc::channel(1);
    run_pipeline(source, sink, store, opts, rx, CancellationToken::new())
        .await
        .unwrap();
    let log = h.log.lock().unwrap().clone();
    assert!(log.contains(&"open a u1 at 7".to_string()), "{log:?}");
    assert!(!log.iter().any(|e| e.starts_with("stream")), "{log:?}");
    assert_eq!(h.sink.rows_of(&table("a")), 3);
    assert_eq!(h.sink.finished_copies(), vec![(table("a"), 7)]);
}

/// The memory sink taking each copy unit as one write, as ClickHouse does:
/// all of the unit, or (on a failure) none of it.
struct UnitSink(MemorySink);

impl Sink for UnitSink {
    const STREAMS_COPIES: bool = true;

    async fn open(&mut self) -> Result<(), SinkError> {
        self.0.open().await
    }

    async fn apply(&mut self, items: &[SinkItem]) -> Result<(), SinkError> {
        self.0.apply(items).await
    }

    async fn apply_copy(
        &mut self,
        batches: &mut mpsc::Receiver<TableBatch>,
    ) -> Result<u64, SinkError> {
        let mut items = Vec::new();
        while let Some(b) = batches.recv().await {
            items.push(SinkItem::Rows(b));
        }
        self.0.apply(&items).await?;
        Ok(items.iter().map(SinkItem::rows).sum::<usize>() as u64)
    }

    fn take_failed(&mut self) -> Vec<(TableName, String)> {
        self.0.take_failed()
    }

    fn reset_table(&mut self, table: &TableName) {
        self.0.reset_table(table)
    }

    async fn finish_copy(&mut self, table: &TableName, version: u64) -> Result<(), SinkError> {
        self.0.finish_copy(table, version).await
    }

    fn fork(&self) -> Self {
        UnitSink(self.0.fork())
    }

    async fn healthcheck(&self) -> Report {
        self.0.healthcheck().await
    }
}

#[tokio::test]
async fn a_unit_written_as_one_is_copied_again_whole_when_its_write_fails() {
    let (h, sink, store) = harness(None);
    h.sink.fail_transiently(1);
    let mut source = ScriptedSource::new(Vec::new(), &h.log);
    source.units = vec![("u1".into(), vec![1, 2, 3])];
    let mut opts = options(&["a"], true);
    opts.copy_only = true;
    let (_control, rx) = mpsc::channel(1);
    run_pipeline(
        source,
        UnitSink(sink),
        store,
        opts,
        rx,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let log = h.log.lock().unwrap().clone();
    // The batches of the failed write are gone: the unit is read again.
    let opened = log.iter().filter(|e| *e == "open a u1 at 7").count();
    assert_eq!(opened, 2, "{log:?}");
    assert_eq!(h.sink.rows_of(&table("a")), 3, "{log:?}");
    assert_eq!(h.sink.finished_copies(), vec![(table("a"), 7)]);
}

/// A state at `position` with `a` streaming and `b` resynced (as `sluice
/// resync` leaves it), its last copy at `b_copied_at`.
fn b_resyncing_at(position: u64, b_copied_at: Option<u64>) -> MemoryStoreHandle {
    let (mut store, handle) = MemoryStore::new();
    let mut state = PipelineState::<u64>::new(
        [("source".to_string(), "script".to_string())].into(),
        Some(position),
    );
    state.set_lifecycle(&table("a"), Lifecycle::Streaming);
    state.set_lifecycle(
        &table("b"),
        Lifecycle::Resyncing {
            progress: SnapshotProgress::default(),
        },
    );
    state
        .tables
        .get_mut(&table("b").to_string())
        .unwrap()
        .copied_at = b_copied_at;
    store.save(&state).unwrap();
    handle
}

#[tokio::test]
async fn a_copy_at_the_position_of_the_tables_last_copy_waits_for_the_position_to_move() {
    // b was copied at 10 and nothing moved the position since; then a
    // resync (as `sluice resync` leaves it). Rows that copy wrote at 10
    // would be indistinguishable from the new copy's if it wrote at 10 too.
    let seed = b_resyncing_at(10, Some(10));
    let (h, sink, store) = harness(Some(&seed));
    let mut source = ScriptedSource::new(
        vec![flush(vec![rows("a", &[1], 20, OP_INSERT)], 20)],
        &h.log,
    );
    source.units = vec![("u1".into(), vec![100, 101])];
    let (_control, rx) = mpsc::channel(1);
    run_until_logged(
        source,
        sink,
        store,
        options(&["a", "b"], true),
        rx,
        &h.log,
        &["stream from 20 tables a,b"],
    )
    .await;
    let log = h.log.lock().unwrap().clone();
    // The stream (without b) moved the position to 20 first; b was copied
    // there, then streamed from there.
    assert!(!log.contains(&"open b u1 at 10".to_string()), "{log:?}");
    let first = position_of(&log, "stream from 10 tables a");
    let open = position_of(&log, "open b u1 at 20");
    let replay = position_of(&log, "stream from 20 tables a,b");
    assert!(first < open && open < replay, "{log:?}");
    assert_eq!(h.sink.finished_copies(), vec![(table("b"), 20)]);
    let state: PipelineState<u64> = h.store.state().unwrap();
    assert_eq!(state.lifecycle(&table("b")), Lifecycle::Streaming);
    assert_eq!(state.table(&table("b")).unwrap().copied_at, Some(20));
}

#[tokio::test]
async fn a_shutdown_mid_copy_keeps_the_position_where_the_copy_is_consistent() {
    // b's resync copies u1, while u2's reader stalls; then a shutdown, and
    // the stream of a drains a change at 30 after the copy task ended.
    let seed = b_resyncing_at(10, Some(5));
    let (h, sink, store) = harness(Some(&seed));
    let mut source = ScriptedSource::new(Vec::new(), &h.log);
    source.units = vec![("u1".into(), vec![1, 2]), ("u2".into(), vec![3])];
    source.stalled_unit = Some(("u2".into(), "never".into()));
    source.drain = vec![flush(vec![rows("a", &[7], 30, OP_INSERT)], 30)];
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let store_view = h.store.clone();
    let watcher = tokio::spawn(async move {
        for _ in 0..1000 {
            let state: Option<PipelineState<u64>> = store_view.state();
            if let Some(Lifecycle::Resyncing { progress }) = state.map(|s| s.lifecycle(&table("b")))
            {
                if progress.units_done.contains("u1") {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
    });
    let (_control, rx) = mpsc::channel(1);
    run_pipeline(
        source,
        sink,
        store,
        options(&["a", "b"], true),
        rx,
        shutdown,
    )
    .await
    .unwrap();
    watcher.abort();
    // The drained change was written, but the position stays at 10: u1's
    // rows are at version 10, and a copy resumed from a later position
    // would count them stale.
    assert_eq!(h.sink.rows_of(&table("a")), 1);
    let state: PipelineState<u64> = h.store.state().unwrap();
    assert_eq!(state.position, Some(10));
    let Lifecycle::Resyncing { progress } = state.lifecycle(&table("b")) else {
        panic!("b is still being copied: {state:?}");
    };
    assert_eq!(progress.version, Some(10));
    assert_eq!(progress.units_done, ["u1".to_string()].into());
}

#[tokio::test]
async fn the_stream_restarts_after_a_copy_without_waiting_for_held_acknowledgements() {
    // b's resync copy at 10 finishes only after a's change at 20 was
    // applied beside it; 20 is held (never acknowledged), so the session
    // that sent it must not wait for its acknowledgement to end.
    let seed = b_resyncing_at(10, Some(5));
    let (h, sink, store) = harness(Some(&seed));
    let mut source = ScriptedSource::new(
        vec![flush(vec![rows("a", &[1], 20, OP_INSERT)], 20)],
        &h.log,
    );
    source.units = vec![("u1".into(), vec![100])];
    source.stalled_unit = Some(("u1".into(), "apply 20".into()));
    let (_control, rx) = mpsc::channel(1);
    let restarted = run_until_logged(
        source,
        sink,
        store,
        options(&["a", "b"], true),
        rx,
        &h.log,
        &["stream from 10 tables a,b", "ack 20"],
    )
    .await;
    let log = h.log.lock().unwrap().clone();
    assert!(restarted, "the replay session never started: {log:?}");
    // 20 is acknowledged only once the replay applied it again.
    assert!(
        position_of(&log, "ack 20") > position_of(&log, "stream from 10 tables a,b"),
        "{log:?}"
    );
    assert_eq!(h.sink.finished_copies(), vec![(table("b"), 10)]);
}
