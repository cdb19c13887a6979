//! The engine's saved state in a spool file no gateway has open, for the commands a technician
//! runs beside the service (`gateway baseline`, `gateway check`; docs/ARCHITECTURE.md §Spool
//! layout, Engine state).
//!
//! Owns reading the state entries of a closed file and applying a [`StateDelta`] to them in one
//! durable transaction. Does not own the streams, cursors, bounds or the damage handling
//! ([`super::Spool`], `super::open`): nothing here moves a file aside or registers a sink. A
//! file a running gateway holds (redb lets one process open it) is refused with a message that
//! says to stop the service first, after at most [`IN_USE_WAIT`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, ReadableDatabase as _, ReadableTable as _, TableError};

use super::{disk, open::panic_message, StateDelta, CACHE_BYTES, ENGINE_STATE};

/// How long an open waits for a lock held elsewhere before it reports the file in use. redb's
/// locks are open-file-description locks (`F_OFD_SETLK`, redb's `range_lock.rs`): one outlives
/// its holder's close while a child process forked at that moment still has the descriptor,
/// until the child's `exec` closes it. In a process that starts others (the system tests start
/// servers throughout), a file just closed by a gateway that ran in the same process could read
/// as held for that moment (the levelling system test's baseline command was refused twice in
/// some twenty runs, right after the gateway had returned). A running gateway holds it for good:
/// the command then says so after this wait.
pub const IN_USE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How often an open refused as in use is tried again within [`IN_USE_WAIT`].
const IN_USE_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// `open`, tried again while the file reads as in use, for at most [`IN_USE_WAIT`].
fn open_waiting<D>(
    path: &Path,
    open: impl Fn() -> Result<D, DatabaseError>,
) -> Result<D, OfflineError> {
    let deadline = std::time::Instant::now() + IN_USE_WAIT;
    loop {
        match open().map_err(|e| OfflineError::of_open(path, e)) {
            Err(OfflineError::InUse { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(IN_USE_RETRY);
            }
            other => return other,
        }
    }
}

/// Saved state entries, `(key, bytes)` in key order.
pub type StateEntries = Vec<(String, Vec<u8>)>;

/// Why the saved state cannot be read or written now.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A gateway (the service) has the file open.
    #[error("spool {}: the gateway is running and holds this file; stop the service first (e.g. `sudo systemctl stop anju-gateway`), run this command again, then start the service", path.display())]
    InUse {
        /// The spool file.
        path: PathBuf,
    },
    /// Anything else: permissions, a damaged file, a full disk.
    #[error("spool {}: cannot use it ({message}); run the command as the service's user, and start the gateway once if the file needs a repair", path.display())]
    Unusable {
        /// The spool file.
        path: PathBuf,
        /// What redb or the system said.
        message: String,
    },
}

impl OfflineError {
    fn of(path: &Path, message: impl std::fmt::Display) -> Self {
        Self::Unusable {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }

    fn of_open(path: &Path, e: DatabaseError) -> Self {
        match e {
            DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
                Self::InUse {
                    path: path.to_path_buf(),
                }
            }
            other => Self::of(path, other),
        }
    }
}

/// Run `f`, a panic inside redb (a damaged file) becoming an error.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, OfflineError>) -> Result<T, OfflineError> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(OfflineError::of(path, panic_message(p.as_ref()))))
}

/// Every saved state entry (key order); `None` when the file does not exist yet.
///
/// # Errors
/// [`OfflineError::InUse`] while a gateway runs on it; otherwise [`OfflineError::Unusable`].
pub fn read_state(path: &Path) -> Result<Option<StateEntries>, OfflineError> {
    if !path.exists() {
        return Ok(None);
    }
    guarded(path, || {
        let db = open_waiting(path, || {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .open_read_only(path)
        })?;
        let txn = db.begin_read().map_err(|e| OfflineError::of(path, e))?;
        let table = match txn.open_table(ENGINE_STATE) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Some(Vec::new())),
            Err(e) => return Err(OfflineError::of(path, e)),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| OfflineError::of(path, e))? {
            let (k, v) = entry.map_err(|e| OfflineError::of(path, e))?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(Some(out))
    })
}

/// The engine's saved state in `data_dir` (key order): the alerts file's entries over those a
/// single spool file of an earlier version still holds (the gateway moves them into the alerts
/// file at its next start, keeping the alerts file's: docs/ARCHITECTURE.md §Spool layout, Two
/// files). `None` when neither file exists yet.
///
/// # Errors
/// As [`read_state`], for either file.
pub fn read_saved_state(data_dir: &Path) -> Result<Option<StateEntries>, OfflineError> {
    let earlier = read_state(&super::points_path(data_dir))?;
    let current = read_state(&super::alerts_path(data_dir))?;
    if earlier.is_none() && current.is_none() {
        return Ok(None);
    }
    let mut merged: std::collections::BTreeMap<String, Vec<u8>> =
        earlier.unwrap_or_default().into_iter().collect();
    merged.extend(current.unwrap_or_default());
    Ok(Some(merged.into_iter().collect()))
}

/// Apply `delta` to the saved state in one durable transaction, creating the file (and
/// data_dir) when the gateway has not run yet.
///
/// # Errors
/// [`OfflineError::InUse`] while a gateway runs on it; otherwise [`OfflineError::Unusable`].
pub fn write_state(path: &Path, delta: &StateDelta) -> Result<(), OfflineError> {
    disk::prepare_dir(path).map_err(|e| OfflineError::of(path, e))?;
    let existed = path.exists();
    // redb would initialise an empty file silently; the gateway treats it as damaged (moved
    // aside with a device-fault alert), so leave it to the gateway.
    if existed && disk::file_len(path) == 0 {
        return Err(OfflineError::of(path, "the file is empty (0 bytes)"));
    }
    guarded(path, || {
        let db = open_waiting(path, || {
            Database::builder().set_cache_size(CACHE_BYTES).create(path)
        })?;
        let txn = db.begin_write().map_err(|e| OfflineError::of(path, e))?;
        {
            let mut table = txn
                .open_table(ENGINE_STATE)
                .map_err(|e| OfflineError::of(path, e))?;
            delta
                .apply(&mut table)
                .map_err(|e| OfflineError::of(path, e))?;
        }
        txn.commit().map_err(|e| OfflineError::of(path, e))?;
        Ok(())
    })?;
    if !existed {
        disk::restrict_file(path).map_err(|e| OfflineError::of(path, e))?;
    }
    Ok(())
}
