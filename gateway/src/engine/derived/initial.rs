//! Initial values (初始值) kept in the spool: the saved record of one channel's initial value in
//! one levelling block (entry `vi/<block>/<channel>`), the history of the values it replaced,
//! and the changes `gateway baseline` makes to it (docs/DOMAIN.md §Derived channels, the
//! levelling item).
//!
//! Owns the record's format (readable from the format before the history existed), how a good
//! reading is collected into it, and which command changes are allowed. Does not own where the
//! value is used (levelling, [`super::DerivedSet`]), the spool access or the command line
//! (`crate::baseline`). A configured initial value always wins over a record; that is checked
//! by its users.

use serde::{Deserialize, Serialize};

use crate::model::TimestampNs;

/// Method of a value established because the block says `establish_readings`.
pub const ESTABLISH_METHOD: &str = "mean_of_first_good_readings";
/// Method of a value established on a `gateway baseline establish` or `rezero` request.
pub const REQUESTED_METHOD: &str = "mean_of_next_good_readings";
/// Most superseded values kept per record (the oldest go first): a sensor replaced this often
/// is a site problem, and the store holds every settlement computed from each of them.
pub const MAX_HISTORY: usize = 32;

/// An initial value that a re-zeroing replaced, kept for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Superseded {
    /// The value that was in force.
    pub value: f64,
    /// How it was obtained, and over which readings.
    pub method: String,
    /// Good readings averaged.
    pub readings: u32,
    /// Time of the first and the last of them.
    pub first_ts: TimestampNs,
    /// See `first_ts`.
    pub last_ts: TimestampNs,
    /// When it was replaced (the command's time).
    pub replaced_at: TimestampNs,
    /// Why, as the technician gave it (`--reason`).
    pub reason: String,
}

/// A `gateway baseline` request: collect this many good readings, for this reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Good readings whose mean is the new value.
    pub readings: u32,
    /// When the command asked.
    pub requested_at: TimestampNs,
    /// The re-zeroing's reason; none for a first establishment.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One channel's initial value in the spool: being collected, or established. Saved at every
/// change; an established value is never replaced except by an explicit re-zeroing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// The good readings so far: their sum, count and the first one's time.
    Collecting {
        /// Sum of the good readings so far.
        sum: f64,
        /// How many.
        readings: u32,
        /// Time of the first (0 before it).
        first_ts: TimestampNs,
        /// The command's request; none when the block's `establish_readings` asked.
        #[serde(default)]
        request: Option<Request>,
        /// Values replaced before, oldest first.
        #[serde(default)]
        history: Vec<Superseded>,
    },
    /// The mean of `readings` good readings, taken from `first_ts` to `last_ts`.
    Established {
        /// The initial value in force.
        value: f64,
        /// Good readings averaged.
        readings: u32,
        /// Time of the first.
        first_ts: TimestampNs,
        /// Time of the last.
        last_ts: TimestampNs,
        /// [`ESTABLISH_METHOD`] or [`REQUESTED_METHOD`].
        method: String,
        /// The re-zeroing's reason, when it replaced another value.
        #[serde(default)]
        reason: Option<String>,
        /// Values replaced before, oldest first.
        #[serde(default)]
        history: Vec<Superseded>,
    },
}

/// What [`Baseline::add`] did with a reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Added {
    /// Nothing (already established, or nobody asked for readings).
    Unchanged,
    /// Counted; more readings are wanted.
    Collected,
    /// This reading completed it: the value now in force.
    Established(f64),
}

/// What the command asks of one channel's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Establish a missing initial value from the next good readings.
    Establish,
    /// Replace the value in force (a sensor replacement), keeping it in the history.
    Rezero {
        /// Why, for the record.
        reason: String,
    },
}

/// Why the command refuses a change (each message says what to do instead).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Establish on a channel that has an established value.
    #[error("has the initial value {value} (established {at}); after a sensor replacement use `gateway baseline rezero` with a `--reason`")]
    AlreadyEstablished {
        /// The value in force.
        value: f64,
        /// When it was established (RFC 3339).
        at: String,
    },
    /// Re-zeroing a channel that has no value in the spool.
    #[error("has no initial value in the spool to replace; use `gateway baseline establish`")]
    NothingToReplace,
    /// Establish on a channel whose saved record cannot be read.
    #[error("has a saved initial value that cannot be read; replace it with `gateway baseline rezero` and a `--reason`")]
    Unreadable,
    /// A re-zeroing without a reason.
    #[error("needs a `--reason` (e.g. \"cell replaced\"), kept with the old value")]
    NoReason,
}

impl Baseline {
    /// A collection the command asked for, with the history carried over.
    #[must_use]
    pub fn requested(request: Request, history: Vec<Superseded>) -> Self {
        Self::Collecting {
            sum: 0.0,
            readings: 0,
            first_ts: 0,
            request: Some(request),
            history,
        }
    }

    /// A collection the block's `establish_readings` asked for.
    #[must_use]
    pub const fn collecting() -> Self {
        Self::Collecting {
            sum: 0.0,
            readings: 0,
            first_ts: 0,
            request: None,
            history: Vec::new(),
        }
    }

    /// The value in force, once established.
    #[must_use]
    pub const fn value(&self) -> Option<f64> {
        match self {
            Self::Established { value, .. } => Some(*value),
            Self::Collecting { .. } => None,
        }
    }

    /// The values it replaced, oldest first.
    #[must_use]
    pub fn history(&self) -> &[Superseded] {
        match self {
            Self::Collecting { history, .. } | Self::Established { history, .. } => history,
        }
    }

    /// Count the good reading `v` at `ts`: wanted are the request's readings, else
    /// `block_default` (the block's `establish_readings`). The mean of the wanted number is
    /// established with the time of the first and the last.
    pub fn add(&mut self, ts: TimestampNs, v: f64, block_default: Option<u32>) -> Added {
        let Self::Collecting {
            sum,
            readings,
            first_ts,
            request,
            history,
        } = self
        else {
            return Added::Unchanged;
        };
        let Some(wanted) = request.as_ref().map(|r| r.readings).or(block_default) else {
            return Added::Unchanged;
        };
        if *readings == 0 {
            *first_ts = ts;
        }
        *sum += v;
        *readings += 1;
        if *readings < wanted {
            return Added::Collected;
        }
        let value = *sum / f64::from(*readings);
        let (method, reason) = match request.take() {
            Some(r) => (REQUESTED_METHOD, r.reason),
            None => (ESTABLISH_METHOD, None),
        };
        *self = Self::Established {
            value,
            readings: *readings,
            first_ts: *first_ts,
            last_ts: ts,
            method: method.to_owned(),
            reason,
            history: std::mem::take(history),
        };
        Added::Established(value)
    }

    /// The record after `change`, asked at `now` for `readings` good readings, given the saved
    /// one: `None` when there is none, `Some(Err(()))` when it cannot be read.
    ///
    /// # Errors
    /// A [`Refusal`] saying what to do instead.
    pub fn change(
        saved: Option<Result<Self, ()>>,
        change: &Change,
        readings: u32,
        now: TimestampNs,
    ) -> Result<Self, Refusal> {
        match change {
            Change::Establish => {
                let request = Request {
                    readings,
                    requested_at: now,
                    reason: None,
                };
                match saved {
                    None => Ok(Self::requested(request, Vec::new())),
                    // A collection under way starts again with the number asked now.
                    Some(Ok(Self::Collecting { history, .. })) => {
                        Ok(Self::requested(request, history))
                    }
                    Some(Ok(Self::Established { value, last_ts, .. })) => {
                        Err(Refusal::AlreadyEstablished {
                            value,
                            at: format_ts(last_ts),
                        })
                    }
                    Some(Err(())) => Err(Refusal::Unreadable),
                }
            }
            Change::Rezero { reason } => {
                let reason = reason.trim();
                if reason.is_empty() {
                    return Err(Refusal::NoReason);
                }
                let request = Request {
                    readings,
                    requested_at: now,
                    reason: Some(reason.to_owned()),
                };
                match saved {
                    None => Err(Refusal::NothingToReplace),
                    // A collection under way is dropped: nothing was in force.
                    Some(Ok(Self::Collecting { history, .. })) => {
                        Ok(Self::requested(request, history))
                    }
                    Some(Ok(Self::Established {
                        value,
                        readings: n,
                        first_ts,
                        last_ts,
                        method,
                        reason: _,
                        mut history,
                    })) => {
                        history.push(Superseded {
                            value,
                            method,
                            readings: n,
                            first_ts,
                            last_ts,
                            replaced_at: now,
                            reason: reason.to_owned(),
                        });
                        if history.len() > MAX_HISTORY {
                            history.drain(..history.len() - MAX_HISTORY);
                        }
                        Ok(Self::requested(request, history))
                    }
                    // What cannot be read cannot be kept; the new record starts the history.
                    Some(Err(())) => Ok(Self::requested(request, Vec::new())),
                }
            }
        }
    }

    /// One line for `gateway baseline show` and `gateway check`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Established {
                value,
                readings,
                first_ts,
                last_ts,
                method,
                reason,
                ..
            } => format!(
                "{value} (established, {method}: {readings} good readings {} to {}{})",
                format_ts(*first_ts),
                format_ts(*last_ts),
                reason
                    .as_ref()
                    .map(|r| format!("; re-zeroed: {r}"))
                    .unwrap_or_default()
            ),
            Self::Collecting {
                readings,
                first_ts,
                request,
                ..
            } => {
                let since = if *readings == 0 {
                    String::new()
                } else {
                    format!(" since {}", format_ts(*first_ts))
                };
                match request {
                    Some(r) => format!(
                        "none yet (collecting {readings} of {} good readings{since}, asked {}{})",
                        r.readings,
                        format_ts(r.requested_at),
                        r.reason
                            .as_ref()
                            .map(|x| format!(", re-zeroing: {x}"))
                            .unwrap_or_default()
                    ),
                    None => format!(
                        "none yet (collecting: {readings} good readings{since}, establish_readings)"
                    ),
                }
            }
        }
    }
}

impl Superseded {
    /// One line of the history.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "{} ({}: {} good readings {} to {}), replaced {}: {}",
            self.value,
            self.method,
            self.readings,
            format_ts(self.first_ts),
            format_ts(self.last_ts),
            format_ts(self.replaced_at),
            self.reason
        )
    }
}

/// A time as RFC 3339 (UTC, seconds); a time before 1970 as the epoch.
#[must_use]
pub fn format_ts(ts: TimestampNs) -> String {
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::from_nanos(u64::try_from(ts).unwrap_or_default());
    humantime::format_rfc3339_seconds(t).to_string()
}
