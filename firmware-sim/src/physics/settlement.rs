//! Foundation settlement of a group of points under construction load steps.
//!
//! Owns the `[[settlement]]` model. Each load step `i` (a storey, a fill layer) starts at `tᵢ`,
//! is applied linearly over `dᵢ` and would, on its own, settle a reference point by `Sᵢ` mm once
//! consolidation is complete. Point `p` settles (mm, positive = down)
//!
//! ```text
//! s_p(t) = f_p · Σᵢ Sᵢ · U(t − tᵢ; dᵢ, T)  +  c_p · max(0, t − t_c,p)
//! ```
//!
//! where `U` is the ramped exponential degree of consolidation of
//! [`super::ramp_response`] with the model's consolidation time constant `T` (days), `f_p` the
//! point's compressibility factor (uneven ground: differential settlement) and `c_p` an optional
//! secondary-compression creep in mm/d from `t_c,p` on ("one corner keeps sinking": its rate
//! never falls below `c_p`, so it never meets the 0.01-0.04 mm/d stability rule of JGJ 8-2016
//! §7.1.5, docs/DOMAIN.md §Settlement). Without creep the final settlement is `f_p · Σ Sᵢ`.
//!
//! Derived channels for each neighbour pair `(a, b)` at distance `L` (from the points' plan
//! coordinates): the differential settlement `s_a − s_b` (mm), the tilt ratio
//! `(s_a − s_b)/L` as GB 50007-2011 Table 5.3.4 states it (docs/DOMAIN.md §Settlement), and that
//! tilt as an angle in degrees. It does not know about sensors or registers.

use serde::Deserialize;

use super::kernel::{days, ramp_response, ramp_response_rate};
use crate::validation::{check_part, check_range, Invalid};

/// Longest consolidation time constant accepted: ten years (a larger value is almost certainly
/// seconds or hours typed as days).
pub const MAX_CONSOLIDATION_DAYS: f64 = 3650.0;
/// Largest settlement of one load step accepted, mm (GB 50007 caps the mean settlement of a
/// simple high-rise at 200 mm, docs/DOMAIN.md §Settlement; a resettlement block is far below).
pub const MAX_STEP_MM: f64 = 500.0;
/// Range of a point's compressibility factor.
pub const FACTOR_RANGE: (f64, f64) = (0.0, 10.0);
/// Largest creep rate accepted, mm/d.
pub const MAX_CREEP_MM_PER_DAY: f64 = 10.0;
/// Millimetres per metre.
const MM_PER_M: f64 = 1000.0;
/// Channel names the points may not take (they would clash with the pair channels).
const RESERVED: [&str; 3] = ["diff", "tilt", "tilt_deg"];

/// `[[settlement.points]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPoint {
    name: String,
    x_m: f64,
    y_m: f64,
    #[serde(default = "one")]
    factor: f64,
    #[serde(default)]
    creep_mm_per_day: f64,
    #[serde(default)]
    creep_from: Option<String>,
}

const fn one() -> f64 {
    1.0
}

/// `[[settlement.loads]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLoad {
    at: String,
    #[serde(default)]
    ramp: Option<String>,
    settlement_mm: f64,
}

/// `[[settlement]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSettlement {
    pub name: String,
    consolidation_days: f64,
    points: Vec<RawPoint>,
    loads: Vec<RawLoad>,
    #[serde(default)]
    pairs: Option<Vec<[String; 2]>>,
}

/// A settlement point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Name (channel `<model>.<name>`).
    pub name: String,
    /// Plan position east, m.
    pub x_m: f64,
    /// Plan position north, m.
    pub y_m: f64,
    /// Compressibility factor `f_p`.
    pub factor: f64,
    /// Creep `c_p`, mm/d.
    pub creep_mm_per_day: f64,
    /// Creep start `t_c,p`, days.
    pub creep_from_days: f64,
}

/// A construction load step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Start `tᵢ`, days.
    pub at_days: f64,
    /// Ramp `dᵢ`, days.
    pub ramp_days: f64,
    /// Final settlement `Sᵢ` of a point with factor 1, mm.
    pub settlement_mm: f64,
}

/// A neighbour pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// First point (index).
    pub a: usize,
    /// Second point (index).
    pub b: usize,
    /// Plan distance, m.
    pub distance_m: f64,
}

/// A validated settlement model.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// Model name.
    pub name: String,
    /// Consolidation time constant `T`, days.
    pub consolidation_days: f64,
    /// Points.
    pub points: Vec<Point>,
    /// Load steps.
    pub loads: Vec<Load>,
    /// Neighbour pairs.
    pub pairs: Vec<Pair>,
}

/// The channels of a settlement model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `<model>.<point>`: settlement, mm.
    Point(usize),
    /// `<model>.<point>.rate`: settlement rate, mm/d.
    Rate(usize),
    /// `<model>.diff.<a>.<b>`: `s_a − s_b`, mm.
    Diff(usize),
    /// `<model>.tilt.<a>.<b>`: `(s_a − s_b)/L`, dimensionless.
    Tilt(usize),
    /// `<model>.tilt_deg.<a>.<b>`: `atan((s_a − s_b)/L)`, degrees.
    TiltDeg(usize),
}

impl Settlement {
    pub(crate) fn validate(at: &str, raw: RawSettlement) -> Result<Self, Invalid> {
        let consolidation_days = check_range(
            &format!("{at}.consolidation_days"),
            raw.consolidation_days,
            f64::MIN_POSITIVE,
            MAX_CONSOLIDATION_DAYS,
            "days",
        )?;
        if raw.points.is_empty() {
            return Err((
                format!("{at}.points"),
                "a settlement model needs at least one point".into(),
            ));
        }
        if raw.loads.is_empty() {
            return Err((
                format!("{at}.loads"),
                "a settlement model needs at least one load step".into(),
            ));
        }
        let mut points: Vec<Point> = Vec::with_capacity(raw.points.len());
        for (j, p) in raw.points.into_iter().enumerate() {
            let pat = |f: &str| format!("{at}.points[{j}].{f}");
            check_part(&pat("name"), &p.name, false)?;
            if RESERVED.contains(&p.name.as_str()) {
                return Err((
                    pat("name"),
                    format!("{:?} is reserved for the pair channels", p.name),
                ));
            }
            if points.iter().any(|q| q.name == p.name) {
                return Err((pat("name"), format!("point {:?} declared twice", p.name)));
            }
            for (f, v) in [("x_m", p.x_m), ("y_m", p.y_m)] {
                if !v.is_finite() {
                    return Err((pat(f), "must be finite".into()));
                }
            }
            check_range(&pat("factor"), p.factor, FACTOR_RANGE.0, FACTOR_RANGE.1, "")?;
            check_range(
                &pat("creep_mm_per_day"),
                p.creep_mm_per_day,
                0.0,
                MAX_CREEP_MM_PER_DAY,
                "mm/d",
            )?;
            let creep_from_days = match &p.creep_from {
                Some(t) => days(&pat("creep_from"), t)?,
                None => 0.0,
            };
            points.push(Point {
                name: p.name,
                x_m: p.x_m,
                y_m: p.y_m,
                factor: p.factor,
                creep_mm_per_day: p.creep_mm_per_day,
                creep_from_days,
            });
        }
        let mut loads = Vec::with_capacity(raw.loads.len());
        for (j, l) in raw.loads.into_iter().enumerate() {
            let lat = |f: &str| format!("{at}.loads[{j}].{f}");
            loads.push(Load {
                at_days: days(&lat("at"), &l.at)?,
                ramp_days: match &l.ramp {
                    Some(r) => days(&lat("ramp"), r)?,
                    None => 0.0,
                },
                settlement_mm: check_range(
                    &lat("settlement_mm"),
                    l.settlement_mm,
                    0.0,
                    MAX_STEP_MM,
                    "mm",
                )?,
            });
        }
        let index = |path: String, name: &str| {
            points.iter().position(|p| p.name == name).ok_or_else(|| {
                let known: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
                (
                    path,
                    format!("no point {name:?} (have: {})", known.join(", ")),
                )
            })
        };
        let named: Vec<(usize, usize, String)> = match raw.pairs {
            // Default: consecutive points in file order are neighbours (a walk around the block).
            None => (1..points.len())
                .map(|j| (j - 1, j, format!("{at}.points[{j}]")))
                .collect(),
            Some(pairs) => {
                let mut out = Vec::with_capacity(pairs.len());
                for (j, [a, b]) in pairs.iter().enumerate() {
                    let path = format!("{at}.pairs[{j}]");
                    let ia = index(path.clone(), a)?;
                    let ib = index(path.clone(), b)?;
                    if ia == ib {
                        return Err((
                            path,
                            format!("a pair needs two different points, got {a:?} twice"),
                        ));
                    }
                    out.push((ia, ib, path));
                }
                out
            }
        };
        let mut pairs = Vec::with_capacity(named.len());
        for (a, b, path) in named {
            let (pa, pb) = (&points[a], &points[b]);
            let distance_m = (pa.x_m - pb.x_m).hypot(pa.y_m - pb.y_m);
            if distance_m <= 0.0 {
                return Err((
                    path,
                    format!(
                        "points {:?} and {:?} are at the same position",
                        pa.name, pb.name
                    ),
                ));
            }
            pairs.push(Pair { a, b, distance_m });
        }
        Ok(Self {
            name: raw.name,
            consolidation_days,
            points,
            loads,
            pairs,
        })
    }

    pub(crate) fn channels(&self) -> Vec<(String, Channel)> {
        let mut out = Vec::new();
        for (i, p) in self.points.iter().enumerate() {
            out.push((p.name.clone(), Channel::Point(i)));
            out.push((format!("{}.rate", p.name), Channel::Rate(i)));
        }
        for (i, pair) in self.pairs.iter().enumerate() {
            let ab = format!("{}.{}", self.points[pair.a].name, self.points[pair.b].name);
            out.push((format!("diff.{ab}"), Channel::Diff(i)));
            out.push((format!("tilt.{ab}"), Channel::Tilt(i)));
            out.push((format!("tilt_deg.{ab}"), Channel::TiltDeg(i)));
        }
        out
    }

    /// Settlement of point `p` at `t` days, mm.
    #[must_use]
    pub fn settlement(&self, p: usize, t: f64) -> f64 {
        let Some(point) = self.points.get(p) else {
            return f64::NAN;
        };
        let consolidation: f64 = self
            .loads
            .iter()
            .map(|l| {
                l.settlement_mm * ramp_response(t - l.at_days, l.ramp_days, self.consolidation_days)
            })
            .sum();
        point.factor * consolidation + point.creep_mm_per_day * (t - point.creep_from_days).max(0.0)
    }

    /// Settlement rate of point `p` at `t` days, mm/d.
    #[must_use]
    pub fn rate(&self, p: usize, t: f64) -> f64 {
        let Some(point) = self.points.get(p) else {
            return f64::NAN;
        };
        let consolidation: f64 = self
            .loads
            .iter()
            .map(|l| {
                l.settlement_mm
                    * ramp_response_rate(t - l.at_days, l.ramp_days, self.consolidation_days)
            })
            .sum();
        let creep = if t > point.creep_from_days {
            point.creep_mm_per_day
        } else {
            0.0
        };
        point.factor * consolidation + creep
    }

    /// Final consolidation settlement of point `p` (creep excluded), mm: `f_p · Σ Sᵢ`.
    #[must_use]
    pub fn final_settlement(&self, p: usize) -> f64 {
        self.points.get(p).map_or(f64::NAN, |pt| {
            pt.factor * self.loads.iter().map(|l| l.settlement_mm).sum::<f64>()
        })
    }

    pub(crate) fn value(&self, c: Channel, t: f64) -> f64 {
        let diff = |i: usize| {
            self.pairs.get(i).map_or((f64::NAN, 1.0), |p| {
                (
                    self.settlement(p.a, t) - self.settlement(p.b, t),
                    p.distance_m,
                )
            })
        };
        match c {
            Channel::Point(p) => self.settlement(p, t),
            Channel::Rate(p) => self.rate(p, t),
            Channel::Diff(i) => diff(i).0,
            Channel::Tilt(i) => {
                let (d, l) = diff(i);
                d / (l * MM_PER_M)
            }
            Channel::TiltDeg(i) => {
                let (d, l) = diff(i);
                (d / (l * MM_PER_M)).atan().to_degrees()
            }
        }
    }
}
