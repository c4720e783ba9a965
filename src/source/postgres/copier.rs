//! Copying tables: planning each table as block (ctid) ranges, and handing
//! out connections (at the new slot's exported snapshot when there is one)
//! to the readers of those ranges, several at a time.
//!
//! Why ranges read at different moments are safe: every copied row carries
//! the same version (the position the copy is consistent with, at or before
//! the moment any range is read), and every change after that position is
//! streamed afterwards with a higher version. A range read later than
//! another simply already contains some of those changes; replaying them
//! leaves the same rows. So ranges may be read in any order, in parallel,
//! and again after a crash. With an exported snapshot (a new slot) every
//! range is read at exactly the slot's consistent point, so no streamed
//! change is older than a copied row (what consumers of a Kafka topic see
//! in order).

use std::sync::{Arc, Mutex};

use tokio_postgres::Client;

use super::catalog;
use super::lsn::Lsn;
use super::setup::type_options;
use super::snapshot::{BatchLimits, CtidRange, SnapshotReader};
use super::types::{TypeCache, TypeOptions};
use crate::config::{quote_literal, PostgresSourceConfig, TableName};
use crate::source::{Copier, SnapshotUnit, SourceError};

/// The id of a unit that is a whole table (no ranges: partitioned parents,
/// empty tables).
pub const WHOLE_TABLE: &str = "all";
const RANGE_PREFIX: &str = "blocks:";

/// A range is at least this many blocks (8 MiB of 8 KiB pages)...
const MIN_BLOCKS_PER_UNIT: u64 = 1024;
/// ...and at most this many (256 MiB): a crash re-reads at most one range
/// per reader.
const MAX_BLOCKS_PER_UNIT: u64 = 32_768;
/// Ranges per reader, so readers that finish early take more work.
const UNITS_PER_READER: u64 = 4;

/// Splits `blocks` into ranges for `readers` parallel readers. The last
/// range is open-ended, so rows added to new blocks after planning are read.
pub fn plan_ranges(blocks: u64, readers: usize) -> Vec<CtidRange> {
    let want = (readers.max(1) as u64) * UNITS_PER_READER;
    let per = (blocks / want).clamp(MIN_BLOCKS_PER_UNIT, MAX_BLOCKS_PER_UNIT);
    let mut out = Vec::new();
    let mut start = 0;
    while start + per < blocks {
        out.push(CtidRange {
            start,
            end: Some(start + per),
        });
        start += per;
    }
    out.push(CtidRange { start, end: None });
    out
}

pub fn unit_id(range: Option<CtidRange>) -> String {
    match range {
        None => WHOLE_TABLE.to_string(),
        Some(CtidRange { start, end: None }) => format!("{RANGE_PREFIX}{start}-"),
        Some(CtidRange {
            start,
            end: Some(end),
        }) => format!("{RANGE_PREFIX}{start}-{end}"),
    }
}

/// The range a unit id names (`None`: the whole table).
pub fn parse_unit_id(id: &str) -> Result<Option<CtidRange>, String> {
    if id == WHOLE_TABLE {
        return Ok(None);
    }
    let bad = || format!("unknown snapshot unit \"{id}\"");
    let (start, end) = id
        .strip_prefix(RANGE_PREFIX)
        .and_then(|r| r.split_once('-'))
        .ok_or_else(bad)?;
    let start = start.parse().map_err(|_| bad())?;
    let end = match end {
        "" => None,
        e => Some(e.parse().map_err(|_| bad())?),
    };
    Ok(Some(CtidRange { start, end }))
}

/// Copies PostgreSQL tables; cheap to clone (shared connections).
#[derive(Clone)]
pub struct PgCopier {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    cfg: PostgresSourceConfig,
    limits: BatchLimits,
    options: TypeOptions,
    readers: usize,
    /// The snapshot every connection reads at (a new slot's export).
    snapshot: Option<String>,
    idle: Mutex<Vec<Client>>,
}

/// A connection taken from the copier; back to the pool only by `release`
/// (a connection dropped in the middle of a COPY is closed instead).
pub struct Lease {
    client: Option<Client>,
    pool: Arc<Inner>,
}

impl Lease {
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("a lease holds its client")
    }

    pub fn release(mut self) {
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                lock(&self.pool.idle).push(c);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PgCopier {
    pub(super) fn new(
        cfg: PostgresSourceConfig,
        limits: BatchLimits,
        readers: usize,
        snapshot: Option<String>,
    ) -> Self {
        PgCopier {
            inner: Arc::new(Inner {
                options: type_options(&cfg),
                cfg,
                limits,
                readers,
                snapshot,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Whether every unit is read at the slot's exported snapshot.
    pub fn at_exported_snapshot(&self) -> bool {
        self.inner.snapshot.is_some()
    }

    async fn lease(&self) -> Result<Lease, SourceError> {
        let idle = lock(&self.inner.idle).pop();
        let client = match idle {
            Some(c) => c,
            None => {
                let c = catalog::connect(&self.inner.cfg.conn).await?;
                if let Some(name) = &self.inner.snapshot {
                    // The connection stays in this transaction for every
                    // range it reads: all at the slot's consistent point.
                    c.batch_execute(&format!(
                        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                        quote_literal(name)
                    ))
                    .await?;
                }
                c
            }
        };
        Ok(Lease {
            client: Some(client),
            pool: self.inner.clone(),
        })
    }
}

impl Copier for PgCopier {
    type Position = Lsn;
    type Reader = SnapshotReader;

    async fn plan(&self, table: &TableName) -> Result<Vec<SnapshotUnit>, SourceError> {
        let lease = self.lease().await?;
        let size = catalog::table_size(lease.client(), table).await?;
        lease.release();
        let Some(size) = size else {
            return Err(SourceError::TableData {
                table: table.clone(),
                message: "the table does not exist (or is not a table)".into(),
            });
        };
        let known = size.rows >= 0.0 && size.blocks > 0;
        let estimate =
            |blocks: u64| known.then(|| (size.rows * blocks as f64 / size.blocks as f64) as u64);
        // Ranges need a table with storage of its own (TID range scans);
        // a partitioned parent is read whole.
        if !size.plain || size.blocks < MIN_BLOCKS_PER_UNIT * 2 {
            return Ok(vec![SnapshotUnit {
                table: table.clone(),
                id: unit_id(None),
                estimated_rows: (size.rows >= 0.0).then_some(size.rows as u64),
            }]);
        }
        Ok(plan_ranges(size.blocks, self.inner.readers)
            .into_iter()
            .map(|r| {
                let blocks = r.end.unwrap_or(size.blocks).saturating_sub(r.start);
                SnapshotUnit {
                    table: table.clone(),
                    id: unit_id(Some(r)),
                    estimated_rows: estimate(blocks),
                }
            })
            .collect())
    }

    async fn open(&self, unit: &SnapshotUnit, at: &Lsn) -> Result<SnapshotReader, SourceError> {
        let range = parse_unit_id(&unit.id).map_err(|m| SourceError::TableData {
            table: unit.table.clone(),
            message: m,
        })?;
        let lease = self.lease().await?;
        let mut types = TypeCache::new();
        let reader = SnapshotReader::start(
            lease.client(),
            &unit.table,
            range,
            &mut types,
            &self.inner.options,
            *at,
            self.inner.limits,
        )
        .await?;
        Ok(reader.with_lease(lease))
    }

    fn version(&self, at: &Lsn) -> u64 {
        at.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_block_and_the_tail() {
        let r = plan_ranges(100_000, 4);
        assert_eq!(r.first().unwrap().start, 0);
        assert_eq!(r.last().unwrap().end, None, "the last range is open-ended");
        for w in r.windows(2) {
            assert_eq!(w[0].end, Some(w[1].start), "no gap, no overlap");
        }
        assert_eq!(r.len(), 16);
        // Small tables: one range of at least the minimum size.
        assert_eq!(
            plan_ranges(10, 4),
            vec![CtidRange {
                start: 0,
                end: None
            }]
        );
        // Huge tables: ranges capped, so a crash re-reads little.
        let big = plan_ranges(10_000_000, 4);
        assert!(big
            .iter()
            .all(|r| r.end.is_none_or(|e| e - r.start <= MAX_BLOCKS_PER_UNIT)));
    }

    #[test]
    fn unit_ids_round_trip() {
        for r in [
            None,
            Some(CtidRange {
                start: 0,
                end: Some(1024),
            }),
            Some(CtidRange {
                start: 2048,
                end: None,
            }),
        ] {
            assert_eq!(parse_unit_id(&unit_id(r)).unwrap(), r);
        }
        assert!(parse_unit_id("blocks:x-").is_err());
        assert!(parse_unit_id("rows:1-2").is_err());
    }
}
