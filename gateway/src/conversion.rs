//! Engineering conversions of one channel: from the device's own number (a frequency in Hz, a
//! resistance in Ω, vibrating-wire digits) to the value a supervision engineer reads (kPa, °C,
//! mm), and the channel's sign convention.
//!
//! Owns the conversion vocabulary as written in profiles and devices ([`ConversionConfig`],
//! [`Sign`]), its validation into [`Conversion`], the formulas, and [`Channel::convert`], which
//! turns a good raw reading into an engineering one (keeping the raw number) or a flagged one.
//! It does not read registers or payloads, and it does not find a channel's temperature sibling:
//! the source that reads both in one poll pairs them ([`crate::sources::modbus::decode`]).
//!
//! The formulas and their sources are in docs/DOMAIN.md §Sensors:
//! - NTC thermistor, Steinhart–Hart: `1/T = A + B·ln R + C·(ln R)³`, T in K;
//! - NTC thermistor, β form: `1/T = 1/T25 + ln(R/R25)/β`, T25 = 298.15 K;
//! - vibrating wire (Geokon 4500/4580 manuals; Campbell AVW200 help): digits `R = f²/1000`,
//!   `P = G·(R1 − R0) + K·(T1 − T0)`;
//! - polynomial `E = c0 + c1·x + c2·x² + …` (Geokon's `E = A·R² + B·R + C` is
//!   `coefficients = [C, B, A]`);
//! - linear `E = scale·x + offset`.
//!
//! A conversion that cannot be computed never yields a number: the reading is flagged
//! ([`Quality::NotConvertible`], [`Quality::CorrectionUnavailable`]) and keeps its raw value, so
//! the technician sees what the device sent and no rule acts on a guess.

use serde::Deserialize;

use crate::model::{Quality, Reading};

/// 0 °C in kelvin (ITS-90 / SI definition of the Celsius scale).
pub const KELVIN_AT_0_C: f64 = 273.15;
/// Reference temperature of the β form, 25 °C in kelvin: thermistor makers give R25 and a β
/// (usually B25/50 or B25/85) relative to it.
pub const BETA_REFERENCE_K: f64 = KELVIN_AT_0_C + 25.0;
/// Vibrating-wire digits ("B units") per Hz²: digits = f²/1000 (Geokon 4580 manual, Equation 1;
/// Campbell AVW200 help; docs/DOMAIN.md §Sensors).
pub const DIGITS_PER_HZ_SQUARED: f64 = 1e-3;
/// Most coefficients a polynomial may have (degree 7). Calibration sheets give degree 2 or 3;
/// more terms are a fitting error, not a calibration.
pub const MAX_POLYNOMIAL_COEFFICIENTS: usize = 8;

/// A conversion as written in a profile point, an inline point or a device's `overrides`:
/// `conversion = { type = "ntc_beta", r25 = 10000.0, beta = 3950.0 }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConversionConfig {
    /// `value = scale × raw + offset` (a calibration sheet's gain and offset; the register's own
    /// `scale`/`offset` come before it).
    Linear {
        /// Gain.
        scale: f64,
        /// Offset, default 0.
        #[serde(default)]
        offset: f64,
    },
    /// `value = c0 + c1·raw + c2·raw² + …`.
    Polynomial {
        /// Coefficients in ascending powers, `[c0, c1, c2, ...]`.
        coefficients: Vec<f64>,
    },
    /// NTC thermistor resistance (Ω) to °C by Steinhart–Hart.
    NtcSteinhartHart {
        /// A (1/K).
        a: f64,
        /// B (1/K).
        b: f64,
        /// C (1/K).
        c: f64,
    },
    /// NTC thermistor resistance (Ω) to °C by the β form.
    NtcBeta {
        /// Resistance at 25 °C (Ω).
        r25: f64,
        /// β (K).
        beta: f64,
    },
    /// Vibrating-wire gauge: frequency (Hz) or digits to an engineering unit.
    VibratingWire {
        /// What the register holds: `hz` (default) or `digits`.
        #[serde(default)]
        input: VwInput,
        /// Linear gauge factor G, engineering unit per digit (often negative for piezometers).
        gauge_factor: f64,
        /// Zero reading R0 in digits, taken at installation.
        zero_reading: f64,
        /// Thermal factor K, engineering unit per °C; with it, `temperature` and
        /// `zero_temperature` are required.
        #[serde(default)]
        thermal_factor: Option<f64>,
        /// T0, the gauge's temperature at the zero reading (°C).
        #[serde(default)]
        zero_temperature: Option<f64>,
        /// Name of the sibling point of the same device that reads this gauge's thermistor
        /// (its engineering value, °C), read in the same poll.
        #[serde(default)]
        temperature: Option<String>,
    },
}

/// What a vibrating-wire register holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VwInput {
    /// The resonant frequency in Hz; digits = f²/1000.
    #[default]
    Hz,
    /// Digits (B units) as the reader computed them.
    Digits,
}

/// A channel's sign convention, written `sign = 1` or `sign = -1`: the engineering value is
/// multiplied by it after the conversion. Settlement is positive downwards (README,
/// *Time-series schema*); a levelling cell whose conversion gives "up" is set to `-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "i64")]
pub enum Sign {
    /// As converted.
    #[default]
    Positive,
    /// Negated.
    Negative,
}

impl TryFrom<i64> for Sign {
    type Error = String;

    fn try_from(v: i64) -> Result<Self, Self::Error> {
        match v {
            1 => Ok(Self::Positive),
            -1 => Ok(Self::Negative),
            other => Err(format!(
                "sign {other} is not 1 or -1; write sign = -1 to negate the value"
            )),
        }
    }
}

impl Sign {
    /// `v` with this sign.
    #[must_use]
    pub fn apply(self, v: f64) -> f64 {
        match self {
            Self::Positive => v,
            Self::Negative => -v,
        }
    }
}

/// The temperature correction of a vibrating-wire gauge, `+ K·(T1 − T0)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ThermalCorrection {
    /// K, engineering unit per °C.
    pub factor: f64,
    /// T0 (°C).
    pub zero_temperature: f64,
    /// The sibling point that reads T1 (°C).
    pub sibling: String,
}

/// A validated conversion.
#[derive(Debug, Clone, PartialEq)]
pub enum Conversion {
    /// `scale × raw + offset`.
    Linear {
        /// Gain.
        scale: f64,
        /// Offset.
        offset: f64,
    },
    /// `Σ cᵢ·rawⁱ`.
    Polynomial(Vec<f64>),
    /// Steinhart–Hart A, B, C.
    NtcSteinhartHart {
        /// A.
        a: f64,
        /// B.
        b: f64,
        /// C.
        c: f64,
    },
    /// β form.
    NtcBeta {
        /// R25 (Ω).
        r25: f64,
        /// β (K).
        beta: f64,
    },
    /// Vibrating wire.
    VibratingWire {
        /// Hz or digits.
        input: VwInput,
        /// G.
        gauge_factor: f64,
        /// R0 (digits).
        zero_reading: f64,
        /// `+ K·(T1 − T0)`, when configured.
        thermal: Option<ThermalCorrection>,
    },
}

impl ConversionConfig {
    /// Validate; every problem is `(field under the conversion table, message with the fix)`.
    ///
    /// # Errors
    /// Every problem found.
    pub fn validate(&self) -> Result<Conversion, Vec<(&'static str, String)>> {
        let mut found = Vec::new();
        let finite = |found: &mut Vec<(&'static str, String)>, field: &'static str, v: f64| {
            if !v.is_finite() {
                found.push((field, format!("{v} must be a finite number")));
            }
        };
        let conversion = match self {
            Self::Linear { scale, offset } => {
                finite(&mut found, "scale", *scale);
                finite(&mut found, "offset", *offset);
                if *scale == 0.0 {
                    found.push((
                        "scale",
                        "must not be 0 (every value would be the offset)".into(),
                    ));
                }
                Conversion::Linear {
                    scale: *scale,
                    offset: *offset,
                }
            }
            Self::Polynomial { coefficients } => {
                for c in coefficients {
                    finite(&mut found, "coefficients", *c);
                }
                if coefficients.is_empty() || coefficients.len() > MAX_POLYNOMIAL_COEFFICIENTS {
                    found.push((
                        "coefficients",
                        format!(
                            "give 1 to {MAX_POLYNOMIAL_COEFFICIENTS} coefficients in ascending powers, \
                             [c0, c1, c2, ...] (Geokon's A·R² + B·R + C is [C, B, A])"
                        ),
                    ));
                }
                Conversion::Polynomial(coefficients.clone())
            }
            Self::NtcSteinhartHart { a, b, c } => {
                finite(&mut found, "a", *a);
                finite(&mut found, "b", *b);
                finite(&mut found, "c", *c);
                if *b <= 0.0 {
                    found.push((
                        "b",
                        "must be above 0 for an NTC thermistor (e.g. 2.369e-4 for Geokon's 3 kΩ part); check the exponent".into(),
                    ));
                }
                Conversion::NtcSteinhartHart {
                    a: *a,
                    b: *b,
                    c: *c,
                }
            }
            Self::NtcBeta { r25, beta } => {
                finite(&mut found, "r25", *r25);
                finite(&mut found, "beta", *beta);
                if *r25 <= 0.0 {
                    found.push((
                        "r25",
                        "must be above 0 Ω (e.g. 10000.0 for a 10 kΩ NTC)".into(),
                    ));
                }
                if *beta <= 0.0 {
                    found.push(("beta", "must be above 0 K (e.g. 3950.0)".into()));
                }
                Conversion::NtcBeta {
                    r25: *r25,
                    beta: *beta,
                }
            }
            Self::VibratingWire {
                input,
                gauge_factor,
                zero_reading,
                thermal_factor,
                zero_temperature,
                temperature,
            } => {
                finite(&mut found, "gauge_factor", *gauge_factor);
                finite(&mut found, "zero_reading", *zero_reading);
                if *gauge_factor == 0.0 {
                    found.push((
                        "gauge_factor",
                        "must not be 0; copy the linear gauge factor G from the calibration sheet"
                            .into(),
                    ));
                }
                let thermal = match (thermal_factor, zero_temperature, temperature) {
                    (None, None, None) => None,
                    (Some(k), Some(t0), Some(sibling)) => {
                        finite(&mut found, "thermal_factor", *k);
                        finite(&mut found, "zero_temperature", *t0);
                        if sibling.trim().is_empty() {
                            found.push(("temperature", "must name a point of this device".into()));
                        }
                        Some(ThermalCorrection {
                            factor: *k,
                            zero_temperature: *t0,
                            sibling: sibling.clone(),
                        })
                    }
                    _ => {
                        found.push((
                            "thermal_factor",
                            "a temperature correction needs all three of `thermal_factor` (K from the \
                             calibration sheet), `zero_temperature` (T0 at the zero reading, °C) and \
                             `temperature` (the point reading the gauge's thermistor); give all or none"
                                .into(),
                        ));
                        None
                    }
                };
                Conversion::VibratingWire {
                    input: *input,
                    gauge_factor: *gauge_factor,
                    zero_reading: *zero_reading,
                    thermal,
                }
            }
        };
        if found.is_empty() {
            Ok(conversion)
        } else {
            Err(found)
        }
    }
}

impl Conversion {
    /// The sibling point whose value this conversion needs, if any.
    #[must_use]
    pub fn temperature_input(&self) -> Option<&str> {
        match self {
            Self::VibratingWire {
                thermal: Some(t), ..
            } => Some(&t.sibling),
            _ => None,
        }
    }

    /// The engineering value of `raw`. `temperature` is the sibling's value (°C) when this
    /// conversion has a temperature input, `None` when that reading was missing or not good.
    ///
    /// # Errors
    /// [`Quality::NotConvertible`] outside the conversion's domain or for a result that is not
    /// finite; [`Quality::CorrectionUnavailable`] when the temperature input is needed and
    /// missing (the value is never given uncorrected).
    pub fn apply(&self, raw: f64, temperature: Option<f64>) -> Result<f64, Quality> {
        let value = match self {
            Self::Linear { scale, offset } => scale * raw + offset,
            // Horner's scheme: one multiply-add per coefficient, highest power first.
            Self::Polynomial(c) => c.iter().rev().fold(0.0, |acc, ci| acc * raw + ci),
            Self::NtcSteinhartHart { a, b, c } => {
                let ln_r = positive(raw)?.ln();
                kelvin_to_celsius(a + b * ln_r + c * ln_r.powi(3))?
            }
            Self::NtcBeta { r25, beta } => {
                let ratio = positive(raw)? / r25;
                kelvin_to_celsius(1.0 / BETA_REFERENCE_K + ratio.ln() / beta)?
            }
            Self::VibratingWire {
                input,
                gauge_factor,
                zero_reading,
                thermal,
            } => {
                // A frequency or reading of 0 is a wire that did not respond, not zero pressure.
                let r1 = match input {
                    VwInput::Hz => positive(raw)?.powi(2) * DIGITS_PER_HZ_SQUARED,
                    VwInput::Digits => positive(raw)?,
                };
                let uncorrected = gauge_factor * (r1 - zero_reading);
                match thermal {
                    None => uncorrected,
                    Some(t) => {
                        let t1 = temperature
                            .filter(|t| t.is_finite())
                            .ok_or(Quality::CorrectionUnavailable)?;
                        uncorrected + t.factor * (t1 - t.zero_temperature)
                    }
                }
            }
        };
        if value.is_finite() {
            Ok(value)
        } else {
            Err(Quality::NotConvertible)
        }
    }
}

/// `v` when it is a finite number above 0, else [`Quality::NotConvertible`].
fn positive(v: f64) -> Result<f64, Quality> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(Quality::NotConvertible)
    }
}

/// °C from `1/T` (T in K); a non-positive `1/T` is no temperature at all.
fn kelvin_to_celsius(inverse_t: f64) -> Result<f64, Quality> {
    let inverse_t = positive(inverse_t)?;
    Ok(1.0 / inverse_t - KELVIN_AT_0_C)
}

/// What a channel does to its raw number: an optional conversion, then its sign.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Channel {
    /// The conversion; `None` keeps the raw number.
    pub conversion: Option<Conversion>,
    /// The sign convention.
    pub sign: Sign,
}

impl Channel {
    /// True when the engineering value is the raw number itself (no `raw` field is written).
    #[must_use]
    pub fn is_identity(&self) -> bool {
        self.conversion.is_none() && self.sign == Sign::Positive
    }

    /// Turn a good raw reading into its engineering value, keeping the raw number in
    /// `reading.raw`; a conversion that cannot be computed flags the reading (value removed,
    /// raw kept). Readings that are not good, and identity channels, are left as they are.
    /// `temperature` is the sibling's value for a conversion with a temperature input.
    pub fn convert(&self, reading: &mut Reading, temperature: Option<f64>) {
        if self.is_identity() || !reading.quality.is_good() {
            return;
        }
        let Some(raw) = reading.value else {
            return;
        };
        reading.raw = Some(raw);
        let converted = match &self.conversion {
            Some(c) => c.apply(raw, temperature),
            None => Ok(raw),
        };
        match converted {
            Ok(v) => reading.value = Some(self.sign.apply(v)),
            Err(quality) => {
                reading.value = None;
                reading.quality = quality;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::model::{QuantityKind, Series};

    fn close(got: f64, want: f64, tol: f64) {
        assert!((got - want).abs() <= tol, "got {got}, want {want} ± {tol}");
    }

    fn conv(text: &str) -> Conversion {
        #[derive(Deserialize)]
        struct Wrap {
            conversion: ConversionConfig,
        }
        let w: Wrap = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        w.conversion.validate().unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// Geokon 8002-4-1 instruction manual, Table 16 "103JL1A Thermistor Resistance versus
    /// Temperature" (a 10 kΩ NTC; the same curve as Campbell's 109SS 10K3MCD1, Table C-1:
    /// 0 °C = 32 650.9 Ω): 0 °C = 32 650 Ω, 25 °C = 10 000 Ω, 50 °C = 3 602 Ω. The widely
    /// published "10 kΩ B3950" table gives 25 °C = 10 000 Ω and 50 °C = 3 588 Ω; β = 3950 is its
    /// B25/50, so the β form is exact at 25 and 50 °C and drifts outside that span.
    #[test]
    fn ntc_beta_3950_matches_the_published_10k_table() {
        let ntc = conv("conversion = { type = \"ntc_beta\", r25 = 10000.0, beta = 3950.0 }");
        close(ntc.apply(10_000.0, None).unwrap_or(f64::NAN), 25.0, 1e-9);
        // B25/50 by definition: 3 588 Ω at 50 °C (table rounded to 1 Ω ≈ 0.01 °C).
        close(ntc.apply(3_588.0, None).unwrap_or(f64::NAN), 50.0, 0.02);
        // 0 °C = 32 650 Ω (Geokon 103JL1A / Campbell 10K3MCD1 table): the β form, fitted over
        // 25–50 °C, reads 0.55 °C there, within the ±1 °C the two-parameter model is good for.
        close(ntc.apply(32_650.0, None).unwrap_or(f64::NAN), 0.0, 0.6);
    }

    /// Geokon / RST standard 3 kΩ thermistor (YSI 44005, Dale 41C3001 B3), RST VW2100 manual
    /// Equation E-1 and docs/DOMAIN.md §Sensors: A = 1.4051e-3, B = 2.369e-4, C = 1.019e-7.
    /// The part is specified as 3 000 Ω at 25 °C (docs/reference domain.md §4.1: "3 kΩ at
    /// 25 °C NTC"), the one published point compared here, within 0.05 °C.
    #[test]
    fn ntc_steinhart_hart_geokon_3k_standard_curve() {
        let ntc = conv(
            "conversion = { type = \"ntc_steinhart_hart\", a = 1.4051e-3, b = 2.369e-4, c = 1.019e-7 }",
        );
        close(ntc.apply(3_000.0, None).unwrap_or(f64::NAN), 25.0, 0.05);
    }

    #[test]
    fn ntc_resistance_at_or_below_zero_is_not_convertible() {
        let ntc = conv("conversion = { type = \"ntc_beta\", r25 = 10000.0, beta = 3950.0 }");
        assert_eq!(ntc.apply(0.0, None), Err(Quality::NotConvertible));
        assert_eq!(ntc.apply(-5.0, None), Err(Quality::NotConvertible));
        let sh = conv(
            "conversion = { type = \"ntc_steinhart_hart\", a = 1.4051e-3, b = 2.369e-4, c = 1.019e-7 }",
        );
        assert_eq!(sh.apply(0.0, None), Err(Quality::NotConvertible));
    }

    /// Geokon 4580 manual §4.1, Equation 1: "a transducer reading 9000 digits ... corresponds to
    /// a period of 333.3 µs and a frequency of 3000 Hz"; Equation 2 example: R0 = 2509,
    /// R1 = 7023, G = −0.0001954 psi/digit → "(7023 − 2509) × −0.0001954 = 0.882 psi" (the sign
    /// is negative: −0.882 psi, as docs/DOMAIN.md §Sensors quotes it).
    #[test]
    fn vibrating_wire_digits_and_linear_gauge_factor_geokon_4580() {
        let digits = conv(
            "conversion = { type = \"vibrating_wire\", input = \"hz\", gauge_factor = 1.0, zero_reading = 0.0 }",
        );
        close(digits.apply(3000.0, None).unwrap_or(f64::NAN), 9000.0, 1e-9);
        let psi = conv(
            "conversion = { type = \"vibrating_wire\", input = \"digits\", gauge_factor = -0.0001954, zero_reading = 2509.0 }",
        );
        close(psi.apply(7023.0, None).unwrap_or(f64::NAN), -0.882, 0.0005);
    }

    /// Geokon 4500 series manual, Appendix C: "G (R1 – R0) = –0.1795 (6749 − 9082), gives a
    /// calculated pressure of 418.8 kPa"; §5.2 / docs/DOMAIN.md §Sensors: the thermal factor
    /// K = +0.1319 kPa/°C with T going 22 → 15 °C gives −0.92 kPa, added to the pressure.
    #[test]
    fn vibrating_wire_piezometer_with_temperature_correction_geokon_4500() {
        let p = conv(
            "conversion = { type = \"vibrating_wire\", input = \"digits\", gauge_factor = -0.1795, zero_reading = 9082.0, thermal_factor = 0.1319, zero_temperature = 22.0, temperature = \"temp\" }",
        );
        assert_eq!(p.temperature_input(), Some("temp"));
        // No temperature change: the linear example alone.
        close(p.apply(6749.0, Some(22.0)).unwrap_or(f64::NAN), 418.8, 0.05);
        // 22 → 15 °C: 418.8 − 0.92 kPa.
        close(
            p.apply(6749.0, Some(15.0)).unwrap_or(f64::NAN),
            418.8 - 0.92,
            0.05,
        );
        // The same reading from a frequency: √(6749 × 1000) Hz.
        let hz = conv(
            "conversion = { type = \"vibrating_wire\", gauge_factor = -0.1795, zero_reading = 9082.0 }",
        );
        close(
            hz.apply((6749.0_f64 * 1000.0).sqrt(), None)
                .unwrap_or(f64::NAN),
            418.8,
            0.05,
        );
        // Never uncorrected: a missing thermistor flags the value.
        assert_eq!(p.apply(6749.0, None), Err(Quality::CorrectionUnavailable));
        assert_eq!(
            p.apply(6749.0, Some(f64::NAN)),
            Err(Quality::CorrectionUnavailable)
        );
        // A wire that did not respond is not zero pressure.
        assert_eq!(hz.apply(0.0, None), Err(Quality::NotConvertible));
        assert_eq!(p.apply(0.0, Some(15.0)), Err(Quality::NotConvertible));
    }

    /// The Geokon 4500 linear calibration (Appendix C: G = −0.1795 kPa/digit, regression zero
    /// R0 = 9082 digits, 6749 digits → 418.8 kPa) written as a polynomial [−G·R0, G]; and the
    /// field re-basing of C (Geokon 4800 manual, Equation 19: "inserting the initial field zero
    /// reading into the polynomial equation with the pressure, P, set to zero"): at R0 the
    /// polynomial gives 0 kPa.
    #[test]
    fn polynomial_with_a_published_calibration() {
        let p = conv("conversion = { type = \"polynomial\", coefficients = [1630.219, -0.1795] }");
        close(p.apply(6749.0, None).unwrap_or(f64::NAN), 418.8, 0.05);
        close(p.apply(9082.0, None).unwrap_or(f64::NAN), 0.0, 1e-6);
        // A result that is not finite is not a value.
        let huge = conv("conversion = { type = \"polynomial\", coefficients = [0.0, 0.0, 1e300] }");
        assert_eq!(huge.apply(1e10, None), Err(Quality::NotConvertible));
    }

    #[test]
    fn invalid_conversions_name_the_field_and_the_fix() {
        let errors = |text: &str| {
            #[derive(Deserialize)]
            struct Wrap {
                conversion: ConversionConfig,
            }
            let w: Wrap = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
            w.conversion.validate().err().unwrap_or_default()
        };
        let e = errors("conversion = { type = \"ntc_beta\", r25 = 0.0, beta = -1.0 }");
        assert_eq!(
            e.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            ["r25", "beta"]
        );
        let e = errors("conversion = { type = \"polynomial\", coefficients = [] }");
        assert!(e[0].1.contains("ascending powers"), "{e:?}");
        let e = errors(
            "conversion = { type = \"vibrating_wire\", gauge_factor = 1.0, zero_reading = 0.0, thermal_factor = 0.1 }",
        );
        assert!(e[0].1.contains("all three"), "{e:?}");
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)] // read for the error
        struct Wrap {
            conversion: ConversionConfig,
        }
        assert!(toml::from_str::<Wrap>(
            "conversion = { type = \"ntc_beta\", r25 = 1.0, beta = 1.0, x = 1 }"
        )
        .is_err());
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)] // read for the error
        struct S {
            sign: Sign,
        }
        assert!(toml::from_str::<S>("sign = 2")
            .err()
            .is_some_and(|e| e.to_string().contains("not 1 or -1")));
        assert_eq!(
            toml::from_str::<S>("sign = -1").map(|s| s.sign).ok(),
            Some(Sign::Negative)
        );
    }

    #[test]
    fn a_channel_keeps_the_raw_number_and_flags_what_it_cannot_convert() {
        let s = Arc::new(Series::new(
            "s",
            "g",
            "d",
            "t",
            QuantityKind::Temperature,
            "°C",
            &BTreeMap::new(),
        ));
        let ntc = Channel {
            conversion: Some(Conversion::NtcBeta {
                r25: 10_000.0,
                beta: 3950.0,
            }),
            sign: Sign::Positive,
        };
        let mut r = Reading::good(Arc::clone(&s), 1, 10_000.0);
        ntc.convert(&mut r, None);
        assert_eq!(r.raw, Some(10_000.0));
        close(r.value.unwrap_or(f64::NAN), 25.0, 1e-9);
        let mut r = Reading::good(Arc::clone(&s), 1, 0.0);
        ntc.convert(&mut r, None);
        assert_eq!(
            (r.raw, r.value, r.quality),
            (Some(0.0), None, Quality::NotConvertible)
        );
        // Settlement positive downwards: a cell reporting "up" is negated; raw keeps the sign.
        let invert = Channel {
            conversion: None,
            sign: Sign::Negative,
        };
        let mut r = Reading::good(Arc::clone(&s), 1, 2.5);
        invert.convert(&mut r, None);
        assert_eq!((r.raw, r.value), (Some(2.5), Some(-2.5)));
        // Identity: nothing added.
        let mut r = Reading::good(Arc::clone(&s), 1, 2.5);
        Channel::default().convert(&mut r, None);
        assert_eq!((r.raw, r.value), (None, Some(2.5)));
        // A bad reading stays as it is.
        let mut r = Reading::bad(s, 1, Quality::Timeout);
        ntc.convert(&mut r, None);
        assert_eq!((r.raw, r.quality), (None, Quality::Timeout));
    }
}
