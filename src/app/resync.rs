//! `sluice resync`: copy tables again. With `run` running the request goes
//! to it (the other tables keep streaming); otherwise the tables are marked
//! and copied when `run` starts.

use std::time::{Duration, Instant};

use super::requests;
use crate::config::{Config, TableName};
use crate::source::postgres::lsn::Lsn;
use crate::state::{Lifecycle, PipelineState, SledStore, SnapshotProgress, StateError, StateStore};

/// How long `resync` waits for a running `run` to take its request.
const PICKUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResyncError {
    /// Bad usage: exit code 2.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot write the request to the running pipeline: {0}")]
    Request(#[from] std::io::Error),
    #[error("the state database is locked, but no running `sluice run` took the request within {}s; it stays queued in {}", PICKUP_TIMEOUT.as_secs(), .0)]
    NotPickedUp(String),
}

pub async fn resync(config: &Config, names: &[String]) -> Result<Vec<String>, ResyncError> {
    let Some(pg) = config.source.postgres() else {
        return Err(ResyncError::Usage(
            "resync is for [source.postgres]; to read polled tables again, stop sluice and remove the pipeline's checkpoint (re-read rows keep their versions)".into(),
        ));
    };
    if names.is_empty() {
        return Err(ResyncError::Usage(
            "name the tables to resync, e.g. `sluice resync -c FILE public.orders`".into(),
        ));
    }
    let mut tables = Vec::new();
    for n in names {
        let t = TableName::parse(n).map_err(ResyncError::Usage)?;
        if !pg.tables.contains(&t) {
            return Err(ResyncError::Usage(format!(
                "table {t} is not in source.postgres.tables of this config"
            )));
        }
        tables.push(t);
    }
    let path = config.pipeline.checkpoint_path();
    match SledStore::open(&path) {
        Ok(mut store) => {
            let Some(mut state) = store.load::<Lsn>()? else {
                return Ok(vec![
                    "nothing to resync yet: the first `sluice run` copies every table".into(),
                ]);
            };
            let lines = mark(&mut state, &tables);
            store.save(&state)?;
            Ok(lines)
        }
        // Locked: `run` holds it.
        Err(_) => {
            let file = requests::write_resync(&path, &tables)?;
            let started = Instant::now();
            while file.exists() {
                if started.elapsed() > PICKUP_TIMEOUT {
                    return Err(ResyncError::NotPickedUp(file.display().to_string()));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(tables
                .iter()
                .map(|t| format!("table {t}: the running pipeline copies it again now (the other tables keep streaming); follow it with `sluice status`"))
                .collect())
        }
    }
}

fn mark(state: &mut PipelineState<Lsn>, tables: &[TableName]) -> Vec<String> {
    tables
        .iter()
        .map(|t| {
            if state.lifecycle(t).needs_copy() {
                format!("table {t}: already to be copied; `sluice run` does it")
            } else {
                state.set_lifecycle(
                    t,
                    Lifecycle::Resyncing {
                        progress: SnapshotProgress::default(),
                    },
                );
                format!("table {t}: marked for resync; the next `sluice run` copies it again")
            }
        })
        .collect()
}
