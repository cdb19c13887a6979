//! The gateway's configuration: one TOML file, validated into a typed [`Config`] at load.
//!
//! Owns parsing (with `deny_unknown_fields` everywhere), resolution of device profiles, and the
//! cross-checks that no single struct can do (unique names, ports that exist, register spans).
//! Component config structs live next to the code they configure and are only gathered here.
//!
//! Every error names the file, the path inside it and, where one exists, the fix:
//! `site.toml: devices[2].points[5].word_order: unknown variant "ACBD", expected one of ...`.
//! All problems found are reported at once, so a technician fixes a file in one pass.
//! Secrets (tokens, passwords) are read from environment variables or files named in the
//! config, never written inline, and never printed.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::engine::EngineConfig;
use crate::sources::modbus::config::{
    DataType, Device, DeviceConfig, Point, PointConfig, ProfileConfig, SerialLine,
    SerialPortConfig, Transport, TransportKind, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_GAP,
    DEFAULT_POLL_INTERVAL, DEFAULT_RETRIES, DEFAULT_TIMEOUT, MAX_REGISTERS_PER_READ,
};
use crate::sources::modbus::plan::point_span_error;

/// Default directory for the spool and other state, relative to the config file when relative.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/anju";
/// Default profile directory name, next to the config file.
pub const DEFAULT_PROFILES_DIR: &str = "profiles";
/// Default period of the console summary of what flowed.
pub const DEFAULT_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest poll interval accepted: faster polling starves other devices on a 9600-baud bus.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Most retries accepted per request: beyond this a dead device holds its bus for too long.
pub const MAX_RETRIES: u32 = 10;

/// Deserialize an optional humantime duration string (`"10s"`, `"500ms"`, `"2h"`).
pub(crate) mod duration_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            humantime::parse_duration(&s).map_err(|e| {
                serde::de::Error::custom(format!(
                    "\"{s}\" is not a duration ({e}); write e.g. \"10s\", \"500ms\", \"5m\""
                ))
            })
        })
        .transpose()
    }
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The path inside the file (`devices[2].points[5].word_order`); empty for the whole file.
    pub at: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.at, self.message)
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// One or more problems; each names its file and path.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems, for tests and tools.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Read { .. } => vec![self.to_string()],
            Self::Invalid(p) => p.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Parse TOML text into `T`, naming the key path of any error (`devices[2].unit`).
///
/// # Errors
/// A single [`Problem`] with the path and toml's message and line.
pub fn parse_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, Problem> {
    let problem = |at: String, e: &toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let mut message = e.message().trim().to_owned();
        if let Some(line) = line {
            message.push_str(&format!(" (line {line})"));
        }
        Problem {
            file: file.to_path_buf(),
            at,
            message,
        }
    };
    let de = toml::Deserializer::parse(text).map_err(|e| problem(String::new(), &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let at = if at == "." { String::new() } else { at };
        problem(at, e.inner())
    })
}

/// The config file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Site name, the `site` tag on every reading (e.g. `xinan-resettlement-01`).
    pub site: String,
    /// This gateway's id, the `gateway` tag.
    pub gateway_id: String,
    /// Spool and state directory (relative paths are relative to the config file).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Device profile directory (default `profiles` next to the config file).
    #[serde(default)]
    pub profiles_dir: Option<PathBuf>,
    /// Period of the console summary, e.g. `"60s"`.
    #[serde(default, with = "duration_opt")]
    pub summary_interval: Option<Duration>,
    /// Engine settings.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Spool settings.
    #[serde(default)]
    pub spool: crate::spool::SpoolConfig,
    /// Serial ports for Modbus RTU.
    #[serde(default)]
    pub serial_ports: Vec<SerialPortConfig>,
    /// Modbus devices.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// MQTT sources (external brokers or the embedded one).
    #[serde(default)]
    pub mqtt: Vec<crate::sources::mqtt::MqttSourceConfig>,
    /// Alert rules and sensor checks.
    #[serde(default)]
    pub alerts: crate::engine::rules::AlertsConfig,
    /// The embedded MQTT broker for site sensor nodes; absent = not started.
    #[serde(default)]
    pub embedded_broker: Option<crate::broker::EmbeddedBrokerConfig>,
    /// Where spooled data is delivered. None: readings stay in the spool (under its bound).
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

/// One `[[sinks]]` entry. Closed set: a new kind of receiver is a new variant.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// InfluxDB v2 (or VictoriaMetrics) line-protocol writes.
    Influxdb(crate::sinks::influxdb::InfluxSinkConfig),
    /// Alerts to an upstream MQTT broker (QoS 1, retained summary of active alerts).
    Mqtt(crate::sinks::mqtt::MqttSinkConfig),
    /// Alerts to an HTTP webhook (generic JSON, WeCom or DingTalk group robots).
    Webhook(crate::sinks::webhook::WebhookSinkConfig),
}

/// A validated sink.
#[derive(Debug, Clone)]
pub enum Sink {
    /// InfluxDB v2 with its token resolved.
    Influxdb(crate::sinks::influxdb::ResolvedInflux),
    /// Upstream MQTT for alerts, credentials resolved.
    Mqtt(crate::sinks::mqtt::ResolvedMqtt),
    /// Webhook for alerts, URL (a secret) resolved.
    Webhook(crate::sinks::webhook::ResolvedWebhook),
}

impl Sink {
    /// The sink's name (its spool cursor).
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Influxdb(r) => &r.name,
            Self::Mqtt(r) => &r.name,
            Self::Webhook(r) => &r.name,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Site name.
    pub site: String,
    /// Gateway id.
    pub gateway_id: String,
    /// Spool and state directory.
    pub data_dir: PathBuf,
    /// Console summary period.
    pub summary_interval: Duration,
    /// Engine settings.
    pub engine: EngineConfig,
    /// Spool settings.
    pub spool: crate::spool::SpoolConfig,
    /// Modbus devices with their points resolved.
    pub devices: Vec<Device>,
    /// MQTT sources with their secrets resolved.
    pub mqtt: Vec<crate::sources::mqtt::MqttSettings>,
    /// Alert rules and sensor checks, validated.
    pub rules: crate::engine::rules::RuleSet,
    /// The embedded broker, if configured.
    pub embedded_broker: Option<crate::broker::EmbeddedBrokerConfig>,
    /// Sinks with their secrets resolved.
    pub sinks: Vec<Sink>,
}

impl Config {
    /// Read and validate the config at `path`.
    ///
    /// # Errors
    /// Every problem found, each naming its file and path.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_str_at(&text, path)
    }

    /// Validate config `text` as if it were the file at `path` (relative paths resolve against
    /// its directory).
    ///
    /// # Errors
    /// Every problem found, each naming its file and path.
    pub fn from_str_at(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = parse_toml(path, text).map_err(|p| ConfigError::Invalid(vec![p]))?;
        let mut v = Validator {
            file: path.to_path_buf(),
            problems: Vec::new(),
        };
        let base = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        v.check_name("site", &raw.site);
        v.check_name("gateway_id", &raw.gateway_id);
        let data_dir = resolve(
            raw.data_dir
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_DATA_DIR)),
        );
        let profiles_dir = resolve(
            raw.profiles_dir
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_PROFILES_DIR)),
        );
        let summary_interval = raw.summary_interval.unwrap_or(DEFAULT_SUMMARY_INTERVAL);
        if summary_interval.is_zero() {
            v.problem("summary_interval", "must be longer than 0s");
        }
        v.check_engine(&raw.engine);
        if let Err(msg) = raw.spool.validate("spool") {
            v.problem("", &msg);
        }

        let ports = v.serial_ports(&raw.serial_ports);
        let mut profiles = ProfileCache {
            dir: profiles_dir,
            loaded: BTreeMap::new(),
        };
        let mut devices = Vec::new();
        let mut names = HashSet::new();
        for (i, d) in raw.devices.iter().enumerate() {
            let at = format!("devices[{i}]");
            if !names.insert(d.name.as_str()) {
                v.problem(
                    &format!("{at}.name"),
                    &format!(
                        "device name \"{}\" is used twice; names must be unique",
                        d.name
                    ),
                );
            }
            if let Some(dev) = v.device(&at, d, &ports, &mut profiles) {
                devices.push(dev);
            }
        }
        let mut mqtt = Vec::new();
        let mut mqtt_names = HashSet::new();
        for (i, m) in raw.mqtt.iter().enumerate() {
            let at = format!("mqtt[{i}]");
            if !mqtt_names.insert(m.name.as_str()) {
                v.problem(
                    &format!("{at}.name"),
                    &format!("MQTT source name \"{}\" is used twice", m.name),
                );
            }
            match m.validate(&at) {
                Ok(settings) => mqtt.push(settings),
                Err(e) => v.problems.push(Problem {
                    file: v.file.clone(),
                    at: e.path.clone(),
                    message: e.message.clone(),
                }),
            }
        }
        if let Some(b) = &raw.embedded_broker {
            if let Err(e) = b.validate() {
                v.problem("embedded_broker", &e.to_string());
            }
            // A subscription the embedded broker cannot serve would get the source disconnected
            // on every SUBSCRIBE (see `broker::filter_supported`): refuse it here instead.
            for (i, m) in mqtt.iter().enumerate() {
                if m.port != b.listen.port() || !is_local_host(&m.host, b.listen) {
                    continue;
                }
                for (j, sub) in m.subscriptions.iter().enumerate() {
                    if !crate::broker::filter_supported(sub.pattern.filter()) {
                        v.problem(
                            &format!("mqtt[{i}].subscriptions[{j}].topic"),
                            &format!(
                                "the embedded broker cannot route \"{}\" (rumqttd drops topics starting with `$`); \
                                 point this source at mosquitto for CIGEM `$dp` devices, or have the devices publish to a topic without `$`",
                                sub.pattern.as_str()
                            ),
                        );
                    }
                }
            }
        }
        let rules = match crate::engine::rules::RuleSet::from_config(&raw.alerts, "alerts") {
            Ok(r) => r,
            Err(problems) => {
                for p in problems {
                    v.problems.push(Problem {
                        file: v.file.clone(),
                        at: p.at.clone(),
                        message: p.message.clone(),
                    });
                }
                crate::engine::rules::RuleSet::default()
            }
        };
        let mut sinks = Vec::new();
        let mut sink_names = HashSet::new();
        for (i, s) in raw.sinks.iter().enumerate() {
            let at = format!("sinks[{i}]");
            let validated = match s {
                SinkConfig::Influxdb(c) => c
                    .validate(&at)
                    .map(Sink::Influxdb)
                    .map_err(|e| (e.path, e.message)),
                SinkConfig::Mqtt(c) => c
                    .validate(&at)
                    .map(Sink::Mqtt)
                    .map_err(|e| (e.path, e.message)),
                SinkConfig::Webhook(c) => c
                    .validate(&at)
                    .map(Sink::Webhook)
                    .map_err(|e| (e.path, e.message)),
            };
            match validated {
                Ok(sink) => sinks.push(sink),
                Err((at, message)) => v.problems.push(Problem {
                    file: v.file.clone(),
                    at,
                    message,
                }),
            }
            if let Some(last) = sinks.last() {
                if !sink_names.insert(last.name().to_owned()) {
                    v.problem(
                        &format!("{at}.name"),
                        &format!(
                            "sink name \"{}\" is used twice; give each sink its own `name`",
                            last.name()
                        ),
                    );
                }
            }
        }
        if !v.problems.is_empty() {
            return Err(ConfigError::Invalid(v.problems));
        }
        Ok(Self {
            path: path.to_path_buf(),
            site: raw.site,
            gateway_id: raw.gateway_id,
            data_dir,
            summary_interval,
            engine: raw.engine,
            spool: raw.spool,
            devices,
            mqtt,
            rules,
            embedded_broker: raw.embedded_broker,
            sinks,
        })
    }
}

/// Whether `host` names the machine the embedded broker listens on.
fn is_local_host(host: &str, listen: SocketAddr) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| {
            ip == listen.ip()
                || (ip.is_loopback() && listen.ip().is_loopback())
                || listen.ip().is_unspecified()
        })
}

/// Profiles loaded once per config load, by name.
struct ProfileCache {
    dir: PathBuf,
    loaded: BTreeMap<String, Result<ProfileConfig, ()>>,
}

struct Validator {
    file: PathBuf,
    problems: Vec<Problem>,
}

impl Validator {
    fn problem(&mut self, at: &str, message: &str) {
        self.problems.push(Problem {
            file: self.file.clone(),
            at: at.to_owned(),
            message: message.to_owned(),
        });
    }

    fn check_name(&mut self, at: &str, value: &str) {
        if value.trim().is_empty() {
            self.problem(at, "must not be empty");
        } else if value.contains(['\n', '\r']) {
            self.problem(at, "must not contain a line break");
        }
    }

    fn check_engine(&mut self, e: &EngineConfig) {
        if let Err(msg) = e.validate() {
            self.problem("engine", &msg);
        }
    }

    fn serial_ports(&mut self, ports: &[SerialPortConfig]) -> BTreeMap<String, SerialLine> {
        let mut out = BTreeMap::new();
        for (i, p) in ports.iter().enumerate() {
            let at = format!("serial_ports[{i}]");
            if out.contains_key(&p.name) {
                self.problem(
                    &format!("{at}.name"),
                    &format!("serial port \"{}\" is defined twice", p.name),
                );
            }
            if !matches!(p.data_bits, 7 | 8) {
                self.problem(
                    &format!("{at}.data_bits"),
                    &format!("{} is not 7 or 8", p.data_bits),
                );
            }
            if !matches!(p.stop_bits, 1 | 2) {
                self.problem(
                    &format!("{at}.stop_bits"),
                    &format!("{} is not 1 or 2", p.stop_bits),
                );
            }
            if p.baud == 0 {
                self.problem(
                    &format!("{at}.baud"),
                    "must be above 0 (typical: 9600, 19200, 115200)",
                );
            }
            out.insert(
                p.name.clone(),
                SerialLine {
                    name: p.name.clone(),
                    path: p.path.clone(),
                    baud: p.baud,
                    parity: p.parity,
                    data_bits: p.data_bits,
                    stop_bits: p.stop_bits,
                },
            );
        }
        out
    }

    fn address(&mut self, at: &str, addr: &str) -> Option<SocketAddr> {
        if let Ok(a) = addr.parse::<SocketAddr>() {
            return Some(a);
        }
        match addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => Some(a),
            _ => {
                self.problem(
                    at,
                    &format!("\"{addr}\" is not host:port (e.g. \"192.168.1.20:502\")"),
                );
                None
            }
        }
    }

    fn transport(
        &mut self,
        at: &str,
        d: &DeviceConfig,
        ports: &BTreeMap<String, SerialLine>,
    ) -> Option<Transport> {
        match d.transport {
            TransportKind::Tcp | TransportKind::RtuOverTcp => {
                if d.port.is_some() {
                    self.problem(
                        &format!("{at}.port"),
                        "only `transport = \"rtu\"` uses a serial port; use `address` for TCP",
                    );
                }
                let Some(addr) = d.address.as_deref() else {
                    self.problem(
                        &format!("{at}.address"),
                        "missing: TCP devices need `address = \"host:port\"`",
                    );
                    return None;
                };
                let a = self.address(&format!("{at}.address"), addr)?;
                Some(if d.transport == TransportKind::Tcp {
                    Transport::Tcp(a)
                } else {
                    Transport::RtuOverTcp(a)
                })
            }
            TransportKind::Rtu => {
                if d.address.is_some() {
                    self.problem(&format!("{at}.address"), "an RTU device is reached through `port`, not `address` (use transport = \"rtu_over_tcp\" for a serial device server)");
                }
                let Some(name) = d.port.as_deref() else {
                    self.problem(
                        &format!("{at}.port"),
                        "missing: RTU devices need `port = \"<name of a [[serial_ports]] entry>\"`",
                    );
                    return None;
                };
                match ports.get(name) {
                    Some(line) => Some(Transport::Rtu(line.clone())),
                    None => {
                        let known: Vec<&str> = ports.keys().map(String::as_str).collect();
                        self.problem(
                            &format!("{at}.port"),
                            &format!(
                                "no serial port named \"{name}\"; defined: [{}]",
                                known.join(", ")
                            ),
                        );
                        None
                    }
                }
            }
        }
    }

    fn device(
        &mut self,
        at: &str,
        d: &DeviceConfig,
        ports: &BTreeMap<String, SerialLine>,
        profiles: &mut ProfileCache,
    ) -> Option<Device> {
        self.check_name(&format!("{at}.name"), &d.name);
        let transport = self.transport(at, d, ports);
        let unit_ok = match d.transport {
            // Modbus over serial line V1.02 §2.2: 1-247 are slave addresses, 0 is broadcast.
            TransportKind::Rtu | TransportKind::RtuOverTcp => (1..=247).contains(&d.unit),
            // Modbus/TCP: the unit id addresses a device behind a gateway; 0 and 255 are used
            // by devices that ignore it.
            TransportKind::Tcp => true,
        };
        if !unit_ok {
            self.problem(
                &format!("{at}.unit"),
                &format!("{} is not a serial slave address (1-247)", d.unit),
            );
        }

        let mut points = Vec::new();
        let mut max_gap = d.max_gap;
        let mut holes = Vec::new();
        if let Some(name) = &d.profile {
            if let Some(profile) = self.profile(&format!("{at}.profile"), name, profiles) {
                max_gap = max_gap.or(profile.max_gap);
                let file = profiles.dir.join(format!("{name}.toml"));
                for (j, p) in profile.points.iter().enumerate() {
                    let pat = format!("points[{j}]");
                    let p = profile.with_defaults(p);
                    points.push(self.point(Some(&file), &pat, &p, profile.word_order));
                }
                for (j, h) in profile.holes.iter().enumerate() {
                    if let Some(message) = h.problem() {
                        self.problems.push(Problem {
                            file: file.clone(),
                            at: format!("holes[{j}]"),
                            message,
                        });
                    }
                }
                holes.clone_from(&profile.holes);
            }
        }
        for (j, p) in d.points.iter().enumerate() {
            points.push(self.point(None, &format!("{at}.points[{j}]"), p, Default::default()));
        }
        let points: Vec<Point> = points.into_iter().flatten().collect();
        for h in &holes {
            if let Some(p) = h.overlapping_point(&points) {
                self.problem(
                    &format!("{at}.profile"),
                    &format!(
                        "the profile's hole {} {}..={} covers registers of point \"{}\"",
                        h.function, h.first, h.last, p.name
                    ),
                );
            }
        }
        if points.is_empty() {
            self.problem(
                at,
                "has no points: give `profile = \"<name>\"` or [[devices.points]]",
            );
        }
        let mut seen = HashSet::new();
        for p in &points {
            if !seen.insert(p.name.as_str()) {
                self.problem(&format!("{at}.points"), &format!("point name \"{}\" appears twice (profile and inline points share one namespace)", p.name));
            }
        }

        let poll_interval = d.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL);
        if poll_interval < MIN_POLL_INTERVAL {
            self.problem(
                &format!("{at}.poll_interval"),
                &format!("{poll_interval:?} is too short; the minimum is {MIN_POLL_INTERVAL:?}"),
            );
        }
        let timeout = d.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            self.problem(&format!("{at}.timeout"), "must be longer than 0s");
        }
        let retries = d.retries.unwrap_or(DEFAULT_RETRIES);
        if retries > MAX_RETRIES {
            self.problem(&format!("{at}.retries"), &format!("{retries} is more than {MAX_RETRIES}; a dead device would hold its bus too long"));
        }
        let max_gap = max_gap.unwrap_or(DEFAULT_MAX_GAP);
        if max_gap > MAX_REGISTERS_PER_READ {
            self.problem(
                &format!("{at}.max_gap"),
                &format!("{max_gap} is more than one request can read ({MAX_REGISTERS_PER_READ})"),
            );
        }
        Some(Device {
            name: d.name.clone(),
            transport: transport?,
            unit: d.unit,
            points,
            poll_interval,
            timeout,
            retries,
            max_backoff: d.max_backoff.unwrap_or(DEFAULT_MAX_BACKOFF),
            max_gap,
            holes,
            tags: d.tags.clone(),
        })
    }

    fn profile(&mut self, at: &str, name: &str, cache: &mut ProfileCache) -> Option<ProfileConfig> {
        if let Some(p) = cache.loaded.get(name) {
            return p.clone().ok();
        }
        let file = cache.dir.join(format!("{name}.toml"));
        let loaded = match std::fs::read_to_string(&file) {
            Err(e) => {
                self.problem(
                    at,
                    &format!("cannot read profile \"{name}\" at {}: {e}", file.display()),
                );
                Err(())
            }
            Ok(text) => match parse_toml::<ProfileConfig>(&file, &text) {
                Err(p) => {
                    self.problems.push(p);
                    Err(())
                }
                Ok(p) if p.name != name => {
                    self.problems.push(Problem {
                        file: file.clone(),
                        at: "name".into(),
                        message: format!(
                            "\"{}\" does not match the file name; write name = \"{name}\"",
                            p.name
                        ),
                    });
                    Err(())
                }
                Ok(p) => Ok(p),
            },
        };
        cache.loaded.insert(name.to_owned(), loaded.clone());
        loaded.ok()
    }

    /// Validate one point; `file` is the profile file it came from (None: the config file).
    fn point(
        &mut self,
        file: Option<&Path>,
        at: &str,
        p: &PointConfig,
        default_order: crate::sources::modbus::config::WordOrder,
    ) -> Option<Point> {
        let before = self.problems.len();
        let bad = |msg: String| Problem {
            file: file.map_or_else(|| self.file.clone(), Path::to_path_buf),
            at: at.to_owned(),
            message: msg,
        };
        let mut found = Vec::new();
        if p.name.trim().is_empty() {
            found.push(bad("name must not be empty".into()));
        }
        let bits = p.function.is_bits();
        match (p.data_type, bits, p.bit) {
            (DataType::Bool, true, Some(_)) => {
                found.push(bad(format!(
                    "`bit` is only for a bool inside a register; {} already holds single bits",
                    p.function
                )));
            }
            (DataType::Bool, false, None) => {
                found.push(bad(
                    "a bool in a register table needs `bit = 0..15` (which bit of the register)"
                        .into(),
                ));
            }
            (DataType::Bool, false, Some(b)) if b > 15 => {
                found.push(bad(format!("bit {b} is not 0..15")));
            }
            (t, true, _) if t != DataType::Bool => {
                found.push(bad(format!("type {t:?} needs a register table (holding or input); {} holds single bits: use type = \"bool\"", p.function).to_lowercase()));
            }
            (t, false, Some(_)) if t != DataType::Bool => {
                found.push(bad("`bit` is only for type = \"bool\"".into()));
            }
            _ => {}
        }
        if !p.scale.is_finite() || p.scale == 0.0 {
            found.push(bad(format!(
                "scale {} must be a finite, non-zero number",
                p.scale
            )));
        }
        if !p.offset.is_finite() {
            found.push(bad(format!("offset {} must be finite", p.offset)));
        }
        if p.time_address.is_some() && bits {
            found.push(bad(
                "time_address needs a register table (holding or input)".into(),
            ));
        }
        let point = Point {
            name: p.name.clone(),
            function: p.function,
            address: p.address,
            data_type: p.data_type,
            word_order: p.word_order.unwrap_or(default_order),
            bit: if bits { None } else { p.bit },
            scale: p.scale,
            offset: p.offset,
            unit: p.unit.clone(),
            quantity: p.quantity,
            time: p
                .time_address
                .map(|t| (t, p.time_word_order.unwrap_or(default_order))),
        };
        if let Some(msg) = point_span_error(&point) {
            found.push(bad(msg));
        }
        self.problems.extend(found);
        (self.problems.len() == before).then_some(point)
    }
}

mod describe;
pub use describe::describe;

#[cfg(test)]
mod tests;
