//! The `[alerts]` section as written (serde, `deny_unknown_fields`) and its validation into a
//! typed [`RuleSet`]. Every problem names its path (`alerts.rules[3].upper.red`) and the fix, and
//! all problems are reported at once.
//!
//! Owns the raw structs ([`AlertsConfig`], [`RuleConfig`], [`CheckConfig`] and their parts), the
//! defaults (named constants below, each with its source), and the typed rules the evaluator
//! uses. Does not own matching rules to channels ([`super::plan`]) or evaluation
//! ([`super::evaluator`]).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::condition::{Confirm, Thresholds};
use super::selector::{Selector, SelectorConfig};
use crate::alert::{Cause, Language, Level, Side};
use crate::config::duration_opt;
use crate::engine::derived::config::{DerivedConfig, DerivedKind, DerivedPairConfig, DerivedSpec};
use crate::engine::derived::DERIVED_TAG;

/// Consecutive readings that must breach a level before it is raised or escalated, when a rule
/// has no `confirm`. docs/DOMAIN.md §Data quality suggests escalating after 3 of 4 recent samples;
/// 3 in a row is the simpler, slightly stricter form.
pub const DEFAULT_CONFIRM_COUNT: u32 = 3;
/// Default deadband, as a fraction of each level's threshold: a level is left once the value is
/// back below 90 % of its threshold (docs/DOMAIN.md §Data quality).
pub const DEFAULT_DEADBAND_FRACTION: f64 = 0.1;
/// Default unit of time of a rate: per day (mm/d, °C/d as the standards write them).
pub const DEFAULT_RATE_PER: Duration = Duration::from_secs(24 * 3600);
/// Default least number of readings in a rate window before its slope is used.
pub const DEFAULT_RATE_MIN_POINTS: u32 = 3;
/// Shortest rate window accepted: a slope over less than a minute is noise (docs/DOMAIN.md §Data quality).
pub const MIN_RATE_WINDOW: Duration = Duration::from_secs(60);
/// Longest time between the two readings of a difference or tilt pair for them to be compared,
/// when the rule has no `max_skew`.
pub const DEFAULT_PAIR_MAX_SKEW: Duration = Duration::from_secs(10 * 60);
/// Level of device-fault and stale alerts when the check or rule sets none.
pub const DEFAULT_FAULT_LEVEL: Level = Level::Yellow;
/// Consecutive bad-quality readings before a device-fault alert, when the `bad_quality` check
/// sets no `count` (the check runs only where configured: `bad_quality = {}` for the defaults).
pub const DEFAULT_BAD_QUALITY_COUNT: u32 = 3;
/// Consecutive out-of-range readings before a device-fault alert, when the check sets none.
pub const DEFAULT_RANGE_COUNT: u32 = 3;
/// Consecutive good readings that clear a bad-quality, out-of-range or spike fault.
pub const DEFAULT_FAULT_CLEAR_COUNT: u32 = 3;
/// How soon a jump must come back to count as a spike, when the check sets no `within`. A held
/// jump is accepted as a real step after this long without a verdict.
pub const DEFAULT_SPIKE_WITHIN: Duration = Duration::from_secs(10 * 60);
/// Largest level fraction accepted (`red = 1.5` means 150 % of `alarm`).
pub const MAX_LEVEL_FRACTION: f64 = 10.0;
/// Check names used as the `rule` of device-fault alerts; rules may not use them.
pub const BAD_QUALITY_CHECK: &str = "bad-quality";
/// See [`BAD_QUALITY_CHECK`].
pub const STUCK_CHECK: &str = "stuck";
/// See [`BAD_QUALITY_CHECK`].
pub const SPIKE_CHECK: &str = "spike";
/// See [`BAD_QUALITY_CHECK`].
pub const RANGE_CHECK: &str = "out-of-range";

// ----------------------------------------------------------------------------------------------
// As written
// ----------------------------------------------------------------------------------------------

/// `[alerts]`: message language, rules and sensor checks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Language of alert messages, `"zh"` (default) or `"en"`.
    #[serde(default)]
    pub language: Language,
    /// Quality rules and stale rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Sensor checks (bad quality, physical range, stuck value, spike), by selector.
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
}

/// The kind of a rule. Closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// The channel's value.
    Absolute,
    /// The channel's value minus its baseline (`baseline`, or its first good reading).
    Change,
    /// The least-squares slope over `window`, per `per`.
    Rate,
    /// `a − b` for each pair (`abs = true` for |a − b|).
    Difference,
    /// `|a − b| / distance` for each pair (`abs = false` keeps the sign).
    Tilt,
    /// No reading for `after`: a device-fault alert per channel or per device.
    Stale,
}

impl RuleKind {
    /// The name as written in the config.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Absolute => "absolute",
            Self::Change => "change",
            Self::Rate => "rate",
            Self::Difference => "difference",
            Self::Tilt => "tilt",
            Self::Stale => "stale",
        }
    }
    const fn is_pair(self) -> bool {
        matches!(self, Self::Difference | Self::Tilt)
    }
}

/// Whether a stale rule watches each channel or each device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleScope {
    /// One alert per silent channel.
    #[default]
    Channel,
    /// One alert per device none of whose channels reported.
    Device,
}

/// The unit of a tilt pair's channel values, to divide by a distance in metres.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthUnit {
    /// Millimetres (settlement cells; the default).
    #[default]
    Mm,
    /// Centimetres.
    Cm,
    /// Metres.
    M,
}

impl LengthUnit {
    /// Channel units per metre.
    #[must_use]
    pub const fn per_metre(self) -> f64 {
        match self {
            Self::Mm => 1000.0,
            Self::Cm => 100.0,
            Self::M => 1.0,
        }
    }
}

/// One `[[alerts.rules]]` entry. Which fields apply depends on `kind`; a field that does not
/// apply is reported, not ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name, shown in messages and part of the alert id.
    pub name: String,
    /// What the rule measures.
    pub kind: RuleKind,
    /// Own wording of the measured quantity in messages (e.g. `"里表温差"`).
    #[serde(default)]
    pub label: Option<String>,
    /// Which channels (absolute, change, rate, stale).
    #[serde(default)]
    pub select: Option<SelectorConfig>,
    /// Channel pairs (difference, tilt).
    #[serde(default)]
    pub pairs: Vec<PairConfig>,
    /// Upper band: alarm when the value is at or above a level.
    #[serde(default)]
    pub upper: Option<BandConfig>,
    /// Lower band: alarm when the value is at or below a level.
    #[serde(default)]
    pub lower: Option<BandConfig>,
    /// Confirmation before raising or escalating (default 3 readings).
    #[serde(default)]
    pub confirm: Option<ConfirmConfig>,
    /// Deadband and confirmation before de-escalating or clearing.
    #[serde(default)]
    pub clear: Option<ClearConfig>,
    /// Per-channel thresholds (absolute, change, rate).
    #[serde(default)]
    pub overrides: Vec<OverrideConfig>,
    /// Change rules: the reference value (default: each channel's first good reading).
    #[serde(default)]
    pub baseline: Option<f64>,
    /// Rate rules: the window the slope is fitted over, e.g. `"1d"`.
    #[serde(default, with = "duration_opt")]
    pub window: Option<Duration>,
    /// Rate rules: the time unit of the rate (default `"1d"`: mm/d).
    #[serde(default, with = "duration_opt")]
    pub per: Option<Duration>,
    /// Rate rules: least readings in the window (default 3).
    #[serde(default)]
    pub min_points: Option<u32>,
    /// Rate rules: least time from the oldest to the newest reading (default half the window).
    #[serde(default, with = "duration_opt")]
    pub min_span: Option<Duration>,
    /// Difference and tilt: compare |a − b| (default false for difference, true for tilt).
    #[serde(default)]
    pub abs: Option<bool>,
    /// Difference and tilt: longest time between the readings compared (default 10m).
    #[serde(default, with = "duration_opt")]
    pub max_skew: Option<Duration>,
    /// Tilt: unit of the channel values (`mm` default, `cm`, `m`); distances are in metres.
    #[serde(default)]
    pub unit: Option<LengthUnit>,
    /// Stale: silence that raises the alert, e.g. `"30m"`.
    #[serde(default, with = "duration_opt")]
    pub after: Option<Duration>,
    /// Stale: `channel` (default) or `device`.
    #[serde(default)]
    pub scope: Option<StaleScope>,
    /// Stale: the alert level (default yellow).
    #[serde(default)]
    pub level: Option<Level>,
}

/// `upper = { alarm = 30.0, yellow = 0.7, orange = 0.85, red = 1.0 }` or
/// `upper = { yellow = 21.0, red = 30.0 }`. With `alarm`, the levels are fractions of it (and
/// with `alarm` alone, red = alarm); without, they are values.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandConfig {
    /// The alarm value the level fractions refer to.
    #[serde(default)]
    pub alarm: Option<f64>,
    /// 注意.
    #[serde(default)]
    pub blue: Option<f64>,
    /// 警示.
    #[serde(default)]
    pub yellow: Option<f64>,
    /// 警戒.
    #[serde(default)]
    pub orange: Option<f64>,
    /// 警报.
    #[serde(default)]
    pub red: Option<f64>,
}

impl BandConfig {
    fn levels(&self) -> [Option<f64>; 4] {
        [self.blue, self.yellow, self.orange, self.red]
    }
}

/// `confirm = { count = 3 }`, `{ for = "2d" }` or both (both must hold). A table without `count`
/// means count 1.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmConfig {
    /// Consecutive readings.
    #[serde(default)]
    pub count: Option<u32>,
    /// Time from the first to the latest of them.
    #[serde(default, rename = "for", with = "duration_opt")]
    pub duration: Option<Duration>,
}

/// `clear = { deadband = 0.1 }` (fraction of each level's threshold) or `{ deadband_abs = 2.0 }`
/// (in the rule's unit), with an optional `count` / `for` (default: the rule's `confirm`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearConfig {
    /// Fraction of the level's threshold, 0 ≤ f < 1 (default 0.1).
    #[serde(default)]
    pub deadband: Option<f64>,
    /// Absolute deadband, in the rule's unit.
    #[serde(default)]
    pub deadband_abs: Option<f64>,
    /// Consecutive readings below the clearing threshold.
    #[serde(default)]
    pub count: Option<u32>,
    /// Time from the first to the latest of them.
    #[serde(default, rename = "for", with = "duration_opt")]
    pub duration: Option<Duration>,
}

/// `[[alerts.rules.overrides]]`: other thresholds (or none) for the channels matching `channel`.
/// The first override that matches a channel applies. A band with only `alarm` keeps the rule's
/// level fractions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideConfig {
    /// Glob on the channel key, e.g. `"lev-a1/ch3"`.
    pub channel: String,
    /// Replaces the rule's upper band.
    #[serde(default)]
    pub upper: Option<BandConfig>,
    /// Replaces the rule's lower band.
    #[serde(default)]
    pub lower: Option<BandConfig>,
    /// Change rules: this channel's baseline.
    #[serde(default)]
    pub baseline: Option<f64>,
    /// `false` exempts the channel from the rule.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// One pair of a difference or tilt rule: the value is `a − b` (divided by `distance_m`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairConfig {
    /// Channel key `device/point` (core thermistor; one settlement point).
    pub a: String,
    /// Channel key (surface thermistor; the neighbouring settlement point).
    pub b: String,
    /// Tilt: distance between the two points in metres.
    #[serde(default)]
    pub distance_m: Option<f64>,
}

/// One `[[alerts.checks]]` entry: sensor checks for the channels matching `select`. For each
/// check type, the first entry that matches a channel and sets it applies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Which channels.
    pub select: SelectorConfig,
    /// Level of the device-fault alerts (default yellow).
    #[serde(default)]
    pub level: Option<Level>,
    /// Readings whose quality is not good: a device-fault alert after 3 in a row, cleared by 3
    /// good ones (`bad_quality = {}`). Runs only on the channels of entries that set it.
    #[serde(default)]
    pub bad_quality: Option<FaultConfirmConfig>,
    /// Physical range: readings outside it are not used by rules.
    #[serde(default)]
    pub range: Option<RangeConfig>,
    /// The same value (within `tolerance`) for `count` readings and/or `for`.
    #[serde(default)]
    pub stuck: Option<StuckConfig>,
    /// A jump beyond `jump` that comes back within `within`.
    #[serde(default)]
    pub spike: Option<SpikeConfig>,
}

/// `bad_quality = { count = 3, for = "1m", clear_count = 3 }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfirmConfig {
    /// Consecutive bad readings (default 3).
    #[serde(default)]
    pub count: Option<u32>,
    /// Time from the first to the latest of them.
    #[serde(default, rename = "for", with = "duration_opt")]
    pub duration: Option<Duration>,
    /// Consecutive good readings that clear the alert (default 3).
    #[serde(default)]
    pub clear_count: Option<u32>,
}

/// `range = { min = -40.0, max = 85.0 }` (either bound may be left out).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeConfig {
    /// Lowest physically possible value.
    #[serde(default)]
    pub min: Option<f64>,
    /// Highest physically possible value.
    #[serde(default)]
    pub max: Option<f64>,
    /// Consecutive out-of-range readings before the alert (default 3).
    #[serde(default)]
    pub count: Option<u32>,
    /// Time from the first to the latest of them.
    #[serde(default, rename = "for", with = "duration_opt")]
    pub duration: Option<Duration>,
    /// Consecutive in-range readings that clear it (default 3).
    #[serde(default)]
    pub clear_count: Option<u32>,
}

/// `stuck = { count = 36, for = "6h", tolerance = 0.0 }` (count and/or for).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StuckConfig {
    /// Identical readings in a row (at least 2).
    #[serde(default)]
    pub count: Option<u32>,
    /// Time the value has not moved.
    #[serde(default, rename = "for", with = "duration_opt")]
    pub duration: Option<Duration>,
    /// Largest difference still counted as identical (default 0).
    #[serde(default)]
    pub tolerance: Option<f64>,
}

/// `spike = { jump = 5.0, within = "1m" }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpikeConfig {
    /// Largest plausible change between two readings.
    pub jump: f64,
    /// How soon the value must come back (default 10m).
    #[serde(default, with = "duration_opt")]
    pub within: Option<Duration>,
}

// ----------------------------------------------------------------------------------------------
// Validated
// ----------------------------------------------------------------------------------------------

/// A problem in the rule configuration: where (`alerts.rules[3].upper.red`) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct RuleProblem {
    /// The path inside the config file.
    pub at: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Deadband below a level's threshold before the level is left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Deadband {
    /// A fraction of the threshold's magnitude.
    Fraction(f64),
    /// An absolute amount in the rule's unit.
    Absolute(f64),
}

/// A validated band: thresholds per level in the value's own sign.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Band {
    pub side: Side,
    /// Level fractions as written, when the band was given as fractions of `alarm`.
    pub fractions: Option<[Option<f64>; 4]>,
    pub thresholds: [Option<f64>; 4],
}

impl Band {
    /// Oriented thresholds for the condition state machine ([`Thresholds`]).
    pub fn oriented(&self, deadband: Deadband) -> Thresholds {
        let sign = match self.side {
            Side::Upper => 1.0,
            Side::Lower => -1.0,
        };
        let mut at = [None; 4];
        let mut clear = [0.0; 4];
        for k in 0..4 {
            if let Some(t) = self.thresholds[k] {
                let db = match deadband {
                    Deadband::Fraction(f) => f * t.abs(),
                    Deadband::Absolute(a) => a,
                };
                at[k] = Some(sign * t);
                clear[k] = sign * t - db;
            }
        }
        Thresholds { at, clear }
    }
}

/// The value a channel rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    /// The value.
    Absolute,
    /// The value minus the baseline.
    Change,
    /// |value| (a difference or tilt rule with `abs`).
    Magnitude,
}

/// Where the values a channel rule judges come from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Origin {
    /// The channels its selector matches (absolute, change).
    Channels,
    /// The rule's own derived rate channel of each channel `input` matches (a `rate` rule:
    /// [`RuleSet::derived`] computes it, the rule judges it like any channel).
    Rate {
        /// The rule's `select`: the channels whose rate is judged.
        input: Selector,
    },
    /// The rule's own derived channel of each pair (a `difference` or `tilt` rule).
    Pairs {
        /// The pairs as configured.
        pairs: Vec<Pair>,
        /// Key of each pair's derived channel → its index in `pairs`.
        by_output: HashMap<String, usize>,
    },
}

/// A validated override.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Override {
    pub pattern: String,
    pub upper: Option<Band>,
    pub lower: Option<Band>,
    pub baseline: Option<f64>,
    pub enabled: bool,
}

/// An absolute, change or rate rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChannelRule {
    /// Where it is in the config file (`alerts.rules[3]`), for `gateway check`.
    pub at: String,
    pub name: String,
    pub label: Option<String>,
    pub cause: Cause,
    /// The channels it judges: for a rate, difference or tilt rule, its own derived channels
    /// (tag `derived = <name>`).
    pub selector: Selector,
    pub measure: Measure,
    pub origin: Origin,
    pub upper: Option<Band>,
    pub lower: Option<Band>,
    pub baseline: Option<f64>,
    pub overrides: Vec<Override>,
    pub confirm: Confirm,
    pub clear: Confirm,
    pub deadband: Deadband,
}

/// One pair of a difference or tilt rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pair {
    pub a: String,
    pub b: String,
}

/// A stale rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StaleRule {
    /// Where it is in the config file (`alerts.rules[3]`), for `gateway check`.
    pub at: String,
    pub name: String,
    pub selector: Selector,
    pub after_ns: i64,
    pub scope: StaleScope,
    pub level: Level,
}

/// Raise/clear settings of a device-fault check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FaultSpec {
    pub raise: Confirm,
    pub clear_count: u32,
}

/// A validated range check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RangeSpec {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub fault: FaultSpec,
}

/// A validated stuck check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StuckSpec {
    pub run: Confirm,
    pub tolerance: f64,
}

/// A validated spike check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SpikeSpec {
    pub jump: f64,
    pub within_ns: i64,
}

/// A validated `[[alerts.checks]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckEntry {
    /// Where it is in the config file (`alerts.rules[3]`), for `gateway check`.
    pub at: String,
    pub selector: Selector,
    pub level: Option<Level>,
    pub bad_quality: Option<FaultSpec>,
    pub range: Option<RangeSpec>,
    pub stuck: Option<StuckSpec>,
    pub spike: Option<SpikeSpec>,
}

/// Every rule and check of a site, validated. Build with [`RuleSet::from_config`]; hand to
/// [`super::Evaluator::new`].
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub(crate) language: Language,
    pub(crate) channel_rules: Vec<ChannelRule>,
    pub(crate) stale_rules: Vec<StaleRule>,
    pub(crate) checks: Vec<CheckEntry>,
    /// The derived channels of the rate, difference and tilt rules, one block per rule named
    /// after it (issue 7 item 4: one place computes each quantity, [`crate::engine::derived`];
    /// the rule judges what the block stores). The config appends them to `[[derived]]`.
    pub(crate) derived: Vec<DerivedSpec>,
}

impl RuleSet {
    /// Validate `cfg`. `at` is where the section sits in the file (`"alerts"`), prefixed to every
    /// problem's path.
    ///
    /// # Errors
    /// Every problem found, each with its path and fix.
    pub fn from_config(cfg: &AlertsConfig, at: &str) -> Result<Self, Vec<RuleProblem>> {
        let mut v = Validation {
            problems: Vec::new(),
        };
        let mut set = Self {
            language: cfg.language,
            ..Self::default()
        };
        let mut names = HashSet::new();
        for (i, r) in cfg.rules.iter().enumerate() {
            let rat = path(at, &format!("rules[{i}]"));
            v.check_name(&format!("{rat}.name"), &r.name);
            if [BAD_QUALITY_CHECK, STUCK_CHECK, SPIKE_CHECK, RANGE_CHECK].contains(&r.name.as_str())
            {
                v.problem(
                    &format!("{rat}.name"),
                    &format!(
                        "\"{}\" is the name of a built-in sensor check; choose another",
                        r.name
                    ),
                );
            }
            if !names.insert(r.name.as_str()) {
                v.problem(
                    &format!("{rat}.name"),
                    &format!(
                        "rule name \"{}\" is used twice; names must be unique",
                        r.name
                    ),
                );
            }
            v.rule(&rat, r, &mut set);
        }
        for (i, c) in cfg.checks.iter().enumerate() {
            let cat = path(at, &format!("checks[{i}]"));
            if let Some(entry) = v.check(&cat, c) {
                set.checks.push(entry);
            }
        }
        if v.problems.is_empty() {
            Ok(set)
        } else {
            Err(v.problems)
        }
    }

    /// The message language.
    #[must_use]
    pub fn language(&self) -> Language {
        self.language
    }

    /// The names of every rule, in config order (quality rules, then stale rules).
    #[must_use]
    pub fn rule_names(&self) -> Vec<&str> {
        self.channel_rules
            .iter()
            .map(|r| r.name.as_str())
            .chain(self.stale_rules.iter().map(|r| r.name.as_str()))
            .collect()
    }

    /// True when there is no rule and no check (bad-quality detection still runs by default).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.channel_rules.is_empty() && self.stale_rules.is_empty() && self.checks.is_empty()
    }

    /// The derived blocks of the rate, difference and tilt rules (see [`RuleSet::derived`]),
    /// for the `[[derived]]` section.
    #[must_use]
    pub fn derived_blocks(&self) -> &[DerivedSpec] {
        &self.derived
    }
}

fn path(at: &str, rest: &str) -> String {
    if at.is_empty() {
        rest.to_owned()
    } else {
        format!("{at}.{rest}")
    }
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The selector of a rule's own derived channels: those of the block named after it.
fn own_derived(rule: &str) -> Selector {
    let mut tags = std::collections::BTreeMap::new();
    tags.insert(DERIVED_TAG.to_owned(), rule.to_owned());
    SelectorConfig {
        tags,
        ..SelectorConfig::default()
    }
    .validate("", &mut Vec::new())
}

/// "1d" → "d", "1h" → "h", otherwise the humantime form ("2d", "30m").
pub(crate) fn per_suffix(per: Duration) -> String {
    match per.as_secs() {
        86_400 if per.subsec_nanos() == 0 => "/d".to_owned(),
        3_600 if per.subsec_nanos() == 0 => "/h".to_owned(),
        60 if per.subsec_nanos() == 0 => "/min".to_owned(),
        1 if per.subsec_nanos() == 0 => "/s".to_owned(),
        _ => format!("/{}", humantime::format_duration(per)),
    }
}

struct Validation {
    problems: Vec<RuleProblem>,
}

impl Validation {
    fn problem(&mut self, at: &str, message: &str) {
        self.problems.push(RuleProblem {
            at: at.to_owned(),
            message: message.to_owned(),
        });
    }

    fn check_name(&mut self, at: &str, name: &str) {
        if name.trim().is_empty() {
            self.problem(at, "must not be empty");
        } else if name.contains(['\n', '\r']) {
            self.problem(at, "must not contain a line break");
        }
    }

    fn selector(&mut self, at: &str, s: &SelectorConfig) -> Selector {
        let mut found = Vec::new();
        let sel = s.validate(at, &mut found);
        for (at, message) in found {
            self.problems.push(RuleProblem { at, message });
        }
        sel
    }

    /// Report each field that is set but does not apply to `kind`.
    fn no_stray_fields(&mut self, at: &str, r: &RuleConfig) {
        let k = r.kind;
        let pair = k.is_pair();
        let stale = k == RuleKind::Stale;
        let stray: [(&str, bool, &str); 15] = [
            (
                "select",
                r.select.is_some() && pair,
                "pair rules name their channels in `pairs`",
            ),
            (
                "pairs",
                !r.pairs.is_empty() && !pair,
                "only difference and tilt rules take `pairs`",
            ),
            (
                "upper",
                r.upper.is_some() && stale,
                "stale rules have no thresholds; use `after` and `level`",
            ),
            (
                "lower",
                r.lower.is_some() && stale,
                "stale rules have no thresholds; use `after` and `level`",
            ),
            (
                "confirm",
                r.confirm.is_some() && stale,
                "a stale rule raises once `after` has passed",
            ),
            (
                "clear",
                r.clear.is_some() && stale,
                "a stale rule clears on the next reading",
            ),
            (
                "overrides",
                !r.overrides.is_empty() && (pair || stale),
                "only absolute, change and rate rules take overrides",
            ),
            (
                "baseline",
                r.baseline.is_some() && k != RuleKind::Change,
                "only change rules take a baseline",
            ),
            (
                "window",
                r.window.is_some() && k != RuleKind::Rate,
                "only rate rules take a window",
            ),
            (
                "per",
                r.per.is_some() && k != RuleKind::Rate,
                "only rate rules take `per`",
            ),
            (
                "min_points",
                r.min_points.is_some() && k != RuleKind::Rate,
                "only rate rules take `min_points`",
            ),
            (
                "min_span",
                r.min_span.is_some() && k != RuleKind::Rate,
                "only rate rules take `min_span`",
            ),
            (
                "abs",
                r.abs.is_some() && !pair,
                "only difference and tilt rules take `abs`",
            ),
            (
                "max_skew",
                r.max_skew.is_some() && !pair,
                "only difference and tilt rules take `max_skew`",
            ),
            (
                "unit",
                r.unit.is_some() && k != RuleKind::Tilt,
                "only tilt rules take `unit`",
            ),
        ];
        for (field, bad, why) in stray {
            if bad {
                self.problem(
                    &format!("{at}.{field}"),
                    &format!("does not apply to kind = \"{}\": {why}", k.as_str()),
                );
            }
        }
        for (field, set) in [
            ("after", r.after.is_some()),
            ("scope", r.scope.is_some()),
            ("level", r.level.is_some()),
        ] {
            if set && !stale {
                self.problem(
                    &format!("{at}.{field}"),
                    &format!("does not apply to kind = \"{}\": only stale rules take `{field}`; quality rules set levels in `upper`/`lower`", k.as_str()),
                );
            }
        }
    }

    fn rule(&mut self, at: &str, r: &RuleConfig, set: &mut RuleSet) {
        self.no_stray_fields(at, r);
        if let Some(label) = &r.label {
            self.check_name(&format!("{at}.label"), label);
        }
        if r.kind == RuleKind::Stale {
            self.stale_rule(at, r, set);
            return;
        }
        let upper = r
            .upper
            .as_ref()
            .and_then(|b| self.band(&format!("{at}.upper"), b, Side::Upper, None));
        let lower = r
            .lower
            .as_ref()
            .and_then(|b| self.band(&format!("{at}.lower"), b, Side::Lower, None));
        if r.upper.is_none() && r.lower.is_none() {
            self.problem(at, "has no thresholds: add `upper = { ... }` and/or `lower = { ... }`, e.g. upper = { alarm = 30.0, yellow = 0.7, orange = 0.85, red = 1.0 }");
        }
        self.bands_apart(at, upper.as_ref(), lower.as_ref());
        let confirm = self.confirm(&format!("{at}.confirm"), r.confirm.as_ref());
        let (deadband, clear) = self.clear(&format!("{at}.clear"), r.clear.as_ref(), confirm);
        for b in [&upper, &lower].into_iter().flatten() {
            self.deadband_fits(&format!("{at}.clear"), b, deadband);
        }
        let before = self.problems.len();
        let pairs = if r.kind.is_pair() {
            self.pairs(at, r)
        } else {
            Vec::new()
        };
        let selector = match &r.select {
            _ if r.kind.is_pair() => Selector::default(),
            Some(s) => self.selector(&format!("{at}.select"), s),
            None => {
                self.problem(
                    &format!("{at}.select"),
                    "missing: say which channels the rule applies to, e.g. select = { kind = \"settlement\", tags = { structure = \"block-A\" } } (select = {} for every channel)",
                );
                Selector::default()
            }
        };
        let tilt = r.kind == RuleKind::Tilt;
        let (measure, cause) = match r.kind {
            RuleKind::Absolute => (Measure::Absolute, Cause::Absolute),
            RuleKind::Change => (Measure::Change, Cause::Change),
            RuleKind::Rate => {
                self.rate(at, r);
                (Measure::Absolute, Cause::Rate)
            }
            RuleKind::Difference | RuleKind::Tilt => (
                if r.abs.unwrap_or(tilt) {
                    Measure::Magnitude
                } else {
                    Measure::Absolute
                },
                if tilt { Cause::Tilt } else { Cause::Difference },
            ),
            RuleKind::Stale => return,
        };
        // A rate, difference or tilt rule judges its own derived channels: the block computes
        // and stores the quantity, the rule selects what the block stored.
        let (selector, origin) = match r.kind {
            RuleKind::Rate | RuleKind::Difference | RuleKind::Tilt => {
                if self.problems.len() > before {
                    return;
                }
                let Some(spec) = self.derived_block(at, r) else {
                    return;
                };
                let origin = if r.kind == RuleKind::Rate {
                    Origin::Rate { input: selector }
                } else {
                    let by_output = spec
                        .pairs
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            let (device, point) = spec.pair_output(&p.a, &p.b, &p.point);
                            (format!("{device}/{point}"), i)
                        })
                        .collect();
                    Origin::Pairs { pairs, by_output }
                };
                set.derived.push(spec);
                (own_derived(&r.name), origin)
            }
            _ => (selector, Origin::Channels),
        };
        if let Some(b) = r.baseline {
            if !b.is_finite() {
                self.problem(&format!("{at}.baseline"), "must be a finite number");
            }
        }
        let mut overrides = Vec::new();
        for (j, o) in r.overrides.iter().enumerate() {
            let oat = format!("{at}.overrides[{j}]");
            if o.channel.is_empty() {
                self.problem(
                    &format!("{oat}.channel"),
                    "must not be empty: a channel key such as \"lev-a1/ch3\" (globs allowed)",
                );
            }
            if o.baseline.is_some() && r.kind != RuleKind::Change {
                self.problem(
                    &format!("{oat}.baseline"),
                    "only change rules take a baseline",
                );
            }
            if o.upper.is_none() && o.lower.is_none() && o.baseline.is_none() && o.enabled.is_none()
            {
                self.problem(
                    &oat,
                    "changes nothing: give `upper`, `lower`, `baseline` or `enabled = false`",
                );
            }
            let ou = o
                .upper
                .as_ref()
                .and_then(|b| self.band(&format!("{oat}.upper"), b, Side::Upper, upper.as_ref()));
            let ol = o
                .lower
                .as_ref()
                .and_then(|b| self.band(&format!("{oat}.lower"), b, Side::Lower, lower.as_ref()));
            for b in [&ou, &ol].into_iter().flatten() {
                self.deadband_fits(&oat, b, deadband);
            }
            self.bands_apart(
                &oat,
                ou.as_ref().or(upper.as_ref()),
                ol.as_ref().or(lower.as_ref()),
            );
            overrides.push(Override {
                // A rate rule judges `<channel>.<rule>`, its derived rate of `<channel>`.
                pattern: if r.kind == RuleKind::Rate {
                    format!("{}.{}", o.channel, r.name)
                } else {
                    o.channel.clone()
                },
                upper: ou,
                lower: ol,
                baseline: o.baseline,
                enabled: o.enabled.unwrap_or(true),
            });
        }
        set.channel_rules.push(ChannelRule {
            at: at.to_owned(),
            name: r.name.clone(),
            label: r.label.clone(),
            cause,
            selector,
            measure,
            origin,
            upper,
            lower,
            baseline: r.baseline,
            overrides,
            confirm,
            clear,
            deadband,
        });
    }

    /// The derived block of a rate, difference or tilt rule (named after it), validated where
    /// every `[[derived]]` block is; its problems carry the rule's path.
    fn derived_block(&mut self, at: &str, r: &RuleConfig) -> Option<DerivedSpec> {
        let mut c = DerivedConfig::new(
            &r.name,
            match r.kind {
                RuleKind::Rate => DerivedKind::Rate,
                RuleKind::Tilt => DerivedKind::Tilt,
                _ => DerivedKind::Difference,
            },
        );
        if r.kind == RuleKind::Rate {
            c.select.clone_from(&r.select);
            c.window = r.window;
            c.per = r.per;
            c.min_points = r.min_points;
            c.min_span = Some(r.min_span.unwrap_or(r.window.unwrap_or_default() / 2));
        } else {
            c.pairs = r
                .pairs
                .iter()
                .map(|p| DerivedPairConfig {
                    a: p.a.clone(),
                    b: p.b.clone(),
                    distance_m: p.distance_m,
                    point: None,
                })
                .collect();
            c.max_skew = Some(r.max_skew.unwrap_or(DEFAULT_PAIR_MAX_SKEW));
            c.settlement_unit = r.unit;
        }
        let mut problems = Vec::new();
        let spec = crate::engine::derived::config::validate_block(&c, at, &mut problems);
        for (path, message) in problems {
            self.problem(&path, &message);
        }
        spec
    }

    /// Check a rate rule's window settings (its derived block checks them again, without the
    /// rule's bounds).
    fn rate(&mut self, at: &str, r: &RuleConfig) {
        let Some(window) = r.window else {
            self.problem(&format!("{at}.window"), "missing: a rate rule needs the window its slope is fitted over, e.g. window = \"1d\"");
            return;
        };
        if window < MIN_RATE_WINDOW {
            self.problem(&format!("{at}.window"), &format!("{window:?} is shorter than {MIN_RATE_WINDOW:?}; a slope over so short a time is noise"));
            return;
        }
        let per = r.per.unwrap_or(DEFAULT_RATE_PER);
        if per.is_zero() {
            self.problem(
                &format!("{at}.per"),
                "must be longer than 0s (e.g. \"1d\" for mm/d)",
            );
            return;
        }
        let min_points = r.min_points.unwrap_or(DEFAULT_RATE_MIN_POINTS);
        if min_points < 2 {
            self.problem(
                &format!("{at}.min_points"),
                "must be at least 2: a slope needs two readings",
            );
        }
        let min_span = r.min_span.unwrap_or(window / 2);
        if min_span > window {
            self.problem(
                &format!("{at}.min_span"),
                &format!(
                    "{min_span:?} is longer than the window {window:?}; it could never be met"
                ),
            );
        }
    }

    /// Check the pairs of a difference or tilt rule.
    fn pairs(&mut self, at: &str, r: &RuleConfig) -> Vec<Pair> {
        let tilt = r.kind == RuleKind::Tilt;
        if r.pairs.is_empty() {
            self.problem(
                &format!("{at}.pairs"),
                "missing: list the channel pairs, e.g. pairs = [{ a = \"lev-a1/ch1\", b = \"lev-a1/ch2\", distance_m = 8.0 }]",
            );
        }
        let mut pairs = Vec::new();
        for (j, p) in r.pairs.iter().enumerate() {
            let pat = format!("{at}.pairs[{j}]");
            for (field, key) in [("a", &p.a), ("b", &p.b)] {
                if key.is_empty() || !key.contains('/') {
                    self.problem(&format!("{pat}.{field}"), &format!("\"{key}\" is not a channel key; write \"device/point\", e.g. \"lev-a1/ch3\""));
                }
            }
            if p.a == p.b {
                self.problem(&pat, "a and b are the same channel");
            }
            match (tilt, p.distance_m) {
                (true, Some(d)) if d.is_finite() && d > 0.0 => {}
                (true, _) => {
                    self.problem(&format!("{pat}.distance_m"), "a tilt pair needs the distance between its points in metres, above 0 (e.g. 8.0)");
                }
                (false, Some(_)) => {
                    self.problem(
                        &format!("{pat}.distance_m"),
                        "only tilt pairs have a distance; use kind = \"tilt\" for a ratio",
                    );
                }
                (false, None) => {}
            }
            pairs.push(Pair {
                a: p.a.clone(),
                b: p.b.clone(),
            });
        }
        pairs
    }

    fn stale_rule(&mut self, at: &str, r: &RuleConfig, set: &mut RuleSet) {
        let selector = match &r.select {
            Some(s) => self.selector(&format!("{at}.select"), s),
            None => {
                self.problem(
                    &format!("{at}.select"),
                    "missing: say which channels or devices to watch (select = {} for all)",
                );
                Selector::default()
            }
        };
        let after = match r.after {
            Some(a) if !a.is_zero() => a,
            _ => {
                self.problem(&format!("{at}.after"), "missing or 0: how long without data raises the alert, e.g. after = \"30m\" (a few upload intervals, docs/DOMAIN.md §Data quality)");
                return;
            }
        };
        set.stale_rules.push(StaleRule {
            at: at.to_owned(),
            name: r.name.clone(),
            selector,
            after_ns: ns(after),
            scope: r.scope.unwrap_or_default(),
            level: r.level.unwrap_or(DEFAULT_FAULT_LEVEL),
        });
    }

    /// Validate a band. `template` is the rule's band of the same side, for an override that
    /// gives only `alarm` (it keeps the rule's fractions).
    fn band(
        &mut self,
        at: &str,
        b: &BandConfig,
        side: Side,
        template: Option<&Band>,
    ) -> Option<Band> {
        let before = self.problems.len();
        let levels = b.levels();
        for (k, v) in levels.iter().enumerate() {
            if v.is_some_and(|v| !v.is_finite()) {
                self.problem(
                    &format!("{at}.{}", Level::ALL[k]),
                    "must be a finite number",
                );
            }
        }
        if b.alarm.is_some_and(|a| !a.is_finite()) {
            self.problem(&format!("{at}.alarm"), "must be a finite number");
        }
        if self.problems.len() > before {
            return None;
        }
        let any_level = levels.iter().any(Option::is_some);
        let (fractions, thresholds) = match b.alarm {
            None if !any_level => {
                self.problem(at, "is empty: give `alarm` (and level fractions) or level values, e.g. { alarm = 30.0, yellow = 0.7, orange = 0.85, red = 1.0 }");
                return None;
            }
            None => (None, levels),
            Some(alarm) => {
                let fractions = if any_level {
                    levels
                } else if let Some(f) = template.and_then(|t| t.fractions) {
                    f
                } else {
                    [None, None, None, Some(1.0)]
                };
                for (k, f) in fractions.iter().enumerate() {
                    if let Some(f) = f {
                        if !(*f > 0.0 && *f <= MAX_LEVEL_FRACTION) {
                            self.problem(
                                &format!("{at}.{}", Level::ALL[k]),
                                &format!("{f} is not a fraction of `alarm` in (0, {MAX_LEVEL_FRACTION}]; with `alarm` set, levels are fractions (0.7 = 70 %); without it, values"),
                            );
                        }
                    }
                }
                if alarm == 0.0 {
                    self.problem(
                        &format!("{at}.alarm"),
                        "is 0, so every fraction of it is 0; give the levels as values instead",
                    );
                }
                (Some(fractions), fractions.map(|f| f.map(|f| alarm * f)))
            }
        };
        if self.problems.len() > before {
            return None;
        }
        // Levels must get more severe in order: upper blue < yellow < orange < red; lower the
        // reverse.
        let mut prev: Option<(usize, f64)> = None;
        for (k, t) in thresholds.iter().enumerate() {
            let Some(t) = *t else { continue };
            if let Some((pk, pt)) = prev {
                let ordered = match side {
                    Side::Upper => t > pt,
                    Side::Lower => t < pt,
                };
                if !ordered {
                    let rel = if side == Side::Upper {
                        "above"
                    } else {
                        "below"
                    };
                    self.problem(
                        &format!("{at}.{}", Level::ALL[k]),
                        &format!("{} threshold {t} must be {rel} the {} threshold {pt}: levels go blue, yellow, orange, red in rising severity", Level::ALL[k], Level::ALL[pk]),
                    );
                }
            }
            prev = Some((k, t));
        }
        (self.problems.len() == before).then_some(Band {
            side,
            fractions,
            thresholds,
        })
    }

    /// Upper thresholds must all lie above lower ones, or a value could breach both.
    fn bands_apart(&mut self, at: &str, upper: Option<&Band>, lower: Option<&Band>) {
        let (Some(u), Some(l)) = (upper, lower) else {
            return;
        };
        let umin = u
            .thresholds
            .iter()
            .flatten()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let lmax = l
            .thresholds
            .iter()
            .flatten()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        if umin <= lmax {
            self.problem(at, &format!("the lowest upper threshold {umin} must be above the highest lower threshold {lmax}"));
        }
    }

    fn confirm(&mut self, at: &str, c: Option<&ConfirmConfig>) -> Confirm {
        let Some(c) = c else {
            return Confirm {
                count: DEFAULT_CONFIRM_COUNT,
                duration_ns: 0,
            };
        };
        if c.count.is_none() && c.duration.is_none() {
            self.problem(
                at,
                "is empty: give `count` (readings in a row) and/or `for` (a duration, e.g. \"2d\")",
            );
        }
        if c.count == Some(0) {
            self.problem(&format!("{at}.count"), "must be at least 1");
        }
        Confirm {
            count: c.count.unwrap_or(1).max(1),
            duration_ns: c.duration.map_or(0, ns),
        }
    }

    fn clear(
        &mut self,
        at: &str,
        c: Option<&ClearConfig>,
        confirm: Confirm,
    ) -> (Deadband, Confirm) {
        let Some(c) = c else {
            return (Deadband::Fraction(DEFAULT_DEADBAND_FRACTION), confirm);
        };
        let deadband = match (c.deadband, c.deadband_abs) {
            (Some(_), Some(_)) => {
                self.problem(at, "give either `deadband` (a fraction of the threshold) or `deadband_abs` (a value), not both");
                Deadband::Fraction(DEFAULT_DEADBAND_FRACTION)
            }
            (Some(f), None) => {
                if !(0.0..1.0).contains(&f) {
                    self.problem(&format!("{at}.deadband"), &format!("{f} is not a fraction in [0, 1): 0.1 clears below 90 % of the threshold"));
                }
                Deadband::Fraction(f)
            }
            (None, Some(a)) => {
                if !(a.is_finite() && a >= 0.0) {
                    self.problem(
                        &format!("{at}.deadband_abs"),
                        &format!("{a} must be a finite number ≥ 0"),
                    );
                }
                Deadband::Absolute(a)
            }
            (None, None) => Deadband::Fraction(DEFAULT_DEADBAND_FRACTION),
        };
        if c.count == Some(0) {
            self.problem(&format!("{at}.count"), "must be at least 1");
        }
        let confirm = if c.count.is_none() && c.duration.is_none() {
            confirm
        } else {
            Confirm {
                count: c.count.unwrap_or(1).max(1),
                duration_ns: c.duration.map_or(0, ns),
            }
        };
        (deadband, confirm)
    }

    /// A fractional deadband of a zero threshold is zero: the alert would flap on noise.
    fn deadband_fits(&mut self, at: &str, b: &Band, deadband: Deadband) {
        if let Deadband::Fraction(f) = deadband {
            if f > 0.0 && b.thresholds.iter().flatten().any(|t| *t == 0.0) {
                self.problem(at, "a threshold of 0 has no fractional deadband; set clear = { deadband_abs = ... } in the rule's unit");
            }
        }
    }

    fn fault_confirm(
        &mut self,
        at: &str,
        count: Option<u32>,
        duration: Option<Duration>,
        clear: Option<u32>,
        default_count: u32,
    ) -> FaultSpec {
        if count == Some(0) {
            self.problem(&format!("{at}.count"), "must be at least 1");
        }
        if clear == Some(0) {
            self.problem(&format!("{at}.clear_count"), "must be at least 1");
        }
        let count = match (count, duration) {
            (Some(c), _) => c.max(1),
            (None, Some(_)) => 1,
            (None, None) => default_count,
        };
        FaultSpec {
            raise: Confirm {
                count,
                duration_ns: duration.map_or(0, ns),
            },
            clear_count: clear.unwrap_or(DEFAULT_FAULT_CLEAR_COUNT).max(1),
        }
    }

    fn check(&mut self, at: &str, c: &CheckConfig) -> Option<CheckEntry> {
        let before = self.problems.len();
        let selector = self.selector(&format!("{at}.select"), &c.select);
        if c.bad_quality.is_none()
            && c.range.is_none()
            && c.stuck.is_none()
            && c.spike.is_none()
            && c.level.is_none()
        {
            self.problem(
                at,
                "checks nothing: give `bad_quality`, `range`, `stuck` and/or `spike`",
            );
        }
        let bad_quality = c.bad_quality.as_ref().map(|b| {
            self.fault_confirm(
                &format!("{at}.bad_quality"),
                b.count,
                b.duration,
                b.clear_count,
                DEFAULT_BAD_QUALITY_COUNT,
            )
        });
        let range = c.range.as_ref().map(|r| {
            let rat = format!("{at}.range");
            match (r.min, r.max) {
                (None, None) => self.problem(&rat, "give `min` and/or `max`"),
                (Some(lo), Some(hi)) if lo >= hi => {
                    self.problem(&rat, &format!("min {lo} must be below max {hi}"))
                }
                _ => {}
            }
            for (f, v) in [("min", r.min), ("max", r.max)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    self.problem(&format!("{rat}.{f}"), "must be a finite number");
                }
            }
            let fault = self.fault_confirm(
                &rat,
                r.count,
                r.duration,
                r.clear_count,
                DEFAULT_RANGE_COUNT,
            );
            RangeSpec {
                min: r.min,
                max: r.max,
                fault,
            }
        });
        let stuck = c.stuck.as_ref().map(|s| {
            let sat = format!("{at}.stuck");
            if s.count.is_none() && s.duration.is_none() {
                self.problem(&sat, "give `count` (identical readings in a row, e.g. 36) and/or `for` (e.g. \"6h\")");
            }
            if s.count.is_some_and(|n| n < 2) {
                self.problem(&format!("{sat}.count"), "must be at least 2: one reading is always identical to itself");
            }
            let tolerance = s.tolerance.unwrap_or(0.0);
            if !(tolerance.is_finite() && tolerance >= 0.0) {
                self.problem(&format!("{sat}.tolerance"), "must be a finite number ≥ 0");
            }
            StuckSpec { run: Confirm { count: s.count.unwrap_or(1), duration_ns: s.duration.map_or(0, ns) }, tolerance }
        });
        let spike = c.spike.as_ref().map(|s| {
            let sat = format!("{at}.spike");
            if !(s.jump.is_finite() && s.jump > 0.0) {
                self.problem(
                    &format!("{sat}.jump"),
                    "must be a number above 0 (the largest plausible change between two readings)",
                );
            }
            let within = s.within.unwrap_or(DEFAULT_SPIKE_WITHIN);
            if within.is_zero() {
                self.problem(&format!("{sat}.within"), "must be longer than 0s");
            }
            SpikeSpec {
                jump: s.jump,
                within_ns: ns(within),
            }
        });
        (self.problems.len() == before).then_some(CheckEntry {
            at: at.to_owned(),
            selector,
            level: c.level,
            bad_quality,
            range,
            stuck,
            spike,
        })
    }
}
