//! MQTT payload formats: how the bytes of one message become samples.
//!
//! Owns [`PayloadFormat`] (the `payload = { format = ... }` table of a subscription),
//! [`JsonMapping`], [`PayloadError`], [`Sample`] and [`decode`]. Decoding is a pure function of
//! the payload, the format and a [`DecodeContext`]; it does not know topics, series or the
//! engine ([`super::subscriber`] turns samples into readings).
//!
//! Formats:
//! - `json`: one object per reading, or an array of them, located by dot-separated key paths
//!   (see [`JsonMapping`]).
//! - `plain`: the payload is one number as text (`"21.5"`, whitespace trimmed, `true`/`false`
//!   as 1/0).
//! - `cigem`: the universal geo-hazard device protocol on topic `$dp` ([`super::cigem`]).
//!
//! Samples are handed to a callback rather than collected, so decoding one message allocates
//! nothing beyond the parsed document. A message is all or nothing: when decoding fails half
//! way, the caller discards what the callback already received.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use super::document::{self, Node};
use super::timestamp::{self, TimeFormat, UtcOffset, DEFAULT_TIMEZONE};
use crate::model::{QuantityKind, TimestampNs};

/// Default largest payload a subscription accepts; larger messages are refused unparsed.
/// 64 KiB holds hundreds of readings in one JSON message; a sensor node that sends more is
/// misconfigured or hostile.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Longest excerpt of device-supplied text (a bad timestamp, a path) quoted in an error, so a
/// hostile payload cannot make log lines arbitrarily long.
pub const MAX_QUOTED_CHARS: usize = 64;

/// How the payloads of one subscription are written. In TOML:
/// `payload = { format = "json", sensor = "sensor", value = "value", time = "ts" }`,
/// `payload = { format = "plain" }` or `payload = { format = "cigem" }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case", deny_unknown_fields)]
pub enum PayloadFormat {
    /// JSON objects located by key paths (boxed: the mapping is large, the other variants empty).
    Json(Box<JsonMapping>),
    /// One number as text; the point is the subscription's `point`.
    Plain {},
    /// The CIGEM universal geo-hazard device format (docs/DOMAIN.md §CIGEM).
    Cigem {},
}

impl PayloadFormat {
    /// The format's name as written in the config.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Json(_) => "json",
            Self::Plain {} => "plain",
            Self::Cigem {} => "cigem",
        }
    }
}

/// Where the parts of a reading are in a JSON payload. Paths are dot-separated object keys
/// (`"data.temp"`), looked up in each reading object.
///
/// The simulator's two shapes read as:
/// - `{"ts":"2026-11-29T10:00:00.000Z","readings":[{"sensor":"t1","value":21.53,"unit":"°C"}]}`
///   → `readings = "readings", sensor = "sensor", value = "value", unit = "unit", time = "ts"`;
/// - `{"sensor":"s1","value":1.5,"ts":1764410000123}`
///   → `sensor = "sensor", value = "value", time = "ts"`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonMapping {
    /// Path of an array of reading objects. Without it the root is one reading object (or, if
    /// the root is an array, each element is one).
    #[serde(default)]
    pub readings: Option<String>,
    /// Path of the device name; overrides the subscription's `device`. Looked up in the reading
    /// object, then in the document root.
    #[serde(default)]
    pub device: Option<String>,
    /// Path of the sensor id, which becomes the point name. Without it the point is the
    /// subscription's `point` (a fixed name or a topic placeholder).
    #[serde(default)]
    pub sensor: Option<String>,
    /// Path of the value (exclusive with `values`).
    #[serde(default)]
    pub value: Option<String>,
    /// Several value fields in one object; each becomes point `<sensor>.<field>` (or `<field>`
    /// when there is no sensor or point). Exclusive with `value`.
    #[serde(default)]
    pub values: Vec<String>,
    /// Path of the unit. Looked up in the reading object, then in the document root.
    #[serde(default)]
    pub unit: Option<String>,
    /// Path of the timestamp. Looked up in the reading object, then in the document root; when
    /// absent from both, the reading carries the receive time.
    #[serde(default)]
    pub time: Option<String>,
    /// How the timestamp is written.
    #[serde(default)]
    pub time_format: TimeFormat,
    /// Offset of timestamps written without one (`"+08:00"`); default: the source's
    /// `timezone`, else [`DEFAULT_TIMEZONE`]. Filled in at validation.
    #[serde(default)]
    pub timezone: Option<UtcOffset>,
    /// Path of the quantity kind written in the payload (`"kind": "settlement"`), looked up in
    /// the reading object, then the document root; its value is mapped by `kinds`. A reading
    /// without it has the subscription's `quantity`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Payload kind → quantity kind, e.g. `{ settlement = "settlement", temp = "temperature" }`.
    /// A payload kind not in the map drops the message with reason `unknown_kind` (counted per
    /// subscription), so no series appears under a kind nobody configured.
    #[serde(default)]
    pub kinds: BTreeMap<String, QuantityKind>,
    /// Quantity and unit per sensor id, overriding the subscription's.
    #[serde(default)]
    pub sensors: BTreeMap<String, ChannelOverride>,
    /// Quantity and unit per value field (with `values`), overriding `sensors` and the
    /// subscription's.
    #[serde(default)]
    pub fields: BTreeMap<String, ChannelOverride>,
}

impl JsonMapping {
    /// Check the mapping; `has_point` says whether the subscription names a point.
    ///
    /// # Errors
    /// A message saying what to change.
    pub fn validate(&self, has_point: bool) -> Result<(), String> {
        match (&self.value, self.values.is_empty()) {
            (Some(_), false) => {
                return Err("set either `value` or `values`, not both".to_owned());
            }
            (None, true) => {
                return Err(
                    "set `value` (path of the value) or `values` (list of value fields)".to_owned(),
                );
            }
            _ => {}
        }
        if self.value.is_some() && self.sensor.is_none() && !has_point {
            return Err("readings have no point name: set `sensor` (path of the sensor id) or the \
                        subscription's `point` (a fixed name or a topic placeholder like \"{node}\")"
                .to_owned());
        }
        match (&self.kind, self.kinds.is_empty()) {
            (Some(_), true) => {
                return Err(
                    "`kind` needs `kinds`, the map from payload kinds to quantities, e.g. \
                            kinds = { settlement = \"settlement\", temp = \"temperature\" }"
                        .to_owned(),
                );
            }
            (None, false) => {
                return Err(
                    "`kinds` needs `kind`, the path of the kind in the payload (e.g. kind = \"kind\")"
                        .to_owned(),
                );
            }
            _ => {}
        }
        if self.kinds.keys().any(String::is_empty) {
            return Err("`kinds` has an empty payload kind; remove it".to_owned());
        }
        let paths = [
            &self.readings,
            &self.device,
            &self.sensor,
            &self.value,
            &self.unit,
            &self.time,
            &self.kind,
        ];
        for path in paths.into_iter().flatten().chain(self.values.iter()) {
            if path.split('.').any(str::is_empty) {
                return Err(format!(
                    "path \"{path}\" has an empty key; write keys as `a.b.c`"
                ));
            }
        }
        Ok(())
    }
}

/// Quantity and/or unit for one sensor or field.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelOverride {
    /// The quantity.
    #[serde(default)]
    pub quantity: Option<QuantityKind>,
    /// The unit.
    #[serde(default)]
    pub unit: Option<String>,
}

/// Why a payload was dropped. [`PayloadError::reason`] is the metric label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    /// Zero bytes (or only whitespace for `plain`).
    #[error("empty payload")]
    Empty,
    /// Larger than the source's `max_payload_bytes`; refused before parsing.
    #[error("payload of {len} bytes is larger than max_payload_bytes = {max}")]
    TooLarge {
        /// Payload size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not valid UTF-8.
    #[error("payload is not UTF-8 (invalid byte at offset {0})")]
    NotUtf8(usize),
    /// Not valid JSON.
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    /// A `plain` payload that is not a number.
    #[error("payload {0:?} is not a number")]
    NotANumberText(String),
    /// A configured path is absent.
    #[error("missing field at path \"{0}\"")]
    MissingField(String),
    /// The value at a path is not a number, numeric string or boolean.
    #[error("value at path \"{path}\" is {found}, not a number")]
    NotANumber {
        /// The path.
        path: String,
        /// What was found there.
        found: &'static str,
    },
    /// The value at a path is not a string or number where a name was expected.
    #[error("value at path \"{path}\" is {found}, not a name")]
    NotAName {
        /// The path.
        path: String,
        /// What was found there.
        found: &'static str,
    },
    /// The timestamp could not be read in the configured format.
    #[error("bad timestamp {text:?} at \"{path}\" (expected {format:?})")]
    BadTimestamp {
        /// Where it was.
        path: String,
        /// An excerpt of it.
        text: String,
        /// The configured format.
        format: TimeFormat,
    },
    /// The document does not have the expected structure.
    #[error("unexpected structure: {0}")]
    BadShape(String),
    /// The payload's kind is not a key of the subscription's `kinds`.
    #[error("kind {kind:?} at \"{path}\" is not in the subscription's `kinds`; add it there to accept it")]
    UnknownKind {
        /// Where it was.
        path: String,
        /// An excerpt of it.
        kind: String,
    },
}

impl PayloadError {
    /// The `reason` label of `mqtt_payload_errors_total`.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLarge { .. } => "too_large",
            Self::NotUtf8(_) => "not_utf8",
            Self::NotJson(_) => "not_json",
            Self::NotANumberText(_) | Self::NotANumber { .. } => "not_a_number",
            Self::MissingField(_) => "missing_field",
            Self::NotAName { .. } => "not_a_name",
            Self::BadTimestamp { .. } => "bad_timestamp",
            Self::BadShape(_) => "bad_shape",
            Self::UnknownKind { .. } => "unknown_kind",
        }
    }
}

/// Cut device-supplied text to [`MAX_QUOTED_CHARS`] for an error message.
#[must_use]
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// What a sample carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampleValue {
    /// A measured value.
    Value(f64),
    /// The device sent a fault sentinel instead of a value (CIGEM −4321.0 / −1234.0); the code
    /// becomes `Quality::DeviceFault(code)`.
    Fault(i16),
    /// A CIGEM `sensor_state` report for the sample's `base` point: emitted as a `status`
    /// reading with this value, and remembered so later readings of that point carry
    /// `Quality::DeviceFault(code)` while it is not 0.
    State(i16),
}

/// One decoded value, with borrowed names. `device` and `base` are `None` when the payload does
/// not name them: the subscription's `device` and `point` apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// Device named by the payload.
    pub device: Option<Cow<'a, str>>,
    /// Point named by the payload (sensor id, CIGEM data point).
    pub base: Option<Cow<'a, str>>,
    /// Field within the point; the point name is `<base>.<field>`.
    pub field: Option<&'a str>,
    /// What it measures.
    pub kind: QuantityKind,
    /// Unit, empty when unknown.
    pub unit: &'a str,
    /// UTC ns: device time, or the receive time when the payload has none.
    pub ts: TimestampNs,
    /// The value or fault.
    pub value: SampleValue,
}

/// What a decoder needs besides the payload.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext<'a> {
    /// The subscription's quantity, for formats that do not say.
    pub kind: QuantityKind,
    /// The subscription's unit.
    pub unit: &'a str,
    /// Receive time, for samples without a device timestamp.
    pub received_ns: TimestampNs,
}

/// What a successful decode reports besides its samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeReport {
    /// Values that were neither a number nor a known non-measurement field (e.g. a CIGEM CSV
    /// string), skipped without failing the message.
    pub skipped: usize,
}

/// Decode `payload` in `format`, calling `emit` for each sample.
///
/// # Errors
/// A [`PayloadError`]; samples already emitted for this message must then be discarded.
pub fn decode<'p>(
    format: &'p PayloadFormat,
    payload: &'p [u8],
    ctx: &DecodeContext<'p>,
    emit: &mut dyn FnMut(Sample<'_>),
) -> Result<DecodeReport, PayloadError> {
    match format {
        PayloadFormat::Json(mapping) => {
            let text = utf8(payload)?;
            let doc = parse_json(text)?;
            decode_json(mapping, &doc, ctx, emit)?;
            Ok(DecodeReport::default())
        }
        PayloadFormat::Plain {} => {
            decode_plain(payload, ctx, emit)?;
            Ok(DecodeReport::default())
        }
        PayloadFormat::Cigem {} => super::cigem::decode(payload, ctx.received_ns, emit),
    }
}

/// The payload as UTF-8.
///
/// # Errors
/// [`PayloadError::Empty`], [`PayloadError::NotUtf8`].
pub fn utf8(payload: &[u8]) -> Result<&str, PayloadError> {
    if payload.is_empty() {
        return Err(PayloadError::Empty);
    }
    std::str::from_utf8(payload).map_err(|e| PayloadError::NotUtf8(e.valid_up_to()))
}

/// Parse a JSON document.
///
/// # Errors
/// [`PayloadError::NotJson`] with serde_json's message (line and column).
pub fn parse_json(text: &str) -> Result<Node<'_>, PayloadError> {
    document::parse(text).map_err(|e| PayloadError::NotJson(e.to_string()))
}

/// `plain`: one number as text.
fn decode_plain(
    payload: &[u8],
    ctx: &DecodeContext<'_>,
    emit: &mut dyn FnMut(Sample<'_>),
) -> Result<(), PayloadError> {
    let text = utf8(payload)?.trim();
    if text.is_empty() {
        return Err(PayloadError::Empty);
    }
    let value = match text {
        "true" => 1.0,
        "false" => 0.0,
        _ => document::parse_number_text(text)
            .ok_or_else(|| PayloadError::NotANumberText(excerpt(text)))?,
    };
    emit(Sample {
        device: None,
        base: None,
        field: None,
        kind: ctx.kind,
        unit: ctx.unit,
        ts: ctx.received_ns,
        value: SampleValue::Value(value),
    });
    Ok(())
}

/// `json`: every reading object of the document.
fn decode_json<'d>(
    mapping: &'d JsonMapping,
    doc: &'d Node<'d>,
    ctx: &DecodeContext<'d>,
    emit: &mut dyn FnMut(Sample<'_>),
) -> Result<(), PayloadError> {
    match (&mapping.readings, doc) {
        (Some(path), _) => match doc.path(path) {
            Some(Node::Array(items)) => {
                for item in items {
                    decode_json_reading(mapping, item, doc, ctx, emit)?;
                }
                Ok(())
            }
            Some(other) => Err(PayloadError::BadShape(format!(
                "\"{path}\" is {}, not an array of readings",
                other.type_name()
            ))),
            None => Err(PayloadError::MissingField(path.clone())),
        },
        (None, Node::Array(items)) => {
            for item in items {
                decode_json_reading(mapping, item, doc, ctx, emit)?;
            }
            Ok(())
        }
        (None, _) => decode_json_reading(mapping, doc, doc, ctx, emit),
    }
}

/// Look `path` up in the reading object, then in the document root.
fn lookup<'d>(reading: &'d Node<'d>, root: &'d Node<'d>, path: &str) -> Option<&'d Node<'d>> {
    reading.path(path).or_else(|| root.path(path))
}

/// A name (device, sensor id): a string, or a number written as text.
fn name_at<'d>(node: &'d Node<'d>, path: &str) -> Result<Cow<'d, str>, PayloadError> {
    match node {
        Node::Str(s) => Ok(Cow::Borrowed(s.as_ref())),
        Node::Number(n) => Ok(Cow::Owned(match n {
            document::Number::U(u) => u.to_string(),
            document::Number::I(i) => i.to_string(),
            document::Number::F(f) => f.to_string(),
        })),
        other => Err(PayloadError::NotAName {
            path: path.to_owned(),
            found: other.type_name(),
        }),
    }
}

/// The measurement at `path` of `reading`.
fn number_at(reading: &Node<'_>, path: &str) -> Result<f64, PayloadError> {
    let node = reading
        .path(path)
        .ok_or_else(|| PayloadError::MissingField(path.to_owned()))?;
    node.as_measurement()
        .ok_or_else(|| PayloadError::NotANumber {
            path: path.to_owned(),
            found: node.type_name(),
        })
}

/// One reading object (which may carry several values).
fn decode_json_reading<'d>(
    mapping: &'d JsonMapping,
    reading: &'d Node<'d>,
    root: &'d Node<'d>,
    ctx: &DecodeContext<'d>,
    emit: &mut dyn FnMut(Sample<'_>),
) -> Result<(), PayloadError> {
    if !matches!(reading, Node::Object(_)) {
        return Err(PayloadError::BadShape(format!(
            "a reading is {}, not an object",
            reading.type_name()
        )));
    }
    let device = match &mapping.device {
        Some(path) => match lookup(reading, root, path) {
            Some(node) => Some(name_at(node, path)?),
            None => return Err(PayloadError::MissingField(path.clone())),
        },
        None => None,
    };
    let sensor = match &mapping.sensor {
        Some(path) => {
            let node = reading
                .path(path)
                .ok_or_else(|| PayloadError::MissingField(path.clone()))?;
            Some(name_at(node, path)?)
        }
        None => None,
    };
    let payload_unit = match &mapping.unit {
        Some(path) => lookup(reading, root, path).and_then(Node::as_str),
        None => None,
    };
    let ts = match &mapping.time {
        Some(path) => match lookup(reading, root, path) {
            Some(node) => timestamp::from_node(
                node,
                mapping.time_format,
                mapping.timezone.unwrap_or(DEFAULT_TIMEZONE),
            )
            .ok_or_else(|| PayloadError::BadTimestamp {
                path: path.clone(),
                text: excerpt(&node_text(node)),
                format: mapping.time_format,
            })?,
            None => ctx.received_ns,
        },
        None => ctx.received_ns,
    };
    let payload_kind = match &mapping.kind {
        Some(path) => match lookup(reading, root, path) {
            Some(node) => {
                let name = name_at(node, path)?;
                Some(*mapping.kinds.get(name.as_ref()).ok_or_else(|| {
                    PayloadError::UnknownKind {
                        path: path.clone(),
                        kind: excerpt(&name),
                    }
                })?)
            }
            None => None,
        },
        None => None,
    };
    let sensor_override = sensor.as_deref().and_then(|s| mapping.sensors.get(s));
    // Precedence: field override > sensor override > payload (kind, unit) > subscription default.
    let channel = |field: Option<&str>| -> (QuantityKind, &'d str) {
        let field_override = field.and_then(|f| mapping.fields.get(f));
        let kind = field_override
            .and_then(|o| o.quantity)
            .or_else(|| sensor_override.and_then(|o| o.quantity))
            .or(payload_kind)
            .unwrap_or(ctx.kind);
        let unit = field_override
            .and_then(|o| o.unit.as_deref())
            .or_else(|| sensor_override.and_then(|o| o.unit.as_deref()))
            .or(payload_unit)
            .unwrap_or(ctx.unit);
        (kind, unit)
    };
    if let Some(path) = &mapping.value {
        let value = number_at(reading, path)?;
        let (kind, unit) = channel(None);
        emit(Sample {
            device: device.clone(),
            base: sensor.clone(),
            field: None,
            kind,
            unit,
            ts,
            value: SampleValue::Value(value),
        });
    }
    for field in &mapping.values {
        let value = number_at(reading, field)?;
        let (kind, unit) = channel(Some(field));
        emit(Sample {
            device: device.clone(),
            base: sensor.clone(),
            field: Some(field),
            kind,
            unit,
            ts,
            value: SampleValue::Value(value),
        });
    }
    Ok(())
}

/// A node as text for an error message.
fn node_text(node: &Node<'_>) -> String {
    match node {
        Node::Str(s) => s.to_string(),
        Node::Number(n) => n.as_f64().to_string(),
        other => other.type_name().to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sample with owned names, for comparing.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) struct Owned {
        pub device: Option<String>,
        pub base: Option<String>,
        pub field: Option<String>,
        pub kind: QuantityKind,
        pub unit: String,
        pub ts: TimestampNs,
        pub value: SampleValue,
    }

    pub(crate) fn owned(s: &Sample<'_>) -> Owned {
        Owned {
            device: s.device.as_deref().map(str::to_owned),
            base: s.base.as_deref().map(str::to_owned),
            field: s.field.map(str::to_owned),
            kind: s.kind,
            unit: s.unit.to_owned(),
            ts: s.ts,
            value: s.value,
        }
    }

    /// Receive time used by the tests: 2026-01-01T00:00:00Z. 1970..=2025 is 56 years with 14 leap
    /// days: 56 × 365 + 14 = 20 454 days × 86 400 s = 1 767 225 600 s.
    pub(crate) const RECEIVED: TimestampNs = 1_767_225_600_000_000_000;

    fn run(format: &PayloadFormat, payload: &[u8]) -> Result<Vec<Owned>, PayloadError> {
        let ctx = DecodeContext {
            kind: QuantityKind::Other,
            unit: "u",
            received_ns: RECEIVED,
        };
        let mut out = Vec::new();
        decode(format, payload, &ctx, &mut |s| out.push(owned(&s)))?;
        Ok(out)
    }

    fn json(mapping: JsonMapping) -> PayloadFormat {
        PayloadFormat::Json(Box::new(mapping))
    }

    fn path(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    fn sample(base: &str, kind: QuantityKind, unit: &str, ts: i64, v: f64) -> Owned {
        Owned {
            device: None,
            base: Some(base.to_owned()),
            field: None,
            kind,
            unit: unit.to_owned(),
            ts,
            value: SampleValue::Value(v),
        }
    }

    /// The simulator's array form with the time at the root. 2026-11-29T10:00:00Z by hand:
    /// 2026-01-01 is day 20 454 (see [`RECEIVED`]); January to October is 304 days, + 28 → day
    /// 20 786; 20 786 × 86 400 s = 1 795 910 400 s, + 10 h (36 000 s) = 1 795 946 400 s.
    #[test]
    fn simulator_array_form_with_time_at_the_root() {
        let format = json(JsonMapping {
            readings: path("readings"),
            sensor: path("sensor"),
            value: path("value"),
            unit: path("unit"),
            time: path("ts"),
            ..JsonMapping::default()
        });
        let payload = r#"{"ts":"2026-11-29T10:00:00.000Z","readings":[{"sensor":"t1","value":21.53,"unit":"°C"},{"sensor":"t2","value":"19.5"}]}"#;
        let got = run(&format, payload.as_bytes()).expect("decodes");
        let ts = 1_795_946_400_000_000_000;
        assert_eq!(
            got,
            [
                sample("t1", QuantityKind::Other, "°C", ts, 21.53),
                sample("t2", QuantityKind::Other, "u", ts, 19.5),
            ]
        );
    }

    #[test]
    fn simulator_single_object_form_with_epoch_ms() {
        let format = json(JsonMapping {
            sensor: path("sensor"),
            value: path("value"),
            time: path("ts"),
            ..Default::default()
        });
        let got = run(
            &format,
            br#"{"sensor":"s1","value":1.5,"ts":1764410000123}"#,
        )
        .expect("ok");
        assert_eq!(
            got,
            [sample(
                "s1",
                QuantityKind::Other,
                "u",
                1_764_410_000_123_000_000,
                1.5
            )]
        );
    }

    /// The performance benchmark's node message (issue 7 item 6): topic
    /// `sites/{site}/nodes/{node}/up`, payload
    /// `{"ts":<epoch ms>,"sensor":"s07-n042","kind":"settlement","value":12.345,"unit":"mm"}`.
    /// The kind comes from the payload through `kinds`, the unit from the payload; keys that are
    /// not configured values (`battery`) do not become series.
    #[test]
    fn benchmark_shape_kind_and_unit_from_the_payload() {
        let mut kinds = BTreeMap::new();
        kinds.insert("settlement".to_owned(), QuantityKind::Settlement);
        kinds.insert("temp".to_owned(), QuantityKind::Temperature);
        let format = json(JsonMapping {
            sensor: path("sensor"),
            value: path("value"),
            unit: path("unit"),
            time: path("ts"),
            time_format: TimeFormat::EpochMs,
            kind: path("kind"),
            kinds,
            ..JsonMapping::default()
        });
        let got = run(
            &format,
            br#"{"ts":1764410000123,"sensor":"s07-n042","kind":"settlement","value":12.345,"unit":"mm","battery":3.61}"#,
        )
        .expect("decodes");
        assert_eq!(
            got,
            [sample(
                "s07-n042",
                QuantityKind::Settlement,
                "mm",
                1_764_410_000_123_000_000,
                12.345
            )]
        );
        let got = run(
            &format,
            r#"{"ts":1764410000123,"sensor":"t1","kind":"temp","value":"21.5","unit":"°C"}"#
                .as_bytes(),
        )
        .expect("decodes");
        assert_eq!(got[0].kind, QuantityKind::Temperature);
        // No kind in the payload: the subscription's quantity.
        let got = run(&format, br#"{"ts":1764410000123,"sensor":"x","value":1}"#).expect("ok");
        assert_eq!(got[0].kind, QuantityKind::Other);
        // A kind nobody configured is refused with its own reason, never stored as `other`.
        let err = run(
            &format,
            br#"{"ts":1764410000123,"sensor":"x","kind":"tilt","value":1}"#,
        )
        .expect_err("unknown kind");
        assert_eq!(
            err,
            PayloadError::UnknownKind {
                path: "kind".to_owned(),
                kind: "tilt".to_owned()
            }
        );
        assert_eq!(err.reason(), "unknown_kind");
    }

    /// China Standard Time is UTC+8: a device's local `2026-01-01 08:00:00` without an offset is
    /// 2026-01-01T00:00:00Z ([`RECEIVED`]) with the default timezone, and 08:00Z with "Z".
    #[test]
    fn times_without_an_offset_are_read_in_the_timezone() {
        let mapping = |tz: Option<&str>| {
            json(JsonMapping {
                sensor: path("s"),
                value: path("v"),
                time: path("ts"),
                timezone: tz.map(|t| UtcOffset::try_from(t.to_owned()).expect("offset")),
                ..JsonMapping::default()
            })
        };
        let payload = br#"{"s":"a","v":1,"ts":"2026-01-01 08:00:00"}"#;
        assert_eq!(run(&mapping(None), payload).expect("ok")[0].ts, RECEIVED);
        assert_eq!(
            run(&mapping(Some("+08:00")), payload).expect("ok")[0].ts,
            RECEIVED
        );
        assert_eq!(
            run(&mapping(Some("Z")), payload).expect("ok")[0].ts,
            RECEIVED + 8 * 3_600 * 1_000_000_000
        );
    }

    #[test]
    fn root_array_numeric_sensor_ids_booleans_and_no_time() {
        let format = json(JsonMapping {
            sensor: path("id"),
            value: path("v"),
            ..Default::default()
        });
        let got = run(&format, br#"[{"id":7,"v":true},{"id":"x","v":-2}]"#).expect("ok");
        assert_eq!(
            got,
            [
                sample("7", QuantityKind::Other, "u", RECEIVED, 1.0),
                sample("x", QuantityKind::Other, "u", RECEIVED, -2.0),
            ]
        );
    }

    #[test]
    fn several_values_with_overrides_and_device_path() {
        let mut sensors = BTreeMap::new();
        sensors.insert(
            "env1".to_owned(),
            ChannelOverride {
                quantity: Some(QuantityKind::Temperature),
                unit: Some("°C".to_owned()),
            },
        );
        let mut fields = BTreeMap::new();
        fields.insert(
            "rh".to_owned(),
            ChannelOverride {
                quantity: Some(QuantityKind::Humidity),
                unit: Some("%".to_owned()),
            },
        );
        let format = json(JsonMapping {
            device: path("node"),
            sensor: path("sensor"),
            values: vec!["t".to_owned(), "rh".to_owned(), "deep.x".to_owned()],
            sensors,
            fields,
            ..Default::default()
        });
        let got = run(
            &format,
            br#"{"node":"n9","sensor":"env1","t":21.5,"rh":"55","deep":{"x":3}}"#,
        )
        .expect("ok");
        let mk = |field: &str, kind, unit: &str, v| Owned {
            device: Some("n9".to_owned()),
            base: Some("env1".to_owned()),
            field: Some(field.to_owned()),
            kind,
            unit: unit.to_owned(),
            ts: RECEIVED,
            value: SampleValue::Value(v),
        };
        assert_eq!(
            got,
            [
                mk("t", QuantityKind::Temperature, "°C", 21.5),
                mk("rh", QuantityKind::Humidity, "%", 55.0),
                mk("deep.x", QuantityKind::Temperature, "°C", 3.0),
            ]
        );
    }

    #[test]
    fn json_errors() {
        let format = json(JsonMapping {
            readings: path("r"),
            sensor: path("s"),
            value: path("v"),
            time: path("ts"),
            time_format: TimeFormat::Rfc3339,
            ..Default::default()
        });
        let err = |p: &str| run(&format, p.as_bytes()).expect_err("must fail");
        assert_eq!(err(""), PayloadError::Empty);
        assert!(matches!(err("{\"r\":"), PayloadError::NotJson(_)));
        assert_eq!(err("{}"), PayloadError::MissingField("r".to_owned()));
        assert_eq!(
            err(r#"{"r":{}}"#),
            PayloadError::BadShape("\"r\" is an object, not an array of readings".to_owned())
        );
        assert_eq!(
            err(r#"{"r":[5]}"#),
            PayloadError::BadShape("a reading is a number, not an object".to_owned())
        );
        assert_eq!(
            err(r#"{"r":[{"v":1}]}"#),
            PayloadError::MissingField("s".to_owned())
        );
        assert_eq!(
            err(r#"{"r":[{"s":"a"}]}"#),
            PayloadError::MissingField("v".to_owned())
        );
        assert_eq!(
            err(r#"{"r":[{"s":"a","v":"high"}]}"#),
            PayloadError::NotANumber {
                path: "v".to_owned(),
                found: "a string"
            }
        );
        assert_eq!(
            err(r#"{"r":[{"s":[],"v":1}]}"#),
            PayloadError::NotAName {
                path: "s".to_owned(),
                found: "an array"
            }
        );
        assert_eq!(
            err(r#"{"r":[{"s":"a","v":1,"ts":1764410000}]}"#),
            PayloadError::BadTimestamp {
                path: "ts".to_owned(),
                text: "1764410000".to_owned(),
                format: TimeFormat::Rfc3339
            }
        );
        assert_eq!(
            run(&format, &[b'{', 0xff, b'}']).expect_err("not utf8"),
            PayloadError::NotUtf8(1)
        );
    }

    #[test]
    fn plain_numbers() {
        let format = PayloadFormat::Plain {};
        let one = |v: f64| {
            vec![Owned {
                device: None,
                base: None,
                field: None,
                kind: QuantityKind::Other,
                unit: "u".to_owned(),
                ts: RECEIVED,
                value: SampleValue::Value(v),
            }]
        };
        assert_eq!(run(&format, b" 12.5\n").expect("ok"), one(12.5));
        assert_eq!(run(&format, b"-3").expect("ok"), one(-3.0));
        assert_eq!(run(&format, b"true").expect("ok"), one(1.0));
        assert_eq!(run(&format, b"  ").expect_err("empty"), PayloadError::Empty);
        assert_eq!(
            run(&format, b"NaN").expect_err("nan"),
            PayloadError::NotANumberText("NaN".to_owned())
        );
        assert_eq!(
            run(&format, &[0xc3]).expect_err("utf8"),
            PayloadError::NotUtf8(0)
        );
    }

    #[test]
    fn mapping_validation() {
        let ok = JsonMapping {
            sensor: path("s"),
            value: path("v"),
            ..Default::default()
        };
        assert_eq!(ok.validate(false), Ok(()));
        let both = JsonMapping {
            value: path("v"),
            values: vec!["a".to_owned()],
            ..Default::default()
        };
        assert!(both.validate(true).expect_err("both").contains("not both"));
        let none = JsonMapping::default();
        assert!(none.validate(true).expect_err("none").contains("`values`"));
        let no_point = JsonMapping {
            value: path("v"),
            ..Default::default()
        };
        assert!(no_point
            .validate(false)
            .expect_err("no point")
            .contains("`sensor`"));
        assert_eq!(no_point.validate(true), Ok(()));
        let values_only = JsonMapping {
            values: vec!["a".to_owned()],
            ..Default::default()
        };
        assert_eq!(values_only.validate(false), Ok(()));
        let kind_without_kinds = JsonMapping {
            value: path("v"),
            kind: path("kind"),
            ..Default::default()
        };
        assert!(kind_without_kinds
            .validate(true)
            .expect_err("kinds")
            .contains("`kind` needs `kinds`"));
        let empty_key = JsonMapping {
            value: path("a..b"),
            ..Default::default()
        };
        assert!(empty_key
            .validate(true)
            .expect_err("empty key")
            .contains("\"a..b\""));
    }

    #[test]
    fn formats_read_well_in_toml() {
        #[derive(Deserialize)]
        struct Wrap {
            payload: PayloadFormat,
        }
        let w: Wrap = toml::from_str(
            r#"payload = { format = "json", readings = "readings", sensor = "sensor", value = "value", unit = "unit", time = "ts", time_format = "epoch_ms", sensors = { t1 = { quantity = "temperature" } } }"#,
        )
        .expect("json");
        let PayloadFormat::Json(m) = w.payload else {
            panic!("json")
        };
        assert_eq!(m.time_format, TimeFormat::EpochMs);
        assert_eq!(m.sensors["t1"].quantity, Some(QuantityKind::Temperature));
        let w: Wrap = toml::from_str("payload = { format = \"plain\" }").expect("plain");
        assert_eq!(w.payload, PayloadFormat::Plain {});
        let w: Wrap = toml::from_str("[payload]\nformat = \"cigem\"").expect("cigem");
        assert_eq!(w.payload, PayloadFormat::Cigem {});
        assert!(toml::from_str::<Wrap>("payload = { format = \"json\", valu = \"v\" }").is_err());
        assert!(toml::from_str::<Wrap>("payload = { format = \"plain\", x = 1 }").is_err());
        assert!(toml::from_str::<Wrap>("payload = { format = \"xml\" }").is_err());
    }

    #[test]
    fn error_reasons_are_stable_labels() {
        assert_eq!(
            PayloadError::TooLarge { len: 2, max: 1 }.reason(),
            "too_large"
        );
        assert_eq!(PayloadError::NotJson(String::new()).reason(), "not_json");
        assert_eq!(
            excerpt(&"x".repeat(100)).chars().count(),
            MAX_QUOTED_CHARS + 1
        );
    }
}
