//! The site console: the gateway's HTTP server (axum on the gateway's tokio runtime): the
//! overview, device, channel and alert-history pages, `/config`, `/metrics`, `/healthz` and
//! `/readyz`.
//!
//! Owns binding the listen address (a port in use is a start-up error naming the address),
//! serving until its stop token, the state every route reads ([`ConsoleState`]) and the token
//! check's secret ([`Access`]). It does not own the routes' behaviour ([`router`]), the pages
//! ([`pages`], [`detail`], [`chart`]), the metrics format ([`exposition`]), readiness
//! ([`ready`]), its config rules ([`config`]) or the history it draws ([`crate::history`]); it
//! counts nothing and changes nothing in the gateway: every route only reads, except the
//! acknowledgement form, which asks the engine.

pub mod chart;
pub mod config;
pub mod detail;
pub mod exposition;
pub mod pages;
pub mod ready;
pub mod router;

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::hmac;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{ConsoleConfig, ConsoleSettings, DEFAULT_LISTEN};

use crate::config::Sink;
use crate::engine::command::CommandTx;
use crate::engine::view::ViewRx;
use crate::history::History;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::spool::{SpoolStats, Spools};

/// How long requests in progress may finish after the console is told to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The console could not start.
#[derive(Debug, thiserror::Error)]
#[error("console: cannot listen on {addr}: {cause}; {fix}")]
pub struct ConsoleError {
    /// The configured address.
    pub addr: SocketAddr,
    /// The bind error (in the message, not a `source`, so that `{:#}` says it once).
    pub cause: std::io::Error,
    /// What to do about it.
    pub fix: &'static str,
}

/// The access token, kept only as an HMAC tag under a key made at start, so that comparing a
/// request's token takes the same time wherever it differs ([`hmac::verify`]).
#[derive(Debug)]
pub struct Access {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl Access {
    /// The check for `token`.
    ///
    /// # Errors
    /// The system's random source failed (no key could be made).
    fn new(token: &Secret) -> Result<Self, ring::error::Unspecified> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())?;
        let tag = hmac::sign(&key, token.expose().as_bytes());
        Ok(Self { key, tag })
    }

    /// Whether `given` is the token.
    fn admits(&self, given: &[u8]) -> bool {
        hmac::verify(&self.key, given, self.tag.as_ref()).is_ok()
    }

    /// The value of a session cookie valid until `now_s` + [`SESSION_TTL`] (Unix seconds):
    /// `<expiry>.<HMAC(key, "session|<expiry>") in hex>`. Stateless: nothing is kept per
    /// session, and a restart (a new key) ends every session.
    fn session(&self, now_s: u64) -> String {
        let expiry = now_s.saturating_add(SESSION_TTL.as_secs());
        let tag = hmac::sign(&self.key, format!("{SESSION_DOMAIN}{expiry}").as_bytes());
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("{expiry}.{hex}")
    }

    /// Whether `value` is a session cookie this console made and that has not expired at
    /// `now_s` (compared in constant time).
    fn admits_session(&self, value: &str, now_s: u64) -> bool {
        let Some((expiry, hex)) = value.split_once('.') else {
            return false;
        };
        let Ok(expiry_s) = expiry.parse::<u64>() else {
            return false;
        };
        if expiry_s <= now_s || expiry_s > now_s.saturating_add(SESSION_TTL.as_secs()) {
            return false;
        }
        let Some(tag) = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
        else {
            return false;
        };
        hmac::verify(
            &self.key,
            format!("{SESSION_DOMAIN}{expiry_s}").as_bytes(),
            &tag,
        )
        .is_ok()
    }
}

/// How long a browser stays signed in to the console after entering the token (a working day
/// on site).
pub const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "anju_session";
/// What a session's HMAC signs before its expiry, so that no other use of the key can make one.
const SESSION_DOMAIN: &str = "anju-console-session|";

/// What every route reads: counters, the spool, when the gateway started, whether the engine
/// runs, and readiness.
#[derive(Debug)]
pub struct ConsoleState {
    metrics: Arc<Metrics>,
    spool: Spools,
    started: Instant,
    engine_running: Arc<AtomicBool>,
    readiness: ready::Readiness,
    access: Option<Access>,
    /// The site and this gateway, as the pages name them.
    identity: Identity,
    /// The engine's latest snapshot for the pages.
    view: ViewRx,
    /// Where acknowledgements go (the engine); `None`: the pages offer none.
    commands: Option<CommandTx>,
    /// The local history behind the curves and the alert history; `None`: none is kept.
    history: Option<Arc<History>>,
    /// Where the daily reports are kept (`data_dir`).
    data_dir: std::path::PathBuf,
    /// Writes to writable Modbus points (`POST /write`, `gateway write`); `None`: refused.
    writers: Option<crate::sources::modbus::write::BusWriters>,
}

/// The site and the gateway a console belongs to (`site`, `gateway_id`), and what its config
/// does.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The site.
    pub site: String,
    /// This gateway.
    pub gateway: String,
    /// The effective configuration as `gateway check` prints it (devices, channels, read
    /// plans, rules with the channels they match; secrets never appear in it).
    pub config_text: String,
}

impl ConsoleState {
    /// The state of a gateway with these sinks; `engine_running` is set while the engine task
    /// runs.
    #[must_use]
    pub fn new(
        metrics: Arc<Metrics>,
        spool: Spools,
        sinks: &[Sink],
        engine_running: Arc<AtomicBool>,
    ) -> Self {
        Self {
            metrics,
            spool,
            started: Instant::now(),
            engine_running,
            readiness: ready::Readiness::new(sinks),
            access: None,
            identity: Identity::default(),
            view: crate::engine::view::channel().1,
            commands: None,
            history: None,
            data_dir: std::path::PathBuf::new(),
            writers: None,
        }
    }

    /// Take writes to writable Modbus points (`POST /write`) through `writers`.
    #[must_use]
    pub fn with_writers(mut self, writers: crate::sources::modbus::write::BusWriters) -> Self {
        self.writers = Some(writers);
        self
    }

    /// Name the site and gateway on the pages, show the engine's snapshots from `view`, and
    /// send acknowledgements to `commands`.
    #[must_use]
    pub fn with_pages(mut self, identity: Identity, view: ViewRx, commands: CommandTx) -> Self {
        self.identity = identity;
        self.view = view;
        self.commands = Some(commands);
        self
    }

    /// Count the uptime it shows from `started` (the gateway's start, when a config reload
    /// restarts the console).
    #[must_use]
    pub fn started_at(mut self, started: Instant) -> Self {
        self.started = started;
        self
    }

    /// Draw curves and the alert history from `history`; keep and show daily reports in
    /// `data_dir`.
    #[must_use]
    pub fn with_history(
        mut self,
        history: Option<Arc<History>>,
        data_dir: std::path::PathBuf,
    ) -> Self {
        self.history = history;
        self.data_dir = data_dir;
        self
    }

    /// The spool's counts, read off the runtime's worker threads (they take the spool's lock).
    async fn spool_stats(&self) -> SpoolStats {
        let spool = self.spool.clone();
        crate::supervise::spawn_blocking(move || spool.stats())
            .await
            .unwrap_or_default()
    }

    /// Readiness now; the reasons when not ready.
    async fn readiness(&self) -> Result<(), Vec<String>> {
        let spool = self.spool_stats().await;
        self.readiness.check(
            self.engine_running.load(Ordering::Relaxed),
            &spool,
            &self.metrics,
            Instant::now(),
        )
    }
}

/// A bound console, ready to serve.
#[derive(Debug)]
pub struct Console {
    listener: TcpListener,
    state: Arc<ConsoleState>,
}

impl Console {
    /// Bind `settings.listen` for `state` (the token from `settings`).
    ///
    /// # Errors
    /// The address cannot be bound (in use, not this machine's, a privileged port) or no key
    /// for the token check could be made; the message names the address and the fix.
    pub async fn bind(
        settings: &ConsoleSettings,
        mut state: ConsoleState,
    ) -> Result<Self, ConsoleError> {
        let addr = settings.listen;
        if let Some(token) = &settings.token {
            state.access = Some(Access::new(token).map_err(|_| ConsoleError {
                addr,
                cause: std::io::Error::other("the system's random source failed"),
                fix: "the token check needs a random key; check the system's entropy source",
            })?);
        }
        let listener = TcpListener::bind(addr).await.map_err(|cause| {
            let fix = match cause.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "another program (or another gateway) uses this port: stop it, or set [console] listen to a free port, or enabled = false"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need privileges: use a port above 1024 (e.g. 8080)"
                }
                _ => "check that the address is one of this machine's, or set [console] listen to 127.0.0.1:8080",
            };
            ConsoleError { addr, cause, fix }
        })?;
        Ok(Self {
            listener,
            state: Arc::new(state),
        })
    }

    /// The address actually bound (port 0 resolved).
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `stop`, sampling readiness every [`ready::READINESS_SAMPLE_INTERVAL`] so that
    /// a sink's stall is timed from when it began.
    pub async fn run(self, stop: CancellationToken) {
        let addr = self
            .listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        info!(listen = %addr, token = self.state.access.is_some(), "Console listening (overview /, /config, /metrics, /healthz, /readyz).");
        let state = Arc::clone(&self.state);
        let sampler_stop = stop.clone();
        let sampler = async move {
            let mut every = tokio::time::interval(ready::READINESS_SAMPLE_INTERVAL);
            loop {
                tokio::select! {
                    () = sampler_stop.cancelled() => return,
                    _ = every.tick() => {
                        // The result is kept in `Readiness`; a request reads it with fresh stats.
                        let _ = state.readiness().await;
                    }
                }
            }
        };
        let server = axum::serve(self.listener, router::router(self.state))
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future();
        // A client that keeps a request open must not hold up the gateway's exit.
        let grace_over = async {
            stop.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let serving = async {
            tokio::select! {
                served = server => if let Err(e) = served {
                    warn!(listen = %addr, error = %e, "Console stopped with an error.");
                },
                () = grace_over => warn!(listen = %addr, grace = ?SHUTDOWN_GRACE,
                    "Console requests still open after the stop; leaving them."),
            }
        };
        tokio::join!(serving, sampler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(dir: &std::path::Path) -> ConsoleState {
        state_with_engine(dir, true)
    }

    fn state_with_engine(dir: &std::path::Path, engine_running: bool) -> ConsoleState {
        let spool = crate::spool::Spool::open(
            &dir.join("spool.redb"),
            &crate::spool::SpoolConfig::default(),
            &[],
        )
        .expect("spool");
        ConsoleState::new(
            Arc::new(Metrics::new()),
            Spools::single(Arc::new(spool)),
            &[],
            Arc::new(AtomicBool::new(engine_running)),
        )
    }

    #[tokio::test]
    async fn console_readyz_is_503_with_the_reason_while_healthz_stays_200() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = ConsoleSettings {
            listen: "127.0.0.1:0".parse().expect("addr"),
            token: None,
            history: None,
            report: None,
        };
        let console = Console::bind(&settings, state_with_engine(dir.path(), false))
            .await
            .expect("binds");
        let base = format!("http://{}", console.local_addr().expect("addr"));
        let stop = CancellationToken::new();
        let served = tokio::spawn(console.run(stop.clone()));
        let http = reqwest::Client::new();
        let ready = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("answers");
        assert_eq!(ready.status(), 503);
        assert_eq!(ready.text().await.expect("body"), "engine not running\n");
        let health = http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("answers");
        assert_eq!(health.status(), 200);
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(10), served)
            .await
            .expect("stops when told")
            .expect("no panic");
    }

    #[tokio::test]
    async fn console_port_in_use_is_a_start_error_naming_the_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let settings = ConsoleSettings {
            listen: addr,
            token: None,
            history: None,
            report: None,
        };
        let e = Console::bind(&settings, state(dir.path()))
            .await
            .expect_err("in use");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("console: cannot listen on {addr}: ")),
            "{text}"
        );
        assert!(
            text.contains("another program (or another gateway) uses this port"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn console_stops_within_its_grace_while_a_client_holds_a_request_open() {
        use tokio::io::AsyncWriteExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = ConsoleSettings {
            listen: "127.0.0.1:0".parse().expect("addr"),
            token: None,
            history: None,
            report: None,
        };
        let console = Console::bind(&settings, state(dir.path()))
            .await
            .expect("binds");
        let addr = console.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let served = tokio::spawn(console.run(stop.clone()));
        let mut slow = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("writes");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stop.cancel();
        tokio::time::timeout(SHUTDOWN_GRACE * 3, served)
            .await
            .expect("stops despite the open request")
            .expect("no panic");
    }

    #[test]
    fn console_access_admits_only_the_token() {
        let access = Access::new(&Secret::new("s3cret")).expect("key");
        assert!(access.admits(b"s3cret"));
        assert!(!access.admits(b"s3cre"));
        assert!(!access.admits(b"s3cret "));
        assert!(!access.admits(b""));
    }

    #[test]
    fn a_session_cookie_is_admitted_until_it_expires_and_cannot_be_forged() {
        let access = Access::new(&Secret::new("s3cret")).expect("key");
        let now = 1_767_225_600;
        let cookie = access.session(now);
        assert!(access.admits_session(&cookie, now));
        assert!(access.admits_session(&cookie, now + SESSION_TTL.as_secs() - 1));
        assert!(!access.admits_session(&cookie, now + SESSION_TTL.as_secs()));
        // Another expiry with the same tag, a flipped digit, another console's key: refused.
        let (expiry, tag) = cookie.split_once('.').expect("form");
        let later: u64 = expiry.parse::<u64>().expect("expiry") + 3600;
        assert!(!access.admits_session(&format!("{later}.{tag}"), now));
        let flipped = format!("{expiry}.{}0", &tag[..tag.len() - 1]);
        assert!(flipped == cookie || !access.admits_session(&flipped, now));
        let other = Access::new(&Secret::new("s3cret")).expect("key");
        assert!(!other.admits_session(&cookie, now));
        for junk in [
            "",
            ".",
            "x.y",
            "99999999999999999999.00",
            &format!("{expiry}.zz"),
        ] {
            assert!(!access.admits_session(junk, now), "{junk}");
        }
    }
}
