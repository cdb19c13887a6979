//! The MQTT source: subscribe to a broker (external, or the embedded one in [`crate::broker`]),
//! decode sensor payloads, and send readings to the engine.
//!
//! - [`config`]: `[[mqtt]]` config, validated into [`MqttSettings`] (errors name the path).
//! - [`topic`]: topic patterns with `{placeholders}` and name templates.
//! - [`payload`]: the `json` and `plain` formats, [`PayloadError`], the decoded [`payload::Sample`].
//! - [`cigem`]: the CIGEM universal geo-hazard device format on `$dp` (docs/DOMAIN.md §CIGEM).
//! - [`document`]: the borrowed JSON tree both JSON formats parse into.
//! - [`timestamp`]: RFC 3339 and epoch timestamps.
//! - [`drain`]: discarding messages above the packet limit from a persistent session.
//! - [`subscriber`]: [`MqttSource`], the connection loop, series cache and batching.
//!
//! It does not publish anything (alerts going upstream are a sink's job) and does not check
//! timestamps against the clock (the engine does).

pub mod cigem;
pub mod config;
pub mod document;
pub mod drain;
pub mod payload;
pub mod subscriber;
pub mod timestamp;
pub mod topic;

pub use config::{MqttSettings, MqttSourceConfig, Qos, Subscription, SubscriptionConfig};
pub use payload::{JsonMapping, PayloadError, PayloadFormat};
pub use subscriber::MqttSource;
pub use timestamp::TimeFormat;

#[cfg(test)]
mod live_tests;
