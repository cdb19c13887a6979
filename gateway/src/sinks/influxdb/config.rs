//! Configuration of the InfluxDB v2 sink: the raw TOML shape ([`InfluxSinkConfig`]) and its
//! validated form ([`ResolvedInflux`]) with the token read from the environment or a file.
//!
//! Owns the defaults, the URL checks and the check that the token fits an HTTP header. The token
//! is read by [`crate::secret`] (never inline, never printed). It does not talk to the server
//! (see [`super::sink`]).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::config::{Problem, Problems};
use crate::secret::{process_env, read_secret, EnvLookup, Secret};
use crate::tls::{ClientTls, TlsConfig};

/// Default sink name (the spool cursor is stored under it).
pub const DEFAULT_NAME: &str = "influxdb";
/// Default time for one whole write request (connect, send, answer). reqwest has no default
/// timeout at all (docs/ARCHITECTURE.md §Crate pitfalls), so without one a half-open connection would stall the sink.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on the TCP/TLS connect part of a request. A working uplink, even cellular,
/// connects in well under a second; longer means the route is down and backing off is better.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default lines per write. InfluxDB's write guide recommends batches of 5000 lines. The sink
/// holds up to [`MAX_IN_FLIGHT`](super::sink::MAX_IN_FLIGHT) batches at once (one on the wire
/// while the next is read and compressed), so about 2 × 5000 × 112 B ≈ 1.1 MB of lines.
pub const DEFAULT_BATCH_MAX_RECORDS: u32 = 5000;
/// Largest allowed `batch_max_records`: 100k lines of ~120 B is 12 MB before gzip, already above
/// what proxies in front of a store usually accept in one request; with two batches held by the
/// write pipeline that is up to 24 MB of the gateway's memory, so raise the batch size only for a
/// receiver far away, where fewer round trips matter more than memory.
pub const MAX_BATCH_MAX_RECORDS: u32 = 100_000;
/// Default time a partial batch waits for more data before it is sent.
pub const DEFAULT_BATCH_MAX_AGE: Duration = Duration::from_secs(1);
/// Largest allowed `batch_max_age`: supervision engineers watch live values.
pub const MAX_BATCH_MAX_AGE: Duration = Duration::from_secs(60);
pub use crate::sinks::{DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX};

/// `[[sinks]]` entry of type influx, as written in the TOML. Timestamp precision is fixed at
/// nanoseconds, the gateway's unit (docs/ARCHITECTURE.md §Conventions), so it is not configurable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxSinkConfig {
    /// Name of the sink; also its cursor name in the spool. Default `influxdb`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Server root, `http://host:8086` or `https://...`. It must not have a path: the write
    /// URL replaces the path with `/api/v2/write` (sink.rs `write_url`, as influxdb2 did:
    /// docs/ARCHITECTURE.md §Crate pitfalls), so a proxy prefix would be lost.
    pub url: String,
    /// The CA (and client certificate) of an `https` store ([`crate::tls`]); absent = the
    /// public roots built into the client.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Organization (InfluxDB requires it; VictoriaMetrics ignores it).
    pub org: String,
    /// Bucket (InfluxDB requires it; VictoriaMetrics ignores it).
    pub bucket: String,
    /// Name of the environment variable holding the API token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding the API token (surrounding whitespace is ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Whole-request timeout, e.g. `"10s"`. Default [`DEFAULT_TIMEOUT`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub timeout: Option<Duration>,
    /// Lines per write. Default [`DEFAULT_BATCH_MAX_RECORDS`].
    #[serde(default)]
    pub batch_max_records: Option<u32>,
    /// How long a partial batch waits for more. Default [`DEFAULT_BATCH_MAX_AGE`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub batch_max_age: Option<Duration>,
    /// Send bodies gzip-compressed (`Content-Encoding: gzip`). Default true.
    #[serde(default)]
    pub gzip: Option<bool>,
    /// First wait after a failed write. Default [`DEFAULT_RETRY_INITIAL`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub retry_initial: Option<Duration>,
    /// Longest wait between retries. Default [`DEFAULT_RETRY_MAX`].
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub retry_max: Option<Duration>,
}

fn default_name() -> String {
    DEFAULT_NAME.to_owned()
}

/// The validated sink configuration: every default applied, token resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedInflux {
    /// Sink name (spool cursor name, metric label, log field).
    pub name: String,
    /// Server root (scheme, host, port; no path, query, fragment or credentials).
    pub url: Url,
    /// Trust and identity for `https`, when configured.
    pub tls: Option<ClientTls>,
    /// Organization.
    pub org: String,
    /// Bucket.
    pub bucket: String,
    /// API token; `None` means no `Authorization` header (VictoriaMetrics ignores auth).
    pub token: Option<Secret>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connect timeout: `min(timeout, MAX_CONNECT_TIMEOUT)`.
    pub connect_timeout: Duration,
    /// Lines per write.
    pub batch_max_records: u32,
    /// How long a partial batch waits for more.
    pub batch_max_age: Duration,
    /// Gzip bodies.
    pub gzip: bool,
    /// First retry wait.
    pub retry_initial: Duration,
    /// Retry wait ceiling.
    pub retry_max: Duration,
}

impl ResolvedInflux {
    /// The token for the client; empty when none is configured (VictoriaMetrics ignores auth).
    #[must_use]
    pub fn token_or_empty(&self) -> &str {
        self.token.as_ref().map_or("", Secret::expose)
    }
}

impl InfluxSinkConfig {
    /// Apply defaults, read the token, and check every value. `path` is where this entry sits in
    /// the config, e.g. `sinks[0]`.
    ///
    /// # Errors
    /// Every problem found, e.g. `sinks[0].token_env: environment variable ANJU_INFLUX_TOKEN is
    /// not set; export it or use token_file`.
    pub fn validate(&self, path: &str) -> Result<ResolvedInflux, Vec<Problem>> {
        self.validate_with_env(path, &process_env)
    }

    fn validate_with_env(
        &self,
        path: &str,
        env: EnvLookup<'_>,
    ) -> Result<ResolvedInflux, Vec<Problem>> {
        let mut p = Problems::default();
        let at = |field: &str| format!("{path}.{field}");
        if self.name.trim().is_empty() {
            p.push(
                at("name"),
                "must not be empty; it names the sink's cursor in the spool",
            );
        }
        let url = check_url(&self.url).map_err(|m| p.push(at("url"), m)).ok();
        let tls = self.tls.as_ref().and_then(|t| {
            if url.as_ref().is_some_and(|u| u.scheme() != "https") {
                p.push(
                    at("tls"),
                    "a `tls` table needs an https:// url; change the url's scheme, or remove `tls`",
                );
            }
            if t.server_name.is_some() {
                // The store's certificate is checked against the URL's host. reqwest is given
                // the table's rustls configuration, whose verifier would check this name
                // instead, but no test covers that path yet, so it is refused rather than
                // silently half-supported.
                p.push(
                    at("tls.server_name"),
                    "not supported for InfluxDB: write the name the store's certificate carries as the url's host (add it to /etc/hosts if DNS does not know it)",
                );
            }
            t.validate(&at("tls"), &mut p)
        });
        for (field, value) in [("org", &self.org), ("bucket", &self.bucket)] {
            if value.trim().is_empty() {
                p.push(
                    at(field),
                    "must not be empty (InfluxDB requires it; for VictoriaMetrics any name will do)",
                );
            }
        }
        let token = self
            .resolve_token(env)
            .map_err(|(field, m)| p.push(at(&field), m))
            .ok();

        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            p.push(
                at("timeout"),
                format!(
                    "must be above 0; the default is {}",
                    fmt_dur(DEFAULT_TIMEOUT)
                ),
            );
        }
        let batch_max_records = self.batch_max_records.unwrap_or(DEFAULT_BATCH_MAX_RECORDS);
        if !(1..=MAX_BATCH_MAX_RECORDS).contains(&batch_max_records) {
            p.push(
                at("batch_max_records"),
                format!(
                    "{batch_max_records} is outside 1..={MAX_BATCH_MAX_RECORDS}; the default is \
                     {DEFAULT_BATCH_MAX_RECORDS}"
                ),
            );
        }
        let batch_max_age = self.batch_max_age.unwrap_or(DEFAULT_BATCH_MAX_AGE);
        if batch_max_age > MAX_BATCH_MAX_AGE {
            p.push(
                at("batch_max_age"),
                format!(
                    "{} is above the maximum {}",
                    fmt_dur(batch_max_age),
                    fmt_dur(MAX_BATCH_MAX_AGE)
                ),
            );
        }
        let retry = crate::sinks::retry_bounds(self.retry_initial, self.retry_max)
            .map_err(|(field, m)| p.push(at(field), m))
            .ok();
        let resolved = match (url, token, retry) {
            (Some(url), Some(token), Some((retry_initial, retry_max))) => Some(ResolvedInflux {
                name: self.name.clone(),
                url,
                tls,
                org: self.org.clone(),
                bucket: self.bucket.clone(),
                token,
                timeout,
                connect_timeout: timeout.min(MAX_CONNECT_TIMEOUT),
                batch_max_records,
                batch_max_age,
                gzip: self.gzip.unwrap_or(true),
                retry_initial,
                retry_max,
            }),
            _ => None,
        };
        p.finish(path, resolved)
    }

    /// The token, if any; the error is `(field, message)`.
    fn resolve_token(&self, env: EnvLookup<'_>) -> Result<Option<Secret>, (String, String)> {
        // No token at all: allowed, VictoriaMetrics ignores auth. InfluxDB will answer 401,
        // which the sink reports at ERROR without discarding data. An empty token file is an
        // error (see `crate::secret`), not "no auth".
        let Some((field, token)) = read_secret(
            "token",
            self.token_env.as_deref(),
            self.token_file.as_deref(),
            env,
        )?
        else {
            return Ok(None);
        };
        // The token goes into an HTTP header: only visible ASCII is allowed there (RFC 9110
        // §5.5). reqwest would otherwise fail every request at send time, looking like a
        // network error that is retried forever.
        if !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
            return Err((
                field,
                "the token contains spaces or non-ASCII characters, which cannot be sent in an \
                 HTTP header; check that the right secret is configured"
                    .into(),
            ));
        }
        Ok(Some(token))
    }
}

/// Check the server URL; messages never echo it whole, since it might hold credentials.
fn check_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim())
        .map_err(|e| format!("not a URL ({e}); write it as http://host:8086"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme `{}` is not supported; use http:// or https://",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err("has no host; write it as http://host:8086".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not contain credentials (they would appear in logs); put the token in \
                    token_env or token_file"
                .into(),
        );
    }
    if url.path() != "/" {
        return Err(format!(
            "path `{}` would be ignored: the InfluxDB client always writes to /api/v2/write at the \
             server root; give the server root, or serve the store on its own port",
            url.path()
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query (?...) or fragment (#...)".into());
    }
    Ok(url)
}

use crate::sinks::fmt_dur;

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "url = \"http://127.0.0.1:8428\"\norg = \"site\"\nbucket = \"anju\"\n";

    fn parse(extra: &str) -> InfluxSinkConfig {
        toml::from_str(&format!("{MINIMAL}{extra}")).expect("parse")
    }

    fn no_env(_: &str) -> Result<String, std::env::VarError> {
        Err(std::env::VarError::NotPresent)
    }

    #[test]
    fn defaults_apply() {
        let r = parse("")
            .validate_with_env("sinks[0]", &no_env)
            .expect("valid");
        assert_eq!(r.name, "influxdb");
        assert_eq!(r.url.as_str(), "http://127.0.0.1:8428/");
        assert_eq!(
            (r.timeout, r.connect_timeout),
            (Duration::from_secs(10), Duration::from_secs(5))
        );
        assert_eq!(
            (r.batch_max_records, r.batch_max_age),
            (5000, Duration::from_secs(1))
        );
        assert!(r.gzip);
        assert_eq!(
            (r.retry_initial, r.retry_max),
            (Duration::from_secs(1), Duration::from_secs(60))
        );
        assert!(r.token.is_none());
    }

    #[test]
    fn durations_are_humantime_strings() {
        let r = parse(
            "timeout = \"2s\"\nbatch_max_age = \"250ms\"\nretry_max = \"2m\"\ngzip = false\n",
        )
        .validate_with_env("sinks[0]", &no_env)
        .expect("valid");
        assert_eq!(r.timeout, Duration::from_secs(2));
        assert_eq!(r.connect_timeout, Duration::from_secs(2));
        assert_eq!(r.batch_max_age, Duration::from_millis(250));
        assert_eq!(r.retry_max, Duration::from_secs(120));
        assert!(!r.gzip);
        assert!(
            toml::from_str::<InfluxSinkConfig>(&format!("{MINIMAL}timeout = \"ten\"")).is_err()
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = toml::from_str::<InfluxSinkConfig>(&format!("{MINIMAL}token = \"inline\"\n"))
            .expect_err("unknown");
        assert!(err.to_string().contains("unknown field `token`"), "{err}");
    }

    #[test]
    fn a_missing_env_var_names_the_path_and_the_fix() {
        let err = parse("token_env = \"ANJU_INFLUX_TOKEN\"\n")
            .validate_with_env("sinks[0]", &no_env)
            .expect_err("unset")
            .remove(0);
        assert_eq!(
            err.to_string(),
            "sinks[0].token_env: environment variable ANJU_INFLUX_TOKEN is not set; export it or use token_file"
        );
    }

    #[test]
    fn the_token_comes_from_the_env_var_and_is_never_printed() {
        let env = |k: &str| {
            if k == "ANJU_INFLUX_TOKEN" {
                Ok("s3cret-token==\n".to_owned())
            } else {
                Err(std::env::VarError::NotPresent)
            }
        };
        let r = parse("token_env = \"ANJU_INFLUX_TOKEN\"\n")
            .validate_with_env("sinks[0]", &env)
            .expect("valid");
        assert_eq!(r.token.as_ref().map(Secret::expose), Some("s3cret-token=="));
        let shown = format!("{r:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("Secret(<redacted>)"), "{shown}");
    }

    #[test]
    fn the_token_comes_from_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "abc123\n").expect("write");
        let cfg = parse(&format!("token_file = {:?}\n", file.display().to_string()));
        assert_eq!(
            cfg.validate("sinks[1]")
                .expect("valid")
                .token
                .as_ref()
                .map(Secret::expose),
            Some("abc123")
        );

        let missing = parse("token_file = \"/nonexistent/anju/token\"\n");
        let err = missing
            .validate("sinks[1]")
            .expect_err("missing file")
            .remove(0);
        assert_eq!(err.at, "sinks[1].token_file");
        assert!(
            err.message
                .starts_with("cannot read /nonexistent/anju/token:"),
            "{err}"
        );
    }

    #[test]
    fn both_token_sources_or_a_bad_token_are_refused() {
        let both = parse("token_env = \"X\"\ntoken_file = \"/x\"\n");
        assert_eq!(
            both.validate_with_env("s", &no_env)
                .expect_err("both")
                .remove(0)
                .at,
            "s.token_env"
        );
        let env = |_: &str| Ok("two words".to_owned());
        let err = parse("token_env = \"X\"\n")
            .validate_with_env("s", &env)
            .expect_err("space")
            .remove(0);
        assert_eq!(err.at, "s.token_env");
        assert!(
            !err.message.contains("two words"),
            "the secret must not be echoed: {err}"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        let cases = [
            ("localhost:8086", "sinks[0].url: scheme `localhost` is not supported; use http:// or https://"),
            ("ftp://h:1", "sinks[0].url: scheme `ftp` is not supported; use http:// or https://"),
            ("not a url", "sinks[0].url: not a URL (relative URL without a base); write it as http://host:8086"),
        ];
        for (url, want) in cases {
            let cfg = InfluxSinkConfig {
                url: url.into(),
                ..parse("")
            };
            assert_eq!(
                cfg.validate_with_env("sinks[0]", &no_env)
                    .expect_err(url)
                    .remove(0)
                    .to_string(),
                want
            );
        }
        let with_path = InfluxSinkConfig {
            url: "http://proxy/influx/".into(),
            ..parse("")
        };
        let err = with_path
            .validate_with_env("sinks[0]", &no_env)
            .expect_err("path")
            .remove(0);
        assert!(
            err.message.starts_with("path `/influx/` would be ignored"),
            "{err}"
        );
        let creds = InfluxSinkConfig {
            url: "https://user:pw@h".into(),
            ..parse("")
        };
        let err = creds
            .validate_with_env("sinks[0]", &no_env)
            .expect_err("credentials")
            .remove(0);
        assert!(!err.to_string().contains("pw"), "{err}");
        let query = InfluxSinkConfig {
            url: "http://h/?db=x".into(),
            ..parse("")
        };
        assert!(query.validate_with_env("sinks[0]", &no_env).is_err());
        let https = InfluxSinkConfig {
            url: "https://influx.example:8086".into(),
            ..parse("")
        };
        assert!(https.validate_with_env("sinks[0]", &no_env).is_ok());
    }

    #[test]
    fn bounds_are_checked() {
        let bad = [
            ("batch_max_records = 0\n", "sinks[0].batch_max_records"),
            ("batch_max_records = 100001\n", "sinks[0].batch_max_records"),
            ("timeout = \"0s\"\n", "sinks[0].timeout"),
            ("batch_max_age = \"61s\"\n", "sinks[0].batch_max_age"),
            ("retry_initial = \"0s\"\n", "sinks[0].retry_initial"),
            (
                "retry_initial = \"5s\"\nretry_max = \"1s\"\n",
                "sinks[0].retry_max",
            ),
            ("name = \" \"\n", "sinks[0].name"),
        ];
        for (extra, path) in bad {
            assert_eq!(
                parse(extra)
                    .validate_with_env("sinks[0]", &no_env)
                    .expect_err(extra)
                    .remove(0)
                    .at,
                path
            );
        }
        let empty_org = InfluxSinkConfig {
            org: String::new(),
            ..parse("")
        };
        assert_eq!(
            empty_org
                .validate_with_env("sinks[0]", &no_env)
                .expect_err("org")
                .remove(0)
                .at,
            "sinks[0].org"
        );
    }

    #[test]
    fn every_problem_of_the_entry_is_reported_at_once() {
        let cfg = InfluxSinkConfig {
            url: "ftp://h".into(),
            bucket: " ".into(),
            ..parse("timeout = \"0s\"\nbatch_max_records = 0\ntoken_env = \"NOPE\"\n")
        };
        let at: Vec<String> = cfg
            .validate_with_env("sinks[0]", &no_env)
            .expect_err("invalid")
            .into_iter()
            .map(|p| p.at)
            .collect();
        assert_eq!(
            at,
            [
                "sinks[0].url",
                "sinks[0].bucket",
                "sinks[0].token_env",
                "sinks[0].timeout",
                "sinks[0].batch_max_records"
            ]
        );
    }
}
