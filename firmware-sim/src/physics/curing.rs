//! Hydration heat of a concrete pour: core, surface and ambient temperatures.
//!
//! Owns the `[[curing]]` model. Heat source: the adiabatic temperature rise in the form of
//! GB 50496-2018 appendix B (docs/DOMAIN.md §Curing),
//!
//! ```text
//! T_ad(τ) = T_max · (1 − e^(−m·τ)),   T_max = W·Q / (C·ρ)
//! ```
//!
//! with `W` the binder content (kg/m³), `Q` its heat of hydration (kJ/kg), `C` the specific
//! heat (0.92-1.00 kJ/(kg·°C)), `ρ` the density (kg/m³), `m` the hydration rate (1/d) and `τ`
//! the age since the pour.
//!
//! Core: a lumped body losing heat to the mean ambient `T̄a` at rate `k` (1/d): with
//! `θ = T_core − T̄a`, `dθ/dτ = T_max·m·e^(−mτ) − k·θ`, `θ(0) = T_placing − T̄a`. Closed form:
//!
//! ```text
//! θ(τ) = θ₀·e^(−kτ) + T_max·m/(k − m) · (e^(−mτ) − e^(−kτ))     (k ≠ m; k = m: T_max·m·τ·e^(−mτ))
//! ```
//!
//! With `θ₀ = 0` the core peaks at `τ_peak = ln(k/m)/(k − m)` with `θ_peak = T_max·(m/k)^(k/(k−m))`.
//! Removing the insulation at `τ_r` switches the loss rate to `k_bare`: the same solution restarts
//! from `θ(τ_r)` with the source `T_max·m·e^(−mτ_r)·e^(−m(τ−τ_r))`. The core ignores the
//! day/night cycle: its amplitude decays with depth as `e^(−z/δ)`, `δ = √(2α/ω)` ≈ 0.17 m for
//! concrete (α ≈ 1e-6 m²/s), so it is below 5 % half a metre in.
//!
//! Ambient: `T_a = T̄a + A·sin(2π·(h − 9)/24)`, warmest at 15:00 and coldest at 03:00, `h` the
//! local hour (the scenario's `start_hour` at t = 0, so the cycle does not depend on the wall
//! clock and a seed gives the same run every time).
//!
//! Surface (within 50 mm of the top, GB 50496 §6): between core and air by the thermal coupling
//! `β` of the cover, `T_s = T_a + β·(T_core − T_a)`; `β` drops in one step when the insulation
//! comes off (the blanket is lifted at once; the surface layer follows within hours, which a
//! 10-minute logger sees as a step).
//! Before the pour every embedded sensor reads the air. It does not know about sensors.

use serde::Deserialize;

use super::kernel::{days, HOURS_PER_DAY};
use crate::validation::{check_range, Invalid};

/// Binder content range accepted, kg/m³.
pub const CEMENT_RANGE: (f64, f64) = (50.0, 1000.0);
/// Heat of hydration range accepted, kJ/kg (Portland cements release about 250-500 kJ/kg).
pub const HEAT_RANGE: (f64, f64) = (50.0, 600.0);
/// Specific heat range accepted, kJ/(kg·°C) (GB 50496 appendix B uses 0.92-1.00).
pub const SPECIFIC_HEAT_RANGE: (f64, f64) = (0.5, 1.5);
/// Density range accepted, kg/m³.
pub const DENSITY_RANGE: (f64, f64) = (1500.0, 3000.0);
/// Rate range accepted for `m` and the heat-loss rates, 1/d.
pub const RATE_RANGE: (f64, f64) = (0.01, 10.0);
/// Temperature range accepted for placing and mean ambient, °C.
pub const TEMPERATURE_RANGE: (f64, f64) = (-30.0, 50.0);
/// Largest day/night half-amplitude accepted, °C.
pub const MAX_SWING_C: f64 = 20.0;
/// Default specific heat, kJ/(kg·°C) (middle of GB 50496's 0.92-1.00).
pub const DEFAULT_SPECIFIC_HEAT: f64 = 0.97;
/// Default density of normal concrete, kg/m³.
pub const DEFAULT_DENSITY: f64 = 2400.0;
/// Default local hour at the scenario start (a morning pour).
pub const DEFAULT_START_HOUR: f64 = 8.0;
/// Local hour of the day/night sine's zero crossing on the way up: warmest 6 h later (15:00).
const WARMING_HOUR: f64 = 9.0;
/// Below this `|k − m|` (1/d) the closed form switches to its `k = m` limit.
const DEGENERATE: f64 = 1e-9;

/// `[[curing]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCuring {
    pub name: String,
    cement_kg_m3: f64,
    heat_kj_kg: f64,
    #[serde(default = "default_specific_heat")]
    specific_heat_kj_kg_c: f64,
    #[serde(default = "default_density")]
    density_kg_m3: f64,
    hydration_rate_per_day: f64,
    placing_c: f64,
    ambient_mean_c: f64,
    #[serde(default)]
    ambient_swing_c: f64,
    #[serde(default = "default_start_hour")]
    start_hour: f64,
    #[serde(default)]
    pour_at: Option<String>,
    loss_per_day_insulated: f64,
    #[serde(default)]
    loss_per_day_bare: Option<f64>,
    surface_coupling_insulated: f64,
    #[serde(default)]
    surface_coupling_bare: Option<f64>,
    #[serde(default)]
    insulation_removed: Option<String>,
}

const fn default_specific_heat() -> f64 {
    DEFAULT_SPECIFIC_HEAT
}

const fn default_density() -> f64 {
    DEFAULT_DENSITY
}

const fn default_start_hour() -> f64 {
    DEFAULT_START_HOUR
}

/// A validated pour.
#[derive(Debug, Clone, PartialEq)]
pub struct Curing {
    /// Model name.
    pub name: String,
    /// Adiabatic temperature rise `T_max = W·Q/(C·ρ)`, °C.
    pub t_max: f64,
    /// Hydration rate `m`, 1/d.
    pub m: f64,
    /// Placing temperature, °C.
    pub placing_c: f64,
    /// Mean ambient `T̄a`, °C.
    pub ambient_mean_c: f64,
    /// Day/night half-amplitude `A`, °C.
    pub ambient_swing_c: f64,
    /// Local hour at t = 0.
    pub start_hour: f64,
    /// Pour time since the scenario start, days.
    pub pour_days: f64,
    /// Heat-loss rate under insulation `k`, 1/d.
    pub k_insulated: f64,
    /// Heat-loss rate once bare, 1/d.
    pub k_bare: f64,
    /// Surface coupling under insulation.
    pub beta_insulated: f64,
    /// Surface coupling once bare.
    pub beta_bare: f64,
    /// Insulation removal since the scenario start, days (`None`: never).
    pub removed_days: Option<f64>,
}

/// The channels of a pour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `<model>.core`, °C.
    Core,
    /// `<model>.surface`, °C.
    Surface,
    /// `<model>.ambient`, °C.
    Ambient,
    /// `<model>.adiabatic`: placing temperature plus the adiabatic rise, °C.
    Adiabatic,
    /// `<model>.core_surface`: core − surface, °C (GB 50496 §3.0.4-2 limit 25 °C).
    CoreSurface,
    /// `<model>.surface_ambient`: surface − ambient, °C (§3.0.4-4 limit 20 °C at removal).
    SurfaceAmbient,
    /// `<model>.core_rate`: dT_core/dt, °C/d (negative = cooling; §3.0.4-3 limit 2.0 °C/d).
    CoreRate,
}

/// `T_max·m/(k−m)·(e^(−mτ) − e^(−kτ))` and its derivative: the heat-source part of θ.
fn source(t_max: f64, m: f64, k: f64, tau: f64) -> (f64, f64) {
    let em = (-m * tau).exp();
    if (k - m).abs() < DEGENERATE {
        return (t_max * m * tau * em, t_max * m * em * (1.0 - m * tau));
    }
    let ek = (-k * tau).exp();
    let a = t_max * m / (k - m);
    (a * (em - ek), a * (k * ek - m * em))
}

impl Curing {
    pub(crate) fn validate(at: &str, raw: RawCuring) -> Result<Self, Invalid> {
        let p = |f: &str| format!("{at}.{f}");
        let w = check_range(
            &p("cement_kg_m3"),
            raw.cement_kg_m3,
            CEMENT_RANGE.0,
            CEMENT_RANGE.1,
            "kg/m³",
        )?;
        let q = check_range(
            &p("heat_kj_kg"),
            raw.heat_kj_kg,
            HEAT_RANGE.0,
            HEAT_RANGE.1,
            "kJ/kg",
        )?;
        let c = check_range(
            &p("specific_heat_kj_kg_c"),
            raw.specific_heat_kj_kg_c,
            SPECIFIC_HEAT_RANGE.0,
            SPECIFIC_HEAT_RANGE.1,
            "kJ/(kg·°C)",
        )?;
        let rho = check_range(
            &p("density_kg_m3"),
            raw.density_kg_m3,
            DENSITY_RANGE.0,
            DENSITY_RANGE.1,
            "kg/m³",
        )?;
        let rate = |f: &str, v: f64| check_range(&p(f), v, RATE_RANGE.0, RATE_RANGE.1, "1/d");
        let m = rate("hydration_rate_per_day", raw.hydration_rate_per_day)?;
        let k_insulated = rate("loss_per_day_insulated", raw.loss_per_day_insulated)?;
        let k_bare = match raw.loss_per_day_bare {
            Some(k) => rate("loss_per_day_bare", k)?,
            None => k_insulated,
        };
        let temp =
            |f: &str, v: f64| check_range(&p(f), v, TEMPERATURE_RANGE.0, TEMPERATURE_RANGE.1, "°C");
        let placing_c = temp("placing_c", raw.placing_c)?;
        let ambient_mean_c = temp("ambient_mean_c", raw.ambient_mean_c)?;
        let ambient_swing_c = check_range(
            &p("ambient_swing_c"),
            raw.ambient_swing_c,
            0.0,
            MAX_SWING_C,
            "°C",
        )?;
        let start_hour = check_range(&p("start_hour"), raw.start_hour, 0.0, HOURS_PER_DAY, "h")?;
        let beta = |f: &str, v: f64| check_range(&p(f), v, 0.0, 1.0, "");
        let beta_insulated = beta("surface_coupling_insulated", raw.surface_coupling_insulated)?;
        let beta_bare = match raw.surface_coupling_bare {
            Some(b) => beta("surface_coupling_bare", b)?,
            None => beta_insulated,
        };
        let pour_days = match &raw.pour_at {
            Some(t) => days(&p("pour_at"), t)?,
            None => 0.0,
        };
        let removed_days = match &raw.insulation_removed {
            Some(t) => {
                let d = days(&p("insulation_removed"), t)?;
                if d < pour_days {
                    return Err((
                        p("insulation_removed"),
                        "the insulation cannot come off before the pour".into(),
                    ));
                }
                Some(d)
            }
            None => None,
        };
        Ok(Self {
            name: raw.name,
            t_max: w * q / (c * rho),
            m,
            placing_c,
            ambient_mean_c,
            ambient_swing_c,
            start_hour,
            pour_days,
            k_insulated,
            k_bare,
            beta_insulated,
            beta_bare,
            removed_days,
        })
    }

    pub(crate) fn channels(&self) -> Vec<(String, Channel)> {
        [
            ("core", Channel::Core),
            ("surface", Channel::Surface),
            ("ambient", Channel::Ambient),
            ("adiabatic", Channel::Adiabatic),
            ("core_surface", Channel::CoreSurface),
            ("surface_ambient", Channel::SurfaceAmbient),
            ("core_rate", Channel::CoreRate),
        ]
        .into_iter()
        .map(|(n, c)| (n.to_owned(), c))
        .collect()
    }

    /// Air temperature at `t` days, °C.
    #[must_use]
    pub fn ambient(&self, t: f64) -> f64 {
        let hour = self.start_hour + t * HOURS_PER_DAY;
        self.ambient_mean_c
            + self.ambient_swing_c
                * (std::f64::consts::TAU * (hour - WARMING_HOUR) / HOURS_PER_DAY).sin()
    }

    /// Core minus mean ambient, and its rate (1/d), at age `tau` days (`tau ≥ 0`).
    fn theta(&self, tau: f64) -> (f64, f64) {
        let theta0 = self.placing_c - self.ambient_mean_c;
        let phase1 = |tau: f64| {
            let k = self.k_insulated;
            let (s, ds) = source(self.t_max, self.m, k, tau);
            let decay = (-k * tau).exp();
            (theta0 * decay + s, -k * theta0 * decay + ds)
        };
        match self.removed_days.map(|r| r - self.pour_days) {
            Some(tau_r) if tau > tau_r => {
                let (theta_r, _) = phase1(tau_r);
                let k = self.k_bare;
                let dt = tau - tau_r;
                let scale = (-self.m * tau_r).exp();
                let (s, ds) = source(self.t_max, self.m, k, dt);
                let decay = (-k * dt).exp();
                (
                    theta_r * decay + scale * s,
                    -k * theta_r * decay + scale * ds,
                )
            }
            _ => phase1(tau),
        }
    }

    /// Core temperature at `t` days, °C (the air before the pour).
    #[must_use]
    pub fn core(&self, t: f64) -> f64 {
        let tau = t - self.pour_days;
        if tau < 0.0 {
            return self.ambient(t);
        }
        self.ambient_mean_c + self.theta(tau).0
    }

    /// Surface temperature at `t` days, °C.
    #[must_use]
    pub fn surface(&self, t: f64) -> f64 {
        let air = self.ambient(t);
        if t < self.pour_days {
            return air;
        }
        let beta = match self.removed_days {
            Some(r) if t > r => self.beta_bare,
            _ => self.beta_insulated,
        };
        air + beta * (self.core(t) - air)
    }

    pub(crate) fn value(&self, c: Channel, t: f64) -> f64 {
        let tau = t - self.pour_days;
        match c {
            Channel::Core => self.core(t),
            Channel::Surface => self.surface(t),
            Channel::Ambient => self.ambient(t),
            Channel::Adiabatic => {
                self.placing_c + self.t_max * (1.0 - (-self.m * tau.max(0.0)).exp())
            }
            Channel::CoreSurface => self.core(t) - self.surface(t),
            Channel::SurfaceAmbient => self.surface(t) - self.ambient(t),
            Channel::CoreRate => {
                if tau < 0.0 {
                    // The embedded sensor still reads the air: the air's rate.
                    let h = std::f64::consts::TAU / HOURS_PER_DAY;
                    let hour = self.start_hour + t * HOURS_PER_DAY;
                    self.ambient_swing_c * h * HOURS_PER_DAY * (h * (hour - WARMING_HOUR)).cos()
                } else {
                    self.theta(tau).1
                }
            }
        }
    }
}
