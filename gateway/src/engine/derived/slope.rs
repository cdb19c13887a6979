//! Slope early warning on one displacement point, and the effective antecedent rainfall of one
//! rain gauge (issue 8 item 3; formulas, gates and sources in docs/DOMAIN.md §Slope early
//! warning and the reference file ../shared/reference/domain.md §3):
//!
//! - [`Forecast`]: Fukuzono's inverse-velocity failure-time forecast (Fukuzono 1985; Voight
//!   1988): the smoothed speed, 1/v, a least-squares line of 1/v against time re-fitted on every
//!   reading, the failure time where the line reaches zero, its uncertainty and R², behind the
//!   gates of reference §3.2 ([`Refusal`] says which one refused);
//! - [`Tangent`]: Xu et al.'s improved tangent angle α = arctan(ΔT/Δt), T = S/v_c, and its
//!   warning level (reference §3.1, EURASIP JWCN 2021 Table 1);
//! - [`Antecedent`]: the effective antecedent rainfall R_eff = Σ K^i·R_i (reference §3.3).
//!
//! Owns the per-output state of these kinds (saved in the spool by the parent module as
//! `v/<block>/<channel>`), their validated parameters and named defaults. Does not own the
//! routing of readings, the output series and their names, or the saving ([`super`]), nor the
//! `[[derived]]` keys as written ([`super::config`]), nor alerting: advisory alerts are ordinary
//! rules on the output series.
//!
//! # Bounds
//! Per output: two [`RateWindow`]s of at most `RATE_BUCKETS + 1` buckets each (about 4 KiB each)
//! for a forecast or a tangent angle (the tangent's second one only while it estimates its
//! constant-velocity rate), or at most [`MAX_ANTECEDENT_DAYS`] × 24 hourly sums for a rainfall.
//! Per reading: O(1) amortised for the windows, O(days × 24) for the rainfall; no allocation once
//! the windows are full.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::rules::{LineFit, RateWindow};
use super::RATE_MIN_SPAN_FRACTION;
use crate::model::{Refusal, TimestampNs, NANOS_PER_SEC};

/// Default smoothing window of the speed (forecast and tangent angle): six hours, six hourly
/// readings or more. Carlà et al. 2017 ask for smoothed velocities (reference §3.2); their
/// window lengths are unconfirmed [U], so this is the gateway's choice: long enough to average
/// out GNSS-class noise at hourly sampling, short against a failure stage of days.
pub const DEFAULT_SMOOTH: Duration = Duration::from_secs(6 * 3600);
/// Default window of the 1/v line: three days (gateway's choice; reference §3.2 asks to re-fit
/// on each reading, from the onset of acceleration: the window keeps the fit on the latest
/// stage, and the run is cut wherever the speed drops into its noise or changes sign).
pub const DEFAULT_FIT_WINDOW: Duration = Duration::from_secs(3 * 24 * 3600);
/// Default least readings in the smoothing window and in the 1/v window (3 at the least: a
/// residual variance needs n − 2 > 0).
pub const DEFAULT_SLOPE_MIN_POINTS: u32 = 5;
/// Least `min_points` accepted.
pub const MIN_SLOPE_MIN_POINTS: u32 = 3;
/// Default noise gate: a speed counts only when above this many standard errors of its own
/// least-squares estimate (reference §3.2: "each velocity must exceed k × the measured noise
/// floor"; k = 3 is the gateway's choice, about a 0.3 % chance per reading for Gaussian noise).
pub const DEFAULT_NOISE_FACTOR: f64 = 3.0;
/// Default least R² of the 1/v line (reference §3.2 asks for a minimum without a number; 0.9 is
/// the gateway's choice: a forecast from a poor line teaches people to ignore the next one).
pub const DEFAULT_MIN_R2: f64 = 0.9;
/// Default horizon: no forecast of a failure more than seven days away (reference §3.2: t_f must
/// lie within (0, horizon]; seven days is the gateway's choice, the farther the line's zero the
/// more it moves with each reading).
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);
/// Xu et al.: α of the constant-velocity stage (blue, 注意级), degrees (reference §3.1).
pub const TANGENT_CONSTANT_DEG: f64 = 45.0;
/// Xu et al.: α from which the medium-acceleration stage starts (orange, 警戒级), degrees.
pub const TANGENT_ORANGE_DEG: f64 = 80.0;
/// Xu et al.: α from which failure is imminent (red, 警报级), degrees.
pub const TANGENT_RED_DEG: f64 = 85.0;
/// Default half-width of "α ≈ 45°" (blue) around [`TANGENT_CONSTANT_DEG`], degrees. The table
/// gives no band [U]; 5° (a speed 19 % above the constant rate) is the gateway's choice, so that
/// noise on a creeping slope does not flicker between blue and yellow.
pub const DEFAULT_BLUE_BAND_DEG: f64 = 5.0;
/// Default effective antecedent duration, days: 10 d (Machicun No. 1 landslide, reference §3.1).
pub const DEFAULT_ANTECEDENT_DAYS: u32 = 10;
/// Longest antecedent duration accepted, days (its hourly sums are the rainfall's memory bound).
pub const MAX_ANTECEDENT_DAYS: u32 = 60;
/// Default daily decay factor K of the effective antecedent rainfall. The reference gives the
/// formula's duration but not K [U]; 0.8 is a value common in the Chinese landslide literature,
/// to be set from the site's own rainfall–displacement history.
pub const DEFAULT_DECAY: f64 = 0.8;
/// Default `store_every` of the slope kinds: the shortest time between two stored readings of
/// one of their series while its quality (gate verdict) and level stay the same. The judgement
/// is still made on every reading (the windows take each one); only storing is thinned. One
/// minute is the gateway's choice: slope stages last hours to days and a forecast's horizons are
/// hours (reference §3.2), so a minute's delay of a rule on these series changes no decision,
/// while a node read every few seconds would otherwise store up to eight series per reading
/// (README *Performance*). Displacement and rainfall read every 10 min to 1 h are stored every
/// reading, as before.
pub const DEFAULT_STORE_EVERY: Duration = Duration::from_secs(60);
/// Longest `store_every` accepted: a stored judgement an hour old would hide the run of a fast
/// failure stage from the console and the store.
pub const MAX_STORE_EVERY: Duration = Duration::from_secs(3600);
/// Hours per day.
const HOURS_PER_DAY: i64 = 24;
/// Nanoseconds per hour.
const HOUR_NS: i64 = 3600 * NANOS_PER_SEC;

/// Parameters of an `inverse_velocity` block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastParams {
    /// Smoothing window of the speed, ns.
    pub smooth_ns: i64,
    /// Window of the 1/v line, ns.
    pub window_ns: i64,
    /// Seconds per unit of time of the speed (86 400: mm/d, 1/v in d/mm).
    pub per_secs: f64,
    /// Least readings in each window.
    pub min_points: u32,
    /// Noise gate, standard errors.
    pub noise_factor: f64,
    /// Least speed that counts, input unit per `per` (0: only the measured noise gates).
    pub min_speed: f64,
    /// Least R² of the 1/v line.
    pub min_r2: f64,
    /// Farthest forecast, ns from the reading.
    pub horizon_ns: i64,
}

/// Parameters of a `tangent_angle` block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TangentParams {
    /// Smoothing window of the speed, ns.
    pub smooth_ns: i64,
    /// Seconds per unit of time of the rates.
    pub per_secs: f64,
    /// Least readings in a window.
    pub min_points: u32,
    /// The constant-velocity rate v_c, input unit per `per`, when configured.
    pub creep_rate: Option<f64>,
    /// Otherwise: the window it is estimated over, ns, from the channel's first reading.
    pub creep_window_ns: i64,
    /// Noise gate of the estimated rate, standard errors.
    pub noise_factor: f64,
    /// Half-width of the blue band around 45°, degrees.
    pub blue_band_deg: f64,
}

/// Parameters of an `antecedent_rainfall` block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AntecedentParams {
    /// Days summed (today is day 0).
    pub days: u32,
    /// Daily decay factor K, 0 < K ≤ 1.
    pub decay: f64,
}

/// A speed smoothed by least squares over a window, placed at the window's mean time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Speed {
    /// Input unit per `per`, signed.
    rate: f64,
    /// Its standard error, same unit.
    std_error: f64,
    /// The time it describes, ns (the readings' mean time: the slope of a window is the rate
    /// there, exactly so for a quadratic).
    at: TimestampNs,
}

/// The smoothed speed of `window`, once it holds `min_points` readings over half its length
/// (docs/DOMAIN.md §Data quality: a slope over less than the noise period is noise).
fn smoothed_speed(
    window: &mut RateWindow,
    window_ns: i64,
    min_points: u32,
    per_secs: f64,
) -> Option<Speed> {
    let fit = enough(window.fit(), window_ns, min_points)?;
    Some(Speed {
        rate: fit.slope.per_sec * per_secs,
        std_error: fit.slope_std_error() * per_secs,
        at: fit.mean_ts,
    })
}

/// `fit` when it rests on `min_points` readings spanning [`RATE_MIN_SPAN_FRACTION`] of
/// `window_ns`.
fn enough(fit: Option<LineFit>, window_ns: i64, min_points: u32) -> Option<LineFit> {
    fit.filter(|f| {
        f.slope.points >= min_points
            && f.slope.span_ns as f64 >= window_ns as f64 * RATE_MIN_SPAN_FRACTION
    })
}

/// A failure-time forecast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Where the 1/v line reaches zero, ns.
    pub failure_ts: TimestampNs,
    /// One standard deviation of it, seconds (from the line's uncertainty).
    pub sigma_secs: f64,
}

/// What one reading of a forecast block gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastOutcome {
    /// 1/v, `per` per input unit (d/mm), or why none.
    pub inverse_velocity: Result<f64, Refusal>,
    /// R² of the 1/v line, once there is one.
    pub r2: Option<f64>,
    /// The forecast, or the gate that refused it.
    pub forecast: Result<Prediction, Refusal>,
}

/// Fukuzono's inverse-velocity forecast of one displacement point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Displacement readings over the smoothing window.
    displacement: RateWindow,
    /// 1/v against time over the fit window, since the current run began.
    inverse: RateWindow,
    /// Sign of the current run's speed (reference §3.2: keep the longest same-sign run); 0
    /// before one.
    run_sign: i8,
}

impl Forecast {
    /// Its windows, in a fixed order (saved apart: `DerivedSet::state_changes`).
    pub fn windows_mut(&mut self) -> Vec<&mut RateWindow> {
        vec![&mut self.displacement, &mut self.inverse]
    }

    /// An empty forecast of `p`'s windows.
    #[must_use]
    pub fn new(p: &ForecastParams) -> Self {
        Self {
            displacement: RateWindow::new(p.smooth_ns),
            inverse: RateWindow::new(p.window_ns),
            run_sign: 0,
        }
    }

    /// True when the windows were made for `p` (a restored state of another config starts
    /// fresh).
    #[must_use]
    pub fn fits(&self, p: &ForecastParams) -> bool {
        let fresh = Self::new(p);
        self.displacement.width_ns == fresh.displacement.width_ns
            && self.inverse.width_ns == fresh.inverse.width_ns
    }

    /// Take a good displacement reading and re-fit (reference §3.2).
    pub fn on_reading(
        &mut self,
        p: &ForecastParams,
        ts: TimestampNs,
        value: f64,
    ) -> ForecastOutcome {
        self.displacement.push(ts, value);
        let refused = |r: Refusal| ForecastOutcome {
            inverse_velocity: Err(r),
            r2: None,
            forecast: Err(r),
        };
        let Some(speed) = smoothed_speed(
            &mut self.displacement,
            p.smooth_ns,
            p.min_points,
            p.per_secs,
        ) else {
            return refused(Refusal::TooFewReadings);
        };
        // Gate 1 (noise): the speed must stand out of its own measured noise and any configured
        // floor; a speed that does not ends the run, so the line never spans a quiet stretch.
        let magnitude = speed.rate.abs();
        let inverse = 1.0 / magnitude;
        // A speed so small that 1/v is not finite is no speed either.
        if magnitude <= p.noise_factor * speed.std_error
            || magnitude <= p.min_speed
            || !inverse.is_finite()
        {
            self.end_run();
            return refused(Refusal::TooNoisy);
        }
        // Gate 2 (same sign): a reversal starts a new run; |v| is used, not signed v.
        let sign = if speed.rate > 0.0 { 1 } else { -1 };
        if sign != self.run_sign {
            self.end_run();
            self.run_sign = sign;
        }
        self.inverse.push(speed.at, inverse);
        let Some(line) = enough(self.inverse.fit(), p.window_ns, p.min_points) else {
            return ForecastOutcome {
                inverse_velocity: Ok(inverse),
                r2: None,
                forecast: Err(Refusal::TooFewReadings),
            };
        };
        ForecastOutcome {
            inverse_velocity: Ok(inverse),
            r2: Some(line.r2),
            forecast: predict(&line, p, ts),
        }
    }

    /// Forget the run (the 1/v line restarts with the next significant speed).
    fn end_run(&mut self) {
        self.inverse.clear();
        self.run_sign = 0;
    }
}

/// The failure time of the 1/v line `line` at reading time `ts`, behind the gates of reference
/// §3.2 (falling 1/v, least R², within (ts, ts + horizon]).
///
/// With the line centred, 1/v = ȳ + b·(t − t̄), it reaches zero at t_f = t̄ − ȳ/b. Its variance
/// by the delta method, with var(ȳ) = s²/n, var(b) = s²/Sxx and cov(ȳ, b) = 0 for a centred line:
/// var(t_f) = s²/(n·b²) + ȳ²·s²/(b⁴·Sxx).
fn predict(line: &LineFit, p: &ForecastParams, ts: TimestampNs) -> Result<Prediction, Refusal> {
    let b = line.slope.per_sec;
    if b >= 0.0 {
        return Err(Refusal::NotAccelerating);
    }
    if line.r2 < p.min_r2 {
        return Err(Refusal::PoorFit);
    }
    let ybar = line.mean_value;
    let to_zero_secs = -ybar / b;
    let failure_ts = line
        .mean_ts
        .saturating_add((to_zero_secs * NANOS_PER_SEC as f64) as i64);
    if failure_ts <= ts {
        return Err(Refusal::FailureTimePassed);
    }
    if failure_ts - ts > p.horizon_ns {
        return Err(Refusal::BeyondHorizon);
    }
    let n = f64::from(line.slope.points);
    let s2 = line.residual_var;
    let var = s2 / (n * b * b) + ybar * ybar * s2 / (b.powi(4) * line.sxx);
    Ok(Prediction {
        failure_ts,
        sigma_secs: var.max(0.0).sqrt(),
    })
}

/// The warning level of a tangent angle (reference §3.1, Xu et al. via EURASIP JWCN 2021
/// Table 1): 0 below the blue band (decelerating), 1 blue (α ≈ 45°, constant velocity),
/// 2 yellow (up to 80°), 3 orange (80° ≤ α < 85°), 4 red (α ≥ 85°). The codes are the alert
/// levels' ([`crate::alert::Level::code`]).
#[must_use]
pub fn tangent_level(alpha_deg: f64, blue_band_deg: f64) -> u8 {
    if alpha_deg >= TANGENT_RED_DEG {
        4
    } else if alpha_deg >= TANGENT_ORANGE_DEG {
        3
    } else if alpha_deg > TANGENT_CONSTANT_DEG + blue_band_deg {
        2
    } else if alpha_deg >= TANGENT_CONSTANT_DEG - blue_band_deg {
        1
    } else {
        0
    }
}

/// The constant-velocity rate of a tangent angle, while it is estimated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Reference {
    /// Readings since `since` (0 before the first).
    Estimating {
        window: RateWindow,
        since: TimestampNs,
    },
    /// Estimated, input unit per `per`, over a window of `window_ns` (another configured
    /// window estimates again).
    Known { rate: f64, window_ns: i64 },
}

/// What one reading of a tangent-angle block gives: α in degrees and its level, or why none.
pub type TangentOutcome = Result<(f64, u8), Refusal>;

/// Xu et al.'s improved tangent angle of one displacement point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tangent {
    /// Displacement readings over the smoothing window.
    displacement: RateWindow,
    /// The estimated constant-velocity rate (unused when it is configured).
    reference: Reference,
}

impl Tangent {
    /// Its windows, in a fixed order (saved apart: `DerivedSet::state_changes`).
    pub fn windows_mut(&mut self) -> Vec<&mut RateWindow> {
        match &mut self.reference {
            Reference::Estimating { window, .. } => vec![&mut self.displacement, window],
            Reference::Known { .. } => vec![&mut self.displacement],
        }
    }

    /// An empty tangent angle of `p`'s windows.
    #[must_use]
    pub fn new(p: &TangentParams) -> Self {
        Self {
            displacement: RateWindow::new(p.smooth_ns),
            reference: Reference::Estimating {
                window: RateWindow::new(p.creep_window_ns.max(1)),
                since: 0,
            },
        }
    }

    /// True when the windows were made for `p`.
    #[must_use]
    pub fn fits(&self, p: &TangentParams) -> bool {
        let fresh = Self::new(p);
        self.displacement.width_ns == fresh.displacement.width_ns
            && match (&self.reference, &fresh.reference) {
                (
                    Reference::Estimating { window: a, .. },
                    Reference::Estimating { window: b, .. },
                ) => a.width_ns == b.width_ns,
                // An estimate over another window than the one configured now is estimated again.
                (Reference::Known { window_ns, .. }, _) => {
                    p.creep_rate.is_some() || *window_ns == p.creep_window_ns
                }
                _ => true,
            }
    }

    /// The estimated constant-velocity rate, once known (tests, logs).
    #[must_use]
    pub const fn estimated_rate(&self) -> Option<f64> {
        match self.reference {
            Reference::Known { rate, .. } => Some(rate),
            Reference::Estimating { .. } => None,
        }
    }

    /// Take a good displacement reading. `estimated` is set when this reading completed the
    /// estimate of the constant-velocity rate.
    pub fn on_reading(
        &mut self,
        p: &TangentParams,
        ts: TimestampNs,
        value: f64,
        estimated: &mut Option<f64>,
    ) -> TangentOutcome {
        self.displacement.push(ts, value);
        let reference = match p.creep_rate {
            Some(r) => r,
            None => match &mut self.reference {
                Reference::Known { rate, .. } => *rate,
                Reference::Estimating { window, since } => {
                    window.push(ts, value);
                    if *since == 0 {
                        *since = ts;
                    }
                    if ts.saturating_sub(*since) < p.creep_window_ns {
                        return Err(Refusal::NoReferenceRate);
                    }
                    // The rate over the first `creep_window` of the channel, when it stands out
                    // of its noise; otherwise the estimate starts again (T = S/v of a rate
                    // within its noise is noise).
                    match smoothed_speed(window, p.creep_window_ns, p.min_points, p.per_secs) {
                        Some(s) if s.rate.abs() > p.noise_factor * s.std_error => {
                            self.reference = Reference::Known {
                                rate: s.rate,
                                window_ns: p.creep_window_ns,
                            };
                            *estimated = Some(s.rate);
                            s.rate
                        }
                        _ => {
                            window.clear();
                            *since = ts;
                            return Err(Refusal::NoReferenceRate);
                        }
                    }
                }
            },
        };
        let speed = smoothed_speed(
            &mut self.displacement,
            p.smooth_ns,
            p.min_points,
            p.per_secs,
        )
        .ok_or(Refusal::TooFewReadings)?;
        // T = S/v_c, so ΔT/Δt is the smoothed speed over v_c (the least-squares slope of T over
        // the smoothing window), and α = arctan(ΔT/Δt) (reference §3.1).
        let alpha = (speed.rate / reference).atan().to_degrees();
        Ok((alpha, tangent_level(alpha, p.blue_band_deg)))
    }
}

/// The effective antecedent rainfall of one gauge: hourly sums of the last `days` days.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Antecedent {
    /// (hour number `floor(ts / 1 h)`, rainfall in it, a bad reading in it), oldest first.
    hours: VecDeque<(i64, f64, bool)>,
    /// For `input = "total"`: the last good total.
    #[serde(default)]
    pub last_total: Option<f64>,
}

impl Antecedent {
    /// Add the rainfall `amount` (or a bad reading, `None`) at `ts` and give
    /// R_eff = Σ_{i=0}^{days−1} K^i·R_i at `ts`, R_i the rainfall of the i-th 24 hours before the
    /// hour of `ts` (reference §3.3). `Err(())` while a bad reading is within the days summed;
    /// `None` for a reading older than them.
    pub fn on_amount(
        &mut self,
        p: &AntecedentParams,
        ts: TimestampNs,
        amount: Option<f64>,
    ) -> Option<Result<f64, ()>> {
        let hour = ts.div_euclid(HOUR_NS);
        let span = i64::from(p.days) * HOURS_PER_DAY;
        let newest = self.hours.back().map_or(hour, |h| h.0.max(hour));
        if hour <= newest - span {
            return None;
        }
        let pos = self.hours.partition_point(|h| h.0 < hour);
        match self.hours.get_mut(pos) {
            Some(h) if h.0 == hour => {
                h.1 += amount.unwrap_or(0.0);
                h.2 |= amount.is_none();
            }
            _ => self
                .hours
                .insert(pos, (hour, amount.unwrap_or(0.0), amount.is_none())),
        }
        while self.hours.front().is_some_and(|h| h.0 <= newest - span) {
            self.hours.pop_front();
        }
        let mut total = 0.0;
        for &(h, rain, bad) in self.hours.iter().filter(|h| h.0 <= hour) {
            let age = hour - h;
            if age >= span {
                continue;
            }
            if bad {
                return Some(Err(()));
            }
            // Day i = whole days of age; exponent i ≤ days − 1 ≤ MAX_ANTECEDENT_DAYS.
            let i = (age / HOURS_PER_DAY) as i32;
            total += p.decay.powi(i) * rain;
        }
        Some(Ok(total))
    }
}

#[cfg(test)]
mod tests;
