//! Tests of the spool against real redb files in temporary directories. Expected values are
//! worked out by hand in the comments (byte lengths of the bodies, sequences, counts).

use std::sync::Arc;
use std::time::Duration;

use super::*;

const A: &str = "a";
const B: &str = "b";

fn sinks(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn open(dir: &tempfile::TempDir, max_bytes: u64, names: &[&str]) -> Spool {
    Spool::open(
        &dir.path().join("spool.redb"),
        &SpoolConfig {
            max_bytes,
            ..SpoolConfig::default()
        },
        &sinks(names),
    )
    .expect("open spool")
}

/// A body of exactly `len` bytes (the spool does not parse lines): `len - 1` x's and a newline.
fn body(len: usize) -> Vec<u8> {
    let mut b = vec![b'x'; len - 1];
    b.push(b'\n');
    b
}

// 9 bytes each: m,' ',v,=,1,i,' ',1,\n
const L1: &[u8] = b"m v=1i 1\n";
const L2: &[u8] = b"m v=2i 2\n";
const L3: &[u8] = b"m v=3i 3\n";
const L4: &[u8] = b"m v=4i 4\n";

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn the_spool_can_be_shared_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Spool>();
}

#[test]
fn append_read_ack_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(&dir, DEFAULT_MAX_BYTES, &[A]);
    let two = concat(&[L2, L3]);
    assert_eq!(
        spool.append(Stream::Points, L1, 1).expect("append"),
        AppendOutcome {
            seq: 1,
            dropped_records: 0,
            dropped_alert_records: 0
        }
    );
    assert_eq!(
        spool.append(Stream::Points, &two, 2).expect("append").seq,
        2
    );
    assert_eq!(spool.append(Stream::Points, L4, 1).expect("append").seq, 3);
    let s = spool.stats();
    assert_eq!(
        (s.points_chunks, s.points_records, s.points_bytes),
        (3, 4, 36)
    );
    assert_eq!(
        s.sinks[A],
        SinkBacklog {
            points_records: 4,
            alerts_records: 0
        }
    );

    // 1 + 2 = 3 records fit in max 3; the third chunk would make 4.
    let batch = spool
        .read_batch(Stream::Points, A, 3)
        .expect("read")
        .expect("some");
    assert_eq!((batch.first_seq, batch.last_seq, batch.records), (1, 2, 3));
    assert_eq!(batch.body, b"m v=1i 1\nm v=2i 2\nm v=3i 3\n");
    // Reading does not move the cursor.
    assert_eq!(
        spool.read_batch(Stream::Points, A, 3).expect("read"),
        Some(batch.clone())
    );

    spool.ack(Stream::Points, A, &batch).expect("ack");
    let s = spool.stats();
    assert_eq!(
        (s.points_chunks, s.points_records, s.points_bytes),
        (1, 1, 9)
    );
    assert_eq!(s.sinks[A].points_records, 1);

    let last = spool
        .read_batch(Stream::Points, A, 3)
        .expect("read")
        .expect("some");
    assert_eq!(
        (
            last.first_seq,
            last.last_seq,
            last.records,
            last.body.as_slice()
        ),
        (3, 3, 1, L4)
    );
    spool.ack(Stream::Points, A, &last).expect("ack");
    assert_eq!(spool.read_batch(Stream::Points, A, 3).expect("read"), None);
    assert_eq!(spool.stats().points_chunks, 0);
    assert_eq!(spool.stats().sinks[A].points_records, 0);

    // Acking the same batch twice changes nothing.
    spool.ack(Stream::Points, A, &last).expect("ack");
    assert_eq!(spool.stats().sinks[A].points_records, 0);
}

#[test]
fn a_batch_has_at_least_one_chunk_even_above_max_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(&dir, DEFAULT_MAX_BYTES, &[A]);
    spool
        .append(Stream::Points, &concat(&[L1, L2, L3]), 3)
        .expect("append");
    spool.append(Stream::Points, L4, 1).expect("append");
    let batch = spool
        .read_batch(Stream::Points, A, 1)
        .expect("read")
        .expect("some");
    assert_eq!((batch.first_seq, batch.last_seq, batch.records), (1, 1, 3));
}

#[test]
fn restart_resumes_at_the_cursor_with_nothing_lost_or_repeated() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let spool = open(&dir, DEFAULT_MAX_BYTES, &[A]);
        for line in [L1, L2, L3] {
            spool.append(Stream::Points, line, 1).expect("append");
        }
        let first = spool
            .read_batch(Stream::Points, A, 1)
            .expect("read")
            .expect("some");
        assert_eq!(first.body, L1);
        spool.ack(Stream::Points, A, &first).expect("ack");
        // Read but not acked: must come again after the restart.
        let second = spool
            .read_batch(Stream::Points, A, 1)
            .expect("read")
            .expect("some");
        assert_eq!(second.body, L2);
    }
    let spool = open(&dir, DEFAULT_MAX_BYTES, &[A]);
    let s = spool.stats();
    assert_eq!(
        (s.points_chunks, s.points_records, s.points_bytes),
        (2, 2, 18)
    );
    assert_eq!(s.sinks[A].points_records, 2);
    // The sequence survives the restart: 1..=3 were used, the next is 4.
    assert_eq!(spool.append(Stream::Points, L4, 1).expect("append").seq, 4);
    let rest = spool
        .read_batch(Stream::Points, A, 100)
        .expect("read")
        .expect("some");
    assert_eq!((rest.first_seq, rest.last_seq, rest.records), (2, 4, 3));
    assert_eq!(rest.body, concat(&[L2, L3, L4]));
}

#[test]
fn a_chunk_is_deleted_only_when_both_sinks_passed_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(&dir, DEFAULT_MAX_BYTES, &[A, B]);
    spool.append(Stream::Points, L1, 1).expect("append");
    spool.append(Stream::Points, L2, 1).expect("append");

    let a_all = spool
        .read_batch(Stream::Points, A, 10)
        .expect("read")
        .expect("some");
    spool.ack(Stream::Points, A, &a_all).expect("ack");
    let s = spool.stats();
    assert_eq!(s.points_chunks, 2, "b has not passed anything");
    assert_eq!(s.sinks[A].points_records, 0);
    assert_eq!(s.sinks[B].points_records, 2);

    let b_first = spool
        .read_batch(Stream::Points, B, 1)
        .expect("read")
        .expect("some");
    spool.ack(Stream::Points, B, &b_first).expect("ack");
    assert_eq!(spool.stats().points_chunks, 1);
    let b_second = spool
        .read_batch(Stream::Points, B, 1)
        .expect("read")
        .expect("some");
    assert_eq!(b_second.body, L2);
    spool.ack(Stream::Points, B, &b_second).expect("ack");
    assert_eq!(spool.stats().points_chunks, 0);
}

#[test]
fn without_sinks_chunks_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(&dir, DEFAULT_MAX_BYTES, &[]);
    spool.append(Stream::Points, L1, 1).expect("append");
    assert_eq!(spool.stats().points_chunks, 1);
    assert!(spool.stats().sinks.is_empty());
    drop(spool);
    assert_eq!(open(&dir, DEFAULT_MAX_BYTES, &[]).stats().points_chunks, 1);
}

#[test]
fn size_bound_drops_oldest_points_counts_them_and_keeps_alerts_in_their_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    // max_bytes 3200: logical budget 3200 / LOGICAL_BUDGET_DIVISOR = 1600, alert share
    // 1600 / 8 = 200, dead-letter share 1600 / 16 = 100; a points chunk may be 1600 - 300 = 1300
    // bytes, an alert chunk 1600 - 100 = 1500.
    let spool = open(&dir, 3200, &[A]);
    spool.append(Stream::Alerts, &body(100), 1).expect("alert"); // seq 1
    spool.append(Stream::Points, &body(500), 3).expect("points"); // seq 2
    spool.append(Stream::Points, &body(500), 2).expect("points"); // seq 3
                                                                  // 1100 + 600 = 1700 > 1600: drop seq 2 (3 undelivered records) -> 600 + 600 = 1200.
    let out = spool.append(Stream::Points, &body(600), 4).expect("points");
    assert_eq!(
        out,
        AppendOutcome {
            seq: 4,
            dropped_records: 3,
            dropped_alert_records: 0
        }
    );
    let s = spool.stats();
    assert_eq!(
        (s.points_chunks, s.points_records, s.points_bytes),
        (2, 6, 1100)
    );
    assert_eq!(s.dropped_records_total, 3);
    // The dropped records left a's backlog too: 2 + 4 points, 1 alert.
    assert_eq!(
        s.sinks[A],
        SinkBacklog {
            points_records: 6,
            alerts_records: 1
        }
    );
    // Alerts stay within their share: 100 + 150 > 200 drops the older alert (counted), and
    // no point (1250 + 150 fits the bound anyway).
    let out = spool.append(Stream::Alerts, &body(150), 1).expect("alert"); // seq 5
    assert_eq!((out.dropped_records, out.dropped_alert_records), (0, 1));
    // An alert chunk above the share (1000 <= 1500) is stored: every older alert goes, then
    // points make room: 1100 + 1000 = 2100 > 1600 drops seq 3 (2 records) -> 1600.
    let out = spool.append(Stream::Alerts, &body(1000), 7).expect("alert"); // seq 6
    assert_eq!((out.dropped_records, out.dropped_alert_records), (2, 1));
    // Points are never refused: 1600 + 300 drops seq 4 (4 records) -> 1300.
    let out = spool.append(Stream::Points, &body(300), 1).expect("points"); // seq 7
    assert_eq!((out.dropped_records, out.dropped_alert_records), (4, 0));
    // 1300 + 700 = 2000: drop seq 7 (1 record) -> 1700, still over, and only the alerts above
    // their share are left: drop seq 6 (7 records) -> 700.
    let out = spool.append(Stream::Points, &body(700), 2).expect("points"); // seq 8
    assert_eq!((out.dropped_records, out.dropped_alert_records), (1, 7));
    let s = spool.stats();
    assert_eq!((s.points_bytes, s.alerts_bytes), (700, 0));
    assert_eq!((s.dropped_records_total, s.alerts_dropped_total), (10, 9));
    drop(spool);
    // The dropped totals are durable.
    let s = open(&dir, 3200, &[A]).stats();
    assert_eq!((s.dropped_records_total, s.alerts_dropped_total), (10, 9));
}

/// Issue 14 item 1: an InfluxDB sink (points) and an alert sink (alerts), a flapping alarm and
/// a 1 MiB bound. Both sinks deliver everything; 10 × the bound passes through. Before the fix
/// every sink had a cursor in both streams, the InfluxDB sink pinned every delivered alert, and
/// after ~1,870 alert events every points commit failed with "full".
#[test]
fn a_sink_pins_only_its_stream_and_a_flapping_alarm_never_stops_readings() {
    const INFLUX: &str = "influxdb";
    const HOOK: &str = "hook";
    let dir = tempfile::tempdir().expect("tempdir");
    // Logical budget MIN_MAX_BYTES (max_bytes / LOGICAL_BUDGET_DIVISOR).
    let max_bytes = MIN_MAX_BYTES;
    let spool = Spool::open_for(
        &dir.path().join("spool.redb"),
        &SpoolConfig {
            max_bytes: max_bytes * LOGICAL_BUDGET_DIVISOR,
            ..SpoolConfig::default()
        },
        &[
            Reader::new(INFLUX, &[Stream::Points]),
            Reader::new(HOOK, &[Stream::Alerts]),
        ],
    )
    .expect("open");
    // One engine flush of ten 1,423-byte commits, and one alert event.
    let points = body(14_230);
    let alert = body(560);
    let mut passed = 0u64;
    let mut rounds = 0u64;
    while passed < 10 * max_bytes {
        let p = spool
            .append(Stream::Points, &points, 120)
            .expect("points never refused");
        let a = spool.append(Stream::Alerts, &alert, 1).expect("alert");
        assert_eq!((p.dropped_records, a.dropped_records), (0, 0));
        assert_eq!(a.dropped_alert_records, 0);
        passed += (points.len() + alert.len()) as u64;
        rounds += 1;
        // Each sink delivers what it reads, every few rounds and at the end.
        if rounds.is_multiple_of(4) || passed >= 10 * max_bytes {
            for (stream, sink) in [(Stream::Points, INFLUX), (Stream::Alerts, HOOK)] {
                while let Some(b) = spool.read_batch(stream, sink, 1000).expect("read") {
                    spool.ack(stream, sink, &b).expect("ack");
                }
            }
            let s = spool.stats();
            // Everything delivered is gone: a sink pins nothing in the other stream.
            assert_eq!((s.points_chunks, s.alerts_chunks), (0, 0), "round {rounds}");
        }
    }
    // 10 MiB / 14,790 B per round, rounded up; 709 alerts are 3 × the alert share.
    assert_eq!(rounds, 709);
    let s = spool.stats();
    assert_eq!((s.dropped_records_total, s.alerts_dropped_total), (0, 0));
    // A sink cannot read a stream it was not registered for, and has no cursor there.
    assert!(matches!(
        spool.read_batch(Stream::Alerts, INFLUX, 1),
        Err(SpoolError::NotAReader { .. })
    ));
    assert_eq!(
        s.sinks[INFLUX],
        SinkBacklog {
            points_records: 0,
            alerts_records: 0
        }
    );

    // The alert sink is down now: alerts pile up to their share and then the oldest are dropped
    // (counted), but readings are still all stored and delivered.
    let share = max_bytes / ALERT_SHARE;
    for _ in 0..(2 * share / alert.len() as u64) {
        let p = spool
            .append(Stream::Points, &points, 120)
            .expect("points never refused");
        assert_eq!(p.dropped_records, 0);
        spool.append(Stream::Alerts, &alert, 1).expect("alert");
        while let Some(b) = spool
            .read_batch(Stream::Points, INFLUX, 1000)
            .expect("read")
        {
            spool.ack(Stream::Points, INFLUX, &b).expect("ack");
        }
    }
    let s = spool.stats();
    assert!(s.alerts_bytes <= share, "{} > {share}", s.alerts_bytes);
    // 131072 / 560 = 234 alerts fit; 2 * 131072 / 560 = 468 were appended.
    assert_eq!((s.alerts_records, s.alerts_dropped_total), (234, 468 - 234));
    assert_eq!(s.dropped_records_total, 0);
}

#[test]
fn stale_cursors_of_streams_a_sink_no_longer_reads_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // The pre-issue-14 registration: both sinks in both streams.
        let spool = open(&dir, DEFAULT_MAX_BYTES, &[A, B]);
        spool.append(Stream::Points, L1, 1).expect("append"); // seq 1
        spool.append(Stream::Alerts, L2, 1).expect("append"); // seq 2
        let b = spool
            .read_batch(Stream::Alerts, B, 10)
            .expect("read")
            .expect("some");
        spool.ack(Stream::Alerts, B, &b).expect("ack");
        assert_eq!(spool.stats().alerts_chunks, 1, "a pins the alert");
    }
    let path = dir.path().join("spool.redb");
    let spool = Spool::open_for(
        &path,
        &SpoolConfig::default(),
        &[
            Reader::new(A, &[Stream::Points]),
            Reader::new(B, &[Stream::Alerts]),
        ],
    )
    .expect("open");
    let s = spool.stats();
    // B had delivered the alert, A no longer reads alerts: it is deleted at open.
    assert_eq!((s.points_chunks, s.alerts_chunks), (1, 0));
    assert_eq!(s.sinks[A].points_records, 1);
    assert_eq!(s.sinks[B].points_records, 0);
    drop(spool);
    // Only the two wanted rows are left in the cursor table.
    let db = Database::open(&path).expect("db");
    let txn = db.begin_read().expect("read");
    let cursors = txn.open_table(CURSORS).expect("cursors");
    let rows: Vec<(u8, String)> = cursors
        .iter()
        .expect("iter")
        .map(|e| {
            let (k, _) = e.expect("row");
            let (code, name) = k.value();
            (code, name.to_owned())
        })
        .collect();
    assert_eq!(rows, vec![(0, A.to_owned()), (1, B.to_owned())]);
}

#[test]
fn a_chunk_larger_than_the_bound_is_an_error_not_a_wipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    // max_bytes 200, budget 100: a points chunk may take 100 - 100/8 - 100/16 = 100 - 12 - 6 =
    // 82 bytes.
    let spool = open(&dir, 200, &[A]);
    spool.append(Stream::Points, &body(50), 1).expect("append");
    let err = spool
        .append(Stream::Points, &body(83), 1)
        .expect_err("too large");
    assert!(matches!(
        err,
        SpoolError::ChunkTooLarge {
            bytes: 83,
            max_bytes: 82,
            ..
        }
    ));
    assert!(err.to_string().contains("spool.redb"), "{err}");
    assert_eq!(spool.stats().points_chunks, 1);
}

#[test]
fn empty_chunks_and_unknown_sinks_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(&dir, DEFAULT_MAX_BYTES, &[A]);
    assert!(matches!(
        spool.append(Stream::Points, b"", 1),
        Err(SpoolError::EmptyChunk { .. })
    ));
    assert!(matches!(
        spool.append(Stream::Points, L1, 0),
        Err(SpoolError::EmptyChunk { .. })
    ));
    let err = spool
        .read_batch(Stream::Points, "nobody", 1)
        .expect_err("unknown");
    assert!(matches!(err, SpoolError::UnknownSink { ref sink, .. } if sink == "nobody"));
    assert!(!spool.is_registered("nobody"));
    assert!(spool.is_registered(A));
}

#[test]
fn dead_letter_moves_the_batch_and_advances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(&dir, DEFAULT_MAX_BYTES, &[A]);
    spool.append(Stream::Points, L1, 1).expect("append");
    spool.append(Stream::Points, L2, 1).expect("append");
    let batch = spool
        .read_batch(Stream::Points, A, 10)
        .expect("read")
        .expect("some");
    let reason = "unable to parse 'm v=1i 1': bad timestamp";
    spool
        .dead_letter(Stream::Points, A, &batch, reason)
        .expect("dead letter");

    assert_eq!(spool.read_batch(Stream::Points, A, 10).expect("read"), None);
    let letters = spool.dead_letters().expect("list");
    assert_eq!(letters.len(), 1);
    let d = &letters[0];
    assert_eq!((d.id, d.stream, d.sink.as_str()), (0, Stream::Points, A));
    assert_eq!((d.first_seq, d.last_seq, d.records), (1, 2, 2));
    assert_eq!(d.reason, reason);
    assert_eq!(d.body, concat(&[L1, L2]));
    assert!(d.at_ns > 0);
    let s = spool.stats();
    assert_eq!(s.points_chunks, 0);
    assert_eq!(s.dead_letter_count, 1);
    // 18 body bytes + 41 reason bytes.
    assert_eq!(s.dead_letter_bytes, 18 + 41);
    assert_eq!(s.sinks[A].points_records, 0);
}

#[test]
fn dead_letters_are_bounded_by_their_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    // max_bytes 3200 -> logical budget 1600 -> dead-letter share 1600 / 16 = 100 bytes; each
    // letter is 60 + 0 bytes.
    let spool = open(&dir, 3200, &[A]);
    for _ in 0..2 {
        spool.append(Stream::Points, &body(60), 1).expect("append");
        let batch = spool
            .read_batch(Stream::Points, A, 1)
            .expect("read")
            .expect("some");
        spool
            .dead_letter(Stream::Points, A, &batch, "")
            .expect("dead letter");
    }
    let s = spool.stats();
    assert_eq!(
        (
            s.dead_letter_count,
            s.dead_letter_bytes,
            s.dead_letters_evicted_total
        ),
        (1, 60, 1)
    );
    let letters = spool.dead_letters().expect("list");
    assert_eq!((letters[0].id, letters[0].first_seq), (1, 2));
}

#[test]
fn long_reasons_are_truncated_at_a_character_boundary() {
    assert_eq!(truncate_utf8("abc", 5), "abc");
    // "é" is 2 bytes; cutting at 2 would split it.
    assert_eq!(truncate_utf8("aé", 2), "a");
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(&dir, DEFAULT_MAX_BYTES, &[A]);
    spool.append(Stream::Points, L1, 1).expect("append");
    let batch = spool
        .read_batch(Stream::Points, A, 1)
        .expect("read")
        .expect("some");
    spool
        .dead_letter(
            Stream::Points,
            A,
            &batch,
            &"x".repeat(MAX_REASON_BYTES + 10),
        )
        .expect("dead letter");
    assert_eq!(
        spool.dead_letters().expect("list")[0].reason.len(),
        MAX_REASON_BYTES
    );
}

#[test]
fn a_new_sink_starts_at_the_oldest_chunk_still_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let spool = open(&dir, DEFAULT_MAX_BYTES, &[A]);
        for line in [L1, L2, L3] {
            spool.append(Stream::Points, line, 1).expect("append");
        }
        let first = spool
            .read_batch(Stream::Points, A, 1)
            .expect("read")
            .expect("some");
        spool.ack(Stream::Points, A, &first).expect("ack"); // deletes seq 1
    }
    let spool = open(&dir, DEFAULT_MAX_BYTES, &[A, B]);
    assert_eq!(
        spool.stats().sinks[B],
        SinkBacklog {
            points_records: 2,
            alerts_records: 0
        }
    );
    let b = spool
        .read_batch(Stream::Points, B, 10)
        .expect("read")
        .expect("some");
    assert_eq!((b.first_seq, b.last_seq), (2, 3));
    assert_eq!(b.body, concat(&[L2, L3]));
    // A sink registered on an empty stream waits for the next sequence.
    assert_eq!(spool.read_batch(Stream::Alerts, B, 10).expect("read"), None);
    spool.append(Stream::Alerts, L4, 1).expect("alert");
    assert_eq!(
        spool
            .read_batch(Stream::Alerts, B, 10)
            .expect("read")
            .expect("some")
            .first_seq,
        4
    );
}

#[test]
fn a_sink_no_longer_configured_stops_pinning_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let spool = open(&dir, DEFAULT_MAX_BYTES, &[A, B]);
        spool.append(Stream::Points, L1, 1).expect("append");
        let batch = spool
            .read_batch(Stream::Points, A, 1)
            .expect("read")
            .expect("some");
        spool.ack(Stream::Points, A, &batch).expect("ack");
        assert_eq!(spool.stats().points_chunks, 1, "b pins it");
    }
    let spool = open(&dir, DEFAULT_MAX_BYTES, &[A]);
    let s = spool.stats();
    assert_eq!(s.points_chunks, 0);
    assert_eq!(s.sinks.keys().collect::<Vec<_>>(), vec![A]);
}

#[test]
fn streams_have_separate_cursors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(&dir, DEFAULT_MAX_BYTES, &[A]);
    spool.append(Stream::Points, L1, 1).expect("append"); // seq 1
    spool.append(Stream::Alerts, L2, 1).expect("append"); // seq 2
    let alert = spool
        .read_batch(Stream::Alerts, A, 10)
        .expect("read")
        .expect("some");
    assert_eq!((alert.first_seq, alert.body.as_slice()), (2, L2));
    spool.ack(Stream::Alerts, A, &alert).expect("ack");
    let point = spool
        .read_batch(Stream::Points, A, 10)
        .expect("read")
        .expect("some");
    assert_eq!((point.first_seq, point.body.as_slice()), (1, L1));
    assert_eq!(
        spool.stats().sinks[A],
        SinkBacklog {
            points_records: 1,
            alerts_records: 0
        }
    );
}

#[test]
fn the_spool_directory_is_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data").join("spool.redb");
    Spool::open(&path, &SpoolConfig::default(), &[]).expect("open");
    assert!(path.exists());
}

#[test]
fn config_defaults_and_validation() {
    let c: SpoolConfig = toml::from_str("").expect("empty table");
    assert_eq!(c.max_bytes, 268_435_456);
    assert_eq!(c.min_free_bytes, 4_194_304);
    let c: SpoolConfig = toml::from_str("min_free_bytes = 0").expect("off");
    assert_eq!(c.min_free_bytes, 0);
    assert!(toml::from_str::<SpoolConfig>("max_bytes = 1\nmax_bites = 2").is_err());
    let err = SpoolConfig {
        max_bytes: 1000,
        ..SpoolConfig::default()
    }
    .validate("spool")
    .expect_err("too small");
    assert!(
        err.starts_with("spool.max_bytes: 1000 is below the minimum 1048576"),
        "{err}"
    );
    assert!(SpoolConfig {
        max_bytes: MIN_MAX_BYTES,
        ..SpoolConfig::default()
    }
    .validate("spool")
    .is_ok());
}

#[tokio::test]
async fn sinks_are_woken_after_an_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Arc::new(open(&dir, DEFAULT_MAX_BYTES, &[A]));
    let notified = spool.appended().notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let writer = Arc::clone(&spool);
    tokio::task::spawn_blocking(move || writer.append(Stream::Points, L1, 1))
        .await
        .expect("join")
        .expect("append");
    tokio::time::timeout(Duration::from_secs(5), notified)
        .await
        .expect("woken");
}
