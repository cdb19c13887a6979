//! Physical quantities and the plausible behaviour of each.
//!
//! Owns the simulator's [`Quantity`] vocabulary (the same snake_case names the profile files
//! use) and the [`Behaviour`] each one gets by default: ranges, slow drift, periodic swing and
//! noise in engineering units. It does not draw random numbers ([`crate::signal`]) nor encode
//! registers ([`crate::encode`]).

use std::fmt;

use serde::Deserialize;

/// What a point or sensor measures (names as in `config/profiles/*.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Vertical settlement, mm.
    Settlement,
    /// Hydrostatic head / liquid level, mm.
    Level,
    /// Displacement, mm.
    Displacement,
    /// Crack opening, mm.
    Crack,
    /// Tilt, degrees.
    Tilt,
    /// Temperature, °C.
    Temperature,
    /// Relative humidity or soil moisture, %.
    Humidity,
    /// Rainfall, mm.
    Rainfall,
    /// Pore water pressure, kPa.
    PorePressure,
    /// Earth pressure or load, kPa.
    Pressure,
    /// Acceleration, mg.
    Acceleration,
    /// Vibration amplitude, mm.
    Vibration,
    /// Strain, µε.
    Strain,
    /// Vibrating-wire frequency, Hz.
    Frequency,
    /// Resistance, Ω (a thermistor read raw).
    Resistance,
    /// Supply, battery or solar voltage, V.
    Voltage,
    /// Radio signal strength, dBm.
    Signal,
    /// A status word or fault flag.
    Status,
    /// Anything else; simulated as a counter.
    Other,
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Settlement => "settlement",
            Self::Level => "level",
            Self::Displacement => "displacement",
            Self::Crack => "crack",
            Self::Tilt => "tilt",
            Self::Temperature => "temperature",
            Self::Humidity => "humidity",
            Self::Rainfall => "rainfall",
            Self::PorePressure => "pore_pressure",
            Self::Pressure => "pressure",
            Self::Acceleration => "acceleration",
            Self::Vibration => "vibration",
            Self::Strain => "strain",
            Self::Frequency => "frequency",
            Self::Resistance => "resistance",
            Self::Voltage => "voltage",
            Self::Signal => "signal",
            Self::Status => "status",
            Self::Other => "other",
        };
        f.write_str(name)
    }
}

/// A closed interval `[lo, hi]` in engineering units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

const fn r(lo: f64, hi: f64) -> Range {
    Range { lo, hi }
}

/// A slowly wandering analogue value: `base + drift·k + amplitude·sin(2πk/period + phase) +
/// noise`, clamped to `limits`. Each parameter is drawn once per series from its range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wander {
    /// Value at sample 0.
    pub base: Range,
    /// Change per sample (the slow trend: settlement creeping, a battery discharging).
    pub drift: Range,
    /// Amplitude of the periodic swing (daily temperature, hydration heat).
    pub amplitude: Range,
    /// Period of the swing, in samples.
    pub period: Range,
    /// Half-width of the uniform noise added to every sample.
    pub noise: f64,
    /// Physical limits; the value never leaves them.
    pub limits: Range,
}

/// How a series evolves over sample indices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// An analogue value.
    Wander(Wander),
    /// A counter that starts somewhere in `start` and goes up by one per sample.
    Counter {
        /// Range of the value at sample 0.
        start: Range,
    },
    /// A 0/1 flag that is 1 with `probability`, held for `hold` samples at a time.
    Flag {
        /// Share of time the flag is set.
        probability: f64,
        /// Samples a drawn state lasts (a relay does not chatter every sample).
        hold: u64,
    },
}

impl Quantity {
    /// The default behaviour: plausible values for a resettlement-site sensor (docs/DOMAIN.md
    /// §Sensors): settlement and level a few mm drifting slowly, curing temperatures 5-70 °C, tilt
    /// within ±2°, crack 0-5 mm, supplies 3.3-13 V.
    #[must_use]
    pub const fn behaviour(self) -> Behaviour {
        let w = match self {
            Self::Settlement => Wander {
                base: r(0.5, 5.0),
                drift: r(0.000_5, 0.005),
                amplitude: r(0.01, 0.05),
                period: r(60.0, 600.0),
                noise: 0.01,
                limits: r(-50.0, 200.0),
            },
            Self::Level => Wander {
                base: r(-3.0, 3.0),
                drift: r(-0.002, 0.002),
                amplitude: r(0.02, 0.1),
                period: r(60.0, 600.0),
                noise: 0.02,
                limits: r(-100.0, 100.0),
            },
            Self::Displacement => Wander {
                base: r(-2.0, 2.0),
                drift: r(-0.002, 0.002),
                amplitude: r(0.01, 0.05),
                period: r(60.0, 600.0),
                noise: 0.01,
                limits: r(-100.0, 100.0),
            },
            Self::Crack => Wander {
                base: r(0.5, 4.0),
                drift: r(0.0, 0.001),
                amplitude: r(0.005, 0.02),
                period: r(60.0, 600.0),
                noise: 0.005,
                limits: r(0.0, 5.0),
            },
            Self::Tilt => Wander {
                base: r(-1.5, 1.5),
                drift: r(-0.000_5, 0.000_5),
                amplitude: r(0.005, 0.02),
                period: r(60.0, 600.0),
                noise: 0.002,
                limits: r(-2.0, 2.0),
            },
            Self::Temperature => Wander {
                base: r(12.0, 45.0),
                drift: r(-0.002, 0.002),
                amplitude: r(2.0, 8.0),
                period: r(120.0, 1200.0),
                noise: 0.05,
                limits: r(5.0, 70.0),
            },
            Self::Humidity => Wander {
                base: r(40.0, 80.0),
                drift: r(-0.01, 0.01),
                amplitude: r(2.0, 8.0),
                period: r(120.0, 1200.0),
                noise: 0.3,
                limits: r(0.0, 100.0),
            },
            Self::Rainfall => Wander {
                base: r(0.0, 2.0),
                drift: r(0.0, 0.0),
                amplitude: r(0.0, 2.0),
                period: r(30.0, 300.0),
                noise: 0.2,
                limits: r(0.0, 50.0),
            },
            Self::PorePressure => Wander {
                base: r(10.0, 80.0),
                drift: r(-0.01, 0.01),
                amplitude: r(0.5, 3.0),
                period: r(120.0, 1200.0),
                noise: 0.1,
                limits: r(0.0, 500.0),
            },
            Self::Pressure => Wander {
                base: r(50.0, 300.0),
                drift: r(-0.02, 0.02),
                amplitude: r(1.0, 5.0),
                period: r(120.0, 1200.0),
                noise: 0.2,
                limits: r(0.0, 2000.0),
            },
            Self::Acceleration => Wander {
                base: r(-5.0, 5.0),
                drift: r(0.0, 0.0),
                amplitude: r(0.0, 1.0),
                period: r(10.0, 100.0),
                noise: 2.0,
                limits: r(-100.0, 100.0),
            },
            Self::Vibration => Wander {
                base: r(0.0, 1.0),
                drift: r(0.0, 0.0),
                amplitude: r(0.0, 0.5),
                period: r(10.0, 100.0),
                noise: 0.1,
                limits: r(0.0, 50.0),
            },
            Self::Strain => Wander {
                base: r(-200.0, 200.0),
                drift: r(-0.05, 0.05),
                amplitude: r(5.0, 20.0),
                period: r(120.0, 1200.0),
                noise: 1.0,
                limits: r(-3000.0, 3000.0),
            },
            Self::Frequency => Wander {
                base: r(1500.0, 3500.0),
                drift: r(-0.05, 0.05),
                amplitude: r(1.0, 10.0),
                period: r(120.0, 1200.0),
                noise: 0.5,
                limits: r(400.0, 6000.0),
            },
            Self::Resistance => Wander {
                base: r(2000.0, 9000.0),
                drift: r(-0.5, 0.5),
                amplitude: r(50.0, 400.0),
                period: r(120.0, 1200.0),
                noise: 5.0,
                limits: r(150.0, 110_000.0),
            },
            Self::Voltage => Wander {
                base: r(3.6, 12.5),
                drift: r(-0.000_2, 0.0),
                amplitude: r(0.01, 0.2),
                period: r(120.0, 1200.0),
                noise: 0.01,
                limits: r(3.3, 13.0),
            },
            Self::Signal => Wander {
                base: r(-95.0, -55.0),
                drift: r(0.0, 0.0),
                amplitude: r(1.0, 5.0),
                period: r(30.0, 300.0),
                noise: 2.0,
                limits: r(-120.0, -30.0),
            },
            Self::Status => {
                return Behaviour::Flag {
                    probability: 0.02,
                    hold: 5,
                }
            }
            Self::Other => {
                return Behaviour::Counter {
                    start: r(0.0, 10_000.0),
                }
            }
        };
        Behaviour::Wander(w)
    }
}
