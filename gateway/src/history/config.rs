//! `[console.history]`: how long the local history keeps readings and how large its file may
//! grow. Owns the defaults and their bounds; the history itself is [`super::History`].

use std::time::Duration;

use serde::Deserialize;

/// Default window: a week of curves (the console's longest span, 7 d).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// Default bound of the history file, in bytes on disk. Measured (README §Local history,
/// `history_flash_cost`): 111,616 B per channel for a full week in the three tiers (a reading
/// every 10 s), so a site of 200 channels takes about 22 MB and 64 MiB holds about 600.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Smallest `max_bytes` allowed: below this a busy site's 2 h of 10 s buckets do not fit.
pub const MIN_MAX_BYTES: u64 = 1024 * 1024;

/// Shortest window allowed: the console's shortest curve (1 h).
pub const MIN_WINDOW: Duration = Duration::from_secs(3600);

/// Longest window allowed: bucket indexes and the 30 min tier are sized for a year at most.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// `[console.history]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// `false` keeps no history (the pages then draw no curves). Default `true`.
    #[serde(default = "on")]
    pub enabled: bool,
    /// How long readings are kept, e.g. `"7d"` (default [`DEFAULT_WINDOW`]).
    #[serde(default, deserialize_with = "crate::config::duration_opt::deserialize")]
    pub window: Option<Duration>,
    /// Bound of the file in bytes (default [`DEFAULT_MAX_BYTES`]); past it the oldest buckets go
    /// first.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

const fn on() -> bool {
    true
}

const fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: None,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// A validated history config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// How long readings are kept.
    pub window: Duration,
    /// Bound of the file in bytes.
    pub max_bytes: u64,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl HistoryConfig {
    /// Check the values; `at` is where this table sits (`console.history`). `Ok(None)`: off.
    ///
    /// # Errors
    /// `(field path, message with the fix)` for each problem.
    pub fn validate(&self, at: &str) -> Result<Option<HistorySettings>, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let window = self.window.unwrap_or(DEFAULT_WINDOW);
        if window < MIN_WINDOW || window > MAX_WINDOW {
            problems.push((
                format!("{at}.window"),
                format!(
                    "{} is outside 1h..366d; the default is \"7d\" (or enabled = false for no history)",
                    humantime::format_duration(window)
                ),
            ));
        }
        if self.max_bytes < MIN_MAX_BYTES {
            problems.push((
                format!("{at}.max_bytes"),
                format!(
                    "{} is below the minimum {MIN_MAX_BYTES} (1 MiB); the default is {DEFAULT_MAX_BYTES} (64 MiB)",
                    self.max_bytes
                ),
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(self.enabled.then_some(HistorySettings {
            window,
            max_bytes: self.max_bytes,
        }))
    }
}
