//! Each derived kind on numbers worked by hand, quality propagation, the saved state across a
//! restart, config problems with their paths, and the engine storing derived readings as points
//! that alert rules select.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::config::DerivedConfig;
use super::{DerivedPlan, DerivedSet};
use crate::model::{Quality, QuantityKind, Reading, Series, NANOS_PER_SEC};

const T0: i64 = 1_767_225_600 * NANOS_PER_SEC;
const MIN: i64 = 60 * NANOS_PER_SEC;
const H: i64 = 60 * MIN;

#[derive(serde::Deserialize)]
struct Section {
    derived: Vec<DerivedConfig>,
}

fn plan(toml_text: &str) -> DerivedPlan {
    let s: Section = toml::from_str(toml_text).expect("toml");
    DerivedPlan::from_config(&s.derived, "derived").expect("valid")
}

pub(super) fn problems(toml_text: &str) -> Vec<(String, String)> {
    let s: Section = toml::from_str(toml_text).expect("toml");
    DerivedPlan::from_config(&s.derived, "derived").expect_err("invalid")
}

/// Every one of `paths` names at least one of the `found` problems.
pub(super) fn assert_problems_at(found: &[(String, String)], paths: &[&str]) {
    for want in paths {
        assert!(
            found.iter().any(|(p, _)| p == want),
            "{want} missing from {found:?}"
        );
    }
}

fn series(device: &str, point: &str, kind: QuantityKind, unit: &str) -> Arc<Series> {
    let mut tags = BTreeMap::new();
    tags.insert("structure".to_owned(), "A栋".to_owned());
    Arc::new(Series::new("xa", "gw", device, point, kind, unit, &tags))
}

fn level(point: &str) -> Arc<Series> {
    series("lvl", point, QuantityKind::Level, "mm")
}

fn good(s: &Arc<Series>, ts: i64, v: f64) -> Reading {
    Reading::good(Arc::clone(s), ts, v)
}

fn bad(s: &Arc<Series>, ts: i64) -> Reading {
    Reading::bad(Arc::clone(s), ts, Quality::Timeout)
}

/// `(key, value, quality)` of derived readings.
fn seen(out: &[Reading]) -> Vec<(String, Option<f64>, Quality)> {
    out.iter()
        .map(|r| (r.series.key.clone(), r.value, r.quality))
        .collect()
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

/// The state entries `set` hands out for saving, as the spool gives them back at start (every
/// one serialised).
fn saved_entries(set: &mut DerivedSet) -> Vec<(String, Vec<u8>)> {
    let (delta, errors) = set.state_changes();
    assert_eq!(errors, 0);
    delta.into_written()
}

/// A set of one block: `lines` after `[[derived]]`.
pub(super) fn one_block(lines: &str) -> DerivedSet {
    DerivedSet::new(plan(&format!("[[derived]]\n{lines}")))
}

/// Feed `(time, value)` readings of `s` one batch each (`None`: a bad reading); what was
/// derived, as [`seen`] gives it.
fn feed(
    set: &mut DerivedSet,
    s: &Arc<Series>,
    readings: &[(i64, Option<f64>)],
) -> Vec<(String, Option<f64>, Quality)> {
    let mut out = Vec::new();
    for (ts, v) in readings {
        let r = v.map_or_else(|| bad(s, *ts), |v| good(s, *ts, v));
        out.extend(set.on_batch(&[r]));
    }
    seen(&out)
}

/// Rainfall of a gauge, mm.
fn rain(point: &str) -> Arc<Series> {
    series("gauge", point, QuantityKind::Rainfall, "mm")
}

const LINE: &str = r#"
[[derived]]
name = "settlement"
kind = "levelling"
select = { device = "lvl", point = "ch?" }
reference = "lvl/ch5"
surveyed = "2026-11-02"
initial = { "lvl/ch1" = 312.4, "lvl/ch2" = 305.9, "lvl/ch5" = 301.3 }

[[derived]]
name = "tilt"
kind = "tilt"
pairs = [{ a = "lvl/ch1.settlement", b = "lvl/ch2.settlement", distance_m = 18.0 }]
"#;

#[test]
fn levelling_subtracts_initial_heads_and_the_reference_and_feeds_a_tilt() {
    let mut set = DerivedSet::new(plan(LINE));
    let (ch1, ch2, ch3, ch5) = (level("ch1"), level("ch2"), level("ch3"), level("ch5"));
    // One poll of the logger, the reference read last. ch1 rose 3.0 mm, ch2 2.1 mm, the
    // reference 0.5 mm (the whole line moved, e.g. temperature): settlements 2.5 and 1.6 mm.
    let out = set.on_batch(&[
        good(&ch1, T0, 315.4),
        good(&ch2, T0, 308.0),
        good(&ch3, T0, 299.0),
        good(&ch5, T0, 301.8),
    ]);
    let got = seen(&out);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0].0, "lvl/ch1.settlement");
    assert!(close(got[0].1, 2.5), "{got:?}");
    assert!(close(got[1].1, 1.6), "{got:?}");
    // ch3 has no initial value: flagged, never computed from a guess.
    assert_eq!(
        (got[2].0.as_str(), got[2].1, got[2].2),
        ("lvl/ch3.settlement", None, Quality::InitialValueMissing)
    );
    // Tilt (2.5 − 1.6) / 18 000 mm.
    assert_eq!(got[3].0, "lvl/ch1.settlement-ch2.settlement.tilt");
    assert!(close(got[3].1, 0.9 / 18_000.0), "{got:?}");
    let s = &out[0].series;
    assert_eq!(s.kind, QuantityKind::Settlement);
    assert_eq!(
        s.tags.get("derived").map(String::as_str),
        Some("settlement")
    );
    assert_eq!(s.tags.get("structure").map(String::as_str), Some("A栋"));
    assert_eq!(s.unit, "mm");
    assert_eq!(out[3].series.kind, QuantityKind::Tilt);
    assert_eq!(out[3].series.unit, "ratio");
    assert!(out.iter().all(|r| r.ts == T0));
    assert!(
        !got.iter().any(|g| g.0.starts_with("lvl/ch5")),
        "the reference is no cell"
    );

    // The reference times out: every cell's settlement (and the tilt) is flagged, not absent.
    let out = set.on_batch(&[
        good(&ch1, T0 + MIN, 315.5),
        good(&ch2, T0 + MIN, 308.0),
        bad(&ch5, T0 + MIN),
    ]);
    let got = seen(&out);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got
        .iter()
        .all(|g| g.1.is_none() && g.2 == Quality::DerivedInputBad));
    // A bad cell: its settlement is flagged, the other is computed.
    let out = set.on_batch(&[
        bad(&ch1, T0 + 2 * MIN),
        good(&ch2, T0 + 2 * MIN, 308.2),
        good(&ch5, T0 + 2 * MIN, 301.3),
    ]);
    let got = seen(&out);
    assert_eq!(got[0].2, Quality::DerivedInputBad);
    assert!(close(got[1].1, 2.3), "{got:?}");
    assert_eq!(
        got[2].2,
        Quality::DerivedInputBad,
        "tilt of a bad settlement"
    );
}

/// A line whose cells sit in the sun and whose reference sits in a pit: heads read at the
/// liquid's temperature, corrected as Geokon's 4675LV manual does (docs/DOMAIN.md §Hydrostatic
/// levelling: ΔH = R0·G/(1 − 0.0002·T0) − R1·G/(1 − 0.0002·T1)).
const WARM_LINE: &str = r#"
[[derived]]
name = "settlement"
kind = "levelling"
select = { device = "lvl", point = "ch?" }
reference = "lvl/ch5"
liquid_temperature = "{device}/temp1"
liquid_temperatures = { "lvl/ch5" = "lvl/temp2" }
initial_temperature = 12.0
establish_readings = 1
initial = { "lvl/ch1" = { value = 311.1504, temperature = 20.0 }, "lvl/ch5" = 300.57688 }
"#;

#[test]
fn levelling_heads_are_corrected_for_the_liquid_temperature() {
    let mut set = DerivedSet::new(plan(WARM_LINE));
    let temp = |p: &str| series("lvl", p, QuantityKind::Temperature, "°C");
    let (ch1, ch2, ch5, t1, t2) = (
        level("ch1"),
        level("ch2"),
        level("ch5"),
        temp("temp1"),
        temp("temp2"),
    );
    // The physics: a cell reads the column of 0 °C liquid H as H·(1 − 0.0002·T) at T. ch1's
    // column was 312.4 mm at its survey (20 °C: 311.1504 mm read), the reference's 301.3 mm
    // (12 °C: 300.57688 mm). ch2 has no configured initial value: its first reading, at 30 °C,
    // establishes it (305.9 mm of column, 304.0646 mm read). The temperatures come first in
    // the poll, as the cells' would on another logger.
    let out = set.on_batch(&[
        good(&t1, T0, 30.0),
        good(&t2, T0, 12.0),
        good(&ch1, T0, 312.4 * (1.0 - 0.0002 * 30.0)),
        good(&ch2, T0, 305.9 * (1.0 - 0.0002 * 30.0)),
        good(&ch5, T0, 300.57688),
    ]);
    let got = seen(&out);
    // Nothing moved; read as it comes, ch1 would show −2.5 mm of heave from the warm liquid.
    assert!(close(got[0].1, 0.0), "{got:?}");
    assert!(close(got[1].1, 0.0), "{got:?}");
    // Later, in the afternoon sun (35 °C), ch1 settled 2.0 mm and ch2 1.0 mm; the reference is
    // still at 12 °C. Uncorrected, ch1 would be 1.05 mm.
    let out = set.on_batch(&[
        good(&t1, T0 + H, 35.0),
        good(&ch1, T0 + H, 314.4 * (1.0 - 0.0002 * 35.0)),
        good(&ch2, T0 + H, 306.9 * (1.0 - 0.0002 * 35.0)),
        good(&t2, T0 + H, 12.0),
        good(&ch5, T0 + H, 300.57688),
    ]);
    let got = seen(&out);
    assert!(close(got[0].1, 2.0), "{got:?}");
    assert!(close(got[1].1, 1.0), "{got:?}");
    // A cell whose liquid temperature is missing is flagged 204, never computed uncorrected.
    let out = set.on_batch(&[
        good(&ch1, T0 + 3 * H, 313.0),
        good(&ch5, T0 + 3 * H, 300.57688),
    ]);
    let got = seen(&out);
    assert_eq!(
        (got[0].1, got[0].2),
        (None, Quality::CorrectionUnavailable),
        "{got:?}"
    );
}

#[test]
fn a_corrected_line_refuses_initial_values_without_their_temperature() {
    let p = problems(
        r#"
[[derived]]
name = "settlement"
kind = "levelling"
select = { device = "lvl" }
reference = "lvl/ch5"
liquid_temperature = "{device}/{bogus}"
liquid_expansion = 0.5
initial = { "lvl/ch1" = 311.0 }
"#,
    );
    let text = format!("{p:?}");
    assert!(
        text.contains("derived[0].initial.\\\"lvl/ch1\\\"") && text.contains("initial_temperature"),
        "{text}"
    );
    assert!(
        text.contains("derived[0].liquid_temperature") && text.contains("{bogus}"),
        "{text}"
    );
    assert!(text.contains("derived[0].liquid_expansion"), "{text}");
    let p = problems(
        r#"
[[derived]]
name = "settlement"
kind = "levelling"
select = { device = "lvl" }
reference = "lvl/ch5"
initial_temperature = 12.0
"#,
    );
    assert_eq!(p[0].0, "derived[0].liquid_temperature", "{p:?}");
}

#[test]
fn derived_readings_coming_back_from_the_engine_derive_nothing_more() {
    let mut set = DerivedSet::new(plan(LINE));
    let out = set.on_batch(&[
        good(&level("ch1"), T0, 315.4),
        good(&level("ch2"), T0, 308.0),
        good(&level("ch5"), T0, 301.8),
    ]);
    assert_eq!(out.len(), 3);
    assert!(set.on_batch(&out).is_empty());
}

#[test]
fn difference_by_template_pairs_each_selected_channel_with_its_partner() {
    let mut set = DerivedSet::new(plan(
        r#"
[[derived]]
name = "core-surface"
kind = "difference"
select = { point = "t01" }
b = "{device}/t02"
point = "core-surface"
"#,
    ));
    let t = |d: &str, p: &str| series(d, p, QuantityKind::Temperature, "°C");
    let out = set.on_batch(&[
        good(&t("raft-a", "t01"), T0, 30.0),
        good(&t("raft-a", "t02"), T0, 21.2),
        good(&t("raft-b", "t01"), T0, 25.0),
        good(&t("raft-b", "t02"), T0 + 20 * MIN, 20.0),
    ]);
    let got = seen(&out);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].0, "raft-a/core-surface");
    assert!(close(got[0].1, 8.8), "{got:?}");
    // raft-b's surface was read 20 min after its core, beyond the default 10 min skew: each
    // reading finds no partner and its difference is flagged.
    assert_eq!(got[1].2, Quality::DerivedInputBad);
    assert_eq!(got[2].2, Quality::DerivedInputBad);
    assert_eq!(out[0].series.kind, QuantityKind::Temperature);
    assert_eq!(out[0].series.unit, "°C");
}

#[test]
fn mean_of_the_latest_readings_and_a_bad_member_flags_it() {
    let mut set = DerivedSet::new(plan(
        r#"
[[derived]]
name = "ground-temp"
kind = "mean"
select = { device = "soil" }
"#,
    ));
    let s = |p: &str| series("soil", p, QuantityKind::Temperature, "°C");
    let out = set.on_batch(&[
        good(&s("a"), T0, 1.0),
        good(&s("b"), T0, 2.0),
        good(&s("c"), T0, 6.0),
    ]);
    let got = seen(&out);
    assert_eq!(got.len(), 1, "one mean per time: {got:?}");
    assert_eq!(got[0].0, "ground-temp/mean");
    assert!(close(got[0].1, 3.0));
    let out = set.on_batch(&[
        good(&s("a"), T0 + MIN, 1.0),
        bad(&s("b"), T0 + MIN),
        good(&s("c"), T0 + MIN, 6.0),
    ]);
    assert_eq!(seen(&out)[0].2, Quality::DerivedInputBad);
}

#[test]
fn rate_is_the_least_squares_slope_per_day_once_the_window_is_half_full() {
    let mut set = one_block(
        "name = \"rate\"\nkind = \"rate\"\nselect = { kind = \"settlement\" }\nwindow = \"1d\"",
    );
    let s = series("plate", "s1", QuantityKind::Settlement, "mm");
    // t = 0, 6, 12, 18, 24 h; v = 0, .5, 1.5, 2, 3 mm. Over the first three: mean t = .25 d,
    // mean v = 2/3; Sxy = (−.25)(−2/3) + 0 + (.25)(5/6) = .375; Sxx = .125: 3.0 mm/d. Over
    // four: mean t = .375, mean v = 1; Sxy = .375 + .0625 + .0625 + .375 = .875, Sxx = .3125:
    // 2.8 mm/d. Over all five: Sxy = 1.875, Sxx = .625: 3.0 mm/d (as in window.rs).
    let readings: Vec<(i64, Option<f64>)> = [(0, 0.0), (6, 0.5), (12, 1.5), (18, 2.0), (24, 3.0)]
        .iter()
        .map(|(h, v)| (T0 + h * H, Some(*v)))
        .collect();
    let got = feed(&mut set, &s, &readings);
    assert_eq!(
        got.len(),
        3,
        "no slope before 3 readings over 12 h: {got:?}"
    );
    assert!(
        close(got[0].1, 3.0) && close(got[1].1, 2.8) && close(got[2].1, 3.0),
        "{got:?}"
    );
    assert_eq!(got[0].0, "plate/s1.rate");
    let out = set.on_batch(&[bad(&s, T0 + 25 * H)]);
    assert_eq!(out[0].series.unit, "mm/d");
    assert_eq!(seen(&out)[0].2, Quality::DerivedInputBad);
}

#[test]
fn sum_over_a_window_and_a_bad_reading_flags_it_while_inside() {
    let mut set = one_block("name = \"rain-1h\"\nkind = \"sum_over\"\nselect = { kind = \"rainfall\" }\nwindow = \"1h\"");
    // 1..5 mm at 0, 20, 40, 60, 80 min; the window is (t − 1 h, t]: 1, 3, 6, 9, 12. A bad
    // reading at 100 min flags the sum (also at 140 min) until it left the window (161 min).
    let readings = [
        (0, Some(1.0)),
        (20, Some(2.0)),
        (40, Some(3.0)),
        (60, Some(4.0)),
        (80, Some(5.0)),
        (100, None),
        (140, Some(1.0)),
        (161, Some(2.0)),
    ]
    .map(|(m, v)| (T0 + m * MIN, v));
    let got = feed(&mut set, &rain("rain"), &readings);
    let sums: Vec<f64> = got.iter().filter_map(|g| g.1).collect();
    assert_eq!(sums, [1.0, 3.0, 6.0, 9.0, 12.0, 3.0]);
    assert_eq!(
        (got[5].2, got[6].2),
        (Quality::DerivedInputBad, Quality::DerivedInputBad)
    );
}

#[test]
fn cumulative_sums_good_readings_and_continues_after_a_restart() {
    let block = "name = \"rain-total\"\nkind = \"cumulative\"\nselect = { kind = \"rainfall\" }";
    let mut set = one_block(block);
    let readings = [(0, Some(1.0)), (1, Some(2.0)), (2, None), (3, Some(3.0))];
    let got = feed(
        &mut set,
        &rain("rain"),
        &readings.map(|(m, v)| (T0 + m * MIN, v)),
    );
    assert!(close(got[0].1, 1.0) && close(got[1].1, 3.0) && close(got[3].1, 6.0));
    assert_eq!(got[2].2, Quality::DerivedInputBad);

    let entries = saved_entries(&mut set);
    assert_eq!(entries[0].0, "v/rain-total/gauge/rain.rain-total");
    assert!(set.state_changes().0.is_empty(), "handed out once");
    let mut again = one_block(block);
    let mut with_junk = entries.clone();
    with_junk.push(("v/rain-total/x/y".into(), b"not json".to_vec()));
    assert_eq!(again.restore(&with_junk), ["v/rain-total/x/y"]);
    let got = feed(&mut again, &rain("rain"), &[(T0 + 4 * MIN, Some(4.0))]);
    assert!(close(got[0].1, 10.0), "{got:?}");
}

#[test]
fn config_problems_name_their_path_and_the_fix() {
    let found = problems(
        r#"
[[derived]]
name = "s"
kind = "levelling"
select = { device = "lvl" }
window = "1h"
surveyed = "2026-13-01"

[[derived]]
name = "t"
kind = "tilt"
pairs = [{ a = "lvl/ch1", b = "lvl/ch2" }]
point = "{nope}"

[[derived]]
name = "t"
kind = "rate"
select = {}
point = "rate"
"#,
    );
    assert_problems_at(
        &found,
        &[
            "derived[0].window",
            "derived[0].reference",
            "derived[0].surveyed",
            "derived[1].pairs[0].distance_m",
            "derived[1].point",
            "derived[2].name",
            "derived[2].window",
            "derived[2].point",
        ],
    );
    assert!(found
        .iter()
        .any(|(_, m)| m.contains("reference = \"block-a-lvl/ch5\"")));
}

#[tokio::test]
async fn the_engine_stores_derived_readings_as_points_and_rules_select_them() {
    use super::super::rules::{AlertsConfig, RuleSet};
    use super::super::{Engine, EngineConfig};
    use crate::metrics::Metrics;
    use crate::model::{now_ns, SystemClock};
    use crate::sources::ReadingBatch;
    use crate::spool::{Spool, SpoolConfig, Stream};

    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Arc::new(
        Spool::open(
            &dir.path().join("spool.redb"),
            &SpoolConfig::default(),
            &["r".to_owned()],
        )
        .expect("spool"),
    );
    let alerts: AlertsConfig = toml::from_str(
        r#"
[[rules]]
name = "settlement-total"
kind = "absolute"
select = { kind = "settlement", tags = { derived = "settlement" } }
upper = { alarm = 2.0, red = 1.0 }
confirm = { count = 1 }
"#,
    )
    .expect("rules");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let engine = Engine::new(
        rx,
        Arc::clone(&spool),
        Arc::new(Metrics::new()),
        Arc::new(SystemClock),
        EngineConfig::default(),
        Duration::from_secs(3600),
        RuleSet::from_config(&alerts, "alerts").expect("valid"),
        "xa",
    )
    .with_derived(plan(LINE));
    let task = tokio::spawn(engine.run());
    let t = now_ns() - MIN;
    let batch = vec![
        good(&level("ch1"), t, 315.4),
        good(&level("ch2"), t, 308.0),
        good(&level("ch5"), t, 301.8),
    ];
    tx.send(ReadingBatch::from(batch)).await.expect("engine");
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .expect("no panic");
    let points = spool
        .read_batch(Stream::Points, "r", 1000)
        .expect("read")
        .expect("points");
    let text = String::from_utf8_lossy(&points.body).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("settlement,") && l.contains("point=ch1.settlement"))
        .unwrap_or_else(|| panic!("no derived point in {text}"));
    assert!(line.contains("derived=settlement"), "{line}");
    assert!(line.contains("value=2.5"), "{line}");
    assert!(
        text.contains("point=ch1.settlement-ch2.settlement.tilt"),
        "{text}"
    );
    let raised = spool
        .read_batch(Stream::Alerts, "r", 1000)
        .expect("read")
        .expect("an alert on the derived settlement");
    let body = String::from_utf8_lossy(&raised.body).into_owned();
    assert!(body.contains("lvl/ch1.settlement"), "{body}");
}

#[test]
fn the_config_file_takes_derived_blocks_and_check_shows_them() {
    let text = format!(
        "site = \"xa\"\ngateway_id = \"gw\"\ndata_dir = \"/tmp\"\n{LINE}\n[[derived]]\nname = \"bad\"\nkind = \"mean\"\n"
    );
    let path = std::path::Path::new("site.toml");
    let err = crate::config::Config::from_str_at(&text, path).expect_err("mean without select");
    assert!(
        err.problems()
            .iter()
            .any(|p| p.starts_with("site.toml: derived[2].select: missing")),
        "{:?}",
        err.problems()
    );
    let text = format!("site = \"xa\"\ngateway_id = \"gw\"\ndata_dir = \"/tmp\"\n{LINE}");
    let cfg = crate::config::Config::from_str_at(&text, path).expect("valid");
    let shown = crate::config::describe(&cfg);
    assert!(shown.contains("derived channels: 2"), "{shown}");
    assert!(
        shown.contains("initial lvl/ch1 = 312.4 (configured, 2026-11-02)"),
        "{shown}"
    );
    assert!(
        shown.contains(
            "lvl/ch1.settlement-ch2.settlement.tilt = lvl/ch1.settlement - lvl/ch2.settlement, over 18 m"
        ),
        "{shown}"
    );
}

const ESTABLISHED: &str = r#"
[[derived]]
name = "settlement"
kind = "levelling"
select = { device = "lvl", point = "ch?" }
reference = "lvl/ch5"
initial = { "lvl/ch5" = 301.3 }
establish_readings = 3
"#;

/// Settlement of ch1 after one poll of ch1 and the reference at its initial head.
fn poll(set: &mut DerivedSet, i: i64, head: f64) -> (Option<f64>, Quality) {
    let out = set.on_batch(&[
        good(&level("ch1"), T0 + i * MIN, head),
        good(&level("ch5"), T0 + i * MIN, 301.3),
    ]);
    (out[0].value, out[0].quality)
}

#[test]
fn a_missing_initial_value_is_established_once_from_the_first_good_readings_and_kept() {
    let mut set = DerivedSet::new(plan(ESTABLISHED));
    // 310, 311, 312 mm: flagged 411 while collecting; then h0 = 311 mm.
    assert_eq!(
        poll(&mut set, 0, 310.0),
        (None, Quality::InitialValueMissing)
    );
    let _ = set.on_batch(&[bad(&level("ch1"), T0 + MIN)]);
    assert_eq!(
        poll(&mut set, 2, 311.0),
        (None, Quality::InitialValueMissing)
    );
    let third = poll(&mut set, 3, 312.0);
    assert!(close(third.0, 1.0), "{third:?}");
    assert!(set.take_prompt_save(), "saved with the next commit");
    assert!(!set.take_prompt_save());
    let entries = saved_entries(&mut set);
    let saved = String::from_utf8_lossy(&entries[0].1).into_owned();
    assert_eq!(entries[0].0, "vi/settlement/lvl/ch1");
    assert!(
        saved.contains("\"value\":311.0") && saved.contains("mean_of_first_good_readings"),
        "{saved}"
    );

    // After a restart: the same initial value, not a new one from the next readings.
    let mut again = DerivedSet::new(plan(ESTABLISHED));
    assert!(again.restore(&entries).is_empty());
    let after = poll(&mut again, 4, 314.0);
    assert!(close(after.0, 3.0), "{after:?}");

    // An unreadable saved initial value is never established again: flagged for good.
    let mut lost = DerivedSet::new(plan(ESTABLISHED));
    let junk = vec![("vi/settlement/lvl/ch1".to_owned(), b"{".to_vec())];
    assert_eq!(lost.restore(&junk), ["vi/settlement/lvl/ch1"]);
    for i in 0..5 {
        assert_eq!(
            poll(&mut lost, i, 312.0),
            (None, Quality::InitialValueMissing)
        );
    }
}

#[test]
fn sum_over_a_running_total_is_what_the_total_gained_in_the_window() {
    let mut set = one_block("name = \"rain-1h\"\nkind = \"sum_over\"\nselect = { kind = \"rainfall\" }\nwindow = \"1h\"\ninput = \"total\"");
    let totals = [
        (0, Some(10.0)),
        (20, Some(10.4)),
        (40, Some(11.0)),
        (50, None),
        (60, Some(12.0)),
        (80, Some(0.4)),
    ];
    let got = feed(
        &mut set,
        &rain("rain_total"),
        &totals.map(|(m, v)| (T0 + m * MIN, v)),
    );
    // No sum from the first total (it is the base); 0.4; 0.4 + 0.6; the bad total flagged; then
    // 0.4 + 0.6 + 1.0 (the gap's rain counted in the next increment); after the reset to 0.4,
    // (20, 80] holds 0.6 + 1.0 + 0.4.
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(close(got[0].1, 0.4) && close(got[1].1, 1.0), "{got:?}");
    assert_eq!(got[2].2, Quality::DerivedInputBad);
    assert!(close(got[3].1, 2.0) && close(got[4].1, 2.0), "{got:?}");
}

/// The `rate`, `difference` and `tilt` rule kinds are each a derived channel plus a rule that
/// judges it (issue 7 item 4: one place computes each quantity): the rule's own block, named
/// after it, stores the value as a series tagged `derived = <rule>`, and the rule raises on
/// that stored reading, naming the channels it was derived from. Slope worked by hand as in
/// the rules' own test: t = 0, ¼, ½, ¾, 1 d, v = 0, 0.5, 1.5, 2, 3 mm → 3.0 mm/d;
/// core − surface 60.0 − 40.5 = 19.5 °C; tilt (12 − 4) mm / 8 m = 0.001.
#[test]
fn rule_kinds_rate_difference_and_tilt_are_derived_channels_their_rules_judge() {
    use crate::engine::rules::{AlertsConfig, Evaluator, RuleSet};
    let rules: AlertsConfig = toml::from_str(
        r#"
[[rules]]
name = "rate"
kind = "rate"
select = { device = "lev-a1" }
window = "1d"
min_points = 5
upper = { yellow = 2.0 }
confirm = { count = 1 }

[[rules]]
name = "core-surface"
kind = "difference"
pairs = [{ a = "slab/t01", b = "slab/t02" }]
upper = { yellow = 10.0 }
confirm = { count = 1 }

[[rules]]
name = "tilt"
kind = "tilt"
pairs = [{ a = "lev-b/ch1", b = "lev-b/ch2", distance_m = 8.0 }]
upper = { yellow = 0.0005 }
confirm = { count = 1 }
"#,
    )
    .expect("rules");
    let rules = RuleSet::from_config(&rules, "alerts").expect("valid");
    let specs = rules.derived_blocks().to_vec();
    let names: Vec<&str> = specs.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["rate", "core-surface", "tilt"]);
    let mut ev = Evaluator::new(rules, "xa");
    let mut set = DerivedSet::new(DerivedPlan { specs });
    let settle = |d: &str, p: &str| series(d, p, QuantityKind::Settlement, "mm");
    let temp = |p: &str| series("slab", p, QuantityKind::Temperature, "°C");
    let mut readings: Vec<Reading> = [0.0, 0.5, 1.5, 2.0, 3.0]
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            good(
                &settle("lev-a1", "ch1"),
                T0 + i64::try_from(i).expect("small") * 6 * H,
                v,
            )
        })
        .collect();
    let t = T0 + 25 * H;
    readings.extend([
        good(&temp("t01"), t, 60.0),
        good(&temp("t02"), t, 40.5),
        good(&settle("lev-b", "ch1"), t, 12.0),
        good(&settle("lev-b", "ch2"), t, 4.0),
    ]);
    // (rule, value, the channel judged, the channels named)
    let mut judged: Vec<(String, f64, String, Vec<String>)> = Vec::new();
    let mut stored: Vec<(String, String, f64)> = Vec::new();
    for r in &readings {
        assert!(
            ev.on_reading(r, r.ts).1.is_empty(),
            "no rule judges a raw reading"
        );
        // One reading a batch, as the engine stores them; the derived readings are judged next.
        for d in set.on_batch(std::slice::from_ref(r)) {
            let block = d.series.tags.get("derived").cloned().unwrap_or_default();
            if let Some(v) = d.value {
                stored.push((block, d.series.key.clone(), v));
            }
            for a in ev.on_reading(&d, d.ts).1 {
                let v = a.value.expect("a value");
                judged.push((a.rule.clone(), v, a.channel.clone(), a.channels.clone()));
            }
        }
    }
    let want = [
        ("rate", 3.0, "lev-a1/ch1.rate", vec!["lev-a1/ch1"]),
        (
            "core-surface",
            19.5,
            "slab/t01-t02.core-surface",
            vec!["slab/t01", "slab/t02"],
        ),
        (
            "tilt",
            0.001,
            "lev-b/ch1-ch2.tilt",
            vec!["lev-b/ch1", "lev-b/ch2"],
        ),
    ];
    assert_eq!(judged.len(), want.len(), "{judged:?}");
    for ((rule, v, channel, channels), got) in want.iter().zip(&judged) {
        assert_eq!(
            (got.0.as_str(), got.2.as_str()),
            (*rule, *channel),
            "{judged:?}"
        );
        assert_eq!(&got.3, channels, "{judged:?}");
        assert!((got.1 - v).abs() < 1e-9, "{rule} = {v}: {judged:?}");
        let last = stored
            .iter()
            .rev()
            .find(|(block, key, _)| block == rule && key == channel)
            .unwrap_or_else(|| panic!("no {rule} stored: {stored:?}"));
        assert!((last.2 - got.1).abs() < 1e-12, "judged what was stored");
    }
}

const DAY: i64 = 24 * H;

/// The day a `stability` block over `window_d` days turns stable on the consolidation curve
/// `s(t) = s_inf·(1 − e^(−t/tau))`, computed in closed form, independently of the code.
///
/// The least-squares slope of `s` over `[t − W, t]` (continuous sampling, `h = W/2`, centre
/// `m = t − h`, `u = t' − m`) is `12/W³ · ∫ u·s(m+u) du`; with `∫_{−h}^{h} u·e^(−u/τ) du =
/// 2τ²·sinh(h/τ) − 2τh·cosh(h/τ)` it is `K·e^(−(t−h)/τ)` with
/// `K = 3·s_inf·τ·(h·cosh(h/τ) − τ·sinh(h/τ)) / h³` (→ `s_inf/τ·e^(−m/τ)`, the rate at the centre,
/// as `h/τ → 0`). It falls below `threshold` for `t > h + τ·ln(K / threshold)`.
fn stability_day(s_inf: f64, tau: f64, threshold: f64, window_d: f64) -> f64 {
    let h = window_d / 2.0;
    let x = h / tau;
    let k = 3.0 * s_inf * tau * (h * x.cosh() - tau * x.sinh()) / h.powi(3);
    h + tau * (k / threshold).ln()
}

/// `(day, verdict)` of each stability reading, the series fed one reading every 6 h for `days`.
fn verdicts(set: &mut DerivedSet, days: i64, s: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
    let plate = series("plate", "s1", QuantityKind::Settlement, "mm");
    let mut out = Vec::new();
    for i in 0..=days * 4 {
        let ts = T0 + i * 6 * H;
        let t = (ts - T0) as f64 / DAY as f64;
        for r in set.on_batch(&[good(&plate, ts, s(t))]) {
            assert_eq!(r.series.key, "plate/s1.stable");
            assert_eq!(r.series.kind, QuantityKind::Status);
            assert_eq!(r.series.unit, "verdict");
            assert_eq!(r.quality, Quality::Good);
            out.push((t, r.value.unwrap_or(f64::NAN)));
        }
    }
    out
}

#[test]
fn stability_turns_on_the_closed_form_day_of_a_consolidation_curve() {
    // JGJ 8-2016 §7.1.5 item 4 (docs/DOMAIN.md §Settlement): stable when the rate over the
    // last 100 days is below 0.01–0.04 mm/d; defaults: 100 d, 0.04 mm/d.
    let mut set =
        one_block("name = \"stable\"\nkind = \"stability\"\nselect = { kind = \"settlement\" }");
    let (s_inf, tau) = (80.0, 60.0);
    // K = 3·80·60·(50·cosh(5/6) − 60·sinh(5/6)) / 50³ ≈ 1.43 mm/d; day ≈ 50 + 60·ln(1.43/0.04)
    // ≈ 264.5, well past the 100 days the window needs to be covered. The instantaneous rate
    // s_inf/τ·e^(−t/τ) is below 0.04 mm/d from τ·ln(s_inf/(τ·0.04)) ≈ 210.4 d: the window lags.
    let expected = stability_day(s_inf, tau, 0.04, 100.0);
    assert!((264.0..265.0).contains(&expected), "{expected}");
    let instantaneous = tau * (s_inf / (tau * 0.04)).ln();
    assert!((210.0..211.0).contains(&instantaneous), "{instantaneous}");
    let got = verdicts(&mut set, 400, |t| s_inf * (1.0 - (-t / tau).exp()));
    let first = got
        .iter()
        .find(|(_, v)| *v == 1.0)
        .map(|(t, _)| *t)
        .expect("stable within 400 d");
    assert!(
        (first - expected).abs() <= 1.0,
        "turned stable on day {first}, the closed form says {expected}"
    );
    // Not yet before that day, stable every reading after it (a decaying curve never speeds up).
    assert!(
        got.iter().all(|(t, v)| (*v == 1.0) == (*t >= first)),
        "{got:?}"
    );
}

#[test]
fn stability_waits_until_the_history_covers_the_window() {
    // A point that does not move at all is stable only once it has been watched for 100 days.
    let mut set = one_block(
        "name = \"stable\"\nkind = \"stability\"\nselect = { kind = \"settlement\" }\nthreshold = 0.01",
    );
    let got = verdicts(&mut set, 120, |_| 12.5);
    assert!(!got.is_empty());
    for (t, v) in &got {
        assert_eq!(*v, if *t >= 100.0 { 1.0 } else { 0.0 }, "day {t}");
    }
    // A bad reading flags the verdict; it is never `stable` on a reading not taken.
    let plate = series("plate", "s1", QuantityKind::Settlement, "mm");
    let out = set.on_batch(&[bad(&plate, T0 + 121 * DAY)]);
    assert_eq!(seen(&out)[0].2, Quality::DerivedInputBad);
    // The window survives a restart: the restored block is stable on its next reading.
    let entries = saved_entries(&mut set);
    let mut again = one_block(
        "name = \"stable\"\nkind = \"stability\"\nselect = { kind = \"settlement\" }\nthreshold = 0.01",
    );
    assert!(again.restore(&entries).is_empty());
    let out = again.on_batch(&[good(&plate, T0 + 122 * DAY, 12.5)]);
    assert_eq!(seen(&out)[0].1, Some(1.0));
}

#[test]
fn stability_defaults_follow_jgj_8_and_its_problems_name_path_and_fix() {
    let p = plan(
        "[[derived]]\nname = \"stable\"\nkind = \"stability\"\nselect = { kind = \"settlement\" }",
    );
    let spec = &p.specs[0];
    assert_eq!(spec.window_ns, 100 * DAY);
    assert!((spec.threshold - 0.04).abs() < 1e-12);
    assert!((spec.per_secs - 86_400.0).abs() < 1e-9);
    assert_eq!(spec.point, "{point}.{name}");
    // `gateway check` shows the criterion.
    let shown = spec.to_string();
    assert!(
        shown.contains("stable when |rate| over 100 d < 0.04/d (JGJ 8-2016"),
        "{shown}"
    );
    let found = problems(
        r#"
[[derived]]
name = "r"
kind = "rate"
select = { kind = "settlement" }
window = "1d"
threshold = 0.04
structure_tag = "structure"

[[derived]]
name = "s"
kind = "stability"
select = { kind = "settlement" }
threshold = -0.02
window = "30s"
min_points = 1
structure_tag = ""

[[derived]]
name = "t"
kind = "stability"
reference = "lvl/ch5"
"#,
    );
    let has = |path: &str, words: &str| {
        assert!(
            found.iter().any(|(p, m)| p == path && m.contains(words)),
            "{path} with \"{words}\" missing from {found:?}"
        );
    };
    has(
        "derived[0].threshold",
        "only stability take `threshold`; remove it",
    );
    has("derived[1].threshold", "0.01-0.04 mm/d");
    has("derived[1].window", "window = \"100d\"");
    has("derived[1].min_points", "at least 2");
    has("derived[0].structure_tag", "remove it");
    has("derived[1].structure_tag", "structure_tag = \"structure\"");
    has("derived[2].select", "missing");
    has("derived[2].reference", "remove it");
}

#[test]
fn a_structure_is_stable_when_all_its_points_are() {
    // Two points of A栋: p1 s∞ = 80 mm, τ = 60 d (closed-form day 264.5), p2 s∞ = 30 mm,
    // τ = 40 d (day 173.4); the structure turns with the slower one. A point of another
    // structure does not hold A栋 back.
    let mut set = one_block(
        "name = \"stable\"\nkind = \"stability\"\nselect = { kind = \"settlement\" }\nstructure_tag = \"structure\"",
    );
    let (d1, d2) = (
        stability_day(80.0, 60.0, 0.04, 100.0),
        stability_day(30.0, 40.0, 0.04, 100.0),
    );
    assert!((173.0..174.0).contains(&d2) && d2 < d1, "{d1} {d2}");
    let p1 = series("plate", "s1", QuantityKind::Settlement, "mm");
    let p2 = series("plate", "s2", QuantityKind::Settlement, "mm");
    let mut tags = BTreeMap::new();
    tags.insert("structure".to_owned(), "B栋".to_owned());
    let other = Arc::new(Series::new(
        "xa",
        "gw",
        "plate",
        "s9",
        QuantityKind::Settlement,
        "mm",
        &tags,
    ));
    let curve = |s_inf: f64, tau: f64, t: f64| s_inf * (1.0 - (-t / tau).exp());
    let (mut first_a, mut first_p2) = (None, None);
    for i in 0..=400 * 4 {
        let ts = T0 + i * 6 * H;
        let t = (ts - T0) as f64 / DAY as f64;
        let out = set.on_batch(&[
            good(&p1, ts, curve(80.0, 60.0, t)),
            good(&p2, ts, curve(30.0, 40.0, t)),
            // B栋 settles fast for ever: never stable.
            good(&other, ts, 0.5 * t),
        ]);
        let a: Vec<&Reading> = out
            .iter()
            .filter(|r| r.series.key == "stable/A栋")
            .collect();
        assert_eq!(a.len(), 1, "one A栋 verdict per poll: {out:?}");
        assert_eq!(a[0].series.kind, QuantityKind::Status);
        assert_eq!(
            a[0].series.tags.get("structure").map(String::as_str),
            Some("A栋")
        );
        assert_eq!(
            a[0].series.tags.get("derived").map(String::as_str),
            Some("stable")
        );
        let b = out
            .iter()
            .find(|r| r.series.key == "stable/B栋")
            .expect("B栋");
        assert_eq!(b.value, Some(0.0), "day {t}");
        if first_a.is_none() && a[0].value == Some(1.0) {
            first_a = Some(t);
        }
        if first_p2.is_none()
            && out
                .iter()
                .any(|r| r.series.key == "plate/s2.stable" && r.value == Some(1.0))
        {
            first_p2 = Some(t);
        }
        if let Some(f) = first_a {
            assert_eq!(
                a[0].value,
                Some(1.0),
                "A栋 stays stable from day {f}: day {t}"
            );
        }
    }
    let (first_a, first_p2) = (first_a.expect("A栋 stable"), first_p2.expect("s2 stable"));
    assert!(
        (first_p2 - d2).abs() <= 1.0,
        "s2 on day {first_p2}, closed form {d2}"
    );
    assert!(
        (first_a - d1).abs() <= 1.0,
        "A栋 on day {first_a}, closed form {d1}"
    );
}

#[test]
fn a_structure_verdict_remembers_its_points_across_a_restart() {
    // s1 is watched from day 0, s2 from day 50: on day 120 s1 is stable, s2 not yet covered.
    let block = "name = \"stable\"\nkind = \"stability\"\nselect = { kind = \"settlement\" }\nstructure_tag = \"structure\"";
    let mut set = one_block(block);
    let p1 = series("plate", "s1", QuantityKind::Settlement, "mm");
    let p2 = series("plate", "s2", QuantityKind::Settlement, "mm");
    let structure = |out: &[Reading]| {
        out.iter()
            .find(|r| r.series.key == "stable/A栋")
            .and_then(|r| r.value)
    };
    for d in 0..=120 {
        let mut batch = vec![good(&p1, T0 + d * DAY, 5.0)];
        if d >= 50 {
            batch.push(good(&p2, T0 + d * DAY, 7.0));
        }
        let out = set.on_batch(&batch);
        assert_eq!(structure(&out), Some(0.0), "day {d}");
    }
    let entries = saved_entries(&mut set);
    let mut again = one_block(block);
    assert!(again.restore(&entries).is_empty());
    // Only s1 reports after the restart: A栋 still waits for s2.
    let out = again.on_batch(&[good(&p1, T0 + 121 * DAY, 5.0)]);
    assert_eq!(seen(&out).len(), 2, "{out:?}");
    assert_eq!(structure(&out), Some(0.0));
    // s2 covered from day 150: A栋 turns stable.
    let out = again.on_batch(&[good(&p2, T0 + 150 * DAY, 7.0)]);
    assert_eq!(structure(&out), Some(1.0));
}

#[test]
fn a_structure_turning_stable_is_announced_once_as_a_notice_even_across_a_restart() {
    use crate::alert::{AlertKind, AlertState, Cause, Language};
    // s1 and s2 of A栋 watched from day 0 at a constant settlement: both covered, and so
    // stable, on day 100 (the 100-day window), not before.
    let block = "name = \"stable\"\nkind = \"stability\"\nselect = { kind = \"settlement\" }\nthreshold = 0.02\nstructure_tag = \"structure\"";
    let mut set = one_block(block);
    set.set_notice_wording("xa", Language::Zh);
    let p1 = series("plate", "s1", QuantityKind::Settlement, "mm");
    let p2 = series("plate", "s2", QuantityKind::Settlement, "mm");
    let mut notices = Vec::new();
    for d in 0..=110 {
        let ts = T0 + d * DAY;
        set.on_batch(&[good(&p1, ts, 5.0), good(&p2, ts, 7.0)]);
        notices.extend(set.take_notices(ts + 1).into_iter().map(|n| (d, n)));
    }
    assert_eq!(notices.len(), 1, "{notices:?}");
    let (day, n) = &notices[0];
    assert_eq!(*day, 100);
    assert_eq!(
        (n.kind, n.state, n.cause, n.seq),
        (AlertKind::Notice, AlertState::Notice, Cause::Stable, 0)
    );
    assert!(!n.is_active());
    assert_eq!(n.channel, "stable/A栋");
    assert_eq!(n.detected_at, T0 + 100 * DAY + 1);
    assert_eq!(
        n.message,
        "【通知】A栋 状态点 stable/A栋 沉降已稳定（JGJ 8-2016 §7.1.5：各测点最近 100 d 沉降速率均低于 0.020 mm/d）（规则 stable）"
    );
    // After a restart: still stable, nothing announced again.
    let entries = saved_entries(&mut set);
    let mut again = one_block(block);
    again.set_notice_wording("xa", Language::Zh);
    assert!(again.restore(&entries).is_empty());
    for d in 111..=120 {
        let ts = T0 + d * DAY;
        again.on_batch(&[good(&p1, ts, 5.0), good(&p2, ts, 7.0)]);
        assert!(again.take_notices(ts).is_empty(), "day {d}");
    }
    // s2 starts settling again (3 mm/d): A栋 is not stable; once it is again, that is news.
    let mut turns = Vec::new();
    for d in 121..=260 {
        let ts = T0 + d * DAY;
        let s2 = if d <= 130 {
            7.0 + 3.0 * (d - 120) as f64
        } else {
            37.0
        };
        again.on_batch(&[good(&p1, ts, 5.0), good(&p2, ts, s2)]);
        turns.extend(again.take_notices(ts).into_iter().map(|_| d));
    }
    assert_eq!(turns.len(), 1, "{turns:?}");
}

#[test]
fn a_structure_stable_before_the_upgrade_is_not_announced() {
    use crate::alert::Language;
    // A structure entry saved before notices existed: its points' verdicts, no `announced`.
    let block = "name = \"stable\"\nkind = \"stability\"\nselect = { kind = \"settlement\" }\nstructure_tag = \"structure\"";
    let mut set = one_block(block);
    let p1 = series("plate", "s1", QuantityKind::Settlement, "mm");
    for d in 0..=100 {
        set.on_batch(&[good(&p1, T0 + d * DAY, 5.0)]);
    }
    let entries: Vec<(String, Vec<u8>)> = saved_entries(&mut set)
        .into_iter()
        .map(|(k, v)| {
            if k == "v/stable/stable/A栋" {
                let mut calc: serde_json::Value = serde_json::from_slice(&v).expect("json");
                calc["AllStable"]
                    .as_object_mut()
                    .expect("structure entry")
                    .remove("announced");
                (k, serde_json::to_vec(&calc).expect("json"))
            } else {
                (k, v)
            }
        })
        .collect();
    let mut again = one_block(block);
    again.set_notice_wording("xa", Language::Zh);
    assert!(again.restore(&entries).is_empty());
    again.on_batch(&[good(&p1, T0 + 101 * DAY, 5.0)]);
    assert!(again.take_notices(T0).is_empty());
}

/// A `core-surface` difference of raft-a's t01 and t02, and those two series.
fn core_surface_pair() -> (DerivedSet, Arc<Series>, Arc<Series>) {
    let set = DerivedSet::new(plan(
        r#"
[[derived]]
name = "core-surface"
kind = "difference"
pairs = [{ a = "raft-a/t01", b = "raft-a/t02" }]
"#,
    ));
    let t = |p: &str| series("raft-a", p, QuantityKind::Temperature, "°C");
    (set, t("t01"), t("t02"))
}

#[test]
fn a_batch_of_many_polls_combines_each_poll_with_its_own_partner() {
    // A logger back from an outage uploads 48 stored 10-minute polls at once: one batch with
    // far more readings per channel than the history keeps between batches. Each difference is
    // that poll's own pair (the two drift apart poll by poll, so a neighbouring poll's partner
    // gives another number), and every one is good.
    let (mut set, core, surface) = core_surface_pair();
    let step = 10 * MIN;
    let at = |i: i64| (30.0 + 0.1 * i as f64, 20.0 + 0.37 * i as f64);
    let mut batch = Vec::new();
    for i in 0..48 {
        let (a, b) = at(i);
        batch.push(good(&core, T0 + i * step, a));
        batch.push(good(&surface, T0 + i * step, b));
    }
    let out = set.on_batch(&batch);
    assert_eq!(out.len(), 48, "one difference per poll: {:?}", seen(&out));
    for r in &out {
        let i = (r.ts - T0) / step;
        let (a, b) = at(i);
        assert_eq!(r.quality, Quality::Good, "poll {i}");
        assert!(
            close(r.value, a - b),
            "poll {i}: {:?} stored, {} from the poll's own readings",
            r.value,
            a - b
        );
    }
    // Between batches the last polls are kept: a core reading 5 min after the last poll is
    // combined with that poll's surface.
    let out = set.on_batch(&[good(&core, T0 + 47 * step + 5 * MIN, 50.0)]);
    assert!(close(out[0].value, 50.0 - at(47).1), "{:?}", seen(&out));
}

fn wait_ns() -> i64 {
    i64::try_from(super::COMBINE_WAIT.as_nanos()).expect("short")
}

#[test]
fn a_poll_split_over_batches_is_combined_with_its_own_readings() {
    // Sensors sent in messages of their own, or loggers polled one after the other: a poll's
    // readings reach the engine in several batches. A combination waits for the input that has
    // not reported up to its time rather than take that input's reading of the poll before
    // (10 min earlier, within max_skew), and is computed once, from its own poll.
    let (mut set, core, surface) = core_surface_pair();
    let now = Some(T0 + H);
    let step = 10 * MIN;
    let mut all = set.on_batch_at(&[good(&core, T0, 30.0), good(&surface, T0, 20.0)], now);
    all.extend(set.on_batch_at(&[good(&core, T0 + step, 33.0)], now));
    assert_eq!(all.len(), 1, "the core at +10 min waits: {:?}", seen(&all));
    assert!(set.is_waiting());
    all.extend(set.on_batch_at(&[good(&surface, T0 + step, 21.5)], now));
    let got = seen(&all);
    assert_eq!(got.len(), 2, "once per time: {got:?}");
    assert!(close(got[1].1, 33.0 - 21.5), "{got:?}");
    assert_eq!(all[1].ts, T0 + step);
    assert!(!set.is_waiting());
    // The surface stops reporting: the core's difference waits COMBINE_WAIT, then is computed
    // from what there is (the surface 10 min before, within max_skew).
    let later = T0 + H;
    assert!(set
        .on_batch_at(&[good(&core, T0 + 2 * step, 34.0)], Some(later))
        .is_empty());
    assert!(set.on_batch_at(&[], Some(later + wait_ns() - 1)).is_empty());
    let out = set.on_batch_at(&[], Some(later + wait_ns()));
    assert!(close(out[0].value, 34.0 - 21.5), "{:?}", seen(&out));
    // The engine's stop (`None`) computes everything waiting: the core at +30 min has no
    // surface within 10 min, its difference is flagged.
    assert!(set
        .on_batch_at(&[good(&core, T0 + 3 * step, 35.0)], Some(later))
        .is_empty());
    let out = set.on_batch_at(&[], None);
    assert_eq!(
        seen(&out),
        [(
            "raft-a/t01-t02.core-surface".to_owned(),
            None,
            Quality::DerivedInputBad
        )]
    );
    assert!(!set.is_waiting());

    // A levelling line whose reference is on a logger polled after the cells' logger: each
    // settlement takes the reference of its own poll, not the one before.
    let mut set = DerivedSet::new(plan(LINE));
    let (ch1, ch5) = (level("ch1"), level("ch5"));
    let mut out = set.on_batch_at(&[good(&ch1, T0, 315.4), good(&ch5, T0, 301.8)], now);
    out.extend(set.on_batch_at(&[good(&ch1, T0 + MIN, 316.0)], now));
    assert_eq!(out.len(), 1, "{:?}", seen(&out));
    out.extend(set.on_batch_at(&[good(&ch5, T0 + MIN + 1, 302.9)], now));
    let got = seen(&out);
    assert_eq!(got.len(), 2, "{got:?}");
    // (316.0 − 312.4) − (302.9 − 301.3) = 2.0 mm (with the reference before: 3.1 mm).
    assert!(close(got[1].1, 2.0), "{got:?}");
}

/// What a spool holds after every delta of `set` so far was committed (`spool`), as
/// [`crate::spool::Spool::load_state`] gives it back at the next start.
fn commit_changes(set: &mut DerivedSet, spool: &mut BTreeMap<String, Vec<u8>>) {
    let (delta, errors) = set.state_changes();
    assert_eq!(errors, 0);
    for (k, v) in delta.entries {
        match v {
            Some(v) => spool.insert(k, v),
            None => spool.remove(&k),
        };
    }
}

#[test]
fn a_rate_window_saved_in_parts_comes_back_whole_after_a_restart() {
    const RATE: &str =
        "name = \"rate\"\nkind = \"rate\"\nselect = { kind = \"settlement\" }\nwindow = \"1d\"";
    let plate = series("plate", "s1", QuantityKind::Settlement, "mm");
    // A plate settling 2 mm/d with ±0.05 mm of noise, read every 5 min for 2 days, the state
    // saved after every reading: the 1-d window's 22.5-min buckets close one after another.
    let v = |i: i64| 2.0 * (i * 5) as f64 / 1440.0 + 0.05 * ((i * 7) % 5 - 2) as f64 / 2.0;
    let mut set = one_block(RATE);
    let mut spool = BTreeMap::new();
    let (mut full, mut parts) = (0, 0);
    let n = 2 * 288 + 2;
    for i in 0..n {
        let _ = set.on_batch(&[good(&plate, T0 + i * 5 * MIN, v(i))]);
        let before = spool.get("v/rate/plate/s1.rate").cloned();
        commit_changes(&mut set, &mut spool);
        if spool.get("v/rate/plate/s1.rate") == before.as_ref() {
            parts += 1;
        } else {
            full += 1;
        }
    }
    // Most saves wrote the newest bucket alone; the last ones did (two readings into a bucket).
    assert!(
        parts > full && full >= 2 * 64,
        "{full} full saves, {parts} partial"
    );
    assert!(
        spool.contains_key("vo/rate/plate/s1.rate"),
        "{:?}",
        spool.keys()
    );
    let entries: Vec<(String, Vec<u8>)> = spool.clone().into_iter().collect();
    let mut again = one_block(RATE);
    assert!(again.restore(&entries).is_empty());
    // The next reading gives the same rate from the restored window as from the one that ran
    // on (the sums rebuilt from the buckets: equal to rounding).
    let next = good(&plate, T0 + n * 5 * MIN, v(n));
    let ran_on = seen(&set.on_batch(std::slice::from_ref(&next)));
    let restored = seen(&again.on_batch(std::slice::from_ref(&next)));
    assert_eq!(ran_on.len(), 1);
    let (a, b) = (
        ran_on[0].1.unwrap_or(f64::NAN),
        restored[0].1.unwrap_or(f64::NAN),
    );
    assert!((a - b).abs() < 1e-9, "ran on {a}, restored {b}");
    assert!((a - 2.0).abs() < 0.05, "{a} mm/d");
    // Without the newest bucket saved apart, the window would have lost its last readings.
    let whole_only: Vec<(String, Vec<u8>)> = entries
        .into_iter()
        .filter(|(k, _)| !k.starts_with("vo/"))
        .collect();
    let mut partial = one_block(RATE);
    assert!(partial.restore(&whole_only).is_empty());
    let c = seen(&partial.on_batch(std::slice::from_ref(&next)))[0]
        .1
        .unwrap_or(f64::NAN);
    assert!(
        (c - a).abs() > 1e-9,
        "the newest bucket made no difference: {c}"
    );
}

#[test]
fn forecast_and_tangent_windows_saved_in_parts_come_back_whole_after_a_restart() {
    const BLOCKS: &str =
        "name = \"inv\"\nkind = \"inverse_velocity\"\nselect = { kind = \"settlement\" }\n\
         smooth = \"12h\"\nwindow = \"2d\"\n\
         [[derived]]\nname = \"xu\"\nkind = \"tangent_angle\"\nselect = { kind = \"settlement\" }\n\
         smooth = \"12h\"\ncreep_window = \"1d\"";
    let plate = series("plate", "s1", QuantityKind::Settlement, "mm");
    // An accelerating displacement (1 mm/d doubling every day), read every 5 min for 3 days,
    // the state saved after every reading.
    let v = |i: i64| {
        let d = (i * 5) as f64 / 1440.0;
        (d * std::f64::consts::LN_2).exp() / std::f64::consts::LN_2 + 0.002 * ((i * 7) % 5) as f64
    };
    let mut set = one_block(BLOCKS);
    let mut spool = BTreeMap::new();
    let n = 3 * 288;
    for i in 0..n {
        let _ = set.on_batch(&[good(&plate, T0 + i * 5 * MIN, v(i))]);
        commit_changes(&mut set, &mut spool);
    }
    let open: Vec<&String> = spool.keys().filter(|k| k.starts_with("vo/")).collect();
    assert_eq!(open.len(), 2, "{:?}", spool.keys());
    let entries: Vec<(String, Vec<u8>)> = spool.into_iter().collect();
    let mut again = one_block(BLOCKS);
    assert!(again.restore(&entries).is_empty());
    let next = good(&plate, T0 + n * 5 * MIN, v(n));
    let ran_on = seen(&set.on_batch(std::slice::from_ref(&next)));
    let restored = seen(&again.on_batch(std::slice::from_ref(&next)));
    assert!(
        ran_on.iter().filter(|(_, v, _)| v.is_some()).count() >= 2,
        "{ran_on:?}"
    );
    assert_eq!(ran_on.len(), restored.len(), "{ran_on:?} {restored:?}");
    for (a, b) in ran_on.iter().zip(&restored) {
        assert_eq!((&a.0, a.2), (&b.0, b.2));
        let (x, y) = (a.1.unwrap_or(0.0), b.1.unwrap_or(0.0));
        assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "{a:?} {b:?}");
    }
}

/// Derived state bytes written per hour by windowed blocks (issue 11: the site box's SD card),
/// once their windows are full: 50 settlement plates read every 10 s, a rate block (1 d window),
/// a stability block (its default 100 d window), an inverse-velocity forecast and a tangent
/// angle (their default windows) over all of them, saved every 10 s
/// (`STATE_SAVE_INTERVAL`). The windows are filled with a reading an hour for 100 days first,
/// then the hour measured. `cargo test -p anju-gateway --release --lib
/// derived::tests::window_state_bytes_per_hour -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run by hand"]
fn window_state_bytes_per_hour() {
    let mut set = one_block(
        "name = \"rate\"\nkind = \"rate\"\nselect = { kind = \"settlement\" }\nwindow = \"1d\"\n\
         [[derived]]\nname = \"stable\"\nkind = \"stability\"\nselect = { kind = \"settlement\" }\n\
         [[derived]]\nname = \"inv\"\nkind = \"inverse_velocity\"\nselect = { kind = \"settlement\" }\n\
         [[derived]]\nname = \"xu\"\nkind = \"tangent_angle\"\nselect = { kind = \"settlement\" }\ncreep_window = \"7d\"",
    );
    let plates: Vec<Arc<Series>> = (0..50)
        .map(|i| series("plate", &format!("s{i:02}"), QuantityKind::Settlement, "mm"))
        .collect();
    let value = |ts: i64, i: usize| {
        20.0 * (1.0 - (-((ts - T0) as f64) / (60.0 * DAY as f64)).exp()) + 0.01 * (i % 7) as f64
    };
    let batch_at = |ts: i64| -> Vec<Reading> {
        plates
            .iter()
            .enumerate()
            .map(|(i, s)| good(s, ts, value(ts, i)))
            .collect()
    };
    let start = T0 + 100 * DAY;
    let mut ts = T0;
    while ts < start {
        let _ = set.on_batch(&batch_at(ts));
        ts += H;
    }
    let _ = set.state_changes();
    let (mut bytes, mut whole) = (0usize, 0usize);
    let mut saves = 0;
    for tick in 0..360_i64 {
        let _ = set.on_batch(&batch_at(start + tick * 10 * NANOS_PER_SEC));
        // What saving every changed entry whole wrote (before the newest buckets were saved
        // apart): its key and its JSON.
        whole += set
            .outputs
            .iter()
            .filter(|o| o.dirty && o.calc.is_persistent())
            .map(|o| {
                let key = super::entry_key(
                    &set.specs[o.block].name,
                    &format!("{}/{}", o.device, o.point),
                );
                key.len() + serde_json::to_vec(&o.calc).map_or(0, |v| v.len())
            })
            .sum::<usize>();
        let (delta, errors) = set.state_changes();
        assert_eq!(errors, 0);
        bytes += delta.written_bytes();
        saves += 1;
    }
    println!("derived state written per hour, 50 plates with a 1 d rate, a 100 d stability window, an inverse-velocity forecast and a tangent angle (their default windows): {bytes} bytes in {saves} saves; every changed entry whole: {whole} bytes ({:.1}x more)", whole as f64 / bytes.max(1) as f64);
    assert!(bytes > 0 && bytes < whole);
}
