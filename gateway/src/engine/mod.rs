//! The engine: the one task that owns all channel state and commits readings to the spool.
//!
//! Owns per-channel state ([`ChannelState`]: last value, time and quality, counts), the
//! plausibility check of timestamps, the rendering of readings into line protocol, and the
//! batching of spool commits. It decodes nothing (sources do) and delivers nothing (sinks do).
//! Rules and alerts (`rules`), derived channels (`derived`) and pours (`curing`) are fed by the
//! same loop: each batch's stored readings go to [`derived::DerivedSet::on_batch`] and
//! [`curing::PourSet::on_batch`] once, and the derived readings they return are stored and
//! evaluated like any reading. A pour's milestone notices are committed like alerts, with the
//! pour state that says they were announced.
//!
//! Why one task: no locks on the hot path. Sources send `Vec<Reading>` batches through a bounded
//! channel; the engine drains them, appends lines to one buffer, and commits the buffer to the
//! spool every `flush_interval` or `flush_max_records`, whichever comes first, so the commit
//! rate (one fsync each) stays far below what an SD card can take.
//!
//! A reading is acknowledged to nobody until its spool commit returned. Points are committed in
//! the background, one commit in flight at a time ([`PointsCommit`]): the loop goes on taking
//! batches, evaluating rules and committing alerts while it runs, and the lines that arrive
//! meanwhile go with the next commit (group commit); past [`PENDING_COMMITS_WHILE_COMMITTING`]
//! commits' worth of them the loop waits for the commit before it reads on, so a slow disk slows
//! the sources. Alerts are committed at once, awaited by the loop, also while a points commit is
//! in flight: an alert never waits behind points (issue 11). Rule state is saved by the loop too,
//! awaited, never by a background commit, so saves and alert commits reach the spool in the
//! order the loop made them and an older state never overwrites a newer one. Before a points
//! commit is started, the alerts and the due state are committed: a batch's acknowledgement
//! fires when the commit of its last line returned, and by then the alerts its readings raised
//! and the state that holds its held readings are durable. If the spool cannot be written (full
//! disk, I/O error, a panic in the storage layer) the engine keeps the lines in memory (a failed
//! commit's lines go back in front of those that came since) and retries with backoff
//! ([`COMMIT_RETRY_INITIAL`] → [`COMMIT_RETRY_MAX`]), logging the failure once and then at most
//! every [`FAILURE_LOG_INTERVAL`] with counts. Past [`MAX_UNSPOOLED_RECORDS`] held readings it
//! drops them, counted and logged at ERROR, so that memory stays bounded. At shutdown it waits
//! for the commit in flight, then tries the final commit [`FINAL_COMMIT_ATTEMPTS`] times and says
//! how many readings it could not commit; it never claims a commit that did not happen.

pub mod command;
pub mod curing;
pub mod derived;
pub mod rules;
pub(crate) mod summary;
pub mod view;

use crate::metrics::Counter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::alert::{encode_alert_line, Alert};
use crate::log_limit::LogLimiter;
use crate::metrics::Metrics;
use crate::model::{Clock, Quality, Reading, Series, TimestampNs};
use crate::record as line;
use crate::retry::Backoff;
use crate::sources::{ReadingBatch, ReadingRx};
use crate::spool::{AppendOutcome, Spool, SpoolError, StateDelta, Stream};
use curing::{CuringPlan, PourSet};
use derived::{DerivedPlan, DerivedSet};
use rules::{Evaluator, RuleSet, StateScope, Verdict};

/// Default limit on how far in the future a reading's time may be: device clocks drift, but a
/// reading ten minutes ahead is a clock fault, and stored it would sit above every later one.
pub const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(10 * 60);
/// Default limit on how old a reading's time may be. Geo-hazard devices may upload up to 72 h
/// of buffered samples (docs/DOMAIN.md §CIGEM: upload interval up to 259 200 s); 30 days also
/// covers a gateway that was off for weeks. Older than that is a device clock that was never set.
pub const DEFAULT_MAX_PAST: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default longest time a reading waits in the engine before its spool commit.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Default number of pending readings that starts a spool commit at once.
pub const DEFAULT_FLUSH_MAX_RECORDS: u32 = 8192;
/// Most readings held in memory while the spool cannot be written. About 12 MB of lines.
pub const MAX_UNSPOOLED_RECORDS: u32 = 100_000;
/// While a points commit is in flight, the engine takes batches until this many commits' worth
/// (`flush_max_records` each) of readings wait for the next one; past that it waits for the
/// commit before it reads on, so a disk slower than the input slows the sources (the bounded
/// reading channel fills) and memory stays bounded. One commit's worth is what the next commit
/// starts at; the second lets the sources go on at full rate through an fsync that takes longer
/// than usual. The next commit takes all of them at once (group commit).
pub const PENDING_COMMITS_WHILE_COMMITTING: u32 = 2;
/// First wait before retrying a failed spool commit.
pub const COMMIT_RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Longest wait between retries of a failing spool commit: short enough that a disk with room
/// again is used within seconds, long enough that a failing disk is not hammered.
pub const COMMIT_RETRY_MAX: Duration = Duration::from_secs(5);
/// While commits keep failing, the ERROR line is repeated at most this often, with counts.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(30);
/// Attempts at the final commit on shutdown before held readings are given up (counted).
pub const FINAL_COMMIT_ATTEMPTS: u32 = 3;
/// Most channels whose repeated problems are logged individually (see [`LogLimiter`]).
pub const MAX_LOGGED_CHANNELS: usize = 1024;
/// How often rules are evaluated without a reading ("no data" rules, held spikes).
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);
/// How often the rule state (windows, confirmation counts) is saved when no alert forced a
/// save. A crash loses at most this much of it: a confirmation count restarts, a rate window
/// misses a few seconds. Alerts themselves are always saved with their state. Only the entries
/// that changed are written (`rules/saved.rs`).
pub const STATE_SAVE_INTERVAL: Duration = Duration::from_secs(10);
/// Default time without readings after which a channel is dropped from the engine's memory
/// (its rule state saved first, and read back at its next reading). An hour: far longer than
/// any polling or upload interval of a live sensor (CIGEM devices upload at most every 72 h
/// and are the exception: they are brought back from the spool), short enough that ids that
/// came once (a mistyped topic, a replaced sensor) do not accumulate for days.
pub const DEFAULT_CHANNEL_IDLE_EVICT: Duration = Duration::from_secs(3600);
/// Shortest `channel_idle_evict`: eviction and return each cost a spool write and read.
pub const MIN_CHANNEL_IDLE_EVICT: Duration = Duration::from_secs(60);
/// How often (gateway clock) the engine looks for idle channels to evict.
pub const EVICT_SCAN_INTERVAL: Duration = Duration::from_secs(60);

/// How many times the engine's loop has turned: beaten on every tick ([`TICK_INTERVAL`]), read by
/// whoever must tell a live engine from a hung one (the systemd watchdog, [`crate::systemd`]).
/// A count, not a time: the reader only asks whether it moved.
#[derive(Debug, Default)]
pub struct Heartbeat(AtomicU64);

impl Heartbeat {
    /// The loop turned once more.
    pub fn beat(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Beats so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Engine settings (`[engine]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Reject readings stamped further ahead of the gateway clock than this (default 10m).
    #[serde(default, with = "crate::config::duration_opt")]
    pub max_future: Option<Duration>,
    /// Reject readings stamped further behind the gateway clock than this (default 30 days).
    #[serde(default, with = "crate::config::duration_opt")]
    pub max_past: Option<Duration>,
    /// Longest time between a reading's arrival and its spool commit (default 100ms).
    #[serde(default, with = "crate::config::duration_opt")]
    pub flush_interval: Option<Duration>,
    /// Pending readings that start a spool commit at once (default 8192); while one is in
    /// flight up to [`PENDING_COMMITS_WHILE_COMMITTING`] times this many wait for the next.
    #[serde(default)]
    pub flush_max_records: Option<u32>,
    /// Drop a channel from memory after this long without readings, its rule state saved and
    /// restored at its next reading (default 1h, at least 1m).
    #[serde(default, with = "crate::config::duration_opt")]
    pub channel_idle_evict: Option<Duration>,
}

impl EngineConfig {
    /// The future limit in force.
    #[must_use]
    pub fn max_future(&self) -> Duration {
        self.max_future.unwrap_or(DEFAULT_MAX_FUTURE)
    }
    /// The past limit in force.
    #[must_use]
    pub fn max_past(&self) -> Duration {
        self.max_past.unwrap_or(DEFAULT_MAX_PAST)
    }
    /// The flush interval in force.
    #[must_use]
    pub fn flush_interval(&self) -> Duration {
        self.flush_interval.unwrap_or(DEFAULT_FLUSH_INTERVAL)
    }
    /// The batch size in force.
    #[must_use]
    pub fn flush_max_records(&self) -> u32 {
        self.flush_max_records.unwrap_or(DEFAULT_FLUSH_MAX_RECORDS)
    }

    /// The eviction time in force.
    #[must_use]
    pub fn channel_idle_evict(&self) -> Duration {
        self.channel_idle_evict
            .unwrap_or(DEFAULT_CHANNEL_IDLE_EVICT)
    }

    /// Check the values.
    ///
    /// # Errors
    /// A message naming the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.flush_interval().is_zero() || self.flush_interval() > Duration::from_secs(10) {
            return Err("flush_interval must be between 1ms and 10s".into());
        }
        if self.channel_idle_evict() < MIN_CHANNEL_IDLE_EVICT {
            return Err(format!(
                "channel_idle_evict must be at least {}",
                humantime::format_duration(MIN_CHANNEL_IDLE_EVICT)
            ));
        }
        if self.flush_max_records() == 0 || self.flush_max_records() > MAX_UNSPOOLED_RECORDS {
            return Err(format!(
                "flush_max_records must be between 1 and {MAX_UNSPOOLED_RECORDS}"
            ));
        }
        Ok(())
    }
}

/// A static counter label for an alert state.
fn state_name(state: crate::alert::AlertState) -> &'static str {
    use crate::alert::AlertState;
    match state {
        AlertState::Raised => "raised",
        AlertState::Escalated => "escalated",
        AlertState::DeEscalated => "de_escalated",
        AlertState::Cleared => "cleared",
        AlertState::Acknowledged => "acknowledged",
        AlertState::Notice => "notice",
    }
}

/// What the engine knows about one channel. Serialisable state for rules comes with issue 4.
#[derive(Debug, Clone)]
pub struct ChannelState {
    /// The channel.
    pub series: Arc<Series>,
    /// Time of the last reading.
    pub last_ts: TimestampNs,
    /// Last good value.
    pub last_value: Option<f64>,
    /// The device's own number behind the last reading, before conversion.
    pub last_raw: Option<f64>,
    /// Quality of the last reading.
    pub last_quality: Quality,
    /// Readings seen since start.
    pub readings: u64,
    /// Time of the last reading stored flagged or held as a possible spike: a repeat of it is
    /// not stored again ([`Engine::store`]).
    pub judged_ts: Option<TimestampNs>,
}

/// What an engine stopped by [`Engine::run_until`] hands to the next: its input channel, with
/// the batches still in it, and the console's channels.
#[derive(Debug)]
pub struct EngineInputs {
    /// The readings channel.
    pub rx: ReadingRx,
    /// Requests from the console, if it took any.
    pub commands: Option<command::CommandRx>,
    /// Notices made outside the engine, if it took any.
    pub notices: Option<command::NoticeRx>,
    /// Where snapshots for the console went, if anywhere.
    pub view: Option<view::ViewTx>,
    /// Copies of readings the gateway stamped before its clock was synchronised, waiting to be
    /// stamped again ([`crate::clock::HeldReadings`]): a reload must not lose them.
    pub clock_held: crate::clock::HeldReadings,
}

/// The engine task. Build with [`Engine::new`], then `run`.
#[derive(Debug)]
pub struct Engine {
    rx: ReadingRx,
    /// Where points are committed.
    spool: Arc<Spool>,
    /// Where alert events and the rule, derived and pour state are committed: a file of its
    /// own in the gateway ([`Engine::with_alerts_spool`]), so that an alert's commit never
    /// waits for redb's writer of the points file; `spool` itself when not set.
    alerts_spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    cfg: EngineConfig,
    summary_interval: Duration,
    channels: crate::model::SeriesMap<ChannelState>,
    site: String,
    /// Lines waiting for the next spool commit, and how many readings they hold (not those of
    /// the commit in flight).
    pending: Vec<u8>,
    pending_records: u32,
    /// The points commit in flight, if any: at most one, so points are committed in order.
    in_flight: Option<PointsCommit>,
    /// The buffer of the last commit that returned, emptied: `pending` at the next start of a
    /// commit, so the two buffers take turns instead of growing a new one each time.
    spare: Vec<u8>,
    /// The alert rules and their state.
    evaluator: Evaluator,
    /// The derived channels and their state.
    derived: DerivedSet,
    /// The pours and their state.
    pours: PourSet,
    /// Derived readings of the last batch, stored next (as a batch of their own).
    derived_pending: Vec<Reading>,
    /// Held readings decided real steps (good) and not yet fed to the derived channels.
    decided_feed: Vec<Reading>,
    /// Alert events (JSON lines) waiting for the next commit, and how many.
    pending_alerts: Vec<u8>,
    pending_alert_records: u32,
    /// The rule state changed since it was last saved.
    state_dirty: bool,
    /// A reading is held as a possible spike and not stored yet: the rule state that holds it
    /// is saved before the next points commit starts (or before the acknowledgement of its
    /// batch), whatever [`STATE_SAVE_INTERVAL`] says.
    hold_save_due: bool,
    /// Rule state entries handed out by the evaluator (or evicted) and not yet committed:
    /// kept until a commit holding them returned, and read first when an evicted channel
    /// returns.
    unsaved: StateDelta,
    /// The channels and devices of the alerts waiting for their commit.
    alert_scope: StateScope,
    /// Gateway time of the last look for idle channels.
    last_evict_scan: TimestampNs,
    last_state_save: Instant,
    /// Commit notices of the batches whose readings are in `pending` (see
    /// [`crate::sources::ReadingBatch::on_commit`]); those of the commit in flight are in it.
    pending_acks: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Wall clock against monotonic clock, for jumps ([`crate::clock`]).
    clock_watch: crate::clock::ClockWatch,
    /// Whether the clock was synchronised at the last look (`None` before the first).
    clock_synchronised: Option<bool>,
    /// Copies of the readings the gateway stamped while its clock was not synchronised, to be
    /// stamped again once it is.
    clock_held: crate::clock::HeldReadings,
    /// Readings since the last summary.
    since_summary: u64,
    bad_since_summary: u64,
    /// Whether the spool takes commits, and when to try again if not.
    commits: CommitHealth,
    /// Channels whose names cannot be written, devices whose clocks are wrong, a full spool:
    /// logged once per interval, not per reading or commit.
    name_errors: LogLimiter,
    /// Readings dropped by the spool's bound since that was last logged.
    dropped_since_log: u64,
    /// The console's view channel and when it was last published ([`Engine::with_view`]).
    view: Option<(view::ViewTx, Option<Instant>)>,
    /// Requests from the console ([`Engine::with_commands`]).
    commands: Option<command::CommandRx>,
    /// Notices made outside the engine ([`Engine::with_notices`]).
    notices: Option<command::NoticeRx>,
    /// The console's local history: every stored reading and alert event goes there too
    /// ([`Engine::with_history`]).
    history: Option<Arc<crate::history::History>>,
    /// Beaten on every tick, so a watcher can tell the loop still turns.
    heartbeat: Arc<Heartbeat>,
}

/// The health of spool commits: backoff while they fail, and a bounded log of the failure.
#[derive(Debug)]
struct CommitHealth {
    backoff: Backoff,
    /// No commit is attempted before this (set after a failure).
    retry_at: Option<Instant>,
    /// Failed commits since the last success.
    failures: u64,
    /// The failure is logged once, then at most every [`FAILURE_LOG_INTERVAL`].
    log: LogLimiter,
}

/// The points commit in flight: a blocking task appending `body` to the points stream.
#[derive(Debug)]
struct PointsCommit {
    task: tokio::task::JoinHandle<Result<AppendOutcome, SpoolError>>,
    /// Shared with the task, so that the lines survive a panic in it.
    body: Arc<Vec<u8>>,
    records: u32,
    /// The commit notices that fire when it returned: those of every batch whose last line is
    /// in it (none when it is one piece of held lines with more to follow).
    acks: Vec<tokio::sync::oneshot::Sender<()>>,
    started: Instant,
}

/// The points commit in flight returned (never, without one: the loop polls this only with one).
async fn points_returned(
    in_flight: &mut Option<PointsCommit>,
) -> Result<Result<AppendOutcome, SpoolError>, tokio::task::JoinError> {
    match in_flight {
        Some(commit) => (&mut commit.task).await,
        None => std::future::pending().await,
    }
}

/// The [`LogLimiter`] key of a failing spool.
const SPOOL_FAILING: &str = "spool";
/// The [`LogLimiter`] key of a spool dropping readings to stay within its bound.
const SPOOL_FULL: &str = "spool full";

impl CommitHealth {
    fn new() -> Self {
        Self {
            backoff: Backoff::new(COMMIT_RETRY_INITIAL, COMMIT_RETRY_MAX),
            retry_at: None,
            failures: 0,
            log: LogLimiter::new(FAILURE_LOG_INTERVAL, 1),
        }
    }

    /// A commit may be tried now.
    fn may_try(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// A commit failed: back off, and log (the first failure, then once per interval).
    fn failed(
        &mut self,
        what: &str,
        error: &dyn std::fmt::Display,
        held_readings: u32,
        held_alerts: u32,
    ) {
        self.failures += 1;
        let delay = self.backoff.next_delay();
        self.retry_at = Some(Instant::now() + delay);
        if self.log.allow(SPOOL_FAILING).is_some() {
            error!(what, error = %error, failed_commits = self.failures, held_readings, held_alerts,
                   retry_in = ?delay,
                   "Spool cannot be written; holding the readings and alerts in memory and retrying (nothing is acknowledged upstream until committed).");
        }
    }

    /// A commit succeeded.
    fn succeeded(&mut self) {
        if self.failures > 0 {
            info!(
                failed_commits = self.failures,
                "Spool writable again; held readings and alerts committed."
            );
        }
        self.failures = 0;
        self.retry_at = None;
        self.log.reset(SPOOL_FAILING);
        self.backoff.reset();
    }
}

impl Engine {
    /// An engine reading from `rx` and committing to `spool`.
    #[must_use]
    #[allow(clippy::too_many_arguments)] // each is a distinct collaborator; a builder adds nothing
    pub fn new(
        rx: ReadingRx,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        cfg: EngineConfig,
        summary_interval: Duration,
        rules: RuleSet,
        site: &str,
    ) -> Self {
        Self {
            evaluator: Evaluator::new(rules, site),
            derived: DerivedSet::default(),
            pours: PourSet::default(),
            derived_pending: Vec::new(),
            decided_feed: Vec::new(),
            pending_alerts: Vec::new(),
            pending_alert_records: 0,
            state_dirty: false,
            hold_save_due: false,
            unsaved: StateDelta::default(),
            alert_scope: StateScope::default(),
            last_evict_scan: 0,
            last_state_save: Instant::now(),
            rx,
            alerts_spool: Arc::clone(&spool),
            spool,
            metrics,
            clock,
            cfg,
            summary_interval,
            channels: crate::model::SeriesMap::default(),
            site: site.to_owned(),
            pending: Vec::with_capacity(1 << 20),
            pending_records: 0,
            in_flight: None,
            spare: Vec::new(),
            pending_acks: Vec::new(),
            clock_watch: crate::clock::ClockWatch::default(),
            clock_synchronised: None,
            clock_held: crate::clock::HeldReadings::default(),
            since_summary: 0,
            bad_since_summary: 0,
            commits: CommitHealth::new(),
            name_errors: LogLimiter::new(FAILURE_LOG_INTERVAL, MAX_LOGGED_CHANNELS),
            dropped_since_log: 0,
            view: None,
            commands: None,
            notices: None,
            history: None,
            heartbeat: Arc::new(Heartbeat::default()),
        }
    }

    /// Take requests (alert acknowledgements) from `rx`.
    #[must_use]
    pub fn with_commands(mut self, rx: command::CommandRx) -> Self {
        self.commands = Some(rx);
        self
    }

    /// Commit alert events and the engine's state to `spool` instead of the points' spool
    /// (docs/ARCHITECTURE.md §Spool layout, Two files).
    #[must_use]
    pub fn with_alerts_spool(mut self, spool: Arc<Spool>) -> Self {
        self.alerts_spool = spool;
        self
    }

    /// Deliver the notices that come from `rx` (the daily report's summary) like alert events.
    #[must_use]
    pub fn with_notices(mut self, rx: command::NoticeRx) -> Self {
        self.notices = Some(rx);
        self
    }

    /// Acknowledge an alert for the console: the event is stored and delivered like any
    /// alert event, committed at once with the rule state.
    async fn acknowledge(&mut self, req: command::AckRequest) {
        let now = self.clock.now_ns();
        let result = match self.evaluator.acknowledge(&req.id, &req.by, &req.note, now) {
            Ok(event) => {
                self.push_alert(&event);
                self.flush().await;
                // Alerts are committed first and all together: none left means this one is in.
                let stored = self.pending_alert_records == 0;
                info!(alert = %event.id, seq = event.seq, by = %req.by, stored, "Alert acknowledged.");
                Ok(command::Acked { event, stored })
            }
            Err(refused) => Err(refused),
        };
        // A console that gave up waiting no longer needs the answer.
        let _ = req.reply.send(result);
    }

    /// Hand every reading and alert event stored from now on to `history` as well (only into
    /// its memory: its file is written by its own task, so it never slows a commit).
    #[must_use]
    pub fn with_history(mut self, history: Arc<crate::history::History>) -> Self {
        self.history = Some(history);
        self
    }

    /// Give a stored reading to the history.
    fn keep_in_history(&self, r: &Reading) {
        if let Some(h) = &self.history {
            h.record(&r.series, r.ts, r.value, r.quality);
        }
    }

    /// Take over the readings an earlier engine held to stamp again once the clock is
    /// synchronised ([`EngineInputs::clock_held`], a reload).
    #[must_use]
    pub fn with_clock_held(mut self, held: crate::clock::HeldReadings) -> Self {
        self.clock_held = held;
        self
    }

    /// Publish a [`view::SiteView`] for the console through `tx`, at most every
    /// [`view::VIEW_INTERVAL`].
    #[must_use]
    pub fn with_view(mut self, tx: view::ViewTx) -> Self {
        self.view = Some((tx, None));
        self
    }

    /// Publish a snapshot when one is due and someone looks (a console page open or not, the
    /// receiver is kept by the console; without a console there is no sender).
    fn publish_view(&mut self, now: TimestampNs) {
        let Some((tx, last)) = &mut self.view else {
            return;
        };
        if last.is_some_and(|t: Instant| t.elapsed() < view::VIEW_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        let channels = self.channels.values().cloned();
        let snapshot = view::SiteView::new(now, channels, self.evaluator.active_alerts());
        tx.send_replace(Arc::new(snapshot));
    }

    /// Compute the derived channels of `plan` (`[[derived]]`) from the readings.
    #[must_use]
    pub fn with_derived(mut self, plan: DerivedPlan) -> Self {
        self.derived = DerivedSet::new(plan);
        self.derived
            .set_notice_wording(&self.site, self.evaluator.rules().language);
        self
    }

    /// Compute the pours of `plan` (`[[pours]]`): their GB 50496 series, maturity, strength and
    /// milestone notices (worded in the rules' language).
    #[must_use]
    pub fn with_pours(mut self, plan: CuringPlan) -> Self {
        self.pours = PourSet::new(plan, &self.site, self.evaluator.rules().language);
        self
    }

    /// True when no derived channel and no pour takes readings.
    fn derives_nothing(&self) -> bool {
        self.derived.is_empty() && self.pours.is_empty()
    }

    /// Feed stored readings to the derived channels and the pours; their readings are stored
    /// next. Notices (a structure turned stable, a pour's milestones) are queued with the state
    /// that records them, so that the alerts commit carries both (a notice is never announced
    /// twice, nor lost, by a restart). A combination waits for an input that has not reported up
    /// to its time ([`derived::COMBINE_WAIT`]) unless `wait` is false (the engine stopping: then
    /// everything waiting is computed from what there is).
    fn derive(&mut self, feed: &[Reading], wait: bool) {
        let now = self.clock.now_ns();
        let derived = self.derived.on_batch_at(feed, wait.then_some(now));
        self.derived_pending.extend(derived);
        let notices = self.derived.take_notices(now);
        if !notices.is_empty() {
            for n in &notices {
                self.push_alert(n);
            }
            let saved = self.derived.state_changes();
            self.save_with_notices(saved);
        }
        if self.pours.is_empty() {
            return;
        }
        let poured = self.pours.on_batch(feed, now);
        self.derived_pending.extend(poured);
        if !wait {
            let released = self.pours.release_waiting(now);
            self.derived_pending.extend(released);
        }
        let notices = self.pours.take_notices();
        if notices.is_empty() {
            return;
        }
        for n in &notices {
            self.push_alert(n);
        }
        let saved = self.pours.state_changes();
        self.save_with_notices(saved);
    }

    /// Take `saved` (the state that records notices just queued) into [`Engine::unsaved`], so
    /// it is committed with them.
    fn save_with_notices(&mut self, (delta, errors): (StateDelta, usize)) {
        if errors > 0 {
            self.metrics
                .add(Counter::RuleStateSaveErrors, &[], errors as u64);
        }
        self.unsaved.merge(delta);
    }

    /// Beat `heartbeat` on every tick of the loop instead of a heartbeat nobody reads.
    #[must_use]
    pub fn with_heartbeat(mut self, heartbeat: Arc<Heartbeat>) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Take over the rule state saved in the spool (active alerts, windows), so a restart
    /// neither raises an active alert again nor forgets to clear it. A state that cannot be
    /// read is reported at ERROR and counted (`rule_state_lost_total`), and the rules start
    /// fresh; a format-1 state (one value) is taken over and rewritten per entry.
    async fn restore_rules(&mut self) {
        let spool = Arc::clone(&self.alerts_spool);
        let entries = match crate::supervise::spawn_blocking(move || spool.load_state()).await {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                self.state_lost("unreadable", &e);
                return;
            }
            Err(e) => {
                self.state_lost("unreadable", &e);
                return;
            }
        };
        let mut lost = self.derived.restore(&entries);
        lost.extend(self.pours.restore(&entries));
        if !lost.is_empty() {
            self.state_lost("unreadable_entry", &format!("derived channels {lost:?}"));
        }
        if entries.is_empty() {
            return;
        }
        let now = self.clock.now_ns();
        let rules = self.evaluator.rules().clone();
        match Evaluator::restore_entries(rules, &self.site, entries, now) {
            Ok((ev, report)) => {
                if !report.unreadable.is_empty() {
                    self.metrics.add(
                        Counter::RuleStateLost,
                        &[("reason", "unreadable_entry")],
                        report.unreadable.len() as u64,
                    );
                    error!(entries = ?report.unreadable,
                           "Some saved rule state entries cannot be read; those channels, devices or alerts start fresh (counted in rule_state_lost_total).");
                }
                info!(
                    active_alerts = ev.active_alerts().count(),
                    channels = ev.channel_count(),
                    migrated_from_single_value = report.migrated,
                    "Rule state restored."
                );
                self.evaluator = ev;
                for (rule, output, window) in self.evaluator.take_rate_windows() {
                    self.derived.adopt_rate_window(&rule, &output, window);
                }
                // Everything restored is written once per entry (and a format-1 value removed).
                self.state_dirty = true;
            }
            Err(e) => self.state_lost("unusable", &e),
        }
    }

    /// The saved rule state cannot be used: never a silent restart from zero (issue 7).
    fn state_lost(&self, reason: &'static str, e: &dyn std::fmt::Display) {
        self.metrics
            .incr(Counter::RuleStateLost, &[("reason", reason)]);
        error!(error = %e, reason,
               "Saved rule state cannot be used; rules start fresh: active alerts will be raised again and their earlier ids never cleared (counted in rule_state_lost_total).");
    }

    /// Take the evaluator's changed entries into [`Engine::unsaved`].
    fn collect_state(&mut self) {
        let (delta, errors) = self.evaluator.state_changes();
        if errors > 0 {
            self.metrics
                .add(Counter::RuleStateSaveErrors, &[], errors as u64);
            error!(
                errors,
                "Cannot serialise some rule state entries; retried at the next save."
            );
        }
        self.unsaved.merge(delta);
        for (delta, errors) in [self.derived.state_changes(), self.pours.state_changes()] {
            if errors > 0 {
                self.metrics
                    .add(Counter::RuleStateSaveErrors, &[], errors as u64);
            }
            self.unsaved.merge(delta);
        }
    }

    /// Drop channels idle for `channel_idle_evict` from memory (at most every
    /// [`EVICT_SCAN_INTERVAL`] of gateway time); their entries go with the next state save.
    fn evict_idle(&mut self, now: TimestampNs) {
        let interval = i64::try_from(EVICT_SCAN_INTERVAL.as_nanos()).unwrap_or(i64::MAX);
        if now.saturating_sub(self.last_evict_scan) < interval {
            return;
        }
        self.last_evict_scan = now;
        let idle = i64::try_from(self.cfg.channel_idle_evict().as_nanos()).unwrap_or(i64::MAX);
        // First what changed before, so the evicted entries (written in full) come last.
        self.collect_state();
        let (keys, delta) = self.evaluator.evict_idle(now, idle);
        if keys.is_empty() {
            return;
        }
        self.unsaved.merge(delta);
        for k in &keys {
            self.channels.remove(k.as_str());
        }
        self.channels.shrink_to(self.channels.len() * 2);
        self.state_dirty = true;
        self.metrics
            .add(Counter::ChannelsEvicted, &[], keys.len() as u64);
    }

    /// Bring back the evicted channels this batch has readings for, with their saved rule
    /// state: one spool read for all of them, and only for channels the evaluator evicted (a
    /// new channel costs nothing). Before the batch is ingested, so a rate window or an active
    /// alert continues instead of starting over.
    async fn bring_back(&mut self, batch: &ReadingBatch) {
        // The common case, nothing evicted: no look-up per reading (they showed as 4 % of the
        // gateway's CPU in the ingest benchmark's profile, string compares of the keys).
        if !self.evaluator.any_evicted() {
            return;
        }
        let mut wanted: Vec<String> = Vec::new();
        for r in &batch.readings {
            let key = r.series.key.as_str();
            if !self.channels.contains_key(key)
                && self.evaluator.maybe_evicted(key)
                && !wanted.iter().any(|w| w == key)
            {
                wanted.push(key.to_owned());
            }
        }
        if wanted.is_empty() {
            return;
        }
        let now = self.clock.now_ns();
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        let mut from_spool: Vec<String> = Vec::new();
        for key in &wanted {
            let entry_key = rules::channel_entry_key(key);
            match self.unsaved.entries.get(&entry_key) {
                Some(Some(bytes)) => entries.push((entry_key, bytes.clone())),
                _ => from_spool.push(entry_key),
            }
        }
        if !from_spool.is_empty() {
            let spool = Arc::clone(&self.alerts_spool);
            let keys = from_spool.clone();
            match crate::supervise::spawn_blocking(move || spool.load_state_entries(&keys)).await {
                Ok(Ok(found)) => entries.extend(found),
                Ok(Err(e)) => self.state_lost("evicted_unreadable", &e),
                Err(e) => self.state_lost("evicted_unreadable", &e),
            }
        }
        for (entry_key, bytes) in &entries {
            if let Err(e) = self.evaluator.restore_channel(bytes, now) {
                self.state_lost("evicted_unreadable", &format!("{entry_key}: {e}"));
            }
        }
        for key in &wanted {
            // Missing or unreadable: the channel starts fresh (said above when unreadable).
            self.evaluator.forget_evicted(key);
        }
    }

    /// Run until every source has dropped its sender, then commit what is left and return.
    pub async fn run(self) {
        let _ = self.run_until(CancellationToken::new()).await;
    }

    /// [`Engine::run`], or until `stop` (a config reload, `crate::run`): then commit what is
    /// held and the whole rule state (pending acknowledgements fire as after any commit) and
    /// hand back the input channel with the batches still in it, and the console's channels,
    /// for the next engine.
    pub async fn run_until(mut self, stop: CancellationToken) -> EngineInputs {
        self.restore_rules().await;
        let flush_interval = self.cfg.flush_interval();
        let max_records = self.cfg.flush_max_records();
        let pending_bound = max_records
            .saturating_mul(PENDING_COMMITS_WHILE_COMMITTING)
            .min(MAX_UNSPOOLED_RECORDS);
        let mut flush_at = Instant::now() + flush_interval;
        let mut next_summary = Instant::now() + self.summary_interval;
        let mut next_tick = Instant::now() + TICK_INTERVAL;
        let mut commands = self.commands.take();
        let mut notices = self.notices.take();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                req = command::next(&mut commands) => match req {
                    Some(req) => self.acknowledge(req).await,
                    // The console is gone: no more requests.
                    None => commands = None,
                },
                // Committed with the next tick's flush, as the tick's own alerts.
                notice = command::next(&mut notices) => match notice {
                    Some(n) => self.push_alert(&n),
                    None => notices = None,
                },
                result = points_returned(&mut self.in_flight), if self.in_flight.is_some() => {
                    self.points_committed(result);
                    // What came during the commit goes now if it would have gone at its arrival
                    // (the trigger below), and a piece of held lines is followed by the next.
                    if self.pending_records >= max_records
                        || self.pending_alert_records > 0
                        || self.hold_save_due
                        || (!self.pending_acks.is_empty() && self.rx.is_empty())
                    {
                        self.flush().await;
                    }
                }
                // Past the bound the loop waits for the commit in flight before reading on.
                batch = self.rx.recv(), if self.in_flight.is_none() || self.pending_records < pending_bound => match batch {
                    Some(batch) => {
                        if self.pending_records == 0 {
                            flush_at = Instant::now() + flush_interval;
                        }
                        self.bring_back(&batch).await;
                        self.ingest(batch);
                        self.store_derived().await;
                        self.metrics.set_engine_channels(self.channels.len());
                        // Group commit: a source waiting to acknowledge upstream gets its commit
                        // as soon as the input is drained, not after the flush interval; under
                        // load, batches arrive during a commit and share the next one.
                        // Alerts go out at once, also while points are being committed: the
                        // bureau must not wait for a flush interval, nor for points.
                        if self.pending_records >= max_records
                            || self.pending_alert_records > 0
                            || (!self.pending_acks.is_empty() && self.rx.is_empty())
                        {
                            self.flush().await;
                        }
                    }
                    None => break,
                },
                // Lines wait while a commit is in flight: they go when it returned (above, or here
                // at once if their time came meanwhile).
                () = sleep_until(flush_at), if (self.pending_records > 0 && self.in_flight.is_none()) || self.pending_alert_records > 0 => {
                    self.flush().await;
                    // While commits fail, the next try waits for the backoff, not the interval.
                    flush_at = (Instant::now() + flush_interval).max(self.commits.retry_at.unwrap_or(flush_at));
                }
                () = sleep_until(next_tick) => {
                    // On the tick, not per batch: `select!` polls its branches in random order,
                    // so the tick comes round under any load, and an engine stuck inside a
                    // commit or a batch never gets here. A points commit runs beside the loop:
                    // one in flight for longer than a tick stops the beats as it would if the
                    // loop awaited it, so a hung disk still reaches the watchdog.
                    let stalled = self
                        .in_flight
                        .as_ref()
                        .is_some_and(|c| c.started.elapsed() >= TICK_INTERVAL);
                    if !stalled {
                        self.heartbeat.beat();
                    }
                    // A look at the clock while no batch comes: a jump is seen within a tick,
                    // and readings to stamp again are stored without waiting for one.
                    let (_, again) =
                        self.look_at_clock(self.clock.now_ns(), self.clock.monotonic_ns());
                    if !again.is_empty() {
                        self.ingest(ReadingBatch::from(again));
                    }
                    let now = self.clock.now_ns();
                    for alert in self.evaluator.on_tick(now) {
                        self.push_alert(&alert);
                    }
                    self.store_decided();
                    self.feed_decided();
                    // Combinations whose wait for an input is over.
                    if self.derived.is_waiting() || self.pours.is_waiting() {
                        self.derive(&[], true);
                    }
                    self.store_derived().await;
                    self.evict_idle(now);
                    self.metrics.set_engine_channels(self.channels.len());
                    self.publish_view(now);
                    if self.pending_alert_records > 0
                        || self.hold_save_due
                        || (self.state_dirty && self.last_state_save.elapsed() >= STATE_SAVE_INTERVAL)
                    {
                        self.flush().await;
                    }
                    next_tick = Instant::now() + TICK_INTERVAL;
                }
                () = sleep_until(next_summary) => {
                    self.summary().await;
                    next_summary = Instant::now() + self.summary_interval;
                }
            }
        }
        // The next engine (after a reload) or the next start restores the rule, derived and
        // pour state as it is now, not as of the last periodic save (STATE_SAVE_INTERVAL): in
        // full, in rounds of MAX_CHANNEL_ENTRIES_PER_SAVE entries.
        // What waits for an input is computed from what there is and stored with the rest.
        if self.derived.is_waiting() || self.pours.is_waiting() {
            self.derive(&[], false);
            self.store_derived().await;
        }
        self.hold_save_due = self.state_dirty;
        self.final_flush().await;
        while self.hold_save_due && self.flush_and_wait().await {}
        EngineInputs {
            rx: self.rx,
            commands,
            notices,
            view: self.view.map(|(tx, _)| tx),
            clock_held: std::mem::take(&mut self.clock_held),
        }
    }

    /// Store the derived readings of the last batch the same way as a source's (their own
    /// channels may have been evicted, too); they derive nothing further.
    async fn store_derived(&mut self) {
        while !self.derived_pending.is_empty() {
            let derived = ReadingBatch::from(std::mem::take(&mut self.derived_pending));
            self.bring_back(&derived).await;
            self.ingest(derived);
        }
    }

    /// Feed the held readings decided real steps since the last batch to the derived channels
    /// (a decision by a tick, when no next reading came within `within`).
    fn feed_decided(&mut self) {
        if self.decided_feed.is_empty() {
            return;
        }
        let feed = std::mem::take(&mut self.decided_feed);
        self.derive(&feed, true);
    }

    /// Commit what is held before stopping (after the commit in flight returned), trying
    /// [`FINAL_COMMIT_ATTEMPTS`] times; then say
    /// truthfully what was committed, and count what was not.
    async fn final_flush(&mut self) {
        let mut backoff = Backoff::new(COMMIT_RETRY_INITIAL, COMMIT_RETRY_MAX);
        for attempt in 1..=FINAL_COMMIT_ATTEMPTS {
            // The last words: no backoff gate, but a short wait between attempts.
            self.commits.retry_at = None;
            if self.flush_and_wait().await {
                info!(
                    channels = self.channels.len(),
                    "Engine stopped; every reading received is in the spool."
                );
                return;
            }
            if attempt < FINAL_COMMIT_ATTEMPTS {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        let (readings, alerts) = (self.pending_records, self.pending_alert_records);
        self.metrics.add(
            Counter::ReadingsDropped,
            &[("reason", "uncommitted_at_shutdown")],
            u64::from(readings),
        );
        self.metrics.add(
            Counter::AlertsDropped,
            &[("reason", "uncommitted_at_shutdown")],
            u64::from(alerts),
        );
        error!(
            readings, alerts, attempts = FINAL_COMMIT_ATTEMPTS,
            "Engine stopped with readings and alerts that could not be committed to the spool; they are lost (MQTT QoS 1 senders deliver theirs again, as they were never acknowledged)."
        );
    }

    /// Look at the clock (`crate::clock`): log and count a jump, say when it becomes or stops
    /// being synchronised, and once it is, hand back the held readings stamped again. Whether
    /// it is synchronised, and those readings.
    fn look_at_clock(&mut self, now: TimestampNs, mono: i64) -> (bool, Vec<Reading>) {
        if let Some(jump) = self.clock_watch.look(now, mono) {
            self.metrics.incr(Counter::ClockJumps, &[]);
            warn!(
                from = %crate::engine::derived::initial::format_ts(jump.from), to = %crate::engine::derived::initial::format_ts(jump.to),
                by_s = jump.by_ns() / 1_000_000_000,
                "The system clock jumped (set by NTP or by hand); readings keep the times they were given."
            );
        }
        let synchronised = self.clock.synchronised(now);
        if self.clock_synchronised != Some(synchronised) {
            if synchronised {
                if self.clock_synchronised.is_some() {
                    info!(now = %crate::engine::derived::initial::format_ts(now), held = self.clock_held.len(), "The system clock is synchronised; readings stamped before are stamped again.");
                }
            } else {
                warn!(
                    now = %crate::engine::derived::initial::format_ts(now), build = %crate::engine::derived::initial::format_ts(crate::clock::BUILD_FLOOR_NS),
                    "The system clock is earlier than this gateway's build: not synchronised. Readings the gateway stamps are stored flagged (quality 205) and stamped again once it is (README: Install on a site box, time)."
                );
            }
            self.clock_synchronised = Some(synchronised);
        }
        if !synchronised || self.clock_held.is_empty() {
            return (synchronised, Vec::new());
        }
        let again = self.clock_held.restamp(now, mono);
        self.metrics
            .add(Counter::ReadingsRestamped, &[], again.len() as u64);
        (true, again)
    }

    /// Check, record and render one batch.
    fn ingest(&mut self, batch: ReadingBatch) {
        if let Some(ack) = batch.on_commit {
            self.pending_acks.push(ack);
        }
        let now = self.clock.now_ns();
        let mono = self.clock.monotonic_ns();
        let (synchronised, mut readings) = self.look_at_clock(now, mono);
        // Almost always nothing was stamped again: take the batch as it is, uncopied.
        if readings.is_empty() {
            readings = batch.readings;
        } else {
            readings.extend(batch.readings);
        }
        let max_future = i64::try_from(self.cfg.max_future().as_nanos()).unwrap_or(i64::MAX);
        let max_past = i64::try_from(self.cfg.max_past().as_nanos()).unwrap_or(i64::MAX);
        // Without a synchronised clock, times are judged against the build date, the earliest
        // the true time can be: not "future" (the true now is unknown), "past" by `max_past`
        // before it.
        let reference = if synchronised {
            now
        } else {
            now.max(crate::clock::BUILD_FLOOR_NS)
        };
        // Stored readings that feed the derived channels: good ones the rules used, and bad
        // ones (their derived values are flagged, docs/DOMAIN.md §Derived channels).
        let mut feed = Vec::new();
        for r in readings {
            if !synchronised && crate::clock::HeldReadings::stamped_by_gateway(&r, now) {
                self.store_unsynchronised(r, now, mono);
                continue;
            }
            let reason = if synchronised && r.ts > now.saturating_add(max_future) {
                Some("future")
            } else if r.ts < reference.saturating_sub(max_past) {
                Some("past")
            } else {
                None
            };
            if let Some(reason) = reason {
                self.reject_time(&r, reason, now);
                continue;
            }
            let Some(state) = self.channel(&r.series, now) else {
                continue;
            };
            let repeats_judged = state.judged_ts == Some(r.ts);
            state.last_ts = r.ts;
            state.last_quality = r.quality;
            if r.value.is_some() {
                state.last_value = r.value;
            }
            state.last_raw = r.raw;
            state.readings += 1;
            if !r.quality.is_good() {
                self.bad_since_summary += 1;
            }
            self.since_summary += 1;
            let (verdict, alerts) = self.evaluator.on_reading(&r, now);
            self.state_dirty = true;
            for alert in &alerts {
                self.push_alert(alert);
            }
            // Derived channels take the readings the rules used and the bad ones (their derived
            // values are flagged, docs/DOMAIN.md §Derived channels); readings judged out of
            // range, stuck or held as a possible spike feed none (docs/DOMAIN.md §Data quality)
            // until a held one is decided a real step ([`Engine::store_decided`]).
            if !self.derives_nothing() && matches!(verdict, Verdict::Usable | Verdict::BadQuality) {
                feed.push(r.clone());
            }
            self.store(r, verdict, repeats_judged);
        }
        // Real steps decided by this batch's readings go first, in time order with the rest
        // (a held reading is older than the one that decided it).
        if !self.decided_feed.is_empty() {
            let mut decided = std::mem::take(&mut self.decided_feed);
            decided.append(&mut feed);
            feed = decided;
            feed.sort_by_key(|r| r.ts);
        }
        if !feed.is_empty() {
            self.derive(&feed, true);
        }
    }

    /// A reading the gateway stamped while its clock is not synchronised: stored now, flagged
    /// 205 (no rule judges it, no derived channel takes it), and a copy held to be stamped
    /// again and stored good once the clock is synchronised ([`crate::clock`]).
    fn store_unsynchronised(&mut self, r: Reading, now: TimestampNs, mono: i64) {
        if self.channel(&r.series, now).is_none() {
            return;
        }
        let flagged = crate::clock::flagged(r.clone());
        line::encode_reading(&mut self.pending, &flagged);
        self.pending_records += 1;
        self.bad_since_summary += 1;
        self.since_summary += 1;
        if !self.clock_held.hold(r, now, mono) {
            self.metrics.incr(
                Counter::ReadingsDropped,
                &[("reason", "clock_held_copy_limit")],
            );
        }
    }

    /// Render a reading into the pending lines with the sensor checks' verdict: the one place
    /// that decides what is stored (docs/DOMAIN.md §Data quality). Judged out of range or stuck:
    /// stored with its value and the quality 400 / 401. Held as a possible spike: not stored
    /// yet (a second point at the same time would be kept beside the first by
    /// VictoriaMetrics, not overwrite it); it waits in the rule state, which goes with the next
    /// commit, and is stored by [`Engine::store_decided`] once decided.
    ///
    /// `repeats_judged`: the reading has the time of the channel's last flagged or held one (the
    /// same device sample read again by the next poll): not stored again, so that a sample
    /// never has two qualities in the store.
    fn store(&mut self, mut r: Reading, verdict: rules::Verdict, repeats_judged: bool) {
        use rules::Verdict;
        match verdict {
            Verdict::Repeat if repeats_judged => {}
            Verdict::Held => {
                self.hold_save_due = true;
                self.judged(&r);
            }
            _ => {
                if let Some(flag) = verdict.flag() {
                    r.quality = flag;
                    self.bad_since_summary += 1;
                    self.judged(&r);
                }
                line::encode_reading(&mut self.pending, &r);
                self.pending_records += 1;
                self.keep_in_history(&r);
            }
        }
        if self.evaluator.has_decided() {
            self.store_decided();
        }
    }

    /// Remember the time of a reading stored flagged or held (see [`Engine::store`]).
    fn judged(&mut self, r: &Reading) {
        if let Some(c) = self.channels.get_mut(r.series.key.as_str()) {
            c.judged_ts = Some(r.ts);
        }
    }

    /// Store the held readings the evaluator decided: a spike with the quality 402, a real step
    /// good, each with its own time, value and raw value. A real step is a good reading: it
    /// feeds the derived channels like any (queued in `decided_feed`, fed with the batch or
    /// the tick that decided it; docs/DOMAIN.md §Data quality).
    fn store_decided(&mut self) {
        for d in self.evaluator.take_decided() {
            let series = self
                .channels
                .get(d.channel.key.as_str())
                .map_or_else(|| d.channel.series(), |c| Arc::clone(&c.series));
            let r = Reading {
                series,
                ts: d.ts,
                value: Some(d.value),
                raw: d.raw,
                quality: d.quality(),
            };
            if d.spike {
                self.bad_since_summary += 1;
            }
            line::encode_reading(&mut self.pending, &r);
            self.pending_records += 1;
            self.keep_in_history(&r);
            if !d.spike && !self.derives_nothing() {
                self.decided_feed.push(r);
            }
        }
    }

    /// The state of a channel, created on first sight after checking that its line-protocol
    /// prefix is valid (once per channel, not per reading). `None` for a channel whose names
    /// cannot be written.
    fn channel(&mut self, series: &Arc<Series>, now: TimestampNs) -> Option<&mut ChannelState> {
        // One look-up per reading (the entry, keyed by a clone of the reading's `Arc`: two
        // atomic counts, against a second hash, probe and key comparison): the look-ups of the
        // channel maps were the largest part of the engine's time per reading in the ingest
        // benchmark's profile (README §Performance).
        let vacant = match self
            .channels
            .entry(crate::model::SeriesKey(Arc::clone(series)))
        {
            std::collections::hash_map::Entry::Occupied(e) => return Some(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => v,
        };
        self.evaluator.register(series, now);
        let probe = format!("{} value=0 0\n", series.line_prefix);
        if let Err(e) = line::validate(probe.as_bytes()) {
            self.metrics.incr(
                Counter::ReadingsRejected,
                &[("reason", "unwritable_name"), ("device", &series.device)],
            );
            if let Some(suppressed) = self.name_errors.allow(&series.key) {
                error!(channel = %series.key, error = %e, suppressed,
                       "Channel names cannot be written as line protocol; its readings are dropped (counted in readings_rejected_total).");
            }
            return None;
        }
        Some(vacant.insert(ChannelState {
            series: Arc::clone(series),
            last_ts: 0,
            last_value: None,
            last_raw: None,
            last_quality: Quality::Good,
            readings: 0,
            judged_ts: None,
        }))
    }

    /// Queue an alert event for the alerts stream, and as an `alerts` point for dashboards.
    fn push_alert(&mut self, alert: &Alert) {
        if serde_json::to_writer(&mut self.pending_alerts, alert).is_err() {
            // Serialising plain strings and numbers cannot fail; count it if it ever does.
            self.metrics.incr(Counter::AlertsUnserialisable, &[]);
            return;
        }
        self.alert_scope.add(alert);
        self.pending_alerts.push(b'\n');
        self.pending_alert_records += 1;
        encode_alert_line(&mut self.pending, alert);
        self.pending_records += 1;
        self.state_dirty = true;
        if let Some(h) = &self.history {
            h.record_alert(alert);
        }
        self.metrics.incr(
            Counter::Alerts,
            &[
                ("kind", alert.kind.as_str()),
                ("state", state_name(alert.state)),
            ],
        );
        warn!(alert = %alert.id, seq = alert.seq, rule = %alert.rule, channel = %alert.channel, level = ?alert.level, state = ?alert.state, "{}", alert.message);
    }

    fn reject_time(&mut self, r: &Reading, reason: &'static str, now: TimestampNs) {
        let device = r.series.device.as_str();
        self.metrics.incr(
            Counter::ReadingsRejected,
            &[("reason", reason), ("device", device)],
        );
        // A device with a wrong clock sends every reading wrong: one line per device and
        // reason per interval, with the count of the others.
        if let Some(suppressed) = self.name_errors.allow(&format!("time {reason} {device}")) {
            // `abs_diff`: a far-past or far-future time must not overflow the subtraction.
            let skew = Duration::from_nanos(r.ts.abs_diff(now));
            warn!(
                channel = %r.series.key, reason, skew = %humantime::format_duration(skew),
                suppressed,
                "Reading time is implausible (device clock wrong?); reading rejected (counted in readings_rejected_total)."
            );
        }
    }

    /// Commit the pending alerts with their rule state (awaited), then, unless a points commit
    /// is in flight, the rule state when a save is due (awaited) and the first piece of the
    /// pending lines (in the background: [`Engine::points_committed`] takes its result). Points
    /// wait while the alerts or the state cannot be committed. True when nothing is left
    /// uncommitted and nothing is in flight; false while lines are in flight or held, or commits
    /// fail (or wait for their retry time), with everything still held.
    async fn flush(&mut self) -> bool {
        if !self.commits.may_try() {
            self.bound_held_points();
            return false;
        }
        if self.pending_alert_records > 0 && !self.flush_alerts().await {
            self.bound_held_points();
            return false;
        }
        if self.in_flight.is_some() {
            // The lines go with the next commit, once this one returned: in order, one at a time.
            return false;
        }
        // Saved by the loop, never with a background commit: in the loop's order with the alert
        // commits, so an older snapshot never lands after a newer one.
        let save_due = self.hold_save_due
            || (self.state_dirty
                && (self.last_state_save.elapsed() >= STATE_SAVE_INTERVAL
                    || self.derived.take_prompt_save()));
        if save_due && !self.save_rule_state().await {
            self.bound_held_points();
            return false;
        }
        if self.pending_records == 0 {
            // A batch of only rejected readings still counts as handled.
            for ack in self.pending_acks.drain(..) {
                let _ = ack.send(());
            }
            return true;
        }
        self.start_points_commit();
        false
    }

    /// [`Engine::flush`] until nothing is left or a commit fails, waiting for each points commit
    /// (at a stop). True when everything held is committed.
    async fn flush_and_wait(&mut self) -> bool {
        loop {
            if self.in_flight.is_some() {
                let result = points_returned(&mut self.in_flight).await;
                self.points_committed(result);
            }
            let done = self.flush().await;
            if self.in_flight.is_none() {
                return done;
            }
        }
    }

    /// Commit the changed rule state entries alone (a reading held as a possible spike, the
    /// periodic save, the rounds at a stop), awaited: before the points commit that follows, and
    /// before the acknowledgement of a batch whose reading is held. True when committed; false
    /// when the commit failed (acknowledgements wait, retried).
    async fn save_rule_state(&mut self) -> bool {
        self.collect_state();
        let state = self.unsaved.clone();
        let spool = Arc::clone(&self.alerts_spool);
        let error = match crate::supervise::spawn_blocking(move || spool.save_state(&state)).await {
            Ok(Ok(())) => {
                self.commits.succeeded();
                self.state_saved();
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(join) => format!("the commit task failed: {join}"),
        };
        self.metrics.incr(Counter::SpoolErrors, &[]);
        self.commits
            .failed("rule state", &error, self.pending_records, 0);
        false
    }

    /// Start the commit of the first piece of the pending lines in the background. Held lines
    /// can outgrow the largest chunk the spool's bound takes (after an outage of the disk, or a
    /// small `max_bytes`): they are committed in pieces of at most that size, at line ends, one
    /// after the other, and the commit notices go with the last piece.
    fn start_points_commit(&mut self) {
        let limit = usize::try_from(self.spool.max_chunk_bytes(Stream::Points))
            .unwrap_or(usize::MAX)
            .max(1);
        let all = &self.pending;
        let cut = if all.len() <= limit {
            all.len()
        } else {
            // The last line end within the limit; a single longer line goes alone.
            all[..limit]
                .iter()
                .rposition(|b| *b == b'\n')
                .or_else(|| all.iter().position(|b| *b == b'\n'))
                .map_or(all.len(), |i| i + 1)
        };
        let (piece, records, acks) = if cut == all.len() {
            let piece = std::mem::replace(&mut self.pending, std::mem::take(&mut self.spare));
            let acks = std::mem::take(&mut self.pending_acks);
            (piece, self.pending_records, acks)
        } else {
            let piece = all[..cut].to_vec();
            // The rest stays pending, in front of what comes next.
            self.pending.drain(..cut);
            let records =
                u32::try_from(piece.iter().filter(|b| **b == b'\n').count()).unwrap_or(u32::MAX);
            (piece, records, Vec::new())
        };
        self.pending_records = self.pending_records.saturating_sub(records);
        let body = Arc::new(piece);
        let (spool, task_body) = (Arc::clone(&self.spool), Arc::clone(&body));
        // No rule state: the loop saves it itself (see `flush`).
        let task = crate::supervise::spawn_blocking(move || {
            spool.append_with_state(Stream::Points, &task_body, records, None)
        });
        self.in_flight = Some(PointsCommit {
            task,
            body,
            records,
            acks,
            started: Instant::now(),
        });
    }

    /// The points commit in flight returned with `result`. Committed: its notices fire.
    /// Failed (an error or a panic in the task): its lines go back in front of those pending
    /// since and its notices wait with theirs, retried after the backoff.
    fn points_committed(
        &mut self,
        result: Result<Result<AppendOutcome, SpoolError>, tokio::task::JoinError>,
    ) {
        let Some(PointsCommit {
            task: _,
            body,
            records,
            mut acks,
            started: _,
        }) = self.in_flight.take()
        else {
            return;
        };
        // The task has ended, so this is the only reference left.
        let mut body = Arc::try_unwrap(body).unwrap_or_else(|shared| (*shared).clone());
        let error = match result {
            Ok(Ok(outcome)) => {
                self.commits.succeeded();
                self.metrics
                    .add(Counter::ReadingsSpooled, &[], u64::from(records));
                self.count_dropped_alerts(outcome.dropped_alert_records);
                if outcome.dropped_records > 0 {
                    self.metrics.add(
                        Counter::ReadingsDropped,
                        &[("reason", "spool_full")],
                        outcome.dropped_records,
                    );
                    // Logged when it starts, then at most once per interval with the count.
                    self.dropped_since_log += outcome.dropped_records;
                    if self.name_errors.allow(SPOOL_FULL).is_some() {
                        warn!(
                            dropped = self.dropped_since_log,
                            "Spool is full: the oldest undelivered readings were dropped to make room (raise spool.max_bytes or restore the uplink)."
                        );
                        self.dropped_since_log = 0;
                    }
                }
                for ack in acks {
                    // A source that went away no longer needs the notice.
                    let _ = ack.send(());
                }
                // Reuse the buffer's capacity for the lines after the next.
                body.clear();
                self.spare = body;
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(join) => format!("the commit task failed: {join}"),
        };
        self.metrics.incr(Counter::SpoolErrors, &[]);
        body.extend_from_slice(&self.pending);
        self.pending = body;
        self.pending_records = self.pending_records.saturating_add(records);
        acks.append(&mut self.pending_acks);
        self.pending_acks = acks;
        self.commits.failed(
            "points",
            &error,
            self.pending_records,
            self.pending_alert_records,
        );
        self.bound_held_points();
    }

    /// Undelivered alert events the spool dropped to keep alerts within their share of the
    /// bound (an alert sink down for long while alarms flap): counted, logged once per interval.
    fn count_dropped_alerts(&mut self, dropped: u64) {
        if dropped == 0 {
            return;
        }
        self.metrics
            .add(Counter::AlertsDropped, &[("reason", "spool_full")], dropped);
        if let Some(suppressed) = self.name_errors.allow("alerts dropped") {
            error!(
                dropped, suppressed,
                "The spool's share for alerts is full: the oldest undelivered alert events were dropped (restore the alert sinks or raise spool.max_bytes)."
            );
        }
    }

    /// While commits fail: past [`MAX_UNSPOOLED_RECORDS`] held readings, drop them (counted,
    /// logged) so that memory stays bounded. Their senders are not told: MQTT QoS 1 redelivers.
    fn bound_held_points(&mut self) {
        if self.pending_records < MAX_UNSPOOLED_RECORDS {
            return;
        }
        let dropped = self.pending_records;
        self.metrics.add(
            Counter::ReadingsDropped,
            &[("reason", "spool_error")],
            u64::from(dropped),
        );
        error!(
            dropped,
            limit = MAX_UNSPOOLED_RECORDS,
            "Spool cannot be written and the readings held in memory reached their limit; they were dropped."
        );
        self.pending = Vec::with_capacity(1 << 20);
        self.pending_records = 0;
        self.pending_acks.clear();
    }

    /// The unsaved rule state entries were committed.
    /// The unsaved entries of the alerts' scope were committed with them; other touched
    /// channels are still to be saved, so the periodic save stays due.
    fn state_saved_with_alerts(&mut self) {
        let written = std::mem::take(&mut self.unsaved);
        self.metrics.add(
            Counter::RuleStateBytesWritten,
            &[],
            written.written_bytes() as u64,
        );
    }

    fn state_saved(&mut self) {
        let written = std::mem::take(&mut self.unsaved);
        self.metrics.add(
            Counter::RuleStateBytesWritten,
            &[],
            written.written_bytes() as u64,
        );
        // A save stopped at its bound (rules::MAX_CHANNEL_ENTRIES_PER_SAVE) goes on with the
        // next commit, not after another STATE_SAVE_INTERVAL.
        self.state_dirty = self.evaluator.state_left();
        self.hold_save_due = self.state_dirty;
        self.last_state_save = Instant::now();
    }

    /// Commit the pending alert events and the rule state in one transaction. On failure the
    /// alerts stay pending (all of them: the commit task gets a shared copy, so even its panic
    /// loses nothing) and are retried with the next flush: alerts are never dropped here.
    /// True when committed.
    async fn flush_alerts(&mut self) -> bool {
        // Only the state of the channels and devices of these alerts goes with them; the
        // other touched channels wait for the next save with points.
        let (delta, errors) = self.evaluator.state_changes_in(Some(&self.alert_scope));
        if errors > 0 {
            self.metrics
                .add(Counter::RuleStateSaveErrors, &[], errors as u64);
        }
        self.unsaved.merge(delta);
        let state = self.unsaved.clone();
        let body = Arc::new(std::mem::take(&mut self.pending_alerts));
        let records = self.pending_alert_records;
        let (spool, task_body) = (Arc::clone(&self.alerts_spool), Arc::clone(&body));
        let result = crate::supervise::spawn_blocking(move || {
            spool.append_with_state(Stream::Alerts, &task_body, records, Some(&state))
        })
        .await;
        let body = Arc::try_unwrap(body).unwrap_or_else(|shared| (*shared).clone());
        let error = match result {
            Ok(Ok(outcome)) => {
                self.commits.succeeded();
                self.count_dropped_alerts(outcome.dropped_alert_records);
                self.metrics
                    .add(Counter::AlertsSpooled, &[], u64::from(records));
                self.pending_alert_records = 0;
                self.alert_scope = StateScope::default();
                self.state_saved_with_alerts();
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(join) => format!("the commit task failed: {join}"),
        };
        self.metrics.incr(Counter::SpoolErrors, &[]);
        self.pending_alerts = body;
        self.commits
            .failed("alerts", &error, self.pending_records, records);
        false
    }

    /// Log what flowed since the last summary.
    async fn summary(&mut self) {
        let spools = crate::spool::Spools {
            points: Arc::clone(&self.spool),
            alerts: Arc::clone(&self.alerts_spool),
        };
        let stats = crate::supervise::spawn_blocking(move || spools.stats())
            .await
            .ok();
        let mut latest: Vec<&ChannelState> = self
            .channels
            .values()
            .filter(|c| c.last_value.is_some())
            .collect();
        latest.sort_by(|a, b| {
            b.last_ts
                .cmp(&a.last_ts)
                .then_with(|| a.series.key.cmp(&b.series.key))
        });
        let sample: Vec<String> = latest
            .iter()
            .take(3)
            .map(|c| {
                format!(
                    "{}={}{}",
                    c.series.key,
                    c.last_value.unwrap_or_default(),
                    c.series.unit
                )
            })
            .collect();
        let flow = summary::Flow {
            interval: self.summary_interval,
            readings: self.since_summary,
            flagged: self.bad_since_summary,
            channels: self.channels.len(),
        };
        info!("{}", summary::summary_line(flow, stats.as_ref(), &sample));
        self.since_summary = 0;
        self.bad_since_summary = 0;
    }

    /// The channels seen so far (for tests and the status page).
    #[must_use]
    pub fn channels(&self) -> &crate::model::SeriesMap<ChannelState> {
        &self.channels
    }
}

#[cfg(test)]
mod tests;
