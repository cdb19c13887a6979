//! What applies to one channel: the rules whose selectors match it (with its override applied and
//! thresholds oriented), its sensor checks and its stale rules.
//!
//! Owns [`Plan`] and its resolution, [`RuleSet::plan`]. The evaluator resolves a plan once, when
//! it first sees a channel (or restores it), so that evaluating a reading is a walk over the
//! rules that match that channel and nothing else.

use super::condition::Thresholds;
use super::config::{
    Band, ChannelRule, FaultSpec, RangeSpec, RuleSet, SpikeSpec, StaleScope, StuckSpec,
    DEFAULT_FAULT_LEVEL,
};
use super::selector::{glob_match, ChannelInfo};
use std::collections::HashMap;
use std::sync::Arc;

use crate::alert::Level;

/// One matching channel rule, resolved for the channel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RulePlan {
    /// Index into [`RuleSet::channel_rules`].
    pub rule: usize,
    /// `[upper, lower]`, after the channel's override.
    pub bands: [Option<(Band, Thresholds)>; 2],
    /// Change rules: the configured baseline (`None`: the channel's first good reading).
    pub baseline: Option<f64>,
}

/// The sensor checks of a channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ChannelChecks {
    /// Level of its device-fault alerts.
    pub level: Level,
    /// Readings whose quality is not good; only when a check entry sets `bad_quality`.
    pub bad_quality: Option<FaultSpec>,
    pub range: Option<RangeSpec>,
    pub stuck: Option<StuckSpec>,
    pub spike: Option<SpikeSpec>,
}

/// Resolved plans, shared by every channel they apply to (issue 14): a rule plan is 488 bytes
/// and a channel's whole plan 248, and 5,000 channels under the same rules held 5,000 equal
/// copies of each.
#[derive(Debug, Default)]
pub(crate) struct PlanCache {
    /// By (rule, override that applies); `None`: the override disables the rule.
    rules: HashMap<(usize, Option<usize>), Option<Arc<RulePlan>>>,
    /// Whole plans, by what matched. At most one per combination of matching rules,
    /// overrides, stale rules and check entries the config can produce.
    plans: HashMap<PlanKey, Arc<Plan>>,
}

/// What a plan was resolved from: equal keys give equal plans.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PlanKey {
    rules: Vec<(usize, Option<usize>)>,
    stale: Vec<usize>,
    checks: Vec<usize>,
}

/// Everything that applies to one channel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub rules: Vec<Arc<RulePlan>>,
    /// Channel-scope stale rules (indices into [`RuleSet::stale_rules`]).
    pub stale: Vec<usize>,
    /// Device-scope stale rules this channel's selectors select (its device is watched).
    pub device_stale: Vec<usize>,
    pub checks: ChannelChecks,
}

impl RuleSet {
    /// Resolve what applies to channel `c`, sharing an equal plan resolved before.
    pub(crate) fn plan(&self, c: &ChannelInfo, cache: &mut PlanCache) -> Arc<Plan> {
        let rules: Vec<(usize, Option<usize>)> = self
            .channel_rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.selector.matches(c))
            .map(|(i, r)| {
                let o = r
                    .overrides
                    .iter()
                    .position(|o| glob_match(&o.pattern, &c.key));
                (i, o)
            })
            .collect();
        let stale: Vec<usize> = (0..self.stale_rules.len())
            .filter(|&i| self.stale_rules[i].selector.matches(c))
            .collect();
        let checks: Vec<usize> = (0..self.checks.len())
            .filter(|&i| self.checks[i].selector.matches(c))
            .collect();
        let key = PlanKey {
            rules,
            stale,
            checks,
        };
        if let Some(p) = cache.plans.get(&key) {
            return Arc::clone(p);
        }
        let plan = Arc::new(self.resolve_plan(&key, &mut cache.rules));
        cache.plans.insert(key, Arc::clone(&plan));
        plan
    }

    fn resolve_plan(
        &self,
        key: &PlanKey,
        cache: &mut HashMap<(usize, Option<usize>), Option<Arc<RulePlan>>>,
    ) -> Plan {
        let mut rules: Vec<Arc<RulePlan>> = key
            .rules
            .iter()
            .filter_map(|&(i, o)| {
                let r = self.channel_rules.get(i)?;
                cache
                    .entry((i, o))
                    .or_insert_with(|| resolve(i, r, o).map(Arc::new))
                    .clone()
            })
            .collect();
        // A filtered collect starts at 4 places; a channel matches one or two rules.
        rules.shrink_to_fit();
        let mut stale = Vec::new();
        let mut device_stale = Vec::new();
        for &i in &key.stale {
            match self.stale_rules.get(i).map(|s| s.scope) {
                Some(StaleScope::Channel) => stale.push(i),
                Some(StaleScope::Device) => device_stale.push(i),
                None => {}
            }
        }
        let mut checks = ChannelChecks {
            level: DEFAULT_FAULT_LEVEL,
            bad_quality: None,
            range: None,
            stuck: None,
            spike: None,
        };
        // For each check type, the first matching entry that sets it applies.
        let mut level = None;
        for e in key.checks.iter().filter_map(|&i| self.checks.get(i)) {
            level = level.or(e.level);
            checks.bad_quality = checks.bad_quality.or(e.bad_quality);
            checks.range = checks.range.or(e.range);
            checks.stuck = checks.stuck.or(e.stuck);
            checks.spike = checks.spike.or(e.spike);
        }
        checks.level = level.unwrap_or(DEFAULT_FAULT_LEVEL);
        Plan {
            rules,
            stale,
            device_stale,
            checks,
        }
    }
}

/// Apply override `over` (the first that matches the channel); `None` when it disables the
/// rule for the channel.
fn resolve(index: usize, r: &ChannelRule, over: Option<usize>) -> Option<RulePlan> {
    let o = over.and_then(|i| r.overrides.get(i));
    if o.is_some_and(|o| !o.enabled) {
        return None;
    }
    let upper = o.and_then(|o| o.upper.clone()).or_else(|| r.upper.clone());
    let lower = o.and_then(|o| o.lower.clone()).or_else(|| r.lower.clone());
    let orient = |b: Option<Band>| {
        b.map(|b| {
            let t = b.oriented(r.deadband);
            (b, t)
        })
    };
    Some(RulePlan {
        rule: index,
        bands: [orient(upper), orient(lower)],
        baseline: o.and_then(|o| o.baseline).or(r.baseline),
    })
}
