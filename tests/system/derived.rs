//! Derived channels (issue 7 items 2-4) on the simulator's truth: the normal-site levelling line
//! (cells at installation heads 312.4 / 305.9 / 298.2 / 309.7 mm, reference cell R at 301.3 mm
//! outside the settlement zone; the cells' water warmed by the sun to 15-35 °C, the reference's
//! at 12 °C in a pit, each head read at its water's density and corrected by the gateway from
//! the logger's temperature points) read over Modbus TCP through its three load steps and a gateway
//! restart; the settlement of every cell and the tilt of every pair of corners, derived by the
//! gateway from raw heads and stored as series of their own, equal the simulator's physics,
//! from configured initial values and from initial values the gateway established at its first
//! poll and kept across the restart, and from one re-zeroed with `gateway baseline rezero` while
//! the gateway was stopped (a cell replacement: counted from the first poll after it, the old
//! value kept in the spool's history). And the curing pour's core − surface difference and core
//! cooling rate, over MQTT, equal those of the served truth.

use std::time::Duration;

use anju_system::{landed, profiles_dir, start_gateway, wait_until, Landed, VictoriaMetrics};
use anyhow::{ensure, Context as _, Result};
use firmware_sim::{ClockMode, Scenario, Site, StartOptions, Truth};

/// Installation heads of the cells (the scenario's offsets), mm: the configured initial values.
const HEADS: [(&str, f64); 5] = [
    ("ch1", 312.4),
    ("ch2", 305.9),
    ("ch3", 298.2),
    ("ch4", 309.7),
    ("ch5", 301.3),
];
/// Volumetric expansion of the cells' water per °C, the simulator's and Geokon 4675LV's.
const LIQUID_EXPANSION: f64 = 0.0002;
/// The cells' liquid in the sun: twice the raft's ambient swing around 25 °C (15-35 °C over a
/// day), as a mapping of the simulator (`liquid_temperature`), served as the logger's `temp1`.
const SUNNY_LIQUID: &str =
    "{ channel = \"raft-a.ambient\", gain = 2.0, offset = -15.0, noise = 0.0 }";
/// The reference cell's liquid in a pit: 12 °C all day, served as `temp2`.
const PIT_LIQUID: &str = "{ channel = \"raft-a.ambient\", gain = 0.0, offset = 12.0, noise = 0.0 }";
/// Liquid temperature of the survey of the configured initial values: the cells' (°C), the
/// reference's is [`PIT_LIQUID`]'s.
const SURVEY_LIQUID_C: f64 = 20.0;
/// See [`SURVEY_LIQUID_C`].
const PIT_LIQUID_C: f64 = 12.0;

/// What a cell with a column of `head` mm reads at liquid temperature `t` °C.
fn read_at(head: f64, t: f64) -> f64 {
    head * (1.0 - LIQUID_EXPANSION * t)
}

/// Cell → settlement point of the scenario.
const CELLS: [(&str, &str); 4] = [("ch1", "A1"), ("ch2", "A2"), ("ch3", "A3"), ("ch4", "A4")];
/// The scenario's pairs of corners with their plan distance (m).
const PAIRS: [(&str, &str, f64); 4] = [
    ("ch1", "ch2", 18.0),
    ("ch2", "ch3", 12.0),
    ("ch3", "ch4", 18.0),
    ("ch4", "ch1", 12.0),
];
/// Samples taken between two looks of the gateway (5 min each: 5 h).
const STEPS_PER_LOOK: usize = 60;
/// Looks before and after the restart: 40 h of simulated time, ahead of the wall clock by at
/// most that (VictoriaMetrics refuses samples more than 2 days ahead).
const LOOKS: usize = 4;
/// The normal-site load steps and consolidation, compressed from 20 days to 28 hours so that
/// the whole history fits in those 40 h: `(as written, compressed)`.
const COMPRESSED: [(&str, &str); 4] = [
    ("consolidation_days = 45.0", "consolidation_days = 0.5"),
    ("at = \"0s\"\nramp = \"6d\"", "at = \"0s\"\nramp = \"6h\""),
    ("at = \"8d\"\nramp = \"6d\"", "at = \"12h\"\nramp = \"6h\""),
    ("at = \"16d\"\nramp = \"4d\"", "at = \"24h\"\nramp = \"4h\""),
];

/// The hillside piezometer's calibration as the test's sheet gives it: the scenario's reader
/// reports digits `R = 8500 − 50·P` (config/sim/normal-site.toml, `hill-piezo`), so the gauge
/// factor is −0.02 kPa/digit and the zero reading 8500 digits; a thermal factor of 0.05 kPa/°C
/// from 20 °C makes the reader's thermistor count.
const VW_G: f64 = -0.02;
/// See [`VW_G`].
const VW_R0: f64 = 8500.0;
/// See [`VW_G`].
const VW_K: f64 = 0.05;
/// See [`VW_G`].
const VW_T0: f64 = 20.0;

/// Export samples up to this Unix time (ms, year 2100): past the simulated 40 h.
const AHEAD: Option<i64> = Some(4_102_444_800_000);

fn gateway_config(
    addr: &str,
    tty: &std::path::Path,
    vm_url: &str,
    dir: &std::path::Path,
) -> String {
    // Each initial value as read at its survey, with the liquid's temperature then.
    let initial: Vec<String> = HEADS
        .iter()
        .map(|(p, h)| {
            let t = if *p == "ch5" {
                PIT_LIQUID_C
            } else {
                SURVEY_LIQUID_C
            };
            format!(
                "\"block-a-lvl/{p}\" = {{ value = {}, temperature = {t:?} }}",
                read_at(*h, t)
            )
        })
        .collect();
    let pairs: Vec<String> = PAIRS
        .iter()
        .map(|(a, b, d)| {
            format!("{{ a = \"block-a-lvl/{a}.settlement\", b = \"block-a-lvl/{b}.settlement\", distance_m = {d} }}")
        })
        .collect();
    format!(
        r#"
site = "anju-normal"
gateway_id = "gw-test"
data_dir = "{data}"
profiles_dir = "{profiles}"

[engine]
flush_interval = "50ms"
# The simulator's clock runs ahead of the wall clock.
max_future = "3650d"

[[devices]]
name = "block-a-lvl"
transport = "tcp"
address = "{addr}"
profile = "levelling-8ch"
poll_interval = "100ms"
timeout = "500ms"
tags = {{ structure = "block-A" }}

# The hillside piezometer's reader on RS-485: besides its own pressure (the profile's points),
# the gateway reads the reader's digits register and converts it with the gauge's calibration
# sheet (issue 7 item 1): P = G·(R1 − R0) + K·(T1 − T0) (Geokon 4500 manual; docs/DOMAIN.md
# §Sensors), T1 from the reader's thermistor point `temp`, read in the same poll.
[[serial_ports]]
name = "rs485-1"
path = "{tty}"
baud = 9600

[[devices]]
name = "hill-piezo"
transport = "rtu"
port = "rs485-1"
unit = 2
profile = "vw-piezometer"
poll_interval = "100ms"
timeout = "500ms"

[[devices.points]]
name = "pore"
function = "holding"
address = 2
type = "f32"
unit = "kPa"
quantity = "pore_pressure"
time_address = 10
conversion = {{ type = "vibrating_wire", input = "digits", gauge_factor = {VW_G}, zero_reading = {VW_R0:?}, thermal_factor = {VW_K}, zero_temperature = {VW_T0:?}, temperature = "temp" }}

[[derived]]
name = "settlement"
kind = "levelling"
select = {{ device = "block-a-lvl", kind = "level" }}
reference = "block-a-lvl/ch5"
surveyed = "2026-11-02"
initial = {{ {initial} }}
# The cells' water warms in the sun, the reference's stays cool in its pit: heads corrected for
# the liquid's density (Geokon 4675LV, docs/DOMAIN.md §Hydrostatic levelling).
liquid_temperature = "{{device}}/temp1"
liquid_temperatures = {{ "block-a-lvl/ch5" = "block-a-lvl/temp2" }}


[[derived]]
name = "tilt"
kind = "tilt"
pairs = [{pairs}]

# JGJ 8-2016 §7.1.5 item 4: a cell is stable once its rate over the last 100 days is below
# 0.04 mm/d and it has been watched that long; block A once all its cells are.
[[derived]]
name = "stable"
kind = "stability"
select = {{ kind = "settlement", tags = {{ derived = "settlement" }} }}
threshold = 0.04
structure_tag = "structure"

# The same cells with initial values established by the gateway from its first poll.
[[derived]]
name = "since-first"
kind = "levelling"
select = {{ device = "block-a-lvl", kind = "level" }}
reference = "block-a-lvl/ch5"
establish_readings = 1
liquid_temperature = "{{device}}/temp1"
liquid_temperatures = {{ "block-a-lvl/ch5" = "block-a-lvl/temp2" }}

# Cell ch1 again, re-zeroed with `gateway baseline rezero` at the restart (a cell replacement):
# from then on its settlement counts from the first poll after the restart.
[[derived]]
name = "rezeroed"
kind = "levelling"
select = {{ device = "block-a-lvl", point = "ch1" }}
reference = "block-a-lvl/ch5"
establish_readings = 1
liquid_temperature = "{{device}}/temp1"
liquid_temperatures = {{ "block-a-lvl/ch5" = "block-a-lvl/temp2" }}

[[sinks]]
type = "influxdb"
url = "{vm_url}"
org = "county"
bucket = "anju"
batch_max_age = "100ms"
"#,
        data = dir.display(),
        tty = tty.display(),
        profiles = profiles_dir().display(),
        initial = initial.join(", "),
        pairs = pairs.join(", "),
    )
}

/// The normal-site scenario with noiseless levelling cells (the tolerance, 0.1 mm, judges the
/// gateway's arithmetic and sign, not the cells' 0.05 mm noise: two cells give σ 0.07 mm) and
/// its load steps compressed in time ([`COMPRESSED`]).
fn noiseless_scenario(dir: &std::path::Path) -> Result<Scenario> {
    let root = anju_system::repo_root();
    let mut text = std::fs::read_to_string(root.join("config/sim/normal-site.toml"))?;
    for (from, to) in COMPRESSED {
        ensure!(text.contains(from), "normal-site.toml changed: no `{from}`");
        text = text.replace(from, to);
    }
    for (point, head) in HEADS {
        let from = format!("offset = {head} }}");
        ensure!(
            text.contains(&from),
            "normal-site.toml changed: no `{from}`"
        );
        let liquid = if point == "ch5" {
            PIT_LIQUID
        } else {
            SUNNY_LIQUID
        };
        let mut to = format!("offset = {head}, noise = 0.0, liquid_temperature = {liquid} }}");
        if point == "ch5" {
            to.push_str(&format!(", temp1 = {SUNNY_LIQUID}, temp2 = {PIT_LIQUID}"));
        }
        text = text.replace(&from, &to);
    }
    let file = dir.join("normal-site.toml");
    std::fs::write(&file, text)?;
    Ok(Scenario::load_with_profiles(
        &file,
        &root.join("config/profiles"),
    )?)
}

/// The true value of a physics channel at `ts_ms`.
fn truth_at(truth: &Truth, channel: &str, ts_ms: i64) -> Result<f64> {
    truth
        .channel(channel)
        .iter()
        .find(|s| s.ts_ns / 1_000_000 == ts_ms)
        .map(|s| s.value)
        .with_context(|| format!("no true {channel} at {ts_ms} ms"))
}

/// Compare every stored value of `point` with the truth channel; returns how many.
fn check(
    got: &Landed,
    truth: &Truth,
    point: &str,
    channel: &str,
    tolerance: f64,
) -> Result<Vec<(i64, f64)>> {
    let samples = got
        .get(&("block-a-lvl".to_owned(), point.to_owned()))
        .with_context(|| format!("no {point} stored"))?;
    let mut checked = Vec::new();
    for (ts, values) in samples {
        let want = truth_at(truth, channel, *ts)?;
        for v in values {
            ensure!(
                (v - want).abs() <= tolerance,
                "{point} at {ts} ms: stored {v}, the truth {channel} is {want}"
            );
        }
        checked.push((*ts, want));
    }
    Ok(checked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levelling_settlement_and_tilt_are_stored_equal_to_the_truth_across_a_restart() -> Result<()>
{
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let scenario_dir = tempfile::tempdir()?;
    let scenario = noiseless_scenario(scenario_dir.path())?;
    let pty_dir = tempfile::tempdir()?;
    let site = Site::start(
        &scenario,
        StartOptions {
            pty_dir: Some(pty_dir.path().to_path_buf()),
            clock: ClockMode::Manual,
            ..Default::default()
        },
    )
    .await?;
    let addr = site
        .tcp_addr("block-a-lvl")
        .context("levelling device")?
        .to_string();
    let dir = tempfile::tempdir()?;
    let tty = site
        .rtu_endpoint("rs485-1")
        .and_then(|e| e.gateway_path.clone())
        .context("the normal site's RS-485 bus on a pty")?;
    let config = gateway_config(&addr, &tty, &vm.url(), dir.path());

    // Each look: the simulator jumps ahead 5 h, then the gateway polls the newest sample.
    let mut gw = start_gateway(&config, dir.path())?;
    let mut restart_ms = 0;
    for look in 0..2 * LOOKS {
        if look == LOOKS {
            // Halfway: a restart. The initial values are configured; nothing is re-established,
            // except ch1 of `rezeroed`, re-zeroed by the technician's command while stopped.
            gw.stop().await?;
            restart_ms = site.last_sample().unix_s * 1000;
            let cfg = anju_gateway::config::Config::load(&dir.path().join("gateway.toml"))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let channels = ["block-a-lvl/ch1".to_owned()];
            let order = anju_gateway::baseline::Order {
                block: "rezeroed",
                channels: &channels,
                change: anju_gateway::engine::derived::initial::Change::Rezero {
                    reason: "cell replaced (test)".to_owned(),
                },
                readings: Some(1),
            };
            // Right after the gateway returned: it returns once its tasks have let go of the
            // spool (`run::FILES_RELEASE_WAIT`), and the command waits out a lock a child
            // process forked meanwhile still holds (`spool::offline::IN_USE_WAIT`).
            anju_gateway::baseline::carry_out(&cfg, &order, anju_gateway::model::now_ns())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            gw = start_gateway(&config, dir.path())?;
        }
        for _ in 0..STEPS_PER_LOOK {
            site.step();
        }
        let stamp_ms = site.last_sample().unix_s * 1000;
        let stored = wait_until(
            Duration::from_secs(20),
            "the newest tilt stored",
            || async {
                vm.export_until("tilt_value", AHEAD).await.is_ok_and(|s| {
                    s.iter()
                        .any(|s| s.timestamps.last().is_some_and(|t| *t >= stamp_ms))
                })
            },
        )
        .await;
        if let Err(e) = stored {
            let all = landed(&vm.export_until(".*_value", AHEAD).await?);
            let last: Vec<_> = all.iter().map(|(k, v)| (k, v.keys().last())).collect();
            anyhow::bail!("{e}: sample at {stamp_ms} ms; stored {last:?}");
        }
    }
    gw.stop().await?;
    let truth = site.truth();
    site.shutdown().await;

    let settlement = landed(&vm.export_until("settlement_value", AHEAD).await?);
    let mut largest: f64 = 0.0;
    for (cell, corner) in CELLS {
        let checked = check(
            &settlement,
            &truth,
            &format!("{cell}.settlement"),
            &format!("block-a.{corner}"),
            0.1,
        )?;
        ensure!(
            checked.len() >= 2 * LOOKS,
            "{cell}: only {} settlements",
            checked.len()
        );
        largest = largest.max(checked.iter().map(|(_, v)| *v).fold(0.0, f64::max));
    }
    // The premise of the liquid-temperature correction: on what the logger served, the heads
    // taken as read would have been off the truth by far more than the tolerance.
    let served = |point: &str| truth.samples_of("block-a-lvl", point);
    let (ch1, ch5) = (served("ch1"), served("ch5"));
    let worst = ch1
        .iter()
        .zip(&ch5)
        .filter_map(|(c, r)| {
            let uncorrected = (c.value - read_at(HEADS[0].1, SURVEY_LIQUID_C))
                - (r.value - read_at(HEADS[4].1, PIT_LIQUID_C));
            let want = truth_at(&truth, "block-a.A1", c.ts_ns / 1_000_000).ok()?;
            Some((uncorrected - want).abs())
        })
        .fold(0.0, f64::max);
    ensure!(
        worst > 0.5,
        "the scenario changed: uncorrected heads are off by {worst} mm at most"
    );
    // Through the three load steps: the corners settle toward 19-25 mm, so a wrong sign (or a
    // raw head) is far out.
    ensure!(
        largest > 10.0,
        "the scenario changed: largest settlement {largest} mm"
    );
    let tilt = landed(&vm.export_until("tilt_value", AHEAD).await?);
    for (a, b, _) in PAIRS {
        let corner = |c: &str| CELLS.iter().find(|(x, _)| *x == c).map(|(_, p)| *p);
        let channel = format!(
            "block-a.tilt.{}.{}",
            corner(a).context("cell")?,
            corner(b).context("cell")?
        );
        let checked = check(
            &tilt,
            &truth,
            &format!("{a}.settlement-{b}.settlement.tilt"),
            &channel,
            1e-5,
        )?;
        ensure!(
            checked.len() >= 2 * LOOKS,
            "{a}-{b}: only {} tilts",
            checked.len()
        );
    }

    // Issue 7 item 1: the piezometer's digits, converted by the gateway with the calibration
    // sheet and the reader's thermistor, equal the formula on what the reader served; the raw
    // digits are kept in the `raw` field; and the pressure is the truth's within the digits'
    // noise (σ 5 digits = 0.1 kPa) plus the thermal term.
    let pore = landed(&vm.export_until("pore_pressure_value", AHEAD).await?);
    let raw = landed(&vm.export_until("pore_pressure_raw", AHEAD).await?);
    let (digits_served, temp_served) = (
        truth.samples_of("hill-piezo", "digits"),
        truth.samples_of("hill-piezo", "temp"),
    );
    let served = |point: &str, ts: i64| -> Result<f64> {
        let samples = if point == "digits" {
            &digits_served
        } else {
            &temp_served
        };
        samples
            .iter()
            .find(|s| s.ts_ns / 1_000_000 == ts)
            .map(|s| s.value)
            .with_context(|| format!("hill-piezo/{point}: nothing served at {ts} ms"))
    };
    let converted = pore
        .get(&("hill-piezo".to_owned(), "pore".to_owned()))
        .with_context(|| {
            format!(
                "no converted pore pressure stored; stored: {:?}",
                pore.keys().collect::<Vec<_>>()
            )
        })?;
    let raws = raw
        .get(&("hill-piezo".to_owned(), "pore".to_owned()))
        .context("no raw digits stored")?;
    for (ts, values) in converted {
        let (digits, temp) = (served("digits", *ts)?, served("temp", *ts)?);
        let want = VW_G * (digits - VW_R0) + VW_K * (temp - VW_T0);
        for v in values {
            ensure!(
                (v - want).abs() <= 1e-6,
                "hill-piezo/pore at {ts} ms: stored {v} kPa; digits {digits} and {temp} °C give {want}"
            );
        }
        let kept = raws.get(ts).context("no raw beside the value")?;
        ensure!(
            kept.iter().all(|r| (r - digits).abs() <= 1e-3),
            "hill-piezo/pore at {ts} ms: raw {kept:?}, the reader served {digits} digits"
        );
        let physics = truth_at(&truth, "hill.pore", *ts)?;
        ensure!(
            (values[0] - VW_K * (temp - VW_T0) - physics).abs() <= 0.6,
            "hill-piezo/pore at {ts} ms: {} kPa without the thermal term, the truth is {physics}",
            values[0] - VW_K * (temp - VW_T0)
        );
    }
    ensure!(
        converted.len() >= 2 * LOOKS,
        "only {} converted pressures",
        converted.len()
    );

    // Issue 8 item 2: no cell and no structure is declared stable while the truth still settles
    // faster than the threshold (here, through the load steps, by tens of mm a day).
    let verdicts = vm.export_until("status_value", AHEAD).await?;
    let mut cells_judged = 0;
    let mut structure_judged = 0;
    for v in verdicts
        .iter()
        .filter(|s| s.metric.get("derived").map(String::as_str) == Some("stable"))
    {
        let point = v.metric.get("point").cloned().unwrap_or_default();
        for (ts, value) in v.timestamps.iter().zip(&v.values) {
            ensure!(
                *value == 0.0,
                "{point} declared stable ({value}) at {ts} ms while block A still settles"
            );
        }
        if CELLS
            .iter()
            .any(|(cell, _)| point == format!("{cell}.settlement.stable"))
        {
            cells_judged += v.values.len();
        } else if !point.starts_with("ch") {
            structure_judged += v.values.len();
        }
    }
    ensure!(
        cells_judged >= CELLS.len() * 2 * LOOKS && structure_judged >= 2 * LOOKS,
        "verdicts stored: {cells_judged} for the cells, {structure_judged} for the structure: {:?}",
        verdicts.iter().map(|s| &s.metric).collect::<Vec<_>>()
    );
    // The premise: over every look (5 h) the truth settled faster than 0.04 mm/d.
    for (_, corner) in CELLS {
        let channel = format!("block-a.{corner}");
        let samples = truth.channel(&channel);
        for w in samples.chunks(STEPS_PER_LOOK) {
            let (Some(first), Some(last)) = (w.first(), w.last()) else {
                continue;
            };
            let days = (last.ts_ns - first.ts_ns) as f64 / 86_400e9;
            let per_day = (last.value - first.value) / days;
            ensure!(
                days <= 0.0 || per_day > 0.04,
                "the scenario changed: {channel} settled {per_day} mm/d in a look"
            );
        }
    }

    // Initial values established from the first poll survive the restart: every settlement
    // since then is the truth's change since that poll, before and after the restart.
    for (cell, corner) in CELLS {
        let stored = settlement
            .get(&("block-a-lvl".to_owned(), format!("{cell}.since-first")))
            .with_context(|| format!("no {cell}.since-first"))?;
        let first = *stored.keys().next().context("empty")?;
        let base = truth_at(&truth, &format!("block-a.{corner}"), first)?;
        for (ts, values) in stored {
            let want = truth_at(&truth, &format!("block-a.{corner}"), *ts)? - base;
            for v in values {
                ensure!(
                    (v - want).abs() <= 0.1,
                    "{cell}.since-first at {ts} ms: stored {v}, the truth moved {want} since {first}"
                );
            }
        }
        ensure!(
            stored.len() >= 2 * LOOKS,
            "{cell}: only {} since-first",
            stored.len()
        );
    }

    // `gateway baseline rezero` at the restart: ch1's settlement before it counts from the first
    // poll, after it from the first poll after the restart (its value 0 by definition; the
    // truth moved several mm in between, far beyond 0.1 mm).
    let rezeroed = settlement
        .get(&("block-a-lvl".to_owned(), "ch1.rezeroed".to_owned()))
        .context("no ch1.rezeroed")?;
    let first = *rezeroed.keys().next().context("empty")?;
    let at = |ts: i64| truth_at(&truth, "block-a.A1", ts);
    let moved = at(restart_ms)? - at(first)?;
    ensure!(
        moved > 1.0,
        "the scenario changed: ch1 moved {moved} mm before the restart"
    );
    let base = rezeroed
        .range(restart_ms..)
        .find(|(_, values)| values.iter().any(|v| v.abs() <= 0.1))
        .map(|(ts, _)| *ts)
        .context("no settlement re-zeroed after the restart")?;
    ensure!(
        rezeroed.range(restart_ms + 1..base).next().is_none(),
        "ch1.rezeroed stored after the restart before its new initial value: {:?}",
        rezeroed.range(restart_ms + 1..base).collect::<Vec<_>>()
    );
    let mut after = 0;
    for (ts, values) in rezeroed {
        for v in values {
            let before = at(*ts)? - at(first)?;
            let since = at(*ts)? - at(base)?;
            let ok = if *ts < base {
                (v - before).abs() <= 0.1
            } else if *ts == base {
                // The sample read on both sides of the restart has both values.
                (v - before).abs() <= 0.1 || v.abs() <= 0.1
            } else {
                after += 1;
                (v - since).abs() <= 0.1
            };
            ensure!(
                ok,
                "ch1.rezeroed at {ts} ms: stored {v}; before the re-zeroing {before}, since it {since}"
            );
        }
    }
    ensure!(
        after >= LOOKS - 1,
        "only {after} settlements after the re-zeroing"
    );
    let saved = anju_gateway::spool::offline::read_saved_state(dir.path())?.context("a spool")?;
    let (_, bytes) = saved
        .iter()
        .find(|(k, _)| k == "vi/rezeroed/block-a-lvl/ch1")
        .context("the re-zeroed record")?;
    let record: anju_gateway::engine::derived::Baseline = serde_json::from_slice(bytes)?;
    let history = record.history();
    ensure!(
        history.len() == 1
            && history[0].reason == "cell replaced (test)"
            && record.value().is_some(),
        "{record:?}"
    );

    // The series carry the derived tag, the quantity and the unit.
    let exported = vm.export_until("settlement_value", AHEAD).await?;
    let s = exported
        .iter()
        .find(|s| s.metric.get("point").map(String::as_str) == Some("ch1.settlement"))
        .context("ch1.settlement series")?;
    let tag = |k: &str| s.metric.get(k).map(String::as_str);
    ensure!(
        (tag("derived"), tag("unit"), tag("structure"))
            == (Some("settlement"), Some("mm"), Some("block-A")),
        "{:?}",
        s.metric
    );

    // ch6-ch8 have no initial value: their settlement is stored flagged (411), never guessed,
    // and their raw heads are stored as usual.
    let quality = vm.export_until("settlement_quality", AHEAD).await?;
    for p in ["ch6", "ch7", "ch8"] {
        let q = quality
            .iter()
            .find(|s| s.metric.get("point").map(String::as_str) == Some(&format!("{p}.settlement")))
            .with_context(|| format!("{p}.settlement quality"))?;
        ensure!(q.values.iter().all(|v| *v == 411.0), "{p}: {:?}", q.values);
    }
    ensure!(
        !settlement.contains_key(&("block-a-lvl".to_owned(), "ch6.settlement".to_owned())),
        "a settlement value without an initial value"
    );
    let heads = landed(&vm.export_until("level_value", AHEAD).await?);
    ensure!(
        heads.contains_key(&("block-a-lvl".to_owned(), "ch6".to_owned())),
        "ch6's own reading is stored"
    );
    Ok(())
}

/// Samples of the curing scenario taken in [`core_surface_and_cooling_rate_of_a_pour_equal_those_of_the_truth`]
/// (10 min each: 40 h, inside VictoriaMetrics' 2 days ahead).
const CURING_STEPS: usize = 240;
/// The cooling-rate window: 64 rate buckets of one sample interval (10 min) each.
const RATE_WINDOW_MIN: i64 = 640;

/// The rate window's bucket, ms (`RATE_WINDOW_MIN` / 64).
const BUCKET_MS: i64 = RATE_WINDOW_MIN * 60_000 / 64;

/// Least-squares slope of `(t ms, v)` in units of v per day.
fn slope_per_day(points: &[(i64, f64)]) -> f64 {
    let n = points.len() as f64;
    let days = |t: i64| t as f64 / 86_400_000.0;
    let mt = points.iter().map(|(t, _)| days(*t)).sum::<f64>() / n;
    let mv = points.iter().map(|(_, v)| *v).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|(t, v)| (days(*t) - mt) * (v - mv)).sum();
    let sxx: f64 = points.iter().map(|(t, _)| (days(*t) - mt).powi(2)).sum();
    sxy / sxx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_surface_and_cooling_rate_of_a_pour_equal_those_of_the_truth() -> Result<()> {
    anju_system::init_tracing();
    let vm = VictoriaMetrics::start()?;
    let broker = anju_system::Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let config = crate::alerts::curing_gateway(dir.path(), broker.addr())
        + &format!(
            r#"
# GB 50496-2018 §3.0.4-2: core − surface of every node, one block.
[[derived]]
name = "core-surface"
kind = "difference"
select = {{ point = "core" }}
b = "{{device}}/surface"
point = "core-surface"

# GB 50496-2018 §3.0.4-3: the core's cooling rate, °C/d.
[[derived]]
name = "cooling-rate"
kind = "rate"
select = {{ point = "core" }}
window = "{RATE_WINDOW_MIN}m"

# A difference rule on raft A: its value is a derived series of its own, stored (issue 7 item 4).
[[alerts.rules]]
name = "cs-rule"
kind = "difference"
pairs = [{{ a = "raft-a-node/core", b = "raft-a-node/surface" }}]
upper = {{ alarm = 25.0 }}

[[sinks]]
type = "influxdb"
url = "{vm_url}"
org = "county"
bucket = "anju"
batch_max_age = "100ms"
"#,
            vm_url = vm.url(),
        );
    let gw = start_gateway(&config, dir.path())?;
    gw.wait_for_mqtt_session().await?;
    let pty_dir = tempfile::tempdir()?;
    let site = crate::alerts::curing_site(broker.addr(), pty_dir.path(), ClockMode::Manual).await?;
    for _ in 0..CURING_STEPS {
        site.step();
    }
    let stored = wait_until(
        Duration::from_secs(60),
        "every core-surface difference of both rafts stored",
        || async {
            // By (device, point), as the checks below read them; that each is one series is
            // checked after the wait, with its own message.
            vm.export_until("temperature_value", AHEAD)
                .await
                .is_ok_and(|s| {
                    landed(&s)
                        .iter()
                        .filter(|((_, p), v)| p == "core-surface" && v.len() > CURING_STEPS)
                        .count()
                        == 2
                })
        },
    )
    .await;
    if let Err(e) = stored {
        let all = landed(&vm.export_until("temperature_.*", AHEAD).await?);
        let last: Vec<_> = all
            .iter()
            .map(|(k, v)| (k, v.len(), v.keys().last()))
            .collect();
        anyhow::bail!("{e}: stored {last:?}");
    }
    let series: Vec<_> = vm
        .export_until("temperature_value", AHEAD)
        .await?
        .into_iter()
        .filter(|s| s.metric.get("point").map(String::as_str) == Some("core-surface"))
        .map(|s| s.metric)
        .collect();
    ensure!(
        series.len() == 2,
        "one core-surface series per raft, with one tag set each: {series:?}"
    );
    gw.stop().await?;
    let truth = site.truth();
    site.shutdown().await;

    let got = landed(&vm.export_until("temperature_value", AHEAD).await?);
    // A rate is a quantity of its own (measurement `rate`), tagged with what it is the rate of.
    let rate_series = vm.export_until("rate_value", AHEAD).await?;
    ensure!(
        !rate_series.is_empty()
            && rate_series.iter().all(|s| {
                s.metric.get("rate_of").map(String::as_str) == Some("temperature")
                    && s.metric.get("unit").map(String::as_str) == Some("°C/d")
            }),
        "rate series: {:?}",
        rate_series.iter().map(|s| &s.metric).collect::<Vec<_>>()
    );
    let rates = landed(&rate_series);
    let mut largest: f64 = 0.0;
    for node in ["raft-a-node", "raft-b-node"] {
        let served = |point: &str| -> Vec<(i64, f64)> {
            truth
                .samples_of(node, point)
                .iter()
                .map(|s| (s.ts_ns / 1_000_000, s.value))
                .collect()
        };
        let (core, surface) = (served("core"), served("surface"));
        let stored = got
            .get(&(node.to_owned(), "core-surface".to_owned()))
            .with_context(|| format!("{node}: no core-surface"))?;
        ensure!(
            stored.len() > CURING_STEPS,
            "{node}: {} differences",
            stored.len()
        );
        for (ts, values) in stored {
            let at = |s: &[(i64, f64)]| s.iter().find(|(t, _)| t == ts).map(|(_, v)| *v);
            let want = at(&core).context("core")? - at(&surface).context("surface")?;
            ensure!(
                values.iter().all(|v| (v - want).abs() < 1e-9),
                "{node} core-surface at {ts}: {values:?}, the truth {want}"
            );
            largest = largest.max(want);
        }
        // The difference rule's own series (raft A only) holds the same truth.
        if node == "raft-a-node" {
            let judged = got
                .get(&(node.to_owned(), "core-surface.cs-rule".to_owned()))
                .with_context(|| format!("{node}: the rule's series is not stored"))?;
            ensure!(
                judged.len() > CURING_STEPS,
                "{node}: {} judged",
                judged.len()
            );
            for (ts, values) in judged {
                let at = |s: &[(i64, f64)]| s.iter().find(|(t, _)| t == ts).map(|(_, v)| *v);
                let want = at(&core).context("core")? - at(&surface).context("surface")?;
                ensure!(
                    values.iter().all(|v| (v - want).abs() < 1e-9),
                    "{node} cs-rule at {ts}: {values:?}, the truth {want}"
                );
            }
        }
        let stored = rates
            .get(&(node.to_owned(), "core.cooling-rate".to_owned()))
            .with_context(|| format!("{node}: no cooling rate in {:?}", rates.keys()))?;
        for (ts, values) in stored {
            let window: Vec<(i64, f64)> = core
                .iter()
                .filter(|(t, _)| {
                    // The window (rules/window.rs): the readings of the last 64 buckets of
                    // window/64 (here one sample interval) and of the bucket before them.
                    t <= ts && t.div_euclid(BUCKET_MS) >= ts.div_euclid(BUCKET_MS) - 64
                })
                .copied()
                .collect();
            let want = slope_per_day(&window);
            ensure!(
                values.iter().all(|v| (v - want).abs() < 1e-6),
                "{node} cooling rate at {ts}: {values:?}, the truth's slope over {} samples {want}",
                window.len()
            );
        }
        ensure!(
            stored.len() > CURING_STEPS / 2,
            "{node}: {} rates",
            stored.len()
        );
    }
    ensure!(
        largest > 10.0,
        "the scenario changed: largest difference {largest}"
    );
    Ok(())
}
