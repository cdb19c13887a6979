//! The physics behind the readings: foundation settlement, concrete curing and slope movement.
//!
//! Owns [`Physics`], the set of models a scenario declares (`[[settlement]]`, `[[curing]]`,
//! `[[slope]]`), and the flat list of named **channels** they expose (`block-a.A1`,
//! `raft-a.core`, `north.G1.east`, ...). Every channel is a pure function of the model's
//! parameters and the simulated time since the scenario started: no state, no randomness, no
//! integration step, so a test can compare any sample with the closed-form formula and the
//! gateway's analytics can be checked against the exact value. Sensor noise and resolution are
//! added later, per device ([`crate::sensor`]); faults after that ([`crate::fault`]).
//!
//! The models and their formulas live in [`settlement`], [`curing`] and [`slope`]; this module
//! holds the shared kernels and the parsing helpers they use. It knows nothing about devices.

pub mod curing;
pub mod settlement;
pub mod slope;

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use crate::scenario::Invalid;

/// Seconds per day: model time is in days, the clock in seconds.
pub const SECONDS_PER_DAY: f64 = 86_400.0;
/// Hours per day.
pub const HOURS_PER_DAY: f64 = 24.0;

/// Index of a channel in its [`Physics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(usize);

/// One model of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    /// Consolidation settlement of a group of points.
    Settlement(settlement::Settlement),
    /// Hydration heat of one concrete pour.
    Curing(curing::Curing),
    /// A slope creeping, then accelerating toward failure.
    Slope(slope::Slope),
}

impl Model {
    /// The model's name: the first part of its channel names.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Settlement(m) => &m.name,
            Self::Curing(m) => &m.name,
            Self::Slope(m) => &m.name,
        }
    }
}

/// Which quantity of which model a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    Settlement(settlement::Channel),
    Curing(curing::Channel),
    Slope(slope::Channel),
}

#[derive(Debug, Clone, PartialEq)]
struct ChannelDef {
    name: String,
    model: usize,
    local: Local,
}

/// Every model of a scenario and its channels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Physics {
    models: Vec<Model>,
    channels: Vec<ChannelDef>,
    by_name: HashMap<String, ChannelId>,
}

impl Physics {
    /// The physics of `models` (names already checked unique by the scenario).
    #[must_use]
    pub fn new(models: Vec<Model>) -> Self {
        let mut channels = Vec::new();
        for (i, m) in models.iter().enumerate() {
            let named: Vec<(String, Local)> = match m {
                Model::Settlement(s) => s
                    .channels()
                    .into_iter()
                    .map(|(n, c)| (n, Local::Settlement(c)))
                    .collect(),
                Model::Curing(c) => c
                    .channels()
                    .into_iter()
                    .map(|(n, c)| (n, Local::Curing(c)))
                    .collect(),
                Model::Slope(s) => s
                    .channels()
                    .into_iter()
                    .map(|(n, c)| (n, Local::Slope(c)))
                    .collect(),
            };
            for (suffix, local) in named {
                channels.push(ChannelDef {
                    name: format!("{}.{suffix}", m.name()),
                    model: i,
                    local,
                });
            }
        }
        let by_name = channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), ChannelId(i)))
            .collect();
        Self {
            models,
            channels,
            by_name,
        }
    }

    /// True when the scenario declares no model.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The models, in file order (settlement, curing, slope).
    #[must_use]
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// A channel by name.
    #[must_use]
    pub fn channel(&self, name: &str) -> Option<ChannelId> {
        self.by_name.get(name).copied()
    }

    /// Every channel id, in declaration order.
    pub fn channel_ids(&self) -> impl Iterator<Item = ChannelId> {
        (0..self.channels.len()).map(ChannelId)
    }

    /// The name of a channel (`""` for an id of another `Physics`).
    #[must_use]
    pub fn name_of(&self, id: ChannelId) -> &str {
        self.channels.get(id.0).map_or("", |c| c.name.as_str())
    }

    /// The channel names of model `model`, for error messages.
    #[must_use]
    pub fn names_of_model(&self, model: &str) -> Vec<&str> {
        self.channels
            .iter()
            .filter(|c| self.models[c.model].name() == model)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The true value of channel `id` at `t_s` seconds after the scenario started (NaN for an
    /// id of another `Physics`).
    #[must_use]
    pub fn value(&self, id: ChannelId, t_s: f64) -> f64 {
        let Some(def) = self.channels.get(id.0) else {
            return f64::NAN;
        };
        let t_days = t_s / SECONDS_PER_DAY;
        match (&self.models[def.model], def.local) {
            (Model::Settlement(m), Local::Settlement(c)) => m.value(c, t_days),
            (Model::Curing(m), Local::Curing(c)) => m.value(c, t_days),
            (Model::Slope(m), Local::Slope(c)) => m.value(c, t_days),
            // A channel always points at a model of its own kind (built together in `new`).
            _ => f64::NAN,
        }
    }
}

/// Degree of consolidation after time `tau` of a load applied linearly over `ramp`, for a
/// first-order response with time constant `tc` (all in the same unit, `tc > 0`).
///
/// For an instantaneous load the response is `U(τ) = 1 − e^(−τ/T)`, the exponential curve
/// (指数曲线法 `s = s∞(1 − α·e^(−βt))` with α = 1) used to fit and extrapolate settlement
/// records; it matches Terzaghi's one-dimensional average degree of consolidation
/// `U ≈ 1 − (8/π²)·e^(−π²·Tv/4)` beyond U ≈ 60 %. A load ramped over `d` (a storey being built)
/// is the average of that response over the ramp:
/// - `τ ≤ 0`: 0;
/// - `0 < τ ≤ d`: `[τ − T·(1 − e^(−τ/T))] / d`;
/// - `τ > d`: `1 − (T/d)·(e^(−(τ−d)/T) − e^(−τ/T))`;
/// - `d = 0`: `1 − e^(−τ/T)`.
#[must_use]
pub fn ramp_response(tau: f64, ramp: f64, tc: f64) -> f64 {
    if tau <= 0.0 {
        return 0.0;
    }
    if ramp <= 0.0 {
        return 1.0 - (-tau / tc).exp();
    }
    if tau <= ramp {
        (tau - tc * (1.0 - (-tau / tc).exp())) / ramp
    } else {
        1.0 - tc / ramp * ((-(tau - ramp) / tc).exp() - (-tau / tc).exp())
    }
}

/// Rate of [`ramp_response`] (per unit of `tau`).
#[must_use]
pub fn ramp_response_rate(tau: f64, ramp: f64, tc: f64) -> f64 {
    if tau <= 0.0 {
        return 0.0;
    }
    if ramp <= 0.0 {
        return (-tau / tc).exp() / tc;
    }
    if tau <= ramp {
        (1.0 - (-tau / tc).exp()) / ramp
    } else {
        ((-(tau - ramp) / tc).exp() - (-tau / tc).exp()) / ramp
    }
}

/// A humantime duration (`"36h"`, `"14d"`, `"0s"`) as days.
pub(crate) fn days(path: &str, text: &str) -> Result<f64, Invalid> {
    humantime::parse_duration(text)
        .map(|d| d.as_secs_f64() / SECONDS_PER_DAY)
        .map_err(|e| {
            (
                path.to_owned(),
                format!("{text:?}: {e} (write e.g. \"36h\" or \"14d\")"),
            )
        })
}

/// Checks that `value` is finite and within `[lo, hi]`.
pub(crate) fn check_range(
    path: &str,
    value: f64,
    lo: f64,
    hi: f64,
    unit: &str,
) -> Result<f64, Invalid> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        Ok(value)
    } else {
        Err((
            path.to_owned(),
            format!("{value} is outside {lo}-{hi} {unit}"),
        ))
    }
}

/// Model and point names become parts of dotted channel names: letters, digits, '-' and '_'
/// for models; letters, digits and '_' for points (so `a.b.c` splits one way only).
pub(crate) fn check_part(path: &str, name: &str, allow_dash: bool) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || (allow_dash && c == '-'));
    if ok {
        Ok(())
    } else {
        let allowed = if allow_dash {
            "letters, digits, '-' or '_'"
        } else {
            "letters, digits or '_'"
        };
        Err((path.to_owned(), format!("{name:?}: use {allowed}")))
    }
}

/// The raw model tables of a scenario file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModels {
    #[serde(default)]
    pub settlement: Vec<settlement::RawSettlement>,
    #[serde(default)]
    pub curing: Vec<curing::RawCuring>,
    #[serde(default)]
    pub slope: Vec<slope::RawSlope>,
}

/// Validates the model tables into a [`Physics`] (model names unique across kinds).
pub(crate) fn validate(raw: RawModels) -> Result<Physics, Invalid> {
    let mut models = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut claim = |path: String, name: &str| -> Result<(), Invalid> {
        check_part(&path, name, true)?;
        match seen.insert(name.to_owned(), path.clone()) {
            Some(first) => Err((path, format!("model name {name:?} already used at {first}"))),
            None => Ok(()),
        }
    };
    for (i, r) in raw.settlement.into_iter().enumerate() {
        let at = format!("settlement[{i}]");
        claim(format!("{at}.name"), &r.name)?;
        models.push(Model::Settlement(settlement::Settlement::validate(&at, r)?));
    }
    for (i, r) in raw.curing.into_iter().enumerate() {
        let at = format!("curing[{i}]");
        claim(format!("{at}.name"), &r.name)?;
        models.push(Model::Curing(curing::Curing::validate(&at, r)?));
    }
    for (i, r) in raw.slope.into_iter().enumerate() {
        let at = format!("slope[{i}]");
        claim(format!("{at}.name"), &r.name)?;
        models.push(Model::Slope(slope::Slope::validate(&at, r)?));
    }
    Ok(Physics::new(models))
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_response_limits_and_continuity() {
        // Instantaneous load, T = 10: U(10) = 1 − e^-1 = 0.632120558828...
        assert!((ramp_response(10.0, 0.0, 10.0) - 0.632_120_558_828_557_7).abs() < 1e-15);
        // Ramp d = 5, T = 10, τ = 5 (end of the ramp): (5 − 10·(1 − e^-0.5))/5
        // = (5 − 3.934693402873666)/5 = 0.2130613194252668.
        assert!((ramp_response(5.0, 5.0, 10.0) - 0.213_061_319_425_266_8).abs() < 1e-15);
        // Both branches agree at τ = d.
        let below = ramp_response(5.0 - 1e-9, 5.0, 10.0);
        let above = ramp_response(5.0 + 1e-9, 5.0, 10.0);
        assert!((below - above).abs() < 1e-9);
        // Final value 1, nothing before the load.
        assert!((ramp_response(1e4, 5.0, 10.0) - 1.0).abs() < 1e-12);
        assert_eq!(ramp_response(-1.0, 5.0, 10.0), 0.0);
    }

    #[test]
    fn ramp_rate_is_the_derivative() {
        for (tau, d) in [(2.0, 5.0), (7.0, 5.0), (3.0, 0.0)] {
            let h = 1e-6;
            let numeric =
                (ramp_response(tau + h, d, 10.0) - ramp_response(tau - h, d, 10.0)) / (2.0 * h);
            assert!(
                (numeric - ramp_response_rate(tau, d, 10.0)).abs() < 1e-8,
                "{tau} {d}"
            );
        }
    }
}
