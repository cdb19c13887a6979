//! The MQTT faults of `config/sim/faulty-devices.toml` seen by a subscriber on a real mosquitto
//! (free loopback port; the test fails if mosquitto is missing): last wills published by the
//! broker when a node's connection drops (and the node's retained "online" when it is back),
//! malformed and oversized payloads, dropped ticks, a skewed node clock and a CIGEM point in
//! error (sentinel value and `sensor_state`). Each tick is published and acknowledged before the
//! next is taken, so every received message is known to belong to one tick.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{start_broker, MQTT_WAIT};
use firmware_sim::{ClockMode, RunningSite, Scenario, Site, StartOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;

/// Last sample of the run (150 min at one sample a minute).
const LAST: u64 = 150;
/// Site name of faulty-devices.toml.
const SITE: &str = "anju-faulty";
/// The CIGEM device of faulty-devices.toml.
const GH: &str = "51010400901";

/// One received publish.
#[derive(Debug, Clone)]
struct Got {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// Subscribes `client_id` to `topics` and forwards every publish.
async fn subscribe(
    port: u16,
    client_id: &str,
    topics: &[&str],
) -> (mpsc::UnboundedReceiver<Got>, tokio::task::JoinHandle<()>) {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(opts, 100);
    for t in topics {
        client
            .subscribe(*t, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let n = topics.len();
    let task = tokio::spawn(async move {
        let _client = client;
        let mut subacks = 0;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    subacks += 1;
                    if subacks == n {
                        let _ = ready_tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(Got {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    });
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(MQTT_WAIT, ready_rx.recv())
        .await
        .expect("suback")
        .expect("ready");
    (rx, task)
}

/// Waits until everything queued so far is acknowledged by the broker.
async fn settle(site: &RunningSite) -> u64 {
    let stats = site.mqtt_stats().expect("mqtt runs");
    let deadline = tokio::time::Instant::now() + MQTT_WAIT;
    loop {
        let queued = stats.queued.load(Ordering::SeqCst);
        let done = stats.acked.load(Ordering::SeqCst) + stats.dropped.load(Ordering::SeqCst);
        if done >= queued {
            return stats.acked.load(Ordering::SeqCst);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {queued} acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn is_data(g: &Got) -> bool {
    g.topic == "$dp" || g.topic.ends_with("/up") || g.topic.contains("/plate-f/")
}

/// Takes ticks 1..=LAST; returns every publish received, tagged with its tick.
async fn run(site: &RunningSite, rx: &mut mpsc::UnboundedReceiver<Got>) -> Vec<(u64, Got)> {
    let mut got = Vec::new();
    let mut acked = 0;
    for k in 0..=LAST {
        if k > 0 {
            site.step();
        }
        let now = settle(site).await;
        // The broker acknowledges before it delivers: wait for this tick's data messages.
        let mut want = now - acked;
        acked = now;
        let deadline = tokio::time::Instant::now() + MQTT_WAIT;
        while want > 0 {
            let g = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("tick {k}: {want} message(s) not delivered"))
                .expect("subscriber");
            if is_data(&g) {
                want -= 1;
            }
            got.push((k, g));
        }
        // Wills and online messages of this tick (not acknowledged to us: QoS 0 or the broker's).
        tokio::time::sleep(Duration::from_millis(5)).await;
        while let Ok(g) = rx.try_recv() {
            got.push((k, g));
        }
    }
    got
}

fn cigem_json(payload: &[u8]) -> Option<Value> {
    serde_json::from_slice(payload.get(3..)?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_faults_seen_by_a_subscriber() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, addr) = start_broker(dir.path()).await;
    let (mut rx, sub) =
        subscribe(addr.port(), "faults-sub", &["sites/#", "devices/#", "$dp"]).await;
    let s = Scenario::load(&common::repo().join("config/sim/faulty-devices.toml")).expect("loads");
    let site = Site::start(
        &s,
        StartOptions {
            clock: ClockMode::Manual,
            mqtt_broker: Some(addr),
            pty_dir: Some(dir.path().join("pty")),
            ..Default::default()
        },
    )
    .await
    .expect("site starts");
    let t0_ms = site.start_unix_s() * 1000;
    let got = run(&site, &mut rx).await;
    let truth = site.truth();

    let node_up = format!("sites/{SITE}/nodes/node-f/up");
    let node_status = format!("sites/{SITE}/nodes/node-f/status");
    let on = |topic: &str, ks: std::ops::Range<u64>| -> Vec<&(u64, Got)> {
        got.iter()
            .filter(|(k, g)| g.topic == topic && ks.contains(k))
            .collect()
    };
    let truth_ticks = |device: &str| -> Vec<i64> {
        let mut t: Vec<i64> = truth
            .samples()
            .into_iter()
            .filter(|t| t.device == device)
            .map(|t| (t.ts_ns / 1_000_000 - t0_ms + 30_000).div_euclid(60_000))
            .collect();
        t.dedup();
        t
    };

    // Last will: node-f's connection drops at tick 60; the broker publishes "offline". The node
    // sends nothing until 80, then reconnects and announces "online".
    let status: Vec<(u64, &[u8])> = got
        .iter()
        .filter(|(_, g)| g.topic == node_status)
        .map(|(k, g)| (*k, g.payload.as_slice()))
        .collect();
    assert!(
        status
            .iter()
            .any(|(k, p)| (60..63).contains(k) && *p == b"offline"),
        "{status:?}"
    );
    assert!(
        status.iter().any(|(k, p)| *k >= 80 && *p == b"online"),
        "{status:?}"
    );
    assert!(
        on(&node_up, 60..80).is_empty(),
        "node-f published while offline"
    );
    assert_eq!(on(&node_up, 80..81).len(), 1);
    // The CIGEM device's will at 90; nothing from it on $dp during 90-99.
    let gh_will = got
        .iter()
        .find(|(_, g)| g.topic == format!("devices/{GH}/state"))
        .expect("CIGEM will");
    assert!((90..93).contains(&gh_will.0));
    assert_eq!(gh_will.1.payload, br#"{"state":"offline"}"#);
    assert!(on("$dp", 90..100).is_empty());
    assert!(!on("$dp", 100..101).is_empty());
    // The status topic is retained: a late subscriber gets the last state, "online".
    let (mut late, late_task) = subscribe(addr.port(), "late-sub", &[node_status.as_str()]).await;
    let retained = tokio::time::timeout(MQTT_WAIT, late.recv())
        .await
        .expect("retained")
        .expect("msg");
    assert!(
        retained.retain && retained.payload == b"online",
        "{retained:?}"
    );
    late_task.abort();

    // Malformed payloads of node-f during 15-24: never a usable batch; cycle of three shapes.
    let malformed = on(&node_up, 15..25);
    assert_eq!(malformed.len(), 10);
    for (k, g) in &malformed {
        let usable = serde_json::from_slice::<Value>(&g.payload)
            .ok()
            .is_some_and(|v| v["ts"].is_string() && v["readings"].is_array());
        assert!(
            !usable,
            "tick {k}: {:?}",
            String::from_utf8_lossy(&g.payload)
        );
        match k % 3 {
            0 => assert!(
                serde_json::from_slice::<Value>(&g.payload).is_err(),
                "cut-off JSON"
            ),
            1 => assert_eq!(g.payload[0], 0xFF, "non-JSON log line"),
            _ => assert!(serde_json::from_slice::<Value>(&g.payload)
                .is_ok_and(|v| v["readings"].is_object())),
        }
    }
    let node_ticks = truth_ticks("node-f");
    assert!(
        node_ticks.iter().all(|k| !(15..25).contains(k)),
        "no truth for malformed messages"
    );
    assert!(node_ticks.contains(&14) && node_ticks.contains(&25));

    // Oversized CIGEM frames during 35-39: ≥ 128 KiB, the 16-bit length field wrapped.
    let data_35: Vec<&(u64, Got)> = on("$dp", 35..40)
        .into_iter()
        .filter(|(_, g)| g.payload[0] == 2)
        .collect();
    assert_eq!(data_35.len(), 5);
    for (k, g) in data_35 {
        let json_len = g.payload.len() - 3;
        assert!(
            g.payload.len() >= 131_072,
            "tick {k}: {} bytes",
            g.payload.len()
        );
        assert_eq!(
            usize::from(u16::from_be_bytes([g.payload[1], g.payload[2]])),
            json_len % 65_536
        );
    }
    // No data truth for them (the valid status message of tick 35 is still truth), nor for the
    // offline ticks.
    let gh_data: Vec<i64> = truth
        .samples_of(GH, "L1_LF_1")
        .iter()
        .map(|t| (t.ts_ns / 1_000_000 - t0_ms).div_euclid(60_000))
        .collect();
    assert!(
        gh_data
            .iter()
            .all(|k| !(35..40).contains(k) && !(90..100).contains(k)),
        "{gh_data:?}"
    );
    assert_eq!(gh_data.len(), 151 - 5 - 10);
    let gh_status = truth.samples_of(GH, "S1_ZT_1.ext_power_volt");
    assert_eq!(
        gh_status.len(),
        31 - 2,
        "status every 5 ticks, except at 90 and 95 (offline)"
    );

    // CIGEM point in error during 10-19: the data carry −4321.0, the status sensor_state −2.
    for (k, g) in on("$dp", 10..21) {
        let v = cigem_json(&g.payload).expect("CIGEM JSON");
        let body = &v[GH];
        if g.payload[0] == 2 {
            let lf = body["L1_LF_1"]
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_f64);
            if *k < 20 {
                assert_eq!(lf, Some(-4321.0), "tick {k}");
            } else {
                assert_ne!(lf, Some(-4321.0));
            }
        } else {
            let state = body["S1_ZT_1"]["sensor_state"]["L1_LF_1"].as_i64();
            assert_eq!(state, Some(if *k < 20 { -2 } else { 0 }), "status at {k}");
        }
    }
    assert_eq!(
        truth
            .samples_of(GH, "L1_LF_1")
            .iter()
            .filter(|t| t.value == -4321.0)
            .count(),
        10
    );

    // Dropout of plate-f with probability 0.5 during 20-79: some ticks missing, some not, and
    // the truth holds exactly the ticks that were sent.
    let plate: BTreeMap<u64, usize> = got
        .iter()
        .filter(|(_, g)| g.topic.contains("/plate-f/"))
        .fold(BTreeMap::new(), |mut m, (k, _)| {
            *m.entry(*k).or_default() += 1;
            m
        });
    let sent = (20..80).filter(|k| plate.contains_key(k)).count();
    assert!(sent > 10 && sent < 50, "{sent} of 60 ticks sent");
    assert!((0..20).chain(80..=LAST).all(|k| plate.contains_key(&k)));
    let plate_truth: Vec<i64> = truth_ticks("plate-f");
    let plate_sent: Vec<i64> = plate
        .keys()
        .map(|k| i64::try_from(*k).expect("small"))
        .collect();
    assert_eq!(plate_truth, plate_sent);

    // Clock skew +600 s on node-f during 120-149: the batch timestamp is 600 s ahead of the tick
    // (less the < 1 s the node stamps before sending); the truth carries the same time.
    for (k, g) in on(&node_up, 118..152) {
        let v: Value = serde_json::from_slice(&g.payload).expect("batch");
        let ts = v["ts"].as_str().expect("ts");
        let ms = truth
            .samples_of("node-f", "t1")
            .into_iter()
            .map(|t| t.ts_ns / 1_000_000)
            .find(|ms| firmware_sim::messages::iso8601_ms(*ms) == ts)
            .expect("truth with the message's time");
        let tick_ms = t0_ms + i64::try_from(*k).expect("small") * 60_000;
        let skew = if (120..150).contains(k) { 600_000 } else { 0 };
        let lead = tick_ms + skew - ms;
        assert!((0..1000).contains(&lead), "tick {k}: {ts} is {lead} ms off");
    }
    sub.abort();
    site.shutdown().await;
}
