//! Modbus TCP and Modbus RTU (on a socat pty pair) from the simulator, through the gateway, into
//! a real VictoriaMetrics: every value and timestamp equals the simulator's truth.

use std::collections::BTreeSet;
use std::time::Duration;

use anju_system::{landed, profiles_dir, start_gateway, wait_until, Landed, VictoriaMetrics};
use anyhow::{ensure, Context as _, Result};
use firmware_sim::{RunningSite, Scenario, Site, StartOptions, TrueSample};

/// Points of the shipped profiles that have no device sample time: they are stamped with the
/// poll time, so their value is the sample current at that moment (or the one just before, when
/// the read straddled a tick).
const POLL_TIME_POINTS: [&str; 3] = ["r01", "heater", "door_open"];

pub(crate) fn gateway_config(
    site: &RunningSite,
    vm_url: &str,
    data_dir: &std::path::Path,
) -> Result<String> {
    let rtu = site
        .rtu_endpoint("rs485-1")
        .context("basic scenario has bus rs485-1")?;
    let tty = rtu
        .gateway_path
        .clone()
        .context("simulator made a pty pair")?;
    let addr = |d: &str| {
        site.tcp_addr(d)
            .map(|a| a.to_string())
            .context("tcp device")
    };
    Ok(format!(
        r#"
site = "site-01"
gateway_id = "gw-test"
data_dir = "{data}"
profiles_dir = "{profiles}"
summary_interval = "2s"

[engine]
flush_interval = "50ms"

[[serial_ports]]
name = "rs485-1"
path = "{tty}"
baud = 9600

[[devices]]
name = "lvl-1"
transport = "tcp"
address = "{lvl}"
profile = "levelling-8ch"
poll_interval = "250ms"
timeout = "500ms"
tags = {{ structure = "block-A" }}

[[devices]]
name = "tc-1"
transport = "tcp"
address = "{tc}"
profile = "tilt-crack"
poll_interval = "250ms"
timeout = "500ms"

[[devices]]
name = "therm-1"
transport = "rtu"
port = "rs485-1"
unit = 1
profile = "thermistor-16"
poll_interval = "250ms"
timeout = "500ms"

[[devices]]
name = "tc-2"
transport = "rtu"
port = "rs485-1"
unit = 2
profile = "tilt-crack"
poll_interval = "250ms"
timeout = "500ms"

[[sinks]]
type = "influxdb"
url = "{vm_url}"
org = "county"
bucket = "anju"
batch_max_age = "100ms"
"#,
        data = data_dir.display(),
        profiles = profiles_dir().display(),
        tty = tty.display(),
        lvl = addr("lvl-1")?,
        tc = addr("tc-1")?,
    ))
}

/// The simulator's basic site (config/sim/basic.toml) running, with its RS-485 pseudo-terminals
/// in the returned directory (kept while the site runs).
pub(crate) async fn basic_site() -> Result<(RunningSite, tempfile::TempDir)> {
    let scenario = Scenario::load(&anju_system::repo_root().join("config/sim/basic.toml"))?;
    let pty_dir = tempfile::tempdir()?;
    let site = Site::start(
        &scenario,
        StartOptions {
            pty_dir: Some(pty_dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await?;
    Ok((site, pty_dir))
}

/// VictoriaMetrics keeps 12 significant decimal digits of a float (its storage format), so a
/// stored value equals the device's to that precision. The gateway's own line protocol carries
/// the exact f64 (checked in `line.rs`'s round-trip test); this bound is far below any sensor's
/// resolution and far above a decoding error (a wrong byte order or scale is off by orders of
/// magnitude, a wrong f32 rounding by 1e-8 relative).
pub(crate) fn same_value(expected: f64, stored: f64) -> bool {
    expected.to_bits() == stored.to_bits()
        || (expected - stored).abs() <= 1e-11 * expected.abs().max(stored.abs())
}

/// Check every landed Modbus reading against the truth; returns how many were checked.
///
/// Device-timestamped channels must have no gap between their first and last landed sample,
/// except for samples taken within `may_miss` (ms): the gateway was down then.
pub(crate) fn check_modbus_against_truth(
    got: &Landed,
    truth: &[TrueSample],
    devices: &[&str],
    may_miss: Option<&std::ops::RangeInclusive<i64>>,
) -> Result<usize> {
    let mut checked = 0;
    for ((device, point), samples) in got {
        if !devices.contains(&device.as_str()) {
            continue;
        }
        let mut true_samples: Vec<&TrueSample> = truth
            .iter()
            .filter(|s| &s.device == device && &s.point == point)
            .collect();
        true_samples.sort_by_key(|s| s.ts_ns);
        ensure!(
            !true_samples.is_empty(),
            "{device}/{point} landed but the simulator never served it"
        );
        for (ts_ms, values) in samples {
            let distinct: BTreeSet<u64> = values.iter().map(|v| v.to_bits()).collect();
            ensure!(
                distinct.len() == 1,
                "{device}/{point} at {ts_ms} ms has different values {values:?}"
            );
            let v = values[0];
            if POLL_TIME_POINTS.contains(&point.as_str()) {
                // The sample current at poll time, or the one before it.
                let idx = true_samples.partition_point(|s| s.ts_ns / 1_000_000 <= *ts_ms);
                ensure!(
                    idx > 0,
                    "{device}/{point}: poll at {ts_ms} ms before the first sample"
                );
                let candidates: Vec<f64> = true_samples[idx.saturating_sub(2)..idx]
                    .iter()
                    .map(|s| s.value)
                    .collect();
                ensure!(candidates.iter().any(|c| same_value(*c, v)), "{device}/{point} at {ts_ms} ms: {v} is none of the values served then {candidates:?}");
            } else {
                let expect = true_samples
                    .iter()
                    .find(|s| s.ts_ns / 1_000_000 == *ts_ms)
                    .with_context(|| format!("{device}/{point}: no true sample at {ts_ms} ms"))?;
                ensure!(
                    same_value(expect.value, v),
                    "{device}/{point} at {ts_ms} ms: stored {v:?}, the device served {:?}",
                    expect.value
                );
            }
            checked += 1;
        }
        // Device-timestamped points: no sample between the first and last landed one is missing.
        if !POLL_TIME_POINTS.contains(&point.as_str()) {
            let first = *samples.keys().next().unwrap_or(&0);
            let last = *samples.keys().last().unwrap_or(&0);
            for s in &true_samples {
                let t = s.ts_ns / 1_000_000;
                ensure!(
                    t < first
                        || t > last
                        || samples.contains_key(&t)
                        || may_miss.is_some_and(|r| r.contains(&t)),
                    "{device}/{point}: the sample at {t} ms is missing between {first} and {last}"
                );
            }
        }
    }
    Ok(checked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_tcp_and_rtu_readings_land_with_the_devices_values_and_times() -> Result<()> {
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let (site, _pty_dir) = basic_site().await?;
    let dir = tempfile::tempdir()?;
    let gw = start_gateway(&gateway_config(&site, &vm.url(), dir.path())?, dir.path())?;

    // Four devices, every point, at least four samples of each.
    let devices = ["lvl-1", "tc-1", "therm-1", "tc-2"];
    let expected_points = 12 + 9 + 20 + 9;
    wait_until(
        Duration::from_secs(30),
        "4 samples of every Modbus point in VictoriaMetrics",
        || async {
            vm.export(".*_value")
                .await
                .map(|s| {
                    let got = landed(&s);
                    let mine: Vec<_> = got
                        .iter()
                        .filter(|((d, _), _)| devices.contains(&d.as_str()))
                        .collect();
                    mine.len() == expected_points && mine.iter().all(|(_, v)| v.len() >= 4)
                })
                .unwrap_or(false)
        },
    )
    .await?;
    gw.stop().await?;
    let truth = site.truth();
    site.shutdown().await;

    let exported = vm.export(".*_value").await?;
    let got = landed(&exported);
    let checked = check_modbus_against_truth(&got, &truth.samples(), &devices, None)?;
    ensure!(
        checked >= expected_points * 4,
        "only {checked} readings checked"
    );

    // Every reading is flagged good, and the tags carry site, gateway, unit and device tags.
    let quality = vm.export(".*_quality").await?;
    for s in &quality {
        ensure!(
            s.values.iter().all(|v| *v == 0.0),
            "a reading was flagged: {:?}",
            s.metric
        );
    }
    let lvl = exported
        .iter()
        .find(|s| {
            s.metric.get("device").map(String::as_str) == Some("lvl-1")
                && s.metric.get("point").map(String::as_str) == Some("ch1")
        })
        .context("lvl-1/ch1 series")?;
    ensure!(
        lvl.metric.get("__name__").map(String::as_str) == Some("level_value"),
        "{:?}",
        lvl.metric
    );
    ensure!(lvl.metric.get("site").map(String::as_str) == Some("site-01"));
    ensure!(lvl.metric.get("gateway").map(String::as_str) == Some("gw-test"));
    ensure!(lvl.metric.get("unit").map(String::as_str) == Some("mm"));
    ensure!(lvl.metric.get("structure").map(String::as_str) == Some("block-A"));
    Ok(())
}
