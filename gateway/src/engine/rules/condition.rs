//! The state machines behind every alert: confirmation before raising, hysteresis before
//! clearing, and level changes in between.
//!
//! Owns [`Confirm`], [`Thresholds`] (one band, oriented so that "worse" is always "larger"),
//! [`Condition`] (a four-level quality condition) and [`FaultCondition`] (a raise/clear device
//! fault). They are plain data, serialisable, and take the time of each observation as an
//! argument; they know nothing about channels, rules or messages (the evaluator turns their
//! [`Step`]s into alerts).
//!
//! # Why per-level streaks
//! docs/DOMAIN.md §Data quality: raise only after the condition held for N readings (or a duration), and drop
//! a level only after the value stayed below about 90 % of that level's threshold for M readings.
//! A [`Condition`] counts, for every level, the current run of readings at or above its threshold
//! (`up`) and the current run below its clearing threshold (`down`). The alert goes to the
//! highest level whose `up` run is confirmed; it leaves level L once L's `down` run is confirmed,
//! for the highest lower level whose `down` run is not (or clears). Readings between a level's
//! clearing threshold and its threshold extend neither run: that gap is the hysteresis.

use serde::{Deserialize, Serialize};

use crate::alert::Level;
use crate::model::TimestampNs;

/// How long a condition must hold before it counts: at least `count` consecutive observations
/// **and** at least `duration_ns` from the first of them to the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirm {
    /// Consecutive observations (at least 1).
    pub count: u32,
    /// Time from the first to the current observation, ns (0: no time requirement).
    pub duration_ns: i64,
}

impl Confirm {
    /// Confirmed by the first observation.
    pub const IMMEDIATE: Self = Self {
        count: 1,
        duration_ns: 0,
    };

    /// True when `streak` satisfies both requirements at time `now`.
    #[must_use]
    pub fn met(&self, streak: &Streak, now: TimestampNs) -> bool {
        streak.count >= self.count.max(1) && now.saturating_sub(streak.since) >= self.duration_ns
    }
}

/// A run of consecutive observations that satisfied something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Streak {
    /// Observations in the run (0: no run).
    pub count: u32,
    /// Time of the first observation of the run.
    pub since: TimestampNs,
}

impl Streak {
    /// Extend the run with an observation at `ts` (starting it if there was none).
    pub fn bump(&mut self, ts: TimestampNs) {
        if self.count == 0 {
            self.since = ts;
        }
        self.count = self.count.saturating_add(1);
    }

    /// End the run.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// One threshold band, oriented so that a larger value is worse: an upper band as written, a
/// lower band negated (value, thresholds and clearing thresholds alike). Index = level index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Threshold of each level, oriented; `None` for a level the rule does not use.
    pub at: [Option<f64>; 4],
    /// Clearing threshold of each level, oriented: the threshold minus its deadband.
    pub clear: [f64; 4],
}

impl Thresholds {
    /// The configured levels, lowest first.
    pub fn levels(&self) -> impl Iterator<Item = usize> + '_ {
        (0..4).filter(|&k| self.at[k].is_some())
    }
}

/// An alert in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    /// The stable alert id.
    pub id: String,
    /// The current level.
    pub level: Level,
    /// Data time of the raise.
    pub started_at: TimestampNs,
    /// Sequence number of the last event sent (0 = the raise).
    pub seq: u32,
}

impl Active {
    /// The sequence number for the next event.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.saturating_add(1);
        self.seq
    }
}

/// What an observation did to a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Raise a new alert at this level.
    Raise(Level),
    /// Change the level of the active alert.
    Change {
        /// The level before.
        from: Level,
        /// The level now.
        to: Level,
    },
    /// The active alert is over.
    Clear(Level),
}

/// A four-level quality condition of one rule, one side, one channel (or pair).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// The alert in progress, if any.
    pub active: Option<Active>,
    /// Per level: the run of observations at or above the threshold.
    pub up: [Streak; 4],
    /// Per level: the run of observations below the clearing threshold.
    pub down: [Streak; 4],
}

impl Condition {
    /// Feed one oriented observation `m` at time `ts`. Returns what changed, if anything. The
    /// caller records the alert in [`Condition::active`] on a raise (it owns the id).
    pub fn observe(
        &mut self,
        m: f64,
        ts: TimestampNs,
        th: &Thresholds,
        confirm: Confirm,
        clear: Confirm,
    ) -> Option<Step> {
        for k in 0..4 {
            if let Some(t) = th.at[k] {
                if m >= t {
                    self.up[k].bump(ts);
                } else {
                    self.up[k].reset();
                }
                // Clearing runs only matter while an alert is active; counting them otherwise
                // would change the saved state with every normal reading (the rule state is saved
                // per channel only when it changed, to spare the SD card). Equivalent: a raise
                // at level k needs readings at or above every threshold up to k, which are above
                // their clearing thresholds, so these runs would be empty at the raise anyway.
                if m < th.clear[k] && self.active.is_some() {
                    self.down[k].bump(ts);
                } else {
                    self.down[k].reset();
                }
            } else {
                self.up[k].reset();
                self.down[k].reset();
            }
        }
        let current = self.active.as_ref().map(|a| a.level.index());
        let confirmed_up = th.levels().filter(|&k| confirm.met(&self.up[k], ts)).max();
        if let Some(k) = confirmed_up {
            match current {
                None => return Some(Step::Raise(Level::ALL[k])),
                Some(c) if k > c => {
                    return Some(Step::Change {
                        from: Level::ALL[c],
                        to: Level::ALL[k],
                    })
                }
                Some(_) => {}
            }
        }
        let c = current?;
        // The highest configured level at or below the current one that the value has not
        // (confirmed) left. A level no longer configured (rules changed over a restart) is left
        // at once.
        let stay = th
            .levels()
            .filter(|&k| k <= c && !clear.met(&self.down[k], ts))
            .max();
        match stay {
            Some(k) if k == c => None,
            Some(k) => Some(Step::Change {
                from: Level::ALL[c],
                to: Level::ALL[k],
            }),
            None => Some(Step::Clear(Level::ALL[c])),
        }
    }
}

/// A device-fault condition: raised after `raise` consecutive bad observations, cleared after
/// `clear_count` consecutive good ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultCondition {
    /// The alert in progress, if any.
    pub active: Option<Active>,
    /// The current run of bad observations.
    pub bad: Streak,
    /// The current run of good observations.
    pub good: u32,
}

/// What an observation did to a fault condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultStep {
    /// Raise the fault alert.
    Raise,
    /// Clear it.
    Clear,
}

impl FaultCondition {
    /// Feed one observation (`bad` or good) at `ts`.
    pub fn observe(
        &mut self,
        bad: bool,
        ts: TimestampNs,
        raise: Confirm,
        clear_count: u32,
    ) -> Option<FaultStep> {
        if bad {
            self.bad.bump(ts);
            self.good = 0;
            (self.active.is_none() && raise.met(&self.bad, ts)).then_some(FaultStep::Raise)
        } else {
            self.bad.reset();
            // Counted only while raised (only a clear uses it; a raise resets it), so that a
            // healthy channel's saved state does not change with every reading.
            if self.active.is_some() {
                self.good = self.good.saturating_add(1);
            }
            (self.active.is_some() && self.good >= clear_count.max(1)).then_some(FaultStep::Clear)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    /// Upper band 20 / 25 / 30 (yellow, orange, red) with a 10 % deadband: clearing at 18 / 22.5 / 27.
    fn band() -> Thresholds {
        Thresholds {
            at: [None, Some(20.0), Some(25.0), Some(30.0)],
            clear: [0.0, 18.0, 22.5, 27.0],
        }
    }

    /// Run `values` (one per second) through a condition; return the steps with their index.
    fn run(values: &[f64], confirm: Confirm, clear: Confirm) -> Vec<(usize, Step)> {
        let th = band();
        let mut c = Condition::default();
        let mut out = Vec::new();
        for (i, &v) in values.iter().enumerate() {
            let ts = i64::try_from(i).expect("small") * S;
            if let Some(step) = c.observe(v, ts, &th, confirm, clear) {
                match step {
                    Step::Raise(l) => {
                        c.active = Some(Active {
                            id: "x".into(),
                            level: l,
                            started_at: ts,
                            seq: 0,
                        })
                    }
                    Step::Change { to, .. } => c.active.as_mut().expect("active").level = to,
                    Step::Clear(_) => c.active = None,
                }
                out.push((i, step));
            }
        }
        out
    }

    const THREE: Confirm = Confirm {
        count: 3,
        duration_ns: 0,
    };

    /// (name, values, confirmation, expected steps with their reading index).
    type Case = (&'static str, Vec<f64>, Confirm, Vec<(usize, Step)>);

    #[test]
    fn condition_table() {
        use Level::{Orange, Red, Yellow};
        let cases: Vec<Case> = vec![
            (
                "two readings over do not raise with count 3",
                vec![21.0, 21.0, 10.0, 21.0],
                THREE,
                vec![],
            ),
            (
                "three readings over raise on the third",
                vec![21.0, 21.0, 21.0],
                THREE,
                vec![(2, Step::Raise(Yellow))],
            ),
            (
                "a streak through several levels raises at the level all of it reached",
                vec![31.0, 21.0, 31.0],
                THREE,
                vec![(2, Step::Raise(Yellow))],
            ),
            (
                "escalation needs its own confirmation",
                vec![21.0, 21.0, 21.0, 26.0, 26.0, 26.0, 31.0],
                THREE,
                vec![
                    (2, Step::Raise(Yellow)),
                    (
                        5,
                        Step::Change {
                            from: Yellow,
                            to: Orange,
                        },
                    ),
                ],
            ),
            (
                "inside the deadband nothing changes (hysteresis)",
                vec![21.0, 21.0, 21.0, 19.0, 19.0, 19.0, 19.0],
                THREE,
                vec![(2, Step::Raise(Yellow))],
            ),
            (
                "below the clearing threshold for 3 readings clears",
                vec![21.0, 21.0, 21.0, 17.9, 17.9, 17.9],
                THREE,
                vec![(2, Step::Raise(Yellow)), (5, Step::Clear(Yellow))],
            ),
            (
                "a rebound inside the confirmation restarts the clear count",
                vec![21.0, 21.0, 21.0, 17.0, 17.0, 21.0, 17.0, 17.0, 17.0],
                THREE,
                vec![(2, Step::Raise(Yellow)), (8, Step::Clear(Yellow))],
            ),
            (
                "de-escalation lands on the highest level not left",
                vec![31.0, 31.0, 31.0, 24.0, 24.0, 24.0, 10.0, 10.0, 10.0],
                THREE,
                vec![
                    (2, Step::Raise(Red)),
                    (
                        5,
                        Step::Change {
                            from: Red,
                            to: Orange,
                        },
                    ),
                    (8, Step::Clear(Orange)),
                ],
            ),
            (
                "a fall straight to zero clears in one event",
                vec![31.0, 31.0, 31.0, 0.0, 0.0, 0.0],
                THREE,
                vec![(2, Step::Raise(Red)), (5, Step::Clear(Red))],
            ),
            (
                "a value exactly at the threshold counts (alarm when value >= threshold)",
                vec![20.0],
                Confirm::IMMEDIATE,
                vec![(0, Step::Raise(Yellow))],
            ),
            (
                "duration confirmation: 3 readings but only 2 s",
                vec![21.0, 21.0, 21.0, 21.0],
                Confirm {
                    count: 1,
                    duration_ns: 3 * S,
                },
                vec![(3, Step::Raise(Yellow))],
            ),
        ];
        for (name, values, confirm, want) in cases {
            assert_eq!(run(&values, confirm, confirm), want, "{name}");
        }
    }

    #[test]
    fn fault_condition_raises_after_n_bad_and_clears_after_m_good() {
        let mut f = FaultCondition::default();
        let raise = Confirm {
            count: 3,
            duration_ns: 0,
        };
        let seq = [
            true, true, false, true, true, true, false, false, true, false, false, false,
        ];
        let mut steps = Vec::new();
        for (i, &bad) in seq.iter().enumerate() {
            let ts = i64::try_from(i).expect("small") * S;
            if let Some(s) = f.observe(bad, ts, raise, 3) {
                match s {
                    FaultStep::Raise => {
                        f.active = Some(Active {
                            id: "f".into(),
                            level: Level::Yellow,
                            started_at: ts,
                            seq: 0,
                        });
                    }
                    FaultStep::Clear => f.active = None,
                }
                steps.push((i, s));
            }
        }
        assert_eq!(steps, vec![(5, FaultStep::Raise), (11, FaultStep::Clear)]);
    }
}
