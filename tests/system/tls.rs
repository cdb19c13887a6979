//! TLS end to end (issue 13 item 4): a real mosquitto with a TLS listener and a real
//! VictoriaMetrics serving https only, both with certificates of a CA made in the test. The
//! gateway reads MQTT over TLS and writes to the store over https, trusting that CA through
//! `tls.ca_file`, and presents its client certificate to the broker, which requires one; every
//! reading lands with its value and time. A gateway without the client certificate is turned
//! away; one trusting another CA is refused by both, counts it, and delivers nothing.

use std::time::Duration;

use anju_gateway::metrics::Counter;
use anju_system::{
    landed, profiles_dir, start_gateway, wait_until, Mosquitto, TestCa, VictoriaMetrics,
};
use anyhow::{ensure, Context as _, Result};
use rumqttc::{AsyncClient, MqttOptions, QoS};

/// Readings published: (sensor, value), one message each, at `base + i` ms.
const READINGS: [(&str, f64); 4] = [("s1", 12.5), ("s2", -3.25), ("s1", 12.75), ("s3", 0.0)];

/// The subscription every gateway here has (settlement plates' JSON on `tls/{device}/up`)
/// and an InfluxDB sink to `url` (its `tls` table, if any, follows).
fn plates_to(url: &str) -> String {
    format!(
        r#"[[mqtt.subscriptions]]
name = "plates"
topic = "tls/{{device}}/up"
quantity = "settlement"
unit = "mm"
payload = {{ format = "json", sensor = "sensor", value = "value", time = "ts", time_format = "epoch_ms" }}
[[sinks]]
type = "influxdb"
url = "{url}"
org = "county"
bucket = "anju"
batch_max_age = "100ms"
"#
    )
}

/// A `tls` table line trusting `ca` (none without it), presenting `ca`'s client certificate
/// when `client` is given.
fn tls(ca: Option<&std::path::Path>, client: Option<&TestCa>) -> String {
    let Some(ca) = ca else {
        return String::new();
    };
    let cert = client.map_or_else(String::new, |c| {
        format!(
            ", cert_file = \"{}\", key_file = \"{}\"",
            c.client_cert_file().display(),
            c.client_key_file().display()
        )
    });
    format!("tls = {{ ca_file = \"{}\"{cert} }}\n", ca.display())
}

/// A gateway config: MQTT from `broker` (over TLS with `mqtt_tls` when not empty) into the
/// store at `url` (over https with `store_tls` when not empty).
fn config(
    dir: &std::path::Path,
    site: &str,
    broker: std::net::SocketAddr,
    mqtt_tls: &str,
    url: &str,
    store_tls: &str,
) -> String {
    format!(
        r#"site = "{site}"
gateway_id = "gw-tls"
data_dir = "{}"
profiles_dir = "{}"
[engine]
flush_interval = "50ms"
[[mqtt]]
name = "nodes"
address = "{broker}"
{}
{}{}
retry_initial = "200ms"
retry_max = "1s"
"#,
        dir.display(),
        profiles_dir().display(),
        mqtt_tls,
        plates_to(url),
        store_tls,
    )
}

/// Publish [`READINGS`] for device `device` over the broker's plain listener (the publisher is
/// a sensor node; the gateway is what reads over TLS), QoS 1; the first reading's time.
async fn publish(broker: &Mosquitto, device: &str) -> Result<i64> {
    let mut opts = MqttOptions::new(format!("node-{device}"), "127.0.0.1", broker.addr().port());
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let base = anju_system::a_minute_ago_ms()?;
    for (i, (sensor, value)) in READINGS.iter().enumerate() {
        let ts = base + i64::try_from(i)?;
        client
            .publish(
                format!("tls/{device}/up"),
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"ts":{ts},"sensor":"{sensor}","value":{value}}}"#),
            )
            .await?;
    }
    // Let the messages reach the broker before the client goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    pump.abort();
    Ok(base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_over_mqtt_tls_land_in_an_https_store_trusting_the_site_ca() -> Result<()> {
    anju_system::init_tracing();
    let ca = TestCa::new()?;
    // The broker's TLS listener takes only clients with a certificate of the site CA.
    let broker = Mosquitto::start_with_tls(&ca, true)?;
    let vm = VictoriaMetrics::start_with_tls(&ca)?;
    ensure!(vm.url().starts_with("https://"), "{}", vm.url());
    let dir = tempfile::tempdir()?;
    let tls_addr = broker.tls_addr().context("TLS listener")?;
    let gw = start_gateway(
        &config(
            dir.path(),
            "tls-site",
            tls_addr,
            &tls(Some(&ca.ca_file()), Some(&ca)),
            &vm.url(),
            &tls(Some(&ca.ca_file()), None),
        ),
        dir.path(),
    )?;
    gw.wait_for_mqtt_session().await?;
    let base = publish(&broker, "plate-7").await?;

    let mut got = landed(&[]);
    for _ in 0..100 {
        got = landed(&vm.export("settlement_value").await?);
        if got.values().map(|per| per.len()).sum::<usize>() == READINGS.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, (sensor, value)) in READINGS.iter().enumerate() {
        let ts = base + i64::try_from(i)?;
        let stored = got
            .get(&("plate-7".to_owned(), (*sensor).to_owned()))
            .and_then(|per| per.get(&ts))
            .with_context(|| format!("plate-7/{sensor} at {ts} never landed; got {got:?}"))?;
        ensure!(
            stored == &vec![*value],
            "plate-7/{sensor} at {ts}: stored {stored:?}, published {value}"
        );
    }
    ensure!(
        gw.metrics.total(Counter::MqttTlsErrors) == 0,
        "TLS errors counted on a good connection"
    );
    ensure!(
        gw.metrics.total(Counter::InfluxWrittenRecords) == READINGS.len() as u64,
        "written {} records, published {}",
        gw.metrics.total(Counter::InfluxWrittenRecords),
        READINGS.len()
    );
    gw.stop().await?;

    // The same gateway without its client certificate is turned away by the broker.
    let dir = tempfile::tempdir()?;
    let anonymous = start_gateway(
        &config(
            dir.path(),
            "tls-site",
            tls_addr,
            &tls(Some(&ca.ca_file()), None),
            &vm.url(),
            &tls(Some(&ca.ca_file()), None),
        ),
        dir.path(),
    )?;
    wait_until(
        Duration::from_secs(10),
        "two refused connections",
        || async { anonymous.metrics.total(Counter::MqttConnectionErrors) >= 2 },
    )
    .await?;
    ensure!(
        anonymous.metrics.total(Counter::MqttConnects) == 0,
        "connected without the client certificate the broker requires"
    );
    anonymous.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_or_store_signed_by_another_ca_is_refused_counted_and_nothing_delivered(
) -> Result<()> {
    anju_system::init_tracing();
    let site_ca = TestCa::new()?;
    let other_ca = TestCa::new()?;
    let broker = Mosquitto::start_with_tls(&site_ca, false)?;
    let vm = VictoriaMetrics::start_with_tls(&site_ca)?;
    let tls_addr = broker.tls_addr().context("TLS listener")?;

    // The MQTT source trusts another CA: the handshake fails, is counted, and no reading is
    // ever taken in (so none can be stored).
    let dir = tempfile::tempdir()?;
    let gw = start_gateway(
        &config(
            dir.path(),
            "wrong-mqtt-ca",
            tls_addr,
            &tls(Some(&other_ca.ca_file()), None),
            &vm.url(),
            &tls(Some(&site_ca.ca_file()), None),
        ),
        dir.path(),
    )?;
    wait_until(
        Duration::from_secs(10),
        "two refused TLS handshakes",
        || async {
            gw.metrics
                .get(Counter::MqttTlsErrors, &[("source", "nodes")])
                >= 2
        },
    )
    .await?;
    ensure!(
        gw.metrics.total(Counter::MqttConnects) == 0,
        "connected to a broker it must not trust"
    );
    ensure!(
        gw.metrics
            .get(Counter::MqttConnectionErrors, &[("source", "nodes")])
            >= gw
                .metrics
                .get(Counter::MqttTlsErrors, &[("source", "nodes")]),
        "TLS errors are connection errors too"
    );

    // The store's certificate is of another CA: readings are taken in and kept in the spool,
    // every write is refused at the handshake and retried, none is acknowledged.
    let dir2 = tempfile::tempdir()?;
    let gw2 = start_gateway(
        &config(
            dir2.path(),
            "wrong-store-ca",
            broker.addr(),
            "",
            &vm.url(),
            &tls(Some(&other_ca.ca_file()), None),
        ),
        dir2.path(),
    )?;
    gw2.wait_for_mqtt_session().await?;
    publish(&broker, "plate-8").await?;
    wait_until(Duration::from_secs(15), "retried writes", || async {
        gw2.metrics.total(Counter::InfluxWriteRetries) >= 2
    })
    .await?;
    ensure!(
        gw2.metrics.total(Counter::ReadingsSpooled) == READINGS.len() as u64,
        "spooled {} readings, published {}",
        gw2.metrics.total(Counter::ReadingsSpooled),
        READINGS.len()
    );
    ensure!(
        gw2.metrics.total(Counter::InfluxWrittenRecords) == 0,
        "records acknowledged by a store that must not be trusted"
    );
    ensure!(
        gw.metrics.total(Counter::ReadingsSpooled) == 0,
        "the gateway refused by the broker spooled readings"
    );
    let stored = vm.export("settlement_value").await?;
    ensure!(
        stored.is_empty(),
        "stored through an untrusted TLS: {stored:?}"
    );
    gw.stop().await?;
    gw2.stop().await
}

/// A sensor node's connection to the embedded broker's TLS listener with a login; the first
/// outcome: `Ok` on CONNACK (then `readings` are published, QoS 1), else the error.
async fn node_over_tls(
    port: u16,
    ca: &TestCa,
    id: &str,
    password: &str,
    readings: &[(String, String)],
) -> Result<(), String> {
    let mut problems = anju_gateway::config::Problems::default();
    let tls = anju_gateway::tls::TlsConfig {
        ca_file: ca.ca_file(),
        cert_file: None,
        key_file: None,
        server_name: None,
    }
    .validate("node.tls", &mut problems)
    .ok_or_else(|| format!("{:?}", problems.into_vec()))?;
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_credentials("nodes", password);
    opts.set_transport(tls.mqtt_transport());
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let mut acked = 0;
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    for (topic, payload) in readings {
                        client
                            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    if readings.is_empty() {
                        return Ok(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    acked += 1;
                    if acked == readings.len() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no answer within 10 s".to_owned())?;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_takes_logged_in_nodes_over_tls_and_refuses_a_wrong_password(
) -> Result<()> {
    anju_system::init_tracing();
    let ca = TestCa::new()?;
    let vm = VictoriaMetrics::start()?;
    let dir = tempfile::tempdir()?;
    let pass = dir.path().join("nodes.pass");
    std::fs::write(&pass, "n0des-s3cret\n")?;
    let (plain, tls) = (anju_system::free_port()?, anju_system::free_port()?);
    let config = format!(
        r#"site = "own-broker"
gateway_id = "gw-tls"
data_dir = "{dir}"
profiles_dir = "{profiles}"
[engine]
flush_interval = "50ms"
[embedded_broker]
listen = "127.0.0.1:{plain}"
tls = {{ listen = "127.0.0.1:{tls}", cert_file = "{cert}", key_file = "{key}" }}
[[embedded_broker.users]]
username = "nodes"
password_file = "{pass}"
[[mqtt]]
name = "nodes"
address = "127.0.0.1:{plain}"
username = "nodes"
password_file = "{pass}"
{plates}
"#,
        plates = plates_to(&vm.url()),
        dir = dir.path().display(),
        profiles = profiles_dir().display(),
        cert = ca.cert_file().display(),
        key = ca.key_file().display(),
        pass = pass.display(),
    );
    let gw = start_gateway(&config, dir.path())?;
    gw.wait_for_mqtt_session().await?;
    let ts = anju_system::a_minute_ago_ms()?;
    let reading = |device: &str, value: f64| {
        (
            format!("tls/{device}/up"),
            format!(r#"{{"ts":{ts},"sensor":"s1","value":{value}}}"#),
        )
    };
    let refused = node_over_tls(tls, &ca, "intruder", "guess", &[reading("plate-x", 99.0)]).await;
    ensure!(refused.is_err(), "a wrong password was let in");
    node_over_tls(
        tls,
        &ca,
        "node-9",
        "n0des-s3cret",
        &[reading("plate-9", 4.5)],
    )
    .await
    .map_err(|e| anyhow::anyhow!("the configured login was refused: {e}"))?;
    let mut got = landed(&[]);
    for _ in 0..100 {
        got = landed(&vm.export("settlement_value").await?);
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        got.get(&("plate-9".to_owned(), "s1".to_owned()))
            .and_then(|per| per.get(&ts))
            == Some(&vec![4.5]),
        "plate-9/s1 did not land as 4.5 at {ts}: {got:?}"
    );
    ensure!(
        !got.contains_key(&("plate-x".to_owned(), "s1".to_owned())),
        "the refused node's reading landed"
    );
    gw.stop().await
}
