//! Sinks deliver what the spool holds to the outside world.
//!
//! Owns the sink implementations. A sink reads a batch from the spool, delivers it, and only
//! then advances its own cursor; it never deletes what the receiver has not accepted.
//!
//! This module also holds the small pieces the sinks share: the classification of a failed
//! HTTP delivery ([`classify_status`]), the spool reading and cursor moving of every sink
//! ([`BatchReader`]) and parsing of the alerts stream ([`parse_alert_lines`]). Secrets are read
//! by [`crate::secret`], waiting between attempts is [`crate::retry`].

pub mod influxdb;
pub mod modbus_output;
pub mod mqtt;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::alert::Alert;
use crate::model::now_ns;
use crate::retry::{sleep_or_shutdown, Backoff};
use crate::spool::{truncate_utf8, Batch, Spool, SpoolError, Stream, MAX_REASON_BYTES};

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

/// What [`BatchReader::next`] ended with.
#[derive(Debug)]
pub enum Next<E> {
    /// A batch worth delivering.
    Batch(Batch),
    /// The gateway is shutting down.
    Shutdown,
    /// The caller's `interrupt` future finished first (an MQTT sink's connection was lost).
    Interrupted(E),
}

/// The first and last step of every sink's loop: read the next batch of one stream at the
/// sink's cursor (waiting for the engine to append one), and advance the cursor once the batch
/// is delivered (ack) or refused for good (dead letter). Delivery in between is the sink's own.
///
/// Every spool call runs on the blocking pool (reads touch the disk, acks fsync). A spool error
/// is logged with the sink's name and retried after the caller's backoff; it never ends a sink.
#[derive(Debug, Clone)]
pub struct BatchReader {
    spool: Arc<Spool>,
    stream: Stream,
    sink: String,
    max_records: u64,
    max_age: Duration,
}

impl BatchReader {
    /// A reader of `stream` for `sink`. A batch is handed out when it holds `max_records`
    /// records, or when its oldest record was appended `max_age` ago (zero: at once).
    #[must_use]
    pub fn new(
        spool: Arc<Spool>,
        stream: Stream,
        sink: &str,
        max_records: u64,
        max_age: Duration,
    ) -> Self {
        Self {
            spool,
            stream,
            sink: sink.to_owned(),
            max_records: max_records.max(1),
            max_age,
        }
    }

    /// The spool.
    #[must_use]
    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// Wait for the next batch at or after sequence `from` (0: the cursor; a pipelining sink
    /// passes the sequence after its batches in flight). Ends early on shutdown or when
    /// `interrupt` finishes.
    pub async fn next<E>(
        &self,
        from: u64,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
        interrupt: impl Future<Output = E>,
    ) -> Next<E> {
        tokio::pin!(interrupt);
        // Fixed at the first sight of a partial batch; re-reads keep the same oldest chunk.
        let mut deadline: Option<Instant> = None;
        loop {
            if shutdown.is_cancelled() {
                return Next::Shutdown;
            }
            // Registered before reading, so an append between the read and the wait wakes us.
            let notified = self.spool.appended().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (spool, stream, sink, max) = (
                Arc::clone(&self.spool),
                self.stream,
                self.sink.clone(),
                self.max_records,
            );
            let read: Result<Option<Batch>, SpoolCallError> =
                crate::supervise::spawn_blocking(move || {
                    spool.read_batch_from(stream, &sink, from, max)
                })
                .await
                .map_err(SpoolCallError::from)
                .and_then(|r| r.map_err(SpoolCallError::from));
            let until = match read {
                Err(e) => {
                    let delay = backoff.next_delay();
                    error!(sink = %self.sink, stream = ?self.stream, error = %e, retry_in = ?delay,
                           "cannot read from the spool");
                    Some(Instant::now() + delay)
                }
                Ok(None) => {
                    deadline = None;
                    None
                }
                Ok(Some(batch)) => {
                    if batch.records >= self.max_records {
                        return Next::Batch(batch);
                    }
                    let until = *deadline.get_or_insert_with(|| {
                        Instant::now()
                            + remaining_wait(batch.oldest_append_ns, now_ns(), self.max_age)
                    });
                    if Instant::now() >= until {
                        return Next::Batch(batch);
                    }
                    Some(until)
                }
            };
            // Wait for an append, the deadline (a partial batch's age, or a retry after an
            // error), shutdown or the interrupt; then read again.
            let sleep = async {
                match until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Next::Shutdown,
                e = &mut interrupt => return Next::Interrupted(e),
                () = &mut notified => {}
                () = sleep => {}
            }
        }
    }

    /// Advance the cursor past `batch`: an ack, or with a `reason`, a dead letter (which also
    /// moves the cursor).
    ///
    /// # Errors
    /// A spool error; then the cursor did not move and the batch is read (and delivered) again.
    pub async fn settle(
        &self,
        batch: &Batch,
        reason: Option<String>,
    ) -> Result<(), SpoolCallError> {
        let (spool, stream, sink, batch) = (
            Arc::clone(&self.spool),
            self.stream,
            self.sink.clone(),
            batch.clone(),
        );
        Ok(crate::supervise::spawn_blocking(move || match reason {
            None => spool.ack(stream, &sink, &batch),
            Some(r) => spool.dead_letter(stream, &sink, &batch, &r),
        })
        .await??)
    }

    /// [`BatchReader::settle`], logging a failure and waiting out the backoff before the batch is
    /// read again. True when settled; false when not (then the caller reads again, or stops if
    /// `shutdown` is cancelled).
    pub async fn settle_or_wait(
        &self,
        batch: &Batch,
        reason: Option<String>,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> bool {
        match self.settle(batch, reason).await {
            Ok(()) => true,
            Err(e) => {
                let delay = backoff.next_delay();
                error!(sink = %self.sink, stream = ?self.stream, error = %e, retry_in = ?delay,
                       "cannot advance the spool cursor; the batch will be delivered again");
                sleep_or_shutdown(delay, shutdown).await;
                false
            }
        }
    }
}

/// How long a partial batch whose oldest chunk was appended at `oldest_ns` may still wait at
/// `now_ns`. A wall clock that stepped backwards counts as age 0, so the wait never exceeds
/// `max_age`.
#[must_use]
pub fn remaining_wait(oldest_ns: i64, now_ns: i64, max_age: Duration) -> Duration {
    let age_ns = u64::try_from(now_ns.saturating_sub(oldest_ns)).unwrap_or(0);
    max_age.saturating_sub(Duration::from_nanos(age_ns))
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
    use crate::spool::SpoolConfig;

    fn spool(dir: &tempfile::TempDir) -> Arc<Spool> {
        Arc::new(
            Spool::open(
                &dir.path().join("spool.redb"),
                &SpoolConfig::default(),
                &["s".to_owned()],
            )
            .expect("spool"),
        )
    }

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(10), Duration::from_millis(50))
    }

    /// Bounded wait for a reader call in these tests.
    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_reader_hands_out_a_full_batch_at_once_and_a_partial_one_after_max_age() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = spool(&dir);
        let stop = CancellationToken::new();
        let reader = BatchReader::new(
            Arc::clone(&spool),
            Stream::Points,
            "s",
            3,
            Duration::from_millis(300),
        );
        // Timed from before the append: its records are stamped inside it, before its commit's
        // fsync, which on a loaded disk takes long enough to eat into the wait measured after.
        let started = Instant::now();
        spool
            .append(Stream::Points, b"m v=1 1\nm v=2 2\n", 2)
            .expect("append");
        let next = tokio::time::timeout(
            LIMIT,
            reader.next(0, &stop, &mut backoff(), std::future::pending::<()>()),
        )
        .await
        .expect("bounded");
        let Next::Batch(partial) = next else {
            panic!("expected a batch, got {next:?}")
        };
        // Two of three records: handed out only once the oldest is max_age old.
        assert_eq!(partial.records, 2);
        assert!(started.elapsed() >= Duration::from_millis(250));
        // Once settled, the next read starts after it.
        assert!(reader.settle(&partial, None).await.is_ok());
        spool
            .append(Stream::Points, b"m v=3 3\nm v=4 4\nm v=5 5\n", 3)
            .expect("append");
        let next = tokio::time::timeout(
            LIMIT,
            reader.next(0, &stop, &mut backoff(), std::future::pending::<()>()),
        )
        .await
        .expect("bounded");
        let Next::Batch(full) = next else {
            panic!("expected a batch, got {next:?}")
        };
        assert_eq!(
            (full.records, full.body.as_slice()),
            (3, &b"m v=3 3\nm v=4 4\nm v=5 5\n"[..])
        );
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_append_and_ends_on_shutdown_or_interrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = spool(&dir);
        let stop = CancellationToken::new();
        let reader = BatchReader::new(Arc::clone(&spool), Stream::Alerts, "s", 10, Duration::ZERO);
        let writer = Arc::clone(&spool);
        let append = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer.append(Stream::Alerts, b"{}\n", 1).map(|_| ())
        });
        let next = tokio::time::timeout(
            LIMIT,
            reader.next(0, &stop, &mut backoff(), std::future::pending::<()>()),
        )
        .await
        .expect("woken by the append");
        assert!(
            matches!(next, Next::Batch(ref b) if b.records == 1),
            "{next:?}"
        );
        assert!(append.await.expect("join").is_ok());
        // An empty stream (after an ack): the interrupt ends the wait, then shutdown does.
        if let Next::Batch(b) = next {
            assert!(reader.settle(&b, Some("refused".into())).await.is_ok());
        }
        let next = reader
            .next(0, &stop, &mut backoff(), async { "link lost" })
            .await;
        assert!(matches!(next, Next::Interrupted("link lost")), "{next:?}");
        stop.cancel();
        let next = tokio::time::timeout(
            LIMIT,
            reader.next(0, &stop, &mut backoff(), std::future::pending::<()>()),
        )
        .await
        .expect("bounded");
        assert!(matches!(next, Next::Shutdown), "{next:?}");
        assert_eq!(spool.dead_letters().expect("dead letters").len(), 1);
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
