//! Anju site gateway: reads foundation-settlement, concrete-curing and slope sensors over Modbus
//! and MQTT, commits every reading to a durable spool, and forwards it to the county's InfluxDB.
//!
//! # Layout
//! - [`config`]: the TOML file, validated into a typed [`config::Config`]; errors name the path.
//! - [`conversion`]: a channel's raw number to its engineering value (NTC, vibrating wire,
//!   polynomial, linear) and its sign convention.
//! - [`model`]: [`model::Reading`], [`model::Series`], [`model::Quality`], [`model::QuantityKind`].
//! - [`sources`]: Modbus pollers ([`sources::modbus`]) and the MQTT subscriber
//!   ([`sources::mqtt`]); they send batches of readings to the engine.
//! - [`engine`]: one task that owns channel state, checks timestamps, and commits readings to the
//!   spool.
//! - [`record`]: the spool's record format (InfluxDB line protocol), below the engine and sinks.
//! - [`retry`]: exponential backoff and shutdown-aware sleep, for every task that retries.
//! - [`spool`]: the durable hand-off (redb) between the site and the network.
//! - [`sinks`]: deliver spooled batches (InfluxDB v2).
//! - [`broker`]: the embedded MQTT broker for site sensor nodes (feature `embedded-broker`).
//! - [`log_limit`]: one log line per key and interval for conditions that repeat.
//! - [`metrics`]: counters of what happened to the data.
//! - [`secret`]: tokens and passwords, read from the environment or a file by one set of rules.
//! - [`history`]: the local history of stored readings and alert events for the console's
//!   curves and alert page (its own redb file, downsampled, bounded in time and bytes).
//! - [`report`]: the daily report (监理日报) from the local history, kept in `data_dir/reports`.
//! - [`console`]: the HTTP server: `/metrics`, `/healthz`, `/readyz` (pages later).
//! - [`run`]: wires everything together for `gateway run`, and carries out config reloads.
//! - [`reload`]: what a config reload keeps, restarts and refuses.
//! - [`supervise`]: the task tree: every task named, watched, and stopped in order.
//! - [`systemd`]: `READY=1`, `STOPPING=1` and watchdog keep-alives while the engine turns.
//!
//! # Data flow
//! ```text
//! Modbus pollers ─┐                                                   ┌─> InfluxSink ─> central store
//! MQTT subscriber ┴─> mpsc<Vec<Reading>> ─> Engine ─> Spool (redb) ───┘
//! ```

pub mod alert;
pub mod baseline;
pub mod broker;
pub mod clock;
pub mod config;
pub mod console;
pub mod conversion;
pub mod engine;
pub mod history;
pub mod log_limit;
pub mod loopback;
pub mod metrics;
pub mod model;
pub mod pour;
pub mod record;
pub mod reload;
pub mod report;
pub mod retry;
pub mod run;
pub mod secret;
pub mod sinks;
pub mod sources;
pub mod spool;
pub mod supervise;
pub mod systemd;
pub mod tls;
