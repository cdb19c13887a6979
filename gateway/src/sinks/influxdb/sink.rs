//! The InfluxDB v2 sink task: reads batches of points from the spool, writes them with
//! `POST /api/v2/write?bucket=&org=&precision=ns` (InfluxDB v2 API, the request influxdb2's
//! `write_line_protocol` made, written here directly: [`write`]), and only then moves its cursor.
//!
//! Owns batching (size and age), gzip, the HTTP client with its timeouts, the write pipeline,
//! failure classification, backoff, and its counters. It does not own the data (the spool does)
//! or the line format (see [`super::line`]).
//!
//! # Pipeline
//! Reading a batch from the spool and compressing it, waiting for the receiver, and committing
//! the ack (an fsync) are three different waits; done strictly one after another they left both
//! the CPU and the receiver idle most of the time. So [`InfluxSink::run`] overlaps them:
//! - while writes are on the wire, the next batch is read (from just after the last one in
//!   flight, [`Spool::read_batch_from`]) and compressed on the blocking pool;
//! - a prepared batch is sent at once, each write in its own task, with at most
//!   [`MAX_IN_FLIGHT`] batches in flight or being prepared: memory stays bounded at that many
//!   batches (2 × 5000 lines ≈ 1.2 MB plain, a tenth of it once compressed);
//! - answers are taken **in send order**: only the oldest write is ever settled, so the cursor
//!   moves past batches the receiver accepted, one after another, and never past one it has not
//!   accepted. A later batch answered first waits its turn.
//!
//! Failure rules (docs/ARCHITECTURE.md §Sinks, §Crate pitfalls), applied to the oldest
//! write:
//! - success is exactly `204 No Content` (anything else is [`WriteError::Http`]) → ack;
//! - [`Verdict::Retry`]: transport errors (connect, timeout, I/O), 5xx, 408, 429 → WARN, back off
//!   exponentially from `retry_initial` to `retry_max`, resend the *same* batch; later writes
//!   stay in flight and are acked after it, in order;
//! - [`Verdict::Misconfigured`]: 401, 403, 404, or a status that is neither 4xx nor 5xx → the
//!   receiver refuses *us*, not this data, so every batch would be refused alike: ERROR, back
//!   off and resend, so nothing is moved aside until the configuration is fixed;
//! - [`Verdict::Reject`]: any other 4xx (400 unparsable line, 413 too large, 422 outside
//!   retention, ...) → the batch goes to the spool's dead letters with the response text, ERROR,
//!   counted, and the sink goes on.
//!
//! Delivery is at least once. Writes abandoned at shutdown (all those in flight: none of them
//! is acked), a batch whose ack failed, and the later batches in flight when that happens (the
//! pipeline restarts from the cursor) are sent again. InfluxDB keeps one value per series,
//! field and timestamp, so such a repeat overwrites a point with itself. A batch is never
//! skipped.

use crate::metrics::Counter;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING};
use reqwest::{StatusCode, Url};
use tokio_util::bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::config::ResolvedInflux;
use crate::metrics::Metrics;
use crate::retry::{sleep_or_shutdown, Backoff};
use crate::sinks::{classify_status, BatchReader, Next, Verdict};
use crate::spool::{truncate_utf8, Batch, Spool, SpoolError, Stream, MAX_REASON_BYTES};

/// Counter: records the receiver confirmed (204).
pub const WRITTEN_RECORDS: Counter = Counter::InfluxWrittenRecords;
/// Counter: write requests the receiver confirmed.
pub const WRITE_BATCHES: Counter = Counter::InfluxWriteBatches;
/// Counter: failed attempts that will be retried.
pub const WRITE_RETRIES: Counter = Counter::InfluxWriteRetries;
/// Counter: records the receiver refused for good (moved to dead letters).
pub const REJECTED_RECORDS: Counter = Counter::InfluxRejectedRecords;

/// zlib level for request bodies.
///
/// Measured on 5000 lines of the ingest benchmark's shape (`strain,device=bench,gateway=bench-gw,
/// point=s0123,site=bench,unit=ue value=42.123,quality=0i <ns>`, 2000 sensors, 558,930 B),
/// flate2 1.1.11 with the zlib-rs backend, x86_64, best of 7 runs of 10:
///
/// | level | gzip bytes | ratio | CPU per line |
/// |---|---|---|---|
/// | 1 | 81,918 | 6.8× | 0.18 µs |
/// | **2** | **55,820** | **10.0×** | **0.30 µs** |
/// | 6 (zlib default) | 51,785 | 10.8× | 0.65 µs |
/// | 9 | 50,857 | 11.0× | 1.37 µs |
///
/// Line protocol is highly repetitive (the same series prefixes), so level 2 already gets
/// within 8 % of level 6's size at less than half its CPU; level 1 (zlib-rs's "quick"
/// strategy) saves another 0.1 µs but sends 47 % more bytes, which a cellular uplink pays for.
/// (With flate2's default miniz_oxide backend the same body costs 0.4–0.6 µs/line at levels
/// 1–2 and 1.3 µs at level 6 for 9.0×, 10.6× and 11.0×; hence zlib-rs.)
pub const GZIP_LEVEL: u32 = 2;

/// Most batches the sink holds at once: written and awaiting an answer, or being read and
/// compressed. Two lets the next batch be prepared (and sent) while the previous one is on the
/// wire, which is where the sequential sink lost its time; more would only add memory (one
/// batch of 5000 lines is ≈ 560 kB before gzip) and load on a receiver that is already busy.
pub const MAX_IN_FLIGHT: usize = 2;

/// While backing off after the store could not be reached at all (connect refused, timeout), its
/// `/health` endpoint is asked this often; as soon as it answers 2xx the batch is sent again, so
/// a store back after a long outage is used within about a second instead of after a backoff
/// that had grown to `retry_max` (a 5-minute outage left a 60 s wait). A store that answers with
/// an error status (5xx) is not probed: it is up but busy, and the backoff is what relieves it.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Timeout of one `/health` probe: it is one small GET on a link that just failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a write was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No complete answer: connect refused, timeout, reset, TLS, or the answer's body could not
    /// be read.
    #[error("error while processing the HTTP request: {0}")]
    Transport(#[source] reqwest::Error),
    /// The receiver answered with a status other than `204 No Content`.
    #[error("HTTP {status}: {text}")]
    Http {
        /// The answer's status.
        status: StatusCode,
        /// The answer's body (InfluxDB explains a refusal there).
        text: String,
    },
}

/// `POST` one line-protocol body (gzip or plain, as the client's default headers say) to
/// `write_url` (`<url>/api/v2/write?bucket=..&org=..&precision=ns`, [`write_url`]).
///
/// InfluxDB v2 answers `204 No Content` once the points are written (API reference,
/// `POST /api/v2/write`); that alone is success, whatever else a proxy or another store answers.
///
/// # Errors
/// [`WriteError`]: any other status (with the answer's text), or no answer.
pub async fn write(
    client: &reqwest::Client,
    write_url: &Url,
    body: Bytes,
) -> Result<(), WriteError> {
    let response = client
        .post(write_url.clone())
        .body(body)
        .send()
        .await
        .map_err(WriteError::Transport)?;
    let status = response.status();
    if status == StatusCode::NO_CONTENT {
        return Ok(());
    }
    let text = response.text().await.map_err(WriteError::Transport)?;
    Err(WriteError::Http { status, text })
}

/// The write endpoint of the store at `base`: its path replaced by `/api/v2/write` (so `url`
/// must not have a path, config.rs), then `bucket`, `org` and `precision=ns` as
/// form-urlencoded query parameters, in that order.
#[must_use]
pub fn write_url(base: &Url, org: &str, bucket: &str) -> Url {
    let mut url = base.clone();
    url.set_path("/api/v2/write");
    url.query_pairs_mut()
        .append_pair("bucket", bucket)
        .append_pair("org", org)
        .append_pair("precision", "ns");
    url
}

/// Classify a failed [`write`].
#[must_use]
pub fn classify(err: &WriteError) -> Verdict {
    match err {
        WriteError::Http { status, .. } => classify_status(status.as_u16()),
        // Connect refused, timeout, reset, TLS: retrying is the safe default.
        WriteError::Transport(_) => Verdict::Retry,
    }
}

/// The HTTP status (if any) and a bounded description of a failed write, for logs and dead
/// letters. Transport errors include their source chain ("connection refused" lives there).
fn describe(err: &WriteError) -> (Option<u16>, String) {
    match err {
        WriteError::Http { status, text } => (
            Some(status.as_u16()),
            truncate_utf8(text, MAX_REASON_BYTES).to_owned(),
        ),
        other @ WriteError::Transport(_) => {
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
    /// reqwest could not build the health-probe client (TLS backend initialisation).
    #[error("sink {sink}: cannot build the HTTP client for health probes: {source}")]
    Probe {
        /// The sink name.
        sink: String,
        /// What reqwest reported.
        source: reqwest::Error,
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

/// A spool call run on the blocking pool failed.
#[derive(Debug, thiserror::Error)]
enum BlockingError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("gzip failed: {0}")]
    Gzip(#[from] std::io::Error),
    #[error(transparent)]
    Call(#[from] crate::sinks::SpoolCallError),
}

/// Run a blocking spool call (every commit fsyncs) off the async workers.
async fn blocking<T: Send + 'static, E: Into<BlockingError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, BlockingError> {
    crate::supervise::spawn_blocking(f)
        .await?
        .map_err(Into::into)
}

/// Where writes go: the client (timeouts, token, gzip header) and the write URL, shared with
/// the write tasks.
#[derive(Debug)]
struct Endpoint {
    client: reqwest::Client,
    /// [`write_url`] of the configured store.
    write: Url,
    /// Plain client for the `/health` probe ([`PROBE_INTERVAL`]).
    probe: reqwest::Client,
    /// `<url>/health` (InfluxDB v2 and VictoriaMetrics both serve it).
    health: Url,
}

/// A batch read from the spool and encoded for the wire.
#[derive(Debug)]
struct Prepared {
    /// Its place in the spool (sequences, records, age). `body` is empty: the lines were moved
    /// into `wire`, so a batch is held once, compressed when gzip is on.
    batch: Batch,
    /// The request body, gzip or plain. `Bytes`, so a resend shares it instead of copying it.
    wire: Bytes,
}

/// What the receiver made of one write, decided in the write task.
#[derive(Debug)]
enum Outcome {
    /// 204: the receiver has the batch.
    Accepted,
    /// Anything else, classified.
    Failed {
        verdict: Verdict,
        status: Option<u16>,
        text: String,
    },
}

/// One write request running as its own task, so it makes progress while the sink acks,
/// backs off or reads the next batch. Dropping it cancels the request: a batch whose answer
/// never arrived is abandoned, not acked.
#[derive(Debug)]
struct WriteTask(tokio::task::JoinHandle<Outcome>);

impl Drop for WriteTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A batch on the wire, oldest first in [`InfluxSink::run`]'s queue.
#[derive(Debug)]
struct InFlight {
    prepared: Prepared,
    /// Sends so far (1 for the first).
    attempt: u32,
    task: WriteTask,
    /// When the latest send started: a failure of a send older than the store's latest
    /// acceptance is stale ([`InfluxSink::settle_head`]).
    sent_at: tokio::time::Instant,
    /// Its acceptance was counted (an ack retried after a spool error is not counted again).
    counted: bool,
}

/// Wait for the answer to the oldest write; pending forever when nothing is in flight (so it
/// can sit in a `select!` unconditionally).
async fn head_outcome(queue: &mut VecDeque<InFlight>) -> Outcome {
    let Some(head) = queue.front_mut() else {
        return std::future::pending().await;
    };
    match (&mut head.task.0).await {
        Ok(outcome) => outcome,
        // The task panicked or was aborted: nothing is known about the write, so send again.
        Err(e) => Outcome::Failed {
            verdict: Verdict::Retry,
            status: None,
            text: format!("write task ended without an answer: {e}"),
        },
    }
}

/// Wait for the batch being prepared; pending forever when none is.
async fn prepared<F: Future + Unpin>(preparing: &mut Option<F>) -> F::Output {
    match preparing {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The lines of a prepared batch again, for a dead letter (rare: only on a rejection).
fn plain_body(wire: &[u8], gzipped: bool) -> std::io::Result<Vec<u8>> {
    if !gzipped {
        return Ok(wire.to_vec());
    }
    use std::io::Read as _;
    let mut out = Vec::with_capacity(wire.len() * 8);
    flate2::read::GzDecoder::new(wire).read_to_end(&mut out)?;
    Ok(out)
}

/// What woke [`InfluxSink::run`].
#[derive(Debug)]
enum Event {
    /// The oldest write was answered.
    Head(Outcome),
    /// The next batch is ready to send; `None` on shutdown.
    Prepared(Option<Prepared>),
}

/// A batch being read and compressed while earlier ones are on the wire.
type Preparing<'a> = Pin<Box<dyn Future<Output = Option<Prepared>> + Send + 'a>>;

/// The InfluxDB v2 sink. Build with [`InfluxSink::new`], then spawn [`InfluxSink::run`].
#[derive(Debug)]
pub struct InfluxSink {
    cfg: ResolvedInflux,
    endpoint: Arc<Endpoint>,
    spool: Arc<Spool>,
    reader: BatchReader,
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
        let mut headers = HeaderMap::new();
        // InfluxDB v2 API tokens go as `Authorization: Token <token>`; an empty token (a store
        // without authentication) sends no header. An invalid value would fail every request
        // as a transport error and be retried forever, so it is refused here, once.
        let token = cfg.token_or_empty();
        if !token.is_empty() {
            let Ok(mut auth) = HeaderValue::from_str(&format!("Token {token}")) else {
                return Err(InfluxSinkError::BadToken { sink: cfg.name });
            };
            auth.set_sensitive(true);
            headers.insert(AUTHORIZATION, auth);
        }
        if cfg.gzip {
            // The body is compressed by `gzip` before it is queued (and kept compressed for a
            // resend), so the client only labels it.
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        // Both clients trust what the `tls` table says (the probe asks the same server).
        let with_tls = |b: reqwest::ClientBuilder| match &cfg.tls {
            Some(tls) => tls.reqwest(b),
            None => b,
        };
        let client = with_tls(
            reqwest::ClientBuilder::new()
                .timeout(cfg.timeout)
                .connect_timeout(cfg.connect_timeout)
                .default_headers(headers),
        )
        .build()
        .map_err(|source| InfluxSinkError::Client {
            sink: cfg.name.clone(),
            source: source.without_url(),
        })?;
        let probe = with_tls(
            reqwest::ClientBuilder::new()
                .timeout(PROBE_TIMEOUT)
                .connect_timeout(PROBE_TIMEOUT),
        )
        .build()
        .map_err(|source| InfluxSinkError::Probe {
            sink: cfg.name.clone(),
            source: source.without_url(),
        })?;
        let mut health = cfg.url.clone();
        // Keep a path prefix (a store behind a reverse proxy at /influx/).
        let prefix = health.path().trim_end_matches('/').to_owned();
        health.set_path(&format!("{prefix}/health"));
        health.set_query(None);
        let endpoint = Arc::new(Endpoint {
            client,
            write: write_url(&cfg.url, &cfg.org, &cfg.bucket),
            probe,
            health,
        });
        let reader = BatchReader::new(
            Arc::clone(&spool),
            Stream::Points,
            &cfg.name,
            u64::from(cfg.batch_max_records),
            cfg.batch_max_age,
        );
        Ok(Self {
            cfg,
            endpoint,
            spool,
            reader,
            metrics,
        })
    }

    /// The sink's name (spool cursor, metric label).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Deliver points until `shutdown` is cancelled. On shutdown the writes in flight are
    /// abandoned (their batches stay in the spool and are sent again after restart) and this
    /// returns promptly.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(sink = %self.cfg.name, url = %self.cfg.url, org = %self.cfg.org, bucket = %self.cfg.bucket,
              gzip = self.cfg.gzip, "influx sink started");
        let mut backoff = Backoff::new(self.cfg.retry_initial, self.cfg.retry_max);
        // Oldest first; only the front is ever acked, so the cursor moves in order.
        let mut queue: VecDeque<InFlight> = VecDeque::with_capacity(MAX_IN_FLIGHT);
        // When the store last accepted a write (answered, not when it was sent).
        let mut accepted_at: Option<tokio::time::Instant> = None;
        let mut preparing: Option<Preparing<'_>> = None;
        loop {
            // A prepared batch is sent at once, so preparing counts against MAX_IN_FLIGHT:
            // at most that many batches are held, whatever the receiver does.
            if preparing.is_none() && queue.len() < MAX_IN_FLIGHT {
                let from = queue.back().map_or(0, |w| w.prepared.batch.last_seq + 1);
                preparing = Some(Box::pin(self.prepare(from, &shutdown)));
            }
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                outcome = head_outcome(&mut queue) => Event::Head(outcome),
                next = prepared(&mut preparing) => Event::Prepared(next),
            };
            let keep_going = match event {
                Event::Prepared(None) => false,
                Event::Prepared(Some(p)) => {
                    preparing = None;
                    let task = self.send(p.wire.clone());
                    queue.push_back(InFlight {
                        prepared: p,
                        attempt: 1,
                        task,
                        sent_at: tokio::time::Instant::now(),
                        counted: false,
                    });
                    true
                }
                Event::Head(outcome) => {
                    match self
                        .settle_head(
                            &mut queue,
                            outcome,
                            &shutdown,
                            &mut backoff,
                            &mut accepted_at,
                        )
                        .await
                    {
                        Step::Next => true,
                        Step::Restart => {
                            // The cursor did not move: start again from it. Later batches may
                            // have been accepted already and are written again (a harmless
                            // overwrite, see the module doc).
                            queue.clear();
                            preparing = None;
                            true
                        }
                        Step::Stop => false,
                    }
                }
            };
            if !keep_going {
                break;
            }
        }
        // Dropping `queue` aborts the writes still in flight; none of them was acked.
        drop(queue);
        info!(sink = %self.cfg.name, "influx sink stopped");
    }

    /// Start writing `wire` in its own task.
    fn send(&self, wire: Bytes) -> WriteTask {
        let endpoint = Arc::clone(&self.endpoint);
        WriteTask(tokio::spawn(async move {
            let e = &*endpoint;
            match write(&e.client, &e.write, wire).await {
                Ok(()) => Outcome::Accepted,
                Err(err) => {
                    let (status, text) = describe(&err);
                    Outcome::Failed {
                        verdict: classify(&err),
                        status,
                        text,
                    }
                }
            }
        }))
    }

    /// Read the next batch at or after sequence `from` (0: the cursor) and compress it. `None`
    /// on shutdown. Spool and gzip errors are logged and retried with their own backoff.
    async fn prepare(&self, from: u64, shutdown: &CancellationToken) -> Option<Prepared> {
        let mut backoff = Backoff::new(self.cfg.retry_initial, self.cfg.retry_max);
        loop {
            let Next::Batch(mut batch) = self
                .reader
                .next(from, shutdown, &mut backoff, std::future::pending::<()>())
                .await
            else {
                return None;
            };
            let body = std::mem::take(&mut batch.body);
            if !self.cfg.gzip {
                return Some(Prepared {
                    batch,
                    wire: Bytes::from(body),
                });
            }
            match blocking(move || gzip(&body)).await {
                Ok(wire) => {
                    return Some(Prepared {
                        batch,
                        wire: Bytes::from(wire),
                    })
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    error!(sink = %self.cfg.name, error = %e, retry_in = ?delay, "cannot compress a batch");
                    if !sleep_or_shutdown(delay, shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Act on the answer to the oldest write (the front of `queue`): ack it, dead-letter it,
    /// or back off and resend it. Later writes stay in flight meanwhile; their answers wait
    /// their turn, so nothing after a failed batch is acked before it.
    ///
    /// A transient failure of a write sent before `accepted_at` (the store's latest
    /// acceptance, kept up to date here) is stale: it failed while the store was away or busy,
    /// and its answer waited behind the head's. Since the store has accepted a write after it,
    /// the batch is resent at once instead of after a backoff. Without this, the second batch
    /// in flight during an outage waited `retry_initial` (1 s by default) after the store was
    /// back and the first batch had gone through: a 200,000-reading backlog took 1.46 s to drain
    /// instead of 0.46 s (ingest bench `--outage`, 2026-12-01).
    async fn settle_head(
        &self,
        queue: &mut VecDeque<InFlight>,
        outcome: Outcome,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
        accepted_at: &mut Option<tokio::time::Instant>,
    ) -> Step {
        let name = self.cfg.name.as_str();
        let labels = [("sink", name)];
        let (verdict, status, text) = match outcome {
            Outcome::Accepted => {
                let Some(mut head) = queue.pop_front() else {
                    return Step::Next;
                };
                let records = head.prepared.batch.records;
                if !head.counted {
                    head.counted = true;
                    *accepted_at = Some(tokio::time::Instant::now());
                    if head.attempt > 1 {
                        info!(sink = %name, attempt = head.attempt, records, "write succeeded again");
                    }
                    backoff.reset();
                    // Counted here, in cursor order, once per accepted write.
                    self.metrics.add(WRITTEN_RECORDS, &labels, records);
                    self.metrics.incr(WRITE_BATCHES, &labels);
                }
                // `batch.body` is empty: an ack needs only the sequences.
                match self.reader.settle(&head.prepared.batch, None).await {
                    Ok(()) => {
                        backoff.reset();
                        return Step::Next;
                    }
                    Err(e) => {
                        // The store has this batch: retry the ack, not the write, and keep the
                        // later writes in flight, so a spool error causes no duplicate at all
                        // (issue 10 item 6). Restarting from the cursor would send this batch
                        // and the next one again.
                        let delay = backoff.next_delay();
                        error!(sink = %name, error = %e, retry_in = ?delay, records,
                               "cannot advance the spool cursor past an accepted batch; retrying the acknowledgement");
                        if !sleep_or_shutdown(delay, shutdown).await {
                            return Step::Stop;
                        }
                        head.task = WriteTask(tokio::spawn(async { Outcome::Accepted }));
                        queue.push_front(head);
                        return Step::Next;
                    }
                }
            }
            Outcome::Failed {
                verdict,
                status,
                text,
            } => (verdict, status, text),
        };
        if verdict == Verdict::Reject {
            let Some(head) = queue.pop_front() else {
                return Step::Next;
            };
            let Prepared { batch, wire } = head.prepared;
            error!(sink = %name, status, response = %text, records = batch.records,
                   first_seq = batch.first_seq, last_seq = batch.last_seq,
                   "receiver rejected the batch; it is kept in the spool's dead letters");
            let reason = match status {
                Some(s) => format!("HTTP {s}: {text}"),
                None => text,
            };
            let records = batch.records;
            let (spool, sink, gzipped) = (Arc::clone(&self.spool), name.to_owned(), self.cfg.gzip);
            let done = blocking(move || -> Result<(), BlockingError> {
                let body = plain_body(&wire, gzipped)?;
                let batch = Batch { body, ..batch };
                Ok(spool.dead_letter(Stream::Points, &sink, &batch, &reason)?)
            })
            .await;
            // Counted once stored: a failed commit means the batch is sent again.
            if done.is_ok() {
                self.metrics.add(REJECTED_RECORDS, &labels, records);
            }
            return self.after_spool_write(done, shutdown, backoff).await;
        }

        let Some(head) = queue.front_mut() else {
            return Step::Next;
        };
        self.metrics.incr(WRITE_RETRIES, &labels);
        let (records, attempt) = (head.prepared.batch.records, head.attempt);
        if verdict == Verdict::Retry && accepted_at.is_some_and(|at| at > head.sent_at) {
            info!(sink = %name, status, response = %text, records, attempt,
                  "write failed earlier; the store has accepted a write since, resending now");
            head.attempt += 1;
            head.sent_at = tokio::time::Instant::now();
            head.task = self.send(head.prepared.wire.clone());
            return Step::Next;
        }
        let delay = backoff.next_delay();
        if verdict == Verdict::Retry {
            warn!(sink = %name, status, response = %text, records, attempt, retry_in = ?delay,
                  "write failed; will resend the same batch");
        } else {
            error!(sink = %name, status, response = %text, records, attempt, retry_in = ?delay,
                   "receiver refuses the gateway (check url, org, bucket and token); will resend");
        }
        // Unreachable (no HTTP status at all): probe the store while waiting.
        let probe = verdict == Verdict::Retry && status.is_none();
        if !self.wait_before_resend(delay, probe, shutdown).await {
            return Step::Stop;
        }
        head.attempt += 1;
        head.sent_at = tokio::time::Instant::now();
        head.task = self.send(head.prepared.wire.clone());
        Step::Next
    }

    /// Wait `delay` before resending; with `probe`, end the wait early once the store's
    /// `/health` answers 2xx (checked every [`PROBE_INTERVAL`]). False on shutdown.
    async fn wait_before_resend(
        &self,
        delay: Duration,
        probe: bool,
        shutdown: &CancellationToken,
    ) -> bool {
        if !probe || delay <= PROBE_INTERVAL {
            return sleep_or_shutdown(delay, shutdown).await;
        }
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return true;
            }
            if !sleep_or_shutdown(left.min(PROBE_INTERVAL), shutdown).await {
                return false;
            }
            let answer = tokio::select! {
                biased;
                () = shutdown.cancelled() => return false,
                r = self.endpoint.probe.get(self.endpoint.health.clone()).send() => r,
            };
            if answer.is_ok_and(|r| r.status().is_success()) {
                info!(sink = %self.cfg.name, "the store answers again; resending now");
                return true;
            }
        }
    }

    /// After an ack or dead letter: on a spool error, log and back off, then restart from the
    /// cursor (the batch is sent again, a harmless overwrite).
    async fn after_spool_write(
        &self,
        done: Result<(), BlockingError>,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Step {
        match done {
            Ok(()) => Step::Next,
            Err(e) => {
                let delay = backoff.next_delay();
                error!(sink = %self.cfg.name, error = %e, retry_in = ?delay,
                       "cannot advance the spool cursor; the batch will be sent again");
                if sleep_or_shutdown(delay, shutdown).await {
                    Step::Restart
                } else {
                    Step::Stop
                }
            }
        }
    }
}

/// What [`InfluxSink::run`] does after settling the oldest write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Carry on.
    Next,
    /// The spool refused the ack: drop everything in flight and start again from the cursor.
    Restart,
    /// Shut down.
    Stop,
}

#[cfg(test)]
mod tests;
