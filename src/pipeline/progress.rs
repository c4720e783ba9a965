//! Copy progress: rows per table as they become durable, the source's
//! estimate, and a view that shows them (log lines by default; the app
//! gives live bars on a terminal). The same figures go to metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::TableName;
use crate::metrics as m;
use crate::source::SnapshotUnit;

/// How often the log view writes a line per table being copied.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// One table's copy as shown to users.
#[derive(Debug, Clone)]
pub struct TableProgress {
    pub table: TableName,
    /// Rows copied, including those of units finished by earlier runs.
    pub rows: u64,
    /// Rows copied by this run (for the rate).
    pub rows_this_run: u64,
    pub estimated_rows: Option<u64>,
    pub units: usize,
    pub units_done: usize,
    pub elapsed: Duration,
    pub finished: bool,
}

impl TableProgress {
    pub fn rate(&self) -> f64 {
        self.rows_this_run as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }

    /// Percent done and the time left, from the estimate.
    pub fn eta(&self) -> Option<(f64, Duration)> {
        let total = self.estimated_rows.filter(|e| *e > 0)? as f64;
        let pct = (self.rows as f64 / total * 100.0).min(100.0);
        let left = (total - self.rows as f64).max(0.0) / self.rate().max(1.0);
        Some((pct, Duration::from_secs_f64(left)))
    }
}

/// Shows copy progress.
pub trait ProgressView: Send + Sync {
    /// Called every `interval()` while copies run, and once at the end.
    fn show(&self, tables: &[TableProgress]);
    fn interval(&self) -> Duration;
}

/// A log line per table every [`LOG_INTERVAL`].
pub struct LogView;

impl ProgressView for LogView {
    fn show(&self, tables: &[TableProgress]) {
        for t in tables.iter().filter(|t| !t.finished) {
            let (pct, eta) = match t.eta() {
                Some((p, e)) => (format!("{p:.0}%"), format!("{:.0}s", e.as_secs_f64())),
                None => ("?".into(), "?".into()),
            };
            tracing::info!(
                table = %t.table,
                rows = t.rows,
                estimated = t.estimated_rows,
                rows_per_sec = format!("{:.0}", t.rate()),
                done = %pct,
                eta = %eta,
                units = format!("{}/{}", t.units_done, t.units),
                "copying"
            );
        }
    }

    fn interval(&self) -> Duration {
        LOG_INTERVAL
    }
}

struct Entry {
    rows_before: u64,
    rows: u64,
    estimated: Option<u64>,
    units: usize,
    units_done: usize,
    started: Instant,
    finished: bool,
}

/// Shared by the copy readers (who add rows) and the view.
#[derive(Default)]
pub struct CopyProgress {
    tables: Mutex<BTreeMap<TableName, Entry>>,
}

impl CopyProgress {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TableName, Entry>> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A table's copy starts (or resumes with `done` units behind it).
    pub fn start(&self, table: &TableName, units: &[SnapshotUnit], done: &BTreeSet<String>) {
        let estimated: Option<u64> = units.iter().map(|u| u.estimated_rows).sum();
        let rows_before: u64 = units
            .iter()
            .filter(|u| done.contains(&u.id))
            .filter_map(|u| u.estimated_rows)
            .sum();
        if let Some(e) = estimated {
            metrics::gauge!(m::SNAPSHOT_ROWS_ESTIMATED, "table" => table.to_string()).set(e as f64);
        }
        self.lock().insert(
            table.clone(),
            Entry {
                rows_before,
                rows: 0,
                estimated,
                units: units.len(),
                units_done: units.iter().filter(|u| done.contains(&u.id)).count(),
                started: Instant::now(),
                finished: false,
            },
        );
    }

    pub fn add_rows(&self, table: &TableName, rows: u64) {
        if let Some(e) = self.lock().get_mut(table) {
            e.rows += rows;
        }
        metrics::counter!(m::SNAPSHOT_ROWS, "table" => table.to_string()).increment(rows);
    }

    pub fn unit_done(&self, table: &TableName) {
        if let Some(e) = self.lock().get_mut(table) {
            e.units_done += 1;
        }
    }

    pub fn finish(&self, table: &TableName) {
        if let Some(e) = self.lock().get_mut(table) {
            e.finished = true;
        }
    }

    pub fn snapshot(&self) -> Vec<TableProgress> {
        self.lock()
            .iter()
            .map(|(t, e)| TableProgress {
                table: t.clone(),
                rows: e.rows_before + e.rows,
                rows_this_run: e.rows,
                estimated_rows: e.estimated,
                units: e.units,
                units_done: e.units_done,
                elapsed: e.started.elapsed(),
                finished: e.finished,
            })
            .collect()
    }
}

/// Shows `progress` through `view` until `stop`, then once more.
pub fn spawn_reporter(
    progress: Arc<CopyProgress>,
    view: Arc<dyn ProgressView>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(view.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => view.show(&progress.snapshot()),
            }
        }
        view.show(&progress.snapshot());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rows_and_estimates() {
        let p = CopyProgress::default();
        let t = TableName::new("public", "t");
        let units: Vec<SnapshotUnit> = (0..4)
            .map(|i| SnapshotUnit {
                table: t.clone(),
                id: format!("u{i}"),
                estimated_rows: Some(100),
            })
            .collect();
        p.start(&t, &units, &["u0".to_string()].into());
        p.add_rows(&t, 50);
        p.unit_done(&t);
        let s = &p.snapshot()[0];
        assert_eq!(s.rows, 150, "rows of units done before count");
        assert_eq!(s.rows_this_run, 50);
        assert_eq!(s.estimated_rows, Some(400));
        assert_eq!((s.units_done, s.units), (2, 4));
        let (pct, _) = s.eta().unwrap();
        assert!((pct - 37.5).abs() < 0.01, "{pct}");
    }
}
