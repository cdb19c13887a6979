//! The `[[derived]]` section as written, and its validation into [`DerivedPlan`].
//!
//! Owns the TOML form of a derived channel ([`DerivedConfig`]), its closed set of kinds
//! ([`DerivedKind`]), the output-name templates and the defaults. Every problem names its path
//! (`derived[2].reference`) and the fix, and all of them are reported at once. It computes
//! nothing (the parent module does) and does not know which channels exist (a selector that
//! matches nothing is `gateway check`'s business).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use crate::config::duration_opt;
use crate::engine::rules::selector::{Selector, SelectorConfig};
use crate::engine::rules::{
    per_suffix, LengthUnit, DEFAULT_PAIR_MAX_SKEW, DEFAULT_RATE_MIN_POINTS, DEFAULT_RATE_PER,
    MIN_RATE_WINDOW,
};
use crate::model::QuantityKind;

use super::gnss::{Direction, GnssPoint, GnssPointConfig};
use super::slope::{
    AntecedentParams, ForecastParams, TangentParams, DEFAULT_ANTECEDENT_DAYS,
    DEFAULT_BLUE_BAND_DEG, DEFAULT_DECAY, DEFAULT_FIT_WINDOW, DEFAULT_HORIZON, DEFAULT_MIN_R2,
    DEFAULT_NOISE_FACTOR, DEFAULT_SLOPE_MIN_POINTS, DEFAULT_SMOOTH, DEFAULT_STORE_EVERY,
    MAX_ANTECEDENT_DAYS, MAX_STORE_EVERY, MIN_SLOPE_MIN_POINTS,
};

/// Default output device of a channel derived from one input: the input's device.
pub const DEFAULT_DEVICE_TEMPLATE: &str = "{device}";
/// Default output point of a channel derived from one input: `ch1.settlement` for the block
/// `settlement` over `ch1`.
pub const DEFAULT_POINT_TEMPLATE: &str = "{point}.{name}";
/// Default output device of a pair (difference, tilt): the device of `a`.
pub const DEFAULT_PAIR_DEVICE_TEMPLATE: &str = "{a_device}";
/// Default output point of a pair: `ch1.settlement-ch2.settlement.tilt`.
pub const DEFAULT_PAIR_POINT_TEMPLATE: &str = "{a_point}-{b_point}.{name}";
/// Default output device of a mean: the block's name.
pub const DEFAULT_MEAN_DEVICE_TEMPLATE: &str = "{name}";
/// Default output point of a mean.
pub const DEFAULT_MEAN_POINT_TEMPLATE: &str = "mean";
/// Unit tag of a tilt: a dimensionless ratio (0.002 = 2 ‰, GB 50007 Table 5.3.4).
pub const TILT_UNIT: &str = "ratio";
/// Default volumetric expansion of the levelling liquid per °C, in the water-density correction
/// of Geokon's 4675LV liquid settlement system, ΔH = R0·G/(1 − 0.0002·T0) − R1·G/(1 − 0.0002·T1)
/// (docs/DOMAIN.md §Hydrostatic levelling): a head read at liquid temperature T is
/// h / (1 − 0.0002·T) of liquid at 0 °C.
pub const DEFAULT_LIQUID_EXPANSION: f64 = 0.0002;
/// Largest `liquid_expansion` accepted: ten times water's (glycol mixes are about three times).
pub const MAX_LIQUID_EXPANSION: f64 = 0.002;
/// Most readings `establish_readings` may ask for (a day of 10-second polls).
pub const MAX_ESTABLISH_READINGS: u32 = 8640;
/// Most readings a `sum_over` window holds per channel (a 72 h window of 1-minute rainfall is
/// 4,320); beyond it the oldest leave early and the sum is flagged (see `derived/mod.rs`).
pub const MAX_SUM_READINGS: usize = 20_000;
/// Default window of a `stability` block: JGJ 8-2016 §7.1.5 item 4 judges the settlement rate
/// over the last 100 days (docs/DOMAIN.md §Settlement).
pub const DEFAULT_STABILITY_WINDOW: Duration = Duration::from_secs(100 * 24 * 3600);
/// Default threshold of a `stability` block, in the input's unit per `per` (mm/d for settlement
/// in mm): 0.04 mm/d, the upper end of JGJ 8-2016 §7.1.5 item 4's 0.01–0.04 mm/d (the value is
/// chosen by the soil's compressibility; docs/DOMAIN.md §Settlement).
pub const DEFAULT_STABILITY_THRESHOLD: f64 = 0.04;
/// Unit tag of a stability verdict: 1 = stable, 0 = not yet.
pub const STABILITY_UNIT: &str = "verdict";

/// What a derived channel computes. Closed set: a new kind is a code change with a formula in
/// docs/DOMAIN.md §Derived channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DerivedKind {
    /// `a − b` for each pair (core − surface temperature, differential settlement).
    Difference,
    /// The mean of the latest readings of every selected channel.
    Mean,
    /// Least-squares slope over `window`, per `per` (default per day), per selected channel.
    Rate,
    /// `(s_a − s_b) / L` for each pair of settlement channels `L` metres apart.
    Tilt,
    /// Sum of the readings within `window` (rainfall over 1 h / 24 h / 72 h), per channel.
    SumOver,
    /// Running sum of every reading since the gateway first saw the channel, per channel.
    Cumulative,
    /// Hydrostatic levelling: `(h_i − h_i0) − (h_ref − h_ref0)` per selected cell.
    Levelling,
    /// Settlement stability verdict (JGJ 8-2016 §7.1.5 item 4) per selected channel: 1 when the
    /// least-squares rate over `window` (default 100 d) is below `threshold` and the channel's
    /// history covers the window, 0 otherwise.
    Stability,
    /// Fukuzono's inverse-velocity failure-time forecast per selected displacement channel
    /// (docs/DOMAIN.md §Slope early warning): 1/v, the predicted failure time, its uncertainty,
    /// the line's R² and the time to failure, each a series (suffixes in [`FORECAST_SERIES`]).
    InverseVelocity,
    /// Xu et al.'s improved tangent angle α per selected displacement channel, and its warning
    /// level (suffixes in [`TANGENT_SERIES`]).
    TangentAngle,
    /// Effective antecedent rainfall Σ K^i·R_i over `days` per selected rain gauge.
    AntecedentRainfall,
    /// The along-slope displacement of each GNSS point of `gnss` (east, north, up) on the
    /// direction `azimuth_deg` (and `dip_deg`): [`super::gnss`].
    AlongSlope,
}

/// Point suffixes of the series of an `inverse_velocity` block, after its point template: the
/// first is the block's own output (its state is saved under it), the others go with it.
pub const FORECAST_SERIES: [&str; 5] = [
    "time_to_failure",
    "inverse_velocity",
    "failure_time",
    "failure_time_sigma",
    "fit_r2",
];
/// Point suffixes of the series of a `tangent_angle` block: α and its level.
pub const TANGENT_SERIES: [&str; 2] = ["angle", "level"];
/// Unit tag of 1/v: days per millimetre (the input's unit per `per` inverted is given instead
/// when it is not mm per day).
pub const TIME_TO_FAILURE_UNIT: &str = "h";
/// Unit tag of a predicted failure time: Unix seconds.
pub const FAILURE_TIME_UNIT: &str = "unix_s";
/// Unit tag of a tangent angle.
pub const ANGLE_UNIT: &str = "deg";
/// Unit tag of a warning level code (0 none, 1 blue … 4 red).
pub const LEVEL_UNIT: &str = "level";

impl DerivedKind {
    /// The name as written in the config.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Difference => "difference",
            Self::Mean => "mean",
            Self::Rate => "rate",
            Self::Tilt => "tilt",
            Self::SumOver => "sum_over",
            Self::Cumulative => "cumulative",
            Self::Levelling => "levelling",
            Self::Stability => "stability",
            Self::InverseVelocity => "inverse_velocity",
            Self::TangentAngle => "tangent_angle",
            Self::AntecedentRainfall => "antecedent_rainfall",
            Self::AlongSlope => "along_slope",
        }
    }

    /// True for kinds computed from pairs of channels.
    const fn is_pair(self) -> bool {
        matches!(self, Self::Difference | Self::Tilt)
    }

    /// True for kinds with one output (or one group of series) per selected channel.
    #[must_use]
    pub const fn is_per_channel(self) -> bool {
        matches!(
            self,
            Self::Rate
                | Self::SumOver
                | Self::Cumulative
                | Self::Levelling
                | Self::Stability
                | Self::InverseVelocity
                | Self::TangentAngle
                | Self::AntecedentRainfall
        )
    }
}

/// What the readings of a `sum_over` input are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SumInput {
    /// Each reading is an amount of its own (rainfall in the last interval).
    #[default]
    Increments,
    /// Each reading is a running total (a rain gauge's counter): the sum over the window is
    /// what the total gained in it; a total that falls was reset and counts from zero.
    Total,
}

/// One pair of a difference or tilt: `pairs = [{ a = "lvl/ch1.settlement", b = "...", distance_m = 18.0 }]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedPairConfig {
    /// Channel key `device/point` of the minuend.
    pub a: String,
    /// Channel key of the subtrahend.
    pub b: String,
    /// Tilt: distance between the two points, metres.
    #[serde(default)]
    pub distance_m: Option<f64>,
    /// Output point of this pair, instead of the block's template.
    #[serde(default)]
    pub point: Option<String>,
}

/// An initial value (初始值) as written: a number, or `{ value = 312.4, surveyed = "2026-11-02" }`
/// (with `temperature = 18.5`, the liquid's at the survey, where the line corrects for it).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum InitialConfig {
    /// The value; its survey date is the block's `surveyed`.
    Value(f64),
    /// The value with its own survey date, and with a liquid-temperature correction the liquid
    /// temperature at the survey.
    Surveyed {
        /// The value, in the channel's unit.
        value: f64,
        /// Survey date, `YYYY-MM-DD` (default: the block's `surveyed`).
        #[serde(default)]
        surveyed: Option<String>,
        /// Liquid temperature at the survey, °C (default: the block's `initial_temperature`).
        #[serde(default)]
        temperature: Option<f64>,
    },
}

/// One `[[derived]]` entry. Which fields apply depends on `kind`; a field that does not apply
/// is reported, not ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedConfig {
    /// Unique name: the `derived` tag of every output, and part of the default point name.
    pub name: String,
    /// What it computes.
    pub kind: DerivedKind,
    /// The input channels (every kind but difference and tilt with `pairs`). Derived channels
    /// of blocks declared earlier may be selected too.
    #[serde(default)]
    pub select: Option<SelectorConfig>,
    /// Difference, tilt: explicit pairs.
    #[serde(default)]
    pub pairs: Vec<DerivedPairConfig>,
    /// Difference with `select`: the template of `b` for each selected `a`, e.g.
    /// `"{device}/t02"`.
    #[serde(default)]
    pub b: Option<String>,
    /// Levelling: the reference cell `device/point` of the line (outside the settlement zone).
    #[serde(default)]
    pub reference: Option<String>,
    /// Levelling: initial head per cell, reference included, by channel key.
    #[serde(default)]
    pub initial: BTreeMap<String, InitialConfig>,
    /// Levelling: survey date of the initial values given as plain numbers, `YYYY-MM-DD`.
    #[serde(default)]
    pub surveyed: Option<String>,
    /// Levelling: give a cell or reference without a configured initial value one, the mean
    /// of its first this many good readings, kept in the spool (off when absent).
    #[serde(default)]
    pub establish_readings: Option<u32>,
    /// Levelling: the liquid-temperature channel of each cell (reference included), a template
    /// on the cell (`"{device}/temp1"`); heads are then corrected for the liquid's density
    /// (docs/DOMAIN.md §Hydrostatic levelling). Off when absent.
    #[serde(default)]
    pub liquid_temperature: Option<String>,
    /// Levelling: the liquid-temperature channel of single cells, by cell key, instead of the
    /// template (`{ "block-a-lvl/ch5" = "block-a-lvl/temp2" }`).
    #[serde(default)]
    pub liquid_temperatures: BTreeMap<String, String>,
    /// Levelling: the liquid's volumetric expansion per °C (default
    /// [`DEFAULT_LIQUID_EXPANSION`], water).
    #[serde(default)]
    pub liquid_expansion: Option<f64>,
    /// Levelling with a liquid-temperature correction: the liquid temperature at the survey of
    /// the initial values given as plain numbers, °C.
    #[serde(default)]
    pub initial_temperature: Option<f64>,
    /// Rate, sum_over, stability: the window, e.g. `"1d"`, `"24h"` (stability: default 100d).
    #[serde(default, with = "duration_opt")]
    pub window: Option<Duration>,
    /// Rate, stability: unit of time of the slope (default 1d: mm/d).
    #[serde(default, with = "duration_opt")]
    pub per: Option<Duration>,
    /// Stability: the rate below which the channel is stable, in its unit per `per` (default
    /// [`DEFAULT_STABILITY_THRESHOLD`], 0.04 mm/d).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Stability: the tag naming a point's structure (e.g. `"structure"`); when given, each
    /// structure also gets a verdict, stable when all its points are (off when absent).
    #[serde(default)]
    pub structure_tag: Option<String>,
    /// Sum_over, antecedent_rainfall: `increments` (default) or `total` readings.
    #[serde(default)]
    pub input: Option<SumInput>,
    /// Inverse_velocity, tangent_angle: the window the speed is smoothed over (least-squares
    /// slope of the displacement), default 6h.
    #[serde(default, with = "duration_opt")]
    pub smooth: Option<Duration>,
    /// Inverse_velocity, tangent_angle: a speed counts only above this many of its standard
    /// errors (default 3).
    #[serde(default)]
    pub noise_factor: Option<f64>,
    /// Inverse_velocity: least speed that counts, in the input's unit per `per` (default 0: the
    /// measured noise alone).
    #[serde(default)]
    pub min_speed: Option<f64>,
    /// Inverse_velocity: least R² of the 1/v line (default 0.9).
    #[serde(default)]
    pub min_r2: Option<f64>,
    /// Inverse_velocity: no forecast of a failure farther away than this (default 7d).
    #[serde(default, with = "duration_opt")]
    pub horizon: Option<Duration>,
    /// Tangent_angle: the constant-velocity rate v_c in the input's unit per `per` (mm/d).
    #[serde(default)]
    pub creep_rate: Option<f64>,
    /// Tangent_angle: instead of `creep_rate`, estimate it over this window from the channel's
    /// first reading.
    #[serde(default, with = "duration_opt")]
    pub creep_window: Option<Duration>,
    /// Tangent_angle: half-width of the blue band around 45°, degrees (default 5).
    #[serde(default)]
    pub blue_band_deg: Option<f64>,
    /// Antecedent_rainfall: days summed, today included (default 10).
    #[serde(default)]
    pub days: Option<u32>,
    /// Antecedent_rainfall: daily decay factor K, 0 < K ≤ 1 (default 0.8).
    #[serde(default)]
    pub decay: Option<f64>,
    /// Inverse_velocity, tangent_angle, antecedent_rainfall: shortest time between two stored
    /// readings of a series whose quality and level did not change (default 1m, `"0s"`: every
    /// reading; see [`DEFAULT_STORE_EVERY`]).
    #[serde(default, with = "duration_opt")]
    pub store_every: Option<Duration>,
    /// Along_slope: the GNSS points, each `{ east, north, up, point }`.
    #[serde(default)]
    pub gnss: Vec<GnssPointConfig>,
    /// Along_slope: the direction the slope moves in (dip direction), degrees clockwise from
    /// north.
    #[serde(default)]
    pub azimuth_deg: Option<f64>,
    /// Along_slope: the slope angle below the horizontal, degrees; given, the displacement is
    /// along the slope (east, north and up), otherwise horizontal (east and north).
    #[serde(default)]
    pub dip_deg: Option<f64>,
    /// Rate, stability: least readings in the window before a slope is given (default 3).
    #[serde(default)]
    pub min_points: Option<u32>,
    /// Rate: least time from the oldest to the newest reading in the window before a slope is
    /// given (default half the window, [`super::RATE_MIN_SPAN_FRACTION`]).
    #[serde(default, with = "duration_opt")]
    pub min_span: Option<Duration>,
    /// Difference, tilt, mean, levelling: longest time between the readings combined (default 10m).
    #[serde(default, with = "duration_opt")]
    pub max_skew: Option<Duration>,
    /// Tilt: unit of the settlement values (default mm).
    #[serde(default)]
    pub settlement_unit: Option<LengthUnit>,
    /// Output device template.
    #[serde(default)]
    pub device: Option<String>,
    /// Output point template.
    #[serde(default)]
    pub point: Option<String>,
    /// Output quantity kind (default: settlement for levelling, tilt for tilt, the input's
    /// kind otherwise).
    #[serde(default)]
    pub quantity: Option<QuantityKind>,
    /// Output unit (default: `ratio` for tilt, the input's unit per `per` for rate, the input's
    /// unit otherwise).
    #[serde(default)]
    pub unit: Option<String>,
}

impl DerivedConfig {
    /// A block of `kind` named `name` with nothing else set (the block of a rate, difference or
    /// tilt rule is built on it).
    #[must_use]
    pub fn new(name: &str, kind: DerivedKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            select: None,
            pairs: Vec::new(),
            b: None,
            reference: None,
            initial: BTreeMap::new(),
            surveyed: None,
            establish_readings: None,
            liquid_temperature: None,
            liquid_temperatures: BTreeMap::new(),
            liquid_expansion: None,
            initial_temperature: None,
            window: None,
            per: None,
            threshold: None,
            structure_tag: None,
            input: None,
            smooth: None,
            noise_factor: None,
            min_speed: None,
            min_r2: None,
            horizon: None,
            creep_rate: None,
            creep_window: None,
            blue_band_deg: None,
            days: None,
            decay: None,
            store_every: None,
            gnss: Vec::new(),
            azimuth_deg: None,
            dip_deg: None,
            min_points: None,
            min_span: None,
            max_skew: None,
            settlement_unit: None,
            device: None,
            point: None,
            quantity: None,
            unit: None,
        }
    }
}

/// A pair, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedPair {
    /// Channel key of `a`.
    pub a: String,
    /// Channel key of `b`.
    pub b: String,
    /// Tilt: distance in the settlement unit (metres × units per metre); 1 for a difference.
    pub divisor: f64,
    /// Tilt: distance in metres, as configured.
    pub distance_m: Option<f64>,
    /// Output point template.
    pub point: String,
}

/// A configured initial value.
#[derive(Debug, Clone, PartialEq)]
pub struct InitialValue {
    /// The value, in the channel's unit, as read (not corrected).
    pub value: f64,
    /// Survey date, `YYYY-MM-DD`; empty when none was given.
    pub surveyed: String,
    /// Liquid temperature at the survey, °C, where the line corrects for it.
    pub temperature: Option<f64>,
}

/// A levelling line's liquid-temperature correction, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LiquidCorrection {
    /// Template of a cell's temperature channel key (`None`: only `by_cell`).
    pub template: Option<String>,
    /// Temperature channel key by cell key, before the template.
    pub by_cell: BTreeMap<String, String>,
    /// Volumetric expansion per °C.
    pub expansion: f64,
}

impl LiquidCorrection {
    /// The temperature channel key of cell `key` (`device/point`), if it has one.
    #[must_use]
    pub fn temperature_of(&self, key: &str) -> Option<String> {
        if let Some(t) = self.by_cell.get(key) {
            return Some(t.clone());
        }
        let (device, point) = key.split_once('/').unwrap_or((key, ""));
        self.template
            .as_deref()
            .map(|t| expand(t, &[("device", device), ("point", point), ("key", key)]))
    }

    /// See [`liquid_head`].
    #[must_use]
    pub fn head(&self, h: f64, t: f64) -> f64 {
        liquid_head(h, t, self.expansion)
    }
}

/// The head of liquid at 0 °C that a cell reading `h` at liquid temperature `t` stands for,
/// with the liquid's volumetric expansion `alpha` per °C: h / (1 − α·t), Geokon 4675LV
/// (docs/DOMAIN.md §Hydrostatic levelling).
#[must_use]
pub fn liquid_head(h: f64, t: f64, alpha: f64) -> f64 {
    h / (1.0 - alpha * t)
}

/// A validated `[[derived]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedSpec {
    /// The block's name (the `derived` tag).
    pub name: String,
    /// What it computes.
    pub kind: DerivedKind,
    /// Input selection (`None` for pair kinds given by `pairs`).
    pub select: Option<Selector>,
    /// Explicit pairs.
    pub pairs: Vec<DerivedPair>,
    /// Difference with `select`: template of `b`.
    pub b: Option<String>,
    /// Levelling: reference cell key.
    pub reference: Option<String>,
    /// Levelling: initial values by channel key.
    pub initial: BTreeMap<String, InitialValue>,
    /// Levelling: readings whose mean establishes a missing initial value (`None`: never).
    pub establish_readings: Option<u32>,
    /// Levelling: the liquid-temperature correction (`None`: heads as read).
    pub liquid: Option<LiquidCorrection>,
    /// Rate, sum_over, stability: window, ns.
    pub window_ns: i64,
    /// Rate, stability: seconds per unit of time of the slope.
    pub per_secs: f64,
    /// Stability: the rate (per `per`) below which a channel is stable.
    pub threshold: f64,
    /// Stability: the tag whose value groups points into structures (`None`: no structure
    /// verdict).
    pub structure_tag: Option<String>,
    /// Sum_over: what the readings are.
    pub sum_input: SumInput,
    /// Rate: unit suffix (`/d`).
    pub per_suffix: String,
    /// Rate: least readings.
    pub min_points: u32,
    /// Rate, stability: least time from the oldest to the newest reading of the window, ns.
    pub min_span_ns: i64,
    /// Longest time between combined readings, ns.
    pub max_skew_ns: i64,
    /// Output device template.
    pub device: String,
    /// Output point template.
    pub point: String,
    /// Output quantity, when fixed by the config or the kind.
    pub quantity: Option<QuantityKind>,
    /// Output unit, when fixed by the config or the kind.
    pub unit: Option<String>,
    /// Inverse_velocity: its parameters.
    pub forecast: Option<ForecastParams>,
    /// Tangent_angle: its parameters.
    pub tangent: Option<TangentParams>,
    /// Antecedent_rainfall: its parameters.
    pub antecedent: Option<AntecedentParams>,
    /// Slope kinds: shortest time between two stored readings of an unchanged series, ns (0:
    /// every reading; other kinds store every reading).
    pub store_every_ns: i64,
    /// Along_slope: its GNSS points.
    pub gnss: Vec<GnssPoint>,
    /// Along_slope: the direction it projects on.
    pub direction: Option<Direction>,
}

/// The validated `[[derived]]` section, in declaration order: a block sees its own inputs and
/// the outputs of blocks declared before it, never after (no cycles).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DerivedPlan {
    /// The blocks.
    pub specs: Vec<DerivedSpec>,
}

impl DerivedPlan {
    /// Nothing is derived.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Validate the section at `at` (`derived`).
    ///
    /// # Errors
    /// Every problem found, as `(path, message)`.
    pub fn from_config(blocks: &[DerivedConfig], at: &str) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        let mut specs = Vec::new();
        for (i, c) in blocks.iter().enumerate() {
            let at = format!("{at}[{i}]");
            if !names.insert(c.name.as_str()) {
                problems.push((
                    format!("{at}.name"),
                    format!(
                        "\"{}\" is used twice; give each derived block its own name",
                        c.name
                    ),
                ));
            }
            if let Some(spec) = validate_block(c, &at, &mut problems) {
                specs.push(spec);
            }
        }
        if problems.is_empty() {
            Ok(Self { specs })
        } else {
            Err(problems)
        }
    }
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Placeholders a template of a per-channel or mean block may use.
const CHANNEL_PLACEHOLDERS: [&str; 4] = ["name", "device", "point", "key"];
/// Placeholders a template of a pair may use.
const PAIR_PLACEHOLDERS: [&str; 5] = ["name", "a_device", "a_point", "b_device", "b_point"];

/// Check that `template` is not empty and uses only `allowed` placeholders.
fn check_template(
    template: &str,
    allowed: &[&str],
    at: &str,
    problems: &mut Vec<(String, String)>,
) {
    if template.is_empty() {
        problems.push((at.to_owned(), "must not be empty".into()));
        return;
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(len) = rest[open..].find('}') else {
            problems.push((
                at.to_owned(),
                format!("\"{template}\": a `{{` is not closed"),
            ));
            return;
        };
        let name = &rest[open + 1..open + len];
        if !allowed.contains(&name) {
            problems.push((
                at.to_owned(),
                format!(
                    "\"{template}\": unknown placeholder {{{name}}}; use {}",
                    allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        rest = &rest[open + len + 1..];
    }
}

/// True for `YYYY-MM-DD` with a plausible month and day.
/// A levelling block's liquid-temperature correction, or `None` when it has none.
fn liquid_correction(
    c: &DerivedConfig,
    push: &mut impl FnMut(&str, String),
) -> Option<LiquidCorrection> {
    if c.liquid_temperature.is_none() && c.liquid_temperatures.is_empty() {
        if c.liquid_expansion.is_some() || c.initial_temperature.is_some() {
            push(
                "liquid_temperature",
                "missing: liquid_expansion and initial_temperature apply to a line whose heads are corrected for the liquid temperature; name each cell's temperature channel, e.g. liquid_temperature = \"{device}/temp1\"".into(),
            );
        }
        return None;
    }
    if let Some(t) = &c.liquid_temperature {
        let mut found = Vec::new();
        check_template(
            t,
            &["device", "point", "key"],
            "liquid_temperature",
            &mut found,
        );
        for (path, message) in found {
            push(&path, message);
        }
    }
    for (cell, t) in &c.liquid_temperatures {
        for key in [cell, t] {
            if !is_channel_key(key) {
                push(
                    &format!("liquid_temperatures.\"{cell}\""),
                    format!("\"{key}\" is not a channel key; write \"device/point\""),
                );
            }
        }
    }
    let expansion = c.liquid_expansion.unwrap_or(DEFAULT_LIQUID_EXPANSION);
    if !(expansion > 0.0 && expansion <= MAX_LIQUID_EXPANSION) {
        push(
            "liquid_expansion",
            format!("must be above 0 and at most {MAX_LIQUID_EXPANSION} per °C (water: {DEFAULT_LIQUID_EXPANSION})"),
        );
    }
    Some(LiquidCorrection {
        template: c.liquid_temperature.clone(),
        by_cell: c.liquid_temperatures.clone(),
        expansion,
    })
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) {
        return false;
    }
    if !digits(5..7) || !digits(8..10) {
        return false;
    }
    let month = u32::from(b[5] - b'0') * 10 + u32::from(b[6] - b'0');
    let day = u32::from(b[8] - b'0') * 10 + u32::from(b[9] - b'0');
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// True for a channel key `device/point` with both parts present.
pub(super) fn is_channel_key(s: &str) -> bool {
    s.split_once('/')
        .is_some_and(|(d, p)| !d.is_empty() && !p.is_empty())
}

#[allow(clippy::too_many_lines)] // one flat list of per-kind checks reads better split by kind than by helper
pub(crate) fn validate_block(
    c: &DerivedConfig,
    at: &str,
    problems: &mut Vec<(String, String)>,
) -> Option<DerivedSpec> {
    let k = c.kind;
    let before = problems.len();
    let mut push = |path: &str, msg: String| problems.push((format!("{at}.{path}"), msg));
    if c.name.is_empty() {
        push("name", "must not be empty".into());
    }
    use DerivedKind::{
        AlongSlope, AntecedentRainfall, Difference, InverseVelocity, Levelling, Mean, Rate,
        Stability, SumOver, TangentAngle, Tilt,
    };
    // Each field and the kinds that take it; given to another kind, it is refused, not ignored.
    let takes: [(&str, bool, &[DerivedKind]); 33] = [
        ("pairs", !c.pairs.is_empty(), &[Difference, Tilt]),
        ("b", c.b.is_some(), &[Difference]),
        ("reference", c.reference.is_some(), &[Levelling]),
        ("initial", !c.initial.is_empty(), &[Levelling]),
        ("surveyed", c.surveyed.is_some(), &[Levelling]),
        (
            "liquid_temperature",
            c.liquid_temperature.is_some(),
            &[Levelling],
        ),
        (
            "liquid_temperatures",
            !c.liquid_temperatures.is_empty(),
            &[Levelling],
        ),
        (
            "liquid_expansion",
            c.liquid_expansion.is_some(),
            &[Levelling],
        ),
        (
            "initial_temperature",
            c.initial_temperature.is_some(),
            &[Levelling],
        ),
        (
            "establish_readings",
            c.establish_readings.is_some(),
            &[Levelling],
        ),
        (
            "window",
            c.window.is_some(),
            &[Rate, SumOver, Stability, InverseVelocity],
        ),
        (
            "per",
            c.per.is_some(),
            &[Rate, Stability, InverseVelocity, TangentAngle],
        ),
        ("threshold", c.threshold.is_some(), &[Stability]),
        ("structure_tag", c.structure_tag.is_some(), &[Stability]),
        ("input", c.input.is_some(), &[SumOver, AntecedentRainfall]),
        (
            "min_points",
            c.min_points.is_some(),
            &[Rate, Stability, InverseVelocity, TangentAngle],
        ),
        ("min_span", c.min_span.is_some(), &[Rate]),
        (
            "smooth",
            c.smooth.is_some(),
            &[InverseVelocity, TangentAngle],
        ),
        (
            "noise_factor",
            c.noise_factor.is_some(),
            &[InverseVelocity, TangentAngle],
        ),
        ("min_speed", c.min_speed.is_some(), &[InverseVelocity]),
        ("min_r2", c.min_r2.is_some(), &[InverseVelocity]),
        ("horizon", c.horizon.is_some(), &[InverseVelocity]),
        ("creep_rate", c.creep_rate.is_some(), &[TangentAngle]),
        ("creep_window", c.creep_window.is_some(), &[TangentAngle]),
        ("blue_band_deg", c.blue_band_deg.is_some(), &[TangentAngle]),
        ("days", c.days.is_some(), &[AntecedentRainfall]),
        ("decay", c.decay.is_some(), &[AntecedentRainfall]),
        (
            "store_every",
            c.store_every.is_some(),
            &[InverseVelocity, TangentAngle, AntecedentRainfall],
        ),
        ("gnss", !c.gnss.is_empty(), &[AlongSlope]),
        ("azimuth_deg", c.azimuth_deg.is_some(), &[AlongSlope]),
        ("dip_deg", c.dip_deg.is_some(), &[AlongSlope]),
        (
            "max_skew",
            c.max_skew.is_some(),
            &[Difference, Tilt, Mean, Levelling],
        ),
        ("settlement_unit", c.settlement_unit.is_some(), &[Tilt]),
    ];
    for (field, given, kinds) in takes {
        if given && !kinds.contains(&k) {
            let names: Vec<&str> = kinds.iter().map(|x| x.as_str()).collect();
            push(
                field,
                format!(
                    "does not apply to kind = \"{}\": only {} take `{field}`; remove it",
                    k.as_str(),
                    names.join(", ")
                ),
            );
        }
    }
    let mut sel_problems = Vec::new();
    let select = c
        .select
        .as_ref()
        .map(|s| s.validate(&format!("{at}.select"), &mut sel_problems));
    for p in sel_problems {
        push(p.0.trim_start_matches(&format!("{at}.")), p.1);
    }
    match k {
        DerivedKind::Difference | DerivedKind::Tilt => {
            let by_template = k == DerivedKind::Difference && c.b.is_some();
            if by_template {
                if select.is_none() {
                    push("select", "missing: `b` is a template applied to each selected channel `a`; add select = { ... }".into());
                }
                if !c.pairs.is_empty() {
                    push(
                        "pairs",
                        "give either pairs or select with a `b` template, not both".into(),
                    );
                }
            } else {
                if c.pairs.is_empty() {
                    push("pairs", format!("missing: a {} needs pairs = [{{ a = \"dev/p1\", b = \"dev/p2\"{} }}]{}", k.as_str(), if k == DerivedKind::Tilt { ", distance_m = 8.0" } else { "" }, if k == DerivedKind::Difference { ", or select with b = \"{device}/p2\"" } else { "" }));
                }
                if c.select.is_some() {
                    push(
                        "select",
                        format!(
                            "a {} with pairs selects nothing; remove `select`{}",
                            k.as_str(),
                            if k == DerivedKind::Difference {
                                " or give a `b` template"
                            } else {
                                ""
                            }
                        ),
                    );
                }
            }
        }
        DerivedKind::Levelling => {
            if select.is_none() {
                push("select", "missing: select the cells of the levelling line, e.g. select = { device = \"block-a-lvl\" }".into());
            }
            if c.reference.is_none() {
                push("reference", "missing: a levelling line needs its reference cell (outside the settlement zone), e.g. reference = \"block-a-lvl/ch5\"".into());
            }
        }
        DerivedKind::AlongSlope => {
            if c.select.is_some() {
                push(
                    "select",
                    "an along_slope block takes its GNSS points from `gnss`; remove `select`"
                        .into(),
                );
            }
        }
        DerivedKind::Mean
        | DerivedKind::Rate
        | DerivedKind::SumOver
        | DerivedKind::Cumulative
        | DerivedKind::Stability
        | DerivedKind::InverseVelocity
        | DerivedKind::TangentAngle
        | DerivedKind::AntecedentRainfall => {
            if select.is_none() {
                push("select", format!("missing: a {} needs its input channels, e.g. select = {{ kind = \"rainfall\" }}", k.as_str()));
            }
        }
    }
    if let Some(r) = &c.reference {
        if !is_channel_key(r) {
            push(
                "reference",
                format!("\"{r}\" is not a channel key; write \"device/point\""),
            );
        }
    }
    if let Some(s) = &c.surveyed {
        if !is_date(s) {
            push(
                "surveyed",
                format!("\"{s}\" is not a date; write \"YYYY-MM-DD\""),
            );
        }
    }
    if let Some(n) = c.establish_readings {
        if !(1..=MAX_ESTABLISH_READINGS).contains(&n) {
            push(
                "establish_readings",
                format!("must be between 1 and {MAX_ESTABLISH_READINGS} readings"),
            );
        }
    }
    let liquid = liquid_correction(c, &mut push);
    let mut initial = BTreeMap::new();
    for (key, v) in &c.initial {
        let path = format!("initial.\"{key}\"");
        if !is_channel_key(key) {
            push(
                &path,
                format!("\"{key}\" is not a channel key; write \"device/point\""),
            );
        }
        let (value, surveyed, temperature) = match v {
            InitialConfig::Value(v) => (
                *v,
                c.surveyed.clone().unwrap_or_default(),
                c.initial_temperature,
            ),
            InitialConfig::Surveyed {
                value,
                surveyed,
                temperature,
            } => {
                if let Some(d) = surveyed.as_deref().filter(|d| !is_date(d)) {
                    push(
                        &format!("{path}.surveyed"),
                        format!("\"{d}\" is not a date; write \"YYYY-MM-DD\""),
                    );
                }
                (
                    *value,
                    surveyed
                        .clone()
                        .or_else(|| c.surveyed.clone())
                        .unwrap_or_default(),
                    temperature.or(c.initial_temperature),
                )
            }
        };
        if !value.is_finite() {
            push(&path, "must be a finite number".into());
        }
        if liquid.is_some() && temperature.is_none() {
            // Geokon 4675LV corrects the zero reading with its own temperature (R0, T0): an
            // initial head without one would be compared with corrected heads.
            push(
                &path,
                format!("the line corrects heads for the liquid temperature, so this initial value needs the liquid temperature at its survey: write {{ value = {value}, temperature = 18.0 }} or give the block initial_temperature = 18.0"),
            );
        }
        if temperature.is_some_and(|t| !t.is_finite() || !(-40.0..=100.0).contains(&t)) {
            push(
                &format!("{path}.temperature"),
                "must be a liquid temperature in °C between -40 and 100".into(),
            );
        }
        initial.insert(
            key.clone(),
            InitialValue {
                value,
                surveyed,
                temperature,
            },
        );
    }
    let mut pairs = Vec::new();
    let length = c.settlement_unit.unwrap_or_default();
    let pair_point = c
        .point
        .clone()
        .unwrap_or_else(|| DEFAULT_PAIR_POINT_TEMPLATE.to_owned());
    for (i, p) in c.pairs.iter().enumerate() {
        for (field, key) in [("a", &p.a), ("b", &p.b)] {
            if !is_channel_key(key) {
                push(
                    &format!("pairs[{i}].{field}"),
                    format!("\"{key}\" is not a channel key; write \"device/point\""),
                );
            }
        }
        if p.a == p.b {
            push(
                &format!("pairs[{i}]"),
                "a and b are the same channel".into(),
            );
        }
        let divisor = match (k, p.distance_m) {
            (DerivedKind::Tilt, Some(d)) if d.is_finite() && d > 0.0 => d * length.per_metre(),
            (DerivedKind::Tilt, Some(_)) => {
                push(
                    &format!("pairs[{i}].distance_m"),
                    "must be a distance above 0 m".into(),
                );
                1.0
            }
            (DerivedKind::Tilt, None) => {
                push(
                    &format!("pairs[{i}].distance_m"),
                    "missing: a tilt pair needs the distance between its points in metres".into(),
                );
                1.0
            }
            (_, Some(_)) => {
                push(
                    &format!("pairs[{i}].distance_m"),
                    "only tilt pairs take a distance".into(),
                );
                1.0
            }
            (_, None) => 1.0,
        };
        let point = p.point.clone().unwrap_or_else(|| pair_point.clone());
        pairs.push(DerivedPair {
            a: p.a.clone(),
            b: p.b.clone(),
            divisor,
            distance_m: p.distance_m,
            point,
        });
    }
    let (default_device, default_point, placeholders): (&str, &str, &[&str]) =
        if k.is_pair() && c.b.is_none() {
            (
                DEFAULT_PAIR_DEVICE_TEMPLATE,
                DEFAULT_PAIR_POINT_TEMPLATE,
                &PAIR_PLACEHOLDERS,
            )
        } else if k == DerivedKind::Difference {
            // `select` + `b`: `a` is the selected channel, so both sets of names apply.
            (
                DEFAULT_PAIR_DEVICE_TEMPLATE,
                DEFAULT_PAIR_POINT_TEMPLATE,
                &PAIR_PLACEHOLDERS,
            )
        } else if k == DerivedKind::Mean {
            (
                DEFAULT_MEAN_DEVICE_TEMPLATE,
                DEFAULT_MEAN_POINT_TEMPLATE,
                &["name"],
            )
        } else {
            (
                DEFAULT_DEVICE_TEMPLATE,
                DEFAULT_POINT_TEMPLATE,
                &CHANNEL_PLACEHOLDERS,
            )
        };
    let device = c
        .device
        .clone()
        .unwrap_or_else(|| default_device.to_owned());
    let point = c.point.clone().unwrap_or_else(|| default_point.to_owned());
    check_template(&device, placeholders, &format!("{at}.device"), problems);
    check_template(&point, placeholders, &format!("{at}.point"), problems);
    for (i, p) in c.pairs.iter().enumerate() {
        if let Some(t) = &p.point {
            check_template(
                t,
                &PAIR_PLACEHOLDERS,
                &format!("{at}.pairs[{i}].point"),
                problems,
            );
        }
    }
    if let Some(b) = &c.b {
        check_template(b, &CHANNEL_PLACEHOLDERS, &format!("{at}.b"), problems);
        if !b.contains('/') {
            problems.push((
                format!("{at}.b"),
                format!("\"{b}\" does not name a channel; write \"{{device}}/point\""),
            ));
        }
    }
    if k.is_per_channel() && !point.contains("{point}") && !point.contains("{key}") {
        problems.push((
            format!("{at}.point"),
            format!("\"{point}\" gives every selected channel the same name; include {{point}}"),
        ));
    }
    let mut window_ns = 0;
    let mut per = DEFAULT_RATE_PER;
    let min_points = c.min_points.unwrap_or(DEFAULT_RATE_MIN_POINTS);
    if matches!(k, DerivedKind::Rate | DerivedKind::SumOver) {
        match c.window {
            None => problems.push((format!("{at}.window"), format!("missing: a {} needs its window, e.g. window = \"24h\"", k.as_str()))),
            Some(w) if k == DerivedKind::Rate && w < MIN_RATE_WINDOW => problems.push((format!("{at}.window"), format!("{w:?} is shorter than {MIN_RATE_WINDOW:?}; a slope over so short a time is noise"))),
            Some(w) if w.is_zero() => problems.push((format!("{at}.window"), "must be longer than 0s".into())),
            Some(w) => window_ns = ns(w),
        }
    }
    let mut threshold = DEFAULT_STABILITY_THRESHOLD;
    if k == DerivedKind::Stability {
        // docs/DOMAIN.md §Settlement: JGJ 8-2016 judges the last 100 days unless configured.
        match c.window.unwrap_or(DEFAULT_STABILITY_WINDOW) {
            w if w < MIN_RATE_WINDOW => problems.push((format!("{at}.window"), format!("{w:?} is shorter than {MIN_RATE_WINDOW:?}; JGJ 8-2016 judges the last 100 days, write window = \"100d\" or leave it out"))),
            w => window_ns = ns(w),
        }
        if let Some(t) = c.threshold {
            if !(t.is_finite() && t > 0.0) {
                problems.push((format!("{at}.threshold"), format!("{t} is not a rate above 0; JGJ 8-2016 gives 0.01-0.04 mm/d by soil, e.g. threshold = 0.04")));
            }
            threshold = t;
        }
        if c.structure_tag.as_deref().is_some_and(str::is_empty) {
            problems.push((
                format!("{at}.structure_tag"),
                "must not be empty; name the tag of a point's structure, e.g. structure_tag = \"structure\"".into(),
            ));
        }
    }
    if matches!(k, DerivedKind::Rate | DerivedKind::Stability) {
        per = c.per.unwrap_or(DEFAULT_RATE_PER);
        if per.is_zero() {
            problems.push((
                format!("{at}.per"),
                "must be longer than 0s (e.g. \"1d\" for mm/d)".into(),
            ));
        }
        if min_points < 2 {
            problems.push((
                format!("{at}.min_points"),
                "must be at least 2: a slope needs two readings".into(),
            ));
        }
    }
    // docs/DOMAIN.md §Data quality: a slope over less than half its window is noise.
    let min_span_ns = c.min_span.map_or_else(
        || (window_ns as f64 * super::RATE_MIN_SPAN_FRACTION) as i64,
        ns,
    );
    if min_span_ns > window_ns && k == DerivedKind::Rate {
        problems.push((
            format!("{at}.min_span"),
            "is longer than the window; it could never be met".into(),
        ));
    }
    let (forecast, tangent, antecedent) = slope_params(c, at, problems);
    let (gnss, direction) = if k == DerivedKind::AlongSlope {
        (
            super::gnss::validate(&c.name, &c.gnss, c.dip_deg.is_some(), at, problems),
            Some(super::gnss::direction(
                c.azimuth_deg,
                c.dip_deg,
                at,
                problems,
            )),
        )
    } else {
        (Vec::new(), None)
    };
    let store_every = if matches!(
        k,
        DerivedKind::InverseVelocity | DerivedKind::TangentAngle | DerivedKind::AntecedentRainfall
    ) {
        c.store_every.unwrap_or(DEFAULT_STORE_EVERY)
    } else {
        Duration::ZERO
    };
    if store_every > MAX_STORE_EVERY {
        problems.push((
            format!("{at}.store_every"),
            format!("{store_every:?} is longer than {MAX_STORE_EVERY:?}; a judgement stored so seldom hides a fast failure stage, leave it out for 1m"),
        ));
    }
    if forecast.is_some() || tangent.is_some() {
        // Their speeds are per `per` (checked in `slope_params`).
        per = c.per.unwrap_or(DEFAULT_RATE_PER);
    }
    let quantity = c.quantity.or(match k {
        DerivedKind::Levelling => Some(QuantityKind::Settlement),
        DerivedKind::Tilt => Some(QuantityKind::Tilt),
        // A verdict is no settlement: no settlement rule or dashboard may select it.
        DerivedKind::Stability => Some(QuantityKind::Status),
        DerivedKind::AntecedentRainfall => Some(QuantityKind::Rainfall),
        DerivedKind::AlongSlope => Some(QuantityKind::Displacement),
        _ => None,
    });
    let unit = c.unit.clone().or_else(|| match k {
        DerivedKind::Tilt => Some(TILT_UNIT.to_owned()),
        DerivedKind::Stability => Some(STABILITY_UNIT.to_owned()),
        _ => None,
    });
    if problems.len() > before {
        return None;
    }
    Some(DerivedSpec {
        name: c.name.clone(),
        kind: k,
        select,
        pairs,
        b: c.b.clone(),
        reference: c.reference.clone(),
        initial,
        establish_readings: c.establish_readings,
        liquid,
        window_ns,
        per_secs: per.as_secs_f64(),
        threshold,
        structure_tag: c.structure_tag.clone(),
        sum_input: c.input.unwrap_or_default(),
        per_suffix: per_suffix(per),
        min_points,
        min_span_ns,
        max_skew_ns: ns(c.max_skew.unwrap_or(DEFAULT_PAIR_MAX_SKEW)),
        device,
        point,
        quantity,
        unit,
        forecast,
        tangent,
        antecedent,
        store_every_ns: ns(store_every),
        gnss,
        direction,
    })
}

/// A duration as validated ns, or a problem at `at.field` when it is zero.
fn positive_ns(
    d: Duration,
    at: &str,
    field: &str,
    example: &str,
    problems: &mut Vec<(String, String)>,
) -> i64 {
    if d.is_zero() {
        problems.push((
            format!("{at}.{field}"),
            format!("must be longer than 0s, e.g. {field} = \"{example}\""),
        ));
    }
    ns(d)
}

/// A number that must lie in `range`, or a problem at `at.field` saying so with `advice`.
fn in_range(
    value: f64,
    range: std::ops::RangeInclusive<f64>,
    at: &str,
    field: &str,
    advice: &str,
    problems: &mut Vec<(String, String)>,
) -> f64 {
    if !(value.is_finite() && range.contains(&value)) {
        problems.push((
            format!("{at}.{field}"),
            format!(
                "{value} is outside {}..={}; {advice}",
                range.start(),
                range.end()
            ),
        ));
    }
    value
}

/// The parameters of the slope kinds (docs/DOMAIN.md §Slope early warning), validated.
fn slope_params(
    c: &DerivedConfig,
    at: &str,
    problems: &mut Vec<(String, String)>,
) -> (
    Option<ForecastParams>,
    Option<TangentParams>,
    Option<AntecedentParams>,
) {
    let per = c.per.unwrap_or(DEFAULT_RATE_PER);
    let per_secs = per.as_secs_f64();
    let min_points = c.min_points.unwrap_or(DEFAULT_SLOPE_MIN_POINTS);
    if matches!(
        c.kind,
        DerivedKind::InverseVelocity | DerivedKind::TangentAngle
    ) {
        // Each of their series has its own kind and unit (README, time-series schema).
        for (field, given) in [
            ("quantity", c.quantity.is_some()),
            ("unit", c.unit.is_some()),
        ] {
            if given {
                problems.push((
                    format!("{at}.{field}"),
                    format!(
                        "does not apply to kind = \"{}\": each of its series has a fixed kind and unit (README, time-series schema); remove it",
                        c.kind.as_str()
                    ),
                ));
            }
        }
    }
    let common = |problems: &mut Vec<(String, String)>| {
        if per.is_zero() {
            problems.push((
                format!("{at}.per"),
                "must be longer than 0s (e.g. \"1d\" for mm/d)".into(),
            ));
        }
        if min_points < MIN_SLOPE_MIN_POINTS {
            problems.push((
                format!("{at}.min_points"),
                format!("must be at least {MIN_SLOPE_MIN_POINTS}: the noise of a speed needs n - 2 > 0 readings"),
            ));
        }
        let smooth = c.smooth.unwrap_or(DEFAULT_SMOOTH);
        if smooth < MIN_RATE_WINDOW {
            problems.push((
                format!("{at}.smooth"),
                format!("{smooth:?} is shorter than {MIN_RATE_WINDOW:?}; a speed over so short a time is noise, e.g. smooth = \"6h\""),
            ));
        }
        let noise_factor = in_range(
            c.noise_factor.unwrap_or(DEFAULT_NOISE_FACTOR),
            0.0..=100.0,
            at,
            "noise_factor",
            "it counts standard errors of the speed, e.g. noise_factor = 3",
            problems,
        );
        (ns(smooth), noise_factor)
    };
    match c.kind {
        DerivedKind::InverseVelocity => {
            let (smooth_ns, noise_factor) = common(problems);
            let window = c.window.unwrap_or(DEFAULT_FIT_WINDOW);
            let window_ns = positive_ns(window, at, "window", "3d", problems);
            if window_ns > 0 && window_ns <= smooth_ns {
                problems.push((
                    format!("{at}.window"),
                    format!("{window:?} is not longer than smooth; the 1/v line needs several smoothed speeds, e.g. window = \"3d\""),
                ));
            }
            let min_speed = in_range(
                c.min_speed.unwrap_or(0.0),
                0.0..=f64::MAX,
                at,
                "min_speed",
                "give the least speed that counts in the input's unit per `per`, or leave it out",
                problems,
            );
            let min_r2 = in_range(
                c.min_r2.unwrap_or(DEFAULT_MIN_R2),
                0.0..=1.0,
                at,
                "min_r2",
                "R² lies in 0..1, e.g. min_r2 = 0.9",
                problems,
            );
            let horizon_ns = positive_ns(
                c.horizon.unwrap_or(DEFAULT_HORIZON),
                at,
                "horizon",
                "7d",
                problems,
            );
            let p = ForecastParams {
                smooth_ns,
                window_ns,
                per_secs,
                min_points,
                noise_factor,
                min_speed,
                min_r2,
                horizon_ns,
            };
            (Some(p), None, None)
        }
        DerivedKind::TangentAngle => {
            let (smooth_ns, noise_factor) = common(problems);
            let creep_window_ns = match (c.creep_rate, c.creep_window) {
                (Some(_), Some(_)) => {
                    problems.push((
                        format!("{at}.creep_window"),
                        "give either creep_rate or creep_window, not both".into(),
                    ));
                    0
                }
                (None, None) => {
                    problems.push((format!("{at}.creep_rate"), "missing: the tangent angle needs the constant-velocity rate, e.g. creep_rate = 2.0 (mm/d), or creep_window = \"7d\" to estimate it from the first readings".into()));
                    0
                }
                (Some(r), None) => {
                    if !(r.is_finite() && r != 0.0) {
                        problems.push((format!("{at}.creep_rate"), format!("{r} is not a rate; give the constant-velocity rate of the point in its unit per `per`, e.g. creep_rate = 2.0")));
                    }
                    0
                }
                (None, Some(w)) => {
                    let w_ns = positive_ns(w, at, "creep_window", "7d", problems);
                    if w_ns > 0 && w_ns <= smooth_ns {
                        problems.push((format!("{at}.creep_window"), format!("{w:?} is not longer than smooth; estimate the constant-velocity rate over days, e.g. creep_window = \"7d\"")));
                    }
                    w_ns
                }
            };
            let blue_band_deg = in_range(
                c.blue_band_deg.unwrap_or(DEFAULT_BLUE_BAND_DEG),
                0.0..=30.0,
                at,
                "blue_band_deg",
                "the band around 45° read as constant velocity, e.g. blue_band_deg = 5",
                problems,
            );
            let p = TangentParams {
                smooth_ns,
                per_secs,
                min_points,
                creep_rate: c.creep_rate,
                creep_window_ns,
                noise_factor,
                blue_band_deg,
            };
            (None, Some(p), None)
        }
        DerivedKind::AntecedentRainfall => {
            let days = c.days.unwrap_or(DEFAULT_ANTECEDENT_DAYS);
            if !(1..=MAX_ANTECEDENT_DAYS).contains(&days) {
                problems.push((
                    format!("{at}.days"),
                    format!("must be between 1 and {MAX_ANTECEDENT_DAYS} days, e.g. days = 10"),
                ));
            }
            let decay = c.decay.unwrap_or(DEFAULT_DECAY);
            if !(decay.is_finite() && decay > 0.0 && decay <= 1.0) {
                problems.push((
                    format!("{at}.decay"),
                    format!(
                        "{decay} is not a daily decay factor; K lies in (0, 1], e.g. decay = 0.8"
                    ),
                ));
            }
            (None, None, Some(AntecedentParams { days, decay }))
        }
        _ => (None, None, None),
    }
}

impl DerivedSpec {
    /// The output device and point of a pair of this block, templates expanded.
    #[must_use]
    pub fn pair_output(&self, a: &str, b: &str, point_template: &str) -> (String, String) {
        let (ad, ap) = a.split_once('/').unwrap_or((a, ""));
        let (bd, bp) = b.split_once('/').unwrap_or((b, ""));
        let vars = [
            ("name", self.name.as_str()),
            ("a_device", ad),
            ("a_point", ap),
            ("b_device", bd),
            ("b_point", bp),
        ];
        (expand(&self.device, &vars), expand(point_template, &vars))
    }
}

impl std::fmt::Display for DerivedSpec {
    /// One block for `gateway check`: kind, output names, inputs and initial values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  {}: {} -> {}/{}",
            self.name,
            self.kind.as_str(),
            self.device,
            self.point
        )?;
        if let Some(r) = &self.reference {
            write!(f, ", reference {r}")?;
        }
        if self.kind == DerivedKind::Stability {
            let days = self.window_ns as f64 / (24.0 * 3600.0 * 1e9);
            write!(
                f,
                "; stable when |rate| over {days} d < {}{} (JGJ 8-2016 §7.1.5)",
                self.threshold, self.per_suffix
            )?;
            if let Some(tag) = &self.structure_tag {
                write!(f, ", per structure (tag `{tag}`): {}/<{tag}>", self.name)?;
            }
        }
        if let Some(p) = &self.forecast {
            let h = |ns: i64| ns as f64 / 3.6e12;
            write!(
                f,
                ".{{{}}}; speed smoothed over {} h, 1/v line over {} h, gates: speed > {} standard errors{}, falling 1/v, R² >= {}, failure within {} h (Fukuzono 1985, docs/DOMAIN.md §Slope early warning)",
                FORECAST_SERIES.join(","),
                h(p.smooth_ns),
                h(p.window_ns),
                p.noise_factor,
                if p.min_speed > 0.0 { format!(" and > {}{}", p.min_speed, self.per_suffix) } else { String::new() },
                p.min_r2,
                h(p.horizon_ns)
            )?;
        }
        if let Some(p) = &self.tangent {
            write!(
                f,
                ".{{{}}}; speed smoothed over {} h, constant-velocity rate {}; blue within {}° of 45°, orange from 80°, red from 85° (Xu et al., docs/DOMAIN.md §Slope early warning)",
                TANGENT_SERIES.join(","),
                p.smooth_ns as f64 / 3.6e12,
                p.creep_rate.map_or_else(
                    || format!("estimated over the first {} h", p.creep_window_ns as f64 / 3.6e12),
                    |r| format!("{r}{}", self.per_suffix)
                ),
                p.blue_band_deg
            )?;
        }
        if let Some(p) = &self.antecedent {
            write!(
                f,
                "; R_eff = sum of K^i * R_i over {} days, K = {} (docs/DOMAIN.md §Slope early warning)",
                p.days, p.decay
            )?;
        }
        if let Some(l) = &self.liquid {
            write!(
                f,
                "; heads corrected for the liquid temperature, h / (1 - {}*T) (Geokon 4675LV)",
                l.expansion
            )?;
            if let Some(t) = &l.template {
                write!(f, ", T of each cell from {t}")?;
            }
            for (cell, t) in &l.by_cell {
                write!(f, ", of {cell} from {t}")?;
            }
        }
        if let Some(n) = self.establish_readings {
            write!(
                f,
                "; missing initial values: mean of the first {n} good readings, kept in the spool"
            )?;
        }
        if let Some(d) = &self.direction {
            write!(
                f,
                "; along azimuth {}°{} (docs/DOMAIN.md §Slope early warning)",
                d.azimuth.to_degrees(),
                d.plunge.map_or_else(
                    || " (horizontal)".to_owned(),
                    |p| format!(", {}° below the horizontal", p.to_degrees())
                )
            )?;
        }
        for g in &self.gnss {
            write!(
                f,
                "\n    {}/{} from {}",
                g.device,
                g.point,
                g.inputs.join(", ")
            )?;
        }
        for p in &self.pairs {
            let (device, point) = self.pair_output(&p.a, &p.b, &p.point);
            write!(f, "\n    {device}/{point} = {} - {}", p.a, p.b)?;
            if let Some(d) = p.distance_m {
                write!(f, ", over {d} m")?;
            }
        }
        for (channel, i) in &self.initial {
            let date = if i.surveyed.is_empty() {
                "no survey date"
            } else {
                i.surveyed.as_str()
            };
            write!(
                f,
                "\n    initial {channel} = {} (configured, {date}",
                i.value
            )?;
            if let Some(t) = i.temperature {
                write!(f, ", liquid at {t} °C")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Expand `{name}` placeholders of `template` from `vars`; unknown ones stay as written
/// (validation refused them).
#[must_use]
pub fn expand(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(len) = rest[open..].find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = &rest[open + 1..open + len];
        match vars.iter().find(|(k, _)| *k == name) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(&rest[open..=open + len]),
        }
        rest = &rest[open + len + 1..];
    }
    out.push_str(rest);
    out
}
