//! Pours on numbers worked by hand: the GB 50496 series, maturity, equivalent age and strength
//! of constant temperatures, milestones announced once by the weakest sensor and never again
//! after a restart, and config problems with their paths.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{CuringPlan, MixConfig, PourConfig, PourSet};
use crate::alert::{AlertKind, AlertState, Language};
use crate::engine::tests::spool_in;
use crate::model::{Quality, QuantityKind, Reading, Series, NANOS_PER_SEC};

/// 2026-01-01T00:00:00Z, the placing time of the test pour.
const T0: i64 = 1_767_225_600 * NANOS_PER_SEC;
const H: i64 = 3600 * NANOS_PER_SEC;

#[derive(serde::Deserialize)]
struct Sections {
    #[serde(default)]
    mixes: Vec<MixConfig>,
    #[serde(default)]
    pours: Vec<PourConfig>,
}

/// A C30 mix on the hyperbolic curve Su = 40 MPa, k = 0.045/h, t0 = 4 h, E = 40 000 J/mol,
/// T0 = 0 °C, winter critical strength 9 MPa; one raft with a core, a surface and an air sensor.
const POUR: &str = r#"
[[mixes]]
name = "c30"
design_strength_mpa = 30.0
curve = { form = "hyperbolic", su_mpa = 40.0, k_per_h = 0.045, t0_h = 4.0 }
critical_strength_mpa = 9.0

[[pours]]
name = "raft"
element = "A栋 筏板"
placed_at = "2026-01-01T00:00:00Z"
mix = "c30"
insulation_removed_at = "2026-01-01T10:00:00Z"
sensors = { core = { channel = "therm/t01" }, surface = { channel = "therm/t02" }, ambient = { channel = "therm/air" } }
"#;

fn plan(text: &str) -> CuringPlan {
    let s: Sections = toml::from_str(text).expect("toml");
    CuringPlan::from_config(&s.mixes, &s.pours).expect("valid")
}

fn problems(text: &str) -> Vec<(String, String)> {
    let s: Sections = toml::from_str(text).expect("toml");
    CuringPlan::from_config(&s.mixes, &s.pours).expect_err("invalid")
}

fn series(point: &str) -> Arc<Series> {
    Arc::new(Series::new(
        "xa",
        "gw",
        "therm",
        point,
        QuantityKind::Temperature,
        "°C",
        &BTreeMap::new(),
    ))
}

struct Sensors {
    core: Arc<Series>,
    surface: Arc<Series>,
    air: Arc<Series>,
}

fn sensors() -> Sensors {
    Sensors {
        core: series("t01"),
        surface: series("t02"),
        air: series("air"),
    }
}

/// One poll at `h` hours after placing: core, surface, air.
fn poll(s: &Sensors, h: i64, core: f64, surface: f64, air: f64) -> Vec<Reading> {
    let ts = T0 + h * H;
    vec![
        Reading::good(Arc::clone(&s.core), ts, core),
        Reading::good(Arc::clone(&s.surface), ts, surface),
        Reading::good(Arc::clone(&s.air), ts, air),
    ]
}

/// The value of `key` among `out`.
fn value(out: &[Reading], key: &str) -> Option<f64> {
    out.iter()
        .find(|r| r.series.key == key)
        .and_then(|r| r.value)
}

fn close(a: Option<f64>, b: f64, tol: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < tol)
}

#[test]
fn constant_temperatures_give_the_hand_worked_maturity_age_and_strength() {
    let mut set = PourSet::new(plan(POUR), "xa", Language::Zh);
    let s = sensors();
    let mut last = Vec::new();
    for h in 0..=24 {
        last = set.on_batch(&poll(&s, h, 30.0, 20.0, 15.0), T0 + h * H);
    }
    // Nurse–Saul, T0 = 0: 24 h at 20 °C = 480 °C·h; at 30 °C = 720 °C·h.
    assert!(close(value(&last, "therm/t02.maturity"), 480.0, 1e-9));
    assert!(close(value(&last, "therm/t01.maturity"), 720.0, 1e-9));
    // Equivalent age at 20 °C: 24 h at 20 °C is 24 h; at 30 °C 24 × 1.718377 = 41.241 h
    // (E = 40 000 J/mol, R = 8.314; computed independently in maturity.rs's test).
    assert!(close(value(&last, "therm/t02.equivalent-age"), 24.0, 1e-9));
    assert!(close(
        value(&last, "therm/t01.equivalent-age"),
        41.2410,
        1e-3
    ));
    // Hyperbolic at te = 24 h: k(t − t0) = 0.045 × 20 = 0.9; S = 40 × 0.9 / 1.9 = 18.947 MPa,
    // 63.16 % of 30 MPa.
    assert!(close(value(&last, "therm/t02.strength"), 18.947_368, 1e-5));
    assert!(close(
        value(&last, "therm/t02.strength-share"),
        63.157_895,
        1e-5
    ));
    // GB 50496: core − surface 10 °C; rise 0 (the placing temperature is the first core
    // reading, 30 °C); cooling 0 °C/d; surface − air 5 °C once the insulation is off (10:00).
    assert!(close(value(&last, "therm/t01.core-surface"), 10.0, 1e-9));
    assert!(close(value(&last, "therm/t01.rise"), 0.0, 1e-9));
    assert!(close(value(&last, "therm/t01.cooling-rate"), 0.0, 1e-9));
    assert!(close(value(&last, "therm/t02.surface-ambient"), 5.0, 1e-9));
    // The series carry the pour, the role and the kinds of the schema.
    let strength = last
        .iter()
        .find(|r| r.series.key == "therm/t02.strength")
        .expect("strength");
    assert_eq!(strength.series.kind, QuantityKind::Strength);
    assert_eq!(strength.series.unit, "MPa");
    assert_eq!(
        strength.series.tags.get("pour").map(String::as_str),
        Some("raft")
    );
    assert_eq!(
        strength.series.tags.get("role").map(String::as_str),
        Some("surface")
    );
    assert_eq!(
        strength.series.tags.get("derived").map(String::as_str),
        Some("raft")
    );
}

#[test]
fn surface_minus_air_only_once_the_insulation_is_off() {
    let mut set = PourSet::new(plan(POUR), "xa", Language::Zh);
    let s = sensors();
    for h in 0..10 {
        let out = set.on_batch(&poll(&s, h, 30.0, 20.0, 15.0), T0 + h * H);
        assert_eq!(value(&out, "therm/t02.surface-ambient"), None, "hour {h}");
    }
    let out = set.on_batch(&poll(&s, 10, 30.0, 20.0, 12.0), T0 + 10 * H);
    assert!(close(value(&out, "therm/t02.surface-ambient"), 8.0, 1e-9));
}

#[test]
fn rise_and_cooling_rate_follow_the_core() {
    let mut set = PourSet::new(plan(POUR), "xa", Language::Zh);
    let s = sensors();
    // Placing at 22 °C, rising 1 °C/h to 30 °C at 8 h: the rise is T − 22.
    for h in 0..=8 {
        let t = 22.0 + h as f64;
        let out = set.on_batch(&poll(&s, h, t, 20.0, 15.0), T0 + h * H);
        assert!(
            close(value(&out, "therm/t01.rise"), t - 22.0, 1e-9),
            "hour {h}"
        );
    }
    // Then cooling 0.1 °C/h = 2.4 °C/d for 30 h: once the 24 h window holds only the
    // cooling, the least-squares slope is exactly −2.4 °C/d, stored as a cooling of 2.4.
    let mut last = Vec::new();
    for h in 9..=40 {
        let t = 30.0 - 0.1 * (h - 8) as f64;
        last = set.on_batch(&poll(&s, h, t, 20.0, 15.0), T0 + h * H);
    }
    assert!(close(value(&last, "therm/t01.cooling-rate"), 2.4, 1e-6));
}

#[test]
fn a_bad_reading_flags_what_it_feeds_and_adds_no_maturity() {
    let mut set = PourSet::new(plan(POUR), "xa", Language::Zh);
    let s = sensors();
    set.on_batch(&poll(&s, 0, 30.0, 20.0, 15.0), T0);
    let ts = T0 + H;
    let out = set.on_batch(
        &[
            Reading::bad(Arc::clone(&s.core), ts, Quality::Timeout),
            Reading::good(Arc::clone(&s.surface), ts, 20.0),
        ],
        ts,
    );
    for p in [
        "rise",
        "core-surface",
        "cooling-rate",
        "maturity",
        "strength",
    ] {
        let r = out
            .iter()
            .find(|r| r.series.key == format!("therm/t01.{p}"))
            .unwrap_or_else(|| panic!("no {p}"));
        assert_eq!(
            (r.value, r.quality),
            (None, Quality::DerivedInputBad),
            "{p}"
        );
    }
    // The next good reading integrates across the gap: 2 h at 30 °C = 60 °C·h.
    let out = set.on_batch(&poll(&s, 2, 30.0, 20.0, 15.0), T0 + 2 * H);
    assert!(close(value(&out, "therm/t01.maturity"), 60.0, 1e-9));
}

#[test]
fn milestones_are_announced_once_when_the_weakest_sensor_reaches_them_even_across_a_restart() {
    let mut set = PourSet::new(plan(POUR), "xa", Language::Zh);
    let s = sensors();
    let mut announced = Vec::new();
    for h in 0..=30 {
        set.on_batch(&poll(&s, h, 30.0, 20.0, 15.0), T0 + h * H);
        for n in set.take_notices() {
            announced.push(((n.event_at - T0) / H, n));
        }
    }
    // The surface (20 °C, te = hours since placing) is the weakest. S = 40·x/(1+x),
    // x = 0.045(te − 4): 1.2 MPa at te = 4.687 h → the 5 h poll; 9 MPa (winter critical) at
    // 10.452 h → 11 h; 15 MPa (50 %) at 17.333 h → 18 h. 75 % (22.5 MPa) needs 32.571 h.
    let got: Vec<(i64, String)> = announced
        .iter()
        .map(|(h, n)| (*h, n.rule.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (5, "raft/walk-on".to_owned()),
            (11, "raft/winter-critical".to_owned()),
            (18, "raft/strength-50".to_owned()),
        ]
    );
    let walk_on = &announced[0].1;
    assert_eq!(walk_on.kind, AlertKind::Notice);
    assert_eq!(walk_on.state, AlertState::Notice);
    assert!(!walk_on.is_active());
    assert_eq!(walk_on.channel, "therm/t02.strength");
    assert_eq!(walk_on.threshold, Some(1.2));
    // S at te = 5 h: 40 × 0.045 / 1.045 = 1.7225 MPa.
    assert!(close(walk_on.value, 1.722_488, 1e-5));
    assert_eq!(
        walk_on.message,
        "【通知】A栋 筏板 强度测点 therm/t02.strength 达到 1.2 MPa（可上人、堆放材料）：1.7 MPa，不低于 1.2 MPa（规则 raft/walk-on）"
    );

    // A restart from the saved state: nothing announced again; 75 % comes at 33 h.
    let (delta, errors) = set.state_changes();
    assert_eq!(errors, 0);
    let entries: Vec<(String, Vec<u8>)> = delta
        .entries
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    assert!(entries.iter().any(|(k, _)| k == "vp/raft"));
    assert!(entries.iter().any(|(k, _)| k == "vc/raft/therm/t02"));
    let mut again = PourSet::new(plan(POUR), "xa", Language::Zh);
    assert!(again.restore(&entries).is_empty());
    let mut later = Vec::new();
    for h in 31..=34 {
        let out = again.on_batch(&poll(&s, h, 30.0, 20.0, 15.0), T0 + h * H);
        if h == 31 {
            // The maturity goes on from the saved value: 31 h at 20 °C.
            assert!(close(value(&out, "therm/t02.maturity"), 620.0, 1e-9));
        }
        for n in again.take_notices() {
            later.push(((n.event_at - T0) / H, n.rule));
        }
    }
    assert_eq!(later, vec![(33, "raft/strength-75".to_owned())]);
}

#[test]
fn an_invalid_pour_is_refused_with_its_path_and_the_fix() {
    let p = problems(
        r#"
[[mixes]]
name = "c30"
design_strength_mpa = 30.0
datum_temperature = -15.0
curve = { form = "logarithmic", a_mpa = -20.0, b_mpa = 10.0 }

[[pours]]
name = "raft"
element = "A栋 筏板"
placed_at = "2026-01-01 08:00"
mix = "c35"
sensors = { surface = { channel = "therm/t02" } }
"#,
    );
    let at = |path: &str| {
        p.iter()
            .find(|(a, _)| a == path)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("no problem at {path}: {p:?}"))
    };
    assert!(at("mixes[0].datum_temperature").contains("0 °C"));
    assert!(at("pours[0].mix").contains("unknown mix \"c35\""));
    assert!(at("pours[0].sensors.core").contains("missing"));
    assert!(at("pours[0].placed_at").contains("RFC 3339"));
}

#[test]
fn each_pour_brings_its_four_gb_50496_rules() {
    let rules = plan(POUR).rules(Language::Zh);
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "raft/rise",
            "raft/core-surface",
            "raft/cooling-rate",
            "raft/surface-ambient"
        ]
    );
    assert!(
        rules.iter().all(|r| r.confirm.is_none()),
        "the rules' default"
    );
    let hourly = plan(&POUR.replace("[[pours]]", "[[pours]]\nconfirm = { count = 1 }"));
    assert!(hourly
        .rules(Language::Zh)
        .iter()
        .all(|r| r.confirm.as_ref().and_then(|c| c.count) == Some(1)));
    // Red at the §3.0.4 limit: 50 °C, 25 °C, 2.0 °C/d, 20 °C.
    let alarms: Vec<Option<f64>> = rules
        .iter()
        .map(|r| r.upper.as_ref().and_then(|b| b.alarm))
        .collect();
    assert_eq!(alarms, [Some(50.0), Some(25.0), Some(2.0), Some(20.0)]);
}

#[test]
fn no_milestone_before_every_concrete_role_has_reported() {
    let mut set = PourSet::new(plan(POUR), "xa", Language::Zh);
    let s = sensors();
    // The core alone reaches 50 % (15 MPa) at te = 17.3 h, 10.1 h at 30 °C; the surface string
    // configured but never heard could be weaker: nothing is announced.
    for h in 0..=30 {
        set.on_batch(
            &[Reading::good(Arc::clone(&s.core), T0 + h * H, 30.0)],
            T0 + h * H,
        );
        assert!(set.take_notices().is_empty(), "hour {h}");
    }
}

/// The engine over `polls` hours after placing, (core, surface, air) °C from `temps`, with the
/// pour's rules and a spool at `spool`.
async fn run_engine(
    spool: &Arc<crate::spool::Spool>,
    polls: std::ops::RangeInclusive<i64>,
    temps: fn(i64) -> (f64, f64, f64),
) {
    run_engine_with(POUR, spool, polls, temps).await;
}

/// [`run_engine`] with the pours and mixes of `config`.
async fn run_engine_with(
    config: &str,
    spool: &Arc<crate::spool::Spool>,
    polls: std::ops::RangeInclusive<i64>,
    temps: fn(i64) -> (f64, f64, f64),
) {
    use crate::engine::rules::{AlertsConfig, RuleSet};
    use crate::engine::{Engine, EngineConfig};
    let plan = plan(config);
    let alerts = AlertsConfig {
        rules: plan.rules(Language::Zh),
        ..AlertsConfig::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let engine = Engine::new(
        rx,
        Arc::clone(spool),
        Arc::new(crate::metrics::Metrics::new()),
        Arc::new(crate::model::SystemClock),
        EngineConfig {
            // The pour was placed on 2026-01-01.
            max_past: Some(std::time::Duration::from_secs(3650 * 86_400)),
            ..EngineConfig::default()
        },
        std::time::Duration::from_secs(3600),
        RuleSet::from_config(&alerts, "alerts").expect("rules valid"),
        "xa",
    )
    .with_pours(plan);
    let task = tokio::spawn(engine.run());
    let s = sensors();
    for h in polls {
        let (core, surface, air) = temps(h);
        let batch = crate::sources::ReadingBatch::from(poll(&s, h, core, surface, air));
        tx.send(batch).await.expect("engine alive");
    }
    drop(tx);
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("engine stops")
        .expect("no panic");
}

/// The rules of the notices in the spool's alerts stream.
fn notices(spool: &crate::spool::Spool) -> Vec<String> {
    crate::engine::tests::alerts(spool)
        .into_iter()
        .filter(|a| a.kind == AlertKind::Notice)
        .map(|a| a.rule)
        .collect()
}

#[tokio::test]
async fn the_engine_commits_each_notice_with_the_pour_state_and_never_repeats_it_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || spool_in(dir.path());
    let spool = open();
    let steady = |_| (30.0, 20.0, 15.0);
    run_engine(&spool, 0..=20, steady).await;
    assert_eq!(
        notices(&spool),
        ["raft/walk-on", "raft/winter-critical", "raft/strength-50"]
    );
    let state = spool.load_state().expect("state");
    let (_, pour) = state
        .iter()
        .find(|(k, _)| k == "vp/raft")
        .expect("pour state");
    let pour: super::PourState = serde_json::from_slice(pour).expect("pour state JSON");
    assert_eq!(pour.announced.len(), 3);
    assert_eq!(pour.placing_c, Some(30.0));
    drop(spool);

    // After a restart the polls from 18 h on (some read again) announce only the 75 % at 33 h.
    let spool = open();
    run_engine(&spool, 18..=34, steady).await;
    assert_eq!(notices(&spool), ["raft/strength-75"]);
}

#[test]
fn every_series_has_its_own_output_slot() {
    for (i, s) in super::PourSeries::ALL.iter().enumerate() {
        assert_eq!(s.index(), i, "{s:?}");
    }
}

#[tokio::test]
async fn the_pours_rules_judge_its_derived_series_with_the_gb_50496_levels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_in(dir.path());
    // Core − surface 19 °C for 4 h (76 %: blue, 70-80 % of 25 °C), then 26 °C (red, ≥ 25 °C).
    run_engine(&spool, 0..=8, |h| {
        if h < 4 {
            (39.0, 20.0, 15.0)
        } else {
            (46.0, 20.0, 15.0)
        }
    })
    .await;
    let events: Vec<(String, AlertState, crate::alert::Level)> =
        crate::engine::tests::alerts(&spool)
            .into_iter()
            .filter(|a| a.kind == AlertKind::Quality)
            .map(|a| (a.rule, a.state, a.level))
            .collect();
    // Confirmed after 3 readings (the rules' default): blue at the 2 h poll, red at the 6 h
    // poll. The rise (7 °C above the first core reading, 39 °C) stays below 70 % of 50 °C.
    assert_eq!(
        events,
        [
            (
                "raft/core-surface".to_owned(),
                AlertState::Raised,
                crate::alert::Level::Blue
            ),
            (
                "raft/core-surface".to_owned(),
                AlertState::Escalated,
                crate::alert::Level::Red
            ),
        ]
    );
}

#[test]
fn a_late_reading_gives_no_maturity_of_its_own_and_changes_nothing() {
    let mut set = PourSet::new(plan(POUR), "xa", Language::Zh);
    let s = sensors();
    for h in 0..=4 {
        set.on_batch(&poll(&s, h, 30.0, 20.0, 15.0), T0 + h * H);
    }
    // A core reading from 2 h arrives late: the integrals are at 4 h already.
    let late = set.on_batch(
        &[Reading::good(Arc::clone(&s.core), T0 + 2 * H, 80.0)],
        T0 + 5 * H,
    );
    assert_eq!(value(&late, "therm/t01.maturity"), None);
    let out = set.on_batch(&poll(&s, 5, 30.0, 20.0, 15.0), T0 + 5 * H);
    // 5 h at 30 °C, T0 = 0: 150 °C·h, untouched by the late 80 °C.
    assert!(close(value(&out, "therm/t01.maturity"), 150.0, 1e-9));
}

#[test]
fn saved_maturity_of_another_mix_basis_starts_again_from_zero() {
    let mut set = PourSet::new(plan(POUR), "xa", Language::Zh);
    let s = sensors();
    for h in 0..=10 {
        set.on_batch(&poll(&s, h, 30.0, 20.0, 15.0), T0 + h * H);
    }
    let (delta, _) = set.state_changes();
    let entries: Vec<(String, Vec<u8>)> = delta
        .entries
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    // The same pour with T0 = −10 °C: 10 h of saved maturity rest on T0 = 0 and are dropped.
    let mut again = PourSet::new(
        plan(&POUR.replace(
            "design_strength_mpa = 30.0",
            "design_strength_mpa = 30.0\ndatum_temperature = -10.0",
        )),
        "xa",
        Language::Zh,
    );
    assert!(again.restore(&entries).is_empty());
    let out = again.on_batch(&poll(&s, 11, 30.0, 20.0, 15.0), T0 + 11 * H);
    // From placing at the first reading's 30 °C: 11 h × 40 °C = 440 °C·h (over 2 h: at the
    // lower end, the same 30 °C), not 10 × 30 + 40 = 340.
    assert!(close(value(&out, "therm/t01.maturity"), 440.0, 1e-9));
}

/// Rough cost per reading on this machine: `cargo test -p anju-gateway --release --lib
/// curing::tests::throughput -- --ignored --nocapture`. 100 pours of a core, a surface and an
/// air sensor each, one reading per sensor per batch of 300 (a site's poll).
#[test]
#[ignore = "benchmark; run by hand"]
fn throughput() {
    let mut text = POUR
        .split("[[pours]]")
        .next()
        .unwrap_or_default()
        .to_owned();
    for p in 0..100 {
        text.push_str(&format!(
            "[[pours]]\nname = \"p{p}\"\nelement = \"e\"\nplaced_at = \"2026-01-01T00:00:00Z\"\nmix = \"c30\"\n\
             sensors = {{ core = {{ channel = \"d{p}/core\" }}, surface = {{ channel = \"d{p}/surface\" }}, ambient = {{ channel = \"d{p}/air\" }} }}\n"
        ));
    }
    let mut set = PourSet::new(plan(&text), "xa", Language::Zh);
    let s = |d: String, p: &str| {
        Arc::new(Series::new(
            "xa",
            "gw",
            &d,
            p,
            QuantityKind::Temperature,
            "°C",
            &BTreeMap::new(),
        ))
    };
    let channels: Vec<Arc<Series>> = (0..100)
        .flat_map(|p| {
            [
                s(format!("d{p}"), "core"),
                s(format!("d{p}"), "surface"),
                s(format!("d{p}"), "air"),
            ]
        })
        .collect();
    let polls = 3_000_i64;
    let start = std::time::Instant::now();
    let mut derived = 0;
    for i in 0..polls {
        let ts = T0 + i * 600 * NANOS_PER_SEC;
        let batch: Vec<Reading> = channels
            .iter()
            .enumerate()
            .map(|(c, s)| {
                Reading::good(
                    Arc::clone(s),
                    ts,
                    20.0 + (c % 3) as f64 + (i % 7) as f64 * 0.1,
                )
            })
            .collect();
        derived += set.on_batch(&batch, ts).len();
        let _ = set.take_notices();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = polls as f64 * channels.len() as f64;
    println!(
        "{n} readings of 100 pours in {secs:.3} s: {:.2} µs per reading, {derived} derived readings",
        secs * 1e6 / n
    );
}

#[tokio::test]
async fn a_pour_sets_the_fractions_of_the_limit_at_which_each_level_fires() {
    use crate::alert::Level;
    // Yellow from 75 % and orange from 85 % of each limit: core − surface 19 °C is 76 % of
    // 25 °C, yellow (blue with the default 0.8), then 22 °C = 88 %, orange (yellow by default).
    let config = POUR.replace(
        "[[pours]]",
        "[[pours]]\nlevels = { blue = 0.6, yellow = 0.75, orange = 0.85 }",
    );
    let rules = plan(&config).rules(Language::En);
    let band = rules[1].upper.as_ref().expect("upper band");
    assert_eq!(
        (band.alarm, band.blue, band.yellow, band.orange, band.red),
        (Some(25.0), Some(0.6), Some(0.75), Some(0.85), Some(1.0))
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_in(dir.path());
    run_engine_with(&config, &spool, 0..=8, |h| {
        if h < 4 {
            (39.0, 20.0, 15.0)
        } else {
            (42.0, 20.0, 15.0)
        }
    })
    .await;
    let levels: Vec<(String, Level)> = crate::engine::tests::alerts(&spool)
        .into_iter()
        .filter(|a| a.kind == AlertKind::Quality)
        .map(|a| (a.rule, a.level))
        .collect();
    assert_eq!(
        levels,
        [
            ("raft/core-surface".to_owned(), Level::Yellow),
            ("raft/core-surface".to_owned(), Level::Orange),
        ]
    );
    // `gateway check`: fractions outside (0, 1.5] or not ascending, with their paths.
    let p = problems(&POUR.replace(
        "[[pours]]",
        "[[pours]]\nlevels = { blue = 0.9, yellow = 0.8, red = 80.0 }",
    ));
    let at = |path: &str| {
        p.iter()
            .find(|(a, _)| a == path)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("no problem at {path}: {p:?}"))
    };
    assert!(at("pours[0].levels.red").contains("0.8 for 80 %"));
    assert!(at("pours[0].levels").contains("must ascend"));
}

#[test]
fn under_the_insulation_a_surface_more_than_20_above_the_air_advises_not_to_strip_yet() {
    // The insulation comes off at 10 h (POUR). Surface 40 °C over air 18 °C: 22 °C > 20 °C
    // (GB 50496-2018 §3.0.4-4), do not strip yet, at 2 h; 19 °C at 4 h is within the 2 °C
    // deadband (no change); 17.5 °C at 6 h ≤ 18 °C: may strip. Each turn once.
    let mut set = PourSet::new(plan(POUR), "xa", Language::En);
    let s = sensors();
    let mut advice = Vec::new();
    for (h, surface) in [
        (0, 35.0),
        (1, 37.0),
        (2, 40.0),
        (3, 41.0),
        (4, 37.0),
        (5, 36.5),
        (6, 35.5),
        (7, 35.0),
    ] {
        let out = set.on_batch(&poll(&s, h, 45.0, surface, 18.0), T0 + h * H);
        assert!(
            close(
                value(&out, "therm/t02.surface-ambient-covered"),
                surface - 18.0,
                1e-9
            ),
            "hour {h}: {out:?}"
        );
        assert_eq!(value(&out, "therm/t02.surface-ambient"), None, "hour {h}");
        for n in set.take_notices() {
            if n.cause == crate::alert::Cause::StripAdvice {
                advice.push((h, n.value, n.rule, n.label.unwrap_or_default()));
            }
        }
    }
    let got: Vec<(i64, Option<f64>, &str)> = advice
        .iter()
        .map(|(h, v, rule, _)| (*h, *v, rule.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (2, Some(22.0), "raft/strip-advice"),
            (6, Some(17.5), "raft/strip-advice")
        ]
    );
    assert!(advice[0].3.contains("do not strip"), "{}", advice[0].3);
    assert!(advice[1].3.contains("may come off"), "{}", advice[1].3);
    let (delta, _) = set.state_changes();
    let pour = delta
        .entries
        .get("vp/raft")
        .and_then(Option::as_ref)
        .expect("pour state saved");
    let pour: super::PourState = serde_json::from_slice(pour).expect("pour state JSON");
    assert_eq!(pour.strip_advice, Some(false));
}

#[test]
fn a_node_uploading_hours_of_stored_polls_in_one_batch_combines_each_poll_with_itself() {
    // A curing node back from a radio outage sends 40 stored 10-minute polls at once: one batch
    // of 120 readings, far more than the 16 per sensor kept between batches. Each core − surface
    // and surface − air is that poll's own pair (the values drift apart poll by poll, so a
    // neighbouring poll's partner gives another number), and every one is good.
    let mut set = PourSet::new(plan(POUR), "xa", Language::En);
    let s = sensors();
    let step = 10 * 60 * NANOS_PER_SEC;
    let at = |i: i64| {
        (
            T0 + i * step,
            40.0 + 0.3 * i as f64,
            30.0 + 0.1 * i as f64,
            15.0 + 0.25 * i as f64,
        )
    };
    let mut batch = Vec::new();
    for i in 0..40 {
        let (ts, core, surface, air) = at(i);
        batch.push(Reading::good(Arc::clone(&s.core), ts, core));
        batch.push(Reading::good(Arc::clone(&s.surface), ts, surface));
        batch.push(Reading::good(Arc::clone(&s.air), ts, air));
    }
    let out = set.on_batch(&batch, T0 + 40 * step);
    type Of = fn(f64, f64, f64) -> f64;
    let combined: [(&str, Of); 2] = [
        ("therm/t01.core-surface", |core, surface, _| core - surface),
        ("therm/t02.surface-ambient-covered", |_, surface, air| {
            surface - air
        }),
    ];
    for (key, of) in combined {
        let got: Vec<&Reading> = out.iter().filter(|r| r.series.key == key).collect();
        assert_eq!(got.len(), 40, "{key}: one per poll");
        for r in got {
            let i = (r.ts - T0) / step;
            let (_, core, surface, air) = at(i);
            let expected = of(core, surface, air);
            assert_eq!(r.quality, Quality::Good, "{key} poll {i}");
            assert!(
                close(r.value, expected, 1e-9),
                "{key} poll {i}: {:?} stored, {expected} from the poll's own readings",
                r.value
            );
        }
    }
    // The last polls are kept for the next batch: a surface reading 5 min after the last poll
    // waits for the air of its time; when none came within COMBINE_WAIT, it is combined with
    // that last poll's air.
    let (ts, _, _, air) = at(39);
    let now = T0 + 41 * step;
    let out = set.on_batch(
        &[Reading::good(
            Arc::clone(&s.surface),
            ts + 5 * 60 * NANOS_PER_SEC,
            50.0,
        )],
        now,
    );
    assert_eq!(value(&out, "therm/t02.surface-ambient-covered"), None);
    let out = set.on_batch(&[], now + wait_ns());
    assert!(close(
        value(&out, "therm/t02.surface-ambient-covered"),
        50.0 - air,
        1e-9
    ));
}

fn wait_ns() -> i64 {
    i64::try_from(crate::engine::derived::COMBINE_WAIT.as_nanos()).expect("short")
}

#[test]
fn a_poll_split_over_two_messages_is_combined_with_its_own_readings() {
    // A node that sends each sensor in its own message: the surface reading of a poll can reach
    // the engine a batch before the air reading of the same poll. It waits for it instead of
    // taking the air of the poll before (10 min earlier, within max_skew), and the core waits
    // for the surface likewise.
    let mut set = PourSet::new(plan(POUR), "xa", Language::En);
    let s = sensors();
    let now = T0 + 3 * H;
    let mut all = set.on_batch(&poll(&s, 1, 40.0, 30.0, 18.0), now);
    let ts = T0 + H + 10 * 60 * NANOS_PER_SEC;
    let out = set.on_batch(
        &[
            Reading::good(Arc::clone(&s.core), ts, 41.0),
            Reading::good(Arc::clone(&s.surface), ts, 32.0),
        ],
        now,
    );
    assert_eq!(value(&out, "therm/t02.surface-ambient-covered"), None);
    assert!(
        value(&out, "therm/t01.rise").is_some(),
        "the core's own series do not wait"
    );
    all.extend(out);
    let out = set.on_batch(&[Reading::good(Arc::clone(&s.air), ts, 21.0)], now + 1);
    assert!(close(
        value(&out, "therm/t02.surface-ambient-covered"),
        32.0 - 21.0,
        1e-9
    ));
    all.extend(out);
    // Each difference once per time, from its own poll.
    let at_ts = |key: &str| -> Vec<Option<f64>> {
        all.iter()
            .filter(|r| r.series.key == key && r.ts == ts)
            .map(|r| r.value)
            .collect()
    };
    assert_eq!(at_ts("therm/t01.core-surface"), [Some(41.0 - 32.0)]);
    assert_eq!(at_ts("therm/t02.surface-ambient-covered").len(), 1);
    // A surface reading whose air never comes: combined from what there is once the wait is
    // over (the air 10 min before, within max_skew), or when the engine stops.
    let ts2 = ts + 10 * 60 * NANOS_PER_SEC;
    let out = set.on_batch(&[Reading::good(Arc::clone(&s.surface), ts2, 33.0)], now);
    assert_eq!(value(&out, "therm/t02.surface-ambient-covered"), None);
    let out = set.on_batch(&[], now + wait_ns() - 1);
    assert_eq!(value(&out, "therm/t02.surface-ambient-covered"), None);
    let out = set.on_batch(&[], now + wait_ns());
    assert!(close(
        value(&out, "therm/t02.surface-ambient-covered"),
        33.0 - 21.0,
        1e-9
    ));
    // The engine stopping combines what waits: 10 min and 1 ns after the last air reading,
    // beyond max_skew, flagged.
    let out = set.on_batch(&[Reading::good(Arc::clone(&s.surface), ts2 + 1, 34.0)], now);
    assert_eq!(value(&out, "therm/t02.surface-ambient-covered"), None);
    assert!(set.is_waiting());
    let out = set.release_waiting(now);
    let covered: Vec<(Option<f64>, Quality)> = out
        .iter()
        .filter(|r| r.series.key == "therm/t02.surface-ambient-covered")
        .map(|r| (r.value, r.quality))
        .collect();
    assert_eq!(covered, [(None, Quality::DerivedInputBad)]);
    assert!(!set.is_waiting());
}
