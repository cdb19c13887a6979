//! The embedded MQTT broker for site sensor nodes that publish to the gateway itself (feature
//! `embedded-broker`, on by default).
//!
//! Owns [`EmbeddedBrokerConfig`] (validated into [`BrokerSettings`]: who may log in, whether a
//! listener may face the site network), [`start`], which runs rumqttd 0.20 on its own threads and
//! returns once the listener accepts connections, and the optional TLS listener in front of it. It does not subscribe: the gateway reads from
//! it like from any broker, through an [`crate::sources::mqtt::MqttSource`] pointed at
//! [`EmbeddedBroker::listen_addr`].
//!
//! Facts about rumqttd this relies on (docs/ARCHITECTURE.md §Crate pitfalls, rumqttd; and its source):
//! - The broker is rumqttd's `Router` (its own thread, started by `Router::spawn`) and one v4
//!   `Server` on a single-threaded runtime in a thread of its own here: what
//!   `Broker::start` does for a config with one `[v4]` listener, without `Broker::start`
//!   itself, whose other branches (v5 and bridge links, the Prometheus exporter with its
//!   hyper 0.14 server, the HTTP console that reloads a regex-based log filter) would all be
//!   linked in although their config is `None` (issue 13, binary size: README §Building for
//!   the site boxes). rumqttd has no shutdown: the broker lives until the process exits.
//! - A listener that cannot bind ends `Server::start` with an error (reported as the broker's
//!   end). [`start`] also binds the address itself first, to report a taken port clearly, and
//!   then probes with a TCP connect for at most [`START_TIMEOUT`].
//! - The library does not install a tracing subscriber (only rumqttd's own binary does); its
//!   events (an `info` per accepted connection) go to the gateway's subscriber, where the
//!   filter directive `rumqttd=warn` keeps them quiet. Console, Prometheus, metrics timers,
//!   bridge and cluster are never started (above), so it opens no other port.
//! - The sample config's listener is `0.0.0.0`; the default here is `127.0.0.1`. Listening on
//!   the site network is a deliberate config choice (`listen = "0.0.0.0:1883"`), and it is
//!   refused at load unless `[[embedded_broker.users]]` are configured: rumqttd would otherwise
//!   accept anonymous clients, and any device on the network could publish readings. With users,
//!   rumqttd checks every CONNECT's username and password (`ConnectionSettings::auth`,
//!   compared in constant time) and closes the connection of a client that fails. rumqttd's
//!   `Debug` of its settings prints those passwords: they are never logged here (and
//!   `Server::start` logs only the listener's name and address).
//! - rumqttd's own TLS needs its `use-rustls` feature, which builds rustls 0.22 and
//!   x509-parser: a third TLS stack in the binary, and its accept loop does the handshakes one
//!   after another. So the TLS listener (`[embedded_broker.tls]`) is the gateway's: tokio-rustls
//!   on the rustls 0.23 already built for rumqttc, on a thread of its own; each connection's
//!   handshake runs in its own task (bounded by [`TLS_HANDSHAKE_TIMEOUT`] and
//!   `max_connections`) and its plain bytes are relayed to rumqttd's listener on this machine,
//!   which then checks the login as for any client.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use serde::Deserialize;

use crate::config::Problems;
use crate::secret::{process_env, read_secret, EnvLookup, Secret};
use crate::tls::{ListenerTls, ListenerTlsConfig};

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
/// Time a client of the TLS listener has for its handshake; as rumqttd's for the CONNECT packet,
/// so that idle connections cannot hold the listener's slots.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after the TLS listener failed to accept (out of file descriptors): retrying at once
/// would spin.
#[cfg(feature = "embedded-broker")]
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Failed TLS handshakes are logged at most once per client address per this interval (a
/// misconfigured node retries every few seconds, a scanner many times a second).
#[cfg(feature = "embedded-broker")]
const HANDSHAKE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Client addresses whose failed handshakes are tracked for that limit.
#[cfg(feature = "embedded-broker")]
const HANDSHAKE_LOG_KEYS: usize = 256;

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
    /// Who may connect (`[[embedded_broker.users]]`). Empty: anyone, which is allowed only on
    /// loopback listeners.
    #[serde(default)]
    pub users: Vec<BrokerUserConfig>,
    /// A TLS listener in front of the broker (`[embedded_broker.tls]`).
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
}

/// One `[[embedded_broker.users]]` entry: a login the broker accepts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerUserConfig {
    /// The MQTT username.
    pub username: String,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
}

/// The validated `[embedded_broker]`: bounds checked, passwords read, TLS files loaded.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Plain MQTT listener.
    pub listen: SocketAddr,
    /// Most simultaneous clients (and TLS connections).
    pub max_connections: usize,
    /// Largest publish payload.
    pub max_payload_bytes: usize,
    /// Username → password; empty = anonymous clients (loopback only).
    pub users: Vec<(String, Secret)>,
    /// The TLS listener, if any.
    pub tls: Option<ListenerTls>,
}

impl BrokerSettings {
    /// An anonymous broker on `listen` with the default bounds (tests, and the demo's loopback
    /// broker).
    #[must_use]
    pub fn anonymous(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            users: Vec::new(),
            tls: None,
        }
    }

    /// Whether `username` and `password` is a login the broker accepts (no users: any).
    #[must_use]
    pub fn accepts(&self, username: Option<&str>, password: Option<&Secret>) -> bool {
        self.users.is_empty()
            || self.users.iter().any(|(u, p)| {
                Some(u.as_str()) == username && Some(p.expose()) == password.map(Secret::expose)
            })
    }
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
            users: Vec::new(),
            tls: None,
        }
    }
}

impl EmbeddedBrokerConfig {
    /// Check the bounds, read the users' passwords and the TLS files, and refuse a listener the
    /// site network can reach without users. `at` is this table's path (`embedded_broker`); every
    /// problem is pushed to `p` naming the field and the fix.
    pub fn validate(&self, at: &str, p: &mut Problems) -> Option<BrokerSettings> {
        self.validate_with_env(at, p, &process_env)
    }

    /// [`Self::validate`] with the environment looked up by `env`.
    pub(crate) fn validate_with_env(
        &self,
        at: &str,
        p: &mut Problems,
        env: EnvLookup<'_>,
    ) -> Option<BrokerSettings> {
        let before = p.len();
        let field = |f: &str| format!("{at}.{f}");
        if self.listen.port() == 0 {
            p.push(
                field("listen"),
                "port 0 is not allowed: clients need to know it; use e.g. 127.0.0.1:1883",
            );
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            p.push(
                field("max_connections"),
                format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}; the default is {DEFAULT_MAX_CONNECTIONS}"),
            );
        }
        if !(1..=MAX_PAYLOAD_BYTES_LIMIT).contains(&self.max_payload_bytes) {
            p.push(
                field("max_payload_bytes"),
                format!("must be between 1 and {MAX_PAYLOAD_BYTES_LIMIT}; the default is {DEFAULT_MAX_PAYLOAD_BYTES}"),
            );
        }
        let mut users: Vec<(String, Secret)> = Vec::with_capacity(self.users.len());
        for (i, u) in self.users.iter().enumerate() {
            let user_at = format!("{at}.users[{i}]");
            if u.username.is_empty() || u.username.contains('\0') {
                p.push(
                    format!("{user_at}.username"),
                    "must not be empty nor hold NUL",
                );
            } else if let Some(j) = self.users[..i]
                .iter()
                .position(|o| o.username == u.username)
            {
                p.push(
                    format!("{user_at}.username"),
                    format!(
                        "\"{}\" is already users[{j}]; give each login its own username",
                        u.username
                    ),
                );
            }
            match read_secret(
                "password",
                u.password_env.as_deref(),
                u.password_file.as_deref(),
                env,
            ) {
                Ok(Some((_, password))) => users.push((u.username.clone(), password)),
                Ok(None) => p.push(
                    format!("{user_at}.password_env"),
                    "a user needs a password: set password_env or password_file",
                ),
                Err((f, m)) => p.push(format!("{user_at}.{f}"), m),
            }
        }
        let tls = self.tls.as_ref().and_then(|t| t.validate(&field("tls"), p));
        // Anonymous clients only where nothing but this machine can connect (issue 13 item 4).
        if self.users.is_empty() {
            let listeners = [
                (field("listen"), Some(self.listen)),
                (field("tls.listen"), self.tls.as_ref().map(|t| t.listen)),
            ];
            for (listener_at, addr) in listeners {
                if let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) {
                    p.push(
                        listener_at,
                        format!(
                            "{addr} can be reached from the site network, but the broker has no users: any device there could publish readings or read them; \
                             add [[{at}.users]] (username with password_env or password_file), or listen on 127.0.0.1"
                        ),
                    );
                }
            }
        }
        if let Some(t) = &self.tls {
            if t.listen.port() == self.listen.port()
                && (t.listen.ip() == self.listen.ip()
                    || t.listen.ip().is_unspecified()
                    || self.listen.ip().is_unspecified())
            {
                p.push(
                    field("tls.listen"),
                    format!("{} is also the plain listener's address; use another port (MQTT over TLS is 8883)", t.listen),
                );
            }
        }
        if p.len() > before {
            return None;
        }
        Some(BrokerSettings {
            listen: self.listen,
            max_connections: self.max_connections,
            max_payload_bytes: self.max_payload_bytes,
            users,
            tls,
        })
    }
}

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Built without the `embedded-broker` feature.
    #[error("this gateway was built without the `embedded-broker` feature: rebuild with `--features embedded-broker`, or remove [embedded_broker] and point the MQTT source at an external broker")]
    NotBuiltIn,
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
pub fn start(config: &BrokerSettings) -> Result<EmbeddedBroker, BrokerError> {
    use std::collections::HashMap;
    use std::sync::mpsc;

    // rumqttd only logs a bind failure inside its own thread; bind here first so a taken port is
    // an error the operator sees. (std sets SO_REUSEADDR on Unix, so a port in TIME_WAIT after a
    // restart is not mistaken for a taken one.)
    drop(
        std::net::TcpListener::bind(config.listen).map_err(|source| BrokerError::Bind {
            addr: config.listen,
            source,
        })?,
    );

    let mut tls_socket = config.tls.as_ref().map(tls_listener::bind).transpose()?;

    let server = rumqttd::ServerSettings {
        name: "mqtt-broker-v4".to_owned(),
        listen: config.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: CONNECT_PACKET_TIMEOUT_MS,
            max_payload_size: config.max_payload_bytes,
            max_inflight_count: MAX_INFLIGHT,
            // rumqttd's static logins; `None` (anonymous) only passed validation on loopback.
            auth: (!config.users.is_empty()).then(|| {
                config
                    .users
                    .iter()
                    .map(|(u, p)| (u.clone(), p.expose().to_owned()))
                    .collect::<HashMap<_, _>>()
            }),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let router_config = rumqttd::RouterConfig {
        max_connections: config.max_connections,
        max_outgoing_packet_count: MAX_OUTGOING_PACKETS,
        max_segment_size: config
            .max_payload_bytes
            .saturating_mul(4)
            .max(MIN_SEGMENT_BYTES),
        max_segment_count: SEGMENT_COUNT,
        ..Default::default()
    };

    let (exit_tx, exit_rx) = mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("mqtt-broker".to_owned())
        .spawn(move || {
            // `start` returns only when every listener thread has ended, i.e. on failure. Nothing
            // of the closure is used after a panic, so unwind safety is moot.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                // What `Broker::new` and `Broker::start` do for one v4 listener (router id 0,
                // as `Config::id` was), see the module comment.
                let router_tx = rumqttd::Router::new(0, router_config).spawn();
                let mut server = rumqttd::Server::new(server, router_tx, rumqttd::protocol::v4::V4);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start its runtime: {e}"))?;
                runtime
                    .block_on(server.start(rumqttd::LinkType::Remote))
                    .map_err(|e| e.to_string())
            }));
            let reason = match outcome {
                Ok(Ok(())) => "the listener ended".to_owned(),
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
            tracing::info!(listen = %config.listen, users = config.users.len(), "embedded MQTT broker listening");
            if let (Some(tls), Some(socket)) = (&config.tls, tls_socket.take()) {
                tls_listener::start(socket, tls, probe, config.max_connections)?;
            }
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

/// The TLS listener: TLS from the clients, plain MQTT to rumqttd's listener on this machine.
#[cfg(feature = "embedded-broker")]
mod tls_listener {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Semaphore;
    use tokio_rustls::TlsAcceptor;

    use super::{
        BrokerError, ACCEPT_ERROR_PAUSE, HANDSHAKE_LOG_INTERVAL, HANDSHAKE_LOG_KEYS,
        TLS_HANDSHAKE_TIMEOUT,
    };
    use crate::log_limit::LogLimiter;
    use crate::tls::ListenerTls;

    /// Bind `tls.listen`: a taken port is an error before anything starts, as for the plain
    /// listener.
    pub(super) fn bind(tls: &ListenerTls) -> Result<std::net::TcpListener, BrokerError> {
        std::net::TcpListener::bind(tls.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| BrokerError::Bind {
                addr: tls.listen,
                source,
            })
    }

    /// Serve `listener` (from [`bind`]) on a thread of its own, relaying each connection to
    /// `broker`. At most `max_connections` connections at once; more are closed at accept.
    pub(super) fn start(
        listener: std::net::TcpListener,
        tls: &ListenerTls,
        broker: SocketAddr,
        max_connections: usize,
    ) -> Result<(), BrokerError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BrokerError::Thread)?;
        let acceptor = TlsAcceptor::from(Arc::clone(&tls.rustls));
        let listen = tls.listen;
        std::thread::Builder::new()
            .name("mqtt-broker-tls".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => serve(l, acceptor, broker, max_connections).await,
                        Err(e) => {
                            tracing::error!(listen = %listen, error = %e, "embedded broker TLS listener cannot start");
                        }
                    }
                });
            })
            .map_err(BrokerError::Thread)?;
        tracing::info!(listen = %listen, "embedded MQTT broker TLS listener listening");
        Ok(())
    }

    async fn serve(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        broker: SocketAddr,
        max_connections: usize,
    ) {
        let slots = Arc::new(Semaphore::new(max_connections));
        let log = Arc::new(Mutex::new(LogLimiter::new(
            HANDSHAKE_LOG_INTERVAL,
            HANDSHAKE_LOG_KEYS,
        )));
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "embedded broker TLS listener cannot accept");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                // As rumqttd does past max_connections: the client retries later.
                drop(tcp);
                continue;
            };
            let acceptor = acceptor.clone();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let _slot = slot;
                let handshake =
                    tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                let mut client = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        let allowed = log
                            .lock()
                            .ok()
                            .and_then(|mut l| l.allow(&peer.ip().to_string()));
                        if let Some(suppressed) = allowed {
                            tracing::warn!(peer = %peer, error = %e, suppressed,
                                "embedded broker: TLS handshake failed (does the client trust the CA that signed tls.cert_file?)");
                        }
                        return;
                    }
                    Err(_) => return,
                };
                let Ok(mut plain) = TcpStream::connect(broker).await else {
                    tracing::warn!(broker = %broker, "embedded broker TLS listener cannot reach the broker's own listener");
                    return;
                };
                let _ = plain.set_nodelay(true);
                // Ends when either side closes; errors are a client going away.
                let _ = tokio::io::copy_bidirectional(&mut client, &mut plain).await;
            });
        }
    }
}

/// Without the `embedded-broker` feature there is no broker to start.
///
/// # Errors
/// Always [`BrokerError::NotBuiltIn`].
#[cfg(not(feature = "embedded-broker"))]
pub fn start(config: &BrokerSettings) -> Result<EmbeddedBroker, BrokerError> {
    let _ = config;
    Err(BrokerError::NotBuiltIn)
}

#[cfg(all(test, feature = "embedded-broker"))]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A port that was free a moment ago on 127.0.0.1.
    use crate::loopback::test_port as free_port;

    /// Validate `[embedded_broker]` text, with the variable `PW` set to `s3cret`: the settings
    /// and every problem, as `gateway check` prints them.
    fn problems(text: &str) -> (Option<BrokerSettings>, Vec<String>) {
        let c: EmbeddedBrokerConfig = toml::from_str(text).expect("toml");
        let mut p = Problems::default();
        let found = c.validate_with_env("embedded_broker", &mut p, &|v| match v {
            "PW" => Ok("s3cret".to_owned()),
            _ => Err(std::env::VarError::NotPresent),
        });
        let messages: Vec<String> = p.into_vec().iter().map(ToString::to_string).collect();
        (found, messages)
    }

    #[test]
    fn config_defaults_and_bounds() {
        let c: EmbeddedBrokerConfig = toml::from_str("").expect("empty table");
        assert_eq!(c, EmbeddedBrokerConfig::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:1883");
        assert!(toml::from_str::<EmbeddedBrokerConfig>("listn = \"1.2.3.4:1\"").is_err());
        let (found, none) = problems("");
        assert!(none.is_empty(), "{none:?}");
        assert!(found.is_some_and(|b| b.users.is_empty() && b.tls.is_none()));
        let (_, found) = problems("listen = \"127.0.0.1:0\"\nmax_payload_bytes = 1073741824");
        assert_eq!(found.len(), 2);
        assert!(found[0].starts_with("embedded_broker.listen: port 0"));
        assert!(found[1].starts_with("embedded_broker.max_payload_bytes: must be between"));
    }

    #[test]
    fn a_listener_the_site_network_reaches_needs_users() {
        let (_, found) = problems("listen = \"0.0.0.0:1883\"");
        assert_eq!(
            found,
            ["embedded_broker.listen: 0.0.0.0:1883 can be reached from the site network, but the broker has no users: \
              any device there could publish readings or read them; add [[embedded_broker.users]] (username with \
              password_env or password_file), or listen on 127.0.0.1"]
        );
        let (settings, none) = problems(
            "listen = \"0.0.0.0:1883\"\n[[users]]\nusername = \"nodes\"\npassword_env = \"PW\"",
        );
        assert!(none.is_empty(), "{none:?}");
        let settings = settings.expect("valid");
        assert!(settings.accepts(Some("nodes"), Some(&Secret::new("s3cret"))));
        assert!(!settings.accepts(Some("nodes"), Some(&Secret::new("guess"))));
        assert!(!settings.accepts(None, None));
        assert!(!format!("{settings:?}").contains("s3cret"));
        let (_, found) = problems("[[users]]\nusername = \"nodes\"");
        assert_eq!(
            found,
            ["embedded_broker.users[0].password_env: a user needs a password: set password_env or password_file"]
        );
    }

    /// Connect with `options` and report the first outcome: `Ok(())` on CONNACK, else the
    /// connection error.
    async fn first_connect(options: rumqttc::MqttOptions) -> Result<(), rumqttc::ConnectionError> {
        let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .expect("an answer within 10 s")
    }

    #[tokio::test]
    async fn a_wrong_password_is_refused_and_the_right_one_accepted() {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let _broker = start(&BrokerSettings {
            users: vec![("nodes".to_owned(), Secret::new("s3cret"))],
            ..BrokerSettings::anonymous(listen)
        })
        .expect("starts");
        let options = |id: &str, login: Option<(&str, &str)>| {
            let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", listen.port());
            o.set_keep_alive(Duration::from_secs(5));
            if let Some((u, p)) = login {
                o.set_credentials(u, p);
            }
            o
        };
        let wrong = first_connect(options("wrong", Some(("nodes", "guess")))).await;
        assert!(wrong.is_err(), "a wrong password connected");
        let anonymous = first_connect(options("anon", None)).await;
        assert!(anonymous.is_err(), "a client without a login connected");
        let unknown = first_connect(options("unknown", Some(("other", "s3cret")))).await;
        assert!(unknown.is_err(), "an unknown user connected");
        first_connect(options("right", Some(("nodes", "s3cret"))))
            .await
            .expect("the configured login connects");
    }

    #[tokio::test]
    async fn the_tls_listener_serves_clients_that_trust_its_ca_and_refuses_others() {
        use crate::tls::tests::TestPki;
        use crate::tls::{ListenerTlsConfig, TlsConfig};

        let pki = TestPki::new();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let tls_listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut p = Problems::default();
        let tls = ListenerTlsConfig {
            listen: tls_listen,
            cert_file: pki.path("server.pem"),
            key_file: pki.path("server.key"),
        }
        .validate("embedded_broker.tls", &mut p);
        assert!(p.is_empty());
        let _broker = start(&BrokerSettings {
            users: vec![("nodes".to_owned(), Secret::new("s3cret"))],
            tls,
            ..BrokerSettings::anonymous(listen)
        })
        .expect("starts");
        let client_tls = |ca: PathBuf, server_name: Option<&str>| {
            let mut p = Problems::default();
            let t = TlsConfig {
                ca_file: ca,
                cert_file: None,
                key_file: None,
                server_name: server_name.map(str::to_owned),
            }
            .validate("t", &mut p)
            .expect("valid");
            let mut o = rumqttc::MqttOptions::new("tls-client", "127.0.0.1", tls_listen.port());
            o.set_keep_alive(Duration::from_secs(5));
            o.set_credentials("nodes", "s3cret");
            o.set_transport(t.mqtt_transport());
            o
        };
        first_connect(client_tls(pki.path("ca.pem"), None))
            .await
            .expect("a client trusting the CA connects over TLS");
        // The certificate names 127.0.0.1 and localhost: checked against a configured name
        // instead of the host, the one it carries passes and another is refused.
        first_connect(client_tls(pki.path("ca.pem"), Some("localhost")))
            .await
            .expect("the certificate's other name is accepted");
        let misnamed =
            first_connect(client_tls(pki.path("ca.pem"), Some("broker.elsewhere.lan"))).await;
        assert!(
            matches!(misnamed, Err(rumqttc::ConnectionError::Tls(_))),
            "{misnamed:?}"
        );
        let other = TestPki::new();
        let refused = first_connect(client_tls(other.path("ca.pem"), None)).await;
        assert!(
            matches!(refused, Err(rumqttc::ConnectionError::Tls(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = start(&BrokerSettings::anonymous(addr)).expect_err("port is taken");
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
        let _broker = start(&BrokerSettings::anonymous(listen)).expect("starts");
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
        let broker = start(&BrokerSettings::anonymous(listen)).expect("starts");
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
        let err = start(&BrokerSettings::anonymous(DEFAULT_LISTEN)).expect_err("not built in");
        assert!(matches!(err, BrokerError::NotBuiltIn));
        assert!(err
            .to_string()
            .contains("without the `embedded-broker` feature"));
    }
}
