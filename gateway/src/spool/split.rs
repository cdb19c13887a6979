//! The spool in two files: points in one, alerts and the engine's rule state in the other
//! (docs/ARCHITECTURE.md §Spool layout, Two files). redb has one writer per file, so with one
//! file an alert's commit waited for the points commit in progress (issue 11: "alerts must not
//! wait behind point commits"); in a file of its own it waits for nothing but its own fsync.
//!
//! Owns the names of the two files and the one-time move of a single-file spool's alerts and
//! rule state into the alerts file. It does not decide which sink reads which file (`run.rs`)
//! or which commit goes where (the engine).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};

use super::{
    first_chunk, AtPath, Spool, SpoolError, SpoolStats, StateDelta, Stream, ALERTS, CURSORS,
    ENGINE_STATE, META,
};

/// File name of the points file inside the data directory (the spool of earlier versions, which
/// held the alerts too).
pub const POINTS_FILE: &str = "spool.redb";

/// File name of the alerts file inside the data directory: the alerts stream and the engine's
/// rule, derived and pour state.
pub const ALERTS_FILE: &str = "alerts.redb";

/// The points file in `data_dir`.
#[must_use]
pub fn points_path(data_dir: &Path) -> PathBuf {
    data_dir.join(POINTS_FILE)
}

/// The alerts file in `data_dir`.
#[must_use]
pub fn alerts_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ALERTS_FILE)
}

/// What [`Spool::move_alerts_and_state_to`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MovedOut {
    /// Alert events (records) moved.
    pub alert_records: u64,
    /// Rule state entries moved.
    pub state_entries: usize,
}

impl Spool {
    /// Move the alert chunks and the engine state a single-file spool of an earlier version
    /// holds into `to`, the alerts file, then remove them here. Nothing to move: nothing done.
    ///
    /// Order: the state, then the alerts are committed in `to`, then removed here in one
    /// transaction; interrupted in between, the next start moves them again, so nothing is lost,
    /// and at most those alert events are delivered twice (receivers tell them apart by their
    /// `id` and `seq`). A state entry `to` already has is kept (it is the one a second attempt
    /// wrote). Alert chunks are moved whether or not a sink had delivered them: the cursors of
    /// the old file do not carry over to the new one, so an alert sink may deliver the moved
    /// events again, never fewer.
    ///
    /// # Errors
    /// A storage error of either file; the move is then tried again at the next start.
    pub fn move_alerts_and_state_to(&self, to: &Spool) -> Result<MovedOut, SpoolError> {
        let p = self.path.as_path();
        let (chunks, entries) = self.with_db(|db, _| {
            let txn = db.begin_read().at(p)?;
            let mut chunks: Vec<(u32, Vec<u8>)> = Vec::new();
            match txn.open_table(ALERTS) {
                Ok(table) => {
                    for entry in table.iter().at(p)? {
                        let (_, v) = entry.at(p)?;
                        let (records, _, body) = v.value();
                        if records > 0 && !body.is_empty() {
                            chunks.push((records, body.to_vec()));
                        }
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e).at(p),
            }
            let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
            match txn.open_table(ENGINE_STATE) {
                Ok(table) => {
                    for entry in table.iter().at(p)? {
                        let (k, v) = entry.at(p)?;
                        entries.push((k.value().to_owned(), v.value().to_vec()));
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e).at(p),
            }
            Ok((chunks, entries))
        })?;
        if chunks.is_empty() && entries.is_empty() {
            return Ok(MovedOut::default());
        }
        let have: BTreeSet<String> = to.load_state()?.into_iter().map(|(k, _)| k).collect();
        let mut delta = StateDelta::default();
        let state_entries = entries.len();
        for (k, v) in entries {
            if !have.contains(&k) {
                delta.entries.insert(k, Some(v));
            }
        }
        if !delta.is_empty() {
            to.save_state(&delta)?;
        }
        let mut alert_records = 0u64;
        for (records, body) in &chunks {
            to.append(Stream::Alerts, body, *records)?;
            alert_records += u64::from(*records);
        }
        self.with_db(|db, current| {
            let mut next = current.clone();
            let txn = Self::begin_durable(db).at(p)?;
            {
                let mut meta = txn.open_table(META).at(p)?;
                let mut cursors = txn.open_table(CURSORS).at(p)?;
                let mut alerts = txn.open_table(ALERTS).at(p)?;
                while let Some((seq, records, bytes)) = first_chunk(&alerts).at(p)? {
                    alerts.remove(seq).at(p)?;
                    next.forget_chunk(Stream::Alerts, seq, records, bytes);
                }
                next.save(&mut meta, &mut cursors).at(p)?;
            }
            txn.delete_table(ENGINE_STATE).at(p)?;
            txn.commit().at(p)?;
            *current = next;
            Ok(())
        })?;
        Ok(MovedOut {
            alert_records,
            state_entries,
        })
    }
}

/// The gateway's two spool files, as the parts that use both hold them (the run's wiring, the
/// console). Tools, tests and benchmarks that open one file use [`Spools::single`].
#[derive(Debug, Clone)]
pub struct Spools {
    /// Points (line protocol), read by the InfluxDB sinks.
    pub points: std::sync::Arc<Spool>,
    /// Alerts and the engine's state, read by the alert sinks.
    pub alerts: std::sync::Arc<Spool>,
}

impl Spools {
    /// One file holding both streams and the state.
    #[must_use]
    pub fn single(spool: std::sync::Arc<Spool>) -> Self {
        Self {
            points: std::sync::Arc::clone(&spool),
            alerts: spool,
        }
    }

    /// The file `stream` is stored in.
    #[must_use]
    pub fn of(&self, stream: Stream) -> &std::sync::Arc<Spool> {
        match stream {
            Stream::Points => &self.points,
            Stream::Alerts => &self.alerts,
        }
    }

    /// Counts of both files: each stream's from its file, dead letters, sizes and health
    /// summed, available only while both are. Blocks on both locks: call it off the runtime.
    #[must_use]
    pub fn stats(&self) -> SpoolStats {
        let points = self.points.stats();
        if std::sync::Arc::ptr_eq(&self.points, &self.alerts) {
            return points;
        }
        let alerts = self.alerts.stats();
        let mut sinks = points.sinks;
        for (name, b) in alerts.sinks {
            let e = sinks.entry(name).or_default();
            e.alerts_records += b.alerts_records;
            e.points_records += b.points_records;
        }
        SpoolStats {
            points_chunks: points.points_chunks,
            points_records: points.points_records,
            points_bytes: points.points_bytes,
            alerts_chunks: alerts.alerts_chunks,
            alerts_records: alerts.alerts_records,
            alerts_bytes: alerts.alerts_bytes,
            dropped_records_total: points.dropped_records_total,
            alerts_dropped_total: alerts.alerts_dropped_total,
            dead_letter_count: points.dead_letter_count + alerts.dead_letter_count,
            dead_letter_bytes: points.dead_letter_bytes + alerts.dead_letter_bytes,
            dead_letters_evicted_total: points.dead_letters_evicted_total
                + alerts.dead_letters_evicted_total,
            available: points.available && alerts.available,
            file_bytes: points.file_bytes + alerts.file_bytes,
            reopens_total: points.reopens_total + alerts.reopens_total,
            storage_panics_total: points.storage_panics_total + alerts.storage_panics_total,
            damaged_files_total: points.damaged_files_total + alerts.damaged_files_total,
            compactions_total: points.compactions_total + alerts.compactions_total,
            sinks,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::spool::{Reader, SpoolConfig};

    const HOOK: &str = "hook";
    const INFLUX: &str = "influxdb";

    fn alert_line(id: u32) -> Vec<u8> {
        format!("{{\"id\":\"a{id}\",\"seq\":1}}\n").into_bytes()
    }

    fn state(entries: &[(&str, &str)]) -> StateDelta {
        let mut d = StateDelta::default();
        for (k, v) in entries {
            d.entries
                .insert((*k).to_owned(), Some(v.as_bytes().to_vec()));
        }
        d
    }

    fn open(path: &Path, readers: &[Reader]) -> Spool {
        Spool::open_for(path, &SpoolConfig::default(), readers).expect("open")
    }

    fn drain_alerts(spool: &Spool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(b) = spool.read_batch(Stream::Alerts, HOOK, 1000).expect("read") {
            out.extend(String::from_utf8_lossy(&b.body).lines().map(str::to_owned));
            spool.ack(Stream::Alerts, HOOK, &b).expect("ack");
        }
        out
    }

    #[test]
    fn a_single_file_spool_gives_its_alerts_and_state_to_the_alerts_file_once() {
        let dir = tempfile::tempdir().expect("dir");
        let (old_path, new_path) = (points_path(dir.path()), alerts_path(dir.path()));
        // An earlier version's file: points, three undelivered alert events in two chunks, and
        // the rule state, all in one file.
        {
            let old = Spool::open(
                &old_path,
                &SpoolConfig::default(),
                &[INFLUX.to_owned(), HOOK.to_owned()],
            )
            .expect("open");
            old.append(Stream::Points, b"m v=1 1\nm v=2 2\n", 2)
                .expect("points");
            let two = [alert_line(1), alert_line(2)].concat();
            old.append_with_state(Stream::Alerts, &two, 2, Some(&state(&[("c/x", "1")])))
                .expect("alerts");
            old.append_with_state(
                Stream::Alerts,
                &alert_line(3),
                1,
                Some(&state(&[("c/x", "2"), ("d/dev", "3")])),
            )
            .expect("alert");
        }
        // The new layout: the alerts file, and the old file opened for the points alone.
        let alerts = open(&new_path, &[Reader::new(HOOK, &[Stream::Alerts])]);
        let points = open(&old_path, &[Reader::new(INFLUX, &[Stream::Points])]);
        let moved = points.move_alerts_and_state_to(&alerts).expect("moved");
        assert_eq!(
            moved,
            MovedOut {
                alert_records: 3,
                state_entries: 2
            }
        );
        assert_eq!(
            drain_alerts(&alerts),
            vec![
                "{\"id\":\"a1\",\"seq\":1}",
                "{\"id\":\"a2\",\"seq\":1}",
                "{\"id\":\"a3\",\"seq\":1}"
            ],
            "every event, in order"
        );
        assert_eq!(
            alerts.load_state().expect("state"),
            vec![
                ("c/x".to_owned(), b"2".to_vec()),
                ("d/dev".to_owned(), b"3".to_vec())
            ],
            "the newest entry of each key"
        );
        assert!(points.load_state().expect("state").is_empty());
        let s = points.stats();
        assert_eq!(
            (s.alerts_chunks, s.alerts_records, s.alerts_bytes),
            (0, 0, 0)
        );
        assert_eq!(s.points_records, 2, "the points stay");
        // Once: nothing left to move, the alerts are not delivered again.
        assert_eq!(
            points.move_alerts_and_state_to(&alerts).expect("again"),
            MovedOut::default()
        );
        assert!(drain_alerts(&alerts).is_empty());
    }

    #[test]
    fn a_move_interrupted_after_the_state_keeps_the_alerts_files_entries() {
        let dir = tempfile::tempdir().expect("dir");
        let (old_path, new_path) = (points_path(dir.path()), alerts_path(dir.path()));
        {
            let old = Spool::open(&old_path, &SpoolConfig::default(), &[]).expect("open");
            old.save_state(&state(&[("c/x", "old"), ("c/y", "y")]))
                .expect("state");
        }
        let alerts = open(&new_path, &[Reader::new(HOOK, &[Stream::Alerts])]);
        // What a first attempt wrote before it stopped, and the engine's newer entry of c/x.
        alerts.save_state(&state(&[("c/x", "new")])).expect("state");
        let points = open(&old_path, &[]);
        points.move_alerts_and_state_to(&alerts).expect("moved");
        assert_eq!(
            alerts.load_state().expect("state"),
            vec![
                ("c/x".to_owned(), b"new".to_vec()),
                ("c/y".to_owned(), b"y".to_vec())
            ]
        );
    }

    #[test]
    fn stats_of_two_files_take_each_stream_from_its_file() {
        let dir = tempfile::tempdir().expect("dir");
        let spools = Spools {
            points: Arc::new(open(
                &points_path(dir.path()),
                &[Reader::new(INFLUX, &[Stream::Points])],
            )),
            alerts: Arc::new(open(
                &alerts_path(dir.path()),
                &[Reader::new(HOOK, &[Stream::Alerts])],
            )),
        };
        spools
            .points
            .append(Stream::Points, b"m v=1 1\nm v=2 2\nm v=3 3\n", 3)
            .expect("points");
        spools
            .alerts
            .append(Stream::Alerts, &alert_line(1), 1)
            .expect("alert");
        let s = spools.stats();
        assert_eq!((s.points_records, s.alerts_records), (3, 1));
        assert_eq!(s.sinks[INFLUX].points_records, 3);
        assert_eq!(s.sinks[HOOK].alerts_records, 1);
        assert!(s.available);
        assert_eq!(
            s.file_bytes,
            crate::spool::file_len(&points_path(dir.path()))
                + crate::spool::file_len(&alerts_path(dir.path()))
        );
        // One file for both: its own counts, not twice.
        let single = Spools::single(Arc::clone(&spools.points));
        assert_eq!(single.stats().points_records, 3);
    }
}
