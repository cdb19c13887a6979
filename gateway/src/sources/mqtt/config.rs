//! Configuration of one MQTT source: the raw TOML shape ([`MqttSourceConfig`]) and its validated
//! form ([`MqttSettings`]).
//!
//! Owns broker address parsing, the credentials (the password read by [`crate::secret`], never
//! inline) and the checks that turn a subscription's topic, templates and payload mapping
//! into typed values. It does not connect ([`super::subscriber`]).
//!
//! ```toml
//! [[mqtt]]
//! name = "nodes"
//! address = "127.0.0.1:1883"          # or host = "..." / port = 1883; default 127.0.0.1:1883
//! timezone = "+08:00"                 # for payload times without an offset (the default)
//! username = "gateway"
//! password_env = "ANJU_MQTT_PASSWORD" # or password_file = "/etc/anju/mqtt.pass"
//! tls = { ca_file = "/etc/anju/site-ca.pem" } # TLS (port 8883 by default), see crate::tls
//!
//! [[mqtt.subscriptions]]
//! name = "curing"
//! topic = "sites/{site}/nodes/{node}/up"
//! device = "{node}"                   # default: the {device} placeholder, else the name
//! quantity = "temperature"
//! unit = "°C"
//! payload = { format = "json", readings = "readings", sensor = "sensor", value = "value", unit = "unit", time = "ts" }
//!
//! [[mqtt.subscriptions]]
//! name = "geohazard"
//! topic = "$dp"
//! payload = { format = "cigem" }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::payload::{PayloadFormat, DEFAULT_MAX_PAYLOAD_BYTES};
use super::timestamp::{UtcOffset, DEFAULT_TIMEZONE};
use super::topic::{Template, TopicPattern};
use crate::config::{Problem, Problems};
use crate::model::QuantityKind;
use crate::secret::{process_env, read_secret, EnvLookup, Secret};
use crate::tls::{ClientTls, TlsConfig, MQTT_TLS_PORT};

/// MQTT's registered port (IANA, MQTT 3.1.1 §4.2).
pub const DEFAULT_PORT: u16 = 1883;
/// Broker host when the config names none: the embedded broker on this machine.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default keep-alive. Short enough that a dead connection (a site router that dropped the
/// NAT entry) is noticed within a minute and a half (MQTT 3.1.1 §3.1.2.10: 1.5 × keep-alive).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Longest keep-alive MQTT can express (a 16-bit number of seconds, §3.1.2.10).
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(65_535);
/// Largest `max_payload_bytes` accepted: it sizes the receive buffer, which must stay small on
/// a gateway with 256 MiB of RAM.
pub const MAX_PAYLOAD_BYTES_LIMIT: usize = 4 * 1024 * 1024;
/// Longest client id (an MQTT UTF-8 string, §1.5.3).
pub const MAX_CLIENT_ID_BYTES: usize = 65_535;
/// Default longest wait between reconnect attempts. Site brokers are on the same LAN (or this
/// machine): a broker back after a restart should be reconnected within seconds, and a few
/// attempts every 5 s cost nothing (issue 10 item 11: a 16 s ceiling reconnected a broker that
/// was back after 20 s only 11.4 s later).
pub const DEFAULT_MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);
/// Largest `max_reconnect_backoff` accepted: beyond it a broker that came back is missed for
/// longer than a site tolerates without data.
pub const MAX_RECONNECT_BACKOFF_LIMIT: Duration = Duration::from_secs(300);
/// Default channel (series) cap per source. A site has hundreds to a few thousand sensor
/// channels; 5,000 leaves room and bounds the memory of a publisher that invents ids (issue 14
/// item 3: 50,000 ids took the gateway from 25 MB to 200 MB). The engine keeps state per channel
/// too, so this cap bounds both.
pub const DEFAULT_MAX_CHANNELS: usize = 5_000;
/// Largest `max_channels` accepted (the former fixed limit).
pub const MAX_CHANNELS_LIMIT: usize = 100_000;
/// Default time without a reading after which a channel is evicted from the source's series
/// cache (it is rebuilt on its next reading; nothing is lost but the cached names). Sensors
/// report every minute to every 30 minutes, so an hour keeps every live channel cached.
pub const DEFAULT_CHANNEL_IDLE_EVICT: Duration = Duration::from_secs(3600);
/// Shortest `channel_idle_evict` accepted.
pub const MIN_CHANNEL_IDLE_EVICT: Duration = Duration::from_secs(1);
/// Default subscription QoS: at least once, so a reading survives a reconnect when the broker
/// keeps the persistent session.
pub const DEFAULT_QOS: u8 = 1;

/// One `[[mqtt]]` source as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// Source name, unique in the gateway; used in logs, metrics and the default client id.
    pub name: String,
    /// Broker as `host:port` (`[v6]:port` for IPv6). Exclusive with `host`/`port`.
    #[serde(default)]
    pub address: Option<String>,
    /// Broker host name or IP.
    #[serde(default)]
    pub host: Option<String>,
    /// Broker port (default 1883; 8883 with `tls`).
    #[serde(default)]
    pub port: Option<u16>,
    /// TLS to the broker ([`crate::tls`]); absent = plain TCP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// MQTT client id. Default `anju-<site>-<gateway>-<name>`: stable across restarts, which a
    /// persistent session needs.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name, if the broker requires one.
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (one line; a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Keep-alive interval, e.g. `"30s"`.
    #[serde(default, with = "crate::config::duration_opt")]
    pub keep_alive: Option<Duration>,
    /// `false` (default): a persistent session, so the broker queues QoS 1 messages while the
    /// gateway restarts. `true`: start afresh on every connect.
    #[serde(default)]
    pub clean_session: bool,
    /// Largest payload accepted; larger messages are dropped unparsed and counted.
    #[serde(default)]
    pub max_payload_bytes: Option<usize>,
    /// Longest wait between reconnect attempts, e.g. `"5s"`. Default
    /// [`DEFAULT_MAX_RECONNECT_BACKOFF`].
    #[serde(default, with = "crate::config::duration_opt")]
    pub max_reconnect_backoff: Option<Duration>,
    /// Most distinct channels this source creates; readings of further ones are refused and
    /// counted. Default [`DEFAULT_MAX_CHANNELS`].
    #[serde(default)]
    pub max_channels: Option<usize>,
    /// A channel without readings for this long is evicted from the source's memory, e.g.
    /// `"1h"`. Default [`DEFAULT_CHANNEL_IDLE_EVICT`].
    #[serde(default, with = "crate::config::duration_opt")]
    pub channel_idle_evict: Option<Duration>,
    /// Offset of payload timestamps written without one, e.g. `"+08:00"` (default
    /// [`DEFAULT_TIMEZONE`]): Chinese devices send local time without an offset. A JSON
    /// subscription's `payload.timezone` wins.
    #[serde(default)]
    pub timezone: Option<UtcOffset>,
    /// What to subscribe to; the first subscription whose topic matches a message decodes it.
    pub subscriptions: Vec<SubscriptionConfig>,
}

/// One `[[mqtt.subscriptions]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Name, unique within the source; the `subscription` label of the metrics.
    pub name: String,
    /// Topic with `{placeholders}` for whole levels, `+` and a trailing `#`.
    pub topic: String,
    /// 0 or 1 (default 1).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// How payloads are written.
    pub payload: PayloadFormat,
    /// Device name template (`"{node}"`, `"node-{node}"`, `"gnss-1"`). Default: the `{device}`
    /// placeholder if the topic has one, else the subscription name. Not for `cigem`.
    #[serde(default)]
    pub device: Option<String>,
    /// Point name template, for payloads that do not name the sensor. Not for `cigem`.
    #[serde(default)]
    pub point: Option<String>,
    /// Quantity of the readings (default `other`). Not for `cigem`.
    #[serde(default)]
    pub quantity: Option<QuantityKind>,
    /// Unit of the readings, when the payload does not say. Not for `cigem`.
    #[serde(default)]
    pub unit: Option<String>,
    /// Fixed tags for every reading (`structure = "block-A"`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

const fn default_qos() -> u8 {
    DEFAULT_QOS
}

/// MQTT delivery guarantee of a subscription (MQTT 3.1.1 §4.3). QoS 2 is not offered: readings
/// are idempotent by series and timestamp, so at-least-once is enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// QoS 0.
    AtMostOnce,
    /// QoS 1.
    AtLeastOnce,
}

/// A validated subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Name (metrics label).
    pub name: String,
    /// Parsed topic.
    pub pattern: TopicPattern,
    /// Delivery guarantee.
    pub qos: Qos,
    /// Payload format.
    pub payload: PayloadFormat,
    /// Device name, unless the payload names it.
    pub device: Template,
    /// Point name, unless the payload names it.
    pub point: Option<Template>,
    /// Default quantity.
    pub quantity: QuantityKind,
    /// Default unit.
    pub unit: String,
    /// Fixed tags.
    pub tags: BTreeMap<String, String>,
}

/// A validated MQTT source. Equal settings (secrets and TLS files' contents included) keep a
/// running source, and its session, through a config reload (`crate::reload`).
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    /// Source name.
    pub name: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS, when configured.
    pub tls: Option<ClientTls>,
    /// Client id, if configured (else derived by [`super::MqttSource::new`]).
    pub client_id: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password, loaded from the environment or a file.
    pub password: Option<Secret>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Clean (true) or persistent (false) session.
    pub clean_session: bool,
    /// Largest payload accepted.
    pub max_payload_bytes: usize,
    /// Longest wait between reconnect attempts.
    pub max_reconnect_backoff: Duration,
    /// Most distinct channels.
    pub max_channels: usize,
    /// Idle time after which a channel leaves the series cache.
    pub channel_idle_evict: Duration,
    /// Subscriptions, in match order.
    pub subscriptions: Vec<Subscription>,
}

impl MqttSettings {
    /// `host:port` for logs.
    #[must_use]
    pub fn broker(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl MqttSourceConfig {
    /// Validate into typed settings. `path` is this source's config path (`mqtt[0]`); errors
    /// name the field under it and the fix. Reads the password from its variable or file.
    ///
    /// # Errors
    /// Every problem found.
    pub fn validate(&self, path: &str) -> Result<MqttSettings, Vec<Problem>> {
        self.validate_with_env(path, &process_env)
    }

    /// [`Self::validate`] with the environment looked up by `env`.
    ///
    /// # Errors
    /// Every problem found.
    pub(crate) fn validate_with_env(
        &self,
        path: &str,
        env: EnvLookup<'_>,
    ) -> Result<MqttSettings, Vec<Problem>> {
        let mut p = Problems::default();
        let at = |field: &str| format!("{path}.{field}");
        if self.name.trim().is_empty() {
            p.push(at("name"), "must not be empty");
        }
        let broker = self.broker(path, &mut p);
        let tls = self
            .tls
            .as_ref()
            .and_then(|t| t.validate(&at("tls"), &mut p));
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > MAX_CLIENT_ID_BYTES || id.contains('\0') {
                p.push(
                    at("client_id"),
                    format!("must be 1 to {MAX_CLIENT_ID_BYTES} bytes without NUL; or remove it to use the default"),
                );
            }
        }
        // The password, by the rules of `crate::secret`.
        let password = read_secret(
            "password",
            self.password_env.as_deref(),
            self.password_file.as_deref(),
            env,
        )
        .map_err(|(field, message)| p.push(at(&field), message))
        .ok()
        .flatten()
        .map(|(_, secret)| secret);
        if password.is_some() && self.username.is_none() {
            p.push(
                at("username"),
                "a password is configured but no username (MQTT 3.1.1 §3.1.2.9 requires one)",
            );
        }
        let keep_alive = self.keep_alive.unwrap_or(DEFAULT_KEEP_ALIVE);
        if keep_alive < Duration::from_secs(1) || keep_alive > MAX_KEEP_ALIVE {
            p.push(
                at("keep_alive"),
                "must be between \"1s\" and \"65535s\" (a dead connection is found after 1.5 × keep_alive)",
            );
        }
        let max_payload_bytes = self.max_payload_bytes.unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES);
        if max_payload_bytes == 0 || max_payload_bytes > MAX_PAYLOAD_BYTES_LIMIT {
            p.push(
                at("max_payload_bytes"),
                format!("must be between 1 and {MAX_PAYLOAD_BYTES_LIMIT}"),
            );
        }
        let max_reconnect_backoff = self
            .max_reconnect_backoff
            .unwrap_or(DEFAULT_MAX_RECONNECT_BACKOFF);
        if max_reconnect_backoff < super::subscriber::INITIAL_BACKOFF
            || max_reconnect_backoff > MAX_RECONNECT_BACKOFF_LIMIT
        {
            p.push(
                at("max_reconnect_backoff"),
                format!(
                    "must be between {:?} and {:?}; the default is {:?}",
                    super::subscriber::INITIAL_BACKOFF,
                    MAX_RECONNECT_BACKOFF_LIMIT,
                    DEFAULT_MAX_RECONNECT_BACKOFF
                ),
            );
        }
        let max_channels = self.max_channels.unwrap_or(DEFAULT_MAX_CHANNELS);
        if max_channels == 0 || max_channels > MAX_CHANNELS_LIMIT {
            p.push(
                at("max_channels"),
                format!("must be between 1 and {MAX_CHANNELS_LIMIT}; the default is {DEFAULT_MAX_CHANNELS}"),
            );
        }
        let channel_idle_evict = self
            .channel_idle_evict
            .unwrap_or(DEFAULT_CHANNEL_IDLE_EVICT);
        if channel_idle_evict < MIN_CHANNEL_IDLE_EVICT {
            p.push(
                at("channel_idle_evict"),
                format!("must be at least {MIN_CHANNEL_IDLE_EVICT:?}; the default is \"1h\""),
            );
        }
        if self.subscriptions.is_empty() {
            p.push(
                at("subscriptions"),
                "add at least one [[...subscriptions]] entry with a topic and a payload format",
            );
        }
        let mut subscriptions: Vec<Subscription> = Vec::with_capacity(self.subscriptions.len());
        for (i, sub) in self.subscriptions.iter().enumerate() {
            let sub_path = format!("{path}.subscriptions[{i}]");
            if let Some(j) = self.subscriptions[..i]
                .iter()
                .position(|s| s.name == sub.name)
            {
                p.push(
                    format!("{sub_path}.name"),
                    format!("\"{}\" is already the name of subscriptions[{j}]", sub.name),
                );
            }
            let Some(mut validated) = sub.validate(&sub_path, &mut p) else {
                continue;
            };
            if let PayloadFormat::Json(mapping) = &mut validated.payload {
                mapping
                    .timezone
                    .get_or_insert(self.timezone.unwrap_or(DEFAULT_TIMEZONE));
            }
            if let Some(other) = subscriptions
                .iter()
                .find(|s| s.pattern.filter() == validated.pattern.filter())
            {
                p.push(
                    format!("{sub_path}.topic"),
                    format!(
                        "same MQTT filter \"{}\" as subscription \"{}\", which matches first, so this one would never receive",
                        validated.pattern.filter(),
                        other.name
                    ),
                );
            }
            subscriptions.push(validated);
        }
        let settings = broker.map(|(host, port)| MqttSettings {
            name: self.name.clone(),
            host,
            port,
            tls,
            client_id: self.client_id.clone(),
            username: self.username.clone(),
            password,
            keep_alive,
            clean_session: self.clean_session,
            max_payload_bytes,
            max_reconnect_backoff,
            max_channels,
            channel_idle_evict,
            subscriptions,
        });
        p.finish(path, settings)
    }

    /// Host and port from `address` or `host`/`port`. Only the syntax is checked: a host name is
    /// resolved when connecting, so DNS being down at boot does not make the config invalid.
    fn broker(&self, path: &str, p: &mut Problems) -> Option<(String, u16)> {
        if self.address.is_some() && (self.host.is_some() || self.port.is_some()) {
            p.push(
                format!("{path}.address"),
                "set either `address` or `host`/`port`, not both",
            );
            return None;
        }
        match (&self.address, &self.host) {
            (Some(address), _) => {
                let parsed = parse_address(address);
                if parsed.is_none() {
                    p.push(
                        format!("{path}.address"),
                        format!("\"{address}\" is not `host:port` (use `[addr]:port` for IPv6)"),
                    );
                }
                parsed
            }
            (None, Some(host)) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host.is_empty() {
                    p.push(format!("{path}.host"), "must not be empty");
                    return None;
                }
                Some((host.to_owned(), self.port.unwrap_or(self.default_port())))
            }
            (None, None) => Some((
                DEFAULT_HOST.to_owned(),
                self.port.unwrap_or(self.default_port()),
            )),
        }
    }
}

impl MqttSourceConfig {
    /// The port when none is written: MQTT's, or MQTT over TLS's with a `tls` table.
    fn default_port(&self) -> u16 {
        if self.tls.is_some() {
            MQTT_TLS_PORT
        } else {
            DEFAULT_PORT
        }
    }
}

/// `host:port` or `[v6]:port`.
fn parse_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty() && port != 0).then(|| (host.to_owned(), port))
}

impl SubscriptionConfig {
    /// Validate one subscription; `path` is `mqtt[0].subscriptions[1]`. Every problem found is
    /// pushed to `p`, naming the field; `None` when there was any.
    pub fn validate(&self, path: &str, p: &mut Problems) -> Option<Subscription> {
        let before = p.len();
        let at = |field: &str| format!("{path}.{field}");
        if self.name.trim().is_empty() {
            p.push(at("name"), "must not be empty");
        }
        let pattern = TopicPattern::parse(&self.topic)
            .map_err(|e| p.push(at("topic"), e.to_string()))
            .ok();
        let qos = match self.qos {
            0 => Qos::AtMostOnce,
            1 => Qos::AtLeastOnce,
            n => {
                p.push(
                    at("qos"),
                    format!(
                        "{n} is not supported; use 0 or 1 (readings are idempotent, so 1 is enough)"
                    ),
                );
                Qos::AtLeastOnce
            }
        };
        let cigem = matches!(self.payload, PayloadFormat::Cigem {});
        if cigem {
            for (field, set) in [
                ("device", self.device.is_some()),
                ("point", self.point.is_some()),
                ("quantity", self.quantity.is_some()),
                ("unit", self.unit.is_some()),
            ] {
                if set {
                    p.push(
                        at(field),
                        "cigem payloads name the device, points, quantities and units themselves; remove it",
                    );
                }
            }
        }
        // The rest needs the topic's placeholders.
        let pattern = pattern?;
        let device = match &self.device {
            Some(t) => Template::parse(t, &pattern)
                .map_err(|e| p.push(at("device"), e.to_string()))
                .ok(),
            None => Some(match pattern.index_of("device") {
                Some(i) => Template::capture(i),
                None => Template::fixed(&self.name),
            }),
        };
        let point = match self.point.as_deref().map(|t| Template::parse(t, &pattern)) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                p.push(at("point"), e.to_string());
                // Reported; go on as if it were set, so the payload checks below do not also
                // ask for it.
                Some(Template::fixed(&self.name))
            }
        };
        match &self.payload {
            PayloadFormat::Json(mapping) if mapping.sensor.is_some() && point.is_some() => {
                p.push(
                    at("point"),
                    "the point name comes from `payload.sensor`; remove `point` (or `sensor`)",
                );
            }
            PayloadFormat::Json(mapping) => {
                if let Err(m) = mapping.validate(point.is_some()) {
                    p.push(at("payload"), m);
                }
            }
            PayloadFormat::Plain {} if point.is_none() => {
                p.push(
                    at("point"),
                    "plain payloads carry no sensor name: set `point` (a fixed name or a topic placeholder like \"{sensor}\")",
                );
            }
            PayloadFormat::Plain {} | PayloadFormat::Cigem {} => {}
        }
        for key in self.tags.keys() {
            let reason = if key.is_empty() {
                Some("tag names must not be empty".to_owned())
            } else if key == "point" || key == "unit" {
                Some(format!(
                    "tag \"{key}\" is set per channel by the gateway; remove it"
                ))
            } else if pattern.index_of(key).is_some() {
                Some(format!(
                    "tag \"{key}\" is also a topic placeholder, which sets it; remove one"
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                p.push(at("tags"), reason);
            }
        }
        if p.len() > before {
            return None;
        }
        Some(Subscription {
            name: self.name.clone(),
            pattern,
            qos,
            payload: self.payload.clone(),
            device: device?,
            point,
            quantity: self.quantity.unwrap_or(QuantityKind::Other),
            unit: self.unit.clone().unwrap_or_default(),
            tags: self.tags.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::mqtt::topic::Captures;

    fn parse(text: &str) -> MqttSourceConfig {
        toml::from_str(text).expect("toml")
    }

    const MINIMAL: &str = r#"
        name = "site"
        [[subscriptions]]
        name = "nodes"
        topic = "sites/{site}/nodes/{node}/up"
        device = "{node}"
        quantity = "temperature"
        unit = "°C"
        payload = { format = "json", readings = "readings", sensor = "sensor", value = "value", unit = "unit", time = "ts" }
        [[subscriptions]]
        name = "geohazard"
        topic = "$dp"
        qos = 0
        payload = { format = "cigem" }
    "#;

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let s = parse(MINIMAL).validate("mqtt[0]").expect("valid");
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 1883));
        assert_eq!(s.keep_alive, Duration::from_secs(30));
        assert!(!s.clean_session);
        assert_eq!(s.max_payload_bytes, 65_536);
        assert_eq!(s.max_reconnect_backoff, Duration::from_secs(5));
        assert_eq!(s.max_channels, 5_000);
        assert_eq!(s.channel_idle_evict, Duration::from_secs(3600));
        assert_eq!(s.subscriptions.len(), 2);
        let nodes = &s.subscriptions[0];
        assert_eq!(nodes.pattern.filter(), "sites/+/nodes/+/up");
        assert_eq!(nodes.qos, Qos::AtLeastOnce);
        assert_eq!(nodes.quantity, QuantityKind::Temperature);
        let caps = nodes
            .pattern
            .matches("sites/xa/nodes/n7/up")
            .expect("match");
        assert_eq!(nodes.device.render(&caps), "n7");
        let dp = &s.subscriptions[1];
        assert_eq!(dp.qos, Qos::AtMostOnce);
        assert_eq!(dp.device.render(&Captures::none()), "geohazard");
    }

    #[test]
    fn device_defaults_to_the_device_placeholder() {
        let c = parse(
            r#"name = "s"
            [[subscriptions]]
            name = "plain"
            topic = "n/{device}/{sensor}"
            point = "{sensor}"
            payload = { format = "plain" }"#,
        );
        let s = c.validate("mqtt[1]").expect("valid");
        let caps = s.subscriptions[0]
            .pattern
            .matches("n/d9/t3")
            .expect("match");
        assert_eq!(s.subscriptions[0].device.render(&caps), "d9");
        assert_eq!(
            s.subscriptions[0]
                .point
                .as_ref()
                .expect("point")
                .render(&caps),
            "t3"
        );
    }

    fn error_of(text: &str) -> String {
        let found = parse(text).validate("mqtt[0]").expect_err("invalid");
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn errors_name_the_path_and_the_fix() {
        let sub = |extra: &str| {
            format!("name = \"s\"\n[[subscriptions]]\nname = \"a\"\npayload = {{ format = \"json\", sensor = \"s\", value = \"v\" }}\n{extra}\n")
        };
        assert_eq!(
            error_of(&sub("topic = \"sites/{node/up\"")),
            "mqtt[0].subscriptions[0].topic: placeholder \"{node\" is not closed: add a `}`"
        );
        assert_eq!(
            error_of(&sub("topic = \"a/{x}\"\nqos = 2")),
            "mqtt[0].subscriptions[0].qos: 2 is not supported; use 0 or 1 (readings are idempotent, so 1 is enough)"
        );
        assert_eq!(
            error_of(&sub("topic = \"a/{x}\"\ndevice = \"{y}\"")),
            "mqtt[0].subscriptions[0].device: placeholder \"y\" is not in the topic; the topic has: x"
        );
        assert!(error_of(&sub("topic = \"a/{x}\"\ntags = { x = \"1\" }"))
            .starts_with("mqtt[0].subscriptions[0].tags: tag \"x\""));
        assert!(
            error_of(&sub("topic = \"a\"\ntags = { point = \"1\" }")).contains("set per channel")
        );
        assert!(error_of(&sub("topic = \"a\"\npoint = \"p\"")).starts_with(
            "mqtt[0].subscriptions[0].point: the point name comes from `payload.sensor`"
        ));
        let two = format!(
            "{}[[subscriptions]]\nname = \"b\"\ntopic = \"a/{{y}}\"\npayload = {{ format = \"plain\" }}\npoint = \"p\"\n",
            sub("topic = \"a/{x}\"")
        );
        assert!(
            error_of(&two).starts_with("mqtt[0].subscriptions[1].topic: same MQTT filter \"a/+\"")
        );
        let dup = format!(
            "{}[[subscriptions]]\nname = \"a\"\ntopic = \"b\"\npayload = {{ format = \"plain\" }}\npoint = \"p\"\n",
            sub("topic = \"a/{x}\"")
        );
        assert!(error_of(&dup).starts_with("mqtt[0].subscriptions[1].name: \"a\" is already"));
        assert!(error_of(
            "name = \"s\"\n[[subscriptions]]\nname = \"a\"\ntopic = \"t\"\npayload = { format = \"plain\" }"
        )
        .starts_with("mqtt[0].subscriptions[0].point: plain payloads"));
        assert!(error_of(
            "name = \"s\"\n[[subscriptions]]\nname = \"a\"\ntopic = \"$dp\"\nunit = \"mm\"\npayload = { format = \"cigem\" }"
        )
        .starts_with("mqtt[0].subscriptions[0].unit: cigem payloads"));
        assert!(error_of("name = \"s\"\nsubscriptions = []")
            .starts_with("mqtt[0].subscriptions: add at least one"));
        assert!(
            error_of("name = \"s\"\nsubscriptions = []\naddress = \"a:1\"\nhost = \"b\"")
                .starts_with("mqtt[0].address: set either")
        );
        assert!(
            error_of("name = \"s\"\nsubscriptions = []\naddress = \"nope\"")
                .starts_with("mqtt[0].address: \"nope\"")
        );
        assert!(
            error_of("name = \"s\"\nsubscriptions = []\nkeep_alive = \"500ms\"")
                .starts_with("mqtt[0].keep_alive")
        );
        assert!(
            error_of("name = \"s\"\nsubscriptions = []\nmax_payload_bytes = 0")
                .starts_with("mqtt[0].max_payload_bytes")
        );
        assert!(
            error_of("name = \"s\"\nsubscriptions = []\nmax_reconnect_backoff = \"10m\"")
                .starts_with("mqtt[0].max_reconnect_backoff: must be between 500ms and 300s")
        );
        assert!(
            error_of("name = \"s\"\nsubscriptions = []\nmax_channels = 0")
                .starts_with("mqtt[0].max_channels: must be between 1 and 100000")
        );
        assert!(
            error_of("name = \"s\"\nsubscriptions = []\nchannel_idle_evict = \"10ms\"")
                .starts_with("mqtt[0].channel_idle_evict: must be at least 1s")
        );
        assert!(error_of("name = \"s\"\nsubscriptions = []\npassword_env = \"ANJU_TEST_SURELY_UNSET_VAR\"\nusername = \"u\"")
            .starts_with("mqtt[0].password_env: environment variable ANJU_TEST_SURELY_UNSET_VAR is not set"));
        assert!(toml::from_str::<MqttSourceConfig>(
            "name = \"s\"\nsubscriptions = []\npassword = \"x\""
        )
        .is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("broker.local:8883"),
            Some(("broker.local".to_owned(), 8883))
        );
        assert_eq!(parse_address("[::1]:1883"), Some(("::1".to_owned(), 1883)));
        assert_eq!(parse_address("::1:1883"), None);
        assert_eq!(parse_address("host:0"), None);
        assert_eq!(parse_address(":1883"), None);
        assert_eq!(parse_address("host:70000"), None);
    }

    #[test]
    fn password_file_is_read_and_redacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pass");
        std::fs::write(&file, "s3cret\n").expect("write");
        let text = format!(
            "name = \"s\"\nusername = \"gw\"\npassword_file = \"{}\"\n{}",
            file.display(),
            &MINIMAL[MINIMAL.find("[[subscriptions]]").expect("subs")..]
        );
        let s = parse(&text).validate("mqtt[0]").expect("valid");
        assert_eq!(s.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(format!("{s:?}").contains("<redacted>"));
    }

    #[test]
    fn every_problem_of_a_source_is_reported_at_once() {
        let found = parse(
            "name = \" \"\naddress = \"nope\"\nkeep_alive = \"500ms\"\npassword_env = \"PW\"\n\
             [[subscriptions]]\nname = \"a\"\ntopic = \"a/{x}\"\nqos = 2\npayload = { format = \"plain\" }\n\
             [[subscriptions]]\nname = \"a\"\ntopic = \"b\"\npoint = \"p\"\npayload = { format = \"plain\" }\n",
        )
        .validate_with_env("mqtt[0]", &|_| Ok("pw".to_owned()))
        .expect_err("invalid");
        let at: Vec<&str> = found.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            at,
            [
                "mqtt[0].name",
                "mqtt[0].address",
                "mqtt[0].username",
                "mqtt[0].keep_alive",
                "mqtt[0].subscriptions[0].qos",
                "mqtt[0].subscriptions[0].point",
                "mqtt[0].subscriptions[1].name",
            ]
        );
    }
}
