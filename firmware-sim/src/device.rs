//! One simulated Modbus slave: its register image, its samples and its answers to reads.
//!
//! Owns [`ModbusDevice`]: per sample tick every point gets a new value and the whole image
//! (values and sample-time registers) is swapped under one lock, and a read is answered under
//! the same lock, so a request never mixes two samples. A point's value comes from a physics
//! channel through its sensor ([`crate::sensor`]) when the scenario maps it, else from its
//! default series ([`crate::signal`]); the device's scheduled faults then alter it
//! ([`crate::fault`]): stuck, spike, drift, status flags, dropped samples, a skewed clock. A
//! `writable` point (a relay coil, a setting register) is not sampled and not in the truth: it
//! keeps what the master
//! wrote ([`ModbusDevice::write`]), readable by tests as [`ModbusDevice::output`]. It also
//! owns the Modbus exception rules for reads and writes (application protocol V1.1b3 §6.1-6.6,
//! §6.12, §7) and
//! the line faults the transports act on ([`LineFaults`]: exceptions, delays, garbage, bad
//! CRCs). It does not speak any transport ([`crate::tcp`], [`crate::rtu`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::{Tick, NANOS_PER_SEC};
use crate::encode::{time_registers, to_registers, RawValue};
use crate::fault::{faulted_value, Action, ExceptionName, FaultSpec, DEFAULT_MODBUS_FLAG};
use crate::physics::Physics;
use crate::profile::{DataType, Function, Point, Profile, WordOrder};
use crate::quantity::{Behaviour, Quantity};
use crate::scenario::StatusPoints;
use crate::sensor::{ChannelRef, Reader};
use crate::signal::{fault_bits, series_id, uniform, Series};
use crate::truth::TrueSample;

/// Modbus application protocol V1.1b3 §6.3/6.4: 1-125 registers per read.
pub const MAX_READ_REGISTERS: u16 = 125;
/// Modbus application protocol V1.1b3 §6.1/6.2: 1-2000 bits per read.
pub const MAX_READ_BITS: u16 = 2000;

/// Behaviour of a coil: an actuator (heater relay, pump) is on for long stretches.
const COIL_BEHAVIOUR: Behaviour = Behaviour::Flag {
    probability: 0.5,
    hold: 10,
};
/// Series-name suffix of the dropout draws (cannot clash with a point: '#' is not in names).
const DROPOUT_SERIES: &str = "#dropout";
/// Series-name suffix of the garbage bytes.
const GARBAGE_SERIES: &str = "#garbage";

/// Modbus exception codes the simulator answers with (application protocol §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exception {
    /// 01: function not supported.
    IllegalFunction,
    /// 02: the address range is not (entirely) mapped.
    IllegalDataAddress,
    /// 03: quantity out of 1-125 (registers) or 1-2000 (bits).
    IllegalDataValue,
    /// 04: the device failed while answering (an injected fault).
    ServerDeviceFailure,
    /// 06: the device is busy with a long command (an injected fault).
    ServerDeviceBusy,
    /// 0B: (Modbus/TCP) no device with that unit id behind this address.
    GatewayTargetFailed,
}

impl Exception {
    /// The exception code byte.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::IllegalFunction => 0x01,
            Self::IllegalDataAddress => 0x02,
            Self::IllegalDataValue => 0x03,
            Self::ServerDeviceFailure => 0x04,
            Self::ServerDeviceBusy => 0x06,
            Self::GatewayTargetFailed => 0x0B,
        }
    }
}

impl From<ExceptionName> for Exception {
    fn from(e: ExceptionName) -> Self {
        match e {
            ExceptionName::IllegalAddress => Self::IllegalDataAddress,
            ExceptionName::DeviceFailure => Self::ServerDeviceFailure,
            ExceptionName::DeviceBusy => Self::ServerDeviceBusy,
        }
    }
}

/// Where a point's value comes from.
#[derive(Debug)]
enum Source {
    /// The default series of its quantity.
    Series(Series),
    /// A physics channel through a sensor.
    Channel(Reader),
    /// A status point: its random flag series (`StatusPoints::Random`) or 0 (`Clear`).
    Status(Option<Series>),
}

/// A point with its value source and the faults that may alter it.
#[derive(Debug)]
struct LivePoint {
    point: Point,
    source: Source,
    /// Indices into the device's faults: value faults and status flags aimed at this point.
    faults: Vec<usize>,
}

/// One register or bit written per sample.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// A whole register (or a coil/discrete bit stored as 0/1).
    Word(Function, u16, u16),
    /// One bit of a register.
    Bit(Function, u16, u8, bool),
}

/// Which addresses of a table belong to a point or a time register.
#[derive(Debug, Default, Clone)]
struct TableMap {
    /// `mapped[a]` for `a` in `0..mapped.len()`; the length is the extent of the map.
    mapped: Vec<bool>,
}

impl TableMap {
    fn mark(&mut self, address: u16, width: u16) {
        let end = usize::from(address) + usize::from(width);
        if self.mapped.len() < end {
            self.mapped.resize(end, false);
        }
        for m in &mut self.mapped[usize::from(address)..end] {
            *m = true;
        }
    }
}

/// What the device took at its last sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleStamp {
    /// Sample index (0 = first sample after start).
    pub index: u64,
    /// Sample time, Unix seconds.
    pub unix_s: i64,
}

#[derive(Debug)]
struct Image {
    /// Per table (see [`Function::index`]), one u16 per address of the map extent; bits as 0/1.
    tables: [Vec<u16>; 4],
    stamp: Option<SampleStamp>,
}

/// The registers of one point: table, first address, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterSpan {
    /// Table.
    pub function: Function,
    /// First address.
    pub address: u16,
    /// Registers (or bits).
    pub width: u16,
}

impl RegisterSpan {
    /// True if a read of `quantity` from `address` on `function` touches this span.
    #[must_use]
    pub fn touched_by(&self, function: Function, address: u16, quantity: u16) -> bool {
        let (start, end) = (
            usize::from(address),
            usize::from(address) + usize::from(quantity),
        );
        let a = usize::from(self.address);
        self.function == function && start < a + usize::from(self.width) && a < end
    }
}

/// The transport-level faults active at the last sample tick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineFaults {
    /// Exceptions answered instead of data: the code and, for one point, its table and range.
    pub exceptions: Vec<(Exception, Option<RegisterSpan>)>,
    /// Reply delay (wall time).
    pub delay: Option<Duration>,
    /// Random bytes sent before each reply (serial line).
    pub garbage: Option<usize>,
    /// Replies with a wrong CRC (serial line).
    pub bad_crc: bool,
}

/// Everything a device is built from.
#[derive(Debug)]
pub struct DeviceSetup<'a> {
    /// Device name.
    pub name: &'a str,
    /// Unit id.
    pub unit: u8,
    /// Register map.
    pub profile: &'a Profile,
    /// Reads of holes answer exception 02.
    pub strict_map: bool,
    /// Scenario seed.
    pub seed: u64,
    /// What the status points read.
    pub status_points: StatusPoints,
    /// Points following a channel.
    pub channels: &'a BTreeMap<String, ChannelRef>,
    /// The scenario's faults aimed at this device.
    pub faults: Vec<FaultSpec>,
    /// The scenario's physics.
    pub physics: Arc<Physics>,
    /// Seconds between samples.
    pub interval_s: i64,
}

/// A simulated Modbus slave.
#[derive(Debug)]
pub struct ModbusDevice {
    name: String,
    unit: u8,
    strict_map: bool,
    points: Vec<LivePoint>,
    /// Distinct sample-time registers: table, address, word order.
    times: Vec<(Function, u16, WordOrder)>,
    maps: [TableMap; 4],
    image: Mutex<Image>,
    online: AtomicBool,
    faults: Vec<FaultSpec>,
    physics: Arc<Physics>,
    interval_s: i64,
    line: Mutex<LineFaults>,
    dropout_id: u64,
    garbage_id: u64,
    garbage_count: AtomicU64,
}

impl ModbusDevice {
    /// A device named `name` with `profile`'s map and default series seeded by `seed`: no
    /// physics, no faults (the first simulator's device).
    #[must_use]
    pub fn new(name: &str, unit: u8, profile: &Profile, strict_map: bool, seed: u64) -> Self {
        Self::build(DeviceSetup {
            name,
            unit,
            profile,
            strict_map,
            seed,
            status_points: StatusPoints::Random,
            channels: &BTreeMap::new(),
            faults: Vec::new(),
            physics: Arc::new(Physics::default()),
            interval_s: 1,
        })
    }

    /// A device from its full setup.
    #[must_use]
    pub fn build(setup: DeviceSetup<'_>) -> Self {
        let DeviceSetup {
            name,
            unit,
            profile,
            strict_map,
            seed,
            status_points,
            channels,
            faults,
            physics,
            interval_s,
        } = setup;
        let mut maps: [TableMap; 4] = Default::default();
        let mut times: Vec<(Function, u16, WordOrder)> = Vec::new();
        let points = profile
            .points
            .iter()
            .map(|p| {
                maps[p.function.index()].mark(p.address, p.width());
                if let Some((t, order)) = p.time {
                    maps[p.function.index()].mark(t, 2);
                    if !times.iter().any(|&(f, a, _)| f == p.function && a == t) {
                        times.push((p.function, t, order));
                    }
                }
                let is_status = p.quantity == Quantity::Status && !p.function.is_bits();
                let source = if let Some(map) = channels.get(&p.name) {
                    Source::Channel(Reader::new(map.clone(), seed, name, &p.name))
                } else if is_status {
                    Source::Status(match status_points {
                        StatusPoints::Random => Some(Series::new(
                            seed,
                            name,
                            &p.name,
                            Quantity::Status.behaviour(),
                        )),
                        StatusPoints::Clear => None,
                    })
                } else {
                    let behaviour = match (p.function, p.data_type) {
                        (Function::Coil, _) => COIL_BEHAVIOUR,
                        (_, DataType::Bool) => Quantity::Status.behaviour(),
                        _ => p.quantity.behaviour(),
                    };
                    Source::Series(Series::new(seed, name, &p.name, behaviour))
                };
                let numeric = p.data_type != DataType::Bool && !p.function.is_bits();
                let point_faults = faults
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.applies_to(&p.name))
                    .filter(|(_, f)| match f.action {
                        Action::Stuck | Action::Spike { .. } | Action::Drift { .. } => numeric,
                        Action::StatusFlag { .. } => is_status,
                        _ => false,
                    })
                    .map(|(i, _)| i)
                    .collect();
                LivePoint {
                    source,
                    point: p.clone(),
                    faults: point_faults,
                }
            })
            .collect();
        let tables = std::array::from_fn(|i| vec![0; maps[i].mapped.len()]);
        Self {
            name: name.to_owned(),
            unit,
            strict_map,
            points,
            times,
            maps,
            image: Mutex::new(Image {
                tables,
                stamp: None,
            }),
            online: AtomicBool::new(true),
            faults,
            physics,
            interval_s: interval_s.max(1),
            line: Mutex::new(LineFaults::default()),
            dropout_id: series_id(seed, name, DROPOUT_SERIES),
            garbage_id: series_id(seed, name, GARBAGE_SERIES),
            garbage_count: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Image> {
        // Every update completes before the guard drops; a poisoned lock still holds an image.
        self.image
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_line(&self) -> MutexGuard<'_, LineFaults> {
        self.line
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Device name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Unit id.
    #[must_use]
    pub const fn unit(&self) -> u8 {
        self.unit
    }

    /// Whether the device answers.
    #[must_use]
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::SeqCst)
    }

    /// Makes the device answer (true) or stay silent (false). Returns the previous state.
    pub fn set_online(&self, online: bool) -> bool {
        self.online.swap(online, Ordering::SeqCst)
    }

    /// The last sample taken, if any.
    #[must_use]
    pub fn last_sample(&self) -> Option<SampleStamp> {
        self.lock().stamp
    }

    /// The line faults in force (set at each sample tick).
    #[must_use]
    pub fn line_faults(&self) -> LineFaults {
        self.lock_line().clone()
    }

    /// `n` random bytes of line noise (seeded; each call gives new bytes).
    #[must_use]
    pub fn garbage(&self, n: usize) -> Vec<u8> {
        let start = self.garbage_count.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| {
                let bits = fault_bits(
                    self.garbage_id,
                    start.wrapping_mul(1024).wrapping_add(i as u64),
                );
                bits.to_le_bytes()[0]
            })
            .collect()
    }

    /// The fault-free value of point `lp` at sample `k`.
    fn reading(&self, lp: &LivePoint, k: u64) -> f64 {
        match &lp.source {
            Source::Series(s) => s.value(k),
            Source::Status(Some(s)) => s.value(k),
            Source::Status(None) => 0.0,
            Source::Channel(r) => {
                let t_s = i64::try_from(k)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(self.interval_s);
                #[allow(clippy::cast_precision_loss)] // seconds since the start ≪ 2^53
                let t = t_s as f64;
                r.value(&self.physics, k, t)
            }
        }
    }

    /// The value of point `lp` at `tick`, faults applied.
    fn value(&self, lp: &LivePoint, tick: Tick) -> f64 {
        let active = |i: &&usize| self.faults[**i].active_at(tick.rel_s);
        let flag = lp
            .faults
            .iter()
            .filter(active)
            .find_map(|&i| match self.faults[i].action {
                Action::StatusFlag { state } => Some(state.unwrap_or(DEFAULT_MODBUS_FLAG)),
                _ => None,
            });
        if let Some(state) = flag {
            #[allow(clippy::cast_precision_loss)] // a small flag value
            return state as f64;
        }
        faulted_value(
            lp.faults.iter().map(|&i| &self.faults[i]),
            tick.index,
            tick.rel_s,
            self.interval_s,
            &|k| self.reading(lp, k),
        )
    }

    /// Sets the line faults for `rel_s`.
    fn update_line(&self, rel_s: i64) {
        let mut line = LineFaults::default();
        for f in self.faults.iter().filter(|f| f.active_at(rel_s)) {
            match f.action {
                Action::Exception(e) => {
                    let range = f.point.as_ref().and_then(|name| {
                        self.points
                            .iter()
                            .find(|lp| &lp.point.name == name)
                            .map(|lp| RegisterSpan {
                                function: lp.point.function,
                                address: lp.point.address,
                                width: lp.point.width(),
                            })
                    });
                    line.exceptions.push((e.into(), range));
                }
                Action::Slow(d) => line.delay = Some(d),
                Action::Garbage { bytes } => line.garbage = Some(bytes),
                Action::BadCrc => line.bad_crc = true,
                _ => {}
            }
        }
        *self.lock_line() = line;
    }

    /// Takes the sample of `tick`: sets the line faults, computes every point, swaps the image
    /// atomically, and returns the truth (one entry per point, whether or not anyone reads it).
    /// A dropped sample (an active `dropout`) leaves the image and returns nothing.
    pub fn sample(&self, tick: Tick) -> Vec<TrueSample> {
        self.update_line(tick.rel_s);
        let active = || self.faults.iter().filter(|f| f.active_at(tick.rel_s));
        let dropped = active().any(|f| match f.action {
            Action::Dropout { probability } => uniform(self.dropout_id, tick.index) < probability,
            _ => false,
        });
        if dropped {
            return Vec::new();
        }
        let skew: i64 = active()
            .map(|f| match f.action {
                Action::ClockSkew { offset_s } => offset_s,
                _ => 0,
            })
            .sum();
        let device_s = tick.unix_s.saturating_add(skew);
        let true_ns = tick.unix_s.saturating_mul(NANOS_PER_SEC);
        let device_ns = device_s.saturating_mul(NANOS_PER_SEC);
        let mut truth = Vec::with_capacity(self.points.len());
        let mut writes = Vec::with_capacity(self.points.len() * 2);
        for lp in self.points.iter().filter(|lp| !lp.point.writable) {
            let p = &lp.point;
            let raw =
                RawValue::from_engineering(p.data_type, self.value(lp, tick), p.scale, p.offset);
            match (raw, p.bit) {
                (RawValue::Bool(b), Some(bit)) => {
                    writes.push(Write::Bit(p.function, p.address, bit, b));
                }
                (RawValue::Bool(b), None) => {
                    writes.push(Write::Word(p.function, p.address, u16::from(b)));
                }
                _ => {
                    let regs = to_registers(&raw.be_bytes(), p.word_order);
                    for (a, r) in (p.address..).zip(regs) {
                        writes.push(Write::Word(p.function, a, r));
                    }
                }
            }
            truth.push(TrueSample {
                device: self.name.clone(),
                point: p.name.clone(),
                // A skewed clock shows only through the time registers.
                ts_ns: if p.time.is_some() { device_ns } else { true_ns },
                value: raw.engineering(p.scale, p.offset),
            });
        }
        // The time registers hold a u32 of Unix seconds; a clock past 2106 saturates.
        let unix_u32 = u32::try_from(device_s.max(0)).unwrap_or(u32::MAX);
        for &(f, a, order) in &self.times {
            let [hi, lo] = time_registers(unix_u32, order);
            writes.push(Write::Word(f, a, hi));
            writes.push(Write::Word(f, a + 1, lo));
        }
        let mut image = self.lock();
        for w in writes {
            match w {
                Write::Word(f, a, v) => image.tables[f.index()][usize::from(a)] = v,
                Write::Bit(f, a, bit, on) => {
                    let r = &mut image.tables[f.index()][usize::from(a)];
                    *r = (*r & !(1 << bit)) | (u16::from(on) << bit);
                }
            }
        }
        image.stamp = Some(SampleStamp {
            index: tick.index,
            unix_s: device_s,
        });
        truth
    }

    /// Takes a write of `values` (coils as 0/1) to `function` from `address`: FC 05 / 15 on
    /// coils, FC 06 / 16 on holding registers. Ignores the online state, as [`Self::read`].
    ///
    /// # Errors
    /// 01 for a table that cannot be written (inputs); an injected whole-device exception; 02
    /// when an address written is not part of a `writable` point (application protocol V1.1b3
    /// §6.5/6.6/6.12: "starting address … invalid").
    pub fn write(&self, function: Function, address: u16, values: &[u16]) -> Result<(), Exception> {
        if !matches!(function, Function::Coil | Function::Holding) {
            return Err(Exception::IllegalFunction);
        }
        if let Some((e, _)) = self
            .lock_line()
            .exceptions
            .iter()
            .find(|(_, r)| r.is_none())
        {
            return Err(*e);
        }
        let end = u32::from(address) + u32::try_from(values.len()).unwrap_or(u32::MAX);
        let writable = |a: u32| {
            self.points.iter().any(|lp| {
                let p = &lp.point;
                p.writable
                    && p.function == function
                    && (u32::from(p.address)..u32::from(p.address) + u32::from(p.width()))
                        .contains(&a)
            })
        };
        if values.is_empty() || !(u32::from(address)..end).all(writable) {
            return Err(Exception::IllegalDataAddress);
        }
        let mut image = self.lock();
        let table = &mut image.tables[function.index()];
        for (a, v) in (usize::from(address)..).zip(values) {
            table[a] = if function.is_bits() {
                u16::from(*v != 0)
            } else {
                *v
            };
        }
        Ok(())
    }

    /// The module lost power and came back: every writable coil and register is 0 again (relay
    /// modules start with their relays released).
    pub fn power_cycle(&self) {
        let mut image = self.lock();
        for lp in self.points.iter().filter(|lp| lp.point.writable) {
            let p = &lp.point;
            let start = usize::from(p.address);
            let table = &mut image.tables[p.function.index()];
            for r in &mut table[start..start + usize::from(p.width())] {
                *r = 0;
            }
        }
    }

    /// What a writable register or coil holds now (coils as 0/1): the state a relay or setting
    /// is in, for tests. `None` outside the table's map.
    #[must_use]
    pub fn output(&self, function: Function, address: u16) -> Option<u16> {
        self.lock().tables[function.index()]
            .get(usize::from(address))
            .copied()
    }

    /// Answers a read of `quantity` registers/bits of `function` from `address`: the values
    /// (bits as 0/1) or the exception a device would send. Ignores the online state (the
    /// transports check it, since an offline device sends nothing at all).
    ///
    /// # Errors
    /// 03 for a quantity outside 1-125/1-2000; an injected exception (02, 04, 06) when one is
    /// active for the whole device or for a point the range touches; 02 for a range beyond the
    /// map, or touching an unmapped address when the device is `strict_map`.
    pub fn read(
        &self,
        function: Function,
        address: u16,
        quantity: u16,
    ) -> Result<Vec<u16>, Exception> {
        let max = if function.is_bits() {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        };
        if quantity == 0 || quantity > max {
            return Err(Exception::IllegalDataValue);
        }
        let start = usize::from(address);
        let end = start + usize::from(quantity);
        for (e, range) in &self.lock_line().exceptions {
            let hit = range.is_none_or(|r| r.touched_by(function, address, quantity));
            if hit {
                return Err(*e);
            }
        }
        let map = &self.maps[function.index()].mapped;
        if end > map.len() {
            return Err(Exception::IllegalDataAddress);
        }
        if self.strict_map && !map[start..end].iter().all(|&m| m) {
            return Err(Exception::IllegalDataAddress);
        }
        Ok(self.lock().tables[function.index()][start..end].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Point;

    fn point(name: &str, function: Function, address: u16, data_type: DataType) -> Point {
        Point {
            name: name.into(),
            function,
            address,
            data_type,
            word_order: WordOrder::Abcd,
            bit: None,
            scale: 1.0,
            offset: 0.0,
            unit: String::new(),
            quantity: Quantity::Other,
            time: Some((10, WordOrder::Cdab)),
            writable: false,
        }
    }

    fn device(strict: bool) -> ModbusDevice {
        let profile = Profile {
            name: "p".into(),
            points: vec![
                point("a", Function::Input, 0, DataType::U32),
                point("b", Function::Input, 4, DataType::U16),
            ],
        };
        ModbusDevice::new("d", 1, &profile, strict, 1)
    }

    #[test]
    fn sample_writes_values_and_time_together() {
        let d = device(false);
        let truth = d.sample(Tick {
            index: 0,
            rel_s: 0,
            unix_s: 1_764_410_000,
        });
        let regs = d.read(Function::Input, 0, 12).expect("read");
        let a = truth[0].value;
        // u32 ABCD at 0-1, u16 at 4, time u32 CDAB at 10-11 (1764410000 = 0x692AC290).
        assert_eq!(f64::from(u32::from(regs[0]) << 16 | u32::from(regs[1])), a);
        assert_eq!(f64::from(regs[4]), truth[1].value);
        assert_eq!(&regs[10..12], &[0xC290, 0x692A]);
        assert_eq!(truth[0].ts_ns, 1_764_410_000 * NANOS_PER_SEC);
        // Holes read as zero.
        assert_eq!(&regs[2..4], &[0, 0]);
    }

    #[test]
    fn exceptions_follow_the_spec_order() {
        let d = device(false);
        assert_eq!(
            d.read(Function::Input, 0, 0),
            Err(Exception::IllegalDataValue)
        );
        assert_eq!(
            d.read(Function::Input, 0, 126),
            Err(Exception::IllegalDataValue)
        );
        assert_eq!(
            d.read(Function::Input, 11, 2),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(
            d.read(Function::Holding, 0, 1),
            Err(Exception::IllegalDataAddress)
        );
        assert!(d.read(Function::Input, 11, 1).is_ok());
    }

    #[test]
    fn strict_map_rejects_holes() {
        let d = device(true);
        assert!(d.read(Function::Input, 0, 2).is_ok());
        assert_eq!(
            d.read(Function::Input, 0, 5),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(
            d.read(Function::Input, 2, 1),
            Err(Exception::IllegalDataAddress)
        );
        assert!(d.read(Function::Input, 10, 2).is_ok());
    }
}
