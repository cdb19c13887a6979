//! The `[console]` section: where the console listens and the access token it asks for.
//!
//! Owns the rule "anything but loopback needs a token": a listen address that other machines
//! can reach is refused at load unless `token_env` or `token_file` names an access token (read
//! through [`crate::secret`], the one place secrets are read). It does not serve anything; the
//! server is [`super::Console`].

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{Problem, Problems};
use crate::secret::{process_env, read_secret, EnvLookup, Secret};

/// Default listen address: this machine only, so a console without a token is never on the LAN.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// `[console]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `false` starts no HTTP server at all (default `true`).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Address and port, e.g. `"127.0.0.1:8080"` (default [`DEFAULT_LISTEN`]).
    #[serde(default)]
    pub listen: Option<String>,
    /// Environment variable holding the access token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding the access token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `[console.history]`: the local history behind the curves ([`crate::history`]).
    #[serde(default)]
    pub history: crate::history::HistoryConfig,
    /// `[console.report]`: the daily report ([`crate::report`]).
    #[serde(default)]
    pub report: crate::report::ReportConfig,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            token_env: None,
            token_file: None,
            history: crate::history::HistoryConfig::default(),
            report: crate::report::ReportConfig::default(),
        }
    }
}

fn enabled_by_default() -> bool {
    true
}

/// A validated console: where to listen and the token every request must carry, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// The address to bind.
    pub listen: SocketAddr,
    /// With a token, every request needs `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// The local history; `None`: none is kept.
    pub history: Option<crate::history::HistorySettings>,
    /// When the daily report is made; `None`: not by itself (needs the history).
    pub report: Option<crate::report::ReportSettings>,
}

impl ConsoleConfig {
    /// Validate against the process environment. `Ok(None)`: the console is turned off.
    ///
    /// # Errors
    /// Every problem found, each naming `at.<field>` and the fix.
    pub fn validate(&self, at: &str) -> Result<Option<ConsoleSettings>, Vec<Problem>> {
        self.validate_with_env(at, &process_env)
    }

    /// Validate with `lookup` for environment variables (tests).
    ///
    /// # Errors
    /// Every problem found, each naming `at.<field>` and the fix.
    pub fn validate_with_env(
        &self,
        at: &str,
        lookup: EnvLookup<'_>,
    ) -> Result<Option<ConsoleSettings>, Vec<Problem>> {
        let mut v = Problems::default();
        let text = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                v.push(
                    format!("{at}.listen"),
                    format!(
                        "\"{text}\" is not an address and port; write e.g. \"127.0.0.1:8080\" \
                         (this machine only) or \"0.0.0.0:8080\" (every interface, needs token_env or token_file)"
                    ),
                );
                None
            }
        };
        let token = match read_secret(
            "token",
            self.token_env.as_deref(),
            self.token_file.as_deref(),
            lookup,
        ) {
            Ok(found) => found,
            Err((field, message)) => {
                v.push(format!("{at}.{field}"), message);
                None
            }
        };
        if let Some((field, token)) = &token {
            // Sent as an HTTP header value: visible ASCII only, or no client could send it.
            if !token.expose().chars().all(|c| c.is_ascii_graphic()) {
                v.push(
                    format!("{at}.{field}"),
                    "the access token must be printable ASCII without spaces (it is sent in an \
                     HTTP header); generate one with e.g. `openssl rand -hex 32`",
                );
            }
        }
        let history = match self.history.validate(&format!("{at}.history")) {
            Ok(h) => h,
            Err(problems) => {
                for (field, message) in problems {
                    v.push(field, message);
                }
                None
            }
        };
        let report = match self.report.validate(&format!("{at}.report")) {
            Ok(r) => r,
            Err((field, message)) => {
                v.push(field, message);
                None
            }
        };
        if !self.enabled {
            return v.finish(at, Some(None));
        }
        if let (Some(addr), None) = (listen, &token) {
            if !addr.ip().is_loopback() {
                v.push(
                    format!("{at}.listen"),
                    format!(
                        "{addr} is reachable from other machines, so the console needs an access token: \
                         set {at}.token_env (an environment variable) or {at}.token_file (a file) to one \
                         (clients then send `Authorization: Bearer <token>`), or listen on 127.0.0.1"
                    ),
                );
            }
        }
        let settings = listen.map(|listen| {
            Some(ConsoleSettings {
                listen,
                token: token.map(|(_, t)| t),
                // The report is made from the history: without one there is nothing to report.
                report: report.filter(|_| history.is_some()),
                history,
            })
        });
        v.finish(at, settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Result<String, std::env::VarError> {
        match k {
            "CONSOLE_TOKEN" => Ok("s3cret-token\n".to_owned()),
            "SPACED" => Ok("two words".to_owned()),
            _ => Err(std::env::VarError::NotPresent),
        }
    }

    fn parse(text: &str) -> ConsoleConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn console_defaults_to_loopback_without_a_token_and_can_be_turned_off() {
        let s = ConsoleConfig::default()
            .validate_with_env("console", &env)
            .expect("valid")
            .expect("on");
        assert_eq!(s.listen, DEFAULT_LISTEN.parse().expect("addr"));
        assert_eq!(s.token, None);
        let off = parse("enabled = false\nlisten = \"0.0.0.0:80\"");
        assert_eq!(off.validate_with_env("console", &env), Ok(None));
    }

    #[test]
    fn console_non_loopback_listen_without_a_token_is_refused_with_the_fix() {
        let problems = parse("listen = \"0.0.0.0:8080\"")
            .validate_with_env("console", &env)
            .expect_err("refused");
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert!(
            shown[0].starts_with("console.listen: 0.0.0.0:8080 is reachable from other machines"),
            "{shown:?}"
        );
        assert!(shown[0].contains("set console.token_env"), "{shown:?}");

        let with = parse("listen = \"0.0.0.0:8080\"\ntoken_env = \"CONSOLE_TOKEN\"")
            .validate_with_env("console", &env)
            .expect("valid")
            .expect("on");
        assert_eq!(with.token, Some(Secret::new("s3cret-token")));
    }

    #[test]
    fn console_bad_listen_missing_or_unsendable_token_name_the_field() {
        let shown = |text: &str| -> Vec<String> {
            parse(text)
                .validate_with_env("console", &env)
                .expect_err("refused")
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let bad = shown("listen = \"localhost\"");
        assert!(
            bad[0].starts_with("console.listen: \"localhost\" is not an address and port"),
            "{bad:?}"
        );
        let missing = shown("token_env = \"NOPE\"");
        assert_eq!(
            missing,
            ["console.token_env: environment variable NOPE is not set; export it or use token_file"]
        );
        let spaced = shown("token_env = \"SPACED\"");
        assert!(
            spaced[0].starts_with("console.token_env: the access token must be printable ASCII"),
            "{spaced:?}"
        );
        assert!(toml::from_str::<ConsoleConfig>("port = 80").is_err());
    }
}

#[cfg(test)]
mod load_tests {
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn console_non_loopback_without_a_token_is_refused_at_config_load() {
        let text = "site = \"s\"\ngateway_id = \"g\"\n[console]\nlisten = \"0.0.0.0:8080\"\n";
        let e = Config::from_str_at(text, Path::new("site.toml")).expect_err("refused");
        let problems = e.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("site.toml: console.listen: 0.0.0.0:8080 is reachable"),
            "{problems:?}"
        );
        let ok = Config::from_str_at("site = \"s\"\ngateway_id = \"g\"\n", Path::new("site.toml"))
            .expect("valid");
        let console = ok.console.expect("on by default");
        assert_eq!(console.listen.to_string(), super::DEFAULT_LISTEN);
    }
}
