//! The embedded MQTT broker for site sensor nodes that publish to the gateway itself (feature
//! `embedded-broker`, on by default).
//!
//! Owns [`EmbeddedBrokerConfig`] and [`start`], which runs rumqttd 0.20 on its own threads and
//! returns once the listener accepts connections. It does not subscribe: the gateway reads from
//! it like from any broker, through an [`crate::sources::mqtt::MqttSource`] pointed at
//! [`EmbeddedBroker::listen_addr`].
//!
//! Facts about rumqttd this relies on (docs/ARCHITECTURE.md §Crate pitfalls, rumqttd; and its source):
//! - `Broker::start()` blocks forever and spawns its own threads and single-threaded runtimes,
//!   so it gets a thread of its own here. rumqttd has no shutdown: the broker lives until the
//!   process exits.
//! - A listener that cannot bind only logs an error inside rumqttd's thread. [`start`] therefore
//!   binds the address itself first, to report a taken port clearly, and then probes with a TCP
//!   connect for at most [`START_TIMEOUT`].
//! - The library does not install a tracing subscriber (only rumqttd's own binary does); its
//!   events (an `info` per accepted connection) go to the gateway's subscriber, where the
//!   filter directive `rumqttd=warn` keeps them quiet. Console, Prometheus, metrics timers,
//!   bridge and cluster stay off (their config fields are `None`), so it opens no other port.
//! - The sample config's listener is `0.0.0.0`; the default here is `127.0.0.1`. Listening on
//!   the site network is a deliberate config choice (`listen = "0.0.0.0:1883"`), and rumqttd
//!   then accepts anonymous clients: keep such a listener on an isolated sensor VLAN.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use serde::Deserialize;

/// Default listener: loopback only, the MQTT port.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1883));
/// Default most simultaneous clients: a site has tens of sensor nodes, plus the gateway.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;
/// Default largest publish accepted, equal to the MQTT source's default so that whatever the
/// broker accepts the subscriber decodes.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize =
    crate::sources::mqtt::payload::DEFAULT_MAX_PAYLOAD_BYTES;
/// Largest `max_payload_bytes` accepted (it sizes rumqttd's buffers).
pub const MAX_PAYLOAD_BYTES_LIMIT: usize = crate::sources::mqtt::config::MAX_PAYLOAD_BYTES_LIMIT;
/// Most `max_connections` accepted; rumqttd preallocates per-connection slots.
pub const MAX_CONNECTIONS_LIMIT: usize = 10_000;
/// How long [`start`] waits for the listener to accept a connection (docs/ARCHITECTURE.md §Crate pitfalls: 5 ms measured).
pub const START_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between two readiness probes.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Timeout of one readiness probe.
#[cfg(feature = "embedded-broker")]
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// Time a client has between the TCP accept and its CONNECT packet.
#[cfg(feature = "embedded-broker")]
const CONNECT_PACKET_TIMEOUT_MS: u16 = 10_000;
/// Unacknowledged QoS 1 messages per connection (rumqttd sample config value).
#[cfg(feature = "embedded-broker")]
const MAX_INFLIGHT: usize = 500;
/// Packets rumqttd queues per outgoing connection before it reads more (docs/ARCHITECTURE.md §Crate pitfalls).
#[cfg(feature = "embedded-broker")]
const MAX_OUTGOING_PACKETS: u64 = 200;
/// Smallest segment of rumqttd's in-memory commit log (it panics below 1 KiB; 1 MiB is the
/// measured value, docs/ARCHITECTURE.md §Crate pitfalls). The segment size is at least four payloads.
#[cfg(feature = "embedded-broker")]
const MIN_SEGMENT_BYTES: usize = 1024 * 1024;
/// Segments kept in memory per filter: together with the segment size this bounds memory.
#[cfg(feature = "embedded-broker")]
const SEGMENT_COUNT: usize = 10;

/// `[embedded_broker]` in the gateway config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBrokerConfig {
    /// Listener address (default `127.0.0.1:1883`). Port 0 is refused: clients need to know it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Most simultaneous clients.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest publish payload accepted; a client sending more is disconnected by the broker.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
}

const fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
}
const fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
const fn default_max_payload_bytes() -> usize {
    DEFAULT_MAX_PAYLOAD_BYTES
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }
}

impl EmbeddedBrokerConfig {
    /// Check the bounds.
    ///
    /// # Errors
    /// [`BrokerError::Config`] naming the field and the allowed range.
    pub fn validate(&self) -> Result<(), BrokerError> {
        if self.listen.port() == 0 {
            return Err(BrokerError::Config(
                "listen: port 0 is not allowed; use e.g. 127.0.0.1:1883".to_owned(),
            ));
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            return Err(BrokerError::Config(format!(
                "max_connections: must be between 1 and {MAX_CONNECTIONS_LIMIT}"
            )));
        }
        if !(1..=MAX_PAYLOAD_BYTES_LIMIT).contains(&self.max_payload_bytes) {
            return Err(BrokerError::Config(format!(
                "max_payload_bytes: must be between 1 and {MAX_PAYLOAD_BYTES_LIMIT}"
            )));
        }
        Ok(())
    }
}

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Built without the `embedded-broker` feature.
    #[error("this gateway was built without the `embedded-broker` feature: rebuild with `--features embedded-broker`, or remove [embedded_broker] and point the MQTT source at an external broker")]
    NotBuiltIn,
    /// A config value is out of range.
    #[error("broker config: {0}")]
    Config(String),
    /// The listen address cannot be bound.
    #[error("embedded broker cannot listen on {addr}: {source} (is another MQTT broker such as mosquitto already using this port?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The broker thread could not be created.
    #[error("cannot start the embedded broker thread: {0}")]
    Thread(std::io::Error),
    /// The broker stopped during start-up.
    #[error("the embedded broker stopped during start-up: {0}")]
    Stopped(String),
    /// The listener did not accept a connection in time.
    #[error("the embedded broker did not accept connections on {addr} within {timeout:?}")]
    NotReady {
        /// The probed address.
        addr: SocketAddr,
        /// How long it waited.
        timeout: Duration,
    },
}

/// A running embedded broker. It runs until the process exits (rumqttd has no shutdown).
#[derive(Debug)]
pub struct EmbeddedBroker {
    listen: SocketAddr,
}

impl EmbeddedBroker {
    /// The address clients (and the gateway's MQTT source) connect to: the listen address, with
    /// an unspecified IP (`0.0.0.0`, `::`) replaced by loopback.
    #[must_use]
    pub fn listen_addr(&self) -> SocketAddr {
        probe_addr(self.listen)
    }
}

/// The address to probe for `listen`.
fn probe_addr(listen: SocketAddr) -> SocketAddr {
    match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// Whether the embedded broker can serve a subscription to `filter`.
///
/// rumqttd 0.20 refuses every filter starting with `$` other than `$share/...` and closes the
/// connection of the client that asked (`router/routing.rs` `validate_subscription`), and it
/// never routes a topic starting with `$` (`protocol/mod.rs` `matches`). So CIGEM devices, which
/// publish to `$dp`, need an external broker such as mosquitto; a config that points a `$dp`
/// subscription at the embedded broker should be refused at load time with this check.
#[must_use]
pub fn filter_supported(filter: &str) -> bool {
    !filter.starts_with('$') || filter.starts_with("$share/")
}

/// Start the broker and wait until it accepts connections. Blocks for at most
/// [`START_TIMEOUT`] (a few milliseconds normally); call it at start-up.
///
/// # Errors
/// [`BrokerError`]: bad config, port taken, thread or start-up failure, not ready in time.
#[cfg(feature = "embedded-broker")]
pub fn start(config: &EmbeddedBrokerConfig) -> Result<EmbeddedBroker, BrokerError> {
    use std::collections::HashMap;
    use std::sync::mpsc;

    config.validate()?;
    // rumqttd only logs a bind failure inside its own thread; bind here first so a taken port is
    // an error the operator sees. (std sets SO_REUSEADDR on Unix, so a port in TIME_WAIT after a
    // restart is not mistaken for a taken one.)
    drop(
        std::net::TcpListener::bind(config.listen).map_err(|source| BrokerError::Bind {
            addr: config.listen,
            source,
        })?,
    );

    let server = rumqttd::ServerSettings {
        name: "mqtt-broker-v4".to_owned(),
        listen: config.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: CONNECT_PACKET_TIMEOUT_MS,
            max_payload_size: config.max_payload_bytes,
            max_inflight_count: MAX_INFLIGHT,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let rumqttd_config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: config.max_connections,
            max_outgoing_packet_count: MAX_OUTGOING_PACKETS,
            max_segment_size: config
                .max_payload_bytes
                .saturating_mul(4)
                .max(MIN_SEGMENT_BYTES),
            max_segment_count: SEGMENT_COUNT,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    };

    let (exit_tx, exit_rx) = mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("mqtt-broker".to_owned())
        .spawn(move || {
            // `start` returns only when every listener thread has ended, i.e. on failure. Nothing
            // of the closure is used after a panic, so unwind safety is moot.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let mut broker = rumqttd::Broker::new(rumqttd_config);
                broker.start().map_err(|e| e.to_string())
            }));
            let reason = match outcome {
                Ok(Ok(())) => "the listener ended (see the rumqttd error above)".to_owned(),
                Ok(Err(e)) => e,
                Err(_) => "rumqttd panicked".to_owned(),
            };
            tracing::error!(reason = %reason, "embedded MQTT broker stopped");
            let _ = exit_tx.send(reason);
        })
        .map_err(BrokerError::Thread)?;

    let probe = probe_addr(config.listen);
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(reason) = exit_rx.try_recv() {
            return Err(BrokerError::Stopped(reason));
        }
        if std::net::TcpStream::connect_timeout(&probe, PROBE_CONNECT_TIMEOUT).is_ok() {
            tracing::info!(listen = %config.listen, "embedded MQTT broker listening");
            return Ok(EmbeddedBroker {
                listen: config.listen,
            });
        }
        if std::time::Instant::now() >= deadline {
            return Err(BrokerError::NotReady {
                addr: probe,
                timeout: START_TIMEOUT,
            });
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
}

/// Without the `embedded-broker` feature there is no broker to start.
///
/// # Errors
/// Always [`BrokerError::NotBuiltIn`].
#[cfg(not(feature = "embedded-broker"))]
pub fn start(config: &EmbeddedBrokerConfig) -> Result<EmbeddedBroker, BrokerError> {
    let _ = config;
    Err(BrokerError::NotBuiltIn)
}

#[cfg(all(test, feature = "embedded-broker"))]
mod tests {
    use super::*;

    /// A port that was free a moment ago on 127.0.0.1.
    pub(crate) fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }

    #[test]
    fn config_defaults_and_bounds() {
        let c: EmbeddedBrokerConfig = toml::from_str("").expect("empty table");
        assert_eq!(c, EmbeddedBrokerConfig::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:1883");
        assert!(toml::from_str::<EmbeddedBrokerConfig>("listn = \"1.2.3.4:1\"").is_err());
        let zero = EmbeddedBrokerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..Default::default()
        };
        assert!(matches!(zero.validate(), Err(BrokerError::Config(m)) if m.starts_with("listen")));
        let big = EmbeddedBrokerConfig {
            max_payload_bytes: 1 << 30,
            ..Default::default()
        };
        assert!(
            matches!(big.validate(), Err(BrokerError::Config(m)) if m.starts_with("max_payload_bytes"))
        );
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = start(&EmbeddedBrokerConfig {
            listen: addr,
            ..Default::default()
        })
        .expect_err("port is taken");
        assert!(matches!(err, BrokerError::Bind { .. }), "{err}");
        assert!(err.to_string().contains("already using this port"));
    }

    /// Pins the rumqttd 0.20 behaviour behind [`filter_supported`]: a SUBSCRIBE to `$dp` makes
    /// the broker close the connection.
    #[tokio::test]
    async fn dollar_filters_make_rumqttd_disconnect() {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

        assert!(!filter_supported("$dp"));
        assert!(filter_supported("$share/g/sites/+/up"));
        assert!(filter_supported("sites/+/up"));
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let _broker = start(&EmbeddedBrokerConfig {
            listen,
            ..Default::default()
        })
        .expect("starts");
        let mut options = MqttOptions::new("dollar-test", "127.0.0.1", listen.port());
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client
                            .subscribe("$dp", QoS::AtLeastOnce)
                            .await
                            .expect("queue");
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => break "suback",
                    Ok(_) => {}
                    Err(_) => break "disconnected",
                }
            }
        })
        .await
        .expect("an answer within 10 s");
        assert_eq!(outcome, "disconnected");
    }

    #[tokio::test]
    async fn a_client_receives_what_it_subscribed_to() {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let broker = start(&EmbeddedBrokerConfig {
            listen,
            ..Default::default()
        })
        .expect("starts");
        assert_eq!(broker.listen_addr(), listen);

        let mut options = MqttOptions::new("broker-test", "127.0.0.1", listen.port());
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        let received = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await.expect("connection") {
                    Event::Incoming(Packet::ConnAck(_)) => {
                        client
                            .subscribe("t/+", QoS::AtLeastOnce)
                            .await
                            .expect("subscribe");
                    }
                    Event::Incoming(Packet::SubAck(_)) => {
                        client
                            .publish("t/1", QoS::AtLeastOnce, false, b"21.5".to_vec())
                            .await
                            .expect("publish");
                    }
                    Event::Incoming(Packet::Publish(p)) => break (p.topic, p.payload.to_vec()),
                    _ => {}
                }
            }
        })
        .await
        .expect("message within 10 s");
        assert_eq!(received, ("t/1".to_owned(), b"21.5".to_vec()));
    }
}

#[cfg(all(test, not(feature = "embedded-broker")))]
mod tests_without_feature {
    use super::*;

    #[test]
    fn start_says_the_feature_is_missing() {
        let err = start(&EmbeddedBrokerConfig::default()).expect_err("not built in");
        assert!(matches!(err, BrokerError::NotBuiltIn));
        assert!(err
            .to_string()
            .contains("without the `embedded-broker` feature"));
    }
}
