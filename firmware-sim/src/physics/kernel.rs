//! The shared kernels of the physics models: time units, the first-order ramp response and
//! the duration parser their tables use.
//!
//! Owns the closed-form response of a linearly ramped load ([`ramp_response`] and its rate),
//! used by [`super::settlement`] (consolidation) and [`super::slope`] (rainfall movement), the
//! day/hour constants, and `days` (a humantime duration as days). It knows no model and no
//! channel; the models import it, it imports only the validation vocabulary
//! ([`crate::validation`]).

use crate::validation::Invalid;

/// Seconds per day: model time is in days, the clock in seconds.
pub const SECONDS_PER_DAY: f64 = 86_400.0;
/// Hours per day.
pub const HOURS_PER_DAY: f64 = 24.0;

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
