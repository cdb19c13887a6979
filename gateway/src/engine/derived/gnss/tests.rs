//! The along-slope projection on the slope-failure scenario's truth (config/sim/slope-failure.toml,
//! firmware-sim's `physics::slope`): the crown GNSS point G1 moves along azimuth 135°, 30° below
//! the horizontal, with a transverse share of 0.03; its along-slope displacement is the sliding
//! mass's displacement (factor 1), the horizontal one that times cos 30°.

use std::collections::BTreeMap;
use std::sync::Arc;

use firmware_sim::physics::{slope::Slope, Model};
use firmware_sim::Scenario;

use super::super::tests::{assert_problems_at, one_block, problems};
use crate::model::{Quality, QuantityKind, Reading, Series, NANOS_PER_SEC};

const T0: i64 = 1_767_225_600 * NANOS_PER_SEC;
const H: i64 = 3600 * NANOS_PER_SEC;

fn field(f: &str) -> Arc<Series> {
    Arc::new(Series::new(
        "anju-slope",
        "gw",
        "51010400301",
        &format!("L1_GP_1.{f}"),
        QuantityKind::Displacement,
        "mm",
        &BTreeMap::new(),
    ))
}

fn slope() -> Slope {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sim/slope-failure.toml");
    let scenario = Scenario::load(&path).expect("scenario");
    scenario
        .physics
        .models()
        .iter()
        .find_map(|m| match m {
            Model::Slope(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a slope")
}

/// G1's east, north and up at day `t` as the simulator serves them (without noise), mm.
fn enu(s: &Slope, t: f64) -> [f64; 3] {
    let g1 = s.points.iter().find(|p| p.name == "G1").expect("G1");
    let d = g1.factor * s.displacement(t);
    let (phi, delta) = (s.azimuth_deg.to_radians(), s.dip_deg.to_radians());
    [
        d * (delta.cos() * phi.sin() + g1.transverse * phi.cos()),
        d * (delta.cos() * phi.cos() - g1.transverse * phi.sin()),
        -d * delta.sin(),
    ]
}

const BLOCK: &str = r#"name = "along"
kind = "along_slope"
azimuth_deg = 135.0
dip_deg = 30.0
gnss = [{ east = "51010400301/L1_GP_1.gpsTotalX", north = "51010400301/L1_GP_1.gpsTotalY", up = "51010400301/L1_GP_1.gpsTotalZ" }]
"#;

#[test]
fn the_crown_gnss_along_the_slope_is_the_sliding_mass_displacement() {
    let s = slope();
    assert_eq!(
        (s.azimuth_deg, s.dip_deg),
        (135.0, 30.0),
        "the scenario's direction"
    );
    let (e, n, u) = (field("gpsTotalX"), field("gpsTotalY"), field("gpsTotalZ"));
    let mut three_d = one_block(BLOCK);
    let horizontal = BLOCK
        .replace("dip_deg = 30.0\n", "")
        .replace(", up = \"51010400301/L1_GP_1.gpsTotalZ\"", "");
    let mut flat = one_block(&horizontal);
    for day in [1, 5, 9, 12, 15, 18, 19] {
        let ts = T0 + day * 24 * H;
        let [de, dn, du] = enu(&s, day as f64);
        let batch = [
            Reading::good(Arc::clone(&e), ts, de),
            Reading::good(Arc::clone(&n), ts, dn),
            Reading::good(Arc::clone(&u), ts, du),
        ];
        let truth = s.displacement(day as f64);
        let got = three_d.on_batch(&batch);
        assert_eq!(got.len(), 1, "day {day}: {got:?}");
        assert_eq!(got[0].series.key, "51010400301/L1_GP_1.along");
        assert_eq!(got[0].series.kind, QuantityKind::Displacement);
        let v = got[0].value.unwrap_or(f64::NAN);
        assert!(
            (v - truth).abs() < 1e-9 * truth.max(1.0),
            "day {day}: {v} vs {truth}"
        );
        let h = flat.on_batch(&batch[..2]);
        let v = h.first().and_then(|r| r.value).unwrap_or(f64::NAN);
        let want = truth * 30_f64.to_radians().cos();
        assert!(
            (v - want).abs() < 1e-9 * want.max(1.0),
            "day {day}: {v} vs {want}"
        );
    }
    // A bad component flags the displacement 410.
    let ts = T0 + 20 * 24 * H;
    let got = three_d.on_batch(&[
        Reading::good(Arc::clone(&e), ts, 1.0),
        Reading::good(Arc::clone(&n), ts, 1.0),
        Reading::bad(Arc::clone(&u), ts, Quality::Timeout),
    ]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].quality, Quality::DerivedInputBad);
}

#[test]
fn a_forecast_takes_the_along_slope_displacement_as_its_input() {
    // Fukuzono on the crown GNSS combined along the slope (hourly, no noise): by day 18 (80 %
    // of the acceleration from day 10 to failure on day 20 passed) the time to failure is within
    // 10 % of the truth's 48 h.
    let s = slope();
    let (e, n, u) = (field("gpsTotalX"), field("gpsTotalY"), field("gpsTotalZ"));
    let mut set = one_block(&format!(
        "{BLOCK}\n[[derived]]\nname = \"inv\"\nkind = \"inverse_velocity\"\nselect = {{ tags = {{ derived = \"along\" }} }}\n"
    ));
    let mut last = None;
    for h in 0..=(18 * 24) {
        let ts = T0 + h * H;
        let [de, dn, du] = enu(&s, h as f64 / 24.0);
        for r in set.on_batch(&[
            Reading::good(Arc::clone(&e), ts, de),
            Reading::good(Arc::clone(&n), ts, dn),
            Reading::good(Arc::clone(&u), ts, du),
        ]) {
            if r.series.point == "L1_GP_1.along.inv.time_to_failure" {
                last = Some((h, r.value, r.quality));
            }
        }
    }
    let (h, ttf, q) = last.expect("a forecast series");
    assert_eq!((h, q), (18 * 24, Quality::Good), "{ttf:?}");
    let ttf = ttf.unwrap_or(f64::NAN);
    assert!((ttf - 48.0).abs() <= 4.8, "{ttf} h left, truth 48 h");
}

#[test]
fn along_slope_problems_name_their_paths() {
    let got = problems(
        r#"
[[derived]]
name = "along"
kind = "along_slope"
dip_deg = 95.0
select = { kind = "displacement" }
gnss = [{ east = "g1-east", north = "g1/north" }]
"#,
    );
    assert_problems_at(
        &got,
        &[
            "derived[0].azimuth_deg",
            "derived[0].dip_deg",
            "derived[0].select",
            "derived[0].gnss[0].up",
            "derived[0].gnss[0].east",
        ],
    );
}
