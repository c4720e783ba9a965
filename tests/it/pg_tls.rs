//! TLS to PostgreSQL (rustls): verified against a CA the test makes, for the
//! replication connection and the catalog connection; clear errors when the
//! certificate cannot be verified or the server has no TLS.

use std::path::PathBuf;

use crate::support::certs::make_test_certs;
use crate::support::*;
use sluice::config::SslMode;
use sluice::source::postgres::replication::ReplicationConnection;
use sluice::source::postgres::{catalog, SourceError};

fn info(url: &str, mode: SslMode, root: Option<PathBuf>) -> sluice::config::PgConnInfo {
    let mut i = conn_info(url);
    i.ssl_mode = mode;
    i.ssl_root_cert = root;
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_verify_the_server() {
    let certs = make_test_certs();
    let cert = format!("ssl_cert_file={}", certs.join("server.pem").display());
    let key = format!("ssl_key_file={}", certs.join("server.key").display());
    let pg = OwnPostgres::start(&["ssl=on", &cert, &key]);
    let ca = Some(certs.join("ca.pem"));

    // Replication connection over verified TLS.
    let mut repl =
        ReplicationConnection::connect(&info(&pg.url, SslMode::Require, ca.clone()), &[])
            .await
            .unwrap_or_else(|e| panic!("TLS replication connection: {e}"));
    let ssl = repl
        .wire
        .simple_query("SELECT ssl::text AS ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .unwrap();
    assert_eq!(ssl.first("ssl"), Some("true"));
    assert!(repl.identify_system().await.unwrap().xlogpos.0 > 0);
    repl.wire.close().await;

    // Catalog connection over verified TLS.
    let client = catalog::connect(&info(&pg.url, SslMode::Require, ca.clone()))
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));

    // Without the CA the certificate cannot be verified: a clear, fatal error.
    for result in [
        ReplicationConnection::connect(&info(&pg.url, SslMode::Require, None), &[])
            .await
            .err(),
        catalog::connect(&info(&pg.url, SslMode::Require, None))
            .await
            .err(),
    ] {
        let e = result.expect("an unverifiable certificate must be refused");
        assert!(matches!(e, SourceError::Tls(_)), "{e:?}");
        assert!(
            e.to_string().contains("ssl_root_cert"),
            "says what to set: {e}"
        );
        assert!(!e.is_retryable());
    }

    // prefer: falls back to a plain connection, as libpq does.
    let mut plain = ReplicationConnection::connect(&info(&pg.url, SslMode::Prefer, None), &[])
        .await
        .unwrap();
    let ssl = plain
        .wire
        .simple_query("SELECT ssl::text AS ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .unwrap();
    assert_eq!(ssl.first("ssl"), Some("false"));
    let _ = std::fs::remove_dir_all(&certs);
}

#[tokio::test]
async fn require_against_a_server_without_tls_is_refused() {
    // The shared test server runs with ssl = off.
    let Err(e) =
        ReplicationConnection::connect(&info(&servers().pg_url, SslMode::Require, None), &[]).await
    else {
        panic!("connected without TLS despite sslmode=require");
    };
    assert!(e.to_string().contains("does not accept TLS"), "{e}");
    let mut ok =
        ReplicationConnection::connect(&info(&servers().pg_url, SslMode::Prefer, None), &[])
            .await
            .unwrap();
    ok.identify_system().await.unwrap();
}
