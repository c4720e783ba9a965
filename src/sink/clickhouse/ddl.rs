//! Table DDL: the CREATE for a table seen for the first time, and the ALTERs
//! that bring an existing table in line with a (changed) source shape.

use std::collections::{BTreeMap, BTreeSet};

use super::quote_ch_ident as q;
use super::types::{reconcile, ColumnPlan, Reconcile};
use crate::config::DropColumnMode;
use crate::core::meta;

/// Filled by ClickHouse when the row is written.
pub const SYNCED_AT: &str = "_synced_at";

/// How a table is laid out in ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// ReplacingMergeTree ordered by the source key.
    Keyed,
    /// No key: an exact multiset. Every change is a row keyed by its
    /// position (`_lsn`, `_seq`), so a replay replaces it; a delete carries
    /// the old values with `_is_deleted = 1` (sign -1). The view
    /// `<table>_live` shows the live rows.
    Multiset,
    /// No key: MergeTree, every change appended with its `_op`.
    AppendOnly,
}

/// A column as ClickHouse reports it in `system.columns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingColumn {
    pub name: String,
    pub ty: String,
    pub in_sorting_key: bool,
}

/// Every column the ClickHouse table must have: (name, type, default).
pub fn wanted_columns(plans: &[ColumnPlan], kind: TableKind) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in plans {
        out.push((p.name.clone(), p.ch_type.clone()));
        if let Some(f) = &p.null_flag {
            out.push((f.clone(), "UInt8".to_string()));
        }
    }
    out.push((meta::VERSION.into(), "UInt64".into()));
    out.push((meta::IS_DELETED.into(), "UInt8".into()));
    out.push((meta::LSN.into(), "UInt64".into()));
    if kind != TableKind::Keyed {
        out.push((meta::OP.into(), "LowCardinality(String)".into()));
    }
    if kind == TableKind::Multiset {
        out.push((meta::SEQ.into(), "UInt64".into()));
    }
    out
}

/// Columns the sink owns besides the source's; never dropped.
pub fn is_meta(name: &str) -> bool {
    matches!(name, SYNCED_AT) || meta::is_reserved_column(name)
}

/// A name used twice (a source column named like a NULL flag or `_synced_at`).
pub fn name_clash(plans: &[ColumnPlan], kind: TableKind) -> Option<String> {
    let mut seen = BTreeSet::new();
    wanted_columns(plans, kind)
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| n == SYNCED_AT || !seen.insert(n.clone()))
}

fn sorting_columns(plans: &[ColumnPlan], kind: TableKind) -> Vec<(String, String)> {
    match kind {
        TableKind::Keyed => plans
            .iter()
            .filter(|p| p.is_key)
            .map(|p| (p.name.clone(), p.ch_type.clone()))
            .collect(),
        TableKind::Multiset => vec![
            (meta::LSN.into(), "UInt64".into()),
            (meta::SEQ.into(), "UInt64".into()),
        ],
        TableKind::AppendOnly => Vec::new(),
    }
}

pub fn create_table_sql(target: &str, plans: &[ColumnPlan], kind: TableKind) -> String {
    let mut cols: Vec<String> = wanted_columns(plans, kind)
        .iter()
        .map(|(n, t)| format!("{} {t}", q(n)))
        .collect();
    cols.push(format!(
        "{} DateTime64(6, 'UTC') DEFAULT now64(6)",
        q(SYNCED_AT)
    ));
    let order = sorting_columns(plans, kind);
    let order_by = if order.is_empty() {
        "tuple()".to_string()
    } else {
        format!(
            "({})",
            order
                .iter()
                .map(|(n, _)| q(n))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let engine = match kind {
        TableKind::AppendOnly => "MergeTree".to_string(),
        // Rows of one key are one change written again: any copy will do.
        TableKind::Multiset => "ReplacingMergeTree".to_string(),
        TableKind::Keyed => format!(
            "ReplacingMergeTree({}, {})",
            q(meta::VERSION),
            q(meta::IS_DELETED)
        ),
    };
    let nullable_key = order.iter().any(|(_, t)| t.contains("Nullable"));
    let settings = if nullable_key {
        " SETTINGS allow_nullable_key = 1"
    } else {
        ""
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {target} (\n  {}\n) ENGINE = {engine} ORDER BY {order_by}{settings}",
        cols.join(",\n  ")
    )
}

/// The name of a multiset table's view of its live rows.
pub fn live_view_name(target_table: &str) -> String {
    format!("{target_table}_live")
}

/// The view presenting a multiset table's live rows: each distinct row as
/// many times as it was inserted minus deleted. `columns` are the source's
/// columns (with NULL flags) as the ClickHouse table has them now.
pub fn live_view_sql(view: &str, target: &str, plans: &[ColumnPlan]) -> String {
    let mut cols = Vec::new();
    for p in plans {
        cols.push(q(&p.name));
        if let Some(f) = &p.null_flag {
            cols.push(q(f));
        }
    }
    let list = cols.join(", ");
    format!(
        "CREATE OR REPLACE VIEW {view} AS SELECT {list} FROM (\
         SELECT {list}, sum(if({d} = 1, -1, 1)) AS {n} FROM {target} FINAL GROUP BY {list}) \
         ARRAY JOIN range(toUInt64(greatest({n}, 0))) AS {copy}",
        d = q(meta::IS_DELETED),
        n = q("_live_count"),
        copy = q("_live_copy"),
    )
}

/// The ALTERs that make `existing` fit `plans`, or why the table cannot follow.
pub fn reconcile_sql(
    target: &str,
    existing: &[ExistingColumn],
    plans: &[ColumnPlan],
    kind: TableKind,
    on_drop: DropColumnMode,
) -> Result<Vec<String>, String> {
    let have: BTreeMap<&str, &ExistingColumn> =
        existing.iter().map(|c| (c.name.as_str(), c)).collect();
    if kind == TableKind::Keyed {
        let now: BTreeSet<&str> = plans
            .iter()
            .filter(|p| p.is_key)
            .map(|p| p.name.as_str())
            .collect();
        let was: BTreeSet<&str> = existing
            .iter()
            .filter(|c| c.in_sorting_key)
            .map(|c| c.name.as_str())
            .collect();
        if now != was {
            return Err(format!(
                "the key changed: the ClickHouse table is ordered by ({}), the source key is ({}); \
                 a sorting key cannot be altered: recreate the ClickHouse table and resync",
                was.into_iter().collect::<Vec<_>>().join(", "),
                now.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let wanted = wanted_columns(plans, kind);
    let mut alters = Vec::new();
    for (name, ty) in &wanted {
        match have.get(name.as_str()) {
            None => {
                // Rows written before the column existed: the source's value
                // for them, when it has one.
                let default = match plans.iter().find(|p| p.name == *name).map(|p| &p.on_add) {
                    Some(Err(why)) => return Err(why.clone()),
                    Some(Ok(Some(d))) => format!(" DEFAULT {d}"),
                    _ => String::new(),
                };
                alters.push(format!(
                    "ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {} {ty}{default}",
                    q(name)
                ))
            }
            Some(c) => match reconcile(&c.ty, ty) {
                Reconcile::Keep => {}
                Reconcile::Modify(t) if !c.in_sorting_key => alters.push(format!(
                    "ALTER TABLE {target} MODIFY COLUMN {} {t}",
                    q(name)
                )),
                Reconcile::Modify(t) => {
                    return Err(format!(
                    "column \"{name}\" changed from {} to {t}, and it is part of the sorting key, \
                         which ClickHouse cannot alter: recreate the table and resync",
                    c.ty
                ))
                }
                Reconcile::Incompatible(why) => {
                    return Err(format!("column \"{name}\" changed type: {why}"))
                }
            },
        }
    }
    if on_drop == DropColumnMode::Drop {
        let keep: BTreeSet<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
        for c in existing {
            if !keep.contains(c.name.as_str()) && !is_meta(&c.name) && !c.in_sorting_key {
                alters.push(format!(
                    "ALTER TABLE {target} DROP COLUMN IF EXISTS {}",
                    q(&c.name)
                ));
            }
        }
    }
    Ok(alters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::clickhouse::types::Enc;

    fn plan(name: &str, ty: &str, key: bool, flag: bool) -> ColumnPlan {
        ColumnPlan {
            source_index: 0,
            name: name.into(),
            ch_type: ty.into(),
            enc: Enc::Pass,
            null_flag: flag.then(|| format!("{name}_is_null")),
            is_key: key,
            on_add: Ok(None),
        }
    }

    #[test]
    fn create_keyed_multiset_and_append_only() {
        let p = vec![
            plan("id", "Int64", true, false),
            plan("a b", "Array(Nullable(Int32))", false, true),
        ];
        let s = create_table_sql("`db`.`t`", &p, TableKind::Keyed);
        assert!(s.contains("`a b_is_null` UInt8"), "{s}");
        assert!(s.contains("ReplacingMergeTree(`_version`, `_is_deleted`) ORDER BY (`id`)"));
        let p = vec![plan("x", "Nullable(String)", false, false)];
        let s = create_table_sql("`db`.`t`", &p, TableKind::Multiset);
        assert!(
            s.contains("`x` Nullable(String)")
                && s.contains("`_op` LowCardinality(String)")
                && s.ends_with("ENGINE = ReplacingMergeTree ORDER BY (`_lsn`, `_seq`)"),
            "{s}"
        );
        let v = live_view_sql("`db`.`t_live`", "`db`.`t`", &p);
        assert!(
            v.contains("SELECT `x` FROM (SELECT `x`, sum(if(`_is_deleted` = 1, -1, 1))")
                && v.contains("FROM `db`.`t` FINAL GROUP BY `x`"),
            "{v}"
        );
        let s = create_table_sql("`db`.`t`", &p, TableKind::AppendOnly);
        assert!(s.contains("ENGINE = MergeTree ORDER BY tuple()") && s.contains("`_op`"));
    }

    #[test]
    fn reconcile_adds_drops_and_fails() {
        let ex = |n: &str, t: &str, k: bool| ExistingColumn {
            name: n.into(),
            ty: t.into(),
            in_sorting_key: k,
        };
        let existing = vec![
            ex("id", "Int64", true),
            ex("old", "String", false),
            ex("v", "Int32", false),
            ex("_version", "UInt64", false),
            ex("_is_deleted", "UInt8", false),
            ex("_lsn", "UInt64", false),
            ex("_synced_at", "DateTime64(6, 'UTC')", false),
        ];
        let p = vec![
            plan("id", "Int64", true, false),
            plan("v", "Int64", false, false),
            plan("new", "Nullable(String)", false, false),
        ];
        let a = reconcile_sql("T", &existing, &p, TableKind::Keyed, DropColumnMode::Drop).unwrap();
        assert_eq!(
            a,
            vec![
                "ALTER TABLE T MODIFY COLUMN `v` Int64",
                "ALTER TABLE T ADD COLUMN IF NOT EXISTS `new` Nullable(String)",
                "ALTER TABLE T DROP COLUMN IF EXISTS `old`",
            ]
        );
        let a = reconcile_sql("T", &existing, &p, TableKind::Keyed, DropColumnMode::Keep).unwrap();
        assert_eq!(a.len(), 2);
        let p = vec![
            plan("id", "Int64", true, false),
            plan("v", "Bool", false, false),
        ];
        let e = reconcile_sql("T", &existing, &p, TableKind::Keyed, DropColumnMode::Keep);
        assert!(e.unwrap_err().contains("column \"v\" changed type"));
        let p = vec![plan("v", "Int32", true, false)];
        let e = reconcile_sql("T", &existing, &p, TableKind::Keyed, DropColumnMode::Keep);
        assert!(e.unwrap_err().contains("the key changed"));
    }
}
