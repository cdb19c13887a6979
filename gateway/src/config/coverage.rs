//! `gateway check`'s account of the alert rules: which channels each rule, pair and sensor check
//! matches, and the problems of rules that cannot do what they say (issue 7 item 8).
//!
//! Owns the matching of the validated rules ([`crate::engine::rules::RuleSet`]) against the
//! channels the config declares, and its refusals: a rule or check that matches nothing, a
//! difference or tilt pair of two different quantity kinds or units, a tilt pair of channels
//! that are not settlements, and a stale rule whose `after` is not longer than the poll
//! interval of a device it watches. Does not own the rules'
//! validation (`engine/rules/config.rs`), their evaluation, or the rest of the check output
//! ([`super::describe`]).
//!
//! Modbus channels are known from the config. MQTT channels exist only at run time: a selector
//! that no Modbus channel matches is accepted when an MQTT subscription could produce a matching
//! channel (its kind, its fixed tags and its topic placeholders allow it,
//! `Selector::could_match`), and the output says so. A pair naming a channel that is not a
//! Modbus point is accepted when the gateway has MQTT subscriptions, and said to be checked at
//! run time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::{Config, Problem};
use crate::alert::Cause;
use crate::engine::derived::{planned_channels, planned_pair_channel};
use crate::engine::rules::selector::{ChannelInfo, ChannelTemplate, Selector};
use crate::engine::rules::{ChannelRule, Origin, Pair, StaleRule, StaleScope};
use crate::model::{QuantityKind, Series};
use crate::sources::mqtt::config::Subscription;
use crate::sources::mqtt::payload::PayloadFormat;
use crate::sources::mqtt::topic::Template;

/// The upload interval of CIGEM devices as usually set on site (hourly or slower; the firmware
/// allows 1 s to 72 h, docs/DOMAIN.md §CIGEM): a stale rule that may watch them with a shorter
/// `after` gets a note in the check output (not a refusal: the interval is set on the device).
pub const TYPICAL_CIGEM_UPLOAD_INTERVAL: Duration = Duration::from_secs(3600);

/// Most channel keys listed per rule; the rest are counted.
pub const MAX_LISTED_CHANNELS: usize = 12;

/// The rules' account and their problems.
#[derive(Debug, Default)]
pub struct RuleCoverage {
    /// One block per rule and check, for the technician.
    pub text: String,
    /// Rules that cannot work; `gateway check` refuses the config (exit 2) when there are any.
    pub problems: Vec<Problem>,
}

/// A configured Modbus channel and its device's poll interval.
struct Known {
    info: ChannelInfo,
    poll: Duration,
}

/// An MQTT subscription, as far as config tells what it will produce.
struct Subscribed<'a> {
    /// `source/subscription`.
    name: String,
    /// CIGEM devices: their upload interval is set on the device, not in this config.
    cigem: bool,
    template: ChannelTemplate<'a>,
}

/// Match every rule and check of `cfg` against its channels.
#[must_use]
pub fn rule_coverage(cfg: &Config) -> RuleCoverage {
    let mut known: Vec<Known> = cfg
        .devices
        .iter()
        .flat_map(|d| {
            d.points.iter().map(|p| Known {
                info: ChannelInfo::from_series(&Arc::new(Series::new(
                    &cfg.site,
                    &cfg.gateway_id,
                    &d.name,
                    &p.name,
                    p.quantity,
                    &p.unit,
                    &d.tags,
                ))),
                poll: d.poll_interval,
            })
        })
        .collect();
    // The channels the derived blocks make from them, in declaration order (a block may select
    // the outputs of the blocks before it), polled as their input.
    for spec in &cfg.derived.specs {
        let made: Vec<Known> = known
            .iter()
            .flat_map(|k| {
                planned_channels(spec, &k.info)
                    .into_iter()
                    .map(|info| Known { info, poll: k.poll })
            })
            .collect();
        known.extend(made);
        let find = |key: &str| known.iter().find(|k| k.info.key == key);
        let paired: Vec<Known> = spec
            .pairs
            .iter()
            .filter_map(|p| {
                // Polled as the slower of its two inputs.
                let poll = find(&p.a)?.poll.max(find(&p.b)?.poll);
                let info = planned_pair_channel(spec, p, |key| find(key).map(|k| &k.info))?;
                Some(Known { info, poll })
            })
            .collect();
        known.extend(paired);
    }
    let subscribed: Vec<Subscribed<'_>> = cfg
        .mqtt
        .iter()
        .flat_map(|m| {
            m.subscriptions.iter().map(move |s| {
                let mut tags = BTreeMap::new();
                tags.insert("site".to_owned(), cfg.site.clone());
                tags.insert("gateway".to_owned(), cfg.gateway_id.clone());
                tags.extend(s.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
                Subscribed {
                    name: format!("{}/{}", m.name, s.name),
                    cigem: matches!(s.payload, PayloadFormat::Cigem {}),
                    template: ChannelTemplate {
                        kinds: produced_kinds(s),
                        device: fixed_device(s),
                        point: fixed_point(s),
                        tags,
                        open_tags: s.pattern.names(),
                    },
                }
            })
        })
        .collect();
    let mut c = Coverage {
        file: &cfg.path,
        known: &known,
        subscribed: &subscribed,
        out: RuleCoverage::default(),
    };
    let rules = &cfg.rules;
    let n = rules.channel_rules.len() + rules.stale_rules.len();
    let _ = writeln!(c.out.text, "\nalert rules: {n}");
    // A pour's GB 50496 rules watch its derived series, which exist once its sensors do:
    // the sensors' selectors are what is checked (below).
    let pour_rules: std::collections::HashSet<String> = cfg
        .pours
        .rules(cfg.rules.language)
        .into_iter()
        .map(|r| r.name)
        .collect();
    for r in &rules.channel_rules {
        if pour_rules.contains(&r.name) {
            let _ = writeln!(
                c.out.text,
                "  {} {}: the pour's GB 50496-2018 §3.0.4 rule, on its derived series",
                r.at, r.name
            );
            continue;
        }
        // A rate rule is checked on the channels whose rate it judges, a difference or tilt
        // rule on its pairs (their derived channels exist once their inputs do).
        match &r.origin {
            Origin::Channels => {
                c.selected(&r.at, &r.name, "rule", &r.selector);
            }
            Origin::Rate { input } => {
                c.selected(&r.at, &r.name, "rule", input);
            }
            Origin::Pairs { pairs, .. } => c.pairs(r, pairs),
        }
    }
    for r in &rules.stale_rules {
        c.stale(r);
    }
    if !cfg.pours.is_empty() {
        let _ = writeln!(c.out.text, "\npour sensors:");
        for (i, p) in cfg.pours.pours.iter().enumerate() {
            for (role, selector) in &p.sensors {
                let key = format!("sensors.{}", role.as_str());
                let at = format!("pours[{i}].{key}");
                c.selected_at(&at, &at, &key, &p.name, "pour sensor", selector);
            }
        }
    }
    let _ = writeln!(c.out.text, "\nsensor checks: {}", rules.checks.len());
    for e in &rules.checks {
        let mut what = Vec::new();
        if e.bad_quality.is_some() {
            what.push("bad_quality");
        }
        if e.range.is_some() {
            what.push("range");
        }
        if e.stuck.is_some() {
            what.push("stuck");
        }
        if e.spike.is_some() {
            what.push("spike");
        }
        c.selected(&e.at, &what.join(", "), "check", &e.selector);
    }
    if rules.checks.is_empty() {
        let _ = writeln!(
            c.out.text,
            "  none: no device-fault check runs (quality codes are still stored)"
        );
    }
    c.out
}

struct Coverage<'a> {
    file: &'a std::path::Path,
    known: &'a [Known],
    subscribed: &'a [Subscribed<'a>],
    out: RuleCoverage,
}

impl Coverage<'_> {
    fn problem(&mut self, at: &str, message: String) {
        self.out.problems.push(Problem {
            file: self.file.to_path_buf(),
            at: at.to_owned(),
            message,
        });
    }

    /// The Modbus channels and MQTT subscriptions `selector` matches; printed, and a problem
    /// when there are none. Returns the matched Modbus channels.
    fn selected(&mut self, at: &str, name: &str, what: &str, selector: &Selector) -> Vec<usize> {
        self.selected_at(at, &format!("{at}.select"), "select", name, what, selector)
    }

    /// [`Coverage::selected`] with the path a problem names (`problem_at`) and the key to fix.
    fn selected_at(
        &mut self,
        at: &str,
        problem_at: &str,
        key: &str,
        name: &str,
        what: &str,
        selector: &Selector,
    ) -> Vec<usize> {
        let matched: Vec<usize> = (0..self.known.len())
            .filter(|&i| selector.matches(&self.known[i].info))
            .collect();
        let mqtt: Vec<&str> = self
            .subscribed
            .iter()
            .filter(|s| selector.could_match(&s.template))
            .map(|s| s.name.as_str())
            .collect();
        let keys: Vec<&str> = matched
            .iter()
            .map(|&i| self.known[i].info.key.as_str())
            .collect();
        let _ = writeln!(
            self.out.text,
            "  {at} {name}: {}",
            listing(&keys, "Modbus channel")
        );
        if !mqtt.is_empty() {
            let _ = writeln!(
                self.out.text,
                "      and the MQTT channels of {} that match (known at run time)",
                mqtt.join(", ")
            );
        }
        if matched.is_empty() && mqtt.is_empty() {
            self.problem(
                problem_at,
                format!(
                    "this {what} matches no channel: no configured Modbus point and no MQTT \
                     subscription gives one with this kind and these tags; fix `{key}` to name \
                     channels listed by `gateway check`, or remove the {what}"
                ),
            );
        }
        matched
    }

    fn pairs(&mut self, r: &ChannelRule, pairs: &[Pair]) {
        let _ = writeln!(self.out.text, "  {} {}:", r.at, r.name);
        for (j, p) in pairs.iter().enumerate() {
            let at = format!("{}.pairs[{j}]", r.at);
            let find = |key: &str| self.known.iter().find(|k| k.info.key == key);
            let (a, b) = (find(&p.a), find(&p.b));
            let describe = |key: &str, k: Option<&Known>| match k {
                Some(k) => format!("{key} [{}{}]", k.info.kind, unit_suffix(&k.info.unit)),
                None => format!("{key} [MQTT, checked at run time]"),
            };
            let _ = writeln!(
                self.out.text,
                "      {} − {}",
                describe(&p.a, a),
                describe(&p.b, b)
            );
            for (side, key, k) in [("a", &p.a, a), ("b", &p.b, b)] {
                if k.is_none() && self.subscribed.is_empty() {
                    self.problem(
                        &format!("{at}.{side}"),
                        format!(
                            "no channel \"{key}\": it is no configured Modbus point and the \
                             gateway has no MQTT subscription; write `device/point` of a \
                             channel listed by `gateway check`"
                        ),
                    );
                }
            }
            for (side, key, k) in [("a", &p.a, a), ("b", &p.b, b)] {
                if let Some(k) =
                    k.filter(|k| r.cause == Cause::Tilt && k.info.kind != QuantityKind::Settlement)
                {
                    self.problem(
                        &format!("{at}.{side}"),
                        format!(
                            "a tilt is the differential settlement over the distance \
                             (docs/DOMAIN.md §Settlement), but \"{key}\" is a {} channel; pair \
                             two settlement channels (a levelling cell's raw head is not a \
                             settlement)",
                            k.info.kind
                        ),
                    );
                }
            }
            let (Some(a), Some(b)) = (a, b) else {
                continue;
            };
            if a.info.kind != b.info.kind {
                self.problem(
                    &at,
                    format!(
                        "pairs a {} channel ({}) with a {} channel ({}); a difference or tilt \
                         compares like with like: pair two channels of the same quantity",
                        a.info.kind, p.a, b.info.kind, p.b
                    ),
                );
            } else if a.info.unit != b.info.unit {
                self.problem(
                    &at,
                    format!(
                        "pairs {} in \"{}\" with {} in \"{}\"; pair two channels of the same \
                         unit (or convert one in its profile)",
                        p.a, a.info.unit, p.b, b.info.unit
                    ),
                );
            }
        }
    }

    fn stale(&mut self, r: &StaleRule) {
        let after = Duration::from_nanos(u64::try_from(r.after_ns).unwrap_or(0));
        let scope = match r.scope {
            StaleScope::Channel => "per channel",
            StaleScope::Device => "per device",
        };
        let name = format!(
            "{} (after {}, {scope})",
            r.name,
            humantime::format_duration(after)
        );
        let matched = self.selected(&r.at, &name, "rule", &r.selector);
        let cigem = self
            .subscribed
            .iter()
            .any(|s| s.cigem && r.selector.could_match(&s.template));
        if cigem && after < TYPICAL_CIGEM_UPLOAD_INTERVAL {
            let _ = writeln!(
                self.out.text,
                "      note: it may watch CIGEM devices, which upload every 1 s to 72 h as set on \
                 the device (typically hourly or slower, docs/DOMAIN.md §CIGEM); {} must be \
                 longer than their upload interval",
                humantime::format_duration(after)
            );
        }
        // The slowest device it watches that polls at least as slowly as `after`.
        let mut seen: Vec<(&str, Duration)> = Vec::new();
        for &i in &matched {
            let k = &self.known[i];
            if k.poll >= after && !seen.iter().any(|(d, _)| *d == k.info.device) {
                seen.push((&k.info.device, k.poll));
            }
        }
        if let Some((device, poll)) = seen.iter().max_by_key(|(_, p)| *p) {
            let others = seen.len() - 1;
            self.problem(
                &format!("{}.after", r.at),
                format!(
                    "{} is not longer than the poll interval of device {device} ({}){}: the \
                     rule would raise between every two readings; set `after` to several poll \
                     intervals (e.g. {}), or narrow `select` to the devices of one class",
                    humantime::format_duration(after),
                    humantime::format_duration(*poll),
                    if others > 0 {
                        format!(" and {others} other device(s)")
                    } else {
                        String::new()
                    },
                    humantime::format_duration(*poll * 3)
                ),
            );
        }
    }
}

/// The quantity kinds a subscription's channels can have; `None`: any (CIGEM).
fn produced_kinds(s: &Subscription) -> Option<Vec<QuantityKind>> {
    match &s.payload {
        PayloadFormat::Plain {} => Some(vec![s.quantity]),
        PayloadFormat::Cigem {} => None,
        PayloadFormat::Json(m) => Some(
            std::iter::once(s.quantity)
                .chain(m.kinds.values().copied())
                .chain(m.sensors.values().filter_map(|o| o.quantity))
                .chain(m.fields.values().filter_map(|o| o.quantity))
                .collect(),
        ),
    }
}

/// The device of a subscription's channels when config fixes it.
fn fixed_device(s: &Subscription) -> Option<&str> {
    match &s.payload {
        PayloadFormat::Plain {} => s.device.as_fixed(),
        PayloadFormat::Json(m) if m.device.is_none() => s.device.as_fixed(),
        PayloadFormat::Json(_) | PayloadFormat::Cigem {} => None,
    }
}

/// The point of a subscription's channels when config fixes it.
fn fixed_point(s: &Subscription) -> Option<&str> {
    let fixed = s.point.as_ref().and_then(Template::as_fixed);
    match &s.payload {
        PayloadFormat::Plain {} => fixed,
        PayloadFormat::Json(m) if m.sensor.is_none() && m.values.is_empty() => fixed,
        PayloadFormat::Json(_) | PayloadFormat::Cigem {} => None,
    }
}

fn unit_suffix(unit: &str) -> String {
    if unit.is_empty() {
        String::new()
    } else {
        format!(", {unit}")
    }
}

/// "3 Modbus channels: a, b, c" with at most [`MAX_LISTED_CHANNELS`] named.
fn listing(keys: &[&str], what: &str) -> String {
    if keys.is_empty() {
        return format!("no {what}");
    }
    let shown = keys
        .iter()
        .take(MAX_LISTED_CHANNELS)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    let more = keys.len().saturating_sub(MAX_LISTED_CHANNELS);
    format!(
        "{} {what}{}: {shown}{}",
        keys.len(),
        if keys.len() == 1 { "" } else { "s" },
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}
