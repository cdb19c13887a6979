//! The spool's footprint on disk (issue 10 item 8): `max_bytes` bounds the file, not only the
//! logical bytes. Real redb files in temporary directories; the figures are printed for README
//! (`cargo test -j 1 -p anju-gateway --lib footprint -- --nocapture`).

use super::*;

const MAX: u64 = 2 * 1024 * 1024;
const INFLUX: &str = "influxdb";
const HOOK: &str = "hook";

/// One 110-byte line-protocol record, the benchmark's shape (README §Performance).
const LINE: &[u8] =
    b"settlement,device=d01,gateway=gw1,point=p01,site=s1,unit=mm value=1.25,raw=1.2,quality=0i 1700000000000000000\n";

fn open(dir: &tempfile::TempDir) -> Spool {
    Spool::open_for(
        &dir.path().join("spool.redb"),
        &SpoolConfig {
            max_bytes: MAX,
            min_free_bytes: 0,
        },
        &[
            Reader::new(INFLUX, &[Stream::Points]),
            Reader::new(HOOK, &[Stream::Alerts]),
        ],
    )
    .expect("open spool")
}

fn chunk(records: usize) -> Vec<u8> {
    LINE.repeat(records)
}

#[test]
fn the_record_is_110_bytes() {
    assert_eq!(LINE.len(), 110);
}

/// 20 × the bound through a 2 MiB spool: points in chunks of 10 to 5,000 records, an alert
/// every 5th append, a sink that delivers in bursts and stalls in between (so the size bound
/// drops), every 9th batch refused into the dead letters. After every call the file is at most
/// `max_bytes`. Before the fix (logical bytes bounded by the whole `max_bytes`, no compaction)
/// the same run left the file at 3.3–8.7 MB.
#[test]
fn the_file_never_stays_above_max_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(&dir);
    let path = dir.path().join("spool.redb");
    let sizes = [1000usize, 10, 5000, 100, 300];
    let alert = vec![b'a'; 599]
        .into_iter()
        .chain([b'\n'])
        .collect::<Vec<u8>>();
    let (mut passed, mut appends, mut peak, mut batches) = (0u64, 0u64, 0u64, 0u64);
    let check = |what: &str, peak: &mut u64| {
        let len = disk::file_len(&path);
        *peak = (*peak).max(len);
        assert!(len <= MAX, "{what}: file {len} B > max_bytes {MAX} B");
    };
    while passed < 20 * MAX {
        let records = sizes[(appends % sizes.len() as u64) as usize];
        let body = chunk(records);
        spool
            .append(Stream::Points, &body, u32::try_from(records).expect("u32"))
            .expect("points never refused");
        check("append", &mut peak);
        passed += body.len() as u64;
        appends += 1;
        if appends.is_multiple_of(5) {
            spool.append(Stream::Alerts, &alert, 1).expect("alert");
            check("alert", &mut peak);
            passed += alert.len() as u64;
        }
        // The sink delivers for one eighth of the bound, then stalls for three eighths.
        if (passed * 8 / MAX).is_multiple_of(4) {
            while let Some(b) = spool
                .read_batch(Stream::Points, INFLUX, 5000)
                .expect("read")
            {
                batches += 1;
                if batches.is_multiple_of(9) {
                    spool
                        .dead_letter(Stream::Points, INFLUX, &b, "HTTP 400: unparsable")
                        .expect("dead letter");
                } else {
                    spool.ack(Stream::Points, INFLUX, &b).expect("ack");
                }
                check("ack", &mut peak);
            }
            while let Some(b) = spool.read_batch(Stream::Alerts, HOOK, 100).expect("read") {
                spool.ack(Stream::Alerts, HOOK, &b).expect("ack");
                check("alert ack", &mut peak);
            }
        }
    }
    let s = spool.stats();
    println!(
        "footprint: max_bytes {MAX} B, {passed} B through ({:.1} × the bound) in {appends} appends: \
         peak file {peak} B, {} compactions, {} undelivered readings dropped, {} dead letters",
        passed as f64 / MAX as f64,
        s.compactions_total,
        s.dropped_records_total,
        s.dead_letter_count
    );
    assert!(passed >= 20 * MAX);
    assert!(
        s.dropped_records_total > 0,
        "the stalls must fill the spool"
    );
    assert!(s.dead_letter_count > 0);
}

/// What a reading costs on disk: the sink is down, chunks of `records` 110-byte readings are
/// appended until the size bound drops the oldest, and the file is divided by the readings it
/// holds then. Printed for README.
#[test]
fn bytes_on_disk_per_reading() {
    for records in [10usize, 100, 1000, 5000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = open(&dir);
        let body = chunk(records);
        let n = u32::try_from(records).expect("u32");
        let mut appends = 0u64;
        // Bounded: the budget is 1 MiB, so it is full after 1 MiB / body appends.
        while appends < 2 * MAX / body.len() as u64 + 10 {
            let out = spool.append(Stream::Points, &body, n).expect("append");
            appends += 1;
            if out.dropped_records > 0 {
                break;
            }
        }
        let s = spool.stats();
        assert!(
            s.dropped_records_total > 0,
            "{records}: the spool never filled"
        );
        assert!(s.file_bytes <= MAX, "{records}: file {} B", s.file_bytes);
        println!(
            "footprint: chunks of {records} readings: {} readings held in a {} B file ({} B \
             logical): {:.0} B on disk per reading, {:.2} × the logical bytes",
            s.points_records,
            s.file_bytes,
            s.points_bytes,
            s.file_bytes as f64 / s.points_records as f64,
            s.file_bytes as f64 / s.points_bytes as f64
        );
    }
}

#[test]
fn long_chunks_are_stored_in_pieces_at_line_ends() {
    // 1,200 lines of 110 B = 132,000 B; a 61,440-B piece holds 558 whole lines (61,380 B).
    let body = chunk(1200);
    let p = pieces(&body, 1200);
    let shape: Vec<(usize, u32)> = p.iter().map(|(b, r)| (b.len(), *r)).collect();
    assert_eq!(shape, vec![(61_380, 558), (61_380, 558), (9_240, 84)]);
    // A short chunk is one piece with the caller's count.
    assert_eq!(pieces(LINE, 1), vec![(LINE, 1)]);
    // Read back as one batch, in order.
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(&dir);
    let out = spool.append(Stream::Points, &body, 1200).expect("append");
    let b = spool
        .read_batch(Stream::Points, INFLUX, 5000)
        .expect("read")
        .expect("some");
    assert_eq!(
        (b.first_seq, b.last_seq, b.records),
        (out.seq, out.seq + 2, 1200)
    );
    assert_eq!(b.body, body);
}
