//! Authentication of the replication connection: md5, scram-sha-256 and
//! cleartext users connect; a wrong password fails clearly without showing it.

use crate::support::*;
use sluice::secret::Secret;
use sluice::source::postgres::replication::ReplicationConnection;
use sluice::source::postgres::{catalog, SourceError};

/// Creates a login role authenticated by `method` (see scripts/pg-instance.sh:
/// membership in sluice_<method>_auth selects the pg_hba method).
async fn role(method: &str, password: &str) -> String {
    let admin = connect(&servers().pg_url).await;
    let user = unique_name(&format!("{method}_u"));
    let encryption = if method == "md5" {
        "md5"
    } else {
        "scram-sha-256"
    };
    admin
        .batch_execute(&format!(
            "SET password_encryption = '{encryption}';
             CREATE ROLE {user} LOGIN REPLICATION PASSWORD '{password}';
             GRANT sluice_{method}_auth TO {user};"
        ))
        .await
        .unwrap();
    user
}

fn info(user: &str, password: &str) -> sluice::config::PgConnInfo {
    let mut i = conn_info(&servers().pg_url);
    i.user = user.to_owned();
    i.password = Some(Secret::new(password));
    i
}

async fn replication_connects(method: &str) {
    let pw = "Corr3ct-horse";
    let user = role(method, pw).await;
    let mut conn = ReplicationConnection::connect(&info(&user, pw), &[])
        .await
        .unwrap_or_else(|e| panic!("{method} user could not connect: {e}"));
    let id = conn.identify_system().await.unwrap();
    assert!(!id.system_id.is_empty());
    assert!(id.xlogpos.0 > 0);
    conn.wire.close().await;
}

#[tokio::test]
async fn md5_user_connects() {
    replication_connects("md5").await;
}

#[tokio::test]
async fn scram_user_connects() {
    replication_connects("scram").await;
}

#[tokio::test]
async fn cleartext_password_user_connects() {
    replication_connects("password").await;
}

#[tokio::test]
async fn wrong_password_fails_clearly_without_showing_it() {
    for method in ["md5", "scram", "password"] {
        let user = role(method, "the-right-one").await;
        let wrong = "Wr0ng-S3cret-Value";
        let err = match ReplicationConnection::connect(&info(&user, wrong), &[]).await {
            Ok(_) => panic!("{method}: a wrong password was accepted"),
            Err(e) => e,
        };
        assert!(
            matches!(err, SourceError::AuthFailed { .. }),
            "{method}: {err:?}"
        );
        let text = format!("{err} {err:?}");
        assert!(text.contains("authentication failed"), "{method}: {text}");
        assert!(text.contains(&user), "{method}: names the user: {text}");
        assert!(!text.contains(wrong), "{method}: password leaked: {text}");
        assert!(
            !err.is_retryable(),
            "a wrong password is not worth retrying"
        );

        // The ordinary (catalog) connection says the same.
        let Err(err) = catalog::connect(&info(&user, wrong)).await else {
            panic!("{method}: a wrong password was accepted by the catalog connection");
        };
        let text = format!("{err} {err:?}");
        assert!(
            matches!(err, SourceError::AuthFailed { .. }),
            "{method}: {text}"
        );
        assert!(!text.contains(wrong), "{method}: password leaked: {text}");
    }
}

#[tokio::test]
async fn missing_password_says_what_to_configure() {
    let user = role("scram", "pw-123456").await;
    let mut i = info(&user, "x");
    i.password = None;
    let Err(err) = ReplicationConnection::connect(&i, &[]).await else {
        panic!("connected without a password");
    };
    assert!(err.to_string().contains("none is configured"), "{err}");
}
