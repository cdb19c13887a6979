//! Concrete curing per pour (issue 8 item 1) on the simulator's truth: the curing-pour scenario's
//! two rafts as `[[pours]]` over their MQTT curing nodes, one on a hyperbolic strength curve
//! (equivalent age, ASTM C1074 annex) and one on a logarithmic curve (Nurse–Saul maturity,
//! T0 = −10 °C). Each strength milestone (1.2 MPa, the winter critical strength, 50 / 75 /
//! 100 % of the design strength) is stored once in the `alerts` measurement as a notice, at the
//! time the test computes from the served truth temperatures with the C1074 formulas (the
//! weakest of core and surface deciding), within 1 h. With no insulation removal configured, the
//! strip advice (GB 50496-2018 §3.0.4-4: not while the surface is more than 20 °C above the air,
//! again once it is 2 °C below that) is stored at the samples where the served surface and air
//! temperatures cross those lines.

use std::time::Duration;

use anju_system::{start_gateway, wait_until, ExportedSeries, VictoriaMetrics};
use anyhow::{ensure, Context as _, Result};
use firmware_sim::{ClockMode, Truth};

/// Samples of 10 min: 40 h, inside VictoriaMetrics' 2 days ahead of the wall clock.
const STEPS: usize = 240;
/// Export samples up to this Unix time (ms, year 2100): past the simulated 40 h.
const AHEAD: Option<i64> = Some(4_102_444_800_000);
/// The tolerance the issue sets on a milestone's time, ms.
const TOLERANCE_MS: i64 = 3_600_000;
/// R in J/(mol·K) and the 20 °C reference in K (ASTM C1074; Carino 1984).
const R: f64 = 8.314;
const T_REF_K: f64 = 293.15;

/// A mix as the test configures it and recomputes it.
struct Mix {
    name: &'static str,
    design: f64,
    datum: f64,
    energy: f64,
    critical: f64,
    /// `[[mixes]]` curve line.
    curve_toml: &'static str,
    /// The same curve: strength (MPa) from (Nurse–Saul M in °C·h, equivalent age in h).
    strength: fn(f64, f64) -> f64,
}

/// raft-a: C20 on the hyperbolic curve Su = 45 MPa, k = 0.03/h, t0 = 3 h (equivalent age).
fn hyperbolic(_m: f64, te: f64) -> f64 {
    let x = 0.03 * (te - 3.0);
    if x <= 0.0 {
        0.0
    } else {
        45.0 * x / (1.0 + x)
    }
}

/// raft-b: C20 on S = −25 + 15·log10(M) (Nurse–Saul, T0 = −10 °C).
fn logarithmic(m: f64, _te: f64) -> f64 {
    if m <= 0.0 {
        0.0
    } else {
        (-25.0 + 15.0 * m.log10()).max(0.0)
    }
}

const MIXES: [Mix; 2] = [
    Mix {
        name: "c20-hyp",
        design: 20.0,
        datum: 0.0,
        energy: 40_000.0,
        critical: 5.0,
        curve_toml: r#"{ form = "hyperbolic", su_mpa = 45.0, k_per_h = 0.03, t0_h = 3.0 }"#,
        strength: hyperbolic,
    },
    Mix {
        name: "c20-log",
        design: 20.0,
        datum: -10.0,
        energy: 33_500.0,
        critical: 6.0,
        curve_toml: r#"{ form = "logarithmic", a_mpa = -25.0, b_mpa = 15.0 }"#,
        strength: logarithmic,
    },
];

/// (pour, node, mix index).
const POURS: [(&str, &str, usize); 2] =
    [("raft-a", "raft-a-node", 0), ("raft-b", "raft-b-node", 1)];

/// The milestones of a mix: (rule suffix, MPa).
fn milestones(mix: &Mix) -> Vec<(&'static str, f64)> {
    vec![
        ("walk-on", 1.2),
        ("winter-critical", mix.critical),
        ("strength-50", 0.5 * mix.design),
        ("strength-75", 0.75 * mix.design),
        ("strength-100", mix.design),
    ]
}

/// The strength of one sensor at each of its served samples, integrated from `placed_ms` by
/// the trapezoid rule (ASTM C1074: M = Σ(Ta − T0)Δt, t_e = Σ exp(−E/R(1/Ta − 1/Tr))Δt).
fn strengths(truth: &Truth, node: &str, point: &str, placed_ms: i64, mix: &Mix) -> Vec<(i64, f64)> {
    let mut samples: Vec<(i64, f64)> = truth
        .samples_of(node, point)
        .iter()
        .map(|s| (s.ts_ns / 1_000_000, s.value))
        .filter(|(t, _)| *t >= placed_ms)
        .collect();
    samples.sort_by_key(|(t, _)| *t);
    let (mut m, mut te) = (0.0, 0.0);
    let mut prev: Option<(i64, f64)> = None;
    let mut out = Vec::new();
    for (t, v) in samples {
        let (t0, v0) = prev.unwrap_or((placed_ms, v));
        let hours = (t - t0) as f64 / 3_600_000.0;
        let ta = 0.5 * (v0 + v);
        m += (ta - mix.datum).max(0.0) * hours;
        te += (-(mix.energy / R) * (1.0 / (ta + 273.15) - 1.0 / T_REF_K)).exp() * hours;
        out.push((t, (mix.strength)(m, te)));
        prev = Some((t, v));
    }
    out
}

/// When the weaker of core and surface first reaches `threshold`, ms.
fn reached(core: &[(i64, f64)], surface: &[(i64, f64)], threshold: f64) -> Option<i64> {
    core.iter()
        .filter_map(|(t, c)| {
            surface
                .iter()
                .find(|(ts, _)| ts == t)
                .map(|(_, s)| (*t, c.min(*s)))
        })
        .find(|(_, s)| *s >= threshold)
        .map(|(t, _)| t)
}

/// The sample times (ms) at which the strip advice of a pour turns, from the served surface and
/// air temperatures of `node`: "do not strip" at the first sample more than
/// [`SURFACE_AMBIENT_LIMIT_C`] above the air, "may strip" at the next one at most
/// [`STRIP_ADVICE_DEADBAND_C`] below it, and so on.
fn strip_turns(truth: &Truth, node: &str) -> Vec<i64> {
    use anju_gateway::engine::curing::config::{STRIP_ADVICE_DEADBAND_C, SURFACE_AMBIENT_LIMIT_C};
    let air: Vec<(i64, f64)> = truth
        .samples_of(node, "ambient")
        .iter()
        .map(|s| (s.ts_ns / 1_000_000, s.value))
        .collect();
    let mut surface: Vec<(i64, f64)> = truth
        .samples_of(node, "surface")
        .iter()
        .map(|s| (s.ts_ns / 1_000_000, s.value))
        .collect();
    surface.sort_by_key(|(t, _)| *t);
    let mut hold = false;
    let mut turns = Vec::new();
    for (t, v) in surface {
        let Some((_, a)) = air.iter().find(|(ta, _)| *ta == t) else {
            continue;
        };
        let diff = v - a;
        let turn = if hold {
            diff <= SURFACE_AMBIENT_LIMIT_C - STRIP_ADVICE_DEADBAND_C
        } else {
            diff > SURFACE_AMBIENT_LIMIT_C
        };
        if turn {
            hold = !hold;
            turns.push(t);
        }
    }
    turns
}

/// The notices in the `alerts` measurement: (rule, event time ms) of each stored `state` point
/// of kind `notice`.
fn notices(series: &[ExportedSeries]) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for s in series {
        if s.metric.get("kind").map(String::as_str) != Some("notice") {
            continue;
        }
        let rule = s.metric.get("rule").cloned().unwrap_or_default();
        for (t, v) in s.timestamps.iter().zip(&s.values) {
            if *v == anju_gateway::alert::AlertState::Notice.code() as f64 {
                out.push((rule.clone(), *t));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strength_milestones_land_at_the_times_the_truth_temperatures_give() -> Result<()> {
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let broker = anju_system::Mosquitto::start()?;
    let pty_dir = tempfile::tempdir()?;
    // The site first: the pours are placed at the scenario's t = 0 on the simulated clock.
    let site = crate::alerts::curing_site(broker.addr(), pty_dir.path(), ClockMode::Manual).await?;
    let placed_s = site.start_unix_s();
    let placed = anju_gateway::engine::derived::initial::format_ts(placed_s * 1_000_000_000);
    let dir = tempfile::tempdir()?;
    let mut config = crate::alerts::curing_gateway(dir.path(), broker.addr());
    for mix in &MIXES {
        config += &format!(
            "
[[mixes]]
name = \"{}\"
design_strength_mpa = {:?}
datum_temperature = {:?}
activation_energy = {:?}
critical_strength_mpa = {:?}
curve = {}
",
            mix.name, mix.design, mix.datum, mix.energy, mix.critical, mix.curve_toml
        );
    }
    for (pour, node, mix) in POURS {
        config += &format!(
            "
[[pours]]
name = \"{pour}\"
element = \"{pour} 筏板\"
placed_at = \"{placed}\"
mix = \"{}\"
sensors = {{ core = {{ channel = \"{node}/core\" }}, surface = {{ channel = \"{node}/surface\" }}, ambient = {{ channel = \"{node}/ambient\" }} }}
",
            MIXES[mix].name
        );
    }
    config += &format!(
        r#"
[alerts]
language = "en"

[[sinks]]
type = "influxdb"
url = "{}"
org = "county"
bucket = "anju"
batch_max_age = "100ms"
"#,
        vm.url()
    );
    let gw = start_gateway(&config, dir.path())?;
    gw.wait_for_mqtt_session().await?;
    for _ in 0..STEPS {
        site.step();
    }
    let last_ms = site.last_sample().unix_s * 1000;
    let expected = POURS.len() * 5;
    let stored = wait_until(
        Duration::from_secs(90),
        "every milestone notice of both pours, the last strengths and the surface-air differences stored",
        || async {
            let n = vm
                .export_until("alerts_state", AHEAD)
                .await
                .map(|s| {
                    notices(&s)
                        .iter()
                        .filter(|(r, _)| !r.ends_with("/strip-advice"))
                        .count()
                })
                .unwrap_or(0);
            let last = vm
                .export_until("strength_value", AHEAD)
                .await
                .is_ok_and(|s| {
                    s.iter()
                        // Every sample after the first (sent before the gateway subscribed).
                        .filter(|s| s.timestamps.len() >= STEPS)
                        .count()
                        >= 2 * 2 * POURS.len()
                });
            // The surface-air difference under the insulation, asserted below sample by sample:
            // its last readings may reach the store in a later write than the strengths'.
            let covered = vm
                .export_until("temperature_value", AHEAD)
                .await
                .is_ok_and(|s| {
                    s.iter()
                        .filter(|s| {
                            s.metric.get("point").map(String::as_str)
                                == Some("surface.surface-ambient-covered")
                                && s.timestamps.len() + 1 >= STEPS
                        })
                        .count()
                        >= POURS.len()
                });
            n >= expected && last && covered
        },
    )
    .await;
    let got = notices(&vm.export_until("alerts_state", AHEAD).await?);
    if let Err(e) = stored {
        let last: Vec<_> = vm
            .export_until("strength_value", AHEAD)
            .await?
            .iter()
            .map(|s| {
                (
                    s.metric.get("point").cloned(),
                    s.metric.get("device").cloned(),
                    s.timestamps.len(),
                    s.timestamps.last().copied(),
                )
            })
            .collect();
        anyhow::bail!("{e}: notices stored {got:?}; strengths {last:?}, last sample {last_ms}");
    }
    let covered = vm.export_until("temperature_value", AHEAD).await?;
    gw.stop().await?;
    let truth = site.truth();
    site.shutdown().await;

    let placed_ms = placed_s * 1000;
    for (pour, node, mix) in POURS {
        let mix = &MIXES[mix];
        let core = strengths(&truth, node, "core", placed_ms, mix);
        let surface = strengths(&truth, node, "surface", placed_ms, mix);
        for (name, threshold) in milestones(mix) {
            let rule = format!("{pour}/{name}");
            let want = reached(&core, &surface, threshold).with_context(|| {
                format!("the scenario changed: {pour} never reaches {threshold} MPa in 40 h")
            })?;
            let stored: Vec<i64> = got
                .iter()
                .filter(|(r, _)| *r == rule)
                .map(|(_, t)| *t)
                .collect();
            ensure!(
                stored.len() == 1,
                "{rule}: {} notices stored (once per pour): {stored:?}",
                stored.len()
            );
            eprintln!(
                "{rule}: announced {} min after placing, the truth reaches {threshold} MPa after {} min",
                (stored[0] - placed_ms) / 60_000,
                (want - placed_ms) / 60_000
            );
            ensure!(
                (stored[0] - want).abs() <= TOLERANCE_MS,
                "{rule}: announced at {} ms, the truth reaches {threshold} MPa at {want} ms ({} min apart)",
                stored[0],
                (stored[0] - want) / 60_000
            );
        }
    }
    for (pour, node, _) in POURS {
        // The difference under the insulation is the served surface minus the served air.
        let (surface, air) = (
            truth.samples_of(node, "surface"),
            truth.samples_of(node, "ambient"),
        );
        let series = covered
            .iter()
            .find(|s| {
                s.metric.get("device").map(String::as_str) == Some(node)
                    && s.metric.get("point").map(String::as_str)
                        == Some("surface.surface-ambient-covered")
            })
            .with_context(|| format!("{pour}: no surface-ambient-covered series"))?;
        ensure!(
            series.timestamps.len() + 1 >= STEPS,
            "{pour}: {} samples",
            series.timestamps.len()
        );
        let mut largest = f64::MIN;
        for (t, v) in series.timestamps.iter().zip(&series.values) {
            let at = |p: &[firmware_sim::TrueSample]| {
                p.iter()
                    .find(|s| s.ts_ns / 1_000_000 == *t)
                    .map(|s| s.value)
            };
            let (Some(sv), Some(av)) = (at(&surface), at(&air)) else {
                anyhow::bail!("{pour}: no served sample at {t}");
            };
            ensure!(
                (v - (sv - av)).abs() < 1e-6,
                "{pour} at {t}: {v} stored, {sv} − {av} served"
            );
            largest = largest.max(*v);
        }
        eprintln!("{pour}: surface − air under the insulation up to {largest:.2} °C");
        let rule = format!("{pour}/strip-advice");
        let stored: Vec<i64> = got
            .iter()
            .filter(|(r, _)| *r == rule)
            .map(|(_, t)| *t)
            .collect();
        let want = strip_turns(&truth, node);
        eprintln!("{rule}: stored at {stored:?}, the truth turns at {want:?}");
        ensure!(
            stored == want,
            "{rule}: stored at {stored:?}, the served surface and air turn at {want:?}"
        );
    }
    // The milestones come in order of their strength, not all at once: the 100 % of raft-a
    // comes hours after its walk-on.
    let at = |rule: &str| got.iter().find(|(r, _)| r == rule).map(|(_, t)| *t);
    let (walk, full) = (
        at("raft-a/walk-on").context("walk-on")?,
        at("raft-a/strength-100").context("100 %")?,
    );
    ensure!(
        full - walk > 6 * 3_600_000,
        "raft-a: walk-on at {walk}, 100 % at {full}"
    );
    Ok(())
}
