//! ATTACH and DETACH PARTITION change which rows a partitioned table holds
//! without sending any row change. sluice records the partitions each
//! configured partitioned table had when it was copied (in a file beside
//! the checkpoint, so a change while sluice was stopped is seen too) and
//! compares the catalog with it when a session starts and on every status
//! interval; a difference stops the table with a reason that says to resync
//! it (the copy then reads the table as it is, and records it anew).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio_postgres::Client;

use crate::config::TableName;
use crate::source::SourceError;

/// The file beside the spill directory (which is emptied at start).
pub fn file_for(spill_dir: &Path) -> PathBuf {
    spill_dir.with_extension("partitions.json")
}

/// Serialises writers of the file within the process (parallel copies and
/// the session).
static WRITE: Mutex<()> = Mutex::new(());

/// The leaf and intermediate partitions of `table`, sorted; `None` when it
/// is not a partitioned table.
pub async fn partitions(c: &Client, table: &TableName) -> Result<Option<Vec<String>>, SourceError> {
    let rows = c
        .query(
            "SELECT t.relid::regclass::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             CROSS JOIN LATERAL pg_partition_tree(c.oid) t
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'p' AND t.relid <> c.oid
             UNION ALL
             SELECT '' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'p'",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| SourceError::catalog("listing the partitions of a partitioned table", e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut parts: Vec<String> = rows
        .into_iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|p| !p.is_empty())
        .collect();
    parts.sort();
    Ok(Some(parts))
}

fn load(file: &Path) -> BTreeMap<String, Vec<String>> {
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records `parts` as what `table` holds now (a copy of it starts).
pub fn record(file: &Path, table: &TableName, parts: &[String]) -> Result<(), SourceError> {
    let _guard = WRITE.lock().unwrap_or_else(|p| p.into_inner());
    let mut all = load(file);
    all.insert(table.to_string(), parts.to_vec());
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&all).unwrap_or_default())?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// Compares the partitions of the partitioned ones among `tables` with
/// those recorded (recording them where nothing is yet); the first table
/// whose partitions changed is an error that stops it.
pub async fn check(c: &Client, file: &Path, tables: &[TableName]) -> Result<(), SourceError> {
    let known = load(file);
    for t in tables {
        let Some(now) = partitions(c, t).await? else {
            continue;
        };
        match known.get(&t.to_string()) {
            None => record(file, t, &now)?,
            Some(was) if *was == now => {}
            Some(was) => {
                let attached: Vec<&str> = now
                    .iter()
                    .filter(|p| !was.contains(p))
                    .map(String::as_str)
                    .collect();
                let detached: Vec<&str> = was
                    .iter()
                    .filter(|p| !now.contains(p))
                    .map(String::as_str)
                    .collect();
                return Err(SourceError::TableData {
                    table: t.clone(),
                    message: format!(
                        "its partitions changed (attached: [{}], detached: [{}]); ATTACH and DETACH PARTITION send no row changes, so the replica no longer matches: run `sluice resync -c FILE {t}`",
                        attached.join(", "),
                        detached.join(", ")
                    ),
                });
            }
        }
    }
    Ok(())
}
