//! PostgreSQL logical replication as a [`Source`].
//!
//! ```text
//!  catalog.rs (queries) ──> setup.rs (describe a table; publication, slot)
//!                                  │
//!  wire.rs ─> replication.rs ─> stream.rs: Session ──> pgoutput/ (pure decoder)
//!   (CopyBoth, auth, TLS)        │  spill.rs (streamed txns)  │
//!                                v                            v
//!                       Flush<Lsn> ─────────────── assembler.rs (pure) ─> builder.rs
//!                                                                   └─> types/ (into Arrow)
//!  snapshot.rs: COPY (FORMAT binary) ─> copy_binary.rs ─> builder.rs
//! ```
//!
//! Invariants: a position is confirmed to PostgreSQL only after the
//! pipeline acknowledged it (sink durable, state saved); a session resumes
//! from the saved position, never "+1", and skips transactions that end at
//! or before it; a slot that is gone or confirmed beyond the saved position
//! is an error, never a silent gap.

pub mod assembler;
pub mod builder;
pub mod catalog;
mod check;
pub mod copier;
pub mod copy_binary;
mod heartbeat;
pub mod lsn;
pub mod partitions;
pub mod pgoutput;
pub mod publication;
pub mod replication;
pub mod setup;
pub mod snapshot;
pub mod spill;
pub mod stream;
pub mod tls;
pub mod types;
pub mod wire;

use std::future::Future;
use std::path::PathBuf;

use self::catalog::SlotInfo;
use self::copier::PgCopier;
use self::lsn::Lsn;
use self::replication::{ReplicationConnection, SlotSnapshot};
use self::snapshot::BatchLimits;
use self::stream::{Session, SessionOptions};
use crate::config::{BatchConfig, PostgresSourceConfig, SplitMode, TableName};
use crate::core::health::Report;
use crate::core::position::SourceIdentity;
use crate::source::{Prepared, Source};

pub use crate::source::error::{PgServerError, SourceError};

/// Keys of the identity a saved position belongs to.
pub const IDENTITY_SYSTEM_ID: &str = "system_id";
pub const IDENTITY_SLOT: &str = "slot";

/// Snapshot batches are capped at this fraction of `batch.max_bytes` per
/// reader, so parallel readers stay within the configured memory.
const DEFAULT_COPY_READERS: usize = 4;

/// PostgreSQL logical replication through one slot and one publication.
pub struct PgSource {
    cfg: PostgresSourceConfig,
    batch: BatchConfig,
    spill_dir: PathBuf,
    /// Parallel readers of a copy (for planning ranges and memory).
    copy_readers: usize,
    copy_split: SplitMode,
    /// The replication connection that created a new slot with an exported
    /// snapshot, kept idle (which keeps the snapshot valid) until the
    /// initial copies are done.
    exporter: Option<Exporter>,
    /// A one-shot copy (`sluice snapshot`): no stream follows it.
    copy_only: bool,
}

/// Holds a new slot's exported snapshot open: the connection that made it,
/// kept idle (a mutex only makes the source shareable; it is never locked).
struct Exporter {
    _connection: std::sync::Mutex<ReplicationConnection>,
    snapshot: String,
}

impl PgSource {
    /// No I/O until used. Streamed transactions spill into `spill_dir`.
    pub fn new(cfg: PostgresSourceConfig, batch: BatchConfig, spill_dir: PathBuf) -> Self {
        PgSource {
            cfg,
            batch,
            spill_dir,
            copy_readers: DEFAULT_COPY_READERS,
            copy_split: SplitMode::Ctid,
            exporter: None,
            copy_only: false,
        }
    }

    /// How many units a copy reads at once (plans ranges for that many),
    /// and how tables are cut into them.
    pub fn with_copy(mut self, readers: usize, split: SplitMode) -> Self {
        self.copy_readers = readers.max(1);
        self.copy_split = split;
        self
    }

    pub fn config(&self) -> &PostgresSourceConfig {
        &self.cfg
    }

    /// A session for `sluice tail`: creates publication and slot as
    /// configured, streams every configured table from `from` (or the slot's
    /// confirmed position), and never confirms anything.
    pub async fn tail_session(&self, from: Option<Lsn>) -> Result<Session, SourceError> {
        let opts = SessionOptions {
            resume: from,
            tables: self.cfg.tables.clone(),
            ensure_slot: true,
            spill_dir: self.spill_dir.clone(),
            confirm: false,
            startup: Vec::new(),
        };
        Session::start(&self.cfg, self.batch, opts).await
    }

    fn identity(&self, system_id: &str) -> SourceIdentity {
        [
            (IDENTITY_SYSTEM_ID.to_string(), system_id.to_string()),
            (IDENTITY_SLOT.to_string(), self.cfg.slot.clone()),
        ]
        .into()
    }

    /// Refuses a saved position from another cluster or another slot.
    fn check_identity(&self, saved: &SourceIdentity, system_id: &str) -> Result<(), SourceError> {
        let saved_system = saved.get(IDENTITY_SYSTEM_ID).map(String::as_str);
        if saved_system != Some(system_id) {
            return Err(SourceError::Mismatch(format!(
                "the checkpoint belongs to another PostgreSQL cluster (system id {} there, {system_id} here): point the config at the right server, or start afresh with `sluice drop`",
                saved_system.unwrap_or("unknown")
            )));
        }
        let saved_slot = saved.get(IDENTITY_SLOT).map(String::as_str);
        if saved_slot != Some(self.cfg.slot.as_str()) {
            return Err(SourceError::Mismatch(format!(
                "the checkpoint belongs to slot \"{}\" but the config names slot \"{}\": restore the slot name or start afresh with `sluice drop`",
                saved_slot.unwrap_or("unknown"),
                self.cfg.slot
            )));
        }
        Ok(())
    }
}

impl Source for PgSource {
    type Position = Lsn;
    type Stream = Session;
    type Copier = PgCopier;

    async fn recreate(&mut self) -> Result<Prepared<Lsn>, SourceError> {
        let client = catalog::connect(&self.cfg.conn).await?;
        if catalog::drop_slot(&client, &self.cfg.slot).await? {
            tracing::warn!(slot = %self.cfg.slot, "dropped the invalidated slot");
        }
        // The new slot exports its snapshot, where every table is copied.
        let initial_snapshot = std::mem::replace(&mut self.cfg.initial_snapshot, true);
        let prepared = self.prepare(None).await;
        self.cfg.initial_snapshot = initial_snapshot;
        prepared
    }

    async fn prepare(
        &mut self,
        saved: Option<(&Lsn, &SourceIdentity)>,
    ) -> Result<Prepared<Lsn>, SourceError> {
        let client = catalog::connect(&self.cfg.conn).await?;
        setup::require_logical_wal(&client).await?;
        let mut repl = ReplicationConnection::connect(&self.cfg.conn, &[]).await?;
        let system_id = repl.identify_system().await?.system_id;
        let identity = self.identity(&system_id);
        let result = match saved {
            Some((position, saved_identity)) => {
                self.check_identity(saved_identity, &system_id)?;
                let slot = setup::existing_slot(&self.cfg, &client).await?;
                setup::check_resumable(&self.cfg.slot, slot.as_ref(), *position)?;
                // Tables added to the config join the publication.
                catalog::ensure_publication(
                    &client,
                    &self.cfg.publication,
                    &self.cfg.tables,
                    &self.cfg.publish,
                    self.cfg.create_publication,
                )
                .await?;
                *position
            }
            None => {
                // A new slot exports its snapshot for the initial copy: read
                // there, no streamed change is older than a copied row.
                let export = if self.cfg.initial_snapshot {
                    SlotSnapshot::Export
                } else {
                    SlotSnapshot::NoExport
                };
                let created =
                    setup::ensure_publication_and_slot(&self.cfg, &client, &mut repl, export)
                        .await?;
                match created {
                    Some(slot) => {
                        if let Some(name) = slot.snapshot_name {
                            tracing::info!(snapshot = %name, "the initial copy reads at the new slot's exported snapshot");
                            self.exporter = Some(Exporter {
                                _connection: std::sync::Mutex::new(repl),
                                snapshot: name,
                            });
                            return Ok(Prepared {
                                identity,
                                start: slot.consistent_point,
                            });
                        }
                        slot.consistent_point
                    }
                    // The slot was there already: start where it stands.
                    None => match catalog::slot(&client, &self.cfg.slot).await? {
                        Some(SlotInfo {
                            confirmed_flush_lsn: Some(lsn),
                            ..
                        }) if lsn > Lsn::ZERO => lsn,
                        // Not consistent yet: another process is creating it
                        // (or was killed while creating it, and the server
                        // has not dropped it yet).
                        Some(SlotInfo {
                            active_pid: Some(pid),
                            ..
                        }) => {
                            return Err(SourceError::SlotInUse {
                                slot: self.cfg.slot.clone(),
                                pid: pid.to_string(),
                            })
                        }
                        _ => {
                            return Err(SourceError::NotReady(format!(
                                "replication slot \"{}\" exists but has no confirmed position (its creation never completed): drop it (`sluice drop -c FILE`) and start again",
                                self.cfg.slot
                            )))
                        }
                    },
                }
            }
        };
        repl.wire.close().await;
        Ok(Prepared {
            identity,
            start: result,
        })
    }

    async fn prepare_copy_only(&mut self) -> Result<Prepared<Lsn>, SourceError> {
        let client = catalog::connect(&self.cfg.conn).await?;
        let position = catalog::current_wal_lsn(&client).await?;
        self.copy_only = true;
        Ok(Prepared {
            identity: [("mode".to_string(), "snapshot".to_string())].into(),
            start: position,
        })
    }

    fn copier(&self) -> PgCopier {
        let limits = BatchLimits {
            max_rows: self.batch.max_rows,
            max_bytes: (self.batch.max_bytes as usize / self.copy_readers).max(1 << 20),
        };
        let snapshot = self.exporter.as_ref().map(|e| e.snapshot.clone());
        PgCopier::new(
            self.cfg.clone(),
            limits,
            self.copy_readers,
            self.copy_split,
            snapshot,
            self.copy_only,
            partitions::file_for(&self.spill_dir),
        )
    }

    fn release_snapshot(&mut self) {
        if self.exporter.take().is_some() {
            tracing::debug!("initial copy done: released the exported snapshot");
        }
    }

    fn mark_position(&self) -> impl Future<Output = Result<(), SourceError>> + Send + 'static {
        let conn = self.cfg.conn.clone();
        async move {
            let client = catalog::connect(&conn).await?;
            catalog::commit_a_mark(&client).await
        }
    }

    async fn start_stream(
        &mut self,
        from: &Lsn,
        tables: &[TableName],
    ) -> Result<Session, SourceError> {
        let opts = SessionOptions {
            resume: Some(*from).filter(|l| *l > Lsn::ZERO),
            tables: tables.to_vec(),
            ensure_slot: false,
            spill_dir: self.spill_dir.clone(),
            confirm: true,
            startup: Vec::new(),
        };
        Session::start(&self.cfg, self.batch, opts).await
    }

    async fn healthcheck(&self) -> Report {
        check::healthcheck(&self.cfg).await
    }
}
