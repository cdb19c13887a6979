//! Slope early warning (issue 8 item 3) end to end: the slope-failure scenario's universal
//! geo-hazard device publishes its crack meter on `$dp` through a real mosquitto, hour by hour
//! (creep at 1.8 mm/d on the crack, rain steps on days 2 and 5, Fukuzono's inverse-velocity line
//! from day 10 to failure on day 20); the gateway derives the failure-time forecast and the
//! tangent angle from it (`[[derived]]` kinds `inverse_velocity`, `tangent_angle`) and raises the
//! example config's rule templates on them through its MQTT alert sink: the advisory comes once
//! fewer than 72 h are forecast, saying it is a predicted time to failure, and the tangent-angle
//! alert climbs yellow → orange → red after the onset, never orange or red before it.

use std::time::Duration;

use anju_system::wait_until;
use anyhow::{ensure, Context as _, Result};
use serde_json::Value;

use crate::alerts::{snapshot, SlopeFailureSite};

/// Onset of acceleration and failure of the scenario, days (config/sim/slope-failure.toml).
const ONSET_DAYS: f64 = 10.0;
/// See [`ONSET_DAYS`].
const FAILURE_DAYS: f64 = 20.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slope_forecast_advisory_and_tangent_angle_alerts_from_the_crack_meter() -> Result<()> {
    anju_system::init_tracing();
    let slope = SlopeFailureSite::start(
        r#"
[[derived]]
name = "inv"
kind = "inverse_velocity"
select = { channel = "51010400301/L1_LF_1" }

[[derived]]
name = "xu"
kind = "tangent_angle"
select = { channel = "51010400301/L1_LF_1" }
creep_rate = 1.8

[alerts]
language = "zh"

[[alerts.rules]]
name = "failure-forecast"
kind = "absolute"
select = { kind = "time_to_failure", tags = { derived = "inv" } }
lower = { blue = 72.0, yellow = 24.0 }
confirm = { count = 3 }

[[alerts.rules]]
name = "tangent-angle"
kind = "absolute"
select = { kind = "tangent_angle", tags = { derived = "xu" } }
upper = { yellow = 50.0, orange = 80.0, red = 85.0 }
confirm = { count = 2 }
clear = { deadband_abs = 2.0 }
"#,
    )
    .await?;
    let (upstream, gw, t0_ms) = (&slope.upstream, &slope.gw, slope.t0_ms);
    wait_until(
        Duration::from_secs(90),
        "a red tangent-angle alert and a forecast advisory upstream",
        || async {
            let got = snapshot(upstream);
            got.iter()
                .any(|a| a["rule"] == "tangent-angle" && a["level"] == "red")
                && got.iter().any(|a| a["rule"] == "failure-forecast")
        },
    )
    .await
    .with_context(|| gw.metrics.render())?;
    let upstream = slope.stop().await?;

    let alerts = snapshot(&upstream);
    let day =
        |a: &Value| (a["event_at"].as_i64().unwrap_or(0) / 1_000_000 - t0_ms) as f64 / 86_400_000.0;
    let of = |rule: &str| -> Vec<&Value> { alerts.iter().filter(|a| a["rule"] == rule).collect() };

    let advisory = of("failure-forecast");
    let first = advisory.first().context("an advisory")?;
    // 72 h are left on day 17; three readings confirm it, the smoothing lags about 3 h.
    ensure!(
        (FAILURE_DAYS - 3.0..FAILURE_DAYS - 2.5).contains(&day(first)),
        "advisory on day {:.2}: {first}",
        day(first)
    );
    ensure!(
        first["message"]
            .as_str()
            .is_some_and(|m| m.contains("预测距失稳剩余时间") && m.contains(" h，低于")),
        "the advisory says what it is: {}",
        first["message"]
    );
    ensure!(
        advisory
            .iter()
            .all(|a| a["level"] == "blue" || a["level"] == "yellow"),
        "an advisory is blue or yellow: {advisory:?}"
    );

    let tangent = of("tangent-angle");
    for a in &tangent {
        ensure!(
            day(a) >= ONSET_DAYS || (a["level"] != "orange" && a["level"] != "red"),
            "{} on day {:.2} in the creep stage: {a}",
            a["level"],
            day(a)
        );
    }
    let red = tangent
        .iter()
        .find(|a| a["level"] == "red")
        .context("red tangent-angle alert")?;
    let id = red["id"].as_str().context("id")?;
    let levels: Vec<&str> = tangent
        .iter()
        .filter(|a| a["id"] == id && a["state"] != "cleared")
        .filter_map(|a| a["level"].as_str())
        .collect();
    let rank = |l: &str| {
        ["blue", "yellow", "orange", "red"]
            .iter()
            .position(|x| *x == l)
            .unwrap_or(9)
    };
    ensure!(
        levels.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "levels out of order: {levels:?}"
    );
    ensure!(
        levels.first() == Some(&"yellow") && levels.contains(&"orange"),
        "expected yellow, orange, red: {levels:?}"
    );
    // tan α = (t_f − t_a)/(t_f − t): 85° on day 19.13; confirmed by two hourly readings.
    ensure!(
        (19.0..19.5).contains(&day(red)),
        "red on day {:.2}",
        day(red)
    );
    Ok(())
}

/// The crown GNSS station's along-slope displacement (issue 8 item 3, `along_slope`): east,
/// north and up as the simulator serves them over CIGEM (`L1_GP_1.gpsTotalX/Y/Z`), projected on
/// the scenario's movement (azimuth 135°, 30° below the horizontal). A rule at 30 mm on the
/// combination is raised at the first sample whose served components project to 30 mm or more,
/// with that projection as its value; and the projection is the point's true along-slide
/// displacement there (the simulator's noise-free `north.G1.disp`) within four standard
/// deviations of the GNSS noise along the slope (σ = √(cos²30°·1² + sin²30°·2.5²) = 1.52 mm).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crown_gnss_along_the_slope_is_raised_where_its_served_components_say() -> Result<()> {
    anju_system::init_tracing();
    let slope = SlopeFailureSite::start(
        r#"
[[derived]]
name = "along"
kind = "along_slope"
azimuth_deg = 135.0
dip_deg = 30.0
gnss = [{ east = "51010400301/L1_GP_1.gpsTotalX", north = "51010400301/L1_GP_1.gpsTotalY", up = "51010400301/L1_GP_1.gpsTotalZ" }]

[alerts]
language = "en"

[[alerts.rules]]
name = "gnss-along"
kind = "absolute"
select = { kind = "displacement", tags = { derived = "along" } }
upper = { yellow = 30.0 }
confirm = { count = 1 }
"#,
    )
    .await?;
    let (upstream, t0_ms) = (&slope.upstream, slope.t0_ms);
    wait_until(
        Duration::from_secs(90),
        "the along-slope displacement alert upstream",
        || async { snapshot(upstream).iter().any(|a| a["rule"] == "gnss-along") },
    )
    .await
    .with_context(|| slope.gw.metrics.render())?;
    let truth = slope.site.truth();
    let upstream = slope.stop().await?;
    let alerts = snapshot(&upstream);
    let raised = alerts
        .iter()
        .find(|a| a["rule"] == "gnss-along")
        .context("the alert")?;
    ensure!(
        raised["channel"] == "51010400301/L1_GP_1.along",
        "channel: {raised}"
    );

    // The served components by sample time (ms), and their projection.
    let served = |field: &str| -> std::collections::BTreeMap<i64, f64> {
        truth
            .samples_of("51010400301", &format!("L1_GP_1.{field}"))
            .iter()
            .map(|s| (s.ts_ns / 1_000_000, s.value))
            .collect()
    };
    let (e, n, u) = (
        served("gpsTotalX"),
        served("gpsTotalY"),
        served("gpsTotalZ"),
    );
    let (phi, delta) = (135_f64.to_radians(), 30_f64.to_radians());
    let along: Vec<(i64, f64)> = e
        .iter()
        .filter_map(|(t, de)| {
            let (dn, du) = (n.get(t)?, u.get(t)?);
            Some((
                *t,
                (de * phi.sin() + dn * phi.cos()) * delta.cos() - du * delta.sin(),
            ))
        })
        .collect();
    let (want_ms, want) = along
        .iter()
        .find(|(_, d)| *d >= 30.0)
        .copied()
        .context("the served components never project to 30 mm")?;
    let event_ms = raised["event_at"].as_i64().unwrap_or(0) / 1_000_000;
    let value = raised["value"].as_f64().unwrap_or(f64::NAN);
    ensure!(
        event_ms == want_ms && (value - want).abs() < 1e-6,
        "raised at {event_ms} ms with {value} mm; the served components project to {want} mm first at {want_ms} ms"
    );
    // The truth: the crown point's noise-free along-slide displacement at that sample (the
    // physics channel `north.G1.disp`: creep, the two rain steps, Fukuzono's acceleration).
    let t = (event_ms - t0_ms) as f64 / 86_400_000.0;
    let truth_mm = truth
        .channel_samples()
        .iter()
        .find(|c| c.channel == "north.G1.disp" && c.ts_ns / 1_000_000 == event_ms)
        .map(|c| c.value)
        .context("no truth of north.G1.disp at the event's sample")?;
    ensure!(
        (value - truth_mm).abs() < 4.0 * 1.52,
        "day {t:.2}: {value} mm along the slope, the sliding mass moved {truth_mm:.2} mm"
    );
    Ok(())
}
