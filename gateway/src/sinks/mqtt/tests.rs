//! Tests of the MQTT alert sink: configuration errors, topics and the active-alerts summary
//! (pure), and delivery to a real mosquitto on a free 127.0.0.1 port: QoS 1 events, the retained
//! summary through raise and clear, the cursor held until PUBACK, and re-sending after a broker
//! restart in the middle of a batch.
//!
//! The broker helper is a trimmed copy of `tests/src/lib.rs`'s `Mosquitto` (that crate depends
//! on this one, so it cannot be used here); the MQTT source's drain test uses it too.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use super::config::MqttSinkConfig;
use super::sink::{render_topic, ActiveAlerts, MqttSink, PUBLISHED_RECORDS};
use crate::alert::{Alert, AlertKind, AlertState, Cause, Level};
use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolConfig, Stream};

const MOSQUITTO_BIN: &str = "/usr/sbin/mosquitto";
/// 2026-01-01T00:00:00Z in ns.
const T0: i64 = 1_767_225_600_000_000_000;

fn alert(id: &str, seq: u32, state: AlertState) -> Alert {
    Alert {
        id: id.into(),
        seq,
        kind: AlertKind::Quality,
        cause: Cause::Absolute,
        site: "xa".into(),
        structure: None,
        device: "lev-a1".into(),
        point: "ch3".into(),
        channel: "lev-a1/ch3".into(),
        channels: vec!["lev-a1/ch3".into()],
        quantity: None,
        rule: "settlement-total".into(),
        label: None,
        side: None,
        level: Level::Red,
        previous_level: None,
        state,
        value: Some(36.0),
        threshold: Some(35.0),
        unit: "mm".into(),
        quality: None,
        started_at: T0,
        event_at: T0 + i64::from(seq),
        detected_at: T0,
        message: "m".into(),
        ack: None,
    }
}

// ----------------------------------------------------------------------------------------------
// Pure
// ----------------------------------------------------------------------------------------------

#[test]
fn config_errors_name_the_path_and_the_fix() {
    let env = |k: &str| {
        if k == "PW" {
            Ok("pw".to_owned())
        } else {
            Err(std::env::VarError::NotPresent)
        }
    };
    let base = "host = \"127.0.0.1\"\nclient_id = \"gw-xa\"\n";
    let cases: [(&str, &str, &str); 6] = [
        (
            "topic = \"anju/alerts\"",
            "sinks[1].topic",
            "`anju/alerts` has no {site}; alerts go to a per-site topic, e.g. anju/{site}/alerts",
        ),
        (
            "topic = \"anju/{site}/#\"",
            "sinks[1].topic",
            "`anju/{site}/#`: `+`, `#` and NUL are not allowed in a topic name (MQTT 3.1.1 §4.7)",
        ),
        (
            "summary_topic = \"anju/{site}/alerts\"",
            "sinks[1].summary_topic",
            "must differ from `topic`, or the retained summary would replace events; the default \
             is anju/{site}/alerts/active",
        ),
        (
            "password_env = \"PW\"",
            "sinks[1].password_env",
            "a password needs a username; set `username`",
        ),
        (
            "username = \"u\"\npassword_env = \"NOPE\"",
            "sinks[1].password_env",
            "environment variable NOPE is not set; export it or use password_file",
        ),
        (
            "batch_max_records = 0",
            "sinks[1].batch_max_records",
            "0 is outside 1..=1000; the default is 100",
        ),
    ];
    for (extra, path, message) in cases {
        let cfg: MqttSinkConfig = toml::from_str(&format!("{base}{extra}")).expect("toml");
        let e = cfg.validate_with_env("sinks[1]", &env).expect_err(extra);
        assert_eq!(e.len(), 1, "{extra}: {e:?}");
        assert_eq!(
            (e[0].at.as_str(), e[0].message.as_str()),
            (path, message),
            "{extra}"
        );
    }
    let cfg: MqttSinkConfig =
        toml::from_str(&format!("{base}username = \"u\"\npassword_env = \"PW\"")).expect("toml");
    let ok = cfg.validate_with_env("sinks[1]", &env).expect("valid");
    assert_eq!(ok.port, 1883);
    assert_eq!(ok.topic, "anju/{site}/alerts");
    assert!(
        !format!("{ok:?}").contains("\"pw\""),
        "password must not print"
    );
    assert!(toml::from_str::<MqttSinkConfig>(&format!("{base}password = \"x\"")).is_err());
}

#[test]
fn topics_are_per_site_and_site_names_cannot_add_levels() {
    assert_eq!(render_topic("anju/{site}/alerts", "xa"), "anju/xa/alerts");
    assert_eq!(
        render_topic("anju/{site}/alerts", "a/b+#"),
        "anju/a_b__/alerts"
    );
}

#[test]
fn the_summary_keeps_the_latest_event_of_active_alerts() {
    let mut s = ActiveAlerts::default();
    s.apply(&alert("b", 0, AlertState::Raised));
    s.apply(&alert("a", 0, AlertState::Raised));
    s.apply(&alert("a", 1, AlertState::Escalated));
    let ids: Vec<(&str, u32)> = s
        .site("xa")
        .iter()
        .map(|a| (a.id.as_str(), a.seq))
        .collect();
    assert_eq!(ids, [("a", 1), ("b", 0)]);
    s.apply(&alert("a", 2, AlertState::Cleared));
    s.apply(&alert("b", 1, AlertState::Cleared));
    assert_eq!(s.site_json("xa").expect("json"), b"[]");
    assert_eq!(s, ActiveAlerts::default());
}

#[test]
fn a_notice_never_enters_the_summary_of_active_alerts() {
    let mut s = ActiveAlerts::default();
    s.apply(&alert("a", 0, AlertState::Raised));
    let mut n = alert("n", 0, AlertState::Notice);
    n.kind = AlertKind::Notice;
    s.apply(&n);
    let ids: Vec<&str> = s.site("xa").iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["a"]);
}

// ----------------------------------------------------------------------------------------------
// Against a real mosquitto
// ----------------------------------------------------------------------------------------------

/// A mosquitto on a free loopback port, with persistence so a subscriber's session survives a
/// restart. Killed on drop.
pub(crate) struct Broker {
    child: Option<Child>,
    pub(crate) port: u16,
    /// A TLS listener's port, serving the test PKI's server certificate.
    pub(crate) tls_port: Option<(u16, std::path::PathBuf)>,
    dir: tempfile::TempDir,
}

use crate::loopback::test_port as free_port;

impl Broker {
    fn start() -> Self {
        let mut b = Self {
            child: None,
            port: free_port(),
            tls_port: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        b.spawn();
        b
    }

    /// A broker with a TLS listener too, serving `pki`'s server certificate (also used by the
    /// MQTT source's drain test, `sources/mqtt/drain.rs`).
    pub(crate) fn start_with_tls(pki: &crate::tls::tests::TestPki) -> Self {
        let mut b = Self {
            child: None,
            port: free_port(),
            tls_port: Some((free_port(), pki.dir.path().to_path_buf())),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let mut text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nautosave_interval 1\nuser root\n",
            self.port,
            self.dir.path().display()
        );
        if let Some((port, pki)) = &self.tls_port {
            text.push_str(&format!(
                "listener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                pki.join("server.pem").display(),
                pki.join("server.key").display()
            ));
        }
        std::fs::write(&conf, text).expect("conf");
        let child = Command::new(MOSQUITTO_BIN)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let ports = std::iter::once(self.port).chain(self.tls_port.as_ref().map(|(p, _)| *p));
        for port in ports {
            let listening = (0..200).any(|_| {
                let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
                if !up {
                    std::thread::sleep(Duration::from_millis(10));
                }
                up
            });
            assert!(listening, "mosquitto did not listen on {port}");
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// SIGKILL (works on a stopped process too), then start again on the same port.
    fn kill_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What a subscriber received: (topic, payload, retain).
type Received = Arc<Mutex<Vec<(String, Vec<u8>, bool)>>>;

/// A QoS 1 subscriber to `filters`; with `persistent`, its session survives broker restarts.
/// Subscribes on every CONNACK without a session (docs/ARCHITECTURE.md §Crate pitfalls: rumqttc does not re-subscribe).
async fn subscriber(port: u16, id: &str, filters: &[&str], persistent: bool) -> Received {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(!persistent);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 16);
    let got: Received = Arc::default();
    let log = Arc::clone(&got);
    let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(c))) if !c.session_present => {
                    for f in &filters {
                        client
                            .try_subscribe(f.as_str(), QoS::AtLeastOnce)
                            .expect("sub");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    assert_eq!(p.qos, QoS::AtLeastOnce, "alerts must arrive with QoS 1");
                    log.lock()
                        .expect("lock")
                        .push((p.topic.clone(), p.payload.to_vec(), p.retain));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), ready_rx)
        .await
        .expect("subscribed in time")
        .expect("subscribed");
    got
}

/// Wait until `cond` holds (10 s at most).
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Running {
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn append(&self, alerts: &[Alert]) {
        let mut body = Vec::new();
        for a in alerts {
            body.extend(serde_json::to_vec(a).expect("json"));
            body.push(b'\n');
        }
        self.spool
            .append(
                Stream::Alerts,
                &body,
                u32::try_from(alerts.len()).expect("n"),
            )
            .expect("append");
    }

    fn backlog(&self) -> u64 {
        self.spool.stats().sinks["up"].alerts_records
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("join");
    }
}

fn start_sink(port: u16) -> Running {
    start_sink_with(port, "")
}

/// A sink to `port` with `extra` TOML lines (a `tls` table).
fn start_sink_with(port: u16, extra: &str) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Arc::new(
        Spool::open(
            &dir.path().join("spool.redb"),
            &SpoolConfig::default(),
            &["up".to_owned()],
        )
        .expect("spool"),
    );
    let cfg: MqttSinkConfig = toml::from_str(&format!(
        "name = \"up\"\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"gw-test\"\n\
         keep_alive = \"5s\"\nack_timeout = \"20s\"\nretry_initial = \"100ms\"\nretry_max = \"300ms\"\n{extra}"
    ))
    .expect("toml");
    let cfg = cfg.validate("sinks[0]").expect("valid");
    let metrics = Arc::new(Metrics::new());
    let sink = MqttSink::new(cfg, Arc::clone(&spool), Arc::clone(&metrics)).expect("sink");
    let stop = CancellationToken::new();
    let task = tokio::spawn(sink.run(stop.clone()));
    Running {
        spool,
        metrics,
        stop,
        task,
        _dir: dir,
    }
}

fn payloads_on(got: &Received, topic: &str) -> Vec<Vec<u8>> {
    got.lock()
        .expect("lock")
        .iter()
        .filter(|(t, _, _)| t == topic)
        .map(|(_, p, _)| p.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_arrive_with_qos1_and_the_retained_summary_follows_raise_then_clear() {
    let broker = Broker::start();
    let got = subscriber(
        broker.port,
        "watch",
        &["anju/+/alerts", "anju/+/alerts/active"],
        false,
    )
    .await;
    let sink = start_sink(broker.port);

    let raise = alert("00000000000000a1", 0, AlertState::Raised);
    sink.append(std::slice::from_ref(&raise));
    wait_for("raise delivered", || sink.backlog() == 0).await;
    wait_for("summary after raise", || {
        !payloads_on(&got, "anju/xa/alerts/active").is_empty()
    })
    .await;
    let events = payloads_on(&got, "anju/xa/alerts");
    assert_eq!(events.len(), 1);
    let back: Alert = serde_json::from_slice(&events[0]).expect("alert json");
    assert_eq!(back, raise);
    let summary: Vec<Alert> =
        serde_json::from_slice(&payloads_on(&got, "anju/xa/alerts/active")[0]).expect("summary");
    assert_eq!(summary, vec![raise.clone()]);

    // A dashboard subscribing later gets the summary at once, flagged retained.
    let late = subscriber(broker.port, "late", &["anju/xa/alerts/active"], false).await;
    wait_for("retained summary", || {
        !late.lock().expect("lock").is_empty()
    })
    .await;
    {
        let l = late.lock().expect("lock");
        assert!(l[0].2, "the summary is retained");
        let s: Vec<Alert> = serde_json::from_slice(&l[0].1).expect("summary");
        assert_eq!(s, vec![raise.clone()]);
    }

    let clear = alert("00000000000000a1", 1, AlertState::Cleared);
    sink.append(std::slice::from_ref(&clear));
    wait_for("summary after clear", || {
        payloads_on(&got, "anju/xa/alerts/active").len() == 2
    })
    .await;
    assert_eq!(payloads_on(&got, "anju/xa/alerts/active")[1], b"[]");
    assert_eq!(payloads_on(&got, "anju/xa/alerts").len(), 2);
    // Counted once the cursor moved, which may be just after the subscriber got the summary.
    // The cursor moves first, then the counter: wait for both.
    wait_for("clear settled and counted", || {
        sink.backlog() == 0 && sink.metrics.get(PUBLISHED_RECORDS, &[("sink", "up")]) >= 2
    })
    .await;
    assert_eq!(sink.metrics.get(PUBLISHED_RECORDS, &[("sink", "up")]), 2);
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_waits_for_pubacks_and_a_broker_restart_mid_batch_resends() {
    let mut broker = Broker::start();
    // Persistent session: the broker keeps the subscription and queues for it across the
    // restart, so what the sink re-sends reaches it whichever reconnects first.
    let got = subscriber(broker.port, "bureau", &["anju/+/alerts"], true).await;
    let sink = start_sink(broker.port);
    sink.append(&[alert("00000000000000b0", 0, AlertState::Raised)]);
    wait_for("first alert delivered", || sink.backlog() == 0).await;
    // Let mosquitto autosave (every 1 s) the subscription before it is killed; 2.5 s leaves
    // room for a loaded machine.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Freeze the broker: TCP still accepts the bytes, but no PUBACK comes back.
    broker.signal("-STOP");
    let batch: Vec<Alert> = (1..=3)
        .map(|i| alert(&format!("00000000000000b{i}"), 0, AlertState::Raised))
        .collect();
    sink.append(&batch);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sink.backlog(), 3, "no PUBACK, so the cursor must not move");

    // Kill it mid-batch and bring it back on the same port: the sink reconnects and publishes
    // the unacknowledged messages again.
    broker.kill_and_restart();
    wait_for("batch delivered after the restart", || sink.backlog() == 0).await;
    wait_for("subscriber got the batch", || {
        let ids: std::collections::BTreeSet<String> = payloads_on(&got, "anju/xa/alerts")
            .iter()
            .map(|p| serde_json::from_slice::<Alert>(p).expect("alert").id)
            .collect();
        (1..=3).all(|i| ids.contains(&format!("00000000000000b{i}")))
    })
    .await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_summary_keeps_alerts_raised_before_it() {
    let broker = Broker::start();
    let got = subscriber(
        broker.port,
        "watch-restart",
        &["anju/+/alerts/active"],
        false,
    )
    .await;
    let first = start_sink(broker.port);
    let x = alert("00000000000000b1", 0, AlertState::Raised);
    first.append(std::slice::from_ref(&x));
    wait_for("summary with the first alert", || {
        !payloads_on(&got, "anju/xa/alerts/active").is_empty()
    })
    .await;
    first.stop().await;

    // A new sink (as after a gateway restart: empty memory, a spool with only a new event).
    let second = start_sink(broker.port);
    let y = alert("00000000000000b2", 0, AlertState::Raised);
    second.append(std::slice::from_ref(&y));
    wait_for("summary after the restart", || {
        payloads_on(&got, "anju/xa/alerts/active").len() >= 2
    })
    .await;
    let last: Vec<Alert> = serde_json::from_slice(
        payloads_on(&got, "anju/xa/alerts/active")
            .last()
            .expect("summary"),
    )
    .expect("summary json");
    let ids: Vec<&str> = last.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["00000000000000b1", "00000000000000b2"],
        "the alert raised before the restart is still listed"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_go_over_tls_to_a_broker_the_ca_file_trusts_and_never_to_another() {
    use crate::tls::tests::TestPki;

    let pki = TestPki::new();
    let broker = Broker::start_with_tls(&pki);
    let (tls_port, _) = broker.tls_port.clone().expect("tls listener");
    let got = subscriber(broker.port, "watch-tls", &["anju/+/alerts"], false).await;

    // Trusting another CA: the handshake is refused on every attempt, nothing is delivered and
    // the alert stays in the spool.
    let other = TestPki::new();
    let refused = start_sink_with(
        tls_port,
        &format!(
            "tls = {{ ca_file = \"{}\" }}",
            other.path("ca.pem").display()
        ),
    );
    refused.append(&[alert("00000000000000b1", 0, AlertState::Raised)]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        refused.backlog(),
        1,
        "an untrusted broker acknowledged the alert"
    );
    assert!(payloads_on(&got, "anju/xa/alerts").is_empty());
    refused.stop().await;

    let raise = alert("00000000000000b2", 0, AlertState::Raised);
    let sink = start_sink_with(
        tls_port,
        &format!(
            "tls = {{ ca_file = \"{}\", server_name = \"localhost\" }}",
            pki.path("ca.pem").display()
        ),
    );
    sink.append(std::slice::from_ref(&raise));
    wait_for("the alert delivered over TLS", || sink.backlog() == 0).await;
    wait_for("the alert received", || {
        !payloads_on(&got, "anju/xa/alerts").is_empty()
    })
    .await;
    let events = payloads_on(&got, "anju/xa/alerts");
    assert_eq!(events.len(), 1);
    let back: Alert = serde_json::from_slice(&events[0]).expect("alert json");
    assert_eq!(back, raise);
    sink.stop().await;
}
