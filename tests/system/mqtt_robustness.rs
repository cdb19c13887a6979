//! Bad MQTT input never stops intake (issue 10 items 2 and 9, issue 14 item 3), through a real
//! mosquitto and the gateway into a real VictoriaMetrics:
//! - a 5 MB QoS 1 message waiting in the gateway's persistent session (above the source's
//!   packet limit) is drained and counted, and 1,000 messages after it on two subscriptions of
//!   the same connection all land, with one connection error, not a reconnect loop;
//! - a barrage of malformed payloads interleaved with good ones: every good reading lands and
//!   every bad one is counted by its reason;
//! - 50,000 distinct sensor ids: the first `max_channels` land, the rest are counted refused.

use anju_gateway::metrics::Counter;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anju_system::{landed, start_gateway, wait_until, Mosquitto, VictoriaMetrics};
use anyhow::{ensure, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// The oversized message of issue 10 item 2.
const BIG: usize = 5 * 1024 * 1024;
/// Upper bound of the waits for data to land.
const LAND: Duration = Duration::from_secs(60);

/// A gateway with one `[[mqtt]]` source of two JSON subscriptions (`a/{device}/{point}`,
/// `b/{device}/{point}`, settlement in mm), its extra source keys `extra`, and an InfluxDB sink.
pub(crate) fn config(dir: &std::path::Path, broker: &str, vm: &str, extra: &str) -> String {
    format!(
        r#"site = "site-01"
gateway_id = "gw-test"
data_dir = "{dir}"
profiles_dir = "{profiles}"
[engine]
flush_interval = "50ms"

[[mqtt]]
name = "nodes"
address = "{broker}"
{extra}

[[mqtt.subscriptions]]
name = "a"
topic = "a/{{device}}/{{point}}"
point = "{{point}}"
quantity = "settlement"
unit = "mm"
payload = {{ format = "json", value = "value", time = "ts" }}

[[mqtt.subscriptions]]
name = "b"
topic = "b/{{device}}/{{point}}"
point = "{{point}}"
quantity = "settlement"
unit = "mm"
payload = {{ format = "json", value = "value", time = "ts" }}

[[sinks]]
type = "influxdb"
url = "{vm}"
org = "county"
bucket = "anju"
batch_max_age = "100ms"
"#,
        dir = dir.display(),
        profiles = anju_system::profiles_dir().display(),
    )
}

/// A QoS 1 publisher that takes messages up to twice [`BIG`] and counts the broker's PUBACKs.
pub(crate) fn publisher(broker: std::net::SocketAddr, id: &str) -> (AsyncClient, Arc<AtomicUsize>) {
    let mut options = MqttOptions::new(id, broker.ip().to_string(), broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(2 * BIG, 2 * BIG);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let acked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&acked);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (client, acked)
}

/// Wall clock in ms: the engine refuses readings far from it.
fn wall_ms() -> i64 {
    anju_gateway::model::now_ns() / 1_000_000
}

/// A good reading of `value` at `ts_ms`.
pub(crate) fn good(value: usize, ts_ms: i64) -> Vec<u8> {
    format!(r#"{{"value":{value},"ts":{ts_ms}}}"#).into_bytes()
}

/// Values landed in the store for device `device`, any point.
pub(crate) async fn landed_values(vm: &VictoriaMetrics, device: &str) -> BTreeSet<u64> {
    let Ok(series) = vm.export("settlement_value").await else {
        return BTreeSet::new();
    };
    landed(&series)
        .into_iter()
        .filter(|((d, _), _)| d == device)
        .flat_map(|(_, per)| per.into_values().flatten())
        // Exact small integers: the casts are lossless.
        .map(|v| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let v = v as u64;
            v
        })
        .collect()
}

pub(crate) async fn wait_acked(acked: &AtomicUsize, n: usize) -> Result<()> {
    wait_until(LAND, "the broker's PUBACKs", || async {
        acked.load(Ordering::Relaxed) >= n
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5mb_message_in_the_session_does_not_stop_1000_after_it() -> Result<()> {
    const NORMAL: usize = 1_000;
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let config = config(dir.path(), &broker.addr().to_string(), &vm.url(), "");
    // A first run creates the persistent session and its subscriptions.
    let gw = start_gateway(&config, dir.path())?;
    gw.wait_for_mqtt_session().await?;
    gw.stop().await?;

    // While the gateway is down: the big message, then 1,000 on two subscriptions.
    let (client, acked) = publisher(broker.addr(), "pub-big");
    let t0 = wall_ms();
    client
        .publish("a/big/p", QoS::AtLeastOnce, false, vec![b' '; BIG])
        .await?;
    for i in 0..NORMAL {
        let topic = if i % 2 == 0 { "a/dev/p" } else { "b/dev/q" };
        #[allow(clippy::cast_possible_wrap)]
        let ts = t0 + i as i64;
        client
            .publish(topic, QoS::AtLeastOnce, false, good(i, ts))
            .await?;
    }
    wait_acked(&acked, NORMAL + 1).await?;

    let gw = start_gateway(&config, dir.path())?;
    let want: BTreeSet<u64> = (0..NORMAL as u64).collect();
    let result = wait_until(LAND, "all 1,000 messages in the store", || async {
        landed_values(&vm, "dev").await == want
    })
    .await;
    let too_large = gw.metrics.get(
        Counter::MqttPayloadErrors,
        &[("subscription", "a"), ("reason", "too_large")],
    );
    let errors = gw.metrics.total(Counter::MqttConnectionErrors);
    ensure!(
        result.is_ok(),
        "{} of {NORMAL} landed; {errors} connection errors; counters:\n{}",
        landed_values(&vm, "dev").await.len(),
        gw.metrics.render()
    );
    ensure!(too_large == 1, "the big message counted {too_large} times");
    ensure!(
        errors == 1,
        "{errors} connection errors: the reconnect loop spun"
    );
    gw.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrage_of_malformed_payloads_costs_no_good_reading() -> Result<()> {
    const ROUNDS: usize = 300;
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    // 1 KiB payloads: the source's packet limit is then 1 MiB; 2 KiB messages are received and
    // refused, the 5 MB one is drained.
    let config = config(
        dir.path(),
        &broker.addr().to_string(),
        &vm.url(),
        "max_payload_bytes = 1024",
    );
    let gw = start_gateway(&config, dir.path())?;
    gw.wait_for_mqtt_session().await?;
    let (client, acked) = publisher(broker.addr(), "pub-barrage");
    let t0 = wall_ms();
    // The barrage opens with the message above the packet limit (issue 10 item 9 saw it cost
    // 6,001 readings), so nothing before it is redelivered and every count below is exact.
    client
        .publish("b/junk/big", QoS::AtLeastOnce, false, vec![b'{'; BIG])
        .await?;
    let bad: [(&str, Vec<u8>); 7] = [
        ("not_json", b"{\"value\":".to_vec()),
        (
            "not_a_number",
            format!(r#"{{"value":[1],"ts":{t0}}}"#).into_bytes(),
        ),
        (
            "not_json",
            format!(r#"{{"value":1e400,"ts":{t0}}}"#).into_bytes(),
        ),
        (
            "not_a_number",
            format!(r#"{{"value":"1e999","ts":{t0}}}"#).into_bytes(),
        ),
        ("not_utf8", vec![0xFF, 0xFE, 0x00, 0x01]),
        ("too_large", vec![b' '; 2048]),
        ("empty", Vec::new()),
    ];
    for round in 0..ROUNDS {
        for (i, (_, payload)) in bad.iter().enumerate() {
            let topic = if (round + i) % 2 == 0 {
                "a/junk/x"
            } else {
                "b/junk/x"
            };
            client
                .publish(topic, QoS::AtLeastOnce, false, payload.clone())
                .await?;
        }
        let topic = if round % 2 == 0 { "a/dev/p" } else { "b/dev/q" };
        #[allow(clippy::cast_possible_wrap)]
        let ts = t0 + round as i64;
        client
            .publish(topic, QoS::AtLeastOnce, false, good(round, ts))
            .await?;
    }
    wait_acked(&acked, 1 + ROUNDS * (bad.len() + 1)).await?;
    let want: BTreeSet<u64> = (0..ROUNDS as u64).collect();
    let result = wait_until(LAND, "every good reading in the store", || async {
        landed_values(&vm, "dev").await == want
    })
    .await;
    ensure!(
        result.is_ok(),
        "{} of {ROUNDS} good readings landed; counters:\n{}",
        landed_values(&vm, "dev").await.len(),
        gw.metrics.render()
    );
    // Each kind of bad payload went to both subscriptions in turn.
    let count = |reason: &str| {
        gw.metrics
            .get(
                Counter::MqttPayloadErrors,
                &[("subscription", "a"), ("reason", reason)],
            )
            .saturating_add(gw.metrics.get(
                Counter::MqttPayloadErrors,
                &[("subscription", "b"), ("reason", reason)],
            ))
    };
    let mut expected = std::collections::BTreeMap::new();
    for (reason, _) in &bad {
        *expected.entry(*reason).or_insert(0u64) += ROUNDS as u64;
    }
    // The 5 MB one.
    *expected.entry("too_large").or_insert(0) += 1;
    // QoS 1 is at least once: the messages in flight when the drain reconnects are delivered
    // again (at most mosquitto's in-flight window, `max_inflight_messages` = 20 by default), so
    // a reason may count a few more than were sent, never fewer.
    const REDELIVERED_AT_MOST: u64 = 20;
    for (reason, want) in &expected {
        let got = count(reason);
        ensure!(
            (*want..=*want + REDELIVERED_AT_MOST).contains(&got),
            "{reason}: counted {got}, sent {want} ({} connection errors); counters:\n{}",
            gw.metrics.total(Counter::MqttConnectionErrors),
            gw.metrics.render()
        );
    }
    let counted = gw.metrics.total(Counter::MqttPayloadErrors);
    let sent = expected.values().sum::<u64>();
    ensure!(
        (sent..=sent + REDELIVERED_AT_MOST).contains(&counted),
        "other reasons counted:\n{}",
        gw.metrics.render()
    );
    // One reconnect for the 5 MB message; a loaded machine may see its drain take a second
    // connection. What must never happen is the reconnect loop spinning (the issue: every 500 ms).
    let errors = gw.metrics.total(Counter::MqttConnectionErrors);
    ensure!(
        (1..=MAX_RECONNECTS).contains(&errors),
        "{errors} connection errors for one oversized message"
    );
    gw.stop().await?;
    Ok(())
}

/// Most connection errors one oversized message may cause (its own, and the drain's on a loaded
/// machine).
const MAX_RECONNECTS: u64 = 3;

/// Longest wait for the 50,000-id test's messages to be counted (see there).
const COUNT_ALL: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_ids_the_first_max_channels_land_and_the_rest_are_counted() -> Result<()> {
    const IDS: usize = 50_000;
    /// The default `max_channels`.
    const CAP: usize = anju_gateway::sources::mqtt::config::DEFAULT_MAX_CHANNELS;
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let config = config(dir.path(), &broker.addr().to_string(), &vm.url(), "");
    let gw = start_gateway(&config, dir.path())?;
    gw.wait_for_mqtt_session().await?;
    let (client, acked) = publisher(broker.addr(), "pub-ids");
    let t0 = wall_ms();
    for i in 0..IDS {
        client
            .publish(format!("a/id{i}/p"), QoS::AtLeastOnce, false, good(i, t0))
            .await?;
    }
    wait_acked(&acked, IDS).await?;
    let refused = || {
        gw.metrics
            .get(Counter::MqttSeriesLimitDropped, &[("subscription", "a")])
    };
    // 50,000 QoS 1 messages, each acked only after a durable commit: about 2 s alone, as the
    // source flushes as soon as the broker goes quiet (it waited for a full batch or the flush
    // interval once, and ran past 240 s in CI).
    // The bound is generous; what is asserted is the counts, not the speed.
    let counted = wait_until(COUNT_ALL, "every message counted", || async {
        refused() + gw.metrics.total(Counter::MqttReadings) >= IDS as u64
    })
    .await;
    let m = &gw.metrics;
    ensure!(
        counted.is_ok(),
        "{counted:?}: readings {}, refused {}, messages {}, connects {}, spooled {}",
        m.total(Counter::MqttReadings),
        refused(),
        m.total(Counter::MqttMessages),
        m.total(Counter::MqttConnects),
        m.total(Counter::ReadingsSpooled),
    );
    ensure!(refused() == (IDS - CAP) as u64, "refused {}", refused());
    let want: BTreeSet<String> = (0..CAP).map(|i| format!("id{i}")).collect();
    let devices = || async {
        vm.export("settlement_value")
            .await
            .map(|s| {
                landed(&s)
                    .into_keys()
                    .map(|(d, _)| d)
                    .collect::<BTreeSet<String>>()
            })
            .unwrap_or_default()
    };
    let result = wait_until(LAND, "the first max_channels ids in the store", || async {
        devices().await == want
    })
    .await;
    ensure!(
        result.is_ok(),
        "{} devices landed, want the {CAP} first",
        devices().await.len()
    );
    gw.stop().await?;
    Ok(())
}
