//! Requests to a running `sluice run` (resyncs): small files in a folder
//! beside the state database, picked up by the running process within a
//! second. The state database itself is locked by `run`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::TableName;
use crate::pipeline::Control;

/// How often `run` looks for requests.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
const SUFFIX: &str = "resync.json";

pub fn dir(state_path: &Path) -> PathBuf {
    state_path.with_extension("requests")
}

/// Writes a resync request; returns its file (gone once picked up).
pub fn write_resync(state_path: &Path, tables: &[TableName]) -> std::io::Result<PathBuf> {
    let dir = dir(state_path);
    std::fs::create_dir_all(&dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path = dir.join(format!("{nanos}-{}.{SUFFIX}", std::process::id()));
    let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&names).unwrap_or_default())?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Forwards requests found in the folder to the pipeline, oldest first,
/// removing each once sent. Ends when the pipeline stops listening.
pub async fn watch(state_path: PathBuf, tx: mpsc::Sender<Control>) {
    let dir = dir(&state_path);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    loop {
        tick.tick().await;
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(SUFFIX))
            .collect();
        files.sort();
        for f in files {
            let parsed = std::fs::read(&f)
                .ok()
                .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
                .map(|names| {
                    names
                        .iter()
                        .filter_map(|n| TableName::parse(n).ok())
                        .collect::<Vec<_>>()
                });
            let _ = std::fs::remove_file(&f);
            match parsed {
                Some(tables) => {
                    if tx.send(Control::Resync(tables)).await.is_err() {
                        return;
                    }
                }
                None => tracing::warn!(file = %f.display(), "unreadable request ignored"),
            }
        }
    }
}
