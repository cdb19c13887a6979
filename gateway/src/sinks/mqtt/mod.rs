//! The MQTT upstream alert sink: publishes every alert event of the spool's alerts stream to the
//! upstream broker with QoS 1 on a per-site topic, and keeps a retained summary of the active
//! alerts per site.
//!
//! Owns its configuration ([`config`]) and the delivery task ([`sink`]), including the summary
//! of active alerts ([`sink::ActiveAlerts`]). It does not own the alerts (the engine makes them,
//! the spool keeps them until the broker acknowledged every message of a batch) nor the MQTT
//! *source* (`crate::sources::mqtt`, which subscribes to site sensor nodes).
//!
//! Use: validate an [`MqttSinkConfig`] into a [`ResolvedMqtt`], open the spool with the sink's
//! name registered, build an [`MqttSink`] and spawn [`MqttSink::run`].

pub mod config;
pub mod sink;

pub use config::{MqttSinkConfig, ResolvedMqtt};
pub use sink::{render_topic, ActiveAlerts, MqttSink, MqttSinkError};

#[cfg(test)]
pub(crate) mod tests;
