//! Sinks deliver what the spool holds to the outside world.
//!
//! Owns the sink implementations. A sink reads a batch from the spool, delivers it, and only
//! then advances its own cursor; it never deletes what the receiver has not accepted.
//!
//! This module also holds the small pieces the alert sinks ([`mqtt`], [`webhook`]) share:
//! exponential [`Backoff`], shutdown-aware sleeping and parsing of the alerts stream
//! ([`parse_alert_lines`]). Secrets are read by [`crate::secret`], as everywhere else. The
//! InfluxDB sink keeps its own private copy of the backoff (same rules) so its behaviour is
//! untouched.

pub mod influxdb;
pub mod mqtt;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::alert::Alert;
use crate::spool::{truncate_utf8, Batch, Spool, SpoolError, Stream, MAX_REASON_BYTES};

/// Exponential backoff between `initial` and `max` (doubling), as the InfluxDB sink uses.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Start at `initial`; never wait longer than `max`.
    #[must_use]
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt; doubles up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    /// Back to `initial` after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Sleep for `delay` unless shut down first; false when shut down.
pub async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
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
    fn backoff_doubles_up_to_the_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let ms: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 3000, 3000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
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
