//! Derived channels (issue 7 items 2-4, issue 8 items 2-3): settlement from hydrostatic levelling,
//! differences, means, rates, tilts, sums over a window, running sums, the settlement
//! stability verdict (JGJ 8-2016, docs/DOMAIN.md §Settlement) and the slope early warning
//! (failure-time forecast, tangent angle, antecedent rainfall: [`slope`]; a GNSS point's
//! along-slope displacement: [`gnss`]; docs/DOMAIN.md §Slope early warning; their series stored
//! at most once per `store_every` while unchanged), each a [`Series`] of its own whose readings the engine stores and evaluates
//! exactly like a device's.
//!
//! Owns the `[[derived]]` configuration ([`config`]), the routing of channels to the derived
//! channels they feed (selectors matched once per channel, on first sight), the short history of
//! each input used to combine readings taken at the same time, the computation of every kind
//! (formulas and sources in docs/DOMAIN.md §Derived channels), and the state that must survive a
//! restart (rate and stability windows, sum windows, running sums as spool state entries
//! `v/<block>/<channel>`;
//! initial values established or requested by `gateway baseline`, `vi/<block>/<channel>`,
//! their record format in [`initial`]), handed to the engine with the rule state. It does no I/O, has no clock, and never sees alert rules: the engine feeds it each
//! batch's readings and takes back the derived readings.
//!
//! # Quality
//! A bad input makes the derived value bad, never absent and never good: a derived reading is
//! written with [`Quality::DerivedInputBad`] (an input not good, or no reading of an input within
//! `max_skew`) or [`Quality::InitialValueMissing`] (a levelling cell or reference without an
//! initial value: configured, or established once from its first good readings where the block
//! says `establish_readings`; never guessed, never established a second time). A slope
//! judgement its gates refused is written with [`Quality::Refused`] and the reason.
//!
//! # Order
//! Blocks are evaluated in declaration order, each on the batch's readings plus the outputs of
//! the blocks before it in the same batch, so a tilt can be computed from the settlements a
//! levelling block derived from the same poll, and no block can feed itself (no cycles).
//! Readings combined (pairs, means, a cell and its reference) are the latest of each input
//! nearest in time within `max_skew`; all readings of a batch are recorded before any block
//! computes, so the cells and the reference of one logger's poll are combined with each other,
//! and a combination some input of which has not reported up to its time waits for it (the rest
//! of a poll in a later batch), at most [`COMBINE_WAIT`] ([`DerivedSet::on_batch_at`]).
//!
//! # Bounds
//! Per input channel: [`INPUT_HISTORY`] readings, or the last batch's readings of it when that
//! batch brought more ([`History`]). Per output: a rate window (rate, stability)
//! of at most `RATE_BUCKETS + 1` buckets (about 4 KiB), or a sum window of at most
//! [`config::MAX_SUM_READINGS`] readings, or one number, or a slope kind's state (two rate
//! windows, or [`slope::MAX_ANTECEDENT_DAYS`] × 24 hourly sums; see [`slope`]); per established
//! initial value, one entry; per slope output whose gate verdict changed, one rate-limiter key
//! ([`SLOPE_LOG_KEYS`] at most); combinations waiting for an input, [`MAX_WAITING_COMBINATIONS`]
//! at most. The number of outputs is what the selectors match among the channels the sources
//! produce; they are not evicted with idle channels (an idle output costs its state only).

pub mod config;
pub mod gnss;
pub mod initial;
pub mod slope;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::rules::fingerprint::fingerprint;
use super::rules::selector::ChannelInfo;
use super::rules::{OpenBucket, RateWindow};
use crate::log_limit::LogLimiter;
use crate::model::{Quality, QuantityKind, Reading, Refusal, Series, TimestampNs, NANOS_PER_SEC};
use crate::spool::StateDelta;
pub use config::{DerivedConfig, DerivedKind, DerivedPlan, DerivedSpec};
use initial::Added;
pub use initial::{Baseline, ESTABLISH_METHOD};

/// Readings of each input kept to combine with the readings of the other inputs (a logger's
/// poll, or a few of a node's buffered messages).
pub const INPUT_HISTORY: usize = 16;
/// Longest a combination (pair, mean, along-slope, a levelling cell with its reference and
/// liquid temperatures) waits, in gateway time, for an input that has not reported up to its
/// time yet: the rest of a poll split over several messages or batches, a logger polled just
/// after another. Then it is computed from what there is (docs/DOMAIN.md §Derived channels).
pub const COMBINE_WAIT: Duration = Duration::from_secs(2);
/// Combinations waiting at most: beyond, a combination is computed at once from what there is.
pub const MAX_WAITING_COMBINATIONS: usize = 4096;
/// Prefix of the spool state entries of derived channels (`v/<block>/<channel key>`).
pub const ENTRY_PREFIX: &str = "v/";
/// Prefix of the spool state entries of initial values the gateway established
/// (`vi/<block>/<channel key>`, see `establish_readings`).
pub const INITIAL_PREFIX: &str = "vi/";
/// Prefix of the entries that hold the newest bucket of each rate window of a derived channel
/// (rate, stability, forecast, tangent angle: `vo/<block>/<channel key>`), saved apart from its
/// `v/` entry while the windows' other buckets are unchanged (issue 11: the whole windows
/// rewritten with every save wrote about 18 KB per plate with a rate and a stability verdict
/// every 10 s). An entry that cannot be read costs its channel the newest buckets only.
pub const OPEN_PREFIX: &str = "vo/";
/// A rate is given once its readings span at least this fraction of the window, as for rate
/// rules (docs/DOMAIN.md §Data quality: a slope over less than the noise period is noise).
pub const RATE_MIN_SPAN_FRACTION: f64 = 0.5;
/// The tag that marks a derived series, with the name of its `[[derived]]` block.
pub const DERIVED_TAG: &str = "derived";
/// The tag of a rate series naming the quantity it is the rate of (`settlement`).
pub const RATE_OF_TAG: &str = "rate_of";
/// A slope judgement whose gate verdict changed is logged at most once per this interval per
/// output (the verdict is in every reading's quality code anyway).
pub const SLOPE_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Most outputs whose slope log lines are rate-limited at once (beyond it, lines about further
/// outputs wait; see [`LogLimiter`]).
pub const SLOPE_LOG_KEYS: usize = 1024;
/// Unit tag of an R².
pub const R2_UNIT: &str = "ratio";

/// One reading of an input: its time, and its value when good.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub(crate) ts: TimestampNs,
    pub(crate) value: Option<f64>,
}

impl Sample {
    pub(crate) fn of(r: &Reading) -> Self {
        Self {
            ts: r.ts,
            value: r.value.filter(|_| r.quality.is_good()),
        }
    }
}

/// The readings of one input kept to combine with the other inputs', oldest first: the last
/// [`INPUT_HISTORY`], or all of the current batch's when it brought more.
///
/// All of a batch's readings are recorded before any is combined, so a reading meets the
/// partners of its own poll even when they came later in the batch. A batch can hold many polls
/// of one channel (a logger or node uploading the polls it stored through an outage, a backlog
/// the engine takes at once): evicting by count while recording would drop a poll's partner
/// before that poll is combined, and the reading would be paired with a neighbouring poll's
/// partner (a wrong value stored as good) or with none (flagged). So readings of the batch
/// being recorded are never evicted; older ones are, down to [`INPUT_HISTORY`].
#[derive(Debug, Default)]
pub(crate) struct History {
    samples: VecDeque<Sample>,
    /// The batch ([`BatchId`]) of the last push, and how many samples it pushed.
    batch: BatchId,
    of_batch: usize,
}

/// Counts the batches a [`DerivedSet`] or pour set records: a [`History`] tells the readings of
/// the batch being recorded from those kept from earlier ones.
pub(crate) type BatchId = u64;

impl History {
    /// Keep `s`, recorded in batch `batch` (batches numbered upwards).
    pub(crate) fn push(&mut self, s: Sample, batch: BatchId) {
        if batch != self.batch {
            self.batch = batch;
            self.of_batch = 0;
        }
        self.of_batch += 1;
        self.samples.push_back(s);
        while self.samples.len() > INPUT_HISTORY.max(self.of_batch) {
            self.samples.pop_front();
        }
    }

    /// True once the input has a reading at or after `ts`: its reading nearest to `ts` is then
    /// known (a channel's readings come in time order).
    pub(crate) fn reached(&self, ts: TimestampNs) -> bool {
        self.samples.iter().rev().any(|s| s.ts >= ts)
    }

    /// The reading nearest to `ts`, if one is within `max_skew` (the later one on a tie).
    pub(crate) fn nearest(&self, ts: TimestampNs, max_skew: i64) -> Option<Sample> {
        self.samples
            .iter()
            .rev()
            .filter(|s| s.ts.abs_diff(ts) <= max_skew.unsigned_abs())
            .min_by_key(|s| s.ts.abs_diff(ts))
            .copied()
    }
}

/// Combinations waiting for their inputs to reach their time, oldest first, each with the
/// gateway time it started waiting ([`COMBINE_WAIT`]).
#[derive(Debug)]
pub(crate) struct Waiting<T>(VecDeque<(T, TimestampNs)>);

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Self(VecDeque::new())
    }
}

impl<T> Waiting<T> {
    /// Wait with `item` from `now`; `item` back when [`MAX_WAITING_COMBINATIONS`] wait already
    /// (compute it at once).
    pub(crate) fn push(&mut self, item: T, now: TimestampNs) -> Result<(), T> {
        if self.0.len() >= MAX_WAITING_COMBINATIONS {
            return Err(item);
        }
        self.0.push_back((item, now));
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(t, _)| t)
    }

    /// Take, in order, the entries `release` lets go, told whether each has waited
    /// [`COMBINE_WAIT`] by `now` (always, with `now` `None`: a final release; also when the
    /// clock went back past its start).
    pub(crate) fn take(
        &mut self,
        now: Option<TimestampNs>,
        mut release: impl FnMut(&T, bool) -> bool,
    ) -> Vec<T> {
        let wait = i64::try_from(COMBINE_WAIT.as_nanos()).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        let mut kept = VecDeque::with_capacity(self.0.len());
        for (item, since) in self.0.drain(..) {
            let waited = now.is_none_or(|now| now < since || now - since >= wait);
            if release(&item, waited) {
                out.push(item);
            } else {
                kept.push_back((item, since));
            }
        }
        self.0 = kept;
        out
    }
}

/// A derived computation waiting for an input ([`Waiting`]).
#[derive(Debug)]
enum Pending {
    /// Pair, mean, along-slope output `oi` at `ts`, first triggered by a reading of `trigger`.
    Combined {
        oi: usize,
        ts: TimestampNs,
        trigger: Arc<Series>,
    },
    /// A levelling cell's reading, for output `oi`.
    Levelling { oi: usize, reading: Reading },
}

impl Pending {
    const fn output(&self) -> usize {
        match self {
            Self::Combined { oi, .. } | Self::Levelling { oi, .. } => *oi,
        }
    }

    const fn ts(&self) -> TimestampNs {
        match self {
            Self::Combined { ts, .. } => *ts,
            Self::Levelling { reading, .. } => reading.ts,
        }
    }
}

/// What one output computes, with its running state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Calc {
    /// Levelling cell: its initial value and the reference's, when configured.
    Levelling {
        /// Channel key of the reference cell.
        reference: String,
        /// Liquid-temperature channels of the cell and of the reference, where the line
        /// corrects heads for the liquid's density (docs/DOMAIN.md §Hydrostatic levelling).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        temperatures: Option<Box<(String, String)>>,
    },
    /// `(a − b) / divisor` (divisor 1 for a difference).
    Pair { divisor: f64 },
    /// Mean of the inputs.
    Mean,
    /// Along-slope displacement of a GNSS point from its east, north (and up) inputs
    /// ([`gnss::Direction::project`]).
    AlongSlope,
    /// Least-squares slope.
    Rate(RateWindow),
    /// Readings within the window; `None` for a bad one (the sum is flagged while it is in).
    /// For `input = "total"`, the increments between totals, and the last good total.
    Sum {
        readings: VecDeque<(TimestampNs, Option<f64>)>,
        #[serde(default)]
        last_total: Option<f64>,
    },
    /// Running sum and the time of its first reading.
    Cumulative { sum: f64, since: TimestampNs },
    /// Stability verdict: the rate window, and the time of the channel's first good reading
    /// (the history covers the window once it is `window` old).
    Stability {
        window: RateWindow,
        since: TimestampNs,
    },
    /// Structure verdict: the latest verdict of each of its points (stable or not), by the
    /// point verdict's channel key; stable when every one is. `announced`: the structure's
    /// turn to stable was announced (a notice) and it has not turned back since; `None` in
    /// state saved before notices existed (the first verdict after the upgrade sets it
    /// without a notice: a structure stable for weeks is no news).
    AllStable {
        members: BTreeMap<String, bool>,
        #[serde(default)]
        announced: Option<bool>,
    },
    /// Fukuzono's inverse-velocity forecast ([`slope::Forecast`]); its companion outputs are
    /// `Output::companions`. Boxed: two windows would double every output's size.
    Forecast(Box<slope::Forecast>),
    /// Xu's improved tangent angle ([`slope::Tangent`]), with its level as companion.
    Tangent(Box<slope::Tangent>),
    /// Effective antecedent rainfall ([`slope::Antecedent`]).
    Antecedent(slope::Antecedent),
    /// A further series of a forecast or tangent angle: computed and saved with its owner, never
    /// fed by itself.
    Companion,
}

impl Calc {
    /// Calcs that hold rate windows (rate, stability, forecast, tangent angle): the fingerprint
    /// of the entry without each window's newest bucket, and those buckets, in the order of
    /// [`Calc::windows_mut`] ([`OPEN_PREFIX`]). `None` for the other kinds.
    fn split(&self) -> Option<(u64, Vec<Option<OpenBucket>>)> {
        if !matches!(
            self,
            Self::Rate(_) | Self::Stability { .. } | Self::Forecast(_) | Self::Tangent(_)
        ) {
            return None;
        }
        // On a copy: the buckets other than the newest, and every other field, as saved.
        let mut closed = self.clone();
        let open: Vec<Option<OpenBucket>> = closed
            .windows_mut()
            .into_iter()
            .map(RateWindow::take_open)
            .collect();
        Some((fingerprint(&closed).ok()?, open))
    }

    /// The rate windows of a calc, in a fixed order; empty for kinds without one.
    fn windows_mut(&mut self) -> Vec<&mut RateWindow> {
        match self {
            Self::Rate(w) | Self::Stability { window: w, .. } => vec![w],
            Self::Forecast(f) => f.windows_mut(),
            Self::Tangent(t) => t.windows_mut(),
            _ => Vec::new(),
        }
    }

    /// True for state that must survive a restart.
    const fn is_persistent(&self) -> bool {
        matches!(
            self,
            Self::Rate(_)
                | Self::Sum { .. }
                | Self::Cumulative { .. }
                | Self::Stability { .. }
                | Self::AllStable { .. }
                | Self::Forecast(_)
                | Self::Tangent(_)
                | Self::Antecedent(_)
        )
    }
}

/// One derived channel.
#[derive(Debug)]
struct Output {
    /// Index of its block.
    block: usize,
    /// Output device and point, templates expanded.
    device: String,
    point: String,
    /// Input channel keys: `[a, b]` for a pair, the members of a mean, the one input otherwise.
    inputs: Vec<String>,
    calc: Calc,
    /// Built on the first reading, from its inputs' series.
    series: Option<Arc<Series>>,
    /// The state changed since it was last handed out for saving.
    dirty: bool,
    /// Calcs with rate windows: the fingerprint of the entry without each window's newest
    /// bucket as last handed out in full; while it holds, only the newest buckets are saved
    /// ([`OPEN_PREFIX`]). `None`: the next save is a full one.
    saved_closed: Option<u64>,
    /// Forecast, tangent angle: the outputs of its further series, in the order of
    /// [`config::FORECAST_SERIES`] / [`config::TANGENT_SERIES`] after the first.
    companions: Vec<usize>,
    /// Quantity kind and unit fixed by the kind's series (forecast, tangent angle), instead of
    /// the block's.
    form: Option<(QuantityKind, String)>,
    /// Forecast, tangent angle: the gate that refused the last reading (`None`: a value was
    /// given), to log changes only.
    refusal: Option<Refusal>,
    /// Its combinations waiting for an input ([`DerivedSet::waiting`]): a later one waits
    /// behind them, so the output's readings keep their order.
    waiting: u32,
    /// Slope series: the time and [`Signature`] of its last stored reading (`store_every`; not
    /// saved: the first reading after a start is stored).
    stored: Option<(TimestampNs, Signature)>,
}

/// The quality code of a slope series' reading (0 for a value) and, for a tangent angle's level
/// series, the level (−1 otherwise): what has a reading stored at once despite `store_every`.
type Signature = (i64, i64);

/// The [`Signature`] of a slope series' `value` (and `level`).
fn signature(value: &Result<f64, Quality>, level: Option<u8>) -> Signature {
    (
        value.as_ref().map_or_else(|q| q.code(), |_| 0),
        level.map_or(-1, i64::from),
    )
}

/// The derived channels of a gateway and their state. Build with [`DerivedSet::new`]; feed with
/// [`DerivedSet::on_batch`].
#[derive(Debug, Default)]
pub struct DerivedSet {
    specs: Vec<DerivedSpec>,
    outputs: Vec<Output>,
    /// Output key `device/point` → output index.
    by_key: HashMap<String, usize>,
    /// Input channel key → outputs it feeds (empty for a levelling reference: history only).
    routes: HashMap<String, Vec<usize>>,
    /// Changes of `routes` so far: a batch looks each reading's routes up once, and again
    /// after a change ([`DerivedSet::on_batch`]).
    route_changes: u64,
    /// Channels already matched against the selectors, with their series.
    seen: HashMap<String, Arc<Series>>,
    histories: HashMap<String, History>,
    /// The batch being recorded ([`History`]).
    batch: BatchId,
    /// Combinations waiting for an input to reach their time.
    waiting: Waiting<Pending>,
    /// Saved state read at start, taken by each output when it is created.
    restored: HashMap<String, Calc>,
    /// Initial values being established or established, by entry key, with a changed flag.
    baselines: HashMap<String, (Baseline, bool)>,
    /// Entry keys of initial values whose saved entry could not be read: never established
    /// again (their cells stay flagged 411 until an initial value is configured).
    lost_baselines: HashSet<String>,
    /// An initial value was just established: save the state with the next commit.
    prompt_save: bool,
    /// Notices not yet taken (a structure turned stable), and their wording.
    notices: Vec<crate::alert::Alert>,
    site: String,
    language: crate::alert::Language,
    /// Rate limit of the slope judgements' log lines, by output key.
    slope_log: Option<LogLimiter>,
}

/// Append the outputs channel `key` feeds to `flat`; their range in it.
fn routes_into(
    routes: &HashMap<String, Vec<usize>>,
    key: &str,
    flat: &mut Vec<usize>,
) -> (usize, usize) {
    let from = flat.len();
    if let Some(outs) = routes.get(key) {
        flat.extend_from_slice(outs);
    }
    (from, flat.len())
}

/// Nanoseconds as seconds.
fn secs(ns: i64) -> f64 {
    ns as f64 / NANOS_PER_SEC as f64
}

impl DerivedSet {
    /// The derived channels of `plan`, without state.
    #[must_use]
    pub fn new(plan: DerivedPlan) -> Self {
        let mut set = Self {
            specs: plan.specs,
            ..Self::default()
        };
        for bi in 0..set.specs.len() {
            let spec = &set.specs[bi];
            if let Some(r) = &spec.reference {
                set.routes.entry(r.clone()).or_default();
                // The reference's liquid temperature is history only, as the reference.
                if let Some(t) = spec.liquid.as_ref().and_then(|l| l.temperature_of(r)) {
                    set.routes.entry(t).or_default();
                }
            }
            let (pairs, name, device, kind, point) = (
                spec.pairs.clone(),
                spec.name.clone(),
                spec.device.clone(),
                spec.kind,
                spec.point.clone(),
            );
            for p in pairs {
                let (d, pt) = set.specs[bi].pair_output(&p.a, &p.b, &p.point);
                let calc = Calc::Pair { divisor: p.divisor };
                set.add_output(bi, d, pt, vec![p.a, p.b], calc);
            }
            for g in set.specs[bi].gnss.clone() {
                set.add_output(bi, g.device, g.point, g.inputs, Calc::AlongSlope);
            }
            if kind == DerivedKind::Mean {
                let vars = [("name", name.as_str())];
                let (d, p) = (
                    config::expand(&device, &vars),
                    config::expand(&point, &vars),
                );
                set.add_output(bi, d, p, Vec::new(), Calc::Mean);
            }
        }
        set
    }

    /// True when nothing is derived.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Add an output unless its key is taken (a config that names two outputs alike: the
    /// first keeps it, the clash is logged). Its saved state, if any, is taken over.
    fn add_output(
        &mut self,
        block: usize,
        device: String,
        point: String,
        inputs: Vec<String>,
        mut calc: Calc,
    ) -> Option<usize> {
        let key = format!("{device}/{point}");
        if self.by_key.contains_key(&key) || self.seen.contains_key(&key) {
            error!(derived = %self.specs[block].name, channel = %key,
                   "A derived channel would take the name of another channel; it is not computed (give the block its own `point` template).");
            return None;
        }
        let entry = entry_key(&self.specs[block].name, &key);
        if let Some(saved) = self.restored.remove(&entry) {
            let fits = match (&saved, &calc) {
                (Calc::Rate(a), Calc::Rate(b))
                | (Calc::Stability { window: a, .. }, Calc::Stability { window: b, .. }) => {
                    a.width_ns == b.width_ns
                }
                (Calc::Sum { .. }, Calc::Sum { .. })
                | (Calc::Cumulative { .. }, Calc::Cumulative { .. })
                | (Calc::AllStable { .. }, Calc::AllStable { .. })
                | (Calc::Antecedent(_), Calc::Antecedent(_)) => true,
                (Calc::Forecast(saved), Calc::Forecast(_)) => self.specs[block]
                    .forecast
                    .as_ref()
                    .is_some_and(|p| saved.fits(p)),
                (Calc::Tangent(saved), Calc::Tangent(_)) => self.specs[block]
                    .tangent
                    .as_ref()
                    .is_some_and(|p| saved.fits(p)),
                _ => false,
            };
            // A window of another length (the config changed) starts fresh.
            if fits {
                calc = saved;
            }
        }
        let oi = self.outputs.len();
        for input in &inputs {
            self.routes.entry(input.clone()).or_default().push(oi);
            self.route_changes += 1;
        }
        self.outputs.push(Output {
            block,
            device,
            point,
            inputs,
            calc,
            series: None,
            dirty: false,
            saved_closed: None,
            companions: Vec::new(),
            form: None,
            refusal: None,
            waiting: 0,
            stored: None,
        });
        self.by_key.insert(key, oi);
        Some(oi)
    }

    /// The outputs of a forecast or tangent angle over channel `input`: one per `(point
    /// suffix, kind, unit)` of `series`; the first carries `calc`, the others are its
    /// companions.
    fn add_series_group(
        &mut self,
        block: usize,
        device: &str,
        point: &str,
        input: &str,
        calc: Calc,
        series: Vec<(&str, QuantityKind, String)>,
    ) {
        let mut made = Vec::with_capacity(series.len());
        for (i, (suffix, kind, unit)) in series.into_iter().enumerate() {
            let (inputs, calc) = if i == 0 {
                (vec![input.to_owned()], calc.clone())
            } else {
                (Vec::new(), Calc::Companion)
            };
            let Some(oi) = self.add_output(
                block,
                device.to_owned(),
                format!("{point}.{suffix}"),
                inputs,
                calc,
            ) else {
                break;
            };
            self.outputs[oi].form = Some((kind, unit));
            made.push(oi);
        }
        if let Some((&first, rest)) = made.split_first() {
            self.outputs[first].companions = rest.to_vec();
        }
    }

    /// Match a channel seen for the first time against the selectors of the blocks after
    /// `after` (every block for a device's channel), creating the outputs it feeds.
    fn see(&mut self, series: &Arc<Series>, after: Option<usize>) {
        if self.seen.contains_key(&series.key) {
            return;
        }
        self.seen.insert(series.key.clone(), Arc::clone(series));
        let info = ChannelInfo::from_series(series);
        let first = after.map_or(0, |b| b + 1);
        for bi in first..self.specs.len() {
            let spec = &self.specs[bi];
            if !spec.select.as_ref().is_some_and(|s| s.matches(&info)) {
                continue;
            }
            let name = spec.name.clone();
            let key = series.key.as_str();
            let channel_vars = [
                ("name", name.as_str()),
                ("device", series.device.as_str()),
                ("point", series.point.as_str()),
                ("key", key),
            ];
            let (device, point) = (
                config::expand(&spec.device, &channel_vars),
                config::expand(&spec.point, &channel_vars),
            );
            let calc = match spec.kind {
                DerivedKind::Levelling => match &spec.reference {
                    Some(r) if r != key => {
                        let temperatures = spec.liquid.as_ref().and_then(|l| {
                            Some(Box::new((l.temperature_of(key)?, l.temperature_of(r)?)))
                        });
                        if let Some(t) = &temperatures {
                            self.routes.entry(t.0.clone()).or_default();
                        }
                        Calc::Levelling {
                            reference: r.clone(),
                            temperatures,
                        }
                    }
                    _ => continue,
                },
                DerivedKind::Rate => Calc::Rate(RateWindow::new(spec.window_ns)),
                DerivedKind::Stability => Calc::Stability {
                    window: RateWindow::new(spec.window_ns),
                    since: 0,
                },
                DerivedKind::SumOver => Calc::Sum {
                    readings: VecDeque::new(),
                    last_total: None,
                },
                DerivedKind::Cumulative => Calc::Cumulative { sum: 0.0, since: 0 },
                DerivedKind::Mean => {
                    if let Some(oi) = self.outputs.iter().position(|o| o.block == bi) {
                        self.outputs[oi].inputs.push(key.to_owned());
                        self.routes.entry(key.to_owned()).or_default().push(oi);
                        self.route_changes += 1;
                    }
                    continue;
                }
                DerivedKind::Difference => {
                    let Some(b) = spec.b.as_ref().map(|t| config::expand(t, &channel_vars)) else {
                        continue;
                    };
                    let (d, p) = spec.pair_output(key, &b, &spec.point);
                    let inputs = vec![key.to_owned(), b.clone()];
                    self.add_output(bi, d, p, inputs, Calc::Pair { divisor: 1.0 });
                    continue;
                }
                DerivedKind::Tilt | DerivedKind::AlongSlope => continue,
                DerivedKind::AntecedentRainfall => Calc::Antecedent(slope::Antecedent::default()),
                DerivedKind::InverseVelocity | DerivedKind::TangentAngle => {
                    let calc = match (spec.forecast, spec.tangent) {
                        (Some(p), _) => Calc::Forecast(Box::new(slope::Forecast::new(&p))),
                        (_, Some(p)) => Calc::Tangent(Box::new(slope::Tangent::new(&p))),
                        _ => continue,
                    };
                    let group = series_group(spec, &series.unit);
                    self.add_series_group(bi, &device, &point, key, calc, group);
                    continue;
                }
            };
            self.add_output(bi, device, point, vec![key.to_owned()], calc);
        }
    }

    /// The derived readings of a batch of stored readings (in their order), outputs of earlier
    /// blocks feeding later ones. Readings of derived channels themselves (the engine stores
    /// them through the same path) are ignored here: they were used when they were made.
    /// Nothing waits: what [`DerivedSet::on_batch_at`] does at `None`.
    pub fn on_batch(&mut self, readings: &[Reading]) -> Vec<Reading> {
        self.on_batch_at(readings, None)
    }

    /// [`DerivedSet::on_batch`] at gateway time `now`. A combination some input of which has
    /// not reported up to its time yet waits for it, at most [`COMBINE_WAIT`]: its reading
    /// nearest in time may still come (the rest of a poll split over messages or batches), and
    /// combining with an older one would store another poll's value as good. Waiting ones are
    /// computed once their inputs reached their time or their wait is over, in a later batch
    /// or on an empty one (the engine's tick: [`DerivedSet::is_waiting`]). With `now` `None`
    /// nothing waits and everything waiting is computed (the engine stopping).
    pub fn on_batch_at(&mut self, readings: &[Reading], now: Option<TimestampNs>) -> Vec<Reading> {
        let mut produced: Vec<Reading> = Vec::new();
        if self.specs.is_empty() {
            return produced;
        }
        let inputs: Vec<&Reading> = readings
            .iter()
            .filter(|r| !self.by_key.contains_key(&r.series.key))
            .collect();
        self.batch += 1;
        // Every channel is seen before any reading is recorded, so a reading that only feeds
        // another's computation (a cell's liquid temperature) is kept even when it comes first.
        for r in &inputs {
            self.see(&r.series, None);
        }
        for r in &inputs {
            self.record(r);
        }
        // The outputs each reading (inputs, then produced) feeds: `flat[spans[i].0..spans[i].1]`,
        // looked up once per reading rather than once per block and reading (README
        // *Performance*: the lookups and copies were a good part of a slope reading's cost), and
        // again whenever a block's new outputs changed the routes.
        let mut flat: Vec<usize> = Vec::new();
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(inputs.len());
        let mut looked_up = None;
        for bi in 0..self.specs.len() {
            if looked_up != Some(self.route_changes) {
                flat.clear();
                spans.clear();
                for r in inputs.iter().copied().chain(produced.iter()) {
                    spans.push(routes_into(&self.routes, &r.series.key, &mut flat));
                }
                looked_up = Some(self.route_changes);
            }
            let mut made: Vec<Reading> = Vec::new();
            // Combined outputs are computed once per time, after every reading is recorded.
            let mut combine: Vec<(usize, TimestampNs, Arc<Series>)> = Vec::new();
            // Structure verdicts, likewise once per structure and time.
            let mut structures: Vec<(usize, TimestampNs, Arc<Series>)> = Vec::new();
            // Any levelling block: a `gateway baseline` request may ask for readings where the
            // block does not say `establish_readings`.
            if self.specs[bi].kind == DerivedKind::Levelling {
                for r in inputs.iter().copied().chain(produced.iter()) {
                    self.establish(bi, r);
                }
            }
            // First what waited for this block's inputs and may go now, in the order it came.
            if !self.waiting.is_empty() {
                let mut waiting = std::mem::take(&mut self.waiting);
                let released = waiting.take(now, |p, waited| {
                    self.outputs[p.output()].block == bi && (waited || self.reached(p))
                });
                self.waiting = waiting;
                for p in released {
                    self.outputs[p.output()].waiting -= 1;
                    match p {
                        Pending::Combined { oi, ts, trigger } => {
                            if !combine.iter().any(|(o, t, _)| *o == oi && *t == ts) {
                                combine.push((oi, ts, trigger));
                            }
                        }
                        Pending::Levelling { oi, reading } => {
                            self.single(oi, &reading, &mut made, &mut structures);
                        }
                    }
                }
            }
            for (ri, r) in inputs.iter().copied().chain(produced.iter()).enumerate() {
                let (from, to) = spans[ri];
                for &oi in &flat[from..to] {
                    if self.outputs[oi].block != bi {
                        continue;
                    }
                    match self.outputs[oi].calc {
                        Calc::Forecast(_) | Calc::Tangent(_) => {
                            self.compute_slope(oi, r, &mut made);
                        }
                        Calc::Pair { .. } | Calc::Mean | Calc::AlongSlope => {
                            if combine.iter().any(|(o, ts, _)| *o == oi && *ts == r.ts)
                                || self.outputs[oi].waiting > 0
                                    && self.waiting.iter().any(
                                    |p| matches!(p, Pending::Combined { oi: o, ts, .. } if *o == oi && *ts == r.ts),
                                )
                            {
                                continue;
                            }
                            let pending = Pending::Combined {
                                oi,
                                ts: r.ts,
                                trigger: Arc::clone(&r.series),
                            };
                            if let Some(Pending::Combined { oi, ts, trigger }) =
                                self.wait_if_early(pending, now)
                            {
                                combine.push((oi, ts, trigger));
                            }
                        }
                        Calc::Levelling { .. } => {
                            let pending = Pending::Levelling {
                                oi,
                                reading: r.clone(),
                            };
                            if let Some(Pending::Levelling { oi, reading }) =
                                self.wait_if_early(pending, now)
                            {
                                self.single(oi, &reading, &mut made, &mut structures);
                            }
                        }
                        _ => self.single(oi, r, &mut made, &mut structures),
                    }
                }
            }
            for (oi, ts, trigger) in combine {
                made.extend(self.compute_combined(oi, ts, &trigger));
            }
            for (so, ts, base) in structures {
                let all = match &self.outputs[so].calc {
                    Calc::AllStable { members, .. } => members.values().all(|stable| *stable),
                    _ => continue,
                };
                let verdict = self.emit(so, &base, ts, Ok(if all { 1.0 } else { 0.0 }));
                self.announce_stable(so, all, &verdict, &base.unit);
                made.push(verdict);
            }
            for r in &made {
                self.see(&r.series, Some(bi));
                self.record(r);
                spans.push(routes_into(&self.routes, &r.series.key, &mut flat));
            }
            produced.extend(made);
        }
        produced
    }

    /// `p` back to be computed now, or `None` when it waits: at gateway time `now`, behind
    /// others of its output, or for an input that has not reported up to its time.
    fn wait_if_early(&mut self, p: Pending, now: Option<TimestampNs>) -> Option<Pending> {
        let Some(now) = now else {
            return Some(p);
        };
        let oi = p.output();
        if self.outputs[oi].waiting == 0 && self.reached(&p) {
            return Some(p);
        }
        match self.waiting.push(p, now) {
            Ok(()) => {
                self.outputs[oi].waiting += 1;
                None
            }
            // The bound is reached: computed now, from what there is.
            Err(p) => Some(p),
        }
    }

    /// True when every other input of `p` has reported up to its time: the readings it will
    /// be combined with are known.
    fn reached(&self, p: &Pending) -> bool {
        let ts = p.ts();
        let reached = |key: &str| self.histories.get(key).is_some_and(|h| h.reached(ts));
        match p {
            Pending::Combined { oi, .. } => self.outputs[*oi].inputs.iter().all(|k| reached(k)),
            Pending::Levelling { oi, .. } => match &self.outputs[*oi].calc {
                Calc::Levelling {
                    reference,
                    temperatures,
                } => {
                    reached(reference)
                        && temperatures
                            .as_deref()
                            .is_none_or(|(tc, tr)| reached(tc) && reached(tr))
                }
                _ => true,
            },
        }
    }

    /// Compute output `oi` of a single reading `r` into `made`, and note the structure verdict
    /// it feeds.
    fn single(
        &mut self,
        oi: usize,
        r: &Reading,
        made: &mut Vec<Reading>,
        structures: &mut Vec<(usize, TimestampNs, Arc<Series>)>,
    ) {
        let out = self.compute_single(oi, r);
        if let Some(verdict) = &out {
            if let Some(so) = self.structure_member(oi, r, verdict) {
                if !structures.iter().any(|(o, ts, _)| *o == so && *ts == r.ts) {
                    structures.push((so, r.ts, Arc::clone(&r.series)));
                }
            }
        }
        made.extend(out);
    }

    /// True while combinations wait for an input: the engine feeds an empty batch on its tick
    /// so that they are computed once their wait is over.
    #[must_use]
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Record the point verdict `verdict` of stability output `oi` (from the reading `r` of its
    /// point) in its structure's verdict, created on first sight: the structure output's
    /// index, or `None` when the block has no `structure_tag` or the point no such tag
    /// (docs/DOMAIN.md §Settlement: a structure is stable when all its points are).
    fn structure_member(&mut self, oi: usize, r: &Reading, verdict: &Reading) -> Option<usize> {
        let bi = self.outputs[oi].block;
        if !matches!(self.outputs[oi].calc, Calc::Stability { .. }) {
            return None;
        }
        let spec = &self.specs[bi];
        let structure = r.series.tags.get(spec.structure_tag.as_deref()?)?.clone();
        let device = spec.name.clone();
        let key = format!("{device}/{structure}");
        let so = match self.by_key.get(&key) {
            Some(&so) => so,
            None => {
                let calc = Calc::AllStable {
                    members: BTreeMap::new(),
                    announced: Some(false),
                };
                self.add_output(bi, device, structure, Vec::new(), calc)?
            }
        };
        let stable = verdict.quality.is_good() && verdict.value == Some(1.0);
        if let Calc::AllStable { members, .. } = &mut self.outputs[so].calc {
            // The point's key is copied once per change of its verdict, not per reading.
            if members.get(&verdict.series.key) != Some(&stable) {
                members.insert(verdict.series.key.clone(), stable);
                self.outputs[so].dirty = true;
            }
        }
        Some(so)
    }

    /// A notice when structure output `so` turns stable (`all`) in its `verdict` reading: news
    /// for the bureau (issue 8 item 2), once per turn; a structure that turns back (a point
    /// settling faster again, a new point not yet covered) is announced again when it is
    /// stable again. The state that says so goes with the notice's commit (the engine saves
    /// [`DerivedSet::state_changes`] with it).
    fn announce_stable(&mut self, so: usize, all: bool, verdict: &Reading, unit: &str) {
        let Calc::AllStable { announced, .. } = &mut self.outputs[so].calc else {
            return;
        };
        let news = all && *announced == Some(false);
        if *announced != Some(all) {
            *announced = Some(all);
            self.outputs[so].dirty = true;
        }
        if !news {
            return;
        }
        let spec = &self.specs[self.outputs[so].block];
        let days = secs(spec.window_ns) / 86_400.0;
        // In the points' unit per `per`, as configured (mm/d).
        let threshold = format!(
            "{} {unit}{}",
            crate::alert::format_number(spec.threshold),
            spec.per_suffix
        );
        let (structure, key) = (verdict.series.point.clone(), verdict.series.key.clone());
        let label = match self.language {
            crate::alert::Language::Zh => format!(
                "沉降已稳定（JGJ 8-2016 §7.1.5：各测点最近 {days} d 沉降速率均低于 {threshold}）"
            ),
            crate::alert::Language::En => format!(
                "has settled: stable (JGJ 8-2016 §7.1.5: every point's rate over the last {days} d below {threshold})"
            ),
        };
        let mut a = crate::alert::Alert {
            id: crate::alert::stable_id(&self.site, &spec.name, None, &[&key], verdict.ts),
            seq: 0,
            kind: crate::alert::AlertKind::Notice,
            cause: crate::alert::Cause::Stable,
            site: self.site.clone(),
            structure: Some(structure),
            device: verdict.series.device.clone(),
            point: verdict.series.point.clone(),
            channel: key.clone(),
            channels: vec![key],
            quantity: Some(verdict.series.kind),
            rule: spec.name.clone(),
            label: Some(label),
            side: None,
            level: crate::alert::Level::Blue,
            previous_level: None,
            state: crate::alert::AlertState::Notice,
            value: None,
            threshold: None,
            unit: String::new(),
            quality: None,
            started_at: verdict.ts,
            event_at: verdict.ts,
            detected_at: verdict.ts,
            message: String::new(),
            ack: None,
        };
        a.message = crate::alert::render_message(&a, self.language);
        info!(derived = %spec.name, structure = ?a.structure, "{}", a.message);
        self.notices.push(a);
    }

    /// The notices made since the last call (a structure turned stable), stamped detected at
    /// `now` (gateway time). The engine commits them with [`DerivedSet::state_changes`].
    pub fn take_notices(&mut self, now: TimestampNs) -> Vec<crate::alert::Alert> {
        let mut notices = std::mem::take(&mut self.notices);
        for n in &mut notices {
            n.detected_at = now;
        }
        notices
    }

    /// Word notices for `site` in `language` (the rules' language).
    pub fn set_notice_wording(&mut self, site: &str, language: crate::alert::Language) {
        self.site = site.to_owned();
        self.language = language;
    }

    /// The initial value of `channel` in block `bi`: configured, or established. With a
    /// liquid-temperature correction, the configured value corrected with its survey's
    /// temperature (established ones are means of corrected heads already).
    fn initial_of(&self, bi: usize, channel: &str) -> Option<f64> {
        let spec = &self.specs[bi];
        if let Some(i) = spec.initial.get(channel) {
            return match (&spec.liquid, i.temperature) {
                (Some(l), Some(t)) => Some(l.head(i.value, t)),
                (Some(_), None) => None,
                (None, _) => Some(i.value),
            };
        }
        match self.baselines.get(&initial_key(&spec.name, channel)) {
            Some((b, _)) => b.value(),
            _ => None,
        }
    }

    /// Feed a good reading of a levelling cell or reference without a configured initial value
    /// to its baseline, when block `bi` establishes them (`establish_readings`) or a `gateway
    /// baseline` request in the spool asks for it (docs/DOMAIN.md §Derived channels). An
    /// initial value once established is never replaced here (only by the command's
    /// re-zeroing); one whose saved entry was unreadable is never established again.
    fn establish(&mut self, bi: usize, r: &Reading) {
        let spec = &self.specs[bi];
        let Some(v) = r.value.filter(|_| r.quality.is_good()) else {
            return;
        };
        let key = r.series.key.as_str();
        let is_input = spec.reference.as_deref() == Some(key)
            || self
                .routes
                .get(key)
                .is_some_and(|outs| outs.iter().any(|&o| self.outputs[o].block == bi));
        if !is_input || spec.initial.contains_key(key) {
            return;
        }
        // With a liquid-temperature correction the initial value is a mean of corrected heads;
        // a reading without its temperature is not collected.
        let v = match &spec.liquid {
            None => v,
            Some(l) => {
                let t = l
                    .temperature_of(key)
                    .and_then(|t| self.histories.get(&t))
                    .and_then(|h| h.nearest(r.ts, spec.max_skew_ns))
                    .and_then(|x| x.value);
                match t {
                    Some(t) => l.head(v, t),
                    None => return,
                }
            }
        };
        let entry_key = initial_key(&spec.name, key);
        if self.lost_baselines.contains(&entry_key) {
            return;
        }
        let default = spec.establish_readings;
        let (baseline, dirty) = match self.baselines.get_mut(&entry_key) {
            Some(b) => b,
            None if default.is_some() => self
                .baselines
                .entry(entry_key)
                .or_insert((Baseline::collecting(), true)),
            None => return,
        };
        match baseline.add(r.ts, v, default) {
            Added::Unchanged => {}
            Added::Collected => *dirty = true,
            Added::Established(value) => {
                *dirty = true;
                info!(derived = %spec.name, channel = %key, value,
                      "Initial value established from the mean of good readings; kept in the spool and replaced only by `gateway baseline rezero`.");
                self.prompt_save = true;
            }
        }
    }

    /// Keep the reading in its channel's history when some output combines it.
    fn record(&mut self, r: &Reading) {
        if !self.routes.contains_key(&r.series.key) {
            return;
        }
        // The key is copied once per channel, not per reading.
        match self.histories.get_mut(&r.series.key) {
            Some(h) => h.push(Sample::of(r), self.batch),
            None => {
                let mut h = History::default();
                h.push(Sample::of(r), self.batch);
                self.histories.insert(r.series.key.clone(), h);
            }
        }
    }

    /// The series of output `oi`, built from its inputs' series on its first reading.
    fn series_of(&mut self, oi: usize, base: &Series) -> Arc<Series> {
        if let Some(s) = &self.outputs[oi].series {
            return Arc::clone(s);
        }
        let o = &self.outputs[oi];
        let spec = &self.specs[o.block];
        let mut tags = base.tags.to_map();
        for t in ["device", "point", "unit"] {
            tags.remove(t);
        }
        // A structure verdict describes the structure, not the point it was first fed by.
        if let (Calc::AllStable { .. }, Some(tag)) = (&o.calc, &spec.structure_tag) {
            tags.retain(|k, _| k == tag || k == "site" || k == "gateway");
        }
        // Tags that differ between the inputs describe none of them.
        for input in &o.inputs {
            if let Some(s) = self.seen.get(input) {
                tags.retain(|k, v| s.tags.get(k) == Some(v));
            }
        }
        tags.insert(DERIVED_TAG.to_owned(), spec.name.clone());
        // A rate is a kind of its own ([`QuantityKind::Rate`]); the tag says of what.
        if spec.kind == DerivedKind::Rate {
            tags.insert(RATE_OF_TAG.to_owned(), base.kind.measurement().to_owned());
        }
        let site = tags.remove("site").unwrap_or_default();
        let gateway = tags.remove("gateway").unwrap_or_default();
        let (kind, unit) = match &o.form {
            Some((kind, unit)) => (*kind, unit.clone()),
            None => output_form(spec, base.kind, &base.unit),
        };
        let series = Arc::new(Series::new(
            &site, &gateway, &o.device, &o.point, kind, &unit, &tags,
        ));
        self.outputs[oi].series = Some(Arc::clone(&series));
        series
    }

    /// A reading of output `oi` at `ts`: the value when good, otherwise the flag.
    fn emit(
        &mut self,
        oi: usize,
        base: &Series,
        ts: TimestampNs,
        value: Result<f64, Quality>,
    ) -> Reading {
        let series = self.series_of(oi, base);
        match value {
            Ok(v) => Reading::good(series, ts, v),
            Err(q) => Reading::bad(series, ts, q),
        }
    }

    /// An output computed from one input's reading (levelling, rate, sum, cumulative,
    /// stability).
    fn compute_single(&mut self, oi: usize, r: &Reading) -> Option<Reading> {
        let spec = &self.specs[self.outputs[oi].block];
        let (window_ns, max_skew, per_secs, min_points, sum_input, threshold, antecedent) = (
            spec.window_ns,
            spec.max_skew_ns,
            spec.per_secs,
            spec.min_points,
            spec.sum_input,
            spec.threshold,
            spec.antecedent,
        );
        let min_span_ns = spec.min_span_ns;
        let s = Sample::of(r);
        let bi = self.outputs[oi].block;
        let (cell0, ref0) = match &self.outputs[oi].calc {
            Calc::Levelling { reference, .. } => (
                self.initial_of(bi, &r.series.key),
                self.initial_of(bi, reference),
            ),
            _ => (None, None),
        };
        // The liquid temperatures of the cell and the reference, where the line corrects for
        // them: `Err` when one has no good reading within `max_skew`.
        let liquid = match (&self.outputs[oi].calc, &self.specs[bi].liquid) {
            (
                Calc::Levelling {
                    temperatures: Some(t),
                    ..
                },
                Some(l),
            ) => {
                let at = |key: &str| {
                    self.histories
                        .get(key)
                        .and_then(|h| h.nearest(s.ts, max_skew))
                        .and_then(|x| x.value)
                };
                Some(match (at(&t.0), at(&t.1)) {
                    (Some(tc), Some(tr)) => Ok((l.expansion, tc, tr)),
                    _ => Err(Quality::CorrectionUnavailable),
                })
            }
            _ => None,
        };
        let mut dirty = false;
        let value: Option<Result<f64, Quality>> = match &mut self.outputs[oi].calc {
            Calc::Levelling { reference, .. } => {
                // docs/DOMAIN.md §Derived channels: s_i = (h_i − h_i0) − (h_ref − h_ref0),
                // each head corrected for the liquid temperature where the line says so
                // (§Hydrostatic levelling, Geokon 4675LV).
                let href = self
                    .histories
                    .get(reference.as_str())
                    .and_then(|h| h.nearest(s.ts, max_skew))
                    .and_then(|x| x.value);
                let heads = match (s.value, href, &liquid) {
                    (Some(h), Some(href), None) => Ok((h, href)),
                    (Some(h), Some(href), Some(Ok((alpha, tc, tr)))) => Ok((
                        config::liquid_head(h, *tc, *alpha),
                        config::liquid_head(href, *tr, *alpha),
                    )),
                    (Some(_), Some(_), Some(Err(q))) => Err(*q),
                    _ => Err(Quality::DerivedInputBad),
                };
                Some(match (heads, cell0, ref0) {
                    (Ok((h, href)), Some(h0), Some(href0)) => Ok((h - h0) - (href - href0)),
                    (Ok(_), _, _) => Err(Quality::InitialValueMissing),
                    (Err(q), _, _) => Err(q),
                })
            }
            Calc::Rate(window) => match s.value {
                Some(v) => {
                    window.push(s.ts, v);
                    dirty = true;
                    window_rate(window, min_points, min_span_ns, per_secs).map(Ok)
                }
                None => Some(Err(Quality::DerivedInputBad)),
            },
            Calc::Stability { window, since } => Some(match s.value {
                Some(v) => {
                    window.push(s.ts, v);
                    if *since == 0 {
                        *since = s.ts;
                    }
                    dirty = true;
                    // docs/DOMAIN.md §Settlement (JGJ 8-2016 §7.1.5 item 4): stable when the
                    // rate over the last `window` is below the threshold, judged only once the
                    // channel's history covers the whole window.
                    let covered = s.ts.saturating_sub(*since) >= window_ns;
                    let rate = window_rate(window, min_points, min_span_ns, per_secs);
                    let stable = covered && rate.is_some_and(|r| r.abs() < threshold);
                    Ok(if stable { 1.0 } else { 0.0 })
                }
                None => Err(Quality::DerivedInputBad),
            }),
            Calc::Antecedent(state) => {
                dirty = true;
                match (
                    increment(sum_input, &mut state.last_total, s.value),
                    antecedent,
                ) {
                    // docs/DOMAIN.md §Slope early warning: R_eff = Σ K^i·R_i.
                    (Increment::Amount(amount), Some(p)) => state
                        .on_amount(&p, s.ts, amount)
                        .map(|v| v.map_err(|()| Quality::DerivedInputBad)),
                    (Increment::BadTotal, _) => Some(Err(Quality::DerivedInputBad)),
                    (Increment::Base | Increment::Amount(_), _) => None,
                }
            }
            Calc::Sum {
                readings,
                last_total,
            } => 'sum: {
                let step = increment(sum_input, last_total, s.value);
                if sum_input == config::SumInput::Total {
                    dirty = true;
                }
                let value = match step {
                    Increment::Amount(v) => v,
                    Increment::BadTotal => break 'sum Some(Err(Quality::DerivedInputBad)),
                    Increment::Base => break 'sum None,
                };
                let pos = readings.partition_point(|(t, _)| *t <= s.ts);
                readings.insert(pos, (s.ts, value));
                let full = readings.len() > config::MAX_SUM_READINGS;
                let newest = readings.back().map_or(s.ts, |(t, _)| *t);
                let edge = newest.saturating_sub(window_ns);
                while readings.front().is_some_and(|(t, _)| *t <= edge)
                    || readings.len() > config::MAX_SUM_READINGS
                {
                    readings.pop_front();
                }
                dirty = true;
                // The sum at this reading's time: the readings in (ts − window, ts]. A reading
                // older than the window gives none; a window past its bound is flagged.
                let from = s.ts.saturating_sub(window_ns);
                (s.ts > edge).then(|| {
                    if full {
                        return Err(Quality::DerivedInputBad);
                    }
                    readings
                        .iter()
                        .filter(|(t, _)| *t > from && *t <= s.ts)
                        .map(|(_, v)| v.ok_or(Quality::DerivedInputBad))
                        .sum::<Result<f64, Quality>>()
                })
            }
            Calc::Cumulative { sum, since } => Some(match s.value {
                Some(v) => {
                    if *since == 0 {
                        *since = s.ts;
                    }
                    *sum += v;
                    dirty = true;
                    Ok(*sum)
                }
                None => Err(Quality::DerivedInputBad),
            }),
            Calc::Pair { .. }
            | Calc::Mean
            | Calc::AlongSlope
            | Calc::AllStable { .. }
            | Calc::Forecast(_)
            | Calc::Tangent(_)
            | Calc::Companion => None,
        };
        if dirty {
            self.outputs[oi].dirty = true;
        }
        let value = value?;
        if matches!(self.outputs[oi].calc, Calc::Antecedent(_))
            && !self.store_due(oi, s.ts, signature(&value, None))
        {
            return None;
        }
        Some(self.emit(oi, &r.series, s.ts, value))
    }

    /// True when slope series `oi`'s reading at `ts` with `sig` is to be stored (`store_every`,
    /// README *Performance*): the first one, one whose signature differs from the last stored
    /// (a gate's verdict, a level, a bad input: what rules and people act on goes out at once),
    /// one older than the last stored (a backlog), or one `store_every` after it. The
    /// judgement itself was made and its state kept either way; a rule on a value (e.g. the
    /// time to failure) sees it at most `store_every` late.
    fn store_due(&mut self, oi: usize, ts: TimestampNs, sig: Signature) -> bool {
        let every = self.specs[self.outputs[oi].block].store_every_ns;
        let due = self.outputs[oi]
            .stored
            .is_none_or(|(last, was)| was != sig || ts < last || ts - last >= every);
        if due {
            self.outputs[oi].stored = Some((ts, sig));
        }
        due
    }

    /// The readings of a forecast or tangent-angle output and its companions from its input's
    /// reading `r` (docs/DOMAIN.md §Slope early warning). A bad input flags every series 410; a
    /// gate's refusal flags the judgement's series with its 42x code, never a value as if good.
    fn compute_slope(&mut self, oi: usize, r: &Reading, made: &mut Vec<Reading>) {
        let bi = self.outputs[oi].block;
        let (forecast, tangent) = (self.specs[bi].forecast, self.specs[bi].tangent);
        let s = Sample::of(r);
        // Values of the output and its companions, in series order.
        let mut values: [Result<f64, Quality>; config::FORECAST_SERIES.len()] =
            [Err(Quality::DerivedInputBad); config::FORECAST_SERIES.len()];
        let mut refusal = None;
        let mut estimated = None;
        let mut level = None;
        let refused = |r: Refusal| Err(Quality::Refused(r));
        match (&mut self.outputs[oi].calc, s.value) {
            (_, None) => {}
            (Calc::Forecast(state), Some(v)) => {
                let Some(p) = forecast else { return };
                let out = state.on_reading(&p, s.ts, v);
                let ttf_h = |f: &slope::Prediction| secs(f.failure_ts - s.ts) / 3600.0;
                values[0] = out
                    .forecast
                    .as_ref()
                    .map(ttf_h)
                    .map_err(|r| Quality::Refused(*r));
                values[1] = out.inverse_velocity.map_err(Quality::Refused);
                values[2] = out
                    .forecast
                    .as_ref()
                    .map(|f| secs(f.failure_ts))
                    .map_err(|r| Quality::Refused(*r));
                values[3] = out
                    .forecast
                    .as_ref()
                    .map(|f| f.sigma_secs / 3600.0)
                    .map_err(|r| Quality::Refused(*r));
                values[4] = out
                    .r2
                    .ok_or_else(|| out.forecast.err().unwrap_or(Refusal::TooFewReadings))
                    .map_err(Quality::Refused);
                refusal = out.forecast.err();
            }
            (Calc::Tangent(state), Some(v)) => {
                let Some(p) = tangent else { return };
                match state.on_reading(&p, s.ts, v, &mut estimated) {
                    Ok((alpha, l)) => {
                        values[0] = Ok(alpha);
                        values[1] = Ok(f64::from(l));
                        level = Some(l);
                    }
                    Err(r) => {
                        values[0] = refused(r);
                        values[1] = refused(r);
                        refusal = Some(r);
                    }
                }
            }
            _ => return,
        }
        if let Some(rate) = estimated {
            let o = &self.outputs[oi];
            info!(derived = %self.specs[bi].name, channel = %format!("{}/{}", o.device, o.point), rate,
                  "Constant-velocity rate of the tangent angle estimated (docs/DOMAIN.md §Slope early warning); kept in the spool.");
        }
        // A bad input judges nothing (and changes no state): the gates' verdict is logged only
        // when they ran.
        if s.value.is_some() {
            self.outputs[oi].dirty = true;
            self.log_refusal(oi, refusal);
        }
        let tangent = matches!(self.outputs[oi].calc, Calc::Tangent(_));
        let companions = std::mem::take(&mut self.outputs[oi].companions);
        for (i, target) in std::iter::once(oi)
            .chain(companions.iter().copied())
            .enumerate()
        {
            let Some(value) = values.get(i) else {
                continue;
            };
            // Each series on its own: the tangent angle's level series (its second) turns with
            // the level, every series with its quality.
            let level = level.filter(|_| tangent && i == 1);
            if self.store_due(target, s.ts, signature(value, level)) {
                made.push(self.emit(target, &r.series, s.ts, *value));
            }
        }
        self.outputs[oi].companions = companions;
    }

    /// Log a change of the gate verdict of slope output `oi`, at most once per
    /// [`SLOPE_LOG_INTERVAL`] per output.
    fn log_refusal(&mut self, oi: usize, refusal: Option<Refusal>) {
        if self.outputs[oi].refusal == refusal {
            return;
        }
        self.outputs[oi].refusal = refusal;
        let o = &self.outputs[oi];
        let key = format!("{}/{}", o.device, o.point);
        let limiter = self
            .slope_log
            .get_or_insert_with(|| LogLimiter::new(SLOPE_LOG_INTERVAL, SLOPE_LOG_KEYS));
        let Some(suppressed) = limiter.allow(&key) else {
            return;
        };
        let name = &self.specs[o.block].name;
        match refusal {
            Some(r) => {
                info!(derived = %name, channel = %key, reason = r.as_str(), code = r.code(), suppressed,
                             "No slope judgement: a gate refused it (the series are flagged with the code until it passes).")
            }
            None => info!(derived = %name, channel = %key, suppressed,
                          "Slope judgement given: every gate passed."),
        }
    }

    /// An output combining several inputs at `ts` (pair, mean): every input's reading nearest
    /// to `ts` within `max_skew`; an input without one, or not good, flags the value.
    fn compute_combined(
        &mut self,
        oi: usize,
        ts: TimestampNs,
        trigger: &Series,
    ) -> Option<Reading> {
        let max_skew = self.specs[self.outputs[oi].block].max_skew_ns;
        let values: Option<Vec<f64>> = self.outputs[oi]
            .inputs
            .iter()
            .map(|k| {
                self.histories
                    .get(k)
                    .and_then(|h| h.nearest(ts, max_skew))
                    .and_then(|s| s.value)
            })
            .collect();
        let direction = self.specs[self.outputs[oi].block].direction;
        let value = match (&self.outputs[oi].calc, values.as_deref()) {
            (Calc::Pair { divisor }, Some([a, b])) => Ok((a - b) / divisor),
            (Calc::Mean, Some(v)) if !v.is_empty() => Ok(v.iter().sum::<f64>() / v.len() as f64),
            (Calc::AlongSlope, Some(enu)) => direction
                .and_then(|d| d.project(enu))
                .ok_or(Quality::DerivedInputBad),
            (Calc::Pair { .. } | Calc::Mean | Calc::AlongSlope, _) => Err(Quality::DerivedInputBad),
            _ => return None,
        };
        // The series is named after `a` for a pair: build it from `a` when it was seen.
        let base = self.outputs[oi]
            .inputs
            .first()
            .and_then(|k| self.seen.get(k))
            .map_or_else(|| Arc::new(clone_series(trigger)), Arc::clone);
        Some(self.emit(oi, &base, ts, value))
    }

    /// The state entries changed since the last call (rate and sum windows, running sums).
    ///
    /// # Errors
    /// None: an entry that cannot be serialised is counted in the second value and kept dirty.
    pub fn state_changes(&mut self) -> (StateDelta, usize) {
        let mut delta = StateDelta::default();
        let mut errors = 0;
        for o in &mut self.outputs {
            if !o.dirty || !o.calc.is_persistent() {
                continue;
            }
            let channel = format!("{}/{}", o.device, o.point);
            let block = &self.specs[o.block].name;
            // A window's buckets other than the newest change once per bucket width (1/64 of
            // the window) or with a late reading: until then only the newest is written.
            let split = o.calc.split();
            if let Some((closed, open)) = &split {
                if o.saved_closed == Some(*closed) {
                    match serde_json::to_vec(open) {
                        Ok(bytes) => {
                            delta.entries.insert(open_key(block, &channel), Some(bytes));
                            o.dirty = false;
                        }
                        Err(_) => errors += 1,
                    }
                    continue;
                }
            }
            match serde_json::to_vec(&o.calc) {
                Ok(bytes) => {
                    delta
                        .entries
                        .insert(entry_key(block, &channel), Some(bytes));
                    if let Some((closed, _)) = split {
                        // The whole window holds its newest bucket: an older one saved apart
                        // must not be put back over it at the next start.
                        delta.entries.insert(open_key(block, &channel), None);
                        o.saved_closed = Some(closed);
                    }
                    o.dirty = false;
                }
                Err(_) => errors += 1,
            }
        }
        for (key, (baseline, dirty)) in &mut self.baselines {
            if !*dirty {
                continue;
            }
            match serde_json::to_vec(baseline) {
                Ok(bytes) => {
                    delta.entries.insert(key.clone(), Some(bytes));
                    *dirty = false;
                }
                Err(_) => errors += 1,
            }
        }
        (delta, errors)
    }

    /// True once after an initial value was established: the engine saves the state with its
    /// next commit instead of within `STATE_SAVE_INTERVAL`, so a restart does not establish it
    /// again from later readings.
    pub fn take_prompt_save(&mut self) -> bool {
        std::mem::take(&mut self.prompt_save)
    }

    /// Take over the window of a rate rule's derived channel `output` (block `rule`) that state
    /// saved by an earlier version kept in the rule, unless the block saved its own.
    pub fn adopt_rate_window(&mut self, rule: &str, output: &str, window: RateWindow) {
        self.restored
            .entry(entry_key(rule, output))
            .or_insert(Calc::Rate(window));
    }

    /// Take over the saved state among the spool's state `entries` (those under
    /// [`ENTRY_PREFIX`]); each output takes its own when it is created. Returns the keys of
    /// entries that cannot be read: their outputs start fresh, and the engine says so.
    pub fn restore(&mut self, entries: &[(String, Vec<u8>)]) -> Vec<String> {
        let mut unreadable = Vec::new();
        let mut open = Vec::new();
        for (key, bytes) in entries {
            if let Some(rest) = key.strip_prefix(OPEN_PREFIX) {
                match serde_json::from_slice::<Vec<Option<OpenBucket>>>(bytes) {
                    Ok(b) => open.push((format!("{ENTRY_PREFIX}{rest}"), b)),
                    Err(_) => unreadable.push(key.clone()),
                }
                continue;
            }
            if key.starts_with(INITIAL_PREFIX) {
                match serde_json::from_slice::<Baseline>(bytes) {
                    Ok(b) => {
                        self.baselines.insert(key.clone(), (b, false));
                    }
                    Err(_) => {
                        self.lost_baselines.insert(key.clone());
                        unreadable.push(key.clone());
                    }
                }
                continue;
            }
            if !key.starts_with(ENTRY_PREFIX) {
                continue;
            }
            match serde_json::from_slice::<Calc>(bytes) {
                Ok(calc) => {
                    self.restored.insert(key.clone(), calc);
                }
                Err(_) => unreadable.push(key.clone()),
            }
        }
        // The newest buckets saved apart, onto the windows saved whole before them.
        for (key, buckets) in open {
            if let Some(calc) = self.restored.get_mut(&key) {
                for (w, b) in calc.windows_mut().into_iter().zip(buckets) {
                    if let Some(b) = b {
                        w.restore_open(b);
                    }
                }
            }
        }
        unreadable
    }
}

/// `(point suffix, kind, unit)` of each series of a forecast or tangent-angle block over an
/// input in `input_unit` (README, time-series schema); empty for the other kinds.
fn series_group(spec: &DerivedSpec, input_unit: &str) -> Vec<(&'static str, QuantityKind, String)> {
    let forms: Vec<(QuantityKind, String)> = match spec.kind {
        DerivedKind::InverseVelocity => vec![
            (
                QuantityKind::TimeToFailure,
                config::TIME_TO_FAILURE_UNIT.to_owned(),
            ),
            (
                QuantityKind::InverseVelocity,
                format!("{}/{input_unit}", spec.per_suffix.trim_start_matches('/')),
            ),
            (
                QuantityKind::FailureForecast,
                config::FAILURE_TIME_UNIT.to_owned(),
            ),
            (
                QuantityKind::FailureForecast,
                config::TIME_TO_FAILURE_UNIT.to_owned(),
            ),
            (QuantityKind::FailureForecast, R2_UNIT.to_owned()),
        ],
        DerivedKind::TangentAngle => vec![
            (QuantityKind::TangentAngle, config::ANGLE_UNIT.to_owned()),
            // A level code is no angle: no tangent-angle rule may select it.
            (QuantityKind::Status, config::LEVEL_UNIT.to_owned()),
        ],
        _ => Vec::new(),
    };
    let suffixes: &[&'static str] = match spec.kind {
        DerivedKind::InverseVelocity => &config::FORECAST_SERIES,
        _ => &config::TANGENT_SERIES,
    };
    suffixes
        .iter()
        .zip(forms)
        .map(|(s, (kind, unit))| (*s, kind, unit))
        .collect()
}

/// Kind and unit of a derived series of block `spec` over an input of `kind` in `unit`, for
/// kinds with one series per output: the block's `quantity` and `unit` when given, else the
/// input's (a rate's per `per`).
fn output_form(spec: &DerivedSpec, kind: QuantityKind, unit: &str) -> (QuantityKind, String) {
    let kind = if spec.kind == DerivedKind::Rate {
        QuantityKind::Rate
    } else {
        kind
    };
    (
        spec.quantity.unwrap_or(kind),
        spec.unit.clone().unwrap_or_else(|| {
            if spec.kind == DerivedKind::Rate {
                format!("{unit}{}", spec.per_suffix)
            } else {
                unit.to_owned()
            }
        }),
    )
}

/// The channel pair `pair` of block `spec` (tilt, difference) will derive, as `gateway check`
/// needs it, when its `a` and `b` are among the channels `known` gives: named, tagged and typed
/// as at run time (the tags `a` and `b` share, the block's `derived` tag; the kind and unit of
/// `a`'s output form).
#[must_use]
pub fn planned_pair_channel<'a>(
    spec: &DerivedSpec,
    pair: &config::DerivedPair,
    known: impl Fn(&str) -> Option<&'a ChannelInfo>,
) -> Option<ChannelInfo> {
    let (a, b) = (known(&pair.a)?, known(&pair.b)?);
    let (device, point) = spec.pair_output(&pair.a, &pair.b, &pair.point);
    let mut tags = a.tags.to_map();
    tags.retain(|k, v| b.tags.get(k) == Some(v));
    let (kind, unit) = output_form(spec, a.kind, &a.unit);
    Some(planned_channel(spec, tags, &device, &point, kind, &unit))
}

/// A derived channel as `gateway check` plans it: `tags` are the input's, without the ones
/// that describe the input itself, plus the block's `derived` tag.
fn planned_channel(
    spec: &DerivedSpec,
    mut tags: BTreeMap<String, String>,
    device: &str,
    point: &str,
    kind: QuantityKind,
    unit: &str,
) -> ChannelInfo {
    for t in ["device", "point", "unit"] {
        tags.remove(t);
    }
    tags.insert(DERIVED_TAG.to_owned(), spec.name.clone());
    let site = tags.remove("site").unwrap_or_default();
    let gateway = tags.remove("gateway").unwrap_or_default();
    ChannelInfo::from_series(&Arc::new(Series::new(
        &site, &gateway, device, point, kind, unit, &tags,
    )))
}

/// The channels block `spec` will derive from the channel `input`, as `gateway check` needs
/// them to tell which channels a rule on derived series matches (README, *`[[derived]]`*):
/// the per-channel kinds ([`planned_pair_channel`] for pairs; means are named in the config,
/// a structure verdict by its points' tags at run time); empty when `spec` does not select
/// `input`.
#[must_use]
pub fn planned_channels(spec: &DerivedSpec, input: &ChannelInfo) -> Vec<ChannelInfo> {
    if !spec.kind.is_per_channel() || !spec.select.as_ref().is_some_and(|s| s.matches(input)) {
        return Vec::new();
    }
    if spec.kind == DerivedKind::Levelling && spec.reference.as_deref() == Some(input.key.as_str())
    {
        return Vec::new();
    }
    let vars = [
        ("name", spec.name.as_str()),
        ("device", input.device.as_str()),
        ("point", input.point.as_str()),
        ("key", input.key.as_str()),
    ];
    let (device, point) = (
        config::expand(&spec.device, &vars),
        config::expand(&spec.point, &vars),
    );
    let channel = |point: &str, kind: QuantityKind, unit: &str| {
        planned_channel(spec, input.tags.to_map(), &device, point, kind, unit)
    };
    let group = series_group(spec, &input.unit);
    if group.is_empty() {
        let (kind, unit) = output_form(spec, input.kind, &input.unit);
        return vec![channel(&point, kind, &unit)];
    }
    group
        .iter()
        .map(|(suffix, kind, unit)| channel(&format!("{point}.{suffix}"), *kind, unit))
        .collect()
}

/// What a reading of a rainfall input adds to a sum.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Increment {
    /// This much rain (`None`: a bad `increments` reading, which flags the sums it is in).
    Amount(Option<f64>),
    /// A bad total: it loses nothing (the next good one's increment covers the gap), but the
    /// sum at its time is flagged.
    BadTotal,
    /// The first total: the base of the next increment, no rain of its own.
    Base,
}

/// The rain a reading adds, for `input` readings, keeping the last good total in `last_total`
/// (shared by `sum_over` and `antecedent_rainfall`: one reading of a rain gauge's counter).
fn increment(
    input: config::SumInput,
    last_total: &mut Option<f64>,
    value: Option<f64>,
) -> Increment {
    match (input, value) {
        (config::SumInput::Increments, v) => Increment::Amount(v),
        (config::SumInput::Total, None) => Increment::BadTotal,
        (config::SumInput::Total, Some(total)) => match last_total.replace(total) {
            // docs/DOMAIN.md §Derived channels: a total that fell was reset.
            Some(p) if total < p => Increment::Amount(Some(total)),
            Some(p) => Increment::Amount(Some(total - p)),
            None => Increment::Base,
        },
    }
}

/// The least-squares slope of `window` per `per_secs` seconds, once it rests on `min_points`
/// readings spanning at least `min_span_ns` (by default [`RATE_MIN_SPAN_FRACTION`] of the
/// window; shared by the `rate` and `stability` kinds and so by rate rules: one definition of
/// a derived rate).
pub(crate) fn window_rate(
    window: &mut RateWindow,
    min_points: u32,
    min_span_ns: i64,
    per_secs: f64,
) -> Option<f64> {
    window
        .slope()
        .filter(|slope| slope.points >= min_points && slope.span_ns >= min_span_ns)
        .map(|slope| slope.per_sec * per_secs)
}

/// The spool key of an established initial value.
pub fn initial_key(block: &str, channel: &str) -> String {
    format!("{INITIAL_PREFIX}{block}/{channel}")
}

/// The spool key of an output's state.
fn entry_key(block: &str, channel: &str) -> String {
    format!("{ENTRY_PREFIX}{block}/{channel}")
}

/// The spool key of the newest bucket of an output's window, saved apart ([`OPEN_PREFIX`]).
fn open_key(block: &str, channel: &str) -> String {
    format!("{OPEN_PREFIX}{block}/{channel}")
}

/// A copy of a series (only when an output's first input was never seen: cannot happen for a
/// combined output, whose trigger is one of its inputs; kept total instead of panicking).
fn clone_series(s: &Series) -> Series {
    Series::new(
        s.tags.get("site").map_or("", String::as_str),
        s.tags.get("gateway").map_or("", String::as_str),
        &s.device,
        &s.point,
        s.kind,
        &s.unit,
        &s.tags,
    )
}

#[cfg(test)]
mod tests;
