//! Device timestamps in MQTT payloads: RFC 3339 strings and Unix epoch numbers, to UTC ns.
//!
//! Owns [`TimeFormat`], [`parse_rfc3339`] and [`from_node`]. It does not decide what to do with
//! a reading that has no timestamp (the caller stamps the receive time) or with one from the far
//! past or future (the engine rejects those with a counted reason).
//!
//! A small parser of our own rather than `humantime::parse_rfc3339_weak`: it is exact to the
//! nanosecond, accepts numeric offsets (`+08:00`, common on Chinese platforms), and its rules
//! are written down here:
//! - `YYYY-MM-DD`, then `T`, `t` or one space, then `hh:mm:ss`, an optional fraction of 1 to 9
//!   digits (further digits are ignored), then `Z`, `z` or `±hh:mm` (RFC 3339 §5.6).
//! - No offset at all is not RFC 3339 but common: Chinese devices and platforms send local time
//!   (China Standard Time, UTC+8, no daylight saving) as `2026-03-14 15:04:03`. Such a time is
//!   read in the subscription's configured [`UtcOffset`] (`timezone`, default
//!   [`DEFAULT_TIMEZONE`] = `+08:00`); read as UTC it would land 8 hours in the future, which
//!   the engine's `max_future` check would reject (docs/DOMAIN.md §Time). [`parse_rfc3339`]
//!   alone reads it as UTC (the CIGEM protocol's own timestamps are UTC with `Z`).
//! - Second 60 (a leap second, RFC 3339 §5.7) rolls into the next minute, as POSIX time does.

use serde::Deserialize;

use super::document::{Node, Number};
use crate::model::{TimestampNs, NANOS_PER_SEC};

/// A fixed offset from UTC, written `"+08:00"`, `"-03:30"` or `"Z"` (RFC 3339 §5.6
/// `time-numoffset`), for timestamps that carry none. Fixed, not a zone name: the device's
/// clock does not follow daylight-saving rules either, and China has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct UtcOffset {
    seconds: i32,
}

/// Offset for device times without one when the config sets no `timezone`: China Standard Time,
/// UTC+8, the local time of the sites and of the devices that send local time.
pub const DEFAULT_TIMEZONE: UtcOffset = UtcOffset { seconds: 8 * 3600 };

/// UTC itself.
pub const UTC: UtcOffset = UtcOffset { seconds: 0 };

impl UtcOffset {
    /// The offset in seconds east of UTC.
    #[must_use]
    pub const fn seconds(self) -> i32 {
        self.seconds
    }
}

impl TryFrom<String> for UtcOffset {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let b = text.as_bytes();
        let bad = || {
            format!("\"{text}\" is not a UTC offset; write it as \"+08:00\" (China Standard Time), \"-03:30\" or \"Z\"")
        };
        if text == "Z" || text == "z" {
            return Ok(UTC);
        }
        let sign = match b.first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(bad()),
        };
        if b.len() != 6 || b[3] != b':' {
            return Err(bad());
        }
        let (Some(h), Some(m)) = (digits(b, 1, 2), digits(b, 4, 2)) else {
            return Err(bad());
        };
        if h > 23 || m > 59 {
            return Err(bad());
        }
        let seconds = i32::try_from(h * 3600 + m * 60).map_err(|_| bad())?;
        Ok(Self {
            seconds: sign * seconds,
        })
    }
}

impl std::fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.seconds < 0 { '-' } else { '+' };
        let a = self.seconds.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
    }
}

/// How a timestamp field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// An RFC 3339 string such as `2026-11-29T10:00:00.000Z`.
    Rfc3339,
    /// Unix seconds (integer or fractional).
    EpochS,
    /// Unix milliseconds.
    EpochMs,
    /// Unix microseconds.
    EpochUs,
    /// Unix nanoseconds.
    EpochNs,
    /// A string is RFC 3339 (or a number written as text); a number's magnitude says its unit,
    /// see [`AUTO_SECONDS_BELOW`].
    #[default]
    Auto,
}

/// In [`TimeFormat::Auto`], an epoch number below this is seconds, below ×10³ milliseconds,
/// below ×10⁶ microseconds, otherwise nanoseconds. 10¹¹ s is the year 5138 and 10¹¹ ms is
/// March 1973, so every unit is recognised for any date between 1973 and 5138.
pub const AUTO_SECONDS_BELOW: f64 = 1e11;

/// Nanoseconds per millisecond.
const NANOS_PER_MILLI: i64 = 1_000_000;
/// Nanoseconds per microsecond.
const NANOS_PER_MICRO: i64 = 1_000;
/// Seconds per day.
const SECS_PER_DAY: i64 = 86_400;

/// Convert a timestamp node to UTC ns; a date-time without an offset is read in `local`.
/// `None` when it is not in `format` or out of the `i64` ns range (years 1677–2262).
#[must_use]
pub fn from_node(node: &Node<'_>, format: TimeFormat, local: UtcOffset) -> Option<TimestampNs> {
    match (node, format) {
        (Node::Str(s), TimeFormat::Rfc3339) => parse_rfc3339_in(s, local),
        (Node::Str(s), TimeFormat::Auto) => {
            epoch_text(s).map_or_else(|| parse_rfc3339_in(s, local), epoch_auto)
        }
        (Node::Str(s), unit) => epoch_text(s).and_then(|n| epoch(n, unit_nanos(unit)?)),
        (Node::Number(n), TimeFormat::Auto) => epoch_auto(*n),
        (Node::Number(n), unit) => epoch(*n, unit_nanos(unit)?),
        _ => None,
    }
}

/// Nanoseconds per unit of an epoch format.
const fn unit_nanos(format: TimeFormat) -> Option<i64> {
    match format {
        TimeFormat::EpochS => Some(NANOS_PER_SEC),
        TimeFormat::EpochMs => Some(NANOS_PER_MILLI),
        TimeFormat::EpochUs => Some(NANOS_PER_MICRO),
        TimeFormat::EpochNs => Some(1),
        TimeFormat::Rfc3339 | TimeFormat::Auto => None,
    }
}

/// An epoch number written as text: digits with an optional sign and fraction. Integers are
/// kept exact.
fn epoch_text(s: &str) -> Option<Number> {
    let t = s.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(if i < 0 {
            Number::I(i)
        } else {
            Number::U(i.unsigned_abs())
        });
    }
    t.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Number::F)
}

/// Pick the unit of an epoch number by its magnitude (see [`AUTO_SECONDS_BELOW`]).
fn epoch_auto(n: Number) -> Option<TimestampNs> {
    let magnitude = n.as_f64().abs();
    let per_unit = if magnitude < AUTO_SECONDS_BELOW {
        NANOS_PER_SEC
    } else if magnitude < AUTO_SECONDS_BELOW * 1e3 {
        NANOS_PER_MILLI
    } else if magnitude < AUTO_SECONDS_BELOW * 1e6 {
        NANOS_PER_MICRO
    } else {
        1
    };
    epoch(n, per_unit)
}

/// `n` units of `per_unit` ns each, exact for integers, rounded to the nanosecond for fractions.
#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)] // range-checked below
fn epoch(n: Number, per_unit: i64) -> Option<TimestampNs> {
    match n {
        Number::U(u) => i64::try_from(u).ok()?.checked_mul(per_unit),
        Number::I(i) => i.checked_mul(per_unit),
        Number::F(f) => {
            let ns = (f * per_unit as f64).round();
            // i64::MAX as f64 rounds up to 2^63, so the upper bound must be exclusive.
            (ns.is_finite() && ns >= i64::MIN as f64 && ns < i64::MAX as f64).then_some(ns as i64)
        }
    }
}

/// Parse an RFC 3339 date-time (rules in the module doc) to UTC ns; without an offset it is
/// read as UTC.
#[must_use]
pub fn parse_rfc3339(s: &str) -> Option<TimestampNs> {
    parse_rfc3339_in(s, UTC)
}

/// Parse an RFC 3339 date-time to UTC ns; without an offset it is read in `local`.
#[must_use]
pub fn parse_rfc3339_in(s: &str, local: UtcOffset) -> Option<TimestampNs> {
    let b = s.as_bytes();
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut pos = 19;
    let mut nanos: i64 = 0;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            if pos - start < 9 {
                nanos = nanos * 10 + i64::from(b[pos] - b'0');
            }
            pos += 1;
        }
        let used = pos - start;
        if used == 0 {
            return None;
        }
        for _ in used..9 {
            nanos *= 10;
        }
    }
    let offset_secs = match b.get(pos) {
        None => i64::from(local.seconds),
        Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() && b.get(pos + 3) == Some(&b':') => {
            let oh = digits(b, pos + 1, 2)?;
            let om = digits(b, pos + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * SECS_PER_DAY + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)
}

/// `len` ASCII digits at `at` as a number.
fn digits(b: &[u8], at: usize, len: usize) -> Option<i64> {
    let field = b.get(at..at + len)?;
    field.iter().try_fold(0i64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
    })
}

/// Gregorian leap year rule.
const fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` (1–12) of `year`.
const fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "chrono-Compatible
/// Low-Level Date Algorithms", `days_from_civil`).
const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::mqtt::document::parse;

    /// 2026-03-14T07:04:03Z by hand: 1970..=2025 is 56 years with 14 leap days
    /// (1972, 76, 80, 84, 88, 92, 96, 2000, 04, 08, 12, 16, 20, 24): 56 × 365 + 14 = 20 454 days;
    /// 2026: January 31 + February 28 + 13 days = 72; 20 526 days × 86 400 s = 1 773 446 400 s;
    /// plus 7 h 4 min 3 s = 25 443 s → 1 773 471 843 s.
    const CIGEM_EXAMPLE_NS: i64 = 1_773_471_843_000_000_000;

    /// China Standard Time is UTC+8 with no daylight saving: a device's local
    /// `2026-03-14 15:04:03` without an offset is the CIGEM example's 07:04:03Z.
    #[test]
    fn local_times_without_an_offset_are_read_in_the_configured_timezone() {
        assert_eq!(DEFAULT_TIMEZONE.to_string(), "+08:00");
        assert_eq!(
            parse_rfc3339_in("2026-03-14 15:04:03", DEFAULT_TIMEZONE),
            Some(CIGEM_EXAMPLE_NS)
        );
        // An explicit offset or Z always wins over the configured zone.
        assert_eq!(
            parse_rfc3339_in("2026-03-14T07:04:03Z", DEFAULT_TIMEZONE),
            Some(CIGEM_EXAMPLE_NS)
        );
        let minus = UtcOffset::try_from("-03:30".to_owned()).expect("offset");
        assert_eq!(minus.seconds(), -12_600);
        assert_eq!(
            parse_rfc3339_in("2026-03-14T03:34:03", minus),
            Some(CIGEM_EXAMPLE_NS)
        );
        for bad in ["+8", "08:00", "+24:00", "UTC+8", "+08:60"] {
            assert!(UtcOffset::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        assert_eq!(UtcOffset::try_from("Z".to_owned()), Ok(UTC));
    }

    #[test]
    fn cigem_example_is_exact() {
        assert_eq!(
            parse_rfc3339("2026-03-14T07:04:03.000Z"),
            Some(CIGEM_EXAMPLE_NS)
        );
        assert_eq!(
            parse_rfc3339("2026-03-14T07:04:03Z"),
            Some(CIGEM_EXAMPLE_NS)
        );
    }

    #[test]
    fn fractions_are_exact_to_the_nanosecond() {
        assert_eq!(
            parse_rfc3339("2026-03-14T07:04:03.5Z"),
            Some(CIGEM_EXAMPLE_NS + 500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-03-14T07:04:03.123Z"),
            Some(CIGEM_EXAMPLE_NS + 123_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-03-14T07:04:03.123456789Z"),
            Some(CIGEM_EXAMPLE_NS + 123_456_789)
        );
        // Digits after the ninth are ignored (truncated, not rounded).
        assert_eq!(
            parse_rfc3339("2026-03-14T07:04:03.1234567899Z"),
            Some(CIGEM_EXAMPLE_NS + 123_456_789)
        );
    }

    #[test]
    fn offsets_and_separators() {
        // 15:04:03+08:00 is 07:04:03Z.
        assert_eq!(
            parse_rfc3339("2026-03-14T15:04:03.000+08:00"),
            Some(CIGEM_EXAMPLE_NS)
        );
        assert_eq!(
            parse_rfc3339("2026-03-14T06:34:03-00:30"),
            Some(CIGEM_EXAMPLE_NS)
        );
        assert_eq!(parse_rfc3339("2026-03-14 07:04:03"), Some(CIGEM_EXAMPLE_NS));
        assert_eq!(
            parse_rfc3339("2026-03-14t07:04:03z"),
            Some(CIGEM_EXAMPLE_NS)
        );
    }

    #[test]
    fn epoch_and_leap_days() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        // 2000-03-01: 30 years (7 leap days 1972..1996) = 10 957 days to 2000-01-01, +31 +29.
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00Z"),
            Some(11_017 * 86_400 * NANOS_PER_SEC)
        );
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("2100-02-29T00:00:00Z").is_none());
        assert!(parse_rfc3339("2026-02-29T00:00:00Z").is_none());
    }

    #[test]
    fn malformed_dates_are_refused() {
        for bad in [
            "",
            "2026-03-14",
            "2026-3-14T07:04:03Z",
            "2026-13-14T07:04:03Z",
            "2026-03-32T07:04:03Z",
            "2026-03-14T24:00:00Z",
            "2026-03-14T07:60:00Z",
            "2026-03-14T07:04:03.Z",
            "2026-03-14T07:04:03+0800",
            "2026-03-14T07:04:03Zjunk",
            "2026-03-14X07:04:03Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn simulator_epoch_ms_and_auto_magnitudes() {
        let doc = parse(
            r#"[1764410000123, 1764410000, 1764410000.5, 1764410000123456, 1764410000123456789,
                "1764410000123", "2026-03-14T07:04:03.000Z"]"#,
        )
        .expect("json");
        let Node::Array(n) = doc else { panic!("array") };
        let auto: Vec<Option<i64>> = n
            .iter()
            .map(|x| from_node(x, TimeFormat::Auto, UTC))
            .collect();
        assert_eq!(
            auto,
            [
                Some(1_764_410_000_123_000_000),
                Some(1_764_410_000_000_000_000),
                Some(1_764_410_000_500_000_000),
                Some(1_764_410_000_123_456_000),
                Some(1_764_410_000_123_456_789),
                Some(1_764_410_000_123_000_000),
                Some(CIGEM_EXAMPLE_NS),
            ]
        );
        assert_eq!(
            from_node(&n[1], TimeFormat::EpochS, UTC),
            Some(1_764_410_000_000_000_000)
        );
        assert_eq!(
            from_node(&n[0], TimeFormat::EpochMs, UTC),
            Some(1_764_410_000_123_000_000)
        );
        assert_eq!(
            from_node(&n[3], TimeFormat::EpochUs, UTC),
            Some(1_764_410_000_123_456_000)
        );
        assert_eq!(
            from_node(&n[4], TimeFormat::EpochNs, UTC),
            Some(1_764_410_000_123_456_789)
        );
        assert_eq!(
            from_node(&n[5], TimeFormat::EpochMs, UTC),
            Some(1_764_410_000_123_000_000)
        );
        // Wrong kind for the declared format, or out of range.
        assert_eq!(from_node(&n[0], TimeFormat::Rfc3339, UTC), None);
        assert_eq!(from_node(&n[6], TimeFormat::EpochMs, UTC), None);
        assert_eq!(from_node(&n[0], TimeFormat::EpochS, UTC), None);
        assert_eq!(from_node(&Node::Bool(true), TimeFormat::Auto, UTC), None);
    }
}
