//! Curves for the console's device and channel pages: one channel's history over a span, drawn
//! on the server as SVG with `plotters` (no script, no fonts read: the browser lays out the
//! labels).
//!
//! Owns the spans a page offers ([`Span`]: 1 h, 24 h, 7 d, each read from one history tier) and
//! the drawing: the band between each bucket's min and max, the line of its means (broken
//! where the channel had no reading for more than [`GAP_BUCKETS`] buckets), a dot per bucket.
//! It does not read the history (the routes do) and draws only what it is given.

use plotters::prelude::*;

use crate::history::{Bucket, Curve, Tier, TIERS};
use crate::model::{TimestampNs, NANOS_PER_SEC};

use super::pages::{local_time, value_text, Lang, DISPLAY_OFFSET_SECONDS};

/// Width of a curve in pixels (the SVG scales down on a phone).
pub const WIDTH: u32 = 760;
/// Height of a curve in pixels.
pub const HEIGHT: u32 = 240;
/// A pause longer than this many buckets breaks the line (a device offline, a restart).
pub const GAP_BUCKETS: i64 = 3;

/// Colour of the mean line and dots.
const LINE: RGBColor = RGBColor(30, 111, 217);
/// Colour of the min–max band.
const BAND: RGBColor = RGBColor(160, 190, 235);

/// A curve's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// The last hour, in 10 s buckets.
    Hour,
    /// The last 24 hours, in 5 min buckets.
    Day,
    /// The last 7 days, in 30 min buckets.
    Week,
}

impl Span {
    /// Every span, shortest first.
    pub const ALL: [Self; 3] = [Self::Hour, Self::Day, Self::Week];

    /// The span named by `span=` (`1h`, `24h`, `7d`); `default` for anything else.
    #[must_use]
    pub fn from_param(param: Option<&str>, default: Self) -> Self {
        match param {
            Some("1h") => Self::Hour,
            Some("24h") => Self::Day,
            Some("7d") => Self::Week,
            _ => default,
        }
    }

    /// Its name in URLs.
    #[must_use]
    pub const fn param(self) -> &'static str {
        match self {
            Self::Hour => "1h",
            Self::Day => "24h",
            Self::Week => "7d",
        }
    }

    /// Its length in seconds.
    #[must_use]
    pub const fn secs(self) -> i64 {
        match self {
            Self::Hour => 3600,
            Self::Day => 24 * 3600,
            Self::Week => 7 * 24 * 3600,
        }
    }

    /// The history tier it draws.
    #[must_use]
    pub const fn tier(self) -> Tier {
        match self {
            Self::Hour => TIERS[0],
            Self::Day => TIERS[1],
            Self::Week => TIERS[2],
        }
    }

    /// Its name on the page.
    #[must_use]
    pub const fn label(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Self::Hour, Lang::Zh) => "1 小时",
            (Self::Day, Lang::Zh) => "24 小时",
            (Self::Week, Lang::Zh) => "7 天",
            (Self::Hour, Lang::En) => "1 h",
            (Self::Day, Lang::En) => "24 h",
            (Self::Week, Lang::En) => "7 d",
        }
    }
}

/// The y range of `buckets` with a margin, never empty (a flat curve gets ±1 % or ±0.001).
fn y_range(buckets: &[&Bucket]) -> (f64, f64) {
    let lo = buckets.iter().map(|b| b.min).fold(f64::INFINITY, f64::min);
    let hi = buckets
        .iter()
        .map(|b| b.max)
        .fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08)
        .max(lo.abs().max(hi.abs()) * 0.01)
        .max(0.001);
    (lo - pad, hi + pad)
}

/// The label of an x tick (seconds since 1970): the local time, with the date when `dated`.
fn x_label(secs: i64, dated: bool) -> String {
    let text = local_time(secs * NANOS_PER_SEC);
    if dated {
        // "2026-11-30 15:43:10" → "11-30 15:43"
        text.get(5..16).unwrap_or_default().to_owned()
    } else {
        // → "15:43"
        text.get(11..16).unwrap_or_default().to_owned()
    }
}

/// The SVG of `curve` over the span ending at `now`, `unit` on the y axis; `Err` with
/// plotters' message when it cannot draw (the page then says so).
///
/// # Errors
/// Whatever plotters reports (it does not fail on a string backend in practice).
pub fn svg(curve: &Curve, span: Span, now: TimestampNs, unit: &str) -> Result<String, String> {
    let to = now / NANOS_PER_SEC;
    let from = to - span.secs();
    draw(curve, from..to, unit, span == Span::Week, (WIDTH, HEIGHT))
}

/// The SVG of `curve` over `secs` (seconds since 1970), `unit` on the y axis, `size` in
/// pixels; x labels with the date when `dated` (see [`svg`]).
///
/// # Errors
/// Whatever plotters reports.
pub fn draw(
    curve: &Curve,
    secs: std::ops::Range<i64>,
    unit: &str,
    dated: bool,
    size: (u32, u32),
) -> Result<String, String> {
    // x is in hours since the local midnight before the span, so that plotters' round tick
    // values fall on round times of day (19:00, 19:20; 00:00, 05:00), whatever the span's
    // start.
    let local = secs.start + DISPLAY_OFFSET_SECONDS;
    let midnight = local - local.rem_euclid(24 * 3600) - DISPLAY_OFFSET_SECONDS;
    #[allow(clippy::cast_precision_loss)] // seconds within a year: exact in f64
    let hours = |s: i64| (s - midnight) as f64 / 3600.0;
    let (from, to) = (hours(secs.start), hours(secs.end));
    let half = i64::from(curve.width_secs) / 2;
    let buckets: Vec<&Bucket> = curve.buckets.iter().filter(|b| b.count > 0).collect();
    let (y0, y1) = y_range(&buckets);
    let x_of = |b: &Bucket| hours(b.start_ns / NANOS_PER_SEC + half);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(26)
            .y_label_area_size(64)
            .build_cartesian_2d(from..to, y0..y1)
            .map_err(|e| e.to_string())?;
        #[allow(clippy::cast_possible_truncation)] // whole seconds of a tick
        let x_fmt = |x: &f64| x_label(midnight + (x * 3600.0).round() as i64, dated);
        let y_fmt = |y: &f64| value_text(*y);
        chart
            .configure_mesh()
            .x_labels(7)
            .y_labels(6)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .y_desc(unit)
            .light_line_style(RGBColor(238, 238, 238))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(buckets.iter().map(|b| {
                PathElement::new(
                    vec![(x_of(b), b.min), (x_of(b), b.max)],
                    BAND.stroke_width(3),
                )
            }))
            .map_err(|e| e.to_string())?;
        // The mean line, one piece per run without a long pause.
        let gap = GAP_BUCKETS * i64::from(curve.width_secs) * NANOS_PER_SEC;
        let mut pieces: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut last: Option<TimestampNs> = None;
        for b in &buckets {
            if last.is_none_or(|t| b.start_ns - t > gap) {
                pieces.push(Vec::new());
            }
            if let Some(p) = pieces.last_mut() {
                p.push((x_of(b), b.mean));
            }
            last = Some(b.start_ns);
        }
        for piece in pieces {
            chart
                .draw_series(LineSeries::new(piece, LINE.stroke_width(2)))
                .map_err(|e| e.to_string())?;
        }
        chart
            .draw_series(
                buckets
                    .iter()
                    .map(|b| Circle::new((x_of(b), b.mean), 2, LINE.filled())),
            )
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}
