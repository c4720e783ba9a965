//! `validate()`: raw config -> [`Config`], naming the key of every problem.

use std::path::PathBuf;

use super::checker::{pg_conn_info_at, Checker, EnvLookup, FileReader};
use super::*;

/// Checks the raw config and fills in defaults. Pure: the environment and the
/// file system are reached only through `env` and `read_file`.
pub fn validate(
    raw: &RawConfig,
    env: EnvLookup<'_>,
    read_file: FileReader<'_>,
) -> Result<Config, ConfigError> {
    let mut c = Checker {
        errors: Vec::new(),
        env,
        read_file,
    };
    let pipeline = pipeline(&mut c, raw.pipeline.as_ref());
    let source = match raw.source.as_ref().map(|s| (&s.postgres, &s.poll)) {
        Some((Some(pg), None)) => postgres_source(&mut c, pg).map(SourceConfig::Postgres),
        Some((None, Some(p))) => super::poll::validate(&mut c, p).map(SourceConfig::Poll),
        Some((Some(_), Some(_))) => {
            c.err(
                "source",
                "configure exactly one source: [source.postgres] or [source.poll], not both",
            );
            None
        }
        _ => {
            c.err(
                "source.postgres",
                "missing: configure a [source.postgres] (or [source.poll]) section",
            );
            None
        }
    };
    let batch = batch(&mut c, raw.batch.as_ref());
    let snapshot = snapshot(&mut c, raw.snapshot.as_ref());
    let sink = sink(&mut c, raw.sink.as_ref());
    if let Some(p) = raw.source.as_ref().and_then(|s| s.poll.as_ref()) {
        let kafka = raw.sink.as_ref().is_some_and(|s| s.kafka.is_some());
        super::poll::check_sink(&mut c, p, kafka);
    }
    let metrics = metrics(&mut c, raw.metrics.as_ref());
    if !c.errors.is_empty() {
        return Err(ConfigError::Invalid(c.errors));
    }
    match (pipeline, source, sink) {
        (Some(pipeline), Some(source), Some(sink)) => Ok(Config {
            pipeline,
            source,
            batch,
            snapshot,
            sink,
            metrics,
        }),
        // Every None above pushed an error, so this is unreachable in practice.
        _ => Err(ConfigError::Invalid(vec!["config: incomplete".into()])),
    }
}

fn pipeline(c: &mut Checker<'_>, raw: Option<&RawPipeline>) -> Option<PipelineConfig> {
    let default = RawPipeline::default();
    let raw = raw.unwrap_or(&default);
    let name = c.required("pipeline.name", raw.name.as_ref());
    if let Some(n) = &name {
        if !n
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        {
            c.err(
                "pipeline.name",
                format!("`{n}` may only contain letters, digits, `_` and `-` (it names the checkpoint database)"),
            );
        }
    }
    let dir = c
        .text("pipeline.checkpoint_dir", raw.checkpoint_dir.as_ref())
        .unwrap_or_else(|| DEFAULT_CHECKPOINT_DIR.to_string());
    Some(PipelineConfig {
        name: name?,
        checkpoint_dir: PathBuf::from(dir),
    })
}

fn postgres_source(c: &mut Checker<'_>, raw: &RawPostgresSource) -> Option<PostgresSourceConfig> {
    let url = c.required("source.postgres.url", raw.url.as_ref());
    let password = c.secret(
        "source.postgres.password",
        raw.password.as_ref(),
        "source.postgres.password_file",
        raw.password_file.as_ref(),
    );
    let connect_timeout = raw
        .connect_timeout
        .map(|d| d.0)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let read_timeout = raw
        .read_timeout
        .map(|d| d.0)
        .unwrap_or(DEFAULT_READ_TIMEOUT);
    if read_timeout < MIN_READ_TIMEOUT {
        c.err(
            "source.postgres.read_timeout",
            format!("must be at least {MIN_READ_TIMEOUT:?}"),
        );
    }
    let ssl_root_cert = c
        .text("source.postgres.ssl_root_cert", raw.ssl_root_cert.as_ref())
        .map(PathBuf::from);
    let conn = url
        .and_then(|u| pg_conn_info(c, &u, password, connect_timeout))
        .map(|mut conn| {
            conn.ssl_root_cert = ssl_root_cert;
            conn.read_timeout = read_timeout;
            conn
        });

    let slot = c.required("source.postgres.slot", raw.slot.as_ref());
    if let Some(s) = &slot {
        if s.len() > 63
            || !s
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        {
            c.err(
                "source.postgres.slot",
                format!("`{s}` is not a valid slot name: use at most 63 lower-case letters, digits and `_`"),
            );
        }
    }
    let publication = c.required("source.postgres.publication", raw.publication.as_ref());
    if let Some(p) = &publication {
        if p.len() > 63 {
            c.err("source.postgres.publication", "longer than 63 bytes");
        }
    }

    let mut tables = Vec::new();
    match &raw.tables {
        None => c.err(
            "source.postgres.tables",
            "missing: list the tables to replicate, e.g. [\"public.orders\"]",
        ),
        Some(list) if list.is_empty() => {
            c.err("source.postgres.tables", "must list at least one table")
        }
        Some(list) => {
            for (i, t) in list.iter().enumerate() {
                let key = format!("source.postgres.tables[{i}]");
                let Some(text) = c.text(&key, Some(t)) else {
                    continue;
                };
                match TableName::parse(&text) {
                    Ok(name) if tables.contains(&name) => {
                        c.err(&key, format!("{name} is listed twice"))
                    }
                    Ok(name) => tables.push(name),
                    Err(e) => c.err(&key, e),
                }
            }
        }
    }

    let mut publish = BTreeMap::new();
    for (name, spec) in raw.publish.iter().flatten() {
        let key = format!("source.postgres.publish.\"{name}\"");
        let table = match TableName::parse(name) {
            Ok(t) if tables.contains(&t) => t,
            Ok(t) => {
                c.err(&key, format!("{t} is not in source.postgres.tables"));
                continue;
            }
            Err(e) => {
                c.err(&key, e);
                continue;
            }
        };
        if let Some(cols) = &spec.columns {
            if cols.is_empty() {
                c.err(&format!("{key}.columns"), "must list at least one column");
            }
            let mut seen = std::collections::BTreeSet::new();
            for col in cols {
                if col.is_empty() || !seen.insert(col) {
                    c.err(
                        &format!("{key}.columns"),
                        format!("column {col:?} is empty or listed twice"),
                    );
                }
            }
        }
        if spec
            .row_filter
            .as_deref()
            .is_some_and(|w| w.trim().is_empty())
        {
            c.err(&format!("{key}.where"), "is empty");
        }
        publish.insert(
            table,
            TablePublish {
                columns: spec.columns.clone(),
                row_filter: spec.row_filter.clone(),
            },
        );
    }

    let status_interval = raw
        .status_interval
        .map(|d| d.0)
        .unwrap_or(DEFAULT_STATUS_INTERVAL);
    if status_interval.is_zero() {
        c.err("source.postgres.status_interval", "must be > 0");
    }
    let unconstrained_numeric = match raw.unconstrained_numeric.as_deref() {
        None | Some("text") => UnconstrainedNumeric::Text,
        Some(s) => match parse_decimal_spec(s) {
            Ok((precision, scale)) => UnconstrainedNumeric::Decimal { precision, scale },
            Err(e) => {
                c.err("source.postgres.unconstrained_numeric", e);
                UnconstrainedNumeric::Text
            }
        },
    };
    let heartbeat_interval = Some(
        raw.heartbeat_interval
            .map(|d| d.0)
            .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL),
    )
    .filter(|d| !d.is_zero());
    let max_retained_wal = raw.max_retained_wal.map(|b| b.0);
    if max_retained_wal == Some(0) {
        c.err(
            "source.postgres.max_retained_wal",
            "must be > 0 (leave it out for no warning)",
        );
    }
    let on_slot_lost = choice(
        c,
        "source.postgres.on_slot_lost",
        raw.on_slot_lost.as_deref(),
        &[("stop", OnSlotLost::Stop), ("resync", OnSlotLost::Resync)],
    );
    Some(PostgresSourceConfig {
        conn: conn?,
        slot: slot?,
        publication: publication?,
        tables,
        create_publication: raw.create_publication.unwrap_or(true),
        create_slot: raw.create_slot.unwrap_or(true),
        initial_snapshot: raw.initial_snapshot.unwrap_or(true),
        binary: raw.binary.unwrap_or(true),
        status_interval,
        unconstrained_numeric,
        heartbeat_interval,
        max_retained_wal,
        on_slot_lost,
        publish,
    })
}

/// "decimal(P,S)" with 1 <= P <= 76 and 0 <= S <= P.
fn parse_decimal_spec(s: &str) -> Result<(u8, i8), String> {
    let bad = || {
        format!("`{s}`: expected \"text\" or \"decimal(P,S)\" with 1 <= P <= 76 and 0 <= S <= P")
    };
    let inner = s
        .trim()
        .strip_prefix("decimal(")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(bad)?;
    let (p, sc) = inner.split_once(',').ok_or_else(bad)?;
    let p: u8 = p.trim().parse().map_err(|_| bad())?;
    let sc: i8 = sc.trim().parse().map_err(|_| bad())?;
    if !(1..=76).contains(&p) || sc < 0 || sc as u8 > p {
        return Err(bad());
    }
    Ok((p, sc))
}

fn pg_conn_info(
    c: &mut Checker<'_>,
    url: &str,
    password: Option<Secret>,
    connect_timeout: std::time::Duration,
) -> Option<PgConnInfo> {
    pg_conn_info_at(c, "source.postgres.url", url, password, connect_timeout)
}

fn batch(c: &mut Checker<'_>, raw: Option<&RawBatch>) -> BatchConfig {
    let default = RawBatch::default();
    let raw = raw.unwrap_or(&default);
    let max_rows = match raw.max_rows {
        None => DEFAULT_MAX_ROWS,
        Some(n) if n <= 0 => {
            c.err("batch.max_rows", format!("must be > 0 (got {n})"));
            DEFAULT_MAX_ROWS
        }
        Some(n) => n as usize,
    };
    let max_bytes = match raw.max_bytes {
        None => DEFAULT_MAX_BYTES,
        Some(ByteSize(0)) => {
            c.err("batch.max_bytes", "must be > 0");
            DEFAULT_MAX_BYTES
        }
        Some(ByteSize(n)) => n,
    };
    let max_delay = match raw.max_delay {
        None => DEFAULT_MAX_DELAY,
        Some(d) if d.0.is_zero() => {
            c.err("batch.max_delay", "must be > 0");
            DEFAULT_MAX_DELAY
        }
        Some(d) => d.0,
    };
    BatchConfig {
        max_rows,
        max_bytes,
        max_delay,
    }
}

fn snapshot(c: &mut Checker<'_>, raw: Option<&RawSnapshot>) -> SnapshotConfig {
    let parallelism = match raw.and_then(|r| r.parallelism) {
        None => SnapshotConfig::default_parallelism(),
        Some(n) if n < 1 || n as usize > MAX_SNAPSHOT_PARALLELISM => {
            c.err(
                "snapshot.parallelism",
                format!("must be between 1 and {MAX_SNAPSHOT_PARALLELISM} (got {n})"),
            );
            1
        }
        Some(n) => n as usize,
    };
    let split = match raw.and_then(|r| r.split.as_deref()) {
        None | Some("ctid") => SplitMode::Ctid,
        Some("primary_key") => SplitMode::PrimaryKey,
        Some(other) => {
            c.err(
                "snapshot.split",
                format!("must be \"ctid\" or \"primary_key\" (got \"{other}\")"),
            );
            SplitMode::Ctid
        }
    };
    SnapshotConfig { parallelism, split }
}

fn sink(c: &mut Checker<'_>, raw: Option<&RawSink>) -> Option<SinkConfig> {
    let default = RawSink::default();
    let raw = raw.unwrap_or(&default);
    match (&raw.clickhouse, &raw.kafka) {
        (Some(ch), None) => clickhouse_sink(c, ch).map(SinkConfig::ClickHouse),
        (None, Some(k)) => kafka_sink(c, k).map(SinkConfig::Kafka),
        (Some(_), Some(_)) => {
            c.err(
                "sink",
                "configure exactly one sink: [sink.clickhouse] or [sink.kafka], not both",
            );
            None
        }
        (None, None) => {
            c.err(
                "sink",
                "missing: configure [sink.clickhouse] or [sink.kafka]",
            );
            None
        }
    }
}

fn clickhouse_sink(c: &mut Checker<'_>, raw: &RawClickHouseSink) -> Option<ClickHouseSinkConfig> {
    let url = c.required("sink.clickhouse.url", raw.url.as_ref());
    if let Some(u) = &url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            c.err(
                "sink.clickhouse.url",
                format!("`{u}` must be an HTTP(S) URL of the ClickHouse HTTP interface, e.g. http://127.0.0.1:8123"),
            );
        }
    }
    let database = c
        .text("sink.clickhouse.database", raw.database.as_ref())
        .unwrap_or_else(|| DEFAULT_CLICKHOUSE_DATABASE.to_string());
    if database.is_empty() {
        c.err("sink.clickhouse.database", "must not be empty");
    }
    let user = c
        .text("sink.clickhouse.user", raw.user.as_ref())
        .unwrap_or_else(|| DEFAULT_CLICKHOUSE_USER.to_string());
    let password = c
        .secret(
            "sink.clickhouse.password",
            raw.password.as_ref(),
            "sink.clickhouse.password_file",
            raw.password_file.as_ref(),
        )
        .unwrap_or_default();
    let ssl_root_cert = c
        .text("sink.clickhouse.ssl_root_cert", raw.ssl_root_cert.as_ref())
        .map(PathBuf::from);
    let mut table_names = BTreeMap::new();
    for (k, v) in raw.table_names.iter().flatten() {
        let key = format!("sink.clickhouse.table_names.\"{k}\"");
        match TableName::parse(k) {
            Ok(t) if v.trim().is_empty() => c.err(&key, format!("target name for {t} is empty")),
            Ok(t) => {
                table_names.insert(t, v.clone());
            }
            Err(e) => c.err(&key, e),
        }
    }
    let on_truncate = choice(
        c,
        "sink.clickhouse.on_truncate",
        raw.on_truncate.as_deref(),
        &[
            ("truncate", TruncateMode::Truncate),
            ("ignore", TruncateMode::Ignore),
        ],
    );
    let on_drop_column = choice(
        c,
        "sink.clickhouse.on_drop_column",
        raw.on_drop_column.as_deref(),
        &[
            ("keep", DropColumnMode::Keep),
            ("drop", DropColumnMode::Drop),
        ],
    );
    let json_type = choice(
        c,
        "sink.clickhouse.json_type",
        raw.json_type.as_deref(),
        &[("String", JsonType::String), ("JSON", JsonType::Json)],
    );
    let tables_without_key = choice(
        c,
        "sink.clickhouse.tables_without_key",
        raw.tables_without_key.as_deref(),
        &[
            ("multiset", NoKeyMode::Multiset),
            ("append_only", NoKeyMode::AppendOnly),
        ],
    );
    Some(ClickHouseSinkConfig {
        url: url?.trim_end_matches('/').to_string(),
        database,
        user,
        password,
        ssl_root_cert,
        table_names,
        on_truncate,
        on_drop_column,
        json_type,
        tables_without_key,
    })
}

fn kafka_sink(c: &mut Checker<'_>, raw: &RawKafkaSink) -> Option<KafkaSinkConfig> {
    let brokers = c.required("sink.kafka.brokers", raw.brokers.as_ref());
    let topic_prefix = c
        .text("sink.kafka.topic_prefix", raw.topic_prefix.as_ref())
        .unwrap_or_else(|| DEFAULT_KAFKA_TOPIC_PREFIX.to_string());
    if !topic_prefix
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
    {
        c.err(
            "sink.kafka.topic_prefix",
            format!("`{topic_prefix}` may only contain letters, digits, `.`, `_` and `-` (Kafka topic rules)"),
        );
    }
    let security_protocol = c.text(
        "sink.kafka.security_protocol",
        raw.security_protocol.as_ref(),
    );
    let sasl_mechanism = c.text("sink.kafka.sasl_mechanism", raw.sasl_mechanism.as_ref());
    let sasl_username = c.text("sink.kafka.sasl_username", raw.sasl_username.as_ref());
    let sasl_password = c.secret(
        "sink.kafka.sasl_password",
        raw.sasl_password.as_ref(),
        "sink.kafka.sasl_password_file",
        raw.sasl_password_file.as_ref(),
    );
    if sasl_mechanism.is_some() && (sasl_username.is_none() || sasl_password.is_none()) {
        c.err(
            "sink.kafka.sasl_mechanism",
            "needs sink.kafka.sasl_username and sink.kafka.sasl_password (or sasl_password_file)",
        );
    }
    let mut properties = BTreeMap::new();
    for (k, v) in raw.properties.iter().flatten() {
        let key = format!("sink.kafka.properties.{k}");
        if k.contains("password") || k.contains("sasl") {
            c.err(
                &key,
                "set SASL credentials with sink.kafka.sasl_* keys, not raw properties",
            );
            continue;
        }
        if KAFKA_FIXED_PROPERTIES.contains(&k.as_str()) {
            c.err(
                &key,
                "is fixed by sluice (acks=all, idempotence, murmur2 partitioner): remove it",
            );
            continue;
        }
        if k == "compression.type" || k == "compression.codec" {
            c.err(&key, "use sink.kafka.compression");
            continue;
        }
        if let Some(v) = c.text(&key, Some(v)) {
            properties.insert(k.clone(), v);
        }
    }
    let compression = choice(
        c,
        "sink.kafka.compression",
        raw.compression.as_deref(),
        &[
            (DEFAULT_KAFKA_COMPRESSION, DEFAULT_KAFKA_COMPRESSION),
            ("lz4", "lz4"),
            ("snappy", "snappy"),
            ("gzip", "gzip"),
            ("none", "none"),
        ],
    )
    .to_string();
    let cleanup_policy = choice(
        c,
        "sink.kafka.cleanup_policy",
        raw.cleanup_policy.as_deref(),
        &[
            (DEFAULT_KAFKA_CLEANUP_POLICY, DEFAULT_KAFKA_CLEANUP_POLICY),
            ("compact", "compact"),
            ("compact,delete", "compact,delete"),
        ],
    )
    .to_string();
    let mut count = |key: &str, v: Option<i64>, default: i32| match v {
        None => default,
        Some(n) if (1..=i64::from(i16::MAX)).contains(&n) => n as i32,
        Some(n) => {
            c.err(key, format!("must be between 1 and {} (got {n})", i16::MAX));
            default
        }
    };
    let partitions = count(
        "sink.kafka.partitions",
        raw.partitions,
        DEFAULT_KAFKA_PARTITIONS,
    );
    let replication_factor = count(
        "sink.kafka.replication_factor",
        raw.replication_factor,
        DEFAULT_KAFKA_REPLICATION_FACTOR,
    );
    let mut topics = BTreeMap::new();
    for (k, v) in raw.topics.iter().flatten() {
        let key = format!("sink.kafka.topics.\"{k}\"");
        match TableName::parse(k) {
            Ok(_) if !valid_topic(v) => c.err(
                &key,
                format!("`{v}` is not a topic name (letters, digits, `.`, `_`, `-`; at most 249)"),
            ),
            Ok(t) => {
                topics.insert(t, v.clone());
            }
            Err(e) => c.err(&key, e),
        }
    }
    let unavailable_value = c
        .text(
            "sink.kafka.unavailable_value",
            raw.unavailable_value.as_ref(),
        )
        .unwrap_or_else(|| DEFAULT_KAFKA_UNAVAILABLE_VALUE.to_string());
    Some(KafkaSinkConfig {
        brokers: brokers?,
        topic_prefix,
        security_protocol,
        sasl_mechanism,
        sasl_username,
        sasl_password,
        properties,
        compression,
        topics,
        partitions,
        replication_factor,
        cleanup_policy,
        tombstones: raw.tombstones.unwrap_or(true),
        unavailable_value,
    })
}

/// Kafka's topic name rules.
fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
}

fn metrics(c: &mut Checker<'_>, raw: Option<&RawMetrics>) -> MetricsConfig {
    let listen = raw
        .and_then(|m| c.text("metrics.listen", m.listen.as_ref()))
        .and_then(|l| match l.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                c.err(
                    "metrics.listen",
                    format!("`{l}` is not an address:port, e.g. 127.0.0.1:9187"),
                );
                None
            }
        });
    let ready_max_lag = raw
        .and_then(|m| m.ready_max_lag)
        .map(|d| d.0)
        .unwrap_or(DEFAULT_READY_MAX_LAG);
    if ready_max_lag.is_zero() {
        c.err("metrics.ready_max_lag", "must be > 0");
    }
    MetricsConfig {
        listen,
        ready_max_lag,
    }
}

/// One of a fixed set of words; the first is the default.
fn choice<T: Copy>(
    c: &mut Checker<'_>,
    key: &str,
    value: Option<&str>,
    options: &[(&str, T)],
) -> T {
    let Some(v) = value else { return options[0].1 };
    match options.iter().find(|(name, _)| *name == v) {
        Some((_, t)) => *t,
        None => {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            c.err(key, format!("`{v}` is not one of {}", names.join(", ")));
            options[0].1
        }
    }
}
