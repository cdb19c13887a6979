//! What an alert is once raised: the record delivered to the housing bureau (quality alerts) or the
//! site technician (device-fault alerts), its human message, its stable id, and its InfluxDB line.
//!
//! Owns [`Alert`] and its vocabulary ([`Level`], [`AlertState`], [`AlertKind`], [`Cause`],
//! [`Side`], [`Language`]), the zh/en message templates ([`render_message`]), the stable id
//! ([`stable_id`]) and the `alerts` measurement line ([`encode_alert_line`]).
//!
//! Does not own when an alert is raised, escalated or cleared (that is
//! [`crate::engine::rules`]), nor delivery (spool and sinks).
//!
//! # Levels
//! Four levels, as Chinese early-warning practice names them (docs/DOMAIN.md §Levels, EURASIP JWCN
//! 2021 Table 1): blue 注意 (attention), yellow 警示 (caution), orange 警戒 (warning), red 警报
//! (alarm). A rule may use any subset.
//!
//! # One condition, one alert
//! An alert is born `raised`, may be `escalated` or `de_escalated` any number of times, and ends
//! `cleared`. Every event carries the same [`Alert::id`] (derived from site, rule, side, channels
//! and raise time, so a re-sent event is recognisable) and a per-alert sequence number
//! [`Alert::seq`] (0 for the raise): receivers de-duplicate on `(id, seq)`.
//!
//! # Notices
//! News that is no alarm (a pour's strength milestone, issue 8 item 1; a structure declared
//! stable, item 2) travels the same path as alerts (alerts stream, every alert sink, the
//! `alerts` measurement) in a single-event form: kind [`AlertKind::Notice`], state
//! [`AlertState::Notice`] (state code 5), `seq` 0, never active and never cleared, level blue (the lowest; the
//! kind, not the level, says it is information). Its id is [`stable_id`] over the notice's own
//! rule name and subject with the time its subject began (a pour's placing time), so one
//! notice has one id however often it is re-sent.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{QuantityKind, TimestampNs};
use crate::record as line;

/// The InfluxDB measurement alerts are written to.
pub const ALERTS_MEASUREMENT: &str = "alerts";

/// How serious a quality condition is. Ordered: `Blue < Yellow < Orange < Red`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// 注意 (attention): noticeable, keep watching.
    Blue,
    /// 警示 (caution): typically 70 % of the alarm value (docs/DOMAIN.md §Levels).
    Yellow,
    /// 警戒 (warning): typically 85 % of the alarm value.
    Orange,
    /// 警报 (alarm): the alarm value is reached.
    Red,
}

impl Level {
    /// Every level, lowest first. `Level::ALL[l.index()] == l`.
    pub const ALL: [Self; 4] = [Self::Blue, Self::Yellow, Self::Orange, Self::Red];

    /// Position in [`Level::ALL`] (0 = blue).
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Self::Blue => 0,
            Self::Yellow => 1,
            Self::Orange => 2,
            Self::Red => 3,
        }
    }

    /// The integer written as the `level` field: 1 blue, 2 yellow, 3 orange, 4 red. Stable.
    #[must_use]
    pub const fn code(self) -> i64 {
        self.index() as i64 + 1
    }

    /// The Chinese level name (注意 / 警示 / 警戒 / 警报).
    #[must_use]
    pub const fn name_zh(self) -> &'static str {
        match self {
            Self::Blue => "注意",
            Self::Yellow => "警示",
            Self::Orange => "警戒",
            Self::Red => "警报",
        }
    }

    /// The English level name, lower case (attention / caution / warning / alarm).
    #[must_use]
    pub const fn name_en(self) -> &'static str {
        match self {
            Self::Blue => "attention",
            Self::Yellow => "caution",
            Self::Orange => "warning",
            Self::Red => "alarm",
        }
    }

    /// The config and JSON spelling (`blue`, `yellow`, `orange`, `red`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Blue => "blue",
            Self::Yellow => "yellow",
            Self::Orange => "orange",
            Self::Red => "red",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition was confirmed: first event of the alert.
    Raised,
    /// The level went up.
    Escalated,
    /// The level went down, past the deadband of the level it left.
    DeEscalated,
    /// The condition is over: last event of the alert.
    Cleared,
    /// Somebody on site or at the bureau took the alert in hand (消警): who, a note, when
    /// ([`Alert::ack`]). The alert stays active until its condition clears; a later level change
    /// is a new event that asks for attention again.
    Acknowledged,
    /// A notice: the one event of news that is no alarm (see the module doc).
    Notice,
}

impl AlertState {
    /// The integer written as the `state` field: 0 cleared, 1 raised, 2 escalated,
    /// 3 de-escalated, 4 acknowledged, 5 notice. Stable; 0 means "not active" so a dashboard
    /// can plot `state > 0`.
    #[must_use]
    pub const fn code(self) -> i64 {
        match self {
            Self::Cleared => 0,
            Self::Raised => 1,
            Self::Escalated => 2,
            Self::DeEscalated => 3,
            Self::Acknowledged => 4,
            Self::Notice => 5,
        }
    }
}

/// Who acknowledged an alert (消警), why, and when (issue 9 item 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Who, as they typed it (a name, a role: "监理 王工").
    pub by: String,
    /// What they did or decided ("现场核查，传感器被碰撞，已复位").
    pub note: String,
    /// Gateway time of the acknowledgement.
    pub at: TimestampNs,
}

/// Longest `by` of an acknowledgement, in characters: a name or a role.
pub const MAX_ACK_BY_CHARS: usize = 64;
/// Longest note of an acknowledgement, in characters: a sentence or two.
pub const MAX_ACK_NOTE_CHARS: usize = 500;

/// Who an alert is for. Distinct kinds are routed differently: a broken sensor must not page the
/// bureau, and a real breach must not be filed as a sensor problem (issue 4, docs/DOMAIN.md §Data quality).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A construction-quality condition (settlement, curing, slope), for the housing bureau.
    Quality,
    /// A sensor or device problem, for the site technician.
    DeviceFault,
    /// Information, no alarm (curing milestones, a structure declared stable), for the bureau
    /// and the site.
    Notice,
}

impl AlertKind {
    /// The config, JSON and tag spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Quality => "quality",
            Self::DeviceFault => "device_fault",
            Self::Notice => "notice",
        }
    }
}

/// What raised an alert: the rule kind for quality alerts, the failed check for device faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A channel's value against thresholds.
    Absolute,
    /// A channel's change from its baseline.
    Change,
    /// A channel's least-squares rate over a window.
    Rate,
    /// The difference of two channels.
    Difference,
    /// The difference of two channels divided by their distance.
    Tilt,
    /// Readings not good (timeout, exception, device-reported fault ...).
    BadQuality,
    /// The same value for too long.
    Stuck,
    /// A jump beyond the bound that came straight back.
    Spike,
    /// A value outside the sensor's physical range.
    OutOfRange,
    /// No reading from a channel for too long.
    Stale,
    /// No reading from any channel of a device for too long.
    DeviceSilent,
    /// A pour's weakest sensor reached a strength milestone (notice).
    Milestone,
    /// A structure's settlement became stable, every point of it (notice; JGJ 8-2016 §7.1.5).
    Stable,
    /// A pour's surface − air difference under the insulation crossed the GB 50496-2018
    /// §3.0.4-4 limit: do not strip yet, or stripping may go ahead (notice).
    StripAdvice,
    /// The daily report (监理日报) was made: its summary (notice).
    Report,
}

impl Cause {
    /// The kind of alert this cause raises.
    #[must_use]
    pub const fn kind(self) -> AlertKind {
        match self {
            Self::Absolute | Self::Change | Self::Rate | Self::Difference | Self::Tilt => {
                AlertKind::Quality
            }
            Self::BadQuality
            | Self::Stuck
            | Self::Spike
            | Self::OutOfRange
            | Self::Stale
            | Self::DeviceSilent => AlertKind::DeviceFault,
            Self::Milestone | Self::Stable | Self::StripAdvice | Self::Report => AlertKind::Notice,
        }
    }

    /// The JSON and tag spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Absolute => "absolute",
            Self::Change => "change",
            Self::Rate => "rate",
            Self::Difference => "difference",
            Self::Tilt => "tilt",
            Self::BadQuality => "bad_quality",
            Self::Stuck => "stuck",
            Self::Spike => "spike",
            Self::OutOfRange => "out_of_range",
            Self::Stale => "stale",
            Self::DeviceSilent => "device_silent",
            Self::Milestone => "milestone",
            Self::Stable => "stable",
            Self::StripAdvice => "strip_advice",
            Self::Report => "report",
        }
    }
}

/// Which threshold band a quality alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Alarm when the value is at or above the threshold.
    Upper,
    /// Alarm when the value is at or below the threshold.
    Lower,
}

impl Side {
    /// The JSON and tag spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Upper => "upper",
            Self::Lower => "lower",
        }
    }
}

/// The language of alert messages (`language = "zh" | "en"`); Chinese by default, since bureau
/// staff read the messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    /// 简体中文.
    #[default]
    Zh,
    /// English.
    En,
}

/// One alert event: a raise, an escalation, a de-escalation or a clear. Serialised as JSON for
/// delivery; every field is always present (absent values are `null`), so receivers see one
/// schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id of the alert, the same on every event from raise to clear ([`stable_id`]).
    pub id: String,
    /// Event number within the alert: 0 for the raise, then 1, 2, ...; `(id, seq)` is unique.
    pub seq: u32,
    /// Who the alert is for.
    pub kind: AlertKind,
    /// What raised it.
    pub cause: Cause,
    /// The site.
    pub site: String,
    /// The structure (building, pour, slope) from the channel's `structure` tag, when it has one.
    pub structure: Option<String>,
    /// The device (of the first channel, for a pair).
    pub device: String,
    /// The point within the device; empty for a device-level alert.
    pub point: String,
    /// The channel key (`device/point`): for a rate, difference or tilt rule the derived channel
    /// it judged (`channels` names its inputs); the device name for a device-level
    /// alert.
    pub channel: String,
    /// Every channel involved: one, two for a pair, none for a device-level alert.
    pub channels: Vec<String>,
    /// What the (first) channel measures; `None` for a device-level alert.
    pub quantity: Option<QuantityKind>,
    /// The rule or check name.
    pub rule: String,
    /// The rule's own wording of what it measures (`label` in the config), if it has one.
    pub label: Option<String>,
    /// Which band, for threshold alerts (quality alerts and out-of-range faults).
    pub side: Option<Side>,
    /// The level now (for a clear: the level that was cleared).
    pub level: Level,
    /// The level before this event (escalation, de-escalation, clear).
    pub previous_level: Option<Level>,
    /// The event.
    pub state: AlertState,
    /// The measured value that caused the event (rate, difference, ratio ... for derived rules;
    /// seconds without data for stale alerts); `None` when there is none.
    pub value: Option<f64>,
    /// The threshold of `level` that was passed (for a clear: of the cleared level).
    pub threshold: Option<f64>,
    /// The unit of `value` and `threshold` (`mm`, `mm/d`, `°C`, `s`; empty for a ratio).
    pub unit: String,
    /// The reading's quality code ([`crate::model::Quality::code`]) for bad-quality faults.
    pub quality: Option<i64>,
    /// When the alert was raised (data time of the confirming reading).
    pub started_at: TimestampNs,
    /// Data time of this event (the reading that caused it; gateway time for time-driven events).
    pub event_at: TimestampNs,
    /// Gateway time when this event was detected.
    pub detected_at: TimestampNs,
    /// The human message, in the configured language.
    pub message: String,
    /// For an [`AlertState::Acknowledged`] event: who, the note, when. `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<Acknowledgement>,
}

impl Alert {
    /// True for every event of an alert but its clear; never for a notice.
    #[must_use]
    pub fn is_active(&self) -> bool {
        !matches!(self.state, AlertState::Cleared | AlertState::Notice)
    }
}

// ----------------------------------------------------------------------------------------------
// Stable id
// ----------------------------------------------------------------------------------------------

/// FNV-1a 64-bit offset basis (Fowler, Noll, Vo; draft-eastlake-fnv §2).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits. Not cryptographic: the id only has to be deterministic and, within one site,
/// practically unique (alerts are few; a 64-bit collision among them is negligible).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The id of an alert: 16 lower-case hex digits of FNV-1a 64 over
/// `site \x1f rule \x1f side \x1f channel[\x1f channel] \x1f started_at` (side is `upper`,
/// `lower` or empty; `started_at` in decimal ns). Deterministic, so an alert re-derived after a
/// restart or re-sent by a sink carries the same id.
#[must_use]
pub fn stable_id(
    site: &str,
    rule: &str,
    side: Option<Side>,
    channels: &[&str],
    started_at: TimestampNs,
) -> String {
    let mut s = String::with_capacity(64);
    s.push_str(site);
    s.push('\x1f');
    s.push_str(rule);
    s.push('\x1f');
    s.push_str(side.map_or("", Side::as_str));
    for c in channels {
        s.push('\x1f');
        s.push_str(c);
    }
    let _ = write!(s, "\x1f{started_at}");
    format!("{:016x}", fnv1a(s.as_bytes()))
}

// ----------------------------------------------------------------------------------------------
// Messages
// ----------------------------------------------------------------------------------------------

/// (point label, base quantity name) in Chinese.
const fn quantity_zh(q: QuantityKind) -> (&'static str, &'static str) {
    match q {
        QuantityKind::Settlement => ("沉降点", "沉降"),
        QuantityKind::Level => ("水准点", "液位"),
        QuantityKind::Displacement => ("位移点", "位移"),
        QuantityKind::Crack => ("裂缝点", "裂缝宽度"),
        QuantityKind::Tilt => ("倾斜点", "倾角"),
        QuantityKind::Temperature => ("测温点", "温度"),
        QuantityKind::Humidity => ("湿度点", "湿度"),
        QuantityKind::Rainfall => ("雨量点", "雨量"),
        QuantityKind::PorePressure => ("渗压点", "孔隙水压力"),
        QuantityKind::Pressure => ("压力点", "压力"),
        QuantityKind::Acceleration => ("加速度点", "加速度"),
        QuantityKind::Vibration => ("振动点", "振动"),
        QuantityKind::Strain => ("应变点", "应变"),
        QuantityKind::Frequency => ("频率点", "频率"),
        QuantityKind::Resistance => ("电阻点", "电阻"),
        QuantityKind::Voltage => ("电压点", "电压"),
        QuantityKind::Signal => ("信号点", "信号强度"),
        QuantityKind::Status => ("状态点", "状态"),
        QuantityKind::Azimuth => ("方位角点", "方位角"),
        QuantityKind::Maturity => ("成熟度测点", "成熟度"),
        QuantityKind::Age => ("等效龄期测点", "等效龄期"),
        QuantityKind::Strength => ("强度测点", "推定强度"),
        QuantityKind::InverseVelocity => ("位移点", "速度倒数"),
        QuantityKind::FailureForecast => ("位移点", "预测失稳时间"),
        QuantityKind::TimeToFailure => ("位移点", "预测距失稳剩余时间（反速度法，仅供参考）"),
        QuantityKind::TangentAngle => ("位移点", "改进切线角"),
        QuantityKind::Rate => ("测点", "变化速率"),
        QuantityKind::Other => ("测点", "测值"),
    }
}

/// (point label, base quantity name) in English.
const fn quantity_en(q: QuantityKind) -> (&'static str, &'static str) {
    match q {
        QuantityKind::Settlement => ("settlement point", "settlement"),
        QuantityKind::Level => ("levelling point", "level"),
        QuantityKind::Displacement => ("displacement point", "displacement"),
        QuantityKind::Crack => ("crack point", "crack width"),
        QuantityKind::Tilt => ("tilt point", "tilt"),
        QuantityKind::Temperature => ("temperature point", "temperature"),
        QuantityKind::Humidity => ("humidity point", "humidity"),
        QuantityKind::Rainfall => ("rain gauge", "rainfall"),
        QuantityKind::PorePressure => ("piezometer", "pore pressure"),
        QuantityKind::Pressure => ("pressure point", "pressure"),
        QuantityKind::Acceleration => ("accelerometer", "acceleration"),
        QuantityKind::Vibration => ("vibration point", "vibration"),
        QuantityKind::Strain => ("strain point", "strain"),
        QuantityKind::Frequency => ("frequency point", "frequency"),
        QuantityKind::Resistance => ("resistance point", "resistance"),
        QuantityKind::Voltage => ("voltage point", "voltage"),
        QuantityKind::Signal => ("signal point", "signal strength"),
        QuantityKind::Status => ("status point", "status"),
        QuantityKind::Azimuth => ("azimuth point", "azimuth"),
        QuantityKind::Maturity => ("maturity point", "maturity"),
        QuantityKind::Age => ("equivalent-age point", "equivalent age"),
        QuantityKind::Strength => ("strength point", "in-place strength"),
        QuantityKind::InverseVelocity => ("displacement point", "inverse velocity"),
        QuantityKind::FailureForecast => ("displacement point", "predicted failure time"),
        QuantityKind::TimeToFailure => (
            "displacement point",
            "predicted time to failure (inverse-velocity advisory)",
        ),
        QuantityKind::TangentAngle => ("displacement point", "improved tangent angle"),
        QuantityKind::Rate => ("point", "rate of change"),
        QuantityKind::Other => ("point", "value"),
    }
}

/// What a quality rule measures, in words ("累计沉降", "rate of settlement").
fn measure_phrase(cause: Cause, q: QuantityKind, lang: Language) -> String {
    let settlement = q == QuantityKind::Settlement;
    match lang {
        Language::Zh => {
            let base = quantity_zh(q).1;
            match cause {
                Cause::Absolute if settlement => "累计沉降".to_owned(),
                Cause::Difference if settlement => "差异沉降".to_owned(),
                Cause::Change => format!("{base}变化量"),
                Cause::Rate => format!("{base}变化速率"),
                Cause::Difference => format!("{base}差"),
                Cause::Tilt => "倾斜率".to_owned(),
                _ => base.to_owned(),
            }
        }
        Language::En => {
            let base = quantity_en(q).1;
            match cause {
                Cause::Absolute if settlement => "cumulative settlement".to_owned(),
                Cause::Difference if settlement => "differential settlement".to_owned(),
                Cause::Change => format!("change in {base}"),
                Cause::Rate => format!("rate of {base}"),
                Cause::Difference => format!("{base} difference"),
                Cause::Tilt => "tilt ratio".to_owned(),
                _ => base.to_owned(),
            }
        }
    }
}

/// Largest number of decimals a message shows.
const MAX_MESSAGE_DECIMALS: i32 = 9;

/// A number for a message: one decimal from 1 up (`32.5`, `30.0`), two significant digits below
/// 1 (`0.0020`, `0.50`), so a tilt ratio of 0.002 does not print as `0.0`.
#[must_use]
pub fn format_number(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() || a == 0.0 || a >= 1.0 {
        return format!("{x:.1}");
    }
    let magnitude = a.log10().floor() as i32;
    let decimals = (1 - magnitude).clamp(1, MAX_MESSAGE_DECIMALS) as usize;
    format!("{x:.decimals$}")
}

/// `value` with its unit, e.g. `32.5 mm`; stale alerts (unit `s`) as a duration (`15m`).
fn quantity_text(x: f64, unit: &str) -> String {
    if unit == "s" {
        let secs = if x.is_finite() && x > 0.0 {
            x.round() as u64
        } else {
            0
        };
        return humantime::format_duration(Duration::from_secs(secs)).to_string();
    }
    if unit.is_empty() {
        format_number(x)
    } else {
        format!("{} {unit}", format_number(x))
    }
}

/// The Chinese or English description of a quality code ([`crate::model::Quality::code`]).
fn quality_text(code: i64, lang: Language) -> String {
    match (lang, code) {
        (Language::Zh, 200) => "通信超时".to_owned(),
        (Language::Zh, 201) => "通信错误".to_owned(),
        (Language::Zh, 202) => "数值无效".to_owned(),
        (Language::Zh, 203) => "原始值无法换算为工程值".to_owned(),
        (Language::Zh, 204) => "温度修正值缺失".to_owned(),
        (Language::Zh, 100..=199) => format!("Modbus 异常码 {}", code - 100),
        (Language::Zh, 300..=399) => format!("设备报告传感器故障（状态码 {}）", code - 300),
        (Language::Zh, _) => format!("质量码 {code}"),
        (Language::En, 200) => "timeout".to_owned(),
        (Language::En, 201) => "communication error".to_owned(),
        (Language::En, 202) => "not a finite number".to_owned(),
        (Language::En, 203) => "raw value not convertible to an engineering value".to_owned(),
        (Language::En, 204) => "temperature correction unavailable".to_owned(),
        (Language::En, 100..=199) => format!("Modbus exception {}", code - 100),
        (Language::En, 300..=399) => format!("device-reported sensor fault (state {})", code - 300),
        (Language::En, _) => format!("quality code {code}"),
    }
}

/// "A栋 沉降点 lev-a1/ch3", "block-A settlement point a and b", "设备 lev-a1".
fn subject(a: &Alert, lang: Language) -> String {
    let mut s = String::new();
    if let Some(st) = &a.structure {
        s.push_str(st);
        s.push(' ');
    }
    match a.quantity {
        None => s.push_str(match lang {
            Language::Zh => "设备 ",
            Language::En => "device ",
        }),
        Some(q) => {
            s.push_str(match lang {
                Language::Zh => quantity_zh(q).0,
                Language::En => quantity_en(q).0,
            });
            s.push(' ');
        }
    }
    match a.channels.as_slice() {
        [] => s.push_str(&a.channel),
        [one] => s.push_str(one),
        many => s.push_str(&many.join(match lang {
            Language::Zh => " 与 ",
            Language::En => " and ",
        })),
    }
    s
}

/// The short name of a device fault, for clears ("读数停滞已恢复").
const fn fault_name(cause: Cause, lang: Language) -> &'static str {
    match (lang, cause) {
        (Language::Zh, Cause::BadQuality) => "读数无效",
        (Language::Zh, Cause::Stuck) => "读数停滞",
        (Language::Zh, Cause::Spike) => "读数跳变",
        (Language::Zh, Cause::OutOfRange) => "超出量程",
        (Language::Zh, Cause::Stale) => "无数据",
        (Language::Zh, Cause::DeviceSilent) => "设备无数据",
        (Language::Zh, _) => "故障",
        (Language::En, Cause::BadQuality) => "invalid readings",
        (Language::En, Cause::Stuck) => "stuck value",
        (Language::En, Cause::Spike) => "spikes",
        (Language::En, Cause::OutOfRange) => "out-of-range readings",
        (Language::En, Cause::Stale) => "missing data",
        (Language::En, Cause::DeviceSilent) => "device silence",
        (Language::En, _) => "fault",
    }
}

/// The message of a quality alert event.
fn quality_message(a: &Alert, lang: Language) -> String {
    let q = a.quantity.unwrap_or(QuantityKind::Other);
    let what = a
        .label
        .clone()
        .unwrap_or_else(|| measure_phrase(a.cause, q, lang));
    let subj = subject(a, lang);
    let value = a.value.map(|v| quantity_text(v, &a.unit));
    let threshold = a
        .threshold
        .map(|t| quantity_text(t, &a.unit))
        .unwrap_or_default();
    let upper = a.side != Some(Side::Lower);
    let prev = a.previous_level.unwrap_or(a.level);
    let rule = &a.rule;
    match lang {
        Language::Zh => {
            let l = a.level.name_zh();
            let head = match &value {
                Some(v) => format!("{subj} {what} {v}"),
                None => subj,
            };
            let past = if upper { "超过" } else { "低于" };
            match a.state {
                // An acknowledgement without its `ack` (never built so) reads as the raise.
                AlertState::Raised | AlertState::Acknowledged => {
                    format!("【{l}】{head}，{past}{l}值 {threshold}（规则 {rule}）")
                }
                AlertState::Escalated => {
                    format!(
                        "【{l}】{head}，{past}{l}值 {threshold}，由{}升级（规则 {rule}）",
                        prev.name_zh()
                    )
                }
                AlertState::DeEscalated => {
                    format!(
                        "【{l}】{head}，回落至{l}级（{l}值 {threshold}），由{}降级（规则 {rule}）",
                        prev.name_zh()
                    )
                }
                AlertState::Cleared | AlertState::Notice => {
                    format!("【解除】{head}，{l}告警解除（规则 {rule}）")
                }
            }
        }
        Language::En => {
            let l = a.level.name_en();
            let tag = capitalise(l);
            let head = match &value {
                Some(v) => format!("{subj} {what} {v}"),
                None => subj,
            };
            let past = if upper { "above" } else { "below" };
            match a.state {
                AlertState::Raised | AlertState::Acknowledged => format!("[{tag}] {head}, {past} the {l} level {threshold} (rule {rule})"),
                AlertState::Escalated => format!(
                    "[{tag}] {head}, {past} the {l} level {threshold}, escalated from {} (rule {rule})",
                    prev.name_en()
                ),
                AlertState::DeEscalated => format!(
                    "[{tag}] {head}, back to {l} ({l} level {threshold}), de-escalated from {} (rule {rule})",
                    prev.name_en()
                ),
                AlertState::Cleared | AlertState::Notice => {
                    format!("[Cleared] {head}, {l} cleared (rule {rule})")
                }
            }
        }
    }
}

/// The message of a device-fault alert event.
/// `【消警】A栋 沉降点 lev-a1/ch3 警戒告警已由 监理 王工 消警：现场核查…（规则 settlement-total）`.
fn ack_message(a: &Alert, ack: &Acknowledgement, lang: Language) -> String {
    let subj = subject(a, lang);
    let rule = &a.rule;
    match lang {
        Language::Zh => format!(
            "【消警】{subj} {}告警已由 {} 消警：{}（规则 {rule}）",
            a.level.name_zh(),
            ack.by,
            ack.note
        ),
        Language::En => format!(
            "[Acknowledged] {subj}: {} alert acknowledged by {}: {} (rule {rule})",
            a.level.name_en(),
            ack.by,
            ack.note
        ),
    }
}

fn fault_message(a: &Alert, lang: Language) -> String {
    let subj = subject(a, lang);
    let rule = &a.rule;
    let v = a
        .value
        .map(|v| quantity_text(v, &a.unit))
        .unwrap_or_default();
    let t = a
        .threshold
        .map(|t| quantity_text(t, &a.unit))
        .unwrap_or_default();
    let upper = a.side != Some(Side::Lower);
    if a.state == AlertState::Cleared {
        let name = fault_name(a.cause, lang);
        return match lang {
            Language::Zh => format!("【故障解除】{subj} {name}已恢复（检查 {rule}）"),
            Language::En => format!("[Fault cleared] {subj} {name} recovered (check {rule})"),
        };
    }
    let detail = match (lang, a.cause) {
        (Language::Zh, Cause::BadQuality) => {
            format!(
                "读数无效：{}",
                a.quality
                    .map_or_else(String::new, |c| quality_text(c, lang))
            )
        }
        (Language::Zh, Cause::Stuck) => format!("读数停滞：持续为 {v}"),
        (Language::Zh, Cause::Spike) => format!("读数跳变：跳至 {v} 后回落，超过跳变限值 {t}"),
        (Language::Zh, Cause::OutOfRange) => {
            format!(
                "读数 {v} 超出物理量程{} {t}",
                if upper { "上限" } else { "下限" }
            )
        }
        (Language::Zh, Cause::Stale | Cause::DeviceSilent) => format!("已 {v} 无数据（限值 {t}）"),
        (Language::Zh, _) => "故障".to_owned(),
        (Language::En, Cause::BadQuality) => {
            format!(
                "invalid readings: {}",
                a.quality
                    .map_or_else(String::new, |c| quality_text(c, lang))
            )
        }
        (Language::En, Cause::Stuck) => format!("stuck at {v}"),
        (Language::En, Cause::Spike) => format!("spike to {v} and back, beyond the jump bound {t}"),
        (Language::En, Cause::OutOfRange) => {
            format!(
                "reading {v} outside the physical range ({} {t})",
                if upper { "max" } else { "min" }
            )
        }
        (Language::En, Cause::Stale | Cause::DeviceSilent) => {
            format!("no data for {v} (limit {t})")
        }
        (Language::En, _) => "fault".to_owned(),
    };
    match lang {
        Language::Zh => format!("【设备故障】{subj} {detail}（检查 {rule}）"),
        Language::En => format!("[Device fault] {subj} {detail} (check {rule})"),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

/// The message of a notice: `【通知】<subject> <label>：<value>，不低于 <threshold>（规则 <rule>）`;
/// in English `[Notice] <subject> <label>: <value>, at least <threshold> (rule <rule>)`, the
/// label saying what happened ("reached 50 % of the design strength").
fn notice_message(a: &Alert, lang: Language) -> String {
    // The daily report's summary says everything in its label.
    if a.cause == Cause::Report {
        let text = a.label.as_deref().unwrap_or_default();
        return match lang {
            Language::Zh => format!("【日报】{text}"),
            Language::En => format!("[Daily report] {text}"),
        };
    }
    let subj = subject(a, lang);
    let what = a.label.clone().unwrap_or_default();
    let rule = &a.rule;
    let value = a.value.map(|v| quantity_text(v, &a.unit));
    let threshold = a.threshold.map(|t| quantity_text(t, &a.unit));
    match lang {
        Language::Zh => {
            let detail = match (value, threshold) {
                (Some(v), Some(t)) => format!("：{v}，不低于 {t}"),
                (Some(v), None) => format!("：{v}"),
                _ => String::new(),
            };
            format!("【通知】{subj} {what}{detail}（规则 {rule}）")
        }
        Language::En => {
            let detail = match (value, threshold) {
                (Some(v), Some(t)) => format!(": {v}, at least {t}"),
                (Some(v), None) => format!(": {v}"),
                _ => String::new(),
            };
            format!("[Notice] {subj} {what}{detail} (rule {rule})")
        }
    }
}

/// The human message of an alert event, from its fields.
///
/// zh example: `【警戒】A栋 沉降点 lev-a1/ch3 累计沉降 32.5 mm，超过警戒值 30.0 mm（规则
/// settlement-total）`; en: `[Warning] A栋 settlement point lev-a1/ch3 cumulative settlement
/// 32.5 mm, above the warning level 30.0 mm (rule settlement-total)`.
#[must_use]
pub fn render_message(a: &Alert, lang: Language) -> String {
    if let (AlertState::Acknowledged, Some(ack)) = (a.state, &a.ack) {
        return ack_message(a, ack, lang);
    }
    match a.kind {
        AlertKind::Quality => quality_message(a, lang),
        AlertKind::DeviceFault => fault_message(a, lang),
        AlertKind::Notice => notice_message(a, lang),
    }
}

// ----------------------------------------------------------------------------------------------
// InfluxDB line
// ----------------------------------------------------------------------------------------------

/// Append one alert event as one line of the `alerts` measurement (with the trailing newline).
///
/// Tags: `alert_id`, `cause`, `channel`, `device`, `kind`, `point`, `rule`, `side`, `site`,
/// `structure` (empty ones are left out). Fields, all numeric: `level` (1–4, [`Level::code`]),
/// `state` (0 cleared, 1 raised, 2 escalated, 3 de-escalated, 4 acknowledged, 5 notice,
/// [`AlertState::code`]), `seq`, and `value` / `threshold` when present. Timestamp: the
/// event's data time.
///
/// The alert id is a **tag**, not a field: VictoriaMetrics drops string fields, and it stores
/// every number as a float64, so the 64-bit id as an integer field would lose its low bits
/// (above 2^53). As a tag it costs one series per alert, and alerts are rare (a site raises a
/// handful a day), while it lets a dashboard group the events of one alert.
pub fn encode_alert_line(out: &mut Vec<u8>, a: &Alert) {
    let mut tags = BTreeMap::new();
    tags.insert("alert_id".to_owned(), a.id.clone());
    tags.insert("cause".to_owned(), a.cause.as_str().to_owned());
    tags.insert("channel".to_owned(), a.channel.clone());
    tags.insert("device".to_owned(), a.device.clone());
    tags.insert("kind".to_owned(), a.kind.as_str().to_owned());
    tags.insert("point".to_owned(), a.point.clone());
    tags.insert("rule".to_owned(), a.rule.clone());
    if let Some(side) = a.side {
        tags.insert("side".to_owned(), side.as_str().to_owned());
    }
    tags.insert("site".to_owned(), a.site.clone());
    if let Some(st) = &a.structure {
        tags.insert("structure".to_owned(), st.clone());
    }
    if let Some(ack) = &a.ack {
        // A tag, so that VictoriaMetrics (which drops string fields) keeps who it was.
        tags.insert("ack_by".to_owned(), ack.by.clone());
    }
    let mut s = line::series_prefix(ALERTS_MEASUREMENT, &tags);
    let _ = write!(
        s,
        " level={}i,state={}i,seq={}i",
        a.level.code(),
        a.state.code(),
        a.seq
    );
    // `{v:?}` keeps a decimal point, so the field stays a float (as in `line::encode_reading`).
    if let Some(v) = a.value.filter(|v| v.is_finite()) {
        let _ = write!(s, ",value={v:?}");
    }
    if let Some(t) = a.threshold.filter(|t| t.is_finite()) {
        let _ = write!(s, ",threshold={t:?}");
    }
    if let Some(ack) = &a.ack {
        // A string field: InfluxDB keeps the note; VictoriaMetrics drops it (the alert sinks
        // carry it either way).
        let _ = write!(s, ",ack_note=\"{}\"", line::escape_string_field(&ack.note));
    }
    let _ = writeln!(s, " {}", a.event_at);
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z in ns.
    const T0: TimestampNs = 1_767_225_600_000_000_000;

    /// An orange settlement alert raised at [`T0`] (shared with the console's page tests).
    pub(crate) fn settlement_alert() -> Alert {
        Alert {
            id: stable_id(
                "xa",
                "settlement-total",
                Some(Side::Upper),
                &["lev-a1/ch3"],
                T0,
            ),
            seq: 0,
            kind: AlertKind::Quality,
            cause: Cause::Absolute,
            site: "xa".into(),
            structure: Some("A栋".into()),
            device: "lev-a1".into(),
            point: "ch3".into(),
            channel: "lev-a1/ch3".into(),
            channels: vec!["lev-a1/ch3".into()],
            quantity: Some(QuantityKind::Settlement),
            rule: "settlement-total".into(),
            label: None,
            side: Some(Side::Upper),
            level: Level::Orange,
            previous_level: None,
            state: AlertState::Raised,
            value: Some(32.5),
            threshold: Some(30.0),
            unit: "mm".into(),
            quality: None,
            started_at: T0,
            event_at: T0,
            detected_at: T0 + 1_000_000,
            message: String::new(),
            ack: None,
        }
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // draft-eastlake-fnv test vectors for FNV-1a 64.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn stable_id_is_fnv1a_of_the_documented_input() {
        // Expected value computed independently (Python):
        // fnv1a64(b"xa\x1fsettlement-total\x1fupper\x1flev-a1/ch3\x1f1767225600000000000")
        assert_eq!(
            stable_id(
                "xa",
                "settlement-total",
                Some(Side::Upper),
                &["lev-a1/ch3"],
                T0
            ),
            "e31146c9ff45c621"
        );
        // Any input change gives another id; the same input always the same one.
        let a = stable_id("xa", "r", None, &["a/b", "c/d"], T0);
        assert_eq!(a, stable_id("xa", "r", None, &["a/b", "c/d"], T0));
        assert_ne!(a, stable_id("xa", "r", None, &["a/b", "c/d"], T0 + 1));
        assert_ne!(
            a,
            stable_id("xa", "r", Some(Side::Lower), &["a/b", "c/d"], T0)
        );
        assert_eq!(a.len(), 16);
    }

    /// (state, previous level, level, value, threshold, zh message, en message).
    type MessageCase = (
        AlertState,
        Option<Level>,
        Level,
        f64,
        f64,
        &'static str,
        &'static str,
    );

    #[test]
    fn zh_and_en_messages_follow_the_templates() {
        let mut a = settlement_alert();
        let cases: [MessageCase; 4] = [
            (
                AlertState::Raised,
                None,
                Level::Orange,
                32.5,
                30.0,
                "【警戒】A栋 沉降点 lev-a1/ch3 累计沉降 32.5 mm，超过警戒值 30.0 mm（规则 settlement-total）",
                "[Warning] A栋 settlement point lev-a1/ch3 cumulative settlement 32.5 mm, above the warning level 30.0 mm (rule settlement-total)",
            ),
            (
                AlertState::Escalated,
                Some(Level::Orange),
                Level::Red,
                36.0,
                35.0,
                "【警报】A栋 沉降点 lev-a1/ch3 累计沉降 36.0 mm，超过警报值 35.0 mm，由警戒升级（规则 settlement-total）",
                "[Alarm] A栋 settlement point lev-a1/ch3 cumulative settlement 36.0 mm, above the alarm level 35.0 mm, escalated from warning (rule settlement-total)",
            ),
            (
                AlertState::DeEscalated,
                Some(Level::Red),
                Level::Yellow,
                22.0,
                21.0,
                "【警示】A栋 沉降点 lev-a1/ch3 累计沉降 22.0 mm，回落至警示级（警示值 21.0 mm），由警报降级（规则 settlement-total）",
                "[Caution] A栋 settlement point lev-a1/ch3 cumulative settlement 22.0 mm, back to caution (caution level 21.0 mm), de-escalated from alarm (rule settlement-total)",
            ),
            (
                AlertState::Cleared,
                Some(Level::Yellow),
                Level::Yellow,
                12.0,
                21.0,
                "【解除】A栋 沉降点 lev-a1/ch3 累计沉降 12.0 mm，警示告警解除（规则 settlement-total）",
                "[Cleared] A栋 settlement point lev-a1/ch3 cumulative settlement 12.0 mm, caution cleared (rule settlement-total)",
            ),
        ];
        for (state, prev, level, value, threshold, zh, en) in cases {
            a.state = state;
            a.previous_level = prev;
            a.level = level;
            a.value = Some(value);
            a.threshold = Some(threshold);
            assert_eq!(render_message(&a, Language::Zh), zh);
            assert_eq!(render_message(&a, Language::En), en);
        }
    }

    #[test]
    fn a_failure_forecast_advisory_says_it_is_a_predicted_time_to_failure() {
        let mut a = settlement_alert();
        a.quantity = Some(QuantityKind::TimeToFailure);
        a.structure = None;
        a.channel = "slope-tc-01/crack.inv.time_to_failure".into();
        a.channels = vec![a.channel.clone()];
        a.side = Some(Side::Lower);
        a.level = Level::Yellow;
        a.value = Some(20.5);
        a.threshold = Some(24.0);
        a.unit = "h".into();
        a.rule = "failure-forecast".into();
        assert_eq!(
            render_message(&a, Language::En),
            "[Caution] displacement point slope-tc-01/crack.inv.time_to_failure predicted time to failure (inverse-velocity advisory) 20.5 h, below the caution level 24.0 h (rule failure-forecast)"
        );
        assert_eq!(
            render_message(&a, Language::Zh),
            "【警示】位移点 slope-tc-01/crack.inv.time_to_failure 预测距失稳剩余时间（反速度法，仅供参考） 20.5 h，低于警示值 24.0 h（规则 failure-forecast）"
        );
        a.quantity = Some(QuantityKind::TangentAngle);
        a.side = Some(Side::Upper);
        a.level = Level::Orange;
        a.value = Some(81.2);
        a.threshold = Some(80.0);
        a.unit = "deg".into();
        assert!(render_message(&a, Language::En)
            .contains("improved tangent angle 81.2 deg, above the warning level 80.0 deg"));
    }

    #[test]
    fn lower_bands_ratios_rates_and_labels_read_naturally() {
        let mut a = settlement_alert();
        a.cause = Cause::Rate;
        a.quantity = Some(QuantityKind::Temperature);
        a.structure = None;
        a.channel = "slab-3f/t1".into();
        a.channels = vec!["slab-3f/t1".into()];
        a.side = Some(Side::Lower);
        a.level = Level::Yellow;
        a.value = Some(-1.75);
        a.threshold = Some(-1.6);
        a.unit = "°C/d".into();
        a.rule = "cooling".into();
        assert_eq!(
            render_message(&a, Language::Zh),
            "【警示】测温点 slab-3f/t1 温度变化速率 -1.8 °C/d，低于警示值 -1.6 °C/d（规则 cooling）"
        );
        a.label = Some("降温速率".into());
        assert_eq!(
            render_message(&a, Language::Zh),
            "【警示】测温点 slab-3f/t1 降温速率 -1.8 °C/d，低于警示值 -1.6 °C/d（规则 cooling）"
        );

        let mut t = settlement_alert();
        t.cause = Cause::Tilt;
        t.channel = "lev-a1/ch1|lev-a1/ch2".into();
        t.channels = vec!["lev-a1/ch1".into(), "lev-a1/ch2".into()];
        t.level = Level::Red;
        t.value = Some(0.00205);
        t.threshold = Some(0.002);
        t.unit = String::new();
        t.rule = "tilt".into();
        assert_eq!(
            render_message(&t, Language::Zh),
            "【警报】A栋 沉降点 lev-a1/ch1 与 lev-a1/ch2 倾斜率 0.0021，超过警报值 0.0020（规则 tilt）"
        );
        assert_eq!(
            render_message(&t, Language::En),
            "[Alarm] A栋 settlement point lev-a1/ch1 and lev-a1/ch2 tilt ratio 0.0021, above the alarm level 0.0020 (rule tilt)"
        );
    }

    #[test]
    fn device_fault_messages() {
        let mut a = settlement_alert();
        a.kind = AlertKind::DeviceFault;
        a.cause = Cause::BadQuality;
        a.rule = "bad-quality".into();
        a.level = Level::Yellow;
        a.value = None;
        a.threshold = None;
        a.side = None;
        a.quality = Some(200);
        assert_eq!(
            render_message(&a, Language::Zh),
            "【设备故障】A栋 沉降点 lev-a1/ch3 读数无效：通信超时（检查 bad-quality）"
        );
        assert_eq!(
            render_message(&a, Language::En),
            "[Device fault] A栋 settlement point lev-a1/ch3 invalid readings: timeout (check bad-quality)"
        );
        a.quality = Some(302);
        assert_eq!(
            render_message(&a, Language::Zh),
            "【设备故障】A栋 沉降点 lev-a1/ch3 读数无效：设备报告传感器故障（状态码 2）（检查 bad-quality）"
        );
        a.state = AlertState::Cleared;
        assert_eq!(
            render_message(&a, Language::Zh),
            "【故障解除】A栋 沉降点 lev-a1/ch3 读数无效已恢复（检查 bad-quality）"
        );

        let mut s = settlement_alert();
        s.kind = AlertKind::DeviceFault;
        s.cause = Cause::DeviceSilent;
        s.quantity = None;
        s.structure = None;
        s.channels = Vec::new();
        s.channel = "lev-a1".into();
        s.point = String::new();
        s.rule = "no-data".into();
        s.unit = "s".into();
        s.value = Some(1830.0);
        s.threshold = Some(1800.0);
        assert_eq!(
            render_message(&s, Language::Zh),
            "【设备故障】设备 lev-a1 已 30m 30s 无数据（限值 30m）（检查 no-data）"
        );
        assert_eq!(
            render_message(&s, Language::En),
            "[Device fault] device lev-a1 no data for 30m 30s (limit 30m) (check no-data)"
        );
    }

    #[test]
    fn numbers_keep_two_significant_digits_below_one() {
        let cases = [
            (32.5, "32.5"),
            (30.0, "30.0"),
            (0.002, "0.0020"),
            (0.5, "0.50"),
            (-2.0, "-2.0"),
            (0.0, "0.0"),
        ];
        for (x, want) in cases {
            assert_eq!(format_number(x), want, "{x}");
        }
    }

    #[test]
    fn alert_line_is_valid_line_protocol_with_numeric_fields_only() {
        let a = settlement_alert();
        let mut out = Vec::new();
        encode_alert_line(&mut out, &a);
        let text = String::from_utf8(out.clone()).expect("utf8");
        assert_eq!(
            text,
            format!(
                "alerts,alert_id={},cause=absolute,channel=lev-a1/ch3,device=lev-a1,kind=quality,point=ch3,\
                 rule=settlement-total,side=upper,site=xa,structure=A栋 level=3i,state=1i,seq=0i,value=32.5,\
                 threshold=30.0 1767225600000000000\n",
                a.id
            )
        );
        line::validate(&out).expect("valid line protocol");
    }

    #[test]
    fn a_notice_is_one_event_never_active_with_its_own_state_code_and_wording() {
        let mut a = settlement_alert();
        a.kind = AlertKind::Notice;
        a.cause = Cause::Milestone;
        a.state = AlertState::Notice;
        a.level = Level::Blue;
        a.side = None;
        a.structure = Some("A栋 筏板".into());
        a.quantity = Some(QuantityKind::Strength);
        a.channel = "therm/t02.strength".into();
        a.channels = vec![a.channel.clone()];
        a.rule = "raft/strength-50".into();
        a.label = Some("reached 50 % of the design strength".into());
        a.value = Some(15.04);
        a.threshold = Some(15.0);
        a.unit = "MPa".into();
        assert!(!a.is_active());
        assert_eq!(
            render_message(&a, Language::En),
            "[Notice] A栋 筏板 strength point therm/t02.strength reached 50 % of the design strength: 15.0 MPa, at least 15.0 MPa (rule raft/strength-50)"
        );
        let mut out = Vec::new();
        encode_alert_line(&mut out, &a);
        let text = String::from_utf8(out.clone()).expect("utf8");
        assert!(
            text.contains(",kind=notice,") && text.contains(" level=1i,state=5i,seq=0i,"),
            "{text}"
        );
        assert!(text.contains("cause=milestone"), "{text}");
        line::validate(&out).expect("valid line protocol");
        let json = serde_json::to_string(&a).expect("serialise");
        assert!(json.contains("\"state\":\"notice\"") && json.contains("\"kind\":\"notice\""));
    }

    #[test]
    fn alerts_round_trip_through_json() {
        let mut a = settlement_alert();
        a.message = render_message(&a, Language::Zh);
        let json = serde_json::to_string(&a).expect("serialise");
        assert!(json.contains("\"state\":\"raised\""), "{json}");
        assert!(json.contains("\"kind\":\"quality\""), "{json}");
        assert!(json.contains("\"level\":\"orange\""), "{json}");
        let back: Alert = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, a);
    }
}
