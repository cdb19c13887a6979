//! Rule behaviour, driven by an injected clock: tables of readings in, alert events out.
//!
//! Every expected threshold, slope and ratio below is computed by hand in the comment next to it;
//! ids are FNV-1a values computed independently (Python).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::*;
use crate::alert::{Alert, AlertKind, AlertState, Cause, Level, Side};
use crate::engine::derived::{DerivedPlan, DerivedSet};
use crate::model::{Quality, QuantityKind, Reading, Series, TimestampNs, NANOS_PER_SEC};

/// 2026-01-01T00:00:00Z.
const T0: TimestampNs = 1_767_225_600_000_000_000;
const S: i64 = NANOS_PER_SEC;
const MIN: i64 = 60 * S;
const H: i64 = 60 * MIN;

fn series(
    device: &str,
    point: &str,
    kind: QuantityKind,
    unit: &str,
    tags: &[(&str, &str)],
) -> Arc<Series> {
    let extra: BTreeMap<String, String> = tags
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Arc::new(Series::new("xa", "gw1", device, point, kind, unit, &extra))
}

fn settlement(device: &str, point: &str) -> Arc<Series> {
    series(
        device,
        point,
        QuantityKind::Settlement,
        "mm",
        &[("structure", "A栋")],
    )
}

fn thermistor(point: &str) -> Arc<Series> {
    series("slab-3f-therm", point, QuantityKind::Temperature, "°C", &[])
}

fn ruleset(text: &str) -> RuleSet {
    let cfg: AlertsConfig = toml::from_str(text).expect("rules TOML parses");
    RuleSet::from_config(&cfg, "alerts").unwrap_or_else(|p| panic!("rules rejected: {p:?}"))
}

fn problems(text: &str) -> Vec<String> {
    let cfg: AlertsConfig = toml::from_str(text).expect("rules TOML parses");
    match RuleSet::from_config(&cfg, "alerts") {
        Ok(_) => panic!("accepted but should not be:\n{text}"),
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

/// An evaluator for site `xa` with the derived channels of its rate, difference and tilt rules,
/// wired as the engine wires them: a reading the rules used (or a bad one) feeds the derived
/// channels, and their readings are judged like any; readings arrive at their own time.
struct Site {
    ev: Evaluator,
    derived: DerivedSet,
}

impl Site {
    fn new(rules: &str) -> Self {
        Self::with(Evaluator::new(ruleset(rules), "xa"))
    }
    fn with(ev: Evaluator) -> Self {
        let specs = ev.rules().derived_blocks().to_vec();
        Self {
            ev,
            derived: DerivedSet::new(DerivedPlan { specs }),
        }
    }
    fn good(&mut self, s: &Arc<Series>, ts: TimestampNs, v: f64) -> (Verdict, Vec<Alert>) {
        self.judge(&Reading::good(Arc::clone(s), ts, v), ts)
    }
    fn bad(&mut self, s: &Arc<Series>, ts: TimestampNs, q: Quality) -> (Verdict, Vec<Alert>) {
        self.judge(&Reading::bad(Arc::clone(s), ts, q), ts)
    }
    fn judge(&mut self, r: &Reading, now: TimestampNs) -> (Verdict, Vec<Alert>) {
        let (verdict, mut alerts) = self.ev.on_reading(r, now);
        if matches!(verdict, Verdict::Usable | Verdict::BadQuality) {
            for d in self.derived.on_batch(std::slice::from_ref(r)) {
                alerts.extend(self.ev.on_reading(&d, now).1);
            }
        }
        (verdict, alerts)
    }
}

/// (reading index, state, level, previous level, threshold) of an event.
type Ev = (usize, AlertState, Level, Option<Level>, Option<f64>);

/// Feed `values` one per second from T0 to one channel; collect the events.
fn feed(site: &mut Site, s: &Arc<Series>, values: &[f64]) -> Vec<(usize, Alert)> {
    let mut out = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let ts = T0 + i64::try_from(i).expect("small") * S;
        for a in site.good(s, ts, v).1 {
            out.push((i, a));
        }
    }
    out
}

fn brief(events: &[(usize, Alert)]) -> Vec<Ev> {
    events
        .iter()
        .map(|(i, a)| (*i, a.state, a.level, a.previous_level, a.threshold))
        .collect()
}

const TOTAL: &str = r#"
[[rules]]
name = "settlement-total"
kind = "absolute"
select = { kind = "settlement" }
upper = { alarm = 30.0, yellow = 0.7, orange = 0.85, red = 1.0 }
confirm = { count = 3 }
"#;

/// [`TOTAL`] with the bad-quality check on every channel, at its defaults.
fn total_with_bad_quality() -> String {
    format!("{TOTAL}[[checks]]\nselect = {{}}\nbad_quality = {{}}\n")
}

#[test]
fn confirmation_hysteresis_escalation_and_clearing() {
    use AlertState::{Cleared, DeEscalated, Escalated, Raised};
    use Level::{Orange, Red, Yellow};
    // Thresholds 30 × (0.7, 0.85, 1.0) = 21, 25.5, 30 mm; default 10 % deadband: clearing
    // thresholds 18.9, 22.95, 27 mm.
    let cases: Vec<(&str, Vec<f64>, Vec<Ev>)> = vec![
        (
            "three readings over yellow raise on the third",
            vec![22.0, 22.0, 22.0],
            vec![(2, Raised, Yellow, None, Some(21.0))],
        ),
        (
            "an interrupted run does not raise",
            vec![22.0, 22.0, 10.0, 22.0, 22.0],
            vec![],
        ),
        (
            "escalation needs its own three readings",
            vec![22.0, 22.0, 22.0, 26.0, 26.0, 26.0, 31.0, 31.0, 31.0],
            vec![
                (2, Raised, Yellow, None, Some(21.0)),
                (5, Escalated, Orange, Some(Yellow), Some(25.5)),
                (8, Escalated, Red, Some(Orange), Some(30.0)),
            ],
        ),
        (
            "de-escalation level by level, then clear",
            vec![
                31.0, 31.0, 31.0, 26.0, 26.0, 26.0, 20.0, 20.0, 20.0, 10.0, 10.0, 10.0,
            ],
            vec![
                (2, Raised, Red, None, Some(30.0)),
                // 26 < 27 leaves red; 26 ≥ 22.95 keeps orange.
                (5, DeEscalated, Orange, Some(Red), Some(25.5)),
                // 20 < 22.95 leaves orange; 20 ≥ 18.9 keeps yellow.
                (8, DeEscalated, Yellow, Some(Orange), Some(21.0)),
                (11, Cleared, Yellow, Some(Yellow), Some(21.0)),
            ],
        ),
        (
            "19 is inside yellow's deadband (18.9): no clear; 18 clears",
            vec![22.0, 22.0, 22.0, 19.0, 19.0, 19.0, 19.0, 18.0, 18.0, 18.0],
            vec![
                (2, Raised, Yellow, None, Some(21.0)),
                (9, Cleared, Yellow, Some(Yellow), Some(21.0)),
            ],
        ),
    ];
    for (name, values, want) in cases {
        let mut site = Site::new(TOTAL);
        let events = feed(&mut site, &settlement("lev-a1", "ch3"), &values);
        assert_eq!(brief(&events), want, "{name}");
        // One condition is one alert: the same id on every event, seq 0, 1, 2, ...
        for (n, (_, a)) in events.iter().enumerate() {
            assert_eq!(a.id, events[0].1.id, "{name}");
            assert_eq!(a.seq, u32::try_from(n).expect("small"), "{name}");
            assert_eq!(
                (a.kind, a.cause, a.side),
                (AlertKind::Quality, Cause::Absolute, Some(Side::Upper))
            );
        }
        assert_eq!(
            site.ev.active_alerts().count(),
            usize::from(want.last().is_some_and(|e| e.1 != Cleared)),
            "{name}"
        );
    }
}

#[test]
fn alert_fields_and_stable_id() {
    let mut site = Site::new(TOTAL);
    let events = feed(&mut site, &settlement("lev-a1", "ch3"), &[32.5, 32.5, 32.5]);
    let a = &events[0].1;
    // FNV-1a 64 of "xa\x1fsettlement-total\x1fupper\x1flev-a1/ch3\x1f1767225602000000000" (Python).
    assert_eq!(a.id, "58e197673f3830d3");
    assert_eq!(a.started_at, T0 + 2 * S);
    assert_eq!(a.event_at, T0 + 2 * S);
    assert_eq!(
        (
            a.site.as_str(),
            a.structure.as_deref(),
            a.device.as_str(),
            a.point.as_str()
        ),
        ("xa", Some("A栋"), "lev-a1", "ch3")
    );
    assert_eq!(
        (a.channel.as_str(), a.rule.as_str(), a.unit.as_str()),
        ("lev-a1/ch3", "settlement-total", "mm")
    );
    assert_eq!((a.value, a.threshold), (Some(32.5), Some(30.0)));
    assert_eq!(a.message, "【警报】A栋 沉降点 lev-a1/ch3 累计沉降 32.5 mm，超过警报值 30.0 mm（规则 settlement-total）");

    // The same readings in another evaluator give the same id: a re-sent alert de-duplicates.
    let mut again = Site::new(TOTAL);
    assert_eq!(
        feed(
            &mut again,
            &settlement("lev-a1", "ch3"),
            &[32.5, 32.5, 32.5]
        )[0]
        .1
        .id,
        a.id
    );
}

#[test]
fn english_messages_on_request() {
    let mut site = Site::new(&format!("language = \"en\"\n{TOTAL}"));
    let events = feed(&mut site, &settlement("lev-a1", "ch3"), &[26.0, 26.0, 26.0]);
    assert_eq!(
        events[0].1.message,
        "[Warning] A栋 settlement point lev-a1/ch3 cumulative settlement 26.0 mm, above the warning level 25.5 mm (rule settlement-total)"
    );
}

/// (name, channel, expected level and threshold).
type SelectCase = (&'static str, Arc<Series>, Option<(Level, f64)>);

#[test]
fn selectors_overrides_and_level_fractions() {
    let rules = r#"
[[rules]]
name = "settlement-total"
kind = "absolute"
select = { kind = "settlement", tags = { structure = "A栋" } }
upper = { alarm = 30.0, yellow = 0.7, orange = 0.85, red = 1.0 }
confirm = { count = 1 }
[[rules.overrides]]
channel = "lev-a1/ch3"
upper = { alarm = 20.0 }
[[rules.overrides]]
channel = "lev-a1/ch4"
enabled = false
[[rules.overrides]]
channel = "lev-a1/ch5"
upper = { yellow = 10.0 }
"#;
    let block_b = series(
        "lev-b1",
        "ch1",
        QuantityKind::Settlement,
        "mm",
        &[("structure", "B栋")],
    );
    let temp = series(
        "lev-a1",
        "t",
        QuantityKind::Temperature,
        "°C",
        &[("structure", "A栋")],
    );
    // Value 22 mm on each channel, one reading each.
    let cases: [SelectCase; 6] = [
        // 21 ≤ 22 < 25.5.
        (
            "selected, rule thresholds",
            settlement("lev-a1", "ch1"),
            Some((Level::Yellow, 21.0)),
        ),
        ("other structure", block_b, None),
        ("other quantity", temp, None),
        // Alarm 20 keeps the rule's fractions: 14, 17, 20; 22 ≥ 20.
        (
            "override: alarm only",
            settlement("lev-a1", "ch3"),
            Some((Level::Red, 20.0)),
        ),
        ("override: disabled", settlement("lev-a1", "ch4"), None),
        // Values instead of fractions: a single yellow level at 10.
        (
            "override: level values",
            settlement("lev-a1", "ch5"),
            Some((Level::Yellow, 10.0)),
        ),
    ];
    for (name, s, want) in cases {
        let mut site = Site::new(rules);
        let got = site
            .good(&s, T0, 22.0)
            .1
            .first()
            .map(|a| (a.level, a.threshold.expect("threshold")));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn change_from_first_reading_or_configured_baseline() {
    let rules = r#"
[[rules]]
name = "settlement-change"
kind = "change"
select = { kind = "settlement" }
upper = { red = 10.0 }
confirm = { count = 1 }
[[rules.overrides]]
channel = "lev-a1/ch2"
baseline = 100.0
"#;
    // ch1: baseline = first reading 100.0; 109.9 is +9.9, 110.0 is +10.0 → red.
    let mut site = Site::new(rules);
    let ch1 = settlement("lev-a1", "ch1");
    assert!(site.good(&ch1, T0, 100.0).1.is_empty());
    assert!(site.good(&ch1, T0 + S, 109.9).1.is_empty());
    let e = site.good(&ch1, T0 + 2 * S, 110.0).1;
    assert_eq!((e[0].level, e[0].value), (Level::Red, Some(10.0)));
    // ch2: configured baseline 100.0; the first reading, 111.0, is already +11.
    let e = site.good(&settlement("lev-a1", "ch2"), T0, 111.0).1;
    assert_eq!((e[0].level, e[0].value), (Level::Red, Some(11.0)));
    assert_eq!(e[0].cause, Cause::Change);
}

#[test]
fn rate_is_the_least_squares_slope_and_ignores_unusable_readings() {
    let rules = r#"
[[rules]]
name = "settlement-rate"
kind = "rate"
select = { kind = "settlement" }
window = "1d"
min_points = 5
upper = { yellow = 2.0, red = 4.0 }
confirm = { count = 1 }
[[checks]]
select = { kind = "settlement" }
range = { min = -100.0, max = 100.0 }
"#;
    let mut site = Site::new(rules);
    let ch = settlement("lev-a1", "ch1");
    // t (d) = 0, .25, .5, .75, 1; v (mm) = 0, .5, 1.5, 2, 3: mean t .5, mean v 1.4,
    // Sxy = .7 + .225 + 0 + .15 + .8 = 1.875, Sxx = .625, slope = 3.0 mm/d (yellow ≤ 3 < red).
    // A timeout at 3 h and an out-of-range 500 mm at 9 h must not enter the window.
    assert_eq!(site.good(&ch, T0, 0.0).0, Verdict::Usable);
    assert_eq!(
        site.bad(&ch, T0 + 3 * H, Quality::Timeout).0,
        Verdict::BadQuality
    );
    assert!(site.good(&ch, T0 + 6 * H, 0.5).1.is_empty());
    assert_eq!(site.good(&ch, T0 + 9 * H, 500.0).0, Verdict::OutOfRange);
    assert!(site.good(&ch, T0 + 12 * H, 1.5).1.is_empty());
    assert!(
        site.good(&ch, T0 + 18 * H, 2.0).1.is_empty(),
        "4 points < min_points 5"
    );
    let (_, e) = site.good(&ch, T0 + 24 * H, 3.0);
    assert_eq!(e.len(), 1);
    let a = &e[0];
    assert_eq!(
        (a.state, a.level, a.cause, a.unit.as_str(), a.threshold),
        (
            AlertState::Raised,
            Level::Yellow,
            Cause::Rate,
            "mm/d",
            Some(2.0)
        )
    );
    assert!(
        (a.value.expect("value") - 3.0).abs() < 1e-9,
        "{:?}",
        a.value
    );
}

/// The GB 50496 / GB 50007 rule file used by the tests below.
const GB_RULES: &str = r#"
[[rules]]
name = "core-surface"
kind = "difference"
label = "里表温差"
pairs = [{ a = "slab-3f-therm/t1", b = "slab-3f-therm/t2" }]
upper = { alarm = 25.0, yellow = 0.8, red = 1.0 }   # GB 50496-2018 §3.0.4-2: ≤ 25 °C
confirm = { count = 2 }

[[rules]]
name = "cooling-rate"
kind = "rate"
label = "降温速率"
select = { device = "slab-3f-therm", point = "t1" }
window = "1d"
lower = { alarm = -2.0, yellow = 0.8, red = 1.0 }   # GB 50496-2018 §3.0.4-3: ≤ 2.0 °C/d

[[rules]]
name = "local-tilt"
kind = "tilt"
unit = "mm"
pairs = [{ a = "lev-a1/ch1", b = "lev-a1/ch2", distance_m = 8.0 }]
upper = { alarm = 0.002, yellow = 0.7, orange = 0.85, red = 1.0 }   # GB 50007-2011 Table 5.3.4
confirm = { count = 1 }
"#;

#[test]
fn gb50496_core_surface_difference() {
    let mut site = Site::new(GB_RULES);
    let (core, surface) = (thermistor("t1"), thermistor("t2"));
    // Thresholds 25 × 0.8 = 20 °C (yellow), 25 °C (red); confirm 2 observations of the pair.
    assert!(
        site.good(&core, T0, 55.0).1.is_empty(),
        "no surface reading yet"
    );
    assert!(
        site.good(&surface, T0 + S, 34.0).1.is_empty(),
        "21 °C: first observation"
    );
    let e = site.good(&core, T0 + MIN, 60.0).1; // 26 °C: second observation ≥ 20
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].state, e[0].level, e[0].value, e[0].threshold),
        (AlertState::Raised, Level::Yellow, Some(26.0), Some(20.0))
    );
    // Judged on the rule's derived channel of the pair, named after both channels.
    assert_eq!(e[0].channel, "slab-3f-therm/t1-t2.core-surface");
    assert_eq!(
        e[0].channels,
        vec!["slab-3f-therm/t1".to_owned(), "slab-3f-therm/t2".to_owned()]
    );
    assert_eq!(e[0].message, "【警示】测温点 slab-3f-therm/t1 与 slab-3f-therm/t2 里表温差 26.0 °C，超过警示值 20.0 °C（规则 core-surface）");
    let e = site.good(&surface, T0 + MIN + S, 34.0).1; // 26 °C again: red confirmed
    assert_eq!(
        (e[0].state, e[0].level, e[0].previous_level),
        (AlertState::Escalated, Level::Red, Some(Level::Yellow))
    );
    // A core reading 20 minutes after the last surface reading is not compared (max_skew 10m).
    assert!(site.good(&core, T0 + 21 * MIN + S, 70.0).1.is_empty());
}

#[test]
fn gb50496_cooling_rate_on_a_lower_band() {
    let mut site = Site::new(GB_RULES);
    let core = thermistor("t1");
    // 60 − 2.5·t(d): slope −2.5 °C/d ≤ −2.0 (red). The window needs 3 points over 12 h
    // (min_span = window / 2), so the first slope is at 12 h; default confirm: 3 in a row.
    let mut events = Vec::new();
    for (h, v) in [
        (0, 60.0),
        (6, 59.375),
        (12, 58.75),
        (18, 58.125),
        (24, 57.5),
    ] {
        events.extend(
            site.good(&core, T0 + h * H, v)
                .1
                .into_iter()
                .map(|a| (h, a)),
        );
    }
    assert_eq!(events.len(), 1);
    let (h, a) = &events[0];
    assert_eq!(
        (*h, a.level, a.side, a.threshold, a.unit.as_str()),
        (24, Level::Red, Some(Side::Lower), Some(-2.0), "°C/d")
    );
    assert!((a.value.expect("value") + 2.5).abs() < 1e-9);
    assert_eq!(a.message, "【警报】测温点 slab-3f-therm/t1 降温速率 -2.5 °C/d，低于警报值 -2.0 °C/d（规则 cooling-rate）");
}

#[test]
fn gb50007_tilt_ratio() {
    // |a − b| / 8000 mm; thresholds 0.002 × (0.7, 0.85, 1) = 0.0014, 0.0017, 0.002.
    let cases = [
        (4.0, 12.0, None),                // 8 / 8000 = 0.001
        (0.0, 12.0, Some(Level::Yellow)), // 0.0015
        (0.0, 14.0, Some(Level::Orange)), // 0.00175
        (20.0, 4.0, Some(Level::Red)),    // 0.002, sign ignored (abs is the tilt default)
        (0.0, 24.0, Some(Level::Red)),    // 0.003
    ];
    for (a, b, want) in cases {
        let mut site = Site::new(GB_RULES);
        assert!(site.good(&settlement("lev-a1", "ch1"), T0, a).1.is_empty());
        let e = site.good(&settlement("lev-a1", "ch2"), T0 + S, b).1;
        assert_eq!(e.first().map(|x| x.level), want, "{a} vs {b}");
    }
    let mut site = Site::new(GB_RULES);
    site.good(&settlement("lev-a1", "ch1"), T0, 20.0);
    let e = site.good(&settlement("lev-a1", "ch2"), T0 + S, 4.0).1;
    assert_eq!(e[0].message, "【警报】A栋 沉降点 lev-a1/ch1 与 lev-a1/ch2 倾斜率 0.0020，超过警报值 0.0020（规则 local-tilt）");
    assert_eq!((e[0].cause, e[0].unit.as_str()), (Cause::Tilt, ""));
}

#[test]
fn bad_quality_never_raises_or_clears_a_quality_alert_but_raises_a_device_fault() {
    let mut site = Site::new(&total_with_bad_quality());
    let ch = settlement("lev-a1", "ch3");
    let t = |i: i64| T0 + i * S;
    let mut quality = Vec::new();
    let mut faults = Vec::new();
    let mut sort = |i: i64, events: Vec<Alert>| {
        for a in events {
            match a.kind {
                AlertKind::Quality => quality.push((i, a.state)),
                AlertKind::DeviceFault => faults.push((i, a.state, a.rule.clone(), a.quality)),
                AlertKind::Notice => panic!("rules make no notices: {a:?}"),
            }
        }
    };
    // 31, timeout, 31, timeout, 31: the bad readings neither count toward confirmation nor break
    // it; the third good reading raises.
    for (i, v) in [
        (0, Some(31.0)),
        (1, None),
        (2, Some(31.0)),
        (3, None),
        (4, Some(31.0)),
    ] {
        let (verdict, e) = match v {
            Some(v) => site.good(&ch, t(i), v),
            None => site.bad(&ch, t(i), Quality::Timeout),
        };
        assert_eq!(
            verdict,
            if v.is_some() {
                Verdict::Usable
            } else {
                Verdict::BadQuality
            }
        );
        sort(i, e);
    }
    // Ten bad readings: the device fault is raised at the third in a row, the quality alert stays.
    for i in 5..15 {
        let e = site.bad(&ch, t(i), Quality::Timeout).1;
        sort(i, e);
    }
    // Good readings return: three clear the fault; the quality alert clears only on low values.
    for i in 15..18 {
        let e = site.good(&ch, t(i), 31.0).1;
        sort(i, e);
    }
    for i in 18..21 {
        let e = site.good(&ch, t(i), 0.0).1;
        sort(i, e);
    }
    assert_eq!(
        quality,
        vec![(4, AlertState::Raised), (20, AlertState::Cleared)]
    );
    assert_eq!(
        faults,
        vec![
            (7, AlertState::Raised, "bad-quality".to_owned(), Some(200)),
            (17, AlertState::Cleared, "bad-quality".to_owned(), None),
        ]
    );
}

#[test]
fn a_device_fault_code_is_reported_with_its_quality() {
    let mut site = Site::new(&total_with_bad_quality());
    let ch = settlement("lev-a1", "ch3");
    let mut last = Vec::new();
    for i in 0..3 {
        last = site.bad(&ch, T0 + i * S, Quality::DeviceFault(-2)).1;
    }
    assert_eq!(last[0].message, "【设备故障】A栋 沉降点 lev-a1/ch3 读数无效：设备报告传感器故障（状态码 2）（检查 bad-quality）");
    assert_eq!(last[0].level, Level::Yellow);
}

#[test]
fn no_device_fault_check_runs_unless_configured() {
    // Issue 7: a bad-quality check ran with no `[alerts]` section at all.
    for rules in ["", TOTAL] {
        let mut site = Site::new(rules);
        let ch = settlement("lev-a1", "ch3");
        for i in 0..10 {
            let (verdict, e) = site.bad(&ch, T0 + i * S, Quality::Timeout);
            assert_eq!(verdict, Verdict::BadQuality);
            assert!(e.is_empty(), "rules {rules:?}, reading {i}: {e:?}");
        }
    }
    // Configured for one device only: the other device's timeouts raise nothing.
    let only_a1 = r#"
[[checks]]
select = { device = "lev-a1" }
bad_quality = { count = 2 }
"#;
    let mut site = Site::new(only_a1);
    let (a1, a2) = (settlement("lev-a1", "ch3"), settlement("lev-a2", "ch3"));
    let mut raised = Vec::new();
    for i in 0..4 {
        for ch in [&a1, &a2] {
            for a in site.bad(ch, T0 + i * S, Quality::Timeout).1 {
                raised.push((i, a.channel.clone(), a.state));
            }
        }
    }
    assert_eq!(
        raised,
        vec![(1, "lev-a1/ch3".to_owned(), AlertState::Raised)]
    );
}

#[test]
fn repeated_and_older_readings_are_not_evaluated_twice() {
    let mut site = Site::new(TOTAL);
    let ch = settlement("lev-a1", "ch3");
    // A Modbus poll reading the same device sample again: same time, same value.
    assert_eq!(site.good(&ch, T0, 31.0).0, Verdict::Usable);
    assert_eq!(site.good(&ch, T0, 31.0).0, Verdict::Repeat);
    assert_eq!(site.good(&ch, T0 - S, 31.0).0, Verdict::Repeat);
    assert_eq!(site.good(&ch, T0 + S, 31.0).0, Verdict::Usable);
    assert!(
        site.good(&ch, T0 + S, 31.0).1.is_empty(),
        "only 2 distinct readings: no raise"
    );
    assert_eq!(site.good(&ch, T0 + 2 * S, 31.0).1.len(), 1);
}

const CHECKS: &str = r#"
[[rules]]
name = "settlement-total"
kind = "absolute"
select = { kind = "settlement" }
upper = { red = 25.0 }
confirm = { count = 1 }
[[checks]]
select = { kind = "settlement" }
level = "blue"
stuck = { count = 4 }
spike = { jump = 5.0, within = "10m" }
range = { min = -200.0, max = 200.0 }
"#;

#[test]
fn stuck_values_raise_a_device_fault_and_are_not_used() {
    let mut site = Site::new(CHECKS);
    let ch = settlement("lev-a1", "ch3");
    let values = [5.0, 5.0, 5.0, 5.0, 5.0, 5.1];
    let want = [
        Verdict::Usable,
        Verdict::Usable,
        Verdict::Usable,
        Verdict::Stuck,
        Verdict::Stuck,
        Verdict::Usable,
    ];
    assert_eq!(
        want.map(Verdict::flag).map(|q| q.map(Quality::code)),
        [None, None, None, Some(401), Some(401), None]
    );
    let mut events = Vec::new();
    for (i, (&v, &w)) in values.iter().zip(&want).enumerate() {
        let (verdict, e) = site.good(&ch, T0 + i64::try_from(i).expect("small") * S, v);
        assert_eq!(verdict, w, "reading {i}");
        events.extend(e.into_iter().map(|a| (i, a.state, a.cause, a.level)));
    }
    assert_eq!(
        events,
        vec![
            (3, AlertState::Raised, Cause::Stuck, Level::Blue),
            (5, AlertState::Cleared, Cause::Stuck, Level::Blue)
        ]
    );
}

#[test]
fn a_spike_is_discarded_and_reported() {
    let mut site = Site::new(CHECKS);
    let ch = settlement("lev-a1", "ch3");
    let t = |i: i64| T0 + i * S;
    assert_eq!(site.good(&ch, t(0), 10.0).0, Verdict::Usable);
    assert_eq!(site.good(&ch, t(1), 10.1).0, Verdict::Usable);
    // 30 jumps by 19.9 > 5: held; 10.2 is back within 5 of 10.1 and 19.8 from 30: a spike.
    assert_eq!(site.good(&ch, t(2), 30.0), (Verdict::Held, vec![]));
    assert!(site.ev.take_decided().is_empty(), "no verdict on 30 yet");
    let (verdict, e) = site.good(&ch, t(3), 10.2);
    assert_eq!(verdict, Verdict::Usable);
    let decided = site.ev.take_decided();
    assert_eq!(
        decided
            .iter()
            .map(|d| (d.channel.key.as_str(), d.ts, d.value, d.quality()))
            .collect::<Vec<_>>(),
        vec![("lev-a1/ch3", t(2), 30.0, Quality::Spike)],
        "30 is stored once, at its own time, flagged 402"
    );
    assert_eq!(decided[0].quality().code(), 402);
    assert_eq!(
        e.len(),
        1,
        "a spike fault, and no quality alert although 30 ≥ 25: {e:?}"
    );
    assert_eq!(
        (e[0].cause, e[0].state, e[0].value, e[0].threshold),
        (Cause::Spike, AlertState::Raised, Some(30.0), Some(5.0))
    );
    // Three good readings (10.2, 10.3, 10.4) clear it.
    assert!(site.good(&ch, t(4), 10.3).1.is_empty());
    let e = site.good(&ch, t(5), 10.4).1;
    assert_eq!(
        (e[0].cause, e[0].state),
        (Cause::Spike, AlertState::Cleared)
    );
}

#[test]
fn a_real_step_is_used_late_with_its_own_time() {
    let mut site = Site::new(CHECKS);
    let ch = settlement("lev-a1", "ch3");
    assert_eq!(site.good(&ch, T0, 10.0).0, Verdict::Usable);
    assert_eq!(site.good(&ch, T0 + S, 30.0).0, Verdict::Held);
    // 30.2 stays near 30: the step was real; 30 is used (red, at its own time), then 30.2.
    let (verdict, e) = site.good(&ch, T0 + 2 * S, 30.2);
    assert_eq!(verdict, Verdict::Usable);
    let decided = site.ev.take_decided();
    assert_eq!(
        decided
            .iter()
            .map(|d| (d.ts, d.value, d.quality()))
            .collect::<Vec<_>>(),
        vec![(T0 + S, 30.0, Quality::Good)]
    );
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].cause, e[0].level, e[0].event_at, e[0].value),
        (Cause::Absolute, Level::Red, T0 + S, Some(30.0))
    );
}

#[test]
fn a_held_jump_without_a_next_reading_is_released_by_the_tick() {
    let mut site = Site::new(CHECKS);
    let ch = settlement("lev-a1", "ch3");
    site.good(&ch, T0, 10.0);
    assert_eq!(site.good(&ch, T0 + S, 30.0).0, Verdict::Held);
    assert!(site.ev.on_tick(T0 + S + 9 * MIN).is_empty());
    assert!(!site.ev.has_decided());
    let e = site.ev.on_tick(T0 + S + 10 * MIN);
    let decided = site.ev.take_decided();
    assert_eq!(
        decided
            .iter()
            .map(|d| (d.ts, d.value, d.quality()))
            .collect::<Vec<_>>(),
        vec![(T0 + S, 30.0, Quality::Good)]
    );
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].cause, e[0].level, e[0].event_at, e[0].detected_at),
        (Cause::Absolute, Level::Red, T0 + S, T0 + S + 10 * MIN)
    );
}

#[test]
fn out_of_range_readings_raise_a_device_fault_and_no_quality_alert() {
    let mut site = Site::new(CHECKS);
    let ch = settlement("lev-a1", "ch3");
    let mut events = Vec::new();
    for (i, v) in [250.0, 250.0, 250.0, 20.0, 20.0, 20.0]
        .into_iter()
        .enumerate()
    {
        let (verdict, e) = site.good(&ch, T0 + i64::try_from(i).expect("small") * S, v);
        assert_eq!(
            verdict,
            if v > 200.0 {
                Verdict::OutOfRange
            } else {
                Verdict::Usable
            }
        );
        events.extend(
            e.into_iter()
                .map(|a| (i, a.state, a.cause, a.side, a.threshold)),
        );
    }
    // Default: raised at the 3rd in a row, cleared by the 3rd good one. 250 > 25 never reached
    // the red rule.
    assert_eq!(
        events,
        vec![
            (
                2,
                AlertState::Raised,
                Cause::OutOfRange,
                Some(Side::Upper),
                Some(200.0)
            ),
            (
                5,
                AlertState::Cleared,
                Cause::OutOfRange,
                Some(Side::Upper),
                Some(200.0)
            ),
        ]
    );
}

#[test]
fn stale_per_channel_and_per_device() {
    let rules = r#"
[[rules]]
name = "no-data"
kind = "stale"
select = { kind = "settlement" }
after = "30m"
[[rules]]
name = "device-silent"
kind = "stale"
select = { device = "lev-a1" }
scope = "device"
after = "1h"
level = "orange"
"#;
    let mut site = Site::new(rules);
    let (ch1, ch2) = (settlement("lev-a1", "ch1"), settlement("lev-a1", "ch2"));
    let temp = series("lev-a1", "t", QuantityKind::Temperature, "°C", &[]);
    site.good(&ch1, T0, 1.0);
    site.good(&ch2, T0, 1.0);
    site.ev.register(&temp, T0);
    site.good(&ch1, T0 + 20 * MIN, 1.0);
    assert!(site.ev.on_tick(T0 + 29 * MIN).is_empty());
    let e = site.ev.on_tick(T0 + 30 * MIN);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (
            e[0].cause,
            e[0].kind,
            e[0].channel.as_str(),
            e[0].value,
            e[0].threshold,
            e[0].level
        ),
        (
            Cause::Stale,
            AlertKind::DeviceFault,
            "lev-a1/ch2",
            Some(1800.0),
            Some(1800.0),
            Level::Yellow
        )
    );
    assert!(site.ev.on_tick(T0 + 31 * MIN).is_empty(), "raised once");
    let e = site.good(&ch2, T0 + 40 * MIN, 1.0).1;
    assert_eq!(
        (e[0].cause, e[0].state),
        (Cause::Stale, AlertState::Cleared)
    );
    // At 100 min: ch1 silent 80 min, ch2 60 min, the device 60 min (≥ 1 h).
    let mut e: Vec<(Cause, String, Level)> = site
        .ev
        .on_tick(T0 + 100 * MIN)
        .into_iter()
        .map(|a| (a.cause, a.channel, a.level))
        .collect();
    e.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        e,
        vec![
            (Cause::DeviceSilent, "lev-a1".to_owned(), Level::Orange),
            (Cause::Stale, "lev-a1/ch1".to_owned(), Level::Yellow),
            (Cause::Stale, "lev-a1/ch2".to_owned(), Level::Yellow),
        ]
    );
    // The temperature channel (not watched per channel) speaks: the device is heard again.
    let e = site.good(&temp, T0 + 101 * MIN, 20.0).1;
    assert_eq!(
        e.iter().map(|a| (a.cause, a.state)).collect::<Vec<_>>(),
        vec![(Cause::DeviceSilent, AlertState::Cleared)]
    );
    assert_eq!(
        e[0].message,
        "【故障解除】A栋 设备 lev-a1 设备无数据已恢复（检查 device-silent）"
    );
}

#[test]
fn a_registered_channel_that_never_reports_goes_stale() {
    let mut site = Site::new(
        "[[rules]]\nname = \"no-data\"\nkind = \"stale\"\nselect = {}\nafter = \"30m\"\n",
    );
    site.ev.register(&settlement("lev-a1", "ch1"), T0);
    assert_eq!(site.ev.on_tick(T0 + 30 * MIN).len(), 1);
}

/// Snapshot through JSON, as the engine would persist it.
fn restart(mut site: Site, rules: &str, now: TimestampNs) -> Site {
    let json = serde_json::to_string(&site.ev.snapshot()).expect("serialise");
    let state: EvaluatorState = serde_json::from_str(&json).expect("parse");
    let (delta, errors) = site.derived.state_changes();
    assert_eq!(errors, 0);
    let entries = delta.into_written();
    let mut again =
        Site::with(Evaluator::restore(ruleset(rules), "xa", state, now).expect("restore"));
    assert!(again.derived.restore(&entries).is_empty());
    again
}

#[test]
fn restart_in_the_middle_of_an_active_alert() {
    let mut site = Site::new(TOTAL);
    let ch = settlement("lev-a1", "ch3");
    let raised = feed(&mut site, &ch, &[31.0, 31.0, 31.0]);
    assert_eq!(raised.len(), 1);
    let id = raised[0].1.id.clone();
    // Two low readings before the restart: the clear run is at 2 of 3.
    assert!(site.good(&ch, T0 + 3 * S, 0.0).1.is_empty());
    assert!(site.good(&ch, T0 + 4 * S, 0.0).1.is_empty());

    let mut site = restart(site, TOTAL, T0 + 60 * S);
    assert_eq!(
        site.ev
            .active_alerts()
            .map(|a| a.id.clone())
            .collect::<Vec<_>>(),
        vec![id.clone()]
    );
    assert!(site.ev.on_tick(T0 + 60 * S).is_empty(), "nothing orphaned");
    // The third low reading completes the clear run begun before the restart: no lost clear.
    let e = site.good(&ch, T0 + 61 * S, 0.0).1;
    assert_eq!(
        e.iter()
            .map(|a| (a.id.as_str(), a.state, a.seq))
            .collect::<Vec<_>>(),
        vec![(id.as_str(), AlertState::Cleared, 1)]
    );
}

#[test]
fn restart_does_not_raise_again() {
    let mut site = Site::new(TOTAL);
    let ch = settlement("lev-a1", "ch3");
    feed(&mut site, &ch, &[31.0, 31.0, 31.0]);
    let mut site = restart(site, TOTAL, T0 + 60 * S);
    for i in 0..5 {
        assert!(
            site.good(&ch, T0 + (61 + i) * S, 31.0).1.is_empty(),
            "no duplicate raise"
        );
    }
}

#[test]
fn rate_windows_keep_their_history_over_a_restart() {
    let rules = r#"
[[rules]]
name = "settlement-rate"
kind = "rate"
select = { kind = "settlement" }
window = "1d"
min_points = 5
upper = { yellow = 2.0 }
confirm = { count = 1 }
"#;
    let mut site = Site::new(rules);
    let ch = settlement("lev-a1", "ch1");
    for (h, v) in [(0, 0.0), (6, 0.5), (12, 1.5), (18, 2.0)] {
        assert!(site.good(&ch, T0 + h * H, v).1.is_empty());
    }
    let mut site = restart(site, rules, T0 + 23 * H);
    // The fifth point after the restart completes the hand-computed 3.0 mm/d window.
    let e = site.good(&ch, T0 + 24 * H, 3.0).1;
    assert_eq!(e.len(), 1);
    assert!((e[0].value.expect("value") - 3.0).abs() < 1e-9);
}

#[test]
fn an_alert_whose_rule_was_removed_is_cleared_after_restart() {
    let mut site = Site::new(TOTAL);
    let ch = settlement("lev-a1", "ch3");
    let raised = feed(&mut site, &ch, &[31.0, 31.0, 31.0]);
    let other = "[[rules]]\nname = \"no-data\"\nkind = \"stale\"\nselect = {}\nafter = \"30m\"\n";
    let mut site = restart(site, other, T0 + 60 * S);
    let e = site.ev.on_tick(T0 + 60 * S);
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].id.as_str(), e[0].state, e[0].seq, e[0].value),
        (raised[0].1.id.as_str(), AlertState::Cleared, 1, None)
    );
    assert_eq!(
        e[0].message,
        "【解除】A栋 沉降点 lev-a1/ch3，警报告警解除（规则 settlement-total）"
    );
    assert!(site.ev.on_tick(T0 + 61 * S).is_empty(), "cleared once");
    assert_eq!(site.ev.active_alerts().count(), 0);
}

#[test]
fn stale_clocks_restart_after_the_gateway_was_down() {
    let rules = "[[rules]]\nname = \"no-data\"\nkind = \"stale\"\nselect = {}\nafter = \"30m\"\n";
    let mut site = Site::new(rules);
    site.good(&settlement("lev-a1", "ch1"), T0, 1.0);
    // The gateway was off for 2 h: its own downtime is not the channel's silence.
    let mut site = restart(site, rules, T0 + 2 * H);
    assert!(site.ev.on_tick(T0 + 2 * H + 29 * MIN).is_empty());
    assert_eq!(site.ev.on_tick(T0 + 2 * H + 30 * MIN).len(), 1);
}

#[test]
fn a_snapshot_of_another_format_is_refused() {
    let site = Site::new(TOTAL);
    let json = serde_json::to_string(&site.ev.snapshot()).expect("serialise");
    assert!(json.starts_with("{\"format\":1,"), "{json}");
    let state: EvaluatorState =
        serde_json::from_str(&json.replacen("\"format\":1", "\"format\":99", 1)).expect("parse");
    let err = Evaluator::restore(ruleset(TOTAL), "xa", state, T0).expect_err("refused");
    assert_eq!(
        err,
        RestoreError::Format {
            found: 99,
            expected: STATE_FORMAT
        }
    );
}

#[test]
fn config_problems_name_the_path_and_the_fix() {
    let cases: [(&str, &str); 13] = [
        ("[[rules]]\nname = \"a\"\nkind = \"absolute\"\nselect = {}\n", "alerts.rules[0]: has no thresholds"),
        (
            "[[rules]]\nname = \"a\"\nkind = \"absolute\"\nselect = {}\nupper = { yellow = 30.0, red = 20.0 }\n",
            "alerts.rules[0].upper.red: red threshold 20 must be above the yellow threshold 30",
        ),
        (
            "[[rules]]\nname = \"a\"\nkind = \"absolute\"\nselect = {}\nupper = { alarm = 30.0, yellow = 70.0 }\n",
            "alerts.rules[0].upper.yellow: 70 is not a fraction of `alarm`",
        ),
        (
            "[[rules]]\nname = \"a\"\nkind = \"absolute\"\nselect = {}\nupper = { red = 1.0 }\nwindow = \"1d\"\n",
            "alerts.rules[0].window: does not apply to kind = \"absolute\"",
        ),
        ("[[rules]]\nname = \"a\"\nkind = \"rate\"\nselect = {}\nupper = { red = 1.0 }\n", "alerts.rules[0].window: missing"),
        (
            "[[rules]]\nname = \"a\"\nkind = \"tilt\"\npairs = [{ a = \"d/p1\", b = \"d/p2\" }]\nupper = { red = 0.002 }\n",
            "alerts.rules[0].pairs[0].distance_m: a tilt pair needs the distance",
        ),
        (
            "[[rules]]\nname = \"a\"\nkind = \"absolute\"\nselect = {}\nupper = { red = 1.0 }\n[[rules]]\nname = \"a\"\nkind = \"absolute\"\nselect = {}\nupper = { red = 1.0 }\n",
            "alerts.rules[1].name: rule name \"a\" is used twice",
        ),
        ("[[rules]]\nname = \"stuck\"\nkind = \"absolute\"\nselect = {}\nupper = { red = 1.0 }\n", "alerts.rules[0].name: \"stuck\" is the name of a built-in"),
        (
            "[[rules]]\nname = \"a\"\nkind = \"absolute\"\nselect = {}\nupper = { red = 10.0 }\nlower = { red = 20.0 }\n",
            "alerts.rules[0]: the lowest upper threshold 10 must be above the highest lower threshold 20",
        ),
        ("[[rules]]\nname = \"a\"\nkind = \"stale\"\nselect = {}\n", "alerts.rules[0].after: missing"),
        ("[[checks]]\nselect = {}\nrange = { min = 10.0, max = 5.0 }\n", "alerts.checks[0].range: min 10 must be below max 5"),
        (
            "[[rules]]\nname = \"a\"\nkind = \"absolute\"\nselect = {}\nlower = { red = 0.0 }\n",
            "alerts.rules[0].clear: a threshold of 0 has no fractional deadband",
        ),
        ("[[rules]]\nname = \"a\"\nkind = \"absolute\"\nupper = { red = 1.0 }\n", "alerts.rules[0].select: missing"),
    ];
    for (text, want) in cases {
        let p = problems(text);
        assert!(
            p.iter().any(|p| p.starts_with(want)),
            "no problem starts with {want:?}; got {p:?}"
        );
    }
    // All problems at once.
    let p = problems("[[rules]]\nname = \"\"\nkind = \"rate\"\nupper = { red = 1.0 }\n");
    assert_eq!(p.len(), 3, "{p:?}"); // name, select, window
                                     // Unknown keys are refused by serde (deny_unknown_fields), with the key named.
    let err = toml::from_str::<AlertsConfig>(
        "[[rules]]\nname = \"a\"\nkind = \"absolute\"\nupper = { alarn = 30.0 }\n",
    )
    .expect_err("unknown key");
    assert!(err.to_string().contains("unknown field `alarn`"), "{err}");
}

#[test]
fn the_gb_rule_file_and_the_module_doc_example_are_valid() {
    let gb = ruleset(GB_RULES);
    assert_eq!(
        gb.rule_names(),
        vec!["core-surface", "cooling-rate", "local-tilt"]
    );

    // The example in this module's documentation, so that it cannot rot.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        alerts: AlertsConfig,
    }
    let doc = include_str!("mod.rs");
    let start = doc.find("//! ```toml\n").expect("example start") + "//! ```toml\n".len();
    let len = doc[start..].find("//! ```\n").expect("example end");
    let text: String = doc[start..start + len]
        .lines()
        .map(|l| l.strip_prefix("//!").unwrap_or(l).trim_start_matches(' '))
        .map(|l| format!("{l}\n"))
        .collect();
    let file: File = toml::from_str(&text).unwrap_or_else(|e| panic!("doc example: {e}\n{text}"));
    let set = RuleSet::from_config(&file.alerts, "alerts")
        .unwrap_or_else(|p| panic!("doc example: {p:?}"));
    assert_eq!(set.rule_names().len(), 6);
}

#[test]
fn memory_stays_bounded_per_channel() {
    let rules = r#"
[[rules]]
name = "settlement-rate"
kind = "rate"
select = {}
window = "100d"
upper = { red = 1.0 }
"#;
    let mut site = Site::new(rules);
    let ch = settlement("lev-a1", "ch1");
    // 100 days at one reading a minute (144 000 readings) with a trend of 0.01 mm/d.
    for i in 0..144_000_i64 {
        site.good(&ch, T0 + i * MIN, 0.01 * (i as f64) / 1440.0);
    }
    let state = site.ev.snapshot();
    let json = serde_json::to_string(&state).expect("serialise");
    // 65 buckets of ~200 bytes of JSON each, plus the channel: well under 32 KiB.
    assert!(json.len() < 32 * 1024, "{} bytes", json.len());
}

/// Rough throughput on this machine: `cargo test -p anju-gateway --release --lib
/// rules::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run by hand"]
fn throughput() {
    let rules = format!("{TOTAL}\n{GB_RULES}\n{CHECKS_ONLY}");
    let mut ev = Evaluator::new(ruleset(&rules), "xa");
    let channels: Vec<Arc<Series>> = (0..200)
        .map(|i| settlement(&format!("lev-{}", i / 8), &format!("ch{}", i % 8)))
        .collect();
    let n = 1_000_000_i64;
    let start = std::time::Instant::now();
    let mut events = 0;
    for i in 0..n {
        let s = &channels[usize::try_from(i % 200).expect("small")];
        let ts = T0 + i * 10_000_000;
        let r = Reading::good(Arc::clone(s), ts, 10.0 + ((i / 200) % 7) as f64 * 0.01);
        events += ev.on_reading(&r, ts).1.len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{n} readings over 200 channels in {secs:.3} s: {:.0} readings/s ({events} events)",
        n as f64 / secs
    );
}

const CHECKS_ONLY: &str = r#"
[[rules]]
name = "settlement-rate-all"
kind = "rate"
select = { kind = "settlement" }
window = "1d"
upper = { yellow = 1.4, red = 2.0 }
[[checks]]
select = { kind = "settlement" }
stuck = { count = 360 }
spike = { jump = 5.0 }
range = { min = -200.0, max = 200.0 }
"#;

/// Saved entries as the spool holds them: every delta applied in order.
#[derive(Default)]
struct Store(BTreeMap<String, Vec<u8>>);

impl Store {
    fn save(&mut self, ev: &mut Evaluator) -> crate::spool::StateDelta {
        let (delta, errors) = ev.state_changes();
        assert_eq!(errors, 0);
        for (k, v) in &delta.entries {
            match v {
                Some(v) => self.0.insert(k.clone(), v.clone()),
                None => self.0.remove(k),
            };
        }
        delta
    }
    fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

fn keys(delta: &crate::spool::StateDelta) -> Vec<(&str, bool)> {
    delta
        .entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.is_some()))
        .collect()
}

const ONE_RATE: &str = r#"
[[rules]]
name = "settlement-rate"
kind = "rate"
select = { point = "ch1" }
window = "1d"
min_points = 5
upper = { yellow = 2.0 }
confirm = { count = 1 }
"#;

#[test]
fn only_changed_entries_are_saved_a_channel_at_rest_is_not_rewritten() {
    let rules = format!("{TOTAL}\n{ONE_RATE}");
    let mut site = Site::new(&rules);
    let (ch0, ch1) = (settlement("lev-a1", "ch0"), settlement("lev-a1", "ch1"));
    let mut store = Store::default();
    site.good(&ch0, T0, 10.0);
    site.good(&ch1, T0, 10.0);
    let first = store.save(&mut site.ev);
    let (k0, k1) = (channel_entry_key(&ch0.key), channel_entry_key(&ch1.key));
    let mut want = vec![(k0.as_str(), true), (k1.as_str(), true), ("h", true)];
    want.sort_unstable();
    assert_eq!(keys(&first), want);
    // A normal reading: the absolute rule is at rest (ch0 unchanged); ch1's rate window moved,
    // but it is the rate rule's derived block's (saved with the derived state), not the rule's.
    site.good(&ch0, T0 + 10 * S, 10.5);
    site.good(&ch1, T0 + 10 * S, 10.5);
    assert!(store.save(&mut site.ev).is_empty());
    // Nothing read: nothing written.
    assert!(store.save(&mut site.ev).is_empty());
    // A raise writes the channel and the alert; the clear removes the alert entry.
    let raised: Vec<Alert> = (20..23)
        .flat_map(|i| site.good(&ch0, T0 + i * S, 31.0).1)
        .collect();
    let id = raised[0].id.clone();
    let alert_key = format!("a/{id}");
    assert_eq!(
        keys(&store.save(&mut site.ev)),
        vec![(alert_key.as_str(), true), (k0.as_str(), true)]
    );
    // TOTAL's default clear needs three readings below 18.9 mm.
    for i in 0..3 {
        site.good(&ch0, T0 + (100 + i) * S, 1.0);
    }
    let cleared = store.save(&mut site.ev);
    assert_eq!(cleared.entries.get(&alert_key), Some(&None));
    assert!(!store.0.contains_key(&alert_key));
}

#[test]
fn saved_entries_restore_an_active_alert_and_the_single_value_is_migrated_once() {
    let mut site = Site::new(TOTAL);
    let ch = settlement("lev-a1", "ch3");
    let raised = feed(&mut site, &ch, &[31.0, 31.0, 31.0]);
    let id = raised[0].1.id.clone();
    let mut store = Store::default();
    store.save(&mut site.ev);
    let (ev, report) =
        Evaluator::restore_entries(ruleset(TOTAL), "xa", store.entries(), T0 + 60 * S)
            .expect("restore");
    assert_eq!(report, RestoreReport::default());
    let mut site2 = Site::with(ev);
    assert!(
        site2.good(&ch, T0 + 61 * S, 31.0).1.is_empty(),
        "no second raise"
    );
    let mut events = Vec::new();
    for i in 0..3 {
        events.extend(site2.good(&ch, T0 + (62 + i) * S, 1.0).1);
    }
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].id.as_str(), events[0].state),
        (id.as_str(), AlertState::Cleared)
    );

    // Format 1: the whole state as one value under `rules`.
    let blob = serde_json::to_vec(&site.ev.snapshot()).expect("serialise");
    let legacy = vec![("rules".to_owned(), blob)];
    let (mut ev, report) =
        Evaluator::restore_entries(ruleset(TOTAL), "xa", legacy, T0 + 60 * S).expect("migrate");
    assert!(report.migrated);
    assert_eq!(ev.active_alerts().count(), 1);
    let (delta, _) = ev.state_changes();
    assert_eq!(
        delta.entries.get("rules"),
        Some(&None),
        "the single value is removed"
    );
    assert!(delta.entries.contains_key("h"));
    assert!(delta.entries.contains_key(&format!("a/{id}")));
    assert!(delta.entries.contains_key(&channel_entry_key(&ch.key)));

    let bad_header = vec![("h".to_owned(), br#"{"format":3}"#.to_vec())];
    assert_eq!(
        Evaluator::restore_entries(ruleset(TOTAL), "xa", bad_header, T0).err(),
        Some(RestoreError::Format {
            found: 3,
            expected: ENTRY_FORMAT
        })
    );
}

#[test]
fn an_evicted_channel_continues_its_rate_window_and_its_active_alert() {
    let rules = format!("{TOTAL}\n{ONE_RATE}");
    let mut site = Site::new(&rules);
    let ch = settlement("lev-a1", "ch1");
    // Four points of the hand-computed 3.0 mm/d window (see rate_windows_keep_their_history).
    for (h, v) in [(0, 0.0), (6, 0.5), (12, 1.5), (18, 2.0)] {
        assert!(site.good(&ch, T0 + h * H, v).1.is_empty());
    }
    let other = settlement("lev-a2", "ch1");
    let raised: Vec<Alert> = (0..3)
        .flat_map(|i| site.good(&other, T0 + 18 * H + 30 * MIN + i * S, 31.0).1)
        .collect();
    let id = raised[0].id.clone();
    assert_eq!(site.ev.channel_count(), 2);
    // Not idle yet for `other`: only `ch` (last heard at 18 h) goes after an hour.
    let (gone, delta) = site.ev.evict_idle(T0 + 19 * H, H);
    assert_eq!(gone, vec![ch.key.clone()]);
    assert_eq!(site.ev.channel_count(), 1);
    assert!(site.ev.maybe_evicted(&ch.key));
    let entry = delta.entries[&channel_entry_key(&ch.key)]
        .clone()
        .expect("written");
    site.ev
        .restore_channel(&entry, T0 + 24 * H)
        .expect("restore");
    assert!(!site.ev.maybe_evicted(&ch.key));
    // The fifth point completes the window that was evicted: 3.0 mm/d.
    let e = site.good(&ch, T0 + 24 * H, 3.0).1;
    assert_eq!(e.len(), 1);
    assert!((e[0].value.expect("value") - 3.0).abs() < 1e-9);

    // The channel with the active alert, evicted and back: no second raise, same id clears.
    // Idle: both channels, and the rate rule's derived channel holding the rate alert.
    let (gone, delta) = site.ev.evict_idle(T0 + 30 * H, H);
    assert_eq!(gone.len(), 3, "{gone:?}");
    assert_eq!(
        site.ev.active_alerts().count(),
        2,
        "alerts stay active while evicted"
    );
    let entry = delta.entries[&channel_entry_key(&other.key)]
        .clone()
        .expect("written");
    site.ev
        .restore_channel(&entry, T0 + 31 * H)
        .expect("restore");
    assert!(
        site.good(&other, T0 + 31 * H, 31.0).1.is_empty(),
        "no second raise"
    );
    let mut events = Vec::new();
    for i in 1..=3 {
        events.extend(site.good(&other, T0 + 31 * H + i * S, 1.0).1);
    }
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].id.as_str(), events[0].state),
        (id.as_str(), AlertState::Cleared)
    );
}

#[test]
fn channels_watched_by_a_stale_rule_are_not_evicted() {
    let rules = format!(
        "{TOTAL}\n[[rules]]\nname = \"no-data\"\nkind = \"stale\"\nselect = {{ point = \"ch1\" }}\nafter = \"30m\"\n"
    );
    let mut site = Site::new(&rules);
    site.good(&settlement("lev-a1", "ch1"), T0, 1.0);
    site.good(&settlement("lev-a1", "ch2"), T0, 1.0);
    let (gone, _) = site.ev.evict_idle(T0 + 2 * H, H);
    assert_eq!(gone, vec![settlement("lev-a1", "ch2").key.clone()]);
    // The watched channel's silence is still judged.
    assert_eq!(site.ev.on_tick(T0 + 2 * H).len(), 1);
}

/// Rule state bytes written per hour at 200 channels, one reading each every 10 s, saved every
/// 10 s (`STATE_SAVE_INTERVAL`): the whole state as one JSON value (format 1, before issue 11)
/// against the changed entries (format 2). Three absolute rules over all channels and one rate
/// rule over a quarter of them. `cargo test -p anju-gateway --release --lib
/// rules::tests::state_bytes_per_hour -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run by hand"]
fn state_bytes_per_hour() {
    let rules = r#"
[[rules]]
name = "settlement-total"
kind = "absolute"
select = { kind = "settlement" }
upper = { alarm = 30.0, yellow = 0.7, orange = 0.85, red = 1.0 }
confirm = { count = 3 }
[[rules]]
name = "settlement-heave"
kind = "absolute"
select = { kind = "settlement" }
lower = { alarm = -10.0, yellow = 0.7, red = 1.0 }
[[rules]]
name = "settlement-limit"
kind = "absolute"
select = { kind = "settlement" }
upper = { red = 50.0 }
[[rules]]
name = "settlement-rate"
kind = "rate"
select = { point = "ch0" }
window = "1d"
upper = { yellow = 2.0, red = 4.0 }
"#;
    let mut ev = Evaluator::new(ruleset(rules), "xa");
    // 50 devices of 4 channels: ch0 of each (50 channels) has the rate rule.
    let channels: Vec<Arc<Series>> = (0..200)
        .map(|i| settlement(&format!("lev-{:02}", i / 4), &format!("ch{}", i % 4)))
        .collect();
    let (mut blob_bytes, mut entry_bytes) = (0usize, 0usize);
    for tick in 0..360_i64 {
        let ts = T0 + tick * 10 * S;
        for (i, s) in channels.iter().enumerate() {
            // A slow settlement with sensor noise, well inside the thresholds.
            let v = 5.0 + 0.000_1 * tick as f64 + 0.01 * ((i as i64 + tick) % 5) as f64;
            let _ = ev.on_reading(&Reading::good(Arc::clone(s), ts, v), ts);
        }
        blob_bytes += "rules".len() + serde_json::to_vec(&ev.snapshot()).expect("json").len();
        entry_bytes += ev.state_changes().0.written_bytes();
    }
    println!(
        "rule state written per hour, 200 channels: single value {blob_bytes} bytes, changed entries {entry_bytes} bytes ({:.1}x less)",
        blob_bytes as f64 / entry_bytes.max(1) as f64
    );
    assert!(entry_bytes < blob_bytes);
}

/// Memory per channel held by the evaluator (`rules::tests::memory_per_channel`, run alone,
/// `--ignored --nocapture --test-threads 1`): resident size before and after 50 000 channels
/// with the rules of [`state_bytes_per_hour`]' mix (absolute rules on all, no rate window).
#[test]
#[ignore = "measurement; run by hand"]
fn memory_per_channel() {
    fn rss() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }
    let mut ev = Evaluator::new(ruleset(TOTAL), "xa");
    let n = 50_000_i64;
    let before = rss();
    let mut held = Vec::new();
    for i in 0..n {
        let s = settlement(&format!("dev-{:05}", i / 4), &format!("ch{}", i % 4));
        let _ = ev.on_reading(&Reading::good(Arc::clone(&s), T0, 1.0), T0);
        held.push(s);
    }
    let after = rss();
    println!(
        "evaluator + series: {} bytes per channel over {n} channels",
        after.saturating_sub(before) / u64::try_from(n).expect("positive")
    );
    let (gone, _) = ev.evict_idle(T0 + 2 * H, H);
    drop(held);
    println!(
        "evicted {} channels, {} left",
        gone.len(),
        ev.channel_count()
    );
}

#[test]
fn a_full_save_takes_a_bounded_number_of_channels_and_every_channel_in_turn() {
    // 2.4 × the bound of touched channels: three saves, each within the bound, together every
    // channel exactly once; a fourth has nothing left.
    let n = MAX_CHANNEL_ENTRIES_PER_SAVE * 12 / 5;
    let mut site = Site::new(TOTAL);
    let channels: Vec<_> = (0..n)
        .map(|i| settlement("plates", &format!("p{i:04}")))
        .collect();
    for ch in &channels {
        site.good(ch, T0, 1.0);
    }
    let mut seen = std::collections::BTreeMap::new();
    for save in 0..3 {
        let (delta, errors) = site.ev.state_changes();
        assert_eq!(errors, 0);
        let keys: Vec<_> = delta
            .entries
            .keys()
            .filter(|k| channels.iter().any(|c| **k == channel_entry_key(&c.key)))
            .cloned()
            .collect();
        assert!(
            keys.len() <= MAX_CHANNEL_ENTRIES_PER_SAVE,
            "save {save}: {}",
            keys.len()
        );
        for k in keys {
            *seen.entry(k).or_insert(0) += 1;
        }
        assert_eq!(site.ev.state_left(), save < 2, "save {save}");
    }
    assert_eq!(seen.len(), n, "every channel saved");
    assert!(seen.values().all(|c| *c == 1), "none twice");
    // Channels read again while the walk goes on are not starved: the walk resumes where it
    // stopped, so a channel touched again waits at most one round.
    for ch in &channels {
        site.good(ch, T0 + S, 2.0);
    }
    let (first, _) = site.ev.state_changes();
    let (second, _) = site.ev.state_changes();
    let first_keys: Vec<_> = first.entries.keys().collect();
    assert!(second.entries.keys().all(|k| !first_keys.contains(&k)));
}

/// 消警 (issue 9 item 2): the event continues the alert's sequence, says who and why, leaves
/// the condition alone (the escalation and the clear still come, numbered after it), and a
/// restart keeps both the acknowledgement and the sequence.
#[test]
fn an_acknowledgement_is_an_event_of_the_alert_and_survives_a_restart() {
    let mut site = Site::new(TOTAL);
    let ch = settlement("lev-a1", "ch3");
    // 22 mm three times: raised yellow (threshold 21 mm).
    let raised = feed(&mut site, &ch, &[22.0, 22.0, 22.0]);
    assert_eq!(raised.len(), 1);
    let id = raised[0].1.id.clone();
    let at = T0 + 10 * S;
    let ack = site
        .ev
        .acknowledge(&id, "  监理 王工 ", "现场核查，传感器正常", at)
        .expect("acknowledged");
    assert_eq!(
        (ack.state, ack.seq, ack.level),
        (AlertState::Acknowledged, 1, Level::Yellow)
    );
    assert_eq!(ack.previous_level, Some(Level::Yellow));
    assert_eq!((ack.event_at, ack.started_at), (at, raised[0].1.started_at));
    let by = ack
        .ack
        .as_ref()
        .map(|a| (a.by.as_str(), a.note.as_str(), a.at));
    assert_eq!(by, Some(("监理 王工", "现场核查，传感器正常", at)));
    assert_eq!(
        ack.message,
        "【消警】A栋 沉降点 lev-a1/ch3 警示告警已由 监理 王工 消警：现场核查，传感器正常（规则 settlement-total）"
    );
    // The page shows the acknowledgement as the alert's latest event.
    let latest: Vec<_> = site
        .ev
        .active_alerts()
        .map(|a| (a.id.clone(), a.state))
        .collect();
    assert_eq!(latest, vec![(id.clone(), AlertState::Acknowledged)]);

    let mut site = restart(site, TOTAL, T0 + 20 * S);
    let latest: Vec<_> = site.ev.active_alerts().map(|a| (a.seq, a.state)).collect();
    assert_eq!(latest, vec![(1, AlertState::Acknowledged)]);
    // 26 mm three times: escalated to orange (25.5 mm), numbered after the acknowledgement.
    let mut events = Vec::new();
    for i in 0..3 {
        events.extend(site.good(&ch, T0 + (21 + i) * S, 26.0).1);
    }
    let brief: Vec<_> = events.iter().map(|a| (a.state, a.seq, a.level)).collect();
    assert_eq!(brief, vec![(AlertState::Escalated, 2, Level::Orange)]);
    assert!(
        events[0].ack.is_none(),
        "a new event asks for attention again"
    );
    // Acknowledged again, then cleared by three low readings: 3, then 4.
    let again = site
        .ev
        .acknowledge(&id, "站长", "", T0 + 30 * S)
        .expect("ack");
    assert_eq!(again.seq, 3);
    let mut events = Vec::new();
    for i in 0..3 {
        events.extend(site.good(&ch, T0 + (31 + i) * S, 0.0).1);
    }
    let brief: Vec<_> = events.iter().map(|a| (a.state, a.seq)).collect();
    assert_eq!(brief, vec![(AlertState::Cleared, 4)]);
    // Cleared: nothing left to acknowledge.
    assert_eq!(
        site.ev.acknowledge(&id, "站长", "", T0 + 40 * S),
        Err(AckRefused::NotActive(id.clone()))
    );
}

#[test]
fn an_acknowledgement_needs_somebody_and_bounded_text() {
    let mut site = Site::new(TOTAL);
    let ch = settlement("lev-a1", "ch3");
    let id = feed(&mut site, &ch, &[31.0, 31.0, 31.0])[0].1.id.clone();
    assert_eq!(
        site.ev.acknowledge(&id, " ", "x", T0),
        Err(AckRefused::NoOne)
    );
    let long = "字".repeat(crate::alert::MAX_ACK_NOTE_CHARS + 1);
    assert_eq!(
        site.ev.acknowledge(&id, "王工", &long, T0),
        Err(AckRefused::TooLong {
            what: "note",
            max: crate::alert::MAX_ACK_NOTE_CHARS
        })
    );
    assert_eq!(
        site.ev.acknowledge("0000000000000000", "王工", "", T0),
        Err(AckRefused::NotActive("0000000000000000".to_owned()))
    );
    // Nothing was changed by the refusals: the first real one is seq 1.
    assert_eq!(
        site.ev.acknowledge(&id, "王工", "", T0).map(|a| a.seq),
        Ok(1)
    );
}
