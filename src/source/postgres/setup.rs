//! Describing a table, in one place: catalog (or Relation message) columns
//! -> the source-neutral shape and the Arrow mappings of its columns. The
//! snapshot, the stream and the type check all go through here, so they
//! produce identical batches. Also: making sure publication and slot exist.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::DataType;
use tokio_postgres::Client;

use super::catalog;
use super::lsn::Lsn;
use super::replication::{CreatedSlot, ReplicationConnection, SlotSnapshot};
use super::types::TypeCache;
use super::types::{arrow_type, oid, ArrowMapping, DecoderKind, PgType, PgTypeKind, TypeOptions};
use crate::config::{PostgresSourceConfig, TableName, UnconstrainedNumeric};
use crate::core::meta::is_reserved_column;
use crate::core::{AddedDefault, ColumnInfo, LogicalType, TableShape};
use crate::source::SourceError;

pub fn type_options(cfg: &PostgresSourceConfig) -> TypeOptions {
    use super::types::UnconstrainedNumeric as T;
    TypeOptions {
        unconstrained_numeric: match cfg.unconstrained_numeric {
            UnconstrainedNumeric::Text => T::Text,
            UnconstrainedNumeric::Decimal { precision, scale } => T::Decimal { precision, scale },
        },
        ..TypeOptions::default()
    }
}

/// One column as the catalog or a Relation message describes it.
pub struct ColumnSpec<'a> {
    pub name: &'a str,
    pub type_oid: u32,
    pub typmod: i32,
    pub is_key: bool,
    pub not_null: bool,
    pub added_default: AddedDefault,
    /// Declared with several dimensions (`int[][]`): kept as exact text.
    pub multi_dim: bool,
}

/// A table's shape and Arrow mappings from its columns. `before_images`:
/// the table logs whole old rows (REPLICA IDENTITY FULL). `warned` keeps
/// "replicated as text" warnings to one per column.
pub fn describe_table<'a>(
    table: &TableName,
    before_images: bool,
    specs: impl Iterator<Item = ColumnSpec<'a>>,
    types: &TypeCache,
    options: &TypeOptions,
    warned: &mut HashSet<String>,
) -> Result<(Arc<TableShape>, Vec<ArrowMapping>), SourceError> {
    let mut columns = Vec::new();
    let mut mappings = Vec::new();
    for col in specs {
        if is_reserved_column(col.name) {
            return Err(SourceError::NotReady(format!(
                "table {table}: column \"{}\" collides with a sluice metadata column; rename it",
                col.name
            )));
        }
        let mut ty = types.get(&col.type_oid).cloned().ok_or_else(|| {
            SourceError::Protocol(format!(
                "type {} of {table}.{} was not resolved",
                col.type_oid, col.name
            ))
        })?;
        ty.typmod = col.typmod;
        if let PgTypeKind::Array { element } = &mut ty.kind {
            element.typmod = col.typmod;
        }
        let mapping = if col.multi_dim && matches!(ty.kind, PgTypeKind::Array { .. }) {
            // One list per value would flatten the shape: the exact text
            // (`{{1,2},{3,4}}`) keeps it.
            ty.kind = PgTypeKind::Other;
            multi_dim_as_text(&ty)
        } else {
            arrow_type(&ty, options).map_err(|e| {
                SourceError::NotReady(format!("table {table}, column \"{}\": {e}", col.name))
            })?
        };
        if let Some(w) = &mapping.warning {
            if warned.insert(format!("{table}.{}", col.name)) {
                tracing::warn!(table = %table, column = %col.name, "{w}");
            }
        }
        columns.push(ColumnInfo {
            name: col.name.to_owned(),
            source_type: ty.name.clone(),
            logical: logical_type(&ty, &mapping.data_type),
            data_type: mapping.data_type.clone(),
            is_key: col.is_key,
            nullable: !col.not_null,
            added_default: col.added_default,
        });
        mappings.push(mapping);
    }
    let shape = Arc::new(TableShape {
        table: table.clone(),
        columns,
        before_images,
    });
    Ok((shape, mappings))
}

/// A multi-dimensional array column: its PostgreSQL text form, exactly.
fn multi_dim_as_text(t: &PgType) -> ArrowMapping {
    ArrowMapping {
        data_type: DataType::Utf8,
        decoder: DecoderKind::TextOnly,
        needs_text_format: true,
        warning: Some(format!(
            "declared as a multi-dimensional {} array: replicated as its exact text form (e.g. {{{{1,2}},{{3,4}}}}), not as a list",
            t.name.trim_start_matches('_')
        )),
        pg_type: t.name.clone(),
    }
}

/// What a PostgreSQL type means, beyond its Arrow carrier: JSON and enums
/// (also inside domains and arrays) are text with a meaning sinks use.
fn logical_type(t: &PgType, data_type: &DataType) -> LogicalType {
    match &t.kind {
        PgTypeKind::Enum => LogicalType::Enum,
        PgTypeKind::Domain { base } => logical_type(base, data_type),
        PgTypeKind::Array { element } => {
            let el = match data_type {
                DataType::List(f) | DataType::LargeList(f) => f.data_type(),
                other => other,
            };
            LogicalType::Array(Box::new(logical_type(element, el)))
        }
        PgTypeKind::Other => LogicalType::Other,
        PgTypeKind::Base if matches!(t.oid, oid::JSON | oid::JSONB) => LogicalType::Json,
        PgTypeKind::Base => LogicalType::from_arrow(data_type),
    }
}

/// A table as the catalog describes it: its published column names, shape
/// and mappings.
pub struct TableDescription {
    pub names: Vec<String>,
    pub shape: Arc<TableShape>,
    pub mappings: Vec<ArrowMapping>,
}

/// Looks a table up in the catalog and describes it; `columns` keeps only
/// those (a publication's column list: what the stream sends).
pub async fn describe(
    client: &Client,
    table: &TableName,
    types: &mut TypeCache,
    options: &TypeOptions,
    columns: Option<&[String]>,
) -> Result<TableDescription, SourceError> {
    let mut cols = catalog::table_columns(client, table).await?;
    if let Some(keep) = columns {
        cols.retain(|c| keep.contains(&c.name));
    }
    if cols.is_empty() {
        return Err(SourceError::NotReady(format!(
            "table {table} does not exist"
        )));
    }
    let full = catalog::table_info(client, table)
        .await?
        .is_some_and(|t| t.replica_identity == catalog::ReplicaIdentity::Full);
    let oids: Vec<u32> = cols.iter().map(|c| c.type_oid).collect();
    catalog::resolve_types(client, &oids, types).await?;
    let specs = cols.iter().map(|c| ColumnSpec {
        name: &c.name,
        type_oid: c.type_oid,
        typmod: c.typmod,
        not_null: c.not_null,
        is_key: c.is_key,
        // A copy writes every row: nothing is left to a default.
        added_default: AddedDefault::Null,
        multi_dim: c.multi_dim,
    });
    let (shape, mappings) =
        describe_table(table, full, specs, types, options, &mut HashSet::new())?;
    Ok(TableDescription {
        names: cols.into_iter().map(|c| c.name).collect(),
        shape,
        mappings,
    })
}

/// Whether every column of `tables` has a binary decoder; pgoutput's binary
/// option applies to all of them, so one type without (ranges, geometric
/// types, ...) makes the whole stream text.
pub async fn all_binary(
    client: &Client,
    tables: &[TableName],
    options: &TypeOptions,
) -> Result<bool, SourceError> {
    let mut types = TypeCache::new();
    let mut binary = true;
    for table in tables {
        let Ok(d) = describe(client, table, &mut types, options, None).await else {
            // A missing table is reported where it matters (publication).
            continue;
        };
        for (name, m) in d.names.iter().zip(&d.mappings) {
            if m.needs_text_format {
                tracing::warn!(table = %table, column = %name, pg_type = %m.pg_type,
                    "no binary decoder for this type: replicating in text format");
                binary = false;
            }
        }
    }
    Ok(binary)
}

/// Checks wal_level: logical decoding needs `logical`.
pub async fn require_logical_wal(client: &Client) -> Result<catalog::ServerSettings, SourceError> {
    let settings = catalog::server_settings(client).await?;
    if settings.wal_level != "logical" {
        return Err(SourceError::NotReady(format!(
            "wal_level is '{}' but must be 'logical': ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
            settings.wal_level
        )));
    }
    Ok(settings)
}

/// Makes sure the publication and the slot exist (as configured). Returns
/// the slot when this call created it.
pub async fn ensure_publication_and_slot(
    cfg: &PostgresSourceConfig,
    catalog_client: &Client,
    repl: &mut ReplicationConnection,
    snapshot: SlotSnapshot,
) -> Result<Option<CreatedSlot>, SourceError> {
    catalog::ensure_publication(
        catalog_client,
        &cfg.publication,
        &cfg.tables,
        &cfg.publish,
        cfg.create_publication,
    )
    .await?;
    match existing_slot(cfg, catalog_client).await? {
        Some(_) => Ok(None),
        None if !cfg.create_slot => Err(SourceError::SlotMissing {
            slot: cfg.slot.clone(),
        }),
        None => {
            let created = repl.create_slot(&cfg.slot, snapshot).await?;
            tracing::info!(slot = %cfg.slot, consistent_point = %created.consistent_point, "created replication slot");
            Ok(Some(created))
        }
    }
}

/// The slot, if it exists and sluice can use it (pgoutput, not invalidated).
pub async fn existing_slot(
    cfg: &PostgresSourceConfig,
    catalog_client: &Client,
) -> Result<Option<catalog::SlotInfo>, SourceError> {
    let Some(s) = catalog::slot(catalog_client, &cfg.slot).await? else {
        return Ok(None);
    };
    if s.plugin.as_deref() != Some("pgoutput") {
        return Err(SourceError::NotReady(format!(
            "replication slot \"{}\" uses plugin {:?}, not pgoutput: drop it or configure another slot",
            cfg.slot,
            s.plugin.unwrap_or_default()
        )));
    }
    if s.wal_status.as_deref() == Some("lost") {
        return Err(SourceError::SlotInvalidated {
            slot: cfg.slot.clone(),
            reason: "wal_status = lost".into(),
        });
    }
    Ok(Some(s))
}

/// The errors for a slot that cannot resume from `position`: gone, or
/// confirmed beyond it (recreated or consumed by someone else).
pub fn check_resumable(
    slot_name: &str,
    slot: Option<&catalog::SlotInfo>,
    position: Lsn,
) -> Result<(), SourceError> {
    match slot {
        None => Err(SourceError::Mismatch(format!(
            "replication slot \"{slot_name}\" no longer exists, but the checkpoint is at {position}: it was dropped behind sluice's back and changes after {position} may be lost. Resync: `sluice drop -c FILE` then `sluice run -c FILE` (with fresh target tables)"
        ))),
        Some(s) => match s.confirmed_flush_lsn {
            Some(f) if f > position => Err(SourceError::Mismatch(format!(
                "replication slot \"{slot_name}\" is confirmed up to {f}, beyond the checkpoint at {position}: the slot was recreated or consumed by someone else, so changes in between were never written. Resync: `sluice drop -c FILE` then `sluice run -c FILE` (with fresh target tables)"
            ))),
            _ => Ok(()),
        },
    }
}
