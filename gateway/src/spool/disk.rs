//! The spool's dealings with the file system itself, below redb: the data directory and file
//! modes, free space, the file's size, and what an I/O error means for the spool.
//!
//! Owns the directory and file permissions (0700 / 0600, issue 14 item 5), the free-space query
//! (statvfs through `rustix`, so no `unsafe`) and the classification of I/O errors into
//! permission / space / damage / other. It does not open redb files or decide what to do about
//! an error (that is `open.rs`), and does not enforce the bounds (that is `mod.rs`).

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Mode of a data directory the spool creates: the spool holds site data and the engine's
/// state, which other users of the box have no business reading (issue 14 item 5).
pub const DIR_MODE: u32 = 0o700;

/// Mode of the spool file (set at every open, so a file created 0644 by an older version is
/// tightened too).
pub const FILE_MODE: u32 = 0o600;

/// `EDQUOT` (Linux): a disk quota is exhausted. Treated like a full disk.
const EDQUOT: i32 = 122;

/// What an I/O error means for the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// This process may not write there (permission, read-only file system, a path through a
    /// regular file): a configuration problem, reported with a permissions message.
    Permission,
    /// The disk (or quota) is full: wait and try again; nothing is wrong with the file.
    Space,
    /// The file ends early or holds what cannot be read: treat it as damaged.
    Damage,
    /// Anything else (EIO, interrupted ...): try again later.
    Other,
}

/// Classify `e`.
#[must_use]
pub fn classify(e: &io::Error) -> IoClass {
    use io::ErrorKind as K;
    if e.raw_os_error() == Some(EDQUOT) {
        return IoClass::Space;
    }
    match e.kind() {
        K::PermissionDenied | K::ReadOnlyFilesystem | K::NotADirectory => IoClass::Permission,
        K::StorageFull | K::QuotaExceeded => IoClass::Space,
        K::UnexpectedEof | K::InvalidData => IoClass::Damage,
        _ => IoClass::Other,
    }
}

/// Create the directory of `file` (and its parents) with [`DIR_MODE`] if it does not exist.
/// An existing directory keeps its mode: it may have been set up by the package on purpose.
///
/// # Errors
/// The I/O error of the creation.
pub fn prepare_dir(file: &Path) -> io::Result<()> {
    let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Set the spool file's mode to [`FILE_MODE`].
///
/// # Errors
/// The I/O error of the change.
pub fn restrict_file(file: &Path) -> io::Result<()> {
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(FILE_MODE))
}

/// Bytes available to this (unprivileged) process on the file system holding `file`'s
/// directory; `None` when it cannot be asked (then no free-space bound applies).
#[must_use]
pub fn free_bytes(file: &Path) -> Option<u64> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The file's size on disk in bytes (its length; redb files are not sparse); 0 when it cannot
/// be read.
#[must_use]
pub fn file_len(file: &Path) -> u64 {
    std::fs::metadata(file).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified_by_what_they_mean_for_the_spool() {
        let kind = |k: io::ErrorKind| classify(&io::Error::from(k));
        assert_eq!(kind(io::ErrorKind::PermissionDenied), IoClass::Permission);
        assert_eq!(kind(io::ErrorKind::ReadOnlyFilesystem), IoClass::Permission);
        assert_eq!(kind(io::ErrorKind::NotADirectory), IoClass::Permission);
        assert_eq!(kind(io::ErrorKind::StorageFull), IoClass::Space);
        assert_eq!(classify(&io::Error::from_raw_os_error(28)), IoClass::Space); // ENOSPC
        assert_eq!(
            classify(&io::Error::from_raw_os_error(EDQUOT)),
            IoClass::Space
        );
        assert_eq!(
            classify(&io::Error::from_raw_os_error(13)),
            IoClass::Permission
        ); // EACCES
        assert_eq!(kind(io::ErrorKind::UnexpectedEof), IoClass::Damage);
        assert_eq!(classify(&io::Error::from_raw_os_error(5)), IoClass::Other); // EIO
    }

    #[test]
    fn created_directories_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a").join("b").join("spool.redb");
        prepare_dir(&file).expect("create");
        for d in [dir.path().join("a"), dir.path().join("a").join("b")] {
            let mode = std::fs::metadata(&d).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, DIR_MODE, "{}", d.display());
        }
        assert!(free_bytes(&file).is_some_and(|b| b > 0));
    }
}
