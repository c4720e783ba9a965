//! Catalog queries over an ordinary tokio-postgres connection: server
//! settings, roles, tables, publications and slots.

use tokio_postgres::{Client, NoTls};

use super::lsn::Lsn;
use crate::config::{PgConnInfo, TableName};
use crate::secret::redact;
use crate::source::error::SourceError;

pub use super::publication::{
    create_publication_sql, drop_publication, ensure_publication, partitioned_tables, publication,
    publication_table_sql, PublicationInfo,
};

/// Opens an ordinary connection; its driver task runs until the client drops.
pub async fn connect(info: &PgConnInfo) -> Result<Client, SourceError> {
    use crate::config::SslMode;
    let config = info.tokio_config();
    let result = match info.ssl_mode {
        SslMode::Disable => spawn_driver(config.connect(NoTls).await),
        _ => {
            let tls =
                super::tls::MakeRustls(super::tls::client_config(info.ssl_root_cert.as_deref())?);
            match (config.connect(tls).await, info.ssl_mode) {
                // As libpq: prefer falls back to plain when TLS fails.
                (Err(e), SslMode::Prefer) if e.as_db_error().is_none() => {
                    tracing::warn!(error = %e, "sslmode=prefer: continuing without TLS");
                    let mut plain = info.tokio_config();
                    plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
                    spawn_driver(plain.connect(NoTls).await)
                }
                (r, _) => spawn_driver(r),
            }
        }
    };
    result.map_err(|e| classify_connect_error(info, e))
}

fn spawn_driver<S, T>(
    r: Result<(Client, tokio_postgres::Connection<S, T>), tokio_postgres::Error>,
) -> Result<Client, tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = r?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "catalog connection ended");
        }
    });
    Ok(client)
}

/// Turns tokio-postgres connect failures into the errors users act on.
fn classify_connect_error(info: &PgConnInfo, e: tokio_postgres::Error) -> SourceError {
    if let Some(db) = e.as_db_error() {
        if db.code().code().starts_with("28") {
            let mut message = db.message().to_owned();
            if let Some(pw) = &info.password {
                message = redact(&message, pw);
            }
            return SourceError::AuthFailed {
                user: info.user.clone(),
                message,
            };
        }
        return SourceError::Query(e);
    }
    let text = e.to_string();
    if text.contains("TLS") {
        let detail = std::error::Error::source(&e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        return SourceError::Tls(format!(
            "{text}{detail} (set source.postgres.ssl_root_cert to the CA that signed the server's certificate)"
        ));
    }
    let io = std::error::Error::source(&e)
        .map(|s| s.to_string())
        .unwrap_or(text);
    SourceError::Connect {
        addr: format!("{}:{}", info.host, info.port),
        source: std::io::Error::other(io),
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub version: String,
    pub version_num: u32,
    pub wal_level: String,
    pub max_replication_slots: i64,
    pub used_replication_slots: i64,
    pub max_wal_senders: i64,
    pub used_wal_senders: i64,
}

pub async fn server_settings(c: &Client) -> Result<ServerSettings, SourceError> {
    let row = c
        .query_one(
            "SELECT current_setting('server_version'),
                    current_setting('server_version_num')::int4,
                    current_setting('wal_level'),
                    current_setting('max_replication_slots')::int8,
                    (SELECT count(*) FROM pg_replication_slots),
                    current_setting('max_wal_senders')::int8,
                    (SELECT count(*) FROM pg_stat_replication)",
            &[],
        )
        .await
        .map_err(|e| SourceError::catalog("reading server settings", e))?;
    Ok(ServerSettings {
        version: row.get(0),
        version_num: row.get::<_, i32>(1) as u32,
        wal_level: row.get(2),
        max_replication_slots: row.get(3),
        used_replication_slots: row.get(4),
        max_wal_senders: row.get(5),
        used_wal_senders: row.get(6),
    })
}

#[derive(Debug, Clone, Copy)]
pub struct RoleInfo {
    pub superuser: bool,
    pub replication: bool,
    pub can_create_in_db: bool,
}

pub async fn current_role(c: &Client) -> Result<RoleInfo, SourceError> {
    let row = c
        .query_one(
            "SELECT rolsuper, rolreplication,
                    has_database_privilege(current_database(), 'CREATE')
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| SourceError::catalog("reading the current role", e))?;
    Ok(RoleInfo {
        superuser: row.get(0),
        replication: row.get(1),
        can_create_in_db: row.get(2),
    })
}

/// How a table identifies rows in its WAL records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    Default,
    Nothing,
    Full,
    Index,
}

#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: TableName,
    pub oid: u32,
    pub replica_identity: ReplicaIdentity,
    pub primary_key: Vec<String>,
    pub owned_by_current_user: bool,
    /// A partitioned table (its rows live in its partitions).
    pub partitioned: bool,
}

impl TableInfo {
    /// Whether updates and deletes of this table can be replicated.
    pub fn identifies_rows(&self) -> bool {
        match self.replica_identity {
            ReplicaIdentity::Full | ReplicaIdentity::Index => true,
            ReplicaIdentity::Default => !self.primary_key.is_empty(),
            ReplicaIdentity::Nothing => false,
        }
    }
}

/// Looks up one table; `None` when it does not exist (or is not a table).
pub async fn table_info(c: &Client, t: &TableName) -> Result<Option<TableInfo>, SourceError> {
    let row = c
        .query_opt(
            "SELECT c.oid, c.relreplident::text,
                    pg_has_role(c.relowner, 'USAGE'),
                    coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                              FROM pg_index i
                              CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                              WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
                    c.relkind = 'p'
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&t.schema, &t.name],
        )
        .await
        .map_err(|e| SourceError::catalog(format!("looking up table {t}"), e))?;
    Ok(row.map(|row| TableInfo {
        name: t.clone(),
        oid: row.get(0),
        replica_identity: match row.get::<_, String>(1).as_str() {
            "n" => ReplicaIdentity::Nothing,
            "f" => ReplicaIdentity::Full,
            "i" => ReplicaIdentity::Index,
            _ => ReplicaIdentity::Default,
        },
        owned_by_current_user: row.get(2),
        primary_key: row.get(3),
        partitioned: row.get(4),
    }))
}

/// How big a table is, from `pg_class` (estimates, for planning).
#[derive(Debug, Clone, Copy)]
pub struct TableSize {
    /// A plain table with storage of its own (not a partitioned parent).
    pub plain: bool,
    /// Pages on disk now.
    pub blocks: u64,
    /// `reltuples`: negative when never analyzed.
    pub rows: f64,
}

pub async fn table_size(c: &Client, t: &TableName) -> Result<Option<TableSize>, SourceError> {
    let row = c
        .query_opt(
            "SELECT c.relkind = 'r',
                    (pg_relation_size(c.oid) / current_setting('block_size')::int8),
                    c.reltuples::float8
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&t.schema, &t.name],
        )
        .await
        .map_err(|e| SourceError::catalog(format!("measuring table {t}"), e))?;
    Ok(row.map(|r| TableSize {
        plain: r.get(0),
        blocks: r.get::<_, i64>(1).max(0) as u64,
        rows: r.get(2),
    }))
}

/// Whether the connected user may read a table: (USAGE on its schema,
/// SELECT on the table). The snapshot and `sluice check` need both.
pub async fn read_privileges(c: &Client, t: &TableName) -> Result<(bool, bool), SourceError> {
    let row = c
        .query_one(
            "SELECT has_schema_privilege(n.oid, 'USAGE'), has_table_privilege(c.oid, 'SELECT')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&t.schema, &t.name],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The leaf partitions of a partitioned table (as `regclass` text) with
/// their row estimates (`reltuples`, negative when never analyzed); `None`
/// when one of them is not a plain table (a foreign table).
pub async fn leaf_partitions(
    c: &Client,
    t: &TableName,
) -> Result<Option<Vec<(String, f64)>>, SourceError> {
    let rows = c
        .query(
            "SELECT p.relid::regclass::text, pc.reltuples::float8, pc.relkind = 'r'
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             CROSS JOIN LATERAL pg_partition_tree(c.oid) p
             JOIN pg_class pc ON pc.oid = p.relid
             WHERE n.nspname = $1 AND c.relname = $2 AND p.isleaf
             ORDER BY 1",
            &[&t.schema, &t.name],
        )
        .await
        .map_err(|e| SourceError::catalog(format!("listing the partitions of {t}"), e))?;
    if rows.iter().any(|r| !r.get::<_, bool>(2)) {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter().map(|r| (r.get(0), r.get(1))).collect(),
    ))
}

/// The primary key's column and SQL type when it has exactly one column.
pub async fn single_column_key(
    c: &Client,
    t: &TableName,
) -> Result<Option<(String, String)>, SourceError> {
    let row = c
        .query_opt(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary AND i.indnatts = 1",
            &[&t.schema, &t.name],
        )
        .await
        .map_err(|e| SourceError::catalog(format!("looking up the primary key of {t}"), e))?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub active_pid: Option<i32>,
    pub confirmed_flush_lsn: Option<Lsn>,
    pub restart_lsn: Option<Lsn>,
    /// `lost` means the slot was invalidated (WAL removed).
    pub wal_status: Option<String>,
}

pub async fn slot(c: &Client, name: &str) -> Result<Option<SlotInfo>, SourceError> {
    let row = c
        .query_opt(
            "SELECT plugin::text, database::text, active_pid,
                    confirmed_flush_lsn::text, restart_lsn::text, wal_status
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|e| SourceError::catalog(format!("reading replication slot \"{name}\""), e))?;
    let lsn = |v: Option<String>| v.and_then(|s| s.parse().ok());
    Ok(row.map(|r| SlotInfo {
        plugin: r.get(0),
        database: r.get(1),
        active_pid: r.get(2),
        confirmed_flush_lsn: lsn(r.get(3)),
        restart_lsn: lsn(r.get(4)),
        wal_status: r.get(5),
    }))
}

/// Waits until every transaction running now has ended (committed or rolled
/// back), saying so while one holds it up. A copy at a held position P reads
/// after this: a transaction with changes before P that commits later would
/// be streamed with versions below P and lose to the copy's rows, which did
/// not see it.
pub async fn wait_for_running_transactions(c: &Client) -> Result<(), SourceError> {
    let doing = "waiting for the transactions open at the copy's start";
    // Every transaction with an id holds the lock on it until it ends
    // (prepared ones too, with no pid); pg_locks is readable by anyone. A
    // snapshot's xmin/xmax would not do: xmax is one past the latest
    // *completed* id, so a newer transaction still open is not in it. Only
    // this database's transactions can change its tables.
    const RUNNING: &str = "SELECT l.transactionid::text FROM pg_locks l
         LEFT JOIN pg_stat_activity a ON a.pid = l.pid
         LEFT JOIN pg_prepared_xacts x ON x.transaction = l.transactionid
         WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
           AND coalesce(a.datname, x.database) = current_database()";
    let open: Vec<String> = c
        .query(RUNNING, &[])
        .await
        .map_err(|e| SourceError::catalog(doing, e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut say_at = std::time::Duration::from_secs(5);
    let still = format!(
        "{RUNNING} AND l.transactionid::text = ANY($1) ORDER BY l.transactionid::text::bigint LIMIT 1"
    );
    loop {
        let row = c
            .query_opt(&still, &[&open])
            .await
            .map_err(|e| SourceError::catalog(doing, e))?;
        let Some(row) = row else {
            return Ok(());
        };
        if started.elapsed() >= say_at {
            let oldest: String = row.get(0);
            tracing::warn!(xid = %oldest, waited_s = started.elapsed().as_secs(), "the copy waits for transactions that were open when it started to end (pg_stat_activity.backend_xid names the session; a prepared transaction in pg_prepared_xacts holds it up until it is committed or rolled back)");
            say_at *= 2;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Commits a transaction that did nothing but take an id: its commit record
/// moves the server's WAL position on. Needs no privilege.
pub async fn commit_a_mark(c: &Client) -> Result<(), SourceError> {
    c.batch_execute("SELECT pg_current_xact_id()")
        .await
        .map_err(|e| SourceError::catalog("writing a position mark (pg_current_xact_id)", e))
}

/// The server's current WAL position (on a standby: what it replayed).
pub async fn current_wal_lsn(c: &Client) -> Result<Lsn, SourceError> {
    let row = c
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                         ELSE pg_current_wal_lsn() END::text",
            &[],
        )
        .await
        .map_err(|e| SourceError::catalog("reading the current WAL position", e))?;
    row.get::<_, String>(0)
        .parse()
        .map_err(SourceError::Protocol)
}

/// A slot's WAL as monitoring sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotWal {
    /// Server WAL end minus the confirmed position.
    pub lag_bytes: Option<i64>,
    /// Server WAL end minus restart_lsn: what the slot keeps on disk.
    pub retained_bytes: Option<i64>,
    pub wal_status: Option<String>,
    /// `None` when max_slot_wal_keep_size is unlimited.
    pub safe_wal_size: Option<i64>,
}

/// The slot's lag and retained WAL; `None` when it does not exist.
pub async fn slot_wal(c: &Client, name: &str) -> Result<Option<SlotWal>, SourceError> {
    let row = c
        .query_opt(
            "WITH w AS (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                                    ELSE pg_current_wal_lsn() END AS lsn)
             SELECT (pg_wal_lsn_diff(w.lsn, confirmed_flush_lsn))::int8,
                    (pg_wal_lsn_diff(w.lsn, restart_lsn))::int8,
                    wal_status, safe_wal_size::int8
             FROM pg_replication_slots, w WHERE slot_name = $1",
            &[&name],
        )
        .await?;
    Ok(row.map(|r| SlotWal {
        lag_bytes: r.get(0),
        retained_bytes: r.get(1),
        wal_status: r.get(2),
        safe_wal_size: r.get(3),
    }))
}

/// Drops the slot if it exists; true when something was dropped.
pub async fn drop_slot(c: &Client, name: &str) -> Result<bool, SourceError> {
    if slot(c, name).await?.is_none() {
        return Ok(false);
    }
    c.execute("SELECT pg_drop_replication_slot($1)", &[&name])
        .await
        .map_err(|e| match e.code().map(|c| c.code()) {
            Some("55006") => SourceError::SlotInUse {
                slot: name.to_owned(),
                pid: "?".into(),
            },
            _ => SourceError::Query(e),
        })?;
    Ok(true)
}

/// Resolves type OIDs (with their domain bases and array elements) from
/// pg_type into `cache`.
pub async fn resolve_types(
    c: &Client,
    oids: &[u32],
    cache: &mut super::types::TypeCache,
) -> Result<(), SourceError> {
    use std::collections::HashMap;

    use super::types::{PgType, PgTypeKind};

    struct Raw {
        name: String,
        typtype: String,
        base: u32,
        typmod: i32,
        elem: u32,
        category: String,
        len: i16,
    }
    let mut raw: HashMap<u32, Raw> = HashMap::new();
    let mut todo: Vec<u32> = oids
        .iter()
        .copied()
        .filter(|o| !cache.contains_key(o))
        .collect();
    while !todo.is_empty() {
        let rows = c
            .query(
                "SELECT oid, typname::text, typtype::text, typbasetype, typtypmod, typelem,
                        typcategory::text, typlen
                 FROM pg_type WHERE oid = ANY($1)",
                &[&todo],
            )
            .await
            .map_err(|e| SourceError::catalog("resolving column types", e))?;
        todo.clear();
        for r in rows {
            let oid: u32 = r.get(0);
            let t = Raw {
                name: r.get(1),
                typtype: r.get(2),
                base: r.get(3),
                typmod: r.get(4),
                elem: r.get(5),
                category: r.get(6),
                len: r.get(7),
            };
            for dep in [t.base, t.elem] {
                if dep != 0 && !raw.contains_key(&dep) && !cache.contains_key(&dep) {
                    todo.push(dep);
                }
            }
            raw.insert(oid, t);
        }
        todo.sort_unstable();
        todo.dedup();
    }
    fn build(
        oid: u32,
        raw: &HashMap<u32, Raw>,
        cache: &super::types::TypeCache,
        depth: u32,
    ) -> PgType {
        if let Some(t) = cache.get(&oid) {
            return t.clone();
        }
        let Some(r) = raw.get(&oid).filter(|_| depth < 16) else {
            return PgType {
                oid,
                name: format!("oid {oid}"),
                typmod: -1,
                kind: PgTypeKind::Other,
            };
        };
        let kind = match r.typtype.as_str() {
            "e" => PgTypeKind::Enum,
            "d" => {
                let mut base = build(r.base, raw, cache, depth + 1);
                base.typmod = r.typmod;
                PgTypeKind::Domain {
                    base: Box::new(base),
                }
            }
            "b" if r.category == "A" && r.elem != 0 && r.len == -1 => PgTypeKind::Array {
                element: Box::new(build(r.elem, raw, cache, depth + 1)),
            },
            "b" => PgTypeKind::Base,
            _ => PgTypeKind::Other,
        };
        PgType {
            oid,
            name: r.name.clone(),
            typmod: -1,
            kind,
        }
    }
    for oid in oids {
        if !cache.contains_key(oid) {
            let t = build(*oid, &raw, cache, 0);
            cache.insert(*oid, t);
        }
    }
    Ok(())
}

/// The NOT NULL columns of a table (by OID).
/// Array columns declared with several dimensions (`int[][]`): replicated
/// as their exact text, since a list would flatten them.
pub async fn multi_dim_columns(
    c: &Client,
    rel_id: u32,
) -> Result<std::collections::HashSet<String>, SourceError> {
    let rows = c
        .query(
            "SELECT attname::text FROM pg_attribute
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attndims > 1",
            &[&rel_id],
        )
        .await
        .map_err(|e| SourceError::catalog("reading array dimensions", e))?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

pub async fn not_null_columns(
    c: &Client,
    rel_id: u32,
) -> Result<std::collections::HashSet<String>, SourceError> {
    let rows = c
        .query(
            "SELECT attname::text FROM pg_attribute
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attnotnull",
            &[&rel_id],
        )
        .await
        .map_err(|e| SourceError::catalog("reading NOT NULL columns", e))?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// The index whose columns are a table's key, as an SQL condition on
/// `pg_index i` for the table `c`: the replica identity index when the table
/// uses one (deletes then carry only its columns), else the primary key.
/// REPLICA IDENTITY FULL does not change the key: it only adds old values.
const KEY_INDEX: &str =
    "i.indrelid = c.oid AND CASE WHEN c.relreplident = 'i' THEN i.indisreplident ELSE i.indisprimary END";

/// The key columns of a table (by OID); see [`KEY_INDEX`]. Empty when the
/// table has no key (it is then replicated as a multiset).
pub async fn key_columns(
    c: &Client,
    rel_id: u32,
) -> Result<std::collections::HashSet<String>, SourceError> {
    let rows = c
        .query(
            &format!(
                "SELECT a.attname::text FROM pg_class c
                 JOIN pg_index i ON {KEY_INDEX}
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey::int2[])
                 WHERE c.oid = $1"
            ),
            &[&rel_id],
        )
        .await
        .map_err(|e| SourceError::catalog("reading key columns", e))?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Per column, what rows older than the column hold in it: the constant
/// PostgreSQL keeps for them (`attmissingval`, from `ADD COLUMN ... DEFAULT`
/// with a non-volatile default), or, for a column with a default but no
/// such constant, a value per row (a volatile default rewrote the table;
/// a default set after the column was added is taken the same way, which
/// errs on the safe side).
pub async fn added_defaults(
    c: &Client,
    rel_id: u32,
) -> Result<std::collections::HashMap<String, crate::core::AddedDefault>, SourceError> {
    use crate::core::AddedDefault;
    let rows = c
        .query(
            "SELECT attname::text, atthasmissing, atthasdef,
                    CASE WHEN atthasmissing THEN (attmissingval::text::text[])[1] END
             FROM pg_attribute
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
            &[&rel_id],
        )
        .await
        .map_err(|e| SourceError::catalog("reading column defaults", e))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let value: Option<String> = r.get(3);
            let d = match (r.get::<_, bool>(1), r.get::<_, bool>(2), value) {
                (true, _, Some(v)) => AddedDefault::Constant(v),
                (true, _, None) | (false, false, _) => AddedDefault::Null,
                (false, true, _) => AddedDefault::PerRow,
            };
            (r.get(0), d)
        })
        .collect())
}

/// The stored generated columns of a table (by OID). pgoutput does not send
/// them (before PostgreSQL 18, and not by default since), so sluice leaves
/// them out of the copy too: identical in both, never half-filled.
pub async fn generated_columns(c: &Client, rel_id: u32) -> Result<Vec<String>, SourceError> {
    let rows = c
        .query(
            "SELECT attname::text FROM pg_attribute
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated <> ''
             ORDER BY attnum",
            &[&rel_id],
        )
        .await
        .map_err(|e| SourceError::catalog("reading generated columns", e))?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Logs, once per call, that `table`'s generated columns are left out.
pub fn warn_generated(table: &TableName, columns: &[String]) {
    for col in columns {
        tracing::warn!(table = %table, column = %col,
            "generated column left out: PostgreSQL does not replicate its values (the copy leaves it out too); compute it in the sink if needed");
    }
}

/// A table column as the snapshot and the type check need it.
#[derive(Debug, Clone)]
pub struct TableColumn {
    pub name: String,
    pub type_oid: u32,
    pub typmod: i32,
    pub not_null: bool,
    /// Part of the table's key (see [`KEY_INDEX`]).
    pub is_key: bool,
    /// An array column declared with several dimensions (`int[][]`).
    pub multi_dim: bool,
}

/// The published columns of a table in attnum order (generated columns
/// are not published by pgoutput, so they are left out here too).
pub async fn table_columns(c: &Client, t: &TableName) -> Result<Vec<TableColumn>, SourceError> {
    let rows = c
        .query(
            &format!(
                "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attnotnull,
                        a.attnum = ANY(coalesce((SELECT i.indkey::int2[] FROM pg_index i
                                                 WHERE {KEY_INDEX} LIMIT 1), '{{}}')),
                        a.attndims > 1
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0
                   AND NOT a.attisdropped AND a.attgenerated = ''
                 ORDER BY a.attnum"
            ),
            &[&t.schema, &t.name],
        )
        .await
        .map_err(|e| SourceError::catalog(format!("describing the columns of {t}"), e))?;
    Ok(rows
        .iter()
        .map(|r| TableColumn {
            name: r.get(0),
            type_oid: r.get(1),
            typmod: r.get(2),
            not_null: r.get(3),
            is_key: r.get(4),
            multi_dim: r.get(5),
        })
        .collect())
}
