//! ClickHouse sink over the HTTP interface (the `clickhouse` crate): creates
//! and evolves `ReplacingMergeTree(_version, _is_deleted)` tables, and writes
//! each micro-batch as one synchronous `INSERT ... FORMAT ArrowStream`.
//! Decisions and the type mapping: `docs/clickhouse-sink.md`. `keys.rs`
//! lists a table's live keys for the reconcile of polled tables.

mod ddl;
mod encode;
mod health;
mod keys;
mod sink;
mod stream;
mod toast;
mod types;

use std::time::Duration;

use clickhouse::{Client, Compression};
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;

use super::SinkError;
use crate::config::ClickHouseSinkConfig;
use crate::secret::redact;

pub use ddl::TableKind;
pub use health::healthcheck;
pub use keys::ClickHouseKeys;
pub use sink::ClickHouseSink;
pub use types::ServerCaps;

/// ClickHouse error codes that clear up on their own: timeouts, too many
/// parts/queries, memory limits, network and replica trouble.
const RETRYABLE_CODES: &[u32] = &[159, 164, 202, 203, 209, 210, 241, 242, 252, 319, 425, 999];

/// How long an idle pooled connection is kept; below the server's default
/// keep-alive timeout (3 s), so the pool never reuses one the server closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A client for the configured server, over HTTP or HTTPS (rustls; the
/// certificate and host name are always verified, against the web roots plus
/// `ssl_root_cert`). Compression is off: the HTTP body is already a compact
/// Arrow stream, and any ClickHouse HTTP endpoint accepts it.
pub fn client(cfg: &ClickHouseSinkConfig) -> Result<Client, SinkError> {
    let tls = crate::tls::client_config(
        "sink.clickhouse.ssl_root_cert",
        cfg.ssl_root_cert.as_deref(),
    )
    .map_err(|e| SinkError::ClickHouseTls { message: e.0 })?;
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let http_client = HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector);
    Ok(Client::with_http_client(http_client)
        .with_url(&cfg.url)
        .with_user(&cfg.user)
        .with_password(cfg.password.expose())
        .with_compression(Compression::None))
}

/// The error and every cause under it, `: `-joined (the client's own message
/// hides the cause, e.g. which certificate check failed).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    message
}

/// The `Code: N` of a ClickHouse exception message, if any.
pub fn error_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Whether a ClickHouse exception code clears up on its own.
pub fn is_retryable_code(code: u32) -> bool {
    RETRYABLE_CODES.contains(&code)
}

/// Maps a client error to the sink error users can act on. Never leaks the password.
pub fn map_error(cfg: &ClickHouseSinkConfig, e: clickhouse::error::Error) -> SinkError {
    let message = redact(&with_causes(&e), &cfg.password);
    match e {
        // A certificate that does not verify is a setup problem, not an outage.
        clickhouse::error::Error::Network(_) if message.contains("certificate") => {
            SinkError::ClickHouseTls {
                message: format!("{}: {message}", cfg.url),
            }
        }
        clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => {
            SinkError::ClickHouseUnreachable {
                url: cfg.url.clone(),
                message,
            }
        }
        _ => match error_code(&message) {
            Some(516) | Some(192) | Some(194) => SinkError::ClickHouseAuth {
                user: cfg.user.clone(),
                message,
            },
            code => SinkError::ClickHouse { code, message },
        },
    }
}

/// Server version, proving the server is reachable and accepts our credentials.
pub async fn server_version(cfg: &ClickHouseSinkConfig) -> Result<String, SinkError> {
    client(cfg)?
        .query("SELECT version()")
        .fetch_one::<String>()
        .await
        .map_err(|e| map_error(cfg, e))
}

pub async fn database_exists(cfg: &ClickHouseSinkConfig) -> Result<bool, SinkError> {
    client(cfg)?
        .query("SELECT count() FROM system.databases WHERE name = ?")
        .bind(&cfg.database)
        .fetch_one::<u64>()
        .await
        .map(|n| n > 0)
        .map_err(|e| map_error(cfg, e))
}

/// Quotes a ClickHouse identifier with backticks.
pub fn quote_ch_ident(ident: &str) -> String {
    format!("`{}`", ident.replace('\\', "\\\\").replace('`', "\\`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_error_codes() {
        assert_eq!(
            error_code("Code: 60. DB::Exception: Table x doesn't exist"),
            Some(60)
        );
        assert_eq!(
            error_code("bad response: Code: 516. DB::Exception: auth"),
            Some(516)
        );
        assert_eq!(error_code("no code here"), None);
        assert!(is_retryable_code(252)); // too many parts
        assert!(!is_retryable_code(62)); // syntax error
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ch_ident("a`b"), "`a\\`b`");
        assert_eq!(quote_ch_ident("My Table.x"), "`My Table.x`");
    }
}
