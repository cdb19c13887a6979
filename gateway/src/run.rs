//! Wiring for `gateway run`: opens the spool, starts the sources, the engine and the sinks, and
//! shuts them down in order.
//!
//! Owns start-up order, nothing else; the task tree and shutdown order are [`crate::supervise`],
//! what systemd is told and when is [`crate::systemd`].
//! Shutdown: cancel the sources; each drops its sender; the engine drains the channel, commits
//! the rest to the spool and returns; then the sinks stop (what they have not delivered stays in
//! the spool for the next start). A task that ends on its own starts the same shutdown, and
//! [`Gateway::run`] then returns [`RunError::Task`], so the process exits non-zero.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{Config, Sink};
use crate::console::{Console, ConsoleState, Identity};
use crate::engine::{Engine, Heartbeat};
use crate::metrics::Metrics;
use crate::model::{Clock, SystemClock};
use crate::sinks::influxdb::{InfluxSink, InfluxSinkError};
use crate::sinks::modbus_output::{ModbusOutputSink, SavedRules};
use crate::sinks::mqtt::{MqttSink, MqttSinkError};
use crate::sinks::webhook::{WebhookSink, WebhookSinkError};
use crate::sources::modbus::poller::{group_into_buses, Poller};
use crate::sources::modbus::write::BusWriters;
use crate::sources::mqtt::MqttSource;
use crate::sources::READING_CHANNEL_CAPACITY;
use crate::spool::{AlertIdentity, Reader, Spool, SpoolError, Stream};
use crate::supervise::{Stage, TaskFailure, TaskTree};
use crate::systemd::{self, NotifyState};

/// File name of the spool inside the data directory.
pub const SPOOL_FILE: &str = "spool.redb";

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

/// A configured gateway, ready to run.
#[derive(Debug)]
pub struct Gateway {
    cfg: Config,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl Gateway {
    /// A gateway for `cfg` with the system clock.
    #[must_use]
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(SystemClock),
        }
    }

    /// Its counters (shared; readable while it runs).
    #[must_use]
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The spool's readers: each sink with the one stream it delivers (docs/ARCHITECTURE.md
    /// §Spool layout, Cursors), so that it pins nothing in the other stream.
    fn spool_readers(&self) -> Vec<Reader> {
        self.cfg
            .sinks
            .iter()
            .map(|s| {
                let stream = match s {
                    Sink::Influxdb(_) => Stream::Points,
                    Sink::Mqtt(_) | Sink::Webhook(_) | Sink::ModbusOutput(_) => Stream::Alerts,
                };
                Reader::new(s.name(), &[stream])
            })
            .collect()
    }

    /// Run until `shutdown` is cancelled.
    ///
    /// # Errors
    /// Start-up failures (spool, broker); running components log and count their own errors.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let cfg = &self.cfg;
        let spool_path = cfg.data_dir.join(SPOOL_FILE);
        let readers = self.spool_readers();
        let spool_cfg = cfg.spool.clone();
        // Named in the device-fault alert the spool raises itself if it finds its file damaged
        // (docs/ARCHITECTURE.md §Spool layout, Failures).
        let identity = AlertIdentity {
            site: cfg.site.clone(),
            gateway: cfg.gateway_id.clone(),
            language: cfg.rules.language(),
        };
        let spool = Arc::new(
            tokio::task::spawn_blocking(move || {
                Spool::open_with(&spool_path, &spool_cfg, &readers, Some(identity))
            })
            .await??,
        );
        spool.count_into(Arc::clone(&self.metrics));
        info!(site = %cfg.site, gateway = %cfg.gateway_id, spool = %spool.path().display(), "Gateway starting.");

        // The embedded broker first, so MQTT sources pointed at it connect on their first try.
        // rumqttd has no shutdown: it lives until the process exits (see `broker`).
        let _broker = match cfg.embedded_broker.clone() {
            Some(b) => Some(tokio::task::spawn_blocking(move || crate::broker::start(&b)).await??),
            None => None,
        };

        let buses = group_into_buses(&cfg.devices);
        // Writes (Modbus output sinks, the console's `/write`) reach a device through the
        // poller of its bus.
        let (writers, write_rxs) = BusWriters::for_buses(
            &buses
                .iter()
                .map(|b| b.devices.as_slice())
                .collect::<Vec<_>>(),
        );
        // The console before any source, so a port in use stops the start before data flows.
        let engine_running = Arc::new(AtomicBool::new(false));
        // The engine publishes its snapshots only when a console shows them.
        let (view_tx, view_rx) = crate::engine::view::channel();
        let (command_tx, command_rx) = crate::engine::command::channel();
        let (notice_tx, notice_rx) = crate::engine::command::notice_channel();
        let mut notices_wanted = false;
        // The local history behind the console's curves: its own file, never the spool's.
        let history = match cfg.console.as_ref().and_then(|c| c.history) {
            Some(settings) => {
                let path = cfg.data_dir.join(crate::history::HISTORY_FILE);
                let min_free = cfg.spool.min_free_bytes;
                Some(Arc::new(
                    tokio::task::spawn_blocking(move || {
                        crate::history::History::open(&path, settings, min_free)
                    })
                    .await?,
                ))
            }
            None => None,
        };
        let console = match &cfg.console {
            Some(settings) => {
                let state = ConsoleState::new(
                    Arc::clone(&self.metrics),
                    Arc::clone(&spool),
                    &cfg.sinks,
                    Arc::clone(&engine_running),
                )
                .with_pages(
                    Identity {
                        site: cfg.site.clone(),
                        gateway: cfg.gateway_id.clone(),
                        config_text: format!(
                            "{}{}",
                            crate::config::describe(cfg),
                            crate::config::rule_coverage(cfg).text
                        ),
                    },
                    view_rx.clone(),
                    command_tx.clone(),
                )
                .with_history(history.clone(), cfg.data_dir.clone())
                .with_writers(writers.clone());
                Some(Console::bind(settings, state).await?)
            }
            None => None,
        };

        let (tx, rx) = mpsc::channel(READING_CHANNEL_CAPACITY);
        let heartbeat = Arc::new(Heartbeat::default());
        let mut tree = TaskTree::new();
        if let Some(console) = console {
            let stop = tree.stop_token(Stage::Console);
            tree.spawn(Stage::Console, "console", console.run(stop));
        }
        // Stopped with the console, after the engine: its last flush has what the engine
        // stored last.
        if let Some(h) = &history {
            let stop = tree.stop_token(Stage::Console);
            tree.spawn(
                Stage::Console,
                "history",
                crate::history::keep_writing(Arc::clone(h), Arc::clone(&self.clock), stop),
            );
            if let Some(report) = cfg.console.as_ref().and_then(|c| c.report) {
                let stop = tree.stop_token(Stage::Console);
                notices_wanted = report.notify;
                let announce = report.notify.then(|| crate::report::Announce {
                    notices: notice_tx.clone(),
                    language: cfg.rules.language(),
                });
                tree.spawn(
                    Stage::Console,
                    "daily report",
                    crate::report::keep_making(
                        Arc::clone(h),
                        report,
                        cfg.data_dir.clone(),
                        (cfg.site.clone(), cfg.gateway_id.clone()),
                        announce,
                        stop,
                    ),
                );
            }
        }
        let sources_stop = tree.stop_token(Stage::Sources);
        for (bus, writes) in buses.into_iter().zip(write_rxs) {
            let name = format!("poller {}", bus.link);
            let poller = Poller::new(
                bus,
                &cfg.site,
                &cfg.gateway_id,
                Arc::clone(&self.metrics),
                Arc::clone(&self.clock),
            )
            .with_writes(writes);
            tree.spawn(
                Stage::Sources,
                name,
                poller.run(tx.clone(), sources_stop.clone()),
            );
        }
        for settings in &cfg.mqtt {
            let name = format!("mqtt source {}", settings.name);
            let source = MqttSource::new(
                settings.clone(),
                &cfg.site,
                &cfg.gateway_id,
                Arc::clone(&self.metrics),
            );
            tree.spawn(
                Stage::Sources,
                name,
                source.run(tx.clone(), sources_stop.clone()),
            );
        }
        drop(tx);

        let sinks_stop = tree.stop_token(Stage::Sinks);
        for sink in &cfg.sinks {
            let name = format!("sink {}", sink.name());
            match sink {
                Sink::Influxdb(resolved) => {
                    let s = InfluxSink::new(
                        resolved.clone(),
                        Arc::clone(&spool),
                        Arc::clone(&self.metrics),
                    )?;
                    tree.spawn(Stage::Sinks, name, s.run(sinks_stop.clone()));
                }
                Sink::Mqtt(resolved) => {
                    let s = MqttSink::new(
                        resolved.clone(),
                        Arc::clone(&spool),
                        Arc::clone(&self.metrics),
                    )?;
                    tree.spawn(Stage::Sinks, name, s.run(sinks_stop.clone()));
                }
                Sink::Webhook(resolved) => {
                    let s = WebhookSink::new(
                        resolved.clone(),
                        Arc::clone(&spool),
                        Arc::clone(&self.metrics),
                    )?;
                    tree.spawn(Stage::Sinks, name, s.run(sinks_stop.clone()));
                }
                Sink::ModbusOutput(resolved) => {
                    let s = ModbusOutputSink::new(
                        resolved.clone(),
                        Arc::clone(&spool),
                        Arc::clone(&self.metrics),
                        writers.clone(),
                        Some(SavedRules {
                            rules: cfg.rules.clone(),
                            site: cfg.site.clone(),
                        }),
                    );
                    tree.spawn(Stage::Sinks, name, s.run(sinks_stop.clone()));
                }
            }
        }

        let engine = Engine::new(
            rx,
            Arc::clone(&spool),
            Arc::clone(&self.metrics),
            Arc::clone(&self.clock),
            cfg.engine.clone(),
            cfg.summary_interval,
            cfg.rules.clone(),
            &cfg.site,
        )
        .with_derived(cfg.derived.clone())
        .with_pours(cfg.pours.clone())
        .with_heartbeat(Arc::clone(&heartbeat));
        let engine = if cfg.console.is_some() {
            engine.with_view(view_tx).with_commands(command_rx)
        } else {
            engine
        };
        let engine = match &history {
            Some(h) => engine.with_history(Arc::clone(h)),
            None => engine,
        };
        let engine = if notices_wanted {
            engine.with_notices(notice_rx)
        } else {
            engine
        };
        tree.spawn(Stage::Engine, "engine", async move {
            engine_running.store(true, Ordering::Relaxed);
            engine.run().await;
            engine_running.store(false, Ordering::Relaxed);
        });

        // With the console, stopped last: both report to the outside.
        if let Some(period) = systemd::keep_alive_period() {
            let stop = tree.stop_token(Stage::Console);
            tree.spawn(
                Stage::Console,
                "systemd watchdog",
                systemd::keep_alive(heartbeat, period, systemd::notify, stop),
            );
        }
        systemd::notify(&[NotifyState::Ready]);

        let failed = tree.watch(&shutdown).await;
        systemd::notify(&[NotifyState::Stopping]);
        if let Some(f) = &failed {
            error!(task = %f.name, how = %f.how,
                   "A gateway task ended on its own; stopping the gateway (what is held is committed first) so that it can be restarted.");
        }
        let more = tree.shutdown().await;
        if let Some(first) = failed.or_else(|| more.first().cloned()) {
            let more = more.into_iter().filter(|f| *f != first).collect();
            info!("Gateway stopped after a task failure.");
            return Err(RunError::Task { first, more });
        }
        info!("Gateway stopped.");
        Ok(())
    }
}
