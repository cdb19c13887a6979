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

/// With the alerts in a file of their own, damage to the points file is announced on the
/// alerts file's stream, the one the alert sinks read; its `alerts` point stays with the points.
#[test]
fn damage_to_the_points_file_is_announced_in_the_alerts_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alerts = std::sync::Arc::new(
        Spool::open_with(
            &dir.path().join("alerts.redb"),
            &SpoolConfig::default(),
            &[Reader::new(HOOK, &[Stream::Alerts])],
            Some(identity()),
        )
        .expect("alerts file"),
    );
    let path = dir.path().join("spool.redb");
    std::fs::write(&path, vec![0x5a; 8192]).expect("garbage");
    let points = Spool::open_points_with(
        &path,
        &SpoolConfig::default(),
        &[Reader::new(SINK, &[Stream::Points])],
        identity(),
        std::sync::Arc::clone(&alerts),
    )
    .expect("open never fails for a damaged file");
    let kept = points.damage_reports()[0].kept_aside.clone();
    let batch = alerts
        .read_batch(Stream::Alerts, HOOK, 100)
        .expect("read")
        .expect("the device-fault alert");
    let alert: crate::alert::Alert =
        serde_json::from_slice(&batch.body[..batch.body.len() - 1]).expect("alert json");
    assert_eq!(alert.rule, "spool_damaged");
    assert!(
        alert.message.contains(&kept.display().to_string()),
        "{}",
        alert.message
    );
    assert_eq!(
        points.stats().alerts_records,
        0,
        "none left unread beside the points"
    );
    let line = points
        .read_batch(Stream::Points, SINK, 100)
        .expect("read")
        .expect("the alert's point");
    assert!(
        line.body.starts_with(b"alerts,"),
        "{:?}",
        String::from_utf8_lossy(&line.body)
    );
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

/// Every points line the sink reads, in order, acknowledged as read.
fn drain_points(spool: &Spool) -> Vec<u8> {
    let mut got = Vec::new();
    while let Some(b) = spool
        .read_batch(Stream::Points, SINK, 100_000)
        .expect("read")
    {
        got.extend_from_slice(&b.body);
        spool.ack(Stream::Points, SINK, &b).expect("ack");
    }
    got
}

/// A commit that reports an error after it reached the file (redb's post-commit pass failing
/// on a full disk, `landed.rs`; 3 of 200 failed appends on a nearly full tmpfs): the engine
/// retries with the same lines and more, and each line is stored once, even when another
/// stream's append came in between.
#[test]
fn a_commit_that_failed_after_landing_is_not_stored_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open_at(&dir.path().join("spool.redb"));
    spool.inject_faults(&[InjectedFault::ErrorAfterCommit]);
    let held = lines(0, 3);
    let err = spool
        .append(Stream::Points, &held, 3)
        .expect_err("reported failed");
    assert!(err.is_storage_fault(), "{err}");
    std::thread::sleep(open::REOPEN_RETRY_INITIAL);
    spool
        .append(Stream::Alerts, b"alert one\n", 1)
        .expect("an alert after the reopen");
    let mut retry = held.clone();
    retry.extend_from_slice(&lines(100, 2));
    let outcome = spool.append(Stream::Points, &retry, 5).expect("the retry");
    // The retry's first line is the one stored by the failed commit (sequence 1).
    assert_eq!(outcome.seq, 1);
    assert_eq!(spool.stats().points_records, 5);
    assert_eq!(
        String::from_utf8_lossy(&drain_points(&spool)),
        String::from_utf8_lossy(&retry)
    );
}

/// The retry holds nothing new: nothing is stored again, and its rule state (grown since the
/// failed commit) is.
#[test]
fn a_retry_of_only_landed_lines_stores_only_the_rule_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open_at(&dir.path().join("spool.redb"));
    let delta = |keys: &[&str]| StateDelta {
        entries: keys
            .iter()
            .map(|k| ((*k).to_owned(), Some(k.as_bytes().to_vec())))
            .collect(),
    };
    spool.inject_faults(&[InjectedFault::ErrorAfterCommit]);
    let held = lines(0, 2);
    spool
        .append_with_state(Stream::Points, &held, 2, Some(&delta(&["a"])))
        .expect_err("reported failed");
    std::thread::sleep(open::REOPEN_RETRY_INITIAL);
    let outcome = spool
        .append_with_state(Stream::Points, &held, 2, Some(&delta(&["a", "b"])))
        .expect("the retry");
    assert_eq!(outcome.seq, 1);
    let keys: Vec<String> = spool
        .load_state()
        .expect("state")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(drain_points(&spool), held);
    // Then the next lines are stored as usual.
    spool
        .append(Stream::Points, &lines(50, 1), 1)
        .expect("append");
    assert_eq!(drain_points(&spool), lines(50, 1));
}

/// A dead letter settled twice (its first commit reported an error after it landed) is kept
/// once.
#[test]
fn a_batch_dead_lettered_twice_is_kept_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open_at(&dir.path().join("spool.redb"));
    spool
        .append(Stream::Points, &lines(0, 2), 2)
        .expect("append");
    let batch = spool
        .read_batch(Stream::Points, SINK, 100)
        .expect("read")
        .expect("a batch");
    for _ in 0..2 {
        spool
            .dead_letter(Stream::Points, SINK, &batch, "HTTP 400: bad")
            .expect("dead letter");
    }
    assert_eq!(spool.dead_letters().expect("dead letters").len(), 1);
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

/// A size-limited tmpfs, unmounted on drop: a real full disk (issue 10 item 6).
struct SmallFs {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    /// `None` (with a message saying the test did not run) where mounting is not permitted.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mnt");
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "SKIPPED: cannot mount a {size} tmpfs (needs root); this disk-full test did not run"
            );
            return None;
        }
        Some(Self { mnt, _dir: dir })
    }

    /// Fill the file system with a filler file (until ENOSPC, bounded by the fs size).
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.mnt.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 16 * 1024];
        // 64 MiB at most: far above the mounts used here.
        for _ in 0..4096 {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mnt).status();
    }
}

fn open_small(path: &Path, min_free_bytes: u64) -> Spool {
    Spool::open_with(
        path,
        &SpoolConfig {
            max_bytes: 64 * 1024 * 1024,
            min_free_bytes,
        },
        &[
            Reader::new(SINK, &[Stream::Points]),
            Reader::new(HOOK, &[Stream::Alerts]),
        ],
        None,
    )
    .expect("open")
}

/// Append until it succeeds, for at most 3 × the longest reopen wait.
fn append_until_ok(spool: &Spool, body: &[u8], records: u32) -> u32 {
    let deadline = std::time::Instant::now() + 3 * open::REOPEN_RETRY_MAX;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match spool.append(Stream::Points, body, records) {
            Ok(_) => return attempts,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "still failing after {attempts} attempts: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_full_disk_fails_commits_and_the_same_spool_recovers_when_space_returns() {
    let Some(fs) = SmallFs::mount("8m") else {
        return;
    };
    let spool = open_small(&fs.mnt.join("spool.redb"), 0);
    let chunk = lines(0, 50);
    let mut stored = 0u64;
    for _ in 0..20 {
        spool.append(Stream::Points, &chunk, 50).expect("room");
        stored += 50;
    }
    let filler = fs.fill();
    // Appends go on until redb needs a page it does not have (bounded: 8 MiB / 3 KiB).
    let mut failed = None;
    for _ in 0..3000 {
        match spool.append(Stream::Points, &chunk, 50) {
            Ok(_) => stored += 50,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let failed = failed.expect("a full disk fails a commit");
    assert!(
        matches!(failed, SpoolError::Storage { .. }),
        "first failure is the storage error: {failed}"
    );
    // Until space returns every call fails, and nothing changes.
    assert!(spool.append(Stream::Points, &chunk, 50).is_err());
    std::fs::remove_file(filler).expect("free the disk");
    append_until_ok(&spool, &chunk, 50);
    stored += 50;
    let s = spool.stats();
    assert!(s.available && s.reopens_total >= 1, "{s:?}");
    // In the same process: everything committed is there once, nothing more.
    assert_eq!(drain(&spool).0, stored);
}

#[test]
fn starting_on_a_full_disk_the_spool_waits_for_space_instead_of_failing() {
    let Some(fs) = SmallFs::mount("4m") else {
        return;
    };
    let filler = fs.fill();
    let spool = open_small(&fs.mnt.join("spool.redb"), 0);
    assert!(!spool.stats().available);
    assert!(matches!(
        spool.append(Stream::Points, &lines(0, 5), 5),
        Err(SpoolError::Unavailable { .. })
    ));
    std::fs::remove_file(filler).expect("free the disk");
    append_until_ok(&spool, &lines(0, 5), 5);
    assert_eq!(drain(&spool).0, 5);
}

#[test]
fn min_free_bytes_keeps_free_space_by_dropping_the_oldest_points() {
    let Some(fs) = SmallFs::mount("8m") else {
        return;
    };
    // Leave 5 MiB for the spool; it must keep 2 MiB of them free.
    let filler = fs.mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 3 * 1024 * 1024]).expect("filler");
    let min_free = 2 * 1024 * 1024;
    let spool = open_small(&fs.mnt.join("spool.redb"), min_free);
    let chunk = lines(0, 100); // about 5 KiB
    let mut least_free = u64::MAX;
    // 20 MB through a 5 MiB file system share.
    for _ in 0..4000 {
        spool
            .append(Stream::Points, &chunk, 100)
            .expect("never fails: the bound keeps the disk from filling");
        least_free = least_free.min(disk::free_bytes(&fs.mnt.join("spool.redb")).unwrap_or(0));
    }
    let s = spool.stats();
    assert!(s.dropped_records_total > 0, "{s:?}");
    // redb grows its file by whole regions, so the file may overshoot by one growth step.
    assert!(least_free >= min_free / 2, "free fell to {least_free}");
}
