//! Opening the spool file and keeping the spool usable whatever happens to it: a full disk, an
//! I/O error that poisons redb's handle, a damaged or truncated file, a panic inside redb
//! (docs/ARCHITECTURE.md §Spool layout, Failures; §Invariants S7, S8).
//!
//! Owns the first open, the reopen after a storage error or a caught panic (with backoff), the
//! check of the file at every open (redb's integrity check), moving a damaged file aside,
//! salvaging what can still be read from it into a fresh file, the [`DamageReport`] and the
//! device-fault alert about it. It does not own the streams, cursors and bounds (`mod.rs`) or
//! the file system details (`disk.rs`).
//!
//! Why a reopen: after a failed write redb latches the failure in its file backend, and every
//! later call on that `Database` fails with `PreviousIo` (redb 4.6, `cached_file.rs`
//! `check_failure`); only a new `Database` recovers. So after any storage error the spool drops
//! its handle and the next call (after [`REOPEN_RETRY_INITIAL`] … [`REOPEN_RETRY_MAX`]) opens
//! the file again. Until then calls return [`SpoolError::Unavailable`] at once and the engine
//! holds what it has in memory (bounded by `engine::MAX_UNSPOOLED_RECORDS`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, StorageError};
use tracing::{error, info, warn};

use super::disk::{self, IoClass};
use super::{
    AtPath, Inner, Spool, SpoolError, State, StateDelta, Stream, CACHE_BYTES, ENGINE_STATE,
    FIRST_SEQ, META, META_NEXT_SEQ, META_RECORDS,
};
use crate::alert::{encode_alert_line, stable_id, Alert, AlertKind, AlertState, Cause, Language};
use crate::log_limit::LogLimiter;
use crate::model::now_ns;
use crate::retry::Backoff;

/// First wait before the file is opened again after it failed. Short: a full disk that got room
/// back should be written again within a second, and the engine holds readings meanwhile.
pub const REOPEN_RETRY_INITIAL: Duration = Duration::from_millis(200);

/// Longest wait between attempts to open the file again. Every open checks the whole file
/// (redb's integrity check reads every page), so attempts are spaced; 10 s keeps the gap after
/// the disk has room again short against the engine's 100,000 held readings.
pub const REOPEN_RETRY_MAX: Duration = Duration::from_secs(10);

/// An unavailable spool is logged when it becomes unavailable, then at most this often with
/// the number of failed attempts since (issue 14 item 6).
pub const UNAVAILABLE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Most read attempts while salvaging one table of a damaged file. Each failed attempt skips one
/// sequence past the last chunk read, so a damaged branch page costs one attempt per sequence
/// under it; this caps the time a salvage can take (about 10 s at ~10 µs per attempt).
pub const SALVAGE_MAX_PROBES: u64 = 1_000_000;

/// Salvaged chunks are written to the fresh file in transactions of at most this many bytes,
/// so that memory stays bounded whatever the size of the damaged file.
pub const SALVAGE_COMMIT_BYTES: usize = 4 * 1024 * 1024;

/// Most damage reports kept in memory ([`Spool::damage_reports`]); older ones were logged and
/// alerted already.
pub const MAX_DAMAGE_REPORTS: usize = 16;

/// Suffix of a damaged file moved aside: `spool.redb.damaged-<unix seconds>`.
pub const DAMAGED_SUFFIX: &str = "damaged";

/// Who the gateway is, for the device-fault alert about a damaged spool file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertIdentity {
    /// The site (`site` in the config).
    pub site: String,
    /// This gateway (`gateway_id`).
    pub gateway: String,
    /// Language of the alert message.
    pub language: Language,
}

/// What happened when a damaged spool file was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamageReport {
    /// Where the damaged file was moved (kept for diagnosis).
    pub kept_aside: PathBuf,
    /// What was wrong with it.
    pub reason: String,
    /// Readings (points records) copied into the fresh file.
    pub salvaged_records: u64,
    /// Alert events copied into the fresh file.
    pub salvaged_alerts: u64,
    /// Readings that could not be recovered; `None` when that cannot be known (the file's
    /// counters were unreadable).
    pub lost_records: Option<u64>,
    /// Alert events that could not be recovered; `None` when unknown.
    pub lost_alerts: Option<u64>,
    /// When it was found, UTC nanoseconds.
    pub at_ns: i64,
}

/// A damaged file moved aside whose salvage has not happened yet (the fresh file could not be
/// created, e.g. on a full disk).
#[derive(Debug, Clone)]
struct Pending {
    aside: PathBuf,
    reason: String,
}

/// The file's health: when to try to open it again, and what happened so far.
#[derive(Debug)]
pub(super) struct Health {
    retry_at: Option<Instant>,
    backoff: Backoff,
    last_error: String,
    failed_attempts: u64,
    pending: Option<Pending>,
    log: LogLimiter,
    pub(super) reopens_total: u64,
    pub(super) panics_total: u64,
    pub(super) damaged_total: u64,
    pub(super) compactions_total: u64,
    pub(super) reports: Vec<DamageReport>,
}

impl Health {
    /// `Some(suppressed)` when "free space low" may be logged now (once, then per interval).
    pub(super) fn log_low_space(&mut self) -> Option<u64> {
        self.log.allow(LOW_SPACE)
    }

    pub(super) fn new() -> Self {
        Self {
            retry_at: None,
            backoff: Backoff::new(REOPEN_RETRY_INITIAL, REOPEN_RETRY_MAX),
            last_error: String::new(),
            failed_attempts: 0,
            pending: None,
            log: LogLimiter::new(UNAVAILABLE_LOG_INTERVAL, 2),
            reopens_total: 0,
            panics_total: 0,
            damaged_total: 0,
            compactions_total: 0,
            reports: Vec::new(),
        }
    }
}

/// The [`LogLimiter`] key of an unavailable spool.
const UNAVAILABLE: &str = "unavailable";
/// The [`LogLimiter`] key of free space below `min_free_bytes`.
const LOW_SPACE: &str = "low space";

/// Why an open did not give a usable file.
#[derive(Debug)]
pub(super) enum OpenFailure {
    /// Not fixable by waiting (permissions, another process, an older format): a start-up
    /// error; while running, retried like the others.
    Fatal(SpoolError),
    /// Try again later (full disk, I/O error); the message says why.
    Retry(String),
    /// The file is damaged: move it aside and start a fresh one.
    Damaged(String),
}

/// The message of a caught panic.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned())
}

/// Run `f`, turning a panic or an error into `None` (salvage reads what it can).
fn guarded<T>(f: impl FnOnce() -> Result<T, redb::Error>) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok().and_then(Result::ok)
}

/// What an error of redb at open means.
fn classify_db(path: &Path, e: DatabaseError) -> OpenFailure {
    let fatal = |hint: &'static str, e: DatabaseError| {
        OpenFailure::Fatal(SpoolError::Open {
            path: path.to_path_buf(),
            source: Box::new(e),
            hint,
        })
    };
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => fatal(
            "another gateway process has this file open; stop it, or give each gateway its own \
             spool path",
            e,
        ),
        DatabaseError::UpgradeRequired(_) => fatal(
            "the file was written by an older redb format; deliver its data with the gateway \
             version that wrote it, or move the file aside to start an empty spool",
            e,
        ),
        DatabaseError::Storage(s) => classify_storage(path, s),
        other => OpenFailure::Retry(other.to_string()),
    }
}

/// What a storage error at open means.
fn classify_storage(path: &Path, e: StorageError) -> OpenFailure {
    match e {
        StorageError::Io(io) => match disk::classify(&io) {
            IoClass::Permission => OpenFailure::Fatal(SpoolError::Permission {
                path: path.to_path_buf(),
                source: io,
            }),
            IoClass::Damage => OpenFailure::Damaged(io.to_string()),
            IoClass::Space | IoClass::Other => OpenFailure::Retry(io.to_string()),
        },
        StorageError::Corrupted(_) | StorageError::ValueTooLarge(_) => {
            OpenFailure::Damaged(e.to_string())
        }
        other => OpenFailure::Retry(other.to_string()),
    }
}

/// What a [`SpoolError`] from the first transaction means.
fn classify_spool(path: &Path, e: SpoolError) -> OpenFailure {
    match e {
        SpoolError::Storage { source, .. } => match *source {
            redb::Error::Io(io) => classify_storage(path, StorageError::Io(io)),
            redb::Error::Corrupted(msg) => classify_storage(path, StorageError::Corrupted(msg)),
            other => OpenFailure::Retry(other.to_string()),
        },
        other => OpenFailure::Retry(other.to_string()),
    }
}

impl Spool {
    /// The open at start-up: a full disk or a damaged file do not stop the gateway.
    pub(super) fn first_open(&self) -> Result<(), SpoolError> {
        let mut guard = self.lock();
        match self.open_db(&mut guard) {
            Ok(()) => Ok(()),
            Err(OpenFailure::Fatal(e)) => Err(e),
            Err(OpenFailure::Retry(reason) | OpenFailure::Damaged(reason)) => {
                self.schedule_retry(&mut guard, reason);
                Ok(())
            }
        }
    }

    /// Open the file again if it is closed and its retry time has come.
    pub(super) fn ensure_open(&self, inner: &mut Inner) -> Result<(), SpoolError> {
        if inner.db.is_some() {
            return Ok(());
        }
        if inner.health.retry_at.is_some_and(|t| Instant::now() < t) {
            return Err(self.unavailable(&inner.health));
        }
        match self.open_db(inner) {
            Ok(()) => {
                let h = &mut inner.health;
                h.reopens_total += 1;
                info!(spool = %self.path.display(), failed_attempts = h.failed_attempts,
                      "Spool available again.");
                h.failed_attempts = 0;
                h.retry_at = None;
                h.backoff.reset();
                h.log.reset(UNAVAILABLE);
                // Sinks waiting for data read again (salvaged chunks, or what they missed).
                self.appended.notify_waiters();
                Ok(())
            }
            Err(OpenFailure::Fatal(e)) => {
                self.schedule_retry(inner, e.to_string());
                Err(e)
            }
            Err(OpenFailure::Retry(reason) | OpenFailure::Damaged(reason)) => {
                self.schedule_retry(inner, reason);
                Err(self.unavailable(&inner.health))
            }
        }
    }

    /// A call failed with a storage error or a panic: drop the handle (redb's is poisoned after
    /// an I/O error) so that a later call opens and checks the file again.
    pub(super) fn close_after_fault(&self, inner: &mut Inner, reason: &str) {
        if let Some(db) = inner.db.take() {
            // Its drop tries a clean shutdown, which may fail (or panic) on a poisoned handle.
            let _ = catch_unwind(AssertUnwindSafe(|| drop(db)));
        }
        self.schedule_retry(inner, reason.to_owned());
    }

    fn schedule_retry(&self, inner: &mut Inner, reason: String) {
        let h = &mut inner.health;
        let delay = h.backoff.next_delay();
        h.retry_at = Some(Instant::now() + delay);
        h.failed_attempts += 1;
        if let Some(suppressed) = h.log.allow(UNAVAILABLE) {
            warn!(spool = %self.path.display(), error = %reason, retry_in = ?delay,
                  failed_attempts = h.failed_attempts, suppressed,
                  "Spool not available; it is opened again after the wait (the engine holds readings in memory meanwhile, bounded, and acknowledges nothing upstream).");
        }
        h.last_error = reason;
    }

    /// [`SpoolError::Unavailable`] for the current health.
    pub(super) fn unavailable(&self, h: &super::open::Health) -> SpoolError {
        SpoolError::Unavailable {
            path: self.path.clone(),
            reason: h.last_error.clone(),
            retry_in: h.retry_at.map_or(Duration::ZERO, |t| {
                t.saturating_duration_since(Instant::now())
            }),
        }
    }

    /// The damage found so far, oldest first (at most [`MAX_DAMAGE_REPORTS`]).
    #[must_use]
    pub fn damage_reports(&self) -> Vec<DamageReport> {
        self.lock().health.reports.clone()
    }

    /// Open (or create) the file and install it; a damaged file is moved aside and replaced by a
    /// fresh one holding what could be salvaged.
    fn open_db(&self, inner: &mut Inner) -> Result<(), OpenFailure> {
        let p = self.path.as_path();
        disk::prepare_dir(p).map_err(|e| match disk::classify(&e) {
            IoClass::Permission => OpenFailure::Fatal(SpoolError::Permission {
                path: p.to_path_buf(),
                source: e,
            }),
            _ => OpenFailure::Retry(format!("cannot create the data directory: {e}")),
        })?;
        let floor = inner.state.next_seq;
        if inner.health.pending.is_none() {
            match self.open_file(floor, false) {
                Ok((db, state)) => {
                    for landed in &mut inner.landed {
                        landed.reopened(state.next_seq, false);
                    }
                    inner.db = Some(db);
                    inner.state = state;
                    return Ok(());
                }
                Err(OpenFailure::Damaged(reason)) => {
                    let aside = move_aside(p).map_err(|e| {
                        OpenFailure::Retry(format!(
                            "the file is damaged ({reason}) and cannot be moved aside: {e}"
                        ))
                    })?;
                    inner.health.damaged_total += 1;
                    inner.health.pending = Some(Pending { aside, reason });
                }
                Err(other) => return Err(other),
            }
        }
        let Some(pending) = inner.health.pending.clone() else {
            return Err(OpenFailure::Retry("no damaged file pending".to_owned()));
        };
        // A fresh file, at once, so new readings keep flowing; then what can be saved.
        let (db, mut state) = match self.open_file(floor, true) {
            Ok(x) => x,
            Err(OpenFailure::Damaged(r)) => return Err(OpenFailure::Retry(r)),
            Err(other) => return Err(other),
        };
        let report = self.salvage(&db, &mut state, &pending);
        inner.health.pending = None;
        error!(spool = %p.display(), kept_aside = %report.kept_aside.display(), reason = %report.reason,
               salvaged_readings = report.salvaged_records, salvaged_alerts = report.salvaged_alerts,
               lost_readings = %report.lost_records.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
               lost_alerts = %report.lost_alerts.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
               "Spool file was damaged: kept aside, a fresh spool is in use with what could be salvaged.");
        if inner.health.reports.len() >= MAX_DAMAGE_REPORTS {
            inner.health.reports.remove(0);
        }
        inner.health.reports.push(report);
        // A fresh file's sequence says nothing of an append whose commit failed.
        for landed in &mut inner.landed {
            landed.reopened(state.next_seq, true);
        }
        inner.db = Some(db);
        inner.state = state;
        Ok(())
    }

    /// Open `path` with redb's integrity check (a damaged file is reported as corrupted instead
    /// of trusted) and register the readers. `fresh`: the file was moved aside; remove whatever
    /// an earlier failed attempt left and start empty.
    fn open_file(&self, floor: u64, fresh: bool) -> Result<(Database, State), OpenFailure> {
        let p = self.path.as_path();
        if fresh {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(OpenFailure::Retry(e.to_string())),
            }
        } else if std::fs::metadata(p).is_ok_and(|m| m.len() == 0) {
            // redb would silently initialise an empty file: whatever it held is gone.
            return Err(OpenFailure::Damaged(
                "the file is empty (0 bytes)".to_owned(),
            ));
        }
        let opened = catch_unwind(AssertUnwindSafe(|| {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .set_check_integrity_on_open(true)
                .create(p)
        }));
        let db = match opened {
            Err(panic) => {
                return Err(OpenFailure::Damaged(format!(
                    "redb panicked opening it: {}",
                    panic_message(panic.as_ref())
                )))
            }
            Ok(Err(e)) => return Err(classify_db(p, e)),
            Ok(Ok(db)) => db,
        };
        if let Err(e) = disk::restrict_file(p) {
            warn!(spool = %p.display(), error = %e, "Cannot make the spool file private (mode 0600).");
        }
        let readers = &self.readers;
        match catch_unwind(AssertUnwindSafe(|| Self::register(p, &db, readers, floor))) {
            Ok(Ok(state)) => Ok((db, state)),
            Ok(Err(e)) => Err(classify_spool(p, e)),
            Err(panic) => Err(OpenFailure::Damaged(format!(
                "redb panicked reading it: {}",
                panic_message(panic.as_ref())
            ))),
        }
    }

    /// Copy what can still be read from the damaged file into `db` (never fails: what cannot be
    /// read is reported as lost), then put the device-fault alert about it on the alerts stream.
    fn salvage(&self, db: &Database, state: &mut State, pending: &Pending) -> DamageReport {
        let p = self.path.as_path();
        let mut out = Salvage::default();
        let aside = pending.aside.as_path();
        let ro = catch_unwind(AssertUnwindSafe(|| {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .open_read_only(aside)
        }));
        let mut writer = SalvageWriter::new(p, db, state);
        match ro {
            Ok(Ok(src)) => out.read_from(&src, &mut writer),
            // A file that was not closed cleanly needs a repair before it can be read: open it
            // writable (it is the copy kept aside; the repair only rewrites its allocator state).
            _ => {
                let rw = catch_unwind(AssertUnwindSafe(|| {
                    Database::builder().set_cache_size(CACHE_BYTES).open(aside)
                }));
                if let Ok(Ok(src)) = rw {
                    out.read_from(&src, &mut writer);
                }
            }
        }
        writer.flush();
        // What the file said it held and did not come back (unreadable or invalid) is lost.
        let lost = |i: usize| out.expected.map(|e| e[i].saturating_sub(writer.records[i]));
        let report = DamageReport {
            kept_aside: pending.aside.clone(),
            reason: pending.reason.clone(),
            salvaged_records: writer.records[Stream::Points.index()],
            salvaged_alerts: writer.records[Stream::Alerts.index()],
            lost_records: lost(Stream::Points.index()),
            lost_alerts: lost(Stream::Alerts.index()),
            at_ns: now_ns(),
        };
        if let Some(engine_state) = &out.engine_state {
            writer.engine_state = Some(engine_state.clone());
        }
        if let Some(id) = &self.identity {
            let alert = damage_alert(id, &report);
            if let Ok(mut json) = serde_json::to_vec(&alert) {
                json.push(b'\n');
                match &self.damage_alerts_to {
                    // The alerts file has its own lock and never calls into this one.
                    Some(alerts) => {
                        if let Err(e) = alerts.append(Stream::Alerts, &json, 1) {
                            error!(spool = %p.display(), error = %e,
                                "The device-fault alert about the damaged spool file could not be stored in the alerts file; the damage is in the log and the counters only.");
                        }
                    }
                    None => writer.push(Stream::Alerts, 1, &json),
                }
            }
            let mut line = Vec::new();
            encode_alert_line(&mut line, &alert);
            writer.push(Stream::Points, 1, &line);
        }
        writer.flush();
        report
    }
}

/// Move the damaged file to `<name>.damaged-<unix seconds>[-n]` next to it.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    /// Most name variants tried when several files were moved aside in the same second.
    const MAX_NAME_TRIES: u32 = 100;
    let secs = now_ns() / 1_000_000_000;
    let name = path
        .file_name()
        .map_or_else(|| "spool".into(), |n| n.to_string_lossy().into_owned());
    for n in 0..MAX_NAME_TRIES {
        let candidate = if n == 0 {
            path.with_file_name(format!("{name}.{DAMAGED_SUFFIX}-{secs}"))
        } else {
            path.with_file_name(format!("{name}.{DAMAGED_SUFFIX}-{secs}-{n}"))
        };
        if !candidate.exists() {
            std::fs::rename(path, &candidate)?;
            return Ok(candidate);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "too many damaged files moved aside this second",
    ))
}

/// What was read from a damaged file.
#[derive(Debug, Default)]
struct Salvage {
    /// Records per stream the file said it held (its counters), if they were readable.
    expected: Option<[u64; 2]>,
    engine_state: Option<StateDelta>,
}

impl Salvage {
    fn read_from<D: ReadableDatabase>(&mut self, src: &D, w: &mut SalvageWriter<'_>) {
        self.expected = guarded(|| {
            let txn = src.begin_read()?;
            let meta = txn.open_table(META)?;
            let mut e = [0u64; 2];
            for s in Stream::ALL {
                e[s.index()] = meta.get(META_RECORDS[s.index()])?.map_or(0, |v| v.value());
            }
            Ok(e)
        });
        let next_seq = guarded(|| {
            let txn = src.begin_read()?;
            let meta = txn.open_table(META)?;
            Ok(meta.get(META_NEXT_SEQ)?.map(|v| v.value()))
        })
        .flatten();
        // Every entry of the engine state, or none: a partial state read from a damaged page
        // is not mixed with what the engine saves next (it restores what is there).
        self.engine_state = guarded(|| {
            let txn = src.begin_read()?;
            let t = txn.open_table(ENGINE_STATE)?;
            let mut delta = StateDelta::default();
            for entry in t.iter()? {
                let (k, v) = entry?;
                delta
                    .entries
                    .insert(k.value().to_owned(), Some(v.value().to_vec()));
            }
            Ok(delta)
        })
        .filter(|d| !d.is_empty());
        for stream in Stream::ALL {
            scan(src, stream, next_seq, w);
        }
    }
}

/// Read every chunk of `stream` that can be read, in order, skipping what cannot.
fn scan<D: ReadableDatabase>(src: &D, stream: Stream, end: Option<u64>, w: &mut SalvageWriter<'_>) {
    let table = stream.table();
    let mut from = FIRST_SEQ;
    let end = end.unwrap_or(u64::MAX);
    for _ in 0..SALVAGE_MAX_PROBES {
        let mut last: Option<u64> = None;
        let done = catch_unwind(AssertUnwindSafe(|| -> Result<(), redb::Error> {
            let txn = src.begin_read()?;
            let t = txn.open_table(table)?;
            for entry in t.range(from..)? {
                let (k, v) = entry?;
                let (records, _, body) = v.value();
                w.push(stream, records, body);
                last = Some(k.value());
            }
            Ok(())
        }));
        if matches!(done, Ok(Ok(()))) {
            return;
        }
        // Skip past what was read and the entry that failed.
        from = last.map_or(from, |k| k.saturating_add(1)).saturating_add(1);
        if from >= end {
            return;
        }
    }
}

/// Writes salvaged chunks into the fresh file in bounded transactions.
struct SalvageWriter<'a> {
    path: &'a Path,
    db: &'a Database,
    state: &'a mut State,
    buffer: Vec<(Stream, u32, Vec<u8>)>,
    buffered: usize,
    /// Records written per stream.
    records: [u64; 2],
    /// Records read but refused (a points chunk that is not valid line protocol).
    rejected: [u64; 2],
    engine_state: Option<StateDelta>,
    /// Set after a failed write: the rest is counted as lost.
    failed: bool,
}

impl<'a> SalvageWriter<'a> {
    fn new(path: &'a Path, db: &'a Database, state: &'a mut State) -> Self {
        Self {
            path,
            db,
            state,
            buffer: Vec::new(),
            buffered: 0,
            records: [0; 2],
            rejected: [0; 2],
            engine_state: None,
            failed: false,
        }
    }

    fn push(&mut self, stream: Stream, records: u32, body: &[u8]) {
        // A damaged page can still parse: nothing malformed goes to a receiver (invariant 6).
        let valid = records > 0
            && !body.is_empty()
            && match stream {
                Stream::Points => crate::record::validate(body).is_ok(),
                Stream::Alerts => std::str::from_utf8(body).is_ok(),
            };
        if !valid {
            self.rejected[stream.index()] += u64::from(records);
            return;
        }
        self.buffered += body.len();
        self.buffer.push((stream, records, body.to_vec()));
        if self.buffered >= SALVAGE_COMMIT_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if (self.buffer.is_empty() && self.engine_state.is_none()) || self.failed {
            return;
        }
        let chunks = std::mem::take(&mut self.buffer);
        self.buffered = 0;
        let mut next = self.state.clone();
        let state = self.engine_state.take();
        let written = catch_unwind(AssertUnwindSafe(|| {
            Spool::insert_chunks(self.path, self.db, &mut next, &chunks, state.as_ref())
        }));
        if matches!(written, Ok(Ok(()))) {
            for (stream, records, _) in &chunks {
                self.records[stream.index()] += u64::from(*records);
            }
            *self.state = next;
        } else {
            self.failed = true;
            for (stream, records, _) in &chunks {
                self.rejected[stream.index()] += u64::from(*records);
            }
        }
    }
}

impl Spool {
    /// Append `chunks` under new sequences in one durable transaction (salvage and its alert),
    /// and replace the engine state when given.
    fn insert_chunks(
        p: &Path,
        db: &Database,
        next: &mut State,
        chunks: &[(Stream, u32, Vec<u8>)],
        engine_state: Option<&StateDelta>,
    ) -> Result<(), SpoolError> {
        let txn = Self::begin_durable(db).at(p)?;
        {
            let mut meta = txn.open_table(META).at(p)?;
            let mut cursors = txn.open_table(super::CURSORS).at(p)?;
            for (stream, records, body) in chunks {
                let mut table = txn.open_table(stream.table()).at(p)?;
                let seq = next.next_seq;
                next.next_seq += 1;
                table
                    .insert(seq, (*records, now_ns(), body.as_slice()))
                    .at(p)?;
                next.count_chunk(*stream, *records, body.len() as u64);
            }
            if let Some(s) = engine_state {
                let mut t = txn.open_table(ENGINE_STATE).at(p)?;
                s.apply(&mut t).at(p)?;
            }
            next.save(&mut meta, &mut cursors).at(p)?;
        }
        txn.commit().at(p)?;
        Ok(())
    }
}

/// The device-fault alert about a damaged spool file, for the site technician.
fn damage_alert(id: &AlertIdentity, r: &DamageReport) -> Alert {
    let at = r.at_ns;
    let aside = r.kept_aside.display().to_string();
    let message = match (id.language, r.lost_records) {
        (Language::Zh, Some(n)) => format!(
            "【设备故障】网关 {} 的缓存文件已损坏（{}），已另存为 {aside} 并启用新缓存；{n} 条读数无法恢复，已恢复 {} 条（检查 spool_damaged）",
            id.gateway, r.reason, r.salvaged_records
        ),
        (Language::Zh, None) => format!(
            "【设备故障】网关 {} 的缓存文件已损坏（{}），已另存为 {aside} 并启用新缓存；无法恢复的读数数量未知，已恢复 {} 条（检查 spool_damaged）",
            id.gateway, r.reason, r.salvaged_records
        ),
        (Language::En, Some(n)) => format!(
            "[Device fault] gateway {}: the spool file was damaged ({}); kept aside as {aside}, a fresh spool is in use; {n} readings could not be recovered, {} were (check spool_damaged)",
            id.gateway, r.reason, r.salvaged_records
        ),
        (Language::En, None) => format!(
            "[Device fault] gateway {}: the spool file was damaged ({}); kept aside as {aside}, a fresh spool is in use; an unknown number of readings could not be recovered, {} were (check spool_damaged)",
            id.gateway, r.reason, r.salvaged_records
        ),
    };
    let rule = "spool_damaged";
    let channel = format!("{}/spool", id.gateway);
    Alert {
        id: stable_id(&id.site, rule, None, &[channel.as_str()], at),
        seq: 0,
        kind: AlertKind::DeviceFault,
        // No cause names storage yet; "bad quality" is the nearest (readings not as recorded).
        cause: Cause::BadQuality,
        site: id.site.clone(),
        structure: None,
        device: id.gateway.clone(),
        point: "spool".to_owned(),
        channel,
        channels: Vec::new(),
        quantity: None,
        rule: rule.to_owned(),
        label: Some("spool file damaged".to_owned()),
        side: None,
        level: crate::alert::Level::Red,
        previous_level: None,
        state: AlertState::Raised,
        #[allow(clippy::cast_precision_loss)] // a count of readings, far below 2^53
        value: r.lost_records.map(|n| n as f64),
        threshold: None,
        unit: String::new(),
        quality: None,
        started_at: at,
        event_at: at,
        detected_at: at,
        message,
        ack: None,
    }
}
