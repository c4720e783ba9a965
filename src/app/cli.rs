//! Command-line interface (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// sluice: streaming change-data-capture from PostgreSQL into ClickHouse and Kafka.
///
/// A pipeline is described by one TOML file (see configs/ for commented
/// examples). Strings in it may use ${ENV_VAR}; keep secrets in the
/// environment or in files.
///
/// Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true)]
pub struct Cli {
    /// Log filter, e.g. `info`, `debug`, `sluice=debug` (overrides RUST_LOG).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The pipeline's config file (TOML).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replicate continuously until stopped (SIGINT/SIGTERM).
    ///
    /// Creates the publication and slot if configured to, copies the rows
    /// tables already hold (initial snapshot, once per table), streams
    /// changes into the sink in micro-batches, and after each batch is durable saves
    /// the checkpoint and only then confirms the position to PostgreSQL. On
    /// restart it resumes from the checkpoint. Transient failures (network,
    /// server restarts) are retried with backoff; fatal ones stop with an
    /// error that says what to fix. Stopping flushes, checkpoints and
    /// confirms before exit.
    Run(ConfigArg),

    /// Copy tables' rows into the sink once, without a slot or a stream.
    ///
    /// For loads that need no streaming. Each table is read in block ranges
    /// by `snapshot.parallelism` connections at once and written by as many
    /// sink writers; rows the copy does not find in PostgreSQL are removed
    /// from the sink. Interrupted, it resumes with the unfinished ranges when
    /// run again. Shows progress per table (bars on a terminal).
    Snapshot {
        #[command(flatten)]
        config: ConfigArg,
        /// Tables to copy (`schema.table`); all configured ones by default.
        #[arg(value_name = "TABLE")]
        tables: Vec<String>,
    },

    /// Copy tables again, e.g. a table stopped (failed) or gone stale.
    ///
    /// While `sluice run` runs, the running pipeline copies them now and the
    /// other tables keep streaming; otherwise the next `sluice run` does.
    /// Rows deleted in PostgreSQL meanwhile disappear from the sink.
    Resync {
        #[command(flatten)]
        config: ConfigArg,
        /// Tables to copy again (`schema.table`).
        #[arg(value_name = "TABLE", required = true)]
        tables: Vec<String>,
    },

    /// Show the pipeline's progress: checkpoint, slot position, lag, tables.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON object (for scripts) instead of lines.
        #[arg(long)]
        json: bool,
    },

    /// Check that every configured server is reachable and ready.
    ///
    /// Connects to PostgreSQL (credentials, wal_level, free slots and WAL
    /// senders, replication permission, tables and their keys, publication)
    /// and to the sink (ClickHouse or Kafka), prints one line per finding,
    /// and exits non-zero when anything must be fixed. Changes nothing.
    Check(ConfigArg),

    /// Print decoded changes as JSON lines, without confirming anything.
    ///
    /// Reads the pipeline's slot (creating the publication and slot if
    /// configured to) and prints one JSON object per change. Progress is
    /// never confirmed to PostgreSQL, so a later `run` still sees every
    /// change: this is a debugging tool, like pg_recvlogical.
    Tail {
        #[command(flatten)]
        config: ConfigArg,
        /// Start at this LSN (X/Y) instead of the slot's confirmed position.
        #[arg(long, value_name = "LSN")]
        from_lsn: Option<String>,
        /// Stop after this many changes.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },

    /// Remove the pipeline's replication slot and publication from PostgreSQL.
    ///
    /// Dropping the slot releases the WAL it holds. The checkpoint database
    /// is removed too, so a later `run` starts afresh.
    Drop {
        #[command(flatten)]
        config: ConfigArg,
        /// Keep the publication (e.g. when other consumers share it).
        #[arg(long)]
        keep_publication: bool,
    },
}
