//! One simulated Modbus slave: its register image, its samples and its answers to reads.
//!
//! Owns [`ModbusDevice`]: per sample tick every point gets a new value and the whole image
//! (values and sample-time registers) is swapped under one lock, and a read is answered under
//! the same lock, so a request never mixes two samples. It also owns the Modbus exception rules
//! for reads (application protocol V1.1b3 §6.1-6.4, §7). It does not speak any transport
//! ([`crate::tcp`], [`crate::rtu`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::clock::NANOS_PER_SEC;
use crate::encode::{time_registers, to_registers, RawValue};
use crate::profile::{DataType, Function, Point, Profile, WordOrder};
use crate::quantity::{Behaviour, Quantity};
use crate::signal::Series;
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

/// Modbus exception codes the simulator answers with (application protocol §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exception {
    /// 01: function not supported.
    IllegalFunction,
    /// 02: the address range is not (entirely) mapped.
    IllegalDataAddress,
    /// 03: quantity out of 1-125 (registers) or 1-2000 (bits).
    IllegalDataValue,
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
            Self::GatewayTargetFailed => 0x0B,
        }
    }
}

/// A point with its value series.
#[derive(Debug)]
struct LivePoint {
    point: Point,
    series: Series,
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
}

impl ModbusDevice {
    /// A device named `name` with `profile`'s map, its values seeded by `seed`.
    #[must_use]
    pub fn new(name: &str, unit: u8, profile: &Profile, strict_map: bool, seed: u64) -> Self {
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
                let behaviour = match (p.function, p.data_type) {
                    (Function::Coil, _) => COIL_BEHAVIOUR,
                    (_, DataType::Bool) => Quantity::Status.behaviour(),
                    _ => p.quantity.behaviour(),
                };
                LivePoint {
                    series: Series::new(seed, name, &p.name, behaviour),
                    point: p.clone(),
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
        }
    }

    fn lock(&self) -> MutexGuard<'_, Image> {
        // Every update completes before the guard drops; a poisoned lock still holds an image.
        self.image
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

    /// Takes sample `index` at `unix_s`: computes every point, swaps the image atomically, and
    /// returns the truth (one entry per point, whether or not anyone reads it).
    pub fn sample(&self, index: u64, unix_s: i64) -> Vec<TrueSample> {
        let ts_ns = unix_s.saturating_mul(NANOS_PER_SEC);
        let mut truth = Vec::with_capacity(self.points.len());
        let mut writes = Vec::with_capacity(self.points.len() * 2);
        for lp in &self.points {
            let p = &lp.point;
            let raw =
                RawValue::from_engineering(p.data_type, lp.series.value(index), p.scale, p.offset);
            match (raw, p.bit) {
                (RawValue::Bool(b), Some(bit)) => {
                    writes.push(Write::Bit(p.function, p.address, bit, b))
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
                ts_ns,
                value: raw.engineering(p.scale, p.offset),
            });
        }
        // The time registers hold a u32 of Unix seconds; a clock past 2106 saturates.
        let unix_u32 = u32::try_from(unix_s.max(0)).unwrap_or(u32::MAX);
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
        image.stamp = Some(SampleStamp { index, unix_s });
        truth
    }

    /// Answers a read of `quantity` registers/bits of `function` from `address`: the values
    /// (bits as 0/1) or the exception a device would send. Ignores the online state (the
    /// transports check it, since an offline device sends nothing at all).
    ///
    /// # Errors
    /// 03 for a quantity outside 1-125/1-2000; 02 for a range beyond the map, or touching an
    /// unmapped address when the device is `strict_map`.
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
        let truth = d.sample(0, 1_764_410_000);
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
