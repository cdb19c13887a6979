//! The local history against known readings: buckets, merging across flushes, pruning, restart,
//! a damaged file, alert events, giving up for free space, and its flash cost.

use std::time::Duration;

use super::*;
use crate::alert::AlertState;

/// 2026-11-30 07:00:00 UTC, on a 30 min boundary.
const T0: TimestampNs = 1_796_022_000 * NANOS_PER_SEC;
const S: TimestampNs = NANOS_PER_SEC;

fn settings() -> HistorySettings {
    HistorySettings::default()
}

/// A settlement channel `key` (`device/point`) in mm.
fn series(key: &str) -> std::sync::Arc<crate::model::Series> {
    let (device, point) = key.split_once('/').unwrap_or((key, ""));
    std::sync::Arc::new(crate::model::Series::new(
        "xa",
        "gw-1",
        device,
        point,
        crate::model::QuantityKind::Settlement,
        "mm",
        &std::collections::BTreeMap::new(),
    ))
}

fn open(dir: &Path) -> History {
    History::open(&dir.join(HISTORY_FILE), settings(), 0)
}

#[test]
fn history_buckets_hold_min_max_mean_and_counts_of_the_readings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = open(dir.path());
    // Bucket [T0, T0+10s): 1, 2, 6 and a bad reading; [T0+10s, +20s): 4.
    h.record(&series("lvl-1/ch1"), T0, Some(1.0), Quality::Good);
    h.record(&series("lvl-1/ch1"), T0 + 3 * S, Some(2.0), Quality::Good);
    h.record(&series("lvl-1/ch1"), T0 + 9 * S, Some(6.0), Quality::Good);
    h.record(&series("lvl-1/ch1"), T0 + 5 * S, None, Quality::Timeout);
    h.record(
        &series("lvl-1/ch1"),
        T0 + 6 * S,
        Some(99.0),
        Quality::OutOfRange,
    );
    h.record(&series("lvl-1/ch1"), T0 + 12 * S, Some(4.0), Quality::Good);
    h.record(&series("lvl-1/ch2"), T0, Some(-7.5), Quality::Good);
    // Shown before the flush (from memory) and after it (from the file) alike.
    for flushed in [false, true] {
        if flushed {
            h.flush(T0 + 20 * S);
        }
        let c = h.curve("lvl-1/ch1", T0 - 3600 * S, T0 + 60 * S, TIERS[0]);
        assert_eq!(c.width_secs, 10);
        assert_eq!(c.buckets.len(), 2, "flushed {flushed}: {c:?}");
        let b = c.buckets[0];
        assert_eq!((b.start_ns, b.count, b.bad), (T0, 3, 2));
        assert_eq!((b.min, b.max), (1.0, 6.0));
        assert!((b.mean - 3.0).abs() < 1e-6, "{}", b.mean);
        assert_eq!(
            (c.buckets[1].start_ns, c.buckets[1].count),
            (T0 + 10 * S, 1)
        );
        // The 5 min tier has both in one bucket.
        let c = h.curve("lvl-1/ch1", T0 - 3600 * S, T0 + 60 * S, TIERS[1]);
        assert_eq!(c.buckets.len(), 1);
        assert_eq!((c.buckets[0].count, c.buckets[0].max), (4, 6.0));
        assert!((c.buckets[0].mean - 13.0 / 4.0).abs() < 1e-6);
    }
    // A reading for a bucket already in the file merges with it.
    h.record(&series("lvl-1/ch1"), T0 + 8 * S, Some(-3.0), Quality::Good);
    for _ in 0..2 {
        let c = h.curve("lvl-1/ch1", T0, T0 + 60 * S, TIERS[0]);
        let b = c.buckets[0];
        assert_eq!((b.count, b.min, b.max), (4, -3.0, 6.0));
        assert!((b.mean - 1.5).abs() < 1e-6, "{}", b.mean);
        h.flush(T0 + 30 * S);
    }
    let other = h.curve("lvl-1/ch2", T0, T0 + 60 * S, TIERS[0]);
    assert_eq!(other.buckets.len(), 1);
    assert_eq!(other.buckets[0].mean, -7.5);
    assert!(h
        .curve("nobody/x", T0, T0 + 60 * S, TIERS[0])
        .buckets
        .is_empty());
}

#[test]
fn history_survives_a_restart_and_prunes_what_left_each_tier() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let h = open(dir.path());
        // One reading every 10 min for 3 days.
        for i in 0..(3 * 24 * 6) {
            h.record(
                &series("a/p"),
                T0 + i * 600 * S,
                Some(i as f64),
                Quality::Good,
            );
        }
        h.flush(T0 + 3 * 24 * 3600 * S);
    }
    let h = open(dir.path());
    assert_eq!(
        h.channels(),
        [ChannelMeta {
            key: "a/p".into(),
            device: "a".into(),
            kind: crate::model::QuantityKind::Settlement,
            unit: "mm".into()
        }]
    );
    let now = T0 + 3 * 24 * 3600 * S;
    let week = T0 - 7 * 24 * 3600 * S;
    // 10 s tier: only the last 2 h (12 readings); 5 min: the last 26 h; 30 min: everything.
    let fine = h.curve("a/p", week, now, TIERS[0]);
    assert_eq!(fine.buckets.len(), 12, "{:?}", fine.buckets.first());
    let mid = h.curve("a/p", week, now, TIERS[1]);
    assert_eq!(mid.buckets.len(), 26 * 6);
    let coarse = h.curve("a/p", week, now, TIERS[2]);
    assert_eq!(coarse.buckets.len(), 3 * 24 * 2);
    assert_eq!(coarse.buckets[0].count, 3);
    assert!((coarse.buckets[0].mean - 1.0).abs() < 1e-6);
    // A week later everything is gone.
    h.flush(now + 8 * 24 * 3600 * S);
    assert!(h.curve("a/p", week, now, TIERS[2]).buckets.is_empty());
    assert!(h.stats().available);
}

#[test]
fn a_damaged_history_file_is_replaced_and_the_history_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(HISTORY_FILE), vec![0x5a; 10_000]).expect("write");
    let h = open(dir.path());
    assert!(h.stats().available, "{:?}", h.stats());
    h.record(&series("a/p"), T0, Some(1.0), Quality::Good);
    h.flush(T0);
    assert_eq!(h.curve("a/p", T0, T0 + S, TIERS[0]).buckets.len(), 1);
}

fn alert(state: AlertState, at: TimestampNs) -> Alert {
    Alert {
        state,
        started_at: T0,
        event_at: at,
        detected_at: at,
        ..crate::alert::tests::settlement_alert()
    }
}

#[test]
fn alert_events_are_kept_newest_first_within_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = open(dir.path());
    h.record_alert(&alert(AlertState::Raised, T0));
    h.record_alert(&alert(AlertState::Acknowledged, T0 + 60 * S));
    h.flush(T0 + 60 * S);
    // Same data time as the raise: kept beside it, not over it.
    h.record_alert(&alert(AlertState::Cleared, T0));
    h.record_alert(&alert(AlertState::Escalated, T0 + 120 * S));
    let states =
        |h: &History| -> Vec<AlertState> { h.alerts(T0 - S, 10).iter().map(|a| a.state).collect() };
    // Memory first (newest of it first), then the file newest first; after the flush, all by
    // time.
    assert_eq!(
        states(&h),
        [
            AlertState::Escalated,
            AlertState::Cleared,
            AlertState::Acknowledged,
            AlertState::Raised
        ]
    );
    h.flush(T0 + 120 * S);
    let got = states(&h);
    assert_eq!(got[0], AlertState::Escalated);
    assert_eq!(got[1], AlertState::Acknowledged);
    assert_eq!(got.len(), 4);
    assert_eq!(h.alerts(T0 + 61 * S, 10).len(), 1);
    assert_eq!(h.alerts(T0 - S, 2).len(), 2);
    // Past the window they are pruned.
    h.flush(T0 + 8 * 24 * 3600 * S);
    assert!(h.alerts(0, 10).is_empty());
}

#[test]
fn short_of_free_space_the_history_deletes_its_file_and_keeps_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(HISTORY_FILE);
    let free = crate::spool::free_bytes(&path).expect("statvfs");
    {
        let h = History::open(&path, settings(), 0);
        h.record(&series("a/p"), T0, Some(1.0), Quality::Good);
        h.flush(T0);
    }
    assert!(path.exists());
    // A spool min_free of more than what is free: the history gives up at once.
    let h = History::open(&path, settings(), free);
    assert!(!path.exists(), "the file is deleted");
    let s = h.stats();
    assert!(!s.available);
    assert_eq!(s.given_up_for_space, 1);
    assert!(
        s.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("given up for free space")),
        "{s:?}"
    );
    h.record(&series("a/p"), T0, Some(1.0), Quality::Good);
    h.flush(T0);
    assert!(!path.exists(), "nothing written while short of space");
    assert_eq!(h.stats().skipped, 1);
    assert!(h.curve("a/p", T0, T0 + S, TIERS[0]).buckets.is_empty());
}

#[test]
fn history_config_defaults_and_bounds() {
    let c: HistoryConfig = toml::from_str("").expect("parses");
    assert_eq!(
        c.validate("console.history"),
        Ok(Some(HistorySettings {
            window: DEFAULT_WINDOW,
            max_bytes: DEFAULT_MAX_BYTES
        }))
    );
    let off: HistoryConfig = toml::from_str("enabled = false").expect("parses");
    assert_eq!(off.validate("console.history"), Ok(None));
    let bad: HistoryConfig = toml::from_str("window = \"10m\"\nmax_bytes = 1000").expect("parses");
    let problems = bad.validate("console.history").expect_err("refused");
    assert_eq!(problems.len(), 2);
    assert_eq!(problems[0].0, "console.history.window");
    assert_eq!(problems[1].0, "console.history.max_bytes");
    assert!(toml::from_str::<HistoryConfig>("windw = \"7d\"").is_err());
}

/// The flash cost (README §Local history): `CHANNELS` channels read every 10 s for 8 days
/// (one day past the window, so every tier is at its steady state), flushed every 10 min of
/// data time. Prints the file's size per channel and per reading kept; run with
/// `cargo test -p anju-gateway --lib history_flash_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement (about a minute): run it to update README's figures"]
fn history_flash_cost() {
    const CHANNELS: usize = 20;
    const EVERY: TimestampNs = 10 * S;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(HISTORY_FILE);
    let h = History::open(&path, settings(), 0);
    let keys: Vec<std::sync::Arc<crate::model::Series>> = (0..CHANNELS)
        .map(|c| series(&format!("dev-{}/ch{}", c / 8, c % 8)))
        .collect();
    let end = T0 + 8 * 24 * 3600 * S;
    let mut t = T0;
    let mut next_flush = T0 + 600 * S;
    let mut peak = 0;
    while t < end {
        for (c, k) in keys.iter().enumerate() {
            let v = (t / S % 1000) as f64 * 0.01 + c as f64;
            h.record(k, t, Some(v), Quality::Good);
        }
        t += EVERY;
        if t >= next_flush {
            h.flush(t);
            peak = peak.max(crate::spool::file_len(&path));
            next_flush += 600 * S;
        }
    }
    h.flush(t);
    let len = crate::spool::file_len(&path);
    let per_channel = len / CHANNELS as u64;
    let readings_per_channel = 7 * 24 * 360;
    println!(
        "history file {len} B (peak {peak} B) for {CHANNELS} channels: {per_channel} B per channel for 7 d at 10 s, {:.2} B per reading",
        per_channel as f64 / f64::from(readings_per_channel)
    );
    assert!(h.stats().kept == DEFAULT_WINDOW);
    assert!(len > 0);
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn a_burst_of_buckets_asks_the_writer_to_flush_early() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = open(dir.path());
    let s = series("a/p");
    // Every reading opens a 10 s bucket (and every 30th a 5 min one, every 180th a 30 min one).
    let mut i = 0;
    while lock(&h.pending).buckets < FLUSH_AT_BUCKETS - 1 {
        h.record(&s, T0 + i * 10 * S, Some(1.0), Quality::Good);
        i += 1;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(10), h.flush_due.notified())
            .await
            .is_err(),
        "asked early, at {i} readings"
    );
    while lock(&h.pending).buckets < FLUSH_AT_BUCKETS {
        h.record(&s, T0 + i * 10 * S, Some(1.0), Quality::Good);
        i += 1;
    }
    tokio::time::timeout(Duration::from_secs(1), h.flush_due.notified())
        .await
        .expect("the writer is asked to flush");
    h.flush(T0 + i * 10 * S);
    assert_eq!(lock(&h.pending).buckets, 0);
}

#[test]
fn channels_beyond_the_pending_bound_are_skipped_and_counted_the_others_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = open(dir.path());
    for i in 0..MAX_PENDING_CHANNELS {
        h.record(&series(&format!("d/c{i}")), T0, Some(1.0), Quality::Good);
    }
    // One channel more: not held (counted); a held channel's next reading still is.
    h.record(&series("d/one-too-many"), T0, Some(2.0), Quality::Good);
    h.record(&series("d/c7"), T0 + S, Some(3.0), Quality::Good);
    assert_eq!(h.stats().skipped, 1);
    let c = h.curve("d/c7", T0 - 60 * S, T0 + 60 * S, TIERS[0]);
    assert_eq!(c.buckets.len(), 1, "{c:?}");
    assert_eq!(c.buckets[0].count, 2);
    assert!(h
        .curve("d/one-too-many", T0 - 60 * S, T0 + 60 * S, TIERS[0])
        .buckets
        .is_empty());
}
