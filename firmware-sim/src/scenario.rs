//! Scenario files (`config/sim/*.toml`): what site the simulator plays.
//!
//! Owns the scenario format (raw serde structs with `deny_unknown_fields`) and its validation
//! into a [`Scenario`] with every profile resolved, one function per section (top level,
//! Modbus TCP, RTU buses, JSON nodes, CIGEM devices, faults) called in file order. Errors are
//! [`ScenarioError`]s, which always name the file and the path of the offending entry
//! (`modbus_tcp[1].profile: no profile "foo" in config/profiles`); the error types live in
//! [`crate::validation`], below every layer, and are re-exported here. The model, mapping,
//! fault and profile tables are validated by their own modules ([`crate::physics`],
//! [`crate::sensor`], [`crate::fault`], [`crate::profile`]), which do not import this one; this
//! module adds the cross-section rules (unique device names, fault targets). It starts nothing
//! ([`crate::site`]).
//!
//! ```toml
//! name = "basic"
//! seed = 20261129
//! sample_interval = "1s"          # whole seconds, >= 1 s
//! site = "site-01"
//!
//! [[modbus_tcp]]
//! name = "lvl-1"                  # device name: the truth's `device`
//! profile = "levelling-8ch"       # config/profiles/<profile>.toml
//! unit = 1
//! listen = "127.0.0.1:0"          # default; port 0 = any free port
//! strict_map = false              # true: reads touching unmapped registers get exception 02
//!
//! [[modbus_rtu]]
//! bus = "rs485-1"
//! tty = "/dev/ttyUSB0"            # optional: absent = a socat pty pair made at start
//! baud = 9600
//! [[modbus_rtu.slaves]]
//! name = "therm-1"
//! profile = "thermistor-16"
//! unit = 1
//!
//! [[json_nodes]]
//! name = "curing-a"
//! topic = "sites/{site}/nodes/{node}/up"   # placeholders: {site} {node} ({sensor}: single only)
//! message = "batch"               # batch: one message with all readings; single: one per sensor
//! every = 1                       # publish every N sample ticks
//! [[json_nodes.sensors]]
//! id = "t1"
//! quantity = "temperature"
//! unit = "°C"
//! decimals = 2                    # values are rounded to this many decimals
//!
//! [[cigem]]
//! device_id = "51010400001"
//! data_every = 1                  # type-2 data message every N sample ticks
//! status_every = 10               # type-1 status message every N sample ticks
//! [[cigem.points]]
//! id = "L1_LF_1"
//! kind = "crack"
//! ```
//!
//! # Physics, mappings, faults (all optional; files without them behave as before)
//! ```toml
//! duration = "72h"                # optional: how long a run lasts (the CLI stops there)
//!
//! [[settlement]]                  # crate::physics::settlement: channels <name>.<point>, ...
//! name = "block-a"
//! # [[curing]] crate::physics::curing, [[slope]] crate::physics::slope
//!
//! [[modbus_tcp]]
//! name = "block-a-lvl"
//! profile = "levelling-8ch"
//! unit = 1
//! status_points = "clear"         # random (default) | clear: 0 unless a status_flag fault
//! # point -> channel: a name, or a table with gain, offset, sensor, noise, resolution and, for
//! # a levelling cell, liquid_temperature (a mapping: the head is read at the liquid's density)
//! channels = { ch1 = "block-a.A1", ch2 = { channel = "block-a.A2", offset = 250.0 } }
//!
//! [[json_nodes.sensors]]
//! id = "core"
//! quantity = "temperature"
//! channel = "raft-a.core"
//!
//! [json_nodes.will]               # this node gets its own MQTT connection with a last will
//! topic = "sites/{site}/nodes/{node}/status"
//! payload = "offline"
//! online_payload = "online"       # optional, published (QoS 0) on every connect
//! retain = true
//!
//! [[cigem.points]]
//! id = "L1_GP_1"
//! kind = "gnss"
//! fields = { gpsTotalX = "north.G1.east", gpsTotalY = "north.G1.north", gpsTotalZ = "north.G1.up" }
//!
//! [[faults]]                      # crate::fault: kind, device, point, start, end, ...
//! kind = "stuck"
//! device = "block-a-lvl"
//! point = "ch3"
//! start = "2h"
//! end = "6h"
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::fault::{check_target, FaultSpec, RawFault, TargetKind};
use crate::physics::{self, Physics, RawModels};
use crate::profile::{DataType, Profile, ProfileSet};
use crate::quantity::Quantity;
use crate::sensor::{ChannelRef, RawMapping, SensorKind};
use crate::truth::FaultKind;
use crate::validation::{parse_toml, Invalid};

pub use crate::validation::ScenarioError;

/// Longest sample interval: one day (the CIGEM firmware's sample interval is 1-86 400 s,
/// docs/DOMAIN.md §CIGEM).
pub const MAX_SAMPLE_INTERVAL_S: u64 = 86_400;
/// Most decimals an MQTT value may carry (beyond this the JSON number stops being a clean
/// decimal the gateway and the truth agree on).
pub const MAX_DECIMALS: u8 = 6;
/// Modbus over serial line V1.02 §2.2: unit ids 1-247 address one slave (0 is broadcast).
pub const MAX_UNIT_ID: u8 = 247;
/// Default listen address of a Modbus TCP slave: loopback, any free port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:0";
/// Default serial speed.
pub const DEFAULT_BAUD: u32 = 9600;
/// Default CIGEM uplink topic (OneNET-style, docs/DOMAIN.md §CIGEM).
pub const DEFAULT_CIGEM_TOPIC: &str = "$dp";
/// Default number of sample ticks between two CIGEM status messages.
pub const DEFAULT_STATUS_EVERY: u32 = 10;
/// Default decimals of an MQTT value (0.01 resolution).
pub const DEFAULT_DECIMALS: u8 = 2;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    seed: u64,
    sample_interval: String,
    site: String,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    settlement: Vec<physics::settlement::RawSettlement>,
    #[serde(default)]
    curing: Vec<physics::curing::RawCuring>,
    #[serde(default)]
    slope: Vec<physics::slope::RawSlope>,
    #[serde(default)]
    modbus_tcp: Vec<RawTcpSlave>,
    #[serde(default)]
    modbus_rtu: Vec<RawRtuBus>,
    #[serde(default)]
    json_nodes: Vec<RawJsonNode>,
    #[serde(default)]
    cigem: Vec<RawCigem>,
    #[serde(default)]
    faults: Vec<RawFault>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcpSlave {
    name: String,
    profile: String,
    unit: u8,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    strict_map: bool,
    #[serde(default)]
    status_points: StatusPoints,
    #[serde(default)]
    channels: BTreeMap<String, RawMapping>,
}

/// What the status points (quantity `status`, not coils) of a Modbus device read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusPoints {
    /// An occasional random flag (2 % of the time, held 5 samples): the first simulator's
    /// behaviour, kept for the existing scenarios.
    #[default]
    Random,
    /// 0, except while a `status_flag` fault is active: a healthy device.
    Clear,
}

/// A last will: the node's own MQTT connection carries it, the broker publishes it when the
/// connection drops without a DISCONNECT (MQTT 3.1.1 §3.1.2.5).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWill {
    topic: String,
    payload: String,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    online_payload: Option<String>,
}

/// A validated last will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic, placeholders resolved.
    pub topic: String,
    /// Will payload.
    pub payload: String,
    /// Retained (will and online message alike).
    pub retain: bool,
    /// Published at QoS 0 on every (re)connect, if set.
    pub online_payload: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRtuBus {
    bus: String,
    #[serde(default)]
    tty: Option<PathBuf>,
    #[serde(default = "default_baud")]
    baud: u32,
    slaves: Vec<RawRtuSlave>,
}

const fn default_baud() -> u32 {
    DEFAULT_BAUD
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRtuSlave {
    name: String,
    profile: String,
    unit: u8,
    #[serde(default)]
    strict_map: bool,
    #[serde(default)]
    status_points: StatusPoints,
    #[serde(default)]
    channels: BTreeMap<String, RawMapping>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJsonNode {
    name: String,
    topic: String,
    message: MessageForm,
    #[serde(default = "one")]
    every: u32,
    sensors: Vec<RawJsonSensor>,
    #[serde(default)]
    will: Option<RawWill>,
}

const fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJsonSensor {
    id: String,
    quantity: Quantity,
    #[serde(default)]
    unit: String,
    #[serde(default = "default_decimals")]
    decimals: u8,
    #[serde(default)]
    channel: Option<RawMapping>,
}

const fn default_decimals() -> u8 {
    DEFAULT_DECIMALS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCigem {
    device_id: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default = "one")]
    data_every: u32,
    #[serde(default = "default_status_every")]
    status_every: u32,
    points: Vec<RawCigemPoint>,
    #[serde(default)]
    will: Option<RawWill>,
}

const fn default_status_every() -> u32 {
    DEFAULT_STATUS_EVERY
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCigemPoint {
    id: String,
    kind: CigemKind,
    #[serde(default)]
    channel: Option<RawMapping>,
    #[serde(default)]
    fields: BTreeMap<String, RawMapping>,
}

/// How a JSON node packs readings into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageForm {
    /// One message per tick with every sensor:
    /// `{"ts":"<ISO-8601 ms>","readings":[{"sensor":..,"value":..,"unit":..},..]}`.
    Batch,
    /// One message per sensor per tick: `{"sensor":..,"value":..,"ts":<epoch ms>}`.
    Single,
}

/// CIGEM data-point kinds (docs/DOMAIN.md §CIGEM field dictionary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CigemKind {
    /// L1 LF crack meter: a scalar, cumulative opening in mm.
    Crack,
    /// L1 QJ tilt: `X`, `Y`, `Z` (absolute °), `angle` (°), `AZI` (0-360°).
    Tilt,
    /// Rain gauge: `value` (mm this sample), `totalValue` (cumulative mm).
    Rain,
    /// L1 JS acceleration: `gX`, `gY`, `gZ` (mg).
    Acceleration,
    /// L1 GP GNSS: `gpsTotalX`, `gpsTotalY`, `gpsTotalZ` (mm vs the initial position).
    Gnss,
    /// L1 SW deep displacement: `dispsX`, `dispsY` (mm).
    DeepDisplacement,
    /// L2 YL earth pressure: a scalar in kN.
    EarthPressure,
    /// L3 HS soil moisture: a scalar in %.
    SoilMoisture,
    /// L3 TW soil temperature: a scalar in °C.
    SoilTemperature,
    /// L3 SY seepage / pore water pressure (a piezometer): a scalar in kPa.
    PorePressure,
}

impl CigemKind {
    /// The fields of a multi-field kind (docs/DOMAIN.md §CIGEM field dictionary); empty for a
    /// scalar and for rain (whose `value`/`totalValue` come from one cumulative channel).
    #[must_use]
    pub const fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Tilt => &["X", "Y", "Z", "angle", "AZI"],
            Self::Acceleration => &["gX", "gY", "gZ"],
            Self::Gnss => &["gpsTotalX", "gpsTotalY", "gpsTotalZ"],
            Self::DeepDisplacement => &["dispsX", "dispsY"],
            _ => &[],
        }
    }

    /// The instrument behind a field (`""` for a scalar).
    #[must_use]
    pub fn sensor(self, field: &str) -> SensorKind {
        match self {
            Self::Crack => SensorKind::CrackMeter,
            Self::Tilt => SensorKind::TiltMeter,
            Self::Rain => SensorKind::RainGauge,
            // gpsTotalZ is the vertical axis (±5 mm against ±2 mm horizontal, docs/DOMAIN.md
            // §Sensors).
            Self::Gnss if field == "gpsTotalZ" => SensorKind::GnssVertical,
            Self::Gnss => SensorKind::GnssHorizontal,
            Self::DeepDisplacement => SensorKind::DeepDisplacement,
            Self::EarthPressure | Self::PorePressure => SensorKind::Piezometer,
            Self::SoilTemperature => SensorKind::Thermistor,
            Self::Acceleration | Self::SoilMoisture => SensorKind::Ideal,
        }
    }
}

impl fmt::Display for CigemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Crack => "crack",
            Self::Tilt => "tilt",
            Self::Rain => "rain",
            Self::Acceleration => "acceleration",
            Self::Gnss => "gnss",
            Self::DeepDisplacement => "deep_displacement",
            Self::EarthPressure => "earth_pressure",
            Self::SoilMoisture => "soil_moisture",
            Self::SoilTemperature => "soil_temperature",
            Self::PorePressure => "pore_pressure",
        };
        f.write_str(name)
    }
}

/// A validated scenario, profiles resolved.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file it came from.
    pub file: PathBuf,
    /// Scenario name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Seed of every value series.
    pub seed: u64,
    /// Time between two sample ticks (whole seconds).
    pub sample_interval: Duration,
    /// Site name (the `{site}` of MQTT topics).
    pub site: String,
    /// Modbus TCP slaves, one listener each.
    pub modbus_tcp: Vec<TcpSlave>,
    /// Modbus RTU buses.
    pub modbus_rtu: Vec<RtuBus>,
    /// MQTT JSON sensor nodes.
    pub json_nodes: Vec<JsonNode>,
    /// CIGEM universal geo-hazard devices.
    pub cigem: Vec<CigemDevice>,
    /// The physics models and their channels.
    pub physics: Arc<Physics>,
    /// Scheduled faults, in file order.
    pub faults: Vec<FaultSpec>,
    /// How long a run lasts (simulated time), if the scenario says.
    pub duration: Option<Duration>,
}

/// A Modbus TCP slave.
#[derive(Debug, Clone)]
pub struct TcpSlave {
    /// Device name.
    pub name: String,
    /// Its register map.
    pub profile: Arc<Profile>,
    /// Unit id it answers to (also 0 and 255, the Modbus/TCP "direct" ids).
    pub unit: u8,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Reads touching unmapped registers answer exception 02 instead of zeros.
    pub strict_map: bool,
    /// What the status points read.
    pub status_points: StatusPoints,
    /// Points following a physics channel, by point name (the others keep their default series).
    pub channels: BTreeMap<String, ChannelRef>,
}

/// One RS-485 line with its slaves.
#[derive(Debug, Clone)]
pub struct RtuBus {
    /// Bus name.
    pub name: String,
    /// Serial device to serve on; `None` = make a socat pty pair at start.
    pub tty: Option<PathBuf>,
    /// Line speed (sets the inter-frame silence).
    pub baud: u32,
    /// Slaves on the line.
    pub slaves: Vec<RtuSlave>,
}

/// A slave on an RTU bus.
#[derive(Debug, Clone)]
pub struct RtuSlave {
    /// Device name.
    pub name: String,
    /// Its register map.
    pub profile: Arc<Profile>,
    /// Unit id, 1-247, unique on the bus.
    pub unit: u8,
    /// Reads touching unmapped registers answer exception 02 instead of zeros.
    pub strict_map: bool,
    /// What the status points read.
    pub status_points: StatusPoints,
    /// Points following a physics channel, by point name.
    pub channels: BTreeMap<String, ChannelRef>,
}

/// An MQTT node publishing JSON.
#[derive(Debug, Clone)]
pub struct JsonNode {
    /// Node name (the truth's `device`).
    pub name: String,
    /// Topic template.
    pub topic: String,
    /// Message packing.
    pub message: MessageForm,
    /// Publish every N ticks.
    pub every: u32,
    /// Sensors.
    pub sensors: Vec<JsonSensor>,
    /// Last will (own MQTT connection), if any.
    pub will: Option<Will>,
}

impl JsonNode {
    /// The topic for `site` (and `sensor`, for the single form).
    #[must_use]
    pub fn topic_for(&self, site: &str, sensor: Option<&str>) -> String {
        self.topic
            .replace("{site}", site)
            .replace("{node}", &self.name)
            .replace("{sensor}", sensor.unwrap_or(""))
    }
}

/// A sensor of a JSON node.
#[derive(Debug, Clone)]
pub struct JsonSensor {
    /// Sensor id (the truth's `point`).
    pub id: String,
    /// What it measures.
    pub quantity: Quantity,
    /// Unit string put in batch messages.
    pub unit: String,
    /// Decimals the value is rounded to.
    pub decimals: u8,
    /// The physics channel it follows, if any.
    pub channel: Option<ChannelRef>,
}

/// A CIGEM universal geo-hazard device.
#[derive(Debug, Clone)]
pub struct CigemDevice {
    /// Platform device id (the truth's `device`).
    pub device_id: String,
    /// Uplink topic (default `$dp`).
    pub topic: String,
    /// Data message every N ticks.
    pub data_every: u32,
    /// Status message every N ticks.
    pub status_every: u32,
    /// Data points.
    pub points: Vec<CigemPoint>,
    /// Last will (own MQTT connection), if any.
    pub will: Option<Will>,
}

/// A CIGEM data point.
#[derive(Debug, Clone)]
pub struct CigemPoint {
    /// `L<cat>_<TYPE>_<n>`, e.g. `L1_QJ_1`.
    pub id: String,
    /// What it measures and which fields it has.
    pub kind: CigemKind,
    /// The channel a scalar or rain point follows (rain: the cumulative total, mm).
    pub channel: Option<ChannelRef>,
    /// The channels the fields of a multi-field point follow, by field name.
    pub fields: BTreeMap<String, ChannelRef>,
}

impl Scenario {
    /// Loads `file`, resolving profiles from the `profiles` directory next to the scenario's
    /// directory (`config/sim/x.toml` → `config/profiles`).
    ///
    /// # Errors
    /// See [`ScenarioError`].
    pub fn load(file: &Path) -> Result<Self, ScenarioError> {
        let dir = file
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| Path::new(".."));
        Self::load_with_profiles(file, &dir.join("profiles"))
    }

    /// Loads `file` with profiles from `profiles_dir`.
    ///
    /// # Errors
    /// See [`ScenarioError`].
    pub fn load_with_profiles(file: &Path, profiles_dir: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(file).map_err(|source| ScenarioError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let raw: RawScenario = parse_toml(file, &text)?;
        let profiles = ProfileSet::load_dir(profiles_dir)?;
        validate(file, raw, &profiles).map_err(|(path, message)| ScenarioError::Invalid {
            file: file.to_path_buf(),
            path,
            message,
        })
    }

    /// Every device name, in file order (Modbus TCP, RTU slaves, JSON nodes, CIGEM ids).
    #[must_use]
    pub fn device_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.modbus_tcp.iter().map(|d| d.name.as_str()).collect();
        for bus in &self.modbus_rtu {
            names.extend(bus.slaves.iter().map(|s| s.name.as_str()));
        }
        names.extend(self.json_nodes.iter().map(|n| n.name.as_str()));
        names.extend(self.cigem.iter().map(|c| c.device_id.as_str()));
        names
    }
}

/// Names go into MQTT topics, InfluxDB tags and file names: keep them to a safe alphabet.
fn check_name(path: String, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err((
            path,
            format!("{name:?}: use letters, digits, '-', '_' or '.' (no spaces, '/', '+', '#')"),
        ))
    }
}

fn check_unit(path: String, unit: u8) -> Result<(), Invalid> {
    if (1..=MAX_UNIT_ID).contains(&unit) {
        Ok(())
    } else {
        Err((
            path,
            format!("unit id {unit} is outside 1-{MAX_UNIT_ID} (0 is broadcast)"),
        ))
    }
}

fn resolve_profile(
    path: String,
    name: &str,
    profiles: &ProfileSet,
) -> Result<Arc<Profile>, Invalid> {
    profiles
        .get(name)
        .map(|p| Arc::new(p.clone()))
        .ok_or_else(|| {
            let known: Vec<&str> = profiles.names().collect();
            (
                path,
                format!(
                    "no profile {name:?} in {} (have: {})",
                    profiles.dir().display(),
                    known.join(", ")
                ),
            )
        })
}

/// Checks a topic template: known placeholders only, no MQTT wildcards.
fn check_topic(path: String, topic: &str, allow_sensor: bool) -> Result<(), Invalid> {
    if topic.is_empty() || topic.contains(['+', '#']) {
        return Err((
            path,
            format!("{topic:?}: a publish topic must be non-empty, without '+' or '#'"),
        ));
    }
    let mut rest = topic;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err((path, format!("{topic:?}: unclosed '{{'")));
        };
        let name = &rest[open + 1..open + close];
        match name {
            "site" | "node" => {}
            "sensor" if allow_sensor => {}
            "sensor" => {
                return Err((path, "{sensor} is only for message = \"single\"".into()));
            }
            other => {
                return Err((
                    path,
                    format!(
                        "unknown placeholder {{{other}}} (known: {{site}}, {{node}}, {{sensor}})"
                    ),
                ))
            }
        }
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err((path, format!("{topic:?}: stray '}}'")));
    }
    Ok(())
}

/// `L<digit>_<LETTERS>_<digits>` (docs/DOMAIN.md §CIGEM data-point naming).
fn is_cigem_point_id(id: &str) -> bool {
    let mut parts = id.split('_');
    let (Some(cat), Some(code), Some(n), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    cat.len() == 2
        && cat.starts_with('L')
        && cat[1..].chars().all(|c| c.is_ascii_digit())
        && !code.is_empty()
        && code.chars().all(|c| c.is_ascii_uppercase())
        && !n.is_empty()
        && n.chars().all(|c| c.is_ascii_digit())
}

/// Validates a Modbus device's `channels` against its profile and the physics.
fn modbus_channels(
    at: &dyn Fn(&str) -> String,
    raw: BTreeMap<String, RawMapping>,
    profile: &Profile,
    physics: &Physics,
) -> Result<BTreeMap<String, ChannelRef>, Invalid> {
    let mut out = BTreeMap::new();
    for (point, mapping) in raw {
        let path = format!("{}.{point}", at("channels"));
        let Some(p) = profile.points.iter().find(|p| p.name == point) else {
            let known: Vec<&str> = profile.points.iter().map(|p| p.name.as_str()).collect();
            return Err((
                path,
                format!(
                    "profile {:?} has no point {point:?} (have: {})",
                    profile.name,
                    known.join(", ")
                ),
            ));
        };
        if p.data_type == DataType::Bool || p.function.is_bits() {
            return Err((
                path,
                format!("{point:?} is a bit: only numeric points follow a channel"),
            ));
        }
        let r = ChannelRef::validate(
            &path,
            &mapping,
            physics,
            SensorKind::for_quantity(p.quantity),
        )?;
        out.insert(point, r);
    }
    Ok(out)
}

/// Validates a node's last will; `{site}` and `{node}` are resolved here.
fn will(path: &str, raw: Option<RawWill>, site: &str, node: &str) -> Result<Option<Will>, Invalid> {
    let Some(w) = raw else { return Ok(None) };
    check_topic(format!("{path}.topic"), &w.topic, false)?;
    Ok(Some(Will {
        topic: w.topic.replace("{site}", site).replace("{node}", node),
        payload: w.payload,
        retain: w.retain,
        online_payload: w.online_payload,
    }))
}

/// What a fault target offers, for the fault rules.
#[derive(Debug)]
struct Target<'a> {
    kind: TargetKind,
    /// Modbus: the profile; nodes: `None`.
    profile: Option<&'a Profile>,
    /// MQTT nodes: point ids (sensor ids, CIGEM point ids) and whether each is a rain point.
    points: Vec<(&'a str, bool)>,
}

/// Checks a fault's device and point (the fault itself is already valid).
fn check_fault(
    at: &str,
    f: &FaultSpec,
    targets: &HashMap<&str, Target<'_>>,
) -> Result<(), Invalid> {
    let kind = f.kind();
    let Some(t) = targets.get(f.device.as_str()) else {
        let mut known: Vec<&str> = targets.keys().copied().collect();
        known.sort_unstable();
        return Err((
            format!("{at}.device"),
            format!("no device {:?} (have: {})", f.device, known.join(", ")),
        ));
    };
    check_target(kind, t.kind).map_err(|m| (format!("{at}.kind"), m))?;
    let point_path = format!("{at}.point");
    if let Some(profile) = t.profile {
        let status: Vec<&str> = profile
            .points
            .iter()
            .filter(|p| p.quantity == Quantity::Status && !p.function.is_bits())
            .map(|p| p.name.as_str())
            .collect();
        if let Some(name) = &f.point {
            let Some(p) = profile.points.iter().find(|p| &p.name == name) else {
                let known: Vec<&str> = profile.points.iter().map(|p| p.name.as_str()).collect();
                return Err((
                    point_path,
                    format!(
                        "profile {:?} has no point {name:?} (have: {})",
                        profile.name,
                        known.join(", ")
                    ),
                ));
            };
            let numeric = p.data_type != DataType::Bool && !p.function.is_bits();
            if matches!(kind, FaultKind::Stuck | FaultKind::Spike | FaultKind::Drift) && !numeric {
                return Err((
                    point_path,
                    format!("{name:?} is a bit: a {kind} fault needs a numeric point"),
                ));
            }
            if kind == FaultKind::StatusFlag && !status.contains(&name.as_str()) {
                return Err((
                    point_path,
                    format!(
                        "{name:?} is not a status point (have: {})",
                        status.join(", ")
                    ),
                ));
            }
        }
        if kind == FaultKind::StatusFlag && status.is_empty() {
            return Err((
                format!("{at}.device"),
                format!("profile {:?} has no status point to flag", profile.name),
            ));
        }
        if kind == FaultKind::ClockSkew && profile.points.iter().all(|p| p.time.is_none()) {
            return Err((
                format!("{at}.device"),
                format!("profile {:?} has no time registers to skew", profile.name),
            ));
        }
        return Ok(());
    }
    match &f.point {
        Some(name) => {
            let base = name.split('.').next().unwrap_or(name);
            let Some(&(_, rain)) = t.points.iter().find(|(p, _)| *p == base) else {
                let known: Vec<&str> = t.points.iter().map(|(p, _)| *p).collect();
                return Err((
                    point_path,
                    format!(
                        "device {:?} has no point {name:?} (have: {})",
                        f.device,
                        known.join(", ")
                    ),
                ));
            };
            if rain && matches!(kind, FaultKind::Stuck | FaultKind::Spike | FaultKind::Drift) {
                return Err((
                    point_path,
                    format!("a {kind} fault is not supported on a rain gauge (it counts tips)"),
                ));
            }
        }
        None if kind == FaultKind::StatusFlag => {
            return Err((
                point_path,
                "a CIGEM status_flag names the point whose sensor_state it sets".into(),
            ));
        }
        None => {}
    }
    Ok(())
}

/// Time windows `[start, end)` overlap (an open end runs forever).
fn overlaps(a: &FaultSpec, b: &FaultSpec) -> bool {
    let before = |x: &FaultSpec, y: &FaultSpec| x.end.is_some_and(|e| e <= y.start);
    !(before(a, b) || before(b, a))
}

/// Validates a scenario file section by section, in file order: the top-level fields, the
/// physics models, the Modbus TCP slaves, the RTU buses, the JSON nodes, the CIGEM devices and
/// the faults. The first broken rule is the error.
fn validate(file: &Path, raw: RawScenario, profiles: &ProfileSet) -> Result<Scenario, Invalid> {
    check_name("name".into(), &raw.name)?;
    check_name("site".into(), &raw.site)?;
    let sample_interval = validate_sample_interval(&raw.sample_interval)?;
    let duration = validate_duration(raw.duration.as_deref())?;
    let physics = physics::validate(RawModels {
        settlement: raw.settlement,
        curing: raw.curing,
        slope: raw.slope,
    })?;
    let mut names = DeviceNames::default();
    let modbus_tcp = validate_tcp(raw.modbus_tcp, &mut names, profiles, &physics)?;
    let modbus_rtu = validate_rtu(raw.modbus_rtu, &mut names, profiles, &physics)?;
    let json_nodes = validate_json_nodes(raw.json_nodes, &mut names, &raw.site, &physics)?;
    let cigem = validate_cigem(raw.cigem, &mut names, &raw.site, &physics)?;
    let targets = fault_targets(&modbus_tcp, &modbus_rtu, &json_nodes, &cigem);
    let faults = validate_faults(raw.faults, &targets)?;
    Ok(Scenario {
        file: file.to_path_buf(),
        name: raw.name,
        description: raw.description,
        seed: raw.seed,
        sample_interval,
        site: raw.site,
        modbus_tcp,
        modbus_rtu,
        json_nodes,
        cigem,
        physics: Arc::new(physics),
        faults,
        duration,
    })
}

/// `sample_interval`: whole seconds, 1 s to [`MAX_SAMPLE_INTERVAL_S`].
fn validate_sample_interval(text: &str) -> Result<Duration, Invalid> {
    let interval = humantime::parse_duration(text)
        .map_err(|e| ("sample_interval".to_owned(), format!("{text:?}: {e}")))?;
    if interval.subsec_nanos() != 0
        || interval.as_secs() == 0
        || interval.as_secs() > MAX_SAMPLE_INTERVAL_S
    {
        return Err((
            "sample_interval".into(),
            format!("must be whole seconds in 1s-{MAX_SAMPLE_INTERVAL_S}s, got {text:?}"),
        ));
    }
    Ok(interval)
}

/// `duration`, if given: any humantime duration.
fn validate_duration(text: Option<&str>) -> Result<Option<Duration>, Invalid> {
    text.map(|d| {
        humantime::parse_duration(d).map_err(|e| ("duration".to_owned(), format!("{d:?}: {e}")))
    })
    .transpose()
}

/// Device names claimed so far: one namespace across Modbus TCP slaves, RTU slaves, JSON nodes
/// and CIGEM devices (the truth's `device`), with the path that claimed each.
#[derive(Debug, Default)]
struct DeviceNames(HashMap<String, String>);

impl DeviceNames {
    /// Checks `name` and claims it for the entry at `path`.
    fn claim(&mut self, path: &str, name: &str) -> Result<(), Invalid> {
        check_name(path.to_owned(), name)?;
        match self.0.insert(name.to_owned(), path.to_owned()) {
            Some(first) => Err((
                path.to_owned(),
                format!("device name {name:?} already used at {first}"),
            )),
            None => Ok(()),
        }
    }
}

/// The `[[modbus_tcp]]` slaves: names, units, profiles, listen addresses (fixed ports unique),
/// channel mappings.
fn validate_tcp(
    raw: Vec<RawTcpSlave>,
    names: &mut DeviceNames,
    profiles: &ProfileSet,
    physics: &Physics,
) -> Result<Vec<TcpSlave>, Invalid> {
    let mut fixed_ports = HashSet::new();
    let mut modbus_tcp = Vec::with_capacity(raw.len());
    for (i, d) in raw.into_iter().enumerate() {
        let at = |f: &str| format!("modbus_tcp[{i}].{f}");
        names.claim(&at("name"), &d.name)?;
        check_unit(at("unit"), d.unit)?;
        let profile = resolve_profile(at("profile"), &d.profile, profiles)?;
        let listen_text = d.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|e| {
            (
                at("listen"),
                format!("{listen_text:?}: {e} (write ip:port)"),
            )
        })?;
        if listen.port() != 0 && !fixed_ports.insert(listen) {
            return Err((
                at("listen"),
                format!("{listen} is already used by another slave"),
            ));
        }
        let channels = modbus_channels(&at, d.channels, &profile, physics)?;
        modbus_tcp.push(TcpSlave {
            name: d.name,
            profile,
            unit: d.unit,
            listen,
            strict_map: d.strict_map,
            status_points: d.status_points,
            channels,
        });
    }
    Ok(modbus_tcp)
}

/// The `[[modbus_rtu]]` buses: bus names unique, a positive baud, at least one slave, and per
/// slave its name, unit (unique on the bus), profile and channel mappings.
fn validate_rtu(
    raw: Vec<RawRtuBus>,
    names: &mut DeviceNames,
    profiles: &ProfileSet,
    physics: &Physics,
) -> Result<Vec<RtuBus>, Invalid> {
    let mut buses = HashSet::new();
    let mut modbus_rtu = Vec::with_capacity(raw.len());
    for (i, b) in raw.into_iter().enumerate() {
        let at = |f: &str| format!("modbus_rtu[{i}].{f}");
        check_name(at("bus"), &b.bus)?;
        if !buses.insert(b.bus.clone()) {
            return Err((at("bus"), format!("bus name {:?} used twice", b.bus)));
        }
        if b.baud == 0 {
            return Err((at("baud"), "baud must be positive".into()));
        }
        if b.slaves.is_empty() {
            return Err((at("slaves"), "a bus needs at least one slave".into()));
        }
        let mut units = HashMap::new();
        let mut slaves = Vec::with_capacity(b.slaves.len());
        for (j, s) in b.slaves.into_iter().enumerate() {
            let at = |f: &str| format!("modbus_rtu[{i}].slaves[{j}].{f}");
            names.claim(&at("name"), &s.name)?;
            check_unit(at("unit"), s.unit)?;
            if let Some(first) = units.insert(s.unit, j) {
                return Err((
                    at("unit"),
                    format!("unit {} already on this bus (slaves[{first}])", s.unit),
                ));
            }
            let profile = resolve_profile(at("profile"), &s.profile, profiles)?;
            let channels = modbus_channels(&at, s.channels, &profile, physics)?;
            slaves.push(RtuSlave {
                name: s.name,
                profile,
                unit: s.unit,
                strict_map: s.strict_map,
                status_points: s.status_points,
                channels,
            });
        }
        modbus_rtu.push(RtuBus {
            name: b.bus,
            tty: b.tty,
            baud: b.baud,
            slaves,
        });
    }
    Ok(modbus_rtu)
}

/// The `[[json_nodes]]`: name, topic template, `every`, sensors, last will.
fn validate_json_nodes(
    raw: Vec<RawJsonNode>,
    names: &mut DeviceNames,
    site: &str,
    physics: &Physics,
) -> Result<Vec<JsonNode>, Invalid> {
    let mut json_nodes = Vec::with_capacity(raw.len());
    for (i, n) in raw.into_iter().enumerate() {
        let at = |f: &str| format!("json_nodes[{i}].{f}");
        names.claim(&at("name"), &n.name)?;
        check_topic(at("topic"), &n.topic, n.message == MessageForm::Single)?;
        if n.every == 0 {
            return Err((at("every"), "every must be at least 1".into()));
        }
        if n.sensors.is_empty() {
            return Err((at("sensors"), "a node needs at least one sensor".into()));
        }
        let sensors = validate_json_sensors(i, n.sensors, physics)?;
        let will = will(&at("will"), n.will, site, &n.name)?;
        json_nodes.push(JsonNode {
            name: n.name,
            topic: n.topic,
            message: n.message,
            every: n.every,
            sensors,
            will,
        });
    }
    Ok(json_nodes)
}

/// The sensors of JSON node `i`: ids unique in the node, decimals, channel mappings.
fn validate_json_sensors(
    i: usize,
    raw: Vec<RawJsonSensor>,
    physics: &Physics,
) -> Result<Vec<JsonSensor>, Invalid> {
    let mut ids = HashSet::new();
    let mut sensors = Vec::with_capacity(raw.len());
    for (j, s) in raw.into_iter().enumerate() {
        let at = |f: &str| format!("json_nodes[{i}].sensors[{j}].{f}");
        check_name(at("id"), &s.id)?;
        if !ids.insert(s.id.clone()) {
            return Err((
                at("id"),
                format!("sensor id {:?} used twice in this node", s.id),
            ));
        }
        if s.decimals > MAX_DECIMALS {
            return Err((at("decimals"), format!("at most {MAX_DECIMALS} decimals")));
        }
        let channel = match &s.channel {
            Some(m) => Some(ChannelRef::validate(
                &at("channel"),
                m,
                physics,
                SensorKind::for_quantity(s.quantity),
            )?),
            None => None,
        };
        sensors.push(JsonSensor {
            id: s.id,
            quantity: s.quantity,
            unit: s.unit,
            decimals: s.decimals,
            channel,
        });
    }
    Ok(sensors)
}

/// The `[[cigem]]` devices: device id, topic, `data_every`/`status_every`, points, last will.
fn validate_cigem(
    raw: Vec<RawCigem>,
    names: &mut DeviceNames,
    site: &str,
    physics: &Physics,
) -> Result<Vec<CigemDevice>, Invalid> {
    let mut cigem = Vec::with_capacity(raw.len());
    for (i, c) in raw.into_iter().enumerate() {
        let at = |f: &str| format!("cigem[{i}].{f}");
        names.claim(&at("device_id"), &c.device_id)?;
        let topic = c.topic.unwrap_or_else(|| DEFAULT_CIGEM_TOPIC.to_owned());
        check_topic(at("topic"), &topic, false)?;
        if c.data_every == 0 {
            return Err((at("data_every"), "data_every must be at least 1".into()));
        }
        if c.status_every == 0 {
            return Err((at("status_every"), "status_every must be at least 1".into()));
        }
        if c.points.is_empty() {
            return Err((
                at("points"),
                "a device needs at least one data point".into(),
            ));
        }
        let mut ids = HashSet::new();
        let mut points = Vec::with_capacity(c.points.len());
        for (j, p) in c.points.into_iter().enumerate() {
            let at = |f: &str| format!("cigem[{i}].points[{j}].{f}");
            if !is_cigem_point_id(&p.id) {
                return Err((
                    at("id"),
                    format!("{:?}: expected L<category>_<TYPE>_<n>, e.g. L1_LF_1", p.id),
                ));
            }
            if !ids.insert(p.id.clone()) {
                return Err((
                    at("id"),
                    format!("point {:?} used twice in this device", p.id),
                ));
            }
            points.push(validate_cigem_point(&at, p, physics)?);
        }
        let will = will(&at("will"), c.will, site, &c.device_id)?;
        cigem.push(CigemDevice {
            device_id: c.device_id,
            topic,
            data_every: c.data_every,
            status_every: c.status_every,
            points,
            will,
        });
    }
    Ok(cigem)
}

/// One CIGEM point's mapping: `channel` for a scalar or rain point, `fields` (the kind's field
/// names only) for a multi-field one.
fn validate_cigem_point(
    at: &dyn Fn(&str) -> String,
    p: RawCigemPoint,
    physics: &Physics,
) -> Result<CigemPoint, Invalid> {
    let names = p.kind.fields();
    let channel = match &p.channel {
        Some(_) if !names.is_empty() => {
            return Err((
                at("channel"),
                format!(
                    "a {} point has fields ({}): map them with `fields`",
                    p.kind,
                    names.join(", ")
                ),
            ))
        }
        Some(m) => Some(ChannelRef::validate(
            &at("channel"),
            m,
            physics,
            p.kind.sensor(""),
        )?),
        None => None,
    };
    let mut fields = BTreeMap::new();
    for (f, m) in &p.fields {
        let path = format!("{}.{f}", at("fields"));
        if !names.contains(&f.as_str()) {
            let have = if names.is_empty() {
                format!("a {} point is a scalar: use `channel`", p.kind)
            } else {
                format!("a {} point has {}", p.kind, names.join(", "))
            };
            return Err((path, format!("no field {f:?}: {have}")));
        }
        fields.insert(
            f.clone(),
            ChannelRef::validate(&path, m, physics, p.kind.sensor(f))?,
        );
    }
    Ok(CigemPoint {
        id: p.id,
        kind: p.kind,
        channel,
        fields,
    })
}

/// What every device offers a fault, by device name.
fn fault_targets<'a>(
    modbus_tcp: &'a [TcpSlave],
    modbus_rtu: &'a [RtuBus],
    json_nodes: &'a [JsonNode],
    cigem: &'a [CigemDevice],
) -> HashMap<&'a str, Target<'a>> {
    let mut targets: HashMap<&str, Target<'_>> = HashMap::new();
    for d in modbus_tcp {
        targets.insert(
            &d.name,
            Target {
                kind: TargetKind::ModbusTcp,
                profile: Some(&d.profile),
                points: Vec::new(),
            },
        );
    }
    for s in modbus_rtu.iter().flat_map(|b| &b.slaves) {
        targets.insert(
            &s.name,
            Target {
                kind: TargetKind::ModbusRtu,
                profile: Some(&s.profile),
                points: Vec::new(),
            },
        );
    }
    for n in json_nodes {
        let points = n.sensors.iter().map(|s| (s.id.as_str(), false)).collect();
        targets.insert(
            &n.name,
            Target {
                kind: TargetKind::JsonNode,
                profile: None,
                points,
            },
        );
    }
    for c in cigem {
        let points = c
            .points
            .iter()
            .map(|p| (p.id.as_str(), p.kind == CigemKind::Rain))
            .collect();
        targets.insert(
            &c.device_id,
            Target {
                kind: TargetKind::Cigem,
                profile: None,
                points,
            },
        );
    }
    targets
}

/// The `[[faults]]`: each valid on its own, on an existing target, and not overlapping an
/// earlier fault of the same kind, device and point.
fn validate_faults(
    raw: Vec<RawFault>,
    targets: &HashMap<&str, Target<'_>>,
) -> Result<Vec<FaultSpec>, Invalid> {
    let mut faults: Vec<FaultSpec> = Vec::with_capacity(raw.len());
    for (i, f) in raw.into_iter().enumerate() {
        let at = format!("faults[{i}]");
        let spec = FaultSpec::validate(&at, f)?;
        check_fault(&at, &spec, targets)?;
        if let Some(j) = faults.iter().position(|g| {
            g.device == spec.device
                && g.point == spec.point
                && g.kind() == spec.kind()
                && overlaps(g, &spec)
        }) {
            return Err((
                format!("{at}.start"),
                format!("overlaps faults[{j}] (same kind, device and point)"),
            ));
        }
        faults.push(spec);
    }
    Ok(faults)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_templates() {
        assert!(check_topic("t".into(), "sites/{site}/nodes/{node}/up", false).is_ok());
        assert!(check_topic("t".into(), "s/{node}/{sensor}", true).is_ok());
        assert!(check_topic("t".into(), "s/{node}/{sensor}", false).is_err());
        assert!(check_topic("t".into(), "s/{nod}", false).is_err());
        assert!(check_topic("t".into(), "s/+/x", false).is_err());
        assert!(check_topic("t".into(), "s/{site", false).is_err());
        assert!(check_topic("t".into(), "$dp", false).is_ok());
    }

    #[test]
    fn cigem_point_ids() {
        assert!(is_cigem_point_id("L1_LF_1"));
        assert!(is_cigem_point_id("L3_YL_12"));
        assert!(!is_cigem_point_id("S1_ZT_1"));
        assert!(!is_cigem_point_id("L1_lf_1"));
        assert!(!is_cigem_point_id("L1_LF"));
        assert!(!is_cigem_point_id("L1_LF_1_2"));
    }
}
