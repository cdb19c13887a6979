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
//! The models and their formulas live in [`settlement`], [`curing`] and [`slope`]; the shared
//! kernels they use (time units, the ramp response) in `kernel`, below them. This module
//! only gathers the models into channels and validates the model tables as a whole (names
//! unique across kinds); the models do not import it. It knows nothing about devices and
//! nothing about the scenario file around the model tables.

pub mod curing;
mod kernel;
pub mod settlement;
pub mod slope;

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

pub use kernel::{ramp_response, ramp_response_rate, HOURS_PER_DAY, SECONDS_PER_DAY};

use crate::validation::{check_part, Invalid};

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
