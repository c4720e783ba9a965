//! `sluice check` for ClickHouse: reachable, credentials accepted, database.
//! Changes nothing.

use super::{database_exists, server_version};
use crate::config::ClickHouseSinkConfig;
use crate::core::health::Report;

pub async fn healthcheck(ch: &ClickHouseSinkConfig) -> Report {
    let mut report = Report::default();
    let subject = "clickhouse";
    match server_version(ch).await {
        Ok(v) => {
            report.ok(
                subject,
                format!(
                    "reachable at {} (ClickHouse {v}), user \"{}\" accepted",
                    ch.url, ch.user
                ),
            );
            match database_exists(ch).await {
                Ok(true) => report.ok(subject, format!("database `{}` exists", ch.database)),
                Ok(false) => report.ok(
                    subject,
                    format!("database `{}` does not exist yet; sluice run creates it (needs CREATE DATABASE permission)", ch.database),
                ),
                Err(e) => report.fail(subject, e.to_string()),
            }
        }
        Err(e) => report.fail(subject, e.to_string()),
    }
    report
}
