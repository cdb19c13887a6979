//! Durability across failures: the store goes away mid-stream, and the gateway is restarted
//! while it holds an undelivered backlog. Every reading the gateway took lands, once, with the
//! device's value. For Modbus the only gap allowed is the time the gateway process itself was
//! down (a Modbus device keeps no history to catch up from); for MQTT there is no gap at all,
//! because the broker keeps the gateway's persistent session and queues QoS 1 messages for it.

use anju_gateway::metrics::Counter;
use std::time::{Duration, Instant};

use anju_system::{landed, start_gateway, wait_until, Mosquitto, VictoriaMetrics};
use anyhow::{ensure, Result};
use firmware_sim::{Scenario, Site, StartOptions};

use crate::modbus_to_influx::{check_modbus_against_truth, gateway_config};
use crate::mqtt_to_influx::{check_mqtt, mqtt_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_and_gateway_restart_lose_nothing_the_gateway_took() -> Result<()> {
    anju_system::init_tracing();
    let mut vm = VictoriaMetrics::start()?;
    let scenario = Scenario::load(&anju_system::repo_root().join("config/sim/basic.toml"))?;
    let pty_dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let site = Site::start(
        &scenario,
        StartOptions {
            mqtt_broker: Some(broker.addr()),
            pty_dir: Some(pty_dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await?;
    let truth = site.truth();
    let dir = tempfile::tempdir()?;
    // Retry quickly so the test does not wait out a long backoff after the store returns.
    let config = gateway_config(&site, &vm.url(), dir.path())?.replace(
        "batch_max_age = \"100ms\"",
        "batch_max_age = \"100ms\"\nretry_initial = \"200ms\"\nretry_max = \"500ms\"",
    ) + &mqtt_config(&broker.addr().to_string());
    let devices = ["lvl-1", "tc-1", "therm-1", "tc-2"];

    // Phase 1: data flows.
    let gw = start_gateway(&config, dir.path())?;
    wait_until(
        Duration::from_secs(30),
        "first readings in the store",
        || async {
            vm.export("level_value")
                .await
                .map(|s| !s.is_empty())
                .unwrap_or(false)
        },
    )
    .await?;
    // MQTT messages count from the gateway's first session on (earlier ones had no subscriber).
    let mqtt_from_ms = wall_ms() + 1_000;

    // Phase 2: the store goes away; readings pile up in the spool.
    vm.stop();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ensure!(
        gw.metrics.total(Counter::InfluxWriteRetries) > 0,
        "the sink never noticed the outage"
    );

    // Phase 3: the gateway restarts with that backlog on disk.
    let down_from = Instant::now();
    let down_from_ms = wall_ms();
    gw.stop().await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let gw = start_gateway(&config, dir.path())?;
    let down_to_ms = wall_ms();
    let down_for = down_from.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Phase 4: the store returns; the backlog drains.
    vm.restart()?;
    let end_ms = wall_ms() + 2000;
    wait_until(
        Duration::from_secs(60),
        "readings after the outage in the store",
        || async {
            vm.export("level_value")
                .await
                .map(|s| {
                    let got = landed(&s);
                    got.len() == 8
                        && got
                            .values()
                            .all(|per| per.keys().next_back().is_some_and(|t| *t >= end_ms))
                })
                .unwrap_or(false)
        },
    )
    .await?;
    site.shutdown().await;
    wait_until(
        Duration::from_secs(30),
        "every MQTT message published since the first session",
        || async {
            vm.export(".*_value")
                .await
                .map(|s| check_mqtt(&landed(&s), &truth.samples(), mqtt_from_ms).is_ok())
                .unwrap_or(false)
        },
    )
    .await?;
    gw.stop().await?;

    let got = landed(&vm.export(".*_value").await?);
    let samples = truth.samples();
    // No gap in any device-timestamped channel except while the gateway was down (plus one
    // sample interval and the poller's start-up at each edge).
    let allowed = (down_from_ms - 1_000)..=(down_to_ms + 1_500);
    check_modbus_against_truth(&got, &samples, &devices, Some(&allowed))?;
    let mut checked = 0;
    for ((device, point), per) in &got {
        if !devices.contains(&device.as_str())
            || ["r01", "heater", "door_open"].contains(&point.as_str())
        {
            continue;
        }
        let first = *per.keys().next().unwrap_or(&0);
        for s in samples
            .iter()
            .filter(|s| &s.device == device && &s.point == point)
        {
            let t = s.ts_ns / 1_000_000;
            if t < first || t > end_ms - 1_000 || allowed.contains(&t) {
                continue;
            }
            ensure!(per.contains_key(&t), "{device}/{point}: sample at {t} ms never landed (gateway down {down_from_ms}..{down_to_ms}, {down_for:?})");
            checked += 1;
        }
    }
    ensure!(checked > 100, "only {checked} samples checked for gaps");

    // MQTT: everything published while the gateway was up, down, or waiting for the store.
    let mqtt_checked = check_mqtt(&got, &samples, mqtt_from_ms)?;
    ensure!(
        mqtt_checked > 50,
        "only {mqtt_checked} MQTT samples checked"
    );
    Ok(())
}

fn wall_ms() -> i64 {
    anju_gateway::model::now_ns() / 1_000_000
}
