//! Configuration of the webhook alert sink: the raw TOML shape ([`WebhookSinkConfig`]) and its
//! validated form ([`ResolvedWebhook`]).
//!
//! Owns the defaults, the per-format rate limits and secret resolution. A robot URL carries its
//! access key (`?key=` for WeCom, `?access_token=` for DingTalk), so the URL itself is a secret:
//! it is read from `url_env` or `url_file`, never inline, never printed (docs/ARCHITECTURE.md
//! §Conventions). It does not send anything (see [`super::sink`]).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::alert::{AlertKind, Language};
use crate::config::{Problem, Problems};
use crate::secret::{process_env, read_secret, EnvLookup, Secret};

/// Default sink name (the spool cursor is stored under it).
pub const DEFAULT_NAME: &str = "webhook";
/// Default whole-request timeout. Robots answer in well under a second; longer means the route
/// is down and backing off is better.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on the connect part of a request (as for the InfluxDB sink).
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// WeCom group robot limit: "每个机器人发送的消息不能超过20条/分钟" (WeCom developer docs, 群机器人
/// 配置说明).
pub const WECOM_MAX_PER_MINUTE: u32 = 20;
/// DingTalk custom robot limit: 20 messages per minute per robot; above it the robot is
/// throttled for 10 minutes (DingTalk open platform, 自定义机器人发送群消息).
pub const DINGTALK_MAX_PER_MINUTE: u32 = 20;
pub use crate::sinks::{DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX};

/// The body format, i.e. which kind of receiver this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The alert JSON as it is in the spool (the schema of [`crate::alert::Alert`]).
    Generic,
    /// WeCom group robot, `msgtype = markdown`.
    Wecom,
    /// DingTalk custom robot, `msgtype = markdown`, optionally signed.
    Dingtalk,
}

impl WebhookFormat {
    /// The robot's published rate limit; `None` for a generic receiver.
    #[must_use]
    pub const fn default_max_per_minute(self) -> Option<u32> {
        match self {
            Self::Generic => None,
            Self::Wecom => Some(WECOM_MAX_PER_MINUTE),
            Self::Dingtalk => Some(DINGTALK_MAX_PER_MINUTE),
        }
    }
}

/// `[[sinks]]` entry of type webhook, as written in the TOML.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Name of the sink; also its cursor name in the spool. Default [`DEFAULT_NAME`].
    #[serde(default = "default_name")]
    pub name: String,
    /// Body format.
    pub format: WebhookFormat,
    /// Environment variable holding the URL (it contains the robot's key).
    #[serde(default)]
    pub url_env: Option<String>,
    /// File holding the URL.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Environment variable holding the DingTalk signing secret (`SEC...`), if the robot uses
    /// 加签. Only for `format = "dingtalk"`.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the DingTalk signing secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Which alerts to send; default every kind (quality, device_fault, notice). A bureau robot usually takes `["quality", "notice"]`
    /// and the technicians' robot `["device_fault"]` (issue 4: a broken sensor must not page the
    /// bureau). Alerts of other kinds are passed over (acked without a POST).
    #[serde(default)]
    pub kinds: Option<Vec<AlertKind>>,
    /// Language of the robot message's labels (the alert's own message is already rendered).
    /// Default `zh`.
    #[serde(default)]
    pub language: Option<Language>,
    /// Messages per minute at most; default per format ([`WECOM_MAX_PER_MINUTE`],
    /// [`DINGTALK_MAX_PER_MINUTE`], unlimited for generic). 0 means unlimited.
    #[serde(default)]
    pub max_per_minute: Option<u32>,
    /// Whole-request timeout, e.g. `"10s"`. Default [`DEFAULT_TIMEOUT`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub timeout: Option<Duration>,
    /// First wait after a failed POST. Default [`DEFAULT_RETRY_INITIAL`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub retry_initial: Option<Duration>,
    /// Longest wait between retries. Default [`DEFAULT_RETRY_MAX`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub retry_max: Option<Duration>,
}

fn default_name() -> String {
    DEFAULT_NAME.to_owned()
}

/// The validated sink configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedWebhook {
    /// Sink name (spool cursor name, metric label, log field).
    pub name: String,
    /// Body format.
    pub format: WebhookFormat,
    /// The URL (secret: it holds the robot key).
    pub url: Secret,
    /// DingTalk signing secret.
    pub secret: Option<Secret>,
    /// Alert kinds sent.
    pub kinds: Vec<AlertKind>,
    /// Label language.
    pub language: Language,
    /// Messages per minute at most; `None` = unlimited.
    pub max_per_minute: Option<u32>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connect timeout: `min(timeout, MAX_CONNECT_TIMEOUT)`.
    pub connect_timeout: Duration,
    /// First retry wait.
    pub retry_initial: Duration,
    /// Retry wait ceiling.
    pub retry_max: Duration,
}

use crate::sinks::fmt_dur;

impl WebhookSinkConfig {
    /// Apply defaults, read the URL and secret, and check every value. `path` is where this
    /// entry sits in the config, e.g. `sinks[2]`.
    ///
    /// # Errors
    /// Every problem found, e.g. `sinks[2].url_env: environment variable ANJU_WECOM_URL is not
    /// set; export it or use url_file`.
    pub fn validate(&self, path: &str) -> Result<ResolvedWebhook, Vec<Problem>> {
        self.validate_with_env(path, &process_env)
    }

    pub(crate) fn validate_with_env(
        &self,
        path: &str,
        env: EnvLookup<'_>,
    ) -> Result<ResolvedWebhook, Vec<Problem>> {
        let mut p = Problems::default();
        let at = |field: &str| format!("{path}.{field}");
        if self.name.trim().is_empty() {
            p.push(
                at("name"),
                "must not be empty; it names the sink's cursor in the spool",
            );
        }
        let url = match read_secret(
            "url",
            self.url_env.as_deref(),
            self.url_file.as_deref(),
            env,
        ) {
            Err((field, m)) => {
                p.push(at(&field), m);
                None
            }
            Ok(None) => {
                p.push(
                    at("url_env"),
                    "the receiver's URL is required; set url_env (or url_file) to where it is \
                     kept (it holds the robot's key, so it is never written in the config)",
                );
                None
            }
            // Messages never echo the URL: it holds the key.
            Ok(Some((field, url))) => match Url::parse(url.expose()) {
                Err(e) => {
                    p.push(at(&field), format!("the value is not a URL ({e})"));
                    None
                }
                Ok(u) if !matches!(u.scheme(), "http" | "https") || u.host().is_none() => {
                    p.push(
                        at(&field),
                        "the value must be an http:// or https:// URL with a host",
                    );
                    None
                }
                Ok(_) => Some(url),
            },
        };
        let secret = match read_secret(
            "secret",
            self.secret_env.as_deref(),
            self.secret_file.as_deref(),
            env,
        ) {
            Err((field, m)) => {
                p.push(at(&field), m);
                None
            }
            Ok(Some((field, _))) if self.format != WebhookFormat::Dingtalk => {
                p.push(
                    at(&field),
                    "a signing secret is only used with format = \"dingtalk\"; remove it",
                );
                None
            }
            Ok(s) => s.map(|(_, s)| s),
        };
        let kinds = self.kinds.clone().unwrap_or_else(|| {
            vec![
                AlertKind::Quality,
                AlertKind::DeviceFault,
                AlertKind::Notice,
            ]
        });
        if kinds.is_empty() {
            p.push(
                at("kinds"),
                "an empty list sends nothing; list \"quality\", \"device_fault\" and/or \"notice\", or remove \
                 the sink",
            );
        }
        let max_per_minute = match self.max_per_minute {
            Some(0) => None,
            Some(n) => Some(n),
            None => self.format.default_max_per_minute(),
        };
        if let (Some(n), Some(limit)) = (max_per_minute, self.format.default_max_per_minute()) {
            if n > limit {
                p.push(
                    at("max_per_minute"),
                    format!(
                        "{n} is above the robot's own limit of {limit} per minute; the robot \
                         would throttle it (and DingTalk blocks it for 10 minutes)"
                    ),
                );
            }
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            p.push(
                at("timeout"),
                format!(
                    "must be above 0; the default is {}",
                    fmt_dur(DEFAULT_TIMEOUT)
                ),
            );
        }
        let retry = crate::sinks::retry_bounds(self.retry_initial, self.retry_max)
            .map_err(|(field, m)| p.push(at(field), m))
            .ok();
        let resolved = match (url, retry) {
            (Some(url), Some((retry_initial, retry_max))) => Some(ResolvedWebhook {
                name: self.name.clone(),
                format: self.format,
                url,
                secret,
                kinds,
                language: self.language.unwrap_or_default(),
                max_per_minute,
                timeout,
                connect_timeout: timeout.min(MAX_CONNECT_TIMEOUT),
                retry_initial,
                retry_max,
            }),
            _ => None,
        };
        p.finish(path, resolved)
    }
}
