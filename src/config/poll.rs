//! `[source.poll]`: a cursor-polled source (PostgreSQL or ClickHouse tables
//! read by a growing cursor column instead of a replication slot).

use std::time::Duration;

use serde::Deserialize;

use super::checker::{pg_conn_info_at, Checker};
use super::values::{ConfigDuration, TableName};
use super::{PgConnInfo, DEFAULT_CONNECT_TIMEOUT};
use crate::secret::Secret;

/// How often each table is polled when `interval` is not set.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// ClickHouse: rows whose cursor is younger than this are left for a later
/// poll (inserts still in flight may carry older cursors).
pub const DEFAULT_SETTLE_DELAY: Duration = Duration::from_secs(5);
/// Keys a reconcile compares per chunk when `reconcile_chunk` is not set.
pub const DEFAULT_RECONCILE_CHUNK: usize = 10_000;
/// The largest `reconcile_chunk`: a chunk's keys are held in memory and
/// sent to the source in one query.
pub const MAX_RECONCILE_CHUNK: usize = 1_000_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPollSource {
    /// "postgres" or "clickhouse".
    pub kind: Option<String>,
    pub url: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub interval: Option<ConfigDuration>,
    /// ClickHouse only: the watermark's distance behind the newest cursor.
    pub settle_delay: Option<ConfigDuration>,
    pub tables: Option<Vec<RawPollTable>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPollTable {
    pub table: Option<String>,
    pub cursor: Option<String>,
    pub key: Option<Vec<String>>,
    pub deleted: Option<String>,
    pub lookback: Option<RawLookback>,
    /// A column to use as `_version` instead of the cursor.
    pub version: Option<String>,
    /// How often to compare the sink's live keys with the source's and
    /// delete the ones gone (hard deletes); off when not set.
    pub reconcile_interval: Option<ConfigDuration>,
    /// Keys per reconcile chunk.
    pub reconcile_chunk: Option<i64>,
}

/// `lookback = "30s"` (timestamp cursors) or `lookback = 1000` (integer cursors).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum RawLookback {
    Count(i64),
    Duration(ConfigDuration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollKind {
    Postgres,
    ClickHouse,
}

/// Where a polled source connects.
#[derive(Debug, Clone)]
pub enum PollConn {
    Postgres(PgConnInfo),
    ClickHouse {
        /// HTTP(S) URL of the ClickHouse HTTP interface, without credentials.
        url: String,
        user: String,
        password: Secret,
    },
}

/// A re-read window below the saved cursor, re-read by every poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookback {
    /// For timestamp cursors.
    Duration(Duration),
    /// For integer cursors.
    Count(u64),
}

#[derive(Debug, Clone)]
pub struct PollTable {
    pub table: TableName,
    pub cursor: String,
    /// Key columns; empty means the table's primary key.
    pub key: Vec<String>,
    /// A soft-delete column or boolean SQL expression.
    pub deleted: Option<String>,
    pub lookback: Option<Lookback>,
    pub version: Option<String>,
    /// Periodic reconcile for hard deletes; `None` when off.
    pub reconcile: Option<Reconcile>,
}

/// A table's periodic reconcile: keys alive in the sink but gone from the
/// source get delete rows (docs/polling.md, "Reconcile for hard deletes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconcile {
    pub interval: Duration,
    /// Keys per chunk.
    pub chunk: usize,
}

#[derive(Debug, Clone)]
pub struct PollSourceConfig {
    pub kind: PollKind,
    pub conn: PollConn,
    pub interval: Duration,
    pub settle_delay: Duration,
    pub tables: Vec<PollTable>,
}

/// Checks `[source.poll]`, naming the key of every problem.
pub(super) fn validate(c: &mut Checker<'_>, raw: &RawPollSource) -> Option<PollSourceConfig> {
    let kind = match raw.kind.as_deref() {
        Some("postgres") => Some(PollKind::Postgres),
        Some("clickhouse") => Some(PollKind::ClickHouse),
        Some(other) => {
            c.err(
                "source.poll.kind",
                format!("`{other}` is not one of \"postgres\", \"clickhouse\""),
            );
            None
        }
        None => {
            c.err(
                "source.poll.kind",
                "missing: \"postgres\" or \"clickhouse\"",
            );
            None
        }
    };
    let url = c.required("source.poll.url", raw.url.as_ref());
    let password = c.secret(
        "source.poll.password",
        raw.password.as_ref(),
        "source.poll.password_file",
        raw.password_file.as_ref(),
    );
    let conn = match (kind, url) {
        (Some(PollKind::Postgres), Some(u)) => {
            pg_conn_info_at(c, "source.poll.url", &u, password, DEFAULT_CONNECT_TIMEOUT)
                .map(PollConn::Postgres)
        }
        (Some(PollKind::ClickHouse), Some(u)) => clickhouse_conn(c, &u, password),
        _ => None,
    };
    let interval = positive(
        c,
        "source.poll.interval",
        raw.interval,
        DEFAULT_POLL_INTERVAL,
    );
    let settle_delay = match raw.settle_delay {
        Some(_) if kind == Some(PollKind::Postgres) => {
            c.err(
                "source.poll.settle_delay",
                "only for kind = \"clickhouse\" (PostgreSQL's watermark is the oldest running transaction)",
            );
            DEFAULT_SETTLE_DELAY
        }
        Some(d) => d.0,
        None => DEFAULT_SETTLE_DELAY,
    };
    let mut tables: Vec<PollTable> = Vec::new();
    match &raw.tables {
        None => c.err(
            "source.poll.tables",
            "missing: add a [[source.poll.tables]] section per table",
        ),
        Some(list) if list.is_empty() => {
            c.err("source.poll.tables", "must list at least one table")
        }
        Some(list) => {
            for (i, t) in list.iter().enumerate() {
                if let Some(t) = table(c, i, t) {
                    if tables.iter().any(|x| x.table == t.table) {
                        c.err(
                            &format!("source.poll.tables[{i}].table"),
                            format!("{} is listed twice", t.table),
                        );
                    } else {
                        tables.push(t);
                    }
                }
            }
        }
    }
    Some(PollSourceConfig {
        kind: kind?,
        conn: conn?,
        interval,
        settle_delay,
        tables,
    })
}

fn positive(
    c: &mut Checker<'_>,
    key: &str,
    v: Option<ConfigDuration>,
    default: Duration,
) -> Duration {
    match v {
        Some(d) if d.0.is_zero() => {
            c.err(key, "must be > 0");
            default
        }
        Some(d) => d.0,
        None => default,
    }
}

/// `http(s)://[user[:password]@]host:port`; credentials move out of the URL.
fn clickhouse_conn(c: &mut Checker<'_>, url: &str, password: Option<Secret>) -> Option<PollConn> {
    const KEY: &str = "source.poll.url";
    let Some((scheme, rest)) = url
        .split_once("://")
        .filter(|(s, _)| *s == "http" || *s == "https")
    else {
        c.err(
            KEY,
            "must be an HTTP(S) URL of the ClickHouse HTTP interface, e.g. http://127.0.0.1:8123",
        );
        return None;
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let (user, url_password) = match auth.map(|a| a.split_once(':').unwrap_or((a, ""))) {
        Some((u, p)) => (u.to_string(), (!p.is_empty()).then(|| Secret::new(p))),
        None => (super::DEFAULT_CLICKHOUSE_USER.to_string(), None),
    };
    if host.is_empty() {
        c.err(KEY, "names no host");
        return None;
    }
    Some(PollConn::ClickHouse {
        url: format!("{scheme}://{}", host.trim_end_matches('/')),
        user,
        password: password.or(url_password).unwrap_or_default(),
    })
}

fn table(c: &mut Checker<'_>, i: usize, raw: &RawPollTable) -> Option<PollTable> {
    let key = |k: &str| format!("source.poll.tables[{i}].{k}");
    let name = c.required(&key("table"), raw.table.as_ref());
    let table = name.and_then(|n| match TableName::parse(&n) {
        Ok(t) => Some(t),
        Err(e) => {
            c.err(&key("table"), e);
            None
        }
    });
    let cursor = c.required(&key("cursor"), raw.cursor.as_ref());
    let mut columns = Vec::new();
    for (j, k) in raw.key.iter().flatten().enumerate() {
        if k.trim().is_empty() {
            c.err(&format!("{}[{j}]", key("key")), "must not be empty");
        } else if columns.contains(k) {
            c.err(
                &format!("{}[{j}]", key("key")),
                format!("`{k}` is listed twice"),
            );
        } else {
            columns.push(k.clone());
        }
    }
    if raw.key.as_ref().is_some_and(|k| k.is_empty()) {
        c.err(
            &key("key"),
            "must name at least one column (leave it out for the primary key)",
        );
    }
    let deleted = match raw.deleted.as_ref() {
        Some(d) if d.trim().is_empty() => {
            c.err(&key("deleted"), "must not be empty");
            None
        }
        other => other.cloned(),
    };
    let lookback = match raw.lookback {
        None => None,
        Some(RawLookback::Count(n)) if n < 0 => {
            c.err(&key("lookback"), format!("must be >= 0 (got {n})"));
            None
        }
        Some(RawLookback::Count(n)) => Some(Lookback::Count(n as u64)),
        Some(RawLookback::Duration(d)) => Some(Lookback::Duration(d.0)),
    };
    let version = match raw.version.as_ref() {
        Some(v) if v.trim().is_empty() => {
            c.err(&key("version"), "must not be empty");
            None
        }
        other => other.cloned(),
    };
    let reconcile = reconcile(c, i, raw);
    Some(PollTable {
        table: table?,
        cursor: cursor?,
        key: columns,
        deleted,
        lookback,
        version,
        reconcile,
    })
}

/// `reconcile_interval` / `reconcile_chunk` of table `i`.
fn reconcile(c: &mut Checker<'_>, i: usize, raw: &RawPollTable) -> Option<Reconcile> {
    let key = |k: &str| format!("source.poll.tables[{i}].{k}");
    let chunk = match raw.reconcile_chunk {
        None => DEFAULT_RECONCILE_CHUNK,
        Some(n) if n <= 0 => {
            c.err(&key("reconcile_chunk"), format!("must be > 0 (got {n})"));
            DEFAULT_RECONCILE_CHUNK
        }
        Some(n) if n as u64 > MAX_RECONCILE_CHUNK as u64 => {
            c.err(
                &key("reconcile_chunk"),
                format!(
                    "must be at most {MAX_RECONCILE_CHUNK} (a chunk's keys are held in memory)"
                ),
            );
            DEFAULT_RECONCILE_CHUNK
        }
        Some(n) => n as usize,
    };
    let Some(interval) = raw.reconcile_interval else {
        if raw.reconcile_chunk.is_some() {
            c.err(
                &key("reconcile_chunk"),
                "has no effect without reconcile_interval (reconcile is off)",
            );
        }
        return None;
    };
    if interval.0.is_zero() {
        c.err(&key("reconcile_interval"), "must be > 0");
        return None;
    }
    Some(Reconcile {
        interval: interval.0,
        chunk,
    })
}

/// Reconcile needs a sink that can list a table's live keys: a Kafka topic
/// cannot, so it is refused there, naming every table's key.
pub(super) fn check_sink(c: &mut Checker<'_>, raw: &RawPollSource, sink_is_kafka: bool) {
    if !sink_is_kafka {
        return;
    }
    for (i, t) in raw.tables.iter().flatten().enumerate() {
        if t.reconcile_interval.is_some() {
            c.err(
                &format!("source.poll.tables[{i}].reconcile_interval"),
                "reconcile needs a sink that can list the live keys of a table; [sink.kafka] cannot (a topic is not asked which keys are alive): remove reconcile_interval, or use [sink.clickhouse]",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{parse, validate, ConfigError, SourceConfig};

    use super::*;

    const SINK: &str =
        "[pipeline]\nname = \"p\"\n[sink.clickhouse]\nurl = \"http://127.0.0.1:8123\"\n";

    fn check(source: &str) -> Result<PollSourceConfig, Vec<String>> {
        let text = format!("{SINK}{source}");
        let raw = parse(&text, Path::new("t.toml")).map_err(|e| vec![e.to_string()])?;
        match validate(&raw, &|_| None, &|_| Err("no files".into())) {
            Ok(cfg) => match cfg.source {
                SourceConfig::Poll(p) => Ok(p),
                other => panic!("not a polled source: {other:?}"),
            },
            Err(ConfigError::Invalid(e)) => Err(e),
            Err(e) => Err(vec![e.to_string()]),
        }
    }

    #[test]
    fn postgres_defaults() {
        let p = check(
            "[source.poll]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\n\
             [[source.poll.tables]]\ntable = \"public.orders\"\ncursor = \"updated_at\"\n",
        )
        .unwrap();
        assert_eq!(p.kind, PollKind::Postgres);
        assert_eq!(p.interval, DEFAULT_POLL_INTERVAL);
        assert_eq!(p.tables[0].table, TableName::new("public", "orders"));
        assert!(p.tables[0].key.is_empty());
        assert!(matches!(p.conn, PollConn::Postgres(ref c) if c.dbname == "db"));
    }

    #[test]
    fn clickhouse_with_options() {
        let p = check(
            "[source.poll]\nkind = \"clickhouse\"\nurl = \"http://alice:pw@ch:8123/\"\n\
             interval = \"200ms\"\nsettle_delay = \"2s\"\n\
             [[source.poll.tables]]\ntable = \"src.events\"\ncursor = \"seq\"\nkey = [\"id\"]\n\
             lookback = 100\ndeleted = \"is_deleted\"\n\
             [[source.poll.tables]]\ntable = \"src.other\"\ncursor = \"ts\"\nlookback = \"30s\"\n",
        )
        .unwrap();
        assert_eq!(p.interval, Duration::from_millis(200));
        assert_eq!(p.settle_delay, Duration::from_secs(2));
        assert_eq!(p.tables[0].lookback, Some(Lookback::Count(100)));
        assert_eq!(
            p.tables[1].lookback,
            Some(Lookback::Duration(Duration::from_secs(30)))
        );
        match p.conn {
            PollConn::ClickHouse {
                url,
                user,
                password,
            } => {
                assert_eq!(url, "http://ch:8123");
                assert_eq!(user, "alice");
                assert_eq!(password.expose(), "pw");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_bad_key_is_named() {
        let e = check(
            "[source.poll]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\ninterval = \"0s\"\n\
             settle_delay = \"1s\"\n\
             [[source.poll.tables]]\ntable = \"a.b\"\ncursor = \"c\"\n\
             [[source.poll.tables]]\ntable = \"a.c\"\nkey = []\nlookback = -1\n\
             [[source.poll.tables]]\ntable = \"a.b\"\ncursor = \"c\"\n",
        )
        .unwrap_err();
        for k in [
            "source.poll.interval:",
            "source.poll.settle_delay:",
            "source.poll.tables[1].cursor:",
            "source.poll.tables[1].key:",
            "source.poll.tables[1].lookback:",
            "source.poll.tables[2].table:",
        ] {
            assert!(e.iter().any(|l| l.starts_with(k)), "{k} not in {e:?}");
        }
    }

    #[test]
    fn kind_and_unknown_keys() {
        let e = check("[source.poll]\nkind = \"mysql\"\nurl = \"x\"\ntables = []\n").unwrap_err();
        assert!(
            e.iter().any(|l| l.starts_with("source.poll.kind:")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|l| l.starts_with("source.poll.tables:")),
            "{e:?}"
        );
        let e = check(
            "[source.poll]\nkind = \"postgres\"\nurl = \"postgres://u@h/d\"\ncursr = \"x\"\n",
        )
        .unwrap_err();
        assert!(e[0].contains("cursr"), "{e:?}");
        let e = check(
            "[source.poll]\nkind = \"clickhouse\"\nurl = \"ftp://h\"\n[[source.poll.tables]]\ntable = \"d.t\"\ncursor = \"c\"\n",
        )
        .unwrap_err();
        assert!(e.iter().any(|l| l.starts_with("source.poll.url:")), "{e:?}");
    }

    #[test]
    fn both_sources_refused() {
        let e = check(
            "[source.postgres]\nurl = \"postgres://u@h/d\"\nslot = \"s\"\npublication = \"p\"\ntables = [\"t\"]\n\
             [source.poll]\nkind = \"postgres\"\nurl = \"postgres://u@h/d\"\n[[source.poll.tables]]\ntable = \"d.t\"\ncursor = \"c\"\n",
        )
        .unwrap_err();
        assert!(e.iter().any(|l| l.starts_with("source:")), "{e:?}");
    }

    const PG: &str = "[source.poll]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\n";

    #[test]
    fn reconcile_is_off_by_default_and_configurable() {
        let p = check(&format!(
            "{PG}[[source.poll.tables]]\ntable = \"a.b\"\ncursor = \"c\"\n\
             [[source.poll.tables]]\ntable = \"a.c\"\ncursor = \"c\"\nreconcile_interval = \"1h\"\n\
             [[source.poll.tables]]\ntable = \"a.d\"\ncursor = \"c\"\nreconcile_interval = \"1s\"\nreconcile_chunk = 7\n"
        ))
        .unwrap();
        assert_eq!(p.tables[0].reconcile, None);
        assert_eq!(
            p.tables[1].reconcile,
            Some(Reconcile {
                interval: Duration::from_secs(3600),
                chunk: DEFAULT_RECONCILE_CHUNK
            })
        );
        assert_eq!(
            p.tables[2].reconcile,
            Some(Reconcile {
                interval: Duration::from_secs(1),
                chunk: 7
            })
        );
    }

    #[test]
    fn every_bad_reconcile_key_is_named() {
        let e = check(&format!(
            "{PG}[[source.poll.tables]]\ntable = \"a.b\"\ncursor = \"c\"\nreconcile_interval = \"0s\"\n\
             [[source.poll.tables]]\ntable = \"a.c\"\ncursor = \"c\"\nreconcile_interval = \"1s\"\nreconcile_chunk = 0\n\
             [[source.poll.tables]]\ntable = \"a.d\"\ncursor = \"c\"\nreconcile_chunk = 10\n\
             [[source.poll.tables]]\ntable = \"a.e\"\ncursor = \"c\"\nreconcile_interval = \"1s\"\nreconcile_chunk = 2000000\n"
        ))
        .unwrap_err();
        for k in [
            "source.poll.tables[0].reconcile_interval: must be > 0",
            "source.poll.tables[1].reconcile_chunk: must be > 0",
            "source.poll.tables[2].reconcile_chunk: has no effect",
            "source.poll.tables[3].reconcile_chunk: must be at most",
        ] {
            assert!(e.iter().any(|l| l.starts_with(k)), "{k} not in {e:?}");
        }
        let e = check(&format!(
            "{PG}[[source.poll.tables]]\ntable = \"a.b\"\ncursor = \"c\"\nreconcile_chunk = \"x\"\n"
        ))
        .unwrap_err();
        assert!(e[0].contains("reconcile_chunk"), "{e:?}");
    }

    #[test]
    fn reconcile_refused_for_kafka_sinks() {
        let p = check(
            "[source.poll]\nkind = \"clickhouse\"\nurl = \"http://ch:8123\"\n\
             [[source.poll.tables]]\ntable = \"d.t\"\ncursor = \"c\"\nreconcile_interval = \"1m\"\n",
        )
        .unwrap();
        assert_eq!(
            p.tables[0].reconcile.map(|r| r.interval),
            Some(Duration::from_secs(60))
        );
        let text = format!(
            "[pipeline]\nname = \"p\"\n[sink.kafka]\nbrokers = \"k:9092\"\n{PG}\
             [[source.poll.tables]]\ntable = \"a.b\"\ncursor = \"c\"\n\
             [[source.poll.tables]]\ntable = \"a.c\"\ncursor = \"c\"\nreconcile_interval = \"1m\"\n"
        );
        let raw = parse(&text, Path::new("t.toml")).unwrap();
        match validate(&raw, &|_| None, &|_| Err("no files".into())) {
            Err(ConfigError::Invalid(e)) => {
                assert!(
                    e.iter().any(
                        |l| l.starts_with("source.poll.tables[1].reconcile_interval:")
                            && l.contains("[sink.kafka]")
                    ),
                    "{e:?}"
                );
                assert!(
                    !e.iter().any(|l| l.starts_with("source.poll.tables[0]")),
                    "{e:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
