//! A copy of the last saved state beside the database, for `sluice status`
//! while `run` holds the database lock. Informational only (not fsynced):
//! the store is the truth.

use std::path::{Path, PathBuf};

use super::PipelineState;
use crate::core::position::Position;

/// The status file beside a state database.
pub fn path(db_path: &Path) -> PathBuf {
    db_path.with_extension("status.json")
}

pub fn write<P: Position>(path: &Path, state: &PipelineState<P>) {
    let tmp = path.with_extension("tmp");
    if let Ok(bytes) = serde_json::to_vec_pretty(state) {
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

pub fn read<P: Position>(path: &Path) -> Option<PipelineState<P>> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}
