//! Configuration of the Modbus output sink: the raw TOML shape ([`ModbusOutputConfig`]), its
//! validated form ([`ResolvedModbusOutput`]) and the check against the configured devices
//! ([`check_device`]).
//!
//! Owns the defaults ([`DEFAULT_LEVEL`], [`DEFAULT_REASSERT_INTERVAL`]) and which alerts hold
//! the output ([`AlertFilter`]). It does not write anything (see [`super::sink`]).

use std::time::Duration;

use serde::Deserialize;

use crate::alert::{Alert, AlertKind, Level};
use crate::config::{Problem, Problems};
use crate::sinks::fmt_dur;
use crate::sources::modbus::config::{Device, Function};
use crate::sources::modbus::write::WriteTarget;

/// Default sink name (the spool cursor is stored under it).
pub const DEFAULT_NAME: &str = "siren";
/// Default lowest level that sounds the output: red, 警报 (the alarm value is reached;
/// docs/DOMAIN.md §Levels). A siren for every caution would soon be ignored.
pub const DEFAULT_LEVEL: Level = Level::Red;
/// Default interval at which the wanted state is written again although it did not change, so
/// that a relay module power-cycled on site (coils back to off) sounds again within a minute.
pub const DEFAULT_REASSERT_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest re-assert interval: below it the writes would crowd the bus's polls.
pub const MIN_REASSERT_INTERVAL: Duration = Duration::from_secs(1);
pub use crate::sinks::{DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX};

/// `[[sinks]]` entry of type `modbus_output`, as written in the TOML.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusOutputConfig {
    /// Name of the sink; also its cursor name in the spool. Default [`DEFAULT_NAME`].
    #[serde(default = "default_name")]
    pub name: String,
    /// The Modbus device (`[[devices]]` name) the siren, beacon or relay is wired to.
    pub device: String,
    /// The coil (0-based address) switched on while an alert holds the output (FC 05).
    #[serde(default)]
    pub coil: Option<u16>,
    /// Or the holding register (0-based address) written (FC 06).
    #[serde(default)]
    pub register: Option<u16>,
    /// The register value while an alert holds the output. Default 1.
    #[serde(default)]
    pub on_value: Option<u16>,
    /// The register value when none does. Default 0.
    #[serde(default)]
    pub off_value: Option<u16>,
    /// The lowest alert level that holds the output. Default [`DEFAULT_LEVEL`].
    #[serde(default)]
    pub level: Option<Level>,
    /// Alert kinds that hold it. Default `["quality"]`.
    #[serde(default)]
    pub kinds: Option<Vec<AlertKind>>,
    /// Only alerts of these rules hold it; default every rule.
    #[serde(default)]
    pub rules: Option<Vec<String>>,
    /// Only alerts of channels with these `structure` tags hold it; default every structure.
    #[serde(default)]
    pub structures: Option<Vec<String>>,
    /// Write the wanted state again this often. Default [`DEFAULT_REASSERT_INTERVAL`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub reassert_interval: Option<Duration>,
    /// First wait after a failed write. Default [`DEFAULT_RETRY_INITIAL`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub retry_initial: Option<Duration>,
    /// Longest wait between retries. Default [`DEFAULT_RETRY_MAX`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub retry_max: Option<Duration>,
}

fn default_name() -> String {
    DEFAULT_NAME.to_owned()
}

/// The output and its two states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A coil: on while held, off when not.
    Coil(u16),
    /// A holding register with its two values.
    Register {
        /// 0-based address.
        address: u16,
        /// Value while held.
        on: u16,
        /// Value when not.
        off: u16,
    },
}

impl Output {
    /// The write that puts the output in state `held`.
    #[must_use]
    pub const fn write(self, held: bool) -> WriteTarget {
        match self {
            Self::Coil(address) => WriteTarget::Coil { address, on: held },
            Self::Register { address, on, off } => WriteTarget::Register {
                address,
                value: if held { on } else { off },
            },
        }
    }

    /// The register table written.
    #[must_use]
    pub const fn function(self) -> Function {
        match self {
            Self::Coil(_) => Function::Coil,
            Self::Register { .. } => Function::Holding,
        }
    }

    /// The 0-based address.
    #[must_use]
    pub const fn address(self) -> u16 {
        match self {
            Self::Coil(a) | Self::Register { address: a, .. } => a,
        }
    }
}

/// Which alert events hold the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFilter {
    /// Lowest level.
    pub level: Level,
    /// Kinds.
    pub kinds: Vec<AlertKind>,
    /// Rules; `None`: every rule.
    pub rules: Option<Vec<String>>,
    /// Structures; `None`: every structure (and alerts without one).
    pub structures: Option<Vec<String>>,
}

impl AlertFilter {
    /// True when `alert` (its latest event) holds the output: active, not acknowledged (消警
    /// releases it; a later level change asks for attention again), at or above the level, of
    /// a configured kind, rule and structure.
    #[must_use]
    pub fn holds(&self, alert: &Alert) -> bool {
        use crate::alert::AlertState;
        alert.is_active()
            && alert.state != AlertState::Acknowledged
            && alert.level >= self.level
            && self.kinds.contains(&alert.kind)
            && self.rules.as_ref().is_none_or(|r| r.contains(&alert.rule))
            && self
                .structures
                .as_ref()
                .is_none_or(|s| alert.structure.as_ref().is_some_and(|st| s.contains(st)))
    }
}

/// The validated sink configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModbusOutput {
    /// Sink name (spool cursor name, metric label, log field).
    pub name: String,
    /// The device.
    pub device: String,
    /// The output.
    pub output: Output,
    /// Which alerts hold it.
    pub filter: AlertFilter,
    /// Re-assert interval.
    pub reassert_interval: Duration,
    /// First retry wait.
    pub retry_initial: Duration,
    /// Retry wait ceiling.
    pub retry_max: Duration,
}

impl ModbusOutputConfig {
    /// Apply defaults and check every value on its own; `path` is where this entry sits in the
    /// config, e.g. `sinks[2]`. The device is checked against the devices by [`check_device`].
    ///
    /// # Errors
    /// Every problem found, e.g. `sinks[2].coil: set either coil or register, not both`.
    pub fn validate(&self, path: &str) -> Result<ResolvedModbusOutput, Vec<Problem>> {
        let mut p = Problems::default();
        let at = |field: &str| format!("{path}.{field}");
        if self.name.trim().is_empty() {
            p.push(
                at("name"),
                "must not be empty; it names the sink's cursor in the spool",
            );
        }
        if self.device.trim().is_empty() {
            p.push(
                at("device"),
                "name the [[devices]] entry the siren or relay is wired to",
            );
        }
        let output = match (self.coil, self.register) {
            (Some(c), None) => {
                if self.on_value.is_some() || self.off_value.is_some() {
                    p.push(
                        at("on_value"),
                        "on_value and off_value are for a register; a coil is on or off: remove them",
                    );
                }
                Some(Output::Coil(c))
            }
            (None, Some(r)) => {
                let (on, off) = (self.on_value.unwrap_or(1), self.off_value.unwrap_or(0));
                if on == off {
                    p.push(
                        at("on_value"),
                        format!(
                            "on_value and off_value are both {on}; the output would never change"
                        ),
                    );
                }
                Some(Output::Register {
                    address: r,
                    on,
                    off,
                })
            }
            (Some(_), Some(_)) => {
                p.push(
                    at("coil"),
                    "set either coil (FC 05) or register (FC 06), not both",
                );
                None
            }
            (None, None) => {
                p.push(
                    at("coil"),
                    "the output is missing: set coil = <0-based address> (a relay) or register = <address> with on_value/off_value",
                );
                None
            }
        };
        let kinds = self
            .kinds
            .clone()
            .unwrap_or_else(|| vec![AlertKind::Quality]);
        if kinds.is_empty() || kinds.iter().all(|k| *k == AlertKind::Notice) {
            p.push(
                at("kinds"),
                "no alert kind that can be active: list \"quality\" and/or \"device_fault\" (a notice is never active)",
            );
        }
        for (field, list) in [("rules", &self.rules), ("structures", &self.structures)] {
            if list.as_ref().is_some_and(Vec::is_empty) {
                p.push(
                    at(field),
                    "an empty list holds the output for nothing; remove the key to take every one",
                );
            }
        }
        let reassert_interval = self.reassert_interval.unwrap_or(DEFAULT_REASSERT_INTERVAL);
        if reassert_interval < MIN_REASSERT_INTERVAL {
            p.push(
                at("reassert_interval"),
                format!(
                    "must be at least {}; the default is {}",
                    fmt_dur(MIN_REASSERT_INTERVAL),
                    fmt_dur(DEFAULT_REASSERT_INTERVAL)
                ),
            );
        }
        let retry = crate::sinks::retry_bounds(self.retry_initial, self.retry_max)
            .map_err(|(field, m)| p.push(at(field), m))
            .ok();
        let resolved = match (output, retry) {
            (Some(output), Some((retry_initial, retry_max))) => Some(ResolvedModbusOutput {
                name: self.name.clone(),
                device: self.device.clone(),
                output,
                filter: AlertFilter {
                    level: self.level.unwrap_or(DEFAULT_LEVEL),
                    kinds,
                    rules: self.rules.clone(),
                    structures: self.structures.clone(),
                },
                reassert_interval,
                retry_initial,
                retry_max,
            }),
            _ => None,
        };
        p.finish(path, resolved)
    }
}

/// Check the sink's device against the configured devices: it exists, and no read-only point of
/// it sits on the output's address. Done on the raw entry, so that its other mistakes are
/// reported together with these. Returns `(field, message)` for every problem.
#[must_use]
pub fn check_device(sink: &ModbusOutputConfig, devices: &[Device]) -> Vec<(&'static str, String)> {
    let Some(device) = devices.iter().find(|d| d.name == sink.device) else {
        let known: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        return vec![(
            "device",
            format!(
                "no Modbus device \"{}\"; the output must be a [[devices]] entry (configured: {})",
                sink.device,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        )];
    };
    // Without exactly one of coil and register there is no address to check (`validate` says so).
    let (field, function, address) = match (sink.coil, sink.register) {
        (Some(c), None) => ("coil", Function::Coil, c),
        (None, Some(r)) => ("register", Function::Holding, r),
        _ => return Vec::new(),
    };
    device
        .points
        .iter()
        .find(|p| {
            p.function == function
                && (u32::from(p.address)..u32::from(p.address) + u32::from(p.width()))
                    .contains(&u32::from(address))
        })
        .filter(|p| !p.writable)
        .map(|point| {
            (
                field,
                format!(
                    "address {address} is point \"{}\" of device \"{}\", which is not writable; pick the relay's address or declare the point `writable = true` in its profile",
                    point.name, device.name
                ),
            )
        })
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, Sink};

    /// The devices every case shares: the relay module on TCP, a logger on an RTU line.
    const HEAD: &str = r#"site = "xa"
gateway_id = "gw1"
data_dir = "/tmp/anju-test"

[[serial_ports]]
name = "bus1"
path = "/dev/ttyS1"

[[devices]]
name = "site-io"
transport = "tcp"
address = "127.0.0.1:5020"
profile = "io-relay"

[[devices]]
name = "lev"
transport = "rtu"
port = "bus1"
unit = 2
profile = "levelling-8ch"

[[devices]]
name = "tc"
transport = "tcp"
address = "127.0.0.1:5021"
profile = "tilt-crack"
"#;

    /// Validate HEAD plus one `[[sinks]]` body as `config/test.toml` (profiles resolve to
    /// `config/profiles`): the problems, or none.
    fn problems(sink: &str) -> Vec<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/test.toml");
        match Config::from_str_at(
            &format!("{HEAD}\n[[sinks]]\ntype = \"modbus_output\"\n{sink}"),
            &path,
        ) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems(),
        }
    }

    fn assert_problem(sink: &str, needle: &str) {
        let p = problems(sink);
        assert!(
            p.iter().any(|m| m.contains(needle)),
            "no problem contains {needle:?}; got {p:#?}"
        );
    }

    #[test]
    fn a_siren_on_a_relay_coil_resolves_with_its_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/test.toml");
        let cfg = Config::from_str_at(
            &format!(
                "{HEAD}\n[[sinks]]\ntype = \"modbus_output\"\ndevice = \"site-io\"\ncoil = 0\n"
            ),
            &path,
        )
        .expect("valid");
        let Some(Sink::ModbusOutput(s)) = cfg.sinks.first() else {
            panic!("a modbus output sink")
        };
        assert_eq!(s.name, super::DEFAULT_NAME);
        assert_eq!(s.output, super::Output::Coil(0));
        assert_eq!(s.filter.level, super::DEFAULT_LEVEL);
        assert_eq!(s.filter.kinds, [crate::alert::AlertKind::Quality]);
        assert_eq!(s.reassert_interval, super::DEFAULT_REASSERT_INTERVAL);
    }

    #[test]
    fn the_device_address_and_level_are_checked_with_their_path_and_fix() {
        assert_problem(
            "device = \"nope\"\ncoil = 0\n",
            "sinks[0].device: no Modbus device \"nope\"",
        );
        // Every mistake of the entry at once.
        let both = problems("device = \"nope\"\nregister = 0\non_value = 2\noff_value = 2\n");
        assert!(
            both.iter().any(|p| p.contains("sinks[0].device"))
                && both.iter().any(|p| p.contains("sinks[0].on_value")),
            "{both:#?}"
        );
        // A relay on an RTU line is written through that line's poller.
        assert!(problems("device = \"lev\"\ncoil = 0\n").is_empty());
        // Holding 0 of the relay module is its writable sampling interval.
        assert!(
            problems("device = \"site-io\"\nregister = 0\non_value = 300\noff_value = 60\n")
                .is_empty()
        );
        assert_problem(
            "device = \"site-io\"\ncoil = 0\nregister = 1\n",
            "sinks[0].coil: set either coil (FC 05) or register (FC 06), not both",
        );
        assert_problem(
            "device = \"site-io\"\n",
            "sinks[0].coil: the output is missing",
        );
        // Serde's internally tagged enums lose the key path below the entry; the line and the
        // allowed values are named.
        assert_problem(
            "device = \"site-io\"\ncoil = 0\nlevel = \"purple\"\n",
            "sinks[0]: unknown variant `purple`, expected one of `blue`, `yellow`, `orange`, `red`",
        );
        assert_problem(
            "device = \"site-io\"\ncoil = 0\nreassert_interval = \"10ms\"\n",
            "sinks[0].reassert_interval: must be at least 1s",
        );
        assert_problem(
            "device = \"site-io\"\nregister = 0\non_value = 5\noff_value = 5\n",
            "the output would never change",
        );
        assert_problem(
            "device = \"site-io\"\ncoil = 0\nkinds = [\"notice\"]\n",
            "sinks[0].kinds: no alert kind that can be active",
        );
    }

    #[test]
    fn a_read_only_point_on_the_output_address_is_refused() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/test.toml");
        let text =
            format!("{HEAD}\n[[sinks]]\ntype = \"modbus_output\"\ndevice = \"tc\"\nregister = 0\n");
        // tilt-crack maps only input registers: holding 0 is free, accepted.
        assert!(Config::from_str_at(&text, &path).is_ok());
        let inline = format!(
            "{HEAD}\n[[devices]]\nname = \"relays\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:5022\"\n\
             [[devices.points]]\nname = \"pump\"\nfunction = \"coil\"\naddress = 3\ntype = \"bool\"\nquantity = \"status\"\n\
             \n[[sinks]]\ntype = \"modbus_output\"\ndevice = \"relays\"\ncoil = 3\n"
        );
        let Err(e) = Config::from_str_at(&inline, &path) else {
            panic!("a read-only coil was accepted")
        };
        let p = e.problems();
        assert!(
            p.iter().any(|m| m.contains(
                "sinks[0].coil: address 3 is point \"pump\" of device \"relays\", which is not writable"
            )),
            "{p:#?}"
        );
    }
}
