//! Configuration of Modbus devices and points: the raw TOML shapes and their validated forms.
//!
//! Owns the register-map vocabulary (function, data type, word order), device profiles
//! (`config/profiles/*.toml`), per-device transport settings, `[defaults]` for devices, and the
//! validation of all of these ([`validate_modbus`]: every problem reported, with its file and
//! path). Host names in `address` are kept and looked up at connect time ([`Endpoint`]). It
//! does not talk to devices ([`super::poller`]) or build read requests ([`super::plan`]); the
//! cross-section checks of a whole config file are [`crate::config`]'s.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::Problems;
use crate::conversion::{Channel, ConversionConfig, Sign};
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
/// words (the common "little-endian word order", e.g. Geokon's float32, docs/DOMAIN.md §Modbus); `badc`
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
    /// The device's number = register × scale + offset (e.g. 0.01 for hundredths).
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// The device's number = register × scale + offset.
    #[serde(default)]
    pub offset: f64,
    /// Conversion of the device's number (Hz, Ω, digits) to the engineering value; absent: the
    /// device's number is the value. A device may replace it per point (`overrides`).
    #[serde(default)]
    pub conversion: Option<ConversionConfig>,
    /// `1` (default) or `-1`: the engineering value is multiplied by it (settlement is positive
    /// downwards).
    #[serde(default)]
    pub sign: Sign,
    /// Engineering unit after scaling and conversion (`mm`, `°C`).
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
    /// The device accepts writes to this point (a coil, or a whole holding register value: a
    /// relay, a sampling interval). `gateway write` refuses every other point.
    #[serde(default)]
    pub writable: bool,
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
    /// Per-point replacements of the profile's conversion and sign, by point name: each gauge
    /// has its own calibration sheet (gauge factor, zero reading), the profile only its kind.
    #[serde(default)]
    pub overrides: BTreeMap<String, PointOverride>,
}

/// `[devices.overrides.<point>]`: this device's own conversion and/or sign for one point.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointOverride {
    /// Replaces the point's conversion.
    #[serde(default)]
    pub conversion: Option<ConversionConfig>,
    /// Replaces the point's sign.
    #[serde(default)]
    pub sign: Option<Sign>,
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
    /// Conversion and sign applied after scale and offset.
    pub channel: Channel,
    /// Unit.
    pub unit: String,
    /// Quantity kind.
    pub quantity: QuantityKind,
    /// Address and word order of the sample-time u32 (Unix seconds), same table.
    pub time: Option<(u16, WordOrder)>,
    /// Declared writable (`writable = true`): a coil or a whole holding register value.
    pub writable: bool,
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
    Tcp(Endpoint),
    /// RTU over TCP through a serial device server.
    RtuOverTcp(Endpoint),
    /// RTU on a local serial port.
    Rtu(SerialLine),
}

/// A TCP endpoint as written in `address`: an IP address, or a host name that is looked up at
/// every connect (never at load, so a config stays valid while DNS is down at boot, and a device
/// server that moves to a new address is found again).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An IP address and port (`192.168.1.20:502`, `[fd00::7]:502`).
    Addr(SocketAddr),
    /// A host name and port (`plc-3.site.lan:502`).
    Host(String, u16),
}

impl Endpoint {
    /// Parse `host:port`: the port a number 1-65535, the host an IP address (IPv6 in brackets)
    /// or a host name. Nothing is looked up.
    ///
    /// # Errors
    /// What is wrong, for the config message.
    pub fn parse(address: &str) -> Result<Self, String> {
        if let Ok(a) = address.parse::<SocketAddr>() {
            return if a.port() == 0 {
                Err("port 0 cannot be connected to; give the device's port (Modbus: 502)".into())
            } else {
                Ok(Self::Addr(a))
            };
        }
        let example = "write host:port, e.g. \"192.168.1.20:502\" or \"plc-3.site.lan:502\"";
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(format!("\"{address}\" is not host:port; {example}"));
        };
        let port = match port.parse::<u16>() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "\"{address}\" is not host:port: the port must be 1-65535; {example}"
                ))
            }
            Ok(p) => p,
        };
        let name_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !name_ok {
            return Err(format!(
                "\"{address}\" is not host:port: \"{host}\" is neither an IP address (IPv6 goes in \
                 brackets, \"[fd00::7]:502\") nor a host name; {example}"
            ));
        }
        Ok(Self::Host(host.to_owned(), port))
    }

    /// The address to connect to now; a host name is looked up (first address wins).
    ///
    /// # Errors
    /// The lookup failed or found no address; the caller treats it as a failed connect.
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        match self {
            Self::Addr(a) => Ok(*a),
            Self::Host(host, port) => tokio::net::lookup_host((host.as_str(), *port))
                .await?
                .next()
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("host name {host} has no address"),
                    )
                }),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
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

// ----------------------------------------------------------------------------------------------
// Validation: `[defaults]`, `[[serial_ports]]`, `[[devices]]` and their profiles and points.
// ----------------------------------------------------------------------------------------------

/// Shortest poll interval accepted: faster polling starves other devices on a 9600-baud bus.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Most retries accepted per request: beyond this a dead device holds its bus for too long.
pub const MAX_RETRIES: u32 = 10;

/// `[defaults]`: values for every `[[devices]]` entry that does not set its own. A device's own
/// value wins; `tags` merge, the device's tag winning over a default of the same name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceDefaults {
    /// Time between polls, e.g. `"30s"`.
    #[serde(default, with = "crate::config::duration_opt")]
    pub poll_interval: Option<Duration>,
    /// Reply timeout per request.
    #[serde(default, with = "crate::config::duration_opt")]
    pub timeout: Option<Duration>,
    /// Retries of a failed request within one poll.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Backoff ceiling while a device is dead.
    #[serde(default, with = "crate::config::duration_opt")]
    pub max_backoff: Option<Duration>,
    /// Tags on every channel of every device.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

/// Check the timing values that are set; `at` is the table they are in (`defaults`,
/// `devices[3]`).
fn check_timing(
    at: &str,
    poll_interval: Option<Duration>,
    timeout: Option<Duration>,
    retries: Option<u32>,
    max_backoff: Option<Duration>,
    p: &mut Problems,
) {
    if let Some(i) = poll_interval.filter(|i| *i < MIN_POLL_INTERVAL) {
        p.push(
            format!("{at}.poll_interval"),
            format!("{i:?} is too short; the minimum is {MIN_POLL_INTERVAL:?}"),
        );
    }
    if timeout.is_some_and(|t| t.is_zero()) {
        p.push(format!("{at}.timeout"), "must be longer than 0s");
    }
    if let Some(r) = retries.filter(|r| *r > MAX_RETRIES) {
        p.push(
            format!("{at}.retries"),
            format!("{r} is more than {MAX_RETRIES}; a dead device would hold its bus too long"),
        );
    }
    if max_backoff.is_some_and(|b| b.is_zero()) {
        p.push(format!("{at}.max_backoff"), "must be longer than 0s");
    }
}

/// Validate the Modbus part of a config: `[defaults]`, the serial ports and the devices with
/// their profiles (read from `profiles_dir`). Every problem goes to `p`, each naming its file
/// and path; the devices returned are the valid ones.
pub fn validate_modbus(
    defaults: &DeviceDefaults,
    ports: &[SerialPortConfig],
    devices: &[DeviceConfig],
    profiles_dir: &Path,
    p: &mut Problems,
) -> Vec<Device> {
    check_timing(
        "defaults",
        defaults.poll_interval,
        defaults.timeout,
        defaults.retries,
        defaults.max_backoff,
        p,
    );
    let lines = serial_lines(ports, p);
    let mut profiles = ProfileCache {
        dir: profiles_dir.to_path_buf(),
        loaded: BTreeMap::new(),
    };
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let at = format!("devices[{i}]");
        if !names.insert(d.name.as_str()) {
            p.push(
                format!("{at}.name"),
                format!(
                    "device name \"{}\" is used twice; names must be unique",
                    d.name
                ),
            );
        }
        if let Some(dev) = d.validate(&at, defaults, &lines, &mut profiles, p) {
            out.push(dev);
        }
    }
    out
}

/// The serial ports by name.
fn serial_lines(ports: &[SerialPortConfig], p: &mut Problems) -> BTreeMap<String, SerialLine> {
    let mut out = BTreeMap::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("serial_ports[{i}]");
        if out.contains_key(&port.name) {
            p.push(
                format!("{at}.name"),
                format!("serial port \"{}\" is defined twice", port.name),
            );
        }
        if !matches!(port.data_bits, 7 | 8) {
            p.push(
                format!("{at}.data_bits"),
                format!("{} is not 7 or 8", port.data_bits),
            );
        }
        if !matches!(port.stop_bits, 1 | 2) {
            p.push(
                format!("{at}.stop_bits"),
                format!("{} is not 1 or 2", port.stop_bits),
            );
        }
        if port.baud == 0 {
            p.push(
                format!("{at}.baud"),
                "must be above 0 (typical: 9600, 19200, 115200)",
            );
        }
        out.insert(
            port.name.clone(),
            SerialLine {
                name: port.name.clone(),
                path: port.path.clone(),
                baud: port.baud,
                parity: port.parity,
                data_bits: port.data_bits,
                stop_bits: port.stop_bits,
            },
        );
    }
    out
}

/// Profiles loaded once per config load, by name (`Err`: already reported).
struct ProfileCache {
    dir: PathBuf,
    loaded: BTreeMap<String, Result<ProfileConfig, ()>>,
}

impl ProfileCache {
    /// The profile `name`, read and parsed once; problems are reported against its file.
    fn get(&mut self, at: &str, name: &str, p: &mut Problems) -> Option<ProfileConfig> {
        if let Some(found) = self.loaded.get(name) {
            return found.clone().ok();
        }
        let file = self.file(name);
        let loaded = match std::fs::read_to_string(&file) {
            Err(e) => {
                p.push(
                    at,
                    format!(
                        "cannot read profile \"{name}\" at {}: {e}; check `profiles_dir` and the name",
                        file.display()
                    ),
                );
                Err(())
            }
            Ok(text) => match crate::config::parse_toml::<ProfileConfig>(&file, &text) {
                Err(problem) => {
                    p.extend([problem]);
                    Err(())
                }
                Ok(profile) if profile.name != name => {
                    p.push_in(
                        &file,
                        "name",
                        format!(
                            "\"{}\" does not match the file name; write name = \"{name}\"",
                            profile.name
                        ),
                    );
                    Err(())
                }
                Ok(profile) => Ok(profile),
            },
        };
        self.loaded.insert(name.to_owned(), loaded.clone());
        loaded.ok()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }
}

/// Where the conversion of a point is written: the device's override when it replaces the
/// conversion, else the point itself (`file`: its profile, `None`: the config file).
fn conversion_origin(
    file: Option<&Path>,
    point_at: &str,
    ov: Option<&(&PointOverride, String)>,
) -> (Option<PathBuf>, String) {
    match ov {
        Some((o, oat)) if o.conversion.is_some() => (None, format!("{oat}.conversion")),
        _ => (
            file.map(Path::to_path_buf),
            format!("{point_at}.conversion"),
        ),
    }
}

/// A vibrating-wire point's temperature input must be another point of the same device that
/// measures temperature and needs no temperature input itself: the correction
/// `K·(T1 − T0)` takes the gauge's own thermistor, read in the same poll (Geokon 4500 manual
/// §5.2; docs/DOMAIN.md §Sensors).
fn check_temperature_siblings(
    points: &[Option<Point>],
    origins: &[(Option<PathBuf>, String)],
    p: &mut Problems,
) {
    let valid: Vec<&Point> = points.iter().flatten().collect();
    for (pt, (file, conv_at)) in points.iter().zip(origins) {
        let Some(pt) = pt else { continue };
        let Some(sibling) = pt
            .channel
            .conversion
            .as_ref()
            .and_then(|c| c.temperature_input())
        else {
            continue;
        };
        let problem = match valid.iter().find(|q| q.name == sibling) {
            _ if sibling == pt.name => Some(
                "names the point itself; name the point that reads this gauge's thermistor (°C)"
                    .to_owned(),
            ),
            None => Some(format!(
                "no point named \"{sibling}\" in this device; name the point that reads this gauge's thermistor (°C), one of: {}",
                valid
                    .iter()
                    .filter(|q| q.quantity == QuantityKind::Temperature)
                    .map(|q| q.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(q) if q.quantity != QuantityKind::Temperature => Some(format!(
                "point \"{sibling}\" measures {}, not temperature; name the point that reads this gauge's thermistor (°C)",
                q.quantity
            )),
            Some(q) if q.channel.conversion.as_ref().and_then(|c| c.temperature_input()).is_some() => {
                Some(format!(
                    "point \"{sibling}\" itself needs a temperature input; the thermistor point must not"
                ))
            }
            Some(_) => None,
        };
        if let Some(message) = problem {
            let at = format!("{conv_at}.temperature");
            match file {
                Some(f) => p.push_in(f, at, message),
                None => p.push(at, message),
            }
        }
    }
}

impl DeviceConfig {
    /// This device's override of point `name`, with its path.
    fn override_of(&self, at: &str, name: &str) -> Option<(&PointOverride, String)> {
        self.overrides
            .get(name)
            .map(|o| (o, format!("{at}.overrides.{name}")))
    }

    /// Where the device is reached.
    fn transport(
        &self,
        at: &str,
        lines: &BTreeMap<String, SerialLine>,
        p: &mut Problems,
    ) -> Option<Transport> {
        match self.transport {
            TransportKind::Tcp | TransportKind::RtuOverTcp => {
                if self.port.is_some() {
                    p.push(
                        format!("{at}.port"),
                        "only `transport = \"rtu\"` uses a serial port; use `address` for TCP",
                    );
                }
                let Some(addr) = self.address.as_deref() else {
                    p.push(
                        format!("{at}.address"),
                        "missing: TCP devices need `address = \"host:port\"`",
                    );
                    return None;
                };
                let endpoint = Endpoint::parse(addr)
                    .map_err(|m| p.push(format!("{at}.address"), m))
                    .ok()?;
                Some(if self.transport == TransportKind::Tcp {
                    Transport::Tcp(endpoint)
                } else {
                    Transport::RtuOverTcp(endpoint)
                })
            }
            TransportKind::Rtu => {
                if self.address.is_some() {
                    p.push(format!("{at}.address"), "an RTU device is reached through `port`, not `address` (use transport = \"rtu_over_tcp\" for a serial device server)");
                }
                let Some(name) = self.port.as_deref() else {
                    p.push(
                        format!("{at}.port"),
                        "missing: RTU devices need `port = \"<name of a [[serial_ports]] entry>\"`",
                    );
                    return None;
                };
                if let Some(line) = lines.get(name) {
                    return Some(Transport::Rtu(line.clone()));
                }
                let known: Vec<&str> = lines.keys().map(String::as_str).collect();
                p.push(
                    format!("{at}.port"),
                    format!(
                        "no serial port named \"{name}\"; defined: [{}]",
                        known.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// Validate this device with `defaults` applied; `None` when any problem was found.
    fn validate(
        &self,
        at: &str,
        defaults: &DeviceDefaults,
        lines: &BTreeMap<String, SerialLine>,
        profiles: &mut ProfileCache,
        p: &mut Problems,
    ) -> Option<Device> {
        let before = p.len();
        p.check_name(&format!("{at}.name"), &self.name);
        let transport = self.transport(at, lines, p);
        let unit_ok = match self.transport {
            // Modbus over serial line V1.02 §2.2: 1-247 are slave addresses, 0 is broadcast.
            TransportKind::Rtu | TransportKind::RtuOverTcp => (1..=247).contains(&self.unit),
            // Modbus/TCP: the unit id addresses a device behind a gateway; 0 and 255 are used
            // by devices that ignore it.
            TransportKind::Tcp => true,
        };
        if !unit_ok {
            p.push(
                format!("{at}.unit"),
                format!("{} is not a serial slave address (1-247)", self.unit),
            );
        }

        let mut points = Vec::new();
        // Where each point's conversion is written (file, path), for the sibling checks below.
        let mut origins: Vec<(Option<PathBuf>, String)> = Vec::new();
        let mut max_gap = self.max_gap;
        let mut holes = Vec::new();
        let mut device_profile = None;
        if let Some(name) = &self.profile {
            if let Some(profile) = profiles.get(&format!("{at}.profile"), name, p) {
                max_gap = max_gap.or(profile.max_gap);
                let file = profiles.file(name);
                for (j, pc) in profile.points.iter().enumerate() {
                    let pc = profile.with_defaults(pc);
                    let ov = self.override_of(at, &pc.name);
                    origins.push(conversion_origin(
                        Some(&file),
                        &format!("points[{j}]"),
                        ov.as_ref(),
                    ));
                    points.push(pc.validate(
                        Some(&file),
                        &format!("points[{j}]"),
                        profile.word_order,
                        ov,
                        p,
                    ));
                }
                for (j, h) in profile.holes.iter().enumerate() {
                    if let Some(message) = h.problem() {
                        p.push_in(&file, format!("holes[{j}]"), message);
                    }
                }
                holes.clone_from(&profile.holes);
                device_profile = Some(profile);
            }
        }
        for (j, pc) in self.points.iter().enumerate() {
            let ov = self.override_of(at, &pc.name);
            let pat = format!("{at}.points[{j}]");
            origins.push(conversion_origin(None, &pat, ov.as_ref()));
            // Inline points beside a profile read the same device: its word order and shared
            // sample time are theirs too unless they set their own (README, points table). A
            // CDAB logger's extra point decoded big-endian would be stored as good and wrong.
            let (pc, order) = match &device_profile {
                Some(profile) => (profile.with_defaults(pc), profile.word_order),
                None => (pc.clone(), WordOrder::default()),
            };
            points.push(pc.validate(None, &pat, order, ov, p));
        }
        for name in self.overrides.keys() {
            if !self.points.iter().any(|pc| &pc.name == name)
                && !self
                    .profile
                    .as_ref()
                    .and_then(|n| profiles.loaded.get(n))
                    .and_then(|r| r.as_ref().ok())
                    .is_some_and(|pr| pr.points.iter().any(|pc| &pc.name == name))
            {
                p.push(
                    format!("{at}.overrides.{name}"),
                    format!(
                        "the device has no point named \"{name}\"; overrides are keyed by the point names of its profile and inline points"
                    ),
                );
            }
        }
        check_temperature_siblings(&points, &origins, p);
        let points: Vec<Point> = points.into_iter().flatten().collect();
        for h in &holes {
            if let Some(pt) = h.overlapping_point(&points) {
                p.push(
                    format!("{at}.profile"),
                    format!(
                        "the profile's hole {} {}..={} covers registers of point \"{}\"",
                        h.function, h.first, h.last, pt.name
                    ),
                );
            }
        }
        if points.is_empty() {
            p.push(
                at,
                "has no points: give `profile = \"<name>\"` or [[devices.points]]",
            );
        }
        let mut seen = HashSet::new();
        for pt in &points {
            if !seen.insert(pt.name.as_str()) {
                p.push(format!("{at}.points"), format!("point name \"{}\" appears twice (profile and inline points share one namespace)", pt.name));
            }
        }

        // The device's own values are checked here; defaults were checked once, at `defaults`.
        check_timing(
            at,
            self.poll_interval,
            self.timeout,
            self.retries,
            self.max_backoff,
            p,
        );
        let max_gap = max_gap.unwrap_or(DEFAULT_MAX_GAP);
        if max_gap > MAX_REGISTERS_PER_READ {
            p.push(
                format!("{at}.max_gap"),
                format!("{max_gap} is more than one request can read ({MAX_REGISTERS_PER_READ})"),
            );
        }
        let mut tags = defaults.tags.clone();
        tags.extend(self.tags.clone());
        let device = Device {
            name: self.name.clone(),
            transport: transport?,
            unit: self.unit,
            points,
            poll_interval: self
                .poll_interval
                .or(defaults.poll_interval)
                .unwrap_or(DEFAULT_POLL_INTERVAL),
            timeout: self.timeout.or(defaults.timeout).unwrap_or(DEFAULT_TIMEOUT),
            retries: self.retries.or(defaults.retries).unwrap_or(DEFAULT_RETRIES),
            max_backoff: self
                .max_backoff
                .or(defaults.max_backoff)
                .unwrap_or(DEFAULT_MAX_BACKOFF),
            max_gap,
            holes,
            tags,
        };
        (p.len() == before).then_some(device)
    }
}

impl PointConfig {
    /// Validate one point; `file` is the profile file it came from (`None`: the config file).
    fn validate(
        &self,
        file: Option<&Path>,
        at: &str,
        default_order: WordOrder,
        ov: Option<(&PointOverride, String)>,
        p: &mut Problems,
    ) -> Option<Point> {
        let mut found = Vec::new();
        let (conversion, conv_file, conv_at) = match &ov {
            Some((o, oat)) if o.conversion.is_some() => {
                (o.conversion.as_ref(), None, format!("{oat}.conversion"))
            }
            _ => (self.conversion.as_ref(), file, format!("{at}.conversion")),
        };
        let sign = ov.as_ref().and_then(|(o, _)| o.sign).unwrap_or(self.sign);
        let mut conversion_ok = true;
        let conversion = match conversion.map(ConversionConfig::validate) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(errors)) => {
                conversion_ok = false;
                for (field, message) in errors {
                    let at = format!("{conv_at}.{field}");
                    match conv_file {
                        Some(f) => p.push_in(f, at, message),
                        None => p.push(at, message),
                    }
                }
                None
            }
        };
        if self.name.trim().is_empty() {
            found.push("name must not be empty".to_owned());
        }
        let bits = self.function.is_bits();
        match (self.data_type, bits, self.bit) {
            (DataType::Bool, true, Some(_)) => {
                found.push(format!(
                    "`bit` is only for a bool inside a register; {} already holds single bits",
                    self.function
                ));
            }
            (DataType::Bool, false, None) => {
                found.push(
                    "a bool in a register table needs `bit = 0..15` (which bit of the register)"
                        .into(),
                );
            }
            (DataType::Bool, false, Some(b)) if b > 15 => {
                found.push(format!("bit {b} is not 0..15"));
            }
            (t, true, _) if t != DataType::Bool => {
                found.push(format!("type {t:?} needs a register table (holding or input); {} holds single bits: use type = \"bool\"", self.function).to_lowercase());
            }
            (t, false, Some(_)) if t != DataType::Bool => {
                found.push("`bit` is only for type = \"bool\"".into());
            }
            _ => {}
        }
        if !self.scale.is_finite() || self.scale == 0.0 {
            found.push(format!(
                "scale {} must be a finite, non-zero number",
                self.scale
            ));
        }
        if !self.offset.is_finite() {
            found.push(format!("offset {} must be finite", self.offset));
        }
        if self.time_address.is_some() && bits {
            found.push("time_address needs a register table (holding or input)".into());
        }
        if self.writable {
            found.extend(writable_problem(
                self,
                conversion.is_some() || sign != Sign::Positive,
            ));
        }
        let point = Point {
            name: self.name.clone(),
            function: self.function,
            address: self.address,
            data_type: self.data_type,
            word_order: self.word_order.unwrap_or(default_order),
            bit: if bits { None } else { self.bit },
            scale: self.scale,
            offset: self.offset,
            channel: Channel { conversion, sign },
            unit: self.unit.clone(),
            quantity: self.quantity,
            time: self
                .time_address
                .map(|t| (t, self.time_word_order.unwrap_or(default_order))),
            writable: self.writable,
        };
        if let Some(msg) = super::plan::point_span_error(&point) {
            found.push(msg);
        }
        let ok = found.is_empty() && conversion_ok;
        for message in found {
            match file {
                Some(f) => p.push_in(f, at, message),
                None => p.push(at, message),
            }
        }
        ok.then_some(point)
    }
}

/// Why a point declared `writable` cannot be written, if it cannot. Only coils (FC 05) and
/// whole holding-register values (FC 06 / 16) are written (Modbus application protocol V1.1b3
/// §6.5, §6.6, §6.12); a value goes out as `(value − offset) / scale` in the point's own type
/// and word order, so a conversion or sign (not invertible in general) is refused, and so is a
/// bit inside a register (writing it would overwrite the register's other bits).
fn writable_problem(point: &PointConfig, converted: bool) -> Option<String> {
    match point.function {
        Function::Discrete | Function::Input => Some(format!(
            "writable = true needs a coil or a holding register; {} is read-only in Modbus",
            point.function
        )),
        Function::Holding if point.bit.is_some() => Some(
            "writable = true on one bit of a register is not supported (it would overwrite the other bits); \
             declare the whole register (type = \"u16\") writable"
                .into(),
        ),
        _ if converted => Some(
            "a writable point takes the device's number: remove its conversion and sign (scale and offset are fine)"
                .into(),
        ),
        _ => None,
    }
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

    /// An extra point written inline beside a CDAB profile reads the same device: the
    /// profile's word order and shared sample time apply to it, as the README's points table
    /// says (it was decoded big-endian: a wrong value stored as good).
    #[test]
    fn inline_points_beside_a_profile_take_its_word_order_and_sample_time() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        std::fs::write(dir.path().join("logger.toml"), PROFILE)
            .unwrap_or_else(|e| panic!("write profile: {e}"));
        let text = format!(
            "site = \"s\"\ngateway_id = \"g\"\ndata_dir = \"/tmp/anju-test\"\nprofiles_dir = \"{}\"\n\
             [[devices]]\nname = \"log-1\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\nprofile = \"logger\"\n\
             [[devices.points]]\nname = \"extra\"\nfunction = \"holding\"\naddress = 2\ntype = \"f32\"\nquantity = \"temperature\"\n\
             [[devices.points]]\nname = \"own\"\nfunction = \"holding\"\naddress = 4\ntype = \"f32\"\nquantity = \"temperature\"\nword_order = \"abcd\"\n",
            dir.path().display()
        );
        let cfg = Config::from_str_at(&text, &dir.path().join("gateway.toml"))
            .unwrap_or_else(|e| panic!("{:?}", e.problems()));
        let d = &cfg.devices[0];
        let point = |name: &str| {
            d.points
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("no point {name}"))
        };
        assert_eq!(point("extra").word_order, WordOrder::Cdab);
        assert_eq!(point("extra").time, Some((60, WordOrder::Cdab)));
        // Its own word order wins.
        assert_eq!(point("own").word_order, WordOrder::Abcd);
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

    const VW_PROFILE: &str = r#"
name = "vw"
word_order = "cdab"
[[points]]
name = "freq"
function = "holding"
address = 0
type = "f32"
unit = "kPa"
quantity = "pore_pressure"
conversion = { type = "vibrating_wire", gauge_factor = -0.1, zero_reading = 9000.0, thermal_factor = 0.1, zero_temperature = 20.0, temperature = "therm" }
[[points]]
name = "therm"
function = "holding"
address = 2
type = "f32"
unit = "°C"
quantity = "temperature"
conversion = { type = "ntc_beta", r25 = 10000.0, beta = 3950.0 }
"#;

    fn load_device(profile: &str, device_extra: &str) -> Result<Config, Vec<String>> {
        let dir = tempfile::tempdir().map_err(|e| vec![e.to_string()])?;
        std::fs::write(dir.path().join("vw.toml"), profile).map_err(|e| vec![e.to_string()])?;
        let text = format!(
            "site = \"s\"\ngateway_id = \"g\"\ndata_dir = \"/tmp/anju-test\"\nprofiles_dir = \"{}\"\n\
             [[devices]]\nname = \"pz-1\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\nprofile = \"vw\"\n{device_extra}",
            dir.path().display()
        );
        Config::from_str_at(&text, &dir.path().join("gateway.toml")).map_err(|e| {
            e.problems()
                .into_iter()
                .map(|p| {
                    // The temp dir differs per run: keep the file name only.
                    p.replace(&dir.path().display().to_string(), "<dir>")
                })
                .collect()
        })
    }

    /// Geokon 4500 manual Appendix C: G = −0.1795 kPa/digit, R0 = 9082 digits, a reading of
    /// 6749 digits → 418.8 kPa; §5.2 thermal factor K = 0.1319 kPa/°C. The device's own sheet
    /// overrides the profile's placeholder calibration. Its thermistor is a 10 kΩ B3950 NTC:
    /// 10 000 Ω = 25 °C and 3 588 Ω = 50 °C (the published 10 kΩ 3950 table). With T0 = 25 °C:
    /// 10 000 Ω → no correction, 418.8 kPa; 3 588 Ω → + 0.1319 × 25 = +3.30 kPa, 422.1 kPa.
    #[test]
    fn a_vw_point_is_corrected_with_its_thermistor_sibling_from_the_same_poll() {
        use crate::model::{Quality, Reading, Series};
        use std::sync::Arc;
        let cfg = load_device(
            VW_PROFILE,
            "[devices.overrides.freq]\nconversion = { type = \"vibrating_wire\", gauge_factor = -0.1795, zero_reading = 9082.0, thermal_factor = 0.1319, zero_temperature = 25.0, temperature = \"therm\" }\n",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let points = &cfg.devices[0].points;
        let series = |name: &str| {
            Arc::new(Series::new(
                "s",
                "g",
                "pz-1",
                name,
                crate::model::QuantityKind::Other,
                "",
                &BTreeMap::new(),
            ))
        };
        let hz = (6749.0_f64 * 1000.0).sqrt();
        let poll = |therm: Option<Reading>| {
            let mut readings = vec![Reading::good(series("freq"), 1, hz)];
            readings.extend(therm);
            super::super::decode::convert_poll(points, &mut readings);
            readings
        };
        let r = poll(Some(Reading::good(series("therm"), 1, 10_000.0)));
        assert!(
            (r[0].value.unwrap_or(f64::NAN) - 418.8).abs() < 0.05,
            "{r:?}"
        );
        assert_eq!(r[0].raw, Some(hz));
        assert!((r[1].value.unwrap_or(f64::NAN) - 25.0).abs() < 1e-9);
        assert_eq!(r[1].raw, Some(10_000.0));
        let r = poll(Some(Reading::good(series("therm"), 1, 3_588.0)));
        assert!(
            (r[0].value.unwrap_or(f64::NAN) - 422.1).abs() < 0.05,
            "{r:?}"
        );
        // The thermistor timed out, or was not read in this poll: flagged, raw kept.
        for therm in [
            Some(Reading::bad(series("therm"), 1, Quality::Timeout)),
            None,
        ] {
            let r = poll(therm);
            assert_eq!(
                (r[0].value, r[0].raw, r[0].quality),
                (None, Some(hz), Quality::CorrectionUnavailable)
            );
        }
        // An open thermistor (0 Ω) is itself not convertible, so the pressure is not corrected.
        let r = poll(Some(Reading::good(series("therm"), 1, 0.0)));
        assert_eq!(r[1].quality, Quality::NotConvertible);
        assert_eq!(r[0].quality, Quality::CorrectionUnavailable);
    }

    #[test]
    fn conversion_problems_name_the_file_the_path_and_the_fix() {
        let bad_sibling = VW_PROFILE.replace("temperature = \"therm\"", "temperature = \"nope\"");
        let e = load_device(&bad_sibling, "").err().unwrap_or_default();
        assert!(
            e.iter().any(|p| p.starts_with(
                "<dir>/vw.toml: points[0].conversion.temperature: no point named \"nope\""
            ) && p.contains("one of: therm")),
            "{e:?}"
        );
        let not_temp = VW_PROFILE.replacen("quantity = \"temperature\"", "quantity = \"other\"", 1);
        let e = load_device(&not_temp, "").err().unwrap_or_default();
        assert!(
            e.iter().any(|p| p.contains(
                "points[0].conversion.temperature: point \"therm\" measures other, not temperature"
            )),
            "{e:?}"
        );
        let e = load_device(
            VW_PROFILE,
            "sign = 1\n[devices.overrides.fre]\nsign = -1\n[devices.overrides.therm]\nconversion = { type = \"ntc_beta\", r25 = -1.0, beta = 3950.0 }\n",
        )
        .err()
        .unwrap_or_default();
        assert!(e.iter().any(|p| p.contains("devices[0].sign")), "{e:?}");
        let e = load_device(
            VW_PROFILE,
            "[devices.overrides.fre]\nsign = -1\n[devices.overrides.therm]\nconversion = { type = \"ntc_beta\", r25 = -1.0, beta = 3950.0 }\n",
        )
        .err()
        .unwrap_or_default();
        assert!(
            e.iter().any(|p| p.ends_with("devices[0].overrides.fre: the device has no point named \"fre\"; overrides are keyed by the point names of its profile and inline points")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|p| p.contains("devices[0].overrides.therm.conversion.r25: must be above 0")),
            "{e:?}"
        );
    }

    /// The example profiles of `config/example-profiles` load, and a device's own calibration
    /// sheet replaces the profile's with `overrides`.
    #[test]
    fn example_profiles_load_and_devices_override_the_calibration() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/example-profiles");
        let text = format!(
            "site = \"s\"\ngateway_id = \"g\"\ndata_dir = \"/tmp/anju-test\"\nprofiles_dir = \"{}\"\n\
             [[devices]]\nname = \"pz-7\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\nprofile = \"vw-piezometer-hz\"\n\
             [devices.overrides.freq]\nconversion = {{ type = \"vibrating_wire\", gauge_factor = -0.2, zero_reading = 9000.0 }}\n\
             [[devices]]\nname = \"slab-1\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:503\"\nprofile = \"ntc-10k-8ch\"\n\
             [devices.overrides.t2]\nsign = -1\n",
            dir.display()
        );
        let cfg = Config::from_str_at(&text, &dir.join("gateway.toml"))
            .unwrap_or_else(|e| panic!("{:?}", e.problems()));
        let pz = &cfg.devices[0].points[0].channel;
        assert_eq!(
            pz.conversion,
            Some(crate::conversion::Conversion::VibratingWire {
                input: crate::conversion::VwInput::Hz,
                gauge_factor: -0.2,
                zero_reading: 9000.0,
                thermal: None
            })
        );
        assert_eq!(cfg.devices[1].points[1].channel.sign, Sign::Negative);
        assert_eq!(cfg.devices[1].points[0].channel.sign, Sign::Positive);
    }

    /// `writable = true` only where a value can be written back as the device's number.
    #[test]
    fn writable_points_are_coils_or_whole_holding_values_without_conversion() {
        let profile = |point: &str| {
            format!("name = \"logger\"\n[[points]]\nname = \"p\"\nquantity = \"other\"\nwritable = true\n{point}")
        };
        let refused = |point: &str, needle: &str| {
            let problems = load(&profile(point))
                .err()
                .map(|e| e.problems())
                .unwrap_or_default();
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains("points[0]") && p.contains(needle)),
                "{point}: {problems:#?}"
            );
        };
        refused(
            "function = \"input\"\naddress = 0\ntype = \"u16\"\n",
            "needs a coil or a holding register",
        );
        refused(
            "function = \"discrete\"\naddress = 0\ntype = \"bool\"\n",
            "needs a coil or a holding register",
        );
        refused(
            "function = \"holding\"\naddress = 0\ntype = \"bool\"\nbit = 3\n",
            "one bit of a register is not supported",
        );
        refused(
            "function = \"holding\"\naddress = 0\ntype = \"u16\"\nsign = -1\n",
            "remove its conversion and sign",
        );
        let cfg = load(&profile(
            "function = \"holding\"\naddress = 0\ntype = \"f32\"\nscale = 0.5\n",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.devices[0].points[0].writable);
        let cfg = load(&profile(
            "function = \"coil\"\naddress = 4\ntype = \"bool\"\n",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.devices[0].points[0].writable);
    }
}
