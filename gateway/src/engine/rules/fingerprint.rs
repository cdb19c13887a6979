//! A 64-bit fingerprint of a `Serialize` value: how the rule state and the derived channels'
//! state tell whether an entry changed since it was last saved (`saved.rs`, `derived`;
//! issue 11: only what changed is written to the site box's SD card).
//!
//! Owns [`fingerprint`]. It does not decide which fields count as a change (the caller
//! fingerprints a view without them), and its values are never stored: the same content has the
//! same fingerprint within one run, which is all a change check needs.
//!
//! The fingerprint is a hash of the value's JSON, the form the entries are saved in. Feeding the
//! values to a hasher through a serde `Serializer` of its own was measured (2026-12-01) at 7,900
//! instead of 35,000 instructions per channel and save, but it compiled every state type's
//! serialisation a second time, and with it the aarch64 build crossed the 7 MB target (issue 13)
//! by a 64 KiB step; the JSON serialisation of these types is in the binary anyway. What is
//! kept of that saving: the view hashed leaves out the channel's series info (its key stands
//! for it) and is not a copy of the state.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};

use serde::Serialize;

/// The fingerprint of `value`: equal for equal JSON within this process (`DefaultHasher::new()`
/// has fixed keys).
///
/// # Errors
/// The value could not be serialised.
pub fn fingerprint<T: Serialize + ?Sized>(value: &T) -> Result<u64, serde_json::Error> {
    Ok(hash_bytes(&serde_json::to_vec(value)?))
}

/// A hash of `bytes`, the same for the same bytes within this process.
#[must_use]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(serde::Serialize)]
    struct Pair<'a> {
        a: &'a str,
        b: &'a str,
    }

    #[test]
    fn equal_values_have_one_fingerprint_and_different_ones_another() {
        let x = fingerprint(&(1.5_f64, Some(3_u32), "abc")).ok();
        assert!(x.is_some());
        assert_eq!(x, fingerprint(&(1.5_f64, Some(3_u32), "abc")).ok());
        // One bit of a float, None against Some(0), a string's split, a map's key.
        assert_ne!(
            x,
            fingerprint(&(1.500_000_000_000_000_2_f64, Some(3_u32), "abc")).ok()
        );
        assert_ne!(
            fingerprint(&None::<u32>).ok(),
            fingerprint(&Some(0_u32)).ok()
        );
        assert_ne!(
            fingerprint(&Pair { a: "ab", b: "c" }).ok(),
            fingerprint(&Pair { a: "a", b: "bc" }).ok()
        );
        assert_ne!(
            fingerprint(&vec![vec![1_u8], vec![]]).ok(),
            fingerprint(&vec![vec![], vec![1_u8]]).ok()
        );
        let m1: BTreeMap<&str, i64> = [("up", 1), ("down", 2)].into_iter().collect();
        let m2: BTreeMap<&str, i64> = [("up", 2), ("down", 1)].into_iter().collect();
        assert_ne!(fingerprint(&m1).ok(), fingerprint(&m2).ok());
        assert_eq!(fingerprint(&m1).ok(), fingerprint(&m1.clone()).ok());
    }
}
