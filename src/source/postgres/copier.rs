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
use super::snapshot::{BatchLimits, CtidRange, KeyRange, RowRange, SnapshotReader};
use super::types::TypeOptions;
use crate::config::{quote_literal, PostgresSourceConfig, SplitMode, TableName};
use crate::source::{Copier, SnapshotUnit, SourceError};

/// The id of a unit that is a whole table (no ranges: partitioned parents,
/// empty tables).
pub const WHOLE_TABLE: &str = "all";
const RANGE_PREFIX: &str = "blocks:";
const KEY_PREFIX: &str = "key:";
const PARTITION_PREFIX: &str = "partition:";
/// Rows sampled to place primary-key range bounds.
const KEY_SAMPLE_ROWS: f64 = 20_000.0;
/// Below this many rows per range, fewer ranges (key split).
const MIN_ROWS_PER_KEY_UNIT: f64 = 50_000.0;

/// A range is at least this many blocks (8 MiB of 8 KiB pages)...
const MIN_BLOCKS_PER_UNIT: u64 = 1024;
/// ...and at most this many (256 MiB): a crash re-reads at most one range
/// per reader.
const MAX_BLOCKS_PER_UNIT: u64 = 32_768;
/// Ranges per reader, so readers that finish early take more work. Few:
/// the ClickHouse sink writes a range as one INSERT, and larger INSERTs
/// make larger parts (less merging).
const UNITS_PER_READER: u64 = 2;

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

pub fn unit_id(range: Option<&RowRange>) -> String {
    match range {
        None => WHOLE_TABLE.to_string(),
        Some(RowRange::Blocks(CtidRange { start, end: None })) => {
            format!("{RANGE_PREFIX}{start}-")
        }
        Some(RowRange::Blocks(CtidRange {
            start,
            end: Some(end),
        })) => format!("{RANGE_PREFIX}{start}-{end}"),
        Some(RowRange::Key(k)) => format!(
            "{KEY_PREFIX}{}",
            serde_json::to_string(k).unwrap_or_default()
        ),
        Some(RowRange::Partition(p)) => format!("{PARTITION_PREFIX}{p}"),
    }
}

/// The rows a unit id names (`None`: the whole table).
pub fn parse_unit_id(id: &str) -> Result<Option<RowRange>, String> {
    if id == WHOLE_TABLE {
        return Ok(None);
    }
    let bad = || format!("unknown snapshot unit \"{id}\"");
    if let Some(p) = id.strip_prefix(PARTITION_PREFIX) {
        return Ok(Some(RowRange::Partition(p.to_owned())));
    }
    if let Some(json) = id.strip_prefix(KEY_PREFIX) {
        let k: KeyRange = serde_json::from_str(json).map_err(|_| bad())?;
        return Ok(Some(RowRange::Key(k)));
    }
    let (start, end) = id
        .strip_prefix(RANGE_PREFIX)
        .and_then(|r| r.split_once('-'))
        .ok_or_else(bad)?;
    let start = start.parse().map_err(|_| bad())?;
    let end = match end {
        "" => None,
        e => Some(e.parse().map_err(|_| bad())?),
    };
    Ok(Some(RowRange::Blocks(CtidRange { start, end })))
}

/// Bounds splitting sorted `sample` into at most `parts` ranges of about
/// equal rows (deduplicated: a heavily repeated key value is one bound).
pub fn key_bounds(sample: &[String], parts: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if sample.is_empty() || parts < 2 {
        return out;
    }
    for i in 1..parts {
        let b = &sample[i * sample.len() / parts];
        if out.last() != Some(b) {
            out.push(b.clone());
        }
    }
    out
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
    split: SplitMode,
    /// The snapshot every connection reads at (a new slot's export).
    snapshot: Option<String>,
    /// A one-shot copy: no stream follows it.
    copy_only: bool,
    /// Where the partitions of copied partitioned tables are recorded.
    partition_file: std::path::PathBuf,
    idle: Mutex<Vec<Client>>,
    /// Set once the transactions open when the copy started have ended.
    settled: tokio::sync::OnceCell<()>,
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
        split: SplitMode,
        snapshot: Option<String>,
        copy_only: bool,
        partition_file: std::path::PathBuf,
    ) -> Self {
        PgCopier {
            inner: Arc::new(Inner {
                options: type_options(&cfg),
                cfg,
                limits,
                readers,
                split,
                snapshot,
                copy_only,
                partition_file,
                idle: Mutex::new(Vec::new()),
                settled: tokio::sync::OnceCell::new(),
            }),
        }
    }

    async fn has_key(&self, c: &Client, table: &TableName) -> Result<bool, SourceError> {
        Ok(match catalog::table_info(c, table).await? {
            Some(info) => !catalog::key_columns(c, info.oid).await?.is_empty(),
            None => true,
        })
    }

    /// Whether every unit is read at the slot's exported snapshot.
    pub fn at_exported_snapshot(&self) -> bool {
        self.inner.snapshot.is_some()
    }

    fn block_units(&self, table: &TableName, size: catalog::TableSize) -> Vec<SnapshotUnit> {
        let known = size.rows >= 0.0 && size.blocks > 0;
        let estimate =
            |blocks: u64| known.then(|| (size.rows * blocks as f64 / size.blocks as f64) as u64);
        plan_ranges(size.blocks, self.inner.readers)
            .into_iter()
            .map(|r| {
                let blocks = r.end.unwrap_or(size.blocks).saturating_sub(r.start);
                SnapshotUnit {
                    table: table.clone(),
                    id: unit_id(Some(&RowRange::Blocks(r))),
                    estimated_rows: estimate(blocks),
                }
            })
            .collect()
    }

    /// Ranges of a single-column primary key, bounds placed on a sample of
    /// the keys; `None` when the table has no such key or too few rows.
    async fn key_units(
        &self,
        client: &Client,
        table: &TableName,
        rows: f64,
    ) -> Result<Option<Vec<SnapshotUnit>>, SourceError> {
        let parts = ((rows / MIN_ROWS_PER_KEY_UNIT) as usize)
            .min(self.inner.readers * UNITS_PER_READER as usize);
        if parts < 2 {
            return Ok(None);
        }
        let Some((column, sql_type)) = catalog::single_column_key(client, table).await? else {
            return Ok(None);
        };
        let percent = (KEY_SAMPLE_ROWS / rows * 100.0).clamp(0.01, 100.0);
        let sample: Vec<String> = client
            .query(
                &format!(
                    "SELECT {col}::text FROM {t} TABLESAMPLE SYSTEM ({percent}) ORDER BY {col}",
                    col = crate::config::quote_ident(&column),
                    t = table.quoted()
                ),
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let bounds = key_bounds(&sample, parts);
        if bounds.is_empty() {
            return Ok(None);
        }
        let per = (rows / (bounds.len() + 1) as f64) as u64;
        let mut lows: Vec<Option<String>> = vec![None];
        lows.extend(bounds.iter().cloned().map(Some));
        let mut highs: Vec<Option<String>> = bounds.into_iter().map(Some).collect();
        highs.push(None);
        Ok(Some(
            lows.into_iter()
                .zip(highs)
                .map(|(low, high)| SnapshotUnit {
                    table: table.clone(),
                    id: unit_id(Some(&RowRange::Key(KeyRange {
                        column: column.clone(),
                        sql_type: sql_type.clone(),
                        low,
                        high,
                    }))),
                    estimated_rows: Some(per),
                })
                .collect(),
        ))
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
        let Some(size) = size else {
            lease.release();
            return Err(SourceError::TableData {
                table: table.clone(),
                message: "the table does not exist (or is not a table)".into(),
            });
        };
        let whole = || {
            vec![SnapshotUnit {
                table: table.clone(),
                id: unit_id(None),
                estimated_rows: (size.rows >= 0.0).then_some(size.rows as u64),
            }]
        };
        // A table without a key is a multiset: units read at different
        // moments would count a row moved between them twice (or never),
        // so outside an exported snapshot it is one unit, one snapshot.
        if let Some(info) = catalog::table_info(lease.client(), table).await? {
            let generated = catalog::generated_columns(lease.client(), info.oid).await?;
            catalog::warn_generated(table, &generated);
        }
        if !size.plain {
            // What the copy reads: ATTACH/DETACH later are told apart from it.
            if let Some(parts) = super::partitions::partitions(lease.client(), table).await? {
                super::partitions::record(&self.inner.partition_file, table, &parts)?;
            }
        }
        let keyless = !self.at_exported_snapshot() && !self.has_key(lease.client(), table).await?;
        // A partitioned parent has no storage of its own: one unit per leaf
        // partition, read in parallel.
        if !size.plain && !keyless {
            let leaves = catalog::leaf_partitions(lease.client(), table).await?;
            lease.release();
            let Some(leaves) = leaves.filter(|l| !l.is_empty()) else {
                return Ok(whole());
            };
            return Ok(leaves
                .into_iter()
                .map(|(name, rows)| SnapshotUnit {
                    table: table.clone(),
                    id: unit_id(Some(&RowRange::Partition(name))),
                    estimated_rows: (rows >= 0.0).then_some(rows as u64),
                })
                .collect());
        }
        // Ranges need a table with storage of its own (TID range scans,
        // samples).
        if keyless || !size.plain || size.blocks < MIN_BLOCKS_PER_UNIT * 2 {
            lease.release();
            return Ok(whole());
        }
        if self.inner.split == SplitMode::PrimaryKey {
            let units = self.key_units(lease.client(), table, size.rows).await?;
            lease.release();
            return Ok(match units {
                Some(u) => u,
                None => {
                    tracing::info!(table = %table, "no single-column primary key (or too few rows): copied as block ranges");
                    self.block_units(table, size)
                }
            });
        }
        lease.release();
        Ok(self.block_units(table, size))
    }

    async fn open(&self, unit: &SnapshotUnit, at: &Lsn) -> Result<SnapshotReader, SourceError> {
        let range = parse_unit_id(&unit.id).map_err(|m| SourceError::TableData {
            table: unit.table.clone(),
            message: m,
        })?;
        if !self.at_exported_snapshot() && !self.inner.copy_only {
            // Read only once no transaction that was open at the held
            // position can still commit: its changes before the position
            // are streamed with versions below the copy's, so the copy must
            // contain them. (An exported snapshot is consistent already; a
            // one-shot copy has no stream after it.)
            self.inner
                .settled
                .get_or_try_init(|| async {
                    let lease = self.lease().await?;
                    catalog::wait_for_running_transactions(lease.client()).await?;
                    lease.release();
                    Ok::<_, SourceError>(())
                })
                .await?;
        }
        tracing::debug!(table = %unit.table, unit = %unit.id, "reading");
        let lease = self.lease().await?;
        let reader = SnapshotReader::start(
            lease.client(),
            &unit.table,
            range,
            self.inner.cfg.publish.get(&unit.table),
            &self.inner.options,
            *at,
            self.inner.limits,
        )
        .await?
        .with_seq_base(copy_seq_base(&unit.id));
        if reader.keyless() && !self.at_exported_snapshot() && !self.inner.copy_only {
            // The stream replays every change after `at`; a multiset read
            // later than `at` would count those changes twice.
            return Err(SourceError::TableData {
                table: unit.table.clone(),
                message: "the table has no key, so it is replicated as an exact multiset, which can only be copied at a new replication slot's snapshot; this copy is not (it was resumed after a restart, asked by a resync, or the table was added later). Give the table a primary key (or REPLICA IDENTITY USING INDEX) and resync, or start the pipeline anew (`sluice drop`, then `sluice run`)".into(),
            });
        }
        Ok(reader.with_on_clean_end(move || lease.release()))
    }

    fn version(&self, at: &Lsn) -> u64 {
        at.0
    }

    async fn version_bound(&self) -> Result<Option<u64>, SourceError> {
        let lease = self.lease().await?;
        // In an exported snapshot's transaction this still reads the live
        // position (a function of the server, not of the snapshot).
        let lsn = catalog::current_wal_lsn(lease.client()).await?;
        lease.release();
        Ok(Some(lsn.0))
    }
}

/// The first `_seq` of a unit's rows (tables without a key): the copy
/// marker, then a hash of the unit's id (stable across runs), then room for
/// 2^32 row ordinals.
pub fn copy_seq_base(unit_id: &str) -> u64 {
    // FNV-1a: stable, unlike the standard library's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in unit_id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    crate::core::meta::SEQ_COPY | ((h & 0x7fff_ffff) << 32)
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
        assert_eq!(r.len(), 4 * UNITS_PER_READER as usize);
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
        let key = RowRange::Key(KeyRange {
            column: "Order Id".into(),
            sql_type: "bigint".into(),
            low: Some("10".into()),
            high: None,
        });
        for r in [
            None,
            Some(RowRange::Blocks(CtidRange {
                start: 0,
                end: Some(1024),
            })),
            Some(RowRange::Blocks(CtidRange {
                start: 2048,
                end: None,
            })),
            Some(key),
            Some(RowRange::Partition("\"My S\".\"p:1\"".into())),
        ] {
            assert_eq!(parse_unit_id(&unit_id(r.as_ref())).unwrap(), r);
        }
        assert!(parse_unit_id("blocks:x-").is_err());
        assert!(parse_unit_id("rows:1-2").is_err());
        assert!(parse_unit_id("key:{").is_err());
    }

    #[test]
    fn key_bounds_split_a_sample_evenly_without_repeats() {
        let sample: Vec<String> = (0..100).map(|i| format!("{i:03}")).collect();
        assert_eq!(key_bounds(&sample, 4), vec!["025", "050", "075"]);
        let same: Vec<String> = vec!["a".into(); 50];
        assert_eq!(key_bounds(&same, 4), vec!["a"]);
        assert!(key_bounds(&[], 4).is_empty());
        assert!(key_bounds(&sample, 1).is_empty());
    }
}
