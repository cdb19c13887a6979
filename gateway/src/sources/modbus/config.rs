//! Configuration of Modbus devices and points: the raw TOML shapes and their validated forms.
//!
//! Owns the register-map vocabulary (function, data type, word order), device profiles
//! (`config/profiles/*.toml`), and per-device transport settings. It does not talk to devices
//! ([`super::poller`]) or build read requests ([`super::plan`]).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::model::QuantityKind;

/// Modbus application protocol V1.1b3 §6.3/6.4: at most 125 registers per read request.
pub const MAX_REGISTERS_PER_READ: u16 = 125;
/// Modbus application protocol V1.1b3 §6.1/6.2: at most 2000 coils or discrete inputs per read.
pub const MAX_BITS_PER_READ: u16 = 2000;
/// Default number of unused registers a coalesced read may span to join two points. Reading a
/// few spare registers costs far less than a second round trip, especially at 9600 baud.
pub const DEFAULT_MAX_GAP: u16 = 10;
/// Default time between two polls of a device.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Default time to wait for one reply. RTU at 9600 baud moves ~1 register per ms, so 1 s covers a
/// full 125-register read with margin.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default number of retries of a failed request within one poll.
pub const DEFAULT_RETRIES: u32 = 1;
/// Longest wait between polls of a device that does not answer (exponential backoff ceiling).
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Default serial line speed.
pub const DEFAULT_BAUD: u32 = 9600;

/// Modbus read function, named as register tables are in device manuals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// FC 01, read coils (bits).
    Coil,
    /// FC 02, read discrete inputs (bits).
    Discrete,
    /// FC 03, read holding registers.
    Holding,
    /// FC 04, read input registers.
    Input,
}

impl Function {
    /// The function code on the wire.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Coil => 1,
            Self::Discrete => 2,
            Self::Holding => 3,
            Self::Input => 4,
        }
    }

    /// True for the 1-bit tables (coils, discrete inputs).
    #[must_use]
    pub const fn is_bits(self) -> bool {
        matches!(self, Self::Coil | Self::Discrete)
    }

    /// The largest quantity one request may ask for.
    #[must_use]
    pub const fn max_per_read(self) -> u16 {
        if self.is_bits() {
            MAX_BITS_PER_READ
        } else {
            MAX_REGISTERS_PER_READ
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Coil => "coil",
            Self::Discrete => "discrete",
            Self::Holding => "holding",
            Self::Input => "input",
        };
        write!(f, "{name} (FC {:02})", self.code())
    }
}

/// How the value of a point is laid out in its registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// A coil or discrete input, or one bit of a register (with `bit`).
    Bool,
    /// Unsigned 16-bit.
    U16,
    /// Signed 16-bit (two's complement).
    I16,
    /// Unsigned 32-bit over two registers.
    U32,
    /// Signed 32-bit over two registers.
    I32,
    /// Unsigned 64-bit over four registers.
    U64,
    /// Signed 64-bit over four registers.
    I64,
    /// IEEE 754 single precision over two registers.
    F32,
    /// IEEE 754 double precision over four registers.
    F64,
}

impl DataType {
    /// Registers (or bits, for `Bool` on a bit table) the value occupies.
    #[must_use]
    pub const fn width(self) -> u16 {
        match self {
            Self::Bool | Self::U16 | Self::I16 => 1,
            Self::U32 | Self::I32 | Self::F32 => 2,
            Self::U64 | Self::I64 | Self::F64 => 4,
        }
    }
}

/// Byte order of a multi-register value, in libmodbus's letters: `abcd` is the big-endian value
/// `0xAABBCCDD` sent as registers `AABB CCDD` (Modbus spec §4.2, "big-endian"); `cdab` swaps the
/// words (the common "little-endian word order", e.g. Geokon's float32, domain.md §4.4); `badc`
/// swaps the bytes inside each word; `dcba` is fully little-endian. For 64-bit values the same
/// rule extends to four words (`cdab` reverses the word order, `badc` swaps bytes in each word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// Big-endian words, big-endian bytes.
    #[default]
    Abcd,
    /// Little-endian words, big-endian bytes.
    Cdab,
    /// Big-endian words, little-endian bytes.
    Badc,
    /// Little-endian words, little-endian bytes.
    Dcba,
}

/// One point of a register map, as written in a profile or inline in a device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// Point name, unique within the device (`ch1`, `core_temp`).
    pub name: String,
    /// Which register table.
    pub function: Function,
    /// 0-based protocol address (manual register 40001 is address 0).
    pub address: u16,
    /// Data type; `bool` for coils and discrete inputs.
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Word order for multi-register values; defaults to the profile's `word_order`.
    #[serde(default)]
    pub word_order: Option<WordOrder>,
    /// For `type = "bool"` on a register table: which bit, 0 = least significant.
    #[serde(default)]
    pub bit: Option<u8>,
    /// Engineering value = raw × scale + offset.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Engineering value = raw × scale + offset.
    #[serde(default)]
    pub offset: f64,
    /// Engineering unit after scaling (`mm`, `°C`).
    #[serde(default)]
    pub unit: String,
    /// What the point measures; becomes the InfluxDB measurement.
    pub quantity: QuantityKind,
    /// Address (same table) of a u32 holding the sample time in Unix seconds. When set, the
    /// reading carries the device's time instead of the poll time.
    #[serde(default)]
    pub time_address: Option<u16>,
    /// Word order of the sample-time u32; defaults to the profile's `word_order`.
    #[serde(default)]
    pub time_word_order: Option<WordOrder>,
}

const fn default_scale() -> f64 {
    1.0
}

/// Registers `first..=last` of one table that the device refuses to read (exception 02) although
/// they lie between mapped registers. The read plan never spans them, so the device is not
/// asked for them even once. Holes that are not declared are learned at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hole {
    /// Register table.
    pub function: Function,
    /// First refused address (0-based).
    pub first: u16,
    /// Last refused address, inclusive.
    pub last: u16,
}

impl Hole {
    /// Why this declared hole is invalid, if it is.
    #[must_use]
    pub fn problem(&self) -> Option<String> {
        (self.first > self.last).then(|| {
            format!(
                "first ({}) is after last ({}): a hole is first..=last",
                self.first, self.last
            )
        })
    }

    /// The first point whose value or sample-time registers lie in this hole: a point cannot
    /// be read from registers the device refuses.
    #[must_use]
    pub fn overlapping_point<'a>(&self, points: &'a [Point]) -> Option<&'a Point> {
        let hole = u32::from(self.first)..=u32::from(self.last);
        points
            .iter()
            .filter(|p| p.function == self.function)
            .find(|p| {
                let value = u32::from(p.address)..u32::from(p.address) + u32::from(p.width());
                let time = p.time.map_or(0..0, |(t, _)| u32::from(t)..u32::from(t) + 2);
                value.chain(time).any(|r| hole.contains(&r))
            })
    }
}

/// A device profile file: a register map written once and used by many devices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Profile name; must equal the file stem.
    pub name: String,
    /// What device this describes (model, vendor, manual reference).
    #[serde(default)]
    pub description: String,
    /// Default word order of multi-register points.
    #[serde(default)]
    pub word_order: WordOrder,
    /// Default `max_gap` for devices using the profile.
    #[serde(default)]
    pub max_gap: Option<u16>,
    /// Default sample-time address for the profile's holding and input points that do not set
    /// their own (many loggers keep one sample time for all channels).
    #[serde(default)]
    pub time_address: Option<u16>,
    /// Default word order of that sample time; else the profile's `word_order`.
    #[serde(default)]
    pub time_word_order: Option<WordOrder>,
    /// Known holes in the register map (unmapped registers the device refuses to read).
    #[serde(default)]
    pub holes: Vec<Hole>,
    /// The register map.
    pub points: Vec<PointConfig>,
}

impl ProfileConfig {
    /// `p` with the profile's sample-time defaults applied: a holding or input point without
    /// its own `time_address` gets the profile's, in the same table (coils and discrete inputs
    /// have no sample-time register).
    #[must_use]
    pub fn with_defaults(&self, p: &PointConfig) -> PointConfig {
        let mut p = p.clone();
        if p.time_address.is_none() && !p.function.is_bits() {
            p.time_address = self.time_address;
            p.time_word_order = p.time_word_order.or(self.time_word_order);
        }
        p
    }
}

/// How the gateway reaches a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// Modbus TCP (MBAP header), one connection per device.
    Tcp,
    /// Modbus RTU on a local serial port (RS-485).
    Rtu,
    /// Modbus RTU frames tunnelled through a TCP socket (serial device servers).
    RtuOverTcp,
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit (8N1 is the common default).
    #[default]
    None,
    /// Even parity (Modbus over serial line V1.02 §2.5.1 says even is the default).
    Even,
    /// Odd parity.
    Odd,
}

/// A serial port shared by the RTU devices wired to it (one bus, one request at a time).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPortConfig {
    /// Name used by devices (`port = "rs485-1"`).
    pub name: String,
    /// Device path, e.g. `/dev/ttyS1` or `/dev/ttyUSB0`.
    pub path: String,
    /// Line speed.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Parity.
    #[serde(default)]
    pub parity: Parity,
    /// Data bits, 7 or 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// Stop bits, 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
}

const fn default_baud() -> u32 {
    DEFAULT_BAUD
}
const fn default_data_bits() -> u8 {
    8
}
const fn default_stop_bits() -> u8 {
    1
}

/// One `[[devices]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Device name, unique in the site; the `device` tag.
    pub name: String,
    /// How to reach it.
    pub transport: TransportKind,
    /// `host:port` for `tcp` and `rtu_over_tcp`.
    #[serde(default)]
    pub address: Option<String>,
    /// Name of a `[[serial_ports]]` entry, for `rtu`.
    #[serde(default)]
    pub port: Option<String>,
    /// Modbus unit (slave) id, 1-247 (0 is broadcast and never answers).
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Profile name, resolved as `<profiles_dir>/<name>.toml`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Points in addition to (or instead of) the profile's.
    #[serde(default)]
    pub points: Vec<PointConfig>,
    /// Time between polls, e.g. `"10s"`.
    #[serde(default, with = "crate::config::duration_opt")]
    pub poll_interval: Option<Duration>,
    /// Reply timeout per request, e.g. `"1s"`.
    #[serde(default, with = "crate::config::duration_opt")]
    pub timeout: Option<Duration>,
    /// Retries of a failed request within one poll.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Backoff ceiling while the device is dead, e.g. `"5m"`.
    #[serde(default, with = "crate::config::duration_opt")]
    pub max_backoff: Option<Duration>,
    /// Unused registers a coalesced read may span.
    #[serde(default)]
    pub max_gap: Option<u16>,
    /// Extra tags for every channel of this device (e.g. `structure = "block-A"`).
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

const fn default_unit() -> u8 {
    1
}

/// A validated point: every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Point name.
    pub name: String,
    /// Register table.
    pub function: Function,
    /// 0-based address.
    pub address: u16,
    /// Data type.
    pub data_type: DataType,
    /// Word order (resolved from the profile default).
    pub word_order: WordOrder,
    /// Bit index for `bool` on a register table.
    pub bit: Option<u8>,
    /// Scale.
    pub scale: f64,
    /// Offset.
    pub offset: f64,
    /// Unit.
    pub unit: String,
    /// Quantity kind.
    pub quantity: QuantityKind,
    /// Address and word order of the sample-time u32 (Unix seconds), same table.
    pub time: Option<(u16, WordOrder)>,
}

impl Point {
    /// Registers (or bits) the value occupies.
    #[must_use]
    pub fn width(&self) -> u16 {
        if self.bit.is_some() {
            1
        } else {
            self.data_type.width()
        }
    }
}

/// Where a validated device is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP.
    Tcp(SocketAddr),
    /// RTU over TCP through a serial device server.
    RtuOverTcp(SocketAddr),
    /// RTU on a local serial port.
    Rtu(SerialLine),
}

/// Validated serial line settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SerialLine {
    /// Port name from the config.
    pub name: String,
    /// Device path.
    pub path: String,
    /// Line speed.
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// 7 or 8.
    pub data_bits: u8,
    /// 1 or 2.
    pub stop_bits: u8,
}

/// A validated Modbus device.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Device name.
    pub name: String,
    /// Transport.
    pub transport: Transport,
    /// Unit id.
    pub unit: u8,
    /// Points, in config order.
    pub points: Vec<Point>,
    /// Poll interval.
    pub poll_interval: Duration,
    /// Reply timeout.
    pub timeout: Duration,
    /// Retries per request.
    pub retries: u32,
    /// Backoff ceiling.
    pub max_backoff: Duration,
    /// Coalescing gap.
    pub max_gap: u16,
    /// Declared holes in the register map (from the profile).
    pub holes: Vec<Hole>,
    /// Extra tags.
    pub tags: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const PROFILE: &str = r#"
name = "logger"
word_order = "cdab"
time_address = 60
[[holes]]
function = "holding"
first = 25
last = 59
[[points]]
name = "t00"
function = "holding"
address = 0
type = "i16"
quantity = "temperature"
[[points]]
name = "own_time"
function = "holding"
address = 1
type = "i16"
quantity = "temperature"
time_address = 70
time_word_order = "abcd"
[[points]]
name = "door"
function = "coil"
address = 0
type = "bool"
quantity = "status"
"#;

    fn load(profile: &str) -> Result<Config, crate::config::ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| panic!("tempdir: {e}"))?;
        std::fs::write(dir.path().join("logger.toml"), profile)
            .map_err(|e| panic!("write profile: {e}"))?;
        let text = format!(
            "site = \"s\"\ngateway_id = \"g\"\ndata_dir = \"/tmp/anju-test\"\nprofiles_dir = \"{}\"\n\
             [[devices]]\nname = \"log-1\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\nprofile = \"logger\"\n",
            dir.path().display()
        );
        Config::from_str_at(&text, &dir.path().join("gateway.toml"))
    }

    #[test]
    fn profile_time_defaults_and_holes_reach_the_device() {
        let cfg = load(PROFILE).unwrap_or_else(|e| panic!("{:?}", e.problems()));
        let d = &cfg.devices[0];
        // The profile's time_address, in the profile's word order (no time_word_order given).
        assert_eq!(d.points[0].time, Some((60, WordOrder::Cdab)));
        // A point's own time_address wins.
        assert_eq!(d.points[1].time, Some((70, WordOrder::Abcd)));
        // Coils have no sample-time register.
        assert_eq!(d.points[2].time, None);
        assert_eq!(
            d.holes,
            vec![Hole {
                function: Function::Holding,
                first: 25,
                last: 59
            }]
        );
    }

    #[test]
    fn a_hole_over_a_point_or_reversed_is_rejected() {
        let over = PROFILE.replace("first = 25", "first = 1");
        let problems = load(&over).err().map(|e| e.problems()).unwrap_or_default();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("covers registers of point \"own_time\"")),
            "{problems:?}"
        );
        let reversed = PROFILE.replace("first = 25", "first = 80");
        let problems = load(&reversed)
            .err()
            .map(|e| e.problems())
            .unwrap_or_default();
        assert!(
            problems.iter().any(|p| p.contains("is after last")),
            "{problems:?}"
        );
    }
}
