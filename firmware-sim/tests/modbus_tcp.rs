//! Modbus TCP slaves read with a real tokio-modbus client: values equal to the truth, the
//! exception rules, and going offline and back.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{decode, decode_time, within, SILENCE_TIMEOUT};
use firmware_sim::profile::{DataType, Function, Point, WordOrder};
use firmware_sim::{ClockMode, FaultKind, RunningSite, Scenario, Site, StartOptions};
use tokio_modbus::client::{tcp, Context};
use tokio_modbus::prelude::*;

/// Every profile over TCP, plus a strict tilt-crack.
const SCENARIO: &str = r#"
name = "tcp-all"
seed = 11
sample_interval = "1s"
site = "t"

[[modbus_tcp]]
name = "lvl"
profile = "levelling-8ch"
unit = 1

[[modbus_tcp]]
name = "tc"
profile = "tilt-crack"
unit = 7

[[modbus_tcp]]
name = "th"
profile = "thermistor-16"
unit = 1

[[modbus_tcp]]
name = "tc-strict"
profile = "tilt-crack"
unit = 1
strict_map = true

[[modbus_tcp]]
name = "ipi"
profile = "ipi-segment"
unit = 3

[[modbus_tcp]]
name = "piezo"
profile = "vw-piezometer"
unit = 1

[[modbus_tcp]]
name = "io"
profile = "io-relay"
unit = 1
"#;

fn scenario(dir: &Path) -> Scenario {
    let file = dir.join("tcp-all.toml");
    std::fs::write(&file, SCENARIO).expect("write scenario");
    Scenario::load_with_profiles(&file, &common::repo().join("config/profiles"))
        .expect("scenario loads")
}

async fn start(dir: &Path) -> (Scenario, RunningSite) {
    let s = scenario(dir);
    let site = Site::start(
        &s,
        StartOptions {
            clock: ClockMode::Manual,
            ..Default::default()
        },
    )
    .await
    .expect("site starts");
    (s, site)
}

async fn connect(addr: SocketAddr, unit: u8) -> Context {
    within("connect", tcp::connect_slave(addr, Slave(unit)))
        .await
        .expect("connect")
}

/// Reads `n` registers/bits of `function` from `address`; bits come back as 0/1.
async fn read(
    ctx: &mut Context,
    function: Function,
    address: u16,
    n: u16,
) -> Result<Vec<u16>, ExceptionCode> {
    let bits = |r: Vec<bool>| r.into_iter().map(u16::from).collect();
    let what = format!("{function} {address}+{n}");
    match function {
        Function::Coil => within(&what, ctx.read_coils(address, n))
            .await
            .expect("transport")
            .map(bits),
        Function::Discrete => within(&what, ctx.read_discrete_inputs(address, n))
            .await
            .expect("transport")
            .map(bits),
        Function::Holding => within(&what, ctx.read_holding_registers(address, n))
            .await
            .expect("transport"),
        Function::Input => within(&what, ctx.read_input_registers(address, n))
            .await
            .expect("transport"),
    }
}

/// Reads every point of every device and checks it against the truth of the sample in the
/// registers: the device's time registers when it has them, else the last sample.
async fn check_all(s: &Scenario, site: &RunningSite) -> usize {
    let truth = site.truth();
    let last = site.last_sample();
    let mut checked = 0;
    for slave in &s.modbus_tcp {
        let addr = site.tcp_addr(&slave.name).expect("tcp addr");
        let mut ctx = connect(addr, slave.unit).await;
        // A writable point holds what the master wrote, not a sample: it has no truth.
        for p in slave.profile.points.iter().filter(|p| !p.writable) {
            let regs = read(&mut ctx, p.function, p.address, p.width())
                .await
                .expect("point read");
            let value = decode(p, &regs);
            let ts_s = match p.time {
                Some((t, order)) => {
                    let t = read(&mut ctx, p.function, t, 2).await.expect("time read");
                    decode_time(&t, order)
                }
                None => last.unix_s,
            };
            assert_eq!(
                ts_s, last.unix_s,
                "{} {}: time registers hold the sample time",
                slave.name, p.name
            );
            let expected = truth
                .value_at(&slave.name, &p.name, ts_s * 1_000_000_000)
                .unwrap_or_else(|| panic!("no truth for {} {} at {ts_s}", slave.name, p.name));
            assert_eq!(
                value, expected,
                "{} {} (sample {})",
                slave.name, p.name, last.index
            );
            checked += 1;
        }
    }
    checked
}

#[tokio::test]
async fn every_profile_reads_back_the_truth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, site) = start(dir.path()).await;
    // Every profile file is served here (a new profile cannot be left out).
    let mut files: Vec<String> = std::fs::read_dir(common::repo().join("config/profiles"))
        .expect("profiles dir")
        .filter_map(|e| {
            let p = e.expect("entry").path();
            (p.extension()? == "toml")
                .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))?
        })
        .collect();
    files.sort();
    let mut used: Vec<String> = s
        .modbus_tcp
        .iter()
        .map(|d| d.profile.name.clone())
        .collect();
    used.sort();
    used.dedup();
    assert_eq!(used, files);
    let points: usize = s
        .modbus_tcp
        .iter()
        .map(|d| d.profile.points.iter().filter(|p| !p.writable).count())
        .sum();
    for _ in 0..3 {
        assert_eq!(check_all(&s, &site).await, points);
        site.step();
    }
    // One truth entry per point per tick, read or not: 3 checked ticks + the last step.
    assert_eq!(site.truth().samples().len(), points * 4);
    site.shutdown().await;
}

#[tokio::test]
async fn values_change_between_samples_and_stay_within_the_types() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, site) = start(dir.path()).await;
    for _ in 0..20 {
        site.step();
    }
    let truth = site.truth();
    let series = |p: &str| {
        truth
            .samples_of("lvl", p)
            .into_iter()
            .map(|s| s.value)
            .collect::<Vec<f64>>()
    };
    let ch1 = series("ch1");
    assert_eq!(ch1.len(), 21);
    assert!(
        ch1.windows(2).any(|w| w[0] != w[1]),
        "levelling channel must move"
    );
    // The u64 counter goes up by one per sample.
    let counter: Vec<f64> = truth
        .samples_of("tc", "samples")
        .into_iter()
        .map(|s| s.value)
        .collect();
    assert!(counter.windows(2).all(|w| w[1] - w[0] == 1.0));
    // Plausible engineering ranges.
    assert!(series("temp1").iter().all(|v| (5.0..=70.0).contains(v)));
    assert!(truth
        .samples_of("tc", "tilt_x")
        .iter()
        .all(|s| s.value.abs() <= 2.0 + 1e-6));
    assert!(truth
        .samples_of("tc", "crack")
        .iter()
        .all(|s| (0.0..=5.0).contains(&s.value)));
    assert!(truth
        .samples_of("lvl", "supply")
        .iter()
        .all(|s| (3.3..=13.0).contains(&s.value)));
    // Sample times are consecutive whole seconds.
    let ts: Vec<i64> = truth
        .samples_of("lvl", "ch1")
        .iter()
        .map(|s| s.ts_ns)
        .collect();
    assert!(ts.windows(2).all(|w| w[1] - w[0] == 1_000_000_000));
    site.shutdown().await;
}

#[tokio::test]
async fn exceptions_for_holes_ranges_functions_and_units() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, site) = start(dir.path()).await;
    let strict = site.tcp_addr("tc-strict").expect("addr");
    let loose = site.tcp_addr("tc").expect("addr");

    let mut ctx = connect(strict, 1).await;
    // tilt-crack maps input 0-21 and the time at 30-31; 22-29 is a hole.
    assert_eq!(
        read(&mut ctx, Function::Input, 0, 32).await,
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        read(&mut ctx, Function::Input, 22, 1).await,
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        read(&mut ctx, Function::Input, 0, 22)
            .await
            .map(|r| r.len()),
        Ok(22)
    );
    assert_eq!(
        read(&mut ctx, Function::Input, 30, 2)
            .await
            .map(|r| r.len()),
        Ok(2)
    );

    let mut ctx = connect(loose, 7).await;
    // Without strict_map the hole reads as zeros...
    let regs = read(&mut ctx, Function::Input, 0, 32)
        .await
        .expect("coalesced read");
    assert_eq!(&regs[22..30], &[0; 8]);
    // ...but beyond the map (last address 31) and unmapped tables are still exception 02.
    assert_eq!(
        read(&mut ctx, Function::Input, 31, 2).await,
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        read(&mut ctx, Function::Holding, 0, 1).await,
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        read(&mut ctx, Function::Coil, 0, 1).await,
        Err(ExceptionCode::IllegalDataAddress)
    );
    // Quantity above 125 registers: exception 03.
    assert_eq!(
        read(&mut ctx, Function::Input, 0, 126).await,
        Err(ExceptionCode::IllegalDataValue)
    );
    // A write to a register that is not writable (this device has none): exception 02.
    let w = within("write", ctx.write_single_register(0, 1))
        .await
        .expect("transport");
    assert_eq!(w, Err(ExceptionCode::IllegalDataAddress));
    // A unit id that is not this device: exception 0B; 255 (direct) is accepted.
    ctx.set_slave(Slave(9));
    assert_eq!(
        read(&mut ctx, Function::Input, 0, 2).await,
        Err(ExceptionCode::GatewayTargetDevice)
    );
    ctx.set_slave(Slave(255));
    assert!(read(&mut ctx, Function::Input, 0, 2).await.is_ok());
    site.shutdown().await;
}

#[tokio::test]
async fn coils_and_register_bits_follow_the_truth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, site) = start(dir.path()).await;
    let th = &s.modbus_tcp[2];
    let heater: &Point = th
        .profile
        .points
        .iter()
        .find(|p| p.name == "heater")
        .expect("heater");
    assert_eq!(
        (heater.function, heater.data_type),
        (Function::Coil, DataType::Bool)
    );
    let mut ctx = connect(site.tcp_addr("th").expect("addr"), 1).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..60 {
        let v = read(&mut ctx, Function::Coil, 0, 1).await.expect("coil");
        let ts = site.last_sample().unix_s * 1_000_000_000;
        let expected = site.truth().value_at("th", "heater", ts).expect("truth");
        assert_eq!(f64::from(v[0]), expected);
        seen.insert(v[0]);
        site.step();
    }
    assert_eq!(seen.len(), 2, "the heater relay switches over 60 samples");
    site.shutdown().await;
}

#[tokio::test]
async fn offline_device_times_out_then_answers_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, site) = start(dir.path()).await;
    let addr = site.tcp_addr("lvl").expect("addr");
    let mut ctx = connect(addr, 1).await;
    assert!(read(&mut ctx, Function::Input, 0, 2).await.is_ok());

    site.set_online("lvl", false).expect("known device");
    let silent = tokio::time::timeout(SILENCE_TIMEOUT, ctx.read_input_registers(0, 2)).await;
    assert!(
        silent.is_err(),
        "offline device must not answer: {silent:?}"
    );
    // A new connection is accepted but gets no answer either.
    let mut fresh = connect(addr, 1).await;
    assert!(
        tokio::time::timeout(SILENCE_TIMEOUT, fresh.read_input_registers(0, 2))
            .await
            .is_err()
    );
    let faults = site.truth().faults();
    assert_eq!(faults.len(), 1);
    assert_eq!(
        (faults[0].device.as_str(), faults[0].kind, faults[0].end_ns),
        ("lvl", FaultKind::Offline, None)
    );

    site.set_online("lvl", true).expect("known device");
    // After a timeout the old context is dropped (a late reply would corrupt it,
    // docs/ARCHITECTURE.md §Crate pitfalls).
    let mut ctx = connect(addr, 1).await;
    assert!(read(&mut ctx, Function::Input, 0, 2).await.is_ok());
    let faults = site.truth().faults();
    let end = faults[0].end_ns.expect("fault closed");
    assert!(end >= faults[0].start_ns);
    assert!(site.set_online("nope", false).is_err());
    site.shutdown().await;
}

#[test]
fn decoder_reads_the_geokon_vector() {
    // docs/DOMAIN.md §Modbus: C87C 4628 in CDAB is 0x4628C87C = 10802.12109375 (test-side decoder).
    let p = Point {
        name: "r".into(),
        function: Function::Holding,
        address: 0,
        data_type: DataType::F32,
        word_order: WordOrder::Cdab,
        bit: None,
        scale: 1.0,
        offset: 0.0,
        unit: String::new(),
        quantity: firmware_sim::quantity::Quantity::Resistance,
        time: None,
        writable: false,
    };
    assert_eq!(decode(&p, &[0xC87C, 0x4628]), 10_802.121_093_75);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_never_mixes_two_samples() {
    // At 1000× a 1 s interval ticks every millisecond, while a read of the whole levelling
    // map (values 0-31 and the time at 40-41) is in flight.
    let dir = tempfile::tempdir().expect("tempdir");
    let s = scenario(dir.path());
    let options = StartOptions {
        clock: ClockMode::Realtime { speed: 1000 },
        ..Default::default()
    };
    let site = Site::start(&s, options).await.expect("site starts");
    let lvl = &s.modbus_tcp[0];
    let mut ctx = connect(site.tcp_addr("lvl").expect("addr"), 1).await;
    let truth = site.truth();
    let mut times = std::collections::BTreeSet::new();
    // Read until the samples have moved on a few times (each read takes tens of µs, a tick
    // comes every ms), checking every read.
    for _ in 0..20_000 {
        if times.len() > 10 {
            break;
        }
        let regs = read(&mut ctx, Function::Input, 0, 42)
            .await
            .expect("whole map");
        let ts = decode_time(&regs[40..42], WordOrder::Cdab);
        times.insert(ts);
        for p in &lvl.profile.points {
            let a = usize::from(p.address);
            let got = decode(p, &regs[a..a + usize::from(p.width())]);
            let want = truth
                .value_at("lvl", &p.name, ts * 1_000_000_000)
                .expect("truth");
            assert_eq!(got, want, "{} at {ts}", p.name);
        }
    }
    assert!(
        times.len() > 10,
        "the samples moved on during the reads: {}",
        times.len()
    );
    // Sample times are consecutive seconds of simulated time.
    let ts: Vec<i64> = truth
        .samples_of("lvl", "ch1")
        .iter()
        .map(|t| t.ts_ns)
        .collect();
    assert!(ts.windows(2).all(|w| w[1] - w[0] == 1_000_000_000));
    site.shutdown().await;
}

#[tokio::test]
async fn real_time_ticks_on_whole_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = scenario(dir.path());
    let site = Site::start(&s, StartOptions::default())
        .await
        .expect("site starts");
    let first = site.last_sample();
    assert_eq!(first.index, 0);
    // Sample 0 carries the second the site started in.
    assert!(site.now_ns() / 1_000_000_000 - first.unix_s <= 1);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let last = site.last_sample();
    assert!((2..=3).contains(&last.index), "{last:?}");
    assert_eq!(
        last.unix_s,
        first.unix_s + i64::try_from(last.index).expect("small")
    );
    // A sample is taken no earlier than its second on the clock.
    assert!(site.now_ns() >= last.unix_s * 1_000_000_000);
    site.shutdown().await;
}

/// The relay module (`io`, config/profiles/io-relay.toml): what the master writes stays (samples
/// do not overwrite it) and is read back, and a write to a read-only or unmapped address is
/// refused with exception 02 (Modbus application protocol V1.1b3 §6.5, §6.6, §7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_keeps_what_was_written_and_refuses_other_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, site) = start(dir.path()).await;
    let addr = site.tcp_addr("io").expect("io listens");
    let mut ctx = connect(addr, 1).await;
    assert_eq!(site.modbus_output("io", Function::Coil, 0), Some(0));
    ctx.write_single_coil(0, true)
        .await
        .expect("transport")
        .expect("coil 0 is the siren relay");
    ctx.write_single_register(0, 300)
        .await
        .expect("transport")
        .expect("holding 0 is the sampling interval");
    for _ in 0..3 {
        site.step();
    }
    assert_eq!(site.modbus_output("io", Function::Coil, 0), Some(1));
    assert_eq!(site.modbus_output("io", Function::Holding, 0), Some(300));
    assert_eq!(
        ctx.read_coils(0, 2).await.expect("transport"),
        Ok(vec![true, false])
    );
    assert_eq!(
        ctx.write_single_coil(7, true).await.expect("transport"),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.write_single_register(1, 1).await.expect("transport"),
        Err(ExceptionCode::IllegalDataAddress)
    );
    ctx.write_single_coil(0, false)
        .await
        .expect("transport")
        .expect("off");
    assert_eq!(site.modbus_output("io", Function::Coil, 0), Some(0));
    site.shutdown().await;
}
