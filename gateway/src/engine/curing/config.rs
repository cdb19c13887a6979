//! The `[[mixes]]` and `[[pours]]` sections as written, and their validation into a
//! [`CuringPlan`].
//!
//! Owns the TOML form of a concrete mix (datum temperature, activation energy, strength–maturity
//! curve, design and winter critical strength) and of a pour (placing time and temperature, mix,
//! sensors by role, insulation removal), their defaults and bounds, and the GB 50496-2018 §3.0.4
//! rules each pour brings ([`CuringPlan::rules`], handed to the rule machinery like any
//! `[[alerts.rules]]`). Every problem names its path (`pours[1].mix`) and the fix, all at once.
//! It computes nothing (the parent module does) and does not know which channels exist.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::maturity::StrengthCurve;
use crate::alert::Language;
use crate::config::duration_opt;
use crate::engine::derived::DERIVED_TAG;
use crate::engine::rules::selector::{Selector, SelectorConfig};
use crate::engine::rules::{
    BandConfig, ConfirmConfig, RuleConfig, RuleKind, DEFAULT_PAIR_MAX_SKEW, DEFAULT_RATE_MIN_POINTS,
};
use crate::sources::mqtt::timestamp::parse_rfc3339;

/// Default datum temperature T0, °C: ASTM C1074's working value for Type I cement without
/// admixtures over 0–40 °C (docs/DOMAIN.md §Curing).
pub const DEFAULT_DATUM_C: f64 = 0.0;
/// Datum temperatures accepted, °C: C1074's 0 °C down to the −10 °C of older practice (Saul);
/// any other value is a mix tested for it, which these bounds still cover.
pub const DATUM_RANGE_C: (f64, f64) = (-10.0, 0.0);
/// Default activation energy E, J/mol: the C1074 appendix value commonly quoted for Type I
/// cement (Q = E/R ≈ 4 800 K; docs/DOMAIN.md §Curing).
pub const DEFAULT_ACTIVATION_ENERGY: f64 = 40_000.0;
/// Activation energies accepted, J/mol: published best fits (Schindler 2004; Lee & Hover
/// 2015) lie between about 25 and 65 kJ/mol.
pub const ACTIVATION_ENERGY_RANGE: (f64, f64) = (20_000.0, 80_000.0);
/// Design strengths accepted, MPa (C10 to C100).
pub const DESIGN_STRENGTH_RANGE: (f64, f64) = (10.0, 100.0);
/// Walk-on strength, MPa: no foot traffic or stacked material before 1.2 MPa
/// (GB 50666-2011 §8.5; docs/DOMAIN.md §Curing).
pub const WALK_ON_STRENGTH_MPA: f64 = 1.2;
/// Default window of the cooling rate: GB 50496-2018 §3.0.4-3 limits the cooling per day.
pub const DEFAULT_COOLING_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Shortest cooling window accepted: a slope over less than 6 h follows the day/night swing of
/// the surface layer, not the cooling of the body.
pub const MIN_COOLING_WINDOW: Duration = Duration::from_secs(6 * 3600);
/// GB 50496-2018 §3.0.4-1: temperature rise above the placing temperature ≤ 50 °C.
pub const RISE_LIMIT_C: f64 = 50.0;
/// GB 50496-2018 §3.0.4-2: core − surface ≤ 25 °C.
pub const CORE_SURFACE_LIMIT_C: f64 = 25.0;
/// GB 50496-2018 §3.0.4-3: cooling rate ≤ 2.0 °C/d.
pub const COOLING_RATE_LIMIT_C_PER_D: f64 = 2.0;
/// GB 50496-2018 §3.0.4-4: surface − air ≤ 20 °C once the insulation is removed.
pub const SURFACE_AMBIENT_LIMIT_C: f64 = 20.0;
/// The strip advice's deadband, °C: "do not strip yet" is withdrawn once every surface sensor
/// is this far below [`SURFACE_AMBIENT_LIMIT_C`] (10 % of it; the gateway's choice, so that a
/// surface swinging around the limit with the day does not flip the advice every reading).
pub const STRIP_ADVICE_DEADBAND_C: f64 = 2.0;
/// The four levels of each GB 50496 rule as fractions of its limit: blue at 70 % (the
/// pre-warning of GB 50497 practice), yellow at 80 % (the curing practice's warning point, e.g.
/// 20 °C and 1.6 °C/d), orange at 90 % (midway, [U]), red at the limit (docs/DOMAIN.md §Curing).
/// A pour's `levels` may set other fractions.
pub const LEVEL_FRACTIONS: [f64; 4] = [0.7, 0.8, 0.9, 1.0];
/// Highest level fraction accepted: a red level at 1.5 × the limit already tolerates half as
/// much again as GB 50496 allows; anything above is a typo (a percentage written as 80).
pub const MAX_LEVEL_FRACTION: f64 = 1.5;
/// The tag naming a pour on its series.
pub const POUR_TAG: &str = "pour";
/// The tag naming a sensor's role on its series.
pub const ROLE_TAG: &str = "role";

/// A sensor's place in the pour (GB 50496 §6: surface within 50 mm of the top, centre, bottom).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Centre of the thickness: rise, core − surface, cooling rate, maturity.
    Core,
    /// Within 50 mm of the surface: core − surface, surface − air, maturity.
    Surface,
    /// Near the bottom: maturity.
    Bottom,
    /// The air: surface − air.
    Ambient,
}

impl Role {
    /// Every role, in the order a channel matching several is given the first.
    pub const ALL: [Self; 4] = [Self::Core, Self::Surface, Self::Bottom, Self::Ambient];

    /// The config key and tag value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Core => "core",
            Self::Surface => "surface",
            Self::Bottom => "bottom",
            Self::Ambient => "ambient",
        }
    }

    /// The role whose readings this one's are combined with: the core with the surface
    /// (core − surface), the surface with the air (surface − air; GB 50496-2018 §3.0.4).
    #[must_use]
    pub const fn partner(self) -> Option<Self> {
        match self {
            Self::Core => Some(Self::Surface),
            Self::Surface => Some(Self::Ambient),
            Self::Bottom | Self::Ambient => None,
        }
    }

    /// True for the concrete's own sensors (maturity and strength are theirs).
    #[must_use]
    pub const fn in_concrete(self) -> bool {
        !matches!(self, Self::Ambient)
    }
}

/// A strength–maturity curve as written: `curve = { form = "hyperbolic", su_mpa = 45.0,
/// k_per_h = 0.03, t0_h = 3.0 }` or `{ form = "logarithmic", a_mpa = -20.0, b_mpa = 10.0 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "form", rename_all = "snake_case", deny_unknown_fields)]
pub enum CurveConfig {
    /// `S = a + b·log10(M)`, M the Nurse–Saul maturity in °C·h.
    Logarithmic {
        /// a, MPa.
        a_mpa: f64,
        /// b, MPa per decade of maturity.
        b_mpa: f64,
    },
    /// `S = Su·k(t − t0)/(1 + k(t − t0))`, t the equivalent age at 20 °C in h (ASTM C1074).
    Hyperbolic {
        /// Su, MPa.
        su_mpa: f64,
        /// k, 1/h.
        k_per_h: f64,
        /// t0, h.
        t0_h: f64,
    },
}

/// One `[[mixes]]` entry: a calibrated concrete mix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixConfig {
    /// Unique name, referred to by pours.
    pub name: String,
    /// Design (characteristic cube) strength f_cu,k, MPa (30 for C30).
    pub design_strength_mpa: f64,
    /// Datum temperature T0 of the Nurse–Saul maturity, °C (default 0; −10 allowed).
    #[serde(default)]
    pub datum_temperature: Option<f64>,
    /// Activation energy E of the equivalent age, J/mol (default 40 000).
    #[serde(default)]
    pub activation_energy: Option<f64>,
    /// The strength–maturity curve fitted for this mix (C1074 §8).
    pub curve: CurveConfig,
    /// Winter-work critical strength, MPa (JGJ/T 104-2011: about 30 % of design for Portland
    /// cement, 40 % for slag; the project plan gives it): a milestone when set.
    #[serde(default)]
    pub critical_strength_mpa: Option<f64>,
}

/// The sensors of a pour by role, each a selector as `[[derived]]` blocks use.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PourSensorsConfig {
    /// The centre of the thickness (required).
    #[serde(default)]
    pub core: Option<SelectorConfig>,
    /// Within 50 mm of the surface.
    #[serde(default)]
    pub surface: Option<SelectorConfig>,
    /// Near the bottom.
    #[serde(default)]
    pub bottom: Option<SelectorConfig>,
    /// The air above the pour.
    #[serde(default)]
    pub ambient: Option<SelectorConfig>,
}

/// One `[[pours]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PourConfig {
    /// Unique name: the `pour` and `derived` tag of its series, part of its rule names.
    pub name: String,
    /// The structure element, in words (`"A栋 筏板基础"`): shown in its events.
    pub element: String,
    /// Placing time, RFC 3339 (`"2026-11-30T08:00:00+08:00"`).
    pub placed_at: String,
    /// Placing temperature, °C; when absent, the first good core reading at or after placing.
    #[serde(default)]
    pub placing_temperature: Option<f64>,
    /// The `[[mixes]]` name.
    pub mix: String,
    /// When the insulation came off, RFC 3339 (or later: `gateway pour remove-insulation`).
    #[serde(default)]
    pub insulation_removed_at: Option<String>,
    /// Sensors by role.
    #[serde(default)]
    pub sensors: PourSensorsConfig,
    /// Longest time between the readings of two roles combined (default 10m).
    #[serde(default, with = "duration_opt")]
    pub max_skew: Option<Duration>,
    /// Window of the core's cooling rate (default 24h).
    #[serde(default, with = "duration_opt")]
    pub cooling_window: Option<Duration>,
    /// Confirmation of the pour's GB 50496 rules, as a rule's `confirm` (default 3 readings):
    /// `{ count = 1 }` for a pour read every 4 h by hand (GB 50496-2018 schedule).
    #[serde(default)]
    pub confirm: Option<ConfirmConfig>,
    /// The fractions of each GB 50496 limit at which its four levels fire, a rule's band
    /// without `alarm` (default [`LEVEL_FRACTIONS`]; a key left out keeps its default).
    #[serde(default)]
    pub levels: Option<BandConfig>,
}

/// The fractions blue, yellow, orange, red of a pour's `levels = { blue = 0.6, yellow = 0.8,
/// orange = 0.9, red = 1.0 }` (a rule's band without `alarm`: the alarm is the GB 50496-2018
/// §3.0.4 limit), defaults filled in; each in (0, [`MAX_LEVEL_FRACTION`]], ascending, or the
/// problems at `at`.
fn level_fractions(band: &BandConfig, at: &str, problems: &mut Vec<(String, String)>) -> [f64; 4] {
    if band.alarm.is_some() {
        problems.push((
            format!("{at}.alarm"),
            "the alarm of a pour's levels is the GB 50496 limit of each quantity; remove it and give the fractions".into(),
        ));
    }
    let given = [band.blue, band.yellow, band.orange, band.red];
    let mut f = LEVEL_FRACTIONS;
    for (i, name) in ["blue", "yellow", "orange", "red"].iter().enumerate() {
        if let Some(v) = given[i] {
            if !(v.is_finite() && v > 0.0 && v <= MAX_LEVEL_FRACTION) {
                problems.push((
                    format!("{at}.{name}"),
                    format!("{v} is not a fraction of the limit in (0, {MAX_LEVEL_FRACTION}]; write 0.8 for 80 %"),
                ));
            }
            f[i] = v;
        }
    }
    if f.windows(2).any(|w| w[0] >= w[1]) {
        problems.push((
            at.to_owned(),
            format!("blue {} < yellow {} < orange {} < red {} must ascend (defaults 0.7, 0.8, 0.9, 1.0 where left out)", f[0], f[1], f[2], f[3]),
        ));
    }
    f
}

/// A validated mix.
#[derive(Debug, Clone, PartialEq)]
pub struct MixSpec {
    /// Its name.
    pub name: String,
    /// f_cu,k, MPa.
    pub design_strength: f64,
    /// T0, °C.
    pub datum: f64,
    /// E, J/mol.
    pub activation_energy: f64,
    /// The strength–maturity curve.
    pub curve: StrengthCurve,
    /// Winter critical strength, MPa.
    pub critical_strength: Option<f64>,
}

/// A validated pour.
#[derive(Debug, Clone, PartialEq)]
pub struct PourSpec {
    /// Its name.
    pub name: String,
    /// The structure element.
    pub element: String,
    /// Placing time, ns.
    pub placed_ns: i64,
    /// Configured placing temperature, °C.
    pub placing_c: Option<f64>,
    /// Its mix.
    pub mix: MixSpec,
    /// Configured insulation removal, ns.
    pub insulation_removed_ns: Option<i64>,
    /// Selectors by role, in [`Role::ALL`] order.
    pub sensors: Vec<(Role, Selector)>,
    /// Longest time between combined readings, ns.
    pub max_skew_ns: i64,
    /// Cooling-rate window, ns.
    pub cooling_window_ns: i64,
    /// Least readings in the cooling window.
    pub min_points: u32,
    /// The rules' confirmation: readings and time (`None`: the rules' default).
    pub confirm: Option<(Option<u32>, Option<Duration>)>,
    /// Fractions of each limit at which blue, yellow, orange and red fire.
    pub level_fractions: [f64; 4],
}

/// The validated `[[mixes]]` and `[[pours]]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CuringPlan {
    /// The pours, in declaration order.
    pub pours: Vec<PourSpec>,
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// `value` must lie in `range`, else a problem naming its unit.
fn in_range(
    value: f64,
    range: (f64, f64),
    unit: &str,
    at: String,
    why: &str,
    problems: &mut Vec<(String, String)>,
) {
    if !(value.is_finite() && value >= range.0 && value <= range.1) {
        problems.push((
            at,
            format!(
                "{value} is outside {} to {} {unit}; {why}",
                range.0, range.1
            ),
        ));
    }
}

fn validate_mix(c: &MixConfig, at: &str, problems: &mut Vec<(String, String)>) -> MixSpec {
    in_range(
        c.design_strength_mpa,
        DESIGN_STRENGTH_RANGE,
        "MPa",
        format!("{at}.design_strength_mpa"),
        "write the characteristic cube strength f_cu,k, e.g. 30 for C30",
        problems,
    );
    let datum = c.datum_temperature.unwrap_or(DEFAULT_DATUM_C);
    in_range(
        datum,
        DATUM_RANGE_C,
        "°C",
        format!("{at}.datum_temperature"),
        "ASTM C1074 uses 0 °C (the default), older practice −10 °C; leave it out for 0",
        problems,
    );
    let activation_energy = c.activation_energy.unwrap_or(DEFAULT_ACTIVATION_ENERGY);
    in_range(
        activation_energy,
        ACTIVATION_ENERGY_RANGE,
        "J/mol",
        format!("{at}.activation_energy"),
        "write E in J/mol (C1074 quotes about 40000 for Type I cement), not kJ/mol",
        problems,
    );
    let curve = match c.curve {
        CurveConfig::Logarithmic { a_mpa, b_mpa } => {
            if !a_mpa.is_finite() {
                problems.push((
                    format!("{at}.curve.a_mpa"),
                    "must be a finite number".into(),
                ));
            }
            if !(b_mpa.is_finite() && b_mpa > 0.0) {
                problems.push((
                    format!("{at}.curve.b_mpa"),
                    format!("{b_mpa} must be above 0: strength grows with maturity"),
                ));
            }
            StrengthCurve::Logarithmic { a: a_mpa, b: b_mpa }
        }
        CurveConfig::Hyperbolic {
            su_mpa,
            k_per_h,
            t0_h,
        } => {
            if !(su_mpa.is_finite() && su_mpa > 0.0) {
                problems.push((
                    format!("{at}.curve.su_mpa"),
                    "must be a strength above 0 MPa".into(),
                ));
            }
            if !(k_per_h.is_finite() && k_per_h > 0.0) {
                problems.push((
                    format!("{at}.curve.k_per_h"),
                    "must be a rate above 0 per hour (C1074 annex: k in 1/h of equivalent age)"
                        .into(),
                ));
            }
            if !(t0_h.is_finite() && t0_h >= 0.0) {
                problems.push((
                    format!("{at}.curve.t0_h"),
                    "must be an age of 0 h or more".into(),
                ));
            }
            StrengthCurve::Hyperbolic {
                su: su_mpa,
                k: k_per_h,
                t0: t0_h,
            }
        }
    };
    if let Some(s) = c.critical_strength_mpa {
        if !(s.is_finite() && s > 0.0 && s < c.design_strength_mpa) {
            problems.push((
                format!("{at}.critical_strength_mpa"),
                format!("{s} must lie between 0 and the design strength; JGJ/T 104-2011 takes about 30-40 % of it (the project's winter plan says)"),
            ));
        }
    }
    MixSpec {
        name: c.name.clone(),
        design_strength: c.design_strength_mpa,
        datum,
        activation_energy,
        curve,
        critical_strength: c.critical_strength_mpa,
    }
}

/// A time of the pour: RFC 3339, or a problem at `at`.
fn time(s: &str, at: String, problems: &mut Vec<(String, String)>) -> Option<i64> {
    let t = parse_rfc3339(s);
    if t.is_none() {
        problems.push((
            at,
            format!("\"{s}\" is not a time; write RFC 3339, e.g. \"2026-11-30T08:00:00+08:00\""),
        ));
    }
    t
}

impl CuringPlan {
    /// Nothing is poured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pours.is_empty()
    }

    /// Validate `[[mixes]]` and `[[pours]]`.
    ///
    /// # Errors
    /// Every problem found, as `(path, message)`.
    pub fn from_config(
        mixes: &[MixConfig],
        pours: &[PourConfig],
    ) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut by_name = BTreeMap::new();
        for (i, m) in mixes.iter().enumerate() {
            let at = format!("mixes[{i}]");
            if m.name.trim().is_empty() {
                problems.push((format!("{at}.name"), "must not be empty".into()));
            }
            let spec = validate_mix(m, &at, &mut problems);
            if by_name.insert(m.name.clone(), spec).is_some() {
                problems.push((
                    format!("{at}.name"),
                    format!("\"{}\" is used twice; give each mix its own name", m.name),
                ));
            }
        }
        let mut names = HashSet::new();
        let mut specs = Vec::new();
        for (i, p) in pours.iter().enumerate() {
            let at = format!("pours[{i}]");
            if !is_name(&p.name) {
                problems.push((format!("{at}.name"), format!("\"{}\" must be letters, digits, `-`, `_` or `.` (it is a tag and part of point names)", p.name)));
            }
            if !names.insert(p.name.as_str()) {
                problems.push((
                    format!("{at}.name"),
                    format!("\"{}\" is used twice; give each pour its own name", p.name),
                ));
            }
            if p.element.trim().is_empty() {
                problems.push((
                    format!("{at}.element"),
                    "must not be empty; name the structure element, e.g. \"A栋 筏板基础\"".into(),
                ));
            }
            let mix = by_name.get(&p.mix).cloned();
            if mix.is_none() {
                let known: Vec<&str> = by_name.keys().map(String::as_str).collect();
                problems.push((
                    format!("{at}.mix"),
                    if known.is_empty() {
                        format!("unknown mix \"{}\": add a [[mixes]] entry with that name (its curve, design strength, T0 and E)", p.mix)
                    } else {
                        format!("unknown mix \"{}\"; the [[mixes]] are {known:?}", p.mix)
                    },
                ));
            }
            let placed = time(&p.placed_at, format!("{at}.placed_at"), &mut problems);
            if let Some(t) = p.placing_temperature {
                // GB 50496 §5: placing temperature 5-30 °C; a value outside -10..50 is a typo.
                in_range(
                    t,
                    (-10.0, 50.0),
                    "°C",
                    format!("{at}.placing_temperature"),
                    "write the concrete's temperature at placing in °C, or leave it out to take the first core reading",
                    &mut problems,
                );
            }
            let removed = p
                .insulation_removed_at
                .as_deref()
                .and_then(|s| time(s, format!("{at}.insulation_removed_at"), &mut problems));
            if let (Some(pl), Some(r)) = (placed, removed) {
                if r < pl {
                    problems.push((
                        format!("{at}.insulation_removed_at"),
                        "is before placed_at: the insulation cannot come off before the pour"
                            .into(),
                    ));
                }
            }
            let mut sensors = Vec::new();
            let s = &p.sensors;
            for (role, sel) in [
                (Role::Core, &s.core),
                (Role::Surface, &s.surface),
                (Role::Bottom, &s.bottom),
                (Role::Ambient, &s.ambient),
            ] {
                if let Some(sel) = sel {
                    let path = format!("{at}.sensors.{}", role.as_str());
                    sensors.push((role, sel.validate(&path, &mut problems)));
                }
            }
            if s.core.is_none() {
                problems.push((format!("{at}.sensors.core"), "missing: a pour needs its core sensor(s), e.g. sensors.core = { channel = \"raft-a-therm/t01\" }".into()));
            }
            let cooling = p.cooling_window.unwrap_or(DEFAULT_COOLING_WINDOW);
            if cooling < MIN_COOLING_WINDOW {
                problems.push((
                    format!("{at}.cooling_window"),
                    format!("{cooling:?} is shorter than {MIN_COOLING_WINDOW:?}; GB 50496 §3.0.4-3 limits the cooling per day, leave it out for 24h"),
                ));
            }
            if p.confirm.as_ref().is_some_and(|c| c.count == Some(0)) {
                problems.push((
                    format!("{at}.confirm.count"),
                    "must be at least 1 reading".into(),
                ));
            }
            let level_fractions = level_fractions(
                &p.levels.clone().unwrap_or_default(),
                &format!("{at}.levels"),
                &mut problems,
            );
            let max_skew = p.max_skew.unwrap_or(DEFAULT_PAIR_MAX_SKEW);
            if max_skew.is_zero() {
                problems.push((format!("{at}.max_skew"), "must be longer than 0s".into()));
            }
            if let (Some(mix), Some(placed_ns)) = (mix, placed) {
                specs.push(PourSpec {
                    name: p.name.clone(),
                    element: p.element.clone(),
                    placed_ns,
                    placing_c: p.placing_temperature,
                    mix,
                    insulation_removed_ns: removed,
                    sensors,
                    max_skew_ns: ns(max_skew),
                    cooling_window_ns: ns(cooling),
                    min_points: DEFAULT_RATE_MIN_POINTS,
                    confirm: p.confirm.as_ref().map(|c| (c.count, c.duration)),
                    level_fractions,
                });
            }
        }
        if problems.is_empty() {
            Ok(Self { pours: specs })
        } else {
            Err(problems)
        }
    }

    /// The GB 50496-2018 §3.0.4 rules of every pour, four levels each (the pour's `levels`,
    /// by default [`LEVEL_FRACTIONS`] of the limit), on the pour's derived series: `<pour>/rise`, `<pour>/core-surface`,
    /// `<pour>/cooling-rate`, `<pour>/surface-ambient`. Labels in `language`.
    #[must_use]
    pub fn rules(&self, language: Language) -> Vec<RuleConfig> {
        let mut rules = Vec::new();
        for p in &self.pours {
            for series in [
                Series::Rise,
                Series::CoreSurface,
                Series::CoolingRate,
                Series::SurfaceAmbient,
            ] {
                let Some(limit) = series.limit() else {
                    continue;
                };
                let label = series.label(language);
                let [blue, yellow, orange, red] = p.level_fractions.map(Some);
                let mut tags = BTreeMap::new();
                tags.insert(DERIVED_TAG.to_owned(), p.name.clone());
                rules.push(RuleConfig {
                    name: format!("{}/{}", p.name, series.as_str()),
                    kind: RuleKind::Absolute,
                    label: label.map(str::to_owned),
                    select: Some(SelectorConfig {
                        point: Some(format!("*.{}", series.as_str())),
                        tags,
                        ..SelectorConfig::default()
                    }),
                    pairs: Vec::new(),
                    upper: Some(BandConfig {
                        alarm: Some(limit),
                        blue,
                        yellow,
                        orange,
                        red,
                    }),
                    lower: None,
                    confirm: p
                        .confirm
                        .map(|(count, duration)| ConfirmConfig { count, duration }),
                    clear: None,
                    overrides: Vec::new(),
                    baseline: None,
                    window: None,
                    per: None,
                    min_points: None,
                    min_span: None,
                    abs: None,
                    max_skew: None,
                    unit: None,
                    after: None,
                    scope: None,
                    level: None,
                });
            }
        }
        rules
    }
}

impl std::fmt::Display for PourSpec {
    /// One pour for `gateway check`: mix, curve, roles, series and milestones.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.mix;
        let curve = match m.curve {
            StrengthCurve::Logarithmic { a, b } => format!("S = {a} + {b}·log10(M)"),
            StrengthCurve::Hyperbolic { su, k, t0 } => {
                format!("S = {su}·{k}(te − {t0})/(1 + {k}(te − {t0}))")
            }
        };
        write!(
            f,
            "  {} ({}): mix {} (f_cu,k {} MPa, T0 {} °C, E {} J/mol, {curve}), placed {}, placing {}",
            self.name,
            self.element,
            m.name,
            m.design_strength,
            m.datum,
            m.activation_energy,
            crate::engine::derived::initial::format_ts(self.placed_ns),
            self.placing_c
                .map_or_else(|| "first core reading".to_owned(), |t| format!("{t} °C")),
        )?;
        let roles: Vec<&str> = self.sensors.iter().map(|(r, _)| r.as_str()).collect();
        write!(f, "\n    sensors: {}", roles.join(", "))?;
        write!(
            f,
            "\n    series <point>.{{rise, core-surface, cooling-rate, surface-ambient, surface-ambient-covered, maturity, equivalent-age, strength, strength-share}}; rules {0}/rise ≤ {RISE_LIMIT_C} °C, {0}/core-surface ≤ {CORE_SURFACE_LIMIT_C} °C, {0}/cooling-rate ≤ {COOLING_RATE_LIMIT_C_PER_D} °C/d, {0}/surface-ambient ≤ {SURFACE_AMBIENT_LIMIT_C} °C (GB 50496-2018 §3.0.4)",
            self.name
        )?;
        let [b, y, o, r] = self.level_fractions;
        write!(
            f,
            "\n    levels: blue {b}, yellow {y}, orange {o}, red {r} × each limit"
        )?;
        write!(
            f,
            "\n    milestones (weakest sensor): {WALK_ON_STRENGTH_MPA} MPa, 50/75/100 % of {} MPa",
            m.design_strength
        )?;
        if let Some(c) = m.critical_strength {
            write!(f, ", winter critical {c} MPa")?;
        }
        Ok(())
    }
}

/// A name usable as a tag value and in point names.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The series a pour derives. Closed set: each is a point suffix `<sensor point>.<series>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Series {
    /// Core − placing temperature, °C (§3.0.4-1).
    Rise,
    /// Core − surface, °C (§3.0.4-2).
    CoreSurface,
    /// Cooling of the core, °C/d, positive when cooling (§3.0.4-3).
    CoolingRate,
    /// Surface − air once the insulation is off, °C (§3.0.4-4).
    SurfaceAmbient,
    /// Surface − air while the insulation is on, °C: what stripping now would expose
    /// (§3.0.4-4 advice, [`STRIP_ADVICE_DEADBAND_C`]).
    SurfaceAmbientCovered,
    /// Nurse–Saul maturity, °C·h.
    Maturity,
    /// Equivalent age at 20 °C, h.
    EquivalentAge,
    /// In-place strength, MPa.
    Strength,
    /// In-place strength as a share of the design strength, %.
    StrengthShare,
}

impl Series {
    /// Every series, in [`Series::index`] order.
    pub const ALL: [Self; 9] = [
        Self::Rise,
        Self::CoreSurface,
        Self::CoolingRate,
        Self::SurfaceAmbient,
        Self::SurfaceAmbientCovered,
        Self::Maturity,
        Self::EquivalentAge,
        Self::Strength,
        Self::StrengthShare,
    ];

    /// Position in [`Series::ALL`] (`Series::ALL[s.index()] == s`).
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Self::Rise => 0,
            Self::CoreSurface => 1,
            Self::CoolingRate => 2,
            Self::SurfaceAmbient => 3,
            Self::SurfaceAmbientCovered => 4,
            Self::Maturity => 5,
            Self::EquivalentAge => 6,
            Self::Strength => 7,
            Self::StrengthShare => 8,
        }
    }

    /// The point suffix.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rise => "rise",
            Self::CoreSurface => "core-surface",
            Self::CoolingRate => "cooling-rate",
            Self::SurfaceAmbient => "surface-ambient",
            Self::SurfaceAmbientCovered => "surface-ambient-covered",
            Self::Maturity => "maturity",
            Self::EquivalentAge => "equivalent-age",
            Self::Strength => "strength",
            Self::StrengthShare => "strength-share",
        }
    }

    /// The GB 50496-2018 §3.0.4 limit, for the four rule-bearing series.
    #[must_use]
    pub const fn limit(self) -> Option<f64> {
        match self {
            Self::Rise => Some(RISE_LIMIT_C),
            Self::CoreSurface => Some(CORE_SURFACE_LIMIT_C),
            Self::CoolingRate => Some(COOLING_RATE_LIMIT_C_PER_D),
            Self::SurfaceAmbient => Some(SURFACE_AMBIENT_LIMIT_C),
            _ => None,
        }
    }

    /// The rule's wording of the quantity (GB 50496 terms).
    const fn label(self, language: Language) -> Option<&'static str> {
        match (language, self) {
            (Language::Zh, Self::Rise) => Some("温升值"),
            (Language::Zh, Self::CoreSurface) => Some("里表温差"),
            (Language::Zh, Self::CoolingRate) => Some("降温速率"),
            (Language::Zh, Self::SurfaceAmbient) => Some("表面与大气温差"),
            (Language::En, Self::Rise) => Some("temperature rise above placing"),
            (Language::En, Self::CoreSurface) => Some("core-surface difference"),
            (Language::En, Self::CoolingRate) => Some("cooling rate"),
            (Language::En, Self::SurfaceAmbient) => Some("surface-air difference"),
            _ => None,
        }
    }
}
