//! Pure watermark logic of polled sources: which cursor interval a poll may
//! read without ever skipping a row that commits later. The argument is
//! written out in docs/polling.md; the I/O that feeds these functions is in
//! `postgres.rs` and `clickhouse.rs`.
//!
//! Intervals are half-open, `[from, to)`: a poll reads `cursor >= from AND
//! cursor < to` and the next one starts at `to`, so rows with equal cursor
//! values on either side of a boundary are read exactly once per interval.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, TimeUnit};

use crate::config::poll::Lookback;

/// What a cursor column holds, as one `i64` per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// A timestamp, as microseconds since the Unix epoch (UTC).
    Micros,
    /// An integer (a sequence, a version counter).
    Int,
}

impl CursorKind {
    /// The kind of a cursor carried as `t`; `None` when such a column
    /// cannot be a cursor.
    pub fn of(t: &DataType) -> Option<CursorKind> {
        match t {
            DataType::Timestamp(_, _) => Some(CursorKind::Micros),
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => Some(CursorKind::Int),
            _ => None,
        }
    }

    /// The microseconds of one `unit`, for timestamp cursors.
    pub fn micros_per(unit: &TimeUnit) -> (i64, i64) {
        match unit {
            TimeUnit::Second => (1_000_000, 1),
            TimeUnit::Millisecond => (1_000, 1),
            TimeUnit::Microsecond => (1, 1),
            TimeUnit::Nanosecond => (1, 1_000),
        }
    }
}

/// The `_version` of a cursor value: order preserving from `i64` to `u64`,
/// so a later cursor always wins in ReplacingMergeTree.
pub fn version_of(cursor: i64) -> u64 {
    (cursor as u64) ^ (1 << 63)
}

/// The lower bound a poll reads from: the saved cursor, lowered by the
/// lookback window (re-read every poll; harmless because every row read
/// carries its cursor as version). `None`: from the beginning.
pub fn lower_bound(
    from: Option<i64>,
    lookback: Option<Lookback>,
    kind: CursorKind,
) -> Result<Option<i64>, String> {
    let Some(from) = from else { return Ok(None) };
    Ok(Some(match (lookback, kind) {
        (None, _) => from,
        (Some(Lookback::Duration(d)), CursorKind::Micros) => {
            from.saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        }
        (Some(Lookback::Count(n)), CursorKind::Int) => {
            from.saturating_sub(i64::try_from(n).unwrap_or(i64::MAX))
        }
        (Some(Lookback::Duration(_)), CursorKind::Int) => {
            return Err("lookback is a duration but the cursor is an integer: give a count, e.g. lookback = 1000".into())
        }
        (Some(Lookback::Count(_)), CursorKind::Micros) => {
            return Err("lookback is a count but the cursor is a timestamp: give a duration, e.g. lookback = \"30s\"".into())
        }
    }))
}

/// The interval one poll reads, or `None` when the safe upper bound has
/// not passed the saved cursor (nothing new can be read yet).
pub fn next_interval(
    from: Option<i64>,
    lookback: Option<Lookback>,
    kind: CursorKind,
    safe: Option<i64>,
) -> Result<Option<(Option<i64>, i64)>, String> {
    let Some(to) = safe else { return Ok(None) };
    if from.is_some_and(|f| to <= f) {
        return Ok(None);
    }
    Ok(Some((lower_bound(from, lookback, kind)?, to)))
}

/// The position after a batch whose last row (rows come ordered by cursor)
/// has cursor `last`: rows with a cursor below it are all read; rows equal
/// to it may continue in the next batch, so they are read again after a
/// restart. Never behind `saved`.
pub fn after_batch(saved: Option<i64>, last: Option<i64>) -> Option<i64> {
    match (saved, last) {
        (Some(s), Some(l)) => Some(s.max(l)),
        (s, l) => s.or(l),
    }
}

/// A transaction running in PostgreSQL: its backend and start time (the
/// pair identifies it; a backend runs many transactions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    pub pid: i32,
    /// `xact_start`, microseconds since the epoch.
    pub started: i64,
}

/// Timestamp cursors (PostgreSQL): the upper bound is the older of the
/// server clock read first and the start of every transaction running
/// after it. A row written later with `now()` (its transaction's start) or
/// `clock_timestamp()` gets a cursor at or above its transaction's start,
/// so it cannot fall below a bound that was observed while it ran.
pub fn timestamp_watermark(clock: i64, running: &[Running]) -> i64 {
    running.iter().map(|r| r.started).fold(clock, i64::min)
}

/// Integer cursors (PostgreSQL sequences): a candidate bound `max + 1`
/// seen in a snapshot becomes safe once every transaction that was running
/// just after that snapshot has ended, checked before a later snapshot is
/// taken. Each value `v <= max` was drawn before the row holding `max`
/// committed, so its transaction had started before the snapshot: it either
/// committed before it (visible) or ran after it (waited for here).
#[derive(Debug, Default)]
pub struct SequenceWatermark {
    pending: VecDeque<(i64, Vec<Running>)>,
    safe: Option<i64>,
}

impl SequenceWatermark {
    /// Before a snapshot: promotes the candidates whose transactions have
    /// all ended (none of them is in `running`); returns the safe bound.
    pub fn settle(&mut self, running: &[Running]) -> Option<i64> {
        while let Some((bound, waiting)) = self.pending.front() {
            if waiting.iter().any(|w| running.contains(w)) {
                break;
            }
            self.safe = Some(self.safe.map_or(*bound, |s| s.max(*bound)));
            self.pending.pop_front();
        }
        self.safe
    }

    /// After a snapshot: its largest cursor (`None`: empty table) and the
    /// transactions running right after it was taken.
    pub fn observe(&mut self, max: Option<i64>, running: Vec<Running>) {
        let Some(max) = max else { return };
        let bound = max.saturating_add(1);
        if self.safe.is_some_and(|s| bound <= s)
            || self.pending.back().is_some_and(|(b, _)| bound <= *b)
        {
            return;
        }
        self.pending.push_back((bound, running));
    }
}

/// ClickHouse integer cursors: a candidate bound `max + 1` becomes safe
/// `settle` after it was observed (inserts in flight by then are assumed
/// done). Timestamp cursors use `now - settle` directly.
#[derive(Debug)]
pub struct SettleWatermark {
    settle: Duration,
    pending: VecDeque<(i64, Instant)>,
    safe: Option<i64>,
}

impl SettleWatermark {
    pub fn new(settle: Duration) -> Self {
        SettleWatermark {
            settle,
            pending: VecDeque::new(),
            safe: None,
        }
    }

    /// Records the largest cursor seen at `now`; returns the safe bound.
    pub fn observe(&mut self, max: Option<i64>, now: Instant) -> Option<i64> {
        if let Some(max) = max {
            let bound = max.saturating_add(1);
            if self.pending.back().is_none_or(|(b, _)| bound > *b)
                && self.safe.is_none_or(|s| bound > s)
            {
                self.pending.push_back((bound, now));
            }
        }
        while let Some((bound, seen)) = self.pending.front() {
            if now.duration_since(*seen) < self.settle {
                break;
            }
            self.safe = Some(self.safe.map_or(*bound, |s| s.max(*bound)));
            self.pending.pop_front();
        }
        self.safe
    }
}

/// ClickHouse timestamp cursors: the server's clock minus the settle delay.
pub fn settle_timestamp(server_now: i64, settle: Duration) -> i64 {
    server_now.saturating_sub(i64::try_from(settle.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(pid: i32, started: i64) -> Running {
        Running { pid, started }
    }

    #[test]
    fn versions_keep_order() {
        let vals = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000_000, i64::MAX];
        for w in vals.windows(2) {
            assert!(version_of(w[0]) < version_of(w[1]), "{w:?}");
        }
    }

    #[test]
    fn timestamp_bound_stops_at_oldest_running() {
        assert_eq!(timestamp_watermark(1000, &[]), 1000);
        assert_eq!(timestamp_watermark(1000, &[r(1, 900), r(2, 950)]), 900);
        // A transaction "started" after the clock read does not raise it.
        assert_eq!(timestamp_watermark(1000, &[r(1, 1200)]), 1000);
    }

    #[test]
    fn intervals_are_half_open_and_never_go_back() {
        let k = CursorKind::Micros;
        assert_eq!(
            next_interval(None, None, k, Some(10)).unwrap(),
            Some((None, 10))
        );
        assert_eq!(next_interval(Some(10), None, k, Some(10)).unwrap(), None);
        assert_eq!(next_interval(Some(10), None, k, Some(5)).unwrap(), None);
        assert_eq!(next_interval(Some(10), None, k, None).unwrap(), None);
        assert_eq!(
            next_interval(Some(10), None, k, Some(20)).unwrap(),
            Some((Some(10), 20))
        );
        let lb = Some(Lookback::Duration(Duration::from_micros(3)));
        assert_eq!(
            next_interval(Some(10), lb, k, Some(20)).unwrap(),
            Some((Some(7), 20))
        );
        let lb = Some(Lookback::Count(4));
        assert_eq!(
            next_interval(Some(10), lb, CursorKind::Int, Some(20)).unwrap(),
            Some((Some(6), 20))
        );
        assert!(next_interval(Some(10), lb, k, Some(20)).is_err());
    }

    #[test]
    fn batch_positions() {
        assert_eq!(after_batch(Some(5), Some(7)), Some(7));
        // A lookback re-read never moves the position back.
        assert_eq!(after_batch(Some(5), Some(3)), Some(5));
        assert_eq!(after_batch(None, Some(3)), Some(3));
        assert_eq!(after_batch(Some(5), None), Some(5));
    }

    /// Equal cursor values split across two batches: the position after the
    /// first batch is that value, so the resumed read includes them again.
    #[test]
    fn equal_values_across_a_batch_boundary_are_reread_not_lost() {
        let cursors = [1, 2, 2, 2, 3];
        let (first, _rest) = cursors.split_at(2);
        let pos = after_batch(None, first.last().copied()).unwrap();
        let reread: Vec<_> = cursors.iter().filter(|c| **c >= pos).collect();
        assert_eq!(reread, vec![&2, &2, &2, &3]);
    }

    #[test]
    fn sequence_bound_waits_for_running_transactions() {
        let mut w = SequenceWatermark::default();
        assert_eq!(w.settle(&[]), None);
        // Snapshot 1 saw max 10 with transactions a and b running after it.
        w.observe(Some(10), vec![r(1, 100), r(2, 200)]);
        assert_eq!(w.settle(&[r(2, 200)]), None, "b still runs");
        // Snapshot 2 saw max 20 with c running.
        w.observe(Some(20), vec![r(3, 300)]);
        // Backend 2 now runs another transaction: b has ended.
        assert_eq!(w.settle(&[r(2, 250), r(3, 300)]), Some(11));
        assert_eq!(w.settle(&[]), Some(21));
        // A smaller or equal max adds nothing.
        w.observe(Some(20), vec![r(9, 9)]);
        assert_eq!(w.settle(&[r(9, 9)]), Some(21));
        w.observe(None, vec![]);
        assert_eq!(w.settle(&[]), Some(21));
    }

    #[test]
    fn settle_delay_for_integers() {
        let t0 = Instant::now();
        let mut w = SettleWatermark::new(Duration::from_secs(2));
        assert_eq!(w.observe(Some(10), t0), None);
        assert_eq!(w.observe(Some(15), t0 + Duration::from_secs(1)), None);
        assert_eq!(w.observe(None, t0 + Duration::from_secs(2)), Some(11));
        assert_eq!(w.observe(Some(15), t0 + Duration::from_secs(3)), Some(16));
        assert_eq!(
            settle_timestamp(5_000_000, Duration::from_secs(2)),
            3_000_000
        );
    }
}
