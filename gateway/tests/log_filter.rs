//! `ANJU_LOG` as `gateway run` reads it (main.rs, `init_logging`; README §Configuration): a
//! value tracing-subscriber's `Targets` cannot parse (an `EnvFilter` field-value directive) is
//! named on stderr and the default used; a `level,target=level` list is taken as it is.
//!
//! Owns that check only; what the log carries under a service manager is systemd_notify.rs's.

use std::process::Command;

/// `gateway run` with `ANJU_LOG` set and a config that does not exist: it sets up logging, then
/// stops with status 2. The exit code and stderr.
fn run_with(filter: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "-c", "/nonexistent/anju-log-filter-test.toml"])
        .env("ANJU_LOG", filter)
        .output()
        .expect("the gateway binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unparsable_log_filter_is_named_and_the_default_used() {
    let (code, stderr) = run_with("anju_gateway[{device=lev-a1}]=debug");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "ANJU_LOG=\"anju_gateway[{device=lev-a1}]=debug\" is not a log filter (invalid filter directive: too many '='"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("logging with \"info,rumqttd=warn\""),
        "{stderr}"
    );

    let (code, stderr) = run_with("info,anju_gateway::sources=debug");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("is not a log filter"), "{stderr}");
    assert!(stderr.contains("anju-log-filter-test.toml"), "{stderr}");
}
