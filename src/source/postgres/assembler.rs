//! Turns decoded pgoutput messages into per-table Arrow micro-batches.
//! Pure: messages in, [`Flush`]es out; catalog lookups happen at the edge
//! (the caller resolves column types before handing over a Relation).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::builder::TableBuilder;
use super::lsn::Lsn;
use super::pgoutput::{
    OldTuple, PgOutputMessage, RelationBody, ReplicaIdentity, TupleData, TupleValue,
};
use super::setup::{describe_table, ColumnSpec};
use super::types::{ArrowMapping, TypeCache, TypeOptions};
use crate::config::TableName;
use crate::core::meta::{RowMeta, OP_DELETE, OP_INSERT, OP_UPDATE};
use crate::core::{AddedDefault, Flush, SinkItem, TableShape, TruncateMeta};
use crate::source::SourceError;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// What the caller looked up in the catalog for the Relations it hands over.
#[derive(Debug, Default)]
pub struct CatalogCache {
    pub types: TypeCache,
    /// Per table OID, the columns declared NOT NULL.
    pub not_null: HashMap<u32, HashSet<String>>,
    /// Per table OID, the key columns from the catalog (primary key, or the
    /// replica identity index): a Relation under REPLICA IDENTITY FULL flags
    /// every column, which is not the key.
    pub keys: HashMap<u32, HashSet<String>>,
    /// Per table OID, what rows older than a column hold in it.
    pub defaults: HashMap<u32, HashMap<String, AddedDefault>>,
    /// Per table OID, array columns declared with several dimensions.
    pub multi_dim: HashMap<u32, HashSet<String>>,
}

struct Relation {
    shape: Arc<TableShape>,
    mappings: Vec<ArrowMapping>,
    key_indexes: Vec<usize>,
}

struct Txn {
    commit_lsn: u64,
    commit_ts: i64,
    /// Set for transactions that end at or before the resume point.
    skip: bool,
    /// Per table (relation OID), the ordinal of its next row change in
    /// this transaction: the `_seq` of tables without a key. Replays number
    /// them the same way, whatever other tables are configured or stopped.
    seq: HashMap<u32, u64>,
}

/// What the caller should do after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// A transaction ended; `end_lsn` may be checkpointed once flushed.
    Committed {
        end_lsn: Lsn,
    },
}

pub struct Assembler {
    tables: HashSet<TableName>,
    type_options: TypeOptions,
    relations: HashMap<u32, Relation>,
    builders: HashMap<u32, TableBuilder>,
    /// Finished batches and truncates, in order, not yet flushed.
    pending: Vec<SinkItem>,
    pending_rows: usize,
    txn: Option<Txn>,
    /// End LSN of the last transaction fully handed to the builders.
    last_commit_end: Option<Lsn>,
    /// Commit time (Unix microseconds) of the transaction that ends at `last_commit_end`.
    last_commit_time: Option<i64>,
    /// Transactions whose commit record lies before this were applied already.
    resume_from: Lsn,
    /// Scratch for unchanged-TOAST column indexes of one row.
    unchanged: Vec<u16>,
    warned: HashSet<String>,
}

impl Assembler {
    /// `tables` limits output to the configured tables (a publication may
    /// hold more); `resume_from` is the checkpoint (skip what ends before it).
    pub fn new(tables: &[TableName], type_options: TypeOptions, resume_from: Lsn) -> Self {
        Assembler {
            tables: tables.iter().cloned().collect(),
            type_options,
            relations: HashMap::new(),
            builders: HashMap::new(),
            pending: Vec::new(),
            pending_rows: 0,
            txn: None,
            last_commit_end: None,
            last_commit_time: None,
            resume_from,
            unchanged: Vec::new(),
            warned: HashSet::new(),
        }
    }

    /// OIDs of a Relation's columns that `types` cannot resolve yet.
    pub fn missing_types(body: &RelationBody, types: &TypeCache) -> Vec<u32> {
        body.columns
            .iter()
            .map(|c| c.type_oid)
            .filter(|oid| !types.contains_key(oid))
            .collect()
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Rows buffered (in builders and finished batches) since the last flush.
    pub fn buffered_rows(&self) -> usize {
        self.pending_rows + self.builders.values().map(|b| b.rows()).sum::<usize>()
    }

    pub fn buffered_bytes(&self) -> usize {
        let pending: usize = self
            .pending
            .iter()
            .map(|i| match i {
                SinkItem::Rows(b) => b.batch.get_array_memory_size(),
                SinkItem::Truncate(..) => 0,
            })
            .sum();
        pending + self.builders.values().map(|b| b.byte_size()).sum::<usize>()
    }

    /// Handles one message. `wal_start` is the XLogData start: the WAL
    /// position of the change, used as its ordering version.
    pub fn handle(
        &mut self,
        msg: PgOutputMessage,
        wal_start: Lsn,
        catalog: &CatalogCache,
    ) -> Result<Step, SourceError> {
        match msg {
            PgOutputMessage::Begin {
                final_lsn,
                commit_ts,
                ..
            } => self.begin(final_lsn, commit_ts),
            PgOutputMessage::Commit { end_lsn, .. } => return Ok(self.commit(end_lsn)),
            PgOutputMessage::Relation(body) => self.relation(body, catalog)?,
            PgOutputMessage::Insert { rel_id, new, .. } => {
                self.row(rel_id, &new, None, OP_INSERT, wal_start)?
            }
            PgOutputMessage::Update {
                rel_id, old, new, ..
            } => self.update(rel_id, old.as_ref(), &new, wal_start)?,
            PgOutputMessage::Delete { rel_id, old, .. } => {
                self.row(rel_id, old.tuple(), None, OP_DELETE, wal_start)?
            }
            PgOutputMessage::Truncate { rel_ids, .. } => self.truncate(&rel_ids, wal_start),
            // Origin, Type (resolved from the catalog), logical messages:
            // nothing to replicate.
            _ => {}
        }
        Ok(Step::Continue)
    }

    /// Starts a transaction whose commit record is at `commit_lsn` (used for
    /// streamed transactions replayed at their Stream Commit).
    pub fn begin(&mut self, commit_lsn: u64, commit_ts: i64) {
        self.txn = Some(Txn {
            commit_lsn,
            commit_ts: commit_ts.saturating_add(PG_EPOCH_OFFSET_MICROS),
            skip: commit_lsn < self.resume_from.0,
            seq: HashMap::new(),
        });
    }

    pub fn commit(&mut self, end_lsn: u64) -> Step {
        let txn = self.txn.take();
        let end = Lsn(end_lsn);
        if end > self.resume_from {
            self.last_commit_end = Some(end);
            self.last_commit_time = txn.map(|t| t.commit_ts);
        }
        Step::Committed { end_lsn: end }
    }

    /// Forgets an open transaction (its stream was aborted or the connection lost).
    pub fn abort(&mut self) {
        self.txn = None;
    }

    fn relation(&mut self, body: RelationBody, catalog: &CatalogCache) -> Result<(), SourceError> {
        let types = &catalog.types;
        let not_null = catalog.not_null.get(&body.rel_id);
        let keys = catalog.keys.get(&body.rel_id);
        let defaults = catalog.defaults.get(&body.rel_id);
        let multi_dim = catalog.multi_dim.get(&body.rel_id);
        let table = TableName::new(body.namespace.clone(), body.name.clone());
        if !self.tables.contains(&table) {
            self.relations.remove(&body.rel_id);
            return Ok(());
        }
        let specs = body.columns.iter().map(|c| ColumnSpec {
            name: &c.name,
            type_oid: c.type_oid,
            typmod: c.type_modifier,
            // Without a catalog entry (tests), the Relation's own flags.
            is_key: keys.map_or(c.is_key(), |k| k.contains(&c.name)),
            not_null: not_null.is_some_and(|n| n.contains(&c.name)),
            added_default: defaults
                .and_then(|d| d.get(&c.name))
                .cloned()
                .unwrap_or_default(),
            multi_dim: multi_dim.is_some_and(|m| m.contains(&c.name)),
        });
        let full = body.replica_identity == ReplicaIdentity::Full;
        let (shape, mappings) = describe_table(
            &table,
            full,
            specs,
            types,
            &self.type_options,
            &mut self.warned,
        )?;
        if let Some(old) = self.relations.get(&body.rel_id) {
            if old.shape == shape {
                return Ok(());
            }
            tracing::info!(table = %table, "table schema changed");
        }
        // Rows decoded under the old shape leave as their own batch.
        self.finish_builder(body.rel_id);
        let key_indexes = shape
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
            .collect();
        self.relations.insert(
            body.rel_id,
            Relation {
                shape,
                mappings,
                key_indexes,
            },
        );
        Ok(())
    }

    fn finish_builder(&mut self, rel_id: u32) {
        if let Some(mut b) = self.builders.remove(&rel_id) {
            if let Some(batch) = b.finish() {
                self.pending_rows += batch.batch.num_rows();
                self.pending.push(SinkItem::Rows(batch));
            }
        }
    }

    fn truncate(&mut self, rel_ids: &[u32], wal_start: Lsn) {
        if self.txn.as_ref().is_some_and(|t| t.skip) {
            return;
        }
        let at = self
            .txn
            .as_ref()
            .map(|txn| TruncateMeta {
                lsn: txn.commit_lsn,
                version: wal_start.0,
                commit_ts: txn.commit_ts,
            })
            .unwrap_or_default();
        let mut tables = Vec::new();
        for id in rel_ids {
            if let Some(rel) = self.relations.get(id) {
                tables.push(rel.shape.table.clone());
                self.finish_builder(*id);
            }
        }
        if !tables.is_empty() {
            self.pending.push(SinkItem::Truncate(tables, at));
        }
    }

    fn update(
        &mut self,
        rel_id: u32,
        old: Option<&OldTuple>,
        new: &TupleData,
        wal_start: Lsn,
    ) -> Result<(), SourceError> {
        // An update that moves the key: a delete of the old key first, so the
        // old row does not linger under its old key in the sink. Without a
        // key (a multiset) every update is a delete of one copy of the old
        // row and an insert of the new one.
        let moved = match (old, self.relations.get(&rel_id)) {
            (Some(old), Some(rel)) if rel.key_indexes.is_empty() => {
                if !matches!(old, OldTuple::Full(_)) {
                    return Err(SourceError::TableData {
                        table: rel.shape.table.clone(),
                        message: "an update of a table without a key came without its whole old row; set REPLICA IDENTITY FULL (or add a primary key) and resync".into(),
                    });
                }
                true
            }
            (Some(old), Some(rel)) => rel.key_indexes.iter().any(|&i| {
                !matches!((old.tuple().get(i), new.get(i)), (Some(a), Some(b)) if same_value(&a, &b))
            }),
            (None, Some(rel)) if rel.key_indexes.is_empty() && self.txn.as_ref().is_some_and(|t| !t.skip) => {
                return Err(SourceError::TableData {
                    table: rel.shape.table.clone(),
                    message: "an update of a table without a key came without its old row; set REPLICA IDENTITY FULL (or add a primary key) and resync".into(),
                });
            }
            _ => false,
        };
        if let (true, Some(old)) = (moved, old) {
            self.row(rel_id, old.tuple(), None, OP_DELETE, wal_start)?;
        }
        let fill = match old {
            Some(OldTuple::Full(t)) => Some(t),
            _ => None,
        };
        self.row(rel_id, new, fill, OP_UPDATE, wal_start)
    }

    /// Appends one row. Unchanged TOAST values take the old tuple's value
    /// when it has one (REPLICA IDENTITY FULL); otherwise they are recorded
    /// in the unchanged-columns list so the sink never overwrites them.
    fn row(
        &mut self,
        rel_id: u32,
        tuple: &TupleData,
        old: Option<&TupleData>,
        op: u8,
        wal_start: Lsn,
    ) -> Result<(), SourceError> {
        let Some(txn) = &self.txn else {
            return Err(SourceError::Protocol(
                "row change outside a transaction".into(),
            ));
        };
        if txn.skip {
            return Ok(());
        }
        let meta = RowMeta {
            op,
            lsn: txn.commit_lsn,
            version: wal_start.0,
            commit_ts: txn.commit_ts,
        };
        let seq = txn.seq.get(&rel_id).copied().unwrap_or(0);
        let Some(rel) = self.relations.get(&rel_id) else {
            // Not a configured table (publication holds more), or a protocol bug.
            return Ok(());
        };
        let shape = rel.shape.clone();
        let builder = self
            .builders
            .entry(rel_id)
            .or_insert_with(|| TableBuilder::new(shape.clone(), &rel.mappings));
        if tuple.len() != builder.column_count() {
            return Err(SourceError::Protocol(format!(
                "{}: tuple has {} columns, relation has {}",
                shape.table,
                tuple.len(),
                builder.column_count()
            )));
        }
        self.unchanged.clear();
        for (i, v) in tuple.iter().enumerate() {
            let v = match (v, old) {
                (TupleValue::UnchangedToast, Some(o)) => o.get(i).unwrap_or(TupleValue::Null),
                (v, _) => v,
            };
            let col = builder.column(i);
            let res = match v {
                TupleValue::Null => {
                    col.append_null();
                    Ok(())
                }
                TupleValue::UnchangedToast => {
                    col.append_null();
                    self.unchanged.push(i as u16);
                    Ok(())
                }
                TupleValue::Binary(b) => col.append_binary(Some(b)),
                TupleValue::Text(t) => col.append_text(Some(t)),
            };
            if let Err(e) = res {
                // A value this table's column cannot hold: stop this table
                // only (the others are unaffected).
                return Err(SourceError::TableData {
                    table: shape.table.clone(),
                    message: format!("column \"{}\": {e}", shape.columns[i].name),
                });
            }
        }
        builder.set_next_seq(seq);
        builder.finish_row(meta, &self.unchanged);
        if let Some(t) = &mut self.txn {
            *t.seq.entry(rel_id).or_default() += 1;
        }
        // The whole old row of an update, where the table logs it.
        match old.filter(|_| op == OP_UPDATE && builder.has_before()) {
            Some(o) => {
                for (i, v) in o.iter().enumerate() {
                    let col = builder.before_column(i).expect("has before");
                    let res = match v {
                        TupleValue::Null | TupleValue::UnchangedToast => {
                            col.append_null();
                            Ok(())
                        }
                        TupleValue::Binary(b) => col.append_binary(Some(b)),
                        TupleValue::Text(t) => col.append_text(Some(t)),
                    };
                    if let Err(e) = res {
                        return Err(SourceError::TableData {
                            table: shape.table.clone(),
                            message: format!(
                                "old value of column \"{}\": {e}",
                                shape.columns[i].name
                            ),
                        });
                    }
                }
                builder.finish_before();
            }
            None => builder.no_before(),
        }
        Ok(())
    }

    /// Everything buffered so far, with the checkpoint it makes safe.
    pub fn take_flush(&mut self) -> Flush<Lsn> {
        let mut ids: Vec<u32> = self.builders.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(b) = self.builders.get_mut(&id) {
                if let Some(batch) = b.finish() {
                    self.pending.push(SinkItem::Rows(batch));
                }
            }
        }
        self.pending_rows = 0;
        Flush {
            items: std::mem::take(&mut self.pending),
            position: self.last_commit_end.take(),
            source_time: self.last_commit_time.take(),
        }
    }

    /// True when nothing is buffered and no checkpoint awaits a flush.
    pub fn is_idle(&self) -> bool {
        self.txn.is_none()
            && self.pending.is_empty()
            && self.last_commit_end.is_none()
            && self.builders.values().all(|b| b.rows() == 0)
    }
}

fn same_value(a: &TupleValue<'_>, b: &TupleValue<'_>) -> bool {
    match (a, b) {
        (TupleValue::Null, TupleValue::Null) => true,
        (TupleValue::Binary(x), TupleValue::Binary(y))
        | (TupleValue::Text(x), TupleValue::Text(y)) => x == y,
        // Key columns are never TOAST-unchanged in practice; treat as same.
        (TupleValue::UnchangedToast, _) | (_, TupleValue::UnchangedToast) => true,
        _ => false,
    }
}
