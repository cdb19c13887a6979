//! MQTT JSON nodes (several readings per message and one per message) and CIGEM `$dp` devices,
//! through a real mosquitto and the gateway, into a real VictoriaMetrics: every value and
//! timestamp equals what the simulator published.

use anju_gateway::metrics::Counter;
use std::collections::BTreeMap;
use std::time::Duration;

use anju_system::{
    landed, profiles_dir, start_gateway, wait_until, Landed, Mosquitto, VictoriaMetrics,
};
use anyhow::{ensure, Context as _, Result};
use firmware_sim::{Scenario, Site, StartOptions, TrueSample};

use crate::modbus_to_influx::same_value;

/// The MQTT part of a gateway config for the basic scenario's nodes.
pub(crate) fn mqtt_config(broker: &str) -> String {
    format!(
        r#"
[[mqtt]]
name = "site-nodes"
address = "{broker}"

[[mqtt.subscriptions]]
name = "batch-nodes"
topic = "sites/{{site}}/nodes/{{device}}/up"
quantity = "temperature"

[mqtt.subscriptions.payload]
format = "json"
readings = "readings"
sensor = "sensor"
value = "value"
unit = "unit"
time = "ts"
sensors = {{ rh = {{ quantity = "humidity" }} }}

[[mqtt.subscriptions]]
name = "single-sensors"
topic = "sites/{{site}}/nodes/{{device}}/{{point}}"
point = "{{point}}"
payload = {{ format = "json", value = "value", time = "ts" }}

[[mqtt.subscriptions]]
name = "geo-hazard"
topic = "$dp"
payload = {{ format = "cigem" }}
"#
    )
}

/// Devices of the basic scenario that publish over MQTT.
pub(crate) const MQTT_DEVICES: [&str; 3] = ["curing-a", "plate-1", "51010400001"];

/// Status fields of CIGEM devices carry no time in the message; the gateway stamps arrival.
pub(crate) fn is_status(point: &str) -> bool {
    point.starts_with("S1_")
}

/// Check landed MQTT readings against the truth: every timestamped truth sample landed with its
/// exact time and value, nothing landed that was not published, and status values arrived in
/// order. Returns the number of samples checked.
pub(crate) fn check_mqtt_against_truth(got: &Landed, truth: &[TrueSample]) -> Result<usize> {
    check_mqtt(got, truth, i64::MIN)
}

/// As [`check_mqtt_against_truth`], for samples published at or after `from_ms` only (status
/// values are then not checked: their order is all they carry).
pub(crate) fn check_mqtt(got: &Landed, truth: &[TrueSample], from_ms: i64) -> Result<usize> {
    // Naming: the gateway names a CIGEM `value` field by its point alone (`L3_YL_1`), so that a
    // scalar point and `{"value": x}` are one series, and a point's reported state
    // `<point>.sensor_state`; the simulator records `L3_YL_1.value` and
    // `S1_ZT_1.sensor_state.<point>`.
    let gateway_name = |p: &str| match p.strip_prefix("S1_ZT_1.sensor_state.") {
        Some(point) => format!("{point}.sensor_state"),
        None => p.strip_suffix(".value").unwrap_or(p).to_owned(),
    };
    let truth: Vec<TrueSample> = truth
        .iter()
        .map(|s| TrueSample {
            point: gateway_name(&s.point),
            ..s.clone()
        })
        .collect();
    let truth = truth.as_slice();
    let mut checked = 0;
    let mut status: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for s in truth
        .iter()
        .filter(|s| MQTT_DEVICES.contains(&s.device.as_str()))
    {
        if is_status(&s.point) || s.point.ends_with(".sensor_state") {
            if from_ms != i64::MIN {
                continue;
            }
            status
                .entry((s.device.clone(), s.point.clone()))
                .or_default()
                .push(s.value);
            continue;
        }
        if s.ts_ns / 1_000_000 < from_ms {
            continue;
        }
        let per = got
            .get(&(s.device.clone(), s.point.clone()))
            .with_context(|| format!("{}/{} never landed", s.device, s.point))?;
        let values = per.get(&(s.ts_ns / 1_000_000)).with_context(|| {
            format!(
                "{}/{}: the sample at {} ms never landed",
                s.device,
                s.point,
                s.ts_ns / 1_000_000
            )
        })?;
        ensure!(
            values.iter().all(|v| same_value(s.value, *v)),
            "{}/{} at {} ms: stored {values:?}, published {}",
            s.device,
            s.point,
            s.ts_ns / 1_000_000,
            s.value
        );
        checked += 1;
    }
    // Nothing landed that was not published.
    for ((device, point), per) in got {
        if !MQTT_DEVICES.contains(&device.as_str())
            || is_status(point)
            || point.ends_with(".sensor_state")
        {
            continue;
        }
        for ts in per.keys() {
            ensure!(
                truth.iter().any(|s| &s.device == device
                    && &s.point == point
                    && s.ts_ns / 1_000_000 == *ts),
                "{device}/{point} at {ts} ms landed but was never published"
            );
        }
    }
    for ((device, point), values) in status {
        let per = got
            .get(&(device.clone(), point.clone()))
            .with_context(|| format!("status {device}/{point} never landed"))?;
        let landed_values: Vec<f64> = per.values().flatten().copied().collect();
        ensure!(
            landed_values.len() >= values.len(),
            "status {device}/{point}: {} published, {} landed",
            values.len(),
            landed_values.len()
        );
        for (want, have) in values.iter().zip(&landed_values) {
            ensure!(
                same_value(*want, *have),
                "status {device}/{point}: published {values:?}, landed {landed_values:?}"
            );
        }
        checked += values.len();
    }
    Ok(checked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_cigem_messages_land_with_their_published_values_and_times() -> Result<()> {
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let config = format!(
        "site = \"site-01\"\ngateway_id = \"gw-test\"\ndata_dir = \"{}\"\nprofiles_dir = \"{}\"\n[engine]\nflush_interval = \"50ms\"\n{}\n\
         [[sinks]]\ntype = \"influxdb\"\nurl = \"{}\"\norg = \"county\"\nbucket = \"anju\"\nbatch_max_age = \"100ms\"\n",
        dir.path().display(),
        profiles_dir().display(),
        mqtt_config(&broker.addr().to_string()),
        vm.url()
    );
    // The gateway first, so its persistent session exists before the first message.
    let gw = start_gateway(&config, dir.path())?;
    gw.wait_for_mqtt_session().await?;
    let scenario = Scenario::load(&anju_system::repo_root().join("config/sim/basic.toml"))?;
    let pty_dir = tempfile::tempdir()?;
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
    // At least six ticks, so the CIGEM device (status every 5 ticks) has sent its status.
    wait_until(
        Duration::from_secs(30),
        "six ticks of MQTT data in the store",
        || async {
            let published = truth
                .samples()
                .iter()
                .filter(|s| s.device == "51010400001" && is_status(&s.point))
                .count();
            published > 0
                && vm
                    .export(".*_value")
                    .await
                    .map(|s| landed(&s).len() >= 15)
                    .unwrap_or(false)
                && truth
                    .samples()
                    .iter()
                    .filter(|s| s.device == "curing-a")
                    .count()
                    >= 18
        },
    )
    .await?;
    site.shutdown().await;
    // Let the last published messages through the broker, the gateway and the sink.
    let last_problem = std::sync::Mutex::new(String::new());
    let waited = wait_until(
        Duration::from_secs(30),
        "every published MQTT sample in the store",
        || async {
            match vm
                .export(".*_value")
                .await
                .map(|s| check_mqtt_against_truth(&landed(&s), &truth.samples()))
            {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => {
                    *last_problem
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = e.to_string();
                    false
                }
                Err(_) => false,
            }
        },
    )
    .await;
    if let Err(e) = waited {
        let problem = last_problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        return Err(e.context(problem));
    }
    let got = landed(&vm.export(".*_value").await?);
    let checked = check_mqtt_against_truth(&got, &truth.samples())?;
    ensure!(checked >= 40, "only {checked} MQTT samples checked");
    ensure!(
        gw.metrics.total(Counter::MqttPayloadErrors) == 0,
        "payload errors:\n{}",
        gw.metrics.render()
    );
    gw.stop().await?;

    // The CIGEM tilt point became one channel per field, tagged as tilt.
    let tilt = vm.export("tilt_value").await?;
    ensure!(
        tilt.iter().any(
            |s| s.metric.get("point").map(String::as_str) == Some("L1_QJ_1.X")
                && s.metric.get("device").map(String::as_str) == Some("51010400001")
        ),
        "no L1_QJ_1.X tilt series: {:?}",
        tilt.iter().map(|s| &s.metric).collect::<Vec<_>>()
    );
    Ok(())
}
