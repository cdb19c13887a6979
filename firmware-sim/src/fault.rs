//! Scheduled faults: what the scenario's `[[faults]]` entries say and how a value is altered.
//!
//! Owns the fault table format (`RawFault`, one flat table per fault so every wrong field is
//! named by its path), its validation into [`FaultSpec`] (window, target, [`Action`]), the
//! per-kind target rules ([`TargetKind`], [`check_target`]) and the value faults applied to a
//! reading ([`faulted_value`]). Windows are `[start, end)` of simulated time since the scenario
//! started, so a run is the same whatever the speed or clock mode. Transports and nodes act on
//! the other kinds ([`crate::device`], [`crate::rtu`], [`crate::tcp`], [`crate::nodes`],
//! [`crate::mqtt`]); [`crate::site`] records every window in the truth.
//!
//! ```toml
//! [[faults]]
//! kind = "spike"            # offline stuck spike drift dropout exception slow garbage bad_crc
//!                           # malformed oversized clock_skew status_flag
//! device = "block-a-lvl"
//! point = "ch3"             # optional: one point (a CIGEM point id covers all its fields)
//! start = "2h"              # since the scenario start
//! end = "3h"                # optional: absent = until the run ends
//! magnitude = 25.0          # spike: added to the reading (reading units)
//! every = 6                 # spike: one spiked sample every N samples (default 1)
//! # rate_per_day (drift), probability (dropout, default 1), code (exception: illegal_address,
//! # device_failure, device_busy), delay (slow, e.g. "900ms"), bytes (garbage, default 8;
//! # oversized, default 131072), offset_s (clock_skew, signed), state (status_flag)
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::truth::FaultKind;
use crate::validation::Invalid;

/// Seconds per day.
const SECONDS_PER_DAY: f64 = 86_400.0;
/// Longest reply delay of a `slow` fault (beyond this it is an offline device).
pub const MAX_SLOW_DELAY: Duration = Duration::from_secs(60);
/// Default garbage bytes before a reply.
pub const DEFAULT_GARBAGE_BYTES: usize = 8;
/// Most garbage bytes before a reply (one RTU frame, Modbus over serial line V1.02 §2.5.1.1).
pub const MAX_GARBAGE_BYTES: usize = 256;
/// Default size of an oversized payload: twice the gateway's default 64 KiB payload limit.
pub const DEFAULT_OVERSIZED_BYTES: usize = 128 * 1024;
/// Largest oversized payload (the gateway's own configurable ceiling is 4 MiB).
pub const MAX_OVERSIZED_BYTES: usize = 4 * 1024 * 1024;
/// Largest clock offset, s (ten years: a dead RTC reads 1970 or 2000).
pub const MAX_CLOCK_OFFSET_S: i64 = 10 * 366 * 86_400;
/// Default flag value of a Modbus status point under `status_flag` (bit 0 = fault).
pub const DEFAULT_MODBUS_FLAG: i64 = 1;
/// Default CIGEM `sensor_state` under `status_flag`: −2, data error (docs/DOMAIN.md §CIGEM).
pub const DEFAULT_CIGEM_STATE: i64 = -2;

/// Which Modbus exception a device answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionName {
    /// 02: illegal data address (a point's registers refuse reads).
    IllegalAddress,
    /// 04: server device failure.
    DeviceFailure,
    /// 06: server device busy.
    DeviceBusy,
}

impl ExceptionName {
    /// The exception code byte (Modbus application protocol V1.1b3 §7).
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::IllegalAddress => 0x02,
            Self::DeviceFailure => 0x04,
            Self::DeviceBusy => 0x06,
        }
    }
}

/// `[[faults]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFault {
    kind: FaultKind,
    pub device: String,
    #[serde(default)]
    pub point: Option<String>,
    start: String,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    magnitude: Option<f64>,
    #[serde(default)]
    every: Option<u32>,
    #[serde(default)]
    rate_per_day: Option<f64>,
    #[serde(default)]
    probability: Option<f64>,
    #[serde(default)]
    code: Option<ExceptionName>,
    #[serde(default)]
    delay: Option<String>,
    #[serde(default)]
    bytes: Option<usize>,
    #[serde(default)]
    offset_s: Option<i64>,
    #[serde(default)]
    state: Option<i64>,
}

/// What a fault does, with its numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// No answers / no messages.
    Offline,
    /// The reading freezes at its value at the first sample of the window.
    Stuck,
    /// `magnitude` added to one sample in `every`, starting with the first of the window.
    Spike {
        /// Added to the reading.
        magnitude: f64,
        /// Samples between spikes (≥ 1).
        every: u32,
    },
    /// `per_day × days since the start` added to the reading.
    Drift {
        /// Reading units per day.
        per_day: f64,
    },
    /// Each sample of the window is dropped with this probability.
    Dropout {
        /// In (0, 1].
        probability: f64,
    },
    /// Reads answer this exception.
    Exception(ExceptionName),
    /// Replies wait this long (wall time).
    Slow(Duration),
    /// This many random bytes precede each reply.
    Garbage {
        /// Byte count.
        bytes: usize,
    },
    /// Replies carry a wrong CRC.
    BadCrc,
    /// Payloads are broken.
    Malformed,
    /// Payloads are padded to at least this size.
    Oversized {
        /// Byte count.
        bytes: usize,
    },
    /// Device time is off by this many seconds.
    ClockSkew {
        /// Signed offset, s.
        offset_s: i64,
    },
    /// The device's own fault flag: Modbus status points read `state`; a CIGEM point's
    /// `sensor_state` is `state` and its value the error sentinel.
    StatusFlag {
        /// The value given, if any (the default depends on the device type).
        state: Option<i64>,
    },
}

/// A validated fault.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// Target device.
    pub device: String,
    /// Target point, if one.
    pub point: Option<String>,
    /// Window start since the scenario start.
    pub start: Duration,
    /// Window end since the scenario start (`None`: until the run ends).
    pub end: Option<Duration>,
    /// What it does.
    pub action: Action,
}

/// Device types, for the per-kind target rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A Modbus TCP slave.
    ModbusTcp,
    /// A slave on an RS-485 line.
    ModbusRtu,
    /// An MQTT JSON node.
    JsonNode,
    /// A CIGEM device.
    Cigem,
}

impl TargetKind {
    const fn is_modbus(self) -> bool {
        matches!(self, Self::ModbusTcp | Self::ModbusRtu)
    }
}

/// Whether `kind` can hit a device of type `target`; the message says which can.
///
/// # Errors
/// The kind does not apply to that device type.
pub fn check_target(kind: FaultKind, target: TargetKind) -> Result<(), String> {
    let ok = match kind {
        FaultKind::Offline
        | FaultKind::Stuck
        | FaultKind::Spike
        | FaultKind::Drift
        | FaultKind::Dropout
        | FaultKind::ClockSkew => true,
        FaultKind::Exception | FaultKind::Slow => target.is_modbus(),
        FaultKind::Garbage | FaultKind::BadCrc => target == TargetKind::ModbusRtu,
        FaultKind::Malformed | FaultKind::Oversized => !target.is_modbus(),
        FaultKind::StatusFlag => target != TargetKind::JsonNode,
    };
    if ok {
        return Ok(());
    }
    let which = match kind {
        FaultKind::Exception | FaultKind::Slow => "Modbus devices",
        FaultKind::Garbage | FaultKind::BadCrc => "slaves on an RTU bus (modbus_rtu)",
        FaultKind::Malformed | FaultKind::Oversized => "MQTT nodes (json_nodes, cigem)",
        _ => "Modbus devices and CIGEM devices",
    };
    Err(format!("a {kind} fault applies only to {which}"))
}

impl FaultSpec {
    /// The kind.
    #[must_use]
    pub const fn kind(&self) -> FaultKind {
        match self.action {
            Action::Offline => FaultKind::Offline,
            Action::Stuck => FaultKind::Stuck,
            Action::Spike { .. } => FaultKind::Spike,
            Action::Drift { .. } => FaultKind::Drift,
            Action::Dropout { .. } => FaultKind::Dropout,
            Action::Exception(_) => FaultKind::Exception,
            Action::Slow(_) => FaultKind::Slow,
            Action::Garbage { .. } => FaultKind::Garbage,
            Action::BadCrc => FaultKind::BadCrc,
            Action::Malformed => FaultKind::Malformed,
            Action::Oversized { .. } => FaultKind::Oversized,
            Action::ClockSkew { .. } => FaultKind::ClockSkew,
            Action::StatusFlag { .. } => FaultKind::StatusFlag,
        }
    }

    /// True if the window covers `t_s` seconds after the scenario start.
    #[must_use]
    pub fn active_at(&self, t_s: i64) -> bool {
        let Ok(t) = u64::try_from(t_s) else {
            return false;
        };
        let t = Duration::from_secs(t);
        t >= self.start && self.end.is_none_or(|e| t < e)
    }

    /// Index of the first sample in the window, for samples every `interval_s` seconds.
    #[must_use]
    pub fn first_index(&self, interval_s: i64) -> u64 {
        let interval = u128::from(interval_s.max(1).unsigned_abs());
        u64::try_from(self.start.as_nanos().div_ceil(interval * 1_000_000_000)).unwrap_or(u64::MAX)
    }

    /// True if the fault covers `point` (a CIGEM point id also covers its `id.field`s).
    #[must_use]
    pub fn applies_to(&self, point: &str) -> bool {
        match &self.point {
            None => true,
            Some(p) => {
                point == p
                    || point
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            }
        }
    }

    /// The number recorded in the truth's `param` (see [`crate::truth`]); `stuck` has none here
    /// (the site adds the frozen value when it knows it).
    #[must_use]
    pub fn param(&self) -> Option<f64> {
        match self.action {
            Action::Offline | Action::Stuck | Action::BadCrc | Action::Malformed => None,
            Action::Spike { magnitude, .. } => Some(magnitude),
            Action::Drift { per_day } => Some(per_day),
            Action::Dropout { probability } => Some(probability),
            Action::Exception(e) => Some(f64::from(e.code())),
            Action::Slow(d) => Some(d.as_secs_f64() * 1000.0),
            Action::Garbage { bytes } | Action::Oversized { bytes } => {
                u32::try_from(bytes).ok().map(f64::from)
            }
            #[allow(clippy::cast_precision_loss)] // |offset| ≤ MAX_CLOCK_OFFSET_S ≪ 2^53
            Action::ClockSkew { offset_s } => Some(offset_s as f64),
            #[allow(clippy::cast_precision_loss)] // small codes
            Action::StatusFlag { state } => state.map(|s| s as f64),
        }
    }

    /// Validates one `[[faults]]` entry at `at` (`faults[3]`); the target is checked by the
    /// scenario, which knows the devices.
    pub(crate) fn validate(at: &str, raw: RawFault) -> Result<Self, Invalid> {
        let p = |f: &str| format!("{at}.{f}");
        let kind = raw.kind;
        // Which optional fields a kind takes; any other set field is an error.
        let fields: [(&str, bool, &[FaultKind]); 9] = [
            ("magnitude", raw.magnitude.is_some(), &[FaultKind::Spike]),
            ("every", raw.every.is_some(), &[FaultKind::Spike]),
            (
                "rate_per_day",
                raw.rate_per_day.is_some(),
                &[FaultKind::Drift],
            ),
            (
                "probability",
                raw.probability.is_some(),
                &[FaultKind::Dropout],
            ),
            ("code", raw.code.is_some(), &[FaultKind::Exception]),
            ("delay", raw.delay.is_some(), &[FaultKind::Slow]),
            (
                "bytes",
                raw.bytes.is_some(),
                &[FaultKind::Garbage, FaultKind::Oversized],
            ),
            ("offset_s", raw.offset_s.is_some(), &[FaultKind::ClockSkew]),
            ("state", raw.state.is_some(), &[FaultKind::StatusFlag]),
        ];
        for (field, set, kinds) in fields {
            if set && !kinds.contains(&kind) {
                return Err((p(field), format!("not used by a {kind} fault")));
            }
        }
        let takes_point = matches!(
            kind,
            FaultKind::Stuck
                | FaultKind::Spike
                | FaultKind::Drift
                | FaultKind::Exception
                | FaultKind::StatusFlag
        );
        if raw.point.is_some() && !takes_point {
            return Err((
                p("point"),
                format!("a {kind} fault concerns the whole device: remove `point`"),
            ));
        }
        let duration = |f: &str, text: &str| {
            humantime::parse_duration(text).map_err(|e| {
                (
                    p(f),
                    format!("{text:?}: {e} (write e.g. \"90min\" or \"2d\")"),
                )
            })
        };
        let start = duration("start", &raw.start)?;
        let end = match &raw.end {
            Some(e) => {
                let end = duration("end", e)?;
                if end <= start {
                    return Err((p("end"), format!("must be after start ({:?})", raw.start)));
                }
                Some(end)
            }
            None => None,
        };
        let need = |f: &str| (p(f), format!("a {kind} fault needs `{f}`"));
        let action = match kind {
            FaultKind::Offline => Action::Offline,
            FaultKind::Stuck => Action::Stuck,
            FaultKind::Spike => {
                let magnitude = raw.magnitude.ok_or_else(|| need("magnitude"))?;
                if !magnitude.is_finite() || magnitude == 0.0 {
                    return Err((p("magnitude"), "must be finite and non-zero".into()));
                }
                let every = raw.every.unwrap_or(1);
                if every == 0 {
                    return Err((p("every"), "must be at least 1".into()));
                }
                Action::Spike { magnitude, every }
            }
            FaultKind::Drift => {
                let per_day = raw.rate_per_day.ok_or_else(|| need("rate_per_day"))?;
                if !per_day.is_finite() || per_day == 0.0 {
                    return Err((p("rate_per_day"), "must be finite and non-zero".into()));
                }
                Action::Drift { per_day }
            }
            FaultKind::Dropout => {
                let probability = raw.probability.unwrap_or(1.0);
                if !(probability > 0.0 && probability <= 1.0) {
                    return Err((p("probability"), format!("{probability} is outside (0, 1]")));
                }
                Action::Dropout { probability }
            }
            FaultKind::Exception => Action::Exception(raw.code.ok_or_else(|| need("code"))?),
            FaultKind::Slow => {
                let text = raw.delay.as_deref().ok_or_else(|| need("delay"))?;
                let delay = duration("delay", text)?;
                if delay.is_zero() || delay > MAX_SLOW_DELAY {
                    return Err((p("delay"), format!("must be within 1ms-{MAX_SLOW_DELAY:?}")));
                }
                Action::Slow(delay)
            }
            FaultKind::Garbage => {
                let bytes = raw.bytes.unwrap_or(DEFAULT_GARBAGE_BYTES);
                if bytes == 0 || bytes > MAX_GARBAGE_BYTES {
                    return Err((p("bytes"), format!("must be within 1-{MAX_GARBAGE_BYTES}")));
                }
                Action::Garbage { bytes }
            }
            FaultKind::BadCrc => Action::BadCrc,
            FaultKind::Malformed => Action::Malformed,
            FaultKind::Oversized => {
                let bytes = raw.bytes.unwrap_or(DEFAULT_OVERSIZED_BYTES);
                if bytes == 0 || bytes > MAX_OVERSIZED_BYTES {
                    return Err((
                        p("bytes"),
                        format!("must be within 1-{MAX_OVERSIZED_BYTES}"),
                    ));
                }
                Action::Oversized { bytes }
            }
            FaultKind::ClockSkew => {
                let offset_s = raw.offset_s.ok_or_else(|| need("offset_s"))?;
                if offset_s == 0 || offset_s.abs() > MAX_CLOCK_OFFSET_S {
                    return Err((
                        p("offset_s"),
                        format!("must be non-zero and within ±{MAX_CLOCK_OFFSET_S} s"),
                    ));
                }
                Action::ClockSkew { offset_s }
            }
            FaultKind::StatusFlag => Action::StatusFlag { state: raw.state },
        };
        Ok(Self {
            device: raw.device,
            point: raw.point,
            start,
            end,
            action,
        })
    }
}

/// The reading of sample `k` (at `t_s` seconds since the start, samples every `interval_s`)
/// under the value faults in `faults` that are active then: `stuck` replaces it with the reading
/// of the window's first sample, `drift` adds `rate × days since the start`, `spike` adds its
/// magnitude on every `every`-th sample from the window's first. Other kinds are ignored.
/// `reading(k)` must give the fault-free reading of sample `k`.
pub fn faulted_value<'a>(
    faults: impl IntoIterator<Item = &'a FaultSpec>,
    k: u64,
    t_s: i64,
    interval_s: i64,
    reading: &dyn Fn(u64) -> f64,
) -> f64 {
    let active: Vec<&FaultSpec> = faults.into_iter().filter(|f| f.active_at(t_s)).collect();
    let stuck = active.iter().find(|f| matches!(f.action, Action::Stuck));
    let mut v = match stuck {
        Some(f) => reading(f.first_index(interval_s)),
        None => reading(k),
    };
    for f in active {
        match f.action {
            Action::Drift { per_day } => {
                #[allow(clippy::cast_precision_loss)] // seconds since the start ≪ 2^53
                let since = t_s as f64 - f.start.as_secs_f64();
                v += per_day * since / SECONDS_PER_DAY;
            }
            Action::Spike { magnitude, every }
                if k.saturating_sub(f.first_index(interval_s)) % u64::from(every) == 0 =>
            {
                v += magnitude;
            }
            _ => {}
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(action: Action, start_s: u64, end_s: Option<u64>) -> FaultSpec {
        FaultSpec {
            device: "d".into(),
            point: Some("L1_GP_1".into()),
            start: Duration::from_secs(start_s),
            end: end_s.map(Duration::from_secs),
            action,
        }
    }

    #[test]
    fn windows_are_half_open() {
        let f = spec(Action::Stuck, 600, Some(1200));
        assert!(!f.active_at(599));
        assert!(f.active_at(600));
        assert!(f.active_at(1199));
        assert!(!f.active_at(1200));
        assert!(spec(Action::Stuck, 600, None).active_at(i64::MAX / 2));
        // Samples every 60 s: the first in [600, 1200) is k = 10; with start 610 it is k = 11.
        assert_eq!(f.first_index(60), 10);
        assert_eq!(spec(Action::Stuck, 610, None).first_index(60), 11);
    }

    #[test]
    fn point_matches_its_fields() {
        let f = spec(Action::Stuck, 0, None);
        assert!(f.applies_to("L1_GP_1"));
        assert!(f.applies_to("L1_GP_1.gpsTotalX"));
        assert!(!f.applies_to("L1_GP_10"));
    }

    #[test]
    fn value_faults_by_hand() {
        // Reading k·1.0 with samples every 60 s.
        let reading = |k: u64| k as f64;
        let stuck = spec(Action::Stuck, 600, Some(1200));
        // In the window: the reading of k = 10; outside: the reading itself.
        assert_eq!(faulted_value([&stuck], 15, 900, 60, &reading), 10.0);
        assert_eq!(faulted_value([&stuck], 20, 1200, 60, &reading), 20.0);
        // Drift 2/day from t = 600: at t = 600 + 43200 (half a day) adds 1.0.
        let drift = spec(Action::Drift { per_day: 2.0 }, 600, None);
        assert_eq!(faulted_value([&drift], 730, 43_800, 60, &reading), 731.0);
        // Spike +5 every 3rd sample from k = 10: k = 10, 13 spiked, 11 not.
        let spike = spec(
            Action::Spike {
                magnitude: 5.0,
                every: 3,
            },
            600,
            None,
        );
        assert_eq!(faulted_value([&spike], 10, 600, 60, &reading), 15.0);
        assert_eq!(faulted_value([&spike], 11, 660, 60, &reading), 11.0);
        assert_eq!(faulted_value([&spike], 13, 780, 60, &reading), 18.0);
    }
}
