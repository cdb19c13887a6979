//! `gateway`: the site daemon's command line. Thin: parse arguments, set up logging, load the
//! config, and hand over to [`anju_gateway::run`]. The only place that maps errors to exit
//! codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::filter::Targets;

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
    /// Write a value to a Modbus point its profile declares `writable = true` (a sampling
    /// interval, a relay), through the running gateway: its console passes the write to the
    /// poller that owns the device's bus. Exit 0 when the device confirmed it, 2 when refused
    /// (unknown device or point, not writable, a value the point cannot take), 1 when the device
    /// refused or did not answer, or the gateway cannot be reached.
    Write {
        /// The site config file (of the running gateway).
        #[arg(short, long)]
        config: PathBuf,
        /// The device (`[[devices]]` name).
        #[arg(long)]
        device: String,
        /// The point, as named in the profile.
        #[arg(long)]
        point: String,
        /// The value in the point's unit (scale and offset are undone), e.g. 300; a coil takes
        /// 1 or 0.
        #[arg(long, allow_hyphen_values = true)]
        value: f64,
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
///
/// `ANJU_LOG` is a list of `level` and `target=level` directives, e.g. `info` or
/// `info,anju_gateway::sources=debug` (tracing-subscriber's `filter::Targets`). It is not an
/// `EnvFilter`, whose span and field-value directives need regex (327,680 B of the aarch64
/// site binary, README §Building for the site boxes). A value that does not parse is reported
/// and the default used.
fn init_logging() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    const DEFAULT: &str = "info,rumqttd=warn";
    let default = || {
        Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target("rumqttd", LevelFilter::WARN)
    };
    let filter = match std::env::var("ANJU_LOG") {
        Ok(text) => text.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("ANJU_LOG={text:?} is not a log filter ({e}); logging with {DEFAULT:?}");
            default()
        }),
        Err(_) => default(),
    };
    tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .finish()
        .with(filter)
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
        Cmd::Write {
            config,
            device,
            point,
            value,
        } => write(&config, &device, &point, value),
        Cmd::Run { config } => {
            one_malloc_heap();
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

/// Start again with `MALLOC_ARENA_MAX=1` unless the environment sets it (to anything).
///
/// glibc's malloc gives a thread that finds the heap busy a heap of its own (up to eight per
/// core) and keeps what is freed there for that heap: a 5,000-channel site's steady peak was
/// 44.0 MB with the default and 37.2 MB with one heap, same CPU (README §Memory, issue 14). The
/// Debian unit sets it; this covers every other way the gateway is started (a shell, another
/// init system, a container). glibc reads it at the first allocation, so it must be in the
/// environment when the process starts: hence one `exec` of the same binary with the same
/// arguments (same process id, so systemd's notify and watchdog are unaffected). When the exec
/// fails (the binary was replaced on disk), the gateway runs on with the default heaps.
fn one_malloc_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt as _;
        const VAR: &str = "MALLOC_ARENA_MAX";
        if std::env::var_os(VAR).is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut cmd = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            cmd.arg0(arg0);
        }
        let err = cmd.args(args).env(VAR, "1").exec();
        eprintln!("could not start again with {VAR}=1 ({err}); running with glibc's default heaps");
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
    let Some(runtime) = small_runtime() else {
        return ExitCode::FAILURE;
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

/// `gateway write`: check the write against the config (exit 2 when refused), then send it to
/// the running gateway's console (`POST /write`) and report its answer.
fn write(config: &std::path::Path, device: &str, point: &str, value: f64) -> ExitCode {
    use anju_gateway::sources::modbus::write::resolve_in;
    let Some(cfg) = load_for_baseline(config) else {
        return ExitCode::from(2);
    };
    let refuse = |message: String| {
        eprintln!("{message}");
        eprintln!("\n{}: nothing was written", config.display());
        ExitCode::from(2)
    };
    let Some(d) = cfg.devices.iter().find(|d| d.name == device) else {
        return refuse(format!(
            "no Modbus device \"{device}\" in the config; the devices are: {}",
            cfg.devices
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let target = match resolve_in(&d.points, device, point, value) {
        Ok(t) => t,
        Err(e) => return refuse(e.to_string()),
    };
    let Some(console) = &cfg.console else {
        return refuse(
            "the console is turned off in this config; writes go through the running gateway's console ([console])"
                .to_owned(),
        );
    };
    // A console listening on every address is reached on loopback.
    let mut addr = console.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/write");
    let Some(runtime) = small_runtime() else {
        return ExitCode::FAILURE;
    };
    let value_text = value.to_string();
    let form = [
        ("device", device),
        ("point", point),
        ("value", value_text.as_str()),
    ];
    let answer = runtime.block_on(async {
        let mut request = reqwest::Client::new().post(&url).form(&form);
        if let Some(token) = &console.token {
            request = request.bearer_auth(token.expose());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok::<_, reqwest::Error>((status, response.text().await.unwrap_or_default()))
    });
    match answer {
        Ok((200, text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok((422, text)) => refuse(text.trim_end().to_owned()),
        Ok((status, text)) => {
            eprintln!(
                "{} (HTTP {status}; {target} not confirmed)",
                text.trim_end()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!(
                "cannot reach the running gateway's console at {url}: {}; is the gateway running with this config?",
                e.without_url()
            );
            ExitCode::FAILURE
        }
    }
}

/// A single-threaded runtime for a command that makes one request, or `None` after saying why
/// it cannot start.
fn small_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("cannot start: {e}"))
        .ok()
}

/// The initial values of `cfg`'s levelling blocks, with those in the spool when it can be
/// read (not while the service runs: then the listing says so).
fn initial_values(cfg: &Config, with_configured: bool) -> String {
    let saved = anju_gateway::spool::offline::read_saved_state(&cfg.data_dir);
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
            let saved = anju_gateway::spool::offline::read_saved_state(&cfg.data_dir);
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
