//! Sensor ids with every printable ASCII character and some Chinese ones, published over a real
//! mosquitto, land in a real VictoriaMetrics under exactly those ids (InfluxDB line-protocol
//! escaping, docs/DOMAIN.md §Line protocol): nothing dropped, nothing renamed.

use anju_gateway::metrics::Counter;
use std::collections::BTreeMap;
use std::time::Duration;

use anju_system::{profiles_dir, start_gateway, Mosquitto, VictoriaMetrics};
use anyhow::{ensure, Result};
use rumqttc::{AsyncClient, MqttOptions, QoS};

/// The ids under test: each printable ASCII character alone, inside a word and at both ends,
/// plus the ids the outside campaign saw dropped and some CJK.
fn ids() -> Vec<String> {
    let mut ids: Vec<String> = (' '..='~')
        .filter(|c| !c.is_ascii_alphanumeric())
        .flat_map(|c| [format!("p{c}q"), format!("{c}end"), format!("end{c}")])
        .collect();
    ids.extend(
        [
            "s7\\",
            "a b,c=d\"e\\f 中",
            "沉降-01",
            "\\\\double",
            "=",
            "\"",
            " ",
        ]
        .map(str::to_owned),
    );
    ids.sort();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_printable_and_cjk_id_round_trips_through_the_store() -> Result<()> {
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let config = format!(
        "site = \"site-01\"\ngateway_id = \"gw-test\"\ndata_dir = \"{}\"\nprofiles_dir = \"{}\"\n\
         [engine]\nflush_interval = \"50ms\"\n\
         [[mqtt]]\nname = \"nodes\"\naddress = \"{}\"\n\
         [[mqtt.subscriptions]]\nname = \"ids\"\ntopic = \"ids/{{device}}/up\"\nquantity = \"settlement\"\n\
         payload = {{ format = \"json\", sensor = \"sensor\", value = \"value\", time = \"ts\" }}\n\
         [[sinks]]\ntype = \"influxdb\"\nurl = \"{}\"\norg = \"county\"\nbucket = \"anju\"\nbatch_max_age = \"100ms\"\n",
        dir.path().display(),
        profiles_dir().display(),
        broker.addr(),
        vm.url()
    );
    let gw = start_gateway(&config, dir.path())?;
    gw.wait_for_mqtt_session().await?;

    let mut opts = MqttOptions::new("id-publisher", "127.0.0.1", broker.addr().port());
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let ids = ids();
    let t0 = anju_system::a_minute_ago_ms()?;
    let mut want = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let value = 1000.0 + f64::from(u32::try_from(i)?) + 0.25;
        let payload =
            serde_json::json!({ "sensor": id, "value": value, "ts": t0 + i64::try_from(i)? });
        client
            .publish("ids/dev-1/up", QoS::AtLeastOnce, false, payload.to_string())
            .await?;
        want.insert(id.clone(), value);
    }

    // Poll the store until every id is there (bounded: 30 s).
    let mut got = BTreeMap::new();
    for _ in 0..300 {
        got.clear();
        for s in vm.export("settlement_value").await? {
            if let (Some(point), Some(v)) = (s.metric.get("point"), s.values.first()) {
                got.insert(point.clone(), *v);
            }
        }
        if got.len() >= want.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    ensure!(missing.is_empty(), "ids that never landed: {missing:?}");
    ensure!(got == want, "stored {got:?}\npublished {want:?}");
    ensure!(
        gw.metrics.total(Counter::ReadingsRejected) == 0,
        "readings rejected: {}",
        gw.metrics.render()
    );
    pump.abort();
    gw.stop().await
}
