//! Test harness for the system tests, the demo and the benchmarks: real servers on loopback.
//!
//! Owns starting and stopping a real mosquitto and a real VictoriaMetrics on free 127.0.0.1
//! ports, each in its own temporary directory (either with a TLS listener too, with a
//! certificate of a [`TestCa`] made for the test), and reading back what landed in
//! VictoriaMetrics. It does not fake any server: tests that need a failure a real server cannot
//! produce on demand build their fake locally and say so.
//!
//! The servers are Debian packages (`mosquitto`, `victoria-metrics`, `socat`); `tests/run.sh`
//! installs them when missing. A missing binary is reported with that fix. Headless Chromium
//! ([`Chromium`], Debian's `chromium`) opens the console's pages as a browser would.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

/// Path of the mosquitto binary from Debian's package.
pub const MOSQUITTO_BIN: &str = "/usr/sbin/mosquitto";
/// Path of the VictoriaMetrics binary from Debian's package.
pub const VICTORIA_METRICS_BIN: &str = "/usr/bin/victoria-metrics";
/// How long a server may take to accept connections (measured: mosquitto 0.02 s, VictoriaMetrics
/// 0.17 s; the margin covers a loaded 2-core CI machine).
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// The repository root (for `config/`).
#[must_use]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range
/// ([`anju_gateway::loopback::free_port`]).
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> Result<u16> {
    anju_gateway::loopback::free_port().context("a free port on 127.0.0.1")
}

fn require(bin: &str, package: &str) -> Result<()> {
    if !Path::new(bin).exists() {
        bail!("{bin} not found: run `bash tests/run.sh` (it installs {package}) or `apt-get install -y {package}`");
    }
    Ok(())
}

/// Wait until `addr` accepts a TCP connection, or fail after [`SERVER_START_TIMEOUT`].
///
/// # Errors
/// When the port does not open in time or the child process exited.
pub fn wait_for_port(addr: SocketAddr, child: &mut Child, what: &str) -> Result<()> {
    let deadline = Instant::now() + SERVER_START_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before listening on {addr}");
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on {addr} within {SERVER_START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stop a server gracefully (SIGTERM, so VictoriaMetrics flushes its in-memory buffer and
/// mosquitto saves its persistence file), killing it if it has not exited after 10 s.
fn terminate(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A certificate authority made for one test with rcgen (never checked in), a server
/// certificate it signed for `127.0.0.1` and `localhost`, and a client certificate for the
/// gateway, as PEM files in a temporary directory: what a site's private CA, its broker's or
/// store's certificate and the gateway's own are.
#[derive(Debug)]
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Make the CA and the server certificate.
    ///
    /// # Errors
    /// When a key cannot be generated or a file written.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca_key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "anju test site CA");
        let ca = params.self_signed(&ca_key)?;
        let server_key = rcgen::KeyPair::generate()?;
        let server =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
                .signed_by(&server_key, &ca, &ca_key)?;
        let client_key = rcgen::KeyPair::generate()?;
        let client = rcgen::CertificateParams::new(vec!["gateway.site.test".to_owned()])?
            .signed_by(&client_key, &ca, &ca_key)?;
        std::fs::write(dir.path().join("ca.pem"), ca.pem())?;
        std::fs::write(dir.path().join("server.pem"), server.pem())?;
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem())?;
        std::fs::write(dir.path().join("client.pem"), client.pem())?;
        std::fs::write(dir.path().join("client.key"), client_key.serialize_pem())?;
        // mosquitto drops privileges after reading its config; the directory must stay
        // readable for it (the files hold only a throw-away test key).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(Self { dir })
    }

    /// The CA certificate (what the gateway's `tls.ca_file` names).
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate.
    #[must_use]
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server certificate's key.
    #[must_use]
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// The gateway's client certificate (what `tls.cert_file` names).
    #[must_use]
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client certificate's key (`tls.key_file`).
    #[must_use]
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }
}

/// A real mosquitto broker on a free loopback port, with persistence so that persistent
/// sessions survive a broker restart, and optionally a TLS listener on a second port. Killed
/// on drop.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    /// The TLS listener's port, the certificate and key it serves, and the CA whose client
    /// certificate it requires, if it does.
    tls: Option<(u16, PathBuf, PathBuf, Option<PathBuf>)>,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Start a broker.
    ///
    /// # Errors
    /// When mosquitto is missing or does not start.
    pub fn start() -> Result<Self> {
        require(MOSQUITTO_BIN, "mosquitto")?;
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut m = Self {
            child: None,
            port,
            tls: None,
            dir,
        };
        m.spawn()?;
        Ok(m)
    }

    /// Start a broker with a TLS listener as well, serving `ca`'s server certificate; with
    /// `require_client_cert`, that listener takes only clients with a certificate `ca` signed.
    ///
    /// # Errors
    /// When mosquitto is missing or does not start.
    pub fn start_with_tls(ca: &TestCa, require_client_cert: bool) -> Result<Self> {
        require(MOSQUITTO_BIN, "mosquitto")?;
        let mut m = Self {
            child: None,
            port: free_port()?,
            tls: Some((
                free_port()?,
                ca.cert_file(),
                ca.key_file(),
                require_client_cert.then(|| ca.ca_file()),
            )),
            dir: tempfile::tempdir()?,
        };
        m.spawn()?;
        Ok(m)
    }

    fn spawn(&mut self) -> Result<()> {
        let conf = self.dir.path().join("mosquitto.conf");
        // mosquitto drops privileges to user `mosquitto` when started as root; the directory
        // must be writable for it, hence the permissive mode on this private temp dir.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o777))?;
        }
        let mut text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {dir}/\nautosave_interval 1\n\
             max_queued_messages 1000000\nmax_inflight_messages 1000\nuser root\n",
            port = self.port,
            dir = self.dir.path().display()
        );
        if let Some((port, cert, key, client_ca)) = &self.tls {
            // A second listener, same broker: what arrives on one is delivered on the other.
            text.push_str(&format!(
                "listener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                cert.display(),
                key.display()
            ));
            if let Some(ca) = client_ca {
                text.push_str(&format!(
                    "cafile {}\nrequire_certificate true\n",
                    ca.display()
                ));
            }
        }
        std::fs::write(&conf, text)?;
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log"))?;
        let mut child = Command::new(MOSQUITTO_BIN)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn mosquitto")?;
        wait_for_port(self.addr(), &mut child, "mosquitto")?;
        if let Some(tls) = self.tls_addr() {
            wait_for_port(tls, &mut child, "mosquitto's TLS listener")?;
        }
        self.child = Some(child);
        Ok(())
    }

    /// The broker's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The broker process's id while it runs (the benchmarks read its CPU time).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The TLS listener's address, when started with one.
    #[must_use]
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
            .as_ref()
            .map(|(port, ..)| SocketAddr::from(([127, 0, 0, 1], *port)))
    }

    /// Stop the broker (its persistence file stays).
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
    }

    /// Start it again on the same port.
    ///
    /// # Errors
    /// When it does not come back.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real VictoriaMetrics on a free loopback port. It accepts InfluxDB v2 line-protocol writes at
/// `/api/v2/write`. Killed on drop.
///
/// It runs with `-dedup.minScrapeInterval=1ms`, so a point written twice with the same series and
/// timestamp is stored once, as InfluxDB itself overwrites it (the gateway's delivery is
/// at-least-once by design). VictoriaMetrics stores milliseconds.
#[derive(Debug)]
pub struct VictoriaMetrics {
    child: Option<Child>,
    port: u16,
    /// Certificate and key when it serves https only (`-tls`).
    tls: Option<(PathBuf, PathBuf)>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// One series exported from VictoriaMetrics.
#[derive(Debug, Clone, Deserialize)]
pub struct ExportedSeries {
    /// `__name__` (`<measurement>_<field>`) and the tags.
    pub metric: BTreeMap<String, String>,
    /// Values, in time order.
    pub values: Vec<f64>,
    /// Timestamps in milliseconds.
    pub timestamps: Vec<i64>,
}

impl VictoriaMetrics {
    /// Start a store.
    ///
    /// # Errors
    /// When victoria-metrics is missing or does not start.
    pub fn start() -> Result<Self> {
        require(VICTORIA_METRICS_BIN, "victoria-metrics")?;
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut vm = Self {
            child: None,
            port,
            tls: None,
            dir,
            http,
        };
        vm.spawn()?;
        Ok(vm)
    }

    /// Start a store that serves https only (VictoriaMetrics' own `-tls`), with `ca`'s server
    /// certificate: the store behind a private CA. The harness's own reads trust `ca` alone.
    ///
    /// # Errors
    /// When victoria-metrics is missing or does not start.
    pub fn start_with_tls(ca: &TestCa) -> Result<Self> {
        require(VICTORIA_METRICS_BIN, "victoria-metrics")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
                ca.ca_file(),
            )?)?)
            .build()?;
        let mut vm = Self {
            child: None,
            port: free_port()?,
            tls: Some((ca.cert_file(), ca.key_file())),
            dir: tempfile::tempdir()?,
            http,
        };
        vm.spawn()?;
        Ok(vm)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join("vm.log"))?;
        let mut command = Command::new(VICTORIA_METRICS_BIN);
        if let Some((cert, key)) = &self.tls {
            command
                .arg("-tls")
                .arg(format!("-tlsCertFile={}", cert.display()))
                .arg(format!("-tlsKeyFile={}", key.display()));
        }
        let mut child = command
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!(
                "-storageDataPath={}",
                self.dir.path().join("data").display()
            ))
            .arg("-retentionPeriod=100y")
            .arg("-dedup.minScrapeInterval=1ms")
            .arg("-search.latencyOffset=0s")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn victoria-metrics")?;
        wait_for_port(self.addr(), &mut child, "victoria-metrics")?;
        self.child = Some(child);
        Ok(())
    }

    /// The HTTP address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The store process's id while it runs (the benchmarks read its CPU time).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The base URL for the gateway's InfluxDB sink (`https://` when started with TLS).
    #[must_use]
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    /// Stop the store (data stays on disk).
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
    }

    /// Start it again on the same port and data.
    ///
    /// # Errors
    /// When it does not come back.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Every series whose name matches the regex `name_re`, with all its raw samples.
    ///
    /// # Errors
    /// On HTTP or decoding failure.
    pub async fn export(&self, name_re: &str) -> Result<Vec<ExportedSeries>> {
        self.export_until(name_re, None).await
    }

    /// [`VictoriaMetrics::export`] up to `end_ms` (Unix ms) instead of now: for a simulator
    /// running faster than the wall clock, whose device times lie in the future.
    ///
    /// # Errors
    /// On HTTP or decoding failure.
    pub async fn export_until(
        &self,
        name_re: &str,
        end_ms: Option<i64>,
    ) -> Result<Vec<ExportedSeries>> {
        // Make recently written samples searchable now instead of within ~1 s.
        let _ = self
            .http
            .get(format!("{}/internal/force_flush", self.url()))
            .send()
            .await;
        let mut form = vec![("match[]", format!("{{__name__=~\"{name_re}\"}}"))];
        if let Some(ms) = end_ms {
            // In seconds; without it the export ends now.
            form.push(("end", (ms / 1000 + 1).to_string()));
        }
        let resp = self
            .http
            .post(format!("{}/api/v1/export", self.url()))
            .form(&form)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        resp.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("export line {l}")))
            .collect()
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Install a compact tracing subscriber for tests (once; later calls do nothing). Level from
/// `ANJU_LOG`, default `warn`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ANJU_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        // Test output lands in CI logs and files: no ANSI colour codes.
        .with_ansi(false)
        .try_init();
}

/// The repository's device profiles.
#[must_use]
pub fn profiles_dir() -> PathBuf {
    repo_root().join("config").join("profiles")
}

/// A gateway running in-process on its own tasks, stopped with [`RunningGateway::stop`].
#[derive(Debug)]
pub struct RunningGateway {
    shutdown: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), anju_gateway::run::RunError>>,
    /// The gateway's counters.
    pub metrics: std::sync::Arc<anju_gateway::metrics::Metrics>,
    /// Reloads its config file: the channel SIGHUP goes through in the daemon (`main.rs`), so
    /// a test's reload takes the signal's path from there on.
    pub reloader: anju_gateway::run::Reloader,
}

/// Write `config` to `dir/gateway.toml`, validate it as the daemon would, and run the gateway.
/// A config without a `[console]` section runs without the console (the daemon's default,
/// 127.0.0.1:8080, would collide between gateways of tests running at once); a test of the
/// console writes the section with a free port. A config without a `[console.report]` table
/// makes no daily report by itself: by default one is made at start when it is past 07:30
/// local time, and its notice would be one more alert in every test that counts them, at some
/// hours of the day only. A reload ([`RunningGateway::reloader`]) reads the file as written,
/// with the daemon's defaults: a test that reloads writes both sections.
///
/// # Errors
/// When the config is invalid.
pub fn start_gateway(config: &str, dir: &Path) -> Result<RunningGateway> {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config)?;
    let mut cfg = anju_gateway::config::Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !config.contains("[console]") {
        cfg.console = None;
    }
    if !config.contains("[console.report]") {
        if let Some(console) = cfg.console.as_mut() {
            console.report = None;
        }
    }
    let gw = anju_gateway::run::Gateway::new(cfg);
    let metrics = gw.metrics();
    let reloader = gw.reloader();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(gw.run(shutdown.clone()));
    Ok(RunningGateway {
        shutdown,
        handle,
        metrics,
        reloader,
    })
}

impl RunningGateway {
    /// Shut down as on SIGTERM and wait for it.
    ///
    /// # Errors
    /// When the gateway ended with an error or did not stop within 30 s.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .context("gateway did not stop within 30 s")??
            .map_err(|e| anyhow::anyhow!("gateway failed: {e}"))
    }

    /// Wait (at most 10 s) until every MQTT source of the gateway has connected once, so that
    /// its persistent session exists before a test publishes.
    ///
    /// # Errors
    /// When no connection was made in time.
    pub async fn wait_for_mqtt_session(&self) -> Result<()> {
        wait_until(
            Duration::from_secs(10),
            "the gateway's MQTT session",
            || async {
                self.metrics
                    .total(anju_gateway::metrics::Counter::MqttConnects)
                    > 0
            },
        )
        .await
    }

    /// True while the gateway task runs.
    #[must_use]
    pub fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }
}

/// Poll `check` every 100 ms until it returns true or `limit` passes.
///
/// # Errors
/// When `limit` passes first; the message says what was awaited.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Unix time a minute ago, in milliseconds: the time of readings a test publishes, recent
/// enough for the engine's `max_past` and safely not in the future.
///
/// # Errors
/// When the clock is before 1970 or the value does not fit.
pub fn a_minute_ago_ms() -> Result<i64> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    Ok(i64::try_from(now.as_millis())? - 60_000)
}

/// What landed per channel: `(device, point)` → timestamp (ms) → every value stored there.
pub type Landed = BTreeMap<(String, String), BTreeMap<i64, Vec<f64>>>;

/// Group exported `<measurement>_value` series by device and point.
#[must_use]
pub fn landed(series: &[ExportedSeries]) -> Landed {
    let mut out = Landed::new();
    for s in series {
        let (Some(d), Some(p)) = (s.metric.get("device"), s.metric.get("point")) else {
            continue;
        };
        let per = out.entry((d.clone(), p.clone())).or_default();
        for (t, v) in s.timestamps.iter().zip(&s.values) {
            per.entry(*t).or_default().push(*v);
        }
    }
    out
}

/// A size-limited tmpfs, unmounted on drop: a real full disk for the spool (issue 10 item 6).
/// Mounting needs root (CAP_SYS_ADMIN); where it is refused, [`SmallFs::mount`] says so and the
/// test that asked does not run. The spool's unit tests keep their own copy
/// (`gateway/src/spool/damage_tests.rs`): the gateway crate cannot depend on this harness.
#[derive(Debug)]
pub struct SmallFs {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

/// Largest filler [`SmallFs::fill`] writes: far above the mounts the tests use.
const MAX_FILLER_BYTES: usize = 256 * 1024 * 1024;

impl SmallFs {
    /// Mount a tmpfs of `size` (mount(8) syntax, e.g. `"24m"`); `None`, with a line on stderr
    /// saying the test did not run, where mounting is not permitted.
    ///
    /// # Errors
    /// When the temporary mount point cannot be made.
    pub fn mount(size: &str) -> Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt)?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&mnt)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a {size} tmpfs (needs root); this disk-full test did not run");
            return Ok(None);
        }
        Ok(Some(Self { mnt, _dir: dir }))
    }

    /// The mount point.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Fill the file system with a filler file until the next write fails (ENOSPC); the filler's
    /// path, to be removed when space is to return.
    ///
    /// # Errors
    /// When the filler cannot be created.
    pub fn fill(&self) -> Result<PathBuf> {
        use std::io::Write;
        let path = self.mnt.join("filler");
        let mut f = std::fs::File::create(&path)?;
        let block = vec![0u8; 64 * 1024];
        for _ in 0..MAX_FILLER_BYTES / block.len() {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        Ok(path)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// Path of the browser from Debian's `chromium` package.
pub const CHROMIUM_BIN: &str = "/usr/bin/chromium";
/// Longest a headless Chromium may take for one page (measured: about 1-2 s; the margin covers
/// a loaded 2-core machine and its first start).
pub const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// Headless Chromium, one process per page: `--dump-dom` (the DOM after loading, as a browser
/// built it) and `--screenshot`. Each run has a fresh profile directory, no network beyond
/// the page, no background services.
#[derive(Debug)]
pub struct Chromium {
    bin: PathBuf,
}

impl Chromium {
    /// The installed browser, or `None` (the caller skips, saying so: `tests/run.sh` installs
    /// it from Debian's packages).
    #[must_use]
    pub fn find() -> Option<Self> {
        let bin = PathBuf::from(CHROMIUM_BIN);
        bin.exists().then_some(Self { bin })
    }

    /// Run the browser on `url` with `action` (`--dump-dom` or `--screenshot=<file>`);
    /// its standard output.
    fn run(&self, url: &str, action: &str) -> Result<String> {
        let profile = tempfile::tempdir()?;
        let mut child = Command::new(&self.bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1280,1800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(action)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        // Read both pipes while it runs: a DOM larger than the pipe's buffer (64 KiB) would
        // otherwise block the browser's write and it would never exit.
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_string(&mut text);
                }
                text
            })
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        );
        let deadline = Instant::now() + CHROMIUM_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("chromium took longer than {CHROMIUM_TIMEOUT:?} for {url}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = out.join().unwrap_or_default();
        let err = err.join().unwrap_or_default();
        if !status.success() {
            bail!("chromium {action} {url}: {status}\n{err}");
        }
        Ok(out)
    }

    /// The page's DOM as Chromium built it.
    ///
    /// # Errors
    /// The browser failed or took longer than [`CHROMIUM_TIMEOUT`].
    pub fn dump_dom(&self, url: &str) -> Result<String> {
        let dom = self.run(url, "--dump-dom")?;
        if !dom.contains("<html") {
            bail!("chromium gave no document for {url}: {dom:.200}");
        }
        Ok(dom)
    }

    /// A PNG screenshot of the page at `file`.
    ///
    /// # Errors
    /// The browser failed, took too long, or wrote no image.
    pub fn screenshot(&self, url: &str, file: &Path) -> Result<()> {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        self.run(url, &format!("--screenshot={}", file.display()))?;
        let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        if len == 0 {
            bail!(
                "chromium wrote no screenshot of {url} at {}",
                file.display()
            );
        }
        Ok(())
    }
}

/// Where Debian's `chromium-driver` puts ChromeDriver.
pub const CHROMEDRIVER_BIN: &str = "/usr/bin/chromedriver";
/// Longest a WebDriver command may take (a page load included).
pub const WEBDRIVER_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium driven through ChromeDriver with the W3C WebDriver protocol
/// (https://www.w3.org/TR/webdriver2/): plain HTTP and JSON, so a test can fill a page's form
/// and press its button as a person would. One browser session per value; the driver process
/// is killed when it is dropped.
#[derive(Debug)]
pub struct WebDriver {
    driver: Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
}

impl WebDriver {
    /// Start ChromeDriver on a free loopback port and open a headless session; `None` when
    /// ChromeDriver is not installed (the caller skips, saying so: `tests/run.sh` installs it).
    ///
    /// # Errors
    /// The driver did not start or refused the session.
    pub async fn start() -> Result<Option<Self>> {
        if !Path::new(CHROMEDRIVER_BIN).exists() {
            return Ok(None);
        }
        let port = free_port()?;
        let driver = Command::new(CHROMEDRIVER_BIN)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {CHROMEDRIVER_BIN}"))?;
        let http = reqwest::Client::builder()
            .timeout(WEBDRIVER_TIMEOUT)
            .build()?;
        let base = format!("http://127.0.0.1:{port}");
        wait_until(
            Duration::from_secs(10),
            "chromedriver to listen",
            || async { http.get(format!("{base}/status")).send().await.is_ok() },
        )
        .await?;
        let profile = std::env::temp_dir().join(format!("anju-webdriver-{port}"));
        let caps = serde_json::json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM_BIN,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1280,1800",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let answer: serde_json::Value = serde_json::from_slice(
            &http
                .post(format!("{base}/session"))
                .header("content-type", "application/json")
                .body(caps.to_string())
                .send()
                .await?
                .bytes()
                .await?,
        )?;
        let id = answer["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("chromedriver refused the session: {answer}"))?;
        Ok(Some(Self {
            session: format!("{base}/session/{id}"),
            driver,
            http,
        }))
    }

    /// One command: `POST` with `body`, or `GET` without; its `value`.
    async fn command(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let url = format!("{}{path}", self.session);
        let request = match body {
            Some(b) => self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(b.to_string()),
            None => self.http.get(&url),
        };
        let answer: serde_json::Value =
            serde_json::from_slice(&request.send().await?.bytes().await?)?;
        if let Some(error) = answer["value"]["error"].as_str() {
            bail!("webdriver {path}: {error}: {}", answer["value"]["message"]);
        }
        Ok(answer["value"].clone())
    }

    /// Load `url` and wait for the page.
    ///
    /// # Errors
    /// The driver failed.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.command("/url", Some(serde_json::json!({ "url": url })))
            .await
            .map(drop)
    }

    /// The reference of the first element matching the CSS `selector`.
    async fn element(&self, selector: &str) -> Result<String> {
        let found = self
            .command(
                "/element",
                Some(serde_json::json!({ "using": "css selector", "value": selector })),
            )
            .await?;
        // W3C WebDriver §12.1: the web element identifier.
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no element {selector}: {found}"))
    }

    /// Type `text` into the first element matching `selector`.
    ///
    /// # Errors
    /// No such element, or the driver failed.
    pub async fn type_into(&self, selector: &str, text: &str) -> Result<()> {
        let e = self.element(selector).await?;
        self.command(
            &format!("/element/{e}/value"),
            Some(serde_json::json!({ "text": text })),
        )
        .await
        .map(drop)
    }

    /// Click the first element matching `selector`.
    ///
    /// # Errors
    /// No such element, or the driver failed.
    pub async fn click(&self, selector: &str) -> Result<()> {
        let e = self.element(selector).await?;
        self.command(&format!("/element/{e}/click"), Some(serde_json::json!({})))
            .await
            .map(drop)
    }

    /// The current page's source as the browser holds it.
    ///
    /// # Errors
    /// The driver failed.
    pub async fn source(&self) -> Result<String> {
        let v = self.command("/source", None).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
