//! sluice: streaming change-data-capture from PostgreSQL into ClickHouse and Kafka.
//!
//! # Layout
//!
//! Each folder is a layer with one job; a layer uses only the ones below it.
//!
//! ```text
//!   app/        the commands: run, check, status, tail, drop (builds the concrete parts)
//!   pipeline/   generic run: commit protocol, snapshot copy, table lifecycle, retry
//!   source/     trait Source + postgres/ (logical replication, snapshot, pgoutput, types)
//!   sink/       trait Sink + clickhouse/, kafka/, memory
//!   state/      trait StateStore + sled, memory; the per-table lifecycle
//!   core/       change model (Arrow batches + metadata columns), logical types,
//!               positions, error classes, health-check lines
//!   config/     TOML -> validated config; secret, tls (rustls roots), metrics: names and
//!               helpers; live: the process's own state for /readyz
//! ```
//!
//! The small API: [`run`] a [`Config`] until a [`CancellationToken`] is
//! cancelled; or assemble a [`Source`], a [`Sink`] and a [`StateStore`]
//! yourself and call [`run_pipeline`].
//!
//! [`CancellationToken`]: tokio_util::sync::CancellationToken

pub mod app;
pub mod config;
pub mod core;
pub mod live;
pub mod metrics;
pub mod pipeline;
pub mod secret;
pub mod sink;
pub mod source;
pub mod state;
pub mod tls;

pub use app::run;
pub use config::{load as load_config, Config, ConfigError};
pub use pipeline::{run_pipeline, PipelineError, PipelineOptions};
pub use sink::Sink;
pub use source::Source;
pub use state::StateStore;
