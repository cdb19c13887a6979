//! Alerts end to end: the simulator's curing pour (raft-b breaks the GB 50496-2018 §3.0.4-2
//! core–surface limit of 25 °C, raft-a stays inside it) runs at 10 000× through a real
//! mosquitto and the gateway; the alerts reach a real mosquitto subscriber (QoS 1 upstream sink)
//! and a local webhook receiver. Checked against the simulator's truth: red only where the true
//! difference reached 25 °C, every alert's events in order from raise to clear, and the same
//! alert on both paths. Faulty devices raise device-fault alerts, never quality alerts, and
//! their stuck and spiking readings are stored flagged (quality 401 / 402).

use anju_gateway::metrics::Counter;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anju_system::{profiles_dir, start_gateway, wait_until, Mosquitto};
use anyhow::{bail, ensure, Context as _, Result};
use firmware_sim::{ClockMode, Scenario, Site, StartOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A webhook receiver on 127.0.0.1:0 that answers 200 to every POST and keeps the bodies. A
/// plain HTTP/1.1 loop is enough here (keep-alive, Content-Length bodies); nothing about the
/// receiver is under test.
pub(crate) async fn webhook_receiver() -> Result<(String, Arc<Mutex<Vec<Value>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&bodies);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if let Ok(v) = serde_json::from_slice(&body) {
                        store
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(v);
                    }
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if stream.get_mut().write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((url, bodies))
}

/// A QoS 1 subscriber collecting alert JSON from `filter`.
pub(crate) async fn alert_subscriber(
    broker: std::net::SocketAddr,
    filter: &str,
) -> Result<Arc<Mutex<Vec<Value>>>> {
    let mut opts = MqttOptions::new("bureau-subscriber", "127.0.0.1", broker.port());
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    client.subscribe(filter, QoS::AtLeastOnce).await?;
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&got);
    tokio::spawn(async move {
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                        store
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(v);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    Ok(got)
}

pub(crate) fn snapshot(v: &Arc<Mutex<Vec<Value>>>) -> Vec<Value> {
    v.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// The core–surface alerts of `raft` in arrival order, as (state, level).
fn core_surface(alerts: &[Value], raft: &str) -> Vec<(String, String)> {
    alerts
        .iter()
        .filter(|a| {
            a["rule"] == "core-surface"
                && a["channel"].as_str().is_some_and(|c| c.starts_with(raft))
        })
        .map(|a| {
            (
                a["state"].as_str().unwrap_or("").to_owned(),
                a["level"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The gateway config of the curing-pour scenario up to its rules and sinks: the simulator's
/// JSON curing nodes through `broker` (shared by the alert and the derived-channel tests).
pub(crate) fn curing_gateway(data: &std::path::Path, broker: std::net::SocketAddr) -> String {
    format!(
        r#"
site = "anju-curing"
gateway_id = "gw-test"
data_dir = "{data}"
profiles_dir = "{profiles}"

[engine]
# The pour runs 10 000x faster than the wall clock: accept its future timestamps.
max_future = "3650d"
flush_interval = "20ms"

[[mqtt]]
name = "nodes"
address = "{broker}"

[[mqtt.subscriptions]]
name = "curing"
topic = "sites/{{site}}/nodes/{{device}}/up"
quantity = "temperature"
payload = {{ format = "json", readings = "readings", sensor = "sensor", value = "value", unit = "unit", time = "ts" }}
"#,
        data = data.display(),
        profiles = profiles_dir().display(),
    )
}

/// The curing-pour scenario, its JSON curing nodes publishing to `broker`, its RTU bus on a pty
/// pair under `pty_dir` (shared by the alert, derived-channel and curing tests).
pub(crate) async fn curing_site(
    broker: std::net::SocketAddr,
    pty_dir: &std::path::Path,
    clock: ClockMode,
) -> Result<firmware_sim::RunningSite> {
    let scenario = Scenario::load(&anju_system::repo_root().join("config/sim/curing-pour.toml"))?;
    Ok(Site::start(
        &scenario,
        StartOptions {
            mqtt_broker: Some(broker),
            pty_dir: Some(pty_dir.to_path_buf()),
            clock,
            ..Default::default()
        },
    )
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curing_pour_that_breaks_the_core_surface_limit_alerts_the_bureau_in_order() -> Result<()>
{
    anju_system::init_tracing();
    let broker = Mosquitto::start()?;
    let (hook_url, hooks) = webhook_receiver().await?;
    let upstream = alert_subscriber(broker.addr(), "anju/+/alerts").await?;
    let dir = tempfile::tempdir()?;
    let config = curing_gateway(dir.path(), broker.addr())
        + &format!(
            r#"
[alerts]
language = "en"

[[alerts.rules]]
name = "core-surface"
kind = "difference"
pairs = [{{ a = "raft-a-node/core", b = "raft-a-node/surface" }}, {{ a = "raft-b-node/core", b = "raft-b-node/surface" }}]
upper = {{ alarm = 25.0, yellow = 0.8, red = 1.0 }}
confirm = {{ count = 2 }}

[[sinks]]
type = "mqtt"
host = "127.0.0.1"
port = {port}
client_id = "anju-gw-test-alerts"

[[sinks]]
type = "webhook"
format = "generic"
url_env = "ANJU_TEST_WEBHOOK_URL"
"#,
            port = broker.addr().port(),
        );
    // The webhook URL is a secret in production; here the test names it in the environment.
    std::env::set_var("ANJU_TEST_WEBHOOK_URL", &hook_url);
    let gw = start_gateway(&config, dir.path())?;
    gw.wait_for_mqtt_session().await?;

    let pty_dir = tempfile::tempdir()?;
    let site = curing_site(
        broker.addr(),
        pty_dir.path(),
        ClockMode::Realtime { speed: 10_000 },
    )
    .await?;

    // raft-b reaches red (≥ 25 °C) on both delivery paths.
    wait_until(
        Duration::from_secs(90),
        "a red core-surface alert for raft-b upstream and on the webhook",
        || async {
            let red = |v: &[Value]| {
                core_surface(v, "raft-b")
                    .iter()
                    .any(|(_, level)| level == "red")
            };
            red(&snapshot(&upstream)) && red(&snapshot(&hooks))
        },
    )
    .await
    .with_context(|| format!("alerts so far: {}", gw.metrics.render()))?;
    let truth = site.truth();
    site.shutdown().await;
    gw.stop().await?;

    // What the pour really did: the largest true core–surface difference of each raft.
    let max_difference = |node: &str| {
        let samples = truth.samples();
        let mut max = f64::MIN;
        for core in samples
            .iter()
            .filter(|s| s.device == node && s.point == "core")
        {
            if let Some(surface) = samples
                .iter()
                .find(|s| s.device == node && s.point == "surface" && s.ts_ns == core.ts_ns)
            {
                max = max.max(core.value - surface.value);
            }
        }
        max
    };
    let (max_a, max_b) = (max_difference("raft-a-node"), max_difference("raft-b-node"));
    ensure!(
        max_b >= 25.0 && max_a < 25.0,
        "the scenario changed: max differences a {max_a}, b {max_b}"
    );

    let mut delivered = Vec::new();
    for (path, alerts) in [
        ("upstream MQTT", snapshot(&upstream)),
        ("webhook", snapshot(&hooks)),
    ] {
        let b = core_surface(&alerts, "raft-b");
        ensure!(
            b.iter()
                .any(|(s, l)| (s == "raised" || s == "escalated") && l == "red"),
            "{path}: raft-b never red: {b:?}"
        );
        // raft-a stays inside the limit: never red (the truth above says it never reached 25 °C).
        let a = core_surface(&alerts, "raft-a");
        ensure!(
            a.iter().all(|(_, l)| l != "red"),
            "{path}: raft-a went red: {a:?}"
        );
        // Per alert: events in order (seq never goes back; at-least-once may repeat one), the
        // first is a raise, nothing follows a clear; red events carry a value at or above 25.
        let mut seen: std::collections::BTreeMap<String, (i64, String)> =
            std::collections::BTreeMap::new();
        for a in alerts.iter().filter(|a| a["rule"] == "core-surface") {
            let id = a["id"].as_str().context("id")?.to_owned();
            let seq = a["seq"].as_i64().context("seq")?;
            let state = a["state"].as_str().context("state")?.to_owned();
            match seen.get(&id) {
                None => ensure!(
                    seq == 0 && state == "raised",
                    "{path}: alert {id} starts with seq {seq} {state}"
                ),
                Some((last_seq, last_state)) => {
                    ensure!(
                        seq >= *last_seq,
                        "{path}: alert {id} went back from seq {last_seq} to {seq}"
                    );
                    ensure!(
                        last_state != "cleared" || seq == *last_seq,
                        "{path}: alert {id} has events after its clear"
                    );
                }
            }
            if a["level"] == "red" && state != "cleared" {
                let value = a["value"].as_f64().context("value")?;
                ensure!(value >= 25.0, "{path}: red at {value}");
            }
            seen.insert(id, (seq, state));
        }
        let red_id = alerts
            .iter()
            .find(|a| {
                a["rule"] == "core-surface"
                    && a["level"] == "red"
                    && a["channel"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("raft-b"))
            })
            .and_then(|a| a["id"].as_str())
            .context("red alert id")?
            .to_owned();
        delivered.push(red_id);
    }
    // Both sinks read the same alerts stream: the red alert is the same alert on both paths.
    ensure!(
        delivered[0] == delivered[1],
        "MQTT and webhook delivered different red alerts: {delivered:?}"
    );
    Ok(())
}

/// The faulty-devices scenario at 600× (one simulated minute per 100 ms), its RTU bus on a pty
/// pair under `pty_dir`.
async fn faulty_site(pty_dir: &std::path::Path) -> Result<firmware_sim::RunningSite> {
    let scenario =
        Scenario::load(&anju_system::repo_root().join("config/sim/faulty-devices.toml"))?;
    Ok(Site::start(
        &scenario,
        StartOptions {
            pty_dir: Some(pty_dir.to_path_buf()),
            clock: ClockMode::Realtime { speed: 600 },
            ..Default::default()
        },
    )
    .await?)
}

/// The faulty-devices scenario (stuck, spikes, drift, dropouts, a slave that goes silent,
/// exceptions, slow replies, status flags) at 600×: device-fault alerts for the technician, and
/// not one quality alert, although a rule would fire on the spikes if they were believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_devices_raise_device_fault_alerts_and_no_quality_alert() -> Result<()> {
    anju_system::init_tracing();
    let pty_dir = tempfile::tempdir()?;
    let site = faulty_site(pty_dir.path()).await?;
    let tty = site
        .rtu_endpoint("rs485-f")
        .and_then(|e| e.gateway_path.clone())
        .context("rs485-f pty")?;
    let addr = |d: &str| {
        site.tcp_addr(d)
            .map(|a| a.to_string())
            .context("tcp device")
    };
    let dir = tempfile::tempdir()?;
    let device = |name: &str, transport: &str, at: &str, unit: u8, profile: &str| {
        let place = if transport == "tcp" {
            format!("address = \"{at}\"")
        } else {
            format!("port = \"{at}\"")
        };
        format!(
            "[[devices]]\nname = \"{name}\"\ntransport = \"{transport}\"\n{place}\nunit = {unit}\nprofile = \"{profile}\"\n\
             poll_interval = \"100ms\"\ntimeout = \"80ms\"\nretries = 0\nmax_backoff = \"200ms\"\n"
        )
    };
    let config = format!(
        r#"
site = "anju-faulty"
gateway_id = "gw-test"
data_dir = "{data}"
profiles_dir = "{profiles}"

[engine]
# Simulated time runs 600x faster than the wall clock.
max_future = "3650d"

[[serial_ports]]
name = "rs485-f"
path = "{tty}"
baud = 9600

{lvl}{tc}{therm}{tc2}{piezo}
[alerts]
language = "en"

# Would fire on lvl-f/ch2's +25 mm spikes if they were taken for real settlement.
[[alerts.rules]]
name = "settlement-change"
kind = "change"
select = {{ device = "lvl-f", point = "ch2" }}
upper = {{ alarm = 10.0, red = 1.0 }}
confirm = {{ count = 1 }}

[[alerts.checks]]
select = {{ device = "lvl-f" }}
spike = {{ jump = 5.0, within = "3min" }}
"#,
        data = dir.path().display(),
        profiles = profiles_dir().display(),
        tty = tty.display(),
        lvl = device("lvl-f", "tcp", &addr("lvl-f")?, 1, "levelling-8ch"),
        tc = device("tc-f", "tcp", &addr("tc-f")?, 1, "tilt-crack"),
        therm = device("therm-f", "rtu", "rs485-f", 1, "thermistor-16"),
        tc2 = device("tc-f2", "rtu", "rs485-f", 2, "tilt-crack"),
        piezo = device("piezo-f", "rtu", "rs485-f", 3, "vw-piezometer"),
    );
    let gw = start_gateway(&config, dir.path())?;
    // 100 simulated minutes cover every Modbus fault window of the scenario.
    let until = site.now_ns() + 100 * 60 * 1_000_000_000;
    wait_until(Duration::from_secs(60), "100 simulated minutes", || async {
        site.now_ns() >= until
    })
    .await?;
    let metrics = std::sync::Arc::clone(&gw.metrics);
    gw.stop().await?;
    let faults = site.truth().faults();
    site.shutdown().await;

    let m = &metrics;
    let raised = |kind: &str| m.get(Counter::Alerts, &[("kind", kind), ("state", "raised")]);
    ensure!(
        faults.len() >= 10,
        "the scenario injected only {} faults",
        faults.len()
    );
    ensure!(
        raised("device_fault") >= 2,
        "device-fault alerts raised: {}\n{}",
        raised("device_fault"),
        m.render()
    );
    ensure!(m.total(Counter::Alerts) >= raised("device_fault"));
    ensure!(
        raised("quality") == 0,
        "a quality alert was raised by a faulty device:\n{}",
        m.render()
    );
    Ok(())
}

/// The slope-failure scenario (config/sim/slope-failure.toml) publishing its universal
/// geo-hazard device's CIGEM messages on `$dp` through a real mosquitto to a gateway with an
/// MQTT alert sink on the same broker, stepped hour by hour to four hours before the failure;
/// shared by the rate-alert test here and the slope early-warning tests (`slope.rs`).
pub(crate) struct SlopeFailureSite {
    /// The alerts the gateway delivered upstream (`anju/+/alerts`).
    pub upstream: Arc<Mutex<Vec<Value>>>,
    pub gw: anju_system::RunningGateway,
    pub site: firmware_sim::RunningSite,
    /// The scenario's start, Unix ms.
    pub t0_ms: i64,
    _broker: Mosquitto,
    _dir: tempfile::TempDir,
}

impl SlopeFailureSite {
    /// Start it with `sections` (derived blocks, alert rules) in the gateway's config.
    pub(crate) async fn start(sections: &str) -> Result<Self> {
        let broker = Mosquitto::start()?;
        let upstream = alert_subscriber(broker.addr(), "anju/+/alerts").await?;
        let dir = tempfile::tempdir()?;
        let config = format!(
            r#"
site = "anju-slope"
gateway_id = "gw-test"
data_dir = "{data}"
profiles_dir = "{profiles}"

[engine]
# The 20 simulated days are stepped in seconds: accept their future timestamps.
max_future = "3650d"

[[mqtt]]
name = "geo"
address = "{broker}"

[[mqtt.subscriptions]]
name = "geo-hazard"
topic = "$dp"
payload = {{ format = "cigem" }}

[[sinks]]
type = "mqtt"
host = "127.0.0.1"
port = {port}
client_id = "anju-gw-slope-alerts"
{sections}"#,
            data = dir.path().display(),
            profiles = profiles_dir().display(),
            broker = broker.addr(),
            port = broker.addr().port(),
        );
        let gw = start_gateway(&config, dir.path())?;
        gw.wait_for_mqtt_session().await?;
        let scenario =
            Scenario::load(&anju_system::repo_root().join("config/sim/slope-failure.toml"))?;
        let site = Site::start(
            &scenario,
            StartOptions {
                mqtt_broker: Some(broker.addr()),
                clock: ClockMode::Manual,
                ..Default::default()
            },
        )
        .await?;
        let t0_ms = site.start_unix_s() * 1_000;
        // Hourly samples up to four hours before the failure (day 20).
        for _ in 0..(19 * 24 + 20) {
            site.step();
        }
        Ok(Self {
            upstream,
            gw,
            site,
            t0_ms,
            _broker: broker,
            _dir: dir,
        })
    }

    /// Stop the simulator and the gateway; the alerts delivered upstream.
    pub(crate) async fn stop(self) -> Result<Arc<Mutex<Vec<Value>>>> {
        self.site.shutdown().await;
        self.gw.stop().await?;
        Ok(self.upstream)
    }
}

/// The slope heading to failure (creep 2 mm/d, rain on days 2 and 5, inverse-velocity
/// acceleration from day 10 to failure on day 20), stepped hour by hour through mosquitto as the
/// CIGEM device publishes it on `$dp`: the crack meter's rate alert reaches the bureau and climbs
/// yellow → orange → red in order after the acceleration starts, never red before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slope_accelerating_to_failure_escalates_its_rate_alert_in_order() -> Result<()> {
    anju_system::init_tracing();
    let slope = SlopeFailureSite::start(
        r#"
[alerts]
language = "zh"

[[alerts.rules]]
name = "crack-rate"
kind = "rate"
select = { channel = "51010400301/L1_LF_1" }
window = "1d"
upper = { yellow = 5.0, orange = 10.0, red = 20.0 }
confirm = { count = 2 }
"#,
    )
    .await?;
    let (upstream, gw, t0_ms) = (&slope.upstream, &slope.gw, slope.t0_ms);
    // The 1-day least-squares rate four hours before the failure averages
    // 1/v = A·(t_f − t) over [t_f − 28 h, t_f − 4 h], about 35 mm/d on the crack meter.
    wait_until(
        Duration::from_secs(60),
        "a red crack-rate alert upstream",
        || async {
            snapshot(upstream)
                .iter()
                .any(|a| a["rule"] == "crack-rate" && a["level"] == "red")
        },
    )
    .await
    .with_context(|| gw.metrics.render())?;
    let upstream = slope.stop().await?;

    let alerts: Vec<Value> = snapshot(&upstream)
        .into_iter()
        .filter(|a| a["rule"] == "crack-rate")
        .collect();
    let day =
        |a: &Value| (a["event_at"].as_i64().unwrap_or(0) / 1_000_000 - t0_ms) as f64 / 86_400_000.0;
    // Never red before the acceleration starts on day 10.
    for a in &alerts {
        ensure!(
            a["level"] != "red" || day(a) >= 10.0,
            "red on day {:.1}: {a}",
            day(a)
        );
    }
    // The alert that reached red climbed the levels in order, one id from raise to red.
    let red = alerts
        .iter()
        .find(|a| a["level"] == "red")
        .context("red alert")?;
    let id = red["id"].as_str().context("id")?;
    let levels: Vec<&str> = alerts
        .iter()
        .filter(|a| a["id"] == id)
        .filter_map(|a| a["level"].as_str())
        .collect();
    let rank = |l: &str| {
        ["blue", "yellow", "orange", "red"]
            .iter()
            .position(|x| *x == l)
            .unwrap_or(9)
    };
    ensure!(
        levels.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "levels out of order: {levels:?}"
    );
    ensure!(
        levels.first() == Some(&"yellow") && levels.contains(&"orange"),
        "expected yellow, orange, red: {levels:?}"
    );
    ensure!(
        red["message"].as_str().is_some_and(|m| m.contains("警报")),
        "zh message: {}",
        red["message"]
    );
    Ok(())
}

/// How often the faulty-devices scenario spikes lvl-f/ch2 within its spike window
/// (config/sim/faulty-devices.toml: `every = 5`, from the window's first sample).
const SPIKE_EVERY: usize = 5;

/// Issue 7 item 5, on the simulator's truth: lvl-f/ch1 is stuck from 10 to 40 min and lvl-f/ch2
/// spikes by +25 mm on every 5th sample from 10 to 60 min. Every reading lands in
/// VictoriaMetrics once, with the device's value, and the quality the fault windows predict:
/// 401 from the stuck run's third sample (the check's `count`) to the window's end, 402 on the
/// spiked samples, 0 elsewhere. The change rules that would fire on a believed spike or stuck
/// value raise nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_and_spiking_readings_are_stored_flagged_and_move_no_quality_alert() -> Result<()> {
    anju_system::init_tracing();
    let vm = anju_system::VictoriaMetrics::start()?;
    let pty_dir = tempfile::tempdir()?;
    let site = faulty_site(pty_dir.path()).await?;
    let start = site.now_ns();
    let dir = tempfile::tempdir()?;
    let config = format!(
        r#"
site = "anju-faulty"
gateway_id = "gw-test"
data_dir = "{data}"
profiles_dir = "{profiles}"

[engine]
# Simulated time runs 600x faster than the wall clock.
max_future = "3650d"
flush_interval = "50ms"

[[devices]]
name = "lvl-f"
transport = "tcp"
address = "{lvl}"
profile = "levelling-8ch"
poll_interval = "100ms"
timeout = "80ms"
retries = 0
max_backoff = "200ms"

[[sinks]]
type = "influxdb"
url = "{vm}"
org = "county"
bucket = "anju"
batch_max_age = "100ms"

[alerts]
language = "en"

# Would fire on a +25 mm spike if it were believed (the true settlement moves 5 mm at most).
[[alerts.rules]]
name = "level-change-ch1"
kind = "change"
select = {{ device = "lvl-f", point = "ch1" }}
upper = {{ alarm = 10.0, red = 1.0 }}
confirm = {{ count = 1 }}

[[alerts.rules]]
name = "level-change-ch2"
kind = "change"
select = {{ device = "lvl-f", point = "ch2" }}
upper = {{ alarm = 10.0, red = 1.0 }}
confirm = {{ count = 1 }}

[[alerts.checks]]
select = {{ device = "lvl-f", point = "ch1" }}
stuck = {{ count = 3 }}

[[alerts.checks]]
select = {{ device = "lvl-f", point = "ch2" }}
spike = {{ jump = 5.0, within = "3min" }}
"#,
        data = dir.path().display(),
        profiles = profiles_dir().display(),
        lvl = site.tcp_addr("lvl-f").context("lvl-f address")?,
        vm = vm.url(),
    );
    let gw = start_gateway(&config, dir.path())?;
    // Up to 50 simulated minutes (the status flags of lvl-f start then): both fault windows
    // and 10 minutes of normal readings before them.
    let until = start + 50 * 60 * 1_000_000_000;
    wait_until(Duration::from_secs(60), "50 simulated minutes", || async {
        site.now_ns() >= until
    })
    .await?;
    let until_ms = until / 1_000_000;
    // Device times run 600x ahead of the wall clock: export up to a day ahead.
    let far = until_ms + 24 * 3600 * 1000;
    wait_until(
        Duration::from_secs(30),
        "lvl-f/ch1 and ch2 readings up to 50 min in VictoriaMetrics",
        || async {
            vm.export_until("level_quality", Some(far))
                .await
                .is_ok_and(|s| {
                    ["ch1", "ch2"].iter().all(|p| {
                        s.iter().any(|x| {
                            x.metric.get("point").map(String::as_str) == Some(*p)
                                && x.timestamps.last().is_some_and(|t| *t >= until_ms - 60_000)
                        })
                    })
                })
        },
    )
    .await?;
    let metrics = Arc::clone(&gw.metrics);
    gw.stop().await?;
    let truth = site.truth();
    site.shutdown().await;

    // (point, ms) → quality and value, from the store.
    let stored = |series: &[anju_system::ExportedSeries]| {
        let mut out = std::collections::BTreeMap::new();
        for s in series {
            if s.metric.get("device").map(String::as_str) != Some("lvl-f") {
                continue;
            }
            let Some(p) = s.metric.get("point") else {
                continue;
            };
            for (t, v) in s.timestamps.iter().zip(&s.values) {
                out.insert((p.clone(), *t), *v);
            }
        }
        out
    };
    let quality = stored(&vm.export_until("level_quality", Some(far)).await?);
    let value = stored(&vm.export_until("level_value", Some(far)).await?);
    let window = |point: &str, kind: firmware_sim::FaultKind| {
        truth
            .faults_of("lvl-f")
            .into_iter()
            .find(|f| f.point.as_deref() == Some(point) && f.kind == kind)
            .map(|f| (f.start_ns, f.end_ns.unwrap_or(i64::MAX)))
            .with_context(|| format!("the truth has no {kind:?} window on {point}"))
    };
    let stuck = window("ch1", firmware_sim::FaultKind::Stuck)?;
    let spike = window("ch2", firmware_sim::FaultKind::Spike)?;
    let mut checked = [0usize; 3];
    for (point, (w0, w1)) in [("ch1", stuck), ("ch2", spike)] {
        let mut samples = truth.samples_of("lvl-f", point);
        samples.sort_by_key(|s| s.ts_ns);
        let mut in_window = 0usize;
        for s in samples.iter().filter(|s| s.ts_ns < until - 60_000_000_000) {
            let ms = s.ts_ns / 1_000_000;
            let key = (point.to_owned(), ms);
            let inside = s.ts_ns >= w0 && s.ts_ns < w1;
            let want = match (point, inside) {
                // The run is complete at its third sample (the check's count).
                ("ch1", true) if in_window >= 2 => 401.0,
                ("ch2", true) if in_window.is_multiple_of(SPIKE_EVERY) => 402.0,
                _ => 0.0,
            };
            if inside {
                in_window += 1;
            }
            let (Some(q), Some(v)) = (quality.get(&key), value.get(&key)) else {
                bail!(
                    "{point} at {ms} ms (the device served {}) was not stored",
                    s.value
                );
            };
            ensure!(
                (*v - s.value).abs() <= 1e-9 * s.value.abs().max(1.0),
                "{point} at {ms} ms: stored {v}, the device served {}",
                s.value
            );
            ensure!(
                *q == want,
                "{point} at {ms} ms (value {v}, {} the fault window): quality {q}, want {want}",
                if inside { "inside" } else { "outside" }
            );
            checked[usize::from(want == 401.0) + 2 * usize::from(want == 402.0)] += 1;
        }
    }
    ensure!(
        checked[1] >= 20 && checked[2] >= 6 && checked[0] >= 40,
        "too few readings checked (good, stuck, spike): {checked:?}"
    );
    let raised = |kind: &str| metrics.get(Counter::Alerts, &[("kind", kind), ("state", "raised")]);
    ensure!(
        raised("quality") == 0,
        "a quality alert moved:\n{}",
        metrics.render()
    );
    ensure!(
        raised("device_fault") >= 2,
        "the stuck and the spike faults were not raised:\n{}",
        metrics.render()
    );
    Ok(())
}
