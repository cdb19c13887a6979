//! The CIGEM universal geo-hazard device ("普适型") uplink format, MQTT topic `$dp`
//! (docs/DOMAIN.md §CIGEM; platform doc http://ghiot.cigem.cn:8080/doc/overview/overview.html).
//!
//! Owns the header handling ([`split_header`]), the data-point dictionary ([`data_rule`],
//! [`status_rule`]) and [`decode`]. It does not remember `sensor_state` between messages: it
//! emits [`SampleValue::State`] and the subscriber keeps the state per (device, point).
//!
//! # Wire format
//! A 3-byte header (byte 0 the packet type, bytes 1–2 the JSON length, big-endian) then JSON.
//! Parsed leniently, as field devices and integration tests differ: the JSON may come with no
//! header or after a single type byte (0x10 seen), and when the declared length disagrees with
//! what follows, the braces of the JSON decide where it ends (trailing bytes such as a C string's
//! NUL are ignored). The header type is not needed: the structure says what a point is.
//!
//! # Structure
//! `{"<deviceId>": {"<point>": ...}}`, several devices allowed. Points are `L<cat>_<CODE>_<n>`
//! for data and `S1_ZT_1` for device status.
//! - Data (type 2): `{"<ts>": value}` or `{"<ts>": {"<field>": value}}`, several timestamps per
//!   point allowed. An object key starting with a digit is a timestamp (RFC 3339, UTC); a value
//!   without one (`"L1_LF_1": 10.86`, `{"X": 1}`) is stamped with the receive time. Scalar
//!   points and the field `value` become point `L1_LF_1`; other fields `L1_QJ_1.X`.
//! - Status (type 1, no timestamp, receive time): numeric fields become readings of point
//!   `S1_ZT_1.<field>`; `sensor_state: {point: code}` becomes a `status` reading
//!   `<point>.sensor_state` per point and updates the device fault state.
//!
//! # Decisions
//! - `lon`/`lat` are skipped: a device's position is installation metadata, not a time series
//!   (GNSS points `GP` carry movement).
//! - Non-numeric values (Sichuan-style CSV strings `"X,Y,Z,angle,trend"`, `sw_version`) are not
//!   decoded; CSV and other unexpected strings are counted as skipped, known text fields are not.
//! - The firmware's sentinel floats ([`SENTINEL_ERROR`], [`SENTINEL_MIN`]) become
//!   [`SampleValue::Fault`] with [`SENTINEL_FAULT_CODE`] and no value.
//! - Unknown type codes are quantity `other` with no unit, never an error.
//! - Encrypted payloads (`header.appId` + `bodies.body`) are refused as `bad_shape`.

use std::borrow::Cow;

use super::document::{Node, Number};
use super::payload::{excerpt, utf8, DecodeReport, PayloadError, Sample, SampleValue};
use super::timestamp::{parse_rfc3339, TimeFormat};
use crate::model::{QuantityKind, TimestampNs};

/// Length of the full header: type byte plus big-endian u16 JSON length.
pub const HEADER_LEN: usize = 3;

/// The firmware's "error" sentinel float (`cigemPacket.h`): not a measurement.
pub const SENTINEL_ERROR: f64 = -4321.0;

/// The firmware's "min" sentinel float (`cigemPacket.h`): not a measurement.
pub const SENTINEL_MIN: f64 = -1234.0;

/// Fault code for a sentinel value: the firmware's `sensor_state` "data error".
pub const SENTINEL_FAULT_CODE: i16 = -2;

/// Point name of the device status object.
pub const STATUS_POINT_PREFIX: char = 'S';

/// Key of the per-point state map inside the status object.
pub const SENSOR_STATE: &str = "sensor_state";

/// What the header said, when there was one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet type (1 status, 2 timestamped data), when a type byte was present.
    pub packet_type: Option<u8>,
    /// Declared JSON length, when the full 3-byte header was present.
    pub declared_len: Option<u16>,
}

/// Separate the optional header from the JSON object, which ends at its matching brace.
///
/// # Errors
/// [`PayloadError::Empty`]; [`PayloadError::NotJson`] when no `{` starts the JSON within the
/// header or the braces never close.
pub fn split_header(payload: &[u8]) -> Result<(Header, &[u8]), PayloadError> {
    if payload.is_empty() {
        return Err(PayloadError::Empty);
    }
    // The full header first: its length bytes may themselves be 0x7B (`{`), but JSON never has
    // `{` as its fourth byte after a `{` at the second (`{"` or `{}` must follow).
    let start = if payload[0] == b'{' {
        0
    } else if payload.get(HEADER_LEN) == Some(&b'{') {
        HEADER_LEN
    } else if payload.get(1) == Some(&b'{') {
        1
    } else {
        return Err(PayloadError::NotJson(
            "no JSON object after a header of at most 3 bytes".to_owned(),
        ));
    };
    let header = Header {
        packet_type: (start > 0).then_some(payload[0]),
        declared_len: (start == HEADER_LEN).then(|| u16::from_be_bytes([payload[1], payload[2]])),
    };
    let json = &payload[start..];
    let end = object_end(json)
        .ok_or_else(|| PayloadError::NotJson("the JSON object is not closed".to_owned()))?;
    Ok((header, &json[..end]))
}

/// Index just past the `}` matching the `{` at `json[0]`, skipping braces inside strings.
fn object_end(json: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in json.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// How a field is turned into a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRule {
    /// A reading of this quantity and unit (empty when the dictionary does not say).
    Measure(QuantityKind, &'static str),
    /// Not a measurement: skipped without counting.
    Ignore,
}

/// The data dictionary (docs/DOMAIN.md §CIGEM table): quantity and unit by category (`L1`...), type
/// code (`LF`...) and field (`None` for a scalar point or the field `value`).
///
/// `YL` is stress/earth pressure in L2 (应力, kN) and the rain gauge in L3 (雨量, fields `value`
/// and `totalValue`, mm): the category tells them apart. HS soil moisture is in %, TW soil
/// temperature in °C; SY seepage pressure and L4 NW mud level have no unit in the dictionary, so
/// none is claimed.
#[must_use]
pub fn data_rule(category: &str, code: &str, field: Option<&str>) -> FieldRule {
    use QuantityKind as Q;
    let unit_if = |known: bool, unit: &'static str| if known { unit } else { "" };
    match code {
        "LF" => FieldRule::Measure(Q::Crack, unit_if(field.is_none(), "mm")),
        "GP" => match field {
            // Raw RTCM 3.x correction data, not a measurement.
            Some("gpsInitial") => FieldRule::Ignore,
            Some("gpsTotalX" | "gpsTotalY" | "gpsTotalZ") => {
                FieldRule::Measure(Q::Displacement, "mm")
            }
            _ => FieldRule::Measure(Q::Displacement, ""),
        },
        "SW" => FieldRule::Measure(
            Q::Displacement,
            unit_if(matches!(field, Some("dispsX" | "dispsY")), "mm"),
        ),
        "JS" => FieldRule::Measure(
            Q::Acceleration,
            unit_if(matches!(field, Some("gX" | "gY" | "gZ")), "mg"),
        ),
        // `AZI` (Huace: `trend`) is the direction of the tilt, 0–360° from magnetic north: a
        // direction, not a tilt, so it gets its own kind and no tilt rule ever selects it.
        "QJ" if matches!(field, Some("AZI" | "trend")) => FieldRule::Measure(Q::Azimuth, "°"),
        "QJ" => FieldRule::Measure(
            Q::Tilt,
            unit_if(matches!(field, Some("X" | "Y" | "Z" | "angle")), "°"),
        ),
        "ZD" => FieldRule::Measure(
            Q::Vibration,
            match field {
                Some("PLX" | "PLY" | "PLZ") => "Hz",
                None | Some("SJX" | "SJY" | "SJZ" | "SJValue") => "mm",
                _ => "",
            },
        ),
        "YL" if category == "L2" => FieldRule::Measure(Q::Pressure, unit_if(field.is_none(), "kN")),
        "YL" if category == "L3" => FieldRule::Measure(
            Q::Rainfall,
            unit_if(matches!(field, None | Some("totalValue")), "mm"),
        ),
        "HS" => FieldRule::Measure(Q::Humidity, unit_if(field.is_none(), "%")),
        "TW" => FieldRule::Measure(Q::Temperature, unit_if(field.is_none(), "°C")),
        "SY" => FieldRule::Measure(Q::PorePressure, ""),
        "NW" if category == "L4" => FieldRule::Measure(Q::Level, ""),
        _ => FieldRule::Measure(Q::Other, ""),
    }
}

/// Fields of the status object `S1_ZT_1` (docs/DOMAIN.md §CIGEM, type 1).
#[must_use]
pub fn status_rule(field: &str) -> FieldRule {
    use QuantityKind as Q;
    match field {
        "ext_power_volt" | "solar_volt" | "battery_volt" => FieldRule::Measure(Q::Voltage, "V"),
        "signal_4g" | "signal_NB" => FieldRule::Measure(Q::Signal, "dBm"),
        "signal_db" => FieldRule::Measure(Q::Signal, "dB"),
        "temp" | "temp_out" => FieldRule::Measure(Q::Temperature, "°C"),
        "humidity" | "humidity_out" => FieldRule::Measure(Q::Humidity, "%"),
        "pa_state" | "sound_state" => FieldRule::Measure(Q::Status, ""),
        // Position is metadata (module doc); versions are text.
        "lon" | "lat" | "sw_version" | "hw_version" => FieldRule::Ignore,
        // battery_dump_energy, supply_power, consume_power and anything new.
        _ => FieldRule::Measure(Q::Other, ""),
    }
}

/// `L1_QJ_1` → (`L1`, `QJ`); anything else → (`""`, `""`).
fn split_point(point: &str) -> (&str, &str) {
    let mut parts = point.split('_');
    match (parts.next(), parts.next()) {
        (Some(category), Some(code)) => (category, code),
        _ => ("", ""),
    }
}

/// Decode one `$dp` payload.
///
/// # Errors
/// [`PayloadError`] for a payload that is not a (headered) JSON object of device objects, or
/// has a timestamp key that is not RFC 3339.
pub fn decode(
    payload: &[u8],
    received_ns: TimestampNs,
    emit: &mut dyn FnMut(Sample<'_>),
) -> Result<DecodeReport, PayloadError> {
    let (_header, json) = split_header(payload)?;
    let text = utf8(json)?;
    let doc = super::payload::parse_json(text)?;
    let Node::Object(devices) = &doc else {
        return Err(PayloadError::BadShape(
            "the root is not an object".to_owned(),
        ));
    };
    if doc.get("bodies").is_some() && doc.get("header").is_some() {
        return Err(PayloadError::BadShape(
            "encrypted payloads are not supported".to_owned(),
        ));
    }
    let mut report = DecodeReport::default();
    for (device, points) in devices {
        let Node::Object(points) = points else {
            return Err(PayloadError::BadShape(format!(
                "device \"{}\" is {}, not an object of data points",
                excerpt(device),
                points.type_name()
            )));
        };
        let mut dev = Decoder {
            device,
            received_ns,
            report: &mut report,
            emit: &mut *emit,
        };
        for (point, value) in points {
            if point.starts_with(STATUS_POINT_PREFIX) {
                dev.status(point, value);
            } else {
                dev.data(point, value)?;
            }
        }
    }
    Ok(report)
}

/// Decoding state for one device object.
struct Decoder<'e, 'd, 'f> {
    device: &'d str,
    received_ns: TimestampNs,
    report: &'e mut DecodeReport,
    emit: &'e mut (dyn FnMut(Sample<'_>) + 'f),
}

impl Decoder<'_, '_, '_> {
    /// A data point: timestamped values, fields, or a bare value.
    fn data(&mut self, point: &str, node: &Node<'_>) -> Result<(), PayloadError> {
        let Node::Object(members) = node else {
            self.value(point, None, node, self.received_ns);
            return Ok(());
        };
        for (key, value) in members {
            if key.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                let ts = parse_rfc3339(key).ok_or_else(|| PayloadError::BadTimestamp {
                    path: format!("{}.{point}", excerpt(self.device)),
                    text: excerpt(key),
                    format: TimeFormat::Rfc3339,
                })?;
                match value {
                    Node::Object(fields) => {
                        for (field, v) in fields {
                            self.value(point, Some(field), v, ts);
                        }
                    }
                    scalar => self.value(point, None, scalar, ts),
                }
            } else {
                self.value(point, Some(key), value, self.received_ns);
            }
        }
        Ok(())
    }

    /// One data value of `point` (and `field`).
    fn value(&mut self, point: &str, field: Option<&str>, node: &Node<'_>, ts: TimestampNs) {
        // The field `value` is the point's own value (`{"value": 10.86}` ≡ `10.86`).
        let field = field.filter(|f| *f != "value");
        let (category, code) = split_point(point);
        let FieldRule::Measure(kind, unit) = data_rule(category, code, field) else {
            return;
        };
        let Some(v) = node.as_measurement() else {
            self.report.skipped += 1;
            return;
        };
        #[allow(clippy::float_cmp)] // the sentinels are exact firmware constants
        let value = if v == SENTINEL_ERROR || v == SENTINEL_MIN {
            SampleValue::Fault(SENTINEL_FAULT_CODE)
        } else {
            SampleValue::Value(v)
        };
        (self.emit)(Sample {
            device: Some(Cow::Borrowed(self.device)),
            base: Some(Cow::Borrowed(point)),
            field,
            kind,
            unit,
            ts,
            value,
        });
    }

    /// The status object: numeric fields and `sensor_state`.
    fn status(&mut self, point: &str, node: &Node<'_>) {
        let Node::Object(fields) = node else {
            self.report.skipped += 1;
            return;
        };
        for (field, value) in fields {
            if field == SENSOR_STATE {
                self.sensor_state(value);
                continue;
            }
            let FieldRule::Measure(kind, unit) = status_rule(field) else {
                continue;
            };
            let v = match value {
                Node::Number(n) => n.as_f64(),
                Node::Bool(b) => f64::from(u8::from(*b)),
                other => match other.as_measurement() {
                    Some(v) => v,
                    None => {
                        self.report.skipped += 1;
                        continue;
                    }
                },
            };
            #[allow(clippy::float_cmp)] // the sentinels are exact firmware constants
            let value = if v == SENTINEL_ERROR || v == SENTINEL_MIN {
                SampleValue::Fault(SENTINEL_FAULT_CODE)
            } else {
                SampleValue::Value(v)
            };
            (self.emit)(Sample {
                device: Some(Cow::Borrowed(self.device)),
                base: Some(Cow::Borrowed(point)),
                field: Some(field),
                kind,
                unit,
                ts: self.received_ns,
                value,
            });
        }
    }

    /// `sensor_state: {"L1_LF_1": 3, ...}`.
    fn sensor_state(&mut self, node: &Node<'_>) {
        let Node::Object(states) = node else {
            self.report.skipped += 1;
            return;
        };
        for (point, code) in states {
            let Some(code) = state_code(code) else {
                self.report.skipped += 1;
                continue;
            };
            (self.emit)(Sample {
                device: Some(Cow::Borrowed(self.device)),
                base: Some(Cow::Borrowed(point)),
                field: Some(SENSOR_STATE),
                kind: QuantityKind::Status,
                unit: "",
                ts: self.received_ns,
                value: SampleValue::State(code),
            });
        }
    }
}

/// A state code: an integer in `i16` range (as a number or numeric text).
#[allow(clippy::cast_possible_truncation)] // range- and integrality-checked
fn state_code(node: &Node<'_>) -> Option<i16> {
    match node {
        Node::Number(Number::U(u)) => i16::try_from(*u).ok(),
        Node::Number(Number::I(i)) => i16::try_from(*i).ok(),
        other => {
            let f = other.as_measurement()?;
            (f.fract() == 0.0 && f >= f64::from(i16::MIN) && f <= f64::from(i16::MAX))
                .then_some(f as i16)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::mqtt::payload::tests::{owned, Owned, RECEIVED};
    use QuantityKind as Q;

    /// 2026-03-14T07:04:03.000Z, hand-computed in `timestamp::tests`.
    const T1: i64 = 1_773_471_843_000_000_000;
    /// One hour later, 08:04:03Z.
    const T2: i64 = T1 + 3_600_000_000_000;

    /// docs/DOMAIN.md §CIGEM type 2 example, device id and `<ts>` filled in, plus the scalar crack point.
    const DATA: &str = r#"{"6101020001":{"L1_QJ_1":{"2026-03-14T07:04:03.000Z":{"X":3.15,"Y":-5.14,"Z":83.97,"angle":-6.03,"AZI":236.18}},"L1_JS_1":{"2026-03-14T07:04:03.000Z":{"gX":-0.04,"gY":0.18,"gZ":-0.04}},"L1_LF_1":{"2026-03-14T07:04:03.000Z":10.86}}}"#;

    /// docs/DOMAIN.md §CIGEM type 1 example, verbatim except the device id.
    const STATUS: &str = r#"{"6101020001":{"S1_ZT_1":{"ext_power_volt":3.54,"solar_volt":6.185,"battery_dump_energy":1,"temp":0.0,"humidity":0,"lon":103.48,"lat":36.18,"signal_4g":-51,"sw_version":"…","sensor_state":{"L1_JS_1":0,"L1_QJ_1":0,"L1_LF_1":3}}}}"#;

    fn run(payload: &[u8]) -> Result<(Vec<Owned>, DecodeReport), PayloadError> {
        let mut out = Vec::new();
        let report = decode(payload, RECEIVED, &mut |s| out.push(owned(&s)))?;
        Ok((out, report))
    }

    fn s(base: &str, field: Option<&str>, kind: Q, unit: &str, ts: i64, v: SampleValue) -> Owned {
        Owned {
            device: Some("6101020001".to_owned()),
            base: Some(base.to_owned()),
            field: field.map(str::to_owned),
            kind,
            unit: unit.to_owned(),
            ts,
            value: v,
        }
    }

    fn v(x: f64) -> SampleValue {
        SampleValue::Value(x)
    }

    fn expected_data() -> Vec<Owned> {
        vec![
            s("L1_QJ_1", Some("X"), Q::Tilt, "°", T1, v(3.15)),
            s("L1_QJ_1", Some("Y"), Q::Tilt, "°", T1, v(-5.14)),
            s("L1_QJ_1", Some("Z"), Q::Tilt, "°", T1, v(83.97)),
            s("L1_QJ_1", Some("angle"), Q::Tilt, "°", T1, v(-6.03)),
            s("L1_QJ_1", Some("AZI"), Q::Azimuth, "°", T1, v(236.18)),
            s("L1_JS_1", Some("gX"), Q::Acceleration, "mg", T1, v(-0.04)),
            s("L1_JS_1", Some("gY"), Q::Acceleration, "mg", T1, v(0.18)),
            s("L1_JS_1", Some("gZ"), Q::Acceleration, "mg", T1, v(-0.04)),
            s("L1_LF_1", None, Q::Crack, "mm", T1, v(10.86)),
        ]
    }

    /// Prefix `json` with `type` and its big-endian length.
    fn with_header(packet_type: u8, json: &str) -> Vec<u8> {
        let len = u16::try_from(json.len()).expect("short");
        let mut out = vec![packet_type, (len >> 8) as u8, (len & 0xff) as u8];
        out.extend_from_slice(json.as_bytes());
        out
    }

    /// docs/DOMAIN.md §CIGEM: `AZI` is 0–360° vs magnetic north; Huace sends `trend` for it.
    #[test]
    fn azimuth_is_its_own_kind_never_tilt() {
        for field in ["AZI", "trend"] {
            assert!(matches!(
                data_rule("L1", "QJ", Some(field)),
                FieldRule::Measure(Q::Azimuth, "°")
            ));
        }
        assert!(matches!(
            data_rule("L1", "QJ", Some("X")),
            FieldRule::Measure(Q::Tilt, "°")
        ));
    }

    #[test]
    fn type_2_data_without_header() {
        let (got, report) = run(DATA.as_bytes()).expect("decodes");
        assert_eq!(got, expected_data());
        assert_eq!(report.skipped, 0);
    }

    #[test]
    fn type_2_data_with_the_3_byte_header() {
        let payload = with_header(2, DATA);
        // DATA is 231 bytes (counted with Python): header 02 00 E7.
        assert_eq!(&payload[..3], [0x02, 0x00, 0xE7]);
        assert_eq!(
            split_header(&payload).expect("header").0,
            Header {
                packet_type: Some(2),
                declared_len: Some(231)
            }
        );
        assert_eq!(run(&payload).expect("decodes").0, expected_data());
    }

    #[test]
    fn wrong_declared_length_and_trailing_bytes_trust_the_braces() {
        let mut payload = vec![0x02, 0x00, 0x10];
        payload.extend_from_slice(DATA.as_bytes());
        payload.push(0); // a C string's NUL
        assert_eq!(run(&payload).expect("decodes").0, expected_data());
        let mut long = vec![0x02, 0xFF, 0xFF];
        long.extend_from_slice(DATA.as_bytes());
        assert_eq!(run(&long).expect("decodes").0, expected_data());
    }

    #[test]
    fn length_byte_that_looks_like_a_brace() {
        // Declared length 0x7B (`{`) in the header's last byte.
        let json = format!(r#"{{"d":{{"L1_LF_1":1.5,"pad":"{}"}}}}"#, "x".repeat(93));
        assert_eq!(json.len(), 0x7B);
        let payload = with_header(2, &json);
        assert_eq!(payload[2], b'{');
        let (got, _) = run(&payload).expect("decodes");
        assert_eq!(got[0].base.as_deref(), Some("L1_LF_1"));
        assert_eq!(got[0].value, v(1.5));
    }

    fn expected_status() -> Vec<Owned> {
        vec![
            s(
                "S1_ZT_1",
                Some("ext_power_volt"),
                Q::Voltage,
                "V",
                RECEIVED,
                v(3.54),
            ),
            s(
                "S1_ZT_1",
                Some("solar_volt"),
                Q::Voltage,
                "V",
                RECEIVED,
                v(6.185),
            ),
            s(
                "S1_ZT_1",
                Some("battery_dump_energy"),
                Q::Other,
                "",
                RECEIVED,
                v(1.0),
            ),
            s(
                "S1_ZT_1",
                Some("temp"),
                Q::Temperature,
                "°C",
                RECEIVED,
                v(0.0),
            ),
            s(
                "S1_ZT_1",
                Some("humidity"),
                Q::Humidity,
                "%",
                RECEIVED,
                v(0.0),
            ),
            s(
                "S1_ZT_1",
                Some("signal_4g"),
                Q::Signal,
                "dBm",
                RECEIVED,
                v(-51.0),
            ),
            s(
                "L1_JS_1",
                Some("sensor_state"),
                Q::Status,
                "",
                RECEIVED,
                SampleValue::State(0),
            ),
            s(
                "L1_QJ_1",
                Some("sensor_state"),
                Q::Status,
                "",
                RECEIVED,
                SampleValue::State(0),
            ),
            s(
                "L1_LF_1",
                Some("sensor_state"),
                Q::Status,
                "",
                RECEIVED,
                SampleValue::State(3),
            ),
        ]
    }

    #[test]
    fn type_1_status_with_single_0x10_byte_and_without_header() {
        let mut payload = vec![0x10];
        payload.extend_from_slice(STATUS.as_bytes());
        assert_eq!(
            split_header(&payload).expect("header").0,
            Header {
                packet_type: Some(0x10),
                declared_len: None
            }
        );
        let (got, report) = run(&payload).expect("decodes");
        assert_eq!(got, expected_status());
        // lon, lat and sw_version are skipped by decision, not counted.
        assert_eq!(report.skipped, 0);
        assert_eq!(
            run(STATUS.as_bytes()).expect("decodes").0,
            expected_status()
        );
        assert_eq!(
            run(&with_header(1, STATUS)).expect("decodes").0,
            expected_status()
        );
    }

    #[test]
    fn several_timestamps_untimestamped_values_sentinels_and_dictionary() {
        let payload = r#"{"dev":{
            "L1_LF_1":{"2026-03-14T07:04:03.000Z":10.86,"2026-03-14T08:04:03.000Z":-4321.0},
            "L1_GP_1":{"2026-03-14T07:04:03.000Z":{"gpsInitial":"0xD3...","gpsTotalX":1.5,"gpsTotalY":-1234.0,"gpsTotalZ":"2.5"}},
            "L3_YL_1":{"2026-03-14T07:04:03.000Z":{"value":0.5,"totalValue":12.5}},
            "L2_YL_1":7.5,
            "L1_QJ_2":{"X":1.0},
            "L1_QJ_3":{"2026-03-14T07:04:03.000Z":"1,2,3,4,5"},
            "L9_XX_1":{"2026-03-14T08:04:03.000Z":{"k":1}}
        }}"#;
        let (got, report) = run(payload.as_bytes()).expect("decodes");
        let d = |base: &str, field: Option<&str>, kind, unit: &str, ts, value| Owned {
            device: Some("dev".to_owned()),
            ..s(base, field, kind, unit, ts, value)
        };
        let fault = SampleValue::Fault(-2);
        assert_eq!(
            got,
            [
                d("L1_LF_1", None, Q::Crack, "mm", T1, v(10.86)),
                d("L1_LF_1", None, Q::Crack, "mm", T2, fault),
                d(
                    "L1_GP_1",
                    Some("gpsTotalX"),
                    Q::Displacement,
                    "mm",
                    T1,
                    v(1.5)
                ),
                d(
                    "L1_GP_1",
                    Some("gpsTotalY"),
                    Q::Displacement,
                    "mm",
                    T1,
                    fault
                ),
                d(
                    "L1_GP_1",
                    Some("gpsTotalZ"),
                    Q::Displacement,
                    "mm",
                    T1,
                    v(2.5)
                ),
                d("L3_YL_1", None, Q::Rainfall, "mm", T1, v(0.5)),
                d(
                    "L3_YL_1",
                    Some("totalValue"),
                    Q::Rainfall,
                    "mm",
                    T1,
                    v(12.5)
                ),
                d("L2_YL_1", None, Q::Pressure, "kN", RECEIVED, v(7.5)),
                d("L1_QJ_2", Some("X"), Q::Tilt, "°", RECEIVED, v(1.0)),
                d("L9_XX_1", Some("k"), Q::Other, "", T2, v(1.0)),
            ]
        );
        // The CSV string is skipped and counted; gpsInitial is ignored by the dictionary.
        assert_eq!(report.skipped, 1);
    }

    #[test]
    fn errors() {
        assert_eq!(run(b"").expect_err("empty"), PayloadError::Empty);
        assert!(matches!(
            run(b"\x02\x00\x05hello").expect_err("no json"),
            PayloadError::NotJson(_)
        ));
        assert!(matches!(
            run(b"{\"d\":{").expect_err("open"),
            PayloadError::NotJson(_)
        ));
        assert!(matches!(
            run(b"{\"d\" 1}").expect_err("bad json"),
            PayloadError::NotJson(_)
        ));
        assert_eq!(
            run(br#"{"d":[1]}"#).expect_err("device not object"),
            PayloadError::BadShape(
                "device \"d\" is an array, not an object of data points".to_owned()
            )
        );
        assert_eq!(
            run(br#"{"d":{"L1_LF_1":{"2026-02-30T00:00:00Z":1}}}"#).expect_err("bad ts"),
            PayloadError::BadTimestamp {
                path: "d.L1_LF_1".to_owned(),
                text: "2026-02-30T00:00:00Z".to_owned(),
                format: TimeFormat::Rfc3339
            }
        );
        assert_eq!(
            run(br#"{"header":{"appId":"a"},"bodies":{"body":"xyz"}}"#).expect_err("encrypted"),
            PayloadError::BadShape("encrypted payloads are not supported".to_owned())
        );
    }

    #[test]
    fn unknown_codes_are_other_never_errors() {
        assert_eq!(
            data_rule("L3", "QW", None),
            FieldRule::Measure(Q::Other, "")
        );
        assert_eq!(data_rule("", "", None), FieldRule::Measure(Q::Other, ""));
        assert_eq!(
            data_rule("L1", "YL", None),
            FieldRule::Measure(Q::Other, "")
        );
        assert_eq!(
            data_rule("L4", "NW", None),
            FieldRule::Measure(Q::Level, "")
        );
        assert_eq!(
            data_rule("L1", "ZD", Some("PLY")),
            FieldRule::Measure(Q::Vibration, "Hz")
        );
        assert_eq!(
            data_rule("L1", "ZD", Some("SJValue")),
            FieldRule::Measure(Q::Vibration, "mm")
        );
        assert_eq!(
            status_rule("signal_db"),
            FieldRule::Measure(Q::Signal, "dB")
        );
        assert_eq!(status_rule("pa_state"), FieldRule::Measure(Q::Status, ""));
        assert_eq!(status_rule("lon"), FieldRule::Ignore);
        assert_eq!(status_rule("new_field"), FieldRule::Measure(Q::Other, ""));
    }

    #[test]
    fn state_codes_must_be_small_integers() {
        let doc = crate::sources::mqtt::document::parse(r#"[0,-3,"-1",2.0,2.5,40000,"x"]"#)
            .expect("json");
        let Node::Array(items) = doc else {
            panic!("array")
        };
        let got: Vec<Option<i16>> = items.iter().map(state_code).collect();
        assert_eq!(
            got,
            [Some(0), Some(-3), Some(-1), Some(2), None, None, None]
        );
    }
}
