//! Configuration of the MQTT upstream alert sink: the raw TOML shape ([`MqttSinkConfig`]) and
//! its validated form ([`ResolvedMqtt`]) with the password read from the environment or a file.
//!
//! Owns the defaults, the topic-template checks and password resolution. Secrets are never
//! inline (docs/ARCHITECTURE.md §Conventions). It does not talk to the broker (see [`super::sink`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Problem, Problems};
use crate::secret::{process_env, read_secret, EnvLookup, Secret};
use crate::tls::{ClientTls, TlsConfig, MQTT_TLS_PORT};

/// Default sink name (the spool cursor is stored under it).
pub const DEFAULT_NAME: &str = "mqtt-alerts";
/// Default broker port (MQTT over plain TCP, IANA).
pub const DEFAULT_PORT: u16 = 1883;
/// Default topic of alert events; `{site}` is replaced by the alert's site.
pub const DEFAULT_TOPIC: &str = "anju/{site}/alerts";
/// Default topic of the retained summary of active alerts.
pub const DEFAULT_SUMMARY_TOPIC: &str = "anju/{site}/alerts/active";
/// The one placeholder a topic template knows.
pub const SITE_PLACEHOLDER: &str = "{site}";
/// Default MQTT keep-alive (MQTT 3.1.1 §3.1.2.10): a dead uplink is noticed within 1.5× this.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Shortest keep-alive accepted; rumqttc refuses below 5 s.
pub const MIN_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Default time to wait for the PubAcks of a whole batch before the connection is dropped and
/// the unacknowledged messages are sent again on a new one.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Default alert events per batch (one spool read, one round of PubAcks). Alerts are rare; a
/// burst of this many is already a site-wide event.
pub const DEFAULT_BATCH_MAX_RECORDS: u32 = 100;
/// Largest `batch_max_records`: every message of a batch is in flight at once, and MQTT packet
/// ids are 16-bit; 1000 keeps the in-flight window far below that and below broker limits.
pub const MAX_BATCH_MAX_RECORDS: u32 = 1000;
pub use crate::sinks::{DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX};

/// `[[sinks]]` entry of type mqtt, as written in the TOML.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    /// Name of the sink; also its cursor name in the spool. Default [`DEFAULT_NAME`].
    #[serde(default = "default_name")]
    pub name: String,
    /// Broker host name or address.
    pub host: String,
    /// Broker port. Default [`DEFAULT_PORT`], [`MQTT_TLS_PORT`] with `tls`.
    #[serde(default)]
    pub port: Option<u16>,
    /// TLS to the broker ([`crate::tls`]); absent = plain TCP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// MQTT client id; must be unique on the broker (a second client with the same id takes the
    /// session over), so there is no default: name it after the site's gateway.
    pub client_id: String,
    /// User name, if the broker wants one (not a secret).
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (surrounding whitespace is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Topic template of alert events. Default [`DEFAULT_TOPIC`].
    #[serde(default)]
    pub topic: Option<String>,
    /// Topic template of the retained summary. Default [`DEFAULT_SUMMARY_TOPIC`].
    #[serde(default)]
    pub summary_topic: Option<String>,
    /// Keep-alive, e.g. `"30s"`. Default [`DEFAULT_KEEP_ALIVE`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub keep_alive: Option<Duration>,
    /// Wait for a batch's PubAcks. Default [`DEFAULT_ACK_TIMEOUT`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub ack_timeout: Option<Duration>,
    /// Alert events per batch. Default [`DEFAULT_BATCH_MAX_RECORDS`].
    #[serde(default)]
    pub batch_max_records: Option<u32>,
    /// First wait after a failed connection. Default [`DEFAULT_RETRY_INITIAL`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub retry_initial: Option<Duration>,
    /// Longest wait between connection attempts. Default [`DEFAULT_RETRY_MAX`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub retry_max: Option<Duration>,
    /// Longest wait between reconnect attempts (`retry_max` still bounds the waits after spool
    /// errors). Default [`DEFAULT_MAX_RECONNECT_BACKOFF`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub max_reconnect_backoff: Option<Duration>,
}

/// Default longest wait between reconnects to the alert broker: an alert should reach the
/// bureau within seconds of its broker (or the site's uplink) returning (issue 10 item 11).
pub const DEFAULT_MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);

fn default_name() -> String {
    DEFAULT_NAME.to_owned()
}

/// The validated sink configuration: every default applied, password resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMqtt {
    /// Sink name (spool cursor name, metric label, log field).
    pub name: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS, when configured.
    pub tls: Option<ClientTls>,
    /// MQTT client id.
    pub client_id: String,
    /// User name and password, when the broker wants them.
    pub credentials: Option<(String, Secret)>,
    /// Topic template of alert events (contains `{site}`).
    pub topic: String,
    /// Topic template of the retained summary (contains `{site}`).
    pub summary_topic: String,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Wait for a batch's PubAcks.
    pub ack_timeout: Duration,
    /// Alert events per batch.
    pub batch_max_records: u32,
    /// First retry wait.
    pub retry_initial: Duration,
    /// Retry wait ceiling.
    pub retry_max: Duration,
    /// Longest wait between reconnect attempts.
    pub max_reconnect_backoff: Duration,
}

/// Check a topic template: `{site}` present, no other placeholder, no wildcard (MQTT 3.1.1
/// §4.7.1: `+` and `#` are for filters only), no empty level at the ends, no NUL (§1.5.3).
fn check_topic(t: &str) -> Result<(), String> {
    if !t.contains(SITE_PLACEHOLDER) {
        return Err(format!(
            "`{t}` has no {SITE_PLACEHOLDER}; alerts go to a per-site topic, e.g. {DEFAULT_TOPIC}"
        ));
    }
    let rest = t.replace(SITE_PLACEHOLDER, "");
    if rest.contains(['{', '}']) {
        return Err(format!("`{t}`: the only placeholder is {SITE_PLACEHOLDER}"));
    }
    if rest.contains(['+', '#', '\0']) {
        return Err(format!(
            "`{t}`: `+`, `#` and NUL are not allowed in a topic name (MQTT 3.1.1 §4.7)"
        ));
    }
    if t.starts_with('/') || t.ends_with('/') || t.starts_with('$') {
        return Err(format!(
            "`{t}`: must not start or end with `/` nor start with `$`, e.g. {DEFAULT_TOPIC}"
        ));
    }
    Ok(())
}

use crate::sinks::fmt_dur;

impl MqttSinkConfig {
    /// Apply defaults, read the password, and check every value. `path` is where this entry sits
    /// in the config, e.g. `sinks[1]`.
    ///
    /// # Errors
    /// Every problem found, e.g. `sinks[1].topic: `anju/alerts` has no {site}; ...`.
    pub fn validate(&self, path: &str) -> Result<ResolvedMqtt, Vec<Problem>> {
        self.validate_with_env(path, &process_env)
    }

    pub(crate) fn validate_with_env(
        &self,
        path: &str,
        env: EnvLookup<'_>,
    ) -> Result<ResolvedMqtt, Vec<Problem>> {
        let mut p = Problems::default();
        let at = |field: &str| format!("{path}.{field}");
        if self.name.trim().is_empty() {
            p.push(
                at("name"),
                "must not be empty; it names the sink's cursor in the spool",
            );
        }
        let host = self.host.trim();
        if host.is_empty() || host.contains(['/', ' ']) {
            p.push(
                at("host"),
                "give the broker's host name or address only, e.g. mqtt.example.org (the port \
                 goes in `port`)",
            );
        }
        let port = self.port.unwrap_or(if self.tls.is_some() {
            MQTT_TLS_PORT
        } else {
            DEFAULT_PORT
        });
        let tls = self
            .tls
            .as_ref()
            .and_then(|t| t.validate(&at("tls"), &mut p));
        if port == 0 {
            p.push(
                at("port"),
                format!("0 is not a port; the default is {DEFAULT_PORT}"),
            );
        }
        // MQTT 3.1.1 §3.1.3.1: 1..=23 bytes is what every server must accept; longer ids are
        // allowed by many brokers, so only emptiness is refused.
        if self.client_id.trim().is_empty() {
            p.push(
                at("client_id"),
                "must not be empty; use one unique per gateway, e.g. anju-site-xa",
            );
        }
        let password = read_secret(
            "password",
            self.password_env.as_deref(),
            self.password_file.as_deref(),
            env,
        )
        .map_err(|(field, m)| p.push(at(&field), m))
        .ok()
        .flatten();
        let credentials = match (&self.username, password) {
            (Some(u), Some((_, pw))) => Some((u.clone(), pw)),
            (Some(u), None) => Some((u.clone(), Secret::new(""))),
            (None, Some((field, _))) => {
                p.push(at(&field), "a password needs a username; set `username`");
                None
            }
            (None, None) => None,
        };
        let topic = self.topic.clone().unwrap_or_else(|| DEFAULT_TOPIC.into());
        if let Err(m) = check_topic(&topic) {
            p.push(at("topic"), m);
        }
        let summary_topic = self
            .summary_topic
            .clone()
            .unwrap_or_else(|| DEFAULT_SUMMARY_TOPIC.into());
        if let Err(m) = check_topic(&summary_topic) {
            p.push(at("summary_topic"), m);
        } else if summary_topic == topic {
            p.push(
                at("summary_topic"),
                format!(
                    "must differ from `topic`, or the retained summary would replace events; \
                     the default is {DEFAULT_SUMMARY_TOPIC}"
                ),
            );
        }
        let keep_alive = self.keep_alive.unwrap_or(DEFAULT_KEEP_ALIVE);
        if keep_alive < MIN_KEEP_ALIVE {
            p.push(
                at("keep_alive"),
                format!(
                    "{} is below the minimum {}",
                    fmt_dur(keep_alive),
                    fmt_dur(MIN_KEEP_ALIVE)
                ),
            );
        }
        let ack_timeout = self.ack_timeout.unwrap_or(DEFAULT_ACK_TIMEOUT);
        if ack_timeout.is_zero() {
            p.push(
                at("ack_timeout"),
                format!(
                    "must be above 0; the default is {}",
                    fmt_dur(DEFAULT_ACK_TIMEOUT)
                ),
            );
        }
        let batch_max_records = self.batch_max_records.unwrap_or(DEFAULT_BATCH_MAX_RECORDS);
        if !(1..=MAX_BATCH_MAX_RECORDS).contains(&batch_max_records) {
            p.push(
                at("batch_max_records"),
                format!(
                    "{batch_max_records} is outside 1..={MAX_BATCH_MAX_RECORDS}; the default is \
                     {DEFAULT_BATCH_MAX_RECORDS}"
                ),
            );
        }
        let max_reconnect_backoff = self
            .max_reconnect_backoff
            .unwrap_or(DEFAULT_MAX_RECONNECT_BACKOFF);
        if max_reconnect_backoff.is_zero() {
            p.push(
                at("max_reconnect_backoff"),
                "must be more than 0s; the default is \"5s\"",
            );
        }
        let resolved = crate::sinks::retry_bounds(self.retry_initial, self.retry_max)
            .map_err(|(field, m)| p.push(at(field), m))
            .ok()
            .map(|(retry_initial, retry_max)| ResolvedMqtt {
                name: self.name.clone(),
                host: host.to_owned(),
                port,
                tls,
                client_id: self.client_id.clone(),
                credentials,
                topic,
                summary_topic,
                keep_alive,
                ack_timeout,
                batch_max_records,
                retry_initial,
                retry_max,
                // Never below the first wait (Backoff caps at its max).
                max_reconnect_backoff: max_reconnect_backoff.max(retry_initial),
            });
        p.finish(path, resolved)
    }
}
