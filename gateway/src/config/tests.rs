//! Config loading: valid files resolve, every mistake is named with its path and fix, and every
//! file shipped in `config/` loads.

use std::path::{Path, PathBuf};

use super::*;
use crate::secret::Secret;
use crate::sources::modbus::config::{Endpoint, Function, Transport, WordOrder};

/// The repository's `config/` directory.
fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// Validate `text` as if it were `config/test.toml`, so profiles resolve to `config/profiles`.
fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_str_at(text, &config_dir().join("test.toml"))
}

fn problems(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("config was accepted but should not be:\n{text}"),
        Err(e) => e.problems(),
    }
}

fn assert_problem(text: &str, needle: &str) {
    let p = problems(text);
    assert!(
        p.iter().any(|p| p.contains(needle)),
        "no problem contains {needle:?}; got:\n{}",
        p.join("\n")
    );
}

const HEAD: &str = "site = \"xa\"\ngateway_id = \"gw1\"\ndata_dir = \"/tmp/anju-test\"\n";

#[test]
fn a_device_with_a_profile_resolves_every_point() {
    let cfg = load(&format!(
        "{HEAD}
[[devices]]
name = \"lev-a1\"
transport = \"tcp\"
address = \"127.0.0.1:5020\"
unit = 3
profile = \"levelling-8ch\"
poll_interval = \"5s\"
tags = {{ structure = \"block-A\" }}
"
    ))
    .expect("valid");
    let d = &cfg.devices[0];
    assert_eq!(d.unit, 3);
    assert_eq!(d.poll_interval, Duration::from_secs(5));
    assert_eq!(d.points.len(), 12);
    let ch1 = &d.points[0];
    assert_eq!(
        (ch1.name.as_str(), ch1.function, ch1.address),
        ("ch1", Function::Input, 0)
    );
    assert_eq!(
        ch1.word_order,
        WordOrder::Cdab,
        "profile default word order applies"
    );
    assert_eq!(ch1.time, Some((40, WordOrder::Cdab)));
    assert_eq!(d.tags.get("structure").map(String::as_str), Some("block-A"));
    assert_eq!(d.max_gap, 10, "profile max_gap applies");
}

#[test]
fn forty_identical_modules_need_forty_short_entries() {
    let mut text = HEAD.to_owned();
    for i in 1..=40 {
        text.push_str(&format!(
            "[[devices]]\nname = \"lev-{i}\"\ntransport = \"rtu\"\nport = \"bus1\"\nunit = {i}\nprofile = \"levelling-8ch\"\n"
        ));
    }
    text.push_str("[[serial_ports]]\nname = \"bus1\"\npath = \"/dev/ttyS1\"\nbaud = 19200\nparity = \"even\"\n");
    let cfg = load(&text).expect("valid");
    assert_eq!(cfg.devices.len(), 40);
    assert!(cfg.devices.iter().all(|d| d.points.len() == 12));
}

/// One Modbus TCP device with one f32 point whose word order is `"ACBD"` (not one of the four).
fn bad_word_order_config() -> String {
    format!(
        "{HEAD}
[[devices]]
name = \"a\"
transport = \"tcp\"
address = \"127.0.0.1:502\"
[[devices.points]]
name = \"p\"
function = \"holding\"
address = 0
type = \"f32\"
quantity = \"settlement\"
word_order = \"ACBD\"
"
    )
}

#[test]
fn a_bad_word_order_names_the_path_and_the_allowed_values() {
    let p = problems(&bad_word_order_config());
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("devices[0].points[0].word_order"), "{}", p[0]);
    assert!(
        p[0].contains("ACBD") && p[0].contains("abcd") && p[0].contains("dcba"),
        "{}",
        p[0]
    );
    assert!(p[0].contains("test.toml"), "{}", p[0]);
}

/// The whole problem line as README §Configuration reference shows it: file, key path, serde's
/// message, and the line of the offending value in the file (counted here from the text).
#[test]
fn a_problem_names_the_file_the_path_and_the_line() {
    let text = bad_word_order_config();
    let line_of = |key: &str| 1 + text.lines().position(|l| l.starts_with(key)).expect("key");
    let p = problems(&text);
    assert_eq!(
        p,
        [format!(
            "{}: devices[0].points[0].word_order: unknown variant `ACBD`, expected one of \
             `abcd`, `cdab`, `badc`, `dcba` (line {})",
            config_dir().join("test.toml").display(),
            line_of("word_order")
        )]
    );
    // An unknown key is named with its own path, at its own line.
    let good = text.replace("\"ACBD\"", "\"cdab\"");
    let fixed = good.replace("\"cdab\"", "\"cdab\"\npoll_interval = \"5s\"");
    let p = problems(&fixed);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains(": devices[0].points[0].poll_interval: unknown field `poll_interval`"),
        "{}",
        p[0]
    );
    let line = 1 + fixed
        .lines()
        .position(|l| l.starts_with("poll_interval"))
        .expect("key");
    assert!(p[0].ends_with(&format!("(line {line})")), "{}", p[0]);
    // A wrong type in an array of tables, and a TOML syntax error with no path.
    let p = problems(&good.replace("address = 0", "address = \"zero\""));
    assert!(
        p[0].contains(": devices[0].points[0].address: invalid type: string \"zero\""),
        "{}",
        p[0]
    );
    // A table or an array where something else is written: serde's own words.
    assert_problem(
        &format!("{HEAD}engine = \"fast\"\n"),
        "test.toml: engine: invalid type: string \"fast\", expected struct EngineConfig (line 4)",
    );
    assert_problem(
        &format!("{HEAD}devices = 5\n"),
        "test.toml: devices: invalid type: integer `5`, expected a sequence (line 4)",
    );
    let p = problems(&format!("{HEAD}site_extra = \n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].ends_with("(line 4)"), "{}", p[0]);
}

#[test]
fn an_unknown_key_is_refused_with_its_path() {
    assert_problem(&format!("{HEAD}\n[[devices]]\nname = \"a\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\nprofile = \"tilt-crack\"\npoll_intervall = \"5s\"\n"), "devices[0]");
    assert_problem(
        &format!("{HEAD}\ncolour = \"red\"\n"),
        "unknown field `colour`",
    );
}

#[test]
fn address_and_type_mistakes_are_explained() {
    let dev = "[[devices]]\nname = \"a\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\n";
    let pt = |extra: &str| {
        format!("{HEAD}\n{dev}[[devices.points]]\nname = \"p\"\nquantity = \"tilt\"\n{extra}\n")
    };
    assert_problem(
        &pt("function = \"holding\"\naddress = 70000\ntype = \"u16\""),
        "devices[0].points[0].address",
    );
    assert_problem(
        &pt("function = \"holding\"\naddress = 65535\ntype = \"f32\""),
        "runs past register 65535",
    );
    assert_problem(
        &pt("function = \"coil\"\naddress = 0\ntype = \"u16\""),
        "use type = \"bool\"",
    );
    assert_problem(
        &pt("function = \"holding\"\naddress = 0\ntype = \"bool\""),
        "needs `bit = 0..15`",
    );
    assert_problem(
        &pt("function = \"holding\"\naddress = 0\ntype = \"bool\"\nbit = 16"),
        "bit 16 is not 0..15",
    );
    assert_problem(
        &pt("function = \"holding\"\naddress = 0\ntype = \"f32\"\ntime_address = 300"),
        "time_address is too far",
    );
    assert_problem(
        &pt("function = \"holding\"\naddress = 0\ntype = \"f32\"\nscale = 0.0"),
        "scale 0 must be",
    );
    assert_problem(
        &pt("function = \"holding\"\naddress = 0\ntype = \"f32\"\nquantity2 = 1"),
        "unknown field `quantity2`",
    );
}

#[test]
fn transport_mistakes_name_the_fix() {
    assert_problem(
        &format!(
            "{HEAD}\n[[devices]]\nname = \"a\"\ntransport = \"tcp\"\nprofile = \"tilt-crack\"\n"
        ),
        "devices[0].address: missing",
    );
    assert_problem(&format!("{HEAD}\n[[devices]]\nname = \"a\"\ntransport = \"rtu\"\nport = \"nope\"\nprofile = \"tilt-crack\"\n"), "no serial port named \"nope\"");
    assert_problem(&format!("{HEAD}\n[[devices]]\nname = \"a\"\ntransport = \"rtu_over_tcp\"\naddress = \"127.0.0.1:4001\"\nunit = 0\nprofile = \"tilt-crack\"\n"), "devices[0].unit: 0 is not a serial slave address");
    assert_problem(&format!("{HEAD}\n[[devices]]\nname = \"a\"\ntransport = \"tcp\"\naddress = \"nowhere\"\nprofile = \"tilt-crack\"\n"), "is not host:port");
    assert_problem(
        &format!("{HEAD}\n[[devices]]\nname = \"a\"\ntransport = \"serial\"\n"),
        "unknown variant `serial`",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let p = problems(&format!(
        "{HEAD}
[[devices]]
name = \"a\"
transport = \"tcp\"
address = \"127.0.0.1:502\"
profile = \"tilt-crack\"
poll_interval = \"10ms\"
retries = 50
[[devices]]
name = \"a\"
transport = \"tcp\"
address = \"127.0.0.1:502\"
profile = \"no-such-profile\"
"
    ));
    let all = p.join("\n");
    assert!(all.contains("devices[0].poll_interval"), "{all}");
    assert!(all.contains("devices[0].retries"), "{all}");
    assert!(
        all.contains("devices[1].name: device name \"a\" is used twice"),
        "{all}"
    );
    assert!(
        all.contains("devices[1].profile: cannot read profile \"no-such-profile\""),
        "{all}"
    );
}

#[test]
fn durations_must_be_written_as_durations() {
    assert_problem(
        &format!("{HEAD}\nsummary_interval = \"often\"\n"),
        "\"often\" is not a duration",
    );
}

#[test]
fn every_profile_in_config_profiles_loads() {
    let dir = config_dir().join("profiles");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("config/profiles exists") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_owned();
        let cfg = load(&format!(
            "{HEAD}\n[[devices]]\nname = \"d\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\nprofile = \"{name}\"\n"
        ))
        .unwrap_or_else(|e| panic!("profile {name}: {e}"));
        assert!(!cfg.devices[0].points.is_empty());
        n += 1;
    }
    assert!(n >= 3, "expected the shipped profiles, found {n}");
}

#[test]
fn every_config_file_in_config_loads() {
    // The example names these variables for its secrets; give them values so that loading it
    // checks everything else. (Set once; no other test reads these names.)
    std::env::set_var("ANJU_INFLUX_TOKEN", "example-token");
    std::env::set_var("ANJU_MQTT_PASSWORD", "example-password");
    let mut n = 0;
    for entry in std::fs::read_dir(config_dir()).expect("config/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
        assert!(
            !cfg.devices.is_empty() || !cfg.mqtt.is_empty(),
            "{} reads nothing",
            path.display()
        );
        let text = describe(&cfg);
        assert!(
            !text.contains("example-token") && !text.contains("example-password"),
            "a secret was printed"
        );
        // `gateway check` accepts every rule of the shipped configs (issue 7 item 8).
        let coverage = super::rule_coverage(&cfg);
        assert!(
            coverage.problems.is_empty(),
            "{}: {:#?}",
            path.display(),
            coverage.problems
        );
        n += 1;
    }
    assert!(
        n >= 2,
        "expected demo.toml and site.example.toml, found {n}"
    );
}

/// An `[[mqtt]]` source and an `[[sinks]]` MQTT sink reading `password_file = <file>`.
fn two_mqtt_clients(file: &Path) -> String {
    format!(
        "{HEAD}
[[mqtt]]
name = \"nodes\"
username = \"gw\"
password_file = {file:?}
[[mqtt.subscriptions]]
name = \"curing\"
topic = \"n/{{node}}/up\"
point = \"t\"
payload = {{ format = \"plain\" }}

[[sinks]]
type = \"mqtt\"
host = \"mqtt.bureau.example\"
client_id = \"anju-xa\"
username = \"gw\"
password_file = {file:?}
",
        file = file.display().to_string()
    )
}

#[test]
fn the_mqtt_source_and_the_mqtt_sink_read_a_password_file_the_same_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mqtt.pass");
    std::fs::write(&file, "  s3cret \r\n").expect("write");
    let cfg = load(&two_mqtt_clients(&file)).expect("both accept the file");
    let source = cfg.mqtt[0].password.as_ref().map(Secret::expose);
    let Some(Sink::Mqtt(sink)) = cfg.sinks.first() else {
        panic!("no mqtt sink: {:?}", cfg.sinks);
    };
    let sink = sink.credentials.as_ref().map(|(_, p)| p.expose());
    assert_eq!(source, Some("s3cret"));
    assert_eq!(sink, source, "the same file gives the same password");

    std::fs::write(&file, "\n").expect("write");
    let p = problems(&two_mqtt_clients(&file));
    let want = format!("{} is empty; write the secret into it", file.display());
    for at in ["mqtt[0].password_file", "sinks[0].password_file"] {
        assert!(
            p.iter().any(|p| p.contains(at) && p.contains(&want)),
            "{at} not refused; got:\n{}",
            p.join("\n")
        );
    }
}

#[test]
fn an_empty_influx_token_file_is_refused_not_taken_as_no_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, " \n").expect("write");
    assert_problem(
        &format!(
            "{HEAD}\n[[mqtt]]\nname = \"n\"\n[[mqtt.subscriptions]]\nname = \"s\"\ntopic = \"a\"\npoint = \"p\"\npayload = {{ format = \"plain\" }}\n[[sinks]]\ntype = \"influxdb\"\nurl = \"http://127.0.0.1:8428\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = {:?}\n",
            file.display().to_string()
        ),
        "sinks[0].token_file: ",
    );
}

#[test]
fn a_host_name_is_kept_for_connect_time_not_resolved_at_load() {
    // `.invalid` never resolves (RFC 2606): DNS being down at boot must not make a config invalid.
    let cfg = load(&format!(
        "{HEAD}\n[[devices]]\nname = \"a\"\ntransport = \"rtu_over_tcp\"\naddress = \"modbus-rtu-gw.invalid:502\"\nprofile = \"tilt-crack\"\n"
    ))
    .expect("a host name loads without a lookup");
    assert_eq!(
        cfg.devices[0].transport,
        Transport::RtuOverTcp(Endpoint::Host("modbus-rtu-gw.invalid".into(), 502))
    );
    let dev = |addr: &str| {
        format!("{HEAD}\n[[devices]]\nname = \"a\"\ntransport = \"tcp\"\naddress = \"{addr}\"\nprofile = \"tilt-crack\"\n")
    };
    assert_problem(&dev("plc.site:0"), "the port must be 1-65535");
    assert_problem(&dev("plc.site:http"), "the port must be 1-65535");
    assert_problem(&dev(":502"), "is neither an IP address");
    assert_problem(&dev("fd00::7:502"), "IPv6 goes in brackets");
    let v6 = load(&dev("[fd00::7]:502")).expect("IPv6 literal");
    assert!(
        matches!(v6.devices[0].transport, Transport::Tcp(Endpoint::Addr(a)) if a.port() == 502)
    );
}

#[test]
fn device_defaults_apply_and_a_device_value_wins() {
    let cfg = load(&format!(
        "{HEAD}
[defaults]
poll_interval = \"30s\"
timeout = \"2s\"
retries = 3
max_backoff = \"10m\"
tags = {{ structure = \"block-A\", contractor = \"c1\" }}

[[devices]]
name = \"a\"
transport = \"tcp\"
address = \"127.0.0.1:502\"
profile = \"tilt-crack\"

[[devices]]
name = \"b\"
transport = \"tcp\"
address = \"127.0.0.1:503\"
profile = \"tilt-crack\"
poll_interval = \"5s\"
retries = 0
tags = {{ structure = \"block-B\" }}
"
    ))
    .expect("valid");
    let (a, b) = (&cfg.devices[0], &cfg.devices[1]);
    assert_eq!(
        (a.poll_interval, a.timeout, a.retries, a.max_backoff),
        (
            Duration::from_secs(30),
            Duration::from_secs(2),
            3,
            Duration::from_secs(600)
        )
    );
    assert_eq!(
        (b.poll_interval, b.timeout, b.retries, b.max_backoff),
        (
            Duration::from_secs(5),
            Duration::from_secs(2),
            0,
            Duration::from_secs(600)
        )
    );
    let tags = |d: &Device| {
        d.tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(tags(a), ["contractor=c1", "structure=block-A"]);
    assert_eq!(
        tags(b),
        ["contractor=c1", "structure=block-B"],
        "tags merge; the device's wins"
    );
}

#[test]
fn a_bad_default_is_reported_once_at_defaults() {
    let p = problems(&format!(
        "{HEAD}\n[defaults]\npoll_interval = \"10ms\"\nretries = 50\n[[devices]]\nname = \"a\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\nprofile = \"tilt-crack\"\n[[devices]]\nname = \"b\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:503\"\nprofile = \"tilt-crack\"\n"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].contains("defaults.poll_interval: 10ms is too short"),
        "{}",
        p[0]
    );
    assert!(
        p[1].contains("defaults.retries: 50 is more than 10"),
        "{}",
        p[1]
    );
}

#[test]
fn unnamed_sinks_get_their_own_type_s_default_name() {
    let cfg = load(&format!(
        "{HEAD}
[[mqtt]]
name = \"n\"
[[mqtt.subscriptions]]
name = \"s\"
topic = \"a\"
point = \"p\"
payload = {{ format = \"plain\" }}

[[sinks]]
type = \"influxdb\"
url = \"http://127.0.0.1:8428\"
org = \"o\"
bucket = \"b\"

[[sinks]]
type = \"mqtt\"
host = \"127.0.0.1\"
client_id = \"anju-xa\"
"
    ))
    .expect("an influxdb and an mqtt sink, both unnamed, load");
    let names: Vec<&str> = cfg.sinks.iter().map(Sink::name).collect();
    assert_eq!(names, ["influxdb", "mqtt-alerts"]);
}

#[test]
fn a_sink_with_a_problem_is_not_also_reported_as_a_duplicate_name() {
    // Before, the name check looked at the last *valid* sink, so an invalid mqtt sink after an
    // influxdb one was refused as a second "influxdb".
    let p = problems(&format!(
        "{HEAD}\n[[mqtt]]\nname = \"n\"\n[[mqtt.subscriptions]]\nname = \"s\"\ntopic = \"a\"\npoint = \"p\"\npayload = {{ format = \"plain\" }}\n\
         [[sinks]]\ntype = \"influxdb\"\nurl = \"http://127.0.0.1:8428\"\norg = \"o\"\nbucket = \"b\"\n\
         [[sinks]]\ntype = \"mqtt\"\nhost = \"127.0.0.1\"\nport = 0\nclient_id = \"anju-xa\"\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("sinks[1].port: 0 is not a port"), "{}", p[0]);
}

#[tokio::test]
async fn a_host_name_is_looked_up_when_connecting() {
    let local = Endpoint::Host("localhost".into(), 502)
        .resolve()
        .await
        .expect("localhost resolves");
    assert!(local.ip().is_loopback() && local.port() == 502, "{local}");
    let literal = Endpoint::parse("192.0.2.7:1502").expect("literal");
    assert_eq!(
        literal.resolve().await.expect("no lookup").to_string(),
        "192.0.2.7:1502"
    );
}

/// A levelling module (level heads, mm, polled every 10 s), a thermistor string (°C, every
/// 5 min), a settlement point written inline (mm) and, with `mqtt`, a plain settlement-plate
/// subscription; then `alerts`.
fn coverage_of(mqtt: bool, alerts: &str) -> super::RuleCoverage {
    let mqtt = if mqtt {
        "
[[mqtt]]
name = \"site\"
address = \"127.0.0.1:1883\"
[[mqtt.subscriptions]]
name = \"plates\"
topic = \"sites/{site}/plates/{point}\"
device = \"plates-east\"
point = \"{point}\"
quantity = \"settlement\"
unit = \"mm\"
payload = { format = \"plain\" }
"
    } else {
        ""
    };
    let cfg = load(&format!(
        "{HEAD}
[[devices]]
name = \"lev-a1\"
transport = \"tcp\"
address = \"127.0.0.1:5020\"
profile = \"levelling-8ch\"
poll_interval = \"10s\"
tags = {{ structure = \"block-A\" }}

[[devices]]
name = \"therm\"
transport = \"tcp\"
address = \"127.0.0.1:5021\"
profile = \"thermistor-16\"
poll_interval = \"5m\"

[[devices]]
name = \"sp\"
transport = \"tcp\"
address = \"127.0.0.1:5022\"
poll_interval = \"1m\"
tags = {{ structure = \"block-A\" }}
[[devices.points]]
name = \"s1\"
function = \"holding\"
address = 0
type = \"f32\"
unit = \"mm\"
quantity = \"settlement\"
[[devices.points]]
name = \"s2\"
function = \"holding\"
address = 2
type = \"f32\"
unit = \"cm\"
quantity = \"settlement\"
{mqtt}
[alerts]
{alerts}"
    ))
    .unwrap_or_else(|e| panic!("valid: {e}"));
    super::rule_coverage(&cfg)
}

fn coverage_problems(c: &super::RuleCoverage) -> Vec<String> {
    c.problems
        .iter()
        .map(|p| format!("{}: {}", p.at, p.message))
        .collect()
}

#[test]
fn check_lists_the_channels_each_rule_matches() {
    let c = coverage_of(
        false,
        "
[[alerts.rules]]
name = \"heads\"
kind = \"absolute\"
select = { kind = \"level\", tags = { structure = \"block-A\" } }
upper = { red = 300.0 }
[[alerts.rules]]
name = \"core-surface\"
kind = \"difference\"
pairs = [{ a = \"therm/t01\", b = \"therm/t02\" }]
upper = { red = 25.0 }
[[alerts.checks]]
select = { device = \"therm\", point = \"t0?\" }
range = { min = -40.0, max = 85.0 }
",
    );
    assert!(c.problems.is_empty(), "{:?}", coverage_problems(&c));
    // The levelling profile's eight level channels (ch1..ch8), nothing else.
    assert!(
        c.text
            .contains("alerts.rules[0] heads: 8 Modbus channels: lev-a1/ch1, lev-a1/ch2,"),
        "{}",
        c.text
    );
    assert!(
        c.text
            .contains("therm/t01 [temperature, °C] − therm/t02 [temperature, °C]"),
        "{}",
        c.text
    );
    // t01..t09 of the 16-channel string.
    assert!(
        c.text
            .contains("alerts.checks[0] range: 9 Modbus channels: therm/t01,"),
        "{}",
        c.text
    );
}

#[test]
fn check_refuses_a_rule_that_matches_nothing_unless_mqtt_could_produce_it() {
    // The example's old mistake: settlement selected on a structure with only level heads
    // (and a settlement point elsewhere).
    let rule = "
[[alerts.rules]]
name = \"settlement-total\"
kind = \"absolute\"
select = { kind = \"settlement\", tags = { structure = \"block-B\" } }
upper = { red = 30.0 }
";
    let c = coverage_of(false, rule);
    assert_eq!(
        coverage_problems(&c),
        vec![
            "alerts.rules[0].select: this rule matches no channel: no configured Modbus point \
              and no MQTT subscription gives one with this kind and these tags; fix `select` to \
              name channels listed by `gateway check`, or remove the rule"
                .to_owned()
        ]
    );
    // The plate subscription gives settlement channels, but never a `structure` tag.
    assert_eq!(coverage_problems(&coverage_of(true, rule)).len(), 1);
    // Without the tag, plates may match: accepted, and said to be known at run time.
    let c = coverage_of(
        true,
        "
[[alerts.rules]]
name = \"plates\"
kind = \"absolute\"
select = { kind = \"settlement\", device = \"plates-*\" }
upper = { red = 30.0 }
[[alerts.rules]]
name = \"not-plates\"
kind = \"absolute\"
select = { kind = \"temperature\", device = \"plates-*\" }
upper = { red = 30.0 }
",
    );
    assert!(
        c.text.contains(
            "alerts.rules[0] plates: no Modbus channel\n      and the MQTT channels of site/plates that match (known at run time)"
        ),
        "{}",
        c.text
    );
    assert_eq!(
        coverage_problems(&c)
            .iter()
            .map(|p| p.split(':').next().unwrap_or_default())
            .collect::<Vec<_>>(),
        vec!["alerts.rules[1].select"]
    );
}

#[test]
fn check_refuses_pairs_of_different_kinds_units_or_heads_for_a_tilt() {
    let c = coverage_of(
        false,
        "
[[alerts.rules]]
name = \"mixed\"
kind = \"difference\"
pairs = [
  { a = \"therm/t01\", b = \"lev-a1/ch1\" },
  { a = \"sp/s1\", b = \"sp/s2\" },
  { a = \"therm/t01\", b = \"nowhere/x\" },
]
upper = { red = 25.0 }
[[alerts.rules]]
name = \"local-tilt\"
kind = \"tilt\"
pairs = [{ a = \"lev-a1/ch1\", b = \"lev-a1/ch2\", distance_m = 8.0 }]
upper = { red = 0.002 }
",
    );
    let got = coverage_problems(&c);
    let at: Vec<&str> = got
        .iter()
        .map(|p| p.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        at,
        vec![
            "alerts.rules[0].pairs[0]",
            "alerts.rules[0].pairs[1]",
            "alerts.rules[0].pairs[2].b",
            "alerts.rules[1].pairs[0].a",
            "alerts.rules[1].pairs[0].b",
        ],
        "{got:#?}"
    );
    assert!(got[0]
        .contains("pairs a temperature channel (therm/t01) with a level channel (lev-a1/ch1)"));
    assert!(got[1].contains("sp/s1 in \"mm\" with sp/s2 in \"cm\""));
    assert!(got[3].contains("\"lev-a1/ch1\" is a level channel; pair two settlement channels"));
    // With MQTT subscriptions an unknown key may be an MQTT channel: checked at run time.
    let c = coverage_of(
        true,
        "
[[alerts.rules]]
name = \"plates-tilt\"
kind = \"tilt\"
pairs = [{ a = \"plates-east/P1\", b = \"sp/s1\", distance_m = 6.0 }]
upper = { red = 0.002 }
",
    );
    assert!(c.problems.is_empty(), "{:?}", coverage_problems(&c));
    assert!(c
        .text
        .contains("plates-east/P1 [MQTT, checked at run time] − sp/s1 [settlement, mm]"));
}

#[test]
fn check_refuses_a_stale_rule_not_longer_than_a_watched_poll_interval() {
    let stale = |after: &str, select: &str| {
        format!(
            "
[[alerts.rules]]
name = \"no-data\"
kind = \"stale\"
select = {select}
after = \"{after}\"
"
        )
    };
    // Levelling every 10 s, settlement every 1 min, thermistors every 5 min.
    let c = coverage_of(false, &stale("5m", "{}"));
    assert_eq!(
        coverage_problems(&c),
        vec![
            "alerts.rules[0].after: 5m is not longer than the poll interval of device therm \
              (5m): the rule would raise between every two readings; set `after` to several \
              poll intervals (e.g. 15m), or narrow `select` to the devices of one class"
                .to_owned()
        ]
    );
    let c = coverage_of(false, &stale("1m", "{}"));
    assert!(
        coverage_problems(&c)[0].contains("device therm (5m) and 1 other device(s)"),
        "{:?}",
        coverage_problems(&c)
    );
    assert!(coverage_of(false, &stale("15m", "{}")).problems.is_empty());
    assert!(coverage_of(false, &stale("1m", "{ device = \"lev-a1\" }"))
        .problems
        .is_empty());
}

#[test]
fn check_knows_the_kinds_a_json_subscription_can_give() {
    // Quantity `temperature`, `rh` as humidity, and payload kinds mapped to settlement.
    let cfg = load(&format!(
        "{HEAD}
[[mqtt]]
name = \"site\"
address = \"127.0.0.1:1883\"
[[mqtt.subscriptions]]
name = \"nodes\"
topic = \"sites/{{site}}/nodes/{{device}}/up\"
quantity = \"temperature\"
unit = \"°C\"
[mqtt.subscriptions.payload]
format = \"json\"
readings = \"readings\"
sensor = \"sensor\"
value = \"value\"
kind = \"kind\"
kinds = {{ sett = \"settlement\" }}
sensors = {{ rh = {{ quantity = \"humidity\", unit = \"%\" }} }}

[alerts]
[[alerts.rules]]
name = \"temperature\"
kind = \"absolute\"
select = {{ kind = \"temperature\" }}
upper = {{ red = 85.0 }}
[[alerts.rules]]
name = \"settlement\"
kind = \"absolute\"
select = {{ kind = \"settlement\" }}
upper = {{ red = 30.0 }}
[[alerts.checks]]
select = {{ kind = \"humidity\" }}
range = {{ min = 0.0, max = 100.0 }}
[[alerts.rules]]
name = \"pore-pressure\"
kind = \"absolute\"
select = {{ kind = \"pore_pressure\" }}
upper = {{ red = 100.0 }}
"
    ))
    .unwrap_or_else(|e| panic!("valid: {e}"));
    let c = super::rule_coverage(&cfg);
    assert_eq!(
        c.problems.iter().map(|p| p.at.as_str()).collect::<Vec<_>>(),
        vec!["alerts.rules[2].select"],
        "only the pore pressure rule matches nothing:\n{}",
        c.text
    );
}

#[test]
fn an_invalid_pour_is_refused_naming_its_path_and_the_fix() {
    let text = format!(
        "{HEAD}
[[mixes]]
name = \"c30\"
design_strength_mpa = 30.0
datum_temperature = 5.0
activation_energy = 40.0
curve = {{ form = \"hyperbolic\", su_mpa = 40.0, k_per_h = 0.05, t0_h = 4.0 }}

[[pours]]
name = \"raft\"
element = \"A栋 筏板\"
placed_at = \"2026-11-30T08:00:00+08:00\"
mix = \"c35\"
sensors = {{ surface = {{ channel = \"therm/t02\" }} }}
"
    );
    let p = problems(&text);
    for needle in [
        "test.toml: mixes[0].datum_temperature: 5 is outside -10 to 0 °C",
        "test.toml: mixes[0].activation_energy: 40 is outside 20000 to 80000 J/mol; write E in J/mol",
        "test.toml: pours[0].mix: unknown mix \"c35\"; the [[mixes]] are [\"c30\"]",
        "test.toml: pours[0].sensors.core: missing: a pour needs its core sensor(s)",
    ] {
        assert!(
            p.iter().any(|p| p.contains(needle)),
            "no problem contains {needle:?}; got:\n{}",
            p.join("\n")
        );
    }
}

#[test]
fn a_pour_brings_its_gb_50496_rules_into_the_rule_set() {
    let cfg = load(&format!(
        "{HEAD}
[[mixes]]
name = \"c30\"
design_strength_mpa = 30.0
curve = {{ form = \"logarithmic\", a_mpa = -20.0, b_mpa = 10.0 }}

[[pours]]
name = \"raft\"
element = \"A栋 筏板\"
placed_at = \"2026-11-30T08:00:00+08:00\"
mix = \"c30\"
sensors = {{ core = {{ channel = \"therm/t01\" }} }}
"
    ))
    .expect("valid");
    let names: Vec<&str> = cfg
        .rules
        .channel_rules
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    // The four GB 50496 rules (their names and limits: engine/curing/tests.rs), validated with
    // the file's own rules.
    assert_eq!(names.iter().filter(|n| n.starts_with("raft/")).count(), 4);
    assert_eq!(cfg.pours.pours[0].mix.datum, 0.0);
    assert_eq!(cfg.pours.pours[0].mix.activation_energy, 40_000.0);
}

#[test]
fn a_pour_may_not_take_the_name_of_a_derived_block() {
    assert_problem(
        &format!(
            "{HEAD}
[[derived]]
name = \"raft\"
kind = \"mean\"
select = {{ kind = \"temperature\" }}

[[mixes]]
name = \"c30\"
design_strength_mpa = 30.0
curve = {{ form = \"logarithmic\", a_mpa = -20.0, b_mpa = 10.0 }}

[[pours]]
name = \"raft\"
element = \"A栋 筏板\"
placed_at = \"2026-11-30T08:00:00+08:00\"
mix = \"c30\"
sensors = {{ core = {{ channel = \"therm/t01\" }} }}
"
        ),
        "pours[0].name: \"raft\" is also the name of a [[derived]] block",
    );
}

#[test]
fn check_judges_a_pours_sensors_not_its_generated_rules() {
    let c = coverage_of(
        false,
        "
[[mixes]]
name = \"c30\"
design_strength_mpa = 30.0
curve = { form = \"logarithmic\", a_mpa = -20.0, b_mpa = 10.0 }

[[pours]]
name = \"slab\"
element = \"B栋 楼板\"
placed_at = \"2026-11-30T08:00:00+08:00\"
mix = \"c30\"
sensors = { core = { channel = \"therm/t01\" }, surface = { channel = \"therm/t99\" } }
",
    );
    assert_eq!(
        coverage_problems(&c),
        ["pours[0].sensors.surface: this pour sensor matches no channel: no configured Modbus point and no MQTT subscription gives one with this kind and these tags; fix `sensors.surface` to name channels listed by `gateway check`, or remove the pour sensor"]
    );
    assert!(
        c.text
            .contains("pours[0].sensors.core slab: 1 Modbus channel: therm/t01"),
        "{}",
        c.text
    );
    assert!(
        c.text
            .contains("slab/core-surface: the pour's GB 50496-2018 §3.0.4 rule"),
        "{}",
        c.text
    );
}

#[test]
fn the_gateway_logs_in_to_its_own_broker_with_one_of_its_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pass = dir.path().join("nodes.pass");
    std::fs::write(&pass, "s3cret\n").expect("write");
    let wrong = dir.path().join("wrong.pass");
    std::fs::write(&wrong, "guess\n").expect("write");
    let text = |login: &str| {
        format!(
            "{HEAD}[embedded_broker]\nlisten = \"0.0.0.0:18830\"\n\
             [[embedded_broker.users]]\nusername = \"nodes\"\npassword_file = \"{}\"\n\
             [[mqtt]]\nname = \"own\"\naddress = \"127.0.0.1:18830\"\n{login}\n\
             [[mqtt.subscriptions]]\nname = \"n\"\ntopic = \"n/{{device}}/{{p}}\"\npoint = \"{{p}}\"\npayload = {{ format = \"plain\" }}\n",
            pass.display()
        )
    };
    let needle =
        "test.toml: mqtt[0].username: this source reads the embedded broker, which has users";
    assert_problem(&text(""), needle);
    assert_problem(
        &text(&format!(
            "username = \"nodes\"\npassword_file = \"{}\"",
            wrong.display()
        )),
        needle,
    );
    let cfg = load(&text(&format!(
        "username = \"nodes\"\npassword_file = \"{}\"",
        pass.display()
    )))
    .expect("valid");
    let broker = cfg.embedded_broker.expect("broker");
    assert_eq!(broker.users.len(), 1);
    // Through the broker's TLS listener, the same check.
    let pki = crate::tls::tests::TestPki::new();
    let over_tls = text("")
        .replace(
            "address = \"127.0.0.1:18830\"",
            &format!(
                "address = \"127.0.0.1:18883\"\ntls = {{ ca_file = \"{}\" }}",
                pki.path("ca.pem").display()
            ),
        )
        .replace(
            "listen = \"0.0.0.0:18830\"",
            &format!(
                "listen = \"0.0.0.0:18830\"\ntls = {{ listen = \"0.0.0.0:18883\", cert_file = \"{}\", key_file = \"{}\" }}",
                pki.path("server.pem").display(),
                pki.path("server.key").display()
            ),
        );
    assert_problem(&over_tls, needle);
    // Without users, only loopback.
    assert_problem(
        &format!("{HEAD}[embedded_broker]\nlisten = \"0.0.0.0:1883\"\n"),
        "test.toml: embedded_broker.listen: 0.0.0.0:1883 can be reached from the site network, but the broker has no users",
    );
}

#[test]
fn nan_and_inf_thresholds_reach_the_rules_check_and_are_refused_by_name() {
    // TOML's `nan` and `inf` are floats (TOML 1.0 §Float); the reader passes them on as toml
    // does, and the rule's own check names the key, instead of a parse error about overflow.
    for value in ["nan", "+inf", "-inf"] {
        assert_problem(
            &format!(
                "{HEAD}[alerts]\n[[alerts.rules]]\nname = \"x\"\nkind = \"absolute\"\n\
                 select = {{ kind = \"settlement\" }}\nupper = {{ alarm = {value} }}\n"
            ),
            "test.toml: alerts.rules[0].upper.alarm: must be a finite number",
        );
    }
    // A finite literal beyond f64 is still a parse error at its key.
    assert_problem(
        &format!(
            "{HEAD}[alerts]\n[[alerts.rules]]\nname = \"x\"\nkind = \"absolute\"\n\
             select = {{ kind = \"settlement\" }}\nupper = {{ alarm = 1e400 }}\n"
        ),
        "alerts.rules[0].upper.alarm",
    );
}
