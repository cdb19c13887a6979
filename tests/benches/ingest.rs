//! Ingest benchmark (issue 2): MQTT JSON readings through a real mosquitto into the gateway and
//! out to a real VictoriaMetrics.
//!
//! Scenario: 200,000 readings from 2,000 distinct sensors, one reading per message, QoS 0,
//! published as fast as the broker takes them. The gateway runs as its own release-built
//! process (`target/release/gateway`), so its CPU time and memory are measured from /proc
//! without the publisher's. Prints readings/s landed in the store (first publish to the last
//! reading queryable), gateway CPU microseconds per reading, idle RSS and peak RSS.
//!
//! The sink runs with `batch_max_age = "200ms"`: with the default 1 s, the last partial batch
//! of a finite burst waits up to a second for company, which is half of this two-second run.
//!
//! Run: `cargo bench -p anju-system --bench ingest` (add `-- --no-gzip` to write uncompressed
//! bodies, `-- --readings N` to change the count). Everything runs on 127.0.0.1 and stops by
//! itself: the load is a fixed number of messages and every wait has a deadline.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anju_system::{free_port, repo_root, wait_for_port, Mosquitto, VictoriaMetrics};
use anyhow::{bail, Context as _, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, QoS};

/// Distinct sensors in the scenario.
const SENSORS: u64 = 2_000;
/// Readings published (one per message).
const DEFAULT_READINGS: u64 = 200_000;
/// Longest wait for every reading to be queryable in the store.
const LAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Kernel clock ticks per second for /proc/<pid>/stat (CLK_TCK; 100 on Linux x86_64/aarch64).
const CLK_TCK: u64 = 100;

fn proc_field(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("{key} in /proc/{pid}/status"))?;
    let kb: u64 = line.split_whitespace().nth(1).context("value")?.parse()?;
    Ok(kb)
}

/// User + system CPU time of `pid`, in microseconds.
fn cpu_us(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) * 1_000_000 / CLK_TCK)
}

/// Distinct readings stored and queryable. (VictoriaMetrics' own `vm_rows_inserted_total`
/// moves in steps of about a second, too coarse to time a two-second run.)
async fn stored_count(http: &reqwest011::Client, vm: &VictoriaMetrics) -> Result<u64> {
    let _ = http
        .get(format!("{}/internal/force_flush", vm.url()))
        .send()
        .await;
    let body: serde_json::Value = http
        .get(format!("{}/api/v1/query", vm.url()))
        .query(&[(
            "query",
            "sum(count_over_time(strain_value{device=\"bench\"}[1d]))",
        )])
        .send()
        .await?
        .json()
        .await?;
    let v = body["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("0");
    Ok(v.parse::<f64>().unwrap_or(0.0) as u64)
}

fn build_gateway() -> Result<std::path::PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(repo_root())
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "anju-gateway",
            "--bin",
            "gateway",
        ])
        .status()
        .context("cargo build")?;
    if !status.success() {
        bail!("building the gateway failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map_or_else(|_| repo_root().join("target"), std::path::PathBuf::from);
    Ok(target.join("release").join("gateway"))
}

fn start_gateway(
    bin: &Path,
    dir: &Path,
    broker: &str,
    vm_url: &str,
    gzip: bool,
) -> Result<(Child, u16)> {
    let probe_port = free_port()?;
    let config = format!(
        r#"
site = "bench"
gateway_id = "bench-gw"
data_dir = "{data}"
summary_interval = "60s"

# Only here to tell when the gateway is up: the embedded broker listens last-but-one in start-up.
[embedded_broker]
listen = "127.0.0.1:{probe_port}"

[[mqtt]]
name = "bench"
address = "{broker}"

[[mqtt.subscriptions]]
name = "sensors"
topic = "bench/nodes/{{device}}/up"
qos = 0
quantity = "strain"
unit = "ue"
payload = {{ format = "json", sensor = "sensor", value = "value", time = "ts", time_format = "epoch_ms" }}

[[sinks]]
type = "influxdb"
url = "{vm_url}"
org = "county"
bucket = "anju"
gzip = {gzip}
batch_max_age = "200ms"
"#,
        data = dir.join("data").display(),
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, config)?;
    let mut child = Command::new(bin)
        .args(["run", "-c"])
        .arg(&path)
        .env("ANJU_LOG", "warn,rumqttd=off")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawn gateway")?;
    wait_for_port(
        std::net::SocketAddr::from(([127, 0, 0, 1], probe_port)),
        &mut child,
        "gateway",
    )?;
    Ok((child, probe_port))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let gzip = !args.iter().any(|a| a == "--no-gzip");
    let readings = args
        .iter()
        .position(|a| a == "--readings")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_READINGS);

    let bin = build_gateway()?;
    let vm = VictoriaMetrics::start()?;
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let (mut gw, _) = start_gateway(
        &bin,
        dir.path(),
        &broker.addr().to_string(),
        &vm.url(),
        gzip,
    )?;
    let pid = gw.id();

    // Let the gateway connect and settle, then take the idle figures.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss_kb = proc_field(pid, "VmRSS:")?;
    let cpu_before = cpu_us(pid)?;

    let mut opts = MqttOptions::new("anju-bench-publisher", "127.0.0.1", broker.addr().port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
    let base_ms: i64 = anju_gateway::model::now_ns() / 1_000_000 - (readings as i64);
    let started = Instant::now();
    let publisher = tokio::spawn(async move {
        for i in 0..readings {
            let payload = format!(
                "{{\"sensor\":\"s{:04}\",\"value\":{}.{:03},\"ts\":{}}}",
                i % SENSORS,
                i % 97,
                i % 1000,
                base_ms + i as i64
            );
            if client
                .publish("bench/nodes/bench/up", QoS::AtMostOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
        }
        client
    });
    // Drive the publisher's connection until every publish is on the wire.
    let mut sent = 0u64;
    while sent < readings {
        match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
            Ok(Ok(Event::Outgoing(Outgoing::Publish(_)))) => sent += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("publisher connection failed after {sent} messages: {e}"),
            Err(_) => bail!("publisher stalled after {sent} messages"),
        }
    }
    let published_in = started.elapsed();
    let _client = publisher.await?;

    let http = reqwest011::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let deadline = Instant::now() + LAND_TIMEOUT;
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = stored_count(&http, &vm).await?;
        if stored >= readings {
            break;
        }
        // Every 100 ms: each poll makes the store flush and count, which costs it CPU on the
        // two cores it shares with the gateway.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let landed_in = started.elapsed();
    let cpu_after = cpu_us(pid)?;
    let peak_rss_kb = proc_field(pid, "VmHWM:")?;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = gw.wait();

    let cpu_per_reading = (cpu_after - cpu_before) as f64 / readings as f64;
    println!("ingest benchmark: {readings} readings, {SENSORS} sensors, 1 reading per message, QoS 0, gzip {gzip}");
    println!(
        "  published in        {:>8.2} s ({:.0} messages/s offered)",
        published_in.as_secs_f64(),
        readings as f64 / published_in.as_secs_f64()
    );
    println!(
        "  landed in store     {stored} of {readings} stored and queryable after {:.2} s",
        landed_in.as_secs_f64()
    );
    println!(
        "  throughput          {:>8.0} readings/s (first publish to last reading queryable)",
        stored as f64 / landed_in.as_secs_f64()
    );
    println!(
        "  gateway CPU         {:>8.2} µs per reading ({:.2} s user+system)",
        cpu_per_reading,
        (cpu_after - cpu_before) as f64 / 1e6
    );
    println!(
        "  gateway RSS         idle {:.1} MB, peak {:.1} MB",
        idle_rss_kb as f64 / 1024.0,
        peak_rss_kb as f64 / 1024.0
    );
    if stored < readings {
        bail!("only {stored} of {readings} readings landed within {LAND_TIMEOUT:?}");
    }
    Ok(())
}
