//! `sluice check`: every configured server's health check, one line per
//! finding, ok or FAIL. Changes nothing.

use crate::config::{Config, SinkConfig, SourceConfig};
use crate::core::health::Report;
use crate::sink::clickhouse::ClickHouseSink;
use crate::sink::kafka::KafkaSink;
use crate::sink::Sink;
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
        SinkConfig::ClickHouse(ch) => match ClickHouseSink::new(ch) {
            Ok(sink) => report.extend(sink.healthcheck().await),
            Err(e) => report.fail("clickhouse", e.to_string()),
        },
        SinkConfig::Kafka(k) => {
            let db = super::run::source_database(config);
            report.extend(KafkaSink::new(k, &db).healthcheck().await)
        }
    }
    report
}
