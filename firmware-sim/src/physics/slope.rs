//! A slope creeping, then accelerating toward failure, with the rain that precedes it.
//!
//! Owns the `[[slope]]` model. Along-slide displacement of the sliding mass (mm, reference point
//! with factor 1) and its velocity `v` (mm/d):
//!
//! - creep: `v = v₀` up to the onset of acceleration `t_a` (the constant-velocity stage of Xu's
//!   tangent-angle method, α ≈ 45°, docs/DOMAIN.md §Slope);
//! - acceleration: Fukuzono's inverse-velocity law (Voight's `dv/dt = A·v^α` with α = 2,
//!   docs/DOMAIN.md §Slope), `1/v = A·(t_f − t)`, a straight line reaching zero at the failure time
//!   `t_f`; continuity at `t_a` gives `A = 1/(v₀·(t_f − t_a))`, so `v = v₀·(t_f − t_a)/(t_f − t)`
//!   and `D = v₀·t_a + v₀·(t_f − t_a)·ln((t_f − t_a)/(t_f − t))`;
//! - run-out: once `v` reaches `v_max` (default 0.5 mm/s = 43 200 mm/d, the lower bound of
//!   Cruden & Varnes' "rapid" class, docs/DOMAIN.md §Slope) it stays there, so values stay
//!   finite at and after `t_f`.
//!
//! Rain events (uniform intensity over their duration) give the rain gauge's cumulative total,
//! an optional step of displacement (`c_r` mm per mm of rain, through the ramped first-order
//! response of [`super::ramp_response`] with time constant `T_r`: step-like rainfall movement,
//! which a gateway must not read as critical acceleration, docs/DOMAIN.md §Data quality) and the
//! pore pressure `u = u₀ + Δu`, `dΔu/dt = α·r(t) − Δu/T_d` (`r` the rain intensity): per event
//! `Δu = α·r·T_d·(1 − e^(−τ/T_d))` while it rains, decaying as `e^(−(τ−d)/T_d)` after.
//!
//! Instruments on the same movement:
//! - surface points (GNSS, crack meters, tilt meters): displacement `f·D` along the movement
//!   direction (azimuth φ clockwise from north, plunging δ below horizontal), giving
//!   east `f·D·(cos δ·sin φ + t·cos φ)`, north `f·D·(cos δ·cos φ − t·sin φ)`, up `−f·D·sin δ`,
//!   with `t` a transverse share;
//! - in-place inclinometer chains: segment `k` of length `L` (bottom first) tilts to
//!   `θ_k = asin(sin θ_k,0 + w_k·f·D/L)`, the weights `w_k` spreading the movement over the shear
//!   band (Σ w = 1), so the chain's cumulative displacement `Σ L·(sin θ − sin θ₀)` (docs/DOMAIN.md
//!   §Sensors) is `f·D` again; a segment saturates at the sensor range [`IPI_RANGE_DEG`].
//!
//! It does not know about sensors or devices ([`crate::sensor`], [`crate::nodes`]).

use serde::Deserialize;

use super::kernel::{days, ramp_response, ramp_response_rate, HOURS_PER_DAY};
use crate::validation::{check_part, check_range, Invalid};

/// Default run-out velocity, mm/d: 0.5 mm/s, the lower bound of the "rapid" class (Cruden &
/// Varnes 1996, docs/DOMAIN.md §Slope).
pub const DEFAULT_MAX_VELOCITY_MM_PER_DAY: f64 = 43_200.0;
/// Largest creep velocity accepted, mm/d (5 mm/s, "very rapid").
pub const MAX_VELOCITY_MM_PER_DAY: f64 = 432_000.0;
/// Range of a MEMS in-place inclinometer segment, degrees from vertical (a common vendor range, unconfirmed).
pub const IPI_RANGE_DEG: f64 = 30.0;
/// Longest inclinometer segment accepted, m.
pub const MAX_SEGMENT_M: f64 = 10.0;
/// Largest rain event accepted, mm (GB/T 28592 starts "extraordinary rainstorm" at 250 mm/24 h).
pub const MAX_EVENT_MM: f64 = 1000.0;
/// Default time constant of the rain-induced displacement step, h.
pub const DEFAULT_RAIN_RESPONSE_HOURS: f64 = 12.0;
/// Default decay time of the rain-induced pore-pressure rise, h.
pub const DEFAULT_PORE_DECAY_HOURS: f64 = 48.0;
/// Largest share of the reference displacement a point or chain may take.
pub const MAX_FACTOR: f64 = 10.0;
/// Largest transverse share (|t|): at 1 the point moves as much across as along.
pub const MAX_TRANSVERSE: f64 = 1.0;
/// Largest pore pressure before rain, kPa (500 m of water).
pub const MAX_PORE_KPA: f64 = 5000.0;
/// Largest pore-pressure rise per mm of rain, kPa/mm.
pub const MAX_PORE_KPA_PER_MM: f64 = 100.0;
/// Largest displacement step per mm of rain, mm/mm.
pub const MAX_RAIN_RESPONSE_MM_PER_MM: f64 = 10.0;
/// Longest response or decay time constant, h (over ten years).
pub const MAX_TIME_CONSTANT_HOURS: f64 = 1.0e5;
/// How far the inclinometer weights may sum away from 1.
const WEIGHT_SUM_TOLERANCE: f64 = 1e-6;
/// Millimetres per metre.
const MM_PER_M: f64 = 1000.0;
/// Names a point or chain may not take (model-level channels).
const RESERVED: [&str; 5] = ["disp", "velocity", "rain_total", "rain_rate", "pore"];

/// `[[slope.rain]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRain {
    start: String,
    duration: String,
    total_mm: f64,
}

/// `[[slope.points]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPoint {
    name: String,
    #[serde(default = "one")]
    factor: f64,
    #[serde(default)]
    transverse: f64,
}

/// `[[slope.inclinometers]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChain {
    name: String,
    #[serde(default = "one")]
    factor: f64,
    #[serde(default)]
    transverse: f64,
    segment_m: f64,
    weights: Vec<f64>,
    #[serde(default)]
    initial_deg: Option<Vec<f64>>,
}

const fn one() -> f64 {
    1.0
}

const fn default_max_velocity() -> f64 {
    DEFAULT_MAX_VELOCITY_MM_PER_DAY
}

const fn default_rain_response_hours() -> f64 {
    DEFAULT_RAIN_RESPONSE_HOURS
}

const fn default_pore_decay_hours() -> f64 {
    DEFAULT_PORE_DECAY_HOURS
}

/// `[[slope]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSlope {
    pub name: String,
    creep_mm_per_day: f64,
    #[serde(default)]
    accel_onset: Option<String>,
    #[serde(default)]
    failure_at: Option<String>,
    #[serde(default = "default_max_velocity")]
    max_velocity_mm_per_day: f64,
    #[serde(default)]
    azimuth_deg: f64,
    #[serde(default)]
    dip_deg: f64,
    #[serde(default)]
    rain: Vec<RawRain>,
    #[serde(default)]
    rain_response_mm_per_mm: f64,
    #[serde(default = "default_rain_response_hours")]
    rain_response_hours: f64,
    #[serde(default)]
    pore_base_kpa: f64,
    #[serde(default)]
    pore_kpa_per_mm: f64,
    #[serde(default = "default_pore_decay_hours")]
    pore_decay_hours: f64,
    #[serde(default)]
    points: Vec<RawPoint>,
    #[serde(default)]
    inclinometers: Vec<RawChain>,
}

/// A rain event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rain {
    /// Start, days.
    pub start_days: f64,
    /// Duration, days (> 0).
    pub duration_days: f64,
    /// Total, mm.
    pub total_mm: f64,
}

/// The acceleration stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Failure {
    /// Onset of acceleration `t_a`, days.
    pub onset_days: f64,
    /// Failure time `t_f`, days.
    pub failure_days: f64,
}

/// A surface point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Name.
    pub name: String,
    /// Share `f` of the reference displacement.
    pub factor: f64,
    /// Transverse share `t`.
    pub transverse: f64,
}

/// An in-place inclinometer chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// Name.
    pub name: String,
    /// Share `f` of the reference displacement at its top.
    pub factor: f64,
    /// Transverse share (for the normal-to-slope output).
    pub transverse: f64,
    /// Segment length `L`, m.
    pub segment_m: f64,
    /// Share `w_k` of the movement per segment, bottom first.
    pub weights: Vec<f64>,
    /// `sin θ_k,0` per segment.
    pub initial_sin: Vec<f64>,
}

/// A validated slope.
#[derive(Debug, Clone, PartialEq)]
pub struct Slope {
    /// Model name.
    pub name: String,
    /// Creep velocity `v₀`, mm/d.
    pub creep_mm_per_day: f64,
    /// Acceleration toward failure, if any.
    pub failure: Option<Failure>,
    /// Run-out velocity `v_max`, mm/d.
    pub max_velocity_mm_per_day: f64,
    /// Movement azimuth φ, degrees clockwise from north.
    pub azimuth_deg: f64,
    /// Movement plunge δ below horizontal, degrees.
    pub dip_deg: f64,
    /// Rain events.
    pub rain: Vec<Rain>,
    /// Displacement step `c_r` per mm of rain, mm/mm.
    pub rain_response_mm_per_mm: f64,
    /// Time constant `T_r` of that step, days.
    pub rain_response_days: f64,
    /// Pore pressure before rain `u₀`, kPa.
    pub pore_base_kpa: f64,
    /// Pore pressure rise `α` per mm of rain, kPa/mm.
    pub pore_kpa_per_mm: f64,
    /// Pore pressure decay time `T_d`, days.
    pub pore_decay_days: f64,
    /// Surface points.
    pub points: Vec<Point>,
    /// Inclinometer chains.
    pub chains: Vec<Chain>,
}

/// A surface point's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Along the movement, mm.
    Disp,
    /// East, mm.
    East,
    /// North, mm.
    North,
    /// Up, mm.
    Up,
    /// Horizontal, normal to the movement, mm.
    Transverse,
}

/// The channels of a slope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `<model>.disp`: reference along-slide displacement, mm.
    Disp,
    /// `<model>.velocity`: reference along-slide velocity, mm/d.
    Velocity,
    /// `<model>.rain_total`: cumulative rain, mm.
    RainTotal,
    /// `<model>.rain_rate`: rain intensity, mm/h.
    RainRate,
    /// `<model>.pore`: pore water pressure, kPa.
    Pore,
    /// `<model>.<point>.<disp|east|north|up|transverse>`, mm.
    Point(usize, Axis),
    /// `<model>.<chain>.seg<k>`: segment tilt from vertical, degrees (k = 1 at the bottom).
    Segment(usize, usize),
    /// `<model>.<chain>.top_x`: cumulative along-slide displacement at the top, mm.
    TopX(usize),
    /// `<model>.<chain>.top_y`: cumulative transverse displacement at the top, mm.
    TopY(usize),
}

impl Slope {
    #[allow(clippy::too_many_lines)] // one check per field, in file order
    pub(crate) fn validate(at: &str, raw: RawSlope) -> Result<Self, Invalid> {
        let p = |f: &str| format!("{at}.{f}");
        let creep = check_range(
            &p("creep_mm_per_day"),
            raw.creep_mm_per_day,
            0.0,
            MAX_VELOCITY_MM_PER_DAY,
            "mm/d",
        )?;
        let max_velocity = check_range(
            &p("max_velocity_mm_per_day"),
            raw.max_velocity_mm_per_day,
            f64::MIN_POSITIVE,
            MAX_VELOCITY_MM_PER_DAY,
            "mm/d",
        )?;
        let failure = match (&raw.accel_onset, &raw.failure_at) {
            (None, None) => None,
            (Some(_), None) => {
                return Err((p("failure_at"), "accel_onset needs failure_at".into()))
            }
            (None, Some(_)) => {
                return Err((p("accel_onset"), "failure_at needs accel_onset".into()))
            }
            (Some(a), Some(f)) => {
                let onset_days = days(&p("accel_onset"), a)?;
                let failure_days = days(&p("failure_at"), f)?;
                if failure_days <= onset_days {
                    return Err((p("failure_at"), "must be after accel_onset".into()));
                }
                if creep <= 0.0 {
                    return Err((
                        p("creep_mm_per_day"),
                        "the inverse-velocity stage starts from the creep velocity: it must be positive".into(),
                    ));
                }
                if creep >= max_velocity {
                    return Err((
                        p("max_velocity_mm_per_day"),
                        "must be above creep_mm_per_day".into(),
                    ));
                }
                Some(Failure {
                    onset_days,
                    failure_days,
                })
            }
        };
        let azimuth_deg = check_range(&p("azimuth_deg"), raw.azimuth_deg, 0.0, 360.0, "°")?;
        let dip_deg = check_range(&p("dip_deg"), raw.dip_deg, 0.0, 90.0, "°")?;
        let mut rain = Vec::with_capacity(raw.rain.len());
        for (j, r) in raw.rain.into_iter().enumerate() {
            let rp = |f: &str| format!("{at}.rain[{j}].{f}");
            let duration_days = days(&rp("duration"), &r.duration)?;
            if duration_days <= 0.0 {
                return Err((rp("duration"), "a rain event must last".into()));
            }
            rain.push(Rain {
                start_days: days(&rp("start"), &r.start)?,
                duration_days,
                total_mm: check_range(&rp("total_mm"), r.total_mm, 0.0, MAX_EVENT_MM, "mm")?,
            });
        }
        let hours = |f: &str, v: f64| {
            check_range(&p(f), v, f64::MIN_POSITIVE, MAX_TIME_CONSTANT_HOURS, "h")
                .map(|h| h / HOURS_PER_DAY)
        };
        let rain_response_days = hours("rain_response_hours", raw.rain_response_hours)?;
        let pore_decay_days = hours("pore_decay_hours", raw.pore_decay_hours)?;
        let rain_response = check_range(
            &p("rain_response_mm_per_mm"),
            raw.rain_response_mm_per_mm,
            0.0,
            MAX_RAIN_RESPONSE_MM_PER_MM,
            "mm/mm",
        )?;
        let pore_base_kpa = check_range(
            &p("pore_base_kpa"),
            raw.pore_base_kpa,
            0.0,
            MAX_PORE_KPA,
            "kPa",
        )?;
        let pore_kpa_per_mm = check_range(
            &p("pore_kpa_per_mm"),
            raw.pore_kpa_per_mm,
            0.0,
            MAX_PORE_KPA_PER_MM,
            "kPa/mm",
        )?;

        let mut names: Vec<String> = Vec::new();
        let mut claim = |path: String, name: &str| -> Result<(), Invalid> {
            check_part(&path, name, false)?;
            if RESERVED.contains(&name) {
                return Err((path, format!("{name:?} is reserved for a model channel")));
            }
            if names.iter().any(|n| n == name) {
                return Err((path, format!("{name:?} declared twice in this slope")));
            }
            names.push(name.to_owned());
            Ok(())
        };
        let mut points = Vec::with_capacity(raw.points.len());
        for (j, pt) in raw.points.into_iter().enumerate() {
            let pp = |f: &str| format!("{at}.points[{j}].{f}");
            claim(pp("name"), &pt.name)?;
            points.push(Point {
                factor: check_range(&pp("factor"), pt.factor, 0.0, MAX_FACTOR, "")?,
                transverse: check_range(
                    &pp("transverse"),
                    pt.transverse,
                    -MAX_TRANSVERSE,
                    MAX_TRANSVERSE,
                    "",
                )?,
                name: pt.name,
            });
        }
        let mut chains = Vec::with_capacity(raw.inclinometers.len());
        for (j, c) in raw.inclinometers.into_iter().enumerate() {
            let cp = |f: &str| format!("{at}.inclinometers[{j}].{f}");
            claim(cp("name"), &c.name)?;
            let segment_m = check_range(
                &cp("segment_m"),
                c.segment_m,
                f64::MIN_POSITIVE,
                MAX_SEGMENT_M,
                "m",
            )?;
            if c.weights.is_empty() {
                return Err((cp("weights"), "a chain needs at least one segment".into()));
            }
            for (k, w) in c.weights.iter().enumerate() {
                check_range(&format!("{}[{k}]", cp("weights")), *w, 0.0, 1.0, "")?;
            }
            let sum: f64 = c.weights.iter().sum();
            if (sum - 1.0).abs() > WEIGHT_SUM_TOLERANCE {
                return Err((
                    cp("weights"),
                    format!("the shares of the movement must sum to 1, got {sum}"),
                ));
            }
            let initial_sin = match c.initial_deg {
                None => vec![0.0; c.weights.len()],
                Some(init) => {
                    if init.len() != c.weights.len() {
                        return Err((
                            cp("initial_deg"),
                            format!("{} angles for {} segments", init.len(), c.weights.len()),
                        ));
                    }
                    let mut out = Vec::with_capacity(init.len());
                    for (k, a) in init.iter().enumerate() {
                        let a = check_range(
                            &format!("{}[{k}]", cp("initial_deg")),
                            *a,
                            -IPI_RANGE_DEG,
                            IPI_RANGE_DEG,
                            "°",
                        )?;
                        out.push(a.to_radians().sin());
                    }
                    out
                }
            };
            chains.push(Chain {
                factor: check_range(&cp("factor"), c.factor, 0.0, MAX_FACTOR, "")?,
                transverse: check_range(
                    &cp("transverse"),
                    c.transverse,
                    -MAX_TRANSVERSE,
                    MAX_TRANSVERSE,
                    "",
                )?,
                name: c.name,
                segment_m,
                weights: c.weights,
                initial_sin,
            });
        }
        Ok(Self {
            name: raw.name,
            creep_mm_per_day: creep,
            failure,
            max_velocity_mm_per_day: max_velocity,
            azimuth_deg,
            dip_deg,
            rain,
            rain_response_mm_per_mm: rain_response,
            rain_response_days,
            pore_base_kpa,
            pore_kpa_per_mm,
            pore_decay_days,
            points,
            chains,
        })
    }

    pub(crate) fn channels(&self) -> Vec<(String, Channel)> {
        let mut out: Vec<(String, Channel)> = [
            ("disp", Channel::Disp),
            ("velocity", Channel::Velocity),
            ("rain_total", Channel::RainTotal),
            ("rain_rate", Channel::RainRate),
            ("pore", Channel::Pore),
        ]
        .into_iter()
        .map(|(n, c)| (n.to_owned(), c))
        .collect();
        for (i, p) in self.points.iter().enumerate() {
            for (axis, a) in [
                ("disp", Axis::Disp),
                ("east", Axis::East),
                ("north", Axis::North),
                ("up", Axis::Up),
                ("transverse", Axis::Transverse),
            ] {
                out.push((format!("{}.{axis}", p.name), Channel::Point(i, a)));
            }
        }
        for (i, c) in self.chains.iter().enumerate() {
            for k in 0..c.weights.len() {
                out.push((format!("{}.seg{}", c.name, k + 1), Channel::Segment(i, k)));
            }
            out.push((format!("{}.top_x", c.name), Channel::TopX(i)));
            out.push((format!("{}.top_y", c.name), Channel::TopY(i)));
        }
        out
    }

    /// The time the velocity reaches `v_max` (days), for a slope heading to failure.
    fn run_out_days(&self, f: Failure) -> f64 {
        f.failure_days
            - self.creep_mm_per_day * (f.failure_days - f.onset_days) / self.max_velocity_mm_per_day
    }

    /// Movement of the sliding mass without rain (creep, acceleration, run-out), mm and mm/d.
    fn movement(&self, t: f64) -> (f64, f64) {
        let v0 = self.creep_mm_per_day;
        let t = t.max(0.0);
        let Some(f) = self.failure else {
            return (v0 * t, v0);
        };
        if t <= f.onset_days {
            return (v0 * t, v0);
        }
        let span = f.failure_days - f.onset_days;
        let accel = |t: f64| v0 * f.onset_days + v0 * span * (span / (f.failure_days - t)).ln();
        let cap = self.run_out_days(f);
        if t < cap {
            (accel(t), v0 * span / (f.failure_days - t))
        } else {
            (
                accel(cap) + self.max_velocity_mm_per_day * (t - cap),
                self.max_velocity_mm_per_day,
            )
        }
    }

    /// Reference along-slide displacement `D` at `t` days, mm.
    #[must_use]
    pub fn displacement(&self, t: f64) -> f64 {
        let steps: f64 = self
            .rain
            .iter()
            .map(|r| {
                self.rain_response_mm_per_mm
                    * r.total_mm
                    * ramp_response(t - r.start_days, r.duration_days, self.rain_response_days)
            })
            .sum();
        self.movement(t).0 + steps
    }

    /// Reference along-slide velocity at `t` days, mm/d.
    #[must_use]
    pub fn velocity(&self, t: f64) -> f64 {
        let steps: f64 = self
            .rain
            .iter()
            .map(|r| {
                self.rain_response_mm_per_mm
                    * r.total_mm
                    * ramp_response_rate(t - r.start_days, r.duration_days, self.rain_response_days)
            })
            .sum();
        self.movement(t).1 + steps
    }

    /// Cumulative rain at `t` days, mm.
    #[must_use]
    pub fn rain_total(&self, t: f64) -> f64 {
        self.rain
            .iter()
            .map(|r| r.total_mm * ((t - r.start_days) / r.duration_days).clamp(0.0, 1.0))
            .sum()
    }

    /// Rain intensity at `t` days, mm/h.
    #[must_use]
    pub fn rain_rate(&self, t: f64) -> f64 {
        self.rain
            .iter()
            .filter(|r| t >= r.start_days && t < r.start_days + r.duration_days)
            .map(|r| r.total_mm / (r.duration_days * HOURS_PER_DAY))
            .sum()
    }

    /// Pore water pressure at `t` days, kPa.
    #[must_use]
    pub fn pore(&self, t: f64) -> f64 {
        let td = self.pore_decay_days;
        let rise: f64 = self
            .rain
            .iter()
            .map(|r| {
                let tau = t - r.start_days;
                let d = r.duration_days;
                // α·r·T_d with r = P/d.
                let full = self.pore_kpa_per_mm * r.total_mm * td / d;
                if tau <= 0.0 {
                    0.0
                } else if tau <= d {
                    full * (1.0 - (-tau / td).exp())
                } else {
                    full * (1.0 - (-d / td).exp()) * (-(tau - d) / td).exp()
                }
            })
            .sum();
        self.pore_base_kpa + rise
    }

    pub(crate) fn value(&self, c: Channel, t: f64) -> f64 {
        match c {
            Channel::Disp => self.displacement(t),
            Channel::Velocity => self.velocity(t),
            Channel::RainTotal => self.rain_total(t),
            Channel::RainRate => self.rain_rate(t),
            Channel::Pore => self.pore(t),
            Channel::Point(i, axis) => {
                let Some(p) = self.points.get(i) else {
                    return f64::NAN;
                };
                let d = p.factor * self.displacement(t);
                let (phi, delta) = (self.azimuth_deg.to_radians(), self.dip_deg.to_radians());
                match axis {
                    Axis::Disp => d,
                    Axis::East => d * (delta.cos() * phi.sin() + p.transverse * phi.cos()),
                    Axis::North => d * (delta.cos() * phi.cos() - p.transverse * phi.sin()),
                    Axis::Up => -d * delta.sin(),
                    Axis::Transverse => d * p.transverse,
                }
            }
            Channel::Segment(i, k) => self
                .segment_sin(i, k, t)
                .map_or(f64::NAN, |s| s.asin().to_degrees()),
            Channel::TopX(i) => self.chains.get(i).map_or(f64::NAN, |c| {
                (0..c.weights.len())
                    .filter_map(|k| {
                        self.segment_sin(i, k, t)
                            .map(|s| c.segment_m * MM_PER_M * (s - c.initial_sin[k]))
                    })
                    .sum()
            }),
            Channel::TopY(i) => self
                .chains
                .get(i)
                .map_or(f64::NAN, |c| c.transverse * c.factor * self.displacement(t)),
        }
    }

    /// `sin θ_k` of segment `k` of chain `i`, clamped to the sensor range.
    fn segment_sin(&self, i: usize, k: usize, t: f64) -> Option<f64> {
        let c = self.chains.get(i)?;
        let limit = IPI_RANGE_DEG.to_radians().sin();
        let s = c.initial_sin.get(k)?
            + c.weights.get(k)? * c.factor * self.displacement(t) / (c.segment_m * MM_PER_M);
        Some(s.clamp(-limit, limit))
    }
}
