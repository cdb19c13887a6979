//! Damaged, truncated and empty spool files, caught panics and reopening: whatever happens to
//! the file, the spool keeps taking data, keeps the damaged file aside and says what was lost
//! (docs/ARCHITECTURE.md §Spool layout, Failures; issue 10 item 7, issue 14 item 2).

use super::*;

const SINK: &str = "influxdb";
const HOOK: &str = "hook";

fn identity() -> AlertIdentity {
    AlertIdentity {
        site: "site-1".to_owned(),
        gateway: "gw-1".to_owned(),
        language: crate::alert::Language::En,
    }
}

fn open_at(path: &Path) -> Spool {
    Spool::open_with(
        path,
        &SpoolConfig::default(),
        &[
            Reader::new(SINK, &[Stream::Points]),
            Reader::new(HOOK, &[Stream::Alerts]),
        ],
        Some(identity()),
    )
    .expect("open never fails for a damaged file")
}

/// `records` valid lines in one chunk, each ~60 bytes.
fn lines(first: u64, records: u32) -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..u64::from(records) {
        b.extend_from_slice(
            format!(
                "settlement,device=d{},point=p value={}.5 {}\n",
                i % 7,
                i,
                first + i
            )
            .as_bytes(),
        );
    }
    b
}

/// A spool file holding `chunks` chunks of 50 readings (nothing delivered), closed cleanly.
fn populated(path: &Path, chunks: u64) -> u64 {
    let spool = open_at(path);
    for c in 0..chunks {
        spool
            .append(Stream::Points, &lines(c * 1000, 50), 50)
            .expect("append");
    }
    spool.stats().points_records
}

fn aside_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains(".damaged-"))
        .collect();
    v.sort();
    v
}

/// Everything readable now, drained for both sinks: (points records, alert lines).
fn drain(spool: &Spool) -> (u64, Vec<String>) {
    let mut points = 0;
    while let Some(b) = spool
        .read_batch(Stream::Points, SINK, 100_000)
        .expect("read")
    {
        crate::record::validate(&b.body).expect("only valid lines are delivered");
        points += b.records;
        spool.ack(Stream::Points, SINK, &b).expect("ack");
    }
    let mut alerts = Vec::new();
    while let Some(b) = spool
        .read_batch(Stream::Alerts, HOOK, 100_000)
        .expect("read")
    {
        alerts.extend(String::from_utf8_lossy(&b.body).lines().map(str::to_owned));
        spool.ack(Stream::Alerts, HOOK, &b).expect("ack");
    }
    (points, alerts)
}

/// The spool takes and hands out new data.
fn assert_collecting(spool: &Spool) {
    let before = drain(spool).0;
    let _ = before;
    spool
        .append(Stream::Points, &lines(1, 3), 3)
        .expect("new readings are stored");
    assert_eq!(drain(spool).0, 3);
}

#[test]
fn an_empty_file_is_damage_not_silently_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spool.redb");
    std::fs::write(&path, b"").expect("empty");
    let spool = open_at(&path);
    let reports = spool.damage_reports();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert!(r.reason.contains("empty"), "{}", r.reason);
    assert_eq!((r.lost_records, r.salvaged_records), (None, 0));
    assert_eq!(aside_files(dir.path()), vec![r.kept_aside.clone()]);
    let (points, alerts) = drain(&spool);
    // The alert's `alerts` point, and the alert event itself, saying "unknown".
    assert_eq!(points, 1);
    assert_eq!(alerts.len(), 1);
    let alert: crate::alert::Alert = serde_json::from_str(&alerts[0]).expect("alert json");
    assert_eq!(alert.kind, crate::alert::AlertKind::DeviceFault);
    assert_eq!(alert.rule, "spool_damaged");
    assert!(
        alert.message.contains("unknown number"),
        "{}",
        alert.message
    );
    assert!(
        alert.message.contains(&r.kept_aside.display().to_string()),
        "{}",
        alert.message
    );
    assert_eq!(spool.stats().damaged_files_total, 1);
    assert_collecting(&spool);
}

#[test]
fn a_file_that_is_not_a_spool_is_kept_aside_and_a_fresh_one_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spool.redb");
    std::fs::write(&path, vec![0x5a; 8192]).expect("garbage");
    let spool = open_at(&path);
    let r = &spool.damage_reports()[0];
    assert_eq!(r.lost_records, None);
    assert_eq!(
        std::fs::read(&r.kept_aside).expect("kept"),
        vec![0x5a; 8192],
        "the damaged file is kept as it was"
    );
    assert_collecting(&spool);
}

#[test]
fn a_truncated_file_is_salvaged_as_far_as_it_can_be_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spool.redb");
    let total = populated(&path, 200);
    assert_eq!(total, 200 * 50);
    let len = std::fs::metadata(&path).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(len / 2).expect("truncate");
    drop(f);

    let spool = open_at(&path);
    let reports = spool.damage_reports();
    assert_eq!(reports.len(), 1, "truncation is found at open");
    let r = &reports[0];
    let (points, alerts) = drain(&spool);
    // Every salvaged reading is delivered, plus the alert's point.
    assert_eq!(points, r.salvaged_records + 1);
    if let Some(lost) = r.lost_records {
        assert_eq!(lost + r.salvaged_records, total);
    }
    assert_eq!(alerts.len(), 1);
    assert_collecting(&spool);
}

/// xorshift64: a fixed, dependency-free byte source for the overwrites.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn random_overwrites_never_stop_the_spool_and_every_loss_is_reported() {
    let mut detected = 0;
    for seed in [1_u64, 7, 42, 1234, 99_991, 0xdead_beef] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.redb");
        let total = populated(&path, 300);
        let len = std::fs::metadata(&path).expect("meta").len();
        // 4 KiB somewhere in the middle half of the file.
        let offset = len / 4 + (seed.wrapping_mul(2_654_435_761) % (len / 2));
        let mut bytes = std::fs::read(&path).expect("read");
        let at = usize::try_from(offset).expect("offset");
        let end = (at + 4096).min(bytes.len());
        bytes[at..end].copy_from_slice(&noise(seed, end - at));
        std::fs::write(&path, &bytes).expect("write");

        let spool = open_at(&path);
        let reports = spool.damage_reports();
        let (points, _) = drain(&spool);
        match reports.as_slice() {
            [] => {
                // The overwrite hit pages no table uses: everything is there.
                assert_eq!(points, total, "seed {seed}: nothing reported, nothing lost");
            }
            [r] => {
                detected += 1;
                assert!(
                    aside_files(dir.path()).contains(&r.kept_aside),
                    "seed {seed}"
                );
                assert_eq!(points, r.salvaged_records + 1, "seed {seed}");
                if let Some(lost) = r.lost_records {
                    assert_eq!(lost + r.salvaged_records, total, "seed {seed}");
                }
            }
            more => panic!("seed {seed}: {} reports", more.len()),
        }
        assert_collecting(&spool);
    }
    assert!(
        detected > 0,
        "no overwrite was detected: the test proves nothing"
    );
}

#[test]
fn a_panic_inside_redb_is_caught_and_the_file_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spool.redb");
    let spool = open_at(&path);
    spool
        .append(Stream::Points, &lines(0, 2), 2)
        .expect("append");
    spool.inject_faults(&[InjectedFault::PanicInRedb]);
    let err = spool
        .append(Stream::Points, &lines(10, 2), 2)
        .expect_err("panicked");
    assert!(matches!(err, SpoolError::Panicked { .. }), "{err}");
    assert_eq!(spool.stats().storage_panics_total, 1);
    assert!(!spool.stats().available);
    // Until the retry time, calls fail at once without touching the file.
    assert!(matches!(
        spool.append(Stream::Points, &lines(20, 2), 2),
        Err(SpoolError::Unavailable { .. })
    ));
    std::thread::sleep(open::REOPEN_RETRY_INITIAL);
    spool
        .append(Stream::Points, &lines(30, 2), 2)
        .expect("reopened");
    let s = spool.stats();
    assert_eq!(
        (s.available, s.reopens_total, s.damaged_files_total),
        (true, 1, 0)
    );
    // Nothing lost, nothing duplicated: the first and the last chunk.
    assert_eq!(drain(&spool).0, 4);
}

#[test]
fn a_data_dir_that_cannot_be_created_is_a_permissions_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A path through a regular file: ENOTDIR even for root.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("file");
    let err = Spool::open(
        &file.join("data").join("spool.redb"),
        &SpoolConfig::default(),
        &[],
    )
    .expect_err("cannot create");
    assert!(matches!(err, SpoolError::Permission { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("data_dir") && msg.contains("owner"), "{msg}");
    assert!(!msg.contains("damaged"), "{msg}");
}

#[test]
fn spool_files_and_created_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data").join("spool.redb");
    drop(open_at(&path));
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("data")), 0o700);
    // A file left 0644 by an older version is tightened at open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    drop(open_at(&path));
    assert_eq!(mode(&path), 0o600);
}
