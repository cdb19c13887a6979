//! The record of what the simulator really served: the oracle the system tests compare the
//! database against.
//!
//! Owns [`Truth`] (thread-safe, bounded in memory, optionally streamed as JSON lines to a file),
//! [`TrueSample`] and [`FaultRecord`]. Naming: `device` is the Modbus device name, the JSON node
//! name or the CIGEM device id; `point` is the profile point name, the JSON sensor id, the CIGEM
//! point id for scalar points (`L1_LF_1`) or `point.field` for multi-field points
//! (`L1_QJ_1.X`); `ts_ns` is UTC nanoseconds. It does not produce values or talk to anyone.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// Samples kept in memory; the oldest are evicted beyond this (a long demo run must not grow
/// without bound; the JSON-lines file, when asked for, keeps everything).
pub const MAX_SAMPLES_IN_MEMORY: usize = 2_000_000;

/// One value the simulator served, exactly as a correct gateway must store it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrueSample {
    /// Device name (Modbus device, JSON node) or CIGEM device id.
    pub device: String,
    /// Point name (see the module doc for MQTT naming).
    pub point: String,
    /// Sample time, UTC ns (whole seconds for Modbus, milliseconds for MQTT).
    pub ts_ns: i64,
    /// Engineering value.
    pub value: f64,
}

/// Kinds of injected faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The device did not answer (Modbus) or did not publish (MQTT).
    Offline,
}

/// One injected fault window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Device name.
    pub device: String,
    /// What was wrong.
    pub kind: FaultKind,
    /// Start, UTC ns (simulated clock).
    pub start_ns: i64,
    /// End, UTC ns; `None` while the fault lasts.
    pub end_ns: Option<i64>,
}

/// A JSON line of the truth file.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Sample(&'a TrueSample),
    Fault(&'a FaultRecord),
}

/// Errors of the truth file.
#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    /// The file could not be created or written.
    #[error("truth file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

#[derive(Debug, Default)]
struct Inner {
    samples: VecDeque<TrueSample>,
    evicted: u64,
    faults: Vec<FaultRecord>,
    file: Option<(PathBuf, BufWriter<File>)>,
}

/// The simulator's ground truth. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Truth {
    inner: Mutex<Inner>,
}

impl Truth {
    /// An in-memory truth.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A truth that also appends every record to `path` as JSON lines
    /// (`{"type":"sample","device":..,"point":..,"ts_ns":..,"value":..}` and
    /// `{"type":"fault","device":..,"kind":"offline","start_ns":..,"end_ns":..}`; a fault is
    /// written when it ends, or at [`Truth::flush`] if still open).
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn with_jsonl(path: &Path) -> Result<Self, TruthError> {
        let file = File::create(path).map_err(|source| TruthError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            inner: Mutex::new(Inner {
                file: Some((path.to_path_buf(), BufWriter::new(file))),
                ..Inner::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is a push),
        // so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records samples.
    pub fn record(&self, samples: impl IntoIterator<Item = TrueSample>) {
        let mut inner = self.lock();
        for s in samples {
            write_line(&mut inner.file, &Line::Sample(&s));
            if inner.samples.len() >= MAX_SAMPLES_IN_MEMORY {
                inner.samples.pop_front();
                inner.evicted += 1;
            }
            inner.samples.push_back(s);
        }
    }

    /// Opens a fault window unless one of that kind is already open for the device. Returns
    /// whether a window was opened.
    pub fn fault_start(&self, device: &str, kind: FaultKind, at_ns: i64) -> bool {
        let mut inner = self.lock();
        let open = inner
            .faults
            .iter()
            .any(|f| f.device == device && f.kind == kind && f.end_ns.is_none());
        if open {
            return false;
        }
        inner.faults.push(FaultRecord {
            device: device.to_owned(),
            kind,
            start_ns: at_ns,
            end_ns: None,
        });
        true
    }

    /// Closes the open fault window of that kind for the device, if any. Returns whether one was
    /// closed.
    pub fn fault_end(&self, device: &str, kind: FaultKind, at_ns: i64) -> bool {
        let mut inner = self.lock();
        let Inner { faults, file, .. } = &mut *inner;
        let Some(f) = faults
            .iter_mut()
            .find(|f| f.device == device && f.kind == kind && f.end_ns.is_none())
        else {
            return false;
        };
        f.end_ns = Some(at_ns);
        write_line(file, &Line::Fault(f));
        true
    }

    /// All samples in memory, in recording order.
    #[must_use]
    pub fn samples(&self) -> Vec<TrueSample> {
        self.lock().samples.iter().cloned().collect()
    }

    /// The samples of one device and point, in recording order.
    #[must_use]
    pub fn samples_of(&self, device: &str, point: &str) -> Vec<TrueSample> {
        self.lock()
            .samples
            .iter()
            .filter(|s| s.device == device && s.point == point)
            .cloned()
            .collect()
    }

    /// The value served for `(device, point)` at `ts_ns`, if recorded.
    #[must_use]
    pub fn value_at(&self, device: &str, point: &str, ts_ns: i64) -> Option<f64> {
        self.lock()
            .samples
            .iter()
            .rev()
            .find(|s| s.ts_ns == ts_ns && s.device == device && s.point == point)
            .map(|s| s.value)
    }

    /// Number of samples evicted from memory because of [`MAX_SAMPLES_IN_MEMORY`].
    #[must_use]
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// All fault windows, in start order.
    #[must_use]
    pub fn faults(&self) -> Vec<FaultRecord> {
        self.lock().faults.clone()
    }

    /// Writes everything in memory (samples, then faults) to `path` as JSON lines.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_jsonl(&self, path: &Path) -> Result<(), TruthError> {
        let io = |source| TruthError::Io {
            path: path.to_path_buf(),
            source,
        };
        let inner = self.lock();
        let mut out = BufWriter::new(File::create(path).map_err(io)?);
        for s in &inner.samples {
            serde_json::to_writer(&mut out, &Line::Sample(s)).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)?;
        }
        for f in &inner.faults {
            serde_json::to_writer(&mut out, &Line::Fault(f)).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)?;
        }
        out.flush().map_err(io)
    }

    /// Flushes the streamed file, first writing faults that are still open.
    pub fn flush(&self) {
        let mut inner = self.lock();
        let Inner { faults, file, .. } = &mut *inner;
        for f in faults.iter().filter(|f| f.end_ns.is_none()) {
            write_line(file, &Line::Fault(f));
        }
        if let Some((path, w)) = file.as_mut() {
            if let Err(e) = w.flush() {
                tracing::warn!(path = %path.display(), error = %e, "truth file flush failed");
            }
        }
    }
}

/// Appends one line; on failure logs once and stops streaming (the in-memory truth goes on).
fn write_line(file: &mut Option<(PathBuf, BufWriter<File>)>, line: &Line<'_>) {
    let Some((path, w)) = file.as_mut() else {
        return;
    };
    let result = serde_json::to_writer(&mut *w, line)
        .map_err(std::io::Error::from)
        .and_then(|()| w.write_all(b"\n"));
    if let Err(e) = result {
        tracing::error!(path = %path.display(), error = %e, "truth file write failed; streaming stopped");
        *file = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(point: &str, ts_ns: i64, value: f64) -> TrueSample {
        TrueSample {
            device: "d".into(),
            point: point.into(),
            ts_ns,
            value,
        }
    }

    #[test]
    fn records_and_finds() {
        let t = Truth::new();
        t.record([s("a", 1, 1.5), s("b", 1, 2.5), s("a", 2, 3.5)]);
        assert_eq!(t.samples().len(), 3);
        assert_eq!(t.value_at("d", "a", 2), Some(3.5));
        assert_eq!(t.value_at("d", "a", 3), None);
        assert_eq!(t.samples_of("d", "a").len(), 2);
    }

    #[test]
    fn fault_windows_open_once_and_close() {
        let t = Truth::new();
        assert!(t.fault_start("d", FaultKind::Offline, 10));
        assert!(!t.fault_start("d", FaultKind::Offline, 11));
        assert!(t.fault_end("d", FaultKind::Offline, 20));
        assert!(!t.fault_end("d", FaultKind::Offline, 21));
        assert_eq!(
            t.faults(),
            [FaultRecord {
                device: "d".into(),
                kind: FaultKind::Offline,
                start_ns: 10,
                end_ns: Some(20)
            }]
        );
    }

    #[test]
    fn jsonl_lines_have_the_documented_shape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("truth.jsonl");
        let t = Truth::with_jsonl(&path).expect("create");
        t.record([s("a", 1_000_000_000, 21.53)]);
        t.fault_start("d", FaultKind::Offline, 5);
        t.fault_end("d", FaultKind::Offline, 6);
        t.flush();
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            "{\"type\":\"sample\",\"device\":\"d\",\"point\":\"a\",\"ts_ns\":1000000000,\"value\":21.53}\n\
             {\"type\":\"fault\",\"device\":\"d\",\"kind\":\"offline\",\"start_ns\":5,\"end_ns\":6}\n"
        );
    }
}
