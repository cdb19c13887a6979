//! The simulator's own register encoding: engineering value → raw value → 16-bit registers.
//!
//! Written independently of the gateway's decoder (the simulator is the test oracle; sharing
//! code would hide a byte-order bug on both sides). Owns [`RawValue`] (rounding and clamping an
//! engineering value into what the raw type can hold, and the exact engineering value a correct
//! decoder gets back) and [`to_registers`] (the four word orders of docs/DOMAIN.md §Modbus). It
//! does not decide values ([`crate::signal`]) nor hold register images ([`crate::device`]).

use crate::profile::{DataType, WordOrder};

/// Largest integer magnitude a f64 holds exactly (2^53). Integer raws are kept within it so the
/// recorded truth `raw as f64 × scale + offset` loses nothing in the conversion.
pub const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// A value in its raw on-the-wire type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawValue {
    /// A coil, discrete input or register bit.
    Bool(bool),
    /// Unsigned 16-bit.
    U16(u16),
    /// Signed 16-bit.
    I16(i16),
    /// Unsigned 32-bit.
    U32(u32),
    /// Signed 32-bit.
    I32(i32),
    /// Unsigned 64-bit.
    U64(u64),
    /// Signed 64-bit.
    I64(i64),
    /// binary32.
    F32(f32),
    /// binary64.
    F64(f64),
}

/// Rounds `x` to an integer within `[lo, hi]` (also within ±2^53).
fn int_in(x: f64, lo: f64, hi: f64) -> f64 {
    let lo = lo.max(-MAX_EXACT_INT);
    let hi = hi.min(MAX_EXACT_INT);
    if x.is_nan() {
        return lo.max(0.0).min(hi);
    }
    x.round().clamp(lo, hi)
}

impl RawValue {
    /// The raw value whose decoding is closest to `engineering` for a point of type `data_type`
    /// with `scale` and `offset` (engineering = raw × scale + offset). Integer types round to
    /// the nearest representable raw and clamp into the type's range (no negative raw for an
    /// unsigned type); `Bool` is set when `engineering` is at least 0.5.
    #[must_use]
    // The float→int casts below are exact: `int_in` has already rounded and clamped into range.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub fn from_engineering(
        data_type: DataType,
        engineering: f64,
        scale: f64,
        offset: f64,
    ) -> Self {
        let raw = (engineering - offset) / scale;
        match data_type {
            DataType::Bool => Self::Bool(engineering >= 0.5),
            DataType::U16 => Self::U16(int_in(raw, 0.0, f64::from(u16::MAX)) as u16),
            DataType::I16 => {
                Self::I16(int_in(raw, f64::from(i16::MIN), f64::from(i16::MAX)) as i16)
            }
            DataType::U32 => Self::U32(int_in(raw, 0.0, f64::from(u32::MAX)) as u32),
            DataType::I32 => {
                Self::I32(int_in(raw, f64::from(i32::MIN), f64::from(i32::MAX)) as i32)
            }
            DataType::U64 => Self::U64(int_in(raw, 0.0, MAX_EXACT_INT) as u64),
            DataType::I64 => Self::I64(int_in(raw, -MAX_EXACT_INT, MAX_EXACT_INT) as i64),
            DataType::F32 => Self::F32(raw as f32),
            DataType::F64 => Self::F64(raw),
        }
    }

    /// The raw value as f64, exactly (f32 widened; integers are within ±2^53).
    #[must_use]
    #[allow(clippy::cast_precision_loss)] // 64-bit raws are built within ±2^53, see MAX_EXACT_INT
    pub fn as_f64(self) -> f64 {
        match self {
            Self::Bool(b) => f64::from(u8::from(b)),
            Self::U16(v) => f64::from(v),
            Self::I16(v) => f64::from(v),
            Self::U32(v) => f64::from(v),
            Self::I32(v) => f64::from(v),
            Self::U64(v) => v as f64,
            Self::I64(v) => v as f64,
            Self::F32(v) => f64::from(v),
            Self::F64(v) => v,
        }
    }

    /// What a correct decoder must report: `raw × scale + offset` in f64, two roundings (no
    /// fused multiply-add). A bool is 0 or 1 with no scaling.
    #[must_use]
    pub fn engineering(self, scale: f64, offset: f64) -> f64 {
        match self {
            Self::Bool(_) => self.as_f64(),
            _ => self.as_f64() * scale + offset,
        }
    }

    /// The value's big-endian bytes (`A B C D ...`); empty for `Bool`.
    #[must_use]
    pub fn be_bytes(self) -> Vec<u8> {
        match self {
            Self::Bool(_) => Vec::new(),
            Self::U16(v) => v.to_be_bytes().to_vec(),
            Self::I16(v) => v.to_be_bytes().to_vec(),
            Self::U32(v) => v.to_be_bytes().to_vec(),
            Self::I32(v) => v.to_be_bytes().to_vec(),
            Self::U64(v) => v.to_be_bytes().to_vec(),
            Self::I64(v) => v.to_be_bytes().to_vec(),
            Self::F32(v) => v.to_be_bytes().to_vec(),
            Self::F64(v) => v.to_be_bytes().to_vec(),
        }
    }
}

/// Lays big-endian value bytes out as registers in `order`.
///
/// A 2-byte value is always one big-endian register (Modbus application protocol §4.2); the
/// order only applies to 32/64-bit values. Words are the byte pairs `(A B) (C D) ...`:
/// `abcd` keeps words and bytes, `cdab` reverses the words, `badc` swaps the bytes in each word,
/// `dcba` does both (the fully little-endian value).
#[must_use]
pub fn to_registers(be: &[u8], order: WordOrder) -> Vec<u16> {
    let mut words: Vec<[u8; 2]> = be.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
    if words.len() > 1 {
        if matches!(order, WordOrder::Cdab | WordOrder::Dcba) {
            words.reverse();
        }
        if matches!(order, WordOrder::Badc | WordOrder::Dcba) {
            for w in &mut words {
                w.swap(0, 1);
            }
        }
    }
    words.into_iter().map(u16::from_be_bytes).collect()
}

/// The registers of a sample-time u32 (Unix seconds) in `order`.
#[must_use]
pub fn time_registers(unix_s: u32, order: WordOrder) -> [u16; 2] {
    let r = to_registers(&unix_s.to_be_bytes(), order);
    [r[0], r[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(v: RawValue, order: WordOrder) -> Vec<u16> {
        to_registers(&v.be_bytes(), order)
    }

    // Every vector below is written out byte by byte: value → big-endian bytes (checked with
    // Python's struct.pack('>...')) → registers per order.

    #[test]
    fn f32_geokon_example_is_cdab() {
        // Geokon sends C87C 4628, the binary32 0x4628C87C = 10802.12109375 Ω (docs/DOMAIN.md
        // §Modbus). (The nearest binary32 to 10802.12 itself is 0x4628C87B.)
        let v = RawValue::F32(f32::from_bits(0x4628_C87C));
        assert_eq!(v.as_f64(), 10_802.121_093_75);
        assert_eq!(regs(v, WordOrder::Cdab), [0xC87C, 0x4628]);
        assert_eq!(
            RawValue::F32(10_802.12).be_bytes(),
            [0x46, 0x28, 0xC8, 0x7B]
        );
    }

    #[test]
    fn f32_in_every_order() {
        // -1.5f32 = 0xBFC00000: A=BF B=C0 C=00 D=00.
        let v = RawValue::F32(-1.5);
        assert_eq!(regs(v, WordOrder::Abcd), [0xBFC0, 0x0000]);
        assert_eq!(regs(v, WordOrder::Cdab), [0x0000, 0xBFC0]);
        assert_eq!(regs(v, WordOrder::Badc), [0xC0BF, 0x0000]);
        assert_eq!(regs(v, WordOrder::Dcba), [0x0000, 0xC0BF]);
    }

    #[test]
    fn u32_and_i32_in_every_order() {
        // 0x12345678: A=12 B=34 C=56 D=78.
        let v = RawValue::U32(0x1234_5678);
        assert_eq!(regs(v, WordOrder::Abcd), [0x1234, 0x5678]);
        assert_eq!(regs(v, WordOrder::Cdab), [0x5678, 0x1234]);
        assert_eq!(regs(v, WordOrder::Badc), [0x3412, 0x7856]);
        assert_eq!(regs(v, WordOrder::Dcba), [0x7856, 0x3412]);
        // -2i32 = 0xFFFFFFFE: A=FF B=FF C=FF D=FE.
        let v = RawValue::I32(-2);
        assert_eq!(regs(v, WordOrder::Abcd), [0xFFFF, 0xFFFE]);
        assert_eq!(regs(v, WordOrder::Cdab), [0xFFFE, 0xFFFF]);
        assert_eq!(regs(v, WordOrder::Badc), [0xFFFF, 0xFEFF]);
        assert_eq!(regs(v, WordOrder::Dcba), [0xFEFF, 0xFFFF]);
    }

    #[test]
    fn u64_i64_f64_in_every_order() {
        // 0x0102030405060708: A=01 B=02 C=03 D=04 E=05 F=06 G=07 H=08.
        let v = RawValue::U64(0x0102_0304_0506_0708);
        assert_eq!(regs(v, WordOrder::Abcd), [0x0102, 0x0304, 0x0506, 0x0708]);
        assert_eq!(regs(v, WordOrder::Cdab), [0x0708, 0x0506, 0x0304, 0x0102]);
        assert_eq!(regs(v, WordOrder::Badc), [0x0201, 0x0403, 0x0605, 0x0807]);
        assert_eq!(regs(v, WordOrder::Dcba), [0x0807, 0x0605, 0x0403, 0x0201]);
        // -1234567890123i64 = 0xFFFFFEE08E04FB35.
        let v = RawValue::I64(-1_234_567_890_123);
        assert_eq!(regs(v, WordOrder::Abcd), [0xFFFF, 0xFEE0, 0x8E04, 0xFB35]);
        assert_eq!(regs(v, WordOrder::Cdab), [0xFB35, 0x8E04, 0xFEE0, 0xFFFF]);
        assert_eq!(regs(v, WordOrder::Badc), [0xFFFF, 0xE0FE, 0x048E, 0x35FB]);
        assert_eq!(regs(v, WordOrder::Dcba), [0x35FB, 0x048E, 0xE0FE, 0xFFFF]);
        // 1234.5678f64 = 0x40934A456D5CFAAD.
        let v = RawValue::F64(1234.5678);
        assert_eq!(regs(v, WordOrder::Abcd), [0x4093, 0x4A45, 0x6D5C, 0xFAAD]);
        assert_eq!(regs(v, WordOrder::Cdab), [0xFAAD, 0x6D5C, 0x4A45, 0x4093]);
        assert_eq!(regs(v, WordOrder::Badc), [0x9340, 0x454A, 0x5C6D, 0xADFA]);
        assert_eq!(regs(v, WordOrder::Dcba), [0xADFA, 0x5C6D, 0x454A, 0x9340]);
    }

    #[test]
    fn sixteen_bit_values_ignore_the_word_order() {
        // -1234i16 = 0xFB2E; 0xBEEF: one big-endian register whatever the profile order.
        for order in [
            WordOrder::Abcd,
            WordOrder::Cdab,
            WordOrder::Badc,
            WordOrder::Dcba,
        ] {
            assert_eq!(regs(RawValue::I16(-1234), order), [0xFB2E]);
            assert_eq!(regs(RawValue::U16(0xBEEF), order), [0xBEEF]);
        }
    }

    #[test]
    fn time_u32_in_declared_order() {
        // 1764410000 = 0x692AC290.
        assert_eq!(
            time_registers(1_764_410_000, WordOrder::Abcd),
            [0x692A, 0xC290]
        );
        assert_eq!(
            time_registers(1_764_410_000, WordOrder::Cdab),
            [0xC290, 0x692A]
        );
    }

    #[test]
    fn rounding_and_truth_of_scaled_integers() {
        // i16 ×0.01 °C: 21.537 °C → raw 2154 → truth 2154 × 0.01 = 21.54 (f64 product).
        let v = RawValue::from_engineering(DataType::I16, 21.537, 0.01, 0.0);
        assert_eq!(v, RawValue::I16(2154));
        assert_eq!(v.engineering(0.01, 0.0), 2154.0 * 0.01);
        // i64 ×0.001 - 100: 3.2 mm → raw 103200 → truth 103200 × 0.001 + (-100).
        let v = RawValue::from_engineering(DataType::I64, 3.2, 0.001, -100.0);
        assert_eq!(v, RawValue::I64(103_200));
        assert_eq!(v.engineering(0.001, -100.0), 103_200.0 * 0.001 - 100.0);
    }

    #[test]
    fn unrepresentable_values_are_clamped_into_the_type() {
        assert_eq!(
            RawValue::from_engineering(DataType::U16, -3.0, 1.0, 0.0),
            RawValue::U16(0)
        );
        assert_eq!(
            RawValue::from_engineering(DataType::U32, -0.4, 1.0, 0.0),
            RawValue::U32(0)
        );
        assert_eq!(
            RawValue::from_engineering(DataType::I16, 400.0, 0.01, 0.0),
            RawValue::I16(i16::MAX)
        );
        assert_eq!(
            RawValue::from_engineering(DataType::U64, 1e300, 1.0, 0.0),
            RawValue::U64(1 << 53)
        );
    }

    #[test]
    fn f32_truth_is_the_widened_f32() {
        let v = RawValue::from_engineering(DataType::F32, 0.1, 1.0, 0.0);
        assert_eq!(v, RawValue::F32(0.1_f32));
        // 0.1f32 = 0x3DCCCCCD, widened exactly to the f64 0x3FB99999A0000000
        // (0.100000001490116119384765625), not the f64 0.1 (0x3FB999999999999A).
        assert_eq!(v.engineering(1.0, 0.0).to_bits(), 0x3FB9_9999_A000_0000);
    }
}
