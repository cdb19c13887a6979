//! The InfluxDB v2 sink task: reads batches of points from the spool, writes them with
//! `POST /api/v2/write` (influxdb2's `write_line_protocol`, precision ns), and only then moves
//! its cursor.
//!
//! Owns batching (size and age), gzip, the HTTP client with its timeouts, failure
//! classification, backoff, and its counters. It does not own the data (the spool does) or the
//! line format (see [`super::line`]).
//!
//! Failure rules (ARCHITECTURE.md, "Sinks"; crates.md, "influxdb2"):
//! - success is exactly `204 No Content` (influxdb2 turns anything else into
//!   `RequestError::Http`) → ack;
//! - [`Verdict::Retry`]: transport errors (connect, timeout, I/O), 5xx, 408, 429 → WARN, back off
//!   exponentially from `retry_initial` to `retry_max`, resend the *same* batch;
//! - [`Verdict::Misconfigured`]: 401, 403, 404, or a status that is neither 4xx nor 5xx → the
//!   receiver refuses *us*, not this data, so every batch would be refused alike: ERROR, back
//!   off and resend, so nothing is moved aside until the configuration is fixed;
//! - [`Verdict::Reject`]: any other 4xx (400 unparsable line, 413 too large, 422 outside
//!   retention, ...) → the batch goes to the spool's dead letters with the response text, ERROR,
//!   counted, and the sink goes on.
//!
//! A write abandoned at shutdown, or whose ack failed, is sent again later. InfluxDB keeps one
//! value per series, field and timestamp, so such a repeat overwrites a point with itself.

use std::sync::Arc;
use std::time::Duration;

use influxdb2::RequestError;
use reqwest011::header::{HeaderMap, HeaderValue, CONTENT_ENCODING};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::config::ResolvedInflux;
use crate::metrics::Metrics;
use crate::spool::{truncate_utf8, Batch, Spool, SpoolError, Stream, MAX_REASON_BYTES};

/// Counter: records the receiver confirmed (204).
pub const WRITTEN_RECORDS: &str = "influx_written_records_total";
/// Counter: write requests the receiver confirmed.
pub const WRITE_BATCHES: &str = "influx_write_batches_total";
/// Counter: failed attempts that will be retried.
pub const WRITE_RETRIES: &str = "influx_write_retries_total";
/// Counter: records the receiver refused for good (moved to dead letters).
pub const REJECTED_RECORDS: &str = "influx_rejected_records_total";

/// zlib level for request bodies. Line protocol is highly repetitive (same series prefixes), so
/// the default level already shrinks it ~10×; higher levels cost ARM CPU for little more.
pub const GZIP_LEVEL: u32 = 6;

/// What to do after a failed write.
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
        // Unauthorized, Forbidden (token), Not Found (bucket/org, or not a v2 endpoint: InfluxDB
        // 1.6 answers 404, crates.md).
        401 | 403 | 404 => Verdict::Misconfigured,
        400..=499 => Verdict::Reject,
        500..=599 => Verdict::Retry,
        // 1xx/2xx other than 204/3xx: something that is not InfluxDB answered (a captive portal,
        // a proxy login page); the data was not written.
        _ => Verdict::Misconfigured,
    }
}

/// Classify a failed `write_line_protocol`.
#[must_use]
pub fn classify(err: &RequestError) -> Verdict {
    match err {
        RequestError::Http { status, .. } => classify_status(status.as_u16()),
        // ReqwestProcessing: connect refused, timeout, reset, TLS. The other variants are not
        // produced by a line-protocol write; retrying is the safe default.
        _ => Verdict::Retry,
    }
}

/// The HTTP status (if any) and a bounded description of a failed write, for logs and dead
/// letters. Transport errors include their source chain ("connection refused" lives there).
fn describe(err: &RequestError) -> (Option<u16>, String) {
    match err {
        RequestError::Http { status, text } => (
            Some(status.as_u16()),
            truncate_utf8(text, MAX_REASON_BYTES).to_owned(),
        ),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                // reqwest and hyper already fold their sources into their own messages; only
                // add a cause that is not in the text yet, so a log line says it once.
                let cause = s.to_string();
                if !text.contains(&cause) {
                    text.push_str(": ");
                    text.push_str(&cause);
                }
                source = s.source();
            }
            (None, truncate_utf8(&text, MAX_REASON_BYTES).to_owned())
        }
    }
}

/// Gzip `body` (RFC 1952) for a `Content-Encoding: gzip` request.
///
/// # Errors
/// Only if writing to the in-memory buffer fails, which it does not in practice.
pub fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8 + 64),
        flate2::Compression::new(GZIP_LEVEL),
    );
    enc.write_all(body)?;
    enc.finish()
}

/// How long a partial batch whose oldest chunk was appended at `oldest_ns` may still wait at
/// `now_ns`. A wall clock that stepped backwards counts as age 0, so the wait never exceeds
/// `max_age`.
#[must_use]
pub fn remaining_wait(oldest_ns: i64, now_ns: i64, max_age: Duration) -> Duration {
    let age_ns = u64::try_from(now_ns.saturating_sub(oldest_ns)).unwrap_or(0);
    max_age.saturating_sub(Duration::from_nanos(age_ns))
}

/// Exponential backoff between `initial` and `max`.
#[derive(Debug, Clone)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt; doubles up to `max`.
    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Why the sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InfluxSinkError {
    /// The sink's name is not a cursor in the spool.
    #[error("sink {sink}: not registered in the spool {}; pass its name to Spool::open", path.display())]
    NotRegistered {
        /// The sink name.
        sink: String,
        /// The spool file.
        path: std::path::PathBuf,
    },
    /// The token cannot be put in an `Authorization` header.
    #[error("sink {sink}: the token contains characters not allowed in an HTTP header")]
    BadToken {
        /// The sink name.
        sink: String,
    },
    /// reqwest could not build a client (TLS backend initialisation).
    #[error("sink {sink}: cannot build the HTTP client: {source}")]
    Client {
        /// The sink name.
        sink: String,
        /// What influxdb2/reqwest reported.
        source: influxdb2::BuildError,
    },
}

/// A spool call run on the blocking pool failed.
#[derive(Debug, thiserror::Error)]
enum BlockingError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("gzip failed: {0}")]
    Gzip(#[from] std::io::Error),
}

/// Run a blocking spool call (every commit fsyncs) off the async workers.
async fn blocking<T: Send + 'static, E: Into<BlockingError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, BlockingError> {
    tokio::task::spawn_blocking(f).await?.map_err(Into::into)
}

/// Sleep for `delay` unless shut down first; false when shut down.
async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// Wall-clock time in UTC nanoseconds, to compare with [`Batch::oldest_append_ns`].
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The InfluxDB v2 sink. Build with [`InfluxSink::new`], then spawn [`InfluxSink::run`].
#[derive(Debug)]
pub struct InfluxSink {
    cfg: ResolvedInflux,
    client: influxdb2::Client,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
}

impl InfluxSink {
    /// Build the HTTP client (with timeouts, and `Content-Encoding: gzip` when enabled).
    ///
    /// # Errors
    /// The sink is not registered in `spool`, the token is not a valid header value, or the
    /// client cannot be built.
    pub fn new(
        cfg: ResolvedInflux,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, InfluxSinkError> {
        if !spool.is_registered(&cfg.name) {
            return Err(InfluxSinkError::NotRegistered {
                sink: cfg.name,
                path: spool.path().to_path_buf(),
            });
        }
        // influxdb2 sets this header per request; an invalid value would fail every request as
        // a transport error and be retried forever, so check it once here.
        if HeaderValue::from_str(&format!("Token {}", cfg.token.expose())).is_err() {
            return Err(InfluxSinkError::BadToken { sink: cfg.name });
        }
        let mut headers = HeaderMap::new();
        if cfg.gzip {
            // influxdb2's own gzip option does not cover write_line_protocol (crates.md), so the
            // header is set here and the body is compressed by `gzip`.
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let http = reqwest011::ClientBuilder::new()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .default_headers(headers);
        // `with_builder` panics on an unparsable URL; `cfg.url` is an already parsed `Url`, and
        // its serialization always parses again.
        let client = influxdb2::ClientBuilder::with_builder(
            http,
            cfg.url.as_str(),
            cfg.org.as_str(),
            cfg.token.expose(),
        )
        .build()
        .map_err(|source| InfluxSinkError::Client {
            sink: cfg.name.clone(),
            source,
        })?;
        Ok(Self {
            cfg,
            client,
            spool,
            metrics,
        })
    }

    /// The sink's name (spool cursor, metric label).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Deliver points until `shutdown` is cancelled. On shutdown an in-flight request is
    /// abandoned (its batch stays in the spool and is sent again after restart) and this
    /// returns promptly.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(sink = %self.cfg.name, url = %self.cfg.url, org = %self.cfg.org, bucket = %self.cfg.bucket,
              gzip = self.cfg.gzip, "influx sink started");
        let mut backoff = Backoff::new(self.cfg.retry_initial, self.cfg.retry_max);
        while let Some(batch) = self.next_batch(&shutdown, &mut backoff).await {
            if !self.deliver(&batch, &shutdown, &mut backoff).await {
                break;
            }
        }
        info!(sink = %self.cfg.name, "influx sink stopped");
    }

    /// Wait for a batch worth sending: full (`batch_max_records`), or its oldest data
    /// `batch_max_age` old. `None` on shutdown.
    async fn next_batch(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Option<Batch> {
        // Fixed at the first sight of a partial batch; re-reads keep the same oldest chunk.
        let mut deadline: Option<Instant> = None;
        let max_records = u64::from(self.cfg.batch_max_records);
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            // Registered before reading, so an append between the read and the wait wakes us.
            let notified = self.spool.appended().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let spool = Arc::clone(&self.spool);
            let name = self.cfg.name.clone();
            match blocking(move || spool.read_batch(Stream::Points, &name, max_records)).await {
                Err(e) => {
                    let delay = backoff.next_delay();
                    error!(sink = %self.cfg.name, error = %e, retry_in = ?delay, "cannot read from the spool");
                    if !sleep_or_shutdown(delay, shutdown).await {
                        return None;
                    }
                }
                Ok(None) => {
                    deadline = None;
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return None,
                        () = &mut notified => {}
                    }
                }
                Ok(Some(batch)) => {
                    if batch.records >= max_records {
                        return Some(batch);
                    }
                    let until = *deadline.get_or_insert_with(|| {
                        Instant::now()
                            + remaining_wait(
                                batch.oldest_append_ns,
                                now_ns(),
                                self.cfg.batch_max_age,
                            )
                    });
                    if Instant::now() >= until {
                        return Some(batch);
                    }
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return None,
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(until) => return Some(batch),
                    }
                }
            }
        }
    }

    /// Send `batch` until it is confirmed or rejected. False when shut down.
    async fn deliver(
        &self,
        batch: &Batch,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> bool {
        let name = self.cfg.name.as_str();
        let labels = [("sink", name)];
        let wire = if self.cfg.gzip {
            let body = batch.body.clone();
            match blocking(move || gzip(&body)).await {
                Ok(w) => w,
                Err(e) => {
                    error!(sink = %name, error = %e, "cannot compress a batch");
                    return sleep_or_shutdown(backoff.next_delay(), shutdown).await;
                }
            }
        } else {
            batch.body.clone()
        };

        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let result = tokio::select! {
                biased;
                // Abandoned, not acked: the batch is sent again after restart.
                () = shutdown.cancelled() => return false,
                r = self.client.write_line_protocol(&self.cfg.org, &self.cfg.bucket, wire.clone()) => r,
            };
            let err = match result {
                Ok(()) => {
                    if attempt > 1 {
                        info!(sink = %name, attempt, records = batch.records, "write succeeded again");
                    }
                    backoff.reset();
                    self.metrics.add(WRITTEN_RECORDS, &labels, batch.records);
                    self.metrics.incr(WRITE_BATCHES, &labels);
                    let (spool, sink, b) =
                        (Arc::clone(&self.spool), name.to_owned(), batch.clone());
                    let done = blocking(move || spool.ack(Stream::Points, &sink, &b)).await;
                    return self.settle(done, shutdown, backoff).await;
                }
                Err(e) => e,
            };
            let (status, text) = describe(&err);
            match classify(&err) {
                Verdict::Reject => {
                    error!(sink = %name, status, response = %text, records = batch.records,
                           first_seq = batch.first_seq, last_seq = batch.last_seq,
                           "receiver rejected the batch; it is kept in the spool's dead letters");
                    let reason = match status {
                        Some(s) => format!("HTTP {s}: {text}"),
                        None => text,
                    };
                    let (spool, sink, b) =
                        (Arc::clone(&self.spool), name.to_owned(), batch.clone());
                    let done =
                        blocking(move || spool.dead_letter(Stream::Points, &sink, &b, &reason))
                            .await;
                    // Counted once stored: a failed commit means the batch is sent again.
                    if done.is_ok() {
                        self.metrics.add(REJECTED_RECORDS, &labels, batch.records);
                    }
                    return self.settle(done, shutdown, backoff).await;
                }
                verdict => {
                    let delay = backoff.next_delay();
                    self.metrics.incr(WRITE_RETRIES, &labels);
                    if verdict == Verdict::Retry {
                        warn!(sink = %name, status, response = %text, records = batch.records, attempt,
                              retry_in = ?delay, "write failed; will resend the same batch");
                    } else {
                        error!(sink = %name, status, response = %text, records = batch.records, attempt,
                               retry_in = ?delay,
                               "receiver refuses the gateway (check url, org, bucket and token); will resend");
                    }
                    if !sleep_or_shutdown(delay, shutdown).await {
                        return false;
                    }
                }
            }
        }
    }

    /// After an ack or dead letter: on a spool error, log and back off; the batch stays at the
    /// cursor and is sent again (a harmless overwrite). False when shut down.
    async fn settle(
        &self,
        done: Result<(), BlockingError>,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> bool {
        match done {
            Ok(()) => true,
            Err(e) => {
                let delay = backoff.next_delay();
                error!(sink = %self.cfg.name, error = %e, retry_in = ?delay,
                       "cannot advance the spool cursor; the batch will be sent again");
                sleep_or_shutdown(delay, shutdown).await
            }
        }
    }
}

#[cfg(test)]
mod tests;
