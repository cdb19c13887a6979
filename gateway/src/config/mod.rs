//! The gateway's configuration: one TOML file, validated into a typed [`Config`] at load.
//!
//! Owns parsing (with `deny_unknown_fields` everywhere), the one problem type ([`Problem`],
//! collected in [`Problems`]) and the cross-checks that no single section can do (unique
//! source and sink names, subscriptions the embedded broker cannot route). Component config
//! structs live next to the code they configure, with their own validation (Modbus devices in
//! `sources::modbus::config`, MQTT in `sources::mqtt::config`, each sink in its module), and
//! are only gathered here.
//!
//! Every error names the file, the path inside it and, where one exists, the fix:
//! `site.toml: devices[2].points[5].word_order: unknown variant "ACBD", expected one of ...`.
//! All problems found are reported at once, so a technician fixes a file in one pass.
//! Secrets (tokens, passwords) are read from environment variables or files named in the
//! config, never written inline, and never printed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::engine::EngineConfig;
use crate::sources::modbus::config::{
    validate_modbus, Device, DeviceConfig, DeviceDefaults, SerialPortConfig,
};
pub use crate::sources::modbus::config::{MAX_RETRIES, MIN_POLL_INTERVAL};

/// Default directory for the spool and other state, relative to the config file when relative.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/anju";
/// Default profile directory name, next to the config file.
pub const DEFAULT_PROFILES_DIR: &str = "profiles";
/// Default period of the console summary of what flowed.
pub const DEFAULT_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

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
/// A single [`Problem`] with the path and toml's or the config type's message and line.
pub fn parse_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, Problem> {
    let problem = |at: String, message: &str, span: Option<std::ops::Range<usize>>| {
        let mut message = message.trim().to_owned();
        if let Some(span) = span {
            // Line breaks before the span, plus one: a key at the start of a line is on that
            // line (`lines().count()` of the text before it named the line before).
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            message.push_str(&format!(" (line {line})"));
        }
        Problem {
            file: file.to_path_buf(),
            at,
            message,
        }
    };
    let document = toml::de::DeTable::parse(text)
        .map_err(|e| problem(String::new(), e.message(), e.span()))?;
    reader::from_document(document)
        .map_err(|e| problem(e.at.unwrap_or_default(), &e.message, e.span))
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
    /// What makes the clock trusted (`[clock]`).
    #[serde(default)]
    pub clock: crate::clock::ClockConfig,
    /// Spool settings.
    #[serde(default)]
    pub spool: crate::spool::SpoolConfig,
    /// Defaults for every Modbus device (`[defaults]`).
    #[serde(default)]
    pub defaults: DeviceDefaults,
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
    /// Derived channels (`[[derived]]`): settlement from levelling, differences, rates, ...
    #[serde(default)]
    pub derived: Vec<crate::engine::derived::DerivedConfig>,
    /// Concrete mixes (`[[mixes]]`): strength–maturity curve, T0, E, design strength.
    #[serde(default)]
    pub mixes: Vec<crate::engine::curing::MixConfig>,
    /// Concrete pours (`[[pours]]`): GB 50496 curing control, maturity and strength milestones.
    #[serde(default)]
    pub pours: Vec<crate::engine::curing::PourConfig>,
    /// The embedded MQTT broker for site sensor nodes; absent = not started.
    #[serde(default)]
    pub embedded_broker: Option<crate::broker::EmbeddedBrokerConfig>,
    /// Where spooled data is delivered. None: readings stay in the spool (under its bound).
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// The console's HTTP server (`[console]`); absent = on, at 127.0.0.1:8080, no token.
    #[serde(default)]
    pub console: crate::console::ConsoleConfig,
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
    /// Alerts to a siren, beacon or relay on a Modbus coil or holding register.
    ModbusOutput(crate::sinks::modbus_output::ModbusOutputConfig),
}

/// A validated sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// InfluxDB v2 with its token resolved.
    Influxdb(crate::sinks::influxdb::ResolvedInflux),
    /// Upstream MQTT for alerts, credentials resolved.
    Mqtt(crate::sinks::mqtt::ResolvedMqtt),
    /// Webhook for alerts, URL (a secret) resolved.
    Webhook(crate::sinks::webhook::ResolvedWebhook),
    /// A Modbus output for alerts, its device checked.
    ModbusOutput(crate::sinks::modbus_output::ResolvedModbusOutput),
}

impl Sink {
    /// The sink's name (its spool cursor).
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Influxdb(r) => &r.name,
            Self::Mqtt(r) => &r.name,
            Self::Webhook(r) => &r.name,
            Self::ModbusOutput(r) => &r.name,
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
    /// What makes the clock trusted.
    pub clock: crate::clock::ClockConfig,
    /// Spool settings.
    pub spool: crate::spool::SpoolConfig,
    /// Modbus devices with their points resolved.
    pub devices: Vec<Device>,
    /// MQTT sources with their secrets resolved.
    pub mqtt: Vec<crate::sources::mqtt::MqttSettings>,
    /// Alert rules and sensor checks, validated.
    pub rules: crate::engine::rules::RuleSet,
    /// Derived channels, validated.
    pub derived: crate::engine::derived::DerivedPlan,
    /// Pours and their mixes, validated (their GB 50496 rules are in `rules`).
    pub pours: crate::engine::curing::CuringPlan,
    /// The embedded broker, if configured, its users' passwords read.
    pub embedded_broker: Option<crate::broker::BrokerSettings>,
    /// Sinks with their secrets resolved.
    pub sinks: Vec<Sink>,
    /// The console's listen address and token; `None` when turned off.
    pub console: Option<crate::console::ConsoleSettings>,
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
        let mut v = Problems::new(path);
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
            v.push("summary_interval", "must be longer than 0s");
        }
        if let Err(msg) = raw.engine.validate() {
            v.push("engine", msg);
        }
        if let Err(msg) = raw.spool.validate("spool") {
            v.push("", msg);
        }

        let devices = validate_modbus(
            &raw.defaults,
            &raw.serial_ports,
            &raw.devices,
            &profiles_dir,
            &mut v,
        );
        let mut mqtt = Vec::new();
        let mut mqtt_names = HashSet::new();
        for (i, m) in raw.mqtt.iter().enumerate() {
            let at = format!("mqtt[{i}]");
            if !mqtt_names.insert(m.name.as_str()) {
                v.push(
                    format!("{at}.name"),
                    format!("MQTT source name \"{}\" is used twice", m.name),
                );
            }
            match m.validate(&at) {
                Ok(settings) => mqtt.push(settings),
                Err(found) => v.extend(found),
            }
        }
        let embedded_broker = raw
            .embedded_broker
            .as_ref()
            .and_then(|b| b.validate("embedded_broker", &mut v));
        if let Some(b) = &embedded_broker {
            let listeners: Vec<SocketAddr> = std::iter::once(b.listen)
                .chain(b.tls.as_ref().map(|t| t.listen))
                .collect();
            for (i, m) in mqtt.iter().enumerate() {
                let own = listeners
                    .iter()
                    .any(|l| m.port == l.port() && is_local_host(&m.host, *l));
                if !own {
                    continue;
                }
                // The gateway's own source logs in like any client: a login the broker refuses
                // would only show as a connection error at run time.
                if !b.accepts(m.username.as_deref(), m.password.as_ref()) {
                    v.push(
                        format!("mqtt[{i}].username"),
                        "this source reads the embedded broker, which has users: set `username` and the password \
                         (password_env or password_file) of one of [[embedded_broker.users]]",
                    );
                }
            }
        }
        if let Some(b) = &raw.embedded_broker {
            // A subscription the embedded broker cannot serve would get the source disconnected
            // on every SUBSCRIBE (see `broker::filter_supported`): refuse it here instead.
            for (i, m) in mqtt.iter().enumerate() {
                if m.port != b.listen.port() || !is_local_host(&m.host, b.listen) {
                    continue;
                }
                for (j, sub) in m.subscriptions.iter().enumerate() {
                    if !crate::broker::filter_supported(sub.pattern.filter()) {
                        v.push(
                            format!("mqtt[{i}].subscriptions[{j}].topic"),
                            format!(
                                "the embedded broker cannot route \"{}\" (rumqttd drops topics starting with `$`); \
                                 point this source at mosquitto for CIGEM `$dp` devices, or have the devices publish to a topic without `$`",
                                sub.pattern.as_str()
                            ),
                        );
                    }
                }
            }
        }
        let pours = crate::engine::curing::CuringPlan::from_config(&raw.mixes, &raw.pours)
            .unwrap_or_else(|problems| {
                for (at, message) in problems {
                    v.push(at, message);
                }
                crate::engine::curing::CuringPlan::default()
            });
        // Each pour brings its GB 50496-2018 §3.0.4 rules, validated and evaluated as any.
        let mut alerts = raw.alerts.clone();
        alerts.rules.extend(pours.rules(alerts.language));
        let rules = match crate::engine::rules::RuleSet::from_config(&alerts, "alerts") {
            Ok(r) => r,
            Err(problems) => {
                for p in problems {
                    v.push(p.at, p.message);
                }
                crate::engine::rules::RuleSet::default()
            }
        };
        let mut derived = crate::engine::derived::DerivedPlan::from_config(&raw.derived, "derived")
            .unwrap_or_else(|problems| {
                for (at, message) in problems {
                    v.push(at, message);
                }
                crate::engine::derived::DerivedPlan::default()
            });
        // The rate, difference and tilt rules' own derived blocks come after the section's, so
        // they may take its outputs (a rate of a levelling settlement) and tag their series
        // `derived = <rule>`: one name, one producer.
        for (i, r) in alerts.rules.iter().enumerate() {
            let own = rules.derived_blocks().iter().any(|b| b.name == r.name);
            if own && raw.derived.iter().any(|d| d.name == r.name) {
                v.push(
                    format!("alerts.rules[{i}].name"),
                    format!("\"{}\" is also the name of a [[derived]] block, and a {} rule stores its values as a derived series of its own name; give the rule its own name", r.name, r.kind.as_str()),
                );
            }
            if own && raw.pours.iter().any(|p| p.name == r.name) {
                v.push(
                    format!("alerts.rules[{i}].name"),
                    format!(
                        "\"{}\" is also the name of a pour; give the rule its own name",
                        r.name
                    ),
                );
            }
        }
        derived.specs.extend(rules.derived_blocks().iter().cloned());
        // A pour's series carry `derived = <pour>`, as a block's carry its name: one name, one
        // producer (the pour's rules select by it).
        for (i, p) in raw.pours.iter().enumerate() {
            if raw.derived.iter().any(|d| d.name == p.name) {
                v.push(
                    format!("pours[{i}].name"),
                    format!("\"{}\" is also the name of a [[derived]] block; give the pour its own name", p.name),
                );
            }
        }
        let mut sinks = Vec::new();
        let mut sink_names = HashSet::new();
        for (i, s) in raw.sinks.iter().enumerate() {
            let at = format!("sinks[{i}]");
            let validated = match s {
                SinkConfig::Influxdb(c) => c.validate(&at).map(Sink::Influxdb),
                SinkConfig::Mqtt(c) => c.validate(&at).map(Sink::Mqtt),
                SinkConfig::Webhook(c) => c.validate(&at).map(Sink::Webhook),
                SinkConfig::ModbusOutput(c) => {
                    for (field, message) in
                        crate::sinks::modbus_output::config::check_device(c, &devices)
                    {
                        v.push(format!("{at}.{field}"), message);
                    }
                    c.validate(&at).map(Sink::ModbusOutput)
                }
            };
            match validated {
                Ok(sink) => {
                    if !sink_names.insert(sink.name().to_owned()) {
                        v.push(
                            format!("{at}.name"),
                            format!(
                                "sink name \"{}\" is used twice; give each sink its own `name`",
                                sink.name()
                            ),
                        );
                    }
                    sinks.push(sink);
                }
                Err(found) => v.extend(found),
            }
        }
        let console = raw.console.validate("console").unwrap_or_else(|found| {
            v.extend(found);
            None
        });
        if !v.is_empty() {
            return Err(ConfigError::Invalid(v.into_vec()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            site: raw.site,
            gateway_id: raw.gateway_id,
            data_dir,
            summary_interval,
            engine: raw.engine,
            clock: raw.clock,
            spool: raw.spool,
            devices,
            mqtt,
            rules,
            derived,
            pours,
            embedded_broker,
            sinks,
            console,
        })
    }
}

/// Whether `host` names the machine the embedded broker listens on.
fn is_local_host(host: &str, listen: SocketAddr) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.trim_end_matches('.').eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| {
            ip == listen.ip()
                || (ip.is_loopback() && listen.ip().is_loopback())
                || listen.ip().is_unspecified()
        })
}

mod coverage;
mod describe;
mod problem;
mod reader;
pub use coverage::{
    rule_coverage, RuleCoverage, MAX_LISTED_CHANNELS, TYPICAL_CIGEM_UPLOAD_INTERVAL,
};
pub use describe::describe;
pub use problem::{Problem, Problems};

#[cfg(test)]
mod tests;
