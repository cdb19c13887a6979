//! The rule state saved per entry (format 2, issue 11), and channels evicted from memory and
//! brought back (issue 14).
//!
//! Owns the entry keys and values, which entries changed since they were last handed out for
//! saving, the restore from entries (and the one-time migration of the format-1 single value),
//! and the eviction and return of single channels. Does not own the spool: the engine commits
//! the [`StateDelta`] it gets here with the chunk it belongs to, and reads entries back.
//!
//! # Entries
//! | key | value (JSON) |
//! |---|---|
//! | `h` | `{"format": 2}` |
//! | `c/<channel key>` | the channel: its data, rule slots (windows, conditions), stale conditions |
//! | `d/<device>` | the device's stale conditions |
//! | `p/<["rule","a","b"]>` | a pair's conditions (only when not at rest) |
//! | `a/<alert id>` | the latest event of an active alert |
//!
//! # What counts as a change
//! An entry is handed out again only when its content changed, not counting the fields that
//! change with every reading: the gateway time it was last heard (restore sets it to `now`
//! anyway), and the data time and value of its last good reading (a reading that changed
//! nothing else changes nothing a restart needs; they are written with the next real change).
//! So a channel whose rules are at rest is not rewritten. (Rate windows are the state of
//! derived channels now, saved by `derived`: the newest bucket alone while the others are
//! unchanged.) The conditions themselves do not count runs while at rest (`condition.rs`).
//! Change is detected by a fingerprint of the content (`fingerprint.rs`), so memory per channel
//! is 8 bytes, not a second copy of its state.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::super::fingerprint::{fingerprint, hash_bytes};
use super::{ChannelSnapshot, Evaluator, EvaluatorState, RestoreError, RuleSet, STATE_FORMAT};
use crate::model::TimestampNs;
use crate::spool::StateDelta;

/// Version of the per-entry layout, in the `h` entry. Saved state of another version is
/// refused by [`Evaluator::restore_entries`] (the engine says so at ERROR and counts it).
pub const ENTRY_FORMAT: u32 = 2;
/// The header entry.
const HEADER_KEY: &str = "h";
/// The single value of format 1 (the whole state as one JSON document), read once and removed.
const LEGACY_KEY: &str = "rules";
const CHANNEL_PREFIX: &str = "c/";
const DEVICE_PREFIX: &str = "d/";
const PAIR_PREFIX: &str = "p/";
const ALERT_PREFIX: &str = "a/";

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
}

/// What was handed out for saving, beyond the per-channel and per-device hashes.
#[derive(Debug, Default)]
pub(super) struct Saved {
    /// The header was handed out.
    header: bool,
    /// Active alerts handed out, by id, with their event sequence.
    active: BTreeMap<String, u32>,
    /// Keys to remove with the next save (the format-1 value, alerts cleared while restoring).
    doomed: Vec<String>,
    /// Hashes of the keys of channels evicted from memory whose state is saved: a reading of
    /// one of them is worth a spool read, any other new channel is not (8 bytes per channel
    /// instead of its state; a collision costs one needless read).
    evicted: HashSet<u64>,
    /// Where the next full save resumes its walk over the channels (see
    /// [`MAX_CHANNEL_ENTRIES_PER_SAVE`]): every touched channel gets its turn.
    next_channel: usize,
    /// The last full save stopped at its bound with touched channels left.
    more: bool,
}

/// Most channel entries one save serialises and commits. A save of every channel at once held
/// their JSON and the transaction's pages in memory together: with 5,000 channels at a site's
/// steady rate the gateway's peak RSS went from 52 MB to 68 MB at the first 10-s save (issue 14:
/// a 5,000-channel site within 40 MB). The rest follow with the next commits (the engine saves
/// again at once while some are left, [`Evaluator::state_left`]).
pub const MAX_CHANNEL_ENTRIES_PER_SAVE: usize = 250;

/// What [`Evaluator::restore_entries`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// The state was the format-1 single value: it is rewritten per entry by the next save.
    pub migrated: bool,
    /// Entries that could not be read (their state is lost; the engine says so at ERROR).
    pub unreadable: Vec<String>,
}

/// The spool key of a channel's entry.
#[must_use]
pub fn channel_entry_key(channel: &str) -> String {
    format!("{CHANNEL_PREFIX}{channel}")
}

/// Add `value` under `key` when it could be serialised; false when not.
fn put(delta: &mut StateDelta, key: String, value: Result<Vec<u8>, serde_json::Error>) -> bool {
    match value {
        Ok(v) => {
            delta.entries.insert(key, Some(v));
            true
        }
        Err(_) => false,
    }
}

/// The channels and devices whose state an alert commit must carry.
#[derive(Debug, Default, Clone)]
pub struct StateScope {
    /// Channel keys (`device/point`).
    pub channels: std::collections::HashSet<String>,
    /// Device names.
    pub devices: std::collections::HashSet<String>,
}

impl StateScope {
    /// Add what `alert` involves.
    pub fn add(&mut self, alert: &crate::alert::Alert) {
        self.channels.extend(alert.channels.iter().cloned());
        self.devices.insert(alert.device.clone());
    }
}

fn key_hash(channel: &str) -> u64 {
    hash_bytes(channel.as_bytes())
}

/// The content of a channel entry that counts as a change (see the module doc): the entry
/// without the fields that change with every reading (`last_heard`, `last_ts`,
/// `last_usable`). The channel's info is fixed for its life in memory and identified by its
/// key.
#[derive(Serialize)]
struct Significant<'a> {
    key: &'a str,
    first_usable: &'a Option<super::Sample>,
    faults: &'a super::FaultsSlot,
    rules: &'a BTreeMap<String, super::RuleSlot>,
    stale: &'a BTreeMap<String, super::FaultCondition>,
}

/// The fingerprint of what counts as a change in a channel's entry (`fingerprint.rs`), taken
/// from a view of the state, not a masked copy of its snapshot.
fn channel_significance(snap: &ChannelSnapshot) -> Result<u64, serde_json::Error> {
    fingerprint(&Significant {
        key: &snap.info.key,
        first_usable: &snap.data.first_usable,
        faults: &snap.data.faults,
        rules: &snap.rules,
        stale: &snap.stale,
    })
}

impl Evaluator {
    /// The entries that changed since the last call, to be committed with the next chunk, and
    /// how many entries could not be serialised (left for the next call). Entries handed out
    /// are not handed out again until they change: the caller keeps what it could not commit.
    pub fn state_changes(&mut self) -> (StateDelta, usize) {
        self.state_changes_in(None)
    }

    /// The last [`Evaluator::state_changes`] stopped at [`MAX_CHANNEL_ENTRIES_PER_SAVE`] with
    /// touched channels left for the next save.
    #[must_use]
    pub fn state_left(&self) -> bool {
        self.saved.more
    }

    /// Like [`Evaluator::state_changes`], limited to the channels and devices in `scope` (the
    /// ones whose alerts are being committed): an alert commits with the state that produced
    /// it without serialising every other touched channel, which waits for the next full save
    /// (issue 11: alerts must not wait behind the state of 2,000 busy channels).
    pub fn state_changes_in(&mut self, scope: Option<&StateScope>) -> (StateDelta, usize) {
        let mut delta = StateDelta::default();
        let mut errors = 0;
        if !self.saved.header {
            let header = serde_json::to_vec(&Header {
                format: ENTRY_FORMAT,
            });
            self.saved.header = put(&mut delta, HEADER_KEY.to_owned(), header);
        }
        for key in self.saved.doomed.drain(..) {
            delta.entries.insert(key, None);
        }
        let n = self.channels.len();
        let start = if scope.is_none() && self.saved.next_channel < n {
            self.saved.next_channel
        } else {
            0
        };
        let mut put_channels = 0;
        if scope.is_none() {
            self.saved.more = false;
        }
        for ci in (start..n).chain(0..start) {
            if !self.channels[ci].touched {
                continue;
            }
            if scope.is_some_and(|sc| !sc.channels.contains(&self.channels[ci].info.key)) {
                continue;
            }
            if scope.is_none() && put_channels >= MAX_CHANNEL_ENTRIES_PER_SAVE {
                self.saved.next_channel = ci;
                self.saved.more = true;
                break;
            }
            let snap = self.channel_snapshot(&self.channels[ci]);
            let Ok(sig) = channel_significance(&snap) else {
                errors += 1;
                continue;
            };
            let ch = &mut self.channels[ci];
            ch.touched = false;
            if ch.saved == Some(sig) {
                continue;
            }
            put_channels += 1;
            if put(
                &mut delta,
                channel_entry_key(&snap.info.key),
                serde_json::to_vec(&snap),
            ) {
                self.channels[ci].saved = Some(sig);
            } else {
                self.channels[ci].touched = true;
                errors += 1;
            }
        }
        for di in 0..self.devices.len() {
            if scope.is_some_and(|sc| !sc.devices.contains(&self.devices[di].name)) {
                continue;
            }
            let snap = self.device_snapshot(&self.devices[di]);
            let Ok(sig) = fingerprint(&snap.stale) else {
                errors += 1;
                continue;
            };
            let d = &self.devices[di];
            // A device without stale conditions worth keeping has nothing to save.
            let at_rest = snap.stale.values().all(|c| *c == Default::default());
            if d.saved == Some(sig) || (d.saved.is_none() && at_rest) {
                continue;
            }
            if put(
                &mut delta,
                format!("{DEVICE_PREFIX}{}", snap.name),
                serde_json::to_vec(&snap),
            ) {
                self.devices[di].saved = Some(sig);
            } else {
                errors += 1;
            }
        }
        for (id, a) in &self.active {
            if self.saved.active.get(id) == Some(&a.seq) {
                continue;
            }
            if put(
                &mut delta,
                format!("{ALERT_PREFIX}{id}"),
                serde_json::to_vec(a),
            ) {
                self.saved.active.insert(id.clone(), a.seq);
            } else {
                errors += 1;
            }
        }
        let gone: Vec<String> = self
            .saved
            .active
            .keys()
            .filter(|id| !self.active.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.saved.active.remove(&id);
            delta.entries.insert(format!("{ALERT_PREFIX}{id}"), None);
        }
        (delta, errors)
    }

    /// Rebuild an evaluator from the saved entries (all of them, as
    /// [`crate::spool::Spool::load_state`] returns them), under possibly edited `rules`, at
    /// gateway time `now`, as [`Evaluator::restore`] does for one value. A format-1 value is
    /// read and removed by the next save (`migrated`). Everything restored is handed out again
    /// by the next [`Evaluator::state_changes`] (once), so the saved state matches the rules
    /// in force.
    ///
    /// # Errors
    /// [`RestoreError::Format`] for saved state of another layout version, or
    /// [`RestoreError::Unreadable`] for a format-1 value that cannot be parsed.
    pub fn restore_entries(
        rules: RuleSet,
        site: &str,
        entries: Vec<(String, Vec<u8>)>,
        now: TimestampNs,
    ) -> Result<(Self, RestoreReport), RestoreError> {
        let mut report = RestoreReport::default();
        let header = entries.iter().find(|(k, _)| k == HEADER_KEY);
        let legacy = entries.iter().find(|(k, _)| k == LEGACY_KEY);
        let mut ev = match (header, legacy) {
            (None, None) => Self::new(rules, site),
            (None, Some((_, blob))) => {
                let state: EvaluatorState = serde_json::from_slice(blob)
                    .map_err(|e| RestoreError::Unreadable(e.to_string()))?;
                report.migrated = true;
                Self::restore(rules, site, state, now)?
            }
            (Some((_, h)), _) => {
                let h: Header = serde_json::from_slice(h)
                    .map_err(|e| RestoreError::Unreadable(format!("header: {e}")))?;
                if h.format != ENTRY_FORMAT {
                    return Err(RestoreError::Format {
                        found: h.format,
                        expected: ENTRY_FORMAT,
                    });
                }
                let mut state = EvaluatorState {
                    format: STATE_FORMAT,
                    channels: Vec::new(),
                    devices: Vec::new(),
                    pairs: Vec::new(),
                    active: Vec::new(),
                };
                for (key, value) in &entries {
                    let parsed = if key.starts_with(CHANNEL_PREFIX) {
                        serde_json::from_slice(value).map(|c| state.channels.push(c))
                    } else if key.starts_with(DEVICE_PREFIX) {
                        serde_json::from_slice(value).map(|d| state.devices.push(d))
                    } else if key.starts_with(PAIR_PREFIX) {
                        serde_json::from_slice(value).map(|p| state.pairs.push(p))
                    } else if key.starts_with(ALERT_PREFIX) {
                        serde_json::from_slice(value).map(|a| state.active.push(a))
                    } else {
                        Ok(())
                    };
                    if parsed.is_err() {
                        report.unreadable.push(key.clone());
                    }
                }
                Self::restore(rules, site, state, now)?
            }
        };
        if legacy.is_some() {
            ev.saved.doomed.push(LEGACY_KEY.to_owned());
        }
        // Entries of things the rules dropped (orphaned alerts, pairs of removed rules) are
        // removed: after the header and every channel are handed out again, nothing else
        // refers to them.
        for (key, _) in &entries {
            if let Some(id) = key.strip_prefix(ALERT_PREFIX) {
                if !ev.active.contains_key(id) {
                    ev.saved.doomed.push(key.clone());
                }
            } else if key.starts_with(PAIR_PREFIX) || key.starts_with(DEVICE_PREFIX) {
                // Handed out again below if not at rest (the later insert of the same key in
                // the delta wins); removed if at rest, or its rule is gone.
                ev.saved.doomed.push(key.clone());
            }
        }
        Ok((ev, report))
    }

    /// Drop from memory the channels not heard for `idle_ns` (gateway time), returning their
    /// keys and their entries, written in full (the last good reading included): the caller
    /// commits them before it forgets them. Kept: channels a channel-scope stale rule watches
    /// (a silent channel is exactly what it must keep judging, and its alert must be raised
    /// on time), and channels holding a possible spike (released by [`Evaluator::on_tick`]).
    /// Active alerts of an evicted channel stay active: its entry holds their conditions, and
    /// [`Evaluator::restore_channel`] continues them (the clear carries the same id).
    pub fn evict_idle(&mut self, now: TimestampNs, idle_ns: i64) -> (Vec<String>, StateDelta) {
        let mut delta = StateDelta::default();
        let mut keys = Vec::new();
        let mut ci = 0;
        while ci < self.channels.len() {
            let c = &self.channels[ci];
            let idle = now.saturating_sub(c.data.last_heard) >= idle_ns;
            if !idle || !c.plan.stale.is_empty() || c.data.faults.held.is_some() {
                ci += 1;
                continue;
            }
            let snap = self.channel_snapshot(c);
            let Ok(bytes) = serde_json::to_vec(&snap) else {
                // Kept in memory rather than lost.
                ci += 1;
                continue;
            };
            let key = snap.info.key.clone();
            delta.entries.insert(channel_entry_key(&key), Some(bytes));
            self.by_key.remove(key.as_str());
            self.channels.swap_remove(ci);
            if let Some(moved) = self.channels.get(ci) {
                self.by_key
                    .insert(crate::model::SeriesKey(moved.info.series()), ci);
            }
            self.saved.evicted.insert(key_hash(&key));
            keys.push(key);
        }
        if !keys.is_empty() {
            self.channels.shrink_to(self.channels.len() * 2);
            self.by_key.shrink_to(self.by_key.len() * 2);
        }
        (keys, delta)
    }

    /// Whether any channel was evicted and not seen since: without one, no reading needs
    /// [`Evaluator::maybe_evicted`] (the engine skips its per-reading look-ups).
    #[must_use]
    pub fn any_evicted(&self) -> bool {
        !self.saved.evicted.is_empty()
    }

    /// True when `channel` is not in memory but may have been evicted with saved state (a
    /// spool read is worth it).
    #[must_use]
    pub fn maybe_evicted(&self, channel: &str) -> bool {
        !self.by_key.contains_key(channel) && self.saved.evicted.contains(&key_hash(channel))
    }

    /// Bring back an evicted channel from its saved entry (its windows, conditions and the
    /// active alerts they hold continue), heard at `now`.
    ///
    /// # Errors
    /// The entry cannot be parsed (its state is lost; the channel starts fresh).
    pub fn restore_channel(&mut self, entry: &[u8], now: TimestampNs) -> Result<(), String> {
        let snap: ChannelSnapshot = serde_json::from_slice(entry).map_err(|e| e.to_string())?;
        self.saved.evicted.remove(&key_hash(&snap.info.key));
        if self.by_key.contains_key(snap.info.key.as_str()) {
            return Ok(());
        }
        let sig = channel_significance(&snap).ok();
        let mut data = snap.data;
        data.last_heard = data.last_heard.max(now);
        let ci = self.add_channel(snap.info, data, snap.rules, snap.stale, now);
        // What was read is what is saved: no rewrite until it changes.
        self.channels[ci].saved = sig;
        self.channels[ci].touched = false;
        Ok(())
    }

    /// The channel was given up as evicted (its entry was missing or unreadable).
    pub fn forget_evicted(&mut self, channel: &str) {
        self.saved.evicted.remove(&key_hash(channel));
    }

    /// Devices known (they are not evicted: one per device, not per channel).
    #[must_use]
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }
}
