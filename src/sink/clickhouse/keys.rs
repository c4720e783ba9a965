//! A table's live keys, a chunk at a time, for the reconcile of polled
//! tables (docs/polling.md). Two queries per chunk, both bounded by the
//! sorting key (the table's key), so each reads only the chunk's range:
//!
//! 1. the chunk's upper key: the `limit`-th row after the previous chunk,
//!    in key order (`LIMIT 1 OFFSET limit - 1`; rows, not keys, so a chunk
//!    holds at most `limit` keys);
//! 2. the keys in `(after, upper]` whose latest version is not a delete,
//!    with that version (`GROUP BY` resolves versions without `FINAL`).
//!
//! Keys travel as text (`toString`) and come back into SQL as
//! `CAST('text', '<column type>')`, so any key type round-trips.

use clickhouse::Client;
use futures_util::future::BoxFuture;

use super::toast::quote_ch_string;
use super::{client, map_error, quote_ch_ident};
use crate::config::{ClickHouseSinkConfig, TableName};
use crate::core::meta;
use crate::sink::{KeyChunk, KeyReader, SinkError};

/// ClickHouse's code for a table that does not exist (nothing written yet).
const UNKNOWN_TABLE: u32 = 60;

/// Lists live keys of the sink's tables.
pub struct ClickHouseKeys {
    cfg: ClickHouseSinkConfig,
    client: Client,
}

impl ClickHouseKeys {
    pub fn new(cfg: &ClickHouseSinkConfig) -> Result<Self, SinkError> {
        Ok(ClickHouseKeys {
            cfg: cfg.clone(),
            client: client(cfg)?,
        })
    }

    async fn rows(&self, sql: &str) -> Result<Option<Vec<Vec<String>>>, SinkError> {
        let bytes = self
            .client
            .query_raw(sql)
            .fetch_bytes("JSONCompactEachRow")
            .map_err(|e| map_error(&self.cfg, e))?
            .collect()
            .await;
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                let e = map_error(&self.cfg, e);
                if let SinkError::ClickHouse {
                    code: Some(UNKNOWN_TABLE),
                    ..
                } = e
                {
                    return Ok(None);
                }
                return Err(e);
            }
        };
        let mut out = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let row: Vec<String> =
                serde_json::from_slice(line).map_err(|e| SinkError::ClickHouse {
                    code: None,
                    message: format!("reading live keys: {e}"),
                })?;
            out.push(row);
        }
        Ok(Some(out))
    }

    /// Each key column's ClickHouse type, in key order.
    async fn key_types(
        &self,
        db: &str,
        table: &str,
        key: &[String],
    ) -> Result<Option<Vec<String>>, SinkError> {
        let sql = format!(
            "SELECT name, type FROM system.columns WHERE database = {} AND table = {}",
            quote_ch_string(db),
            quote_ch_string(table)
        );
        let Some(rows) = self.rows(&sql).await? else {
            return Ok(None);
        };
        if rows.is_empty() {
            return Ok(None);
        }
        key.iter()
            .map(|k| {
                rows.iter()
                    .find(|r| r.first() == Some(k))
                    .and_then(|r| r.get(1).cloned())
                    .ok_or_else(|| SinkError::Table {
                        table: TableName::new(db, table),
                        message: format!("key column `{k}` is missing in ClickHouse"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

impl KeyReader for ClickHouseKeys {
    fn live_keys<'a>(
        &'a self,
        table: &'a TableName,
        key: &'a [String],
        after: Option<&'a [String]>,
        limit: usize,
    ) -> BoxFuture<'a, Result<KeyChunk, SinkError>> {
        Box::pin(async move {
            let name = self.cfg.target_table(table);
            let Some(types) = self.key_types(&self.cfg.database, &name, key).await? else {
                // Nothing written yet: no live keys.
                return Ok(KeyChunk::default());
            };
            let target = format!(
                "{}.{}",
                quote_ch_ident(&self.cfg.database),
                quote_ch_ident(&name)
            );
            let q = ChunkSql {
                target: &target,
                key,
                types: &types,
            };
            let upper = match self.rows(&q.upper(after, limit)).await? {
                Some(rows) => rows.into_iter().next(),
                None => return Ok(KeyChunk::default()),
            };
            let rows = self
                .rows(&q.live(after, upper.as_deref()))
                .await?
                .unwrap_or_default();
            let mut live = Vec::with_capacity(rows.len());
            for mut r in rows {
                let version = r.pop().and_then(|v| v.parse::<u64>().ok());
                match version {
                    Some(v) if r.len() == key.len() => live.push((r, v)),
                    _ => {
                        return Err(SinkError::ClickHouse {
                            code: None,
                            message: format!("reading live keys of {target}: unexpected row"),
                        })
                    }
                }
            }
            Ok(KeyChunk { live, upper })
        })
    }
}

/// The SQL of one chunk (pure).
struct ChunkSql<'a> {
    /// `` `db`.`table` ``.
    target: &'a str,
    key: &'a [String],
    /// ClickHouse type of each key column.
    types: &'a [String],
}

impl ChunkSql<'_> {
    fn columns(&self) -> Vec<String> {
        self.key.iter().map(|k| quote_ch_ident(k)).collect()
    }

    fn as_text(&self) -> String {
        self.columns()
            .iter()
            .map(|c| format!("toString({c})"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn literals(&self, values: &[String]) -> Vec<String> {
        values
            .iter()
            .zip(self.types)
            .map(|(v, t)| format!("CAST({}, {})", quote_ch_string(v), quote_ch_string(t)))
            .collect()
    }

    fn after(&self, after: Option<&[String]>) -> String {
        match after {
            Some(a) => compare(&self.columns(), &self.literals(a), Bound::After),
            None => "1".into(),
        }
    }

    /// The chunk's last key: the `limit`-th row after `after`.
    fn upper(&self, after: Option<&[String]>, limit: usize) -> String {
        format!(
            "SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT 1 OFFSET {}",
            self.as_text(),
            self.target,
            self.after(after),
            self.columns().join(", "),
            limit.saturating_sub(1)
        )
    }

    /// Live keys in `(after, upper]` with their latest version.
    fn live(&self, after: Option<&[String]>, upper: Option<&[String]>) -> String {
        let mut filter = self.after(after);
        if let Some(u) = upper {
            filter = format!(
                "({filter}) AND ({})",
                compare(&self.columns(), &self.literals(u), Bound::UpTo)
            );
        }
        let version = quote_ch_ident(meta::VERSION);
        format!(
            "SELECT {}, toString(max({version})) FROM {} WHERE {filter} GROUP BY {} \
             HAVING argMax({}, {version}) = 0 ORDER BY {}",
            self.as_text(),
            self.target,
            self.columns().join(", "),
            quote_ch_ident(meta::IS_DELETED),
            self.columns().join(", ")
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// Strictly after the values.
    After,
    /// At or before the values.
    UpTo,
}

/// Tuple comparison of `columns` with `values` in key order, spelled out
/// (`a > x OR (a = x AND b > y)`) so that the primary key index serves it.
fn compare(columns: &[String], values: &[String], bound: Bound) -> String {
    let op = match bound {
        Bound::After => ">",
        Bound::UpTo => "<",
    };
    let mut terms = Vec::new();
    for i in 0..columns.len() {
        let mut parts: Vec<String> = (0..i)
            .map(|j| format!("{} = {}", columns[j], values[j]))
            .collect();
        parts.push(format!("{} {op} {}", columns[i], values[i]));
        terms.push(parts.join(" AND "));
    }
    if bound == Bound::UpTo {
        terms.push(
            columns
                .iter()
                .zip(values)
                .map(|(c, v)| format!("{c} = {v}"))
                .collect::<Vec<_>>()
                .join(" AND "),
        );
    }
    terms
        .into_iter()
        .map(|t| format!("({t})"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_comparison_in_key_order() {
        let cols = vec!["`a`".to_string(), "`b`".to_string()];
        let vals = vec!["1".to_string(), "2".to_string()];
        assert_eq!(
            compare(&cols, &vals, Bound::After),
            "(`a` > 1) OR (`a` = 1 AND `b` > 2)"
        );
        assert_eq!(
            compare(&cols, &vals, Bound::UpTo),
            "(`a` < 1) OR (`a` = 1 AND `b` < 2) OR (`a` = 1 AND `b` = 2)"
        );
        assert_eq!(compare(&cols[..1], &vals[..1], Bound::After), "(`a` > 1)");
    }

    #[test]
    fn chunk_queries_quote_and_cast() {
        let key = vec!["re`gion".to_string(), "id".to_string()];
        let types = vec!["String".to_string(), "Int64".to_string()];
        let q = ChunkSql {
            target: "`db`.`t`",
            key: &key,
            types: &types,
        };
        let after = vec!["it's".to_string(), "5".to_string()];
        let up = q.upper(Some(&after), 100);
        assert_eq!(
            up,
            "SELECT toString(`re\\`gion`), toString(`id`) FROM `db`.`t` WHERE \
             (`re\\`gion` > CAST('it\\'s', 'String')) OR (`re\\`gion` = CAST('it\\'s', 'String') AND `id` > CAST('5', 'Int64')) \
             ORDER BY `re\\`gion`, `id` LIMIT 1 OFFSET 99"
        );
        let first = q.upper(None, 1);
        assert!(
            first.contains("WHERE 1 ORDER BY") && first.ends_with("OFFSET 0"),
            "{first}"
        );
        let live = q.live(None, Some(&after));
        assert!(live.starts_with("SELECT toString(`re\\`gion`), toString(`id`), toString(max(`_version`)) FROM `db`.`t` WHERE (1) AND ("), "{live}");
        assert!(live.contains("GROUP BY `re\\`gion`, `id` HAVING argMax(`_is_deleted`, `_version`) = 0 ORDER BY `re\\`gion`, `id`"), "{live}");
        assert!(
            live.contains("(`re\\`gion` = CAST('it\\'s', 'String') AND `id` = CAST('5', 'Int64'))"),
            "{live}"
        );
        assert!(!q.live(None, None).contains("AND ("));
    }
}
