//! The serde `Deserializer` every config file is read with ([`super::parse_toml`]): toml's
//! parsed document (`toml::de::DeTable`, which keeps the byte span of every key and value)
//! handed to the config types' derived `Deserialize`, naming the key path
//! (`devices[2].points[5].word_order`) and the span of wherever an error arises.
//!
//! Owns walking the parsed document and locating errors. Does not own TOML syntax (toml parses,
//! and its syntax errors are returned as toml gives them) nor what any key means (the config
//! types and their validation).
//!
//! Why not toml's own deserializer wrapped in serde_path_to_error, which it replaced (issue 13,
//! binary size): serde code is instantiated once per config type *and* per deserializer layer,
//! and those two layers' instantiations were 477 KiB of the aarch64 `dist` binary's 4.7 MiB of
//! code (README §Building for the site boxes). Here the generic part of each method is a
//! dispatch to the visitor; number conversion and path and error bookkeeping are plain
//! functions, compiled once.
//!
//! The behaviour is toml 1.x's deserializer (`toml::de::ValueDeserializer`: integers as `i64`,
//! else `u64`; a missing `Option` key is `None`, a present one `Some`; an enum from a string or
//! from a table of one entry) and the paths are serde_path_to_error's (the innermost value,
//! map key or enum variant that failed; `[i]` for array elements). Differences, none of which a
//! config type meets: a TOML date-time is refused as "invalid type: date-time" (toml exposed it
//! as a private map); an integer beyond `u64` is an overflow (toml offered `i128`/`u128`); a
//! tuple variant is read from an array only (toml also took a table keyed `0`, `1`, ...).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};
use toml::de::{DeArray, DeFloat, DeInteger, DeString, DeTable, DeValue};
use toml::Spanned;

/// Deserialize `T` from a parsed document.
///
/// # Errors
/// The first error, with the key path and the span of the value or key it arose at.
pub(crate) fn from_document<T: DeserializeOwned>(root: Spanned<DeTable<'_>>) -> Result<T, Error> {
    let span = root.span();
    T::deserialize(ValueReader {
        value: DeValue::Table(root.into_inner()),
        span,
        path: &Path::Root,
    })
}

/// A deserialization error: the message and where in the file.
#[derive(Debug)]
pub(crate) struct Error {
    /// What is wrong (serde's or a config type's message).
    pub(crate) message: String,
    /// The key path (`sinks[0].url`), empty for the document itself; `None` until located.
    pub(crate) at: Option<String>,
    /// Byte range in the file of the value (or key) it arose at.
    pub(crate) span: Option<Range<usize>>,
}

impl Error {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            at: None,
            span: None,
        }
    }

    /// Name the innermost place only: an error keeps the path and span it was first given,
    /// as serde_path_to_error and toml did.
    fn locate(mut self, path: &Path<'_>, span: &Range<usize>) -> Self {
        if self.at.is_none() {
            self.at = Some(path.to_string());
        }
        if self.span.is_none() {
            self.span = Some(span.clone());
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(msg.to_string())
    }
}

/// Where a value is: the chain of keys and array indices from the document's root.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// A TOML number as serde is offered it.
enum Number {
    Signed(i64),
    Unsigned(u64),
    Float(f64),
}

/// A TOML integer: `i64` if it fits, else `u64` (as toml does; beyond both is an error).
fn integer(value: &DeInteger<'_>) -> Result<Number, Error> {
    let (digits, radix) = (value.as_str(), value.radix());
    if let Ok(n) = i64::from_str_radix(digits, radix) {
        Ok(Number::Signed(n))
    } else if let Ok(n) = u64::from_str_radix(digits, radix) {
        Ok(Number::Unsigned(n))
    } else {
        Err(Error::new("integer number overflowed"))
    }
}

/// A TOML float; a finite literal too large for `f64` is an error, `inf` and `nan` are not (as
/// toml's `DeFloat::to_f64`): the config types' validation refuses them where a number must be
/// finite, with the key's own message ("must be a finite number").
fn float(value: &DeFloat<'_>) -> Result<Number, Error> {
    match value.as_str().parse::<f64>() {
        Ok(f) if !f.is_infinite() || value.as_str().contains("inf") => Ok(Number::Float(f)),
        _ => Err(Error::new("floating-point number overflowed")),
    }
}

fn visit_number<'de, V: Visitor<'de>>(number: Number, visitor: V) -> Result<V::Value, Error> {
    match number {
        Number::Signed(n) => visitor.visit_i64(n),
        Number::Unsigned(n) => visitor.visit_u64(n),
        Number::Float(f) => visitor.visit_f64(f),
    }
}

/// toml's check of a struct variant's keys (`toml::de::ValueDeserializer`'s
/// `validate_struct_keys`): a key no field has, with the span of the first such key.
fn check_struct_keys(table: &DeTable<'_>, fields: &[&str]) -> Result<(), Error> {
    let extra: Vec<&Spanned<DeString<'_>>> = table
        .keys()
        .filter(|key| !fields.contains(&key.get_ref().as_ref()))
        .collect();
    let Some(first) = extra.first() else {
        return Ok(());
    };
    let names: Vec<&str> = extra.iter().map(|k| k.get_ref().as_ref()).collect();
    let mut error = Error::new(format!(
        "unexpected keys in table: {}, available keys: {}",
        names.join(", "),
        fields.join(", ")
    ));
    error.span = Some(first.span());
    Err(error)
}

/// One value of the document, at its path.
struct ValueReader<'a, 'de> {
    value: DeValue<'de>,
    span: Range<usize>,
    path: &'a Path<'a>,
}

impl<'de> de::Deserializer<'de> for ValueReader<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (path, span) = (self.path, self.span);
        match self.value {
            DeValue::String(Cow::Borrowed(s)) => visitor.visit_borrowed_str(s),
            DeValue::String(Cow::Owned(s)) => visitor.visit_string(s),
            DeValue::Integer(n) => integer(&n).and_then(|n| visit_number(n, visitor)),
            DeValue::Float(f) => float(&f).and_then(|f| visit_number(f, visitor)),
            DeValue::Boolean(b) => visitor.visit_bool(b),
            DeValue::Datetime(_) => Err(de::Error::invalid_type(
                Unexpected::Other("date-time"),
                &visitor,
            )),
            DeValue::Array(items) => visitor.visit_seq(SeqReader::new(items, path)),
            DeValue::Table(entries) => visitor.visit_map(MapReader::new(entries, path)),
        }
        .map_err(|e| e.locate(path, &span))
    }

    // A key that is there is `Some`; a missing one is `None` through serde's missing-field rule.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (path, span) = (self.path, self.span.clone());
        visitor.visit_some(self).map_err(|e| e.locate(path, &span))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let (path, span) = (self.path, self.span.clone());
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.locate(path, &span))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let (path, span) = (self.path, self.span);
        match self.value {
            DeValue::String(s) => visitor.visit_enum(s.into_deserializer()),
            DeValue::Table(entries) => match one_entry(entries) {
                Ok((key, value)) => visitor.visit_enum(EnumReader { key, value, path }),
                Err(e) => Err(e),
            },
            _ => Err(Error::new("wanted string or table")),
        }
        .map_err(|e| e.locate(path, &span))
    }

    // Structs, sequences and maps take one or two kinds of value; any other kind is refused
    // here with the message the visitor itself would give (serde's `invalid type`), without
    // instantiating every `visit_*` of every config type's visitor (issue 13, size).
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let (path, span) = (self.path, self.span);
        match self.value {
            DeValue::Table(entries) => visitor.visit_map(MapReader::new(entries, path)),
            DeValue::Array(items) => visitor.visit_seq(SeqReader::new(items, path)),
            other => Err(refused(&other, &visitor)),
        }
        .map_err(|e| e.locate(path, &span))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (path, span) = (self.path, self.span);
        match self.value {
            DeValue::Array(items) => visitor.visit_seq(SeqReader::new(items, path)),
            other => Err(refused(&other, &visitor)),
        }
        .map_err(|e| e.locate(path, &span))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (path, span) = (self.path, self.span);
        match self.value {
            DeValue::Table(entries) => visitor.visit_map(MapReader::new(entries, path)),
            other => Err(refused(&other, &visitor)),
        }
        .map_err(|e| e.locate(path, &span))
    }

    serde::forward_to_deserialize_any! {
        bool u8 u16 u32 u64 u128 i8 i16 i32 i64 i128 f32 f64 char str string
        bytes byte_buf unit ignored_any unit_struct tuple_struct tuple identifier
    }
}

/// The error a visitor's default `visit_*` gives for `value` (serde's `invalid type: ...,
/// expected ...`), or the number's own error when it does not fit.
fn refused(value: &DeValue<'_>, expected: &dyn de::Expected) -> Error {
    let number = match value {
        DeValue::String(s) => return de::Error::invalid_type(Unexpected::Str(s), expected),
        DeValue::Boolean(b) => return de::Error::invalid_type(Unexpected::Bool(*b), expected),
        DeValue::Datetime(_) => {
            return de::Error::invalid_type(Unexpected::Other("date-time"), expected)
        }
        DeValue::Array(_) => return de::Error::invalid_type(Unexpected::Seq, expected),
        DeValue::Table(_) => return de::Error::invalid_type(Unexpected::Map, expected),
        DeValue::Integer(n) => integer(n),
        DeValue::Float(f) => float(f),
    };
    let unexpected = match number {
        Ok(Number::Signed(n)) => Unexpected::Signed(n),
        Ok(Number::Unsigned(n)) => Unexpected::Unsigned(n),
        Ok(Number::Float(f)) => Unexpected::Float(f),
        Err(e) => return e,
    };
    de::Error::invalid_type(unexpected, expected)
}

/// The one entry of a table that names an enum variant (`{ variant = ... }`).
fn one_entry<'de>(
    entries: DeTable<'de>,
) -> Result<(Spanned<DeString<'de>>, Spanned<DeValue<'de>>), Error> {
    let count = entries.len();
    match entries.into_iter().next() {
        Some(entry) if count == 1 => Ok(entry),
        None => Err(Error::new("wanted exactly 1 element, found 0 elements")),
        Some(_) => Err(Error::new("wanted exactly 1 element, more than 1 element")),
    }
}

/// The entries of a table, each value at `path.key`.
struct MapReader<'a, 'de> {
    entries: toml::map::IntoIter<Spanned<DeString<'de>>, Spanned<DeValue<'de>>>,
    /// The entry whose key was read and whose value is next.
    pending: Option<(Spanned<DeString<'de>>, Spanned<DeValue<'de>>)>,
    path: &'a Path<'a>,
}

impl<'a, 'de> MapReader<'a, 'de> {
    fn new(entries: DeTable<'de>, path: &'a Path<'a>) -> Self {
        Self {
            entries: entries.into_iter(),
            pending: None,
            path,
        }
    }
}

impl<'de> de::MapAccess<'de> for MapReader<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let name: de::value::CowStrDeserializer<'de, Error> =
            key.get_ref().clone().into_deserializer();
        match seed.deserialize(name) {
            Ok(read) => {
                self.pending = Some((key, value));
                Ok(Some(read))
            }
            // An unknown key is named with its own path, as serde_path_to_error does.
            Err(e) => Err(e.locate(&Path::Key(self.path, key.get_ref()), &key.span())),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.pending.take() else {
            return Err(Error::new("a value was asked for before its key"));
        };
        let span = value.span();
        let path = Path::Key(self.path, key.get_ref());
        seed.deserialize(ValueReader {
            value: value.into_inner(),
            span: span.clone(),
            path: &path,
        })
        // Also what fails after the value was read, e.g. an internally tagged enum's variant
        // checked from serde's buffer: named at the value, as serde_path_to_error did.
        .map_err(|e| e.locate(&path, &span))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// The elements of an array, each at `path[i]`.
struct SeqReader<'a, 'de> {
    items: std::iter::Enumerate<std::vec::IntoIter<Spanned<DeValue<'de>>>>,
    path: &'a Path<'a>,
}

impl<'a, 'de> SeqReader<'a, 'de> {
    fn new(items: DeArray<'de>, path: &'a Path<'a>) -> Self {
        Self {
            items: items.into_iter().enumerate(),
            path,
        }
    }
}

impl<'de> de::SeqAccess<'de> for SeqReader<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((index, item)) = self.items.next() else {
            return Ok(None);
        };
        let span = item.span();
        let path = Path::Index(self.path, index);
        seed.deserialize(ValueReader {
            value: item.into_inner(),
            span: span.clone(),
            path: &path,
        })
        .map(Some)
        .map_err(|e| e.locate(&path, &span))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// An enum written as a table of one entry: the key names the variant, the value is its content.
struct EnumReader<'a, 'de> {
    key: Spanned<DeString<'de>>,
    value: Spanned<DeValue<'de>>,
    path: &'a Path<'a>,
}

impl<'a, 'de> de::EnumAccess<'de> for EnumReader<'a, 'de> {
    type Error = Error;
    type Variant = VariantReader<'a, 'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        // An unknown variant is named at the enum's own path (serde_path_to_error).
        let variant = seed
            .deserialize(self.key.get_ref().clone().into_deserializer())
            .map_err(|e: Error| e.locate(self.path, &self.key.span()))?;
        Ok((
            variant,
            VariantReader {
                name: self.key.into_inner(),
                value: self.value,
                parent: self.path,
            },
        ))
    }
}

/// A variant's content, at `parent.variant`.
struct VariantReader<'a, 'de> {
    name: DeString<'de>,
    value: Spanned<DeValue<'de>>,
    parent: &'a Path<'a>,
}

impl<'de> de::VariantAccess<'de> for VariantReader<'_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        let empty = match self.value.get_ref() {
            DeValue::Array(items) => items.is_empty(),
            DeValue::Table(entries) => entries.is_empty(),
            other => {
                let mut error = Error::new(format!("expected table, found {}", other.type_str()));
                error.span = Some(self.value.span());
                return Err(error);
            }
        };
        if empty {
            return Ok(());
        }
        let mut error = Error::new(if self.value.get_ref().is_array() {
            "expected empty array"
        } else {
            "expected empty table"
        });
        error.span = Some(self.value.span());
        Err(error)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        let span = self.value.span();
        let path = Path::Key(self.parent, &self.name);
        seed.deserialize(ValueReader {
            value: self.value.into_inner(),
            span: span.clone(),
            path: &path,
        })
        .map_err(|e| e.locate(&path, &span))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        let span = self.value.span();
        de::Deserializer::deserialize_seq(
            ValueReader {
                value: self.value.into_inner(),
                span,
                path: &Path::Key(self.parent, &self.name),
            },
            visitor,
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let span = self.value.span();
        let path = Path::Key(self.parent, &self.name);
        if let DeValue::Table(entries) = self.value.get_ref() {
            check_struct_keys(entries, fields).map_err(|e| e.locate(&path, &span))?;
        }
        de::Deserializer::deserialize_any(
            ValueReader {
                value: self.value.into_inner(),
                span,
                path: &path,
            },
            visitor,
        )
    }
}
