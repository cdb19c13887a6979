//! The maturity arithmetic of ASTM C1074 (docs/DOMAIN.md §Curing, maturity): the Nurse–Saul
//! temperature-time factor, the Arrhenius equivalent age and the strength–maturity curves.
//!
//! Owns the formulas and their one integration step ([`Maturity::step`]). Pure arithmetic: no
//! config, no channels, no clock. Which sensor integrates what, and the milestones, are the
//! parent module's.

use serde::{Deserialize, Serialize};

/// The gas constant R, J/(mol·K) (CODATA 2018: 8.314 462 618; four digits as C1074 and
/// Carino 1984 write it).
pub const GAS_CONSTANT: f64 = 8.314;
/// °C to K.
pub const KELVIN_OFFSET: f64 = 273.15;
/// Reference temperature of the equivalent age, °C (ASTM C1074, Freiesleben Hansen–Pedersen:
/// 20 °C; docs/DOMAIN.md §Curing).
pub const REFERENCE_TEMPERATURE_C: f64 = 20.0;
/// Seconds per hour: maturity in °C·h, equivalent age in h.
const SECS_PER_HOUR: f64 = 3600.0;
/// Longest step integrated at the mean of its two ends, ns. C1074 §8 logs the temperature at
/// least every 0.5 h for 48 h, then every hour; a longer gap (a logger down, a late first
/// reading) is integrated at the lower of its two ends, so that a gap can delay a milestone but
/// never bring one forward.
pub const MAX_MEAN_STEP_NS: i64 = 2 * 3_600_000_000_000;

/// The strength–maturity relation of a mix (ASTM C1074 annex; docs/DOMAIN.md §Curing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StrengthCurve {
    /// `S = a + b·log10(M)`, M the Nurse–Saul maturity in °C·h (S = 0 where that is negative).
    Logarithmic {
        /// Intercept, MPa.
        a: f64,
        /// Slope per decade of maturity, MPa.
        b: f64,
    },
    /// `S = Su·k(t − t0) / (1 + k(t − t0))`, t the equivalent age at 20 °C in h (S = 0 before t0).
    Hyperbolic {
        /// Limiting strength, MPa.
        su: f64,
        /// Rate constant, 1/h.
        k: f64,
        /// Age at which strength development starts, h.
        t0: f64,
    },
}

impl StrengthCurve {
    /// The in-place strength, MPa, at Nurse–Saul maturity `m` (°C·h) and equivalent age
    /// `te` (h). Never negative: a curve fitted on tested ages says nothing below its start.
    #[must_use]
    pub fn strength(self, m: f64, te: f64) -> f64 {
        let s = match self {
            Self::Logarithmic { a, b } => {
                if m <= 0.0 {
                    0.0
                } else {
                    a + b * m.log10()
                }
            }
            Self::Hyperbolic { su, k, t0 } => {
                let x = k * (te - t0);
                if x <= 0.0 {
                    0.0
                } else {
                    su * x / (1.0 + x)
                }
            }
        };
        s.max(0.0)
    }
}

/// The Arrhenius factor: the age at `t_c` (°C) worth one hour at the reference temperature,
/// `exp(−Q·(1/T − 1/T_r))` with `Q = E/R` and temperatures in K (ASTM C1074 eq. for t_e).
#[must_use]
pub fn arrhenius_factor(t_c: f64, activation_energy_j_mol: f64) -> f64 {
    let q = activation_energy_j_mol / GAS_CONSTANT;
    let t = t_c + KELVIN_OFFSET;
    let tr = REFERENCE_TEMPERATURE_C + KELVIN_OFFSET;
    (-q * (1.0 / t - 1.0 / tr)).exp()
}

/// The running maturity of one sensor: Nurse–Saul M (°C·h) and equivalent age t_e (h), and the
/// last good reading they were integrated to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Maturity {
    /// Σ (T_a − T0)·Δt, °C·h.
    pub m: f64,
    /// Σ exp(−Q(1/T_a − 1/T_r))·Δt, h.
    pub te: f64,
    /// Time (ns) and temperature (°C) of the last reading integrated; `None` before the first.
    pub last: Option<(i64, f64)>,
}

impl Maturity {
    /// Integrate from the last reading to one at `ts` (ns) reading `t_c` (°C), or from `start`
    /// (the placing time, ns) at the first reading, with `t_c` taken for the whole step.
    /// A reading not later than the last adds nothing (a repeated sample). The step's
    /// temperature is the mean of its two ends (C1074: "average concrete temperature during the
    /// time interval"), the lower end past [`MAX_MEAN_STEP_NS`]; below the datum `t0` it adds no
    /// maturity (C1074; rpxtech summary).
    pub fn step(&mut self, ts: i64, t_c: f64, start: i64, t0: f64, activation_energy: f64) {
        let (from, t_from) = self.last.unwrap_or((start, t_c));
        if ts <= from {
            if self.last.is_none() {
                self.last = Some((ts, t_c));
            }
            return;
        }
        let hours = (ts - from) as f64 / 1e9 / SECS_PER_HOUR;
        let ta = if ts - from > MAX_MEAN_STEP_NS {
            t_from.min(t_c)
        } else {
            0.5 * (t_from + t_c)
        };
        self.m += (ta - t0).max(0.0) * hours;
        self.te += arrhenius_factor(ta, activation_energy) * hours;
        self.last = Some((ts, t_c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000_000;

    #[test]
    fn nurse_saul_matches_the_published_constant_temperature_example() {
        // civinnovate.com, "Quality control of concrete", explanation 10 (2026-06-22):
        // "M = 28 days × (15 °C − (−11 °C)) = 28 × 26 = 728 °C·days" = 17 472 °C·h.
        let mut m = Maturity::default();
        for h in 1..=28 * 24 {
            m.step(h * HOUR, 15.0, 0, -11.0, 40_000.0);
        }
        assert!((m.m - 17_472.0).abs() < 1e-6, "{}", m.m);
        assert!((m.m / 24.0 - 728.0).abs() < 1e-9);
    }

    #[test]
    fn steps_below_the_datum_add_no_maturity_but_age() {
        // C1074 (rpxtech summary): "if Ta is less than To, the maturity change during that
        // time step is zero". At −5 °C with T0 = 0: M stays 0 over 10 h.
        let mut m = Maturity::default();
        for h in 1..=10 {
            m.step(h * HOUR, -5.0, 0, 0.0, 40_000.0);
        }
        assert_eq!(m.m, 0.0);
        // Trapezoid: 20 °C then 30 °C over 2 h, T0 = −10: mean 25 °C → 35 °C·h per hour = 70.
        let mut m = Maturity::default();
        m.step(0, 20.0, 0, -10.0, 40_000.0);
        m.step(2 * HOUR, 30.0, 0, -10.0, 40_000.0);
        assert!((m.m - 70.0).abs() < 1e-9, "{}", m.m);
        // A repeated sample adds nothing.
        m.step(2 * HOUR, 30.0, 0, -10.0, 40_000.0);
        assert!((m.m - 70.0).abs() < 1e-9);
        // A 3 h gap from 30 °C to 40 °C counts at 30 °C (the lower end): 3 × 40 = 120.
        m.step(5 * HOUR, 40.0, 0, -10.0, 40_000.0);
        assert!((m.m - 190.0).abs() < 1e-9, "{}", m.m);
    }

    #[test]
    fn equivalent_age_matches_the_arrhenius_factor_computed_independently() {
        // t_e = Σ exp(−(E/R)(1/T − 1/T_r))·Δt (Carino 1984; ASTM C1074), E = 40 000 J/mol
        // (C1074 appendix value for Type I cement, domain.md §2.3), R = 8.314, T_r = 293.15 K.
        // Computed independently (Python, math.exp): 30 °C → 1.718377, 10 °C → 0.560111;
        // 10 h at 30 °C then 14 h at 10 °C → 25.02533 h at 20 °C.
        assert!((arrhenius_factor(30.0, 40_000.0) - 1.718_377).abs() < 1e-6);
        assert!((arrhenius_factor(10.0, 40_000.0) - 0.560_111).abs() < 1e-6);
        assert!((arrhenius_factor(20.0, 40_000.0) - 1.0).abs() < 1e-12);
        let mut m = Maturity::default();
        for h in 1..=10 {
            m.step(h * HOUR, 30.0, 0, 0.0, 40_000.0);
        }
        // The step from 30 °C to 10 °C is averaged: keep it out by restarting at 10 °C.
        let mut cold = Maturity::default();
        for h in 1..=14 {
            cold.step(h * HOUR, 10.0, 0, 0.0, 40_000.0);
        }
        assert!(
            (m.te + cold.te - 25.025_33).abs() < 1e-4,
            "{}",
            m.te + cold.te
        );
    }

    #[test]
    fn curves_give_the_strength_of_their_closed_form() {
        // Logarithmic, S = a + b·log10(M): a = −20, b = 10, M = 10 000 °C·h → −20 + 40 = 20 MPa.
        let log = StrengthCurve::Logarithmic { a: -20.0, b: 10.0 };
        assert!((log.strength(10_000.0, 0.0) - 20.0).abs() < 1e-9);
        assert_eq!(log.strength(10.0, 0.0), 0.0);
        // Hyperbolic (C1074 annex A1), Su = 40, k = 0.05/h, t0 = 4 h: at t = 24 h,
        // k(t − t0) = 1 → S = Su/2 = 20 MPa; before t0 nothing.
        let hyp = StrengthCurve::Hyperbolic {
            su: 40.0,
            k: 0.05,
            t0: 4.0,
        };
        assert!((hyp.strength(0.0, 24.0) - 20.0).abs() < 1e-9);
        assert_eq!(hyp.strength(0.0, 3.0), 0.0);
    }
}
