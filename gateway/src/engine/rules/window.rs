//! A bounded sliding window of one channel's good readings, answering "what is the least-squares
//! slope over the last `window`?" in O(1) amortised time per reading.
//!
//! Owns [`RateWindow`] and its newest bucket saved apart ([`OpenBucket`]). docs/DOMAIN.md
//! §Settlement and §Data quality: a rate alarm needs the rate over a window longer than the
//! noise period, as a least-squares slope, not the difference of two samples.
//!
//! # Bounded memory
//! A window of 100 days at one reading per 5 s would be 1.7 million points. Instead of points the
//! window keeps at most [`RATE_BUCKETS`] + 1 time buckets, each holding the sufficient statistics
//! of least squares for the readings that fell in it (n, Σt, Σv, Σt², Σtv, with t and v relative
//! to the bucket's start and first value so they stay small and precise). The slope over all
//! retained readings is then exact; only the window's far edge is rounded to a bucket: the window
//! holds every reading from `window` ago up to now, plus at most one bucket width
//! (`window / RATE_BUCKETS`) older.
//!
//! Not owned here: which readings are good (the evaluator only feeds usable readings), and
//! thresholds.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::model::{TimestampNs, NANOS_PER_SEC};

/// Number of buckets a window is divided into. Memory per window is at most
/// `RATE_BUCKETS + 1` buckets of 64 bytes (about 4 KiB); the far edge of the window is exact to
/// `window / RATE_BUCKETS` (1.6 %).
pub const RATE_BUCKETS: i64 = 64;

/// Sufficient statistics of the readings in one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Bucket {
    /// Bucket number: `floor(ts / width)`.
    idx: i64,
    /// Readings in the bucket.
    n: u32,
    /// First value, the reference for `v` below.
    v0: f64,
    /// Σ t, t = seconds since the bucket start.
    st: f64,
    /// Σ v, v = value − v0.
    sv: f64,
    /// Σ t².
    stt: f64,
    /// Σ t·v.
    stv: f64,
    /// Σ v², for the residuals of [`RateWindow::fit`] (absent in windows saved before it
    /// existed: 0, which only the fit reads).
    #[serde(default)]
    svv: f64,
    /// Oldest and newest reading time in the bucket.
    first_ts: TimestampNs,
    last_ts: TimestampNs,
}

/// The newest bucket of a window, saved apart from the others while they do not change
/// (`derived::DerivedSet::state_changes`): the readings of the last `window / RATE_BUCKETS`
/// take a bucket's bytes to save, not the whole window's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OpenBucket(Bucket);

/// Least-squares sums over the whole window, relative to the window's origin.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Totals {
    n: f64,
    st: f64,
    sv: f64,
    stt: f64,
    stv: f64,
    svv: f64,
}

/// The slope of a window and what it rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slope {
    /// Value units per second.
    pub per_sec: f64,
    /// Readings it was fitted to.
    pub points: u32,
    /// Time from the oldest to the newest of them, ns.
    pub span_ns: i64,
}

/// The least-squares line of a window, with what its uncertainty needs: value = `mean_value` +
/// `slope.per_sec` × (t − `mean_ts`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineFit {
    /// Slope, readings and span, as [`RateWindow::slope`] gives them.
    pub slope: Slope,
    /// Mean time of the readings, ns: the line's centre (the slope of a window is the rate at
    /// this time, exactly so for a quadratic).
    pub mean_ts: TimestampNs,
    /// Mean value of the readings.
    pub mean_value: f64,
    /// Σ (t − t̄)², s².
    pub sxx: f64,
    /// Residual variance s² = Σ residual² / (n − 2), value units²; 0 with two readings.
    pub residual_var: f64,
    /// Coefficient of determination R² (1 for a perfect line; 0 when the values do not vary).
    pub r2: f64,
}

impl LineFit {
    /// Standard error of the slope, value units per second: √(s² / Sxx).
    #[must_use]
    pub fn slope_std_error(&self) -> f64 {
        (self.residual_var / self.sxx).sqrt()
    }
}

/// A sliding window of readings reduced to per-bucket least-squares sums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateWindow {
    /// Bucket width, ns (`window / RATE_BUCKETS`). A window restored with another width (its
    /// rule's `window` changed) is discarded by the evaluator.
    pub width_ns: i64,
    /// Non-empty buckets, oldest first.
    buckets: VecDeque<Bucket>,
    /// Sums over `buckets` relative to `origin` (start of the oldest bucket) and `vref` (its
    /// first value); rebuilt from the buckets when the oldest one changes. Not persisted.
    #[serde(skip)]
    totals: Option<(i64, f64, Totals)>,
}

fn secs(ns: i64) -> f64 {
    ns as f64 / NANOS_PER_SEC as f64
}

impl RateWindow {
    /// An empty window of length `window_ns`.
    #[must_use]
    pub fn new(window_ns: i64) -> Self {
        Self {
            width_ns: (window_ns / RATE_BUCKETS).max(1),
            buckets: VecDeque::new(),
            totals: None,
        }
    }

    /// Readings currently in the window (tests).
    #[cfg(test)]
    fn len(&self) -> u32 {
        self.buckets.iter().map(|b| b.n).sum()
    }

    /// Buckets held, at most [`RATE_BUCKETS`] + 1 (tests).
    #[cfg(test)]
    fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Room allocated for buckets (tests).
    #[cfg(test)]
    fn room(&self) -> usize {
        self.buckets.capacity()
    }

    /// Add a reading and drop buckets that fell out of the window. A reading older than the
    /// window is ignored.
    pub fn push(&mut self, ts: TimestampNs, value: f64) {
        let idx = ts.div_euclid(self.width_ns);
        let newest = self.buckets.back().map_or(idx, |b| b.idx.max(idx));
        let oldest_kept = newest - RATE_BUCKETS;
        if idx < oldest_kept {
            return;
        }
        let start = idx * self.width_ns;
        let t = secs(ts - start);
        match self.buckets.iter().rposition(|b| b.idx <= idx) {
            Some(p) if self.buckets[p].idx == idx => {
                let b = &mut self.buckets[p];
                let v = value - b.v0;
                b.n += 1;
                b.st += t;
                b.sv += v;
                b.stt += t * t;
                b.stv += t * v;
                b.svv += v * v;
                b.first_ts = b.first_ts.min(ts);
                b.last_ts = b.last_ts.max(ts);
                self.add_to_totals(ts, value);
            }
            pos => {
                let b = Bucket {
                    idx,
                    n: 1,
                    v0: value,
                    st: t,
                    sv: 0.0,
                    stt: t * t,
                    stv: 0.0,
                    svv: 0.0,
                    first_ts: ts,
                    last_ts: ts,
                };
                let at = pos.map_or(0, |p| p + 1);
                if self.buckets.len() == self.buckets.capacity() {
                    // Grow by doubling up to the bound (the buckets kept plus the one inserted
                    // before the oldest leaves), never past it: a full window holds 66 buckets'
                    // room, not the 128 plain doubling would leave.
                    let room = (self.buckets.capacity() * 2).clamp(4, RATE_BUCKETS as usize + 2);
                    self.buckets
                        .reserve_exact(room.saturating_sub(self.buckets.len()).max(1));
                }
                self.buckets.insert(at, b);
                if at == 0 {
                    // A new oldest bucket moves the origin.
                    self.totals = None;
                } else {
                    self.add_to_totals(ts, value);
                }
            }
        }
        while self.buckets.front().is_some_and(|b| b.idx < oldest_kept) {
            self.buckets.pop_front();
            self.totals = None;
        }
    }

    /// Add one reading to the running totals, if they are valid (the origin only moves when the
    /// oldest bucket changes, which invalidates them).
    fn add_to_totals(&mut self, ts: TimestampNs, value: f64) {
        if let Some((origin, vref, tot)) = self.totals.as_mut() {
            let t = secs(ts - *origin);
            let v = value - *vref;
            tot.n += 1.0;
            tot.st += t;
            tot.sv += v;
            tot.stt += t * t;
            tot.stv += t * v;
            tot.svv += v * v;
        }
    }

    /// Rebuild the totals from the buckets, relative to the oldest bucket.
    fn rebuild(&mut self) -> Option<(i64, f64, Totals)> {
        let first = self.buckets.front()?;
        let origin = first.idx * self.width_ns;
        let vref = first.v0;
        let mut tot = Totals::default();
        for b in &self.buckets {
            // Shift the bucket's sums by d seconds and c value units:
            // Σ(t+d) = st + n·d; Σ(v+c) = sv + n·c; Σ(t+d)² = stt + 2d·st + n·d²;
            // Σ(t+d)(v+c) = stv + c·st + d·sv + n·d·c.
            let n = f64::from(b.n);
            let d = secs(b.idx * self.width_ns - origin);
            let c = b.v0 - vref;
            tot.n += n;
            tot.st += b.st + n * d;
            tot.sv += b.sv + n * c;
            tot.stt += b.stt + 2.0 * d * b.st + n * d * d;
            tot.stv += b.stv + c * b.st + d * b.sv + n * d * c;
            // Σ(v+c)² = svv + 2c·sv + n·c².
            tot.svv += b.svv + 2.0 * c * b.sv + n * c * c;
        }
        self.totals = Some((origin, vref, tot));
        self.totals
    }

    /// Take the newest bucket out, to save it apart from the rest (the caller works on a copy:
    /// `DerivedSet::state_changes`). Its readings leave the window with it.
    pub fn take_open(&mut self) -> Option<OpenBucket> {
        let b = self.buckets.pop_back()?;
        self.totals = None;
        Some(OpenBucket(b))
    }

    /// Put back the newest bucket saved apart after the whole window was: it replaces the
    /// window's newest bucket of the same number, follows it when newer, and is ignored when
    /// older (the whole window was saved after it).
    pub fn restore_open(&mut self, open: OpenBucket) {
        let b = open.0;
        match self.buckets.back_mut() {
            Some(last) if last.idx == b.idx => *last = b,
            Some(last) if last.idx > b.idx => return,
            _ => self.buckets.push_back(b),
        }
        while self
            .buckets
            .front()
            .is_some_and(|f| f.idx < b.idx - RATE_BUCKETS)
        {
            self.buckets.pop_front();
        }
        self.totals = None;
    }

    /// Forget every reading (a new run starts).
    pub fn clear(&mut self) {
        self.buckets.clear();
        self.totals = None;
    }

    /// The least-squares line over the window with its residual variance and R², or `None`
    /// where [`RateWindow::slope`] gives none.
    pub fn fit(&mut self) -> Option<LineFit> {
        let slope = self.slope()?;
        let (origin, vref, t) = self.totals?;
        let sxx = t.stt - t.st * t.st / t.n;
        let sxy = t.stv - t.st * t.sv / t.n;
        let syy = (t.svv - t.sv * t.sv / t.n).max(0.0);
        // Residual sum of squares Syy − Sxy²/Sxx, never below 0 by rounding.
        let sse = (syy - sxy * sxy / sxx).max(0.0);
        let residual_var = if t.n > 2.0 { sse / (t.n - 2.0) } else { 0.0 };
        let r2 = if syy > 0.0 {
            (1.0 - sse / syy).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let mean_s = t.st / t.n;
        Some(LineFit {
            slope,
            mean_ts: origin.saturating_add((mean_s * NANOS_PER_SEC as f64) as i64),
            mean_value: vref + t.sv / t.n,
            sxx,
            residual_var,
            r2,
        })
    }

    /// The least-squares slope of value against time over the window, or `None` with fewer than
    /// two readings or no spread in time.
    pub fn slope(&mut self) -> Option<Slope> {
        let (_, _, t) = match self.totals {
            Some(t) => t,
            None => self.rebuild()?,
        };
        if t.n < 2.0 {
            return None;
        }
        // Centred sums: Sxx = Σt² − (Σt)²/n, Sxy = Σtv − Σt·Σv/n; slope = Sxy / Sxx.
        let sxx = t.stt - t.st * t.st / t.n;
        let sxy = t.stv - t.st * t.sv / t.n;
        if sxx <= 0.0 || !sxx.is_finite() || !sxy.is_finite() {
            return None;
        }
        // Buckets are ordered by time and each holds only readings of its own interval, so the
        // oldest reading is in the first bucket and the newest in the last: O(1).
        let first = self.buckets.front().map_or(0, |b| b.first_ts);
        let last = self.buckets.back().map_or(first, |b| b.last_ts);
        Some(Slope {
            per_sec: sxy / sxx,
            // n is a count held exactly in an f64 (below 2^53).
            points: t.n as u32,
            span_ns: last - first,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: TimestampNs = 1_767_225_600_000_000_000;
    const H: i64 = 3600 * NANOS_PER_SEC;
    const DAY: i64 = 24 * H;

    #[test]
    fn slope_of_a_small_vector_matches_the_hand_computation() {
        // t (d) = 0, .25, .5, .75, 1; v (mm) = 0, .5, 1.5, 2, 3.
        // mean t = .5, mean v = 1.4; Sxy = (−.5)(−1.4)+(−.25)(−.9)+0+(.25)(.6)+(.5)(1.6) = 1.875;
        // Sxx = .25+.0625+0+.0625+.25 = .625; slope = 3.0 mm/d.
        let mut w = RateWindow::new(DAY);
        for (h, v) in [(0, 0.0), (6, 0.5), (12, 1.5), (18, 2.0), (24, 3.0)] {
            w.push(T0 + h * H, v);
        }
        let s = w.slope().expect("slope");
        assert!(
            (s.per_sec * 86_400.0 - 3.0).abs() < 1e-9,
            "{}",
            s.per_sec * 86_400.0
        );
        assert_eq!(s.points, 5);
        assert_eq!(s.span_ns, DAY);
    }

    #[test]
    fn readings_older_than_the_window_leave_it() {
        // Width = 1 d / 64 = 22.5 min. After the reading at 30 h the window keeps buckets from
        // 30 h − 24 h = 6 h on: the readings at 0 h leave; 6, 12, 18, 24, 30 h stay.
        let mut w = RateWindow::new(DAY);
        for (h, v) in [
            (0, 100.0),
            (6, 1.0),
            (12, 2.0),
            (18, 3.0),
            (24, 4.0),
            (30, 5.0),
        ] {
            w.push(T0 + h * H, v);
        }
        let s = w.slope().expect("slope");
        assert_eq!(s.points, 5);
        // 1 mm per 6 h = 4 mm/d exactly, now that the outlier at 0 h is gone.
        assert!((s.per_sec * 86_400.0 - 4.0).abs() < 1e-9);
    }

    #[test]
    fn many_readings_stay_within_the_bucket_cap_and_the_slope_stays_exact() {
        // One reading per minute for 10 days of a 2 mm/d trend with a large offset: 14 400 readings.
        let mut w = RateWindow::new(DAY);
        for i in 0..14_400_i64 {
            let ts = T0 + i * 60 * NANOS_PER_SEC;
            w.push(ts, 5_000.0 + 2.0 * (i as f64) / 1440.0);
        }
        assert!(
            w.buckets() <= (RATE_BUCKETS + 1) as usize,
            "{}",
            w.buckets()
        );
        assert!(w.room() <= (RATE_BUCKETS + 2) as usize, "{}", w.room());
        let s = w.slope().expect("slope");
        assert!(
            (s.per_sec * 86_400.0 - 2.0).abs() < 1e-6,
            "{}",
            s.per_sec * 86_400.0
        );
    }

    #[test]
    fn fit_of_a_small_vector_matches_the_hand_computation() {
        // Same vector as above: v̂ = 1.4 + 3.0·(t − 0.5) (t in d). Residuals at t = 0, .25, .5,
        // .75, 1: 0.1, −0.15, 0.1, −0.15, 0.1; SSE = 0.075 (= Syy − Sxy²/Sxx = 5.7 − 5.625),
        // Syy = 5.7 (Σ(v − 1.4)² = 1.96 + .81 + .01 + .36 + 2.56); s² = 0.075 / 3;
        // R² = 1 − 0.075 / 5.7.
        let mut w = RateWindow::new(DAY);
        for (h, v) in [(0, 0.0), (6, 0.5), (12, 1.5), (18, 2.0), (24, 3.0)] {
            w.push(T0 + h * H, v);
        }
        let f = w.fit().expect("fit");
        assert_eq!(f.mean_ts, T0 + 12 * H);
        assert!((f.mean_value - 1.4).abs() < 1e-12);
        assert!(
            (f.residual_var - 0.075 / 3.0).abs() < 1e-9,
            "{}",
            f.residual_var
        );
        assert!((f.r2 - (1.0 - 0.075 / 5.7)).abs() < 1e-9, "{}", f.r2);
        // Sxx = 0.625 d² = 0.625 × 86 400² s²; se = √(s²/Sxx), per day ×86 400.
        let se_per_day = f.slope_std_error() * 86_400.0;
        assert!((se_per_day - (0.075 / 3.0 / 0.625_f64).sqrt()).abs() < 1e-9);
        w.clear();
        assert_eq!(w.fit(), None);
    }

    #[test]
    fn one_reading_or_no_time_spread_has_no_slope() {
        let mut w = RateWindow::new(DAY);
        assert_eq!(w.slope(), None);
        w.push(T0, 1.0);
        assert_eq!(w.slope(), None);
        w.push(T0, 2.0);
        assert_eq!(w.slope(), None, "two readings at the same time");
    }

    #[test]
    fn a_restored_window_recomputes_the_same_slope() {
        let mut w = RateWindow::new(DAY);
        for (h, v) in [(0, 0.0), (6, 0.5), (12, 1.5), (18, 2.0), (24, 3.0)] {
            w.push(T0 + h * H, v);
        }
        let json = serde_json::to_string(&w).expect("serialise");
        let mut back: RateWindow = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.fit(), w.fit(), "the fit's sums are saved too");
        let s = back.slope().expect("slope");
        assert!((s.per_sec * 86_400.0 - 3.0).abs() < 1e-9);
        back.push(T0 + 30 * H, 3.5);
        assert_eq!(
            back.len(),
            5,
            "the reading at 0 h left, the one at 30 h came in"
        );
    }
}
