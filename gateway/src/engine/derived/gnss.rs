//! The along-slope displacement of a GNSS point (issue 8 item 3): the projection of its east,
//! north and up displacements on the slope's direction of movement, a series the
//! `inverse_velocity` and `tangent_angle` blocks can take as their input (docs/DOMAIN.md §Slope
//! early warning).
//!
//! Owns the `gnss = [{ east, north, up, point }]` entries of an `along_slope` block as written,
//! their validation, and the projection formula. Does not own the combining of the three
//! readings taken at the same time (the parent module's `max_skew` history, as for pairs), nor
//! the output series' names and tags ([`super`]).
//!
//! With φ the azimuth of the movement (clockwise from north) and δ its plunge below the
//! horizontal (the slope angle of a planar slide):
//! - horizontal along-slope: `d_h = dE·sin φ + dN·cos φ`;
//! - along the slope, when δ is given: `d = d_h·cos δ − dU·sin δ` (up is positive, a sliding
//!   mass moves down).
//!
//! The transverse share (across the azimuth) drops out of both; a point that moves exactly
//! along (φ, δ) gives its full displacement in `d`.

use serde::Deserialize;

/// One GNSS point of an `along_slope` block as written: its three channel keys (`up` only for
/// the along-slope displacement with `dip_deg`) and, optionally, the output point.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GnssPointConfig {
    /// Channel key `device/point` of the east displacement (CIGEM `gpsTotalX`).
    pub east: String,
    /// Channel key of the north displacement (CIGEM `gpsTotalY`).
    pub north: String,
    /// Channel key of the up displacement (CIGEM `gpsTotalZ`), needed with `dip_deg`.
    #[serde(default)]
    pub up: Option<String>,
    /// Output point, instead of the east point's name up to its last `.` plus `.<block name>`.
    #[serde(default)]
    pub point: Option<String>,
}

/// A validated GNSS point: its input channel keys in the order the projection takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GnssPoint {
    /// East, north, and up when the block projects along the slope.
    pub inputs: Vec<String>,
    /// Output device (the east channel's).
    pub device: String,
    /// Output point.
    pub point: String,
}

/// The direction an `along_slope` block projects on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Direction {
    /// φ, radians clockwise from north.
    pub azimuth: f64,
    /// δ, radians below the horizontal, when the projection is along the slope (3-D).
    pub plunge: Option<f64>,
}

impl Direction {
    /// The displacement along the direction from `[east, north]` or `[east, north, up]` (the
    /// inputs of a [`GnssPoint`]); `None` when the count does not match the direction.
    #[must_use]
    pub fn project(&self, enu: &[f64]) -> Option<f64> {
        let along = |e: f64, n: f64| e * self.azimuth.sin() + n * self.azimuth.cos();
        match (enu, self.plunge) {
            ([e, n], None) => Some(along(*e, *n)),
            ([e, n, u], Some(d)) => Some(along(*e, *n) * d.cos() - u * d.sin()),
            _ => None,
        }
    }
}

/// Validate the `gnss` entries of block `name` at `at` with `dip_deg` given or not; the block's
/// `point` template, if any, names single-entry outputs.
pub fn validate(
    name: &str,
    entries: &[GnssPointConfig],
    three_d: bool,
    at: &str,
    problems: &mut Vec<(String, String)>,
) -> Vec<GnssPoint> {
    let mut points = Vec::new();
    if entries.is_empty() {
        problems.push((
            format!("{at}.gnss"),
            "missing: an along_slope block needs its GNSS points, e.g. gnss = [{ east = \"51010400301/L1_GP_1.gpsTotalX\", north = \"51010400301/L1_GP_1.gpsTotalY\", up = \"51010400301/L1_GP_1.gpsTotalZ\" }]".into(),
        ));
    }
    for (i, g) in entries.iter().enumerate() {
        let path = |field: &str| format!("{at}.gnss[{i}].{field}");
        let mut inputs = vec![g.east.clone(), g.north.clone()];
        match (&g.up, three_d) {
            (Some(up), true) => inputs.push(up.clone()),
            (None, true) => problems.push((
                path("up"),
                "missing: with dip_deg the along-slope displacement needs the up component; give up = \"device/point\" or leave dip_deg out for the horizontal one".into(),
            )),
            (Some(_), false) => problems.push((
                path("up"),
                "is used only with dip_deg (the along-slope displacement); give dip_deg or remove up".into(),
            )),
            (None, false) => {}
        }
        let mut keys_ok = true;
        for (field, key) in [
            ("east", Some(&g.east)),
            ("north", Some(&g.north)),
            ("up", g.up.as_ref()),
        ] {
            let Some(key) = key else { continue };
            if !super::config::is_channel_key(key) {
                keys_ok = false;
                problems.push((
                    path(field),
                    format!("\"{key}\" is not a channel key; write \"device/point\""),
                ));
            }
        }
        if !keys_ok {
            continue;
        }
        let (device, east_point) = g.east.split_once('/').unwrap_or((&g.east, ""));
        let point = g.point.clone().unwrap_or_else(|| {
            let stem = east_point.rsplit_once('.').map_or(east_point, |(s, _)| s);
            format!("{stem}.{name}")
        });
        points.push(GnssPoint {
            inputs,
            device: device.to_owned(),
            point,
        });
    }
    points
}

/// Check `azimuth_deg` (required, 0–360) and `dip_deg` (optional, 0–90) of block at `at`.
pub fn direction(
    azimuth_deg: Option<f64>,
    dip_deg: Option<f64>,
    at: &str,
    problems: &mut Vec<(String, String)>,
) -> Direction {
    let azimuth = match azimuth_deg {
        Some(a) if a.is_finite() && (0.0..=360.0).contains(&a) => a,
        Some(a) => {
            problems.push((format!("{at}.azimuth_deg"), format!("{a} is not an azimuth; give the direction the slope moves in, degrees clockwise from north (0-360)")));
            0.0
        }
        None => {
            problems.push((format!("{at}.azimuth_deg"), "missing: the direction the slope moves in, degrees clockwise from north (the dip direction), e.g. azimuth_deg = 135".into()));
            0.0
        }
    };
    let plunge = dip_deg.map(|d| {
        if !(d.is_finite() && (0.0..=90.0).contains(&d)) {
            problems.push((format!("{at}.dip_deg"), format!("{d} is not a slope angle; give degrees below the horizontal (0-90), or leave it out for the horizontal displacement")));
        }
        d.to_radians()
    });
    Direction {
        azimuth: azimuth.to_radians(),
        plunge,
    }
}

#[cfg(test)]
mod tests;
