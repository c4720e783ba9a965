//! TLS and SASL to Kafka brokers. TLS: an own broker behind a
//! TLS-terminating proxy (support::kafka_tls; the broker itself speaks
//! plaintext and advertises the proxy), with `security_protocol = "SSL"`
//! and the test CA: every change arrives and rebuilds equal tables; a CA
//! that did not sign the broker's certificate is a clear error that is not
//! retried. SASL: an own broker with authentication on rejects the login
//! (SCRAM over plaintext, and over TLS through the proxy); sluice says so
//! clearly, does not retry, and never shows the password. (A successful
//! SASL login is not tested: the test broker cannot store SCRAM users; see
//! docs/kafka-sink.md, "TLS and SASL".)

use std::path::Path;
use std::time::Duration;

use crate::e2e_kafka::{checks, wait_kafka_equal, BIG, SCHEMA, TABLES};
use crate::support::certs::make_test_certs;
use crate::support::e2e::*;
use crate::support::kafka::ChangeLog;
use crate::support::kafka_tls::TlsKafka;
use crate::support::*;

const SASL_USER: &str = "sluice_producer";
const WRONG_PASSWORD: &str = "Wr0ng-Kafka-Pa55word";

fn tls_sink(ca: &Path) -> String {
    format!(
        "security_protocol = \"SSL\"\n[sink.kafka.properties]\n\"ssl.ca.location\" = \"{}\"",
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_through_a_proxy_delivers_every_change() {
    let kafka = TlsKafka::start(false);
    let db = fresh_db("kafka_tls").await;
    db.client.batch_execute(SCHEMA).await.unwrap();
    db.client
        .batch_execute(
            "INSERT INTO orders SELECT g, 'c' || g, g * 1.5, 'small' FROM generate_series(1, 20) g;
             INSERT INTO lines SELECT g / 5, g % 5, g FROM generate_series(1, 20) g;
             INSERT INTO audit SELECT g, g, 'p' FROM generate_series(1, 5) g;",
        )
        .await
        .unwrap();
    let mut p =
        TestPipeline::with_kafka_brokers(&db.url, &TABLES, &tls_sink(&kafka.ca), &kafka.brokers);
    let (ok, check) = sluice_output(&["check"], &p.config, &[]);
    assert!(ok, "check failed:\n{check}");
    assert!(
        check.contains(&format!("ok   kafka: brokers {} reachable", kafka.brokers)),
        "{check}"
    );

    let mut run = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    let topics: Vec<String> = TABLES.iter().map(|t| p.topic(t)).collect();
    let mut log = ChangeLog::open_with(&kafka.brokers, &topics, &kafka.client_settings());
    db.client
        .batch_execute(&format!(
            "INSERT INTO orders SELECT g, 'n' || g, g, {BIG} FROM generate_series(21, 30) g;
             UPDATE orders SET amount = amount + 1 WHERE id IN (3, 22);
             UPDATE orders SET id = id + 1000 WHERE id = 7;
             DELETE FROM orders WHERE id IN (1, 2);
             UPDATE lines SET qty = qty * 10 WHERE order_id = 1;
             DELETE FROM lines WHERE order_id = 2;
             UPDATE audit SET n = n + 100 WHERE id <= 3;
             DELETE FROM audit WHERE id = 4;"
        ))
        .await
        .unwrap();
    wait_kafka_equal(&p, &mut log, &db.client, &checks(), Duration::from_secs(90)).await;

    let c = log.counts.clone();
    println!("kafka over TLS: {c:?}");
    let op = |o: &str| c.ops.get(o).copied().unwrap_or(0);
    assert_eq!(op("r"), 20 + 20 + 5, "snapshot reads: {c:?}");
    assert!(op("c") >= 10 && op("u") > 0 && op("d") > 0, "{c:?}");
    assert_eq!(c.tombstones, op("d"), "{c:?}");
    p.terminate_ok(&mut run, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_another_ca_is_a_clear_error_that_is_not_retried() {
    let kafka = TlsKafka::start(false);
    let other = make_test_certs();
    let db = fresh_db("kafka_bad_ca").await;
    db.client
        .batch_execute("CREATE TABLE t1 (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let mut p = TestPipeline::with_kafka_brokers(
        &db.url,
        &["public.t1"],
        &tls_sink(&other.join("ca.pem")),
        &kafka.brokers,
    );
    let expected = format!("FAIL kafka: TLS to the Kafka brokers {}", kafka.brokers);
    let (ok, check) = sluice_output(&["check"], &p.config, &[]);
    assert!(!ok, "{check}");
    assert!(check.contains(&expected), "{check}");
    assert!(check.contains("certificate verify failed"), "{check}");
    assert!(check.contains("ssl.ca.location"), "{check}");
    let run = p.run_until_exit(&[], Duration::from_secs(60));
    assert!(
        run.contains(&format!("TLS to the Kafka brokers {}", kafka.brokers)),
        "{}",
        tail(&run, 20)
    );
    let _ = std::fs::remove_dir_all(&other);
}

/// The config of a pipeline that logs in as `SASL_USER` with `protocol`;
/// the password comes from `password` (a config value).
fn sasl_sink(protocol: &str, password: &str, ca: Option<&Path>) -> String {
    let mut s = format!(
        "security_protocol = \"{protocol}\"\nsasl_mechanism = \"SCRAM-SHA-256\"\nsasl_username = \"{SASL_USER}\"\n{password}\n"
    );
    if let Some(ca) = ca {
        s += &format!(
            "[sink.kafka.properties]\n\"ssl.ca.location\" = \"{}\"\n",
            ca.display()
        );
    }
    s
}

/// `sluice check` and `sluice run` against a broker that rejects the login:
/// both say so (and what to check), `run` stops instead of retrying, and
/// neither shows the password.
async fn rejected_login(p: &mut TestPipeline, brokers: &str, env: &[(&str, &str)]) {
    let expected = format!("the Kafka brokers {brokers} rejected the login");
    let (ok, check) = sluice_output(&["check"], &p.config, env);
    assert!(!ok, "{check}");
    assert!(
        check.contains(&format!("FAIL kafka: {expected}")),
        "{check}"
    );
    assert!(check.contains("SASL"), "{check}");
    assert!(check.contains("sasl_password"), "{check}");
    let run = p.run_until_exit(env, Duration::from_secs(60));
    assert!(run.contains(&expected), "{}", tail(&run, 20));
    for text in [&check, &run] {
        assert!(
            !text.contains(WRONG_PASSWORD),
            "the password leaked: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_sasl_login_is_a_clear_error_without_the_password() {
    let kafka = OwnKafka::start_with(KafkaOptions {
        authentication: true,
        ..KafkaOptions::default()
    });
    let db = fresh_db("kafka_sasl").await;
    db.client
        .batch_execute("CREATE TABLE t1 (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    // The password from a file.
    let dir = std::env::temp_dir().join(unique_name("kafka_sasl"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kafka.pw");
    std::fs::write(&file, WRONG_PASSWORD).unwrap();
    let mut p = TestPipeline::with_kafka_brokers(
        &db.url,
        &["public.t1"],
        &sasl_sink(
            "SASL_PLAINTEXT",
            &format!("sasl_password_file = \"{}\"", file.display()),
            None,
        ),
        &kafka.brokers,
    );
    rejected_login(&mut p, &kafka.brokers, &[]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_over_tls_reaches_the_login_and_a_rejected_one_is_a_clear_error() {
    let kafka = TlsKafka::start(true);
    let db = fresh_db("kafka_sasl_ssl").await;
    db.client
        .batch_execute("CREATE TABLE t1 (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    // The password from the environment; the TLS handshake succeeds, so the
    // error is the broker's answer to the login.
    let mut p = TestPipeline::with_kafka_brokers(
        &db.url,
        &["public.t1"],
        &sasl_sink(
            "SASL_SSL",
            "sasl_password = \"${SLUICE_TEST_KAFKA_PASSWORD}\"",
            Some(&kafka.ca),
        ),
        &kafka.brokers,
    );
    rejected_login(
        &mut p,
        &kafka.brokers,
        &[("SLUICE_TEST_KAFKA_PASSWORD", WRONG_PASSWORD)],
    )
    .await;
}
