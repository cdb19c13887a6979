//! The reload diff: what counts as unchanged (kept running), what is restarted, and what is
//! refused because it needs a restart.

use std::path::Path;

use super::*;

/// A config of two Modbus buses, two MQTT sources, an InfluxDB sink and one alert rule, with
/// `edit` applied to its text (a replacement of one line), validated as `config/test.toml`.
fn config(edit: Option<(&str, &str)>) -> Config {
    let mut text = r#"site = "xa"
gateway_id = "gw1"
data_dir = "/tmp/anju-reload-test"
[[devices]]
name = "lev-a1"
transport = "tcp"
address = "127.0.0.1:5020"
unit = 3
profile = "levelling-8ch"
tags = { structure = "block-A" }
[[devices]]
name = "lev-b1"
transport = "tcp"
address = "127.0.0.1:5021"
unit = 3
profile = "levelling-8ch"
[[mqtt]]
name = "nodes"
address = "127.0.0.1:1883"
[[mqtt.subscriptions]]
name = "a"
topic = "a/{device}/{point}"
point = "{point}"
quantity = "settlement"
unit = "mm"
payload = { format = "json", value = "value", time = "ts" }
[[mqtt]]
name = "gnss"
address = "127.0.0.1:1884"
[[mqtt.subscriptions]]
name = "g"
topic = "g/{device}/{point}"
point = "{point}"
quantity = "displacement"
unit = "mm"
payload = { format = "json", value = "value", time = "ts" }
[[sinks]]
type = "influxdb"
name = "county"
url = "http://127.0.0.1:8086"
org = "county"
bucket = "anju"
batch_max_records = 5000
[[alerts.rules]]
name = "settlement-total"
kind = "absolute"
select = { kind = "settlement" }
upper = { alarm = 30.0, yellow = 0.7, red = 1.0 }
[console]
listen = "127.0.0.1:18080"
"#
    .to_owned();
    if let Some((from, to)) = edit {
        assert!(text.contains(from), "the test config has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    Config::from_str_at(&text, &dir.join("test.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn applied(edit: (&str, &str)) -> Plan {
    plan(&config(None), &config(Some(edit))).unwrap_or_else(|r| panic!("refused: {r:?}"))
}

fn refused(edit: (&str, &str)) -> Vec<String> {
    match plan(&config(None), &config(Some(edit))) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(r) => r.iter().map(ToString::to_string).collect(),
    }
}

/// Everything kept, nothing started or stopped.
fn all_kept(c: &Changes, names: &[&str]) {
    assert_eq!(
        c,
        &Changes {
            kept: names.iter().map(|n| (*n).to_owned()).collect(),
            ..Changes::default()
        }
    );
}

const BUS_A: &str = "poller tcp://127.0.0.1:5020 [lev-a1]";
const BUS_B: &str = "poller tcp://127.0.0.1:5021 [lev-b1]";

#[test]
fn the_same_file_again_keeps_every_task_and_the_console() {
    let p = plan(&config(None), &config(None)).expect("accepted");
    all_kept(&p.buses, &[BUS_A, BUS_B]);
    all_kept(&p.mqtt, &["mqtt source nodes", "mqtt source gnss"]);
    all_kept(&p.sinks, &["sink county"]);
    assert!(!p.console && !p.broker_needs_restart);
}

#[test]
fn a_threshold_change_keeps_every_source_sink_and_the_console() {
    let p = applied(("alarm = 30.0", "alarm = 25.0"));
    all_kept(&p.buses, &[BUS_A, BUS_B]);
    all_kept(&p.mqtt, &["mqtt source nodes", "mqtt source gnss"]);
    all_kept(&p.sinks, &["sink county"]);
    // Its /config page lists the rule with the channels it matches, not the threshold.
    assert!(!p.console);
}

#[test]
fn a_rule_matching_other_channels_restarts_the_console_that_lists_them() {
    let p = applied((
        "select = { kind = \"settlement\" }",
        "select = { device = \"lev-a1\" }",
    ));
    all_kept(&p.mqtt, &["mqtt source nodes", "mqtt source gnss"]);
    assert!(p.console);
}

#[test]
fn a_tag_added_to_one_device_restarts_its_bus_only() {
    let p = applied((
        "tags = { structure = \"block-A\" }",
        "tags = { structure = \"block-A\", floor = \"1\" }",
    ));
    assert_eq!(
        p.buses,
        Changes {
            kept: vec![BUS_B.into()],
            stopped: vec![BUS_A.into()],
            started: vec![BUS_A.into()],
        }
    );
    all_kept(&p.mqtt, &["mqtt source nodes", "mqtt source gnss"]);
}

#[test]
fn a_changed_subscription_restarts_its_source_and_the_other_keeps_its_session() {
    let p = applied(("quantity = \"displacement\"", "quantity = \"crack\""));
    assert_eq!(
        p.mqtt,
        Changes {
            kept: vec!["mqtt source nodes".into()],
            stopped: vec!["mqtt source gnss".into()],
            started: vec!["mqtt source gnss".into()],
        }
    );
    all_kept(&p.buses, &[BUS_A, BUS_B]);
}

#[test]
fn a_removed_source_is_stopped_and_a_renamed_one_is_another_source() {
    let p = applied(("name = \"gnss\"", "name = \"gnss-2\""));
    assert_eq!(
        p.mqtt,
        Changes {
            kept: vec!["mqtt source nodes".into()],
            stopped: vec!["mqtt source gnss".into()],
            started: vec!["mqtt source gnss-2".into()],
        }
    );
}

#[test]
fn a_sink_batch_size_restarts_that_sink_only() {
    let p = applied(("batch_max_records = 5000", "batch_max_records = 2000"));
    assert_eq!(
        p.sinks,
        Changes {
            kept: vec![],
            stopped: vec!["sink county".into()],
            started: vec!["sink county".into()],
        }
    );
    all_kept(&p.mqtt, &["mqtt source nodes", "mqtt source gnss"]);
    assert!(p.console, "the console's readiness watches the sinks");
}

#[test]
fn a_restarted_bus_restarts_the_modbus_output_sink_and_the_console_that_write_through_it() {
    let with_siren = || {
        config(Some((
            "[[mqtt]]\nname = \"nodes\"",
            "[[devices]]\nname = \"site-io\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:5030\"\nunit = 1\nprofile = \"io-relay\"\n\
                 [[sinks]]\ntype = \"modbus_output\"\nname = \"siren\"\ndevice = \"site-io\"\ncoil = 0\nlevel = \"red\"\n\
                 [[mqtt]]\nname = \"nodes\"",
        )))
    };
    let p = plan(&with_siren(), &with_siren()).expect("accepted");
    assert!(p.sinks.kept.contains(&"sink siren".to_owned()) && !p.console);
    // Another device's bus restarted: the siren's routes are rebuilt, so the sink and the
    // console (its `/write`) take the new ones.
    let p = plan(&with_siren(), &{
        let mut c = with_siren();
        c.devices[0].tags.insert("floor".into(), "2".into());
        c
    })
    .expect("accepted");
    assert_eq!(p.buses.started, [BUS_A]);
    assert_eq!(p.sinks.started, ["sink siren"]);
    assert_eq!(p.sinks.kept, ["sink county"]);
    assert!(p.console);
}

#[test]
fn data_dir_site_and_spool_changes_are_refused_naming_the_key_and_the_restart() {
    assert_eq!(
        refused(("data_dir = \"/tmp/anju-reload-test\"", "data_dir = \"/tmp/elsewhere\"")),
        ["data_dir: the spool is open there (one handle per process); restart the service to change data_dir (systemctl restart anju-gateway)"]
    );
    let r = refused(("site = \"xa\"", "site = \"xb\""));
    assert!(r.len() == 1 && r[0].starts_with("site: "), "{r:?}");
    let r = refused(("[console]", "[spool]\nmax_bytes = 104857600\n[console]"));
    assert!(r.len() == 1 && r[0].starts_with("spool: "), "{r:?}");
    let r = refused(("[console]", "[clock]\nsync = \"ntp\"\n[console]"));
    assert!(r.len() == 1 && r[0].starts_with("clock: "), "{r:?}");
}

#[test]
fn adding_or_renaming_a_sink_is_refused_and_its_settings_are_not() {
    let r = refused(("name = \"county\"", "name = \"county-2\""));
    assert!(r.len() == 1 && r[0].starts_with("sinks: "), "{r:?}");
    let r = refused((
        "[[alerts.rules]]",
        "[[sinks]]\ntype = \"influxdb\"\nname = \"backup\"\nurl = \"http://127.0.0.1:8087\"\norg = \"c\"\nbucket = \"b\"\n[[alerts.rules]]",
    ));
    assert!(r.len() == 1 && r[0].starts_with("sinks: "), "{r:?}");
}

#[test]
fn a_console_listen_change_restarts_it_and_turning_its_history_off_is_refused() {
    let p = applied((
        "listen = \"127.0.0.1:18080\"",
        "listen = \"127.0.0.1:18081\"",
    ));
    assert!(p.console);
    all_kept(&p.sinks, &["sink county"]);
    let r = refused((
        "listen = \"127.0.0.1:18080\"",
        "listen = \"127.0.0.1:18080\"\nhistory = { enabled = false }",
    ));
    assert!(
        r.iter().any(|r| r.starts_with("console.history: ")),
        "{r:?}"
    );
}

#[test]
fn an_embedded_broker_change_is_not_applied_and_said() {
    let with = |port: u16| {
        config(Some((
            "[console]",
            &format!("[embedded_broker]\nlisten = \"127.0.0.1:{port}\"\n[console]"),
        )))
    };
    let p = plan(&with(11883), &with(11884)).expect("the rest applies");
    assert!(p.broker_needs_restart);
    all_kept(&p.mqtt, &["mqtt source nodes", "mqtt source gnss"]);
    let p = plan(&with(11883), &with(11883)).expect("accepted");
    assert!(!p.broker_needs_restart);
}
