//! MQTT nodes against a real mosquitto on a free loopback port: every truth entry of the JSON
//! and CIGEM nodes is found, with the same time and value, in what a subscriber received.
//! Fails (does not skip) when mosquitto is not installed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use firmware_sim::{ClockMode, Scenario, Site, StartOptions, TrueSample};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use common::{start_broker, start_broker_on, MOSQUITTO, MQTT_WAIT as WAIT};

/// Days from 1970-01-01 of a civil date (test-side, Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` → ns.
fn iso_ns(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().expect("digits");
    assert_eq!((s.len(), &s[23..]), (24, "Z"), "{s}");
    let days = days_from_civil(n(0, 4), n(5, 7), n(8, 10));
    let ms = ((days * 24 + n(11, 13)) * 60 + n(14, 16)) * 60_000 + n(17, 19) * 1000 + n(20, 23);
    ms * 1_000_000
}

type Key = (String, String, i64);

/// Parses one received message into (device, point, ts) → value; status fields go to `status`.
fn parse(
    topic: &str,
    payload: &[u8],
    data: &mut BTreeMap<Key, f64>,
    status: &mut BTreeSet<(String, String, u64)>,
) {
    if topic == "$dp" {
        let kind = payload[0];
        let len = usize::from(u16::from_be_bytes([payload[1], payload[2]]));
        assert_eq!(len, payload.len() - 3, "CIGEM length field");
        let v: Value = serde_json::from_slice(&payload[3..]).expect("CIGEM JSON");
        let (id, body) = v
            .as_object()
            .expect("object")
            .iter()
            .next()
            .expect("device");
        for (point, inner) in body.as_object().expect("points") {
            if kind == 1 {
                assert_eq!(point, "S1_ZT_1");
                for (field, x) in inner.as_object().expect("status") {
                    if let Some(states) = x.as_object() {
                        for (p, s) in states {
                            let s = s.as_f64().expect("state");
                            status.insert((
                                id.clone(),
                                format!("S1_ZT_1.{field}.{p}"),
                                s.to_bits(),
                            ));
                        }
                    } else {
                        let x = x.as_f64().expect("number");
                        status.insert((id.clone(), format!("S1_ZT_1.{field}"), x.to_bits()));
                    }
                }
                continue;
            }
            assert_eq!(kind, 2);
            for (ts, value) in inner.as_object().expect("by time") {
                let ts = iso_ns(ts);
                match value {
                    Value::Object(fields) => {
                        for (f, x) in fields {
                            data.insert(
                                (id.clone(), format!("{point}.{f}"), ts),
                                x.as_f64().expect("number"),
                            );
                        }
                    }
                    x => {
                        data.insert((id.clone(), point.clone(), ts), x.as_f64().expect("number"));
                    }
                }
            }
        }
        return;
    }
    // sites/<site>/nodes/<node>/<up|sensor>
    let parts: Vec<&str> = topic.split('/').collect();
    let node = parts[3].to_owned();
    let v: Value = serde_json::from_slice(payload).expect("node JSON");
    if let Some(readings) = v.get("readings") {
        let ts = iso_ns(v["ts"].as_str().expect("ts"));
        for r in readings.as_array().expect("readings") {
            let sensor = r["sensor"].as_str().expect("sensor").to_owned();
            data.insert(
                (node.clone(), sensor, ts),
                r["value"].as_f64().expect("value"),
            );
        }
    } else {
        let sensor = v["sensor"].as_str().expect("sensor").to_owned();
        assert_eq!(parts[4], sensor, "single form topic ends in the sensor");
        let ts = v["ts"].as_i64().expect("ms") * 1_000_000;
        data.insert((node, sensor, ts), v["value"].as_f64().expect("value"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_published_truth_reaches_a_subscriber() {
    assert!(
        Path::new(MOSQUITTO).exists(),
        "{MOSQUITTO} not installed: run `bash tests/run.sh`, which installs it"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, addr) = start_broker(dir.path()).await;

    // Subscriber first, so nothing is missed.
    let mut opts = MqttOptions::new("sim-test-sub", "127.0.0.1", addr.port());
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (sub, mut events) = AsyncClient::new(opts, 100);
    sub.subscribe("sites/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    sub.subscribe("$dp", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let poller = tokio::spawn(async move {
        let mut subacks = 0;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    subacks += 1;
                    if subacks == 2 {
                        let _ = tx.send(None);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(Some((p.topic.clone(), p.payload.to_vec())));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    assert_eq!(
        tokio::time::timeout(WAIT, rx.recv()).await.expect("suback"),
        Some(None)
    );

    let s = Scenario::load(&common::repo().join("config/sim/basic.toml")).expect("basic");
    let options = StartOptions {
        clock: ClockMode::Manual,
        mqtt_broker: Some(addr),
        pty_dir: Some(dir.path().join("pty")),
        ..Default::default()
    };
    let site = Site::start(&s, options).await.expect("site starts");
    for _ in 0..5 {
        site.step();
    }
    // Per tick: curing-a 1, plate-1 2 (single form), CIGEM data 1; status at ticks 0 and 5.
    let expected_msgs = 6 * 4 + 2;
    let stats = site.mqtt_stats().expect("mqtt runs");
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.acked.load(Ordering::SeqCst) < expected_msgs {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} acked",
            stats.acked.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut data = BTreeMap::new();
    let mut status = BTreeSet::new();
    for _ in 0..expected_msgs {
        let (topic, payload) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("message")
            .flatten()
            .expect("publish");
        parse(&topic, &payload, &mut data, &mut status);
    }
    poller.abort();

    let mqtt_devices = ["curing-a", "plate-1", "51010400001"];
    let truth: Vec<TrueSample> = site
        .truth()
        .samples()
        .into_iter()
        .filter(|t| mqtt_devices.contains(&t.device.as_str()))
        .collect();
    let (status_truth, data_truth): (Vec<_>, Vec<_>) =
        truth.iter().partition(|t| t.point.starts_with("S1_ZT_1."));
    let want: BTreeMap<Key, f64> = data_truth
        .iter()
        .map(|t| ((t.device.clone(), t.point.clone(), t.ts_ns), t.value))
        .collect();
    assert_eq!(want.len(), data_truth.len(), "no duplicate truth keys");
    assert_eq!(data, want, "received data == truth, exactly");
    // 6 ticks × (3 + 2 sensors + crack 1 + tilt 5 + rain 2).
    assert_eq!(want.len(), 6 * 13);
    let want_status: BTreeSet<(String, String, u64)> = status_truth
        .iter()
        .map(|t| (t.device.clone(), t.point.clone(), t.value.to_bits()))
        .collect();
    assert_eq!(status, want_status);
    // Modbus is unaffected: one entry per point per tick.
    assert_eq!(site.truth().samples_of("lvl-1", "ch1").len(), 6);
    site.shutdown().await;
}

#[tokio::test]
async fn offline_node_publishes_nothing_and_records_the_fault() {
    assert!(
        Path::new(MOSQUITTO).exists(),
        "{MOSQUITTO} not installed: run `bash tests/run.sh`, which installs it"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, addr) = start_broker(dir.path()).await;
    let s = Scenario::load(&common::repo().join("config/sim/basic.toml")).expect("basic");
    let options = StartOptions {
        clock: ClockMode::Manual,
        mqtt_broker: Some(addr),
        pty_dir: Some(dir.path().join("pty")),
        ..Default::default()
    };
    let site = Site::start(&s, options).await.expect("site starts");
    site.set_online("curing-a", false).expect("known");
    site.step();
    site.step();
    site.set_online("curing-a", true).expect("known");
    site.step();
    let stats = site.mqtt_stats().expect("mqtt");
    // Ticks 0-3: curing-a only at ticks 0 and 3 (2), plate-1 2 per tick (8), CIGEM data
    // 1 per tick (4), CIGEM status at tick 0 (1).
    let expected = 2 + 4 * 2 + 4 + 1;
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.acked.load(Ordering::SeqCst) < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} acked",
            stats.acked.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stats.acked.load(Ordering::SeqCst),
        expected,
        "nothing extra"
    );
    let curing: BTreeSet<i64> = site
        .truth()
        .samples()
        .into_iter()
        .filter(|t| t.device == "curing-a")
        .map(|t| t.ts_ns / 1_000_000_000)
        .collect();
    assert_eq!(curing.len(), 2, "curing-a published at two ticks only");
    let faults = site.truth().faults();
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].device, "curing-a");
    assert!(faults[0].end_ns.is_some());
    site.shutdown().await;
}

#[tokio::test]
async fn publishing_resumes_after_a_broker_restart() {
    assert!(
        Path::new(MOSQUITTO).exists(),
        "{MOSQUITTO} not installed: run `bash tests/run.sh`, which installs it"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, addr) = start_broker(dir.path()).await;
    let s = Scenario::load(&common::repo().join("config/sim/basic.toml")).expect("basic");
    let options = StartOptions {
        clock: ClockMode::Manual,
        mqtt_broker: Some(addr),
        pty_dir: Some(dir.path().join("pty")),
        ..Default::default()
    };
    let site = Site::start(&s, options).await.expect("site starts");
    let stats = site.mqtt_stats().expect("mqtt");
    let wait_acked = |n: u64| async move {
        let deadline = tokio::time::Instant::now() + WAIT;
        while stats.acked.load(Ordering::SeqCst) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} acked",
                stats.acked.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Tick 0: curing-a 1, plate-1 2, CIGEM data 1 + status 1.
    wait_acked(5).await;
    drop(broker);
    // Ticks 1-2 while the broker is down: 4 messages each, queued.
    site.step();
    site.step();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stats.acked.load(Ordering::SeqCst),
        5,
        "nothing acknowledged while down"
    );
    let (_broker, _) = start_broker_on(dir.path(), addr.port()).await;
    wait_acked(13).await;
    // The truth holds every tick of curing-a: published once the broker was back.
    let ticks: BTreeSet<i64> = site
        .truth()
        .samples_of("curing-a", "t1")
        .iter()
        .map(|t| t.ts_ns)
        .collect();
    assert_eq!(ticks.len(), 3);
    site.shutdown().await;
}
