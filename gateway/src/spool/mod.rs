//! The durable spool: the single hand-off between the site and the network (docs/ARCHITECTURE.md
//! §Data flow). A reading or alert is acknowledged to nobody until it is committed here, and a
//! sink deletes nothing until its receiver answered success.
//!
//! Owns one on-disk file (redb) with its two streams, the sink cursors, the size bound, the
//! free-space bound and the dead-letter table; the gateway runs two such files, points in one,
//! alerts and the engine's state in the other (`split.rs`); `open.rs` keeps the file usable (reopen after a
//! storage error, damage: move aside, salvage, alert), `disk.rs` the file system details. It
//! does not build line protocol (the engine does, validated with [`crate::record::validate`]),
//! does not talk to any network (the sinks do), and does not log what it drops:
//! [`Spool::append`] returns the count so the caller logs it. It logs only its own states
//! (unavailable, low free space, a damaged file), on change and then at most once a minute.
//!
//! # Invariants
//! 1. **Durable before acknowledged.** Every mutating call is one redb write transaction with
//!    [`Durability::Immediate`]: when it returns `Ok`, the change has been fsynced.
//! 2. **Ordered, never reused sequences.** One `u64` sequence per file is shared by its streams;
//!    it only grows and survives restarts (it is stored in the same transaction as the chunk).
//! 3. **A sink never loses or repeats a chunk** across restarts: its cursor (next sequence to
//!    read) is durable and only moves forward, in the same transaction as the deletions it causes.
//! 4. **Deleted only when every reader of its stream has passed it** — or by the size bound,
//!    which drops the oldest chunks first and counts (and reports to the caller) only records
//!    some reader of the stream had not delivered. A sink reads only the streams it was
//!    registered for ([`Reader`]), so it pins nothing elsewhere.
//! 5. **Points never delay or evict alerts within their share; alerts never refuse points:**
//!    separate tables and cursors; alerts hold at most `max_bytes /` [`ALERT_SHARE`] (an alert
//!    append drops older alerts beyond it), dead letters `max_bytes /` [`DEAD_LETTER_SHARE`],
//!    and points the rest. No append is refused for want of room (docs/ARCHITECTURE.md
//!    §Invariants S5).
//! 6. **Counters are not scanned.** Chunk, record and byte counts, per-sink backlogs and the
//!    dropped-records total live in the meta and cursor tables, updated in the same transaction
//!    as the data, and mirrored in memory so [`Spool::stats`] is a copy.
//!
//! # On-disk layout (of each file)
//! | table | key | value |
//! |---|---|---|
//! | `points`, `alerts` | `u64` sequence | `(records: u32, appended_ns: i64, body: &[u8])` — newline-terminated lines |
//! | `cursors` | `(stream code: u8, sink name: &str)` | `(next sequence to read: u64, backlog records: u64)` |
//! | `meta` | `&str` name | `u64` (next sequence, per-stream counts, totals; see the `META_*` keys) |
//! | `dead_letters` | `u64` id | `(stream, sink, first_seq, last_seq, records, at_ns, reason, body)` |
//!
//! "Bytes" in the counters means logical bytes: the sum of chunk body lengths. The size bound
//! keeps them within `max_bytes /` [`LOGICAL_BUDGET_DIVISOR`], and after each committed change
//! the file is compacted when it is above `max_bytes`, so `max_bytes` bounds the file on disk
//! (docs/ARCHITECTURE.md §Spool layout, Size bound; §Crate pitfalls, redb).
//!
//! # Paths
//! - **Write** ([`Spool::append`]): check the chunk fits at all; in one transaction drop oldest
//!   points until it fits, insert it under the next sequence, add its records to every sink's
//!   backlog, store counters; commit; then wake sinks through [`Spool::appended`].
//! - **Read** ([`Spool::read_batch`]): take the sink's cursor and a read snapshot together, then
//!   concatenate consecutive chunks from the cursor up to `max_records` (at least one chunk).
//! - **Delete** ([`Spool::ack`], [`Spool::dead_letter`]): in one transaction move the sink's
//!   cursor past the batch (optionally storing the batch as a dead letter first), then delete
//!   every chunk below the smallest cursor of the stream's readers. With no reader of a stream,
//!   chunks stay until the size bound removes them.
//!
//! All methods block (every commit is an fsync): call them from `tokio::task::spawn_blocking`.

mod disk;
mod landed;
pub mod offline;
mod open;
mod split;

pub use disk::{classify, file_len, free_bytes, prepare_dir, restrict_file, IoClass};
use open::{panic_message, Health};
pub use open::{AlertIdentity, DamageReport};
pub use split::{alerts_path, points_path, MovedOut, Spools, ALERTS_FILE, POINTS_FILE};

use crate::model::now_ns;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use serde::Deserialize;
use tokio::sync::Notify;
use tracing::warn;

/// Default size bound, in logical bytes (chunk bodies), over both streams and the dead letters.
///
/// A typical site has about 200 channels sampled every 10 s at about 120 B per line: 20 lines/s
/// × 120 B = 2,400 B/s = 207,360,000 B ≈ 198 MiB per day. `max_bytes` bounds the file on disk
/// and half of it holds data ([`LOGICAL_BUDGET_DIVISOR`]), so 256 MiB rides out an uplink outage
/// of about 0.65 days (≈ 15 h) before the oldest points are dropped. Sites that must bridge a
/// long weekend raise `max_bytes` (1 GiB ≈ 2.6 days).
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Default free space the spool leaves on its file system (`[spool] min_free_bytes`): while
/// less than this (plus the chunk) is free, an append does not let the spool grow — it drops
/// the oldest points (counted) to make room inside the file instead (issue 10 item 6). 4 MiB
/// leaves the system room for its logs and a package update on the 16–64 MB flash of a site
/// box, where a larger default could not be met at all and would make every append drop.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 4 * 1024 * 1024;

/// Smallest `max_bytes` a configuration may set: below this a single flush of a busy site would
/// not fit and every append would fail.
pub const MIN_MAX_BYTES: u64 = 1024 * 1024;

/// The logical bytes (chunk bodies and dead letters) the size bound keeps are at most
/// `max_bytes / LOGICAL_BUDGET_DIVISOR`; the rest of `max_bytes` is for redb's own overhead, so
/// that `max_bytes` bounds the file on disk (issue 10 item 8; docs/ARCHITECTURE.md §Spool
/// layout, Size bound). Why 2: redb grows its file by doubling its usable size (redb 4.6,
/// `page_manager.rs` `grow`), rounds each value up to a power-of-two number of pages (buddy
/// allocator) and writes copy-on-write, so a file compacted to hold L logical bytes grows to
/// about 2 × L before it reuses freed pages. Measured (`footprint_tests.rs`, 2 MiB bound,
/// 20 × the bound through the spool): with logical bytes kept at the whole bound the file
/// peaked at 3.3–8.7 MB; at half, with compaction, it stays within the bound.
pub const LOGICAL_BUDGET_DIVISOR: u64 = 2;
/// While free space is below `min_free_bytes`, the spool keeps to what it stored when the
/// shortage began, but to at least this fraction (1/n) of its file's size then: room for the
/// chunks in flight to the sinks (the file has that much in pages freed by delivered data), and
/// half of the [`LOGICAL_BUDGET_DIVISOR`] share, because copy-on-write needs new pages before
/// the old ones are free (with half, a file that had just doubled grew once more: free space
/// fell to 0.8 MiB against a 2 MiB minimum in `min_free_bytes_keeps_free_space_...`).
pub const LOW_SPACE_FILE_DIVISOR: u64 = 2 * LOGICAL_BUDGET_DIVISOR;

/// Most compaction rounds one call runs when the file is above `max_bytes` after its commit:
/// compact, and while still above, drop the oldest points chunk (counted like any drop) and
/// compact again. Bounds the time a call can take; when the rounds run out the file is left as
/// it is and the next call tries again.
pub const MAX_COMPACTION_ROUNDS: u32 = 4;

/// Largest piece an appended chunk is stored in: a longer chunk is split at line ends into
/// consecutive sequences (read back as one batch). redb stores a value in a power-of-two number
/// of 4 KiB pages, so a 900 KB flush would take a 1 MiB page, and at a 2 MiB bound one such page
/// cannot be placed below the bound at all; 60 KiB pieces take 64 KiB pages (≤ 7 % rounding).
pub const MAX_PIECE_BYTES: usize = 60 * 1024;

/// Page cache redb may use (its read cache and a transaction's write buffer together). redb's
/// default is 1 GiB, which an ARM box with 512 MiB of RAM does not have; the spool is a FIFO, so
/// only the head and tail pages are hot, and a page missed here is read from the kernel's page
/// cache, not from the card. A running gateway fills whatever it is given: at 16 MiB a
/// 5,000-channel site peaked at 43.8 MB after a minute, at 4 MiB at 40.9 MB, with the same
/// throughput (README §Performance, issue 14).
pub const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Dead letters may hold at most `budget / DEAD_LETTER_SHARE` logical bytes, where the budget
/// is `max_bytes /` [`LOGICAL_BUDGET_DIVISOR`] (8 MiB by default). They are kept for diagnosis, not for delivery, so when a new one would exceed this
/// share the oldest dead letters are evicted (counted in
/// [`SpoolStats::dead_letters_evicted_total`]) and the points keep the rest of the bound. A single
/// letter larger than the share keeps its reason and as much of its body as fits.
pub const DEAD_LETTER_SHARE: u64 = 16;

/// Alerts may hold at most `budget / ALERT_SHARE` logical bytes, the budget being
/// `max_bytes /` [`LOGICAL_BUDGET_DIVISOR`] (16 MiB by default, about 28,000 alert events of
/// ~600 B; 64 KiB, ~100 events, at the 1 MiB minimum). Within their
/// share alerts are kept longest: only an alert append drops older alerts (oldest first, which
/// are the delivered ones before the undelivered), and points never do, except alerts above the
/// share (docs/ARCHITECTURE.md §Spool layout). With dead letters bounded by
/// [`DEAD_LETTER_SHARE`], points always keep `budget × (1 − 1/8 − 1/16)`: a flapping alarm can
/// never stop readings from being stored (issue 14 item 1).
pub const ALERT_SHARE: u64 = 8;

/// Longest reason stored with a dead letter. A receiver (or a proxy in front of it) may answer a
/// rejected write with a whole HTML page; the first 4 KiB say what went wrong.
pub const MAX_REASON_BYTES: usize = 4096;

/// First sequence number of a fresh spool (0 is never used, so it can mean "nothing yet").
const FIRST_SEQ: u64 = 1;

/// Value of a chunk: `(records, appended_ns, body)`.
type ChunkValue = (u32, i64, &'static [u8]);
/// Value of a dead letter: `(stream code, sink, first_seq, last_seq, records, at_ns, reason, body)`.
type DeadLetterValue = (
    u8,
    &'static str,
    u64,
    u64,
    u64,
    i64,
    &'static str,
    &'static [u8],
);

const POINTS: TableDefinition<u64, ChunkValue> = TableDefinition::new("points");
const ALERTS: TableDefinition<u64, ChunkValue> = TableDefinition::new("alerts");
const CURSORS: TableDefinition<(u8, &str), (u64, u64)> = TableDefinition::new("cursors");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const DEAD_LETTERS: TableDefinition<u64, DeadLetterValue> = TableDefinition::new("dead_letters");

/// The engine's saved rule state, one entry per key (the keys and values are the engine's:
/// `h`, `c/<channel>`, `d/<device>`, `p/<pair>`, `a/<alert id>`, or `rules` from before
/// format 2); changed with the alerts it produced ([`Spool::append_with_state`]).
const ENGINE_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("engine_state");
const META_NEXT_SEQ: &str = "next_seq";

/// Changes to the engine's saved state, applied in the transaction of a chunk
/// ([`Spool::append_with_state`]): only the entries that changed are written, so the SD card is
/// not rewritten with the whole state every few seconds (issue 11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDelta {
    /// Entries to write (replacing the entry of that key), or to remove (`None`).
    pub entries: BTreeMap<String, Option<Vec<u8>>>,
}

impl StateDelta {
    /// The entries written, as [`Spool::load_state`] gives them back at the next start (a test's
    /// restart without a spool).
    #[cfg(test)]
    pub(crate) fn into_written(self) -> Vec<(String, Vec<u8>)> {
        self.entries
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }

    /// Nothing to change.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes this delta writes (keys and values of the entries written, keys removed): the
    /// figure the state-write measurement adds up.
    #[must_use]
    pub fn written_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum()
    }

    /// Take `newer` on top of this one (a later change of a key wins).
    pub fn merge(&mut self, newer: Self) {
        self.entries.extend(newer.entries);
    }

    fn apply(&self, table: &mut Table<&str, &[u8]>) -> Result<(), redb::StorageError> {
        for (k, v) in &self.entries {
            match v {
                Some(v) => {
                    table.insert(k.as_str(), v.as_slice())?;
                }
                None => {
                    table.remove(k.as_str())?;
                }
            }
        }
        Ok(())
    }
}
const META_CHUNKS: [&str; 2] = ["points.chunks", "alerts.chunks"];
const META_RECORDS: [&str; 2] = ["points.records", "alerts.records"];
const META_BYTES: [&str; 2] = ["points.bytes", "alerts.bytes"];
const META_DROPPED: &str = "points.dropped_records_total";
const META_ALERTS_DROPPED: &str = "alerts.dropped_records_total";
const META_DEAD_NEXT_ID: &str = "dead_letters.next_id";
const META_DEAD_COUNT: &str = "dead_letters.count";
const META_DEAD_BYTES: &str = "dead_letters.bytes";
const META_DEAD_EVICTED: &str = "dead_letters.evicted_total";

/// The spool's configuration (`[spool]` in the gateway config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Size bound in logical bytes; see [`DEFAULT_MAX_BYTES`] for what the default buys.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Free space to leave on the spool's file system; see [`DEFAULT_MIN_FREE_BYTES`]. 0 turns
    /// the check off.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
}

const fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

const fn default_min_free_bytes() -> u64 {
    DEFAULT_MIN_FREE_BYTES
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
        }
    }
}

impl SpoolConfig {
    /// Check the values; `path` is where this table sits in the config (e.g. `spool`).
    ///
    /// # Errors
    /// A message naming the field and the fix.
    pub fn validate(&self, path: &str) -> Result<(), String> {
        if self.max_bytes < MIN_MAX_BYTES {
            return Err(format!(
                "{path}.max_bytes: {} is below the minimum {MIN_MAX_BYTES} (1 MiB); the default is \
                 {DEFAULT_MAX_BYTES} (256 MiB, about 15 h of a 200-channel site)",
                self.max_bytes
            ));
        }
        Ok(())
    }
}

/// One of the spool's independent streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// Measured and derived points, line protocol. Subject to the size bound.
    Points,
    /// Alerts. Never dropped by the size bound, never behind points.
    Alerts,
}

impl Stream {
    /// Both streams, in code order.
    pub const ALL: [Self; 2] = [Self::Points, Self::Alerts];

    /// The stream's code in the cursor and dead-letter tables (part of the file format).
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Points => 0,
            Self::Alerts => 1,
        }
    }

    /// The stream for a stored code.
    #[must_use]
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Points),
            1 => Some(Self::Alerts),
            _ => None,
        }
    }

    /// The stream's name, for logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Points => "points",
            Self::Alerts => "alerts",
        }
    }

    const fn index(self) -> usize {
        self.code() as usize
    }

    const fn table(self) -> TableDefinition<'static, u64, ChunkValue> {
        match self {
            Self::Points => POINTS,
            Self::Alerts => ALERTS,
        }
    }
}

/// A sink and the streams it reads ([`Spool::open_for`]). A sink has a cursor only in the
/// streams it reads, so it pins nothing in the others (issue 14 item 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    /// The sink's name (its cursor name).
    pub sink: String,
    /// The streams it reads.
    pub streams: Vec<Stream>,
}

impl Reader {
    /// `sink` reading `streams`.
    #[must_use]
    pub fn new(sink: &str, streams: &[Stream]) -> Self {
        Self {
            sink: sink.to_owned(),
            streams: streams.to_vec(),
        }
    }
}

/// What [`Spool::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The sequence the chunk was stored under.
    pub seq: u64,
    /// Records of older points dropped to make room that some reader of the points stream had
    /// not delivered yet (the caller must log them). Delivered points are reclaimed silently.
    pub dropped_records: u64,
    /// Alert records dropped to keep alerts within their share ([`ALERT_SHARE`]) that some
    /// reader of the alerts stream had not delivered yet.
    pub dropped_alert_records: u64,
}

/// Consecutive chunks of one stream, read for one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Sequence of the first chunk.
    pub first_seq: u64,
    /// Sequence of the last chunk; [`Spool::ack`] moves the cursor past it.
    pub last_seq: u64,
    /// Records (lines) in `body`.
    pub records: u64,
    /// The chunks' bodies, concatenated (newline-terminated lines).
    pub body: Vec<u8>,
    /// When the oldest chunk was appended, UTC nanoseconds (wall clock of the gateway).
    pub oldest_append_ns: i64,
}

/// A batch a receiver refused, kept for diagnosis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Id in the dead-letter table (grows; never reused).
    pub id: u64,
    /// The stream the batch came from.
    pub stream: Stream,
    /// The sink whose receiver refused it.
    pub sink: String,
    /// First sequence of the batch.
    pub first_seq: u64,
    /// Last sequence of the batch.
    pub last_seq: u64,
    /// Records in the batch.
    pub records: u64,
    /// When it was refused, UTC nanoseconds.
    pub at_ns: i64,
    /// The receiver's answer (truncated to [`MAX_REASON_BYTES`]).
    pub reason: String,
    /// The batch body as read from the spool.
    pub body: Vec<u8>,
}

/// Backlog of one sink: records appended but not yet passed by its cursor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkBacklog {
    /// Points records not yet delivered.
    pub points_records: u64,
    /// Alert records not yet delivered.
    pub alerts_records: u64,
}

/// Counts for a periodic summary; [`Spool::stats`] copies them from memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Points chunks stored.
    pub points_chunks: u64,
    /// Points records stored.
    pub points_records: u64,
    /// Logical bytes of stored points.
    pub points_bytes: u64,
    /// Alert chunks stored.
    pub alerts_chunks: u64,
    /// Alert records stored.
    pub alerts_records: u64,
    /// Logical bytes of stored alerts.
    pub alerts_bytes: u64,
    /// Undelivered points records dropped by the size bound since the spool file was created.
    pub dropped_records_total: u64,
    /// Undelivered alert records dropped to keep alerts within [`ALERT_SHARE`], since the
    /// spool file was created.
    pub alerts_dropped_total: u64,
    /// Dead letters stored.
    pub dead_letter_count: u64,
    /// Logical bytes of stored dead letters (body + reason).
    pub dead_letter_bytes: u64,
    /// Dead letters evicted to keep within their share of the bound.
    pub dead_letters_evicted_total: u64,
    /// Whether the file is open now (false while it is unavailable and retried).
    pub available: bool,
    /// The file's size on disk, bytes.
    pub file_bytes: u64,
    /// Times the file was opened again after a storage error or a caught panic.
    pub reopens_total: u64,
    /// Panics caught inside the storage layer.
    pub storage_panics_total: u64,
    /// Damaged files moved aside and replaced by a fresh one.
    pub damaged_files_total: u64,
    /// Compactions run to keep the file within `max_bytes` (each round counts).
    pub compactions_total: u64,
    /// Backlog per registered sink.
    pub sinks: BTreeMap<String, SinkBacklog>,
}

/// Why a spool operation failed. Every variant names the spool file.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The data directory or the file cannot be written by this process (start-up error).
    #[error("spool {}: cannot write it: {source}; the gateway needs to create and write files in data_dir (check the path, its owner and mode, e.g. `chown anju: /var/lib/anju`)", path.display())]
    Permission {
        /// The spool file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not available now (it could not be opened, or was closed after a storage
    /// error); it is opened again on a call after `retry_in`. Nothing was changed.
    #[error("spool {}: not available ({reason}); the file is opened again in {retry_in:?}", path.display())]
    Unavailable {
        /// The spool file.
        path: PathBuf,
        /// The last error.
        reason: String,
        /// When the next call tries to open it again.
        retry_in: Duration,
    },
    /// redb panicked inside a call (a damaged file, or a bug). Caught; the file is closed and
    /// checked when it is opened again. Nothing was changed.
    #[error("spool {}: the storage layer panicked ({message}); the file is checked and reopened", path.display())]
    Panicked {
        /// The spool file.
        path: PathBuf,
        /// The panic message.
        message: String,
    },
    /// The file could not be opened as a spool (start-up error).
    #[error("cannot open spool {}: {source}; {hint}", path.display())]
    Open {
        /// The spool file.
        path: PathBuf,
        /// What redb reported.
        source: Box<DatabaseError>,
        /// How to fix it.
        hint: &'static str,
    },
    /// A read or write of the open file failed.
    #[error("spool {}: storage error: {source}", path.display())]
    Storage {
        /// The spool file.
        path: PathBuf,
        /// What redb reported.
        source: Box<redb::Error>,
    },
    /// A sink name that was not registered at [`Spool::open`].
    #[error("spool {}: sink `{sink}` is not registered; pass it to Spool::open", path.display())]
    UnknownSink {
        /// The spool file.
        path: PathBuf,
        /// The sink name.
        sink: String,
    },
    /// A chunk with no records or no bytes.
    #[error("spool {}: refusing an empty chunk ({records} records, {bytes} bytes)", path.display())]
    EmptyChunk {
        /// The spool file.
        path: PathBuf,
        /// Records given.
        records: u32,
        /// Bytes given.
        bytes: usize,
    },
    /// One chunk is larger than the whole bound: storing it would mean wiping everything.
    #[error("spool {}: a chunk of {bytes} bytes exceeds the size bound of {max_bytes} bytes; flush smaller chunks or raise spool.max_bytes", path.display())]
    ChunkTooLarge {
        /// The spool file.
        path: PathBuf,
        /// The chunk's size.
        bytes: u64,
        /// The bound.
        max_bytes: u64,
    },
    /// A sink asked for a stream it was not registered to read.
    #[error("spool {}: sink `{sink}` does not read the {} stream; register it with Spool::open_for", path.display(), stream.name())]
    NotAReader {
        /// The spool file.
        path: PathBuf,
        /// The sink name.
        sink: String,
        /// The stream.
        stream: Stream,
    },
}

impl SpoolError {
    /// An error of the file or the disk (not of the call): the file is closed and reopened.
    const fn is_storage_fault(&self) -> bool {
        matches!(self, Self::Storage { .. })
    }
}

/// Attach the spool path to a redb error.
trait AtPath<T> {
    fn at(self, path: &Path) -> Result<T, SpoolError>;
}

impl<T, E: Into<redb::Error>> AtPath<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, SpoolError> {
        self.map_err(|e| SpoolError::Storage {
            path: path.to_path_buf(),
            source: Box::new(e.into()),
        })
    }
}

/// Counts of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StreamCounts {
    chunks: u64,
    records: u64,
    bytes: u64,
}

/// Position and backlog of one sink, per stream (indexed by [`Stream::index`]). `reads` says
/// which streams it reads; cursor and backlog of the others stay 0 and are not stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SinkState {
    reads: [bool; 2],
    cursor: [u64; 2],
    backlog: [u64; 2],
}

/// The in-memory mirror of the meta and cursor tables. Mutations work on a copy that replaces
/// this one only after the transaction committed, so memory never runs ahead of the disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    next_seq: u64,
    streams: [StreamCounts; 2],
    dropped_records_total: u64,
    alerts_dropped_total: u64,
    dead_next_id: u64,
    dead_count: u64,
    dead_bytes: u64,
    dead_evicted_total: u64,
    sinks: BTreeMap<String, SinkState>,
}

impl State {
    /// Logical bytes the size bound counts.
    fn used_bytes(&self) -> u64 {
        self.streams.iter().map(|s| s.bytes).sum::<u64>() + self.dead_bytes
    }

    fn load(meta: &Table<&'static str, u64>) -> Result<Self, redb::StorageError> {
        let get = |key: &str| -> Result<u64, redb::StorageError> {
            Ok(meta.get(key)?.map_or(0, |v| v.value()))
        };
        let mut state = Self {
            next_seq: get(META_NEXT_SEQ)?.max(FIRST_SEQ),
            dropped_records_total: get(META_DROPPED)?,
            alerts_dropped_total: get(META_ALERTS_DROPPED)?,
            dead_next_id: get(META_DEAD_NEXT_ID)?,
            dead_count: get(META_DEAD_COUNT)?,
            dead_bytes: get(META_DEAD_BYTES)?,
            dead_evicted_total: get(META_DEAD_EVICTED)?,
            ..Self::default()
        };
        for s in Stream::ALL {
            let i = s.index();
            state.streams[i] = StreamCounts {
                chunks: get(META_CHUNKS[i])?,
                records: get(META_RECORDS[i])?,
                bytes: get(META_BYTES[i])?,
            };
        }
        Ok(state)
    }

    fn save(
        &self,
        meta: &mut Table<&'static str, u64>,
        cursors: &mut Table<(u8, &'static str), (u64, u64)>,
    ) -> Result<(), redb::StorageError> {
        meta.insert(META_NEXT_SEQ, self.next_seq)?;
        for s in Stream::ALL {
            let i = s.index();
            meta.insert(META_CHUNKS[i], self.streams[i].chunks)?;
            meta.insert(META_RECORDS[i], self.streams[i].records)?;
            meta.insert(META_BYTES[i], self.streams[i].bytes)?;
        }
        meta.insert(META_DROPPED, self.dropped_records_total)?;
        meta.insert(META_ALERTS_DROPPED, self.alerts_dropped_total)?;
        meta.insert(META_DEAD_NEXT_ID, self.dead_next_id)?;
        meta.insert(META_DEAD_COUNT, self.dead_count)?;
        meta.insert(META_DEAD_BYTES, self.dead_bytes)?;
        meta.insert(META_DEAD_EVICTED, self.dead_evicted_total)?;
        // A handful of sinks: rewriting every row keeps this obviously in sync with memory.
        for (name, sink) in &self.sinks {
            for s in Stream::ALL {
                let i = s.index();
                if sink.reads[i] {
                    cursors.insert((s.code(), name.as_str()), (sink.cursor[i], sink.backlog[i]))?;
                }
            }
        }
        Ok(())
    }

    /// Whether chunk `seq` of `stream` is still to be delivered by some reader of the stream. With
    /// no reader at all it counts as undelivered: a sink configured later would read it.
    fn undelivered(&self, stream: Stream, seq: u64) -> bool {
        let i = stream.index();
        let mut readers = self.sinks.values().filter(|s| s.reads[i]).peekable();
        readers.peek().is_none()
            || self
                .sinks
                .values()
                .any(|s| s.reads[i] && s.cursor[i] <= seq)
    }

    /// The smallest cursor of the readers of `stream`; `None` when no sink reads it.
    fn min_cursor(&self, stream: Stream) -> Option<u64> {
        let i = stream.index();
        self.sinks
            .values()
            .filter(|s| s.reads[i])
            .map(|s| s.cursor[i])
            .min()
    }

    /// Account for a new chunk of `stream` with `records` and `bytes`.
    fn count_chunk(&mut self, stream: Stream, records: u32, bytes: u64) {
        let i = stream.index();
        self.streams[i].chunks += 1;
        self.streams[i].records += u64::from(records);
        self.streams[i].bytes += bytes;
        for sink in self.sinks.values_mut().filter(|s| s.reads[i]) {
            sink.backlog[i] += u64::from(records);
        }
    }

    /// Account for chunk `seq` of `stream` (with `records` and `bytes`) leaving the table.
    fn forget_chunk(&mut self, stream: Stream, seq: u64, records: u64, bytes: u64) {
        let i = stream.index();
        let counts = &mut self.streams[i];
        counts.chunks = counts.chunks.saturating_sub(1);
        counts.records = counts.records.saturating_sub(records);
        counts.bytes = counts.bytes.saturating_sub(bytes);
        // Sinks that had not yet passed it will never deliver it.
        for sink in self.sinks.values_mut() {
            if sink.reads[i] && sink.cursor[i] <= seq {
                sink.backlog[i] = sink.backlog[i].saturating_sub(records);
            }
        }
    }
}

/// The durable spool. `Send + Sync`; share it as `Arc<Spool>`.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    config: SpoolConfig,
    /// The sinks and the streams they read, as given at open (kept for every reopen).
    readers: Vec<Reader>,
    /// Who the gateway is, for the device-fault alert about a damaged file.
    identity: Option<AlertIdentity>,
    /// Where that alert goes when this file is not the one the alert sinks read (the points
    /// file beside the alerts file, [`Spool::open_points_with`]); `None`: on this file's own
    /// alerts stream.
    damage_alerts_to: Option<std::sync::Arc<Spool>>,
    /// The open file, the in-memory mirror and the file's health. Held across every call that
    /// touches the file (reads too): a reopen swaps the database under it, and reads are short.
    inner: Mutex<Inner>,
    appended: Notify,
    /// Where compactions are counted (`spool_compactions_total`), once the gateway sets it.
    metrics: std::sync::OnceLock<std::sync::Arc<crate::metrics::Metrics>>,
    /// Commit failures to inject (tests of the engine's failure paths only).
    #[cfg(test)]
    injected: Mutex<std::collections::VecDeque<InjectedFault>>,
    /// Cursor moves (acks, dead letters) to fail with a storage error (tests of the sinks).
    #[cfg(test)]
    ack_faults: std::sync::atomic::AtomicU32,
    /// A points append to hold at its start (tests only, [`Spool::hold_next_points_append`]).
    #[cfg(test)]
    points_gate: Mutex<Option<PointsGate>>,
}

/// Where a held points append says it arrived, and what lets it go on (tests only).
#[cfg(test)]
type PointsGate = (
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<()>,
);

/// A commit failure a test asks for. A fake, allowed because a real disk cannot be told to fail
/// exactly the next commit, or to make the commit task panic (docs/ARCHITECTURE.md §Tests).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFault {
    /// The commit returns a storage error (as on a full disk).
    Error,
    /// The commit panics (as a bug in the storage layer would), before the spool's guard.
    Panic,
    /// redb panics inside the commit (as on a damaged page): caught by the spool.
    PanicInRedb,
    /// The commit reaches the file, then returns a storage error (redb's post-commit pass
    /// failing on a full disk, `landed.rs`): a real disk does this only now and then.
    ErrorAfterCommit,
}

/// Everything behind the spool's lock.
#[derive(Debug)]
struct Inner {
    /// `None` while the file is not available: it could not be opened yet (full disk), or it
    /// was closed after a storage error or a panic and is reopened on a later call.
    db: Option<Database>,
    state: State,
    health: Health,
    /// While free space is below `min_free_bytes`: the logical bytes the spool keeps to, fixed
    /// when the shortage began (see [`Spool::append_with_state`]); `None` otherwise.
    low_space_limit: Option<u64>,
    /// Per stream, what of the engine's held lines a failed commit may have stored
    /// (`landed.rs`); kept across reopens, settled by them.
    landed: [landed::Landed; 2],
}

/// `s` cut to at most `max` bytes at a character boundary.
#[must_use]
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `body` cut into pieces of at most [`MAX_PIECE_BYTES`] at line ends (a longer line is a piece
/// of its own), each with its records: the lines in it, the last piece taking whatever of
/// `records` is left (the spool does not otherwise check that `records` counts the lines).
fn pieces(body: &[u8], records: u32) -> Vec<(&[u8], u32)> {
    if body.len() <= MAX_PIECE_BYTES {
        return vec![(body, records)];
    }
    let mut out: Vec<(&[u8], u32)> = Vec::new();
    let (mut start, mut left) = (0usize, records);
    while start < body.len() {
        let rest = &body[start..];
        let end = if rest.len() <= MAX_PIECE_BYTES {
            rest.len()
        } else {
            // The last line end within the limit, or the end of the first line if it is longer.
            rest[..MAX_PIECE_BYTES]
                .iter()
                .rposition(|b| *b == b'\n')
                .or_else(|| rest.iter().position(|b| *b == b'\n'))
                .map_or(rest.len(), |i| i + 1)
        };
        let piece = &rest[..end];
        start += end;
        let lines = if start >= body.len() {
            left
        } else {
            let n =
                u32::try_from(piece.iter().filter(|b| **b == b'\n').count()).unwrap_or(u32::MAX);
            n.min(left)
        };
        left -= lines;
        out.push((piece, lines));
    }
    out
}

/// Read the first chunk of a table as `(seq, records, bytes)`, releasing the borrow.
fn first_chunk(
    table: &Table<u64, ChunkValue>,
) -> Result<Option<(u64, u64, u64)>, redb::StorageError> {
    Ok(table.first()?.map(|(k, v)| {
        let (records, _, body) = v.value();
        (k.value(), u64::from(records), body.len() as u64)
    }))
}

impl Spool {
    /// Open (or create) the spool at `path` and register `sinks` (names, e.g. `"influxdb"`), each
    /// reading *both* streams. Kept for callers that do not say which streams a sink reads; the
    /// gateway uses [`Spool::open_for`], so that a sink pins only the stream it reads.
    ///
    /// # Errors
    /// As [`Spool::open_for`].
    pub fn open(path: &Path, config: &SpoolConfig, sinks: &[String]) -> Result<Self, SpoolError> {
        let readers: Vec<Reader> = sinks.iter().map(|s| Reader::new(s, &Stream::ALL)).collect();
        Self::open_for(path, config, &readers)
    }

    /// Open (or create) the spool at `path` and register `readers`: each sink with the streams it
    /// reads (docs/ARCHITECTURE.md §Spool layout, Cursors).
    ///
    /// A (sink, stream) pair seen for the first time starts at the oldest chunk still stored.
    /// Stored cursors of sinks no longer configured, or of streams a sink no longer reads, are
    /// removed so they pin nothing; chunks that every remaining reader of a stream has passed are
    /// deleted.
    ///
    /// # Errors
    /// [`SpoolError::Open`] with a fix hint when the file is locked, corrupt or of another format;
    /// [`SpoolError::Storage`] when the first transaction fails.
    pub fn open_for(
        path: &Path,
        config: &SpoolConfig,
        readers: &[Reader],
    ) -> Result<Self, SpoolError> {
        Self::open_with(path, config, readers, None)
    }

    /// [`Spool::open_for`], and when the file turns out damaged (now or when it is reopened
    /// later) put a device-fault alert about it, naming `identity`'s site and gateway, on the
    /// fresh file's alerts stream (docs/ARCHITECTURE.md §Spool layout, Damage).
    ///
    /// Start-up never fails for a full disk or a damaged file: the spool then starts not
    /// available (every call returns [`SpoolError::Unavailable`] until a later call opens it) or
    /// on a fresh file with what could be salvaged.
    ///
    /// # Errors
    /// [`SpoolError::Permission`] when data_dir or the file cannot be written;
    /// [`SpoolError::Open`] when another process has the file open or it is of an older format.
    pub fn open_with(
        path: &Path,
        config: &SpoolConfig,
        readers: &[Reader],
        identity: Option<AlertIdentity>,
    ) -> Result<Self, SpoolError> {
        Self::open_inner(path, config, readers, identity, None)
    }

    /// [`Spool::open_with`] for the points file of a gateway whose alerts and rule state are in
    /// a file of their own, `alerts` (docs/ARCHITECTURE.md §Spool layout, Two files): the
    /// device-fault alert about damage to this file goes on `alerts`' stream, which the alert
    /// sinks read; its line-protocol copy stays on this file's points stream.
    ///
    /// # Errors
    /// As [`Spool::open_with`].
    pub fn open_points_with(
        path: &Path,
        config: &SpoolConfig,
        readers: &[Reader],
        identity: AlertIdentity,
        alerts: std::sync::Arc<Spool>,
    ) -> Result<Self, SpoolError> {
        Self::open_inner(path, config, readers, Some(identity), Some(alerts))
    }

    fn open_inner(
        path: &Path,
        config: &SpoolConfig,
        readers: &[Reader],
        identity: Option<AlertIdentity>,
        damage_alerts_to: Option<std::sync::Arc<Spool>>,
    ) -> Result<Self, SpoolError> {
        let spool = Self {
            path: path.to_path_buf(),
            config: config.clone(),
            readers: readers.to_vec(),
            identity,
            damage_alerts_to,
            inner: Mutex::new(Inner {
                db: None,
                state: State::default(),
                health: Health::new(),
                low_space_limit: None,
                landed: Default::default(),
            }),
            appended: Notify::new(),
            metrics: std::sync::OnceLock::new(),
            #[cfg(test)]
            injected: Mutex::default(),
            #[cfg(test)]
            ack_faults: std::sync::atomic::AtomicU32::new(0),
            #[cfg(test)]
            points_gate: Mutex::default(),
        };
        spool.first_open()?;
        Ok(spool)
    }

    /// Register `readers` in the freshly opened `db` and load the mirror (one transaction).
    ///
    /// Sequences continue from at least `floor_seq` (the last file's next sequence, when the
    /// file is reopened or replaced), so a batch read before cannot be acked into new data.
    fn register(
        p: &Path,
        db: &Database,
        readers: &[Reader],
        floor_seq: u64,
    ) -> Result<State, SpoolError> {
        let txn = Self::begin_durable(db).at(p)?;
        let state = {
            let mut meta = txn.open_table(META).at(p)?;
            let mut cursors = txn.open_table(CURSORS).at(p)?;
            let mut points = txn.open_table(POINTS).at(p)?;
            let mut alerts = txn.open_table(ALERTS).at(p)?;
            txn.open_table(DEAD_LETTERS).at(p)?;
            let mut state = State::load(&meta).at(p)?;
            state.next_seq = state.next_seq.max(floor_seq);

            // Which (sink, stream) pairs are wanted.
            let mut wanted: BTreeMap<&str, [bool; 2]> = BTreeMap::new();
            for r in readers {
                let reads = wanted.entry(r.sink.as_str()).or_default();
                for s in &r.streams {
                    reads[s.index()] = true;
                }
            }
            for (name, reads) in &wanted {
                let sink = state.sinks.entry((*name).to_owned()).or_default();
                sink.reads = *reads;
            }
            // Stored cursors of wanted pairs are taken over; every other row (a sink no longer
            // configured, or a stream it no longer reads, e.g. an InfluxDB sink's alerts cursor
            // from before issue 14) is removed so that it pins nothing.
            let mut found: BTreeSet<(u8, String)> = BTreeSet::new();
            let mut stale: Vec<(u8, String)> = Vec::new();
            for entry in cursors.iter().at(p)? {
                let (key, value) = entry.at(p)?;
                let (code, name) = key.value();
                let (cursor, backlog) = value.value();
                let wanted_pair = Stream::from_code(code)
                    .filter(|s| wanted.get(name).is_some_and(|r| r[s.index()]));
                match wanted_pair {
                    Some(stream) => {
                        if let Some(sink) = state.sinks.get_mut(name) {
                            sink.cursor[stream.index()] = cursor;
                            sink.backlog[stream.index()] = backlog;
                        }
                        found.insert((code, name.to_owned()));
                    }
                    None => stale.push((code, name.to_owned())),
                }
            }
            for (code, name) in &stale {
                cursors.remove((*code, name.as_str())).at(p)?;
            }

            // New pairs start at the oldest chunk still stored (or the next one to come).
            for (stream, table) in [(Stream::Points, &points), (Stream::Alerts, &alerts)] {
                let i = stream.index();
                let start = first_chunk(table).at(p)?.map_or(state.next_seq, |c| c.0);
                for (name, sink) in &mut state.sinks {
                    if sink.reads[i] && !found.contains(&(stream.code(), name.clone())) {
                        sink.cursor[i] = start;
                        sink.backlog[i] = state.streams[i].records;
                    }
                }
            }

            for (stream, table) in [(Stream::Points, &mut points), (Stream::Alerts, &mut alerts)] {
                Self::delete_passed(&mut state, stream, table).at(p)?;
            }
            state.save(&mut meta, &mut cursors).at(p)?;
            state
        };
        txn.commit().at(p)?;
        Ok(state)
    }

    /// Make the next appends fail, one fault per append, in order (tests only).
    #[cfg(test)]
    pub fn inject_faults(&self, faults: &[InjectedFault]) {
        self.injected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(faults);
    }

    /// Make the next `n` cursor moves (acks, dead letters) fail with a storage error (tests
    /// only; the file is left as it is, unlike a real I/O error, which closes it).
    #[cfg(test)]
    pub fn inject_ack_faults(&self, n: u32) {
        self.ack_faults
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Hold the next points append at its start, before it takes the spool's lock or begins a
    /// transaction (other calls go on meanwhile), until the second returned end is used or
    /// dropped; the first says when it got there. An injected fault applies after the hold.
    /// A fake (tests only), allowed because a real disk cannot be told to make exactly the next
    /// points commit slow (an SD card's fsync stall) while an alert is raised.
    #[cfg(test)]
    pub fn hold_next_points_append(
        &self,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
        let (go, go_rx) = tokio::sync::oneshot::channel();
        *self
            .points_gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((arrived_tx, go_rx));
        (arrived, go)
    }

    /// Wait at the gate of [`Spool::hold_next_points_append`], if this is the append it holds.
    #[cfg(test)]
    fn wait_at_points_gate(&self, stream: Stream) {
        if stream != Stream::Points {
            return;
        }
        let gate = self
            .points_gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((arrived, go)) = gate {
            let _ = arrived.send(());
            // Sent or dropped: either lets the append go on.
            let _ = go.blocking_recv();
        }
    }

    /// The next injected fault: an error or a panic here, or the fault the append's
    /// transaction acts on (`PanicInRedb`, `ErrorAfterCommit`).
    #[cfg(test)]
    fn take_injected_fault(&self) -> Result<Option<InjectedFault>, SpoolError> {
        let next = self
            .injected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        match next {
            Some(InjectedFault::Error) => Err(self.injected_error()),
            Some(InjectedFault::Panic) => panic!("injected: storage layer panicked"),
            other => Ok(other),
        }
    }

    #[cfg(test)]
    fn injected_error(&self) -> SpoolError {
        SpoolError::Storage {
            path: self.path.clone(),
            source: Box::new(redb::Error::Io(std::io::Error::other(
                "injected: no space left on device",
            ))),
        }
    }

    /// Count compactions (`spool_compactions_total`) in `metrics` from now on; the first call
    /// wins.
    pub fn count_into(&self, metrics: std::sync::Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The largest chunk an append to `stream` accepts: what fits in the bound beside the
    /// shares the bound never takes from it (see [`SpoolError::ChunkTooLarge`]). The engine
    /// commits larger held bodies in pieces of at most this size.
    #[must_use]
    pub fn max_chunk_bytes(&self, stream: Stream) -> u64 {
        let max_bytes = self.config.max_bytes / LOGICAL_BUDGET_DIVISOR;
        let alert_share = max_bytes / ALERT_SHARE;
        let dead_share = max_bytes / DEAD_LETTER_SHARE;
        match stream {
            Stream::Points => max_bytes.saturating_sub(alert_share + dead_share),
            Stream::Alerts => max_bytes.saturating_sub(dead_share),
        }
    }

    /// The spool file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `sink` was registered at open.
    #[must_use]
    pub fn is_registered(&self, sink: &str) -> bool {
        self.readers.iter().any(|r| r.sink == sink)
    }

    /// Signalled (`notify_waiters`) after every committed append. To not miss one, create and
    /// `enable()` the `notified()` future *before* reading, then await it if there was nothing.
    #[must_use]
    pub fn appended(&self) -> &Notify {
        &self.appended
    }

    /// Store one chunk of `records` newline-terminated lines in `stream`, durably.
    ///
    /// When the bound would be exceeded, the oldest chunks are dropped (alerts beyond their share
    /// by an alert append; points, then alerts above their share, by a points append), and the
    /// undelivered records among them are returned in [`AppendOutcome`].
    ///
    /// # Errors
    /// [`SpoolError::EmptyChunk`], [`SpoolError::ChunkTooLarge`] (a chunk larger than its
    /// stream's room is refused rather than wiping the spool), or a storage error; on any error
    /// nothing was changed.
    pub fn append(
        &self,
        stream: Stream,
        body: &[u8],
        records: u32,
    ) -> Result<AppendOutcome, SpoolError> {
        self.append_with_state(stream, body, records, None)
    }

    /// [`Spool::append`], and in the same transaction apply `state` (when given) to the
    /// engine's saved state: an alert and the rule state that produced it are committed
    /// together, so a restart can neither raise it twice nor forget it.
    ///
    /// # Errors
    /// As [`Spool::append`].
    pub fn append_with_state(
        &self,
        stream: Stream,
        body: &[u8],
        records: u32,
        state: Option<&StateDelta>,
    ) -> Result<AppendOutcome, SpoolError> {
        let p = self.path.as_path();
        #[cfg(test)]
        self.wait_at_points_gate(stream);
        #[cfg(test)]
        let injected = self.take_injected_fault()?;
        if records == 0 || body.is_empty() {
            return Err(SpoolError::EmptyChunk {
                path: p.to_path_buf(),
                records,
                bytes: body.len(),
            });
        }
        let bytes = body.len() as u64;
        // The size bound counts logical bytes within the budget; the file itself is kept within
        // max_bytes by compaction after the commit (docs/ARCHITECTURE.md §Spool layout).
        let max_bytes = self.config.max_bytes / LOGICAL_BUDGET_DIVISOR;
        let alert_share = max_bytes / ALERT_SHARE;
        // The most one chunk may take so that it fits beside what the bound never takes from it:
        // a points chunk beside full alert and dead-letter shares, an alert chunk beside the
        // dead letters (docs/ARCHITECTURE.md §Spool layout, Size bound).
        let room = self.max_chunk_bytes(stream);
        if bytes > room {
            return Err(SpoolError::ChunkTooLarge {
                path: p.to_path_buf(),
                bytes,
                max_bytes: room,
            });
        }

        // Free space below the minimum: the spool keeps to the data its file held when the
        // shortage began (new chunks reuse the pages of delivered and dropped ones) instead of
        // growing (docs/ARCHITECTURE.md §Spool layout). Not to what is stored at each append:
        // with the store up that is a batch or two, and bounding by it dropped chunks the sink
        // had not read yet on every append while another program filled the disk (a loss the
        // system test of the full disk found). Fixed, not re-read: the file still grows a little
        // (copy-on-write), and a limit taken from its size each time would ratchet up with it.
        let low_space = self.config.min_free_bytes > 0
            && disk::free_bytes(p)
                .is_some_and(|free| free < self.config.min_free_bytes.saturating_add(bytes));
        // A failed commit of these lines may have stored their start (`landed.rs`): the reopen
        // that follows every storage error has settled that; only the rest is written.
        let (full_body, full_records) = (body, records);
        let known = {
            let mut inner = self.lock();
            self.ensure_open(&mut inner)?;
            inner.landed[stream.index()].known_prefix_of(body)
        };
        let (body, records) = match known {
            None => (body, records),
            Some(k) => {
                let rest = &body[k.len..];
                let left = records.saturating_sub(k.records);
                let lines = || u32::try_from(rest.iter().filter(|b| **b == b'\n').count());
                (
                    rest,
                    if left > 0 {
                        left
                    } else {
                        lines().unwrap_or(u32::MAX)
                    },
                )
            }
        };
        if let (Some(k), true) = (known, body.is_empty()) {
            // All of it is in the file. The rule state may have grown since: it is written.
            if let Some(state) = state.filter(|s| !s.is_empty()) {
                self.save_state(state)?;
            }
            self.lock().landed[stream.index()].committed();
            self.appended.notify_waiters();
            return Ok(AppendOutcome {
                seq: k.first_seq,
                dropped_records: 0,
                dropped_alert_records: 0,
            });
        }
        let low_space_limit = {
            let mut inner = self.lock();
            if low_space {
                let used = inner.state.used_bytes();
                Some(*inner.low_space_limit.get_or_insert_with(|| {
                    let file = std::fs::metadata(p).map_or(0, |m| m.len());
                    used.max(file / LOW_SPACE_FILE_DIVISOR)
                }))
            } else {
                inner.low_space_limit = None;
                None
            }
        };
        // Set just before the commit: the sequences of this attempt's pieces.
        let mut attempted: Option<(u64, u64)> = None;
        let result = self.with_db(|db, current| {
            #[cfg(test)]
            assert!(
                injected != Some(InjectedFault::PanicInRedb),
                "injected: redb panicked"
            );
            let mut next = current.clone();
            let limit = low_space_limit.map_or(max_bytes, |l| max_bytes.min(l));
            let txn = Self::begin_durable(db).at(p)?;
            let (seq, dropped_records, dropped_alert_records) = {
                let mut meta = txn.open_table(META).at(p)?;
                let mut cursors = txn.open_table(CURSORS).at(p)?;
                let mut points = txn.open_table(POINTS).at(p)?;
                let mut alerts = txn.open_table(ALERTS).at(p)?;
                let mut dropped = [0u64; 2];
                // Oldest first: a chunk every reader has delivered is already deleted (at its ack),
                // so the oldest stored chunk is the one delivered by the most readers; what is still
                // undelivered by some reader when dropped is counted (issue 14 item 1).
                let mut drop_oldest = |next: &mut State,
                                       stream: Stream,
                                       table: &mut Table<u64, ChunkValue>|
                 -> Result<bool, redb::StorageError> {
                    let Some((seq, r, b)) = first_chunk(table)? else {
                        return Ok(false);
                    };
                    if next.undelivered(stream, seq) {
                        dropped[stream.index()] += r;
                    }
                    table.remove(seq)?;
                    next.forget_chunk(stream, seq, r, b);
                    Ok(true)
                };
                let alerts_i = Stream::Alerts.index();
                if stream == Stream::Alerts {
                    // Alerts make room among themselves first: they never take more than their share.
                    while next.streams[alerts_i].bytes + bytes > alert_share
                        && drop_oldest(&mut next, Stream::Alerts, &mut alerts).at(p)?
                    {
                    }
                }
                while next.used_bytes() + bytes > limit
                    && drop_oldest(&mut next, Stream::Points, &mut points).at(p)?
                {}
                // Only alerts above their share (after an alert chunk larger than the share) give
                // way to points; within the share they are never touched by points.
                while next.used_bytes() + bytes > limit
                    && next.streams[alerts_i].bytes > alert_share
                    && drop_oldest(&mut next, Stream::Alerts, &mut alerts).at(p)?
                {}
                // By the shares, what is left fits (dead letters <= 1/16, alerts <= 1/8 or dropped,
                // the chunk <= `room`); nothing is ever refused for want of room. Short of free
                // space with no points left, the chunk is stored anyway: a full disk then fails
                // the commit, and the engine holds the readings.
                next.dropped_records_total += dropped[Stream::Points.index()];
                next.alerts_dropped_total += dropped[alerts_i];

                // Stored in pieces of at most MAX_PIECE_BYTES under consecutive sequences: redb
                // rounds a value up to a power-of-two number of pages, so one 900 KB flush would
                // take 1 MiB on disk (docs/ARCHITECTURE.md §Spool layout, Size bound).
                let seq = next.next_seq;
                let now = now_ns();
                for (piece, piece_records) in pieces(body, records) {
                    let value = (piece_records, now, piece);
                    let piece_seq = next.next_seq;
                    next.next_seq += 1;
                    if stream == Stream::Points {
                        points.insert(piece_seq, value).at(p)?;
                    } else {
                        alerts.insert(piece_seq, value).at(p)?;
                    }
                    next.count_chunk(stream, piece_records, piece.len() as u64);
                }
                next.save(&mut meta, &mut cursors).at(p)?;
                if let Some(state) = state {
                    let mut table = txn.open_table(ENGINE_STATE).at(p)?;
                    state.apply(&mut table).at(p)?;
                }
                (seq, dropped[Stream::Points.index()], dropped[alerts_i])
            };
            attempted = Some((seq, next.next_seq));
            txn.commit().at(p)?;
            #[cfg(test)]
            if injected == Some(InjectedFault::ErrorAfterCommit) {
                return Err(self.injected_error());
            }
            *current = next;
            Ok(AppendOutcome {
                seq,
                dropped_records,
                dropped_alert_records,
            })
        });
        let outcome = {
            let mut inner = self.lock();
            let landed = &mut inner.landed[stream.index()];
            match (result, attempted) {
                (Ok(outcome), _) => {
                    landed.committed();
                    outcome
                }
                (Err(e), Some((first, end))) => {
                    landed.failed(full_body, full_records, first, end);
                    return Err(e);
                }
                (Err(e), None) => return Err(e),
            }
        };
        let outcome = AppendOutcome {
            seq: known.map_or(outcome.seq, |k| k.first_seq),
            ..outcome
        };
        // After the commit, with no transaction open: the file back within max_bytes.
        let outcome = AppendOutcome {
            dropped_records: outcome.dropped_records + self.keep_file_within_bound(),
            ..outcome
        };
        if low_space {
            let mut inner = self.lock();
            if let Some(suppressed) = inner.health.log_low_space() {
                warn!(spool = %p.display(), min_free_bytes = self.config.min_free_bytes,
                      dropped_readings = outcome.dropped_records, suppressed,
                      "Free space on the spool's file system is below min_free_bytes; the spool does not grow and drops its oldest readings to make room.");
            }
        }
        self.appended.notify_waiters();
        Ok(outcome)
    }

    /// Apply `state` to the engine's saved state in one durable transaction, without a chunk:
    /// for a rule state that must be durable before a batch is acknowledged when the batch
    /// stored no line (a reading held as a possible spike, docs/DOMAIN.md §Data quality).
    ///
    /// # Errors
    /// A storage error.
    pub fn save_state(&self, state: &StateDelta) -> Result<(), SpoolError> {
        let p = self.path.as_path();
        self.with_db(|db, _| {
            let txn = Self::begin_durable(db).at(p)?;
            {
                let mut table = txn.open_table(ENGINE_STATE).at(p)?;
                state.apply(&mut table).at(p)?;
            }
            txn.commit().at(p)?;
            Ok(())
        })
    }

    /// Every entry of the engine's saved state (key order), empty when none was saved.
    ///
    /// # Errors
    /// A storage error.
    pub fn load_state(&self) -> Result<Vec<(String, Vec<u8>)>, SpoolError> {
        let p = self.path.as_path();
        self.with_db(|db, _| {
            let txn = db.begin_read().at(p)?;
            let table = match txn.open_table(ENGINE_STATE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e).at(p),
            };
            let mut out = Vec::new();
            for entry in table.iter().at(p)? {
                let (k, v) = entry.at(p)?;
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// The saved entries of the engine state under `keys` (those that exist), in one read:
    /// the engine asks for the channels it evicted from memory and sees again.
    ///
    /// # Errors
    /// A storage error.
    pub fn load_state_entries(
        &self,
        keys: &[String],
    ) -> Result<Vec<(String, Vec<u8>)>, SpoolError> {
        let p = self.path.as_path();
        self.with_db(|db, _| {
            let txn = db.begin_read().at(p)?;
            let table = match txn.open_table(ENGINE_STATE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e).at(p),
            };
            let mut out = Vec::new();
            for k in keys {
                if let Some(v) = table.get(k.as_str()).at(p)? {
                    out.push((k.clone(), v.value().to_vec()));
                }
            }
            Ok(out)
        })
    }

    /// Read consecutive chunks of `stream` from `sink`'s cursor: stop before the chunk that would
    /// take the batch above `max_records`, but always return at least one chunk. `None` when
    /// the sink has read everything. Does not move the cursor.
    ///
    /// # Errors
    /// [`SpoolError::UnknownSink`] or a storage error.
    pub fn read_batch(
        &self,
        stream: Stream,
        sink: &str,
        max_records: u64,
    ) -> Result<Option<Batch>, SpoolError> {
        self.read_batch_from(stream, sink, 0, max_records)
    }

    /// Like [`Spool::read_batch`], but start at sequence `from` when it is beyond `sink`'s
    /// cursor: a sink that pipelines its writes reads the batch after the ones it has in flight
    /// (`from` = last in-flight `last_seq + 1`) before acking them. Does not move the cursor.
    ///
    /// # Errors
    /// [`SpoolError::UnknownSink`] or a storage error.
    pub fn read_batch_from(
        &self,
        stream: Stream,
        sink: &str,
        from: u64,
        max_records: u64,
    ) -> Result<Option<Batch>, SpoolError> {
        let p = self.path.as_path();
        // Under the lock, so the snapshot matches the cursor.
        self.with_db(|db, state| {
            let cursor = self.cursor_of(state, stream, sink)?.max(from);
            let txn = db.begin_read().at(p)?;
            let table = txn.open_table(stream.table()).at(p)?;
            let mut batch: Option<Batch> = None;
            for entry in table.range(cursor..).at(p)? {
                let (key, value) = entry.at(p)?;
                let (records, appended_ns, body) = value.value();
                let records = u64::from(records);
                match batch.as_mut() {
                    None => {
                        batch = Some(Batch {
                            first_seq: key.value(),
                            last_seq: key.value(),
                            records,
                            body: body.to_vec(),
                            oldest_append_ns: appended_ns,
                        });
                    }
                    Some(b) if b.records + records <= max_records => {
                        b.last_seq = key.value();
                        b.records += records;
                        b.body.extend_from_slice(body);
                    }
                    Some(_) => break,
                }
            }
            Ok(batch)
        })
    }

    /// The receiver accepted `batch`: move `sink`'s cursor past it and delete every chunk all
    /// readers of `stream` have passed, in one durable commit. Acking an already-passed batch
    /// changes nothing.
    ///
    /// # Errors
    /// [`SpoolError::UnknownSink`] or a storage error (then nothing changed).
    pub fn ack(&self, stream: Stream, sink: &str, batch: &Batch) -> Result<(), SpoolError> {
        self.advance(stream, sink, batch, None)
    }

    /// The receiver refused `batch` for good: store its body with `reason` (the receiver's
    /// answer) and the time in the dead-letter table, then ack it, in one durable commit.
    ///
    /// # Errors
    /// [`SpoolError::UnknownSink`] or a storage error (then nothing changed).
    pub fn dead_letter(
        &self,
        stream: Stream,
        sink: &str,
        batch: &Batch,
        reason: &str,
    ) -> Result<(), SpoolError> {
        self.advance(stream, sink, batch, Some(reason))
    }

    /// Every stored dead letter, oldest first (bounded by [`DEAD_LETTER_SHARE`]).
    ///
    /// # Errors
    /// A storage error.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, SpoolError> {
        let p = self.path.as_path();
        self.with_db(|db, _| {
            let txn = db.begin_read().at(p)?;
            let table = txn.open_table(DEAD_LETTERS).at(p)?;
            let mut out = Vec::new();
            for entry in table.iter().at(p)? {
                let (key, value) = entry.at(p)?;
                let (code, sink, first_seq, last_seq, records, at_ns, reason, body) = value.value();
                // Codes are written by this module only; an unknown one is a newer file format.
                let Some(stream) = Stream::from_code(code) else {
                    continue;
                };
                out.push(DeadLetter {
                    id: key.value(),
                    stream,
                    sink: sink.to_owned(),
                    first_seq,
                    last_seq,
                    records,
                    at_ns,
                    reason: reason.to_owned(),
                    body: body.to_vec(),
                });
            }
            Ok(out)
        })
    }

    /// Current counts, copied from memory (and the file's size from its metadata).
    #[must_use]
    pub fn stats(&self) -> SpoolStats {
        let inner = self.lock();
        let s = &inner.state;
        let [points, alerts] = s.streams;
        SpoolStats {
            points_chunks: points.chunks,
            points_records: points.records,
            points_bytes: points.bytes,
            alerts_chunks: alerts.chunks,
            alerts_records: alerts.records,
            alerts_bytes: alerts.bytes,
            dropped_records_total: s.dropped_records_total,
            alerts_dropped_total: s.alerts_dropped_total,
            dead_letter_count: s.dead_count,
            dead_letter_bytes: s.dead_bytes,
            dead_letters_evicted_total: s.dead_evicted_total,
            available: inner.db.is_some(),
            file_bytes: disk::file_len(&self.path),
            reopens_total: inner.health.reopens_total,
            storage_panics_total: inner.health.panics_total,
            damaged_files_total: inner.health.damaged_total,
            compactions_total: inner.health.compactions_total,
            sinks: s
                .sinks
                .iter()
                .map(|(name, k)| {
                    let backlog = SinkBacklog {
                        points_records: k.backlog[0],
                        alerts_records: k.backlog[1],
                    };
                    (name.clone(), backlog)
                })
                .collect(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock happens before the memory copy is replaced (the copy is
        // swapped in only after commit), so the mirror is still consistent with the disk.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `op` on the open file: reopen it first if it was closed and its retry time has come
    /// (else [`SpoolError::Unavailable`]); catch a panic inside (counted, reported as
    /// [`SpoolError::Panicked`]); after a storage error or a panic close the file, so that the
    /// next call after the backoff reopens it, checks it and, if damaged, replaces it
    /// (docs/ARCHITECTURE.md §Spool layout, Failures). No panic from redb leaves this function.
    fn with_db<T>(
        &self,
        op: impl FnOnce(&Database, &mut State) -> Result<T, SpoolError>,
    ) -> Result<T, SpoolError> {
        let mut guard = self.lock();
        self.with_db_in(&mut guard, op)
    }

    /// [`Spool::with_db`] with the lock already held.
    fn with_db_in<T>(
        &self,
        inner: &mut Inner,
        op: impl FnOnce(&Database, &mut State) -> Result<T, SpoolError>,
    ) -> Result<T, SpoolError> {
        self.ensure_open(inner)?;
        let Some(db) = inner.db.as_ref() else {
            return Err(self.unavailable(&inner.health));
        };
        let state = &mut inner.state;
        match catch_unwind(AssertUnwindSafe(|| op(db, state))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_storage_fault() {
                    self.close_after_fault(inner, &e.to_string());
                }
                Err(e)
            }
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                inner.health.panics_total += 1;
                self.close_after_fault(inner, &format!("panic in the storage layer: {message}"));
                Err(SpoolError::Panicked {
                    path: self.path.clone(),
                    message,
                })
            }
        }
    }

    fn unknown(&self, sink: &str) -> SpoolError {
        SpoolError::UnknownSink {
            path: self.path.clone(),
            sink: sink.to_owned(),
        }
    }

    /// `sink`'s cursor in `stream`, or why it has none.
    fn cursor_of(&self, state: &State, stream: Stream, sink: &str) -> Result<u64, SpoolError> {
        let k = state.sinks.get(sink).ok_or_else(|| self.unknown(sink))?;
        if !k.reads[stream.index()] {
            return Err(SpoolError::NotAReader {
                path: self.path.clone(),
                sink: sink.to_owned(),
                stream,
            });
        }
        Ok(k.cursor[stream.index()])
    }

    fn begin_durable(db: &Database) -> Result<WriteTransaction, redb::Error> {
        let mut txn = db.begin_write()?;
        // Immediate is redb's default; set it anyway because invariant 1 depends on it.
        txn.set_durability(Durability::Immediate)?;
        Ok(txn)
    }

    /// Delete chunks below the smallest cursor of the stream's readers (none without readers).
    fn delete_passed(
        state: &mut State,
        stream: Stream,
        table: &mut Table<u64, ChunkValue>,
    ) -> Result<(), redb::StorageError> {
        let Some(min) = state.min_cursor(stream) else {
            return Ok(());
        };
        while let Some((seq, records, bytes)) = first_chunk(table)? {
            if seq >= min {
                break;
            }
            table.remove(seq)?;
            state.forget_chunk(stream, seq, records, bytes);
        }
        Ok(())
    }

    fn advance(
        &self,
        stream: Stream,
        sink: &str,
        batch: &Batch,
        dead: Option<&str>,
    ) -> Result<(), SpoolError> {
        let p = self.path.as_path();
        let i = stream.index();
        #[cfg(test)]
        if self
            .ack_faults
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err(self.injected_error());
        }
        self.with_db(|db, current| {
            let mut next = current.clone();
            let cursor = self.cursor_of(&next, stream, sink)?;
            let txn = Self::begin_durable(db).at(p)?;
            {
                let mut meta = txn.open_table(META).at(p)?;
                let mut cursors = txn.open_table(CURSORS).at(p)?;
                let mut table = txn.open_table(stream.table()).at(p)?;
                // A batch already passed was settled by an earlier call whose commit reported
                // an error after it landed (`landed.rs`): settled again, it changes nothing.
                let unsettled = batch.last_seq >= cursor;
                if unsettled {
                    // Count what is still stored between the cursor and the batch end: chunks the
                    // size bound dropped meanwhile were already taken off the backlog.
                    let mut passed = 0u64;
                    for entry in table.range(cursor..=batch.last_seq).at(p)? {
                        passed += u64::from(entry.at(p)?.1.value().0);
                    }
                    if let Some(k) = next.sinks.get_mut(sink) {
                        k.cursor[i] = batch.last_seq + 1;
                        k.backlog[i] = k.backlog[i].saturating_sub(passed);
                    }
                }
                if let (Some(reason), true) = (dead, unsettled) {
                    Self::store_dead_letter(
                        &mut next,
                        &txn,
                        self.config.max_bytes / LOGICAL_BUDGET_DIVISOR,
                        stream,
                        sink,
                        batch,
                        reason,
                    )
                    .at(p)?;
                }
                Self::delete_passed(&mut next, stream, &mut table).at(p)?;
                next.save(&mut meta, &mut cursors).at(p)?;
            }
            txn.commit().at(p)?;
            *current = next;
            Ok(())
        })?;
        // Deletions may have left the file above the bound (copy-on-write pages); records this
        // drops are counted in the stats (docs/ARCHITECTURE.md §Spool layout, Size bound).
        self.keep_file_within_bound();
        Ok(())
    }

    /// Bring the file back within `max_bytes` after a committed change (issue 10 item 8,
    /// docs/ARCHITECTURE.md §Spool layout, Size bound): compact it (redb's `compact` moves the
    /// live pages to the front and truncates the file), and while it is still above, drop the
    /// oldest points chunk (counted like any drop) and compact again, at most
    /// [`MAX_COMPACTION_ROUNDS`] times. Runs under the spool's lock between calls, so no redb
    /// transaction is open, which `compact` requires. Never fails the call that committed: a
    /// storage error closes the file as in [`Spool::with_db`] (it is reopened later). Returns
    /// the undelivered points records it dropped.
    fn keep_file_within_bound(&self) -> u64 {
        let max = self.config.max_bytes;
        // Below MIN_MAX_BYTES (refused by the configuration; tests of the logical bound use it)
        // even an empty redb file does not fit, so only the logical bound applies.
        if max < MIN_MAX_BYTES || disk::file_len(&self.path) <= max {
            return 0;
        }
        let p = self.path.as_path();
        let mut guard = self.lock();
        let mut dropped = 0u64;
        for round in 0..MAX_COMPACTION_ROUNDS {
            if round > 0 {
                // As many logical bytes as the file is over, at least one chunk.
                let over = disk::file_len(p).saturating_sub(max);
                match self.with_db_in(&mut guard, |db, state| {
                    Self::drop_oldest_points(p, db, state, over)
                }) {
                    Ok(Some(n)) => dropped += n,
                    Ok(None) | Err(_) => break,
                }
            }
            let inner = &mut *guard;
            let Some(db) = inner.db.as_mut() else { break };
            let result = catch_unwind(AssertUnwindSafe(|| db.compact()));
            inner.health.compactions_total += 1;
            if let Some(m) = self.metrics.get() {
                m.incr(crate::metrics::Counter::SpoolCompactions, &[]);
            }
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    self.close_after_fault(inner, &format!("compaction failed: {e}"));
                    break;
                }
                Err(panic) => {
                    inner.health.panics_total += 1;
                    let message = panic_message(panic.as_ref());
                    self.close_after_fault(
                        inner,
                        &format!("panic in the storage layer: {message}"),
                    );
                    break;
                }
            }
            if disk::file_len(p) <= max {
                break;
            }
        }
        dropped
    }

    /// Drop the oldest points chunks, at least one and at least `at_least` logical bytes, in one
    /// durable commit; `None` when there is none. Returns the records some reader had not
    /// delivered (counted in the dropped total).
    fn drop_oldest_points(
        p: &Path,
        db: &Database,
        current: &mut State,
        at_least: u64,
    ) -> Result<Option<u64>, SpoolError> {
        let mut next = current.clone();
        let txn = Self::begin_durable(db).at(p)?;
        let dropped = {
            let mut meta = txn.open_table(META).at(p)?;
            let mut cursors = txn.open_table(CURSORS).at(p)?;
            let mut points = txn.open_table(POINTS).at(p)?;
            let (mut freed, mut undelivered, mut any) = (0u64, 0u64, false);
            // Bounded by the table: every turn removes one chunk.
            while !any || freed < at_least {
                let Some((seq, records, bytes)) = first_chunk(&points).at(p)? else {
                    break;
                };
                if next.undelivered(Stream::Points, seq) {
                    undelivered += records;
                }
                points.remove(seq).at(p)?;
                next.forget_chunk(Stream::Points, seq, records, bytes);
                freed += bytes;
                any = true;
            }
            if !any {
                return Ok(None);
            }
            next.dropped_records_total += undelivered;
            next.save(&mut meta, &mut cursors).at(p)?;
            undelivered
        };
        txn.commit().at(p)?;
        *current = next;
        Ok(Some(dropped))
    }

    fn store_dead_letter(
        state: &mut State,
        txn: &WriteTransaction,
        max_bytes: u64,
        stream: Stream,
        sink: &str,
        batch: &Batch,
        reason: &str,
    ) -> Result<(), redb::Error> {
        let budget = max_bytes / DEAD_LETTER_SHARE;
        let reason = truncate_utf8(
            reason,
            MAX_REASON_BYTES.min(usize::try_from(budget).unwrap_or(usize::MAX)),
        );
        // A letter above the share keeps its reason and the start of its body: dead letters
        // stay within their share so that points always keep theirs (docs/ARCHITECTURE.md
        // §Spool layout, Dead letters).
        let body_room = usize::try_from(budget)
            .unwrap_or(usize::MAX)
            .saturating_sub(reason.len());
        let body = &batch.body[..batch.body.len().min(body_room)];
        let bytes = (body.len() + reason.len()) as u64;
        let mut table = txn.open_table(DEAD_LETTERS)?;
        // Evict the oldest until the new one fits.
        while state.dead_bytes + bytes > budget {
            let oldest = table.first()?.map(|(k, v)| {
                let v = v.value();
                (k.value(), (v.7.len() + v.6.len()) as u64)
            });
            let Some((id, old_bytes)) = oldest else { break };
            table.remove(id)?;
            state.dead_count = state.dead_count.saturating_sub(1);
            state.dead_bytes = state.dead_bytes.saturating_sub(old_bytes);
            state.dead_evicted_total += 1;
        }
        let id = state.dead_next_id;
        state.dead_next_id += 1;
        let value = (
            stream.code(),
            sink,
            batch.first_seq,
            batch.last_seq,
            batch.records,
            now_ns(),
            reason,
            body,
        );
        table.insert(id, value)?;
        state.dead_count += 1;
        state.dead_bytes += bytes;
        Ok(())
    }
}

#[cfg(test)]
mod damage_tests;
#[cfg(test)]
mod footprint_tests;
#[cfg(test)]
mod tests;
