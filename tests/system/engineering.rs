//! Engineering quantities over MQTT (issue 7 item 6): the performance benchmark's node message
//! `{"ts":<epoch ms>,"sensor":"s07-n042","kind":"settlement","value":12.345,"unit":"mm"}` on
//! `sites/{site}/nodes/{node}/up`, through a real mosquitto and the gateway into a real
//! VictoriaMetrics: the payload's kind picks the measurement through the configured `kinds`,
//! its unit becomes the `unit` tag, unknown kinds are counted and dropped, and keys that are not
//! configured values never become series.

use anju_gateway::metrics::Counter;
use std::time::Duration;

use anju_system::{profiles_dir, start_gateway, wait_until, Mosquitto, VictoriaMetrics};
use anyhow::{ensure, Context as _, Result};
use rumqttc::{AsyncClient, MqttOptions, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_node_messages_land_with_kind_unit_and_value() -> Result<()> {
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let config = format!(
        r#"site = "site-01"
gateway_id = "gw-test"
data_dir = "{}"
profiles_dir = "{}"
[engine]
flush_interval = "50ms"
[[mqtt]]
name = "nodes"
address = "{}"
timezone = "+08:00"
[[mqtt.subscriptions]]
name = "bench"
topic = "sites/{{site}}/nodes/{{node}}/up"
device = "{{node}}"
[mqtt.subscriptions.payload]
format = "json"
sensor = "sensor"
value = "value"
unit = "unit"
time = "ts"
time_format = "epoch_ms"
kind = "kind"
kinds = {{ settlement = "settlement", temp = "temperature", tilt = "tilt" }}
[[sinks]]
type = "influxdb"
url = "{}"
org = "county"
bucket = "anju"
batch_max_age = "100ms"
"#,
        dir.path().display(),
        profiles_dir().display(),
        broker.addr(),
        vm.url()
    );
    let gw = start_gateway(&config, dir.path())?;
    gw.wait_for_mqtt_session().await?;

    let mut opts = MqttOptions::new("bench-publisher", "127.0.0.1", broker.addr().port());
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let ts = anju_system::a_minute_ago_ms()?;
    let messages = [
        // The benchmark's exact shape.
        format!(
            r#"{{"ts":{ts},"sensor":"s07-n042","kind":"settlement","value":12.345,"unit":"mm"}}"#
        ),
        // Another kind through the map, an extra key that is not a configured value.
        format!(
            r#"{{"ts":{},"sensor":"s07-t01","kind":"temp","value":21.5,"unit":"°C","battery":3.61}}"#,
            ts + 1
        ),
        // A kind nobody configured: counted and dropped.
        format!(
            r#"{{"ts":{},"sensor":"s07-x","kind":"strain","value":1.0,"unit":"ue"}}"#,
            ts + 2
        ),
    ];
    for m in &messages {
        client
            .publish(
                "sites/xa-03/nodes/n042/up",
                QoS::AtLeastOnce,
                false,
                m.clone(),
            )
            .await?;
    }

    let mut settlement = Vec::new();
    let mut temperature = Vec::new();
    for _ in 0..300 {
        settlement = vm.export("settlement_value").await?;
        temperature = vm.export("temperature_value").await?;
        if !settlement.is_empty() && !temperature.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = settlement.first().context("no settlement series landed")?;
    let tag = |k: &str| s.metric.get(k).map(String::as_str);
    ensure!(
        (tag("site"), tag("device"), tag("point"), tag("unit"))
            == (Some("xa-03"), Some("n042"), Some("s07-n042"), Some("mm")),
        "settlement tags {:?}",
        s.metric
    );
    ensure!(
        s.values == [12.345] && s.timestamps == [ts],
        "settlement stored {:?} at {:?}, published 12.345 at {ts}",
        s.values,
        s.timestamps
    );
    let t = temperature
        .first()
        .context("no temperature series landed")?;
    ensure!(
        t.metric.get("unit").map(String::as_str) == Some("°C")
            && t.metric.get("point").map(String::as_str) == Some("s07-t01")
            && t.values == [21.5],
        "temperature {:?} {:?}",
        t.metric,
        t.values
    );
    wait_until(
        Duration::from_secs(5),
        "the unknown kind to be counted",
        || async {
            gw.metrics.get(
                Counter::MqttPayloadErrors,
                &[("subscription", "bench"), ("reason", "unknown_kind")],
            ) == 1
        },
    )
    .await?;
    // Nothing else became a series: no `battery`, no `strain`, no `other`.
    let all = vm.export(".*_value").await?;
    let names: Vec<&str> = all
        .iter()
        .filter_map(|s| s.metric.get("__name__").map(String::as_str))
        .collect();
    ensure!(
        names
            .iter()
            .all(|n| *n == "settlement_value" || *n == "temperature_value"),
        "unexpected series: {names:?}"
    );
    ensure!(all.len() == 2, "expected 2 series, got {}", all.len());
    pump.abort();
    gw.stop().await
}
