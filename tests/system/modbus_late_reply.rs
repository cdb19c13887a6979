//! Issue 10 item 1: an RTU slave that sometimes answers after the gateway's timeout must never
//! get its late answer stored as the value of another request.
//!
//! Our own RTU slave ([`crate::rtu_slave`]) on a socat pty pair serves two units whose
//! registers all hold distinct values; a 2-register sample time whose high word, read as a
//! temperature, would be an absurd 268.55 °C. For stretches of requests the slave
//! answers 1.5 timeouts late, once in a while 2.5 timeouts late.
//! Every value that lands in VictoriaMetrics (only good readings carry a value) must equal the
//! register its own point names.

use std::collections::BTreeMap;
use std::time::Duration;

use anju_system::{landed, start_gateway, VictoriaMetrics};
use anyhow::{ensure, Result};

use crate::rtu_slave::{RtuSlave, Units};

/// The gateway's reply timeout in this test.
const TIMEOUT: Duration = Duration::from_millis(300);
/// How long the gateway runs against the slave.
const RUN_FOR: Duration = Duration::from_secs(15);

/// (point, address, width) of both units' maps; `stime` is the u32 sample time at 20..=21.
const POINTS: [(&str, u16); 5] = [("temp", 0), ("p01", 2), ("p02", 4), ("p03", 6), ("p04", 8)];
/// Sample time 0x68E7_1234 (Unix seconds in 2025); its high word 0x68E7 = 26855 would read as
/// 268.55 °C.
const STIME: u32 = 0x68E7_1234;

/// Register value of `point` on `unit`: distinct across points and units.
fn raw(unit: u8, idx: usize) -> u16 {
    1900 + 100 * u16::from(unit) + idx as u16
}

fn units() -> Units {
    let mut units = Units::new();
    for unit in [1u8, 2] {
        let mut map = BTreeMap::new();
        for (i, (_, addr)) in POINTS.iter().enumerate() {
            map.insert(*addr, raw(unit, i));
        }
        map.insert(20, (STIME >> 16) as u16);
        map.insert(21, (STIME & 0xFFFF) as u16);
        units.insert(unit, map);
    }
    units
}

/// A slave that is slow for a while, like the device of the issue: out of every 20 requests,
/// numbers 5..=7 are answered 1.5 timeouts late and number 15 is answered 2.5 timeouts late.
fn delay(n: u64) -> Duration {
    match n % 20 {
        5..=7 => TIMEOUT * 3 / 2,
        15 => TIMEOUT * 5 / 2,
        _ => Duration::ZERO,
    }
}

/// `wire` is `port = "rs485-1"` for RTU on the pty, or the device server's address.
fn device(name: &str, unit: u8, wire: &str) -> String {
    let mut s = format!(
        r#"
[[devices]]
name = "{name}"
{wire}
unit = {unit}
poll_interval = "200ms"
timeout = "{ms}ms"
retries = 1
max_backoff = "1s"
max_gap = 0
"#,
        ms = TIMEOUT.as_millis()
    );
    for (p, addr) in POINTS {
        s += &format!(
            "[[devices.points]]\nname = \"{p}\"\nfunction = \"holding\"\naddress = {addr}\ntype = \"u16\"\nscale = 0.01\nunit = \"°C\"\nquantity = \"temperature\"\n"
        );
    }
    s += "[[devices.points]]\nname = \"stime\"\nfunction = \"holding\"\naddress = 20\ntype = \"u32\"\nquantity = \"other\"\n";
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rtu_replies_are_never_stored_as_another_requests_value() -> Result<()> {
    run(false).await
}

/// The same through a serial device server (RTU over TCP has no transaction id either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rtu_over_tcp_replies_are_never_stored_as_another_requests_value() -> Result<()> {
    run(true).await
}

async fn run(over_tcp: bool) -> Result<()> {
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let pty_dir = tempfile::tempdir()?;
    let mut slave = RtuSlave::start(pty_dir.path(), units(), delay)?;
    let wire = if over_tcp {
        format!(
            "transport = \"rtu_over_tcp\"\naddress = \"{}\"",
            slave.expose_tcp()?
        )
    } else {
        "transport = \"rtu\"\nport = \"rs485-1\"".to_owned()
    };
    let dir = tempfile::tempdir()?;
    let config = format!(
        r#"
site = "site-01"
gateway_id = "gw-test"
data_dir = "{data}"

[engine]
flush_interval = "50ms"

[[serial_ports]]
name = "rs485-1"
path = "{tty}"
baud = 19200
{d1}{d2}
[[sinks]]
type = "influxdb"
url = "{vm}"
org = "county"
bucket = "anju"
batch_max_age = "100ms"
"#,
        data = dir.path().display(),
        tty = slave.gateway_path().display(),
        d1 = device("therm-1", 1, &wire),
        d2 = device("therm-2", 2, &wire),
        vm = vm.url(),
    );
    let gw = start_gateway(&config, dir.path())?;
    tokio::time::sleep(RUN_FOR).await;
    let metrics = std::sync::Arc::clone(&gw.metrics);
    gw.stop().await?;

    let got = landed(&vm.export(".*_value").await?);
    let mut good = 0usize;
    let mut wrong = Vec::new();
    for ((device, point), samples) in &got {
        let unit: u8 = match device.as_str() {
            "therm-1" => 1,
            "therm-2" => 2,
            _ => continue,
        };
        let expected = match POINTS.iter().position(|(p, _)| p == point) {
            Some(i) => f64::from(raw(unit, i)) * 0.01,
            None if point == "stime" => f64::from(STIME),
            None => anyhow::bail!("unexpected point {device}/{point}"),
        };
        for values in samples.values() {
            for v in values {
                good += 1;
                if (v - expected).abs() > 1e-9 * expected.abs() {
                    wrong.push(format!(
                        "{device}/{point}: stored {v}, register holds {expected}"
                    ));
                }
            }
        }
    }
    let requests = slave.seen().len();
    ensure!(
        wrong.is_empty(),
        "{} of {good} good readings carry another request's value ({requests} requests), e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    ensure!(
        good >= 10,
        "only {good} readings landed in {RUN_FOR:?} ({requests} requests)"
    );
    let late = metrics.get(
        anju_gateway::metrics::Counter::ModbusErrors,
        &[("device", "therm-1"), ("reason", "late_reply")],
    ) + metrics.get(
        anju_gateway::metrics::Counter::ModbusErrors,
        &[("device", "therm-2"), ("reason", "late_reply")],
    );
    ensure!(late > 0, "no late reply was counted:\n{}", metrics.render());
    println!(
        "{good} good readings, all correct; {requests} requests; {late} late replies discarded"
    );
    Ok(())
}
