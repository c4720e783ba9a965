//! The publication: what it publishes (members, partition root, column
//! lists and row filters), creating it or bringing it in line with the
//! config, dropping it.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::catalog::{generated_columns, key_columns, server_settings, table_columns, table_info};
use crate::config::{quote_ident, TableName, TablePublish};
use crate::source::error::SourceError;

#[derive(Debug, Clone)]
pub struct PublicationInfo {
    pub all_tables: bool,
    /// `publish_via_partition_root`: a partitioned table's changes arrive
    /// under its own name, not its partitions'.
    pub via_root: bool,
    /// The tables it publishes: its members (a partitioned table itself,
    /// whatever `via_root`), and those of its schemas.
    pub tables: Vec<TableName>,
}

pub async fn publication(c: &Client, name: &str) -> Result<Option<PublicationInfo>, SourceError> {
    let doing = || format!("reading publication \"{name}\"");
    let Some(row) = c
        .query_opt(
            "SELECT puballtables, pubviaroot FROM pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(|e| SourceError::catalog(doing(), e))?
    else {
        return Ok(None);
    };
    // pg_publication_tables lists a member partitioned table's partitions
    // instead of itself unless via_root: the members come from
    // pg_publication_rel.
    let tables = c
        .query(
            "SELECT n.nspname::text, c.relname::text
             FROM pg_publication_rel r
             JOIN pg_publication p ON p.oid = r.prpubid
             JOIN pg_class c ON c.oid = r.prrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE p.pubname = $1
             UNION
             SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(|e| SourceError::catalog(doing(), e))?
        .into_iter()
        .map(|r| TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    Ok(Some(PublicationInfo {
        all_tables: row.get(0),
        via_root: row.get(1),
        tables,
    }))
}

/// One table as a publication lists it: its column list and row filter
/// when configured.
pub fn publication_table_sql(t: &TableName, publish: &BTreeMap<TableName, TablePublish>) -> String {
    let mut sql = t.quoted();
    if let Some(p) = publish.get(t) {
        if let Some(cols) = &p.columns {
            let cols: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
            sql.push_str(&format!(" ({})", cols.join(", ")));
        }
        if let Some(w) = &p.row_filter {
            sql.push_str(&format!(" WHERE ({w})"));
        }
    }
    sql
}

/// The SQL that creates a publication for exactly these tables. Changes of
/// a partitioned table are published under its own name (the configured
/// one), not its partitions'.
pub fn create_publication_sql(
    name: &str,
    tables: &[TableName],
    publish: &BTreeMap<TableName, TablePublish>,
) -> String {
    let list: Vec<String> = tables
        .iter()
        .map(|t| publication_table_sql(t, publish))
        .collect();
    format!(
        "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
        quote_ident(name),
        list.join(", ")
    )
}

/// Checks the configured column lists and row filters against the server
/// (PostgreSQL 15+; the key must be published) and against the tables the
/// publication already has (a different list or filter would silently
/// publish other rows: changing it is left to the user, with a resync).
async fn check_publish_specs(
    c: &Client,
    name: &str,
    tables: &[TableName],
    publish: &BTreeMap<TableName, TablePublish>,
    existing: &[TableName],
) -> Result<(), SourceError> {
    let settings = server_settings(c).await?;
    if settings.version_num < 150000 {
        if !publish.is_empty() {
            return Err(SourceError::NotReady(format!(
                "source.postgres.publish needs PostgreSQL 15 or later (column lists and row filters of publications); the server is {}",
                settings.version
            )));
        }
        // Before 15 a publication has neither.
        return Ok(());
    }
    let no_spec = TablePublish::default();
    for t in tables {
        let spec = publish.get(t).unwrap_or(&no_spec);
        let Some(info) = table_info(c, t).await? else {
            continue;
        };
        if let Some(cols) = &spec.columns {
            let keys = key_columns(c, info.oid).await?;
            let mut missing: Vec<&String> = keys.iter().filter(|k| !cols.contains(k)).collect();
            missing.sort();
            if !missing.is_empty() {
                return Err(SourceError::NotReady(format!(
                    "source.postgres.publish.\"{t}\".columns must include the key columns ({}): rows are identified by them",
                    missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        if !existing.contains(t) {
            continue;
        }
        let row = c
            .query_opt(
                "SELECT attnames::text[], rowfilter IS NOT NULL FROM pg_publication_tables
                 WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                &[&name, &t.schema, &t.name],
            )
            .await
            .map_err(|e| {
                SourceError::catalog(
                    format!("reading how publication \"{name}\" publishes {t}"),
                    e,
                )
            })?;
        let Some(row) = row else { continue };
        let published: Vec<String> = row.get(0);
        let has_filter: bool = row.get(1);
        // Without a configured list, every (non-generated) column.
        let mut want = match &spec.columns {
            Some(cols) => cols.clone(),
            None => table_columns(c, t)
                .await?
                .into_iter()
                .map(|col| col.name)
                .collect(),
        };
        // (PostgreSQL lists generated columns too, which it never sends.)
        let generated = generated_columns(c, info.oid).await?;
        let mut have: Vec<String> = published
            .into_iter()
            .filter(|col| !generated.contains(col))
            .collect();
        want.sort();
        have.sort();
        let columns_differ = want != have;
        if columns_differ || has_filter != spec.row_filter.is_some() {
            return Err(SourceError::Publication {
                publication: name.to_owned(),
                problem: format!(
                    "publishes {t} with other columns or another row filter than the config says (source.postgres.publish; none there: all columns, every row); change it (ALTER PUBLICATION {} SET TABLE ...), then `sluice resync` the table",
                    quote_ident(name)
                ),
            });
        }
    }
    Ok(())
}

/// The configured tables that are partitioned.
pub async fn partitioned_tables(
    c: &Client,
    tables: &[TableName],
) -> Result<Vec<TableName>, SourceError> {
    let mut out = Vec::new();
    for t in tables {
        if table_info(c, t).await?.is_some_and(|i| i.partitioned) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// Creates the publication, or adds the configured tables it lacks (and
/// makes it publish partitioned tables under their own names).
pub async fn ensure_publication(
    c: &Client,
    name: &str,
    tables: &[TableName],
    publish: &BTreeMap<TableName, TablePublish>,
    may_create: bool,
) -> Result<(), SourceError> {
    let current = publication(c, name).await?;
    let existing = current
        .as_ref()
        .map(|p| p.tables.clone())
        .unwrap_or_default();
    check_publish_specs(c, name, tables, publish, &existing).await?;
    match current {
        None if !may_create => Err(SourceError::Publication {
            publication: name.to_owned(),
            problem: "does not exist and source.postgres.create_publication = false; create it with CREATE PUBLICATION ... FOR TABLE ... WITH (publish_via_partition_root = true)".into(),
        }),
        None => {
            let sql = create_publication_sql(name, tables, publish);
            tracing::info!(publication = name, "creating publication");
            c.batch_execute(&sql)
                .await
                .map_err(|e| SourceError::catalog(format!("creating publication \"{name}\""), e))?;
            Ok(())
        }
        Some(p) => {
            if !p.via_root {
                let partitioned = partitioned_tables(c, tables).await?;
                if !partitioned.is_empty() {
                    let names: Vec<String> = partitioned.iter().map(|t| t.to_string()).collect();
                    if !may_create {
                        return Err(SourceError::Publication {
                            publication: name.to_owned(),
                            problem: format!(
                                "does not set publish_via_partition_root, so the changes of the partitioned {} would arrive under their partitions' names: ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
                                names.join(", "),
                                quote_ident(name)
                            ),
                        });
                    }
                    tracing::info!(publication = name, tables = %names.join(", "), "setting publish_via_partition_root: partitioned tables are configured");
                    c.batch_execute(&format!(
                        "ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
                        quote_ident(name)
                    ))
                    .await
                    .map_err(|e| {
                        SourceError::catalog(
                            format!("setting publish_via_partition_root on publication \"{name}\""),
                            e,
                        )
                    })?;
                }
            }
            if p.all_tables {
                return Ok(());
            }
            let missing: Vec<&TableName> = tables.iter().filter(|t| !p.tables.contains(t)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            let names: Vec<String> = missing.iter().map(|t| t.to_string()).collect();
            if !may_create {
                return Err(SourceError::Publication {
                    publication: name.to_owned(),
                    problem: format!(
                        "does not include {}; add them with ALTER PUBLICATION ... ADD TABLE",
                        names.join(", ")
                    ),
                });
            }
            let list: Vec<String> = missing
                .iter()
                .map(|t| publication_table_sql(t, publish))
                .collect();
            tracing::info!(publication = name, tables = %names.join(", "), "adding tables to publication");
            c.batch_execute(&format!(
                "ALTER PUBLICATION {} ADD TABLE {}",
                quote_ident(name),
                list.join(", ")
            ))
            .await
            .map_err(|e| {
                SourceError::catalog(
                    format!("adding {} to publication \"{name}\"", names.join(", ")),
                    e,
                )
            })?;
            Ok(())
        }
    }
}

/// Drops the publication if it exists; true when something was dropped.
pub async fn drop_publication(c: &Client, name: &str) -> Result<bool, SourceError> {
    if publication(c, name).await?.is_none() {
        return Ok(false);
    }
    c.batch_execute(&format!("DROP PUBLICATION {}", quote_ident(name)))
        .await
        .map_err(|e| SourceError::catalog(format!("dropping publication \"{name}\""), e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_sql_quotes_names() {
        let publish = [(
            TableName::new("My S", "a.b"),
            TablePublish {
                columns: Some(vec!["id".into(), "Note".into()]),
                row_filter: Some("id > 5".into()),
            },
        )]
        .into_iter()
        .collect();
        let sql = create_publication_sql(
            "p\"x",
            &[
                TableName::new("public", "orders"),
                TableName::new("My S", "a.b"),
            ],
            &publish,
        );
        assert_eq!(
            sql,
            "CREATE PUBLICATION \"p\"\"x\" FOR TABLE \"public\".\"orders\", \"My S\".\"a.b\" (\"id\", \"Note\") WHERE (id > 5) WITH (publish_via_partition_root = true)"
        );
    }
}
