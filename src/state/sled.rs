//! The sled state store: one small JSON document, flushed to disk on every
//! save. Reads the checkpoint format of earlier versions and converts it.

use std::path::Path;

use super::{check_forward, Lifecycle, PipelineState, StateError, StateStore, TableState};
use crate::core::position::Position;

const KEY: &[u8] = b"state";
/// Where versions before the state store kept their checkpoint.
const LEGACY_KEY: &[u8] = b"checkpoint";

pub struct SledStore {
    db: sled::Db,
}

impl SledStore {
    /// Opens (or creates) the database; fails while another process holds it.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        // The state names tables and positions: owner-only.
        if let Some(parent) = path.parent() {
            let _ = crate::core::files::create_private_dir(parent);
        }
        let db = sled::Config::new()
            .path(path)
            // Small and written often: no need for a big cache.
            .cache_capacity(8 << 20)
            .open()
            .map_err(|source| StateError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(SledStore { db })
    }

    /// [`SledStore::open`], waiting up to `wait` while another process
    /// holds the lock: `sluice status` opens the database for a moment, and
    /// a `run` starting at that moment must not fail for it.
    pub async fn open_waiting(path: &Path, wait: std::time::Duration) -> Result<Self, StateError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Self::open(path) {
                Err(StateError::Open {
                    source: sled::Error::Io(e),
                    ..
                }) if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("lock") =>
                {
                    if std::time::Instant::now() >= deadline {
                        return Err(StateError::Open {
                            path: path.display().to_string(),
                            source: sled::Error::Io(std::io::Error::new(
                                e.kind(),
                                format!("{e} (held by another sluice process for {wait:?}: is `sluice run` already running with this config?)"),
                            )),
                        });
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    fn load_legacy<P: Position>(&self) -> Result<Option<PipelineState<P>>, StateError> {
        let Some(bytes) = self.db.get(LEGACY_KEY)? else {
            return Ok(None);
        };
        let old: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt(e.to_string()))?;
        from_legacy(&old).map(Some)
    }
}

/// The checkpoint of earlier versions: `{lsn, system_id, slot, saved_at,
/// tables: {name: {status, reason, columns, snapshot_done}}}`.
fn from_legacy<P: Position>(old: &serde_json::Value) -> Result<PipelineState<P>, StateError> {
    let corrupt = |what: &str| StateError::Corrupt(format!("legacy checkpoint: {what}"));
    let position: P =
        serde_json::from_value(old["lsn"].clone()).map_err(|e| corrupt(&format!("lsn: {e}")))?;
    let mut identity = std::collections::BTreeMap::new();
    for k in ["system_id", "slot"] {
        let v = old[k].as_str().ok_or_else(|| corrupt(k))?;
        identity.insert(k.to_string(), v.to_string());
    }
    let mut state = PipelineState::new(identity, Some(position));
    state.saved_at = old["saved_at"].as_i64().unwrap_or(0);
    if let Some(tables) = old["tables"].as_object() {
        for (name, t) in tables {
            let lifecycle = if t["status"] == "failed" {
                Lifecycle::Failed {
                    reason: t["reason"].as_str().unwrap_or("unknown").to_string(),
                    since: None,
                }
            } else if t["snapshot_done"] == true {
                Lifecycle::Streaming
            } else {
                Lifecycle::Pending
            };
            let columns = t["columns"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            state.tables.insert(
                name.clone(),
                TableState {
                    lifecycle,
                    columns,
                    copied_at: None,
                },
            );
        }
    }
    Ok(state)
}

impl StateStore for SledStore {
    fn load<P: Position>(&self) -> Result<Option<PipelineState<P>>, StateError> {
        match self.db.get(KEY)? {
            None => self.load_legacy(),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StateError::Corrupt(e.to_string())),
        }
    }

    fn save<P: Position>(&mut self, state: &PipelineState<P>) -> Result<(), StateError> {
        check_forward(self.load::<P>()?.as_ref(), state)?;
        let bytes = serde_json::to_vec(state).map_err(|e| StateError::Corrupt(e.to_string()))?;
        self.db.insert(KEY, bytes)?;
        self.db.remove(LEGACY_KEY)?;
        self.db.flush()?;
        Ok(())
    }

    fn reset(&mut self) -> Result<(), StateError> {
        self.db.remove(KEY)?;
        self.db.remove(LEGACY_KEY)?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TableName;

    fn identity() -> crate::core::SourceIdentity {
        [("system_id".to_string(), "42".to_string())].into()
    }

    #[tokio::test]
    async fn a_run_waits_for_a_status_that_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held");
        let held = SledStore::open(&path).unwrap();
        let e = SledStore::open_waiting(&path, std::time::Duration::from_millis(300))
            .await
            .err()
            .expect("the lock is held");
        assert!(e.to_string().contains("already running"), "{e}");
        let release = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            drop(held);
        });
        SledStore::open_waiting(&path, std::time::Duration::from_secs(10))
            .await
            .expect("opened once the lock was released");
        release.await.unwrap();
    }

    #[test]
    fn saves_loads_and_refuses_to_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p1");
        let t = TableName::new("public", "t");
        {
            let mut s = SledStore::open(&path).unwrap();
            assert_eq!(s.load::<u64>().unwrap(), None);
            let mut st = PipelineState::new(identity(), Some(100u64));
            st.set_lifecycle(&t, Lifecycle::Streaming);
            st.set_lifecycle(
                &TableName::new("public", "u"),
                Lifecycle::Failed {
                    reason: "type changed".into(),
                    since: Some("90".into()),
                },
            );
            s.save(&st).unwrap();
            st.position = Some(50);
            assert!(matches!(s.save(&st), Err(StateError::Backwards { .. })));
            // Another identity (a recreated upstream) may start lower.
            let other = PipelineState::<u64>::new(Default::default(), Some(1));
            s.save(&other).unwrap();
            s.save(&PipelineState::new(identity(), Some(100u64)))
                .unwrap();
            st.position = Some(100);
            s.save(&st).unwrap();
        }
        // Reopened (as after a restart): the saved state is there.
        let mut s = SledStore::open(&path).unwrap();
        let st: PipelineState<u64> = s.load().unwrap().unwrap();
        assert_eq!(st.position, Some(100));
        assert_eq!(st.lifecycle(&t), Lifecycle::Streaming);
        assert!(!st.writes(&TableName::new("public", "u")));
        s.reset().unwrap();
        assert_eq!(s.load::<u64>().unwrap(), None);
    }

    #[test]
    fn reads_the_legacy_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(&dir.path().join("p")).unwrap();
        let old = serde_json::json!({
            "lsn": 77, "system_id": "42", "slot": "s", "saved_at": 5,
            "tables": {
                "public.a": {"status": "streaming", "columns": ["id int4"], "snapshot_done": true},
                "public.b": {"status": "failed", "reason": "key changed", "columns": []},
                "public.c": {"status": "streaming", "columns": [], "snapshot_done": false}
            }
        });
        s.db.insert(LEGACY_KEY, serde_json::to_vec(&old).unwrap())
            .unwrap();
        let st: PipelineState<u64> = s.load().unwrap().unwrap();
        assert_eq!(st.position, Some(77));
        assert_eq!(st.identity["slot"], "s");
        let a = TableName::new("public", "a");
        assert_eq!(st.lifecycle(&a), Lifecycle::Streaming);
        assert_eq!(st.table(&a).unwrap().columns, vec!["id int4".to_string()]);
        assert!(matches!(
            st.lifecycle(&TableName::new("public", "b")),
            Lifecycle::Failed { .. }
        ));
        assert_eq!(
            st.lifecycle(&TableName::new("public", "c")),
            Lifecycle::Pending
        );
    }
}
