//! `firmware-sim`: runs a simulated site from a scenario file until Ctrl-C, or until the
//! scenario's `duration` (or `--until`) of simulated time has passed.
//!
//! Owns only the command line and console output; everything else is the library.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use firmware_sim::{ClockMode, Scenario, Site, StartOptions};

/// Simulated resettlement site: Modbus TCP/RTU slaves and MQTT sensor nodes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Scenario file, e.g. config/sim/basic.toml.
    #[arg(long)]
    scenario: PathBuf,
    /// Profile directory (default: `profiles` next to the scenario's directory).
    #[arg(long)]
    profiles: Option<PathBuf>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Simulated time runs this many times faster than the wall clock.
    #[arg(long, default_value_t = 1)]
    speed: u32,
    /// Stream the truth as JSON lines to this file.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// MQTT broker for the JSON and CIGEM nodes (without it they stay silent).
    #[arg(long)]
    mqtt: Option<SocketAddr>,
    /// Serial device for an RTU bus, overriding the scenario: BUS=PATH (repeatable).
    #[arg(long = "rtu", value_name = "BUS=PATH")]
    rtu: Vec<String>,
    /// Directory for the pty pairs of buses without a tty (`<dir>/<bus>/{sim,gw}`).
    #[arg(long)]
    pty_dir: Option<PathBuf>,
    /// Stop after this much simulated time (e.g. `72h`); default: the scenario's `duration`,
    /// or run until Ctrl-C when it has none.
    #[arg(long, value_parser = humantime::parse_duration)]
    until: Option<Duration>,
    /// Run until Ctrl-C even if the scenario has a `duration`.
    #[arg(long, conflicts_with = "until")]
    forever: bool,
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("firmware-sim: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the cause chain on one line, without anyhow's backtrace.
            eprintln!("firmware-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    let scenario = match &args.profiles {
        Some(dir) => Scenario::load_with_profiles(&args.scenario, dir),
        None => Scenario::load(&args.scenario),
    }?;
    let mut rtu_paths = HashMap::new();
    for spec in &args.rtu {
        let Some((bus, path)) = spec.split_once('=') else {
            bail!("--rtu {spec:?}: expected BUS=PATH");
        };
        rtu_paths.insert(bus.to_owned(), PathBuf::from(path));
    }
    if args.speed == 0 || args.speed > firmware_sim::clock::MAX_SPEED {
        bail!("--speed must be 1-{}", firmware_sim::clock::MAX_SPEED);
    }
    let options = StartOptions {
        mqtt_broker: args.mqtt,
        rtu_paths,
        pty_dir: args.pty_dir.clone(),
        clock: ClockMode::Realtime { speed: args.speed },
        seed: args.seed,
        truth_file: args.truth.clone(),
        ..StartOptions::default()
    };
    let site = Site::start(&scenario, options)
        .await
        .with_context(|| format!("starting {}", args.scenario.display()))?;

    println!(
        "scenario {} (seed {}), sample interval {:?}, speed {}x",
        scenario.name,
        args.seed.unwrap_or(scenario.seed),
        scenario.sample_interval,
        args.speed
    );
    for (device, addr) in site.tcp_addrs() {
        println!("modbus tcp  {device:<16} {addr}");
    }
    for (bus, ep) in site.rtu_endpoints() {
        match &ep.gateway_path {
            Some(gw) => println!(
                "modbus rtu  {bus:<16} gateway side {} (sim {})",
                gw.display(),
                ep.sim_path.display()
            ),
            None => println!("modbus rtu  {bus:<16} {}", ep.sim_path.display()),
        }
    }
    match args.mqtt {
        Some(broker) => println!(
            "mqtt        {} json node(s), {} CIGEM device(s) -> {broker}",
            scenario.json_nodes.len(),
            scenario.cigem.len()
        ),
        None if !(scenario.json_nodes.is_empty() && scenario.cigem.is_empty()) => {
            println!("mqtt        off (no --mqtt): nodes stay silent");
        }
        None => {}
    }
    for m in scenario.physics.models() {
        println!(
            "physics     {:<16} {} channel(s)",
            m.name(),
            scenario.physics.names_of_model(m.name()).len()
        );
    }
    for f in &scenario.faults {
        let end = f.end.map_or_else(
            || "end".to_owned(),
            |e| humantime::format_duration(e).to_string(),
        );
        println!(
            "fault       {:<12} {:<16} {:<10} {} .. {end}",
            f.kind(),
            f.device,
            f.point.as_deref().unwrap_or("-"),
            humantime::format_duration(f.start)
        );
    }
    if let Some(t) = &args.truth {
        println!("truth       {}", t.display());
    }
    let until = if args.forever {
        None
    } else {
        args.until.or(scenario.duration)
    };
    match until {
        Some(d) => println!(
            "running {} of simulated time; Ctrl-C to stop early",
            humantime::format_duration(d)
        ),
        None => println!("running; Ctrl-C to stop"),
    }

    let ctrl_c = tokio::signal::ctrl_c();
    match until {
        Some(d) => {
            // One more sample interval so the sample at `d` itself is taken.
            let end = site.instant_after(d + scenario.sample_interval / 2);
            tokio::select! {
                r = ctrl_c => r.context("waiting for Ctrl-C")?,
                () = tokio::time::sleep_until(end) => println!("reached {}", humantime::format_duration(d)),
            }
        }
        None => ctrl_c.await.context("waiting for Ctrl-C")?,
    }
    let truth = site.truth();
    site.shutdown().await;
    let (samples, channels, faults) = truth.counts();
    println!("{samples} samples, {channels} channel samples, {faults} faults recorded");
    Ok(())
}
