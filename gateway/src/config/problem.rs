//! The one config-problem type ([`Problem`]) and the collector every section validates into
//! ([`Problems`]), so that all problems of a file are reported at once.
//!
//! Owns only the shape and formatting of a problem (`file: path.in.file: message and fix`). It
//! sits at the bottom of the config code and imports nothing from the gateway, so source and
//! sink configs use it without depending on the loader ([`super::Config`]). It does not decide
//! what is a problem.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in. Empty: the config file being loaded (sections validated on
    /// their own do not know its name; the loader fills it in).
    pub file: PathBuf,
    /// The path inside the file (`devices[2].points[5].word_order`); empty for the whole file.
    pub at: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.file.as_os_str().is_empty() {
            write!(f, "{}: ", self.file.display())?;
        }
        if self.at.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.at, self.message)
        }
    }
}

/// The problems found so far in one file. A section pushes every problem it finds and goes on
/// checking the rest, so a technician fixes a file in one pass.
#[derive(Debug, Default)]
pub struct Problems {
    file: PathBuf,
    found: Vec<Problem>,
}

impl Problems {
    /// Problems of the file `file` (empty path: the file being loaded, named later).
    #[must_use]
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self {
            file: file.into(),
            found: Vec::new(),
        }
    }

    /// The file problems are recorded against.
    #[must_use]
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Record a problem at `at` in this file.
    pub fn push(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.found.push(Problem {
            file: self.file.clone(),
            at: at.into(),
            message: message.into(),
        });
    }

    /// Record a problem in another file (a device profile).
    pub fn push_in(&mut self, file: &Path, at: impl Into<String>, message: impl Into<String>) {
        self.found.push(Problem {
            file: file.to_path_buf(),
            at: at.into(),
            message: message.into(),
        });
    }

    /// Take over problems found by a section validated on its own; those without a file are
    /// in this one.
    pub fn extend(&mut self, problems: impl IntoIterator<Item = Problem>) {
        for mut p in problems {
            if p.file.as_os_str().is_empty() {
                p.file.clone_from(&self.file);
            }
            self.found.push(p);
        }
    }

    /// Check a name (site, device, ...): not blank, no line break (it becomes a tag).
    pub fn check_name(&mut self, at: &str, value: &str) {
        if value.trim().is_empty() {
            self.push(at, "must not be empty");
        } else if value.contains(['\n', '\r']) {
            self.push(at, "must not contain a line break");
        }
    }

    /// How many problems so far; compare before and after a section to see if it was clean.
    #[must_use]
    pub fn len(&self) -> usize {
        self.found.len()
    }

    /// True when nothing was found.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The problems, in the order found.
    #[must_use]
    pub fn into_vec(self) -> Vec<Problem> {
        self.found
    }

    /// `Ok(value)` when nothing was found, else every problem. `value` is `None` only when a
    /// problem was recorded; should it be `None` anyway, `at` is reported as invalid rather than
    /// panicking.
    ///
    /// # Errors
    /// The problems found.
    pub fn finish<T>(mut self, at: &str, value: Option<T>) -> Result<T, Vec<Problem>> {
        match value {
            Some(v) if self.found.is_empty() => Ok(v),
            Some(_) => Err(self.found),
            None => {
                if self.found.is_empty() {
                    self.push(at, "is not valid");
                }
                Err(self.found)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_file_and_path_and_sections_get_the_loaders_file() {
        let mut section = Problems::default();
        section.push("sinks[0].url", "not a URL");
        let section = section.finish::<()>("sinks[0]", Some(())).expect_err("one");
        assert_eq!(section[0].to_string(), "sinks[0].url: not a URL");

        let mut file = Problems::new("site.toml");
        file.push("", "cannot parse");
        file.extend(section);
        file.push_in(Path::new("profiles/p.toml"), "name", "mismatch");
        let shown: Vec<String> = file.into_vec().iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "site.toml: cannot parse",
                "site.toml: sinks[0].url: not a URL",
                "profiles/p.toml: name: mismatch"
            ]
        );
        let none = Problems::default()
            .finish::<u8>("x", None)
            .expect_err("none");
        assert_eq!(none[0].to_string(), "x: is not valid");
    }
}
