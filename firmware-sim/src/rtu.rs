//! Modbus RTU slaves sharing one serial line: framing, CRC and the bus rules; reads (FC 01-04)
//! and the writes of writable points (FC 05, 06, 16, echoed as V1.1b3 §6.5, §6.6, §6.12 say).
//!
//! Written directly over tokio-serial rather than on tokio-modbus's RTU server because a bus
//! needs control tokio-modbus does not give: its server ends on a run of undecodable bytes and
//! always sends exceptions, while a real RS-485 slave ignores frames with a bad CRC, frames for
//! other units and broadcasts of reads, and answers only its own unit (Modbus over serial line
//! V1.02 §2.4.1, §2.5.1). Owning the framing also lets it inject the line faults a device has
//! in force ([`crate::device::LineFaults`]): random bytes before a reply, a wrong CRC, a
//! delayed reply. It does not hold register values ([`crate::device`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use crate::device::{Exception, ModbusDevice};
use crate::profile::Function;

/// Modbus over serial line V1.02 §2.5.1.1: the longest RTU frame is 256 bytes.
pub const MAX_FRAME: usize = 256;
/// Bits per RTU character: start, 8 data, parity or second stop, stop (§2.5.1).
const BITS_PER_CHAR: u64 = 11;
/// §2.5.1.1: above 19200 baud the inter-frame silence is fixed at 1.75 ms.
const FIXED_T35_ABOVE_BAUD: u32 = 19_200;
/// The fixed t3.5 above 19200 baud.
const FIXED_T35: Duration = Duration::from_micros(1750);
/// Floor of the silence that ends a partial frame. A pty (or a USB adapter) delivers bytes in
/// bursts with scheduling gaps far above t3.5, so t3.5 alone would cut frames in two.
const MIN_SILENCE: Duration = Duration::from_millis(20);
/// Length of a read request (FC 01-04): unit, function, address, quantity, CRC.
const READ_REQUEST_LEN: usize = 8;
/// Broadcast unit id: slaves act but never answer (§2.1); reads are meaningless.
const BROADCAST: u8 = 0;
/// XOR mask that spoils a reply's CRC (flips every bit of its low byte: never a valid CRC).
const CRC_SPOIL: u8 = 0xFF;

/// One reply and how it goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The bytes on the line (garbage, if any, then the frame).
    pub bytes: Vec<u8>,
    /// Wait this long before sending (a `slow` fault).
    pub delay: Option<Duration>,
}

/// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), sent low byte first (§2.5.1.2, §6.2.2).
#[must_use]
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// True if `frame` ends with the CRC of the bytes before it.
#[must_use]
pub fn crc_ok(frame: &[u8]) -> bool {
    frame.len() >= 4 && {
        let (body, tail) = frame.split_at(frame.len() - 2);
        crc16(body).to_le_bytes() == [tail[0], tail[1]]
    }
}

/// Appends the CRC to `frame`.
pub fn push_crc(frame: &mut Vec<u8>) {
    let crc = crc16(frame);
    frame.extend_from_slice(&crc.to_le_bytes());
}

/// The silence that ends a frame at `baud`: t3.5 (§2.5.1.1), never below `MIN_SILENCE`.
#[must_use]
pub fn frame_silence(baud: u32) -> Duration {
    let t35 = if baud > FIXED_T35_ABOVE_BAUD {
        FIXED_T35
    } else {
        // 3.5 characters of 11 bits: 38.5 bit times.
        Duration::from_micros(BITS_PER_CHAR * 7 * 1_000_000 / (2 * u64::from(baud.max(1))))
    };
    t35.max(MIN_SILENCE)
}

/// The slaves of one bus, by unit id.
#[derive(Debug, Clone)]
pub struct Bus {
    name: String,
    baud: u32,
    slaves: HashMap<u8, Arc<ModbusDevice>>,
}

impl Bus {
    /// A bus named `name` at `baud` with these slaves (unit ids are unique by construction in
    /// the scenario).
    #[must_use]
    pub fn new(name: &str, baud: u32, slaves: impl IntoIterator<Item = Arc<ModbusDevice>>) -> Self {
        Self {
            name: name.to_owned(),
            baud,
            slaves: slaves.into_iter().map(|d| (d.unit(), d)).collect(),
        }
    }

    /// The reply to one CRC-checked frame with the device's line faults applied, or `None` for
    /// silence.
    #[must_use]
    pub fn reply(&self, frame: &[u8]) -> Option<Reply> {
        let (&unit, rest) = frame.split_first()?;
        if unit == BROADCAST {
            return None;
        }
        let device = self.slaves.get(&unit)?;
        if !device.is_online() {
            return None;
        }
        let &fc = rest.first()?;
        let mut out = vec![unit];
        match answer(device, fc, &rest[1..rest.len().saturating_sub(2)]) {
            Ok(data) => {
                out.push(fc);
                out.extend(data);
            }
            Err(e) => {
                // §7: exception reply = function code with the high bit set, then the code.
                out.push(fc | 0x80);
                out.push(e.code());
            }
        }
        push_crc(&mut out);
        let line = device.line_faults();
        if line.bad_crc {
            let last = out.len() - 2;
            out[last] ^= CRC_SPOIL;
        }
        let bytes = match line.garbage {
            Some(n) => {
                let mut b = device.garbage(n);
                b.extend(out);
                b
            }
            None => out,
        };
        Some(Reply {
            bytes,
            delay: line.delay,
        })
    }
}

/// Write single coil (application protocol V1.1b3 §6.5).
const WRITE_SINGLE_COIL: u8 = 0x05;
/// Write single register (§6.6).
const WRITE_SINGLE_REGISTER: u8 = 0x06;
/// Write multiple registers (§6.12).
const WRITE_MULTIPLE_REGISTERS: u8 = 0x10;

/// The PDU data of a write's reply: the request's address and value (05, 06) or quantity (16)
/// echoed, once the device took the write.
fn answer_write(device: &ModbusDevice, fc: u8, data: &[u8]) -> Result<Vec<u8>, Exception> {
    let [a_hi, a_lo, w_hi, w_lo, rest @ ..] = data else {
        return Err(Exception::IllegalDataValue);
    };
    let address = u16::from_be_bytes([*a_hi, *a_lo]);
    let word = u16::from_be_bytes([*w_hi, *w_lo]);
    match fc {
        // §6.5: 0xFF00 is ON, 0x0000 OFF; any other value is exception 03.
        WRITE_SINGLE_COIL => {
            let on = match word {
                0xFF00 => 1,
                0x0000 => 0,
                _ => return Err(Exception::IllegalDataValue),
            };
            device.write(Function::Coil, address, &[on])?;
        }
        WRITE_SINGLE_REGISTER => device.write(Function::Holding, address, &[word])?,
        _ => {
            // §6.12: byte count = 2 × quantity, then the registers.
            let (&count, values) = rest.split_first().ok_or(Exception::IllegalDataValue)?;
            if word == 0
                || usize::from(count) != 2 * usize::from(word)
                || values.len() != usize::from(count)
            {
                return Err(Exception::IllegalDataValue);
            }
            let regs: Vec<u16> = values
                .chunks_exact(2)
                .map(|w| u16::from_be_bytes([w[0], w[1]]))
                .collect();
            device.write(Function::Holding, address, &regs)?;
        }
    }
    Ok(data[..4].to_vec())
}

/// The PDU data of a reply (after the function code) for function `fc` with request `data`.
fn answer(device: &ModbusDevice, fc: u8, data: &[u8]) -> Result<Vec<u8>, Exception> {
    if matches!(
        fc,
        WRITE_SINGLE_COIL | WRITE_SINGLE_REGISTER | WRITE_MULTIPLE_REGISTERS
    ) {
        return answer_write(device, fc, data);
    }
    let function = Function::from_code(fc).ok_or(Exception::IllegalFunction)?;
    let [a_hi, a_lo, n_hi, n_lo] = data else {
        return Err(Exception::IllegalDataValue);
    };
    let address = u16::from_be_bytes([*a_hi, *a_lo]);
    let quantity = u16::from_be_bytes([*n_hi, *n_lo]);
    let values = device.read(function, address, quantity)?;
    let mut out = Vec::with_capacity(1 + values.len() * 2);
    if function.is_bits() {
        // §6.1: bits packed LSB first, the last byte padded with zeros.
        let bytes: Vec<u8> = values
            .chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0_u8, |acc, (i, &b)| acc | (u8::from(b != 0) << i))
            })
            .collect();
        out.push(u8::try_from(bytes.len()).map_err(|_| Exception::IllegalDataValue)?);
        out.extend(bytes);
    } else {
        out.push(u8::try_from(values.len() * 2).map_err(|_| Exception::IllegalDataValue)?);
        for v in values {
            out.extend(v.to_be_bytes());
        }
    }
    Ok(out)
}

/// Length of the complete request at the start of `buf`, if the bytes so far form one with a
/// valid CRC. Read requests have a fixed length, so they are taken without waiting for silence.
fn complete_request(buf: &[u8]) -> Option<usize> {
    (buf.len() >= READ_REQUEST_LEN
        && Function::from_code(buf[1]).is_some()
        && crc_ok(&buf[..READ_REQUEST_LEN]))
    .then_some(READ_REQUEST_LEN)
}

/// Opens `path` at the bus's baud.
///
/// # Errors
/// The port cannot be opened.
pub fn open(path: &Path, baud: u32) -> tokio_serial::Result<SerialStream> {
    tokio_serial::new(path.to_string_lossy(), baud).open_native_async()
}

/// Serves the bus on `port` until the future is dropped or the port fails.
pub async fn serve(bus: Bus, mut port: SerialStream) {
    let silence = frame_silence(bus.baud);
    let mut buf: Vec<u8> = Vec::with_capacity(MAX_FRAME);
    let mut chunk = [0_u8; MAX_FRAME];
    loop {
        let read = if buf.is_empty() {
            Some(port.read(&mut chunk).await)
        } else {
            tokio::time::timeout(silence, port.read(&mut chunk))
                .await
                .ok()
        };
        match read {
            Some(Ok(0)) => {
                // A pty whose other side is not open yet reads 0; do not spin.
                tokio::time::sleep(silence).await;
                continue;
            }
            Some(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Some(Err(e)) => {
                tracing::error!(bus = %bus.name, error = %e, "serial read failed; bus stopped");
                return;
            }
            None => {
                // Silence: whatever is buffered is one frame. A valid frame of another
                // function gets its (exception) answer; anything else is line noise.
                if crc_ok(&buf) {
                    if let Some(reply) = bus.reply(&buf) {
                        send(&bus, &mut port, &reply).await;
                    }
                } else {
                    tracing::debug!(bus = %bus.name, bytes = buf.len(), "dropped frame with bad CRC");
                }
                buf.clear();
                continue;
            }
        }
        while let Some(len) = complete_request(&buf) {
            let frame: Vec<u8> = buf.drain(..len).collect();
            if let Some(reply) = bus.reply(&frame) {
                send(&bus, &mut port, &reply).await;
            }
        }
        if buf.len() > MAX_FRAME {
            tracing::debug!(bus = %bus.name, bytes = buf.len(), "dropped over-long frame");
            buf.clear();
        }
    }
}

async fn send(bus: &Bus, port: &mut SerialStream, reply: &Reply) {
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    if let Err(e) = port.write_all(&reply.bytes).await {
        tracing::warn!(bus = %bus.name, error = %e, "serial write failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{DataType, Point, Profile, WordOrder};
    use crate::quantity::Quantity;

    #[test]
    fn crc_matches_the_classic_vector() {
        // Read 10 holding registers from unit 1: 01 03 00 00 00 0A, CRC C5 CD (low byte first).
        let mut f = vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x0A];
        push_crc(&mut f);
        assert_eq!(f, [0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD]);
        assert!(crc_ok(&f));
        f[7] ^= 1;
        assert!(!crc_ok(&f));
    }

    #[test]
    fn silence_is_t35_with_a_floor() {
        // 9600 baud: 38.5 bits = 4.010 ms, below the 20 ms floor.
        assert_eq!(frame_silence(9600), MIN_SILENCE);
        // 300 baud: 38.5 bits = 128.333 ms.
        assert_eq!(frame_silence(300), Duration::from_micros(128_333));
    }

    fn bus() -> Bus {
        let profile = Profile {
            name: "p".into(),
            points: vec![Point {
                name: "a".into(),
                function: Function::Holding,
                address: 0,
                data_type: DataType::U16,
                word_order: WordOrder::Abcd,
                bit: None,
                scale: 1.0,
                offset: 0.0,
                unit: String::new(),
                quantity: Quantity::Other,
                time: None,
                writable: false,
            }],
        };
        let d = Arc::new(ModbusDevice::new("d", 5, &profile, false, 1));
        d.sample(crate::clock::Tick {
            index: 0,
            rel_s: 0,
            unix_s: 0,
        });
        Bus::new("b", 9600, [d])
    }

    #[test]
    fn answers_its_unit_and_ignores_others() {
        let b = bus();
        let mut req = vec![0x05, 0x03, 0x00, 0x00, 0x00, 0x01];
        push_crc(&mut req);
        let reply = b.reply(&req).expect("reply").bytes;
        assert_eq!(&reply[..3], &[0x05, 0x03, 0x02]);
        assert!(crc_ok(&reply));
        let mut other = vec![0x06, 0x03, 0x00, 0x00, 0x00, 0x01];
        push_crc(&mut other);
        assert_eq!(b.reply(&other), None);
        let mut broadcast = vec![0x00, 0x03, 0x00, 0x00, 0x00, 0x01];
        push_crc(&mut broadcast);
        assert_eq!(b.reply(&broadcast), None);
    }

    #[test]
    fn exceptions_on_the_wire() {
        let b = bus();
        // Beyond the map: 05 83 02 + CRC.
        let mut req = vec![0x05, 0x03, 0x00, 0x01, 0x00, 0x01];
        push_crc(&mut req);
        let reply = b.reply(&req).expect("reply").bytes;
        assert_eq!(&reply[..3], &[0x05, 0x83, 0x02]);
        // Write single register (06) to a register that is not writable: 05 86 02.
        let mut req = vec![0x05, 0x06, 0x00, 0x00, 0x00, 0x01];
        push_crc(&mut req);
        let reply = b.reply(&req).expect("reply").bytes;
        assert_eq!(&reply[..3], &[0x05, 0x86, 0x02]);
        // A function the simulator does not serve (0x2B, encapsulated interface): 05 AB 01.
        let mut req = vec![0x05, 0x2B, 0x0E, 0x01, 0x00];
        push_crc(&mut req);
        let reply = b.reply(&req).expect("reply").bytes;
        assert_eq!(&reply[..3], &[0x05, 0xAB, 0x01]);
    }

    #[test]
    fn offline_slave_is_silent() {
        let b = bus();
        b.slaves[&5].set_online(false);
        let mut req = vec![0x05, 0x03, 0x00, 0x00, 0x00, 0x01];
        push_crc(&mut req);
        assert_eq!(b.reply(&req), None);
    }
}
