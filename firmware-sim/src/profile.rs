//! Device profiles (`config/profiles/*.toml`) as the simulator reads them.
//!
//! Owns the simulator's own serde structs for the profile files and their validation into a
//! [`Profile`]. The simulator shares only the DATA with the gateway, never its code: if both
//! used one decoder, a byte-order bug would cancel out and the system tests could not see it.
//! This module does not encode values ([`crate::encode`]) nor hold register images
//! ([`crate::device`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::quantity::Quantity;
use crate::validation::{parse_toml, ScenarioError};

/// Highest bit index inside a 16-bit register (bit 0 is the least significant).
pub const MAX_REGISTER_BIT: u8 = 15;

/// Modbus register table, named as device manuals name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// FC 01, coils (read/write bits).
    Coil,
    /// FC 02, discrete inputs (read-only bits).
    Discrete,
    /// FC 03, holding registers.
    Holding,
    /// FC 04, input registers.
    Input,
}

impl Function {
    /// All tables, in function-code order.
    pub const ALL: [Self; 4] = [Self::Coil, Self::Discrete, Self::Holding, Self::Input];

    /// The read function code on the wire (Modbus application protocol V1.1b3 §6.1-6.4).
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Coil => 0x01,
            Self::Discrete => 0x02,
            Self::Holding => 0x03,
            Self::Input => 0x04,
        }
    }

    /// The table read by a function code, if it is one of the four read functions.
    #[must_use]
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0x01 => Some(Self::Coil),
            0x02 => Some(Self::Discrete),
            0x03 => Some(Self::Holding),
            0x04 => Some(Self::Input),
            _ => None,
        }
    }

    /// True for the 1-bit tables.
    #[must_use]
    pub const fn is_bits(self) -> bool {
        matches!(self, Self::Coil | Self::Discrete)
    }

    /// Dense index 0..4, for per-table arrays.
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Self::Coil => 0,
            Self::Discrete => 1,
            Self::Holding => 2,
            Self::Input => 3,
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
        f.write_str(name)
    }
}

/// Raw type of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// One coil/discrete bit, or one bit of a register (with `bit`).
    Bool,
    /// Unsigned 16-bit, one register.
    U16,
    /// Signed 16-bit two's complement, one register.
    I16,
    /// Unsigned 32-bit, two registers.
    U32,
    /// Signed 32-bit, two registers.
    I32,
    /// Unsigned 64-bit, four registers.
    U64,
    /// Signed 64-bit, four registers.
    I64,
    /// IEEE 754 binary32, two registers.
    F32,
    /// IEEE 754 binary64, four registers.
    F64,
}

impl DataType {
    /// Registers the value occupies (1 for `Bool`, as a coil or as a register bit).
    #[must_use]
    pub const fn registers(self) -> u16 {
        match self {
            Self::Bool | Self::U16 | Self::I16 => 1,
            Self::U32 | Self::I32 | Self::F32 => 2,
            Self::U64 | Self::I64 | Self::F64 => 4,
        }
    }
}

/// Byte order of a 32/64-bit value over 16-bit registers, in libmodbus letters (docs/DOMAIN.md
/// §Modbus). The value's big-endian bytes are `A B C D` (`A..H` for 64-bit):
/// - `abcd`: registers `AB CD` (Modbus's own big-endian convention);
/// - `cdab`: word order reversed, `CD AB` (for 64-bit all four words reversed: `GH EF CD AB`);
/// - `badc`: words kept, bytes swapped inside each word, `BA DC`;
/// - `dcba`: fully little-endian, `DC BA`.
///
/// 16-bit values are always one big-endian register; the order does not apply to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// Big-endian words and bytes.
    #[default]
    Abcd,
    /// Words reversed, bytes big-endian.
    Cdab,
    /// Words kept, bytes swapped within each word.
    Badc,
    /// Words reversed and bytes swapped: fully little-endian.
    Dcba,
}

/// One `[[points]]` entry as written in a profile file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoint {
    name: String,
    function: Function,
    address: u16,
    #[serde(rename = "type")]
    data_type: DataType,
    #[serde(default)]
    word_order: Option<WordOrder>,
    #[serde(default)]
    bit: Option<u8>,
    #[serde(default = "one")]
    scale: f64,
    #[serde(default)]
    offset: f64,
    #[serde(default)]
    unit: String,
    quantity: Quantity,
    #[serde(default)]
    time_address: Option<u16>,
    #[serde(default)]
    time_word_order: Option<WordOrder>,
    #[serde(default)]
    writable: bool,
}

const fn one() -> f64 {
    1.0
}

/// A profile file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(default)]
    #[allow(dead_code)] // read for deny_unknown_fields; the simulator has no use for it
    description: String,
    #[serde(default)]
    word_order: WordOrder,
    #[serde(default)]
    #[allow(dead_code)] // a gateway read-planning hint; the simulator serves any request shape
    max_gap: Option<u16>,
    points: Vec<RawPoint>,
}

/// A validated point with every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Point name, unique within the profile; the truth's `point`.
    pub name: String,
    /// Register table.
    pub function: Function,
    /// 0-based protocol address of the first register (or of the bit).
    pub address: u16,
    /// Raw type.
    pub data_type: DataType,
    /// Word order (point override, else the profile's).
    pub word_order: WordOrder,
    /// For a bool on a register table: which bit, 0 = LSB.
    pub bit: Option<u8>,
    /// Engineering value = raw × scale + offset.
    pub scale: f64,
    /// Engineering value = raw × scale + offset.
    pub offset: f64,
    /// Engineering unit.
    pub unit: String,
    /// What the point measures; picks the value model.
    pub quantity: Quantity,
    /// Sample-time u32 (Unix seconds): address in the same table and its word order.
    pub time: Option<(u16, WordOrder)>,
    /// The master may write it (a relay coil, a setting register): the device keeps what was
    /// written instead of sampling a value.
    pub writable: bool,
}

impl Point {
    /// Registers (or bits) the point occupies.
    #[must_use]
    pub const fn width(&self) -> u16 {
        self.data_type.registers()
    }
}

/// A validated profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Profile name (= file stem).
    pub name: String,
    /// Points, in file order.
    pub points: Vec<Point>,
}

/// All profiles of a directory, by name.
#[derive(Debug, Clone, Default)]
pub struct ProfileSet {
    dir: PathBuf,
    profiles: BTreeMap<String, Profile>,
}

impl ProfileSet {
    /// Loads every `*.toml` in `dir`.
    ///
    /// # Errors
    /// The directory cannot be listed, or a profile file is unreadable or invalid (the error names
    /// the file and the entry).
    pub fn load_dir(dir: &Path) -> Result<Self, ScenarioError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ScenarioError::Read {
            file: dir.to_path_buf(),
            source,
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ScenarioError::Read {
                file: dir.to_path_buf(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
        files.sort();
        let mut profiles = BTreeMap::new();
        for file in files {
            let profile = load_profile(&file)?;
            profiles.insert(profile.name.clone(), profile);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            profiles,
        })
    }

    /// The directory the profiles came from.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A profile by name.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// Profile names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }
}

/// Reads and validates one profile file.
///
/// # Errors
/// Unreadable file, TOML/shape error, or a rule broken (see `validate`).
pub fn load_profile(file: &Path) -> Result<Profile, ScenarioError> {
    let text = std::fs::read_to_string(file).map_err(|source| ScenarioError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let raw: RawProfile = parse_toml(file, &text)?;
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    validate(raw, &stem).map_err(|(path, message)| ScenarioError::Invalid {
        file: file.to_path_buf(),
        path,
        message,
    })
}

/// What a register address is used for, to find overlaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Part of a value point (index into the points).
    Value(usize),
    /// Bits of a register shared by bool points (mask of bits in use).
    Bits(u16),
    /// Part of a sample-time u32 with this word order.
    Time(WordOrder),
}

fn validate(raw: RawProfile, stem: &str) -> Result<Profile, (String, String)> {
    if raw.name != stem {
        return Err((
            "name".into(),
            format!(
                "profile name {:?} must equal the file stem {stem:?}",
                raw.name
            ),
        ));
    }
    if raw.points.is_empty() {
        return Err(("points".into(), "a profile needs at least one point".into()));
    }
    let mut names = HashMap::new();
    let mut used: HashMap<(Function, u16), Use> = HashMap::new();
    let mut points = Vec::with_capacity(raw.points.len());
    for (i, p) in raw.points.into_iter().enumerate() {
        let at = |field: &str| format!("points[{i}].{field}");
        if p.name.is_empty() {
            return Err((at("name"), "empty point name".into()));
        }
        if let Some(first) = names.insert(p.name.clone(), i) {
            return Err((
                at("name"),
                format!("duplicate point name {:?} (also points[{first}])", p.name),
            ));
        }
        if !p.scale.is_finite() || p.scale == 0.0 {
            return Err((
                at("scale"),
                format!("scale must be finite and non-zero, got {}", p.scale),
            ));
        }
        if !p.offset.is_finite() {
            return Err((at("offset"), "offset must be finite".into()));
        }
        match (p.function.is_bits(), p.data_type, p.bit) {
            (true, DataType::Bool, None) | (false, DataType::Bool, Some(_)) => {}
            (true, DataType::Bool, Some(_)) => {
                return Err((
                    at("bit"),
                    "`bit` is only for a bool inside a register".into(),
                ))
            }
            (true, _, _) => {
                return Err((
                    at("type"),
                    format!("{} tables hold bits: type must be bool", p.function),
                ))
            }
            (false, DataType::Bool, None) => {
                return Err((
                    at("bit"),
                    "a bool on a register table needs `bit` (0-15)".into(),
                ))
            }
            (false, _, Some(_)) => return Err((at("bit"), "`bit` needs type = \"bool\"".into())),
            (false, _, None) => {}
        }
        if let Some(bit) = p.bit {
            if bit > MAX_REGISTER_BIT {
                return Err((at("bit"), format!("bit {bit} is above {MAX_REGISTER_BIT}")));
            }
        }
        let width = p.data_type.registers();
        let last = u32::from(p.address) + u32::from(width) - 1;
        if last > u32::from(u16::MAX) {
            return Err((at("address"), format!("point ends at {last}, above 65535")));
        }
        for a in p.address..=p.address.saturating_add(width - 1) {
            let key = (p.function, a);
            let prev = used.get(&key).copied();
            let next = match (prev, p.bit) {
                (None, None) => Use::Value(i),
                (None, Some(bit)) => Use::Bits(1 << bit),
                (Some(Use::Bits(mask)), Some(bit)) if mask & (1 << bit) == 0 => {
                    Use::Bits(mask | (1 << bit))
                }
                (Some(_), _) => {
                    return Err((
                        at("address"),
                        format!("{} address {a} overlaps another point", p.function),
                    ))
                }
            };
            used.insert(key, next);
        }
        let time_order = p.time_word_order.unwrap_or(raw.word_order);
        let time = match p.time_address {
            None if p.time_word_order.is_some() => {
                return Err((at("time_word_order"), "needs time_address".into()))
            }
            None => None,
            Some(_) if p.function.is_bits() => {
                return Err((
                    at("time_address"),
                    "a sample time lives in registers, not in a bit table".into(),
                ))
            }
            Some(t) => {
                if u32::from(t) + 1 > u32::from(u16::MAX) {
                    return Err((
                        at("time_address"),
                        format!("time u32 at {t} ends above 65535"),
                    ));
                }
                Some((t, time_order))
            }
        };
        points.push(Point {
            name: p.name,
            function: p.function,
            address: p.address,
            data_type: p.data_type,
            word_order: p.word_order.unwrap_or(raw.word_order),
            bit: p.bit,
            scale: p.scale,
            offset: p.offset,
            unit: p.unit,
            quantity: p.quantity,
            time,
            writable: p.writable,
        });
    }
    // Time registers last, so a clash with a value point is reported whatever the file order.
    for (i, p) in points.iter().enumerate() {
        let Some((t, order)) = p.time else { continue };
        for a in [t, t + 1] {
            let key = (p.function, a);
            match used.get(&key).copied() {
                None => {
                    used.insert(key, Use::Time(order));
                }
                Some(Use::Time(o)) if o == order => {}
                Some(Use::Time(_)) => {
                    return Err((
                        format!("points[{i}].time_word_order"),
                        format!("time u32 at {t} is shared with a different word order"),
                    ))
                }
                Some(_) => {
                    return Err((
                        format!("points[{i}].time_address"),
                        format!("time u32 at {t} overlaps a value point"),
                    ))
                }
            }
        }
    }
    Ok(Profile {
        name: raw.name,
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(text: &str) -> Result<Profile, (String, String)> {
        let raw: RawProfile = toml::from_str(text).expect("toml");
        validate(raw, "p")
    }

    #[test]
    fn defaults_resolve_from_the_profile() {
        let p = profile(
            r#"name = "p"
word_order = "cdab"
[[points]]
name = "a"
function = "input"
address = 4
type = "f32"
quantity = "level"
time_address = 40
"#,
        )
        .expect("valid");
        let a = &p.points[0];
        assert_eq!(a.word_order, WordOrder::Cdab);
        assert_eq!(a.scale, 1.0);
        assert_eq!(a.offset, 0.0);
        assert_eq!(a.time, Some((40, WordOrder::Cdab)));
    }

    #[test]
    fn overlapping_points_are_rejected_with_their_path() {
        let err = profile(
            r#"name = "p"
[[points]]
name = "a"
function = "holding"
address = 0
type = "u32"
quantity = "other"
[[points]]
name = "b"
function = "holding"
address = 1
type = "u16"
quantity = "other"
"#,
        )
        .expect_err("overlap");
        assert_eq!(err.0, "points[1].address");
    }

    #[test]
    fn bools_may_share_a_register_on_different_bits() {
        let ok = profile(
            r#"name = "p"
[[points]]
name = "a"
function = "input"
address = 3
type = "bool"
bit = 0
quantity = "status"
[[points]]
name = "b"
function = "input"
address = 3
type = "bool"
bit = 5
quantity = "status"
"#,
        );
        assert!(ok.is_ok());
        let same_bit = profile(
            r#"name = "p"
[[points]]
name = "a"
function = "input"
address = 3
type = "bool"
bit = 0
quantity = "status"
[[points]]
name = "b"
function = "input"
address = 3
type = "bool"
bit = 0
quantity = "status"
"#,
        )
        .expect_err("same bit");
        assert_eq!(same_bit.0, "points[1].address");
    }

    #[test]
    fn time_register_may_not_overlap_a_value() {
        let err = profile(
            r#"name = "p"
[[points]]
name = "a"
function = "input"
address = 0
type = "u32"
quantity = "other"
time_address = 1
"#,
        )
        .expect_err("overlap");
        assert_eq!(err.0, "points[0].time_address");
    }

    #[test]
    fn non_bool_on_a_bit_table_is_rejected() {
        let err = profile(
            r#"name = "p"
[[points]]
name = "a"
function = "coil"
address = 0
type = "u16"
quantity = "other"
"#,
        )
        .expect_err("coil u16");
        assert_eq!(err.0, "points[0].type");
    }
}
