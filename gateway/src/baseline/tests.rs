//! `gateway baseline` on hand-worked heads: a request saved in a closed spool is collected by
//! the derived channels after a restart; a re-zeroing keeps the old value in the history and the
//! settlement counts from the new one; refusals name the fix; a spool a gateway holds is refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{listing, plan_order, BaselineError, Order};
use crate::engine::derived::config::DerivedConfig;
use crate::engine::derived::initial::{Baseline, Change, Refusal, REQUESTED_METHOD};
use crate::engine::derived::{DerivedPlan, DerivedSet};
use crate::model::{Quality, QuantityKind, Reading, Series, NANOS_PER_SEC};
use crate::spool::offline::{self, OfflineError};
use crate::spool::{Spool, SpoolConfig};

const T0: i64 = 1_767_225_600 * NANOS_PER_SEC;
const MIN: i64 = 60 * NANOS_PER_SEC;

/// A levelling line without `establish_readings`: ch1's initial value comes from the command
/// only; ch2's is configured; the reference ch5 is configured at 301.3 mm.
const LINE: &str = r#"
[[derived]]
name = "settlement"
kind = "levelling"
select = { device = "lvl", point = "ch?" }
reference = "lvl/ch5"
initial = { "lvl/ch2" = 305.9, "lvl/ch5" = 301.3 }

[[derived]]
name = "mean"
kind = "mean"
select = { device = "lvl" }
"#;

#[derive(serde::Deserialize)]
struct Section {
    derived: Vec<DerivedConfig>,
}

fn plan() -> DerivedPlan {
    let s: Section = toml::from_str(LINE).expect("toml");
    DerivedPlan::from_config(&s.derived, "derived").expect("valid")
}

fn level(point: &str) -> Arc<Series> {
    Arc::new(Series::new(
        "xa",
        "gw",
        "lvl",
        point,
        QuantityKind::Level,
        "mm",
        &BTreeMap::new(),
    ))
}

/// ch1's settlement after one poll of ch1 at `head` and the reference at `reference`.
fn poll(set: &mut DerivedSet, i: i64, head: f64, reference: f64) -> (Option<f64>, Quality) {
    let ts = T0 + i * MIN;
    let out = set.on_batch(&[
        Reading::good(level("ch1"), ts, head),
        Reading::good(level("ch5"), ts, reference),
    ]);
    let r = out
        .iter()
        .find(|r| r.series.point == "ch1.settlement")
        .expect("a settlement of ch1");
    (r.value, r.quality)
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

fn entries_of(delta: crate::spool::StateDelta) -> Vec<(String, Vec<u8>)> {
    delta
        .entries
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

fn order<'a>(channels: &'a [String], change: Change, readings: Option<u32>) -> Order<'a> {
    Order {
        block: "settlement",
        channels,
        change,
        readings,
    }
}

#[test]
fn an_establish_request_is_collected_after_a_restart_and_a_rezero_keeps_the_old_value() {
    let ch1 = ["lvl/ch1".to_owned()];
    // The command, gateway stopped: establish ch1 from the next 3 good readings.
    let delta =
        plan_order(&plan(), &order(&ch1, Change::Establish, Some(3)), &[], T0).expect("saved");
    let saved = entries_of(delta);
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].0, "vi/settlement/lvl/ch1");

    // The gateway starts with it: 411 until 3 good readings, then h0 = (310 + 311 + 312) / 3
    // = 311 mm. The reference rose 0.2 mm: s = (313.5 − 311) − (301.5 − 301.3) = 2.3 mm.
    let mut set = DerivedSet::new(plan());
    assert!(set.restore(&saved).is_empty());
    assert_eq!(
        poll(&mut set, 0, 310.0, 301.3),
        (None, Quality::InitialValueMissing)
    );
    assert_eq!(
        poll(&mut set, 1, 311.0, 301.3),
        (None, Quality::InitialValueMissing)
    );
    let third = poll(&mut set, 2, 312.0, 301.3);
    assert!(close(third.0, 1.0), "{third:?}");
    let fourth = poll(&mut set, 3, 313.5, 301.5);
    assert!(close(fourth.0, 2.3), "{fourth:?}");
    let (delta, errors) = set.state_changes();
    assert_eq!(errors, 0);
    let established = entries_of(delta);
    let record: Baseline = serde_json::from_slice(&established[0].1).expect("readable");
    match &record {
        Baseline::Established {
            value,
            readings,
            first_ts,
            last_ts,
            method,
            ..
        } => {
            assert!((value - 311.0).abs() < 1e-9);
            assert_eq!((*readings, *first_ts, *last_ts), (3, T0, T0 + 2 * MIN));
            assert_eq!(method, REQUESTED_METHOD);
        }
        other => panic!("not established: {other:?}"),
    }

    // Establishing it again is refused: it has a value.
    let again = plan_order(
        &plan(),
        &order(&ch1, Change::Establish, Some(3)),
        &established,
        T0 + 10 * MIN,
    );
    assert!(
        matches!(&again, Err(BaselineError::Refused(r)) if r[0].contains("gateway baseline rezero")),
        "{again:?}"
    );

    // The cell is replaced: re-zeroed from the next 2 readings, the old 311 kept.
    let rezero = Change::Rezero {
        reason: "cell replaced after a leak".to_owned(),
    };
    let delta = plan_order(
        &plan(),
        &order(&ch1, rezero, Some(2)),
        &established,
        T0 + 10 * MIN,
    )
    .expect("saved");
    let rezeroed = entries_of(delta);
    let mut set = DerivedSet::new(plan());
    assert!(set.restore(&rezeroed).is_empty());
    // The new cell reads 250 and 250.4 (another installation head): h0 = 250.2 mm; then 251.2
    // with the reference at 301.3: s = 1.0 mm, counted from the new value, not from 311.
    assert_eq!(
        poll(&mut set, 11, 250.0, 301.3),
        (None, Quality::InitialValueMissing)
    );
    let settled = poll(&mut set, 12, 250.4, 301.3);
    assert!(close(settled.0, 0.2), "{settled:?}");
    let after = poll(&mut set, 13, 251.2, 301.3);
    assert!(close(after.0, 1.0), "{after:?}");
    let (delta, _) = set.state_changes();
    let record: Baseline = serde_json::from_slice(&entries_of(delta)[0].1).expect("readable");
    assert_eq!(record.value(), Some(250.2));
    let history = record.history();
    assert_eq!(history.len(), 1, "{history:?}");
    assert!((history[0].value - 311.0).abs() < 1e-9);
    assert_eq!(history[0].reason, "cell replaced after a leak");
    assert_eq!(history[0].replaced_at, T0 + 10 * MIN);
    let shown = listing(
        &plan(),
        &Ok(Some(vec![(
            "vi/settlement/lvl/ch1".to_owned(),
            serde_json::to_vec(&record).expect("json"),
        )])),
        true,
    );
    assert!(shown.contains("lvl/ch2 = 305.9 (configured"), "{shown}");
    assert!(shown.contains("lvl/ch1 = 250.2 (established"), "{shown}");
    assert!(
        shown.contains("before: 311 (mean_of_next_good_readings: 3 good readings 2026-01-01T00:00:00Z to 2026-01-01T00:02:00Z), replaced 2026-01-01T00:10:00Z: cell replaced after a leak"),
        "{shown}"
    );
}

#[test]
fn a_record_saved_before_the_history_existed_is_read_and_kept() {
    let old = br#"{"established":{"value":312.4,"readings":3,"first_ts":1,"last_ts":2,"method":"mean_of_first_good_readings"}}"#;
    let b: Baseline = serde_json::from_slice(old).expect("the earlier format");
    assert_eq!(b.value(), Some(312.4));
    assert!(b.history().is_empty());
    let collecting = br#"{"collecting":{"sum":620.0,"readings":2,"first_ts":5}}"#;
    let mut c: Baseline = serde_json::from_slice(collecting).expect("the earlier format");
    // The block's establish_readings = 3 still drives it: (620 + 313) / 3 = 311.
    assert_eq!(
        c.add(9, 313.0, Some(3)),
        crate::engine::derived::initial::Added::Established(311.0)
    );
}

#[test]
fn refusals_name_what_to_do_instead_and_nothing_is_written() {
    let p = plan();
    let ch2 = ["lvl/ch2".to_owned()];
    let Err(BaselineError::Refused(r)) =
        plan_order(&p, &order(&ch2, Change::Establish, None), &[], T0)
    else {
        panic!("a configured value is not overridden");
    };
    assert!(
        r[0].starts_with("derived[0] (settlement).initial.\"lvl/ch2\": configured"),
        "{r:?}"
    );

    let ch1 = ["lvl/ch1".to_owned(), "ch3".to_owned()];
    let Err(BaselineError::Refused(r)) = plan_order(
        &p,
        &order(
            &ch1,
            Change::Rezero {
                reason: "replaced".into(),
            },
            None,
        ),
        &[],
        T0,
    ) else {
        panic!("nothing to replace");
    };
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r[0].contains("use `gateway baseline establish`"), "{r:?}");
    assert!(r[1].contains("write it device/point"), "{r:?}");

    assert_eq!(
        Baseline::change(None, &Change::Rezero { reason: " ".into() }, 3, T0),
        Err(Refusal::NoReason)
    );
    assert_eq!(
        Baseline::change(Some(Err(())), &Change::Establish, 3, T0),
        Err(Refusal::Unreadable)
    );
    let mean = Order {
        block: "mean",
        ..order(&ch1, Change::Establish, None)
    };
    let Err(BaselineError::Refused(r)) = plan_order(&p, &mean, &[], T0) else {
        panic!("a mean has no initial values");
    };
    assert!(r[0].contains("only levelling blocks"), "{r:?}");
    let big = order(&ch1, Change::Establish, Some(9000));
    assert!(
        matches!(plan_order(&p, &big, &[], T0), Err(BaselineError::Refused(r)) if r[0].contains("--readings 9000"))
    );
    // Defaults: the block has no establish_readings, so DEFAULT_READINGS.
    let one = ["lvl/ch1".to_owned()];
    let delta = plan_order(&p, &order(&one, Change::Establish, None), &[], T0).expect("saved");
    let b: Baseline = serde_json::from_slice(&entries_of(delta)[0].1).expect("json");
    assert!(
        matches!(&b, Baseline::Collecting { request: Some(r), .. } if r.readings == super::DEFAULT_READINGS),
        "{b:?}"
    );
}

#[test]
fn the_spool_of_a_running_gateway_is_refused_and_a_closed_one_is_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spool.redb");
    assert!(offline::read_state(&path).expect("no file").is_none());
    // An empty file is the gateway's to move aside (damaged), not the command's to initialise.
    std::fs::write(&path, b"").expect("empty file");
    let err = offline::write_state(&path, &crate::spool::StateDelta::default())
        .expect_err("an empty file");
    assert!(err.to_string().contains("0 bytes"), "{err}");
    std::fs::remove_file(&path).expect("removed");
    let mut delta = crate::spool::StateDelta::default();
    delta
        .entries
        .insert("vi/settlement/lvl/ch1".to_owned(), Some(b"{}".to_vec()));
    {
        let running =
            Spool::open(&path, &SpoolConfig::default(), &["r".to_owned()]).expect("spool");
        let err = offline::write_state(&path, &delta).expect_err("held by the gateway");
        assert!(matches!(err, OfflineError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("stop the service first"), "{err}");
        drop(running);
    }
    offline::write_state(&path, &delta).expect("closed");
    let back = offline::read_state(&path)
        .expect("readable")
        .expect("a file");
    assert_eq!(
        back,
        vec![("vi/settlement/lvl/ch1".to_owned(), b"{}".to_vec())]
    );
    // The gateway opens it again and sees the entry.
    let reopened = Spool::open(&path, &SpoolConfig::default(), &["r".to_owned()]).expect("spool");
    assert_eq!(reopened.load_state().expect("state"), back);
}

/// A site config with one levelling logger (profile `levelling-8ch`: ch1–ch8, temp1, temp2,
/// status, supply), spool in `data_dir`, ch8 the reference.
fn site(data_dir: &std::path::Path) -> crate::config::Config {
    let text = format!(
        "site = \"xa\"\ngateway_id = \"gw1\"\ndata_dir = \"{}\"\n
[[devices]]
name = \"lvl\"
transport = \"tcp\"
address = \"127.0.0.1:5020\"
unit = 1
profile = \"levelling-8ch\"

[[derived]]
name = \"settlement\"
kind = \"levelling\"
select = {{ device = \"lvl\", kind = \"level\" }}
reference = \"lvl/ch8\"
initial = {{ \"lvl/ch8\" = 301.3 }}
",
        data_dir.display()
    );
    let at = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/test.toml");
    crate::config::Config::from_str_at(&text, &at).expect("valid")
}

#[test]
fn the_command_refuses_channels_the_block_cannot_have_and_saves_a_request_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = site(dir.path());
    let wrong = [
        "lvl/ch9".to_owned(),
        "lvl/temp1".to_owned(),
        "other/ch1".to_owned(),
    ];
    let Err(BaselineError::Refused(r)) =
        super::carry_out(&cfg, &order(&wrong, Change::Establish, None), T0)
    else {
        panic!("refused");
    };
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(r[0].contains("device lvl has no point ch9"), "{r:?}");
    assert!(r[1].contains("neither the reference nor a cell"), "{r:?}");
    assert!(r[2].contains("no device other"), "{r:?}");
    assert!(
        !super::state_path(&cfg).exists(),
        "nothing written, not even a file"
    );

    let all: Vec<String> = (1..=7).map(|i| format!("lvl/ch{i}")).collect();
    assert_eq!(
        super::missing_channels(&cfg, "settlement").expect("listed"),
        all,
        "the levels without a value; not the configured reference ch8, not temp1"
    );
    let ch3 = ["lvl/ch3".to_owned()];
    let text = super::carry_out(&cfg, &order(&ch3, Change::Establish, Some(4)), T0).expect("saved");
    let rest: Vec<String> = all.into_iter().filter(|c| c != "lvl/ch3").collect();
    assert_eq!(
        super::missing_channels(&cfg, "settlement").expect("listed"),
        rest,
        "ch3 is being collected"
    );
    assert!(text.contains("next 4 good readings"), "{text}");
    // `gateway baseline show` / `gateway check` read it back; with a gateway running on the
    // file they say why they cannot.
    let saved = offline::read_state(&super::state_path(&cfg));
    let shown = listing(&cfg.derived, &saved, true);
    assert!(shown.contains("lvl/ch8 = 301.3 (configured"), "{shown}");
    assert!(
        shown.contains(
            "lvl/ch3 = none yet (collecting 0 of 4 good readings, asked 2026-01-01T00:00:00Z)"
        ),
        "{shown}"
    );
    let running = Spool::open(
        &super::state_path(&cfg),
        &SpoolConfig::default(),
        &["r".to_owned()],
    )
    .expect("spool");
    let held = offline::read_state(&super::state_path(&cfg));
    assert!(matches!(held, Err(OfflineError::InUse { .. })), "{held:?}");
    let shown = listing(&cfg.derived, &held, false);
    assert!(shown.contains("in the spool: not shown"), "{shown}");
    assert!(shown.contains("stop the service first"), "{shown}");
    drop(running);
}

#[test]
fn a_spool_let_go_of_within_the_in_use_wait_is_used() {
    // A lock that outlives its holder's close for a moment (a child forked then) reads as in
    // use: the command waits for it rather than refusing at once (offline::IN_USE_WAIT).
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("alerts.redb");
    let running = Spool::open(&path, &SpoolConfig::default(), &["r".to_owned()]).expect("spool");
    let (opened, wait_for_it) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let _ = opened.send(());
        std::thread::sleep(offline::IN_USE_WAIT / 5);
        drop(running);
    });
    wait_for_it.recv().expect("the holder runs");
    let mut delta = crate::spool::StateDelta::default();
    delta
        .entries
        .insert("vi/settlement/lvl/ch1".to_owned(), Some(b"{}".to_vec()));
    offline::write_state(&path, &delta).expect("written once the holder let go");
    holder.join().expect("holder");
    let back = offline::read_state(&path).expect("read").expect("a file");
    assert!(
        back.iter().any(|(k, _)| k == "vi/settlement/lvl/ch1"),
        "{back:?}"
    );
}
