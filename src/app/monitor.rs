//! The monitor beside `sluice run`: every few seconds it reads the slot's
//! lag, retained WAL and `wal_status` from PostgreSQL, probes the sink
//! (when `/readyz` is served), measures spill files and the process's memory, and sets the gauges.
//! It warns (log and metric) when the slot retains more WAL than
//! `source.postgres.max_retained_wal` and when `wal_status` turns
//! `unreserved` or `lost`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::PostgresSourceConfig;
use crate::live::live;
use crate::metrics as m;
use crate::source::postgres::catalog::{self, SlotWal};

/// How often the monitor looks.
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(2);

/// Probes the sink; true when it answers.
pub type SinkProbe =
    Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send>;

/// Runs until `stop`. `pg` is the logical source whose slot is watched;
/// a polled source has none, and gets the sink probe and process gauges.
pub async fn run(
    pg: Option<PostgresSourceConfig>,
    probe: Option<SinkProbe>,
    spill_dir: PathBuf,
    stop: CancellationToken,
) {
    if let Some(limit) = pg.as_ref().and_then(|pg| pg.max_retained_wal) {
        metrics::gauge!(m::SLOT_RETAINED_WAL_LIMIT).set(limit as f64);
    }
    // The sink probe runs on its own: a busy sink answers late, and the
    // slot checks below must not wait for it.
    if let Some(probe) = probe {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MONITOR_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let reachable = tokio::select! {
                    _ = stop.cancelled() => return,
                    ok = probe() => ok,
                };
                live().set_sink_unreachable(!reachable);
            }
        });
    }
    let mut tick = tokio::time::interval(MONITOR_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client = None;
    let mut warned = Warned::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(pg) = &pg {
            watch_slot(pg, &mut client, &mut warned).await;
        }
        metrics::gauge!(m::SPILL_BYTES).set(dir_bytes(&spill_dir) as f64);
        if let Some(rss) = process_rss() {
            metrics::gauge!(m::PROCESS_RSS).set(rss as f64);
        }
    }
}

/// One look at the slot: its WAL gauges and warnings.
async fn watch_slot(
    pg: &PostgresSourceConfig,
    client: &mut Option<tokio_postgres::Client>,
    warned: &mut Warned,
) {
    if client.is_none() {
        *client = catalog::connect(&pg.conn).await.ok();
    }
    if let Some(c) = client.as_ref() {
        match catalog::slot_wal(c, &pg.slot).await {
            Ok(Some(w)) => {
                record_slot(&w);
                warned.check(pg, &w);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "monitor: cannot read the slot");
                *client = None;
            }
        }
    }
}

fn record_slot(w: &SlotWal) {
    if let Some(b) = w.lag_bytes {
        metrics::gauge!(m::LAG_BYTES).set(b.max(0) as f64);
    }
    if let Some(b) = w.retained_bytes {
        metrics::gauge!(m::SLOT_RETAINED_WAL).set(b.max(0) as f64);
    }
    if let Some(b) = w.safe_wal_size {
        metrics::gauge!(m::SLOT_SAFE_WAL_SIZE).set(b as f64);
    }
    if let Some(s) = &w.wal_status {
        for status in m::WAL_STATUSES {
            let v = if status == s { 1.0 } else { 0.0 };
            metrics::gauge!(m::SLOT_WAL_STATUS, "status" => status).set(v);
        }
    }
}

/// Warnings given, so each is logged once per crossing.
#[derive(Default)]
struct Warned {
    retained: bool,
    status: Option<String>,
}

impl Warned {
    /// Logs and counts the warnings `w` calls for; returns their reasons.
    fn check(&mut self, pg: &PostgresSourceConfig, w: &SlotWal) -> Vec<&'static str> {
        let fired = self.step(pg.max_retained_wal, w);
        for reason in &fired {
            match *reason {
                "retained" => {
                    tracing::warn!(slot = %pg.slot, retained_bytes = w.retained_bytes, limit_bytes = pg.max_retained_wal,
                    "the slot retains more WAL than source.postgres.max_retained_wal: sluice is behind or stopped; the server's disk fills while this lasts")
                }
                "unreserved" => tracing::warn!(slot = %pg.slot, safe_wal_size = w.safe_wal_size,
                    "the slot's wal_status is unreserved: its WAL is past max_slot_wal_keep_size and will be removed at the next checkpoint unless sluice catches up"),
                _ => {
                    tracing::error!(slot = %pg.slot, "the slot is lost (invalidated): the WAL it needed was removed")
                }
            }
            metrics::counter!(m::WAL_WARNINGS, "reason" => *reason).increment(1);
        }
        fired
    }

    /// Which warnings are due: each once when its condition starts.
    fn step(&mut self, limit: Option<u64>, w: &SlotWal) -> Vec<&'static str> {
        let mut fired = Vec::new();
        if let (Some(limit), Some(retained)) = (limit, w.retained_bytes) {
            let over = retained > 0 && retained as u64 > limit;
            if over && !self.retained {
                fired.push("retained");
            }
            self.retained = over;
        }
        if w.wal_status != self.status {
            match w.wal_status.as_deref() {
                Some("unreserved") => fired.push("unreserved"),
                Some("lost") => fired.push("lost"),
                _ => {}
            }
            self.status = w.wal_status.clone();
        }
        fired
    }
}

/// Bytes of the files in `dir` (not recursive; spill files lie flat).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Resident memory in bytes (Linux: /proc/self/status VmRSS).
fn process_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal(retained: i64, status: &str) -> SlotWal {
        SlotWal {
            lag_bytes: Some(0),
            retained_bytes: Some(retained),
            wal_status: Some(status.into()),
            safe_wal_size: None,
        }
    }

    #[test]
    fn each_warning_fires_once_when_its_condition_starts() {
        let mut w = Warned::default();
        let limit = Some(1000);
        assert!(w.step(limit, &wal(10, "reserved")).is_empty());
        assert_eq!(w.step(limit, &wal(2000, "reserved")), ["retained"]);
        assert!(
            w.step(limit, &wal(3000, "reserved")).is_empty(),
            "still over: once"
        );
        assert!(w.step(limit, &wal(10, "reserved")).is_empty());
        assert_eq!(
            w.step(limit, &wal(2000, "extended")),
            ["retained"],
            "over again"
        );
        assert_eq!(w.step(limit, &wal(2000, "unreserved")), ["unreserved"]);
        assert!(w.step(limit, &wal(2000, "unreserved")).is_empty());
        assert_eq!(w.step(limit, &wal(2000, "lost")), ["lost"]);
        assert!(
            w.step(None, &wal(1 << 40, "reserved")).is_empty(),
            "no limit, no warning"
        );
    }

    #[test]
    fn rss_is_read() {
        assert!(process_rss().is_some_and(|b| b > 1 << 20));
    }
}
