//! A JSON tree that borrows its strings from the payload: the parse step of the JSON and CIGEM
//! payload formats.
//!
//! Owns [`Node`] and [`parse`]. It does not know any payload layout ([`super::payload`],
//! [`super::cigem`] do). Why not `serde_json::Value`: `Value` allocates a `String` for every key
//! and string value and a B-tree per object; at 100k messages/s those allocations were the
//! largest cost of the MQTT path. Here a string without escapes is a slice of the payload, an
//! object is one `Vec` of pairs (objects in sensor payloads have a handful of keys, so a linear
//! search beats hashing), and integers keep their exact `i64`/`u64` value so that epoch
//! nanoseconds (above 2^53) do not lose precision.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

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

/// Parse a JSON document that borrows from `text`.
///
/// # Errors
/// The `serde_json` error (with line and column) when `text` is not one JSON value.
pub fn parse(text: &str) -> Result<Node<'_>, serde_json::Error> {
    serde_json::from_str(text)
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Members an object's list is first given room for (a sensor payload has five to eight).
const OBJECT_MEMBERS: usize = 8;

/// Builds a [`Node`], borrowing strings when the deserializer can lend them.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
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

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // JSON gives no size hint: room for a sensor payload's handful of keys at once, instead
        // of growing 0 → 4 → 8 (two allocations and a copy per message).
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(OBJECT_MEMBERS));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let value: Node<'de> = map.next_value()?;
            members.push((key.0, value));
        }
        Ok(Node::Object(members))
    }
}

/// An object key, borrowed when possible.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
