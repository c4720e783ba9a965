//! `sluice check` against real servers: what is ready, what must be fixed.

use std::process::Output;

use crate::support::*;

fn config_for(pg_url: &str, tables: &[&str], name: &str) -> String {
    let s = servers();
    let tables: Vec<String> = tables.iter().map(|t| format!("{t:?}")).collect();
    format!(
        r#"
[pipeline]
name = "{name}"
checkpoint_dir = "{dir}"

[source.postgres]
url = "{pg_url}"
slot = "{name}"
publication = "{name}"
tables = [{tables}]

[sink.clickhouse]
url = "{ch}"
database = "{name}"
"#,
        dir = std::env::temp_dir().join("sluice-check-tests").display(),
        tables = tables.join(", "),
        ch = s.clickhouse_url,
    )
}

fn run_check(config: &str, name: &str, env: &[(&str, &str)]) -> Output {
    let dir = std::env::temp_dir().join("sluice-check-tests");
    let path = write_config(&dir, name, config);
    let mut cmd = std::process::Command::new(sluice_bin());
    cmd.arg("check").arg("-c").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sluice check")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn ready_setup_passes() {
    let db = fresh_db("chk_ok").await;
    db.client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, note text);
             CREATE TABLE \"Odd Schema\" (x int); DROP TABLE \"Odd Schema\";
             CREATE SCHEMA \"Sales Ops\";
             CREATE TABLE \"Sales Ops\".\"Line.Items\" (a int, b int, PRIMARY KEY (a, b));",
        )
        .await
        .unwrap();
    let name = unique_name("chk_ok");
    let cfg = config_for(
        &db.url,
        &["public.orders", "\"Sales Ops\".\"Line.Items\""],
        &name,
    );
    let out = run_check(&cfg, &name, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("ok   postgres: wal_level = logical"), "{t}");
    assert!(
        t.contains("table public.orders exists, primary key (id)"),
        "{t}"
    );
    assert!(t.contains("primary key (a, b)"), "{t}");
    assert!(
        t.contains("does not exist yet; sluice run creates it"),
        "{t}"
    );
    assert!(t.contains("ok   clickhouse: reachable"), "{t}");
    assert!(!t.contains("FAIL"), "{t}");
}

#[tokio::test]
async fn table_without_primary_key_is_named() {
    let db = fresh_db("chk_nopk").await;
    db.client
        .batch_execute(
            "CREATE TABLE logs (at timestamptz, msg text);
             CREATE TABLE full_ident (a int, b text);
             ALTER TABLE full_ident REPLICA IDENTITY FULL;",
        )
        .await
        .unwrap();
    let name = unique_name("chk_nopk");
    let cfg = config_for(
        &db.url,
        &["public.logs", "public.full_ident", "public.missing"],
        &name,
    );
    let out = run_check(&cfg, &name, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAIL postgres: table public.logs has no primary key")
            && t.contains("REPLICA IDENTITY FULL"),
        "{t}"
    );
    assert!(t.contains("ok   postgres: table public.full_ident exists, no primary key but REPLICA IDENTITY FULL"), "{t}");
    assert!(
        t.contains("FAIL postgres: table public.missing does not exist"),
        "{t}"
    );
}

#[tokio::test]
async fn wrong_password_says_authentication_failed_without_the_password() {
    let db = fresh_db("chk_pw").await;
    let user = unique_name("scram_user");
    db.client
        .batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE {user} LOGIN REPLICATION PASSWORD 'right-pass-123';
             GRANT sluice_scram_auth TO {user};"
        ))
        .await
        .unwrap();
    let secret = "wr0ng-Secret-xyz";
    let url = url_with(
        &db.url,
        &db.name,
        Some((&user, Some("${CHECK_PG_PASSWORD}"))),
    );
    let name = unique_name("chk_pw");
    let cfg = config_for(&url, &["public.t"], &name);
    let out = run_check(&cfg, &name, &[("CHECK_PG_PASSWORD", secret)]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("authentication failed"), "{t}");
    assert!(!t.contains(secret), "the password leaked: {t}");
}

#[tokio::test]
async fn wal_level_replica_is_named_with_the_fix() {
    let pg = OwnPostgres::start(&["wal_level=replica"]);
    let name = unique_name("chk_wal");
    let client = connect(&pg.url).await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let cfg = config_for(&pg.url, &["public.t"], &name);
    let out = run_check(&cfg, &name, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAIL postgres: wal_level is 'replica'")
            && t.contains("ALTER SYSTEM SET wal_level = logical"),
        "{t}"
    );
}

#[tokio::test]
async fn unreachable_servers_are_named() {
    let name = unique_name("chk_down");
    let port = free_port();
    let cfg = config_for(
        &format!("postgres://postgres@127.0.0.1:{port}/x"),
        &["t"],
        &name,
    )
    .replace(
        &servers().clickhouse_url,
        &format!("http://127.0.0.1:{}", free_port()),
    );
    let out = run_check(&cfg, &name, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "FAIL postgres: cannot connect to PostgreSQL at 127.0.0.1:{port}"
        )),
        "{t}"
    );
    assert!(
        t.contains("FAIL clickhouse: cannot reach ClickHouse"),
        "{t}"
    );
}

#[test]
fn bad_config_exits_2_and_names_the_key() {
    let name = unique_name("chk_bad");
    let cfg = config_for("postgres://u@127.0.0.1/db", &["t"], &name).replace(
        "[sink.clickhouse]\n",
        "[batch]\nmax_rows = 0\n\n[sink.clickhouse]\n",
    );
    let out = run_check(&cfg, &name, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("batch.max_rows: must be > 0"), "{t}");
}

#[tokio::test]
async fn kafka_sink_brokers_are_checked() {
    let db = fresh_db("chk_kafka").await;
    db.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let name = unique_name("chk_kafka");
    let sink = format!(
        "[sink.clickhouse]\nurl = \"{}\"\ndatabase = \"{name}\"\n",
        servers().clickhouse_url
    );
    let base = config_for(&db.url, &["public.t"], &name);
    let ok = base.replace(
        &sink,
        &format!("[sink.kafka]\nbrokers = \"{}\"\n", servers().kafka_brokers),
    );
    assert_ne!(ok, base, "the sink section was replaced");
    let out = run_check(&ok, &name, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "ok   kafka: brokers {} reachable",
            servers().kafka_brokers
        )),
        "{t}"
    );

    let down = base.replace(
        &sink,
        &format!("[sink.kafka]\nbrokers = \"127.0.0.1:{}\"\n", free_port()),
    );
    let out = run_check(&down, &format!("{name}_down"), &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAIL kafka: cannot reach the Kafka brokers"),
        "{t}"
    );
}
