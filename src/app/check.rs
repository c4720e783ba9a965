//! `sluice check`: every configured server's health check, one line per
//! finding, ok or FAIL. Changes nothing.

use crate::config::{Config, SinkConfig, SourceConfig};
use crate::core::health::Report;
use crate::sink::clickhouse::ClickHouseSink;
use crate::sink::{kafka, Sink};
use crate::source::poll::PollSource;
use crate::source::postgres::PgSource;
use crate::source::Source;

pub async fn run(config: &Config) -> Report {
    let mut report = Report::default();
    match &config.source {
        SourceConfig::Postgres(pg) => {
            let source = PgSource::new(pg.clone(), config.batch, std::env::temp_dir());
            report.extend(source.healthcheck().await);
        }
        SourceConfig::Poll(p) => {
            report.extend(PollSource::new(p.clone(), config.batch).healthcheck().await);
        }
    }
    match &config.sink {
        SinkConfig::ClickHouse(ch) => report.extend(ClickHouseSink::new(ch).healthcheck().await),
        SinkConfig::Kafka(k) => report.extend(kafka::healthcheck(k).await),
    }
    report
}
