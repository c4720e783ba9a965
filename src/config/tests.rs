use std::path::Path;

use super::*;

const GOOD: &str = r#"
[pipeline]
name = "demo"
checkpoint_dir = "/var/lib/sluice"

[source.postgres]
url = "postgres://sluice:${PGPASSWORD}@127.0.0.1:5432/shop"
slot = "sluice_demo"
publication = "sluice_demo"
tables = ["public.orders", "customers", '"Odd Schema"."Mixed.Case"']

[batch]
max_rows = 5000
max_bytes = "8MiB"
max_delay = "250ms"

[sink.clickhouse]
url = "http://127.0.0.1:8123/"
database = "shop"
user = "default"
password = "${CLICKHOUSE_PASSWORD}"

[metrics]
listen = "127.0.0.1:9187"
"#;

fn env(k: &str) -> Option<String> {
    match k {
        "PGPASSWORD" => Some("pg-s3cret".into()),
        "CLICKHOUSE_PASSWORD" => Some("ch-s3cret".into()),
        _ => None,
    }
}

fn no_files(p: &str) -> Result<String, String> {
    Err(format!("no such file {p}"))
}

fn check(text: &str) -> Result<Config, ConfigError> {
    let raw = parse(text, Path::new("test.toml"))?;
    validate(&raw, &env, &no_files)
}

/// The error text for a config that must be rejected.
fn error_of(text: &str) -> String {
    match check(text) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn good_config_resolves_defaults_and_secrets() {
    let cfg = check(GOOD).unwrap();
    assert_eq!(
        cfg.pipeline.checkpoint_path(),
        Path::new("/var/lib/sluice/demo")
    );
    let pg = cfg.source.postgres().expect("a logical source");
    assert_eq!(pg.conn.host, "127.0.0.1");
    assert_eq!(pg.conn.port, 5432);
    assert_eq!(pg.conn.user, "sluice");
    assert_eq!(pg.conn.dbname, "shop");
    assert_eq!(pg.conn.password.as_ref().unwrap().expose(), "pg-s3cret");
    assert_eq!(
        pg.tables,
        vec![
            TableName::new("public", "orders"),
            TableName::new("public", "customers"),
            TableName::new("Odd Schema", "Mixed.Case"),
        ]
    );
    assert!(pg.create_publication && pg.create_slot && pg.binary);
    assert_eq!(pg.status_interval, DEFAULT_STATUS_INTERVAL);
    assert_eq!(cfg.batch.max_rows, 5000);
    assert_eq!(cfg.batch.max_bytes, 8 << 20);
    assert_eq!(cfg.batch.max_delay, Duration::from_millis(250));
    let SinkConfig::ClickHouse(ch) = &cfg.sink else {
        panic!("not clickhouse")
    };
    assert_eq!(ch.url, "http://127.0.0.1:8123");
    assert_eq!(ch.password.expose(), "ch-s3cret");
    assert_eq!(cfg.metrics.listen.unwrap().port(), 9187);
    // Secrets never show in Debug output.
    let debug = format!("{cfg:?}");
    assert!(
        !debug.contains("pg-s3cret") && !debug.contains("ch-s3cret"),
        "{debug}"
    );
    assert!(!pg.conn.to_string().contains("s3cret"));
}

#[test]
fn defaults_apply_when_sections_are_omitted() {
    let text = GOOD
        .replace(
            "[batch]\nmax_rows = 5000\nmax_bytes = \"8MiB\"\nmax_delay = \"250ms\"\n",
            "",
        )
        .replace("checkpoint_dir = \"/var/lib/sluice\"\n", "");
    let cfg = check(&text).unwrap();
    assert_eq!(cfg.batch.max_rows, DEFAULT_MAX_ROWS);
    assert_eq!(cfg.batch.max_bytes, DEFAULT_MAX_BYTES);
    assert_eq!(cfg.batch.max_delay, DEFAULT_MAX_DELAY);
    let p = cfg.snapshot.parallelism;
    assert!((1..=DEFAULT_SNAPSHOT_PARALLELISM).contains(&p), "{p}");
    assert_eq!(
        cfg.pipeline.checkpoint_dir,
        Path::new(DEFAULT_CHECKPOINT_DIR)
    );
}

#[test]
fn missing_keys_are_named() {
    let e = error_of(&GOOD.replace("url = \"http://127.0.0.1:8123/\"\n", ""));
    assert!(e.contains("sink.clickhouse.url: missing"), "{e}");
    let e = error_of(&GOOD.replace("slot = \"sluice_demo\"\n", ""));
    assert!(e.contains("source.postgres.slot: missing"), "{e}");
    let e = error_of(&GOOD.replace("name = \"demo\"\n", ""));
    assert!(e.contains("pipeline.name: missing"), "{e}");
}

#[test]
fn snapshot_parallelism_is_checked() {
    let with = |v: &str| format!("{GOOD}\n[snapshot]\nparallelism = {v}\n");
    assert_eq!(check(&with("8")).unwrap().snapshot.parallelism, 8);
    for bad in ["0", "-1", "1000"] {
        let e = error_of(&with(bad));
        assert!(
            e.contains("snapshot.parallelism: must be between 1 and 64"),
            "{e}"
        );
    }
}

#[test]
fn bad_numbers_are_named() {
    let e = error_of(&GOOD.replace("max_rows = 5000", "max_rows = 0"));
    assert!(e.contains("batch.max_rows: must be > 0"), "{e}");
    let e = error_of(&GOOD.replace("max_rows = 5000", "max_rows = -3"));
    assert!(e.contains("batch.max_rows: must be > 0"), "{e}");
    let e = error_of(&GOOD.replace("\"8MiB\"", "\"0MiB\""));
    assert!(e.contains("batch.max_bytes: must be > 0"), "{e}");
}

#[test]
fn bad_units_and_types_point_at_the_key() {
    let e = error_of(&GOOD.replace("\"250ms\"", "\"fast\""));
    assert!(
        e.contains("max_delay") && e.contains("not a duration"),
        "{e}"
    );
    let e = error_of(&GOOD.replace("\"8MiB\"", "\"8 mebibytes\""));
    assert!(
        e.contains("max_bytes") && e.contains("unknown size unit"),
        "{e}"
    );
    let e = error_of(&GOOD.replace("max_rows = 5000", "max_rows = \"many\""));
    assert!(e.contains("max_rows"), "{e}");
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let e = error_of(&GOOD.replace("max_rows = 5000", "max_rowz = 5000"));
    assert!(e.contains("unknown field `max_rowz`"), "{e}");
    let e = error_of(&format!("{GOOD}\n[surprise]\nx = 1\n"));
    assert!(e.contains("surprise"), "{e}");
}

#[test]
fn missing_env_var_is_named_with_its_key() {
    let e = error_of(&GOOD.replace("${CLICKHOUSE_PASSWORD}", "${NOT_SET_ANYWHERE}"));
    assert!(
        e.contains("sink.clickhouse.password: environment variable NOT_SET_ANYWHERE is not set"),
        "{e}"
    );
}

#[test]
fn password_file_is_read_and_exclusive() {
    let text = GOOD.replace(
        "password = \"${CLICKHOUSE_PASSWORD}\"",
        "password_file = \"/run/secrets/ch\"",
    );
    let raw = parse(&text, Path::new("t.toml")).unwrap();
    let files = |p: &str| {
        (p == "/run/secrets/ch")
            .then(|| "from-file\n".to_string())
            .ok_or_else(|| "nope".to_string())
    };
    let cfg = validate(&raw, &env, &files).unwrap();
    let SinkConfig::ClickHouse(ch) = &cfg.sink else {
        panic!()
    };
    assert_eq!(ch.password.expose(), "from-file");

    let e = error_of(&text);
    assert!(
        e.contains("sink.clickhouse.password_file: cannot read /run/secrets/ch"),
        "{e}"
    );

    let both = GOOD.replace(
        "password = \"${CLICKHOUSE_PASSWORD}\"",
        "password = \"x\"\npassword_file = \"/run/secrets/ch\"",
    );
    let e = error_of(&both);
    assert!(e.contains("not both"), "{e}");
}

#[test]
fn sink_must_be_exactly_one() {
    let both = format!("{GOOD}\n[sink.kafka]\nbrokers = \"127.0.0.1:9092\"\n");
    assert!(error_of(&both).contains("sink: configure exactly one sink"));
    let start = GOOD.find("[sink.clickhouse]").unwrap();
    let end = GOOD.find("[metrics]").unwrap();
    let none = format!("{}{}", &GOOD[..start], &GOOD[end..]);
    assert!(error_of(&none).contains("sink: missing"));
}

#[test]
fn bad_values_are_explained() {
    let e = error_of(&GOOD.replace("slot = \"sluice_demo\"", "slot = \"Bad-Slot\""));
    assert!(
        e.contains("source.postgres.slot: `Bad-Slot` is not a valid slot name"),
        "{e}"
    );
    let e = error_of(&GOOD.replace("http://127.0.0.1:8123/", "127.0.0.1:8123"));
    assert!(
        e.contains("sink.clickhouse.url: `127.0.0.1:8123` must be an HTTP(S) URL"),
        "{e}"
    );
    let e = error_of(&GOOD.replace("\"customers\"", "\"a.b.c\""));
    assert!(e.contains("source.postgres.tables[1]"), "{e}");
    let e = error_of(&GOOD.replace("\"customers\"", "\"public.orders\""));
    assert!(e.contains("listed twice"), "{e}");
    let e = error_of(&GOOD.replace("127.0.0.1:9187", "nine"));
    assert!(e.contains("metrics.listen"), "{e}");
    let e = error_of(&GOOD.replace(
        "postgres://sluice:${PGPASSWORD}@127.0.0.1:5432/shop",
        "postgres://127.0.0.1:5432/shop",
    ));
    assert!(e.contains("source.postgres.url: names no user"), "{e}");
    let e = error_of(&GOOD.replace(
        "slot = \"sluice_demo\"",
        "slot = \"sluice_demo\"\nunconstrained_numeric = \"decimal(99,2)\"",
    ));
    assert!(e.contains("source.postgres.unconstrained_numeric"), "{e}");
}

#[test]
fn several_problems_are_reported_together() {
    let text = GOOD
        .replace("max_rows = 5000", "max_rows = 0")
        .replace("slot = \"sluice_demo\"\n", "");
    let e = error_of(&text);
    assert!(
        e.contains("batch.max_rows") && e.contains("source.postgres.slot"),
        "{e}"
    );
}

#[test]
fn bad_url_error_does_not_leak_password() {
    let e = error_of(&GOOD.replace(
        "postgres://sluice:${PGPASSWORD}@127.0.0.1:5432/shop",
        "postgres://sluice:${PGPASSWORD}@127.0.0.1:notaport/shop",
    ));
    assert!(e.contains("source.postgres.url"), "{e}");
    assert!(!e.contains("pg-s3cret"), "{e}");
}

#[test]
fn example_configs_in_repo_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let env_any = |k: &str| {
        Some(if k.contains("PG_URL") {
            "postgres://u@127.0.0.1/db".to_string()
        } else if k.contains("CLICKHOUSE_URL") {
            "http://127.0.0.1:8123".to_string()
        } else {
            "x".to_string()
        })
    };
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let raw = parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
            validate(&raw, &env_any, &no_files)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected example configs in {}", dir.display());
}

#[test]
fn clickhouse_table_options() {
    let text = GOOD.replace(
        "password = \"${CLICKHOUSE_PASSWORD}\"",
        "password = \"x\"\non_truncate = \"ignore\"\non_drop_column = \"drop\"\ntable_names = { \"public.orders\" = \"orders_v2\" }",
    );
    let cfg = check(&text).unwrap();
    let SinkConfig::ClickHouse(ch) = &cfg.sink else {
        panic!()
    };
    assert_eq!(ch.on_truncate, TruncateMode::Ignore);
    assert_eq!(ch.on_drop_column, DropColumnMode::Drop);
    assert_eq!(ch.json_type, JsonType::String);
    assert_eq!(
        ch.target_table(&TableName::new("public", "orders")),
        "orders_v2"
    );
    assert_eq!(
        ch.target_table(&TableName::new("public", "customers")),
        "customers"
    );
    assert_eq!(
        ch.target_table(&TableName::new("sales", "items")),
        "sales_items"
    );

    let e = error_of(&GOOD.replace(
        "database = \"shop\"",
        "database = \"shop\"\non_truncate = \"explode\"",
    ));
    assert!(
        e.contains("sink.clickhouse.on_truncate: `explode` is not one of \"truncate\", \"ignore\""),
        "{e}"
    );
}

fn kafka_config(extra: &str) -> Result<Config, ConfigError> {
    let start = GOOD.find("[sink.clickhouse]").unwrap();
    let end = GOOD.find("[metrics]").unwrap();
    check(&format!(
        "{}[sink.kafka]\nbrokers = \"127.0.0.1:9092\"\n{extra}\n{}",
        &GOOD[..start],
        &GOOD[end..]
    ))
}

#[test]
fn kafka_defaults_topics_and_fixed_settings() {
    let c = kafka_config(
        "topic_prefix = \"shop\"\n[sink.kafka.topics]\n\"public.customers\" = \"crm.customers\"",
    )
    .unwrap();
    let SinkConfig::Kafka(k) = c.sink else {
        panic!("kafka sink expected")
    };
    assert_eq!(k.compression, DEFAULT_KAFKA_COMPRESSION);
    assert_eq!(k.partitions, DEFAULT_KAFKA_PARTITIONS);
    assert_eq!(k.replication_factor, DEFAULT_KAFKA_REPLICATION_FACTOR);
    assert_eq!(k.cleanup_policy, DEFAULT_KAFKA_CLEANUP_POLICY);
    assert!(k.tombstones);
    assert_eq!(k.unavailable_value, DEFAULT_KAFKA_UNAVAILABLE_VALUE);
    assert_eq!(
        k.topic(&TableName::new("public", "orders")),
        "shop.public.orders"
    );
    assert_eq!(
        k.topic(&TableName::new("public", "customers")),
        "crm.customers"
    );

    let e = kafka_config("compression = \"brotli\"\npartitions = 0\ncleanup_policy = \"keep\"\n[sink.kafka.properties]\nacks = \"1\"\n\"compression.type\" = \"gzip\"")
        .unwrap_err()
        .to_string();
    for want in [
        "sink.kafka.compression: `brotli` is not one of",
        "sink.kafka.partitions: must be between 1 and",
        "sink.kafka.cleanup_policy: `keep` is not one of",
        "sink.kafka.properties.acks: is fixed by sluice",
        "sink.kafka.properties.compression.type: use sink.kafka.compression",
    ] {
        assert!(e.contains(want), "{want} not in {e}");
    }
    let e = kafka_config("[sink.kafka.topics]\n\"public.orders\" = \"bad topic\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a topic name"), "{e}");
}

#[test]
fn operations_keys_default_and_are_checked() {
    let cfg = check(GOOD).unwrap();
    let pg = cfg.source.postgres().unwrap();
    assert_eq!(pg.heartbeat_interval, Some(DEFAULT_HEARTBEAT_INTERVAL));
    assert_eq!(pg.max_retained_wal, None);
    assert_eq!(pg.on_slot_lost, OnSlotLost::Stop);
    assert_eq!(cfg.metrics.ready_max_lag, DEFAULT_READY_MAX_LAG);

    let text = GOOD
        .replace(
            "[batch]",
            "heartbeat_interval = \"0s\"\nmax_retained_wal = \"2GiB\"\non_slot_lost = \"resync\"\n\n[batch]",
        )
        .replace(
            "listen = \"127.0.0.1:9187\"",
            "listen = \"127.0.0.1:9187\"\nready_max_lag = \"30s\"",
        );
    let cfg = check(&text).unwrap();
    let pg = cfg.source.postgres().unwrap();
    assert_eq!(pg.heartbeat_interval, None, "0s turns the heartbeat off");
    assert_eq!(pg.max_retained_wal, Some(2 << 30));
    assert_eq!(pg.on_slot_lost, OnSlotLost::Resync);
    assert_eq!(cfg.metrics.ready_max_lag, Duration::from_secs(30));

    let e = error_of(&GOOD.replace("[batch]", "on_slot_lost = \"ignore\"\n\n[batch]"));
    assert!(e.contains("source.postgres.on_slot_lost"), "{e}");
    let e = error_of(&GOOD.replace("[batch]", "max_retained_wal = \"0B\"\n\n[batch]"));
    assert!(e.contains("source.postgres.max_retained_wal"), "{e}");
    let e = error_of(&GOOD.replace(
        "listen = \"127.0.0.1:9187\"",
        "listen = \"127.0.0.1:9187\"\nready_max_lag = \"0s\"",
    ));
    assert!(e.contains("metrics.ready_max_lag"), "{e}");
}

#[test]
fn column_lists_and_row_filters() {
    let with = |extra: &str| {
        GOOD.replace(
            "[batch]",
            &format!("[source.postgres.publish.\"public.orders\"]\n{extra}\n\n[batch]"),
        )
    };
    let cfg = check(&with("columns = [\"id\", \"note\"]\nwhere = \"id > 5\"")).unwrap();
    let pg = cfg.source.postgres().unwrap();
    let p = &pg.publish[&TableName::new("public", "orders")];
    assert_eq!(
        p.columns.as_deref(),
        Some(&["id".to_string(), "note".to_string()][..])
    );
    assert_eq!(p.row_filter.as_deref(), Some("id > 5"));
    let e = error_of(&with("columns = []"));
    assert!(
        e.contains("source.postgres.publish.\"public.orders\".columns"),
        "{e}"
    );
    let e = error_of(&with("where = \" \""));
    assert!(e.contains(".where: is empty"), "{e}");
    let e = error_of(&GOOD.replace(
        "[batch]",
        "[source.postgres.publish.\"public.other\"]\nwhere = \"true\"\n\n[batch]",
    ));
    assert!(
        e.contains("public.other is not in source.postgres.tables"),
        "{e}"
    );
}

#[test]
fn catalog_and_copy_connections_give_up_on_a_dead_peer_within_read_timeout() {
    let text = GOOD.replace("tables = [", "read_timeout = \"40s\"\ntables = [");
    let cfg = check(&text).unwrap();
    let pg = cfg.source.postgres().unwrap().conn.tokio_config();
    assert!(pg.get_keepalives());
    assert_eq!(pg.get_keepalives_idle(), Duration::from_secs(20));
    assert_eq!(pg.get_keepalives_interval(), Some(Duration::from_secs(5)));
    assert_eq!(pg.get_keepalives_retries(), Some(3));
    assert_eq!(pg.get_tcp_user_timeout(), Some(&Duration::from_secs(40)));
}
