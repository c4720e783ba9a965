//! `sluice status`: the saved position, the slot and its lag, every table's
//! lifecycle; as lines, or as JSON for scripts (`--json`). Works while
//! `run` runs (it reads the status file `run` keeps beside the locked
//! state database).

use serde_json::{json, Value};

use crate::config::{Config, SourceConfig};
use crate::source::poll::PollPosition;
use crate::source::postgres::lsn::Lsn;
use crate::source::postgres::{catalog, SourceError};
use crate::state::{sidecar, Lifecycle, PipelineState, SledStore, StateStore};

/// The status as lines for people.
pub async fn status(config: &Config) -> Result<Vec<String>, SourceError> {
    if let SourceConfig::Poll(_) = &config.source {
        return Ok(poll_lines(&poll_status_json(config)));
    }
    Ok(lines(&status_json(config).await?))
}

/// The status as one JSON object: `pipeline`, `running`, `checkpoint`,
/// `slot` (`null` when missing: `name`, `confirmed_flush_lsn`, `active_pid`,
/// `wal_status`, `lag_bytes`, `retained_wal_bytes`, `safe_wal_size`,
/// `server_wal_lsn`), `tables` (each `table`, `state`, `reason`,
/// `units`, `units_done`, `rows`, `columns`). A polled source: `pipeline`,
/// `running`, `tables` (each `table`, `state`, `cursor`).
pub async fn status_json(config: &Config) -> Result<Value, SourceError> {
    let SourceConfig::Postgres(pg) = &config.source else {
        return Ok(poll_status_json(config));
    };
    let path = config.pipeline.checkpoint_path();
    // While `run` holds the database lock, read the copy it keeps beside it.
    let (state, running): (Option<PipelineState<Lsn>>, bool) = match SledStore::open(&path) {
        Ok(store) => (store.load().ok().flatten(), false),
        Err(_) => (sidecar::read(&sidecar::path(&path)), true),
    };
    let checkpoint = state
        .as_ref()
        .and_then(|s| s.position)
        .map(|p| p.to_string());
    let saved_slot = state.as_ref().and_then(|s| s.identity.get("slot").cloned());
    let client = catalog::connect(&pg.conn).await?;
    let current = catalog::current_wal_lsn(&client).await?;
    let slot = match catalog::slot(&client, &pg.slot).await? {
        None => Value::Null,
        Some(s) => {
            let wal = catalog::slot_wal(&client, &pg.slot).await?;
            json!({
                "name": pg.slot,
                "confirmed_flush_lsn": s.confirmed_flush_lsn.map(|l| l.to_string()),
                "active_pid": s.active_pid,
                "wal_status": s.wal_status,
                "lag_bytes": wal.as_ref().and_then(|w| w.lag_bytes),
                "retained_wal_bytes": wal.as_ref().and_then(|w| w.retained_bytes),
                "safe_wal_size": wal.as_ref().and_then(|w| w.safe_wal_size),
                "server_wal_lsn": current.to_string(),
            })
        }
    };
    let tables: Vec<Value> = pg
        .tables
        .iter()
        .map(|t| {
            let ts = state.as_ref().and_then(|s| s.table(t));
            let lifecycle = ts
                .map(|ts| ts.lifecycle.clone())
                .unwrap_or(Lifecycle::Pending);
            let (reason, progress) = match &lifecycle {
                Lifecycle::Failed { reason, .. } => (Some(reason.clone()), None),
                Lifecycle::Snapshotting { progress } | Lifecycle::Resyncing { progress } => {
                    (None, Some(progress))
                }
                _ => (None, None),
            };
            json!({
                "table": t.to_string(),
                "state": lifecycle.name(),
                "detail": lifecycle.to_string(),
                "reason": reason,
                "units": progress.map(|p| p.units.len()),
                "units_done": progress.map(|p| p.units_done.len()),
                "rows": progress.map(|p| p.rows),
                "columns": ts.map(|ts| ts.columns.clone()).unwrap_or_default(),
            })
        })
        .collect();
    Ok(json!({
        "pipeline": config.pipeline.name,
        "running": running,
        "checkpoint": checkpoint,
        "checkpoint_path": path.display().to_string(),
        "checkpoint_slot": saved_slot,
        "slot_name": pg.slot,
        "slot": slot,
        "tables": tables,
    }))
}

fn lines(s: &Value) -> Vec<String> {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let mut lines = vec![format!("pipeline: {}", text(&s["pipeline"]))];
    if s["running"].as_bool() == Some(true) {
        lines.push("state: running (checkpoint database locked by `sluice run`)".into());
    }
    match s["checkpoint"].as_str() {
        Some(lsn) => lines.push(format!(
            "checkpoint: {lsn} (slot \"{}\")",
            text(&s["checkpoint_slot"])
        )),
        None => lines.push(format!(
            "checkpoint: none yet ({})",
            text(&s["checkpoint_path"])
        )),
    }
    let slot = &s["slot"];
    if slot.is_null() {
        lines.push(format!(
            "slot \"{}\": does not exist",
            text(&s["slot_name"])
        ));
    } else {
        lines.push(format!(
            "slot \"{}\": confirmed_flush_lsn {}, {}, wal_status {}",
            text(&slot["name"]),
            slot["confirmed_flush_lsn"].as_str().unwrap_or("0/0"),
            match slot["active_pid"].as_i64() {
                Some(pid) => format!("active (pid {pid})"),
                None => "inactive".into(),
            },
            slot["wal_status"].as_str().unwrap_or("-")
        ));
        lines.push(format!(
            "lag: {} bytes behind the server's WAL at {}",
            slot["lag_bytes"].as_i64().unwrap_or(0).max(0),
            text(&slot["server_wal_lsn"])
        ));
        if let Some(r) = slot["retained_wal_bytes"].as_i64() {
            lines.push(format!("retained WAL: {r} bytes"));
        }
    }
    for t in s["tables"].as_array().into_iter().flatten() {
        let cols: Vec<&str> = t["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let cols = if cols.is_empty() {
            String::new()
        } else {
            format!(", {} columns: {}", cols.len(), cols.join(", "))
        };
        lines.push(format!(
            "table {}: {}{cols}",
            text(&t["table"]),
            text(&t["detail"])
        ));
    }
    lines
}

/// A polled source: its saved cursors and every table's lifecycle.
fn poll_status_json(config: &Config) -> Value {
    let path = config.pipeline.checkpoint_path();
    let (state, running): (Option<PipelineState<PollPosition>>, bool) = match SledStore::open(&path)
    {
        Ok(store) => (store.load().ok().flatten(), false),
        Err(_) => (sidecar::read(&sidecar::path(&path)), true),
    };
    let tables: Vec<Value> = config
        .source
        .tables()
        .into_iter()
        .map(|t| {
            let cursor = state
                .as_ref()
                .and_then(|s| s.position.as_ref())
                .and_then(|p| p.get(&t.to_string()))
                .map(|c| c.to_string());
            let lifecycle = state
                .as_ref()
                .and_then(|s| s.table(&t))
                .map_or(Lifecycle::Pending.to_string(), |ts| {
                    ts.lifecycle.to_string()
                });
            json!({"table": t.to_string(), "state": lifecycle, "cursor": cursor})
        })
        .collect();
    json!({"pipeline": config.pipeline.name, "running": running, "tables": tables})
}

fn poll_lines(s: &Value) -> Vec<String> {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let mut lines = vec![format!("pipeline: {}", text(&s["pipeline"]))];
    if s["running"] == json!(true) {
        lines.push("state: running (checkpoint database locked by `sluice run`)".into());
    }
    for t in s["tables"].as_array().into_iter().flatten() {
        let cursor = t["cursor"]
            .as_str()
            .unwrap_or("none yet (reads from the beginning)");
        lines.push(format!(
            "table {}: {}, cursor {cursor}",
            text(&t["table"]),
            text(&t["state"])
        ));
    }
    lines
}
