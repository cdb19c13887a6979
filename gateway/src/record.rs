//! The spool's record format: InfluxDB line protocol, built and checked by us.
//!
//! Owns escaping, the rendering of one reading as one line, and a validator for whole bodies.
//! Sits below the engine, the alerts and the sinks: the engine encodes readings into records,
//! the spool stores records as opaque bytes, the InfluxDB sink sends them as they are. It does
//! not own any network write.
//!
//! We validate before spooling because VictoriaMetrics answers 204 even to malformed lines and
//! only logs "cannot unmarshal" (docs/ARCHITECTURE.md §Crate pitfalls): a bad line would vanish
//! without any error reaching the gateway. Escaping follows the InfluxDB v2 line-protocol
//! reference, "Special characters" (docs/DOMAIN.md §Line protocol):
//! - measurement: escape comma, space and backslash;
//! - tag keys, tag values and field keys: escape comma, equals sign, space and backslash;
//! - string field values: escape double quote and backslash (we write no string fields);
//! - a double quote has no special meaning outside a string field value;
//! - no newline may appear anywhere in a line; we replace CR and LF in names with a space
//!   (then escaped) since they cannot be escaped at all.
//!
//! The validator parses by the same rules a receiver does (a backslash escapes the character
//! after it, quotes open only at the start of a field value), so what it accepts is read back
//! with the same names.

use std::io::Write as _;

use crate::model::Reading;

/// Append `s` escaped for a measurement name.
fn escape_measurement(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            ',' | ' ' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
}

/// Append `s` escaped for a tag key, tag value or field key.
pub fn escape_key(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            ',' | '=' | ' ' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
}

/// `s` escaped for the inside of a string field value (`k="..."`): `"` and `\` take a
/// backslash (InfluxDB line-protocol reference, "Special characters"); a line break, which line
/// protocol cannot carry in a value, becomes a space.
#[must_use]
pub fn escape_string_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Render `measurement,k=v,...` with tags in the map's (sorted) order, as InfluxDB recommends
/// for write performance. Empty tag values are skipped: line protocol forbids them.
#[must_use]
pub fn series_prefix<'a>(
    measurement: &str,
    tags: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> String {
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
/// `<prefix> value=<f64>,raw=<f64>,quality=<code>i <ts_ns>`; `value` is omitted when the reading
/// has none, `raw` when the channel has no conversion (or the raw number is not finite: line
/// protocol cannot carry NaN, docs/DOMAIN.md §Line protocol).
///
/// Floats are written with Rust's shortest round-trip formatting, so the stored value is the
/// exact `f64` the gateway computed.
pub fn encode_reading(out: &mut Vec<u8>, reading: &Reading) {
    // Written straight into `out` (no `String` per reading), integers with `itoa` (the
    // formatting machinery's cost showed in the ingest benchmark's profile).
    out.extend_from_slice(reading.series.line_prefix.as_bytes());
    out.push(b' ');
    if let Some(v) = reading.value {
        // `{v:?}` keeps a decimal point or exponent, so integers stay floats (`3.0`, not `3`).
        let _ = write!(out, "value={v:?},");
    }
    if let Some(raw) = reading.raw.filter(|r| r.is_finite()) {
        let _ = write!(out, "raw={raw:?},");
    }
    let mut int = itoa::Buffer::new();
    out.extend_from_slice(b"quality=");
    out.extend_from_slice(int.format(reading.quality.code()).as_bytes());
    out.extend_from_slice(b"i ");
    out.extend_from_slice(int.format(reading.ts).as_bytes());
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

/// Byte index of the first unescaped `sep` in `s` at or after `from` (a backslash escapes the
/// byte after it, whatever it is), or `None`.
fn find_unescaped(s: &[u8], from: usize, sep: &[u8]) -> Option<usize> {
    let mut i = from;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            c if sep.contains(&c) => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Split `s` at every unescaped `sep`.
fn split_unescaped(s: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    while let Some(i) = find_unescaped(s, start, &[sep]) {
        parts.push(&s[start..i]);
        start = i + 1;
    }
    parts.push(&s[start..]);
    parts
}

fn valid_field_value(v: &str) -> bool {
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

/// Check the field set starting at `line[from..]`; returns the index just past it (at the
/// space before the timestamp, or the end). `None` when malformed.
fn field_set_end(line: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let eq = find_unescaped(line, i, b"= ,")?;
        if line[eq] != b'=' || eq == i {
            return None;
        }
        let v = eq + 1;
        let end = if line.get(v) == Some(&b'"') {
            // A string value: `\"` and `\\` are escapes, anything else is literal.
            let close = find_unescaped(line, v + 1, b"\"")?;
            close + 1
        } else {
            let end = find_unescaped(line, v, b", ").unwrap_or(line.len());
            let text = std::str::from_utf8(&line[v..end]).ok()?;
            if !valid_field_value(text) {
                return None;
            }
            end
        };
        match line.get(end) {
            Some(b',') => i = end + 1,
            Some(b' ') | None => return Some(end),
            Some(_) => return None,
        }
    }
}

/// Check one non-empty line; `n` is its 1-based number.
fn validate_line(line: &[u8], n: usize) -> Result<(), LineError> {
    let Some(space) = find_unescaped(line, 0, b" ") else {
        return Err(LineError::NoFields(n));
    };
    let series = split_unescaped(&line[..space], b',');
    if series[0].is_empty() {
        return Err(LineError::EmptyMeasurement(n));
    }
    for tag in &series[1..] {
        let kv = split_unescaped(tag, b'=');
        if kv.len() != 2 || kv[0].is_empty() || kv[1].is_empty() {
            return Err(LineError::BadTag(n));
        }
    }
    let fields_end = field_set_end(line, space + 1).ok_or(LineError::BadField(n))?;
    if fields_end < line.len() {
        let ts = std::str::from_utf8(&line[fields_end + 1..]).map_err(|_| LineError::NotUtf8(n))?;
        if ts.parse::<i64>().is_err() {
            return Err(LineError::BadTimestamp(n));
        }
    }
    Ok(())
}

/// Check that every non-empty line of `body` is well-formed line protocol.
///
/// # Errors
/// The first problem found, with its 1-based line number.
pub fn validate(body: &[u8]) -> Result<(), LineError> {
    if std::str::from_utf8(body).is_err() {
        return Err(LineError::NotUtf8(0));
    }
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        if !line.is_empty() {
            validate_line(line, n + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
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
    fn backslashes_are_escaped_and_quotes_are_plain_in_names() {
        // InfluxDB line-protocol reference, "Special characters": a backslash in a tag value
        // is written `\\`; a double quote needs no escape outside string field values.
        let p = series_prefix(
            "m",
            &tags(&[("device", "s7\\"), ("point", "a b,c=d\"e\\f 中")]),
        );
        assert_eq!(p, "m,device=s7\\\\,point=a\\ b\\,c\\=d\"e\\\\f\\ 中");
        assert_eq!(validate(format!("{p} value=1 1\n").as_bytes()), Ok(()));
        assert_eq!(series_prefix("a\\b", &BTreeMap::new()), "a\\\\b");
    }

    #[test]
    fn every_printable_ascii_character_in_a_tag_makes_a_valid_line() {
        for c in ' '..='~' {
            for value in [c.to_string(), format!("x{c}"), format!("{c}x{c}")] {
                let p = series_prefix("m", &tags(&[("k", &value), (&value, "v")]));
                let line = format!("{p} value=1,quality=0i 1\n");
                assert_eq!(validate(line.as_bytes()), Ok(()), "{line}");
            }
        }
    }

    #[test]
    fn string_field_values_escape_quotes_and_backslashes_and_drop_line_breaks() {
        let v = escape_string_field("a \"b\" c\\d\n2,x=1 中");
        assert_eq!(v, "a \\\"b\\\" c\\\\d 2,x=1 中");
        let line = format!("m,k=v note=\"{v}\",level=1i 1\n");
        assert_eq!(validate(line.as_bytes()), Ok(()), "{line}");
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
    fn a_converted_reading_carries_its_raw_value_also_when_the_conversion_failed() {
        let s = Arc::new(Series::new(
            "s",
            "g",
            "pz",
            "p1",
            QuantityKind::PorePressure,
            "kPa",
            &BTreeMap::new(),
        ));
        let mut good = Reading::good(Arc::clone(&s), 5, 418.8);
        good.raw = Some(6749.0);
        let mut failed = Reading::bad(Arc::clone(&s), 6, Quality::NotConvertible);
        failed.raw = Some(0.0);
        let mut nan_raw = Reading::bad(s, 7, Quality::NotFinite);
        nan_raw.raw = Some(f64::NAN);
        let mut out = Vec::new();
        for r in [&good, &failed, &nan_raw] {
            encode_reading(&mut out, r);
        }
        let text = String::from_utf8(out.clone()).expect("utf8");
        let prefix = "pore_pressure,device=pz,gateway=g,point=p1,site=s,unit=kPa";
        assert_eq!(
            text,
            format!(
                "{prefix} value=418.8,raw=6749.0,quality=0i 5\n\
                 {prefix} raw=0.0,quality=203i 6\n\
                 {prefix} quality=202i 7\n"
            )
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
        // A quote in a tag value is a plain character; in a field value it opens a string.
        assert_eq!(validate(b"m,a=x\"y v=1 10"), Ok(()));
        assert_eq!(validate(b"m v=\"a, b=c\" 10"), Ok(()));
        assert_eq!(validate(b"m v=\"open 10"), Err(LineError::BadField(1)));
        assert_eq!(validate(b"m v=1,=2"), Err(LineError::BadField(1)));
        assert_eq!(validate(b"m v=1,"), Err(LineError::BadField(1)));
        assert_eq!(validate(b"m,a=b\\\\ v=1"), Ok(()));
        assert_eq!(validate(b"m,a=b\\ v=1"), Err(LineError::NoFields(1)));
    }
}
