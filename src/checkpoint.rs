//! Checkpoints: where a pipeline resumes after a restart or crash. Behind a
//! trait; the implementation is sled, flushed to disk on every save.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::lsn::Lsn;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("checkpoint database {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("checkpoint database: {0}")]
    Store(#[from] sled::Error),
    #[error("checkpoint database holds unreadable data: {0}")]
    Corrupt(String),
    #[error("checkpoint would move backwards from {current} to {new}; progress only moves forward (reset with `sluice drop`)")]
    Backwards { current: Lsn, new: Lsn },
}

/// The state of one replicated table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableState {
    /// "streaming" or "failed".
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last schema seen, as `name type` per column.
    #[serde(default)]
    pub columns: Vec<String>,
    /// The initial snapshot of this table is complete.
    #[serde(default)]
    pub snapshot_done: bool,
}

/// Everything a pipeline needs to resume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Every transaction that ends at or before this LSN is durable in the sink.
    pub lsn: Lsn,
    /// The PostgreSQL cluster (IDENTIFY_SYSTEM systemid) and slot this belongs to.
    pub system_id: String,
    pub slot: String,
    /// Unix microseconds of the save.
    pub saved_at: i64,
    #[serde(default)]
    pub tables: BTreeMap<String, TableState>,
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

pub trait CheckpointStore: Send {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointError>;
    /// Saves and makes it durable before returning. Refuses to go backwards.
    fn save(&mut self, cp: &Checkpoint) -> Result<(), CheckpointError>;
    /// Forgets everything (explicit reset).
    fn reset(&mut self) -> Result<(), CheckpointError>;
}

const KEY: &[u8] = b"checkpoint";

pub struct SledStore {
    db: sled::Db,
}

impl SledStore {
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let db = sled::Config::new()
            .path(path)
            // Small and written often: no need for a big cache.
            .cache_capacity(8 << 20)
            .open()
            .map_err(|source| CheckpointError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(SledStore { db })
    }
}

impl CheckpointStore for SledStore {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        match self.db.get(KEY)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CheckpointError::Corrupt(e.to_string())),
        }
    }

    fn save(&mut self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        if let Some(current) = self.load()? {
            if cp.lsn < current.lsn && cp.slot == current.slot {
                return Err(CheckpointError::Backwards {
                    current: current.lsn,
                    new: cp.lsn,
                });
            }
        }
        let bytes = serde_json::to_vec(cp).map_err(|e| CheckpointError::Corrupt(e.to_string()))?;
        self.db.insert(KEY, bytes)?;
        self.db.flush()?;
        Ok(())
    }

    fn reset(&mut self) -> Result<(), CheckpointError> {
        self.db.remove(KEY)?;
        self.db.flush()?;
        Ok(())
    }
}

/// A copy of the last checkpoint for `sluice status` while `run` holds the
/// database lock. Informational only (not fsynced): the sled store is the truth.
pub fn sidecar_path(db_path: &Path) -> std::path::PathBuf {
    db_path.with_extension("status.json")
}

pub fn write_sidecar(db_path: &Path, cp: &Checkpoint) {
    let path = sidecar_path(db_path);
    let tmp = path.with_extension("tmp");
    if let Ok(bytes) = serde_json::to_vec_pretty(cp) {
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

pub fn read_sidecar(db_path: &Path) -> Option<Checkpoint> {
    let bytes = std::fs::read(sidecar_path(db_path)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_refuses_to_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p1");
        {
            let mut s = SledStore::open(&path).unwrap();
            assert_eq!(s.load().unwrap(), None);
            let mut cp = Checkpoint {
                lsn: Lsn(100),
                system_id: "42".into(),
                slot: "s".into(),
                ..Default::default()
            };
            cp.tables.insert(
                "public.t".into(),
                TableState {
                    status: "streaming".into(),
                    reason: None,
                    columns: vec!["id int4".into()],
                    snapshot_done: true,
                },
            );
            s.save(&cp).unwrap();
            cp.lsn = Lsn(50);
            assert!(matches!(
                s.save(&cp),
                Err(CheckpointError::Backwards { .. })
            ));
        }
        // Reopened (as after a restart): the saved state is there.
        let mut s = SledStore::open(&path).unwrap();
        let cp = s.load().unwrap().unwrap();
        assert_eq!(cp.lsn, Lsn(100));
        assert_eq!(cp.tables["public.t"].status, "streaming");
        assert_eq!(cp.tables["public.t"].columns, vec!["id int4".to_string()]);
        s.reset().unwrap();
        assert_eq!(s.load().unwrap(), None);
    }
}
