//! Tests of the sink: pure rules (classification, backoff, batching age, gzip) and delivery
//! against a scripted HTTP server on 127.0.0.1.
//!
//! The scripted server is a fake, which docs/ARCHITECTURE.md §Tests allows only for failures a real
//! server cannot produce on demand: VictoriaMetrics cannot be told to answer 503 once, to answer
//! 400 (it answers 204 even to malformed lines, docs/ARCHITECTURE.md §Crate pitfalls), or to hang
//! mid-request. Successful delivery to a real store is covered by the end-to-end tests in `tests/`.

use std::collections::VecDeque;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::secret::Secret;
use crate::sinks::influxdb::config::ResolvedInflux;
use crate::sinks::remaining_wait;
use crate::spool::{SpoolConfig, DEFAULT_MAX_BYTES};

#[test]
fn classification_table() {
    let table = [
        (400, Verdict::Reject),
        (413, Verdict::Reject),
        (422, Verdict::Reject),
        (401, Verdict::Misconfigured),
        (403, Verdict::Misconfigured),
        (404, Verdict::Misconfigured),
        (408, Verdict::Retry),
        (429, Verdict::Retry),
        (500, Verdict::Retry),
        (502, Verdict::Retry),
        (503, Verdict::Retry),
        (504, Verdict::Retry),
        (200, Verdict::Misconfigured),
        (302, Verdict::Misconfigured),
    ];
    for (status, want) in table {
        assert_eq!(classify_status(status), want, "status {status}");
    }
}

#[tokio::test]
async fn a_transport_error_is_retried() {
    // Port 1 on loopback: nothing listens there, so the connect is refused immediately.
    let base = Url::parse("http://127.0.0.1:1").expect("url");
    let err = write(
        &reqwest::Client::new(),
        &write_url(&base, "o", "b"),
        Bytes::from_static(b"m v=1 1\n"),
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, WriteError::Transport(_)), "{err}");
    assert_eq!(classify(&err), Verdict::Retry);
    let (status, text) = describe(&err);
    assert_eq!(status, None);
    assert!(text.to_lowercase().contains("connect"), "{text}");
}

#[test]
fn a_partial_batch_waits_at_most_max_age() {
    let max = Duration::from_secs(1);
    // 300 ms old -> 700 ms left.
    assert_eq!(
        remaining_wait(1_000_000_000, 1_300_000_000, max),
        Duration::from_millis(700)
    );
    // Older than max_age -> send now.
    assert_eq!(remaining_wait(0, 5_000_000_000, max), Duration::ZERO);
    // The clock stepped back 10 s -> age 0, wait the full max_age, never longer.
    assert_eq!(remaining_wait(20_000_000_000, 10_000_000_000, max), max);
}

#[test]
fn gzip_round_trips_and_is_rfc_1952() {
    let body = b"m,a=1 value=1.0 1\nm,a=2 value=2.0 2\n";
    let z = gzip(body).expect("gzip");
    // RFC 1952 §2.3.1: ID1 = 0x1f, ID2 = 0x8b, CM = 8 (deflate).
    assert_eq!(&z[..3], &[0x1f, 0x8b, 0x08]);
    assert_eq!(gunzip(&z), body);
}

/// An HTTP/1.1 response with `text` as a text/plain body (none for 204).
fn response(code: u16, text: &str) -> String {
    if code == 204 {
        return "HTTP/1.1 204 No Content\r\n\r\n".to_owned();
    }
    format!(
        "HTTP/1.1 {code} Scripted\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}",
        text.len()
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn gunzip(z: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(z)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

// ---- scripted server -------------------------------------------------------------------------

/// What the scripted server answers to one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// This status, with this body as text/plain (none for 204).
    Status(u16, &'static str),
    /// Read the request and never answer (a stalled store or proxy).
    Hang,
    /// Answer this status once the test calls [`Fake::release`] (one release per answer).
    Held(u16),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The line protocol sent, gunzipped when the request says gzip.
    fn lines(&self) -> Vec<u8> {
        if self.header("content-encoding") == Some("gzip") {
            gunzip(&self.body)
        } else {
            self.body.clone()
        }
    }
}

/// Answers for the requests whose line protocol contains `needle`, in order (then 204).
#[derive(Debug, Clone)]
struct Keyed {
    needle: &'static [u8],
    answers: VecDeque<Answer>,
}

#[derive(Debug, Clone)]
struct Fake {
    script: Arc<Mutex<VecDeque<Answer>>>,
    /// Checked before `script`: with several writes in flight, arrival order is not fixed, so
    /// a test that scripts one batch's fate picks it by content.
    keyed: Arc<Mutex<Vec<Keyed>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Permits for [`Answer::Held`].
    release: Arc<tokio::sync::Semaphore>,
}

impl Fake {
    /// Listen on 127.0.0.1:0 and answer with `script` in order, then 204 to everything.
    async fn start(script: &[Answer]) -> (SocketAddr, Self) {
        Self::start_keyed(script, &[]).await
    }

    /// Like [`Fake::start`], but a request whose lines contain one of `keyed`'s needles takes
    /// that needle's next answer instead.
    async fn start_keyed(
        script: &[Answer],
        keyed: &[(&'static [u8], &[Answer])],
    ) -> (SocketAddr, Self) {
        Self::start_at("127.0.0.1:0", script, keyed).await
    }

    /// Like [`Fake::start_keyed`], listening on `addr`.
    async fn start_at(
        addr: &str,
        script: &[Answer],
        keyed: &[(&'static [u8], &[Answer])],
    ) -> (SocketAddr, Self) {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fake = Self {
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            keyed: Arc::new(Mutex::new(
                keyed
                    .iter()
                    .map(|(needle, answers)| Keyed {
                        needle,
                        answers: answers.iter().copied().collect(),
                    })
                    .collect(),
            )),
            seen: Arc::default(),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        let server = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(server.clone().connection(stream));
            }
        });
        (addr, fake)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// How many requests carried lines containing `needle`.
    fn count(&self, needle: &[u8]) -> usize {
        self.seen()
            .iter()
            .filter(|s| contains(&s.lines(), needle))
            .count()
    }

    /// Let one [`Answer::Held`] go.
    fn release(&self) {
        self.release.add_permits(1);
    }

    /// The next answer for a request carrying `lines`.
    fn answer_for(&self, lines: &[u8]) -> Answer {
        let mut keyed = self.keyed.lock().expect("lock");
        if let Some(k) = keyed.iter_mut().find(|k| contains(lines, k.needle)) {
            return k.answers.pop_front().unwrap_or(Answer::Status(204, ""));
        }
        drop(keyed);
        self.script
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or(Answer::Status(204, ""))
    }

    /// Serve one keep-alive connection: request, answer, repeat.
    async fn connection(self, stream: tokio::net::TcpStream) {
        let mut reader = BufReader::new(stream);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                return;
            }
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_lowercase(), v.trim().to_owned()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).await.is_err() {
                return;
            }
            let seen = Seen {
                request_line: request_line.trim_end().to_owned(),
                headers,
                body,
            };
            let answer = self.answer_for(&seen.lines());
            self.seen.lock().expect("lock").push(seen);
            let response = match answer {
                Answer::Hang => return std::future::pending().await,
                Answer::Held(code) => {
                    self.release
                        .acquire()
                        .await
                        .expect("semaphore open")
                        .forget();
                    response(code, "held")
                }
                Answer::Status(code, text) => response(code, text),
            };
            if reader
                .get_mut()
                .write_all(response.as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

// ---- delivery against the scripted server ---------------------------------------------------

const SINK: &str = "influxdb";
const LABELS: [(&str, &str); 1] = [("sink", SINK)];
const CHUNK1: &[u8] = b"settlement,point=P1 value=1.5,quality=0i 1700000000000000000\n\
settlement,point=P2 value=-0.25,quality=0i 1700000000000000000\n";
const CHUNK2: &[u8] = b"settlement,point=P1 value=1.75,quality=0i 1700000010000000000\n";

fn resolved(addr: SocketAddr, gzip: bool) -> ResolvedInflux {
    ResolvedInflux {
        name: SINK.to_owned(),
        url: reqwest::Url::parse(&format!("http://{addr}")).expect("url"),
        tls: None,
        org: "site".to_owned(),
        bucket: "anju".to_owned(),
        token: Some(Secret::new("t0ken")),
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        batch_max_records: 5000,
        batch_max_age: Duration::ZERO,
        gzip,
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(40),
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    fn start(cfg: ResolvedInflux, chunks: &[(&[u8], u32)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Arc::new(
            Spool::open(
                &dir.path().join("spool.redb"),
                &SpoolConfig {
                    max_bytes: DEFAULT_MAX_BYTES,
                    ..SpoolConfig::default()
                },
                &[SINK.to_owned()],
            )
            .expect("spool"),
        );
        for (body, records) in chunks {
            spool
                .append(Stream::Points, body, *records)
                .expect("append");
        }
        let metrics = Arc::new(Metrics::new());
        let sink = InfluxSink::new(cfg, Arc::clone(&spool), Arc::clone(&metrics)).expect("sink");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sink.run(shutdown.clone()));
        Self {
            _dir: dir,
            spool,
            metrics,
            shutdown,
            task,
        }
    }

    fn backlog(&self) -> u64 {
        self.spool.stats().sinks[SINK].points_records
    }

    fn counter(&self, name: crate::metrics::Counter) -> u64 {
        self.metrics.get(name, &LABELS)
    }

    /// Cancel and require the task to end promptly.
    async fn stop(self) -> (Arc<Spool>, Arc<Metrics>, tempfile::TempDir) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("prompt shutdown")
            .expect("join");
        (self.spool, self.metrics, self._dir)
    }
}

/// Wait (bounded) for the asynchronous delivery to reach a state.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_unreachable_store_is_probed_and_used_within_seconds_of_its_return() {
    // A port nothing listens on yet: every write fails to connect.
    let addr = SocketAddr::from(([127, 0, 0, 1], crate::loopback::test_port()));
    let mut cfg = resolved(addr, false);
    // A backoff far longer than the test's wait: only the health probe can end it early.
    cfg.retry_initial = Duration::from_secs(60);
    cfg.retry_max = Duration::from_secs(60);
    let h = Harness::start(cfg, &[(CHUNK1, 2)]);
    eventually("the first failed write", || h.counter(WRITE_RETRIES) == 1).await;
    let (_, fake) = Fake::start_at(&addr.to_string(), &[], &[]).await;
    eventually("the backlog delivered after the store came back", || {
        h.backlog() == 0
    })
    .await;
    let seen = fake.seen();
    assert!(
        seen.iter()
            .any(|r| r.request_line.starts_with("GET /health")),
        "{seen:?}"
    );
    assert_eq!(fake.count(b"point=P2"), 1, "written once");
    h.stop().await;
}

#[tokio::test]
async fn a_failed_ack_of_an_accepted_batch_is_retried_without_writing_anything_again() {
    let (addr, fake) = Fake::start(&[]).await;
    let mut cfg = resolved(addr, false);
    // One record per batch, so several batches are in flight at once.
    cfg.batch_max_records = 1;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Arc::new(
        Spool::open(
            &dir.path().join("spool.redb"),
            &SpoolConfig::default(),
            &[SINK.to_owned()],
        )
        .expect("spool"),
    );
    // The first three acks fail (a full disk); every write is accepted.
    spool.inject_ack_faults(3);
    for body in [
        &b"settlement,point=A value=1 1\n"[..],
        b"settlement,point=B value=2 2\n",
        b"settlement,point=C value=3 3\n",
    ] {
        spool.append(Stream::Points, body, 1).expect("append");
    }
    let metrics = Arc::new(Metrics::new());
    let sink = InfluxSink::new(cfg, Arc::clone(&spool), Arc::clone(&metrics)).expect("sink");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(sink.run(shutdown.clone()));
    eventually("every batch acknowledged", || {
        spool.stats().sinks[SINK].points_records == 0
    })
    .await;
    shutdown.cancel();
    let _ = task.await;
    // Each point written exactly once: the failed acks were retried, not the writes.
    for point in [&b"point=A"[..], b"point=B", b"point=C"] {
        assert_eq!(fake.count(point), 1, "{}", String::from_utf8_lossy(point));
    }
    assert_eq!(metrics.get(WRITTEN_RECORDS, &LABELS), 3);
}

#[tokio::test]
async fn a_503_is_retried_with_the_same_batch_then_acked_once() {
    let (addr, fake) = Fake::start(&[Answer::Status(503, "busy")]).await;
    let h = Harness::start(resolved(addr, true), &[(CHUNK1, 2)]);
    eventually("two requests, an empty backlog, counted", || {
        fake.seen().len() == 2 && h.backlog() == 0 && h.counter(WRITE_BATCHES) == 1
    })
    .await;
    assert_eq!(h.counter(WRITE_RETRIES), 1);
    assert_eq!(h.counter(WRITTEN_RECORDS), 2);
    assert_eq!(h.counter(WRITE_BATCHES), 1);
    assert_eq!(h.counter(REJECTED_RECORDS), 0);
    let (spool, _, _dir) = h.stop().await;

    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "nothing duplicated after the ack");
    for req in &seen {
        assert_eq!(gunzip(&req.body), CHUNK1, "the same batch both times");
    }
    assert_eq!(spool.stats().points_chunks, 0, "acked and deleted");
    assert!(spool.dead_letters().expect("list").is_empty());
}

#[tokio::test]
async fn the_request_is_a_gzipped_v2_write_with_the_token() {
    let (addr, fake) = Fake::start(&[]).await;
    let h = Harness::start(resolved(addr, true), &[(CHUNK1, 2)]);
    eventually("the batch is acked", || h.backlog() == 0).await;
    h.stop().await;
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(
        req.request_line,
        "POST /api/v2/write?bucket=anju&org=site&precision=ns HTTP/1.1"
    );
    assert_eq!(req.header("content-encoding"), Some("gzip"));
    assert_eq!(req.header("authorization"), Some("Token t0ken"));
    assert_eq!(&req.body[..2], &[0x1f, 0x8b]);
    assert_eq!(gunzip(&req.body), CHUNK1);
}

#[tokio::test]
async fn without_gzip_the_body_is_plain() {
    let (addr, fake) = Fake::start(&[]).await;
    let h = Harness::start(resolved(addr, false), &[(CHUNK1, 2)]);
    eventually("the batch is acked", || h.backlog() == 0).await;
    h.stop().await;
    let req = &fake.seen()[0];
    assert_eq!(req.header("content-encoding"), None);
    assert_eq!(req.body, CHUNK1);
}

#[tokio::test]
async fn without_a_token_no_authorization_is_sent() {
    // A store without authentication (VictoriaMetrics, InfluxDB 1.x's v2 API) takes no token;
    // an `Authorization: Token ` with nothing after it would be refused by one that checks.
    let (addr, fake) = Fake::start(&[]).await;
    let cfg = ResolvedInflux {
        token: None,
        ..resolved(addr, false)
    };
    let h = Harness::start(cfg, &[(CHUNK1, 2)]);
    eventually("the batch is acked", || h.backlog() == 0).await;
    h.stop().await;
    let req = &fake.seen()[0];
    assert_eq!(req.header("authorization"), None);
    assert_eq!(req.body, CHUNK1);
}

#[test]
fn org_and_bucket_are_form_urlencoded_and_the_path_is_replaced() {
    // application/x-www-form-urlencoded (WHATWG URL §5.2): space is `+`, `&` and `/` are
    // percent-encoded; the store's URL has no path of its own (config.rs), any is replaced.
    let base = Url::parse("https://influx.example:8086/").expect("url");
    assert_eq!(
        write_url(&base, "Xin'an county", "a&b/c").as_str(),
        "https://influx.example:8086/api/v2/write?bucket=a%26b%2Fc&org=Xin%27an+county&precision=ns"
    );
}

#[tokio::test]
async fn a_400_moves_the_batch_to_dead_letters_and_the_sink_goes_on() {
    let text = "unable to parse 'settlement,point=P1 value=': missing field value";
    let (addr, fake) = Fake::start(&[Answer::Status(400, text)]).await;
    let h = Harness::start(resolved(addr, true), &[(CHUNK1, 2)]);
    // The count follows the dead-letter commit, so wait for both.
    eventually("a dead letter", || {
        h.spool.stats().dead_letter_count == 1 && h.counter(REJECTED_RECORDS) == 2
    })
    .await;
    assert_eq!(h.backlog(), 0, "the cursor moved past the rejected batch");
    assert_eq!(h.counter(REJECTED_RECORDS), 2);
    assert_eq!(h.counter(WRITE_RETRIES), 0);

    // The next batch is delivered normally.
    h.spool.append(Stream::Points, CHUNK2, 1).expect("append");
    eventually("the second batch is acked", || {
        fake.seen().len() == 2 && h.backlog() == 0
    })
    .await;
    assert_eq!(h.counter(WRITTEN_RECORDS), 1);
    let (spool, _, _dir) = h.stop().await;

    let letters = spool.dead_letters().expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, format!("HTTP 400: {text}"));
    assert_eq!(letters[0].body, CHUNK1);
    assert_eq!((letters[0].sink.as_str(), letters[0].records), (SINK, 2));
    let seen = fake.seen();
    assert_eq!(gunzip(&seen[1].body), CHUNK2);
    assert_eq!(spool.stats().points_chunks, 0);
}

#[tokio::test]
async fn a_401_is_not_dead_lettered_but_retried() {
    let (addr, fake) = Fake::start(&[Answer::Status(401, "unauthorized access")]).await;
    let h = Harness::start(resolved(addr, true), &[(CHUNK1, 2)]);
    eventually("acked after the retry", || {
        fake.seen().len() == 2 && h.backlog() == 0
    })
    .await;
    assert_eq!(h.counter(WRITE_RETRIES), 1);
    assert_eq!(h.spool.stats().dead_letter_count, 0);
    h.stop().await;
}

#[tokio::test]
async fn shutdown_abandons_a_hanging_request_without_acking() {
    let (addr, fake) = Fake::start(&[Answer::Hang]).await;
    let h = Harness::start(resolved(addr, true), &[(CHUNK1, 2)]);
    eventually("the request arrived", || fake.seen().len() == 1).await;
    let (spool, metrics, _dir) = h.stop().await;
    assert_eq!(
        spool.stats().sinks[SINK].points_records,
        2,
        "not confirmed, so not acked"
    );
    assert_eq!(spool.stats().points_chunks, 1);
    assert_eq!(metrics.get(WRITTEN_RECORDS, &LABELS), 0);
}

#[tokio::test]
async fn a_partial_batch_waits_for_more_and_goes_out_when_full() {
    let (addr, fake) = Fake::start(&[]).await;
    // Room for 3 records; the first chunk has 2, so the sink waits (up to 30 s) for the third.
    let cfg = ResolvedInflux {
        batch_max_records: 3,
        batch_max_age: Duration::from_secs(30),
        ..resolved(addr, false)
    };
    let h = Harness::start(cfg, &[(CHUNK1, 2)]);
    h.spool.append(Stream::Points, CHUNK2, 1).expect("append");
    eventually("one full batch acked", || h.backlog() == 0).await;
    h.stop().await;
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, [CHUNK1, CHUNK2].concat());
}

#[tokio::test]
async fn shutdown_while_a_partial_batch_waits_returns_promptly() {
    let (addr, fake) = Fake::start(&[]).await;
    let cfg = ResolvedInflux {
        batch_max_age: Duration::from_secs(30),
        ..resolved(addr, false)
    };
    let h = Harness::start(cfg, &[(CHUNK1, 2)]);
    let (spool, _, _dir) = h.stop().await;
    assert!(fake.seen().is_empty());
    assert_eq!(spool.stats().sinks[SINK].points_records, 2);
}

#[tokio::test]
async fn an_unregistered_sink_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Arc::new(
        Spool::open(&dir.path().join("s.redb"), &SpoolConfig::default(), &[]).expect("spool"),
    );
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let err = InfluxSink::new(resolved(addr, true), spool, Arc::new(Metrics::new()))
        .expect_err("not registered");
    assert!(
        matches!(err, InfluxSinkError::NotRegistered { .. }),
        "{err}"
    );
}

// ---- the write pipeline ----------------------------------------------------------------------

const CHUNK3: &[u8] = b"settlement,point=P2 value=2.5,quality=0i 1700000010000000000\n";
/// Needles that pick each chunk out of a request (CHUNK1's `1.5,` is not in CHUNK2's `1.75,`).
const N1: &[u8] = b"value=1.5,";
const N2: &[u8] = b"value=1.75,";
const N3: &[u8] = b"value=2.5,";

/// One chunk per batch: CHUNK1 (2 records) alone already exceeds 1, and a batch always takes
/// at least one chunk.
fn one_chunk_per_batch(addr: SocketAddr) -> ResolvedInflux {
    ResolvedInflux {
        batch_max_records: 1,
        ..resolved(addr, true)
    }
}

#[tokio::test]
async fn a_failed_batch_holds_the_cursor_while_a_later_one_is_accepted() {
    let (addr, fake) = Fake::start_keyed(
        &[],
        &[
            (N1, &[Answer::Held(503), Answer::Status(204, "")]),
            (N2, &[Answer::Status(204, "")]),
        ],
    )
    .await;
    let h = Harness::start(one_chunk_per_batch(addr), &[(CHUNK1, 2), (CHUNK2, 1)]);
    // Batch 2 goes out while batch 1 is still unanswered: the pipeline overlaps them.
    eventually("both batches on the wire", || {
        fake.count(N1) == 1 && fake.count(N2) == 1
    })
    .await;
    // Batch 2 has its 204, batch 1 has nothing yet: the cursor must not move at all.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.backlog(), 3, "nothing acked past the unanswered batch 1");
    assert_eq!(h.counter(WRITTEN_RECORDS), 0);

    // Batch 1 fails (503), is resent after the backoff and accepted; then both are acked.
    fake.release();
    // The cursor moves first, then the counters.
    eventually("everything acked and counted", || {
        h.backlog() == 0 && h.counter(WRITE_BATCHES) == 2
    })
    .await;
    assert_eq!(fake.count(N1), 2, "batch 1 sent twice");
    assert_eq!(fake.count(N2), 1, "batch 2's 204 was kept, not re-sent");
    assert_eq!(h.counter(WRITE_RETRIES), 1);
    assert_eq!(h.counter(WRITTEN_RECORDS), 3);
    assert_eq!(h.counter(WRITE_BATCHES), 2);
    let (spool, _, _dir) = h.stop().await;
    assert_eq!(spool.stats().points_chunks, 0);
    assert!(spool.dead_letters().expect("list").is_empty());
    // Both sends of batch 1 carried the same lines.
    for req in fake.seen().iter().filter(|s| contains(&s.lines(), N1)) {
        assert_eq!(req.lines(), CHUNK1);
    }
}

/// Batch 1 on the wire, held unanswered, while batch 2 is answered with `n2`'s first answer;
/// then batch 1 is accepted (204). The backoff is a minute, longer than any test waits.
async fn batch_2_answered_while_batch_1_waits(n2: &'static [Answer]) -> (Fake, Harness) {
    let (addr, fake) = Fake::start_keyed(&[], &[(N1, &[Answer::Held(204)]), (N2, n2)]).await;
    let mut cfg = one_chunk_per_batch(addr);
    cfg.retry_initial = Duration::from_secs(60);
    cfg.retry_max = Duration::from_secs(60);
    let h = Harness::start(cfg, &[(CHUNK1, 2), (CHUNK2, 1)]);
    eventually("batch 1 on the wire and batch 2 answered", || {
        fake.count(N1) == 1 && fake.count(N2) == 1
    })
    .await;
    fake.release();
    (fake, h)
}

#[tokio::test]
async fn a_batch_that_failed_before_the_store_accepted_a_later_write_is_resent_at_once() {
    // Batch 2's failure (503) is older than the store's acceptance of batch 1: it goes again
    // at once, not after the backoff, as the second batch in flight during an outage must once
    // the store is back.
    let (fake, h) = batch_2_answered_while_batch_1_waits(&[
        Answer::Status(503, "busy"),
        Answer::Status(204, ""),
    ])
    .await;
    eventually("both batches acked", || h.backlog() == 0).await;
    assert_eq!(fake.count(N1), 1, "batch 1 sent once");
    assert_eq!(
        fake.count(N2),
        2,
        "batch 2 sent again after batch 1 was accepted"
    );
    assert_eq!(h.counter(WRITE_RETRIES), 1);
    assert_eq!(h.counter(WRITTEN_RECORDS), 3);
    h.stop().await;
}

#[tokio::test]
async fn a_batch_that_fails_again_after_the_store_accepted_a_write_waits_out_the_backoff() {
    // The resend at once is for a failure older than the latest acceptance only: a batch that
    // fails again after it is retried on the backoff, so a store that keeps refusing one batch
    // is not hammered.
    let (fake, h) = batch_2_answered_while_batch_1_waits(&[
        Answer::Status(503, "busy"),
        Answer::Status(503, "still busy"),
    ])
    .await;
    eventually("batch 2 resent once and refused again", || {
        fake.count(N2) == 2 && h.counter(WRITE_RETRIES) == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.count(N2), 2, "no third send before the backoff");
    assert_eq!(h.backlog(), 1, "batch 1 acked, batch 2 held");
    h.stop().await;
}

#[tokio::test]
async fn shutdown_mid_pipeline_acks_nothing_unconfirmed() {
    let (addr, fake) = Fake::start_keyed(
        &[],
        &[(N1, &[Answer::Hang]), (N2, &[Answer::Status(204, "")])],
    )
    .await;
    let h = Harness::start(one_chunk_per_batch(addr), &[(CHUNK1, 2), (CHUNK2, 1)]);
    eventually("both batches on the wire", || {
        fake.count(N1) == 1 && fake.count(N2) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (spool, metrics, _dir) = h.stop().await;
    // Batch 2 was accepted, but batch 1 was not: acking 2 would skip 1, so neither is acked.
    assert_eq!(spool.stats().sinks[SINK].points_records, 3);
    assert_eq!(spool.stats().points_chunks, 2);
    assert_eq!(metrics.get(WRITTEN_RECORDS, &LABELS), 0);
}

#[tokio::test]
async fn a_rejected_batch_is_dead_lettered_in_order_and_later_ones_are_acked() {
    let (addr, fake) = Fake::start_keyed(
        &[],
        &[(N1, &[Answer::Held(422)]), (N2, &[Answer::Status(204, "")])],
    )
    .await;
    let h = Harness::start(one_chunk_per_batch(addr), &[(CHUNK1, 2), (CHUNK2, 1)]);
    eventually("both batches on the wire", || {
        fake.count(N1) == 1 && fake.count(N2) == 1
    })
    .await;
    assert_eq!(h.backlog(), 3);
    fake.release();
    eventually("batch 1 dead-lettered and batch 2 acked", || {
        h.backlog() == 0 && h.counter(REJECTED_RECORDS) == 2 && h.counter(WRITE_BATCHES) == 1
    })
    .await;
    assert_eq!(h.counter(WRITTEN_RECORDS), 1);
    assert_eq!(h.counter(WRITE_RETRIES), 0);
    let (spool, _, _dir) = h.stop().await;
    let letters = spool.dead_letters().expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "HTTP 422: held");
    assert_eq!(letters[0].body, CHUNK1, "stored uncompressed");
    assert_eq!(
        (
            letters[0].first_seq,
            letters[0].last_seq,
            letters[0].records
        ),
        (1, 1, 2)
    );
    assert_eq!(fake.count(N1), 1);
    assert_eq!(fake.count(N2), 1);
    assert_eq!(spool.stats().points_chunks, 0);
}

#[tokio::test]
async fn at_most_max_in_flight_batches_are_on_the_wire() {
    let (addr, fake) = Fake::start_keyed(
        &[],
        &[
            (N1, &[Answer::Hang]),
            (N2, &[Answer::Hang]),
            (N3, &[Answer::Hang]),
        ],
    )
    .await;
    let h = Harness::start(
        one_chunk_per_batch(addr),
        &[(CHUNK1, 2), (CHUNK2, 1), (CHUNK3, 1)],
    );
    eventually("two writes in flight", || fake.seen().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(MAX_IN_FLIGHT, 2);
    assert_eq!(fake.seen().len(), 2, "the third waits for a free slot");
    // Batches leave in spool order.
    assert_eq!((fake.count(N1), fake.count(N2), fake.count(N3)), (1, 1, 0));
    let (spool, _, _dir) = h.stop().await;
    assert_eq!(spool.stats().sinks[SINK].points_records, 4);
}

#[tokio::test]
async fn consecutive_batches_are_each_written_once() {
    let (addr, fake) = Fake::start(&[]).await;
    let h = Harness::start(
        one_chunk_per_batch(addr),
        &[(CHUNK1, 2), (CHUNK2, 1), (CHUNK3, 1)],
    );
    eventually("everything acked", || h.backlog() == 0).await;
    assert_eq!(h.counter(WRITE_BATCHES), 3);
    assert_eq!(h.counter(WRITTEN_RECORDS), 4);
    let (spool, _, _dir) = h.stop().await;
    let mut bodies: Vec<Vec<u8>> = fake.seen().iter().map(Seen::lines).collect();
    bodies.sort();
    let mut want = vec![CHUNK1.to_vec(), CHUNK2.to_vec(), CHUNK3.to_vec()];
    want.sort();
    assert_eq!(bodies, want, "each batch exactly once, none merged or lost");
    assert_eq!(spool.stats().points_chunks, 0);
}

#[test]
fn the_gzip_level_keeps_line_protocol_about_ten_times_smaller() {
    // 5000 lines shaped like the ingest benchmark's (2000 sensors, ms-spaced timestamps).
    let mut body = Vec::new();
    for i in 0..5000u64 {
        body.extend_from_slice(
            format!(
                "strain,device=bench,gateway=bench-gw,point=s{:04},site=bench,unit=ue \
                 value={}.{:03},quality=0i {}\n",
                (i * 7 + 1234) % 2000,
                i % 97,
                i % 1000,
                1_767_000_000_000_000_000 + i * 1_000_000
            )
            .as_bytes(),
        );
    }
    let z = gzip(&body).expect("gzip");
    assert_eq!(gunzip(&z), body);
    // GZIP_LEVEL's table says 10.0x; 9x leaves room for backend updates, while level 1 of
    // zlib-rs (6.8x) would fail here.
    assert!(
        body.len() >= 9 * z.len(),
        "{} -> {} bytes",
        body.len(),
        z.len()
    );
}
