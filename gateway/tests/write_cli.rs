//! `gateway write` refuses what it can judge from the config alone with exit 2 and a message
//! naming the point and the fix, and says so with exit 1 when the running gateway cannot be
//! reached. (The write itself through a running gateway is tests/system/siren.rs.)

use std::path::Path;
use std::process::{Command, Output};

/// A config with the relay module of config/profiles/io-relay.toml and a console on `port`,
/// where nothing listens.
fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/profiles");
    let text = format!(
        "site = \"s\"\ngateway_id = \"g\"\ndata_dir = \"{data}\"\nprofiles_dir = \"{profiles}\"\n\
         [[devices]]\nname = \"site-io\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:1\"\nprofile = \"io-relay\"\n\
         [console]\nlisten = \"127.0.0.1:{port}\"\n",
        data = dir.display(),
        profiles = profiles.display()
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn write(config: &Path, device: &str, point: &str, value: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["write", "--config"])
        .arg(config)
        .args(["--device", device, "--point", point, "--value", value])
        .output()
        .expect("run gateway write")
}

/// A port nothing listens on.
fn free_port() -> u16 {
    anju_gateway::loopback::free_port().expect("a free loopback port")
}

#[test]
fn refusals_exit_2_and_an_unreachable_gateway_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), free_port());
    let cases = [
        (
            "site-io",
            "supply",
            "12",
            "point \"supply\" of device \"site-io\" is not writable",
        ),
        (
            "site-io",
            "sample_interval",
            "70000",
            "70000 is outside 0..=65535",
        ),
        (
            "site-io",
            "sample_interval",
            "1.5",
            "not a multiple of the point's scale",
        ),
        ("site-io", "siren", "2", "2 is not 0 or 1"),
        (
            "site-io",
            "horn",
            "1",
            "device \"site-io\" has no point \"horn\"",
        ),
        ("pump", "siren", "1", "no Modbus device \"pump\""),
    ];
    for (device, point, value, needle) in cases {
        let out = write(&cfg, device, point, value);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{device}/{point}={value}: {stderr}"
        );
        assert!(
            stderr.contains(needle),
            "{device}/{point}={value}: {stderr}"
        );
        assert!(stderr.contains("nothing was written"), "{stderr}");
    }
    let out = write(&cfg, "site-io", "sample_interval", "300");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the running gateway's console"),
        "{stderr}"
    );
}
