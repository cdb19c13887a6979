//! Every shipped scenario loads; broken scenarios name the file and the offending entry.

mod common;

use std::path::{Path, PathBuf};

use firmware_sim::physics::Model;
use firmware_sim::scenario::{CigemKind, MessageForm, StatusPoints};
use firmware_sim::{FaultKind, Scenario, ScenarioError};

fn sim_dir() -> PathBuf {
    common::repo().join("config/sim")
}

fn profiles() -> PathBuf {
    common::repo().join("config/profiles")
}

#[test]
fn every_shipped_scenario_loads() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(sim_dir())
        .expect("config/sim")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for want in [
        "basic.toml",
        "curing-pour.toml",
        "demo.toml",
        "faulty-devices.toml",
        "normal-site.toml",
        "slope-failure.toml",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for f in &files {
        let s = Scenario::load(f).unwrap_or_else(|e| panic!("{e}"));
        let names = s.device_names();
        let unique: std::collections::HashSet<&str> = names.iter().copied().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "{}: device names unique",
            f.display()
        );
    }
}

#[test]
fn basic_has_the_agreed_shape() {
    let s = Scenario::load(&sim_dir().join("basic.toml")).expect("loads");
    let tcp: Vec<(&str, &str)> = s
        .modbus_tcp
        .iter()
        .map(|d| (d.name.as_str(), d.profile.name.as_str()))
        .collect();
    assert_eq!(tcp, [("lvl-1", "levelling-8ch"), ("tc-1", "tilt-crack")]);
    assert_eq!(s.modbus_rtu.len(), 1);
    let rtu: Vec<(&str, &str, u8)> = s.modbus_rtu[0]
        .slaves
        .iter()
        .map(|d| (d.name.as_str(), d.profile.name.as_str(), d.unit))
        .collect();
    assert_eq!(
        rtu,
        [("therm-1", "thermistor-16", 1), ("tc-2", "tilt-crack", 2)]
    );
    let forms: Vec<MessageForm> = s.json_nodes.iter().map(|n| n.message).collect();
    assert_eq!(forms, [MessageForm::Batch, MessageForm::Single]);
    assert_eq!(s.cigem.len(), 1);
    let kinds: Vec<CigemKind> = s.cigem[0].points.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [CigemKind::Crack, CigemKind::Tilt, CigemKind::Rain]);
    assert_eq!(s.sample_interval.as_secs(), 1);
}

/// Writes `text` as `x.toml` in a temp dir and loads it; returns the error text.
fn error_of(text: &str) -> (String, ScenarioError) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("x.toml");
    std::fs::write(&file, text).expect("write");
    let err = Scenario::load_with_profiles(&file, &profiles()).expect_err("must fail");
    (format!("{}: ", file.display()), err)
}

const HEAD: &str = "name = \"x\"\nseed = 1\nsample_interval = \"1s\"\nsite = \"s\"\n";

#[test]
fn unknown_profile_names_the_entry() {
    let text = format!(
        "{HEAD}[[modbus_tcp]]\nname = \"a\"\nprofile = \"tilt-crack\"\nunit = 1\n\
         [[modbus_tcp]]\nname = \"b\"\nprofile = \"foo\"\nunit = 1\n"
    );
    let (prefix, err) = error_of(&text);
    let msg = err.to_string();
    let want = format!(
        "{prefix}modbus_tcp[1].profile: no profile \"foo\" in {}",
        profiles().display()
    );
    assert!(msg.starts_with(&want), "{msg}");
}

#[test]
fn unknown_field_names_its_path() {
    let text = format!("{HEAD}[[json_nodes]]\nname = \"n\"\ntopic = \"t\"\nmessage = \"batch\"\n[[json_nodes.sensors]]\nid = \"a\"\nquantity = \"temperature\"\ncolour = \"red\"\n");
    let (prefix, err) = error_of(&text);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{prefix}json_nodes[0].sensors[0]")),
        "{msg}"
    );
    assert!(msg.contains("colour"), "{msg}");
    assert!(
        matches!(err, ScenarioError::Parse { line: Some(12), .. }),
        "{err:?}"
    );
}

#[test]
fn rule_violations_name_their_path() {
    let cases: &[(&str, &str)] = &[
        ("sample_interval = \"1500ms\"\n", "sample_interval"),
        (
            "[[modbus_tcp]]\nname = \"a\"\nprofile = \"tilt-crack\"\nunit = 0\n",
            "modbus_tcp[0].unit",
        ),
        (
            "[[modbus_tcp]]\nname = \"a\"\nprofile = \"tilt-crack\"\nunit = 1\n\
             [[modbus_rtu]]\nbus = \"b\"\n[[modbus_rtu.slaves]]\nname = \"a\"\nprofile = \"tilt-crack\"\nunit = 1\n",
            "modbus_rtu[0].slaves[0].name",
        ),
        (
            "[[modbus_rtu]]\nbus = \"b\"\n[[modbus_rtu.slaves]]\nname = \"a\"\nprofile = \"tilt-crack\"\nunit = 1\n\
             [[modbus_rtu.slaves]]\nname = \"c\"\nprofile = \"tilt-crack\"\nunit = 1\n",
            "modbus_rtu[0].slaves[1].unit",
        ),
        (
            "[[json_nodes]]\nname = \"n\"\ntopic = \"a/{node}/{sensor}\"\nmessage = \"batch\"\n\
             [[json_nodes.sensors]]\nid = \"a\"\nquantity = \"temperature\"\n",
            "json_nodes[0].topic",
        ),
        (
            "[[cigem]]\ndevice_id = \"g\"\n[[cigem.points]]\nid = \"LF_1\"\nkind = \"crack\"\n",
            "cigem[0].points[0].id",
        ),
        (
            "[[json_nodes]]\nname = \"bad name\"\ntopic = \"t\"\nmessage = \"batch\"\n\
             [[json_nodes.sensors]]\nid = \"a\"\nquantity = \"temperature\"\n",
            "json_nodes[0].name",
        ),
    ];
    for (body, path) in cases {
        // A case that sets sample_interval replaces the head's.
        let text = if body.starts_with("sample_interval") {
            format!("name = \"x\"\nseed = 1\nsite = \"s\"\n{body}")
        } else {
            format!("{HEAD}{body}")
        };
        let (prefix, err) = error_of(&text);
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{prefix}{path}: ")),
            "want {path}: {msg}"
        );
    }
}

#[test]
fn a_bad_profile_names_the_profile_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).expect("mkdir");
    std::fs::write(
        profiles.join("p.toml"),
        "name = \"p\"\n[[points]]\nname = \"a\"\nfunction = \"holding\"\naddress = 65535\ntype = \"u32\"\nquantity = \"other\"\n",
    )
    .expect("write");
    let file = dir.path().join("x.toml");
    std::fs::write(&file, HEAD).expect("write");
    let msg = Scenario::load_with_profiles(&file, &profiles)
        .expect_err("bad profile")
        .to_string();
    let want = format!(
        "{}: points[0].address: ",
        Path::new(&profiles).join("p.toml").display()
    );
    assert!(msg.starts_with(&want), "{msg}");
}

#[test]
fn public_handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<firmware_sim::RunningSite>();
    send_sync::<firmware_sim::Truth>();
    send_sync::<Scenario>();
}

#[test]
fn the_site_scenarios_have_their_physics_mappings_and_faults() {
    let load = |n: &str| Scenario::load(&sim_dir().join(n)).unwrap_or_else(|e| panic!("{e}"));
    let kinds = |s: &Scenario| -> Vec<&'static str> {
        s.physics
            .models()
            .iter()
            .map(|m| match m {
                Model::Settlement(_) => "settlement",
                Model::Curing(_) => "curing",
                Model::Slope(_) => "slope",
            })
            .collect()
    };
    let normal = load("normal-site.toml");
    assert_eq!(kinds(&normal), ["settlement", "curing", "slope"]);
    assert!(normal.faults.is_empty(), "a normal site has no faults");
    assert_eq!(normal.modbus_tcp[0].status_points, StatusPoints::Clear);
    assert_eq!(normal.modbus_tcp[0].channels["ch1"].channel, "block-a.A1");
    assert_eq!(normal.modbus_tcp[0].channels["ch1"].offset, 312.4);
    let curing = load("curing-pour.toml");
    assert_eq!(kinds(&curing), ["curing", "curing"]);
    assert_eq!(
        curing.duration,
        Some(std::time::Duration::from_secs(21 * 86_400))
    );
    let slope = load("slope-failure.toml");
    let Model::Slope(m) = &slope.physics.models()[0] else {
        panic!("slope model")
    };
    let f = m.failure.expect("heads to failure");
    assert_eq!((f.onset_days, f.failure_days), (10.0, 20.0));
    assert_eq!(
        slope.modbus_rtu[0].slaves.len(),
        6,
        "one slave per inclinometer segment"
    );
    assert_eq!(
        slope.cigem[0].points[0].fields["gpsTotalZ"].channel,
        "north.G1.up"
    );
    let faulty = load("faulty-devices.toml");
    for kind in FaultKind::ALL {
        assert!(faulty.faults.iter().any(|f| f.kind() == kind), "{kind}");
    }
    assert!(faulty.json_nodes[0].will.is_some() && faulty.cigem[0].will.is_some());
    assert_eq!(
        faulty.json_nodes[0].will.as_ref().map(|w| w.topic.as_str()),
        Some("sites/anju-faulty/nodes/node-f/status")
    );
}

/// Physics for the error cases below.
const PHYSICS: &str = "[[settlement]]\nname = \"m\"\nconsolidation_days = 30.0\n\
    [[settlement.points]]\nname = \"A\"\nx_m = 0.0\ny_m = 0.0\n\
    [[settlement.points]]\nname = \"B\"\nx_m = 5.0\ny_m = 0.0\n\
    [[settlement.loads]]\nat = \"0s\"\nsettlement_mm = 5.0\n";
const LVL: &str = "[[modbus_tcp]]\nname = \"lvl\"\nprofile = \"levelling-8ch\"\nunit = 1\n";
const RTU: &str = "[[modbus_rtu]]\nbus = \"b\"\n[[modbus_rtu.slaves]]\nname = \"th\"\nprofile = \"thermistor-16\"\nunit = 1\n";

#[test]
fn physics_mapping_and_fault_errors_name_their_path() {
    let cases: &[(String, &str, &str)] = &[
        (
            format!("{PHYSICS}{LVL}channels = {{ ch1 = \"m.C\" }}\n"),
            "modbus_tcp[0].channels.ch1",
            "no channel \"m.C\"; model \"m\" has: m.A, m.A.rate",
        ),
        (
            format!("{PHYSICS}{LVL}channels = {{ chx = \"m.A\" }}\n"),
            "modbus_tcp[0].channels.chx",
            "profile \"levelling-8ch\" has no point \"chx\"",
        ),
        (
            format!("{PHYSICS}{LVL}channels = {{ ch1 = {{ channel = \"m.A\", gian = 2.0 }} }}\n"),
            "modbus_tcp[0].channels.ch1",
            "gian",
        ),
        (
            PHYSICS.replace("consolidation_days = 30.0", "consolidation_days = -1.0"),
            "settlement[0].consolidation_days",
            "-1 is outside",
        ),
        (
            PHYSICS.replace("[[settlement.points]]\nname = \"A\"", "pairs = [[\"A\", \"Z\"]]\n[[settlement.points]]\nname = \"A\""),
            "settlement[0].pairs[0]",
            "no point \"Z\"",
        ),
        (
            "[[slope]]\nname = \"s\"\ncreep_mm_per_day = 1.0\nfailure_at = \"3d\"\n".into(),
            "slope[0].accel_onset",
            "failure_at needs accel_onset",
        ),
        (
            "[[curing]]\nname = \"c\"\ncement_kg_m3 = 300.0\nheat_kj_kg = 375.0\nhydration_rate_per_day = 0.0\n\
             placing_c = 20.0\nambient_mean_c = 20.0\nloss_per_day_insulated = 0.1\nsurface_coupling_insulated = 0.5\n".into(),
            "curing[0].hydration_rate_per_day",
            "0 is outside",
        ),
        (
            format!("{LVL}[[faults]]\nkind = \"stuck\"\ndevice = \"nope\"\nstart = \"1h\"\n"),
            "faults[0].device",
            "no device \"nope\"",
        ),
        (
            format!("{LVL}[[faults]]\nkind = \"stuck\"\ndevice = \"lvl\"\nstart = \"1h\"\nmagnitude = 3.0\n"),
            "faults[0].magnitude",
            "not used by a stuck fault",
        ),
        (
            format!("{LVL}[[faults]]\nkind = \"garbage\"\ndevice = \"lvl\"\nstart = \"1h\"\n"),
            "faults[0].kind",
            "a garbage fault applies only to slaves on an RTU bus",
        ),
        (
            format!("{LVL}[[faults]]\nkind = \"spike\"\ndevice = \"lvl\"\npoint = \"ch9\"\nstart = \"1h\"\nmagnitude = 3.0\n"),
            "faults[0].point",
            "no point \"ch9\"",
        ),
        (
            format!("{LVL}[[faults]]\nkind = \"slow\"\ndevice = \"lvl\"\nstart = \"2h\"\nend = \"1h\"\ndelay = \"1s\"\n"),
            "faults[0].end",
            "must be after start",
        ),
        (
            format!("{RTU}[[faults]]\nkind = \"offline\"\ndevice = \"th\"\nstart = \"1h\"\nend = \"3h\"\n\
                     [[faults]]\nkind = \"offline\"\ndevice = \"th\"\nstart = \"2h\"\n"),
            "faults[1].start",
            "overlaps faults[0]",
        ),
        (
            format!("{RTU}[[faults]]\nkind = \"exception\"\ndevice = \"th\"\nstart = \"1h\"\ncode = \"on_fire\"\n"),
            "faults[0].code",
            "on_fire",
        ),
        (
            "[[cigem]]\ndevice_id = \"g\"\n[[cigem.points]]\nid = \"L1_GP_1\"\nkind = \"gnss\"\nfields = { gpsTotalW = \"x.y\" }\n".into(),
            "cigem[0].points[0].fields.gpsTotalW",
            "no field \"gpsTotalW\": a gnss point has gpsTotalX, gpsTotalY, gpsTotalZ",
        ),
        (
            "[[json_nodes]]\nname = \"n\"\ntopic = \"t\"\nmessage = \"batch\"\n[json_nodes.will]\ntopic = \"a/#\"\npayload = \"x\"\n\
             [[json_nodes.sensors]]\nid = \"a\"\nquantity = \"temperature\"\n".into(),
            "json_nodes[0].will.topic",
            "without '+' or '#'",
        ),
    ];
    for (body, path, what) in cases {
        let (prefix, err) = error_of(&format!("{HEAD}{body}"));
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{prefix}{path}")),
            "want {path}: {msg}"
        );
        assert!(msg.contains(what), "want {what:?} in: {msg}");
    }
}
