//! Appends whose commit reported an error although it may have reached the file.
//!
//! redb 4.6 publishes a durable commit (`durable_commit`: the header names the new root and is
//! fsynced) and only then runs a post-commit pass that frees pages in a second, non-durable
//! commit (`process_data_freed_pages_after_commit`); that pass allocates pages and can fail, on a
//! full disk with ENOSPC. `commit()` then returns an error for a transaction that is in the file.
//! Measured on a 8 MiB tmpfs filled to a few KB short: 3 of 200 failed appends had landed. The
//! engine keeps what a failed append held and retries it, so without this every such commit was
//! stored twice (the full-disk system test saw two sink batches written twice).
//!
//! Owns, per stream, what is known about the engine's held lines: the prefix of them that is
//! in the file for sure ([`Landed::known`]) and the attempt whose outcome is unknown
//! ([`Landed::pending`]). A storage error closes the file ([`super::Spool::with_db`]); the reopen
//! reads the file's next sequence and settles the attempt: it landed when the sequence passed
//! its pieces, it did not when the sequence is where the attempt started. The retry then stores
//! only what follows the known prefix. Anything unclear (a damaged file moved aside, lines that
//! no longer start with the prefix) stores everything again: a duplicate, never a loss.
//!
//! Relies on the engine's retry starting with the bytes of the failed attempt (it appends new
//! lines after what it held, `engine::Engine::flush`); the prefix is checked by length and a
//! digest before anything is skipped. Does not own the transaction itself (`super`).

use std::hash::{DefaultHasher, Hash as _, Hasher as _};

/// A prefix of the engine's held lines of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Prefix {
    /// Its length in bytes.
    pub len: usize,
    /// Its lines (records).
    pub records: u32,
    /// [`digest`] of its bytes.
    digest: u64,
    /// Sequence of its first piece in the file.
    pub first_seq: u64,
}

/// An append whose commit failed: the lines it held and where its pieces went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    /// The known prefix and this attempt's lines together.
    prefix: Prefix,
    /// Sequence of the attempt's first piece.
    first_seq: u64,
    /// Sequence after the attempt's last piece.
    end_seq: u64,
}

/// What is known of one stream's held lines (see the module doc).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Landed {
    known: Option<Prefix>,
    pending: Option<Attempt>,
}

/// The digest of a prefix: SipHash with fixed keys, the same for the same bytes within the
/// process (no state is kept across restarts). 64 bits: a wrong match needs a collision between
/// two held bodies of the same length.
fn digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Landed {
    /// The prefix of `body` already in the file, when `body` starts with it. A `body` that does
    /// not (the engine dropped what it held) forgets it: everything is stored.
    pub fn known_prefix_of(&mut self, body: &[u8]) -> Option<Prefix> {
        let known = self.known?;
        if body.len() >= known.len && digest(&body[..known.len]) == known.digest {
            Some(known)
        } else {
            self.known = None;
            None
        }
    }

    /// The commit of `body` (`records` lines, the whole of what the engine held, the known
    /// prefix included) failed after its pieces were given the sequences `first_seq..end_seq`.
    pub fn failed(&mut self, body: &[u8], records: u32, first_seq: u64, end_seq: u64) {
        let start = self.known.map_or(first_seq, |k| k.first_seq);
        self.pending = Some(Attempt {
            prefix: Prefix {
                len: body.len(),
                records,
                digest: digest(body),
                first_seq: start,
            },
            first_seq,
            end_seq,
        });
    }

    /// The file was opened again and its next sequence is `next_seq`: settle the pending
    /// attempt. `fresh`: the file was damaged and replaced, so the sequence says nothing.
    pub fn reopened(&mut self, next_seq: u64, fresh: bool) {
        let Some(a) = self.pending.take() else {
            return;
        };
        if !fresh && next_seq >= a.end_seq {
            self.known = Some(a.prefix);
        } else if fresh || next_seq != a.first_seq {
            // Neither where it started nor past it: store everything again.
            self.known = None;
        }
    }

    /// An append committed: nothing of the engine's held lines is in the file beyond it.
    pub fn committed(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELD: &[u8] = b"m v=1i 1\nm v=2i 2\n";

    #[test]
    fn a_landed_attempt_is_the_known_prefix_of_the_retry() {
        let mut l = Landed::default();
        l.failed(HELD, 2, 7, 8);
        // Not settled until the file is opened again.
        assert_eq!(l.known_prefix_of(HELD), None);
        l.reopened(8, false);
        let retry = b"m v=1i 1\nm v=2i 2\nm v=3i 3\n";
        let k = l.known_prefix_of(retry).expect("landed");
        assert_eq!((k.len, k.records, k.first_seq), (HELD.len(), 2, 7));
    }

    #[test]
    fn an_attempt_that_did_not_land_skips_nothing() {
        let mut l = Landed::default();
        l.failed(HELD, 2, 7, 8);
        l.reopened(7, false);
        assert_eq!(l.known_prefix_of(HELD), None);
    }

    #[test]
    fn a_replaced_file_or_an_odd_sequence_skips_nothing() {
        for (next, fresh) in [(8, true), (9, true), (5, false)] {
            let mut l = Landed::default();
            l.failed(HELD, 2, 7, 8);
            l.reopened(next, fresh);
            assert_eq!(l.known_prefix_of(HELD), None, "next {next}, fresh {fresh}");
        }
    }

    #[test]
    fn other_lines_than_the_prefix_are_stored_whole() {
        let mut l = Landed::default();
        l.failed(HELD, 2, 7, 8);
        l.reopened(8, false);
        assert_eq!(l.known_prefix_of(b"m v=9i 1\nm v=2i 2\nm v=3i 3\n"), None);
        // Forgotten: the prefix does not come back.
        assert_eq!(l.known_prefix_of(HELD), None);
        assert_eq!(l.known_prefix_of(b"m v=1i 1\n"), None);
    }

    #[test]
    fn a_second_failure_after_a_landed_one_covers_both() {
        let mut l = Landed::default();
        l.failed(HELD, 2, 7, 8);
        l.reopened(8, false);
        // The retry stores the rest (sequence 8), and fails too, and lands.
        let retry = b"m v=1i 1\nm v=2i 2\nm v=3i 3\n";
        l.failed(retry, 3, 8, 9);
        l.reopened(9, false);
        let k = l.known_prefix_of(retry).expect("landed");
        assert_eq!((k.len, k.records, k.first_seq), (retry.len(), 3, 7));
        // The second did not land: the first is still known.
        let mut l = Landed::default();
        l.failed(HELD, 2, 7, 8);
        l.reopened(8, false);
        l.failed(retry, 3, 8, 9);
        l.reopened(8, false);
        assert_eq!(l.known_prefix_of(retry).map(|k| k.len), Some(HELD.len()));
    }
}
