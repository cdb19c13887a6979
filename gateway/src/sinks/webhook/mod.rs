//! The webhook alert sink: one HTTP POST per alert event of the spool's alerts stream, as
//! generic JSON or as the WeCom (企业微信) / DingTalk (钉钉) group-robot markdown messages that
//! bureau staff read on their phones.
//!
//! Owns its configuration ([`config`]), the message formats and DingTalk signing ([`format`]) and
//! the delivery task with its rate limit ([`sink`]). It does not own the alerts (the engine makes
//! them; the spool keeps them until the receiver accepted them).
//!
//! Use: validate a [`WebhookSinkConfig`] into a [`ResolvedWebhook`], open the spool with the
//! sink's name registered, build a [`WebhookSink`] and spawn [`WebhookSink::run`].

pub mod config;
pub mod format;
pub mod sink;

pub use config::{ResolvedWebhook, WebhookFormat, WebhookSinkConfig};
pub use format::{dingtalk_sign, render_body, robot_verdict};
pub use sink::{RateLimit, WebhookSink, WebhookSinkError};

#[cfg(test)]
mod tests;
