//! The evaluator: feeds each reading through the sensor checks and the rules that match its
//! channel, and turns state transitions into [`Alert`] events.
//!
//! Owns all evaluation state (per channel: checks, baseline, rate windows, rule conditions; per
//! pair; per device; the latest event of every active alert), its snapshot
//! ([`EvaluatorState`]) and restore. Does not own time (every call takes `now`), I/O, persistence
//! or delivery: the engine task calls it, stores the snapshot, and spools the events.
//!
//! # Order of checks for one reading
//! 1. Quality not good → a bad-quality observation (device fault); nothing else.
//! 2. Not newer than the channel's last good reading (a device sample read again by the next
//!    poll, a re-delivered message) → [`Verdict::Repeat`], not evaluated twice.
//! 3. Outside the physical range → out-of-range observation; not used.
//! 4. Stuck (same value `count` times / for `for`) → not used.
//! 5. A jump beyond the spike bound → held until the next reading says whether it was a spike
//!    (the value came back: discarded, spike fault) or a real step (used, late, with its own
//!    time). Held at most `within`; [`Evaluator::on_tick`] releases it after that.
//! 6. Otherwise the reading is used: baseline, rate windows, rule conditions, pairs.
//!
//! Readings that fail 1–5 never raise, escalate or clear a quality alert and never enter a rate
//! window (docs/DOMAIN.md §Data quality: evaluate alarms only on good points, raise separate
//! device-fault notices).
//!
//! # Time
//! Conditions, windows and spike checks run on the reading's own time (device time when the
//! device sends it), so buffered uploads are judged as they happened. Stale checks run on `now`
//! (gateway time of arrival): silence is about the link, not the device clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::condition::{Active, Condition, Confirm, FaultCondition, FaultStep, Step, Streak};
use super::config::{
    ChannelRule, Measure, Origin, RuleSet, BAD_QUALITY_CHECK, RANGE_CHECK, SPIKE_CHECK, STUCK_CHECK,
};
use super::plan::Plan;
use super::selector::ChannelInfo;
use super::window::RateWindow;

#[path = "ack.rs"]
mod ack;
#[path = "saved.rs"]
mod saved;

use crate::alert::{render_message, stable_id, Alert, AlertState, Cause, Language, Level, Side};
use crate::model::{Quality, QuantityKind, Reading, Series, TimestampNs, NANOS_PER_SEC};
pub use ack::AckRefused;
pub use saved::MAX_CHANNEL_ENTRIES_PER_SAVE;
pub use saved::{channel_entry_key, RestoreReport, StateScope, ENTRY_FORMAT};

/// Version of [`EvaluatorState`]'s layout. A snapshot of another version is refused by
/// [`Evaluator::restore`]; the engine then starts fresh.
pub const STATE_FORMAT: u32 = 1;

/// What the evaluator made of a reading, for the engine (to count, or to flag the stored point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Used by the rules.
    Usable,
    /// Quality not good (or no value): counted toward a bad-quality device fault only.
    BadQuality,
    /// Not newer than the channel's last good reading: already evaluated, ignored.
    Repeat,
    /// Outside the physical range of its quantity: not used.
    OutOfRange,
    /// The value has not moved for the stuck check's count / duration: not used.
    Stuck,
    /// A jump beyond the spike bound, held until the next reading (or `within`) decides whether
    /// it is a spike (then never used) or a real step (then used with its own time).
    Held,
}

impl Verdict {
    /// True when the rules used the reading.
    #[must_use]
    pub const fn is_usable(self) -> bool {
        matches!(self, Self::Usable)
    }

    /// The quality the reading is stored with when a sensor check judged it unusable (out of
    /// range, stuck); `None` when it is stored with the quality it came with (usable, bad
    /// quality, repeat) or held (its verdict comes with [`Evaluator::take_decided`]).
    #[must_use]
    pub const fn flag(self) -> Option<Quality> {
        match self {
            Self::OutOfRange => Some(Quality::OutOfRange),
            Self::Stuck => Some(Quality::Stuck),
            Self::Usable | Self::BadQuality | Self::Repeat | Self::Held => None,
        }
    }
}

/// The verdict on a reading that was held as a possible spike: it came back (a spike, stored
/// flagged) or it did not (a real step, stored good and used by the rules, late, with its own
/// time). Taken by the engine with [`Evaluator::take_decided`] to store the held reading.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldVerdict {
    /// The channel.
    pub channel: ChannelInfo,
    /// The held reading's own time.
    pub ts: TimestampNs,
    /// Its value.
    pub value: f64,
    /// Its raw value, when the channel has a conversion.
    pub raw: Option<f64>,
    /// True: a spike ([`Quality::Spike`]); false: a real step ([`Quality::Good`]).
    pub spike: bool,
}

impl HeldVerdict {
    /// The quality the held reading is stored with.
    #[must_use]
    pub const fn quality(&self) -> Quality {
        if self.spike {
            Quality::Spike
        } else {
            Quality::Good
        }
    }
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The snapshot was written by another version of the layout.
    #[error("alert state has format {found}, this gateway reads format {expected}; starting with empty alert state")]
    Format {
        /// The snapshot's format.
        found: u32,
        /// [`STATE_FORMAT`].
        expected: u32,
    },
    /// The saved state cannot be parsed.
    #[error("saved alert state cannot be read: {0}")]
    Unreadable(String),
}

/// A good reading's time and value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Sample {
    ts: TimestampNs,
    value: f64,
}

/// The current run of (nearly) identical values, for the stuck check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Run {
    value: f64,
    streak: Streak,
}

/// A jump waiting for the next reading's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Held {
    sample: Sample,
    /// Gateway time it arrived.
    arrived: TimestampNs,
    /// The reading's raw value, stored with it once decided.
    #[serde(default)]
    raw: Option<f64>,
}

/// Device-fault state of a channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Faults {
    bad_quality: FaultCondition,
    range: FaultCondition,
    stuck: FaultCondition,
    spike: FaultCondition,
    run: Option<Run>,
    held: Option<Held>,
}

/// The persisted state of a channel apart from its rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ChannelData {
    /// Gateway time of the last reading of any quality (or of registration / restore).
    last_heard: TimestampNs,
    /// Data time of the newest good reading (duplicates and older ones are not re-evaluated).
    last_ts: Option<TimestampNs>,
    /// The last reading the rules used.
    last_usable: Option<Sample>,
    /// The first reading the rules used: the baseline of change rules without one.
    first_usable: Option<Sample>,
    faults: FaultsSlot,
}

/// The no-fault state that channels without a [`Faults`] of their own read.
static NO_FAULTS: std::sync::LazyLock<Faults> = std::sync::LazyLock::new(Faults::default);

/// A channel's [`Faults`], allocated only when a sensor check first records something: a
/// channel no check watches reads the shared no-fault state (issue 14: 328 bytes per channel,
/// 1.6 MB on a 5,000-channel site). Saved exactly as a [`Faults`] (the saved format is
/// unchanged); a saved all-default state is read back unallocated.
#[derive(Debug, Clone, Default, PartialEq)]
struct FaultsSlot(Option<Box<Faults>>);

impl FaultsSlot {
    /// The channel's own state, if it has one (mutating it allocates nothing).
    fn existing_mut(&mut self) -> Option<&mut Faults> {
        self.0.as_deref_mut()
    }
}

impl std::ops::Deref for FaultsSlot {
    type Target = Faults;
    fn deref(&self) -> &Faults {
        self.0.as_deref().unwrap_or(&NO_FAULTS)
    }
}

impl std::ops::DerefMut for FaultsSlot {
    /// Allocates the channel's own state on first write.
    fn deref_mut(&mut self) -> &mut Faults {
        self.0.get_or_insert_with(Box::default)
    }
}

impl Serialize for FaultsSlot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Faults::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for FaultsSlot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = Faults::deserialize(d)?;
        Ok(Self((f != Faults::default()).then(|| Box::new(f))))
    }
}

/// The state of one rule on one channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct RuleSlot {
    upper: Condition,
    lower: Condition,
    /// The rate window a rate rule kept here before its rate became a derived channel (state
    /// saved by earlier versions): read once and handed to the rule's derived block
    /// ([`Evaluator::take_rate_windows`]), never written.
    #[serde(default, rename = "window", skip_serializing)]
    legacy_window: Option<Box<RateWindow>>,
}

/// The state of one pair of a difference or tilt rule, as earlier versions saved it (`p/`
/// entries): read once and carried to the rule's derived pair channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PairState {
    upper: Condition,
    lower: Condition,
}

/// A channel at run time.
#[derive(Debug)]
struct Channel {
    info: ChannelInfo,
    device: usize,
    /// Shared with every channel the same rules, stale rules and checks apply to.
    plan: Arc<Plan>,
    data: ChannelData,
    /// Aligned with `plan.rules`.
    slots: Vec<RuleSlot>,
    /// Aligned with `plan.stale`.
    stale: Vec<FaultCondition>,
    /// A reading or tick may have changed its state since the last save (`saved.rs`).
    touched: bool,
    /// Hash of the content last handed out for saving, without the fields that change with
    /// every reading and are not worth a write of their own (`saved.rs`); `None`: never saved.
    saved: Option<u64>,
}

/// A device at run time: the union of its channels, for device-scope stale rules.
#[derive(Debug)]
struct Device {
    name: String,
    structure: Option<String>,
    last_heard: TimestampNs,
    /// Device-scope stale rules watching it (indices into `RuleSet::stale_rules`).
    rules: Vec<usize>,
    /// Aligned with `rules`.
    stale: Vec<FaultCondition>,
    /// Restored conditions not yet claimed by a rule (claimed as channels are restored).
    parked: BTreeMap<String, FaultCondition>,
    /// Hash of the stale conditions last handed out for saving; `None`: never saved.
    saved: Option<u64>,
}

/// A channel in a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChannelSnapshot {
    info: ChannelInfo,
    data: ChannelData,
    /// By rule name.
    rules: BTreeMap<String, RuleSlot>,
    /// By stale rule name.
    stale: BTreeMap<String, FaultCondition>,
}

/// A device in a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeviceSnapshot {
    name: String,
    last_heard: TimestampNs,
    /// By stale rule name.
    stale: BTreeMap<String, FaultCondition>,
}

/// A pair in a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PairSnapshot {
    rule: String,
    a: String,
    b: String,
    state: PairState,
}

/// Everything the evaluator knows, serialisable (serde) so the engine can persist it and
/// [`Evaluator::restore`] it after a restart: active alerts (no duplicate raise, no lost clear),
/// confirmation runs, baselines, rate windows. Keyed by names, not positions, so it survives
/// edits of the rule file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvaluatorState {
    format: u32,
    channels: Vec<ChannelSnapshot>,
    devices: Vec<DeviceSnapshot>,
    pairs: Vec<PairSnapshot>,
    /// The latest event of every active alert.
    active: Vec<Alert>,
}

impl EvaluatorState {
    /// Number of active alerts in the snapshot.
    #[must_use]
    pub fn active_alerts(&self) -> usize {
        self.active.len()
    }
}

/// What every event of one condition shares.
struct Subject {
    cause: Cause,
    rule: String,
    label: Option<String>,
    side: Option<Side>,
    structure: Option<String>,
    device: String,
    point: String,
    channel: String,
    channels: Vec<String>,
    quantity: Option<QuantityKind>,
    unit: String,
}

impl Subject {
    fn channel(
        info: &ChannelInfo,
        cause: Cause,
        rule: &str,
        label: Option<&str>,
        side: Option<Side>,
        unit: String,
    ) -> Self {
        Self {
            cause,
            rule: rule.to_owned(),
            label: label.map(str::to_owned),
            side,
            structure: info.structure().map(str::to_owned),
            device: info.device.clone(),
            point: info.point.clone(),
            channel: info.key.clone(),
            channels: vec![info.key.clone()],
            quantity: Some(info.kind),
            unit,
        }
    }

    /// A quality rule's condition on channel `info`. For a rate, difference or tilt rule,
    /// `info` is the rule's derived channel, and the alert names the channel(s) it was derived
    /// from (as its message and its id always did, so an alert raised before the rule judged
    /// derived channels keeps its id and its wording); a tilt is a ratio, shown without a unit,
    /// and a tilt pair's channels are settlement points. `channel`, `device` and `point` are
    /// the derived channel's: the series the alert was judged on.
    fn of_rule(info: &ChannelInfo, rule: &ChannelRule, side: Side) -> Self {
        let mut s = Self::channel(
            info,
            rule.cause,
            &rule.name,
            rule.label.as_deref(),
            Some(side),
            info.unit.clone(),
        );
        match &rule.origin {
            Origin::Channels => {}
            // `<channel>.<rule>`: the alert names the channel whose rate it is, and its quantity
            // ("rate of settlement").
            Origin::Rate { .. } => {
                if let Some(input) = info
                    .key
                    .strip_suffix(rule.name.as_str())
                    .and_then(|k| k.strip_suffix('.'))
                {
                    s.channels = vec![input.to_owned()];
                }
                if let Some(q) = info
                    .tags
                    .get(crate::engine::derived::RATE_OF_TAG)
                    .and_then(|m| QuantityKind::from_measurement(m))
                {
                    s.quantity = Some(q);
                }
            }
            Origin::Pairs { pairs, by_output } => {
                if let Some(p) = by_output.get(&info.key).and_then(|&i| pairs.get(i)) {
                    s.channels = vec![p.a.clone(), p.b.clone()];
                }
                if rule.cause == Cause::Tilt {
                    s.unit = String::new();
                    s.quantity = Some(QuantityKind::Settlement);
                }
            }
        }
        s
    }

    fn device(d: &Device, rule: &str) -> Self {
        Self {
            cause: Cause::DeviceSilent,
            rule: rule.to_owned(),
            label: None,
            side: None,
            structure: d.structure.clone(),
            device: d.name.clone(),
            point: String::new(),
            channel: d.name.clone(),
            channels: Vec::new(),
            quantity: None,
            unit: "s".to_owned(),
        }
    }
}

/// Turns condition steps into alert events.
struct Emit<'a> {
    site: &'a str,
    lang: Language,
    now: TimestampNs,
    active: &'a mut BTreeMap<String, Alert>,
    out: &'a mut Vec<Alert>,
}

/// Everything an event carries beyond its subject and step.
#[derive(Clone, Copy)]
struct EventData {
    value: Option<f64>,
    threshold: Option<f64>,
    quality: Option<i64>,
    ts: TimestampNs,
}

impl Emit<'_> {
    /// Open an alert: its id is derived from the subject and the raise time.
    fn open(&self, slot: &mut Option<Active>, s: &Subject, level: Level, ts: TimestampNs) {
        let channels: Vec<&str> = if s.channels.is_empty() {
            vec![s.channel.as_str()]
        } else {
            s.channels.iter().map(String::as_str).collect()
        };
        let id = stable_id(self.site, &s.rule, s.side, &channels, ts);
        *slot = Some(Active {
            id,
            level,
            started_at: ts,
            seq: 0,
        });
    }

    fn quality(
        &mut self,
        slot: &mut Option<Active>,
        step: Step,
        s: &Subject,
        value: f64,
        thresholds: &[Option<f64>; 4],
        ts: TimestampNs,
    ) {
        let (state, level, previous) = match step {
            Step::Raise(l) => {
                self.open(slot, s, l, ts);
                (AlertState::Raised, l, None)
            }
            Step::Change { from, to } => {
                let Some(a) = slot.as_mut() else { return };
                a.level = to;
                a.next_seq();
                (
                    if to > from {
                        AlertState::Escalated
                    } else {
                        AlertState::DeEscalated
                    },
                    to,
                    Some(from),
                )
            }
            Step::Clear(l) => {
                let Some(a) = slot.as_mut() else { return };
                a.next_seq();
                (AlertState::Cleared, l, Some(l))
            }
        };
        let ev = EventData {
            value: Some(value),
            threshold: thresholds[level.index()],
            quality: None,
            ts,
        };
        self.finish(slot, s, state, level, previous, ev);
    }

    fn fault(
        &mut self,
        slot: &mut Option<Active>,
        step: FaultStep,
        level: Level,
        s: &Subject,
        ev: EventData,
    ) {
        let state = match step {
            FaultStep::Raise => {
                self.open(slot, s, level, ev.ts);
                AlertState::Raised
            }
            FaultStep::Clear => {
                let Some(a) = slot.as_mut() else { return };
                a.next_seq();
                AlertState::Cleared
            }
        };
        let level = slot.as_ref().map_or(level, |a| a.level);
        let previous = (state == AlertState::Cleared).then_some(level);
        self.finish(slot, s, state, level, previous, ev);
    }

    fn finish(
        &mut self,
        slot: &mut Option<Active>,
        s: &Subject,
        state: AlertState,
        level: Level,
        previous: Option<Level>,
        ev: EventData,
    ) {
        let Some(a) = slot.as_ref() else { return };
        let mut alert = Alert {
            id: a.id.clone(),
            seq: a.seq,
            kind: s.cause.kind(),
            cause: s.cause,
            site: self.site.to_owned(),
            structure: s.structure.clone(),
            device: s.device.clone(),
            point: s.point.clone(),
            channel: s.channel.clone(),
            channels: s.channels.clone(),
            quantity: s.quantity,
            rule: s.rule.clone(),
            label: s.label.clone(),
            side: s.side,
            level,
            previous_level: previous,
            state,
            value: ev.value,
            threshold: ev.threshold,
            unit: s.unit.clone(),
            quality: ev.quality,
            started_at: a.started_at,
            event_at: ev.ts,
            detected_at: self.now,
            message: String::new(),
            ack: None,
        };
        if state == AlertState::Cleared {
            *slot = None;
            // A clear reports the band and threshold that had been passed (a good reading that
            // clears an out-of-range fault is on neither side).
            if let Some(last) = self.active.get(&alert.id) {
                alert.side = alert.side.or(last.side);
                alert.threshold = alert.threshold.or(last.threshold);
            }
        }
        alert.message = render_message(&alert, self.lang);
        if alert.is_active() {
            self.active.insert(alert.id.clone(), alert.clone());
        } else {
            self.active.remove(&alert.id);
        }
        self.out.push(alert);
    }
}

/// Nanoseconds as seconds, for stale alerts (unit `s`).
fn secs(ns: i64) -> f64 {
    ns as f64 / NANOS_PER_SEC as f64
}

/// Evaluates readings against a [`RuleSet`] and emits alert events on state transitions only.
///
/// Cost per reading: one hash lookup of the channel key, then work proportional to the rules
/// that match the channel (selectors are resolved once per channel, when it is first seen).
/// No allocation unless an event is emitted.
#[derive(Debug)]
pub struct Evaluator {
    rules: RuleSet,
    site: String,
    /// Boxed: a `Channel` is 856 bytes, and the doubling slack of a `Vec<Channel>` cost up
    /// to that much again per channel (2.7 MB at 5,000 channels, measured with DHAT, issue 14).
    #[allow(clippy::vec_box)] // deliberate, see above
    channels: Vec<Box<Channel>>,
    by_key: crate::model::SeriesMap<usize>,
    devices: Vec<Device>,
    by_device: HashMap<String, usize>,
    /// Conditions a rate, difference or tilt rule held before it judged its own derived
    /// channels (state saved by earlier versions), by the derived channel's key and the rule:
    /// taken by that channel when it first appears, so an active alert continues with its id.
    adoptable: HashMap<String, BTreeMap<String, RuleSlot>>,
    /// Rate windows of rate rules from state saved by earlier versions, for their derived
    /// blocks: `(rule, derived channel key, window)`.
    rate_windows: Vec<(String, String, RateWindow)>,
    /// The latest event of every active alert, by id.
    active: BTreeMap<String, Alert>,
    /// Clears of alerts whose rule or check is gone, emitted by the next [`Evaluator::on_tick`].
    pending: Vec<Alert>,
    /// What was last handed out for saving, to save only what changed (`saved.rs`).
    saved: saved::Saved,
    /// Held readings decided since the engine last took them ([`Evaluator::take_decided`]).
    decided: Vec<HeldVerdict>,
    /// Plans shared by the channels they apply to.
    plans: super::plan::PlanCache,
}

impl Evaluator {
    /// The rate windows that state saved by an earlier version kept in rate rules, now kept by
    /// their derived blocks: `(rule, derived channel key, window)`, each handed out once, for
    /// [`crate::engine::derived::DerivedSet::adopt_rate_window`].
    pub fn take_rate_windows(&mut self) -> Vec<(String, String, RateWindow)> {
        std::mem::take(&mut self.rate_windows)
    }

    /// An evaluator with no history, for `site`.
    #[must_use]
    pub fn new(rules: RuleSet, site: &str) -> Self {
        Self {
            rules,
            site: site.to_owned(),
            channels: Vec::new(),
            by_key: crate::model::SeriesMap::default(),
            devices: Vec::new(),
            by_device: HashMap::new(),
            adoptable: HashMap::new(),
            rate_windows: Vec::new(),
            active: BTreeMap::new(),
            pending: Vec::new(),
            saved: saved::Saved::default(),
            decided: Vec::new(),
            plans: super::plan::PlanCache::default(),
        }
    }

    /// The rules in force.
    #[must_use]
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Channels known (seen, registered or restored).
    #[must_use]
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// The latest event of every active alert, by id (for a retained summary or status page).
    pub fn active_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.active.values()
    }

    /// Make a channel known before its first reading, so that stale rules watch it from `now`
    /// (the engine registers every configured Modbus point at start-up).
    pub fn register(&mut self, series: &Arc<Series>, now: TimestampNs) {
        let _ = self.channel_index(series, now);
    }

    fn channel_index(&mut self, series: &Arc<Series>, now: TimestampNs) -> usize {
        if let Some(&i) = self.by_key.get(series.key.as_str()) {
            return i;
        }
        let data = ChannelData {
            last_heard: now,
            ..ChannelData::default()
        };
        self.add_channel(
            ChannelInfo::from_series(series),
            data,
            BTreeMap::new(),
            BTreeMap::new(),
            now,
        )
    }

    fn device_index(&mut self, name: &str, now: TimestampNs) -> usize {
        if let Some(&i) = self.by_device.get(name) {
            return i;
        }
        self.devices.push(Device {
            name: name.to_owned(),
            structure: None,
            last_heard: now,
            rules: Vec::new(),
            stale: Vec::new(),
            parked: BTreeMap::new(),
            saved: None,
        });
        self.by_device
            .insert(name.to_owned(), self.devices.len() - 1);
        self.devices.len() - 1
    }

    /// Add a channel with (possibly restored) state, resolving its plan and dropping state the
    /// rules no longer have a place for (its active alerts become orphans, cleared on restore).
    fn add_channel(
        &mut self,
        info: ChannelInfo,
        mut data: ChannelData,
        mut rule_slots: BTreeMap<String, RuleSlot>,
        mut stale_slots: BTreeMap<String, FaultCondition>,
        now: TimestampNs,
    ) -> usize {
        let plan = self.rules.plan(&info, &mut self.plans);
        let mut adopted = self.adoptable.remove(&info.key).unwrap_or_default();
        let slots = plan
            .rules
            .iter()
            .map(|rp| {
                let rule = &self.rules.channel_rules[rp.rule];
                let mut slot = rule_slots
                    .remove(&rule.name)
                    .or_else(|| adopted.remove(&rule.name))
                    .unwrap_or_default();
                if rp.bands[0].is_none() {
                    slot.upper = Condition::default();
                }
                if rp.bands[1].is_none() {
                    slot.lower = Condition::default();
                }
                slot.legacy_window = None;
                slot
            })
            .collect();
        // A rate rule's conditions and window saved on its input channel by an earlier version:
        // the rule now judges `<channel>.<rule>`, its derived rate.
        for (name, mut slot) in rule_slots {
            let is_rate = self
                .rules
                .channel_rules
                .iter()
                .any(|r| r.name == name && matches!(r.origin, Origin::Rate { .. }));
            if !is_rate {
                continue;
            }
            let output = format!("{}.{name}", info.key);
            if let Some(w) = slot.legacy_window.take() {
                self.rate_windows.push((name.clone(), output.clone(), *w));
            }
            if slot != RuleSlot::default() {
                self.adoptable.entry(output).or_default().insert(name, slot);
            }
        }
        let stale = plan
            .stale
            .iter()
            .map(|&s| {
                stale_slots
                    .remove(&self.rules.stale_rules[s].name)
                    .unwrap_or_default()
            })
            .collect();
        let checks = plan.checks;
        if let Some(faults) = data.faults.existing_mut() {
            if checks.range.is_none() {
                faults.range = FaultCondition::default();
            }
            if checks.stuck.is_none() {
                faults.stuck = FaultCondition::default();
                faults.run = None;
            }
            if checks.bad_quality.is_none() {
                faults.bad_quality = FaultCondition::default();
            }
            if checks.spike.is_none() {
                faults.spike = FaultCondition::default();
                // A reading held before the check was removed is no longer judged: stored good.
                if let Some(h) = faults.held.take() {
                    self.decided.push(HeldVerdict {
                        channel: info.clone(),
                        ts: h.sample.ts,
                        value: h.sample.value,
                        raw: h.raw,
                        spike: false,
                    });
                }
            }
            if *faults == Faults::default() {
                data.faults = FaultsSlot::default();
            }
        }
        let di = self.device_index(&info.device, now);
        let device = &mut self.devices[di];
        if device.structure.is_none() {
            device.structure = info.structure().map(str::to_owned);
        }
        for &r in &plan.device_stale {
            if !device.rules.contains(&r) {
                let cond = device
                    .parked
                    .remove(&self.rules.stale_rules[r].name)
                    .unwrap_or_default();
                device.rules.push(r);
                device.stale.push(cond);
            }
        }
        self.by_key
            .insert(crate::model::SeriesKey(info.series()), self.channels.len());
        self.channels.push(Box::new(Channel {
            info,
            device: di,
            plan,
            data,
            slots,
            stale,
            touched: true,
            saved: None,
        }));
        self.channels.len() - 1
    }

    /// Evaluate one reading that arrived at gateway time `now`. Returns what was made of it and
    /// the alert events it caused (usually none).
    #[must_use = "alert events must be delivered (spooled)"]
    pub fn on_reading(&mut self, r: &Reading, now: TimestampNs) -> (Verdict, Vec<Alert>) {
        let mut out = Vec::new();
        let ci = self.channel_index(&r.series, now);
        let mut emit = Emit {
            site: &self.site,
            lang: self.rules.language,
            now,
            active: &mut self.active,
            out: &mut out,
        };
        self.channels[ci].touched = true;
        let di = self.channels[ci].device;
        heard_device(&self.rules, &mut self.devices[di], now, &mut emit);
        heard_channel(&self.rules, &mut self.channels[ci], now, &mut emit);
        let (verdict, accepted, decided) = check(&mut self.channels[ci], r, now, &mut emit);
        if let Some((h, spike)) = decided {
            self.decided.push(HeldVerdict {
                channel: self.channels[ci].info.clone(),
                ts: h.sample.ts,
                value: h.sample.value,
                raw: h.raw,
                spike,
            });
        }
        for sample in accepted.into_iter().flatten() {
            accept(&self.rules, &mut self.channels[ci], sample, &mut emit);
        }
        (verdict, out)
    }

    /// The held readings decided since the last call (by a reading, by [`Evaluator::on_tick`]
    /// after `within`, or because the spike check was removed over a restart), for the engine
    /// to store: a held reading is stored only once decided, so that no store ever holds it
    /// twice or unflagged (docs/DOMAIN.md §Data quality).
    pub fn take_decided(&mut self) -> Vec<HeldVerdict> {
        std::mem::take(&mut self.decided)
    }

    /// True when [`Evaluator::take_decided`] has something (cheap, for the hot path).
    #[must_use]
    pub fn has_decided(&self) -> bool {
        !self.decided.is_empty()
    }

    /// Time-driven checks at gateway time `now`: stale channels and devices, spike holds that
    /// waited `within`, and clears of alerts orphaned by a rule change over a restart. Call it
    /// regularly (every second is plenty).
    #[must_use = "alert events must be delivered (spooled)"]
    pub fn on_tick(&mut self, now: TimestampNs) -> Vec<Alert> {
        let mut out = std::mem::take(&mut self.pending);
        let mut emit = Emit {
            site: &self.site,
            lang: self.rules.language,
            now,
            active: &mut self.active,
            out: &mut out,
        };
        let mut releases = Vec::new();
        for (ci, ch) in self.channels.iter_mut().enumerate() {
            for (j, &sr) in ch.plan.stale.iter().enumerate() {
                let rule = &self.rules.stale_rules[sr];
                let silent = now.saturating_sub(ch.data.last_heard);
                let cond = &mut ch.stale[j];
                if cond.active.is_none() && silent >= rule.after_ns {
                    let s = Subject::channel(
                        &ch.info,
                        Cause::Stale,
                        &rule.name,
                        None,
                        None,
                        "s".to_owned(),
                    );
                    let ev = EventData {
                        value: Some(secs(silent)),
                        threshold: Some(secs(rule.after_ns)),
                        quality: None,
                        ts: now,
                    };
                    emit.fault(&mut cond.active, FaultStep::Raise, rule.level, &s, ev);
                    ch.touched = true;
                }
            }
            if let (Some(h), Some(spike)) = (ch.data.faults.held, ch.plan.checks.spike) {
                if now.saturating_sub(h.arrived) >= spike.within_ns {
                    ch.data.faults.held = None;
                    ch.touched = true;
                    releases.push((ci, h.sample));
                    self.decided.push(HeldVerdict {
                        channel: ch.info.clone(),
                        ts: h.sample.ts,
                        value: h.sample.value,
                        raw: h.raw,
                        spike: false,
                    });
                }
            }
        }
        for (ci, sample) in releases {
            let level = self.channels[ci].plan.checks.level;
            let ch = &mut self.channels[ci];
            observe_spike(ch, false, level, None, sample.ts, &mut emit);
            accept(&self.rules, ch, sample, &mut emit);
        }
        for d in &mut self.devices {
            for (j, &sr) in d.rules.iter().enumerate() {
                let rule = &self.rules.stale_rules[sr];
                let silent = now.saturating_sub(d.last_heard);
                if d.stale[j].active.is_none() && silent >= rule.after_ns {
                    let s = Subject::device(d, &rule.name);
                    let ev = EventData {
                        value: Some(secs(silent)),
                        threshold: Some(secs(rule.after_ns)),
                        quality: None,
                        ts: now,
                    };
                    emit.fault(&mut d.stale[j].active, FaultStep::Raise, rule.level, &s, ev);
                }
            }
        }
        out
    }

    /// A copy of all evaluation state, as one value (the format-1 layout; the engine saves
    /// per entry, [`Evaluator::state_changes`]).
    #[must_use]
    pub fn snapshot(&self) -> EvaluatorState {
        let channels = self
            .channels
            .iter()
            .map(|c| self.channel_snapshot(c))
            .collect();
        let devices = self
            .devices
            .iter()
            .map(|d| self.device_snapshot(d))
            .collect();
        EvaluatorState {
            format: STATE_FORMAT,
            channels,
            devices,
            pairs: Vec::new(),
            active: self.active.values().cloned().collect(),
        }
    }

    fn channel_snapshot(&self, c: &Channel) -> ChannelSnapshot {
        ChannelSnapshot {
            info: c.info.clone(),
            data: c.data.clone(),
            rules: c
                .plan
                .rules
                .iter()
                .zip(&c.slots)
                .map(|(rp, s)| (self.rules.channel_rules[rp.rule].name.clone(), s.clone()))
                .collect(),
            stale: c
                .plan
                .stale
                .iter()
                .zip(&c.stale)
                .map(|(&r, s)| (self.rules.stale_rules[r].name.clone(), s.clone()))
                .collect(),
        }
    }

    fn device_snapshot(&self, d: &Device) -> DeviceSnapshot {
        DeviceSnapshot {
            name: d.name.clone(),
            last_heard: d.last_heard,
            stale: d
                .rules
                .iter()
                .zip(&d.stale)
                .map(|(&r, s)| (self.rules.stale_rules[r].name.clone(), s.clone()))
                .collect(),
        }
    }

    /// Rebuild an evaluator from a snapshot, under possibly edited `rules`, at gateway time `now`.
    ///
    /// - Active alerts continue: the next transition is an escalation or a clear of the same id,
    ///   never a second raise.
    /// - Alerts whose rule, band or check no longer exists are cleared by the next
    ///   [`Evaluator::on_tick`] (no alert is left open forever).
    /// - Stale clocks restart at `now`: the silence while the gateway itself was down is not the
    ///   devices' fault.
    /// - Rate windows keep their history (unless the rule's window length changed).
    ///
    /// # Errors
    /// [`RestoreError::Format`] for a snapshot of another layout version.
    pub fn restore(
        rules: RuleSet,
        site: &str,
        state: EvaluatorState,
        now: TimestampNs,
    ) -> Result<Self, RestoreError> {
        if state.format != STATE_FORMAT {
            return Err(RestoreError::Format {
                found: state.format,
                expected: STATE_FORMAT,
            });
        }
        let mut ev = Self::new(rules, site);
        for d in state.devices {
            let di = ev.device_index(&d.name, now);
            let dev = &mut ev.devices[di];
            dev.last_heard = d.last_heard.max(now);
            dev.parked = d.stale;
        }
        for c in state.channels {
            let mut data = c.data;
            data.last_heard = data.last_heard.max(now);
            if ev.by_key.contains_key(c.info.key.as_str()) {
                continue;
            }
            ev.add_channel(c.info, data, c.rules, c.stale, now);
        }
        for d in &mut ev.devices {
            d.parked.clear();
        }
        // A pair's conditions saved by an earlier version go to the rule's derived channel of
        // that pair (bands the rule no longer has are dropped when the channel takes them).
        for p in state.pairs {
            let output = ev.rules.channel_rules.iter().find_map(|r| match &r.origin {
                Origin::Pairs { pairs, by_output } if r.name == p.rule => {
                    let i = pairs.iter().position(|x| x.a == p.a && x.b == p.b)?;
                    by_output
                        .iter()
                        .find(|(_, &j)| j == i)
                        .map(|(k, _)| k.clone())
                }
                _ => None,
            });
            if let Some(output) = output {
                let slot = RuleSlot {
                    upper: p.state.upper,
                    lower: p.state.lower,
                    legacy_window: None,
                };
                ev.adoptable.entry(output).or_default().insert(p.rule, slot);
            }
        }
        // Every alert still held by a condition stays active; the others are orphans.
        let mut live: Vec<&str> = Vec::new();
        for c in &ev.channels {
            for s in &c.slots {
                live.extend(
                    [&s.upper.active, &s.lower.active]
                        .into_iter()
                        .flatten()
                        .map(|a| a.id.as_str()),
                );
            }
            live.extend(
                c.stale
                    .iter()
                    .filter_map(|s| s.active.as_ref())
                    .map(|a| a.id.as_str()),
            );
            let f = &c.data.faults;
            live.extend(
                [
                    &f.bad_quality.active,
                    &f.range.active,
                    &f.stuck.active,
                    &f.spike.active,
                ]
                .into_iter()
                .flatten()
                .map(|a| a.id.as_str()),
            );
        }
        for d in &ev.devices {
            live.extend(
                d.stale
                    .iter()
                    .filter_map(|s| s.active.as_ref())
                    .map(|a| a.id.as_str()),
            );
        }
        for slots in ev.adoptable.values() {
            for s in slots.values() {
                live.extend(
                    [&s.upper.active, &s.lower.active]
                        .into_iter()
                        .flatten()
                        .map(|a| a.id.as_str()),
                );
            }
        }
        let live: std::collections::HashSet<String> = live.into_iter().map(str::to_owned).collect();
        let lang = ev.rules.language;
        for a in state.active {
            if live.contains(&a.id) {
                ev.active.insert(a.id.clone(), a);
            } else {
                let mut clear = a;
                clear.seq = clear.seq.saturating_add(1);
                clear.previous_level = Some(clear.level);
                clear.state = AlertState::Cleared;
                clear.value = None;
                clear.event_at = now;
                clear.detected_at = now;
                clear.message = render_message(&clear, lang);
                ev.pending.push(clear);
            }
        }
        Ok(ev)
    }
}

/// A reading arrived from the device: clear its device-scope stale alerts.
fn heard_device(rules: &RuleSet, d: &mut Device, now: TimestampNs, emit: &mut Emit<'_>) {
    let silent = now.saturating_sub(d.last_heard);
    d.last_heard = d.last_heard.max(now);
    for (j, &sr) in d.rules.iter().enumerate() {
        if d.stale[j].active.is_some() {
            let rule = &rules.stale_rules[sr];
            let s = Subject::device(d, &rule.name);
            let ev = EventData {
                value: Some(secs(silent)),
                threshold: Some(secs(rule.after_ns)),
                quality: None,
                ts: now,
            };
            emit.fault(&mut d.stale[j].active, FaultStep::Clear, rule.level, &s, ev);
        }
    }
}

/// A reading arrived on the channel: clear its stale alerts.
fn heard_channel(rules: &RuleSet, ch: &mut Channel, now: TimestampNs, emit: &mut Emit<'_>) {
    let silent = now.saturating_sub(ch.data.last_heard);
    ch.data.last_heard = ch.data.last_heard.max(now);
    for (j, &sr) in ch.plan.stale.iter().enumerate() {
        if ch.stale[j].active.is_some() {
            let rule = &rules.stale_rules[sr];
            let s = Subject::channel(
                &ch.info,
                Cause::Stale,
                &rule.name,
                None,
                None,
                "s".to_owned(),
            );
            let ev = EventData {
                value: Some(secs(silent)),
                threshold: Some(secs(rule.after_ns)),
                quality: None,
                ts: now,
            };
            emit.fault(
                &mut ch.stale[j].active,
                FaultStep::Clear,
                rule.level,
                &s,
                ev,
            );
        }
    }
}

/// Feed one observation to the channel's spike fault (`value`: the spike, for the message).
fn observe_spike(
    ch: &mut Channel,
    spiked: bool,
    level: Level,
    value: Option<f64>,
    ts: TimestampNs,
    emit: &mut Emit<'_>,
) {
    let Some(spike) = ch.plan.checks.spike else {
        return;
    };
    let f = &mut ch.data.faults.spike;
    if let Some(step) = f.observe(
        spiked,
        ts,
        Confirm::IMMEDIATE,
        super::config::DEFAULT_FAULT_CLEAR_COUNT,
    ) {
        let s = Subject::channel(
            &ch.info,
            Cause::Spike,
            SPIKE_CHECK,
            None,
            None,
            ch.info.unit.clone(),
        );
        let ev = EventData {
            value,
            threshold: Some(spike.jump),
            quality: None,
            ts,
        };
        emit.fault(&mut f.active, step, level, &s, ev);
    }
}

/// What [`check`] made of a reading: its verdict, the samples to use (in order: a released
/// held reading, then this one), and the held reading this one decided (true: a spike).
type Checked = (Verdict, [Option<Sample>; 2], Option<(Held, bool)>);

/// The sensor checks (steps 1–5 of the module doc).
fn check(ch: &mut Channel, r: &Reading, now: TimestampNs, emit: &mut Emit<'_>) -> Checked {
    let checks = ch.plan.checks;
    let level = checks.level;
    let good = r.value.filter(|v| r.quality.is_good() && v.is_finite());
    // Only when configured: a site without `bad_quality` checks sees the quality codes in the
    // store, not a device-fault alert (issue 7).
    if let Some(spec) = checks.bad_quality {
        let f = &mut ch.data.faults.bad_quality;
        if let Some(step) = f.observe(good.is_none(), r.ts, spec.raise, spec.clear_count) {
            let s = Subject::channel(
                &ch.info,
                Cause::BadQuality,
                BAD_QUALITY_CHECK,
                None,
                None,
                ch.info.unit.clone(),
            );
            let ev = EventData {
                value: good,
                threshold: None,
                quality: good.is_none().then(|| r.quality.code()),
                ts: r.ts,
            };
            emit.fault(&mut f.active, step, level, &s, ev);
        }
    }
    let Some(value) = good else {
        return (Verdict::BadQuality, [None, None], None);
    };
    if ch.data.last_ts.is_some_and(|t| r.ts <= t) {
        return (Verdict::Repeat, [None, None], None);
    }
    ch.data.last_ts = Some(r.ts);

    if let Some(range) = checks.range {
        let side = if range.max.is_some_and(|m| value > m) {
            Some(Side::Upper)
        } else if range.min.is_some_and(|m| value < m) {
            Some(Side::Lower)
        } else {
            None
        };
        let f = &mut ch.data.faults.range;
        if let Some(step) = f.observe(
            side.is_some(),
            r.ts,
            range.fault.raise,
            range.fault.clear_count,
        ) {
            let threshold = match side {
                Some(Side::Upper) => range.max,
                Some(Side::Lower) => range.min,
                None => None,
            };
            let s = Subject::channel(
                &ch.info,
                Cause::OutOfRange,
                RANGE_CHECK,
                None,
                side,
                ch.info.unit.clone(),
            );
            emit.fault(
                &mut f.active,
                step,
                level,
                &s,
                EventData {
                    value: Some(value),
                    threshold,
                    quality: None,
                    ts: r.ts,
                },
            );
        }
        if side.is_some() {
            return (Verdict::OutOfRange, [None, None], None);
        }
    }

    if let Some(stuck) = checks.stuck {
        let run = match &mut ch.data.faults.run {
            Some(run) if (value - run.value).abs() <= stuck.tolerance => {
                run.streak.bump(r.ts);
                *run
            }
            slot => {
                let mut streak = Streak::default();
                streak.bump(r.ts);
                *slot.insert(Run { value, streak })
            }
        };
        let is_stuck = stuck.run.met(&run.streak, r.ts);
        let f = &mut ch.data.faults.stuck;
        // Raised by the first reading that completes the run; cleared by the first that moves.
        if let Some(step) = f.observe(is_stuck, r.ts, Confirm::IMMEDIATE, 1) {
            let s = Subject::channel(
                &ch.info,
                Cause::Stuck,
                STUCK_CHECK,
                None,
                None,
                ch.info.unit.clone(),
            );
            emit.fault(
                &mut f.active,
                step,
                level,
                &s,
                EventData {
                    value: Some(value),
                    threshold: None,
                    quality: None,
                    ts: r.ts,
                },
            );
        }
        if is_stuck {
            return (Verdict::Stuck, [None, None], None);
        }
    }

    let sample = Sample { ts: r.ts, value };
    let mut accepted = [None, None];
    let mut decided = None;
    if let Some(spike) = checks.spike {
        if let Some(h) = ch.data.faults.held.take() {
            let returned = ch
                .data
                .last_usable
                .is_some_and(|p| (value - p.value).abs() <= spike.jump)
                && (value - h.sample.value).abs() > spike.jump
                && r.ts.saturating_sub(h.sample.ts) <= spike.within_ns;
            if returned {
                observe_spike(ch, true, level, Some(h.sample.value), r.ts, emit);
            } else {
                // A real step: the held reading is used, late, with its own time.
                observe_spike(ch, false, level, None, h.sample.ts, emit);
                accepted[0] = Some(h.sample);
            }
            decided = Some((h, returned));
        }
        let reference = accepted[0].or(ch.data.last_usable);
        if reference.is_some_and(|p| (value - p.value).abs() > spike.jump) {
            ch.data.faults.held = Some(Held {
                sample,
                arrived: now,
                raw: r.raw,
            });
            return (Verdict::Held, accepted, decided);
        }
        observe_spike(ch, false, level, None, r.ts, emit);
    }
    accepted[1] = Some(sample);
    (Verdict::Usable, accepted, decided)
}

/// Use a good reading: baseline, rate windows, and every rule of the channel.
fn accept(rules: &RuleSet, ch: &mut Channel, sample: Sample, emit: &mut Emit<'_>) {
    ch.data.last_usable = Some(sample);
    let first = *ch.data.first_usable.get_or_insert(sample);
    for (slot, rp) in ch.slots.iter_mut().zip(&ch.plan.rules) {
        let rule = &rules.channel_rules[rp.rule];
        let m = match rule.measure {
            Measure::Absolute => sample.value,
            Measure::Change => sample.value - rp.baseline.unwrap_or(first.value),
            Measure::Magnitude => sample.value.abs(),
        };
        for (side_idx, band) in rp.bands.iter().enumerate() {
            let Some((band, th)) = band else { continue };
            let (cond, sign) = if side_idx == 0 {
                (&mut slot.upper, 1.0)
            } else {
                (&mut slot.lower, -1.0)
            };
            if let Some(step) = cond.observe(sign * m, sample.ts, th, rule.confirm, rule.clear) {
                let s = Subject::of_rule(&ch.info, rule, band.side);
                emit.quality(&mut cond.active, step, &s, m, &band.thresholds, sample.ts);
            }
        }
    }
}

#[cfg(test)]
mod faults_slot_tests {
    use super::{Faults, FaultsSlot, Run, Streak};

    /// The saved form of a channel's fault state is the one written before the slot was
    /// allocated lazily: an unallocated slot saves as the default state, a saved default state
    /// comes back unallocated, and a state with something in it comes back as it was.
    #[test]
    fn a_fault_slot_saves_and_restores_in_the_format_of_the_plain_state() {
        let plain = serde_json::to_string(&Faults::default()).expect("serialise");
        let lazy = serde_json::to_string(&FaultsSlot::default()).expect("serialise");
        assert_eq!(lazy, plain);
        let back: FaultsSlot = serde_json::from_str(&plain).expect("restore");
        assert!(back.0.is_none(), "a default state is not allocated");

        let mut slot = FaultsSlot::default();
        assert!(slot.existing_mut().is_none());
        slot.run = Some(Run {
            value: 12.5,
            streak: Streak::default(),
        });
        let saved = serde_json::to_string(&slot).expect("serialise");
        assert!(saved.contains("12.5"), "{saved}");
        let back: FaultsSlot = serde_json::from_str(&saved).expect("restore");
        assert_eq!(back.run.map(|r| r.value), Some(12.5));
    }
}

#[cfg(test)]
mod migration_tests {
    //! State saved before the rate, difference and tilt rules judged their own derived channels
    //! (a pair's conditions in `p/` entries, a rate rule's conditions and window on its input
    //! channel): restored under this version, an active alert continues with its id (no clear
    //! of an orphan, no second raise) and clears on the derived channel's readings; the rate
    //! window goes to the rule's derived block.
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::{
        Active, Condition, Evaluator, EvaluatorState, PairSnapshot, PairState, RateWindow, RuleSet,
    };
    use crate::alert::{AlertState, Level};
    use crate::engine::rules::AlertsConfig;
    use crate::model::{QuantityKind, Reading, Series, NANOS_PER_SEC};

    const T0: i64 = 1_767_225_600 * NANOS_PER_SEC;
    const H: i64 = 3600 * NANOS_PER_SEC;

    fn rules(text: &str) -> RuleSet {
        let cfg: AlertsConfig = toml::from_str(text).expect("toml");
        RuleSet::from_config(&cfg, "alerts").expect("valid")
    }

    fn series(device: &str, point: &str, kind: QuantityKind, tags: &[(&str, &str)]) -> Arc<Series> {
        let tags: BTreeMap<String, String> = tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Arc::new(Series::new("xa", "gw", device, point, kind, "mm", &tags))
    }

    /// The rules after the upgrade.
    const NOW: &str = r#"
[[rules]]
name = "diff"
kind = "difference"
pairs = [{ a = "lev/ch1", b = "lev/ch2" }]
upper = { yellow = 10.0 }
confirm = { count = 1 }

[[rules]]
name = "rate"
kind = "rate"
select = { device = "lev", point = "ch3" }
window = "1d"
upper = { yellow = 2.0 }
confirm = { count = 1 }
"#;

    /// Old state: the rate rule's slot on `lev/ch3`, with its window, holding a raised alert
    /// (made here with an absolute rule of the same name on the same channel: the alert id of
    /// a channel rule was, and is, made from its rule, side, channel and raise time).
    fn old_rate_state() -> (EvaluatorState, String) {
        let mut old = Evaluator::new(
            rules("[[rules]]\nname = \"rate\"\nkind = \"absolute\"\nselect = { point = \"ch3\" }\nupper = { yellow = 2.0 }\nconfirm = { count = 1 }\n"),
            "xa",
        );
        let ch3 = series("lev", "ch3", QuantityKind::Settlement, &[]);
        let raised = old.on_reading(&Reading::good(ch3, T0, 3.0), T0).1;
        let id = raised[0].id.clone();
        let mut window = RateWindow::new(24 * H);
        window.push(T0 - 12 * H, 0.0);
        window.push(T0, 1.5);
        old.channels[0].slots[0].legacy_window = Some(Box::new(window));
        // Saved with the window, as the earlier version wrote it.
        let mut state = old.snapshot();
        let json = serde_json::to_value(&old.channels[0].slots[0].legacy_window).expect("json");
        let mut value = serde_json::to_value(&state).expect("json");
        value["channels"][0]["rules"]["rate"]["window"] = json;
        state = serde_json::from_value(value).expect("old layout reads");
        (state, id)
    }

    #[test]
    fn a_pair_and_a_rate_alert_of_an_earlier_version_continue_on_the_derived_channels() {
        let (mut state, rate_id) = old_rate_state();
        // The pair's conditions as the earlier version saved them, its alert raised at T0.
        let pair_alert = {
            let mut ev = Evaluator::new(rules(NOW), "xa");
            let d = series(
                "lev",
                "ch1-ch2.diff",
                QuantityKind::Settlement,
                &[("derived", "diff")],
            );
            let raised = ev.on_reading(&Reading::good(d, T0, 12.0), T0).1;
            raised[0].clone()
        };
        assert_eq!(pair_alert.channels, ["lev/ch1", "lev/ch2"]);
        state.pairs.push(PairSnapshot {
            rule: "diff".to_owned(),
            a: "lev/ch1".to_owned(),
            b: "lev/ch2".to_owned(),
            state: PairState {
                upper: Condition {
                    active: Some(Active {
                        id: pair_alert.id.clone(),
                        level: Level::Yellow,
                        started_at: T0,
                        seq: 0,
                    }),
                    ..Condition::default()
                },
                lower: Condition::default(),
            },
        });
        state.active.push(pair_alert.clone());

        let mut ev = Evaluator::restore(rules(NOW), "xa", state, T0 + H).expect("restore");
        assert!(
            ev.on_tick(T0 + H).is_empty(),
            "no alert cleared as an orphan"
        );
        let mut active: Vec<String> = ev.active_alerts().map(|a| a.id.clone()).collect();
        active.sort();
        let mut want = vec![pair_alert.id.clone(), rate_id.clone()];
        want.sort();
        assert_eq!(active, want);
        let windows = ev.take_rate_windows();
        assert_eq!(windows.len(), 1);
        assert_eq!(
            (windows[0].0.as_str(), windows[0].1.as_str()),
            ("rate", "lev/ch3.rate")
        );

        // Still above: no second raise. Then below the clearing threshold: cleared, same ids.
        let diff = series(
            "lev",
            "ch1-ch2.diff",
            QuantityKind::Settlement,
            &[("derived", "diff")],
        );
        let rate = series(
            "lev",
            "ch3.rate",
            QuantityKind::Settlement,
            &[("derived", "rate")],
        );
        assert!(ev
            .on_reading(
                &Reading::good(Arc::clone(&diff), T0 + 2 * H, 12.0),
                T0 + 2 * H
            )
            .1
            .is_empty());
        let cleared = ev
            .on_reading(&Reading::good(diff, T0 + 3 * H, 1.0), T0 + 3 * H)
            .1;
        assert_eq!(
            cleared
                .iter()
                .map(|a| (a.id.as_str(), a.state))
                .collect::<Vec<_>>(),
            [(pair_alert.id.as_str(), AlertState::Cleared)]
        );
        let cleared = ev
            .on_reading(&Reading::good(rate, T0 + 3 * H, 0.5), T0 + 3 * H)
            .1;
        assert_eq!(
            cleared
                .iter()
                .map(|a| (a.id.as_str(), a.state, a.channels.clone()))
                .collect::<Vec<_>>(),
            [(
                rate_id.as_str(),
                AlertState::Cleared,
                vec!["lev/ch3".to_owned()]
            )]
        );
        assert_eq!(ev.active_alerts().count(), 0);
    }
}
