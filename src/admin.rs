//! Administrative commands: dropping a pipeline's server-side state.

use crate::checkpoint::{read_sidecar, CheckpointStore, SledStore};
use crate::config::{Config, SourceConfig};
use crate::source::postgres::{catalog, SourceError};

/// Drops the slot, the publication (unless kept) and the checkpoint database.
/// Returns one line per action for the user.
pub async fn drop_pipeline(
    config: &Config,
    keep_publication: bool,
) -> Result<Vec<String>, SourceError> {
    let SourceConfig::Postgres(pg) = &config.source;
    let client = catalog::connect(&pg.conn).await?;
    let mut lines = Vec::new();
    if catalog::drop_slot(&client, &pg.slot).await? {
        lines.push(format!("dropped replication slot \"{}\"", pg.slot));
    } else {
        lines.push(format!("replication slot \"{}\" did not exist", pg.slot));
    }
    if !keep_publication {
        if catalog::drop_publication(&client, &pg.publication).await? {
            lines.push(format!("dropped publication \"{}\"", pg.publication));
        } else {
            lines.push(format!("publication \"{}\" did not exist", pg.publication));
        }
    }
    let path = config.pipeline.checkpoint_path();
    if path.exists() {
        std::fs::remove_dir_all(&path)?;
        lines.push(format!("removed checkpoint database {}", path.display()));
    }
    Ok(lines)
}

/// `sluice status`: checkpoint, slot position and lag, tables.
pub async fn status(config: &Config) -> Result<Vec<String>, SourceError> {
    let SourceConfig::Postgres(pg) = &config.source;
    let path = config.pipeline.checkpoint_path();
    let mut lines = vec![format!("pipeline: {}", config.pipeline.name)];
    // While `run` holds the database lock, read the copy it keeps beside it.
    let (cp, running) = match SledStore::open(&path) {
        Ok(store) => (store.load().ok().flatten(), false),
        Err(_) => (read_sidecar(&path), true),
    };
    if running {
        lines.push("state: running (checkpoint database locked by `sluice run`)".into());
    }
    match &cp {
        Some(cp) => lines.push(format!("checkpoint: {} (slot \"{}\")", cp.lsn, cp.slot)),
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
        let key = t.to_string();
        let state = cp
            .as_ref()
            .and_then(|c| c.tables.get(&key))
            .map(|s| {
                let cols = if s.columns.is_empty() {
                    String::new()
                } else {
                    format!(", {} columns: {}", s.columns.len(), s.columns.join(", "))
                };
                match &s.reason {
                    Some(r) => format!("{} ({r}){cols}", s.status),
                    None => format!("{}{cols}", s.status),
                }
            })
            .unwrap_or_else(|| "streaming".into());
        lines.push(format!("table {key}: {state}"));
    }
    Ok(lines)
}
