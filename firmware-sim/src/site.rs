//! A running simulated site: every device of a scenario served, sampled and recorded.
//!
//! Owns start-up (listeners, serial lines, pty pairs, the MQTT connections), the sample ticks
//! (sample `k` is taken at `t0 + k × sample_interval`, whole Unix seconds, `t0` the second the
//! site started; sample 0 is taken before [`Site::start`] returns), the fault schedule (each
//! tick opens and closes the scenario's fault windows in the truth, and turns devices off and
//! on for `offline` faults) and shutdown. Every tick also records the true value of every physics
//! channel. Values come from [`crate::device`] and [`crate::nodes`]; transports from
//! [`crate::tcp`], [`crate::rtu`], [`crate::mqtt`].
//!
//! MQTT connections: nodes without a last will share one connection; each node with a will has
//! its own (a will belongs to a connection), which an `offline` fault drops abruptly so the
//! broker publishes the will, and restores when the fault ends.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_serial::SerialStream;
use tokio_util::sync::CancellationToken;

use crate::clock::{ClockMode, SimClock, Tick, NANOS_PER_SEC};
use crate::device::{DeviceSetup, ModbusDevice, SampleStamp};
use crate::fault::{Action, FaultSpec};
use crate::mqtt::{self, Connection, PublishStats, Publisher};
use crate::nodes::{CigemSim, JsonNodeSim, NodeSetup};
use crate::physics::Physics;
use crate::profile::Profile;
use crate::pty::{PtyError, PtyPair};
use crate::rtu;
use crate::scenario::{Scenario, StatusPoints};
use crate::sensor::ChannelRef;
use crate::tcp;
use crate::truth::{ChannelSample, FaultKind, FaultRecord, Truth, TruthError};

/// Numbers the default pty directories of the sites of this process.
static SITE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Options of [`Site::start`]. `Default` = real time, no MQTT, scenario seed and ttys.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Broker for the MQTT nodes; `None` = their messages are dropped (no truth for them).
    pub mqtt_broker: Option<SocketAddr>,
    /// MQTT client id; default `anju-sim-<scenario>-<pid>-<n>` (n numbers the sites of a process).
    pub mqtt_client_id: Option<String>,
    /// Serial device per bus name, overriding the scenario's `tty`.
    pub rtu_paths: HashMap<String, PathBuf>,
    /// Where pty pairs are made for buses without a tty (`<dir>/<bus>/{sim,gw}`); default
    /// `<temp>/anju-sim-<pid>-<n>`.
    pub pty_dir: Option<PathBuf>,
    /// How ticks are driven.
    pub clock: ClockMode,
    /// Overrides the scenario seed.
    pub seed: Option<u64>,
    /// Also stream the truth as JSON lines to this file.
    pub truth_file: Option<PathBuf>,
}

/// Errors starting or controlling a site.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// A Modbus TCP listener could not be bound.
    #[error("modbus tcp device {device}: cannot listen on {addr}: {source}")]
    Bind {
        /// Device name.
        device: String,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A pty pair could not be made for a bus.
    #[error("rtu bus {bus}: {source}")]
    Pty {
        /// Bus name.
        bus: String,
        /// Cause.
        source: PtyError,
    },
    /// A serial device could not be opened.
    #[error("rtu bus {bus}: cannot open {}: {source}", path.display())]
    Serial {
        /// Bus name.
        bus: String,
        /// Device path.
        path: PathBuf,
        /// Cause.
        source: tokio_serial::Error,
    },
    /// The truth file could not be created.
    #[error(transparent)]
    Truth(#[from] TruthError),
    /// No device of that name in the scenario.
    #[error("no device {0:?} in this site")]
    UnknownDevice(String),
}

/// Where an RTU bus is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtuEndpoint {
    /// The serial device the simulator serves on.
    pub sim_path: PathBuf,
    /// The other end of the simulator's own pty pair, for the gateway (`None` for a tty given
    /// by the scenario or the caller).
    pub gateway_path: Option<PathBuf>,
}

/// Where a scheduled fault stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    /// Not started yet.
    Pending,
    /// Recorded as open.
    Open,
    /// Recorded with its end.
    Closed,
}

/// What [`Sampler::tick`] guards: the next index and the state of every scheduled fault.
#[derive(Debug)]
struct TickState {
    next: u64,
    windows: Vec<Window>,
}

/// Takes samples: one lock serialises ticks so sample indices are consecutive.
#[derive(Debug)]
struct Sampler {
    t0_s: i64,
    interval_s: i64,
    physics: Arc<Physics>,
    faults: Vec<FaultSpec>,
    modbus: Vec<Arc<ModbusDevice>>,
    /// JSON nodes with the index of their publisher.
    json: Vec<(JsonNodeSim, Option<usize>)>,
    /// CIGEM devices with the index of their publisher.
    cigem: Vec<(CigemSim, Option<usize>)>,
    publishers: Vec<Publisher>,
    stats: Option<Arc<PublishStats>>,
    truth: Arc<Truth>,
    state: Mutex<TickState>,
}

impl Sampler {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, TickState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn time_of(&self, k: u64) -> i64 {
        let k = i64::try_from(k).unwrap_or(i64::MAX);
        self.t0_s.saturating_add(k.saturating_mul(self.interval_s))
    }

    fn next_index(&self) -> u64 {
        self.lock_state().next
    }

    /// UTC ns of `rel` after the scenario start.
    fn abs_ns(&self, rel: Duration) -> i64 {
        let rel = i64::try_from(rel.as_nanos()).unwrap_or(i64::MAX);
        self.t0_s.saturating_mul(NANOS_PER_SEC).saturating_add(rel)
    }

    /// Turns a device (or node) off or on: Modbus silent, node silent, a will node's
    /// connection dropped. Returns the previous state, `None` for an unknown name.
    fn set_online(&self, device: &str, online: bool) -> Option<bool> {
        if let Some(d) = self.modbus.iter().find(|d| d.name() == device) {
            return Some(d.set_online(online));
        }
        let (previous, publisher) =
            if let Some((n, p)) = self.json.iter().find(|(n, _)| n.name() == device) {
                (n.set_online(online), *p)
            } else if let Some((c, p)) = self.cigem.iter().find(|(c, _)| c.name() == device) {
                (c.set_online(online), *p)
            } else {
                return None;
            };
        // Only a node with a will has a connection of its own to drop (index ≥ 1 when a shared
        // connection exists, see `Site::start`).
        if let Some(p) = publisher.and_then(|i| self.publishers.get(i)) {
            if previous != online && self.is_own_connection(publisher) {
                p.set_connected(online);
            }
        }
        Some(previous)
    }

    /// True when publisher `p` serves one node alone (a will node).
    fn is_own_connection(&self, p: Option<usize>) -> bool {
        let Some(p) = p else { return false };
        let users = self.json.iter().filter(|(_, q)| *q == Some(p)).count()
            + self.cigem.iter().filter(|(_, q)| *q == Some(p)).count();
        let will = self.json.iter().any(|(n, q)| *q == Some(p) && n.has_will())
            || self
                .cigem
                .iter()
                .any(|(c, q)| *q == Some(p) && c.has_will());
        users == 1 && will
    }

    /// Opens and closes the fault windows reached by `tick`, turning devices off and on.
    fn schedule(&self, tick: Tick, windows: &mut [Window]) {
        let now = Duration::from_secs(tick.rel_s.unsigned_abs());
        for (f, w) in self.faults.iter().zip(windows.iter_mut()) {
            if *w == Window::Pending && now >= f.start {
                *w = Window::Open;
                self.truth.open_fault(FaultRecord {
                    device: f.device.clone(),
                    point: f.point.clone(),
                    kind: f.kind(),
                    start_ns: self.abs_ns(f.start),
                    end_ns: None,
                    param: f.param(),
                });
                if f.action == Action::Offline {
                    self.set_online(&f.device, false);
                }
                tracing::info!(device = %f.device, kind = %f.kind(), "fault starts");
            }
            if *w == Window::Open {
                if let Some(end) = f.end.filter(|e| now >= *e) {
                    *w = Window::Closed;
                    self.truth.close_fault(
                        &f.device,
                        f.point.as_deref(),
                        f.kind(),
                        self.abs_ns(end),
                    );
                    if f.action == Action::Offline {
                        self.set_online(&f.device, true);
                    }
                    tracing::info!(device = %f.device, kind = %f.kind(), "fault ends");
                }
            }
        }
    }

    fn tick(&self) -> SampleStamp {
        let mut state = self.lock_state();
        let index = state.next;
        let tick = Tick {
            index,
            rel_s: i64::try_from(index)
                .unwrap_or(i64::MAX)
                .saturating_mul(self.interval_s),
            unix_s: self.time_of(index),
        };
        self.schedule(tick, &mut state.windows);
        if !self.physics.is_empty() {
            #[allow(clippy::cast_precision_loss)] // seconds since the start ≪ 2^53
            let t = tick.rel_s as f64;
            let ts_ns = tick.unix_s.saturating_mul(NANOS_PER_SEC);
            self.truth
                .record_channels(self.physics.channel_ids().map(|id| ChannelSample {
                    channel: self.physics.name_of(id).to_owned(),
                    ts_ns,
                    value: self.physics.value(id, t),
                }));
        }
        for d in &self.modbus {
            self.truth.record(d.sample(tick));
        }
        let messages = self
            .json
            .iter()
            .map(|(n, p)| (n.messages(tick), *p))
            .chain(self.cigem.iter().map(|(c, p)| (c.messages(tick), *p)));
        for (msgs, p) in messages {
            // Without a broker the messages are dropped and never become truth.
            if let Some(publisher) = p.and_then(|i| self.publishers.get(i)) {
                for m in msgs {
                    publisher.send(m);
                }
            }
        }
        state.next += 1;
        SampleStamp {
            index,
            unix_s: tick.unix_s,
        }
    }
}

/// Entry point: `Site::start(&scenario, options)`.
#[derive(Debug, Clone, Copy)]
pub struct Site;

/// A site being simulated. Dropping it stops everything (tasks aborted, socat killed);
/// [`RunningSite::shutdown`] does the same and waits for the tasks to end.
#[derive(Debug)]
pub struct RunningSite {
    name: String,
    interval: Duration,
    clock: SimClock,
    sampler: Arc<Sampler>,
    tcp: BTreeMap<String, SocketAddr>,
    rtu: BTreeMap<String, RtuEndpoint>,
    ptys: Vec<PtyPair>,
    /// Directories made for pty pairs, innermost first; removed (if empty) at the end.
    made_dirs: Vec<PathBuf>,
    truth: Arc<Truth>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl Site {
    /// Starts every device of `scenario`. Must be called inside a tokio runtime (multi-thread
    /// or current-thread). Sample 0 is in the registers and the truth when this returns.
    ///
    /// Order: the truth file, the Modbus TCP listeners (all bound first, so a port clash fails
    /// start-up cleanly), the RTU buses, the MQTT nodes and their connections, sample 0, then
    /// the serving tasks and the tick task.
    ///
    /// # Errors
    /// A listener, serial device, pty pair or the truth file could not be set up.
    pub async fn start(
        scenario: &Scenario,
        options: StartOptions,
    ) -> Result<RunningSite, SiteError> {
        let site_no = SITE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let truth = Arc::new(match &options.truth_file {
            Some(path) => Truth::with_jsonl(path)?,
            None => Truth::new(),
        });
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let speed = match options.clock {
            ClockMode::Realtime { speed } => speed,
            ClockMode::Manual => 1,
        };
        let clock = SimClock::start(speed);
        let builder = Builder {
            scenario,
            seed: options.seed.unwrap_or(scenario.seed),
            interval_s: i64::try_from(scenario.sample_interval.as_secs())
                .unwrap_or(1)
                .max(1),
        };

        let tcp = start_tcp(scenario, &builder).await?;
        // The default root is unique per site, so sites started side by side (parallel tests)
        // never share a link (nor, in `start_nodes`, an MQTT client id).
        let pty_root = options.pty_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("anju-sim-{}-{site_no}", std::process::id()))
        });
        let rtu = start_rtu(scenario, &options, &pty_root, &builder).await?;
        let nodes = start_nodes(&builder, &options, site_no, &truth, &cancel, &mut tasks);

        let modbus = tcp
            .listeners
            .iter()
            .map(|(_, device)| Arc::clone(device))
            .chain(rtu.devices)
            .collect();
        let sampler = Arc::new(Sampler {
            t0_s: clock.now_ns().div_euclid(NANOS_PER_SEC),
            interval_s: builder.interval_s,
            physics: Arc::clone(&scenario.physics),
            faults: scenario.faults.clone(),
            modbus,
            json: nodes.json,
            cigem: nodes.cigem,
            publishers: nodes.publishers,
            stats: nodes.stats,
            truth: Arc::clone(&truth),
            state: Mutex::new(TickState {
                next: 0,
                windows: vec![Window::Pending; scenario.faults.len()],
            }),
        });
        // Sample 0 before anything answers, so no read ever sees an empty image.
        sampler.tick();

        for (listener, device) in tcp.listeners {
            tasks.spawn(tcp::serve(listener, device));
        }
        for (bus, port) in rtu.ports {
            tasks.spawn(rtu::serve(bus, port));
        }
        if let ClockMode::Realtime { .. } = options.clock {
            tasks.spawn(run_ticks(Arc::clone(&sampler), clock, cancel.clone()));
        }

        let mut made_dirs = rtu.made_dirs;
        if options.pty_dir.is_none() && !made_dirs.is_empty() {
            made_dirs.push(pty_root);
        }
        Ok(RunningSite {
            name: scenario.name.clone(),
            interval: scenario.sample_interval,
            clock,
            sampler,
            tcp: tcp.addrs,
            rtu: rtu.endpoints,
            ptys: rtu.ptys,
            made_dirs,
            truth,
            cancel,
            tasks,
        })
    }
}

/// What every simulated device and node of a site is built from.
#[derive(Debug, Clone, Copy)]
struct Builder<'a> {
    scenario: &'a Scenario,
    /// The seed in force (the scenario's, or the caller's override).
    seed: u64,
    /// Seconds between samples (at least 1).
    interval_s: i64,
}

impl Builder<'_> {
    /// The scenario's faults aimed at `device`.
    fn faults_of(&self, device: &str) -> Vec<FaultSpec> {
        self.scenario
            .faults
            .iter()
            .filter(|f| f.device == device)
            .cloned()
            .collect()
    }

    /// A Modbus slave (TCP or RTU).
    fn modbus(
        &self,
        name: &str,
        unit: u8,
        profile: &Profile,
        strict_map: bool,
        status_points: StatusPoints,
        channels: &BTreeMap<String, ChannelRef>,
    ) -> Arc<ModbusDevice> {
        Arc::new(ModbusDevice::build(DeviceSetup {
            name,
            unit,
            profile,
            strict_map,
            seed: self.seed,
            status_points,
            channels,
            faults: self.faults_of(name),
            physics: Arc::clone(&self.scenario.physics),
            interval_s: self.interval_s,
        }))
    }

    /// The setup of an MQTT node (JSON node or CIGEM device).
    fn node(&self, name: &str) -> NodeSetup {
        NodeSetup {
            seed: self.seed,
            site: self.scenario.site.clone(),
            physics: Arc::clone(&self.scenario.physics),
            interval_s: self.interval_s,
            faults: self.faults_of(name),
        }
    }
}

/// The Modbus TCP slaves, bound but not serving yet.
struct TcpStarted {
    /// The bound address of each slave.
    addrs: BTreeMap<String, SocketAddr>,
    /// Each listener with its device, in scenario order.
    listeners: Vec<(TcpListener, Arc<ModbusDevice>)>,
}

/// Builds every Modbus TCP slave and binds its listener.
async fn start_tcp(scenario: &Scenario, builder: &Builder<'_>) -> Result<TcpStarted, SiteError> {
    let mut addrs = BTreeMap::new();
    let mut listeners = Vec::new();
    for slave in &scenario.modbus_tcp {
        let device = builder.modbus(
            &slave.name,
            slave.unit,
            &slave.profile,
            slave.strict_map,
            slave.status_points,
            &slave.channels,
        );
        let listener = tcp::bind(slave.listen)
            .await
            .map_err(|source| SiteError::Bind {
                device: slave.name.clone(),
                addr: slave.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SiteError::Bind {
            device: slave.name.clone(),
            addr: slave.listen,
            source,
        })?;
        addrs.insert(slave.name.clone(), addr);
        listeners.push((listener, device));
    }
    Ok(TcpStarted { addrs, listeners })
}

/// The Modbus RTU buses, their serial devices open but not serving yet.
struct RtuStarted {
    /// Where each bus is served.
    endpoints: BTreeMap<String, RtuEndpoint>,
    /// The pty pairs made for buses without a tty (socat is killed when they drop).
    ptys: Vec<PtyPair>,
    /// Each bus with its open serial device.
    ports: Vec<(rtu::Bus, SerialStream)>,
    /// Every slave of every bus, in scenario order.
    devices: Vec<Arc<ModbusDevice>>,
    /// The pty directories made, one per bus without a tty.
    made_dirs: Vec<PathBuf>,
}

/// Builds every RTU slave and opens each bus's serial device: the caller's path for the bus,
/// else the scenario's `tty`, else a pty pair made under `pty_root`.
async fn start_rtu(
    scenario: &Scenario,
    options: &StartOptions,
    pty_root: &Path,
    builder: &Builder<'_>,
) -> Result<RtuStarted, SiteError> {
    let mut started = RtuStarted {
        endpoints: BTreeMap::new(),
        ptys: Vec::new(),
        ports: Vec::new(),
        devices: Vec::new(),
        made_dirs: Vec::new(),
    };
    for bus in &scenario.modbus_rtu {
        let devices: Vec<Arc<ModbusDevice>> = bus
            .slaves
            .iter()
            .map(|s| {
                builder.modbus(
                    &s.name,
                    s.unit,
                    &s.profile,
                    s.strict_map,
                    s.status_points,
                    &s.channels,
                )
            })
            .collect();
        started.devices.extend(devices.iter().cloned());
        let given = options
            .rtu_paths
            .get(&bus.name)
            .cloned()
            .or_else(|| bus.tty.clone());
        let endpoint = if let Some(path) = given {
            RtuEndpoint {
                sim_path: path,
                gateway_path: None,
            }
        } else {
            let dir = pty_root.join(&bus.name);
            started.made_dirs.push(dir.clone());
            let pair = spawn_pty(dir).await.map_err(|source| SiteError::Pty {
                bus: bus.name.clone(),
                source,
            })?;
            let endpoint = RtuEndpoint {
                sim_path: pair.sim_path().to_path_buf(),
                gateway_path: Some(pair.gateway_path().to_path_buf()),
            };
            started.ptys.push(pair);
            endpoint
        };
        let port = rtu::open(&endpoint.sim_path, bus.baud).map_err(|source| SiteError::Serial {
            bus: bus.name.clone(),
            path: endpoint.sim_path.clone(),
            source,
        })?;
        started
            .ports
            .push((rtu::Bus::new(&bus.name, bus.baud, devices), port));
        started.endpoints.insert(bus.name.clone(), endpoint);
    }
    Ok(started)
}

/// The MQTT nodes, each with the index of its publisher (`None` without a broker).
struct NodesStarted {
    json: Vec<(JsonNodeSim, Option<usize>)>,
    cigem: Vec<(CigemSim, Option<usize>)>,
    publishers: Vec<Publisher>,
    /// Shared by every connection; `None` when there is none.
    stats: Option<Arc<PublishStats>>,
}

/// Builds the MQTT nodes and starts their connections on `tasks`.
///
/// MQTT nodes publish only with a broker: one shared connection for the nodes without a last
/// will, one of their own for the others. The nodes run even without a broker (their state,
/// e.g. rain totals, stays the same); their messages are then dropped and never become truth.
fn start_nodes(
    builder: &Builder<'_>,
    options: &StartOptions,
    site_no: u64,
    truth: &Arc<Truth>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> NodesStarted {
    let scenario = builder.scenario;
    let base_id = options.mqtt_client_id.clone().unwrap_or_else(|| {
        format!(
            "anju-sim-{}-{}-{site_no}",
            scenario.name,
            std::process::id()
        )
    });
    let mut publishers = Vec::new();
    let mut stats = None;
    let mut shared = None;
    let mut connect = |name: Option<&str>, will| {
        let broker = options.mqtt_broker?;
        let stats = Arc::clone(stats.get_or_insert_with(|| Arc::new(PublishStats::default())));
        let client_id = match name {
            Some(n) => format!("{base_id}-{n}"),
            None => base_id.clone(),
        };
        publishers.push(mqtt::start(
            Connection {
                broker,
                client_id: &client_id,
                will,
            },
            Arc::clone(truth),
            stats,
            cancel,
            tasks,
        ));
        Some(publishers.len() - 1)
    };
    let mut json = Vec::with_capacity(scenario.json_nodes.len());
    for n in &scenario.json_nodes {
        let p = match &n.will {
            Some(w) => connect(Some(&n.name), Some(w)),
            None => *shared.get_or_insert_with(|| connect(None, None)),
        };
        json.push((JsonNodeSim::build(n, &builder.node(&n.name)), p));
    }
    let mut cigem = Vec::with_capacity(scenario.cigem.len());
    for c in &scenario.cigem {
        let p = match &c.will {
            Some(w) => connect(Some(&c.device_id), Some(w)),
            None => *shared.get_or_insert_with(|| connect(None, None)),
        };
        cigem.push((CigemSim::build(c, &builder.node(&c.device_id)), p));
    }
    NodesStarted {
        json,
        cigem,
        publishers,
        stats,
    }
}

/// socat start-up polls the file system; keep it off the async worker.
async fn spawn_pty(dir: PathBuf) -> Result<PtyPair, PtyError> {
    match tokio::task::spawn_blocking(move || PtyPair::spawn(&dir)).await {
        Ok(r) => r,
        Err(e) => Err(PtyError::Spawn(std::io::Error::other(e))),
    }
}

/// Fires ticks when the simulated clock reaches each sample time.
async fn run_ticks(sampler: Arc<Sampler>, clock: SimClock, cancel: CancellationToken) {
    loop {
        let due = clock.instant_at(
            sampler
                .time_of(sampler.next_index())
                .saturating_mul(NANOS_PER_SEC),
        );
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(due) => {
                sampler.tick();
            }
        }
    }
}

impl RunningSite {
    /// Scenario name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Time between sample ticks (simulated time).
    #[must_use]
    pub const fn sample_interval(&self) -> Duration {
        self.interval
    }

    /// Address a Modbus TCP device listens on.
    #[must_use]
    pub fn tcp_addr(&self, device: &str) -> Option<SocketAddr> {
        self.tcp.get(device).copied()
    }

    /// Every Modbus TCP device and its address, by name.
    #[must_use]
    pub fn tcp_addrs(&self) -> &BTreeMap<String, SocketAddr> {
        &self.tcp
    }

    /// Where an RTU bus is served.
    #[must_use]
    pub fn rtu_endpoint(&self, bus: &str) -> Option<&RtuEndpoint> {
        self.rtu.get(bus)
    }

    /// Every RTU bus and its endpoint, by name.
    #[must_use]
    pub fn rtu_endpoints(&self) -> &BTreeMap<String, RtuEndpoint> {
        &self.rtu
    }

    /// The truth (shared; keeps growing while the site runs).
    #[must_use]
    pub fn truth(&self) -> Arc<Truth> {
        Arc::clone(&self.truth)
    }

    /// MQTT publisher counters (all connections together), if MQTT runs.
    #[must_use]
    pub fn mqtt_stats(&self) -> Option<&PublishStats> {
        self.sampler.stats.as_deref()
    }

    /// The scenario's physics (to compare the truth with the formulas).
    #[must_use]
    pub fn physics(&self) -> Arc<Physics> {
        Arc::clone(&self.sampler.physics)
    }

    /// The UTC second of sample 0 (the scenario's t = 0 on the simulated clock).
    #[must_use]
    pub fn start_unix_s(&self) -> i64 {
        self.sampler.t0_s
    }

    /// The tokio instant at which the simulated clock is `rel` past the scenario start (for a
    /// run of a given simulated length; in [`ClockMode::Manual`] the clock is the wall clock).
    #[must_use]
    pub fn instant_after(&self, rel: Duration) -> tokio::time::Instant {
        self.clock.instant_at(self.sampler.abs_ns(rel))
    }

    /// The simulated clock now, UTC ns.
    #[must_use]
    pub fn now_ns(&self) -> i64 {
        self.clock.now_ns()
    }

    /// The sample index and time the next tick will take.
    #[must_use]
    pub fn next_sample(&self) -> SampleStamp {
        let index = self.sampler.next_index();
        SampleStamp {
            index,
            unix_s: self.sampler.time_of(index),
        }
    }

    /// The sample most recently taken (sample 0 is taken at start, so there always is one).
    #[must_use]
    pub fn last_sample(&self) -> SampleStamp {
        let index = self.sampler.next_index().saturating_sub(1);
        SampleStamp {
            index,
            unix_s: self.sampler.time_of(index),
        }
    }

    /// Takes the next sample now (the way to advance a [`ClockMode::Manual`] site; in real
    /// time it just takes the next sample early). Its time stays `t0 + k × interval`.
    pub fn step(&self) -> SampleStamp {
        self.sampler.tick()
    }

    /// What a Modbus device's coil or register holds now (coils as 0/1): the state of a
    /// writable relay or setting ([`ModbusDevice::output`]). `None` for an unknown device or an
    /// address outside its map.
    #[must_use]
    pub fn modbus_output(
        &self,
        device: &str,
        function: crate::profile::Function,
        address: u16,
    ) -> Option<u16> {
        self.sampler
            .modbus
            .iter()
            .find(|d| d.name() == device)
            .and_then(|d| d.output(function, address))
    }

    /// Power-cycles a Modbus device's outputs: its writable coils and registers are 0 again, as
    /// a relay module that lost power comes back ([`ModbusDevice::power_cycle`]).
    ///
    /// # Errors
    /// [`SiteError::UnknownDevice`] if no Modbus device has that name.
    pub fn power_cycle(&self, device: &str) -> Result<(), SiteError> {
        self.sampler
            .modbus
            .iter()
            .find(|d| d.name() == device)
            .ok_or_else(|| SiteError::UnknownDevice(device.to_owned()))?
            .power_cycle();
        Ok(())
    }

    /// Makes a device answer/publish (`true`) or go silent (`false`): Modbus TCP connections
    /// stay open but get no reply, an RTU slave ignores its frames, an MQTT node stops
    /// publishing (a CIGEM rain gauge keeps counting) and a node with a last will loses its
    /// connection (the broker publishes the will). A change opens or closes an
    /// [`FaultKind::Offline`] window in the truth at the simulated time; repeating the current
    /// state changes nothing.
    ///
    /// # Errors
    /// [`SiteError::UnknownDevice`] if no device has that name.
    pub fn set_online(&self, device: &str, online: bool) -> Result<(), SiteError> {
        let previous = self
            .sampler
            .set_online(device, online)
            .ok_or_else(|| SiteError::UnknownDevice(device.to_owned()))?;
        if previous != online {
            let now = self.clock.now_ns();
            if online {
                self.truth.fault_end(device, FaultKind::Offline, now);
            } else {
                self.truth.fault_start(device, FaultKind::Offline, now);
            }
            tracing::info!(device, online, "device state changed");
        }
        Ok(())
    }

    /// Stops everything and waits for the tasks to end; flushes the truth file.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.tasks.shutdown().await;
        self.release();
    }

    /// Kills socat (tasks first, so no bus task sees its line vanish), removes the pty
    /// directories we made, flushes the truth. Idempotent.
    fn release(&mut self) {
        self.ptys.clear();
        for dir in self.made_dirs.drain(..) {
            // remove_dir only removes an empty directory: nothing of anyone else's is lost.
            let _ = std::fs::remove_dir(dir);
        }
        self.truth.flush();
    }
}

impl Drop for RunningSite {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tasks.abort_all();
        self.release();
    }
}
