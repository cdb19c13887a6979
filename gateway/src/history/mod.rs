//! Local history for the console's curves (issue 9 item 3): every reading the engine stores,
//! kept on the gateway for a configured window so that curves work with the uplink down and
//! without any central store.
//!
//! Owns its own redb file (`history.redb` in `data_dir`), never the spool's: history must never
//! cost a reading, so nothing it does (a slow write, a full disk, a damaged file) can reach the
//! spool's transactions, its size bound or its failure handling. It keeps downsampled buckets
//! only (min, max, mean, count of good values and count of bad readings per channel and
//! bucket), in three [`TIERS`]: 10 s buckets for 2 h (the 1 h curve; a channel read every 10 s
//! or slower keeps each reading), 5 min for 26 h (the 24 h curve) and 30 min for the window (the
//! 7 d curve). It also keeps the alert events of the window for the alert history page.
//!
//! Writes: [`History::record`] (the engine, per stored reading) only adds to an in-memory
//! bucket under a short lock; [`History::flush`] (a task, every [`FLUSH_INTERVAL`]) merges those
//! buckets into the file in one transaction, prunes what left the window and keeps the file
//! within `max_bytes` (compacting, then shortening the kept window by an eighth at a time).
//!
//! Full disk: before each write it checks the file system's free space; below `min_free` (twice
//! the spool's `min_free_bytes` by default, [`FREE_FACTOR`]) it deletes its file and writes
//! nothing until twice that is free again, so the history is always given up before the spool
//! has to drop a reading. Any storage error closes the file (history missing for a while,
//! logged once a minute); a file that cannot be read at open is replaced.
//!
//! It does not render anything (`crate::console`) and does not decide what is stored (the
//! engine hands it exactly what it commits to the spool; a reading the spool later drops for
//! its bound stays in history, which is the point).

mod config;
#[cfg(test)]
mod tests;

pub use config::{HistoryConfig, HistorySettings, DEFAULT_MAX_BYTES, DEFAULT_WINDOW};

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use tracing::{info, warn};

use crate::alert::Alert;
use crate::log_limit::LogLimiter;
use crate::model::{Quality, TimestampNs, NANOS_PER_SEC};

/// File name of the history inside the data directory.
pub const HISTORY_FILE: &str = "history.redb";

/// How often the in-memory buckets are written to the file. The pages show the in-memory part
/// too, so this only sets how much a crash loses (at most this much of history, never of the
/// spool) and how often the flash is written (one transaction per interval).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// The history keeps at least `FREE_FACTOR ×` the spool's `min_free_bytes` free on its file
/// system: below that it deletes its file, so it is given up before the spool starts dropping
/// readings to keep its own `min_free_bytes` (docs/ARCHITECTURE.md §Local history).
pub const FREE_FACTOR: u64 = 2;

/// The history starts again after giving itself up for space only when `RESUME_FACTOR ×` its
/// free-space bound is free (hysteresis: no delete-recreate cycle at the edge).
pub const RESUME_FACTOR: u64 = 2;

/// After an error the file is opened again at most this often.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(60);

/// Page cache redb may use for the history: the pages read one channel at a time, and every
/// byte of it is the gateway's resident memory (the ingest benchmark's peak RSS rose by 9 MB
/// with a 4 MiB cache and no early flush).
pub const CACHE_BYTES: usize = 1024 * 1024;

/// Buckets in memory at which the writer flushes before [`FLUSH_INTERVAL`] is over (about 1 MB
/// held, and a transaction of that many rows). A site's 200 channels hold about 600 between
/// two flushes; a burst of readings spread over many buckets reaches it.
pub const FLUSH_AT_BUCKETS: usize = 16_384;

/// Most channels held in memory between two flushes; readings of further channels wait for the
/// next flush's room (counted in [`HistoryStats::skipped`]). Far above a site's few hundred.
pub const MAX_PENDING_CHANNELS: usize = 20_000;

/// Buckets that left their tier's span are removed at most this often (gateway time): a
/// bucket kept a few minutes longer costs nothing, a range removal per channel and tier on every
/// flush cost most of the history's CPU (issue 9 §Performance).
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(600);
const PRUNE_INTERVAL_NS: i64 = PRUNE_INTERVAL.as_secs() as i64 * NANOS_PER_SEC;

/// Most alert events held in memory between two flushes (a flapping alarm cannot grow memory).
pub const MAX_PENDING_ALERTS: usize = 1_000;

/// Most alert events kept in the file, newest kept (about 600 B each: 6 MB at most).
pub const MAX_ALERT_EVENTS: u64 = 10_000;

/// Shortest kept window the byte bound may shrink the history to.
pub const MIN_KEPT: Duration = Duration::from_secs(3600);

/// One resolution of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// Index into [`TIERS`].
    pub index: usize,
    /// Bucket width in seconds.
    pub width_secs: u32,
    /// How long its buckets are kept (at most the configured window).
    pub keep: Duration,
    table_name: &'static str,
}

impl Tier {
    const fn table(self) -> TableDefinition<'static, u64, BucketValue> {
        TableDefinition::new(self.table_name)
    }

    /// The tier's index as a pending bucket carries it ([`TierBucket`]; three tiers).
    #[allow(clippy::cast_possible_truncation)]
    const fn tag(&self) -> u8 {
        self.index as u8
    }
}

/// The three resolutions, finest first: each is what one of the pages' spans (1 h, 24 h, 7 d)
/// draws, at 360, 288 and 336 buckets.
pub const TIERS: [Tier; 3] = [
    Tier {
        index: 0,
        width_secs: 10,
        keep: Duration::from_secs(2 * 3600),
        table_name: "b10s",
    },
    Tier {
        index: 1,
        width_secs: 300,
        keep: Duration::from_secs(26 * 3600),
        table_name: "b5m",
    },
    Tier {
        index: 2,
        width_secs: 1800,
        keep: Duration::MAX,
        table_name: "b30m",
    },
];

/// A stored bucket: `(min, max, mean, good readings, bad readings)`; values as `f32` (7
/// significant digits, what a page draws), 16 bytes.
type BucketValue = (f32, f32, f32, u16, u16);

/// Channel key → the id in bucket keys (`id << 32 | bucket index`).
const CHANNELS: TableDefinition<&str, u32> = TableDefinition::new("channels");
/// Channel key → `(device, quantity kind, unit)`, for the daily report, which may be made
/// when the engine holds none of them.
const CHANNEL_META: TableDefinition<&str, (&str, &str, &str)> =
    TableDefinition::new("channel_meta");
/// Alert events: data time in ns (made unique) → the event as JSON.
const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");

/// One bucket of one channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Start of the bucket.
    pub start_ns: TimestampNs,
    /// Smallest good value; meaningless when `count` is 0.
    pub min: f64,
    /// Largest good value.
    pub max: f64,
    /// Mean of the good values.
    pub mean: f64,
    /// Good readings in the bucket.
    pub count: u32,
    /// Readings in the bucket flagged bad (not in min/max/mean).
    pub bad: u32,
}

impl Bucket {
    const fn empty(start_ns: TimestampNs) -> Self {
        Self {
            start_ns,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            count: 0,
            bad: 0,
        }
    }

    fn add(&mut self, value: Option<f64>, quality: Quality) {
        match value.filter(|v| v.is_finite() && quality.is_good()) {
            Some(v) => {
                self.merge(&Self {
                    start_ns: self.start_ns,
                    min: v,
                    max: v,
                    mean: v,
                    count: 1,
                    bad: 0,
                });
            }
            None => self.bad = self.bad.saturating_add(1),
        }
    }

    fn merge(&mut self, other: &Self) {
        if other.count > 0 {
            let n = f64::from(self.count) + f64::from(other.count);
            self.mean =
                (self.mean * f64::from(self.count) + other.mean * f64::from(other.count)) / n;
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
            self.count = self.count.saturating_add(other.count);
        }
        self.bad = self.bad.saturating_add(other.bad);
    }

    #[allow(clippy::cast_possible_truncation)]
    fn stored(&self) -> BucketValue {
        let clamp = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
        let (min, max) = if self.count > 0 {
            (self.min as f32, self.max as f32)
        } else {
            (0.0, 0.0)
        };
        (
            min,
            max,
            self.mean as f32,
            clamp(self.count),
            clamp(self.bad),
        )
    }

    fn from_stored(start_ns: TimestampNs, (min, max, mean, count, bad): BucketValue) -> Self {
        Self {
            start_ns,
            min: f64::from(min),
            max: f64::from(max),
            mean: f64::from(mean),
            count: u32::from(count),
            bad: u32::from(bad),
        }
    }
}

/// The bucket index of `ts` in a tier of `width_secs` (seconds since 1970 / width); `None`
/// before 1970 or past 2106.
fn bucket_index(ts: TimestampNs, width_secs: u32) -> Option<u32> {
    let secs = u64::try_from(ts.div_euclid(NANOS_PER_SEC)).ok()?;
    u32::try_from(secs / u64::from(width_secs)).ok()
}

fn bucket_start(index: u32, width_secs: u32) -> TimestampNs {
    i64::from(index) * i64::from(width_secs) * NANOS_PER_SEC
}

const fn bucket_key(channel: u32, index: u32) -> u64 {
    ((channel as u64) << 32) | index as u64
}

/// What the history holds of one channel over a span, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curve {
    /// Bucket width in seconds.
    pub width_secs: u32,
    /// The buckets that hold readings, oldest first.
    pub buckets: Vec<Bucket>,
}

/// The history's state for the pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// The file is open and written.
    pub available: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// The file's size.
    pub file_bytes: u64,
    /// The configured window.
    pub window: Duration,
    /// What the byte bound lets it keep now (the window, or less when the bound was reached).
    pub kept: Duration,
    /// Readings not kept because the history was unavailable or its memory bound was reached.
    pub skipped: u64,
    /// Times the file was given up for free space.
    pub given_up_for_space: u64,
}

/// What a channel is, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMeta {
    /// `device/point`.
    pub key: String,
    /// The device.
    pub device: String,
    /// What it measures.
    pub kind: crate::model::QuantityKind,
    /// Its unit.
    pub unit: String,
}

/// One channel's readings waiting for the next flush (the channel itself is the map's key, the
/// engine's series, shared): its buckets of every tier in one short list, in the order they were
/// opened. A channel holds one or two buckets per tier between two flushes: a list, not a map (a
/// B-tree's first node holds room for eleven, about 500 bytes per tier, 7.5 MB on a 5,000-channel
/// site; issue 14), and one list for the three tiers rather than one each, so that a reading's
/// three buckets lie side by side in one allocation instead of three (with 2,000 channels taken
/// in turn each is a cache miss; issue 11).
#[derive(Debug, Default)]
struct PendingChannel {
    buckets: Vec<TierBucket>,
}

/// A pending bucket: its tier's index into [`TIERS`], its bucket index, the bucket.
type TierBucket = (u8, u32, Bucket);

impl PendingChannel {
    /// The buckets of `tier`, by bucket index, in the order they were opened.
    fn tier(&self, tier: Tier) -> impl Iterator<Item = (u32, &Bucket)> + '_ {
        let t = tier.tag();
        self.buckets
            .iter()
            .filter(move |(k, ..)| *k == t)
            .map(|(_, i, b)| (*i, b))
    }
}

/// Add a reading at `ts` to its bucket of every tier (a new bucket counted in `buckets`).
/// False when no tier keeps it (a time outside every tier's range).
fn add_to_tiers(
    list: &mut Vec<TierBucket>,
    buckets: &mut usize,
    ts: TimestampNs,
    value: Option<f64>,
    quality: Quality,
) -> bool {
    let mut kept = false;
    for tier in &TIERS {
        if let Some(i) = bucket_index(ts, tier.width_secs) {
            let t = tier.tag();
            // Readings come in time order: the bucket is almost always among the last three.
            if let Some((.., b)) = list.iter_mut().rev().find(|(k, j, _)| *k == t && *j == i) {
                b.add(value, quality);
            } else {
                if list.is_empty() {
                    list.reserve_exact(TIERS.len());
                }
                let mut b = Bucket::empty(bucket_start(i, tier.width_secs));
                b.add(value, quality);
                list.push((t, i, b));
                *buckets += 1;
            }
            kept = true;
        }
    }
    kept
}

/// Readings and alert events waiting for the next flush.
#[derive(Debug, Default)]
struct Pending {
    /// Per channel key.
    channels: crate::model::SeriesMap<PendingChannel>,
    alerts: Vec<Alert>,
    skipped: u64,
    /// Buckets held, over all channels and tiers.
    buckets: usize,
}

/// Why the file is not open.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Closed {
    /// Given up for free space: reopened when [`RESUME_FACTOR`] × `min_free` is free.
    ForSpace,
    /// An error: reopened after [`REOPEN_INTERVAL`].
    Error { reason: String, at: Instant },
}

/// The file and what is known about it.
#[derive(Debug)]
struct Store {
    db: Option<Database>,
    closed: Option<Closed>,
    ids: HashMap<String, u32>,
    next_id: u32,
    /// What the byte bound lets it keep now.
    kept: Duration,
    /// Gateway time of the last pruning, and what was kept then.
    pruned: (TimestampNs, Duration),
    skipped: u64,
    given_up_for_space: u64,
    log: LogLimiter,
}

/// The local history (see the module doc). Every method blocks on the file: call the flush and
/// the reads from `spawn_blocking`; [`History::record`] and [`History::record_alert`] only take
/// a short lock on memory.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    settings: HistorySettings,
    /// Below this many free bytes the file is given up.
    min_free: u64,
    pending: Mutex<Pending>,
    store: Mutex<Store>,
    /// Told when [`FLUSH_AT_BUCKETS`] buckets wait in memory: the writer flushes at once.
    flush_due: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock left plain data behind: still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The log key of a failing history file.
const LOG_FAILING: &str = "history";

impl History {
    /// A history at `path` whose file is not open yet.
    fn closed(path: &Path, settings: HistorySettings, min_free: u64) -> Self {
        Self {
            path: path.to_owned(),
            settings,
            min_free,
            flush_due: tokio::sync::Notify::new(),
            pending: Mutex::new(Pending::default()),
            store: Mutex::new(Store {
                db: None,
                closed: None,
                ids: HashMap::new(),
                next_id: 0,
                kept: settings.window,
                // Nothing pruned yet: the first flush prunes.
                pruned: (i64::MIN, settings.window),
                skipped: 0,
                given_up_for_space: 0,
                log: LogLimiter::new(REOPEN_INTERVAL, 4),
            }),
        }
    }

    /// The history at `path` with `settings`, keeping `spool_min_free ×` [`FREE_FACTOR`] bytes
    /// free. Never fails: a file that cannot be opened now is opened again later (the pages say
    /// why there is no history meanwhile).
    #[must_use]
    pub fn open(path: &Path, settings: HistorySettings, spool_min_free: u64) -> Self {
        let h = Self::closed(path, settings, spool_min_free.saturating_mul(FREE_FACTOR));
        let mut store = lock(&h.store);
        h.try_open(&mut store);
        drop(store);
        h
    }

    /// The history file at `path` as it is, for a command run while the service is stopped
    /// (`gateway report`): no file is created, replaced or deleted (opening it commits one
    /// empty transaction, as every open does).
    ///
    /// # Errors
    /// No file there, or it cannot be opened (the running gateway holds it; damaged).
    pub fn open_existing(path: &Path) -> Result<Self, String> {
        if !path.exists() {
            return Err(format!(
                "no local history at {} (the gateway keeps one with [console] on, from its first run)",
                path.display()
            ));
        }
        let h = Self::closed(path, HistorySettings::default(), 0);
        let (db, ids) = catch_unwind(AssertUnwindSafe(|| h.open_file(false)))
            .map_err(|_| format!("redb panicked while opening {}", path.display()))??;
        let mut store = lock(&h.store);
        store.next_id = ids.values().max().map_or(0, |m| m.saturating_add(1));
        store.ids = ids;
        store.db = Some(db);
        drop(store);
        Ok(h)
    }

    /// Add one stored reading of `series` (the engine, for every reading it commits).
    pub fn record(
        &self,
        series: &std::sync::Arc<crate::model::Series>,
        ts: TimestampNs,
        value: Option<f64>,
        quality: Quality,
    ) {
        let key = series.key.as_str();
        let mut p = lock(&self.pending);
        let Pending {
            channels,
            buckets,
            skipped,
            ..
        } = &mut *p;
        // One look-up per reading (a channel's first reading of the interval takes a second).
        let full = channels.len() >= MAX_PENDING_CHANNELS;
        let kept = match channels.get_mut(key) {
            Some(channel) => add_to_tiers(&mut channel.buckets, buckets, ts, value, quality),
            None if full => false,
            None => {
                let key = crate::model::SeriesKey(std::sync::Arc::clone(series));
                let channel = channels.entry(key).or_default();
                add_to_tiers(&mut channel.buckets, buckets, ts, value, quality)
            }
        };
        // A burst (a backlog replayed by a node, many channels at once) is written before the
        // interval is over, so that neither the buckets in memory nor the transaction writing
        // them grow with it.
        if *buckets == FLUSH_AT_BUCKETS {
            self.flush_due.notify_one();
        }
        if !kept {
            *skipped += 1;
        }
    }

    /// Add one alert event (the engine, for every event it commits).
    pub fn record_alert(&self, alert: &Alert) {
        let mut p = lock(&self.pending);
        if p.alerts.len() < MAX_PENDING_ALERTS {
            p.alerts.push(alert.clone());
        } else {
            p.skipped += 1;
        }
    }

    /// The history's state now.
    #[must_use]
    pub fn stats(&self) -> HistoryStats {
        let store = lock(&self.store);
        let reason = match &store.closed {
            None => None,
            Some(Closed::ForSpace) => Some(format!(
                "given up for free space: less than {} free on its file system; it starts again at {} free",
                crate::engine::summary::human_bytes(self.min_free),
                crate::engine::summary::human_bytes(self.min_free.saturating_mul(RESUME_FACTOR))
            )),
            Some(Closed::Error { reason, .. }) => Some(reason.clone()),
        };
        HistoryStats {
            available: store.db.is_some(),
            reason,
            file_bytes: file_len(&self.path),
            window: self.settings.window,
            kept: store.kept,
            skipped: store.skipped + lock(&self.pending).skipped,
            given_up_for_space: store.given_up_for_space,
        }
    }

    /// Write what is held in memory to the file (every [`FLUSH_INTERVAL`], and at the stop).
    /// `now` is the gateway's time, for pruning.
    pub fn flush(&self, now: TimestampNs) {
        let mut store = lock(&self.store);
        if store.db.is_none() {
            self.try_open(&mut store);
        }
        let pending = std::mem::take(&mut *lock(&self.pending));
        store.skipped += pending.skipped;
        if store.db.is_none() {
            store.skipped += pending
                .channels
                .values()
                .map(|c| {
                    c.tier(TIERS[0])
                        .map(|(_, b)| u64::from(b.count + b.bad))
                        .sum::<u64>()
                })
                .sum::<u64>();
            return;
        }
        if self.short_of_space() {
            self.give_up_for_space(&mut store);
            return;
        }
        let result = catch_unwind(AssertUnwindSafe(|| self.write(&mut store, pending, now)));
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(format!(
                "redb panicked: {}",
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default()
            )),
        };
        if let Some(reason) = failure {
            self.fail(&mut store, &reason);
            return;
        }
        self.keep_within_bound(&mut store);
    }

    /// The buckets of `key` from `from` to `to` in the finest tier that still holds `from`
    /// (the file and what is in memory), oldest first. Empty when the history is unavailable.
    #[must_use]
    pub fn curve(&self, key: &str, from: TimestampNs, to: TimestampNs, tier: Tier) -> Curve {
        let store = lock(&self.store);
        let mut buckets: BTreeMap<u32, Bucket> = BTreeMap::new();
        let (Some(lo), Some(hi)) = (
            bucket_index(from, tier.width_secs),
            bucket_index(to, tier.width_secs),
        ) else {
            return Curve::default();
        };
        if let (Some(db), Some(&id)) = (&store.db, store.ids.get(key)) {
            let read = catch_unwind(AssertUnwindSafe(|| -> Result<(), redb::Error> {
                let tx = db.begin_read()?;
                let table = match tx.open_table(tier.table()) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                for row in table.range(bucket_key(id, lo)..=bucket_key(id, hi))? {
                    let (k, v) = row?;
                    #[allow(clippy::cast_possible_truncation)]
                    let index = k.value() as u32;
                    buckets.insert(
                        index,
                        Bucket::from_stored(bucket_start(index, tier.width_secs), v.value()),
                    );
                }
                Ok(())
            }));
            if !matches!(read, Ok(Ok(()))) {
                // The next flush finds the error too and reports it; the page shows what is
                // in memory.
                buckets.clear();
            }
        }
        if let Some(c) = lock(&self.pending).channels.get(key) {
            for (i, b) in c.tier(tier).filter(|(i, _)| (lo..=hi).contains(i)) {
                buckets
                    .entry(i)
                    .or_insert_with(|| Bucket::empty(b.start_ns))
                    .merge(b);
            }
        }
        drop(store);
        Curve {
            width_secs: tier.width_secs,
            buckets: buckets.into_values().collect(),
        }
    }

    /// Every channel the file knows, by key (empty when the history is unavailable).
    #[must_use]
    pub fn channels(&self) -> Vec<ChannelMeta> {
        let store = lock(&self.store);
        let Some(db) = &store.db else {
            return Vec::new();
        };
        let read = catch_unwind(AssertUnwindSafe(
            || -> Result<Vec<ChannelMeta>, redb::Error> {
                let tx = db.begin_read()?;
                let table = match tx.open_table(CHANNEL_META) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(e.into()),
                };
                let mut out = Vec::new();
                for row in table.iter()? {
                    let (k, v) = row?;
                    let (device, kind, unit) = v.value();
                    let kind = crate::model::QuantityKind::ALL
                        .into_iter()
                        .find(|q| q.measurement() == kind)
                        .unwrap_or(crate::model::QuantityKind::Other);
                    out.push(ChannelMeta {
                        key: k.value().to_owned(),
                        device: device.to_owned(),
                        kind,
                        unit: unit.to_owned(),
                    });
                }
                Ok(out)
            },
        ));
        read.ok().and_then(Result::ok).unwrap_or_default()
    }

    /// The alert events since `from`, newest first, at most `limit` (the file and memory).
    #[must_use]
    pub fn alerts(&self, from: TimestampNs, limit: usize) -> Vec<Alert> {
        self.alerts_between(from, TimestampNs::MAX, limit)
    }

    /// The alert events with data times in `from..to`, newest first, at most `limit`.
    #[must_use]
    pub fn alerts_between(&self, from: TimestampNs, to: TimestampNs, limit: usize) -> Vec<Alert> {
        let store = lock(&self.store);
        let mut out: Vec<Alert> = lock(&self.pending)
            .alerts
            .iter()
            .rev()
            .filter(|a| a.event_at >= from && a.event_at < to)
            .cloned()
            .collect();
        if let Some(db) = &store.db {
            let read = catch_unwind(AssertUnwindSafe(|| -> Result<Vec<Alert>, redb::Error> {
                let tx = db.begin_read()?;
                let table = match tx.open_table(ALERTS) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(e.into()),
                };
                let lo = u64::try_from(from).unwrap_or(0);
                let hi = u64::try_from(to).unwrap_or(0);
                let mut found = Vec::new();
                for row in table.range(lo..hi)?.rev() {
                    if found.len() >= limit {
                        break;
                    }
                    let (_, v) = row?;
                    // An event that no longer reads (another version's format) is skipped.
                    if let Ok(a) = serde_json::from_slice::<Alert>(v.value()) {
                        found.push(a);
                    }
                }
                Ok(found)
            }));
            if let Ok(Ok(found)) = read {
                out.extend(found);
            }
        }
        drop(store);
        out.truncate(limit);
        out
    }

    /// Free space is below the bound (unknown counts as enough: no bound can be applied).
    fn short_of_space(&self) -> bool {
        self.min_free > 0
            && crate::spool::free_bytes(&self.path).is_some_and(|free| free < self.min_free)
    }

    /// Close and delete the file: the spool needs the room more than the curves do.
    fn give_up_for_space(&self, store: &mut Store) {
        store.db = None;
        store.ids.clear();
        store.given_up_for_space += 1;
        store.closed = Some(Closed::ForSpace);
        let removed = std::fs::remove_file(&self.path);
        warn!(path = %self.path.display(), min_free = self.min_free, removed = removed.is_ok(),
              "Free space is low: the local history is deleted so that the spool keeps its room; it starts again when space is back.");
    }

    fn fail(&self, store: &mut Store, reason: &str) {
        store.db = None;
        store.ids.clear();
        store.closed = Some(Closed::Error {
            reason: reason.to_owned(),
            at: Instant::now(),
        });
        if let Some(suppressed) = store.log.allow(LOG_FAILING) {
            warn!(path = %self.path.display(), error = %reason, suppressed,
                  "The local history cannot be written; curves miss this time (readings are not affected). Trying again later.");
        }
    }

    /// Open the file when it is closed and may be opened again; a file that cannot be read is
    /// replaced (the history is a copy of what the store has).
    fn try_open(&self, store: &mut Store) {
        match &store.closed {
            Some(Closed::ForSpace) => {
                let enough = self.min_free.saturating_mul(RESUME_FACTOR);
                if crate::spool::free_bytes(&self.path).is_some_and(|free| free < enough) {
                    return;
                }
            }
            Some(Closed::Error { at, .. }) if at.elapsed() < REOPEN_INTERVAL => return,
            _ => {}
        }
        if self.short_of_space() {
            if store.closed != Some(Closed::ForSpace) {
                self.give_up_for_space(store);
            }
            return;
        }
        let opened = catch_unwind(AssertUnwindSafe(|| self.open_file(true)));
        match opened {
            Ok(Ok((db, ids))) => {
                store.next_id = ids.values().max().map_or(0, |m| m.saturating_add(1));
                store.ids = ids;
                store.db = Some(db);
                if store.closed.take().is_some() {
                    info!(path = %self.path.display(), "The local history is written again.");
                }
            }
            Ok(Err(e)) => self.fail(store, &e),
            Err(_) => self.fail(store, "redb panicked while opening the file"),
        }
    }

    /// Open (or create) the file and read the channel ids; a file redb cannot read is deleted
    /// and created anew when `replace_damaged`, else an error.
    fn open_file(&self, replace_damaged: bool) -> Result<(Database, HashMap<String, u32>), String> {
        crate::spool::prepare_dir(&self.path).map_err(|e| {
            format!(
                "cannot create the directory of {}: {e}",
                self.path.display()
            )
        })?;
        let create = || {
            let mut builder = Database::builder();
            builder.set_cache_size(CACHE_BYTES);
            builder.create(&self.path)
        };
        let db = match create() {
            Ok(db) => db,
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if crate::spool::classify(&e) != crate::spool::IoClass::Damage =>
            {
                return Err(format!("cannot open {}: {e}", self.path.display()));
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(format!(
                    "{} is open in another process (the running gateway)",
                    self.path.display()
                ));
            }
            Err(e) if !replace_damaged => {
                return Err(format!("cannot read {}: {e}", self.path.display()));
            }
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "The local history file cannot be read; it is replaced by an empty one (the store keeps everything).");
                std::fs::remove_file(&self.path)
                    .map_err(|e| format!("cannot replace {}: {e}", self.path.display()))?;
                create().map_err(|e| format!("cannot create {}: {e}", self.path.display()))?
            }
        };
        let _ = crate::spool::restrict_file(&self.path);
        let ids = (|| -> Result<HashMap<String, u32>, redb::Error> {
            let tx = db.begin_write()?;
            let mut ids = HashMap::new();
            {
                let table = tx.open_table(CHANNELS)?;
                for row in table.iter()? {
                    let (k, v) = row?;
                    ids.insert(k.value().to_owned(), v.value());
                }
            }
            tx.commit()?;
            Ok(ids)
        })()
        .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        Ok((db, ids))
    }

    /// One transaction: merge the buckets, add the alert events, prune what left the window.
    fn write(
        &self,
        store: &mut Store,
        pending: Pending,
        now: TimestampNs,
    ) -> Result<(), redb::Error> {
        let Store {
            db,
            ids,
            next_id,
            kept,
            pruned,
            ..
        } = store;
        let Some(db) = db.as_ref() else {
            return Ok(());
        };
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        let mut new_ids = Vec::new();
        {
            let mut channels = tx.open_table(CHANNELS)?;
            let mut meta = tx.open_table(CHANNEL_META)?;
            let mut tables = [
                tx.open_table(TIERS[0].table())?,
                tx.open_table(TIERS[1].table())?,
                tx.open_table(TIERS[2].table())?,
            ];
            // In key order: new channels by key (their ids then ascend with it), then every
            // tier's buckets by (channel id, bucket index). redb's write buffer is half of
            // CACHE_BYTES; a transaction touching more leaves than that writes them out and
            // reads them back when it comes again to a leaf. In key order each leaf is read and
            // written once: on a 5,000-channel burst the random order of the map spent 45 % of
            // the gateway's CPU in that pwrite/pread traffic (issue 11, perf).
            let mut pending_channels: Vec<(crate::model::SeriesKey, PendingChannel)> =
                pending.channels.into_iter().collect();
            pending_channels.sort_unstable_by(|a, b| a.0 .0.key.cmp(&b.0 .0.key));
            let mut written: Vec<(u32, Vec<TierBucket>)> =
                Vec::with_capacity(pending_channels.len());
            for (crate::model::SeriesKey(series), c) in pending_channels {
                let key = &series.key;
                let id = if let Some(&id) = ids.get(key.as_str()) {
                    id
                } else {
                    let id = *next_id;
                    *next_id = next_id.saturating_add(1);
                    channels.insert(key.as_str(), id)?;
                    meta.insert(
                        key.as_str(),
                        (
                            series.device.as_str(),
                            series.kind.measurement(),
                            series.unit.as_str(),
                        ),
                    )?;
                    new_ids.push((key.clone(), id));
                    id
                };
                let mut buckets = c.buckets;
                // By tier, then bucket index: each tier's table below is written in key order.
                buckets.sort_unstable_by_key(|(t, i, _)| (*t, *i));
                written.push((id, buckets));
            }
            written.sort_unstable_by_key(|(id, _)| *id);
            for tier in &TIERS {
                let table = &mut tables[tier.index];
                let t = tier.tag();
                for (id, buckets) in &mut written {
                    for (_, i, b) in buckets.iter_mut().filter(|(k, ..)| *k == t) {
                        let k = bucket_key(*id, *i);
                        let old = table.get(k)?.map(|v| v.value());
                        if let Some(old) = old {
                            b.merge(&Bucket::from_stored(b.start_ns, old));
                        }
                        table.insert(k, b.stored())?;
                    }
                }
            }
            drop(written);
            // Prune: per channel, the buckets older than each tier keeps; at most every
            // PRUNE_INTERVAL of gateway time, or when the byte bound changed what is kept (a
            // range removal per channel and tier on every flush was most of the history's CPU
            // on a 5,000-channel site, issue 9 §Performance).
            let prune = now >= pruned.0.saturating_add(PRUNE_INTERVAL_NS) || pruned.1 != *kept;
            if prune {
                *pruned = (now, *kept);
                let mut all_ids: Vec<u32> = ids
                    .values()
                    .copied()
                    .chain(new_ids.iter().map(|(_, id)| *id))
                    .collect();
                // In key order, as the merge above.
                all_ids.sort_unstable();
                for tier in &TIERS {
                    let keep = tier.keep.min(*kept);
                    let keep_ns = i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX);
                    let Some(cut) =
                        bucket_index(now.saturating_sub(keep_ns).max(0), tier.width_secs)
                    else {
                        continue;
                    };
                    let table = &mut tables[tier.index];
                    for &id in &all_ids {
                        table.retain_in(bucket_key(id, 0)..bucket_key(id, cut), |_, _| false)?;
                    }
                }
            }
            let mut alerts = tx.open_table(ALERTS)?;
            for a in pending.alerts {
                let Ok(json) = serde_json::to_vec(&a) else {
                    continue;
                };
                let mut k = u64::try_from(a.event_at).unwrap_or(0);
                while alerts.get(k)?.is_some() {
                    k += 1;
                }
                alerts.insert(k, json.as_slice())?;
            }
            let keep_ns = i64::try_from(kept.as_nanos()).unwrap_or(i64::MAX);
            let cut = u64::try_from(now.saturating_sub(keep_ns)).unwrap_or(0);
            alerts.retain_in(..cut, |_, _| false)?;
            let over = alerts.len()?.saturating_sub(MAX_ALERT_EVENTS);
            if over > 0 {
                let oldest: Vec<u64> = alerts
                    .iter()?
                    .take(usize::try_from(over).unwrap_or(usize::MAX))
                    .filter_map(|r| r.ok().map(|(k, _)| k.value()))
                    .collect();
                for k in oldest {
                    alerts.remove(k)?;
                }
            }
        }
        tx.commit()?;
        ids.extend(new_ids);
        Ok(())
    }

    /// Above `max_bytes`: compact; still above: keep an eighth less (down to [`MIN_KEPT`]) from
    /// the next flush on. Well below half: grow back towards the window.
    fn keep_within_bound(&self, store: &mut Store) {
        let max = self.settings.max_bytes;
        let len = file_len(&self.path);
        if len > max {
            if let Some(db) = store.db.as_mut() {
                let compacted = catch_unwind(AssertUnwindSafe(|| db.compact()));
                if !matches!(compacted, Ok(Ok(_))) {
                    self.fail(store, "compaction failed");
                    return;
                }
            }
            if file_len(&self.path) > max {
                store.kept = (store.kept - store.kept / 8).max(MIN_KEPT);
                if let Some(suppressed) = store.log.allow("history bound") {
                    warn!(max_bytes = max, kept = %humantime::format_duration(store.kept), suppressed,
                          "The local history reached its max_bytes; it keeps a shorter time now (raise [console.history] max_bytes to keep the whole window).");
                }
            }
        } else if len < max / 2 && store.kept < self.settings.window {
            store.kept = (store.kept + store.kept / 8).min(self.settings.window);
        }
    }
}

fn file_len(path: &Path) -> u64 {
    crate::spool::file_len(path)
}

/// The history's writer task: flush every [`FLUSH_INTERVAL`] off the runtime's threads, at once
/// when [`FLUSH_AT_BUCKETS`] buckets wait, and once more when `stop` is cancelled (after the
/// engine's last commit).
pub async fn keep_writing(
    history: std::sync::Arc<History>,
    clock: std::sync::Arc<dyn crate::model::Clock>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut every = tokio::time::interval(FLUSH_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            _ = every.tick() => false,
            () = history.flush_due.notified() => false,
        };
        let h = std::sync::Arc::clone(&history);
        let now = clock.now_ns();
        // A panic in the flush is caught inside it; a failed join only loses this flush.
        let _ = crate::supervise::spawn_blocking(move || h.flush(now)).await;
        if stopping {
            return;
        }
    }
}
