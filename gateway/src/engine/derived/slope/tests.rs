//! The slope kinds on numbers known in advance: a 1/v line whose zero is known in closed form,
//! the slope-failure scenario's truth (config/sim/slope-failure.toml, firmware-sim's
//! `physics::slope`) with the crack meter's noise, a noise-only series, the effective antecedent
//! rainfall worked by hand, and config problems with their paths.

use std::collections::BTreeMap;
use std::sync::Arc;

use firmware_sim::physics::{slope::Slope, Model, SECONDS_PER_DAY};
use firmware_sim::sensor::SensorKind;
use firmware_sim::signal::{gaussian, series_id};
use firmware_sim::Scenario;

use super::super::tests::{assert_problems_at, one_block, problems};
use super::*;
use crate::model::{Quality, QuantityKind, Reading, Refusal, Series};

const T0: i64 = 1_767_225_600 * NANOS_PER_SEC;
const H: i64 = 3600 * NANOS_PER_SEC;
const DAY_NS: i64 = 24 * H;

fn crack() -> Arc<Series> {
    Arc::new(Series::new(
        "anju-slope",
        "gw",
        "51010400301",
        "L1_LF_1",
        QuantityKind::Crack,
        "mm",
        &BTreeMap::new(),
    ))
}

/// The readings derived from one reading, by point.
fn by_point(out: &[Reading]) -> BTreeMap<String, (Option<f64>, Quality)> {
    out.iter()
        .map(|r| (r.series.point.clone(), (r.value, r.quality)))
        .collect()
}

#[test]
fn a_line_of_inverse_velocity_reaches_zero_at_the_closed_form_failure_time() {
    // 1/v = A·(t_f − t) with A = 0.05 (mm/d)⁻¹/d and t_f = 20 d (the slope-failure scenario's
    // line: v₀ = 2 mm/d, t_a = 10 d): hourly points from day 15 to day 18. A straight line is
    // fitted exactly: t_f = 20 d, σ = 0, R² = 1.
    let p = ForecastParams {
        smooth_ns: 6 * H,
        window_ns: 3 * DAY_NS,
        per_secs: 86_400.0,
        min_points: 5,
        noise_factor: 3.0,
        min_speed: 0.0,
        min_r2: 0.9,
        horizon_ns: 7 * DAY_NS,
    };
    let mut line = RateWindow::new(p.window_ns);
    let mut at = 0;
    for h in 15 * 24..=18 * 24 {
        at = T0 + h * H;
        let t_days = h as f64 / 24.0;
        // Per second: 1/v in d/mm is A·(t_f − t); the line is pushed in the units the forecast
        // uses (1/v against ns time), its slope −A d/mm per day.
        line.push(at, 0.05 * (20.0 - t_days));
    }
    let fit = line.fit().expect("fit");
    assert!((fit.r2 - 1.0).abs() < 1e-9, "{}", fit.r2);
    let f = predict(&fit, &p, at).expect("forecast");
    let error_s = (f.failure_ts - (T0 + 20 * DAY_NS)) as f64 / 1e9;
    assert!(error_s.abs() < 1.0, "t_f off by {error_s} s");
    assert!(f.sigma_secs < 1.0, "{}", f.sigma_secs);
    // 2 days left: beyond a 1-day horizon it is refused, not given.
    let near = ForecastParams {
        horizon_ns: DAY_NS,
        ..p
    };
    assert_eq!(predict(&fit, &near, at), Err(Refusal::BeyondHorizon));
}

#[test]
fn a_displacement_with_a_linear_inverse_velocity_forecasts_its_failure_time() {
    // D(t) = v₀·(t_f − t_a)·ln((t_f − t_a)/(t_f − t)) from t_a = 0: v = v₀·t_f/(t_f − t), so
    // 1/v = (t_f − t)/(v₀·t_f), a line through zero at t_f = 10 d. No noise: the forecast from
    // day 6 to day 9 is within 1 % of the time left (the 6 h smoothing places each speed at its
    // readings' mean time; what is left is the logarithm's curvature within 6 h, which grows as
    // the 6 h become a larger share of the time left: 1.1 % at 12 h left).
    let mut set =
        one_block("name = \"inv\"\nkind = \"inverse_velocity\"\nselect = { kind = \"crack\" }\n");
    let s = crack();
    let (v0, tf) = (2.0, 10.0);
    for h in 0..=(9 * 24) {
        let t = h as f64 / 24.0;
        let d = v0 * tf * (tf / (tf - t)).ln();
        let out = by_point(&set.on_batch(&[Reading::good(Arc::clone(&s), T0 + h * H, d)]));
        if t < 6.0 {
            continue;
        }
        let (Some(ttf), Quality::Good) = out["L1_LF_1.inv.time_to_failure"] else {
            panic!("no forecast at day {t}: {out:?}");
        };
        let left_h = (tf - t) * 24.0;
        assert!(
            (ttf - left_h).abs() <= 0.01 * left_h,
            "day {t}: {ttf} h left, truth {left_h} h"
        );
        let (Some(tf_s), Quality::Good) = out["L1_LF_1.inv.failure_time"] else {
            panic!("{out:?}");
        };
        assert!(
            (tf_s - (T0 / NANOS_PER_SEC) as f64 - tf * 86_400.0).abs() <= 0.01 * left_h * 3600.0
        );
        let (Some(inv), Quality::Good) = out["L1_LF_1.inv.inverse_velocity"] else {
            panic!("{out:?}");
        };
        // 1/v at the smoothing window's mean time, 3 h before the reading (and a bit more).
        let truth = (tf - (t - 0.125)) / (v0 * tf);
        assert!((inv - truth).abs() < 0.01 * truth, "{inv} vs {truth}");
    }
}

/// The slope-failure scenario's model and its crack meter's truth with the simulator's noise.
struct Scenario1 {
    slope: Slope,
    seed: u64,
}

impl Scenario1 {
    fn load() -> Self {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/sim/slope-failure.toml");
        let scenario = Scenario::load(&path).expect("scenario");
        let slope = scenario
            .physics
            .models()
            .iter()
            .find_map(|m| match m {
                Model::Slope(s) => Some(s.clone()),
                _ => None,
            })
            .expect("a slope");
        Self {
            slope,
            seed: scenario.seed,
        }
    }

    /// The crack meter C1 (factor 0.9 of the sliding mass) at hour `h`, with the crack meter's
    /// noise (σ = 0.025 mm, firmware-sim's `SensorKind::CrackMeter`) drawn as the simulator does.
    fn crack_at(&self, h: i64) -> f64 {
        let factor = self
            .slope
            .points
            .iter()
            .find(|p| p.name == "C1")
            .map_or(0.0, |p| p.factor);
        let t_days = h as f64 * 3600.0 / SECONDS_PER_DAY;
        let id = series_id(self.seed, "51010400301", "L1_LF_1");
        factor * self.slope.displacement(t_days)
            + SensorKind::CrackMeter.noise_sigma() * gaussian(id, h.unsigned_abs())
    }

    fn failure(&self) -> (f64, f64) {
        let f = self.slope.failure.expect("failure");
        (f.onset_days, f.failure_days)
    }
}

#[test]
fn slope_failure_scenario_forecast_is_within_ten_percent_once_eighty_percent_of_the_acceleration_passed(
) {
    let sc = Scenario1::load();
    let (ta, tf) = sc.failure();
    let mut set =
        one_block("name = \"inv\"\nkind = \"inverse_velocity\"\nselect = { kind = \"crack\" }\n");
    let s = crack();
    let from = ta + 0.8 * (tf - ta);
    let mut checked = 0;
    let mut before_onset = Vec::new();
    // Hourly, as the scenario samples, up to three hours before the failure (with two hours
    // left the error is 0.19 h, close to the 10 %: the 6 h smoothing is then three times the
    // time left).
    for h in 0..((tf - 3.0 / 24.0) * 24.0) as i64 {
        let t = h as f64 / 24.0;
        let out =
            by_point(&set.on_batch(&[Reading::good(Arc::clone(&s), T0 + h * H, sc.crack_at(h))]));
        let ttf = out["L1_LF_1.inv.time_to_failure"];
        if t < ta && ttf.1 == Quality::Good {
            before_onset.push((t, ttf.0));
        }
        if t >= from {
            let (Some(ttf), Quality::Good) = ttf else {
                panic!("no forecast at day {t:.2}: {out:?}");
            };
            let left_h = (tf - t) * 24.0;
            assert!(
                (ttf - left_h).abs() <= 0.1 * left_h,
                "day {t:.2}: {ttf:.1} h left, truth {left_h:.1} h"
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked}");
    // The creep stage (with its rain steps on days 2 and 5) forecasts nothing.
    assert!(before_onset.is_empty(), "{before_onset:?}");
}

#[test]
fn a_noise_only_series_never_yields_a_forecast() {
    // Sixty days of a still point read hourly with GNSS-class noise (σ = 1 mm) and with the
    // crack meter's (σ = 0.025 mm), and a creeping point (2 mm/d, constant): every forecast
    // reading is flagged, none is a value.
    for (name, sigma, creep) in [
        ("gnss", 1.0, 0.0),
        ("crack", 0.025, 0.0),
        ("creep", 0.025, 2.0),
    ] {
        let mut set = one_block(
            "name = \"inv\"\nkind = \"inverse_velocity\"\nselect = { kind = \"crack\" }\n",
        );
        let s = crack();
        let id = series_id(11, "noise", name);
        let mut codes = BTreeMap::new();
        for h in 0..60 * 24_i64 {
            let v = creep * h as f64 / 24.0 + sigma * gaussian(id, h.unsigned_abs());
            let out = set.on_batch(&[Reading::good(Arc::clone(&s), T0 + h * H, v)]);
            for r in &out {
                if r.series.point.ends_with("time_to_failure")
                    || r.series.point.ends_with("failure_time")
                {
                    assert!(
                        r.value.is_none(),
                        "{name}: forecast at hour {h}: {:?}",
                        r.value
                    );
                    *codes.entry(r.quality.code()).or_insert(0) += 1;
                }
            }
        }
        assert!(!codes.contains_key(&0), "{name}: {codes:?}");
        // The reason is recorded: noise for the still point, no acceleration (or a poor line)
        // for the creeping one.
        if creep == 0.0 {
            assert!(codes.contains_key(&421), "{name}: {codes:?}");
        } else {
            assert!(
                !codes.contains_key(&421) || codes[&421] < 10,
                "{name}: {codes:?}"
            );
        }
    }
}

#[test]
fn slope_failure_scenario_tangent_level_climbs_in_order_and_stays_below_orange_while_creeping() {
    let sc = Scenario1::load();
    let (ta, tf) = sc.failure();
    // v_c = 0.9 × 2 mm/d, the crack meter's share of the scenario's creep.
    let mut set = one_block("name = \"xu\"\nkind = \"tangent_angle\"\nselect = { kind = \"crack\" }\ncreep_rate = 1.8\n");
    let s = crack();
    let mut first = [None::<f64>; 5];
    let mut highest = 0_u8;
    for h in 0..((tf - 2.0 / 24.0) * 24.0) as i64 {
        let t = h as f64 / 24.0;
        let out =
            by_point(&set.on_batch(&[Reading::good(Arc::clone(&s), T0 + h * H, sc.crack_at(h))]));
        let (Some(level), Quality::Good) = out["L1_LF_1.xu.level"] else {
            continue;
        };
        let level = level as u8;
        if t < ta {
            assert!(
                level <= 2,
                "level {level} on day {t:.2} in the creep stage: {out:?}"
            );
        } else {
            // Once in a stage of the acceleration, never back more than one level (a boundary
            // crossed by noise), and the first time of each level in order.
            assert!(
                level + 1 >= highest,
                "day {t:.2}: level {level} after {highest}"
            );
            highest = highest.max(level);
            first[usize::from(level)].get_or_insert(t);
        }
    }
    let [_, _, Some(yellow), Some(orange), Some(red)] = first else {
        panic!("levels reached: {first:?}");
    };
    assert!(yellow < orange && orange < red, "{first:?}");
    // tan α = v/v_c = (t_f − t_a)/(t_f − t): α = 80° at t_f − 10/tan 80° = 18.24 d, 85° at
    // 19.13 d (the 6 h smoothing lags by about 3 h).
    let at = |deg: f64| tf - (tf - ta) / deg.to_radians().tan();
    assert!((orange - at(80.0)).abs() < 0.25, "orange on day {orange}");
    assert!((red - at(85.0)).abs() < 0.25, "red on day {red}");
}

#[test]
fn the_constant_velocity_rate_is_estimated_over_its_window() {
    let sc = Scenario1::load();
    // Days 0–2, before the first rain: the crack meter creeps at 0.9 × 2 = 1.8 mm/d.
    let p = TangentParams {
        smooth_ns: 6 * H,
        per_secs: 86_400.0,
        min_points: 5,
        creep_rate: None,
        creep_window_ns: 2 * DAY_NS - H,
        noise_factor: 3.0,
        blue_band_deg: 5.0,
    };
    let mut t = Tangent::new(&p);
    let mut estimated = None;
    let mut outcome = Err(Refusal::NoReferenceRate);
    for h in 0..48 {
        outcome = t.on_reading(&p, T0 + h * H, sc.crack_at(h), &mut estimated);
        if h < 47 {
            assert_eq!(outcome, Err(Refusal::NoReferenceRate), "hour {h}");
        }
    }
    let rate = t.estimated_rate().expect("estimated");
    assert_eq!(estimated, Some(rate));
    assert!((rate - 1.8).abs() < 0.02, "{rate}");
    let (alpha, level) = outcome.expect("angle");
    assert!((alpha - 45.0).abs() < 5.0 && level == 1, "{alpha} {level}");
    // Restored under the same config it is kept; under another `creep_window` it is estimated
    // again, and a configured `creep_rate` makes it irrelevant.
    assert!(t.fits(&p));
    let longer = TangentParams {
        creep_window_ns: 3 * DAY_NS,
        ..p
    };
    assert!(!t.fits(&longer));
    let configured = TangentParams {
        creep_rate: Some(1.8),
        creep_window_ns: 0,
        ..p
    };
    assert!(t.fits(&configured));
}

#[test]
fn tangent_levels_follow_the_table() {
    // Reference §3.1 (EURASIP JWCN 2021 Table 1), with the default 5° band around 45°.
    for (alpha, level) in [
        (30.0, 0),
        (41.0, 1),
        (45.0, 1),
        (50.0, 1),
        (50.1, 2),
        (79.9, 2),
        (80.0, 3),
        (84.9, 3),
        (85.0, 4),
        (89.9, 4),
    ] {
        assert_eq!(
            tangent_level(alpha, DEFAULT_BLUE_BAND_DEG),
            level,
            "{alpha}"
        );
    }
}

#[test]
fn effective_antecedent_rainfall_decays_by_day() {
    // K = 0.5, 3 days: 10 mm at hour 0, 4 mm at hour 30, 2 mm at hour 50.
    // At hour 50: ages 50 h (day 2), 20 h (day 0), 0 h (day 0): 0.25·10 + 4 + 2 = 8.5 mm.
    // At hour 72 (no rain, a 0 reading): ages 72 h (out), 42 h (day 1), 22 h (day 0):
    // 0.5·4 + 2 = 4 mm.
    let p = AntecedentParams {
        days: 3,
        decay: 0.5,
    };
    let mut a = Antecedent::default();
    assert_eq!(a.on_amount(&p, T0, Some(10.0)), Some(Ok(10.0)));
    assert_eq!(
        a.on_amount(&p, T0 + 30 * H, Some(4.0)),
        Some(Ok(0.5 * 10.0 + 4.0))
    );
    assert_eq!(a.on_amount(&p, T0 + 50 * H, Some(2.0)), Some(Ok(8.5)));
    assert_eq!(a.on_amount(&p, T0 + 72 * H, Some(0.0)), Some(Ok(4.0)));
    // A bad reading flags the sums it is in; older than the window, a reading gives none.
    assert_eq!(a.on_amount(&p, T0 + 73 * H, None), Some(Err(())));
    assert_eq!(a.on_amount(&p, T0, Some(1.0)), None);
    assert!(a.hours.len() <= (3 * 24) as usize);
}

#[test]
fn antecedent_rainfall_of_a_gauge_total_through_the_engine() {
    // A counter: 0, 10 (10 mm in hour 1), 10, 14 (4 mm on the next day): K = 0.8 (default).
    let mut set = one_block("name = \"r_eff\"\nkind = \"antecedent_rainfall\"\nselect = { kind = \"rainfall\" }\ninput = \"total\"\n");
    let gauge = Arc::new(Series::new(
        "s",
        "gw",
        "rain-1",
        "total",
        QuantityKind::Rainfall,
        "mm",
        &BTreeMap::new(),
    ));
    let mut got = Vec::new();
    for (h, total) in [(0, 0.0), (1, 10.0), (2, 10.0), (26, 14.0)] {
        got.extend(
            set.on_batch(&[Reading::good(Arc::clone(&gauge), T0 + h * H, total)])
                .into_iter()
                .map(|r| (r.series.key.clone(), r.value, r.series.kind)),
        );
    }
    assert_eq!(got.len(), 3, "the first total is a base: {got:?}");
    assert_eq!(got[0].0, "rain-1/total.r_eff");
    assert_eq!(got[0].2, QuantityKind::Rainfall);
    assert!((got[1].1.unwrap_or(0.0) - 10.0).abs() < 1e-9);
    assert!(
        (got[2].1.unwrap_or(0.0) - (0.8 * 10.0 + 4.0)).abs() < 1e-9,
        "{got:?}"
    );
}

#[test]
fn slope_parameters_are_checked_with_their_paths() {
    let got = problems(
        r#"
[[derived]]
name = "inv"
kind = "inverse_velocity"
select = { kind = "crack" }
min_r2 = 1.5
window = "1h"
creep_rate = 2.0

[[derived]]
name = "xu"
kind = "tangent_angle"
select = { kind = "crack" }

[[derived]]
name = "r"
kind = "antecedent_rainfall"
select = { kind = "rainfall" }
decay = 0.0
days = 100
"#,
    );
    assert_problems_at(
        &got,
        &[
            "derived[0].min_r2",
            "derived[0].window",
            "derived[0].creep_rate",
            "derived[1].creep_rate",
            "derived[2].decay",
            "derived[2].days",
        ],
    );
    let creep = got
        .iter()
        .find(|p| p.0 == "derived[1].creep_rate")
        .map(|p| p.1.as_str())
        .unwrap_or_default();
    assert!(creep.contains("creep_window"), "{creep}");
}

#[test]
fn forecast_state_survives_a_restart() {
    let text = "name = \"inv\"\nkind = \"inverse_velocity\"\nselect = { kind = \"crack\" }\n";
    let (v0, tf) = (2.0, 10.0);
    let d = |h: i64| {
        let t = h as f64 / 24.0;
        v0 * tf * (tf / (tf - t)).ln()
    };
    let s = crack();
    let mut a = one_block(text);
    let mut b = one_block(text);
    for h in 0..(7 * 24) {
        a.on_batch(&[Reading::good(Arc::clone(&s), T0 + h * H, d(h))]);
        b.on_batch(&[Reading::good(Arc::clone(&s), T0 + h * H, d(h))]);
    }
    let (delta, errors) = a.state_changes();
    assert_eq!(errors, 0);
    let entries: Vec<(String, Vec<u8>)> = delta
        .entries
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    assert_eq!(entries.len(), 1, "one entry per forecast, not per series");
    assert_eq!(
        entries[0].0,
        "v/inv/51010400301/L1_LF_1.inv.time_to_failure"
    );
    let mut restarted = one_block(text);
    assert!(restarted.restore(&entries).is_empty());
    let h = 7 * 24;
    let next = Reading::good(Arc::clone(&s), T0 + h * H, d(h));
    assert_eq!(
        by_point(&restarted.on_batch(std::slice::from_ref(&next))),
        by_point(&b.on_batch(&[next]))
    );
}

/// The rule templates of config/site.example.toml on the slope-failure scenario's crack meter:
/// the advisory says what it is (a predicted time to failure) and comes only after the onset of
/// acceleration; the tangent-angle alert climbs yellow → orange → red, never orange or red in the
/// creep stage.
#[test]
fn slope_rule_templates_raise_an_advisory_and_climb_the_tangent_levels() {
    use crate::alert::{AlertState, Level};
    use crate::engine::rules::{AlertsConfig, Evaluator, RuleSet};
    let rules: AlertsConfig = toml::from_str(
        r#"
language = "en"
[[rules]]
name = "failure-forecast"
kind = "absolute"
select = { kind = "time_to_failure", tags = { derived = "inv" } }
lower = { blue = 72.0, yellow = 24.0 }
confirm = { count = 3 }

[[rules]]
name = "tangent-angle"
kind = "absolute"
select = { kind = "tangent_angle", tags = { derived = "xu" } }
upper = { yellow = 50.0, orange = 80.0, red = 85.0 }
confirm = { count = 2 }
clear = { deadband_abs = 2.0 }
"#,
    )
    .expect("rules");
    let mut ev = Evaluator::new(RuleSet::from_config(&rules, "alerts").expect("valid"), "s");
    let mut set = one_block(
        "name = \"inv\"\nkind = \"inverse_velocity\"\nselect = { kind = \"crack\" }\n\n[[derived]]\nname = \"xu\"\nkind = \"tangent_angle\"\nselect = { kind = \"crack\" }\ncreep_rate = 1.8\n",
    );
    let sc = Scenario1::load();
    let (ta, tf) = sc.failure();
    let s = crack();
    let mut events = Vec::new();
    for h in 0..((tf - 2.0 / 24.0) * 24.0) as i64 {
        let ts = T0 + h * H;
        for d in set.on_batch(&[Reading::good(Arc::clone(&s), ts, sc.crack_at(h))]) {
            for a in ev.on_reading(&d, ts).1 {
                events.push((h as f64 / 24.0, a));
            }
        }
    }
    let of = |rule: &str| -> Vec<&(f64, crate::alert::Alert)> {
        events.iter().filter(|(_, a)| a.rule == rule).collect()
    };
    let advisory = of("failure-forecast");
    let (day, first) = advisory.first().map(|(d, a)| (*d, a)).expect("an advisory");
    assert!(day > ta, "advisory on day {day}");
    assert!(
        first
            .message
            .contains("predicted time to failure (inverse-velocity advisory)")
            && first.message.contains(" h, below the"),
        "{}",
        first.message
    );
    // Raised within a day after 72 h were left (three readings to confirm, 6 h smoothing).
    assert!((tf - 3.0..tf - 2.0).contains(&day), "advisory on day {day}");
    assert!(advisory.iter().all(|(_, a)| a.level <= Level::Yellow));
    let tangent = of("tangent-angle");
    for (day, a) in &tangent {
        assert!(
            *day >= ta || a.level < Level::Orange,
            "{:?} on day {day}",
            a.level
        );
    }
    let after: Vec<Level> = tangent
        .iter()
        .filter(|(d, a)| *d >= ta && a.state != AlertState::Cleared)
        .map(|(_, a)| a.level)
        .collect();
    assert!(after.windows(2).all(|w| w[0] <= w[1]), "{after:?}");
    assert_eq!(
        after.iter().rev().take(1).collect::<Vec<_>>(),
        [&Level::Red],
        "{after:?}"
    );
    assert!(
        after.contains(&Level::Yellow) && after.contains(&Level::Orange),
        "{after:?}"
    );
}

#[test]
fn a_bad_displacement_flags_every_slope_series_410_and_early_readings_say_too_few() {
    let mut set = one_block(
        "name = \"inv\"\nkind = \"inverse_velocity\"\nselect = { kind = \"crack\" }\n\n[[derived]]\nname = \"xu\"\nkind = \"tangent_angle\"\nselect = { kind = \"crack\" }\ncreep_rate = 1.8\n",
    );
    let s = crack();
    let first = by_point(&set.on_batch(&[Reading::good(Arc::clone(&s), T0, 1.0)]));
    assert_eq!(first.len(), 7, "{first:?}");
    let too_few = Quality::Refused(Refusal::TooFewReadings);
    assert!(first.values().all(|v| *v == (None, too_few)), "{first:?}");
    let bad = by_point(&set.on_batch(&[Reading::bad(Arc::clone(&s), T0 + H, Quality::Timeout)]));
    assert_eq!(bad.len(), 7, "{bad:?}");
    assert!(
        bad.values().all(|v| *v == (None, Quality::DerivedInputBad)),
        "{bad:?}"
    );
    let kinds: BTreeMap<String, (QuantityKind, String)> = set
        .on_batch(&[Reading::good(Arc::clone(&s), T0 + 2 * H, 1.1)])
        .iter()
        .map(|r| {
            (
                r.series.point.clone(),
                (r.series.kind, r.series.unit.clone()),
            )
        })
        .collect();
    let want = [
        (
            "L1_LF_1.inv.time_to_failure",
            QuantityKind::TimeToFailure,
            "h",
        ),
        (
            "L1_LF_1.inv.inverse_velocity",
            QuantityKind::InverseVelocity,
            "d/mm",
        ),
        (
            "L1_LF_1.inv.failure_time",
            QuantityKind::FailureForecast,
            "unix_s",
        ),
        (
            "L1_LF_1.inv.failure_time_sigma",
            QuantityKind::FailureForecast,
            "h",
        ),
        ("L1_LF_1.inv.fit_r2", QuantityKind::FailureForecast, "ratio"),
        ("L1_LF_1.xu.angle", QuantityKind::TangentAngle, "deg"),
        ("L1_LF_1.xu.level", QuantityKind::Status, "level"),
    ];
    for (point, kind, unit) in want {
        assert_eq!(
            kinds.get(point),
            Some(&(kind, unit.to_owned())),
            "{point}: {kinds:?}"
        );
    }
}

#[test]
fn a_point_moving_the_negative_way_forecasts_the_same_failure_time() {
    // The same closed-form movement read with the other sign (a sensor mounted the other way,
    // an axis pointing up-slope): the speed |v| is used, so the forecast is the same.
    let (v0, tf) = (2.0, 10.0);
    let d = |h: i64| {
        let t = h as f64 / 24.0;
        v0 * tf * (tf / (tf - t)).ln()
    };
    let text = "name = \"inv\"\nkind = \"inverse_velocity\"\nselect = { kind = \"crack\" }\n";
    let (mut up, mut down) = (one_block(text), one_block(text));
    let s = crack();
    for h in 0..=(8 * 24) {
        let a = by_point(&up.on_batch(&[Reading::good(Arc::clone(&s), T0 + h * H, d(h))]));
        let b = by_point(&down.on_batch(&[Reading::good(Arc::clone(&s), T0 + h * H, -d(h))]));
        let key = "L1_LF_1.inv.time_to_failure";
        match (a[key], b[key]) {
            ((Some(x), Quality::Good), (Some(y), Quality::Good)) => {
                assert!((x - y).abs() < 1e-6, "hour {h}: {x} vs {y}");
            }
            (x, y) => assert_eq!(x, y, "hour {h}"),
        }
    }
}

#[test]
fn store_every_thins_unchanged_judgements_and_stores_a_new_level_at_once() {
    // A crack creeping at exactly v_c = 1.8 mm/d read every 10 s: α = arctan(v/v_c) = 45°
    // (blue, level 1) once the 10-min smoothing window holds readings over half its length
    // (t = 300 s); from t = 1800 s it moves at 100 mm/d. By hand, with the window's 61 readings
    // 10 s apart (Sxx = 100 s²·61·(61² − 1)/12 = 1 891 000 s²), the second reading after the kink
    // adds 98.2 mm/d·(300·20 + 290·10) s²/Sxx = 0.46 mm/d: α = arctan(2.26/1.8) = 51.5° > 50°,
    // yellow (level 2) at t = 1820 s.
    const S: i64 = NANOS_PER_SEC;
    let crack_at = |t: i64| {
        let d = |secs: i64, rate: f64| rate * secs as f64 / 86_400.0;
        if t <= 1800 {
            d(t, 1.8)
        } else {
            d(1800, 1.8) + d(t - 1800, 100.0)
        }
    };
    let block = |every: &str| {
        one_block(&format!("name = \"xu\"\nkind = \"tangent_angle\"\nselect = {{ kind = \"crack\" }}\ncreep_rate = 1.8\nsmooth = \"10m\"\n{every}"))
    };
    let s = crack();
    // (time s, angle, quality) of the stored angle readings, and the stored levels.
    let run = |set: &mut super::super::DerivedSet| {
        let mut angles = Vec::new();
        let mut levels = Vec::new();
        for t in (0..=1900).step_by(10) {
            for r in set.on_batch(&[Reading::good(Arc::clone(&s), T0 + t * S, crack_at(t))]) {
                match r.series.point.as_str() {
                    "L1_LF_1.xu.angle" => angles.push((t, r.value, r.quality)),
                    "L1_LF_1.xu.level" => levels.push((t, r.value)),
                    other => panic!("unexpected series {other}"),
                }
            }
        }
        (angles, levels)
    };
    // The default: once a minute while unchanged.
    let (angles, levels) = run(&mut block(""));
    let refused: Vec<i64> = angles
        .iter()
        .filter(|a| a.2 == Quality::Refused(Refusal::TooFewReadings))
        .map(|a| a.0)
        .collect();
    assert_eq!(refused, [0, 60, 120, 180, 240], "{angles:?}");
    let blue: Vec<i64> = levels
        .iter()
        .filter(|l| l.1 == Some(1.0))
        .map(|l| l.0)
        .collect();
    // Good from t = 300 s on (a new verdict: stored at once), then every 60 s to the kink.
    let want: Vec<i64> = (300..=1800).step_by(60).collect();
    assert_eq!(blue, want, "{levels:?}");
    for (t, alpha, q) in angles.iter().filter(|a| (300..=1800).contains(&a.0)) {
        assert_eq!(*q, Quality::Good, "t = {t}");
        let alpha = alpha.unwrap_or(f64::NAN);
        assert!((alpha - 45.0).abs() < 1e-6, "t = {t}: α = {alpha}");
    }
    let yellow = levels.iter().find(|l| l.1 == Some(2.0)).map(|l| l.0);
    assert_eq!(yellow, Some(1820), "{levels:?}");
    // `store_every = "0s"`: every reading.
    let (angles, _) = run(&mut block("store_every = \"0s\""));
    assert_eq!(angles.len(), 191);
    assert!(problems(
        "[[derived]]\nname = \"xu\"\nkind = \"tangent_angle\"\nselect = { kind = \"crack\" }\ncreep_rate = 1.8\nstore_every = \"2h\"\n"
    )
    .iter()
    .any(|p| p.0 == "derived[0].store_every" && p.1.contains("1m")));
}

#[test]
fn the_running_window_fit_equals_a_direct_least_squares_fit_over_the_same_readings() {
    // The speed window of the forecast (6 h, 64 buckets of 5.6 min) on the slope-failure
    // scenario's crack meter read every 10 min for 20 days less two hours (2,868 readings, the
    // oldest bucket leaving on nearly every reading): after each reading, slope, mean, residual
    // variance and R² of the window's running sums equal a two-pass fit of the readings it holds
    // (those in the newest bucket and the 64 before it), to a relative 1e-9.
    use super::super::super::rules::RATE_BUCKETS;
    let sc = Scenario1::load();
    let window_ns = 6 * H;
    let width = window_ns / RATE_BUCKETS;
    let mut w = RateWindow::new(window_ns);
    let mut held: Vec<(i64, f64)> = Vec::new();
    let step = 600 * NANOS_PER_SEC;
    for k in 0..(20 * 144 - 12) {
        let ts = T0 + k * step;
        let h = k / 6;
        let v = sc.crack_at(h) + 0.3 * ((k % 6) as f64) / 144.0;
        w.push(ts, v);
        held.push((ts, v));
        let newest = ts.div_euclid(width);
        held.retain(|(t, _)| t.div_euclid(width) >= newest - RATE_BUCKETS);
        let Some(fit) = w.fit() else {
            assert!(
                held.len() < 2,
                "reading {k}: no fit over {} readings",
                held.len()
            );
            continue;
        };
        let n = held.len() as f64;
        let secs = |t: i64| (t - T0) as f64 / NANOS_PER_SEC as f64;
        let tbar = held.iter().map(|(t, _)| secs(*t)).sum::<f64>() / n;
        let vbar = held.iter().map(|(_, v)| v).sum::<f64>() / n;
        let sxx: f64 = held.iter().map(|(t, _)| (secs(*t) - tbar).powi(2)).sum();
        let sxy: f64 = held
            .iter()
            .map(|(t, v)| (secs(*t) - tbar) * (v - vbar))
            .sum();
        let syy: f64 = held.iter().map(|(_, v)| (v - vbar).powi(2)).sum();
        let b = sxy / sxx;
        let sse: f64 = held
            .iter()
            .map(|(t, v)| (v - vbar - b * (secs(*t) - tbar)).powi(2))
            .sum();
        let close = |a: f64, b: f64, what: &str| {
            assert!(
                (a - b).abs() <= 1e-9 * b.abs().max(1e-12) + 1e-12,
                "reading {k}: {what} {a} (running) vs {b} (direct)"
            );
        };
        assert_eq!(fit.slope.points as usize, held.len(), "reading {k}");
        close(fit.slope.per_sec, b, "slope");
        close(fit.mean_value, vbar, "mean");
        close(secs(fit.mean_ts), tbar, "mean time");
        if held.len() > 2 {
            close(fit.residual_var, sse / (n - 2.0), "residual variance");
            close(fit.r2, (1.0 - sse / syy).clamp(0.0, 1.0), "R²");
        }
    }
}
