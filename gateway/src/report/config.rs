//! `[console.report]`: whether and when the daily report is made. Owns the default time and
//! its parsing; the report itself is [`super::render`].

use serde::Deserialize;

/// Default time of the daily report, local time (UTC+8): the day before is complete, and the
/// report is ready for the site's morning meeting.
pub const DEFAULT_AT: &str = "07:30";

/// `[console.report]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// `false` makes no report by itself (`gateway report` still can). Default `true`.
    #[serde(default = "on")]
    pub enabled: bool,
    /// `HH:MM`, local time (UTC+8), when the report of the day before is made (default
    /// [`DEFAULT_AT`]).
    #[serde(default)]
    pub at: Option<String>,
    /// `false` sends no summary of the report to the alert sinks (WeCom, DingTalk, MQTT, ...).
    /// Default `true`.
    #[serde(default = "on")]
    pub notify: bool,
}

const fn on() -> bool {
    true
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            at: None,
            notify: true,
        }
    }
}

/// A validated report config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportSettings {
    /// Seconds after local midnight.
    pub at_secs: u32,
    /// A summary of each report made by the schedule goes to the alert sinks as a notice.
    pub notify: bool,
}

impl ReportConfig {
    /// Check the values; `at` is where this table sits (`console.report`). `Ok(None)`: off.
    ///
    /// # Errors
    /// `(field path, message with the fix)`.
    pub fn validate(&self, path: &str) -> Result<Option<ReportSettings>, (String, String)> {
        let text = self.at.as_deref().unwrap_or(DEFAULT_AT);
        let parsed = text.split_once(':').and_then(|(h, m)| {
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && text.len() == 5).then_some(h * 3600 + m * 60)
        });
        let Some(at_secs) = parsed else {
            return Err((
                format!("{path}.at"),
                format!("\"{text}\" is not a time of day; write HH:MM in local time (UTC+8), e.g. \"{DEFAULT_AT}\""),
            ));
        };
        Ok(self.enabled.then_some(ReportSettings {
            at_secs,
            notify: self.notify,
        }))
    }
}
