//! InfluxDB line protocol, built and checked by us.
//!
//! Owns escaping, the rendering of one reading as one line, and a validator for whole bodies.
//! We validate before spooling because VictoriaMetrics answers 204 even to malformed lines and
//! only logs "cannot unmarshal" (docs/ARCHITECTURE.md §Crate pitfalls): a bad line would vanish without any error reaching
//! the gateway. Rules follow the InfluxDB v2 line-protocol reference ("Special characters"):
//! - measurement: escape comma and space;
//! - tag keys, tag values and field keys: escape comma, equals sign and space;
//! - string field values: escape double quote and backslash (we write no string fields);
//! - no newline may appear anywhere in a line; we replace CR and LF in names with a space
//!   (then escaped) since they cannot be escaped at all.
//!
//! Does not own the HTTP write (see the sink in `super`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::Reading;

/// Append `s` escaped for a measurement name.
fn escape_measurement(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            ',' | ' ' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
}

/// Append `s` escaped for a tag key, tag value or field key.
pub(crate) fn escape_key(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            ',' | '=' | ' ' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
}

/// Render `measurement,k=v,...` with tags in the map's (sorted) order, as InfluxDB recommends
/// for write performance. Empty tag values are skipped: line protocol forbids them.
#[must_use]
pub fn series_prefix(measurement: &str, tags: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(64);
    escape_measurement(&mut out, measurement);
    for (k, v) in tags {
        if k.is_empty() || v.is_empty() {
            continue;
        }
        out.push(',');
        escape_key(&mut out, k);
        out.push('=');
        escape_key(&mut out, v);
    }
    out
}

/// Append one reading as one line (with the trailing newline) to `out`:
/// `<prefix> value=<f64>,quality=<code>i <ts_ns>`; `value` is omitted when the reading has none.
///
/// Floats are written with Rust's shortest round-trip formatting, so the stored value is the
/// exact `f64` the gateway computed.
pub fn encode_reading(out: &mut Vec<u8>, reading: &Reading) {
    out.extend_from_slice(reading.series.line_prefix.as_bytes());
    out.push(b' ');
    let mut buf = String::with_capacity(48);
    if let Some(v) = reading.value {
        // `{v:?}` keeps a decimal point or exponent, so integers stay floats (`3.0`, not `3`).
        let _ = write!(buf, "value={v:?},");
    }
    let _ = write!(buf, "quality={}i {}", reading.quality.code(), reading.ts);
    out.extend_from_slice(buf.as_bytes());
    out.push(b'\n');
}

/// Why a line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line is empty or has no measurement.
    #[error("line {0}: empty measurement")]
    EmptyMeasurement(usize),
    /// There is no unescaped space separating tags from fields.
    #[error("line {0}: no field set")]
    NoFields(usize),
    /// A field is not `key=value` or its value is not a number, boolean or quoted string.
    #[error("line {0}: malformed field")]
    BadField(usize),
    /// A tag is not `key=value` with both sides non-empty.
    #[error("line {0}: malformed tag")]
    BadTag(usize),
    /// The timestamp is not a signed integer.
    #[error("line {0}: malformed timestamp")]
    BadTimestamp(usize),
    /// The body is not UTF-8.
    #[error("line {0}: not UTF-8")]
    NotUtf8(usize),
}

/// Split `s` at unescaped occurrences of `sep`, outside double quotes when `quotes` is set.
fn split_unescaped(s: &str, sep: char, quotes: bool) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    let mut in_quotes = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' if quotes => in_quotes = !in_quotes,
            c if c == sep && !in_quotes => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn valid_field_value(v: &str) -> bool {
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        return true;
    }
    if matches!(
        v,
        "t" | "T" | "true" | "True" | "TRUE" | "f" | "F" | "false" | "False" | "FALSE"
    ) {
        return true;
    }
    if let Some(int) = v.strip_suffix('i') {
        return int.parse::<i64>().is_ok();
    }
    if let Some(uint) = v.strip_suffix('u') {
        return uint.parse::<u64>().is_ok();
    }
    v.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Check that every non-empty line of `body` is well-formed line protocol.
///
/// # Errors
/// The first problem found, with its 1-based line number.
pub fn validate(body: &[u8]) -> Result<(), LineError> {
    let text = std::str::from_utf8(body).map_err(|_| LineError::NotUtf8(0))?;
    for (n, line) in text.split('\n').enumerate() {
        let n = n + 1;
        if line.is_empty() {
            continue;
        }
        let sections = split_unescaped(line, ' ', true);
        if sections.len() < 2 || sections.len() > 3 {
            return Err(LineError::NoFields(n));
        }
        let series = split_unescaped(sections[0], ',', false);
        if series[0].is_empty() {
            return Err(LineError::EmptyMeasurement(n));
        }
        for tag in &series[1..] {
            let kv = split_unescaped(tag, '=', false);
            if kv.len() != 2 || kv[0].is_empty() || kv[1].is_empty() {
                return Err(LineError::BadTag(n));
            }
        }
        for field in split_unescaped(sections[1], ',', true) {
            let kv = split_unescaped(field, '=', true);
            if kv.len() != 2 || kv[0].is_empty() || !valid_field_value(kv[1]) {
                return Err(LineError::BadField(n));
            }
        }
        if let Some(ts) = sections.get(2) {
            if ts.parse::<i64>().is_err() {
                return Err(LineError::BadTimestamp(n));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Quality, QuantityKind, Series};

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn measurement_escapes_comma_and_space_but_not_equals() {
        assert_eq!(series_prefix("a b,c=d", &BTreeMap::new()), "a\\ b\\,c=d");
    }

    #[test]
    fn tag_keys_and_values_escape_comma_equals_space() {
        let p = series_prefix("m", &tags(&[("k=1", "v,1 x"), ("z", "ok")]));
        assert_eq!(p, "m,k\\=1=v\\,1\\ x,z=ok");
    }

    #[test]
    fn newlines_in_names_cannot_break_the_line() {
        let p = series_prefix("m", &tags(&[("point", "a\nb")]));
        assert_eq!(p, "m,point=a\\ b");
        assert!(!p.contains('\n'));
    }

    #[test]
    fn empty_tag_values_are_skipped() {
        assert_eq!(
            series_prefix("m", &tags(&[("unit", ""), ("a", "b")])),
            "m,a=b"
        );
    }

    #[test]
    fn a_reading_renders_as_one_valid_line() {
        let s = Arc::new(Series::new(
            "site 1",
            "gw",
            "lev,a",
            "ch=1",
            QuantityKind::Settlement,
            "mm",
            &BTreeMap::new(),
        ));
        let mut out = Vec::new();
        encode_reading(
            &mut out,
            &Reading::good(Arc::clone(&s), 1_700_000_000_000_000_000, 12.5),
        );
        encode_reading(&mut out, &Reading::good(Arc::clone(&s), 1, 3.0));
        encode_reading(&mut out, &Reading::bad(s, 2, Quality::Exception(2)));
        let text = String::from_utf8(out.clone()).expect("utf8");
        assert_eq!(
            text,
            "settlement,device=lev\\,a,gateway=gw,point=ch\\=1,site=site\\ 1,unit=mm value=12.5,quality=0i 1700000000000000000\n\
             settlement,device=lev\\,a,gateway=gw,point=ch\\=1,site=site\\ 1,unit=mm value=3.0,quality=0i 1\n\
             settlement,device=lev\\,a,gateway=gw,point=ch\\=1,site=site\\ 1,unit=mm quality=102i 2\n"
        );
        assert_eq!(validate(&out), Ok(()));
    }

    #[test]
    fn float_formatting_round_trips_exactly() {
        let s = Arc::new(Series::new(
            "s",
            "g",
            "d",
            "p",
            QuantityKind::Other,
            "",
            &BTreeMap::new(),
        ));
        for v in [
            0.1_f64,
            1e-7,
            123_456_789.123_456_78,
            -0.000_1,
            f64::from(21.53_f32),
        ] {
            let mut out = Vec::new();
            encode_reading(&mut out, &Reading::good(Arc::clone(&s), 0, v));
            let text = String::from_utf8(out).expect("utf8");
            let field = text.split(' ').nth(1).expect("fields");
            let value: f64 = field
                .split(',')
                .next()
                .and_then(|f| f.strip_prefix("value="))
                .and_then(|f| f.parse().ok())
                .expect("value");
            assert_eq!(value.to_bits(), v.to_bits(), "{text}");
        }
    }

    #[test]
    fn validator_rejects_what_victoriametrics_would_silently_skip() {
        assert_eq!(validate(b"m value=1 10\n"), Ok(()));
        assert_eq!(validate(b"m,a=b value=1,quality=0i\n"), Ok(()));
        assert_eq!(validate(b"m,a\\ b=c\\,d value=\"x y\" 10"), Ok(()));
        assert_eq!(validate(b"m"), Err(LineError::NoFields(1)));
        assert_eq!(validate(b"ok v=1\nm,a= v=1"), Err(LineError::BadTag(2)));
        assert_eq!(validate(b"m v=abc"), Err(LineError::BadField(1)));
        assert_eq!(validate(b"m v=NaN"), Err(LineError::BadField(1)));
        assert_eq!(validate(b"m v=1 12x"), Err(LineError::BadTimestamp(1)));
        assert_eq!(validate(b",a=b v=1"), Err(LineError::EmptyMeasurement(1)));
        assert_eq!(validate(b"m v=1i2"), Err(LineError::BadField(1)));
    }
}
