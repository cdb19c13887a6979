//! Turning Modbus registers and bits into numbers.
//!
//! Owns the byte-order rules, the register → device number step (`register × scale + offset`)
//! and its inverse for writable points ([`encode_point`]: device number → registers, range-checked),
//! and applying each point's conversion to the readings of one poll ([`convert_poll`]), pairing
//! a vibrating-wire point with its temperature sibling. It does not know which request a
//! register came from beyond the block start it is given ([`super::plan`] decides the
//! requests); the formulas are [`crate::conversion`]'s.
//!
//! Modbus itself only defines 16-bit big-endian registers (Modbus application protocol V1.1b3
//! §4.2); how wider values span registers is the device maker's choice, hence the four word
//! orders of [`WordOrder`] (libmodbus `modbus_get_float_abcd/cdab/badc/dcba`).

use super::config::{DataType, Point, WordOrder};
use crate::model::{Reading, TimestampNs, NANOS_PER_SEC};

/// Why a value could not be taken from a register block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The block does not cover the registers the value needs (a planning bug or short reply).
    #[error("registers {start}..{end} are outside the block read")]
    OutOfBlock {
        /// First register needed.
        start: u32,
        /// One past the last register needed.
        end: u32,
    },
}

/// Put the value's registers into big-endian byte order (`abcd...`), undoing the device's order.
fn ordered_bytes(regs: &[u16], order: WordOrder) -> Vec<u8> {
    let mut words: Vec<u16> = regs.to_vec();
    if matches!(order, WordOrder::Cdab | WordOrder::Dcba) {
        words.reverse();
    }
    let swap_bytes = matches!(order, WordOrder::Badc | WordOrder::Dcba);
    let mut bytes = Vec::with_capacity(words.len() * 2);
    for w in words {
        let [hi, lo] = w.to_be_bytes();
        if swap_bytes {
            bytes.extend_from_slice(&[lo, hi]);
        } else {
            bytes.extend_from_slice(&[hi, lo]);
        }
    }
    bytes
}

/// The raw value of `data_type` held in `regs` (exactly `data_type.width()` registers), as f64.
///
/// 64-bit integers above 2^53 lose precision in f64; no sensor value comes near that, and
/// counters that do are better read as two 32-bit points.
#[must_use]
pub fn raw_value(regs: &[u16], data_type: DataType, order: WordOrder) -> f64 {
    let b = ordered_bytes(regs, order);
    let arr2 = |b: &[u8]| [b[0], b[1]];
    let arr4 = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    let arr8 = |b: &[u8]| [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
    #[allow(clippy::cast_precision_loss)] // documented above: 64-bit values beyond 2^53 round
    match data_type {
        DataType::Bool => f64::from(u8::from(regs.first().copied().unwrap_or(0) != 0)),
        DataType::U16 => f64::from(u16::from_be_bytes(arr2(&b))),
        DataType::I16 => f64::from(i16::from_be_bytes(arr2(&b))),
        DataType::U32 => f64::from(u32::from_be_bytes(arr4(&b))),
        DataType::I32 => f64::from(i32::from_be_bytes(arr4(&b))),
        DataType::F32 => f64::from(f32::from_be_bytes(arr4(&b))),
        DataType::U64 => u64::from_be_bytes(arr8(&b)) as f64,
        DataType::I64 => i64::from_be_bytes(arr8(&b)) as f64,
        DataType::F64 => f64::from_be_bytes(arr8(&b)),
    }
}

/// Why a value cannot be written to a point.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// NaN or infinite.
    #[error("{0} is not a finite number")]
    NotFinite(f64),
    /// A coil takes 0 or 1.
    #[error("{0} is not 0 or 1 (a coil is off or on)")]
    NotABit(f64),
    /// `(value − offset) / scale` is not a whole number for an integer type.
    #[error("{value} is not a multiple of the point's scale {scale} (offset {offset}); the device stores whole numbers")]
    NotAStep {
        /// The value asked for.
        value: f64,
        /// The point's scale.
        scale: f64,
        /// The point's offset.
        offset: f64,
    },
    /// Outside what the point's type holds.
    #[error("{value} is outside {min}..={max}, what this point's {data_type:?} holds")]
    OutOfRange {
        /// The value asked for.
        value: f64,
        /// Smallest value the point can take.
        min: f64,
        /// Largest value the point can take.
        max: f64,
        /// The point's type.
        data_type: DataType,
    },
}

/// Largest integer magnitude an f64 holds exactly (2^53): 64-bit raw values are kept within it.
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// How far `(value − offset) / scale` may be from a whole number and still be taken as one: the
/// rounding of a decimal scale such as 0.1 (f64 has about 16 significant digits).
const STEP_TOLERANCE: f64 = 1e-6;

/// The registers of the raw value `raw` in `data_type` and `order`: the inverse of
/// [`raw_value`]. The caller has range-checked `raw` ([`encode_point`]).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // range-checked by the caller
fn raw_registers(raw: f64, data_type: DataType, order: WordOrder) -> Vec<u16> {
    let be: Vec<u8> = match data_type {
        DataType::Bool => vec![0, u8::from(raw != 0.0)],
        DataType::U16 => (raw as u16).to_be_bytes().to_vec(),
        DataType::I16 => (raw as i16).to_be_bytes().to_vec(),
        DataType::U32 => (raw as u32).to_be_bytes().to_vec(),
        DataType::I32 => (raw as i32).to_be_bytes().to_vec(),
        DataType::F32 => (raw as f32).to_be_bytes().to_vec(),
        DataType::U64 => (raw as u64).to_be_bytes().to_vec(),
        DataType::I64 => (raw as i64).to_be_bytes().to_vec(),
        DataType::F64 => raw.to_be_bytes().to_vec(),
    };
    let words: Vec<u16> = be
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    // Reversing the words and swapping the bytes of each is its own inverse, so the reader's
    // reordering puts big-endian registers into the device's order.
    ordered_bytes(&words, order)
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// The range of raw values `data_type` holds (64-bit integers within ±2^53, see
/// [`MAX_EXACT_INT`]).
fn raw_range(data_type: DataType) -> (f64, f64) {
    match data_type {
        DataType::Bool => (0.0, 1.0),
        DataType::U16 => (0.0, f64::from(u16::MAX)),
        DataType::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
        DataType::U32 => (0.0, f64::from(u32::MAX)),
        DataType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        DataType::U64 => (0.0, MAX_EXACT_INT),
        DataType::I64 => (-MAX_EXACT_INT, MAX_EXACT_INT),
        DataType::F32 => (-f64::from(f32::MAX), f64::from(f32::MAX)),
        DataType::F64 => (f64::MIN, f64::MAX),
    }
}

/// The registers (or, for a coil, the one bit as 0/1) that make `point` read `value`: the
/// device number `(value − offset) / scale` in the point's type and word order. The inverse of
/// [`register_point`] and [`bit_point`] for a point without `bit` (writable points have none).
///
/// # Errors
/// A value that is not finite, not 0/1 for a coil, not a whole step for an integer type, or
/// outside what the type holds (the range named in engineering units).
pub fn encode_point(point: &Point, value: f64) -> Result<Vec<u16>, EncodeError> {
    if !value.is_finite() {
        return Err(EncodeError::NotFinite(value));
    }
    let raw = (value - point.offset) / point.scale;
    let integer = !matches!(point.data_type, DataType::F32 | DataType::F64);
    let raw = if integer {
        let whole = raw.round();
        if (raw - whole).abs() > STEP_TOLERANCE * whole.abs().max(1.0) {
            return Err(
                if point.function.is_bits() || point.data_type == DataType::Bool {
                    EncodeError::NotABit(value)
                } else {
                    EncodeError::NotAStep {
                        value,
                        scale: point.scale,
                        offset: point.offset,
                    }
                },
            );
        }
        whole
    } else {
        raw
    };
    let (lo, hi) = raw_range(point.data_type);
    if !(lo..=hi).contains(&raw) {
        if point.data_type == DataType::Bool {
            return Err(EncodeError::NotABit(value));
        }
        // In engineering units, lowest first whatever the scale's sign.
        let (a, b) = (
            lo * point.scale + point.offset,
            hi * point.scale + point.offset,
        );
        return Err(EncodeError::OutOfRange {
            value,
            min: a.min(b),
            max: a.max(b),
            data_type: point.data_type,
        });
    }
    if point.function.is_bits() {
        return Ok(vec![u16::from(raw != 0.0)]);
    }
    Ok(raw_registers(raw, point.data_type, point.word_order))
}

/// The slice of `regs` (read from `block_start`) that holds `count` registers at `address`.
fn window(regs: &[u16], block_start: u16, address: u16, count: u16) -> Result<&[u16], DecodeError> {
    let start = u32::from(address);
    let end = start + u32::from(count);
    let out_of_block = DecodeError::OutOfBlock { start, end };
    let offset = usize::from(address.checked_sub(block_start).ok_or(out_of_block)?);
    regs.get(offset..offset + usize::from(count))
        .ok_or(out_of_block)
}

/// The engineering value of `point` from a register block read at `block_start`.
///
/// # Errors
/// [`DecodeError::OutOfBlock`] when the block does not cover the point.
pub fn register_point(point: &Point, block_start: u16, regs: &[u16]) -> Result<f64, DecodeError> {
    let raw = if let Some(bit) = point.bit {
        let word = window(regs, block_start, point.address, 1)?[0];
        f64::from((word >> bit) & 1)
    } else {
        let w = window(regs, block_start, point.address, point.data_type.width())?;
        raw_value(w, point.data_type, point.word_order)
    };
    Ok(raw * point.scale + point.offset)
}

/// The engineering value of a coil or discrete-input point from a bit block read at
/// `block_start` (`raw` is 0 or 1).
///
/// # Errors
/// [`DecodeError::OutOfBlock`] when the block does not cover the point.
pub fn bit_point(point: &Point, block_start: u16, bits: &[bool]) -> Result<f64, DecodeError> {
    let start = u32::from(point.address);
    let out_of_block = DecodeError::OutOfBlock {
        start,
        end: start + 1,
    };
    let offset = usize::from(point.address.checked_sub(block_start).ok_or(out_of_block)?);
    let bit = bits.get(offset).copied().ok_or(out_of_block)?;
    Ok(f64::from(u8::from(bit)) * point.scale + point.offset)
}

/// Apply every point's conversion and sign to the readings of one poll of one device, in place.
///
/// Readings are matched to points by point name (unique in a device). Points without a
/// temperature input are converted first; then each vibrating-wire point with one takes its
/// sibling's engineering value from this same poll (the gauge's own thermistor, Geokon 4500
/// manual §5.2, docs/DOMAIN.md §Sensors). A sibling that was not read in this poll or is not
/// good makes the derived reading [`Quality::CorrectionUnavailable`] (raw kept): a pressure is
/// never given uncorrected, and never corrected with a temperature from another poll.
///
/// [`Quality::CorrectionUnavailable`]: crate::model::Quality::CorrectionUnavailable
pub fn convert_poll(points: &[Point], readings: &mut [Reading]) {
    if points.iter().all(|p| p.channel.is_identity()) {
        return;
    }
    let point_of = |r: &Reading| points.iter().find(|p| p.name == r.series.point);
    let mut deferred = Vec::new();
    for (i, r) in readings.iter_mut().enumerate() {
        let Some(p) = point_of(r) else { continue };
        let needs_temperature = p
            .channel
            .conversion
            .as_ref()
            .and_then(|c| c.temperature_input())
            .is_some();
        if needs_temperature {
            deferred.push(i);
        } else {
            p.channel.convert(r, None);
        }
    }
    for i in deferred {
        let Some(p) = point_of(&readings[i]) else {
            continue;
        };
        let sibling = p
            .channel
            .conversion
            .as_ref()
            .and_then(|c| c.temperature_input());
        let temperature = readings
            .iter()
            .find(|r| Some(r.series.point.as_str()) == sibling)
            .filter(|r| r.quality.is_good())
            .and_then(|r| r.value);
        p.channel.convert(&mut readings[i], temperature);
    }
}

/// The device sample time (a u32 of Unix seconds at `address`) as UTC nanoseconds.
///
/// # Errors
/// [`DecodeError::OutOfBlock`] when the block does not cover the two registers.
pub fn sample_time(
    address: u16,
    order: WordOrder,
    block_start: u16,
    regs: &[u16],
) -> Result<TimestampNs, DecodeError> {
    let w = window(regs, block_start, address, 2)?;
    let b = ordered_bytes(w, order);
    let secs = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Ok(i64::from(secs) * NANOS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QuantityKind;
    use crate::sources::modbus::config::Function;

    // Each vector: the registers as they arrive on the wire, annotated with the bytes A..H of
    // the big-endian value they carry.

    #[test]
    fn f32_in_all_four_orders() {
        // 0x4628_C87C (A=46 B=28 C=C8 D=7C) is the Geokon example of docs/DOMAIN.md §Modbus: 10 802.12 Ω.
        let expect = f64::from(f32::from_bits(0x4628_C87C));
        assert!((expect - 10_802.12).abs() < 0.002);
        assert_eq!(
            raw_value(&[0x4628, 0xC87C], DataType::F32, WordOrder::Abcd),
            expect
        ); // AB CD
        assert_eq!(
            raw_value(&[0xC87C, 0x4628], DataType::F32, WordOrder::Cdab),
            expect
        ); // CD AB
        assert_eq!(
            raw_value(&[0x2846, 0x7CC8], DataType::F32, WordOrder::Badc),
            expect
        ); // BA DC
        assert_eq!(
            raw_value(&[0x7CC8, 0x2846], DataType::F32, WordOrder::Dcba),
            expect
        ); // DC BA
    }

    #[test]
    fn u32_and_i32_in_all_four_orders() {
        // 0x0001_E240 = 123456: A=00 B=01 C=E2 D=40.
        assert_eq!(
            raw_value(&[0x0001, 0xE240], DataType::U32, WordOrder::Abcd),
            123_456.0
        );
        assert_eq!(
            raw_value(&[0xE240, 0x0001], DataType::U32, WordOrder::Cdab),
            123_456.0
        );
        assert_eq!(
            raw_value(&[0x0100, 0x40E2], DataType::U32, WordOrder::Badc),
            123_456.0
        );
        assert_eq!(
            raw_value(&[0x40E2, 0x0100], DataType::U32, WordOrder::Dcba),
            123_456.0
        );
        // -2 = 0xFFFF_FFFE.
        assert_eq!(
            raw_value(&[0xFFFF, 0xFFFE], DataType::I32, WordOrder::Abcd),
            -2.0
        );
        assert_eq!(
            raw_value(&[0xFFFE, 0xFFFF], DataType::I32, WordOrder::Cdab),
            -2.0
        );
        assert_eq!(
            raw_value(&[0xFFFF, 0xFEFF], DataType::I32, WordOrder::Badc),
            -2.0
        );
        assert_eq!(
            raw_value(&[0xFEFF, 0xFFFF], DataType::I32, WordOrder::Dcba),
            -2.0
        );
        // Same words, other type: 0xFFFF_FFFE as unsigned.
        assert_eq!(
            raw_value(&[0xFFFF, 0xFFFE], DataType::U32, WordOrder::Abcd),
            4_294_967_294.0
        );
    }

    #[test]
    fn sixteen_bit_types_and_byte_swap() {
        assert_eq!(
            raw_value(&[0x8000], DataType::I16, WordOrder::Abcd),
            -32_768.0
        );
        assert_eq!(
            raw_value(&[0x8000], DataType::U16, WordOrder::Abcd),
            32_768.0
        );
        // A 16-bit value only has bytes A B; badc/dcba swap them, cdab leaves them.
        assert_eq!(raw_value(&[0x0102], DataType::U16, WordOrder::Cdab), 258.0);
        assert_eq!(raw_value(&[0x0201], DataType::U16, WordOrder::Badc), 258.0);
        assert_eq!(raw_value(&[0x0201], DataType::U16, WordOrder::Dcba), 258.0);
        assert_eq!(raw_value(&[0xFFFE], DataType::I16, WordOrder::Abcd), -2.0);
    }

    #[test]
    fn sixty_four_bit_types_in_all_four_orders() {
        // 0x0102_0304_0506_0708 = 72623859790382856: A=01 B=02 C=03 D=04 E=05 F=06 G=07 H=08.
        let v = 72_623_859_790_382_856_u64 as f64;
        let abcd = [0x0102, 0x0304, 0x0506, 0x0708];
        assert_eq!(raw_value(&abcd, DataType::U64, WordOrder::Abcd), v);
        assert_eq!(
            raw_value(
                &[0x0708, 0x0506, 0x0304, 0x0102],
                DataType::U64,
                WordOrder::Cdab
            ),
            v
        );
        assert_eq!(
            raw_value(
                &[0x0201, 0x0403, 0x0605, 0x0807],
                DataType::U64,
                WordOrder::Badc
            ),
            v
        );
        assert_eq!(
            raw_value(
                &[0x0807, 0x0605, 0x0403, 0x0201],
                DataType::U64,
                WordOrder::Dcba
            ),
            v
        );
        // -1_000_000 = 0xFFFF_FFFF_FFF0_BDC0.
        let i = [0xFFFF, 0xFFFF, 0xFFF0, 0xBDC0];
        assert_eq!(raw_value(&i, DataType::I64, WordOrder::Abcd), -1_000_000.0);
        assert_eq!(
            raw_value(
                &[0xBDC0, 0xFFF0, 0xFFFF, 0xFFFF],
                DataType::I64,
                WordOrder::Cdab
            ),
            -1e6
        );
        // 1.5_f64 = 0x3FF8_0000_0000_0000; -273.15 = 0xC071_1266_6666_6666.
        assert_eq!(
            raw_value(&[0x3FF8, 0, 0, 0], DataType::F64, WordOrder::Abcd),
            1.5
        );
        assert_eq!(
            raw_value(&[0, 0, 0, 0x3FF8], DataType::F64, WordOrder::Cdab),
            1.5
        );
        assert_eq!(
            raw_value(&[0xF83F, 0, 0, 0], DataType::F64, WordOrder::Badc),
            1.5
        );
        assert_eq!(
            raw_value(&[0, 0, 0, 0xF83F], DataType::F64, WordOrder::Dcba),
            1.5
        );
        let t = [0xC071, 0x1266, 0x6666, 0x6666];
        assert_eq!(raw_value(&t, DataType::F64, WordOrder::Abcd), -273.15);
    }

    fn point(data_type: DataType, address: u16) -> Point {
        Point {
            name: "p".into(),
            function: Function::Holding,
            address,
            data_type,
            word_order: WordOrder::Abcd,
            bit: None,
            scale: 1.0,
            offset: 0.0,
            channel: crate::conversion::Channel::default(),
            unit: String::new(),
            quantity: QuantityKind::Other,
            time: None,
            writable: false,
        }
    }

    #[test]
    fn scale_and_offset_apply_after_decoding_and_the_block_offset_is_honoured() {
        let mut p = point(DataType::I16, 12);
        p.scale = 0.1;
        p.offset = -5.0;
        // Block read from register 10: [10]=0, [11]=0, [12]=0xFF38 (-200).
        let v = register_point(&p, 10, &[0, 0, 0xFF38]).expect("in block");
        assert_eq!(v, -200.0 * 0.1 - 5.0);
        assert!(register_point(&p, 13, &[0, 0]).is_err());
        assert!(register_point(&p, 10, &[0, 0]).is_err());
    }

    #[test]
    fn a_bit_of_a_register_and_a_coil() {
        let mut p = point(DataType::Bool, 0);
        p.bit = Some(3);
        assert_eq!(register_point(&p, 0, &[0b1000]).expect("in block"), 1.0);
        assert_eq!(register_point(&p, 0, &[0b0111]).expect("in block"), 0.0);
        let mut c = point(DataType::Bool, 5);
        c.function = Function::Coil;
        assert_eq!(bit_point(&c, 4, &[false, true]).expect("in block"), 1.0);
        assert!(bit_point(&c, 6, &[true]).is_err());
    }

    #[test]
    fn device_sample_time_is_unix_seconds() {
        // 1_764_410_400 s = 0x692A_C420 (2025-11-29T10:00:00Z), word-swapped.
        let ts = sample_time(40, WordOrder::Cdab, 40, &[0xC420, 0x692A]).expect("in block");
        assert_eq!(ts, 1_764_410_400 * NANOS_PER_SEC);
    }

    #[test]
    fn a_written_value_is_laid_out_in_the_points_word_order() {
        // 1.5 as binary32 is 0x3FC0_0000 (IEEE 754-2019 §3.4): abcd 3FC0 0000, cdab swaps the
        // words, badc the bytes of each word, dcba both.
        let cases = [
            (WordOrder::Abcd, [0x3FC0, 0x0000]),
            (WordOrder::Cdab, [0x0000, 0x3FC0]),
            (WordOrder::Badc, [0xC03F, 0x0000]),
            (WordOrder::Dcba, [0x0000, 0xC03F]),
        ];
        for (order, regs) in cases {
            let mut p = point(DataType::F32, 0);
            p.word_order = order;
            assert_eq!(encode_point(&p, 1.5), Ok(regs.to_vec()), "{order:?}");
            assert_eq!(register_point(&p, 0, &regs), Ok(1.5));
        }
        // -2 as i32 is 0xFFFF_FFFE; the sampling interval 300 s as u16 is 0x012C.
        assert_eq!(
            encode_point(&point(DataType::I32, 0), -2.0),
            Ok(vec![0xFFFF, 0xFFFE])
        );
        assert_eq!(
            encode_point(&point(DataType::U16, 0), 300.0),
            Ok(vec![0x012C])
        );
    }

    #[test]
    fn a_written_value_is_range_checked_in_engineering_units() {
        let mut p = point(DataType::U16, 0);
        p.scale = 0.1;
        // 12.3 / 0.1 = 122.99999999999999 in f64: still the step 123.
        assert_eq!(encode_point(&p, 12.3), Ok(vec![123]));
        assert!(matches!(
            encode_point(&p, 12.34),
            Err(EncodeError::NotAStep { .. })
        ));
        let Err(EncodeError::OutOfRange { min, max, .. }) = encode_point(&p, 6553.6) else {
            panic!("6553.6 is above u16 × 0.1");
        };
        assert_eq!((min, max), (0.0, 6553.5));
        assert_eq!(encode_point(&p, -0.1).ok(), None);
        assert!(matches!(
            encode_point(&p, f64::NAN),
            Err(EncodeError::NotFinite(_))
        ));
        let mut coil = point(DataType::Bool, 3);
        coil.function = Function::Coil;
        assert_eq!(encode_point(&coil, 1.0), Ok(vec![1]));
        assert_eq!(encode_point(&coil, 0.0), Ok(vec![0]));
        assert_eq!(encode_point(&coil, 2.0), Err(EncodeError::NotABit(2.0)));
        assert_eq!(encode_point(&coil, 0.5), Err(EncodeError::NotABit(0.5)));
    }
}
