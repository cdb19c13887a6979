//! `gateway`: the site daemon's command line. Thin: parse arguments, set up logging, load the
//! config, and hand over to [`anju_gateway::run`]. The only place that maps errors to exit
//! codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use anju_gateway::baseline;
use anju_gateway::config::Config;
use anju_gateway::engine::derived::initial::Change;
use anju_gateway::model::now_ns;

/// Anju site gateway: Modbus and MQTT sensors in, durable spool, InfluxDB v2 out.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the gateway until Ctrl-C or SIGTERM; SIGHUP reloads the config file.
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
    /// The initial values (初始值) of levelling blocks: list them, establish missing ones from
    /// the mean of the next good readings, or re-zero a channel after a sensor replacement.
    /// Changes need the service stopped (the spool file is the running gateway's); they are
    /// collected when it runs again.
    Baseline {
        #[command(subcommand)]
        action: BaselineCmd,
    },
    /// Concrete pours (`[[pours]]`): list their saved state, or record when the insulation
    /// came off a pour. Changes need the service stopped; they are read when it runs again.
    Pour {
        #[command(subcommand)]
        action: PourCmd,
    },
    /// Make the daily report (监理日报) of a day from the local history now, and keep it in
    /// data_dir/reports. With the service running, its console makes it.
    Report {
        /// The site config file.
        #[arg(short, long)]
        config: PathBuf,
        /// The day, YYYY-MM-DD (local time, UTC+8).
        #[arg(long)]
        date: String,
    },
}

#[derive(Debug, Subcommand)]
enum PourCmd {
    /// Each pour: placing time and temperature, insulation removal, milestones announced.
    Show {
        /// The site config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Record that the insulation came off a pour: from then on the gateway derives its
    /// surface − air difference (GB 50496-2018 §3.0.4-4, ≤ 20 °C).
    RemoveInsulation {
        /// The site config file.
        #[arg(short, long)]
        config: PathBuf,
        /// The pour (`[[pours]]` name).
        pour: String,
        /// When it came off, RFC 3339 (e.g. 2026-12-02T09:30:00+08:00); default now.
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BaselineCmd {
    /// Every initial value in force: configured, and established in the spool with time,
    /// method and the values a re-zeroing replaced.
    Show {
        /// The site config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Establish the missing initial values of channels from the mean of their next good
    /// readings (refused for a channel that has one: use rezero).
    Establish {
        /// The site config file.
        #[arg(short, long)]
        config: PathBuf,
        /// The levelling block (`[[derived]]` name).
        #[arg(long)]
        block: String,
        /// A cell or the reference, `device/point`; repeat for several.
        #[arg(long = "channel", required_unless_present = "all_missing")]
        channels: Vec<String>,
        /// Every Modbus cell of the block and its reference that has no initial value yet.
        #[arg(long, conflicts_with = "channels")]
        all_missing: bool,
        /// Good readings to average (default: the block's establish_readings, else 10).
        #[arg(long)]
        readings: Option<u32>,
    },
    /// Replace a channel's initial value after a sensor replacement: the old value is kept in
    /// the history with the reason; the new one is the mean of the next good readings.
    Rezero {
        /// The site config file.
        #[arg(short, long)]
        config: PathBuf,
        /// The levelling block (`[[derived]]` name).
        #[arg(long)]
        block: String,
        /// A cell or the reference, `device/point`; repeat for several.
        #[arg(long = "channel", required = true)]
        channels: Vec<String>,
        /// Why (kept with the old value), e.g. "cell ch2 replaced 2026-11-30".
        #[arg(long)]
        reason: String,
        /// Good readings to average (default: the block's establish_readings, else 10).
        #[arg(long)]
        readings: Option<u32>,
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
                print!("{}", initial_values(&cfg, false));
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
        Cmd::Baseline { action } => baseline(action),
        Cmd::Pour { action } => pour(action),
        Cmd::Report { config, date } => report(&config, &date),
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

/// `gateway report`: exit 0 with the report's path, 2 for an invalid config or date, 1 when
/// the history cannot be reached.
fn report(config: &std::path::Path, date: &str) -> ExitCode {
    let cfg = match Config::load(config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}\n\n{}: invalid configuration", config.display());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(anju_gateway::report::on_demand(&cfg, date)) {
        Ok(path) => {
            println!("daily report {date}: {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e @ anju_gateway::report::OnDemandError::Date(_)) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The initial values of `cfg`'s levelling blocks, with those in the spool when it can be
/// read (not while the service runs: then the listing says so).
fn initial_values(cfg: &Config, with_configured: bool) -> String {
    let saved = anju_gateway::spool::offline::read_state(&baseline::spool_path(cfg));
    baseline::listing(&cfg.derived, &saved, with_configured)
}

/// `gateway baseline`: exit 0 when done, 2 for a refusal or an invalid config, 1 when the
/// spool cannot be used (the service running, permissions).
fn baseline(action: BaselineCmd) -> ExitCode {
    let (config, block, channels, change, readings) = match action {
        BaselineCmd::Show { config } => {
            let Some(cfg) = load_for_baseline(&config) else {
                return ExitCode::from(2);
            };
            let shown = initial_values(&cfg, true);
            if shown.is_empty() {
                println!(
                    "{}: no levelling block, no initial values",
                    config.display()
                );
            }
            print!("{shown}");
            return ExitCode::SUCCESS;
        }
        BaselineCmd::Establish {
            config,
            block,
            channels,
            all_missing,
            readings,
        } => {
            if all_missing {
                let Some(cfg) = load_for_baseline(&config) else {
                    return ExitCode::from(2);
                };
                match baseline::missing_channels(&cfg, &block) {
                    Ok(all) => (config, block, all, Change::Establish, readings),
                    Err(e) => return refused(&config, &e),
                }
            } else {
                (config, block, channels, Change::Establish, readings)
            }
        }
        BaselineCmd::Rezero {
            config,
            block,
            channels,
            reason,
            readings,
        } => (config, block, channels, Change::Rezero { reason }, readings),
    };
    let Some(cfg) = load_for_baseline(&config) else {
        return ExitCode::from(2);
    };
    let order = baseline::Order {
        block: &block,
        channels: &channels,
        change,
        readings,
    };
    match baseline::carry_out(&cfg, &order, now_ns()) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => refused(&config, &e),
    }
}

/// `gateway pour`: exit 0 when done, 2 for a refusal or an invalid config, 1 when the spool
/// cannot be used (the service running, permissions).
fn pour(action: PourCmd) -> ExitCode {
    match action {
        PourCmd::Show { config } => {
            let Some(cfg) = load_for_baseline(&config) else {
                return ExitCode::from(2);
            };
            if cfg.pours.is_empty() {
                println!("{}: no [[pours]]", config.display());
                return ExitCode::SUCCESS;
            }
            let saved = anju_gateway::spool::offline::read_state(&baseline::spool_path(&cfg));
            print!("{}", anju_gateway::pour::listing(&cfg, &saved));
            ExitCode::SUCCESS
        }
        PourCmd::RemoveInsulation { config, pour, at } => {
            let Some(cfg) = load_for_baseline(&config) else {
                return ExitCode::from(2);
            };
            let at = match at {
                None => now_ns(),
                Some(text) => match anju_gateway::sources::mqtt::timestamp::parse_rfc3339(&text) {
                    Some(t) => t,
                    None => {
                        eprintln!("--at \"{text}\" is not a time; write RFC 3339, e.g. 2026-12-02T09:30:00+08:00");
                        return ExitCode::from(2);
                    }
                },
            };
            match anju_gateway::pour::remove_insulation(&cfg, &pour, at) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!("\n{}: nothing was changed", config.display());
                    match e {
                        anju_gateway::pour::PourCommandError::Refused(_) => ExitCode::from(2),
                        anju_gateway::pour::PourCommandError::Spool(_) => ExitCode::FAILURE,
                    }
                }
            }
        }
    }
}

/// Say why nothing was changed: exit 2 for a refusal, 1 when the spool cannot be used.
fn refused(config: &std::path::Path, e: &baseline::BaselineError) -> ExitCode {
    eprintln!("{e}");
    eprintln!("\n{}: nothing was changed", config.display());
    match e {
        baseline::BaselineError::Refused(_) => ExitCode::from(2),
        baseline::BaselineError::Spool(_) => ExitCode::FAILURE,
    }
}

/// The config for `gateway baseline`, or `None` after saying why it is invalid.
fn load_for_baseline(config: &std::path::Path) -> Option<Config> {
    match Config::load(config) {
        Ok(cfg) => Some(cfg),
        Err(e) => {
            eprintln!("{e}");
            eprintln!("\n{}: invalid configuration", config.display());
            None
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
        let gateway = anju_gateway::run::Gateway::new(cfg);
        reload_on_hangup(gateway.reloader());
        gateway.run(shutdown).await.context("gateway stopped")
    })
}

/// SIGHUP (`systemctl reload anju-gateway`, packaging/anju-gateway.service `ExecReload=`)
/// reloads the config file the gateway was started with (README §Reload).
fn reload_on_hangup(reloader: anju_gateway::run::Reloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        info!("SIGHUP: reloading the config.");
                        reloader.request();
                    }
                });
            }
            Err(e) => {
                error!(error = %e, "Cannot listen for SIGHUP; config reloads need a restart.")
            }
        }
    }
    #[cfg(not(unix))]
    drop(reloader);
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
