use std::process::ExitCode;

use clap::Parser;
use sluice::app::cli::{Cli, Command};
use sluice::config::{self, ConfigError};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Exit code for bad configuration or usage (clap uses 2 for usage too).
const EXIT_CONFIG: u8 = 2;
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    sluice::app::allocator::tune();
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            let code = if e.downcast_ref::<ConfigError>().is_some() {
                EXIT_CONFIG
            } else {
                EXIT_FAILURE
            };
            // Our errors carry their causes in their own message.
            eprintln!("error: {e}");
            ExitCode::from(code)
        }
    }
}

fn init_logging(cli: &Cli) {
    let filter = match &cli.log {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Colours only on a terminal, so log files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(sluice::app::progress::LogWriter::make);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => {
            let cfg = config::load(&args.config)?;
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone());
            if let Some(addr) = cfg.metrics.listen {
                let handle =
                    sluice::metrics::install(&cfg.pipeline.name).map_err(anyhow::Error::msg)?;
                sluice::app::http::serve(addr, handle, cfg.metrics.ready_max_lag)
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
            sluice::run(cfg, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot {
            config: args,
            tables,
        } => {
            let cfg = config::load(&args.config)?;
            let tables = tables
                .iter()
                .map(|t| sluice::config::TableName::parse(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::Invalid(vec![format!("TABLE: {e}")]))?;
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone());
            sluice::app::snapshot(cfg, tables, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Resync {
            config: args,
            tables,
        } => {
            let cfg = config::load(&args.config)?;
            match sluice::app::resync::resync(&cfg, &tables).await {
                Ok(lines) => {
                    for line in lines {
                        println!("{line}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(sluice::app::resync::ResyncError::Usage(m)) => {
                    eprintln!("error: {m}");
                    Ok(ExitCode::from(EXIT_CONFIG))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Status { config: args, json } => {
            let cfg = config::load(&args.config)?;
            if json {
                println!("{}", sluice::app::status::status_json(&cfg).await?);
            } else {
                for line in sluice::app::status::status(&cfg).await? {
                    println!("{line}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let cfg = config::load(&args.config)?;
            let report = sluice::app::check::run(&cfg).await;
            for line in &report.lines {
                println!("{line}");
            }
            if report.all_ok() {
                println!("ready: {}", args.config.display());
                Ok(ExitCode::SUCCESS)
            } else {
                println!("not ready: fix the FAIL lines above");
                Ok(ExitCode::from(EXIT_FAILURE))
            }
        }
        Command::Tail {
            config: args,
            from_lsn,
            limit,
        } => {
            let cfg = config::load(&args.config)?;
            let from = match from_lsn {
                Some(s) => Some(
                    s.parse()
                        .map_err(|e: String| anyhow::anyhow!("--from-lsn: {e}"))?,
                ),
                None => None,
            };
            sluice::app::tail::run(&cfg, from, limit).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Drop {
            config: args,
            keep_publication,
        } => {
            let cfg = config::load(&args.config)?;
            for line in sluice::app::drop::drop_pipeline(&cfg, keep_publication).await? {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// SIGINT or SIGTERM starts a graceful shutdown; a second one exits at once.
fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                tracing::info!("shutting down: flushing, checkpointing and confirming (signal again to exit at once)");
                shutdown.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
}
