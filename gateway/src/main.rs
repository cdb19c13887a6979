//! `gateway`: the site daemon's command line. Thin: parse arguments, set up logging, load the
//! config, and hand over to [`anju_gateway::run`]. The only place that maps errors to exit
//! codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use anju_gateway::config::Config;

/// Anju site gateway: Modbus and MQTT sensors in, durable spool, InfluxDB v2 out.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the gateway until Ctrl-C or SIGTERM.
    Run {
        /// The site config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config without connecting to anything, and print what the gateway would do:
    /// devices, channels, Modbus read plans, MQTT subscriptions, sinks, and every alert rule and
    /// sensor check with the channels it matches. Exit 2 when the config is invalid or a rule
    /// matches nothing, pairs different quantities or units, or goes stale between two polls.
    Check {
        /// The site config file.
        #[arg(short, long)]
        config: PathBuf,
    },
}

/// Log to stderr (systemd's journal takes it as it takes stdout), with colour only when stderr
/// is a terminal: a journal, a file or a pipe gets plain text without ANSI escape codes.
fn init_logging() {
    use std::io::IsTerminal as _;
    // ANJU_LOG takes tracing's filter syntax, e.g. `info` or `info,anju_gateway::sources=debug`.
    let filter = tracing_subscriber::EnvFilter::try_from_env("ANJU_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Check { config } => match Config::load(&config) {
            Ok(cfg) => {
                print!("{}", anju_gateway::config::describe(&cfg));
                let coverage = anju_gateway::config::rule_coverage(&cfg);
                print!("{}", coverage.text);
                if coverage.problems.is_empty() {
                    println!("\n{}: OK", config.display());
                    return ExitCode::SUCCESS;
                }
                for p in &coverage.problems {
                    eprintln!("{p}");
                }
                eprintln!(
                    "\n{}: {} alert rule(s) cannot work as written (see above); fix them and check again",
                    config.display(),
                    coverage.problems.len()
                );
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("{e}");
                eprintln!(
                    "\n{}: invalid configuration (nothing was started)",
                    config.display()
                );
                ExitCode::from(2)
            }
        },
        Cmd::Run { config } => {
            init_logging();
            let cfg = match Config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!(
                        "\n{}: invalid configuration; fix the lines above and start again",
                        config.display()
                    );
                    return ExitCode::from(2);
                }
            };
            match run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(cfg: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("Shutting down: stopping sources, committing what is in flight.");
            signal.cancel();
        });
        anju_gateway::run::Gateway::new(cfg)
            .run(shutdown)
            .await
            .context("gateway stopped")
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
