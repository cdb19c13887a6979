//! Modbus RTU framing: building read and write requests and checking a reply against its
//! request.
//!
//! Owns the byte layout of RTU frames (Modbus over serial line V1.02 §2.5.1.1), CRC-16/Modbus
//! (V1.02 §6.2.2), the PDU of the four read functions (Modbus application protocol V1.1b3
//! §6.1–6.4), of the three writes and their echoes (§6.5, §6.6, §6.12: [`write_request`],
//! [`check_echo`]) and of exception replies (V1.1b3 §7), and the inter-frame silence t3.5 derived from
//! the line's baud rate. It does no I/O ([`super::rtu_link`]) and knows nothing of points
//! ([`super::plan`]).
//!
//! Why our own framing: tokio-modbus 0.17's RTU client checks the CRC, the unit id and the
//! function code of a reply, but not that its byte count matches the quantity asked for (only a
//! `debug_assert`), and RTU has no transaction id, so a late reply to an earlier request of the
//! same shape is indistinguishable on the wire. [`check_reply`] checks everything a reply can be
//! checked against; [`super::rtu_link`] handles the timing that the wire cannot tell.

use std::fmt;
use std::time::Duration;

use super::config::Function;
use super::write::WriteTarget;

/// Function code of write single coil (V1.1b3 §6.5).
pub const WRITE_SINGLE_COIL: u8 = 0x05;
/// Function code of write single register (V1.1b3 §6.6).
pub const WRITE_SINGLE_REGISTER: u8 = 0x06;
/// Function code of write multiple registers (V1.1b3 §6.12).
pub const WRITE_MULTIPLE_REGISTERS: u8 = 0x10;
/// Coil ON as written by FC 05 (V1.1b3 §6.5: "FF 00 hex requests the output to be ON").
const COIL_ON: u16 = 0xFF00;
/// Length of a write's reply: unit, function, address, value or quantity, CRC (§6.5, §6.6,
/// §6.12: the reply echoes the request's first four data bytes).
const ECHO_FRAME_LEN: usize = HEADER_LEN + 4 + CRC_LEN;

/// Largest RTU frame: V1.02 §2.5.1.1, "the maximum size of a Modbus RTU frame is 256 bytes".
pub const MAX_FRAME_LEN: usize = 256;
/// Unit id, function code (V1.02 §2.5.1.1).
const HEADER_LEN: usize = 2;
/// CRC-16 at the end of every frame, low byte first (V1.02 §2.5.1.2).
pub const CRC_LEN: usize = 2;
/// Length of an exception reply: unit, function | 0x80, exception code, CRC (V1.1b3 §7).
const EXCEPTION_FRAME_LEN: usize = HEADER_LEN + 1 + CRC_LEN;
/// The bit set in the function code of an exception reply (V1.1b3 §7).
const EXCEPTION_FLAG: u8 = 0x80;
/// Bits on the wire per RTU character: 1 start, 8 data, 1 parity (or a second stop bit when
/// there is no parity), 1 stop (V1.02 §2.5.1).
const BITS_PER_CHAR: u32 = 11;
/// Above this baud rate the spec fixes t3.5 instead of deriving it (V1.02 §2.5.1.1).
const FIXED_TIMING_ABOVE_BAUD: u32 = 19_200;
/// t3.5 for baud rates above 19 200 (V1.02 §2.5.1.1: "a value of 1.750 ms for inter-frame
/// delay (t3.5)").
pub const T35_FAST_LINE: Duration = Duration::from_micros(1_750);

/// The silent interval that separates two RTU frames on a line of `baud`: 3.5 character times,
/// or the fixed 1.75 ms above 19 200 baud (V1.02 §2.5.1.1).
#[must_use]
pub fn t35(baud: u32) -> Duration {
    if baud == 0 || baud > FIXED_TIMING_ABOVE_BAUD {
        return T35_FAST_LINE;
    }
    // 3.5 characters × 11 bits / baud, in microseconds, rounded up.
    let micros = (35 * u64::from(BITS_PER_CHAR) * 1_000_000).div_ceil(10 * u64::from(baud));
    Duration::from_micros(micros)
}

/// CRC-16/Modbus: polynomial 0xA001 (reflected 0x8005), initial value 0xFFFF (V1.02 §6.2.2).
#[must_use]
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// What a read request asked, to check its reply against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// Unit (slave) id the request went to.
    pub unit: u8,
    /// Register table read.
    pub function: Function,
    /// First address.
    pub start: u16,
    /// Registers or bits asked for.
    pub count: u16,
}

impl Expect {
    /// The byte count a correct reply carries: 2 per register (V1.1b3 §6.3/6.4), one bit per
    /// coil or input rounded up to whole bytes (V1.1b3 §6.1/6.2).
    #[must_use]
    pub fn byte_count(&self) -> usize {
        if self.function.is_bits() {
            usize::from(self.count).div_ceil(8)
        } else {
            2 * usize::from(self.count)
        }
    }

    /// The 8-byte RTU read request (V1.1b3 §6.1–6.4 PDU, V1.02 §2.5.1.1 frame).
    #[must_use]
    pub fn request(&self) -> [u8; 8] {
        let [a_hi, a_lo] = self.start.to_be_bytes();
        let [q_hi, q_lo] = self.count.to_be_bytes();
        let body = [self.unit, self.function.code(), a_hi, a_lo, q_hi, q_lo];
        let [c_lo, c_hi] = crc16(&body).to_le_bytes();
        [body[0], body[1], a_hi, a_lo, q_hi, q_lo, c_lo, c_hi]
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unit {} FC {:02} {}+{}",
            self.unit,
            self.function.code(),
            self.start,
            self.count
        )
    }
}

/// What a write request asked, to check its echo against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    /// Unit (slave) id the request went to.
    pub unit: u8,
    /// 05, 06 or 16.
    pub function: u8,
    /// The first address written.
    pub address: u16,
    /// The value (05: 0xFF00 or 0; 06: the register) or, for 16, the quantity of registers.
    pub word: u16,
}

/// The RTU frame of a write to `unit` and the echo that confirms it (V1.1b3 §6.5, §6.6, §6.12;
/// V1.02 §2.5.1.1 frame). A FC 16 of more registers than a frame holds is not built by the
/// gateway: writable points are at most 4 registers wide.
#[must_use]
pub fn write_request(unit: u8, target: &WriteTarget) -> (Echo, Vec<u8>) {
    let (function, address, word, data): (u8, u16, u16, Vec<u8>) = match target {
        WriteTarget::Coil { address, on } => {
            let v = if *on { COIL_ON } else { 0 };
            (WRITE_SINGLE_COIL, *address, v, Vec::new())
        }
        WriteTarget::Register { address, value } => {
            (WRITE_SINGLE_REGISTER, *address, *value, Vec::new())
        }
        WriteTarget::Registers { address, values } => {
            let n = u16::try_from(values.len()).unwrap_or(u16::MAX);
            let mut data = vec![u8::try_from(values.len() * 2).unwrap_or(u8::MAX)];
            data.extend(values.iter().flat_map(|v| v.to_be_bytes()));
            (WRITE_MULTIPLE_REGISTERS, *address, n, data)
        }
    };
    let mut frame = vec![unit, function];
    frame.extend(address.to_be_bytes());
    frame.extend(word.to_be_bytes());
    frame.extend(data);
    let crc = crc16(&frame);
    frame.extend(crc.to_le_bytes());
    (
        Echo {
            unit,
            function,
            address,
            word,
        },
        frame,
    )
}

/// Check one complete frame against the write it should confirm: CRC, unit, function (or its
/// exception), and the echoed address and value or quantity.
///
/// # Errors
/// The first check the frame fails (a wrong echo is [`Mismatch::Echo`]).
pub fn check_echo(frame: &[u8], echo: &Echo) -> Result<Answer, Mismatch> {
    if frame.len() < EXCEPTION_FRAME_LEN || frame.len() > MAX_FRAME_LEN {
        return Err(Mismatch::Length);
    }
    if crc16(frame) != 0 {
        return Err(Mismatch::BadCrc);
    }
    if frame[0] != echo.unit {
        return Err(Mismatch::Unit(frame[0]));
    }
    if frame[1] == echo.function | EXCEPTION_FLAG {
        if frame.len() != EXCEPTION_FRAME_LEN {
            return Err(Mismatch::Length);
        }
        return Ok(Answer::Exception(frame[2]));
    }
    if frame[1] != echo.function {
        return Err(Mismatch::Function(frame[1]));
    }
    if frame.len() != ECHO_FRAME_LEN {
        return Err(Mismatch::Length);
    }
    let address = u16::from_be_bytes([frame[2], frame[3]]);
    let word = u16::from_be_bytes([frame[4], frame[5]]);
    if (address, word) != (echo.address, echo.word) {
        return Err(Mismatch::Echo);
    }
    Ok(Answer::Written)
}

/// A reply that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// FC 03/04 registers, exactly as many as asked.
    Registers(Vec<u16>),
    /// FC 01/02 bits, exactly as many as asked (the padding bits of the last byte dropped).
    Bits(Vec<bool>),
    /// An exception reply with this code (V1.1b3 §7).
    Exception(u8),
    /// FC 05/06/16: the write's echo ([`check_echo`]).
    Written,
}

/// Why a complete frame is not the reply to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// The CRC does not match the frame (line noise or a frame boundary in the wrong place).
    BadCrc,
    /// Another unit answered.
    Unit(u8),
    /// Another function (or its exception) answered.
    Function(u8),
    /// The byte count is not the one the request's quantity implies.
    ByteCount {
        /// Byte count in the frame.
        got: usize,
        /// Byte count the request implies.
        want: usize,
    },
    /// The frame's length does not match its own header.
    Length,
    /// A write's reply that does not repeat the address and value (or quantity) written.
    Echo,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadCrc => write!(f, "bad CRC"),
            Self::Unit(u) => write!(f, "answer from unit {u}"),
            Self::Function(c) => write!(f, "answer for function 0x{c:02X}"),
            Self::ByteCount { got, want } => write!(f, "byte count {got}, expected {want}"),
            Self::Length => write!(f, "frame length does not match its header"),
            Self::Echo => write!(f, "the reply does not echo the address and value written"),
        }
    }
}

/// Bytes that cannot start a reply: a function code other than 01..04, 05, 06, 16 or an
/// exception (noise, or a frame we are not in step with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAReply;

/// The length of the frame at the start of `buf` as its header announces it: `Ok(None)` when
/// more bytes are needed to tell.
///
/// # Errors
/// [`NotAReply`] when the header is not that of a read reply or an exception.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, NotAReply> {
    let Some(&function) = buf.get(1) else {
        return Ok(None);
    };
    if function & EXCEPTION_FLAG != 0 {
        return Ok(Some(EXCEPTION_FRAME_LEN));
    }
    if matches!(
        function,
        WRITE_SINGLE_COIL | WRITE_SINGLE_REGISTER | WRITE_MULTIPLE_REGISTERS
    ) {
        return Ok(Some(ECHO_FRAME_LEN));
    }
    if !(1..=4).contains(&function) {
        return Err(NotAReply);
    }
    Ok(buf
        .get(HEADER_LEN)
        .map(|&n| HEADER_LEN + 1 + usize::from(n) + CRC_LEN))
}

/// Check one complete frame against the request it should answer: CRC, unit, function (or its
/// exception), byte count = 2 × registers or ⌈bits / 8⌉, and length. Only a frame passing all
/// of these is an [`Answer`].
///
/// # Errors
/// The first check the frame fails.
pub fn check_reply(frame: &[u8], expect: &Expect) -> Result<Answer, Mismatch> {
    if frame.len() < EXCEPTION_FRAME_LEN || frame.len() > MAX_FRAME_LEN {
        return Err(Mismatch::Length);
    }
    // The CRC over the whole frame including its own CRC bytes is 0 (V1.02 §6.2.2).
    if crc16(frame) != 0 {
        return Err(Mismatch::BadCrc);
    }
    if frame[0] != expect.unit {
        return Err(Mismatch::Unit(frame[0]));
    }
    let code = expect.function.code();
    if frame[1] == code | EXCEPTION_FLAG {
        if frame.len() != EXCEPTION_FRAME_LEN {
            return Err(Mismatch::Length);
        }
        return Ok(Answer::Exception(frame[2]));
    }
    if frame[1] != code {
        return Err(Mismatch::Function(frame[1]));
    }
    let got = usize::from(frame[2]);
    let want = expect.byte_count();
    if got != want {
        return Err(Mismatch::ByteCount { got, want });
    }
    if frame.len() != HEADER_LEN + 1 + got + CRC_LEN {
        return Err(Mismatch::Length);
    }
    let data = &frame[HEADER_LEN + 1..HEADER_LEN + 1 + got];
    if expect.function.is_bits() {
        // Coil 0 of the request is the least significant bit of the first byte (V1.1b3 §6.1).
        let bits = (0..usize::from(expect.count))
            .map(|i| data[i / 8] >> (i % 8) & 1 == 1)
            .collect();
        Ok(Answer::Bits(bits))
    } else {
        let regs = data
            .chunks_exact(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .collect();
        Ok(Answer::Registers(regs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_crc(mut f: Vec<u8>) -> Vec<u8> {
        let crc = crc16(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        f
    }

    const HOLDING_1_AT_0: Expect = Expect {
        unit: 1,
        function: Function::Holding,
        start: 0,
        count: 1,
    };

    #[test]
    fn crc_and_request_match_known_frames() {
        // The frame every Modbus tool shows for "unit 1, read 1 holding register at 0":
        // 01 03 00 00 00 01 84 0A.
        assert_eq!(
            HOLDING_1_AT_0.request(),
            [0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0x84, 0x0A]
        );
        // V1.1b3 §6.3 example, unit 17 (0x11): read holding 107..=109 → 11 03 00 6B 00 03 76 87.
        let e = Expect {
            unit: 0x11,
            function: Function::Holding,
            start: 0x6B,
            count: 3,
        };
        assert_eq!(
            e.request(),
            [0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87]
        );
    }

    #[test]
    fn a_matching_register_reply_is_accepted() {
        // V1.1b3 §6.3 example reply: registers 0x022B, 0x0000, 0x0064.
        let e = Expect {
            unit: 0x11,
            function: Function::Holding,
            start: 0x6B,
            count: 3,
        };
        let f = with_crc(vec![0x11, 0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64]);
        assert_eq!(frame_len(&f), Ok(Some(f.len())));
        assert_eq!(
            check_reply(&f, &e),
            Ok(Answer::Registers(vec![0x022B, 0, 0x64]))
        );
    }

    #[test]
    fn a_matching_coil_reply_is_accepted() {
        // V1.1b3 §6.1 example: coils 20..=38 (19 bits) → CD 6B 05.
        let e = Expect {
            unit: 1,
            function: Function::Coil,
            start: 19,
            count: 19,
        };
        let f = with_crc(vec![0x01, 0x01, 0x03, 0xCD, 0x6B, 0x05]);
        let Ok(Answer::Bits(bits)) = check_reply(&f, &e) else {
            panic!("rejected a correct coil reply");
        };
        assert_eq!(bits.len(), 19);
        // 0xCD = 1100 1101: coils 20..=27 are 1,0,1,1,0,0,1,1.
        assert_eq!(
            &bits[..8],
            &[true, false, true, true, false, false, true, true]
        );
        // 0x05 = 0000 0101: coils 36, 38 on, 37 off.
        assert_eq!(&bits[16..], &[true, false, true]);
    }

    #[test]
    fn the_wrong_unit_is_rejected() {
        let f = with_crc(vec![0x02, 0x03, 0x02, 0x07, 0x9E]);
        assert_eq!(check_reply(&f, &HOLDING_1_AT_0), Err(Mismatch::Unit(2)));
    }

    #[test]
    fn the_wrong_function_is_rejected() {
        let f = with_crc(vec![0x01, 0x04, 0x02, 0x07, 0x9E]);
        assert_eq!(check_reply(&f, &HOLDING_1_AT_0), Err(Mismatch::Function(4)));
        // An exception to another function is not ours either.
        let f = with_crc(vec![0x01, 0x84, 0x02]);
        assert_eq!(
            check_reply(&f, &HOLDING_1_AT_0),
            Err(Mismatch::Function(0x84))
        );
    }

    #[test]
    fn a_reply_for_more_registers_than_asked_is_rejected() {
        // The case: a 1-register read answered with the 2-register sample time
        // 0x68E7_1234, whose high word would otherwise be taken as 268.55 °C.
        let f = with_crc(vec![0x01, 0x03, 0x04, 0x68, 0xE7, 0x12, 0x34]);
        assert_eq!(frame_len(&f), Ok(Some(9)));
        assert_eq!(
            check_reply(&f, &HOLDING_1_AT_0),
            Err(Mismatch::ByteCount { got: 4, want: 2 })
        );
        // Coils: 9 bits need 2 bytes, 1 byte is wrong.
        let e = Expect {
            unit: 1,
            function: Function::Coil,
            start: 0,
            count: 9,
        };
        let f = with_crc(vec![0x01, 0x01, 0x01, 0xFF]);
        assert_eq!(
            check_reply(&f, &e),
            Err(Mismatch::ByteCount { got: 1, want: 2 })
        );
    }

    #[test]
    fn a_bad_crc_is_rejected() {
        let mut f = with_crc(vec![0x01, 0x03, 0x02, 0x07, 0x9E]);
        f[4] ^= 0x01;
        assert_eq!(check_reply(&f, &HOLDING_1_AT_0), Err(Mismatch::BadCrc));
    }

    #[test]
    fn an_exception_reply_carries_its_code() {
        // V1.1b3 §7 example shape: 01 83 02 C0 F1 (illegal data address).
        let f = with_crc(vec![0x01, 0x83, 0x02]);
        assert_eq!(f[3..], [0xC0, 0xF1]);
        assert_eq!(frame_len(&f), Ok(Some(5)));
        assert_eq!(check_reply(&f, &HOLDING_1_AT_0), Ok(Answer::Exception(2)));
    }

    #[test]
    fn frame_length_needs_the_header_and_rejects_noise() {
        assert_eq!(frame_len(&[0x01]), Ok(None));
        assert_eq!(frame_len(&[0x01, 0x03]), Ok(None));
        assert_eq!(frame_len(&[0x01, 0x03, 0x02]), Ok(Some(7)));
        // A write's echo has a fixed length (V1.1b3 §6.12); 0x11 is no reply of ours.
        assert_eq!(frame_len(&[0x01, 0x10]), Ok(Some(8)));
        assert_eq!(frame_len(&[0x01, 0x11, 0x00]), Err(NotAReply));
    }

    #[test]
    fn t35_follows_the_baud_rate_up_to_19200() {
        // 9600 baud: 38.5 bits / 9600 = 4.0104 ms.
        assert_eq!(t35(9600), Duration::from_micros(4_011));
        // 19200: 2.0052 ms.
        assert_eq!(t35(19_200), Duration::from_micros(2_006));
        // Faster lines use the fixed 1.75 ms.
        assert_eq!(t35(115_200), Duration::from_micros(1_750));
    }

    #[test]
    fn write_frames_and_their_echoes() {
        // Write single coil 0x00AC ON at unit 0x11: the request and its echo are the same
        // bytes (V1.1b3 §6.5 example: 05 00 AC FF 00).
        let target = WriteTarget::Coil {
            address: 0xAC,
            on: true,
        };
        let (echo, frame) = write_request(0x11, &target);
        assert_eq!(&frame[..6], &[0x11, 0x05, 0x00, 0xAC, 0xFF, 0x00]);
        assert_eq!(crc16(&frame), 0);
        assert_eq!(check_echo(&frame, &echo), Ok(Answer::Written));
        // Write single register 1 = 3 (§6.6 example: 06 00 01 00 03).
        let (echo, frame) = write_request(
            1,
            &WriteTarget::Register {
                address: 1,
                value: 3,
            },
        );
        assert_eq!(&frame[..6], &[0x01, 0x06, 0x00, 0x01, 0x00, 0x03]);
        assert_eq!(check_echo(&frame, &echo), Ok(Answer::Written));
        // Write multiple registers 1-2 = 000A 0102 (§6.12 example): the reply echoes the
        // quantity, not the data.
        let (echo, frame) = write_request(
            1,
            &WriteTarget::Registers {
                address: 1,
                values: vec![0x000A, 0x0102],
            },
        );
        assert_eq!(
            &frame[..11],
            &[0x01, 0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02]
        );
        let reply = with_crc(vec![0x01, 0x10, 0x00, 0x01, 0x00, 0x02]);
        assert_eq!(frame_len(&reply), Ok(Some(8)));
        assert_eq!(check_echo(&reply, &echo), Ok(Answer::Written));
        let wrong = with_crc(vec![0x01, 0x10, 0x00, 0x01, 0x00, 0x03]);
        assert_eq!(check_echo(&wrong, &echo), Err(Mismatch::Echo));
        let refused = with_crc(vec![0x01, 0x90, 0x02]);
        assert_eq!(check_echo(&refused, &echo), Ok(Answer::Exception(2)));
    }
}
