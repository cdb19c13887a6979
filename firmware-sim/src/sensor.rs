//! From a physics channel to what a sensor reports: scaling, noise and resolution.
//!
//! Owns [`SensorKind`] (the noise and resolution of each instrument type, docs/DOMAIN.md
//! §Sensors), [`ChannelRef`] (a scenario's mapping of a device point, JSON sensor or CIGEM field
//! onto a channel of [`crate::physics`]) and [`Reader`], which computes the reading of sample `k`:
//!
//! ```text
//! reading = quantize((gain · channel(t) + offset) · density(t) + σ · N(0,1), resolution)
//! ```
//!
//! `density(t)` is 1 except for a hydrostatic levelling cell given the temperature of its
//! liquid (`liquid_temperature`, itself a mapping): a column of liquid at T reads
//! 1 − [`LIQUID_EXPANSION`]·T of the head it would at 0 °C, the effect Geokon's 4675LV
//! water-density correction removes (docs/DOMAIN.md §Hydrostatic levelling).
//!
//! `N(0,1)` is a seeded Gaussian draw keyed by (seed, device, point) and positioned by `k`
//! ([`crate::signal::gaussian`]), so a reading is a pure function of the scenario, the seed and
//! the sample index. A vendor's "accuracy ±a" is read as two standard deviations (σ = a/2).
//! It does not apply faults ([`crate::fault`]) nor encode registers ([`crate::encode`]).

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::physics::{ChannelId, Physics};
use crate::quantity::Quantity;
use crate::signal::{gaussian, series_id};
use crate::validation::Invalid;

/// Volumetric expansion of a levelling cell's liquid per °C (water; Geokon 4675LV manual's
/// 0.0002, docs/DOMAIN.md §Hydrostatic levelling).
pub const LIQUID_EXPANSION: f64 = 0.0002;

/// Largest `noise` (σ) a mapping may set, in the reading's units (beyond it the signal drowns).
pub const MAX_NOISE: f64 = 1.0e4;

/// Instrument types, each with its noise and resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    /// Hydrostatic levelling cell, mm: resolution 0.01 mm (GB 50911 via docs/DOMAIN.md §Sensors),
    /// σ 0.05 mm (unconfirmed; typical ±0.1 mm).
    StaticLevel,
    /// GNSS static, horizontal axis, mm: ±2 mm → σ 1 mm, resolution 0.1 mm
    /// (docs/DOMAIN.md §Sensors).
    GnssHorizontal,
    /// GNSS static, vertical axis, mm: ±5 mm → σ 2.5 mm, resolution 0.1 mm.
    GnssVertical,
    /// Crack meter, mm: ±0.05 mm → σ 0.025 mm, resolution 0.01 mm.
    CrackMeter,
    /// MEMS tilt meter, degrees: ±0.01° → σ 0.005°, resolution 0.001°.
    TiltMeter,
    /// In-place inclinometer segment, degrees: ±0.5 mm per 10 m (probe class, docs/DOMAIN.md
    /// §Sensors) is 0.0029° → σ 0.0015°, resolution 0.0001°.
    InclinometerSegment,
    /// In-place inclinometer chain output, mm: ±0.5 mm per 10 m → σ 0.25 mm, resolution 0.01 mm.
    DeepDisplacement,
    /// Thermistor, °C: σ 0.05 °C (unconfirmed; typical ±0.1 °C), resolution 0.01 °C.
    Thermistor,
    /// Vibrating-wire piezometer, kPa: ±0.1 % of a 200 kPa range (unconfirmed) → σ 0.1 kPa, resolution 0.01.
    Piezometer,
    /// Tipping-bucket rain gauge, mm: no noise, whole 0.2 mm tips (the reading is floored).
    RainGauge,
    /// No noise, no quantization (derived values, counters).
    Ideal,
}

impl SensorKind {
    /// Standard deviation of the noise, in the reading's units.
    #[must_use]
    pub const fn noise_sigma(self) -> f64 {
        match self {
            Self::StaticLevel => 0.05,
            Self::GnssHorizontal => 1.0,
            Self::GnssVertical => 2.5,
            Self::CrackMeter => 0.025,
            Self::TiltMeter => 0.005,
            Self::InclinometerSegment => 0.0015,
            Self::DeepDisplacement => 0.25,
            Self::Thermistor => 0.05,
            Self::Piezometer => 0.1,
            Self::RainGauge | Self::Ideal => 0.0,
        }
    }

    /// Smallest step of the reading (0 = continuous).
    #[must_use]
    pub const fn resolution(self) -> f64 {
        match self {
            Self::StaticLevel
            | Self::CrackMeter
            | Self::DeepDisplacement
            | Self::Thermistor
            | Self::Piezometer => 0.01,
            Self::GnssHorizontal | Self::GnssVertical => 0.1,
            Self::TiltMeter => 0.001,
            Self::InclinometerSegment => 0.0001,
            Self::RainGauge => 0.2,
            Self::Ideal => 0.0,
        }
    }

    /// The usual instrument for a quantity (a mapping may name another).
    #[must_use]
    pub const fn for_quantity(q: Quantity) -> Self {
        match q {
            Quantity::Settlement | Quantity::Level => Self::StaticLevel,
            Quantity::Displacement => Self::GnssHorizontal,
            Quantity::Crack => Self::CrackMeter,
            Quantity::Tilt => Self::TiltMeter,
            Quantity::Temperature => Self::Thermistor,
            Quantity::Rainfall => Self::RainGauge,
            Quantity::PorePressure | Quantity::Pressure => Self::Piezometer,
            _ => Self::Ideal,
        }
    }
}

impl fmt::Display for SensorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::StaticLevel => "static_level",
            Self::GnssHorizontal => "gnss_horizontal",
            Self::GnssVertical => "gnss_vertical",
            Self::CrackMeter => "crack_meter",
            Self::TiltMeter => "tilt_meter",
            Self::InclinometerSegment => "inclinometer_segment",
            Self::DeepDisplacement => "deep_displacement",
            Self::Thermistor => "thermistor",
            Self::Piezometer => "piezometer",
            Self::RainGauge => "rain_gauge",
            Self::Ideal => "ideal",
        };
        f.write_str(name)
    }
}

/// A mapping as written: `"block-a.A1"` or `{ channel = "block-a.A1", gain = -1.0, ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChannelRef {
    channel: String,
    #[serde(default)]
    gain: Option<f64>,
    #[serde(default)]
    offset: Option<f64>,
    #[serde(default)]
    sensor: Option<SensorKind>,
    #[serde(default)]
    noise: Option<f64>,
    #[serde(default)]
    resolution: Option<f64>,
    /// The temperature of a levelling cell's liquid, a mapping of its own (noise ignored).
    #[serde(default)]
    liquid_temperature: Option<Box<RawMapping>>,
}

/// Accepts the string short form as well as the table.
#[derive(Debug, Clone)]
pub(crate) struct RawMapping(pub RawChannelRef);

impl<'de> Deserialize<'de> for RawMapping {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMapping;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a channel name or a table { channel = \"...\", gain = .., offset = .., sensor = .., noise = .., resolution = .., liquid_temperature = .. }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawMapping, E> {
                Ok(RawMapping(RawChannelRef {
                    channel: v.to_owned(),
                    gain: None,
                    offset: None,
                    sensor: None,
                    noise: None,
                    resolution: None,
                    liquid_temperature: None,
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawMapping, A::Error> {
                RawChannelRef::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawMapping)
            }
        }
        d.deserialize_any(V)
    }
}

/// A validated mapping onto a physics channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRef {
    /// Channel name.
    pub channel: String,
    /// Channel id in the scenario's physics.
    pub id: ChannelId,
    /// Reading = gain · channel + offset (+ noise).
    pub gain: f64,
    /// Reading = gain · channel + offset (+ noise).
    pub offset: f64,
    /// Instrument type.
    pub sensor: SensorKind,
    /// Noise σ, reading units.
    pub noise: f64,
    /// Resolution, reading units (0 = none).
    pub resolution: f64,
    /// A levelling cell's liquid temperature, °C: the reading is scaled by its density.
    pub liquid_temperature: Option<Box<ChannelRef>>,
}

impl ChannelRef {
    /// Validates `raw` at `path` against `physics`; `default_sensor` applies when none is named.
    pub(crate) fn validate(
        path: &str,
        raw: &RawMapping,
        physics: &Physics,
        default_sensor: SensorKind,
    ) -> Result<Self, Invalid> {
        let r = &raw.0;
        let id = physics.channel(&r.channel).ok_or_else(|| {
            let model = r.channel.split('.').next().unwrap_or("");
            let of_model = physics.names_of_model(model);
            let hint = if of_model.is_empty() {
                let models: Vec<&str> = physics
                    .models()
                    .iter()
                    .map(crate::physics::Model::name)
                    .collect();
                format!("no model {model:?} (models: {})", models.join(", "))
            } else {
                format!("model {model:?} has: {}", of_model.join(", "))
            };
            (
                path.to_owned(),
                format!("no channel {:?}; {hint}", r.channel),
            )
        })?;
        let finite = |f: &str, v: f64| {
            if v.is_finite() {
                Ok(v)
            } else {
                Err((format!("{path}.{f}"), "must be finite".to_owned()))
            }
        };
        let gain = finite("gain", r.gain.unwrap_or(1.0))?;
        let offset = finite("offset", r.offset.unwrap_or(0.0))?;
        let sensor = r.sensor.unwrap_or(default_sensor);
        let noise = finite("noise", r.noise.unwrap_or_else(|| sensor.noise_sigma()))?;
        if !(0.0..=MAX_NOISE).contains(&noise) {
            return Err((
                format!("{path}.noise"),
                format!("σ must be within 0-{MAX_NOISE}"),
            ));
        }
        let resolution = finite(
            "resolution",
            r.resolution.unwrap_or_else(|| sensor.resolution()),
        )?;
        if resolution < 0.0 {
            return Err((format!("{path}.resolution"), "must not be negative".into()));
        }
        let liquid_temperature = match &r.liquid_temperature {
            None => None,
            Some(t) => Some(Box::new(Self::validate(
                &format!("{path}.liquid_temperature"),
                t,
                physics,
                SensorKind::Thermistor,
            )?)),
        };
        Ok(Self {
            channel: r.channel.clone(),
            id,
            gain,
            offset,
            sensor,
            noise,
            resolution,
            liquid_temperature,
        })
    }
}

/// Rounds `x` to a multiple of `step` (floors for a rain gauge, which counts whole tips).
#[must_use]
pub fn quantize(x: f64, step: f64, floor: bool) -> f64 {
    if step <= 0.0 || !x.is_finite() {
        return x;
    }
    let n = x / step;
    // A tiny tolerance so 0.6/0.2 = 2.9999999999999996 still counts three tips.
    let n = if floor { (n + 1e-9).floor() } else { n.round() };
    n * step
}

/// The reading of one mapped point of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Reader {
    map: ChannelRef,
    noise_id: u64,
}

impl Reader {
    /// The reader of `device`/`point` following `map`, its noise keyed by `seed`.
    #[must_use]
    pub fn new(map: ChannelRef, seed: u64, device: &str, point: &str) -> Self {
        Self {
            noise_id: series_id(seed, device, point),
            map,
        }
    }

    /// The mapping.
    #[must_use]
    pub fn mapping(&self) -> &ChannelRef {
        &self.map
    }

    /// Reading of sample `k`, taken `t_s` seconds after the scenario started.
    #[must_use]
    pub fn value(&self, physics: &Physics, k: u64, t_s: f64) -> f64 {
        let m = &self.map;
        let mut clean = m.gain * physics.value(m.id, t_s) + m.offset;
        if let Some(t) = &m.liquid_temperature {
            clean *= 1.0 - LIQUID_EXPANSION * (t.gain * physics.value(t.id, t_s) + t.offset);
        }
        let noisy = if m.noise > 0.0 {
            clean + m.noise * gaussian(self.noise_id, k)
        } else {
            clean
        };
        quantize(noisy, m.resolution, m.sensor == SensorKind::RainGauge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rounds_or_floors() {
        assert_eq!(quantize(12.346, 0.01, false), 1235.0 * 0.01);
        assert_eq!(quantize(0.6, 0.2, true), 3.0 * 0.2);
        assert_eq!(quantize(0.59, 0.2, true), 2.0 * 0.2);
        assert_eq!(quantize(1.234, 0.0, false), 1.234);
    }

    #[test]
    fn accuracy_is_two_sigma() {
        // GNSS ±2 mm horizontal, ±5 mm vertical; crack ±0.05 mm; tilt ±0.01°
        // (docs/DOMAIN.md §Sensors).
        assert_eq!(SensorKind::GnssHorizontal.noise_sigma() * 2.0, 2.0);
        assert_eq!(SensorKind::GnssVertical.noise_sigma() * 2.0, 5.0);
        assert_eq!(SensorKind::CrackMeter.noise_sigma() * 2.0, 0.05);
        assert_eq!(SensorKind::TiltMeter.noise_sigma() * 2.0, 0.01);
    }
}
