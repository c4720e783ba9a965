//! Secure operation end to end: ClickHouse over HTTPS verified against a CA
//! the test makes, with a user and password the server enforces; PostgreSQL
//! as a least-privilege role (REPLICATION plus SELECT on the published
//! tables; the publication made by an administrator); no password in any
//! output or file; state and spill directories owner-only. Also: a missing
//! CA and a wrong password are clear errors that are not retried, and
//! `sluice check` names each missing PostgreSQL privilege.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::certs::make_test_certs;
use crate::support::e2e::*;
use crate::support::*;

const CH_USER: &str = "sluice_writer";
const CH_PASSWORD: &str = "ch-S3cret-Pa55word";
const PG_PASSWORD: &str = "pg-S3cret-Pa55word";

const T1_PG: &str = "SELECT id::text, coalesce(v, '<null>') FROM t1 ORDER BY id";
const T2_PG: &str = "SELECT id::text, n::text FROM \"T 2\" ORDER BY id";

fn t1_ch(db: &str) -> String {
    format!("SELECT toString(id), ifNull(v, '<null>') FROM `{db}`.t1 FINAL WHERE _is_deleted = 0 ORDER BY id")
}

fn t2_ch(db: &str) -> String {
    format!("SELECT toString(id), toString(n) FROM `{db}`.`T 2` FINAL WHERE _is_deleted = 0 ORDER BY id")
}

/// `sluice ARGS -c CONFIG`: (success, stdout + stderr).
fn sluice(args: &[&str], config: &Path) -> (bool, String) {
    sluice_output(args, config, &[])
}

/// A login role that may replicate, authenticated by scram-sha-256, and
/// nothing else yet.
async fn scram_role(prefix: &str, replication: bool) -> String {
    let admin = connect(&servers().pg_url).await;
    let user = unique_name(prefix);
    let repl = if replication { "REPLICATION" } else { "" };
    admin
        .batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE {user} LOGIN {repl} PASSWORD '{PG_PASSWORD}';
             GRANT sluice_scram_auth TO {user};"
        ))
        .await
        .unwrap();
    user
}

fn private_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics listener");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
}

/// Runs `sluice run` until it exits by itself (a fatal error), at most `limit`.
fn run_until_exit(p: &mut TestPipeline, limit: Duration) -> String {
    p.run_until_exit(&[], limit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_password_and_least_privilege_end_to_end_with_no_secret_anywhere() {
    let certs = make_test_certs();
    let users = private_file(&certs, "users", &format!("{CH_USER}:{CH_PASSWORD}\n"));
    let ch = OwnClickHouse::start_with(&[
        "--users-file",
        users.to_str().unwrap(),
        "--tls-cert",
        certs.join("server.pem").to_str().unwrap(),
        "--tls-key",
        certs.join("server.key").to_str().unwrap(),
    ]);
    assert!(ch.url.starts_with("https://"));

    let db = fresh_db("secure").await;
    db.client
        .batch_execute(
            "CREATE TABLE t1 (id int PRIMARY KEY, v text);
             CREATE TABLE \"T 2\" (id bigint PRIMARY KEY, n numeric);
             CREATE TABLE private_notes (id int PRIMARY KEY, note text);
             INSERT INTO t1 SELECT g, 'v' || g FROM generate_series(1, 200) g;
             INSERT INTO \"T 2\" SELECT g, g * 1.5 FROM generate_series(1, 100) g;",
        )
        .await
        .unwrap();
    let role = scram_role("least", true).await;
    let pg_pw = private_file(&certs, "pg.pw", &format!("{PG_PASSWORD}\n"));
    let ch_pw = private_file(&certs, "ch.pw", &format!("{CH_PASSWORD}\n"));
    let metrics_port = free_port();
    let role_url = url_with(&servers().pg_url, &db.name, Some((&role, None)));
    let mut p = TestPipeline::with_clickhouse(
        &role_url,
        &["public.t1", "public.\"T 2\""],
        &format!(
            "user = \"{CH_USER}\"\npassword_file = \"{}\"\nssl_root_cert = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"",
            ch_pw.display(),
            certs.join("ca.pem").display()
        ),
        &ch.url,
    );
    p.ch_from_config = true;
    p.edit_config(
        "status_interval = \"1s\"",
        &format!(
            "status_interval = \"1s\"\npassword_file = \"{}\"\ncreate_publication = false",
            pg_pw.display()
        ),
    );
    let state_dir = p.dir.join("state");
    p.edit_config(
        &format!("checkpoint_dir = \"{}\"", p.dir.display()),
        &format!("checkpoint_dir = \"{}\"", state_dir.display()),
    );
    // The administrator's part: the publication and read access to exactly
    // the published tables (not private_notes).
    db.client
        .batch_execute(&format!(
            "CREATE PUBLICATION \"{pub_}\" FOR TABLE t1, \"T 2\";
             GRANT SELECT ON t1, \"T 2\" TO {role};",
            pub_ = p.name
        ))
        .await
        .unwrap();

    let (ok, check) = sluice(&["check"], &p.config);
    assert!(ok, "check failed:\n{check}");
    assert!(!check.contains("FAIL"), "{check}");
    assert!(
        check.contains(&format!("user \"{CH_USER}\" accepted")),
        "{check}"
    );

    let mut run = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    db.client
        .batch_execute(
            "INSERT INTO t1 SELECT g, NULL FROM generate_series(201, 300) g;
             UPDATE t1 SET v = 'changed' WHERE id % 7 = 0;
             DELETE FROM t1 WHERE id % 11 = 0;
             UPDATE \"T 2\" SET n = n * 2 WHERE id <= 50;
             DELETE FROM \"T 2\" WHERE id > 90;",
        )
        .await
        .unwrap();
    let t = Duration::from_secs(90);
    wait_equal(&p, &db.client, T1_PG, &t1_ch(&p.ch_db), t).await;
    wait_equal(&p, &db.client, T2_PG, &t2_ch(&p.ch_db), t).await;

    let metrics = scrape(metrics_port);
    assert!(metrics.contains("200 OK"), "{metrics}");
    let (status_ok, status) = sluice(&["status"], &p.config);
    assert!(status_ok, "{status}");
    let exit = terminate(&mut run, Duration::from_secs(30));
    assert!(exit.success(), "{}", p.last_log());

    // Owner-only state directory.
    let mode = std::fs::metadata(&state_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "checkpoint_dir mode");

    // No password anywhere: logs (debug level), check, status, metrics, state files.
    let mut outputs = vec![
        ("run log".to_string(), p.last_log().into_bytes()),
        ("check".to_string(), check.into_bytes()),
        ("status".to_string(), status.into_bytes()),
        ("metrics".to_string(), metrics.into_bytes()),
    ];
    let mut files = Vec::new();
    files_under(&state_dir, &mut files);
    assert!(!files.is_empty());
    outputs.extend(files.into_iter().map(|(p, b)| (p.display().to_string(), b)));

    // Without the CA: a clear TLS error naming the setting, not retried.
    p.edit_config(
        &format!("ssl_root_cert = \"{}\"", certs.join("ca.pem").display()),
        "",
    );
    let (ok, no_ca) = sluice(&["check"], &p.config);
    assert!(!ok && no_ca.contains("FAIL"), "{no_ca}");
    assert!(no_ca.contains("certificate"), "{no_ca}");
    assert!(no_ca.contains("ssl_root_cert"), "{no_ca}");
    let no_ca_run = run_until_exit(&mut p, Duration::from_secs(60));
    assert!(no_ca_run.contains("TLS to ClickHouse"), "{no_ca_run}");
    outputs.push(("check without CA".into(), no_ca.into_bytes()));
    outputs.push(("run without CA".into(), no_ca_run.into_bytes()));

    for (what, bytes) in &outputs {
        for secret in [CH_PASSWORD, PG_PASSWORD] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{what} shows a password"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&certs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_clickhouse_password_is_a_clear_error_that_is_not_retried() {
    let dir = std::env::temp_dir().join(unique_name("ch_auth"));
    std::fs::create_dir_all(&dir).unwrap();
    let users = private_file(&dir, "users", &format!("{CH_USER}:{CH_PASSWORD}\n"));
    let ch = OwnClickHouse::start_with(&["--users-file", users.to_str().unwrap()]);
    let wrong = "Wr0ng-Pa55word-zz";
    let wrong_file = private_file(&dir, "wrong.pw", wrong);

    let db = fresh_db("ch_auth").await;
    db.client
        .batch_execute("CREATE TABLE t1 (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let mut p = TestPipeline::with_clickhouse(
        &db.url,
        &["public.t1"],
        &format!(
            "user = \"{CH_USER}\"\npassword_file = \"{}\"",
            wrong_file.display()
        ),
        &ch.url,
    );
    let (ok, check) = sluice(&["check"], &p.config);
    assert!(!ok, "{check}");
    let expected = format!("ClickHouse rejected the credentials of user \"{CH_USER}\"");
    assert!(check.contains(&expected), "{check}");
    let run = run_until_exit(&mut p, Duration::from_secs(60));
    assert!(run.contains(&expected), "{run}");
    for text in [&check, &run] {
        assert!(!text.contains(wrong), "the password leaked: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn check_names_each_missing_postgres_privilege() {
    let db = fresh_db("privs").await;
    db.client
        .batch_execute(
            "CREATE TABLE readable (id int PRIMARY KEY);
             CREATE TABLE secret_stuff (id int PRIMARY KEY);
             CREATE SCHEMA hidden;
             CREATE TABLE hidden.t (id int PRIMARY KEY);",
        )
        .await
        .unwrap();
    let role = scram_role("noprivs", false).await;
    db.client
        .batch_execute(&format!("GRANT SELECT ON readable TO {role}"))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(unique_name("privs"));
    std::fs::create_dir_all(&dir).unwrap();
    let pg_pw = private_file(&dir, "pg.pw", PG_PASSWORD);
    let url = url_with(&servers().pg_url, &db.name, Some((&role, None)));
    let p = TestPipeline::new(
        &url,
        &["public.readable", "public.secret_stuff", "hidden.t"],
        "",
    );
    p.edit_config(
        "status_interval = \"1s\"",
        &format!(
            "status_interval = \"1s\"\npassword_file = \"{}\"",
            pg_pw.display()
        ),
    );
    let (ok, check) = sluice(&["check"], &p.config);
    assert!(!ok, "{check}");
    for needle in [
        format!("user \"{role}\" may not replicate: ALTER ROLE"),
        format!("user \"{role}\" lacks SELECT on public.secret_stuff"),
        "GRANT SELECT ON \"public\".\"secret_stuff\" TO".to_string(),
        format!("user \"{role}\" lacks USAGE on schema hidden: GRANT USAGE ON SCHEMA"),
    ] {
        assert!(check.contains(&needle), "missing {needle:?} in:\n{check}");
    }
    assert!(
        !check.contains("lacks SELECT on public.readable"),
        "{check}"
    );
    assert!(!check.contains(PG_PASSWORD));
    let _ = std::fs::remove_dir_all(&dir);
}
