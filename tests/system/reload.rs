//! Reload without loss (issue 13 item 5), through a real mosquitto into a real VictoriaMetrics:
//! while a publisher sends 20,000 QoS 1 readings at 1,000/s, the gateway reloads its config 21
//! times (20 valid files alternating between two `[engine] max_past` settings and two sink batch
//! sizes, one invalid file):
//! - every reading published is committed to the spool exactly once (`readings_spooled_total`
//!   equals what was published: a redelivered message would be stored twice) and lands in the
//!   store at its time with its value, though the sink and the console restart on every reload;
//! - the MQTT source's session was never dropped (one connection in all);
//! - the invalid file was refused naming the file, the key and the fix, and counted; the
//!   old config kept running;
//! - each applied change is in force right after its reload: a reading two hours old is
//!   refused under `max_past = "1h"` and stored under the default (30 days).
//!
//! And a Modbus site (the simulator's basic scenario) through ten reloads that restart one bus
//! and keep two misses no sample.
//!
//! The reloads go through [`anju_gateway::run::Reloader`], the channel the daemon's SIGHUP
//! handler sends on (`gateway/src/main.rs`), because the harness runs the gateway in-process.
//! Prints how long the reloads took.

use std::time::{Duration, Instant};

use anju_gateway::metrics::Counter;
use anju_gateway::reload::ReloadOutcome;
use anju_system::{free_port, landed, start_gateway, wait_until, Mosquitto, VictoriaMetrics};
use anyhow::{bail, ensure, Context as _, Result};
use rumqttc::QoS;

use crate::mqtt_robustness::{config, good, publisher, wait_acked};

/// Readings published under load.
const N: usize = 20_000;
/// Published per tick of [`TICK`]: 1,000 readings/s.
const PER_TICK: usize = 10;
const TICK: Duration = Duration::from_millis(10);
/// Valid reloads; one invalid one comes in the middle.
const RELOADS: usize = 20;
/// Time between two reloads: the 21 spread over the publishing.
const BETWEEN_RELOADS: Duration = Duration::from_millis(800);
/// The invalid file's attempt.
const INVALID_AT: usize = 10;
/// Age of the probe readings: older than `max_past = "1h"`, younger than the default 30 days.
const PROBE_AGE_MS: i64 = 2 * 3600 * 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_lose_nothing_store_nothing_twice_and_keep_the_session(
) -> Result<()> {
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let console = free_port()?;
    let base = config(dir.path(), &broker.addr().to_string(), &vm.url(), "")
        + &format!(
            "\n[console]\nlisten = \"127.0.0.1:{console}\"\n[console.report]\nenabled = false\n"
        );
    // A: the default max_past (30 days) and sink batch size. B: one hour, and batches of at
    // most 500 (the sink is restarted, and the console, whose readiness watches the sinks).
    // Invalid: a zero flush interval.
    let flush = "flush_interval = \"50ms\"";
    let batch = "batch_max_age = \"100ms\"";
    ensure!(
        base.contains(flush) && base.contains(batch),
        "the base config changed"
    );
    let config_a = base.clone();
    let config_b = base
        .replace(flush, &format!("{flush}\nmax_past = \"1h\""))
        .replace(batch, &format!("{batch}\nbatch_max_records = 500"));
    let invalid = base.replace(flush, "flush_interval = \"0s\"");
    let file = dir.path().join("gateway.toml");

    let gw = start_gateway(&config_a, dir.path())?;
    gw.wait_for_mqtt_session().await?;

    let (load, acked) = publisher(broker.addr(), "reload-load");
    let (probe, probe_acked) = publisher(broker.addr(), "reload-probe");
    let t0 = anju_system::a_minute_ago_ms()? - 60_000;
    let publishing = tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        for i in 0..N {
            if i % PER_TICK == 0 {
                tick.tick().await;
            }
            let ts = t0 + i64::try_from(i)?;
            load.publish(
                format!("a/load/p{}", i % 4),
                QoS::AtLeastOnce,
                false,
                good(i, ts),
            )
            .await?;
        }
        anyhow::Ok(())
    });

    let mut took = Vec::new();
    let mut valid: usize = 0;
    let mut probes = 0;
    let now_ms = || anju_gateway::model::now_ns() / 1_000_000;
    let rejected_probes = |gw: &anju_system::RunningGateway| {
        gw.metrics
            .snapshot()
            .iter()
            .filter(|s| {
                s.counter == Counter::ReadingsRejected
                    && s.labels.iter().any(|(k, v)| *k == "device" && v == "probe")
            })
            .map(|s| s.value)
            .sum::<u64>()
    };
    let mut probe_landing_ts = Vec::new();
    for attempt in 0..=RELOADS {
        tokio::time::sleep(BETWEEN_RELOADS).await;
        let text = if attempt == INVALID_AT {
            &invalid
        } else if valid.is_multiple_of(2) {
            &config_b
        } else {
            &config_a
        };
        std::fs::write(&file, text)?;
        let asked = Instant::now();
        let outcome = gw
            .reloader
            .reload()
            .await
            .context("the gateway stopped during a reload")?;
        let waited = asked.elapsed();
        match outcome {
            ReloadOutcome::Refused { reason } => {
                ensure!(attempt == INVALID_AT, "reload {attempt} refused: {reason}");
                ensure!(
                    reason.contains("gateway.toml")
                        && reason.contains("engine")
                        && reason.contains("flush_interval must be between 1ms and 10s"),
                    "the refusal names the file, the key and the fix: {reason}"
                );
            }
            ReloadOutcome::Applied { took: t, plan } => {
                ensure!(attempt != INVALID_AT, "the invalid config was applied");
                ensure!(
                    plan.mqtt.kept == ["mqtt source nodes"]
                        && plan.mqtt.started.is_empty()
                        && plan.sinks.started == ["sink influxdb"]
                        && plan.console,
                    "the MQTT source is kept, the sink and the console restarted, yet: {plan:?}"
                );
                took.push((t, waited));
                // The change is in force at once: a probe two hours old is refused under B and
                // stored under A (twice each, early, while the load runs).
                if valid < 4 {
                    probes += 1;
                    let ts = now_ms() - PROBE_AGE_MS + i64::try_from(valid)?;
                    let before = rejected_probes(&gw);
                    probe
                        .publish("a/probe/p", QoS::AtLeastOnce, false, good(probes, ts))
                        .await?;
                    if valid.is_multiple_of(2) {
                        wait_until(Duration::from_secs(10), "the old probe refused", || async {
                            rejected_probes(&gw) > before
                        })
                        .await?;
                    } else {
                        probe_landing_ts.push(ts);
                    }
                }
                valid += 1;
            }
        }
    }
    ensure!(valid == RELOADS, "{valid} reloads applied");
    publishing.await??;
    wait_acked(&acked, N).await?;
    wait_acked(&probe_acked, probes).await?;

    // Everything published lands, once per (series, timestamp), with its value.
    let landed_load = |got: &anju_system::Landed| {
        got.iter()
            .filter(|((d, _), _)| d == "load")
            .map(|(_, per)| per.len())
            .sum::<usize>()
    };
    wait_until(
        Duration::from_secs(60),
        "every reading in the store",
        || async {
            match vm.export("settlement_value").await {
                Ok(series) => landed_load(&landed(&series)) >= N,
                Err(_) => false,
            }
        },
    )
    .await?;
    let got = landed(&vm.export("settlement_value").await?);
    let mut seen = 0;
    for ((device, point), per) in &got {
        if device != "load" {
            continue;
        }
        for (ts, values) in per {
            let i = usize::try_from(ts - t0)?;
            ensure!(
                *point == format!("p{}", i % 4),
                "reading {i} landed under {point}"
            );
            #[allow(clippy::cast_precision_loss)] // i < 20,000: exact
            let want = i as f64;
            ensure!(
                values.iter().all(|v| *v == want),
                "{point} at {ts}: {values:?}, published {i}"
            );
            seen += 1;
        }
    }
    ensure!(seen == N, "{seen} of {N} readings landed");
    // The probes: those sent under A landed, those under B did not.
    let probe_landed: Vec<i64> = got
        .get(&("probe".to_owned(), "p".to_owned()))
        .map(|per| per.keys().copied().collect())
        .unwrap_or_default();
    ensure!(
        probe_landed == probe_landing_ts,
        "probes landed at {probe_landed:?}, sent under the default max_past at {probe_landing_ts:?}"
    );

    // Committed exactly once: a message the broker delivered twice (a dropped session, a
    // PUBACK lost in a reload) would count twice here.
    let spooled = gw.metrics.total(Counter::ReadingsSpooled);
    ensure!(
        spooled == (N + probe_landing_ts.len()) as u64,
        "{spooled} readings committed to the spool, {} published and accepted",
        N + probe_landing_ts.len()
    );
    let connects = gw
        .metrics
        .get(Counter::MqttConnects, &[("source", "nodes")]);
    ensure!(
        connects == 1,
        "the MQTT source connected {connects} times: its session was dropped"
    );
    let count = |result| {
        gw.metrics
            .get(Counter::ConfigReloads, &[("result", result)])
    };
    ensure!(
        (count("applied"), count("refused")) == (RELOADS as u64, 1),
        "reloads counted applied {}, refused {}",
        count("applied"),
        count("refused")
    );
    // The console (kept or restarted by the reloads) serves the count.
    let metrics = reqwest::get(format!("http://127.0.0.1:{console}/metrics"))
        .await?
        .text()
        .await?;
    ensure!(
        metrics.contains(&format!(
            "anju_config_reloads_total{{result=\"applied\"}} {RELOADS}\n"
        )),
        "/metrics does not show {RELOADS} applied reloads"
    );

    took.sort();
    let Some(((fastest, _), (slowest, _))) = took.first().zip(took.last()) else {
        bail!("no reload timed");
    };
    let median = took[took.len() / 2].0;
    println!(
        "reload under {} readings/s ({} applied): fastest {fastest:?}, median {median:?}, slowest {slowest:?}",
        PER_TICK * 100,
        took.len()
    );
    gw.stop().await
}

/// Modbus buses through ten reloads that alternate a tag on one TCP device (`lvl-1`): its
/// poller is restarted each time, the other TCP device's and the RTU line's are kept; every
/// device-timestamped sample the simulator served between the first and the last one landed is
/// in the store with its value (no gap at any reload), and after the last reload `lvl-1`'s
/// readings carry the tag of the config in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_buses_through_ten_reloads_miss_no_sample() -> Result<()> {
    const MODBUS_RELOADS: usize = 10;
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let (site, _pty_dir) = crate::modbus_to_influx::basic_site().await?;
    let dir = tempfile::tempdir()?;
    // No console: a reload reads the file as written, where an absent [console] is the default.
    let plain = crate::modbus_to_influx::gateway_config(&site, &vm.url(), dir.path())?
        + "\n[console]\nenabled = false\n";
    let tag = "tags = { structure = \"block-A\" }";
    ensure!(plain.contains(tag), "the Modbus config changed");
    let tagged = plain.replace(tag, "tags = { structure = \"block-A\", floor = \"2\" }");
    let file = dir.path().join("gateway.toml");
    let gw = start_gateway(&plain, dir.path())?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..MODBUS_RELOADS {
        std::fs::write(&file, if i % 2 == 0 { &tagged } else { &plain })?;
        match gw.reloader.reload().await {
            Some(ReloadOutcome::Applied { plan, .. }) => ensure!(
                plan.buses.started
                    == ["poller tcp://".to_owned()
                        + &site.tcp_addr("lvl-1").context("lvl-1")?.to_string()
                        + " [lvl-1]"]
                    && plan.buses.kept.len() == 2,
                "lvl-1's bus restarted, the other two kept, yet: {:?}",
                plan.buses
            ),
            other => bail!("reload {i}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // The last file had no `floor`: lvl-1's readings from now on are in the untagged series.
    tokio::time::sleep(Duration::from_secs(3)).await;
    gw.stop().await?;
    let truth = site.truth();
    site.shutdown().await;

    let exported = vm.export(".*_value").await?;
    let devices = ["lvl-1", "tc-1", "therm-1", "tc-2"];
    let checked = crate::modbus_to_influx::check_modbus_against_truth(
        &landed(&exported),
        &truth.samples(),
        &devices,
        None,
    )?;
    // About 20 s of 1-s samples of 50 points.
    ensure!(checked >= 50 * 15, "only {checked} readings checked");
    let newest = |floor: bool| {
        exported
            .iter()
            .filter(|s| {
                s.metric.get("device").map(String::as_str) == Some("lvl-1")
                    && s.metric.contains_key("floor") == floor
            })
            .filter_map(|s| s.timestamps.last().copied())
            .max()
    };
    let (Some(tagged_last), Some(plain_last)) = (newest(true), newest(false)) else {
        bail!("lvl-1 landed without the tag or with it only");
    };
    ensure!(
        plain_last > tagged_last,
        "after the last reload (no tag) lvl-1 still landed tagged: tagged until {tagged_last}, untagged until {plain_last}"
    );
    Ok(())
}
