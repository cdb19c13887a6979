//! The webhook sink task: reads batches of the alerts stream and POSTs every alert event, one
//! request per event, in order; the spool cursor moves once every event of the batch was
//! accepted or refused for good.
//!
//! Owns the HTTP client and its timeouts, the per-robot [`RateLimit`], failure classification,
//! backoff and its counters. It does not own message wording (see [`super::format`]).
//!
//! Failure rules (docs/ARCHITECTURE.md §Sinks), with the InfluxDB sink's [`Verdict`]s and
//! [`classify_status`]:
//! - 2xx and, for robots, `errcode` 0 → delivered;
//! - [`Verdict::Retry`]: connect/timeout/I/O errors, 5xx, 408, 429, a robot's rate-limit
//!   `errcode` → WARN, back off, POST the same event again;
//! - [`Verdict::Misconfigured`]: 401, 403, 404, 3xx, or a 2xx that is not a robot reply → ERROR,
//!   back off, POST again (every event would fail alike until the configuration is fixed);
//! - [`Verdict::Reject`]: any other 4xx, or a robot `errcode` ≠ 0 → the event is refused for
//!   good. The spool's dead letters are per batch, so the batch is moved there with a reason
//!   naming each refused event (`id/seq` and the answer); the other events of the batch were
//!   delivered.
//!
//! At least once: an event whose answer was lost (timeout after the receiver processed it), or
//! whose batch was not settled before a restart, is POSTed again; receivers de-duplicate on the
//! alert's `(id, seq)`.
//!
//! The URL holds the robot key: it never appears in a log line, an error or a dead letter
//! (reqwest errors are stripped of it with `without_url`).

use crate::metrics::Counter;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::config::{ResolvedWebhook, WebhookFormat};
use super::format::{dingtalk_signed_url, render_body, robot_verdict};
use crate::alert::Alert;
use crate::metrics::Metrics;
use crate::retry::{sleep_or_shutdown, Backoff};
use crate::sinks::{classify_status, Verdict};
use crate::sinks::{BatchReader, Next};
use crate::spool::{truncate_utf8, Batch, Spool, Stream, MAX_REASON_BYTES};

/// Counter: alert events the receiver accepted.
pub const DELIVERED_RECORDS: Counter = Counter::WebhookAlertsDelivered;
/// Counter: failed attempts that will be retried.
pub const RETRIES: Counter = Counter::WebhookAlertsRetries;
/// Counter: alert events refused for good (their batch is in the dead letters).
pub const REJECTED_RECORDS: Counter = Counter::WebhookAlertsRejected;
/// Counter: alert events of a kind this sink does not send.
pub const SKIPPED_RECORDS: Counter = Counter::WebhookAlertsSkipped;

/// Alert events read from the spool at once. One POST each; a small batch keeps the events that
/// are re-sent after a restart few.
pub const BATCH_MAX_RECORDS: u64 = 20;
/// The rate-limit window: the robots state their limits per minute.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Longest response body kept for a log line or dead letter.
const MAX_ANSWER_BYTES: usize = MAX_REASON_BYTES / 4;

/// At most `max` sends in any [`RATE_WINDOW`] (a sliding window of send times). Every attempt
/// counts, retries included: the robot counts requests, not successes.
#[derive(Debug, Clone)]
pub struct RateLimit {
    max: usize,
    sent: VecDeque<Instant>,
}

impl RateLimit {
    /// A limit of `max` sends per window (at least 1).
    #[must_use]
    pub fn new(max: u32) -> Self {
        let max = usize::try_from(max.max(1)).unwrap_or(usize::MAX);
        Self {
            max,
            sent: VecDeque::with_capacity(max.min(1024)),
        }
    }

    /// How long to wait at `now` before the next send is allowed (zero when it is).
    #[must_use]
    pub fn wait(&mut self, now: Instant) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            self.sent.pop_front();
        }
        if self.sent.len() < self.max {
            return Duration::ZERO;
        }
        self.sent.front().map_or(Duration::ZERO, |t| {
            (*t + RATE_WINDOW).saturating_duration_since(now)
        })
    }

    /// Record a send at `now`.
    pub fn record(&mut self, now: Instant) {
        self.sent.push_back(now);
    }
}

/// Why the sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WebhookSinkError {
    /// The sink's name is not a cursor in the spool.
    #[error("sink {sink}: not registered in the spool {}; pass its name to Spool::open", path.display())]
    NotRegistered {
        /// The sink name.
        sink: String,
        /// The spool file.
        path: std::path::PathBuf,
    },
    /// reqwest could not build a client (TLS backend initialisation).
    #[error("sink {sink}: cannot build the HTTP client: {source}")]
    Client {
        /// The sink name.
        sink: String,
        /// What reqwest reported.
        source: reqwest::Error,
    },
}

/// How one event ended.
enum Outcome {
    Delivered,
    Rejected(String),
    Shutdown,
}

/// Wall-clock milliseconds, for DingTalk's signature timestamp.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A transport error's text with its causes, never with the URL.
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        let cause = s.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    truncate_utf8(&text, MAX_ANSWER_BYTES).to_owned()
}

/// The webhook sink. Build with [`WebhookSink::new`], then spawn [`WebhookSink::run`].
#[derive(Debug)]
pub struct WebhookSink {
    cfg: ResolvedWebhook,
    client: reqwest::Client,
    reader: BatchReader,
    metrics: Arc<Metrics>,
}

impl WebhookSink {
    /// Build the HTTP client with its timeouts.
    ///
    /// # Errors
    /// The sink is not registered in `spool`, or the client cannot be built.
    pub fn new(
        cfg: ResolvedWebhook,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, WebhookSinkError> {
        if !spool.is_registered(&cfg.name) {
            return Err(WebhookSinkError::NotRegistered {
                sink: cfg.name,
                path: spool.path().to_path_buf(),
            });
        }
        let client = reqwest::ClientBuilder::new()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            // A robot never redirects; following one would re-send the body elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| WebhookSinkError::Client {
                sink: cfg.name.clone(),
                source: source.without_url(),
            })?;
        // Each alert is posted as soon as it is committed: no batching delay.
        let reader = BatchReader::new(
            spool,
            Stream::Alerts,
            &cfg.name,
            BATCH_MAX_RECORDS,
            Duration::ZERO,
        );
        Ok(Self {
            cfg,
            client,
            reader,
            metrics,
        })
    }

    /// The sink's name (spool cursor, metric label).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Deliver alerts until `shutdown` is cancelled. An unsettled batch stays in the spool and is
    /// sent again after restart.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(sink = %self.cfg.name, format = ?self.cfg.format, max_per_minute = ?self.cfg.max_per_minute,
              "webhook sink started");
        let mut backoff = Backoff::new(self.cfg.retry_initial, self.cfg.retry_max);
        let mut limit = self.cfg.max_per_minute.map(RateLimit::new);
        while let Next::Batch(batch) = self
            .reader
            .next(0, &shutdown, &mut backoff, std::future::pending::<()>())
            .await
        {
            if !self
                .deliver_batch(&batch, &shutdown, &mut backoff, &mut limit)
                .await
            {
                break;
            }
        }
        info!(sink = %self.cfg.name, "webhook sink stopped");
    }

    /// POST every event of `batch`, then ack it (or dead-letter it, naming the refused events).
    /// False when shut down.
    async fn deliver_batch(
        &self,
        batch: &Batch,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
        limit: &mut Option<RateLimit>,
    ) -> bool {
        let labels = [("sink", self.cfg.name.as_str())];
        let mut refused: Vec<String> = Vec::new();
        let mut delivered = 0u64;
        for line in batch
            .body
            .split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        {
            let alert: Alert = match serde_json::from_slice(line) {
                Ok(a) => a,
                Err(e) => {
                    refused.push(format!(
                        "unparsable alert line ({e}): {}",
                        truncate_utf8(&String::from_utf8_lossy(line), 256)
                    ));
                    continue;
                }
            };
            if !self.cfg.kinds.contains(&alert.kind) {
                self.metrics.incr(SKIPPED_RECORDS, &labels);
                continue;
            }
            match self
                .deliver_one(&alert, line, shutdown, backoff, limit)
                .await
            {
                Outcome::Delivered => delivered += 1,
                Outcome::Rejected(why) => {
                    error!(sink = %self.cfg.name, alert = %alert.id, seq = alert.seq, answer = %why,
                           "receiver refused the alert; its batch goes to the spool's dead letters");
                    refused.push(format!("{}/{}: {why}", alert.id, alert.seq));
                }
                Outcome::Shutdown => return false,
            }
        }
        self.metrics.add(DELIVERED_RECORDS, &labels, delivered);
        let reason = (!refused.is_empty()).then(|| {
            let text = format!(
                "{} event(s) refused, {delivered} delivered: {}",
                refused.len(),
                refused.join("; ")
            );
            truncate_utf8(&text, MAX_REASON_BYTES).to_owned()
        });
        let rejected = refused.len() as u64;
        if self
            .reader
            .settle_or_wait(batch, reason, shutdown, backoff)
            .await
        {
            self.metrics.add(REJECTED_RECORDS, &labels, rejected);
        }
        !shutdown.is_cancelled()
    }

    /// POST one event until it is accepted or refused for good.
    async fn deliver_one(
        &self,
        alert: &Alert,
        line: &[u8],
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
        limit: &mut Option<RateLimit>,
    ) -> Outcome {
        let labels = [("sink", self.cfg.name.as_str())];
        let body = match render_body(self.cfg.format, alert, line, self.cfg.language) {
            Ok(b) => b,
            Err(e) => return Outcome::Rejected(format!("cannot render the body: {e}")),
        };
        let mut attempt: u32 = 0;
        loop {
            if let Some(l) = limit.as_mut() {
                let wait = l.wait(Instant::now());
                if !wait.is_zero() {
                    info!(sink = %self.cfg.name, wait = ?wait, "rate limit reached; waiting");
                    if !sleep_or_shutdown(wait, shutdown).await {
                        return Outcome::Shutdown;
                    }
                }
                l.record(Instant::now());
            }
            attempt += 1;
            let result = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Outcome::Shutdown,
                r = self.post(body.clone()) => r,
            };
            let (verdict, text) = match result {
                Ok(()) => {
                    if attempt > 1 {
                        info!(sink = %self.cfg.name, alert = %alert.id, attempt, "delivered after retrying");
                    }
                    backoff.reset();
                    return Outcome::Delivered;
                }
                Err(e) => e,
            };
            if verdict == Verdict::Reject {
                return Outcome::Rejected(text);
            }
            let delay = backoff.next_delay();
            self.metrics.incr(RETRIES, &labels);
            if verdict == Verdict::Retry {
                warn!(sink = %self.cfg.name, alert = %alert.id, attempt, answer = %text, retry_in = ?delay,
                      "POST failed; will send the same alert again");
            } else {
                error!(sink = %self.cfg.name, alert = %alert.id, attempt, answer = %text, retry_in = ?delay,
                       "receiver refuses the gateway (check the URL and signing secret); will send again");
            }
            if !sleep_or_shutdown(delay, shutdown).await {
                return Outcome::Shutdown;
            }
        }
    }

    /// One POST; `Err((verdict, description))` unless accepted.
    async fn post(&self, body: Vec<u8>) -> Result<(), (Verdict, String)> {
        let url = match (&self.cfg.secret, self.cfg.format) {
            (Some(secret), WebhookFormat::Dingtalk) => {
                dingtalk_signed_url(self.cfg.url.expose(), secret.expose(), now_ms())
            }
            _ => self.cfg.url.expose().to_owned(),
        };
        let response = self
            .client
            .post(url)
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| (Verdict::Retry, describe(e)))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| (Verdict::Retry, describe(e)))?;
        let text = truncate_utf8(&text, MAX_ANSWER_BYTES);
        if (200..300).contains(&status) {
            robot_verdict(self.cfg.format, text)
        } else {
            Err((classify_status(status), format!("HTTP {status}: {text}")))
        }
    }
}
