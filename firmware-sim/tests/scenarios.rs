//! Every shipped scenario loads; broken scenarios name the file and the offending entry.

mod common;

use std::path::{Path, PathBuf};

use firmware_sim::scenario::{CigemKind, MessageForm};
use firmware_sim::{Scenario, ScenarioError};

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
    assert!(
        files.len() >= 2,
        "basic.toml and demo.toml at least: {files:?}"
    );
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
