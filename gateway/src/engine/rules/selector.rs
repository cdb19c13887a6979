//! Which channels a rule or check applies to: device and point globs, the quantity kind, and tag
//! equality, so that "every settlement point of building A" is one line of config.
//!
//! Owns [`SelectorConfig`] (the TOML form), the validated [`Selector`], [`ChannelInfo`] (what a
//! selector looks at) and the glob matcher. Matching runs once per channel, when the evaluator
//! first sees it, never per reading.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{QuantityKind, Series};

/// The identity of a channel as rules see it: the channel's [`Series`] (shared with the source
/// and the engine, not copied: the copy cost about 600 bytes per channel, issue 14), kept in the
/// evaluator's state so that a channel restored after a restart is matched and watched (stale
/// checks) before its first new reading. Saved as its fields ([`InfoFields`]), so the saved
/// state's format is that of the copy it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "InfoFields", into = "InfoFields")]
pub struct ChannelInfo {
    series: Arc<Series>,
}

/// [`ChannelInfo`] as saved: the fields selectors and alert messages use.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InfoFields {
    key: String,
    device: String,
    point: String,
    kind: QuantityKind,
    unit: String,
    tags: BTreeMap<String, String>,
}

impl From<InfoFields> for ChannelInfo {
    /// The series again, from the saved fields: the tags are the series' own (site, gateway,
    /// device, point, unit included), so the line prefix is the same.
    fn from(f: InfoFields) -> Self {
        let line_prefix = crate::record::series_prefix(f.kind.measurement(), &f.tags);
        Self {
            series: Arc::new(Series {
                key: f.key,
                device: f.device,
                point: f.point,
                kind: f.kind,
                unit: f.unit,
                tags: f.tags.into(),
                line_prefix,
            }),
        }
    }
}

impl From<ChannelInfo> for InfoFields {
    fn from(i: ChannelInfo) -> Self {
        let s = &*i.series;
        Self {
            key: s.key.clone(),
            device: s.device.clone(),
            point: s.point.clone(),
            kind: s.kind,
            unit: s.unit.clone(),
            tags: s.tags.to_map(),
        }
    }
}

impl std::ops::Deref for ChannelInfo {
    type Target = Series;

    fn deref(&self) -> &Series {
        &self.series
    }
}

impl ChannelInfo {
    /// The rules' view of a series.
    #[must_use]
    pub fn from_series(s: &Arc<Series>) -> Self {
        Self {
            series: Arc::clone(s),
        }
    }

    /// The series: for a reading held as a possible spike across a restart, stored once
    /// decided before the channel's next reading brought its series back.
    #[must_use]
    pub fn series(&self) -> Arc<Series> {
        Arc::clone(&self.series)
    }

    /// The `structure` tag, shown in alert messages (e.g. `A栋`).
    #[must_use]
    pub fn structure(&self) -> Option<&str> {
        self.tags
            .get("structure")
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// `select = { device = "lev-a*", point = "ch*", kind = "settlement", tags = { structure = "A栋" } }`.
/// Every field given must match; an empty table matches every channel.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorConfig {
    /// Glob on the device name (`*` any run of characters, `?` one character).
    #[serde(default)]
    pub device: Option<String>,
    /// Glob on the point name.
    #[serde(default)]
    pub point: Option<String>,
    /// Glob on the channel key `device/point`.
    #[serde(default)]
    pub channel: Option<String>,
    /// The quantity kind (`settlement`, `temperature`, ...).
    #[serde(default)]
    pub kind: Option<QuantityKind>,
    /// Tags that must be present with exactly these values.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A validated selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    device: Option<String>,
    point: Option<String>,
    channel: Option<String>,
    kind: Option<QuantityKind>,
    tags: BTreeMap<String, String>,
}

impl SelectorConfig {
    /// Check the patterns; problems are `(path, message)` with `at` as the prefix.
    pub(crate) fn validate(&self, at: &str, problems: &mut Vec<(String, String)>) -> Selector {
        for (field, pattern) in [
            ("device", &self.device),
            ("point", &self.point),
            ("channel", &self.channel),
        ] {
            if let Some(p) = pattern {
                if p.is_empty() {
                    problems.push((
                        format!("{at}.{field}"),
                        "must not be empty; leave it out to match every value".into(),
                    ));
                }
            }
        }
        for k in self.tags.keys() {
            if k.is_empty() {
                problems.push((format!("{at}.tags"), "a tag name must not be empty".into()));
            }
        }
        Selector {
            device: self.device.clone(),
            point: self.point.clone(),
            channel: self.channel.clone(),
            kind: self.kind,
            tags: self.tags.clone(),
        }
    }
}

impl Selector {
    /// True when the channel satisfies every given condition.
    #[must_use]
    pub fn matches(&self, c: &ChannelInfo) -> bool {
        self.kind.is_none_or(|k| k == c.kind)
            && self
                .device
                .as_deref()
                .is_none_or(|p| glob_match(p, &c.device))
            && self
                .point
                .as_deref()
                .is_none_or(|p| glob_match(p, &c.point))
            && self
                .channel
                .as_deref()
                .is_none_or(|p| glob_match(p, &c.key))
            && self.tags.iter().all(|(k, v)| c.tags.get(k) == Some(v))
    }
    /// Whether a channel of `t` (an MQTT subscription, whose channels exist only at run time)
    /// could match: false only when the config already rules it out (another quantity kind, a
    /// fixed tag with another value, a tag the subscription can never give).
    pub(crate) fn could_match(&self, t: &ChannelTemplate<'_>) -> bool {
        let fixed = |pattern: &Option<String>, name: Option<&str>| {
            pattern
                .as_deref()
                .is_none_or(|p| name.is_none_or(|n| glob_match(p, n)))
        };
        let key = t.device.zip(t.point).map(|(d, p)| format!("{d}/{p}"));
        self.kind
            .is_none_or(|k| t.kinds.as_ref().is_none_or(|kinds| kinds.contains(&k)))
            && fixed(&self.device, t.device)
            && fixed(&self.point, t.point)
            && fixed(&self.channel, key.as_deref())
            && self.tags.iter().all(|(k, v)| {
                if t.open_tags.iter().any(|o| o == k) {
                    return true;
                }
                match t.tags.get(k) {
                    Some(fixed) => fixed == v,
                    // Named per message: any value may come.
                    None => ["device", "point", "unit"].contains(&k.as_str()),
                }
            })
    }
}

/// What config says about the channels an MQTT subscription will produce, for
/// [`Selector::could_match`].
#[derive(Debug, Clone)]
pub(crate) struct ChannelTemplate<'a> {
    /// The quantity kinds they can have; `None` when any (CIGEM: the kind comes with the point).
    pub kinds: Option<Vec<QuantityKind>>,
    /// Their device, when config fixes it (a fixed `device` the payload does not override).
    pub device: Option<&'a str>,
    /// Their point, when config fixes it (a fixed `point` the payload does not override).
    pub point: Option<&'a str>,
    /// Tags fixed by config (site, gateway, the subscription's `tags`).
    pub tags: BTreeMap<String, String>,
    /// Tags taken from the topic (its placeholders), any value.
    pub open_tags: &'a [String],
}

/// Match `text` against a glob: `*` is any run of characters (also empty), `?` exactly one
/// character, everything else itself. Linear-time two-pointer matching with backtracking to the
/// last `*` only, so a hostile pattern cannot blow up.
#[must_use]
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` in the pattern and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more character and retry.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("lev-a*", "lev-a1", true),
            ("lev-a*", "lev-b1", false),
            ("*", "", true),
            ("ch?", "ch3", true),
            ("ch?", "ch12", false),
            ("*/ch*", "lev-a1/ch3", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("测温*", "测温1", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p, t), want, "{p} vs {t}");
        }
    }

    fn info(device: &str, point: &str, kind: QuantityKind, tags: &[(&str, &str)]) -> ChannelInfo {
        ChannelInfo::from(InfoFields {
            key: format!("{device}/{point}"),
            device: device.into(),
            point: point.into(),
            kind,
            unit: "mm".into(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })
    }

    #[test]
    fn every_given_field_must_match() {
        let cfg: SelectorConfig = toml::from_str(
            "device = \"lev-a*\"\nkind = \"settlement\"\ntags = { structure = \"block-A\" }",
        )
        .expect("toml");
        let mut problems = Vec::new();
        let s = cfg.validate("rules[0].select", &mut problems);
        assert!(problems.is_empty());
        let a = [("structure", "block-A")];
        assert!(s.matches(&info("lev-a1", "ch1", QuantityKind::Settlement, &a)));
        assert!(
            !s.matches(&info("lev-b1", "ch1", QuantityKind::Settlement, &a)),
            "device"
        );
        assert!(
            !s.matches(&info("lev-a1", "ch1", QuantityKind::Temperature, &a)),
            "kind"
        );
        assert!(
            !s.matches(&info(
                "lev-a1",
                "ch1",
                QuantityKind::Settlement,
                &[("structure", "block-B")]
            )),
            "tag value"
        );
        assert!(
            !s.matches(&info("lev-a1", "ch1", QuantityKind::Settlement, &[])),
            "tag missing"
        );
        assert!(
            Selector::default().matches(&info("x", "y", QuantityKind::Other, &[])),
            "empty selects all"
        );
    }

    #[test]
    fn empty_patterns_are_refused_with_their_path() {
        let cfg: SelectorConfig = toml::from_str("device = \"\"").expect("toml");
        let mut problems = Vec::new();
        let _ = cfg.validate("rules[2].select", &mut problems);
        assert_eq!(problems[0].0, "rules[2].select.device");
    }
}
