//! Operating sluice: `/metrics`, `/healthz`, `/readyz` scraped from a live
//! `sluice run`; the heartbeat; a lost slot recovered under
//! `on_slot_lost = "resync"`; the shipped alert rules and dashboard.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::e2e::*;
use crate::support::*;

const RULES: &str = "configs/monitoring/sluice-alerts.yml";
const DASHBOARD: &str = "configs/monitoring/sluice-dashboard.json";

/// `GET path` on the metrics listener: status code and body; `None` when
/// nothing listens (yet).
pub(crate) async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

pub(crate) async fn scrape(port: u16) -> String {
    let (code, body) = get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of the series `name` whose labels include every `labels` pair.
pub(crate) fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| v.parse().ok())?
        })
        .next()
}

/// Metric names present in a scrape (histograms by their base name too).
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let n = l.split(['{', ' ']).next().unwrap_or("").to_owned();
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = n.strip_suffix(suffix) {
                out.insert(base.to_owned());
            }
        }
        out.insert(n);
    }
    out
}

/// Every `sluice_*` name written in `text` (an alert rule or a dashboard).
fn named_metrics(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("sluice_") {
        let start = i + at;
        let before_ok = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric());
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if before_ok {
            out.insert(text[start..end].to_owned());
        }
        i = end;
    }
    out
}

/// A pipeline config with the metrics listener and a 1 s heartbeat.
fn ops_pipeline(
    pg_url: &str,
    tables: &[&str],
    ch_url: &str,
    source_extra: &str,
) -> (TestPipeline, u16) {
    let port = free_port();
    let p = TestPipeline::with_clickhouse(
        pg_url,
        tables,
        &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\nready_max_lag = \"30s\"\n"),
        ch_url,
    );
    p.edit_config(
        "status_interval = \"1s\"",
        &format!("status_interval = \"1s\"\nheartbeat_interval = \"1s\"\n{source_extra}"),
    );
    (p, port)
}

pub(crate) async fn wait_ready(port: u16, ready: bool, within: Duration) {
    let want = if ready { 200 } else { 503 };
    wait_for(
        &format!("/readyz to answer {want}"),
        within,
        || async move {
            match get(port, "/readyz").await {
                Some((code, _)) if code == want => Some(()),
                _ => None,
            }
        },
    )
    .await;
}

async fn slot_confirmed(client: &tokio_postgres::Client, slot: &str) -> String {
    pg_tsv(
        client,
        &format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    )
    .await
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_loaded_run_lag_drops_with_the_heartbeat_and_a_failed_table_shows() {
    let db = fresh_db("e2e_ops").await;
    db.client
        .batch_execute(
            "CREATE TABLE good (id int PRIMARY KEY, v int);
             CREATE TABLE bad (id int PRIMARY KEY, v int);
             INSERT INTO good SELECT g, g FROM generate_series(1, 100) g;
             INSERT INTO bad SELECT g, g FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    let (mut p, port) = ops_pipeline(
        &db.url,
        &["public.good", "public.bad"],
        &servers().clickhouse_url,
        "max_retained_wal = \"1KiB\"",
    );
    let mut sluice = p.spawn(&[]);
    wait_for("/healthz", Duration::from_secs(60), || async {
        get(port, "/healthz")
            .await
            .filter(|(c, b)| *c == 200 && b.contains("ok"))
    })
    .await;
    wait_ready(port, true, Duration::from_secs(60)).await;
    let m = scrape(port).await;
    for t in ["public.good", "public.bad"] {
        assert_eq!(
            value(
                &m,
                "sluice_table_state",
                &[("table", t), ("state", "streaming")]
            ),
            Some(1.0),
            "{t} streams after its copy:\n{m}"
        );
        assert_eq!(
            value(
                &m,
                "sluice_table_state",
                &[("table", t), ("state", "snapshotting")]
            ),
            Some(0.0)
        );
    }
    assert_eq!(
        value(
            &m,
            "sluice_rows_applied_total",
            &[("table", "public.good"), ("op", "read")]
        ),
        Some(100.0),
        "the copied rows count as read"
    );

    // Load: a large transaction (the slot's confirmed position trails the
    // server's WAL while it is decoded and written), then small ones with
    // updates and deletes.
    let loader = {
        let url = db.url.clone();
        let pid = sluice.id().to_string();
        tokio::spawn(async move {
            let c = connect(&url).await;
            // sluice is frozen while the large transaction is written, so
            // its next slot check (every 2 s) is sure to see the backlog
            // however fast the machine drains it.
            let signal = |sig: &str| {
                let ok = std::process::Command::new("kill")
                    .args([sig, &pid])
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "kill {sig} {pid}");
            };
            signal("-STOP");
            let big = c
                .batch_execute("INSERT INTO good SELECT g, g FROM generate_series(101, 150100) g")
                .await;
            signal("-CONT");
            big.unwrap();
            for i in 0..20 {
                let lo = 200_000 + i * 100;
                c.batch_execute(&format!(
                    "INSERT INTO good SELECT g, g FROM generate_series({lo}, {}) g;
                     UPDATE good SET v = -v WHERE id BETWEEN {} AND {};
                     DELETE FROM good WHERE id = {};",
                    lo + 99,
                    i * 10 + 1,
                    i * 10 + 5,
                    1000 + i
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut max_lag_bytes = 0.0f64;
    let mut max_lag_seconds = 0.0f64;
    while !loader.is_finished() {
        let m = scrape(port).await;
        max_lag_bytes =
            max_lag_bytes.max(value(&m, "sluice_replication_lag_bytes", &[]).unwrap_or(0.0));
        max_lag_seconds =
            max_lag_seconds.max(value(&m, "sluice_replication_lag_seconds", &[]).unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loader.await.unwrap();
    let inserted = 150_000.0 + 20.0 * 100.0;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let m = scrape(port).await;
        max_lag_bytes =
            max_lag_bytes.max(value(&m, "sluice_replication_lag_bytes", &[]).unwrap_or(0.0));
        let applied = value(
            &m,
            "sluice_rows_applied_total",
            &[("table", "public.good"), ("op", "insert")],
        );
        if applied == Some(inserted) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "inserts applied: {applied:?} of {inserted}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        max_lag_bytes > 0.0,
        "lag in bytes never rose above 0 during the load"
    );
    wait_equal(
        &p,
        &db.client,
        "SELECT id::text, v::text FROM good ORDER BY id",
        &format!(
            "SELECT toString(id), toString(v) FROM `{}`.good FINAL WHERE _is_deleted = 0 ORDER BY id",
            p.ch_db
        ),
        Duration::from_secs(120),
    )
    .await;
    let m = scrape(port).await;
    assert_eq!(
        value(
            &m,
            "sluice_rows_applied_total",
            &[("table", "public.good"), ("op", "update")]
        ),
        Some(100.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            "sluice_rows_applied_total",
            &[("table", "public.good"), ("op", "delete")]
        ),
        Some(20.0)
    );
    assert!(value(&m, "sluice_batches_total", &[("table", "public.good")]).unwrap() >= 2.0);
    assert!(value(&m, "sluice_sink_write_seconds_count", &[]).unwrap() >= 2.0);
    assert!(value(&m, "sluice_last_applied_commit_timestamp_seconds", &[]).unwrap() > 1.7e9);
    let good_commit = value(
        &m,
        "sluice_table_last_applied_commit_timestamp_seconds",
        &[("table", "public.good")],
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 300.0..now + 5.0).contains(&good_commit),
        "good's last commit at {good_commit}, now {now}"
    );
    assert!(value(&m, "sluice_process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(m.contains("sluice_rows_applied_total{pipeline=\""), "{m}");

    // Idle now: the heartbeat keeps lag in seconds near zero and the slot moving.
    wait_for(
        "lag in seconds near zero while idle",
        Duration::from_secs(30),
        || async {
            let m = scrape(port).await;
            let lag = value(&m, "sluice_replication_lag_seconds", &[])?;
            (lag < 3.0).then_some(())
        },
    )
    .await;
    let confirmed = slot_confirmed(&db.client, &p.name).await;
    wait_for("the idle slot to advance", Duration::from_secs(30), || {
        let (client, name, confirmed) = (&db.client, &p.name, &confirmed);
        async move { (slot_confirmed(client, name).await != *confirmed).then_some(()) }
    })
    .await;
    for _ in 0..5 {
        let m = scrape(port).await;
        let lag = value(&m, "sluice_replication_lag_seconds", &[]).unwrap();
        assert!(lag < 3.0, "idle lag {lag}s with a 1 s heartbeat");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let m = scrape(port).await;
    assert!(value(&m, "sluice_heartbeats_total", &[]).unwrap() >= 3.0);
    // Under load the slot keeps more than 1 KiB of WAL: warned (once per
    // crossing; an idle slot may keep none and cross again).
    assert!(
        value(&m, "sluice_wal_warnings_total", &[("reason", "retained")]).unwrap() >= 1.0,
        "{m}"
    );
    assert_eq!(
        value(&m, "sluice_slot_retained_wal_limit_bytes", &[]),
        Some(1024.0)
    );
    assert!(p
        .last_log()
        .contains("retains more WAL than source.postgres.max_retained_wal"));
    // The heartbeat is consumed: nothing but the two tables in ClickHouse.
    let tables = ch_query(&format!(
        "SELECT name FROM system.tables WHERE database = '{}' ORDER BY name",
        p.ch_db
    ))
    .await;
    assert_eq!(tsv_lines(&tables), vec!["bad", "good"]);
    assert!(
        max_lag_seconds > 0.0,
        "lag in seconds never measured during the load"
    );

    // A table the sink must stop shows in its gauge; the pipeline stays ready.
    db.client
        .batch_execute(
            "ALTER TABLE bad ALTER COLUMN v TYPE boolean USING v <> 0;
             INSERT INTO bad VALUES (100, true);",
        )
        .await
        .unwrap();
    wait_for(
        "bad's state gauge to say failed",
        Duration::from_secs(60),
        || async {
            let m = scrape(port).await;
            (value(
                &m,
                "sluice_table_state",
                &[("table", "public.bad"), ("state", "failed")],
            ) == Some(1.0))
            .then_some(m)
        },
    )
    .await;
    let m = scrape(port).await;
    assert_eq!(
        value(
            &m,
            "sluice_table_state",
            &[("table", "public.bad"), ("state", "streaming")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &m,
            "sluice_table_state",
            &[("table", "public.good"), ("state", "streaming")]
        ),
        Some(1.0)
    );
    assert!(value(&m, "sluice_errors_total", &[("class", "table")]).unwrap() >= 1.0);
    wait_ready(port, true, Duration::from_secs(10)).await;

    // status --json for scripts.
    let out = std::process::Command::new(sluice_bin())
        .args(["status", "--json", "-c"])
        .arg(&p.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["slot"]["wal_status"], "reserved");
    let states: Vec<(String, String)> = status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_owned(),
                t["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("public.good".to_owned(), "streaming".to_owned()),
            ("public.bad".to_owned(), "failed".to_owned())
        ]
    );
    assert!(status["tables"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("type"));
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_unready_while_clickhouse_is_down_and_ready_after() {
    let mut ch = OwnClickHouse::start();
    let db = fresh_db("e2e_ready").await;
    db.client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v int);
             INSERT INTO t SELECT g, g FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    let (mut p, port) = ops_pipeline(&db.url, &["public.t"], &ch.url, "");
    let mut sluice = p.spawn(&[]);
    wait_ready(port, true, Duration::from_secs(90)).await;

    ch.stop();
    db.client
        .batch_execute("INSERT INTO t SELECT g, g FROM generate_series(11, 20) g")
        .await
        .unwrap();
    wait_ready(port, false, Duration::from_secs(30)).await;
    let (_, why) = get(port, "/readyz").await.unwrap();
    assert!(why.contains("sink"), "{why}");
    let m = scrape(port).await;
    assert_eq!(value(&m, "sluice_ready", &[]), Some(0.0), "{m}");
    assert_eq!(
        get(port, "/healthz").await.map(|(c, _)| c),
        Some(200),
        "alive while unready"
    );

    ch.restart();
    wait_ready(port, true, Duration::from_secs(120)).await;
    wait_equal(
        &p,
        &db.client,
        "SELECT id::text, v::text FROM t ORDER BY id",
        &format!(
            "SELECT toString(id), toString(v) FROM `{}`.t FINAL WHERE _is_deleted = 0 ORDER BY id",
            p.ch_db
        ),
        Duration::from_secs(60),
    )
    .await;
    let m = scrape(port).await;
    assert!(value(&m, "sluice_errors_total", &[("class", "transient")]).unwrap() >= 1.0);
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
}

/// Writes WAL until the slot is invalidated (max_slot_wal_keep_size).
async fn lose_slot(client: &tokio_postgres::Client, slot: &str) {
    let start = Instant::now();
    loop {
        let status = pg_tsv(
            client,
            &format!("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        )
        .await
        .concat();
        if status == "lost" {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the slot was not invalidated (wal_status {status})"
        );
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS junk (v text);
                 INSERT INTO junk SELECT repeat('x', 1000) FROM generate_series(1, 20000);
                 TRUNCATE junk;
                 SELECT pg_switch_wal();
                 CHECKPOINT;",
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_slot_is_recreated_and_every_table_copied_again_and_the_shipped_rules_name_live_metrics(
) {
    let pg = OwnPostgres::start(&[
        "max_slot_wal_keep_size=32MB",
        "wal_keep_size=0",
        "min_wal_size=32MB",
        "max_wal_size=64MB",
    ]);
    let client = connect(&pg.url).await;
    client
        .batch_execute(
            "CREATE TABLE a (id int PRIMARY KEY, v text);
             CREATE TABLE b (id int PRIMARY KEY, v text);
             INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 500) g;
             INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 500) g;
             ANALYZE a; ANALYZE b;",
        )
        .await
        .unwrap();
    let (mut p, port) = ops_pipeline(
        &pg.url,
        &["public.a", "public.b"],
        &servers().clickhouse_url,
        "on_slot_lost = \"resync\"\nmax_retained_wal = \"8MiB\"",
    );
    let pg_sql = |t: &str| format!("SELECT id::text, v FROM {t} ORDER BY id");
    let ch_db = p.ch_db.clone();
    let ch_sql = |t: &str| {
        format!("SELECT toString(id), v FROM `{ch_db}`.{t} FINAL WHERE _is_deleted = 0 ORDER BY id")
    };
    let mut sluice = p.spawn(&[]);
    wait_ready(port, true, Duration::from_secs(90)).await;
    wait_equal(
        &p,
        &client,
        &pg_sql("a"),
        &ch_sql("a"),
        Duration::from_secs(60),
    )
    .await;
    p.terminate_ok(&mut sluice, Duration::from_secs(30));

    // While sluice is stopped: changes, and enough WAL to lose the slot.
    client
        .batch_execute(
            "DELETE FROM a WHERE id <= 100;
             UPDATE b SET v = 'changed' WHERE id % 7 = 0;
             INSERT INTO a SELECT g, 'new' || g FROM generate_series(1001, 1200) g;",
        )
        .await
        .unwrap();
    lose_slot(&client, &p.name).await;

    let mut sluice = p.spawn(&[]);
    for t in ["a", "b"] {
        wait_equal(
            &p,
            &client,
            &pg_sql(t),
            &ch_sql(t),
            Duration::from_secs(120),
        )
        .await;
    }
    wait_ready(port, true, Duration::from_secs(60)).await;
    let m = scrape(port).await;
    assert_eq!(
        value(&m, "sluice_slot_recoveries_total", &[]),
        Some(1.0),
        "{m}"
    );
    wait_for(
        "the new slot's wal_status",
        Duration::from_secs(30),
        || async {
            let m = scrape(port).await;
            (value(&m, "sluice_slot_wal_status", &[("status", "reserved")]) == Some(1.0)
                && value(&m, "sluice_slot_wal_status", &[("status", "lost")]) == Some(0.0))
            .then_some(())
        },
    )
    .await;
    assert!(
        p.last_log().contains("starting over"),
        "{}",
        tail(&p.last_log(), 40)
    );
    // Streaming again after the recovery.
    client
        .batch_execute("INSERT INTO b VALUES (9999, 'after')")
        .await
        .unwrap();
    wait_equal(
        &p,
        &client,
        &pg_sql("b"),
        &ch_sql("b"),
        Duration::from_secs(60),
    )
    .await;

    // Every metric the shipped dashboard and alert rules name is in this
    // live scrape.
    let m = scrape(port).await;
    let live = names(&m);
    let root = repo_root();
    for file in [RULES, DASHBOARD] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let named = named_metrics(&text);
        assert!(named.len() >= 5, "{file} names {named:?}");
        let missing: Vec<_> = named.difference(&live).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics missing from /metrics: {missing:?}\n{m}"
        );
    }
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
}

#[test]
fn the_alert_rules_pass_promtool_and_the_dashboard_is_grafana_json() {
    let root = repo_root();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join(RULES))
        .output()
        .expect("promtool (Debian package prometheus; scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = std::fs::read_to_string(root.join(RULES)).unwrap();
    for alert in [
        "SluiceReplicationLagHigh",
        "SluiceWalRetainedHigh",
        "SluiceSlotUnreserved",
        "SluiceSlotLost",
        "SluiceNoProgress",
        "SluiceTableFailed",
        "SluiceSnapshotStalled",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}")),
            "{alert} missing"
        );
    }
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(DASHBOARD)).unwrap()).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            assert!(t["expr"].as_str().unwrap().contains("sluice_"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_lost_while_running_is_recreated_and_every_table_copied_again() {
    let pg = OwnPostgres::start(&[
        "max_slot_wal_keep_size=32MB",
        "wal_keep_size=0",
        "min_wal_size=32MB",
        "max_wal_size=64MB",
    ]);
    let mut ch = OwnClickHouse::start();
    let client = connect(&pg.url).await;
    client
        .batch_execute(
            "CREATE TABLE a (id int PRIMARY KEY, v text);
             INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 300) g;",
        )
        .await
        .unwrap();
    let (mut p, port) = ops_pipeline(&pg.url, &["public.a"], &ch.url, "on_slot_lost = \"resync\"");
    let pg_sql = "SELECT id::text, v FROM a ORDER BY id";
    let ch_sql = format!(
        "SELECT toString(id), v FROM `{}`.a FINAL WHERE _is_deleted = 0 ORDER BY id",
        p.ch_db
    );
    let mut sluice = p.spawn(&[]);
    wait_ready(port, true, Duration::from_secs(90)).await;
    wait_equal(&p, &client, pg_sql, &ch_sql, Duration::from_secs(60)).await;

    // ClickHouse goes away, so sluice cannot confirm; the slot falls behind
    // and is invalidated (its walsender terminated) while sluice runs.
    ch.stop();
    client
        .batch_execute(
            "DELETE FROM a WHERE id <= 50;
             INSERT INTO a SELECT g, 'new' || g FROM generate_series(1001, 1100) g;",
        )
        .await
        .unwrap();
    lose_slot(&client, &p.name).await;
    ch.restart();

    wait_equal(&p, &client, pg_sql, &ch_sql, Duration::from_secs(180)).await;
    wait_for(
        "the recovery to be counted",
        Duration::from_secs(30),
        || async {
            let m = scrape(port).await;
            (value(&m, "sluice_slot_recoveries_total", &[]) == Some(1.0)).then_some(())
        },
    )
    .await;
    assert!(
        p.last_log().contains("starting over"),
        "{}",
        tail(&p.last_log(), 40)
    );
    client
        .batch_execute("INSERT INTO a VALUES (5000, 'after')")
        .await
        .unwrap();
    wait_equal(&p, &client, pg_sql, &ch_sql, Duration::from_secs(60)).await;
    wait_ready(port, true, Duration::from_secs(60)).await;
    p.terminate_ok(&mut sluice, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_heartbeat_the_user_may_not_send() {
    let db = fresh_db("e2e_ops_hb").await;
    let user = unique_name("hb_user");
    db.client
        .batch_execute(&format!(
            "CREATE TABLE t (id int PRIMARY KEY);
             CREATE ROLE {user} LOGIN REPLICATION;
             GRANT SELECT ON t TO {user};
             REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) FROM PUBLIC;"
        ))
        .await
        .unwrap();
    let url = url_with(&db.url, &db.name, Some((&user, None)));
    let p = TestPipeline::new(&url, &["public.t"], "");
    let check = |p: &TestPipeline| {
        let out = std::process::Command::new(sluice_bin())
            .args(["check", "-c"])
            .arg(&p.config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = check(&p);
    assert!(
        text.contains(&format!(
            "FAIL postgres: heartbeat: user \"{user}\" may not call pg_logical_emit_message"
        )),
        "{text}"
    );
    p.edit_config(
        "status_interval = \"1s\"",
        "status_interval = \"1s\"\nheartbeat_interval = \"0s\"",
    );
    let off = check(&p);
    let _ = db
        .client
        .batch_execute(&format!("DROP OWNED BY {user}; DROP ROLE {user};"))
        .await;
    assert!(off.contains("credentials accepted"), "{off}");
    assert!(!off.contains("heartbeat"), "{off}");
}
