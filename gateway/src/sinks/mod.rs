//! Sinks deliver what the spool holds to the outside world.
//!
//! Owns the sink implementations. A sink reads a batch from the spool, delivers it, and only
//! then advances its own cursor; it never deletes what the receiver has not accepted.
//!
//! This module also holds the small pieces the sinks share: secrets read from the environment
//! or a file ([`Secret`], [`read_secret`]), the classification of a failed HTTP delivery
//! ([`classify_status`]), parsing of the alerts stream ([`parse_alert_lines`]) and the spool
//! calls of the alert sinks. Waiting between attempts is [`crate::retry`].

pub mod influxdb;
pub mod mqtt;
pub mod webhook;

use std::path::Path;
use std::sync::Arc;

use crate::alert::Alert;
use crate::spool::{truncate_utf8, Batch, Spool, SpoolError, Stream, MAX_REASON_BYTES};

/// A secret (password, robot URL holding a key, signing secret). `Debug` prints `<redacted>` and
/// there is no `Display`, so it cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret (tests and callers that already hold one).
    #[must_use]
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, only for the protocol field that needs it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How a variable is looked up in the environment (swapped in tests so they never touch the
/// process environment, which test threads share).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, std::env::VarError>;

/// Read a secret from the environment variable `env` or the file `file` (exactly one may be set;
/// surrounding whitespace is dropped). `None` when neither is set. The error is
/// `(field, message)`: the config field at fault (`<prefix>_env` / `<prefix>_file`) and the fix.
/// Messages never contain the secret.
///
/// # Errors
/// Both set, the variable unset or not UTF-8, the file unreadable, or the secret empty.
pub fn read_secret(
    prefix: &str,
    env: Option<&str>,
    file: Option<&Path>,
    lookup: EnvLookup<'_>,
) -> Result<Option<(String, Secret)>, (String, String)> {
    let env_field = format!("{prefix}_env");
    let file_field = format!("{prefix}_file");
    let (field, raw) = match (env, file) {
        (Some(_), Some(_)) => {
            return Err((
                env_field,
                format!("set either {prefix}_env or {prefix}_file, not both"),
            ))
        }
        (None, None) => return Ok(None),
        (Some(var), None) => {
            let value = lookup(var).map_err(|e| {
                let m = match e {
                    std::env::VarError::NotPresent => format!(
                        "environment variable {var} is not set; export it or use {file_field}"
                    ),
                    std::env::VarError::NotUnicode(_) => {
                        format!("environment variable {var} is not valid UTF-8")
                    }
                };
                (env_field.clone(), m)
            })?;
            (env_field, value)
        }
        (None, Some(path)) => {
            let value = std::fs::read_to_string(path).map_err(|e| {
                (
                    file_field.clone(),
                    format!(
                        "cannot read {}: {e}; check the path and that the gateway's user may read it",
                        path.display()
                    ),
                )
            })?;
            (file_field, value)
        }
    };
    let value = raw.trim();
    if value.is_empty() {
        return Err((field, "the secret is empty; put the value there".into()));
    }
    Ok(Some((field, Secret::new(value))))
}

/// Parse the alerts stream's body: one `serde_json` [`Alert`] per line. Blank lines are skipped;
/// a line that does not parse becomes `Err(description)` (bounded, for a dead-letter reason).
#[must_use]
pub fn parse_alert_lines(body: &[u8]) -> Vec<Result<Alert, String>> {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| {
            serde_json::from_slice::<Alert>(l).map_err(|e| {
                let text = String::from_utf8_lossy(l);
                format!(
                    "unparsable alert line ({e}): {}",
                    truncate_utf8(&text, MAX_REASON_BYTES / 4)
                )
            })
        })
        .collect()
}

/// What to do after a failed HTTP delivery (InfluxDB write, webhook post).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transient (network, timeout, 5xx, 408, 429): WARN, back off, resend the same batch.
    Retry,
    /// The receiver refuses the gateway rather than the data (401, 403, 404, or a status that
    /// is not an InfluxDB answer): ERROR, back off, resend the same batch.
    Misconfigured,
    /// The receiver refused this batch for good (other 4xx): dead letter, ERROR, go on.
    Reject,
}

/// Classify an HTTP status other than 204.
#[must_use]
pub const fn classify_status(status: u16) -> Verdict {
    match status {
        // RFC 9110 §15.5.9 Request Timeout, RFC 6585 §4 Too Many Requests: try again later.
        408 | 429 => Verdict::Retry,
        // Unauthorized, Forbidden (token), Not Found (bucket/org, webhook path, or not a v2
        // endpoint: InfluxDB 1.6 answers 404).
        401 | 403 | 404 => Verdict::Misconfigured,
        400..=499 => Verdict::Reject,
        500..=599 => Verdict::Retry,
        // 1xx/2xx other than 204/3xx: something that is not InfluxDB answered (a captive portal,
        // a proxy login page); the data was not written.
        _ => Verdict::Misconfigured,
    }
}

/// Why a spool call run on the blocking pool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolCallError {
    /// The spool reported an error.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The blocking task panicked or was cancelled.
    #[error("blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Read the next batch of the alerts stream for `sink` (every spool call fsyncs or reads disk,
/// so it runs on the blocking pool).
///
/// # Errors
/// A spool error.
pub async fn read_alerts(
    spool: &Arc<Spool>,
    sink: &str,
    max_records: u64,
) -> Result<Option<Batch>, SpoolCallError> {
    let (spool, sink) = (Arc::clone(spool), sink.to_owned());
    Ok(
        tokio::task::spawn_blocking(move || spool.read_batch(Stream::Alerts, &sink, max_records))
            .await??,
    )
}

/// Finish an alerts batch: ack it, or, with a `reason`, store it as a dead letter (which also
/// moves the cursor past it).
///
/// # Errors
/// A spool error (then the cursor did not move and the batch is read again).
pub async fn settle_alerts(
    spool: &Arc<Spool>,
    sink: &str,
    batch: &Batch,
    reason: Option<String>,
) -> Result<(), SpoolCallError> {
    let (spool, sink, batch) = (Arc::clone(spool), sink.to_owned(), batch.clone());
    Ok(tokio::task::spawn_blocking(move || match reason {
        None => spool.ack(Stream::Alerts, &sink, &batch),
        Some(r) => spool.dead_letter(Stream::Alerts, &sink, &batch, &r),
    })
    .await??)
}

/// Default first wait after a failed delivery, for every sink.
pub const DEFAULT_RETRY_INITIAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Default longest wait between retries (exponential backoff ceiling), for every sink.
pub const DEFAULT_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// A duration as written in the config (`"1m 30s"`), for error messages.
pub(crate) fn fmt_dur(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Resolve a sink's `retry_initial` / `retry_max` with their defaults and check them.
///
/// # Errors
/// The offending field name and a message saying how to fix it.
pub(crate) fn retry_bounds(
    initial: Option<std::time::Duration>,
    max: Option<std::time::Duration>,
) -> Result<(std::time::Duration, std::time::Duration), (&'static str, String)> {
    let initial = initial.unwrap_or(DEFAULT_RETRY_INITIAL);
    if initial.is_zero() {
        return Err((
            "retry_initial",
            format!(
                "must be above 0; the default is {}",
                fmt_dur(DEFAULT_RETRY_INITIAL)
            ),
        ));
    }
    let max = max.unwrap_or(DEFAULT_RETRY_MAX);
    if max < initial {
        return Err((
            "retry_max",
            format!(
                "{} is below retry_initial ({})",
                fmt_dur(max),
                fmt_dur(initial)
            ),
        ));
    }
    Ok((initial, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_env_or_file_and_never_print() {
        let env = |k: &str| {
            if k == "SET" {
                Ok(" s3cret \n".to_owned())
            } else {
                Err(std::env::VarError::NotPresent)
            }
        };
        let (field, s) = read_secret("password", Some("SET"), None, &env)
            .expect("ok")
            .expect("some");
        assert_eq!(field, "password_env");
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(read_secret("password", None, None, &env), Ok(None));
        assert_eq!(
            read_secret("url", Some("NOPE"), None, &env),
            Err((
                "url_env".to_owned(),
                "environment variable NOPE is not set; export it or use url_file".to_owned()
            ))
        );
        let both = read_secret("url", Some("SET"), Some(Path::new("/x")), &env);
        assert_eq!(
            both,
            Err((
                "url_env".to_owned(),
                "set either url_env or url_file, not both".to_owned()
            ))
        );
    }

    #[test]
    fn alert_lines_parse_and_bad_lines_are_named() {
        let parsed = parse_alert_lines(b"\nnot json\n");
        assert_eq!(parsed.len(), 1);
        let err = parsed[0].as_ref().expect_err("bad line");
        assert!(err.starts_with("unparsable alert line ("), "{err}");
        assert!(err.ends_with("): not json"), "{err}");
    }
}
