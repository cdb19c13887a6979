//! Secrets named in the config (tokens, passwords, robot URLs, signing secrets): the one type
//! that holds them ([`Secret`]) and the one reader with one rule set ([`read_secret`]).
//!
//! Owns the rules every secret follows, whichever component uses it:
//! - it comes from exactly one of `<x>_env` (an environment variable) or `<x>_file` (a file),
//!   never inline in the config;
//! - surrounding whitespace (a trailing newline from `echo`) is dropped;
//! - an empty secret is an error with the fix, never "no authentication";
//! - an unreadable file names its path and the fix;
//! - no message ever contains the secret, and [`Secret`] has a redacting `Debug` and no
//!   `Display`.
//!
//! It does not decide whether a secret is required, nor check what the receiver accepts (an
//! HTTP header, a URL): the component's config does that with the field name returned here.

use std::path::Path;

/// A secret. `Debug` prints `Secret(<redacted>)` and there is no `Display`, so it cannot reach a
/// log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret (tests and callers that already hold one).
    #[must_use]
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, only for the protocol field that needs it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How a variable is looked up in the environment (swapped in tests so they never touch the
/// process environment, which test threads share).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, std::env::VarError>;

/// The process environment, the [`EnvLookup`] used outside tests.
///
/// # Errors
/// The variable is unset or not UTF-8.
pub fn process_env(var: &str) -> Result<String, std::env::VarError> {
    std::env::var(var)
}

/// Read the secret `<prefix>` from the environment variable `env` or the file `file` (at most one
/// may be set). `None` when neither is set; whether that is allowed is the caller's decision.
/// `Ok` holds the config field it came from (`<prefix>_env` / `<prefix>_file`), for the caller's
/// own checks of the value. The error is `(field, message)`: the field at fault and the fix.
/// Messages never contain the secret.
///
/// # Errors
/// Both set, the variable unset or not UTF-8, the file unreadable, or the secret empty.
pub fn read_secret(
    prefix: &str,
    env: Option<&str>,
    file: Option<&Path>,
    lookup: EnvLookup<'_>,
) -> Result<Option<(String, Secret)>, (String, String)> {
    let env_field = format!("{prefix}_env");
    let file_field = format!("{prefix}_file");
    let (field, raw, fix) = match (env, file) {
        (Some(_), Some(_)) => {
            return Err((
                env_field,
                format!("set either {prefix}_env or {prefix}_file, not both"),
            ))
        }
        (None, None) => return Ok(None),
        (Some(var), None) => {
            let value = lookup(var).map_err(|e| {
                let m = match e {
                    std::env::VarError::NotPresent => format!(
                        "environment variable {var} is not set; export it or use {file_field}"
                    ),
                    std::env::VarError::NotUnicode(_) => {
                        format!("environment variable {var} is not valid UTF-8; set it to the secret as UTF-8 text")
                    }
                };
                (env_field.clone(), m)
            })?;
            let fix = format!(
                "environment variable {var} is empty; set it to the secret (or remove {env_field})"
            );
            (env_field, value, fix)
        }
        (None, Some(path)) => {
            let value = std::fs::read_to_string(path).map_err(|e| {
                (
                    file_field.clone(),
                    format!(
                        "cannot read {}: {e}; check the path and that the gateway's user may read it",
                        path.display()
                    ),
                )
            })?;
            let fix = format!(
                "{} is empty; write the secret into it (or remove {file_field})",
                path.display()
            );
            (file_field, value, fix)
        }
    };
    let value = raw.trim();
    if value.is_empty() {
        return Err((field, fix));
    }
    Ok(Some((field, Secret::new(value))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Result<String, std::env::VarError> {
        match k {
            "SET" => Ok(" s3cret \n".to_owned()),
            "BLANK" => Ok(" \n".to_owned()),
            _ => Err(std::env::VarError::NotPresent),
        }
    }

    #[test]
    fn secrets_come_from_env_or_file_and_never_print() {
        let (field, s) = read_secret("password", Some("SET"), None, &env)
            .expect("ok")
            .expect("some");
        assert_eq!(field, "password_env");
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(read_secret("password", None, None, &env), Ok(None));
        assert_eq!(
            read_secret("url", Some("NOPE"), None, &env),
            Err((
                "url_env".to_owned(),
                "environment variable NOPE is not set; export it or use url_file".to_owned()
            ))
        );
        let both = read_secret("url", Some("SET"), Some(Path::new("/x")), &env);
        assert_eq!(
            both,
            Err((
                "url_env".to_owned(),
                "set either url_env or url_file, not both".to_owned()
            ))
        );
    }

    #[test]
    fn files_are_trimmed_and_empty_or_unreadable_ones_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good");
        std::fs::write(&good, "  pa ss\r\n").expect("write");
        let (field, s) = read_secret("token", None, Some(&good), &env)
            .expect("ok")
            .expect("some");
        assert_eq!((field.as_str(), s.expose()), ("token_file", "pa ss"));

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let (field, msg) = read_secret("token", None, Some(&empty), &env).expect_err("empty");
        assert_eq!(field, "token_file");
        assert_eq!(
            msg,
            format!(
                "{} is empty; write the secret into it (or remove token_file)",
                empty.display()
            )
        );

        let missing = dir.path().join("missing");
        let (field, msg) = read_secret("token", None, Some(&missing), &env).expect_err("missing");
        assert_eq!(field, "token_file");
        assert!(
            msg.starts_with(&format!("cannot read {}:", missing.display())),
            "{msg}"
        );
        assert!(
            msg.ends_with("that the gateway's user may read it"),
            "{msg}"
        );

        let (field, msg) = read_secret("password", Some("BLANK"), None, &env).expect_err("blank");
        assert_eq!(field, "password_env");
        assert!(
            msg.starts_with("environment variable BLANK is empty"),
            "{msg}"
        );
    }
}
