use std::process::ExitCode;

use clap::Parser;
use sluice::cli::{Cli, Command};
use sluice::config::{self, ConfigError};
use tracing_subscriber::EnvFilter;

/// Exit code for bad configuration or usage (clap uses 2 for usage too).
const EXIT_CONFIG: u8 = 2;
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
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
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn init_logging(cli: &Cli) {
    let filter = match &cli.log {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check(args) => {
            let cfg = config::load(&args.config)?;
            let report = sluice::check::run(&cfg).await;
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
            sluice::tail::run(&cfg, from, limit).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Drop {
            config: args,
            keep_publication,
        } => {
            let cfg = config::load(&args.config)?;
            for line in sluice::admin::drop_pipeline(&cfg, keep_publication).await? {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
