//! `anju-demo`: the gateway on a simulated resettlement site, with nothing external.
//!
//! Starts the simulator (`config/sim/demo.toml`: Modbus TCP slaves, two RS-485 buses on socat
//! pseudo-terminals, JSON curing and settlement nodes, CIGEM geo-hazard devices) and the gateway
//! with `config/demo.toml` (which runs the embedded MQTT broker), then prints what flows every
//! few seconds until Ctrl-C or `--duration`.

use anju_gateway::metrics::Counter;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use firmware_sim::{ClockMode, Scenario, Site, StartOptions};

/// Run the gateway against a simulated site.
#[derive(Debug, Parser)]
struct Args {
    /// Gateway config.
    #[arg(long, default_value = "config/demo.toml")]
    config: PathBuf,
    /// Simulator scenario.
    #[arg(long, default_value = "config/sim/demo.toml")]
    scenario: PathBuf,
    /// Stop after this long (e.g. `30s`); default: run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Simulated time runs this many times faster than real time.
    #[arg(long, default_value_t = 1)]
    speed: u32,
    /// Seconds between two console summaries.
    #[arg(long, default_value_t = 5)]
    every: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("ANJU_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let root = anju_system::repo_root();
    let resolve = |p: &PathBuf| {
        if p.is_absolute() || p.exists() {
            p.clone()
        } else {
            root.join(p)
        }
    };
    let config_path = resolve(&args.config);
    let scenario_path = resolve(&args.scenario);

    let cfg =
        anju_gateway::config::Config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let broker = cfg
        .embedded_broker
        .as_ref()
        .map(|b| b.listen)
        .context("the demo config needs [embedded_broker]")?;
    let scenario = Scenario::load(&scenario_path).map_err(|e| anyhow::anyhow!("{e}"))?;

    // The simulator first: its pseudo-terminals must exist before the gateway opens them. Its
    // MQTT nodes retry until the gateway's embedded broker is up.
    let site = Site::start(
        &scenario,
        StartOptions {
            mqtt_broker: Some(broker),
            pty_dir: Some(PathBuf::from("/tmp/anju-demo/pty")),
            clock: ClockMode::Realtime { speed: args.speed },
            ..Default::default()
        },
    )
    .await
    .context("start the simulated site")?;
    println!(
        "anju-demo: simulated site \"{}\" is up: {} Modbus TCP slaves, RTU buses {:?}",
        scenario.name,
        site.tcp_addrs().len(),
        site.rtu_endpoints().keys().collect::<Vec<_>>()
    );

    let gw = anju_gateway::run::Gateway::new(cfg);
    let metrics = gw.metrics();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gateway = tokio::spawn(gw.run(shutdown.clone()));
    println!(
        "anju-demo: gateway running with {}; Ctrl-C to stop",
        config_path.display()
    );

    let stop_at = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(args.every.max(1)));
    tick.tick().await;
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                let m = &metrics;
                println!(
                    "[{:>4}s] modbus readings {:>6} | mqtt readings {:>6} | spooled {:>6} | replans {} | modbus errors {} | payload errors {}",
                    started.elapsed().as_secs(),
                    m.total(Counter::ModbusReadings),
                    m.total(Counter::MqttReadings),
                    m.total(Counter::ReadingsSpooled),
                    m.total(Counter::ModbusReplans),
                    m.total(Counter::ModbusErrors),
                    m.total(Counter::MqttPayloadErrors),
                );
                if stop_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                    break;
                }
            }
        }
        if gateway.is_finished() {
            break;
        }
    }
    shutdown.cancel();
    match gateway.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => anyhow::bail!("gateway failed: {e}"),
        Err(e) => anyhow::bail!("gateway task failed: {e}"),
    }
    site.shutdown().await;
    let errors: Vec<String> = metrics
        .render()
        .lines()
        .filter(|l| l.contains("error") || l.contains("dropped") || l.contains("rejected"))
        .map(str::to_owned)
        .collect();
    if !errors.is_empty() {
        println!("anju-demo: problems counted:\n  {}", errors.join("\n  "));
    }
    println!("anju-demo: stopped; the spool is at /tmp/anju-demo/data/spool.redb (points) and alerts.redb (alerts, rule state)");
    Ok(())
}
