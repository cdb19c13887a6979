//! Concrete curing per pour (issue 8 item 1; docs/DOMAIN.md §Curing): the GB 50496-2018 §3.0.4
//! set and the ASTM C1074 maturity, in-place strength and strength milestones of every
//! `[[pours]]` entry, from its sensors by role.
//!
//! Owns the pour's channels (selectors matched once per channel, on first sight), its derived
//! series (`<point>.rise`, `.core-surface`, `.cooling-rate`, `.surface-ambient`,
//! `.surface-ambient-covered`, `.maturity`, `.equivalent-age`, `.strength`, `.strength-share`,
//! tagged `derived` and `pour` with the pour's name and `role`), the state that must survive a
//! restart (per sensor: maturity, equivalent age and cooling window, `vc/<pour>/<channel>`; per
//! pour: placing temperature, insulation removal set by `gateway pour remove-insulation`,
//! milestones already announced, the last strip advice, `vp/<pour>`), and the milestone and
//! strip-advice notices ([`crate::alert::AlertKind::Notice`]; GB 50496-2018 §3.0.4-4 before the
//! insulation comes off: `PourSet::strip_advice`). It does no I/O and has no clock of
//! its own, and never evaluates rules: the four-level GB 50496 rules are ordinary rules over its
//! series ([`config::CuringPlan::rules`]), evaluated by the engine like any.
//!
//! # Quality
//! A bad input makes the derived value bad, never absent and never good
//! ([`Quality::DerivedInputBad`]), as for `[[derived]]`. Maturity integrates good readings only:
//! a bad one is skipped and the next good one integrates across the gap.
//!
//! # Milestones
//! The pour's weakest sensor decides (the lowest in-place strength among its concrete sensors
//! seen so far, once every concrete role configured has reported; a silent sensor keeps its
//! last strength, so a broken one holds the milestones back rather than let them pass): a
//! milestone is announced once, when that strength reaches it, and saved with
//! the notice in the same spool commit, so it is never announced again after a restart.
//!
//! # Bounds
//! Per sensor: a cooling window of `RATE_BUCKETS + 1` buckets (core only), a history of
//! `INPUT_HISTORY` readings, or the last batch's when it brought more (surface and air, combined
//! with the core and surface; a batch's readings are all kept until it is combined), eight
//! output series. Per pour: one entry. The sensors are what the selectors match.

pub mod config;
pub mod maturity;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{error, info};

use crate::alert::{
    render_message, stable_id, Alert, AlertKind, AlertState, Cause, Language, Level,
};
use crate::engine::derived::{window_rate, BatchId, History, Sample, Waiting, DERIVED_TAG};
use crate::engine::rules::selector::ChannelInfo;
use crate::engine::rules::RateWindow;
use crate::model::{Quality, QuantityKind, Reading, Series, TimestampNs};
use crate::spool::StateDelta;
pub use config::{CuringPlan, MixConfig, PourConfig, PourSpec, Role, Series as PourSeries};
use config::{POUR_TAG, ROLE_TAG, WALK_ON_STRENGTH_MPA};
use maturity::Maturity;

/// Prefix of the spool state entries of a pour's sensors (`vc/<pour>/<channel key>`).
pub const SENSOR_PREFIX: &str = "vc/";
/// Prefix of the spool state entry of a pour (`vp/<pour>`).
pub const POUR_PREFIX: &str = "vp/";
/// Seconds per day: the cooling rate is in °C/d as GB 50496 §3.0.4-3 writes it.
const SECS_PER_DAY: f64 = 86_400.0;

/// A strength milestone (docs/DOMAIN.md §Curing; GB 50666-2011 Table 4.5.2 and §8.5,
/// JGJ/T 104-2011).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// 1.2 MPa: people and stacked material allowed (GB 50666-2011 §8.5).
    WalkOn,
    /// The mix's winter critical strength: safe from frost (JGJ/T 104-2011).
    WinterCritical,
    /// 50 % of the design strength: bottom forms of slabs up to 2 m (Table 4.5.2).
    Share50,
    /// 75 %: slabs and beams up to 8 m.
    Share75,
    /// 100 %: longer spans and cantilevers.
    Share100,
}

impl Milestone {
    /// Every milestone.
    pub const ALL: [Self; 5] = [
        Self::WalkOn,
        Self::WinterCritical,
        Self::Share50,
        Self::Share75,
        Self::Share100,
    ];

    /// Its name in rule names and the saved state.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::WalkOn => "walk-on",
            Self::WinterCritical => "winter-critical",
            Self::Share50 => "strength-50",
            Self::Share75 => "strength-75",
            Self::Share100 => "strength-100",
        }
    }

    /// The share of the design strength, %, for the stripping milestones.
    const fn share(self) -> Option<u32> {
        match self {
            Self::Share50 => Some(50),
            Self::Share75 => Some(75),
            Self::Share100 => Some(100),
            Self::WalkOn | Self::WinterCritical => None,
        }
    }

    /// The strength that reaches it for `mix`, MPa; `None` for a winter critical strength the
    /// mix does not give.
    #[must_use]
    pub fn threshold(self, mix: &config::MixSpec) -> Option<f64> {
        match (self, self.share()) {
            (_, Some(p)) => Some(mix.design_strength * f64::from(p) / 100.0),
            (Self::WalkOn, _) => Some(WALK_ON_STRENGTH_MPA),
            _ => mix.critical_strength,
        }
    }

    /// What reaching it means, in `lang`.
    #[must_use]
    pub fn label(self, lang: Language) -> String {
        match (lang, self.share()) {
            (Language::Zh, Some(p)) => format!("达到设计强度的 {p}%（{}）", stripping_zh(p)),
            (Language::En, Some(p)) => {
                format!("reached {p} % of the design strength ({})", stripping_en(p))
            }
            (Language::Zh, None) if self == Self::WalkOn => {
                "达到 1.2 MPa（可上人、堆放材料）".to_owned()
            }
            (Language::En, None) if self == Self::WalkOn => {
                "reached 1.2 MPa (people and stacked material allowed)".to_owned()
            }
            (Language::Zh, None) => "达到冬期施工受冻临界强度".to_owned(),
            (Language::En, None) => "reached the winter critical strength".to_owned(),
        }
    }
}

/// GB 50666-2011 Table 4.5.2, the members whose bottom forms may come off at `share` %.
fn stripping_zh(share: u32) -> &'static str {
    match share {
        50 => "跨度 ≤ 2 m 的板可拆底模",
        75 => "跨度 ≤ 8 m 的板、梁可拆底模",
        _ => "跨度 > 8 m 的板、梁及悬臂构件可拆底模",
    }
}

/// See [`stripping_zh`].
fn stripping_en(share: u32) -> &'static str {
    match share {
        50 => "bottom forms of slabs up to 2 m may come off",
        75 => "bottom forms of slabs and beams up to 8 m may come off",
        _ => "bottom forms of longer spans and cantilevers may come off",
    }
}

/// The saved state of one sensor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct SensorState {
    /// Nurse–Saul maturity and equivalent age since placing.
    maturity: Maturity,
    /// The core's cooling window.
    #[serde(default)]
    cooling: Option<RateWindow>,
    /// The latest in-place strength, MPa.
    #[serde(default)]
    strength: Option<f64>,
    /// What the integrals rest on: the placing time and the mix's T0 and E.
    #[serde(default)]
    basis: Option<Basis>,
}

/// The placing time (ns), datum T0 (°C) and activation energy E (J/mol) a sensor's maturity was
/// integrated with. Saved integrals on another basis are worth nothing: a mix change
/// invalidates them (docs/DOMAIN.md §Curing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Basis {
    placed_ns: i64,
    datum: f64,
    activation_energy: f64,
}

impl Basis {
    fn of(pour: &PourSpec) -> Self {
        Self {
            placed_ns: pour.placed_ns,
            datum: pour.mix.datum,
            activation_energy: pour.mix.activation_energy,
        }
    }
}

/// The saved state of one pour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PourState {
    /// The placing temperature taken from the first core reading at or after placing, °C.
    #[serde(default)]
    pub placing_c: Option<f64>,
    /// Insulation removal set by `gateway pour remove-insulation`, ns.
    #[serde(default)]
    pub insulation_removed_ns: Option<i64>,
    /// Milestones announced ([`Milestone::name`]).
    #[serde(default)]
    pub announced: BTreeSet<String>,
    /// The strip advice last announced: `Some(true)` "do not strip yet", `Some(false)` "may
    /// strip" after it, `None` none yet.
    #[serde(default)]
    pub strip_advice: Option<bool>,
}

/// One sensor of one pour.
#[derive(Debug)]
struct Sensor {
    pour: usize,
    role: Role,
    /// Its channel's series.
    base: Arc<Series>,
    state: SensorState,
    /// Readings kept to combine with the other roles (surface, air).
    history: History,
    /// Output series, built on first use, by [`PourSeries::index`].
    outputs: [Option<Arc<Series>>; PourSeries::ALL.len()],
    dirty: bool,
    /// Surface: its latest surface − air difference under the insulation, °C (the strip advice
    /// takes the pour's largest).
    covered_diff: Option<f64>,
    /// Its readings waiting to be combined with the other roles ([`PourSet::waiting`]): a later
    /// one waits behind them, so its series keep their order.
    waiting: u32,
}

/// The pours of a gateway and their state. Build with [`PourSet::new`]; feed with
/// [`PourSet::on_batch`]; take the notices with [`PourSet::take_notices`].
#[derive(Debug, Default)]
pub struct PourSet {
    pours: Vec<PourSpec>,
    /// Per pour: its state and a changed flag.
    states: Vec<(PourState, bool)>,
    sensors: Vec<Sensor>,
    /// Per pour: its sensors.
    members: Vec<Vec<usize>>,
    /// Channel key → its sensors (one per pour that selects it).
    by_channel: HashMap<String, Vec<usize>>,
    /// Channels already matched against the selectors.
    seen: std::collections::HashSet<String>,
    /// The batch being recorded ([`History`]).
    batch: BatchId,
    /// Core and surface readings (sensor, reading) waiting for the surface or air reading of
    /// their time ([`crate::engine::derived::COMBINE_WAIT`]).
    waiting: Waiting<(usize, Reading)>,
    /// Saved sensor state read at start, by entry key, taken when the sensor is created.
    restored: HashMap<String, SensorState>,
    notices: Vec<Alert>,
    site: String,
    language: Language,
}

/// The entry key of a sensor's state.
fn sensor_key(pour: &str, channel: &str) -> String {
    format!("{SENSOR_PREFIX}{pour}/{channel}")
}

/// The entry key of a pour's state.
#[must_use]
pub fn pour_key(pour: &str) -> String {
    format!("{POUR_PREFIX}{pour}")
}

impl PourSet {
    /// The pours of `plan`, without state; notices worded in `language` for `site`.
    #[must_use]
    pub fn new(plan: CuringPlan, site: &str, language: Language) -> Self {
        let states = plan
            .pours
            .iter()
            .map(|_| (PourState::default(), false))
            .collect();
        let members = plan.pours.iter().map(|_| Vec::new()).collect();
        Self {
            pours: plan.pours,
            states,
            members,
            site: site.to_owned(),
            language,
            ..Self::default()
        }
    }

    /// True when nothing is poured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pours.is_empty()
    }

    /// Take over the saved state among the spool's `entries` (those under [`SENSOR_PREFIX`]
    /// and [`POUR_PREFIX`]). Returns the keys of entries that cannot be read: their sensors or
    /// pours start fresh, and the engine says so.
    pub fn restore(&mut self, entries: &[(String, Vec<u8>)]) -> Vec<String> {
        let mut unreadable = Vec::new();
        for (key, bytes) in entries {
            if key.starts_with(SENSOR_PREFIX) {
                match serde_json::from_slice::<SensorState>(bytes) {
                    Ok(s) => {
                        self.restored.insert(key.clone(), s);
                    }
                    Err(_) => unreadable.push(key.clone()),
                }
            } else if let Some(name) = key.strip_prefix(POUR_PREFIX) {
                let Some(pi) = self.pours.iter().position(|p| p.name == name) else {
                    continue;
                };
                match serde_json::from_slice::<PourState>(bytes) {
                    Ok(s) => self.states[pi] = (s, false),
                    Err(_) => {
                        // Milestones already announced cannot be told apart from new ones:
                        // say so; the pour's other state is re-established from readings.
                        unreadable.push(key.clone());
                    }
                }
            }
        }
        unreadable
    }

    /// The state entries changed since the last call.
    ///
    /// # Errors
    /// None: an entry that cannot be serialised is counted in the second value and kept dirty.
    pub fn state_changes(&mut self) -> (StateDelta, usize) {
        let mut delta = StateDelta::default();
        let mut errors = 0;
        for s in &mut self.sensors {
            if !s.dirty {
                continue;
            }
            match serde_json::to_vec(&s.state) {
                Ok(bytes) => {
                    let key = sensor_key(&self.pours[s.pour].name, &s.base.key);
                    delta.entries.insert(key, Some(bytes));
                    s.dirty = false;
                }
                Err(_) => errors += 1,
            }
        }
        for (pi, (state, dirty)) in self.states.iter_mut().enumerate() {
            if !*dirty {
                continue;
            }
            match serde_json::to_vec(state) {
                Ok(bytes) => {
                    delta
                        .entries
                        .insert(pour_key(&self.pours[pi].name), Some(bytes));
                    *dirty = false;
                }
                Err(_) => errors += 1,
            }
        }
        (delta, errors)
    }

    /// The milestone notices made since the last call, in order. The engine commits them with
    /// [`PourSet::state_changes`] in the same transaction.
    pub fn take_notices(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.notices)
    }

    /// Match a channel seen for the first time against every pour's selectors.
    fn see(&mut self, series: &Arc<Series>) {
        if self.seen.contains(&series.key) {
            return;
        }
        self.seen.insert(series.key.clone());
        // A pour's own outputs are never its inputs (a selector by device would match them).
        if series
            .tags
            .get(DERIVED_TAG)
            .is_some_and(|d| self.pours.iter().any(|p| &p.name == d))
        {
            return;
        }
        let info = ChannelInfo::from_series(series);
        for (pi, pour) in self.pours.iter().enumerate() {
            let Some(role) = pour
                .sensors
                .iter()
                .find(|(_, sel)| sel.matches(&info))
                .map(|(r, _)| *r)
            else {
                continue;
            };
            let clash = self.by_channel.get(&series.key).is_some_and(|sis| {
                sis.iter()
                    .any(|&si| self.sensors[si].role.in_concrete() && role.in_concrete())
            });
            if clash {
                error!(pour = %pour.name, channel = %series.key,
                       "A concrete sensor is selected by two pours; only the first computes its maturity (narrow the selectors).");
                continue;
            }
            let basis = Basis::of(pour);
            let mut state = self
                .restored
                .remove(&sensor_key(&pour.name, &series.key))
                .unwrap_or_default();
            if state.basis.is_some_and(|b| b != basis) {
                // Restarting from zero under-estimates the strength: milestones come late,
                // never early.
                error!(pour = %pour.name, channel = %series.key,
                       "The pour's placing time or its mix's T0 or E changed since the maturity was saved; the sensor's maturity starts again from zero (its milestones come later than they should, never earlier).");
                state = SensorState::default();
            }
            state.basis = Some(basis);
            let si = self.sensors.len();
            self.sensors.push(Sensor {
                pour: pi,
                role,
                base: Arc::clone(series),
                state,
                history: History::default(),
                outputs: Default::default(),
                dirty: false,
                covered_diff: None,
                waiting: 0,
            });
            self.by_channel
                .entry(series.key.clone())
                .or_default()
                .push(si);
            self.members[pi].push(si);
            info!(pour = %pour.name, channel = %series.key, role = role.as_str(), "Pour sensor found.");
        }
    }

    /// The derived readings of a batch of stored readings (in their order), and the milestone
    /// notices they reach (taken with [`PourSet::take_notices`]). `now` is the gateway time.
    pub fn on_batch(&mut self, readings: &[Reading], now: TimestampNs) -> Vec<Reading> {
        let mut out = Vec::new();
        if self.pours.is_empty() {
            return out;
        }
        // Every reading is recorded before any is combined, so the roles of one poll meet, also
        // when the batch holds many polls (a node's stored polls uploaded at once).
        self.batch += 1;
        for r in readings {
            self.see(&r.series);
            if let Some(sis) = self.by_channel.get(&r.series.key) {
                for &si in sis {
                    self.sensors[si].history.push(Sample::of(r), self.batch);
                }
            }
        }
        self.combine_released(Some(now), now, &mut out);
        for r in readings {
            // By index: the list is not copied per reading.
            for j in 0.. {
                let Some(&si) = self.by_channel.get(&r.series.key).and_then(|v| v.get(j)) else {
                    break;
                };
                self.compute(si, r, now, &mut out);
            }
        }
        out
    }

    /// True when every sensor of `role` in pour `pi` has reported up to `ts` (none: true).
    fn role_reached(&self, pi: usize, role: Role, ts: TimestampNs) -> bool {
        self.members[pi]
            .iter()
            .map(|&si| &self.sensors[si])
            .filter(|s| s.role == role)
            .all(|s| s.history.reached(ts))
    }

    /// The series of sensor `si`'s reading `r` combined with the readings of another role at
    /// its time: the core − surface difference (GB 50496-2018 §3.0.4-2), the surface − air
    /// difference (§3.0.4-4) once the insulation is off, or under it with the strip advice.
    fn combine(&mut self, si: usize, r: &Reading, now: TimestampNs, out: &mut Vec<Reading>) {
        let (pi, role) = (self.sensors[si].pour, self.sensors[si].role);
        let Some(partner) = role.partner() else {
            return;
        };
        let Some(other) = self.role_mean(pi, partner, r.ts) else {
            return;
        };
        let value = r.value.filter(|_| r.quality.is_good());
        let diff = match (value, other) {
            (Some(v), Ok(o)) => Ok(v - o),
            _ => Err(Quality::DerivedInputBad),
        };
        if role == Role::Core {
            self.emit(si, PourSeries::CoreSurface, r.ts, diff, out);
            return;
        }
        // §3.0.4-4 applies once the insulation is off (configured or set by command).
        let removed = self.pours[pi]
            .insulation_removed_ns
            .or(self.states[pi].0.insulation_removed_ns);
        if removed.is_some_and(|t| r.ts >= t) {
            self.emit(si, PourSeries::SurfaceAmbient, r.ts, diff, out);
        } else {
            // Before removal: what stripping now would expose, and the advice on it.
            self.emit(si, PourSeries::SurfaceAmbientCovered, r.ts, diff, out);
            self.sensors[si].covered_diff = diff.ok();
            self.strip_advice(pi, si, r.ts, now);
        }
    }

    /// True while readings wait for another role's: the engine feeds an empty batch on its tick
    /// so that they are combined once their wait is over.
    #[must_use]
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Combine every waiting reading now, from what there is (the engine stopping).
    pub fn release_waiting(&mut self, now: TimestampNs) -> Vec<Reading> {
        let mut out = Vec::new();
        self.combine_released(None, now, &mut out);
        out
    }

    /// Combine the waiting readings whose partners reached their time or whose wait is over at
    /// `wait_now` (`None`: all of them).
    fn combine_released(
        &mut self,
        wait_now: Option<TimestampNs>,
        now: TimestampNs,
        out: &mut Vec<Reading>,
    ) {
        if self.waiting.is_empty() {
            return;
        }
        let mut waiting = std::mem::take(&mut self.waiting);
        let released = waiting.take(wait_now, |(si, r), waited| {
            let s = &self.sensors[*si];
            waited
                || s.role
                    .partner()
                    .is_none_or(|p| self.role_reached(s.pour, p, r.ts))
        });
        self.waiting = waiting;
        for (si, r) in released {
            self.sensors[si].waiting -= 1;
            self.combine(si, &r, now, out);
        }
    }

    /// The mean of the readings of `role` in pour `pi` nearest to `ts` within the pour's
    /// `max_skew`: `None` when the pour has no such sensor, `Some(Err)` when one of them has no
    /// good reading there.
    fn role_mean(&self, pi: usize, role: Role, ts: TimestampNs) -> Option<Result<f64, Quality>> {
        let skew = self.pours[pi].max_skew_ns;
        let mut n = 0usize;
        let mut sum = 0.0;
        for s in self.members[pi]
            .iter()
            .map(|&si| &self.sensors[si])
            .filter(|s| s.role == role)
        {
            match s.history.nearest(ts, skew).and_then(|x| x.value) {
                Some(v) => {
                    n += 1;
                    sum += v;
                }
                None => return Some(Err(Quality::DerivedInputBad)),
            }
        }
        (n > 0).then(|| Ok(sum / n as f64))
    }

    /// The readings sensor `si` derives from its reading `r`.
    fn compute(&mut self, si: usize, r: &Reading, now: TimestampNs, out: &mut Vec<Reading>) {
        let pi = self.sensors[si].pour;
        let role = self.sensors[si].role;
        let placed = self.pours[pi].placed_ns;
        // Before placing an embedded sensor reads the air: nothing of the pour yet.
        if r.ts < placed || !role.in_concrete() {
            return;
        }
        let value = r.value.filter(|_| r.quality.is_good());
        let bad = Err(Quality::DerivedInputBad);
        if role == Role::Core {
            // GB 50496 §3.0.4-1: the placing temperature, configured or the first core reading.
            let placing = match (self.pours[pi].placing_c, &mut self.states[pi]) {
                (Some(t), _) => Some(t),
                (None, (state, dirty)) => {
                    if state.placing_c.is_none() {
                        if let Some(v) = value {
                            state.placing_c = Some(v);
                            *dirty = true;
                            info!(pour = %self.pours[pi].name, placing_c = v, channel = %r.series.key,
                                  "Placing temperature taken from the first core reading after placing.");
                        }
                    }
                    state.placing_c
                }
            };
            let rise = match (value, placing) {
                (Some(v), Some(p)) => Ok(v - p),
                _ => bad,
            };
            self.emit(si, PourSeries::Rise, r.ts, rise, out);
            let (window_ns, min_points) =
                (self.pours[pi].cooling_window_ns, self.pours[pi].min_points);
            let cooling = match value {
                Some(v) => {
                    let s = &mut self.sensors[si];
                    let w = s
                        .state
                        .cooling
                        .get_or_insert_with(|| RateWindow::new(window_ns));
                    if w.width_ns != RateWindow::new(window_ns).width_ns {
                        // The configured window changed: start afresh.
                        *w = RateWindow::new(window_ns);
                    }
                    w.push(r.ts, v);
                    s.dirty = true;
                    // §3.0.4-3: the cooling per day, positive when the core cools.
                    window_rate(w, min_points, window_ns, SECS_PER_DAY).map(|rate| Ok(-rate))
                }
                None => Some(bad),
            };
            if let Some(c) = cooling {
                self.emit(si, PourSeries::CoolingRate, r.ts, c, out);
            }
        }
        // Core − surface and surface − air wait for the partner's reading of their time (it may
        // come in a later message or batch: docs/DOMAIN.md §Derived channels), behind the
        // sensor's earlier ones; at the bound of the queue, computed from what there is.
        if let Some(partner) = role.partner() {
            let early = self.sensors[si].waiting > 0 || !self.role_reached(pi, partner, r.ts);
            if early && self.waiting.push((si, r.clone()), now).is_ok() {
                self.sensors[si].waiting += 1;
            } else {
                self.combine(si, r, now, out);
            }
        }
        let Some(v) = value else {
            for s in [
                PourSeries::Maturity,
                PourSeries::EquivalentAge,
                PourSeries::Strength,
                PourSeries::StrengthShare,
            ] {
                self.emit(si, s, r.ts, bad, out);
            }
            return;
        };
        let mix = &self.pours[pi].mix;
        let (datum, energy, curve, design) = (
            mix.datum,
            mix.activation_energy,
            mix.curve,
            mix.design_strength,
        );
        let s = &mut self.sensors[si];
        // A reading older than the last one integrated (a late upload): the integrals are
        // already past its time, so no value of its own can be given.
        if s.state.maturity.last.is_some_and(|(last, _)| r.ts < last) {
            return;
        }
        s.state.maturity.step(r.ts, v, placed, datum, energy);
        let (m, te) = (s.state.maturity.m, s.state.maturity.te);
        let strength = curve.strength(m, te);
        s.state.strength = Some(strength);
        s.dirty = true;
        self.emit(si, PourSeries::Maturity, r.ts, Ok(m), out);
        self.emit(si, PourSeries::EquivalentAge, r.ts, Ok(te), out);
        self.emit(si, PourSeries::Strength, r.ts, Ok(strength), out);
        self.emit(
            si,
            PourSeries::StrengthShare,
            r.ts,
            Ok(100.0 * strength / design),
            out,
        );
        self.milestones(pi, r.ts, now);
    }

    /// Announce the milestones of pour `pi` its weakest sensor has reached at `ts`. Judged only
    /// once every concrete role the pour configures has a sensor with a strength: a surface
    /// string not heard yet could be the weakest.
    fn milestones(&mut self, pi: usize, ts: TimestampNs, now: TimestampNs) {
        let reported = |role: Role| {
            self.members[pi].iter().any(|&si| {
                let s = &self.sensors[si];
                s.role == role && s.state.strength.is_some()
            })
        };
        if !self.pours[pi]
            .sensors
            .iter()
            .all(|(role, _)| !role.in_concrete() || reported(*role))
        {
            return;
        }
        let Some((weakest, strength)) = self.members[pi]
            .iter()
            .map(|&si| (si, &self.sensors[si]))
            .filter(|(_, s)| s.role.in_concrete())
            .map(|(si, s)| (si, s.state.strength.unwrap_or(0.0)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
        else {
            return;
        };
        let (mix, announced) = (&self.pours[pi].mix, &self.states[pi].0.announced);
        // Empty, and so not allocated, on nearly every reading.
        let mut due: Vec<(Milestone, f64)> = Milestone::ALL
            .iter()
            .filter_map(|m| m.threshold(mix).map(|t| (*m, t)))
            .filter(|(m, t)| strength >= *t && !announced.contains(m.name()))
            .collect();
        due.sort_by(|a, b| a.1.total_cmp(&b.1));
        for (milestone, threshold) in due {
            let series = self.output(weakest, PourSeries::Strength);
            let notice = self.notice(pi, (milestone, threshold), (&series, strength), (ts, now));
            let (state, dirty) = &mut self.states[pi];
            state.announced.insert(milestone.name().to_owned());
            *dirty = true;
            info!(pour = %self.pours[pi].name, milestone = milestone.name(), strength, "{}", notice.message);
            self.notices.push(notice);
        }
    }

    /// Advise on stripping pour `pi` while its insulation is on, from the surface − air
    /// differences of its surface sensors (the largest decides; sensor `si` read at `ts`).
    /// GB 50496-2018 §3.0.4-4 allows at most 20 °C between surface and air when the insulation
    /// is removed ("不应大于"; ../shared/reference/domain.md §2.1: "T_surface − T_air > 20 blocks
    /// insulation removal (advisory)"): above it a notice says not to strip yet; once every
    /// surface is [`config::STRIP_ADVICE_DEADBAND_C`] below it, a notice says stripping may go
    /// ahead. Each turn once, saved with its notice.
    fn strip_advice(&mut self, pi: usize, si: usize, ts: TimestampNs, now: TimestampNs) {
        use config::{STRIP_ADVICE_DEADBAND_C, SURFACE_AMBIENT_LIMIT_C};
        let Some(largest) = self.members[pi]
            .iter()
            .filter_map(|&m| self.sensors[m].covered_diff)
            .max_by(f64::total_cmp)
        else {
            return;
        };
        let hold = match self.states[pi].0.strip_advice {
            Some(true) if largest <= SURFACE_AMBIENT_LIMIT_C - STRIP_ADVICE_DEADBAND_C => false,
            Some(true) => return,
            _ if largest > SURFACE_AMBIENT_LIMIT_C => true,
            _ => return,
        };
        let (limit, below) = (
            crate::alert::format_number(SURFACE_AMBIENT_LIMIT_C),
            crate::alert::format_number(SURFACE_AMBIENT_LIMIT_C - STRIP_ADVICE_DEADBAND_C),
        );
        let label = match (self.language, hold) {
            (Language::Zh, true) => format!("保温层下表面与大气温差超过 {limit} °C，暂不宜拆除保温（GB 50496-2018 §3.0.4-4）"),
            (Language::Zh, false) => format!("保温层下表面与大气温差已降至 {below} °C 以下，可拆除保温（GB 50496-2018 §3.0.4-4）"),
            (Language::En, true) => format!("surface-air difference under the insulation above {limit} °C: do not strip the insulation yet (GB 50496-2018 §3.0.4-4)"),
            (Language::En, false) => format!("surface-air difference under the insulation down to {below} °C or less: the insulation may come off (GB 50496-2018 §3.0.4-4)"),
        };
        let series = self.output(si, PourSeries::SurfaceAmbientCovered);
        let rule = format!("{}/strip-advice", self.pours[pi].name);
        // Each turn of the advice is its own notice: its time stands for the raise time.
        let a = self.pour_notice(
            pi,
            (Cause::StripAdvice, rule, label),
            (&series, largest, None),
            (ts, ts, now),
        );
        info!(pour = %self.pours[pi].name, difference = largest, "{}", a.message);
        let (state, dirty) = &mut self.states[pi];
        state.strip_advice = Some(hold);
        *dirty = true;
        self.notices.push(a);
    }

    /// A notice of pour `pi` (`cause`, `rule`, `label`) about the reading of `series` at `ts`
    /// with `value` (and the `threshold` it reached), detected at `now`; its id is the rule's
    /// for the time `id_ts` (alert.rs §Notices).
    fn pour_notice(
        &self,
        pi: usize,
        (cause, rule, label): (Cause, String, String),
        (series, value, threshold): (&Series, f64, Option<f64>),
        (id_ts, ts, now): (TimestampNs, TimestampNs, TimestampNs),
    ) -> Alert {
        let pour = &self.pours[pi];
        let mut a = Alert {
            id: stable_id(&self.site, &rule, None, &[&pour.name], id_ts),
            seq: 0,
            kind: AlertKind::Notice,
            cause,
            site: self.site.clone(),
            structure: Some(pour.element.clone()),
            device: series.device.clone(),
            point: series.point.clone(),
            channel: series.key.clone(),
            channels: vec![series.key.clone()],
            quantity: Some(series.kind),
            rule,
            label: Some(label),
            side: None,
            level: Level::Blue,
            previous_level: None,
            state: AlertState::Notice,
            value: Some(value),
            threshold,
            unit: series.unit.clone(),
            quality: None,
            started_at: ts,
            event_at: ts,
            detected_at: now,
            message: String::new(),
            ack: None,
        };
        a.message = render_message(&a, self.language);
        a
    }

    /// The notice of `milestone` (`threshold` MPa) of pour `pi`, reached by the strength
    /// `value` of `series` in its reading at `ts`, detected at `now`.
    fn notice(
        &self,
        pi: usize,
        (milestone, threshold): (Milestone, f64),
        (series, value): (&Series, f64),
        (ts, now): (TimestampNs, TimestampNs),
    ) -> Alert {
        let pour = &self.pours[pi];
        let rule = format!("{}/{}", pour.name, milestone.name());
        // One milestone of one pour has one id: the pour's placing time stands for the raise
        // time of the id scheme (alert.rs §Notices).
        self.pour_notice(
            pi,
            (Cause::Milestone, rule, milestone.label(self.language)),
            (series, value, Some(threshold)),
            (pour.placed_ns, ts, now),
        )
    }

    /// The series of `what` of sensor `si`, built on first use.
    fn output(&mut self, si: usize, what: PourSeries) -> Arc<Series> {
        let slot = what.index();
        if let Some(s) = &self.sensors[si].outputs[slot] {
            return Arc::clone(s);
        }
        let sensor = &self.sensors[si];
        let pour = &self.pours[sensor.pour];
        let base = &sensor.base;
        let mut tags = base.tags.to_map();
        for t in ["device", "point", "unit"] {
            tags.remove(t);
        }
        tags.insert(DERIVED_TAG.to_owned(), pour.name.clone());
        tags.insert(POUR_TAG.to_owned(), pour.name.clone());
        tags.insert(ROLE_TAG.to_owned(), sensor.role.as_str().to_owned());
        let site = tags.remove("site").unwrap_or_default();
        let gateway = tags.remove("gateway").unwrap_or_default();
        let (kind, unit) = match what {
            PourSeries::Rise
            | PourSeries::CoreSurface
            | PourSeries::SurfaceAmbient
            | PourSeries::SurfaceAmbientCovered => (QuantityKind::Temperature, "°C"),
            PourSeries::CoolingRate => (QuantityKind::Temperature, "°C/d"),
            PourSeries::Maturity => (QuantityKind::Maturity, "°C·h"),
            PourSeries::EquivalentAge => (QuantityKind::Age, "h"),
            PourSeries::Strength => (QuantityKind::Strength, "MPa"),
            PourSeries::StrengthShare => (QuantityKind::Strength, "%"),
        };
        let point = format!("{}.{}", base.point, what.as_str());
        let series = Arc::new(Series::new(
            &site,
            &gateway,
            &base.device,
            &point,
            kind,
            unit,
            &tags,
        ));
        self.sensors[si].outputs[slot] = Some(Arc::clone(&series));
        series
    }

    /// Push a reading of `what` of sensor `si`: the value when good, otherwise the flag.
    fn emit(
        &mut self,
        si: usize,
        what: PourSeries,
        ts: TimestampNs,
        value: Result<f64, Quality>,
        out: &mut Vec<Reading>,
    ) {
        let series = self.output(si, what);
        out.push(match value {
            Ok(v) => Reading::good(series, ts, v),
            Err(q) => Reading::bad(series, ts, q),
        });
    }
}

#[cfg(test)]
mod tests;
