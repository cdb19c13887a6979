//! The gateway's data vocabulary: what a reading is, which series it belongs to, and how good it is.
//!
//! Owns [`Reading`], [`Series`], [`Quality`] and [`QuantityKind`]. Sources create readings, the
//! engine stamps and forwards them, sinks render them. Nothing here does I/O or decoding.
//!
//! A [`Series`] is built once per channel (at start-up for Modbus points, on first sight for MQTT
//! sensors) and shared by `Arc`, so a reading on the hot path is a pointer, a timestamp, a value
//! and a quality code: no per-reading string work.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// UTC time in nanoseconds since the Unix epoch, the one timestamp type of the gateway.
pub type TimestampNs = i64;

/// Nanoseconds per second, for converting device epoch seconds.
pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// What physical quantity a channel measures. It becomes the InfluxDB measurement name, so a
/// dashboard query for "all settlement" does not depend on how each device names its registers.
///
/// Closed set: a new kind is a code change with a schema entry in README.md, not a config string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantityKind {
    /// Vertical settlement of a point (mm, positive = down unless the profile says otherwise).
    Settlement,
    /// Hydrostatic head or liquid level (mm or m).
    Level,
    /// Displacement along an axis: GNSS, extensometer, inclinometer chain (mm).
    Displacement,
    /// Crack opening (mm).
    Crack,
    /// Tilt angle (degrees or mrad).
    Tilt,
    /// A direction in the horizontal plane (°, 0–360, e.g. CIGEM `AZI`/`trend`, the azimuth of
    /// the tilt). A kind of its own so that no tilt rule or tilt dashboard ever selects it: 359°
    /// and 1° are two degrees apart, not 358 (docs/DOMAIN.md §CIGEM).
    Azimuth,
    /// Temperature (°C): concrete, ambient, soil.
    Temperature,
    /// Relative humidity or soil moisture (%).
    Humidity,
    /// Rainfall (mm).
    Rainfall,
    /// Pore water or seepage pressure (kPa).
    PorePressure,
    /// Earth pressure, stress or load (kPa, kN).
    Pressure,
    /// Acceleration (mg, m/s²).
    Acceleration,
    /// Vibration frequency or amplitude.
    Vibration,
    /// Strain (µε).
    Strain,
    /// Vibrating-wire frequency (Hz) or digits, before conversion.
    Frequency,
    /// Electrical resistance (Ω), e.g. a thermistor read raw.
    Resistance,
    /// Supply, battery or solar voltage (V).
    Voltage,
    /// Radio signal strength (dBm).
    Signal,
    /// A device status or fault code (unitless).
    Status,
    /// Concrete maturity, the Nurse–Saul temperature-time factor (°C·h; ASTM C1074).
    Maturity,
    /// Concrete equivalent age at the reference temperature (h; ASTM C1074).
    Age,
    /// Concrete in-place strength (MPa, or % of the design strength).
    Strength,
    /// Inverse velocity 1/v of a displacement point (d/mm), Fukuzono's method (docs/DOMAIN.md
    /// §Slope early warning). A kind of its own so that no displacement rule selects it.
    InverseVelocity,
    /// A failure-time forecast (docs/DOMAIN.md §Slope early warning): the predicted failure time
    /// (Unix seconds), its uncertainty (h) and the fit's R² (ratio), told apart by point.
    FailureForecast,
    /// Predicted time left to failure (h): the forecast series advisory alert rules select
    /// (lower bands).
    TimeToFailure,
    /// Xu's improved tangent angle α (°) of a displacement point, and its warning level
    /// (docs/DOMAIN.md §Slope early warning).
    TangentAngle,
    /// A rate of change per unit of time (mm/d, °C/d): the series of a derived `rate` block and
    /// of a `rate` rule. A kind of its own so that no rule, check or block selecting the
    /// quantity itself (`kind = "settlement"`) ever takes a rate for a settlement; the tag
    /// `rate_of` says what it is a rate of, the unit its time base.
    Rate,
    /// Anything else; prefer adding a kind over using this.
    Other,
}

impl QuantityKind {
    /// The measurement name written to InfluxDB.
    #[must_use]
    pub const fn measurement(self) -> &'static str {
        match self {
            Self::Settlement => "settlement",
            Self::Level => "level",
            Self::Displacement => "displacement",
            Self::Crack => "crack",
            Self::Tilt => "tilt",
            Self::Azimuth => "azimuth",
            Self::Temperature => "temperature",
            Self::Humidity => "humidity",
            Self::Rainfall => "rainfall",
            Self::PorePressure => "pore_pressure",
            Self::Pressure => "pressure",
            Self::Acceleration => "acceleration",
            Self::Vibration => "vibration",
            Self::Strain => "strain",
            Self::Frequency => "frequency",
            Self::Resistance => "resistance",
            Self::Voltage => "voltage",
            Self::Signal => "signal",
            Self::Status => "status",
            Self::Maturity => "maturity",
            Self::Age => "age",
            Self::Strength => "strength",
            Self::InverseVelocity => "inverse_velocity",
            Self::FailureForecast => "failure_forecast",
            Self::TimeToFailure => "time_to_failure",
            Self::TangentAngle => "tangent_angle",
            Self::Rate => "rate",
            Self::Other => "other",
        }
    }

    /// Every kind, for error messages that list the allowed values.
    pub const ALL: [Self; 28] = [
        Self::Settlement,
        Self::Level,
        Self::Displacement,
        Self::Crack,
        Self::Tilt,
        Self::Azimuth,
        Self::Temperature,
        Self::Humidity,
        Self::Rainfall,
        Self::PorePressure,
        Self::Pressure,
        Self::Acceleration,
        Self::Vibration,
        Self::Strain,
        Self::Frequency,
        Self::Resistance,
        Self::Voltage,
        Self::Signal,
        Self::Status,
        Self::Maturity,
        Self::Age,
        Self::Strength,
        Self::InverseVelocity,
        Self::FailureForecast,
        Self::TimeToFailure,
        Self::TangentAngle,
        Self::Rate,
        Self::Other,
    ];

    /// The kind whose measurement name is `name` (the `rate_of` tag of a rate series).
    #[must_use]
    pub fn from_measurement(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.measurement() == name)
    }
}

impl fmt::Display for QuantityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.measurement())
    }
}

/// Largest device fault code written as itself in the `quality` field (300 + code); larger
/// ones read 399, so that device faults stay within 3xx and never read as a verdict of the
/// gateway's checks (4xx). CIGEM `sensor_state` codes are single digits (docs/DOMAIN.md §CIGEM).
pub const MAX_DEVICE_FAULT_CODE: u16 = 99;

/// How far a reading can be trusted. Written to InfluxDB as the integer field `quality`
/// ([`Quality::code`]) so that dashboards can filter bad readings and the schema stays numeric
/// (VictoriaMetrics drops string fields).
///
/// Only [`Quality::Good`] readings carry a value that rules may act on; every other variant is
/// data about the device, for the site technician.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    /// Read and decoded normally.
    Good,
    /// The device answered with a Modbus exception (the code, e.g. 2 = illegal data address).
    Exception(u8),
    /// The device did not answer within the timeout, after all retries.
    Timeout,
    /// The connection failed or the reply was garbled (CRC error, header mismatch, short frame).
    CommError,
    /// The device reported a fault for this sensor (e.g. CIGEM `sensor_state` ≠ 0).
    DeviceFault(i16),
    /// The decoded value was not a finite number (NaN or infinity in a float register).
    NotFinite,
    /// The raw value could not be converted to an engineering value: outside the conversion's
    /// domain (thermistor resistance ≤ 0, vibrating-wire frequency ≤ 0) or a result that is not
    /// finite (docs/DOMAIN.md §Sensors). The raw value is kept in the reading.
    NotConvertible,
    /// A conversion needs a correction input from a sibling channel read in the same poll (the
    /// vibrating-wire gauge's own thermistor) and that input was missing or not good. The value
    /// is never given uncorrected; the raw value is kept in the reading. Also a levelling
    /// settlement whose cell or reference has no good liquid temperature within `max_skew`.
    CorrectionUnavailable,
    /// Read normally, but stamped by the gateway while its clock was not synchronised (earlier
    /// than the gateway's build, [`crate::clock`]) and stored before the clock was: the value
    /// is as read, its time is not to be trusted. Readings held until the clock is synchronised
    /// are stamped again and stored good instead.
    ClockUnsynchronised,
    /// Read normally, then judged outside the physical range of its quantity by the channel's
    /// `range` check (docs/DOMAIN.md §Data quality). The value is stored as read; no rule and no
    /// derived channel uses it.
    OutOfRange,
    /// Read normally, then judged stuck by the channel's `stuck` check: it completes (or
    /// continues) a run of the same value for the check's `count` / `for` (docs/DOMAIN.md §Data
    /// quality). The readings of the run before it was complete are stored good: the check
    /// cannot know yet. The value is stored as read; no rule uses it.
    Stuck,
    /// Read normally, then judged a spike by the channel's `spike` check: a jump beyond `jump`
    /// that came back within `within` (docs/DOMAIN.md §Data quality). The value is stored as
    /// read; no rule uses it.
    Spike,
    /// A derived value (docs/DOMAIN.md §Derived channels) one of whose inputs was not good, or
    /// had no reading within `max_skew` of the others: flagged, never given as if good.
    DerivedInputBad,
    /// A derived value that needs the initial value (初始值) of an input, and none is configured
    /// for it: flagged, never computed from a value guessed by the gateway. The input's own
    /// reading is stored as usual.
    InitialValueMissing,
    /// A slope judgement (failure-time forecast, tangent angle; docs/DOMAIN.md §Slope early
    /// warning) that its gates refused: no value is given, and the reason says why.
    Refused(Refusal),
}

/// Why a slope judgement gives no value (docs/DOMAIN.md §Slope early warning, the gates of
/// Fukuzono's inverse-velocity method). Closed set; each has its own quality code (42x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Not yet enough readings over enough time in the smoothing or fit window (420).
    TooFewReadings,
    /// The smoothed speed is within its noise (below `noise_factor` × its standard error, or
    /// below `min_speed`): the point is not measurably moving (421).
    TooNoisy,
    /// 1/v is not falling: the point is not accelerating (422).
    NotAccelerating,
    /// The straight line fits 1/v worse than `min_r2` (423).
    PoorFit,
    /// The line reaches zero beyond `horizon` from now (424).
    BeyondHorizon,
    /// The line reached zero before the latest reading: no forecast in the future (425).
    FailureTimePassed,
    /// The tangent angle has no constant-velocity rate yet (still estimating it, or the
    /// estimate was within its noise) (426).
    NoReferenceRate,
}

impl Refusal {
    /// The quality code, 420–426.
    #[must_use]
    pub const fn code(self) -> i64 {
        match self {
            Self::TooFewReadings => 420,
            Self::TooNoisy => 421,
            Self::NotAccelerating => 422,
            Self::PoorFit => 423,
            Self::BeyondHorizon => 424,
            Self::FailureTimePassed => 425,
            Self::NoReferenceRate => 426,
        }
    }

    /// Short Chinese reason, for the console.
    #[must_use]
    pub const fn name_zh(self) -> &'static str {
        match self {
            Self::TooFewReadings => "读数不足",
            Self::TooNoisy => "速度未超出噪声",
            Self::NotAccelerating => "速度倒数未下降（未加速）",
            Self::PoorFit => "速度倒数直线拟合差",
            Self::BeyondHorizon => "预测失稳时间超出预报期",
            Self::FailureTimePassed => "拟合失稳时间已过",
            Self::NoReferenceRate => "尚无等速变形速率",
        }
    }

    /// Short English reason, for logs and the console.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TooFewReadings => "too few readings",
            Self::TooNoisy => "speed within its noise",
            Self::NotAccelerating => "1/v not falling (not accelerating)",
            Self::PoorFit => "poor straight-line fit of 1/v",
            Self::BeyondHorizon => "failure time beyond the horizon",
            Self::FailureTimePassed => "fitted failure time already passed",
            Self::NoReferenceRate => "no constant-velocity rate yet",
        }
    }
}

impl Quality {
    /// The integer written as the `quality` field. Stable: dashboards and the README schema rely
    /// on these numbers. 0 good; 1xx Modbus exception 1xx = 100 + code; 200 timeout;
    /// 201 communication error; 202 not finite; 203 not convertible; 204 correction input
    /// unavailable; 205 stamped by an unsynchronised gateway clock; 3xx device-reported fault 300 + |code| (a device code beyond
    /// [`MAX_DEVICE_FAULT_CODE`] reads 399, so that the range never reaches the next); 4xx
    /// judged by the gateway's own sensor checks on a value that was read normally: 400 out of
    /// range, 401 stuck, 402 spike (docs/DOMAIN.md §Data quality); 41x derived values
    /// (docs/DOMAIN.md §Derived channels): 410 an input not good, 411 initial value missing;
    /// 42x a slope judgement refused by its gates ([`Refusal::code`], docs/DOMAIN.md §Slope
    /// early warning).
    #[must_use]
    pub fn code(self) -> i64 {
        match self {
            Self::Good => 0,
            Self::Exception(code) => 100 + i64::from(code),
            Self::Timeout => 200,
            Self::CommError => 201,
            Self::NotFinite => 202,
            Self::NotConvertible => 203,
            Self::CorrectionUnavailable => 204,
            Self::ClockUnsynchronised => 205,
            Self::DeviceFault(code) => {
                300 + i64::from(code.unsigned_abs().min(MAX_DEVICE_FAULT_CODE))
            }
            Self::OutOfRange => 400,
            Self::Stuck => 401,
            Self::Spike => 402,
            Self::DerivedInputBad => 410,
            Self::InitialValueMissing => 411,
            Self::Refused(reason) => reason.code(),
        }
    }

    /// True for a verdict of the gateway's sensor checks (4xx): the value was read normally and
    /// is kept, but judged unusable.
    #[must_use]
    pub const fn is_verdict(self) -> bool {
        matches!(self, Self::OutOfRange | Self::Stuck | Self::Spike)
    }

    /// True for a reading whose value may be used.
    #[must_use]
    pub const fn is_good(self) -> bool {
        matches!(self, Self::Good)
    }
}

/// A series' tags, sorted by name: a boxed slice rather than a map. Every channel holds one
/// for its life, and a B-tree's first node has room for eleven pairs (540 bytes) where a
/// channel has five to eight: 1.3 MB of a 5,000-channel site's memory (issue 14, DHAT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(Box<[(String, String)]>);

impl Tags {
    /// The value of tag `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// The tags by name.
    pub fn iter(&self) -> TagsIter<'_> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// A map to change and build another series' tags from.
    #[must_use]
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }
}

/// Iterator over [`Tags`], by name.
pub type TagsIter<'a> = std::iter::Map<
    std::slice::Iter<'a, (String, String)>,
    fn(&(String, String)) -> (&String, &String),
>;

impl From<BTreeMap<String, String>> for Tags {
    fn from(map: BTreeMap<String, String>) -> Self {
        // A map iterates in key order: the slice is sorted, as `get` needs.
        Self(map.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Tags {
    type Item = (&'a String, &'a String);
    type IntoIter = TagsIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Identity and tags of one channel: one physical quantity of one point of one device.
///
/// `key` is the stable channel id used by the engine and logs (`device/point`); `line_prefix` is
/// the measurement and escaped, sorted tag set, rendered once so that encoding a reading into line
/// protocol is a copy plus two numbers.
#[derive(Debug, PartialEq, Eq)]
pub struct Series {
    /// `device/point`, unique per gateway.
    pub key: String,
    /// The device (Modbus device name, MQTT node or CIGEM device id).
    pub device: String,
    /// The point within the device (register name, sensor id, CIGEM data point and field).
    pub point: String,
    /// What the channel measures.
    pub kind: QuantityKind,
    /// Engineering unit after scaling, e.g. `mm`; empty when unknown.
    pub unit: String,
    /// All tags, including site, gateway, device, point and unit (when not empty).
    pub tags: Tags,
    /// `measurement,tag=v,...` escaped per the line-protocol rules.
    pub line_prefix: String,
}

/// The hasher of the maps a reading is looked up in (the MQTT source's series cache, the
/// engine's and the rules' channel states, the history's pending buckets: [`SeriesMap`]).
/// foldhash, hashbrown's default: a few times faster than std's SipHash-1-3 on a 20-60 byte key
/// (SipHash was 2.5-4 % of the gateway's CPU per reading in the ingest benchmark's profile,
/// README §Performance), and seeded at random per process, so that a device cannot pick names
/// that collide on every box. Not a cryptographic defence against a chosen-collision flood;
/// the maps are bounded ([`crate::sources::mqtt`]'s `max_channels`, the engine's idle eviction).
pub type FastHash = foldhash::fast::RandomState;

/// A map from a channel's series to its state, hashed with [`FastHash`].
pub type SeriesMap<V> = std::collections::HashMap<SeriesKey, V, FastHash>;

/// A map key that is a channel's key (`Series::key`), held as the series itself. A reading's
/// look-up then compares the key with the bytes of the same series when the map holds the
/// reading's own `Arc` (a source hands out one per channel): memory the look-up has just read
/// to hash it, where a `String` key copied elsewhere on the heap cost a cache miss per map and
/// reading (README §Performance: the key comparisons were about a fifth of the gateway's CPU).
/// Looked up by `&str` (`Borrow<str>`), so it hashes and compares as the key string does.
#[derive(Debug, Clone)]
pub struct SeriesKey(pub Arc<Series>);

impl std::hash::Hash for SeriesKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes: `Borrow<str>` look-ups must find it.
        self.0.key.as_str().hash(state);
    }
}

impl PartialEq for SeriesKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.key == other.0.key
    }
}

impl Eq for SeriesKey {}

impl std::borrow::Borrow<str> for SeriesKey {
    fn borrow(&self) -> &str {
        &self.0.key
    }
}

impl Series {
    /// Build a series and render its line-protocol prefix.
    ///
    /// `extra_tags` (structure, topic placeholders, ...) may override `site` and `device`, so a
    /// topic such as `sites/{site}/nodes/{device}/up` can name them.
    #[must_use]
    pub fn new<'a>(
        site: &str,
        gateway: &str,
        device: &str,
        point: &str,
        kind: QuantityKind,
        unit: &str,
        extra_tags: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Self {
        let mut tags = BTreeMap::new();
        tags.insert("site".to_owned(), site.to_owned());
        tags.insert("gateway".to_owned(), gateway.to_owned());
        tags.insert("device".to_owned(), device.to_owned());
        for (k, v) in extra_tags {
            tags.insert(k.clone(), v.clone());
        }
        // `point` and `unit` describe the channel itself and are never overridden by a tag.
        tags.insert("point".to_owned(), point.to_owned());
        if !unit.is_empty() {
            tags.insert("unit".to_owned(), unit.to_owned());
        }
        tags.retain(|_, v| !v.is_empty());
        let device = tags.get("device").cloned().unwrap_or_default();
        let line_prefix = crate::record::series_prefix(kind.measurement(), &tags);
        let tags = Tags::from(tags);
        Self {
            key: format!("{device}/{point}"),
            device,
            point: point.to_owned(),
            kind,
            unit: unit.to_owned(),
            tags,
            line_prefix,
        }
    }
}

/// One sample of one channel.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The channel.
    pub series: Arc<Series>,
    /// Sample time: device time when the device sends it, otherwise the poll or receive time.
    pub ts: TimestampNs,
    /// Engineering value (after scale and offset, the channel's conversion and its sign);
    /// `None` when the quality is not good and no value could be read or converted.
    pub value: Option<f64>,
    /// The device's own number before the channel's conversion (Hz, Ω, digits), kept when a
    /// conversion other than identity applies, also when that conversion failed; `None` when the
    /// channel has no conversion or nothing was read. Written as the `raw` field.
    pub raw: Option<f64>,
    /// How far the value can be trusted.
    pub quality: Quality,
}

impl Reading {
    /// A good reading, or a `NotFinite` one when the value is NaN or infinite (line protocol has
    /// no representation for them, and a NaN must never reach a rule).
    #[must_use]
    pub fn good(series: Arc<Series>, ts: TimestampNs, value: f64) -> Self {
        if value.is_finite() {
            Self {
                series,
                ts,
                value: Some(value),
                raw: None,
                quality: Quality::Good,
            }
        } else {
            Self {
                series,
                ts,
                value: None,
                raw: None,
                quality: Quality::NotFinite,
            }
        }
    }

    /// A reading without a value, carrying only why it is missing.
    #[must_use]
    pub fn bad(series: Arc<Series>, ts: TimestampNs, quality: Quality) -> Self {
        Self {
            series,
            ts,
            value: None,
            raw: None,
            quality,
        }
    }
}

/// The current wall-clock time in UTC nanoseconds.
///
/// Time-dependent logic takes a [`Clock`] instead of calling this, so tests can inject time.
#[must_use]
pub fn now_ns() -> TimestampNs {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_nanos()).unwrap_or(i64::MAX)
}

/// A source of "now", injectable so that time-dependent logic is testable without sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current UTC time in nanoseconds.
    fn now_ns(&self) -> TimestampNs;

    /// Whether `now` (from [`Clock::now_ns`]) can be trusted. Test clocks are.
    fn synchronised(&self, now: TimestampNs) -> bool {
        let _ = now;
        true
    }

    /// Nanoseconds on a clock that never jumps, from any origin. A test clock's own time, so
    /// that it never looks like a jump.
    fn monotonic_ns(&self) -> i64 {
        self.now_ns()
    }
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> TimestampNs {
        now_ns()
    }

    /// Not earlier than the build ([`crate::clock::synchronised`]).
    fn synchronised(&self, now: TimestampNs) -> bool {
        crate::clock::synchronised(now)
    }

    /// `Instant` since the first call in this process.
    fn monotonic_ns(&self) -> i64 {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let origin = ORIGIN.get_or_init(std::time::Instant::now);
        i64::try_from(origin.elapsed().as_nanos()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_codes_are_the_documented_ones() {
        assert_eq!(Quality::Good.code(), 0);
        assert_eq!(Quality::Exception(2).code(), 102);
        assert_eq!(Quality::Timeout.code(), 200);
        assert_eq!(Quality::CommError.code(), 201);
        assert_eq!(Quality::NotFinite.code(), 202);
        assert_eq!(Quality::NotConvertible.code(), 203);
        assert_eq!(Quality::CorrectionUnavailable.code(), 204);
        assert_eq!(Quality::ClockUnsynchronised.code(), 205);
        assert_eq!(Quality::DeviceFault(-2).code(), 302);
        assert_eq!(Quality::DeviceFault(99).code(), 399);
        assert_eq!(Quality::DeviceFault(4321).code(), 399);
        assert_eq!(Quality::DeviceFault(i16::MIN).code(), 399);
        assert_eq!(Quality::OutOfRange.code(), 400);
        assert_eq!(Quality::Stuck.code(), 401);
        assert_eq!(Quality::Spike.code(), 402);
        assert_eq!(Quality::DerivedInputBad.code(), 410);
        assert_eq!(Quality::InitialValueMissing.code(), 411);
        assert_eq!(Quality::Refused(Refusal::TooFewReadings).code(), 420);
        assert_eq!(Quality::Refused(Refusal::NoReferenceRate).code(), 426);
    }

    #[test]
    fn a_nan_value_is_never_good() {
        let s = Arc::new(Series::new(
            "s",
            "g",
            "d",
            "p",
            QuantityKind::Other,
            "",
            &BTreeMap::new(),
        ));
        let r = Reading::good(s, 0, f64::NAN);
        assert_eq!(r.quality, Quality::NotFinite);
        assert!(r.value.is_none());
    }

    #[test]
    fn series_tags_are_sorted_and_topic_tags_may_name_the_device() {
        let mut extra = BTreeMap::new();
        extra.insert("device".to_owned(), "node-7".to_owned());
        extra.insert("structure".to_owned(), "block A".to_owned());
        let s = Series::new(
            "xa",
            "gw1",
            "mqtt",
            "t1",
            QuantityKind::Temperature,
            "°C",
            &extra,
        );
        assert_eq!(s.key, "node-7/t1");
        assert_eq!(
            s.line_prefix,
            "temperature,device=node-7,gateway=gw1,point=t1,site=xa,structure=block\\ A,unit=°C"
        );
    }
}
