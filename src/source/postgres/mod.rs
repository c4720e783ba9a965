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
pub mod copy_binary;
pub mod lsn;
pub mod pgoutput;
pub mod replication;
pub mod setup;
pub mod snapshot;
pub mod spill;
pub mod stream;
pub mod tls;
pub mod types;
pub mod wire;

use std::path::PathBuf;

use tokio_postgres::Client;

use self::lsn::Lsn;
use self::replication::{ReplicationConnection, SlotSnapshot};
use self::snapshot::SnapshotReader;
use self::stream::{Session, SessionOptions};
use self::types::TypeCache;
use crate::config::{BatchConfig, PostgresSourceConfig, TableName};
use crate::core::health::Report;
use crate::core::position::SourceIdentity;
use crate::source::{Prepared, SnapshotUnit, Source};

pub use crate::source::error::{PgServerError, SourceError};

/// Keys of the identity a saved position belongs to.
pub const IDENTITY_SYSTEM_ID: &str = "system_id";
pub const IDENTITY_SLOT: &str = "slot";

/// The id of the one unit a table's snapshot has today.
const WHOLE_TABLE_UNIT: &str = "all";

/// PostgreSQL logical replication through one slot and one publication.
pub struct PgSource {
    cfg: PostgresSourceConfig,
    batch: BatchConfig,
    spill_dir: PathBuf,
    /// For snapshot reads; opened on first use.
    catalog: Option<Client>,
    types: TypeCache,
}

impl PgSource {
    /// No I/O until used. Streamed transactions spill into `spill_dir`.
    pub fn new(cfg: PostgresSourceConfig, batch: BatchConfig, spill_dir: PathBuf) -> Self {
        PgSource {
            cfg,
            batch,
            spill_dir,
            catalog: None,
            types: TypeCache::new(),
        }
    }

    pub fn config(&self) -> &PostgresSourceConfig {
        &self.cfg
    }

    async fn catalog(&mut self) -> Result<&Client, SourceError> {
        if self.catalog.as_ref().is_none_or(Client::is_closed) {
            self.catalog = Some(catalog::connect(&self.cfg.conn).await?);
        }
        Ok(self.catalog.as_ref().expect("connected above"))
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
    type UnitReader = SnapshotReader;

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
                    self.cfg.create_publication,
                )
                .await?;
                *position
            }
            None => {
                let created = setup::ensure_publication_and_slot(
                    &self.cfg,
                    &client,
                    &mut repl,
                    SlotSnapshot::NoExport,
                )
                .await?;
                match created {
                    Some(slot) => slot.consistent_point,
                    None => catalog::slot(&client, &self.cfg.slot)
                        .await?
                        .and_then(|s| s.confirmed_flush_lsn)
                        .unwrap_or(Lsn::ZERO),
                }
            }
        };
        repl.wire.close().await;
        Ok(Prepared {
            identity,
            start: result,
        })
    }

    async fn plan_snapshot(&mut self, table: &TableName) -> Result<Vec<SnapshotUnit>, SourceError> {
        Ok(vec![SnapshotUnit {
            table: table.clone(),
            id: WHOLE_TABLE_UNIT.to_string(),
            estimated_rows: None,
        }])
    }

    async fn open_unit(
        &mut self,
        unit: &SnapshotUnit,
        at: &Lsn,
    ) -> Result<SnapshotReader, SourceError> {
        let options = setup::type_options(&self.cfg);
        let max_rows = self.batch.max_rows;
        self.catalog().await?;
        let client = self.catalog.as_ref().expect("connected above");
        SnapshotReader::start(
            client,
            &unit.table,
            &mut self.types,
            &options,
            *at,
            max_rows,
        )
        .await
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
