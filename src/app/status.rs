//! `sluice status`: the saved position, the slot and its lag, every table's
//! lifecycle. Works while `run` runs (it reads the status file `run` keeps
//! beside the locked state database).

use crate::config::{Config, SourceConfig};
use crate::source::poll::PollPosition;
use crate::source::postgres::lsn::Lsn;
use crate::source::postgres::{catalog, SourceError};
use crate::state::{sidecar, Lifecycle, PipelineState, SledStore, StateStore};

pub async fn status(config: &Config) -> Result<Vec<String>, SourceError> {
    let SourceConfig::Postgres(pg) = &config.source else {
        return Ok(poll_status(config));
    };
    let path = config.pipeline.checkpoint_path();
    let mut lines = vec![format!("pipeline: {}", config.pipeline.name)];
    // While `run` holds the database lock, read the copy it keeps beside it.
    let (state, running): (Option<PipelineState<Lsn>>, bool) = match SledStore::open(&path) {
        Ok(store) => (store.load().ok().flatten(), false),
        Err(_) => (sidecar::read(&sidecar::path(&path)), true),
    };
    if running {
        lines.push("state: running (checkpoint database locked by `sluice run`)".into());
    }
    match state.as_ref().and_then(|s| s.position.map(|p| (p, s))) {
        Some((lsn, s)) => lines.push(format!(
            "checkpoint: {lsn} (slot \"{}\")",
            s.identity.get("slot").map(String::as_str).unwrap_or("?")
        )),
        None => lines.push(format!("checkpoint: none yet ({})", path.display())),
    }
    let client = catalog::connect(&pg.conn).await?;
    let current = catalog::current_wal_lsn(&client).await?;
    match catalog::slot(&client, &pg.slot).await? {
        None => lines.push(format!("slot \"{}\": does not exist", pg.slot)),
        Some(s) => {
            let confirmed = s.confirmed_flush_lsn.unwrap_or_default();
            lines.push(format!(
                "slot \"{}\": confirmed_flush_lsn {confirmed}, {}, wal_status {}",
                pg.slot,
                match s.active_pid {
                    Some(pid) => format!("active (pid {pid})"),
                    None => "inactive".into(),
                },
                s.wal_status.unwrap_or_else(|| "-".into())
            ));
            lines.push(format!(
                "lag: {} bytes behind the server's WAL at {current}",
                current.0.saturating_sub(confirmed.0)
            ));
        }
    }
    for t in &pg.tables {
        let line = match state.as_ref().and_then(|s| s.table(t)) {
            Some(ts) => {
                let cols = if ts.columns.is_empty() {
                    String::new()
                } else {
                    format!(", {} columns: {}", ts.columns.len(), ts.columns.join(", "))
                };
                format!("{}{cols}", ts.lifecycle)
            }
            None => Lifecycle::Pending.to_string(),
        };
        lines.push(format!("table {t}: {line}"));
    }
    Ok(lines)
}

/// A polled source: its saved cursors and every table's lifecycle.
fn poll_status(config: &Config) -> Vec<String> {
    let path = config.pipeline.checkpoint_path();
    let mut lines = vec![format!("pipeline: {}", config.pipeline.name)];
    let (state, running): (Option<PipelineState<PollPosition>>, bool) = match SledStore::open(&path)
    {
        Ok(store) => (store.load().ok().flatten(), false),
        Err(_) => (sidecar::read(&sidecar::path(&path)), true),
    };
    if running {
        lines.push("state: running (checkpoint database locked by `sluice run`)".into());
    }
    for t in config.source.tables() {
        let cursor = state
            .as_ref()
            .and_then(|s| s.position.as_ref())
            .and_then(|p| p.get(&t.to_string()))
            .map_or("none yet (reads from the beginning)".to_string(), |c| {
                c.to_string()
            });
        let lifecycle = state
            .as_ref()
            .and_then(|s| s.table(&t))
            .map_or(Lifecycle::Pending.to_string(), |ts| {
                ts.lifecycle.to_string()
            });
        lines.push(format!("table {t}: {lifecycle}, cursor {cursor}"));
    }
    lines
}
