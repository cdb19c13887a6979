//! Every Modbus fault of `config/sim/faulty-devices.toml` seen on the wire, tick by tick on a
//! manual clock (one sample a minute): stuck, spike and drift against a fault-free twin of the
//! same site and seed; status flags; dropped samples; exceptions 02, 04 and 06; slow replies;
//! skewed time registers; an RTU slave going silent and back; garbage bytes and bad CRCs read raw
//! from the serial line; and the truth's record of every window.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{decode, decode_time, within, SILENCE_TIMEOUT};
use firmware_sim::profile::WordOrder;
use firmware_sim::rtu::{crc_ok, push_crc};
use firmware_sim::{ClockMode, FaultKind, RunningSite, Scenario, Site, StartOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_modbus::client::{tcp, Context};
use tokio_modbus::prelude::*;
use tokio_serial::SerialPortBuilderExt;

/// Time for a late reply to drain before a serial port is reopened (RTU has no transaction id,
/// docs/ARCHITECTURE.md §Crate pitfalls).
const SETTLE: Duration = Duration::from_millis(50);
/// How long a raw serial read collects bytes.
const RAW_WAIT: Duration = Duration::from_millis(300);

fn faulty() -> Scenario {
    Scenario::load(&common::repo().join("config/sim/faulty-devices.toml")).expect("loads")
}

async fn start(s: &Scenario, dir: &Path) -> RunningSite {
    Site::start(
        s,
        StartOptions {
            clock: ClockMode::Manual,
            pty_dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
    )
    .await
    .expect("site starts")
}

fn step_to(site: &RunningSite, k: u64) {
    while site.last_sample().index < k {
        site.step();
    }
}

async fn connect(site: &RunningSite, device: &str) -> Context {
    let addr = site.tcp_addr(device).expect("tcp device");
    within("connect", tcp::connect_slave(addr, Slave(1)))
        .await
        .expect("connect")
}

async fn input(ctx: &mut Context, address: u16, n: u16) -> Result<Vec<u16>, ExceptionCode> {
    within("read input", ctx.read_input_registers(address, n))
        .await
        .expect("transport")
}

/// Reads point `name` of `device` (input registers) and decodes it.
async fn point(s: &Scenario, ctx: &mut Context, device: &str, name: &str) -> f64 {
    let p = s
        .modbus_tcp
        .iter()
        .find(|d| d.name == device)
        .and_then(|d| d.profile.points.iter().find(|p| p.name == name))
        .expect("point");
    let regs = input(ctx, p.address, p.width())
        .await
        .expect("no exception");
    decode(p, &regs)
}

#[tokio::test]
async fn stuck_spike_drift_and_status_flag_against_a_fault_free_twin() {
    let s = faulty();
    let mut clean = s.clone();
    clean.faults.clear();
    let (d1, d2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let site = start(&s, d1.path()).await;
    let twin = start(&clean, d2.path()).await;
    let mut f_lvl = connect(&site, "lvl-f").await;
    let mut t_lvl = connect(&twin, "lvl-f").await;
    let mut f_tc = connect(&site, "tc-f").await;
    let mut t_tc = connect(&twin, "tc-f").await;
    let mut stuck_at = None;
    for k in 0..=70_u64 {
        step_to(&site, k);
        step_to(&twin, k);
        let (f1, t1) = (
            point(&s, &mut f_lvl, "lvl-f", "ch1").await,
            point(&s, &mut t_lvl, "lvl-f", "ch1").await,
        );
        let (f2, t2) = (
            point(&s, &mut f_lvl, "lvl-f", "ch2").await,
            point(&s, &mut t_lvl, "lvl-f", "ch2").await,
        );
        let status = point(&s, &mut f_lvl, "lvl-f", "status").await;
        // stuck ch1 in [10 min, 40 min): the reading of sample 10, repeated.
        if k == 10 {
            stuck_at = Some(t1);
        }
        if (10..40).contains(&k) {
            assert_eq!(Some(f1), stuck_at, "ch1 stuck at sample {k}");
        } else {
            assert_eq!(f1, t1, "ch1 at sample {k}");
        }
        // spike +25 mm on ch2 every 5th sample from 10 until 60 min (f32 near 300 mm: 3e-5 steps).
        if (10..60).contains(&k) && (k - 10) % 5 == 0 {
            assert!(
                (f2 - t2 - 25.0).abs() < 1e-3,
                "ch2 spike at {k}: {f2} vs {t2}"
            );
        } else {
            assert_eq!(f2, t2, "ch2 at sample {k}");
        }
        // status_flag in [50 min, 70 min): the status word reads 1 (bit 0 = fault), else 0.
        assert_eq!(
            status,
            if (50..70).contains(&k) { 1.0 } else { 0.0 },
            "status at {k}"
        );
        // drift 12 mm/d on tc-f displacement from 10 min; skip the dropout (20-30 min), which
        // leaves an older sample in the registers. i32 × 0.01 mm on both sides: within 0.01.
        if !(20..30).contains(&k) {
            let (fd, td) = (
                point(&s, &mut f_tc, "tc-f", "displacement").await,
                point(&s, &mut t_tc, "tc-f", "displacement").await,
            );
            let expect = if k >= 10 {
                12.0 * (k as f64 - 10.0) * 60.0 / 86_400.0
            } else {
                0.0
            };
            assert!(
                (fd - td - expect).abs() <= 0.01 + 1e-9,
                "drift at {k}: {} vs {expect}",
                fd - td
            );
        }
    }
    // The truth holds what was served: the stuck value during the window.
    let truth = site.truth();
    let t0 = site.start_unix_s();
    for k in [10_i64, 25, 39] {
        let v = truth.value_at("lvl-f", "ch1", (t0 + 60 * k) * 1_000_000_000);
        assert_eq!(v, stuck_at, "truth of ch1 at {k}");
    }
    site.shutdown().await;
    twin.shutdown().await;
}

#[tokio::test]
async fn dropout_exceptions_slow_replies_and_clock_skew_over_tcp() {
    let s = faulty();
    let dir = tempfile::tempdir().expect("tmp");
    let site = start(&s, dir.path()).await;
    let t0 = site.start_unix_s();
    let mut tc = connect(&site, "tc-f").await;
    // tilt-crack's sample time: input 30-31, ABCD.
    let time_of = |regs: &[u16]| decode_time(regs, WordOrder::Abcd);

    // dropout of tc-f in [20, 30): no new sample, the time registers keep sample 19's time.
    step_to(&site, 19);
    assert_eq!(
        time_of(&input(&mut tc, 30, 2).await.expect("time")),
        t0 + 19 * 60
    );
    for k in 20..30 {
        step_to(&site, k);
        assert_eq!(
            time_of(&input(&mut tc, 30, 2).await.expect("time")),
            t0 + 19 * 60,
            "at {k}"
        );
    }
    step_to(&site, 30);
    assert_eq!(
        time_of(&input(&mut tc, 30, 2).await.expect("time")),
        t0 + 30 * 60
    );
    let dropped: Vec<i64> = site
        .truth()
        .samples_of("tc-f", "crack")
        .iter()
        .map(|t| t.ts_ns / 1_000_000_000 - t0)
        .filter(|t| (20 * 60..30 * 60).contains(t))
        .collect();
    assert!(
        dropped.is_empty(),
        "no truth for dropped samples: {dropped:?}"
    );

    // exception 02 on lvl-f ch8 (input 14-15) in [70, 90): only reads touching ch8 fail.
    let mut lvl = connect(&site, "lvl-f").await;
    step_to(&site, 70);
    assert_eq!(
        input(&mut lvl, 14, 2).await,
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        input(&mut lvl, 0, 16).await,
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert!(input(&mut lvl, 0, 14).await.is_ok());
    step_to(&site, 90);
    assert!(input(&mut lvl, 0, 16).await.is_ok());

    // exception 04 on the whole of tc-f in [95, 100).
    step_to(&site, 95);
    assert_eq!(
        input(&mut tc, 0, 2).await,
        Err(ExceptionCode::ServerDeviceFailure)
    );
    step_to(&site, 100);
    assert!(input(&mut tc, 0, 2).await.is_ok());

    // slow replies (900 ms) of lvl-f in [100, 110): a 500 ms client times out, a 2 s one waits.
    let started = Instant::now();
    let late =
        tokio::time::timeout(Duration::from_millis(500), lvl.read_input_registers(0, 2)).await;
    assert!(
        late.is_err(),
        "a 900 ms reply beats a 500 ms timeout: {late:?}"
    );
    // The late reply would corrupt the next transaction (docs/ARCHITECTURE.md §Crate pitfalls).
    drop(lvl);
    let mut lvl = connect(&site, "lvl-f").await;
    let started_2 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(2), lvl.read_input_registers(0, 2))
        .await
        .expect("answers within 2 s")
        .expect("transport");
    assert!(r.is_ok());
    let took = started_2.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1400));
    step_to(&site, 110);
    let started = Instant::now();
    assert!(input(&mut lvl, 0, 2).await.is_ok());
    assert!(started.elapsed() < Duration::from_millis(100));

    // clock skew −3600 s of lvl-f in [120, 150): levelling time at input 40-41, CDAB.
    for (k, skew) in [(119_i64, 0), (120, -3600), (149, -3600), (150, 0)] {
        step_to(&site, k.unsigned_abs());
        let t = decode_time(
            &input(&mut lvl, 40, 2).await.expect("time"),
            WordOrder::Cdab,
        );
        assert_eq!(t, t0 + 60 * k + skew, "lvl-f time at {k}");
        let ts = site
            .truth()
            .samples_of("lvl-f", "ch1")
            .last()
            .expect("sample")
            .ts_ns;
        assert_eq!(
            ts,
            t * 1_000_000_000,
            "truth stamped with the device's time at {k}"
        );
    }
    site.shutdown().await;
}

/// Sends `request` (CRC appended) on the raw serial port and collects what comes back.
async fn raw_exchange(path: &Path, mut request: Vec<u8>) -> Vec<u8> {
    push_crc(&mut request);
    let mut port = tokio_serial::new(path.to_string_lossy(), 9600)
        .open_native_async()
        .expect("open raw");
    port.write_all(&request).await.expect("write");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + RAW_WAIT;
    let mut buf = [0_u8; 512];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, port.read(&mut buf)).await {
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[tokio::test]
async fn serial_line_faults_busy_silence_garbage_bad_crc_and_skew() {
    let s = faulty();
    let dir = tempfile::tempdir().expect("tmp");
    let site = start(&s, dir.path()).await;
    let t0 = site.start_unix_s();
    let gw = site
        .rtu_endpoint("rs485-f")
        .and_then(|e| e.gateway_path.clone())
        .expect("pty");

    // therm-f (unit 1) busy in [20, 30): exception 06 on any read.
    step_to(&site, 20);
    let mut ctx = common::open_rtu(&gw, 1);
    let r = within("busy", ctx.read_holding_registers(0, 1))
        .await
        .expect("transport");
    assert_eq!(r, Err(ExceptionCode::ServerDeviceBusy));
    // tc-f2 (unit 2) silent in [30, 50), answering again from 50.
    step_to(&site, 30);
    ctx.set_slave(Slave(2));
    let silent = tokio::time::timeout(SILENCE_TIMEOUT, ctx.read_input_registers(0, 2)).await;
    assert!(silent.is_err(), "offline slave answered: {silent:?}");
    drop(ctx);
    tokio::time::sleep(SETTLE).await;

    // therm-f in [40, 50): 8 random bytes before a correct reply. Read holding 0, 1 register:
    // reply 01 03 02 hi lo crc crc (7 bytes).
    step_to(&site, 40);
    let got = raw_exchange(&gw, vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x01]).await;
    assert_eq!(got.len(), 8 + 7, "{got:02X?}");
    assert_eq!(&got[8..11], &[0x01, 0x03, 0x02]);
    assert!(crc_ok(&got[8..]), "the frame after the garbage is intact");
    assert!(!crc_ok(&got), "the line as a whole is no frame");
    // Before the window the same request gets only the 7-byte frame.
    step_to(&site, 50);
    let got = raw_exchange(&gw, vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x01]).await;
    assert_eq!(got.len(), 7);
    assert!(crc_ok(&got));

    // tc-f2 in [60, 70): the right frame with a wrong CRC. Read input 0-1: 02 04 04 a b c d + CRC.
    step_to(&site, 60);
    let got = raw_exchange(&gw, vec![0x02, 0x04, 0x00, 0x00, 0x00, 0x02]).await;
    assert_eq!(got.len(), 9, "{got:02X?}");
    assert_eq!(&got[..3], &[0x02, 0x04, 0x04]);
    assert!(!crc_ok(&got), "CRC must be wrong");
    // A Modbus client does not take it: a transport/protocol error or no valid answer in time.
    let mut ctx = common::open_rtu(&gw, 2);
    let r = tokio::time::timeout(SILENCE_TIMEOUT, ctx.read_input_registers(0, 2)).await;
    assert!(
        !matches!(r, Ok(Ok(Ok(_)))),
        "a bad CRC reply was accepted: {r:?}"
    );
    drop(ctx);
    tokio::time::sleep(SETTLE).await;

    // piezo-f (unit 3) clock one day ahead in [130, 140): holding 10-11, CDAB.
    step_to(&site, 130);
    let mut ctx = common::open_rtu(&gw, 3);
    let regs = within("time", ctx.read_holding_registers(10, 2))
        .await
        .expect("transport")
        .expect("ok");
    assert_eq!(decode_time(&regs, WordOrder::Cdab), t0 + 130 * 60 + 86_400);
    step_to(&site, 140);
    let regs = within("time", ctx.read_holding_registers(10, 2))
        .await
        .expect("transport")
        .expect("ok");
    assert_eq!(decode_time(&regs, WordOrder::Cdab), t0 + 140 * 60);
    drop(ctx);
    site.shutdown().await;
}

/// A fault record as the file schedules it: device, point, kind, start and end in minutes,
/// parameter.
type Expected = (
    &'static str,
    Option<&'static str>,
    FaultKind,
    i64,
    i64,
    Option<f64>,
);

#[tokio::test]
async fn every_scheduled_fault_is_in_the_truth_with_its_window() {
    let s = faulty();
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("truth.jsonl");
    let site = Site::start(
        &s,
        StartOptions {
            clock: ClockMode::Manual,
            pty_dir: Some(dir.path().join("pty")),
            truth_file: Some(file.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("site starts");
    let t0_ns = site.start_unix_s() * 1_000_000_000;
    step_to(&site, 180);
    let faults = site.truth().faults();
    assert_eq!(
        faults.len(),
        s.faults.len(),
        "one record per scheduled fault"
    );
    let min = |m: i64| t0_ns + m * 60_000_000_000;
    // (device, point, kind, start min, end min, param), from the file.
    let expected: &[Expected] = &[
        ("lvl-f", Some("ch1"), FaultKind::Stuck, 10, 40, None),
        ("lvl-f", Some("ch2"), FaultKind::Spike, 10, 60, Some(25.0)),
        (
            "tc-f",
            Some("displacement"),
            FaultKind::Drift,
            10,
            120,
            Some(12.0),
        ),
        ("lvl-f", None, FaultKind::StatusFlag, 50, 70, None),
        (
            "51010400901",
            Some("L1_LF_1"),
            FaultKind::StatusFlag,
            10,
            20,
            None,
        ),
        ("tc-f", None, FaultKind::Dropout, 20, 30, Some(1.0)),
        ("plate-f", None, FaultKind::Dropout, 20, 80, Some(0.5)),
        ("tc-f2", None, FaultKind::Offline, 30, 50, None),
        ("node-f", None, FaultKind::Offline, 60, 80, None),
        ("51010400901", None, FaultKind::Offline, 90, 100, None),
        (
            "lvl-f",
            Some("ch8"),
            FaultKind::Exception,
            70,
            90,
            Some(2.0),
        ),
        ("therm-f", None, FaultKind::Exception, 20, 30, Some(6.0)),
        ("tc-f", None, FaultKind::Exception, 95, 100, Some(4.0)),
        ("lvl-f", None, FaultKind::Slow, 100, 110, Some(900.0)),
        ("therm-f", None, FaultKind::Garbage, 40, 50, Some(8.0)),
        ("tc-f2", None, FaultKind::BadCrc, 60, 70, None),
        ("node-f", None, FaultKind::Malformed, 15, 25, None),
        (
            "51010400901",
            None,
            FaultKind::Oversized,
            35,
            40,
            Some(131_072.0),
        ),
        ("lvl-f", None, FaultKind::ClockSkew, 120, 150, Some(-3600.0)),
        (
            "piezo-f",
            None,
            FaultKind::ClockSkew,
            130,
            140,
            Some(86_400.0),
        ),
        ("node-f", None, FaultKind::ClockSkew, 120, 150, Some(600.0)),
    ];
    assert_eq!(expected.len(), faults.len());
    for &(device, point, kind, start, end, param) in expected {
        let f = faults
            .iter()
            .find(|f| f.device == device && f.point.as_deref() == point && f.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} record for {device}"));
        assert_eq!(
            (f.start_ns, f.end_ns, f.param),
            (min(start), Some(min(end)), param),
            "{kind} {device}"
        );
    }
    // Every kind of the closed set occurs.
    for kind in FaultKind::ALL {
        assert!(
            faults.iter().any(|f| f.kind == kind),
            "{kind} missing from faulty-devices.toml"
        );
    }
    site.shutdown().await;
    // The truth file has every fault once (all closed by then) and the true value of each of
    // block-f's 7 channels (F1, F1.rate, F2, F2.rate, diff, tilt, tilt_deg) at each of the 181
    // ticks.
    let text = std::fs::read_to_string(&file).expect("truth file");
    let count = |t: &str| {
        let head = format!("{{\"type\":\"{t}\"");
        text.lines().filter(|l| l.starts_with(&head)).count()
    };
    assert_eq!(count("fault"), expected.len());
    assert_eq!(count("channel"), 181 * 7);
    assert!(count("sample") > 0);
}
