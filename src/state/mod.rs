//! The state store: where a pipeline resumes after a restart or a crash.
//!
//! It holds the source position (opaque, see [`crate::core::position`]),
//! the identity of the upstream that position belongs to, and each table's
//! lifecycle:
//!
//! ```text
//!   pending ──> snapshotting{progress} ──> streaming ──> failed{reason, since}
//!                                              ^               │
//!                                              │          (resync)
//!                                              └── resyncing{progress} <──┘
//! ```
//!
//! Saves are durable when `save` returns (sled: flushed), and the position
//! never moves backwards except through `reset`. Implementations: sled (the
//! real one) and memory (tests).

pub mod memory;
pub mod sidecar;
pub mod sled;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::TableName;
use crate::core::position::{moves_forward, Position, SourceIdentity};
use crate::core::{Classify, ErrorClass};

pub use memory::MemoryStore;
pub use sled::SledStore;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("state database {path}: {source}")]
    Open { path: String, source: ::sled::Error },
    #[error("state database: {0}")]
    Store(#[from] ::sled::Error),
    #[error("state database holds unreadable data: {0}")]
    Corrupt(String),
    #[error("the saved position would move backwards from {current} to {new}; progress only moves forward (reset with `sluice drop`)")]
    Backwards { current: String, new: String },
}

impl Classify for StateError {
    fn class(&self) -> ErrorClass {
        // A local disk or data problem: retrying does not help.
        ErrorClass::Fatal
    }
}

/// Where one table is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Lifecycle {
    /// Configured; its initial copy has not started.
    Pending,
    /// The initial copy is under way; `units_done` survive a crash.
    Snapshotting { progress: SnapshotProgress },
    /// Copied (or never to be copied); changes are written.
    Streaming,
    /// Stopped: nothing is written for it until a resync. `since` is the
    /// source position (as text) from which its changes were skipped.
    Failed {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
    },
    /// Being copied again (after a failure or on request); then streaming.
    Resyncing { progress: SnapshotProgress },
}

/// A table's copy: the units it was planned as (kept, so a restart reads
/// the same units), which are done, and how many rows they held.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    #[serde(default)]
    pub units: Vec<PlannedUnit>,
    #[serde(default)]
    pub units_done: BTreeSet<String>,
    #[serde(default)]
    pub rows: u64,
    /// The version this copy writes its rows at, fixed when it starts: a
    /// copy resumed after a restart goes on at the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedUnit {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_rows: Option<u64>,
}

impl SnapshotProgress {
    /// Rows the source estimated for the whole table, if it could.
    pub fn estimated_rows(&self) -> Option<u64> {
        self.units.iter().map(|u| u.estimated_rows).sum()
    }

    /// Every planned unit is done.
    pub fn complete(&self) -> bool {
        !self.units.is_empty() && self.units.iter().all(|u| self.units_done.contains(&u.id))
    }
}

impl Lifecycle {
    /// Whether changes of this table may be written.
    pub fn writes(&self) -> bool {
        !matches!(self, Lifecycle::Failed { .. })
    }

    /// Whether the table's rows still have to be copied.
    pub fn needs_copy(&self) -> bool {
        matches!(
            self,
            Lifecycle::Pending | Lifecycle::Snapshotting { .. } | Lifecycle::Resyncing { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Lifecycle::Pending => "pending",
            Lifecycle::Snapshotting { .. } => "snapshotting",
            Lifecycle::Streaming => "streaming",
            Lifecycle::Failed { .. } => "failed",
            Lifecycle::Resyncing { .. } => "resyncing",
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lifecycle::Snapshotting { progress } | Lifecycle::Resyncing { progress } => {
                write!(
                    f,
                    "{} ({} of {} units done, {} rows",
                    self.name(),
                    progress.units_done.len(),
                    progress.units.len(),
                    progress.rows
                )?;
                match progress.estimated_rows() {
                    Some(e) => write!(f, " of about {e})"),
                    None => f.write_str(")"),
                }
            }
            Lifecycle::Failed { reason, since } => match since {
                Some(p) => write!(f, "failed since {p}: {reason}"),
                None => write!(f, "failed: {reason}"),
            },
            other => f.write_str(other.name()),
        }
    }
}

/// The state of one replicated table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableState {
    #[serde(flatten)]
    pub lifecycle: Lifecycle,
    /// The last schema seen, as `name type` per column.
    #[serde(default)]
    pub columns: Vec<String>,
    /// The version the table's last copy wrote (or may have written) its
    /// rows at, recorded before the copy writes. A new copy must not write
    /// at the same one: rows the older copy wrote could not be told apart
    /// from the new copy's when stale rows are removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_at: Option<u64>,
}

impl TableState {
    pub fn new(lifecycle: Lifecycle) -> Self {
        TableState {
            lifecycle,
            columns: Vec::new(),
            copied_at: None,
        }
    }
}

/// Everything a pipeline needs to resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "P: Position")]
pub struct PipelineState<P> {
    /// Every change at or before this position is durable in the sink.
    pub position: Option<P>,
    /// Which upstream the position belongs to.
    #[serde(default)]
    pub identity: SourceIdentity,
    /// Unix microseconds of the save.
    pub saved_at: i64,
    /// Per table (`schema.table` as printed).
    #[serde(default)]
    pub tables: BTreeMap<String, TableState>,
}

impl<P: Position> PipelineState<P> {
    pub fn new(identity: SourceIdentity, position: Option<P>) -> Self {
        PipelineState {
            position,
            identity,
            saved_at: 0,
            tables: BTreeMap::new(),
        }
    }

    pub fn table(&self, t: &TableName) -> Option<&TableState> {
        self.tables.get(&t.to_string())
    }

    /// The lifecycle of `t`; a table never seen is pending.
    pub fn lifecycle(&self, t: &TableName) -> Lifecycle {
        self.table(t)
            .map(|s| s.lifecycle.clone())
            .unwrap_or(Lifecycle::Pending)
    }

    pub fn set_lifecycle(&mut self, t: &TableName, lifecycle: Lifecycle) {
        self.tables
            .entry(t.to_string())
            .and_modify(|s| s.lifecycle = lifecycle.clone())
            .or_insert_with(|| TableState::new(lifecycle));
    }

    /// Whether changes of `t` may be written.
    pub fn writes(&self, t: &TableName) -> bool {
        self.table(t).is_none_or(|s| s.lifecycle.writes())
    }
}

/// Persists [`PipelineState`]. `save` is durable when it returns.
pub trait StateStore: Send {
    fn load<P: Position>(&self) -> Result<Option<PipelineState<P>>, StateError>;

    /// Saves and makes it durable before returning. Refuses to move the
    /// position backwards under the same identity.
    fn save<P: Position>(&mut self, state: &PipelineState<P>) -> Result<(), StateError>;

    /// Forgets everything (explicit reset).
    fn reset(&mut self) -> Result<(), StateError>;
}

/// The check every store makes before a save.
pub(crate) fn check_forward<P: Position>(
    current: Option<&PipelineState<P>>,
    new: &PipelineState<P>,
) -> Result<(), StateError> {
    if let Some(cur) = current {
        if cur.identity == new.identity {
            if let (Some(c), Some(n)) = (&cur.position, &new.position) {
                if !moves_forward(c, n) {
                    return Err(StateError::Backwards {
                        current: c.to_string(),
                        new: n.to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}

pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
