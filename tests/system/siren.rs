//! The site siren (issue 13 item 7): a Modbus output alert sink switches the simulator's relay
//! coil through the poller of its Modbus TCP device. Settlement readings published through a
//! real mosquitto breach the red threshold; the coil is read from the simulator's own state
//! (what the device was told, not what the gateway believes):
//! - the raise turns it on within [`SWITCH_BOUND`];
//! - a second alert holds it: the first alert's clear leaves it on;
//! - the second's acknowledgement (消警, through the console's form) turns it off;
//! - a raise and its clear turn it on and off again;
//! - a relay module power-cycled (its coils back to off) is switched on again by the sink's
//!   re-assertion, and after a gateway restart (the module power-cycled meanwhile) the sink
//!   recomputes the siren from the alerts active in the saved rule state: on again, although
//!   their raise events were delivered before the restart; the acknowledged alert stays silent;
//! - a write to the module's writable sampling-interval register through the console's
//!   `POST /write` (what `gateway write` sends) lands in the simulator's register; writes to a
//!   read-only point or out of the register's range are refused with 422 and write nothing;
//! - a second sink wired to a coil the device refuses (exception 02) is counted
//!   (`modbus_write_errors_total`, `modbus_output_failures_total`) while the device's readings
//!   keep landing in VictoriaMetrics.
//!
//! And on an RS-485 line (the simulator's RTU slaves on a socat pty pair), where the relay module
//! shares the line with a thermistor logger: the siren follows a raise and its clear, a device
//! command sets the module's sampling interval, every write is confirmed by its echo, and the
//! logger's polls on the same line see no late or mismatched reply.

use std::time::{Duration, Instant};

use anju_gateway::metrics::Counter;
use anju_system::{free_port, start_gateway, wait_until, Mosquitto, VictoriaMetrics};
use anyhow::{ensure, Context as _, Result};
use firmware_sim::profile::Function;
use firmware_sim::{ClockMode, RunningSite, Scenario, Site, StartOptions};
use rumqttc::QoS;

use crate::mqtt_robustness::{good, publisher, wait_acked};

/// Longest time from an alert event reaching the gateway to the relay switching. The sink wakes
/// on the spool's append and the write waits at most one poll of the device (200 ms here).
const SWITCH_BOUND: Duration = Duration::from_secs(5);

/// How long the coil must stay as it is to count as "kept": longer than the sink's re-assert
/// interval (1 s here), so a wrong re-assertion would show.
const KEPT_FOR: Duration = Duration::from_secs(3);

/// The relay module alone, sampled once a second in real time.
const SCENARIO: &str = r#"
name = "siren"
seed = 13
sample_interval = "1s"
site = "site-01"

[[modbus_tcp]]
name = "site-io"
profile = "io-relay"
unit = 1
"#;

/// Red at once (confirm count 1) when a settlement published through mosquitto reaches 30 mm.
const RED_SETTLEMENT_RULE: &str = r#"
[alerts]
language = "zh"

[[alerts.rules]]
name = "settlement-total"
kind = "absolute"
select = { kind = "settlement" }
upper = { alarm = 30.0, red = 1.0 }
confirm = { count = 1 }
"#;

/// The siren coil of config/profiles/io-relay.toml.
const SIREN_COIL: u16 = 0;

fn siren(site: &RunningSite) -> Option<u16> {
    site.modbus_output("site-io", Function::Coil, SIREN_COIL)
}

/// Wait until the siren coil is `on`, within [`SWITCH_BOUND`]; how long since `started` (the
/// publish or post that caused it).
async fn siren_becomes(
    site: &RunningSite,
    on: bool,
    started: Instant,
    what: &str,
) -> Result<Duration> {
    wait_until(SWITCH_BOUND, what, || async {
        siren(site) == Some(u16::from(on))
    })
    .await?;
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_siren_follows_the_red_alerts_and_a_refused_write_stops_no_polling() -> Result<()> {
    anju_system::init_tracing();
    let broker = Mosquitto::start()?;
    let vm = VictoriaMetrics::start()?;
    let upstream = crate::alerts::alert_subscriber(broker.addr(), "anju/+/alerts").await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("siren.toml");
    std::fs::write(&file, SCENARIO)?;
    let scenario = Scenario::load_with_profiles(&file, &anju_system::profiles_dir())?;
    let site = Site::start(
        &scenario,
        StartOptions {
            clock: ClockMode::Realtime { speed: 1 },
            ..Default::default()
        },
    )
    .await?;
    let io = site.tcp_addr("site-io").context("site-io listens")?;
    let port = free_port()?;
    let extra = format!(
        r#"{RED_SETTLEMENT_RULE}
[[devices]]
name = "site-io"
transport = "tcp"
address = "{io}"
profile = "io-relay"
poll_interval = "200ms"
timeout = "500ms"

[[sinks]]
type = "modbus_output"
name = "siren"
device = "site-io"
coil = {SIREN_COIL}
level = "red"
reassert_interval = "1s"

# Wired to a coil the module does not have: every write is refused with exception 02.
[[sinks]]
type = "modbus_output"
name = "beacon-miswired"
device = "site-io"
coil = 7
retry_initial = "200ms"
retry_max = "1s"

[[sinks]]
type = "mqtt"
host = "127.0.0.1"
port = {mqtt}
client_id = "anju-gw-test-siren"

[console]
listen = "127.0.0.1:{port}"
"#,
        mqtt = broker.addr().port()
    );
    let config = format!(
        "{}{extra}",
        crate::mqtt_robustness::config(dir.path(), &broker.addr().to_string(), &vm.url(), "")
    );
    let gw = start_gateway(&config, dir.path())?;
    gw.wait_for_mqtt_session().await?;
    let (client, acked) = publisher(broker.addr(), "pub-siren");
    let mut sent = 0;
    let mut publish = |point: &'static str, mm: usize| {
        sent += 1;
        let client = client.clone();
        let n = sent;
        async move {
            let ts = anju_gateway::model::now_ns() / 1_000_000;
            client
                .publish(
                    format!("a/{point}/p0"),
                    QoS::AtLeastOnce,
                    false,
                    good(mm, ts),
                )
                .await?;
            Ok::<usize, anyhow::Error>(n)
        }
    };
    let events = |state: &'static str, channel: &'static str| {
        crate::alerts::snapshot(&upstream)
            .into_iter()
            .filter(|a| a["state"] == state && a["channel"] == channel)
            .count()
    };
    ensure!(siren(&site) == Some(0), "the siren starts off");

    // 35 mm on pier-1: above the 30 mm alarm, red at once (confirm count 1).
    let started = Instant::now();
    let n = publish("pier-1", 35).await?;
    wait_acked(&acked, n).await?;
    let on_after = siren_becomes(&site, true, started, "the siren on after the raise").await?;

    // A second red alert on pier-2 holds the same coil.
    let n = publish("pier-2", 36).await?;
    wait_acked(&acked, n).await?;
    wait_until(SWITCH_BOUND, "pier-2's raise upstream", || async {
        events("raised", "pier-2/p0") == 1
    })
    .await?;
    // pier-1 back to 0 mm: its alert clears, pier-2's still holds the siren.
    let n = publish("pier-1", 0).await?;
    wait_acked(&acked, n).await?;
    wait_until(SWITCH_BOUND, "pier-1's clear upstream", || async {
        events("cleared", "pier-1/p0") == 1
    })
    .await?;
    let kept_until = Instant::now() + KEPT_FOR;
    while Instant::now() < kept_until {
        ensure!(
            siren(&site) == Some(1),
            "the siren went off while pier-2's alert holds it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 消警 of pier-2's alert on the console: nothing holds the siren any more.
    let id = crate::alerts::snapshot(&upstream)
        .into_iter()
        .find(|a| a["state"] == "raised" && a["channel"] == "pier-2/p0")
        .and_then(|a| a["id"].as_str().map(str::to_owned))
        .context("pier-2's alert id")?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let (status, body) = crate::console::post_ack(&http, &base, &id, &base, "现场 李工").await?;
    ensure!(status == 200, "acknowledgement: {status} {body}");
    let off_after_ack = siren_becomes(
        &site,
        false,
        started,
        "the siren off after the acknowledgement",
    )
    .await?;

    // A new raise sounds it again; its clear releases it.
    let started = Instant::now();
    let n = publish("pier-1", 40).await?;
    wait_acked(&acked, n).await?;
    siren_becomes(&site, true, started, "the siren on after the second raise").await?;
    let started = Instant::now();
    let n = publish("pier-1", 0).await?;
    wait_acked(&acked, n).await?;
    let off_after_clear =
        siren_becomes(&site, false, started, "the siren off after the clear").await?;
    eprintln!(
        "siren: on {on_after:?} after the raising publish, off {off_after_ack:?} after the 消警 post, off {off_after_clear:?} after the clearing publish"
    );

    // A third alert; the module loses power: the re-assertion (every 1 s) switches it on again.
    let n = publish("pier-3", 45).await?;
    wait_acked(&acked, n).await?;
    siren_becomes(&site, true, Instant::now(), "the siren on for pier-3").await?;
    site.power_cycle("site-io")?;
    ensure!(siren(&site) == Some(0), "a power cycle releases the relay");
    let reasserted = siren_becomes(
        &site,
        true,
        Instant::now(),
        "the siren on again after the power cycle",
    )
    .await?;
    eprintln!("siren: on again {reasserted:?} after the module's power cycle");

    // The miswired beacon: refused with exception 02, counted per device and per sink.
    let scraped = crate::console::scrape(&http, &base).await?;
    let refused = scraped
        .get(
            "anju_modbus_write_errors_total",
            &[
                ("device", "site-io"),
                ("reason", "exception_02_illegal_data_address"),
            ],
        )
        .unwrap_or(0.0);
    ensure!(refused >= 1.0, "refused writes counted: {refused}");
    let failures = scraped
        .get(
            "anju_modbus_output_failures_total",
            &[("sink", "beacon-miswired")],
        )
        .unwrap_or(0.0);
    ensure!(failures >= 1.0, "failed output writes counted: {failures}");
    ensure!(
        scraped
            .get("anju_modbus_output_failures_total", &[("sink", "siren")])
            .is_none(),
        "the siren's writes all succeeded"
    );
    // The device's supply voltage keeps landing after the refusals: readings stamped after this
    // point reach the store.
    let after_ms = anju_gateway::model::now_ns() / 1_000_000;
    wait_until(
        Duration::from_secs(15),
        "site-io readings landing after the refused writes",
        || async {
            vm.export("voltage_value").await.is_ok_and(|series| {
                series
                    .iter()
                    .filter(|s| s.metric.get("device").map(String::as_str) == Some("site-io"))
                    .flat_map(|s| s.timestamps.iter())
                    .filter(|&&t| t > after_ms)
                    .count()
                    >= 3
            })
        },
    )
    .await?;

    // Restart: the gateway is stopped, the module power-cycled meanwhile. pier-3's alert is
    // active in the saved rule state (its raise delivered before the stop); pier-2's is active
    // but acknowledged. The restarted sink sounds the siren for pier-3 alone.
    gw.stop().await?;
    site.power_cycle("site-io")?;
    let started = Instant::now();
    let gw = start_gateway(&config, dir.path())?;
    let restored = siren_becomes(&site, true, started, "the siren on after the restart").await?;
    eprintln!("siren: on {restored:?} after the gateway was started again");
    gw.wait_for_mqtt_session().await?;
    let started = Instant::now();
    let n = publish("pier-3", 0).await?;
    wait_acked(&acked, n).await?;
    siren_becomes(&site, false, started, "the siren off after pier-3's clear").await?;
    let kept_until = Instant::now() + KEPT_FOR;
    while Instant::now() < kept_until {
        ensure!(
            siren(&site) == Some(0),
            "the siren sounded again: an acknowledged or cleared alert was restored as holding it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Device commands: the sampling interval register (u16 seconds) through the console.
    let http = reqwest::Client::new();
    let (status, text) = post_write(&http, &base, "sample_interval", "300").await?;
    ensure!(status == 200, "write: {status} {text}");
    ensure!(
        site.modbus_output("site-io", Function::Holding, 0) == Some(300),
        "the module's sampling interval is {:?}",
        site.modbus_output("site-io", Function::Holding, 0)
    );
    let (status, text) = post_write(&http, &base, "supply", "12").await?;
    ensure!(
        status == 422 && text.contains("is not writable"),
        "write to a read-only point: {status} {text}"
    );
    let (status, text) = post_write(&http, &base, "sample_interval", "70000").await?;
    ensure!(
        status == 422 && text.contains("outside 0..=65535"),
        "write out of range: {status} {text}"
    );
    ensure!(
        site.modbus_output("site-io", Function::Holding, 0) == Some(300),
        "a refused write changed the register"
    );
    gw.stop().await?;
    site.shutdown().await;
    Ok(())
}

/// `POST /write` of `value` to site-io's `point`, as `gateway write` sends it: status and body.
async fn post_write(
    http: &reqwest::Client,
    base: &str,
    point: &str,
    value: &str,
) -> Result<(u16, String)> {
    let r = http
        .post(format!("{base}/write"))
        .form(&[("device", "site-io"), ("point", point), ("value", value)])
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// A relay module and a thermistor logger on one RS-485 line.
const RTU_SCENARIO: &str = r#"
name = "siren-rtu"
seed = 14
sample_interval = "1s"
site = "site-01"

[[modbus_rtu]]
bus = "rs485-1"
baud = 9600

[[modbus_rtu.slaves]]
name = "therm-1"
profile = "thermistor-16"
unit = 1

[[modbus_rtu.slaves]]
name = "io-rtu"
profile = "io-relay"
unit = 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_siren_on_an_rs485_line_is_written_between_the_polls_of_the_line() -> Result<()> {
    anju_system::init_tracing();
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("siren-rtu.toml");
    std::fs::write(&file, RTU_SCENARIO)?;
    let scenario = Scenario::load_with_profiles(&file, &anju_system::profiles_dir())?;
    let pty_dir = tempfile::tempdir()?;
    let site = Site::start(
        &scenario,
        StartOptions {
            clock: ClockMode::Realtime { speed: 1 },
            pty_dir: Some(pty_dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await?;
    let tty = site
        .rtu_endpoint("rs485-1")
        .and_then(|e| e.gateway_path.clone())
        .context("the simulator made a pty pair")?;
    let port = free_port()?;
    // Nothing listens on the store's port: readings stay in the spool; the counters tell.
    let store = format!("http://127.0.0.1:{}", free_port()?);
    let extra = format!(
        r#"{RED_SETTLEMENT_RULE}
[[serial_ports]]
name = "rs485-1"
path = "{tty}"
baud = 9600

[[devices]]
name = "therm-1"
transport = "rtu"
port = "rs485-1"
unit = 1
profile = "thermistor-16"
poll_interval = "250ms"
timeout = "500ms"

[[devices]]
name = "io-rtu"
transport = "rtu"
port = "rs485-1"
unit = 3
profile = "io-relay"
poll_interval = "250ms"
timeout = "500ms"

[[sinks]]
type = "modbus_output"
name = "siren"
device = "io-rtu"
coil = {SIREN_COIL}
reassert_interval = "1s"

[console]
listen = "127.0.0.1:{port}"
"#,
        tty = tty.display()
    );
    let config = format!(
        "{}{extra}",
        crate::mqtt_robustness::config(dir.path(), &broker.addr().to_string(), &store, "")
    );
    let gw = start_gateway(&config, dir.path())?;
    gw.wait_for_mqtt_session().await?;
    let (client, acked) = publisher(broker.addr(), "pub-siren-rtu");
    let rtu_siren = || site.modbus_output("io-rtu", Function::Coil, SIREN_COIL);
    let becomes = |on: bool, what: &'static str| {
        wait_until(SWITCH_BOUND, what, move || async move {
            rtu_siren() == Some(u16::from(on))
        })
    };
    let ts = anju_gateway::model::now_ns() / 1_000_000;
    client
        .publish("a/pier-1/p0", QoS::AtLeastOnce, false, good(35, ts))
        .await?;
    wait_acked(&acked, 1).await?;
    becomes(true, "the RTU siren on after the raise").await?;
    client
        .publish("a/pier-1/p0", QoS::AtLeastOnce, false, good(0, ts + 1000))
        .await?;
    wait_acked(&acked, 2).await?;
    becomes(false, "the RTU siren off after the clear").await?;

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let r = http
        .post(format!("{base}/write"))
        .form(&[
            ("device", "io-rtu"),
            ("point", "sample_interval"),
            ("value", "120"),
        ])
        .send()
        .await?;
    let (status, text) = (r.status().as_u16(), r.text().await?);
    ensure!(status == 200, "RTU write: {status} {text}");
    ensure!(
        site.modbus_output("io-rtu", Function::Holding, 0) == Some(120),
        "the module's sampling interval is {:?}",
        site.modbus_output("io-rtu", Function::Holding, 0)
    );

    // The logger's polls went on, and no frame on the shared line was late or mismatched.
    let before = gw
        .metrics
        .get(Counter::ModbusReadings, &[("device", "therm-1")]);
    wait_until(
        Duration::from_secs(10),
        "therm-1 polled after the writes",
        || async {
            gw.metrics
                .get(Counter::ModbusReadings, &[("device", "therm-1")])
                > before
        },
    )
    .await?;
    let scraped = crate::console::scrape(&http, &base).await?;
    let writes = scraped
        .get("anju_modbus_writes_total", &[("device", "io-rtu")])
        .unwrap_or(0.0);
    ensure!(writes >= 3.0, "confirmed RTU writes: {writes}");
    for device in ["therm-1", "io-rtu"] {
        for reason in ["late_reply", "mismatched_reply", "garbled", "timeout"] {
            let n = scraped.get(
                "anju_modbus_errors_total",
                &[("device", device), ("reason", reason)],
            );
            ensure!(n.is_none(), "{device}: {n:?} {reason} on the shared line");
        }
        let n = scraped.get(
            "anju_modbus_write_errors_total",
            &[("device", device), ("reason", "timeout")],
        );
        ensure!(n.is_none(), "{device}: {n:?} write timeouts");
    }
    gw.stop().await?;
    site.shutdown().await;
    Ok(())
}
