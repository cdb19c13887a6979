//! The physics against its formulas, worked by hand: settlement under ramped load steps and its
//! final value, the hydration-heat peak of a pour and its time, the GB 50496 limits kept by one
//! raft and broken by the other, the inverse-velocity line reaching zero at the failure time
//! (exactly from the model's velocities, and within a derived tolerance from the GNSS readings),
//! the instruments of one slope agreeing with each other, readings on the wire following the
//! channels, and a seed giving the same run twice.

mod common;

use std::path::Path;

use common::{decode, within};
use firmware_sim::physics::Physics;
use firmware_sim::profile::Function;
use firmware_sim::scenario::CigemKind;
use firmware_sim::sensor::Reader as SensorReader;
use firmware_sim::{ClockMode, Scenario, Site, StartOptions};
use tokio_modbus::client::tcp;
use tokio_modbus::prelude::*;

/// Seconds per day.
const DAY: f64 = 86_400.0;

fn load(name: &str) -> Scenario {
    Scenario::load(&common::repo().join("config/sim").join(name)).expect("scenario loads")
}

/// Loads a scenario written in the test.
fn scenario(dir: &Path, text: &str) -> Scenario {
    let file = dir.join("x.toml");
    std::fs::write(&file, text).expect("write");
    Scenario::load_with_profiles(&file, &common::repo().join("config/profiles"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn channel<'a>(p: &'a Physics, name: &str) -> impl Fn(f64) -> f64 + 'a {
    let id = p
        .channel(name)
        .unwrap_or_else(|| panic!("no channel {name}"));
    move |t_days: f64| p.value(id, t_days * DAY)
}

const HEAD: &str = "name = \"x\"\nseed = 1\nsample_interval = \"10min\"\nsite = \"s\"\n";

#[test]
fn settlement_follows_the_ramped_exponential_and_converges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = scenario(
        dir.path(),
        &format!(
            "{HEAD}
[[settlement]]
name = \"b\"
consolidation_days = 40.0
pairs = [[\"P1\", \"P2\"]]
[[settlement.points]]
name = \"P1\"
x_m = 0.0
y_m = 0.0
factor = 1.2
[[settlement.points]]
name = \"P2\"
x_m = 6.0
y_m = 8.0
factor = 0.9
[[settlement.points]]
name = \"P3\"
x_m = 12.0
y_m = 0.0
creep_mm_per_day = 0.08
creep_from = \"60d\"
[[settlement.loads]]
at = \"0s\"
ramp = \"10d\"
settlement_mm = 12.0
[[settlement.loads]]
at = \"30d\"
settlement_mm = 8.0
"
        ),
    );
    let p = &s.physics;
    let p1 = channel(p, "b.P1");
    let p2 = channel(p, "b.P2");
    // T = 40 d. During the first ramp (d = 10 d), at t = 5 d:
    //   U = [5 − 40·(1 − e^(−5/40))]/10 = [5 − 40·0.117503097415405]/10 = 0.029987610338
    //   s_P1 = 1.2 · 12 · U = 0.431821588873 mm.
    assert!(
        (p1(5.0) - 0.431_821_588_872_698_2).abs() < 1e-9,
        "{}",
        p1(5.0)
    );
    // After the ramp, t = 20 d: U = 1 − (40/10)·(e^(−10/40) − e^(−20/40))
    //   = 1 − 4·(0.778800783071 − 0.606530659713) = 0.310919466568; s_P1 = 14.4·U = 4.4772409 mm.
    assert!(
        (p1(20.0) - 4.477_240_894_534_764).abs() < 1e-9,
        "{}",
        p1(20.0)
    );
    // t = 50 d, second step (instantaneous, 8 mm) 20 d old:
    //   12·[1 − 4·(e^(−1) − e^(−1.25))] + 8·(1 − e^(−0.5)) = 12·0.6462 + 8·0.39347 → ×1.2 = 13.4901 mm.
    assert!(
        (p1(50.0) - 13.490_126_154_430_59).abs() < 1e-9,
        "{}",
        p1(50.0)
    );
    assert!(
        (p2(50.0) - 10.117_594_615_822_942).abs() < 1e-9,
        "{}",
        p2(50.0)
    );
    // Pair P1-P2 is 10 m apart (6-8-10 triangle): tilt = (13.4901 − 10.1176)/10 000 = 3.3725e-4,
    // as an angle atan(3.3725e-4) = 0.019323°.
    let diff = channel(p, "b.diff.P1.P2")(50.0);
    assert!((diff - (13.490_126_154_430_59 - 10.117_594_615_822_942)).abs() < 1e-9);
    assert!((channel(p, "b.tilt.P1.P2")(50.0) - 3.372_531_538_607_647_6e-4).abs() < 1e-13);
    assert!((channel(p, "b.tilt_deg.P1.P2")(50.0) - 0.019_323_181_611_093_8).abs() < 1e-12);
    // Final settlement f·ΣS: 1.2·20 = 24 mm and 0.9·20 = 18 mm (e^(−1000/40) ≈ 1e-11).
    assert!((p1(1000.0) - 24.0).abs() < 1e-9, "{}", p1(1000.0));
    assert!((p2(1000.0) - 18.0).abs() < 1e-9);
    // Stability (JGJ 8-2016 §7.1.5, docs/DOMAIN.md §Settlement): the largest rate over the last 100
    // days is below 0.04 mm/d for P1 after 400 days, but the creeping corner P3 never gets there.
    let max_rate = |name: &str, t: f64| {
        let r = channel(p, name);
        (0..=100)
            .map(|d| r(t - f64::from(d)))
            .fold(f64::MIN, f64::max)
    };
    assert!(
        max_rate("b.P1.rate", 400.0) < 0.001,
        "{}",
        max_rate("b.P1.rate", 400.0)
    );
    assert!(max_rate("b.P3.rate", 400.0) >= 0.08);
    // Its settlement keeps growing at its creep rate: 0.08 mm/d × 100 d between day 400 and 500
    // (the consolidation left after day 400 is below 20·1.3·e^(−370/40) = 2.5e-3 mm).
    let p3 = channel(p, "b.P3");
    assert!((p3(500.0) - p3(400.0) - 8.0).abs() < 2.5e-3);
}

#[test]
fn curing_core_peaks_where_the_closed_form_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = scenario(
        dir.path(),
        &format!(
            "{HEAD}
[[curing]]
name = \"c\"
cement_kg_m3 = 300.0
heat_kj_kg = 375.0
specific_heat_kj_kg_c = 0.97
density_kg_m3 = 2400.0
hydration_rate_per_day = 0.35
placing_c = 20.0
ambient_mean_c = 20.0
ambient_swing_c = 4.0
start_hour = 8.0
loss_per_day_insulated = 0.12
surface_coupling_insulated = 0.6

[[curing]]
name = \"r\"
cement_kg_m3 = 300.0
heat_kj_kg = 375.0
hydration_rate_per_day = 0.35
placing_c = 20.0
ambient_mean_c = 20.0
loss_per_day_insulated = 0.12
loss_per_day_bare = 0.4
surface_coupling_insulated = 0.6
surface_coupling_bare = 0.2
insulation_removed = \"6d\"
"
        ),
    );
    let p = &s.physics;
    // GB 50496 appendix B: T_max = W·Q/(C·ρ) = 300·375/(0.97·2400) = 112 500/2 328 = 48.3247 °C;
    // adiabatic rise after 1 day: 48.3247·(1 − e^(−0.35)) = 14.2709 °C above placing.
    assert!((channel(p, "c.adiabatic")(1.0) - 34.270_871_953_026_09).abs() < 1e-9);
    // Core, placed at the mean air temperature (θ₀ = 0), k = 0.12/d, m = 0.35/d:
    //   t_peak = ln(k/m)/(k − m) = ln(0.342857)/(−0.23) = 4.654093 d (111.70 h),
    //   θ_peak = T_max·(m/k)^(k/(k−m)) = 48.3247·2.916667^(−0.521739) = 27.645211 °C.
    let core = channel(p, "c.core");
    let t_peak = 4.654_093_094_353_971;
    let theta_peak = 27.645_211_226_933_117;
    assert!((core(t_peak) - 20.0 - theta_peak).abs() < 1e-9);
    // θ(2 d) = T_max·m/(k−m)·(e^(−0.7) − e^(−0.24)) = −73.5378·(0.496585 − 0.786628) = 21.329048.
    assert!((core(2.0) - 20.0 - 21.329_048_432_520_53).abs() < 1e-9);
    // Sampled every 10 min for 10 days, as a logger would: the largest sample is the one next to
    // t_peak (±10 min), short of θ_peak by at most |θ''|·Δt²/8 = 1.161·(1/144)²/8 = 7e-6 °C.
    let step = 1.0 / 144.0;
    let (i_max, v_max) = (0..1440)
        .map(|i| (i, core(f64::from(i) * step)))
        .fold((0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
    assert!(
        (f64::from(i_max) * step - t_peak).abs() <= step,
        "peak at sample {i_max}"
    );
    assert!(
        v_max <= 20.0 + theta_peak + 1e-12 && v_max > 20.0 + theta_peak - 7.1e-6,
        "{v_max}"
    );
    // The day/night cycle: start at 08:00, so 15:00 (t = 7 h) is the warmest, 03:00 (t = 19 h)
    // the coldest: mean ± swing.
    let air = channel(p, "c.ambient");
    assert!((air(7.0 / 24.0) - 24.0).abs() < 1e-9);
    assert!((air(19.0 / 24.0) - 16.0).abs() < 1e-9);
    // Surface = air + β·(core − air).
    let t = 3.3;
    let surface = channel(p, "c.surface")(t);
    assert!((surface - (air(t) + 0.6 * (core(t) - air(t)))).abs() < 1e-9);
    // Insulation off at 6 d: the core is continuous, cools faster, the surface drops to the air.
    let r_core = channel(p, "r.core");
    let r_rate = channel(p, "r.core_rate");
    let eps = 1e-7;
    assert!((r_core(6.0 - eps) - r_core(6.0 + eps)).abs() < 1e-5);
    assert!(
        r_rate(6.0 + eps) < r_rate(6.0 - eps) - 1.0,
        "{} {}",
        r_rate(6.0 - eps),
        r_rate(6.0 + eps)
    );
    let r_surface = channel(p, "r.surface");
    assert!(r_surface(6.0 + eps) < r_surface(6.0 - eps) - 5.0);
    // The rate channel is the derivative of the core.
    let h = 1e-5;
    let numeric = (r_core(8.0 + h) - r_core(8.0 - h)) / (2.0 * h);
    assert!((numeric - r_rate(8.0)).abs() < 1e-5);
}

/// GB 50496-2018 §3.0.4 figures of one pour sampled every 10 minutes for 21 days: largest
/// core-surface difference, largest 24-h core drop, largest rise above placing, and the
/// surface-air difference at the moment the insulation comes off.
fn gb50496(p: &Physics, pour: &str, placing: f64, removed_days: f64) -> (f64, f64, f64, f64) {
    let core = channel(p, &format!("{pour}.core"));
    let cs = channel(p, &format!("{pour}.core_surface"));
    let sa = channel(p, &format!("{pour}.surface_ambient"));
    let per_day = 144_u32;
    let t = |i: u32| f64::from(i) / f64::from(per_day);
    let n = 21 * per_day;
    let max_cs = (0..=n).map(|i| cs(t(i))).fold(f64::MIN, f64::max);
    let max_drop = (per_day..=n)
        .map(|i| core(t(i - per_day)) - core(t(i)))
        .fold(f64::MIN, f64::max);
    let max_rise = (0..=n)
        .map(|i| core(t(i)) - placing)
        .fold(f64::MIN, f64::max);
    (max_cs, max_drop, max_rise, sa(removed_days))
}

#[test]
fn curing_pour_keeps_and_breaks_the_gb50496_limits() {
    let s = load("curing-pour.toml");
    // Limits: core-surface ≤ 25 °C, cooling ≤ 2.0 °C/d, rise ≤ 50 °C, surface-air ≤ 20 °C at
    // removal (docs/DOMAIN.md §Curing).
    let (cs, drop, rise, sa) = gb50496(&s.physics, "raft-a", 22.0, 21.0);
    assert!(
        cs < 25.0 && drop < 2.0 && rise < 50.0 && sa < 20.0,
        "raft-a {cs} {drop} {rise} {sa}"
    );
    // The file's comment: 28.5 °C rise, < 11 °C core-surface, 1.84 °C/d, 6.8 °C at removal.
    assert!((rise - 28.5).abs() < 0.05 && (drop - 1.84).abs() < 0.01 && (sa - 6.8).abs() < 0.05);
    let (cs, drop, _, _) = gb50496(&s.physics, "raft-b", 31.0, 2.5);
    assert!(cs > 25.0, "raft-b core-surface {cs}");
    assert!(drop > 2.0, "raft-b cooling {drop}");
}

/// Least-squares line `y = a·t + b` with weights `w`; returns (a, b, cov(a,b) matrix as
/// [[var a, cov], [cov, var b]]) for independent errors of variance 1/w.
fn weighted_fit(t: &[f64], y: &[f64], w: &[f64]) -> (f64, f64, [[f64; 2]; 2]) {
    let sw: f64 = w.iter().sum();
    let st: f64 = t.iter().zip(w).map(|(t, w)| w * t).sum();
    let stt: f64 = t.iter().zip(w).map(|(t, w)| w * t * t).sum();
    let sy: f64 = y.iter().zip(w).map(|(y, w)| w * y).sum();
    let sty: f64 = t.iter().zip(y).zip(w).map(|((t, y), w)| w * t * y).sum();
    let det = sw * stt - st * st;
    let a = (sw * sty - st * sy) / det;
    let b = (stt * sy - st * sty) / det;
    // (XᵀWX)⁻¹ with X = [t 1].
    (a, b, [[sw / det, -st / det], [-st / det, stt / det]])
}

#[test]
fn inverse_velocity_line_reaches_zero_at_the_failure_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = scenario(
        dir.path(),
        &format!(
            "{HEAD}
[[slope]]
name = \"s\"
creep_mm_per_day = 2.0
accel_onset = \"10d\"
failure_at = \"20d\"
"
        ),
    );
    let p = &s.physics;
    let d = channel(p, "s.disp");
    let v = channel(p, "s.velocity");
    // v₀ = 2 mm/d, t_a = 10 d, t_f = 20 d: D(15) = 2·10 + 2·10·ln(10/5) = 20 + 13.862944 mm,
    // v(15) = 2·10/5 = 4 mm/d; creep before: D(5) = 10 mm, v = 2 mm/d.
    assert!((d(15.0) - 33.862_943_611_198_91).abs() < 1e-9);
    assert!((v(15.0) - 4.0).abs() < 1e-12);
    assert!((d(5.0) - 10.0).abs() < 1e-12 && (v(5.0) - 2.0).abs() < 1e-12);
    // Hourly velocities from t_a + 1 h to 12 h before t_f, 1/v against t by least squares: the
    // line is exact, so t_f = −b/a comes back to float precision (1 s ≈ 1.2e-5 d is plenty).
    let ts: Vec<f64> = (241..=468).map(|h| f64::from(h) / 24.0).collect();
    let ys: Vec<f64> = ts.iter().map(|&t| 1.0 / v(t)).collect();
    let (a, b, _) = weighted_fit(&ts, &ys, &vec![1.0; ts.len()]);
    let t_f = -b / a;
    assert!((t_f - 20.0).abs() < 1.0 / DAY, "t_f = {t_f}");
    // A = −a = 1/(v₀·(t_f − t_a)) = 0.05 d/mm per d.
    assert!((a + 0.05).abs() < 1e-12);
    // Past the run-out velocity (43 200 mm/d) the velocity stays finite.
    assert!((v(20.5) - 43_200.0).abs() < 1e-9);
}

/// A sensor reading of a CIGEM field, exactly as the device computes it (seeded noise and
/// resolution), rounded to the two decimals the device sends.
fn cigem_reader(s: &Scenario, device: &str, point: &str, field: &str) -> SensorReader {
    let dev = s
        .cigem
        .iter()
        .find(|c| c.device_id == device)
        .expect("device");
    let p = dev.points.iter().find(|p| p.id == point).expect("point");
    let map = match field {
        "" => p.channel.clone().expect("channel"),
        f => p.fields.get(f).cloned().expect("field"),
    };
    let name = if field.is_empty() {
        point.to_owned()
    } else {
        format!("{point}.{field}")
    };
    SensorReader::new(map, s.seed, device, &name)
}

#[test]
fn inverse_velocity_from_the_gnss_readings_finds_the_failure_time() {
    let s = load("slope-failure.toml");
    let p = &s.physics;
    let east = cigem_reader(&s, "51010400301", "L1_GP_1", "gpsTotalX");
    let north = cigem_reader(&s, "51010400301", "L1_GP_1", "gpsTotalY");
    // Hourly readings; the movement is along azimuth 135° plunging 30°, so the along-slide
    // displacement is (e·sin φ + n·cos φ)/cos δ (the transverse share cancels in the projection).
    let (phi, delta) = (135_f64.to_radians(), 30_f64.to_radians());
    let along = |k: u32, noisy: bool| {
        let t = f64::from(k) * 3600.0;
        if noisy {
            let (e, n) = (
                east.value(p, u64::from(k), t),
                north.value(p, u64::from(k), t),
            );
            (e * phi.sin() + n * phi.cos()) / delta.cos()
        } else {
            p.value(p.channel("north.G1.disp").expect("channel"), t)
        }
    };
    // Velocity per day from disjoint 24-h windows centred on days 11..19 (all inside the
    // acceleration stage, which starts at day 10 and runs out just before day 20): the
    // least-squares slope of the 25 hourly displacements of the window.
    let velocities = |noisy: bool| -> Vec<(f64, f64)> {
        (11..=19_u32)
            .map(|c| {
                let ks: Vec<u32> = (c * 24 - 12..=c * 24 + 12).collect();
                let t: Vec<f64> = ks.iter().map(|&k| f64::from(k) / 24.0).collect();
                let d: Vec<f64> = ks.iter().map(|&k| along(k, noisy)).collect();
                let (slope, _, _) = weighted_fit(&t, &d, &vec![1.0; t.len()]);
                (f64::from(c), slope)
            })
            .collect()
    };
    // GNSS horizontal noise σ = 1 mm per axis (±2 mm, docs/DOMAIN.md §Sensors):
    // σ_D = 1/cos 30° = 1.155 mm; a window slope has σ_v = σ_D/√Σ(t − t̄)²
    // = 1.155/√(2·Σ_{j=1..12}(j/24)²) = 1.155/1.502 = 0.769 mm/d; 1/v then has σ = σ_v/v².
    // Weighted least squares with w = v⁴/σ_v² (the true v from the model) is the minimum-variance
    // line; its t_f = −b/a has variance J·C·Jᵀ with J = (b/a², −1/a) and C = (XᵀWX)⁻¹.
    let sigma_v = (1.0 / delta.cos())
        / (2.0 * (1..=12).map(|j| (f64::from(j) / 24.0).powi(2)).sum::<f64>()).sqrt();
    let v_true = channel(p, "north.velocity");
    let fit = |vs: &[(f64, f64)]| {
        let t: Vec<f64> = vs.iter().map(|(t, _)| *t).collect();
        let y: Vec<f64> = vs.iter().map(|(_, v)| 1.0 / v).collect();
        let w: Vec<f64> = t
            .iter()
            .map(|&t| v_true(t).powi(4) / sigma_v.powi(2))
            .collect();
        let (a, b, c) = weighted_fit(&t, &y, &w);
        let j = [b / (a * a), -1.0 / a];
        let var =
            j[0] * (c[0][0] * j[0] + c[0][1] * j[1]) + j[1] * (c[1][0] * j[0] + c[1][1] * j[1]);
        (-b / a, var.sqrt())
    };
    // Without noise the only error is the window's own bias: a window slope of v = c/(t_f − t)
    // over ±w overestimates v by about (w/x)²/3 at x = t_f − t, i.e. 8.3 % one day before t_f
    // (w = 0.5 d); 1/v is then 8.3 % low there, 0.0042 d/mm on a line of slope 0.05 per day,
    // moving t_f by at most 0.083 d: 0.1 d bounds it.
    let (tf_clean, _) = fit(&velocities(false));
    assert!((tf_clean - 20.0).abs() < 0.1, "noise-free t_f {tf_clean}");
    // With the readings' noise: within 4 standard errors of the noise-free estimate (a false
    // failure at p ≈ 6e-5 for Gaussian errors), and that standard error is itself small.
    let (tf_noisy, sigma_tf) = fit(&velocities(true));
    println!("t_f noise-free {tf_clean:.4} d, from GNSS {tf_noisy:.4} d, σ {sigma_tf:.4} d");
    assert!(sigma_tf < 0.1, "σ(t_f) = {sigma_tf} d");
    assert!(
        (tf_noisy - tf_clean).abs() < 4.0 * sigma_tf,
        "t_f from GNSS {tf_noisy} vs {tf_clean} (σ {sigma_tf})"
    );
}

#[test]
fn rain_precedes_the_acceleration_and_the_instruments_agree() {
    let s = load("slope-failure.toml");
    let p = &s.physics;
    let rain = channel(p, "north.rain_total");
    let pore = channel(p, "north.pore");
    // 12 mm on day 2, 85 mm on day 5 (18 h): all 97 mm have fallen before the onset (day 10).
    assert!((rain(5.75) - 97.0).abs() < 1e-9 && (rain(10.0) - 97.0).abs() < 1e-9);
    assert!((rain(5.375) - (12.0 + 85.0 / 2.0)).abs() < 1e-9);
    // The pore pressure peaks when the storm ends and has fallen back most of the way by the
    // onset: Δu(5.75 d) = α·P·(T_d/d)·(1 − e^(−d/T_d)) with α = 0.4, P = 85, T_d = 2 d,
    // d = 0.75 d: 34·2.6667·0.31271 = 28.35 kPa (plus the day-2 event's 2.58 kPa remainder).
    let (t_peak, u_peak) = (0..=240)
        .map(|h| (f64::from(h) / 24.0, pore(f64::from(h) / 24.0)))
        .fold((0.0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
    assert!((t_peak - 5.75).abs() < 1e-9, "{t_peak}");
    let day2 =
        0.4 * 12.0 * (2.0 / 0.25) * (1.0 - (-0.125_f64).exp()) * (-(5.75 - 2.25) / 2.0_f64).exp();
    let storm = 0.4 * 85.0 * (2.0 / 0.75) * (1.0 - (-0.375_f64).exp());
    assert!((u_peak - 35.0 - storm - day2).abs() < 1e-9, "{u_peak}");
    assert!(pore(10.0) - 35.0 < 0.2 * (u_peak - 35.0));
    // Every instrument sees the same movement D at day 16 (66.05 mm):
    let t = 16.0;
    let d = channel(p, "north.disp")(t);
    // crack meter: 2.4 + 0.9·D; chain top: 0.95·D; the chain's own sum Σ L·(sin θ − sin θ₀) of
    // its segment tilts (docs/DOMAIN.md §Sensors) equals its top; GNSS along-slide at the toe
    // is 0.6·D.
    assert!((channel(p, "north.C1.disp")(t) - 0.9 * d).abs() < 1e-9);
    assert!((channel(p, "north.IPI1.top_x")(t) - 0.95 * d).abs() < 1e-9);
    let initial = [0.42_f64, -0.31, 0.18, 0.55, -0.12, 0.27];
    let sum: f64 = (1..=6)
        .map(|k| {
            let theta = channel(p, &format!("north.IPI1.seg{k}"))(t);
            1000.0 * (theta.to_radians().sin() - initial[k - 1].to_radians().sin())
        })
        .sum();
    assert!((sum - 0.95 * d).abs() < 1e-6, "{sum} vs {}", 0.95 * d);
    let horizontal = channel(p, "north.G2.east")(t) * 135_f64.to_radians().sin()
        + channel(p, "north.G2.north")(t) * 135_f64.to_radians().cos();
    assert!((horizontal - 0.6 * d * 30_f64.to_radians().cos()).abs() < 1e-9);
    assert!((channel(p, "north.G2.up")(t) + 0.6 * d * 0.5).abs() < 1e-9);
    // The crack meter's reading (σ 0.025 mm, 0.01 mm steps) sits on its channel within 5σ.
    let crack = cigem_reader(&s, "51010400301", "L1_LF_1", "");
    let k = 16 * 24;
    let reading = crack.value(p, k, f64::from(16 * 24 * 3600));
    assert!(
        (reading - (2.4 + 0.9 * d)).abs() < 5.0 * 0.025 + 0.005,
        "{reading}"
    );
    assert_eq!(s.cigem[0].points[4].kind, CigemKind::Rain);
}

#[tokio::test]
async fn readings_on_the_wire_follow_the_channels() {
    let s = load("slope-failure.toml");
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Site::start(
        &s,
        StartOptions {
            clock: ClockMode::Manual,
            pty_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await
    .expect("site starts");
    // Day 15, hourly samples.
    for _ in 0..360 {
        site.step();
    }
    let last = site.last_sample();
    assert_eq!(last.index, 360);
    let truth = site.truth();
    let ts = last.unix_s * 1_000_000_000;
    let pore = truth
        .channel("north.pore")
        .into_iter()
        .find(|c| c.ts_ns == ts)
        .expect("channel truth at the tick")
        .value;
    assert!(
        (pore
            - s.physics
                .value(s.physics.channel("north.pore").expect("ch"), 15.0 * DAY))
        .abs()
            < 1e-12
    );
    // The piezometer over Modbus TCP: pressure within 5σ (σ 0.1 kPa) plus the f32 rounding of
    // the channel, digits = 8500 − 50·P within 5σ (σ 5 digits).
    let dev = &s.modbus_tcp[0];
    let mut ctx = within(
        "connect",
        tcp::connect_slave(site.tcp_addr("piezo-1").expect("addr"), Slave(1)),
    )
    .await
    .expect("connect");
    let regs = within("read", ctx.read_holding_registers(0, 4))
        .await
        .expect("transport")
        .expect("no exception");
    let point = |n: &str| {
        dev.profile
            .points
            .iter()
            .find(|p| p.name == n)
            .expect("point")
    };
    let pressure = decode(point("pressure"), &regs[0..2]);
    let digits = decode(point("digits"), &regs[2..4]);
    assert!((pressure - pore).abs() < 0.5 + 1e-4, "{pressure} vs {pore}");
    assert!(
        (digits - (8500.0 - 50.0 * pore)).abs() < 25.0 + 1e-3,
        "{digits}"
    );
    assert_eq!(truth.value_at("piezo-1", "pressure", ts), Some(pressure));
    // The inclinometer chain over RTU: segment 4 carries 60 % of the movement.
    let gw = site
        .rtu_endpoint("rs485-ipi")
        .and_then(|e| e.gateway_path.clone())
        .expect("pty");
    let mut rtu = common::open_rtu(&gw, 4);
    let regs = within("ipi", rtu.read_input_registers(0, 2))
        .await
        .expect("transport")
        .expect("no exception");
    let seg = &s.modbus_rtu[0].slaves[3];
    assert_eq!(seg.profile.points[0].function, Function::Input);
    let tilt = decode(&seg.profile.points[0], &regs);
    let true_tilt = truth
        .channel("north.IPI1.seg4")
        .into_iter()
        .find(|c| c.ts_ns == ts)
        .expect("segment truth")
        .value;
    // σ 0.0015°, 0.0001° steps, f32: within 5σ.
    assert!((tilt - true_tilt).abs() < 0.0076, "{tilt} vs {true_tilt}");
    drop(rtu);
    site.shutdown().await;
}

#[tokio::test]
async fn a_seed_gives_the_same_run() {
    let s = load("slope-failure.toml");
    let run = |seed: Option<u64>| {
        let s = s.clone();
        async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let site = Site::start(
                &s,
                StartOptions {
                    clock: ClockMode::Manual,
                    pty_dir: Some(dir.path().to_path_buf()),
                    seed,
                    ..Default::default()
                },
            )
            .await
            .expect("site starts");
            for _ in 0..30 {
                site.step();
            }
            let truth = site.truth();
            site.shutdown().await;
            let values: Vec<(String, String, u64)> = truth
                .samples()
                .into_iter()
                .map(|t| (t.device, t.point, t.value.to_bits()))
                .collect();
            let channels: Vec<u64> = truth
                .channel_samples()
                .iter()
                .map(|c| c.value.to_bits())
                .collect();
            (values, channels)
        }
    };
    let (a, ca) = run(None).await;
    let (b, cb) = run(None).await;
    let (c, cc) = run(Some(8)).await;
    assert!(!a.is_empty());
    assert_eq!(a, b, "same seed, same readings");
    assert_eq!(ca, cb);
    assert_ne!(a, c, "another seed, other noise");
    assert_eq!(ca, cc, "the physics does not depend on the seed");
}
