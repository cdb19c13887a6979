//! MQTT payloads of the simulated sensor nodes, byte for byte.
//!
//! Owns the JSON node forms (batch: ISO-8601 timestamp and a `readings` array; single: one
//! sensor with an epoch-milliseconds `ts`), the CIGEM `$dp` frames (3-byte header + JSON,
//! docs/DOMAIN.md §CIGEM) and the UTC ISO-8601 formatting they need. Objects keep their field order
//! (`X, Y, Z, angle, AZI`, as devices send them). It decides no values and publishes nothing.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// Milliseconds per day.
const MS_PER_DAY: i64 = 86_400_000;
/// CIGEM header: byte 0 = type, bytes 1-2 = JSON length, big-endian.
pub const CIGEM_HEADER_LEN: usize = 3;

/// A JSON value with ordered objects (serde_json's own map would sort the keys).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// A number (finite).
    Num(f64),
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, in insertion order.
    Obj(Vec<(String, Json)>),
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Num(v) => s.serialize_f64(*v),
            Self::Int(v) => s.serialize_i64(*v),
            Self::Str(v) => s.serialize_str(v),
            Self::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Self::Obj(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl Json {
    /// Compact JSON text. Numbers use the shortest form that parses back to the same f64, so
    /// the number a subscriber parses is exactly the value given here.
    #[must_use]
    pub fn to_text(&self) -> String {
        // Serializing this enum to a String cannot fail (no maps with non-string keys).
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An object from `(key, value)` pairs.
pub fn obj<K: Into<String>>(fields: impl IntoIterator<Item = (K, Json)>) -> Json {
    Json::Obj(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// `value` rounded to `decimals` places, as the nearest f64 to that decimal (so it prints as
/// the short decimal, e.g. 21.53, and parses back to itself).
#[must_use]
pub fn round_to(value: f64, decimals: u8) -> f64 {
    let p = 10_f64.powi(i32::from(decimals));
    // n and p are exact integers in f64 (|n| < 2^53 for any plausible value), so n / p is the
    // correctly rounded double of the decimal n·10^-d, which is what parsing "n·10^-d" gives.
    (value * p).round() / p
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant,
/// "chrono-Compatible Low-Level Date Algorithms", civil_from_days).
const fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    // d and m are in their small ranges above, so the casts are exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (y, m as u32, d as u32)
}

/// `2026-11-29T10:00:00.000Z` for Unix milliseconds.
#[must_use]
pub fn iso8601_ms(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(MS_PER_DAY);
    let ms_of_day = unix_ms.rem_euclid(MS_PER_DAY);
    let (y, mo, d) = civil_from_days(days);
    let h = ms_of_day / 3_600_000;
    let mi = ms_of_day / 60_000 % 60;
    let s = ms_of_day / 1000 % 60;
    let ms = ms_of_day % 1000;
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// One reading of a batch message.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading<'a> {
    /// Sensor id.
    pub sensor: &'a str,
    /// Value (already rounded).
    pub value: f64,
    /// Unit.
    pub unit: &'a str,
}

/// `{"ts":"<ISO ms>","readings":[{"sensor":..,"value":..,"unit":..},..]}`.
#[must_use]
pub fn json_batch(unix_ms: i64, readings: &[Reading<'_>]) -> String {
    let readings = readings
        .iter()
        .map(|r| {
            obj([
                ("sensor", Json::Str(r.sensor.to_owned())),
                ("value", Json::Num(r.value)),
                ("unit", Json::Str(r.unit.to_owned())),
            ])
        })
        .collect();
    obj([
        ("ts", Json::Str(iso8601_ms(unix_ms))),
        ("readings", Json::Arr(readings)),
    ])
    .to_text()
}

/// `{"sensor":..,"value":..,"ts":<epoch ms>}`.
#[must_use]
pub fn json_single(sensor: &str, value: f64, unix_ms: i64) -> String {
    obj([
        ("sensor", Json::Str(sensor.to_owned())),
        ("value", Json::Num(value)),
        ("ts", Json::Int(unix_ms)),
    ])
    .to_text()
}

/// CIGEM message types (byte 0 of the `$dp` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CigemType {
    /// Type 1: JSON without timestamps (device status).
    Status,
    /// Type 2: timestamped data.
    Data,
}

impl CigemType {
    /// The header byte.
    #[must_use]
    pub const fn byte(self) -> u8 {
        match self {
            Self::Status => 1,
            Self::Data => 2,
        }
    }
}

/// Errors building a CIGEM frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The JSON does not fit the 16-bit length field.
    #[error("CIGEM JSON of {0} bytes exceeds the 65535-byte length field")]
    TooLong(usize),
}

/// The `$dp` frame: type byte, big-endian u16 JSON length, JSON.
///
/// # Errors
/// JSON longer than 65535 bytes.
pub fn cigem_frame(kind: CigemType, json: &str) -> Result<Vec<u8>, FrameError> {
    let len = u16::try_from(json.len()).map_err(|_| FrameError::TooLong(json.len()))?;
    let mut out = Vec::with_capacity(CIGEM_HEADER_LEN + json.len());
    out.push(kind.byte());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(json.as_bytes());
    Ok(out)
}

/// The value of one CIGEM data point at one time: a scalar or named fields.
#[derive(Debug, Clone, PartialEq)]
pub enum CigemValue {
    /// `{"<ts>": v}`.
    Scalar(f64),
    /// `{"<ts>": {"X": .., ...}}`, in field order.
    Fields(Vec<(&'static str, f64)>),
}

/// Type-2 JSON: `{"<id>":{"<point>":{"<ISO ts>":<value or fields>},..}}`.
#[must_use]
pub fn cigem_data_json(device_id: &str, unix_ms: i64, points: &[(&str, CigemValue)]) -> String {
    let ts = iso8601_ms(unix_ms);
    let points = points.iter().map(|(id, v)| {
        let value = match v {
            CigemValue::Scalar(x) => Json::Num(*x),
            CigemValue::Fields(fs) => obj(fs.iter().map(|(k, x)| (*k, Json::Num(*x)))),
        };
        (*id, obj([(ts.clone(), value)]))
    });
    obj([(device_id, obj(points))]).to_text()
}

/// Device status of a CIGEM device (the `S1_ZT_1` object).
#[derive(Debug, Clone, PartialEq)]
pub struct CigemStatus<'a> {
    /// External (battery) supply, V.
    pub ext_power_volt: f64,
    /// Solar panel, V.
    pub solar_volt: f64,
    /// Battery charge, %.
    pub battery_dump_energy: i64,
    /// 4G signal, dBm.
    pub signal_4g: i64,
    /// Per data point: 0 normal, -1 power error, -2 data error, -3 no data.
    pub sensor_state: Vec<(&'a str, i64)>,
}

/// Type-1 JSON: `{"<id>":{"S1_ZT_1":{"ext_power_volt":..,..,"sensor_state":{..}}}}`.
#[must_use]
pub fn cigem_status_json(device_id: &str, status: &CigemStatus<'_>) -> String {
    let state = obj(status.sensor_state.iter().map(|(k, v)| (*k, Json::Int(*v))));
    let body = obj([
        ("ext_power_volt", Json::Num(status.ext_power_volt)),
        ("solar_volt", Json::Num(status.solar_volt)),
        ("battery_dump_energy", Json::Int(status.battery_dump_energy)),
        ("signal_4g", Json::Int(status.signal_4g)),
        ("sensor_state", state),
    ]);
    obj([(device_id, obj([("S1_ZT_1", body)]))]).to_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_timestamps() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        // Values checked with Python's datetime.fromtimestamp(ms / 1000, UTC).
        assert_eq!(iso8601_ms(1_764_410_000_123), "2025-11-29T09:53:20.123Z");
        assert_eq!(iso8601_ms(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(iso8601_ms(951_782_400_999), "2000-02-29T00:00:00.999Z");
        assert_eq!(iso8601_ms(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn rounding_prints_short_decimals() {
        assert_eq!(Json::Num(round_to(21.534_999, 2)).to_text(), "21.53");
        assert_eq!(Json::Num(round_to(6.1849, 3)).to_text(), "6.185");
        assert_eq!(Json::Num(round_to(-5.135, 1)).to_text(), "-5.1");
        assert_eq!("21.53".parse::<f64>().ok(), Some(round_to(21.53, 2)));
    }

    #[test]
    fn batch_and_single_forms() {
        let readings = [
            Reading {
                sensor: "t1",
                value: 21.53,
                unit: "°C",
            },
            Reading {
                sensor: "t2",
                value: -0.5,
                unit: "°C",
            },
        ];
        assert_eq!(
            json_batch(1_764_410_000_000, &readings),
            r#"{"ts":"2025-11-29T09:53:20.000Z","readings":[{"sensor":"t1","value":21.53,"unit":"°C"},{"sensor":"t2","value":-0.5,"unit":"°C"}]}"#
        );
        assert_eq!(
            json_single("s1", 1.5, 1_764_410_000_123),
            r#"{"sensor":"s1","value":1.5,"ts":1764410000123}"#
        );
    }

    #[test]
    fn cigem_data_frame_bytes() {
        let json = cigem_data_json(
            "GH1",
            1_764_410_000_000,
            &[
                ("L1_LF_1", CigemValue::Scalar(10.86)),
                (
                    "L1_QJ_1",
                    CigemValue::Fields(vec![
                        ("X", 3.15),
                        ("Y", -5.14),
                        ("Z", 83.97),
                        ("angle", -6.03),
                        ("AZI", 236.18),
                    ]),
                ),
            ],
        );
        let expected = r#"{"GH1":{"L1_LF_1":{"2025-11-29T09:53:20.000Z":10.86},"L1_QJ_1":{"2025-11-29T09:53:20.000Z":{"X":3.15,"Y":-5.14,"Z":83.97,"angle":-6.03,"AZI":236.18}}}}"#;
        assert_eq!(json, expected);
        let frame = cigem_frame(CigemType::Data, &json).expect("frame");
        // 0x02, then the length 151 = 0x0097 big-endian.
        assert_eq!(expected.len(), 151);
        assert_eq!(&frame[..3], &[0x02, 0x00, 0x97]);
        assert_eq!(&frame[3..], expected.as_bytes());
    }

    #[test]
    fn cigem_status_frame_bytes() {
        let json = cigem_status_json(
            "GH1",
            &CigemStatus {
                ext_power_volt: 3.54,
                solar_volt: 6.185,
                battery_dump_energy: 1,
                signal_4g: -51,
                sensor_state: vec![("L1_LF_1", 0), ("L1_QJ_1", -2)],
            },
        );
        assert_eq!(
            json,
            r#"{"GH1":{"S1_ZT_1":{"ext_power_volt":3.54,"solar_volt":6.185,"battery_dump_energy":1,"signal_4g":-51,"sensor_state":{"L1_LF_1":0,"L1_QJ_1":-2}}}}"#
        );
        let frame = cigem_frame(CigemType::Status, &json).expect("frame");
        assert_eq!(frame[0], 0x01);
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[1], frame[2]])),
            json.len()
        );
    }

    #[test]
    fn oversized_json_is_refused() {
        let big = "x".repeat(70_000);
        assert!(cigem_frame(CigemType::Data, &big).is_err());
    }
}
