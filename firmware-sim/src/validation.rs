//! The validation vocabulary: what a broken rule in a scenario or profile file is, and the
//! small field checks every layer's validation shares.
//!
//! Owns [`ScenarioError`] (the error a caller sees, naming the file and the path of the
//! offending entry), `Invalid` (a broken rule as the layers report it, before the file is
//! known), `parse_toml` (TOML into serde structs with the entry path on error) and the field
//! checks `check_range` and `check_part`. It is the bottom of the crate: it imports no other
//! module of it, so the physics, sensor, fault and profile layers can validate their own tables
//! without importing the scenario parser ([`crate::scenario`]) that calls them. It knows no
//! section of any file.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A broken rule: the path of the offending entry and what is wrong.
pub(crate) type Invalid = (String, String);

/// A scenario or profile file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file or directory cannot be read.
    #[error("{}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML syntax or shape error (unknown field, wrong type, missing field).
    #[error("{}: {path}: {message}{}", file.display(), line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Parse {
        /// The file.
        file: PathBuf,
        /// Path of the entry, e.g. `modbus_tcp[1].unit` (`.` for the top level).
        path: String,
        /// What is wrong.
        message: String,
        /// 1-based line, when known.
        line: Option<usize>,
    },
    /// A rule is broken.
    #[error("{}: {path}: {message}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Path of the entry.
        path: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Parses TOML into `T`, naming the entry path on error.
pub(crate) fn parse_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ScenarioError> {
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
    };
    let de = toml::Deserializer::parse(text).map_err(|e| ScenarioError::Parse {
        file: file.to_path_buf(),
        path: ".".into(),
        message: e.message().to_owned(),
        line: line_of(e.span()),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ScenarioError::Parse {
            file: file.to_path_buf(),
            path,
            message: inner.message().to_owned(),
            line: line_of(inner.span()),
        }
    })
}

/// Checks that `value` is finite and within `[lo, hi]`.
pub(crate) fn check_range(
    path: &str,
    value: f64,
    lo: f64,
    hi: f64,
    unit: &str,
) -> Result<f64, Invalid> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        Ok(value)
    } else {
        Err((
            path.to_owned(),
            format!("{value} is outside {lo}-{hi} {unit}"),
        ))
    }
}

/// Model and point names become parts of dotted channel names: letters, digits, '-' and '_'
/// for models; letters, digits and '_' for points (so `a.b.c` splits one way only).
pub(crate) fn check_part(path: &str, name: &str, allow_dash: bool) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || (allow_dash && c == '-'));
    if ok {
        Ok(())
    } else {
        let allowed = if allow_dash {
            "letters, digits, '-' or '_'"
        } else {
            "letters, digits or '_'"
        };
        Err((path.to_owned(), format!("{name:?}: use {allowed}")))
    }
}
