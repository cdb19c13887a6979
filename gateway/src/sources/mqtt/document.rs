//! A JSON tree that borrows its strings from the payload: the parse step of the JSON and CIGEM
//! payload formats.
//!
//! Owns [`Node`] and [`parse`], the JSON parser that builds it (RFC 8259, checked against
//! serde_json in the tests). It does not know any payload layout ([`super::payload`],
//! [`super::cigem`] do). Why not `serde_json::Value`: `Value` allocates a `String` for every key
//! and string value and a B-tree per object; at 100k messages/s those allocations were the
//! largest cost of the MQTT path. Here a string without escapes is a slice of the payload, an
//! object is one `Vec` of pairs (objects in sensor payloads have a handful of keys, so a linear
//! search beats hashing), and integers keep their exact `i64`/`u64` value so that epoch
//! nanoseconds (above 2^53) do not lose precision.

use std::borrow::Cow;
use std::fmt;

/// A JSON number, kept as the parser saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A non-negative integer.
    U(u64),
    /// A negative integer.
    I(i64),
    /// Anything with a fraction or exponent.
    F(f64),
}

impl Number {
    /// The value as `f64` (integers above 2^53 round to the nearest representable value).
    #[must_use]
    #[allow(clippy::cast_precision_loss)] // documented rounding of huge integers
    pub fn as_f64(self) -> f64 {
        match self {
            Self::U(u) => u as f64,
            Self::I(i) => i as f64,
            Self::F(f) => f,
        }
    }
}

/// One JSON value; strings borrow from the payload unless they contained escapes.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    Str(Cow<'a, str>),
    /// An array.
    Array(Vec<Node<'a>>),
    /// An object, keys in document order (duplicates kept; lookups take the first).
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// The member `key` of an object (`None` for other node types).
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Self::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follow a dot-separated path of object keys (`"a.b.c"`).
    #[must_use]
    pub fn path(&self, path: &str) -> Option<&Node<'a>> {
        // Most paths are one key; skip the splitter for them (it showed in profiles).
        if path.as_bytes().contains(&b'.') {
            path.split('.').try_fold(self, |node, key| node.get(key))
        } else {
            self.get(path)
        }
    }

    /// The string, if this is a string.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the node type, for error messages.
    #[must_use]
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Number(_) => "a number",
            Self::Str(_) => "a string",
            Self::Array(_) => "an array",
            Self::Object(_) => "an object",
        }
    }

    /// The node as a measurement: a number, a numeric string (`"12.5"`, surrounding whitespace
    /// ignored) or a boolean as 0/1. `None` for anything else.
    #[must_use]
    pub fn as_measurement(&self) -> Option<f64> {
        match self {
            Self::Number(n) => Some(n.as_f64()),
            Self::Str(s) => parse_number_text(s),
            Self::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }
}

/// A decimal number written as text. Rejects what `f64::from_str` would accept but no device
/// means as a number (`inf`, `NaN`, empty).
#[must_use]
pub fn parse_number_text(s: &str) -> Option<f64> {
    let t = s.trim();
    let first = t.as_bytes().first()?;
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return None;
    }
    let v: f64 = t.parse().ok()?;
    v.is_finite().then_some(v)
}

/// Arrays and objects nested in one another that a document may have: serde_json's own limit
/// (127, its depth budget of 128 used up at the 128th), so that a payload of ten thousand `[`
/// cannot exhaust the source task's stack.
pub const MAX_DEPTH: usize = 127;

/// The largest integer every smaller one of which an f64 holds exactly (2^53).
const MAX_EXACT_DIGITS: u64 = 1 << 53;

/// 10^0 ..= 10^22: the powers of ten an f64 holds exactly (5^22 < 2^53).
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Members an object's list is first given room for (a sensor payload has five to eight).
const OBJECT_MEMBERS: usize = 8;

/// Why a payload is not one JSON value (RFC 8259), and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    what: &'static str,
    /// 1-based line of the offending byte.
    line: usize,
    /// 1-based byte column within the line (serde_json counted the same way).
    column: usize,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.what, self.line, self.column
        )
    }
}

impl std::error::Error for ParseError {}

/// Parse a JSON document (RFC 8259) that borrows from `text`.
///
/// Why not serde_json, which this replaced: its `deserialize_any` through a visitor was 2,700
/// instructions per 90-byte sensor message, the largest single cost of the MQTT path (README
/// §Performance); this is one pass over the bytes. It accepts exactly what serde_json accepts
/// (checked against it on generated and mutated documents in the tests), with two differences
/// in numbers: a fraction or exponent is rounded to the nearest `f64` (`str::parse`; serde_json
/// without its `float_roundtrip` feature could be one unit in the last place off), and an
/// integer beyond 64 bits the same way.
///
/// # Errors
/// [`ParseError`] (what, line and column) when `text` is not one JSON value.
pub fn parse(text: &str) -> Result<Node<'_>, ParseError> {
    let mut p = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let node = p.value().map_err(|e| e.located(p.bytes))?;
    p.skip_whitespace();
    if p.pos < p.bytes.len() {
        return Err(p.error("trailing characters").located(p.bytes));
    }
    Ok(node)
}

/// An error inside the parser: what, at which byte.
#[derive(Debug)]
struct Malformed {
    what: &'static str,
    at: usize,
}

impl Malformed {
    fn located(self, bytes: &[u8]) -> ParseError {
        let before = &bytes[..self.at.min(bytes.len())];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let column = before.len()
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
            + 1;
        ParseError {
            what: self.what,
            line,
            column,
        }
    }
}

/// One pass over a document's bytes.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    /// What went wrong here; the line and column are counted once, by [`parse`], so that the
    /// results passed up on the way are small.
    fn error(&self, what: &'static str) -> Malformed {
        Malformed { what, at: self.pos }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// RFC 8259 §2: space, tab, line feed, carriage return.
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self) -> Result<Node<'a>, Malformed> {
        self.skip_whitespace();
        match self.peek() {
            None => Err(self.error("EOF while parsing a value")),
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => Ok(Node::Str(self.string()?)),
            Some(b't') => self.literal(b"true", Node::Bool(true)),
            Some(b'f') => self.literal(b"false", Node::Bool(false)),
            Some(b'n') => self.literal(b"null", Node::Null),
            Some(b'-' | b'0'..=b'9') => self.number().map(Node::Number),
            Some(_) => Err(self.error("expected value")),
        }
    }

    fn nested(
        &mut self,
        inner: fn(&mut Self) -> Result<Node<'a>, Malformed>,
    ) -> Result<Node<'a>, Malformed> {
        if self.depth == MAX_DEPTH {
            return Err(self.error("recursion limit exceeded"));
        }
        self.depth += 1;
        self.pos += 1;
        let node = inner(self);
        self.depth -= 1;
        node
    }

    fn literal(&mut self, word: &'static [u8], node: Node<'a>) -> Result<Node<'a>, Malformed> {
        for &expected in word {
            match self.peek() {
                None => return Err(self.error("EOF while parsing a value")),
                Some(b) if b == expected => self.pos += 1,
                Some(_) => return Err(self.error("expected ident")),
            }
        }
        Ok(node)
    }

    /// After the `{`.
    fn object(&mut self) -> Result<Node<'a>, Malformed> {
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Node::Object(Vec::new()));
        }
        // Room for a sensor payload's handful of keys at once, instead of growing 0 → 4 → 8
        // (two allocations and a copy per message).
        let mut members = Vec::with_capacity(OBJECT_MEMBERS);
        loop {
            match self.peek() {
                Some(b'"') => {}
                None => return Err(self.error("EOF while parsing an object")),
                Some(b'}') => return Err(self.error("trailing comma")),
                Some(_) => return Err(self.error("key must be a string")),
            }
            let key = self.string()?;
            self.skip_whitespace();
            match self.peek() {
                Some(b':') => self.pos += 1,
                None => return Err(self.error("EOF while parsing an object")),
                Some(_) => return Err(self.error("expected `:`")),
            }
            let value = self.value()?;
            members.push((key, value));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_whitespace();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Node::Object(members));
                }
                None => return Err(self.error("EOF while parsing an object")),
                Some(_) => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    /// After the `[`.
    fn array(&mut self) -> Result<Node<'a>, Malformed> {
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Node::Array(Vec::new()));
        }
        let mut items = Vec::new();
        loop {
            items.push(self.value()?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_whitespace();
                    if self.peek() == Some(b']') {
                        return Err(self.error("trailing comma"));
                    }
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Node::Array(items));
                }
                None => return Err(self.error("EOF while parsing a list")),
                Some(_) => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    #[inline]
    /// At the opening `"`: the string, a slice of the text unless it has escapes (RFC 8259 §7).
    fn string(&mut self) -> Result<Cow<'a, str>, Malformed> {
        self.pos += 1;
        let start = self.pos;
        // One pass to the first byte that is not plain text (the common case ends the string).
        let plain = self.bytes[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        match plain.map(|n| (start + n, self.bytes[start + n])) {
            None => {
                self.pos = self.bytes.len();
                return Err(self.error("EOF while parsing a string"));
            }
            Some((end, b'"')) => {
                // Both ends are ASCII, so the slice is on character boundaries.
                let s = &self.text[start..end];
                self.pos = end + 1;
                return Ok(Cow::Borrowed(s));
            }
            Some((end, b'\\')) => self.pos = end,
            Some((end, _)) => {
                self.pos = end;
                return Err(
                    self.error("control character (\\u0000-\\u001F) found while parsing a string")
                );
            }
        }
        let mut owned = String::with_capacity(self.pos - start + 16);
        let mut run = start;
        loop {
            match self.peek() {
                None => return Err(self.error("EOF while parsing a string")),
                Some(b'"') => {
                    owned.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    return Ok(Cow::Owned(owned));
                }
                Some(b'\\') => {
                    owned.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    let c = self.escape()?;
                    owned.push(c);
                    run = self.pos;
                }
                Some(0..=0x1f) => {
                    return Err(self
                        .error("control character (\\u0000-\\u001F) found while parsing a string"))
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// After a `\`: the character it stands for.
    fn escape(&mut self) -> Result<char, Malformed> {
        let Some(b) = self.peek() else {
            return Err(self.error("EOF while parsing a string"));
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                match first {
                    0xD800..=0xDBFF => {
                        // A UTF-16 surrogate pair: `\uD83D\uDE00`.
                        if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        self.pos += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                        char::from_u32(c).ok_or_else(|| self.error("invalid unicode code point"))?
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self.error("lone leading surrogate in hex escape"))
                    }
                    _ => char::from_u32(first)
                        .ok_or_else(|| self.error("invalid unicode code point"))?,
                }
            }
            _ => {
                self.pos -= 1;
                return Err(self.error("invalid escape"));
            }
        })
    }

    /// Four hexadecimal digits of a `\u` escape.
    fn hex4(&mut self) -> Result<u32, Malformed> {
        let mut v = 0;
        for _ in 0..4 {
            let Some(b) = self.peek() else {
                return Err(self.error("EOF while parsing a string"));
            };
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(self.error("invalid escape")),
            };
            v = v * 16 + u32::from(d);
            self.pos += 1;
        }
        Ok(v)
    }

    /// RFC 8259 §6: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`. Integers keep
    /// their exact value as serde_json gave them: a non-negative one as `U`, a negative one as
    /// `I`, `-0` and anything beyond 64 bits as `F`. A fraction is the nearest `f64`.
    fn number(&mut self) -> Result<Number, Malformed> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        // The digits, integer and fraction part, as one integer while it fits.
        let mut digits: u64 = 0;
        let mut fits = true;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.accumulate(&mut digits, &mut fits),
            None => return Err(self.error("EOF while parsing a value")),
            Some(_) => return Err(self.error("invalid number")),
        }
        let mut integer = true;
        let mut scale: i64 = 0;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            let first = self.pos;
            self.digits()?;
            self.pos = first;
            self.accumulate(&mut digits, &mut fits);
            scale = -i64::try_from(self.pos - first).unwrap_or(i64::MAX);
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.pos += 1;
            let minus = match self.peek() {
                Some(b'-') => {
                    self.pos += 1;
                    true
                }
                Some(b'+') => {
                    self.pos += 1;
                    false
                }
                _ => false,
            };
            let first = self.pos;
            self.digits()?;
            let mut exponent: i64 = 0;
            for &d in &self.bytes[first..self.pos] {
                exponent = exponent
                    .saturating_mul(10)
                    .saturating_add(i64::from(d - b'0'));
            }
            scale = scale.saturating_add(if minus { -exponent } else { exponent });
        }
        if integer && fits {
            if !negative {
                return Ok(Number::U(digits));
            }
            if digits != 0 && digits <= 1 << 63 {
                // -2^63 ..= -1: the negation of a magnitude up to 2^63 fits in i64.
                return Ok(Number::I(0_i64.wrapping_sub_unsigned(digits)));
            }
        }
        // Clinger's fast path, as `str::parse` takes it first: digits and a power of ten that
        // are both exact as f64 give the correctly rounded value in one multiplication or
        // division (IEEE 754 rounds each operation correctly).
        if fits && digits <= MAX_EXACT_DIGITS {
            if let Ok(k) = usize::try_from(scale.unsigned_abs()) {
                if let Some(&power) = EXACT_POWERS_OF_TEN.get(k) {
                    #[allow(clippy::cast_precision_loss)] // exact: digits ≤ 2^53
                    let m = digits as f64;
                    let v = if scale < 0 { m / power } else { m * power };
                    return Ok(Number::F(if negative { -v } else { v }));
                }
            }
        }
        let v: f64 = self.text[start..self.pos]
            .parse()
            .map_err(|_| self.error("invalid number"))?;
        if v.is_infinite() {
            return Err(self.error("number out of range"));
        }
        Ok(Number::F(v))
    }

    /// Decimal digits onto `digits` (`fits` false once it overflows 64 bits).
    fn accumulate(&mut self, digits: &mut u64, fits: &mut bool) {
        while let Some(d @ b'0'..=b'9') = self.peek() {
            match digits
                .checked_mul(10)
                .and_then(|m| m.checked_add(u64::from(d - b'0')))
            {
                Some(m) => *digits = m,
                None => *fits = false,
            }
            self.pos += 1;
        }
    }

    /// One or more decimal digits (after a `.` or an exponent).
    fn digits(&mut self) -> Result<(), Malformed> {
        match self.peek() {
            Some(b'0'..=b'9') => {}
            None => return Err(self.error("EOF while parsing a value")),
            Some(_) => return Err(self.error("invalid number")),
        }
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    /// The reference: the tree serde_json builds through a visitor (this module's parser before
    /// its own, 2026-12-01), whose acceptance every document here must match.
    struct Reference<'a>(Node<'a>);

    impl<'de> Deserialize<'de> for Reference<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer
                .deserialize_any(ReferenceVisitor)
                .map(Reference)
        }
    }

    struct ReferenceVisitor;

    impl<'de> Visitor<'de> for ReferenceVisitor {
        type Value = Node<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Node::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Node::Number(if v < 0 {
                Number::I(v)
            } else {
                Number::U(v.unsigned_abs())
            }))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Node::Number(Number::U(v)))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Node::Number(Number::F(v)))
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Node::Str(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Node::Str(Cow::Owned(v.to_owned())))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Node::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(Reference(item)) = seq.next_element()? {
                items.push(item);
            }
            Ok(Node::Array(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            while let Some(Reference(key)) = map.next_key()? {
                let Node::Str(key) = key else {
                    return Err(de::Error::custom("key must be a string"));
                };
                let Reference(value) = map.next_value()?;
                members.push((key, value));
            }
            Ok(Node::Object(members))
        }
    }

    fn reference(text: &str) -> Option<Node<'_>> {
        serde_json::from_str::<Reference<'_>>(text)
            .ok()
            .map(|r| r.0)
    }

    /// Same tree; numbers the same kind and value (a fraction within an ulp or two: serde_json
    /// without `float_roundtrip` may round its last bit the other way), strings the same text.
    fn same(a: &Node<'_>, b: &Node<'_>) -> bool {
        match (a, b) {
            (Node::Number(Number::F(x)), Node::Number(Number::F(y))) => {
                x == y || (x - y).abs() <= x.abs().max(y.abs()) * 4.0 * f64::EPSILON
            }
            (Node::Number(x), Node::Number(y)) => x == y,
            (Node::Str(x), Node::Str(y)) => x == y,
            (Node::Array(x), Node::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
            }
            (Node::Object(x), Node::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((kx, x), (ky, y))| kx == ky && same(x, y))
            }
            _ => a == b,
        }
    }

    /// A small deterministic generator (xorshift64*), so that a failure names its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    const NUMBERS: &[&str] = &[
        "0",
        "-0",
        "7",
        "-7",
        "12.345",
        "-0.5",
        "1e3",
        "1E-3",
        "2.5e+10",
        "-1.5E-7",
        "1764600000000",
        "1764410000123456789",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "0.1",
        "3.141592653589793",
        "1e308",
        "1e309",
        "-1e400",
        "1e-400",
        "5e-324",
        "0.000001",
        "100.0",
        "9007199254740993",
    ];
    const STRINGS: &[&str] = &[
        r#""""#,
        r#""s07-n042""#,
        r#""settlement""#,
        r#""mm""#,
        r#""\u00b0C""#,
        r#""°C 沉降""#,
        r#""a\"b""#,
        r#""a\\b""#,
        r#""\/\b\f\n\r\t""#,
        r#""\ud83d\ude00""#,
        r#""😀""#,
        r#""\ud83d""#,
        r#""\ude00""#,
        r#""\ud83dx""#,
        r#""\ud83d\u0041""#,
        r#""\x""#,
        r#""\u12""#,
        r#""\uZZZZ""#,
        r#""\u0000""#,
        "\"tab\there\"",
        r#""\u00e9t\u00e9""#,
    ];
    const LITERALS: &[&str] = &["true", "false", "null"];
    const SPACE: &[&str] = &["", "", "", " ", "\n", "\t", "\r\n  "];

    fn value(rng: &mut Rng, depth: usize, out: &mut String) {
        let kind = if depth > 4 {
            rng.below(3)
        } else {
            rng.below(5)
        };
        match kind {
            0 => out.push_str(rng.pick(NUMBERS)),
            1 => out.push_str(rng.pick(STRINGS)),
            2 => out.push_str(rng.pick(LITERALS)),
            3 => {
                out.push('[');
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(rng.pick(SPACE));
                    value(rng, depth + 1, out);
                    out.push_str(rng.pick(SPACE));
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..rng.below(6) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(rng.pick(SPACE));
                    out.push_str(rng.pick(&[
                        r#""ts""#,
                        r#""value""#,
                        r#""sensor""#,
                        r#""a""#,
                        r#""\u0061""#,
                        r#""""#,
                    ]));
                    out.push_str(rng.pick(SPACE));
                    out.push(':');
                    out.push_str(rng.pick(SPACE));
                    value(rng, depth + 1, out);
                }
                out.push('}');
            }
        }
    }

    /// What a mutation puts in: the bytes that move a JSON parser between its states.
    const MUTATIONS: &[&str] = &[
        "{", "}", "[", "]", ",", ":", "\"", "\\", "-", "+", ".", "e", "0", "1", "9", " ", "\n",
        "t", "n", "u", "\u{1}", "\u{1f}", "°", "x",
    ];

    #[test]
    fn parses_as_serde_json_does_generated_and_mutated_documents() {
        let mut rng = Rng(0x5EED_2026_1201);
        let (mut accepted, mut rejected) = (0, 0);
        for case in 0..40_000 {
            let mut doc = String::new();
            doc.push_str(rng.pick(SPACE));
            value(&mut rng, 0, &mut doc);
            doc.push_str(rng.pick(SPACE));
            // Half of them damaged: a byte replaced, inserted or removed, or the end cut off.
            if case % 2 == 1 && !doc.is_empty() {
                let mut at = rng.below(doc.len());
                while !doc.is_char_boundary(at) {
                    at -= 1;
                }
                match rng.below(4) {
                    0 => {
                        let end = doc[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                        doc.replace_range(at..end, rng.pick(MUTATIONS));
                    }
                    1 => doc.insert_str(at, rng.pick(MUTATIONS)),
                    2 => {
                        doc.remove(at);
                    }
                    _ => doc.truncate(at),
                }
            }
            let ours = parse(&doc);
            let theirs = reference(&doc);
            match (&ours, &theirs) {
                (Ok(a), Some(b)) => {
                    assert!(
                        same(a, b),
                        "case {case}: {doc:?}: {a:?} against serde_json's {b:?}"
                    );
                    accepted += 1;
                }
                (Err(_), None) => rejected += 1,
                _ => panic!("case {case}: {doc:?}: ours {ours:?}, serde_json {theirs:?}"),
            }
        }
        // Both halves exercised.
        assert!(
            accepted > 10_000 && rejected > 10_000,
            "{accepted} / {rejected}"
        );
    }

    #[test]
    fn fractions_are_the_nearest_f64_as_std_parses_them() {
        // Bit for bit against `str::parse` (correctly rounded), inside the fast path's range and
        // beyond it (more digits than 2^53, powers of ten past 10^22).
        let mut rng = Rng(0xF10A7);
        for case in 0..100_000 {
            let digits = rng.next() >> rng.below(64);
            let text = match rng.below(3) {
                0 => {
                    let s = digits.to_string();
                    let point = rng.below(s.len() + 1);
                    let whole = if point == 0 { "0" } else { &s[..point] };
                    format!("{whole}.{}0", &s[point..])
                }
                1 => format!("{digits}e{}", rng.below(60) as i64 - 30),
                _ => format!("-{digits}.{}E+{}", rng.below(1000), rng.below(25)),
            };
            let Node::Number(Number::F(ours)) = parse(&text).expect("a number") else {
                panic!("case {case}: {text} is not a fraction")
            };
            let std: f64 = text.parse().expect("std parses it");
            assert_eq!(ours.to_bits(), std.to_bits(), "case {case}: {text}");
        }
    }

    #[test]
    fn nesting_beyond_the_limit_is_an_error_not_a_stack_overflow() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(&deep(MAX_DEPTH)).is_ok());
        assert!(reference(&deep(MAX_DEPTH)).is_some());
        let err = parse(&deep(MAX_DEPTH + 1)).expect_err("too deep");
        assert!(
            err.to_string().starts_with("recursion limit exceeded"),
            "{err}"
        );
        assert!(reference(&deep(MAX_DEPTH + 1)).is_none());
        assert!(parse(&"[".repeat(100_000)).is_err());
    }

    #[test]
    fn errors_say_where() {
        let err = parse("{\n  \"a\": 1,\n  \"b\" 2\n}").expect_err("no colon");
        assert_eq!(err.to_string(), "expected `:` at line 3 column 7");
        assert_eq!(
            parse("").expect_err("empty").to_string(),
            "EOF while parsing a value at line 1 column 1"
        );
    }

    #[test]
    fn strings_without_escapes_borrow_and_with_escapes_own() {
        let doc = parse(r#"{"sensor":"t1","unit":"\u00b0C"}"#).expect("json");
        assert!(matches!(
            doc.get("sensor"),
            Some(Node::Str(Cow::Borrowed("t1")))
        ));
        assert_eq!(doc.get("unit").and_then(Node::as_str), Some("°C"));
        assert!(matches!(doc.get("unit"), Some(Node::Str(Cow::Owned(_)))));
    }

    #[test]
    fn integers_keep_their_exact_value() {
        // 1_764_410_000_123_456_789 ns is above 2^53 and would round as an f64.
        let doc = parse(r#"{"ts":1764410000123456789,"n":-5,"f":1.5}"#).expect("json");
        assert_eq!(
            doc.get("ts"),
            Some(&Node::Number(Number::U(1_764_410_000_123_456_789)))
        );
        assert_eq!(doc.get("n"), Some(&Node::Number(Number::I(-5))));
        assert_eq!(doc.get("f"), Some(&Node::Number(Number::F(1.5))));
    }

    #[test]
    fn paths_follow_object_keys_and_first_duplicate_wins() {
        let doc = parse(r#"{"a":{"b":{"c":3}},"d":1,"d":2}"#).expect("json");
        assert_eq!(doc.path("a.b.c").and_then(Node::as_measurement), Some(3.0));
        assert!(doc.path("a.x.c").is_none());
        assert!(doc.path("d.e").is_none());
        assert_eq!(doc.path("d").and_then(Node::as_measurement), Some(1.0));
    }

    #[test]
    fn measurements_accept_numbers_numeric_strings_and_booleans() {
        let doc = parse(r#"[12.5," 12.5 ","1e3",true,false,"abc","","NaN","inf",null,[]]"#)
            .expect("json");
        let Node::Array(items) = doc else {
            panic!("array")
        };
        let got: Vec<Option<f64>> = items.iter().map(Node::as_measurement).collect();
        assert_eq!(
            got,
            [
                Some(12.5),
                Some(12.5),
                Some(1000.0),
                Some(1.0),
                Some(0.0),
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert!(parse("{\"a\":").is_err());
        assert!(parse("{} trailing").is_err());
    }
}
