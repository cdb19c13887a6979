//! Deterministic value series: the engineering value of a point as a pure function of
//! `(seed, device, point, sample index)`.
//!
//! Owns the mapping from a [`Behaviour`] to numbers. Time does not enter here: the caller picks
//! the sample index (real-time ticks, a sped-up clock or manual steps all give the same
//! sequence for the same seed). Randomness comes from ChaCha8 keyed by the series identity and
//! positioned by the sample index, so sample `k` is computed without computing `0..k`. It does
//! not encode raw registers ([`crate::encode`]) nor round MQTT values.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::quantity::{Behaviour, Range};

/// ChaCha stream of the per-series parameter draws (base, drift, period, ...).
const STREAM_PARAMS: u64 = 0;
/// ChaCha stream of the per-sample noise.
const STREAM_NOISE: u64 = 1;
/// ChaCha stream of the held flag states.
const STREAM_FLAG: u64 = 2;
/// ChaCha stream of the Gaussian sensor noise ([`gaussian`]).
const STREAM_GAUSS: u64 = 3;
/// ChaCha stream of per-sample fault draws (dropouts, garbage bytes: [`uniform`]).
const STREAM_FAULT: u64 = 4;
/// 32-bit ChaCha words consumed by one `next_u64`.
const WORDS_PER_DRAW: u128 = 2;

/// Stable identity of a series: FNV-1a (64-bit) over `device`, a separator and `point`, mixed
/// with the scenario seed by SplitMix64. Hand-written rather than `std::hash`, whose output is
/// not promised to stay the same between Rust releases.
#[must_use]
pub fn series_id(seed: u64, device: &str, point: &str) -> u64 {
    /// FNV-1a 64-bit offset basis and prime (Fowler/Noll/Vo, IETF draft-eastlake-fnv).
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    // 0x1F (unit separator) cannot occur in names, so ("ab","c") and ("a","bc") differ.
    for b in device.bytes().chain([0x1F]).chain(point.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    splitmix64(h ^ splitmix64(seed))
}

/// SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
#[must_use]
pub const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in `[0, 1)` from the top 53 bits of a draw.
pub(crate) fn unit(x: u64) -> f64 {
    /// 2^-53: one unit in the last place of a double in [1, 2), scaled to [0, 1).
    const SCALE: f64 = 1.0 / (1_u64 << 53) as f64;
    (x >> 11) as f64 * SCALE
}

fn draw(rng: &mut ChaCha8Rng, range: Range) -> f64 {
    range.lo + unit(rng.next_u64()) * (range.hi - range.lo)
}

/// Draw `i` of `stream` of the series, independent of every other draw.
fn nth_draw(id: u64, stream: u64, i: u64) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(id);
    rng.set_stream(stream);
    rng.set_word_pos(u128::from(i) * WORDS_PER_DRAW);
    rng.next_u64()
}

/// Standard normal draw `k` of series `id` (Box-Muller on two independent uniforms, so sample
/// `k` is computed without computing `0..k`).
#[must_use]
pub fn gaussian(id: u64, k: u64) -> f64 {
    // 1 − u is in (0, 1]: the logarithm is finite.
    let u1 = 1.0 - unit(nth_draw(id, STREAM_GAUSS, k.wrapping_mul(2)));
    let u2 = unit(nth_draw(
        id,
        STREAM_GAUSS,
        k.wrapping_mul(2).wrapping_add(1),
    ));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Uniform draw `k` in `[0, 1)` of series `id`, for fault decisions (independent of the values).
#[must_use]
pub fn uniform(id: u64, k: u64) -> f64 {
    unit(nth_draw(id, STREAM_FAULT, k))
}

/// Raw 64-bit draw `k` of series `id` on the fault stream (garbage bytes).
#[must_use]
pub fn fault_bits(id: u64, k: u64) -> u64 {
    nth_draw(id, STREAM_FAULT, k)
}

/// One series with its parameters drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    id: u64,
    model: Model,
}

#[derive(Debug, Clone, PartialEq)]
enum Model {
    Wander {
        base: f64,
        drift: f64,
        amplitude: f64,
        period: f64,
        phase: f64,
        noise: f64,
        limits: Range,
    },
    Counter {
        start: f64,
    },
    Flag {
        probability: f64,
        hold: u64,
    },
}

impl Series {
    /// The series of `(seed, device, point)` following `behaviour`.
    #[must_use]
    pub fn new(seed: u64, device: &str, point: &str, behaviour: Behaviour) -> Self {
        let id = series_id(seed, device, point);
        let mut rng = ChaCha8Rng::seed_from_u64(id);
        rng.set_stream(STREAM_PARAMS);
        let model = match behaviour {
            Behaviour::Wander(w) => Model::Wander {
                base: draw(&mut rng, w.base),
                drift: draw(&mut rng, w.drift),
                amplitude: draw(&mut rng, w.amplitude),
                period: draw(&mut rng, w.period).max(1.0),
                phase: draw(
                    &mut rng,
                    Range {
                        lo: 0.0,
                        hi: std::f64::consts::TAU,
                    },
                ),
                noise: w.noise,
                limits: w.limits,
            },
            Behaviour::Counter { start } => Model::Counter {
                start: draw(&mut rng, start).floor(),
            },
            Behaviour::Flag { probability, hold } => Model::Flag {
                probability,
                hold: hold.max(1),
            },
        };
        Self { id, model }
    }

    /// The engineering value at sample `k` (before any raw-type rounding).
    #[must_use]
    pub fn value(&self, k: u64) -> f64 {
        match self.model {
            Model::Wander {
                base,
                drift,
                amplitude,
                period,
                phase,
                noise,
                limits,
            } => {
                let t = k as f64;
                let swing = amplitude * (std::f64::consts::TAU * t / period + phase).sin();
                let jitter = noise * (2.0 * unit(nth_draw(self.id, STREAM_NOISE, k)) - 1.0);
                (base + drift * t + swing + jitter).clamp(limits.lo, limits.hi)
            }
            Model::Counter { start } => start + k as f64,
            Model::Flag { probability, hold } => {
                let set = unit(nth_draw(self.id, STREAM_FLAG, k / hold)) < probability;
                if set {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::Quantity;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // Reference: SplitMix64 seeded with 0 yields 0xE220A8397B1DCDAF first (Vigna's
        // splitmix64.c); our function is one step from state 0.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn fnv_separates_device_and_point() {
        assert_ne!(series_id(1, "ab", "c"), series_id(1, "a", "bc"));
        assert_ne!(series_id(1, "a", "b"), series_id(2, "a", "b"));
    }

    #[test]
    fn same_seed_same_values_any_order() {
        let a = Series::new(7, "lvl-1", "ch1", Quantity::Settlement.behaviour());
        let b = Series::new(7, "lvl-1", "ch1", Quantity::Settlement.behaviour());
        let forward: Vec<f64> = (0..50).map(|k| a.value(k)).collect();
        let backward: Vec<f64> = (0..50).rev().map(|k| b.value(k)).collect();
        let backward: Vec<f64> = backward.into_iter().rev().collect();
        assert_eq!(forward, backward);
        let other = Series::new(8, "lvl-1", "ch1", Quantity::Settlement.behaviour());
        assert_ne!(forward[0], other.value(0));
    }

    #[test]
    fn values_stay_in_physical_limits() {
        for q in [
            Quantity::Temperature,
            Quantity::Tilt,
            Quantity::Crack,
            Quantity::Voltage,
        ] {
            let Behaviour::Wander(w) = q.behaviour() else {
                panic!("{q} is analogue")
            };
            for dev in ["a", "b", "c"] {
                let s = Series::new(3, dev, "p", q.behaviour());
                for k in (0..100_000).step_by(997) {
                    let v = s.value(k);
                    assert!(v >= w.limits.lo && v <= w.limits.hi, "{q} {v}");
                }
            }
        }
    }

    #[test]
    fn gaussian_has_unit_variance() {
        // 20 000 draws: the sample mean's standard error is 1/√20000 = 0.0071, the variance's
        // about √(2/20000) = 0.01; bounds at five standard errors.
        let n = 20_000_u64;
        let draws: Vec<f64> = (0..n).map(|k| gaussian(42, k)).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        assert!(mean.abs() < 0.036, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
        assert_eq!(gaussian(42, 17), draws[17], "pure in (id, k)");
    }

    #[test]
    fn counter_counts_and_flag_is_binary() {
        let c = Series::new(1, "d", "n", Quantity::Other.behaviour());
        assert_eq!(c.value(10) - c.value(0), 10.0);
        let f = Series::new(1, "d", "f", Quantity::Status.behaviour());
        assert!((0..1000).all(|k| f.value(k) == 0.0 || f.value(k) == 1.0));
    }
}
