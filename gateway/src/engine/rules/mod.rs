//! Alert rules: which conditions raise which alerts, and the evaluator that watches every reading
//! for them (issue 4).
//!
//! Owns the `[alerts]` configuration ([`AlertsConfig`] → [`RuleSet`]), channel selection
//! ([`selector`]), the confirmation/hysteresis state machines (`condition`), the least-squares
//! rate window (`window`, used by the derived channels), and the [`Evaluator`] with its
//! serialisable [`EvaluatorState`]. Does not compute rates, differences or tilts: a rule of
//! those kinds brings its own derived block ([`RuleSet::derived_blocks`], computed by
//! [`crate::engine::derived`]) and judges the readings that block stores. Pure: no I/O, no
//! clock (every call takes `now`), no delivery. The engine task owns an [`Evaluator`], feeds it
//! each reading and a periodic tick, spools the [`crate::alert::Alert`] events it returns, and
//! persists [`Evaluator::snapshot`].
//!
//! # Rule kinds (standards in `docs/DOMAIN.md`)
//! - `absolute`: the value against `upper` and/or `lower` levels (cumulative settlement).
//! - `change`: the value minus a baseline, `baseline = ...` or the channel's first good reading.
//! - `rate`: the least-squares slope over `window`, per `per` (default 1d: mm/d, °C/d), once the
//!   window holds `min_points` readings spanning `min_span` (§Settlement, §Data quality): the
//!   rule's derived `rate` channel of each selected channel, `<channel>.<rule>`.
//! - `difference`: `a − b` for listed pairs (core − surface temperature, GB 50496 §3.0.4-2;
//!   differential settlement with `abs = true`): the rule's derived channel of each pair.
//! - `tilt`: `|a − b| / distance` for listed pairs (local tilt, GB 50007 Table 5.3.4: 0.002):
//!   the rule's derived `tilt` channel of each pair (signed; the rule judges its magnitude).
//! - `stale`: no reading for `after`, per channel or per device (a device-fault alert).
//!
//! Levels blue / yellow / orange / red (注意 / 警示 / 警戒 / 警报), any subset, as values or as
//! fractions of `alarm` (70 / 85 / 100 %, docs/DOMAIN.md §Levels). Raising and escalating need
//! `confirm` (default 3 readings in a row); de-escalating and clearing need the value back past a
//! deadband (default 10 % of the level's threshold, §Data quality) for `clear.count` readings.
//!
//! A pair's derived value combines each channel's reading nearest in time within `max_skew`
//! (default 10m); each derived reading is one observation for `confirm` and `clear`. The alert
//! of a rate, difference or tilt rule names the channels its derived channel was made from,
//! so its id and message are those these rules always had (state saved when the rules computed
//! the values themselves is carried over, `evaluator.rs`).
//!
//! # Sensor checks
//! Readings whose quality is not good, out of the physical range, stuck, or spikes never reach a
//! rule; they raise device-fault alerts (kind `device_fault`, rule `bad-quality`,
//! `out-of-range`, `stuck`, `spike`), for the technician, not the bureau. Every check runs only
//! on the channels of the `[[alerts.checks]]` entries that configure it (`bad_quality = {}`: 3
//! bad readings in a row, cleared by 3 good ones); without `[alerts]` no check runs. A reading
//! judged out of range, stuck or a spike is stored with its value and the quality code 400, 401
//! or 402 ([`crate::model::Quality`]); a jump is stored only once its spike verdict is known
//! ([`Evaluator::take_decided`], docs/DOMAIN.md §Data quality).
//!
//! # Bounds
//! Memory per channel: one condition pair per matching rule and a fixed set of fault states (a
//! rate rule's window of at most [`RATE_BUCKETS`] + 1 buckets is its derived channel's, in
//! [`crate::engine::derived`]); per device, one condition per device-scope stale rule. Active alerts are at most one per condition. The
//! number of channels is what the sources produce (configured Modbus points, MQTT sensors seen).
//! A snapshot of a channel with one 100-day rate window is under 32 KiB of JSON.
//!
//! # Example
//! ```toml
//! [alerts]
//! language = "zh"                       # or "en"
//!
//! [[alerts.rules]]
//! name = "settlement-total"
//! kind = "absolute"
//! select = { kind = "settlement", tags = { structure = "A栋" } }
//! upper = { alarm = 30.0, yellow = 0.7, orange = 0.85, red = 1.0 }   # 21 / 25.5 / 30 mm
//! confirm = { count = 3 }
//! clear = { deadband = 0.1 }
//! [[alerts.rules.overrides]]
//! channel = "lev-a1/ch3"                # a point near the old building: tighter
//! upper = { alarm = 20.0 }              # keeps the rule's fractions: 14 / 17 / 20 mm
//!
//! [[alerts.rules]]
//! name = "settlement-rate"
//! kind = "rate"
//! select = { kind = "settlement" }
//! window = "1d"
//! per = "1d"
//! min_points = 4
//! upper = { yellow = 1.4, red = 2.0 }   # mm/d
//! confirm = { for = "2d" }              # "2 mm/d for 2 consecutive days"
//!
//! [[alerts.rules]]
//! name = "core-surface"
//! kind = "difference"
//! label = "里表温差"
//! pairs = [{ a = "slab-3f-therm/t1", b = "slab-3f-therm/t2" }]
//! upper = { alarm = 25.0, yellow = 0.8, red = 1.0 }                 # GB 50496 §3.0.4-2
//!
//! [[alerts.rules]]
//! name = "cooling-rate"
//! kind = "rate"
//! label = "降温速率"
//! select = { device = "slab-3f-therm", point = "t1" }
//! window = "1d"
//! lower = { alarm = -2.0, yellow = 0.8, red = 1.0 }                 # GB 50496 §3.0.4-3
//!
//! [[alerts.rules]]
//! name = "local-tilt"
//! kind = "tilt"
//! unit = "mm"
//! pairs = [{ a = "lev-a1/ch1", b = "lev-a1/ch2", distance_m = 8.0 }]
//! upper = { alarm = 0.002, yellow = 0.7, orange = 0.85, red = 1.0 } # GB 50007 Table 5.3.4
//!
//! [[alerts.rules]]
//! name = "no-data"
//! kind = "stale"
//! select = {}
//! scope = "device"
//! after = "30m"
//! level = "yellow"
//!
//! [[alerts.checks]]
//! select = { kind = "temperature" }
//! range = { min = -40.0, max = 85.0 }   # docs/DOMAIN.md §Data quality
//! stuck = { count = 36, for = "6h" }
//! spike = { jump = 5.0, within = "10m" }
//! bad_quality = { count = 3, clear_count = 3 }
//! ```

mod condition;
mod config;
mod evaluator;
pub(crate) mod fingerprint;
mod plan;
pub mod selector;
mod window;

pub(crate) use config::per_suffix;
pub use config::{
    AlertsConfig, BandConfig, CheckConfig, ClearConfig, ConfirmConfig, FaultConfirmConfig,
    LengthUnit, OverrideConfig, PairConfig, RangeConfig, RuleConfig, RuleKind, RuleProblem,
    RuleSet, SpikeConfig, StaleScope, StuckConfig, BAD_QUALITY_CHECK, DEFAULT_BAD_QUALITY_COUNT,
    DEFAULT_CONFIRM_COUNT, DEFAULT_DEADBAND_FRACTION, DEFAULT_FAULT_CLEAR_COUNT,
    DEFAULT_FAULT_LEVEL, DEFAULT_PAIR_MAX_SKEW, DEFAULT_RANGE_COUNT, DEFAULT_RATE_MIN_POINTS,
    DEFAULT_RATE_PER, DEFAULT_SPIKE_WITHIN, MAX_LEVEL_FRACTION, MIN_RATE_WINDOW, RANGE_CHECK,
    SPIKE_CHECK, STUCK_CHECK,
};
pub(crate) use config::{ChannelRule, Origin, Pair, StaleRule};
pub use evaluator::{
    channel_entry_key, AckRefused, Evaluator, EvaluatorState, HeldVerdict, RestoreError,
    RestoreReport, StateScope, Verdict, ENTRY_FORMAT, MAX_CHANNEL_ENTRIES_PER_SAVE, STATE_FORMAT,
};
pub use selector::{ChannelInfo, SelectorConfig};
pub use window::RATE_BUCKETS;
pub(crate) use window::{LineFit, OpenBucket, RateWindow};

#[cfg(test)]
mod tests;
