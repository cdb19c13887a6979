//! Wiring for `gateway run`: opens the spool, starts the sources, the engine and the sinks,
//! carries out config reloads, and shuts them down in order.
//!
//! Owns start-up order and the order of a reload's stops and starts (docs/ARCHITECTURE.md
//! §Reload); what a reload keeps or refuses is [`crate::reload`], the task tree and shutdown
//! order are [`crate::supervise`], what systemd is told and when is [`crate::systemd`].
//! Shutdown: cancel the sources; each drops its sender; the engine drains the channel, commits
//! the rest to the spool and returns; then the sinks stop (what they have not delivered stays in
//! the spool for the next start); [`Gateway::run`] returns once no task holds the spool or
//! history files any more. A task that ends on its own starts the same shutdown, and
//! [`Gateway::run`] then returns [`RunError::Task`], so the process exits non-zero.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, Sink};
use crate::console::{Console, ConsoleState, Identity};
use crate::engine::{Engine, EngineInputs, Heartbeat};
use crate::metrics::{Counter, Metrics};
use crate::model::Clock;
use crate::reload::{console_config_text, mqtt_task, poller_task, sink_task, Plan, ReloadOutcome};
use crate::sinks::influxdb::{InfluxSink, InfluxSinkError};
use crate::sinks::modbus_output::{ModbusOutputSink, SavedRules};
use crate::sinks::mqtt::{MqttSink, MqttSinkError};
use crate::sinks::webhook::{WebhookSink, WebhookSinkError};
use crate::sources::modbus::poller::{group_into_buses, Bus, Poller};
use crate::sources::modbus::write::{write_channel, BusWriters, WriteCommand, WriteRx};
use crate::sources::mqtt::MqttSource;
use crate::sources::{ReadingTx, READING_CHANNEL_CAPACITY};
use crate::spool::{self, AlertIdentity, Reader, Spool, SpoolError, Spools, Stream};
use crate::supervise::{Stage, TaskFailure, TaskTree};
use crate::systemd::{self, NotifyState};

/// File name of the spool inside the data directory.
pub const SPOOL_FILE: &str = spool::POINTS_FILE;

/// Why the gateway could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The embedded MQTT broker did not start.
    #[error("embedded_broker: {0}")]
    Broker(#[from] crate::broker::BrokerError),
    /// A sink could not be built.
    #[error(transparent)]
    Sink(#[from] InfluxSinkError),
    /// The MQTT alert sink could not be built.
    #[error(transparent)]
    MqttSink(#[from] MqttSinkError),
    /// The webhook sink could not be built.
    #[error(transparent)]
    WebhookSink(#[from] WebhookSinkError),
    /// The console could not listen.
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    /// The spool task failed.
    #[error("spool open task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A task ended without being asked to (the gateway was stopped in order after it).
    #[error("{first}{}", if more.is_empty() { String::new() } else { format!("; then {}", more.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")) })]
    Task {
        /// The first task that failed.
        first: TaskFailure,
        /// Any that failed during the shutdown after it.
        more: Vec<TaskFailure>,
    },
}

/// Reload requests waiting at most (SIGHUP while a reload runs): one more is enough, as it reads
/// the file as it is when it runs.
const RELOAD_QUEUE: usize = 1;

/// A request for a reload, and where to say what became of it.
#[derive(Debug)]
struct ReloadRequest {
    reply: Option<oneshot::Sender<ReloadOutcome>>,
}

/// Asks a running [`Gateway`] to reload its config file. SIGHUP (`main.rs`) and the system
/// tests both go through [`Reloader::request`]'s channel, so a test's reload takes the path of
/// the signal's.
#[derive(Debug, Clone)]
pub struct Reloader(mpsc::Sender<ReloadRequest>);

impl Reloader {
    /// Ask for a reload without waiting (the signal). When one is already waiting, nothing more
    /// is needed: it reads the file as it is when it runs.
    pub fn request(&self) {
        let _ = self.0.try_send(ReloadRequest { reply: None });
    }

    /// Ask for a reload and wait for its outcome; `None` when the gateway has stopped.
    pub async fn reload(&self) -> Option<ReloadOutcome> {
        let (reply, outcome) = oneshot::channel();
        self.0
            .send(ReloadRequest { reply: Some(reply) })
            .await
            .ok()?;
        outcome.await.ok()
    }
}

/// A configured gateway, ready to run.
#[derive(Debug)]
pub struct Gateway {
    cfg: Config,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    reloads: mpsc::Receiver<ReloadRequest>,
    reloader: Reloader,
}

impl Gateway {
    /// A gateway for `cfg` with the system clock.
    #[must_use]
    pub fn new(cfg: Config) -> Self {
        let (tx, reloads) = mpsc::channel(RELOAD_QUEUE);
        Self {
            clock: crate::clock::for_config(&cfg.clock),
            cfg,
            metrics: Arc::new(Metrics::new()),
            reloads,
            reloader: Reloader(tx),
        }
    }

    /// Its counters (shared; readable while it runs).
    #[must_use]
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// What asks it to reload `cfg.path` while it runs.
    #[must_use]
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Run until `shutdown` is cancelled, reloading the config when asked ([`Reloader`]).
    ///
    /// # Errors
    /// Start-up failures (spool, broker); running components log and count their own errors.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let Self {
            cfg,
            metrics,
            clock,
            reloads,
            reloader,
        } = self;
        // Kept while it runs: `reloads` never closes.
        let _reloader = reloader;
        let spools = open_spools(&cfg).await?;
        let mut held = HeldFiles::of(&spools);
        let outcome = serve(cfg, metrics, clock, reloads, spools, &mut held, shutdown).await;
        held.released().await;
        outcome
    }
}

/// [`Gateway::run`] once the spool files are open: start everything, carry out reloads, and
/// shut down in order. `held` is told of every file a task may still hold when this returns.
async fn serve(
    cfg: Config,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    mut reloads: mpsc::Receiver<ReloadRequest>,
    spools: Spools,
    held: &mut HeldFiles,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    spools.points.count_into(Arc::clone(&metrics));
    spools.alerts.count_into(Arc::clone(&metrics));
    info!(site = %cfg.site, gateway = %cfg.gateway_id, spool = %spools.points.path().display(),
          alerts = %spools.alerts.path().display(), "Gateway starting.");

    // The embedded broker first, so MQTT sources pointed at it connect on their first try.
    // rumqttd has no shutdown: it lives until the process exits (see `broker`), and a
    // reload keeps it.
    let _broker = match cfg.embedded_broker.clone() {
        Some(b) => Some(crate::supervise::spawn_blocking(move || crate::broker::start(&b)).await??),
        None => None,
    };

    // The local history behind the console's curves: its own file, never the spool's.
    let history = match cfg.console.as_ref().and_then(|c| c.history) {
        Some(settings) => {
            let path = cfg.data_dir.join(crate::history::HISTORY_FILE);
            let min_free = cfg.spool.min_free_bytes;
            let opened = Arc::new(
                crate::supervise::spawn_blocking({
                    let path = path.clone();
                    move || crate::history::History::open(&path, settings, min_free)
                })
                .await?,
            );
            held.watch(&opened, &path);
            Some(opened)
        }
        None => None,
    };
    // The engine publishes its snapshots only when a console shows them.
    let (view_tx, view_rx) = crate::engine::view::channel();
    let (command_tx, command_rx) = crate::engine::command::channel();
    let (notice_tx, notice_rx) = crate::engine::command::notice_channel();
    let (tx, rx) = mpsc::channel(READING_CHANNEL_CAPACITY);
    let mut running = Running {
        cfg,
        tree: TaskTree::new(),
        readings: Some(tx),
        spools,
        metrics,
        clock,
        history,
        heartbeat: Arc::new(Heartbeat::default()),
        engine_running: Arc::new(AtomicBool::new(false)),
        started: Instant::now(),
        view_rx,
        command_tx,
        notice_tx,
        writers: BusWriters::default(),
        bus_writes: HashMap::new(),
        spare_view: None,
        spare_commands: None,
        stops: HashMap::new(),
        engine: None,
    };

    // Writes (Modbus output sinks, the console's `/write`) reach a device through the
    // poller of its bus: its channels first, so the console and the sinks have them.
    let cfg = running.cfg.clone();
    let buses: Vec<(Bus, WriteRx)> = group_into_buses(&cfg.devices)
        .into_iter()
        .map(|bus| {
            let (tx, rx) = write_channel();
            running.bus_writes.insert(poller_task(&bus), tx);
            (bus, rx)
        })
        .collect();
    running.route_writes();
    // The console before any source, so a port in use stops the start before data flows.
    if running.cfg.console.is_some() {
        running.start_console().await?;
    }
    let notices_wanted = running.start_history_tasks();
    for (bus, writes) in buses {
        running.start_poller(bus, writes);
    }
    for settings in &cfg.mqtt {
        running.start_mqtt(settings);
    }
    for sink in &cfg.sinks {
        running.start_sink(sink)?;
    }
    running.start_engine(EngineInputs {
        rx,
        commands: Some(command_rx),
        notices: notices_wanted.then_some(notice_rx),
        view: Some(view_tx),
        clock_held: crate::clock::HeldReadings::default(),
    });

    // With the console, stopped last: both report to the outside.
    if let Some(period) = systemd::keep_alive_period() {
        let stop = running.tree.stop_token(Stage::Console);
        running.tree.spawn(
            Stage::Console,
            "systemd watchdog",
            systemd::keep_alive(
                Arc::clone(&running.heartbeat),
                period,
                systemd::notify,
                stop,
            ),
        );
    }
    systemd::notify(&[NotifyState::Ready]);

    let (failed, mut more) = loop {
        let event = tokio::select! {
            biased;
            failed = running.tree.watch(&shutdown) => Event::Ended(failed),
            Some(request) = reloads.recv() => Event::Reload(request),
        };
        match event {
            Event::Ended(failed) => break (failed, Vec::new()),
            Event::Reload(request) => match running.reload().await {
                Ok(outcome) => {
                    if let Some(reply) = request.reply {
                        let _ = reply.send(outcome);
                    }
                }
                Err(ReloadFailed::Task(mut failures)) => {
                    let first = failures.remove(0);
                    break (Some(first), failures);
                }
                Err(ReloadFailed::Start(e)) => {
                    error!(error = %e, "A component of the reloaded config did not start; stopping the gateway (what is held is committed first) so that it can be restarted.");
                    running.readings = None;
                    let _ = running.tree.shutdown().await;
                    return Err(e);
                }
            },
        }
    };
    systemd::notify(&[NotifyState::Stopping]);
    if let Some(f) = &failed {
        error!(task = %f.name, how = %f.how,
               "A gateway task ended on its own; stopping the gateway (what is held is committed first) so that it can be restarted.");
    }
    // The engine ends once every source has gone and with them every sender.
    running.readings = None;
    more.extend(running.tree.shutdown().await);
    if let Some(first) = failed.or_else(|| more.first().cloned()) {
        let more = more.into_iter().filter(|f| *f != first).collect();
        info!("Gateway stopped after a task failure.");
        return Err(RunError::Task { first, more });
    }
    info!("Gateway stopped.");
    Ok(())
}

/// Longest wait at the end of [`Gateway::run`] for every task to let go of the spool and
/// history files. A blocking call already running when its task was stopped (a spool read of
/// a sink, a commit) cannot be cancelled and holds its file until it returns, after the task
/// tree has stopped; the next user of the files in the same process (a restart, an offline
/// command a test runs right after) must find them closed (another process finds them closed
/// once this one has exited). Such calls take milliseconds; an SD card's fsync stall can take
/// seconds.
pub const FILES_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often [`HeldFiles::released`] looks again.
const FILES_RELEASE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// The files [`Gateway::run`] opened, watched without holding them, so that it returns only
/// once they are closed ([`FILES_RELEASE_WAIT`]).
struct HeldFiles(
    Vec<(
        std::path::PathBuf,
        std::sync::Weak<dyn std::any::Any + Send + Sync>,
    )>,
);

impl HeldFiles {
    fn of(spools: &Spools) -> Self {
        let mut held = Self(Vec::new());
        held.watch(&spools.points, spools.points.path());
        if !Arc::ptr_eq(&spools.points, &spools.alerts) {
            held.watch(&spools.alerts, spools.alerts.path());
        }
        held
    }

    fn watch<T: Send + Sync + 'static>(&mut self, file: &Arc<T>, path: &std::path::Path) {
        let weak: std::sync::Weak<dyn std::any::Any + Send + Sync> =
            Arc::downgrade(file) as std::sync::Weak<T>;
        self.0.push((path.to_path_buf(), weak));
    }

    /// Wait until no task holds any of the files, at most [`FILES_RELEASE_WAIT`]; a file
    /// still held then is named in a warning (the process exiting closes it).
    async fn released(self) {
        self.released_within(FILES_RELEASE_WAIT).await;
    }

    /// [`HeldFiles::released`] with the bound `wait`.
    async fn released_within(self, wait: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let still: Vec<_> = self
                .0
                .iter()
                .filter(|(_, file)| file.strong_count() > 0)
                .collect();
            if still.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                for (path, file) in still {
                    warn!(file = %path.display(), holders = file.strong_count(), ?wait,
                          "A file is still held by a stopped task; it closes when that task ends.");
                }
                return;
            }
            tokio::time::sleep(FILES_RELEASE_POLL).await;
        }
    }
}

/// The spool's readers: each sink with the one stream it delivers (docs/ARCHITECTURE.md
/// §Spool layout, Cursors), so that it pins nothing in the other stream.
fn spool_readers(cfg: &Config, stream: Stream) -> Vec<Reader> {
    cfg.sinks
        .iter()
        .filter(|s| sink_stream(s) == stream)
        .map(|s| Reader::new(s.name(), &[stream]))
        .collect()
}

/// The one stream `sink` delivers.
fn sink_stream(sink: &Sink) -> Stream {
    match sink {
        Sink::Influxdb(_) => Stream::Points,
        Sink::Mqtt(_) | Sink::Webhook(_) | Sink::ModbusOutput(_) => Stream::Alerts,
    }
}

/// Open the spool's two files (docs/ARCHITECTURE.md §Spool layout, Two files): the alerts file
/// first, so that damage found in the points file is announced on the stream the alert sinks
/// read; then move what a single-file spool of an earlier version holds of alerts and rule
/// state into the alerts file.
async fn open_spools(cfg: &Config) -> Result<Spools, RunError> {
    // Named in the device-fault alert a spool file raises itself if it finds itself damaged
    // (docs/ARCHITECTURE.md §Spool layout, Failures).
    let identity = AlertIdentity {
        site: cfg.site.clone(),
        gateway: cfg.gateway_id.clone(),
        language: cfg.rules.language(),
    };
    let (alerts_path, alert_readers) = (
        spool::alerts_path(&cfg.data_dir),
        spool_readers(cfg, Stream::Alerts),
    );
    let (spool_cfg, alerts_identity) = (cfg.spool.clone(), identity.clone());
    let alerts = Arc::new(
        crate::supervise::spawn_blocking(move || {
            Spool::open_with(
                &alerts_path,
                &spool_cfg,
                &alert_readers,
                Some(alerts_identity),
            )
        })
        .await??,
    );
    let (points_path, point_readers) = (
        spool::points_path(&cfg.data_dir),
        spool_readers(cfg, Stream::Points),
    );
    let (spool_cfg, to) = (cfg.spool.clone(), Arc::clone(&alerts));
    let points = Arc::new(
        crate::supervise::spawn_blocking(move || {
            Spool::open_points_with(&points_path, &spool_cfg, &point_readers, identity, to)
        })
        .await??,
    );
    let (from, to) = (Arc::clone(&points), Arc::clone(&alerts));
    match crate::supervise::spawn_blocking(move || from.move_alerts_and_state_to(&to)).await? {
        Ok(moved) if moved == spool::MovedOut::default() => {}
        Ok(moved) => info!(
            alert_events = moved.alert_records,
            state_entries = moved.state_entries,
            from = %points.path().display(),
            to = %alerts.path().display(),
            "Alerts and rule state moved into the alerts file (once, after an upgrade from a single spool file)."
        ),
        // Tried again at the next start; meanwhile the engine starts from the alerts file's state.
        Err(e) => {
            error!(error = %e, "Alerts and rule state of the earlier single spool file could not be moved into the alerts file; the move is tried again at the next start.")
        }
    }
    Ok(Spools { points, alerts })
}

/// What the running gateway's loop waits for.
enum Event {
    /// A task ended (`Some`) or the shutdown was asked for (`None`).
    Ended(Option<TaskFailure>),
    /// A reload was asked for.
    Reload(ReloadRequest),
}

/// Why a reload left the gateway unable to go on (it is then stopped in order).
enum ReloadFailed {
    /// Tasks failed while the reload stopped others.
    Task(Vec<TaskFailure>),
    /// A component of the new config did not start (a console port taken meanwhile).
    Start(RunError),
}

impl From<RunError> for ReloadFailed {
    fn from(e: RunError) -> Self {
        Self::Start(e)
    }
}

/// The name of the engine's task.
const ENGINE_TASK: &str = "engine";
/// The name of the console's task.
const CONSOLE_TASK: &str = "console";

/// The engine that runs, and how to stop it for a reload and get its inputs back.
struct RunningEngine {
    stop: CancellationToken,
    inputs: oneshot::Receiver<EngineInputs>,
}

/// A running gateway: the config in force, the task tree, and what outlives a reload (the
/// spool, the readings channel's sending half, the console's channels, the history).
struct Running {
    cfg: Config,
    tree: TaskTree,
    /// A sender kept for the sources a reload starts; dropped at shutdown, so the engine ends
    /// once every source has gone.
    readings: Option<ReadingTx>,
    spools: Spools,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    history: Option<Arc<crate::history::History>>,
    heartbeat: Arc<Heartbeat>,
    engine_running: Arc<AtomicBool>,
    /// When the gateway started (the console's uptime, across reloads).
    started: Instant,
    view_rx: crate::engine::view::ViewRx,
    command_tx: crate::engine::command::CommandTx,
    /// Where the daily report's notice goes (the engine spools it).
    notice_tx: crate::engine::command::NoticeTx,
    /// The way to each Modbus device's poller, for the console and the Modbus output sinks.
    writers: BusWriters,
    /// Each bus's write channel, by poller task name (kept with the bus by a reload).
    bus_writes: HashMap<String, mpsc::Sender<WriteCommand>>,
    /// The console's channels while no console runs (not handed to the engine, which then
    /// publishes no snapshots).
    spare_view: Option<crate::engine::view::ViewTx>,
    spare_commands: Option<crate::engine::command::CommandRx>,
    /// The stop token of each source, sink and the console, by task name.
    stops: HashMap<String, CancellationToken>,
    engine: Option<RunningEngine>,
}

impl Running {
    /// Spawn `task` as `name` in `stage` with a stop token of its own (a child of the stage's,
    /// so a shutdown stops it too).
    fn spawn<F>(&mut self, stage: Stage, name: String, task: impl FnOnce(CancellationToken) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = self.tree.stop_token(stage).child_token();
        self.stops.insert(name.clone(), stop.clone());
        self.tree.spawn(stage, name, task(stop));
    }

    /// Bind and start the console of `self.cfg` (which has one).
    async fn start_console(&mut self) -> Result<(), RunError> {
        let cfg = &self.cfg;
        let Some(settings) = &cfg.console else {
            return Ok(());
        };
        let state = ConsoleState::new(
            Arc::clone(&self.metrics),
            self.spools.clone(),
            &cfg.sinks,
            Arc::clone(&self.engine_running),
        )
        .with_pages(
            Identity {
                site: cfg.site.clone(),
                gateway: cfg.gateway_id.clone(),
                config_text: console_config_text(cfg),
            },
            self.view_rx.clone(),
            self.command_tx.clone(),
        )
        .with_history(self.history.clone(), cfg.data_dir.clone())
        .with_writers(self.writers.clone())
        .started_at(self.started);
        let console = Console::bind(settings, state).await?;
        self.spawn(Stage::Console, CONSOLE_TASK.to_owned(), |stop| {
            console.run(stop)
        });
        Ok(())
    }

    /// The history's writer and the daily report: started once, kept by reloads (their
    /// settings need a restart, `crate::reload`). Stopped with the console, after the engine:
    /// the history's last flush has what the engine stored last. Whether the report's notices
    /// go to the engine.
    fn start_history_tasks(&mut self) -> bool {
        let Some(h) = &self.history else {
            return false;
        };
        let mut notices_wanted = false;
        let stop = self.tree.stop_token(Stage::Console);
        self.tree.spawn(
            Stage::Console,
            "history",
            crate::history::keep_writing(Arc::clone(h), Arc::clone(&self.clock), stop),
        );
        if let Some(report) = self.cfg.console.as_ref().and_then(|c| c.report) {
            let stop = self.tree.stop_token(Stage::Console);
            notices_wanted = report.notify;
            let announce = report.notify.then(|| crate::report::Announce {
                notices: self.notice_tx.clone(),
                language: self.cfg.rules.language(),
            });
            self.tree.spawn(
                Stage::Console,
                "daily report",
                crate::report::keep_making(
                    Arc::clone(h),
                    report,
                    self.cfg.data_dir.clone(),
                    (self.cfg.site.clone(), self.cfg.gateway_id.clone()),
                    announce,
                    stop,
                ),
            );
        }
        notices_wanted
    }

    /// The writers of the buses of `self.cfg`, through their channels in `bus_writes`.
    fn route_writes(&mut self) {
        let buses = group_into_buses(&self.cfg.devices);
        let channels: Vec<(
            &[crate::sources::modbus::config::Device],
            mpsc::Sender<WriteCommand>,
        )> = buses
            .iter()
            .filter_map(|b| {
                self.bus_writes
                    .get(&poller_task(b))
                    .map(|tx| (b.devices.as_slice(), tx.clone()))
            })
            .collect();
        self.writers = BusWriters::for_channels(&channels);
    }

    /// The sending half of the readings channel (present until the shutdown).
    fn readings(&self) -> ReadingTx {
        match &self.readings {
            Some(tx) => tx.clone(),
            // Only the shutdown takes it, and nothing starts after it: a closed channel.
            None => mpsc::channel(1).0,
        }
    }

    fn start_poller(&mut self, bus: Bus, writes: WriteRx) {
        let name = poller_task(&bus);
        let poller = Poller::new(
            bus,
            &self.cfg.site,
            &self.cfg.gateway_id,
            Arc::clone(&self.metrics),
            Arc::clone(&self.clock),
        )
        .with_writes(writes);
        let tx = self.readings();
        self.spawn(Stage::Sources, name, |stop| poller.run(tx, stop));
    }

    fn start_mqtt(&mut self, settings: &crate::sources::mqtt::MqttSettings) {
        let source = MqttSource::new(
            settings.clone(),
            &self.cfg.site,
            &self.cfg.gateway_id,
            Arc::clone(&self.metrics),
        );
        let tx = self.readings();
        self.spawn(Stage::Sources, mqtt_task(settings), |stop| {
            source.run(tx, stop)
        });
    }

    fn start_sink(&mut self, sink: &Sink) -> Result<(), RunError> {
        let name = sink_task(sink);
        let spool = Arc::clone(self.spools.of(sink_stream(sink)));
        let metrics = Arc::clone(&self.metrics);
        match sink {
            Sink::Influxdb(resolved) => {
                let s = InfluxSink::new(resolved.clone(), spool, metrics)?;
                self.spawn(Stage::Sinks, name, |stop| s.run(stop));
            }
            Sink::Mqtt(resolved) => {
                let s = MqttSink::new(resolved.clone(), spool, metrics)?;
                self.spawn(Stage::Sinks, name, |stop| s.run(stop));
            }
            Sink::Webhook(resolved) => {
                let s = WebhookSink::new(resolved.clone(), spool, metrics)?;
                self.spawn(Stage::Sinks, name, |stop| s.run(stop));
            }
            Sink::ModbusOutput(resolved) => {
                let s = ModbusOutputSink::new(
                    resolved.clone(),
                    spool,
                    metrics,
                    self.writers.clone(),
                    Some(SavedRules {
                        rules: self.cfg.rules.clone(),
                        site: self.cfg.site.clone(),
                    }),
                );
                self.spawn(Stage::Sinks, name, |stop| s.run(stop));
            }
        }
        Ok(())
    }

    /// Start an engine of `self.cfg` on `inputs`: it restores the rule, derived and pour state
    /// from the spool, as at start-up.
    fn start_engine(&mut self, inputs: EngineInputs) {
        let cfg = &self.cfg;
        let EngineInputs {
            rx,
            commands,
            notices,
            view,
            clock_held,
        } = inputs;
        let engine = Engine::new(
            rx,
            Arc::clone(&self.spools.points),
            Arc::clone(&self.metrics),
            Arc::clone(&self.clock),
            cfg.engine.clone(),
            cfg.summary_interval,
            cfg.rules.clone(),
            &cfg.site,
        )
        .with_alerts_spool(Arc::clone(&self.spools.alerts))
        .with_derived(cfg.derived.clone())
        .with_pours(cfg.pours.clone())
        .with_heartbeat(Arc::clone(&self.heartbeat))
        .with_clock_held(clock_held);
        let (view, commands) = (
            view.or(self.spare_view.take()),
            commands.or(self.spare_commands.take()),
        );
        let engine = match (cfg.console.is_some(), view, commands) {
            (true, Some(view), Some(commands)) => engine.with_view(view).with_commands(commands),
            (_, view, commands) => {
                self.spare_view = view;
                self.spare_commands = commands;
                engine
            }
        };
        let engine = match &self.history {
            Some(h) => engine.with_history(Arc::clone(h)),
            None => engine,
        };
        let engine = match notices {
            Some(rx) => engine.with_notices(rx),
            None => engine,
        };
        let stop = CancellationToken::new();
        let (handed, inputs) = oneshot::channel();
        let running = Arc::clone(&self.engine_running);
        let until = stop.clone();
        self.tree.spawn(Stage::Engine, ENGINE_TASK, async move {
            running.store(true, Ordering::Relaxed);
            let inputs = engine.run_until(until).await;
            running.store(false, Ordering::Relaxed);
            let _ = handed.send(inputs);
        });
        self.engine = Some(RunningEngine { stop, inputs });
    }

    /// Re-read `self.cfg.path`, validate it as start-up does, and apply it, or keep the config
    /// in force and say why (logged at ERROR, counted). systemd hears `RELOADING=1` before and
    /// `READY=1` after (sd_notify(3)).
    async fn reload(&mut self) -> Result<ReloadOutcome, ReloadFailed> {
        let began = Instant::now();
        systemd::notify_reloading();
        let path = self.cfg.path.clone();
        info!(config = %path.display(), "Reloading the config.");
        let loaded = {
            let path = path.clone();
            crate::supervise::spawn_blocking(move || Config::load(&path)).await
        };
        let checked = match loaded {
            Ok(Ok(new)) => crate::reload::plan(&self.cfg, &new)
                .map(|plan| (new, plan))
                .map_err(|refusals| {
                    refusals
                        .iter()
                        .map(|r| format!("{}: {r}", path.display()))
                        .collect::<Vec<_>>()
                        .join("\n")
                }),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("{}: cannot be read: {e}", path.display())),
        };
        // The engine hands over only after its final commit; with the spool's file unavailable
        // that commit fails and what it holds would be given up (counted, as at a shutdown).
        let spools = self.spools.clone();
        let writable = crate::supervise::spawn_blocking(move || spools.stats().available)
            .await
            .unwrap_or(false);
        let checked = checked.and_then(|accepted| {
            if writable {
                Ok(accepted)
            } else {
                Err(format!("{}: not reloaded now: the spool's file is unavailable and retried, and the engine must commit what it holds before a new one takes over; reload again once `/readyz` says ready", path.display()))
            }
        });
        let (mut new, plan) = match checked {
            Ok(accepted) => accepted,
            Err(reason) => {
                self.metrics
                    .incr(Counter::ConfigReloads, &[("result", "refused")]);
                error!(config = %path.display(),
                       "Config reload refused; the running config stays in force. Fix the file (`gateway check -c {}` shows the same) and reload again:\n{reason}",
                       path.display());
                systemd::notify(&[NotifyState::Ready]);
                return Ok(ReloadOutcome::Refused { reason });
            }
        };
        if plan.broker_needs_restart {
            warn!(config = %path.display(),
                  "[embedded_broker] changed: the running broker is kept (its clients' sessions are in it); restart the service to apply it. The rest of the config is applied.");
            new.embedded_broker = self.cfg.embedded_broker.clone();
        }
        self.apply(new, &plan).await?;
        self.metrics
            .incr(Counter::ConfigReloads, &[("result", "applied")]);
        let took = began.elapsed();
        info!(config = %path.display(), took = ?took,
              kept = plan.buses.kept.len() + plan.mqtt.kept.len() + plan.sinks.kept.len(),
              restarted = ?[&plan.buses.started[..], &plan.mqtt.started[..], &plan.sinks.started[..]].concat(),
              stopped = ?[&plan.buses.stopped[..], &plan.mqtt.stopped[..], &plan.sinks.stopped[..]].concat(),
              console_restarted = plan.console,
              "Config reloaded.");
        systemd::notify(&[NotifyState::Ready]);
        Ok(ReloadOutcome::Applied {
            took,
            plan: Box::new(plan),
        })
    }

    /// Stop what `plan` replaces, then the engine, and start the new ones (docs/ARCHITECTURE.md
    /// §Reload): sources first, so the engine commits what they hand over and their QoS 1
    /// messages are acknowledged; the engine last, with a final commit, so that its successor
    /// takes the channel with nothing lost and nothing stored twice.
    async fn apply(&mut self, new: Config, plan: &Plan) -> Result<(), ReloadFailed> {
        let mut leaving: Vec<String> = [
            &plan.buses.stopped[..],
            &plan.mqtt.stopped[..],
            &plan.sinks.stopped[..],
        ]
        .concat();
        if plan.console && self.stops.contains_key(CONSOLE_TASK) {
            leaving.push(CONSOLE_TASK.to_owned());
        }
        for name in &leaving {
            if let Some(stop) = self.stops.remove(name) {
                stop.cancel();
            }
        }
        let failures = self.tree.retire(&leaving).await;
        if !failures.is_empty() {
            return Err(ReloadFailed::Task(failures));
        }
        let inputs = match self.engine.take() {
            Some(engine) => {
                engine.stop.cancel();
                let failures = self.tree.retire(&[ENGINE_TASK.to_owned()]).await;
                if !failures.is_empty() {
                    return Err(ReloadFailed::Task(failures));
                }
                engine.inputs.await.ok()
            }
            None => None,
        };
        let Some(inputs) = inputs else {
            return Err(ReloadFailed::Task(vec![TaskFailure {
                name: ENGINE_TASK.to_owned(),
                stage: Stage::Engine,
                how: "did not hand its input channel over".to_owned(),
            }]));
        };
        self.cfg = new;
        let cfg = self.cfg.clone();
        // Write channels: kept with their buses, new for the buses started (the console and
        // the Modbus output sinks, which hold the routes, are restarted then: `reload::plan`).
        for name in &plan.buses.stopped {
            self.bus_writes.remove(name);
        }
        let mut buses = Vec::new();
        for bus in group_into_buses(&cfg.devices) {
            if plan.buses.started.contains(&poller_task(&bus)) {
                let (tx, rx) = write_channel();
                self.bus_writes.insert(poller_task(&bus), tx);
                buses.push((bus, rx));
            }
        }
        self.route_writes();
        // The engine first: whatever fails to start after it, the channel has its reader and
        // the shutdown that follows commits what is in it.
        self.start_engine(inputs);
        if plan.console {
            self.start_console().await?;
        }
        for sink in cfg
            .sinks
            .iter()
            .filter(|s| plan.sinks.started.contains(&sink_task(s)))
        {
            self.start_sink(sink)?;
        }
        for (bus, writes) in buses {
            self.start_poller(bus, writes);
        }
        for m in cfg
            .mqtt
            .iter()
            .filter(|m| plan.mqtt.started.contains(&mqtt_task(m)))
        {
            self.start_mqtt(m);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_wait_ends_only_once_a_blocking_call_still_running_has_let_go_of_its_file() {
        // A blocking call that outlives its task (a sink's spool read when the sink is
        // stopped) holds the file for a while after the task tree has stopped.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = Arc::new(std::fs::File::create(dir.path().join("f")).expect("create"));
        let mut held = HeldFiles(Vec::new());
        held.watch(&file, &dir.path().join("f"));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let late = {
            let file = Arc::clone(&file);
            crate::supervise::spawn_blocking(move || {
                let _ = started_tx.send(());
                std::thread::sleep(std::time::Duration::from_millis(200));
                drop(file);
            })
        };
        started_rx.recv().expect("the blocking call started");
        let watcher = Arc::downgrade(&file);
        drop(file);
        assert_eq!(watcher.strong_count(), 1, "held by the blocking call only");
        held.released().await;
        assert_eq!(
            watcher.strong_count(),
            0,
            "released() returned before the file was let go"
        );
        late.await.expect("join");
    }

    #[tokio::test]
    async fn a_file_never_let_go_ends_the_wait_at_the_bound() {
        let file = Arc::new(0u8);
        let mut held = HeldFiles(Vec::new());
        held.watch(&file, std::path::Path::new("spool.redb"));
        let bound = std::time::Duration::from_millis(50);
        let started = tokio::time::Instant::now();
        held.released_within(bound).await;
        assert!(started.elapsed() >= bound, "{:?}", started.elapsed());
        assert_eq!(Arc::strong_count(&file), 1);
    }
}
