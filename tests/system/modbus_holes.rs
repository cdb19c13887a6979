//! Issue 10 item 4: a device that refuses reads touching unmapped registers (exception 02) is
//! read with the fewest requests its map allows once the holes are learned or declared.
//!
//! Our own RTU slave ([`crate::rtu_slave`]) on a socat pty pair serves three units:
//! - unit 1: registers 100..=115 and 120..=121, a hole at 116..=119 (the issue's example:
//!   2 requests per cycle, not 18 single reads);
//! - unit 2: 25 channels at 0..=24 sharing the sample time at 60..=61, the hole 25..=59
//!   declared in its profile together with the default `time_address`;
//! - unit 3: the same map with the hole not declared, learned.
//!
//! The slave logs every request; after learning, each unit's requests repeat exactly its
//! minimal cycle, and every stored value and time equals the slave's registers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anju_system::{landed, start_gateway, VictoriaMetrics};
use anyhow::{ensure, Context as _, Result};

use crate::rtu_slave::{RtuSlave, Seen, Units};

/// The gateway's reply timeout and poll interval in this test.
const TIMEOUT_MS: u64 = 300;
/// How long the gateway runs.
const RUN_FOR: Duration = Duration::from_secs(10);
/// The final stretch of the run in which the plans must have settled.
const STEADY: Duration = Duration::from_secs(4);

fn channel_profile(name: &str, declare_hole: bool) -> String {
    let mut s = format!(
        "name = \"{name}\"\ndescription = \"test logger, 25 channels, one sample time\"\nmax_gap = 10\ntime_address = 60\ntime_word_order = \"abcd\"\n"
    );
    if declare_hole {
        s += "[[holes]]\nfunction = \"holding\"\nfirst = 25\nlast = 59\n";
    }
    for a in 0..25 {
        s += &format!(
            "[[points]]\nname = \"t{a:02}\"\nfunction = \"holding\"\naddress = {a}\ntype = \"i16\"\nscale = 0.01\nunit = \"°C\"\nquantity = \"temperature\"\n"
        );
    }
    s
}

/// Value of channel register `a` of unit `unit`: distinct, positive as i16.
fn channel_raw(unit: u8, a: u16) -> u16 {
    1000 * u16::from(unit) + a
}

fn units(sample_time: u32) -> Units {
    let mut units = Units::new();
    let one: BTreeMap<u16, u16> = (100..=115).chain(120..=121).map(|a| (a, a * 3)).collect();
    units.insert(1, one);
    for unit in [2u8, 3] {
        let mut map: BTreeMap<u16, u16> = (0..25).map(|a| (a, channel_raw(unit, a))).collect();
        map.insert(60, (sample_time >> 16) as u16);
        map.insert(61, (sample_time & 0xFFFF) as u16);
        units.insert(unit, map);
    }
    units
}

/// The requests (start, count) a unit got in the steady window, and whether any was refused.
fn steady(seen: &[Seen], unit: u8, from: Instant) -> (Vec<(u16, u16)>, bool) {
    let mine: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.unit == unit && s.at >= from)
        .collect();
    (
        mine.iter().map(|s| (s.start, s.count)).collect(),
        mine.iter().any(|s| s.exception.is_some()),
    )
}

/// True when `seq` is `cycle` repeated (starting anywhere in it).
fn repeats(seq: &[(u16, u16)], cycle: &[(u16, u16)]) -> bool {
    let Some(offset) = cycle.iter().position(|c| Some(c) == seq.first()) else {
        return false;
    };
    seq.iter()
        .enumerate()
        .all(|(i, r)| *r == cycle[(i + offset) % cycle.len()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_replanned_around_holes_to_the_minimum_per_cycle() -> Result<()> {
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let sample_time = u32::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let pty_dir = tempfile::tempdir()?;
    let slave = RtuSlave::start(pty_dir.path(), units(sample_time), |_| Duration::ZERO)?;
    let dir = tempfile::tempdir()?;
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles)?;
    std::fs::write(
        profiles.join("logger-declared.toml"),
        channel_profile("logger-declared", true),
    )?;
    std::fs::write(
        profiles.join("logger.toml"),
        channel_profile("logger", false),
    )?;
    let common = format!(
        "transport = \"rtu\"\nport = \"rs485-1\"\npoll_interval = \"{TIMEOUT_MS}ms\"\ntimeout = \"{TIMEOUT_MS}ms\"\nmax_backoff = \"1s\"\n"
    );
    let mut unit1 = format!("[[devices]]\nname = \"gap-1\"\nunit = 1\nmax_gap = 10\n{common}");
    for a in (100..=115).chain(120..=121) {
        unit1 += &format!(
            "[[devices.points]]\nname = \"r{a}\"\nfunction = \"holding\"\naddress = {a}\ntype = \"u16\"\nquantity = \"other\"\n"
        );
    }
    let config = format!(
        r#"
site = "site-01"
gateway_id = "gw-test"
data_dir = "{data}"
profiles_dir = "{profiles}"

[engine]
flush_interval = "50ms"

[[serial_ports]]
name = "rs485-1"
path = "{tty}"
baud = 19200

[[devices]]
name = "log-2"
unit = 2
profile = "logger-declared"
{common}
[[devices]]
name = "log-3"
unit = 3
profile = "logger"
{common}
{unit1}
[[sinks]]
type = "influxdb"
url = "{vm}"
org = "county"
bucket = "anju"
batch_max_age = "100ms"
"#,
        data = dir.path().display(),
        profiles = profiles.display(),
        tty = slave.gateway_path().display(),
        vm = vm.url(),
    );
    let gw = start_gateway(&config, dir.path())?;
    let started = Instant::now();
    tokio::time::sleep(RUN_FOR).await;
    gw.stop().await?;
    let seen = slave.seen();
    let from = started + (RUN_FOR - STEADY);

    // Requests per cycle after learning: exactly the minimal cycle, nothing refused.
    let expect: [(u8, &[(u16, u16)]); 3] = [
        (1, &[(100, 16), (120, 2)]),
        (2, &[(0, 25), (60, 2)]),
        (3, &[(0, 25), (60, 2)]),
    ];
    for (unit, cycle) in expect {
        let (seq, refused) = steady(&seen, unit, from);
        ensure!(
            !refused,
            "unit {unit} still got refused requests after learning: {seq:?}"
        );
        ensure!(
            seq.len() >= 2 * cycle.len() && repeats(&seq, cycle),
            "unit {unit}: requests in the last {STEADY:?} were {seq:?}, not the cycle {cycle:?} repeated"
        );
        println!(
            "unit {unit}: {} requests per cycle after learning ({} in the steady window)",
            cycle.len(),
            seq.len()
        );
    }
    // The declared hole was never asked for; the undeclared ones were learned from refusals.
    let refusals = |unit: u8| {
        seen.iter()
            .filter(|s| s.unit == unit && s.exception == Some(2))
            .count()
    };
    ensure!(
        refusals(2) == 0,
        "unit 2's declared hole was read {} times",
        refusals(2)
    );
    ensure!(
        refusals(1) > 0 && refusals(3) > 0,
        "units 1 and 3 should have taught the gateway their holes"
    );

    // Every stored value (and, for the loggers, time) is the slave's register.
    let got = landed(&vm.export(".*_value").await?);
    let mut checked = 0;
    for ((device, point), samples) in &got {
        let (expected, ts_ms) = match device.as_str() {
            "gap-1" => {
                let a: u16 = point.trim_start_matches('r').parse()?;
                (f64::from(a * 3), None)
            }
            "log-2" | "log-3" => {
                let unit = if device == "log-2" { 2 } else { 3 };
                let a: u16 = point.trim_start_matches('t').parse()?;
                (
                    f64::from(channel_raw(unit, a)) * 0.01,
                    Some(i64::from(sample_time) * 1000),
                )
            }
            _ => continue,
        };
        for (ts, values) in samples {
            if let Some(t) = ts_ms {
                ensure!(
                    *ts == t,
                    "{device}/{point} stamped {ts} ms, the device's time is {t} ms"
                );
            }
            for v in values {
                ensure!(
                    (v - expected).abs() <= 1e-9 * expected.abs(),
                    "{device}/{point}: stored {v}, register holds {expected}"
                );
                checked += 1;
            }
        }
    }
    let points_landed = got
        .keys()
        .filter(|(d, _)| ["gap-1", "log-2", "log-3"].contains(&d.as_str()))
        .count();
    ensure!(
        points_landed == 18 + 25 + 25,
        "only {points_landed} of 68 points landed"
    );
    ensure!(checked >= 68, "only {checked} values checked");
    let _ = seen.first().context("the slave saw no request")?;
    Ok(())
}
