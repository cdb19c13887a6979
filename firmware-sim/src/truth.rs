//! The record of what the simulator really served: the oracle the system tests compare the
//! database against.
//!
//! Owns [`Truth`] (thread-safe, bounded in memory, optionally streamed as JSON lines to a file),
//! [`TrueSample`], [`ChannelSample`] and [`FaultRecord`]. Naming: `device` is the Modbus device
//! name, the JSON node name or the CIGEM device id; `point` is the profile point name, the JSON
//! sensor id, the CIGEM point id for scalar points (`L1_LF_1`) or `point.field` for multi-field
//! points (`L1_QJ_1.X`); `ts_ns` is UTC nanoseconds. It does not produce values or talk to anyone.
//!
//! # Three records
//! - **Samples**: what a correct gateway must store, exactly as it went on the wire. A Modbus
//!   sample is recorded when the device takes it into its register image (whether or not anyone
//!   reads it); an MQTT sample when the broker acknowledged the message carrying it.
//! - **Channels**: the physics without any sensor or fault (`block-a.A1`, `raft-a.core`), one
//!   value per channel per sample tick, stamped with the true simulated time: what the
//!   gateway's analytics should reconstruct.
//! - **Faults**: every injected fault with its device, point (if one), start, end and parameter.
//!
//! # Samples during a fault (what a correct gateway sees, and must flag)
//! | fault | samples recorded |
//! |---|---|
//! | `stuck` | the frozen value (the reading of the first sample in the window), at each sample time |
//! | `spike` | the spiked value (reading + magnitude) on the spiked samples |
//! | `drift` | the drifted value (reading + rate × time since the start) |
//! | `status_flag` | Modbus: the status points read the flag value; CIGEM: the point carries the firmware's error sentinel −4321.0 and `sensor_state` the code |
//! | `clock_skew` | the values, stamped with the device's skewed time (as on the wire) |
//! | `dropout` | none for the dropped ticks (the device took no sample / sent nothing) |
//! | `offline`, `exception`, `slow`, `garbage`, `bad_crc` | Modbus: recorded as usual (the value sits in the registers), the fault window says when a read could not get it; MQTT `offline`: none (nothing published) |
//! | `malformed`, `oversized` | none: the message went out but carries nothing a gateway may store |
//!
//! A fault window is `[start_ns, end_ns)` of simulated time; a sample whose time falls in it is
//! affected. `param` carries the fault's number: spike magnitude, drift per day, dropout
//! probability, exception code, delay in ms, garbage or payload bytes, clock offset in s, the
//! flag state when the scenario gives one (default: 1 for Modbus, −2 for CIGEM); `stuck`,
//! `offline`, `bad_crc` and `malformed` have none (the frozen value is in the samples).

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

/// Samples of physics channels kept in memory; the oldest are evicted beyond this.
pub const MAX_CHANNEL_SAMPLES_IN_MEMORY: usize = 2_000_000;

/// The true value of a physics channel at a sample tick (no sensor noise, no fault).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelSample {
    /// Channel name, `<model>.<...>`.
    pub channel: String,
    /// Sample tick, UTC ns (simulated clock, never skewed).
    pub ts_ns: i64,
    /// Value in the channel's unit.
    pub value: f64,
}

/// Kinds of injected faults (the scenario's `[[faults]] kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The device did not answer (Modbus) or did not publish (MQTT; with a last will, its
    /// connection dropped and the broker published the will).
    Offline,
    /// A point repeats one value.
    Stuck,
    /// Isolated outliers added to a point.
    Spike,
    /// A point's reading drifts away from the truth at a constant rate.
    Drift,
    /// Samples missing: the device took none (Modbus) or sent nothing (MQTT) on some ticks.
    Dropout,
    /// Modbus exception replies (02 illegal address, 04 device failure, 06 busy).
    Exception,
    /// Modbus replies delayed, near the gateway's timeout.
    Slow,
    /// Random bytes on the serial line before a reply.
    Garbage,
    /// Replies on the serial line with a wrong CRC.
    BadCrc,
    /// MQTT payloads that are not valid messages.
    Malformed,
    /// MQTT payloads beyond any sane size.
    Oversized,
    /// The device clock is off: time registers and message timestamps shifted.
    ClockSkew,
    /// The device raises its own fault flag (status register, CIGEM `sensor_state`).
    StatusFlag,
}

impl FaultKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 13] = [
        Self::Offline,
        Self::Stuck,
        Self::Spike,
        Self::Drift,
        Self::Dropout,
        Self::Exception,
        Self::Slow,
        Self::Garbage,
        Self::BadCrc,
        Self::Malformed,
        Self::Oversized,
        Self::ClockSkew,
        Self::StatusFlag,
    ];

    /// The scenario and truth-file name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::Stuck => "stuck",
            Self::Spike => "spike",
            Self::Drift => "drift",
            Self::Dropout => "dropout",
            Self::Exception => "exception",
            Self::Slow => "slow",
            Self::Garbage => "garbage",
            Self::BadCrc => "bad_crc",
            Self::Malformed => "malformed",
            Self::Oversized => "oversized",
            Self::ClockSkew => "clock_skew",
            Self::StatusFlag => "status_flag",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One injected fault window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Device name.
    pub device: String,
    /// The point, when the fault concerns one point only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<String>,
    /// What was wrong.
    pub kind: FaultKind,
    /// Start, UTC ns (simulated clock).
    pub start_ns: i64,
    /// End, UTC ns; `None` while the fault lasts.
    pub end_ns: Option<i64>,
    /// The fault's number (see the module doc), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<f64>,
}

/// A JSON line of the truth file.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Sample(&'a TrueSample),
    Channel(&'a ChannelSample),
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
    channels: VecDeque<ChannelSample>,
    faults: Vec<FaultRecord>,
    /// Indices of faults already written to the file while still open (once each).
    open_written: std::collections::HashSet<usize>,
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
    /// (`{"type":"sample","device":..,"point":..,"ts_ns":..,"value":..}`,
    /// `{"type":"channel","channel":..,"ts_ns":..,"value":..}` and
    /// `{"type":"fault","device":..,"point":..,"kind":"offline","start_ns":..,"end_ns":..,"param":..}`
    /// with `point` and `param` only when set; a fault is written when it ends, or at
    /// [`Truth::flush`] if still open).
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

    /// Records the true channel values of one sample tick.
    pub fn record_channels(&self, samples: impl IntoIterator<Item = ChannelSample>) {
        let mut inner = self.lock();
        for s in samples {
            write_line(&mut inner.file, &Line::Channel(&s));
            if inner.channels.len() >= MAX_CHANNEL_SAMPLES_IN_MEMORY {
                inner.channels.pop_front();
                inner.evicted += 1;
            }
            inner.channels.push_back(s);
        }
    }

    /// Opens a fault window (device-wide, no parameter) unless one of that kind is already open
    /// for the device. Returns whether a window was opened.
    pub fn fault_start(&self, device: &str, kind: FaultKind, at_ns: i64) -> bool {
        self.open_fault(FaultRecord {
            device: device.to_owned(),
            point: None,
            kind,
            start_ns: at_ns,
            end_ns: None,
            param: None,
        })
    }

    /// Opens `record` (its `end_ns` ignored) unless a window of the same device, point and kind
    /// is already open. Returns whether it was opened.
    pub fn open_fault(&self, record: FaultRecord) -> bool {
        let mut inner = self.lock();
        let open = inner.faults.iter().any(|f| {
            f.device == record.device
                && f.point == record.point
                && f.kind == record.kind
                && f.end_ns.is_none()
        });
        if open {
            return false;
        }
        inner.faults.push(FaultRecord {
            end_ns: None,
            ..record
        });
        true
    }

    /// Closes the open device-wide fault window of that kind for the device, if any. Returns
    /// whether one was closed.
    pub fn fault_end(&self, device: &str, kind: FaultKind, at_ns: i64) -> bool {
        self.close_fault(device, None, kind, at_ns)
    }

    /// Closes the open window of `(device, point, kind)`, if any. Returns whether one was closed.
    pub fn close_fault(
        &self,
        device: &str,
        point: Option<&str>,
        kind: FaultKind,
        at_ns: i64,
    ) -> bool {
        let mut inner = self.lock();
        let Inner { faults, file, .. } = &mut *inner;
        let Some(f) = faults.iter_mut().find(|f| {
            f.device == device
                && f.point.as_deref() == point
                && f.kind == kind
                && f.end_ns.is_none()
        }) else {
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

    /// Numbers of device samples, channel samples and faults in memory.
    #[must_use]
    pub fn counts(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        (
            inner.samples.len(),
            inner.channels.len(),
            inner.faults.len(),
        )
    }

    /// All channel samples in memory, in recording order.
    #[must_use]
    pub fn channel_samples(&self) -> Vec<ChannelSample> {
        self.lock().channels.iter().cloned().collect()
    }

    /// The samples of one channel, in recording order.
    #[must_use]
    pub fn channel(&self, channel: &str) -> Vec<ChannelSample> {
        self.lock()
            .channels
            .iter()
            .filter(|s| s.channel == channel)
            .cloned()
            .collect()
    }

    /// The faults of one device (any point), in start order.
    #[must_use]
    pub fn faults_of(&self, device: &str) -> Vec<FaultRecord> {
        self.lock()
            .faults
            .iter()
            .filter(|f| f.device == device)
            .cloned()
            .collect()
    }

    /// Number of samples (device and channel) evicted from memory because of
    /// [`MAX_SAMPLES_IN_MEMORY`] and [`MAX_CHANNEL_SAMPLES_IN_MEMORY`].
    #[must_use]
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// All fault windows, in start order.
    #[must_use]
    pub fn faults(&self) -> Vec<FaultRecord> {
        self.lock().faults.clone()
    }

    /// Writes everything in memory (samples, channels, then faults) to `path` as JSON lines.
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
        for c in &inner.channels {
            serde_json::to_writer(&mut out, &Line::Channel(c)).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)?;
        }
        for f in &inner.faults {
            serde_json::to_writer(&mut out, &Line::Fault(f)).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)?;
        }
        out.flush().map_err(io)
    }

    /// Flushes the streamed file, first writing faults that are still open (each once, with
    /// `"end_ns":null`; if one closes later, its closed line follows: the last line of a
    /// (device, point, kind, start) wins).
    pub fn flush(&self) {
        let mut inner = self.lock();
        let Inner {
            faults,
            file,
            open_written,
            ..
        } = &mut *inner;
        for (i, f) in faults.iter().enumerate() {
            if f.end_ns.is_none() && open_written.insert(i) {
                write_line(file, &Line::Fault(f));
            }
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
                point: None,
                kind: FaultKind::Offline,
                start_ns: 10,
                end_ns: Some(20),
                param: None,
            }]
        );
    }

    #[test]
    fn open_faults_are_written_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("truth.jsonl");
        let t = Truth::with_jsonl(&path).expect("create");
        t.fault_start("d", FaultKind::Offline, 5);
        t.flush();
        t.flush();
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn jsonl_lines_have_the_documented_shape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("truth.jsonl");
        let t = Truth::with_jsonl(&path).expect("create");
        t.record([s("a", 1_000_000_000, 21.53)]);
        t.fault_start("d", FaultKind::Offline, 5);
        t.fault_end("d", FaultKind::Offline, 6);
        t.record_channels([ChannelSample {
            channel: "m.c".into(),
            ts_ns: 7,
            value: -0.5,
        }]);
        t.open_fault(FaultRecord {
            device: "d".into(),
            point: Some("p".into()),
            kind: FaultKind::Spike,
            start_ns: 8,
            end_ns: None,
            param: Some(2.5),
        });
        t.flush();
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            "{\"type\":\"sample\",\"device\":\"d\",\"point\":\"a\",\"ts_ns\":1000000000,\"value\":21.53}\n\
             {\"type\":\"fault\",\"device\":\"d\",\"kind\":\"offline\",\"start_ns\":5,\"end_ns\":6}\n\
             {\"type\":\"channel\",\"channel\":\"m.c\",\"ts_ns\":7,\"value\":-0.5}\n\
             {\"type\":\"fault\",\"device\":\"d\",\"point\":\"p\",\"kind\":\"spike\",\"start_ns\":8,\"end_ns\":null,\"param\":2.5}\n"
        );
    }
}
